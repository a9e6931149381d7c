//! [`MemoryStorage`]: everything in process memory. For tests, demos and as the reference
//! implementation of the [`Storage`] contract. (It keeps files in memory by definition; every
//! other part of the crate streams.)

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use super::{
    ByteStream, ObjectMeta, PublishOptions, PutMode, Record, RecordKey, RecordMode, Storage,
    StorageError, StorageResult, UploadId, UploadWriter,
};
use crate::path::FilePath;

/// Frame size of [`Storage::read`] streams.
const FRAME: usize = 64 * 1024;

/// A [`Storage`] in process memory. Cloning shares the same contents. It implements only
/// the nine required methods: its uploads are coordinated by the crate, on its records (the
/// reference for a backend of your own).
///
/// ```
/// use std::sync::Arc;
/// use tower_uploads::storage::{MemoryStorage, Storage, StorageExt, UploadSpec, PublishOptions};
/// use tower_uploads::path::FilePath;
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let storage = Arc::new(MemoryStorage::new());
/// let path = FilePath::new("hello.txt").unwrap();
/// let upload = storage.open_upload(&path, UploadSpec::Single).await.unwrap();
/// let mut w = storage.writer(&upload.id, 0).await.unwrap();
/// w.write("hello".into()).await.unwrap();
/// assert_eq!(w.commit().await.unwrap(), vec![0..5]);
/// storage.claim(&upload.id).await.unwrap();
/// let meta = storage.publish(&upload.id, &path, 5, PublishOptions::default()).await.unwrap();
/// assert_eq!(meta.size, 5);
/// # });
/// ```
#[derive(Clone, Default)]
pub struct MemoryStorage {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for MemoryStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStorage").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Inner {
    files: HashMap<FilePath, (Bytes, ObjectMeta)>,
    /// The staged bytes of each upload.
    uploads: HashMap<UploadId, BytesMut>,
    records: HashMap<RecordKey, Record>,
    next: u64,
}

impl MemoryStorage {
    /// An empty storage.
    pub fn new() -> Self {
        Self::default()
    }

    /// Deletes the file at `path`; returns whether there was one.
    pub fn delete(&self, path: &FilePath) -> bool {
        self.lock().files.remove(path).is_some()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters more than losing the whole store; keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn stream_of(bytes: Bytes) -> ByteStream {
    let frames: Vec<StorageResult<Bytes>> = (0..bytes.len())
        .step_by(FRAME)
        .map(|i| Ok(bytes.slice(i..(i + FRAME).min(bytes.len()))))
        .collect();
    Box::pin(futures_util::stream::iter(frames))
}

#[async_trait]
impl Storage for MemoryStorage {
    async fn head(&self, path: &FilePath) -> StorageResult<Option<ObjectMeta>> {
        Ok(self.lock().files.get(path).map(|(_, m)| m.clone()))
    }

    async fn read(
        &self,
        path: &FilePath,
        range: Option<Range<u64>>,
    ) -> StorageResult<Option<(ObjectMeta, ByteStream)>> {
        let Some((data, meta)) = self.lock().files.get(path).cloned() else {
            return Ok(None);
        };
        let range = meta.resolve_range(range)?;
        let slice = data.slice(range.start as usize..range.end as usize);
        Ok(Some((meta, stream_of(slice))))
    }

    async fn write_upload(
        &self,
        upload: &UploadId,
        offset: u64,
    ) -> StorageResult<Box<dyn UploadWriter>> {
        Ok(Box::new(MemWriter {
            storage: self.clone(),
            id: upload.clone(),
            pos: offset,
        }))
    }

    async fn read_upload(&self, upload: &UploadId, range: Range<u64>) -> StorageResult<ByteStream> {
        let inner = self.lock();
        let data = inner.uploads.get(upload).map_or(&[][..], |d| &d[..]);
        let end = (range.end as usize).min(data.len());
        let start = (range.start as usize).min(end);
        Ok(stream_of(Bytes::copy_from_slice(&data[start..end])))
    }

    async fn publish_upload(
        &self,
        upload: &UploadId,
        path: &FilePath,
        size: u64,
        options: PublishOptions,
    ) -> StorageResult<ObjectMeta> {
        let mut inner = self.lock();
        let current = inner.files.get(path).map(|(_, m)| m.etag.clone());
        match (&options.mode, current) {
            (PutMode::Create, Some(_)) => return Err(StorageError::PreconditionFailed),
            (PutMode::Update(want), Some(have)) if *want != have => {
                return Err(StorageError::PreconditionFailed);
            }
            (PutMode::Update(_), None) => return Err(StorageError::PreconditionFailed),
            _ => {}
        }
        let mut data = inner.uploads.remove(upload).unwrap_or_default();
        data.resize(size as usize, 0);
        inner.next += 1;
        let meta = ObjectMeta {
            size,
            etag: format!("m{:x}", inner.next),
            modified: SystemTime::now(),
            content_type: options.content_type,
            attributes: options.attributes,
        };
        inner
            .files
            .insert(path.clone(), (data.freeze(), meta.clone()));
        Ok(meta)
    }

    async fn delete_upload(&self, upload: &UploadId) -> StorageResult<()> {
        self.lock().uploads.remove(upload);
        Ok(())
    }

    async fn put_record(
        &self,
        key: &RecordKey,
        value: Bytes,
        mode: RecordMode,
    ) -> StorageResult<String> {
        let mut inner = self.lock();
        let current = inner.records.get(key);
        let allowed = match &mode {
            RecordMode::Create => current.is_none(),
            RecordMode::Overwrite => true,
            RecordMode::Update(etag) => current.is_some_and(|r| r.etag == *etag),
        };
        if !allowed {
            return Err(StorageError::PreconditionFailed);
        }
        let record = Record::new(value);
        let etag = record.etag.clone();
        inner.records.insert(key.clone(), record);
        Ok(etag)
    }

    async fn get_record(&self, key: &RecordKey) -> StorageResult<Option<Record>> {
        Ok(self.lock().records.get(key).cloned())
    }

    async fn delete_record(&self, key: &RecordKey) -> StorageResult<bool> {
        Ok(self.lock().records.remove(key).is_some())
    }

    async fn list_records(&self, prefix: &RecordKey) -> StorageResult<Vec<RecordKey>> {
        Ok(self
            .lock()
            .records
            .keys()
            .filter(|k| k.is_under(prefix))
            .cloned()
            .collect())
    }
}

struct MemWriter {
    storage: MemoryStorage,
    id: UploadId,
    pos: u64,
}

#[async_trait]
impl UploadWriter for MemWriter {
    async fn write(&mut self, data: Bytes) -> StorageResult<()> {
        let mut inner = self.storage.lock();
        let staged = inner.uploads.entry(self.id.clone()).or_default();
        let start = usize::try_from(self.pos).map_err(|_| StorageError::StorageFull)?;
        let end = start
            .checked_add(data.len())
            .ok_or(StorageError::StorageFull)?;
        if staged.len() < end {
            staged.resize(end, 0);
        }
        staged[start..end].copy_from_slice(&data);
        self.pos = end as u64;
        Ok(())
    }

    async fn commit(self: Box<Self>) -> StorageResult<()> {
        Ok(())
    }
}

#[cfg(test)]
mod conformance {
    // One test per check.
    crate::storage_conformance_tests!(super::MemoryStorage::new());
}
