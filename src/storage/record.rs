//! Records: small named documents a storage keeps beside the files (upload sessions, media
//! entries, session parts). See [`Storage::put_record`](super::Storage::put_record).

use async_trait::async_trait;
use bytes::Bytes;
use std::fmt;

use super::StorageResult;

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
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordMode {
    /// Only if there is none: exactly one of several concurrent creators (across processes)
    /// succeeds; the others get [`StorageError::PreconditionFailed`](super::StorageError).
    Create,
    /// Replace whatever is there; readers see the old value or the new one, never a mix.
    Overwrite,
    /// Compare-and-swap: replace the record only if its etag is still this one (the
    /// [`Record::etag`] a read returned). Of several concurrent updates from the same etag,
    /// exactly one succeeds; the others, and an update of a record that is gone, get
    /// [`StorageError::PreconditionFailed`](super::StorageError).
    Update(String),
}

/// A record as [`Storage::get_record`](super::Storage::get_record) returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Its value.
    pub value: Bytes,
    /// Its version tag, for [`RecordMode::Update`]: different whenever the value differs.
    pub etag: String,
}

impl Record {
    /// A record whose etag is derived from its value ([`Record::etag_of`]): what a backend
    /// without version numbers of its own returns.
    pub fn new(value: Bytes) -> Record {
        let etag = Record::etag_of(&value);
        Record { value, etag }
    }

    /// A digest of `value` (hex of its SHA-256's first 16 bytes). With it, an update
    /// compares values: it succeeds when the record still holds the value that was read,
    /// which is all [`RecordMode::Update`] needs.
    pub fn etag_of(value: &[u8]) -> String {
        use sha2::Digest;
        hex::encode(&sha2::Sha256::digest(value)[..16])
    }
}

/// Records kept apart from a storage's bytes: where a storage that cannot decide
/// create-only and compare-and-swap writes itself (an object store that ignores conditional
/// writes) keeps its records, or where an app wants them (its own database). The methods and
/// their promises are [`Storage`](super::Storage)'s record methods
/// ([`put_record`](super::Storage::put_record) and the others): above all, of concurrent
/// [`RecordMode::Create`] or [`RecordMode::Update`] writes of one key, from any number of
/// processes, exactly one succeeds.
///
/// The crate's: [`PostgresRecords`](super::PostgresRecords) (feature `postgres`); used
/// by [`ObjectStoreStorage::with_records`](super::ObjectStoreStorage::with_records).
#[async_trait]
pub trait RecordStore: Send + Sync + 'static {
    /// Writes a record (see [`Storage::put_record`](super::Storage::put_record)); returns its
    /// new etag.
    async fn put_record(
        &self,
        key: &RecordKey,
        value: Bytes,
        mode: RecordMode,
    ) -> StorageResult<String>;
    /// Reads a record.
    async fn get_record(&self, key: &RecordKey) -> StorageResult<Option<Record>>;
    /// Deletes a record; whether there was one.
    async fn delete_record(&self, key: &RecordKey) -> StorageResult<bool>;
    /// The keys under `prefix` (`prefix/…`), in any order.
    async fn list_records(&self, prefix: &RecordKey) -> StorageResult<Vec<RecordKey>>;
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
