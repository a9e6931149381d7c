//! The bounded reader every parser goes through: a [`Source`] with a byte and read budget,
//! the head kept, and one cached window for nearby reads; and the probe's work and time
//! budget ([`Reader::work`]).

use bytes::Bytes;
use std::time::{Duration, Instant};

use super::{
    MAX_PROBE_READ, MAX_PROBE_READS, MAX_PROBE_WORK, PROBE_BUDGET, PROBE_TIME, ProbeStats,
    SNIFF_BYTES, Source,
};

/// Reads ranges of a [`Source`] within [`PROBE_BUDGET`] bytes and [`MAX_PROBE_READS`] reads,
/// and keeps the count of the parsers' work within [`MAX_PROBE_WORK`] steps and
/// [`PROBE_TIME`].
pub(super) struct Reader<'a> {
    src: &'a dyn Source,
    size: u64,
    head: Bytes,
    window_start: u64,
    window: Bytes,
    spent: u64,
    reads: u32,
    /// Steps of work so far: one per [`get`](Self::get), plus what the parsers count
    /// ([`work`](Self::work)).
    work: u64,
    started: Instant,
    /// Time spent waiting for the source (not the probe's work).
    waiting: Duration,
    /// The work or time budget ran out.
    exhausted: bool,
}

impl<'a> Reader<'a> {
    pub(super) fn new(src: &'a dyn Source) -> Self {
        Reader {
            src,
            size: src.size(),
            head: Bytes::new(),
            window_start: 0,
            window: Bytes::new(),
            spent: 0,
            reads: 0,
            work: 0,
            started: Instant::now(),
            waiting: Duration::ZERO,
            exhausted: false,
        }
    }

    /// Counts `steps` of a parser's work (a loop turn, a byte decoded in memory): `None`, from
    /// then on for every call and every [`get`](Self::get), once the probe has done
    /// [`MAX_PROBE_WORK`] steps or worked for [`PROBE_TIME`] (not counting the time spent
    /// waiting for the source). A parser stops there and keeps what it found.
    pub(super) fn work(&mut self, steps: u64) -> Option<()> {
        self.work = self.work.saturating_add(steps);
        if !self.exhausted
            && (self.work > MAX_PROBE_WORK
                || self.started.elapsed().saturating_sub(self.waiting) > PROBE_TIME)
        {
            self.exhausted = true;
        }
        (!self.exhausted).then_some(())
    }

    /// What the probe cost so far.
    pub(super) fn stats(&self) -> ProbeStats {
        ProbeStats {
            bytes_read: self.spent,
            reads: self.reads,
            work: self.work,
            elapsed: self.started.elapsed(),
            waiting: self.waiting,
            exhausted: self.exhausted,
        }
    }

    /// The file's size.
    pub(super) fn size(&self) -> u64 {
        self.size
    }

    /// Reads the first [`SNIFF_BYTES`] (kept for later [`get`](Self::get)s).
    pub(super) async fn head(&mut self) -> Option<Bytes> {
        let head = self.fetch(0, SNIFF_BYTES as u64).await?;
        self.head = head.clone();
        Some(head)
    }

    /// The bytes of `at .. at + len`, cut at the end of the file (so possibly fewer; empty at
    /// or past the end). Served from the head or the cached window when they hold the whole
    /// range; otherwise reads `max(len, ahead)` bytes from `at` (at most [`MAX_PROBE_READ`],
    /// never fewer than `len`), which become the cached window. `None` when the range is
    /// longer than [`MAX_PROBE_READ`], the budget would be exceeded, the read fails, or the
    /// work or time budget has run out (a `get` counts one step of [`work`](Self::work)).
    pub(super) async fn get(&mut self, at: u64, len: u64, ahead: u64) -> Option<Bytes> {
        self.work(1)?;
        let end = at.saturating_add(len).min(self.size);
        if at >= end {
            return Some(Bytes::new());
        }
        if let Some(b) = slice_of(&self.head, 0, at, end) {
            return Some(b);
        }
        if let Some(b) = slice_of(&self.window, self.window_start, at, end) {
            return Some(b);
        }
        let want = (end - at).max(ahead).min(MAX_PROBE_READ);
        if want < end - at {
            return None;
        }
        let got = self.fetch(at, want).await?;
        self.window_start = at;
        self.window = got;
        slice_of(&self.window, at, at, end)
    }

