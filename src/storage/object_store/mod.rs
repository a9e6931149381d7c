//! [`ObjectStoreStorage`]: uploads and files in an object store (S3 and S3-compatible
//! servers such as Garage or MinIO, GCS, Azure) through the [`object_store`] crate. Feature
//! `object-store`.
//!
//! Bytes live in the bucket; the records — and with them every exactly-once decision of
//! uploads, made by the crate's coordination on records (`storage/coord`) — are decided by
//! one of three (`records.rs`):
//!
//! - the store's own conditional writes (the default): S3, GCS, Azure, R2, MinIO, Ceph and
//!   object_store's `InMemory` enforce `If-None-Match: *` and `If-Match`. Probed once, at
//!   the first record operation ([`ObjectStoreStorage::probe_conditional_writes`]); a store
//!   that ignores them (Garage) is never trusted: every record operation fails, saying so;
//! - a [`RecordStore`] beside it ([`ObjectStoreStorage::with_records`]: PostgreSQL's
//!   [`PostgresRecords`](crate::storage::PostgresRecords), or the app's database), for
//!   several instances on any store;
//! - this process alone ([`ObjectStoreStorage::single_instance`]): one instance on any store.
//!
//! No lock of our own, no state in process memory but the single-instance mutexes. Layout
//! (under an optional prefix):
//!
//! ```text
//! <path>                                   published files (metadata: content type,
//!                                          tu-version = the etag, tu-attrs = attributes,
//!                                          or tu-meta-ref: a sidecar holds both)
//! .tower-uploads/uploads/<id>/file         the upload's multipart upload, on its part grid
//!                                          (`parts.rs`), completed at assembly
//! .tower-uploads/uploads/<id>/chunks/<start:020>-<writer>
//!                                          chunk objects (the fallback): [start, start + size)
//! .tower-uploads/uploads/<id>/mp/<writer>  a chunk object's multipart upload in progress
//! .tower-uploads/records/<key>             records (unless kept in a RecordStore), among
//!                                          them os/<id>/… (the grid, claims of parts)
//! .tower-uploads/attrs/<version>           sidecars: attributes too large for metadata, or
//!                                          the content type and attributes of a copied file
//! ```
//!
//! Publication (`publish.rs`), under the path's publication lease (a record), checks
//! `Create` / `Update(etag)` and copies the assembled file to its key inside the store, or
//! streams chunk objects into it.

mod multipart;
mod objects;
mod parts;
mod probe;
mod publish;
mod records;
#[cfg(test)]
mod test_store;
mod writer;

pub use self::probe::ConditionalWrites;

use self::parts::Source;
use self::writer::ObjectWriter;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::{StreamExt, TryStreamExt};
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;

use self::records::Deciders;
use super::{
    ByteStream, ObjectMeta, PublishOptions, PutMode, Record, RecordKey, RecordMode, RecordStore,
    Storage, StorageError, StorageResult, UploadId, UploadWriter,
};
use crate::path::FilePath;

