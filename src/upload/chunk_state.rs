//! What a resumable upload records about itself beside its bytes, in the storage's records
//! ([`Storage::put_record`]), so that every process sharing the storage sees it:
//!
//! - the precondition of the chunk that created it (`If-None-Match: *` or `If-Match`,
//!   PROTOCOL.md §4), applied again when the upload is published;
//! - with private delivery, the range and SHA-256 of every chunk it received, and when it was
//!   completed: a chunk sent again after completion (its `201` lost) is recognised as a retry
//!   from these, never by comparing it with the stored file, which a write credential must
//!   not be able to probe (PROTOCOL.md §4, SECURITY.md "Write credentials as read oracles").
//!
//! Layout, under `chunked/<k>` where `<k>` is 32 hex digits of the SHA-256 of the upload id:
//! `if` (the precondition: `create`, or `update:<etag>`), `c.<start>.<end>` (the SHA-256 of
//! the first chunk of that range the upload received, `end` exclusive; created once, so a
//! later chunk of the same range whose bytes were skipped as already received never replaces
//! it) and `done` (the completion time, unix seconds). Every look-up is one record read by
//! name: no listing on a request's path. Everything is written best effort after the fact it describes, so a lost
//! record only makes a retry start a new upload (never a wrong answer); the sweeper
//! ([`sweep`]) removes the records of uploads that are gone and of completions older than the
//! upload TTL.

use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::ops::Range;
use std::time::{Duration, SystemTime};

use crate::storage::StorageExt;
use crate::storage::{
    PutMode, RecordKey, RecordMode, Storage, StorageError, StorageResult, UploadId,
};

const ROOT: &str = "chunked";
const PRECONDITION: &str = "if";
const DONE: &str = "done";

/// The records of one upload.
pub(crate) struct ChunkState<'a> {
    storage: &'a dyn Storage,
    base: RecordKey,
}

fn key_of(id: &UploadId) -> String {
    let digest = Sha256::digest(id.0.as_bytes());
    hex::encode(&digest[..16])
}

