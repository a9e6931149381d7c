//! `digest::parse_sha256` on arbitrary bytes: never panics; an accepted digest round-trips
//! through its canonical form; `Sha256Check` agrees with `sha2`; and a header whose first member
//! is a valid `sha-256` never yields another digest, whatever follows it.
#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest as _, Sha256};
use tower_uploads::upload::digest::{Sha256Check, parse_sha256};

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(digest)) = parse_sha256(data) {
        assert!(data.windows(7).any(|w| w == b"sha-256"));
        for header in [
            format!("sha-256=:{}:", STANDARD.encode(digest)),
            format!("sha-256=:{}:", STANDARD_NO_PAD.encode(digest)),
        ] {
            assert_eq!(
                parse_sha256(header.as_bytes()),
                Ok(Some(digest)),
                "{header:?}"
            );
        }
    }

    // The check agrees with sha2, however the bytes are split.
    let expected: [u8; 32] = Sha256::digest(data).into();
    let split = data.first().map_or(0, |&b| usize::from(b)).min(data.len());
    let mut check = Sha256Check::new(expected);
    check.update(&data[..split]);
    check.update(&data[split..]);
    assert!(check.finish());
    let mut wrong = expected;
    wrong[data.len() % 32] ^= 1 << (data.len() % 8);
    let mut check = Sha256Check::new(wrong);
    check.update(data);
    assert!(!check.finish());

    // A valid first member followed by arbitrary members: that digest or an error, never
    // another digest.
    let header = [
        b"sha-256=:".as_slice(),
        STANDARD.encode(expected).as_bytes(),
        b":, ",
        data,
    ]
    .concat();
    match parse_sha256(&header) {
        Ok(Some(d)) => assert_eq!(d, expected),
        Ok(None) => panic!("sha-256 member lost in {header:?}"),
        Err(_) => {}
    }
});
