//! Fault injection end to end: the `Uploads` service over a [`FaultyStorage`] (an `FsStorage`
//! whose calls fail at chosen points or at a seeded random rate) on a loopback hyper server,
//! driven by clients that retry on 5xx. Every upload must finish with the right bytes, no
//! reader may ever see a partial file, and once the sweeper has run no staging byte is left.
//!
//! `FAULT_SEED=<n>` replays another random schedule of `random_faults_…` (default fixed).

#[path = "support/client.rs"]
mod client;
mod common;
#[path = "support/faulty.rs"]
mod faulty;

use bytes::Bytes;
use client::{Reply, Retry, Tally, sha256_hex};
use common::{KEY, list_entries_under, list_files, pattern, sandbox, serve_listener};
use faulty::{Fault, FaultyStorage, Op};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tower_uploads::{FsStorage, Uploads};

const KIB: usize = 1 << 10;

struct Server {
    base: String,
    storage: FaultyStorage<FsStorage>,
    data: PathBuf,
    _sandbox: TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    async fn start(
        configure: impl FnOnce(FaultyStorage<FsStorage>) -> FaultyStorage<FsStorage>,
    ) -> Server {
        let (sandbox, data) = sandbox();
        let storage = configure(FaultyStorage::new(FsStorage::new(&data).expect("storage")));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let uploads = Uploads::new(storage.clone())
            .key(KEY)
            .base_url(base.clone());
        let task = serve_listener(listener, uploads.service());
        Server {
            base,
            storage,
            data,
            _sandbox: sandbox,
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base)
    }

    /// Stops injecting, sweeps every upload left (TTL 0, as the sweeper does once they
    /// expire), and returns what was in the staging bookkeeping before the sweep.
    async fn disarm_and_sweep(&self) -> BTreeSet<String> {
        self.storage.arm(false);
        let left = staging(&self.data);
        let storage: Arc<dyn tower_uploads::storage::Storage> = Arc::new(self.storage.clone());
        tower_uploads::service::sweep(&storage, Duration::ZERO)
            .await
            .expect("sweep");
        left
    }

    /// Asserts the published files are exactly `expected` (byte for byte) and that no
    /// staging, upload or temporary entry is left.
    fn assert_exactly(&self, expected: &BTreeMap<String, Bytes>) {
        let files: BTreeSet<String> = list_files(&self.data)
            .into_iter()
            .filter(|f| !f.starts_with(common::RESERVED))
            .collect();
        let want: BTreeSet<String> = expected.keys().cloned().collect();
        assert_eq!(files, want, "the published files");
        for (path, bytes) in expected {
            let stored = std::fs::read(self.data.join(path)).expect("published file");
            assert_eq!(
                sha256_hex(&stored),
                sha256_hex(bytes),
                "{path}: stored bytes"
            );
        }
        assert_eq!(
            staging(&self.data),
            BTreeSet::new(),
            "staging left after the sweep"
        );
    }
}

