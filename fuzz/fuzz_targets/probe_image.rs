//! The still-image walkers (JPEG segments, TIFF directory, HEIF/AVIF) through `media::probe`: arbitrary bytes behind a JPEG, TIFF (both byte orders) or AVIF signature, chosen by the first byte
//! (unless they start with one already), so that the fuzzer spends its time inside that
//! parser. Never panics, reads within budget, keeps the facts' invariants.
#![no_main]

#[path = "../common/probe_check.rs"]
mod probe_check;

use libfuzzer_sys::fuzz_target;
use probe_check::check;

fn input(data: &[u8]) -> Vec<u8> {
    let Some((&pick, rest)) = data.split_first() else {
        return Vec::new();
    };
    let magic: &[u8] = match pick % 4 {
        0 => &[0xFF, 0xD8, 0xFF],
        1 => b"II*\0",
        2 => b"MM\0*",
        _ => b"\0\0\0\x1cftypavif\0\0\0\0avifmif1miaf",
    };
    [magic, rest].concat()
}

fuzz_target!(|data: &[u8]| {
    check(input(data), None, "a.img");
});
