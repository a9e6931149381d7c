//! `ObjectStoreStorage` against a real S3-compatible server: Garage on loopback.
//!
//! Garage is found from `TOWER_UPLOADS_TEST_S3` (`s3://bucket`) and the `AWS_*` variables
//! (`tests/garage/start.sh` prints them; `.ci/run` exports them), or, when those are unset and
//! `garage` is on PATH, started here once per test binary with `tests/garage/start.sh`.
//! Without either the tests say so and pass only when `CI` is unset; with `CI` set they fail.
#![cfg(feature = "object-store")]

mod common;

use bytes::Bytes;
use common::process::DemoServer;
use common::{pattern, sha256};
use futures_util::TryStreamExt;
use object_store::multipart::MultipartStore;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde_json::Value;
use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tower_uploads::path::FilePath;
use tower_uploads::storage::{
    Claim, ObjectStoreStorage, PART_SIZE, RecordKey, RecordMode, Storage, StorageError, StorageExt,
    UploadSpec, conformance,
};

use common::KEY;
/// The variables `tests/garage/start.sh` sets for an S3 client.
const S3_VARS: [&str; 5] = [
    "AWS_ENDPOINT",
    "AWS_ALLOW_HTTP",
    "AWS_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
];

/// Garage's S3 variables out of `env`.
fn s3_vars(env: &HashMap<String, String>) -> impl Iterator<Item = (String, String)> + '_ {
    S3_VARS
        .iter()
        .filter_map(|k| env.get(*k).map(|v| (k.to_string(), v.clone())))
}
const MIB: usize = 1 << 20;

/// The variables that point at Garage (`AWS_*`, `TOWER_UPLOADS_TEST_S3`, `GARAGE_*`).
fn garage() -> Option<&'static HashMap<String, String>> {
    static GARAGE: OnceLock<Option<HashMap<String, String>>> = OnceLock::new();
    GARAGE
        .get_or_init(|| {
            if std::env::var_os("TOWER_UPLOADS_TEST_S3").is_some() {
                return Some(std::env::vars().collect());
            }
            let has_garage = Command::new("garage")
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !has_garage {
                return None;
            }
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/garage/start.sh");
            let out = Command::new("bash")
                .arg(script)
                .arg("--watch")
                .arg(std::process::id().to_string())
                .stderr(Stdio::inherit())
                .output()
                .expect("run tests/garage/start.sh");
            assert!(
                out.status.success(),
                "tests/garage/start.sh failed: {out:?}"
            );
            let vars = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.strip_prefix("export "))
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect::<HashMap<_, _>>();
            Some(vars)
        })
        .as_ref()
}

/// Garage's variables, or `None` (skip) when there is no Garage and `CI` is unset.
fn garage_or_skip(test: &str) -> Option<&'static HashMap<String, String>> {
    let g = garage();
    if g.is_none() {
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty());
        assert!(
            !ci,
            "{test}: no Garage (TOWER_UPLOADS_TEST_S3 unset and `garage` not on PATH); \
             CI must run these tests (`cargo install garage --locked`)"
        );
        eprintln!(
            "{test}: SKIPPED — no Garage (set TOWER_UPLOADS_TEST_S3 or put `garage` on PATH)"
        );
    }
    g
}

/// A storage on Garage's bucket under a fresh prefix (each call: its own S3 client, like
/// another server instance).
fn storage(env: &HashMap<String, String>, prefix: &str) -> Arc<ObjectStoreStorage> {
    let url = format!("{}/{prefix}", env["TOWER_UPLOADS_TEST_S3"]);
    Arc::new(ObjectStoreStorage::from_url_opts(&url, s3_vars(env)).expect("storage on Garage"))
}