/// Entries of the upload bookkeeping (staging, uploads in progress, temporary dirs).
fn staging(data: &Path) -> BTreeSet<String> {
    ["staging", "uploads", "tmp"]
        .iter()
        .flat_map(|sub| {
            list_entries_under(&data.join(common::RESERVED).join(sub))
                .into_iter()
                .map(move |e| format!("{sub}/{e}"))
        })
        .collect()
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(8)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

fn bearer() -> String {
    format!("Bearer {KEY}")
}

fn assert_file(r: &Reply, path: &str, size: usize) {
    assert!(
        matches!(r.status, 200 | 201),
        "{path}: {} {}",
        r.status,
        r.body
    );
    assert_eq!(
        r.file()["filesize"].as_u64(),
        Some(size as u64),
        "{path}: {}",
        r.body
    );
}

/// One upload of the mix: a simple PUT or a chunked upload, then a whole GET and a ranged GET
/// that must return exactly the file's bytes.
async fn upload_and_verify(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    file: &Bytes,
    chunked: bool,
) -> Tally {
    let url = format!("{base}/{path}");
    let retry = Retry::default();
    let mut tally = Tally::default();
    let reply = if chunked {
        let (r, t) = client::put_chunked(http, &url, &bearer(), file, 64 * KIB + 3, 3, retry).await;
        tally.add(t);
        r
    } else {
        client::put_whole(http, &url, &bearer(), file, retry, &mut tally).await
    };
    assert_file(&reply, path, file.len());
    let (status, got) = client::get(http, &url, None, retry, &mut tally).await;
    assert_eq!(status, 200, "{path}");
    assert_eq!(
        sha256_hex(&got),
        sha256_hex(file),
        "{path}: delivered bytes"
    );
    if file.len() > 10 {
        let range = 3..(file.len() as u64 - 5);
        let (status, got) = client::get(http, &url, Some(range.clone()), retry, &mut tally).await;
        assert_eq!(status, 206, "{path}");
        assert_eq!(
            got,
            file[range.start as usize..range.end as usize],
            "{path}: range"
        );
    }
    tally
}

/// While uploads run, GETs every path over and over: a reader sees 404 or the complete,
/// correct file — never a partial one. Returns how many whole answers it checked.
fn watch(
    http: reqwest::Client,
    base: String,
    files: Arc<BTreeMap<String, Bytes>>,
    stop: Arc<AtomicBool>,
    seen: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            for (path, bytes) in files.iter() {
                let Ok(res) = http.get(format!("{base}/{path}")).send().await else {
                    continue;
                };
                let status = res.status().as_u16();
                let Ok(body) = res.bytes().await else {
                    continue; // a read fault cut the body: the client sees an error, not a file
                };
                match status {
                    404 => {}
                    200 => {
                        assert_eq!(
                            body.len(),
                            bytes.len(),
                            "{path}: a partial file was visible"
                        );
                        assert_eq!(
                            sha256_hex(&body),
                            sha256_hex(bytes),
                            "{path}: wrong bytes visible"
                        );
                        seen.fetch_add(1, Ordering::Relaxed);
                    }
                    s if s >= 500 => {}
                    s => panic!("{path}: unexpected {s} to a GET"),
                }
            }
        }
    })
}

/// 5 % of every storage call fails (I/O errors; a commit or publish fails after taking
/// effect half of those times). 32 uploads — simple and chunked, in parallel, each with a
/// retrying client — all end with the right bytes; a watcher never sees a partial file; after
/// the sweep nothing is left in staging. (32, not 24: the ~1,400 storage calls reliably give
/// more than the 50 faults asked for below; 24 made ~1,100 calls and 49–55 faults.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_faults_retrying_clients_finish_every_upload() {
    let seed: u64 = std::env::var("FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_122);
    let server = Server::start(|s| s.fail_rate(&Op::ALL, 0.05, seed)).await;
    let mut files = BTreeMap::new();
    for i in 0..32u64 {
        let size = match i % 4 {
            0 => 0,
            1 => 1 + (i as usize * 7919) % (4 * KIB),
            2 => 200 * KIB + i as usize,
            _ => 700 * KIB + 13 * i as usize,
        };
        files.insert(
            format!("faults/{i:02}.bin"),
            Bytes::from(pattern(size, i + seed)),
        );
    }
    let files = Arc::new(files);
    let http = http();
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(AtomicU64::new(0));
    let watcher = watch(
        http.clone(),
        server.base.clone(),
        files.clone(),
        stop.clone(),
        seen.clone(),
    );
    let tallies: Vec<Tally> =
        futures_util::future::join_all(files.iter().enumerate().map(|(i, (path, bytes))| {
            let (http, base) = (http.clone(), server.base.clone());
            async move { upload_and_verify(&http, &base, path, bytes, i % 2 == 1).await }
        }))
        .await;
    stop.store(true, Ordering::Relaxed);
    watcher.await.expect("the watcher saw no partial file");
    let mut tally = Tally::default();
    tallies.into_iter().for_each(|t| tally.add(t));
    let injected = server.storage.injected_total();
    let leaked = server.disarm_and_sweep().await;
    server.assert_exactly(&files);
    eprintln!(
        "FIGURES faults: seed {seed}: {} uploads verified; {injected} faults injected ({} after \
         the call took effect) in {} storage calls: {:?}; client: {} requests, {} retries after \
         5xx, {} after transport errors; {} whole GETs checked by the watcher; {} bookkeeping \
         entries left before the sweep, 0 after",
        files.len(),
        server.storage.injected_after(),
        server.storage.calls().values().sum::<u64>(),
        server.storage.injected(),
        tally.requests,
        tally.retried_5xx,
        tally.retried_transport,
        seen.load(Ordering::Relaxed),
        leaked.len(),
    );
    assert!(
        injected >= 50,
        "the schedule injected too few faults to mean anything: {injected}"
    );
    assert!(tally.retried_5xx > 0, "no client ever had to retry");
}

