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

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind};
use std::ops::Range;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{
    ByteStream, Claim, ObjectMeta, PublishOptions, PutMode, RecordKey, RecordMode, Storage,
    StorageError, StorageResult, UploadId, UploadInfo, UploadSpec, UploadWriter, merge_ranges,
};
use crate::path::FilePath;

/// The extended attribute holding a published version's record.
const RECORD_XATTR: &str = "user.tower-uploads.record";

/// The reserved top-level directory of the bookkeeping.
pub const RESERVED_DIR: &str = ".tower-uploads";
const LOCK_STRIPES: u64 = 64;
/// Frame size of read streams.
const READ_FRAME: usize = 256 * 1024;
/// Default of [`FsStorage::inline_io`].
pub const DEFAULT_INLINE_IO: u64 = 64 * 1024;

/// When the bytes of a chunk or a file are durable (see the module docs of `storage/fs.rs`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// No `fsync`: survives the process being killed, not a power cut. The default.
    #[default]
    Process,
    /// `fsync` before a range counts and before a publication is answered.
    Power,
}

/// A [`Storage`] in a directory (see the [module docs](crate::storage) for the trait and
/// the source of `storage/fs.rs` for the on-disk layout). Cloning shares the same directory
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
    /// thread (see [`FsStorage::inline_io`]).
    inline_io: AtomicU64,
    /// The publication lock stripes, opened once: a mutex serialises this process's threads
    /// (a `flock` is shared by everyone using the same open file), the `flock` other processes.
    stripes: Vec<(Mutex<()>, File)>,
    /// Exclusive locks held by this process's winning claims, until publish or abort.
    claims: Mutex<HashMap<UploadId, Arc<File>>>,
    /// Batch buffers, reused by every writer.
    buffers: Buffers,
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

#[derive(serde::Serialize, serde::Deserialize)]
struct InfoFile {
    path: String,
    total: u64,
    gen_id: String,
    created: u64,
}

/// A published version's record, as first written (JSON); still read, no longer written.
#[derive(serde::Deserialize)]
struct MetaFile {
    content_type: String,
    #[serde(with = "attributes_b64")]
    attributes: Bytes,
}

/// The tag that starts a record in the current format: `tu1\n<content type>\n<attributes>`
/// (the attributes verbatim: no JSON escaping, no base64, one copy).
const META_TAG: &[u8] = b"tu1\n";

/// Encodes a published version's content type and attributes.
fn encode_meta(content_type: &str, attributes: &[u8]) -> Vec<u8> {
    // A content type never holds a line break (`Storage::publish` callers pass a MIME type);
    // one that did would be cut at it on reading, so it is dropped from there on.
    let content_type = content_type.split(['\n', '\r']).next().unwrap_or("");
    let mut out = Vec::with_capacity(META_TAG.len() + content_type.len() + 1 + attributes.len());
    out.extend_from_slice(META_TAG);
    out.extend_from_slice(content_type.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(attributes);
    out
}

/// Decodes a record written by [`encode_meta`] (or by an earlier version, as JSON).
fn decode_meta(bytes: &[u8]) -> Option<(String, Bytes)> {
    match bytes.strip_prefix(META_TAG) {
        Some(rest) => {
            let at = rest.iter().position(|&b| b == b'\n')?;
            let content_type = std::str::from_utf8(&rest[..at]).ok()?.to_owned();
            Some((content_type, Bytes::copy_from_slice(&rest[at + 1..])))
        }
        None => serde_json::from_slice::<MetaFile>(bytes)
            .ok()
            .map(|m| (m.content_type, m.attributes)),
    }
}

mod attributes_b64 {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        let s = String::deserialize(d)?;
        if let Some(text) = s.strip_prefix("t:") {
            Ok(Bytes::from(text.to_owned()))
        } else if let Some(b64) = s.strip_prefix("b:") {
            STANDARD
                .decode(b64)
                .map(Bytes::from)
                .map_err(serde::de::Error::custom)
        } else {
            Err(serde::de::Error::custom("bad attributes"))
        }
    }
}

/// Runs blocking filesystem work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> StorageResult<T> + Send + 'static,
) -> StorageResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StorageError::Other(format!("blocking task failed: {e}")))?
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
    crate::file::random_id("")
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
    let bad = || StorageError::Other("not an upload id of this storage".into());
    let s = id.0.as_str();
    let (tag, rest) = match s.as_bytes() {
        [tag, b'.', ..] => (*tag, &s[2..]),
        _ => return Err(bad()),
    };
    match tag {
        b's' if ok(rest) => Ok(Parsed::Single(rest)),
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

/// The content type `head` gives a file without a record: from its name's extension, else
/// `application/octet-stream`.
fn guessed_type(path: &FilePath) -> &'static str {
    crate::media::type_by_name(path.filename()).unwrap_or("application/octet-stream")
}

fn etag_of(md: &fs::Metadata) -> String {
    let mut h = Sha256::new();
    for n in [
        md.dev(),
        md.ino(),
        md.size(),
        md.mtime() as u64,
        md.mtime_nsec() as u64,
    ] {
        h.update(n.to_le_bytes());
    }
    hex_string(&h.finalize()[..12])
}

