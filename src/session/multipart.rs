//! The `multipart/form-data` body of `POST /store/single`, parsed by [`multer`] as it streams.
//!
//! One addition to what `multer` does: ittybit's "Uploading Files" guide sets the header
//! `Content-Type: multipart/form-data` by hand on an `XMLHttpRequest` that sends a
//! `FormData`, and browsers then keep that header *without* its `boundary` parameter. Such a
//! body still starts with its delimiter line `--<boundary>`, so the boundary is taken from
//! there (RFC 2046 §5.1.1: 1 to 70 characters of `bcharsnospace`/space, not ending in space).
//!
//! # Bounded memory
//!
//! `multer` streams a part's *data*, but it gathers a part's *header block* (and the preamble
//! before the first delimiter) in its buffer until it finds the blank line (or the
//! delimiter), bounded only by the whole-stream limit: a header that never ends made one
//! request hold up to the request limit (64 MiB) in memory. The body is therefore read
//! through a [`FormScanner`] that follows the form's structure exactly as `multer` does and
//! refuses, before `multer` sees the bytes, a preamble longer than [`MAX_PREAMBLE`], a
//! header block longer than [`MAX_PART_HEADER`] or more than [`MAX_FORM_PARTS`] parts
//! (400 `multipart_invalid`). `multer` itself refuses more than 32 headers in a part. Parts
//! other than the file are read and dropped, each within [`MAX_OTHER_PART`] (413
//! `file_too_large`). A form thus costs a few tens of KiB of memory whatever it holds.

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use memchr::memmem;
use multer::{Constraints, Multipart, SizeLimit};
use sha2::{Digest as _, Sha256};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use crate::body::BoxError;
use crate::error::{ApiError, ErrorKind};

/// The longest boundary (RFC 2046).
pub const MAX_BOUNDARY: usize = 70;
/// The longest header block of one part: from the end of its delimiter to the blank line
/// that ends its headers, included (a browser's is about 150 bytes).
pub const MAX_PART_HEADER: usize = 16 * 1024;
/// The longest preamble (bytes before the first delimiter; browsers send none).
pub const MAX_PREAMBLE: usize = 16 * 1024;
/// The most parts in one form.
pub const MAX_FORM_PARTS: usize = 64;
/// The largest part other than the file (text fields, which are read and dropped).
pub const MAX_OTHER_PART: u64 = 64 * 1024;

/// Limits of one form body.
#[derive(Clone, Copy, Debug)]
pub struct FormLimits {
    /// The whole body.
    pub body: u64,
    /// Any one part (the file, and the other parts, which are read and ignored).
    pub file: u64,
}

/// What the `Content-Type` of a form body says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FormType {
    /// `multipart/form-data` with a boundary.
    Boundary(String),
    /// `multipart/form-data` without one (or no `Content-Type` at all): read it from the body.
    Sniff,
}

fn invalid(message: impl Into<std::borrow::Cow<'static, str>>) -> ApiError {
    ApiError::new(ErrorKind::MultipartInvalid, message)
}

/// Reads the `Content-Type` header of a form upload.
pub fn form_type(content_type: Option<&str>) -> Result<FormType, ApiError> {
    let Some(ct) = content_type else {
        return Ok(FormType::Sniff);
    };
    let mime: mime::Mime = ct.parse().map_err(|_| {
        invalid("the Content-Type must be multipart/form-data (it could not be parsed)")
    })?;
    if mime.type_() != mime::MULTIPART || mime.subtype() != mime::FORM_DATA {
        return Err(invalid(format!(
            "the Content-Type must be multipart/form-data with a part named `file`, not {}",
            mime.essence_str()
        )));
    }
    match mime.get_param(mime::BOUNDARY) {
        Some(b) if valid_boundary(b.as_str().as_bytes()) => Ok(FormType::Boundary(b.to_string())),
        Some(_) => Err(invalid("the multipart boundary is not valid (RFC 2046)")),
        None => Ok(FormType::Sniff),
    }
}

