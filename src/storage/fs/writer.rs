//! Writers: [`FsWriter`] gathers an upload's frames into batches ([`Buffers`]) and writes them
//! off the async threads, the next batch gathering while the previous one is written; a small
//! simple upload is written whole at `commit`, on the calling thread.

use async_trait::async_trait;
use bytes::Bytes;
use std::fs::{File, OpenOptions};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;

use super::sys::{create_staging, create_unnamed, fsync_dir, write_pieces};
use super::{Durability, Inner, Parsed, Staged, blocking, closed_if_missing, io, parse_id, quick};
use crate::storage::{ChunkWriter, StorageError, StorageResult, UploadId};

/// The largest and smallest batch: a writer alone writes 2 MiB per system-call round, each
/// further writer halves the size, down to 256 KiB (see [`Buffers::batch_size`]).
const MAX_BATCH: usize = 2 << 20;
const MIN_BATCH: usize = 256 << 10;
/// Below this many bytes a writer gathers into a small growing buffer, not a batch buffer:
/// a small file never takes (or allocates) a whole batch buffer.
const SMALL_GATHER: usize = 64 * 1024;
/// The default [`FsOptions::buffer_budget`](super::FsOptions::buffer_budget).
pub const DEFAULT_BUFFER_BUDGET: usize = 16 << 20;

/// The name of the gauge of [`Buffers`]' bytes (the `metrics` module lists it).
pub(crate) const BUFFER_BYTES_METRIC: &str = "tower_uploads_buffer_bytes";

/// Sets the gauge of the pool's bytes (a no-op without a metrics recorder; no allocation).
fn set_gauge(bytes: usize) {
    ::metrics::gauge!(BUFFER_BYTES_METRIC).set(bytes as f64);
}

/// Whether `buf` is a batch buffer (else a small gathering buffer, at most 128 KiB).
fn is_batch(buf: &Vec<u8>) -> bool {
    buf.capacity() >= MIN_BATCH
}

/// The batch buffers of a storage's writers: at most `budget` bytes of them exist at once
/// (in use or idle), reused from one writer to the next and never freed (when the budget is
/// spent, an idle buffer of another size serves). When the budget is spent a writer waits for a buffer (its body is
/// read more slowly) instead of allocating, or, with a batch of its own being written, waits
/// for that one.
///
/// Without a pool every chunk request allocated and freed its two buffers, and glibc, after
/// the first freed 1 MiB block raised its mmap threshold, carved the next ones from the worker
/// threads' arenas, which kept them: a server's memory followed its allocator's history
/// (30.8 MiB peak over one run of 1 GiB in 16 MiB chunks, 4 in flight; PERFORMANCE.md). With
/// 200 concurrent uploads it kept 227 MiB after the load; the budget bounds what exists.
///
/// Each batch is one hop to the blocking pool, and a hop costs thread switches: fewer, larger
/// batches are faster (one 1 GiB upload: 2 MiB batches ~13–18 % faster than 512 KiB ones),
/// but every writer holds two. So the size follows the number of writers holding buffers:
/// 2 MiB for one, 1 MiB for two, 512 KiB for three or four, 256 KiB beyond. (The kernel gets
/// a batch in `pwrite`s of at most 256 KiB whatever its size: [`write_pieces`].)
pub(super) struct Buffers {
    state: Mutex<Pool>,
    /// Wakes a writer waiting for the budget when a buffer comes back.
    freed: tokio::sync::Notify,
    /// Writers holding batch buffers now.
    writers: AtomicUsize,
    budget: usize,
}

struct Pool {
    idle: Vec<Vec<u8>>,
    /// Bytes of batch buffers that exist, in use or idle: at most the budget.
    allocated: usize,
}

impl Buffers {
    pub(super) fn new(budget: usize) -> Buffers {
        Buffers {
            state: Mutex::new(Pool {
                idle: Vec::new(),
                allocated: 0,
            }),
            freed: tokio::sync::Notify::new(),
            writers: AtomicUsize::new(0),
            budget: budget.max(MIN_BATCH),
        }
    }

    /// The batch size while `writers` writers hold buffers.
    fn batch_size(writers: usize) -> usize {
        let halvings = writers.max(1).next_power_of_two().trailing_zeros();
        (MAX_BATCH >> halvings.min(3)).max(MIN_BATCH)
    }

    /// Bytes of batch buffers that exist now.
    #[cfg(test)]
    pub(super) fn allocated(&self) -> usize {
        self.pool().allocated
    }

