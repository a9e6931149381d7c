//! Resumable uploads (PROTOCOL.md §4) against a real server on loopback: the `Uploads`
//! service on hyper, over an `FsStorage` in a temporary directory (see `tests/common`).
//!
//! Every test checks what the storage holds afterwards, not only what the server answered:
//! ranges on disk (`.tower-uploads/uploads/<key>/ranges/<start>-<end>`, exclusive ends), the
//! published file at `<root>/<path>`, and that nothing is left in the bookkeeping.

mod common;

use common::{KEY, TestServer, data, kind, pattern, sha256, start, start_with};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Barrier;
use tower_uploads::FsStorage;

const MIB: usize = 1 << 20;
const KIB: usize = 1 << 10;

// --- helpers of this file ----------------------------------------------------------------

/// One answer: status, headers and the JSON body (`Null` when not JSON).
#[derive(Debug, Clone)]
struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Reply {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ASCII header").to_owned())
    }

    fn data(&self) -> &Value {
        data(&self.body)
    }

    fn kind(&self) -> Option<&str> {
        kind(&self.body)
    }

    /// The File object's `id`.
    fn file_id(&self) -> String {
        self.data()["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no File id in {self:?}"))
            .to_owned()
    }
}

/// A cheap, clonable client of one server (pooled connections, bearer key).
#[derive(Clone)]
struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    fn new(server: &TestServer) -> Api {
        Api {
            base: server.base.clone(),
            http: common::client_with_timeout(Duration::from_secs(60)),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base, path)
    }

    /// `PUT <path>` with `Content-Range: <content_range>` (if any), extra headers and `body`.
    async fn put(
        &self,
        path: &str,
        content_range: Option<&str>,
        headers: &[(&str, String)],
        body: impl Into<reqwest::Body>,
    ) -> Reply {
        let mut req = self
            .http
            .put(self.url(path))
            .header("authorization", format!("Bearer {KEY}"));
        if let Some(cr) = content_range {
            req = req.header("content-range", cr);
        }
        for (name, value) in headers {
            req = req.header(*name, value.as_str());
        }
        match req.body(body).send().await {
            Ok(res) => reply(res).await,
            Err(e) => transport_error(&e),
        }
    }

    /// `PUT` of `file[range]` with `Content-Range: bytes a-b/t` (inclusive end).
    async fn chunk(&self, path: &str, file: &[u8], range: Range<usize>) -> Reply {
        let cr = format!("bytes {}-{}/{}", range.start, range.end - 1, file.len());
        self.put(path, Some(&cr), &[], file[range].to_vec()).await
    }

    /// The status query `bytes */total` with an empty body.
    async fn status(&self, path: &str, total: usize) -> Reply {
        self.put(path, Some(&format!("bytes */{total}")), &[], Vec::new())
            .await
    }

    /// `GET <path>`: status and bytes.
    async fn get(&self, path: &str) -> (u16, Vec<u8>) {
        let res = self.http.get(self.url(path)).send().await.expect("GET");
        let status = res.status().as_u16();
        (status, res.bytes().await.expect("GET body").to_vec())
    }
}

/// A request that got no answer (the connection failed or closed before a response) is
/// reported as status 0, so that the assertions list it with the others.
fn transport_error(e: &reqwest::Error) -> Reply {
    Reply {
        status: 0,
        headers: Default::default(),
        body: json!({ "transport_error": format!("{e:?}") }),
    }
}

async fn reply(res: reqwest::Response) -> Reply {
    let (status, headers, body) = common::json(res).await;
    Reply {
        status,
        headers,
        body,
    }
}

/// Splits `total` bytes into consecutive chunks whose sizes cycle through `sizes`.
fn plan(total: usize, sizes: &[usize]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut at = 0;
    let mut i = 0;
    while at < total {
        let n = sizes[i % sizes.len()].min(total - at);
        out.push(at..at + n);
        at += n;
        i += 1;
    }
    out
}

/// A deterministic Fisher–Yates shuffle (xorshift).
fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut x = seed | 1;
    for i in (1..items.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        items.swap(i, (x % (i as u64 + 1)) as usize);
    }
}

/// Checks a `202 Accepted` progress answer (PROTOCOL.md §4) and returns its ranges: `total`
/// as sent; ranges inclusive, within the file, ascending and merged; the `Range` header
/// spelling exactly those ranges (absent when there are none); `own` (a chunk this request
/// sent, half-open) inside one of them.
fn progress(r: &Reply, total: usize, own: Option<&Range<usize>>) -> Vec<[u64; 2]> {
    assert_eq!(r.status, 202, "expected 202 progress, got {r:?}");
    let data = r.data();
    assert_eq!(data["total"].as_u64(), Some(total as u64), "total in {r:?}");
    let ranges: Vec<[u64; 2]> = data["ranges"]
        .as_array()
        .unwrap_or_else(|| panic!("no ranges array in {r:?}"))
        .iter()
        .map(|pair| {
            let pair = pair.as_array().expect("a range is a pair");
            assert_eq!(pair.len(), 2, "a range is a pair: {r:?}");
            [
                pair[0].as_u64().expect("number"),
                pair[1].as_u64().expect("number"),
            ]
        })
        .collect();
    for [a, b] in &ranges {
        assert!(
            a <= b && *b < total as u64,
            "range {a}-{b} of {total}: {r:?}"
        );
    }
    for w in ranges.windows(2) {
        assert!(
            w[1][0] > w[0][1] + 1,
            "ranges neither ascending nor merged: {ranges:?}"
        );
    }
    let header = r.header("range");
    if ranges.is_empty() {
        assert_eq!(header, None, "no Range header when nothing is received");
    } else {
        let want = ranges
            .iter()
            .map(|[a, b]| format!("{a}-{b}"))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(
            header,
            Some(format!("bytes={want}")),
            "Range header of {r:?}"
        );
    }
    if let Some(own) = own {
        let (a, b) = (own.start as u64, own.end as u64 - 1);
        assert!(
            ranges.iter().any(|[x, y]| *x <= a && b <= *y),
            "own chunk {a}-{b} missing from {ranges:?}"
        );
    }
    ranges
}

