//! Ids: random ones (uploads, files, sessions, storage names) and ones derived from a
//! published version. Depends on nothing but [`path`](crate::path), so that the storage and
//! the File object can both use it.

use rand::Rng;

use crate::path::FilePath;

/// The characters of ids.
pub(crate) const ALPHABET: &[u8; 62] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// An id derived from one published version: `prefix` + 16 characters of `[A-Za-z0-9]`
/// from SHA-256 of the prefix, the path and the etag. Not a secret (the etag is in every
/// delivery's `ETag`), and as unique as the storage's etags (see
/// [`Capabilities::stable_meta`](crate::storage::Capabilities::stable_meta)).
pub fn version_id(prefix: &str, path: &FilePath, etag: &str) -> String {
    use sha2::{Digest as _, Sha256};
    let mut h = Sha256::new();
    for part in [prefix, path.as_str(), etag] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    let digest = h.finalize();
    let mut s = String::with_capacity(prefix.len() + 16);
    s.push_str(prefix);
    // 16 of the 32 bytes, each to one of 62 characters (a slight bias, no secret here).
    s.extend(
        digest[..16]
            .iter()
            .map(|&b| ALPHABET[b as usize % 62] as char),
    );
    s
}

/// A random id: `prefix` + 16 characters of `[A-Za-z0-9]`, each uniform (from the thread's
/// CSPRNG, a byte at a time, bytes of 248 and above drawn again).
pub fn random_id(prefix: &str) -> String {
    let mut rng = rand::rng();
    let mut s = String::with_capacity(prefix.len() + 16);
    s.push_str(prefix);
    // One draw of 32 bytes is almost always enough: each byte is kept with p = 248/256.
    let mut pool = [0u8; 32];
    let mut used = pool.len();
    while s.len() < prefix.len() + 16 {
        if used == pool.len() {
            rng.fill(&mut pool);
            used = 0;
        }
        let b = pool[used];
        used += 1;
        if b < 248 {
            s.push(ALPHABET[usize::from(b % 62)] as char);
        }
    }
    s
}
