//! The checks of the conformance suite, one function per promise (listed, with their
//! promises, in the module's `__storage_conformance_checks!`).

use bytes::Bytes;
use futures_util::TryStreamExt;
use std::ops::Range;
use std::sync::Arc;

use crate::path::FilePath;
use crate::storage::StorageExt;
use crate::storage::{
    Claim, PublishOptions, PutMode, RecordKey, RecordMode, Storage, StorageError, UploadSpec,
};

/// `got == want`, or a panic naming `what`, the lengths and the first differing offset
/// (never the bytes: files here are megabytes).
fn same_bytes(got: &[u8], want: &[u8], what: &str) {
    if got != want {
        let at = got.iter().zip(want).position(|(a, b)| a != b);
        panic!(
            "{what}: {} bytes read, {} expected, first difference at {}",
            got.len(),
            want.len(),
            at.map_or_else(
                || "the end of the shorter".to_owned(),
                |i| format!("offset {i}")
            )
        );
    }
}

fn fresh(name: &str) -> FilePath {
    FilePath::new(format!("conformance/{}/{name}", crate::id::random_id(""))).unwrap()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[1] ^ seed)
        .collect()
}

pub(super) async fn read_all(
    storage: &Arc<dyn Storage>,
    path: &FilePath,
    range: Option<Range<u64>>,
) -> Vec<u8> {
    let (_, stream) = storage
        .read(path, range)
        .await
        .expect("read")
        .expect("file exists");
    let frames: Vec<Bytes> = stream.try_collect().await.expect("read stream");
    frames.concat()
}

/// Publishes `data` at `path` through a single upload, in pieces of 100,000 bytes, with a
/// test content type and attributes.
pub(super) async fn put(
    storage: &Arc<dyn Storage>,
    path: &FilePath,
    data: &[u8],
    mode: PutMode,
) -> Result<crate::storage::ObjectMeta, StorageError> {
    let options = PublishOptions {
        mode,
        content_type: "application/x-test".into(),
        attributes: Bytes::from_static(b"{\"a\":1}"),
    };
    put_with(storage, path, data, options).await
}

/// [`put`] with these publish options.
pub(super) async fn put_with(
    storage: &Arc<dyn Storage>,
    path: &FilePath,
    data: &[u8],
    options: PublishOptions,
) -> Result<crate::storage::ObjectMeta, StorageError> {
    let upload = storage.open_upload(path, UploadSpec::Single).await?;
    assert!(upload.created_now, "a single upload is always new");
    let mut w = storage.writer(&upload.id, 0).await?;
    for piece in data.chunks(100_000) {
        w.write(Bytes::copy_from_slice(piece)).await?;
    }
    w.commit().await?;
    assert_eq!(storage.claim(&upload.id).await?, Claim::Won);
    let result = storage
        .publish(&upload.id, path, data.len() as u64, options)
        .await;
    if result.is_err() {
        storage.abort(&upload.id).await?;
    }
    result
}

pub(super) async fn single_upload_roundtrip(storage: &Arc<dyn Storage>) {
    let path = fresh("a/b/file.bin");
    assert!(
        storage.head(&path).await.unwrap().is_none(),
        "fresh path is empty"
    );
    let data = pattern(3 << 20, 1);
    let meta = put(storage, &path, &data, PutMode::Overwrite)
        .await
        .unwrap();
    assert_eq!(meta.size, data.len() as u64);
    assert!(!meta.etag.is_empty());
    let head = storage.head(&path).await.unwrap().expect("published");
    assert_eq!(head.size, meta.size);
    assert_eq!(head.etag, meta.etag, "head and publish agree on the etag");
    assert_eq!(head.content_type, "application/x-test");
    assert_eq!(head.attributes, Bytes::from_static(b"{\"a\":1}"));
    same_bytes(
        &read_all(storage, &path, None).await,
        &data,
        "bytes round-trip",
    );
}

