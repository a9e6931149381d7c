//! Resumable uploads: `PUT` with `Content-Range` (PROTOCOL.md §4).
//!
//! Every chunk is streamed straight to its offset of the path's upload in the storage; its
//! range counts once its bytes are written (and, with a `Content-Digest`, verified). The
//! request whose commit closes the last gap claims the upload — exactly one claim wins, even
//! across processes — and publishes it: `201 Created`. Everything about the upload lives in
//! the storage, so a restarted server or a second one carries on.

use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body::Body;
use serde::Serialize;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use super::body::{Comparer, PumpError, Taps, pump};
use super::content_range::{self, ContentRange};
use super::digest::{self, Sha256Check};
use super::{
    AbortOnDrop, Record, content_length, facts_of, file_response, new_record, staged_head,
    too_large,
};
use crate::body::{BoxError, ResponseBody};
use crate::error::{ApiError, ErrorKind};
use crate::path::FilePath;
use crate::response::Answer;
use crate::service::config::Config;
use crate::storage::{
    Claim, PublishOptions, PutMode, RangeSet, StorageError, StorageResult, UploadId, UploadInfo,
    UploadSpec,
};

/// How long a request that lost the race to finalize waits for the winner's File object.
const OUTCOME_WAIT: Duration = Duration::from_secs(30);

/// The progress document of a `202 Accepted`.
#[derive(Serialize)]
struct Progress {
    total: u64,
    /// Received ranges, inclusive ends.
    ranges: Vec<[u64; 2]>,
}

/// Answers a chunk or a status query whose credentials the auth layer has verified.
pub(crate) async fn put_chunk<B>(
    cfg: &Arc<Config>,
    req: Request<B>,
    path: FilePath,
    answer: &Answer<'_>,
) -> Response<ResponseBody>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    match run(cfg, req, &path, answer).await {
        Ok(res) => res,
        Err(e) => answer.error(&e),
    }
}

async fn run<B>(
    cfg: &Arc<Config>,
    req: Request<B>,
    path: &FilePath,
    answer: &Answer<'_>,
) -> Result<Response<ResponseBody>, ApiError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let header_value = req
        .headers()
        .get(header::CONTENT_RANGE)
        .map(|v| v.as_bytes().to_vec())
        .unwrap_or_default();
    let range = content_range::parse(&header_value)?;
    match range {
        ContentRange::Status { total } => {
            if total > cfg.max_file_size {
                return Err(too_large(cfg.max_file_size, "declared total"));
            }
            if content_length(req.headers())?.unwrap_or(0) > 0 {
                return Err(ApiError::new(
                    ErrorKind::RangeInvalid,
                    "a status query (`bytes */total`) has an empty body",
                )
                .with_status(StatusCode::BAD_REQUEST));
            }
            status(cfg, req.headers(), path, total, answer).await
        }
        ContentRange::Chunk { start, end, total } => {
            range.validate()?;
            if total > cfg.max_file_size {
                return Err(too_large(cfg.max_file_size, "declared total"));
            }
            let mut max_len = range.max_len().min(cfg.max_request_size);
            if let Some(len) = content_length(req.headers())? {
                if len > cfg.max_request_size {
                    return Err(too_large(cfg.max_request_size, "chunk"));
                }
                range.resolve(len)?; // 400/416 before a byte is read
                max_len = len;
            } else if end - start > cfg.max_request_size {
                return Err(too_large(cfg.max_request_size, "chunk"));
            }
            chunk(cfg, req, path, range, total, max_len, answer).await
        }
    }
}

