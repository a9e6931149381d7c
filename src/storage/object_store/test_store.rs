//! An in-memory store for the tests of conditional writes: `InMemory`, which enforces them,
//! or a store that takes every put as a plain one (as Garage does), and whose next
//! conditional put can be sent twice (a client retrying after a lost answer: the first
//! attempt takes effect, the caller sees the second's).

use futures_util::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{MultipartId, ObjectStore, PutMode, PutOptions, PutPayload};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[derive(Debug, Default)]
pub(super) struct TestStore {
    inner: InMemory,
    /// Takes conditional puts as plain ones.
    pub heedless: bool,
    /// Sends the next conditional put twice.
    pub lose_next: AtomicBool,
    /// Bytes sent by PUTs (objects, records) and by parts of multipart uploads.
    pub put_bytes: AtomicU64,
    pub part_bytes: AtomicU64,
    /// Copies inside the store.
    pub copies: AtomicU64,
}

impl TestStore {
    /// A store that takes conditional puts as plain ones.
    pub(super) fn heedless() -> TestStore {
        TestStore {
            heedless: true,
            ..TestStore::default()
        }
    }
}

impl std::fmt::Display for TestStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TestStore")
    }
}

#[async_trait::async_trait]
impl ObjectStore for TestStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        mut opts: PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        if self.heedless {
            opts.mode = PutMode::Overwrite;
        }
        self.put_bytes
            .fetch_add(payload.content_length() as u64, Ordering::SeqCst);
        let conditional = !matches!(opts.mode, PutMode::Overwrite);
        if conditional && self.lose_next.swap(false, Ordering::SeqCst) {
            self.inner
                .put_opts(location, payload.clone(), opts.clone())
                .await?;
        }
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &Path,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        self.inner.get_opts(location, options).await
    }
    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }
    fn list(
        &self,
        prefix: Option<&Path>,
    ) -> BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(
        &self,
        prefix: Option<&Path>,
    ) -> object_store::Result<object_store::ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.copies.fetch_add(1, Ordering::SeqCst);
        self.inner.copy_opts(from, to, options).await
    }
}

#[async_trait::async_trait]
impl MultipartStore for TestStore {
    async fn create_multipart(&self, path: &Path) -> object_store::Result<MultipartId> {
        self.inner.create_multipart(path).await
    }
    async fn create_multipart_opts(
        &self,
        path: &Path,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<MultipartId> {
        self.inner.create_multipart_opts(path, opts).await
    }
    async fn put_part(
        &self,
        path: &Path,
        id: &MultipartId,
        part_idx: usize,
        data: PutPayload,
    ) -> object_store::Result<PartId> {
        self.part_bytes
            .fetch_add(data.content_length() as u64, Ordering::SeqCst);
        self.inner.put_part(path, id, part_idx, data).await
    }
    async fn complete_multipart(
        &self,
        path: &Path,
        id: &MultipartId,
        parts: Vec<PartId>,
    ) -> object_store::Result<object_store::PutResult> {
        self.inner.complete_multipart(path, id, parts).await
    }
    async fn abort_multipart(&self, path: &Path, id: &MultipartId) -> object_store::Result<()> {
        self.inner.abort_multipart(path, id).await
    }
}
