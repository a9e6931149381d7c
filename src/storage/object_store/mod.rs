//! [`ObjectStoreStorage`]: uploads and files in an object store (S3 and S3-compatible
//! servers such as Garage or MinIO, GCS, Azure) through the [`object_store`] crate. Feature
//! `object-store`.
//!
//! Everything lives in the bucket; no state in process memory, no lock server, so any number
//! of server instances can share one bucket. Layout (under an optional prefix):
//!
//! ```text
//! <path>                                   published files (metadata: content type,
//!                                          tu-version = the etag, tu-attrs = attributes)
//! .tower-uploads/paths/<sha256(path)>      the id of the path's resumable upload
//! .tower-uploads/uploads/<id>/info         path, total, created (resumable uploads)
//! .tower-uploads/uploads/<id>/chunks/<start:020>-<writer>
//!                                          one object per committed chunk: its range is
//!                                          [start, start + size); received = a listing
//! .tower-uploads/uploads/<id>/mp/<writer>  a multipart upload in progress (for the sweep)
//! .tower-uploads/uploads/<id>/claimed      the finalize claim (`{"released": bool}`)
//! .tower-uploads/records/<key>             records
//! .tower-uploads/attrs/<version>           attributes too large for object metadata
//! .tower-uploads/locks/<name>/…            bakery locks (see `lock.rs`)
//! ```
//!
//! Exactly-once decisions (creating a path's upload, claiming, create-only records,
//! create-only / if-match publication) are made inside a bakery lock built from plain
//! objects and listings (`lock.rs`): Garage ignores `If-None-Match: *`, so conditional puts
//! are only an extra guard. ARCHITECTURE.md has the argument and the request costs.

mod lock;

use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::{StreamExt, TryStreamExt};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::{Path, PathPart};
use object_store::{
    Attribute, AttributeValue, Attributes, GetOptions, GetRange, MultipartId, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use self::lock::{AbortOnDrop, list, with_lock};
use super::{
    ByteStream, Claim, ObjectMeta, PublishOptions, PutMode, RecordKey, RecordMode, Storage,
    StorageError, StorageResult, UploadId, UploadInfo, UploadSpec, UploadWriter, merge_ranges,
};
use crate::path::FilePath;

/// Bytes a writer gathers before sending them as one part of a multipart upload (also the
/// part size of a published file). At least 5 MiB (S3's smallest part but the last); the
/// memory one writer holds.
pub const PART_SIZE: usize = 8 << 20;
/// A claim not refreshed for this long (by the store's clock) belongs to a dead finalizer
/// and is taken over.
const CLAIM_STALE: Duration = Duration::from_secs(120);
/// How often a finalizer refreshes its claim while it assembles the file.
const CLAIM_REFRESH: Duration = Duration::from_secs(15);
/// Attributes up to this size (base64) go into object metadata; larger ones into a sidecar
/// object (S3 allows 2 KiB of user metadata).
const INLINE_ATTRS: usize = 1536;
const RESERVED: &str = ".tower-uploads";
const META_VERSION: &str = "tu-version";
const META_ATTRS: &str = "tu-attrs";
const META_ATTRS_REF: &str = "tu-attrs-ref";

/// A [`Storage`] in an object store. Cloning shares the store.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use tower_uploads::storage::ObjectStoreStorage;
/// // AWS_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ALLOW_HTTP…
/// let storage = ObjectStoreStorage::from_url("s3://my-bucket/uploads")?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ObjectStoreStorage {
    store: Arc<dyn ObjectStore>,
    multipart: Arc<dyn MultipartStore>,
    root: Path,
}

impl std::fmt::Debug for ObjectStoreStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStoreStorage")
            .field("store", &self.store.to_string())
            .field("root", &self.root.as_ref())
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
struct Info {
    path: String,
    total: u64,
    created_ms: u64,
}

#[derive(Serialize, Deserialize)]
struct ClaimState {
    released: bool,
}

#[derive(Serialize, Deserialize)]
struct MultipartMarker {
    key: String,
    id: String,
}

/// Maps an `object_store` error.
fn os_err(e: object_store::Error) -> StorageError {
    match e {
        object_store::Error::NotFound { .. } => StorageError::NotFound,
        object_store::Error::Precondition { .. } | object_store::Error::AlreadyExists { .. } => {
            StorageError::PreconditionFailed
        }
        other => StorageError::Other(format!("object store: {other}")),
    }
}

fn is_not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
}

