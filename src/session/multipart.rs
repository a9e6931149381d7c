//! The `multipart/form-data` body of `POST /store/single`, parsed by [`multer`] as it streams.
//!
//! One addition to what `multer` does: ittybit's "Uploading Files" guide sets the header
//! `Content-Type: multipart/form-data` by hand on an `XMLHttpRequest` that sends a
//! `FormData`, and browsers then keep that header *without* its `boundary` parameter. Such a
//! body still starts with its delimiter line `--<boundary>`, so the boundary is taken from
//! there (RFC 2046 §5.1.1: 1 to 70 characters of `bcharsnospace`/space, not ending in space).

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use multer::{Constraints, Multipart, SizeLimit};

use crate::body::BoxError;
use crate::error::{ApiError, ErrorKind};

/// The longest boundary (RFC 2046).
pub const MAX_BOUNDARY: usize = 70;

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

/// Opens the form: finds the boundary (from the header, else from the body's first line,
/// putting the bytes read back in front of the stream) and sets the limits.
pub async fn open_form<S, E>(
    form: FormType,
    body: S,
    limits: FormLimits,
) -> Result<Multipart<'static>, ApiError>
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
    let constraints = Constraints::new().size_limit(
        SizeLimit::new()
            .whole_stream(limits.body)
            .per_field(limits.file),
    );
    Ok(Multipart::with_constraints(stream, boundary, constraints))
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
        while let Some(chunk) = field.chunk().await.map_err(|e| from_multer(&e))? {
            drop(chunk);
        }
    }
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
        M::StreamReadFailed(cause) => crate::upload::body::client_failed(cause, "request body"),
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
