//! Fitting into a tower-http stack: CORS for browsers, tracing without secrets, timeouts and
//! body limits.
//!
//! # The recommended stack
//!
//! Outermost first:
//!
//! 1. [`TraceLayer`] with a span that logs [`redacted_uri`], never the raw URI: a signed URL's
//!    query holds its `signature` (and an upload session URL its `key`), and
//!    `DefaultMakeSpan` would log it. tower-uploads adds its own span inside, named
//!    `tower_uploads`, with the fields `method`, `path` (the file path, no query), `range`
//!    (the `Content-Range` header of a chunk), `bytes` (request body bytes read), `status`
//!    and `outcome` (`created`, `accepted`, `ok`, or the error `kind`). No key, signature or
//!    `Authorization` header is ever logged by this crate.
//! 2. [`CorsLayer`] when browsers upload from another origin: allow [`CORS_METHODS`] and
//!    [`CORS_REQUEST_HEADERS`] (a chunk's `PUT` with `Content-Range` or `Content-Digest` is
//!    not a "simple" request, so the browser sends a preflight `OPTIONS`, which the CORS layer
//!    answers), and expose [`CORS_EXPOSE_HEADERS`] (`Location`, `Range`, `ETag`, …) so that
//!    the page can read a chunk's received ranges. Put it *outside* the uploads layer, so
//!    that refusals (401/403/413) carry the CORS headers too and the page can read them.
//! 3. [`RequestBodyTimeoutLayer`] rather than a whole-request [`TimeoutLayer`]: a 16 MiB chunk
//!    on a slow link legitimately takes minutes, a stalled one should not hold a connection.
//!    A body timeout (or a client gone) mid-chunk is safe: the chunk's range is not counted,
//!    its bytes are never visible, the client's retry fills it. A `TimeoutLayer` works as
//!    well (the cancelled request leaves nothing counted either) when its duration fits the
//!    largest chunk at the slowest link you serve.
//! 4. [`RequestBodyLimitLayer`] only if the app needs one for its other routes: set it at
//!    least as high as [`Uploads::max_request_size`](crate::Uploads::max_request_size) (the
//!    largest chunk), or it answers its own plain-text 413 before tower-uploads can answer
//!    the JSON one. A body cut off by it mid-stream is answered 413 `file_too_large`.
//!
//! ```
//! use axum::{Router, body::Body, routing::get};
//! use http::{Method, Request, StatusCode, header};
//! use std::time::Duration;
//! use tower::ServiceExt;
//! use tower_http::{
//!     cors::{AllowOrigin, CorsLayer},
//!     limit::RequestBodyLimitLayer,
//!     timeout::RequestBodyTimeoutLayer,
//!     trace::TraceLayer,
//! };
//! use tower_uploads::{MemoryStorage, Uploads, stack};
//!
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! let uploads = Uploads::new(MemoryStorage::new())
//!     .key("secret-key")
//!     .base_url("https://api.example.com/files")
//!     .max_request_size(32 << 20);
//! let app = Router::new()
//!     .route("/health", get(|| async { "ok" }))
//!     .nest_service("/files", uploads.service())
//!     .layer(RequestBodyLimitLayer::new(32 << 20))
//!     .layer(RequestBodyTimeoutLayer::new(Duration::from_secs(30)))
//!     .layer(
//!         CorsLayer::new()
//!             .allow_origin(AllowOrigin::exact("https://app.example.com".parse().unwrap()))
//!             .allow_methods(stack::CORS_METHODS)
//!             .allow_headers(stack::CORS_REQUEST_HEADERS)
//!             .expose_headers(stack::CORS_EXPOSE_HEADERS)
//!             .max_age(Duration::from_secs(600)),
//!     )
//!     .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<Body>| {
//!         tracing::info_span!("http", method = %req.method(), uri = %stack::redacted_uri(req.uri()))
//!     }));
//!
//! // The browser's preflight for a chunk…
//! let preflight = Request::builder()
//!     .method(Method::OPTIONS)
//!     .uri("/files/video.mp4")
//!     .header(header::ORIGIN, "https://app.example.com")
//!     .header(header::ACCESS_CONTROL_REQUEST_METHOD, "PUT")
//!     .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "content-range,content-digest")
//!     .body(Body::empty())
//!     .unwrap();
//! let res = app.clone().oneshot(preflight).await.unwrap();
//! assert_eq!(res.status(), StatusCode::OK);
//! assert_eq!(res.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example.com");
//!
//! // …then the chunk itself: 202, and the page may read `Range`.
//! let chunk = Request::put("/files/video.mp4")
//!     .header(header::ORIGIN, "https://app.example.com")
//!     .header(header::AUTHORIZATION, "Bearer secret-key")
//!     .header(header::CONTENT_RANGE, "bytes 0-4/10")
//!     .body(Body::from("01234"))
//!     .unwrap();
//! let res = app.oneshot(chunk).await.unwrap();
//! assert_eq!(res.status(), StatusCode::ACCEPTED);
//! assert_eq!(res.headers()[header::RANGE], "bytes=0-4");
//! let exposed = res.headers()[header::ACCESS_CONTROL_EXPOSE_HEADERS].to_str().unwrap();
//! assert!(exposed.contains("range") && exposed.contains("location"));
//! # });
//! ```
//!
//! `tests/stack.rs` in the repository runs each of these on loopback: the preflight for a
//! chunk `PUT`, the exposed headers, a chunk stalled until a `TimeoutLayer` or a
//! `RequestBodyTimeoutLayer` fires, a body cut off by the limit layer, and the log output
//! searched for keys and signatures.
//!
//! [`TraceLayer`]: https://docs.rs/tower-http/latest/tower_http/trace/struct.TraceLayer.html
//! [`CorsLayer`]: https://docs.rs/tower-http/latest/tower_http/cors/struct.CorsLayer.html
//! [`TimeoutLayer`]: https://docs.rs/tower-http/latest/tower_http/timeout/struct.TimeoutLayer.html
//! [`RequestBodyTimeoutLayer`]: https://docs.rs/tower-http/latest/tower_http/timeout/struct.RequestBodyTimeoutLayer.html
//! [`RequestBodyLimitLayer`]: https://docs.rs/tower-http/latest/tower_http/limit/struct.RequestBodyLimitLayer.html

