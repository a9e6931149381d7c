//! Coordination on a storage's records, for a backend that has none of its own.
//!
//! ```text
//! uploads/u<id>                 the upload's state: path, total, times, received ranges,
//!                               and its claim (owner, lease end); changed by compare-and-swap
//! uploads/u<id>/w/<token>       a writer of a resumable upload, while it writes (a lease)
//! upload-paths/<sha256(path)>   the id of the path's resumable upload (create-only)
//! ```
//!
//! Exactly once: a path's resumable upload is the one whose index record was created
//! first; a claim is the one compare-and-swap that found the state unclaimed (or its lease
//! over); a range counts when the swap that adds it found the state unclaimed.
//!
//! A claim is held by this process (its owner token is the process's) and lasts
//! [`CLAIM_LEASE`] (15 s); the process renews a resumable upload's claim every
//! [`CLAIM_RENEW`] (5 s) until it publishes, gives it up or discards the upload, so a
//! finalizer that died is taken over within 15 s. Publication renews it by compare-and-swap
//! first: a holder whose claim was taken over (paused past its lease) publishes nothing.
//! Within one process a claim is taken over only once its lease is over, too.
//!
//! Writers and claims: a writer of a shared upload creates its lease record, then reads the
//! state, and re-reads it before any write more than [`RECHECK`] after its last look; a
//! claimer swaps the claim in, then, if a live writer record is there, waits [`RECHECK`] +
//! [`WRITE_GRACE`]. With records that every process sees in one order, either the writer
//! saw the claim (and writes nothing more) or the claimer sees its record (and waits until
//! it must have). A writer renews its lease record when half of it is gone; a dead writer's
//! record expires. A commit counts only if its swap finds the state unclaimed.

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::ops::Range;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::ChunkWriter;
use crate::path::FilePath;
use crate::storage::{
    Claim, ObjectMeta, PublishOptions, RecordKey, RecordMode, Storage, StorageError, StorageResult,
    UploadId, UploadInfo, UploadSpec, UploadWriter, merge_ranges,
};

/// How long a claim lasts without renewal: a finalizer that died is taken over this long
/// after its last renewal. Its process renews it every [`CLAIM_RENEW`] while it finalizes,
/// and publication renews it first.
pub(super) const CLAIM_LEASE: Duration = Duration::from_secs(15);
/// How often a live finalizer renews its claim of a resumable upload.
const CLAIM_RENEW: Duration = Duration::from_secs(5);
/// The longest a claim is renewed for: a finalization still going after this is left to be
/// taken over.
const CLAIM_MAX_HOLD: Duration = Duration::from_secs(3600);
/// How long a writer's lease record lasts without renewal.
const WRITER_LEASE: Duration = Duration::from_secs(60);
/// A writer re-reads the state before a write when it last did longer ago than this.
const RECHECK: Duration = Duration::from_millis(500);
/// How long one write of a writer (a batch of at most a few MiB) may take, for a claim that
/// waits for a write in flight.
const WRITE_GRACE: Duration = Duration::from_secs(2);
/// Compare-and-swap attempts before giving up (each lost one means another change won).
const SWAPS: usize = 64;

/// This process's owner token.
static OWNER: LazyLock<String> = LazyLock::new(|| crate::id::random_id("p"));

/// The renewal tasks of the claims this process holds, by upload id.
static RENEWALS: LazyLock<
    std::sync::Mutex<std::collections::HashMap<String, tokio::task::AbortHandle>>,
> = LazyLock::new(Default::default);

#[derive(Clone, Debug, Serialize, Deserialize)]
struct State {
    path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    total: Option<u64>,
    /// `single`, `lasting` or `resumable`.
    kind: String,
    created: u64,
    updated: u64,
    #[serde(default)]
    ranges: Vec<(u64, u64)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    claim: Option<Lease>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Lease {
    owner: String,
    /// Unix milliseconds.
    until: u64,
}

impl Lease {
    fn live(&self) -> bool {
        self.until > now_ms()
    }
}

impl State {
    fn ranges(&self) -> Vec<Range<u64>> {
        self.ranges.iter().map(|&(s, e)| s..e).collect()
    }

