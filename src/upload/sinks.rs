//! Where a chunk's bytes go (PROTOCOL.md §4): [`GapWriter`] writes only the parts of a chunk
//! that its upload has not received, [`RetryOrWrite`] compares a chunk that may be a retry of
//! a completed upload with the published file (public delivery only) and turns into a
//! `GapWriter` at the first byte that differs.

use std::ops::Range;
use std::sync::Arc;

use super::body::Comparer;
use crate::config::Config;
use crate::path::FilePath;
use crate::storage::StorageExt;
use crate::storage::{
    ChunkWriter, PutMode, RangeSet, Storage, StorageError, StorageResult, UploadId, UploadInfo,
    UploadSpec,
};

/// The most disjoint received ranges one upload may hold (PROTOCOL.md §4): a chunk that
/// would leave its upload in more separate pieces is refused with `409 range_conflict`
/// before its body is read, and no `202` lists more ranges than this.
pub const MAX_UPLOAD_RANGES: usize = 1_000;

/// Writes a chunk only into the parts of its range that were not received when it arrived,
/// each part through a storage writer of its own. Nothing counts before [`commit`], which the
/// caller calls only once the whole chunk is verified (length, digest): a corrupted or short
/// retry never overwrites bytes that count.
///
/// [`commit`]: ChunkWriter::commit
pub(crate) struct GapWriter {
    storage: Arc<dyn Storage>,
    upload: UploadId,
    received: RangeSet,
    /// Absolute offset of the next byte.
    pub pos: u64,
    /// The writer of the gap being written.
    current: Option<Box<dyn ChunkWriter>>,
    /// Writers of finished gaps (flushed), committed at the end.
    done: Vec<Box<dyn ChunkWriter>>,
}

impl GapWriter {
    pub(crate) fn new(
        storage: Arc<dyn Storage>,
        upload: UploadId,
        received: Vec<Range<u64>>,
        start: u64,
    ) -> Self {
        GapWriter {
            storage,
            upload,
            received: RangeSet::new(received),
            pos: start,
            current: None,
            done: Vec::new(),
        }
    }

    /// Whether adding `chunk` to what the upload had received when this chunk arrived would
    /// leave more than [`MAX_UPLOAD_RANGES`] separate ranges.
    pub(crate) fn fragments(&self, chunk: &Range<u64>) -> bool {
        self.received.pieces_with(chunk) > MAX_UPLOAD_RANGES
    }

    async fn close_gap(&mut self) -> StorageResult<()> {
        if let Some(mut w) = self.current.take() {
            w.flush().await?;
            self.done.push(w);
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl ChunkWriter for GapWriter {
    async fn write(&mut self, mut data: bytes::Bytes) -> StorageResult<()> {
        while !data.is_empty() {
            if let Some(r) = self.received.containing(self.pos) {
                let skip = (r.end - self.pos).min(data.len() as u64) as usize;
                self.close_gap().await?;
                let _ = data.split_to(skip);
                self.pos += skip as u64;
                continue;
            }
            let gap_end = self.received.next_start_after(self.pos).unwrap_or(u64::MAX);
            let n = (gap_end - self.pos).min(data.len() as u64) as usize;
            if self.current.is_none() {
                self.current = Some(self.storage.writer(&self.upload, self.pos).await?);
            }
            if let Some(w) = self.current.as_mut() {
                w.write(data.split_to(n)).await?;
            }
            self.pos += n as u64;
        }
        Ok(())
    }

    async fn flush(&mut self) -> StorageResult<()> {
        if let Some(w) = self.current.as_mut() {
            w.flush().await?;
        }
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> StorageResult<Vec<Range<u64>>> {
        if let Some(w) = self.current.take() {
            self.done.push(w);
        }
        let mut ranges = None;
        for w in self.done {
            ranges = Some(w.commit().await?);
        }
        match ranges {
            Some(r) => Ok(r),
            // Everything was received already: report the current state.
            None => self.storage.received(&self.upload).await,
        }
    }
}

/// Compares a chunk with the published file as it streams in. At the first byte that
/// differs it opens the path's upload (a new one, or one somebody else started meanwhile),
/// copies the identical prefix from the published file, and writes from there on. A chunk
/// that matches to its end leaves no state at all.
pub(crate) struct RetryOrWrite {
    pub cfg: Arc<Config>,
    pub path: FilePath,
    pub total: u64,
    pub start: u64,
    /// End of the prefix known to equal the published file.
    pub pos: u64,
    pub comparer: Comparer,
    pub opened: Option<(UploadInfo, Box<GapWriter>)>,
    /// The total of an upload started meanwhile, when it differs (→ 409).
    pub conflict: Option<u64>,
    /// The chunk's precondition: a chunk that turns out to start a new upload is held to it
    /// (`If-None-Match: *` then fails, the file being there).
    pub mode: PutMode,
}

impl RetryOrWrite {
    async fn diverge(&mut self) -> StorageResult<()> {
        let storage = &self.cfg.storage;
        let mode = match super::precheck(&**storage, &self.path, self.mode.clone()).await {
            Ok(mode) => mode,
            Err(e) if e.kind() == crate::error::ErrorKind::PreconditionFailed => {
                return Err(StorageError::PreconditionFailed);
            }
            Err(e) => return Err(StorageError::backend(e)),
        };
        let info = storage
            .open_upload(&self.path, UploadSpec::Resumable { total: self.total })
            .await?;
        if info.total != Some(self.total) {
            self.conflict = info.total;
            return Err(StorageError::UploadClosed);
        }
        if info.created_now {
            let state = super::chunk_state::ChunkState::of(&**storage, &info.id)?;
            state.set_precondition(&mode).await?;
            crate::metrics::upload_started(crate::metrics::Kind::Chunked);
        }
        let received = storage.received(&info.id).await?;
        let mut writer = Box::new(GapWriter::new(
            storage.clone(),
            info.id.clone(),
            received,
            self.start,
        ));
        if self.pos > self.start {
            let Some((_, prefix)) = storage.read(&self.path, Some(self.start..self.pos)).await?
            else {
                return Err(StorageError::NotFound);
            };
            let mut prefix = prefix;
            while let Some(frame) = futures_util::StreamExt::next(&mut prefix).await {
                writer.write(frame?).await?;
            }
        }
        self.opened = Some((info, writer));
        Ok(())
    }
}

#[async_trait::async_trait]
impl ChunkWriter for RetryOrWrite {
    async fn write(&mut self, data: bytes::Bytes) -> StorageResult<()> {
        if self.opened.is_none() {
            self.comparer.feed(&data).await;
            if self.comparer.equal() {
                self.pos += data.len() as u64;
                return Ok(());
            }
            self.diverge().await?;
        }
        match &mut self.opened {
            Some((_, writer)) => writer.write(data).await,
            None => Err(StorageError::UploadClosed),
        }
    }

    async fn flush(&mut self) -> StorageResult<()> {
        match &mut self.opened {
            Some((_, writer)) => writer.flush().await,
            None => Ok(()),
        }
    }

    async fn commit(self: Box<Self>) -> StorageResult<Vec<Range<u64>>> {
        match self.opened {
            Some((_, writer)) => writer.commit().await,
            None => Ok(Vec::new()),
        }
    }
}
