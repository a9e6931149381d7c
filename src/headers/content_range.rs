//! The request header `Content-Range` of a resumable chunk upload (PROTOCOL.md §4).
//!
//! A pure parser: [`parse`] reads the header's syntax, [`ContentRange::validate`] checks what can
//! be checked without the body, and [`ContentRange::resolve`] decides, from the body's length,
//! which bytes of the file a chunk covers.
//!
//! # Accepted syntax
//!
//! ```text
//! bytes <start>-<end>/<total>     RFC 9110
//! bytes=<start>-<end>/<total>     ittybit's documentation
//! bytes */<total>                 status query (GCS), also `bytes=*/<total>`
//! ```
//!
//! - The unit `bytes` is matched case-insensitively.
//! - Between the unit and the range there is either `=` or whitespace (SP / HTAB). Whitespace
//!   around the `=` is tolerated too (`bytes= 0-1/2`, `bytes = 0-1/2`), as are several spaces;
//!   `bytes0-1/2` (no separator) is malformed.
//! - Leading and trailing whitespace (OWS) around the whole value is ignored. No whitespace is
//!   allowed inside `<start>-<end>/<total>`.
//! - Numbers are one or more ASCII decimal digits (leading zeros allowed, as in RFC 9110's
//!   `1*DIGIT`), without sign; a number that does not fit in a `u64` is malformed. Any total up
//!   to `u64::MAX` parses: size limits are the caller's business.
//! - A `,` anywhere is a multi-range header ([`RangeError::MultiRange`]): a chunk is one range.
//! - An unknown total (`bytes 0-9/*`) is malformed: the server needs the total to know when the
//!   upload is complete. `bytes */*` is malformed for the same reason.
//! - Any other unit (`items 0-1/2`), any other byte (non-ASCII, non-UTF-8, control characters)
//!   is malformed.
//!
//! # Inclusive or exclusive end
//!
//! RFC 9110's `end` is inclusive, but ittybit's documentation also shows an exclusive one
//! (`bytes=0-16777216/100000000` for a 16 MiB chunk). The body's length decides:
//! [`ContentRange::resolve`] takes `[start, end]` when the body is `end - start + 1` bytes long
//! (then `end < total`), and `[start, end)` when it is `end - start` bytes long (then
//! `end <= total`). A zero-length chunk is refused, so the two readings never both apply.

use crate::error::{ApiError, ErrorKind};
use http::StatusCode;
use std::ops::Range;

/// A parsed `Content-Range` request header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ContentRange {
    /// A chunk: `bytes a-b/t` or `bytes=a-b/t`. `end` is the number as written (the reading,
    /// inclusive or exclusive, is decided by the body length in [`ContentRange::resolve`]).
    Chunk {
        /// The first byte of the chunk.
        start: u64,
        /// The last byte of the chunk (inclusive reading) or the one after it (exclusive).
        end: u64,
        /// The size of the whole file.
        total: u64,
    },
    /// The status query `bytes */t` (also `bytes=*/t`): "what have you received of this upload?"
    Status {
        /// The size of the whole file.
        total: u64,
    },
}

/// Why a `Content-Range` header is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum RangeError {
    /// Not `bytes <start>-<end>/<total>` or `bytes */<total>` (either spelling).
    #[error("malformed Content-Range: expected `bytes <start>-<end>/<total>` or `bytes */<total>`")]
    Malformed,
    /// More than one range: a chunk covers exactly one range.
    #[error("Content-Range with several ranges: a chunk must cover exactly one range")]
    MultiRange,
    /// `start > end`.
    #[error("Content-Range whose start is after its end")]
    Invalid,
    /// The range reaches past the total (inclusive end `>= total`, exclusive end `> total`), or
    /// the total is zero.
    #[error("Content-Range reaching past the total size of the file")]
    OutOfBounds,
    /// The body's length is neither `end - start + 1` (inclusive end) nor `end - start`
    /// (exclusive end), or the chunk is empty.
    #[error(
        "the chunk's length does not match its Content-Range \
         (neither `end - start + 1` nor `end - start` bytes, or an empty chunk)"
    )]
    LengthMismatch,
}

impl From<RangeError> for ApiError {
    /// 416 `range_invalid`, except a length mismatch: 400 `range_invalid`.
    fn from(e: RangeError) -> Self {
        let err = ApiError::new(ErrorKind::RangeInvalid, e.to_string());
        match e {
            RangeError::LengthMismatch => err.with_status(StatusCode::BAD_REQUEST),
            _ => err,
        }
    }
}

