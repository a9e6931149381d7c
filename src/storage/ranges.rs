//! Sets of received byte ranges.

use std::ops::Range;

/// Merges ranges (half-open) into ascending, non-overlapping, non-adjacent ranges.
pub fn merge_ranges(mut ranges: Vec<Range<u64>>) -> Vec<Range<u64>> {
    ranges.retain(|r| r.start < r.end);
    ranges.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// A merged set of received ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeSet(Vec<Range<u64>>);

impl RangeSet {
    /// The set of these ranges.
    pub fn new(ranges: Vec<Range<u64>>) -> Self {
        RangeSet(merge_ranges(ranges))
    }

    /// The merged ranges, ascending.
    pub fn ranges(&self) -> &[Range<u64>] {
        &self.0
    }

    /// Whether `[0, total)` is covered.
    pub fn covers(&self, total: u64) -> bool {
        total == 0
            || self
                .0
                .first()
                .is_some_and(|r| r.start == 0 && r.end >= total)
    }

    /// Whether `range` is inside the set.
    pub fn contains(&self, range: &Range<u64>) -> bool {
        range.start >= range.end
            || self
                .0
                .iter()
                .any(|r| r.start <= range.start && range.end <= r.end)
    }

    /// The range of the set that contains `offset`, if any.
    pub fn containing(&self, offset: u64) -> Option<&Range<u64>> {
        self.0.iter().find(|r| r.start <= offset && offset < r.end)
    }

    /// The start of the first range of the set that begins after `offset`.
    pub fn next_start_after(&self, offset: u64) -> Option<u64> {
        self.0.iter().map(|r| r.start).find(|&s| s > offset)
    }

    /// Total bytes covered.
    pub fn len(&self) -> u64 {
        self.0.iter().map(|r| r.end - r.start).sum()
    }

    /// Whether nothing is covered.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many separate ranges the set would hold with `range` added (without building it:
    /// the ranges `range` overlaps or touches merge with it into one).
    pub(crate) fn pieces_with(&self, range: &Range<u64>) -> usize {
        if range.start >= range.end {
            return self.0.len();
        }
        let touching = self
            .0
            .iter()
            .filter(|r| r.start <= range.end && range.start <= r.end)
            .count();
        self.0.len() + 1 - touching
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_with_is_the_merged_count() {
        let set = RangeSet::new(vec![2..4, 6..8, 10..12]);
        for start in 0..14u64 {
            for end in start..15 {
                let mut all = set.ranges().to_vec();
                all.push(start..end);
                assert_eq!(
                    set.pieces_with(&(start..end)),
                    merge_ranges(all).len(),
                    "{start}..{end}"
                );
            }
        }
    }

    #[test]
    #[allow(clippy::type_complexity)]
    fn merging() {
        let cases: &[(&[Range<u64>], &[Range<u64>])] = &[
            (&[], &[]),
            (&[0..0], &[]),
            (&[0..5], &[0..5]),
            (&[5..10, 0..5], &[0..10]),
            (&[0..3, 5..8, 2..6], &[0..8]),
            (&[10..20, 0..5], &[0..5, 10..20]),
            (&[0..10, 2..3], &[0..10]),
            (&[0..1, 1..2, 2..3, 4..5], &[0..3, 4..5]),
        ];
        for (input, want) in cases {
            assert_eq!(merge_ranges(input.to_vec()), want.to_vec(), "{input:?}");
        }
        let set = RangeSet::new(vec![0..5, 5..10]);
        assert!(set.covers(10));
        assert!(!set.covers(11));
        assert!(set.contains(&(2..7)));
        assert!(!RangeSet::new(vec![1..10]).covers(10));
        assert!(RangeSet::default().covers(0));
        assert_eq!(RangeSet::new(vec![0..5, 7..9]).len(), 7);
        let set = RangeSet::new(vec![2..4, 8..10]);
        assert_eq!(set.containing(3), Some(&(2..4)));
        assert_eq!(set.containing(4), None);
        assert_eq!(set.next_start_after(4), Some(8));
        assert_eq!(set.next_start_after(0), Some(2));
        assert_eq!(set.next_start_after(8), None);
    }
}
