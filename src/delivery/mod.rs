//! Delivery: `GET`/`HEAD` of a stored file (PROTOCOL.md §8).
//!
//! [`deliver`] streams the file from the [`Storage`] in the storage's own bounded frames
//! (never buffering it), with `Content-Type`, `Content-Length`, a strong `ETag`,
//! `Last-Modified` and `Accept-Ranges: bytes`. The request's preconditions are evaluated in
//! the order of RFC 9110 §13.2.2 by the pure function [`decide`]:
//!
//! 1. `If-Match` (strong comparison), else `If-Unmodified-Since` → `412` when false;
//! 2. `If-None-Match` (weak comparison, lists, `*`), else `If-Modified-Since` (second
//!    precision) → `304 Not Modified` when the client's copy is current;
//! 3. `Range` ([`parse_range`]): one `bytes` range → `206 Partial Content` with
//!    `Content-Range`, an unsatisfiable one → `416` with `Content-Range: bytes */<size>`;
//!    several ranges, another unit or a malformed header are ignored (`200` with the whole
//!    file, as RFC 9110 §14.2 allows). `If-Range` (a strong etag, or an HTTP-date equal to
//!    `Last-Modified`) must hold for the range to be served, else the whole file is.
//!
//! `HEAD` answers exactly what `GET` would, ranges included, with no body (its
//! `Content-Length` is that of the body a `GET` would get).
//!
//! Scripts and style sheets are delivered inert: a stored type that a browser would run as a
//! script or apply as a style sheet (a JavaScript MIME type, `text/css`) is sent as
//! `text/plain; charset=utf-8` ([`inert_content_type`]), unless the app opts in
//! ([`DeliveryOptions::active_types`], `Uploads::active_types`). The sandboxing
//! `Content-Security-Policy` every answer carries governs a file opened as a document
//! (HTML, SVG, XML: markup is active only as a document, where the sandbox applies); it does
//! not apply when another page of the app's origin includes the file with `<script src>` or
//! `<link rel=stylesheet>`, where only the type (with `nosniff`) keeps it from running. The
//! File object's `type` still says what the bytes are.

use std::ops::Range;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::TryStreamExt;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use http_body::Frame;
use http_body_util::StreamBody;

use crate::body::ResponseBody;
use crate::error::{ApiError, ErrorKind};
use crate::path::FilePath;
use crate::response::{Answer, RequestFacts, ResponseStyle};
use crate::storage::{ObjectMeta, Storage};

/// The `Content-Security-Policy` of every delivered file: no script, no subresource, and a
/// unique origin for whatever the browser renders.
pub const DELIVERY_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; sandbox";
/// The type a script or style sheet is delivered with ([`inert_content_type`]).
pub const INERT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

/// How a file is delivered ([`deliver_with`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeliveryOptions {
    /// Deliver scripts and style sheets with their stored type, so that a page of the app's
    /// origin can run them (`<script src>`, `<link rel=stylesheet>`, workers). Default
    /// `false`: they are delivered as [`INERT_CONTENT_TYPE`] (see the [module docs](self)).
    pub active_types: bool,
}

impl DeliveryOptions {
    /// Sets [`active_types`](Self::active_types).
    #[must_use]
    pub fn active_types(mut self, on: bool) -> Self {
        self.active_types = on;
        self
    }
}

/// The type to deliver instead of `content_type` when that one is active on the app's
/// origin as a subresource: a JavaScript MIME type (WHATWG MIME Sniffing's list, e.g.
/// `text/javascript`, `application/javascript`, `application/x-javascript`) or `text/css`,
/// whatever its parameters and letter case. `None` for every other type.
///
/// ```
/// use tower_uploads::delivery::inert_content_type;
///
/// assert_eq!(inert_content_type("text/javascript"), Some("text/plain; charset=utf-8"));
/// assert_eq!(inert_content_type("Text/CSS; charset=utf-8"), Some("text/plain; charset=utf-8"));
/// assert_eq!(inert_content_type("image/png"), None);
/// ```
pub fn inert_content_type(content_type: &str) -> Option<&'static str> {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim_matches([' ', '\t']);
    ACTIVE_TYPES
        .iter()
        .any(|t| t.eq_ignore_ascii_case(essence))
        .then_some(INERT_CONTENT_TYPE)
}

/// The types a browser runs or applies as a subresource: `text/css` and the JavaScript MIME
/// types of WHATWG MIME Sniffing.
const ACTIVE_TYPES: &[&str] = &[
    "text/css",
    "application/ecmascript",
    "application/javascript",
    "application/x-ecmascript",
    "application/x-javascript",
    "text/ecmascript",
    "text/javascript",
    "text/javascript1.0",
    "text/javascript1.1",
    "text/javascript1.2",
    "text/javascript1.3",
    "text/javascript1.4",
    "text/javascript1.5",
    "text/jscript",
    "text/livescript",
    "text/x-ecmascript",
    "text/x-javascript",
];

/// How often [`deliver`] starts over when the file is replaced while it is being opened.
const ATTEMPTS: usize = 3;

/// The first second that an HTTP-date cannot show (year 10000).
const MAX_HTTP_DATE_SECS: u64 = 253_402_300_800;

