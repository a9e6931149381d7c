//! [`FsStorage`]: uploads and files in a directory.
//!
//! # Layout
//!
//! ```text
//! <root>/<path>                        published files, at their own paths
//! <root>/.tower-uploads/               bookkeeping (the one reserved top-level name)
//!     staging/s.<rand>                 the bytes of a simple PUT in progress; a small one
//!                                      (`inline_io`) is written on the request's thread into
//!                                      an unnamed file (`O_TMPFILE` in staging/), kept open,
//!                                      and named at publication by one `linkat`
//!     uploads/<key>/                   the resumable upload in progress for a path
//!         info.json                    {path, total, gen, created}
//!         data.<gen>                   its bytes: every chunk is a positional write here
//!         ranges/<start>-<end>         one empty marker per committed range
//!         claimed                      created (create-new) by the request that finalizes
//!     meta/<kk>/<key>.<etag>.json      content type + attributes of a published version, when
//!                                      the filesystem has no user xattrs (else they are in the
//!                                      file's `user.tower-uploads.record` attribute)
//!                                      (<kk>: the key's first two hex digits, 256 shards)
//!     locks/<00..3f>                   striped lock files serialising publications (kept open)
//!     records/<seg>/…/<last>@          one file per record (`put_record`): written under tmp/,
//!                                      then `link`ed (create-only) or `rename`d (overwrite)
//!     tmp/                             directories under construction, and trash
//! ```
//!
//! `<key>` is a hash of the path. Everything is decided by the filesystem's own atomic
//! operations, so several processes can share one root:
//!
//! - **create or join** a resumable upload: the new upload's directory is built under `tmp/`
//!   and renamed to `uploads/<key>`; renaming onto an existing (non-empty) upload directory
//!   fails, and the loser joins the winner's upload.
//! - **writes** are `pwrite`s into `data.<gen>`, batched (2 MiB to 256 KiB per hop to the
//!   blocking pool, by the number of writers: `Buffers`; each batch written in `pwrite`s of at
//!   most 256 KiB: `write_pieces`), each batch under a *shared* `flock` of the data file after
//!   checking that the upload is neither claimed nor gone (never waiting for the lock:
//!   `Inner::lock_open`); one writer of an upload at a time
//!   per process (`Inner::write_lock`: waiting, it sleeps instead of spinning on the inode).
//! - **claim**: an *exclusive* `flock` of the data file (it waits for the batches in flight),
//!   then `claimed` is created with `O_EXCL`. The claimer keeps the lock until it publishes
//!   or aborts; if its process dies the kernel drops the lock, and the next claimer that
//!   finds `claimed` while holding the lock takes over.
//! - **publish**: under a striped lock (one of 64 lock files, chosen by the path), the
//!   precondition is checked and the data file is `rename`d to the file's path: no byte is
//!   copied, and readers see the old file or the new one. An unnamed small file going to a
//!   new path is `linkat`ed there instead, without the lock (create-only by nature, so
//!   `If-None-Match: *` needs no lookup either, and it cannot slip between a locked
//!   publisher's check and its rename: a named create-only publication renames with
//!   `RENAME_NOREPLACE`); one replacing a version is linked into staging/ and renamed.
//!
//! # Durability
//!
//! With [`Durability::Process`] (the default) nothing is `fsync`ed: a range is counted once
//! its bytes are in the page cache, which survives the server process being killed (the
//! kernel still holds them) but not a power cut. [`Durability::Power`] `fsync`s a chunk's
//! bytes before its range marker is created, the marker's directory after, and a file and its
//! directory before a publication is answered.

mod buffers;
mod meta;
mod publish;
mod records;
mod sys;
#[cfg(test)]
mod tests;
mod uploads;
mod writer;

use async_trait::async_trait;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

pub(crate) use self::buffers::BUFFER_BYTES_METRIC;
pub use self::buffers::DEFAULT_BUFFER_BUDGET;
use self::buffers::{Buffers, Frame};
use self::meta::{any_meta_file, etag_of};
use self::sys::unnamed_staging_works;
use self::writer::FsWriter;
use super::{
    ByteStream, Capabilities, ChunkWriter, Claim, Coordinate, Durable, ObjectMeta, PublishOptions,
    Record, RecordKey, RecordMode, Storage, StorageError, StorageResult, UploadId, UploadInfo,
    UploadSpec, UploadWriter,
};
use crate::path::FilePath;

