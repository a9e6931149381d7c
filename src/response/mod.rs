//! Response documents in the two styles ittybit clients understand, negotiated by the request
//! header `Accept-Version` (PROTOCOL.md §6):
//!
//! - [`ResponseStyle::Envelope`] (no header, or a version older than `2025-08-20`):
//!   `{"meta": {...}, "data": ..., "error": ..., "links": {...}}`;
//! - [`ResponseStyle::Bare`] (`2025-08-20` or later): the object itself, or
//!   `{"kind": ..., "message": ...}` on error.

mod future;
pub use future::ResponseFuture;

use crate::body::ResponseBody;
use crate::error::ApiError;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use serde::Serialize;
use serde_json::Value;

/// The first `Accept-Version` that gets the bare style.
#[doc(hidden)]
pub const BARE_SINCE: &str = "2025-08-20";

/// How a response body is shaped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ResponseStyle {
    /// `{"meta", "data", "error", "links"}`, as the seeds document (the default).
    #[default]
    Envelope,
    /// The object itself; errors as `{"kind", "message"}`.
    Bare,
}

impl ResponseStyle {
    /// The style asked for by `Accept-Version`, else `default`.
    ///
    /// Versions are ittybit's `YYYY-MM-DD` dates; anything that is not such a date is ignored.
    pub fn negotiate(headers: &HeaderMap, default: ResponseStyle) -> ResponseStyle {
        // ittybit's Python SDK also sends its configured version as `ACCEPT_VERSION`.
        let Some(v) = headers
            .get("accept-version")
            .or_else(|| headers.get("accept_version"))
            .and_then(|v| v.to_str().ok())
        else {
            return default;
        };
        let v = v.trim();
        if !is_date(v) {
            return default;
        }
        if v >= BARE_SINCE {
            ResponseStyle::Bare
        } else {
            ResponseStyle::Envelope
        }
    }
}

fn is_date(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

/// What the envelope's `meta` tells about the request.
#[derive(Clone, Debug)]
#[doc(hidden)]
pub struct RequestFacts {
    /// A request id (`req_…`).
    pub id: String,
    /// The request method.
    pub method: Method,
    /// The request path (with the mount prefix), no query: a query may hold a signature.
    pub url: String,
    /// The `Accept-Version` sent, if any.
    pub version: Option<String>,
}

impl RequestFacts {
    /// Facts of a request.
    pub fn of<B>(req: &http::Request<B>) -> Self {
        RequestFacts {
            id: crate::id::random_id("req_"),
            method: req.method().clone(),
            url: req.uri().path().to_owned(),
            version: req
                .headers()
                .get("accept-version")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        }
    }
}

/// A JSON answer under construction.
#[derive(Debug)]
#[doc(hidden)]
pub struct Answer<'a> {
    style: ResponseStyle,
    facts: &'a RequestFacts,
}

/// `meta` of the envelope.
#[derive(Serialize)]
struct Meta<'a> {
    id: &'a str,
    method: &'a str,
    url: &'a str,
    version: Option<&'a str>,
    status: u16,
    object: Option<&'a str>,
}

/// `links` of the envelope.
#[derive(Serialize)]
struct Links<'a> {
    #[serde(rename = "self", skip_serializing_if = "Option::is_none")]
    self_link: Option<Option<&'a str>>,
}

/// The envelope the seeds document.
#[derive(Serialize)]
struct Envelope<'a, T: Serialize + ?Sized> {
    meta: Meta<'a>,
    data: Option<&'a T>,
    error: Option<&'a ErrorBody<'a>>,
    links: Links<'a>,
}

/// An error's body: the bare style's whole document, the envelope's `error`.
#[derive(Serialize)]
struct ErrorBody<'a> {
    kind: &'a str,
    message: &'a str,
}

impl<'a> Answer<'a> {
    /// An answer in `style` to the request described by `facts`.
    pub fn new(style: ResponseStyle, facts: &'a RequestFacts) -> Self {
        Answer { style, facts }
    }