/// Each operation in turn fails at chosen calls (the 1st and the 3rd): a simple and a
/// chunked upload still end with the right bytes, and nothing is left after the sweep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_operation_failing_at_chosen_calls() {
    let http = http();
    let mut injected = 0;
    let mut struck = BTreeSet::new();
    for op in Op::ALL {
        let server = Server::start(|s| s.fail_at(op, 1).fail_at(op, 3)).await;
        let small = Bytes::from(pattern(3 * KIB + 1, op as u64));
        let big = Bytes::from(pattern(300 * KIB + 7, 100 + op as u64));
        upload_and_verify(&http, &server.base, "chosen/small.bin", &small, false).await;
        upload_and_verify(&http, &server.base, "chosen/big.bin", &big, true).await;
        injected += server.storage.injected_total();
        if server.storage.injected_total() > 0 {
            struck.insert(format!("{op:?}"));
        }
        server.disarm_and_sweep().await;
        server.assert_exactly(&BTreeMap::from([
            ("chosen/small.bin".to_owned(), small),
            ("chosen/big.bin".to_owned(), big),
        ]));
    }
    eprintln!(
        "FIGURES faults: {} operations each set to fail at chosen calls; {injected} faults \
         injected and survived, in the {} operations an upload and a delivery use: {struck:?}",
        Op::ALL.len(),
        struck.len()
    );
    assert!(
        struck.len() >= 12,
        "too few operations were exercised: {struck:?}"
    );
}

