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
//! Records (`put_record` create-only and compare-and-swap) are decided by the store's own
//! conditional writes when it enforces them (probed once: `probe.rs`, `records.rs`). The
//! other exactly-once decisions (creating a path's upload, claiming, create-only / if-match
//! publication), and records on a store that ignores conditional writes (Garage), are made
//! inside a bakery lock built from plain objects and listings (`lock.rs`), where conditional
//! puts are only an extra guard. ARCHITECTURE.md has the argument and the request costs.

mod lock;
mod multipart;
mod objects;
mod probe;
mod records;
#[cfg(test)]
mod test_store;
mod writer;

pub use self::probe::ConditionalWrites;

use self::multipart::PartBuffer;
use self::writer::ObjectWriter;

use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::{StreamExt, TryStreamExt};
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use object_store::{Attribute, AttributeValue, Attributes, GetOptions, GetRange, ObjectStore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use self::lock::{list, with_lock};
use super::{
    ByteStream, ChunkWriter, Claim, Coordinate, Durable, ObjectMeta, PublishOptions, PutMode,
    Record, RecordKey, RecordMode, Storage, StorageError, StorageResult, UploadId, UploadInfo,
    UploadSpec, UploadWriter, merge_ranges,
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
    /// Whether the store enforces conditional writes, once probed (`records.rs`).
    conditional: Arc<tokio::sync::OnceCell<ConditionalWrites>>,
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
        other => StorageError::backend(other),
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
            conditional: Arc::default(),
        }
    }

    /// Keeps files and bookkeeping under `prefix` (`a/b`) instead of the bucket's root.
    pub fn with_prefix(mut self, prefix: &str) -> StorageResult<Self> {
        self.root = Path::parse(prefix.trim_matches('/'))
            .map_err(|e| StorageError::other(format!("bad prefix: {e}")))?;
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
            return Err(StorageError::other(format!(
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
                .map_err(|e| StorageError::other(format!("s3 option {}: {e}", k.as_ref())))?;
            builder = builder.with_config(key, v);
        }
        let s3 = builder.build().map_err(StorageError::backend)?;
        Self::new(Arc::new(s3)).with_prefix(prefix)
    }
}

impl ObjectStoreStorage {
    /// Deletes the file at `path`; returns whether there was one.
    pub async fn delete(&self, path: &FilePath) -> StorageResult<bool> {
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
                return Err(StorageError::other("range outside the file"));
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
                Ok(Some((
                    meta,
                    bounded_frames(r.into_stream().map_err(os_err)),
                )))
            }
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(os_err(e)),
        }
    }

    async fn read_upload(&self, upload: &UploadId, range: Range<u64>) -> StorageResult<ByteStream> {
        let chunks = self.chunks(upload).await?;
        let pieces =
            cover(&chunks, range).ok_or_else(|| StorageError::other("range not received"))?;
        Ok(self.pieces_stream(pieces))
    }

    async fn put_record(
        &self,
        key: &RecordKey,
        value: Bytes,
        mode: RecordMode,
    ) -> StorageResult<String> {
        let object = self.record_key(key);
        if self.conditional_writes().await? == ConditionalWrites::Enforced {
            return self.put_conditional(&object, value, mode).await;
        }
        let etag = Record::etag_of(&value);
        if mode == RecordMode::Overwrite {
            self.put_small(&object, value).await?;
            return Ok(etag);
        }
        // Create and update decide inside the record's lock (etags are digests of the value).
        let lock = self.lock_dir(&format!("r-{}", hex_sha256(key.as_str())));
        let object = &object;
        with_lock(&self.store, &lock, |_| async move {
            let current = self.get_small(object).await?;
            match (&mode, current) {
                (RecordMode::Create, None) => self.put_create(object, value).await?,
                (RecordMode::Update(want), Some((have, _))) if Record::etag_of(&have) == *want => {
                    self.put_small(object, value).await?
                }
                _ => return Err(StorageError::PreconditionFailed),
            }
            Ok(etag)
        })
        .await
    }

    async fn get_record(&self, key: &RecordKey) -> StorageResult<Option<Record>> {
        let object = self.record_key(key);
        if self.conditional_writes().await? == ConditionalWrites::Enforced {
            return self.get_tagged(&object).await;
        }
        let found = self.get_small(&object).await?;
        Ok(found.map(|(b, _)| Record::new(b)))
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
    async fn write_upload(
        &self,
        upload: &UploadId,
        offset: u64,
    ) -> StorageResult<Box<dyn UploadWriter>> {
        Ok(Box::new(Durable(
            Coordinate::writer(self, upload, offset).await?,
        )))
    }

    async fn publish_upload(
        &self,
        upload: &UploadId,
        path: &FilePath,
        size: u64,
        options: PublishOptions,
    ) -> StorageResult<ObjectMeta> {
        Coordinate::publish(self, upload, path, size, options).await
    }

    async fn delete_upload(&self, upload: &UploadId) -> StorageResult<()> {
        Coordinate::abort(self, upload).await
    }

    fn coordinator(&self) -> Option<&dyn Coordinate> {
        Some(self)
    }
}

#[async_trait]
impl Coordinate for ObjectStoreStorage {
    async fn open_upload(&self, path: &FilePath, spec: UploadSpec) -> StorageResult<UploadInfo> {
        self.file_key(path)?;
        let UploadSpec::Resumable { total } = spec else {
            let now = SystemTime::now();
            return Ok(UploadInfo {
                id: UploadId(crate::id::random_id("s")),
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
            let id = UploadId(crate::id::random_id("r"));
            let info = Info {
                path: path.as_str().to_owned(),
                total,
                created_ms: millis(SystemTime::now()),
            };
            let body = serde_json::to_vec(&info).map_err(StorageError::backend)?;
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

    async fn writer(&self, upload: &UploadId, offset: u64) -> StorageResult<Box<dyn ChunkWriter>> {
        if !self.is_open(upload).await? {
            return Err(StorageError::UploadClosed);
        }
        let wid = crate::id::random_id("");
        let dir = self.upload_dir(upload)?;
        Ok(Box::new(ObjectWriter {
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
        let state =
            serde_json::to_vec(&ClaimState { released: false }).map_err(StorageError::backend)?;
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
        let state =
            serde_json::to_vec(&ClaimState { released: true }).map_err(StorageError::backend)?;
        self.put_small(&claimed, state.into()).await
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
            .ok_or_else(|| StorageError::other("publish: the upload is incomplete"))?;

        let version = crate::id::random_id("v");
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
                return Err(StorageError::other("staged object gone"));
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
}

/// The largest frame a read yields: a store that answers with one buffer (object_store's
/// `InMemory`, a local file) is cut into slices of this size (no copy).
const MAX_FRAME: usize = 1 << 20;

/// `frames` with none longer than [`MAX_FRAME`].
fn bounded_frames(
    frames: impl futures_util::Stream<Item = StorageResult<Bytes>> + Send + 'static,
) -> ByteStream {
    frames
        .map_ok(|frame| {
            let pieces: Vec<StorageResult<Bytes>> = (0..frame.len())
                .step_by(MAX_FRAME)
                .map(|at| Ok(frame.slice(at..(at + MAX_FRAME).min(frame.len()))))
                .collect();
            futures_util::stream::iter(pieces)
        })
        .try_flatten()
        .boxed()
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

    mod conformance_in_memory {
        // One test per check.
        crate::storage_conformance_tests!(
            crate::storage::ObjectStoreStorage::from_url("memory://").unwrap()
        );
    }
}