    fn pool(&self) -> std::sync::MutexGuard<'_, Pool> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A batch buffer for a writer that [joined](Self::join), if the budget allows one now:
    /// an idle one of the batch size, else a new one, else an idle one of another size (no
    /// buffer is ever freed: glibc, once it frees an mmapped block, serves every smaller one
    /// from its arenas for good), else a new smaller one.
    fn try_take(&self) -> Option<Vec<u8>> {
        let size = Self::batch_size(self.writers.load(Ordering::Relaxed));
        let mut pool = self.pool();
        if let Some(i) = pool.idle.iter().position(|b| b.capacity() == size) {
            return Some(pool.idle.swap_remove(i));
        }
        let allocated = pool.allocated;
        let fits = |want: usize| allocated + want <= self.budget;
        let new = if fits(size) {
            size
        } else if let Some(buf) = pool.idle.pop() {
            return Some(buf);
        } else if fits(MIN_BATCH) {
            MIN_BATCH
        } else {
            return None;
        };
        pool.allocated += new;
        set_gauge(pool.allocated);
        Some(Vec::with_capacity(new))
    }

    /// A batch buffer, waiting until the budget allows one.
    async fn take(&self) -> Vec<u8> {
        loop {
            let freed = self.freed.notified();
            if let Some(buf) = self.try_take() {
                return buf;
            }
            freed.await;
        }
    }

    fn give(&self, mut buf: Vec<u8>) {
        if !is_batch(&buf) {
            return; // a small gathering buffer, or empty
        }
        buf.clear();
        // Kept, whatever its size: a buffer freed would leave its memory to the allocator,
        // which may keep it in an arena of its own (and glibc, after freeing an mmapped
        // block, serves every smaller one from its arenas for good).
        self.pool().idle.push(buf);
        self.freed.notify_one();
    }

    /// Counts a writer that starts using batch buffers.
    fn join(&self) {
        self.writers.fetch_add(1, Ordering::Relaxed);
    }

    /// Uncounts a writer that [joined](Self::join).
    fn leave(&self) {
        self.writers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A batch being written; gives its buffer back for reuse, and the file it opened.
type WriteTask = tokio::task::JoinHandle<StorageResult<(Vec<u8>, Arc<File>)>>;

/// Gathers frames into a batch buffer and writes full batches off the async threads, the next
/// batch gathering while the previous one is written. Frames are copied into two buffers that
/// alternate (and are reused), so the HTTP layer gets its read buffer back at once instead of
/// allocating fresh memory for every frame while a batch is held.
pub(super) struct FsWriter {
    inner: Arc<Inner>,
    id: UploadId,
    data_path: PathBuf,
    /// `None` until the first batch creates a single upload's staging file.
    file: Option<Arc<File>>,
    resumable: bool,
    start: u64,
    pos: u64,
    /// The first frame of a simple upload, kept as it came while it is the only one (a small
    /// file is written from where it arrived, without a copy into `pending`).
    first: Bytes,
    pending: Vec<u8>,
    /// The other buffer, back from the last finished batch.
    spare: Option<Vec<u8>>,
    /// The previous batch, written while the next one gathers.
    in_flight: Option<WriteTask>,
    /// Counted among the writers that share the batch budget ([`Buffers::join`]).
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
            let (mut buf, file) = task
                .await
                .map_err(|e| StorageError::other(format!("write task failed: {e}")))??;
            buf.clear();
            match self.spare {
                None if is_batch(&buf) => self.spare = Some(buf),
                _ => self.inner.buffers.give(buf),
            }
            self.file = Some(file);
        }
        Ok(())
    }

    /// The buffer of the next batch: the spare, else one from the pool if the budget allows,
    /// else this writer's batch being written, once written, else one from the pool when
    /// another writer gives one back.
    async fn next_batch(&mut self) -> StorageResult<Vec<u8>> {
        if let Some(spare) = self.spare.take() {
            return Ok(spare);
        }
        if let Some(buf) = self.inner.buffers.try_take() {
            return Ok(buf);
        }
        if self.in_flight.is_some() {
            self.wait_in_flight().await?;
            if let Some(spare) = self.spare.take() {
                return Ok(spare);
            }
        }
        Ok(self.inner.buffers.take().await)
    }

    /// Moves a kept first frame into `pending`.
    fn gather_first(&mut self) {
        if !self.first.is_empty() {
            let first = std::mem::take(&mut self.first);
            self.pending.extend_from_slice(&first);
        }
    }

    /// Starts writing what is pending (after the previous batch has finished).
    async fn flush_pending(&mut self) -> StorageResult<()> {
        self.gather_first();
        if self.pending.is_empty() {
            return self.wait_in_flight().await;
        }
        // The next batch takes the spare (or a pooled buffer) when its first bytes arrive.
        let buf = std::mem::take(&mut self.pending);
        let at = self.pos - buf.len() as u64;
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
                write_pieces(&file, &buf, at).map_err(io)?;
            }
            Ok((buf, file))
        }));
        Ok(())
    }
}