/// A commit fails and so does the abort that should discard the upload: the staged bytes
/// outlive the request (never visible as a file), and the sweeper frees them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_abort_leaks_only_until_the_sweeper() {
    let server = Server::start(|s| s.fail_at(Op::Commit, 1).fail_at(Op::Abort, 1)).await;
    let http = http();
    let file = Bytes::from(pattern(3 << 20, 9));
    let r = client::once(
        http.put(server.url("leak/a.bin"))
            .header("authorization", bearer())
            .body(file.clone()),
    )
    .await;
    assert_eq!(r.status, 500);
    let body = r.body;
    assert_eq!(common::kind(&body), Some("internal_error"), "{body}");
    assert!(
        !body.to_string().contains(server.data.to_str().unwrap()),
        "the error names a path: {body}"
    );
    assert_eq!(
        server.storage.injected().get(&Op::Abort),
        Some(&1),
        "the abort was attempted and failed"
    );
    assert_eq!(
        http.get(server.url("leak/a.bin"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        404
    );
    let leaked = server.disarm_and_sweep().await;
    assert!(
        !leaked.is_empty(),
        "the failed abort left the staged upload"
    );
    server.assert_exactly(&BTreeMap::new());
}

/// ENOSPC: a write that finds the storage full is answered 507 `insufficient_storage`; a
/// simple upload leaves nothing (no file, no staging), a chunk's range does not count; once
/// there is room again, the same requests succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_full_is_507_and_nothing_half_kept() {
    let server = Server::start(|s| s.fault(Fault::Full).fail_rate(&[Op::Write], 1.0, 1)).await;
    let http = http();
    let file = Bytes::from(pattern(2 << 20, 507));
    let no_retry = Retry {
        attempts: 1,
        backoff: Duration::ZERO,
    };
    let mut tally = Tally::default();
    // A simple upload: 507, nothing visible, nothing staged.
    let r = client::once(
        http.put(server.url("full/whole.bin"))
            .header("authorization", bearer())
            .body(file.clone()),
    )
    .await;
    assert_eq!(r.status, 507);
    let body = r.body;
    assert_eq!(common::kind(&body), Some("insufficient_storage"), "{body}");
    assert_eq!(
        http.get(server.url("full/whole.bin"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        404
    );
    assert!(
        wait_empty(&server.data).await,
        "staging left: {:?}",
        staging(&server.data)
    );
    // A chunk: 507, and its range is not counted.
    let chunk = client::once(
        http.put(server.url("full/chunked.bin"))
            .header("authorization", bearer())
            .header(
                "content-range",
                format!("bytes 0-{}/{}", (1 << 20) - 1, file.len()),
            )
            .body(file.slice(0..1 << 20)),
    )
    .await;
    assert_eq!(chunk.status, 507, "{}", chunk.body);
    assert_eq!(
        common::kind(&chunk.body),
        Some("insufficient_storage"),
        "{}",
        chunk.body
    );
    let st = client::status(
        &http,
        &server.url("full/chunked.bin"),
        &bearer(),
        file.len(),
        no_retry,
        &mut tally,
    )
    .await;
    assert_eq!(st.status, 202, "{}", st.body);
    assert_eq!(st.file()["ranges"], serde_json::json!([]), "{}", st.body);
    // Room again: both uploads succeed.
    server.storage.arm(false);
    let r = client::put_whole(
        &http,
        &server.url("full/whole.bin"),
        &bearer(),
        &file,
        no_retry,
        &mut tally,
    )
    .await;
    assert_file(&r, "full/whole.bin", file.len());
    let (r, _) = client::put_chunked(
        &http,
        &server.url("full/chunked.bin"),
        &bearer(),
        &file,
        1 << 20,
        2,
        no_retry,
    )
    .await;
    assert_file(&r, "full/chunked.bin", file.len());
    server.disarm_and_sweep().await;
    server.assert_exactly(&BTreeMap::from([
        ("full/whole.bin".to_owned(), file.clone()),
        ("full/chunked.bin".to_owned(), file),
    ]));
}

async fn wait_empty(data: &Path) -> bool {
    for _ in 0..200 {
        if staging(data).is_empty() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// Upload sessions (PROTOCOL §7) keep their state in the records API: each records operation
/// fails at its 1st, 2nd or 3rd call while a client creates a session and sends a multipart
/// single upload, retrying on 5xx. The upload ends either with its Media object (bytes
/// delivered exactly) or — when a failure struck after the session was consumed — with 410
/// on the retry, and then the bytes were kept all the same: nothing is lost or half-kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_records_failing_at_chosen_calls() {
    let http = http();
    let (mut injected, mut delivered, mut consumed_then_gone) = (0, 0, 0);
    let mut struck = BTreeSet::new();
    for op in [
        Op::PutRecord,
        Op::GetRecord,
        Op::DeleteRecord,
        Op::ListRecords,
    ] {
        for nth in 1..=3 {
            let server = Server::start(|s| s.fail_at(op, nth)).await;
            let mut tally = Tally::default();
            let created = client::send(
                || {
                    http.post(server.url("uploads"))
                        .header("authorization", bearer())
                        .header("content-type", "application/json")
                        .body(r#"{"filename":"s.bin"}"#)
                },
                Retry::default(),
                &mut tally,
                "POST /uploads",
            )
            .await;
            assert_eq!(created.status, 200, "{op:?}#{nth}: {}", created.body);
            let url = created.body["data"]["url"]
                .as_str()
                .expect("data.url")
                .to_owned();
            let file = pattern(50_000 + nth as usize, op as u64);
            let boundary = "faultsBoundary7";
            let mut form = format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; \
                 filename=\"s.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .into_bytes();
            form.extend_from_slice(&file);
            form.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
            let form = Bytes::from(form);
            let done = client::send(
                || {
                    http.post(&url)
                        .header(
                            "content-type",
                            format!("multipart/form-data; boundary={boundary}"),
                        )
                        .body(form.clone())
                },
                Retry::default(),
                &mut tally,
                "POST form",
            )
            .await;
            match done.status {
                200 => {
                    let source = done.body["data"]["sources"][0]["url"]
                        .as_str()
                        .expect("url");
                    let (code, got) =
                        client::get(&http, source, None, Retry::default(), &mut tally).await;
                    assert_eq!((code, got == file), (200, true), "{op:?}#{nth}");
                    delivered += 1;
                }
                410 if tally.retried_5xx > 0 => {
                    // Consumed by an attempt whose answer was a 5xx: its bytes are kept.
                    let kept = list_files(&server.data)
                        .into_iter()
                        .filter(|f| !f.starts_with(common::RESERVED))
                        .any(|f| std::fs::read(server.data.join(&f)).is_ok_and(|b| b == file));
                    assert!(kept, "{op:?}#{nth}: consumed, but the bytes are gone");
                    consumed_then_gone += 1;
                }
                s => panic!("{op:?}#{nth}: {s} {}", done.body),
            }
            injected += server.storage.injected_total();
            if server.storage.injected_total() > 0 {
                struck.insert(format!("{op:?}#{nth}"));
            }
            server.disarm_and_sweep().await;
            assert_eq!(
                staging(&server.data),
                BTreeSet::new(),
                "{op:?}#{nth}: staging left"
            );
        }
    }
    eprintln!(
        "FIGURES faults: sessions: records operations failing at chosen calls: {injected} faults \
         injected; {delivered} uploads delivered, {consumed_then_gone} consumed by a failed \
         attempt (410 on retry, bytes kept); struck: {struck:?}"
    );
    // A single upload reads and writes records; it deletes or lists none (the sweeper does).
    for op in ["PutRecord", "GetRecord"] {
        assert!(
            struck.iter().any(|s| s.starts_with(op)),
            "no {op} fault struck: {struck:?}"
        );
    }
}

/// A publication whose bookkeeping cannot be deleted afterwards still succeeds (the file is
/// there); the sweeper's abort then clears the records and leaves the file alone. (The
/// crate's coordination, over MemoryStorage's records.)
#[tokio::test]
async fn published_even_if_its_records_stay() {
    use tower_uploads::path::FilePath;
    use tower_uploads::storage::{Claim, PublishOptions, Storage, StorageExt, UploadSpec};
    let storage = Arc::new(
        FaultyStorage::new(tower_uploads::MemoryStorage::new()).fail_rate(
            &[Op::DeleteRecord],
            1.0,
            1,
        ),
    );
    let path = FilePath::new("kept.bin").unwrap();
    let up = storage
        .open_upload(&path, UploadSpec::Resumable { total: 2 })
        .await
        .unwrap();
    let mut w = storage.writer(&up.id, 0).await.unwrap();
    w.write(Bytes::from_static(b"ok")).await.unwrap();
    w.commit().await.unwrap();
    assert_eq!(storage.claim(&up.id).await.unwrap(), Claim::Won);
    let meta = storage
        .publish(&up.id, &path, 2, PublishOptions::default())
        .await;
    assert_eq!(meta.unwrap().size, 2);
    assert_eq!(
        storage.list_uploads().await.unwrap().len(),
        1,
        "records left"
    );
    storage.arm(false);
    storage.abort(&up.id).await.unwrap();
    assert!(storage.list_uploads().await.unwrap().is_empty());
    assert_eq!(storage.head(&path).await.unwrap().unwrap().size, 2);
}
