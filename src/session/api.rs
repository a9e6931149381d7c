//! The session endpoints: `POST /uploads`, `POST /store/single`, `PUT /store/resumable`,
//! `POST /store/resumable`.

use bytes::{Buf, Bytes};
use futures_util::{StreamExt, TryStreamExt};
use http::{HeaderMap, Request, Response, StatusCode, Uri, header};
use http_body::{Body, Frame};
use http_body_util::{BodyDataStream, StreamBody};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::budget;
use super::key::SessionKey;
use super::model::{
    CreateSession, MAX_COMPLETE_BODY, MAX_CREATE_BODY, MediaObject, MediaRecord, PartRecord,
    PartRef, SessionRecord, parse_complete, parse_index,
};
use super::multipart::{
    FormLimits, form_type, from_boxed, next_file_part, open_form_tapped, skip_rest,
};
use crate::body::{BoxError, ResponseBody};
use crate::conditions::{Facts, UploadConditions};
use crate::error::{ApiError, ErrorKind};
use crate::file::{FileObject, random_id};
use crate::media::{MediaFacts, SNIFF_BYTES, sniff};
use crate::path::FilePath;
use crate::response::Answer;
use crate::service::config::Config;
use crate::storage::{
    Claim, PublishOptions, PutMode, RecordKey, RecordMode, StorageError, UploadId, UploadSpec,
};
use crate::upload::body::{Head, HeadCheck, PumpError, Taps, pump};
use crate::upload::digest::{DigestError, Sha256Check, parse_sha256};
use crate::upload::{
    AbortOnDrop, Record, check_conditions, conditions_of, content_length, probe_upload, too_large,
};
use subtle::ConstantTimeEq as _;

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn key(s: String) -> Result<RecordKey, ApiError> {
    RecordKey::new(s).map_err(|e| ApiError::internal(&e))
}

pub(crate) fn session_key(id: &str) -> Result<RecordKey, ApiError> {
    key(format!("sessions/{id}"))
}

fn done_key(id: &str) -> Result<RecordKey, ApiError> {
    key(format!("sessions/{id}/done"))
}

fn parts_key(id: &str) -> Result<RecordKey, ApiError> {
    key(format!("sessions/{id}/parts"))
}

fn part_key(id: &str, index: u32) -> Result<RecordKey, ApiError> {
    key(format!("sessions/{id}/parts/{index}"))
}

pub(crate) fn media_key(id: &str) -> Result<RecordKey, ApiError> {
    key(format!("media/{id}"))
}

/// The SHA-256 of a request's `Content-Digest` (RFC 9530), if it has one: 400
/// `digest_mismatch` when the header is malformed, before any byte is read.
fn content_digest(headers: &HeaderMap) -> Result<Option<[u8; 32]>, ApiError> {
    match headers.get("content-digest") {
        Some(v) => Ok(parse_sha256(v.as_bytes())?),
        None => Ok(None),
    }
}

fn gone(message: &'static str) -> ApiError {
    ApiError::new(ErrorKind::UploadGone, message)
}

fn internal_json(e: serde_json::Error) -> ApiError {
    ApiError::internal(&e)
}

#[derive(Serialize)]
struct CreatedSession {
    id: String,
    url: String,
    expiry: u64,
}

/// `POST <base>/uploads` (bearer verified by the caller).
pub(crate) async fn create<B>(
    cfg: &Config,
    req: Request<B>,
    answer: &Answer<'_>,
) -> Response<ResponseBody>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    match create_session(cfg, req).await {
        Ok(obj) => answer.data(StatusCode::OK, &obj, Some("upload"), None),
        Err(e) => answer.error(&e),
    }
}

