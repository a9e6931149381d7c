//! The startup probe of conditional writes against a server that honours them: moto's S3
//! server (`moto_server`, PyPI `moto[server]`; `.ci/run` installs it in a venv and puts it on
//! PATH). It answers `If-None-Match: *` and `If-Match` one request at a time (it is not
//! trusted for races; `InMemory` is, in the unit tests). Garage, which ignores them, has its
//! own test in `tests/object_store.rs`. Without `moto_server` this test says so and passes
//! only when `CI` is unset.
#![cfg(feature = "object-store")]

mod common;

use common::process::DemoServer;
use common::{KEY, pattern, sha256};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tower_uploads::storage::{ConditionalWrites, ObjectStoreStorage};

/// A moto S3 server on loopback, killed when dropped.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `moto_server` on a free port; `None` (skip) when it is not installed and `CI` is
/// unset.
fn moto_or_skip(test: &str) -> Option<Moto> {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = match Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty());
            assert!(
                !ci,
                "{test}: no moto_server ({e}); CI must run this test (pip install 'moto[server]')"
            );
            eprintln!("{test}: SKIPPED — no moto_server on PATH (pip install 'moto[server]')");
            return None;
        }
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let t0 = Instant::now();
    while TcpStream::connect(addr).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "moto_server did not listen on {addr}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(Moto {
        child,
        endpoint: format!("http://{addr}"),
    })
}

/// Creates `bucket` on moto (an anonymous PUT does); the S3 options that reach it.
async fn bucket(moto: &Moto, bucket: &str) -> [(&'static str, String); 5] {
    let created = reqwest::Client::new()
        .put(format!("{}/{bucket}", moto.endpoint))
        .send()
        .await
        .expect("create the bucket");
    assert!(created.status().is_success(), "{}", created.status());
    [
        ("aws_endpoint", moto.endpoint.clone()),
        ("aws_allow_http", "true".into()),
        ("aws_access_key_id", "probe".into()),
        ("aws_secret_access_key", "probe".into()),
        ("aws_region", "us-east-1".into()),
    ]
}

#[tokio::test]
async fn moto_enforces_conditional_writes() {
    let Some(moto) = moto_or_skip("moto_enforces_conditional_writes") else {
        return;
    };
    let options = bucket(&moto, "probe-bucket").await;
    let storage =
        ObjectStoreStorage::from_url_opts("s3://probe-bucket/p", options).expect("a storage");
    let found = storage
        .probe_conditional_writes()
        .await
        .expect("the probe ran");
    assert_eq!(found, ConditionalWrites::Enforced);
}

/// The demo server on a store that enforces conditional writes, with neither
/// `--coordinator` nor `--single-instance`: it probes, listens, and coordinates through the
/// store's conditional writes. A resumable upload on a part grid (two 6 MiB chunks and the
/// short last one, out of order) is published once, with the right bytes; its retried last
/// chunk answers the same File object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_server_coordinates_through_the_store() {
    let Some(moto) = moto_or_skip("demo_server_coordinates_through_the_store") else {
        return;
    };
    let options = bucket(&moto, "demo-bucket").await;
    let env: Vec<(String, String)> = options
        .iter()
        .map(|(k, v)| (k.to_ascii_uppercase(), v.clone()))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let server = DemoServer::start_env(dir.path(), &["--store", "s3://demo-bucket/d"], &env);
    let http = common::client_with_timeout(Duration::from_secs(60));
    const MIB: usize = 1 << 20;
    let total = 12 * MIB + 777;
    let data = pattern(total, 3);
    let mut answers = Vec::new();
    for range in [
        6 * MIB..12 * MIB,
        12 * MIB..total,
        0..6 * MIB,
        12 * MIB..total,
    ] {
        let res = http
            .put(format!("{}/moto/file.bin", server.base))
            .bearer_auth(KEY)
            .header(
                "Content-Range",
                format!("bytes {}-{}/{total}", range.start, range.end - 1),
            )
            .body(data[range].to_vec())
            .send()
            .await
            .expect("a chunk");
        let status = res.status().as_u16();
        let body: serde_json::Value =
            serde_json::from_slice(&res.bytes().await.unwrap()).unwrap_or(serde_json::Value::Null);
        answers.push((status, body));
    }
    let statuses: Vec<u16> = answers.iter().map(|a| a.0).collect();
    assert_eq!(statuses, [202, 202, 201, 200], "{answers:?}");
    assert_eq!(
        answers[2].1["id"], answers[3].1["id"],
        "the same File object"
    );
    let got = http
        .get(format!("{}/moto/file.bin", server.base))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(sha256(&got), sha256(&data));
}
