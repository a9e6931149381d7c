//! Tests of `FsStorage` as a whole: the conformance suite, paths, publications, inline uploads.

use super::*;
use crate::storage::PutMode;
use std::sync::atomic::Ordering;

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
    let power = FsStorage::options()
        .durability(Durability::Power)
        .open(dir.path())
        .unwrap();
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
    let hopping = FsStorage::options().inline_io(0).open(dir.path()).unwrap();
    super::super::conformance::run(Arc::new(hopping)).await;
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
    let up = storage.open_upload(&p, UploadSpec::Lasting).await.unwrap();
    let mut w = storage.writer(&up.id, 0).await.unwrap();
    w.write(Bytes::from_static(b"part")).await.unwrap();
    w.commit().await.unwrap();
    let id = up.id;
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

/// The conformance suite, one test per check, each on a directory of its own.
mod conformance_by_check {
    fn fresh() -> super::FsStorage {
        let dir = tempfile::Builder::new()
            .prefix("tower-uploads-fs")
            .tempdir()
            .unwrap()
            .keep();
        super::FsStorage::new(dir).unwrap()
    }

    crate::storage_conformance_tests!(fresh());
}