async fn create_session<B>(cfg: &Config, req: Request<B>) -> Result<CreatedSession, ApiError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let base = cfg.base_url(req.headers());
    let body = crate::api::read_small(req.into_body(), MAX_CREATE_BODY + 1).await?;
    let spec = CreateSession::parse(&body)?;
    if let Some(alias) = &spec.alias
        && cfg.storage.head(alias).await?.is_some()
    {
        return Err(alias_taken(alias));
    }
    let id = random_id("ses_");
    let created = now_secs();
    let expiry = created.saturating_add(cfg.session_ttl.as_secs());
    let record = SessionRecord {
        id: id.clone(),
        resumable: spec.resumable,
        conditions: spec.conditions,
        alias: spec.alias.map(|a| a.as_str().to_owned()),
        metadata: spec.metadata,
        expiry,
        created,
    };
    let bytes = serde_json::to_vec(&record).map_err(internal_json)?;
    cfg.storage
        .put_record(&session_key(&id)?, bytes.into(), RecordMode::Create)
        .await?;
    let key = SessionKey {
        id: id.clone(),
        expiry,
        resumable: spec.resumable,
    }
    .encode(cfg.keys.primary());
    let endpoint = if spec.resumable {
        "resumable"
    } else {
        "single"
    };
    tracing::info!(session = %id, resumable = spec.resumable, "upload session created");
    Ok(CreatedSession {
        id,
        url: format!("{base}/store/{endpoint}?key={key}"),
        expiry,
    })
}

fn alias_taken(alias: &FilePath) -> ApiError {
    ApiError::new(
        ErrorKind::AliasTaken,
        format!("the alias {alias} is already the path of a file"),
    )
}

/// The `key` query parameter, percent-decoded.
fn query_key(uri: &Uri) -> Option<String> {
    uri.query()?.split('&').find_map(|pair| {
        let value = pair.strip_prefix("key=")?;
        // Not UTF-8 after decoding: kept (lossily) so that it is refused as invalid.
        Some(
            percent_encoding::percent_decode_str(value)
                .decode_utf8_lossy()
                .into_owned(),
        )
    })
}

/// A live session: its verified key and its record.
struct Live {
    key: SessionKey,
    record: SessionRecord,
}

/// Verifies the `?key=` and finds its session: 401 without a key, 403 for a tampered one or
/// one made for the other endpoint (`resumable` says which this is), 410 when expired, swept
/// or already used.
async fn open_session(cfg: &Config, uri: &Uri, resumable: bool) -> Result<Live, ApiError> {
    let Some(raw) = query_key(uri) else {
        return Err(ApiError::new(
            ErrorKind::TokenMissing,
            "this endpoint needs the ?key= of an upload session (POST /uploads makes one)",
        ));
    };
    let key = SessionKey::decode(&raw, &cfg.keys)
        .map_err(|_| ApiError::new(ErrorKind::KeyInvalid, "the upload key is not valid"))?;
    if key.resumable != resumable {
        return Err(ApiError::new(
            ErrorKind::KeyInvalid,
            if key.resumable {
                "this upload key is for /store/resumable (parts), not /store/single"
            } else {
                "this upload key is for /store/single (one form), not /store/resumable"
            },
        ));
    }
    if now_secs() > key.expiry {
        return Err(gone("this upload key has expired"));
    }
    let Some(bytes) = cfg.storage.get_record(&session_key(&key.id)?).await? else {
        return Err(gone("this upload session no longer exists"));
    };
    let record: SessionRecord = serde_json::from_slice(&bytes).map_err(internal_json)?;
    if record.resumable != resumable {
        return Err(ApiError::new(
            ErrorKind::KeyInvalid,
            "this upload key is not for this endpoint",
        ));
    }
    if cfg.storage.get_record(&done_key(&key.id)?).await?.is_some() {
        return Err(gone(
            "this upload key was already used: it is valid for one upload",
        ));
    }
    Ok(Live { key, record })
}

/// The app's conditions and the session's.
fn conditions_for(
    cfg: &Config,
    ext: &http::Extensions,
    record: &SessionRecord,
) -> UploadConditions {
    let mut c = conditions_of(cfg, ext);
    if let Some(s) = &record.conditions {
        c.set_session(Some(Arc::new(s.clone())));
    }
    c
}

/// The Head-phase check of a session upload's first bytes.
fn head_check<'a>(
    conditions: &'a UploadConditions,
    hint: Option<&'a str>,
    filename: &'a str,
) -> impl FnMut(&[u8]) -> Result<(), ApiError> + Send + 'a {
    move |head: &[u8]| {
        let facts = sniff(head, hint, filename);
        if !crate::upload::settled_by_head(&facts, head.len() >= SNIFF_BYTES) {
            return Ok(());
        }
        check_conditions(conditions, &Facts::head(None, &facts))
    }
}

