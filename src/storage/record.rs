//! Records: small named documents a storage keeps beside the files (upload sessions, media
//! entries, session parts). See [`Storage::put_record`](super::Storage::put_record).

use std::fmt;

/// The longest record key, in bytes.
pub const MAX_RECORD_KEY: usize = 512;

/// The name of a record: `/`-separated segments of `[A-Za-z0-9_.-]` (not `.` or `..`, not
/// starting with `.`), at most [`MAX_RECORD_KEY`] bytes. Backends may map it to a file path
/// or an object key as it is.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordKey(String);

/// A string that is not a valid [`RecordKey`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid record key: {0}")]
pub struct InvalidRecordKey(&'static str);

impl RecordKey {
    /// Validates `key`.
    pub fn new(key: impl Into<String>) -> Result<RecordKey, InvalidRecordKey> {
        let key = key.into();
        if key.is_empty() {
            return Err(InvalidRecordKey("empty"));
        }
        if key.len() > MAX_RECORD_KEY {
            return Err(InvalidRecordKey("too long"));
        }
        for seg in key.split('/') {
            if seg.is_empty() {
                return Err(InvalidRecordKey("empty segment"));
            }
            if seg.starts_with('.') {
                return Err(InvalidRecordKey("a segment starts with '.'"));
            }
            if !seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
            {
                return Err(InvalidRecordKey("a character outside [A-Za-z0-9_.-/]"));
            }
        }
        Ok(RecordKey(key))
    }

    /// The key as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `self/segment`, validated.
    pub fn join(&self, segment: &str) -> Result<RecordKey, InvalidRecordKey> {
        RecordKey::new(format!("{}/{segment}", self.0))
    }

    /// Whether `self` lies under `prefix` (`prefix/…`, not `prefix` itself).
    pub fn is_under(&self, prefix: &RecordKey) -> bool {
        self.0.len() > prefix.0.len()
            && self.0.starts_with(&prefix.0)
            && self.0.as_bytes()[prefix.0.len()] == b'/'
    }
}

impl fmt::Display for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How [`Storage::put_record`](super::Storage::put_record) treats a record already there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordMode {
    /// Only if there is none: exactly one of several concurrent creators (across processes)
    /// succeeds; the others get [`StorageError::PreconditionFailed`](super::StorageError).
    Create,
    /// Replace whatever is there; readers see the old value or the new one, never a mix.
    Overwrite,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_from_a_table() {
        let ok = ["sessions/sess_abc", "a", "media/med_1/part.3", "x-y_z/0"];
        for k in ok {
            assert!(RecordKey::new(k).is_ok(), "{k}");
        }
        let bad = [
            "", "/a", "a/", "a//b", ".a", "a/..", "a/.", "a b", "a\\b", "é", "a\0",
        ];
        for k in bad {
            assert!(RecordKey::new(k).is_err(), "{k:?}");
        }
        assert!(RecordKey::new("a".repeat(MAX_RECORD_KEY + 1)).is_err());
    }

    #[test]
    fn under() {
        let p = RecordKey::new("sessions/s1").unwrap();
        assert!(RecordKey::new("sessions/s1/parts/0").unwrap().is_under(&p));
        assert!(!RecordKey::new("sessions/s10").unwrap().is_under(&p));
        assert!(!p.is_under(&p));
        assert_eq!(p.join("parts").unwrap().as_str(), "sessions/s1/parts");
    }
}
