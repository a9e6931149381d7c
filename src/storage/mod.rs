//! Where the bytes live: the [`Storage`] trait and its backends.
//!
//! The trait is shaped by what resumable uploads need (PROTOCOL.md §4), not by append-only
//! writes: several requests write chunks of one upload at their offsets at the same time, each
//! chunk's range is recorded durably *in the storage* once its bytes are written, exactly one
//! request wins the right to finalize, and publication is atomic (a reader sees the old file
//! or the new one, never a partial one). No state lives in process memory, so a restarted
//! process, or a second process on the same storage, carries on the same upload.
//!
//! A simple `PUT` is the degenerate case: a [`UploadSpec::Single`] upload that only its own
//! request knows about, written from offset 0 and published when the body ends.
//!
//! # Lifecycle of an upload
//!
//! The service drives uploads through [`StorageExt`] (implemented for every `Arc` of a
//! storage):
//!
//! ```text
//! open_upload(path, spec) ─► writer(upload, offset) ─► write(bytes)… ─► commit() → received ranges
//!                                         (any number, any order, concurrently)
//! claim(upload) ─► Won ─► read_upload (probe) ─► publish(upload, path, options)  (or abort)
//!              └► Lost (another request finalizes it)
//! ```
//!
//! A backend implements [`Storage`]: bytes (published files, staged uploads) and records.
//! The exactly-once decisions of that lifecycle are made by the crate on the records'
//! create-only and compare-and-swap writes (`coord/records.rs` has the protocol), so a
//! backend has none to make. [`FsStorage`] brings coordination of its own (`flock`s). A
//! backend whose own records cannot decide (an object store that ignores conditional writes)
//! keeps them in a [`RecordStore`] (PostgreSQL: `PostgresRecords`, feature `postgres`).
//!
//! Backends: [`FsStorage`] (a directory; the default), [`MemoryStorage`] (tests, demos) and,
//! with feature `object-store`, `ObjectStoreStorage` (S3 and S3-compatible stores).
//! A backend of your own passes the same conformance suite
//! (`tower_uploads::storage::conformance`, feature `conformance`).

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use std::ops::Range;
use std::time::SystemTime;

use crate::path::FilePath;

mod coord;
mod fs;
mod memory;
#[cfg(feature = "object-store")]
mod object_store;
#[cfg(feature = "postgres")]
mod postgres;
mod ranges;
mod record;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

/// What a [`Storage`] implementation needs, in one import: the traits and their types, and
/// the crates they are written with (`async_trait`, `Bytes`, `futures_util`'s `stream`), so
/// that a backend adds no dependency of its own to implement the contract.
///
/// ```
/// use tower_uploads::storage::prelude::*;
///
/// // A stream of one frame, as `read` and `read_upload` return.
/// let frames: ByteStream = stream::once(async { Ok(Bytes::from_static(b"hi")) }).boxed();
/// # let _ = frames;
/// ```
pub mod prelude {
    pub use super::{
        ByteStream, Capabilities, Claim, ObjectMeta, PublishOptions, PutMode, RangeSet, Record,
        RecordKey, RecordMode, Storage, StorageError, StorageResult, UploadId, UploadInfo,
        UploadSpec, UploadWriter, merge_ranges,
    };
    pub use crate::path::FilePath;
    #[doc(no_inline)]
    pub use async_trait::async_trait;
    #[doc(no_inline)]
    pub use bytes::Bytes;
    #[doc(no_inline)]
    pub use futures_util::stream::{self, StreamExt, TryStreamExt};
    #[doc(no_inline)]
    pub use std::ops::Range;
    #[doc(no_inline)]
    pub use std::time::SystemTime;
}

#[cfg(feature = "object-store")]
pub use self::object_store::{ConditionalWrites, ObjectStoreStorage, PART_SIZE};
#[cfg(feature = "postgres")]
pub use self::postgres::{DEFAULT_POOL_SIZE, PostgresRecords};
#[doc(hidden)]
pub use coord::Coordinate;
pub(crate) use coord::Durable;
#[cfg(any(test, feature = "conformance"))]
pub(crate) use coord::plant_claim;
pub use coord::{ChunkWriter, StorageExt};
pub(crate) use fs::BUFFER_BYTES_METRIC;
pub use fs::{DEFAULT_BUFFER_BUDGET, DEFAULT_INLINE_IO, Durability, FsOptions, FsStorage};
pub use memory::MemoryStorage;
pub use ranges::{RangeSet, merge_ranges};
pub use record::{InvalidRecordKey, MAX_RECORD_KEY, Record, RecordKey, RecordMode, RecordStore};