/// Bytes a writer gathers before sending them as one part of a multipart upload (also the
/// part size of a published file). At least 5 MiB (S3's smallest part but the last); the
/// memory one writer holds.
pub const PART_SIZE: usize = 8 << 20;
/// Attributes up to this size (base64) go into object metadata; larger ones into a sidecar
/// object (S3 allows 2 KiB of user metadata).
const INLINE_ATTRS: usize = 1536;
const RESERVED: &str = ".tower-uploads";
const META_VERSION: &str = "tu-version";
const META_ATTRS: &str = "tu-attrs";
const META_ATTRS_REF: &str = "tu-attrs-ref";
/// Names the sidecar holding a file's content type and attributes (`parts.rs`).
const META_META_REF: &str = "tu-meta-ref";

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
    /// Who decides the records' conditional writes (`records.rs`).
    deciders: Deciders,
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
            deciders: Deciders::Store,
        }
    }

    /// Decides the records' create-only and compare-and-swap writes — every exactly-once
    /// step of uploads — in this process, keeping the records in the bucket with plain
    /// writes: for **one** server instance on a store that ignores conditional writes.
    /// Two instances so configured on one bucket can both win a claim.
    pub fn single_instance(mut self) -> Self {
        self.deciders = Deciders::SingleInstance(Arc::default());
        self
    }

    /// Keeps the records (upload state and received ranges, claims, sessions) in `records`
    /// — PostgreSQL's [`PostgresRecords`](crate::storage::PostgresRecords), or the app's own
    /// database — and decides them there; the bytes stay in the store. For several
    /// instances on a store that ignores conditional writes, or an app that prefers its
    /// database.
    pub fn with_records(mut self, records: Arc<dyn RecordStore>) -> Self {
        self.deciders = Deciders::External(records);
        self
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
        if let Some(r) = objects::sidecar_name(&attrs) {
            let _ = self.delete_quiet(&self.key(&[RESERVED, "attrs", &r])).await;
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

    /// Bytes of chunk objects are readable once committed; bytes sent as parts of the
    /// upload's multipart upload, once the whole upload is received (the first read
    /// assembles it: `parts.rs`).
    async fn read_upload(&self, upload: &UploadId, range: Range<u64>) -> StorageResult<ByteStream> {
        let pieces = match self.assembled(upload, None).await? {
            Source::File(file, _) => vec![(file, range)],
            Source::Chunks => cover(&self.chunks(upload).await?, range)
                .ok_or_else(|| StorageError::other("range not received"))?,
        };
        Ok(self.pieces_stream(pieces))
    }

    async fn put_record(
        &self,
        key: &RecordKey,
        value: Bytes,
        mode: RecordMode,
    ) -> StorageResult<String> {
        self.records_put(key, value, mode).await
    }

    async fn get_record(&self, key: &RecordKey) -> StorageResult<Option<Record>> {
        self.records_get(key).await
    }

    async fn delete_record(&self, key: &RecordKey) -> StorageResult<bool> {
        self.records_delete(key).await
    }

    async fn list_records(&self, prefix: &RecordKey) -> StorageResult<Vec<RecordKey>> {
        self.records_list(prefix).await
    }

    async fn write_upload(
        &self,
        upload: &UploadId,
        offset: u64,
    ) -> StorageResult<Box<dyn UploadWriter>> {
        self.write_upload_sized(upload, offset, None).await
    }

    async fn write_upload_sized(
        &self,
        upload: &UploadId,
        offset: u64,
        total: Option<u64>,
    ) -> StorageResult<Box<dyn UploadWriter>> {
        Ok(Box::new(ObjectWriter::new(
            self.clone(),
            upload,
            offset,
            total,
        )?))
    }

    async fn publish_upload(
        &self,
        upload: &UploadId,
        path: &FilePath,
        size: u64,
        options: PublishOptions,
    ) -> StorageResult<ObjectMeta> {
        self.publish_chunks(upload, path, size, options).await
    }

    async fn delete_upload(&self, upload: &UploadId) -> StorageResult<()> {
        self.forget(upload).await
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
        let mut b = super::multipart::PartBuffer::default();
        b.push(Bytes::from(vec![1u8; PART_SIZE - 3]));
        assert!(b.take_part().is_none());
        b.push(Bytes::from(vec![2u8; 10]));
        let p = b.take_part().unwrap();
        assert_eq!(p.content_length(), PART_SIZE);
        assert_eq!(b.len, 7);
        assert_eq!(b.take_rest().content_length(), 7);
    }

    mod conformance_in_memory {
        // One test per check: records decided by the store's conditional writes.
        crate::storage_conformance_tests!(
            crate::storage::ObjectStoreStorage::from_url("memory://").unwrap()
        );
    }

    mod conformance_single_instance {
        // Records decided in this process, kept in the store with plain writes.
        crate::storage_conformance_tests!(
            crate::storage::ObjectStoreStorage::from_url("memory://")
                .unwrap()
                .single_instance()
        );
    }

    /// Records in another [`RecordStore`]: here a [`MemoryStorage`](crate::storage::MemoryStorage)'s.
    struct Elsewhere(crate::storage::MemoryStorage);

    #[async_trait]
    impl RecordStore for Elsewhere {
        async fn put_record(
            &self,
            key: &RecordKey,
            value: Bytes,
            mode: RecordMode,
        ) -> StorageResult<String> {
            Storage::put_record(&self.0, key, value, mode).await
        }
        async fn get_record(&self, key: &RecordKey) -> StorageResult<Option<Record>> {
            Storage::get_record(&self.0, key).await
        }
        async fn delete_record(&self, key: &RecordKey) -> StorageResult<bool> {
            Storage::delete_record(&self.0, key).await
        }
        async fn list_records(&self, prefix: &RecordKey) -> StorageResult<Vec<RecordKey>> {
            Storage::list_records(&self.0, prefix).await
        }
    }

    fn with_records_elsewhere() -> ObjectStoreStorage {
        let records = Elsewhere(crate::storage::MemoryStorage::new());
        ObjectStoreStorage::from_url("memory://")
            .unwrap()
            .with_records(Arc::new(records))
    }

    mod conformance_records_elsewhere {
        // Records (and so claims and ranges) in another record store; bytes in the store.
        crate::storage_conformance_tests!(super::with_records_elsewhere());
    }
}