/// Where a session's file is published, and its media id.
fn target_of(record: &SessionRecord) -> Result<(String, FilePath), ApiError> {
    let media_id = random_id("med_");
    let path = match &record.alias {
        Some(a) => FilePath::new(a.clone()).map_err(|e| ApiError::internal(&e))?,
        None => {
            FilePath::new(format!("{media_id}/original")).map_err(|e| ApiError::internal(&e))?
        }
    };
    Ok((media_id, path))
}

/// A form's file part failed: multer's own errors (malformed form, part limit) first.
fn pump_error(e: PumpError, limit: u64) -> ApiError {
    match e {
        PumpError::Client(e) => from_boxed(&e),
        e => e.into_api(limit, "file"),
    }
}

/// `POST <base>/store/single?key=K`: a `multipart/form-data` body with the file.
pub(crate) async fn single<B>(
    cfg: &Config,
    req: Request<B>,
    answer: &Answer<'_>,
) -> Response<ResponseBody>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError> + Send,
{
    match store_single(cfg, req).await {
        Ok(media) => media_response(answer, &media),
        Err(e) => answer.error(&e),
    }
}

fn media_response(answer: &Answer<'_>, media: &MediaObject) -> Response<ResponseBody> {
    answer.data(StatusCode::OK, media, Some("media"), Some(&media.url))
}

async fn store_single<B>(cfg: &Config, req: Request<B>) -> Result<MediaObject, ApiError>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError> + Send,
{
    let live = open_session(cfg, req.uri(), false).await?;
    if let Some(len) = content_length(req.headers())?
        && len > cfg.max_request_size
    {
        return Err(too_large(cfg.max_request_size, "body"));
    }
    let form = form_type(
        req.headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap_or("?")),
    )?;
    let expected = content_digest(req.headers())?;
    let conditions = conditions_for(cfg, req.extensions(), &live.record);
    let (parts, body) = req.into_parts();
    let stream = BodyDataStream::new(body).map_ok(|mut d| d.copy_to_bytes(d.remaining()));
    let file_limit = cfg.max_request_size.min(cfg.max_file_size);
    let limits = FormLimits {
        body: cfg.max_request_size,
        file: file_limit,
    };
    let (mut form, tap) =
        open_form_tapped(form, Box::pin(stream), limits, expected.is_some()).await?;
    let Some(field) = next_file_part(&mut form).await? else {
        return Err(ApiError::new(
            ErrorKind::MultipartInvalid,
            "the form has no part named `file`",
        ));
    };
    let hint = field.content_type().map(|m| m.essence_str().to_owned());
    let filename = field.file_name().unwrap_or("").to_owned();

    let (media_id, target) = target_of(&live.record)?;
    let upload = cfg.storage.open_upload(&target, UploadSpec::Single).await?;
    let guard = AbortOnDrop::new(&cfg.storage, upload.id.clone());
    let mut writer = cfg.storage.writer(&upload.id, 0).await?;
    let mut head = Head::default();
    let mut on_head = head_check(&conditions, hint.as_deref(), &filename);
    let data = StreamBody::new(field.map_ok(Frame::data));
    let mut file_sha = expected.map(Sha256Check::new);
    let pumped = pump(
        data,
        &mut *writer,
        file_limit,
        Taps {
            sniff: Some(&mut head),
            digest: file_sha.as_mut(),
            on_head: (!conditions.is_empty()).then_some(&mut on_head as &mut HeadCheck<'_>),
        },
    )
    .await;
    let size = match pumped {
        Ok(size) => size,
        Err(e) => {
            drop(writer);
            guard.abort().await;
            return Err(pump_error(e, file_limit));
        }
    };
    // Read the rest of the form (other parts are ignored) so the connection stays usable.
    skip_rest(&mut form).await?;
    drop(form);
    if let Some(expected) = expected {
        // RFC 9530: the digest of the whole content, here the form. A digest of the file's
        // bytes alone (what a client that hashes the file it attaches sends) is accepted too.
        let whole = tap.drain(cfg.max_request_size).await?;
        let form_ok = whole.is_some_and(|d| bool::from(d.ct_eq(&expected)));
        let file_ok = file_sha.is_some_and(Sha256Check::finish);
        if !form_ok && !file_ok {
            drop(writer);
            guard.abort().await;
            return Err(DigestError::Mismatch.into());
        }
    }
    if let Err(e) = writer.commit().await {
        guard.abort().await;
        return Err(e.into());
    }
    let staged = Staged {
        upload: upload.id.clone(),
        size,
        head: head.into_bytes(),
        hint: hint.as_deref(),
        filename: &filename,
    };
    finish(
        cfg,
        &parts.headers,
        &live,
        media_id,
        target,
        staged,
        &conditions,
        guard,
    )
    .await
}

