//! The request headers of tus 1.0.0 (tus.io's `protocol.md`, PROTOCOL.md §9): `Tus-Resumable`,
//! `Upload-Offset`, `Upload-Length`, `Upload-Defer-Length`, `Upload-Metadata`, `Upload-Concat`
//! and `Upload-Checksum`.
//!
//! Pure parsers: no I/O, no digest computation, table tests, fuzz targets (`tus_metadata`,
//! `tus_concat`, `tus_checksum`; `sf_items` for [`parse_u64`]). Each error has the status tus
//! asks for ([`TusHeaderError::status`]): 412 for a missing or other `Tus-Resumable`, 400 for
//! everything else. Limits on the values (`Upload-Length` above the maximum size → 413) are
//! the handler's.
//!
//! # Common rules
//!
//! Leading and trailing whitespace (SP / HTAB, HTTP's OWS, which a field value excludes) is
//! ignored in every header. Values are ASCII: any other byte is refused.
//!
//! # `Upload-Metadata`
//!
//! ```text
//! filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential,folder YS9i
//! ```
//!
//! - Comma-separated pairs `key SP value`, or a key alone (or followed by a space: what
//!   tus-js-client sends for an empty string), whose value is empty. Whitespace around a pair
//!   and several SP / HTAB between key and value are tolerated; a pair of three words, an
//!   empty pair (`a,,b`, a trailing comma) is [`TusHeaderError::MetadataMalformed`].
//! - Keys are non-empty, printable ASCII without space or comma (tus: "SHOULD be ASCII"; this
//!   crate requires it), case-sensitive and unique ([`TusHeaderError::MetadataDuplicateKey`]).
//! - Values are standard base64 (RFC 4648 §4), with canonical padding or none (`YQ==` or `YQ`,
//!   not `YQ=`); other alphabets, a wrong length and non-zero pad bits are refused. The
//!   decoded bytes are anything: [`Metadata::get_str`] gives them as text only when they are
//!   UTF-8.
//! - At most [`MAX_METADATA_PAIRS`] pairs and [`MAX_METADATA_LEN`] bytes of header.
//! - An empty header is no metadata (tus asks for "one or more" pairs; tusd reads an empty one
//!   the same way).
//!
//! # `Upload-Concat`
//!
//! `partial`, or `final;` then the partial uploads' URLs separated by spaces (absolute or
//! relative, as tus allows: resolving them is the handler's business), in order: at least one,
//! at most [`MAX_CONCAT_URLS`], each printable ASCII. Several spaces and whitespace after the
//! `;` are tolerated; the words `partial` and `final` are lowercase, as in the spec.
//!
//! # `Upload-Checksum`
//!
//! `<algorithm> SP <base64 digest>`: the algorithm is one of [`ChecksumAlgorithm`]'s lowercase
//! names (any other name is [`TusHeaderError::ChecksumUnknownAlgorithm`]; tus excludes
//! uppercase from names, so `SHA1` is malformed); the digest is base64 as in `Upload-Metadata`
//! (padded or not), of exactly the algorithm's digest length.
//!
//! # `Upload-Offset`, `Upload-Length`, `Upload-Defer-Length`, `Tus-Resumable`
//!
//! [`parse_u64`]: one to 19 ASCII digits (leading zeros allowed and counted), no sign. The
//! IETF draft's headers of the same names are structured-field Integers: parse them with
//! [`super::sf::parse_integer`] instead. [`parse_defer_length`]: exactly `1`.
//! [`check_tus_resumable`]: exactly [`TUS_VERSION`].

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use http::StatusCode;
use std::fmt;

/// The tus protocol version served (`Tus-Resumable`, `Tus-Version`).
pub const TUS_VERSION: &str = "1.0.0";

/// Longer `Upload-Metadata` headers are refused ([`TusHeaderError::MetadataTooLarge`]).
pub const MAX_METADATA_LEN: usize = 16 * 1024;

/// `Upload-Metadata` headers with more pairs are refused
/// ([`TusHeaderError::MetadataTooManyPairs`]).
pub const MAX_METADATA_PAIRS: usize = 64;

/// `Upload-Concat: final;…` headers with more URLs are refused
/// ([`TusHeaderError::ConcatTooManyUrls`]).
pub const MAX_CONCAT_URLS: usize = 1000;

/// The most digits [`parse_u64`] accepts.
pub const MAX_INTEGER_DIGITS: usize = 19;

/// Standard base64 (RFC 4648 §4) with canonical padding, or without any: `YQ==` or `YQ`, not
/// `YQ=`; non-zero pad bits are refused.
fn decode_base64(s: &[u8]) -> Option<Vec<u8>> {
    let engine = if s.contains(&b'=') {
        &STANDARD
    } else {
        &STANDARD_NO_PAD
    };
    engine.decode(s).ok()
}

