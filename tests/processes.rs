//! Resumable uploads across real processes of the demo server (`examples/server.rs`): a
//! server killed with SIGKILL and restarted on the same data directory, and two servers
//! sharing one data directory (PROTOCOL.md §4: upload state lives in the storage).
//!
//! The demo server is an example, and cargo gives tests no `CARGO_BIN_EXE_…` for examples:
//! these tests run the binary that `cargo build --examples` (or a plain `cargo test`, which
//! builds the examples too) puts in `target/<profile>/examples/`, next to the test binary's
//! `deps/` directory. CI builds it before the tests run (`cargo test --all-features` builds
//! every example); when running only this test (`cargo test --test processes`), run
//! `cargo build --examples` first.

mod common;

use common::process::DemoServer;
use common::{data, kind, pattern, server_binary, sha256};
use serde_json::Value;
use std::ops::Range;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Barrier;

const KEY: &str = "processes-test-key";
const MIB: usize = 1 << 20;
const KIB: usize = 1 << 10;

// --- the demo server as a process --------------------------------------------------------

/// The demo server on `data` with this file's key.
fn start_server(data: &Path) -> DemoServer {
    DemoServer::start_keyed(data, KEY, &[])
}

/// A client of `server`.
fn api_of(server: &DemoServer) -> Api {
    Api {
        base: server.base.clone(),
        http: common::client_with_timeout(Duration::from_secs(60)),
    }
}

// --- a client ----------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Reply {
    fn file_id(&self) -> String {
        data(&self.body)["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no File id in {self:?}"))
            .to_owned()
    }

    /// The received ranges of a 202 (inclusive), checked against the `Range` header.
    fn ranges(&self, total: usize) -> Vec<[u64; 2]> {
        assert_eq!(self.status, 202, "expected 202 progress: {self:?}");
        let d = data(&self.body);
        assert_eq!(d["total"].as_u64(), Some(total as u64), "{self:?}");
        let ranges: Vec<[u64; 2]> = d["ranges"]
            .as_array()
            .expect("ranges")
            .iter()
            .map(|p| [p[0].as_u64().expect("a"), p[1].as_u64().expect("b")])
            .collect();
        for w in ranges.windows(2) {
            assert!(w[1][0] > w[0][1] + 1, "ascending, merged: {ranges:?}");
        }
        let header = self
            .headers
            .get("range")
            .map(|v| v.to_str().expect("ASCII").to_owned());
        let want = (!ranges.is_empty()).then(|| {
            let list: Vec<String> = ranges.iter().map(|[a, b]| format!("{a}-{b}")).collect();
            format!("bytes={}", list.join(","))
        });
        assert_eq!(header, want, "Range header of {self:?}");
        ranges
    }
}

#[derive(Clone)]
struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base, path)
    }

    async fn put(&self, path: &str, content_range: &str, body: impl Into<reqwest::Body>) -> Reply {
        let res = self
            .http
            .put(self.url(path))
            .header("authorization", format!("Bearer {KEY}"))
            .header("content-range", content_range)
            .body(body)
            .send()
            .await;
        // No answer at all (the connection closed first): status 0, listed with the others.
        let res = match res {
            Ok(res) => res,
            Err(e) => {
                return Reply {
                    status: 0,
                    headers: Default::default(),
                    body: serde_json::json!({ "transport_error": format!("{e:?}") }),
                };
            }
        };
        let (status, headers, body) = common::json(res).await;
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn chunk(&self, path: &str, file: &[u8], c: Range<usize>) -> Reply {
        let cr = format!("bytes {}-{}/{}", c.start, c.end - 1, file.len());
        self.put(path, &cr, file[c].to_vec()).await
    }

    async fn status(&self, path: &str, total: usize) -> Reply {
        self.put(path, &format!("bytes */{total}"), Vec::new())
            .await
    }

    async fn get(&self, path: &str) -> (u16, Vec<u8>) {
        let res = self.http.get(self.url(path)).send().await.expect("GET");
        let status = res.status().as_u16();
        (status, res.bytes().await.expect("body").to_vec())
    }
}