fn valid_boundary(b: &[u8]) -> bool {
    (1..=MAX_BOUNDARY).contains(&b.len())
        && b.last() != Some(&b' ')
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(&c))
}

/// What the first bytes of a body say about its boundary.
#[derive(Debug, PartialEq, Eq)]
pub enum FirstLine {
    /// More bytes are needed.
    More,
    /// `--<boundary>` followed by CRLF (or LF).
    Boundary(String),
    /// Not a multipart body.
    Invalid,
}

/// Reads the boundary from the delimiter line a multipart body starts with.
pub fn boundary_from_first_line(head: &[u8]) -> FirstLine {
    let max_line = 2 + MAX_BOUNDARY + 2;
    let Some(eol) = head.iter().position(|&b| b == b'\n') else {
        return if head.len() >= max_line
            || (!head.is_empty() && !b"--".starts_with(&head[..head.len().min(2)]))
        {
            FirstLine::Invalid
        } else {
            FirstLine::More
        };
    };
    let line = &head[..eol];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    // Transport padding (spaces or tabs) may follow the delimiter.
    let line = {
        let mut l = line;
        while let [rest @ .., b' ' | b'\t'] = l {
            l = rest;
        }
        l
    };
    match line.strip_prefix(b"--") {
        Some(b) if valid_boundary(b) => {
            FirstLine::Boundary(String::from_utf8_lossy(b).into_owned())
        }
        _ => FirstLine::Invalid,
    }
}

/// [`open_form`], and the [`FormTap`] the body goes through: with `hash`, it hashes every
/// byte of the body for a `Content-Digest`.
pub async fn open_form_tapped<S, E>(
    form: FormType,
    body: S,
    limits: FormLimits,
    hash: bool,
) -> Result<(Multipart<'static>, FormTap), ApiError>
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
    E: Into<BoxError> + 'static,
{
    let mut body = body.map(|r| r.map_err(Into::into));
    let (boundary, head) = match form {
        FormType::Boundary(b) => (b, Bytes::new()),
        FormType::Sniff => {
            let mut head = BytesMut::new();
            loop {
                match boundary_from_first_line(&head) {
                    FirstLine::Boundary(b) => break (b, head.freeze()),
                    FirstLine::Invalid => {
                        return Err(invalid(
                            "the body is not multipart/form-data: it must start with a --boundary line",
                        ));
                    }
                    FirstLine::More => match body.next().await {
                        Some(Ok(b)) => head.extend_from_slice(&b),
                        Some(Err(e)) => {
                            return Err(crate::upload::body::client_failed(&e, "request body"));
                        }
                        None => {
                            return Err(invalid(
                                "the body is empty or not multipart/form-data (no --boundary line)",
                            ));
                        }
                    },
                }
            }
        }
    };
    let stream =
        futures_util::stream::iter((!head.is_empty()).then(|| Ok::<_, BoxError>(head))).chain(body);
    let tap = FormTap::new(stream.boxed(), &boundary, hash);
    let constraints = Constraints::new().size_limit(
        SizeLimit::new()
            .whole_stream(limits.body)
            .per_field(limits.file),
    );
    let form = Multipart::with_constraints(tap.stream(), boundary, constraints);
    Ok((form, tap))
}

/// Opens the form: finds the boundary (from the header, else from the body's first line,
/// putting the bytes read back in front of the stream) and sets the limits (those of
/// [`FormLimits`] and the structural ones of [`FormScanner`]).
pub async fn open_form<S, E>(
    form: FormType,
    body: S,
    limits: FormLimits,
) -> Result<Multipart<'static>, ApiError>
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
    E: Into<BoxError> + 'static,
{
    Ok(open_form_tapped(form, body, limits, false).await?.0)
}

/// A form structure limit was passed (see [`FormScanner`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FormLimit {
    /// More than [`MAX_PREAMBLE`] bytes before the first delimiter.
    #[error("the form has more than {MAX_PREAMBLE} bytes before its first --boundary line")]
    Preamble,
    /// A part's header block is longer than [`MAX_PART_HEADER`] bytes.
    #[error("a form part's headers are longer than {MAX_PART_HEADER} bytes")]
    Header,
    /// More than [`MAX_FORM_PARTS`] parts.
    #[error("the form has more than {MAX_FORM_PARTS} parts")]
    Parts,
}

