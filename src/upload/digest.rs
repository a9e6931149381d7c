//! The request header `Content-Digest` (RFC 9530) of a chunk: `sha-256=:<base64>:`.
//!
//! The header is a structured-field Dictionary (RFC 8941), e.g.
//! `sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:, sha-512=:…:`. [`parse_sha256`]
//! reads the `sha-256` member, and [`Sha256Check`] verifies a chunk against it while the chunk
//! streams by (PROTOCOL.md §4: the range counts as received only when the digest matches).
//!
//! # Parsing
//!
//! A small, allocation-free splitter, not a full RFC 8941 parser:
//! - members are separated by `,` outside of byte sequences (`:…:`), strings (`"…"`, with `\`
//!   escapes) and inner lists (`(…)`); whitespace (SP / HTAB) around members is ignored;
//! - each member is a key (RFC 8941: `lcalpha` or `*`, then `lcalpha`, digits, `_ - . *`),
//!   then `=value`, `;parameters` or nothing. Keys are case-sensitive, as in RFC 8941: only
//!   the lowercase `sha-256` is the SHA-256 digest, and an uppercase key such as `SHA-256`
//!   makes the whole header malformed (rather than being silently ignored, which would skip a
//!   check the client asked for);
//! - the `sha-256` value must be a byte sequence `:base64:` (standard alphabet; padded as RFC
//!   8941 requires, unpadded accepted too) of exactly 32 bytes; parameters after it are
//!   ignored. Values of other members are not interpreted;
//! - several `sha-256` members must agree (RFC 8941 would keep the last one; conflicting
//!   digests are refused instead);
//! - an empty header (or only whitespace) is an empty dictionary: no digest. A trailing or
//!   empty member (`a=1,`, `a=1,,b=2`), an unterminated `:`, `"` or `(`, a control character
//!   or a non-ASCII byte, or a header longer than 16 KiB makes it malformed.
//!
//! Both a malformed header and a digest that does not match answer 400 `digest_mismatch`
//! (the message tells which): the protocol names that kind for a chunk that does not verify.

use crate::error::{ApiError, ErrorKind};
use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// Longer `Content-Digest` headers are refused as malformed.
const MAX_HEADER_LEN: usize = 16 * 1024;

/// The standard base64 alphabet, with or without padding.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A `Content-Digest` that is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum DigestError {
    /// The header cannot be parsed, or its `sha-256` member is not a 32-byte `:base64:` value.
    #[error("malformed Content-Digest: expected `sha-256=:<base64 of 32 bytes>:`")]
    Malformed,
    /// The chunk's SHA-256 differs from the one in `Content-Digest`.
    #[error("the chunk's SHA-256 does not match its Content-Digest; the chunk was not kept")]
    Mismatch,
}

impl From<DigestError> for ApiError {
    /// 400 `digest_mismatch` for both: PROTOCOL.md §4 names that kind for a chunk whose
    /// digest does not verify, and a malformed header cannot verify. The message tells the
    /// two apart.
    fn from(e: DigestError) -> Self {
        ApiError::new(ErrorKind::DigestMismatch, e.to_string())
    }
}

/// The SHA-256 digest of a request's `Content-Digest` header, if it has one: what every
/// upload path (simple, chunk, session form and part) verifies its body against.
pub fn of_request(headers: &http::HeaderMap) -> Result<Option<[u8; 32]>, DigestError> {
    match headers.get("content-digest") {
        Some(v) => parse_sha256(v.as_bytes()),
        None => Ok(None),
    }
}

/// The SHA-256 digest in a `Content-Digest` header value (see the [module
/// documentation](self) for what is accepted).
///
/// `Ok(None)` when the header has no `sha-256` member (only other algorithms, or nothing);
/// [`DigestError::Malformed`] when the header cannot be parsed or its `sha-256` member is not a
/// 32-byte byte sequence.
pub fn parse_sha256(value: &[u8]) -> Result<Option<[u8; 32]>, DigestError> {
    if value.len() > MAX_HEADER_LEN
        || value
            .iter()
            .any(|&b| b != b'\t' && !(b' '..=b'~').contains(&b))
    {
        return Err(DigestError::Malformed);
    }
    let mut rest = trim_ows(value);
    if rest.is_empty() {
        return Ok(None);
    }
    let mut found: Option<[u8; 32]> = None;
    loop {
        let end = member_end(rest)?;
        let (key, after_key) = split_key(trim_ows(&rest[..end]))?;
        if key == b"sha-256" {
            let digest = sha256_value(after_key)?;
            if found.is_some_and(|f| f != digest) {
                return Err(DigestError::Malformed);
            }
            found = Some(digest);
        } else if !matches!(after_key.first(), None | Some(b'=' | b';')) {
            return Err(DigestError::Malformed);
        }
        if end == rest.len() {
            return Ok(found);
        }
        rest = &rest[end + 1..];
    }
}