/// A tus request header that is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
#[allow(dead_code)] // used by the tus / IETF frontends (issue 22)
pub enum TusHeaderError {
    /// `Upload-Metadata` longer than [`MAX_METADATA_LEN`] bytes.
    #[error("Upload-Metadata longer than {} bytes", MAX_METADATA_LEN)]
    MetadataTooLarge,
    /// `Upload-Metadata` with more than [`MAX_METADATA_PAIRS`] pairs.
    #[error("Upload-Metadata with more than {} pairs", MAX_METADATA_PAIRS)]
    MetadataTooManyPairs,
    /// An empty pair, or one of more than two words.
    #[error("malformed Upload-Metadata: expected comma-separated `key base64value` pairs")]
    MetadataMalformed,
    /// A key that is not printable ASCII.
    #[error("Upload-Metadata key that is not printable ASCII")]
    MetadataInvalidKey,
    /// The same key twice.
    #[error("Upload-Metadata with a duplicate key: keys must be unique")]
    MetadataDuplicateKey,
    /// A value that is not standard base64.
    #[error("Upload-Metadata value that is not base64")]
    MetadataInvalidValue,
    /// Neither `partial` nor `final;<url> …`, or a URL with a byte that is not printable ASCII.
    #[error("malformed Upload-Concat: expected `partial` or `final;<url> <url> …`")]
    ConcatMalformed,
    /// `final;` without any URL.
    #[error("Upload-Concat `final;` without any partial upload URL")]
    ConcatNoUrls,
    /// `final;` with more than [`MAX_CONCAT_URLS`] URLs.
    #[error("Upload-Concat with more than {} partial uploads", MAX_CONCAT_URLS)]
    ConcatTooManyUrls,
    /// Not `<algorithm> <base64 digest>`.
    #[error("malformed Upload-Checksum: expected `<algorithm> <base64 digest>`")]
    ChecksumMalformed,
    /// A well-formed algorithm name that is not `sha1`, `sha256` or `md5`.
    #[error("unsupported Upload-Checksum algorithm: supported are sha1, sha256 and md5")]
    ChecksumUnknownAlgorithm,
    /// A digest whose length is not the algorithm's (20, 32 or 16 bytes).
    #[error("Upload-Checksum digest of the wrong length for its algorithm")]
    ChecksumLengthMismatch,
    /// `Upload-Offset` / `Upload-Length` that is not a non-negative decimal integer.
    #[error("malformed Upload-Offset or Upload-Length: expected a non-negative decimal integer")]
    InvalidInteger,
    /// `Upload-Offset` / `Upload-Length` of more than [`MAX_INTEGER_DIGITS`] digits.
    #[error(
        "Upload-Offset or Upload-Length of more than {} digits",
        MAX_INTEGER_DIGITS
    )]
    IntegerTooLong,
    /// `Upload-Defer-Length` other than `1`.
    #[error("Upload-Defer-Length must be 1")]
    InvalidDeferLength,
    /// No `Tus-Resumable` header.
    #[error("missing Tus-Resumable header: this server speaks tus {}", TUS_VERSION)]
    VersionMissing,
    /// A `Tus-Resumable` other than [`TUS_VERSION`].
    #[error(
        "unsupported Tus-Resumable version: this server speaks tus {}",
        TUS_VERSION
    )]
    VersionUnsupported,
}

