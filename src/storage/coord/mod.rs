//! The upload operations of the service — open, join, write and record ranges, claim,
//! publish, abort, list — on any [`Storage`]: [`StorageExt`].
//!
//! A backend implements only bytes and records ([`Storage`]'s required methods); the
//! exactly-once decisions are made here, once, on its records (`records.rs`):
//!
//! - a path's resumable upload is created or joined through a create-only index record;
//! - received ranges, the claim and its lease live in one record per upload, changed only
//!   by compare-and-swap ([`RecordMode::Update`](super::RecordMode::Update));
//! - a writer of a shared upload holds a lease record while it writes, and a claim waits for
//!   the live ones, so that once a claim is won no write is in flight.
//!
//! A backend with faster coordination of its own ([`FsStorage`](super::FsStorage): `flock`s
//! and positional writes into one file) says so through [`Storage::coordinator`]; then every
//! operation here is its.

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use std::ops::Range;
use std::sync::Arc;

use super::{
    Claim, ObjectMeta, PublishOptions, Storage, StorageResult, UploadId, UploadInfo, UploadSpec,
    UploadWriter,
};
use crate::path::FilePath;

mod records;

#[cfg(any(test, feature = "conformance"))]
pub(crate) use records::plant_claim;

/// A writer of the service's view: [`commit`](Self::commit) records the range and answers
/// every range received so far. Obtained from [`StorageExt::writer`].
#[async_trait]
pub trait ChunkWriter: Send {
    /// Writes `data` at the current position.
    async fn write(&mut self, data: Bytes) -> StorageResult<()>;

    /// Writes out what is gathered (see [`UploadWriter::flush`]). The default does nothing.
    async fn flush(&mut self) -> StorageResult<()> {
        Ok(())
    }

    /// Makes the bytes durable, records the written range as received, and returns every
    /// range received so far, merged and ascending; [`StorageError::UploadClosed`](super::StorageError::UploadClosed)
    /// when the upload was claimed, published, aborted or swept meanwhile.
    async fn commit(self: Box<Self>) -> StorageResult<Vec<Range<u64>>>;
}

/// The coordination of a backend that does it natively (see [`Storage::coordinator`]):
/// the same operations and promises as [`StorageExt`], all or none.
#[doc(hidden)]
#[async_trait]
pub trait Coordinate: Send + Sync {
    async fn open_upload(&self, path: &FilePath, spec: UploadSpec) -> StorageResult<UploadInfo>;
    async fn find_upload(&self, path: &FilePath) -> StorageResult<Option<UploadInfo>>;
    async fn writer(&self, upload: &UploadId, offset: u64) -> StorageResult<Box<dyn ChunkWriter>>;
    async fn received(&self, upload: &UploadId) -> StorageResult<Vec<Range<u64>>>;
    async fn claim(&self, upload: &UploadId) -> StorageResult<Claim>;
    async fn unclaim(&self, upload: &UploadId) -> StorageResult<()>;
    async fn publish(
        &self,
        upload: &UploadId,
        path: &FilePath,
        size: u64,
        options: PublishOptions,
    ) -> StorageResult<ObjectMeta>;
    async fn abort(&self, upload: &UploadId) -> StorageResult<()>;
    async fn list_uploads(&self) -> StorageResult<Vec<UploadInfo>>;
}

/// A [`ChunkWriter`] as an [`UploadWriter`] (its ranges dropped): what a natively
/// coordinating backend returns from [`Storage::write_upload`].
pub(crate) struct Durable(pub Box<dyn ChunkWriter>);

#[async_trait]
impl UploadWriter for Durable {
    async fn write(&mut self, data: Bytes) -> StorageResult<()> {
        self.0.write(data).await
    }
    async fn flush(&mut self) -> StorageResult<()> {
        self.0.flush().await
    }
    async fn commit(self: Box<Self>) -> StorageResult<()> {
        self.0.commit().await.map(drop)
    }
}

