//! API keys and the key set (several keys valid at once, for rotation).

use sha2::{Digest, Sha256};
use std::fmt;
use std::sync::Arc;
use subtle::{Choice, ConstantTimeEq};

/// The keyed hash of signatures and session keys.
pub(crate) type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// An HMAC-SHA256 keyed with `key`.
pub(crate) fn keyed_mac(key: &[u8]) -> HmacSha256 {
    use hmac::Mac;
    // HMAC accepts keys of any length (longer ones are hashed), so this never fails.
    <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC accepts keys of any length")
}

/// A secret API key: the bytes a client sends as `Authorization: Bearer <key>`, and the HMAC
/// key of signed URLs.
///
/// Cloning is cheap (the bytes are shared). `Debug` never prints the secret.
///
/// ```
/// use tower_uploads::auth::ApiKey;
///
/// let key = ApiKey::new("sk_live_123");
/// assert_eq!(format!("{key:?}"), "ApiKey(****)");
/// assert_eq!(key.expose_secret(), b"sk_live_123");
/// ```
#[derive(Clone)]
pub struct ApiKey(Arc<[u8]>);

impl ApiKey {
    /// A key made of these bytes.
    pub fn new(secret: impl AsRef<[u8]>) -> Self {
        ApiKey(Arc::from(secret.as_ref()))
    }

    /// The secret bytes, for signing. Do not log them.
    pub fn expose_secret(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(****)")
    }
}

impl From<&str> for ApiKey {
    fn from(s: &str) -> Self {
        ApiKey::new(s)
    }
}

impl From<String> for ApiKey {
    fn from(s: String) -> Self {
        ApiKey::new(s)
    }
}

impl From<Vec<u8>> for ApiKey {
    fn from(v: Vec<u8>) -> Self {
        ApiKey(Arc::from(v))
    }
}

/// The keys accepted at once (rotation: add the new key first, remove the old one later).
///
/// The first key is the [`primary`](KeySet::primary) one, used to sign URLs; every key is
/// accepted as a bearer key and for verifying signatures. Cloning is cheap (an [`Arc`]).
///
/// ```
/// use tower_uploads::auth::{ApiKey, KeySet};
///
/// let keys = KeySet::new([ApiKey::new("new-key"), ApiKey::new("old-key")]);
/// assert_eq!(keys.primary().expose_secret(), b"new-key");
/// assert!(keys.find_bearer(b"old-key"));
/// assert!(!keys.find_bearer(b"other"));
/// ```
#[derive(Clone)]
pub struct KeySet {
    inner: Arc<Inner>,
}

struct Inner {
    /// Never empty.
    keys: Vec<ApiKey>,
    /// SHA-256 of each key, in the same order, for the constant-time bearer check.
    digests: Vec<[u8; 32]>,
    /// Each key's HMAC state after the key schedule, cloned per verification (two SHA-256
    /// compressions saved per key and request).
    macs: Vec<HmacSha256>,
}

impl KeySet {
    /// A key set; the first key is the primary one.
    ///
    /// # Panics
    ///
    /// If `keys` is empty: a server without any key is a configuration error. Use
    /// [`KeySet::try_new`] to handle it without panicking.
    pub fn new(keys: impl IntoIterator<Item = ApiKey>) -> Self {
        match KeySet::try_new(keys) {
            Some(set) => set,
            None => panic!("KeySet::new: at least one API key is required"),
        }
    }

    /// A key set, or `None` if `keys` is empty.
    pub fn try_new(keys: impl IntoIterator<Item = ApiKey>) -> Option<Self> {
        let keys: Vec<ApiKey> = keys.into_iter().collect();
        if keys.is_empty() {
            return None;
        }
        let digests = keys.iter().map(|k| digest(k.expose_secret())).collect();
        let macs = keys.iter().map(|k| keyed_mac(k.expose_secret())).collect();
        Some(KeySet {
            inner: Arc::new(Inner {
                keys,
                digests,
                macs,
            }),
        })
    }

    /// Every key's keyed HMAC-SHA256, ready to be cloned and fed a message.
    pub(crate) fn keyed_macs(&self) -> &[HmacSha256] {
        &self.inner.macs
    }

    /// The key used for signing: the first one given.
    pub fn primary(&self) -> &ApiKey {
        // `Inner::keys` is never empty (checked in `try_new`), so this is the first key.
        &self.inner.keys[0]
    }

    /// All keys, the primary one first.
    pub fn keys(&self) -> &[ApiKey] {
        &self.inner.keys
    }

    /// Number of keys in the set (at least 1).
    pub fn len(&self) -> usize {
        self.inner.keys.len()
    }

    /// Always `false`: a key set has at least one key.
    pub fn is_empty(&self) -> bool {
        self.inner.keys.is_empty()
    }

    /// Whether `presented` is one of the keys.
    ///
    /// Constant time with respect to the keys' contents and lengths: the SHA-256 digest of
    /// `presented` is compared with the digest of every key, always all of them, with
    /// [`subtle::ConstantTimeEq`]; the result does not tell which key matched.
    pub fn find_bearer(&self, presented: &[u8]) -> bool {
        let presented = digest(presented);
        let mut found = Choice::from(0u8);
        for d in &self.inner.digests {
            found |= d.ct_eq(&presented);
        }
        found.into()
    }
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySet")
            .field("keys", &self.inner.keys.len())
            .finish()
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_secrets() {
        let key = ApiKey::new("super-secret");
        assert_eq!(format!("{key:?}"), "ApiKey(****)");
        let set = KeySet::new([key, ApiKey::new("other-secret")]);
        let dbg = format!("{set:?}");
        assert!(!dbg.contains("secret"), "{dbg}");
        assert_eq!(dbg, "KeySet { keys: 2 }");
    }

    #[test]
    fn bearer_lookup() {
        let set = KeySet::new([ApiKey::new("k1"), ApiKey::new("k2-longer")]);
        assert!(set.find_bearer(b"k1"));
        assert!(set.find_bearer(b"k2-longer"));
        assert!(!set.find_bearer(b"k2"));
        assert!(!set.find_bearer(b"k1 "));
        assert!(!set.find_bearer(b""));
        assert_eq!(set.primary().expose_secret(), b"k1");
        assert_eq!(set.len(), 2);
        assert!(!set.is_empty());
    }

    #[test]
    fn empty_set() {
        assert!(KeySet::try_new(Vec::new()).is_none());
        assert!(std::panic::catch_unwind(|| KeySet::new(Vec::new())).is_err());
    }
}
