//! tus 1.0.0 (PROTOCOL.md §9), a frontend over the chunk core: the creation, expiration,
//! checksum (SHA-1, SHA-256, MD5; no trailer) and termination extensions,
//! creation-with-upload; deferred lengths and concatenation are not served yet
//! (`Tus-Extension` lists what is).
//!
//! An upload URL is `<base>/tus/<id>`: `<id>` is random (190 bits: a capability, valid
//! until the upload ends or expires) and names a record `tus/<id>` holding the file's path,
//! its total, the core's upload id and the metadata. `HEAD` answers the offset — the end of
//! the received range that starts at 0 — and `PATCH` appends at it through
//! [`ChunkSpec::at_offset`]: the core writes, counts, checks the conditions and finalizes
//! exactly as for an ittybit chunk, so hooks, limits, several processes on one storage and
//! atomic publication are the same. The record goes with the upload (published or deleted).

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body::Body;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::SystemTime;

use super::chunk::{ChunkSpec, check_total, create_upload, receive_chunk};
use super::finalize::forget;
use super::{
    Outcome, Record, UploadMetadata, check_conditions, conditions_of, content_length, too_large,
};
use crate::body::{BoxError, ResponseBody};
use crate::conditions::Facts;
use crate::config::Config;
use crate::error::{ApiError, ErrorKind};
use crate::grant::Grant;
use crate::headers::tus::{self, TusHeaderError};
use crate::path::FilePath;
use crate::storage::{PutMode, RecordKey, RecordMode, StorageError, StorageExt, StorageResult};

/// The extensions served (`Tus-Extension`).
const EXTENSIONS: &str = "creation,creation-with-upload,expiration,checksum,termination";
/// The checksum algorithms served (`Tus-Checksum-Algorithm`).
const CHECKSUMS: &str = "sha1,sha256,md5";
/// The content type of a `PATCH` body.
const OFFSET_STREAM: &str = "application/offset+octet-stream";

/// What an upload URL names.
#[derive(Serialize, Deserialize)]
struct TusRecord {
    path: String,
    total: u64,
    /// The core's upload.
    upload: String,
    /// `Upload-Metadata` as sent (the keys other than `filename` and `folder`).
    #[serde(default)]
    metadata: Vec<(String, String)>,
}

fn record_key(id: &str) -> Option<RecordKey> {
    let ok = (17..=48).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric());
    ok.then(|| RecordKey::new(format!("tus/{id}")).ok())
        .flatten()
}

fn header_error(e: TusHeaderError) -> ApiError {
    let kind = if e.status() == StatusCode::PRECONDITION_FAILED {
        ErrorKind::PreconditionFailed
    } else {
        ErrorKind::BadRequest
    };
    ApiError::new(kind, e.to_string()).with_status(e.status())
}

fn not_found() -> ApiError {
    ApiError::new(
        ErrorKind::UploadGone,
        "no tus upload at this URL: it was finished, terminated or has expired",
    )
    .with_status(StatusCode::NOT_FOUND)
}

/// A response of the tus protocol: `status`, `Tus-Resumable` and `headers`, no body.
fn reply(status: StatusCode, headers: &[(header::HeaderName, String)]) -> Response<ResponseBody> {
    let mut res = Response::new(ResponseBody::empty());
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert("tus-resumable", HeaderValue::from_static(tus::TUS_VERSION));
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name.clone(), v);
        }
    }
    res
}

/// Adds the tus version to an error answer (clients read it on every response).
pub(crate) fn tus_error(mut res: Response<ResponseBody>) -> Response<ResponseBody> {
    res.headers_mut()
        .insert("tus-resumable", HeaderValue::from_static(tus::TUS_VERSION));
    if res.status() == StatusCode::PRECONDITION_FAILED {
        res.headers_mut()
            .insert("tus-version", HeaderValue::from_static(tus::TUS_VERSION));
    }
    res
}

/// `OPTIONS <base>/tus`: what this server serves.
pub(crate) fn options(cfg: &Config) -> Response<ResponseBody> {
    reply(
        StatusCode::NO_CONTENT,
        &[
            (
                header::HeaderName::from_static("tus-version"),
                tus::TUS_VERSION.into(),
            ),
            (
                header::HeaderName::from_static("tus-extension"),
                EXTENSIONS.into(),
            ),
            (
                header::HeaderName::from_static("tus-max-size"),
                cfg.max_file_size.to_string(),
            ),
            (
                header::HeaderName::from_static("tus-checksum-algorithm"),
                CHECKSUMS.into(),
            ),
        ],
    )
}