/// Lowercase hex (`hex::encode` goes a `char` at a time).
fn hex_string(bytes: &[u8]) -> String {
    let mut out = vec![0u8; 2 * bytes.len()];
    hex::encode_to_slice(bytes, &mut out).expect("two hex digits per byte");
    String::from_utf8(out).expect("hex is ASCII")
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
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

/// Whether any record file exists under `<sys>/meta/` (unreadable counts as yes).
fn any_meta_file(sys: &Path) -> bool {
    let Ok(shards) = fs::read_dir(sys.join("meta")) else {
        return true;
    };
    shards.into_iter().any(|shard| match shard {
        Ok(shard) => fs::read_dir(shard.path()).map_or(true, |mut d| d.next().is_some()),
        Err(_) => true,
    })
}

/// Maps the errors of creating a file's folders or renaming onto its path.
fn place_error(e: io::Error) -> StorageError {
    match e.kind() {
        ErrorKind::NotADirectory => StorageError::ReservedPath("a folder of this path is a file"),
        ErrorKind::IsADirectory | ErrorKind::DirectoryNotEmpty => {
            StorageError::ReservedPath("a folder exists at this path")
        }
        _ => io(e),
    }
}

impl FsStorage {
    /// A storage in `root`, created if missing.
    pub fn new(root: impl Into<PathBuf>) -> StorageResult<FsStorage> {
        Self::with_durability(root.into(), Durability::default())
    }

    fn with_durability(root: PathBuf, durability: Durability) -> StorageResult<FsStorage> {
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
                inline_io: AtomicU64::new(DEFAULT_INLINE_IO),
                staging: sys.join("staging"),
                stripes,
                claims: Mutex::new(HashMap::new()),
                buffers: Buffers::default(),
                write_locks: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Sets the durability policy (default [`Durability::Process`]).
    ///
    /// # Panics
    /// Only if the lock files, opened by [`new`](Self::new) a moment before, cannot be
    /// opened again.
    #[must_use]
    pub fn durability(self, durability: Durability) -> FsStorage {
        let inline = self.inner.inline_io.load(Ordering::Relaxed);
        Self::with_durability(self.inner.root.clone(), durability)
            .expect("the storage directory was usable a moment ago")
            .inline_io(inline)
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
    #[must_use]
    pub fn inline_io(self, limit: u64) -> FsStorage {
        self.inner.inline_io.store(limit, Ordering::Relaxed);
        self
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }
}

impl Inner {
    /// Whether short metadata work runs on the calling thread ([`FsStorage::inline_io`] not
    /// `0`, and no `fsync` to wait for).
    fn inline_meta(&self) -> bool {
        self.durability == Durability::Process && self.inline_io.load(Ordering::Relaxed) > 0
    }

    /// The lock shared by this process's writers of one resumable upload, held around each
    /// batch's `pwrite`s. They all write into one data file, and the kernel serialises
    /// writes to a file on its inode lock, where a waiting writer spins while the holder
    /// copies (up to 12 % of the server's CPU with four chunks in flight: PERFORMANCE.md);
    /// waiting here, it sleeps and leaves the core to the receiving side.
    fn write_lock(&self, id: &UploadId) -> Arc<Mutex<()>> {
        let mut locks = self.write_locks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(lock) = locks.get(id).and_then(Weak::upgrade) {
            return lock;
        }
        if locks.len() >= 64 && locks.len().is_power_of_two() {
            locks.retain(|_, lock| lock.strong_count() > 0);
        }
        let lock = Arc::new(Mutex::new(()));
        locks.insert(id.clone(), Arc::downgrade(&lock));
        lock
    }

    /// Whether work on `size` bytes of a simple upload runs on the calling thread.
    fn inline(&self, size: u64) -> bool {
        self.inline_meta() && size <= self.inline_io.load(Ordering::Relaxed)
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

    fn upload_dir(&self, key: &str) -> PathBuf {
        self.sys().join("uploads").join(key)
    }

    /// The record of version `etag` of the file whose path hashes to `key`:
    /// `meta/<first two hex digits>/<key>.<etag>.json` (the 256 shards exist from the start).
    fn meta_file(&self, key: &str, etag: &str) -> PathBuf {
        self.sys()
            .join("meta")
            .join(&key[..2])
            .join(format!("{key}.{etag}.json"))
    }

    /// Takes the publication lock of `key`'s stripe, in this process and across processes.
    fn lock_stripe(&self, key: &str) -> io::Result<StripeGuard<'_>> {
        let n = u64::from_str_radix(&key[..4], 16).unwrap_or(0) % LOCK_STRIPES;
        let (mutex, file) = &self.stripes[n as usize];
        let held = mutex.lock().unwrap_or_else(|e| e.into_inner());
        file.lock()?;
        Ok(StripeGuard { _held: held, file })
    }

    /// The data file of an upload.
    fn data_path(&self, id: &UploadId) -> StorageResult<PathBuf> {
        Ok(match parse_id(id)? {
            Parsed::Single(r) => {
                let mut p = PathBuf::with_capacity(self.staging.as_os_str().len() + 3 + r.len());
                p.push(&self.staging);
                p.push(&id.0); // `s.<r>`, as parsed
                p
            }
            Parsed::Resumable { key, gen_id } => {
                self.upload_dir(key).join(format!("data.{gen_id}"))
            }
            Parsed::Tmp(_) => return Err(StorageError::UploadClosed),
        })
    }

    fn read_info(&self, key: &str) -> io::Result<Option<(InfoFile, fs::Metadata)>> {
        let dir = self.upload_dir(key);
        let bytes = match fs::read(dir.join("info.json")) {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let info: InfoFile = serde_json::from_slice(&bytes)
            .map_err(|e| io::Error::new(ErrorKind::InvalidData, e))?;
        let md = match fs::metadata(dir.join("ranges")) {
            Ok(md) => md,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(Some((info, md)))
    }

    fn info_of(&self, key: &str, info: InfoFile, ranges_md: &fs::Metadata) -> UploadInfo {
        let created = UNIX_EPOCH + Duration::from_secs(info.created);
        UploadInfo {
            id: UploadId(format!("r.{key}.{}", info.gen_id)),
            path: FilePath::new(info.path).ok(),
            total: Some(info.total),
            created,
            updated: ranges_md.modified().unwrap_or(created).max(created),
            created_now: false,
        }
    }

    /// Takes a shared lock of an upload's data file and checks that the upload is still open.
    /// Does not wait for a finalizer that already holds the claim: the upload is closed.
    ///
    /// Never blocks on the lock: a claimer keeps its exclusive lock until it publishes, so a
    /// writer that found the lock taken in the instant before the claimer's `claimed` marker
    /// existed, and then waited for the lock, would wait for the publication — on an async
    /// thread (the chunk's commit runs inline), possibly the one the publication needs. It
    /// tries again instead, briefly, until the lock is free or the marker is there.
    fn lock_open<'f>(&self, file: &'f File, id: &UploadId) -> StorageResult<Unlock<'f>> {
        let mut tries = 0u32;
        loop {
            match file.try_lock_shared() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) => {
                    self.check_open(id)?;
                    // Someone is between taking the exclusive lock and marking the claim.
                    tries += 1;
                    if tries < 16 {
                        std::thread::yield_now();
                    } else {
                        std::thread::sleep(std::time::Duration::from_micros(200));
                    }
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
            }
        }
        let guard = Unlock(file);
        self.check_open(id)?;
        Ok(guard)
    }

    /// Checks that a resumable upload is still open (neither claimed nor gone).
    fn check_open(&self, id: &UploadId) -> StorageResult<()> {
        if let Parsed::Resumable { key, gen_id } = parse_id(id)? {
            let dir = self.upload_dir(key);
            if dir.join("claimed").exists() || !dir.join(format!("data.{gen_id}")).exists() {
                return Err(StorageError::UploadClosed);
            }
        }
        Ok(())
    }

    fn ranges(&self, key: &str) -> StorageResult<Vec<Range<u64>>> {
        let dir = self.upload_dir(key).join("ranges");
        let entries = fs::read_dir(&dir).map_err(closed_if_missing)?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io)?;
            let name = entry.file_name();
            let Some((a, b)) = name.to_str().and_then(|n| n.split_once('-')) else {
                continue;
            };
            if let (Ok(a), Ok(b)) = (a.parse::<u64>(), b.parse::<u64>()) {
                out.push(a..b);
            }
        }
        Ok(merge_ranges(out))
    }

    fn read_meta(&self, key: &str, etag: &str) -> (String, Bytes) {
        fs::read(self.meta_file(key, etag))
            .ok()
            .and_then(|b| decode_meta(&b))
            .unwrap_or_else(|| (String::from("application/octet-stream"), Bytes::new()))
    }

    /// The meta of the version `file` is open on: its record from the file's extended
    /// attribute (same inode, so always this version's), else from the record file.
    fn object_meta(&self, path: &FilePath, file: &File, md: &fs::Metadata) -> ObjectMeta {
        let etag = etag_of(md);
        let from_xattr = match xattr::FileExt::get_xattr(file, RECORD_XATTR) {
            Ok(Some(bytes)) => decode_meta(&bytes),
            _ => None,
        };
        let (mut content_type, attributes) = match from_xattr {
            Some(m) => m,
            None => self.read_meta(&path_key(path), &etag),
        };
        if attributes.is_empty() && content_type == "application/octet-stream" {
            // A file put there by other means, or published without a record (see
            // `publish`): the type from the name.
            content_type = guessed_type(path).to_owned();
        }
        ObjectMeta {
            size: md.size(),
            etag,
            modified: md.modified().unwrap_or(UNIX_EPOCH),
            content_type,
            attributes,
        }
    }

    fn remove_tree(&self, dir: &Path) -> io::Result<()> {
        // Move it out of the way atomically first, so nobody sees it half-deleted.
        let trash = self
            .sys()
            .join("tmp")
            .join(format!("trash{}", rand_token()));
        match fs::rename(dir, &trash) {
            Ok(()) => fs::remove_dir_all(&trash),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn open_resumable(&self, path: &FilePath, total: u64) -> StorageResult<UploadInfo> {
        let key = path_key(path);
        for _ in 0..8 {
            if let Some((info, md)) = self.read_info(&key).map_err(io)? {
                return Ok(self.info_of(&key, info, &md));
            }
            let gen_id = rand_token();
            let tmp = self.sys().join("tmp").join(format!("new{gen_id}"));
            let now = SystemTime::now();
            let info = InfoFile {
                path: path.as_str().to_owned(),
                total,
                gen_id: gen_id.clone(),
                created: unix_secs(now),
            };
            let build = || -> io::Result<()> {
                fs::create_dir(&tmp)?;
                fs::create_dir(tmp.join("ranges"))?;
                File::create(tmp.join(format!("data.{gen_id}")))?;
                let json = serde_json::to_vec(&info).map_err(io::Error::other)?;
                fs::write(tmp.join("info.json"), json)?;
                if self.durability == Durability::Power {
                    File::open(tmp.join("info.json"))?.sync_all()?;
                    fsync_dir(&tmp)?;
                }
                Ok(())
            };
            if let Err(e) = build() {
                let _ = fs::remove_dir_all(&tmp);
                return Err(io(e));
            }
            match fs::rename(&tmp, self.upload_dir(&key)) {
                Ok(()) => {
                    if self.durability == Durability::Power {
                        fsync_dir(&self.sys().join("uploads")).map_err(io)?;
                    }
                    return Ok(UploadInfo {
                        id: UploadId(format!("r.{key}.{gen_id}")),
                        path: Some(path.clone()),
                        total: Some(total),
                        created: now,
                        updated: now,
                        created_now: true,
                    });
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::DirectoryNotEmpty | ErrorKind::AlreadyExists
                    ) =>
                {
                    // Someone else created it first: join theirs.
                    let _ = fs::remove_dir_all(&tmp);
                }
                Err(e) => {
                    let _ = fs::remove_dir_all(&tmp);
                    return Err(io(e));
                }
            }
        }
        Err(StorageError::Other(
            "could not create or join the upload".into(),
        ))
    }

    fn claim(&self, id: &UploadId) -> StorageResult<Claim> {
        let Parsed::Resumable { key, .. } = parse_id(id)? else {
            // A private upload has one writer: its own request.
            return Ok(Claim::Won);
        };
        let data = match File::open(self.data_path(id)?) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Claim::Lost),
            Err(e) => return Err(io(e)),
        };
        // Waits for the write batches in flight, and for a live claimer to finish.
        data.lock().map_err(io)?;
        if !self.data_path(id)?.exists() {
            return Ok(Claim::Lost); // published or aborted meanwhile
        }
        let marker = self.upload_dir(key).join("claimed");
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&marker)
        {
            Ok(_) => {}
            // We hold the lock and the data is still there: the previous claimer died
            // before publishing. Take over.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                tracing::warn!(upload = %id, "taking over the claim of a dead finalizer");
            }
            Err(e) => return Err(io(e)),
        }
        self.claims
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), Arc::new(data));
        Ok(Claim::Won)
    }

    /// The open staging file that `FsWriter::commit` kept for `id`, if any.
    fn take_staged(&self, id: &UploadId) -> Option<Staged> {
        self.staged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
    }

    fn release_claim(&self, id: &UploadId) {
        self.claims
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    fn publish(
        &self,
        id: &UploadId,
        path: &FilePath,
        size: u64,
        options: PublishOptions,
    ) -> StorageResult<ObjectMeta> {
        let parsed = parse_id(id)?;
        if let Parsed::Resumable { .. } = parsed {
            let held = self
                .claims
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(id);
            if !held {
                return Err(StorageError::Other("publish of an unclaimed upload".into()));
            }
        }
        let target = self.file_path(path)?;
        let data_path = self.data_path(id)?;
        // A small simple upload written inline is still open: no path lookups.
        let staged = match parsed {
            Parsed::Single(_) => self.take_staged(id),
            _ => None,
        };
        let found = match &staged {
            Some(staged) => staged.file.metadata(),
            None => fs::metadata(&data_path),
        };
        let md = match found {
            Ok(md) if md.len() == size && self.durability == Durability::Process => md,
            found => {
                let data = match (staged.as_ref(), found, parsed) {
                    (Some(staged), _, _) => staged.file.try_clone().map_err(io)?,
                    // A single upload that never received a byte has no staging file yet.
                    (None, Err(e), Parsed::Single(_)) if e.kind() == ErrorKind::NotFound => {
                        create_staging(&data_path)?
                    }
                    _ => OpenOptions::new()
                        .write(true)
                        .open(&data_path)
                        .map_err(closed_if_missing)?,
                };
                data.set_len(size).map_err(io)?;
                if self.durability == Durability::Power {
                    data.sync_all().map_err(io)?;
                }
                data.metadata().map_err(io)?
            }
        };
        let etag = etag_of(&md);

        let mut meta_file = None;
        // A record that would say only what `head` finds without one is not written: no
        // attributes, and the type the name gives.
        if !options.attributes.is_empty() || options.content_type != guessed_type(path) {
            let record = encode_meta(&options.content_type, &options.attributes);
            // The record travels with the bytes in an extended attribute (published by the
            // same rename); a record file is the fallback for filesystems without user xattrs
            // or for records too large for one.
            let set_xattr = || match &staged {
                Some(staged) => xattr::FileExt::set_xattr(&staged.file, RECORD_XATTR, &record),
                None => xattr::set(&data_path, RECORD_XATTR, &record),
            };
            let in_xattr = self.xattrs.load(Ordering::Relaxed)
                && match set_xattr() {
                    Ok(()) => true,
                    Err(e) => {
                        if e.raw_os_error() == Some(95) {
                            // EOPNOTSUPP: this filesystem has no user xattrs; stop trying.
                            self.xattrs.store(false, Ordering::Relaxed);
                        }
                        false
                    }
                };
            if !in_xattr {
                self.meta_files.store(true, Ordering::Relaxed);
                let file = meta_file.insert(self.meta_file(&path_key(path), &etag));
                fs::write(file, &record).map_err(io)?;
            }
        }

        let outcome = (|| {
            // A plain overwrite needs the replaced version only to forget its record file:
            // without record files, the rename alone (which refuses a folder) decides.
            let blind = matches!(options.mode, PutMode::Overwrite)
                && !self.meta_files.load(Ordering::Relaxed);
            // An unnamed file that makes a new path is linked there without the stripe lock:
            // `linkat` never replaces, so it cannot slip between another publisher's check of
            // the path and its `rename` — an `Update` needs a file there, and a named `Create`
            // renames with `RENAME_NOREPLACE` — and a `delete` finds either nothing or a file
            // no link can replace.
            let linked = match &staged {
                Some(Staged {
                    file, named: false, ..
                }) => place_unnamed(file, &target, &data_path, &options.mode, blind)?,
                _ => false,
            };
            // The path's key (a hash) only where the lock or a record file needs it.
            let replaced_record = if linked {
                None
            } else {
                let key = path_key(path);
                self.place_named(&key, &target, &data_path, &options.mode, blind)?
                    .map(|old| self.meta_file(&key, &old))
            };
            if self.durability == Durability::Power
                && let Some(parent) = target.parent()
            {
                fsync_dir(parent).map_err(io)?;
            }
            // Forget the replaced version's record.
            if let Some(old) = replaced_record {
                let _ = fs::remove_file(old);
            }
            Ok(())
        })();
        match outcome {
            Ok(()) => {
                if let Parsed::Resumable { key: ukey, .. } = parsed {
                    let _ = self.remove_tree(&self.upload_dir(ukey));
                }
                self.release_claim(id);
                Ok(ObjectMeta {
                    size,
                    etag,
                    modified: md.modified().unwrap_or(UNIX_EPOCH),
                    content_type: options.content_type,
                    attributes: options.attributes,
                })
            }
            Err(e) => {
                if let Some(file) = meta_file {
                    let _ = fs::remove_file(file);
                }
                self.release_claim(id);
                Err(e)
            }
        }
    }

    /// Places a named data file at `target` under the path's stripe lock, after checking
    /// `mode` against the version there (not looked up when `blind`); the replaced version's
    /// etag, if one was looked up.
    fn place_named(
        &self,
        key: &str,
        target: &Path,
        data_path: &Path,
        mode: &PutMode,
        blind: bool,
    ) -> StorageResult<Option<String>> {
        let _stripe = self.lock_stripe(key).map_err(io)?;
        let current = match (!blind).then(|| fs::metadata(target)) {
            None => None,
            Some(Ok(md)) if md.is_file() => Some(etag_of(&md)),
            Some(Ok(_)) => return Err(StorageError::ReservedPath("a folder exists at this path")),
            Some(Err(e)) if matches!(e.kind(), ErrorKind::NotFound) => None,
            Some(Err(e)) => return Err(place_error(e)),
        };
        match (mode, &current) {
            (PutMode::Create, Some(_)) => return Err(StorageError::PreconditionFailed),
            (PutMode::Update(want), Some(have)) if want != have => {
                return Err(StorageError::PreconditionFailed);
            }
            (PutMode::Update(_), None) => return Err(StorageError::PreconditionFailed),
            _ => {}
        }
        let create = matches!(mode, PutMode::Create);
        match creating_folders(target, || {
            if create {
                rename_noreplace(data_path, target)
            } else {
                fs::rename(data_path, target)
            }
        }) {
            Err(e) if create && e.kind() == ErrorKind::AlreadyExists => {
                Err(StorageError::PreconditionFailed)
            }
            placed => placed.map_err(place_error).map(|()| current),
        }
    }

    fn abort(&self, id: &UploadId) -> StorageResult<()> {
        let result = match parse_id(id)? {
            Parsed::Single(_) => {
                drop(self.take_staged(id));
                match fs::remove_file(self.data_path(id)?) {
                    Err(e) if e.kind() != ErrorKind::NotFound => Err(io(e)),
                    _ => Ok(()),
                }
            }
            Parsed::Resumable { key, gen_id } => {
                // Only remove the directory if it is still this generation's.
                let dir = self.upload_dir(key);
                if dir.join(format!("data.{gen_id}")).exists() {
                    self.remove_tree(&dir).map_err(io)
                } else {
                    Ok(())
                }
            }
            Parsed::Tmp(r) => {
                let p = self.sys().join("tmp").join(r);
                match fs::remove_dir_all(&p).or_else(|_| fs::remove_file(&p)) {
                    Err(e) if e.kind() != ErrorKind::NotFound => Err(io(e)),
                    _ => Ok(()),
                }
            }
        };
        self.release_claim(id);
        result
    }

    fn list_uploads(&self) -> StorageResult<Vec<UploadInfo>> {
        // The sweeper's round also notices record files written by other processes since.
        if !self.meta_files.load(Ordering::Relaxed) && any_meta_file(&self.sys()) {
            self.meta_files.store(true, Ordering::Relaxed);
        }
        let mut out = Vec::new();
        for entry in fs::read_dir(self.sys().join("uploads")).map_err(io)? {
            let entry = entry.map_err(io)?;
            let Some(key) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if let Ok(Some((info, md))) = self.read_info(&key) {
                out.push(self.info_of(&key, info, &md));
            }
        }
        for entry in fs::read_dir(self.sys().join("staging")).map_err(io)? {
            let entry = entry.map_err(io)?;
            let (Some(name), Ok(md)) = (
                entry.file_name().to_str().map(str::to_owned),
                entry.metadata(),
            ) else {
                continue;
            };
            let t = md.modified().unwrap_or(UNIX_EPOCH);
            out.push(UploadInfo {
                id: UploadId(name),
                path: None,
                total: None,
                created: t,
                updated: t,
                created_now: false,
            });
        }
        // Unnamed staging files have no directory entry: this process lists its own.
        for (id, staged) in self.staged.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            if !staged.named {
                out.push(UploadInfo {
                    id: id.clone(),
                    path: None,
                    total: None,
                    created: staged.written,
                    updated: staged.written,
                    created_now: false,
                });
            }
        }
        for entry in fs::read_dir(self.sys().join("tmp")).map_err(io)? {
            let entry = entry.map_err(io)?;
            let (Some(name), Ok(md)) = (
                entry.file_name().to_str().map(str::to_owned),
                entry.metadata(),
            ) else {
                continue;
            };
            if !name.bytes().all(|b| b.is_ascii_alphanumeric()) {
                continue;
            }
            let t = md.modified().unwrap_or(UNIX_EPOCH);
            out.push(UploadInfo {
                id: UploadId(format!("t.{name}")),
                path: None,
                total: None,
                created: t,
                updated: t,
                created_now: false,
            });
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }
}