/// Checks a File object answer (`status` 201 or 200) for a file of `total` bytes.
fn file_answer(r: &Reply, status: u16, total: usize) {
    assert_eq!(
        r.status, status,
        "expected {status} with the File object: {r:?}"
    );
    let file = r.data();
    assert!(
        file["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("file_")),
        "File id: {r:?}"
    );
    assert_eq!(
        file["filesize"].as_u64(),
        Some(total as u64),
        "filesize: {r:?}"
    );
    assert_eq!(file["object"], "source");
    assert_eq!(
        r.header("location").as_deref(),
        file["url"].as_str(),
        "Location = url"
    );
}

/// The inclusive ranges covered by half-open chunks, merged.
fn merged(chunks: &[Range<usize>]) -> Vec<[u64; 2]> {
    let mut v: Vec<Range<usize>> = chunks.to_vec();
    v.sort_by_key(|r| r.start);
    let mut out: Vec<[u64; 2]> = Vec::new();
    for r in v {
        match out.last_mut() {
            Some(last) if r.start as u64 <= last[1] + 1 => {
                last[1] = last[1].max(r.end as u64 - 1);
            }
            _ => out.push([r.start as u64, r.end as u64 - 1]),
        }
    }
    out
}

/// The directory of the upload in progress for `path`, found by its `info.json`.
fn upload_dir(server: &TestServer, path: &str) -> Option<PathBuf> {
    let uploads = server.data.join(common::RESERVED).join("uploads");
    std::fs::read_dir(uploads).ok()?.flatten().find_map(|e| {
        let info: Value =
            serde_json::from_slice(&std::fs::read(e.path().join("info.json")).ok()?).ok()?;
        (info["path"] == path).then(|| e.path())
    })
}

/// The range markers on disk of the upload in progress for `path` (`start-end`, exclusive).
fn disk_ranges(server: &TestServer, path: &str) -> BTreeSet<String> {
    upload_dir(server, path)
        .map(|d| common::list_entries_under(&d.join("ranges")))
        .unwrap_or_default()
}

/// Uploads every chunk (sequentially); the last answer must be the 201.
async fn upload_all(api: &Api, path: &str, file: &[u8], chunks: &[Range<usize>]) -> Reply {
    let mut last = None;
    for (i, c) in chunks.iter().enumerate() {
        let r = api.chunk(path, file, c.clone()).await;
        if i + 1 < chunks.len() {
            progress(&r, file.len(), Some(c));
        }
        last = Some(r);
    }
    let last = last.expect("at least one chunk");
    file_answer(&last, 201, file.len());
    last
}

fn assert_bookkeeping_empty(server: &TestServer, what: &str) {
    for sub in ["uploads", "tmp", "staging"] {
        assert!(
            server.bookkeeping(sub).is_empty(),
            "{what}: {}/{sub} not empty: {:?}",
            common::RESERVED,
            server.bookkeeping(sub)
        );
    }
}

fn content_digest(bytes: &[u8]) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(bytes);
    format!(
        "sha-256=:{}:",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// A request body fed by the test, piece by piece (sent with chunked transfer coding).
fn fed_body() -> (tokio::sync::mpsc::Sender<bytes::Bytes>, reqwest::Body) {
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(4);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
    });
    (tx, reqwest::Body::wrap_stream(stream))
}

async fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while !cond() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

// --- the tests ---------------------------------------------------------------------------

/// 40 MiB in 1 MiB and odd-size chunks, shuffled, 6 in flight: exactly one 201, every other
/// answer a consistent 202 (or, for a chunk racing the completing one, 200 with the same
/// File); the stored file is the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shuffled_parallel_chunks() {
    let server = start().await;
    let api = Api::new(&server);
    let path = "big/shuffled.bin";
    let total = 40 * MIB + 12_345;
    let file = Arc::new(pattern(total, 40));
    let chunks = plan(total, &[MIB, MIB + 7, 999_983, 524_309, MIB - 1]);
    assert!(chunks.len() > 40);

    // A precise look at one progress answer: chunks 2 and 0, then 1 merges them.
    let r = api.chunk(path, &file, chunks[2].clone()).await;
    progress(&r, total, Some(&chunks[2]));
    let r = api.chunk(path, &file, chunks[0].clone()).await;
    let (e0, s2, e2) = (chunks[0].end - 1, chunks[2].start, chunks[2].end - 1);
    assert_eq!(r.status, 202);
    assert_eq!(r.header("range"), Some(format!("bytes=0-{e0},{s2}-{e2}")));
    assert_eq!(
        r.body["data"],
        json!({"total": total, "ranges": [[0, e0], [s2, e2]]})
    );
    assert_eq!(r.body["error"], Value::Null);
    assert_eq!(r.body["meta"]["status"], 202);
    let r = api.chunk(path, &file, chunks[1].clone()).await;
    assert_eq!(r.header("range"), Some(format!("bytes=0-{e2}")));
    assert_eq!(r.body["data"], json!({"total": total, "ranges": [[0, e2]]}));
    assert_eq!(
        disk_ranges(&server, path),
        BTreeSet::from([
            format!("0-{}", chunks[0].end),
            format!("{}-{}", chunks[1].start, chunks[1].end),
            format!("{}-{}", chunks[2].start, chunks[2].end),
        ])
    );
    assert_eq!(
        api.get(path).await.0,
        404,
        "a partial upload is never visible"
    );

    let mut rest: Vec<Range<usize>> = chunks[3..].to_vec();
    shuffle(&mut rest, 0x5eed);
    let queue = Arc::new(Mutex::new(rest));
    let results = Arc::new(Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    for _ in 0..6 {
        let (api, file, queue, results) =
            (api.clone(), file.clone(), queue.clone(), results.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let Some(c) = queue.lock().unwrap().pop() else {
                    return;
                };
                let r = api.chunk(path, &file, c.clone()).await;
                results.lock().unwrap().push((c, r));
            }
        }));
    }
    for w in workers {
        w.await.expect("worker");
    }
    let results = std::mem::take(&mut *results.lock().unwrap());
    assert_eq!(results.len(), chunks.len() - 3);
    let created: Vec<&Reply> = results
        .iter()
        .filter(|(_, r)| r.status == 201)
        .map(|(_, r)| r)
        .collect();
    assert_eq!(
        created.len(),
        1,
        "exactly one 201: {:?}",
        statuses(&results)
    );
    eprintln!(
        "shuffled: {} × 202, {} × 200, 1 × 201",
        results.iter().filter(|(_, r)| r.status == 202).count(),
        results.iter().filter(|(_, r)| r.status == 200).count()
    );
    file_answer(created[0], 201, total);
    let id = created[0].file_id();
    for (c, r) in &results {
        match r.status {
            201 => {}
            202 => {
                let ranges = progress(r, total, Some(c));
                assert_ne!(
                    ranges,
                    vec![[0, total as u64 - 1]],
                    "a 202 never covers all"
                );
            }
            200 => assert_eq!(r.file_id(), id, "a racing chunk gets the same File"),
            _ => panic!("unexpected answer to chunk {c:?}: {r:?}"),
        }
    }

    let stored = server.read(path).expect("published file");
    assert_eq!(sha256(&stored), sha256(&file), "stored bytes");
    let (status, got) = api.get(path).await;
    assert_eq!(status, 200);
    assert_eq!(got.len(), total);
    assert_eq!(sha256(&got), sha256(&file), "delivered bytes");
    assert_bookkeeping_empty(&server, "after the upload");
}

