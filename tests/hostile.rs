//! Hostile clients: slow-loris headers and bodies, bodies that lie about their length, a
//! flood of incomplete uploads, huge headers, non-UTF-8 bytes everywhere, signature brute
//! force. The server must stay up, answer 4xx (never 5xx), keep nothing of a refused request,
//! and give an attacker no oracle.
//!
//! The header-read timeout is the HTTP server's (hyper's `header_read_timeout`), so that
//! test runs the demo server binary (`cargo build --examples` first when running this file
//! alone); the rest run the `Uploads` service in-process.

mod common;

use common::process::DemoServer as Demo;
use common::{KEY, RawResponse, TestServer, kind, now, pattern, start, start_with};
use serde_json::Value;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower_uploads::auth::SignedMethod;

/// Prints how many hostile cases a test tried (a figure of SECURITY.md).
fn tried(what: &str, n: usize) {
    eprintln!("FIGURES hostile: {what}: {n} cases");
}

/// Writes `head`, then drips `drip` one byte every `every`, until the server closes the
/// connection; returns how long that took (or `None` if it was still open at `limit`).
async fn closed_after(
    addr: std::net::SocketAddr,
    head: &[u8],
    drip: &[u8],
    every: Duration,
    limit: Duration,
) -> Option<Duration> {
    let t0 = Instant::now();
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(head).await.expect("head");
    let mut buf = [0u8; 4096];
    let mut i = 0;
    while t0.elapsed() < limit {
        if s.write_all(&drip[i % drip.len()..i % drip.len() + 1])
            .await
            .is_err()
        {
            return Some(t0.elapsed());
        }
        i += 1;
        match tokio::time::timeout(every, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(t0.elapsed()),
            Ok(Ok(_)) => {} // a response (408) before the close: keep reading
            Err(_) => {}
        }
    }
    None
}

