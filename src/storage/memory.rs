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
    ByteStream, Claim, ObjectMeta, PublishOptions, PutMode, Record, RecordKey, RecordMode, Storage,
    StorageError, StorageResult, UploadId, UploadInfo, UploadSpec, UploadWriter, merge_ranges,
};
use crate::path::FilePath;

/// Frame size of [`Storage::read`] streams.
const FRAME: usize = 64 * 1024;

/// A [`Storage`] in process memory. Cloning shares the same contents.
///
/// ```
/// use tower_uploads::storage::{MemoryStorage, Storage, UploadSpec, PublishOptions};
/// use tower_uploads::path::FilePath;
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let storage = MemoryStorage::new();
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
    uploads: HashMap<UploadId, MemUpload>,
    /// The resumable upload of each path.
    by_path: HashMap<FilePath, UploadId>,
    records: HashMap<RecordKey, Record>,
    next: u64,
}

struct MemUpload {
    info: UploadInfo,
    path: FilePath,
    resumable: bool,
    data: BytesMut,
    ranges: Vec<Range<u64>>,
    claimed: bool,
}

impl MemoryStorage {
    /// An empty storage.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters more than losing the whole store; keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    fn upload(&mut self, id: &UploadId) -> StorageResult<&mut MemUpload> {
        match self.uploads.get_mut(id) {
            Some(u) if !u.claimed => Ok(u),
            _ => Err(StorageError::UploadClosed),
        }
    }

    fn forget(&mut self, id: &UploadId) -> Option<MemUpload> {
        let u = self.uploads.remove(id)?;
        if u.resumable && self.by_path.get(&u.path) == Some(id) {
            self.by_path.remove(&u.path);
        }
        Some(u)
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

    async fn delete(&self, path: &FilePath) -> StorageResult<bool> {
        Ok(self.lock().files.remove(path).is_some())
    }

    async fn open_upload(&self, path: &FilePath, spec: UploadSpec) -> StorageResult<UploadInfo> {
        let mut inner = self.lock();
        if let UploadSpec::Resumable { .. } = spec
            && let Some(id) = inner.by_path.get(path).cloned()
            && let Some(u) = inner.uploads.get(&id)
        {
            let mut info = u.info.clone();
            info.created_now = false;
            return Ok(info);
        }
        inner.next += 1;
        let id = UploadId(format!("m{}", inner.next));
        let now = SystemTime::now();
        let (total, resumable) = match spec {
            UploadSpec::Single | UploadSpec::Lasting => (None, false),
            UploadSpec::Resumable { total } => (Some(total), true),
        };
        let info = UploadInfo {
            id: id.clone(),
            path: Some(path.clone()),
            total,
            created: now,
            updated: now,
            created_now: true,
        };
        inner.uploads.insert(
            id.clone(),
            MemUpload {
                info: info.clone(),
                path: path.clone(),
                resumable,
                data: BytesMut::new(),
                ranges: Vec::new(),
                claimed: false,
            },
        );
        if resumable {
            inner.by_path.insert(path.clone(), id);
        }
        Ok(info)
    }

    async fn find_upload(&self, path: &FilePath) -> StorageResult<Option<UploadInfo>> {
        let inner = self.lock();
        Ok(inner
            .by_path
            .get(path)
            .and_then(|id| inner.uploads.get(id))
            .map(|u| UploadInfo {
                created_now: false,
                ..u.info.clone()
            }))
    }

    async fn writer(&self, upload: &UploadId, offset: u64) -> StorageResult<Box<dyn UploadWriter>> {
        self.lock().upload(upload)?;
        Ok(Box::new(MemWriter {
            storage: self.clone(),
            id: upload.clone(),
            start: offset,
            pos: offset,
        }))
    }

    async fn received(&self, upload: &UploadId) -> StorageResult<Vec<Range<u64>>> {
        let inner = self.lock();
        let u = inner.uploads.get(upload).ok_or(StorageError::NotFound)?;
        Ok(u.ranges.clone())
    }

    async fn claim(&self, upload: &UploadId) -> StorageResult<Claim> {
        let mut inner = self.lock();
        match inner.uploads.get_mut(upload) {
            Some(u) if !u.claimed => {
                u.claimed = true;
                Ok(Claim::Won)
            }
            _ => Ok(Claim::Lost),
        }
    }

    async fn unclaim(&self, upload: &UploadId) -> StorageResult<()> {
        if let Some(u) = self.lock().uploads.get_mut(upload) {
            u.claimed = false;
        }
        Ok(())
    }

    async fn read_upload(&self, upload: &UploadId, range: Range<u64>) -> StorageResult<ByteStream> {
        let inner = self.lock();
        let u = inner.uploads.get(upload).ok_or(StorageError::NotFound)?;
        let end = (range.end as usize).min(u.data.len());
        let start = (range.start as usize).min(end);
        Ok(stream_of(Bytes::copy_from_slice(&u.data[start..end])))
    }

    async fn publish(
        &self,
        upload: &UploadId,
        path: &FilePath,
        size: u64,
        options: PublishOptions,
    ) -> StorageResult<ObjectMeta> {
        let mut inner = self.lock();
        match inner.uploads.get(upload) {
            Some(u) if u.claimed => {}
            Some(_) => return Err(StorageError::other("publish of an unclaimed upload")),
            None => return Err(StorageError::UploadClosed),
        }
        let current = inner.files.get(path).map(|(_, m)| m.etag.clone());
        match (&options.mode, current) {
            (PutMode::Create, Some(_)) => return Err(StorageError::PreconditionFailed),
            (PutMode::Update(want), Some(have)) if *want != have => {
                return Err(StorageError::PreconditionFailed);
            }
            (PutMode::Update(_), None) => return Err(StorageError::PreconditionFailed),
            _ => {}
        }
        let mut u = inner.forget(upload).ok_or(StorageError::UploadClosed)?;
        u.data.resize(size as usize, 0);
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
            .insert(path.clone(), (u.data.freeze(), meta.clone()));
        Ok(meta)
    }

    async fn abort(&self, upload: &UploadId) -> StorageResult<()> {
        self.lock().forget(upload);
        Ok(())
    }

    async fn list_uploads(&self) -> StorageResult<Vec<UploadInfo>> {
        let mut list: Vec<UploadInfo> = self
            .lock()
            .uploads
            .values()
            .map(|u| u.info.clone())
            .collect();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(list)
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
    start: u64,
    pos: u64,
}

#[async_trait]
impl UploadWriter for MemWriter {
    async fn write(&mut self, data: Bytes) -> StorageResult<()> {
        let mut inner = self.storage.lock();
        let u = inner.upload(&self.id)?;
        let start = usize::try_from(self.pos).map_err(|_| StorageError::StorageFull)?;
        let end = start
            .checked_add(data.len())
            .ok_or(StorageError::StorageFull)?;
        if u.data.len() < end {
            u.data.resize(end, 0);
        }
        u.data[start..end].copy_from_slice(&data);
        u.info.updated = SystemTime::now();
        self.pos = end as u64;
        Ok(())
    }

    async fn commit(self: Box<Self>) -> StorageResult<Vec<Range<u64>>> {
        let mut inner = self.storage.lock();
        let u = inner.upload(&self.id)?;
        let mut ranges = std::mem::take(&mut u.ranges);
        ranges.push(self.start..self.pos);
        u.ranges = merge_ranges(ranges);
        u.info.updated = SystemTime::now();
        Ok(u.ranges.clone())
    }
}

#[cfg(test)]
mod conformance {
    // One test per check.
    crate::storage_conformance_tests!(super::MemoryStorage::new());
}