fn statuses(results: &[(Range<usize>, Reply)]) -> Vec<u16> {
    results.iter().map(|(_, r)| r.status).collect()
}

/// `bytes a-b/t` and `bytes=a-b/t`, and ittybit's exclusive end (`bytes=0-16/100` with 16
/// bytes) mixed with an inclusive last chunk in one upload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_spellings_and_exclusive_end() {
    let server = start().await;
    let api = Api::new(&server);
    let file = pattern(100, 7);
    let path = "spellings.bin";

    // Exclusive end, ittybit style: 16 bytes for `0-16`.
    let r = api
        .put(path, Some("bytes=0-16/100"), &[], file[0..16].to_vec())
        .await;
    assert_eq!(progress(&r, 100, None), vec![[0, 15]]);
    // RFC 9110 spelling, inclusive end.
    let r = api
        .put(path, Some("bytes 16-49/100"), &[], file[16..50].to_vec())
        .await;
    assert_eq!(progress(&r, 100, None), vec![[0, 49]]);
    assert_eq!(
        disk_ranges(&server, path),
        BTreeSet::from(["0-16".into(), "16-50".into()])
    );
    // ittybit spelling, inclusive last chunk.
    let r = api
        .put(path, Some("bytes=50-99/100"), &[], file[50..100].to_vec())
        .await;
    file_answer(&r, 201, 100);
    assert_eq!(server.read(path).as_deref(), Some(&file[..]));

    // An exclusive last chunk (`end == total`) completes an upload too.
    let path = "exclusive-last.bin";
    let r = api
        .put(path, Some("bytes=0-49/100"), &[], file[0..50].to_vec())
        .await;
    assert_eq!(progress(&r, 100, None), vec![[0, 49]]);
    let r = api
        .put(path, Some("bytes=50-100/100"), &[], file[50..100].to_vec())
        .await;
    file_answer(&r, 201, 100);
    assert_eq!(server.read(path).as_deref(), Some(&file[..]));
    assert_bookkeeping_empty(&server, "after both uploads");
}

/// `bytes */t` with an empty body: unknown upload, mid-upload, completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_query() {
    let server = start().await;
    let api = Api::new(&server);
    let path = "status/q.bin";
    let total = 300 * KIB + 1;
    let file = pattern(total, 3);
    let chunks = plan(total, &[100 * KIB]);

    let r = api.status(path, total).await;
    assert_eq!(progress(&r, total, None), Vec::<[u64; 2]>::new());
    assert_eq!(r.header("range"), None);
    assert_eq!(r.data(), &json!({"total": total, "ranges": []}));
    assert_bookkeeping_empty(&server, "a status query of an unknown upload");

    api.chunk(path, &file, chunks[2].clone()).await;
    api.chunk(path, &file, chunks[0].clone()).await;
    let r = api.status(path, total).await;
    let want = merged(&[chunks[0].clone(), chunks[2].clone()]);
    assert_eq!(progress(&r, total, None), want);
    assert_eq!(
        r.header("range"),
        Some(format!(
            "bytes=0-{},{}-{}",
            chunks[0].end - 1,
            chunks[2].start,
            chunks[2].end - 1
        ))
    );
    // Asking does not change anything.
    assert_eq!(progress(&api.status(path, total).await, total, None), want);

    api.chunk(path, &file, chunks[1].clone()).await;
    let done = api.chunk(path, &file, chunks[3].clone()).await;
    file_answer(&done, 201, total);
    let r = api.status(path, total).await;
    file_answer(&r, 200, total);
    assert_eq!(r.data(), done.data(), "the same File object");
    assert_bookkeeping_empty(&server, "after status queries of a finished upload");
}

