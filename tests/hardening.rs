//! Security findings 9, 6, 10 (SECURITY.md), each over a real server on loopback:
//!
//! - 9: a simple `PUT` with a wrong `Content-Digest` gets 400 and keeps nothing;
//! - 6: one signature designates exactly one stored path;
//! - 10: uploaded scripts and style sheets are delivered with an inert type unless the app
//!   opts in.

mod common;

use common::{KEY, data, json, kind, now, start, start_with};
use std::time::Duration;
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
