//! Publication: the precondition checked and a staged upload's file placed at its path under a
//! striped lock, or an unnamed small file linked there without one.

use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind; // `io`, imported from `super`, is also `std::io`
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::UNIX_EPOCH;

use super::meta::{RECORD_XATTR, encode_meta, etag_of, guessed_type};
use super::sys::{create_staging, fsync_dir, link_unnamed, rename_noreplace};
use super::{
    Durability, Inner, LOCK_STRIPES, Parsed, Staged, closed_if_missing, io, parse_id, path_key,
};
use crate::path::FilePath;
use crate::storage::{ObjectMeta, PublishOptions, PutMode, StorageError, StorageResult, UploadId};

impl Inner {
    /// Takes the publication lock of `key`'s stripe, in this process and across processes.
    pub(super) fn lock_stripe(&self, key: &str) -> io::Result<StripeGuard<'_>> {
        let n = u64::from_str_radix(&key[..4], 16).unwrap_or(0) % LOCK_STRIPES;
        let (mutex, file) = &self.stripes[n as usize];
        let held = mutex.lock().unwrap_or_else(|e| e.into_inner());
        file.lock()?;
        Ok(StripeGuard { _held: held, file })
    }

    pub(super) fn publish(
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
                return Err(StorageError::other("publish of an unclaimed upload"));
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

/// A held publication stripe: the process-local mutex and the cross-process `flock`.
pub(super) struct StripeGuard<'a> {
    _held: std::sync::MutexGuard<'a, ()>,
    file: &'a File,
}

impl Drop for StripeGuard<'_> {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}
