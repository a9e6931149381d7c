//! tus 1.0.0 (PROTOCOL.md §9) over a real server on loopback, by raw HTTP requests as a tus
//! client sends them: OPTIONS, creation (with and without data), HEAD, PATCH at the offset,
//! termination, and the protocol's errors. (The real clients — tus-js-client, tuspy, Uppy —
//! come with the rest of issue 22.)

mod common;

use base64::Engine;
use common::*;
use reqwest::{Method, Response};

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn h<'a>(res: &'a Response, name: &str) -> &'a str {
    res.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// `POST /tus` for `filename` (and `folder`) of `total` bytes.
async fn create(server: &TestServer, total: u64, metadata: &str) -> Response {
    client()
        .post(server.url("/tus"))
        .header("authorization", server.bearer())
        .header("tus-resumable", "1.0.0")
        .header("upload-length", total.to_string())
        .header("upload-metadata", metadata)
        .send()
        .await
        .expect("POST /tus")
}

async fn patch(url: &str, offset: u64, body: Vec<u8>) -> Response {
    client()
        .patch(url)
        .header("tus-resumable", "1.0.0")
        .header("upload-offset", offset.to_string())
        .header("content-type", "application/offset+octet-stream")
        .body(body)
        .send()
        .await
        .expect("PATCH")
}

async fn head(url: &str) -> Response {
    client()
        .head(url)
        .header("tus-resumable", "1.0.0")
        .send()
        .await
        .expect("HEAD")
}