/// Slow-loris headers: the demo server (`--header-read-timeout 1`) drops a connection whose
/// headers drip in, 30 of them at once, while serving a normal client meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_headers_are_cut_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let demo = Demo::start_keyed(
        &dir.path().join("data"),
        KEY,
        &["--header-read-timeout", "1"],
    );
    let addr = demo.addr;
    let lorises: Vec<_> = (0..30)
        .map(|i| {
            tokio::spawn(async move {
                closed_after(
                    addr,
                    format!("PUT /loris/{i}.bin HTTP/1.1\r\nHost: x\r\n").as_bytes(),
                    b"X-Slow: a\r\n",
                    Duration::from_millis(200),
                    Duration::from_secs(8),
                )
                .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let res = common::client()
        .put(demo.url("normal.bin"))
        .header("authorization", format!("Bearer {KEY}"))
        .body(vec![7u8; 1000])
        .send()
        .await
        .expect("a normal client is served meanwhile");
    assert_eq!(res.status().as_u16(), 201);
    for l in lorises {
        let took = l
            .await
            .expect("task")
            .expect("a slow-loris connection was never closed");
        assert!(took < Duration::from_secs(4), "closed only after {took:?}");
    }
    assert!(
        !dir.path().join("data/loris").exists(),
        "nothing of the slow requests is stored"
    );
    tried("slow-loris headers", 30);
}

fn put_head(path: &str, extra: &str, length: usize) -> Vec<u8> {
    format!("PUT /{path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n{extra}Content-Length: {length}\r\n\r\n").into_bytes()
}

/// Slow-loris bodies: a body that stops (or drips slower than the idle timeout) gets 408
/// `request_timeout`, and nothing of it is kept — no file, no staging, no counted range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_get_408_and_leave_nothing() {
    let server = start_with(|u| u.body_idle_timeout(Duration::from_millis(500))).await;
    let before = server.entries();
    for (path, extra) in [
        ("slow/whole.bin", String::new()),
        (
            "slow/chunk.bin",
            "Content-Range: bytes 0-99999/200000\r\n".to_owned(),
        ),
    ] {
        let t0 = Instant::now();
        let mut s = TcpStream::connect(server.addr).await.expect("connect");
        s.write_all(&put_head(path, &extra, 100_000))
            .await
            .expect("head");
        s.write_all(&pattern(70_000, 1))
            .await
            .expect("part of the body");
        let res = common::read_response(&mut s, Duration::from_secs(5)).await;
        assert_eq!(res.status, 408, "{path}: {res:?}");
        assert_eq!(kind(&res.json()), Some("request_timeout"), "{path}");
        assert_eq!(res.header("connection"), Some("close"), "{path}");
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "{path}: {:?}",
            t0.elapsed()
        );
    }
    // The stalled chunk counted nothing; its (empty) upload lives until the sweeper.
    let st = status(&server, "slow/chunk.bin", 200_000).await;
    assert_eq!(st["data"]["ranges"], serde_json::json!([]), "{st}");
    sweep_all(&server).await;
    server.assert_nothing_written(&before, "slow bodies");
    // A body that drips a byte every 100 ms (faster than the idle timeout) is not cut off.
    let mut s = TcpStream::connect(server.addr).await.expect("connect");
    s.write_all(&put_head("slow/drip.bin", "", 8))
        .await
        .expect("head");
    for b in b"dripping" {
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.write_all(&[*b]).await.expect("byte");
    }
    let res = common::read_response(&mut s, Duration::from_secs(5)).await;
    assert_eq!(res.status, 201, "{res:?}");
    assert_eq!(
        server.read("slow/drip.bin").as_deref(),
        Some(&b"dripping"[..])
    );
    tried("slow bodies", 3);
}

/// Bodies that lie about their length: shorter than `Content-Length` (then the client hangs
/// up its side) → 400 and nothing kept; longer → exactly `Content-Length` bytes are the file
/// and the rest is a (bad) next request; a chunk whose body is shorter than its range → not
/// counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_that_lie_about_their_length() {
    let server = start().await;
    let before = server.entries();
    // Shorter, then EOF.
    let mut s = TcpStream::connect(server.addr).await.expect("connect");
    s.write_all(&put_head("lie/short.bin", "", 1000))
        .await
        .expect("head");
    s.write_all(&[1u8; 500]).await.expect("half");
    s.shutdown().await.expect("shutdown");
    let res = common::read_response(&mut s, Duration::from_secs(5)).await;
    assert!(matches!(res.status, 0 | 400), "{res:?}");
    // A chunk shorter than its range, then EOF.
    let mut s = TcpStream::connect(server.addr).await.expect("connect");
    s.write_all(&put_head(
        "lie/chunk.bin",
        "Content-Range: bytes 0-999/5000\r\n",
        1000,
    ))
    .await
    .expect("head");
    s.write_all(&[2u8; 600]).await.expect("part");
    s.shutdown().await.expect("shutdown");
    let res = common::read_response(&mut s, Duration::from_secs(5)).await;
    assert!(matches!(res.status, 0 | 400), "{res:?}");
    assert!(
        server.wait_bookkeeping_empty(Duration::from_secs(5)).await || {
            // The chunk's upload may exist, but nothing of the lying chunk counts.
            let st = status(&server, "lie/chunk.bin", 5000).await;
            st["data"]["ranges"] == serde_json::json!([])
        }
    );
    assert_eq!(server.read("lie/short.bin"), None);
    assert_eq!(server.read("lie/chunk.bin"), None);
    // Longer: the file is exactly Content-Length bytes.
    let mut req = put_head("lie/long.bin", "", 10);
    req.extend_from_slice(b"0123456789ABCDEFGHIJ");
    let res = server.raw(&req).await;
    assert_eq!(res.status, 201, "{res:?}");
    assert_eq!(
        server.read("lie/long.bin").as_deref(),
        Some(&b"0123456789"[..])
    );
    let _ = before;
    tried("lying lengths", 3);
}

/// Runs the sweeper once with a zero TTL over the server's data directory (a second
/// `FsStorage` on the same directory, as a second process would).
async fn sweep_all(server: &TestServer) {
    let storage: std::sync::Arc<dyn tower_uploads::storage::Storage> =
        std::sync::Arc::new(tower_uploads::FsStorage::new(&server.data).expect("storage"));
    tower_uploads::service::sweep(&storage, Duration::ZERO)
        .await
        .expect("sweep");
}

async fn status(server: &TestServer, path: &str, total: u64) -> Value {
    let res = common::client()
        .put(server.url(path))
        .header("authorization", server.bearer())
        .header("content-range", format!("bytes */{total}"))
        .send()
        .await
        .expect("status");
    serde_json::from_slice(&res.bytes().await.expect("body")).unwrap_or(Value::Null)
}

async fn first_chunk(server: &TestServer, path: &str) -> (u16, Value) {
    let res = common::client()
        .put(server.url(path))
        .header("authorization", server.bearer())
        .header("content-range", "bytes 0-99/200")
        .body(vec![3u8; 100])
        .send()
        .await
        .expect("chunk");
    let status = res.status().as_u16();
    (
        status,
        serde_json::from_slice(&res.bytes().await.expect("body")).unwrap_or(Value::Null),
    )
}

