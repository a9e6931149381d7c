//! A client that does what a well-behaved uploader does when the server has a bad moment:
//! retries on 5xx and on broken connections (with a short backoff), resumes chunked uploads
//! with the status query, and checks what it downloads. Shared by the fault-injection and
//! load tests.
#![allow(dead_code)]

use futures_util::StreamExt;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::ops::Range;
use std::time::Duration;

/// What the retries saw.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tally {
    /// Requests sent (first tries and retries).
    pub requests: u64,
    /// Retries after a 5xx.
    pub retried_5xx: u64,
    /// Retries after a transport error (connection reset, body cut short).
    pub retried_transport: u64,
}

impl Tally {
    pub fn add(&mut self, other: Tally) {
        self.requests += other.requests;
        self.retried_5xx += other.retried_5xx;
        self.retried_transport += other.retried_transport;
    }
}

/// An answer: status, and the body as JSON (or `Null`).
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Reply {
    /// The File object of a bare or enveloped answer.
    pub fn file(&self) -> &Value {
        match self.body.get("data") {
            Some(d) if d.is_object() => d,
            _ => &self.body,
        }
    }
}

/// Retry policy.
#[derive(Clone, Copy, Debug)]
pub struct Retry {
    pub attempts: u32,
    pub backoff: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 60,
            backoff: Duration::from_millis(5),
        }
    }
}

/// Sends a request once (no retry) and reads its answer.
pub async fn once(req: reqwest::RequestBuilder) -> Reply {
    let res = req.send().await.expect("a request");
    let status = res.status().as_u16();
    let body = res.bytes().await.expect("a body");
    Reply {
        status,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    }
}

/// Sends the request `make` builds until it gets an answer below 500, retrying 5xx and
/// transport errors. Panics when every attempt failed.
pub async fn send(
    make: impl Fn() -> reqwest::RequestBuilder,
    retry: Retry,
    tally: &mut Tally,
    what: &str,
) -> Reply {
    let mut last = String::new();
    for attempt in 0..retry.attempts {
        if attempt > 0 {
            tokio::time::sleep(retry.backoff * attempt.min(20)).await;
        }
        tally.requests += 1;
        match make().send().await {
            Ok(res) => {
                let status = res.status().as_u16();
                let body = match res.bytes().await {
                    Ok(b) => serde_json::from_slice(&b).unwrap_or(Value::Null),
                    Err(e) => {
                        tally.retried_transport += 1;
                        last = format!("body: {e}");
                        continue;
                    }
                };
                if status >= 500 {
                    tally.retried_5xx += 1;
                    last = format!("{status} {body}");
                    continue;
                }
                return Reply { status, body };
            }
            Err(e) => {
                tally.retried_transport += 1;
                last = format!("{e}");
            }
        }
    }
    panic!(
        "{what}: no answer below 500 after {} attempts; last: {last}",
        retry.attempts
    );
}

/// A simple upload of `bytes` to `url`, retried until it is answered: the final answer
/// (201 expected).
pub async fn put_whole(
    http: &reqwest::Client,
    url: &str,
    auth: &str,
    bytes: &bytes::Bytes,
    retry: Retry,
    tally: &mut Tally,
) -> Reply {
    send(
        || {
            http.put(url)
                .header("authorization", auth)
                .body(bytes.clone())
        },
        retry,
        tally,
        url,
    )
    .await
}

/// Splits `[0, total)` into chunks of `size` bytes.
pub fn chunks(total: usize, size: usize) -> Vec<Range<usize>> {
    (0..total.div_ceil(size.max(1)))
        .map(|i| i * size..((i + 1) * size).min(total))
        .collect()
}

/// Sends one chunk of `file`, retrying 5xx and transport errors.
pub async fn put_chunk(
    http: &reqwest::Client,
    url: &str,
    auth: &str,
    file: &bytes::Bytes,
    c: Range<usize>,
    retry: Retry,
    tally: &mut Tally,
) -> Reply {
    let total = file.len();
    let body = file.slice(c.clone());
    send(
        || {
            http.put(url)
                .header("authorization", auth)
                .header(
                    "content-range",
                    format!("bytes {}-{}/{total}", c.start, c.end - 1),
                )
                .body(body.clone())
        },
        retry,
        tally,
        url,
    )
    .await
}

/// `bytes */total`, retried.
pub async fn status(
    http: &reqwest::Client,
    url: &str,
    auth: &str,
    total: usize,
    retry: Retry,
    tally: &mut Tally,
) -> Reply {
    send(
        || {
            http.put(url)
                .header("authorization", auth)
                .header("content-range", format!("bytes */{total}"))
        },
        retry,
        tally,
        url,
    )
    .await
}

/// A chunked upload of `file` in chunks of `chunk` bytes, `parallel` at a time, each retried;
/// then status queries until the upload reports the File object (a finalization that failed
/// is finished by a status query). Returns the File object answer (200 or 201).
pub async fn put_chunked(
    http: &reqwest::Client,
    url: &str,
    auth: &str,
    file: &bytes::Bytes,
    chunk: usize,
    parallel: usize,
    retry: Retry,
) -> (Reply, Tally) {
    let total = file.len();
    let plan = chunks(total, chunk);
    let results: Vec<(Reply, Tally)> = futures_util::stream::iter(plan)
        .map(|c| async move {
            let mut tally = Tally::default();
            let r = put_chunk(http, url, auth, file, c, retry, &mut tally).await;
            (r, tally)
        })
        .buffer_unordered(parallel.max(1))
        .collect()
        .await;
    let mut tally = Tally::default();
    let mut done = None;
    for (r, t) in results {
        tally.add(t);
        match r.status {
            200 | 201 if r.file().get("id").is_some() => done = Some(r),
            202 => {}
            s => panic!("{url}: chunk answered {s}: {}", r.body),
        }
    }
    if let Some(r) = done {
        return (r, tally);
    }
    // Every chunk is in but none saw the upload complete (raced answers): ask.
    for _ in 0..retry.attempts {
        let r = status(http, url, auth, total, retry, &mut tally).await;
        if matches!(r.status, 200 | 201) {
            return (r, tally);
        }
        tokio::time::sleep(retry.backoff).await;
    }
    panic!("{url}: every chunk was answered but the upload never completed");
}

/// GETs `url` (with an optional `Range: bytes=a-b`), retrying 5xx and cut bodies; returns
/// the status and bytes of the first whole answer.
pub async fn get(
    http: &reqwest::Client,
    url: &str,
    range: Option<Range<u64>>,
    retry: Retry,
    tally: &mut Tally,
) -> (u16, Vec<u8>) {
    for attempt in 0..retry.attempts {
        if attempt > 0 {
            tokio::time::sleep(retry.backoff * attempt.min(20)).await;
        }
        tally.requests += 1;
        let mut req = http.get(url);
        if let Some(r) = &range {
            req = req.header("range", format!("bytes={}-{}", r.start, r.end - 1));
        }
        let res = match req.send().await {
            Ok(res) => res,
            Err(_) => {
                tally.retried_transport += 1;
                continue;
            }
        };
        let status = res.status().as_u16();
        if status >= 500 {
            tally.retried_5xx += 1;
            continue;
        }
        match res.bytes().await {
            Ok(b) => return (status, b.to_vec()),
            Err(_) => tally.retried_transport += 1,
        }
    }
    panic!(
        "GET {url}: no whole answer after {} attempts",
        retry.attempts
    );
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
