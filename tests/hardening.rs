//! Security findings 9 (SECURITY.md), each over a real server on loopback:
//!
//! - 9: a simple `PUT` with a wrong `Content-Digest` gets 400 and keeps nothing.

mod common;

use common::{KEY, json, kind, start};
use std::time::Duration;

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
