//! The records API (`Storage::put_record` and the rest): one file per record under
//! `records/`, written under `tmp/` and then linked (create-only) or renamed (overwrite,
//! update). Every change holds an exclusive `flock` on `records.lock`, so that an update's
//! compare and its rename are one step for every process sharing the directory; reads take
//! no lock (a rename is atomic). A record's etag is [`Record::etag_of`] its bytes.

use bytes::Bytes;
use std::fs::{self, File};
use std::io::ErrorKind; // `io`, imported from `super`, is also `std::io`
use std::path::{Path, PathBuf};

use super::sys::fsync_dir;
use super::{Durability, Inner, io, rand_token};
use crate::storage::{Record, RecordKey, RecordMode, StorageError, StorageResult};

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

    /// Holds the records' exclusive lock until dropped.
    fn records_lock(&self) -> StorageResult<File> {
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.sys().join("records.lock"))
            .map_err(io)?;
        f.lock().map_err(io)?;
        Ok(f) // closing the file releases the lock
    }

    pub(super) fn put_record(
        &self,
        key: &RecordKey,
        value: &[u8],
        mode: RecordMode,
    ) -> StorageResult<String> {
        let target = self.record_path(key);
        let _lock = self.records_lock()?;
        if let RecordMode::Update(etag) = &mode {
            match self.get_record(key)? {
                Some(r) if r.etag == *etag => {}
                _ => return Err(StorageError::PreconditionFailed),
            }
        }
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
                    RecordMode::Overwrite | RecordMode::Update(_) => fs::rename(&tmp, &target),
                };
                match placed {
                    Ok(()) => {
                        if self.durability == Durability::Power {
                            fsync_dir(parent).map_err(io)?;
                        }
                        return Ok(Record::etag_of(value));
                    }
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                        return Err(StorageError::PreconditionFailed);
                    }
                    Err(e) if e.kind() == ErrorKind::NotFound => continue,
                    Err(e) => return Err(io(e)),
                }
            }
            Err(StorageError::other("record folder kept vanishing"))
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

    pub(super) fn get_record(&self, key: &RecordKey) -> StorageResult<Option<Record>> {
        match fs::read(self.record_path(key)) {
            Ok(v) => Ok(Some(Record::new(Bytes::from(v)))),
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                Ok(None)
            }
            Err(e) => Err(io(e)),
        }
    }

    pub(super) fn delete_record(&self, key: &RecordKey) -> StorageResult<bool> {
        let path = self.record_path(key);
        let _lock = self.records_lock()?;
        match fs::remove_file(&path) {
            Ok(()) => {
                self.prune_record_dirs(&path);
                Ok(true)
            }
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                Ok(false)
            }
            Err(e) => Err(io(e)),
        }
    }

    pub(super) fn list_records(&self, prefix: &RecordKey) -> StorageResult<Vec<RecordKey>> {
        let mut dir = self.sys().join("records");
        dir.extend(prefix.as_str().split('/'));
        let mut out = Vec::new();
        let mut stack = vec![(dir, prefix.as_str().to_owned())];
        while let Some((dir, key)) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
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
    }
}