impl TusHeaderError {
    /// The status tus answers with: 412 Precondition Failed for [`VersionMissing`] and
    /// [`VersionUnsupported`] (with `Tus-Version`), 400 Bad Request for the rest (an unknown
    /// checksum algorithm included). Never 413: size limits are checked by the handler.
    ///
    /// [`VersionMissing`]: TusHeaderError::VersionMissing
    /// [`VersionUnsupported`]: TusHeaderError::VersionUnsupported
    pub fn status(&self) -> StatusCode {
        match self {
            TusHeaderError::VersionMissing | TusHeaderError::VersionUnsupported => {
                StatusCode::PRECONDITION_FAILED
            }
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// A parsed `Upload-Metadata`: its pairs in the header's order, keys unique, values decoded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metadata {
    pairs: Vec<(String, Vec<u8>)>,
}

impl Metadata {
    /// The decoded value of `key` (empty for a key without value), if the header has it.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }

    /// The decoded value of `key` as text: `None` when the header lacks it or it is not UTF-8.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The pairs, in the header's order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    /// The number of pairs.
    #[allow(dead_code)] // used by the tus / IETF frontends (issue 22)
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// No pairs (an empty header).
    #[allow(dead_code)] // used by the tus / IETF frontends (issue 22)
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

/// Parses an `Upload-Metadata` header value (see the [module documentation](self)).
pub fn parse_metadata(value: &[u8]) -> Result<Metadata, TusHeaderError> {
    if value.len() > MAX_METADATA_LEN {
        return Err(TusHeaderError::MetadataTooLarge);
    }
    let value = trim_ows(value);
    let mut pairs: Vec<(String, Vec<u8>)> = Vec::new();
    if value.is_empty() {
        return Ok(Metadata { pairs });
    }
    for pair in value.split(|&b| b == b',') {
        if pairs.len() == MAX_METADATA_PAIRS {
            return Err(TusHeaderError::MetadataTooManyPairs);
        }
        let mut words = words(pair);
        let key = words.next().ok_or(TusHeaderError::MetadataMalformed)?;
        let encoded = words.next();
        if words.next().is_some() {
            return Err(TusHeaderError::MetadataMalformed);
        }
        let key = printable_ascii(key).ok_or(TusHeaderError::MetadataInvalidKey)?;
        if pairs.iter().any(|(k, _)| k == key) {
            return Err(TusHeaderError::MetadataDuplicateKey);
        }
        let decoded = match encoded {
            Some(encoded) => decode_base64(encoded).ok_or(TusHeaderError::MetadataInvalidValue)?,
            None => Vec::new(),
        };
        pairs.push((key.to_owned(), decoded));
    }
    Ok(Metadata { pairs })
}

/// Encodes `Upload-Metadata` pairs: `key base64value` (padded standard base64), a key alone
/// for an empty value, joined with `,`. Keys are written as given: a key that
/// [`parse_metadata`] refuses (empty, with a space, a comma or a non-ASCII character, twice)
/// gives a header that it refuses.
#[allow(dead_code)] // used by the tus / IETF frontends (issue 22)
pub fn encode_metadata(pairs: &[(&str, &[u8])]) -> String {
    let mut out = String::new();
    for (i, (key, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(key);
        if !value.is_empty() {
            out.push(' ');
            STANDARD.encode_string(value, &mut out);
        }
    }
    out
}

/// A parsed `Upload-Concat`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[allow(dead_code)] // used by the tus / IETF frontends (issue 22)
pub enum Concat {
    /// `partial`: a partial upload, to be concatenated later.
    Partial,
    /// `final;<url> …`: the final upload of these partial uploads, in this order (the URLs as
    /// written: absolute, or relative to the request's).
    Final(Vec<String>),
}

impl fmt::Display for Concat {
    /// The header value: `partial`, or `final;` and the URLs separated by single spaces.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Concat::Partial => f.write_str("partial"),
            Concat::Final(urls) => write!(f, "final;{}", urls.join(" ")),
        }
    }
}

/// Parses an `Upload-Concat` header value (see the [module documentation](self)).
#[allow(dead_code)] // used by the tus / IETF frontends (issue 22)
pub fn parse_concat(value: &[u8]) -> Result<Concat, TusHeaderError> {
    let value = trim_ows(value);
    if value == b"partial" {
        return Ok(Concat::Partial);
    }
    let list = value
        .strip_prefix(b"final;")
        .ok_or(TusHeaderError::ConcatMalformed)?;
    let mut urls = Vec::new();
    for url in words(list) {
        if urls.len() == MAX_CONCAT_URLS {
            return Err(TusHeaderError::ConcatTooManyUrls);
        }
        let url = printable_ascii(url).ok_or(TusHeaderError::ConcatMalformed)?;
        urls.push(url.to_owned());
    }
    if urls.is_empty() {
        return Err(TusHeaderError::ConcatNoUrls);
    }
    Ok(Concat::Final(urls))
}

/// A checksum algorithm of `Upload-Checksum` (and `Tus-Checksum-Algorithm`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChecksumAlgorithm {
    /// `sha1` (the one tus requires): 20 bytes.
    Sha1,
    /// `sha256`: 32 bytes.
    Sha256,
    /// `md5`: 16 bytes.
    Md5,
}

impl ChecksumAlgorithm {
    /// Every supported algorithm, in the order `Tus-Checksum-Algorithm` lists them.
    pub const ALL: [ChecksumAlgorithm; 3] = [
        ChecksumAlgorithm::Sha1,
        ChecksumAlgorithm::Sha256,
        ChecksumAlgorithm::Md5,
    ];

    /// The name in headers: `sha1`, `sha256`, `md5`.
    pub fn name(self) -> &'static str {
        match self {
            ChecksumAlgorithm::Sha1 => "sha1",
            ChecksumAlgorithm::Sha256 => "sha256",
            ChecksumAlgorithm::Md5 => "md5",
        }
    }

    /// The length of a digest in bytes: 20, 32, 16.
    pub fn digest_len(self) -> usize {
        match self {
            ChecksumAlgorithm::Sha1 => 20,
            ChecksumAlgorithm::Sha256 => 32,
            ChecksumAlgorithm::Md5 => 16,
        }
    }

    /// The algorithm of a (lowercase) name.
    fn from_name(name: &[u8]) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name().as_bytes() == name)
    }
}

