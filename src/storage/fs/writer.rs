//! Writers: [`FsWriter`] gathers an upload's frames into batches (buffers of the storage's pool, [`Buffers`](super::buffers::Buffers)) and writes them
//! off the async threads, the next batch gathering while the previous one is written; when the
//! storage's buffer budget is spent it writes each frame from where it arrived instead; a small
//! simple upload is written whole at `commit`, on the calling thread.

use async_trait::async_trait;
use bytes::{Buf, Bytes};
use std::fs::{File, OpenOptions};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;

use super::buffers::Returning;
use super::sys::{create_staging, create_unnamed, fsync_dir, write_pieces};
use super::{Durability, Inner, Parsed, Staged, blocking, closed_if_missing, io, parse_id, quick};
use crate::storage::{ChunkWriter, StorageError, StorageResult, UploadId};

/// A simple upload's first frame up to this size is kept as it arrived while it is the only
/// one: a small file is written from there, at `commit`, without a copy or a batch buffer.
const KEEP_FIRST: usize = 64 * 1024;

/// What one write task writes: a batch (given back for reuse) or a frame as it arrived.
enum Piece {
    Batch(Returning),
    Frame(Bytes),
}

impl Piece {
    fn bytes(&self) -> &[u8] {
        match self {
            Piece::Batch(b) => b.as_ref(),
            Piece::Frame(b) => b,
        }
    }
}

/// A piece being written; gives a batch's buffer back for reuse, and the file it opened.
type WriteTask = tokio::task::JoinHandle<StorageResult<(Option<Returning>, Arc<File>)>>;

/// Gathers frames into a batch buffer and writes full batches off the async threads, the next
/// batch gathering while the previous one is written. Frames are copied into two buffers that
/// alternate (and are reused), so the HTTP layer gets its read buffer back at once instead of
/// allocating fresh memory for every frame while a batch is held. With no buffer to be had
/// (the storage's budget is spent), each frame is written as it arrived, one at a time.
pub(super) struct FsWriter {
    inner: Arc<Inner>,
    id: UploadId,
    data_path: PathBuf,
    /// `None` until the first write creates a single upload's staging file.
    file: Option<Arc<File>>,
    resumable: bool,
    start: u64,
    /// The end of the bytes this writer was given.
    pos: u64,
    /// The end of the bytes gathered into `pending` or written (`pos`, less a kept `first`).
    placed: u64,
    /// The first frame of a simple upload, kept as it came while it is the only one (a small
    /// file is written from where it arrived, without a copy).
    first: Bytes,
    /// The batch gathering: a buffer of the pool, or empty without capacity.
    pending: Vec<u8>,
    /// The other buffer, back from the last finished batch.
    spare: Option<Vec<u8>>,
    /// The previous piece, written while the next one gathers.
    in_flight: Option<WriteTask>,
    /// Counted among the writers that share the batch budget (`Buffers::join`).
    joined: bool,
    /// A resumable upload's [`Inner::write_lock`].
    write_lock: Option<Arc<Mutex<()>>>,
}

impl Drop for FsWriter {
    fn drop(&mut self) {
        self.release_buffers();
    }
}

impl FsWriter {
    /// A writer of `upload` from `offset` (`Coordinate::writer`).
    pub(super) async fn open(
        inner: &Arc<Inner>,
        upload: &UploadId,
        offset: u64,
    ) -> StorageResult<Box<dyn ChunkWriter>> {
        let resumable = matches!(parse_id(upload)?, Parsed::Resumable { .. });
        let data_path = inner.data_path(upload)?;
        let file = if resumable {
            // Open now, so that a closed upload is known before any byte is read.
            let path = data_path.clone();
            let f = quick(inner.inline_meta(), move || {
                OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(closed_if_missing)
            })
            .await?;
            Some(Arc::new(f))
        } else {
            None // created by the first batch: one blocking hop less per simple upload
        };
        Ok(Box::new(FsWriter {
            inner: inner.clone(),
            id: upload.clone(),
            data_path,
            file,
            resumable,
            start: offset,
            pos: offset,
            placed: offset,
            first: Bytes::new(),
            pending: Vec::new(),
            spare: None,
            in_flight: None,
            joined: false,
            write_lock: resumable.then(|| inner.write_lock(upload)),
        }))
    }

    /// Gives the writer's buffers back to the storage's pool.
    fn release_buffers(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        self.inner.buffers.give(pending);
        if let Some(spare) = self.spare.take() {
            self.inner.buffers.give(spare);
        }
        if std::mem::take(&mut self.joined) {
            self.inner.buffers.leave();
        }
    }

