//! The MPEG audio parser (ID3v2, frame headers, Xing/Info/VBRI) through `media::probe`: arbitrary bytes behind an empty ID3v2 tag
//! (unless they start with one already), so that the fuzzer spends its time inside that
//! parser. Never panics, reads within budget, keeps the facts' invariants.
#![no_main]

#[path = "../common/probe_check.rs"]
mod probe_check;

use libfuzzer_sys::fuzz_target;
use probe_check::check;

fn input(data: &[u8]) -> Vec<u8> {
    if data.starts_with(b"ID3") || data.starts_with(&[0xFF, 0xFB]) {
        data.to_vec()
    } else {
        [&b"ID3\x04\0\0\0\0\0\0"[..], data].concat()
    }
}

fuzz_target!(|data: &[u8]| {
    check(input(data), None, "a.mp3");
});