/// A parsed `Upload-Checksum`: the algorithm and the digest the body must have.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Checksum {
    /// The algorithm.
    pub algorithm: ChecksumAlgorithm,
    /// The digest, exactly [`ChecksumAlgorithm::digest_len`] bytes.
    pub digest: Vec<u8>,
}

impl fmt::Display for Checksum {
    /// The header value: `<name> <padded base64>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}",
            self.algorithm.name(),
            STANDARD.encode(&self.digest)
        )
    }
}

/// Parses an `Upload-Checksum` header value (see the [module documentation](self)). Only the
/// syntax and the digest's length are checked; computing the body's digest is the caller's.
pub fn parse_checksum(value: &[u8]) -> Result<Checksum, TusHeaderError> {
    let mut words = words(value);
    let (Some(name), Some(encoded), None) = (words.next(), words.next(), words.next()) else {
        return Err(TusHeaderError::ChecksumMalformed);
    };
    // tus: names are ASCII without uppercase letters.
    if printable_ascii(name).is_none() || name.iter().any(u8::is_ascii_uppercase) {
        return Err(TusHeaderError::ChecksumMalformed);
    }
    let algorithm =
        ChecksumAlgorithm::from_name(name).ok_or(TusHeaderError::ChecksumUnknownAlgorithm)?;
    let digest = decode_base64(encoded).ok_or(TusHeaderError::ChecksumMalformed)?;
    if digest.len() != algorithm.digest_len() {
        return Err(TusHeaderError::ChecksumLengthMismatch);
    }
    Ok(Checksum { algorithm, digest })
}

/// Parses `Upload-Offset` or `Upload-Length` (tus: a non-negative integer): 1 to
/// [`MAX_INTEGER_DIGITS`] ASCII digits, leading zeros allowed (and counted), no sign, no other
/// character. The largest value is therefore 9,999,999,999,999,999,999; `u64::MAX` (20 digits)
/// is [`TusHeaderError::IntegerTooLong`].
pub fn parse_u64(value: &[u8]) -> Result<u64, TusHeaderError> {
    let digits = trim_ows(value);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(TusHeaderError::InvalidInteger);
    }
    if digits.len() > MAX_INTEGER_DIGITS {
        return Err(TusHeaderError::IntegerTooLong);
    }
    // 19 digits always fit in a u64; checked all the same.
    digits
        .iter()
        .try_fold(0u64, |n, &d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
        .ok_or(TusHeaderError::IntegerTooLong)
}

/// Checks `Upload-Defer-Length`, whose only value is `1`.
#[allow(dead_code)] // used by the tus / IETF frontends (issue 22)
pub fn parse_defer_length(value: &[u8]) -> Result<(), TusHeaderError> {
    if trim_ows(value) == b"1" {
        Ok(())
    } else {
        Err(TusHeaderError::InvalidDeferLength)
    }
}

/// Checks a request's `Tus-Resumable` (`None` when it has none): it must be exactly
/// [`TUS_VERSION`]. Both errors answer 412 (the handler adds `Tus-Version`).
pub fn check_tus_resumable(value: Option<&[u8]>) -> Result<(), TusHeaderError> {
    match value {
        None => Err(TusHeaderError::VersionMissing),
        Some(v) if trim_ows(v) == TUS_VERSION.as_bytes() => Ok(()),
        Some(_) => Err(TusHeaderError::VersionUnsupported),
    }
}

/// The non-empty runs of `s` between SP / HTAB.
fn words(s: &[u8]) -> impl Iterator<Item = &[u8]> {
    s.split(|&b| is_ows(b)).filter(|w| !w.is_empty())
}