/// A flood of distinct incomplete uploads: past `max_incomplete_uploads` (5), a chunk that
/// would start another is 429 `too_many_uploads` and stores nothing; the uploads in progress
/// go on, and a completed one frees its slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_incomplete_uploads_gets_429() {
    let server = start_with(|u| u.max_incomplete_uploads(5)).await;
    for i in 0..5 {
        let (st, body) = first_chunk(&server, &format!("flood/{i}.bin")).await;
        assert_eq!(st, 202, "{body}");
    }
    let refused = futures_util::future::join_all((5..45).map(|i| {
        let server = &server;
        async move { first_chunk(server, &format!("flood/{i}.bin")).await }
    }))
    .await;
    for (st, body) in &refused {
        assert_eq!(*st, 429, "{body}");
        assert_eq!(kind(body), Some("too_many_uploads"), "{body}");
    }
    assert_eq!(
        server
            .bookkeeping("uploads")
            .iter()
            .filter(|e| e.ends_with('/') && e.matches('/').count() == 1)
            .count(),
        5,
        "{:?}",
        server.bookkeeping("uploads")
    );
    // An upload in progress goes on and completes, which frees a slot.
    let res = common::client()
        .put(server.url("flood/0.bin"))
        .header("authorization", server.bearer())
        .header("content-range", "bytes 100-199/200")
        .body(vec![3u8; 100])
        .send()
        .await
        .expect("last chunk");
    assert_eq!(res.status().as_u16(), 201);
    let (st, body) = first_chunk(&server, "flood/new.bin").await;
    assert_eq!(st, 202, "{body}");
    let (st, _) = first_chunk(&server, "flood/newer.bin").await;
    assert_eq!(st, 429);
    tried("incomplete-upload flood", 42);
}

/// Huge header values and many headers: refused by the HTTP layer (431 or a closed
/// connection), never a 5xx; the server keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_headers_are_refused() {
    let server = start().await;
    let mut cases = 0;
    for size in [16 << 10, 100 << 10, 1 << 20, 8 << 20] {
        for name in ["Authorization", "Content-Range", "X-Junk", "If-Match"] {
            let value = "a".repeat(size);
            let req = format!(
                "PUT /huge.bin HTTP/1.1\r\nHost: x\r\n{name}: {value}\r\nContent-Length: 1\r\n\r\nx"
            );
            let res = send_tolerant(server.addr, req.as_bytes()).await;
            assert!(
                res.status == 0 || (400..500).contains(&res.status),
                "{name} of {size} B: {}",
                res.status
            );
            cases += 1;
        }
    }
    let many: String = (0..5000).map(|i| format!("X-H{i}: v\r\n")).collect();
    let res = send_tolerant(
        server.addr,
        format!("GET /a HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes(),
    )
    .await;
    assert!(
        res.status == 0 || (400..500).contains(&res.status),
        "5000 headers: {}",
        res.status
    );
    cases += 1;
    assert_eq!(
        server.put("after.bin", "still up").await.status().as_u16(),
        201
    );
    assert_eq!(server.read("huge.bin"), None);
    tried("huge headers", cases);
}

/// Writes `request` (ignoring a write cut short by the server closing) and reads a response.
async fn send_tolerant(addr: std::net::SocketAddr, request: &[u8]) -> RawResponse {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let _ = s.write_all(request).await;
    common::read_response(&mut s, Duration::from_secs(5)).await
}

