//! The buffers of [`FsStorage`](super::FsStorage)'s writers and readers: one pool per
//! storage, within its buffer budget, whose buffers are reused and never freed.

use bytes::Bytes;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The largest and smallest batch: a writer alone writes 2 MiB per system-call round, each
/// further writer halves the size, down to 256 KiB (see [`Buffers::batch_size`]).
const MAX_BATCH: usize = 2 << 20;
pub(super) const MIN_BATCH: usize = 256 << 10;
/// The default [`FsOptions::buffer_budget`](super::FsOptions::buffer_budget).
pub const DEFAULT_BUFFER_BUDGET: usize = 8 << 20;

/// The name of the gauge of [`Buffers`]' bytes (the `metrics` module lists it).
pub(crate) const BUFFER_BYTES_METRIC: &str = "tower_uploads_buffer_bytes";

/// Sets the gauge of the pool's bytes (a no-op without a metrics recorder; no allocation).
fn set_gauge(bytes: usize) {
    ::metrics::gauge!(BUFFER_BYTES_METRIC).set(bytes as f64);
}

/// The buffers of a storage's writers (batches) and readers (frames): at most `budget` bytes of them exist at once
/// (in use or idle), reused from one writer to the next and never freed (when the budget is
/// spent, an idle buffer of another size serves). When none is left, a writer writes each
/// frame from where it arrived (hyper's read buffer), one at a time: its body is read more
/// slowly, and nothing is allocated.
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

    /// Bytes of idle batch buffers now.
    #[cfg(test)]
    pub(super) fn idle(&self) -> usize {
        self.pool().idle.iter().map(Vec::capacity).sum()
    }

    fn pool(&self) -> std::sync::MutexGuard<'_, Pool> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A batch buffer for a writer that [joined](Self::join), if the budget allows one now
    /// (see [`take_sized`](Self::take_sized)).
    pub(super) fn try_take(&self) -> Option<Vec<u8>> {
        self.take_sized(Self::batch_size(self.writers.load(Ordering::Relaxed)))
    }

    /// A buffer of `size` bytes if the budget allows one now: an idle one of that size, else
    /// a new one, else an idle one of another size (no buffer is ever freed: glibc, once it
    /// frees an mmapped block, serves every smaller one from its arenas for good), else a
    /// new one of the smallest size.
    fn take_sized(&self, size: usize) -> Option<Vec<u8>> {
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

    /// Takes back a buffer of [`try_take`](Self::try_take) (an empty `Vec` is ignored).
    pub(super) fn give(&self, mut buf: Vec<u8>) {
        if buf.capacity() == 0 {
            return;
        }
        buf.clear();
        // Kept, whatever its size: a buffer freed would leave its memory to the allocator,
        // which may keep it in an arena of its own (and glibc, after freeing an mmapped
        // block, serves every smaller one from its arenas for good).
        self.pool().idle.push(buf);
    }

    /// Counts a writer that starts using batch buffers.
    pub(super) fn join(&self) {
        self.writers.fetch_add(1, Ordering::Relaxed);
    }

    /// Uncounts a writer that [joined](Self::join).
    pub(super) fn leave(&self) {
        self.writers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A pool buffer away from its writer or reader: given back to the pool when dropped unless
/// [taken](Self::take) — a batch being written (a writer dropped meanwhile, when its client
/// went away, would otherwise leave the buffer to the allocator and its bytes counted in the
/// budget for good), or a read frame in hyper's hands.
pub(super) struct Returning {
    buf: Vec<u8>,
    pool: Arc<Buffers>,
}

impl Returning {
    pub(super) fn new(buf: Vec<u8>, pool: &Arc<Buffers>) -> Returning {
        Returning {
            buf,
            pool: pool.clone(),
        }
    }

    pub(super) fn take(mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }
}

impl AsRef<[u8]> for Returning {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Returning {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.buf));
    }
}

