//! The chunk core of resumable uploads, protocol-neutral: a chunk stated by a [`ChunkSpec`]
//! (an offset, the total, what its body may cover) is streamed straight to its offset of the
//! path's upload in the storage; its range counts once its bytes are written (and, with a
//! `Content-Digest`, verified). The request whose commit closes the last gap claims the
//! upload — exactly one claim wins, even across processes — and publishes it. Everything
//! about the upload lives in the storage, so a restarted server or a second one carries on.
//! Frontends: ittybit's `Content-Range` (`resumable.rs`); tus and the IETF draft next.

use http::{HeaderMap, Request};
use http_body::Body;
use std::ops::Range;
use std::sync::Arc;

use subtle::ConstantTimeEq;

use super::body::HeadCheck;
use super::body::{Comparer, Head, PumpError, Taps, pump};
use super::chunk_state::ChunkState;
use super::digest::{self, Checksummer, Sha256Check};
use super::finalize::{Finalizing, finalize, forget, raced, upload_exists};
use super::sinks::{GapWriter, MAX_UPLOAD_RANGES, RetryOrWrite};
use super::{
    Outcome, Record, conditions_of, derived_record, head_check, precheck, put_mode, too_large,
};
use crate::body::BoxError;
use crate::conditions::UploadConditions;
use crate::config::Config;
use crate::error::{ApiError, ErrorKind};
use crate::headers::content_range;
use crate::headers::tus::ChecksumAlgorithm;
use crate::path::FilePath;
use crate::storage::StorageExt;
use crate::storage::{
    ChunkWriter, PutMode, RangeSet, StorageError, UploadId, UploadInfo, UploadSpec,
};

