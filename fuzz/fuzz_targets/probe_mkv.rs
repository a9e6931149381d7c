//! The Matroska/WebM EBML walker through `media::probe`: arbitrary bytes behind an EBML header with DocType `webm`
//! (unless they start with one already), so that the fuzzer spends its time inside that
//! parser. Never panics, reads within budget, keeps the facts' invariants.
#![no_main]

#[path = "../common/probe_check.rs"]
mod probe_check;

use libfuzzer_sys::fuzz_target;
use probe_check::check;

fn input(data: &[u8]) -> Vec<u8> {
    if data.starts_with(&[0x1A, 0x45, 0xDF, 0xA3]) {
        data.to_vec()
    } else {
        let mut v = vec![0x1A, 0x45, 0xDF, 0xA3, 0x87, 0x42, 0x82, 0x84];
        v.extend_from_slice(b"webm");
        v.extend_from_slice(data);
        v
    }
}

fuzz_target!(|data: &[u8]| {
    check(input(data), None, "a.webm");
});
