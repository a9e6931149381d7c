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

use super::body::HeadCheck;
use super::body::{Comparer, Head, PumpError, Taps, pump};
use super::content_range::{self, ContentRange};
use super::digest::{self, Sha256Check};
use super::{
    Record, check_conditions, conditions_of, content_length, derived_record, file_response,
    head_check, new_record, probe_staged, too_large,
};
use crate::body::{BoxError, ResponseBody};
use crate::conditions::{Facts, UploadConditions};
use crate::error::{ApiError, ErrorKind};
use crate::path::FilePath;
use crate::response::Answer;
use crate::service::config::Config;
use crate::storage::{
    Claim, PublishOptions, PutMode, RangeSet, Storage, StorageError, StorageResult, UploadId,
    UploadInfo, UploadSpec, UploadWriter,
};

/// How long a request waits for another one to finalize an upload: a loser of the race to
/// finalize for the winner's File object, a chunk arriving meanwhile for the upload to go.
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
            let conditions = conditions_of(cfg, req.extensions());
            status(cfg, req.headers(), path, total, &conditions, answer).await
        }
        ContentRange::Chunk { start, end, total } => {
            range.validate()?;
            if total > cfg.max_file_size {
                return Err(too_large(cfg.max_file_size, "declared total"));
            }
            check_conditions(
                &conditions_of(cfg, req.extensions()),
                &Facts::declared(Some(total)),
            )?;
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
            let limits = ChunkLimits {
                start,
                total,
                max_len,
            };
            chunk(cfg, req, path, range, limits, answer).await
        }
    }
}