impl From<FormLimit> for ApiError {
    /// 400 `multipart_invalid`: the form's structure, not its file, is too large.
    fn from(e: FormLimit) -> Self {
        invalid(e.to_string())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Before the first `--boundary` (`multer` looks for it anywhere).
    Preamble,
    /// Just past a `--boundary`; `dashes` of a closing `--` seen.
    Delimiter { dashes: u8 },
    /// Transport padding (spaces, tabs) after a delimiter.
    Padding,
    /// The CR of the delimiter line's CRLF was seen.
    Cr,
    /// A header block, up to its `CRLF CRLF`.
    Header,
    /// A part's data, up to the next `CRLF --boundary`.
    Data,
    /// After the closing delimiter: `multer` reads no further.
    Epilogue,
}

/// Follows a form's structure as its bytes stream by, the way `multer` parses it, and
/// refuses what `multer` would have to buffer beyond the limits: a preamble longer than
/// [`MAX_PREAMBLE`], a header block longer than [`MAX_PART_HEADER`], more than
/// [`MAX_FORM_PARTS`] parts. Its memory is the two delimiters and a carry shorter than them.
///
/// It mirrors `multer` 3's stages: the first `--boundary` anywhere; then `--` (the end) or
/// transport padding and CRLF; then headers up to `CRLF CRLF`; then data up to
/// `CRLF --boundary`. Where a body departs from that shape the scanner keeps counting header
/// bytes (and `multer` refuses the body), so it never takes header bytes for data.
#[derive(Clone, Debug)]
pub struct FormScanner {
    stage: Stage,
    /// `--boundary`.
    open: Vec<u8>,
    /// `CRLF--boundary`.
    next: Vec<u8>,
    /// The last bytes of the previous frame that may begin the pattern looked for.
    carry: Vec<u8>,
    /// Bytes of the current preamble or header block so far.
    count: usize,
    parts: usize,
}

const CRLF_CRLF: &[u8] = b"\r\n\r\n";

impl FormScanner {
    /// A scanner for a form with this boundary.
    pub fn new(boundary: &str) -> FormScanner {
        FormScanner {
            stage: Stage::Preamble,
            open: format!("--{boundary}").into_bytes(),
            next: format!("\r\n--{boundary}").into_bytes(),
            carry: Vec::new(),
            count: 0,
            parts: 0,
        }
    }