/// Every refused chunk leaves the upload as it was: same ranges (answered and on disk),
/// nothing published, nothing served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_chunks_change_nothing() {
    let server = start_with(|u| u.max_file_size(4 * MIB as u64).max_request_size(MIB as u64)).await;
    let api = Api::new(&server);
    let path = "errors/e.bin";
    let total = 3 * MIB + 5;
    let file = pattern(total, 11);
    let chunks = plan(total, &[512 * KIB]);
    assert_eq!(chunks.len(), 7);

    progress(
        &api.chunk(path, &file, chunks[0].clone()).await,
        total,
        None,
    );
    let mut want_ranges = vec![[0u64, chunks[0].end as u64 - 1]];
    let mut want_disk = BTreeSet::from([format!("0-{}", chunks[0].end)]);

    let unchanged = |want_ranges: Vec<[u64; 2]>, want_disk: BTreeSet<String>, what: String| {
        let api = api.clone();
        let server = &server;
        async move {
            let r = api.status(path, total).await;
            assert_eq!(
                progress(&r, total, None),
                want_ranges,
                "{what}: ranges changed"
            );
            assert_eq!(
                disk_ranges(server, path),
                want_disk,
                "{what}: markers changed"
            );
            assert!(
                server.read(path).is_none(),
                "{what}: something was published"
            );
            assert_eq!(
                api.get(path).await.0,
                404,
                "{what}: GET of an incomplete upload"
            );
        }
    };

    let (s1, e1) = (chunks[1].start, chunks[1].end - 1);
    let cases: Vec<(String, Vec<u8>, u16, &str)> = vec![
        // The established total is 3 MiB + 5.
        (
            format!("bytes {s1}-{e1}/{}", total + 1),
            file[chunks[1].clone()].to_vec(),
            409,
            "range_conflict",
        ),
        (
            format!("bytes */{}", total + 1),
            Vec::new(),
            409,
            "range_conflict",
        ),
        (
            format!("bytes {s1}-{e1}/{}", total - 1),
            file[chunks[1].clone()].to_vec(),
            409,
            "range_conflict",
        ),
        // start > end.
        (
            format!("bytes 600-500/{total}"),
            vec![1; 101],
            416,
            "range_invalid",
        ),
        // Beyond the total.
        (
            format!("bytes {}-{}/{total}", total - 10, total),
            vec![1; 11],
            416,
            "range_invalid",
        ),
        (
            format!("bytes {}-{}/{total}", total - 10, total + 5),
            vec![1; 16],
            416,
            "range_invalid",
        ),
        (
            format!("bytes {total}-{total}/{total}"),
            vec![1],
            416,
            "range_invalid",
        ),
        // Malformed.
        ("bytes 0-99".into(), vec![1; 100], 416, "range_invalid"),
        ("bytes 0-99/*".into(), vec![1; 100], 416, "range_invalid"),
        (
            format!("bytes x-99/{total}"),
            vec![1; 100],
            416,
            "range_invalid",
        ),
        (
            format!("items 0-99/{total}"),
            vec![1; 100],
            416,
            "range_invalid",
        ),
        (
            format!("bytes0-99/{total}"),
            vec![1; 100],
            416,
            "range_invalid",
        ),
        (
            format!("bytes -99/{total}"),
            vec![1; 100],
            416,
            "range_invalid",
        ),
        (
            format!("bytes 0-99/{total}/1"),
            vec![1; 100],
            416,
            "range_invalid",
        ),
        ("".into(), vec![1; 100], 416, "range_invalid"),
        // Several ranges.
        (
            format!("bytes 0-99,200-299/{total}"),
            vec![1; 200],
            416,
            "range_invalid",
        ),
        (
            format!("bytes 0-99/{total}, 100-199/{total}"),
            vec![1; 200],
            416,
            "range_invalid",
        ),
        // A body matching neither reading (Content-Length given).
        (
            format!("bytes {s1}-{e1}/{total}"),
            vec![1; 1000],
            400,
            "range_invalid",
        ),
        (
            format!("bytes {s1}-{e1}/{total}"),
            vec![1; 512 * KIB + 1],
            400,
            "range_invalid",
        ),
        (
            format!("bytes {s1}-{e1}/{total}"),
            vec![1; 512 * KIB - 2],
            400,
            "range_invalid",
        ),
        // A total over the file-size limit.
        (
            format!("bytes 0-99/{}", 4 * MIB + 1),
            vec![1; 100],
            413,
            "file_too_large",
        ),
        (
            format!("bytes */{}", 4 * MIB + 1),
            Vec::new(),
            413,
            "file_too_large",
        ),
    ];
    for (header, body, status, want_kind) in cases {
        if body.len() > 64 * KIB {
            // Refused from its head, before the body: sent as a head alone, since a client
            // still sending a big body when the server closes may get a reset instead of
            // the answer (the server cannot read what it refuses).
            let head = format!(
                "PUT /{path} HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {KEY}\r\n\
                 content-range: {header}\r\ncontent-length: {}\r\n\r\n",
                server.addr,
                body.len()
            );
            let r = server.raw(head.as_bytes()).await;
            assert_eq!(r.status, status, "Content-Range {header:?}: {r:?}");
            assert_eq!(kind(&r.json()), Some(want_kind), "{header:?}");
        } else {
            let r = api.put(path, Some(&header), &[], body).await;
            assert_eq!(r.status, status, "Content-Range {header:?}: {r:?}");
            assert_eq!(r.kind(), Some(want_kind), "Content-Range {header:?}: {r:?}");
        }
        unchanged(want_ranges.clone(), want_disk.clone(), header).await;
    }

    // A chunk over the request-size limit: refused from its Content-Length, before its body.
    let big = MIB + 1;
    let head = format!(
        "PUT /{path} HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {KEY}\r\n\
         content-range: bytes {s1}-{}/{total}\r\ncontent-length: {big}\r\n\r\n",
        server.addr,
        s1 + big - 1
    );
    let r = server.raw(head.as_bytes()).await;
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(kind(&r.json()), Some("file_too_large"));
    unchanged(
        want_ranges.clone(),
        want_disk.clone(),
        "chunk > limit".into(),
    )
    .await;
    // The same without Content-Length: cut off once it passes the limit.
    let (tx, body) = fed_body();
    let feeder = tokio::spawn({
        let piece = bytes::Bytes::from(vec![7u8; 64 * KIB]);
        async move {
            for _ in 0..(big / (64 * KIB) + 1) {
                if tx.send(piece.clone()).await.is_err() {
                    return;
                }
            }
        }
    });
    let cr = format!("bytes {s1}-{}/{total}", s1 + big - 1);
    let res = api
        .http
        .put(api.url(path))
        .header("authorization", format!("Bearer {KEY}"))
        .header("content-range", &cr)
        .body(body)
        .send()
        .await;
    match res {
        Ok(res) => {
            let r = reply(res).await;
            assert_eq!(r.status, 413, "{r:?}");
            assert_eq!(r.kind(), Some("file_too_large"));
        }
        // The server may close the connection while the client still sends.
        Err(e) => eprintln!("chunked over-limit chunk: the client saw {e}"),
    }
    feeder.abort();
    unchanged(
        want_ranges.clone(),
        want_disk.clone(),
        "chunked > limit".into(),
    )
    .await;

    // Content-Digest: a correct digest counts…
    let r = api
        .put(
            path,
            Some(&format!("bytes {s1}-{e1}/{total}")),
            &[("content-digest", content_digest(&file[chunks[1].clone()]))],
            file[chunks[1].clone()].to_vec(),
        )
        .await;
    progress(&r, total, Some(&chunks[1]));
    want_ranges = vec![[0, e1 as u64]];
    want_disk.insert(format!("{s1}-{}", chunks[1].end));
    unchanged(
        want_ranges.clone(),
        want_disk.clone(),
        "correct digest".into(),
    )
    .await;
    // …a wrong one does not (the digest of other bytes)…
    let (s2, e2) = (chunks[2].start, chunks[2].end - 1);
    let r = api
        .put(
            path,
            Some(&format!("bytes {s2}-{e2}/{total}")),
            &[("content-digest", content_digest(b"something else"))],
            file[chunks[2].clone()].to_vec(),
        )
        .await;
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(r.kind(), Some("digest_mismatch"));
    unchanged(
        want_ranges.clone(),
        want_disk.clone(),
        "wrong digest".into(),
    )
    .await;
    // …and neither does a malformed one.
    let r = api
        .put(
            path,
            Some(&format!("bytes {s2}-{e2}/{total}")),
            &[("content-digest", "sha-256=:abc".to_owned())],
            file[chunks[2].clone()].to_vec(),
        )
        .await;
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(r.kind(), Some("digest_mismatch"), "{r:?}");
    unchanged(
        want_ranges.clone(),
        want_disk.clone(),
        "malformed digest".into(),
    )
    .await;

    // The upload is intact: the rest completes it.
    let done = upload_all(&api, path, &file, &chunks[2..]).await;
    file_answer(&done, 201, total);
    assert_eq!(
        sha256(&server.read(path).expect("published")),
        sha256(&file)
    );
    assert_bookkeeping_empty(&server, "after the upload");
}