fn expires(cfg: &Config, updated: SystemTime) -> String {
    httpdate::fmt_http_date(updated + cfg.upload_ttl)
}

fn get<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers.get(name).map(HeaderValue::as_bytes)
}

/// The file a creation names: `<folder>/<filename>` from `Upload-Metadata`, and the other
/// metadata keys.
fn file_of(headers: &HeaderMap) -> Result<(FilePath, Vec<(String, String)>), ApiError> {
    let metadata = tus::parse_metadata(get(headers, "upload-metadata").unwrap_or_default())
        .map_err(header_error)?;
    let Some(filename) = metadata.get_str("filename").filter(|f| !f.is_empty()) else {
        return Err(ApiError::new(
            ErrorKind::PathInvalid,
            "Upload-Metadata needs a filename (and may name a folder)",
        )
        .with_status(StatusCode::BAD_REQUEST));
    };
    let path = match metadata.get_str("folder").map(|f| f.trim_matches('/')) {
        Some(folder) if !folder.is_empty() => format!("{folder}/{filename}"),
        _ => filename.to_owned(),
    };
    let path = FilePath::new(path)?;
    let rest = metadata
        .iter()
        .filter(|(k, _)| *k != "filename" && *k != "folder")
        .map(|(k, v)| (k.to_owned(), String::from_utf8_lossy(v).into_owned()))
        .collect();
    Ok((path, rest))
}

/// `401`/`403` unless `grant` lets its holder write `path`.
fn check_grant(grant: Option<&Grant>, path: &FilePath) -> Result<(), ApiError> {
    let Some(grant) = grant else {
        return Err(ApiError::new(
            ErrorKind::TokenMissing,
            "creating a tus upload needs an Authorization: Bearer key",
        ));
    };
    if grant.expired(crate::auth::unix_now()) {
        return Err(ApiError::new(
            ErrorKind::SignatureExpired,
            "the credentials of this request have expired",
        ));
    }
    if !grant.permits_write(path) {
        return Err(ApiError::new(
            ErrorKind::Forbidden,
            "these credentials may not write this file",
        ));
    }
    Ok(())
}

/// `POST <base>/tus`: creates an upload (and, with a body, appends it: creation-with-upload).
pub(crate) async fn create<B>(
    cfg: &Arc<Config>,
    req: Request<B>,
    grant: Option<&Grant>,
) -> Result<Response<ResponseBody>, ApiError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let headers = req.headers();
    tus::check_tus_resumable(get(headers, "tus-resumable")).map_err(header_error)?;
    if headers.contains_key("upload-defer-length") {
        return Err(ApiError::new(
            ErrorKind::BadRequest,
            "deferred lengths (creation-defer-length) are not served yet: send Upload-Length",
        ));
    }
    if headers.contains_key("upload-concat") {
        return Err(ApiError::new(
            ErrorKind::BadRequest,
            "concatenation is not served yet",
        ));
    }
    let Some(length) = get(headers, "upload-length") else {
        return Err(ApiError::new(
            ErrorKind::BadRequest,
            "a creation needs Upload-Length",
        ));
    };
    let total = tus::parse_u64(length).map_err(header_error)?;
    if total > cfg.max_file_size {
        return Err(too_large(cfg.max_file_size, "Upload-Length"));
    }
    let (path, metadata) = file_of(headers)?;
    check_grant(grant, &path)?;
    check_conditions(
        &conditions_of(cfg, req.extensions()),
        &Facts::declared(Some(total)),
    )?;
    let info = create_upload(cfg, &path, total, &PutMode::Overwrite).await?;
    check_total(&info, total)?;
    let id = format!("{}{}", crate::id::random_id("t"), crate::id::random_id(""));
    let key = record_key(&id).ok_or_else(|| ApiError::internal(&"a tus id"))?;
    let record = TusRecord {
        path: path.as_str().to_owned(),
        total,
        upload: info.id.0.clone(),
        metadata,
    };
    let value = serde_json::to_vec(&record).map_err(|e| ApiError::internal(&e))?;
    cfg.storage
        .put_record(&key, Bytes::from(value), RecordMode::Create)
        .await?;
    let location = format!("{}/tus/{id}", cfg.base_url(req.headers()));
    let expiry = expires(cfg, SystemTime::now());
    // An empty file is complete at its creation: published now (a client sends no PATCH).
    let with_data = total == 0
        || (content_length(req.headers())?.is_some_and(|n| n > 0)
            && is_offset_stream(req.headers()));
    let mut fields = vec![
        (header::LOCATION, location),
        (header::HeaderName::from_static("upload-expires"), expiry),
    ];
    if with_data {
        let appended = append(cfg, req, &record, &key, 0).await?;
        fields.push((
            header::HeaderName::from_static("upload-offset"),
            appended.offset.to_string(),
        ));
        if let Some(url) = appended.file_url {
            fields.push((header::CONTENT_LOCATION, url));
        }
    }
    Ok(reply(StatusCode::CREATED, &fields))
}