/// Parses a `Content-Range` request header value (see the [module documentation](self) for the
/// accepted syntax). Only the syntax is checked: use [`ContentRange::validate`] or
/// [`ContentRange::resolve`] for the bounds.
pub fn parse(value: &[u8]) -> Result<ContentRange, RangeError> {
    if value.contains(&b',') {
        return Err(RangeError::MultiRange);
    }
    let value = trim_ows(value);
    const UNIT: &[u8] = b"bytes";
    if value.len() < UNIT.len() || !value[..UNIT.len()].eq_ignore_ascii_case(UNIT) {
        return Err(RangeError::Malformed);
    }
    let rest = &value[UNIT.len()..];
    // The separator: `=` or whitespace, with whitespace tolerated around the `=`.
    let after_ws = trim_start_ows(rest);
    let rest = match after_ws.split_first() {
        Some((b'=', tail)) => trim_start_ows(tail),
        _ if after_ws.len() < rest.len() => after_ws,
        _ => return Err(RangeError::Malformed),
    };
    let slash = rest
        .iter()
        .position(|&b| b == b'/')
        .ok_or(RangeError::Malformed)?;
    let (range, total) = (&rest[..slash], &rest[slash + 1..]);
    let total = number(total)?;
    if range == b"*" {
        return Ok(ContentRange::Status { total });
    }
    let dash = range
        .iter()
        .position(|&b| b == b'-')
        .ok_or(RangeError::Malformed)?;
    let start = number(&range[..dash])?;
    let end = number(&range[dash + 1..])?;
    Ok(ContentRange::Chunk { start, end, total })
}

/// One or more ASCII decimal digits that fit in a `u64`.
fn number(digits: &[u8]) -> Result<u64, RangeError> {
    if digits.is_empty() {
        return Err(RangeError::Malformed);
    }
    digits.iter().try_fold(0u64, |n, &b| {
        if !b.is_ascii_digit() {
            return Err(RangeError::Malformed);
        }
        n.checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(b - b'0')))
            .ok_or(RangeError::Malformed)
    })
}

fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim_start_ows(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&b| is_ows(b)).count();
    &s[n..]
}

fn trim_ows(s: &[u8]) -> &[u8] {
    let s = trim_start_ows(s);
    let n = s.iter().rev().take_while(|&&b| is_ows(b)).count();
    &s[..s.len() - n]
}

impl ContentRange {
    /// The size of the whole file, as declared.
    pub fn total(&self) -> u64 {
        match *self {
            ContentRange::Chunk { total, .. } | ContentRange::Status { total } => total,
        }
    }

    /// Checks that do not need the body.
    ///
    /// - `start > end` → [`RangeError::Invalid`];
    /// - neither reading can fit in the file (inclusive needs `end < total`, exclusive needs
    ///   `end <= total` and a non-empty chunk, `start < end`) → [`RangeError::OutOfBounds`];
    /// - `total == 0` → [`RangeError::OutOfBounds`], for chunks and status queries alike: a
    ///   zero-byte file cannot be uploaded in chunks (a chunk is never empty); it is uploaded
    ///   with a simple `PUT`.
    pub fn validate(&self) -> Result<(), RangeError> {
        match *self {
            ContentRange::Status { total } => {
                if total == 0 {
                    return Err(RangeError::OutOfBounds);
                }
            }
            ContentRange::Chunk { start, end, total } => {
                if start > end {
                    return Err(RangeError::Invalid);
                }
                let inclusive_fits = end < total;
                let exclusive_fits = start < end && end <= total;
                if !inclusive_fits && !exclusive_fits {
                    return Err(RangeError::OutOfBounds);
                }
            }
        }
        Ok(())
    }

