//! Simple upload: the whole file in one `PUT` body (PROTOCOL.md §3).

use bytes::Bytes;
use http::{HeaderMap, Request, header};
use http_body::Body;

use super::body::{Head, HeadCheck, Taps, pump};
use super::digest::{self, Sha256Check};
use super::{
    AbortOnDrop, Outcome, check_conditions, conditions_of, content_length, head_check, new_record,
    precheck, probe_staged, put_mode, too_large, version_facts,
};
use crate::body::BoxError;
use crate::conditions::Facts;
use crate::config::Config;
use crate::error::{ApiError, ErrorKind};
use crate::file::FileObject;
use crate::media::MediaFacts;
use crate::path::FilePath;
use crate::storage::StorageExt;
use crate::storage::{Claim, ObjectMeta, PublishOptions, StorageError, UploadId, UploadSpec};

/// Answers a simple `PUT` whose credentials the auth layer has verified.
pub(crate) async fn put_whole<B>(
    cfg: &Config,
    req: Request<B>,
    path: &FilePath,
) -> Result<Outcome, ApiError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let limit = cfg.max_request_size.min(cfg.max_file_size);
    let declared = content_length(req.headers())?;
    if let Some(len) = declared
        && len > limit
    {
        return Err(too_large(limit, "body"));
    }
    // `Content-Digest: sha-256=…` (PROTOCOL.md §3): checked before anything is published.
    // Parsed first, so that a malformed one is refused before the body is read.
    let mut digest = digest::of_request(req.headers())?.map(Sha256Check::new);
    let conditions = conditions_of(cfg, req.extensions());
    check_conditions(&conditions, &Facts::declared(declared))?;
    let mode = precheck(&*cfg.storage, path, put_mode(req.headers())?).await?;
    let (parts, body) = req.into_parts();

    let upload = cfg.storage.open_upload(path, UploadSpec::Single).await?;
    crate::metrics::upload_started(crate::metrics::Kind::Simple);
    let guard = AbortOnDrop::new(&cfg.storage, upload.id.clone());
    let mut writer = cfg.storage.writer(&upload.id, 0).await?;
    // Past its first frame the head is copied only for the conditions' head phase.
    let mut head = if conditions.is_empty() {
        Head::first_frame()
    } else {
        Head::copied()
    };
    let mut on_head = head_check(&conditions, &parts.headers, path, declared);
    let pumped = pump(
        body,
        &mut *writer,
        limit,
        Taps {
            sniff: Some(&mut head),
            digest: digest.as_mut(),
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
            return Err(e.into_api(limit, "request body"));
        }
    };
    if let Some(check) = digest
        && !check.finish()
    {
        drop(writer);
        guard.abort().await;
        return Err(ApiError::new(
            ErrorKind::DigestMismatch,
            "the body's Content-Digest does not match its bytes; nothing was kept",
        ));
    }
    let committed = writer.commit().await;
    if let Err(e) = committed {
        guard.abort().await;
        return Err(e.into());
    }
    if cfg.storage.claim(&upload.id).await? != Claim::Won {
        guard.abort().await;
        return Err(StorageError::UploadClosed.into());
    }
    let head = head.into_bytes();
    let facts = probe_staged(
        cfg,
        &upload.id,
        size,
        Some(head.clone()),
        &parts.headers,
        path,
    )
    .await;
    if let Err(e) = check_conditions(&conditions, &Facts::complete(size, &facts)) {
        guard.abort().await;
        return Err(e);
    }
    if derivable(cfg, &parts.headers, path, size, &head, &facts).await {
        // Nothing to store beside the bytes: the File object is the version's.
        let options = PublishOptions {
            mode,
            content_type: facts.mime_type.clone(),
            attributes: Bytes::new(),
        };
        let meta = publish(cfg, guard, &upload.id, path, size, options).await?;
        tracing::info!(path = %path, bytes = size, kind = facts.kind.as_str(), "file published");
        let url = cfg.file_url(&parts.headers, path);
        let file = FileObject::of_version(path, url, &meta, &facts);
        return Ok(Outcome::File {
            created: true,
            file,
            json: None,
        });
    }
    let mut record = new_record(cfg, &parts.headers, path, size, &facts, &upload.id);
    if let Err(e) = crate::hooks::decide(
        cfg.hooks(),
        &mut record.file,
        path,
        &parts.headers,
        &parts.extensions,
        None,
    )
    .await
    {
        guard.abort().await;
        return Err(e);
    }
    let (attributes, file_json) = record.encode()?;
    let options = PublishOptions {
        mode,
        content_type: facts.mime_type.clone(),
        attributes,
    };
    publish(cfg, guard, &upload.id, path, size, options).await?;
    tracing::info!(path = %path, bytes = size, kind = %record.file.kind, "file published");
    if let Some(h) = cfg.hooks() {
        h.on_published(&record.file).await;
    }
    Ok(Outcome::File {
        created: true,
        file: record.file,
        json: Some(file_json),
    })
}

/// Publishes the upload, or discards it if that fails.
async fn publish(
    cfg: &Config,
    mut guard: AbortOnDrop<'_>,
    upload: &UploadId,
    path: &FilePath,
    size: u64,
    options: PublishOptions,
) -> Result<ObjectMeta, ApiError> {
    match cfg.storage.publish(upload, path, size, options).await {
        Ok(meta) => {
            guard.disarm();
            Ok(meta)
        }
        Err(e) => {
            guard.abort().await;
            Err(e.into())
        }
    }
}

/// Whether the File object of this upload can be derived again from the published version
/// ([`Capabilities::stable_meta`](crate::storage::Capabilities::stable_meta)), so that none is stored
/// (on tmpfs, not writing that record is a fifth of a small upload's server time:
/// PERFORMANCE.md). It can when no hooks may change it, the whole file is in `head` (it is
/// probed again from its bytes on reading: [`derived_record`](super::derived_record)), and
/// the request's `Content-Type` hint did not shape its facts.
async fn derivable(
    cfg: &Config,
    headers: &HeaderMap,
    path: &FilePath,
    size: u64,
    head: &Bytes,
    facts: &MediaFacts,
) -> bool {
    if !cfg.storage.capabilities().stable_meta
        || cfg.hooks().is_some()
        || (head.len() as u64) < size
    {
        return false;
    }
    !headers.contains_key(header::CONTENT_TYPE) || version_facts(head.clone(), path).await == *facts
}
