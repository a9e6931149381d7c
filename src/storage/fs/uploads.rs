//! Uploads in progress: create or join a resumable upload, find it, its range markers, the
//! shared lock of its writers, claim, abort, and the listing for the sweeper.

use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind; // `io`, imported from `super`, is also `std::io`
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::meta::any_meta_file;
use super::sys::fsync_dir;
use super::{
    Durability, Inner, Parsed, Staged, closed_if_missing, io, parse_id, path_key, rand_token,
    unix_secs,
};
use crate::path::FilePath;
use crate::storage::{Claim, StorageError, StorageResult, UploadId, UploadInfo, merge_ranges};

#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct InfoFile {
    path: String,
    total: u64,
    gen_id: String,
    created: u64,
}

impl Inner {
    pub(super) fn upload_dir(&self, key: &str) -> PathBuf {
        self.sys().join("uploads").join(key)
    }

    /// The data file of an upload.
    pub(super) fn data_path(&self, id: &UploadId) -> StorageResult<PathBuf> {
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

    pub(super) fn read_info(&self, key: &str) -> io::Result<Option<(InfoFile, fs::Metadata)>> {
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

    pub(super) fn info_of(
        &self,
        key: &str,
        info: InfoFile,
        ranges_md: &fs::Metadata,
    ) -> UploadInfo {
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
    pub(super) fn lock_open<'f>(&self, file: &'f File, id: &UploadId) -> StorageResult<Unlock<'f>> {
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

    pub(super) fn ranges(&self, key: &str) -> StorageResult<Vec<Range<u64>>> {
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

    pub(super) fn remove_tree(&self, dir: &Path) -> io::Result<()> {
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

    pub(super) fn open_resumable(&self, path: &FilePath, total: u64) -> StorageResult<UploadInfo> {
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
        Err(StorageError::other("could not create or join the upload"))
    }

    pub(super) fn claim(&self, id: &UploadId) -> StorageResult<Claim> {
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
    pub(super) fn take_staged(&self, id: &UploadId) -> Option<Staged> {
        self.staged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
    }

    pub(super) fn release_claim(&self, id: &UploadId) {
        self.claims
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    pub(super) fn abort(&self, id: &UploadId) -> StorageResult<()> {
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

    pub(super) fn list_uploads(&self) -> StorageResult<Vec<UploadInfo>> {
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
        // Named staging files: a single upload's id is its file name.
        for (name, t) in named_entries(&self.sys().join("staging"))? {
            out.push(orphan(UploadId(name), t));
        }
        // Unnamed staging files have no directory entry: this process lists its own.
        for (id, staged) in self.staged.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            if !staged.named {
                out.push(orphan(id.clone(), staged.written));
            }
        }
        for (name, t) in named_entries(&self.sys().join("tmp"))? {
            if name.bytes().all(|b| b.is_ascii_alphanumeric()) {
                out.push(orphan(UploadId(format!("t.{name}")), t));
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    pub(super) fn check_exists(&self, id: &UploadId) -> StorageResult<()> {
        if self.data_path(id)?.exists() {
            Ok(())
        } else {
            Err(StorageError::NotFound)
        }
    }
}

/// Releases a `flock` when dropped.
pub(super) struct Unlock<'a>(&'a File);

impl Drop for Unlock<'_> {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// An upload the sweeper finds without its path or total (a single upload's staging file, a
/// half-built or half-removed upload directory), last written at `t`.
fn orphan(id: UploadId, t: SystemTime) -> UploadInfo {
    UploadInfo {
        id,
        path: None,
        total: None,
        created: t,
        updated: t,
        created_now: false,
    }
}

/// The entries of `dir` with UTF-8 names, and their modification times.
fn named_entries(dir: &Path) -> StorageResult<Vec<(String, SystemTime)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        if let (Some(name), Ok(md)) = (entry.file_name().to_str(), entry.metadata()) {
            out.push((name.to_owned(), md.modified().unwrap_or(UNIX_EPOCH)));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::fs::FsStorage;
    use crate::storage::{Coordinate, PublishOptions, Storage, UploadSpec};
    use bytes::Bytes;

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