/// `bytes */total`: what has been received, or the File object if the upload is done.
async fn status(
    cfg: &Arc<Config>,
    headers: &HeaderMap,
    path: &FilePath,
    total: u64,
    answer: &Answer<'_>,
) -> Result<Response<ResponseBody>, ApiError> {
    if let Some(info) = cfg.storage.find_upload(path).await? {
        check_total(&info, total)?;
        let received = match cfg.storage.received(&info.id).await {
            Ok(r) => r,
            Err(StorageError::NotFound | StorageError::UploadClosed) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        if RangeSet::new(received.clone()).covers(total) {
            // Complete but not published (its finalizer died): finish it now.
            let (_, file) = finalize(cfg, headers, path, &info.id, total).await?;
            return Ok(file_response(answer, StatusCode::OK, &file));
        }
        return Ok(progress(answer, total, &received));
    }
    if let Some(record) = completed(cfg, path, total).await? {
        return Ok(file_response(answer, StatusCode::OK, &record.file));
    }
    Ok(progress(answer, total, &[]))
}

/// The published file at `path`, if it has `total` bytes.
async fn completed(cfg: &Config, path: &FilePath, total: u64) -> Result<Option<Record>, ApiError> {
    Ok(cfg
        .storage
        .head(path)
        .await?
        .filter(|m| m.size == total)
        .and_then(|m| Record::from_meta(&m)))
}

fn check_total(info: &UploadInfo, total: u64) -> Result<(), ApiError> {
    match info.total {
        Some(t) if t != total => Err(ApiError::new(
            ErrorKind::RangeConflict,
            format!("this upload's total is {t} bytes, not {total}"),
        )),
        _ => Ok(()),
    }
}

#[allow(clippy::too_many_arguments)]
async fn chunk<B>(
    cfg: &Arc<Config>,
    req: Request<B>,
    path: &FilePath,
    range: ContentRange,
    total: u64,
    max_len: u64,
    answer: &Answer<'_>,
) -> Result<Response<ResponseBody>, ApiError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let ContentRange::Chunk { start, .. } = range else {
        unreachable!("only chunks come here")
    };
    let mut digest = match req.headers().get("content-digest") {
        Some(v) => digest::parse_sha256(v.as_bytes())?.map(Sha256Check::new),
        None => None,
    };
    let (parts, body) = req.into_parts();

    let mut info = cfg
        .storage
        .open_upload(path, UploadSpec::Resumable { total })
        .await?;
    let idle = std::time::SystemTime::now()
        .duration_since(info.updated)
        .unwrap_or_default();
    if !info.created_now && idle > cfg.upload_ttl {
        // Expired but not yet swept: this chunk starts a new upload.
        cfg.storage.abort(&info.id).await?;
        info = cfg
            .storage
            .open_upload(path, UploadSpec::Resumable { total })
            .await?;
    }
    check_total(&info, total)?;

    // A chunk that opened a new upload of a path whose file has this total may be a retry
    // of the upload that produced it: compare it with the stored bytes as it streams in.
    let mut retry_of = None;
    let mut comparer = None;
    let mut shadow = None;
    if info.created_now {
        shadow = Some(AbortOnDrop::new(&cfg.storage, info.id.clone()));
        if let Some(meta) = cfg.storage.head(path).await?.filter(|m| m.size == total)
            && let Some(record) = Record::from_meta(&meta)
        {
            let stored_end = start.saturating_add(max_len).min(total);
            if start < stored_end
                && let Some((_, stream)) = cfg.storage.read(path, Some(start..stored_end)).await?
            {
                comparer = Some(Comparer::new(stream));
                retry_of = Some(record);
            }
        }
    }

    let mut writer = cfg.storage.writer(&info.id, start).await?;
    let pumped = pump(
        body,
        &mut *writer,
        max_len,
        Taps {
            sniff: None,
            digest: digest.as_mut(),
            compare: comparer.as_mut(),
        },
    )
    .await;
    let len = match pumped {
        Ok(len) => len,
        Err(PumpError::TooLarge) => {
            drop(writer);
            return Err(if max_len == cfg.max_request_size {
                too_large(cfg.max_request_size, "chunk")
            } else {
                content_range::RangeError::LengthMismatch.into()
            });
        }
        Err(PumpError::Client(e)) => {
            return Err(ApiError::new(
                ErrorKind::BadRequest,
                format!("the chunk's body ended early: {e}"),
            ));
        }
        Err(PumpError::Storage(StorageError::UploadClosed)) => {
            drop(writer);
            return raced(cfg, path, &info.id, answer).await;
        }
        Err(PumpError::Storage(e)) => return Err(e.into()),
    };
    let covered = range.resolve(len)?;
    if let Some(check) = digest
        && !check.finish()
    {
        return Err(ApiError::new(
            ErrorKind::DigestMismatch,
            "the chunk's Content-Digest does not match its bytes; it was not counted",
        ));
    }
    let same_as_stored = comparer.as_ref().is_some_and(Comparer::equal);
    drop(comparer);
    if let Some(record) = retry_of
        && same_as_stored
    {
        // A retry of a chunk of the finished upload: nothing new.
        drop(writer);
        if let Some(guard) = shadow.take() {
            guard.abort().await;
        }
        return Ok(file_response(answer, StatusCode::OK, &record.file));
    }
    if covered.end > start + len {
        return Err(content_range::RangeError::LengthMismatch.into());
    }
    let received = match writer.commit().await {
        Ok(r) => r,
        Err(StorageError::UploadClosed) => return raced(cfg, path, &info.id, answer).await,
        Err(e) => return Err(e.into()),
    };
    if let Some(mut guard) = shadow {
        guard.disarm(); // a real new upload: keep it
    }
    tracing::debug!(path = %path, start = covered.start, end = covered.end, total, "chunk received");
    if !RangeSet::new(received.clone()).covers(total) {
        return Ok(progress(answer, total, &received));
    }
    let (claimed, file) = finalize(cfg, &parts.headers, path, &info.id, total).await?;
    let status = if claimed {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(file_response(answer, status, &file))
}

/// A chunk whose upload was claimed (or discarded) while it streamed in: its bytes were not
/// needed. Answers the finished upload's File object.
async fn raced(
    cfg: &Arc<Config>,
    path: &FilePath,
    id: &UploadId,
    answer: &Answer<'_>,
) -> Result<Response<ResponseBody>, ApiError> {
    let file = outcome(cfg, path, id).await?;
    Ok(file_response(answer, StatusCode::OK, &file))
}

/// Claims and publishes a complete upload, in a task of its own so that a client going away
/// never strands a won claim. Returns whether this call published it, and the File object.
async fn finalize(
    cfg: &Arc<Config>,
    headers: &HeaderMap,
    path: &FilePath,
    id: &UploadId,
    total: u64,
) -> Result<(bool, crate::file::FileObject), ApiError> {
    let task = {
        let (cfg, headers, path, id) = (cfg.clone(), headers.clone(), path.clone(), id.clone());
        tokio::spawn(async move {
            match cfg.storage.claim(&id).await? {
                Claim::Won => match publish(&cfg, &headers, &path, &id, total).await {
                    Ok(file) => Ok(Some(file)),
                    Err(e) => {
                        // Let a later request (a retry, a status query) finish it.
                        if let Err(e) = cfg.storage.unclaim(&id).await {
                            tracing::warn!(upload = %id, error = %e, "could not give up a claim");
                        }
                        Err(e)
                    }
                },
                Claim::Lost => Ok(None),
            }
        })
    };
    let won: Result<Option<_>, ApiError> = task
        .await
        .map_err(|e| ApiError::internal(&format!("finalize task: {e}")))?;
    match won? {
        Some(file) => Ok((true, file)),
        None => Ok((false, outcome(cfg, path, id).await?)),
    }
}

async fn publish(
    cfg: &Config,
    headers: &HeaderMap,
    path: &FilePath,
    id: &UploadId,
    total: u64,
) -> Result<crate::file::FileObject, ApiError> {
    let result: Result<_, ApiError> = async {
        let head = staged_head(&*cfg.storage, id, total).await?;
        let facts = facts_of(&head, headers, path);
        let record = new_record(cfg, headers, path, total, &facts, id);
        let attributes = serde_json::to_vec(&record)
            .map_err(|e| ApiError::internal(&e))?
            .into();
        let options = PublishOptions {
            mode: PutMode::Overwrite,
            content_type: facts.mime_type.clone(),
            attributes,
        };
        cfg.storage.publish(id, path, total, options).await?;
        Ok(record.file)
    }
    .await;
    match &result {
        Ok(file) => {
            tracing::info!(path = %path, bytes = total, kind = %file.kind, "upload assembled and published")
        }
        Err(e) => tracing::warn!(path = %path, error = %e, "could not publish a complete upload"),
    }
    result
}

/// Waits for the File object published from upload `id` (another request is finalizing it).
async fn outcome(
    cfg: &Config,
    path: &FilePath,
    id: &UploadId,
) -> Result<crate::file::FileObject, ApiError> {
    let deadline = tokio::time::Instant::now() + OUTCOME_WAIT;
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(meta) = cfg.storage.head(path).await?
            && let Some(record) = Record::from_meta(&meta)
            && record.upload.as_deref() == Some(id.0.as_str())
        {
            return Ok(record.file);
        }
        let still_open = upload_exists(cfg, path, id).await?;
        if !still_open || tokio::time::Instant::now() >= deadline {
            return Err(ApiError::new(
                ErrorKind::RangeConflict,
                "the upload this chunk belonged to was finished or discarded meanwhile; \
                 send the chunk again to start a new upload",
            ));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

async fn upload_exists(cfg: &Config, path: &FilePath, id: &UploadId) -> StorageResult<bool> {
    Ok(cfg
        .storage
        .find_upload(path)
        .await?
        .is_some_and(|u| u.id == *id))
}

/// `202 Accepted` with `Range: bytes=a-b,…` and `{total, ranges}`.
fn progress(answer: &Answer<'_>, total: u64, received: &[Range<u64>]) -> Response<ResponseBody> {
    let ranges: Vec<[u64; 2]> = received
        .iter()
        .filter(|r| r.start < r.end)
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
