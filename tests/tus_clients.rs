//! Real tus clients against the demo server: tus-js-client 4.3 in Node (`tests/tus-js`,
//! installed by `npm ci` there; `.ci/run` does it). A 50 MiB file, interrupted once a third
//! is in and resumed from its upload URL, checked by its SHA-256 over `GET`. Without node or
//! the package the test says so and passes only when `CI` is unset.

mod common;

use common::process::DemoServer;
use common::{KEY, client, pattern, sha256};
use std::process::Command;

/// The tus-js-client script's directory, or `None` (skip) without node or the package.
fn tus_js_or_skip(test: &str) -> Option<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tus-js");
    let node = Command::new("node").arg("--version").output().is_ok();
    let installed = dir.join("node_modules/tus-js-client").exists();
    if node && installed {
        return Some(dir);
    }
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty());
    assert!(
        !ci,
        "{test}: node or tus-js-client missing (cd tests/tus-js && npm ci); CI must run this"
    );
    eprintln!("{test}: SKIPPED — node or tests/tus-js/node_modules missing (npm ci there)");
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tus_js_client_interrupted_and_resumed() {
    let Some(dir) = tus_js_or_skip("tus_js_client_interrupted_and_resumed") else {
        return;
    };
    let data_dir = tempfile::tempdir().unwrap();
    let server = DemoServer::start(data_dir.path(), &[]);
    let file = pattern(50 << 20, 21);
    let src = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(src.path(), &file).unwrap();
    let out = tokio::task::spawn_blocking({
        let (dir, endpoint, src) = (
            dir.clone(),
            format!("{}/tus", server.base),
            src.path().to_owned(),
        );
        move || {
            Command::new("node")
                .arg(dir.join("upload.mjs"))
                .args([endpoint.as_str(), KEY])
                .arg(&src)
                .args(["tus-js", "fifty.bin", "tus-v1"])
                .output()
                .expect("run node")
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tus-js-client failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    let resumed_from = report["resumedFrom"]
        .as_u64()
        .expect("a HEAD before resuming");
    assert!(
        ((50 << 20) / 3..50 << 20).contains(&resumed_from),
        "resumed from the offset the server kept: {report}"
    );
    assert_eq!(report["url"], report["first"], "the same upload resumed");
    let got = client()
        .get(format!("{}/tus-js/fifty.bin", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(sha256(&got.bytes().await.unwrap()), sha256(&file));
}
