//! The end of a resumable upload (PROTOCOL.md §4): the request whose chunk closed the last
//! gap claims the upload — exactly one claim wins, even across processes — probes it, checks
//! the conditions and the precondition it was created under, runs the hooks and publishes it
//! (`201`); every other request that needs the outcome waits for the winner's File object
//! (`200`).

use http::HeaderMap;
use std::sync::Arc;
use std::time::Duration;

use super::chunk_state::ChunkState;
use super::{Outcome, Record, check_conditions, new_record, probe_staged};
use crate::conditions::{Facts, UploadConditions};
use crate::config::Config;
use crate::error::{ApiError, ErrorKind};
use crate::path::FilePath;
use crate::storage::StorageExt;
use crate::storage::{Claim, PublishOptions, PutMode, StorageError, StorageResult, UploadId};

/// How long a request waits for another one to finalize an upload: a loser of the race to
/// finalize for the winner's File object, a chunk arriving meanwhile for the upload to go.
const OUTCOME_WAIT: Duration = Duration::from_secs(30);
/// How often a loser of the race to finalize tries the claim again while it waits: the
/// winner's claim ends with its lease if it died (`storage::StorageExt::claim`).
const RECLAIM: Duration = Duration::from_secs(1);

/// Drops an upload's records ([`chunk_state`]), best effort (the sweeper removes what is left).
pub(crate) async fn forget(cfg: &Config, id: &UploadId) {
    let forgotten = match ChunkState::of(&*cfg.storage, id) {
        Ok(state) => state.forget().await,
        Err(e) => Err(e),
    };
    if let Err(e) = forgotten {
        tracing::warn!(upload = %id, error = %e, "could not drop an upload's records");
    }
}

/// A chunk whose upload was claimed (or discarded) while it streamed in: its bytes were not
/// needed. Answers the finished upload's File object.
pub(crate) async fn raced(
    cfg: &Arc<Config>,
    path: &FilePath,
    id: &UploadId,
) -> Result<Outcome, ApiError> {
    Ok(Outcome::existing(outcome(cfg, path, id).await?))
}

/// Claims and publishes a complete upload, in a task of its own so that a client going away
/// never strands a won claim. Returns whether this call published it, and the File object.
pub(crate) async fn finalize(
    cfg: &Arc<Config>,
    headers: &HeaderMap,
    extensions: &http::Extensions,
    path: &FilePath,
    id: &UploadId,
    total: u64,
    conditions: &UploadConditions,
) -> Result<(bool, crate::file::FileObject), ApiError> {
    let task = {
        let (cfg, headers, path, id) = (cfg.clone(), headers.clone(), path.clone(), id.clone());
        let (conditions, extensions) = (conditions.clone(), extensions.clone());
        tokio::spawn(async move {
            let mut wait = Finalizing::new();
            loop {
                if cfg.storage.claim(&id).await? == Claim::Won {
                    return won(&cfg, &headers, &extensions, &path, &id, total, &conditions).await;
                }
                // Another request finalizes it: wait for its File object. If its finalizer
                // died, its claim ends with its lease: claim again now and then.
                if let Some(file) = wait_outcome(&cfg, &path, &id, &mut wait, RECLAIM).await? {
                    return Ok((false, file));
                }
            }
        })
    };
    task.await
        .map_err(|e| ApiError::internal(&format!("finalize task: {e}")))?
}

/// After a won claim: publishes, or gives the claim up when publication failed in a way a
/// later request may get past.
async fn won(
    cfg: &Config,
    headers: &HeaderMap,
    extensions: &http::Extensions,
    path: &FilePath,
    id: &UploadId,
    total: u64,
    conditions: &UploadConditions,
) -> Result<(bool, crate::file::FileObject), ApiError> {
    match publish(cfg, headers, extensions, path, id, total, conditions).await {
        Ok(file) => Ok((true, file)),
        // Discarded: nothing to finish later.
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::ConditionsFailed
                    | ErrorKind::UploadRejected
                    | ErrorKind::PreconditionFailed
            ) =>
        {
            Err(e)
        }
        Err(e) => {
            // Let a later request (a retry, a status query) finish it.
            if let Err(e) = cfg.storage.unclaim(id).await {
                tracing::warn!(upload = %id, error = %e, "could not give up a claim");
            }
            Err(e)
        }
    }
}