/// `s` as text when every byte is printable ASCII (`!` to `~`).
fn printable_ascii(s: &[u8]) -> Option<&str> {
    if s.iter().all(|b| (b'!'..=b'~').contains(b)) {
        std::str::from_utf8(s).ok()
    } else {
        None
    }
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

    use TusHeaderError::*;

    fn meta(pairs: &[(&str, &[u8])]) -> Metadata {
        Metadata {
            pairs: pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
                .collect(),
        }
    }

    #[test]
    fn metadata_table() {
        #[rustfmt::skip]
        let rows: &[(&[u8], Result<Metadata, TusHeaderError>)] = &[
            // The spec's example.
            (b"filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential",
             Ok(meta(&[("filename", b"world_domination_plan.pdf"), ("is_confidential", b"")]))),
            // tus-js-client: `key base64`, joined with `,`; an empty string as `key `.
            (b"filename aGVsbG8udHh0,filetype dGV4dC9wbGFpbg==,empty ",
             Ok(meta(&[("filename", b"hello.txt"), ("filetype", b"text/plain"), ("empty", b"")]))),
            (b"a ,b YQ==", Ok(meta(&[("a", b""), ("b", b"a")]))),
            // Unpadded values.
            (b"a YQ,b YWI,c YWJj", Ok(meta(&[("a", b"a"), ("b", b"ab"), ("c", b"abc")]))),
            // Whitespace around pairs and between key and value.
            (b"  a YQ== ,\tb Yg==\t", Ok(meta(&[("a", b"a"), ("b", b"b")]))),
            (b"a  YQ==", Ok(meta(&[("a", b"a")]))),
            (b"a\tYQ==", Ok(meta(&[("a", b"a")]))),
            (b"a YQ==, b Yg==", Ok(meta(&[("a", b"a"), ("b", b"b")]))),
            // Binary and UTF-8 values; printable-ASCII keys.
            (b"bin AP8=", Ok(meta(&[("bin", b"\x00\xff")]))),
            (b"name w6k=", Ok(meta(&[("name", "\u{e9}".as_bytes())]))),
            (b"K3y_-.!~ YQ==", Ok(meta(&[("K3y_-.!~", b"a")]))),
            (b"a=b YQ==", Ok(meta(&[("a=b", b"a")]))),
            // Keys are case-sensitive: these are two keys.
            (b"a YQ==,A Yg==", Ok(meta(&[("a", b"a"), ("A", b"b")]))),
            // Empty header: no metadata.
            (b"", Ok(meta(&[]))),
            (b"  \t ", Ok(meta(&[]))),
            // Malformed structure.
            (b",", Err(MetadataMalformed)),
            (b"a YQ==,", Err(MetadataMalformed)),
            (b",a YQ==", Err(MetadataMalformed)),
            (b"a YQ==,,b Yg==", Err(MetadataMalformed)),
            (b"a YQ==, ,b Yg==", Err(MetadataMalformed)),
            (b"a YQ== Yg==", Err(MetadataMalformed)),
            (b"a b c", Err(MetadataMalformed)),
            // Keys.
            (b"a YQ==,a Yg==", Err(MetadataDuplicateKey)),
            (b"a,a", Err(MetadataDuplicateKey)),
            (b"a YQ==,b,a", Err(MetadataDuplicateKey)),
            ("\u{e9} YQ==".as_bytes(), Err(MetadataInvalidKey)),
            (b"a\x00 YQ==", Err(MetadataInvalidKey)),
            (b"a\x7f YQ==", Err(MetadataInvalidKey)),
            (b"a\x0b YQ==", Err(MetadataInvalidKey)),
            (b"\xff", Err(MetadataInvalidKey)),
            // Values.
            (b"a YQ=", Err(MetadataInvalidValue)),
            (b"a Y", Err(MetadataInvalidValue)),
            (b"a YR==", Err(MetadataInvalidValue)), // non-zero pad bits
            (b"a YQ-_", Err(MetadataInvalidValue)), // URL-safe alphabet
            (b"a !!!!", Err(MetadataInvalidValue)),
            (b"a YQ==\x00", Err(MetadataInvalidValue)),
            (b"a =", Err(MetadataInvalidValue)),
            (b"a Y=Q=", Err(MetadataInvalidValue)),
            (b"a YWI", Ok(meta(&[("a", b"ab")]))),
            (b"a YWI=", Ok(meta(&[("a", b"ab")]))),
            (b"a YWI==", Err(MetadataInvalidValue)),
            (b"a YQ===", Err(MetadataInvalidValue)),
            ("a \u{e9}".as_bytes(), Err(MetadataInvalidValue)),
        ];
        for (input, want) in rows {
            assert_eq!(
                parse_metadata(input),
                *want,
                "input {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn metadata_bounds() {
        let header = |n: usize| {
            (0..n)
                .map(|i| format!("k{i} dg=="))
                .collect::<Vec<_>>()
                .join(",")
        };
        let m = parse_metadata(header(64).as_bytes()).unwrap();
        assert_eq!(m.len(), 64);
        assert_eq!(m.get("k63"), Some(&b"v"[..]));
        assert_eq!(
            parse_metadata(header(65).as_bytes()),
            Err(MetadataTooManyPairs)
        );
        // The 65th pair counts even when empty.
        assert_eq!(
            parse_metadata(format!("{},", header(64)).as_bytes()),
            Err(MetadataTooManyPairs)
        );

        // 16 KiB exactly, then one byte more (whitespace counts: it is the raw header).
        let value = "a".repeat(12_000);
        let mut exact = encode_metadata(&[("k", value.as_bytes())]);
        exact.push_str(&" ".repeat(MAX_METADATA_LEN - exact.len()));
        assert_eq!(exact.len(), MAX_METADATA_LEN);
        assert_eq!(
            parse_metadata(exact.as_bytes()).unwrap().get("k"),
            Some(value.as_bytes())
        );
        exact.push(' ');
        assert_eq!(parse_metadata(exact.as_bytes()), Err(MetadataTooLarge));
        assert_eq!(
            parse_metadata(&[b','; MAX_METADATA_LEN + 1]),
            Err(MetadataTooLarge)
        );
    }

    #[test]
    fn metadata_accessors_and_encoder() {
        let m = parse_metadata(b"filename aMOpLnR4dA==,folder YS9i,bin /w==,empty").unwrap();
        assert_eq!(m.get_str("filename"), Some("h\u{e9}.txt"));
        assert_eq!(m.get_str("folder"), Some("a/b"));
        assert_eq!(m.get("bin"), Some(&b"\xff"[..]));
        assert_eq!(m.get_str("bin"), None);
        assert_eq!(m.get("empty"), Some(&b""[..]));
        assert_eq!(m.get_str("empty"), Some(""));
        assert_eq!(m.get("missing"), None);
        assert_eq!(m.get_str("missing"), None);
        assert_eq!(m.get("FILENAME"), None);
        assert!(!m.is_empty());
        let keys: Vec<&str> = m.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["filename", "folder", "bin", "empty"]);

        let pairs: Vec<(&str, &[u8])> = m.iter().collect();
        let encoded = encode_metadata(&pairs);
        assert_eq!(encoded, "filename aMOpLnR4dA==,folder YS9i,bin /w==,empty");
        assert_eq!(parse_metadata(encoded.as_bytes()), Ok(m));

        assert_eq!(encode_metadata(&[]), "");
        assert!(parse_metadata(b"").unwrap().is_empty());
        assert_eq!(encode_metadata(&[("a", b"ab")]), "a YWI=");
    }

    #[test]
    fn concat_table() {
        let urls = |u: &[&str]| Ok(Concat::Final(u.iter().map(|s| (*s).to_owned()).collect()));
        #[rustfmt::skip]
        let rows: &[(&[u8], Result<Concat, TusHeaderError>)] = &[
            (b"partial", Ok(Concat::Partial)),
            (b" partial\t", Ok(Concat::Partial)),
            // The spec's example: absolute paths.
            (b"final;/files/a /files/b", urls(&["/files/a", "/files/b"])),
            (b"final;https://tus.example.org/files/a https://tus.example.org/files/b",
             urls(&["https://tus.example.org/files/a", "https://tus.example.org/files/b"])),
            // Relative URLs (tus: "MAY be absolute or relative"), repeated ones.
            (b"final;a ../b a", urls(&["a", "../b", "a"])),
            (b"final;/files/a", urls(&["/files/a"])),
            (b"final; /a  /b\t/c ", urls(&["/a", "/b", "/c"])),
            (b"final;/a?x=1;y=2,z", urls(&["/a?x=1;y=2,z"])),
            // No URLs.
            (b"final;", Err(ConcatNoUrls)),
            (b"final;   ", Err(ConcatNoUrls)),
            // Malformed.
            (b"", Err(ConcatMalformed)),
            (b"final", Err(ConcatMalformed)),
            (b"final /a", Err(ConcatMalformed)),
            (b"final ;/a", Err(ConcatMalformed)),
            (b"final:/a", Err(ConcatMalformed)),
            (b"FINAL;/a", Err(ConcatMalformed)),
            (b"Partial", Err(ConcatMalformed)),
            (b"partial;", Err(ConcatMalformed)),
            (b"partial /a", Err(ConcatMalformed)),
            (b"partialx", Err(ConcatMalformed)),
            (b"finalx;/a", Err(ConcatMalformed)),
            (b"final;/a\x00", Err(ConcatMalformed)),
            (b"final;/a\n/b", Err(ConcatMalformed)),
            ("final;/\u{e9}".as_bytes(), Err(ConcatMalformed)),
            (b"final;/a\xff", Err(ConcatMalformed)),
        ];
        for (input, want) in rows {
            let got = parse_concat(input);
            assert_eq!(got, *want, "input {:?}", String::from_utf8_lossy(input));
            if let Ok(c) = got {
                assert_eq!(parse_concat(c.to_string().as_bytes()), Ok(c));
            }
        }
    }

    #[test]
    fn concat_bounds() {
        let header = |n: usize| {
            let list: Vec<String> = (0..n).map(|i| format!("/files/{i}")).collect();
            format!("final;{}", list.join(" "))
        };
        let Ok(Concat::Final(urls)) = parse_concat(header(1000).as_bytes()) else {
            panic!("1,000 URLs refused");
        };
        assert_eq!(urls.len(), 1000);
        assert_eq!(urls[999], "/files/999");
        assert_eq!(
            parse_concat(header(1001).as_bytes()),
            Err(ConcatTooManyUrls)
        );
        assert_eq!(Concat::Partial.to_string(), "partial");
        assert_eq!(
            Concat::Final(vec!["/a".into(), "/b".into()]).to_string(),
            "final;/a /b"
        );
    }

    #[test]
    fn checksum_table() {
        use ChecksumAlgorithm::*;
        let sum = |algorithm, digest: &[u8]| {
            Ok(Checksum {
                algorithm,
                digest: digest.to_vec(),
            })
        };
        // SHA-1, SHA-256 and MD5 of `hello world`.
        let sha1 = hex::decode("2aae6c35c94fcfb415dbe95f408b9ce91ee846ed").unwrap();
        let sha256 =
            hex::decode("b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9")
                .unwrap();
        let md5 = hex::decode("5eb63bbbe01eeed093cb22bb8f5acdc3").unwrap();
        #[rustfmt::skip]
        let rows: &[(&[u8], Result<Checksum, TusHeaderError>)] = &[
            // The spec's example.
            (b"sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=", sum(Sha1, &sha1)),
            (b"sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0", sum(Sha1, &sha1)),
            (b"sha256 uU0nuZNNPgilLlLX2n2r+sSE7+N6U4DukIj3rOLvzek=", sum(Sha256, &sha256)),
            (b"md5 XrY7u+Ae7tCTyyK7j1rNww==", sum(Md5, &md5)),
            (b"md5 XrY7u+Ae7tCTyyK7j1rNww", sum(Md5, &md5)),
            (b"md5 XrY7u+Ae7tCTyyK7j1rNww=", Err(ChecksumMalformed)),
            (b"  md5  XrY7u+Ae7tCTyyK7j1rNww==\t", sum(Md5, &md5)),
            (b"md5\tXrY7u+Ae7tCTyyK7j1rNww==", sum(Md5, &md5)),
            // Wrong digest lengths.
            (b"sha1 XrY7u+Ae7tCTyyK7j1rNww==", Err(ChecksumLengthMismatch)),
            (b"md5 Kq5sNclPz7QV2+lfQIuc6R7oRu0=", Err(ChecksumLengthMismatch)),
            (b"sha256 Kq5sNclPz7QV2+lfQIuc6R7oRu0=", Err(ChecksumLengthMismatch)),
            (b"sha1 AA==", Err(ChecksumLengthMismatch)),
            (b"sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0A", Err(ChecksumLengthMismatch)), // 21 bytes
            // Unknown algorithms (well-formed names).
            (b"crc32 AAAAAA==", Err(ChecksumUnknownAlgorithm)),
            (b"sha512 Kq5sNclPz7QV2+lfQIuc6R7oRu0=", Err(ChecksumUnknownAlgorithm)),
            (b"sha-1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=", Err(ChecksumUnknownAlgorithm)),
            (b"sha1a Kq5sNclPz7QV2+lfQIuc6R7oRu0=", Err(ChecksumUnknownAlgorithm)),
            (b"crc32 !!!", Err(ChecksumUnknownAlgorithm)),
            // Malformed.
            (b"SHA1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=", Err(ChecksumMalformed)),
            (b"Sha256 uU0nuZNNPgilLlLX2n2r+sSE7+N6U4DukIj3rOLvzek=", Err(ChecksumMalformed)),
            (b"sha1", Err(ChecksumMalformed)),
            (b"sha1 ", Err(ChecksumMalformed)),
            (b"", Err(ChecksumMalformed)),
            (b" ", Err(ChecksumMalformed)),
            (b"Kq5sNclPz7QV2+lfQIuc6R7oRu0=", Err(ChecksumMalformed)),
            (b"sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0= x", Err(ChecksumMalformed)),
            (b"sha1,Kq5sNclPz7QV2+lfQIuc6R7oRu0=", Err(ChecksumMalformed)),
            (b"sha1 Kq5sNclPz7QV2-lfQIuc6R7oRu0=", Err(ChecksumMalformed)), // URL-safe
            (b"sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0==", Err(ChecksumMalformed)),
            (b"sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu1=", Err(ChecksumMalformed)), // pad bits
            (b"sha1 :Kq5sNclPz7QV2+lfQIuc6R7oRu0=:", Err(ChecksumMalformed)),
            (b"sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=\x00", Err(ChecksumMalformed)),
            ("sh\u{e4}1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=".as_bytes(), Err(ChecksumMalformed)),
            (b"sha1\x00 Kq5sNclPz7QV2+lfQIuc6R7oRu0=", Err(ChecksumMalformed)),
        ];
        for (input, want) in rows {
            let got = parse_checksum(input);
            assert_eq!(got, *want, "input {:?}", String::from_utf8_lossy(input));
            if let Ok(c) = got {
                assert_eq!(parse_checksum(c.to_string().as_bytes()), Ok(c));
            }
        }
        for a in ChecksumAlgorithm::ALL {
            assert_eq!(ChecksumAlgorithm::from_name(a.name().as_bytes()), Some(a));
        }
    }

    #[test]
    fn u64_table() {
        #[rustfmt::skip]
        let rows: &[(&[u8], Result<u64, TusHeaderError>)] = &[
            (b"0", Ok(0)),
            (b"100", Ok(100)),
            (b"007", Ok(7)),
            (b" 42\t", Ok(42)),
            (b"9223372036854775807", Ok(i64::MAX as u64)),
            (b"9999999999999999999", Ok(9_999_999_999_999_999_999)), // 19 digits
            (b"0000000000000000001", Ok(1)),
            (b"00000000000000000001", Err(IntegerTooLong)), // 20 digits
            (b"10000000000000000000", Err(IntegerTooLong)),
            (b"18446744073709551615", Err(IntegerTooLong)), // u64::MAX
            (b"18446744073709551616", Err(IntegerTooLong)), // u64::MAX + 1
            (b"99999999999999999999999999", Err(IntegerTooLong)),
            (b"", Err(InvalidInteger)),
            (b"  ", Err(InvalidInteger)),
            (b"+1", Err(InvalidInteger)),
            (b"-1", Err(InvalidInteger)),
            (b"-0", Err(InvalidInteger)),
            (b"1 2", Err(InvalidInteger)),
            (b"1.0", Err(InvalidInteger)),
            (b"1e3", Err(InvalidInteger)),
            (b"0x10", Err(InvalidInteger)),
            (b"1,2", Err(InvalidInteger)),
            (b"1;a", Err(InvalidInteger)),
            (b"\"1\"", Err(InvalidInteger)),
            ("\u{0661}".as_bytes(), Err(InvalidInteger)),
            (b"1\x00", Err(InvalidInteger)),
            (b"1\n", Err(InvalidInteger)),
            (b"123456789012345678901234x", Err(InvalidInteger)),
        ];
        for (input, want) in rows {
            assert_eq!(
                parse_u64(input),
                *want,
                "input {:?}",
                String::from_utf8_lossy(input)
            );
        }
        for n in [
            0,
            1,
            10,
            999,
            1 << 40,
            i64::MAX as u64,
            9_999_999_999_999_999_999,
        ] {
            assert_eq!(parse_u64(n.to_string().as_bytes()), Ok(n));
        }
    }

    #[test]
    fn defer_length_and_version() {
        assert_eq!(parse_defer_length(b"1"), Ok(()));
        assert_eq!(parse_defer_length(b" 1 "), Ok(()));
        for bad in [&b"0"[..], b"", b"01", b"2", b"true", b"1 1", b"+1", b"?1"] {
            assert_eq!(parse_defer_length(bad), Err(InvalidDeferLength), "{bad:?}");
        }

        assert_eq!(TUS_VERSION, "1.0.0");
        assert_eq!(check_tus_resumable(Some(b"1.0.0")), Ok(()));
        assert_eq!(check_tus_resumable(Some(b" 1.0.0\t")), Ok(()));
        assert_eq!(check_tus_resumable(None), Err(VersionMissing));
        for bad in [
            &b""[..],
            b"1.0",
            b"1",
            b"0.2.2",
            b"1.0.1",
            b"2.0.0",
            b"1.0.0,0.2.2",
            b"v1.0.0",
            b"1.0.0.0",
        ] {
            assert_eq!(
                check_tus_resumable(Some(bad)),
                Err(VersionUnsupported),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn statuses_and_messages() {
        let all = [
            MetadataTooLarge,
            MetadataTooManyPairs,
            MetadataMalformed,
            MetadataInvalidKey,
            MetadataDuplicateKey,
            MetadataInvalidValue,
            ConcatMalformed,
            ConcatNoUrls,
            ConcatTooManyUrls,
            ChecksumMalformed,
            ChecksumUnknownAlgorithm,
            ChecksumLengthMismatch,
            InvalidInteger,
            IntegerTooLong,
            InvalidDeferLength,
            VersionMissing,
            VersionUnsupported,
        ];
        for e in all {
            let want = match e {
                VersionMissing | VersionUnsupported => StatusCode::PRECONDITION_FAILED,
                _ => StatusCode::BAD_REQUEST,
            };
            assert_eq!(e.status(), want, "{e:?}");
            assert_ne!(e.status(), StatusCode::PAYLOAD_TOO_LARGE);
            assert!(!e.to_string().is_empty());
        }
        assert_eq!(ChecksumUnknownAlgorithm.status(), StatusCode::BAD_REQUEST);
        assert!(MetadataTooLarge.to_string().contains("16384"));
        assert!(MetadataTooManyPairs.to_string().contains("64"));
        assert!(ConcatTooManyUrls.to_string().contains("1000"));
        assert!(IntegerTooLong.to_string().contains("19"));
        assert!(VersionUnsupported.to_string().contains("1.0.0"));
    }
}