/// What a `Range` header asks of a file of a given size ([`parse_range`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[doc(hidden)]
pub enum ByteRange {
    /// The whole file: no usable `Range` (absent, another unit, malformed, or several
    /// ranges).
    Full,
    /// These bytes (`start..end`, end exclusive; never empty).
    Partial(Range<u64>),
    /// A single, well-formed range that lies outside the file: `416`.
    Unsatisfiable,
}

/// Reads a `Range` header value against a file of `size` bytes: `bytes=a-b` (inclusive,
/// `b` clamped to the file), `bytes=a-` (from `a` to the end) or `bytes=-n` (the last `n`
/// bytes). The unit is case-insensitive; numbers too large for `u64` count as infinite.
///
/// A range that starts at or after the end of the file, a suffix of `0` bytes, and any
/// range of an empty file are [`ByteRange::Unsatisfiable`]. Several ranges, a malformed
/// value or another unit give [`ByteRange::Full`] (the header is ignored).
///
/// ```
/// use tower_uploads::delivery::{ByteRange, parse_range};
///
/// assert_eq!(parse_range("bytes=0-99", 1000), ByteRange::Partial(0..100));
/// assert_eq!(parse_range("bytes=-10", 1000), ByteRange::Partial(990..1000));
/// assert_eq!(parse_range("bytes=1000-", 1000), ByteRange::Unsatisfiable);
/// assert_eq!(parse_range("bytes=0-1,5-6", 1000), ByteRange::Full);
/// ```
#[doc(hidden)]
pub fn parse_range(value: &str, size: u64) -> ByteRange {
    let Some((unit, set)) = value.trim().split_once('=') else {
        return ByteRange::Full;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return ByteRange::Full;
    }
    let mut specs = set.split(',').map(str::trim).filter(|s| !s.is_empty());
    let (Some(spec), None) = (specs.next(), specs.next()) else {
        return ByteRange::Full;
    };
    let Some((first, last)) = spec.split_once('-') else {
        return ByteRange::Full;
    };
    match (first.is_empty(), last.is_empty()) {
        (true, true) => ByteRange::Full,
        (true, false) => match number(last) {
            None => ByteRange::Full,
            Some(0) => ByteRange::Unsatisfiable,
            Some(_) if size == 0 => ByteRange::Unsatisfiable,
            Some(n) => ByteRange::Partial(size - n.min(size)..size),
        },
        (false, true) => match number(first) {
            None => ByteRange::Full,
            Some(a) if a >= size => ByteRange::Unsatisfiable,
            Some(a) => ByteRange::Partial(a..size),
        },
        (false, false) => match (number(first), number(last)) {
            (Some(a), Some(b)) if a <= b => {
                if a >= size {
                    ByteRange::Unsatisfiable
                } else {
                    ByteRange::Partial(a..b.min(size - 1) + 1)
                }
            }
            _ => ByteRange::Full,
        },
    }
}

/// A run of ASCII digits, saturating at `u64::MAX`.
fn number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some(s.bytes().fold(0u64, |n, c| {
        n.saturating_mul(10).saturating_add(u64::from(c - b'0'))
    }))
}

/// The outcome of a `GET`/`HEAD` request's preconditions and `Range` ([`decide`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[doc(hidden)]
pub enum Decision {
    /// `200` with the whole file.
    Full,
    /// `206` with these bytes (`start..end`, end exclusive).
    Partial(Range<u64>),
    /// `304 Not Modified`: the client's copy is current.
    NotModified,
    /// `412 Precondition Failed` (`If-Match` / `If-Unmodified-Since`).
    PreconditionFailed,
    /// `416 Range Not Satisfiable`.
    Unsatisfiable,
}

/// Evaluates the preconditions and `Range` of a request for the stored version `meta`, in
/// the order of RFC 9110 §13.2.2 (see the [module docs](self)). Only `GET` and `HEAD` get
/// `304` or ranges; header values that cannot be read are ignored (a malformed
/// `If-Match` matches nothing).
#[doc(hidden)]
pub fn decide(method: &Method, headers: &HeaderMap, meta: &ObjectMeta) -> Decision {
    let read = *method == Method::GET || *method == Method::HEAD;
    let modified = unix_secs(meta.modified);

    // 1. If-Match, else If-Unmodified-Since.
    if headers.contains_key(header::IF_MATCH) {
        if !list_matches(headers, header::IF_MATCH, &meta.etag, false) {
            return Decision::PreconditionFailed;
        }
    } else if let (Some(since), Some(modified)) =
        (single_date(headers, header::IF_UNMODIFIED_SINCE), modified)
        && modified > since
    {
        return Decision::PreconditionFailed;
    }

    // 2. If-None-Match, else If-Modified-Since.
    if headers.contains_key(header::IF_NONE_MATCH) {
        if list_matches(headers, header::IF_NONE_MATCH, &meta.etag, true) {
            return if read {
                Decision::NotModified
            } else {
                Decision::PreconditionFailed
            };
        }
    } else if read
        && let (Some(since), Some(modified)) =
            (single_date(headers, header::IF_MODIFIED_SINCE), modified)
        && modified <= since
    {
        return Decision::NotModified;
    }

    // 3. Range, if If-Range holds.
    if !read {
        return Decision::Full;
    }
    let mut ranges = headers.get_all(header::RANGE).iter();
    let (Some(range), None) = (ranges.next(), ranges.next()) else {
        return Decision::Full;
    };
    let Ok(range) = range.to_str() else {
        return Decision::Full;
    };
    if headers.contains_key(header::IF_RANGE) && !if_range_holds(headers, meta) {
        return Decision::Full;
    }
    match parse_range(range, meta.size) {
        ByteRange::Full => Decision::Full,
        ByteRange::Partial(r) => Decision::Partial(r),
        ByteRange::Unsatisfiable => Decision::Unsatisfiable,
    }
}