    fn meta(&self, status: StatusCode, object: Option<&'a str>) -> Meta<'_> {
        Meta {
            id: &self.facts.id,
            method: self.facts.method.as_str(),
            url: &self.facts.url,
            version: self.facts.version.as_deref(),
            status: status.as_u16(),
            object,
        }
    }

    /// A success response carrying `data`.
    pub fn data<T: Serialize + ?Sized>(
        &self,
        status: StatusCode,
        data: &T,
        object: Option<&str>,
        self_link: Option<&str>,
    ) -> Response<ResponseBody> {
        let bytes = match self.style {
            ResponseStyle::Bare => to_json(data),
            ResponseStyle::Envelope => to_json(&Envelope {
                meta: self.meta(status, object),
                data: Some(data),
                error: None::<&ErrorBody<'_>>,
                links: Links {
                    self_link: Some(self_link),
                },
            }),
        };
        match bytes {
            Ok(bytes) => json_bytes(status, bytes),
            Err(e) => self.error(&ApiError::internal(&e)),
        }
    }

    /// An error response. Its [`ErrorKind`](crate::error::ErrorKind) is also in the
    /// response's extensions.
    pub fn error(&self, err: &ApiError) -> Response<ResponseBody> {
        let status = err.status();
        let error = ErrorBody {
            kind: err.kind().as_str(),
            message: err.message(),
        };
        let bytes = match self.style {
            ResponseStyle::Bare => to_json(&error),
            ResponseStyle::Envelope => to_json(&Envelope::<()> {
                meta: self.meta(status, Some("error")),
                data: None,
                error: Some(&error),
                links: Links { self_link: None },
            }),
        };
        let mut res = json_bytes(status, bytes.unwrap_or_else(|_| b"{}".to_vec()));
        // The kind travels with the response too (tracing fields, the app's own layers).
        res.extensions_mut().insert(err.kind());
        if err.kind() == crate::error::ErrorKind::TokenMissing {
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        res
    }
}

/// A document's JSON, written into a buffer that fits an envelope or a record with a File
/// object (~650–750 bytes) in one allocation, where `serde_json::to_vec` grows from 128
/// bytes in three steps.
pub(crate) fn to_json<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(1024);
    serde_json::to_writer(&mut buf, value)?;
    Ok(buf)
}

fn json_bytes(status: StatusCode, bytes: Vec<u8>) -> Response<ResponseBody> {
    let mut res = Response::new(ResponseBody::full(bytes));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// A JSON response with `Content-Type: application/json`.
#[doc(hidden)]
pub fn json_response(status: StatusCode, doc: &Value) -> Response<ResponseBody> {
    json_bytes(
        status,
        serde_json::to_vec(doc).unwrap_or_else(|_| b"{}".to_vec()),
    )
}

/// An error response for a request, in the style it negotiated.
#[doc(hidden)]
pub fn error_response<B>(
    req: &http::Request<B>,
    default: ResponseStyle,
    err: &ApiError,
) -> Response<ResponseBody> {
    let style = ResponseStyle::negotiate(req.headers(), default);
    Answer::new(style, &RequestFacts::of(req)).error(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation() {
        let cases = [
            (None, ResponseStyle::Envelope),
            (Some("2024-03-21"), ResponseStyle::Envelope),
            (Some("2025-08-19"), ResponseStyle::Envelope),
            (Some("2025-08-20"), ResponseStyle::Bare),
            (Some("2026-01-01"), ResponseStyle::Bare),
            (Some("latest"), ResponseStyle::Envelope),
            (Some("2025-8-20"), ResponseStyle::Envelope),
            (Some(""), ResponseStyle::Envelope),
        ];
        for (header, want) in cases {
            let mut h = HeaderMap::new();
            if let Some(v) = header {
                h.insert("accept-version", HeaderValue::from_str(v).unwrap());
            }
            assert_eq!(
                ResponseStyle::negotiate(&h, ResponseStyle::Envelope),
                want,
                "{header:?}"
            );
        }
        let mut h = HeaderMap::new();
        assert_eq!(
            ResponseStyle::negotiate(&h, ResponseStyle::Bare),
            ResponseStyle::Bare
        );
        h.insert("accept-version", HeaderValue::from_static("2024-01-01"));
        assert_eq!(
            ResponseStyle::negotiate(&h, ResponseStyle::Bare),
            ResponseStyle::Envelope
        );
    }
}