fn hex_sha256(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

fn system_time(t: DateTime<Utc>) -> SystemTime {
    SystemTime::from(t)
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A committed chunk: `[start, end)` in the object at `location`.
#[derive(Clone, Debug)]
struct Chunk {
    start: u64,
    end: u64,
    location: Path,
}

/// The pieces of chunks that cover `range`, in order (`None` when there is a gap).
fn cover(chunks: &[Chunk], range: Range<u64>) -> Option<Vec<(Path, Range<u64>)>> {
    let mut pieces = Vec::new();
    let mut pos = range.start;
    while pos < range.end {
        let best = chunks
            .iter()
            .filter(|c| c.start <= pos && pos < c.end)
            .max_by_key(|c| c.end)?;
        let end = best.end.min(range.end);
        pieces.push((best.location.clone(), pos - best.start..end - best.start));
        pos = end;
    }
    Some(pieces)
}

impl ObjectStoreStorage {
    /// A storage over `store` (any store that also does multipart uploads: S3, GCS, Azure,
    /// `InMemory`), keeping everything at the bucket's root.
    pub fn new<S: ObjectStore + MultipartStore>(store: Arc<S>) -> Self {
        ObjectStoreStorage {
            store: store.clone(),
            multipart: store,
            root: Path::default(),
        }
    }

    /// Keeps files and bookkeeping under `prefix` (`a/b`) instead of the bucket's root.
    pub fn with_prefix(mut self, prefix: &str) -> StorageResult<Self> {
        self.root = Path::parse(prefix.trim_matches('/'))
            .map_err(|e| StorageError::Other(format!("bad prefix: {e}")))?;
        Ok(self)
    }

    /// A storage from a URL: `s3://bucket[/prefix]`, configured by the standard `AWS_*`
    /// environment variables (`AWS_ENDPOINT`, `AWS_ALLOW_HTTP`, `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, …), or `memory://` (in process, for tests).
    pub fn from_url(url: &str) -> StorageResult<Self> {
        Self::from_url_opts(url, std::iter::empty::<(String, String)>())
    }

    /// [`from_url`](Self::from_url) with options that take precedence over the environment
    /// (`("aws_endpoint", "http://…")`: the names of `object_store`'s `AmazonS3ConfigKey`).
    pub fn from_url_opts<K, V>(
        url: &str,
        options: impl IntoIterator<Item = (K, V)>,
    ) -> StorageResult<Self>
    where
        K: AsRef<str>,
        V: Into<String>,
    {
        if url == "memory://" || url == "memory:///" {
            return Ok(Self::new(Arc::new(object_store::memory::InMemory::new())));
        }
        let Some(rest) = url.strip_prefix("s3://") else {
            return Err(StorageError::Other(format!(
                "unsupported store URL (want s3://bucket[/prefix] or memory://): {url}"
            )));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let mut builder = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
        for (k, v) in options {
            let key: object_store::aws::AmazonS3ConfigKey = k
                .as_ref()
                .to_ascii_lowercase()
                .parse()
                .map_err(|e| StorageError::Other(format!("s3 option {}: {e}", k.as_ref())))?;
            builder = builder.with_config(key, v);
        }
        let s3 = builder
            .build()
            .map_err(|e| StorageError::Other(format!("s3 configuration: {e}")))?;
        Self::new(Arc::new(s3)).with_prefix(prefix)
    }

    // ---- keys ----

    fn key(&self, parts: &[&str]) -> Path {
        let mut p = self.root.clone();
        for part in parts {
            p = p.join(PathPart::from(*part));
        }
        p
    }

    fn file_key(&self, path: &FilePath) -> StorageResult<Path> {
        if path.segments().next() == Some(RESERVED) {
            return Err(StorageError::ReservedPath(
                "the top-level name .tower-uploads is reserved",
            ));
        }
        let mut p = self.root.clone();
        for seg in path.segments() {
            p = p.join(PathPart::from(seg));
        }
        Ok(p)
    }

    fn upload_dir(&self, id: &UploadId) -> StorageResult<Path> {
        // Ids come from this storage; anything else cannot name an upload.
        let ok =
            id.0.len() >= 2 && id.0.len() <= 40 && id.0.bytes().all(|b| b.is_ascii_alphanumeric());
        if !ok {
            return Err(StorageError::NotFound);
        }
        Ok(self.key(&[RESERVED, "uploads", &id.0]))
    }

    fn pointer_key(&self, path: &FilePath) -> Path {
        self.key(&[RESERVED, "paths", &hex_sha256(path.as_str())])
    }

    fn lock_dir(&self, name: &str) -> Path {
        self.key(&[RESERVED, "locks", name])
    }

    fn record_key(&self, key: &RecordKey) -> Path {
        let mut p = self.key(&[RESERVED, "records"]);
        for seg in key.as_str().split('/') {
            p = p.join(PathPart::from(seg));
        }
        p
    }

    // ---- small objects ----

    async fn get_small(&self, key: &Path) -> StorageResult<Option<(Bytes, DateTime<Utc>)>> {
        match self.store.get(key).await {
            Ok(r) => {
                let modified = r.meta.last_modified;
                Ok(Some((r.bytes().await.map_err(os_err)?, modified)))
            }
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(os_err(e)),
        }
    }

    async fn put_small(&self, key: &Path, value: Bytes) -> StorageResult<()> {
        self.store
            .put(key, PutPayload::from_bytes(value))
            .await
            .map(|_| ())
            .map_err(os_err)
    }

    /// A create-only put as an extra guard where the store honours it (the lock decides;
    /// a store that refuses conditional puts gets a plain one).
    async fn put_create(&self, key: &Path, value: Bytes) -> StorageResult<()> {
        let opts = PutOptions::from(object_store::PutMode::Create);
        match self
            .store
            .put_opts(key, PutPayload::from_bytes(value.clone()), opts)
            .await
        {
            Ok(_) => Ok(()),
            Err(e @ object_store::Error::AlreadyExists { .. })
            | Err(e @ object_store::Error::Precondition { .. }) => Err(os_err(e)),
            Err(e) => {
                // Not supported here (or refused): the lock has decided already.
                tracing::debug!(error = %e, "conditional put refused; plain put");
                self.put_small(key, value).await
            }
        }
    }

    async fn exists(&self, key: &Path) -> StorageResult<bool> {
        match self.store.head(key).await {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(os_err(e)),
        }
    }

    async fn delete_quiet(&self, key: &Path) -> StorageResult<()> {
        match self.store.delete(key).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(os_err(e)),
        }
    }

    async fn info(&self, id: &UploadId) -> StorageResult<Option<(Info, DateTime<Utc>)>> {
        let dir = self.upload_dir(id)?;
        match self.get_small(&dir.clone().join("info")).await? {
            Some((bytes, modified)) => {
                let info: Info = serde_json::from_slice(&bytes)
                    .map_err(|e| StorageError::Other(format!("upload info: {e}")))?;
                Ok(Some((info, modified)))
            }
            None => Ok(None),
        }
    }

    fn upload_info(&self, id: &UploadId, info: &Info, created_now: bool) -> UploadInfo {
        let created = SystemTime::UNIX_EPOCH + Duration::from_millis(info.created_ms);
        UploadInfo {
            id: id.clone(),
            path: FilePath::new(info.path.clone()).ok(),
            total: Some(info.total),
            created,
            updated: created,
            created_now,
        }
    }

    /// Whether writers may still commit into the upload: not claimed (or released), and, for
    /// a resumable upload, not yet published or aborted. `claimed` is read before `info`:
    /// `claimed` is removed only after `info` (see [`Self::forget`]).
    async fn is_open(&self, id: &UploadId) -> StorageResult<bool> {
        let dir = self.upload_dir(id)?;
        if self.exists(&dir.clone().join("claimed")).await? {
            return Ok(false);
        }
        if id.0.starts_with('r') {
            return self.exists(&dir.join("info")).await;
        }
        Ok(true)
    }

    async fn chunks(&self, id: &UploadId) -> StorageResult<Vec<Chunk>> {
        let dir = self.upload_dir(id)?.join("chunks");
        let mut out = Vec::new();
        for o in list(&self.store, &dir).await? {
            let Some(name) = o.location.filename() else {
                continue;
            };
            let Some(start) = name.split('-').next().and_then(|s| s.parse::<u64>().ok()) else {
                continue;
            };
            out.push(Chunk {
                start,
                end: start.saturating_add(o.size),
                location: o.location,
            });
        }
        Ok(out)
    }

    /// A stream of the bytes of `pieces`, in order, each with one ranged GET.
    fn pieces_stream(&self, pieces: Vec<(Path, Range<u64>)>) -> ByteStream {
        let store = self.store.clone();
        futures_util::stream::iter(pieces.into_iter().filter(|(_, r)| r.start < r.end))
            .then(move |(location, range)| {
                let store = store.clone();
                async move {
                    let opts = GetOptions {
                        range: Some(GetRange::Bounded(range)),
                        ..Default::default()
                    };
                    let r = store.get_opts(&location, opts).await.map_err(os_err)?;
                    Ok::<_, StorageError>(r.into_stream().map_err(os_err))
                }
            })
            .try_flatten()
            .boxed()
    }

    /// Our meta of a stored object, from its GET/HEAD result.
    async fn meta_of(
        &self,
        meta: &object_store::ObjectMeta,
        attrs: &Attributes,
    ) -> StorageResult<ObjectMeta> {
        let get = |k: &'static str| {
            attrs
                .get(&Attribute::Metadata(k.into()))
                .map(|v| v.to_string())
        };
        let attributes = if let Some(b64) = get(META_ATTRS) {
            base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(b64.as_bytes())
                .map(Bytes::from)
                .unwrap_or_default()
        } else if let Some(r) = get(META_ATTRS_REF) {
            let key = self.key(&[RESERVED, "attrs", &r]);
            self.get_small(&key)
                .await?
                .map(|(b, _)| b)
                .unwrap_or_default()
        } else {
            Bytes::new()
        };
        Ok(ObjectMeta {
            size: meta.size,
            etag: get(META_VERSION)
                .or_else(|| meta.e_tag.clone().map(|e| e.trim_matches('"').to_owned()))
                .unwrap_or_default(),
            modified: system_time(meta.last_modified),
            content_type: attrs
                .get(&Attribute::ContentType)
                .map(|v| v.to_string())
                .unwrap_or_else(|| "application/octet-stream".into()),
            attributes,
        })
    }

    async fn head_key(&self, key: &Path) -> StorageResult<Option<(ObjectMeta, Attributes)>> {
        let opts = GetOptions {
            head: true,
            ..Default::default()
        };
        match self.store.get_opts(key, opts).await {
            Ok(r) => Ok(Some((
                self.meta_of(&r.meta, &r.attributes).await?,
                r.attributes,
            ))),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(os_err(e)),
        }
    }

    /// Removes an upload's bookkeeping: `info` first (writers and `open_upload` then see it
    /// gone), then multipart uploads in progress, chunks, and `claimed` last.
    async fn forget(&self, id: &UploadId) -> StorageResult<()> {
        let dir = self.upload_dir(id)?;
        self.delete_quiet(&dir.clone().join("info")).await?;
        let mut claimed = None;
        for o in list(&self.store, &dir).await? {
            let rel: Vec<_> = o
                .location
                .prefix_match(&dir)
                .map(|p| p.collect())
                .unwrap_or_default();
            match rel.first().map(|p| p.as_ref()) {
                Some("claimed") => claimed = Some(o.location),
                Some("mp") => {
                    if let Some((bytes, _)) = self.get_small(&o.location).await?
                        && let Ok(m) = serde_json::from_slice::<MultipartMarker>(&bytes)
                        && let Ok(key) = Path::parse(&m.key)
                    {
                        let _ = self.multipart.abort_multipart(&key, &m.id).await;
                    }
                    self.delete_quiet(&o.location).await?;
                }
                _ => self.delete_quiet(&o.location).await?,
            }
        }
        if let Some(c) = claimed {
            self.delete_quiet(&c).await?;
        }
        Ok(())
    }

    /// Re-writes `claimed` every [`CLAIM_REFRESH`] until dropped (a finalizer at work).
    fn claim_heartbeat(&self, id: &UploadId) -> StorageResult<AbortOnDrop> {
        let key = self.upload_dir(id)?.join("claimed");
        let this = self.clone();
        Ok(AbortOnDrop(tokio::spawn(async move {
            loop {
                tokio::time::sleep(CLAIM_REFRESH).await;
                let body = serde_json::to_vec(&ClaimState { released: false }).unwrap_or_default();
                let _ = this.put_small(&key, body.into()).await;
            }
        })))
    }

    /// Checks a publication's precondition against what is at the path now.
    fn check_mode(mode: &PutMode, current: Option<&ObjectMeta>) -> StorageResult<()> {
        match (mode, current) {
            (PutMode::Overwrite, _) => Ok(()),
            (PutMode::Create, None) => Ok(()),
            (PutMode::Update(etag), Some(m)) if m.etag == *etag => Ok(()),
            _ => Err(StorageError::PreconditionFailed),
        }
    }
}

/// A multipart upload: tracked (its id recorded under the upload, so that an abandoned one is
/// aborted with its upload) where the store lets us set attributes at creation, else the
/// store's own handle.
enum Multipart {
    Tracked {
        key: Path,
        id: MultipartId,
        marker: Path,
        parts: Vec<PartId>,
    },
    Handle(Box<dyn object_store::MultipartUpload>),
}

impl ObjectStoreStorage {
    async fn start_multipart(
        &self,
        key: &Path,
        marker: Path,
        attributes: Attributes,
    ) -> StorageResult<Multipart> {
        let opts = PutMultipartOptions {
            attributes: attributes.clone(),
            ..Default::default()
        };
        match self.multipart.create_multipart_opts(key, opts).await {
            Ok(id) => {
                let m = MultipartMarker {
                    key: key.to_string(),
                    id: id.clone(),
                };
                let body =
                    serde_json::to_vec(&m).map_err(|e| StorageError::Other(e.to_string()))?;
                self.put_small(&marker, body.into()).await?;
                Ok(Multipart::Tracked {
                    key: key.clone(),
                    id,
                    marker,
                    parts: Vec::new(),
                })
            }
            Err(object_store::Error::NotSupported { .. })
            | Err(object_store::Error::NotImplemented { .. }) => {
                let opts = PutMultipartOptions {
                    attributes,
                    ..Default::default()
                };
                Ok(Multipart::Handle(
                    self.store
                        .put_multipart_opts(key, opts)
                        .await
                        .map_err(os_err)?,
                ))
            }
            Err(e) => Err(os_err(e)),
        }
    }

    async fn put_part(&self, mp: &mut Multipart, data: PutPayload) -> StorageResult<()> {
        match mp {
            Multipart::Tracked { key, id, parts, .. } => {
                let part = self
                    .multipart
                    .put_part(key, id, parts.len(), data)
                    .await
                    .map_err(os_err)?;
                parts.push(part);
                Ok(())
            }
            Multipart::Handle(h) => h.put_part(data).await.map_err(os_err),
        }
    }

    async fn complete(&self, mp: Multipart) -> StorageResult<()> {
        match mp {
            Multipart::Tracked {
                key,
                id,
                marker,
                parts,
            } => {
                self.multipart
                    .complete_multipart(&key, &id, parts)
                    .await
                    .map_err(os_err)?;
                self.delete_quiet(&marker).await
            }
            Multipart::Handle(mut h) => h.complete().await.map(|_| ()).map_err(os_err),
        }
    }

    async fn abort_multipart(&self, mp: Multipart) {
        match mp {
            Multipart::Tracked {
                key, id, marker, ..
            } => {
                let _ = self.multipart.abort_multipart(&key, &id).await;
                let _ = self.delete_quiet(&marker).await;
            }
            Multipart::Handle(mut h) => {
                let _ = h.abort().await;
            }
        }
    }
}

/// Gathers frames into parts of exactly [`PART_SIZE`] bytes.
#[derive(Default)]
struct PartBuffer {
    frames: Vec<Bytes>,
    len: usize,
}

impl PartBuffer {
    fn push(&mut self, b: Bytes) {
        self.len += b.len();
        if !b.is_empty() {
            self.frames.push(b);
        }
    }

    /// The next full part, if there is one.
    fn take_part(&mut self) -> Option<PutPayload> {
        if self.len < PART_SIZE {
            return None;
        }
        let mut out = Vec::new();
        let mut need = PART_SIZE;
        while need > 0 {
            let mut f = self.frames.remove(0);
            if f.len() > need {
                let rest = f.split_off(need);
                self.frames.insert(0, rest);
            }
            need -= f.len();
            out.push(f);
        }
        self.len -= PART_SIZE;
        Some(out.into_iter().collect())
    }

    fn take_rest(&mut self) -> PutPayload {
        self.len = 0;
        std::mem::take(&mut self.frames).into_iter().collect()
    }
}

/// An object written but not yet visible: the bytes of a small one, or a multipart upload
/// whose parts are all uploaded.
enum Staged {
    Small(PutPayload, Attributes),
    Multi(Multipart),
}

impl ObjectStoreStorage {
    /// Uploads `stream` for `key`: kept in memory when it fits in one part, else as the parts
    /// of a multipart upload. Nothing is visible at `key` until [`Self::commit_staged`].
    async fn stage(
        &self,
        key: &Path,
        marker: Path,
        attributes: Attributes,
        mut stream: ByteStream,
    ) -> StorageResult<Staged> {
        let mut buf = PartBuffer::default();
        let mut mp: Option<Multipart> = None;
        let result: StorageResult<()> = async {
            while let Some(frame) = stream.try_next().await? {
                buf.push(frame);
                while let Some(part) = buf.take_part() {
                    if mp.is_none() {
                        mp = Some(
                            self.start_multipart(key, marker.clone(), attributes.clone())
                                .await?,
                        );
                    }
                    if let Some(m) = mp.as_mut() {
                        self.put_part(m, part).await?;
                    }
                }
            }
            Ok(())
        }
        .await;
        let rest = buf.take_rest();
        match (result, mp) {
            (Err(e), Some(m)) => {
                self.abort_multipart(m).await;
                Err(e)
            }
            (Err(e), None) => Err(e),
            (Ok(()), None) => Ok(Staged::Small(rest, attributes)),
            (Ok(()), Some(mut m)) => {
                if rest.content_length() > 0
                    && let Err(e) = self.put_part(&mut m, rest).await
                {
                    self.abort_multipart(m).await;
                    return Err(e);
                }
                Ok(Staged::Multi(m))
            }
        }
    }

    /// Makes a staged object visible at `key`, atomically.
    async fn commit_staged(&self, key: &Path, staged: Staged) -> StorageResult<()> {
        match staged {
            Staged::Small(payload, attributes) => {
                let opts = PutOptions {
                    attributes,
                    ..Default::default()
                };
                self.store
                    .put_opts(key, payload, opts)
                    .await
                    .map(|_| ())
                    .map_err(os_err)
            }
            Staged::Multi(m) => self.complete(m).await,
        }
    }

    async fn discard_staged(&self, staged: Staged) {
        if let Staged::Multi(m) = staged {
            self.abort_multipart(m).await;
        }
    }
}

#[async_trait]
impl Storage for ObjectStoreStorage {
    async fn head(&self, path: &FilePath) -> StorageResult<Option<ObjectMeta>> {
        let key = self.file_key(path)?;
        Ok(self.head_key(&key).await?.map(|(m, _)| m))
    }

    async fn read(
        &self,
        path: &FilePath,
        range: Option<Range<u64>>,
    ) -> StorageResult<Option<(ObjectMeta, ByteStream)>> {
        let key = self.file_key(path)?;
        if let Some(r) = &range
            && r.start >= r.end
        {
            // An empty range cannot be asked of S3 (`bytes=5-4`): a HEAD, and no bytes.
            let Some((meta, _)) = self.head_key(&key).await? else {
                return Ok(None);
            };
            if r.start > meta.size {
                return Err(StorageError::Other("range outside the file".into()));
            }
            return Ok(Some((meta, futures_util::stream::empty().boxed())));
        }
        let opts = GetOptions {
            range: range.map(GetRange::Bounded),
            ..Default::default()
        };
        match self.store.get_opts(&key, opts).await {
            Ok(r) => {
                let meta = self.meta_of(&r.meta, &r.attributes).await?;
                Ok(Some((meta, r.into_stream().map_err(os_err).boxed())))
            }
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(os_err(e)),
        }
    }

    async fn delete(&self, path: &FilePath) -> StorageResult<bool> {
        let key = self.file_key(path)?;
        let Some((_, attrs)) = self.head_key(&key).await? else {
            return Ok(false);
        };
        self.delete_quiet(&key).await?;
        if let Some(r) = attrs.get(&Attribute::Metadata(META_ATTRS_REF.into())) {
            let _ = self.delete_quiet(&self.key(&[RESERVED, "attrs", r])).await;
        }
        Ok(true)
    }

    async fn open_upload(&self, path: &FilePath, spec: UploadSpec) -> StorageResult<UploadInfo> {
        self.file_key(path)?;
        let UploadSpec::Resumable { total } = spec else {
            let now = SystemTime::now();
            return Ok(UploadInfo {
                id: UploadId(crate::file::random_id("s")),
                path: Some(path.clone()),
                total: None,
                created: now,
                updated: now,
                created_now: true,
            });
        };
        if let Some(info) = self.find_upload(path).await? {
            return Ok(info);
        }
        let pointer = self.pointer_key(path);
        let lock = self.lock_dir(&format!("p-{}", hex_sha256(path.as_str())));
        let pointer = &pointer;
        with_lock(&self.store, &lock, |_| async move {
            if let Some(info) = self.find_upload(path).await? {
                return Ok(info);
            }
            let id = UploadId(crate::file::random_id("r"));
            let info = Info {
                path: path.as_str().to_owned(),
                total,
                created_ms: millis(SystemTime::now()),
            };
            let body = serde_json::to_vec(&info).map_err(|e| StorageError::Other(e.to_string()))?;
            self.put_small(&self.upload_dir(&id)?.join("info"), body.into())
                .await?;
            self.put_small(pointer, Bytes::from(id.0.clone())).await?;
            Ok(self.upload_info(&id, &info, true))
        })
        .await
    }

    async fn find_upload(&self, path: &FilePath) -> StorageResult<Option<UploadInfo>> {
        let Some((bytes, _)) = self.get_small(&self.pointer_key(path)).await? else {
            return Ok(None);
        };
        let id = UploadId(String::from_utf8_lossy(&bytes).into_owned());
        match self.info(&id).await {
            Ok(Some((info, _))) if info.path == path.as_str() => {
                Ok(Some(self.upload_info(&id, &info, false)))
            }
            Ok(_) | Err(StorageError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn writer(&self, upload: &UploadId, offset: u64) -> StorageResult<Box<dyn UploadWriter>> {
        if !self.is_open(upload).await? {
            return Err(StorageError::UploadClosed);
        }
        let wid = crate::file::random_id("");
        let dir = self.upload_dir(upload)?;
        Ok(Box::new(ChunkWriter {
            storage: self.clone(),
            id: upload.clone(),
            key: dir
                .clone()
                .join("chunks")
                .join(format!("{offset:020}-{wid}")),
            marker: dir.join("mp").join(wid),
            buf: PartBuffer::default(),
            mp: None,
            written: 0,
        }))
    }

    async fn received(&self, upload: &UploadId) -> StorageResult<Vec<Range<u64>>> {
        if upload.0.starts_with('r') && self.info(upload).await?.is_none() {
            return Err(StorageError::NotFound);
        }
        let chunks = self.chunks(upload).await?;
        Ok(merge_ranges(
            chunks.into_iter().map(|c| c.start..c.end).collect(),
        ))
    }

    async fn claim(&self, upload: &UploadId) -> StorageResult<Claim> {
        let claimed = self.upload_dir(upload)?.join("claimed");
        let state = serde_json::to_vec(&ClaimState { released: false })
            .map_err(|e| StorageError::Other(e.to_string()))?;
        if upload.0.starts_with('s') {
            // A single upload is known to its own request only.
            if self.exists(&claimed).await? {
                return Ok(Claim::Lost);
            }
            self.put_small(&claimed, state.into()).await?;
            return Ok(Claim::Won);
        }
        let lock = self.lock_dir(&format!("c-{}", upload.0));
        let claimed = &claimed;
        with_lock(&self.store, &lock, |store_now| async move {
            if self.info(upload).await?.is_none() {
                return Ok(Claim::Lost); // published or aborted
            }
            match self.get_small(claimed).await? {
                None => match self.put_create(claimed, state.into()).await {
                    Ok(()) => Ok(Claim::Won),
                    // The store's own guard saw a claim the lock did not: not ours.
                    Err(StorageError::PreconditionFailed) => Ok(Claim::Lost),
                    Err(e) => Err(e),
                },
                Some((bytes, modified)) => {
                    let released = serde_json::from_slice::<ClaimState>(&bytes)
                        .map(|s| s.released)
                        .unwrap_or(false);
                    let stale = (store_now - modified)
                        .to_std()
                        .is_ok_and(|age| age > CLAIM_STALE);
                    if released || stale {
                        if stale && !released {
                            tracing::warn!(upload = %upload, "claim of a dead finalizer taken over");
                        }
                        self.put_small(claimed, state.into()).await?;
                        Ok(Claim::Won)
                    } else {
                        Ok(Claim::Lost)
                    }
                }
            }
        })
        .await
    }

    async fn unclaim(&self, upload: &UploadId) -> StorageResult<()> {
        let claimed = self.upload_dir(upload)?.join("claimed");
        let state = serde_json::to_vec(&ClaimState { released: true })
            .map_err(|e| StorageError::Other(e.to_string()))?;
        self.put_small(&claimed, state.into()).await
    }

    async fn read_upload(&self, upload: &UploadId, range: Range<u64>) -> StorageResult<ByteStream> {
        let chunks = self.chunks(upload).await?;
        let pieces = cover(&chunks, range)
            .ok_or_else(|| StorageError::Other("range not received".into()))?;
        Ok(self.pieces_stream(pieces))
    }

    async fn publish(
        &self,
        upload: &UploadId,
        path: &FilePath,
        size: u64,
        options: PublishOptions,
    ) -> StorageResult<ObjectMeta> {
        let key = self.file_key(path)?;
        let dir = self.upload_dir(upload)?;
        let _heartbeat = self.claim_heartbeat(upload)?;
        let chunks = self.chunks(upload).await?;
        let pieces = cover(&chunks, 0..size)
            .ok_or_else(|| StorageError::Other("publish: the upload is incomplete".into()))?;

        let version = crate::file::random_id("v");
        let mut attributes = Attributes::new();
        attributes.insert(
            Attribute::ContentType,
            AttributeValue::from(options.content_type.clone()),
        );
        attributes.insert(
            Attribute::Metadata(META_VERSION.into()),
            AttributeValue::from(version.clone()),
        );
        let b64 = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&options.attributes);
        if b64.len() <= INLINE_ATTRS {
            attributes.insert(Attribute::Metadata(META_ATTRS.into()), b64.into());
        } else {
            let sidecar = self.key(&[RESERVED, "attrs", &version]);
            self.put_small(&sidecar, options.attributes.clone()).await?;
            attributes.insert(
                Attribute::Metadata(META_ATTRS_REF.into()),
                AttributeValue::from(version.clone()),
            );
        }

        let stream = self.pieces_stream(pieces);
        let marker = dir.clone().join("mp").join(format!("final-{version}"));
        let staged = self.stage(&key, marker, attributes, stream).await?;
        // The precondition and the completion happen inside the path's lock, so create-only
        // and if-match hold across instances.
        let lock = self.lock_dir(&format!("f-{}", hex_sha256(path.as_str())));
        let mut staged = Some(staged);
        let (slot, key, mode) = (&mut staged, &key, &options.mode);
        let result = with_lock(&self.store, &lock, |_| async move {
            let current = self.head_key(key).await?;
            Self::check_mode(mode, current.as_ref().map(|(m, _)| m))?;
            let Some(s) = slot.take() else {
                return Err(StorageError::Other("staged object gone".into()));
            };
            self.commit_staged(key, s).await?;
            if let Some((_, attrs)) = current
                && let Some(r) = attrs.get(&Attribute::Metadata(META_ATTRS_REF.into()))
            {
                let _ = self.delete_quiet(&self.key(&[RESERVED, "attrs", r])).await;
            }
            self.head_key(key)
                .await?
                .map(|(m, _)| m)
                .ok_or(StorageError::NotFound)
        })
        .await;
        if let Some(s) = staged {
            self.discard_staged(s).await;
        }
        let meta = result?;
        self.forget(upload).await?;
        Ok(meta)
    }

    async fn abort(&self, upload: &UploadId) -> StorageResult<()> {
        self.forget(upload).await
    }

    async fn list_uploads(&self) -> StorageResult<Vec<UploadInfo>> {
        let base = self.key(&[RESERVED, "uploads"]);
        let mut by_id: std::collections::BTreeMap<String, (DateTime<Utc>, DateTime<Utc>)> =
            Default::default();
        for o in list(&self.store, &base).await? {
            let Some(id) = o
                .location
                .prefix_match(&base)
                .and_then(|mut p| p.next())
                .map(|p| p.as_ref().to_owned())
            else {
                continue;
            };
            let e = by_id
                .entry(id)
                .or_insert((o.last_modified, o.last_modified));
            e.0 = e.0.min(o.last_modified);
            e.1 = e.1.max(o.last_modified);
        }
        let mut out = Vec::new();
        for (id, (first, last)) in by_id {
            let id = UploadId(id);
            let info = match self.info(&id).await {
                Ok(i) => i,
                Err(StorageError::NotFound) => continue,
                Err(e) => return Err(e),
            };
            let mut u = match info {
                Some((info, _)) => self.upload_info(&id, &info, false),
                None => UploadInfo {
                    id: id.clone(),
                    path: None,
                    total: None,
                    created: system_time(first),
                    updated: system_time(first),
                    created_now: false,
                },
            };
            u.updated = u.updated.max(system_time(last));
            out.push(u);
        }
        Ok(out)
    }

    async fn put_record(
        &self,
        key: &RecordKey,
        value: Bytes,
        mode: RecordMode,
    ) -> StorageResult<()> {
        let object = self.record_key(key);
        match mode {
            RecordMode::Overwrite => self.put_small(&object, value).await,
            RecordMode::Create => {
                let lock = self.lock_dir(&format!("r-{}", hex_sha256(key.as_str())));
                let object = &object;
                with_lock(&self.store, &lock, |_| async move {
                    if self.exists(object).await? {
                        return Err(StorageError::PreconditionFailed);
                    }
                    self.put_create(object, value).await
                })
                .await
            }
        }
    }

    async fn get_record(&self, key: &RecordKey) -> StorageResult<Option<Bytes>> {
        Ok(self.get_small(&self.record_key(key)).await?.map(|(b, _)| b))
    }

    async fn delete_record(&self, key: &RecordKey) -> StorageResult<bool> {
        let object = self.record_key(key);
        if !self.exists(&object).await? {
            return Ok(false);
        }
        self.delete_quiet(&object).await?;
        Ok(true)
    }

    async fn list_records(&self, prefix: &RecordKey) -> StorageResult<Vec<RecordKey>> {
        let base = self.key(&[RESERVED, "records"]);
        let mut out = Vec::new();
        for o in list(&self.store, &self.record_key(prefix)).await? {
            let Some(rel) = o.location.prefix_match(&base) else {
                continue;
            };
            let rel: Vec<String> = rel.map(|p| p.as_ref().to_owned()).collect();
            if let Ok(k) = RecordKey::new(rel.join("/")) {
                out.push(k);
            }
        }
        Ok(out)
    }
}

/// Streams one chunk into its own object: one PUT when it fits in a part, else a multipart
/// upload (tracked under the upload's `mp/`) completed at `commit`. Nothing is visible at the
/// chunk's key (so nothing counts) before `commit`.
struct ChunkWriter {
    storage: ObjectStoreStorage,
    id: UploadId,
    key: Path,
    marker: Path,
    buf: PartBuffer,
    mp: Option<Multipart>,
    written: u64,
}

impl ChunkWriter {
    async fn send_full_parts(&mut self) -> StorageResult<()> {
        while let Some(part) = self.buf.take_part() {
            if self.mp.is_none() {
                let mp = self
                    .storage
                    .start_multipart(&self.key, self.marker.clone(), Attributes::new())
                    .await?;
                self.mp = Some(mp);
            }
            if let Some(mp) = self.mp.as_mut() {
                self.storage.put_part(mp, part).await?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl UploadWriter for ChunkWriter {
    async fn write(&mut self, data: Bytes) -> StorageResult<()> {
        self.written += data.len() as u64;
        self.buf.push(data);
        let sent = self.send_full_parts().await;
        closed_or(&self.storage, &self.id, sent).await
    }

    async fn commit(mut self: Box<Self>) -> StorageResult<Vec<Range<u64>>> {
        let stored = self.store_rest().await;
        closed_or(&self.storage, &self.id, stored).await?;
        if !self.storage.is_open(&self.id).await? {
            // Not needed by anyone once the upload is gone; a claimed upload's finalizer may
            // be reading it, so it stays until the upload is forgotten.
            if self.id.0.starts_with('r') && self.storage.info(&self.id).await?.is_none() {
                let _ = self.storage.delete_quiet(&self.key).await;
            }
            return Err(StorageError::UploadClosed);
        }
        let chunks = self.storage.chunks(&self.id).await?;
        Ok(merge_ranges(
            chunks.into_iter().map(|c| c.start..c.end).collect(),
        ))
    }
}

impl ChunkWriter {
    /// Sends what is left: one PUT for a chunk of at most one part, else the last part and
    /// the completion of the multipart upload.
    async fn store_rest(&mut self) -> StorageResult<()> {
        if self.written > 0 {
            let rest = self.buf.take_rest();
            match self.mp.take() {
                None => {
                    self.storage
                        .store
                        .put(&self.key, rest)
                        .await
                        .map_err(os_err)?;
                }
                Some(mut mp) => {
                    if rest.content_length() > 0 {
                        self.storage.put_part(&mut mp, rest).await?;
                    }
                    self.storage.complete(mp).await?;
                }
            }
        }
        Ok(())
    }
}

/// A failure of a writer whose upload was finalized or discarded meanwhile (its multipart
/// upload aborted with it) is [`StorageError::UploadClosed`].
async fn closed_or<T>(
    storage: &ObjectStoreStorage,
    id: &UploadId,
    result: StorageResult<T>,
) -> StorageResult<T> {
    match result {
        Err(e) if !matches!(e, StorageError::UploadClosed) => {
            if matches!(storage.is_open(id).await, Ok(false)) {
                Err(StorageError::UploadClosed)
            } else {
                Err(e)
            }
        }
        other => other,
    }
}

impl Drop for ChunkWriter {
    fn drop(&mut self) {
        // A writer dropped before its commit: abort its multipart upload now (the sweep
        // would otherwise, with its upload).
        if let Some(mp) = self.mp.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let storage = self.storage.clone();
            rt.spawn(async move { storage.abort_multipart(mp).await });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cover_picks_the_longest_reach() {
        let c = |s, e, n: &str| Chunk {
            start: s,
            end: e,
            location: Path::from(n),
        };
        let chunks = vec![c(0, 10, "a"), c(5, 30, "b"), c(10, 20, "c"), c(30, 40, "d")];
        let p = cover(&chunks, 0..40).unwrap();
        let names: Vec<_> = p.iter().map(|(l, r)| (l.to_string(), r.clone())).collect();
        assert_eq!(
            names,
            vec![
                ("a".into(), 0..10),
                ("b".into(), 5..25),
                ("d".into(), 0..10)
            ]
        );
        assert!(cover(&chunks, 0..41).is_none());
        assert!(cover(&[c(1, 5, "x")], 0..5).is_none());
        assert_eq!(cover(&[], 3..3).unwrap().len(), 0);
        let p = cover(&chunks, 12..14).unwrap();
        assert_eq!(p[0].1, 7..9);
    }

    #[test]
    fn parts_are_exact() {
        let mut b = PartBuffer::default();
        b.push(Bytes::from(vec![1u8; PART_SIZE - 3]));
        assert!(b.take_part().is_none());
        b.push(Bytes::from(vec![2u8; 10]));
        let p = b.take_part().unwrap();
        assert_eq!(p.content_length(), PART_SIZE);
        assert_eq!(b.len, 7);
        assert_eq!(b.take_rest().content_length(), 7);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn conformance_in_memory() {
        let storage = ObjectStoreStorage::from_url("memory://").unwrap();
        crate::storage::conformance::run(Arc::new(storage)).await;
    }
}
