//! Resumable uploads under attack (PROTOCOL.md §4; SECURITY.md): what a write credential
//! learns of a private file, how fragmented one upload may get, and the preconditions of a
//! chunked upload. Real servers on loopback over `FsStorage` (see `tests/common`).

mod common;

use common::{KEY, TestServer, data, kind, pattern, start, start_with};
use serde_json::Value;
use std::ops::Range;
use tower_uploads::auth::SignedMethod;
use tower_uploads::upload::MAX_UPLOAD_RANGES;

/// Status, `Range` header and JSON body of an answer.
struct Reply {
    status: u16,
    range: Option<String>,
    body: Value,
}

async fn send(req: reqwest::RequestBuilder) -> Reply {
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    let range = res
        .headers()
        .get("range")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = res.bytes().await.expect("body");
    Reply {
        status,
        range,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

/// `PUT url` with a `Content-Range` (none for a simple upload), extra headers and `body`.
fn put(
    http: &reqwest::Client,
    url: &str,
    content_range: Option<&str>,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> reqwest::RequestBuilder {
    let mut req = http.put(url).body(body);
    if let Some(cr) = content_range {
        req = req.header("content-range", cr);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req
}

fn bearer() -> (&'static str, String) {
    ("authorization", format!("Bearer {KEY}"))
}

/// The `Content-Range` of `range` (exclusive end) of a `total`-byte file.
fn cr(range: &Range<usize>, total: usize) -> String {
    format!("bytes {}-{}/{total}", range.start, range.end - 1)
}

async fn get_private(server: &TestServer, path: &str) -> (u16, Vec<u8>) {
    let res = common::client()
        .get(server.url(path))
        .header("authorization", server.bearer())
        .send()
        .await
        .expect("GET");
    (
        res.status().as_u16(),
        res.bytes().await.expect("body").to_vec(),
    )
}

/// Finding 2 of the security issue: with private delivery, a `put` URL for a stored file
/// could read it — status queries answered 200 with the File object once `total` was the
/// file's size, and a 1-byte chunk was answered 200 when its byte equalled the stored byte.
/// Now every probe gets the same answer, whatever the stored bytes.
#[tokio::test]
async fn a_put_url_learns_nothing_of_a_private_file() {
    let server = start_with(|u| u.private(true)).await;
    let http = common::client();
    let path = "vault/s.txt";
    let secret = b"pin=4711\n".to_vec();
    let (h, v) = bearer();
    let r = send(put(
        &http,
        &server.url(path),
        None,
        &[(h, &v)],
        secret.clone(),
    ))
    .await;
    assert_eq!(r.status, 201);
    let url = server.sign_for(path, SignedMethod::Put);

    // Status queries: the same empty progress for every total, the file's size included.
    for total in 1..=2 * secret.len() {
        let r = send(put(
            &http,
            &url,
            Some(&format!("bytes */{total}")),
            &[],
            vec![],
        ))
        .await;
        assert_eq!(r.status, 202, "status query of total {total}: {:?}", r.body);
        assert_eq!(
            data(&r.body)["ranges"],
            serde_json::json!([]),
            "total {total}"
        );
        assert!(data(&r.body).get("id").is_none(), "no File object");
    }
    // 1-byte chunks: the right byte and a wrong one get the same status at every position
    // (but the last: a put URL may of course complete an upload of its own bytes).
    for k in 0..secret.len() - 1 {
        let range = format!("bytes {k}-{k}/{}", secret.len());
        let right = send(put(&http, &url, Some(&range), &[], vec![secret[k]])).await;
        let wrong = send(put(&http, &url, Some(&range), &[], vec![secret[k] ^ 0x55])).await;
        assert_eq!(right.status, 202, "position {k}: {:?}", right.body);
        assert_eq!(wrong.status, right.status, "position {k}");
        assert!(
            data(&right.body).get("id").is_none(),
            "position {k}: no File"
        );
    }
    assert_eq!(get_private(&server, path).await, (200, secret.clone()));
    eprintln!(
        "FIGURES chunk_security: private file: {} status queries and {} 1-byte chunk probes, \
         every answer 202 without a File object",
        2 * secret.len(),
        2 * (secret.len() - 1)
    );
}

/// A client whose `201` was lost sends chunks of the finished upload again: with private
/// delivery they are recognised from what the upload recorded of its own chunks (range and
/// SHA-256) — the same File object — and nothing else is: a chunk of another range, even
/// with the stored bytes, starts a new upload.
#[tokio::test]
async fn private_retries_are_recognised_from_the_uploads_own_chunks() {
    let server = start_with(|u| u.private(true)).await;
    let http = common::client();
    let path = "vault/big.bin";
    let total = 300_000;
    let file = pattern(total, 7);
    let url = server.sign_for(path, SignedMethod::Put);
    let chunks = [0..100_000, 100_000..200_000, 200_000..total];
    let mut last = None;
    for c in &chunks {
        last = Some(
            send(put(
                &http,
                &url,
                Some(&cr(c, total)),
                &[],
                file[c.clone()].to_vec(),
            ))
            .await,
        );
    }
    let done = last.unwrap();
    assert_eq!(done.status, 201, "{:?}", done.body);
    let id = data(&done.body)["id"].as_str().unwrap().to_owned();

    for c in [&chunks[2], &chunks[0]] {
        let again = send(put(
            &http,
            &url,
            Some(&cr(c, total)),
            &[],
            file[c.clone()].to_vec(),
        ))
        .await;
        assert_eq!(again.status, 200, "retry of {c:?}: {:?}", again.body);
        assert_eq!(data(&again.body)["id"], id.as_str(), "the same File object");
    }
    // The stored bytes, but not a chunk the upload received: a new upload.
    let part = 0..50_000;
    let r = send(put(
        &http,
        &url,
        Some(&cr(&part, total)),
        &[],
        file[part.clone()].to_vec(),
    ))
    .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    assert_eq!(r.range.as_deref(), Some("bytes=0-49999"));
    // Other bytes in a recorded range: a new upload too (joins the one just started).
    let c = &chunks[1];
    let other = vec![0x5a; c.len()];
    let r = send(put(&http, &url, Some(&cr(c, total)), &[], other)).await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    assert_eq!(r.range.as_deref(), Some("bytes=0-49999,100000-199999"));
    assert_eq!(get_private(&server, path).await, (200, file));
}

/// Finding 5: 1-byte chunks with gaps between them. An upload holds at most
/// `MAX_UPLOAD_RANGES` separate ranges; the chunk that would make one more is refused with a
/// 409 naming the limit, nothing of it counts, and chunks that fill gaps still work.
#[tokio::test]
async fn fragmentation_is_bounded() {
    let server = start().await;
    let http = common::client();
    let url = server.url("frag/f.bin");
    let total = 2 * MAX_UPLOAD_RANGES + 10;
    let (h, v) = bearer();
    let one = |k: usize| {
        put(
            &http,
            &url,
            Some(&format!("bytes {k}-{k}/{total}")),
            &[(h, v.as_str())],
            vec![k as u8],
        )
    };
    let mut last = None;
    for i in 0..MAX_UPLOAD_RANGES {
        let r = send(one(2 * i)).await;
        assert_eq!(r.status, 202, "chunk {i}: {:?}", r.body);
        last = Some(r);
    }
    let last = last.unwrap();
    let listed = last.range.as_deref().unwrap().matches(',').count() + 1;
    assert_eq!(listed, MAX_UPLOAD_RANGES);

    let header_len = last.range.as_deref().unwrap().len();
    let body_len = last.body.to_string().len();
    let refused = send(one(2 * MAX_UPLOAD_RANGES)).await;
    assert_eq!(refused.status, 409, "{:?}", refused.body);
    assert_eq!(kind(&refused.body), Some("range_conflict"));
    let message = refused.body.to_string();
    assert!(
        message.contains(&MAX_UPLOAD_RANGES.to_string()),
        "{message}"
    );
    // Nothing of it counted; a chunk that merges two ranges is taken.
    let status = send(put(
        &http,
        &url,
        Some(&format!("bytes */{total}")),
        &[(h, &v)],
        vec![],
    ))
    .await;
    assert_eq!(status.range, last.range, "the refused chunk did not count");
    let fill = send(one(1)).await;
    assert_eq!(fill.status, 202);
    assert_eq!(
        fill.range.as_deref().unwrap().matches(',').count() + 1,
        MAX_UPLOAD_RANGES - 1
    );
    let r = send(one(2 * MAX_UPLOAD_RANGES)).await;
    assert_eq!(r.status, 202, "room again: {:?}", r.body);
    eprintln!(
        "FIGURES chunk_security: fragmentation: {MAX_UPLOAD_RANGES} separate 1-byte ranges \
         accepted, the next refused (409); largest answer: Range header {header_len} B, \
         JSON body {body_len} B"
    );
}

/// Finding 8: `If-None-Match: *` and `If-Match` hold on the chunk that creates an upload and
/// again when it completes (PROTOCOL.md §3, §4).
#[tokio::test]
async fn preconditions_hold_on_chunked_uploads() {
    let server = start().await;
    let http = common::client();
    let (h, v) = bearer();
    let auth = (h, v.as_str());
    let path = "pre/x.bin";
    let url = server.url(path);
    let old = b"old file".to_vec();
    let r = send(put(&http, &url, None, &[auth], old.clone())).await;
    assert_eq!(r.status, 201);
    let new = b"new bytes".to_vec();
    let total = new.len();

    // Create-only on an existing path: refused before anything is written.
    let r = send(put(
        &http,
        &url,
        Some(&cr(&(0..total), total)),
        &[auth, ("if-none-match", "*")],
        new.clone(),
    ))
    .await;
    assert_eq!(r.status, 412, "{:?}", r.body);
    assert_eq!(kind(&r.body), Some("precondition_failed"));
    // A wrong If-Match, on the first chunk of several.
    let r = send(put(
        &http,
        &url,
        Some(&cr(&(0..4), total)),
        &[auth, ("if-match", "\"nope\"")],
        new[..4].to_vec(),
    ))
    .await;
    assert_eq!(r.status, 412, "{:?}", r.body);
    assert_eq!(server.read(path).as_deref(), Some(&old[..]), "unchanged");
    let status = send(put(
        &http,
        &url,
        Some(&format!("bytes */{total}")),
        &[auth],
        vec![],
    ))
    .await;
    assert_eq!(status.range, None, "no upload was started");

    // The right If-Match starts an upload; the file is replaced meanwhile; the completion
    // is refused and nothing of the upload is published.
    let got = http.get(&url).send().await.unwrap();
    let etag = got.headers()["etag"].to_str().unwrap().to_owned();
    let r = send(put(
        &http,
        &url,
        Some(&cr(&(0..4), total)),
        &[auth, ("if-match", &etag)],
        new[..4].to_vec(),
    ))
    .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    let other = b"replaced".to_vec();
    assert_eq!(
        send(put(&http, &url, None, &[auth], other.clone()))
            .await
            .status,
        201
    );
    let r = send(put(
        &http,
        &url,
        Some(&cr(&(4..total), total)),
        &[auth],
        new[4..].to_vec(),
    ))
    .await;
    assert_eq!(r.status, 412, "{:?}", r.body);
    assert_eq!(server.read(path).as_deref(), Some(&other[..]));

    // Create-only on a new path; the path is created meanwhile; the completion is refused.
    let fresh = server.url("pre/fresh.bin");
    let r = send(put(
        &http,
        &fresh,
        Some(&cr(&(0..4), total)),
        &[auth, ("if-none-match", "*")],
        new[..4].to_vec(),
    ))
    .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    assert_eq!(
        send(put(&http, &fresh, None, &[auth], other.clone()))
            .await
            .status,
        201
    );
    let r = send(put(
        &http,
        &fresh,
        Some(&cr(&(4..total), total)),
        &[auth],
        new[4..].to_vec(),
    ))
    .await;
    assert_eq!(r.status, 412, "{:?}", r.body);
    assert_eq!(server.read("pre/fresh.bin").as_deref(), Some(&other[..]));

    // Without interference, a create-only chunked upload completes (and its retry is a retry).
    let third = server.url("pre/third.bin");
    let r = send(put(
        &http,
        &third,
        Some(&cr(&(0..4), total)),
        &[auth, ("if-none-match", "*")],
        new[..4].to_vec(),
    ))
    .await;
    assert_eq!(r.status, 202);
    let last = put(
        &http,
        &third,
        Some(&cr(&(4..total), total)),
        &[auth, ("if-none-match", "*")],
        new[4..].to_vec(),
    );
    let r = send(last).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let again = send(put(
        &http,
        &third,
        Some(&cr(&(4..total), total)),
        &[auth, ("if-none-match", "*")],
        new[4..].to_vec(),
    ))
    .await;
    assert_eq!(
        again.status, 200,
        "a retry of the completing chunk: {:?}",
        again.body
    );
    assert_eq!(server.read("pre/third.bin").as_deref(), Some(&new[..]));
}