/// Until the upload completes, GET serves the previous version; then the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn previous_version_served_until_complete() {
    let server = start().await;
    let api = Api::new(&server);
    let path = "versions/v.bin";
    let total = 512 * KIB + 3;
    let old = pattern(total, 100);
    let new = pattern(total, 200);
    let r = api.put(path, None, &[], old.clone()).await;
    assert_eq!(r.status, 201, "simple PUT of the first version: {r:?}");
    let chunks = plan(total, &[100 * KIB]);
    for (i, c) in chunks.iter().enumerate().rev() {
        let r = api.chunk(path, &new, c.clone()).await;
        let (status, got) = api.get(path).await;
        assert_eq!(status, 200);
        if i > 0 {
            progress(&r, total, Some(c));
            assert!(got == old, "chunk {i}: GET serves the previous version");
        } else {
            file_answer(&r, 201, total);
            assert!(got == new, "GET serves the new version once complete");
        }
    }
    assert_bookkeeping_empty(&server, "after the upload");
}

async fn race_distinct_last_chunks(api: &Api, server: &TestServer, path: &str, seed: u64) {
    let total = 4 * MIB + 333;
    let file = Arc::new(pattern(total, seed));
    let chunks = plan(total, &[256 * KIB, 128 * KIB + 1]);
    let (head, last) = chunks.split_at(chunks.len() - 8);
    for c in head {
        progress(&api.chunk(path, &file, c.clone()).await, total, Some(c));
    }
    let barrier = Arc::new(Barrier::new(last.len()));
    let tasks: Vec<_> = last
        .iter()
        .cloned()
        .map(|c| {
            let (api, file, barrier, path) =
                (api.clone(), file.clone(), barrier.clone(), path.to_owned());
            tokio::spawn(async move {
                barrier.wait().await;
                let r = api.chunk(&path, &file, c.clone()).await;
                (c, r)
            })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.expect("task"));
    }
    let created: Vec<&Reply> = results
        .iter()
        .filter(|(_, r)| r.status == 201)
        .map(|(_, r)| r)
        .collect();
    assert_eq!(
        created.len(),
        1,
        "{path}: one 201: {:?}",
        statuses(&results)
    );
    eprintln!(
        "{path}: answers to the last 8 chunks: {:?}",
        statuses(&results)
    );
    let id = created[0].file_id();
    for (c, r) in &results {
        match r.status {
            201 => file_answer(r, 201, total),
            200 => {
                file_answer(r, 200, total);
                assert_eq!(r.file_id(), id, "{path}: the same File");
            }
            // Committed before the completing chunk: it could not know yet.
            202 => {
                let ranges = progress(r, total, Some(c));
                assert_ne!(ranges, vec![[0, total as u64 - 1]]);
            }
            _ => panic!("{path}: unexpected answer to {c:?}: {r:?}"),
        }
    }
    assert_eq!(
        sha256(&server.read(path).expect("published")),
        sha256(&file)
    );
    let (status, got) = api.get(path).await;
    assert_eq!((status, sha256(&got)), (200, sha256(&file)));
    assert_bookkeeping_empty(server, path);
}

async fn race_same_last_chunk(api: &Api, server: &TestServer, path: &str, seed: u64) {
    let total = 2 * MIB + 77;
    let file = Arc::new(pattern(total, seed));
    let chunks = plan(total, &[256 * KIB]);
    let (head, last) = chunks.split_at(chunks.len() - 1);
    for c in head {
        progress(&api.chunk(path, &file, c.clone()).await, total, Some(c));
    }
    // The last chunk is big enough to be streamed in several writes.
    let last = last[0].start - 256 * KIB..total;
    let barrier = Arc::new(Barrier::new(8));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (api, file, barrier, path, c) = (
                api.clone(),
                file.clone(),
                barrier.clone(),
                path.to_owned(),
                last.clone(),
            );
            tokio::spawn(async move {
                barrier.wait().await;
                api.chunk(&path, &file, c).await
            })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.expect("task"));
    }
    let codes: Vec<u16> = results.iter().map(|r| r.status).collect();
    let created: Vec<&Reply> = results.iter().filter(|r| r.status == 201).collect();
    assert_eq!(created.len(), 1, "{path}: one 201: {codes:?}");
    let id = created[0].file_id();
    for r in &results {
        assert!(
            r.status == 201 || r.status == 200,
            "{path}: every copy of the completing chunk gets 201 or 200: {codes:?}; {r:?}"
        );
        file_answer(r, r.status, total);
        assert_eq!(r.file_id(), id, "{path}: the same File");
    }
    assert_eq!(
        sha256(&server.read(path).expect("published")),
        sha256(&file)
    );
    assert_bookkeeping_empty(server, path);
}

/// The last 8 chunks sent at once from 8 tasks, 5 times: one 201, the File of every 200 is
/// the same. A 202 is accepted for a chunk that was counted before the completing one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn final_chunks_race() {
    let server = start().await;
    let api = Api::new(&server);
    for round in 0..5u64 {
        race_distinct_last_chunks(&api, &server, &format!("race/distinct-{round}.bin"), round)
            .await;
    }
}

/// The same completing chunk sent by 8 tasks at once, 5 times: one 201, seven 200 with the
/// same File.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_final_chunk_race() {
    let server = start().await;
    let api = Api::new(&server);
    for round in 0..5u64 {
        race_same_last_chunk(&api, &server, &format!("race/same-{round}.bin"), 50 + round).await;
    }
}

