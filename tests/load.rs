//! Load: 200 concurrent clients against the demo server binary for a bounded time
//! (`LOAD_SECS`, default 50, after an 8 s warm-up: about a minute), mixing simple PUTs,
//! chunked uploads (parallel chunks, a chunk sent twice, some uploads abandoned half-way) and ranged GETs of finished files. Then:
//! every completed file has the right SHA-256 on disk and over HTTP, the abandoned uploads are
//! swept (`--upload-ttl 10`), and the server's open file descriptors go back to their idle
//! level. The server runs with the default allocator (no `MALLOC_*`); its resident memory
//! peaks at 64 MiB at most and is at most 32 MiB ten seconds after the load (issue "memory").
//!
//! Runs the release build of the demo server binary (built first if needed).

#[path = "support/client.rs"]
mod client;
mod common;

use bytes::Bytes;
use client::{Retry, Tally, sha256_hex};
use common::pattern;
use common::process::DemoServer as Demo;
use futures_util::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const KEY: &str = "load-test-key";
const CLIENTS: usize = 200;
const KIB: usize = 1 << 10;
static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A finished upload: its path and how to regenerate its bytes.
#[derive(Clone, Copy, Debug)]
struct Done {
    size: usize,
    seed: u64,
}

#[derive(Default, Debug)]
struct Counts {
    simple: u64,
    chunked: u64,
    abandoned: u64,
    ranged_gets: u64,
    tally: Tally,
}

struct Shared {
    done: Mutex<BTreeMap<String, Done>>,
    counts: Mutex<Counts>,
}

fn bytes_of(d: Done) -> Bytes {
    Bytes::from(pattern(d.size, d.seed))
}

/// One client: until `deadline`, picks an action at random (seeded per client).
async fn run_client(
    id: usize,
    base: Arc<str>,
    http: reqwest::Client,
    shared: Arc<Shared>,
    deadline: Instant,
) {
    let mut rng = StdRng::seed_from_u64(9_000 + id as u64);
    let auth = format!("Bearer {KEY}");
    let retry = Retry::default();
    while Instant::now() < deadline {
        // Unique across runs (warm-up, load): a path is never uploaded twice.
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = format!("load/c{id:03}/f{n:06}.bin");
        let url = format!("{base}/{path}");
        let seed = (id as u64) << 32 | n;
        let roll: u32 = rng.random_range(0..100);
        let mut tally = Tally::default();
        if roll < 35 {
            let d = Done {
                size: rng.random_range(0..256 * KIB),
                seed,
            };
            let r = client::put_whole(&http, &url, &auth, &bytes_of(d), retry, &mut tally).await;
            assert_eq!(r.status, 201, "{path}: {}", r.body);
            assert_eq!(r.file()["filesize"].as_u64(), Some(d.size as u64));
            shared.done.lock().unwrap().insert(path, d);
            shared.counts.lock().unwrap().simple += 1;
        } else if roll < 60 {
            let d = Done {
                size: rng.random_range(256 * KIB..2048 * KIB),
                seed,
            };
            let file = bytes_of(d);
            let chunk = rng.random_range(64 * KIB..512 * KIB);
            // One chunk sent twice first (a client retrying after a lost answer).
            let first = 0..chunk.min(d.size);
            client::put_chunk(&http, &url, &auth, &file, first.clone(), retry, &mut tally).await;
            let (r, t) = client::put_chunked(&http, &url, &auth, &file, chunk, 3, retry).await;
            tally.add(t);
            assert!(matches!(r.status, 200 | 201), "{path}: {}", r.body);
            assert_eq!(r.file()["filesize"].as_u64(), Some(d.size as u64));
            shared.done.lock().unwrap().insert(path, d);
            shared.counts.lock().unwrap().chunked += 1;
        } else if roll < 70 {
            // Abandoned: some chunks, never the rest.
            let d = Done {
                size: rng.random_range(256 * KIB..1024 * KIB),
                seed,
            };
            let file = bytes_of(d);
            let plan = client::chunks(d.size, 64 * KIB);
            for c in plan.iter().take(plan.len() / 2) {
                let r = client::put_chunk(&http, &url, &auth, &file, c.clone(), retry, &mut tally)
                    .await;
                assert_eq!(r.status, 202, "{path}: {}", r.body);
            }
            shared.counts.lock().unwrap().abandoned += 1;
        } else {
            let pick = {
                let done = shared.done.lock().unwrap();
                if done.is_empty() {
                    None
                } else {
                    let i = rng.random_range(0..done.len());
                    done.iter().nth(i).map(|(p, d)| (p.clone(), *d))
                }
            };
            let Some((p, d)) = pick else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            let file = bytes_of(d);
            let url = format!("{base}/{p}");
            if d.size == 0 {
                let (code, got) = client::get(&http, &url, None, retry, &mut tally).await;
                assert_eq!((code, got.len()), (200, 0), "{p}");
            } else {
                let a = rng.random_range(0..d.size);
                let b = rng.random_range(a..d.size);
                let (code, got) =
                    client::get(&http, &url, Some(a as u64..b as u64 + 1), retry, &mut tally).await;
                assert_eq!(code, 206, "{p}");
                assert_eq!(got, file[a..=b], "{p}: range {a}-{b}");
            }
            shared.counts.lock().unwrap().ranged_gets += 1;
        }
        shared.counts.lock().unwrap().tally.add(tally);
    }
}

fn uploads_in_progress(data: &Path) -> usize {
    let dir = data.join(common::RESERVED);
    ["uploads", "staging"]
        .iter()
        .map(|s| {
            std::fs::read_dir(dir.join(s))
                .map(|d| d.count())
                .unwrap_or(0)
        })
        .sum()
}

