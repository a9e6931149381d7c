//! Signed-URL and bearer verification on arbitrary requests: must never panic, and a URL made
//! by the `Signer` for a valid path must always verify.
#![no_main]

use http::{HeaderValue, Method};
use libfuzzer_sys::fuzz_target;
use tower_uploads::auth::{
    ApiKey, KeySet, SignedMethod, Signer, Verifier, VerifyInput, Via, signature,
};
use tower_uploads::path::FilePath;

const METHODS: [Method; 5] = [
    Method::GET,
    Method::HEAD,
    Method::PUT,
    Method::POST,
    Method::DELETE,
];

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    // Pieces separated by '\n': path, query, authorization, key, expiry/now.
    let mut pieces = rest.splitn(5, |&b| b == b'\n');
    let path = String::from_utf8_lossy(pieces.next().unwrap_or_default());
    let query_bytes = pieces.next();
    let query = query_bytes.map(String::from_utf8_lossy);
    let auth = pieces.next().and_then(|b| HeaderValue::from_bytes(b).ok());
    let key = pieces.next().unwrap_or(b"fuzz-key");
    let tail = pieces.next().unwrap_or_default();
    let mut num = [0u8; 8];
    let n = tail.len().min(8);
    num[..n].copy_from_slice(&tail[..n]);
    let now = u64::from_le_bytes(num);

    let method = &METHODS[usize::from(flags) % METHODS.len()];
    let keys = KeySet::new([ApiKey::new("fuzz-primary"), ApiKey::new(key)]);
    let verifier = Verifier::new(keys.clone())
        .legacy_signatures(flags & 0x10 != 0)
        .leeway_secs(if flags & 0x20 != 0 {
            u64::MAX
        } else {
            u64::from(flags)
        });

    let input = VerifyInput {
        method,
        raw_path: &path,
        query: query.as_deref(),
        authorization: auth.as_ref(),
        bearer_only: flags & 0x40 != 0,
    };
    let _ = verifier.verify(&input, now);

    // Pure signing on arbitrary pieces.
    let method_param = query.as_deref().filter(|_| flags & 0x80 != 0);
    let sig = signature(key, &path, now, method_param);
    assert_eq!(sig.len(), 43);

    // A URL made by the signer verifies, for the same method, before its expiry.
    if let Ok(file) = FilePath::from_uri_path(&path) {
        let signed_method = if flags & 1 == 0 {
            SignedMethod::Get
        } else {
            SignedMethod::Put
        };
        let signer = Signer::new(keys.keys()[1].clone(), "");
        let expiry = now.saturating_add(u64::from(flags));
        let url = signer.sign(&file, signed_method, expiry);
        let (raw_path, query) = url.url.split_once('?').expect("signed URLs have a query");
        let method = match signed_method {
            SignedMethod::Get => Method::GET,
            SignedMethod::Put => Method::PUT,
        };
        let input = VerifyInput {
            method: &method,
            raw_path,
            query: Some(query),
            authorization: None,
            bearer_only: false,
        };
        let verified = Verifier::new(keys)
            .verify(&input, now)
            .unwrap_or_else(|e| panic!("signer URL {:?} refused: {e}", url.url));
        assert_eq!(verified.via, Via::SignedUrl);
        assert_eq!(verified.path.as_ref(), Some(&file));
        assert_eq!(verified.expiry, Some(expiry));
    }
});