/// Seconds since the epoch (`None` before it).
fn unix_secs(t: SystemTime) -> Option<u64> {
    t.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

/// The date of a header sent once with a valid HTTP-date, in seconds since the epoch.
fn single_date(headers: &HeaderMap, name: header::HeaderName) -> Option<u64> {
    let mut values = headers.get_all(name).iter();
    let (Some(v), None) = (values.next(), values.next()) else {
        return None;
    };
    let date = httpdate::parse_http_date(v.to_str().ok()?.trim()).ok()?;
    unix_secs(date)
}

/// Whether an entity-tag list header (`If-Match`, `If-None-Match`; all its lines) names
/// `etag` or is `*`. `weak` selects the weak comparison (a `W/` tag may match); with the
/// strong one a `W/` tag never matches.
fn list_matches(headers: &HeaderMap, name: header::HeaderName, etag: &str, weak: bool) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| etag_list_matches(v, etag, weak))
}

/// Whether one entity-tag list value (`"a", W/"b"`, `*`) names `etag`. Unquoted tags are
/// accepted too (leniently, up to the next comma).
fn etag_list_matches(list: &str, etag: &str, weak: bool) -> bool {
    let mut rest = list;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            return false;
        }
        let (is_weak, tag_start) = match rest.strip_prefix("W/") {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let tag;
        if let Some(quoted) = tag_start.strip_prefix('"') {
            let Some(end) = quoted.find('"') else {
                return false;
            };
            tag = &quoted[..end];
            rest = &quoted[end + 1..];
        } else {
            let end = tag_start.find(',').unwrap_or(tag_start.len());
            tag = tag_start[..end].trim();
            rest = &tag_start[end..];
            if tag == "*" && !is_weak {
                return true;
            }
        }
        if !tag.is_empty() && tag == etag && (weak || !is_weak) {
            return true;
        }
    }
}

/// `If-Range`: a strong etag equal to the current one, or an HTTP-date equal to
/// `Last-Modified`. Anything else (a weak tag, garbage, several lines) does not hold.
fn if_range_holds(headers: &HeaderMap, meta: &ObjectMeta) -> bool {
    let mut values = headers.get_all(header::IF_RANGE).iter();
    let (Some(v), None) = (values.next(), values.next()) else {
        return false;
    };
    let Ok(v) = v.to_str() else {
        return false;
    };
    let v = v.trim();
    if v.starts_with("W/") {
        return false;
    }
    if let Some(quoted) = v.strip_prefix('"') {
        return quoted.strip_suffix('"') == Some(meta.etag.as_str()) && !meta.etag.is_empty();
    }
    match (httpdate::parse_http_date(v).ok(), unix_secs(meta.modified)) {
        (Some(date), Some(modified)) => unix_secs(date) == Some(modified),
        _ => false,
    }
}

/// Answers a `GET` or `HEAD` of the file at `path`: see the [module docs](self).
///
/// Returns `Ok` for `200`, `206`, `304` and `416` (whose body is a JSON error in `style`,
/// for the request described by `facts`, with `Content-Range: bytes */<size>`), and `Err`
/// for a missing file (`404 file_not_found`, also when it disappears while being opened),
/// a failed `If-Match`/`If-Unmodified-Since` (`412`), another method (`405`) and storage
/// failures.
///
/// Scripts and style sheets are delivered inert; [`deliver_with`] can opt out.
#[doc(hidden)]
pub async fn deliver(
    storage: &dyn Storage,
    path: &FilePath,
    method: &Method,
    headers: &HeaderMap,
    style: ResponseStyle,
    facts: &RequestFacts,
) -> Result<Response<ResponseBody>, ApiError> {
    deliver_with(
        storage,
        path,
        method,
        headers,
        style,
        facts,
        DeliveryOptions::default(),
    )
    .await
}