fn is_offset_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(OFFSET_STREAM))
}

/// The record an upload URL names.
async fn load(cfg: &Config, id: &str) -> Result<(TusRecord, RecordKey), ApiError> {
    let key = record_key(id).ok_or_else(not_found)?;
    let Some(r) = cfg.storage.get_record(&key).await? else {
        return Err(not_found());
    };
    let record = serde_json::from_slice(&r.value).map_err(|e| ApiError::internal(&e))?;
    Ok((record, key))
}

/// Where an upload stands: its offset and when it expires, or that it is done (the File
/// object's URL).
enum Standing {
    Open { offset: u64, updated: SystemTime },
    Done { url: String },
}

async fn standing(cfg: &Config, record: &TusRecord) -> Result<Standing, ApiError> {
    let path = FilePath::new(record.path.as_str())?;
    if let Some(info) = cfg.storage.find_upload(&path).await?
        && info.id.0 == record.upload
    {
        let idle = SystemTime::now()
            .duration_since(info.updated)
            .unwrap_or_default();
        if idle > cfg.upload_ttl {
            return Err(not_found());
        }
        let received = match cfg.storage.received(&info.id).await {
            Ok(r) => r,
            Err(StorageError::NotFound | StorageError::UploadClosed) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        return Ok(Standing::Open {
            offset: offset_of(&received),
            updated: info.updated,
        });
    }
    // Gone: published from this upload?
    if let Some(meta) = cfg.storage.head(&path).await?
        && let Some(published) = Record::from_meta(&meta)
        && published.upload.as_deref() == Some(record.upload.as_str())
    {
        return Ok(Standing::Done {
            url: published.file.url,
        });
    }
    Err(not_found())
}

/// The end of the received range that starts at 0.
fn offset_of(received: &[std::ops::Range<u64>]) -> u64 {
    received.iter().find(|r| r.start == 0).map_or(0, |r| r.end)
}

/// `HEAD <base>/tus/<id>`: the offset.
pub(crate) async fn head(cfg: &Config, id: &str) -> Result<Response<ResponseBody>, ApiError> {
    let (record, _) = load(cfg, id).await?;
    let (offset, updated) = match standing(cfg, &record).await? {
        Standing::Open { offset, updated } => (offset, updated),
        Standing::Done { .. } => (record.total, SystemTime::now()),
    };
    Ok(reply(
        StatusCode::OK,
        &[
            (
                header::HeaderName::from_static("upload-offset"),
                offset.to_string(),
            ),
            (
                header::HeaderName::from_static("upload-length"),
                record.total.to_string(),
            ),
            (header::CACHE_CONTROL, "no-store".into()),
            (
                header::HeaderName::from_static("upload-expires"),
                expires(cfg, updated),
            ),
        ],
    ))
}

/// What an append did: the offset after it, and the file's URL when it completed the
/// upload.
struct Appended {
    offset: u64,
    file_url: Option<String>,
}

/// Appends the request's body at `offset` through the chunk core.
async fn append<B>(
    cfg: &Arc<Config>,
    req: Request<B>,
    record: &TusRecord,
    key: &RecordKey,
    offset: u64,
) -> Result<Appended, ApiError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let path = FilePath::new(record.path.as_str())?;
    let len = content_length(req.headers())?;
    if len.is_some_and(|n| n > cfg.max_request_size) {
        return Err(too_large(cfg.max_request_size, "PATCH"));
    }
    let mut spec = ChunkSpec::at_offset(offset, record.total, len, cfg.max_request_size)?;
    if let Some(sum) = get(req.headers(), "upload-checksum") {
        let sum = tus::parse_checksum(sum).map_err(header_error)?;
        spec.checksum = Some((sum.algorithm, sum.digest));
    }
    let mut req = req;
    let metadata = record
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    req.extensions_mut().insert(UploadMetadata(metadata));
    // The body's Content-Type is the protocol's (`application/offset+octet-stream`), not the
    // file's: the file's type hint is the `filetype` metadata a client may send.
    let hint = record
        .metadata
        .iter()
        .find(|(k, _)| k == "filetype")
        .and_then(|(_, v)| HeaderValue::from_str(v).ok());
    match hint {
        Some(v) => req.headers_mut().insert(header::CONTENT_TYPE, v),
        None => req.headers_mut().remove(header::CONTENT_TYPE),
    };
    match receive_chunk(cfg, &path, spec, req).await? {
        Outcome::Progress { received, .. } => Ok(Appended {
            offset: offset_of(&received),
            file_url: None,
        }),
        Outcome::File { file, .. } => {
            // Done: the upload URL goes with the upload.
            if let Err(e) = cfg.storage.delete_record(key).await {
                tracing::warn!(error = %e, "could not drop a finished tus upload's record");
            }
            Ok(Appended {
                offset: record.total,
                file_url: Some(file.url),
            })
        }
    }
}