/// The frames a reader reads a file in, at most.
pub(super) const READ_FRAME: usize = 256 * 1024;
/// A reader's frame when the pool has no buffer to lend: small enough that glibc serves it
/// from its arenas without `mmap` (freeing an `mmap`ped block would raise its threshold).
const FALLBACK_FRAME: usize = 64 * 1024;

/// A frame of a file being read: lent by the pool (back to it when the last `Bytes` of it is
/// dropped, wherever that is: [`Returning`]) or, with none to lend, a small one of its own.
pub(super) enum Frame {
    Lent(Returning),
    Own(Vec<u8>),
}

impl Frame {
    /// A zeroed frame of up to `want` bytes (its length says how many).
    pub(super) fn new(pool: &Arc<Buffers>, want: usize) -> Frame {
        let want = want.min(READ_FRAME);
        match pool.take_sized(MIN_BATCH) {
            Some(mut buf) => {
                buf.resize(want.min(buf.capacity()), 0);
                Frame::Lent(Returning::new(buf, pool))
            }
            None => Frame::Own(vec![0; want.min(FALLBACK_FRAME)]),
        }
    }

    pub(super) fn as_mut(&mut self) -> &mut [u8] {
        match self {
            Frame::Lent(r) => &mut r.buf,
            Frame::Own(v) => v,
        }
    }

    pub(super) fn into_bytes(self) -> Bytes {
        match self {
            Frame::Lent(r) => Bytes::from_owner(r),
            Frame::Own(v) => Bytes::from(v),
        }
    }
}

impl AsRef<[u8]> for Frame {
    fn as_ref(&self) -> &[u8] {
        match self {
            Frame::Lent(r) => r.as_ref(),
            Frame::Own(v) => v,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        pool.give(Vec::new()); // no buffer: nothing kept
        assert_eq!(pool.pool().idle.len(), 4);
    }

    /// The budget bounds the buffers that exist: past it the pool hands out smaller ones,
    /// then none, until one is given back.
    #[test]
    fn the_budget_bounds_the_buffers() {
        let pool = Buffers::new(1 << 20);
        pool.join(); // one writer: 2 MiB batches, more than the budget
        let a = pool.try_take().unwrap();
        assert_eq!(a.capacity(), MIN_BATCH, "a smaller buffer rather than none");
        let rest: Vec<_> = (0..3).map(|_| pool.try_take().unwrap()).collect();
        assert_eq!(pool.allocated(), 1 << 20);
        assert!(pool.try_take().is_none(), "the budget is spent");
        pool.give(a);
        assert_eq!(pool.try_take().unwrap().capacity(), MIN_BATCH, "reused");
        assert_eq!(pool.allocated(), 1 << 20);
        drop(rest);
    }

    /// A reader's frame is lent by the pool and comes back when its last `Bytes` goes, on
    /// any thread; with the budget spent it is a small one of its own.
    #[test]
    fn read_frames_are_lent_and_come_back() {
        let pool = Arc::new(Buffers::new(2 * MIN_BATCH));
        let mut a = Frame::new(&pool, 10 << 20);
        assert_eq!(a.as_mut().len(), READ_FRAME, "at most a read frame");
        a.as_mut()[0] = 7;
        let a = a.into_bytes();
        let b = Frame::new(&pool, 100).into_bytes();
        assert_eq!((a[0], a.len(), b.len()), (7, READ_FRAME, 100));
        let c = Frame::new(&pool, 10 << 20);
        assert_eq!(
            c.as_ref().len(),
            FALLBACK_FRAME,
            "none to lend: a small one"
        );
        assert_eq!(pool.allocated(), 2 * MIN_BATCH);
        let clone = a.slice(1..10);
        std::thread::spawn(move || drop(a)).join().unwrap();
        assert!(pool.pool().idle.is_empty(), "a slice of it is still alive");
        drop((clone, b));
        assert_eq!(pool.pool().idle.len(), 2, "both back");
        assert_eq!(pool.allocated(), 2 * MIN_BATCH, "and nothing new");
        drop(c);
        assert_eq!(pool.pool().idle.len(), 2, "a frame of its own is not kept");
    }
}