/// A status query of the path's upload of `total` bytes: what has been received, or the
/// File object if the upload is done (finishing one whose finalizer died).
pub(crate) async fn status(
    cfg: &Arc<Config>,
    parts: &http::request::Parts,
    path: &FilePath,
    total: u64,
    conditions: &UploadConditions,
) -> Result<Outcome, ApiError> {
    let (headers, extensions) = (&parts.headers, &parts.extensions);
    if let Some(info) = live_upload(cfg, path).await? {
        check_total(&info, total)?;
        let received = match cfg.storage.received(&info.id).await {
            Ok(r) => r,
            Err(StorageError::NotFound | StorageError::UploadClosed) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        if RangeSet::new(received.clone()).covers(total) {
            // Complete but not published (its finalizer died): finish it now.
            let (_, file) =
                finalize(cfg, headers, extensions, path, &info.id, total, conditions).await?;
            return Ok(Outcome::existing(file));
        }
        return Ok(Outcome::Progress { total, received });
    }
    // With private delivery a write credential learns nothing of a published file
    // (PROTOCOL.md §4): no upload in progress reads as an unknown upload.
    if !cfg.private
        && let Some(record) = completed(cfg, headers, path, total).await?
    {
        return Ok(Outcome::existing(record.file));
    }
    Ok(Outcome::Progress {
        total,
        received: Vec::new(),
    })
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

pub(crate) fn check_total(info: &UploadInfo, total: u64) -> Result<(), ApiError> {
    match info.total {
        Some(t) if t != total => Err(ApiError::new(
            ErrorKind::RangeConflict,
            format!("this upload's total is {t} bytes, not {total}"),
        )),
        _ => Ok(()),
    }
}

/// tus's status for a checksum mismatch (the checksum extension).
const CHECKSUM_MISMATCH: http::StatusCode = match http::StatusCode::from_u16(460) {
    Ok(s) => s,
    Err(_) => http::StatusCode::BAD_REQUEST,
};

/// A chunk of a resumable upload as its protocol states it, before its body is read: the
/// seam between a wire protocol and the chunk core. ittybit's `Content-Range` builds one with
/// [`ChunkSpec::new`] (`resumable.rs`); an offset protocol (tus `PATCH`, the IETF draft's
/// append) with [`ChunkSpec::at_offset`].
pub(crate) struct ChunkSpec {
    /// The offset of its first byte.
    pub(crate) start: u64,
    /// The file's total size.
    pub(crate) total: u64,
    /// The most bytes the body may have.
    pub(crate) max_len: u64,
    /// The ranges it may cover, for the fragment limit before its body is read: the one its
    /// declared length settles, or every reading that fits.
    pub(crate) candidates: Vec<Range<u64>>,
    /// The range the body covers once its length is known, or the protocol's error.
    settle: Settle,
    /// A digest of the body the protocol states (tus `Upload-Checksum`): the chunk counts
    /// only if its bytes have it (else `460`).
    pub(crate) checksum: Option<(ChecksumAlgorithm, Vec<u8>)>,
}

type Settle = Box<dyn Fn(u64) -> Result<Range<u64>, ApiError> + Send + Sync>;

impl ChunkSpec {
    pub(crate) fn new(
        start: u64,
        total: u64,
        max_len: u64,
        candidates: Vec<Range<u64>>,
        settle: impl Fn(u64) -> Result<Range<u64>, ApiError> + Send + Sync + 'static,
    ) -> Self {
        ChunkSpec {
            start,
            total,
            max_len,
            candidates,
            settle: Box::new(settle),
            checksum: None,
        }
    }

    /// The bytes of a body from `offset` of a `total`-byte upload: `len` of them when the
    /// request declares its length, else as many as it holds, at most `max_request`.
    /// 416 `range_invalid` when they cannot fit within `total`.
    pub(crate) fn at_offset(
        offset: u64,
        total: u64,
        len: Option<u64>,
        max_request: u64,
    ) -> Result<Self, ApiError> {
        let room = total
            .checked_sub(offset)
            .ok_or(content_range::RangeError::OutOfBounds)?;
        if len.is_some_and(|len| len > room) {
            return Err(content_range::RangeError::OutOfBounds.into());
        }
        let max_len = len.unwrap_or(room.min(max_request));
        let candidates = vec![offset..offset + max_len];
        let settle = move |got: u64| match len {
            Some(want) if got != want => Err(content_range::RangeError::LengthMismatch.into()),
            _ => Ok(offset..offset + got),
        };
        Ok(ChunkSpec::new(offset, total, max_len, candidates, settle))
    }

    /// The range a body of `len` bytes covers.
    fn covered(&self, len: u64) -> Result<Range<u64>, ApiError> {
        (self.settle)(len)
    }

    /// `409` when every reading of the chunk would leave its upload in more than
    /// [`MAX_UPLOAD_RANGES`] separate received ranges.
    fn check_fragments(&self, writer: &GapWriter) -> Result<(), ApiError> {
        if self.candidates.iter().all(|c| writer.fragments(c)) {
            return Err(too_fragmented());
        }
        Ok(())
    }
}

fn too_fragmented() -> ApiError {
    ApiError::new(
        ErrorKind::RangeConflict,
        format!(
            "this chunk would leave the upload in more than {MAX_UPLOAD_RANGES} separate \
             received ranges (the limit); send chunks that fill the gaps between them"
        ),
    )
}

/// Where a chunk's bytes go.
enum Sink {
    /// Into the gaps of the path's upload in progress.
    Join {
        info: UploadInfo,
        writer: Box<GapWriter>,
    },
    /// No upload in progress and a published file of this total: maybe a retry of the
    /// upload that produced it (public delivery: compared with the published file).
    Compare {
        record: Box<Record>,
        writer: RetryOrWrite,
    },
    /// Private delivery, no upload in progress, and the published file's upload received a
    /// chunk of this range: maybe a retry of that chunk. Its bytes are staged apart until
    /// their SHA-256 says whether they are that chunk's ([`chunk_state`]); only then do they
    /// go into a new upload.
    Stage {
        record: Box<Record>,
        staging: UploadId,
        writer: Box<dyn ChunkWriter>,
    },
}

/// Chooses where a chunk goes, holding it to its precondition (`mode`) when it joins or
/// creates an upload. Never creates an upload for a chunk that may be a retry.
async fn sink(
    cfg: &Arc<Config>,
    headers: &HeaderMap,
    path: &FilePath,
    spec: &ChunkSpec,
    mode: &PutMode,
) -> Result<Sink, ApiError> {
    let (start, total) = (spec.start, spec.total);
    for _ in 0..4 {
        let found = live_upload(cfg, path).await?;
        let info = match found {
            Some(info) => {
                precheck(&*cfg.storage, path, mode.clone()).await?;
                info
            }
            None => {
                if let Some(sink) = maybe_retry(cfg, headers, path, spec, mode).await? {
                    return Ok(sink);
                }
                create_upload(cfg, path, total, mode).await?
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
        spec.check_fragments(&writer)?;
        return Ok(Sink::Join { info, writer });
    }
    Err(ApiError::new(
        ErrorKind::RangeConflict,
        "the upload of this path kept changing while this chunk arrived; send it again",
    ))
}

/// The sink of a chunk that may be a retry of the upload that published the file at `path`
/// (of the same total), or `None` when it cannot be one.
async fn maybe_retry(
    cfg: &Arc<Config>,
    headers: &HeaderMap,
    path: &FilePath,
    spec: &ChunkSpec,
    mode: &PutMode,
) -> Result<Option<Sink>, ApiError> {
    let (start, total) = (spec.start, spec.total);
    if cfg.private {
        // Never compared with the stored bytes: only a chunk of a range that the published
        // file's own upload received may be its retry.
        let Some(meta) = cfg.storage.head(path).await?.filter(|m| m.size == total) else {
            return Ok(None);
        };
        let Some(record) = Record::from_meta(&meta) else {
            return Ok(None);
        };
        let Some(upload) = record.upload.clone() else {
            return Ok(None);
        };
        let state = ChunkState::of(&*cfg.storage, &UploadId(upload))?;
        if !state.has_range(&spec.candidates, cfg.upload_ttl).await? {
            return Ok(None);
        }
        let staging = cfg.storage.open_upload(path, UploadSpec::Single).await?;
        let writer = match cfg.storage.writer(&staging.id, 0).await {
            Ok(w) => w,
            Err(e) => {
                let _ = cfg.storage.abort(&staging.id).await;
                return Err(e.into());
            }
        };
        return Ok(Some(Sink::Stage {
            record: Box::new(record),
            staging: staging.id,
            writer,
        }));
    }
    let Some(record) = completed(cfg, headers, path, total).await? else {
        return Ok(None);
    };
    let end = start.saturating_add(spec.max_len).min(total);
    if start >= end {
        return Ok(None);
    }
    let Some((_, stored)) = cfg.storage.read(path, Some(start..end)).await? else {
        return Ok(None);
    };
    Ok(Some(Sink::Compare {
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
            mode: mode.clone(),
        },
    }))
}

/// Opens (creates, or joins when another request just did) the path's upload for a chunk that
/// passed its precondition; a new upload counts toward the cap and records the precondition.
/// The path's resumable upload of `total` bytes, created (held to `mode`, counted against the
/// cap, its precondition recorded) or joined.
pub(crate) async fn create_upload(
    cfg: &Config,
    path: &FilePath,
    total: u64,
    mode: &PutMode,
) -> Result<UploadInfo, ApiError> {
    let mode = precheck(&*cfg.storage, path, mode.clone()).await?;
    let info = cfg
        .storage
        .open_upload(path, UploadSpec::Resumable { total })
        .await?;
    if info.created_now {
        within_cap(cfg, &info.id).await?;
        if let Err(e) = ChunkState::of(&*cfg.storage, &info.id)?
            .set_precondition(&mode)
            .await
        {
            let _ = cfg.storage.abort(&info.id).await;
            return Err(e.into());
        }
        crate::metrics::upload_started(crate::metrics::Kind::Chunked);
    }
    Ok(info)
}

/// A staged chunk ([`Sink::Stage`]) that was not a retry: its bytes go into the path's
/// upload (a new one, unless another request started one meanwhile), and the staging is
/// discarded.
async fn adopt(
    cfg: &Arc<Config>,
    path: &FilePath,
    spec: &ChunkSpec,
    mode: &PutMode,
    staging: &UploadId,
    covered: &Range<u64>,
) -> Result<(UploadInfo, Box<GapWriter>), ApiError> {
    let info = create_upload(cfg, path, spec.total, mode).await?;
    check_total(&info, spec.total)?;
    let received = cfg.storage.received(&info.id).await?;
    let mut writer = Box::new(GapWriter::new(
        cfg.storage.clone(),
        info.id.clone(),
        received,
        covered.start,
    ));
    if writer.fragments(covered) {
        return Err(too_fragmented());
    }
    let mut staged = cfg
        .storage
        .read_upload(staging, 0..covered.end - covered.start)
        .await?;
    while let Some(frame) = futures_util::StreamExt::next(&mut staged).await {
        writer.write(frame?).await?;
    }
    Ok((info, writer))
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
    let counted = super::uploads_in_progress(&cfg.storage).await;
    // Cannot count: refuse rather than exceed the cap.
    let in_progress = *counted.as_ref().unwrap_or(&usize::MAX);
    if in_progress <= max {
        return Ok(());
    }
    if let Err(e) = cfg.storage.abort(id).await {
        tracing::warn!(upload = %id, error = %e, "could not discard an upload over the cap");
    }
    counted?;
    Err(ApiError::new(
        ErrorKind::TooManyUploads,
        format!("too many uploads in progress (at most {max}); finish or let one expire first"),
    ))
}

/// What a chunk's handling needs beside its body.
struct ChunkCtx<'a> {
    cfg: &'a Arc<Config>,
    path: &'a FilePath,
    spec: ChunkSpec,
}

/// Receives the body of a chunk of the path's resumable upload, stated by `spec`, whose
/// credentials and declared size the frontend has checked: into the gaps of the upload in
/// progress (or a new one, or compared with the published file when it may be a retry),
/// verified (`Content-Digest`, the head phase of the conditions), counted, and, when it
/// completes the upload, finalized: claim, probe, complete phase, publication, hooks. The
/// outcome is protocol-neutral; the frontend renders it.
pub(crate) async fn receive_chunk<B>(
    cfg: &Arc<Config>,
    path: &FilePath,
    spec: ChunkSpec,
    req: Request<B>,
) -> Result<Outcome, ApiError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let _timer = crate::metrics::ChunkTimer::start();
    let ctx = ChunkCtx { cfg, path, spec };
    let expected = digest::of_request(req.headers())?;
    let mode = put_mode(req.headers())?;
    let (parts, body) = req.into_parts();
    let sink = sink(cfg, &parts.headers, path, &ctx.spec, &mode).await?;
    let staging = match &sink {
        Sink::Stage { staging, .. } => Some(staging.clone()),
        _ => None,
    };
    let result = receive(&ctx, &parts, body, sink, expected, &mode).await;
    if let Some(id) = staging {
        match cfg.storage.abort(&id).await {
            Ok(()) | Err(StorageError::NotFound | StorageError::UploadClosed) => {}
            Err(e) => tracing::warn!(upload = %id, error = %e, "could not discard a staged chunk"),
        }
    }
    result
}

/// Streams a chunk into its sink, verifies it, and counts it: `202` with the progress, or the
/// File object when it completed the upload (or was a retry of a completed one).
async fn receive<B>(
    ctx: &ChunkCtx<'_>,
    parts: &http::request::Parts,
    body: B,
    mut sink: Sink,
    expected: Option<[u8; 32]>,
    mode: &PutMode,
) -> Result<Outcome, ApiError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let (cfg, path) = (ctx.cfg, ctx.path);
    let (start, total, max_len) = (ctx.spec.start, ctx.spec.total, ctx.spec.max_len);
    let conditions = conditions_of(cfg, &parts.extensions);
    // With private delivery every chunk's SHA-256 is recorded, for retries ([`chunk_state`]).
    let mut hasher =
        (expected.is_some() || cfg.private).then(|| Sha256Check::new(expected.unwrap_or_default()));
    // The chunk holding offset 0 shows what the file is: check kind, type and dimensions as
    // soon as its first bytes are in.
    let head_phase = start == 0 && !conditions.is_empty();
    let mut head = Head::copied();
    let mut on_head = head_check(&conditions, &parts.headers, path, Some(total));
    let mut checksum = ctx
        .spec
        .checksum
        .clone()
        .map(|(algorithm, want)| Checksummer::new(algorithm, want));
    let taps = Taps {
        sniff: head_phase.then_some(&mut head),
        digest: hasher.as_mut(),
        checksum: checksum.as_mut(),
        on_head: head_phase.then_some(&mut on_head as &mut HeadCheck<'_>),
    };
    let pumped = match &mut sink {
        Sink::Join { writer, .. } => pump(body, &mut **writer, max_len, taps).await,
        Sink::Compare { writer, .. } => pump(body, writer, max_len, taps).await,
        Sink::Stage { writer, .. } => pump(body, &mut **writer, max_len, taps).await,
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
                } => raced(cfg, path, &info.id).await,
                Sink::Compare { .. } | Sink::Stage { .. } => Err(StorageError::UploadClosed.into()),
            };
        }
        Err(PumpError::Rejected(e)) => {
            discard(cfg, sink).await;
            return Err(e);
        }
        Err(PumpError::Storage(e)) => return Err(e.into()),
    };
    let covered = ctx.spec.covered(len)?;
    if head_phase && head.len() < crate::media::SNIFF_BYTES {
        // A first chunk shorter than the sniff window: judge what it settles.
        if let Err(e) = on_head(head.as_slice()) {
            discard(cfg, sink).await;
            return Err(e);
        }
    }
    let chunk_digest = hasher.map(Sha256Check::into_digest);
    if let (Some(want), Some(got)) = (expected, chunk_digest)
        && !bool::from(want.ct_eq(&got))
    {
        return Err(ApiError::new(
            ErrorKind::DigestMismatch,
            "the chunk's Content-Digest does not match its bytes; it was not counted",
        ));
    }
    if checksum.is_some_and(|sum| !sum.matches()) {
        return Err(ApiError::new(
            ErrorKind::DigestMismatch,
            "the body's Upload-Checksum does not match its bytes; it was not counted",
        )
        .with_status(CHECKSUM_MISMATCH));
    }
    let (info, writer): (UploadInfo, Box<GapWriter>) = match sink {
        Sink::Compare {
            record,
            writer: RetryOrWrite { opened: None, .. },
        } => {
            // The same bytes as the finished upload's: a retry, nothing new.
            return Ok(Outcome::existing(record.file));
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
        Sink::Stage {
            record,
            staging,
            writer,
        } => {
            writer.commit().await?;
            let upload = UploadId(record.upload.clone().unwrap_or_default());
            let digest = chunk_digest.unwrap_or_default();
            if ChunkState::of(&*cfg.storage, &upload)?
                .received_chunk(&covered, &digest, cfg.upload_ttl)
                .await?
            {
                // Exactly a chunk the finished upload received: a retry, nothing new.
                return Ok(Outcome::existing(record.file));
            }
            adopt(cfg, path, &ctx.spec, mode, &staging, &covered).await?
        }
    };
    if writer.fragments(&covered) {
        return Err(too_fragmented());
    }
    let received = match writer.commit().await {
        Ok(r) => r,
        Err(StorageError::UploadClosed | StorageError::NotFound) => {
            return raced(cfg, path, &info.id).await;
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(digest) = chunk_digest.filter(|_| cfg.private) {
        // Best effort: without it, a retry of this chunk after completion starts a new upload.
        let recorded = match ChunkState::of(&*cfg.storage, &info.id) {
            Ok(state) => state.record_chunk(&covered, &digest).await,
            Err(e) => Err(e),
        };
        if let Err(e) = recorded {
            tracing::warn!(upload = %info.id, error = %e, "could not record a chunk's digest");
        }
    }
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
        return Ok(Outcome::Progress { total, received });
    }
    let (claimed, file) = finalize(
        cfg,
        &parts.headers,
        &parts.extensions,
        path,
        &info.id,
        total,
        &conditions,
    )
    .await?;
    Ok(Outcome::File {
        created: claimed,
        file,
        json: None,
    })
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
        // A staged chunk is discarded by its caller.
        Sink::Compare { .. } | Sink::Stage { .. } => return,
    };
    if let Err(e) = cfg.storage.abort(&id).await {
        tracing::warn!(upload = %id, error = %e, "could not discard a rejected upload");
    }
    forget(cfg, &id).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{MemoryStorage, Storage};
    use futures_util::TryStreamExt;
    use http::StatusCode;

    fn request(body: &'static [u8], len: bool) -> Request<http_body_util::Full<bytes::Bytes>> {
        let mut req = Request::put("/x")
            .body(http_body_util::Full::new(body.into()))
            .unwrap();
        if len {
            req.headers_mut()
                .insert(http::header::CONTENT_LENGTH, body.len().into());
        }
        req
    }

    #[test]
    fn offsets_from_a_table() {
        // (offset, total, declared length, max request) -> max_len, or the status refused
        type Row = (u64, u64, Option<u64>, u64, Result<u64, u16>);
        let rows: &[Row] = &[
            (0, 10, Some(4), 100, Ok(4)),
            (6, 10, Some(4), 100, Ok(4)),
            (6, 10, None, 100, Ok(4)),
            (0, 10, None, 3, Ok(3)),
            (10, 10, None, 100, Ok(0)),
            (7, 10, Some(4), 100, Err(416)),
            (11, 10, None, 100, Err(416)),
            (u64::MAX, 10, Some(1), 100, Err(416)),
        ];
        for &(offset, total, len, max, want) in rows {
            let got = ChunkSpec::at_offset(offset, total, len, max)
                .map(|s| s.max_len)
                .map_err(|e| e.status().as_u16());
            assert_eq!(got, want, "{offset} {total} {len:?} {max}");
        }
        let spec = ChunkSpec::at_offset(2, 10, Some(3), 100).unwrap();
        assert_eq!(spec.covered(3).unwrap(), 2..5);
        assert_eq!(
            spec.covered(2).unwrap_err().status(),
            StatusCode::BAD_REQUEST,
            "a body shorter than declared"
        );
        let open = ChunkSpec::at_offset(2, 10, None, 100).unwrap();
        assert_eq!(open.covered(5).unwrap(), 2..7, "as many as the body holds");
    }

    /// The core driven the way an offset protocol drives it: chunks at offsets, out of order,
    /// with and without a declared length; the last one publishes the file.
    #[tokio::test]
    async fn an_offset_protocol_uploads_through_the_core() {
        let storage = std::sync::Arc::new(MemoryStorage::new());
        let cfg = crate::Uploads::from_arc(storage.clone()).config();
        let path = FilePath::new("tus/file.bin").unwrap();
        let chunks: [(u64, &'static [u8], bool); 3] =
            [(6, b"6789", true), (0, b"012", false), (3, b"345", true)];
        let mut outcomes = Vec::new();
        for (offset, body, declared) in chunks {
            let len = declared.then_some(body.len() as u64);
            let spec = ChunkSpec::at_offset(offset, 10, len, 1 << 20).unwrap();
            let outcome = receive_chunk(&cfg, &path, spec, request(body, declared)).await;
            outcomes.push(outcome.unwrap());
        }
        assert!(matches!(
            &outcomes[0],
            Outcome::Progress { total: 10, received } if *received == vec![6..10]
        ));
        assert!(matches!(
            &outcomes[1],
            Outcome::Progress { received, .. } if *received == vec![0..3, 6..10]
        ));
        assert!(matches!(&outcomes[2], Outcome::File { created: true, .. }));
        let (meta, stream) = storage.read(&path, None).await.unwrap().unwrap();
        let bytes: Vec<bytes::Bytes> = stream.try_collect().await.unwrap();
        assert_eq!((meta.size, bytes.concat()), (10, b"0123456789".to_vec()));
        // A body that is not the length it declared counts nothing.
        let spec = ChunkSpec::at_offset(0, 4, Some(4), 1 << 20).unwrap();
        let mut short = request(b"abc", false);
        short
            .headers_mut()
            .insert(http::header::CONTENT_LENGTH, 4.into());
        let other = FilePath::new("tus/short.bin").unwrap();
        let refused = receive_chunk(&cfg, &other, spec, short)
            .await
            .err()
            .unwrap();
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
        assert!(storage.head(&other).await.unwrap().is_none());
    }
}
