//! Upload-session keys (PROTOCOL.md §7): the opaque `?key=` of `/store/…` URLs. Pure: no I/O,
//! no clock.
//!
//! A key is `base64url_nopad(payload ‖ mac)` where `payload` is the ASCII text
//! `<session id>.<expiry>.<s|r>` and `mac` the 32-byte HMAC-SHA256 of
//! `"tower-uploads session key\n" ‖ payload` under an API key. The prefix keeps session keys
//! and signed URLs apart (a signed URL's message is a path, which never holds a newline).
//! Verification tries every key of the set (rotation) and compares in constant time.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::Mac;
use subtle::ConstantTimeEq;

use crate::auth::{ApiKey, KeySet};

/// The domain-separation prefix of the signed message.
const DOMAIN: &[u8] = b"tower-uploads session key\n";
/// The longest key accepted, in characters (a real one is about 90).
pub const MAX_KEY_LEN: usize = 256;
const MAC_LEN: usize = 32;

/// What a session key names, once verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionKey {
    /// The session id: `ses_` + alphanumerics.
    pub id: String,
    /// Unix seconds after which the key is expired.
    pub expiry: u64,
    /// Whether the session is resumable (`/store/resumable`) or simple (`/store/single`).
    pub resumable: bool,
}

/// Why a key was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not a key this crate makes (bad encoding, bad layout, too long).
    #[error("the upload key is malformed")]
    Malformed,
    /// Well-formed, but no API key signed it: tampered, or from another app.
    #[error("the upload key is not valid")]
    Forged,
}

impl SessionKey {
    /// Encodes and signs the key with `key`.
    pub fn encode(&self, key: &ApiKey) -> String {
        let payload = self.payload();
        let mut mac = crate::auth::keyed_hmac(key.expose_secret());
        mac.update(DOMAIN);
        mac.update(payload.as_bytes());
        let mut bytes = payload.into_bytes();
        bytes.extend_from_slice(&mac.finalize().into_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn payload(&self) -> String {
        format!(
            "{}.{}.{}",
            self.id,
            self.expiry,
            if self.resumable { 'r' } else { 's' }
        )
    }

    /// Decodes `key` (as found in the query, already percent-decoded) and checks its MAC
    /// against every key of `keys`. Says nothing about expiry: the caller compares
    /// [`expiry`](Self::expiry) with the clock.
    pub fn decode(key: &str, keys: &KeySet) -> Result<SessionKey, KeyError> {
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Err(KeyError::Malformed);
        }
        // Accept padding and the standard alphabet too: clients re-encode keys.
        let normalized: String = key
            .trim_end_matches('=')
            .chars()
            .map(|c| match c {
                '+' => '-',
                '/' => '_',
                c => c,
            })
            .collect();
        let bytes = URL_SAFE_NO_PAD
            .decode(normalized.as_bytes())
            .map_err(|_| KeyError::Malformed)?;
        if bytes.len() <= MAC_LEN {
            return Err(KeyError::Malformed);
        }
        let (payload, mac) = bytes.split_at(bytes.len() - MAC_LEN);
        let parsed = parse_payload(payload).ok_or(KeyError::Malformed)?;
        let mut ok = subtle::Choice::from(0u8);
        for keyed in keys.keyed_macs() {
            let mut m = keyed.clone();
            m.update(DOMAIN);
            m.update(payload);
            ok |= m.finalize().into_bytes().as_slice().ct_eq(mac);
        }
        if bool::from(ok) {
            Ok(parsed)
        } else {
            Err(KeyError::Forged)
        }
    }
}

fn parse_payload(payload: &[u8]) -> Option<SessionKey> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut parts = text.split('.');
    let (id, expiry, mode) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !is_session_id(id) {
        return None;
    }
    if expiry.is_empty() || expiry.len() > 20 || !expiry.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let expiry = expiry.parse().ok()?;
    let resumable = match mode {
        "r" => true,
        "s" => false,
        _ => return None,
    };
    Some(SessionKey {
        id: id.to_owned(),
        expiry,
        resumable,
    })
}