/// Empty attributes round-trip with any content type (a backend may then store nothing
/// beside the bytes), and [`Capabilities::stable_meta`](crate::storage::Capabilities::stable_meta) holds when claimed: `head` and `read` give
/// the etag and time `publish` gave, and a new version gets a new etag.
pub(super) async fn empty_attributes_and_stable_meta(storage: &Arc<dyn Storage>) {
    for content_type in ["application/octet-stream", "image/png"] {
        let path = fresh("stable/file.bin");
        let data = pattern(5000, 9);
        let options = || PublishOptions {
            mode: PutMode::Overwrite,
            content_type: content_type.into(),
            attributes: Bytes::new(),
        };
        let meta = put_with(storage, &path, &data, options()).await.unwrap();
        let head = storage.head(&path).await.unwrap().expect("published");
        assert_eq!(
            head.content_type, content_type,
            "the content type round-trips"
        );
        assert!(head.attributes.is_empty(), "empty attributes round-trip");
        assert_eq!(read_all(storage, &path, None).await, data);
        if storage.capabilities().stable_meta {
            let (read, _) = storage.read(&path, None).await.unwrap().expect("file");
            for (what, m) in [("head", &head), ("read", &read)] {
                assert_eq!(
                    (&m.etag, m.modified),
                    (&meta.etag, meta.modified),
                    "stable_meta: {what} gives the etag and time publish gave"
                );
            }
            let again = put_with(storage, &path, &data, options()).await.unwrap();
            assert_ne!(
                again.etag, meta.etag,
                "stable_meta: a new version, a new etag"
            );
        }
    }
}

pub(super) async fn overwrite_and_preconditions(storage: &Arc<dyn Storage>) {
    let path = fresh("x.bin");
    let v1 = put(storage, &path, b"one", PutMode::Create).await.unwrap();
    let err = put(storage, &path, b"two", PutMode::Create).await.err();
    assert!(
        matches!(err, Some(StorageError::PreconditionFailed)),
        "create-only on an existing file must fail with PreconditionFailed: {err:?}"
    );
    assert_eq!(read_all(storage, &path, None).await, b"one");
    let err = put(storage, &path, b"two", PutMode::Update("nope".into()))
        .await
        .err();
    assert!(
        matches!(err, Some(StorageError::PreconditionFailed)),
        "Update with another etag must fail with PreconditionFailed: {err:?}"
    );
    let v2 = put(storage, &path, b"two!", PutMode::Update(v1.etag.clone()))
        .await
        .unwrap();
    assert_ne!(v1.etag, v2.etag, "a new version has a new etag");
    assert_eq!(read_all(storage, &path, None).await, b"two!");
    let v3 = put(storage, &path, b"three", PutMode::Overwrite)
        .await
        .unwrap();
    assert_ne!(v2.etag, v3.etag);
    assert_eq!(read_all(storage, &path, None).await, b"three");
    let missing = fresh("missing.bin");
    let err = put(storage, &missing, b"x", PutMode::Update(v3.etag))
        .await
        .err();
    assert!(
        matches!(err, Some(StorageError::PreconditionFailed)),
        "Update where there is no file must fail with PreconditionFailed: {err:?}"
    );
    assert!(
        storage.head(&missing).await.unwrap().is_none(),
        "nothing left behind"
    );
}

