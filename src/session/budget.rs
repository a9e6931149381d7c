//! What a resumable session's parts may hold: together at most the file-size limit, and a
//! session with parts counts as one upload in progress against
//! [`max_incomplete_uploads`](crate::Uploads::max_incomplete_uploads).
//!
//! The storage offers no compare-and-swap on records, only create-only records, so the
//! budget is kept as *holds*: one record per part, `sessions/<id>/held/<bytes>-<random>`,
//! whose name carries the bytes it holds (one listing sums a session's holds, without reading
//! a record per part). A part takes its hold **before** its first byte is read (its
//! `Content-Length`, else all the room left), then counts every hold of the session, its own
//! included: over the limit, it gives its hold back and is refused. Of two racing parts at
//! least the later lister sees both holds, so the holds never sum past the limit (both may
//! be refused). A part's hold is shrunk to its real size once stored, kept as long as the
//! part, and given back when the part is replaced, discarded or its request fails (also when
//! it is cancelled mid-body).

use std::sync::Arc;

use bytes::Bytes;

use crate::config::Config;
use crate::error::{ApiError, ErrorKind};
use crate::id::random_id;
use crate::storage::{RecordKey, RecordMode, Storage};

fn held_prefix(id: &str) -> Result<RecordKey, ApiError> {
    RecordKey::new(format!("sessions/{id}/held")).map_err(|e| ApiError::internal(&e))
}

/// The bytes a hold's name says it holds (`<bytes>-<random>`).
fn held_bytes(name: &str) -> Option<u64> {
    name.split_once('-')?.0.parse().ok()
}

/// The holds of a session: (name, bytes).
async fn holds(storage: &dyn Storage, id: &str) -> Result<Vec<(String, u64)>, ApiError> {
    let prefix = held_prefix(id)?;
    Ok(storage
        .list_records(&prefix)
        .await?
        .iter()
        .filter_map(|k| {
            let name = k.as_str().rsplit('/').next()?;
            Some((name.to_owned(), held_bytes(name)?))
        })
        .collect())
}

/// The room left in a session for a part that replaces the one holding `replaces`.
pub(crate) async fn room(cfg: &Config, id: &str, replaces: Option<&str>) -> Result<u64, ApiError> {
    let held: u64 = holds(&*cfg.storage, id)
        .await?
        .iter()
        .filter(|(name, _)| Some(name.as_str()) != replaces)
        .map(|(_, n)| *n)
        .fold(0, u64::saturating_add);
    Ok(cfg.max_file_size.saturating_sub(held))
}

/// A part's hold on its session's budget: given back when dropped unless [`keep`](Self::keep)
/// was called.
pub(crate) struct Hold<'a> {
    storage: &'a Arc<dyn Storage>,
    key: Option<RecordKey>,
    /// Its record's name.
    pub name: String,
    /// The bytes it holds.
    pub bytes: u64,
}

impl Hold<'_> {
    /// Keeps the hold (its part is stored); returns its name.
    pub(crate) fn keep(mut self) -> String {
        self.key = None;
        std::mem::take(&mut self.name)
    }

    /// Gives the hold back now.
    pub(crate) async fn release(mut self) {
        if let Some(k) = self.key.take() {
            let _ = self.storage.delete_record(&k).await;
        }
    }
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        if let Some(k) = self.key.take() {
            let storage = self.storage.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = storage.delete_record(&k).await;
                });
            }
        }
    }
}

async fn create<'a>(cfg: &'a Config, id: &str, bytes: u64) -> Result<Hold<'a>, ApiError> {
    let name = format!("{bytes}-{}", random_id(""));
    let key = held_prefix(id)?
        .join(&name)
        .map_err(|e| ApiError::internal(&e))?;
    cfg.storage
        .put_record(&key, Bytes::from_static(b"{}"), RecordMode::Create)
        .await?;
    Ok(Hold {
        storage: &cfg.storage,
        key: Some(key),
        name,
        bytes,
    })
}

/// Takes a hold of `bytes` for a part of session `id` that replaces the part holding
/// `replaces` (a retried index): 413 `file_too_large` when the session's holds would then sum
/// past the file-size limit, 429 `too_many_uploads` when this is the session's first part
/// and the storage would then hold more uploads in progress (resumable uploads and sessions
/// with parts) than `max_incomplete_uploads`. Counted after the hold is taken, so that racing
/// parts never pass a limit together.
pub(crate) async fn reserve<'a>(
    cfg: &'a Config,
    id: &str,
    bytes: u64,
    replaces: Option<&str>,
) -> Result<Hold<'a>, ApiError> {
    let hold = create(cfg, id, bytes).await?;
    let all = match holds(&*cfg.storage, id).await {
        Ok(all) => all,
        Err(e) => {
            hold.release().await;
            return Err(e);
        }
    };
    let others: Vec<&(String, u64)> = all
        .iter()
        .filter(|(name, _)| *name != hold.name && Some(name.as_str()) != replaces)
        .collect();
    let held = others
        .iter()
        .map(|(_, n)| *n)
        .fold(bytes, u64::saturating_add);
    if held > cfg.max_file_size {
        hold.release().await;
        let before = held - bytes;
        return Err(ApiError::new(
            ErrorKind::FileTooLarge,
            format!(
                "the session's parts would be larger than the file-size limit of {} bytes \
                 ({before} bytes are held by its other parts, this part is {bytes} bytes)",
                cfg.max_file_size
            ),
        ));
    }
    let first = replaces.is_none() && all.iter().all(|(name, _)| *name == hold.name);
    if let Some(max) = cfg.max_incomplete_uploads
        && first
    {
        let counted = crate::upload::uploads_in_progress(&cfg.storage).await;
        // Cannot count: refuse rather than pass the cap.
        let in_progress = *counted.as_ref().unwrap_or(&usize::MAX);
        if in_progress > max {
            hold.release().await;
            counted?;
            return Err(ApiError::new(
                ErrorKind::TooManyUploads,
                format!(
                    "too many uploads in progress (at most {max}); finish or let one expire first"
                ),
            ));
        }
    }
    Ok(hold)
}

/// Shrinks a hold to the `bytes` its part turned out to take (a part without
/// `Content-Length` held all the room left): a new hold is taken before the old one is
/// given back, so the session never holds less than it stores.
pub(crate) async fn shrink<'a>(
    cfg: &'a Config,
    id: &str,
    hold: Hold<'a>,
    bytes: u64,
) -> Result<Hold<'a>, ApiError> {
    if bytes >= hold.bytes {
        return Ok(hold);
    }
    let smaller = create(cfg, id, bytes).await?;
    hold.release().await;
    Ok(smaller)
}

/// Gives back the hold named `name` of session `id` (its part was replaced or discarded).
pub(crate) async fn release_named(storage: &dyn Storage, id: &str, name: &str) {
    if let Ok(k) = held_prefix(id).and_then(|p| p.join(name).map_err(|e| ApiError::internal(&e)))
        && let Err(e) = storage.delete_record(&k).await
    {
        tracing::warn!(error = %e, "could not give back a part's hold");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hold_names() {
        assert_eq!(held_bytes("1048576-AbCdEf0123456789"), Some(1_048_576));
        assert_eq!(held_bytes("0-x"), Some(0));
        assert_eq!(held_bytes("x-1"), None);
        assert_eq!(held_bytes("12"), None);
    }
}