/// `bytes */total`: what has been received, or the File object if the upload is done.
async fn status(
    cfg: &Arc<Config>,
    headers: &HeaderMap,
    path: &FilePath,
    total: u64,
    conditions: &UploadConditions,
    answer: &Answer<'_>,
) -> Result<Response<ResponseBody>, ApiError> {
    if let Some(info) = live_upload(cfg, path).await? {
        check_total(&info, total)?;
        let received = match cfg.storage.received(&info.id).await {
            Ok(r) => r,
            Err(StorageError::NotFound | StorageError::UploadClosed) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        if RangeSet::new(received.clone()).covers(total) {
            // Complete but not published (its finalizer died): finish it now.
            let (_, file) = finalize(cfg, headers, path, &info.id, total, conditions).await?;
            return Ok(file_response(answer, StatusCode::OK, &file));
        }
        return Ok(progress(answer, total, &received));
    }
    if let Some(record) = completed(cfg, headers, path, total).await? {
        return Ok(file_response(answer, StatusCode::OK, &record.file));
    }
    Ok(progress(answer, total, &[]))
}

/// The path's upload in progress, unless it has expired: an expired upload the sweeper has
/// not reached yet is discarded here, so that a status query reports nothing received and a
/// chunk starts a new upload (PROTOCOL.md §4), whenever the sweeper runs.
async fn live_upload(cfg: &Config, path: &FilePath) -> Result<Option<UploadInfo>, ApiError> {
    for _ in 0..4 {
        let Some(info) = cfg.storage.find_upload(path).await? else {
            return Ok(None);
        };
        let idle = std::time::SystemTime::now()
            .duration_since(info.updated)
            .unwrap_or_default();
        if idle <= cfg.upload_ttl {
            return Ok(Some(info));
        }
        match cfg.storage.abort(&info.id).await {
            // Gone already (swept, or finished by another request): look again.
            Ok(()) | Err(StorageError::NotFound | StorageError::UploadClosed) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::new(
        ErrorKind::RangeConflict,
        "the upload of this path kept changing while this request looked at it; send it again",
    ))
}

/// The published file at `path`, if it has `total` bytes.
/// Its record is the one stored with it, or derived from the version when it was published
/// without one (a small simple upload: [`derived_record`]).
async fn completed(
    cfg: &Config,
    headers: &HeaderMap,
    path: &FilePath,
    total: u64,
) -> Result<Option<Record>, ApiError> {
    let Some(meta) = cfg.storage.head(path).await?.filter(|m| m.size == total) else {
        return Ok(None);
    };
    match Record::from_meta(&meta) {
        Some(record) => Ok(Some(record)),
        None => derived_record(cfg, headers, path, &meta).await,
    }
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

/// What is known of a chunk before its body is read.
struct ChunkLimits {
    /// The offset of its first byte.
    start: u64,
    /// The file's total size.
    total: u64,
    /// The most bytes the body may have.
    max_len: u64,
}

/// Writes a chunk only into the parts of its range that were not received when it arrived,
/// each part through a storage writer of its own. Nothing counts before [`commit`], which the
/// caller calls only once the whole chunk is verified (length, digest): a corrupted or short
/// retry never overwrites bytes that count.
///
/// [`commit`]: UploadWriter::commit
struct GapWriter {
    storage: Arc<dyn Storage>,
    upload: UploadId,
    received: RangeSet,
    /// Absolute offset of the next byte.
    pos: u64,
    /// The writer of the gap being written.
    current: Option<Box<dyn UploadWriter>>,
    /// Writers of finished gaps (flushed), committed at the end.
    done: Vec<Box<dyn UploadWriter>>,
}

impl GapWriter {
    fn new(
        storage: Arc<dyn Storage>,
        upload: UploadId,
        received: Vec<Range<u64>>,
        start: u64,
    ) -> Self {
        GapWriter {
            storage,
            upload,
            received: RangeSet::new(received),
            pos: start,
            current: None,
            done: Vec::new(),
        }
    }

    async fn close_gap(&mut self) -> StorageResult<()> {
        if let Some(mut w) = self.current.take() {
            w.flush().await?;
            self.done.push(w);
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl UploadWriter for GapWriter {
    async fn write(&mut self, mut data: bytes::Bytes) -> StorageResult<()> {
        while !data.is_empty() {
            if let Some(r) = self.received.containing(self.pos) {
                let skip = (r.end - self.pos).min(data.len() as u64) as usize;
                self.close_gap().await?;
                let _ = data.split_to(skip);
                self.pos += skip as u64;
                continue;
            }
            let gap_end = self.received.next_start_after(self.pos).unwrap_or(u64::MAX);
            let n = (gap_end - self.pos).min(data.len() as u64) as usize;
            if self.current.is_none() {
                self.current = Some(self.storage.writer(&self.upload, self.pos).await?);
            }
            if let Some(w) = self.current.as_mut() {
                w.write(data.split_to(n)).await?;
            }
            self.pos += n as u64;
        }
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> StorageResult<Vec<Range<u64>>> {
        if let Some(w) = self.current.take() {
            self.done.push(w);
        }
        let mut ranges = None;
        for w in self.done {
            ranges = Some(w.commit().await?);
        }
        match ranges {
            Some(r) => Ok(r),
            // Everything was received already: report the current state.
            None => self.storage.received(&self.upload).await,
        }
    }
}

/// Where a chunk's bytes go.
enum Sink {
    /// Into the gaps of the path's upload in progress.
    Join {
        info: UploadInfo,
        writer: Box<GapWriter>,
    },
    /// No upload in progress and a published file of this total: maybe a retry of the
    /// upload that produced it.
    Compare {
        record: Box<Record>,
        writer: RetryOrWrite,
    },
}

/// Compares a chunk with the published file as it streams in. At the first byte that
/// differs it opens the path's upload (a new one, or one somebody else started meanwhile),
/// copies the identical prefix from the published file, and writes from there on. A chunk
/// that matches to its end leaves no state at all.
struct RetryOrWrite {
    cfg: Arc<Config>,
    path: FilePath,
    total: u64,
    start: u64,
    /// End of the prefix known to equal the published file.
    pos: u64,
    comparer: Comparer,
    opened: Option<(UploadInfo, Box<GapWriter>)>,
    /// The total of an upload started meanwhile, when it differs (→ 409).
    conflict: Option<u64>,
}

impl RetryOrWrite {
    async fn diverge(&mut self) -> StorageResult<()> {
        let storage = &self.cfg.storage;
        let info = storage
            .open_upload(&self.path, UploadSpec::Resumable { total: self.total })
            .await?;
        if info.total != Some(self.total) {
            self.conflict = info.total;
            return Err(StorageError::UploadClosed);
        }
        let received = storage.received(&info.id).await?;
        let mut writer = Box::new(GapWriter::new(
            storage.clone(),
            info.id.clone(),
            received,
            self.start,
        ));
        if self.pos > self.start {
            let Some((_, prefix)) = storage.read(&self.path, Some(self.start..self.pos)).await?
            else {
                return Err(StorageError::NotFound);
            };
            let mut prefix = prefix;
            while let Some(frame) = futures_util::StreamExt::next(&mut prefix).await {
                writer.write(frame?).await?;
            }
        }
        self.opened = Some((info, writer));
        Ok(())
    }
}

#[async_trait::async_trait]
impl UploadWriter for RetryOrWrite {
    async fn write(&mut self, data: bytes::Bytes) -> StorageResult<()> {
        if self.opened.is_none() {
            self.comparer.feed(&data).await;
            if self.comparer.equal() {
                self.pos += data.len() as u64;
                return Ok(());
            }
            self.diverge().await?;
        }
        match &mut self.opened {
            Some((_, writer)) => writer.write(data).await,
            None => Err(StorageError::UploadClosed),
        }
    }

    async fn commit(self: Box<Self>) -> StorageResult<Vec<Range<u64>>> {
        match self.opened {
            Some((_, writer)) => writer.commit().await,
            None => Ok(Vec::new()),
        }
    }
}

/// Chooses where a chunk goes. Never creates an upload for a chunk that may be a retry.
async fn sink(
    cfg: &Arc<Config>,
    headers: &HeaderMap,
    path: &FilePath,
    limits: &ChunkLimits,
) -> Result<Sink, ApiError> {
    let (start, total) = (limits.start, limits.total);
    for _ in 0..4 {
        let found = live_upload(cfg, path).await?;
        let info = match found {
            Some(info) => info,
            None => {
                if let Some(record) = completed(cfg, headers, path, total).await? {
                    let end = start.saturating_add(limits.max_len).min(total);
                    if start < end
                        && let Some((_, stored)) = cfg.storage.read(path, Some(start..end)).await?
                    {
                        return Ok(Sink::Compare {
                            record: Box::new(record),
                            writer: RetryOrWrite {
                                cfg: cfg.clone(),
                                path: path.clone(),
                                total,
                                start,
                                pos: start,
                                comparer: Comparer::new(stored),
                                opened: None,
                                conflict: None,
                            },
                        });
                    }
                }
                let info = cfg
                    .storage
                    .open_upload(path, UploadSpec::Resumable { total })
                    .await?;
                if info.created_now {
                    within_cap(cfg, &info.id).await?;
                }
                info
            }
        };
        check_total(&info, total)?;
        let received = match cfg.storage.received(&info.id).await {
            Ok(r) => r,
            // Finished or discarded between the lookup and now, or being finalized by the
            // chunk that completed it (claimed, not yet published): look again once it is
            // gone, and this chunk compares with the published file.
            Err(StorageError::NotFound | StorageError::UploadClosed) => {
                let mut wait = Finalizing::new();
                while upload_exists(cfg, path, &info.id).await? {
                    if !wait.pause().await {
                        return Err(ApiError::new(
                            ErrorKind::RangeConflict,
                            "the upload of this path is still being finished by another \
                             request; send this chunk again",
                        ));
                    }
                }
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let writer = Box::new(GapWriter::new(
            cfg.storage.clone(),
            info.id.clone(),
            received,
            start,
        ));
        return Ok(Sink::Join { info, writer });
    }
    Err(ApiError::new(
        ErrorKind::RangeConflict,
        "the upload of this path kept changing while this chunk arrived; send it again",
    ))
}

/// Refuses (429) and discards an upload just created when the storage now holds more
/// resumable uploads in progress than [`Uploads::max_incomplete_uploads`] allows. Counted
/// after creation, so that racing creators never exceed the cap together.
///
/// [`Uploads::max_incomplete_uploads`]: crate::Uploads::max_incomplete_uploads
async fn within_cap(cfg: &Config, id: &UploadId) -> Result<(), ApiError> {
    let Some(max) = cfg.max_incomplete_uploads else {
        return Ok(());
    };
    let listed = cfg.storage.list_uploads().await;
    let in_progress = match &listed {
        Ok(uploads) => uploads.iter().filter(|u| u.total.is_some()).count(),
        Err(_) => usize::MAX, // cannot count: refuse rather than exceed the cap
    };
    if in_progress <= max {
        return Ok(());
    }
    if let Err(e) = cfg.storage.abort(id).await {
        tracing::warn!(upload = %id, error = %e, "could not discard an upload over the cap");
    }
    listed?;
    Err(ApiError::new(
        ErrorKind::TooManyUploads,
        format!("too many uploads in progress (at most {max}); finish or let one expire first"),
    ))
}

async fn chunk<B>(
    cfg: &Arc<Config>,
    req: Request<B>,
    path: &FilePath,
    range: ContentRange,
    limits: ChunkLimits,
    answer: &Answer<'_>,
) -> Result<Response<ResponseBody>, ApiError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let (start, total, max_len) = (limits.start, limits.total, limits.max_len);
    let mut digest = match req.headers().get("content-digest") {
        Some(v) => digest::parse_sha256(v.as_bytes())?.map(Sha256Check::new),
        None => None,
    };
    let conditions = conditions_of(cfg, req.extensions());
    let (parts, body) = req.into_parts();
    let mut sink = sink(cfg, &parts.headers, path, &limits).await?;
    // The chunk holding offset 0 shows what the file is: check kind, type and dimensions as
    // soon as its first bytes are in.
    let head_phase = start == 0 && !conditions.is_empty();
    let mut head = Head::default();
    let mut on_head = head_check(&conditions, &parts.headers, path, Some(total));
    let taps = Taps {
        sniff: head_phase.then_some(&mut head),
        digest: digest.as_mut(),
        on_head: head_phase.then_some(&mut on_head as &mut HeadCheck<'_>),
    };
    let pumped = match &mut sink {
        Sink::Join { writer, .. } => pump(body, &mut **writer, max_len, taps).await,
        Sink::Compare { writer, .. } => pump(body, writer, max_len, taps).await,
    };
    let len = match pumped {
        Ok(len) => len,
        Err(PumpError::TooLarge) => {
            return Err(if max_len == cfg.max_request_size {
                too_large(cfg.max_request_size, "chunk")
            } else {
                content_range::RangeError::LengthMismatch.into()
            });
        }
        Err(PumpError::Limited) => return Err(super::cut_off()),
        Err(PumpError::Client(e)) => return Err(super::body::client_failed(&e, "chunk's body")),
        Err(PumpError::Storage(StorageError::UploadClosed)) => {
            return match sink {
                Sink::Compare {
                    writer:
                        RetryOrWrite {
                            conflict: Some(t), ..
                        },
                    ..
                } => Err(ApiError::new(
                    ErrorKind::RangeConflict,
                    format!("this upload's total is {t} bytes, not {total}"),
                )),
                Sink::Join { info, .. }
                | Sink::Compare {
                    writer:
                        RetryOrWrite {
                            opened: Some((info, _)),
                            ..
                        },
                    ..
                } => raced(cfg, path, &info.id, answer).await,
                Sink::Compare { .. } => Err(StorageError::UploadClosed.into()),
            };
        }
        Err(PumpError::Rejected(e)) => {
            discard(cfg, sink).await;
            return Err(e);
        }
        Err(PumpError::Storage(e)) => return Err(e.into()),
    };
    let covered = range.resolve(len)?;
    if head_phase && head.len() < crate::media::SNIFF_BYTES {
        // A first chunk shorter than the sniff window: judge what it settles.
        if let Err(e) = on_head(head.as_slice()) {
            discard(cfg, sink).await;
            return Err(e);
        }
    }
    if let Some(check) = digest
        && !check.finish()
    {
        return Err(ApiError::new(
            ErrorKind::DigestMismatch,
            "the chunk's Content-Digest does not match its bytes; it was not counted",
        ));
    }
    let (info, writer): (UploadInfo, Box<dyn UploadWriter>) = match sink {
        Sink::Compare {
            record,
            writer: RetryOrWrite { opened: None, .. },
        } => {
            // The same bytes as the finished upload's: a retry, nothing new.
            return Ok(file_response(answer, StatusCode::OK, &record.file));
        }
        Sink::Compare {
            writer:
                RetryOrWrite {
                    opened: Some((info, writer)),
                    ..
                },
            ..
        } => (info, writer),
        Sink::Join { info, writer } => (info, writer),
    };
    let received = match writer.commit().await {
        Ok(r) => r,
        Err(StorageError::UploadClosed | StorageError::NotFound) => {
            return raced(cfg, path, &info.id, answer).await;
        }
        Err(e) => return Err(e.into()),
    };
    tracing::debug!(path = %path, start = covered.start, end = covered.end, total, "chunk received");
    if !RangeSet::new(received.clone()).covers(total) {
        if let Some(h) = cfg.hooks() {
            h.on_chunk(&crate::hooks::ChunkEvent {
                path: path.clone(),
                range: covered.clone(),
                total,
                received: received.iter().map(|r| r.end - r.start).sum(),
            })
            .await;
        }
        return Ok(progress(answer, total, &received));
    }
    let (claimed, file) = finalize(cfg, &parts.headers, path, &info.id, total, &conditions).await?;
    let status = if claimed {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(file_response(answer, status, &file))
}

/// Discards the upload a chunk went into (its first bytes broke the conditions: nothing of
/// it may stay).
async fn discard(cfg: &Config, sink: Sink) {
    let id = match sink {
        Sink::Join { info, .. } => info.id,
        Sink::Compare {
            writer:
                RetryOrWrite {
                    opened: Some((info, _)),
                    ..
                },
            ..
        } => info.id,
        Sink::Compare { .. } => return,
    };
    if let Err(e) = cfg.storage.abort(&id).await {
        tracing::warn!(upload = %id, error = %e, "could not discard a rejected upload");
    }
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
    conditions: &UploadConditions,
) -> Result<(bool, crate::file::FileObject), ApiError> {
    let task = {
        let (cfg, headers, path, id) = (cfg.clone(), headers.clone(), path.clone(), id.clone());
        let conditions = conditions.clone();
        tokio::spawn(async move {
            match cfg.storage.claim(&id).await? {
                Claim::Won => match publish(&cfg, &headers, &path, &id, total, &conditions).await {
                    Ok(file) => Ok(Some(file)),
                    // Discarded: nothing to finish later.
                    Err(e)
                        if matches!(
                            e.kind(),
                            ErrorKind::ConditionsFailed | ErrorKind::UploadRejected
                        ) =>
                    {
                        Err(e)
                    }
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
    conditions: &UploadConditions,
) -> Result<crate::file::FileObject, ApiError> {
    let result: Result<_, ApiError> = async {
        let facts = probe_staged(cfg, id, total, None, headers, path).await;
        if let Err(e) = check_conditions(conditions, &Facts::complete(total, &facts)) {
            cfg.storage.abort(id).await?;
            return Err(e);
        }
        let mut record = new_record(cfg, headers, path, total, &facts, id);
        if let Err(e) =
            crate::hooks::decide(cfg.hooks(), &mut record.file, path, headers, None).await
        {
            cfg.storage.abort(id).await?;
            return Err(e);
        }
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
            tracing::info!(path = %path, bytes = total, kind = %file.kind, "upload assembled and published");
            if let Some(h) = cfg.hooks() {
                h.on_published(file).await;
            }
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
    let mut wait = Finalizing::new();
    loop {
        // Existence first, record second: a publication happens before its upload is
        // forgotten, so when the upload is seen gone here, the record read next shows
        // whether it was published.
        let still_open = upload_exists(cfg, path, id).await?;
        if let Some(meta) = cfg.storage.head(path).await?
            && let Some(record) = Record::from_meta(&meta)
            && record.upload.as_deref() == Some(id.0.as_str())
        {
            return Ok(record.file);
        }
        if !still_open || !wait.pause().await {
            return Err(ApiError::new(
                ErrorKind::RangeConflict,
                "the upload this chunk belonged to was finished or discarded meanwhile; \
                 send the chunk again to start a new upload",
            ));
        }
    }
}

/// The pace of a request waiting for another one to finalize an upload: 5 ms, doubling up
/// to 200 ms, for at most [`OUTCOME_WAIT`].
struct Finalizing {
    deadline: tokio::time::Instant,
    pause: Duration,
}

impl Finalizing {
    fn new() -> Self {
        Finalizing {
            deadline: tokio::time::Instant::now() + OUTCOME_WAIT,
            pause: Duration::from_millis(5),
        }
    }

    /// Sleeps before the next look; `false` (without sleeping) once the wait is over.
    async fn pause(&mut self) -> bool {
        if tokio::time::Instant::now() >= self.deadline {
            return false;
        }
        tokio::time::sleep(self.pause).await;
        self.pause = (self.pause * 2).min(Duration::from_millis(200));
        true
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
