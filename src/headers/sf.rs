// Hand-written: sfv 0.16 needs Rust 1.95 (crate MSRV 1.89); fuzz target sf_items diffs against it.

//! The Structured Field Values (RFC 9651, which obsoletes RFC 8941) that the IETF resumable-upload
//! draft (draft-ietf-httpbis-resumable-upload, PROTOCOL.md §10) uses: the Items `Upload-Complete`
//! (a Boolean) and `Upload-Offset`, `Upload-Length`, `Upload-Draft-Interop-Version` (non-negative
//! Integers), and the Dictionary `Upload-Limit` (`max-size=…, min-size=…`), which is only sent.
//!
//! Pure: no I/O, table tests, a fuzz target (`sf_items`).
//!
//! # Parsing
//!
//! [`parse_bool`] and [`parse_integer`] run RFC 9651 §4.2's algorithm for an Item, then check its
//! type:
//!
//! - leading and trailing whitespace (SP and HTAB: HTTP's OWS, which the field value excludes)
//!   is ignored; no other whitespace is allowed, not even before a parameter's `;`;
//! - the bare item is one of RFC 9651's: Integer, Decimal, String, Token, Byte Sequence,
//!   Boolean, Date, Display String. Whatever its type, it must be well-formed, or the field is
//!   [`SfError::Malformed`] — an Integer of more than 15 digits, `?2`, `?`, `1.`, an empty field;
//! - parameters after the item (`;key`, `;key=bare-item`, `; key=…`) are parsed — they must be
//!   well-formed too — and ignored;
//! - a well-formed Item of another type is [`SfError::NotBoolean`] or [`SfError::NotInteger`]
//!   (`1` for a Boolean, `?1`, `1.5`, `"1"` or `tok` for an Integer);
//! - [`parse_integer`] refuses any `-` sign ([`SfError::Negative`], `-0` included): every
//!   Integer the draft defines is a non-negative size, offset or version.
//!
//! What the receiver does with a refused field is the handler's business: the draft says that
//! other values "MUST cause the entire header field to be ignored".

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use std::fmt::Write as _;

/// The largest sf-integer (RFC 9651 §3.3.1: at most 15 decimal digits).
#[allow(dead_code)] // used by the tus / IETF frontends (issue 22)
pub const MAX_INTEGER: u64 = 999_999_999_999_999;

/// RFC 9651's Byte Sequence decoding: the standard alphabet, padding optional, non-zero pad bits
/// tolerated (§4.2.7: parsers SHOULD NOT fail on either).
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// A structured-field Item that is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
#[allow(dead_code)] // used by the tus / IETF frontends (issue 22)
pub enum SfError {
    /// Not a well-formed Item (RFC 9651 §4.2), parameters included.
    #[error("malformed structured field: not an Item (RFC 9651)")]
    Malformed,
    /// A well-formed Item that is not a Boolean.
    #[error("structured field of the wrong type: expected a Boolean (`?0` or `?1`)")]
    NotBoolean,
    /// A well-formed Item that is not an Integer.
    #[error("structured field of the wrong type: expected an Integer")]
    NotInteger,
    /// An Integer with a `-` sign where a non-negative one is required.
    #[error("structured field Integer with a `-` sign: expected a non-negative Integer")]
    Negative,
}

/// A Boolean Item: `?0` or `?1` (e.g. `Upload-Complete`), parameters ignored (see the [module
/// documentation](self)).
#[allow(dead_code)] // used by the tus / IETF frontends (issue 22)
pub fn parse_bool(value: &[u8]) -> Result<bool, SfError> {
    match parse_item(value)? {
        Bare::Boolean(b) => Ok(b),
        _ => Err(SfError::NotBoolean),
    }
}