fn prefix(name: &str) -> String {
    format!("test-{name}-{}", tower_uploads::file::random_id(""))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_on_garage() {
    let Some(env) = garage_or_skip("conformance_on_garage") else {
        return;
    };
    // Check by check, each on a fresh prefix: a failure names its check and promise.
    for check in conformance::CHECKS {
        let prefix = prefix(&format!("conformance-{}", check.name.replace('_', "-")));
        check.run(storage(env, &prefix)).await;
    }
}

/// Garage accepts `If-None-Match: *` and `If-Match` and ignores them: the startup probe says
/// so (issue 21: such a store needs a coordinator of its own).
#[tokio::test]
async fn garage_ignores_conditional_writes() {
    let Some(env) = garage_or_skip("garage_ignores_conditional_writes") else {
        return;
    };
    let storage = storage(env, &prefix("probe"));
    let found = storage
        .probe_conditional_writes()
        .await
        .expect("the probe ran");
    assert_eq!(found, tower_uploads::storage::ConditionalWrites::Ignored);
}

/// Many claimers on two storage instances (two S3 clients, as two servers would have): one
/// winner. Then many create-only records from both: one winner.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_once_across_instances() {
    let Some(env) = garage_or_skip("exactly_once_across_instances") else {
        return;
    };
    let p = prefix("claims");
    let a: Arc<dyn Storage> = storage(env, &p);
    let b: Arc<dyn Storage> = storage(env, &p);
    for round in 0..3 {
        let path = FilePath::new(format!("race/{round}.bin")).unwrap();
        let up = a
            .open_upload(&path, UploadSpec::Resumable { total: 4 })
            .await
            .unwrap();
        let joined = b
            .open_upload(&path, UploadSpec::Resumable { total: 4 })
            .await
            .unwrap();
        assert_eq!(
            joined.id, up.id,
            "the second instance joins the same upload"
        );
        let mut w = b.writer(&up.id, 0).await.unwrap();
        w.write(Bytes::from_static(b"abcd")).await.unwrap();
        assert_eq!(w.commit().await.unwrap(), vec![0..4]);
        let tasks: Vec<_> = (0..12)
            .map(|i| {
                let s = if i % 2 == 0 { a.clone() } else { b.clone() };
                let id = up.id.clone();
                tokio::spawn(async move { s.claim(&id).await.unwrap() })
            })
            .collect();
        let mut won = 0;
        for t in tasks {
            if t.await.unwrap() == Claim::Won {
                won += 1;
            }
        }
        assert_eq!(
            won, 1,
            "round {round}: exactly one claim wins across instances"
        );
        a.abort(&up.id).await.unwrap();
    }

    let key = RecordKey::new(format!("race/{}", tower_uploads::file::random_id(""))).unwrap();
    let tasks: Vec<_> = (0..12u8)
        .map(|i| {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            let key = key.clone();
            tokio::spawn(async move {
                s.put_record(&key, Bytes::from(vec![i]), RecordMode::Create)
                    .await
            })
        })
        .collect();
    let mut winners = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await.unwrap() {
            Ok(_) => winners.push(i as u8),
            Err(StorageError::PreconditionFailed) => {}
            Err(e) => panic!("create failed oddly: {e}"),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one create-only record wins across instances"
    );
    assert_eq!(
        b.get_record(&key)
            .await
            .unwrap()
            .map(|r| r.value)
            .as_deref(),
        Some(&winners[..])
    );
}