/// A complete upload waiting to be published.
struct Staged<'a> {
    upload: UploadId,
    size: u64,
    /// The first bytes (all of them for a small file).
    head: Bytes,
    hint: Option<&'a str>,
    filename: &'a str,
}

/// Probes, checks the conditions, spends the key (exactly once), publishes, and builds the
/// Media object. On any failure the staged bytes are discarded and the key stays unspent.
#[allow(clippy::too_many_arguments)]
async fn finish(
    cfg: &Config,
    headers: &HeaderMap,
    live: &Live,
    media_id: String,
    target: FilePath,
    staged: Staged<'_>,
    conditions: &UploadConditions,
    mut guard: AbortOnDrop<'_>,
) -> Result<MediaObject, ApiError> {
    let storage = &cfg.storage;
    if storage.claim(&staged.upload).await? != Claim::Won {
        guard.abort().await;
        return Err(StorageError::UploadClosed.into());
    }
    let facts: MediaFacts = probe_upload(
        cfg,
        &staged.upload,
        staged.size,
        Some(staged.head),
        staged.hint,
        staged.filename,
    )
    .await;
    if let Err(e) = check_conditions(conditions, &Facts::complete(staged.size, &facts)) {
        guard.abort().await;
        return Err(e);
    }
    let base = cfg.base_url(headers);
    let source_url = format!("{base}/{media_id}/original");
    let url = format!("{base}/{}", target.to_uri_path());
    let mut file = FileObject::new(&target, url, staged.size, &facts);
    file.media_id = media_id.clone();
    file.metadata = live.record.metadata.clone();
    if let Err(e) =
        crate::hooks::decide(cfg.hooks(), &mut file, &target, headers, Some(&live.key.id)).await
    {
        guard.abort().await;
        return Err(e);
    }
    let done = done_key(&live.key.id)?;
    match storage
        .put_record(&done, Bytes::from_static(b"{}"), RecordMode::Create)
        .await
    {
        Ok(()) => {}
        Err(StorageError::PreconditionFailed) => {
            guard.abort().await;
            return Err(gone(
                "this upload key was already used: it is valid for one upload",
            ));
        }
        Err(e) => {
            guard.abort().await;
            return Err(e.into());
        }
    }
    let record = Record {
        file,
        upload: Some(staged.upload.0.clone()),
    };
    let attributes = serde_json::to_vec(&record).map_err(internal_json)?.into();
    let aliased = live.record.alias.is_some();
    let media_rec = if aliased {
        let k = media_key(&media_id)?;
        let rec = serde_json::to_vec(&MediaRecord {
            path: target.as_str().to_owned(),
        })
        .map_err(internal_json)?;
        if let Err(e) = storage
            .put_record(&k, rec.into(), RecordMode::Overwrite)
            .await
        {
            undo(&**storage, &done, None).await;
            guard.abort().await;
            return Err(e.into());
        }
        Some(k)
    } else {
        None
    };
    let options = PublishOptions {
        mode: if aliased {
            PutMode::Create
        } else {
            PutMode::Overwrite
        },
        content_type: facts.mime_type.clone(),
        attributes,
    };
    match storage
        .publish(&staged.upload, &target, staged.size, options)
        .await
    {
        Ok(_) => guard.disarm(),
        Err(e) => {
            undo(&**storage, &done, media_rec.as_ref()).await;
            guard.abort().await;
            return Err(match e {
                StorageError::PreconditionFailed => alias_taken(&target),
                e => e.into(),
            });
        }
    }
    tracing::info!(session = %live.key.id, media = %media_id, path = %target, bytes = staged.size, "session upload published");
    if let Some(h) = cfg.hooks() {
        h.on_published(&record.file).await;
    }
    Ok(MediaObject::new(
        &record.file,
        live.record.alias.as_deref(),
        source_url,
    ))
}