/// A non-negative Integer Item, `0` to [`MAX_INTEGER`] (e.g. `Upload-Offset`,
/// `Upload-Length`, `Upload-Draft-Interop-Version`), parameters ignored. Leading zeros are
/// allowed (`007` is 7) and count towards the 15 digits; a `-` sign is [`SfError::Negative`].
#[allow(dead_code)] // used by the tus / IETF frontends (issue 22)
pub fn parse_integer(value: &[u8]) -> Result<u64, SfError> {
    match parse_item(value)? {
        Bare::Integer {
            negative: false,
            value,
        } => Ok(value),
        Bare::Integer { negative: true, .. } => Err(SfError::Negative),
        _ => Err(SfError::NotInteger),
    }
}

/// Serializes a Dictionary of Integers (RFC 9651 §4.1.2), e.g. `Upload-Limit`:
/// `[("max-size", 1024), ("min-size", 0)]` → `max-size=1024, min-size=0`. Members keep their
/// order; an empty slice gives an empty string (the draft asks for `min-size=0` rather than an
/// empty `Upload-Limit`: that is the caller's choice).
///
/// A value above [`MAX_INTEGER`] (about 888 TiB) is written as [`MAX_INTEGER`], the largest
/// value the field can carry: the limits it announces are sizes, and no upload reaches it.
///
/// # Panics
///
/// When a key is not an sf-key (`lcalpha` or `*`, then `lcalpha`, digits, `_ - . *`) or appears
/// twice: the keys are the caller's constants, not input.
#[allow(dead_code)] // used by the tus / IETF frontends (issue 22)
pub fn serialize_dictionary_ints(members: &[(&str, u64)]) -> String {
    let mut out = String::new();
    for (i, &(key, value)) in members.iter().enumerate() {
        assert!(
            is_key(key.as_bytes()),
            "not a structured-field key: {key:?}"
        );
        assert!(
            members[..i].iter().all(|&(k, _)| k != key),
            "duplicate structured-field key: {key:?}"
        );
        if i > 0 {
            out.push_str(", ");
        }
        // Writing to a String cannot fail.
        let _ = write!(out, "{key}={}", value.min(MAX_INTEGER));
    }
    out
}

/// The bare item of a parsed Item, as far as the callers need it.
enum Bare {
    Boolean(bool),
    Integer { negative: bool, value: u64 },
    Other,
}

