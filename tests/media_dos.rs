//! Security finding 1: media that freeze the server. A ~250-byte MP4 whose `trun` boxes
//! claim 2³² − 1 samples each took seconds of CPU to probe, on a tokio worker thread: two
//! such uploads on two cores stopped every other request. These tests run the demo server
//! (`examples/server.rs`, a multi-threaded runtime with one worker per core) as a child
//! process (`cargo build --example server` first when running this file alone), so that the
//! client's clock and runtime are not the server's.
//!
//! Figures are printed as `FIGURES media_dos: …`.

mod common;

use common::KEY;
use common::hostile_media::{
    big_moov, endless_fragments, endless_runs, gif_tiny_blocks, ogg_overlapping,
};
use common::process::DemoServer as Demo;
use std::time::{Duration, Instant};

fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .expect("client")
}

async fn put(
    c: &reqwest::Client,
    demo_url: String,
    body: Vec<u8>,
) -> Result<(u16, serde_json::Value), reqwest::Error> {
    let res = c
        .put(demo_url)
        .header("authorization", format!("Bearer {KEY}"))
        .body(body)
        .send()
        .await?;
    let status = res.status().as_u16();
    let json = serde_json::from_slice(&res.bytes().await?).unwrap_or_default();
    Ok((status, json))
}

/// The finding's file: `PUT /x.mp4` of ~250 bytes with four `trun`s of 2³² − 1 samples
/// (7 s of CPU per upload before the fix) is answered at once, with bounded facts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_mp4_is_answered_promptly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let demo = Demo::start(&dir.path().join("data"), &[]);
    let file = endless_runs(4);
    assert!(file.len() < 300, "{}", file.len());
    let t0 = Instant::now();
    let (status, json) = put(&client(Duration::from_secs(5)), demo.url("x.mp4"), file)
        .await
        .expect("the hostile MP4 is answered within 5 s");
    let took = t0.elapsed();
    eprintln!("FIGURES media_dos: hostile MP4 (4 trun of 2^32-1 samples): {status} in {took:.2?}");
    assert!(
        status == 201 || (400..500).contains(&status),
        "{status} {json}"
    );
    assert!(took < Duration::from_secs(2), "{took:?}");
    if status == 201 {
        let file = json.get("data").unwrap_or(&json);
        assert_eq!(file["type"], "video/mp4", "{json}");
        // No track: nothing the fragments could be the duration or frames of.
        assert!(
            file["duration"].is_null() && file["frames"].is_null(),
            "{json}"
        );
    }
    // The server is still there for the next request.
    let (status, _) = put(
        &client(Duration::from_secs(5)),
        demo.url("after.txt"),
        b"hello".to_vec(),
    )
    .await
    .expect("PUT after");
    assert_eq!(status, 201);
}

/// While `2 × cores` hostile media are being probed at once, and as many MP4s of endless
/// runs (1 MiB of `moof`s), a GET of a small file is answered within a second, every time
/// it is asked. The hostile media: 16 MiB `moov`s (the longest a probe works without a read
/// in between), 16 MiB GIFs of one-byte blocks (the longest walk a probe makes), Ogg tails
/// of overlapping pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_get_answers_while_hostile_media_are_probed_on_every_core() {
    let dir = tempfile::tempdir().expect("tempdir");
    let demo = Demo::start(&dir.path().join("data"), &[]);
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let c = client(Duration::from_secs(60));
    let (status, _) = put(&c, demo.url("small.txt"), b"small".to_vec())
        .await
        .expect("PUT small");
    assert_eq!(status, 201);
    let get = || async {
        let t0 = Instant::now();
        let res = client(Duration::from_secs(10))
            .get(demo.url("small.txt"))
            .header("authorization", format!("Bearer {KEY}"))
            .send()
            .await
            .expect("GET answered within 10 s");
        assert_eq!(res.status().as_u16(), 200);
        assert_eq!(&res.bytes().await.expect("body")[..], b"small");
        t0.elapsed()
    };
    let quiet = get().await;

    let n = 2 * cores;
    let uploads: Vec<_> = (0..2 * n)
        .map(|i| {
            let (name, body) = match i % 8 {
                0 | 4 => (format!("h{i}.mp4"), big_moov()),
                2 => (format!("h{i}.gif"), gif_tiny_blocks(16 << 20)),
                6 => (format!("h{i}.ogg"), ogg_overlapping(1 << 20)),
                _ => (format!("h{i}.mp4"), endless_fragments(1 << 20)),
            };
            let (c, url) = (c.clone(), demo.url(&name));
            tokio::spawn(async move {
                let t0 = Instant::now();
                let got = put(&c, url, body).await;
                (name, got.map(|g| g.0), t0.elapsed())
            })
        })
        .collect();
    // The bodies are on their way; GET while any upload is still open.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut latencies = Vec::new();
    let t0 = Instant::now();
    while uploads.iter().any(|u| !u.is_finished()) && t0.elapsed() < Duration::from_secs(60) {
        latencies.push(get().await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut answers = Vec::new();
    for u in uploads {
        let (name, status, took) = u.await.expect("task");
        let status = status.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            status == 201 || (400..500).contains(&status),
            "{name}: {status}"
        );
        answers.push(took);
    }
    let worst = latencies.iter().max().copied().unwrap_or_default();
    let slowest_upload = answers.iter().max().copied().unwrap_or_default();
    eprintln!(
        "FIGURES media_dos: {} hostile uploads on {cores} cores: {} GETs meanwhile, slowest {worst:.2?} (quiet: {quiet:.2?}); slowest upload answered in {slowest_upload:.2?}",
        2 * n,
        latencies.len()
    );
    assert!(!latencies.is_empty(), "no GET while the uploads were open");
    assert!(worst < Duration::from_secs(1), "{latencies:?}");
}