/// The operations of uploads in progress, on any shared [`Storage`]: the crate's
/// coordination on the storage's records, or the backend's own (see the
/// [storage module docs](crate::storage)). Every method may be called concurrently, from
/// several processes sharing the storage.
///
/// An upload id may name an upload that is finished (published or aborted) or expired
/// (swept): another process finished it, or a client retried late. Then:
///
/// | method | for an upload that is gone |
/// |---|---|
/// | [`find_upload`](Self::find_upload) | `Ok(None)` |
/// | [`writer`](Self::writer), [`ChunkWriter::write`], [`ChunkWriter::commit`] | `UploadClosed` (or `NotFound`); a range of a gone upload never counts |
/// | [`received`](Self::received) | `NotFound` (or `UploadClosed`) |
/// | [`claim`](Self::claim) | `Ok(Claim::Lost)` |
/// | [`unclaim`](Self::unclaim), [`abort`](Self::abort) | `Ok(())`: idempotent |
/// | [`publish`](Self::publish) | `UploadClosed`, and nothing published |
///
/// ```
/// use std::sync::Arc;
/// use tower_uploads::path::FilePath;
/// use tower_uploads::storage::{Claim, MemoryStorage, PublishOptions, Storage, StorageExt, UploadSpec};
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
/// let path = FilePath::new("hello.txt").unwrap();
/// let upload = storage.open_upload(&path, UploadSpec::Single).await.unwrap();
/// let mut w = storage.writer(&upload.id, 0).await.unwrap();
/// w.write("hello".into()).await.unwrap();
/// assert_eq!(w.commit().await.unwrap(), vec![0..5]);
/// assert_eq!(storage.claim(&upload.id).await.unwrap(), Claim::Won);
/// let meta = storage.publish(&upload.id, &path, 5, PublishOptions::default()).await.unwrap();
/// assert_eq!(meta.size, 5);
/// # });
/// ```
// Not `#[async_trait]`: each method hands on the one boxed future of the backend's own
// coordination (or boxes the crate's), instead of boxing a future that awaits another boxed one.
pub trait StorageExt {
    /// Opens an upload for `path`: a fresh private one ([`UploadSpec::Single`],
    /// [`UploadSpec::Lasting`]), or the path's shared resumable upload, created or joined
    /// atomically (two processes racing to create it end up in the same upload).
    fn open_upload<'a>(
        &'a self,
        path: &'a FilePath,
        spec: UploadSpec,
    ) -> BoxFuture<'a, StorageResult<UploadInfo>>;

    /// The resumable upload in progress for `path`, if any (never creates one).
    fn find_upload<'a>(
        &'a self,
        path: &'a FilePath,
    ) -> BoxFuture<'a, StorageResult<Option<UploadInfo>>>;

    /// A writer at `offset` of the upload; [`StorageError::UploadClosed`](super::StorageError::UploadClosed)
    /// once it is claimed or gone.
    fn writer<'a>(
        &'a self,
        upload: &'a UploadId,
        offset: u64,
    ) -> BoxFuture<'a, StorageResult<Box<dyn ChunkWriter>>>;

    /// The ranges received so far (committed), merged and ascending.
    fn received<'a>(
        &'a self,
        upload: &'a UploadId,
    ) -> BoxFuture<'a, StorageResult<Vec<Range<u64>>>>;

    /// Claims the right to finalize the upload: exactly one caller ever gets [`Claim::Won`],
    /// across processes, except that a claim whose holder died may be taken over (see
    /// [`Storage`]'s docs). Once won, writers are refused and no write is in flight. A
    /// winner goes on to [`publish`](Self::publish), [`unclaim`](Self::unclaim) or
    /// [`abort`](Self::abort) promptly.
    fn claim<'a>(&'a self, upload: &'a UploadId) -> BoxFuture<'a, StorageResult<Claim>>;

    /// Gives up a won claim without discarding the upload: the next claim wins.
    fn unclaim<'a>(&'a self, upload: &'a UploadId) -> BoxFuture<'a, StorageResult<()>>;

    /// Publishes the first `size` bytes of an upload this caller claimed, atomically, then
    /// forgets the upload; [`StorageError::UploadClosed`](super::StorageError::UploadClosed)
    /// (and nothing published) when the claim was taken over or the upload is gone.
    fn publish<'a>(
        &'a self,
        upload: &'a UploadId,
        path: &'a FilePath,
        size: u64,
        options: PublishOptions,
    ) -> BoxFuture<'a, StorageResult<ObjectMeta>>;

    /// Discards an upload, its bytes and its bookkeeping. Idempotent.
    fn abort<'a>(&'a self, upload: &'a UploadId) -> BoxFuture<'a, StorageResult<()>>;

    /// Every upload in progress (also those a crashed process left), for the sweeper.
    fn list_uploads(&self) -> BoxFuture<'_, StorageResult<Vec<UploadInfo>>>;
}