fn record_key(s: String) -> StorageResult<RecordKey> {
    RecordKey::new(s).map_err(StorageError::backend)
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The name of the record of a chunk of `range`.
fn chunk_segment(range: &Range<u64>) -> String {
    format!("c.{}.{}", range.start, range.end)
}

impl<'a> ChunkState<'a> {
    /// The records of upload `id`.
    pub(crate) fn of(storage: &'a dyn Storage, id: &UploadId) -> StorageResult<Self> {
        Ok(ChunkState {
            storage,
            base: record_key(format!("{ROOT}/{}", key_of(id)))?,
        })
    }

    fn child(&self, segment: &str) -> StorageResult<RecordKey> {
        self.base.join(segment).map_err(StorageError::backend)
    }

    /// Records the precondition the upload was created under (nothing for `Overwrite`).
    pub(crate) async fn set_precondition(&self, mode: &PutMode) -> StorageResult<()> {
        let value = match mode {
            PutMode::Overwrite => return Ok(()),
            PutMode::Create => "create".to_owned(),
            PutMode::Update(etag) => format!("update:{etag}"),
        };
        self.storage
            .put_record(
                &self.child(PRECONDITION)?,
                Bytes::from(value),
                RecordMode::Overwrite,
            )
            .await
            .map(drop)
    }

    /// The precondition the upload was created under (`Overwrite` when none was recorded).
    pub(crate) async fn precondition(&self) -> StorageResult<PutMode> {
        let Some(value) = self.storage.get_record(&self.child(PRECONDITION)?).await? else {
            return Ok(PutMode::Overwrite);
        };
        Ok(parse_precondition(&value.value))
    }

    /// Records that the upload received the chunk `range` (end exclusive) with SHA-256
    /// `digest`.
    pub(crate) async fn record_chunk(
        &self,
        range: &Range<u64>,
        digest: &[u8; 32],
    ) -> StorageResult<()> {
        let key = self.child(&chunk_segment(range))?;
        let put = self
            .storage
            .put_record(&key, Bytes::copy_from_slice(digest), RecordMode::Create);
        match put.await {
            // The range's first chunk is recorded already: it stays.
            Ok(_) | Err(StorageError::PreconditionFailed) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Records that the upload completed at `at`.
    pub(crate) async fn set_done(&self, at: SystemTime) -> StorageResult<()> {
        self.storage
            .put_record(
                &self.child(DONE)?,
                Bytes::from(unix_secs(at).to_string()),
                RecordMode::Overwrite,
            )
            .await
            .map(drop)
    }

    /// Whether the upload completed less than `ttl` ago.
    async fn done_within(&self, ttl: Duration) -> StorageResult<bool> {
        let Some(value) = self.storage.get_record(&self.child(DONE)?).await? else {
            return Ok(false);
        };
        Ok(done_is_fresh(&value.value, SystemTime::now(), ttl))
    }

    /// Whether the upload, completed less than `ttl` ago, received a chunk of one of the
    /// `candidates` ranges (whatever its bytes): only then can a chunk be a retry of it.
    pub(crate) async fn has_range(
        &self,
        candidates: &[Range<u64>],
        ttl: Duration,
    ) -> StorageResult<bool> {
        if !self.done_within(ttl).await? {
            return Ok(false);
        }
        for range in candidates {
            let key = self.child(&chunk_segment(range))?;
            if self.storage.get_record(&key).await?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether the upload, completed less than `ttl` ago, received exactly this chunk.
    pub(crate) async fn received_chunk(
        &self,
        range: &Range<u64>,
        digest: &[u8; 32],
        ttl: Duration,
    ) -> StorageResult<bool> {
        if !self.done_within(ttl).await? {
            return Ok(false);
        }
        let key = self.child(&chunk_segment(range))?;
        let recorded = self.storage.get_record(&key).await?;
        Ok(recorded.is_some_and(|d| d.value.as_ref() == digest.as_slice()))
    }

    /// Deletes every record of the upload.
    pub(crate) async fn forget(&self) -> StorageResult<()> {
        forget_all(self.storage, &self.base).await
    }
}

async fn forget_all(storage: &dyn Storage, base: &RecordKey) -> StorageResult<()> {
    for key in storage.list_records(base).await? {
        storage.delete_record(&key).await?;
    }
    Ok(())
}

fn parse_precondition(value: &[u8]) -> PutMode {
    match value {
        b"create" => PutMode::Create,
        v => match v.strip_prefix(b"update:") {
            Some(etag) => PutMode::Update(String::from_utf8_lossy(etag).into_owned()),
            None => PutMode::Overwrite,
        },
    }
}

fn done_is_fresh(value: &[u8], now: SystemTime, ttl: Duration) -> bool {
    let Some(at) = std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
    else {
        return false;
    };
    unix_secs(now).saturating_sub(at) <= ttl.as_secs()
}

/// Removes the records of uploads that are neither in progress nor completed less than `ttl`
/// ago. Returns how many uploads' records were removed.
///
/// The records are listed before the uploads, so an upload created meanwhile is never taken
/// for gone; one that completed meanwhile wrote its `done` before it went.
pub(crate) async fn sweep(
    storage: &std::sync::Arc<dyn Storage>,
    ttl: Duration,
) -> StorageResult<usize> {
    let root = record_key(ROOT.to_owned())?;
    let listed = storage.list_records(&root).await?;
    if listed.is_empty() {
        return Ok(0);
    }
    let live: std::collections::HashSet<String> = storage
        .list_uploads()
        .await?
        .iter()
        .map(|u| key_of(&u.id))
        .collect();
    let now = SystemTime::now();
    let mut bases: Vec<RecordKey> = Vec::new();
    for key in listed {
        let Some(rest) = key.as_str().strip_prefix("chunked/") else {
            continue;
        };
        let Some((upload, _)) = rest.split_once('/') else {
            continue;
        };
        let base = root.join(upload).map_err(StorageError::backend)?;
        if !bases.contains(&base) {
            bases.push(base);
        }
    }
    let mut removed = 0;
    for base in bases {
        let upload = &base.as_str()[ROOT.len() + 1..];
        if live.contains(upload) {
            continue;
        }
        let done = base.join(DONE).map_err(StorageError::backend)?;
        if let Some(value) = storage.get_record(&done).await?
            && done_is_fresh(&value.value, now, ttl)
        {
            continue;
        }
        forget_all(&**storage, &base).await?;
        removed += 1;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{MemoryStorage, Storage, StorageExt};
    use std::sync::Arc;

    #[test]
    fn preconditions_round_trip() {
        for (mode, text) in [
            (PutMode::Create, "create"),
            (PutMode::Update("abc".into()), "update:abc"),
        ] {
            assert_eq!(parse_precondition(text.as_bytes()), mode);
        }
        assert_eq!(parse_precondition(b"junk"), PutMode::Overwrite);
    }

    #[test]
    fn freshness() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let ttl = Duration::from_secs(100);
        for (value, fresh) in [
            (&b"1000"[..], true),
            (b"900", true),
            (b"899", false),
            (b"", false),
            (b"x", false),
            (b"2000", true),
        ] {
            assert_eq!(done_is_fresh(value, now, ttl), fresh, "{value:?}");
        }
    }

    #[tokio::test]
    async fn chunks_are_recognised_only_after_completion_and_exactly() {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let id = UploadId("r.some.upload".into());
        let state = ChunkState::of(&*storage, &id).unwrap();
        let ttl = Duration::from_secs(60);
        let d = [7u8; 32];
        state.record_chunk(&(0..10), &d).await.unwrap();
        assert!(!state.received_chunk(&(0..10), &d, ttl).await.unwrap());
        assert!(!state.has_range(&[0..10], ttl).await.unwrap());
        state.set_done(SystemTime::now()).await.unwrap();
        assert!(state.received_chunk(&(0..10), &d, ttl).await.unwrap());
        assert!(
            !state
                .received_chunk(&(0..10), &[8u8; 32], ttl)
                .await
                .unwrap()
        );
        assert!(!state.received_chunk(&(0..9), &d, ttl).await.unwrap());
        // A later chunk of the same range (its bytes skipped as received) is not recorded.
        state.record_chunk(&(0..10), &[9u8; 32]).await.unwrap();
        assert!(state.received_chunk(&(0..10), &d, ttl).await.unwrap());
        assert!(
            !state
                .received_chunk(&(0..10), &[9u8; 32], ttl)
                .await
                .unwrap()
        );
        assert!(state.has_range(&[0..9, 0..10], ttl).await.unwrap());
        assert!(!state.has_range(&[0..1], ttl).await.unwrap());
        // A sweep keeps a fresh completion, removes a stale one.
        assert_eq!(sweep(&storage, ttl).await.unwrap(), 0);
        state
            .set_done(SystemTime::now() - Duration::from_secs(120))
            .await
            .unwrap();
        assert_eq!(sweep(&storage, ttl).await.unwrap(), 1);
        assert!(!state.has_range(&[0..10], Duration::MAX).await.unwrap());
    }

    #[tokio::test]
    async fn sweep_keeps_live_uploads_and_drops_orphans() {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let path = crate::path::FilePath::new("a/b.bin").unwrap();
        let live = storage
            .open_upload(&path, crate::storage::UploadSpec::Resumable { total: 10 })
            .await
            .unwrap()
            .id;
        let gone = UploadId("gone".into());
        for id in [&live, &gone] {
            let s = ChunkState::of(&*storage, id).unwrap();
            s.set_precondition(&PutMode::Create).await.unwrap();
        }
        let ttl = Duration::from_secs(60);
        assert_eq!(sweep(&storage, ttl).await.unwrap(), 1);
        let s = ChunkState::of(&*storage, &live).unwrap();
        assert_eq!(s.precondition().await.unwrap(), PutMode::Create);
        let g = ChunkState::of(&*storage, &gone).unwrap();
        assert_eq!(g.precondition().await.unwrap(), PutMode::Overwrite);
    }
}
