//! Simple upload: the whole file in one `PUT` body (PROTOCOL.md §3).

use http::{Request, Response, StatusCode};
use http_body::Body;

use super::body::{HeadCheck, Taps, pump};
use super::{
    AbortOnDrop, check_conditions, conditions_of, content_length, file_json_response, head_check,
    new_record, precheck, probe_staged, put_mode, too_large,
};
use crate::body::{BoxError, ResponseBody};
use crate::conditions::Facts;
use crate::error::ApiError;
use crate::path::FilePath;
use crate::response::Answer;
use crate::service::config::Config;
use crate::storage::{Claim, PublishOptions, StorageError, UploadSpec};

/// Answers a simple `PUT` whose credentials the auth layer has verified.
pub(crate) async fn put_whole<B>(
    cfg: &Config,
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
    cfg: &Config,
    req: Request<B>,
    path: &FilePath,
    answer: &Answer<'_>,
) -> Result<Response<ResponseBody>, ApiError>
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
    let conditions = conditions_of(cfg, req.extensions());
    check_conditions(&conditions, &Facts::declared(declared))?;
    let mode = precheck(&*cfg.storage, path, put_mode(req.headers())?).await?;
    let (parts, body) = req.into_parts();

    let upload = cfg.storage.open_upload(path, UploadSpec::Single).await?;
    let mut guard = AbortOnDrop::new(&cfg.storage, upload.id.clone());
    let mut writer = cfg.storage.writer(&upload.id, 0).await?;
    let mut head = Vec::new();
    let mut on_head = head_check(&conditions, &parts.headers, path, declared);
    let pumped = pump(
        body,
        &mut *writer,
        limit,
        Taps {
            sniff: Some(&mut head),
            digest: None,
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
    let committed = writer.commit().await;
    if let Err(e) = committed {
        guard.abort().await;
        return Err(e.into());
    }
    if cfg.storage.claim(&upload.id).await? != Claim::Won {
        guard.abort().await;
        return Err(StorageError::UploadClosed.into());
    }
    let facts = probe_staged(cfg, &upload.id, size, Some(&head), &parts.headers, path).await;
    if let Err(e) = check_conditions(&conditions, &Facts::complete(size, &facts)) {
        guard.abort().await;
        return Err(e);
    }
    let mut record = new_record(cfg, &parts.headers, path, size, &facts, &upload.id);
    if let Err(e) =
        crate::hooks::decide(cfg.hooks(), &mut record.file, path, &parts.headers, None).await
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
    match cfg.storage.publish(&upload.id, path, size, options).await {
        Ok(_) => {
            guard.disarm();
            tracing::info!(path = %path, bytes = size, kind = %record.file.kind, "file published");
            if let Some(h) = cfg.hooks() {
                h.on_published(&record.file).await;
            }
            Ok(file_json_response(
                answer,
                StatusCode::CREATED,
                &*file_json,
                &record.file.url,
            ))
        }
        Err(e) => {
            guard.abort().await;
            Err(e.into())
        }
    }
}