#[async_trait]
impl Storage for FsStorage {
    /// `true`: the etag is a hash of the data file's device, inode, size and modification
    /// time, and `modified` its modification time, both read from the file that `publish`
    /// places (a rename or link changes neither).
    fn stable_meta(&self) -> bool {
        true
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
        let range = range.unwrap_or(0..meta.size);
        if range.start > range.end || range.end > meta.size {
            return Err(StorageError::Other("range outside the file".into()));
        }
        Ok(Some((meta, read_stream(Arc::new(file), range))))
    }

    async fn delete(&self, path: &FilePath) -> StorageResult<bool> {
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

    async fn open_upload(&self, path: &FilePath, spec: UploadSpec) -> StorageResult<UploadInfo> {
        let inner = self.inner.clone();
        let path = path.clone();
        check_reserved(&path)?; // refuse reserved paths before writing anything
        let UploadSpec::Resumable { total } = spec else {
            // A private upload: its staging file is created by its first write batch.
            let now = SystemTime::now();
            return Ok(UploadInfo {
                id: UploadId(crate::file::random_id("s.")),
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

    async fn writer(&self, upload: &UploadId, offset: u64) -> StorageResult<Box<dyn UploadWriter>> {
        let resumable = matches!(parse_id(upload)?, Parsed::Resumable { .. });
        let data_path = self.inner.data_path(upload)?;
        let file = if resumable {
            // Open now, so that a closed upload is known before any byte is read.
            let path = data_path.clone();
            let f = quick(self.inner.inline_meta(), move || {
                OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(closed_if_missing)
            })
            .await?;
            Some(Arc::new(f))
        } else {
            None // created by the first batch: one blocking hop less per simple upload
        };
        Ok(Box::new(FsWriter {
            inner: self.inner.clone(),
            id: upload.clone(),
            data_path,
            file,
            resumable,
            start: offset,
            pos: offset,
            first: Bytes::new(),
            pending: Vec::new(),
            spare: None,
            in_flight: None,
            joined: false,
            write_lock: resumable.then(|| self.inner.write_lock(upload)),
        }))
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
        Ok(read_stream(Arc::new(file), range))
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

    async fn keep_upload(&self, upload: &UploadId) -> StorageResult<()> {
        let Some(staged) = self.inner.take_staged(upload) else {
            return Ok(()); // named already (by path from here on)
        };
        if !staged.named {
            let to = self.inner.data_path(upload)?;
            link_unnamed(&staged.file, &to).map_err(io)?;
        }
        Ok(())
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

    async fn put_record(
        &self,
        key: &RecordKey,
        value: Bytes,
        mode: RecordMode,
    ) -> StorageResult<()> {
        let inner = self.inner.clone();
        let key = key.clone();
        blocking(move || inner.put_record(&key, &value, mode)).await
    }

    async fn get_record(&self, key: &RecordKey) -> StorageResult<Option<Bytes>> {
        let inner = self.inner.clone();
        let key = key.clone();
        blocking(move || match fs::read(inner.record_path(&key)) {
            Ok(v) => Ok(Some(v.into())),
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                Ok(None)
            }
            Err(e) => Err(io(e)),
        })
        .await
    }

    async fn delete_record(&self, key: &RecordKey) -> StorageResult<bool> {
        let inner = self.inner.clone();
        let key = key.clone();
        blocking(move || {
            let path = inner.record_path(&key);
            match fs::remove_file(&path) {
                Ok(()) => {
                    inner.prune_record_dirs(&path);
                    Ok(true)
                }
                Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                    Ok(false)
                }
                Err(e) => Err(io(e)),
            }
        })
        .await
    }

    async fn list_records(&self, prefix: &RecordKey) -> StorageResult<Vec<RecordKey>> {
        let inner = self.inner.clone();
        let prefix = prefix.clone();
        blocking(move || {
            let mut dir = inner.sys().join("records");
            dir.extend(prefix.as_str().split('/'));
            let mut out = Vec::new();
            let mut stack = vec![(dir, prefix.as_str().to_owned())];
            while let Some((dir, key)) = stack.pop() {
                let entries = match fs::read_dir(&dir) {
                    Ok(e) => e,
                    Err(e)
                        if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) =>
                    {
                        continue;
                    }
                    Err(e) => return Err(io(e)),
                };
                for entry in entries {
                    let entry = entry.map_err(io)?;
                    let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                        continue;
                    };
                    if let Some(leaf) = name.strip_suffix(RECORD_SUFFIX) {
                        if let Ok(k) = RecordKey::new(format!("{key}/{leaf}")) {
                            out.push(k);
                        }
                    } else if entry.file_type().is_ok_and(|t| t.is_dir()) {
                        stack.push((entry.path(), format!("{key}/{name}")));
                    }
                }
            }
            Ok(out)
        })
        .await
    }
}

/// Ends the file name of a record; keys never contain it, so a record file never collides
/// with a folder of longer keys.
const RECORD_SUFFIX: &str = "@";

impl Inner {
    fn record_path(&self, key: &RecordKey) -> PathBuf {
        let mut p = self.sys().join("records");
        let mut segs = key.as_str().split('/').peekable();
        while let Some(seg) = segs.next() {
            if segs.peek().is_some() {
                p.push(seg);
            } else {
                p.push(format!("{seg}{RECORD_SUFFIX}"));
            }
        }
        p
    }

    fn put_record(&self, key: &RecordKey, value: &[u8], mode: RecordMode) -> StorageResult<()> {
        let target = self.record_path(key);
        let tmp = self.sys().join("tmp").join(format!("rec{}", rand_token()));
        let result = (|| {
            let mut f = File::create(&tmp).map_err(io)?;
            io::Write::write_all(&mut f, value).map_err(io)?;
            if self.durability == Durability::Power {
                f.sync_all().map_err(io)?;
            }
            // A concurrent delete may prune the folder between our mkdir and link: retry.
            for _ in 0..8 {
                let parent = target.parent().expect("a record path has a parent");
                fs::create_dir_all(parent).map_err(io)?;
                let placed = match mode {
                    RecordMode::Create => fs::hard_link(&tmp, &target),
                    RecordMode::Overwrite => fs::rename(&tmp, &target),
                };
                match placed {
                    Ok(()) => {
                        if self.durability == Durability::Power {
                            fsync_dir(parent).map_err(io)?;
                        }
                        return Ok(());
                    }
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                        return Err(StorageError::PreconditionFailed);
                    }
                    Err(e) if e.kind() == ErrorKind::NotFound => continue,
                    Err(e) => return Err(io(e)),
                }
            }
            Err(StorageError::Other("record folder kept vanishing".into()))
        })();
        let _ = fs::remove_file(&tmp);
        result
    }

    /// Removes the empty folders left above a deleted record (best effort).
    fn prune_record_dirs(&self, record: &Path) {
        let root = self.sys().join("records");
        let mut dir = record.parent();
        while let Some(d) = dir {
            if d == root || fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
    }
}

impl Inner {
    fn check_exists(&self, id: &UploadId) -> StorageResult<()> {
        if self.data_path(id)?.exists() {
            Ok(())
        } else {
            Err(StorageError::NotFound)
        }
    }
}

/// Streams `range` of `file` in frames of [`READ_FRAME`] bytes (a bounded read per frame, off
/// the async threads). Short reads (the file shrank) end the stream with an error.
fn read_stream(file: Arc<File>, range: Range<u64>) -> ByteStream {
    let stream = futures_util::stream::try_unfold(range.start, move |pos| {
        let file = file.clone();
        let end = range.end;
        async move {
            if pos >= end {
                return Ok(None);
            }
            let want = ((end - pos) as usize).min(READ_FRAME);
            let buf = blocking(move || {
                let mut buf = BytesMut::zeroed(want);
                let mut filled = 0;
                while filled < want {
                    match file.read_at(&mut buf[filled..], pos + filled as u64) {
                        Ok(0) => {
                            return Err(StorageError::Other("the file shrank while read".into()));
                        }
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) => return Err(io(e)),
                    }
                }
                Ok(buf.freeze())
            })
            .await?;
            Ok(Some((buf, pos + want as u64)))
        }
    });
    Box::pin(stream)
}

/// The largest and smallest batch: a writer alone writes 2 MiB per system-call round, each
/// further writer halves the size, down to 256 KiB (see [`Buffers::batch_size`]).
const MAX_BATCH: usize = 2 << 20;
const MIN_BATCH: usize = 256 << 10;
/// The bytes of idle batch buffers a storage keeps for its next writers.
const IDLE_BUDGET: usize = 4 << 20;
/// Below this many bytes a writer gathers into a small growing buffer, not a batch buffer:
/// a small file never takes (or allocates) a whole batch buffer.
const SMALL_GATHER: usize = 64 * 1024;

/// Whether `buf` is a batch buffer (else a small gathering buffer, at most 128 KiB).
fn is_batch(buf: &Vec<u8>) -> bool {
    buf.capacity() >= MIN_BATCH
}

/// The batch buffers of a storage's writers, reused from one writer to the next, and the
/// batch size. A batch buffer never grows; idle ones are kept up to [`IDLE_BUDGET`] bytes.
///
/// Without a pool every chunk request allocated and freed its two buffers, and glibc, after
/// the first freed 1 MiB block raised its mmap threshold, carved the next ones from the worker
/// threads' arenas, which kept them: a server's memory followed its allocator's history
/// (30.8 MiB peak over one run of 1 GiB in 16 MiB chunks, 4 in flight; PERFORMANCE.md).
///
/// Each batch is one hop to the blocking pool, and a hop costs thread switches: fewer, larger
/// batches are faster (one 1 GiB upload: 2 MiB batches ~13–18 % faster than 512 KiB ones),
/// but every writer holds two. So the size follows the number of writers holding buffers:
/// 2 MiB for one, 1 MiB for two, 512 KiB for three or four, 256 KiB beyond — the buffers in
/// use stay within 4 MiB up to eight writers, and at 512 KiB per writer past that. (The
/// kernel gets a batch in `pwrite`s of at most 256 KiB whatever its size: [`write_pieces`].)
#[derive(Default)]
struct Buffers {
    idle: Mutex<Vec<Vec<u8>>>,
    /// Writers holding batch buffers now.
    writers: AtomicUsize,
}

impl Buffers {
    /// The batch size while `writers` writers hold buffers.
    fn batch_size(writers: usize) -> usize {
        let halvings = writers.max(1).next_power_of_two().trailing_zeros();
        (MAX_BATCH >> halvings.min(3)).max(MIN_BATCH)
    }

    /// A batch buffer for a writer that [joined](Self::join).
    fn take(&self) -> Vec<u8> {
        let size = Self::batch_size(self.writers.load(Ordering::Relaxed));
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = idle.iter().position(|b| b.capacity() == size) {
            return idle.swap_remove(i);
        }
        // Free one idle buffer of another size (the number of writers changed) before
        // allocating: the pool converts instead of growing.
        idle.pop();
        drop(idle);
        Vec::with_capacity(size)
    }

    fn give(&self, mut buf: Vec<u8>) {
        if !is_batch(&buf) {
            return; // a small gathering buffer, or empty
        }
        buf.clear();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let held: usize = idle.iter().map(Vec::capacity).sum();
        if held + buf.capacity() <= IDLE_BUDGET {
            idle.push(buf);
        }
    }

    /// Counts a writer that starts using batch buffers.
    fn join(&self) {
        self.writers.fetch_add(1, Ordering::Relaxed);
    }

    /// Uncounts a writer that [joined](Self::join).
    fn leave(&self) {
        self.writers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A batch being written; gives its buffer back for reuse, and the file it opened.
type WriteTask = tokio::task::JoinHandle<StorageResult<(Vec<u8>, Arc<File>)>>;

/// Gathers frames into a batch buffer and writes full batches off the async threads, the next
/// batch gathering while the previous one is written. Frames are copied into two buffers that
/// alternate (and are reused), so the HTTP layer gets its read buffer back at once instead of
/// allocating fresh memory for every frame while a batch is held.
struct FsWriter {
    inner: Arc<Inner>,
    id: UploadId,
    data_path: PathBuf,
    /// `None` until the first batch creates a single upload's staging file.
    file: Option<Arc<File>>,
    resumable: bool,
    start: u64,
    pos: u64,
    /// The first frame of a simple upload, kept as it came while it is the only one (a small
    /// file is written from where it arrived, without a copy into `pending`).
    first: Bytes,
    pending: Vec<u8>,
    /// The other buffer, back from the last finished batch.
    spare: Option<Vec<u8>>,
    /// The previous batch, written while the next one gathers.
    in_flight: Option<WriteTask>,
    /// Counted among the writers that share the batch budget ([`Buffers::join`]).
    joined: bool,
    /// A resumable upload's [`Inner::write_lock`].
    write_lock: Option<Arc<Mutex<()>>>,
}

impl Drop for FsWriter {
    fn drop(&mut self) {
        self.release_buffers();
    }
}

impl FsWriter {
    /// Gives the writer's buffers back to the storage's pool.
    fn release_buffers(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        self.inner.buffers.give(pending);
        if let Some(spare) = self.spare.take() {
            self.inner.buffers.give(spare);
        }
        if std::mem::take(&mut self.joined) {
            self.inner.buffers.leave();
        }
    }

    async fn wait_in_flight(&mut self) -> StorageResult<()> {
        if let Some(task) = self.in_flight.take() {
            let (mut buf, file) = task
                .await
                .map_err(|e| StorageError::Other(format!("write task failed: {e}")))??;
            buf.clear();
            match self.spare {
                None if is_batch(&buf) => self.spare = Some(buf),
                _ => self.inner.buffers.give(buf),
            }
            self.file = Some(file);
        }
        Ok(())
    }

    /// Moves a kept first frame into `pending`.
    fn gather_first(&mut self) {
        if !self.first.is_empty() {
            let first = std::mem::take(&mut self.first);
            self.pending.extend_from_slice(&first);
        }
    }

    /// Starts writing what is pending (after the previous batch has finished).
    async fn flush_pending(&mut self) -> StorageResult<()> {
        self.gather_first();
        if self.pending.is_empty() {
            return self.wait_in_flight().await;
        }
        // The next batch takes the spare (or a pooled buffer) when its first bytes arrive.
        let buf = std::mem::take(&mut self.pending);
        let at = self.pos - buf.len() as u64;
        self.wait_in_flight().await?;
        let (inner, id, file, resumable, one_at_a_time) = (
            self.inner.clone(),
            self.id.clone(),
            self.file.take(),
            self.resumable,
            self.write_lock.clone(),
        );
        let data_path = self.data_path.clone();
        self.in_flight = Some(tokio::task::spawn_blocking(move || {
            let file = match file {
                Some(f) => f,
                None => Arc::new(create_staging(&data_path)?),
            };
            {
                let _shared = if resumable {
                    Some(inner.lock_open(&file, &id)?)
                } else {
                    None
                };
                let _one = one_at_a_time
                    .as_ref()
                    .map(|lock| lock.lock().unwrap_or_else(|e| e.into_inner()));
                write_pieces(&file, &buf, at).map_err(io)?;
            }
            Ok((buf, file))
        }));
        Ok(())
    }
}

/// Runs `place` (a `rename` or `link` onto `to`); when it fails because `to`'s folders do
/// not exist, creates them and runs it again. The folders may also have been created by a
/// publication beside this one since `place` failed: it runs again then too (a source that is
/// gone fails the same way again).
fn creating_folders(to: &Path, place: impl Fn() -> io::Result<()>) -> io::Result<()> {
    match place() {
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let Some(parent) = to.parent() else {
                return Err(e);
            };
            if !parent.exists() {
                fs::create_dir_all(parent)?;
            }
            place()
        }
        other => other,
    }
}

/// Renames `from` to `to` unless something is at `to` (`AlreadyExists`): `renameat2` with
/// `RENAME_NOREPLACE`, or, on a filesystem without it, a hard link and an unlink (both refuse
/// to replace). The stripe lock is held; this guards against an unnamed file linked to `to`
/// without it (see `Inner::publish`).
#[cfg(target_os = "linux")]
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOSYS => {
            fs::hard_link(from, to)?;
            fs::remove_file(from)
        }
        done => Ok(done?),
    }
}

/// Without unnamed files nothing is linked outside the stripe lock: the caller's check under
/// it stands.
#[cfg(not(target_os = "linux"))]
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    fs::rename(from, to)
}

