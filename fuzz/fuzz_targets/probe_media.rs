//! `media::probe` on arbitrary bytes (a `MemorySource`), with a few hints and filenames:
//! never panics, reads within its budget, and every answer keeps the facts' invariants.
#![no_main]

#[path = "../common/probe_check.rs"]
mod probe_check;

use libfuzzer_sys::fuzz_target;
use probe_check::check;

const NAMES: [(Option<&str>, &str); 6] = [
    (None, ""),
    (Some("video/mp4"), "a.mp4"),
    (Some("image/png"), "a.png"),
    (Some("audio/mpeg"), "a.mp3"),
    (Some("text/plain"), "notes.txt"),
    (None, "a.webm"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    let (hint, name) = NAMES[usize::from(pick) % NAMES.len()];
    check(bytes.to_vec(), hint, name);
});
