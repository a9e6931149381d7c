//! `PUT <base>/<path>`: simple uploads (PROTOCOL.md §3) and resumable `Content-Range` chunk
//! uploads (§4), streamed into a [`Storage`].
//!
//! The pure parsers ([`content_range`], [`digest`]) live apart from the I/O.

pub mod content_range;
pub mod digest;

pub(crate) mod body;
mod resumable;
mod simple;
mod sweeper;

pub use sweeper::{SweepReport, spawn_sweeper, sweep};

pub(crate) use resumable::put_chunk;
pub(crate) use simple::put_whole;

use bytes::Bytes;
use futures_util::TryStreamExt;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use serde::{Deserialize, Serialize};

use crate::body::ResponseBody;
use crate::error::{ApiError, ErrorKind};
use crate::file::FileObject;
use crate::media::{MediaFacts, SNIFF_BYTES, sniff};
use crate::path::FilePath;
use crate::response::Answer;
use crate::service::config::Config;
use crate::storage::{ObjectMeta, PutMode, Storage, UploadId};

/// What the service keeps with every published file, in [`ObjectMeta::attributes`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Record {
    /// The File object answered for this version.
    pub file: FileObject,
    /// The upload it was published from.
    #[serde(default)]
    pub upload: Option<String>,
}

impl Record {
    pub(crate) fn from_meta(meta: &ObjectMeta) -> Option<Record> {
        serde_json::from_slice(&meta.attributes).ok()
    }
}

/// The `PutMode` asked for by `If-None-Match: *` / `If-Match`.
pub(crate) fn put_mode(headers: &HeaderMap) -> Result<PutMode, ApiError> {
    if let Some(v) = headers.get(header::IF_NONE_MATCH) {
        return if v.as_bytes().trim_ascii() == b"*" {
            Ok(PutMode::Create)
        } else {
            Err(ApiError::new(
                ErrorKind::PreconditionFailed,
                "only `If-None-Match: *` is supported on uploads",
            ))
        };
    }
    if let Some(v) = headers.get(header::IF_MATCH) {
        let v = v.to_str().unwrap_or("").trim();
        let tag = v.strip_prefix("W/").unwrap_or(v).trim_matches('"');
        if tag.is_empty() || tag.contains(',') || v.starts_with("W/") {
            return Err(ApiError::new(
                ErrorKind::PreconditionFailed,
                "If-Match must name one strong etag",
            ));
        }
        if tag == "*" {
            return Ok(PutMode::Update(String::new()));
        }
        return Ok(PutMode::Update(tag.to_owned()));
    }
    Ok(PutMode::Overwrite)
}

/// Checks a precondition against what is published now, before any byte is read. The
/// storage checks it again, atomically, at publication. `If-Match: *` becomes a check of
/// the current version.
pub(crate) async fn precheck(
    storage: &dyn Storage,
    path: &FilePath,
    mode: PutMode,
) -> Result<PutMode, ApiError> {
    if mode == PutMode::Overwrite {
        return Ok(mode); // nothing to check: spare the storage a round trip
    }
    let current = storage.head(path).await?;
    let failed = || {
        ApiError::new(
            ErrorKind::PreconditionFailed,
            "the file at this path does not match the request's precondition",
        )
    };
    let mode = match (mode, &current) {
        (PutMode::Create, Some(_)) => return Err(failed()),
        (PutMode::Update(tag), Some(meta)) if tag.is_empty() => PutMode::Update(meta.etag.clone()),
        (PutMode::Update(tag), Some(meta)) if tag != meta.etag => return Err(failed()),
        (PutMode::Update(_), None) => return Err(failed()),
        (mode, _) => mode,
    };
    Ok(mode)
}

/// Reads the first bytes of a staged upload for sniffing.
pub(crate) async fn staged_head(
    storage: &dyn Storage,
    upload: &UploadId,
    size: u64,
) -> Result<Vec<u8>, ApiError> {
    let n = size.min(SNIFF_BYTES as u64);
    let frames: Vec<Bytes> = storage
        .read_upload(upload, 0..n)
        .await?
        .try_collect()
        .await?;
    Ok(frames.concat())
}

/// The facts of a file from its first bytes and the request's hint.
pub(crate) fn facts_of(head: &[u8], headers: &HeaderMap, path: &FilePath) -> MediaFacts {
    let hint = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    sniff(head, hint, path.filename())
}

/// A File object answer: `201 Created` or `200 OK`, with `Location`.
pub(crate) fn file_response(
    answer: &Answer<'_>,
    status: StatusCode,
    file: &FileObject,
) -> Response<ResponseBody> {
    let mut res = answer.data(status, file, Some("file"), Some(&file.url));
    if let Ok(loc) = HeaderValue::from_str(&file.url) {
        res.headers_mut().insert(header::LOCATION, loc);
    }
    res
}

/// Builds the File object and the record of a new version.
pub(crate) fn new_record(
    cfg: &Config,
    headers: &HeaderMap,
    path: &FilePath,
    size: u64,
    facts: &MediaFacts,
    upload: &UploadId,
) -> Record {
    let file = FileObject::new(path, cfg.file_url(headers, path), size, facts);
    Record {
        file,
        upload: Some(upload.0.clone()),
    }
}

/// 413 `file_too_large` naming the limit.
pub(crate) fn too_large(limit: u64, what: &str) -> ApiError {
    ApiError::new(
        ErrorKind::FileTooLarge,
        format!("the {what} is larger than the limit of {limit} bytes"),
    )
}

/// The declared `Content-Length`, if any and valid.
pub(crate) fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    match headers.get(header::CONTENT_LENGTH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| ApiError::new(ErrorKind::BadRequest, "invalid Content-Length")),
    }
}

/// Discards an upload when dropped unless disarmed: a request cancelled mid-body (the
/// client went away, a timeout layer fired) never leaves its staged bytes behind.
pub(crate) struct AbortOnDrop<'a> {
    storage: &'a std::sync::Arc<dyn Storage>,
    id: Option<UploadId>,
}

impl<'a> AbortOnDrop<'a> {
    pub(crate) fn new(storage: &'a std::sync::Arc<dyn Storage>, id: UploadId) -> Self {
        AbortOnDrop {
            storage,
            id: Some(id),
        }
    }

    /// Keeps the upload.
    pub(crate) fn disarm(&mut self) {
        self.id = None;
    }

    /// Discards the upload now.
    pub(crate) async fn abort(mut self) {
        if let Some(id) = self.id.take()
            && let Err(e) = self.storage.abort(&id).await
        {
            tracing::warn!(upload = %id, error = %e, "could not discard an upload");
        }
    }
}

impl Drop for AbortOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let storage = self.storage.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    if let Err(e) = storage.abort(&id).await {
                        tracing::warn!(upload = %id, error = %e, "could not discard an upload");
                    }
                });
            }
        }
    }
}