use http::header::{self, HeaderName};
use http::{Method, Request, Response, Uri};
use std::fmt;
use tracing::Span;
use tracing::field::Empty;

use crate::error::ErrorKind;

/// The methods a browser uses on upload endpoints: `PUT` (uploads), `POST` (`/signatures`),
/// `GET`/`HEAD` (delivery).
pub const CORS_METHODS: [Method; 6] = [
    Method::GET,
    Method::HEAD,
    Method::PUT,
    Method::POST,
    // tus: appends and termination.
    Method::PATCH,
    Method::DELETE,
];

/// The request headers an upload client may send cross-origin (beyond the CORS-safelisted
/// ones): credentials, chunk ranges and digests, ittybit's `Accept-Version`, upload-session
/// part indexes, preconditions, and tus's headers.
pub const CORS_REQUEST_HEADERS: [HeaderName; 15] = [
    header::AUTHORIZATION,
    header::CONTENT_TYPE,
    header::CONTENT_RANGE,
    HeaderName::from_static("content-digest"),
    HeaderName::from_static("accept-version"),
    HeaderName::from_static("x-upload-index"),
    header::IF_MATCH,
    header::IF_NONE_MATCH,
    HeaderName::from_static("tus-resumable"),
    HeaderName::from_static("upload-length"),
    HeaderName::from_static("upload-metadata"),
    HeaderName::from_static("upload-offset"),
    HeaderName::from_static("upload-checksum"),
    HeaderName::from_static("upload-defer-length"),
    HeaderName::from_static("upload-concat"),
];

/// The response headers a page needs to read (they are not CORS-safelisted): the file's
/// `Location`, a chunk's received `Range`, delivery's validators and ranges, and tus's
/// headers (a tus upload's URL is its `Location`).
pub const CORS_EXPOSE_HEADERS: [HeaderName; 14] = [
    header::LOCATION,
    header::RANGE,
    header::ETAG,
    header::CONTENT_RANGE,
    header::ACCEPT_RANGES,
    header::CONTENT_LOCATION,
    HeaderName::from_static("tus-resumable"),
    HeaderName::from_static("tus-version"),
    HeaderName::from_static("tus-extension"),
    HeaderName::from_static("tus-max-size"),
    HeaderName::from_static("tus-checksum-algorithm"),
    HeaderName::from_static("upload-offset"),
    HeaderName::from_static("upload-length"),
    HeaderName::from_static("upload-expires"),
];

/// The query parameters whose values are credentials: never logged.
const SECRET_PARAMS: [&str; 2] = ["signature", "key"];

/// A URI for logs: path and query, with the values of `signature` and `key` replaced by
/// `REDACTED`. Use it in a `TraceLayer`'s `make_span_with` instead of the URI itself.
///
/// ```
/// let uri: http::Uri = "/a/cat.png?expiry=1&method=put&signature=c2VjcmV0".parse().unwrap();
/// assert_eq!(
///     tower_uploads::stack::redacted_uri(&uri).to_string(),
///     "/a/cat.png?expiry=1&method=put&signature=REDACTED"
/// );
/// ```
pub fn redacted_uri(uri: &Uri) -> RedactedUri<'_> {
    RedactedUri(uri)
}