/// RFC 9651 §4.2 for a field of type Item, after trimming OWS.
fn parse_item(value: &[u8]) -> Result<Bare, SfError> {
    let mut p = Cursor {
        s: trim_ows(value),
        i: 0,
    };
    let bare = p.bare_item()?;
    p.parameters()?;
    if p.i != p.s.len() {
        return Err(SfError::Malformed);
    }
    Ok(bare)
}

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    /// RFC 9651 §4.2.3.1.
    fn bare_item(&mut self) -> Result<Bare, SfError> {
        match self.peek() {
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b'"') => self.string().map(|()| Bare::Other),
            Some(b'*' | b'A'..=b'Z' | b'a'..=b'z') => {
                self.token();
                Ok(Bare::Other)
            }
            Some(b':') => self.byte_sequence().map(|()| Bare::Other),
            Some(b'?') => self.boolean(),
            Some(b'@') => self.date().map(|()| Bare::Other),
            Some(b'%') => self.display_string().map(|()| Bare::Other),
            _ => Err(SfError::Malformed),
        }
    }

    /// RFC 9651 §4.2.3.2: `*( ";" *SP key [ "=" bare-item ] )`, values discarded.
    fn parameters(&mut self) -> Result<(), SfError> {
        while self.peek() == Some(b';') {
            self.i += 1;
            while self.peek() == Some(b' ') {
                self.i += 1;
            }
            self.key()?;
            if self.peek() == Some(b'=') {
                self.i += 1;
                self.bare_item()?;
            }
        }
        Ok(())
    }

    /// RFC 9651 §4.2.3.3.
    fn key(&mut self) -> Result<(), SfError> {
        match self.peek() {
            Some(b'a'..=b'z' | b'*') => self.i += 1,
            _ => return Err(SfError::Malformed),
        }
        while self.peek().is_some_and(is_key_char) {
            self.i += 1;
        }
        Ok(())
    }

    /// RFC 9651 §4.2.4: an Integer (at most 15 digits) or a Decimal (at most 12 integer and 3
    /// fractional digits).
    fn number(&mut self) -> Result<Bare, SfError> {
        let negative = self.peek() == Some(b'-');
        if negative {
            self.i += 1;
        }
        if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
            return Err(SfError::Malformed);
        }
        let mut value = 0u64;
        let mut int_digits = 0usize;
        let mut frac_digits: Option<usize> = None;
        while let Some(c) = self.peek() {
            match (c, &mut frac_digits) {
                (b'0'..=b'9', None) => {
                    int_digits += 1;
                    if int_digits > 15 {
                        return Err(SfError::Malformed);
                    }
                    value = value * 10 + u64::from(c - b'0');
                }
                (b'0'..=b'9', Some(n)) => {
                    *n += 1;
                    if *n > 3 {
                        return Err(SfError::Malformed);
                    }
                }
                (b'.', None) => {
                    if int_digits > 12 {
                        return Err(SfError::Malformed);
                    }
                    frac_digits = Some(0);
                }
                _ => break,
            }
            self.i += 1;
        }
        match frac_digits {
            None => Ok(Bare::Integer { negative, value }),
            Some(0) => Err(SfError::Malformed), // `1.`
            Some(_) => Ok(Bare::Other),
        }
    }

    /// RFC 9651 §4.2.5: `"…"`, printable ASCII, `\` escaping only `"` and `\`.
    fn string(&mut self) -> Result<(), SfError> {
        self.i += 1; // the opening `"`
        loop {
            match self.next() {
                Some(b'"') => return Ok(()),
                Some(b'\\') => match self.next() {
                    Some(b'"' | b'\\') => {}
                    _ => return Err(SfError::Malformed),
                },
                Some(b' '..=b'~') => {}
                _ => return Err(SfError::Malformed),
            }
        }
    }

    /// RFC 9651 §4.2.6: `( ALPHA / "*" ) *( tchar / ":" / "/" )`; the first character is
    /// already checked.
    fn token(&mut self) {
        self.i += 1;
        while self
            .peek()
            .is_some_and(|c| is_tchar(c) || c == b':' || c == b'/')
        {
            self.i += 1;
        }
    }

    /// RFC 9651 §4.2.7: `:base64:`, decoded to check it (padding and pad bits tolerated).
    fn byte_sequence(&mut self) -> Result<(), SfError> {
        self.i += 1; // the opening `:`
        let rest = &self.s[self.i..];
        let end = rest
            .iter()
            .position(|&c| c == b':')
            .ok_or(SfError::Malformed)?;
        let b64 = &rest[..end];
        if !b64
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'='))
        {
            return Err(SfError::Malformed);
        }
        BASE64.decode(b64).map_err(|_| SfError::Malformed)?;
        self.i += end + 1;
        Ok(())
    }

    /// RFC 9651 §4.2.8: `?0` or `?1`.
    fn boolean(&mut self) -> Result<Bare, SfError> {
        self.i += 1; // the `?`
        match self.next() {
            Some(b'0') => Ok(Bare::Boolean(false)),
            Some(b'1') => Ok(Bare::Boolean(true)),
            _ => Err(SfError::Malformed),
        }
    }

    /// RFC 9651 §4.2.9: `@` then an Integer (not a Decimal).
    fn date(&mut self) -> Result<(), SfError> {
        self.i += 1; // the `@`
        match self.number()? {
            Bare::Integer { .. } => Ok(()),
            _ => Err(SfError::Malformed),
        }
    }

    /// RFC 9651 §4.2.10: `%"…"`, printable ASCII with `%xx` (lowercase hex) escapes, whose bytes
    /// are UTF-8.
    fn display_string(&mut self) -> Result<(), SfError> {
        self.i += 1; // the `%`
        if self.next() != Some(b'"') {
            return Err(SfError::Malformed);
        }
        let mut bytes = Vec::new();
        loop {
            match self.next() {
                Some(b'"') => {
                    return std::str::from_utf8(&bytes)
                        .map(|_| ())
                        .map_err(|_| SfError::Malformed);
                }
                Some(b'%') => {
                    let hi = self.next().and_then(lower_hex);
                    let lo = self.next().and_then(lower_hex);
                    match (hi, lo) {
                        (Some(hi), Some(lo)) => bytes.push((hi << 4) | lo),
                        _ => return Err(SfError::Malformed),
                    }
                }
                Some(c @ b' '..=b'~') => bytes.push(c),
                _ => return Err(SfError::Malformed),
            }
        }
    }
}