/// Create-only publications of one new path race: exactly one wins, whatever the sizes (a
/// backend may stage and place small and large files differently — FsStorage links a small
/// one without its publication lock), and the file is the winner's.
pub(super) async fn create_only_race(storage: Arc<dyn Storage>) {
    for round in 0..6u8 {
        let path = fresh("race.bin");
        let tasks: Vec<_> = (0..6u8)
            .map(|i| {
                let (storage, path) = (storage.clone(), path.clone());
                let len = if i % 2 == 0 { 1_000 } else { 200_000 };
                let data = pattern(len, round * 16 + i);
                tokio::spawn(async move {
                    let result = put(&storage, &path, &data, PutMode::Create).await;
                    (result, data)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for task in tasks {
            let (result, data) = task.await.expect("publishing task");
            match result {
                Ok(_) => winners.push(data),
                Err(StorageError::PreconditionFailed) => {}
                Err(e) => panic!("create-only race: {e:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "exactly one create-only publication wins");
        same_bytes(
            &read_all(&storage, &path, None).await,
            &winners[0],
            "the file is the winner's",
        );
    }
}

pub(super) async fn ranged_reads(storage: &Arc<dyn Storage>) {
    let path = fresh("r.bin");
    let data = pattern(1_000_000, 2);
    put(storage, &path, &data, PutMode::Overwrite)
        .await
        .unwrap();
    for range in [
        0..1,
        0..1_000_000,
        999_999..1_000_000,
        123_456..654_321,
        5..5,
    ] {
        let got = read_all(storage, &path, Some(range.clone())).await;
        same_bytes(
            &got,
            &data[range.start as usize..range.end as usize],
            &format!("range {range:?}"),
        );
    }
}

pub(super) async fn uncommitted_bytes_do_not_count(storage: &Arc<dyn Storage>) {
    let path = fresh("u.bin");
    let up = storage
        .open_upload(&path, UploadSpec::Resumable { total: 10 })
        .await
        .unwrap();
    let mut w = storage.writer(&up.id, 0).await.unwrap();
    w.write(Bytes::from_static(b"01234")).await.unwrap();
    drop(w);
    assert_eq!(
        storage.received(&up.id).await.unwrap(),
        vec![],
        "dropped writer counts nothing"
    );
    storage.abort(&up.id).await.unwrap();
}

pub(super) async fn resumable_create_join_and_ranges(storage: &Arc<dyn Storage>) {
    let path = fresh("big.bin");
    assert!(storage.find_upload(&path).await.unwrap().is_none());
    let a = storage
        .open_upload(&path, UploadSpec::Resumable { total: 30 })
        .await
        .unwrap();
    assert!(a.created_now);
    assert_eq!(a.total, Some(30));
    let b = storage
        .open_upload(&path, UploadSpec::Resumable { total: 99 })
        .await
        .expect("joining the upload in progress");
    assert!(!b.created_now, "the second open joins");
    assert_eq!(b.id, a.id);
    assert_eq!(
        b.total,
        Some(30),
        "the established total wins; the caller compares"
    );
    assert_eq!(
        storage.find_upload(&path).await.unwrap().map(|u| u.id),
        Some(a.id.clone())
    );
    let data = pattern(30, 3);
    for (range, want) in [
        (20..30, vec![20..30]),
        (0..5, vec![0..5, 20..30]),
        (5..10, vec![0..10, 20..30]),
        (5..10, vec![0..10, 20..30]),
    ] {
        let mut w = storage.writer(&a.id, range.start).await.unwrap();
        w.write(Bytes::copy_from_slice(
            &data[range.start as usize..range.end as usize],
        ))
        .await
        .unwrap();
        assert_eq!(w.commit().await.unwrap(), want, "after {range:?}");
    }
    assert_eq!(storage.received(&a.id).await.unwrap(), vec![0..10, 20..30]);
    let staged: Vec<Bytes> = storage
        .read_upload(&a.id, 20..30)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        staged.concat(),
        &data[20..30],
        "staged bytes readable for probing"
    );
    assert!(
        storage.head(&path).await.unwrap().is_none(),
        "nothing visible before publish"
    );
    storage.abort(&a.id).await.unwrap();
    assert!(
        storage.find_upload(&path).await.unwrap().is_none(),
        "abort forgets the upload"
    );
    let c = storage
        .open_upload(&path, UploadSpec::Resumable { total: 99 })
        .await
        .unwrap();
    assert!(c.created_now, "after abort a new upload starts");
    assert_ne!(c.id, a.id);
    assert_eq!(storage.received(&c.id).await.unwrap(), vec![]);
    storage.abort(&c.id).await.unwrap();
}

pub(super) async fn parallel_chunks_and_single_claim(storage: Arc<dyn Storage>) {
    let path = fresh("parallel.bin");
    let chunk = 256 * 1024 + 7;
    let chunks = 12;
    let total = (chunk * chunks - 100) as u64;
    let data = Arc::new(pattern(total as usize, 4));
    let mut order: Vec<usize> = (0..chunks).collect();
    order.reverse();
    order.swap(2, 7);
    let mut tasks = Vec::new();
    for i in order {
        let (storage, path, data) = (storage.clone(), path.clone(), data.clone());
        tasks.push(tokio::spawn(async move {
            let up = storage
                .open_upload(&path, UploadSpec::Resumable { total })
                .await
                .unwrap();
            let start = i * chunk;
            let end = ((i + 1) * chunk).min(total as usize);
            let mut w = storage.writer(&up.id, start as u64).await.unwrap();
            for piece in data[start..end].chunks(10_000) {
                w.write(Bytes::copy_from_slice(piece)).await.unwrap();
            }
            let ranges = w.commit().await.unwrap();
            (up.id, ranges)
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap().0);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "every chunk joined the same upload");
    let id = ids.pop().unwrap();
    assert_eq!(storage.received(&id).await.unwrap(), vec![0..total]);
    let mut claims = Vec::new();
    for _ in 0..8 {
        let (storage, id, path) = (storage.clone(), id.clone(), path.clone());
        claims.push(tokio::spawn(async move {
            let c = storage.claim(&id).await;
            let mut published = None;
            if let Ok(Claim::Won) = c {
                // Hold the claim a moment so that the others really race it, then publish:
                // a losing claim may wait for the winner's outcome.
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                published = Some(
                    storage
                        .publish(&id, &path, total, PublishOptions::default())
                        .await,
                );
            }
            (c, published)
        }));
    }
    let mut outcomes = Vec::new();
    for c in claims {
        outcomes.push(c.await.expect("a claiming task"));
    }
    let won = outcomes
        .iter()
        .filter(|(c, _)| matches!(c, Ok(Claim::Won)))
        .count();
    assert_eq!(
        won,
        1,
        "exactly one of 8 concurrent claims wins: {:?}",
        outcomes.iter().map(|(c, _)| c).collect::<Vec<_>>()
    );
    for (claim, published) in &outcomes {
        assert!(claim.is_ok(), "a claim failed: {claim:?}");
        if let Some(published) = published {
            assert!(
                published.is_ok(),
                "the winner's publish failed: {published:?}"
            );
        }
    }
    same_bytes(
        &read_all(&storage, &path, None).await,
        &data,
        "assembled bytes",
    );
    assert!(
        storage.find_upload(&path).await.unwrap().is_none(),
        "published upload is forgotten"
    );
    assert_eq!(
        storage.claim(&id).await.unwrap(),
        Claim::Lost,
        "claim after publish loses"
    );
}

pub(super) async fn closed_after_claim(storage: &Arc<dyn Storage>) {
    let path = fresh("closed.bin");
    let up = storage
        .open_upload(&path, UploadSpec::Resumable { total: 4 })
        .await
        .unwrap();
    let mut early = storage.writer(&up.id, 0).await.unwrap();
    assert_eq!(storage.claim(&up.id).await.unwrap(), Claim::Won);
    let late = match storage.writer(&up.id, 0).await {
        Ok(mut w) => match w.write(Bytes::from_static(b"abcd")).await {
            Ok(()) => w.commit().await.map(|_| ()),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    assert!(
        matches!(late, Err(StorageError::UploadClosed)),
        "writer after claim: {late:?}"
    );
    let early_result = match early.write(Bytes::from_static(b"abcd")).await {
        Ok(()) => early.commit().await.map(|_| ()),
        Err(e) => Err(e),
    };
    assert!(
        matches!(early_result, Err(StorageError::UploadClosed)),
        "a writer opened before the claim cannot commit after it: {early_result:?}"
    );
    storage.unclaim(&up.id).await.unwrap();
    assert_eq!(
        storage.claim(&up.id).await.unwrap(),
        Claim::Won,
        "after unclaim the next claim wins"
    );
    storage.abort(&up.id).await.unwrap();
    assert!(storage.head(&path).await.unwrap().is_none());

    // A writer whose bytes (several batches) were all written before the claim cannot make
    // them count after it.
    let path = fresh("closed-full.bin");
    let total = 3 << 20;
    let up = storage
        .open_upload(
            &path,
            UploadSpec::Resumable {
                total: total as u64,
            },
        )
        .await
        .unwrap();
    let mut full = storage.writer(&up.id, 0).await.unwrap();
    full.write(Bytes::from(pattern(total, 9))).await.unwrap();
    full.flush().await.unwrap();
    assert_eq!(storage.claim(&up.id).await.unwrap(), Claim::Won);
    let late = full.commit().await;
    assert!(
        matches!(late, Err(StorageError::UploadClosed)),
        "a writer whose bytes were all written before the claim cannot commit after it: {late:?}"
    );
    assert_eq!(
        storage.received(&up.id).await.unwrap_or_default(),
        Vec::<Range<u64>>::new(),
        "nothing counted"
    );
    storage.abort(&up.id).await.unwrap();
}

pub(super) async fn lasting_upload(storage: Arc<dyn Storage>) {
    let path = fresh("part.bin");
    let up = storage
        .open_upload(&path, UploadSpec::Lasting)
        .await
        .expect("open a lasting upload");
    assert!(up.created_now, "a lasting upload is always new");
    let mut w = storage.writer(&up.id, 0).await.unwrap();
    w.write(Bytes::from_static(b"part")).await.unwrap();
    w.commit().await.unwrap();
    // Another request (a task of its own) finds it, claims it and publishes it by its id.
    let (other, id, target) = (storage.clone(), up.id.clone(), path.clone());
    tokio::spawn(async move {
        let listed = other.list_uploads().await.unwrap();
        assert!(
            listed.iter().any(|u| u.id == id),
            "a committed lasting upload is listed"
        );
        assert_eq!(other.claim(&id).await.unwrap(), Claim::Won);
        other
            .publish(&id, &target, 4, PublishOptions::default())
            .await
            .unwrap();
    })
    .await
    .expect("the other request");
    same_bytes(
        &read_all(&storage, &path, None).await,
        b"part",
        "the published part",
    );
}

pub(super) async fn abort_and_listing(storage: &Arc<dyn Storage>) {
    let path = fresh("listed.bin");
    let up = storage
        .open_upload(&path, UploadSpec::Resumable { total: 8 })
        .await
        .unwrap();
    let single = storage
        .open_upload(&path, UploadSpec::Single)
        .await
        .unwrap();
    // A single upload is listed once it holds bytes (a backend may create it lazily).
    let mut w = storage.writer(&single.id, 0).await.unwrap();
    w.write(Bytes::from_static(b"x")).await.unwrap();
    w.commit().await.unwrap();
    let listed = storage.list_uploads().await.unwrap();
    assert!(
        listed.iter().any(|u| u.id == up.id),
        "resumable upload listed"
    );
    assert!(
        listed.iter().any(|u| u.id == single.id),
        "single upload listed"
    );
    let mine = listed.iter().find(|u| u.id == up.id).unwrap();
    assert_eq!(mine.path.as_ref(), Some(&path));
    assert_eq!(mine.total, Some(8));
    storage.abort(&up.id).await.unwrap();
    storage.abort(&up.id).await.unwrap(); // idempotent
    storage.abort(&single.id).await.unwrap();
    let listed = storage.list_uploads().await.unwrap();
    assert!(
        !listed.iter().any(|u| u.id == up.id || u.id == single.id),
        "aborted uploads gone"
    );
}

pub(super) async fn reader_keeps_its_version(storage: &Arc<dyn Storage>) {
    let path = fresh("versions.bin");
    let old = pattern(2 << 20, 5);
    put(storage, &path, &old, PutMode::Overwrite).await.unwrap();
    let (meta, stream) = storage.read(&path, None).await.unwrap().unwrap();
    let new = pattern(1 << 20, 6);
    put(storage, &path, &new, PutMode::Overwrite).await.unwrap();
    let frames: Vec<Bytes> = stream.try_collect().await.unwrap();
    assert_eq!(meta.size, old.len() as u64);
    same_bytes(
        &frames.concat(),
        &old,
        "a reader sees the version it opened, whole",
    );
    same_bytes(
        &read_all(storage, &path, None).await,
        &new,
        "the new version",
    );
}

/// This process's resident memory in bytes (Linux's `/proc/self/statm`), if known.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// A 96 MiB file read back: after its first frame the process holds far less than the file
/// (a read that collects the file first would hold all of it: allocations that large are
/// fresh mappings, so they show in the resident size whatever the allocator kept), and
/// every frame is bounded. Where the resident size cannot be read, only the frames are
/// checked.
pub(super) async fn reads_stream(storage: &Arc<dyn Storage>) {
    const MIB: usize = 1 << 20;
    const SIZE: usize = 96 * MIB;
    // One at a time in this process: another backend's run of this check (one test per check
    // and backend run in parallel) writing its own 96 MiB in memory would count here.
    static ALONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _alone = ALONE.lock().await;
    let path = fresh("big-read.bin");
    let up = storage
        .open_upload(&path, UploadSpec::Single)
        .await
        .unwrap();
    let mut w = storage.writer(&up.id, 0).await.unwrap();
    for i in 0..SIZE / MIB {
        w.write(Bytes::from(vec![i as u8; MIB])).await.unwrap();
    }
    w.commit().await.unwrap();
    assert_eq!(storage.claim(&up.id).await.unwrap(), Claim::Won);
    storage
        .publish(&up.id, &path, SIZE as u64, PublishOptions::default())
        .await
        .unwrap();

    let before = resident_bytes();
    let (_, mut stream) = storage.read(&path, None).await.unwrap().expect("published");
    let first = stream.try_next().await.unwrap().expect("a first frame");
    if let (Some(before), Some(after)) = (before, resident_bytes()) {
        let grown = after.saturating_sub(before);
        assert!(
            grown < (SIZE / 2) as u64,
            "after the first frame of a 96 MiB file the process holds {} MiB more",
            grown / MIB as u64
        );
    }
    let mut total = first.len();
    let mut largest = first.len();
    while let Some(frame) = stream.try_next().await.unwrap() {
        total += frame.len();
        largest = largest.max(frame.len());
    }
    assert_eq!(total, SIZE, "the whole file is read");
    assert!(largest <= 16 * MIB, "a frame of {largest} bytes");
    // The contract deletes no file: free the space by replacing it with an empty one.
    put(storage, &path, b"", PutMode::Overwrite).await.unwrap();
}

pub(super) async fn empty_file(storage: &Arc<dyn Storage>) {
    let path = fresh("empty");
    let meta = put(storage, &path, b"", PutMode::Overwrite).await.unwrap();
    assert_eq!(meta.size, 0);
    assert_eq!(read_all(storage, &path, None).await, b"");
}

/// Records: create-only is exactly-once under concurrency, overwrite replaces, listing finds
/// what is under a prefix (at any depth) and nothing else, delete says whether there was one.
pub(super) async fn records(storage: Arc<dyn Storage>) {
    let base = RecordKey::new(format!("conformance/{}", crate::id::random_id(""))).unwrap();
    let key = base.join("one").unwrap();
    assert_eq!(
        storage.get_record(&key).await.unwrap(),
        None,
        "records: absent"
    );
    storage
        .put_record(&key, Bytes::from_static(b"v1"), RecordMode::Create)
        .await
        .unwrap();
    assert!(
        matches!(
            storage
                .put_record(&key, Bytes::from_static(b"v2"), RecordMode::Create)
                .await,
            Err(StorageError::PreconditionFailed)
        ),
        "records: a second create must fail"
    );
    assert_eq!(value_of(&storage, &key).await.as_deref(), Some(&b"v1"[..]));
    let etag = storage
        .put_record(&key, Bytes::from_static(b"v3"), RecordMode::Overwrite)
        .await
        .unwrap();
    let read = storage.get_record(&key).await.unwrap().unwrap();
    assert_eq!(read.value, &b"v3"[..], "records: overwrite replaces");
    assert_eq!(read.etag, etag, "records: put returns the etag get returns");

    // A key that is a prefix of others, and deeper keys.
    let deep = base.join("one/a/b").unwrap();
    let other = base.join("two").unwrap();
    let sibling = RecordKey::new(format!("{base}x")).unwrap();
    for k in [&deep, &other, &sibling] {
        storage
            .put_record(k, Bytes::from_static(b"x"), RecordMode::Create)
            .await
            .unwrap();
    }
    let mut listed = storage.list_records(&base).await.unwrap();
    listed.sort();
    let mut want = vec![key.clone(), deep.clone(), other.clone()];
    want.sort();
    assert_eq!(listed, want, "records: listing under a prefix");
    assert_eq!(
        storage.list_records(&key).await.unwrap(),
        vec![deep.clone()],
        "records: a record's own key is also a prefix"
    );

    // Exactly one of many concurrent creators wins.
    let race = base.join("race").unwrap();
    let tasks: Vec<_> = (0..16u8)
        .map(|i| {
            let storage = storage.clone();
            let race = race.clone();
            tokio::spawn(async move {
                storage
                    .put_record(&race, Bytes::from(vec![i]), RecordMode::Create)
                    .await
            })
        })
        .collect();
    let won = winners(tasks).await;
    assert_eq!(won.len(), 1, "records: exactly one concurrent create wins");
    assert_eq!(
        value_of(&storage, &race).await.as_deref(),
        Some(&won[..]),
        "records: the winner's value is kept"
    );

    // Compare-and-swap: exactly one of many concurrent updates from one etag wins, and an
    // update from an old etag or of a missing record fails.
    let seen = storage.get_record(&race).await.unwrap().unwrap();
    let tasks: Vec<_> = (0..16u8)
        .map(|i| {
            let storage = storage.clone();
            let race = race.clone();
            let etag = seen.etag.clone();
            tokio::spawn(async move {
                let value = Bytes::from(vec![100 + i]);
                storage
                    .put_record(&race, value, RecordMode::Update(etag))
                    .await
            })
        })
        .collect();
    let won = winners(tasks).await;
    assert_eq!(won.len(), 1, "records: exactly one concurrent update wins");
    let now = storage.get_record(&race).await.unwrap().unwrap();
    assert_eq!(
        now.value,
        Bytes::from(vec![100 + won[0]]),
        "records: the update's value"
    );
    assert_ne!(now.etag, seen.etag, "records: an update changes the etag");
    let stale = storage
        .put_record(
            &race,
            Bytes::from_static(b"late"),
            RecordMode::Update(seen.etag),
        )
        .await;
    assert!(
        matches!(stale, Err(StorageError::PreconditionFailed)),
        "records: an update from an old etag must fail"
    );
    let missing = storage
        .put_record(
            &base.join("none").unwrap(),
            Bytes::new(),
            RecordMode::Update(now.etag),
        )
        .await;
    assert!(
        matches!(missing, Err(StorageError::PreconditionFailed)),
        "records: an update of a missing record must fail"
    );

    for k in [&key, &deep, &other, &sibling, &race] {
        assert!(
            storage.delete_record(k).await.unwrap(),
            "records: delete {k}"
        );
        assert!(
            !storage.delete_record(k).await.unwrap(),
            "records: delete twice"
        );
    }
    assert!(storage.list_records(&base).await.unwrap().is_empty());
    assert_eq!(storage.get_record(&deep).await.unwrap(), None);
}

async fn value_of(storage: &Arc<dyn Storage>, key: &RecordKey) -> Option<Bytes> {
    storage.get_record(key).await.unwrap().map(|r| r.value)
}

/// The indexes of the racing puts that succeeded.
async fn winners(
    tasks: Vec<tokio::task::JoinHandle<crate::storage::StorageResult<String>>>,
) -> Vec<u8> {
    let mut won = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await.unwrap() {
            Ok(_) => won.push(i as u8),
            Err(StorageError::PreconditionFailed) => {}
            Err(e) => panic!("records: a racing put failed oddly: {e}"),
        }
    }
    won
}

/// On the crate's coordination (a backend without its own): a claim whose lease is over is
/// taken over, a live one is not, and a holder whose claim was taken over publishes nothing.
pub(super) async fn claim_take_over(storage: &Arc<dyn Storage>) {
    use crate::storage::plant_claim;
    use std::time::Duration;
    if storage.coordinator().is_some() {
        return; // a backend's own coordination has its own take-over (FsStorage: flock)
    }
    let path = fresh("taken/over.bin");
    let up = storage
        .open_upload(&path, UploadSpec::Resumable { total: 2 })
        .await
        .unwrap();
    let mut w = storage.writer(&up.id, 0).await.unwrap();
    w.write(Bytes::from_static(b"hi")).await.unwrap();
    w.commit().await.unwrap();
    // Another process holds it, alive: not taken over, and not ours to publish.
    let elsewhere = plant_claim(&**storage, &up.id, Duration::from_secs(60), false).await;
    assert_eq!(elsewhere.unwrap(), Claim::Won);
    assert_eq!(
        storage.claim(&up.id).await.unwrap(),
        Claim::Lost,
        "claim take-over: a live holder keeps its claim"
    );
    let publish = storage.publish(&up.id, &path, 2, PublishOptions::default());
    assert!(
        matches!(publish.await, Err(StorageError::UploadClosed)),
        "claim take-over: only the holder publishes"
    );
    // Our claim, whose lease ran out (this process stalled), is taken over by another…
    let path = fresh("taken/back.bin");
    let up = storage
        .open_upload(&path, UploadSpec::Resumable { total: 2 })
        .await
        .unwrap();
    let mut w = storage.writer(&up.id, 0).await.unwrap();
    w.write(Bytes::from_static(b"ok")).await.unwrap();
    w.commit().await.unwrap();
    let ours = plant_claim(&**storage, &up.id, Duration::ZERO, true).await;
    assert_eq!(ours.unwrap(), Claim::Won);
    let theirs = plant_claim(&**storage, &up.id, Duration::from_secs(60), false).await;
    assert_eq!(
        theirs.unwrap(),
        Claim::Won,
        "claim take-over: a claim whose lease is over is taken over"
    );
    // …and then we can no longer publish.
    let publish = storage.publish(&up.id, &path, 2, PublishOptions::default());
    assert!(
        matches!(publish.await, Err(StorageError::UploadClosed)),
        "claim take-over: a holder whose claim was taken over publishes nothing"
    );
    assert!(storage.head(&path).await.unwrap().is_none());
    storage.abort(&up.id).await.unwrap();
}