/// Publishes an unnamed staging file: to a new path (a plain overwrite
/// that need not know the replaced version, or create-only) it is linked straight there —
/// `linkat` never replaces, so it is create-only by nature — and `true` is returned. A file
/// that replaces a version (or must be compared with it) is linked to `staging` instead, for
/// the caller to check and `rename` like any named staging file: `false`.
fn place_unnamed(
    file: &File,
    target: &Path,
    staging: &Path,
    mode: &PutMode,
    blind: bool,
) -> StorageResult<bool> {
    let create = matches!(mode, PutMode::Create);
    if blind || create {
        match creating_folders(target, || link_unnamed(file, target)) {
            Ok(()) => return Ok(true),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                if fs::symlink_metadata(target).is_ok_and(|md| md.is_dir()) {
                    return Err(StorageError::ReservedPath("a folder exists at this path"));
                }
                if create {
                    return Err(StorageError::PreconditionFailed);
                }
            }
            Err(e) => return Err(place_error(e)),
        }
    }
    link_unnamed(file, staging).map_err(io)?;
    Ok(false)
}

/// The most one `pwrite` hands the kernel (see [`write_pieces`]).
const WRITE_PIECE: usize = 256 * 1024;

/// Writes a batch at `at` in pieces of at most [`WRITE_PIECE`] bytes. A filesystem with large
/// folios (ext4 since Linux 6.16) allocates page-cache folios as large as one write: a 2 MiB
/// `pwrite` asks for 2 MiB of contiguous memory, and on a VM whose free memory is handed back
/// to the host (virtio-balloon free page reporting) such blocks are the ones the host
/// reclaimed, so the kernel's copy into them faults page by page on the host. A C loop of
/// `pwrite`s into a fresh 1 GiB ext4 file here: 486–3,387 MiB/s with 2 MiB writes, a steady
/// 3,161–3,575 MiB/s with 256 KiB ones (PERFORMANCE.md). tmpfs uses 4 KiB pages either way.
fn write_pieces(file: &File, buf: &[u8], at: u64) -> io::Result<()> {
    let mut at = at;
    for piece in buf.chunks(WRITE_PIECE) {
        file.write_all_at(piece, at)?;
        at += piece.len() as u64;
    }
    Ok(())
}

