//! [`ObjectWriter`]: the bytes of one writer of an upload — parts on the upload's grid
//! (`parts.rs`), or a chunk object of its own.

use async_trait::async_trait;
use bytes::Bytes;
use object_store::path::Path;
use object_store::{Attributes, ObjectStoreExt};

use super::multipart::{Multipart, PartBuffer};
use super::parts::{Grid, LONG_GRID, MAX_PART, MIN_PART};
use super::{ObjectStoreStorage, os_err};
use super::{StorageResult, UploadId, UploadWriter};

/// Where a writer's bytes go.
enum Mode {
    /// Not known yet: the writer holds its bytes (at most [`MAX_PART`]) until it knows its
    /// length or outgrows that.
    Undecided,
    /// Parts of the grid, each claimed first.
    Direct(Grid),
    /// A chunk object from `start` on: one PUT when it fits in a part, else a multipart
    /// upload (tracked under the upload's `mp/`) completed at `commit`. Nothing is visible
    /// at its key before `commit`.
    Object { start: u64, mp: Option<Multipart> },
}

/// One writer of an upload, at `offset`. Whether its range counts is the coordination's
/// decision (`storage/coord`), taken after `commit`.
pub(super) struct ObjectWriter {
    storage: ObjectStoreStorage,
    id: UploadId,
    dir: Path,
    wid: String,
    offset: u64,
    /// The upload's total size, when it has one (a resumable upload).
    total: Option<u64>,
    /// Bytes gone as parts, from `offset`.
    sent: u64,
    buf: PartBuffer,
    mode: Mode,
    /// Parts sent: `(k, etag, length)`.
    parts: Vec<(u64, String, u64)>,
    committed: bool,
}

impl ObjectWriter {
    pub(super) fn new(
        storage: ObjectStoreStorage,
        id: &UploadId,
        offset: u64,
        total: Option<u64>,
    ) -> StorageResult<ObjectWriter> {
        Ok(ObjectWriter {
            dir: storage.upload_dir(id)?,
            storage,
            id: id.clone(),
            wid: crate::id::random_id(""),
            offset,
            total,
            sent: 0,
            buf: PartBuffer::default(),
            mode: Mode::Undecided,
            parts: Vec::new(),
            committed: false,
        })
    }

    /// Chooses the mode once the writer's length is known (`last`) or it outgrew
    /// [`MAX_PART`]: the upload's grid when this writer is on it (creating one of its own
    /// length, or of [`LONG_GRID`], when there is none), else a chunk object.
    async fn decide(&mut self, last: bool) -> StorageResult<()> {
        let (offset, len) = (self.offset, self.buf.len as u64);
        let grid = match self.storage.grid(&self.id).await? {
            Some(g) => Some(g),
            None => {
                // A writer's own length makes a grid only if it is a whole block: not the
                // short tail of the upload (unless it is the whole file).
                let whole_block = offset == 0 || self.total.is_none_or(|t| offset + len < t);
                let proposal = if last {
                    (len >= MIN_PART && offset.is_multiple_of(len) && whole_block).then_some(len)
                } else {
                    offset.is_multiple_of(LONG_GRID).then_some(LONG_GRID)
                };
                match proposal {
                    Some(c) => Some(self.storage.grid_or(&self.id, c).await?),
                    None => None,
                }
            }
        };
        self.mode = match grid {
            Some(g) if g.fits(offset) => Mode::Direct(g),
            _ => Mode::Object {
                start: offset,
                mp: None,
            },
        };
        Ok(())
    }

    /// Sends what the mode lets go now; with `last`, everything.
    async fn drain(&mut self, last: bool) -> StorageResult<()> {
        if let Mode::Undecided = self.mode {
            if !last && (self.buf.len as u64) <= MAX_PART {
                return Ok(());
            }
            self.decide(last).await?;
        }
        if let Mode::Direct(grid) = &self.mode {
            let grid = grid.clone();
            while self.buf.len as u64 >= grid.c {
                if !self.send_block(&grid, grid.c).await? {
                    break;
                }
            }
            let rest = self.buf.len as u64;
            let start = self.offset + self.sent;
            if last && rest > 0 && matches!(self.mode, Mode::Direct(_)) {
                // The upload's last block, short: a part (the last may be any size).
                let at_end = self.total == Some(start + rest);
                if !(at_end && self.send_block(&grid, rest).await?) {
                    self.switch_to_object(start);
                }
            }
        }
        if let Mode::Object { .. } = self.mode {
            self.send_object_parts().await?;
        }
        Ok(())
    }

