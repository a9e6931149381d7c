//! Upload sessions (PROTOCOL.md §7) under hostile use, over a real server on loopback: forms
//! that cost bounded memory whatever they hold, keys bound to their endpoint, parts held to
//! the file-size limit and counted as uploads in progress, and `Content-Digest` verified on
//! session forms and parts (§3).

mod common;

use common::*;
use serde_json::{Value, json};
use std::time::Duration;

/// A session's upload URL, made with the bearer key.
async fn session(base: &str, body: Value) -> String {
    let (status, _, v) = json(
        client()
            .post(format!("{base}/uploads"))
            .header("authorization", format!("Bearer {KEY}"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("POST /uploads"),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    v["data"]["url"].as_str().expect("data.url").to_owned()
}

fn err_kind(v: &Value) -> &str {
    v["error"]["kind"].as_str().unwrap_or("(none)")
}

/// A form whose file part is `file`, with `before` and `after` as whole extra parts.
fn form_with(before: &[u8], file: &[u8], after: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(before);
    b.extend_from_slice(
        b"--bb\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f.bin\"\r\n\r\n",
    );
    b.extend_from_slice(file);
    b.extend_from_slice(b"\r\n");
    b.extend_from_slice(after);
    b.extend_from_slice(b"--bb--\r\n");
    b
}

async fn post_form(url: &str, body: Vec<u8>, digest: Option<String>) -> (u16, Value) {
    let mut req = client()
        .post(url)
        .header("content-type", "multipart/form-data; boundary=bb");
    if let Some(d) = digest {
        req = req.header("content-digest", d);
    }
    let (status, _, v) = json(req.body(body).send().await.expect("POST form")).await;
    (status, v)
}

async fn put_part(url: &str, index: u32, body: Vec<u8>, digest: Option<String>) -> (u16, Value) {
    let mut req = client()
        .put(url)
        .header("x-upload-index", index.to_string());
    if let Some(d) = digest {
        req = req.header("content-digest", d);
    }
    let (status, _, v) = json(req.body(body).send().await.expect("PUT part")).await;
    (status, v)
}

async fn assemble(url: &str) -> (u16, Value) {
    let (status, _, v) = json(client().post(url).send().await.expect("POST assemble")).await;
    (status, v)
}

/// Finding 7: a key works only on the endpoint it was made for: 403 `key_invalid`
/// elsewhere, and nothing is stored.
#[tokio::test]
async fn keys_are_bound_to_their_endpoint() {
    let server = start().await;
    let simple = session(&server.base, json!({})).await;
    let resumable = session(&server.base, json!({"resumable": true})).await;
    let before = server.entries();
    let as_parts = simple.replace("/store/single?", "/store/resumable?");
    let as_form = resumable.replace("/store/resumable?", "/store/single?");
    let (s, v) = put_part(&as_parts, 0, pattern(1000, 1), None).await;
    assert_eq!((s, err_kind(&v)), (403, "key_invalid"), "{v}");
    let (s, v) = assemble(&as_parts).await;
    assert_eq!((s, err_kind(&v)), (403, "key_invalid"), "{v}");
    let (s, v) = post_form(&as_form, form_with(b"", b"abc", b""), None).await;
    assert_eq!((s, err_kind(&v)), (403, "key_invalid"), "{v}");
    assert!(server.wait_bookkeeping_empty(Duration::from_secs(5)).await);
    assert_eq!(server.entries(), before);
    // Each key still works where it belongs.
    assert_eq!(
        post_form(&simple, form_with(b"", b"abc", b""), None)
            .await
            .0,
        200
    );
    assert_eq!(put_part(&resumable, 0, pattern(10, 1), None).await.0, 200);
    assert_eq!(assemble(&resumable).await.0, 200);
}
