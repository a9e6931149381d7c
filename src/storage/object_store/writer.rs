//! [`ObjectWriter`]: one chunk of a resumable upload, streamed into its own object.

use async_trait::async_trait;
use bytes::Bytes;
use object_store::path::Path;
use object_store::{Attributes, ObjectStoreExt};
use std::ops::Range;

use super::multipart::{Multipart, PartBuffer};
use super::{ObjectStoreStorage, os_err};
use super::{StorageError, StorageResult, UploadId, merge_ranges};
use crate::storage::ChunkWriter;

/// Streams one chunk into its own object: one PUT when it fits in a part, else a multipart
/// upload (tracked under the upload's `mp/`) completed at `commit`. Nothing is visible at the
/// chunk's key (so nothing counts) before `commit`.
pub(super) struct ObjectWriter {
    pub(super) storage: ObjectStoreStorage,
    pub(super) id: UploadId,
    pub(super) key: Path,
    pub(super) marker: Path,
    pub(super) buf: PartBuffer,
    pub(super) mp: Option<Multipart>,
    pub(super) written: u64,
}

impl ObjectWriter {
    pub(super) async fn send_full_parts(&mut self) -> StorageResult<()> {
        while let Some(part) = self.buf.take_part() {
            if self.mp.is_none() {
                let mp = self
                    .storage
                    .start_multipart(&self.key, self.marker.clone(), Attributes::new())
                    .await?;
                self.mp = Some(mp);
            }
            if let Some(mp) = self.mp.as_mut() {
                self.storage.put_part(mp, part).await?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl ChunkWriter for ObjectWriter {
    async fn write(&mut self, data: Bytes) -> StorageResult<()> {
        self.written += data.len() as u64;
        self.buf.push(data);
        let sent = self.send_full_parts().await;
        closed_or(&self.storage, &self.id, sent).await
    }

    async fn flush(&mut self) -> StorageResult<()> {
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> StorageResult<Vec<Range<u64>>> {
        // Claimed meanwhile: make nothing visible (a chunk that appeared after the claim
        // would count). A claim between this look and the completion below still leaves a
        // window: closing it needs the store's conditional writes, which replace this
        // backend's coordination next.
        if !self.storage.is_open(&self.id).await? {
            if let Some(mp) = self.mp.take() {
                self.storage.abort_multipart(mp).await;
            }
            return Err(StorageError::UploadClosed);
        }
        let stored = self.store_rest().await;
        closed_or(&self.storage, &self.id, stored).await?;
        if !self.storage.is_open(&self.id).await? {
            // Not needed by anyone once the upload is gone; a claimed upload's finalizer may
            // be reading it, so it stays until the upload is forgotten.
            if self.id.0.starts_with('r') && self.storage.info(&self.id).await?.is_none() {
                let _ = self.storage.delete_quiet(&self.key).await;
            }
            return Err(StorageError::UploadClosed);
        }
        let chunks = self.storage.chunks(&self.id).await?;
        Ok(merge_ranges(
            chunks.into_iter().map(|c| c.start..c.end).collect(),
        ))
    }
}

impl ObjectWriter {
    /// Sends what is left: one PUT for a chunk of at most one part, else the last part and
    /// the completion of the multipart upload.
    pub(super) async fn store_rest(&mut self) -> StorageResult<()> {
        if self.written > 0 {
            let rest = self.buf.take_rest();
            match self.mp.take() {
                None => {
                    self.storage
                        .store
                        .put(&self.key, rest)
                        .await
                        .map_err(os_err)?;
                }
                Some(mut mp) => {
                    if rest.content_length() > 0 {
                        self.storage.put_part(&mut mp, rest).await?;
                    }
                    self.storage.complete(mp).await?;
                }
            }
        }
        Ok(())
    }
}

/// A failure of a writer whose upload was finalized or discarded meanwhile (its multipart
/// upload aborted with it) is [`StorageError::UploadClosed`].
pub(super) async fn closed_or<T>(
    storage: &ObjectStoreStorage,
    id: &UploadId,
    result: StorageResult<T>,
) -> StorageResult<T> {
    match result {
        Err(e) if !matches!(e, StorageError::UploadClosed) => {
            if matches!(storage.is_open(id).await, Ok(false)) {
                Err(StorageError::UploadClosed)
            } else {
                Err(e)
            }
        }
        other => other,
    }
}

impl Drop for ObjectWriter {
    fn drop(&mut self) {
        // A writer dropped before its commit: abort its multipart upload now (the sweep
        // would otherwise, with its upload).
        if let Some(mp) = self.mp.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let storage = self.storage.clone();
            rt.spawn(async move { storage.abort_multipart(mp).await });
        }
    }
}
