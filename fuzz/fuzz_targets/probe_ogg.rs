//! The Ogg parser (beginning-of-stream pages, last page from the tail) through `media::probe`: arbitrary bytes behind `OggS`
//! (unless they start with one already), so that the fuzzer spends its time inside that
//! parser. Never panics, reads within budget, keeps the facts' invariants.
#![no_main]

#[path = "../common/probe_check.rs"]
mod probe_check;

use libfuzzer_sys::fuzz_target;
use probe_check::check;

fn input(data: &[u8]) -> Vec<u8> {
    if data.starts_with(b"OggS") {
        data.to_vec()
    } else {
        [b"OggS", data].concat()
    }
}

fuzz_target!(|data: &[u8]| {
    check(input(data), None, "a.ogg");
});