    /// Given the body's length, the half-open range of the file this chunk covers.
    ///
    /// The inclusive reading `[start, end]` when `len == end - start + 1` and `end < total`; the
    /// exclusive reading `[start, end)` when `len == end - start`, `len > 0` and
    /// `end <= total`. Errors: those of [`validate`](Self::validate); then
    /// [`RangeError::OutOfBounds`] when the length matches only the inclusive reading but
    /// `end >= total` (e.g. `bytes 0-10/10` with 11 bytes); otherwise
    /// [`RangeError::LengthMismatch`] (an empty chunk included).
    ///
    /// A status query covers nothing: `Ok(0..0)` for an empty body, and
    /// [`RangeError::LengthMismatch`] for any other, since a status query has no body.
    ///
    /// On success the range is non-empty for a chunk, lies within `[0, total)` and is exactly
    /// `len` bytes long.
    pub fn resolve(&self, len: u64) -> Result<Range<u64>, RangeError> {
        self.validate()?;
        match *self {
            ContentRange::Status { .. } => {
                if len == 0 {
                    Ok(0..0)
                } else {
                    Err(RangeError::LengthMismatch)
                }
            }
            ContentRange::Chunk { start, end, total } => {
                // `validate` ensured `start <= end`.
                let span = end - start;
                if span.checked_add(1) == Some(len) {
                    return if end < total {
                        Ok(start..end + 1)
                    } else {
                        Err(RangeError::OutOfBounds)
                    };
                }
                if len == span && len > 0 && end <= total {
                    return Ok(start..end);
                }
                Err(RangeError::LengthMismatch)
            }
        }
    }