fn plan(total: usize, sizes: &[usize]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let (mut at, mut i) = (0, 0);
    while at < total {
        let n = sizes[i % sizes.len()].min(total - at);
        out.push(at..at + n);
        at += n;
        i += 1;
    }
    out
}

fn merged(chunks: &[Range<usize>]) -> Vec<[u64; 2]> {
    let mut v = chunks.to_vec();
    v.sort_by_key(|r| r.start);
    let mut out: Vec<[u64; 2]> = Vec::new();
    for r in v {
        match out.last_mut() {
            Some(last) if r.start as u64 <= last[1] + 1 => last[1] = last[1].max(r.end as u64 - 1),
            _ => out.push([r.start as u64, r.end as u64 - 1]),
        }
    }
    out
}

fn uploads_left(data_dir: &Path) -> Vec<String> {
    ["uploads", "tmp", "staging"]
        .iter()
        .flat_map(|sub| {
            common::list_entries_under(&data_dir.join(common::RESERVED).join(sub))
                .into_iter()
                .map(move |e| format!("{sub}/{e}"))
        })
        .collect()
}

/// Sends `chunks` of `file` to `api` from `in_flight` workers; returns every answer.
async fn send_all(
    api: &Api,
    path: &str,
    file: &Arc<Vec<u8>>,
    chunks: Vec<Range<usize>>,
    in_flight: usize,
) -> Vec<(Range<usize>, Reply)> {
    let queue = Arc::new(Mutex::new(chunks));
    let mut workers = Vec::new();
    for _ in 0..in_flight {
        let (api, file, queue, path) = (api.clone(), file.clone(), queue.clone(), path.to_owned());
        workers.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let next = queue.lock().unwrap().pop();
                let Some(c) = next else { return out };
                let r = api.chunk(&path, &file, c.clone()).await;
                out.push((c, r));
            }
        }));
    }
    let mut out = Vec::new();
    for w in workers {
        out.extend(w.await.expect("worker"));
    }
    out
}

/// Exactly one 201 among `results`; every 200 has its File `id`; every 202 is a consistent
/// progress that includes its own chunk and does not cover the file. Returns the File id.
fn one_created(results: &[(Range<usize>, Reply)], total: usize, what: &str) -> String {
    let codes: Vec<u16> = results.iter().map(|(_, r)| r.status).collect();
    let created: Vec<&Reply> = results
        .iter()
        .filter(|(_, r)| r.status == 201)
        .map(|(_, r)| r)
        .collect();
    assert_eq!(created.len(), 1, "{what}: exactly one 201: {codes:?}");
    let id = created[0].file_id();
    assert_eq!(
        data(&created[0].body)["filesize"].as_u64(),
        Some(total as u64)
    );
    for (c, r) in results {
        match r.status {
            201 => {}
            200 => assert_eq!(r.file_id(), id, "{what}: a racing chunk gets the same File"),
            202 => {
                let ranges = r.ranges(total);
                let (a, b) = (c.start as u64, c.end as u64 - 1);
                assert!(
                    ranges.iter().any(|[x, y]| *x <= a && b <= *y),
                    "{what}: own chunk {a}-{b} missing from {ranges:?}"
                );
                assert_ne!(ranges, vec![[0, total as u64 - 1]], "{what}");
            }
            _ => panic!("{what}: unexpected answer to chunk {c:?}: {r:?} (all: {codes:?})"),
        }
    }
    id
}

// --- the tests ---------------------------------------------------------------------------