    async fn wait_in_flight(&mut self) -> StorageResult<()> {
        if let Some(task) = self.in_flight.take() {
            let (buf, file) = task
                .await
                .map_err(|e| StorageError::other(format!("write task failed: {e}")))??;
            if let Some(buf) = buf
                && self.spare.is_none()
            {
                let mut buf = buf.take();
                buf.clear();
                self.spare = Some(buf);
            } // else it goes back to the pool

            self.file = Some(file);
        }
        Ok(())
    }

    /// The buffer of the next batch: the spare, else one from the pool if the budget allows,
    /// else this writer's batch being written, once written; `None` when the budget is spent.
    async fn next_batch(&mut self) -> StorageResult<Option<Vec<u8>>> {
        if !self.joined {
            self.joined = true;
            self.inner.buffers.join();
        }
        if let Some(spare) = self.spare.take() {
            return Ok(Some(spare));
        }
        if let Some(buf) = self.inner.buffers.try_take() {
            return Ok(Some(buf));
        }
        self.wait_in_flight().await?;
        Ok(self.spare.take())
    }

    /// Gathers `data` into batches (written as they fill), or, with no batch buffer to be
    /// had, writes it as it is.
    async fn place(&mut self, mut data: Bytes) -> StorageResult<()> {
        while !data.is_empty() {
            if self.pending.capacity() == 0 {
                match self.next_batch().await? {
                    Some(buf) => self.pending = buf,
                    None => return self.launch(Piece::Frame(data)).await,
                }
            }
            let n = (self.pending.capacity() - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..n]);
            self.placed += n as u64;
            data.advance(n);
            if self.pending.len() == self.pending.capacity() {
                self.flush_pending().await?;
            }
        }
        Ok(())
    }

    /// Writes a kept first frame as it is.
    async fn place_first(&mut self) -> StorageResult<()> {
        let first = std::mem::take(&mut self.first);
        if first.is_empty() {
            return Ok(());
        }
        self.place(first).await
    }

    /// Starts writing what is gathered in `pending` (after the previous piece has finished).
    async fn flush_pending(&mut self) -> StorageResult<()> {
        if self.pending.is_empty() {
            return self.wait_in_flight().await;
        }
        // The next batch takes the spare (or a pooled buffer) when its first bytes arrive.
        let buf = std::mem::take(&mut self.pending);
        self.placed -= buf.len() as u64; // `launch` counts it again
        let buf = Returning::new(buf, &self.inner.buffers);
        self.launch(Piece::Batch(buf)).await
    }

    /// Starts writing `piece` at `placed` (after the previous piece has finished).
    async fn launch(&mut self, piece: Piece) -> StorageResult<()> {
        let at = self.placed;
        self.placed += piece.bytes().len() as u64;
        self.wait_in_flight().await?;
        let (inner, id, file, resumable, one_at_a_time) = (
            self.inner.clone(),
            self.id.clone(),
            self.file.take(),
            self.resumable,
            self.write_lock.clone(),
        );
        let data_path = self.data_path.clone();
        self.in_flight = Some(tokio::task::spawn_blocking(move || {
            let file = match file {
                Some(f) => f,
                None => Arc::new(create_staging(&data_path)?),
            };
            {
                let _shared = if resumable {
                    Some(inner.lock_open(&file, &id)?)
                } else {
                    None
                };
                let _one = one_at_a_time
                    .as_ref()
                    .map(|lock| lock.lock().unwrap_or_else(|e| e.into_inner()));
                write_pieces(&file, piece.bytes(), at).map_err(io)?;
            }
            let buf = match piece {
                Piece::Batch(buf) => Some(buf),
                Piece::Frame(_) => None,
            };
            Ok((buf, file))
        }));
        Ok(())
    }

    /// Writes out everything given so far and gives the buffers back.
    async fn drain(&mut self) -> StorageResult<()> {
        if !self.first.is_empty() {
            // Written from where it arrived: a paused body takes no batch buffer for it.
            let first = std::mem::take(&mut self.first);
            self.launch(Piece::Frame(first)).await?;
        }
        self.flush_pending().await?;
        self.wait_in_flight().await?;
        self.release_buffers();
        Ok(())
    }
}

#[async_trait]
impl ChunkWriter for FsWriter {
    async fn write(&mut self, data: Bytes) -> StorageResult<()> {
        if data.is_empty() {
            return Ok(());
        }
        let end = self
            .pos
            .checked_add(data.len() as u64)
            .ok_or(StorageError::StorageFull)?;
        if !self.resumable && self.pos == self.start && data.len() <= KEEP_FIRST {
            self.first = data;
            self.pos = end;
            return Ok(());
        }
        self.pos = end;
        self.place_first().await?;
        self.place(data).await
    }

