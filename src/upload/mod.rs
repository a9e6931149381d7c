//! `PUT <base>/<path>`: simple uploads (PROTOCOL.md §3) and resumable `Content-Range` chunk
//! uploads (§4), streamed into a [`Storage`].
//!
//! The pure parsers ([`content_range`], [`digest`]) live apart from the I/O.

#[doc(hidden)]
pub use crate::headers::content_range;
#[doc(hidden)]
pub mod digest;

pub(crate) mod body;
mod chunk;
mod chunk_state;
mod finalize;
mod outcome;
mod resumable;
mod simple;
mod sinks;
pub(crate) mod tus;

pub(crate) use chunk_state::sweep as sweep_chunk_records;
pub(crate) use outcome::Outcome;
pub use sinks::MAX_UPLOAD_RANGES;

pub(crate) use resumable::put_chunk;
pub(crate) use simple::put_whole;

use bytes::Bytes;
use http::{HeaderMap, header};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::conditions::{Decision, Facts, UploadConditions};
use crate::config::Config;
use crate::error::{ApiError, ErrorKind};
use crate::file::FileObject;
use crate::media::{MediaFacts, MemorySource, SNIFF_BYTES, Source, UploadSource, probe, sniff};
use crate::path::FilePath;
use crate::storage::StorageExt;
use crate::storage::{ObjectMeta, PutMode, RecordKey, Storage, StorageResult, UploadId};
use std::collections::BTreeSet;

/// Metadata a protocol's request carries for its File object (tus `Upload-Metadata`), in the
/// request's extensions; the hooks' metadata is merged over it.
#[derive(Clone, Debug, Default)]
pub(crate) struct UploadMetadata(pub serde_json::Map<String, serde_json::Value>);

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

    /// The record's bytes (the attributes to publish) and its File object's JSON, serialised
    /// once for both: the record embeds the answer's JSON as is.
    pub(crate) fn encode(&self) -> Result<(Bytes, Box<RawValue>), ApiError> {
        #[derive(Serialize)]
        struct Raw<'a> {
            file: &'a RawValue,
            upload: Option<&'a str>,
        }
        let file =
            serde_json::value::to_raw_value(&self.file).map_err(|e| ApiError::internal(&e))?;
        let bytes = crate::response::to_json(&Raw {
            file: &file,
            upload: self.upload.as_deref(),
        })
        .map_err(|e| ApiError::internal(&e))?;
        Ok((bytes.into(), file))
    }
}

/// The media facts of a whole small file as they are derived again on reading: probed
/// from its bytes, without a `Content-Type` hint.
pub(crate) async fn version_facts(bytes: Bytes, path: &FilePath) -> MediaFacts {
    let head = bytes.slice(..bytes.len().min(SNIFF_BYTES));
    probe_bounded(MemorySource::new(bytes), Some(&head), None, path.filename()).await
}

/// [`probe`] without holding up an async worker (security finding 1: a probe that worked
/// for seconds on a worker thread stopped every other request on it, `accept` included).
/// `head`, when given, is the file's first [`SNIFF_BYTES`] (all of a shorter file): a file
/// that [`sniff`] does not find to be media is not parsed further, and its facts are
/// answered in place. Media are probed on tokio's blocking pool, their reads still going
/// through this runtime; each probe's work is bounded by the bytes it may read and by
/// [`PROBE_TIME`](crate::media::probe::PROBE_TIME).
async fn probe_bounded<S: Source + 'static>(
    src: S,
    head: Option<&[u8]>,
    hint: Option<&str>,
    filename: &str,
) -> MediaFacts {
    if let Some(head) = head {
        let sniffed = sniff(head, hint, filename);
        if !sniffed.recognised || sniffed.kind == crate::media::Kind::Other {
            // What `probe` answers for it too.
            return sniffed;
        }
    }
    let (hint, name) = (hint.map(str::to_owned), filename.to_owned());
    let rt = tokio::runtime::Handle::current();
    let job = tokio::task::spawn_blocking(move || {
        rt.block_on(async { probe(&src, hint.as_deref(), &name).await })
    });
    match job.await {
        Ok(facts) => facts,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // The runtime is shutting down: no answer will be sent anyway.
        Err(_) => sniff(&[], None, filename),
    }
}