async fn publish(
    cfg: &Config,
    headers: &HeaderMap,
    extensions: &http::Extensions,
    path: &FilePath,
    id: &UploadId,
    total: u64,
    conditions: &UploadConditions,
) -> Result<crate::file::FileObject, ApiError> {
    let state = ChunkState::of(&*cfg.storage, id)?;
    let result: Result<_, ApiError> = async {
        let mode = state.precondition().await?;
        let facts = probe_staged(cfg, id, total, None, headers, path).await;
        if let Err(e) = check_conditions(conditions, &Facts::complete(total, &facts)) {
            cfg.storage.abort(id).await?;
            forget(cfg, id).await;
            return Err(e);
        }
        let mut record = new_record(cfg, headers, path, total, &facts, id);
        if let Some(super::UploadMetadata(m)) = extensions.get::<super::UploadMetadata>()
            && !m.is_empty()
        {
            record.file.metadata = Some(m.clone());
        }
        if let Err(e) = crate::hooks::decide(
            cfg.hooks(),
            &mut record.file,
            path,
            headers,
            extensions,
            None,
        )
        .await
        {
            cfg.storage.abort(id).await?;
            forget(cfg, id).await;
            return Err(e);
        }
        let attributes = serde_json::to_vec(&record)
            .map_err(|e| ApiError::internal(&e))?
            .into();
        let options = PublishOptions {
            mode: mode.clone(),
            content_type: facts.mime_type.clone(),
            attributes,
        };
        if cfg.private {
            // Before publication, so that a retry answered after it finds the chunks.
            if let Err(e) = state.set_done(std::time::SystemTime::now()).await {
                tracing::warn!(upload = %id, error = %e, "could not record a completion");
            }
        }
        match cfg.storage.publish(id, path, total, options).await {
            Ok(_) => {}
            Err(StorageError::PreconditionFailed) => {
                // The path changed since the upload was created under its precondition:
                // nothing is published, the bytes go.
                cfg.storage.abort(id).await?;
                forget(cfg, id).await;
                return Err(ApiError::new(
                    ErrorKind::PreconditionFailed,
                    "the file at this path no longer matches the precondition this upload \
                     was created under; nothing was published",
                ));
            }
            Err(e) => return Err(e.into()),
        }
        if !cfg.private && mode != PutMode::Overwrite {
            forget(cfg, id).await;
        }
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
pub(crate) async fn outcome(
    cfg: &Config,
    path: &FilePath,
    id: &UploadId,
) -> Result<crate::file::FileObject, ApiError> {
    let mut wait = Finalizing::new();
    wait_outcome(cfg, path, id, &mut wait, OUTCOME_WAIT)
        .await?
        .ok_or_else(still_finishing)
}

/// The answer when the wait for another request's publication is over.
fn still_finishing() -> ApiError {
    ApiError::new(
        ErrorKind::RangeConflict,
        "the upload of this path is still being finished by another request; send this \
         chunk again",
    )
}

/// Waits at most `window` for the File object published from upload `id`: `None` when the
/// window ended with the upload still in progress; an error when it is gone unpublished or
/// `wait` is over.
async fn wait_outcome(
    cfg: &Config,
    path: &FilePath,
    id: &UploadId,
    wait: &mut Finalizing,
    window: Duration,
) -> Result<Option<crate::file::FileObject>, ApiError> {
    let until = tokio::time::Instant::now() + window;
    loop {
        // Existence first, record second: a publication happens before its upload is
        // forgotten, so when the upload is seen gone here, the record read next shows
        // whether it was published.
        let still_open = upload_exists(cfg, path, id).await?;
        if let Some(meta) = cfg.storage.head(path).await?
            && let Some(record) = Record::from_meta(&meta)
            && record.upload.as_deref() == Some(id.0.as_str())
        {
            return Ok(Some(record.file));
        }
        if still_open && tokio::time::Instant::now() >= until {
            return Ok(None);
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
pub(crate) struct Finalizing {
    deadline: tokio::time::Instant,
    pause: Duration,
}

impl Finalizing {
    pub(crate) fn new() -> Self {
        Finalizing {
            deadline: tokio::time::Instant::now() + OUTCOME_WAIT,
            pause: Duration::from_millis(5),
        }
    }

    /// Sleeps before the next look; `false` (without sleeping) once the wait is over.
    pub(crate) async fn pause(&mut self) -> bool {
        if tokio::time::Instant::now() >= self.deadline {
            return false;
        }
        tokio::time::sleep(self.pause).await;
        self.pause = (self.pause * 2).min(Duration::from_millis(200));
        true
    }
}

pub(crate) async fn upload_exists(
    cfg: &Config,
    path: &FilePath,
    id: &UploadId,
) -> StorageResult<bool> {
    Ok(cfg
        .storage
        .find_upload(path)
        .await?
        .is_some_and(|u| u.id == *id))
}