/// [`deliver`] with [`DeliveryOptions`].
#[doc(hidden)]
pub async fn deliver_with(
    storage: &dyn Storage,
    path: &FilePath,
    method: &Method,
    headers: &HeaderMap,
    style: ResponseStyle,
    facts: &RequestFacts,
    options: DeliveryOptions,
) -> Result<Response<ResponseBody>, ApiError> {
    if *method != Method::GET && *method != Method::HEAD {
        return Err(ApiError::new(
            ErrorKind::MethodNotAllowed,
            "a stored file is read with GET or HEAD",
        ));
    }
    let mut meta = storage.head(path).await?.ok_or_else(not_found)?;
    for _ in 0..ATTEMPTS {
        let range = match decide(method, headers, &meta) {
            Decision::Full => None,
            Decision::Partial(r) => Some(r),
            Decision::NotModified => return Ok(not_modified(&meta)),
            Decision::PreconditionFailed => {
                return Err(ApiError::new(
                    ErrorKind::PreconditionFailed,
                    "the file at this path does not match the request's precondition",
                ));
            }
            Decision::Unsatisfiable => return Ok(unsatisfiable(&meta, style, facts)),
        };
        if *method == Method::HEAD || (range.is_none() && meta.size == 0) {
            return Ok(content(&meta, range, ResponseBody::empty(), options));
        }
        let read = match storage.read(path, range.clone()).await {
            Ok(read) => read,
            Err(e) => {
                // A file replaced by a shorter one between head and read can make the range
                // invalid: start over with the new version; else report the failure.
                match storage.head(path).await {
                    Ok(Some(now)) if now.etag != meta.etag => {
                        meta = now;
                        continue;
                    }
                    Ok(None) => return Err(not_found()),
                    _ => return Err(e.into()),
                }
            }
        };
        let Some((now, stream)) = read else {
            return Err(not_found());
        };
        if now.etag == meta.etag && now.size == meta.size {
            let delivered = crate::metrics::bytes_delivered();
            let body = ResponseBody::new(StreamBody::new(stream.map_ok(move |bytes| {
                delivered.increment(bytes.len() as u64);
                Frame::data(bytes)
            })));
            return Ok(content(&now, range, body, options));
        }
        // Replaced between head and read: decide again for the version that was opened.
        meta = now;
    }
    Err(ApiError::internal(
        &"the file was replaced during every attempt to read it",
    ))
}

fn not_found() -> ApiError {
    ApiError::new(ErrorKind::FileNotFound, "no file at this path")
}

/// `ETag` and `Last-Modified` of `meta`.
fn validators(meta: &ObjectMeta, headers: &mut HeaderMap) {
    if !meta.etag.is_empty()
        && !meta.etag.contains('"')
        && let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", meta.etag))
    {
        headers.insert(header::ETAG, v);
    }
    if let Some(v) = last_modified(meta.modified) {
        headers.insert(header::LAST_MODIFIED, v);
    }
}

/// The HTTP-date of `t` (whole seconds), when it can be written as one.
fn last_modified(t: SystemTime) -> Option<HeaderValue> {
    let secs = unix_secs(t).filter(|s| *s < MAX_HTTP_DATE_SECS)?;
    let date = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs));
    HeaderValue::from_str(&date).ok()
}

/// A `200` (whole file) or `206` (`range`) response with `body`.
fn content(
    meta: &ObjectMeta,
    range: Option<Range<u64>>,
    body: ResponseBody,
    options: DeliveryOptions,
) -> Response<ResponseBody> {
    let mut res = Response::new(body);
    let h = res.headers_mut();
    let inert = (!options.active_types)
        .then(|| inert_content_type(&meta.content_type))
        .flatten();
    let content_type = match inert {
        Some(inert) => HeaderValue::from_static(inert),
        None => HeaderValue::from_str(&meta.content_type)
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| HeaderValue::from_static("application/octet-stream")),
    };
    h.insert(header::CONTENT_TYPE, content_type);
    let length = match &range {
        Some(r) => {
            let last = r.end.saturating_sub(1);
            let v = format!("bytes {}-{}/{}", r.start, last, meta.size);
            if let Ok(v) = HeaderValue::from_str(&v) {
                h.insert(header::CONTENT_RANGE, v);
            }
            r.end - r.start
        }
        None => meta.size,
    };
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Uploaded HTML or SVG is delivered from the app's own origin: a sandbox with no
    // sources means a script in it cannot run or reach the app (SECURITY.md).
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(DELIVERY_CSP),
    );
    validators(meta, h);
    *res.status_mut() = if range.is_some() {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    res
}

/// A `304` with the validators and no body.
fn not_modified(meta: &ObjectMeta) -> Response<ResponseBody> {
    let mut res = Response::new(ResponseBody::empty());
    *res.status_mut() = StatusCode::NOT_MODIFIED;
    validators(meta, res.headers_mut());
    res
}