    async fn flush(&mut self) -> StorageResult<()> {
        self.drain().await
    }

    async fn commit(mut self: Box<Self>) -> StorageResult<Vec<Range<u64>>> {
        let gathered: &[u8] = if self.first.is_empty() {
            &self.pending
        } else {
            &self.first
        };
        if !self.resumable
            && self.file.is_none()
            && self.in_flight.is_none()
            && self.inner.inline(gathered.len() as u64)
        {
            // The whole of a small simple upload: create and write it here (see `inline_io`),
            // and keep it open for `publish`. A lasting one is named at once and not kept
            // open: any process may publish or abort it, by its name.
            let lasting = self.id.0.starts_with("k.");
            let named = lasting || !self.inner.unnamed_staging;
            let file = if named {
                create_staging(&self.data_path)?
            } else {
                create_unnamed(&self.inner.staging).map_err(io)?
            };
            file.write_all_at(gathered, self.start).map_err(io)?;
            if lasting {
                drop(file);
            } else {
                self.inner
                    .staged
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(
                        self.id.clone(),
                        Staged {
                            file,
                            named,
                            written: SystemTime::now(),
                        },
                    );
            }
            return Ok(if self.pos > self.start {
                vec![self.start..self.pos]
            } else {
                Vec::new()
            });
        }
        self.drain().await?;
        let (inner, id, data_path, file, resumable, start, pos) = (
            self.inner.clone(),
            self.id.clone(),
            std::mem::take(&mut self.data_path),
            self.file.take(),
            self.resumable,
            self.start,
            self.pos,
        );
        drop(self);
        let durable = inner.durability == Durability::Power;
        let Parsed::Resumable { key, .. } = parse_id(&id)? else {
            // A single upload: nothing to record, but an empty one still needs its file.
            if file.is_none() || durable {
                blocking(move || {
                    let file = match file {
                        Some(f) => f,
                        None => Arc::new(create_staging(&data_path)?),
                    };
                    if durable {
                        file.sync_data().map_err(io)?;
                    }
                    Ok(())
                })
                .await?;
            }
            return Ok(if pos > start {
                vec![start..pos]
            } else {
                Vec::new()
            });
        };
        let key = key.to_owned();
        let file = file.ok_or(StorageError::UploadClosed)?;
        debug_assert!(resumable);
        // Inline unless durable (an fsync): `lock_open` only waits in the instant between a
        // claimer's exclusive lock and its `claimed` marker.
        quick(inner.inline_meta(), move || {
            if durable {
                file.sync_data().map_err(io)?;
            }
            let _shared = inner.lock_open(&file, &id)?;
            let ranges_dir = inner.upload_dir(&key).join("ranges");
            if pos > start {
                File::create(ranges_dir.join(format!("{start}-{pos}")))
                    .map_err(closed_if_missing)?;
                if durable {
                    fsync_dir(&ranges_dir).map_err(io)?;
                }
            }
            inner.ranges(&key)
        })
        .await
    }
}