/// A writer that dies mid-chunk leaves a multipart upload in the bucket; aborting its upload
/// (what the sweeper does once the TTL has passed) aborts it and leaves nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_multipart_is_swept() {
    let Some(env) = garage_or_skip("abandoned_multipart_is_swept") else {
        return;
    };
    let p = prefix("sweep");
    let s = storage(env, &p);
    let path = FilePath::new("big.bin").unwrap();
    let total = (PART_SIZE + MIB) as u64;
    let up = s
        .open_upload(&path, UploadSpec::Resumable { total })
        .await
        .unwrap();
    let mut w = s.writer(&up.id, 0).await.unwrap();
    w.write(Bytes::from(pattern(PART_SIZE + 10, 7)))
        .await
        .unwrap();
    std::mem::forget(w); // a process killed mid-chunk: no drop, no commit
    let bucket = raw_bucket(env);
    let under = prefix_path(&p).join(".tower-uploads").join("uploads");
    let listed: Vec<_> = bucket.list(Some(&under)).try_collect().await.unwrap();
    let marker = listed
        .iter()
        .find(|o| o.location.as_ref().contains("/mp/"))
        .expect("the multipart upload is recorded");
    let marker: Value = serde_json::from_slice(
        &bucket
            .get(&marker.location)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    let key = object_store::path::Path::parse(marker["key"].as_str().unwrap()).unwrap();
    let mp_id = marker["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(1100)).await; // idle for longer than the TTL
    let listed = s.list_uploads().await.unwrap();
    assert!(listed.iter().any(|u| u.id == up.id), "the upload is listed");
    assert_eq!(s.received(&up.id).await.unwrap(), vec![], "nothing counted");
    let swept = tower_uploads::service::sweep(&(s.clone() as Arc<dyn Storage>), Duration::ZERO)
        .await
        .unwrap();
    assert!(swept.swept >= 1, "{swept:?}");
    assert!(s.list_uploads().await.unwrap().is_empty(), "nothing left");
    assert!(s.find_upload(&path).await.unwrap().is_none());
    let late = bucket
        .put_part(&key, &mp_id, 3, PutPayload::from_static(b"late"))
        .await;
    assert!(late.is_err(), "the multipart upload was aborted: {late:?}");
    let left: Vec<_> = bucket.list(Some(&under)).try_collect().await.unwrap();
    assert!(left.is_empty(), "nothing left: {left:?}");
}

// --- two demo servers on one bucket ------------------------------------------------------

/// A demo server process on the bucket under `prefix` (SIGKILL when dropped).
fn server(env: &HashMap<String, String>, prefix: &str, unused_dir: &std::path::Path) -> DemoServer {
    let store = format!("{}/{prefix}", env["TOWER_UPLOADS_TEST_S3"]);
    let vars: Vec<_> = s3_vars(env).collect();
    DemoServer::start_env(unused_dir, &["--store", &store], &vars)
}

fn client() -> reqwest::Client {
    common::client_with_timeout(Duration::from_secs(120))
}

/// PUTs `[start, end)` of `data` to `server` as a chunk; returns status and JSON body.
async fn chunk(
    http: &reqwest::Client,
    server: &str,
    path: &str,
    data: &Arc<Vec<u8>>,
    range: std::ops::Range<usize>,
) -> (u16, Value) {
    let res = http
        .put(format!("{server}/{path}"))
        .bearer_auth(KEY)
        .header("Accept-Version", "2025-08-20")
        .header(
            "Content-Range",
            format!("bytes {}-{}/{}", range.start, range.end - 1, data.len()),
        )
        .body(Bytes::copy_from_slice(&data[range]))
        .send()
        .await
        .expect("chunk request");
    let status = res.status().as_u16();
    let body =
        serde_json::from_slice(&res.bytes().await.unwrap_or_default()).unwrap_or(Value::Null);
    (status, body)
}

/// Two demo servers share one bucket; the chunks of one upload alternate between them; one
/// is killed mid-chunk (a multipart upload of it is left in flight); a restarted instance
/// carries on; the last chunks race on both. Exactly one 201, the right sha256 from both.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_one_bucket_survive_a_kill() {
    let Some(env) = garage_or_skip("two_servers_one_bucket_survive_a_kill") else {
        return;
    };
    let p = prefix("e2e");
    let dir = tempfile::tempdir().unwrap(); // --data, unused: --store wins
    let a = server(env, &p, dir.path());
    let b = server(env, &p, dir.path());
    let http = client();
    let chunk_size = 9 * MIB; // > PART_SIZE: chunks go in as multipart uploads
    let total = 5 * chunk_size - 12_345; // 5 chunks, the last one shorter
    let data = Arc::new(pattern(total, 42));
    let path = "videos/e2e.bin";
    let ranges: Vec<_> = (0..total)
        .step_by(chunk_size)
        .map(|s| s..(s + chunk_size).min(total))
        .collect();
    let mut statuses = Vec::new();

    // Chunks 4, 0 (out of order), alternating A, B.
    for (i, server) in [(4, &a.base), (0, &b.base)] {
        let (status, body) = chunk(&http, server, path, &data, ranges[i].clone()).await;
        assert_eq!(status, 202, "chunk {i}: {body}");
        statuses.push(status);
    }

    // Chunk 2 to B, killed after part of its body is in: its multipart upload stays open.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(futures_util::stream::unfold(rx, |mut rx| async {
        rx.recv().await.map(|item| (item, rx))
    }));
    let pending = {
        let req = http
            .put(format!("{}/{path}", b.base))
            .bearer_auth(KEY)
            .header(
                "Content-Range",
                format!("bytes {}-{}/{total}", ranges[2].start, ranges[2].end - 1),
            )
            .body(body);
        tokio::spawn(req.send())
    };
    // More than one part: B has begun a multipart upload for this chunk when it dies.
    let cut = ranges[2].start + PART_SIZE + MIB / 2;
    for piece in data[ranges[2].start..cut].chunks(MIB) {
        tx.send(Ok(Bytes::copy_from_slice(piece))).await.unwrap();
    }
    let bucket = raw_bucket(env);
    let markers = prefix_path(&p).join(".tower-uploads").join("uploads");
    let mut open_multipart = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let listed: Vec<_> = bucket.list(Some(&markers)).try_collect().await.unwrap();
        if let Some(m) = listed.iter().find(|o| o.location.as_ref().contains("/mp/")) {
            open_multipart = Some(m.location.clone());
            break;
        }
    }
    let marker = open_multipart.expect("the chunk's multipart upload is recorded in the bucket");
    let marker: Value =
        serde_json::from_slice(&bucket.get(&marker).await.unwrap().bytes().await.unwrap()).unwrap();
    drop(b); // SIGKILL
    drop(tx);
    let _ = pending.await; // the request dies with its server

    // A status query on A: 0 and 4 are in, 2 is not.
    let res = http
        .put(format!("{}/{path}", a.base))
        .bearer_auth(KEY)
        .header("Accept-Version", "2025-08-20")
        .header("Content-Range", format!("bytes */{total}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 202);
    let progress: Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    let want = serde_json::json!([[0, ranges[0].end - 1], [ranges[4].start, total - 1]]);
    assert_eq!(progress["ranges"], want, "{progress}");

    // A restarted B carries on: chunk 2 to it, chunk 1 to A.
    let b = server(env, &p, dir.path());
    // …in parallel with A: chunk 2 to the new B while chunk 1 goes to A.
    let (r2, r1) = tokio::join!(
        chunk(&http, &b.base, path, &data, ranges[2].clone()),
        chunk(&http, &a.base, path, &data, ranges[1].clone())
    );
    for (i, (status, body)) in [(2, r2), (1, r1)] {
        assert_eq!(status, 202, "chunk {i}: {body}");
        statuses.push(status);
    }
    // The last chunk (3) twice at once, once to each: one 201.
    let (ra, rb) = tokio::join!(
        chunk(&http, &a.base, path, &data, ranges[3].clone()),
        chunk(&http, &b.base, path, &data, ranges[3].clone())
    );
    statuses.push(ra.0);
    statuses.push(rb.0);
    assert_eq!(
        statuses.iter().filter(|&&s| s == 201).count(),
        1,
        "exactly one 201: {statuses:?} ({} / {})",
        ra.1,
        rb.1
    );
    let finals = [&ra, &rb];
    for (status, body) in finals {
        assert!(
            [200, 201].contains(status),
            "the racing last chunks end in 200/201: {status} {body}"
        );
        assert_eq!(body["filesize"].as_u64(), Some(total as u64), "{body}");
    }
    assert_eq!(ra.1["id"], rb.1["id"], "both answer the same File");

    let want = sha256(&data);
    for server in [&a.base, &b.base] {
        let got = http
            .get(format!("{server}/{path}"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(got.len(), total);
        assert_eq!(sha256(&got), want, "the published bytes from {server}");
    }
    // Ranged delivery from the store.
    let part = http
        .get(format!("{}/{path}", b.base))
        .header("Range", "bytes=10000000-10000099")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status().as_u16(), 206);
    assert_eq!(part.bytes().await.unwrap(), &data[10_000_000..10_000_100]);
    // Nothing of the upload is left in the bucket (the killed chunk's multipart included).
    let s = storage(env, &p);
    assert!(s.list_uploads().await.unwrap().is_empty(), "no upload left");
    let leftover: Vec<_> = bucket.list(Some(&markers)).try_collect().await.unwrap();
    assert!(leftover.is_empty(), "no bookkeeping left: {leftover:?}");
    // The killed writer's multipart upload was aborted with its upload.
    let key = object_store::path::Path::parse(marker["key"].as_str().unwrap()).unwrap();
    let id = marker["id"].as_str().unwrap().to_owned();
    let late = bucket
        .put_part(&key, &id, 5, PutPayload::from_static(b"late"))
        .await;
    assert!(
        late.is_err(),
        "the abandoned multipart upload is gone: {late:?}"
    );
}

/// A plain S3 client on Garage's bucket, to look at what the storage left there.
fn raw_bucket(env: &HashMap<String, String>) -> object_store::aws::AmazonS3 {
    let bucket = env["TOWER_UPLOADS_TEST_S3"].trim_start_matches("s3://");
    let mut b = object_store::aws::AmazonS3Builder::new().with_bucket_name(bucket);
    for (k, v) in env.iter().filter(|(k, _)| k.starts_with("AWS_")) {
        if let Ok(key) = k
            .to_ascii_lowercase()
            .parse::<object_store::aws::AmazonS3ConfigKey>()
        {
            b = b.with_config(key, v.clone());
        }
    }
    b.build().expect("s3 client")
}

fn prefix_path(prefix: &str) -> object_store::path::Path {
    object_store::path::Path::from(prefix)
}