/// The reserved top-level directory of the bookkeeping.
pub const RESERVED_DIR: &str = ".tower-uploads";
const LOCK_STRIPES: u64 = 64;
/// Default of [`FsOptions::inline_io`].
pub const DEFAULT_INLINE_IO: u64 = 64 * 1024;

/// When the bytes of a chunk or a file are durable (see the module docs of `storage/fs/mod.rs`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// No `fsync`: survives the process being killed, not a power cut. The default.
    #[default]
    Process,
    /// `fsync` before a range counts and before a publication is answered.
    Power,
}

/// A [`Storage`] in a directory (see the [module docs](crate::storage) for the trait and
/// the source of `storage/fs/mod.rs` for the on-disk layout). Cloning shares the same directory
/// and claims.
#[derive(Clone)]
pub struct FsStorage {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    durability: Durability,
    /// Whether records go into extended attributes (turned off at the first EOPNOTSUPP).
    xattrs: AtomicBool,
    /// Whether record files may exist under `meta/` (found there at start or by the sweeper,
    /// or written by this process). While not, a plain overwrite has no replaced version's
    /// record file to forget, and skips looking up the replaced version.
    meta_files: AtomicBool,
    /// The staging files of small simple uploads written on the calling thread by
    /// `FsWriter::commit`, kept open for `publish` (`fstat`/`fsetxattr` on the descriptor
    /// instead of two path lookups) and dropped by `abort`.
    staged: Mutex<HashMap<UploadId, Staged>>,
    /// Whether those staging files are unnamed (`O_TMPFILE`), named at publication by a
    /// `linkat(AT_EMPTY_PATH)` (Linux ≥ 3.11 for `O_TMPFILE`; the link without privileges
    /// since 6.10): probed once by [`FsStorage::new`].
    unnamed_staging: bool,
    /// `<root>/.tower-uploads/staging`, made once (every simple upload's path starts there).
    staging: PathBuf,
    /// Simple uploads of at most this many bytes are written and published on the calling
    /// thread (see [`FsOptions::inline_io`]).
    inline_io: u64,
    /// The publication lock stripes, opened once: a mutex serialises this process's threads
    /// (a `flock` is shared by everyone using the same open file), the `flock` other processes.
    stripes: Vec<(Mutex<()>, File)>,
    /// Exclusive locks held by this process's winning claims, until publish or abort.
    claims: Mutex<HashMap<UploadId, Arc<File>>>,
    /// Batch buffers, reused by every writer.
    buffers: Arc<Buffers>,
    /// The lock each resumable upload's writers in this process take around their `pwrite`s
    /// (see [`Inner::write_lock`]).
    write_locks: Mutex<HashMap<UploadId, Weak<Mutex<()>>>>,
}

impl std::fmt::Debug for FsStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsStorage")
            .field("root", &self.inner.root)
            .field("durability", &self.inner.durability)
            .finish()
    }
}

/// A small simple upload's staging file, written by `FsWriter::commit`, kept open.
struct Staged {
    file: File,
    /// `false`: an `O_TMPFILE` without a name until [`link_unnamed`] gives it one.
    named: bool,
    /// When it was written (an unnamed one is listed for the sweeper from here).
    written: SystemTime,
}

/// Runs blocking filesystem work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> StorageResult<T> + Send + 'static,
) -> StorageResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StorageError::other(format!("blocking task failed: {e}")))?
}

/// Runs short metadata work (a few system calls on directory entries and small files: look up
/// an upload, list its ranges, open its data file, mark a range) on the calling thread when
/// `inline` ([`Inner::inline_meta`]), else on the blocking pool. Never used for anything that
/// waits for a lock held by others, reads or writes bulk data, or `fsync`s.
async fn quick<T: Send + 'static>(
    inline: bool,
    f: impl FnOnce() -> StorageResult<T> + Send + 'static,
) -> StorageResult<T> {
    if inline { f() } else { blocking(f).await }
}

fn io(e: io::Error) -> StorageError {
    StorageError::from_io(e)
}