#[async_trait]
impl ChunkWriter for FsWriter {
    async fn write(&mut self, data: Bytes) -> StorageResult<()> {
        if !self.resumable && self.pos == self.start && data.len() <= SMALL_GATHER {
            self.pos = self
                .pos
                .checked_add(data.len() as u64)
                .ok_or(StorageError::StorageFull)?;
            self.first = data;
            return Ok(());
        }
        self.gather_first();
        let mut rest = &data[..];
        while !rest.is_empty() {
            let so_far = (self.pos - self.start) as usize; // what this writer was given
            if !is_batch(&self.pending) && so_far.saturating_add(rest.len()) > SMALL_GATHER {
                // Past a small file's size: gather into a batch buffer from now on.
                if !self.joined {
                    self.joined = true;
                    self.inner.buffers.join();
                }
                let mut batch = self.next_batch().await?;
                batch.extend_from_slice(&self.pending);
                self.pending = batch;
            }
            let batch = is_batch(&self.pending);
            let n = if batch {
                (self.pending.capacity() - self.pending.len()).min(rest.len())
            } else {
                rest.len()
            };
            self.pos = self
                .pos
                .checked_add(n as u64)
                .ok_or(StorageError::StorageFull)?;
            self.pending.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            if batch && self.pending.len() >= self.pending.capacity() {
                self.flush_pending().await?;
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> StorageResult<()> {
        self.flush_pending().await?;
        self.wait_in_flight().await?;
        self.release_buffers();
        Ok(())
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
        self.flush_pending().await?;
        self.wait_in_flight().await?;
        self.release_buffers();
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

    #[test]
    fn batch_size_follows_the_number_of_writers() {
        let table = [
            (0, 2 << 20),
            (1, 2 << 20),
            (2, 1 << 20),
            (3, 512 << 10),
            (4, 512 << 10),
            (5, 256 << 10),
            (8, 256 << 10),
            (9, 256 << 10),
            (10_000, 256 << 10),
        ];
        for (writers, size) in table {
            assert_eq!(Buffers::batch_size(writers), size, "{writers} writers");
        }
        // The pool keeps the buffers it made, and never frees one: past the budget an idle
        // buffer of another size serves.
        let pool = Buffers::new(8 << 20);
        pool.join();
        let bufs: Vec<_> = (0..4).map(|_| pool.try_take().unwrap()).collect();
        assert!(bufs.iter().all(|b| b.capacity() == 2 << 20));
        bufs.into_iter().for_each(|b| pool.give(b));
        assert_eq!(pool.pool().idle.len(), 4, "kept");
        assert_eq!(pool.allocated(), 8 << 20);
        (0..3).for_each(|_| pool.join());
        let other = pool.try_take().unwrap();
        assert_eq!(
            other.capacity(),
            2 << 20,
            "the budget is spent: an idle one serves"
        );
        assert_eq!(pool.pool().idle.len(), 3);
        assert_eq!(pool.allocated(), 8 << 20, "nothing freed, nothing new");
        pool.give(other);
        let roomy = Buffers::new(9 << 20);
        (0..4).for_each(|_| roomy.join());
        assert_eq!(
            roomy.try_take().unwrap().capacity(),
            512 << 10,
            "within the budget: new"
        );
        pool.give(Vec::with_capacity(1000)); // a gathering buffer is not kept
        assert_eq!(pool.pool().idle.len(), 4);
    }

    /// The budget bounds the buffers that exist: past it the pool hands out smaller ones,
    /// then none; a writer waiting in `take` gets the next one
    /// given back.
    #[tokio::test]
    async fn the_budget_bounds_the_buffers() {
        let pool = Arc::new(Buffers::new(1 << 20));
        pool.join(); // one writer: 2 MiB batches, more than the budget
        let a = pool.try_take().unwrap();
        assert_eq!(a.capacity(), MIN_BATCH, "a smaller buffer rather than none");
        let rest: Vec<_> = (0..3).map(|_| pool.try_take().unwrap()).collect();
        assert_eq!(pool.allocated(), 1 << 20);
        assert!(pool.try_take().is_none(), "the budget is spent");
        let waiter = tokio::spawn({
            let pool = pool.clone();
            async move { pool.take().await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "a writer waits for the budget");
        pool.give(a);
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("a buffer given back wakes the waiter")
            .unwrap();
        assert_eq!(got.capacity(), MIN_BATCH);
        assert!(pool.allocated() <= 1 << 20);
        drop((got, rest));
    }

    /// Eight writers of 3 MiB each through a storage whose budget is 1 MiB: every file is
    /// right, and the buffers never exceeded the budget.
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
            &[SMALL_GATHER, 1],
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