/// The record of a version published without one ([`Capabilities::stable_meta`](crate::storage::Capabilities::stable_meta)): its File
/// object derived from the version and its bytes, exactly as the upload answered it.
/// `None` when the version is not such a one (a file put there by other means, a large
/// file, or a backend whose metadata is not stable), or when it was replaced meanwhile.
pub(crate) async fn derived_record(
    cfg: &Config,
    headers: &HeaderMap,
    path: &FilePath,
    meta: &ObjectMeta,
) -> Result<Option<Record>, ApiError> {
    if !meta.attributes.is_empty()
        || !cfg.storage.capabilities().stable_meta
        || meta.size > SNIFF_BYTES as u64
    {
        return Ok(None);
    }
    let Some((read, mut stream)) = cfg.storage.read(path, None).await? else {
        return Ok(None);
    };
    if read.etag != meta.etag {
        return Ok(None);
    }
    let mut bytes = Vec::with_capacity(meta.size as usize);
    while let Some(frame) = futures_util::StreamExt::next(&mut stream).await {
        bytes.extend_from_slice(&frame?);
        if bytes.len() as u64 > meta.size {
            return Ok(None);
        }
    }
    let facts = version_facts(bytes.into(), path).await;
    Ok(Some(Record {
        file: FileObject::of_version(path, cfg.file_url(headers, path), meta, &facts),
        upload: None,
    }))
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

/// The conditions a request's upload must meet: the app's (the [`Uploads`] policy and any
/// [`ConditionsLayer`](crate::conditions::ConditionsLayer)) and its upload session's.
///
/// [`Uploads`]: crate::Uploads
pub(crate) fn conditions_of(cfg: &Config, extensions: &http::Extensions) -> UploadConditions {
    let mut conditions = extensions
        .get::<UploadConditions>()
        .cloned()
        .unwrap_or_default();
    if let Some(app) = &cfg.conditions {
        conditions.push_app(app.clone());
    }
    conditions
}

/// `Err(422 conditions_failed)` when `facts` already decide that the conditions fail.
pub(crate) fn check_conditions(
    conditions: &UploadConditions,
    facts: &Facts<'_>,
) -> Result<(), ApiError> {
    if conditions.is_empty() {
        return Ok(());
    }
    let verdict = conditions.evaluate(facts);
    match verdict.decision() {
        Decision::Fail => Err(verdict.to_api_error()),
        _ => Ok(()),
    }
}

/// The Head-phase check of a file's first bytes, for [`body::Taps::on_head`].
pub(crate) fn head_check<'a>(
    conditions: &'a UploadConditions,
    headers: &'a HeaderMap,
    path: &'a FilePath,
    declared: Option<u64>,
) -> impl FnMut(&[u8]) -> Result<(), ApiError> + Send + 'a {
    move |head: &[u8]| {
        let facts = facts_of(head, headers, path);
        let whole = declared.is_some_and(|size| head.len() as u64 >= size);
        if !settled_by_head(&facts, head.len() >= SNIFF_BYTES || whole) {
            return Ok(()); // the complete file decides
        }
        check_conditions(conditions, &Facts::head(declared, &facts))
    }
}

/// Whether the first bytes settle what a file is. Containers whose streams decide the kind
/// (an MP4 or WebM with only audio is `audio`, an Ogg with Theora is `video`) are judged on
/// the complete file; a head shorter than the sniff window settles only media identified by
/// magic bytes (XML may yet be SVG, unrecognised bytes may yet be recognised).
pub(crate) fn settled_by_head(facts: &MediaFacts, full_head: bool) -> bool {
    let container = matches!(
        facts.mime_type.as_str(),
        "video/mp4"
            | "video/quicktime"
            | "video/x-m4v"
            | "video/webm"
            | "video/x-matroska"
            | "video/ogg"
            | "audio/mp4"
            | "audio/x-m4a"
            | "audio/webm"
            | "audio/x-matroska"
            | "audio/ogg"
            | "application/ogg"
    );
    !container && (full_head || (facts.recognised && facts.kind != crate::media::Kind::Other))
}

/// The media facts of a staged upload of `size` bytes, with the request's `Content-Type` hint
/// and the path's filename ([`probe_upload`]).
pub(crate) async fn probe_staged(
    cfg: &Config,
    upload: &UploadId,
    size: u64,
    head: Option<Bytes>,
    headers: &HeaderMap,
    path: &FilePath,
) -> MediaFacts {
    let hint = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    probe_upload(cfg, upload, size, head, hint, path.filename()).await
}

/// The media facts of a staged upload of `size` bytes: probed with bounded ranged reads
/// (from `head` alone when it holds the whole file).
pub(crate) async fn probe_upload(
    cfg: &Config,
    upload: &UploadId,
    size: u64,
    head: Option<Bytes>,
    hint: Option<&str>,
    filename: &str,
) -> MediaFacts {
    let first = size.min(SNIFF_BYTES as u64) as usize;
    let sniffable = head
        .as_ref()
        .filter(|h| h.len() >= first)
        .map(|h| h.slice(..first));
    match head {
        Some(head) if head.len() as u64 >= size => {
            probe_bounded(
                MemorySource::new(head),
                sniffable.as_deref(),
                hint,
                filename,
            )
            .await
        }
        _ => {
            let src = UploadSource::new(cfg.storage.clone(), upload.clone(), size);
            probe_bounded(src, sniffable.as_deref(), hint, filename).await
        }
    }
}

/// The facts of a file from its first bytes and the request's hint.
pub(crate) fn facts_of(head: &[u8], headers: &HeaderMap, path: &FilePath) -> MediaFacts {
    let hint = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    sniff(head, hint, path.filename())
}

/// The uploads in progress that [`max_incomplete_uploads`](crate::Uploads::max_incomplete_uploads)
/// caps: the storage's resumable uploads, and the upload sessions holding parts (one each:
/// they hold bytes the same way).
pub(crate) async fn uploads_in_progress(
    storage: &std::sync::Arc<dyn Storage>,
) -> StorageResult<usize> {
    let uploads = storage.list_uploads().await?;
    let sessions = sessions_with_parts(&**storage).await?;
    Ok(uploads.iter().filter(|u| u.total.is_some()).count() + sessions.len())
}

/// The upload sessions that hold parts: those with a hold record
/// `sessions/<id>/held/<hold>` (written by the session budget, `session/budget.rs`).
pub(crate) async fn sessions_with_parts(storage: &dyn Storage) -> StorageResult<BTreeSet<String>> {
    let root = RecordKey::new("sessions").expect("a valid record key");
    Ok(storage
        .list_records(&root)
        .await?
        .iter()
        .filter_map(|k| {
            let mut segs = k.as_str().split('/');
            let (_, id, held) = (segs.next()?, segs.next()?, segs.next()?);
            (held == "held" && segs.next().is_some()).then(|| id.to_owned())
        })
        .collect())
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

/// 413 for a body that a limiting layer in front of the service cut off.
pub(crate) fn cut_off() -> ApiError {
    ApiError::new(
        ErrorKind::FileTooLarge,
        "the request body is larger than this server's body limit",
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