/// The index of the `,` that ends the first member of `s` (or `s.len()`), skipping byte
/// sequences, strings and inner lists.
fn member_end(s: &[u8]) -> Result<usize, DigestError> {
    let mut in_list = false;
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b':' => {
                let close = s[i + 1..]
                    .iter()
                    .position(|&b| b == b':')
                    .ok_or(DigestError::Malformed)?;
                i += close + 1;
            }
            b'"' => loop {
                i += 1;
                match s.get(i) {
                    None => return Err(DigestError::Malformed),
                    Some(b'"') => break,
                    Some(b'\\') => {
                        i += 1;
                        if !matches!(s.get(i), Some(b'"' | b'\\')) {
                            return Err(DigestError::Malformed);
                        }
                    }
                    Some(_) => {}
                }
            },
            b'(' if !in_list => in_list = true,
            b')' if in_list => in_list = false,
            b'(' | b')' => return Err(DigestError::Malformed),
            b',' if in_list => return Err(DigestError::Malformed),
            b',' => return Ok(i),
            _ => {}
        }
        i += 1;
    }
    if in_list {
        return Err(DigestError::Malformed);
    }
    Ok(s.len())
}

/// Splits a member into its key and what follows it; the key must be an RFC 8941 key.
fn split_key(member: &[u8]) -> Result<(&[u8], &[u8]), DigestError> {
    match member.first() {
        Some(b) if b.is_ascii_lowercase() || *b == b'*' => {}
        _ => return Err(DigestError::Malformed),
    }
    let len = member
        .iter()
        .take_while(|&&b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.' | b'*')
        })
        .count();
    Ok(member.split_at(len))
}

/// `=:<base64 of 32 bytes>:` optionally followed by parameters.
fn sha256_value(after_key: &[u8]) -> Result<[u8; 32], DigestError> {
    let Some(value) = after_key.strip_prefix(b"=:") else {
        return Err(DigestError::Malformed);
    };
    let close = value
        .iter()
        .position(|&b| b == b':')
        .ok_or(DigestError::Malformed)?;
    let (encoded, params) = (&value[..close], &value[close + 1..]);
    if !matches!(params.first(), None | Some(b';')) || encoded.len() > 44 {
        return Err(DigestError::Malformed);
    }
    // 44 base64 characters decode to at most 33 bytes.
    let mut buf = [0u8; 33];
    match BASE64.decode_slice(encoded, &mut buf) {
        Ok(32) => {
            let mut digest = [0u8; 32];
            digest.copy_from_slice(&buf[..32]);
            Ok(digest)
        }
        _ => Err(DigestError::Malformed),
    }
}

fn trim_ows(s: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = s.iter().take_while(|b| is_ows(b)).count();
    let s = &s[start..];
    let end = s.len() - s.iter().rev().take_while(|b| is_ows(b)).count();
    &s[..end]
}

/// Verifies streamed bytes against an expected SHA-256 digest.
///
/// ```
/// use tower_uploads::upload::digest::{parse_sha256, Sha256Check};
///
/// let expected = parse_sha256(b"sha-256=:LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=:")
///     .unwrap()
///     .unwrap();
/// let mut check = Sha256Check::new(expected);
/// check.update(b"hel");
/// check.update(b"lo");
/// assert!(check.finish());
/// ```
#[derive(Clone, Debug)]
pub struct Sha256Check {
    hasher: Sha256,
    expected: [u8; 32],
}

impl Sha256Check {
    /// A check against `expected`, with nothing hashed yet.
    pub fn new(expected: [u8; 32]) -> Self {
        Sha256Check {
            hasher: Sha256::new(),
            expected,
        }
    }

    /// Hashes the next bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
    }

    /// The SHA-256 of the bytes hashed so far (whatever was expected).
    pub fn into_digest(self) -> [u8; 32] {
        self.hasher.finalize().into()
    }

    /// Whether the bytes hashed so far have the expected digest (compared in constant time).
    pub fn finish(self) -> bool {
        let actual: [u8; 32] = self.hasher.finalize().into();
        actual.ct_eq(&self.expected).into()
    }
}

/// A running digest with one of tus's checksum algorithms (`Upload-Checksum`), compared with
/// the expected one before a chunk counts.
pub(crate) enum Checksummer {
    Sha1(sha1::Sha1, Vec<u8>),
    Sha256(sha2::Sha256, Vec<u8>),
    Md5(md5::Md5, Vec<u8>),
}

