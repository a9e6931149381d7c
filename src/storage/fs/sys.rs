//! The system calls underneath: `fsync` of a directory, `rename` without replacing, unnamed
//! (`O_TMPFILE`) files and the `linkat` that names them, and positional writes in pieces.

use std::fs::{self, File, OpenOptions};
#[cfg(not(target_os = "linux"))]
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::{io, rand_token}; // `io` is also `std::io`
use crate::storage::StorageResult;

pub(super) fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Renames `from` to `to` unless something is at `to` (`AlreadyExists`): `renameat2` with
/// `RENAME_NOREPLACE`, or, on a filesystem without it, a hard link and an unlink (both refuse
/// to replace). The stripe lock is held; this guards against an unnamed file linked to `to`
/// without it (see `Inner::publish`).
#[cfg(target_os = "linux")]
pub(super) fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
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
pub(super) fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    fs::rename(from, to)
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
pub(super) fn write_pieces(file: &File, buf: &[u8], at: u64) -> io::Result<()> {
    let mut at = at;
    for piece in buf.chunks(WRITE_PIECE) {
        file.write_all_at(piece, at)?;
        at += piece.len() as u64;
    }
    Ok(())
}

/// Creates (or opens) a single upload's staging file.
pub(super) fn create_staging(path: &Path) -> StorageResult<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io)
}

/// Creates an unnamed file in `dir`, for reading and writing (`O_TMPFILE`).
#[cfg(target_os = "linux")]
pub(super) fn create_unnamed(dir: &Path) -> io::Result<File> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(
        dir,
        OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
        Mode::from_bits_truncate(0o666),
    )?;
    Ok(File::from(fd))
}

#[cfg(not(target_os = "linux"))]
pub(super) fn create_unnamed(_dir: &Path) -> io::Result<File> {
    Err(ErrorKind::Unsupported.into())
}

/// Gives the unnamed `file` the name `to` (fails if `to` exists: `linkat` never replaces).
#[cfg(target_os = "linux")]
pub(super) fn link_unnamed(file: &File, to: &Path) -> io::Result<()> {
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
pub(super) fn link_unnamed(_file: &File, _to: &Path) -> io::Result<()> {
    Err(ErrorKind::Unsupported.into())
}

/// Whether this process can create an unnamed file in `staging` and link it there.
pub(super) fn unnamed_staging_works(staging: &Path) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::ErrorKind;

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
}