    /// Reads `at .. at + len` (cut at the end of the file) from the source, within budget.
    async fn fetch(&mut self, at: u64, len: u64) -> Option<Bytes> {
        let end = at.saturating_add(len).min(self.size);
        let n = end.saturating_sub(at);
        if n > MAX_PROBE_READ
            || self.reads >= MAX_PROBE_READS
            || self.spent.saturating_add(n) > PROBE_BUDGET
        {
            return None;
        }
        self.reads += 1;
        self.spent += n;
        let t0 = Instant::now();
        let got = self.src.read(at..end).await;
        self.waiting += t0.elapsed();
        let got = got.ok()?;
        // A source that returns fewer bytes than it holds is treated as ending there.
        Some(got)
    }
}

/// `at .. end` out of `buf` (which starts at file offset `start`), when `buf` holds it all.
fn slice_of(buf: &Bytes, start: u64, at: u64, end: u64) -> Option<Bytes> {
    let from = usize::try_from(at.checked_sub(start)?).ok()?;
    let to = usize::try_from(end.checked_sub(start)?).ok()?;
    (to <= buf.len() && from <= to).then(|| buf.slice(from..to))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::MemorySource;

    #[tokio::test]
    async fn budget_and_cache() {
        let src = MemorySource::new(vec![7u8; 200_000]);
        let mut r = Reader::new(&src);
        assert_eq!(r.head().await.unwrap().len(), SNIFF_BYTES);
        // Inside the head: free.
        assert_eq!(r.get(10, 20, 0).await.unwrap().len(), 20);
        assert_eq!(src.bytes_read(), SNIFF_BYTES as u64);
        // Past it: one read of `ahead` bytes, then served from the window.
        assert_eq!(r.get(100_000, 4, 4096).await.unwrap().len(), 4);
        assert_eq!(r.get(100_010, 4, 4096).await.unwrap().len(), 4);
        assert_eq!(src.bytes_read(), SNIFF_BYTES as u64 + 4096);
        // Cut at the end; empty past it.
        assert_eq!(r.get(199_990, 100, 0).await.unwrap().len(), 10);
        assert_eq!(r.get(300_000, 100, 0).await.unwrap().len(), 0);
        // Longer than the file: cut.
        assert_eq!(
            r.get(0, MAX_PROBE_READ + 1, 0).await.unwrap().len(),
            200_000
        );
    }

    #[tokio::test]
    async fn work_budget_runs_out() {
        let src = MemorySource::new(vec![0u8; 100]);
        let mut r = Reader::new(&src);
        assert!(r.work(MAX_PROBE_WORK).is_some());
        assert!(r.get(0, 1, 0).await.is_none(), "one step too many");
        assert!(r.work(0).is_none(), "and it stays so");
        assert!(r.stats().exhausted);
        assert_eq!(r.stats().work, MAX_PROBE_WORK + 1);
    }

    #[tokio::test]
    async fn time_budget_runs_out_but_not_while_waiting() {
        /// A source that takes longer than the budget to answer.
        struct Slow(MemorySource);
        #[async_trait::async_trait]
        impl Source for Slow {
            fn size(&self) -> u64 {
                self.0.size()
            }
            async fn read(
                &self,
                range: std::ops::Range<u64>,
            ) -> Result<Bytes, crate::storage::StorageError> {
                std::thread::sleep(PROBE_TIME + Duration::from_millis(50));
                self.0.read(range).await
            }
            fn bytes_read(&self) -> u64 {
                self.0.bytes_read()
            }
        }
        let src = Slow(MemorySource::new(vec![0u8; 100]));
        let mut r = Reader::new(&src);
        assert!(r.head().await.is_some());
        assert!(r.work(1).is_some(), "waiting is not working");
        std::thread::sleep(PROBE_TIME + Duration::from_millis(50));
        assert!(r.work(1).is_none(), "working is");
        let stats = r.stats();
        assert!(stats.exhausted && stats.waiting > PROBE_TIME, "{stats:?}");
    }

    #[tokio::test]
    async fn budget_runs_out() {
        let src = MemorySource::new(vec![0u8; (PROBE_BUDGET + MAX_PROBE_READ) as usize]);
        let mut r = Reader::new(&src);
        r.head().await.unwrap();
        // Too long for one read.
        assert!(r.get(1 << 20, MAX_PROBE_READ + 1, 0).await.is_none());
        assert!(r.get(1 << 20, MAX_PROBE_READ, 0).await.is_some());
        assert!(r.get(20 << 20, MAX_PROBE_READ, 0).await.is_some());
        assert!(r.get(40 << 20, 1, 0).await.is_none());
        assert_eq!(src.bytes_read(), PROBE_BUDGET);
    }
}