/// Non-UTF-8 (and NUL, and overlong-encoded) bytes in the path, the query, the signature and
/// every header the crate reads: 4xx (or a connection the HTTP layer closes), never a 5xx or
/// a file written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_utf8_everywhere() {
    let server = start().await;
    let before = server.entries();
    let bad: [&[u8]; 5] = [b"\xff\xfe", b"\xc0\xaf", b"\xed\xa0\x80", b"%ff%fe", b"%00"];
    let mut cases = 0;
    for junk in bad {
        let j = |prefix: &[u8], suffix: &[u8]| [prefix, junk, suffix].concat();
        let auth = [
            b"Authorization: Bearer ".as_slice(),
            KEY.as_bytes(),
            b"\r\n",
        ]
        .concat();
        let requests: Vec<Vec<u8>> = vec![
            [
                j(b"PUT /a", b".bin HTTP/1.1\r\nHost: x\r\n"),
                auth.clone(),
                b"Content-Length: 1\r\n\r\nx".to_vec(),
            ]
            .concat(),
            [
                j(
                    b"PUT /a.bin?expiry=9999999999&method=put&signature=",
                    b" HTTP/1.1\r\nHost: x\r\n",
                ),
                b"Content-Length: 1\r\n\r\nx".to_vec(),
            ]
            .concat(),
            [j(
                b"PUT /a.bin?expiry=",
                b"&method=put&signature=00 HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx",
            )]
            .concat(),
            [
                b"PUT /a.bin HTTP/1.1\r\nHost: x\r\n".to_vec(),
                j(b"Authorization: Bearer ", b"\r\nContent-Length: 1\r\n\r\nx"),
            ]
            .concat(),
            [
                b"PUT /a.bin HTTP/1.1\r\nHost: x\r\n".to_vec(),
                auth.clone(),
                j(
                    b"Content-Range: bytes 0-0/",
                    b"\r\nContent-Length: 1\r\n\r\nx",
                ),
            ]
            .concat(),
            [
                b"PUT /a.bin HTTP/1.1\r\nHost: x\r\n".to_vec(),
                auth.clone(),
                j(
                    b"Content-Digest: sha-256=:",
                    b":\r\nContent-Range: bytes 0-0/2\r\nContent-Length: 1\r\n\r\nx",
                ),
            ]
            .concat(),
            [
                b"PUT /a.bin HTTP/1.1\r\nHost: x\r\n".to_vec(),
                auth.clone(),
                j(b"If-Match: \"", b"\"\r\nContent-Length: 1\r\n\r\nx"),
            ]
            .concat(),
            [
                b"PUT /a.bin HTTP/1.1\r\nHost: x\r\n".to_vec(),
                auth.clone(),
                j(b"Accept-Version: ", b"\r\nContent-Length: 1\r\n\r\nx"),
            ]
            .concat(),
            [
                b"GET /a.bin HTTP/1.1\r\nHost: x\r\n".to_vec(),
                j(b"Range: bytes=", b"\r\n"),
                j(b"If-None-Match: ", b"\r\n"),
                j(b"If-Modified-Since: ", b"\r\n\r\n"),
            ]
            .concat(),
            [
                b"POST /signatures HTTP/1.1\r\nHost: x\r\n".to_vec(),
                auth.clone(),
                {
                    let body = j(b"{\"filename\":\"", b".png\",\"method\":\"put\"}");
                    [
                        format!("Content-Length: {}\r\n\r\n", body.len()).into_bytes(),
                        body,
                    ]
                    .concat()
                },
            ]
            .concat(),
        ];
        for req in requests {
            let res = send_tolerant(server.addr, &req).await;
            assert!(
                res.status == 0
                    || (400..500).contains(&res.status)
                    || matches!(res.status, 200 | 201),
                "{:?} → {} {}",
                String::from_utf8_lossy(&req),
                res.status,
                String::from_utf8_lossy(&res.body)
            );
            if res.status == 200 {
                // `POST /signatures` signs any filename it can represent, junk included.
                assert!(req.starts_with(b"POST /signatures"));
            }
            if res.status == 201 {
                // Only a bearer PUT of a valid path may succeed (a junk Accept-Version is ignored).
                assert!(
                    req.starts_with(b"PUT /a.bin HTTP/1.1"),
                    "{:?}",
                    String::from_utf8_lossy(&req)
                );
                std::fs::remove_file(server.data.join("a.bin")).expect("remove");
            }
            cases += 1;
        }
    }
    assert!(server.wait_bookkeeping_empty(Duration::from_secs(5)).await);
    server.assert_nothing_written(&before, "non-UTF-8 requests");
    tried("non-UTF-8 bytes", cases);
}

/// What an answer tells a client: its `error` object (the envelope's `meta` carries a
/// per-request id, which says nothing about the guess).
async fn answer(res: reqwest::Response) -> String {
    let body: Value = serde_json::from_slice(&res.bytes().await.expect("body")).expect("json");
    body["error"].to_string()
}