/// Whether `id` looks like a session id: `ses_` + 8 to 64 alphanumerics.
pub fn is_session_id(id: &str) -> bool {
    id.strip_prefix("ses_").is_some_and(|rest| {
        (8..=64).contains(&rest.len()) && rest.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> KeySet {
        KeySet::new([ApiKey::new("k1"), ApiKey::new("k2")])
    }

    fn sample() -> SessionKey {
        SessionKey {
            id: "ses_abcdefgh12345678".into(),
            expiry: 1_800_000_000,
            resumable: true,
        }
    }

    #[test]
    fn roundtrip_with_every_key_of_the_set() {
        for k in keys().keys() {
            let encoded = sample().encode(k);
            assert!(encoded.len() < MAX_KEY_LEN);
            assert_eq!(SessionKey::decode(&encoded, &keys()), Ok(sample()));
        }
        let simple = SessionKey {
            resumable: false,
            ..sample()
        };
        assert_eq!(
            SessionKey::decode(&simple.encode(&ApiKey::new("k1")), &keys()),
            Ok(simple)
        );
    }

    #[test]
    fn foreign_and_tampered_keys() {
        let other = sample().encode(&ApiKey::new("someone else"));
        assert_eq!(SessionKey::decode(&other, &keys()), Err(KeyError::Forged));

        let good = sample().encode(&ApiKey::new("k1"));
        // Flip every character in turn: never accepted, never a panic.
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        for i in 0..good.len() {
            let mut t: Vec<char> = good.chars().collect();
            let c = t[i];
            t[i] = alphabet.chars().find(|&x| x != c).unwrap();
            let t: String = t.into_iter().collect();
            assert!(SessionKey::decode(&t, &keys()).is_err(), "{t}");
        }
        // A longer expiry forged into the payload, MAC kept.
        let raw = URL_SAFE_NO_PAD.decode(&good).unwrap();
        let (payload, mac) = raw.split_at(raw.len() - 32);
        let forged_payload = String::from_utf8(payload.to_vec())
            .unwrap()
            .replace("1800000000", "9999999999");
        let mut forged = forged_payload.into_bytes();
        forged.extend_from_slice(mac);
        assert_eq!(
            SessionKey::decode(&URL_SAFE_NO_PAD.encode(forged), &keys()),
            Err(KeyError::Forged)
        );
    }

    #[test]
    fn malformed_keys_from_a_table() {
        let mac = [0u8; 32];
        let with_mac = |p: &str| {
            let mut b = p.as_bytes().to_vec();
            b.extend_from_slice(&mac);
            URL_SAFE_NO_PAD.encode(b)
        };
        let long = "A".repeat(MAX_KEY_LEN + 1);
        let cases = [
            String::new(),
            "!!!".into(),
            "aGVsbG8".into(), // too short for a MAC
            long,
            with_mac("ses_abcdefgh.1.x"),
            with_mac("ses_abcdefgh.1"),
            with_mac("ses_abcdefgh.1.r.extra"),
            with_mac("ses_abc.1.r"),
            with_mac("sess_abcdefgh.1.r"),
            with_mac("ses_abcdefgh.-1.r"),
            with_mac("ses_abcdefgh..r"),
            with_mac("ses_abcdefgh.99999999999999999999999.r"),
            with_mac("ses_abcd/fgh.1.r"),
        ];
        for c in cases {
            assert_eq!(
                SessionKey::decode(&c, &keys()),
                Err(KeyError::Malformed),
                "{c}"
            );
        }
        // Padding and the standard alphabet are accepted.
        let good = sample().encode(&ApiKey::new("k2"));
        let std_alpha: String = good
            .chars()
            .map(|c| match c {
                '-' => '+',
                '_' => '/',
                c => c,
            })
            .collect();
        let padded = format!("{std_alpha}{}", "=".repeat((4 - good.len() % 4) % 4));
        assert_eq!(SessionKey::decode(&padded, &keys()), Ok(sample()));
    }
}
