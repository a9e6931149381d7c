//! Upload sessions (PROTOCOL.md §7) over a real server on loopback: `POST /uploads`,
//! multipart `POST /store/single`, indexed parts on `/store/resumable`, single use, expiry,
//! tampered keys, conditions, alias and metadata, two processes on one data directory.

mod common;

use bytes::Bytes;
use common::process::DemoServer;
use common::*;
use serde_json::{Value, json};
use std::time::Duration;

/// `POST /uploads` with the bearer key; returns the status and the whole JSON answer.
async fn create(base: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = client()
        .post(format!("{base}/uploads"))
        .header("authorization", format!("Bearer {KEY}"));
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let (status, _, v) = json(req.send().await.expect("POST /uploads")).await;
    (status, v)
}

/// A session's upload URL.
async fn session(base: &str, body: Value) -> String {
    let (status, v) = create(base, Some(body)).await;
    assert_eq!(status, 200, "{v}");
    v["data"]["url"].as_str().expect("data.url").to_owned()
}

/// A `multipart/form-data` body with a text field and the file, and its boundary.
fn form(boundary: &str, filename: &str, content_type: &str, file: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
    b.extend_from_slice(b"Content-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n");
    b.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
    b.extend_from_slice(
        format!(
            "Content-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n\
             Content-Type: {content_type}\r\n\r\n"
        )
        .as_bytes(),
    );
    b.extend_from_slice(file);
    b.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    b
}

async fn post_form(url: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    let (status, _, v) = json(
        client()
            .post(url)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("POST form"),
    )
    .await;
    (status, v)
}

async fn put_part(url: &str, index: &str, body: Vec<u8>) -> (u16, Value) {
    let (status, _, v) = json(
        client()
            .put(url)
            .header("content-type", "application/octet-stream")
            .header("x-upload-index", index)
            .body(body)
            .send()
            .await
            .expect("PUT part"),
    )
    .await;
    (status, v)
}

async fn assemble(url: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = client().post(url);
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let (status, _, v) = json(req.send().await.expect("POST assemble")).await;
    (status, v)
}

async fn fetch(url: &str) -> (u16, Vec<u8>) {
    let res = client().get(url).send().await.expect("GET");
    let status = res.status().as_u16();
    (status, res.bytes().await.expect("body").to_vec())
}

fn err_kind(v: &Value) -> &str {
    v["error"]["kind"].as_str().unwrap_or("(none)")
}

#[tokio::test]
async fn creating_sessions_checks_the_request() {
    let server = start().await;
    // No credentials, a wrong key, a signed URL instead of a bearer key.
    let res = client().post(server.url("uploads")).send().await.unwrap();
    assert_eq!(res.status(), 401);
    let res = client()
        .post(server.url("uploads"))
        .header("authorization", "Bearer nope")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    // The seed's request: a POST with no body at all → a simple session.
    let (status, v) = create(&server.base, None).await;
    assert_eq!(status, 200, "{v}");
    assert!(
        v["meta"].is_object() && v["error"].is_null(),
        "envelope: {v}"
    );
    let url = v["data"]["url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("{}/store/single?key=", server.base)),
        "{url}"
    );
    let resumable = session(&server.base, json!({"resumable": true})).await;
    assert!(resumable.contains("/store/resumable?key="), "{resumable}");
    // Always the envelope, even for a client asking for the bare style.
    let res = client()
        .post(server.url("uploads"))
        .header("authorization", server.bearer())
        .header("accept-version", "2025-08-20")
        .send()
        .await
        .unwrap();
    let (_, _, v) = json(res).await;
    assert!(v["data"]["url"].is_string(), "{v}");

    let bad: &[(Value, u16, &str)] = &[
        (
            json!({"conditions": {"rules": [{"key": "colour", "operator": "==", "value": "red"}]}}),
            400,
            "conditions_invalid",
        ),
        (
            json!({"conditions": {"operator": "xor", "rules": []}}),
            400,
            "conditions_invalid",
        ),
        (
            json!({"metadata": {"user": {"id": 1}}}),
            400,
            "metadata_invalid",
        ),
        (json!({"metadata": ["a"]}), 400, "metadata_invalid"),
        (json!({"alias": "../etc/passwd"}), 400, "path_invalid"),
        (json!({"resumable": "yes"}), 400, "bad_request"),
    ];
    for (body, status, kind) in bad {
        let (s, v) = create(&server.base, Some(body.clone())).await;
        assert_eq!((s, err_kind(&v)), (*status, *kind), "{body}: {v}");
    }
    // An alias that is already a file's path.
    assert_eq!(server.put("taken.txt", "x").await.status(), 201);
    let (s, v) = create(&server.base, Some(json!({"alias": "taken.txt"}))).await;
    assert_eq!((s, err_kind(&v)), (409, "alias_taken"), "{v}");
}