#[tokio::test]
async fn options_say_what_is_served() {
    let server = start_with(|u| u.max_file_size(1 << 30)).await;
    let res = client()
        .request(Method::OPTIONS, server.url("/tus"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(h(&res, "tus-version"), "1.0.0");
    assert_eq!(h(&res, "tus-resumable"), "1.0.0");
    assert_eq!(h(&res, "tus-max-size"), (1u64 << 30).to_string());
    for ext in [
        "creation",
        "creation-with-upload",
        "expiration",
        "termination",
    ] {
        assert!(
            h(&res, "tus-extension").split(',').any(|e| e == ext),
            "{ext}"
        );
    }
}

/// Creation, the offset from HEAD, appends at it, a wrong offset refused, completion with
/// `Content-Location`, the file delivered where the metadata named it.
#[tokio::test]
async fn an_upload_from_creation_to_the_file() {
    let server = start().await;
    let file = pattern(300_000, 9);
    let total = file.len() as u64;
    let meta = format!(
        "filename {},folder {},note {}",
        b64("a.bin"),
        b64("docs/x"),
        b64("hi")
    );
    let res = create(&server, total, &meta).await;
    assert_eq!(res.status(), 201, "{:?}", res.text().await);
    let url = h(&res, "location").to_owned();
    assert!(url.starts_with(&server.url("/tus/")), "{url}");
    assert!(!h(&res, "upload-expires").is_empty());
    let res = head(&url).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        (h(&res, "upload-offset"), h(&res, "upload-length")),
        ("0", total.to_string().as_str())
    );
    assert_eq!(h(&res, "cache-control"), "no-store");

    let res = patch(&url, 0, file[..100_000].to_vec()).await;
    assert_eq!(res.status(), 204, "{:?}", res.text().await);
    assert_eq!(h(&res, "upload-offset"), "100000");
    assert_eq!(h(&head(&url).await, "upload-offset"), "100000");
    // Not at the offset: 409, nothing counted.
    let res = patch(&url, 50_000, file[50_000..150_000].to_vec()).await;
    assert_eq!(res.status(), 409);
    assert_eq!(h(&res, "tus-resumable"), "1.0.0");
    assert_eq!(h(&head(&url).await, "upload-offset"), "100000");

    let res = patch(&url, 100_000, file[100_000..].to_vec()).await;
    assert_eq!(res.status(), 204, "{:?}", res.text().await);
    assert_eq!(h(&res, "upload-offset"), total.to_string());
    assert_eq!(h(&res, "content-location"), server.url("/docs/x/a.bin"));
    let status = client()
        .put(server.url("/docs/x/a.bin"))
        .header("authorization", server.bearer())
        .header("content-range", format!("bytes */{total}"))
        .send()
        .await
        .unwrap();
    let file_object: serde_json::Value =
        serde_json::from_slice(&status.bytes().await.unwrap()).unwrap();
    let file_object = &file_object["data"];
    assert_eq!(file_object["metadata"]["note"], "hi", "{file_object}");
    assert_eq!(file_object["filesize"], total);
    assert_eq!(
        file_object["type"], "application/octet-stream",
        "not the PATCH's type"
    );
    assert_eq!(server.read("docs/x/a.bin").as_deref(), Some(&file[..]));
    let got = client()
        .get(server.url("/docs/x/a.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(sha256(&got.bytes().await.unwrap()), sha256(&file));
    // The upload URL went with the upload.
    assert_eq!(head(&url).await.status(), 404);
}

/// Creation with data, an interrupted PATCH (its bytes not counted), and the client resuming
/// from the offset HEAD gives.
#[tokio::test]
async fn creation_with_upload_and_a_resumed_patch() {
    let server = start().await;
    let file = pattern(200_000, 4);
    let total = file.len() as u64;
    let res = client()
        .post(server.url("/tus"))
        .header("authorization", server.bearer())
        .header("tus-resumable", "1.0.0")
        .header("upload-length", total.to_string())
        .header("upload-metadata", format!("filename {}", b64("c.bin")))
        .header("content-type", "application/offset+octet-stream")
        .body(file[..70_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{:?}", res.text().await);
    assert_eq!(h(&res, "upload-offset"), "70000");
    let url = h(&res, "location").to_owned();
    let id = url.rsplit('/').next().unwrap().to_owned();

    // A PATCH that promises 130,000 bytes and sends 10,000 before its connection closes.
    let head_bytes = format!(
        "PATCH /tus/{id} HTTP/1.1\r\nhost: {}\r\ntus-resumable: 1.0.0\r\nupload-offset: 70000\r\n\
         content-type: application/offset+octet-stream\r\ncontent-length: 130000\r\n\r\n",
        server.addr
    );
    let mut cut = head_bytes.into_bytes();
    cut.extend_from_slice(&file[70_000..80_000]);
    let _ = raw_request(server.addr, &cut, std::time::Duration::from_millis(500)).await;
    assert_eq!(h(&head(&url).await, "upload-offset"), "70000");

    let res = patch(&url, 70_000, file[70_000..].to_vec()).await;
    assert_eq!(res.status(), 204);
    assert_eq!(server.read("c.bin").as_deref(), Some(&file[..]));
}

#[tokio::test]
async fn termination_and_the_protocol_errors() {
    let server = start_with(|u| u.max_file_size(1 << 20)).await;
    let meta = format!("filename {}", b64("t.bin"));
    // No Tus-Resumable: 412 with the version served.
    let res = client()
        .post(server.url("/tus"))
        .header("authorization", server.bearer())
        .header("upload-length", "10")
        .header("upload-metadata", &meta)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 412);
    assert_eq!(h(&res, "tus-version"), "1.0.0");
    // No credentials: 401.
    let res = client()
        .post(server.url("/tus"))
        .header("tus-resumable", "1.0.0")
        .header("upload-length", "10")
        .header("upload-metadata", &meta)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    // No filename, a bad path, bad metadata: 400.
    for bad in [
        String::new(),
        format!("folder {}", b64("a")),
        format!("filename {}", b64("../x")),
        "filename ***".into(),
    ] {
        assert_eq!(create(&server, 10, &bad).await.status(), 400, "{bad:?}");
    }
    // Over the size limit: 413.
    assert_eq!(create(&server, (1 << 20) + 1, &meta).await.status(), 413);

    let res = create(&server, 10, &meta).await;
    assert_eq!(res.status(), 201);
    let url = h(&res, "location").to_owned();
    // Another content type: 415.
    let res = client()
        .patch(&url)
        .header("tus-resumable", "1.0.0")
        .header("upload-offset", "0")
        .header("content-type", "application/octet-stream")
        .body("0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 415);
    // More than the upload's length: refused, nothing counted.
    assert_ne!(patch(&url, 0, vec![1; 11]).await.status(), 204);
    assert_eq!(h(&head(&url).await, "upload-offset"), "0");
    // Termination: 204, then the URL is gone, and nothing was published.
    let res = client()
        .delete(&url)
        .header("tus-resumable", "1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(head(&url).await.status(), 404);
    assert_eq!(patch(&url, 0, b"0123456789".to_vec()).await.status(), 404);
    assert!(server.read("t.bin").is_none());
    // An unknown upload URL: 404.
    assert_eq!(
        head(&server.url("/tus/t0000000000000000000000"))
            .await
            .status(),
        404
    );
}

/// An upload left idle past the TTL: its URL answers 404, and the sweeper drops its bytes
/// and its record.
#[tokio::test]
async fn an_expired_upload_is_gone_and_swept() {
    use std::sync::Arc;
    use tower_uploads::storage::{RecordKey, Storage, StorageExt};
    let server = start_with(|u| u.upload_ttl(std::time::Duration::from_millis(300))).await;
    let res = create(&server, 10, &format!("filename {}", b64("late.bin"))).await;
    let url = h(&res, "location").to_owned();
    assert_eq!(patch(&url, 0, b"01234".to_vec()).await.status(), 204);
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(head(&url).await.status(), 404);
    let storage: Arc<dyn Storage> = Arc::new(tower_uploads::FsStorage::new(&server.data).unwrap());
    let tus = RecordKey::new("tus").unwrap();
    assert_eq!(storage.list_records(&tus).await.unwrap().len(), 1);
    tower_uploads::service::sweep(&storage, std::time::Duration::from_millis(300))
        .await
        .unwrap();
    assert!(storage.list_records(&tus).await.unwrap().is_empty());
    assert!(storage.list_uploads().await.unwrap().is_empty());
}

/// The checksum extension: a PATCH whose `Upload-Checksum` does not match its bytes is
/// refused with 460 and not counted; an unknown algorithm is 400; a matching one counts,
/// with each algorithm.
#[tokio::test]
async fn checksums_are_checked_before_bytes_count() {
    use sha2::Digest;
    let server = start().await;
    let file = pattern(30_000, 2);
    let res = create(&server, 30_000, &format!("filename {}", b64("sum.bin"))).await;
    let url = h(&res, "location").to_owned();
    let sums: [(&str, Vec<u8>); 3] = [
        ("sha1", sha1::Sha1::digest(&file[..10_000]).to_vec()),
        ("md5", md5::Md5::digest(&file[10_000..20_000]).to_vec()),
        ("sha256", sha2::Sha256::digest(&file[20_000..]).to_vec()),
    ];
    let with_sum = |offset: usize, end: usize, header: String| {
        client()
            .patch(&url)
            .header("tus-resumable", "1.0.0")
            .header("upload-offset", offset.to_string())
            .header("content-type", "application/offset+octet-stream")
            .header("upload-checksum", header)
            .body(file[offset..end].to_vec())
            .send()
    };
    let enc = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    // Wrong: the digest of other bytes.
    let res = with_sum(
        0,
        10_000,
        format!("sha1 {}", enc(&sums[1].1[..]).replace('=', "")),
    )
    .await
    .unwrap();
    assert_eq!(
        res.status(),
        400,
        "an md5-sized digest for sha1 is malformed"
    );
    let wrong = sha1::Sha1::digest(b"other bytes").to_vec();
    let res = with_sum(0, 10_000, format!("sha1 {}", enc(&wrong)))
        .await
        .unwrap();
    assert_eq!(res.status(), 460);
    assert_eq!(h(&head(&url).await, "upload-offset"), "0");
    let res = with_sum(0, 10_000, format!("crc32 {}", enc(b"1234")))
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    // Right, with each algorithm.
    for (i, (alg, digest)) in sums.iter().enumerate() {
        let (start, end) = (i * 10_000, (i + 1) * 10_000);
        let res = with_sum(start, end, format!("{alg} {}", enc(digest)))
            .await
            .unwrap();
        assert_eq!(res.status(), 204, "{alg}");
        assert_eq!(h(&res, "upload-offset"), end.to_string());
    }
    assert_eq!(server.read("sum.bin").as_deref(), Some(&file[..]));
}

/// An empty file is complete at its creation: published by the `POST` itself.
#[tokio::test]
async fn an_empty_file_is_published_at_creation() {
    let server = start().await;
    let res = create(&server, 0, &format!("filename {}", b64("empty.txt"))).await;
    assert_eq!(res.status(), 201, "{:?}", res.text().await);
    assert_eq!(h(&res, "upload-offset"), "0");
    assert_eq!(h(&res, "content-location"), server.url("/empty.txt"));
    assert_eq!(server.read("empty.txt").as_deref(), Some(&b""[..]));
}