    /// Follows the next bytes of the body.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), FormLimit> {
        while let Some(&b) = data.first() {
            match self.stage {
                Stage::Preamble => {
                    let found = find_across(&mut self.carry, data, &self.open);
                    let n = found.unwrap_or(data.len());
                    self.count += n;
                    if self.count > MAX_PREAMBLE + self.open.len() {
                        return Err(FormLimit::Preamble);
                    }
                    if found.is_none() {
                        return Ok(());
                    }
                    data = &data[n..];
                    self.stage = Stage::Delimiter { dashes: 0 };
                }
                Stage::Delimiter { dashes } => {
                    if b == b'-' {
                        if dashes == 1 {
                            self.stage = Stage::Epilogue;
                            return Ok(());
                        }
                        self.stage = Stage::Delimiter { dashes: 1 };
                        data = &data[1..];
                        continue;
                    }
                    // Not the closing delimiter: a part begins.
                    self.parts += 1;
                    if self.parts > MAX_FORM_PARTS {
                        return Err(FormLimit::Parts);
                    }
                    self.count = usize::from(dashes);
                    self.stage = if dashes == 1 {
                        // `-x`: malformed (multer refuses it); counted as header bytes.
                        Stage::Header
                    } else {
                        Stage::Padding
                    };
                }
                Stage::Padding | Stage::Cr => {
                    self.count += 1;
                    if self.count > MAX_PART_HEADER {
                        return Err(FormLimit::Header);
                    }
                    self.stage = match (self.stage, b) {
                        (Stage::Padding, b' ' | b'\t') => Stage::Padding,
                        (Stage::Padding, b'\r') => Stage::Cr,
                        // The delimiter line's CRLF, or a malformed line (multer refuses
                        // it; counted as header bytes meanwhile).
                        _ => Stage::Header,
                    };
                    data = &data[1..];
                }
                Stage::Header => {
                    let found = find_across(&mut self.carry, data, CRLF_CRLF);
                    let n = found.unwrap_or(data.len());
                    self.count += n;
                    if self.count > MAX_PART_HEADER {
                        return Err(FormLimit::Header);
                    }
                    if found.is_none() {
                        return Ok(());
                    }
                    data = &data[n..];
                    self.stage = Stage::Data;
                }
                Stage::Data => match find_across(&mut self.carry, data, &self.next) {
                    Some(n) => {
                        data = &data[n..];
                        self.stage = Stage::Delimiter { dashes: 0 };
                    }
                    None => return Ok(()),
                },
                Stage::Epilogue => return Ok(()),
            }
        }
        Ok(())
    }
}

/// Finds `pat` in a stream whose previous bytes ended with `carry` (shorter than `pat`, so
/// holding no match) and continue with `data`. Returns the index in `data` just past the
/// first match (clearing `carry`), else keeps in `carry` the last bytes that may begin one.
fn find_across(carry: &mut Vec<u8>, data: &[u8], pat: &[u8]) -> Option<usize> {
    let keep = pat.len() - 1;
    if !carry.is_empty() {
        let take = data.len().min(keep);
        let mut joined = Vec::with_capacity(carry.len() + take);
        joined.extend_from_slice(carry);
        joined.extend_from_slice(&data[..take]);
        if let Some(i) = memmem::find(&joined, pat) {
            let end = i + pat.len() - carry.len();
            carry.clear();
            return Some(end);
        }
    }
    if let Some(i) = memmem::find(data, pat) {
        carry.clear();
        return Some(i + pat.len());
    }
    if data.len() >= keep {
        carry.clear();
        carry.extend_from_slice(&data[data.len() - keep..]);
    } else {
        carry.extend_from_slice(data);
        let excess = carry.len().saturating_sub(keep);
        carry.drain(..excess);
    }
    None
}

type BoxStream = Pin<Box<dyn Stream<Item = Result<Bytes, BoxError>> + Send>>;

struct TapState {
    /// The body; taken back by [`FormTap::drain`] once `multer` is done with it.
    body: Option<BoxStream>,
    scanner: FormScanner,
    hash: Option<Sha256>,
    /// Bytes read from the body so far.
    read: u64,
}

/// What stands between the request body and `multer`: the [`FormScanner`], and optionally a
/// SHA-256 of every byte of the body (a `Content-Digest` covers the whole content,
/// RFC 9530), which [`drain`](Self::drain) completes with the bytes `multer` leaves unread.
#[derive(Clone)]
pub struct FormTap {
    state: Arc<Mutex<TapState>>,
}

impl FormTap {
    fn new(body: BoxStream, boundary: &str, hash: bool) -> FormTap {
        FormTap {
            state: Arc::new(Mutex::new(TapState {
                body: Some(body),
                scanner: FormScanner::new(boundary),
                hash: hash.then(Sha256::new),
                read: 0,
            })),
        }
    }

