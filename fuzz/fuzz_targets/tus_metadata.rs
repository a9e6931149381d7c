//! `tus::parse_metadata` on arbitrary bytes: never panics; what it accepts has at most 64
//! unique, non-empty, printable-ASCII keys without comma, the accessors agree with its pairs,
//! and it re-encodes (`encode_metadata`, also unpadded) to a header that parses back to the same
//! pairs — or, when the re-encoding grows past 16 KiB, to `MetadataTooLarge`. Pairs made from
//! the input encode and parse back too.
#![no_main]

// The parser is crate-private (`headers` is `pub(crate)`): the fuzz target compiles its file.
#[path = "../../src/headers/tus.rs"]
#[allow(dead_code)]
mod tus;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use libfuzzer_sys::fuzz_target;
use tus::{
    MAX_METADATA_LEN, MAX_METADATA_PAIRS, Metadata, TusHeaderError, encode_metadata, parse_metadata,
};

fn check_round_trip(parsed: &Metadata) {
    let pairs: Vec<(&str, &[u8])> = parsed.iter().collect();
    let encoded = encode_metadata(&pairs);
    let unpadded = pairs
        .iter()
        .map(|(k, v)| {
            if v.is_empty() {
                (*k).to_owned()
            } else {
                format!("{k} {}", STANDARD_NO_PAD.encode(v))
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    for header in [encoded, unpadded] {
        let want = if header.len() <= MAX_METADATA_LEN {
            Ok(parsed.clone())
        } else {
            Err(TusHeaderError::MetadataTooLarge)
        };
        assert_eq!(parse_metadata(header.as_bytes()), want, "{header:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    match parse_metadata(data) {
        Ok(parsed) => {
            assert!(data.len() <= MAX_METADATA_LEN);
            assert!(parsed.len() <= MAX_METADATA_PAIRS);
            assert_eq!(parsed.is_empty(), parsed.iter().next().is_none());
            let pairs: Vec<(&str, &[u8])> = parsed.iter().collect();
            assert_eq!(pairs.len(), parsed.len());
            for (i, &(key, value)) in pairs.iter().enumerate() {
                assert!(!key.is_empty());
                assert!(key.bytes().all(|b| (b'!'..=b'~').contains(&b) && b != b','));
                assert!(pairs[..i].iter().all(|&(k, _)| k != key), "{key:?} twice");
                assert_eq!(parsed.get(key), Some(value));
                assert_eq!(parsed.get_str(key), std::str::from_utf8(value).ok());
            }
            check_round_trip(&parsed);
        }
        Err(e) => {
            assert_eq!(e.status(), http::StatusCode::BAD_REQUEST, "{e:?}");
            if data.len() > MAX_METADATA_LEN {
                assert_eq!(e, TusHeaderError::MetadataTooLarge);
            }
        }
    }

    // Pairs made from the input: keys `k0`, `k1`, …, values cut from the input.
    let (n, rest) = data
        .split_first()
        .map_or((0, data), |(&n, r)| (usize::from(n), r));
    let count = n % (MAX_METADATA_PAIRS + 2);
    let size = rest.len() / count.max(1);
    let keys: Vec<String> = (0..count).map(|i| format!("k{i}")).collect();
    let pairs: Vec<(&str, &[u8])> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (k.as_str(), &rest[i * size..(i + 1) * size]))
        .collect();
    let header = encode_metadata(&pairs);
    match parse_metadata(header.as_bytes()) {
        Ok(parsed) => {
            assert_eq!(parsed.iter().collect::<Vec<_>>(), pairs);
            check_round_trip(&parsed);
        }
        Err(TusHeaderError::MetadataTooManyPairs) => assert!(count > MAX_METADATA_PAIRS),
        Err(TusHeaderError::MetadataTooLarge) => assert!(header.len() > MAX_METADATA_LEN),
        Err(e) => panic!("{header:?}: {e:?}"),
    }
});