/// A stream of bytes read from a storage.
pub type ByteStream = BoxStream<'static, Result<Bytes, StorageError>>;

/// Errors of a storage backend. The service maps each to one status (see
/// [`ApiError`](crate::error::ApiError)); only `NotFound`, `PreconditionFailed`, `StorageFull`,
/// `NameTooLong` and `ReservedPath` reach the client as themselves, the rest as a 500 whose
/// message names no internal detail.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// No file (or no upload) there.
    #[error("not found")]
    NotFound,
    /// A [`PutMode::Create`] or [`PutMode::Update`] condition did not hold.
    #[error("precondition failed")]
    PreconditionFailed,
    /// The upload was finalized, aborted or swept: no more bytes can go into it.
    #[error("the upload is closed")]
    UploadClosed,
    /// No space left on the device / quota exceeded.
    #[error("storage full")]
    StorageFull,
    /// A path segment is longer than the backend allows.
    #[error("a path segment is too long for this storage")]
    NameTooLong,
    /// The path collides with the backend's own bookkeeping, or a folder of it is a file
    /// (or the file is a folder).
    #[error("the path cannot be stored: {0}")]
    ReservedPath(&'static str),
    /// Any other I/O failure.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// Any other failure of the backend, with its source: build one with
    /// [`StorageError::backend`] (from an error) or [`StorageError::other`] (from a message).
    #[error("{0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StorageError {
    /// A [`Backend`](StorageError::Backend) failure that keeps `source` (a driver's error,
    /// an `object_store::Error`, …) for logs and [`Error::source`](std::error::Error::source).
    pub fn backend(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> StorageError {
        StorageError::Backend(source.into())
    }

    /// A [`Backend`](StorageError::Backend) failure described by `message`.
    pub fn other(message: impl Into<String>) -> StorageError {
        StorageError::Backend(message.into().into())
    }

    /// Maps an I/O error, turning ENOSPC/EDQUOT into [`StorageError::StorageFull`] and
    /// ENAMETOOLONG into [`StorageError::NameTooLong`].
    pub fn from_io(e: std::io::Error) -> StorageError {
        use std::io::ErrorKind as K;
        match e.kind() {
            K::StorageFull | K::QuotaExceeded => StorageError::StorageFull,
            K::InvalidFilename => StorageError::NameTooLong,
            K::NotFound => StorageError::NotFound,
            _ => StorageError::Io(e),
        }
    }
}

/// A `Result` with a [`StorageError`].
pub type StorageResult<T> = Result<T, StorageError>;

/// What a storage knows about a published file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Its size in bytes.
    pub size: u64,
    /// An opaque version tag, different for every publication (no quotes; the HTTP layer
    /// adds them). Byte-identical for the same version: a strong validator.
    pub etag: String,
    /// When it was published.
    pub modified: SystemTime,
    /// The MIME type recorded at publication.
    pub content_type: String,
    /// Opaque bytes recorded with the file at publication (the service keeps the File
    /// object here); published atomically with the bytes.
    pub attributes: Bytes,
}

impl ObjectMeta {
    /// The bytes a [`Storage::read`] of `range` covers: all of the file when `None`.
    ///
    /// # Errors
    /// A range that is reversed or ends past the file ([`Storage::read`]'s precondition).
    pub fn resolve_range(&self, range: Option<Range<u64>>) -> StorageResult<Range<u64>> {
        let range = range.unwrap_or(0..self.size);
        if range.start > range.end || range.end > self.size {
            return Err(StorageError::other("range outside the file"));
        }
        Ok(range)
    }
}

/// How [`Storage::publish_upload`] treats a file already at the path.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum PutMode {
    /// Replace whatever is there.
    #[default]
    Overwrite,
    /// Only if nothing is there (`If-None-Match: *`); else [`StorageError::PreconditionFailed`].
    Create,
    /// Only if the current version's etag is this one (`If-Match`); else
    /// [`StorageError::PreconditionFailed`].
    Update(String),
}

/// Options of [`Storage::publish_upload`].
#[derive(Clone, Debug, Default)]
pub struct PublishOptions {
    /// Create-only, replace-only-this-version, or overwrite.
    pub mode: PutMode,
    /// The MIME type delivered with the file.
    pub content_type: String,
    /// Opaque bytes stored with the file, returned by [`Storage::head`].
    pub attributes: Bytes,
}

