//! A thousand slow uploads at once against the demo server binary (default allocator): each
//! trickles its body at 4 KiB/s (2 KiB every half second), half of them simple `PUT`s, half
//! two `Content-Range` chunks one after the other. Every upload completes with the right
//! bytes, and the server's peak resident memory stays within 64 MiB (issue "memory": a slow
//! upload holds no write buffer while it waits, and no copy of its head).
//!
//! Runs the release build of the demo server binary (built first if needed).

mod common;

use bytes::Bytes;
use common::pattern;
use common::process::DemoServer as Demo;
use std::time::{Duration, Instant};

const KEY: &str = "slow-test-key";
const UPLOADS: usize = 1000;
const FRAME: usize = 2 * 1024;
const GAP: Duration = Duration::from_millis(500);
/// Frames per file: 24 KiB, six seconds at 4 KiB/s.
const FRAMES: usize = 12;

/// A body that sends `bytes` in [`FRAME`]s, one every [`GAP`].
fn trickle(bytes: Bytes) -> reqwest::Body {
    let frames = futures_util::stream::unfold(0usize, move |at| {
        let bytes = bytes.clone();
        async move {
            if at >= bytes.len() {
                return None;
            }
            if at > 0 {
                tokio::time::sleep(GAP).await;
            }
            let end = (at + FRAME).min(bytes.len());
            Some((Ok::<_, std::io::Error>(bytes.slice(at..end)), end))
        }
    });
    reqwest::Body::wrap_stream(frames)
}

/// Raises this process's soft limit of open files (inherited by the server it starts): a
/// thousand connections on each side, and the server's staging files.
fn enough_descriptors() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `getrlimit`/`setrlimit` read and write the struct given, nothing else.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max.min(16_384);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    assert!(
        lim.rlim_cur >= 4 * UPLOADS as u64,
        "the hard limit of open files is too low for this test: {}",
        lim.rlim_max
    );
}

async fn upload(http: reqwest::Client, base: String, n: usize) -> (String, Bytes) {
    tokio::time::sleep(Duration::from_millis(n as u64)).await; // spread the connects
    let path = format!("slow/f{n:04}.bin");
    let url = format!("{base}/{path}");
    let file = Bytes::from(pattern(FRAMES * FRAME, n as u64));
    let auth = format!("Bearer {KEY}");
    let send = |range: Option<(usize, usize)>| {
        let (body, req) = match range {
            None => (file.clone(), http.put(&url)),
            Some((a, b)) => (
                file.slice(a..b),
                http.put(&url).header(
                    "content-range",
                    format!("bytes {a}-{}/{}", b - 1, file.len()),
                ),
            ),
        };
        req.header("authorization", &auth)
            .header("content-length", body.len())
            .body(trickle(body))
            .send()
    };
    if n.is_multiple_of(2) {
        let r = send(None).await.expect("a simple upload");
        assert_eq!(r.status(), 201, "{path}: {}", r.text().await.unwrap());
    } else {
        let half = file.len() / 2;
        let r = send(Some((0, half))).await.expect("a first chunk");
        assert_eq!(r.status(), 202, "{path}: {}", r.text().await.unwrap());
        let r = send(Some((half, file.len()))).await.expect("a last chunk");
        assert_eq!(r.status(), 201, "{path}: {}", r.text().await.unwrap());
    }
    (path, file)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_slow_uploads_complete_in_bounded_memory() {
    enough_descriptors();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let demo = Demo::start_release(&data, KEY, &[]);
    let cold = demo.rss_kib();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(UPLOADS)
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client");
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..UPLOADS)
        .map(|n| tokio::spawn(upload(http.clone(), demo.base.clone(), n)))
        .collect();
    let mut done = Vec::with_capacity(UPLOADS);
    for t in tasks {
        done.push(t.await.expect("an upload failed"));
    }
    let took = t0.elapsed();
    for (path, file) in &done {
        let stored = std::fs::read(data.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(stored == file[..], "{path}: the stored bytes differ");
    }
    let peak = demo.peak_rss_kib();
    eprintln!(
        "FIGURES slow: {UPLOADS} uploads of {} KiB at 4 KiB/s (half simple, half two chunks), \
         all complete and verified in {:.1} s; server RSS KiB cold/peak: {cold}/{peak}",
        FRAMES * FRAME / 1024,
        took.as_secs_f64()
    );
    assert!(peak <= 64 * 1024, "peak RSS {peak} KiB, over 64 MiB");
}
