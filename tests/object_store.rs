//! `ObjectStoreStorage` against a real S3-compatible server, Garage on loopback, which
//! ignores conditional writes: the records, and so every exactly-once decision, in
//! PostgreSQL (`PostgresRecords`, a fresh database per test), or in the one process
//! (`single_instance`).
//!
//! Garage is found from `TOWER_UPLOADS_TEST_S3` (`s3://bucket`) and the `AWS_*` variables
//! (`tests/garage/start.sh` prints them; `.ci/run` exports them), or, when those are unset and
//! `garage` is on PATH, started here once per test binary with `tests/garage/start.sh`;
//! PostgreSQL likewise (`tests/common/postgres.rs`). Without either the tests say so and pass
//! only when `CI` is unset; with `CI` set they fail.
#![cfg(all(feature = "object-store", feature = "postgres"))]

mod common;

use bytes::Bytes;
use common::postgres::{fresh_database, postgres_or_skip};
use common::process::DemoServer;
use common::{pattern, sha256};
use futures_util::TryStreamExt;
use object_store::multipart::MultipartStore;
use object_store::{ObjectStore, PutPayload};
use serde_json::Value;
use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tower_uploads::path::FilePath;
use tower_uploads::storage::{
    Claim, ObjectStoreStorage, PART_SIZE, PostgresRecords, RecordKey, RecordMode, Storage,
    StorageError, StorageExt, UploadSpec, conformance,
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

/// Garage and PostgreSQL, or `None` (skip) when either is missing and `CI` is unset.
fn servers_or_skip(test: &str) -> Option<(&'static HashMap<String, String>, &'static str)> {
    Some((garage_or_skip(test)?, postgres_or_skip(test)?))
}

/// Garage's bucket under `prefix`, with no coordinator chosen.
fn bare(env: &HashMap<String, String>, prefix: &str) -> ObjectStoreStorage {
    let url = format!("{}/{prefix}", env["TOWER_UPLOADS_TEST_S3"]);
    ObjectStoreStorage::from_url_opts(&url, s3_vars(env)).expect("storage on Garage")
}

/// An instance on Garage's bucket under `prefix` with its records in the database at `db`
/// (each call: its own S3 client and connection pool, like another server instance).
async fn instance(
    env: &HashMap<String, String>,
    prefix: &str,
    db: &str,
) -> Arc<ObjectStoreStorage> {
    let records = PostgresRecords::connect(db).await.expect("connect");
    Arc::new(bare(env, prefix).with_records(Arc::new(records)))
}

/// The one instance on Garage's bucket under `prefix`, deciding in process.
fn single(env: &HashMap<String, String>, prefix: &str) -> Arc<ObjectStoreStorage> {
    Arc::new(bare(env, prefix).single_instance())
}

fn prefix(name: &str) -> String {
    format!("test-{name}-{}", tower_uploads::file::random_id(""))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_on_garage_with_postgres() {
    let Some((env, pg)) = servers_or_skip("conformance_on_garage_with_postgres") else {
        return;
    };
    // Check by check, each on a fresh prefix and database: a failure names its check.
    for check in conformance::CHECKS {
        let prefix = prefix(&format!("conformance-{}", check.name.replace('_', "-")));
        let db = fresh_database(pg).await;
        check.run(instance(env, &prefix, &db).await).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_on_garage_single_instance() {
    let Some(env) = garage_or_skip("conformance_on_garage_single_instance") else {
        return;
    };
    for check in conformance::CHECKS {
        let prefix = prefix(&format!("single-{}", check.name.replace('_', "-")));
        check.run(single(env, &prefix)).await;
    }
}

/// Garage accepts `If-None-Match: *` and `If-Match` and ignores them: the startup probe says
/// so, and a storage left to decide on the store's conditional writes refuses every record
/// operation, saying why, rather than trusting them.
#[tokio::test]
async fn garage_ignores_conditional_writes() {
    let Some(env) = garage_or_skip("garage_ignores_conditional_writes") else {
        return;
    };
    let storage = bare(env, &prefix("probe"));
    let found = storage
        .probe_conditional_writes()
        .await
        .expect("the probe ran");
    assert_eq!(found, tower_uploads::storage::ConditionalWrites::Ignored);
    let key = RecordKey::new("sessions/s1").unwrap();
    let refused = storage
        .put_record(&key, Bytes::from_static(b"x"), RecordMode::Create)
        .await
        .expect_err("not trusted");
    let message = refused.to_string();
    assert!(
        message.contains("ignores conditional writes")
            && message.contains("with_records")
            && message.contains("single_instance"),
        "{message}"
    );
}

/// The demo server on Garage with neither `--coordinator` nor `--single-instance` probes the
/// store, says that it ignores conditional writes, names both flags, and exits 2 before
/// listening.
#[test]
fn demo_server_refuses_a_store_that_ignores_conditional_writes() {
    let Some(env) = garage_or_skip("demo_server_refuses_a_store_that_ignores_conditional_writes")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = format!("{}/{}", env["TOWER_UPLOADS_TEST_S3"], prefix("refused"));
    let out = Command::new(common::server_binary())
        .args(["--listen", "127.0.0.1:0", "--store", &store, "--data"])
        .arg(dir.path())
        .envs(s3_vars(env))
        .stdin(Stdio::null())
        .output()
        .expect("run the demo server");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("listening on"),
        "it never listened"
    );
    for words in [
        "ignores conditional writes",
        "--coordinator",
        "--single-instance",
    ] {
        assert!(stderr.contains(words), "{words:?} in {stderr}");
    }
}

/// Many claimers on two storage instances (two S3 clients and two connection pools, as two
/// servers would have): one winner. Then many create-only records from both: one winner.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_once_across_instances() {
    let Some((env, pg)) = servers_or_skip("exactly_once_across_instances") else {
        return;
    };
    let p = prefix("claims");
    let db = fresh_database(pg).await;
    let a: Arc<dyn Storage> = instance(env, &p, &db).await;
    let b: Arc<dyn Storage> = instance(env, &p, &db).await;
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

/// A writer that dies mid-chunk leaves parts of the upload's multipart upload in the bucket
/// (its grid recorded); aborting the upload (what the sweeper does once the TTL has passed)
/// aborts it and leaves nothing behind, in the bucket or in the records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_multipart_is_swept() {
    let Some(env) = garage_or_skip("abandoned_multipart_is_swept") else {
        return;
    };
    let p = prefix("sweep");
    let s = single(env, &p);
    let path = FilePath::new("big.bin").unwrap();
    let total = (3 * PART_SIZE) as u64;
    let up = s
        .open_upload(&path, UploadSpec::Resumable { total })
        .await
        .unwrap();
    let mut w = s.writer(&up.id, 0).await.unwrap();
    // Past 16 MiB with no grid: an 8 MiB grid, two parts sent.
    w.write(Bytes::from(pattern(2 * PART_SIZE + 10, 7)))
        .await
        .unwrap();
    std::mem::forget(w); // a process killed mid-chunk: no drop, no commit
    let bucket = raw_bucket(env);
    let under = prefix_path(&p).join(".tower-uploads").join("uploads");
    let grid = RecordKey::new(format!("os/{}/grid", up.id.0)).unwrap();
    let grid: Value =
        serde_json::from_slice(&s.get_record(&grid).await.unwrap().expect("a grid").value).unwrap();
    let key = prefix_path(&p)
        .join(".tower-uploads")
        .join("uploads")
        .join(up.id.0.as_str())
        .join("file");
    let mp_id = grid["mpu"].as_str().unwrap().to_owned();
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
    let os = RecordKey::new("os").unwrap();
    let records = s.list_records(&os).await.unwrap();
    assert!(records.is_empty(), "no part records left: {records:?}");
}

// --- three demo servers on one bucket, coordinated by PostgreSQL ---------------------------

/// A demo server process on the bucket under `prefix`, its records in the database at `db`
/// (SIGKILL when dropped).
fn server(
    env: &HashMap<String, String>,
    prefix: &str,
    db: &str,
    unused_dir: &std::path::Path,
) -> DemoServer {
    let store = format!("{}/{prefix}", env["TOWER_UPLOADS_TEST_S3"]);
    let vars: Vec<_> = s3_vars(env).collect();
    DemoServer::start_env(unused_dir, &["--store", &store, "--coordinator", db], &vars)
}

/// Three demo servers on one bucket and one database.
struct Three {
    servers: Vec<DemoServer>,
    env: &'static HashMap<String, String>,
    prefix: String,
    db: String,
    dir: tempfile::TempDir, // --data, unused: --store wins
}

impl Three {
    async fn start(env: &'static HashMap<String, String>, pg: &str, name: &str) -> Three {
        let (prefix, db) = (prefix(name), fresh_database(pg).await);
        let dir = tempfile::tempdir().unwrap();
        let servers = (0..3)
            .map(|_| server(env, &prefix, &db, dir.path()))
            .collect();
        Three {
            servers,
            env,
            prefix,
            db,
            dir,
        }
    }

    fn base(&self, i: usize) -> &str {
        &self.servers[i].base
    }

    /// SIGKILLs instance `i` and starts another in its place.
    fn restart(&mut self, i: usize) {
        let fresh = server(self.env, &self.prefix, &self.db, self.dir.path());
        drop(std::mem::replace(&mut self.servers[i], fresh));
    }
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

/// The first object whose key contains `part` under `under`, waiting up to 10 s for it.
async fn appears(
    bucket: &object_store::aws::AmazonS3,
    under: &object_store::path::Path,
    part: &str,
) -> Option<object_store::path::Path> {
    for _ in 0..200 {
        let listed: Vec<_> = bucket.list(Some(under)).try_collect().await.unwrap();
        if let Some(m) = listed.iter().find(|o| o.location.as_ref().contains(part)) {
            return Some(m.location.clone());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// Three demo servers share one bucket and one database. The chunks of one upload (9 MiB: a
/// part grid, so each goes straight into the upload's multipart upload) go to all three, in
/// parallel and out of order; one instance is SIGKILLed in the middle of a double chunk, one
/// part of it sent, its claim on the next one left behind, and restarted; the last chunk is
/// sent to all three at once: exactly one 201, the same File from all, the right sha256 from
/// every instance, and nothing left in the bucket or the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_servers_one_bucket_survive_a_kill() {
    let Some((env, pg)) = servers_or_skip("three_servers_one_bucket_survive_a_kill") else {
        return;
    };
    let mut three = Three::start(env, pg, "e2e").await;
    let records = PostgresRecords::connect(&three.db).await.unwrap();
    let http = client();
    let chunk_size = 9 * MIB;
    let total = 6 * chunk_size - 12_345; // 6 chunks, the last one shorter
    let data = Arc::new(pattern(total, 42));
    let path = "videos/e2e.bin";
    let ranges: Vec<_> = (0..total)
        .step_by(chunk_size)
        .map(|s| s..(s + chunk_size).min(total))
        .collect();

    // Chunks 5, 0 and 1 at once, one to each instance.
    let (r5, r0, r1) = tokio::join!(
        chunk(&http, three.base(0), path, &data, ranges[5].clone()),
        chunk(&http, three.base(1), path, &data, ranges[0].clone()),
        chunk(&http, three.base(2), path, &data, ranges[1].clone()),
    );
    for (i, (status, body)) in [(5, r5), (0, r0), (1, r1)] {
        assert_eq!(status, 202, "chunk {i}: {body}");
    }

    // Chunks 2 and 3 as one request to instance 1, killed once part 2 is sent and part 3
    // claimed: a part sent by no committed writer, and a claim nobody will release.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(futures_util::stream::unfold(rx, |mut rx| async {
        rx.recv().await.map(|item| (item, rx))
    }));
    let double = ranges[2].start..ranges[3].end;
    let pending = {
        let req = http
            .put(format!("{}/{path}", three.base(1)))
            .bearer_auth(KEY)
            .header(
                "Content-Range",
                format!("bytes {}-{}/{total}", double.start, double.end - 1),
            )
            .body(body);
        tokio::spawn(req.send())
    };
    let cut = double.start + 2 * chunk_size - MIB / 2;
    for piece in data[double.start..cut].chunks(MIB) {
        tx.send(Ok(Bytes::copy_from_slice(piece))).await.unwrap();
    }
    let os = RecordKey::new("os").unwrap();
    let mut claimed = false;
    for _ in 0..200 {
        let keys = tower_uploads::storage::RecordStore::list_records(&records, &os)
            .await
            .unwrap();
        if keys.iter().any(|k| k.as_str().ends_with("/p/2")) {
            claimed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(claimed, "the instance claimed part 2 and sent it");
    three.restart(1); // SIGKILL, and a new instance in its place
    drop(tx);
    let _ = pending.await; // the request died with its server

    // A status query on instance 2: 0, 1 and 5 are in, 2 and 3 are not.
    let res = http
        .put(format!("{}/{path}", three.base(2)))
        .bearer_auth(KEY)
        .header("Accept-Version", "2025-08-20")
        .header("Content-Range", format!("bytes */{total}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 202);
    let progress: Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    let want = serde_json::json!([[0, ranges[1].end - 1], [ranges[5].start, total - 1]]);
    assert_eq!(progress["ranges"], want, "{progress}");

    // Chunk 2 to the restarted instance while chunk 3 goes to instance 0.
    let (r2, r3) = tokio::join!(
        chunk(&http, three.base(1), path, &data, ranges[2].clone()),
        chunk(&http, three.base(0), path, &data, ranges[3].clone())
    );
    for (i, (status, body)) in [(2, r2), (3, r3)] {
        assert_eq!(status, 202, "chunk {i}: {body}");
    }
    // The last chunk (4) to all three at once: one 201.
    let (ra, rb, rc) = tokio::join!(
        chunk(&http, three.base(0), path, &data, ranges[4].clone()),
        chunk(&http, three.base(1), path, &data, ranges[4].clone()),
        chunk(&http, three.base(2), path, &data, ranges[4].clone()),
    );
    let finals = [&ra, &rb, &rc];
    let statuses: Vec<u16> = finals.iter().map(|r| r.0).collect();
    assert_eq!(
        statuses.iter().filter(|&&s| s == 201).count(),
        1,
        "exactly one 201: {statuses:?} ({} / {} / {})",
        ra.1,
        rb.1,
        rc.1
    );
    for (status, body) in finals {
        assert!(
            [200, 201].contains(status),
            "the racing last chunks end in 200/201: {status} {body}"
        );
        assert_eq!(body["filesize"].as_u64(), Some(total as u64), "{body}");
        assert_eq!(body["id"], ra.1["id"], "all answer the same File");
    }

    let want = sha256(&data);
    for i in 0..3 {
        let res = http
            .get(format!("{}/{path}", three.base(i)))
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.headers()["content-type"],
            "application/octet-stream",
            "the type the finalizer found, from the file's sidecar"
        );
        let got = res.bytes().await.unwrap();
        assert_eq!(got.len(), total);
        assert_eq!(sha256(&got), want, "the published bytes from instance {i}");
    }
    // Ranged delivery from the store.
    let part = http
        .get(format!("{}/{path}", three.base(1)))
        .header("Range", "bytes=10000000-10000099")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status().as_u16(), 206);
    assert_eq!(part.bytes().await.unwrap(), &data[10_000_000..10_000_100]);
    // Nothing of the upload is left, in the bucket or in the database.
    let s = instance(env, &three.prefix, &three.db).await;
    assert!(s.list_uploads().await.unwrap().is_empty(), "no upload left");
    let bucket = raw_bucket(env);
    let uploads = prefix_path(&three.prefix)
        .join(".tower-uploads")
        .join("uploads");
    let leftover: Vec<_> = bucket.list(Some(&uploads)).try_collect().await.unwrap();
    assert!(leftover.is_empty(), "no bookkeeping left: {leftover:?}");
    let left = tower_uploads::storage::RecordStore::list_records(&records, &os)
        .await
        .unwrap();
    assert!(left.is_empty(), "no part records left: {left:?}");
}

/// An instance SIGKILLed while it publishes an upload (its claim held, the file being
/// staged) is taken over by another within the claim's lease (15 s), not minutes: the last
/// chunk retried on another instance waits for the lease to end, then publishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_finalizer_is_taken_over_in_seconds() {
    let Some((env, pg)) = servers_or_skip("a_killed_finalizer_is_taken_over_in_seconds") else {
        return;
    };
    let mut three = Three::start(env, pg, "takeover").await;
    let http = client();
    // Chunks below S3's smallest part: chunk objects, and publication streams 36 MiB
    // through the server (the fallback), long enough to be killed in.
    let chunk_size = 4 * MIB;
    let total = 9 * chunk_size;
    let data = Arc::new(pattern(total, 7));
    let path = "takeover.bin";
    let ranges: Vec<_> = (0..total)
        .step_by(chunk_size)
        .map(|s| s..(s + chunk_size).min(total))
        .collect();
    let last_i = ranges.len() - 1;
    for r in &ranges[..last_i] {
        let (status, body) = chunk(&http, three.base(0), path, &data, r.clone()).await;
        assert_eq!(status, 202, "{body}");
    }
    // The last chunk to instance 1, which claims and starts publishing: killed once the
    // staged file's multipart upload appears.
    let last = http
        .put(format!("{}/{path}", three.base(1)))
        .bearer_auth(KEY)
        .header(
            "Content-Range",
            format!("bytes {}-{}/{total}", ranges[last_i].start, total - 1),
        )
        .body(Bytes::copy_from_slice(&data[ranges[last_i].clone()]))
        .send();
    let last = tokio::spawn(last); // dies with its server
    let bucket = raw_bucket(env);
    let uploads = prefix_path(&three.prefix)
        .join(".tower-uploads")
        .join("uploads");
    appears(&bucket, &uploads, "/mp/final-")
        .await
        .expect("the finalizer stages the file");
    three.restart(1);
    let _ = last.await;

    let started = std::time::Instant::now();
    let (status, body) = chunk(&http, three.base(2), path, &data, ranges[last_i].clone()).await;
    let took = started.elapsed();
    assert_eq!(status, 201, "the retried last chunk publishes: {body}");
    assert!(
        took < Duration::from_secs(25),
        "taken over within the 15 s lease and a little: {took:?}"
    );
    eprintln!("a killed finalizer's upload was taken over in {took:?}");
    let got = http
        .get(format!("{}/{path}", three.base(0)))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(sha256(&got), sha256(&data));
}

/// One upload session key spent on three instances at once: exactly one 200, the others
/// 410; and one path published create-only (`If-None-Match: *`) by three at once: exactly
/// one 201, the others 412.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessions_and_create_only_across_three() {
    let Some((env, pg)) = servers_or_skip("sessions_and_create_only_across_three") else {
        return;
    };
    let three = Three::start(env, pg, "once").await;
    let http = client();
    let res = http
        .post(format!("{}/uploads", three.base(0)))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    let url = v["data"]["url"].as_str().expect("a session url").to_owned();
    let form = |who: usize| {
        let b = format!(
            "--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f{who}.txt\"\r\n\
             Content-Type: text/plain\r\n\r\nfrom {who}\r\n--b--\r\n"
        );
        http.post(url.replace(three.base(0), three.base(who)))
            .header("content-type", "multipart/form-data; boundary=b")
            .body(b)
            .send()
    };
    let (a, b, c) = tokio::join!(form(0), form(1), form(2));
    let mut statuses: Vec<u16> = [a, b, c]
        .into_iter()
        .map(|r| r.unwrap().status().as_u16())
        .collect();
    statuses.sort();
    assert_eq!(statuses, [200, 410, 410], "one spend of the key");

    let put = |who: usize| {
        http.put(format!("{}/once/created.txt", three.base(who)))
            .bearer_auth(KEY)
            .header("If-None-Match", "*")
            .body(format!("from {who}"))
            .send()
    };
    let (a, b, c) = tokio::join!(put(0), put(1), put(2));
    let mut statuses: Vec<u16> = [a, b, c]
        .into_iter()
        .map(|r| r.unwrap().status().as_u16())
        .collect();
    statuses.sort();
    assert_eq!(statuses, [201, 412, 412], "one create-only publication");
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