    fn info(&self, id: &UploadId, created_now: bool) -> UploadInfo {
        UploadInfo {
            id: id.clone(),
            path: FilePath::new(&self.path).ok(),
            total: self.total,
            created: time(self.created),
            updated: time(self.updated),
            created_now,
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn time(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn key(s: String) -> StorageResult<RecordKey> {
    RecordKey::new(s).map_err(StorageError::backend)
}

fn state_key(id: &UploadId) -> StorageResult<RecordKey> {
    key(format!("uploads/u{}", id.0))
}

fn writers_key(id: &UploadId) -> StorageResult<RecordKey> {
    key(format!("uploads/u{}/w", id.0))
}

fn path_key(path: &FilePath) -> StorageResult<RecordKey> {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(path.as_str().as_bytes());
    key(format!("upload-paths/{}", hex::encode(&digest[..16])))
}

fn json<T: Serialize>(value: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(value).expect("a state serializes"))
}

async fn load<S: Storage + ?Sized>(s: &S, id: &UploadId) -> StorageResult<Option<(State, String)>> {
    let Some(record) = s.get_record(&state_key(id)?).await? else {
        return Ok(None);
    };
    let state = serde_json::from_slice(&record.value).map_err(StorageError::backend)?;
    Ok(Some((state, record.etag)))
}

/// Applies `change` to the upload's state by compare-and-swap, retrying when another change
/// came first; `UploadClosed` when the upload is gone.
async fn update<S: Storage + ?Sized>(
    s: &S,
    id: &UploadId,
    mut change: impl FnMut(&mut State) -> StorageResult<()> + Send,
) -> StorageResult<State> {
    let k = state_key(id)?;
    for attempt in 0..SWAPS {
        let Some((mut state, etag)) = load(s, id).await? else {
            return Err(StorageError::UploadClosed);
        };
        change(&mut state)?;
        match s
            .put_record(&k, json(&state), RecordMode::Update(etag))
            .await
        {
            Ok(_) => return Ok(state),
            Err(StorageError::PreconditionFailed) => backoff(attempt).await,
            Err(e) => return Err(e),
        }
    }
    Err(StorageError::other("the upload's state kept changing"))
}

async fn backoff(attempt: usize) {
    let ms = (1u64 << attempt.min(6)).min(50);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

fn fresh_state(path: &FilePath, spec: UploadSpec) -> State {
    let (kind, total) = match spec {
        UploadSpec::Single => ("single", None),
        UploadSpec::Lasting => ("lasting", None),
        UploadSpec::Resumable { total } => ("resumable", Some(total)),
    };
    let now = now_ms();
    State {
        path: path.as_str().to_owned(),
        total,
        kind: kind.to_owned(),
        created: now,
        updated: now,
        ranges: Vec::new(),
        claim: None,
    }
}

/// Creates a fresh upload's state record.
async fn create<S: Storage + ?Sized>(
    s: &S,
    path: &FilePath,
    spec: UploadSpec,
) -> StorageResult<(UploadId, State)> {
    let id = UploadId(crate::id::random_id("r"));
    let state = fresh_state(path, spec);
    s.put_record(&state_key(&id)?, json(&state), RecordMode::Create)
        .await?;
    Ok((id, state))
}

pub(super) async fn open_upload<S: Storage + ?Sized>(
    s: &S,
    path: &FilePath,
    spec: UploadSpec,
) -> StorageResult<UploadInfo> {
    if !matches!(spec, UploadSpec::Resumable { .. }) {
        let (id, state) = create(s, path, spec).await?;
        return Ok(state.info(&id, true));
    }
    let index = path_key(path)?;
    for attempt in 0..SWAPS {
        let current = s.get_record(&index).await?;
        let mode = match &current {
            Some(record) => {
                let id = UploadId(String::from_utf8_lossy(&record.value).into_owned());
                if let Some((state, _)) = load(s, &id).await? {
                    return Ok(state.info(&id, false));
                }
                // The index names an upload that is gone: replace it.
                RecordMode::Update(record.etag.clone())
            }
            None => RecordMode::Create,
        };
        let (id, state) = create(s, path, spec).await?;
        match s.put_record(&index, Bytes::from(id.0.clone()), mode).await {
            Ok(_) => return Ok(state.info(&id, true)),
            Err(StorageError::PreconditionFailed) => {
                // Another creator came first: join theirs.
                s.delete_record(&state_key(&id)?).await?;
                backoff(attempt).await;
            }
            Err(e) => {
                let _ = s.delete_record(&state_key(&id)?).await;
                return Err(e);
            }
        }
    }
    Err(StorageError::other("the path's upload kept changing"))
}

pub(super) async fn find_upload<S: Storage + ?Sized>(
    s: &S,
    path: &FilePath,
) -> StorageResult<Option<UploadInfo>> {
    let Some(record) = s.get_record(&path_key(path)?).await? else {
        return Ok(None);
    };
    let id = UploadId(String::from_utf8_lossy(&record.value).into_owned());
    Ok(load(s, &id).await?.map(|(state, _)| state.info(&id, false)))
}

pub(super) async fn received<S: Storage + ?Sized>(
    s: &S,
    id: &UploadId,
) -> StorageResult<Vec<Range<u64>>> {
    match load(s, id).await? {
        Some((state, _)) => Ok(state.ranges()),
        None => Err(StorageError::NotFound),
    }
}

/// The state of an upload that is open (neither claimed nor gone), or `UploadClosed`.
async fn open_state<S: Storage + ?Sized>(s: &S, id: &UploadId) -> StorageResult<State> {
    match load(s, id).await? {
        Some((state, _)) if state.claim.is_none() => Ok(state),
        _ => Err(StorageError::UploadClosed),
    }
}

pub(super) async fn writer<S: Storage + ?Sized>(
    s: Arc<S>,
    id: &UploadId,
    offset: u64,
) -> StorageResult<Box<dyn ChunkWriter>> {
    let state = open_state(&*s, id).await?;
    let lease = if state.kind == "resumable" {
        let k = writers_key(id)?
            .join(&crate::id::random_id(""))
            .map_err(StorageError::backend)?;
        let until = now_ms() + WRITER_LEASE.as_millis() as u64;
        s.put_record(&k, Bytes::from(until.to_string()), RecordMode::Create)
            .await?;
        // Registered first, then checked: a claim from now on waits for this writer.
        if let Err(e) = open_state(&*s, id).await {
            let _ = s.delete_record(&k).await;
            return Err(e);
        }
        Some((k, Instant::now()))
    } else {
        None
    };
    let inner = match s.write_upload_sized(id, offset, state.total).await {
        Ok(w) => w,
        Err(e) => {
            if let Some((k, _)) = &lease {
                let _ = s.delete_record(k).await;
            }
            return Err(e);
        }
    };
    Ok(Box::new(Recorded {
        storage: s,
        id: id.clone(),
        start: offset,
        pos: offset,
        inner: Some(inner),
        lease,
        checked: Instant::now(),
        check_now: false,
    }))
}

/// A backend's writer whose commit the crate records.
struct Recorded<S: Storage + ?Sized> {
    storage: Arc<S>,
    id: UploadId,
    start: u64,
    pos: u64,
    inner: Option<Box<dyn UploadWriter>>,
    /// A shared upload's writer lease: its record and when it was last written.
    lease: Option<(RecordKey, Instant)>,
    /// When it last saw the state open.
    checked: Instant,
    check_now: bool,
}

impl<S: Storage + ?Sized> Recorded<S> {
    /// Re-reads the state now and then (a claim waits for us until we see it), and renews
    /// our lease when half of it is gone.
    async fn keep_open(&mut self) -> StorageResult<()> {
        let Some((k, renewed)) = &mut self.lease else {
            return Ok(());
        };
        if renewed.elapsed() > WRITER_LEASE / 2 {
            let until = now_ms() + WRITER_LEASE.as_millis() as u64;
            let value = Bytes::from(until.to_string());
            self.storage
                .put_record(k, value, RecordMode::Overwrite)
                .await?;
            *renewed = Instant::now();
            self.check_now = true; // look at the state right after renewing
        }
        if self.check_now || self.checked.elapsed() >= RECHECK {
            self.check_now = false;
            open_state(&*self.storage, &self.id).await?;
            self.checked = Instant::now();
        }
        Ok(())
    }

    async fn release(&mut self) {
        if let Some((k, _)) = self.lease.take() {
            let _ = self.storage.delete_record(&k).await;
        }
    }
}

impl<S: Storage + ?Sized> Drop for Recorded<S> {
    fn drop(&mut self) {
        // A writer dropped without committing: free its lease record now (best effort);
        // else a claim would wait for it to expire.
        if let Some((k, _)) = self.lease.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let storage = self.storage.clone();
            rt.spawn(async move {
                let _ = storage.delete_record(&k).await;
            });
        }
    }
}

#[async_trait]
impl<S: Storage + ?Sized> ChunkWriter for Recorded<S> {
    async fn write(&mut self, data: Bytes) -> StorageResult<()> {
        if let Err(e) = self.keep_open().await {
            self.release().await;
            return Err(e);
        }
        let len = data.len() as u64;
        let inner = self.inner.as_mut().ok_or(StorageError::UploadClosed)?;
        inner.write(data).await?;
        self.pos += len;
        Ok(())
    }

    async fn flush(&mut self) -> StorageResult<()> {
        match self.inner.as_mut() {
            Some(w) => w.flush().await,
            None => Ok(()),
        }
    }

    async fn commit(mut self: Box<Self>) -> StorageResult<Vec<Range<u64>>> {
        let inner = self.inner.take().ok_or(StorageError::UploadClosed)?;
        let result = async {
            inner.commit().await?;
            let range = self.start..self.pos;
            let state = update(&*self.storage, &self.id, |state| {
                if state.claim.is_some() {
                    return Err(StorageError::UploadClosed);
                }
                if !range.is_empty() {
                    let mut ranges = state.ranges();
                    ranges.push(range.clone());
                    state.ranges = merge_ranges(ranges)
                        .into_iter()
                        .map(|r| (r.start, r.end))
                        .collect();
                }
                state.updated = now_ms();
                Ok(())
            })
            .await?;
            Ok(state.ranges())
        }
        .await;
        self.release().await;
        if matches!(result, Err(StorageError::UploadClosed))
            && matches!(load(&*self.storage, &self.id).await, Ok(None))
        {
            // Finished or swept while this chunk was written: its bytes are nobody's, and a
            // backend may have stored them after the upload's were deleted.
            let _ = self.storage.delete_upload(&self.id).await;
        }
        result
    }
}

/// Once the claim is in: if a writer of the upload may still write without having seen it
/// (a live writer record), waits until it must have — it re-reads the state before any
/// write more than [`RECHECK`] after its last look — and for a write it started just before
/// that to end ([`WRITE_GRACE`]). Records of writers that died are removed.
async fn writers_done<S: Storage + ?Sized>(s: &S, id: &UploadId) -> StorageResult<()> {
    let mut live = false;
    for k in s.list_records(&writers_key(id)?).await? {
        let until = match s.get_record(&k).await? {
            Some(r) => std::str::from_utf8(&r.value)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0),
            None => continue,
        };
        if until > now_ms() {
            live = true;
        } else {
            // Its writer died: its bytes never counted.
            let _ = s.delete_record(&k).await;
        }
    }
    if live {
        tokio::time::sleep(RECHECK + WRITE_GRACE).await;
    }
    Ok(())
}

pub(super) async fn claim<S: Storage + ?Sized>(s: Arc<S>, id: &UploadId) -> StorageResult<Claim> {
    let won = claim_for(&*s, id, CLAIM_LEASE, &OWNER).await?;
    if won == Some(true) {
        keep_renewing(s, id);
    }
    Ok(if won.is_some() {
        Claim::Won
    } else {
        Claim::Lost
    })
}

/// Renews our claim every [`CLAIM_RENEW`] until [`stop_renewing`] (publication, unclaim,
/// abort), the claim is not ours any more, or [`CLAIM_MAX_HOLD`] has passed.
fn keep_renewing<S: Storage + ?Sized>(s: Arc<S>, id: &UploadId) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let upload = id.clone();
    let task = rt.spawn(async move {
        let start = Instant::now();
        while start.elapsed() < CLAIM_MAX_HOLD {
            tokio::time::sleep(CLAIM_RENEW).await;
            if let Err(e) = renew(&*s, &upload).await {
                tracing::debug!(upload = %upload, error = %e, "claim no longer renewed");
                break;
            }
        }
    });
    let previous = RENEWALS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id.0.clone(), task.abort_handle());
    if let Some(previous) = previous {
        previous.abort();
    }
}

fn stop_renewing(id: &UploadId) {
    let task = RENEWALS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&id.0);
    if let Some(task) = task {
        task.abort();
    }
}