/// A `416` JSON error with `Content-Range: bytes */<size>`.
fn unsatisfiable(
    meta: &ObjectMeta,
    style: ResponseStyle,
    facts: &RequestFacts,
) -> Response<ResponseBody> {
    let err = ApiError::new(
        ErrorKind::RangeNotSatisfiable,
        format!(
            "the requested range lies outside the file's {} bytes",
            meta.size
        ),
    );
    let mut res = Answer::new(style, facts).error(&err);
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("bytes */{}", meta.size)) {
        h.insert(header::CONTENT_RANGE, v);
    }
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use bytes::Bytes;
    use http_body_util::BodyExt;
    use std::sync::Mutex;

    use crate::storage::{
        ByteStream, Claim, MemoryStorage, PublishOptions, Record, RecordKey, RecordMode,
        StorageError, StorageExt, StorageResult, UploadId, UploadSpec, UploadWriter,
    };
    use std::sync::Arc;

    /// Seconds of the test file's `modified` (it also has 0.5 s more).
    const T: u64 = 1_700_000_000;

    fn date(secs: u64) -> String {
        httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs))
    }

    fn meta(size: u64, etag: &str) -> ObjectMeta {
        ObjectMeta {
            size,
            etag: etag.into(),
            modified: UNIX_EPOCH + Duration::from_millis(T * 1000 + 500),
            content_type: "text/plain".into(),
            attributes: Bytes::new(),
        }
    }

    fn headers(list: &[(&str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in list {
            h.append(
                header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(value).unwrap(),
            );
        }
        h
    }

    #[test]
    fn range_table() {
        use ByteRange::*;
        let rows: &[(&str, u64, ByteRange)] = &[
            ("bytes=0-0", 10, Partial(0..1)),
            ("bytes=0-9", 10, Partial(0..10)),
            ("bytes=2-5", 10, Partial(2..6)),
            ("bytes=5-100", 10, Partial(5..10)),
            ("bytes=9-9", 10, Partial(9..10)),
            ("bytes=5-", 10, Partial(5..10)),
            ("bytes=0-", 10, Partial(0..10)),
            ("bytes=-3", 10, Partial(7..10)),
            ("bytes=-10", 10, Partial(0..10)),
            ("bytes=-11", 10, Partial(0..10)),
            ("BYTES=1-2", 10, Partial(1..3)),
            (" bytes = 1-2 ", 10, Partial(1..3)),
            ("bytes=1-2,", 10, Partial(1..3)),
            ("bytes=0-99999999999999999999999", 10, Partial(0..10)),
            ("bytes=-99999999999999999999999", 10, Partial(0..10)),
            ("bytes=10-", 10, Unsatisfiable),
            ("bytes=10-20", 10, Unsatisfiable),
            ("bytes=99999999999999999999999-", 10, Unsatisfiable),
            ("bytes=-0", 10, Unsatisfiable),
            ("bytes=0-", 0, Unsatisfiable),
            ("bytes=0-0", 0, Unsatisfiable),
            ("bytes=-1", 0, Unsatisfiable),
            ("bytes=0-1,3-4", 10, Full),
            ("bytes=0-1, -2", 10, Full),
            ("bytes=5-2", 10, Full),
            ("bytes=-", 10, Full),
            ("bytes=", 10, Full),
            ("bytes=a-b", 10, Full),
            ("bytes=1-2-3", 10, Full),
            ("bytes=+1-2", 10, Full),
            ("bytes=1 -2", 10, Full),
            ("bytes 1-2", 10, Full),
            ("items=0-1", 10, Full),
            ("", 10, Full),
            ("bytes=0-1,3-4", 0, Full),
        ];
        for (value, size, want) in rows {
            assert_eq!(&parse_range(value, *size), want, "{value:?} of {size}");
        }
    }

    #[test]
    fn etag_list_table() {
        let rows: &[(&str, bool, bool)] = &[
            // list, weak comparison, matches "abc"
            ("\"abc\"", false, true),
            ("\"abc\"", true, true),
            ("W/\"abc\"", true, true),
            ("W/\"abc\"", false, false),
            ("\"x\", \"abc\"", false, true),
            ("\"x\",\"y\"", true, false),
            ("*", false, true),
            (" * ", true, true),
            ("abc", true, true),
            ("\"ab", true, false),
            ("\"a,b\", \"abc\"", true, true),
            ("\"\"", true, false),
            ("W/", true, false),
            (",,,", true, false),
            ("\"ABC\"", true, false),
        ];
        for (list, weak, want) in rows {
            assert_eq!(
                etag_list_matches(list, "abc", *weak),
                *want,
                "{list:?} weak={weak}"
            );
        }
    }

    type Headers<'a> = Vec<(&'a str, &'a [u8])>;

    #[test]
    fn decision_table() {
        use Decision::*;
        let lm = date(T);
        let before = date(T - 1);
        let after = date(T + 1);
        let (get, head, post) = (Method::GET, Method::HEAD, Method::POST);
        #[rustfmt::skip]
        let rows: Vec<(&Method, Headers, Decision)> = vec![
            (&get, vec![], Full),
            (&head, vec![], Full),
            (&get, vec![("if-none-match", b"\"v1\"")], NotModified),
            (&head, vec![("if-none-match", b"\"v1\"")], NotModified),
            (&get, vec![("if-none-match", b"W/\"v1\"")], NotModified),
            (&get, vec![("if-none-match", b"\"v0\", \"v1\"")], NotModified),
            (&get, vec![("if-none-match", b"*")], NotModified),
            (&get, vec![("if-none-match", b"\"v0\"")], Full),
            (&get, vec![("if-none-match", b"\"v0\""), ("if-none-match", b"\"v1\"")], NotModified),
            (&get, vec![("if-none-match", b"\"v0\""), ("if-modified-since", lm.as_bytes())], Full),
            (&post, vec![("if-none-match", b"\"v1\"")], PreconditionFailed),
            (&get, vec![("if-modified-since", lm.as_bytes())], NotModified),
            (&get, vec![("if-modified-since", after.as_bytes())], NotModified),
            (&get, vec![("if-modified-since", before.as_bytes())], Full),
            (&get, vec![("if-modified-since", b"yesterday")], Full),
            (&get, vec![("if-modified-since", lm.as_bytes()), ("if-modified-since", lm.as_bytes())], Full),
            (&get, vec![("if-match", b"\"v1\"")], Full),
            (&get, vec![("if-match", b"*")], Full),
            (&get, vec![("if-match", b"W/\"v1\"")], PreconditionFailed),
            (&get, vec![("if-match", b"\"v0\"")], PreconditionFailed),
            (&get, vec![("if-match", b"\xff")], PreconditionFailed),
            (&get, vec![("if-unmodified-since", before.as_bytes())], PreconditionFailed),
            (&get, vec![("if-unmodified-since", lm.as_bytes())], Full),
            (&get, vec![("if-match", b"\"v1\""), ("if-unmodified-since", before.as_bytes())], Full),
            (&get, vec![("range", b"bytes=0-9")], Partial(0..10)),
            (&head, vec![("range", b"bytes=-1")], Partial(999..1000)),
            (&post, vec![("range", b"bytes=0-9")], Full),
            (&get, vec![("range", b"bytes=1000-")], Unsatisfiable),
            (&get, vec![("range", b"bytes=0-1,4-5")], Full),
            (&get, vec![("range", b"bytes=0-1"), ("range", b"bytes=4-5")], Full),
            (&get, vec![("range", b"bytes=\xff")], Full),
            (&get, vec![("range", b"bytes=0-9"), ("if-range", b"\"v1\"")], Partial(0..10)),
            (&get, vec![("range", b"bytes=0-9"), ("if-range", b"W/\"v1\"")], Full),
            (&get, vec![("range", b"bytes=0-9"), ("if-range", b"\"v0\"")], Full),
            (&get, vec![("range", b"bytes=0-9"), ("if-range", lm.as_bytes())], Partial(0..10)),
            (&get, vec![("range", b"bytes=0-9"), ("if-range", before.as_bytes())], Full),
            (&get, vec![("range", b"bytes=0-9"), ("if-range", after.as_bytes())], Full),
            (&get, vec![("range", b"bytes=0-9"), ("if-range", b"garbage")], Full),
            (&get, vec![("range", b"bytes=5000-"), ("if-range", b"\"v0\"")], Full),
            (&get, vec![("range", b"bytes=5000-"), ("if-range", b"\"v1\"")], Unsatisfiable),
            (&get, vec![("range", b"bytes=0-9"), ("if-none-match", b"\"v1\"")], NotModified),
            (&get, vec![("range", b"bytes=0-9"), ("if-none-match", b"\"v0\"")], Partial(0..10)),
        ];
        let m = meta(1000, "v1");
        for (i, (method, list, want)) in rows.into_iter().enumerate() {
            assert_eq!(
                decide(method, &headers(&list), &m),
                want,
                "row {i}: {method} {list:?}"
            );
        }
    }

    #[test]
    fn active_types_are_made_inert() {
        for t in [
            "text/javascript",
            "application/javascript; charset=utf-8",
            "Application/X-JavaScript",
            " text/css ;charset=utf-8",
            "text/javascript1.5",
            "text/ecmascript",
        ] {
            assert_eq!(inert_content_type(t), Some(INERT_CONTENT_TYPE), "{t}");
        }
        for t in [
            "",
            "text/plain",
            "text/html",
            "image/svg+xml",
            "application/json",
            "text/cssx",
            "text/javascript2",
            "application/octet-stream",
        ] {
            assert_eq!(inert_content_type(t), None, "{t}");
        }
    }

    #[test]
    fn validators_are_written_safely() {
        let mut h = HeaderMap::new();
        validators(&meta(1, "v1"), &mut h);
        assert_eq!(h[header::ETAG], "\"v1\"");
        assert_eq!(h[header::LAST_MODIFIED], date(T).as_str());
        // Hostile values: no header rather than a panic or a broken one.
        let mut odd = meta(1, "a\"b");
        odd.modified = UNIX_EPOCH - Duration::from_secs(1);
        let mut h = HeaderMap::new();
        validators(&odd, &mut h);
        assert!(h.is_empty());
        odd.etag = "line\nbreak".into();
        odd.modified = UNIX_EPOCH + Duration::from_secs(MAX_HTTP_DATE_SECS + 10);
        validators(&odd, &mut h);
        assert!(h.is_empty());
    }

    // ---- deliver ----

    fn facts() -> RequestFacts {
        RequestFacts {
            id: "req_test".into(),
            method: Method::GET,
            url: "/f.txt".into(),
            version: None,
        }
    }

    fn path() -> FilePath {
        FilePath::new("folder/f.txt").unwrap()
    }

    async fn memory_with(data: &'static [u8]) -> MemoryStorage {
        let memory = MemoryStorage::new();
        let storage = Arc::new(memory.clone());
        let path = path();
        let up = storage
            .open_upload(&path, UploadSpec::Single)
            .await
            .unwrap();
        let mut w = storage.writer(&up.id, 0).await.unwrap();
        w.write(Bytes::from_static(data)).await.unwrap();
        w.commit().await.unwrap();
        assert_eq!(storage.claim(&up.id).await.unwrap(), Claim::Won);
        storage
            .publish(
                &up.id,
                &path,
                data.len() as u64,
                PublishOptions {
                    content_type: "text/plain; charset=utf-8".into(),
                    ..PublishOptions::default()
                },
            )
            .await
            .unwrap();
        memory
    }

    async fn get(
        storage: &dyn Storage,
        method: Method,
        list: &[(&str, &[u8])],
    ) -> Result<(StatusCode, HeaderMap, Vec<u8>), ApiError> {
        let res = deliver(
            storage,
            &path(),
            &method,
            &headers(list),
            ResponseStyle::Bare,
            &facts(),
        )
        .await?;
        let (parts, body) = res.into_parts();
        let body = body.collect().await.unwrap().to_bytes().to_vec();
        Ok((parts.status, parts.headers, body))
    }

    const DATA: &[u8] = b"0123456789abcdefghij";

    #[tokio::test]
    async fn serves_whole_files_and_ranges() {
        let s = memory_with(DATA).await;
        let etag = s.head(&path()).await.unwrap().unwrap().etag;
        let quoted = format!("\"{etag}\"");

        let (status, h, body) = get(&s, Method::GET, &[]).await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, DATA);
        assert_eq!(h[header::CONTENT_TYPE], "text/plain; charset=utf-8");
        assert_eq!(h[header::CONTENT_LENGTH], "20");
        assert_eq!(h[header::ACCEPT_RANGES], "bytes");
        assert_eq!(h[header::ETAG], quoted.as_str());
        assert!(h.contains_key(header::LAST_MODIFIED));
        assert!(!h.contains_key(header::CONTENT_RANGE));

        let (status, h, body) = get(&s, Method::HEAD, &[]).await.unwrap();
        assert_eq!((status, body.len()), (StatusCode::OK, 0));
        assert_eq!(h[header::CONTENT_LENGTH], "20");
        assert_eq!(h[header::ETAG], quoted.as_str());

        let (status, h, body) = get(&s, Method::GET, &[("range", b"bytes=2-4")])
            .await
            .unwrap();
        assert_eq!(status, StatusCode::PARTIAL_CONTENT);
        assert_eq!(body, b"234");
        assert_eq!(h[header::CONTENT_RANGE], "bytes 2-4/20");
        assert_eq!(h[header::CONTENT_LENGTH], "3");

        let (status, h, body) = get(&s, Method::HEAD, &[("range", b"bytes=-5")])
            .await
            .unwrap();
        assert_eq!((status, body.len()), (StatusCode::PARTIAL_CONTENT, 0));
        assert_eq!(h[header::CONTENT_RANGE], "bytes 15-19/20");
        assert_eq!(h[header::CONTENT_LENGTH], "5");

        let (status, h, body) = get(&s, Method::GET, &[("if-none-match", quoted.as_bytes())])
            .await
            .unwrap();
        assert_eq!((status, body.len()), (StatusCode::NOT_MODIFIED, 0));
        assert_eq!(h[header::ETAG], quoted.as_str());
        assert!(!h.contains_key(header::CONTENT_LENGTH));

        let lm = h[header::LAST_MODIFIED].clone();
        let (status, _, _) = get(&s, Method::GET, &[("if-modified-since", lm.as_bytes())])
            .await
            .unwrap();
        assert_eq!(status, StatusCode::NOT_MODIFIED);

        let (status, _, body) = get(
            &s,
            Method::GET,
            &[("range", b"bytes=10-"), ("if-range", b"\"stale\"")],
        )
        .await
        .unwrap();
        assert_eq!((status, body.as_slice()), (StatusCode::OK, DATA));

        let (status, h, body) = get(&s, Method::GET, &[("range", b"bytes=20-")])
            .await
            .unwrap();
        assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(h[header::CONTENT_RANGE], "bytes */20");
        assert_eq!(h[header::CONTENT_TYPE], "application/json");
        let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(doc["kind"], "range_not_satisfiable");

        let err = get(&s, Method::GET, &[("if-match", b"\"stale\"")])
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PreconditionFailed);
        let err = get(&s, Method::PUT, &[]).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::MethodNotAllowed);
    }

    #[tokio::test]
    async fn missing_and_empty_files() {
        let s = MemoryStorage::new();
        let err = get(&s, Method::GET, &[]).await.unwrap_err();
        assert_eq!(
            (err.kind(), err.status()),
            (ErrorKind::FileNotFound, StatusCode::NOT_FOUND)
        );
        let err = get(&s, Method::HEAD, &[("range", b"bytes=0-")])
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FileNotFound);

        let s = memory_with(b"").await;
        let (status, h, body) = get(&s, Method::GET, &[]).await.unwrap();
        assert_eq!((status, body.len()), (StatusCode::OK, 0));
        assert_eq!(h[header::CONTENT_LENGTH], "0");
        for range in [&b"bytes=0-"[..], b"bytes=0-0", b"bytes=-1"] {
            let (status, h, _) = get(&s, Method::GET, &[("range", range)]).await.unwrap();
            assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
            assert_eq!(h[header::CONTENT_RANGE], "bytes */0");
        }
    }

    #[tokio::test]
    async fn envelope_style_416() {
        let s = memory_with(DATA).await;
        let res = deliver(
            &s,
            &path(),
            &Method::GET,
            &headers(&[("range", b"bytes=99-")]),
            ResponseStyle::Envelope,
            &facts(),
        )
        .await
        .unwrap();
        assert_eq!(res.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(doc["error"]["kind"], "range_not_satisfiable");
        assert_eq!(doc["meta"]["status"], 416);
    }

    /// A storage whose file changes between `head` and `read`.
    struct Racy {
        /// What `head` says first.
        first: (ObjectMeta, Bytes),
        /// What is there by the time of the read (`None`: deleted).
        then: Option<(ObjectMeta, Bytes)>,
        heads: Mutex<usize>,
        reads: Mutex<Vec<Option<Range<u64>>>>,
    }

    impl Racy {
        fn new(first: (ObjectMeta, Bytes), then: Option<(ObjectMeta, Bytes)>) -> Self {
            Racy {
                first,
                then,
                heads: Mutex::new(0),
                reads: Mutex::new(Vec::new()),
            }
        }
    }

    fn unsupported<T>() -> StorageResult<T> {
        Err(StorageError::other("not in this fake"))
    }

    #[async_trait]
    impl Storage for Racy {
        async fn head(&self, _: &FilePath) -> StorageResult<Option<ObjectMeta>> {
            let mut n = self.heads.lock().unwrap();
            *n += 1;
            Ok(if *n == 1 {
                Some(self.first.0.clone())
            } else {
                self.then.as_ref().map(|t| t.0.clone())
            })
        }

        async fn read(
            &self,
            _: &FilePath,
            range: Option<Range<u64>>,
        ) -> StorageResult<Option<(ObjectMeta, ByteStream)>> {
            self.reads.lock().unwrap().push(range.clone());
            let Some((meta, data)) = self.then.clone() else {
                return Ok(None);
            };
            let r = meta.resolve_range(range)?;
            let data = data.slice(r.start as usize..r.end as usize);
            // Two-byte frames, to show that the body is a stream.
            let frames: Vec<StorageResult<Bytes>> = data
                .chunks(2)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            Ok(Some((meta, Box::pin(futures_util::stream::iter(frames)))))
        }

        async fn write_upload(&self, _: &UploadId, _: u64) -> StorageResult<Box<dyn UploadWriter>> {
            unsupported()
        }
        async fn read_upload(&self, _: &UploadId, _: Range<u64>) -> StorageResult<ByteStream> {
            unsupported()
        }
        async fn publish_upload(
            &self,
            _: &UploadId,
            _: &FilePath,
            _: u64,
            _: PublishOptions,
        ) -> StorageResult<ObjectMeta> {
            unsupported()
        }
        async fn delete_upload(&self, _: &UploadId) -> StorageResult<()> {
            unsupported()
        }
        async fn put_record(
            &self,
            _: &RecordKey,
            _: Bytes,
            _: RecordMode,
        ) -> StorageResult<String> {
            unsupported()
        }
        async fn get_record(&self, _: &RecordKey) -> StorageResult<Option<Record>> {
            Ok(None)
        }
        async fn delete_record(&self, _: &RecordKey) -> StorageResult<bool> {
            unsupported()
        }
        async fn list_records(&self, _: &RecordKey) -> StorageResult<Vec<RecordKey>> {
            unsupported()
        }
    }

    fn version(etag: &str, data: &'static [u8]) -> (ObjectMeta, Bytes) {
        (meta(data.len() as u64, etag), Bytes::from_static(data))
    }

    #[tokio::test]
    async fn file_deleted_between_head_and_read_is_404() {
        let s = Racy::new(version("v1", DATA), None);
        let err = get(&s, Method::GET, &[]).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FileNotFound);
        // A ranged read whose file vanished also answers 404.
        let s = Racy::new(version("v1", DATA), None);
        let err = get(&s, Method::GET, &[("range", b"bytes=0-3")])
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FileNotFound);
    }

    #[tokio::test]
    async fn file_replaced_between_head_and_read_serves_the_new_version_consistently() {
        // Whole file: the stream of v2 is served with v2's headers.
        let s = Racy::new(version("v1", DATA), Some(version("v2", b"new bytes")));
        let (status, h, body) = get(&s, Method::GET, &[]).await.unwrap();
        assert_eq!(
            (status, body.as_slice()),
            (StatusCode::OK, &b"new bytes"[..])
        );
        assert_eq!(h[header::ETAG], "\"v2\"");
        assert_eq!(h[header::CONTENT_LENGTH], "9");

        // A range of v1 that v2 is too short for: decided again against v2 → 416.
        let s = Racy::new(version("v1", DATA), Some(version("v2", b"short")));
        let (status, h, _) = get(&s, Method::GET, &[("range", b"bytes=10-")])
            .await
            .unwrap();
        assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(h[header::CONTENT_RANGE], "bytes */5");

        // A range that fits both: re-read from v2, with v2's headers.
        let s = Racy::new(version("v1", DATA), Some(version("v2", b"0123456789")));
        let (status, h, body) = get(&s, Method::GET, &[("range", b"bytes=-4")])
            .await
            .unwrap();
        assert_eq!(
            (status, body.as_slice()),
            (StatusCode::PARTIAL_CONTENT, &b"6789"[..])
        );
        assert_eq!(h[header::CONTENT_RANGE], "bytes 6-9/10");
        assert_eq!(h[header::ETAG], "\"v2\"");
        assert_eq!(*s.reads.lock().unwrap(), vec![Some(16..20), Some(6..10)]);

        // If-None-Match is decided against the version `head` saw (no read for a 304);
        // a tag that matches neither gets the version that was read.
        let s = Racy::new(version("v1", DATA), Some(version("v2", b"xy")));
        let (status, _, body) = get(&s, Method::GET, &[("if-none-match", b"\"v1\"")])
            .await
            .unwrap();
        assert_eq!(
            (status, body.as_slice()),
            (StatusCode::NOT_MODIFIED, &b""[..])
        );
        let s = Racy::new(version("v1", DATA), Some(version("v2", b"xy")));
        let (status, _, body) = get(&s, Method::GET, &[("if-none-match", b"\"v0\"")])
            .await
            .unwrap();
        assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"xy"[..]));
    }
}