/// Signature brute force: every wrong guess — each hex digit changed in turn, truncated,
/// extended, another key, another method, case changed — is answered with byte-identical
/// 403 bodies (no oracle of how close a guess is); only a valid signature learns that it
/// has expired. Wrong bearer keys, close or not, get identical answers too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signature_brute_force_learns_nothing() {
    let server = start().await;
    let http = common::client();
    let url = server.sign("brute/a.bin", SignedMethod::Put, now() + 3600);
    let (prefix, sig) = url.rsplit_once("signature=").expect("a signature");
    let mut guesses: Vec<String> = Vec::new();
    for i in 0..sig.len() {
        let mut g: Vec<u8> = sig.bytes().collect();
        g[i] = if g[i] == b'A' { b'B' } else { b'A' };
        guesses.push(String::from_utf8(g).expect("ascii"));
    }
    guesses.push(sig[..sig.len() - 1].to_owned());
    guesses.push(format!("{sig}A"));
    guesses.push(String::new());
    guesses.push(sig.to_ascii_uppercase());
    guesses.push(sig.to_ascii_lowercase());
    let mut bodies = std::collections::BTreeSet::new();
    for g in &guesses {
        if g == sig {
            continue;
        }
        let res = http
            .put(format!("{prefix}signature={g}"))
            .body("x")
            .send()
            .await
            .expect("PUT");
        let status = res.status().as_u16();
        bodies.insert((status, answer(res).await));
    }
    let other_key = common::sign_url(
        "another-key",
        &server.base,
        "brute/a.bin",
        SignedMethod::Put,
        now() + 3600,
    );
    let res = http.put(other_key).body("x").send().await.expect("PUT");
    bodies.insert((res.status().as_u16(), answer(res).await));
    let expired_wrong = common::sign_url(
        "another-key",
        &server.base,
        "brute/a.bin",
        SignedMethod::Put,
        now() - 10,
    );
    let res = http.put(expired_wrong).body("x").send().await.expect("PUT");
    bodies.insert((res.status().as_u16(), answer(res).await));
    assert_eq!(
        bodies.len(),
        1,
        "wrong signatures are told apart: {:?}",
        bodies
    );
    let (status, body) = bodies.into_iter().next().expect("one");
    assert_eq!(status, 403);
    assert!(body.contains("signature_invalid"), "{body}");
    // Only a valid signature learns of its expiry.
    let expired = server.sign("brute/a.bin", SignedMethod::Put, now() - 10);
    let res = http.put(expired).body("x").send().await.expect("PUT");
    assert_eq!(res.status().as_u16(), 403);
    let body: Value = serde_json::from_slice(&res.bytes().await.expect("body")).expect("json");
    assert_eq!(kind(&body), Some("signature_expired"));
    // Bearer guesses: close or far, the same answer.
    let mut answers = std::collections::BTreeSet::new();
    for guess in [
        format!("{}x", &KEY[..KEY.len() - 1]),
        "x".repeat(KEY.len()),
        "k".to_owned(),
        format!("{KEY}{KEY}"),
    ] {
        let res = http
            .put(server.url("brute/b.bin"))
            .header("authorization", format!("Bearer {guess}"))
            .body("x")
            .send()
            .await
            .expect("PUT");
        answers.insert((res.status().as_u16(), answer(res).await));
    }
    assert_eq!(answers.len(), 1, "wrong keys are told apart");
    assert_eq!(server.read("brute/a.bin"), None);
    tried("signature and key guesses", guesses.len() + 6);
}

/// Uploaded HTML and SVG (script inside) are delivered from the app's origin: every delivery
/// carries a sandboxing `Content-Security-Policy` and `nosniff`, so the script cannot run
/// against the app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploaded_markup_is_delivered_sandboxed() {
    let server = start().await;
    let cases: [(&str, &str, &[u8]); 3] = [
        (
            "xss/page.html",
            "text/html",
            b"<html><script>alert(document.cookie)</script></html>",
        ),
        (
            "xss/pic.svg",
            "image/svg+xml",
            b"<svg xmlns=\"http://www.w3.org/2000/svg\"><script>alert(1)</script></svg>",
        ),
        (
            "xss/plain.bin",
            "application/octet-stream",
            b"<script>alert(1)</script>",
        ),
    ];
    for (path, content_type, body) in cases {
        let res = common::client()
            .put(server.url(path))
            .header("authorization", server.bearer())
            .header("content-type", content_type)
            .body(body.to_vec())
            .send()
            .await
            .expect("PUT");
        assert_eq!(res.status().as_u16(), 201, "{path}");
        let res = server.get(path).await;
        assert_eq!(res.status().as_u16(), 200, "{path}");
        let csp = res
            .headers()
            .get("content-security-policy")
            .and_then(|v| v.to_str().ok());
        assert_eq!(csp, Some(tower_uploads::delivery::DELIVERY_CSP), "{path}");
        assert!(csp.is_some_and(|c| c.contains("sandbox") && c.contains("default-src 'none'")));
        assert_eq!(
            res.headers()
                .get("x-content-type-options")
                .map(|v| v.as_bytes()),
            Some(&b"nosniff"[..])
        );
    }
    tried("markup delivered sandboxed", cases.len());
}
