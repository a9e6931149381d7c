//! A mutual-exclusion lock over plain objects: Lamport's bakery, with listings as the shared
//! arrays. It needs only what every S3-compatible store gives (a PUT, DELETE or LIST that
//! completed is seen by every later GET, HEAD or LIST), not conditional writes — Garage
//! ignores `If-None-Match: *`.
//!
//! A lock named `L` lives under `<L>/`:
//!
//! ```text
//! <L>/choosing/<me>          while `me` picks its number
//! <L>/ticket/<n:020>-<me>    `me`'s number n, until it leaves the critical section
//! ```
//!
//! `acquire`: (1) PUT `choosing/me`; (2) LIST `ticket/`, n = 1 + the largest number seen;
//! (3) PUT `ticket/n-me`; (4) DELETE `choosing/me`; (5) LIST `choosing/` and wait until each
//! one listed is gone; (6) LIST `ticket/` and wait until every ticket smaller than
//! `(n, me)` (numbers first, ids break ties) is gone. Then the critical section runs, then
//! `ticket/n-me` is deleted. ARCHITECTURE.md has the argument that two callers are never in
//! the critical section at once.
//!
//! Crashes: a ticket or a `choosing` marker whose holder died would block everyone, so a
//! waiter that sees one unchanged (same last-modified time) for [`STALE`] deletes it. A live
//! holder re-writes its ticket every [`REFRESH`] (it changes its last-modified time), so only
//! a holder stalled for longer than [`STALE`] can be mistaken for a dead one.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use super::os_err;
use crate::storage::StorageResult;

/// A marker or ticket unchanged for this long belongs to a dead process (short in unit tests).
pub(super) const STALE: Duration = if cfg!(test) {
    Duration::from_millis(400)
} else {
    Duration::from_secs(20)
};
/// How often a live holder re-writes its ticket.
pub(super) const REFRESH: Duration = if cfg!(test) {
    Duration::from_millis(100)
} else {
    Duration::from_secs(5)
};