impl<S: Storage + ?Sized> StorageExt for Arc<S> {
    fn open_upload<'a>(
        &'a self,
        path: &'a FilePath,
        spec: UploadSpec,
    ) -> BoxFuture<'a, StorageResult<UploadInfo>> {
        match self.coordinator() {
            Some(c) => c.open_upload(path, spec),
            None => Box::pin(records::open_upload(&**self, path, spec)),
        }
    }

    fn find_upload<'a>(
        &'a self,
        path: &'a FilePath,
    ) -> BoxFuture<'a, StorageResult<Option<UploadInfo>>> {
        match self.coordinator() {
            Some(c) => c.find_upload(path),
            None => Box::pin(records::find_upload(&**self, path)),
        }
    }

    fn writer<'a>(
        &'a self,
        upload: &'a UploadId,
        offset: u64,
    ) -> BoxFuture<'a, StorageResult<Box<dyn ChunkWriter>>> {
        match self.coordinator() {
            Some(c) => c.writer(upload, offset),
            None => Box::pin(records::writer(self.clone(), upload, offset)),
        }
    }

    fn received<'a>(
        &'a self,
        upload: &'a UploadId,
    ) -> BoxFuture<'a, StorageResult<Vec<Range<u64>>>> {
        match self.coordinator() {
            Some(c) => c.received(upload),
            None => Box::pin(records::received(&**self, upload)),
        }
    }

    fn claim<'a>(&'a self, upload: &'a UploadId) -> BoxFuture<'a, StorageResult<Claim>> {
        match self.coordinator() {
            Some(c) => c.claim(upload),
            None => Box::pin(records::claim(self.clone(), upload)),
        }
    }

    fn unclaim<'a>(&'a self, upload: &'a UploadId) -> BoxFuture<'a, StorageResult<()>> {
        match self.coordinator() {
            Some(c) => c.unclaim(upload),
            None => Box::pin(records::unclaim(&**self, upload)),
        }
    }

    fn publish<'a>(
        &'a self,
        upload: &'a UploadId,
        path: &'a FilePath,
        size: u64,
        options: PublishOptions,
    ) -> BoxFuture<'a, StorageResult<ObjectMeta>> {
        match self.coordinator() {
            Some(c) => c.publish(upload, path, size, options),
            None => Box::pin(records::publish(&**self, upload, path, size, options)),
        }
    }

    fn abort<'a>(&'a self, upload: &'a UploadId) -> BoxFuture<'a, StorageResult<()>> {
        match self.coordinator() {
            Some(c) => c.abort(upload),
            None => Box::pin(records::abort(&**self, upload)),
        }
    }

    fn list_uploads(&self) -> BoxFuture<'_, StorageResult<Vec<UploadInfo>>> {
        match self.coordinator() {
            Some(c) => c.list_uploads(),
            None => Box::pin(records::list_uploads(&**self)),
        }
    }
}
