//! [`ObjectWriter`]: one chunk of an upload, streamed into its own object.

use async_trait::async_trait;
use bytes::Bytes;
use object_store::path::Path;
use object_store::{Attributes, ObjectStoreExt};

use super::multipart::{Multipart, PartBuffer};
use super::{ObjectStoreStorage, os_err};
use super::{StorageResult, UploadWriter};

/// Streams one chunk into its own object: one PUT when it fits in a part, else a multipart
/// upload (tracked under the upload's `mp/`) completed at `commit`. Nothing is visible at the
/// chunk's key before `commit`; whether its range counts is the coordination's decision
/// (`storage/coord`), taken after it.
pub(super) struct ObjectWriter {
    pub(super) storage: ObjectStoreStorage,
    pub(super) key: Path,
    pub(super) marker: Path,
    pub(super) buf: PartBuffer,
    pub(super) mp: Option<Multipart>,
    pub(super) written: u64,
}

impl ObjectWriter {
    async fn send_full_parts(&mut self) -> StorageResult<()> {
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
impl UploadWriter for ObjectWriter {
    async fn write(&mut self, data: Bytes) -> StorageResult<()> {
        self.written += data.len() as u64;
        self.buf.push(data);
        self.send_full_parts().await
    }

    /// Sends what is left: one PUT for a chunk of at most one part, else the last part and
    /// the completion of the multipart upload.
    async fn commit(mut self: Box<Self>) -> StorageResult<()> {
        if self.written == 0 {
            return Ok(());
        }
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
                if rest.content_length() > 0
                    && let Err(e) = self.storage.put_part(&mut mp, rest).await
                {
                    self.storage.abort_multipart(mp).await;
                    return Err(e);
                }
                self.storage.complete(mp).await?;
            }
        }
        Ok(())
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