/// Aborts a spawned task when dropped.
pub(super) struct AbortOnDrop(pub(super) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs `critical` while holding the lock under `dir`. `critical` gets the store's clock
/// (the last-modified time of this caller's own ticket), for age checks that do not depend
/// on this machine's clock.
pub(super) async fn with_lock<T, F, Fut>(
    store: &Arc<dyn ObjectStore>,
    dir: &Path,
    critical: F,
) -> StorageResult<T>
where
    F: FnOnce(DateTime<Utc>) -> Fut,
    Fut: Future<Output = StorageResult<T>>,
{
    let me = crate::id::random_id("");
    let choosing = dir.clone().join("choosing").join(me.as_str());
    let mut ticket: Option<Path> = None;
    let result = async {
        put_empty(store, &choosing).await?;
        let n = list(store, &dir.clone().join("ticket"))
            .await?
            .iter()
            .filter_map(|o| parse_ticket(&o.location))
            .map(|(n, _)| n)
            .max()
            .unwrap_or(0)
            .saturating_add(1);
        let mine = dir.clone().join("ticket").join(format!("{n:020}-{me}"));
        put_empty(store, &mine).await?;
        ticket = Some(mine.clone());
        let _refresh = refresher(store.clone(), mine.clone());
        store.delete(&choosing).await.map_err(os_err)?;

        for other in list(store, &dir.clone().join("choosing")).await? {
            if other.location != choosing {
                wait_gone(store, other).await?;
            }
        }
        let tickets = list(store, &dir.clone().join("ticket")).await?;
        let store_now = tickets
            .iter()
            .find(|o| o.location == mine)
            .map(|o| o.last_modified)
            .unwrap_or_else(Utc::now);
        for other in tickets {
            match parse_ticket(&other.location) {
                Some((m, id)) if (m, id.as_str()) < (n, me.as_str()) => {
                    wait_gone(store, other).await?
                }
                _ => {}
            }
        }
        critical(store_now).await
    }
    .await;
    // Leave: best effort (a ticket left behind is deleted as stale by the next waiter).
    if let Some(t) = ticket {
        let _ = store.delete(&t).await;
    }
    if result.is_err() {
        let _ = store.delete(&choosing).await;
    }
    result
}

/// Re-writes `ticket` every [`REFRESH`] until dropped.
fn refresher(store: Arc<dyn ObjectStore>, ticket: Path) -> AbortOnDrop {
    AbortOnDrop(tokio::spawn(async move {
        loop {
            tokio::time::sleep(REFRESH).await;
            let _ = put_empty(&store, &ticket).await;
        }
    }))
}

/// `(number, id)` of a ticket key `…/<n>-<id>`.
fn parse_ticket(path: &Path) -> Option<(u64, String)> {
    let name = path.filename()?;
    let (n, id) = name.split_once('-')?;
    Some((n.parse().ok()?, id.to_owned()))
}

pub(super) async fn put_empty(store: &Arc<dyn ObjectStore>, path: &Path) -> StorageResult<()> {
    store
        .put(path, PutPayload::from_bytes(Bytes::new()))
        .await
        .map(|_| ())
        .map_err(os_err)
}

pub(super) async fn list(
    store: &Arc<dyn ObjectStore>,
    prefix: &Path,
) -> StorageResult<Vec<object_store::ObjectMeta>> {
    store.list(Some(prefix)).try_collect().await.map_err(os_err)
}

/// Waits until `object` is deleted, or deletes it once it has stayed unchanged for [`STALE`].
async fn wait_gone(
    store: &Arc<dyn ObjectStore>,
    object: object_store::ObjectMeta,
) -> StorageResult<()> {
    let mut seen = object.last_modified;
    let mut since = Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
        match store.head(&object.location).await {
            Err(object_store::Error::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(os_err(e)),
            Ok(now) if now.last_modified != seen => {
                seen = now.last_modified;
                since = Instant::now();
            }
            Ok(_) if since.elapsed() >= STALE => {
                tracing::warn!(object = %object.location, "lock entry of a dead holder removed");
                let _ = store.delete(&object.location).await;
                return Ok(());
            }
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// `n` concurrent lockers of `dir` on `store`: asserts that never two are inside the
    /// critical section and that every one got in, and that the lock leaves nothing behind.
    async fn race(store: &Arc<dyn ObjectStore>, dir: &str, n: usize) {
        let inside = Arc::new(AtomicUsize::new(0));
        let entered = Arc::new(AtomicUsize::new(0));
        let dir = Path::from(dir);
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let (store, inside, entered, dir) =
                    (store.clone(), inside.clone(), entered.clone(), dir.clone());
                tokio::spawn(async move {
                    with_lock(&store, &dir, |_| async move {
                        assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two inside");
                        jitter().await;
                        inside.fetch_sub(1, Ordering::SeqCst);
                        entered.fetch_add(1, Ordering::SeqCst);
                        Ok(())
                    })
                    .await
                    .unwrap()
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(entered.load(Ordering::SeqCst), n);
        assert!(list(store, &dir).await.unwrap().is_empty(), "nothing left");
    }

    /// Many concurrent lockers on one store: one at a time, all get in.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn mutual_exclusion_under_contention() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        race(&store, "locks/x", 24).await;
    }

    /// An in-memory store that sleeps a random 0–1 ms (one time in ten 5–20 ms) before every
    /// operation, so that the lockers' PUTs, LISTs and DELETEs interleave in many ways.
    #[derive(Debug)]
    struct Jitter(InMemory);

    impl std::fmt::Display for Jitter {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Jitter")
        }
    }

    async fn jitter() {
        // Mostly quick, sometimes slow: long windows between a caller's steps.
        let us = if rand::random_range(0..10) == 0 {
            rand::random_range(5_000..20_000)
        } else {
            rand::random_range(0..1_000)
        };
        tokio::time::sleep(Duration::from_micros(us)).await;
    }

    #[async_trait::async_trait]
    impl ObjectStore for Jitter {
        async fn put_opts(
            &self,
            location: &Path,
            payload: PutPayload,
            opts: object_store::PutOptions,
        ) -> object_store::Result<object_store::PutResult> {
            jitter().await;
            let r = self.0.put_opts(location, payload, opts).await;
            jitter().await;
            r
        }
        async fn put_multipart_opts(
            &self,
            location: &Path,
            opts: object_store::PutMultipartOptions,
        ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
            self.0.put_multipart_opts(location, opts).await
        }
        async fn get_opts(
            &self,
            location: &Path,
            options: object_store::GetOptions,
        ) -> object_store::Result<object_store::GetResult> {
            jitter().await;
            self.0.get_opts(location, options).await
        }
        fn delete_stream(
            &self,
            locations: futures_util::stream::BoxStream<'static, object_store::Result<Path>>,
        ) -> futures_util::stream::BoxStream<'static, object_store::Result<Path>> {
            use futures_util::StreamExt;
            let inner = self.0.clone();
            futures_util::stream::once(async move {
                jitter().await;
                inner.delete_stream(locations)
            })
            .flatten()
            .boxed()
        }
        fn list(
            &self,
            prefix: Option<&Path>,
        ) -> futures_util::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>>
        {
            use futures_util::StreamExt;
            let inner = self.0.clone();
            let prefix = prefix.cloned();
            futures_util::stream::once(async move {
                jitter().await;
                let all: Vec<_> = inner.list(prefix.as_ref()).collect().await;
                futures_util::stream::iter(all)
            })
            .flatten()
            .boxed()
        }
        async fn list_with_delimiter(
            &self,
            prefix: Option<&Path>,
        ) -> object_store::Result<object_store::ListResult> {
            jitter().await;
            self.0.list_with_delimiter(prefix).await
        }
        async fn copy_opts(
            &self,
            from: &Path,
            to: &Path,
            options: object_store::CopyOptions,
        ) -> object_store::Result<()> {
            self.0.copy_opts(from, to, options).await
        }
    }

    /// The same with jitter, many rounds: the critical sections never overlap.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn mutual_exclusion_with_jitter() {
        let store: Arc<dyn ObjectStore> = Arc::new(Jitter(InMemory::new()));
        for round in 0..5 {
            race(&store, &format!("locks/j{round}"), 12).await;
        }
    }

    /// A dead holder's ticket is taken over after STALE.
    #[tokio::test]
    async fn dead_holder_is_taken_over() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let dir = Path::from("locks/y");
        put_empty(
            &store,
            &dir.clone().join("ticket").join(format!("{:020}-dead", 1)),
        )
        .await
        .unwrap();
        let t0 = Instant::now();
        with_lock(&store, &dir, |_| async { Ok(()) }).await.unwrap();
        assert!(t0.elapsed() >= STALE);
        assert!(list(&store, &dir).await.unwrap().is_empty());
    }
}
