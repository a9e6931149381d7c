//! Where a probe reads from: bounded ranges of a file that may be much larger than memory.

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::TryStreamExt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::storage::{Storage, StorageError, UploadId};

/// The largest single read a probe may ask for (a `moov` box, a tail). Anything larger is
/// refused with a [`StorageError::Backend`], so a hostile header cannot make a probe read a
/// whole file into memory.
pub const MAX_PROBE_READ: u64 = 16 << 20;

/// A file that a probe reads by ranges.
#[async_trait]
pub trait Source: Send + Sync {
    /// The file's size in bytes.
    fn size(&self) -> u64;

    /// Reads `range` (clamped to the file; at most [`MAX_PROBE_READ`] bytes).
    async fn read(&self, range: Range<u64>) -> Result<Bytes, StorageError>;

    /// Total bytes read so far (for the "probe cost does not grow with file size" checks).
    fn bytes_read(&self) -> u64;
}

/// A [`Source`] over bytes in memory (tests, fuzzing, small files).
#[derive(Debug, Default)]
pub struct MemorySource {
    data: Bytes,
    read: AtomicU64,
}

impl MemorySource {
    /// A source over `data`.
    pub fn new(data: impl Into<Bytes>) -> Self {
        MemorySource {
            data: data.into(),
            read: AtomicU64::new(0),
        }
    }
}

fn clamp(range: Range<u64>, size: u64) -> Result<Range<u64>, StorageError> {
    let end = range.end.min(size);
    let start = range.start.min(end);
    if end - start > MAX_PROBE_READ {
        return Err(StorageError::other(format!(
            "a probe read of {} bytes exceeds the limit of {MAX_PROBE_READ}",
            end - start
        )));
    }
    Ok(start..end)
}

#[async_trait]
impl Source for MemorySource {
    fn size(&self) -> u64 {
        self.data.len() as u64
    }

    async fn read(&self, range: Range<u64>) -> Result<Bytes, StorageError> {
        let r = clamp(range, self.size())?;
        self.read.fetch_add(r.end - r.start, Ordering::Relaxed);
        Ok(self.data.slice(r.start as usize..r.end as usize))
    }

    fn bytes_read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }
}

/// A [`Source`] over the staged bytes of an upload (before publication).
pub struct UploadSource {
    storage: Arc<dyn Storage>,
    upload: UploadId,
    size: u64,
    read: AtomicU64,
}

impl UploadSource {
    /// The first `size` bytes of `upload`.
    pub fn new(storage: Arc<dyn Storage>, upload: UploadId, size: u64) -> Self {
        UploadSource {
            storage,
            upload,
            size,
            read: AtomicU64::new(0),
        }
    }
}

impl std::fmt::Debug for UploadSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadSource")
            .field("upload", &self.upload)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Source for UploadSource {
    fn size(&self) -> u64 {
        self.size
    }

    async fn read(&self, range: Range<u64>) -> Result<Bytes, StorageError> {
        let r = clamp(range, self.size)?;
        if r.is_empty() {
            return Ok(Bytes::new());
        }
        let frames: Vec<Bytes> = self
            .storage
            .read_upload(&self.upload, r.clone())
            .await?
            .try_collect()
            .await?;
        self.read.fetch_add(r.end - r.start, Ordering::Relaxed);
        Ok(if frames.len() == 1 {
            frames.into_iter().next().unwrap_or_default()
        } else {
            Bytes::from(frames.concat())
        })
    }

    fn bytes_read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }
}
