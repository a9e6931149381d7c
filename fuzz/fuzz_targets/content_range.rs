//! `content_range::parse` on arbitrary bytes: never panics; every accepted header round-trips
//! through its canonical spellings, and every range that `resolve` answers lies within the file,
//! has exactly the body's length and agrees with `validate` and `max_len`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_uploads::upload::content_range::{ContentRange, parse};

fuzz_target!(|data: &[u8]| {
    let Ok(range) = parse(data) else {
        return;
    };
    // Canonical spellings parse back to the same range.
    let canonical = match range {
        ContentRange::Chunk { start, end, total } => format!("bytes {start}-{end}/{total}"),
        ContentRange::Status { total } => format!("bytes */{total}"),
    };
    assert_eq!(parse(canonical.as_bytes()), Ok(range), "{canonical:?}");
    let ittybit = canonical.replacen(' ', "=", 1);
    assert_eq!(parse(ittybit.as_bytes()), Ok(range), "{ittybit:?}");
    assert_eq!(parse(canonical.to_uppercase().as_bytes()), Ok(range));

    let valid = range.validate();
    let max = range.max_len();
    let total = range.total();
    // A length derived from the input: its last (up to) 8 bytes.
    let tail = &data[data.len().saturating_sub(8)..];
    let seed = tail.iter().fold(0u64, |n, &b| (n << 8) | u64::from(b));
    let lens = [
        0,
        1,
        max,
        max.saturating_sub(1),
        max.saturating_add(1),
        seed,
        seed % max.saturating_add(1).max(1),
        total,
    ];
    for len in lens {
        let got = range.resolve(len);
        if let Err(e) = valid {
            assert_eq!(got, Err(e), "{range:?} len {len}");
            continue;
        }
        let Ok(r) = got else {
            continue;
        };
        assert!(r.start <= r.end, "{range:?} len {len}: {r:?}");
        assert_eq!(r.end - r.start, len, "{range:?}: {r:?}");
        assert!(r.end <= total, "{range:?} len {len}: {r:?}");
        assert!(len <= max, "{range:?} len {len}: {r:?}");
        match range {
            ContentRange::Chunk { start, end, .. } => {
                assert!(!r.is_empty(), "{range:?}: empty chunk accepted");
                assert_eq!(r.start, start);
                assert!(
                    r.end == end || Some(r.end) == end.checked_add(1),
                    "{range:?}: {r:?}"
                );
            }
            ContentRange::Status { .. } => assert!(r.is_empty()),
        }
    }
    // A valid chunk has at least one body length that resolves.
    if valid.is_ok()
        && let ContentRange::Chunk { start, end, .. } = range
    {
        assert!(
            range.resolve(end - start).is_ok() || range.resolve(max).is_ok(),
            "{range:?}: valid but no length resolves"
        );
    }
});