/// Retries: mid-upload (202, nothing changes), after completion with the same bytes (200,
/// the same File), after completion with other bytes (a new upload of the path; the old
/// file is served until it completes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_idempotent() {
    let server = start().await;
    let api = Api::new(&server);
    let path = "retry/r.bin";
    let total = MIB + 9;
    let file = pattern(total, 21);
    let chunks = plan(total, &[256 * KIB]);
    assert_eq!(chunks.len(), 5);

    // Mid-upload.
    let first = progress(
        &api.chunk(path, &file, chunks[1].clone()).await,
        total,
        None,
    );
    let before = disk_ranges(&server, path);
    for _ in 0..2 {
        let again = api.chunk(path, &file, chunks[1].clone()).await;
        assert_eq!(
            progress(&again, total, None),
            first,
            "a retry changes nothing"
        );
        assert_eq!(disk_ranges(&server, path), before);
    }
    let mut done = None;
    for c in [0, 2, 3, 4] {
        done = Some(api.chunk(path, &file, chunks[c].clone()).await);
    }
    let done = done.unwrap();
    file_answer(&done, 201, total);
    assert_bookkeeping_empty(&server, "after the upload");

    // After completion, with the same bytes: every chunk, the first and the last included.
    for c in [3, 0, 4] {
        let again = api.chunk(path, &file, chunks[c].clone()).await;
        file_answer(&again, 200, total);
        assert_eq!(again.data(), done.data(), "the same File object");
        assert_bookkeeping_empty(&server, "a retry after completion");
        assert_eq!(server.read(path).as_deref(), Some(&file[..]));
    }
    // The exclusive-end spelling of a retry is a retry too.
    let c = chunks[2].clone();
    let again = api
        .put(
            path,
            Some(&format!("bytes={}-{}/{total}", c.start, c.end)),
            &[],
            file[c.clone()].to_vec(),
        )
        .await;
    file_answer(&again, 200, total);
    assert_eq!(again.file_id(), done.file_id());

    // After completion, with other bytes: a new upload of the path starts.
    let mut new = file.clone();
    for b in &mut new[chunks[2].clone()] {
        *b ^= 0x5a;
    }
    let r = api.chunk(path, &new, chunks[2].clone()).await;
    assert_eq!(
        progress(&r, total, None),
        merged(&[chunks[2].clone()]),
        "only the new chunk is received"
    );
    assert_eq!(api.get(path).await.1, file, "the old file is still served");
    // The other chunks are the same bytes as the old file's: they belong to the new upload.
    for c in [0, 1, 3] {
        progress(
            &api.chunk(path, &new, chunks[c].clone()).await,
            total,
            Some(&chunks[c]),
        );
        assert_eq!(api.get(path).await.1, file, "the old file is still served");
    }
    let r = api.chunk(path, &new, chunks[4].clone()).await;
    file_answer(&r, 201, total);
    assert_ne!(r.file_id(), done.file_id(), "a new version");
    assert_eq!(api.get(path).await.1, new, "the new bytes");
    assert_bookkeeping_empty(&server, "after the second upload");
}

/// A client that lost the 201 re-sends the whole upload, 4 chunks in flight: every chunk is
/// a retry of a chunk of the finished upload (PROTOCOL.md §4) and gets 200 with the same
/// File; nothing new starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_retry_of_a_finished_upload() {
    let server = start().await;
    let api = Api::new(&server);
    let path = "retry/parallel.bin";
    let total = 4 * MIB + 1;
    let file = Arc::new(pattern(total, 31));
    let chunks = plan(total, &[256 * KIB]);
    let done = upload_all(&api, path, &file, &chunks).await;

    let queue = Arc::new(Mutex::new(chunks.clone()));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (api, file, queue) = (api.clone(), file.clone(), queue.clone());
        workers.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let Some(c) = queue.lock().unwrap().pop() else {
                    return out;
                };
                let r = api.chunk(path, &file, c.clone()).await;
                out.push((c, r));
            }
        }));
    }
    let mut results = Vec::new();
    for w in workers {
        results.extend(w.await.expect("worker"));
    }
    let bad: Vec<String> = results
        .iter()
        .filter(|(_, r)| r.status != 200 || r.data()["id"] != done.data()["id"])
        .map(|(c, r)| format!("{c:?} → {} {}", r.status, r.body))
        .collect();
    assert!(
        bad.is_empty(),
        "{} of {} retried chunks did not get 200 with the same File: {bad:#?}",
        bad.len(),
        results.len()
    );
    assert_eq!(sha256(&server.read(path).expect("file")), sha256(&file));
    assert!(
        server.wait_bookkeeping_empty(Duration::from_secs(2)).await,
        "a retry left an upload behind: {:?}",
        server.bookkeeping("uploads")
    );
}

/// A chunk refused for its digest does not count — and must not change bytes already
/// received in its range either (a retry corrupted in transit). The chunks are 3 MiB, more
/// than one write batch of `FsStorage` (1 MiB), so that some of a chunk's bytes reach the
/// data file while it streams in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_digest_over_a_received_range_keeps_its_bytes() {
    let server = start().await;
    let api = Api::new(&server);
    let path = "digest/over.bin";
    let total = 9 * MIB + 100;
    let file = pattern(total, 41);
    let chunks = plan(total, &[3 * MIB]);
    let (head, last) = chunks.split_at(chunks.len() - 1);
    for c in head {
        progress(&api.chunk(path, &file, c.clone()).await, total, Some(c));
    }
    let c = chunks[1].clone();
    let mut corrupted = file[c.clone()].to_vec();
    for b in corrupted.iter_mut().step_by(1000) {
        *b ^= 0xff;
    }
    let r = api
        .put(
            path,
            Some(&format!("bytes {}-{}/{total}", c.start, c.end - 1)),
            &[("content-digest", content_digest(&file[c.clone()]))],
            corrupted,
        )
        .await;
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(r.kind(), Some("digest_mismatch"));
    let r = api.chunk(path, &file, last[0].clone()).await;
    file_answer(&r, 201, total);
    let stored = server.read(path).expect("published");
    assert!(
        stored == file,
        "the published file differs from the source at {:?}: the refused chunk's bytes were kept",
        first_difference(&stored, &file)
    );
}

/// Same when the refused chunk only partly overlaps received bytes: it spans the end of a
/// received range and a hole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_digest_partly_over_a_received_range_keeps_its_bytes() {
    let server = start().await;
    let api = Api::new(&server);
    let path = "digest/partly.bin";
    let total = 9 * MIB + 100;
    let file = pattern(total, 42);
    let chunks = plan(total, &[3 * MIB]);
    assert_eq!(chunks.len(), 4);
    for c in [0, 2] {
        progress(
            &api.chunk(path, &file, chunks[c].clone()).await,
            total,
            Some(&chunks[c]),
        );
    }
    // [1.5 MiB, 4.5 MiB): half received, half a hole.
    let c = 3 * MIB / 2..9 * MIB / 2;
    let mut corrupted = file[c.clone()].to_vec();
    for b in corrupted.iter_mut().step_by(1000) {
        *b ^= 0xff;
    }
    let r = api
        .put(
            path,
            Some(&format!("bytes {}-{}/{total}", c.start, c.end - 1)),
            &[("content-digest", content_digest(&file[c.clone()]))],
            corrupted,
        )
        .await;
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(r.kind(), Some("digest_mismatch"));
    assert_eq!(
        progress(&api.status(path, total).await, total, None),
        merged(&[chunks[0].clone(), chunks[2].clone()]),
        "the refused chunk is not counted"
    );
    progress(
        &api.chunk(path, &file, chunks[1].clone()).await,
        total,
        Some(&chunks[1]),
    );
    let r = api.chunk(path, &file, chunks[3].clone()).await;
    file_answer(&r, 201, total);
    let stored = server.read(path).expect("published");
    assert!(
        stored == file,
        "the published file differs from the source at {:?}: the refused chunk's bytes were kept",
        first_difference(&stored, &file)
    );
}

