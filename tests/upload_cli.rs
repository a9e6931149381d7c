//! The CLI uploader (`examples/upload.rs`) against a real server on loopback: killed with
//! SIGKILL mid-upload and rerun, it sends exactly the bytes the server is missing (counted
//! by the server) and the stored file's sha256 matches; folders with a bearer key; retries
//! of chunks the server refuses with 503.

mod common;

use bytes::Bytes;
use common::{data, pattern, sha256};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tower::ServiceExt;
use tower_uploads::auth::SignedMethod;
use tower_uploads::body::ResponseBody;
use tower_uploads::{FsStorage, Uploads};

const MIB: usize = 1 << 20;

/// A server that counts the request body bytes it reads, and answers every `fail_every`-th
/// PUT with a 503 without reading it.
struct Server {
    base: String,
    data: std::path::PathBuf,
    body_bytes: Arc<AtomicU64>,
    _sandbox: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start(fail_every: Option<u64>) -> Server {
    let (sandbox, data) = common::sandbox();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().unwrap());
    let uploads = Uploads::new(FsStorage::new(&data).unwrap())
        .key(common::KEY)
        .base_url(base.clone());
    let inner = uploads.service();
    let body_bytes = Arc::new(AtomicU64::new(0));
    let puts = Arc::new(AtomicU64::new(0));
    let counter = body_bytes.clone();
    let service = tower::service_fn(move |req: http::Request<Incoming>| {
        let inner = inner.clone();
        let counter = counter.clone();
        let n = puts.fetch_add(u64::from(req.method() == http::Method::PUT), Relaxed);
        let fail = req.method() == http::Method::PUT
            && fail_every.is_some_and(|every| n % every == every - 1);
        async move {
            if fail {
                let mut res = http::Response::new(ResponseBody::full(Bytes::from_static(b"{}")));
                *res.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                res.headers_mut()
                    .insert(http::header::CONNECTION, "close".parse().unwrap());
                return Ok::<_, std::convert::Infallible>(res);
            }
            let req = req.map(move |body| {
                body.map_frame(move |frame| {
                    if let Some(d) = frame.data_ref() {
                        counter.fetch_add(d.len() as u64, Relaxed);
                    }
                    frame
                })
            });
            inner.oneshot(req).await
        }
    });
    let task = common::serve_listener(listener, service);
    Server {
        base,
        data,
        body_bytes,
        _sandbox: sandbox,
        task,
    }
}

impl Server {
    /// Bytes received so far of `path`'s upload of `total` bytes (status query), or `None`
    /// once a file of that size is published there.
    async fn received(&self, path: &str, total: usize) -> Option<u64> {
        let res = common::client()
            .put(format!("{}/{path}", self.base))
            .header("authorization", format!("Bearer {}", common::KEY))
            .header("content-range", format!("bytes */{total}"))
            .send()
            .await
            .unwrap();
        let (status, _, body) = common::json(res).await;
        if status == 200 {
            return None;
        }
        assert_eq!(status, 202, "{body}");
        let ranges = data(&body)["ranges"].as_array().unwrap().clone();
        Some(
            ranges
                .iter()
                .map(|r| r[1].as_u64().unwrap() + 1 - r[0].as_u64().unwrap())
                .sum(),
        )
    }
}

fn uploader() -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(common::example_binary("upload"));
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    cmd
}

async fn run(cmd: &mut tokio::process::Command) -> (bool, String, String) {
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("the uploader finishes within 2 minutes")
        .expect("run the uploader");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_upload_resumes_with_only_the_missing_bytes() {
    let server = start(None).await;
    let total = 24 * MIB;
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("big.bin");
    let bytes = pattern(total, 42);
    write(&file, &bytes);
    let url = common::sign_url(
        common::KEY,
        &server.base,
        "cli/big.bin",
        SignedMethod::Put,
        common::now() + 600,
    );

    // First run, paced at 6 MiB/s (about 4 s): killed with SIGKILL once a quarter is in.
    let mut child = uploader()
        .args(["--url", &url, "--chunk-size", "1m", "--parallel", "3"])
        .args(["--limit-rate", "6m", "--quiet"])
        .arg(&file)
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got = server.received("cli/big.bin", total).await;
        if got.is_some_and(|n| n >= (total / 4) as u64) {
            break;
        }
        assert!(got.is_some(), "finished before it could be killed");
        assert!(tokio::time::Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.start_kill().unwrap(); // SIGKILL
    let status = child.wait().await.unwrap();
    assert!(!status.success(), "killed: {status:?}");
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9), "{status:?}");
    }
    // Chunks cut off by the kill settle (not counted); then what is there?
    tokio::time::sleep(Duration::from_millis(500)).await;
    let have = server
        .received("cli/big.bin", total)
        .await
        .expect("not complete after the kill");
    assert!(
        have >= (total / 4) as u64 && have < total as u64,
        "have {have}"
    );
    assert!(!server.data.join("cli/big.bin").exists());

    // Second run: only the missing bytes travel.
    server.body_bytes.store(0, Relaxed);
    let (ok, stdout, stderr) = run(uploader()
        .args([
            "--url",
            &url,
            "--chunk-size",
            "1m",
            "--parallel",
            "3",
            "--quiet",
        ])
        .arg(&file))
    .await;
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!(
            "resuming cli/big.bin: {have} of {total} bytes already on the server"
        )),
        "{stdout}"
    );
    let missing = total as u64 - have;
    assert!(
        stdout.contains(&format!("done cli/big.bin 201 sent={missing} ")),
        "{stdout}"
    );
    assert_eq!(
        server.body_bytes.load(Relaxed),
        missing,
        "the server read more than the missing bytes"
    );
    let stored = std::fs::read(server.data.join("cli/big.bin")).unwrap();
    assert_eq!(sha256(&stored), sha256(&bytes));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folder_with_a_bearer_key_and_retries() {
    // Every third PUT is refused with a 503: the uploader backs off and retries.
    let server = start(Some(3)).await;
    let src = tempfile::tempdir().unwrap();
    let dir = src.path().join("photos");
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("a/one.txt", b"hello".to_vec()),
        ("a/b/two.bin", pattern(3 * MIB + 12_345, 5)),
        ("empty.txt", Vec::new()),
        ("three.bin", pattern(MIB, 6)),
    ];
    for (name, bytes) in &files {
        write(&dir.join(name), bytes);
    }
    let args = [
        "--base",
        &server.base,
        "--key",
        common::KEY,
        "--chunk-size",
        "1m",
        "--quiet",
    ];
    let (ok, stdout, stderr) = run(uploader().args(args).arg(&dir).arg("backup/photos")).await;
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("retrying in"),
        "no retry happened: {stderr}"
    );
    for (name, bytes) in &files {
        let stored = std::fs::read(server.data.join("backup/photos").join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}\n{stdout}\n{stderr}"));
        assert_eq!(sha256(&stored), sha256(bytes), "{name}");
        assert!(
            stdout.contains(&format!("done backup/photos/{name} ")),
            "{stdout}"
        );
    }
    assert!(stdout.contains("0 failed"), "{stdout}");

    // Again: everything is already there; the run succeeds and changes nothing.
    let (ok, stdout, stderr) = run(uploader().args(args).arg(&dir).arg("backup/photos")).await;
    assert!(ok, "{stdout}\n{stderr}");
    for (name, bytes) in &files {
        let stored = std::fs::read(server.data.join("backup/photos").join(name)).unwrap();
        assert_eq!(stored, *bytes, "{name}");
    }
}