/// Polls `f` until it holds or `limit` passes; returns whether it held.
async fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    f()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_then_everything_verified_swept_and_idle() {
    let secs: u64 = std::env::var("LOAD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // The default allocator, as every app that embeds the crate runs it.
    let demo = Demo::start_release(&data, KEY, &["--upload-ttl", "10"]);
    let client = || {
        reqwest::Client::builder()
            .pool_max_idle_per_host(CLIENTS)
            .timeout(Duration::from_secs(120))
            .build()
            .expect("client")
    };
    let base: Arc<str> = demo.base.clone().into();
    let shared = Arc::new(Shared {
        done: Mutex::new(BTreeMap::new()),
        counts: Mutex::new(Counts::default()),
    });
    let run = |secs: u64, http: reqwest::Client| {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|id| {
                tokio::spawn(run_client(
                    id,
                    base.clone(),
                    http.clone(),
                    shared.clone(),
                    deadline,
                ))
            })
            .collect();
        futures_util::future::join_all(tasks)
    };

    // Warm-up: 8 s of the same load on connections closed afterwards, so that the idle level
    // includes what a server keeps once it has worked (lock stripes, allocator arenas).
    let cold = (demo.open_fds(), demo.rss_kib());
    for t in run(8, client()).await {
        t.expect("a client failed during the warm-up");
    }
    let quiet = eventually(Duration::from_secs(10), || demo.open_fds() <= cold.0 + 70).await;
    assert!(
        quiet,
        "connections of the warm-up stay open: {} fds",
        demo.open_fds()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = (demo.open_fds(), demo.rss_kib());

    // The load, sampling the server's fds and RSS.
    let peak = Arc::new(Mutex::new((0usize, 0u64)));
    let sampler = {
        let (peak, pid) = (peak.clone(), demo.pid());
        tokio::spawn(async move {
            loop {
                let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
                    .map(|d| d.count())
                    .unwrap_or(0);
                let rss = common::process::status_kib(pid, "VmRSS:");
                {
                    let mut p = peak.lock().unwrap();
                    p.0 = p.0.max(fds);
                    p.1 = p.1.max(rss);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let t0 = Instant::now();
    for t in run(secs, client()).await {
        t.expect("a client failed under load");
    }
    let elapsed = t0.elapsed();
    sampler.abort();
    let left_at_end = uploads_in_progress(&data);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let settled = demo.rss_kib();

    // Every completed file: the right bytes on disk and over HTTP.
    let done = shared.done.lock().unwrap().clone();
    let verify = reqwest::Client::new();
    let tallies: Vec<Tally> = futures_util::stream::iter(done.iter())
        .map(|(path, d)| {
            let (verify, url, data) = (&verify, demo.url(path), &data);
            async move {
                let want = sha256_hex(&bytes_of(*d));
                let on_disk =
                    std::fs::read(data.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
                assert_eq!(sha256_hex(&on_disk), want, "{path} on disk");
                let mut tally = Tally::default();
                let (code, got) =
                    client::get(verify, &url, None, Retry::default(), &mut tally).await;
                assert_eq!((code, sha256_hex(&got)), (200, want), "{path} over HTTP");
                tally
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    drop(verify);
    let _ = tallies;
    // Abandoned uploads are swept (TTL 10 s, sweeper every 2.5 s).
    assert!(
        eventually(Duration::from_secs(30), || uploads_in_progress(&data) == 0).await,
        "abandoned uploads not swept: {} left",
        uploads_in_progress(&data)
    );
    // Back to idle: descriptors exactly.
    let fds_back = eventually(Duration::from_secs(15), || demo.open_fds() <= idle.0).await;
    let after = (demo.open_fds(), demo.rss_kib());
    let counts = shared.counts.lock().unwrap();
    let peak = *peak.lock().unwrap();
    eprintln!(
        "FIGURES load: {CLIENTS} clients, 8 s warm-up + {:.1} s: {} uploads completed and verified by SHA-256 \
         on disk and over HTTP ({} simple, {} chunked), {} abandoned ({left_at_end} upload dirs at the \
         end, 0 after the sweeper), {} ranged GETs checked; {} requests, {} retried after 5xx, {} after \
         transport errors; server fds cold/idle/peak/after: {}/{}/{}/{}; RSS KiB cold/idle/peak/\
         10 s after the load/after the checks: {}/{}/{}/{settled}/{}",
        elapsed.as_secs_f64(),
        done.len(),
        counts.simple,
        counts.chunked,
        counts.abandoned,
        counts.ranged_gets,
        counts.tally.requests,
        counts.tally.retried_5xx,
        counts.tally.retried_transport,
        cold.0,
        idle.0,
        peak.0,
        after.0,
        cold.1,
        idle.1,
        peak.1,
        after.1,
    );
    assert!(
        fds_back,
        "open fds stay above idle: idle {} now {}",
        idle.0, after.0
    );
    assert!(
        peak.1 <= 64 * 1024,
        "RSS peaked at {} KiB under the load, over 64 MiB",
        peak.1
    );
    assert!(
        settled <= 32 * 1024,
        "RSS {settled} KiB ten seconds after the load, over 32 MiB"
    );
    assert!(
        counts.simple > 0 && counts.chunked > 0 && counts.abandoned > 0 && counts.ranged_gets > 0,
        "{counts:?}"
    );
    assert_eq!(
        counts.tally.retried_5xx, 0,
        "the server failed requests under load"
    );
}