/// Same with a body shorter than its range (no Content-Length): 400, and the bytes already
/// received in that range stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_body_over_a_received_range_keeps_its_bytes() {
    let server = start().await;
    let api = Api::new(&server);
    let path = "short/over.bin";
    let total = 9 * MIB + 100;
    let file = pattern(total, 43);
    let chunks = plan(total, &[3 * MIB]);
    let (head, last) = chunks.split_at(chunks.len() - 1);
    for c in head {
        progress(&api.chunk(path, &file, c.clone()).await, total, Some(c));
    }
    let c = chunks[1].clone();
    let (tx, body) = fed_body();
    let junk = bytes::Bytes::from(vec![0u8; c.len() - 10]);
    tx.send(junk).await.expect("feed");
    drop(tx);
    let res = api
        .http
        .put(api.url(path))
        .header("authorization", format!("Bearer {KEY}"))
        .header(
            "content-range",
            format!("bytes {}-{}/{total}", c.start, c.end - 1),
        )
        .body(body)
        .send()
        .await
        .expect("PUT");
    let r = reply(res).await;
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(r.kind(), Some("range_invalid"));
    let r = api.chunk(path, &file, last[0].clone()).await;
    file_answer(&r, 201, total);
    let stored = server.read(path).expect("published");
    assert!(
        stored == file,
        "the published file differs from the source at {:?}: the refused chunk's bytes were kept",
        first_difference(&stored, &file)
    );
}

fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}

/// The request that created an upload fails (here: its body is short) after another chunk
/// joined that upload and was counted (202): the other chunk stays received.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_first_chunk_keeps_the_chunks_of_others() {
    let server = start().await;
    let api = Api::new(&server);
    let path = "first/fails.bin";
    let total = MIB;
    let file = pattern(total, 47);
    let chunks = plan(total, &[256 * KIB]);

    // Chunk 0 opens the upload and stalls mid-body.
    let c0 = chunks[0].clone();
    let (tx, body) = fed_body();
    let first = tokio::spawn({
        let api = api.clone();
        let cr = format!("bytes {}-{}/{total}", c0.start, c0.end - 1);
        async move {
            let res = api
                .http
                .put(api.url(path))
                .header("authorization", format!("Bearer {KEY}"))
                .header("content-range", cr)
                .body(body)
                .send()
                .await
                .expect("PUT");
            reply(res).await
        }
    });
    tx.send(bytes::Bytes::copy_from_slice(&file[0..64 * KIB]))
        .await
        .expect("feed");
    assert!(
        wait_for(Duration::from_secs(5), || upload_dir(&server, path)
            .is_some())
        .await,
        "the first chunk did not open the upload"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Chunk 1 joins and is counted.
    let r = api.chunk(path, &file, chunks[1].clone()).await;
    assert_eq!(progress(&r, total, None), merged(&[chunks[1].clone()]));

    // Chunk 0 ends two bytes short (one short would be the exclusive reading): refused.
    tx.send(bytes::Bytes::copy_from_slice(&file[64 * KIB..c0.end - 2]))
        .await
        .expect("feed");
    drop(tx);
    let r = first.await.expect("first");
    assert_eq!(r.status, 400, "{r:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let r = api.status(path, total).await;
    assert_eq!(
        progress(&r, total, None),
        merged(&[chunks[1].clone()]),
        "the failure of the chunk that created the upload discarded another chunk's range"
    );
    // And the upload still completes with the remaining chunks.
    for c in [0, 2] {
        progress(
            &api.chunk(path, &file, chunks[c].clone()).await,
            total,
            Some(&chunks[c]),
        );
    }
    let r = api.chunk(path, &file, chunks[3].clone()).await;
    file_answer(&r, 201, total);
    assert_eq!(server.read(path).as_deref(), Some(&file[..]));
}

/// The upload TTL of the expiry tests.
const TTL: Duration = Duration::from_secs(1);

/// A server whose uploads expire after [`TTL`], with the first 64 KiB chunk of a `total`-byte
/// file (`pattern(total, seed)`) at `path` received; the file and its 64 KiB chunks.
async fn first_chunk_with_ttl(
    path: &str,
    total: usize,
    seed: u64,
) -> (TestServer, Api, Vec<u8>, Vec<Range<usize>>) {
    let server = start_with(|u| u.upload_ttl(TTL)).await;
    let api = Api::new(&server);
    let file = pattern(total, seed);
    let chunks = plan(total, &[64 * KIB]);
    progress(
        &api.chunk(path, &file, chunks[0].clone()).await,
        total,
        None,
    );
    (server, api, file, chunks)
}

/// `.upload_ttl(1 s)`: a chunk for an upload idle longer than that starts a new one, and
/// `service::sweep` removes an expired upload from disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_uploads_restart_and_are_swept() {
    let (ttl, path, total) = (TTL, "ttl/t.bin", 256 * KIB);
    let (server, api, file, chunks) = first_chunk_with_ttl(path, total, 61).await;
    let old_dir = upload_dir(&server, path).expect("upload dir");
    let old_entries = common::list_entries_under(&old_dir);
    assert!(
        old_entries.iter().any(|e| e.starts_with("data.")),
        "{old_entries:?}"
    );
    tokio::time::sleep(ttl + Duration::from_millis(500)).await;

    // A new chunk starts a new upload: only it is received.
    let r = api.chunk(path, &file, chunks[2].clone()).await;
    assert_eq!(progress(&r, total, None), merged(&[chunks[2].clone()]));
    assert_eq!(
        progress(&api.status(path, total).await, total, None),
        merged(&[chunks[2].clone()])
    );
    let new_dir = upload_dir(&server, path).expect("upload dir");
    let new_entries = common::list_entries_under(&new_dir);
    assert_eq!(
        new_entries
            .iter()
            .filter(|e| e.starts_with("data."))
            .count(),
        1,
        "{new_entries:?}"
    );
    assert!(
        old_entries
            .iter()
            .filter(|e| e.starts_with("data."))
            .all(|e| !new_entries.contains(e)),
        "the expired upload's data file is gone: {old_entries:?} vs {new_entries:?}"
    );
    assert_eq!(
        server
            .bookkeeping("uploads")
            .iter()
            .filter(|e| e.ends_with("info.json"))
            .count(),
        1
    );

    // The sweep keeps it within the TTL…
    let storage: std::sync::Arc<dyn tower_uploads::storage::Storage> =
        std::sync::Arc::new(FsStorage::new(&server.data).expect("storage"));
    let report = tower_uploads::service::sweep(&storage, ttl)
        .await
        .expect("sweep");
    assert_eq!((report.swept, report.kept), (0, 1));
    assert!(upload_dir(&server, path).is_some());
    // …and removes it after.
    tokio::time::sleep(ttl + Duration::from_millis(500)).await;
    let report = tower_uploads::service::sweep(&storage, ttl)
        .await
        .expect("sweep");
    assert_eq!((report.swept, report.kept), (1, 0));
    assert_bookkeeping_empty(&server, "after the sweep");
    assert!(!new_dir.exists(), "the swept upload's bytes are freed");
    assert_eq!(
        progress(&api.status(path, total).await, total, None),
        Vec::<[u64; 2]>::new()
    );
    assert_eq!(api.get(path).await.0, 404);

    // A chunk after the sweep starts a new upload that completes normally.
    let done = upload_all(&api, path, &file, &chunks).await;
    file_answer(&done, 201, total);
    assert_eq!(server.read(path).as_deref(), Some(&file[..]));
}

