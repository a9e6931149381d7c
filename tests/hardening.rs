//! Security findings 4, 6, 9 and 10 (SECURITY.md), each over a real server on loopback:
//!
//! - 9: a simple `PUT` with a wrong `Content-Digest` gets 400 and keeps nothing;
//! - 6: one signature designates exactly one stored path;
//! - 10: uploaded scripts and style sheets are delivered with an inert type unless the app
//!   opts in;
//! - 4: connections that send nothing, or only the HTTP/2 preface, or a request head that
//!   never ends, are closed after `--header-read-timeout`, and the demo server keeps
//!   accepting when it runs out of descriptors (these run the demo server binary: `cargo
//!   build --examples` first when running this file alone).

mod common;

use common::process::DemoServer as Demo;
use common::{KEY, data, json, kind, now, start, start_with};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower_uploads::auth::SignedMethod;

/// Prints a figure of SECURITY.md.
fn figure(what: &str, value: impl std::fmt::Display) {
    eprintln!("FIGURES hardening: {what}: {value}");
}

/// Finding 9: a simple `PUT` whose `Content-Digest` does not match its bytes gets 400
/// `digest_mismatch` and keeps nothing (also when it would replace a file); the right digest
/// is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_put_checks_content_digest() {
    use base64::Engine as _;
    let server = start().await;
    let body = b"the real bytes".to_vec();
    let digest_of = |bytes: &[u8]| {
        use sha2::Digest as _;
        format!(
            "sha-256=:{}:",
            base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(bytes))
        )
    };
    let before = server.entries();
    let put = |path: &str, digest: String, body: Vec<u8>| {
        common::client()
            .put(server.url(path))
            .bearer_auth(KEY)
            .header("content-digest", digest)
            .body(body)
            .send()
    };
    let (status, _, v) = json(
        put("d/wrong.txt", digest_of(b"other bytes"), body.clone())
            .await
            .expect("PUT"),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(kind(&v), Some("digest_mismatch"));
    server.assert_nothing_written(&before, "a simple PUT with a wrong digest");

    let (status, _, v) = json(
        put("d/right.txt", digest_of(&body), body.clone())
            .await
            .expect("PUT"),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(server.read("d/right.txt").as_deref(), Some(&body[..]));

    // A wrong digest on a replacement leaves the old bytes.
    let (status, _, _) = json(
        put("d/right.txt", digest_of(b"x"), b"new bytes".to_vec())
            .await
            .expect("PUT"),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(server.read("d/right.txt").as_deref(), Some(&body[..]));
    assert!(server.wait_bookkeeping_empty(Duration::from_secs(5)).await);

    // A malformed digest is refused before anything is read.
    let (status, _, v) = json(
        put("d/bad.txt", "sha-256=:nope".into(), body.clone())
            .await
            .expect("PUT"),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert!(server.read("d/bad.txt").is_none());
    figure("simple PUT Content-Digest", "4 cases");
}

/// `POST /signatures` for `path` and `method`; the signed URL's query.
async fn signed_query(
    server: &common::TestServer,
    folder: &str,
    filename: &str,
    method: &str,
) -> String {
    let (status, _, body) = json(
        common::client()
            .post(server.url("signatures"))
            .bearer_auth(KEY)
            .body(format!(
                r#"{{"folder":"{folder}","filename":"{filename}","method":"{method}"}}"#
            ))
            .send()
            .await
            .expect("POST /signatures"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let url = data(&body)["url"].as_str().expect("url").to_owned();
    url.split_once('?').expect("a query").1.to_owned()
}

/// Finding 6: the signature `POST /signatures` makes for `a/cat one.png` (URL path
/// `a/cat%20one.png`) is refused on `a/cat%2520one.png` (the file literally named
/// `a/cat%20one.png`), for `put` and, with private delivery, for `get`; the URLs clients
/// really send still work (ours, and an SDK's plain-path signature sent encoded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_signature_designates_one_path() {
    let server = start_with(|u| u.private(true)).await;
    let put_q = signed_query(&server, "a", "cat one.png", "put").await;
    let get_q = signed_query(&server, "a", "cat one.png", "get").await;

    // The borrowed signature writes nothing.
    let res = common::client()
        .put(server.url(&format!("a/cat%2520one.png?{put_q}")))
        .body("second file")
        .send()
        .await
        .expect("PUT");
    let (status, _, body) = json(res).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(kind(&body), Some("signature_invalid"));
    assert!(server.read("a/cat%20one.png").is_none());

    // The signed URL itself works.
    let res = common::client()
        .put(server.url(&format!("a/cat%20one.png?{put_q}")))
        .body("the cat")
        .send()
        .await
        .expect("PUT");
    assert_eq!(res.status().as_u16(), 201);
    assert_eq!(
        server.read("a/cat one.png").as_deref(),
        Some(&b"the cat"[..])
    );

    // A file literally named `a/cat%20one.png` (uploaded with the bearer key) cannot be read
    // with the `get` signature of `a/cat one.png`.
    assert_eq!(
        server.put("a/cat%2520one.png", "literal").await.status(),
        201
    );
    let res = server.get(&format!("a/cat%2520one.png?{get_q}")).await;
    assert_eq!(res.status().as_u16(), 403);
    let res = server.get(&format!("a/cat%20one.png?{get_q}")).await;
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(res.text().await.expect("body"), "the cat");

    // An SDK-style URL: the plain path signed, sent percent-encoded.
    let expiry = now() + 600;
    let sig = tower_uploads::auth::signature(KEY.as_bytes(), "a/dog two.png", expiry, Some("put"));
    let res = common::client()
        .put(server.url(&format!(
            "a/dog%20two.png?expiry={expiry}&method=put&signature={sig}"
        )))
        .body("the dog")
        .send()
        .await
        .expect("PUT");
    assert_eq!(res.status().as_u16(), 201);
    // …and the literal file's own signed URL (its percent-encoded path) works too.
    let url = server.sign("a/cat%20one.png", SignedMethod::Get, now() + 600);
    let res = common::client().get(url).send().await.expect("GET");
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(res.text().await.expect("body"), "literal");
    figure("one signature, one path", "5 cases");
}

/// Finding 10: `.js`, `.mjs` and `.css` uploads are delivered as `text/plain` (with
/// `nosniff`), so that no page of the app's origin can run them, while their File object's
/// `type` says what they are; `Uploads::active_types(true)` delivers their own types.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_and_styles_are_delivered_inert() {
    let cases: [(&str, &str, &str); 4] = [
        ("s/x.js", "", "text/javascript"),
        ("s/x.mjs", "", "application/javascript"),
        ("s/x.css", "", "text/css"),
        (
            "s/hinted.txt",
            "application/javascript",
            "application/javascript",
        ),
    ];
    for active in [false, true] {
        let server = start_with(|u| u.active_types(active)).await;
        for (path, hint, stored) in cases {
            let mut req = common::client()
                .put(server.url(path))
                .bearer_auth(KEY)
                .body("alert(document.domain)");
            if !hint.is_empty() {
                req = req.header("content-type", hint);
            }
            let (status, _, file) = json(req.send().await.expect("PUT")).await;
            assert_eq!(status, 201, "{path}: {file}");
            let ty = data(&file)["type"].as_str().unwrap_or("").to_owned();
            assert!(ty.starts_with(stored), "{path}: File type {ty}");
            for method in [reqwest::Method::GET, reqwest::Method::HEAD] {
                let res = common::client()
                    .request(method.clone(), server.url(path))
                    .send()
                    .await
                    .expect("GET");
                assert_eq!(res.status().as_u16(), 200);
                let delivered = res.headers()["content-type"].to_str().unwrap().to_owned();
                if active {
                    assert!(
                        delivered.starts_with(stored),
                        "{path} {method}: {delivered}"
                    );
                } else {
                    assert_eq!(delivered, "text/plain; charset=utf-8", "{path} {method}");
                }
                assert_eq!(res.headers()["x-content-type-options"], "nosniff");
            }
        }
    }
    figure(
        "scripts and styles delivered inert",
        "4 types, GET and HEAD, both settings",
    );
}
/// The HTTP/2 connection preface and an empty `SETTINGS` frame.
const H2_PREFACE_SETTINGS: &[u8] =
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
/// A `HEADERS` frame on stream 1 (`:method: GET`, HPACK index 2) without `END_HEADERS`: the
/// server waits for a `CONTINUATION` that never comes.
const H2_UNENDED_HEADERS: &[u8] = b"\x00\x00\x01\x01\x00\x00\x00\x00\x01\x82";

/// Opens a connection, writes `bytes`, then reads (discarding whatever the server sends,
/// e.g. its HTTP/2 `SETTINGS`) until the server closes it; returns how long after the
/// connect that was, or `None` if it was still open at `limit`.
async fn closed_after(addr: SocketAddr, bytes: &[u8], limit: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    let mut s = TcpStream::connect(addr).await.expect("connect");
    if !bytes.is_empty() {
        s.write_all(bytes).await.expect("write");
    }
    let mut buf = [0u8; 4096];
    loop {
        let left = limit.checked_sub(t0.elapsed())?;
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(t0.elapsed()),
            Ok(Ok(_)) => {}
            Err(_) => return None,
        }
    }
}

/// Finding 4: the demo server (`--header-read-timeout 1`) closes every connection that has
/// not sent a complete request head within a second (silent, HTTP/2 preface only, HTTP/2
/// `HEADERS` without end, fewer bytes than tell HTTP/1 from HTTP/2), and a keep-alive
/// connection idle after its request, while serving a normal client meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_without_a_request_are_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let demo = Demo::start(&dir.path().join("data"), &["--header-read-timeout", "1"]);
    let addr = demo.addr;
    let limit = Duration::from_secs(6);
    let mut h2_headers = H2_PREFACE_SETTINGS.to_vec();
    h2_headers.extend_from_slice(H2_UNENDED_HEADERS);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("silent", Vec::new()),
        (
            "HTTP/2 preface and SETTINGS only",
            H2_PREFACE_SETTINGS.to_vec(),
        ),
        ("HTTP/2 HEADERS without END_HEADERS", h2_headers),
        ("8 bytes of an HTTP/1 request line", b"GET / HT".to_vec()),
        (
            "HTTP/1 head without its end",
            b"GET /x HTTP/1.1\r\nHost: x\r\n".to_vec(),
        ),
    ];
    let mut tasks = Vec::new();
    for (name, bytes) in &cases {
        // Several of each, at once.
        for _ in 0..10 {
            let bytes = bytes.clone();
            let name = *name;
            tasks.push(tokio::spawn(async move {
                (name, closed_after(addr, &bytes, limit).await)
            }));
        }
    }
    // An idle keep-alive connection after a complete request and its response.
    let keep_alive = tokio::spawn(async move {
        let t0 = Instant::now();
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET /missing.txt HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).await.expect("response");
        assert!(buf[..n].starts_with(b"HTTP/1.1 404"), "{:?}", &buf[..n]);
        loop {
            match tokio::time::timeout(limit, s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return Some(t0.elapsed()),
                Ok(Ok(_)) => {}
                Err(_) => return None,
            }
        }
    });
    // Meanwhile a normal client is served.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let res = common::client()
        .put(demo.url("ok/a.txt"))
        .bearer_auth(KEY)
        .body("hello")
        .send()
        .await
        .expect("PUT");
    assert_eq!(res.status().as_u16(), 201);

    let mut slowest = std::collections::BTreeMap::<&str, Duration>::new();
    let mut open = Vec::new();
    for t in tasks {
        let (name, closed) = t.await.expect("task");
        match closed {
            Some(after) => {
                let e = slowest.entry(name).or_default();
                *e = (*e).max(after);
            }
            None => open.push(name),
        }
    }
    match keep_alive.await.expect("task") {
        Some(after) => {
            slowest.insert("idle keep-alive after a 404", after);
        }
        None => open.push("idle keep-alive"),
    }
    assert!(
        open.is_empty(),
        "still open after {limit:?} with a 1 s timeout: {open:?}"
    );
    for (name, after) in &slowest {
        figure(
            &format!("closed with a 1 s timeout, slowest of its kind: {name}"),
            format!("{after:.2?}"),
        );
    }
    let slowest = slowest.into_values().max().unwrap_or_default();
    assert!(slowest < Duration::from_secs(4), "{slowest:?}");
}