/// Takes back what [`finish`] recorded before a failed publication: the key is not spent.
async fn undo(storage: &dyn crate::storage::Storage, done: &RecordKey, media: Option<&RecordKey>) {
    let _ = storage.delete_record(done).await;
    if let Some(m) = media {
        let _ = storage.delete_record(m).await;
    }
}

#[derive(Serialize)]
struct PartAnswer {
    index: u32,
    etag: String,
}

/// `PUT <base>/store/resumable?key=K` with `X-Upload-Index`.
pub(crate) async fn put_part<B>(
    cfg: &Config,
    req: Request<B>,
    answer: &Answer<'_>,
) -> Response<ResponseBody>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    match store_part(cfg, req).await {
        Ok(part) => answer.data(StatusCode::OK, &part, Some("part"), None),
        Err(e) => answer.error(&e),
    }
}

async fn store_part<B>(cfg: &Config, req: Request<B>) -> Result<PartAnswer, ApiError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let live = open_session(cfg, req.uri(), true).await?;
    let id = live.key.id.as_str();
    let Some(index) = req.headers().get("x-upload-index") else {
        return Err(ApiError::new(
            ErrorKind::PartInvalid,
            "a part needs an X-Upload-Index header (0, 1, 2, …)",
        ));
    };
    let index = parse_index(index.as_bytes())?;
    let expected = content_digest(req.headers())?;
    let limit = cfg.max_request_size.min(cfg.max_file_size);
    let declared = content_length(req.headers())?;
    if let Some(len) = declared
        && len > limit
    {
        return Err(too_large(limit, "part"));
    }
    let k = part_key(id, index)?;
    let previous = cfg
        .storage
        .get_record(&k)
        .await?
        .and_then(|b| serde_json::from_slice::<PartRecord>(&b).ok());
    let replaces = previous.as_ref().and_then(|p| p.hold.as_deref());
    // The part's hold on the session's budget, taken before any byte is read: its declared
    // length, else all the room left.
    let wanted = match declared {
        Some(len) => len,
        None => budget::room(cfg, id, replaces).await?.min(limit),
    };
    let hold = budget::reserve(cfg, id, wanted, replaces).await?;
    let part_path =
        FilePath::new(format!("{id}/part-{index}")).map_err(|e| ApiError::internal(&e))?;
    let upload = cfg
        .storage
        .open_upload(&part_path, UploadSpec::Single)
        .await?;
    let mut guard = AbortOnDrop::new(&cfg.storage, upload.id.clone());
    let mut writer = cfg.storage.writer(&upload.id, 0).await?;
    let mut sha = Sha256Check::new([0; 32]);
    let pumped = pump(
        req.into_body(),
        &mut *writer,
        hold.bytes,
        Taps {
            digest: Some(&mut sha),
            ..Taps::default()
        },
    )
    .await;
    let size = match pumped {
        Ok(size) => size,
        Err(e) => {
            drop(writer);
            guard.abort().await;
            let room = hold.bytes;
            hold.release().await;
            return Err(match e {
                // Past the room left in the session rather than the request limit.
                PumpError::TooLarge if room < limit => session_full(cfg, room),
                e => e.into_api(limit, "part"),
            });
        }
    };
    let digest = sha.into_digest();
    if let Some(expected) = expected
        && !bool::from(digest.ct_eq(&expected))
    {
        drop(writer);
        guard.abort().await;
        hold.release().await;
        return Err(DigestError::Mismatch.into());
    }
    // A part outlives this request (any process may assemble it): it needs a lasting name.
    let committed = match writer.commit().await {
        Ok(_) => cfg.storage.keep_upload(&upload.id).await,
        Err(e) => Err(e),
    };
    if let Err(e) = committed {
        guard.abort().await;
        hold.release().await;
        return Err(e.into());
    }
    let hold = match budget::shrink(cfg, id, hold, size).await {
        Ok(hold) => hold,
        Err(e) => {
            guard.abort().await;
            return Err(e);
        }
    };
    let etag = hex::encode(digest);
    let rec = PartRecord {
        upload: upload.id.0.clone(),
        size,
        etag: etag.clone(),
        hold: Some(hold.name.clone()),
    };
    let bytes = serde_json::to_vec(&rec).map_err(internal_json)?;
    if let Err(e) = cfg
        .storage
        .put_record(&k, bytes.into(), RecordMode::Overwrite)
        .await
    {
        guard.abort().await;
        hold.release().await;
        return Err(e.into());
    }
    guard.disarm();
    hold.keep();
    // The last upload of an index wins; the bytes it replaces, and their hold, are freed.
    if let Some(prev) = previous
        && prev.upload != rec.upload
    {
        if let Err(e) = cfg.storage.abort(&UploadId(prev.upload)).await {
            tracing::warn!(error = %e, "could not free a replaced part");
        }
        if let Some(h) = &prev.hold {
            budget::release_named(&*cfg.storage, id, h).await;
        }
    }
    tracing::debug!(session = %id, index, bytes = size, "session part stored");
    Ok(PartAnswer { index, etag })
}

