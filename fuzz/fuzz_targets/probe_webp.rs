//! The WebP chunk walker through `media::probe`: arbitrary bytes behind a RIFF `WEBP` header
//! (unless they start with one already), so that the fuzzer spends its time inside that
//! parser. Never panics, reads within budget, keeps the facts' invariants.
#![no_main]

#[path = "../common/probe_check.rs"]
mod probe_check;

use libfuzzer_sys::fuzz_target;
use probe_check::check;

fn input(data: &[u8]) -> Vec<u8> {
    if data.get(..4) == Some(b"RIFF") && data.get(8..12) == Some(b"WEBP") {
        data.to_vec()
    } else {
        let len = (data.len() as u32 + 4).to_le_bytes();
        [&b"RIFF"[..], &len, b"WEBP", data].concat()
    }
}

fuzz_target!(|data: &[u8]| {
    check(input(data), None, "a.webp");
});