/// Finding 4: with 256 descriptors (`prlimit`; the storage holds about 70 of them), 250
/// silent connections exhaust the demo server's descriptors; it keeps accepting, cuts them
/// after `--header-read-timeout 1`, and a legitimate upload queued behind them succeeds. Its
/// log does not fill with `accept failed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_the_server_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log_path = dir.path().join("server.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut child = Command::new("prlimit")
        .arg("--nofile=256:256")
        .arg(common::server_binary())
        .args(["--listen", "127.0.0.1:0", "--key", KEY, "--data"])
        .arg(dir.path().join("data"))
        .args(["--header-read-timeout", "1"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("spawn prlimit (util-linux) and the demo server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("first line");
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .expect("address");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let child = Kill(child);

    // The kernel completes a handshake into the listen backlog (128) whether the server
    // accepts it or not: about 180 accepted ones take every free descriptor, the rest wait.
    let mut held = Vec::new();
    while held.len() < 250 {
        match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await {
            Ok(Ok(s)) => held.push(s),
            Ok(Err(e)) => panic!("connect: {e}"),
            Err(_) => break, // the backlog is full
        }
    }
    let silent = held.len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t0 = Instant::now();
    let res = common::client_with_timeout(Duration::from_secs(15))
        .put(format!("http://{addr}/ok/after-exhaustion.txt"))
        .bearer_auth(KEY)
        .body("still here")
        .send()
        .await;
    let took = t0.elapsed();
    let status = res.map(|r| r.status().as_u16());
    assert!(
        matches!(status, Ok(201)),
        "a legitimate upload behind {silent} silent connections at 256 descriptors: {status:?} after {took:?}"
    );
    drop(held);
    drop(child);
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    let accept_lines = log.lines().filter(|l| l.contains("accept failed")).count();
    figure(
        "256 descriptors, silent connections before a legitimate PUT",
        format!(
            "{silent}; the PUT answered 201 after {took:?}; {accept_lines} 'accept failed' log lines"
        ),
    );
    assert!(
        accept_lines <= 2 + took.as_secs() as usize,
        "{accept_lines} accept-failure lines in {took:?}"
    );
}