/// What kind of upload [`StorageExt::open_upload`] opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UploadSpec {
    /// A fresh upload known only to the caller (a simple `PUT`): never joined by anyone else,
    /// and read, published or aborted by the request that opened it. A backend may keep it
    /// private to its process until then ([`FsStorage`] stages a small one in an unnamed
    /// file).
    Single,
    /// A fresh upload like [`Single`](Self::Single) that outlives the request that writes
    /// it: once committed, it is read, published or aborted later, perhaps by another process
    /// sharing the storage (an upload session's part), and [`StorageExt::list_uploads`] lists it.
    Lasting,
    /// The shared resumable upload of a path: joined if one is in progress (whatever its
    /// total: the caller compares), else created with this total.
    Resumable {
        /// The file's total size, from `Content-Range`.
        total: u64,
    },
}

/// An opaque upload identifier chosen by the storage (`[A-Za-z0-9._-]`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UploadId(pub String);

impl std::fmt::Display for UploadId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An upload in progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadInfo {
    /// Its identifier.
    pub id: UploadId,
    /// The path it will be published at (`None` for a [`UploadSpec::Single`] upload found by
    /// [`StorageExt::list_uploads`] after a crash: the storage need not remember it).
    pub path: Option<FilePath>,
    /// The total size (resumable uploads), `None` for a single upload.
    pub total: Option<u64>,
    /// When it was created.
    pub created: SystemTime,
    /// The last time bytes or a range were recorded (what the sweeper's TTL counts from).
    pub updated: SystemTime,
    /// True when [`StorageExt::open_upload`] created it just now (false when it joined one).
    pub created_now: bool,
}

/// The outcome of [`StorageExt::claim`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// This caller finalizes the upload; every later writer gets [`StorageError::UploadClosed`].
    Won,
    /// Another caller has claimed it (it is being published, or was).
    Lost,
}

/// What a backend promises beyond the [`Storage`] contract, from
/// [`Storage::capabilities`]. Each is `false` by default; a backend says `true` only when
/// the conformance suite's checks of it pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// The `etag` and `modified` that [`Storage::publish_upload`] returns are those that
    /// [`Storage::head`] and [`Storage::read`] return for that version for as long as it is
    /// there, and an etag names one version of one path only, never reused. The service then
    /// publishes a small simple upload whose File object it can derive again (no hooks;
    /// media facts that do not depend on the request's `Content-Type` hint) with empty
    /// `attributes`, and derives the object from the version on reading (ids from the path
    /// and etag, times from `modified`, facts from the bytes) instead of storing it.
    pub stable_meta: bool,
}

impl Capabilities {
    /// No promise beyond the contract.
    pub const NONE: Capabilities = Capabilities { stable_meta: false };

    /// Sets [`stable_meta`](Self::stable_meta).
    #[must_use]
    pub const fn with_stable_meta(mut self, on: bool) -> Capabilities {
        self.stable_meta = on;
        self
    }
}

/// Writes bytes at an offset of an upload's staged bytes; obtained from
/// [`Storage::write_upload`].
///
/// Implementations batch what they are given into few large writes and keep memory bounded
/// (a few MiB per writer at most).
#[async_trait]
pub trait UploadWriter: Send {
    /// Writes `data` at the current position (the start offset plus what was written so far).
    async fn write(&mut self, data: Bytes) -> StorageResult<()>;

    /// Writes out what the writer gathered so far, so that a writer kept open but idle holds
    /// no buffer. The default does nothing.
    async fn flush(&mut self) -> StorageResult<()> {
        Ok(())
    }

    /// Makes the written bytes durable (per the backend's durability policy). The crate
    /// then records the range as received.
    async fn commit(self: Box<Self>) -> StorageResult<()>;
}