    fn stream(&self) -> TapStream {
        TapStream { tap: self.clone() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TapState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the rest of the body (what follows the closing delimiter, which `multer` does
    /// not read), at most `limit` bytes in all, and returns the SHA-256 of the whole body
    /// (`None` unless the tap was opened to hash it). Call it once the form has ended.
    pub async fn drain(&self, limit: u64) -> Result<Option<[u8; 32]>, ApiError> {
        let Some(mut body) = self.lock().body.take() else {
            return Ok(self.lock().hash.take().map(|h| h.finalize().into()));
        };
        while let Some(frame) = body.next().await {
            let frame =
                frame.map_err(|e| crate::upload::body::client_failed(&e, "request body"))?;
            let mut st = self.lock();
            st.read += frame.len() as u64;
            if st.read > limit {
                return Err(crate::upload::too_large(limit, "body"));
            }
            if let Some(h) = st.hash.as_mut() {
                h.update(&frame);
            }
        }
        Ok(self.lock().hash.take().map(|h| h.finalize().into()))
    }
}

/// The stream `multer` reads: the body through the tap.
struct TapStream {
    tap: FormTap,
}

impl Stream for TapStream {
    type Item = Result<Bytes, BoxError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut st = self.tap.lock();
        let st = &mut *st;
        let Some(body) = st.body.as_mut() else {
            return Poll::Ready(None);
        };
        match body.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                st.read += frame.len() as u64;
                if let Some(h) = st.hash.as_mut() {
                    h.update(&frame);
                }
                match st.scanner.feed(&frame) {
                    Ok(()) => Poll::Ready(Some(Ok(frame))),
                    Err(e) => {
                        st.body = None; // read no further
                        Poll::Ready(Some(Err(Box::new(e))))
                    }
                }
            }
            other => other,
        }
    }
}

/// Is this the part to store? The part named `file`; failing that, the first part that
/// carries a filename (some form libraries name it otherwise).
pub fn is_file_part(name: Option<&str>, file_name: Option<&str>) -> bool {
    name == Some("file") || file_name.is_some()
}

/// The next part to store, skipping (reading and dropping) the others;
/// `None` when the form ends without one.
pub async fn next_file_part(
    form: &mut Multipart<'static>,
) -> Result<Option<multer::Field<'static>>, ApiError> {
    loop {
        let Some(mut field) = form.next_field().await.map_err(|e| from_multer(&e))? else {
            return Ok(None);
        };
        if is_file_part(field.name(), field.file_name()) {
            return Ok(Some(field));
        }
        skip_part(&mut field).await?;
    }
}

/// Reads and drops a part that is not stored, refusing (413) one larger than
/// [`MAX_OTHER_PART`].
pub async fn skip_part(field: &mut multer::Field<'static>) -> Result<(), ApiError> {
    let mut n = 0u64;
    while let Some(chunk) = field.chunk().await.map_err(|e| from_multer(&e))? {
        n += chunk.len() as u64;
        if n > MAX_OTHER_PART {
            return Err(ApiError::new(
                ErrorKind::FileTooLarge,
                format!(
                    "the form part {} is larger than the limit of {MAX_OTHER_PART} bytes \
                     for a part other than the file",
                    field.name().unwrap_or("(unnamed)")
                ),
            ));
        }
    }
    Ok(())
}

/// Reads the rest of the form after the file part (other parts are read and dropped, each
/// within [`MAX_OTHER_PART`]).
pub async fn skip_rest(form: &mut Multipart<'static>) -> Result<(), ApiError> {
    while let Some(mut field) = form.next_field().await.map_err(|e| from_multer(&e))? {
        skip_part(&mut field).await?;
    }
    Ok(())
}

/// The answer for a `multer` error: 413 past a limit, 400 otherwise.
pub fn from_multer(e: &multer::Error) -> ApiError {
    use multer::Error as M;
    match e {
        M::FieldSizeExceeded { limit, field_name } => ApiError::new(
            ErrorKind::FileTooLarge,
            format!(
                "the form part {} is larger than the limit of {limit} bytes",
                field_name.as_deref().unwrap_or("(unnamed)")
            ),
        ),
        M::StreamSizeExceeded { limit } => ApiError::new(
            ErrorKind::FileTooLarge,
            format!("the body is larger than the limit of {limit} bytes"),
        ),
        M::StreamReadFailed(cause) => match cause.downcast_ref::<FormLimit>() {
            Some(limit) => (*limit).into(),
            None => crate::upload::body::client_failed(cause, "request body"),
        },
        other => invalid(format!("the multipart body is malformed: {other}")),
    }
}