/// Half of a 24 MiB upload goes to a server that is then killed with SIGKILL (one more chunk
/// is mid-body at that moment); a new server on the same data directory knows what was
/// received and completes the upload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_restart_resumes_the_upload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("data");
    let path = "restart/big.bin";
    let total = 24 * MIB + 17;
    let file = Arc::new(pattern(total, 24));
    let chunks = plan(total, &[MIB, MIB + 3, MIB - 5]);
    let (even, odd): (Vec<_>, Vec<_>) = chunks
        .iter()
        .cloned()
        .enumerate()
        .partition(|(i, _)| i % 2 == 0);
    let even: Vec<Range<usize>> = even.into_iter().map(|(_, c)| c).collect();
    let odd: Vec<Range<usize>> = odd.into_iter().map(|(_, c)| c).collect();

    let first = start_server(&data_dir);
    let api = api_of(&first);
    let mut last_seen = Vec::new();
    for c in &even {
        let r = api.chunk(path, &file, c.clone()).await;
        last_seen = r.ranges(total);
    }
    assert_eq!(last_seen, merged(&even));
    // One more chunk, mid-body when the server dies: it must not count.
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(2);
    let stalled = {
        let body = reqwest::Body::wrap_stream(futures_util::stream::unfold(rx, |mut rx| async {
            rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
        }));
        let (api, c) = (api.clone(), odd[0].clone());
        tokio::spawn(async move {
            api.http
                .put(api.url(path))
                .header("authorization", format!("Bearer {KEY}"))
                .header(
                    "content-range",
                    format!("bytes {}-{}/{total}", c.start, c.end - 1),
                )
                .body(body)
                .send()
                .await
        })
    };
    tx.send(bytes::Bytes::copy_from_slice(
        &file[odd[0].start..odd[0].start + odd[0].len() / 2],
    ))
    .await
    .expect("feed");
    tokio::time::sleep(Duration::from_millis(300)).await;
    first.kill9();
    assert!(
        stalled.await.expect("task").is_err(),
        "the chunk in flight fails with the server"
    );
    drop(tx);

    let second = start_server(&data_dir);
    let api = api_of(&second);
    let r = api.status(path, total).await;
    assert_eq!(
        r.ranges(total),
        last_seen,
        "the new server sees what the killed one received"
    );
    assert_eq!(
        api.get(path).await.0,
        404,
        "nothing is visible before completion"
    );
    for (i, c) in odd.iter().enumerate() {
        let r = api.chunk(path, &file, c.clone()).await;
        if i + 1 < odd.len() {
            r.ranges(total);
        } else {
            assert_eq!(r.status, 201, "{r:?}");
            assert_eq!(data(&r.body)["filesize"].as_u64(), Some(total as u64));
        }
    }
    let stored = std::fs::read(data_dir.join(path)).expect("published file");
    assert_eq!(sha256(&stored), sha256(&file));
    let (status, got) = api.get(path).await;
    assert_eq!((status, sha256(&got)), (200, sha256(&file)));
    assert_eq!(uploads_left(&data_dir), Vec::<String>::new());
}

