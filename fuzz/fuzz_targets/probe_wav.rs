//! The WAV chunk parser through `media::probe`: arbitrary bytes behind a RIFF `WAVE` header
//! (unless they start with one already), so that the fuzzer spends its time inside that
//! parser. Never panics, reads within budget, keeps the facts' invariants.
#![no_main]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use libfuzzer_sys::fuzz_target;
use tower_uploads::media::probe::PROBE_BUDGET;
use tower_uploads::media::{Kind, MediaFacts, MemorySource, Source, probe};

/// Runs a probe over a `MemorySource`, which never waits: a pending poll is a bug.
fn block_on<F: Future>(f: F) -> F::Output {
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
fn check(bytes: Vec<u8>, hint: Option<&str>, name: &str) -> MediaFacts {
    let size = bytes.len() as u64;
    let src = MemorySource::new(bytes);
    let f = block_on(probe(&src, hint, name));
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

fn input(data: &[u8]) -> Vec<u8> {
    if data.get(..4) == Some(b"RIFF") && data.get(8..12) == Some(b"WAVE") {
        data.to_vec()
    } else {
        let len = (data.len() as u32 + 4).to_le_bytes();
        [&b"RIFF"[..], &len, b"WAVE", data].concat()
    }
}

fuzz_target!(|data: &[u8]| {
    check(input(data), None, "a.wav");
});