/// The [`Display`](fmt::Display) of [`redacted_uri`].
#[derive(Clone, Copy, Debug)]
pub struct RedactedUri<'a>(&'a Uri);

impl fmt::Display for RedactedUri<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.path())?;
        let Some(query) = self.0.query() else {
            return Ok(());
        };
        for (i, pair) in query.split('&').enumerate() {
            f.write_str(if i == 0 { "?" } else { "&" })?;
            let name = pair.split_once('=').map_or(pair, |(n, _)| n);
            // Compare decoded-insensitively enough: `Signature`, `%73ignature` are secrets too.
            let decoded = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
            if SECRET_PARAMS
                .iter()
                .any(|s| decoded.eq_ignore_ascii_case(s))
            {
                write!(f, "{name}=REDACTED")?;
            } else {
                f.write_str(pair)?;
            }
        }
        Ok(())
    }
}

/// The span of one request answered by tower-uploads: `INFO` for uploads and the JSON API,
/// `DEBUG` for deliveries. `path` is the file path (no query); `range` the chunk's
/// `Content-Range` when it is well-formed text.
pub(crate) fn request_span<B>(req: &Request<B>, path: &str) -> Span {
    let method = req.method();
    let range = req
        .headers()
        .get(header::CONTENT_RANGE)
        .map(|v| tracing::field::display(loggable_range(v.as_bytes())));
    if *method == Method::GET || *method == Method::HEAD {
        tracing::debug_span!(
            "tower_uploads",
            method = %method,
            path = %path,
            status = Empty,
            outcome = Empty,
        )
    } else {
        tracing::info_span!(
            "tower_uploads",
            method = %method,
            path = %path,
            range,
            bytes = Empty,
            status = Empty,
            outcome = Empty,
        )
    }
}

/// A `Content-Range` value as logged: itself when it is short and made of the characters a
/// valid one has, else `invalid`.
fn loggable_range(v: &[u8]) -> &str {
    let ok = v.len() <= 64
        && v.iter()
            .all(|b| b.is_ascii_digit() || b" bytes=-/*".contains(b));
    if ok {
        std::str::from_utf8(v).unwrap_or("invalid")
    } else {
        "invalid"
    }
}

/// What a response means, for the `outcome` field.
fn outcome<B>(res: &Response<B>) -> &'static str {
    if let Some(kind) = res.extensions().get::<ErrorKind>() {
        return kind.as_str();
    }
    match res.status().as_u16() {
        201 => "created",
        202 => "accepted",
        206 => "partial",
        304 => "not_modified",
        s if s < 400 => "ok",
        _ => "error",
    }
}

/// Records `status` and `outcome` on `span` and logs the answer inside it (`WARN` for a
/// 5xx, else at the span's level).
pub(crate) fn record_outcome<B>(span: &Span, res: &Response<B>) {
    let status = res.status().as_u16();
    let outcome = outcome(res);
    span.record("status", status);
    span.record("outcome", tracing::field::display(outcome));
    if status >= 500 {
        tracing::warn!(status, outcome = %outcome, "answered");
    } else if span
        .metadata()
        .is_some_and(|m| *m.level() == tracing::Level::INFO)
    {
        tracing::info!(status, outcome = %outcome, "answered");
    } else {
        tracing::debug!(status, outcome = %outcome, "answered");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction() {
        let cases = [
            ("/a.png", "/a.png"),
            ("/a.png?", "/a.png?"),
            (
                "/f/a.png?expiry=5&method=get&signature=abc",
                "/f/a.png?expiry=5&method=get&signature=REDACTED",
            ),
            (
                "/store/single?key=tok.en&x=1",
                "/store/single?key=REDACTED&x=1",
            ),
            ("/a?Signature=x&KEY", "/a?Signature=REDACTED&KEY=REDACTED"),
            ("/a?%73ignature=x", "/a?%73ignature=REDACTED"),
            ("/a?signatures=x&keys=y", "/a?signatures=x&keys=y"),
            ("/a?expiry=1&signature=", "/a?expiry=1&signature=REDACTED"),
        ];
        for (input, want) in cases {
            let uri: Uri = input.parse().unwrap();
            assert_eq!(redacted_uri(&uri).to_string(), want, "{input}");
        }
    }

    #[test]
    fn ranges_for_logs() {
        assert_eq!(loggable_range(b"bytes 0-9/10"), "bytes 0-9/10");
        assert_eq!(loggable_range(b"bytes=0-9/10"), "bytes=0-9/10");
        assert_eq!(loggable_range(b"bytes */10"), "bytes */10");
        assert_eq!(loggable_range(b"bytes 0-9/10\x1b[2J"), "invalid");
        assert_eq!(loggable_range(b"token secret"), "invalid");
        assert_eq!(loggable_range(&[b'1'; 65]), "invalid");
    }
}
