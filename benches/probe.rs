//! Probe cost against file size: the same media at 1 MiB and at 1 GiB, probed in the same run,
//! medians of many probes, printed as a ratio (1 GiB / 1 MiB) with the bytes each probe read.
//! The file bodies are grown the way each format allows (an MP4's `moov` at the very end
//! behind a 1 GiB `free` box, a 1 GiB WAV `data` chunk, a 1 GiB WebM Void, a 1 GiB gap before
//! an Ogg file's last page), so the probe must seek, not scan.
//!
//! ```text
//! cargo bench --bench probe            (needs ffmpeg to make the small files)
//! ```

#[path = "../tests/support/grow.rs"]
mod grow;

use grow::{GIB, MIB, grow};
use std::process::Command;
use std::time::{Duration, Instant};
use tower_uploads::media::{MemorySource, Source, probe};

const ROUNDS: usize = 200;

fn ffmpeg(args: &str, out: &std::path::Path) -> bool {
    Command::new("ffmpeg")
        .args(["-v", "error", "-y"])
        .args(args.split_whitespace())
        .arg(out)
        .status()
        .is_ok_and(|s| s.success())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn measure(bytes: Vec<u8>, name: &str) -> (Duration, u64) {
    let src = MemorySource::new(bytes);
    let mut times = Vec::with_capacity(ROUNDS);
    let mut read = 0;
    for _ in 0..ROUNDS {
        let before = src.bytes_read();
        let t = Instant::now();
        let facts = probe(&src, None, name).await;
        times.push(t.elapsed());
        std::hint::black_box(facts);
        read = src.bytes_read() - before;
    }
    (median(times), read)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let video = "-f lavfi -i testsrc=size=320x240:rate=25:duration=3";
    let sine = "-f lavfi -i sine=frequency=440:sample_rate=44100:duration=3";
    let cases = [
        (
            "mp4",
            format!("{video} {sine} -c:v libx264 -preset ultrafast -pix_fmt yuv420p -c:a aac"),
        ),
        (
            "webm",
            format!("{video} -c:v libvpx-vp9 -deadline realtime -cpu-used 8"),
        ),
        ("wav", sine.to_owned()),
        ("ogg", format!("{sine} -c:a libvorbis")),
        ("mp3", format!("{sine} -c:a libmp3lame -b:a 128k")),
        ("flac", sine.to_owned()),
    ];
    println!(
        "{:<6} {:>14} {:>14} {:>8} {:>16} {:>16}",
        "format", "1 MiB median", "1 GiB median", "ratio", "bytes read 1MiB", "bytes read 1GiB"
    );
    for (format, args) in cases {
        let file = dir.path().join(format!("small.{format}"));
        if !ffmpeg(&args, &file) {
            eprintln!("{format}: ffmpeg could not make the file (is ffmpeg installed?)");
            continue;
        }
        let orig = std::fs::read(&file).expect("read");
        let name = format!("a.{format}");
        let (small_t, small_read) = measure(grow(format, &orig, MIB), &name).await;
        let (big_t, big_read) = measure(grow(format, &orig, GIB), &name).await;
        println!(
            "{format:<6} {:>14.2?} {:>14.2?} {:>7.2}x {small_read:>16} {big_read:>16}",
            small_t,
            big_t,
            big_t.as_secs_f64() / small_t.as_secs_f64().max(1e-9),
        );
    }
}