fn lower_hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn is_key_char(c: u8) -> bool {
    matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' | b'*')
}

/// An sf-key: `( lcalpha / "*" ) *( lcalpha / DIGIT / "_" / "-" / "." / "*" )`.
fn is_key(key: &[u8]) -> bool {
    matches!(key.first(), Some(b'a'..=b'z' | b'*')) && key.iter().all(|&c| is_key_char(c))
}

/// RFC 9110's `tchar`.
fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim_ows(s: &[u8]) -> &[u8] {
    let start = s.iter().take_while(|&&b| is_ows(b)).count();
    let s = &s[start..];
    let end = s.iter().rev().take_while(|&&b| is_ows(b)).count();
    &s[..s.len() - end]
}

#[cfg(test)]
mod tests {
    use super::*;

    use SfError::*;

    #[test]
    fn bool_table() {
        #[rustfmt::skip]
        let rows: &[(&[u8], Result<bool, SfError>)] = &[
            (b"?1", Ok(true)),
            (b"?0", Ok(false)),
            // Surrounding whitespace (OWS).
            (b" ?1", Ok(true)),
            (b"?0  ", Ok(false)),
            (b"\t?1\t", Ok(true)),
            (b" \t ?0 \t ", Ok(false)),
            // Parameters, ignored.
            (b"?1;a=b", Ok(true)),
            (b"?0;a", Ok(false)),
            (b"?1;a;b=?0;c=1;d=1.5;e=\"x\";f=:AAE=:;g=tok;h=@1700000000;i=%\"%c3%a9\"", Ok(true)),
            (b"?1; a=b", Ok(true)),
            (b"?1;  a=b", Ok(true)),
            (b"?1;*a=b", Ok(true)),
            (b"?1;a_b-c.d*e9=b", Ok(true)),
            (b"?1;a=b ", Ok(true)),
            (b"?1;a=\"x;y=z\"", Ok(true)),
            (b"?1;a=\"q\\\"\\\\\"", Ok(true)),
            (b"?1;a=:YQ:", Ok(true)),   // unpadded
            (b"?1;a=:YR==:", Ok(true)), // non-zero pad bits
            (b"?1;a=::", Ok(true)),
            (b"?1;a=-5", Ok(true)),
            (b"?1;a=tok:/x", Ok(true)),
            (b"?1;a=%\"\"", Ok(true)),
            // Malformed parameters make the whole field malformed.
            (b"?1;", Err(Malformed)),
            (b"?1;A=b", Err(Malformed)),
            (b"?1;1a=b", Err(Malformed)),
            (b"?1;a=", Err(Malformed)),
            (b"?1;a=b;", Err(Malformed)),
            (b"?1 ;a=b", Err(Malformed)),
            (b"?1;a =b", Err(Malformed)),
            (b"?1;a= b", Err(Malformed)),
            (b"?1;\ta=b", Err(Malformed)),
            (b"?1;a=?2", Err(Malformed)),
            (b"?1;a=\"x", Err(Malformed)),
            (b"?1;a=\"\\x\"", Err(Malformed)),
            (b"?1;a=\"\xc3\xa9\"", Err(Malformed)),
            (b"?1;a=:YQ=", Err(Malformed)),
            (b"?1;a=:Y:", Err(Malformed)),
            (b"?1;a=:Y Q:", Err(Malformed)),
            (b"?1;a=1.", Err(Malformed)),
            (b"?1;a=1.2345", Err(Malformed)),
            (b"?1;a=1234567890123.5", Err(Malformed)),
            (b"?1;a=1234567890123456", Err(Malformed)),
            (b"?1;a=@1.5", Err(Malformed)),
            (b"?1;a=%\"%C3%A9\"", Err(Malformed)),
            (b"?1;a=%\"%c3\"", Err(Malformed)),
            (b"?1;a=%\"%g0\"", Err(Malformed)),
            (b"?1;a=%x", Err(Malformed)),
            (b"?1;a=(1 2)", Err(Malformed)),
            // Invalid forms.
            (b"?2", Err(Malformed)),
            (b"?", Err(Malformed)),
            (b"??1", Err(Malformed)),
            (b"?10", Err(Malformed)),
            (b"? 1", Err(Malformed)),
            (b"?1?0", Err(Malformed)),
            (b"?1,?0", Err(Malformed)),
            (b"?1 ?0", Err(Malformed)),
            (b"", Err(Malformed)),
            (b"  ", Err(Malformed)),
            (b"?1\n", Err(Malformed)),
            (b"\x00?1", Err(Malformed)),
            (b"?1\xff", Err(Malformed)),
            (b"(?1)", Err(Malformed)),
            (b"a=?1", Err(Malformed)), // a Token, then garbage: not a Dictionary
            // Well-formed Items of other types.
            (b"1", Err(NotBoolean)),
            (b"0", Err(NotBoolean)),
            (b"true", Err(NotBoolean)),
            (b"TRUE", Err(NotBoolean)),
            (b"\"?1\"", Err(NotBoolean)),
            (b"1.5", Err(NotBoolean)),
            (b":AAE=:", Err(NotBoolean)),
            (b"@0", Err(NotBoolean)),
            (b"%\"?1\"", Err(NotBoolean)),
        ];
        for (input, want) in rows {
            assert_eq!(
                parse_bool(input),
                *want,
                "input {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn integer_table() {
        #[rustfmt::skip]
        let rows: &[(&[u8], Result<u64, SfError>)] = &[
            (b"0", Ok(0)),
            (b"1", Ok(1)),
            (b"42", Ok(42)),
            (b"123456789", Ok(123_456_789)),
            (b"007", Ok(7)),
            (b"000000000000000", Ok(0)),
            (b"999999999999999", Ok(MAX_INTEGER)),
            (b"100000000000000", Ok(100_000_000_000_000)),
            // Whitespace.
            (b" 5", Ok(5)),
            (b"5 ", Ok(5)),
            (b"\t5\t", Ok(5)),
            (b"5 6", Err(Malformed)),
            (b"5\t;a", Err(Malformed)),
            // Parameters, ignored.
            (b"5;a=b", Ok(5)),
            (b"5;a", Ok(5)),
            (b"5; a=1;b=?0", Ok(5)),
            (b"5;a=", Err(Malformed)),
            (b"5;", Err(Malformed)),
            // Too long: 16 digits, leading zeros included.
            (b"1000000000000000", Err(Malformed)),
            (b"0000000000000001", Err(Malformed)),
            (b"9999999999999999", Err(Malformed)),
            (b"18446744073709551615", Err(Malformed)), // u64::MAX
            (b"18446744073709551616", Err(Malformed)), // u64::MAX + 1
            // Signs.
            (b"-1", Err(Negative)),
            (b"-0", Err(Negative)),
            (b"-999999999999999", Err(Negative)),
            (b"-1000000000000000", Err(Malformed)),
            (b"-", Err(Malformed)),
            (b"--1", Err(Malformed)),
            (b"- 1", Err(Malformed)),
            (b"+1", Err(Malformed)),
            // Other types.
            (b"1.5", Err(NotInteger)),
            (b"1.0", Err(NotInteger)),
            (b"-1.5", Err(NotInteger)),
            (b"\"1\"", Err(NotInteger)),
            (b"?1", Err(NotInteger)),
            (b"?0", Err(NotInteger)),
            (b"tok", Err(NotInteger)),
            (b"e5", Err(NotInteger)),
            (b":AQ==:", Err(NotInteger)),
            (b"@1", Err(NotInteger)),
            (b"%\"1\"", Err(NotInteger)),
            // Malformed.
            (b"", Err(Malformed)),
            (b" ", Err(Malformed)),
            (b"1.", Err(Malformed)),
            (b".5", Err(Malformed)),
            (b"1.2345", Err(Malformed)),
            (b"1e3", Err(Malformed)),
            (b"0x10", Err(Malformed)),
            (b"1_000", Err(Malformed)),
            (b"1,2", Err(Malformed)),
            ("\u{0663}".as_bytes(), Err(Malformed)),
            (b"1\x00", Err(Malformed)),
            (b"(1)", Err(Malformed)),
        ];
        for (input, want) in rows {
            assert_eq!(
                parse_integer(input),
                *want,
                "input {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn integers_round_trip() {
        for n in [0, 1, 9, 10, 1 << 20, 123_456_789_012_345, MAX_INTEGER] {
            assert_eq!(parse_integer(n.to_string().as_bytes()), Ok(n));
        }
        assert_eq!(
            parse_integer((MAX_INTEGER + 1).to_string().as_bytes()),
            Err(Malformed)
        );
        assert_eq!(
            parse_integer(u64::MAX.to_string().as_bytes()),
            Err(Malformed)
        );
    }

    #[test]
    fn dictionary_table() {
        #[rustfmt::skip]
        let rows: &[(&[(&str, u64)], &str)] = &[
            (&[], ""),
            (&[("min-size", 0)], "min-size=0"),
            (&[("max-size", 1_073_741_824), ("min-size", 0)], "max-size=1073741824, min-size=0"),
            (&[("max-size", MAX_INTEGER)], "max-size=999999999999999"),
            (&[("max-size", MAX_INTEGER + 1)], "max-size=999999999999999"),
            (&[("max-size", u64::MAX)], "max-size=999999999999999"),
            (&[("max-append-size", 5), ("max-age", 3600), ("*x.y_z", 1)],
             "max-append-size=5, max-age=3600, *x.y_z=1"),
        ];
        for (members, want) in rows {
            assert_eq!(serialize_dictionary_ints(members), *want, "{members:?}");
        }
        // Every member value parses back as an Integer.
        let out = serialize_dictionary_ints(&[("max-size", 17), ("min-size", 0)]);
        for member in out.split(", ") {
            let (_, v) = member.split_once('=').unwrap();
            assert!(parse_integer(v.as_bytes()).is_ok());
        }
    }

    #[test]
    #[should_panic(expected = "not a structured-field key")]
    fn dictionary_rejects_bad_key() {
        serialize_dictionary_ints(&[("Max-Size", 1)]);
    }

    #[test]
    #[should_panic(expected = "duplicate structured-field key")]
    fn dictionary_rejects_duplicate_key() {
        serialize_dictionary_ints(&[("max-size", 1), ("max-size", 2)]);
    }

    #[test]
    fn messages() {
        for e in [Malformed, NotBoolean, NotInteger, Negative] {
            assert!(!e.to_string().is_empty());
        }
        assert!(NotBoolean.to_string().contains("Boolean"));
        assert!(NotInteger.to_string().contains("Integer"));
    }
}