/// 413 for a part that does not fit in the room its session has left.
fn session_full(cfg: &Config, room: u64) -> ApiError {
    ApiError::new(
        ErrorKind::FileTooLarge,
        format!(
            "the session's parts would be larger than the file-size limit of {} bytes \
             (this part had {room} bytes of room left)",
            cfg.max_file_size
        ),
    )
}

/// Every part record of a session, by index.
async fn uploaded_parts(cfg: &Config, id: &str) -> Result<BTreeMap<u32, PartRecord>, ApiError> {
    let mut out = BTreeMap::new();
    for k in cfg.storage.list_records(&parts_key(id)?).await? {
        let Some(index) = k
            .as_str()
            .rsplit('/')
            .next()
            .and_then(|i| i.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(b) = cfg.storage.get_record(&k).await?
            && let Ok(rec) = serde_json::from_slice::<PartRecord>(&b)
        {
            out.insert(index, rec);
        }
    }
    Ok(out)
}

/// Frees every part of a session (after assembly or rejection), and their holds.
async fn discard_parts(cfg: &Config, id: &str, parts: &BTreeMap<u32, PartRecord>) {
    for (index, rec) in parts {
        if let Err(e) = cfg.storage.abort(&UploadId(rec.upload.clone())).await {
            tracing::warn!(error = %e, "could not free a session part");
        }
        if let Ok(k) = part_key(id, *index) {
            let _ = cfg.storage.delete_record(&k).await;
        }
        if let Some(h) = &rec.hold {
            budget::release_named(&*cfg.storage, id, h).await;
        }
    }
}

fn part_invalid(message: String) -> ApiError {
    ApiError::new(ErrorKind::PartInvalid, message)
}

/// `POST <base>/store/resumable?key=K`: assembles the listed parts (all of them for an
/// empty body) and publishes the file.
pub(crate) async fn complete<B>(
    cfg: &Config,
    req: Request<B>,
    answer: &Answer<'_>,
) -> Response<ResponseBody>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    match assemble(cfg, req).await {
        Ok(media) => media_response(answer, &media),
        Err(e) => answer.error(&e),
    }
}

