//! Upload sessions in parts (PROTOCOL.md §7): `PUT /store/resumable?key=K` stores one indexed
//! part, `POST /store/resumable?key=K` assembles the listed parts into the file.

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Request, Response, StatusCode};
use http_body::Body;
use serde::Serialize;
use std::collections::BTreeMap;

use super::budget;
use super::model::{
    MAX_COMPLETE_BODY, MediaObject, PartRecord, PartRef, parse_complete, parse_index,
};
use crate::body::{BoxError, ResponseBody};
use crate::conditions::Facts;
use crate::config::Config;
use crate::error::{ApiError, ErrorKind};
use crate::media::SNIFF_BYTES;
use crate::path::FilePath;
use crate::response::Answer;
use crate::storage::StorageExt;
use crate::storage::{RecordMode, StorageError, UploadId, UploadSpec};
use crate::upload::body::{PumpError, Taps, pump};
use crate::upload::digest::{self, DigestError, Sha256Check};
use crate::upload::{AbortOnDrop, check_conditions, content_length, too_large};
use subtle::ConstantTimeEq as _;

use super::api::{
    Staged, conditions_for, finish, head_check, internal_json, media_response, open_session,
    part_key, parts_key, target_of,
};

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
) -> Result<Response<ResponseBody>, ApiError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    store_part(cfg, req)
        .await
        .map(|part| answer.data(StatusCode::OK, &part, Some("part"), None))
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
    let expected = digest::of_request(req.headers())?;
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
        .and_then(|b| serde_json::from_slice::<PartRecord>(&b.value).ok());
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
        .open_upload(&part_path, UploadSpec::Lasting)
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
    // A part outlives this request (any process may assemble it): a lasting upload.
    if let Err(e) = writer.commit().await {
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
            && let Ok(rec) = serde_json::from_slice::<PartRecord>(&b.value)
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
) -> Result<Response<ResponseBody>, ApiError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    assemble(cfg, req)
        .await
        .map(|media| media_response(answer, &media))
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
        &parts,
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
    writer: &mut dyn crate::storage::ChunkWriter,
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