impl Checksummer {
    /// A checksum of `algorithm` expected to come out as `expected`.
    pub(crate) fn new(
        algorithm: crate::headers::tus::ChecksumAlgorithm,
        expected: Vec<u8>,
    ) -> Self {
        use crate::headers::tus::ChecksumAlgorithm as A;
        use sha2::Digest;
        match algorithm {
            A::Sha1 => Checksummer::Sha1(sha1::Sha1::new(), expected),
            A::Sha256 => Checksummer::Sha256(sha2::Sha256::new(), expected),
            A::Md5 => Checksummer::Md5(md5::Md5::new(), expected),
        }
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) {
        use sha2::Digest;
        match self {
            Checksummer::Sha1(h, _) => h.update(bytes),
            Checksummer::Sha256(h, _) => h.update(bytes),
            Checksummer::Md5(h, _) => h.update(bytes),
        }
    }

    /// Whether the bytes hashed so far have the expected digest (compared in constant time).
    pub(crate) fn matches(self) -> bool {
        use sha2::Digest;
        use subtle::ConstantTimeEq;
        let (got, want) = match self {
            Checksummer::Sha1(h, want) => (h.finalize().to_vec(), want),
            Checksummer::Sha256(h, want) => (h.finalize().to_vec(), want),
            Checksummer::Md5(h, want) => (h.finalize().to_vec(), want),
        };
        got.len() == want.len() && bool::from(got.ct_eq(&want))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
    use http::StatusCode;

    /// SHA-256 of `hello`.
    const HELLO_B64: &str = "LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=";

    fn hello() -> [u8; 32] {
        Sha256::digest(b"hello").into()
    }

    type Parsed = Result<Option<[u8; 32]>, DigestError>;

    #[test]
    fn parse_table() {
        let h = Some(hello());
        let zeros = Some([0u8; 32]);
        let z_pad = STANDARD.encode([0u8; 32]);
        let z_nopad = STANDARD_NO_PAD.encode([0u8; 32]);
        let b31 = STANDARD.encode([0u8; 31]);
        let b33 = STANDARD.encode([0u8; 33]);
        let b64 = STANDARD.encode([0u8; 64]);
        let long = format!("a={}", "x".repeat(MAX_HEADER_LEN));
        let rows: Vec<(String, Parsed)> = vec![
            // Good.
            (format!("sha-256=:{HELLO_B64}:"), Ok(h)),
            (format!("  sha-256=:{HELLO_B64}:\t"), Ok(h)),
            (format!("sha-256=:{z_pad}:"), Ok(zeros)),
            (format!("sha-256=:{z_nopad}:"), Ok(zeros)),
            (format!("sha-512=:{b64}:, sha-256=:{HELLO_B64}:"), Ok(h)),
            (format!("sha-256=:{HELLO_B64}:,sha-512=:{b64}:"), Ok(h)),
            (format!("sha-256=:{HELLO_B64}:;p=1"), Ok(h)),
            (
                format!("sha-256=:{HELLO_B64}:, sha-256=:{HELLO_B64}:"),
                Ok(h),
            ),
            (
                format!(r#"a="x,y:z\"", b=(1 :aa==: "q,"), sha-256=:{HELLO_B64}:"#),
                Ok(h),
            ),
            (format!("flag, sha-256=:{HELLO_B64}:"), Ok(h)),
            (format!("*x;a=1, sha-256=:{HELLO_B64}:"), Ok(h)),
            // No sha-256.
            (format!("sha-512=:{b64}:"), Ok(None)),
            ("md5=:aGVsbG8=:, unixsum=42".to_owned(), Ok(None)),
            (String::new(), Ok(None)),
            ("   ".to_owned(), Ok(None)),
            ("sha-2560=:AA==:".to_owned(), Ok(None)),
            // Malformed sha-256 member.
            ("sha-256=".to_owned(), Err(DigestError::Malformed)),
            ("sha-256".to_owned(), Err(DigestError::Malformed)),
            ("sha-256;a=1".to_owned(), Err(DigestError::Malformed)),
            ("sha-256=::".to_owned(), Err(DigestError::Malformed)),
            (format!("sha-256={HELLO_B64}"), Err(DigestError::Malformed)),
            (
                format!("sha-256=\"{HELLO_B64}\""),
                Err(DigestError::Malformed),
            ),
            (format!("sha-256=:{b31}:"), Err(DigestError::Malformed)),
            (format!("sha-256=:{b33}:"), Err(DigestError::Malformed)),
            (format!("sha-256=:{b64}:"), Err(DigestError::Malformed)),
            (
                format!("sha-256=:{}:", HELLO_B64.replace('+', "-")),
                Err(DigestError::Malformed),
            ),
            (
                format!("sha-256=: {HELLO_B64}:"),
                Err(DigestError::Malformed),
            ),
            (
                format!("sha-256=:{HELLO_B64}:x"),
                Err(DigestError::Malformed),
            ),
            (format!("sha-256=:{HELLO_B64}"), Err(DigestError::Malformed)),
            (
                format!("sha-256 =:{HELLO_B64}:"),
                Err(DigestError::Malformed),
            ),
            (
                format!("sha-256=:{HELLO_B64}:, sha-256=:{z_pad}:"),
                Err(DigestError::Malformed),
            ),
            (
                format!("SHA-256=:{HELLO_B64}:"),
                Err(DigestError::Malformed),
            ),
            (
                format!("Sha-256=:{HELLO_B64}:"),
                Err(DigestError::Malformed),
            ),
            // Unparseable dictionary.
            (
                format!("sha-256=:{HELLO_B64}:,"),
                Err(DigestError::Malformed),
            ),
            (
                format!("a=1,,sha-256=:{HELLO_B64}:"),
                Err(DigestError::Malformed),
            ),
            (",".to_owned(), Err(DigestError::Malformed)),
            ("a=\"unterminated".to_owned(), Err(DigestError::Malformed)),
            ("a=\"bad\\escape\"".to_owned(), Err(DigestError::Malformed)),
            ("a=(1 2".to_owned(), Err(DigestError::Malformed)),
            ("a=((1))".to_owned(), Err(DigestError::Malformed)),
            ("a=)".to_owned(), Err(DigestError::Malformed)),
            ("a=(1,2)".to_owned(), Err(DigestError::Malformed)),
            ("a=:AA==".to_owned(), Err(DigestError::Malformed)),
            ("1a=2".to_owned(), Err(DigestError::Malformed)),
            ("=:AA==:".to_owned(), Err(DigestError::Malformed)),
            ("a b=1".to_owned(), Err(DigestError::Malformed)),
            (
                format!("sha-256=:{HELLO_B64}:\n"),
                Err(DigestError::Malformed),
            ),
            (
                format!("sha-256=:{HELLO_B64}:, é=1"),
                Err(DigestError::Malformed),
            ),
            (long, Err(DigestError::Malformed)),
        ];
        assert!(rows.len() >= 15);
        for (input, want) in &rows {
            assert_eq!(parse_sha256(input.as_bytes()), *want, "input {input:?}");
        }
        // Non-UTF-8 bytes.
        assert_eq!(parse_sha256(b"sha-256=:\xff:"), Err(DigestError::Malformed));
        assert_eq!(parse_sha256(b"\x00"), Err(DigestError::Malformed));
    }

    /// The digests of "hello" with each tus algorithm, as their reference tools give them.
    #[test]
    fn checksums() {
        use crate::headers::tus::ChecksumAlgorithm as A;
        let rows: [(A, &str); 3] = [
            (A::Sha1, "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d"),
            (A::Md5, "5d41402abc4b2a76b9719d911017c592"),
            (
                A::Sha256,
                "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
            ),
        ];
        for (alg, hex_digest) in rows {
            let want = hex::decode(hex_digest).unwrap();
            let mut sum = Checksummer::new(alg, want.clone());
            sum.update(b"hel");
            sum.update(b"lo");
            assert!(sum.matches(), "{alg:?}");
            let mut other = Checksummer::new(alg, want);
            other.update(b"hellO");
            assert!(!other.matches(), "{alg:?}");
            let mut short = Checksummer::new(alg, vec![0; 3]);
            short.update(b"hello");
            assert!(!short.matches());
        }
    }

    #[test]
    fn check() {
        let mut c = Sha256Check::new(hello());
        c.update(b"he");
        c.update(b"");
        c.update(b"llo");
        assert!(c.finish());

        let mut c = Sha256Check::new(hello());
        c.update(b"hello!");
        assert!(!c.finish());

        let mut wrong = hello();
        wrong[31] ^= 1;
        let mut c = Sha256Check::new(wrong);
        c.update(b"hello");
        assert!(!c.finish());

        let empty: [u8; 32] = Sha256::digest(b"").into();
        assert!(Sha256Check::new(empty).finish());
    }

    #[test]
    fn api_errors() {
        let e = ApiError::from(DigestError::Malformed);
        assert_eq!(e.kind(), ErrorKind::DigestMismatch);
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert!(e.message().contains("malformed"));
        assert!(e.message().contains("Content-Digest"));
        let e = ApiError::from(DigestError::Mismatch);
        assert_eq!(e.kind(), ErrorKind::DigestMismatch);
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert!(e.message().contains("Content-Digest"));
    }
}