async fn assemble<B>(cfg: &Config, req: Request<B>) -> Result<MediaObject, ApiError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let live = open_session(cfg, req.uri(), true).await?;
    let conditions = conditions_for(cfg, req.extensions(), &live.record);
    let (parts, body) = req.into_parts();
    let listed = parse_complete(&crate::api::read_small(body, MAX_COMPLETE_BODY).await?)?;
    let uploaded = uploaded_parts(cfg, &live.key.id).await?;
    let chosen: Vec<(u32, PartRecord)> = match listed {
        Some(list) => select_listed(&list, &uploaded)?,
        None => select_all(&uploaded)?,
    };
    let total = chosen
        .iter()
        .fold(0u64, |t, (_, p)| t.saturating_add(p.size));
    if total > cfg.max_file_size {
        // Refused for good: the parts are freed rather than left to the sweeper.
        discard_parts(cfg, &live.key.id, &uploaded).await;
        return Err(too_large(cfg.max_file_size, "file"));
    }
    if let Err(e) = check_conditions(&conditions, &Facts::declared(Some(total))) {
        discard_parts(cfg, &live.key.id, &uploaded).await;
        return Err(e);
    }

    let (media_id, target) = target_of(&live.record)?;
    let filename = target.filename().to_owned();
    let upload = cfg.storage.open_upload(&target, UploadSpec::Single).await?;
    let guard = AbortOnDrop::new(&cfg.storage, upload.id.clone());
    let mut writer = cfg.storage.writer(&upload.id, 0).await?;
    let mut head = Vec::new();
    let mut on_head = head_check(&conditions, None, &filename);
    let mut head_checked = conditions.is_empty();
    for (index, part) in &chosen {
        let copied = copy_part(cfg, part, &mut *writer, &mut head).await;
        let n = match copied {
            Ok(n) => n,
            Err(e) => {
                drop(writer);
                guard.abort().await;
                return Err(match e {
                    StorageError::NotFound | StorageError::UploadClosed => part_invalid(format!(
                        "part {index} is no longer available (expired or replaced); upload it again"
                    )),
                    e => e.into(),
                });
            }
        };
        if n != part.size {
            drop(writer);
            guard.abort().await;
            return Err(part_invalid(format!(
                "part {index} is no longer available (expired or replaced); upload it again"
            )));
        }
        if !head_checked && (head.len() >= SNIFF_BYTES) {
            head_checked = true;
            if let Err(e) = on_head(&head) {
                drop(writer);
                guard.abort().await;
                discard_parts(cfg, &live.key.id, &uploaded).await;
                return Err(e);
            }
        }
    }
    if let Err(e) = writer.commit().await {
        guard.abort().await;
        return Err(e.into());
    }
    let staged = Staged {
        upload: upload.id.clone(),
        size: total,
        head: Bytes::from(head),
        hint: None,
        filename: &filename,
    };
    let result = finish(
        cfg,
        &parts.headers,
        &live,
        media_id,
        target,
        staged,
        &conditions,
        guard,
    )
    .await;
    match &result {
        Ok(_) => discard_parts(cfg, &live.key.id, &uploaded).await,
        Err(e) if e.kind() == ErrorKind::ConditionsFailed => {
            discard_parts(cfg, &live.key.id, &uploaded).await;
        }
        Err(_) => {}
    }
    result
}

fn select_listed(
    list: &[PartRef],
    uploaded: &BTreeMap<u32, PartRecord>,
) -> Result<Vec<(u32, PartRecord)>, ApiError> {
    if list.is_empty() {
        return Err(part_invalid("the parts list is empty".into()));
    }
    list.iter()
        .map(|p| match uploaded.get(&p.index) {
            None => Err(part_invalid(format!("part {} was not uploaded", p.index))),
            Some(rec) if !rec.etag.eq_ignore_ascii_case(&p.etag) => Err(part_invalid(format!(
                "part {}: the etag {:?} is not the one of its last upload",
                p.index, p.etag
            ))),
            Some(rec) => Ok((p.index, rec.clone())),
        })
        .collect()
}

fn select_all(uploaded: &BTreeMap<u32, PartRecord>) -> Result<Vec<(u32, PartRecord)>, ApiError> {
    if uploaded.is_empty() {
        return Err(part_invalid("no parts were uploaded".into()));
    }
    for (expected, index) in uploaded.keys().enumerate() {
        if *index as usize != expected {
            return Err(part_invalid(format!(
                "part {expected} is missing (parts must be numbered from 0 without gaps when none are listed)"
            )));
        }
    }
    Ok(uploaded.iter().map(|(i, p)| (*i, p.clone())).collect())
}

/// Copies a part's bytes into the assembly, collecting the file's first bytes; returns the
/// number of bytes copied.
async fn copy_part(
    cfg: &Config,
    part: &PartRecord,
    writer: &mut dyn crate::storage::UploadWriter,
    head: &mut Vec<u8>,
) -> Result<u64, StorageError> {
    let mut stream = cfg
        .storage
        .read_upload(&UploadId(part.upload.clone()), 0..part.size)
        .await?;
    let mut n = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        n += chunk.len() as u64;
        if head.len() < SNIFF_BYTES {
            let take = (SNIFF_BYTES - head.len()).min(chunk.len());
            head.extend_from_slice(&chunk[..take]);
        }
        writer.write(chunk).await?;
    }
    Ok(n)
}

/// The path of the file a media URL (`med_…/original`) names, when the media was published
/// under an alias.
pub(crate) async fn resolve_media(cfg: &Config, path: &FilePath) -> Option<FilePath> {
    let id = super::model::media_id_of(path)?;
    let bytes = cfg.storage.get_record(&media_key(id).ok()?).await.ok()??;
    let rec: MediaRecord = serde_json::from_slice(&bytes).ok()?;
    FilePath::new(rec.path).ok()
}
