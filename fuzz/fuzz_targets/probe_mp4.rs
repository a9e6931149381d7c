//! The MP4 parser (top-level walk, `moov` through mp4-atom, fragments) through `media::probe`: arbitrary bytes behind an `ftyp` box
//! (unless they start with one already), so that the fuzzer spends its time inside that
//! parser. Never panics, reads within budget, keeps the facts' invariants.
#![no_main]

#[path = "../common/probe_check.rs"]
mod probe_check;

use libfuzzer_sys::fuzz_target;
use probe_check::check;

fn input(data: &[u8]) -> Vec<u8> {
    if data.get(4..8) == Some(b"ftyp") {
        data.to_vec()
    } else {
        let mut v = b"\0\0\0\x14ftypisom\0\0\0\0isom".to_vec();
        v.extend_from_slice(data);
        v
    }
}

fuzz_target!(|data: &[u8]| {
    check(input(data), None, "a.mp4");
});