    /// The largest body this chunk may have (`end - start + 1`, saturating; 0 when
    /// `start > end` and for a status query), for cutting off a body sent without
    /// `Content-Length`.
    pub fn max_len(&self) -> u64 {
        match *self {
            ContentRange::Status { .. } => 0,
            ContentRange::Chunk { start, end, .. } if start > end => 0,
            ContentRange::Chunk { start, end, .. } => (end - start).saturating_add(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use ContentRange::{Chunk, Status};
    use RangeError::*;

    fn chunk(start: u64, end: u64, total: u64) -> ContentRange {
        Chunk { start, end, total }
    }

    #[test]
    fn parse_table() {
        let max = u64::MAX;
        #[rustfmt::skip]
        let rows: &[(&[u8], Result<ContentRange, RangeError>)] = &[
            // Both spellings.
            (b"bytes 0-9/10", Ok(chunk(0, 9, 10))),
            (b"bytes=0-9/10", Ok(chunk(0, 9, 10))),
            // ittybit's documentation.
            (b"bytes=0-16777216/100000000", Ok(chunk(0, 16_777_216, 100_000_000))),
            (b"bytes=83886080-99999999/100000000", Ok(chunk(83_886_080, 99_999_999, 100_000_000))),
            // Status queries.
            (b"bytes */100", Ok(Status { total: 100 })),
            (b"bytes=*/100", Ok(Status { total: 100 })),
            (b"bytes */0", Ok(Status { total: 0 })),
            (b"bytes */*", Err(Malformed)),
            (b"bytes * /100", Err(Malformed)),
            (b"bytes **/100", Err(Malformed)),
            // Case and whitespace.
            (b"BYTES 0-0/1", Ok(chunk(0, 0, 1))),
            (b"Bytes=0-0/1", Ok(chunk(0, 0, 1))),
            (b"  bytes 1-2/3 \t", Ok(chunk(1, 2, 3))),
            (b"\tbytes=1-2/3", Ok(chunk(1, 2, 3))),
            (b"bytes   1-2/3", Ok(chunk(1, 2, 3))),
            (b"bytes\t1-2/3", Ok(chunk(1, 2, 3))),
            (b"bytes= 1-2/3", Ok(chunk(1, 2, 3))),
            (b"bytes =1-2/3", Ok(chunk(1, 2, 3))),
            (b"bytes 1 -2/3", Err(Malformed)),
            (b"bytes 1- 2/3", Err(Malformed)),
            (b"bytes 1-2 /3", Err(Malformed)),
            (b"bytes 1-2/ 3", Err(Malformed)),
            (b"bytes\n1-2/3", Err(Malformed)),
            (b"bytes==1-2/3", Err(Malformed)),
            // Truncated.
            (b"", Err(Malformed)),
            (b"   ", Err(Malformed)),
            (b"bytes", Err(Malformed)),
            (b"bytes=", Err(Malformed)),
            (b"bytes ", Err(Malformed)),
            (b"bytes 1-2", Err(Malformed)),
            (b"bytes 1-2/", Err(Malformed)),
            (b"bytes 1-/3", Err(Malformed)),
            (b"bytes -2/10", Err(Malformed)),
            (b"bytes 1/3", Err(Malformed)),
            (b"bytes /3", Err(Malformed)),
            (b"byte 1-2/3", Err(Malformed)),
            (b"bytes0-1/2", Err(Malformed)),
            (b"bytesx 0-1/2", Err(Malformed)),
            // Parsed, refused later by `validate`.
            (b"bytes 5-2/10", Ok(chunk(5, 2, 10))),
            (b"bytes 0-10/10", Ok(chunk(0, 10, 10))),
            // Numbers.
            (b"bytes 007-008/010", Ok(chunk(7, 8, 10))),
            (b"bytes 0-0/18446744073709551615", Ok(chunk(0, 0, max))),
            (b"bytes 18446744073709551614-18446744073709551614/18446744073709551615",
             Ok(chunk(max - 1, max - 1, max))),
            (b"bytes 0-0/18446744073709551616", Err(Malformed)),
            (b"bytes 0-99999999999999999999/1", Err(Malformed)),
            (b"bytes 0-0/000000000000000000000000001", Ok(chunk(0, 0, 1))),
            (b"bytes +1-2/3", Err(Malformed)),
            (b"bytes 1-+2/3", Err(Malformed)),
            (b"bytes 1--2/3", Err(Malformed)),
            (b"bytes 1-2/-3", Err(Malformed)),
            (b"bytes 1-2/3/4", Err(Malformed)),
            (b"bytes 1-2-3/4", Err(Malformed)),
            (b"bytes 0x1-2/3", Err(Malformed)),
            (b"bytes 1e3-2/3", Err(Malformed)),
            (b"bytes 1-2/3x", Err(Malformed)),
            (b"bytes 1-2/3;", Err(Malformed)),
            (b"bytes 1-2/*", Err(Malformed)),
            // Non-ASCII digits and bytes.
            ("bytes 1-2/\u{0663}".as_bytes(), Err(Malformed)),
            ("bytes\u{a0}1-2/3".as_bytes(), Err(Malformed)),
            ("b\u{fd}tes 1-2/3".as_bytes(), Err(Malformed)),
            (b"bytes 1-2/3\xff", Err(Malformed)),
            (b"\xffbytes 1-2/3", Err(Malformed)),
            (b"bytes 1\x00-2/3", Err(Malformed)),
            // Multiple ranges.
            (b"bytes 0-1/10,2-3/10", Err(MultiRange)),
            (b"bytes=0-1,2-3/10", Err(MultiRange)),
            (b"bytes 0-1/10,", Err(MultiRange)),
            (b",", Err(MultiRange)),
            (b"items 0-1,2-3/4", Err(MultiRange)),
            // Other units.
            (b"items 0-1/2", Err(Malformed)),
            (b"none */2", Err(Malformed)),
        ];
        assert!(rows.len() >= 40);
        for (input, want) in rows {
            assert_eq!(
                parse(input),
                *want,
                "input {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn validate_table() {
        let max = u64::MAX;
        #[rustfmt::skip]
        let rows: &[(ContentRange, Result<(), RangeError>)] = &[
            (chunk(0, 9, 10), Ok(())),
            (chunk(0, 10, 10), Ok(())), // only exclusively
            (chunk(9, 9, 10), Ok(())),  // only inclusively
            (chunk(10, 10, 10), Err(OutOfBounds)),
            (chunk(0, 11, 10), Err(OutOfBounds)),
            (chunk(5, 2, 10), Err(Invalid)),
            (chunk(5, 2, 1), Err(Invalid)),
            (chunk(0, 0, 0), Err(OutOfBounds)),
            (chunk(0, 0, 1), Ok(())),
            (chunk(0, max, max), Ok(())),
            (chunk(max, max, max), Err(OutOfBounds)),
            (Status { total: 1 }, Ok(())),
            (Status { total: 0 }, Err(OutOfBounds)),
            (Status { total: max }, Ok(())),
        ];
        for (range, want) in rows {
            assert_eq!(range.validate(), *want, "{range:?}");
        }
    }

    type Resolved = Result<Range<u64>, RangeError>;

    #[test]
    fn resolve_table() {
        let max = u64::MAX;
        #[rustfmt::skip]
        let rows: &[(&[u8], u64, Resolved)] = &[
            // ittybit's documentation: an exclusive first chunk, an inclusive last chunk.
            (b"bytes=0-16777216/100000000", 16_777_216, Ok(0..16_777_216)),
            (b"bytes=0-16777216/100000000", 16_777_217, Ok(0..16_777_217)),
            (b"bytes=83886080-99999999/100000000", 16_113_920, Ok(83_886_080..100_000_000)),
            (b"bytes=83886080-100000000/100000000", 16_113_920, Ok(83_886_080..100_000_000)),
            (b"bytes=83886080-99999999/100000000", 16_113_919, Ok(83_886_080..99_999_999)),
            (b"bytes=83886080-99999999/100000000", 16_113_921, Err(LengthMismatch)),
            // Exclusive end equal to the total.
            (b"bytes 0-10/10", 10, Ok(0..10)),
            (b"bytes 0-10/10", 11, Err(OutOfBounds)),
            (b"bytes 0-10/10", 9, Err(LengthMismatch)),
            (b"bytes 0-9/10", 10, Ok(0..10)),
            (b"bytes 0-9/10", 9, Ok(0..9)),
            (b"bytes 0-9/10", 8, Err(LengthMismatch)),
            (b"bytes 0-9/10", 0, Err(LengthMismatch)),
            (b"bytes 0-0/1", 1, Ok(0..1)),
            (b"bytes 0-0/1", 0, Err(LengthMismatch)),
            (b"bytes 0-0/1", 2, Err(LengthMismatch)),
            (b"bytes 9-9/10", 1, Ok(9..10)),
            (b"bytes 9-10/10", 1, Ok(9..10)),
            (b"bytes 9-10/10", 2, Err(OutOfBounds)),
            (b"bytes 10-10/10", 0, Err(OutOfBounds)),
            (b"bytes 10-10/10", 1, Err(OutOfBounds)),
            (b"bytes 0-11/10", 11, Err(OutOfBounds)),
            (b"bytes 0-11/10", 12, Err(OutOfBounds)),
            (b"bytes 5-2/10", 3, Err(Invalid)),
            (b"bytes 0-0/0", 0, Err(OutOfBounds)),
            (b"bytes 0-0/0", 1, Err(OutOfBounds)),
            // Extremes: no overflow.
            (b"bytes 0-18446744073709551615/18446744073709551615", max, Ok(0..max)),
            (b"bytes 0-18446744073709551614/18446744073709551615", max, Ok(0..max)),
            (b"bytes 0-18446744073709551615/18446744073709551615", 0, Err(LengthMismatch)),
            (b"bytes 18446744073709551614-18446744073709551614/18446744073709551615", 1,
             Ok(max - 1..max)),
            // Status queries have no body.
            (b"bytes */100", 0, Ok(0..0)),
            (b"bytes */100", 1, Err(LengthMismatch)),
            (b"bytes */0", 0, Err(OutOfBounds)),
        ];
        for (input, len, want) in rows {
            let range = parse(input).unwrap_or_else(|e| panic!("{e}"));
            let got = range.resolve(*len);
            assert_eq!(
                got,
                *want,
                "input {:?} len {len}",
                String::from_utf8_lossy(input)
            );
            if let Ok(r) = got {
                assert_eq!(r.end - r.start, *len);
                assert!(r.end <= range.total());
                assert!(*len <= range.max_len());
            }
        }
    }

    #[test]
    fn max_len_and_total() {
        assert_eq!(chunk(0, 9, 10).max_len(), 10);
        assert_eq!(chunk(3, 3, 10).max_len(), 1);
        assert_eq!(chunk(5, 2, 10).max_len(), 0);
        assert_eq!(chunk(0, u64::MAX, u64::MAX).max_len(), u64::MAX);
        assert_eq!(Status { total: 7 }.max_len(), 0);
        assert_eq!(chunk(0, 9, 10).total(), 10);
        assert_eq!(Status { total: 7 }.total(), 7);
    }

    #[test]
    fn api_errors() {
        for e in [Malformed, MultiRange, Invalid, OutOfBounds] {
            let api = ApiError::from(e);
            assert_eq!(api.kind(), ErrorKind::RangeInvalid);
            assert_eq!(api.status(), StatusCode::RANGE_NOT_SATISFIABLE);
            assert!(api.message().contains("Content-Range"), "{}", api.message());
        }
        let api = ApiError::from(LengthMismatch);
        assert_eq!(api.kind(), ErrorKind::RangeInvalid);
        assert_eq!(api.status(), StatusCode::BAD_REQUEST);
    }
}
