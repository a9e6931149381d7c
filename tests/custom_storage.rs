//! `examples/custom_storage.rs` (a `Storage` over SQLite): the crate's conformance suite (its
//! claim take-over included) and the `Uploads` service over it on loopback.

#[allow(dead_code)] // the example's `main`
#[path = "../examples/custom_storage.rs"]
mod custom_storage;

use custom_storage::SqliteStorage;

const KEY: &str = "test-key";

/// A fresh database in a directory of its own (kept: the storage outlives this call).
fn fresh() -> SqliteStorage {
    let dir = tempfile::Builder::new()
        .prefix("tower-uploads-sqlite")
        .tempdir()
        .unwrap()
        .keep();
    SqliteStorage::open(dir.join("db.sqlite3")).unwrap()
}

/// The conformance suite, one test per check.
mod conformance {
    tower_uploads::storage_conformance_tests!(super::fresh());
}

/// The service over SqliteStorage on loopback: a 5 MiB resumable upload in three
/// `Content-Range` chunks sent out of order, and a simple PUT, each read back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let storage = SqliteStorage::open(dir.path().join("db.sqlite3")).unwrap();
    let service = tower_uploads::Uploads::new(storage).key(KEY).service();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback_service(service);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let http = reqwest::Client::new();
    let get = |path: &str| {
        let req = http.get(format!("{base}/{path}")).bearer_auth(KEY);
        async move {
            let res = req.send().await.unwrap();
            (res.status().as_u16(), res.bytes().await.unwrap().to_vec())
        }
    };

    let file: Vec<u8> = (0..5u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let total = file.len();
    let chunks = [(4 << 20)..total, 0..(2 << 20), (2 << 20)..(4 << 20)];
    for (i, range) in chunks.into_iter().enumerate() {
        let res = http
            .put(format!("{base}/videos/big.bin"))
            .bearer_auth(KEY)
            .header(
                "content-range",
                format!("bytes {}-{}/{total}", range.start, range.end - 1),
            )
            .body(file[range].to_vec())
            .send()
            .await
            .unwrap();
        let want = if i == 2 { 201 } else { 202 };
        let status = res.status().as_u16();
        assert_eq!(status, want, "chunk {i}: {}", res.text().await.unwrap());
    }
    let (status, body) = get("videos/big.bin").await;
    assert_eq!(status, 200);
    assert!(
        body == file,
        "the 5 MiB file reads back whole ({} bytes)",
        body.len()
    );

    let res = http
        .put(format!("{base}/hello.txt"))
        .bearer_auth(KEY)
        .body("hello, sqlite")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 201, "{}", res.text().await.unwrap());
    assert_eq!(get("hello.txt").await, (200, b"hello, sqlite".to_vec()));
}
