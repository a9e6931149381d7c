//! The bounded reader every parser goes through: a [`Source`] with a byte and read budget,
//! the head kept, and one cached window for nearby reads.

use bytes::Bytes;

use super::{MAX_PROBE_READ, MAX_PROBE_READS, PROBE_BUDGET, SNIFF_BYTES, Source};

/// Reads ranges of a [`Source`] within [`PROBE_BUDGET`] bytes and [`MAX_PROBE_READS`] reads.
pub(super) struct Reader<'a> {
    src: &'a dyn Source,
    size: u64,
    head: Bytes,
    window_start: u64,
    window: Bytes,
    spent: u64,
    reads: u32,
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
    /// longer than [`MAX_PROBE_READ`], the budget would be exceeded, or the read fails.
    pub(super) async fn get(&mut self, at: u64, len: u64, ahead: u64) -> Option<Bytes> {
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
        let got = self.src.read(at..end).await.ok()?;
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