/// A place to keep uploads and the files they become. See the [module docs](crate::storage).
///
/// A backend implements nine methods: one to read published files, four for the staged
/// bytes of uploads, four for records. The service's upload operations (open or join a
/// path's upload, record received ranges, claim exactly once, publish, list for the
/// sweeper) are built once, in the crate, on the records' create-only and compare-and-swap
/// writes: see [`StorageExt`]. Every method may be called concurrently, from several
/// processes sharing the same storage. Start from [`prelude`]; `examples/custom_storage.rs`
/// in the repository is a complete backend (SQLite) to copy from, and the conformance suite
/// (feature `conformance`) checks every promise below.
///
/// # Uploads
///
/// An upload's id is the crate's (`[A-Za-z0-9]`). Its staged bytes exist once a writer
/// wrote into them; an upload without any reads and publishes as empty. The crate writes,
/// reads and publishes only uploads it knows to be in progress, publishes each once, and
/// calls [`delete_upload`](Self::delete_upload) for one that ends without publication (also
/// when it never had bytes).
///
/// # Claims whose holder died
///
/// A claim is held by the process that won it. When that process is gone without
/// publishing or aborting, a later claim takes it over once its lease is over (60 s on the
/// crate's coordination; at once on [`FsStorage`], whose `flock` the kernel releases), so
/// that a crash never strands an upload. A holder whose claim was taken over gets
/// [`StorageError::UploadClosed`] from [`StorageExt::publish`] and publishes nothing.
#[async_trait]
pub trait Storage: Send + Sync + 'static {
    // ---- published files ----

    /// Reads `range` (all of it when `None`) of the file published at `path`, or `None`
    /// when there is none. The stream yields bounded frames and reads the version described
    /// by the returned meta, even if the file is replaced meanwhile. `range` lies within the
    /// file (the caller checks against [`head`](Self::head));
    /// [`ObjectMeta::resolve_range`] does the arithmetic.
    async fn read(
        &self,
        path: &FilePath,
        range: Option<Range<u64>>,
    ) -> StorageResult<Option<(ObjectMeta, ByteStream)>>;

    /// What is published at `path`, or `None`. The default reads an empty range; override
    /// it when the backend answers without opening the file.
    async fn head(&self, path: &FilePath) -> StorageResult<Option<ObjectMeta>> {
        Ok(self.read(path, Some(0..0)).await?.map(|(meta, _)| meta))
    }

    // ---- staged bytes of uploads ----

    /// A writer at `offset` of the upload's staged bytes. Writers of one upload may write
    /// concurrently, at any offsets; bytes written twice at one offset are the same bytes.
    async fn write_upload(
        &self,
        upload: &UploadId,
        offset: u64,
    ) -> StorageResult<Box<dyn UploadWriter>>;

    /// [`write_upload`](Self::write_upload), told the upload's total size when it has one (a
    /// resumable upload): a backend may lay the bytes out by it (ObjectStoreStorage puts
    /// chunks on a part grid straight into one multipart upload). The default ignores it.
    #[doc(hidden)]
    async fn write_upload_sized(
        &self,
        upload: &UploadId,
        offset: u64,
        total: Option<u64>,
    ) -> StorageResult<Box<dyn UploadWriter>> {
        let _ = total;
        self.write_upload(upload, offset).await
    }

    /// Reads `range` of the upload's staged bytes (for probing before publication); the
    /// crate reads only bytes that were committed.
    async fn read_upload(&self, upload: &UploadId, range: Range<u64>) -> StorageResult<ByteStream>;

    /// Publishes the first `size` bytes of the upload at `path` atomically (a reader sees
    /// the old file or the new one, never a mix), honouring [`PutMode`] atomically, with the
    /// content type and attributes of `options`; then frees the staged bytes. Zero-copy
    /// where the backend allows.
    async fn publish_upload(
        &self,
        upload: &UploadId,
        path: &FilePath,
        size: u64,
        options: PublishOptions,
    ) -> StorageResult<ObjectMeta>;

    /// Frees the upload's staged bytes. Idempotent; an upload without any is `Ok`.
    async fn delete_upload(&self, upload: &UploadId) -> StorageResult<()>;

    /// What this backend promises beyond the contract (default: nothing), as a value the
    /// service reads once per decision. See [`Capabilities`].
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    /// A backend's own coordination, replacing the crate's on records (`None`, the
    /// default). For the crate's backends.
    #[doc(hidden)]
    fn coordinator(&self) -> Option<&dyn Coordinate> {
        None
    }

    // ---- records ----

    /// Stores a small document (at most a few KiB: an upload session, a media entry) under
    /// `key`, visible to every process sharing the storage, and returns its new etag (what
    /// [`get_record`](Self::get_record) returns with it). With [`RecordMode::Create`],
    /// exactly one of several concurrent creators succeeds; with [`RecordMode::Update`],
    /// exactly one of several concurrent updates from the same etag; the others get
    /// [`StorageError::PreconditionFailed`]. A reader never sees a partial value.
    async fn put_record(
        &self,
        key: &RecordKey,
        value: Bytes,
        mode: RecordMode,
    ) -> StorageResult<String>;

    /// The record under `key` and its etag, or `None`.
    async fn get_record(&self, key: &RecordKey) -> StorageResult<Option<Record>>;

    /// Deletes the record under `key`; returns whether there was one.
    async fn delete_record(&self, key: &RecordKey) -> StorageResult<bool>;

    /// The keys of every record under `prefix` (`prefix/…`, at any depth), in no particular
    /// order.
    async fn list_records(&self, prefix: &RecordKey) -> StorageResult<Vec<RecordKey>>;
}
