//! The startup probe of conditional writes against a server that honours them: moto's S3
//! server (`moto_server`, PyPI `moto[server]`; `.ci/run` installs it in a venv and puts it on
//! PATH). It answers `If-None-Match: *` and `If-Match` one request at a time (it is not
//! trusted for races; `InMemory` is, in the unit tests). Garage, which ignores them, has its
//! own test in `tests/object_store.rs`. Without `moto_server` this test says so and passes
//! only when `CI` is unset.
#![cfg(feature = "object-store")]

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

#[tokio::test]
async fn moto_enforces_conditional_writes() {
    let Some(moto) = moto_or_skip("moto_enforces_conditional_writes") else {
        return;
    };
    // moto creates a bucket on an anonymous PUT.
    let created = reqwest::Client::new()
        .put(format!("{}/probe-bucket", moto.endpoint))
        .send()
        .await
        .expect("create the bucket");
    assert!(created.status().is_success(), "{}", created.status());
    let options = [
        ("aws_endpoint", moto.endpoint.as_str()),
        ("aws_allow_http", "true"),
        ("aws_access_key_id", "probe"),
        ("aws_secret_access_key", "probe"),
        ("aws_region", "us-east-1"),
    ];
    let storage =
        ObjectStoreStorage::from_url_opts("s3://probe-bucket/p", options).expect("a storage");
    let found = storage
        .probe_conditional_writes()
        .await
        .expect("the probe ran");
    assert_eq!(found, ConditionalWrites::Enforced);
}
