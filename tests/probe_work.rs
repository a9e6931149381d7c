//! The probe's work is bounded by the bytes it reads (security finding 1), for every format's
//! parser and the sniffer: hostile files built for each parser (counts that no byte carries,
//! structures laid over one another, the smallest possible blocks, as many as fit) and
//! seeded random mutations of small valid files, each probed from memory with
//! `probe_with_stats`:
//! - `work ≤ 4 × bytes read + 4096` (steps: reads asked, bytes decoded in memory, loop turns);
//! - the probe ends within 2 s (the work budget, `PROBE_TIME`, is 300 ms, checked between
//!   steps);
//! - a file of at most 64 KiB never runs out of budget (it has no reason to).
//!
//! The figures (slowest probe per format) are printed as `FIGURES probe_work: …`.

mod common;

use common::hostile_media::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::{Duration, Instant};
use tower_uploads::media::probe::{PROBE_TIME, ProbeStats, probe_with_stats};
use tower_uploads::media::{MemorySource, SNIFF_BYTES, sniff};

/// One probe, checked; its stats and time.
fn check(what: &str, bytes: Vec<u8>, name: &str) -> (ProbeStats, Duration) {
    let size = bytes.len() as u64;
    let src = MemorySource::new(bytes);
    let t0 = Instant::now();
    let (facts, stats) = futures_util::FutureExt::now_or_never(probe_with_stats(&src, None, name))
        .expect("a memory probe never waits");
    let took = t0.elapsed();
    assert!(
        stats.work <= stats.work_bound(),
        "{what}: work {} for {} bytes read",
        stats.work,
        stats.bytes_read
    );
    // The catch-all for work the steps do not see: an unbounded loop takes seconds to hours.
    // (The slowest case, a 16 MiB `moov` decoded at once, takes ~0.4 s in a debug build.)
    assert!(took < Duration::from_secs(2), "{what}: {took:?} {stats:?}");
    assert!(
        size > SNIFF_BYTES as u64 || !stats.exhausted,
        "{what}: a file of {size} bytes ran out of budget: {stats:?}"
    );
    for x in [facts.duration, facts.fps].into_iter().flatten() {
        assert!(x.is_finite() && x > 0.0, "{what}: {facts:?}");
    }
    (stats, took)
}

/// The hostile file of every parser, at several sizes, and their mutations.
fn cases() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let mut v = vec![
        ("mp4 endless runs", "a.mp4", endless_runs(4)),
        (
            "mp4 endless runs, 1 MiB",
            "a.mp4",
            endless_fragments(1 << 20),
        ),
        (
            "mp4 endless runs, 16 MiB",
            "a.mp4",
            endless_fragments(16 << 20),
        ),
        ("mp4 huge tables", "a.mp4", huge_tables()),
        ("mp4 16 MiB moov", "a.mp4", big_moov()),
        ("mkv", "a.webm", mkv(0)),
        ("mkv voids", "a.webm", mkv(1 << 20)),
        ("mkv past the end", "a.webm", mkv_past_the_end()),
        ("mp3", "a.mp3", mp3(4)),
        ("mp3 frames", "a.mp3", mp3(10_000)),
        ("wav", "a.wav", wav(0)),
        ("wav junk chunks", "a.wav", wav(10_000)),
        ("flac", "a.flac", flac()),
        ("ogg overlapping pages", "a.ogg", ogg_overlapping(4096)),
        (
            "ogg overlapping pages, 1 MiB",
            "a.ogg",
            ogg_overlapping(1 << 20),
        ),
        ("gif tiny blocks", "a.gif", gif_tiny_blocks(4096)),
        ("gif tiny blocks, 1 MiB", "a.gif", gif_tiny_blocks(1 << 20)),
        (
            "gif tiny blocks, 16 MiB",
            "a.gif",
            gif_tiny_blocks(16 << 20),
        ),
        ("webp tiny chunks", "a.webp", webp_tiny_chunks(4096)),
        (
            "webp tiny chunks, 4 MiB",
            "a.webp",
            webp_tiny_chunks(4 << 20),
        ),
        ("jpeg fill bytes", "a.jpg", jpeg_fill(1 << 20)),
        ("tiff big directory", "a.tif", tiff_big_directory()),
        (
            "tiff truncated directory",
            "a.tif",
            tiff_truncated_directory(),
        ),
        ("svg prolog", "a.svg", svg_prolog(SNIFF_BYTES)),
    ];
    let mut rng = StdRng::seed_from_u64(0x5EC1);
    let small: Vec<_> = v
        .iter()
        .filter(|c| c.2.len() <= 64 << 10)
        .cloned()
        .collect();
    for (what, name, seed) in small {
        for _ in 0..200 {
            let mut m = seed.clone();
            for _ in 0..rng.random_range(1..4) {
                let at = rng.random_range(0..m.len().saturating_sub(4).max(1));
                let word: u32 = match rng.random_range(0..4) {
                    0 => u32::MAX,
                    1 => 0,
                    2 => rng.random(),
                    _ => rng.random_range(0..256),
                };
                let n = m.len().min(at + 4);
                m[at..n].copy_from_slice(&word.to_be_bytes()[..n - at]);
            }
            if rng.random_bool(0.2) {
                m.truncate(rng.random_range(0..=m.len()));
            }
            v.push((what, name, m));
        }
    }
    v
}

#[test]
fn probe_work_is_bounded_by_the_bytes_read() {
    let mut slowest: Vec<(&str, Duration, ProbeStats)> = Vec::new();
    let all = cases();
    for (what, name, bytes) in &all {
        let (stats, took) = check(what, bytes.clone(), name);
        match slowest.iter_mut().find(|s| s.0 == *what) {
            Some(s) if s.1 >= took => {}
            Some(s) => *s = (what, took, stats),
            None => slowest.push((what, took, stats)),
        }
    }
    for (what, took, s) in &slowest {
        eprintln!(
            "FIGURES probe_work: {what}: slowest {took:.2?}, {} bytes read, {} steps{}",
            s.bytes_read,
            s.work,
            if s.exhausted { ", budget ran out" } else { "" }
        );
    }
    eprintln!(
        "FIGURES probe_work: {} probes, PROBE_TIME {PROBE_TIME:?}",
        all.len()
    );
}

/// The sniffer sees at most the head: any 64 KiB of the hostile files (and of their
/// mutations) is sniffed in well under the time a probe may take.
#[test]
fn sniff_is_bounded_by_the_head() {
    let mut worst = Duration::ZERO;
    for (what, name, bytes) in cases() {
        let head = &bytes[..bytes.len().min(SNIFF_BYTES)];
        let t0 = Instant::now();
        sniff(head, None, name);
        let took = t0.elapsed();
        assert!(took < Duration::from_millis(100), "{what}: {took:?}");
        worst = worst.max(took);
    }
    eprintln!("FIGURES probe_work: slowest sniff {worst:.2?}");
}