/// The record FsStorage keeps with a published file.
const RECORD_XATTR: &str = "user.tower-uploads.record";

/// A small simple upload whose File object can be derived again is published without one
/// (no record beside the bytes); a status query with its size then answers the very object
/// the upload answered, and delivery its type. A `Content-Type` hint that shaped the facts
/// makes the upload store its object, and the same holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_simple_upload_is_derived_again() {
    let server = start().await;
    let api = Api::new(&server);
    let content_type = |path: &str| {
        let url = api.url(path);
        async move {
            let res = common::client().get(url).send().await.expect("GET");
            res.headers()["content-type"].to_str().unwrap().to_owned()
        }
    };

    // Recognised bytes, no hint: nothing stored but the bytes.
    let png = common::tiny_png(3, 2);
    let r = api.put("d/a.png", None, &[], png.clone()).await;
    assert_eq!(r.status, 201, "{r:?}");
    let answered = r.data().clone();
    assert_eq!(
        (&answered["type"], &answered["width"], &answered["height"]),
        (&json!("image/png"), &json!(3), &json!(2))
    );
    let on_disk = server.data.join("d/a.png");
    assert_eq!(xattr::get(&on_disk, RECORD_XATTR).unwrap(), None);
    let s = api.status("d/a.png", png.len()).await;
    assert_eq!(s.status, 200, "{s:?}");
    assert_eq!(s.data(), &answered, "the same File object");
    assert_eq!(content_type("d/a.png").await, "image/png");
    // Another total is another upload.
    assert_eq!(api.status("d/a.png", png.len() + 1).await.status, 202);

    // A new version is a new File.
    let again = api.put("d/a.png", None, &[], png.clone()).await;
    let second = again.data().clone();
    assert_ne!(second["id"], answered["id"]);
    assert_ne!(second["media_id"], answered["media_id"]);
    assert_eq!(api.status("d/a.png", png.len()).await.data(), &second);

    // Unrecognised bytes whose type the hint gave: the File object is stored.
    let csv = b"a,b\n1,2\n".to_vec();
    let hinted = [("content-type", "text/csv".to_owned())];
    let r = api.put("d/b.bin", None, &hinted, csv.clone()).await;
    let answered = r.data().clone();
    assert_eq!(answered["type"], "text/csv");
    assert!(
        xattr::get(server.data.join("d/b.bin"), RECORD_XATTR)
            .unwrap()
            .is_some()
    );
    assert_eq!(api.status("d/b.bin", csv.len()).await.data(), &answered);
    assert_eq!(content_type("d/b.bin").await, "text/csv");

    // A hint that agrees with the bytes changes nothing: not stored.
    let png_hint = [("content-type", "image/png".to_owned())];
    let r = api.put("d/c.png", None, &png_hint, png.clone()).await;
    let answered = r.data().clone();
    assert_eq!(
        xattr::get(server.data.join("d/c.png"), RECORD_XATTR).unwrap(),
        None
    );
    assert_eq!(api.status("d/c.png", png.len()).await.data(), &answered);

    // A chunk upload of the same bytes is a retry of the published file: 200, that File.
    let r = api.chunk("d/c.png", &png, 0..png.len()).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.data(), &answered);
}

/// A status query treats an expired upload that no sweeper has reached as gone: nothing
/// received, and no 409 for another total (PROTOCOL.md §4: "empty `ranges` for an unknown or
/// expired upload").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_of_an_expired_upload_is_empty() {
    let (ttl, path, total) = (TTL, "ttl/status.bin", 128 * KIB);
    let (server, api, file, chunks) = first_chunk_with_ttl(path, total, 67).await;
    assert_eq!(
        progress(&api.status(path, total).await, total, None),
        merged(&[chunks[0].clone()])
    );
    tokio::time::sleep(ttl + Duration::from_millis(500)).await;

    // Another total: the expired upload does not conflict.
    let other = total + 1;
    assert_eq!(
        progress(&api.status(path, other).await, other, None),
        Vec::<[u64; 2]>::new()
    );
    assert_eq!(
        progress(&api.status(path, total).await, total, None),
        Vec::<[u64; 2]>::new()
    );
    assert!(
        upload_dir(&server, path).is_none(),
        "the status query discarded the expired upload"
    );
    let done = upload_all(&api, path, &file, &chunks).await;
    file_answer(&done, 201, total);
    assert_eq!(server.read(path).as_deref(), Some(&file[..]));
}

/// `Uploads::spawn_sweeper` sweeps on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawned_sweeper_frees_expired_uploads() {
    let ttl = Duration::from_secs(1);
    let server = start_with(|u| {
        let u = u.upload_ttl(ttl);
        let _sweeper = u.spawn_sweeper(); // runs until the test's runtime ends
        u
    })
    .await;
    let api = Api::new(&server);
    let path = "ttl/swept.bin";
    let file = pattern(1000, 71);
    progress(&api.chunk(path, &file, 0..500).await, 1000, None);
    assert!(upload_dir(&server, path).is_some());
    assert!(
        wait_for(Duration::from_secs(6), || server
            .bookkeeping("uploads")
            .is_empty())
        .await,
        "the sweeper did not remove the expired upload: {:?}",
        server.bookkeeping("uploads")
    );
    assert_eq!(
        progress(&api.status(path, 1000).await, 1000, None),
        Vec::<[u64; 2]>::new()
    );
}