/// Creates (or opens) a single upload's staging file.
fn create_staging(path: &Path) -> StorageResult<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io)
}

/// A small simple upload's staging file, written by `FsWriter::commit`, kept open.
struct Staged {
    file: File,
    /// `false`: an `O_TMPFILE` without a name until [`link_unnamed`] gives it one.
    named: bool,
    /// When it was written (an unnamed one is listed for the sweeper from here).
    written: SystemTime,
}

/// Creates an unnamed file in `dir`, for reading and writing (`O_TMPFILE`).
#[cfg(target_os = "linux")]
fn create_unnamed(dir: &Path) -> io::Result<File> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(
        dir,
        OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
        Mode::from_bits_truncate(0o666),
    )?;
    Ok(File::from(fd))
}

#[cfg(not(target_os = "linux"))]
fn create_unnamed(_dir: &Path) -> io::Result<File> {
    Err(ErrorKind::Unsupported.into())
}

/// Gives the unnamed `file` the name `to` (fails if `to` exists: `linkat` never replaces).
#[cfg(target_os = "linux")]
fn link_unnamed(file: &File, to: &Path) -> io::Result<()> {
    rustix::fs::linkat(
        file,
        "",
        rustix::fs::CWD,
        to,
        rustix::fs::AtFlags::EMPTY_PATH,
    )?;
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn link_unnamed(_file: &File, _to: &Path) -> io::Result<()> {
    Err(ErrorKind::Unsupported.into())
}

/// Whether this process can create an unnamed file in `staging` and link it there.
fn unnamed_staging_works(staging: &Path) -> bool {
    let Ok(file) = create_unnamed(staging) else {
        return false;
    };
    // Named like a simple upload's staging file, so a crash right here leaves nothing the
    // sweeper does not know.
    let probe = staging.join(format!("s.{}", rand_token()));
    let linked = link_unnamed(&file, &probe).is_ok();
    if linked {
        let _ = fs::remove_file(&probe);
    }
    linked
}

/// A held publication stripe: the process-local mutex and the cross-process `flock`.
struct StripeGuard<'a> {
    _held: std::sync::MutexGuard<'a, ()>,
    file: &'a File,
}