/// `PATCH <base>/tus/<id>`: appends at `Upload-Offset`.
pub(crate) async fn patch<B>(
    cfg: &Arc<Config>,
    req: Request<B>,
    id: &str,
) -> Result<Response<ResponseBody>, ApiError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let headers = req.headers();
    tus::check_tus_resumable(get(headers, "tus-resumable")).map_err(header_error)?;
    if !is_offset_stream(headers) {
        return Err(ApiError::new(
            ErrorKind::BadRequest,
            "a PATCH carries Content-Type: application/offset+octet-stream",
        )
        .with_status(StatusCode::UNSUPPORTED_MEDIA_TYPE));
    }
    let Some(sent) = get(headers, "upload-offset") else {
        return Err(ApiError::new(
            ErrorKind::BadRequest,
            "a PATCH needs Upload-Offset",
        ));
    };
    let sent = tus::parse_u64(sent).map_err(header_error)?;
    let (record, key) = load(cfg, id).await?;
    let (offset, url) = match standing(cfg, &record).await? {
        Standing::Open { offset, .. } => (offset, None),
        Standing::Done { url } => (record.total, Some(url)),
    };
    if sent != offset {
        return Err(ApiError::new(
            ErrorKind::RangeConflict,
            format!("Upload-Offset is {sent}, but this upload is at {offset}"),
        ));
    }
    let appended = match url {
        Some(url) => Appended {
            offset,
            file_url: Some(url),
        },
        None => append(cfg, req, &record, &key, offset).await?,
    };
    let mut fields = vec![(
        header::HeaderName::from_static("upload-offset"),
        appended.offset.to_string(),
    )];
    match appended.file_url {
        Some(url) => fields.push((header::CONTENT_LOCATION, url)),
        None => fields.push((
            header::HeaderName::from_static("upload-expires"),
            expires(cfg, SystemTime::now()),
        )),
    }
    Ok(reply(StatusCode::NO_CONTENT, &fields))
}

/// `DELETE <base>/tus/<id>`: terminates the upload; its bytes go.
pub(crate) async fn delete(cfg: &Config, id: &str) -> Result<Response<ResponseBody>, ApiError> {
    let (record, key) = load(cfg, id).await?;
    let path = FilePath::new(record.path.as_str())?;
    if let Some(info) = cfg.storage.find_upload(&path).await?
        && info.id.0 == record.upload
    {
        match cfg.storage.abort(&info.id).await {
            Ok(()) | Err(StorageError::NotFound | StorageError::UploadClosed) => {}
            Err(e) => return Err(e.into()),
        }
        forget(cfg, &info.id).await;
    }
    cfg.storage.delete_record(&key).await?;
    Ok(reply(StatusCode::NO_CONTENT, &[]))
}

/// Drops the records of tus uploads whose core upload is no longer in progress (expired and
/// swept, or lost): the sweeper's. A finished or terminated upload's record went with it.
pub(crate) async fn sweep(storage: &Arc<dyn crate::storage::Storage>) -> StorageResult<usize> {
    let root = RecordKey::new("tus").map_err(StorageError::backend)?;
    let listed = storage.list_records(&root).await?;
    if listed.is_empty() {
        return Ok(0);
    }
    let live: std::collections::HashSet<String> = storage
        .list_uploads()
        .await?
        .into_iter()
        .map(|u| u.id.0)
        .collect();
    let mut removed = 0;
    for key in listed {
        let Some(r) = storage.get_record(&key).await? else {
            continue;
        };
        let upload = serde_json::from_slice::<TusRecord>(&r.value).map(|t| t.upload);
        if upload.is_ok_and(|u| live.contains(&u)) {
            continue;
        }
        if storage.delete_record(&key).await? {
            removed += 1;
        }
    }
    Ok(removed)
}