/// [`from_multer`] for an error that came through a boxed body error.
pub fn from_boxed(e: &BoxError) -> ApiError {
    match e.downcast_ref::<multer::Error>() {
        Some(m) => from_multer(m),
        None => crate::upload::body::client_failed(e, "request body"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_from_a_table() {
        let cases: &[(Option<&str>, Result<FormType, ErrorKind>)] = &[
            (None, Ok(FormType::Sniff)),
            (Some("multipart/form-data"), Ok(FormType::Sniff)),
            (
                Some("multipart/form-data; boundary=abc"),
                Ok(FormType::Boundary("abc".into())),
            ),
            (
                Some("Multipart/Form-Data; charset=utf-8; boundary=\"a b:c\""),
                Ok(FormType::Boundary("a b:c".into())),
            ),
            (
                Some("multipart/form-data; boundary=----WebKitFormBoundaryAbC123"),
                Ok(FormType::Boundary("----WebKitFormBoundaryAbC123".into())),
            ),
            (
                Some("application/octet-stream"),
                Err(ErrorKind::MultipartInvalid),
            ),
            (
                Some("multipart/mixed; boundary=x"),
                Err(ErrorKind::MultipartInvalid),
            ),
            (
                Some("multipart/form-data; boundary=\"\""),
                Err(ErrorKind::MultipartInvalid),
            ),
            (Some("??"), Err(ErrorKind::MultipartInvalid)),
        ];
        for (ct, want) in cases {
            let got = form_type(*ct).map_err(|e| e.kind());
            assert_eq!(&got, want, "{ct:?}");
        }
        let long = format!("multipart/form-data; boundary={}", "a".repeat(71));
        assert!(form_type(Some(&long)).is_err());
    }

    #[test]
    fn first_lines_from_a_table() {
        let cases: &[(&[u8], FirstLine)] = &[
            (b"", FirstLine::More),
            (b"-", FirstLine::More),
            (b"--abc", FirstLine::More),
            (
                b"--abc\r\nContent-Disposition",
                FirstLine::Boundary("abc".into()),
            ),
            (b"--abc\nx", FirstLine::Boundary("abc".into())),
            (b"--abc  \r\n", FirstLine::Boundary("abc".into())),
            (b"x-abc\r\n", FirstLine::Invalid),
            (b"ab", FirstLine::Invalid),
            (b"--\r\n", FirstLine::Invalid),
            (b"--a\x00b\r\n", FirstLine::Invalid),
        ];
        for (head, want) in cases {
            assert_eq!(&boundary_from_first_line(head), want, "{head:?}");
        }
        let long = format!("--{}", "a".repeat(80));
        assert_eq!(
            boundary_from_first_line(long.as_bytes()),
            FirstLine::Invalid
        );
    }

    async fn parse(
        form: FormType,
        chunks: Vec<&'static [u8]>,
        limits: FormLimits,
    ) -> Result<Option<(Option<String>, Vec<u8>)>, ApiError> {
        let stream = futures_util::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, std::io::Error>(Bytes::from_static(c))),
        );
        let mut form = open_form(form, stream, limits).await?;
        let Some(mut field) = next_file_part(&mut form).await? else {
            return Ok(None);
        };
        let name = field.file_name().map(str::to_owned);
        let mut data = Vec::new();
        while let Some(c) = field.chunk().await.map_err(|e| from_multer(&e))? {
            data.extend_from_slice(&c);
        }
        Ok(Some((name, data)))
    }

    fn scan(boundary: &str, frames: &[&[u8]]) -> (Result<(), FormLimit>, Stage) {
        let mut sc = FormScanner::new(boundary);
        for f in frames {
            if let Err(e) = sc.feed(f) {
                return (Err(e), sc.stage);
            }
        }
        (Ok(()), sc.stage)
    }

    /// A form within the limits, cut into two frames at every position and into 1-byte
    /// frames: the scanner follows it to its epilogue.
    #[test]
    fn scanner_follows_forms_split_anywhere() {
        let mut form =
            b"preamble\r\n--XyZ \t\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n\
            1\r\n-XyZ\r\n--Xy\r\n\r\n\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"\r\n\
            X-Long: "
                .to_vec();
        form.extend_from_slice(&[b'h'; MAX_PART_HEADER - 200]);
        form.extend_from_slice(b"\r\n\r\n--XyZ-\r\r\n--XyZ--\r\nepilogue --XyZ\r\n");
        assert_eq!(scan("XyZ", &[&form]), (Ok(()), Stage::Epilogue));
        for cut in 0..form.len() {
            let (a, b) = form.split_at(cut);
            assert_eq!(
                scan("XyZ", &[a, b]),
                (Ok(()), Stage::Epilogue),
                "cut at {cut}"
            );
        }
        let bytes: Vec<&[u8]> = form.chunks(1).collect();
        assert_eq!(scan("XyZ", &bytes), (Ok(()), Stage::Epilogue));
    }

    #[test]
    fn scanner_limits() {
        let long = vec![b'a'; MAX_PART_HEADER + 1];
        // A header that never ends, in one frame and byte by byte.
        let mut never = b"--b\r\nContent-Disposition: form-data; name=\"file\"\r\nX-Pad: ".to_vec();
        never.extend_from_slice(&long);
        assert_eq!(scan("b", &[&never]).0, Err(FormLimit::Header));
        let bytes: Vec<&[u8]> = never.chunks(1).collect();
        assert_eq!(scan("b", &bytes).0, Err(FormLimit::Header));
        // No headers at all (multer looks for CRLF CRLF *after* the delimiter line), then
        // endless bytes: still a header block for multer, so for the scanner.
        let mut empty = b"--b\r\n\r\n".to_vec();
        empty.extend_from_slice(&long);
        assert_eq!(scan("b", &[&empty]).0, Err(FormLimit::Header));
        // Endless transport padding, or a malformed delimiter line.
        let mut padded = b"--b".to_vec();
        padded.extend_from_slice(&[b' '; MAX_PART_HEADER + 1]);
        assert_eq!(scan("b", &[&padded]).0, Err(FormLimit::Header));
        let mut odd = b"--b-x".to_vec();
        odd.extend_from_slice(&long);
        assert_eq!(scan("b", &[&odd]).0, Err(FormLimit::Header));
        // A header block of exactly the limit passes (CRLF after the delimiter included).
        let mut exact = b"--b\r\nX: ".to_vec();
        exact.resize(3 + MAX_PART_HEADER - 4, b'v');
        exact.extend_from_slice(b"\r\n\r\ndata");
        assert_eq!(scan("b", &[&exact]), (Ok(()), Stage::Data));
        exact.insert(8, b'v');
        assert_eq!(scan("b", &[&exact]).0, Err(FormLimit::Header));
        // The preamble.
        let mut pre = vec![b'p'; MAX_PREAMBLE + 1];
        pre.extend_from_slice(b"--b\r\n");
        assert_eq!(scan("b", &[&pre]).0, Err(FormLimit::Preamble));
        // The parts.
        let part = b"--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n1\r\n";
        let many = part.repeat(MAX_FORM_PARTS);
        assert_eq!(scan("b", &[&many]), (Ok(()), Stage::Data));
        let more = part.repeat(MAX_FORM_PARTS + 1);
        assert_eq!(scan("b", &[&more]).0, Err(FormLimit::Parts));
        // Data is never limited.
        let mut data = b"--b\r\n\r\n\r\n\r\n".to_vec();
        data.extend_from_slice(&vec![b'd'; 4 * MAX_PART_HEADER]);
        assert_eq!(scan("b", &[&data]), (Ok(()), Stage::Data));
    }

    /// Through `open_form`: the limit surfaces as 400 `multipart_invalid` from multer.
    #[tokio::test]
    async fn endless_headers_are_refused_through_multer() {
        let mut never = b"--b\r\nContent-Disposition: form-data; name=\"file\"\r\nX-Pad: ".to_vec();
        never.extend_from_slice(&vec![b'a'; 1 << 20]);
        let leaked: &'static [u8] = Box::leak(never.into_boxed_slice());
        let limits = FormLimits {
            body: 64 << 20,
            file: 1 << 20,
        };
        let e = parse(
            FormType::Boundary("b".into()),
            leaked.chunks(1000).collect(),
            limits,
        )
        .await
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::MultipartInvalid);
        assert!(
            e.message().contains("headers are longer"),
            "{}",
            e.message()
        );
    }

    const LIMITS: FormLimits = FormLimits {
        body: 1 << 20,
        file: 1 << 16,
    };

    #[tokio::test]
    async fn forms_with_tricky_boundaries() {
        // The boundary appears almost-but-not-quite inside the file; the body is split
        // in the middle of the delimiter; a text field comes first.
        let body: &[&'static [u8]] = &[
            b"--XyZ\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n--X",
            b"yZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.bin\"\r\n",
            b"Content-Type: application/octet-stream\r\n\r\n--XyZ-not\r\n-XyZ\r\n--Xy",
            b"Y\r\r\n--XyZ--\r\n",
        ];
        let got = parse(FormType::Sniff, body.to_vec(), LIMITS)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.0.as_deref(), Some("a.bin"));
        assert_eq!(got.1, b"--XyZ-not\r\n-XyZ\r\n--XyY\r");
        let got = parse(FormType::Boundary("XyZ".into()), body.to_vec(), LIMITS)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.1, b"--XyZ-not\r\n-XyZ\r\n--XyY\r");
    }

    #[tokio::test]
    async fn bad_forms() {
        let no_file: Vec<&'static [u8]> =
            vec![b"--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n1\r\n--b--\r\n"];
        assert!(
            parse(FormType::Sniff, no_file, LIMITS)
                .await
                .unwrap()
                .is_none()
        );
        let not_form: Vec<&'static [u8]> = vec![b"\x89PNG\r\n"];
        assert_eq!(
            parse(FormType::Sniff, not_form, LIMITS)
                .await
                .unwrap_err()
                .kind(),
            ErrorKind::MultipartInvalid
        );
        let truncated: Vec<&'static [u8]> =
            vec![b"--b\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nabc"];
        assert_eq!(
            parse(FormType::Sniff, truncated, LIMITS)
                .await
                .unwrap_err()
                .kind(),
            ErrorKind::MultipartInvalid
        );
        let big: Vec<&'static [u8]> = vec![
            b"--b\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\n",
            &[b'x'; 1 << 17],
            b"\r\n--b--\r\n",
        ];
        assert_eq!(
            parse(FormType::Sniff, big, LIMITS)
                .await
                .unwrap_err()
                .kind(),
            ErrorKind::FileTooLarge
        );
        let big_other: Vec<&'static [u8]> = vec![
            b"--b\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\n",
            &[b'x'; 1 << 17],
            b"\r\n--b--\r\n",
        ];
        assert_eq!(
            parse(FormType::Sniff, big_other, LIMITS)
                .await
                .unwrap_err()
                .kind(),
            ErrorKind::FileTooLarge
        );
        let empty: Vec<&'static [u8]> = vec![];
        assert_eq!(
            parse(FormType::Sniff, empty, LIMITS)
                .await
                .unwrap_err()
                .kind(),
            ErrorKind::MultipartInvalid
        );
    }
}