/// Extends our claim to [`CLAIM_LEASE`] from now; `UploadClosed` when it is not ours (taken
/// over) or the upload is gone.
async fn renew<S: Storage + ?Sized>(s: &S, id: &UploadId) -> StorageResult<State> {
    let until = now_ms() + CLAIM_LEASE.as_millis() as u64;
    update(s, id, |state| match &state.claim {
        None => Err(StorageError::other("renewal of an unclaimed upload")),
        Some(_) if !ours(state) => Err(StorageError::UploadClosed),
        Some(_) => {
            state.claim = Some(Lease {
                owner: OWNER.clone(),
                until,
            });
            Ok(())
        }
    })
    .await
}

/// Swaps the claim in for `owner` and `lease`: `Some(resumable)` when won (the state the swap
/// wrote tells the upload's kind: no second read), `None` when lost.
async fn claim_for<S: Storage + ?Sized>(
    s: &S,
    id: &UploadId,
    lease: Duration,
    owner: &str,
) -> StorageResult<Option<bool>> {
    let until = now_ms() + lease.as_millis() as u64;
    let swapped = update(s, id, |state| {
        if state.claim.as_ref().is_some_and(Lease::live) {
            return Err(StorageError::PreconditionFailed);
        }
        state.claim = Some(Lease {
            owner: owner.to_owned(),
            until,
        });
        Ok(())
    })
    .await;
    match swapped {
        Ok(state) => {
            let resumable = state.kind == "resumable";
            if resumable {
                writers_done(s, id).await?;
            }
            Ok(Some(resumable))
        }
        Err(StorageError::PreconditionFailed | StorageError::UploadClosed) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Claims the upload for `lease`, for this process (`ours`) or another one: how the
/// conformance suite stands in for a process that dies holding a claim (a short lease).
#[cfg(any(test, feature = "conformance"))]
pub(crate) async fn plant_claim(
    s: &dyn Storage,
    id: &UploadId,
    lease: Duration,
    ours: bool,
) -> StorageResult<Claim> {
    let owner = if ours { OWNER.as_str() } else { "p-elsewhere" };
    let won = claim_for(s, id, lease, owner).await?;
    Ok(if won.is_some() {
        Claim::Won
    } else {
        Claim::Lost
    })
}

fn ours(state: &State) -> bool {
    state.claim.as_ref().is_some_and(|c| c.owner == *OWNER)
}

pub(super) async fn unclaim<S: Storage + ?Sized>(s: &S, id: &UploadId) -> StorageResult<()> {
    stop_renewing(id);
    let released = update(s, id, |state| {
        if !ours(state) {
            return Err(StorageError::PreconditionFailed);
        }
        state.claim = None;
        Ok(())
    })
    .await;
    match released {
        Ok(_) | Err(StorageError::PreconditionFailed | StorageError::UploadClosed) => Ok(()),
        Err(e) => Err(e),
    }
}

pub(super) async fn publish<S: Storage + ?Sized>(
    s: &S,
    id: &UploadId,
    path: &FilePath,
    size: u64,
    options: PublishOptions,
) -> StorageResult<ObjectMeta> {
    // Renew the claim first: a holder whose claim was taken over stops here.
    let state = match renew(s, id).await {
        Ok(state) => state,
        Err(e) => {
            stop_renewing(id);
            return Err(e);
        }
    };
    let published = s.publish_upload(id, path, size, options).await;
    stop_renewing(id);
    let meta = published?;
    // The file is published: a bookkeeping failure now must not turn that into an error.
    // The records left are the sweeper's (its `abort` leaves a published file alone).
    if let Err(e) = forget(s, id, &state).await {
        tracing::warn!(upload = %id, error = %e, "published; its records are left to the sweeper");
    }
    Ok(meta)
}

/// Deletes the upload's records: the path's index first (if it still names this upload),
/// then the writers' and the state.
async fn forget<S: Storage + ?Sized>(s: &S, id: &UploadId, state: &State) -> StorageResult<()> {
    if state.kind == "resumable"
        && let Ok(path) = FilePath::new(&state.path)
    {
        let index = path_key(&path)?;
        if let Some(record) = s.get_record(&index).await?
            && record.value == id.0.as_bytes()
        {
            s.delete_record(&index).await?;
        }
    }
    for k in s.list_records(&state_key(id)?).await? {
        s.delete_record(&k).await?;
    }
    s.delete_record(&state_key(id)?).await?;
    Ok(())
}

pub(super) async fn abort<S: Storage + ?Sized>(s: &S, id: &UploadId) -> StorageResult<()> {
    stop_renewing(id);
    s.delete_upload(id).await?;
    match load(s, id).await? {
        Some((state, _)) => forget(s, id, &state).await,
        None => {
            // Writers' records left without a state (best effort).
            for k in s.list_records(&state_key(id)?).await? {
                s.delete_record(&k).await?;
            }
            Ok(())
        }
    }
}

pub(super) async fn list_uploads<S: Storage + ?Sized>(s: &S) -> StorageResult<Vec<UploadInfo>> {
    let root = key("uploads".to_owned())?;
    let mut out = Vec::new();
    for k in s.list_records(&root).await? {
        let Some(id) = k
            .as_str()
            .strip_prefix("uploads/u")
            .filter(|rest| !rest.contains('/'))
        else {
            continue;
        };
        let id = UploadId(id.to_owned());
        if let Some((state, _)) = load(s, &id).await? {
            out.push(state.info(&id, false));
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}