    /// Sends the next `len` bytes as their block's part, if this writer can claim it;
    /// else the writer goes on in a chunk object (`false`).
    async fn send_block(&mut self, grid: &Grid, len: u64) -> StorageResult<bool> {
        let start = self.offset + self.sent;
        let k = start / grid.c;
        if !grid.fits(start) || !self.storage.claim_part(&self.id, k, &self.wid).await? {
            self.switch_to_object(start);
            return Ok(false);
        }
        // Claimed: the record names it ours even if the send fails (released on drop).
        self.parts.push((k, String::new(), len));
        let Some(payload) = self.buf.take_exact(len as usize) else {
            return Err(super::StorageError::other("a part's bytes went missing"));
        };
        let etag = self.storage.send_part(&self.id, grid, k, payload).await?;
        if let Some(p) = self.parts.last_mut() {
            p.1 = etag;
        }
        self.sent += len;
        Ok(true)
    }

    fn switch_to_object(&mut self, start: u64) {
        self.mode = Mode::Object { start, mp: None };
    }

    /// In a chunk object: sends its full parts (a multipart upload begun at the first).
    async fn send_object_parts(&mut self) -> StorageResult<()> {
        let Mode::Object { start, mp } = &mut self.mode else {
            return Ok(());
        };
        while let Some(part) = self.buf.take_part() {
            if mp.is_none() {
                let key = chunk_key(&self.dir, *start, &self.wid);
                let marker = self.dir.clone().join("mp").join(self.wid.as_str());
                *mp = Some(
                    self.storage
                        .start_multipart(&key, marker, Attributes::new())
                        .await?,
                );
            }
            if let Some(m) = mp.as_mut() {
                self.storage.put_part(m, part).await?;
            }
        }
        Ok(())
    }

    /// Stores the chunk object's rest: one PUT when it fits in a part, else its last part
    /// and the completion of its multipart upload.
    async fn finish_object(&mut self) -> StorageResult<()> {
        let Mode::Object { start, mp } = &mut self.mode else {
            return Ok(());
        };
        let rest = self.buf.take_rest();
        match mp.take() {
            None if rest.content_length() == 0 => {}
            None => {
                let key = chunk_key(&self.dir, *start, &self.wid);
                self.storage.store.put(&key, rest).await.map_err(os_err)?;
            }
            Some(mut m) => {
                if rest.content_length() > 0
                    && let Err(e) = self.storage.put_part(&mut m, rest).await
                {
                    self.storage.abort_multipart(m).await;
                    return Err(e);
                }
                self.storage.complete(m).await?;
            }
        }
        Ok(())
    }
}

fn chunk_key(dir: &Path, start: u64, wid: &str) -> Path {
    dir.clone()
        .join("chunks")
        .join(format!("{start:020}-{wid}"))
}

#[async_trait]
impl UploadWriter for ObjectWriter {
    async fn write(&mut self, data: Bytes) -> StorageResult<()> {
        self.buf.push(data);
        self.drain(false).await
    }

    async fn commit(mut self: Box<Self>) -> StorageResult<()> {
        self.drain(true).await?;
        self.finish_object().await?;
        if !self.parts.is_empty() {
            let parts = self
                .parts
                .iter()
                .map(|(k, etag, len)| (*k, etag.clone(), *len))
                .collect();
            self.storage
                .commit_parts(&self.id, &self.wid, parts)
                .await?;
        }
        self.committed = true;
        Ok(())
    }
}

impl Drop for ObjectWriter {
    fn drop(&mut self) {
        // A writer dropped before its commit: its chunk object's multipart upload is
        // aborted and its claims of parts given up now (else the sweep does, with its
        // upload; a block whose claim stays is filled from chunk objects at assembly).
        if self.committed {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mp = match &mut self.mode {
            Mode::Object { mp, .. } => mp.take(),
            _ => None,
        };
        let claims: Vec<u64> = self.parts.iter().map(|p| p.0).collect();
        if mp.is_none() && claims.is_empty() {
            return;
        }
        let (storage, id) = (self.storage.clone(), self.id.clone());
        rt.spawn(async move {
            if let Some(mp) = mp {
                storage.abort_multipart(mp).await;
            }
            storage.release_parts(&id, &claims).await;
        });
    }
}