impl Drop for StripeGuard<'_> {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

/// Releases a `flock` when dropped.
struct Unlock<'a>(&'a File);

impl Drop for Unlock<'_> {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

#[async_trait]
impl UploadWriter for FsWriter {
    async fn write(&mut self, data: Bytes) -> StorageResult<()> {
        if !self.resumable && self.pos == self.start && data.len() <= SMALL_GATHER {
            self.pos = self
                .pos
                .checked_add(data.len() as u64)
                .ok_or(StorageError::StorageFull)?;
            self.first = data;
            return Ok(());
        }
        self.gather_first();
        let mut rest = &data[..];
        while !rest.is_empty() {
            let so_far = (self.pos - self.start) as usize; // what this writer was given
            if !is_batch(&self.pending) && so_far.saturating_add(rest.len()) > SMALL_GATHER {
                // Past a small file's size: gather into a batch buffer from now on.
                if !self.joined {
                    self.joined = true;
                    self.inner.buffers.join();
                }
                let mut batch = self
                    .spare
                    .take()
                    .unwrap_or_else(|| self.inner.buffers.take());
                batch.extend_from_slice(&self.pending);
                self.pending = batch;
            }
            let batch = is_batch(&self.pending);
            let n = if batch {
                (self.pending.capacity() - self.pending.len()).min(rest.len())
            } else {
                rest.len()
            };
            self.pos = self
                .pos
                .checked_add(n as u64)
                .ok_or(StorageError::StorageFull)?;
            self.pending.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            if batch && self.pending.len() >= self.pending.capacity() {
                self.flush_pending().await?;
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> StorageResult<()> {
        self.flush_pending().await?;
        self.wait_in_flight().await?;
        self.release_buffers();
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> StorageResult<Vec<Range<u64>>> {
        let gathered: &[u8] = if self.first.is_empty() {
            &self.pending
        } else {
            &self.first
        };
        if !self.resumable
            && self.file.is_none()
            && self.in_flight.is_none()
            && self.inner.inline(gathered.len() as u64)
        {
            // The whole of a small simple upload: create and write it here (see `inline_io`),
            // and keep it open for `publish`.
            let named = !self.inner.unnamed_staging;
            let file = if named {
                create_staging(&self.data_path)?
            } else {
                create_unnamed(&self.inner.staging).map_err(io)?
            };
            file.write_all_at(gathered, self.start).map_err(io)?;
            self.inner
                .staged
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(
                    self.id.clone(),
                    Staged {
                        file,
                        named,
                        written: SystemTime::now(),
                    },
                );
            return Ok(if self.pos > self.start {
                vec![self.start..self.pos]
            } else {
                Vec::new()
            });
        }
        self.flush_pending().await?;
        self.wait_in_flight().await?;
        self.release_buffers();
        let (inner, id, data_path, file, resumable, start, pos) = (
            self.inner.clone(),
            self.id.clone(),
            std::mem::take(&mut self.data_path),
            self.file.take(),
            self.resumable,
            self.start,
            self.pos,
        );
        drop(self);
        let durable = inner.durability == Durability::Power;
        let Parsed::Resumable { key, .. } = parse_id(&id)? else {
            // A single upload: nothing to record, but an empty one still needs its file.
            if file.is_none() || durable {
                blocking(move || {
                    let file = match file {
                        Some(f) => f,
                        None => Arc::new(create_staging(&data_path)?),
                    };
                    if durable {
                        file.sync_data().map_err(io)?;
                    }
                    Ok(())
                })
                .await?;
            }
            return Ok(if pos > start {
                vec![start..pos]
            } else {
                Vec::new()
            });
        };
        let key = key.to_owned();
        let file = file.ok_or(StorageError::UploadClosed)?;
        debug_assert!(resumable);
        // Inline unless durable (an fsync): `lock_open` only waits in the instant between a
        // claimer's exclusive lock and its `claimed` marker.
        quick(inner.inline_meta(), move || {
            if durable {
                file.sync_data().map_err(io)?;
            }
            let _shared = inner.lock_open(&file, &id)?;
            let ranges_dir = inner.upload_dir(&key).join("ranges");
            if pos > start {
                File::create(ranges_dir.join(format!("{start}-{pos}")))
                    .map_err(closed_if_missing)?;
                if durable {
                    fsync_dir(&ranges_dir).map_err(io)?;
                }
            }
            inner.ranges(&key)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_strings() {
        for bytes in [&[][..], &[0x00, 0xff, 0x1a], &[0xab; 16], &[7; 40]] {
            assert_eq!(hex_string(bytes), hex::encode(bytes));
        }
    }

    #[test]
    fn upload_ids_parse_from_a_table() {
        use Parsed::*;
        let good = [
            ("s.abc123", Single("abc123")),
            ("t.Z", Tmp("Z")),
            (
                "r.k1.g2",
                Resumable {
                    key: "k1",
                    gen_id: "g2",
                },
            ),
        ];
        for (id, want) in good {
            assert_eq!(parse_id(&UploadId(id.into())).unwrap(), want, "{id}");
        }
        let bad = [
            "",
            "s",
            "s.",
            ".abc",
            "sabc",
            "x.abc",
            "s.a.b",
            "s.a-b",
            "t.",
            "r.k1",
            "r.k1.",
            "r..g",
            "r.k1.g2.x",
            "r.k-1.g2",
            "s.é",
            "ss.abc",
            "r.k1.g 2",
        ];
        for id in bad {
            assert!(parse_id(&UploadId(id.into())).is_err(), "{id:?} parsed");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conformance() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FsStorage::new(dir.path()).unwrap();
        super::super::conformance::run(Arc::new(storage.clone())).await;
        // Nothing left behind but published files and empty bookkeeping.
        let sys = dir.path().join(RESERVED_DIR);
        for sub in ["staging", "uploads", "tmp"] {
            let left: Vec<_> = fs::read_dir(sys.join(sub)).unwrap().collect();
            assert!(left.is_empty(), "{sub} not empty: {left:?}");
        }
        let power = FsStorage::new(dir.path())
            .unwrap()
            .durability(Durability::Power);
        super::super::conformance::run(Arc::new(power)).await;
        // Records in files, as on a filesystem without user xattrs.
        let files = FsStorage::new(dir.path()).unwrap();
        files.inner.xattrs.store(false, Ordering::Relaxed);
        super::super::conformance::run(Arc::new(files)).await;
        // Small simple uploads staged under a name, as where `O_TMPFILE` or an unprivileged
        // `linkat(AT_EMPTY_PATH)` is missing (the default here stages them unnamed).
        let mut named = FsStorage::new(dir.path()).unwrap();
        Arc::get_mut(&mut named.inner).unwrap().unnamed_staging = false;
        super::super::conformance::run(Arc::new(named)).await;
        // Every simple upload through the blocking pool (the default writes small ones inline).
        let hopping = FsStorage::new(dir.path()).unwrap().inline_io(0);
        super::super::conformance::run(Arc::new(hopping)).await;
    }

    #[test]
    fn batch_size_follows_the_number_of_writers() {
        let table = [
            (0, 2 << 20),
            (1, 2 << 20),
            (2, 1 << 20),
            (3, 512 << 10),
            (4, 512 << 10),
            (5, 256 << 10),
            (8, 256 << 10),
            (9, 256 << 10),
            (10_000, 256 << 10),
        ];
        for (writers, size) in table {
            assert_eq!(Buffers::batch_size(writers), size, "{writers} writers");
        }
        // The pool keeps at most IDLE_BUDGET bytes of idle buffers and converts sizes.
        let pool = Buffers::default();
        pool.join();
        let bufs: Vec<_> = (0..4).map(|_| pool.take()).collect();
        assert!(bufs.iter().all(|b| b.capacity() == 2 << 20));
        bufs.into_iter().for_each(|b| pool.give(b));
        assert_eq!(pool.idle.lock().unwrap().len(), 2, "4 MiB of 2 MiB buffers");
        (0..3).for_each(|_| pool.join());
        let small = pool.take();
        assert_eq!(small.capacity(), 512 << 10);
        assert_eq!(pool.idle.lock().unwrap().len(), 1, "one 2 MiB buffer freed");
        pool.give(Vec::with_capacity(1000)); // a gathering buffer is not kept
        assert_eq!(pool.idle.lock().unwrap().len(), 1);
    }

    #[test]
    fn meta_records_round_trip_and_read_the_old_format() {
        let cases: &[(&str, &[u8], &str, &[u8])] = &[
            ("image/png", b"{\"a\":1}", "image/png", b"{\"a\":1}"),
            ("", b"", "", b""),
            (
                "text/plain",
                b"line\nbreaks\n\xff\x00",
                "text/plain",
                b"line\nbreaks\n\xff\x00",
            ),
            ("bad\ntype", b"x", "bad", b"x"),
        ];
        for (ct, attrs, want_ct, want_attrs) in cases {
            let (got_ct, got_attrs) = decode_meta(&encode_meta(ct, attrs)).unwrap();
            assert_eq!(
                (got_ct.as_str(), &got_attrs[..]),
                (*want_ct, *want_attrs),
                "{ct:?}"
            );
        }
        // Records written by earlier versions (JSON, attributes as text or base64).
        let old = br#"{"content_type":"image/gif","attributes":"t:{\"k\":2}"}"#;
        assert_eq!(
            decode_meta(old),
            Some(("image/gif".to_owned(), Bytes::from_static(b"{\"k\":2}")))
        );
        let old_b64 = br#"{"content_type":"a/b","attributes":"b:/wA="}"#;
        assert_eq!(
            decode_meta(old_b64),
            Some(("a/b".to_owned(), Bytes::from_static(b"\xff\x00")))
        );
        for garbage in [&b"tu1\nno-line-break"[..], b"", b"{", b"tu1"] {
            assert_eq!(decode_meta(garbage), None, "{garbage:?}");
        }
    }

    #[tokio::test]
    async fn reserved_and_colliding_paths() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FsStorage::new(dir.path()).unwrap();
        let reserved = FilePath::new(".tower-uploads/x").unwrap();
        assert!(matches!(
            storage.open_upload(&reserved, UploadSpec::Single).await,
            Err(StorageError::ReservedPath(_))
        ));
        // A file, then a path that needs it to be a folder.
        let file = FilePath::new("a/b").unwrap();
        let up = storage
            .open_upload(&file, UploadSpec::Single)
            .await
            .unwrap();
        storage.claim(&up.id).await.unwrap();
        storage
            .publish(&up.id, &file, 0, PublishOptions::default())
            .await
            .unwrap();
        let nested = FilePath::new("a/b/c").unwrap();
        let up = storage
            .open_upload(&nested, UploadSpec::Single)
            .await
            .unwrap();
        storage.claim(&up.id).await.unwrap();
        let err = storage
            .publish(&up.id, &nested, 0, PublishOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(err, StorageError::ReservedPath(_)), "{err:?}");
        storage.abort(&up.id).await.unwrap();
        // A folder where the file should go.
        let folder = FilePath::new("a").unwrap();
        let up = storage
            .open_upload(&folder, UploadSpec::Single)
            .await
            .unwrap();
        storage.claim(&up.id).await.unwrap();
        let err = storage
            .publish(&up.id, &folder, 0, PublishOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(err, StorageError::ReservedPath(_)), "{err:?}");
        storage.abort(&up.id).await.unwrap();
        // Create-only onto a folder: the folder is named, not a failed precondition.
        let id = stage_small(&storage, &folder, b"x").await;
        storage.claim(&id).await.unwrap();
        let create = PublishOptions {
            mode: PutMode::Create,
            ..PublishOptions::default()
        };
        let err = storage.publish(&id, &folder, 1, create).await.unwrap_err();
        assert!(matches!(err, StorageError::ReservedPath(_)), "{err:?}");
        storage.abort(&id).await.unwrap();
        assert!(storage.head(&folder).await.unwrap().is_none());
        assert!(storage.head(&nested).await.unwrap().is_none());
    }

    /// Many publications into a folder that does not exist yet, at once: each creates the
    /// folder or finds it created by another, and none fails (a placement that failed because
    /// the folder was missing, and found it present when it looked, used to answer NotFound:
    /// one 404 in 180 000 small PUTs of the benchmark).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_publications_create_one_new_folder() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FsStorage::new(dir.path()).unwrap();
        for folder in 0..200 {
            let tasks: Vec<_> = (0..32)
                .map(|n| {
                    let storage = storage.clone();
                    tokio::spawn(async move {
                        let path = FilePath::new(format!("f{folder}/a/{n}.bin")).unwrap();
                        let id = stage_small(&storage, &path, b"bytes").await;
                        storage.claim(&id).await.unwrap();
                        let options = PublishOptions::default();
                        storage.publish(&id, &path, 5, options).await
                    })
                })
                .collect();
            for t in tasks {
                let published = t.await.unwrap();
                assert!(published.is_ok(), "folder {folder}: {published:?}");
            }
        }
    }

    /// A simple upload's first frame is kept as it came while it is the only one: whatever
    /// frames follow it (small, past the small-file gathering, none), the file holds them all
    /// in order, written inline or through batches.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn first_frame_then_more_frames() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FsStorage::new(dir.path()).unwrap();
        let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let cases: [&[usize]; 6] = [
            &[10],
            &[10, 5],
            &[10, 70_000, 5],
            &[60_000, 60_000],
            &[SMALL_GATHER, 1],
            &[1, 200_000, 3],
        ];
        for (n, frames) in cases.into_iter().enumerate() {
            let path = FilePath::new(format!("f{n}.bin")).unwrap();
            let up = storage
                .open_upload(&path, UploadSpec::Single)
                .await
                .unwrap();
            let mut w = storage.writer(&up.id, 0).await.unwrap();
            let mut at = 0;
            for &len in frames {
                w.write(Bytes::copy_from_slice(&bytes[at..at + len]))
                    .await
                    .unwrap();
                at += len;
            }
            assert_eq!(w.commit().await.unwrap(), vec![0..at as u64], "{frames:?}");
            storage.claim(&up.id).await.unwrap();
            let options = PublishOptions::default();
            storage
                .publish(&up.id, &path, at as u64, options)
                .await
                .unwrap();
            let stored = fs::read(dir.path().join(format!("f{n}.bin"))).unwrap();
            assert!(stored == bytes[..at], "{frames:?}: the file differs");
        }
    }

    /// A single upload for `path` holding `bytes`, committed (written inline: small).
    async fn stage_small(storage: &FsStorage, path: &FilePath, bytes: &'static [u8]) -> UploadId {
        let up = storage.open_upload(path, UploadSpec::Single).await.unwrap();
        let mut w = storage.writer(&up.id, 0).await.unwrap();
        w.write(Bytes::from_static(bytes)).await.unwrap();
        w.commit().await.unwrap();
        up.id
    }

    /// `range` of an upload's bytes, read back through `read_upload`.
    async fn read_back(storage: &FsStorage, id: &UploadId, range: Range<u64>) -> Vec<u8> {
        let frames: Vec<Bytes> =
            futures_util::TryStreamExt::try_collect(storage.read_upload(id, range).await.unwrap())
                .await
                .unwrap();
        frames.concat()
    }

    /// The entries of `<root>/.tower-uploads/staging`.
    fn staging_entries(root: &Path) -> usize {
        fs::read_dir(root.join(RESERVED_DIR).join("staging"))
            .unwrap()
            .count()
    }

    /// Publishes `bytes` at `path` through a single upload written inline.
    async fn publish_small(
        storage: &FsStorage,
        path: &FilePath,
        bytes: &'static [u8],
        attrs: &'static [u8],
    ) {
        let id = stage_small(storage, path, bytes).await;
        assert_eq!(storage.claim(&id).await.unwrap(), Claim::Won);
        let options = PublishOptions {
            attributes: Bytes::from_static(attrs),
            ..PublishOptions::default()
        };
        storage
            .publish(&id, path, bytes.len() as u64, options)
            .await
            .unwrap();
    }

    fn meta_file_count(root: &Path) -> usize {
        let meta = root.join(RESERVED_DIR).join("meta");
        fs::read_dir(meta)
            .unwrap()
            .map(|shard| fs::read_dir(shard.unwrap().path()).unwrap().count())
            .sum()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn overwrites_forget_record_files_written_by_others() {
        let dir = tempfile::tempdir().unwrap();
        // Opened before any record file exists: overwrites skip looking for one...
        let early = FsStorage::new(dir.path()).unwrap();
        assert!(!early.inner.meta_files.load(Ordering::Relaxed));
        // ...until one is written (here by a storage without xattrs, as another process on
        // another mount could).
        let files = FsStorage::new(dir.path()).unwrap();
        files.inner.xattrs.store(false, Ordering::Relaxed);
        let p = FilePath::new("p.txt").unwrap();
        publish_small(&files, &p, b"one", b"first").await;
        assert_eq!(meta_file_count(dir.path()), 1);
        assert!(files.inner.meta_files.load(Ordering::Relaxed));
        // A storage opened now finds it, and its overwrite forgets it.
        let late = FsStorage::new(dir.path()).unwrap();
        assert!(late.inner.meta_files.load(Ordering::Relaxed));
        publish_small(&late, &p, b"two", b"second").await;
        assert_eq!(meta_file_count(dir.path()), 0);
        let head = late.head(&p).await.unwrap().unwrap();
        assert_eq!((head.size, &head.attributes[..]), (3, &b"second"[..]));
        // The earlier storage learns of record files at its sweeper's next listing.
        publish_small(&files, &p, b"three", b"third").await;
        assert_eq!(meta_file_count(dir.path()), 1);
        early.list_uploads().await.unwrap();
        assert!(early.inner.meta_files.load(Ordering::Relaxed));
        publish_small(&early, &p, b"four", b"fourth").await;
        assert_eq!(meta_file_count(dir.path()), 0);
        // Nothing kept open or staged.
        for s in [&early, &files, &late] {
            assert!(s.inner.staged.lock().unwrap().is_empty());
        }
        assert_eq!(staging_entries(dir.path()), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_kept_inline_upload_is_seen_by_another_process() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FsStorage::new(dir.path()).unwrap();
        let p = FilePath::new("part.bin").unwrap();
        let id = stage_small(&storage, &p, b"part").await;
        storage.keep_upload(&id).await.unwrap();
        storage.keep_upload(&id).await.unwrap(); // idempotent
        assert!(storage.inner.staged.lock().unwrap().is_empty());
        // Another instance on the same directory (as another process) reads and publishes it.
        let other = FsStorage::new(dir.path()).unwrap();
        assert!(
            other
                .list_uploads()
                .await
                .unwrap()
                .iter()
                .any(|u| u.id == id)
        );
        assert_eq!(read_back(&other, &id, 0..4).await, b"part");
        assert_eq!(other.claim(&id).await.unwrap(), Claim::Won);
        other
            .publish(&id, &p, 4, PublishOptions::default())
            .await
            .unwrap();
        assert_eq!(storage.head(&p).await.unwrap().unwrap().size, 4);
    }

    #[test]
    fn one_write_lock_per_live_upload() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FsStorage::new(dir.path()).unwrap();
        let inner = &storage.inner;
        let a = inner.write_lock(&UploadId("u.a.1".into()));
        assert!(Arc::ptr_eq(
            &a,
            &inner.write_lock(&UploadId("u.a.1".into()))
        ));
        assert!(!Arc::ptr_eq(
            &a,
            &inner.write_lock(&UploadId("u.b.1".into()))
        ));
        // Entries of finished uploads are dropped as the map grows.
        for n in 0..200 {
            drop(inner.write_lock(&UploadId(format!("u.{n}.1"))));
        }
        let live = inner.write_locks.lock().unwrap().len();
        assert!(live < 100, "{live} entries");
        assert!(Arc::ptr_eq(
            &a,
            &inner.write_lock(&UploadId("u.a.1".into()))
        ));
    }

    #[test]
    fn rename_noreplace_refuses_an_existing_target() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        fs::write(&a, b"new").unwrap();
        fs::write(&b, b"old").unwrap();
        let err = rename_noreplace(&a, &b).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&b).unwrap(), b"old");
        assert_eq!(fs::read(&a).unwrap(), b"new");
        fs::remove_file(&b).unwrap();
        rename_noreplace(&a, &b).unwrap();
        assert_eq!(fs::read(&b).unwrap(), b"new");
        assert!(!a.exists());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_aborted_inline_upload_closes_its_staging_file() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FsStorage::new(dir.path()).unwrap();
        let p = FilePath::new("x.bin").unwrap();
        let id = stage_small(&storage, &p, b"abc").await;
        assert_eq!(storage.inner.staged.lock().unwrap().len(), 1);
        // Readable before publication (the probe of a file larger than its sniffed head).
        assert_eq!(read_back(&storage, &id, 1..3).await, b"bc");
        // Listed for the sweeper, named or not.
        let listed = storage.list_uploads().await.unwrap();
        assert!(listed.iter().any(|u| u.id == id), "{listed:?}");
        storage.abort(&id).await.unwrap();
        assert!(storage.inner.staged.lock().unwrap().is_empty());
        assert_eq!(staging_entries(dir.path()), 0);
        assert!(storage.head(&p).await.unwrap().is_none());
    }

    /// A writer that finds the data file locked by a claimer which has not marked its claim
    /// yet must not wait for the claimer's lock (held until publication): once the marker is
    /// there, it is told the upload is closed. (It used to wait, on an async thread, for a
    /// publication that needed that thread.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_writer_never_waits_for_a_claimers_lock() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FsStorage::new(dir.path()).unwrap();
        let up = storage
            .open_upload(
                &FilePath::new("y.bin").unwrap(),
                UploadSpec::Resumable { total: 3 },
            )
            .await
            .unwrap();
        let data = storage.inner.data_path(&up.id).unwrap();
        let claimer = File::open(&data).unwrap();
        claimer.lock().unwrap(); // the claimer, before its marker
        let (inner, id) = (storage.inner.clone(), up.id.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let file = OpenOptions::new().write(true).open(&data).unwrap();
            let outcome = inner.lock_open(&file, &id).map(|_| ());
            let _ = tx.send(outcome);
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        let Parsed::Resumable { key, .. } = parse_id(&up.id).unwrap() else {
            unreachable!()
        };
        File::create(storage.inner.upload_dir(key).join("claimed")).unwrap();
        let outcome = rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("the writer gave up without waiting for the claimer's lock");
        assert!(
            matches!(outcome, Err(StorageError::UploadClosed)),
            "{outcome:?}"
        );
        drop(claimer);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dead_claimer_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = FilePath::new("x.bin").unwrap();
        let first = FsStorage::new(dir.path()).unwrap();
        let up = first
            .open_upload(&path, UploadSpec::Resumable { total: 3 })
            .await
            .unwrap();
        let mut w = first.writer(&up.id, 0).await.unwrap();
        w.write(Bytes::from_static(b"abc")).await.unwrap();
        w.commit().await.unwrap();
        assert_eq!(first.claim(&up.id).await.unwrap(), Claim::Won);
        // The claimer "dies": its lock goes away without a publish.
        first.inner.release_claim(&up.id);
        let second = FsStorage::new(dir.path()).unwrap();
        assert_eq!(second.claim(&up.id).await.unwrap(), Claim::Won, "take-over");
        second
            .publish(&up.id, &path, 3, PublishOptions::default())
            .await
            .unwrap();
        assert_eq!(second.head(&path).await.unwrap().unwrap().size, 3);
    }
}