impl Inner {
    /// The lock shared by this process's writers of one resumable upload, held around each
    /// batch's `pwrite`s. They all write into one data file, and the kernel serialises
    /// writes to a file on its inode lock, where a waiting writer spins while the holder
    /// copies (up to 12 % of the server's CPU with four chunks in flight: PERFORMANCE.md);
    /// waiting here, it sleeps and leaves the core to the receiving side.
    fn write_lock(&self, id: &UploadId) -> Arc<Mutex<()>> {
        let mut locks = self.write_locks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(lock) = locks.get(id).and_then(Weak::upgrade) {
            return lock;
        }
        if locks.len() >= 64 && locks.len().is_power_of_two() {
            locks.retain(|_, lock| lock.strong_count() > 0);
        }
        let lock = Arc::new(Mutex::new(()));
        locks.insert(id.clone(), Arc::downgrade(&lock));
        lock
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::FilePath;
    use crate::storage::fs::FsStorage;
    use crate::storage::{Coordinate, PublishOptions, UploadSpec};
    use std::fs;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Eight writers of 3 MiB each through a storage whose budget is 1 MiB: every file is
    /// right (the writers left without a buffer wrote their frames as they came), and the
    /// buffers never exceeded the budget.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writers_share_a_small_budget() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FsStorage::options()
            .buffer_budget(1 << 20)
            .open(dir.path())
            .unwrap();
        let peak = Arc::new(AtomicUsize::new(0));
        let sampler = {
            let (inner, peak) = (storage.inner.clone(), peak.clone());
            tokio::spawn(async move {
                loop {
                    peak.fetch_max(inner.buffers.allocated(), Ordering::Relaxed);
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
            })
        };
        let tasks: Vec<_> = (0..8u8)
            .map(|n| {
                let storage = storage.clone();
                tokio::spawn(async move {
                    let path = FilePath::new(format!("budget/{n}.bin")).unwrap();
                    let data: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 253) as u8 ^ n).collect();
                    let up = storage
                        .open_upload(&path, UploadSpec::Single)
                        .await
                        .unwrap();
                    let mut w = storage.writer(&up.id, 0).await.unwrap();
                    for piece in data.chunks(64 << 10) {
                        w.write(Bytes::copy_from_slice(piece)).await.unwrap();
                    }
                    w.commit().await.unwrap();
                    storage.claim(&up.id).await.unwrap();
                    let size = data.len() as u64;
                    storage
                        .publish(&up.id, &path, size, PublishOptions::default())
                        .await
                        .unwrap();
                    assert_eq!(
                        fs::read(storage.inner.root.join(path.as_str())).unwrap(),
                        data
                    );
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        sampler.abort();
        let peak = peak.load(Ordering::Relaxed);
        assert!(
            peak > 0 && peak <= 1 << 20,
            "buffers peaked at {peak} bytes"
        );
    }

    /// A writer dropped while its batch is being written (its client went away) gives every
    /// buffer back: none is freed, none stays counted in the budget.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_writer_gives_its_buffers_back() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FsStorage::options()
            .buffer_budget(1 << 20)
            .open(dir.path())
            .unwrap();
        let pool = storage.inner.buffers.clone();
        for resumable in [false, true] {
            let path = FilePath::new(format!("dropped-{resumable}.bin")).unwrap();
            let spec = if resumable {
                UploadSpec::Resumable { total: 8 << 20 }
            } else {
                UploadSpec::Single
            };
            let up = storage.open_upload(&path, spec).await.unwrap();
            let mut w = storage.writer(&up.id, 0).await.unwrap();
            for _ in 0..20 {
                w.write(Bytes::from(vec![7u8; 64 << 10])).await.unwrap();
            }
            drop(w);
            let t0 = std::time::Instant::now();
            while pool.idle() < pool.allocated() && t0.elapsed().as_secs() < 10 {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            assert!(pool.allocated() > 0, "batches were used");
            assert_eq!(pool.idle(), pool.allocated(), "resumable: {resumable}");
            storage.abort(&up.id).await.unwrap();
        }
    }

    #[test]
    fn one_write_lock_per_live_upload() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FsStorage::new(dir.path()).unwrap();
        let inner = &storage.inner;
        let a = inner.write_lock(&UploadId("u.a.1".into()));
        assert!(Arc::ptr_eq(
            &a,
            &inner.write_lock(&UploadId("u.a.1".into()))
        ));
        assert!(!Arc::ptr_eq(
            &a,
            &inner.write_lock(&UploadId("u.b.1".into()))
        ));
        // Entries of finished uploads are dropped as the map grows.
        for n in 0..200 {
            drop(inner.write_lock(&UploadId(format!("u.{n}.1"))));
        }
        let live = inner.write_locks.lock().unwrap().len();
        assert!(live < 100, "{live} entries");
        assert!(Arc::ptr_eq(
            &a,
            &inner.write_lock(&UploadId("u.a.1".into()))
        ));
    }

    /// A simple upload's first frame is kept as it came while it is the only one: whatever
    /// frames follow it (small, past the small-file gathering, none), the file holds them all
    /// in order, written inline or through batches.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn first_frame_then_more_frames() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FsStorage::new(dir.path()).unwrap();
        let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let cases: [&[usize]; 6] = [
            &[10],
            &[10, 5],
            &[10, 70_000, 5],
            &[60_000, 60_000],
            &[KEEP_FIRST, 1],
            &[1, 200_000, 3],
        ];
        for (n, frames) in cases.into_iter().enumerate() {
            let path = FilePath::new(format!("f{n}.bin")).unwrap();
            let up = storage
                .open_upload(&path, UploadSpec::Single)
                .await
                .unwrap();
            let mut w = storage.writer(&up.id, 0).await.unwrap();
            let mut at = 0;
            for &len in frames {
                w.write(Bytes::copy_from_slice(&bytes[at..at + len]))
                    .await
                    .unwrap();
                at += len;
            }
            assert_eq!(w.commit().await.unwrap(), vec![0..at as u64], "{frames:?}");
            storage.claim(&up.id).await.unwrap();
            let options = PublishOptions::default();
            storage
                .publish(&up.id, &path, at as u64, options)
                .await
                .unwrap();
            let stored = fs::read(dir.path().join(format!("f{n}.bin"))).unwrap();
            assert!(stored == bytes[..at], "{frames:?}: the file differs");
        }
    }
}
