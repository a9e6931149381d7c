//! `tus::parse_checksum` on arbitrary bytes: never panics; an accepted checksum has exactly its
//! algorithm's digest length and parses back from its canonical form, padded and unpadded; an
//! unknown algorithm is never one of the three names. Digests cut from the input parse for
//! each algorithm at the right length, and are refused for the wrong length.
#![no_main]

#[path = "../../src/headers/tus.rs"]
#[allow(dead_code)]
mod tus;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use libfuzzer_sys::fuzz_target;
use tus::{Checksum, ChecksumAlgorithm, TusHeaderError, parse_checksum};

fuzz_target!(|data: &[u8]| {
    let first_word = data
        .split(|b| matches!(b, b' ' | b'\t'))
        .find(|w| !w.is_empty());
    match parse_checksum(data) {
        Ok(sum) => {
            assert_eq!(sum.digest.len(), sum.algorithm.digest_len());
            assert_eq!(first_word, Some(sum.algorithm.name().as_bytes()));
            let canonical = sum.to_string();
            assert_eq!(parse_checksum(canonical.as_bytes()), Ok(sum.clone()));
            let unpadded = format!(
                "{}\t{}",
                sum.algorithm.name(),
                STANDARD_NO_PAD.encode(&sum.digest)
            );
            assert_eq!(parse_checksum(unpadded.as_bytes()), Ok(sum));
        }
        Err(e) => {
            assert_eq!(e.status(), http::StatusCode::BAD_REQUEST, "{e:?}");
            if e == TusHeaderError::ChecksumUnknownAlgorithm {
                let name = first_word.expect("a name");
                assert!(
                    ChecksumAlgorithm::ALL
                        .iter()
                        .all(|a| a.name().as_bytes() != name)
                );
            }
        }
    }

    // Digests cut from the input.
    for algorithm in ChecksumAlgorithm::ALL {
        let len = algorithm.digest_len();
        let digest: Vec<u8> = data.iter().copied().cycle().take(len).collect();
        if digest.len() == len {
            let header = format!("{} {}", algorithm.name(), STANDARD.encode(&digest));
            let want = Checksum { algorithm, digest };
            assert_eq!(parse_checksum(header.as_bytes()), Ok(want), "{header:?}");
        }
        let wrong = &data[..data.len().min(64)];
        if wrong.len() != len && !wrong.is_empty() {
            let header = format!("{} {}", algorithm.name(), STANDARD.encode(wrong));
            assert_eq!(
                parse_checksum(header.as_bytes()),
                Err(TusHeaderError::ChecksumLengthMismatch),
                "{header:?}"
            );
        }
    }
});