/// Like [`io`], but a missing file means the upload is gone.
fn closed_if_missing(e: io::Error) -> StorageError {
    if e.kind() == ErrorKind::NotFound {
        StorageError::UploadClosed
    } else {
        io(e)
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn rand_token() -> String {
    crate::id::random_id("")
}

/// Which of our kinds of upload an id names.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Parsed<'a> {
    Single(&'a str),
    Resumable { key: &'a str, gen_id: &'a str },
    Tmp(&'a str),
}

fn parse_id(id: &UploadId) -> StorageResult<Parsed<'_>> {
    // A few times per request: bytes, not a `split` iterator.
    let ok = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric());
    let bad = || StorageError::other("not an upload id of this storage");
    let s = id.0.as_str();
    let (tag, rest) = match s.as_bytes() {
        [tag, b'.', ..] => (*tag, &s[2..]),
        _ => return Err(bad()),
    };
    match tag {
        b's' | b'k' if ok(rest) => Ok(Parsed::Single(rest)),
        b't' if ok(rest) => Ok(Parsed::Tmp(rest)),
        b'r' => match rest.split_once('.') {
            Some((key, gen_id)) if ok(key) && ok(gen_id) => Ok(Parsed::Resumable { key, gen_id }),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

fn path_key(path: &FilePath) -> String {
    let digest = Sha256::digest(path.as_str().as_bytes());
    hex_string(&digest[..16])
}

/// Lowercase hex (`hex::encode` goes a `char` at a time).
fn hex_string(bytes: &[u8]) -> String {
    let mut out = vec![0u8; 2 * bytes.len()];
    hex::encode_to_slice(bytes, &mut out).expect("two hex digits per byte");
    String::from_utf8(out).expect("hex is ASCII")
}

/// Refuses the paths under the bookkeeping directory.
fn check_reserved(path: &FilePath) -> StorageResult<()> {
    if path.segments().next() == Some(RESERVED_DIR) {
        return Err(StorageError::ReservedPath(
            "the top-level name .tower-uploads is reserved",
        ));
    }
    Ok(())
}

/// The options of an [`FsStorage`], set before it opens (every clone of a storage shares
/// them): [`FsStorage::options`]`().durability(…).inline_io(…).open(root)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub struct FsOptions {
    durability: Durability,
    inline_io: u64,
    buffer_budget: usize,
}

impl Default for FsOptions {
    fn default() -> Self {
        FsOptions {
            durability: Durability::default(),
            inline_io: DEFAULT_INLINE_IO,
            buffer_budget: DEFAULT_BUFFER_BUDGET,
        }
    }
}

impl FsOptions {
    /// The durability policy (default [`Durability::Process`]).
    pub fn durability(mut self, durability: Durability) -> FsOptions {
        self.durability = durability;
        self
    }

    /// Simple uploads of at most `limit` bytes (default [`DEFAULT_INLINE_IO`], 64 KiB) are
    /// written and published with plain system calls on the calling thread instead of on
    /// tokio's blocking pool; `0` turns this off. Unless `0`, the short metadata work of a
    /// chunk (finding its upload, listing the received ranges, opening the data file, marking
    /// the new range) runs on the calling thread too; chunk bytes, claims (which wait for
    /// other writers), reads of file contents, sweeping and every `fsync` stay on the pool.
    ///
    /// A hop to the blocking pool and back costs two thread switches each way, which is more
    /// than creating, writing and renaming a small file in the page cache: with the hop, a
    /// 4 KiB `PUT` cost four context switches and ~3× the CPU of the whole request
    /// (PERFORMANCE.md). Without it, an async worker thread is held for the duration of those
    /// few system calls, as nginx and the benchmark's limit-server do. Turn it off when the
    /// directory is on a filesystem whose metadata operations can stall for long (NFS, FUSE,
    /// a network block device). [`Durability::Power`] never writes inline: an `fsync` is slow.
    pub fn inline_io(mut self, limit: u64) -> FsOptions {
        self.inline_io = limit;
        self
    }

    /// The most bytes of buffers the storage's writers and readers hold at once, together
    /// (default [`DEFAULT_BUFFER_BUDGET`], 8 MiB; at least 256 KiB). Writers gather a body
    /// into batches of 2 MiB when one writes alone, down to 256 KiB when many do; readers
    /// read a file in frames of 256 KiB. When the budget is spent, a writer writes each frame
    /// of its body from where it arrived (the HTTP server's read buffer), one at a time, so
    /// that its body is read more slowly, and a reader reads in frames of 64 KiB of its own,
    /// instead of allocating buffers. The buffers are reused and never freed, so memory does
    /// not follow the allocator's history. What else a request holds is the HTTP server's
    /// (its read buffer, at most two frames of it) and a few KiB of state.
    pub fn buffer_budget(mut self, bytes: usize) -> FsOptions {
        self.buffer_budget = bytes;
        self
    }

    /// Opens (and creates, if missing) the storage in `root` with these options.
    ///
    /// # Errors
    /// When the directory or its bookkeeping cannot be created or opened.
    pub fn open(self, root: impl Into<PathBuf>) -> StorageResult<FsStorage> {
        FsStorage::open_with(root.into(), self)
    }
}

impl FsStorage {
    /// A storage in `root`, created if missing, with the default [`FsOptions`].
    pub fn new(root: impl Into<PathBuf>) -> StorageResult<FsStorage> {
        FsOptions::default().open(root)
    }

    /// Options to set before opening a storage: `FsStorage::options().durability(…).open(root)`.
    pub fn options() -> FsOptions {
        FsOptions::default()
    }

    fn open_with(root: PathBuf, options: FsOptions) -> StorageResult<FsStorage> {
        let FsOptions {
            durability,
            inline_io,
            buffer_budget,
        } = options;
        let sys = root.join(RESERVED_DIR);
        for sub in ["staging", "uploads", "locks", "tmp", "records"] {
            fs::create_dir_all(sys.join(sub)).map_err(io)?;
        }
        for shard in 0..=255u8 {
            fs::create_dir_all(sys.join("meta").join(format!("{shard:02x}"))).map_err(io)?;
        }
        let meta_files = any_meta_file(&sys);
        let unnamed_staging = unnamed_staging_works(&sys.join("staging"));
        let stripes = (0..LOCK_STRIPES)
            .map(|n| {
                let f = OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(sys.join("locks").join(format!("{n:02x}")))?;
                Ok((Mutex::new(()), f))
            })
            .collect::<io::Result<Vec<_>>>()
            .map_err(io)?;
        Ok(FsStorage {
            inner: Arc::new(Inner {
                root,
                durability,
                xattrs: AtomicBool::new(true),
                meta_files: AtomicBool::new(meta_files),
                staged: Mutex::new(HashMap::new()),
                unnamed_staging,
                inline_io,
                staging: sys.join("staging"),
                stripes,
                claims: Mutex::new(HashMap::new()),
                buffers: Arc::new(Buffers::new(buffer_budget)),
                write_locks: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }
}

impl Inner {
    /// Whether short metadata work runs on the calling thread ([`FsOptions::inline_io`] not
    /// `0`, and no `fsync` to wait for).
    fn inline_meta(&self) -> bool {
        self.durability == Durability::Process && self.inline_io > 0
    }

    /// Whether work on `size` bytes of a simple upload runs on the calling thread.
    fn inline(&self, size: u64) -> bool {
        self.inline_meta() && size <= self.inline_io
    }

    fn sys(&self) -> PathBuf {
        self.root.join(RESERVED_DIR)
    }

    fn file_path(&self, path: &FilePath) -> StorageResult<PathBuf> {
        check_reserved(path)?;
        // A `FilePath` has no empty, `.` or `..` segment and no leading `/`: it joins as is.
        let mut p = PathBuf::with_capacity(self.root.as_os_str().len() + 1 + path.as_str().len());
        p.push(&self.root);
        p.push(path.as_str());
        Ok(p)
    }
}

impl FsStorage {
    /// Deletes the file at `path`; returns whether there was one.
    pub async fn delete(&self, path: &FilePath) -> StorageResult<bool> {
        let inner = self.inner.clone();
        let path = path.clone();
        blocking(move || {
            let target = inner.file_path(&path)?;
            let key = path_key(&path);
            let _stripe = inner.lock_stripe(&key).map_err(io)?;
            let etag = match fs::metadata(&target) {
                Ok(md) if md.is_file() => etag_of(&md),
                Ok(_) => return Ok(false),
                Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                    return Ok(false);
                }
                Err(e) => return Err(io(e)),
            };
            fs::remove_file(&target).map_err(io)?;
            let _ = fs::remove_file(inner.meta_file(&key, &etag));
            Ok(true)
        })
        .await
    }
}

#[async_trait]
impl Storage for FsStorage {
    /// [`stable_meta`](Capabilities::stable_meta): the etag is a hash of the data file's
    /// device, inode, size and modification time, and `modified` its modification time,
    /// both read from the file that `publish` places (a rename or link changes neither).
    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE.with_stable_meta(true)
    }

    async fn head(&self, path: &FilePath) -> StorageResult<Option<ObjectMeta>> {
        let inner = self.inner.clone();
        let path = path.clone();
        quick(self.inner.inline_meta(), move || {
            let target = inner.file_path(&path)?;
            let file = match File::open(&target) {
                Ok(f) => f,
                Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                    return Ok(None);
                }
                Err(e) => return Err(io(e)),
            };
            let md = file.metadata().map_err(io)?;
            Ok(md.is_file().then(|| inner.object_meta(&path, &file, &md)))
        })
        .await
    }

    async fn read(
        &self,
        path: &FilePath,
        range: Option<Range<u64>>,
    ) -> StorageResult<Option<(ObjectMeta, ByteStream)>> {
        let inner = self.inner.clone();
        let path = path.clone();
        let opened = blocking(move || {
            let target = inner.file_path(&path)?;
            let file = match File::open(&target) {
                Ok(f) => f,
                Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                    return Ok(None);
                }
                Err(e) => return Err(io(e)),
            };
            let md = file.metadata().map_err(io)?;
            if !md.is_file() {
                return Ok(None);
            }
            Ok(Some((inner.object_meta(&path, &file, &md), file)))
        })
        .await?;
        let Some((meta, file)) = opened else {
            return Ok(None);
        };
        let range = meta.resolve_range(range)?;
        Ok(Some((
            meta,
            read_stream(Arc::new(file), range, self.inner.buffers.clone()),
        )))
    }

    async fn read_upload(&self, upload: &UploadId, range: Range<u64>) -> StorageResult<ByteStream> {
        let inner = self.inner.clone();
        let id = upload.clone();
        let staged = inner
            .staged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .map(|staged| staged.file.try_clone());
        let file = match staged {
            // Written inline and kept open (perhaps without a name): read it there.
            Some(file) => file.map_err(io)?,
            None => {
                blocking(move || File::open(inner.data_path(&id)?).map_err(closed_if_missing))
                    .await?
            }
        };
        Ok(read_stream(
            Arc::new(file),
            range,
            self.inner.buffers.clone(),
        ))
    }

    async fn put_record(
        &self,
        key: &RecordKey,
        value: Bytes,
        mode: RecordMode,
    ) -> StorageResult<String> {
        let inner = self.inner.clone();
        let key = key.clone();
        blocking(move || inner.put_record(&key, &value, mode)).await
    }

    async fn get_record(&self, key: &RecordKey) -> StorageResult<Option<Record>> {
        let inner = self.inner.clone();
        let key = key.clone();
        blocking(move || inner.get_record(&key)).await
    }

    async fn delete_record(&self, key: &RecordKey) -> StorageResult<bool> {
        let inner = self.inner.clone();
        let key = key.clone();
        blocking(move || inner.delete_record(&key)).await
    }

    async fn list_records(&self, prefix: &RecordKey) -> StorageResult<Vec<RecordKey>> {
        let inner = self.inner.clone();
        let prefix = prefix.clone();
        blocking(move || inner.list_records(&prefix)).await
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
impl Coordinate for FsStorage {
    async fn open_upload(&self, path: &FilePath, spec: UploadSpec) -> StorageResult<UploadInfo> {
        let inner = self.inner.clone();
        let path = path.clone();
        check_reserved(&path)?; // refuse reserved paths before writing anything
        let UploadSpec::Resumable { total } = spec else {
            // A private upload: its staging file is created by its first write batch; a
            // lasting one is given a name when it is committed.
            let now = SystemTime::now();
            let tag = if spec == UploadSpec::Lasting {
                "k."
            } else {
                "s."
            };
            return Ok(UploadInfo {
                id: UploadId(crate::id::random_id(tag)),
                path: Some(path),
                total: None,
                created: now,
                updated: now,
                created_now: true,
            });
        };
        quick(self.inner.inline_meta(), move || {
            inner.open_resumable(&path, total)
        })
        .await
    }

    async fn find_upload(&self, path: &FilePath) -> StorageResult<Option<UploadInfo>> {
        let inner = self.inner.clone();
        let key = path_key(path);
        quick(self.inner.inline_meta(), move || {
            Ok(inner
                .read_info(&key)
                .map_err(io)?
                .map(|(info, md)| inner.info_of(&key, info, &md)))
        })
        .await
    }

    async fn writer(&self, upload: &UploadId, offset: u64) -> StorageResult<Box<dyn ChunkWriter>> {
        FsWriter::open(&self.inner, upload, offset).await
    }

    async fn received(&self, upload: &UploadId) -> StorageResult<Vec<Range<u64>>> {
        let inner = self.inner.clone();
        let id = upload.clone();
        quick(self.inner.inline_meta(), move || match parse_id(&id)? {
            Parsed::Resumable { key, .. } => {
                inner.check_exists(&id)?;
                inner.ranges(key)
            }
            _ => Ok(Vec::new()),
        })
        .await
    }

    async fn claim(&self, upload: &UploadId) -> StorageResult<Claim> {
        if let Parsed::Single(_) = parse_id(upload)? {
            // One writer, its own request: no lock to take, no blocking hop.
            return Ok(Claim::Won);
        }
        let inner = self.inner.clone();
        let id = upload.clone();
        blocking(move || inner.claim(&id)).await
    }

    async fn unclaim(&self, upload: &UploadId) -> StorageResult<()> {
        // Dropping the lock is enough: `claimed` stays, so writers stay refused, and the next
        // claimer, finding it while holding the lock, takes over.
        self.inner.release_claim(upload);
        Ok(())
    }

    async fn publish(
        &self,
        upload: &UploadId,
        path: &FilePath,
        size: u64,
        options: PublishOptions,
    ) -> StorageResult<ObjectMeta> {
        if self.inner.inline(size) && matches!(parse_id(upload)?, Parsed::Single(_)) {
            // A small private upload: a few metadata system calls, cheaper than two hops.
            return self.inner.publish(upload, path, size, options);
        }
        let inner = self.inner.clone();
        let (id, path) = (upload.clone(), path.clone());
        blocking(move || inner.publish(&id, &path, size, options)).await
    }

    async fn abort(&self, upload: &UploadId) -> StorageResult<()> {
        let inner = self.inner.clone();
        let id = upload.clone();
        blocking(move || inner.abort(&id)).await
    }

    async fn list_uploads(&self) -> StorageResult<Vec<UploadInfo>> {
        let inner = self.inner.clone();
        blocking(move || inner.list_uploads()).await
    }
}

/// Streams `range` of `file` in frames of at most [`READ_FRAME`](buffers::READ_FRAME) bytes
/// lent by the storage's buffer pool ([`Frame`]; a bounded read per frame, off the async
/// threads). Short reads (the file shrank) end the stream with an error.
fn read_stream(file: Arc<File>, range: Range<u64>, pool: Arc<Buffers>) -> ByteStream {
    let stream = futures_util::stream::try_unfold(range.start, move |pos| {
        let (file, pool) = (file.clone(), pool.clone());
        let end = range.end;
        async move {
            if pos >= end {
                return Ok(None);
            }
            // Taken here, not on the blocking thread: a frame of its own then comes from
            // this thread's arena, not from one more arena of a blocking thread.
            let mut frame = Frame::new(&pool, usize::try_from(end - pos).unwrap_or(usize::MAX));
            let want = frame.as_ref().len();
            let frame = blocking(move || {
                let buf = frame.as_mut();
                let mut filled = 0;
                while filled < want {
                    match file.read_at(&mut buf[filled..], pos + filled as u64) {
                        Ok(0) => {
                            return Err(StorageError::other("the file shrank while read"));
                        }
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) => return Err(io(e)),
                    }
                }
                Ok(frame)
            })
            .await?;
            Ok(Some((frame.into_bytes(), pos + want as u64)))
        }
    });
    Box::pin(stream)
}
