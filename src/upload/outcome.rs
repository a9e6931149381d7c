//! [`Outcome`]: what the upload core did with a request, answered by a protocol frontend.
//!
//! The core (simple uploads, chunks, status queries, finalization) knows uploads, ranges,
//! probing, conditions and hooks, and ends with an `Outcome`; the ittybit wire answers it
//! here ([`Outcome::respond`]: `202` and the received ranges, or `201`/`200` and the File
//! object in the negotiated style). Another resumable protocol answers the same outcomes in
//! its own terms.

use http::{HeaderValue, Response, StatusCode, header};
use serde::Serialize;
use serde_json::value::RawValue;
use std::ops::Range;

use super::sinks::MAX_UPLOAD_RANGES;
use crate::body::ResponseBody;
use crate::file::FileObject;
use crate::response::Answer;

/// What the upload core did with a request.
// One per request, moved once into its answer: boxing the File object would only add an
// allocation to every upload.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The upload is not complete: the ranges of `total` received so far.
    Progress {
        total: u64,
        received: Vec<Range<u64>>,
    },
    /// The file: published by this request (`created`), or already there.
    File {
        created: bool,
        file: FileObject,
        /// `file` already serialised, when the core had it (a simple upload's record).
        json: Option<Box<RawValue>>,
    },
}

/// The progress document of a `202 Accepted`.
#[derive(Serialize)]
struct Progress {
    total: u64,
    /// Received ranges, inclusive ends.
    ranges: Vec<[u64; 2]>,
}

impl Outcome {
    /// Whether this request published the file (a `201`).
    pub(crate) fn created(&self) -> bool {
        matches!(self, Outcome::File { created: true, .. })
    }

    /// A file that was there before this request (a retry, a raced chunk, a status query).
    pub(crate) fn existing(file: FileObject) -> Outcome {
        Outcome::File {
            created: false,
            file,
            json: None,
        }
    }

    /// The ittybit answer: `202 Accepted` with `Range: bytes=a-b,…` and `{total, ranges}`;
    /// or the File object, `201 Created` or `200 OK`, with `Location`.
    pub(crate) fn respond(self, answer: &Answer<'_>) -> Response<ResponseBody> {
        match self {
            Outcome::Progress { total, received } => progress(answer, total, &received),
            Outcome::File {
                created,
                file,
                json,
            } => {
                let status = if created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                };
                let mut res = match &json {
                    Some(json) => answer.data(status, &**json, Some("file"), Some(&file.url)),
                    None => answer.data(status, &file, Some("file"), Some(&file.url)),
                };
                if let Ok(loc) = HeaderValue::from_str(&file.url) {
                    res.headers_mut().insert(header::LOCATION, loc);
                }
                res
            }
        }
    }
}

fn progress(answer: &Answer<'_>, total: u64, received: &[Range<u64>]) -> Response<ResponseBody> {
    // Racing chunks may leave a few more pieces than the limit: an answer names at most
    // MAX_UPLOAD_RANGES of them (telling less than was received is always safe: the client
    // sends those bytes again).
    let ranges: Vec<[u64; 2]> = received
        .iter()
        .filter(|r| r.start < r.end)
        .take(MAX_UPLOAD_RANGES)
        .map(|r| [r.start, r.end - 1])
        .collect();
    let mut res = answer.data(
        StatusCode::ACCEPTED,
        &Progress {
            total,
            ranges: ranges.clone(),
        },
        Some("upload"),
        None,
    );
    if !ranges.is_empty() {
        let value = ranges
            .iter()
            .map(|[a, b]| format!("{a}-{b}"))
            .collect::<Vec<_>>()
            .join(",");
        if let Ok(v) = HeaderValue::from_str(&format!("bytes={value}")) {
            res.headers_mut().insert(header::RANGE, v);
        }
    }
    res
}