#[tokio::test]
async fn single_upload_with_a_hand_built_form() {
    let server = start().await;
    let url = session(
        &server.base,
        json!({"metadata": {"user_id": "usr_1", "n": 3, "ok": true}, "workflow_id": "wf_ignored"}),
    )
    .await;
    let png = tiny_png(3, 2);
    // A boundary that also appears, almost, inside the file and in the text field.
    let boundary = "----WebKitFormBoundaryQ4d";
    let mut file = png.clone();
    file.extend_from_slice(b"\r\n------WebKitFormBoundaryQ4 not the end\r\n--");
    let body = form(boundary, "cat.png", "image/png", &file);
    let (status, v) = post_form(
        &url,
        &format!("multipart/form-data; boundary={boundary}"),
        body,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let media = &v["data"];
    assert_eq!(v["meta"]["status"], 200, "{v}");
    assert_eq!(media["object"], "media");
    assert!(media["id"].as_str().unwrap().starts_with("med_"), "{media}");
    assert_eq!(media["kind"], "image");
    assert_eq!(
        (media["width"].as_u64(), media["height"].as_u64()),
        (Some(3), Some(2))
    );
    assert_eq!(media["filesize"].as_u64(), Some(file.len() as u64));
    assert_eq!(media["status"], "active");
    assert_eq!(media["alias"], Value::Null);
    assert_eq!(
        media["metadata"],
        json!({"user_id": "usr_1", "n": 3, "ok": true})
    );
    let id = media["id"].as_str().unwrap();
    let source = &media["sources"][0];
    assert_eq!(source["object"], "source");
    assert_eq!(source["label"], "original");
    assert!(source["id"].as_str().unwrap().starts_with("src_"));
    assert_eq!(source["mimetype"], "image/png");
    assert_eq!(source["url"], format!("{}/{id}/original", server.base));
    assert_eq!(media["url"], source["url"]);
    // The bytes are delivered, exactly.
    let (status, got) = fetch(source["url"].as_str().unwrap()).await;
    assert_eq!((status, got == file), (200, true));

    // Single use.
    let (status, v) = post_form(
        &url,
        &format!("multipart/form-data; boundary={boundary}"),
        form(boundary, "again.png", "image/png", &png),
    )
    .await;
    assert_eq!((status, err_kind(&v)), (410, "upload_gone"), "{v}");
    assert!(server.wait_bookkeeping_empty(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn form_without_a_boundary_parameter_and_odd_forms() {
    let server = start().await;
    // ittybit's XHR snippet: `Content-Type: multipart/form-data` set by hand, no boundary.
    let url = session(&server.base, json!({})).await;
    let data = pattern(200_000, 7);
    let (status, v) = post_form(
        &url,
        "multipart/form-data",
        form("xYz", "data.bin", "application/octet-stream", &data),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let (_, got) = fetch(v["data"]["url"].as_str().unwrap()).await;
    assert_eq!(sha256(&got), sha256(&data));
    assert_eq!(v["data"]["kind"], "other");

    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        // Not multipart at all.
        ("application/json", b"{}".to_vec(), 400, "multipart_invalid"),
        (
            "multipart/form-data",
            b"just bytes".to_vec(),
            400,
            "multipart_invalid",
        ),
        // No part named `file` (and none with a filename).
        (
            "multipart/form-data; boundary=b",
            b"--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n1\r\n--b--\r\n".to_vec(),
            400,
            "multipart_invalid",
        ),
        // Cut off inside the file part.
        (
            "multipart/form-data; boundary=b",
            b"--b\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nabc".to_vec(),
            400,
            "multipart_invalid",
        ),
    ];
    for (ct, body, status, kind) in cases {
        let url = session(&server.base, json!({})).await;
        let (s, v) = post_form(&url, ct, body).await;
        assert_eq!((s, err_kind(&v)), (status, kind), "{ct}: {v}");
        // A refused upload does not spend the key.
        let (s, v) = post_form(
            &url,
            "multipart/form-data",
            form("q", "a.txt", "text/plain", b"ok"),
        )
        .await;
        assert_eq!(s, 200, "{v}");
    }
    assert!(server.wait_bookkeeping_empty(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn keys_tampered_expired_missing() {
    let server = start_with(|u| u.session_ttl(Duration::from_secs(1))).await;
    let url = session(&server.base, json!({})).await;
    let body = || form("b", "a.txt", "text/plain", b"hello");
    // Missing key.
    let (s, v) = post_form(&server.url("store/single"), "multipart/form-data", body()).await;
    assert_eq!((s, err_kind(&v)), (401, "token_missing"), "{v}");
    // Tampered: one character of the key changed.
    let (prefix, key) = url.split_once("key=").unwrap();
    let mut chars: Vec<char> = key.chars().collect();
    chars[10] = if chars[10] == 'A' { 'B' } else { 'A' };
    let tampered = format!("{prefix}key={}", chars.into_iter().collect::<String>());
    let (s, v) = post_form(&tampered, "multipart/form-data", body()).await;
    assert_eq!((s, err_kind(&v)), (403, "key_invalid"), "{v}");
    // A key of another app.
    let other = start_with(|u| u.key("other").session_ttl(Duration::from_secs(60))).await;
    let foreign = session(&other.base, json!({})).await;
    let foreign_key = foreign.split_once("key=").unwrap().1;
    let (s, v) = post_form(
        &format!("{}/store/single?key={foreign_key}", server.base),
        "multipart/form-data",
        body(),
    )
    .await;
    // `other` also knows KEY (it is its primary key) but signs with it: accepted there only
    // if the session record exists, which it does not on this server.
    assert_eq!((s, err_kind(&v)), (410, "upload_gone"), "{v}");
    let garbage = format!("{}/store/single?key=%FF%00", server.base);
    let (s, v) = post_form(&garbage, "multipart/form-data", body()).await;
    assert_eq!((s, err_kind(&v)), (403, "key_invalid"), "{v}");
    // Expired.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (s, v) = post_form(&url, "multipart/form-data", body()).await;
    assert_eq!((s, err_kind(&v)), (410, "upload_gone"), "{v}");
    // A simple session's key on the parts endpoint: refused for its mode (checked before
    // its expiry), whatever its age.
    let (s, v) = put_part(
        &url.replace("/store/single", "/store/resumable"),
        "0",
        b"x".to_vec(),
    )
    .await;
    assert_eq!((s, err_kind(&v)), (403, "key_invalid"), "{v}");
}

#[tokio::test]
async fn parts_out_of_order_retried_and_assembled() {
    let server = start().await;
    let url = session(
        &server.base,
        json!({"resumable": true, "metadata": {"k": "v"}}),
    )
    .await;
    let file = pattern(5 * 1_000_003, 3);
    let chunks: Vec<&[u8]> = file.chunks(1_000_003).collect();
    let mut etags = vec![String::new(); chunks.len()];
    // Out of order, in parallel.
    let mut tasks = Vec::new();
    for i in [3usize, 0, 4, 1, 2] {
        let url = url.clone();
        let body = chunks[i].to_vec();
        tasks.push(tokio::spawn(async move {
            (i, put_part(&url, &i.to_string(), body).await)
        }));
    }
    for t in tasks {
        let (i, (s, v)) = t.await.unwrap();
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["data"]["index"].as_u64(), Some(i as u64));
        etags[i] = v["data"]["etag"].as_str().unwrap().to_owned();
        assert_eq!(
            etags[i],
            sha256(chunks[i]),
            "the etag is the part's SHA-256"
        );
    }
    // Part 2 retried with other bytes, then again with the right ones: the last one wins.
    let (s, v) = put_part(&url, "2", b"wrong bytes".to_vec()).await;
    assert_eq!(s, 200);
    let wrong = v["data"]["etag"].as_str().unwrap().to_owned();
    let listed = |etags: &[String]| json!({"parts": etags.iter().enumerate().map(|(i, e)| json!({"index": i, "etag": e})).collect::<Vec<_>>()});
    // The etag of the replaced upload no longer matches.
    let (s, v) = assemble(&url, Some(listed(&etags))).await;
    assert_eq!((s, err_kind(&v)), (400, "part_invalid"), "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("part 2"),
        "{v}"
    );
    let mut with_wrong = etags.clone();
    with_wrong[2] = wrong;
    let (s, _) = put_part(&url, "2", chunks[2].to_vec()).await;
    assert_eq!(s, 200);
    let (s, v) = assemble(&url, Some(listed(&with_wrong))).await;
    assert_eq!((s, err_kind(&v)), (400, "part_invalid"), "{v}");
    // A listed part that was never uploaded; a bad index header.
    let mut too_many = etags.clone();
    too_many.push("00".into());
    let (s, v) = assemble(&url, Some(listed(&too_many))).await;
    assert_eq!((s, err_kind(&v)), (400, "part_invalid"), "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("part 5"),
        "{v}"
    );
    for bad in ["-1", "x", "10000", ""] {
        let (s, v) = put_part(&url, bad, b"x".to_vec()).await;
        assert_eq!((s, err_kind(&v)), (400, "part_invalid"), "{bad}: {v}");
    }
    // An extra part that is not listed is discarded.
    let (s, _) = put_part(&url, "9", b"extra".to_vec()).await;
    assert_eq!(s, 200);

    let (s, v) = assemble(&url, Some(listed(&etags))).await;
    assert_eq!(s, 200, "{v}");
    let media = &v["data"];
    assert_eq!(media["filesize"].as_u64(), Some(file.len() as u64));
    assert_eq!(media["metadata"], json!({"k": "v"}));
    let (_, got) = fetch(media["url"].as_str().unwrap()).await;
    assert_eq!(sha256(&got), sha256(&file), "assembled in index order");
    // Spent: parts and assembly are refused now.
    let (s, v) = assemble(&url, Some(listed(&etags))).await;
    assert_eq!((s, err_kind(&v)), (410, "upload_gone"), "{v}");
    let (s, _) = put_part(&url, "0", b"x".to_vec()).await;
    assert_eq!(s, 410);
    // Every part's bytes were freed, including the unlisted one and the replaced ones.
    assert!(
        server.wait_bookkeeping_empty(Duration::from_secs(5)).await,
        "{:?}",
        server.bookkeeping("staging")
    );
}

#[tokio::test]
async fn empty_assembly_body_takes_every_part() {
    // ittybit's reference snippet sends `body` inside `headers`: the POST has no body.
    let server = start().await;
    let url = session(&server.base, json!({"resumable": true})).await;
    let (s, v) = assemble(&url, None).await;
    assert_eq!(
        (s, err_kind(&v)),
        (400, "part_invalid"),
        "no parts yet: {v}"
    );
    let file = pattern(300_000, 9);
    for (i, c) in file.chunks(100_000).enumerate().rev() {
        assert_eq!(put_part(&url, &i.to_string(), c.to_vec()).await.0, 200);
    }
    let (s, _) = put_part(&url, "4", b"gap".to_vec()).await;
    assert_eq!(s, 200);
    let (s, v) = assemble(&url, None).await;
    assert_eq!((s, err_kind(&v)), (400, "part_invalid"), "a gap at 3: {v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("part 3"),
        "{v}"
    );
    assert_eq!(put_part(&url, "3", b"!".to_vec()).await.0, 200);
    let (s, v) = assemble(&url, None).await;
    assert_eq!(s, 200, "{v}");
    let mut want = file.clone();
    want.extend_from_slice(b"!gap");
    let (_, got) = fetch(v["data"]["url"].as_str().unwrap()).await;
    assert_eq!(got, want);
}

#[tokio::test]
async fn alias_is_served_and_unique() {
    let server = start().await;
    let url = session(&server.base, json!({"alias": "usr_abcd/profile/avatar"})).await;
    let png = tiny_png(4, 4);
    let (s, v) = post_form(
        &url,
        "multipart/form-data",
        form("b", "me.png", "image/png", &png),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let media = &v["data"];
    assert_eq!(media["alias"], "usr_abcd/profile/avatar");
    assert_eq!(
        media["url"],
        format!("{}/usr_abcd/profile/avatar", server.base)
    );
    let id = media["id"].as_str().unwrap();
    for u in [
        media["url"].as_str().unwrap().to_owned(),
        format!("{}/{id}/original", server.base),
    ] {
        let res = client().get(&u).send().await.unwrap();
        assert_eq!(res.status(), 200, "{u}");
        assert_eq!(res.headers()["content-type"], "image/png");
        assert_eq!(res.bytes().await.unwrap(), Bytes::from(png.clone()), "{u}");
    }
    // A second session asking for the same alias.
    let (s, v) = create(
        &server.base,
        Some(json!({"alias": "usr_abcd/profile/avatar"})),
    )
    .await;
    assert_eq!((s, err_kind(&v)), (409, "alias_taken"), "{v}");
    // Two sessions created before either finished: the second to finish gets 409, and its
    // key is not spent.
    let a = session(&server.base, json!({"alias": "race.txt"})).await;
    let b = session(&server.base, json!({"alias": "race.txt"})).await;
    assert_eq!(
        post_form(
            &a,
            "multipart/form-data",
            form("b", "a", "text/plain", b"a")
        )
        .await
        .0,
        200
    );
    let (s, v) = post_form(
        &b,
        "multipart/form-data",
        form("b", "b", "text/plain", b"b"),
    )
    .await;
    assert_eq!((s, err_kind(&v)), (409, "alias_taken"), "{v}");
    assert_eq!(server.read("race.txt").unwrap(), b"a");
    assert!(server.wait_bookkeeping_empty(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn session_conditions_reject_and_keep_the_key() {
    let server = start().await;
    let conditions = json!({"operator": "&&", "rules": [
        {"key": "kind", "operator": "==", "value": "image"},
        {"key": "width", "operator": "<=", "value": 10}
    ]});
    let url = session(&server.base, json!({"conditions": conditions})).await;
    let before = server.entries();
    // Not an image: refused (on the first bytes), nothing kept.
    let (s, v) = post_form(
        &url,
        "multipart/form-data",
        form("b", "a.txt", "text/plain", &pattern(100_000, 1)),
    )
    .await;
    assert_eq!((s, err_kind(&v)), (422, "conditions_failed"), "{v}");
    // Too wide.
    let (s, v) = post_form(
        &url,
        "multipart/form-data",
        form("b", "w.png", "image/png", &tiny_png(11, 2)),
    )
    .await;
    assert_eq!((s, err_kind(&v)), (422, "conditions_failed"), "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("width"),
        "{v}"
    );
    assert!(server.wait_bookkeeping_empty(Duration::from_secs(5)).await);
    // Nothing visible was written (session records aside).
    let visible: Vec<_> = server
        .entries()
        .difference(&before)
        .filter(|e| !e.starts_with(RESERVED))
        .cloned()
        .collect();
    assert!(visible.is_empty(), "{visible:?}");
    // The key is still good for a file that meets the conditions.
    let (s, v) = post_form(
        &url,
        "multipart/form-data",
        form("b", "ok.png", "image/png", &tiny_png(10, 2)),
    )
    .await;
    assert_eq!(s, 200, "{v}");

    // Resumable: conditions checked at assembly; the parts are discarded on refusal.
    let url = session(&server.base, json!({"resumable": true, "conditions": {"rules": [{"key": "filesize", "operator": "<", "value": 1000}]}})).await;
    assert_eq!(put_part(&url, "0", pattern(800, 1)).await.0, 200);
    assert_eq!(put_part(&url, "1", pattern(800, 2)).await.0, 200);
    let (s, v) = assemble(&url, None).await;
    assert_eq!((s, err_kind(&v)), (422, "conditions_failed"), "{v}");
    assert!(server.wait_bookkeeping_empty(Duration::from_secs(5)).await);
    let (s, v) = assemble(&url, None).await;
    assert_eq!(
        (s, err_kind(&v)),
        (400, "part_invalid"),
        "parts were discarded: {v}"
    );

    // App conditions apply to sessions too.
    let server = start_with(|u| {
        u.conditions(
            tower_uploads::conditions::Conditions::parse(
                br#"{"rules":[{"key":"kind","operator":"==","value":"image"}]}"#,
            )
            .unwrap(),
        )
    })
    .await;
    let url = session(&server.base, json!({})).await;
    let (s, v) = post_form(
        &url,
        "multipart/form-data",
        form("b", "a.txt", "text/plain", b"text"),
    )
    .await;
    assert_eq!((s, err_kind(&v)), (422, "conditions_failed"), "{v}");
}

#[tokio::test]
async fn limits_and_expiry_sweep() {
    let server = start_with(|u| {
        u.max_request_size(100_000)
            .session_ttl(Duration::from_secs(1))
    })
    .await;
    let url = session(&server.base, json!({})).await;
    let (s, v) = post_form(
        &url,
        "multipart/form-data",
        form(
            "b",
            "big.bin",
            "application/octet-stream",
            &pattern(150_000, 1),
        ),
    )
    .await;
    assert_eq!((s, err_kind(&v)), (413, "file_too_large"), "{v}");
    let url = session(&server.base, json!({"resumable": true})).await;
    let (s, v) = put_part(&url, "0", pattern(150_000, 1)).await;
    assert_eq!((s, err_kind(&v)), (413, "file_too_large"), "{v}");
    assert_eq!(put_part(&url, "0", pattern(1000, 1)).await.0, 200);
    assert!(
        !server.bookkeeping("staging").is_empty(),
        "the part is kept"
    );
    assert!(!server.bookkeeping("records").is_empty());
    // Past expiry + TTL, the sweeper frees the part and forgets the sessions.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let storage: std::sync::Arc<dyn tower_uploads::storage::Storage> =
        std::sync::Arc::new(tower_uploads::FsStorage::new(&server.data).unwrap());
    let report = tower_uploads::service::sweep(&storage, Duration::from_millis(1))
        .await
        .unwrap();
    assert_eq!(report.sessions, 2, "{report:?}");
    assert!(server.bookkeeping("staging").is_empty());
    assert!(
        server
            .bookkeeping("records")
            .iter()
            .all(|e| e.ends_with('/')),
        "{:?}",
        server.bookkeeping("records")
    );
}

/// A body larger than the server could buffer comfortably streams through in bounded memory:
/// a 60 MiB form against the demo server, whose peak RSS must not grow by more than 24 MiB.
#[tokio::test]
async fn large_form_streams_in_bounded_memory() {
    let (_sandbox, data) = sandbox();
    let server = DemoServer::start(&data, &[]);
    let url = session(&server.base, json!({})).await;
    let idle = server.peak_rss_kib();
    let size = 60 << 20;
    let head =
        b"--bb\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.bin\"\r\n\r\n"
            .to_vec();
    let tail = b"\r\n--bb--\r\n".to_vec();
    // Generated as it is sent: 1 MiB frames of a pattern.
    let frames = std::iter::once(Bytes::from(head))
        .chain((0..60).map(|i| Bytes::from(pattern(1 << 20, i))))
        .chain(std::iter::once(Bytes::from(tail)));
    let stream = futures_util::stream::iter(frames.map(Ok::<_, std::io::Error>));
    let res = client()
        .post(&url)
        .header("content-type", "multipart/form-data; boundary=bb")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    let (s, _, v) = json(res).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["filesize"].as_u64(), Some(size as u64));
    let grown = server.peak_rss_kib().saturating_sub(idle);
    assert!(
        grown < 24 * 1024,
        "peak RSS grew by {grown} KiB for a {size}-byte form"
    );
    let (_, got) = fetch(v["data"]["url"].as_str().unwrap()).await;
    let mut want = <sha2::Sha256 as sha2::Digest>::new();
    for i in 0..60 {
        sha2::Digest::update(&mut want, pattern(1 << 20, i));
    }
    assert_eq!(sha256(&got), hex::encode(sha2::Digest::finalize(want)));
}

/// A session created on one process is used on another sharing the data directory; the key
/// is spent for both.
#[tokio::test]
async fn two_processes_share_sessions() {
    let (_sandbox, data) = sandbox();
    let a = DemoServer::start(&data, &[]);
    let b = DemoServer::start(&data, &[]);
    let url = session(
        &a.base,
        json!({"resumable": true, "alias": "shared/file.bin"}),
    )
    .await;
    let on = |base: &str| url.replace(&a.base, base);
    let file = pattern(3_000_000, 5);
    let chunks: Vec<&[u8]> = file.chunks(1_000_000).collect();
    let mut parts = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        let base = if i % 2 == 0 { &b.base } else { &a.base };
        let (s, v) = put_part(&on(base), &i.to_string(), c.to_vec()).await;
        assert_eq!(s, 200, "{v}");
        parts.push(v["data"].clone());
    }
    let (s, v) = assemble(&on(&b.base), Some(json!({"parts": parts}))).await;
    assert_eq!(s, 200, "{v}");
    let media_url = v["data"]["sources"][0]["url"]
        .as_str()
        .unwrap()
        .replace(&a.base, &b.base);
    let (status, got) = fetch(&media_url).await;
    assert_eq!((status, sha256(&got)), (200, sha256(&file)));
    let (s, v) = assemble(&on(&a.base), Some(json!({"parts": parts}))).await;
    assert_eq!((s, err_kind(&v)), (410, "upload_gone"), "{v}");

    // Both processes race to spend one simple key: exactly one wins.
    let url = session(&b.base, json!({})).await;
    let url_a = url.replace(&b.base, &a.base);
    let (ra, rb) = tokio::join!(
        post_form(
            &url_a,
            "multipart/form-data",
            form("b", "a", "text/plain", b"from a")
        ),
        post_form(
            &url,
            "multipart/form-data",
            form("b", "b", "text/plain", b"from b")
        ),
    );
    let mut statuses = [ra.0, rb.0];
    statuses.sort();
    assert_eq!(statuses, [200, 410], "{ra:?} {rb:?}");
}

/// A session body that stalls is cut off by the body idle timeout: 408, nothing kept, the
/// key unspent.
#[tokio::test]
async fn stalled_session_bodies_time_out() {
    let server = start_with(|u| u.body_idle_timeout(Some(Duration::from_millis(500)))).await;
    for resumable in [false, true] {
        let url = session(&server.base, json!({"resumable": resumable})).await;
        let target = url.strip_prefix(&server.base).unwrap().to_owned();
        let (method, extra) = if resumable {
            ("PUT", "X-Upload-Index: 0\r\n")
        } else {
            ("POST", "Content-Type: multipart/form-data; boundary=b\r\n")
        };
        let head = format!(
            "{method} {target} HTTP/1.1\r\nHost: x\r\n{extra}Content-Length: 100000\r\n\r\n--b\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nabc"
        );
        let res = raw_request(server.addr, head.as_bytes(), Duration::from_secs(10)).await;
        assert_eq!(
            res.status,
            408,
            "{method}: {:?}",
            String::from_utf8_lossy(&res.body)
        );
        assert_eq!(res.json()["error"]["kind"], "request_timeout");
        assert!(server.wait_bookkeeping_empty(Duration::from_secs(5)).await);
    }
}
