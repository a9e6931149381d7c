//! Upload-session keys: decoding arbitrary `?key=` values never panics and never accepts a
//! key no API key signed; a key made by `SessionKey::encode` always decodes to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_uploads::auth::{ApiKey, KeySet};
use tower_uploads::session::SessionKey;

fuzz_target!(|data: &[u8]| {
    let keys = KeySet::new([ApiKey::new("fuzz-primary"), ApiKey::new("fuzz-old")]);
    // Arbitrary text as a key: refused (a forgery would need the HMAC key).
    let text = String::from_utf8_lossy(data);
    assert!(
        SessionKey::decode(&text, &keys).is_err(),
        "an unsigned key was accepted: {text:?}"
    );

    // A key built from the input round-trips.
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut expiry = [0u8; 8];
    let n = rest.len().min(8);
    expiry[..n].copy_from_slice(&rest[..n]);
    let id: String = rest
        .iter()
        .skip(8)
        .filter(|b| b.is_ascii_alphanumeric())
        .take(64)
        .map(|&b| b as char)
        .collect();
    if id.len() < 8 {
        return;
    }
    let key = SessionKey {
        id: format!("ses_{id}"),
        expiry: u64::from_le_bytes(expiry),
        resumable: flags & 1 == 1,
    };
    let signer = &keys.keys()[usize::from(flags >> 1) % 2];
    let encoded = key.encode(signer);
    assert_eq!(SessionKey::decode(&encoded, &keys), Ok(key.clone()));
    let other = KeySet::new([ApiKey::new("someone-else")]);
    assert!(SessionKey::decode(&encoded, &other).is_err());
});
