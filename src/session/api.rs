//! The session endpoints: `POST /uploads`, `POST /store/single`, `PUT /store/resumable`,
//! `POST /store/resumable`.

use bytes::{Buf, Bytes};
use futures_util::TryStreamExt;
use http::{Request, Response, StatusCode, Uri, header};
use http_body::{Body, Frame};
use http_body_util::{BodyDataStream, StreamBody};
use serde::Serialize;
use std::sync::Arc;

use super::key::SessionKey;
use super::model::{CreateSession, MAX_CREATE_BODY, MediaObject, MediaRecord, SessionRecord};
use super::multipart::{
    FormLimits, form_type, from_boxed, next_file_part, open_form_tapped, skip_rest,
};
use crate::body::{BoxError, ResponseBody};
use crate::conditions::{Facts, UploadConditions};
use crate::config::Config;
use crate::error::{ApiError, ErrorKind};
use crate::file::{FileObject, random_id};
use crate::media::{MediaFacts, SNIFF_BYTES, sniff};
use crate::path::FilePath;
use crate::response::Answer;
use crate::storage::StorageExt;
use crate::storage::{
    Claim, PublishOptions, PutMode, RecordKey, RecordMode, StorageError, UploadId, UploadSpec,
};
use crate::upload::body::{Head, HeadCheck, PumpError, Taps, pump};
use crate::upload::digest::{self, DigestError, Sha256Check};
use crate::upload::{
    AbortOnDrop, Record, check_conditions, conditions_of, content_length, probe_upload, too_large,
};
use subtle::ConstantTimeEq as _;

fn key(s: String) -> Result<RecordKey, ApiError> {
    RecordKey::new(s).map_err(|e| ApiError::internal(&e))
}

pub(crate) fn session_key(id: &str) -> Result<RecordKey, ApiError> {
    key(format!("sessions/{id}"))
}

fn done_key(id: &str) -> Result<RecordKey, ApiError> {
    key(format!("sessions/{id}/done"))
}

pub(super) fn parts_key(id: &str) -> Result<RecordKey, ApiError> {
    key(format!("sessions/{id}/parts"))
}

pub(super) fn part_key(id: &str, index: u32) -> Result<RecordKey, ApiError> {
    key(format!("sessions/{id}/parts/{index}"))
}

pub(crate) fn media_key(id: &str) -> Result<RecordKey, ApiError> {
    key(format!("media/{id}"))
}

fn gone(message: &'static str) -> ApiError {
    ApiError::new(ErrorKind::UploadGone, message)
}

pub(super) fn internal_json(e: serde_json::Error) -> ApiError {
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
) -> Result<Response<ResponseBody>, ApiError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    create_session(cfg, req)
        .await
        .map(|obj| answer.data(StatusCode::OK, &obj, Some("upload"), None))
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
    let created = crate::auth::unix_now();
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
    .encode(cfg.signing_key()?);
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
pub(super) struct Live {
    pub key: SessionKey,
    pub record: SessionRecord,
}

/// Verifies the `?key=` and finds its session: 401 without a key, 403 for a tampered one or
/// one made for the other endpoint (`resumable` says which this is), 410 when expired, swept
/// or already used.
pub(super) async fn open_session(
    cfg: &Config,
    uri: &Uri,
    resumable: bool,
) -> Result<Live, ApiError> {
    let Some(raw) = query_key(uri) else {
        return Err(ApiError::new(
            ErrorKind::TokenMissing,
            "this endpoint needs the ?key= of an upload session (POST /uploads makes one)",
        ));
    };
    let key = cfg
        .keys
        .as_ref()
        .ok_or(())
        .and_then(|keys| SessionKey::decode(&raw, keys).map_err(|_| ()))
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
    if crate::auth::unix_now() > key.expiry {
        return Err(gone("this upload key has expired"));
    }
    let Some(bytes) = cfg.storage.get_record(&session_key(&key.id)?).await? else {
        return Err(gone("this upload session no longer exists"));
    };
    let record: SessionRecord = serde_json::from_slice(&bytes.value).map_err(internal_json)?;
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
pub(super) fn conditions_for(
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
pub(super) fn head_check<'a>(
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
pub(super) fn target_of(record: &SessionRecord) -> Result<(String, FilePath), ApiError> {
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
) -> Result<Response<ResponseBody>, ApiError>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError> + Send,
{
    store_single(cfg, req)
        .await
        .map(|media| media_response(answer, &media))
}

pub(super) fn media_response(answer: &Answer<'_>, media: &MediaObject) -> Response<ResponseBody> {
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
    let expected = digest::of_request(req.headers())?;
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
            checksum: None,
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
        &parts,
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
pub(super) struct Staged<'a> {
    pub upload: UploadId,
    pub size: u64,
    /// The first bytes (all of them for a small file).
    pub head: Bytes,
    pub hint: Option<&'a str>,
    pub filename: &'a str,
}

/// Probes, checks the conditions, spends the key (exactly once), publishes, and builds the
/// Media object. On any failure the staged bytes are discarded and the key stays unspent.
#[allow(clippy::too_many_arguments)]
pub(super) async fn finish(
    cfg: &Config,
    parts: &http::request::Parts,
    live: &Live,
    media_id: String,
    target: FilePath,
    staged: Staged<'_>,
    conditions: &UploadConditions,
    mut guard: AbortOnDrop<'_>,
) -> Result<MediaObject, ApiError> {
    let (headers, storage) = (&parts.headers, &cfg.storage);
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
    if let Err(e) = crate::hooks::decide(
        cfg.hooks(),
        &mut file,
        &target,
        headers,
        &parts.extensions,
        Some(&live.key.id),
    )
    .await
    {
        guard.abort().await;
        return Err(e);
    }
    let done = done_key(&live.key.id)?;
    match storage
        .put_record(&done, Bytes::from_static(b"{}"), RecordMode::Create)
        .await
    {
        Ok(_) => {}
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

/// The path of the file a media URL (`med_…/original`) names, when the media was published
/// under an alias.
pub(crate) async fn resolve_media(cfg: &Config, path: &FilePath) -> Option<FilePath> {
    let id = super::model::media_id_of(path)?;
    let bytes = cfg.storage.get_record(&media_key(id).ok()?).await.ok()??;
    let rec: MediaRecord = serde_json::from_slice(&bytes.value).ok()?;
    FilePath::new(rec.path).ok()
}
