//! What every probe fuzz target checks: the probe never panics, never waits on a
//! `MemorySource`, reads within its budget, works within a bound of what it read (security
//! finding 1: `work ≤ 4 × bytes read + 4096` steps, under a second, and a small input never
//! runs out of the time budget), and keeps the facts' invariants. Included by each `probe_*`
//! target with `#[path]`.
#![allow(dead_code)]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use std::time::{Duration, Instant};
use tower_uploads::media::probe::{PROBE_BUDGET, probe_with_stats};
use tower_uploads::media::{Kind, MediaFacts, MemorySource, SNIFF_BYTES, Source};

/// Runs a probe over a `MemorySource`, which never waits: a pending poll is a bug.
pub fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..1000 {
        if let Poll::Ready(out) = f.as_mut().poll(&mut cx) {
            return out;
        }
    }
    panic!("a probe over a memory source did not finish");
}

/// Probes `bytes` and checks what every answer must satisfy.
pub fn check(bytes: Vec<u8>, hint: Option<&str>, name: &str) -> MediaFacts {
    let size = bytes.len() as u64;
    let src = MemorySource::new(bytes);
    let t0 = Instant::now();
    let (f, stats) = block_on(probe_with_stats(&src, hint, name));
    let took = t0.elapsed();
    assert!(
        stats.work <= stats.work_bound(),
        "worked {} steps for {} bytes read",
        stats.work,
        stats.bytes_read
    );
    assert!(took < Duration::from_secs(1), "took {took:?}: {stats:?}");
    assert!(
        size > SNIFF_BYTES as u64 || !stats.exhausted,
        "{size} bytes ran out of budget: {stats:?}"
    );
    assert!(
        src.bytes_read() <= PROBE_BUDGET,
        "read {} bytes",
        src.bytes_read()
    );
    assert!(
        src.bytes_read() <= size.max(1) * 4 + 65536,
        "read {} of {size}",
        src.bytes_read()
    );
    for x in [f.duration, f.fps].into_iter().flatten() {
        assert!(x.is_finite() && x > 0.0, "{f:?}");
    }
    assert!(f.width != Some(0) && f.height != Some(0), "{f:?}");
    assert!(f.bitrate.is_none() || f.duration.is_some(), "{f:?}");
    if !f.recognised {
        assert_eq!(f.kind, Kind::Other);
    }
    if f.kind == Kind::Other {
        assert!(
            f.duration.is_none() && f.codec.is_none() && f.container.is_none(),
            "{f:?}"
        );
    }
    f
}
