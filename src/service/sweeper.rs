//! Expiry of incomplete uploads: the sweeper discards uploads idle for longer than a TTL and
//! frees their bytes. A chunk that arrives for a swept upload starts a new one.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::hooks::{ExpiredEvent, UploadHooks};
use crate::storage::StorageExt;
use crate::storage::{Storage, StorageResult};

/// What one sweep did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Uploads discarded.
    pub swept: usize,
    /// Uploads still within their TTL.
    pub kept: usize,
    /// Upload sessions discarded (expired more than the TTL ago), with their parts.
    pub sessions: usize,
}

/// Discards every upload whose last activity is older than `ttl`, and every upload session
/// ([`crate::session`]) whose key expired more than `ttl` ago.
pub async fn sweep(storage: &Arc<dyn Storage>, ttl: Duration) -> StorageResult<SweepReport> {
    sweep_with(storage, ttl, None).await
}

/// [`sweep`], telling `hooks` of every discarded upload and session.
pub async fn sweep_with(
    storage: &Arc<dyn Storage>,
    ttl: Duration,
    hooks: Option<&dyn UploadHooks>,
) -> StorageResult<SweepReport> {
    let now = SystemTime::now();
    let mut report = SweepReport::default();
    for upload in storage.list_uploads().await? {
        let idle = now.duration_since(upload.updated).unwrap_or_default();
        if idle > ttl {
            storage.abort(&upload.id).await?;
            tracing::info!(upload = %upload.id, path = ?upload.path, idle_secs = idle.as_secs(), "expired upload swept");
            report.swept += 1;
            if let Some(h) = hooks {
                h.on_expired(&ExpiredEvent {
                    upload: Some(upload.id.clone()),
                    path: upload.path.clone(),
                    session: None,
                })
                .await;
            }
        } else {
            report.kept += 1;
        }
    }
    crate::metrics::set_uploads_in_progress(report.kept);
    // The records of uploads that are gone, and of completions older than the TTL.
    crate::upload::sweep_chunk_records(storage, ttl).await?;
    crate::upload::tus::sweep(storage).await?;
    let sessions = crate::session::sweep_sessions(storage, ttl).await?;
    report.sessions = sessions.len();
    if let Some(h) = hooks {
        for id in sessions {
            h.on_expired(&ExpiredEvent {
                upload: None,
                path: None,
                session: Some(id),
            })
            .await;
        }
    }
    Ok(report)
}

/// Runs [`sweep`] every `every`, forever (abort the handle to stop it).
pub fn spawn_sweeper(
    storage: Arc<dyn Storage>,
    ttl: Duration,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    spawn_sweeper_with(storage, ttl, every, None)
}

/// [`spawn_sweeper`] with hooks told of what is discarded.
pub fn spawn_sweeper_with(
    storage: Arc<dyn Storage>,
    ttl: Duration,
    every: Duration,
    hooks: Option<Arc<dyn UploadHooks>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = sweep_with(&storage, ttl, hooks.as_deref()).await {
                tracing::warn!(error = %e, "sweep failed");
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::FilePath;
    use crate::storage::{MemoryStorage, StorageExt, UploadSpec};

    #[tokio::test]
    async fn sweeps_only_idle_uploads() {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let path = FilePath::new("a.bin").unwrap();
        let up = storage
            .open_upload(&path, UploadSpec::Resumable { total: 10 })
            .await
            .unwrap();
        let report = sweep(&storage, Duration::from_secs(3600)).await.unwrap();
        assert_eq!(
            report,
            SweepReport {
                swept: 0,
                kept: 1,
                sessions: 0
            }
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
        let report = sweep(&storage, Duration::from_millis(10)).await.unwrap();
        assert_eq!(
            report,
            SweepReport {
                swept: 1,
                kept: 0,
                sessions: 0
            }
        );
        assert!(storage.find_upload(&path).await.unwrap().is_none());
        let again = storage
            .open_upload(&path, UploadSpec::Resumable { total: 10 })
            .await
            .unwrap();
        assert_ne!(again.id, up.id, "a chunk after expiry starts a new upload");
    }
}