/// Two servers on one data directory, alternate chunks of one upload (even chunks to A, odd
/// to B, 2 in flight per server): one 201 across both. Then the last chunks race on both
/// servers at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_one_upload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("data");
    // A does every file operation on tokio's blocking pool, B small ones on its request
    // threads (`FsOptions::inline_io`, the default): the two ways share one directory.
    let a = DemoServer::start_keyed(&data_dir, KEY, &["--inline-io", "0"]);
    let b = start_server(&data_dir);
    let (api_a, api_b) = (api_of(&a), api_of(&b));

    // Small simple uploads through each, read back through the other.
    for (i, (via, back)) in [(&api_a, &api_b), (&api_b, &api_a)].into_iter().enumerate() {
        let path = format!("shared/small-{i}.bin");
        let body = pattern(4 * KIB + i, 40 + i as u64);
        let res = via
            .http
            .put(via.url(&path))
            .header("authorization", format!("Bearer {KEY}"))
            .body(body.clone())
            .send()
            .await
            .expect("small PUT");
        assert_eq!(res.status(), 201, "{path}");
        let (status, got) = back.get(&path).await;
        assert_eq!((status, sha256(&got)), (200, sha256(&body)), "{path}");
    }

    let path = "shared/alternate.bin";
    let total = 16 * MIB + 5;
    let file = Arc::new(pattern(total, 16));
    let chunks = plan(total, &[512 * KIB, 512 * KIB + 3, 333_333]);
    let even: Vec<_> = chunks.iter().step_by(2).cloned().rev().collect();
    let odd: Vec<_> = chunks.iter().skip(1).step_by(2).cloned().rev().collect();
    let (ra, rb) = tokio::join!(
        send_all(&api_a, path, &file, even, 2),
        send_all(&api_b, path, &file, odd, 2)
    );
    let results: Vec<_> = ra.into_iter().chain(rb).collect();
    assert_eq!(results.len(), chunks.len());
    let id = one_created(&results, total, path);
    let stored = std::fs::read(data_dir.join(path)).expect("published file");
    assert_eq!(sha256(&stored), sha256(&file));
    for api in [&api_a, &api_b] {
        let (status, got) = api.get(path).await;
        assert_eq!((status, sha256(&got)), (200, sha256(&file)));
        // Both servers know the finished upload.
        let r = api.status(path, total).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.file_id(), id);
    }
    assert_eq!(uploads_left(&data_dir), Vec::<String>::new());

    // The last chunks race on both servers at once: each of the last 4 chunks is sent to A
    // and to B at the same moment.
    for round in 0..3u64 {
        let path = format!("shared/race-{round}.bin");
        let total = 4 * MIB + 9;
        let file = Arc::new(pattern(total, 100 + round));
        let chunks = plan(total, &[256 * KIB]);
        let (head, last) = chunks.split_at(chunks.len() - 4);
        for (i, c) in head.iter().enumerate() {
            let api = if i % 2 == 0 { &api_a } else { &api_b };
            api.chunk(&path, &file, c.clone()).await.ranges(total);
        }
        let barrier = Arc::new(Barrier::new(2 * last.len()));
        let mut tasks = Vec::new();
        for c in last {
            for api in [&api_a, &api_b] {
                let (api, file, barrier, path, c) = (
                    api.clone(),
                    file.clone(),
                    barrier.clone(),
                    path.clone(),
                    c.clone(),
                );
                tasks.push(tokio::spawn(async move {
                    barrier.wait().await;
                    let r = api.chunk(&path, &file, c.clone()).await;
                    (c, r)
                }));
            }
        }
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.expect("task"));
        }
        one_created(&results, total, &path);
        let stored = std::fs::read(data_dir.join(&path)).expect("published file");
        assert_eq!(sha256(&stored), sha256(&file), "{path}");
        assert_eq!(uploads_left(&data_dir), Vec::<String>::new(), "{path}");
    }
}

/// The demo server refuses an unknown flag with exit code 2 and a usage message.
#[test]
fn demo_server_refuses_unknown_flags() {
    let out = Command::new(server_binary())
        .arg("--no-such-flag")
        .stdin(Stdio::null())
        .output()
        .expect("run the demo server");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--no-such-flag") && stderr.contains("usage"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing on stdout: {out:?}");

    let out = Command::new(server_binary())
        .args(["--upload-ttl", "soon"])
        .stdin(Stdio::null())
        .output()
        .expect("run the demo server");
    assert_eq!(out.status.code(), Some(2), "a bad value: {out:?}");
}

/// `listening on http://ADDR` is printed once the server accepts connections, and ADDR
/// serves the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_server_prints_its_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_server(&dir.path().join("data"));
    let api = api_of(&server);
    let res = api
        .http
        .get(api.url("nothing/here.bin"))
        .send()
        .await
        .expect("GET");
    let (status, _, body) = common::json(res).await;
    assert_eq!(status, 404);
    assert_eq!(kind(&body), Some("file_not_found"), "{body}");
    // A resumable upload with the configured key works right away.
    let file = pattern(1000, 1);
    let r = api.chunk("hello.bin", &file, 0..1000).await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(api.get("hello.bin").await.1, file);
}
