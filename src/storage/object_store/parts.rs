//! Bytes once: an upload's chunks on a part grid go straight into one multipart upload.
//!
//! The **grid** of an upload — part size `C`, 5–16 MiB — and its multipart upload (at
//! `uploads/<id>/file`) are created by its first writer that can use them, and recorded
//! create-only (`os/<id>/grid`; the loser of a race aborts its own multipart upload). A
//! writer whose offset is on the grid sends every `C` bytes as part `offset / C + 1`, after
//! claiming that part number (`os/<id>/p/<k>`, create-only: two writers of one block never
//! overwrite each other's part); what is left at its end goes into a chunk object (below 5
//! MiB a part may only be the file's last), except at the upload's end, where it is the
//! last part. At commit the writer records the parts it sent (`os/<id>/w/<writer>`): only
//! a committed writer's parts count, as a chunk object is visible only once committed.
//!
//! Writers off the grid, with no grid, or past 10,000 parts, write chunk objects
//! (`uploads/<id>/chunks/…`): the fallback.
//!
//! **Assembly** (by the claim's holder, before the probe reads the upload): for every block
//! `k` of the file, its committed part, or else a part uploaded now from the chunk objects
//! that cover it (read back: the fallback's cost, at most one block for a fixed chunk size
//! whose last chunk is short of a block); then the multipart upload is completed into
//! `uploads/<id>/file` — its parts must be numbered 1…n without gaps (object_store's
//! `complete_multipart`) — and `os/<id>/done` records it. Publication then copies that
//! object to the file's key inside the store (`publish.rs`): no byte passes through the
//! server again.
//!
//! The multipart upload is created before the file's content type and attributes are
//! known: its metadata names a sidecar (`tu-meta-ref`) that publication writes first
//! (`attrs/<version>`: the content type and the attributes), which readers of the file's
//! metadata follow.

use bytes::Bytes;
use futures_util::TryStreamExt;
use object_store::multipart::PartId;
use object_store::path::Path;
use object_store::{Attribute, AttributeValue, Attributes, PutMultipartOptions, PutPayload};
use serde::{Deserialize, Serialize};

use super::{META_META_REF, META_VERSION, ObjectStoreStorage, cover, os_err};
use crate::storage::{RecordKey, RecordMode, Storage, StorageError, StorageResult, UploadId};

/// The smallest part S3 takes but for the last one.
pub(super) const MIN_PART: u64 = 5 << 20;
/// The largest grid, and the most a writer holds in memory.
pub(super) const MAX_PART: u64 = 16 << 20;
/// The grid a writer proposes when it grows past [`MAX_PART`] before any grid exists.
pub(super) const LONG_GRID: u64 = 8 << 20;
/// S3's most parts per multipart upload.
const MAX_PARTS: u64 = 10_000;

/// An upload's part grid and the multipart upload its parts go into.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Grid {
    /// The part size `C`: part `k` holds `[k·C, (k+1)·C)`.
    pub(super) c: u64,
    /// The multipart upload's id, at `uploads/<id>/file`.
    pub(super) mpu: String,
    /// The version the assembled file is published as (its metadata names it).
    pub(super) version: String,
}

impl Grid {
    /// Whether a writer at `offset` can send parts on this grid.
    pub(super) fn fits(&self, offset: u64) -> bool {
        offset.is_multiple_of(self.c) && offset / self.c < MAX_PARTS
    }
}

/// The parts a committed writer sent: `(k, etag, length)`.
#[derive(Serialize, Deserialize)]
struct Sent {
    parts: Vec<(u64, String, u64)>,
}

fn rkey(s: String) -> StorageResult<RecordKey> {
    RecordKey::new(s).map_err(StorageError::backend)
}

/// Where a staged upload's bytes are, for reading and publishing.
pub(super) enum Source {
    /// Assembled into `uploads/<id>/file`; its version.
    File(Path, String),
    /// Chunk objects only (no grid): read through their cover.
    Chunks,
}

impl ObjectStoreStorage {
    fn grid_key(id: &UploadId) -> StorageResult<RecordKey> {
        rkey(format!("os/{}/grid", id.0))
    }

    pub(super) fn file_object(&self, id: &UploadId) -> StorageResult<Path> {
        Ok(self.upload_dir(id)?.join("file"))
    }

    /// The upload's grid, if it has one.
    pub(super) async fn grid(&self, id: &UploadId) -> StorageResult<Option<Grid>> {
        let Some(r) = self.get_record(&Self::grid_key(id)?).await? else {
            return Ok(None);
        };
        let grid: Grid = serde_json::from_slice(&r.value).map_err(StorageError::backend)?;
        if grid.c == 0 {
            return Err(StorageError::other("an upload's part grid of 0 bytes"));
        }
        Ok(Some(grid))
    }

    /// The upload's grid: the one recorded, or one of part size `c` created now (with its
    /// multipart upload) when there is none.
    pub(super) async fn grid_or(&self, id: &UploadId, c: u64) -> StorageResult<Grid> {
        if let Some(g) = self.grid(id).await? {
            return Ok(g);
        }
        let key = self.file_object(id)?;
        let version = crate::id::random_id("v");
        let mut attributes = Attributes::new();
        attributes.insert(
            Attribute::Metadata(META_VERSION.into()),
            AttributeValue::from(version.clone()),
        );
        attributes.insert(
            Attribute::Metadata(META_META_REF.into()),
            AttributeValue::from(version.clone()),
        );
        let opts = PutMultipartOptions {
            attributes,
            ..Default::default()
        };
        let mpu = self
            .multipart
            .create_multipart_opts(&key, opts)
            .await
            .map_err(os_err)?;
        let grid = Grid { c, mpu, version };
        let value = serde_json::to_vec(&grid).map_err(StorageError::backend)?;
        match self
            .put_record(&Self::grid_key(id)?, value.into(), RecordMode::Create)
            .await
        {
            Ok(_) => Ok(grid),
            Err(StorageError::PreconditionFailed) => {
                // Another writer's grid came first: ours goes.
                let _ = self.multipart.abort_multipart(&key, &grid.mpu).await;
                self.grid(id)
                    .await?
                    .ok_or_else(|| StorageError::other("the upload's grid vanished"))
            }
            Err(e) => {
                let _ = self.multipart.abort_multipart(&key, &grid.mpu).await;
                Err(e)
            }
        }
    }

    /// Claims part `k` for writer `wid`: `false` when another writer has it.
    pub(super) async fn claim_part(&self, id: &UploadId, k: u64, wid: &str) -> StorageResult<bool> {
        let key = rkey(format!("os/{}/p/{k}", id.0))?;
        match self
            .put_record(&key, Bytes::from(wid.to_owned()), RecordMode::Create)
            .await
        {
            Ok(_) => Ok(true),
            Err(StorageError::PreconditionFailed) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives up claims of parts whose writer did not commit (best effort).
    pub(super) async fn release_parts(&self, id: &UploadId, parts: &[u64]) {
        for k in parts {
            if let Ok(key) = rkey(format!("os/{}/p/{k}", id.0)) {
                let _ = self.delete_record(&key).await;
            }
        }
    }

    /// Uploads part `k` of the grid's multipart upload; its etag.
    pub(super) async fn send_part(
        &self,
        id: &UploadId,
        grid: &Grid,
        k: u64,
        data: PutPayload,
    ) -> StorageResult<String> {
        let key = self.file_object(id)?;
        let part = self
            .multipart
            .put_part(&key, &grid.mpu, k as usize, data)
            .await
            .map_err(os_err)?;
        Ok(part.content_id)
    }

    /// Records the parts a writer sent, as it commits.
    pub(super) async fn commit_parts(
        &self,
        id: &UploadId,
        wid: &str,
        parts: Vec<(u64, String, u64)>,
    ) -> StorageResult<()> {
        let key = rkey(format!("os/{}/w/{wid}", id.0))?;
        let value = serde_json::to_vec(&Sent { parts }).map_err(StorageError::backend)?;
        self.put_record(&key, value.into(), RecordMode::Overwrite)
            .await
            .map(drop)
    }

    /// Where the upload's bytes are — its first `size` bytes, or all it received — assembled
    /// now if the upload has a grid and is not assembled yet (see the module docs). Every
    /// byte must have been received.
    pub(super) async fn assembled(
        &self,
        id: &UploadId,
        size: Option<u64>,
    ) -> StorageResult<Source> {
        let done = rkey(format!("os/{}/done", id.0))?;
        let Some(grid) = self.grid(id).await? else {
            return Ok(Source::Chunks);
        };
        let file = self.file_object(id)?;
        if self.get_record(&done).await?.is_some() {
            return Ok(Source::File(file, grid.version));
        }
        let mut sent: std::collections::BTreeMap<u64, (String, u64)> = Default::default();
        for k in self.list_records(&rkey(format!("os/{}/w", id.0))?).await? {
            if let Some(r) = self.get_record(&k).await?
                && let Ok(s) = serde_json::from_slice::<Sent>(&r.value)
            {
                for (k, etag, len) in s.parts {
                    sent.entry(k).or_insert((etag, len));
                }
            }
        }
        let chunks = self.chunks(id).await?;
        let size = size.unwrap_or_else(|| {
            let parts = sent.iter().map(|(k, (_, len))| k * grid.c + len);
            let objects = chunks.iter().map(|c| c.end);
            parts.chain(objects).max().unwrap_or(0)
        });
        let blocks = size.div_ceil(grid.c).max(1);
        if blocks > MAX_PARTS {
            return Err(StorageError::other(
                "too many parts for one multipart upload",
            ));
        }
        // Every block is a committed part or covered by chunk objects, before anything is sent.
        let mut plan = Vec::new();
        for k in 0..blocks {
            let range = k * grid.c..((k + 1) * grid.c).min(size);
            match sent.get(&k) {
                Some((etag, len)) if *len == range.end - range.start => {
                    plan.push((k, Ok(etag.clone())))
                }
                _ => {
                    let pieces = cover(&chunks, range)
                        .ok_or_else(|| StorageError::other("range not received"))?;
                    plan.push((k, Err(pieces)));
                }
            }
        }
        let mut parts = Vec::with_capacity(plan.len());
        for (k, part) in plan {
            let etag = match part {
                Ok(etag) => etag,
                Err(pieces) => {
                    // The fallback: this block's bytes from its chunk objects, as a part.
                    let bytes: Vec<Bytes> = self.pieces_stream(pieces).try_collect().await?;
                    let payload: PutPayload = bytes.into_iter().collect();
                    self.send_part(id, &grid, k, payload).await?
                }
            };
            parts.push(PartId { content_id: etag });
        }
        if let Err(e) = self
            .multipart
            .complete_multipart(&file, &grid.mpu, parts)
            .await
        {
            // Assembled meanwhile by another caller?
            if self.get_record(&done).await?.is_some() {
                return Ok(Source::File(file, grid.version));
            }
            return Err(os_err(e));
        }
        self.put_record(&done, Bytes::from_static(b"1"), RecordMode::Overwrite)
            .await?;
        Ok(Source::File(file, grid.version))
    }

    /// Aborts the upload's multipart upload and deletes its part records (the sweeper, an
    /// abort, after publication).
    pub(super) async fn forget_parts(&self, id: &UploadId) -> StorageResult<()> {
        if let Some(grid) = self.grid(id).await? {
            let file = self.file_object(id)?;
            let _ = self.multipart.abort_multipart(&file, &grid.mpu).await;
        }
        let mine = rkey(format!("os/{}", id.0))?;
        for k in self.list_records(&mine).await? {
            self.delete_record(&k).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_store::TestStore;
    use super::*;
    use crate::path::FilePath;
    use crate::storage::{Claim, PublishOptions, StorageExt, UploadSpec};
    use object_store::ObjectStore;
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    const MIB: u64 = 1 << 20;

    fn data(len: u64) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    fn setup() -> (Arc<TestStore>, Arc<dyn Storage>) {
        let store = Arc::new(TestStore::default());
        let storage: Arc<dyn Storage> = Arc::new(ObjectStoreStorage::new(store.clone()));
        (store, storage)
    }

    /// Writes `[start, end)` of `bytes` through one writer, in 1 MiB frames, and commits.
    async fn chunk(s: &Arc<dyn Storage>, id: &UploadId, bytes: &[u8], start: u64, end: u64) {
        let mut w = s.writer(id, start).await.unwrap();
        for frame in bytes[start as usize..end as usize].chunks(MIB as usize) {
            w.write(Bytes::copy_from_slice(frame)).await.unwrap();
        }
        w.commit().await.unwrap();
    }

    async fn objects_under(store: &TestStore, under: &str) -> Vec<String> {
        let prefix = Path::from(under);
        let listed: Vec<_> = store.list(Some(&prefix)).try_collect().await.unwrap();
        listed.into_iter().map(|o| o.location.to_string()).collect()
    }

    /// Claims, probes a range, publishes, and checks the file, its type and attributes.
    async fn finish(s: &Arc<dyn Storage>, id: &UploadId, path: &FilePath, bytes: &[u8]) {
        assert_eq!(s.claim(id).await.unwrap(), Claim::Won);
        let head: Vec<Bytes> = s
            .read_upload(id, 0..100)
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(head.concat(), &bytes[..100]);
        let options = PublishOptions {
            content_type: "video/mp4".into(),
            attributes: Bytes::from_static(b"{\"file\":1}"),
            ..Default::default()
        };
        let size = bytes.len() as u64;
        let meta = s.publish(id, path, size, options).await.unwrap();
        assert_eq!(meta.size, size);
        let (meta, body) = s.read(path, None).await.unwrap().unwrap();
        let got: Vec<Bytes> = body.try_collect().await.unwrap();
        assert!(got.concat() == bytes, "the published bytes");
        assert_eq!(meta.content_type, "video/mp4");
        assert_eq!(&meta.attributes[..], b"{\"file\":1}");
    }

    /// Chunks of one size, out of order, the short last one included: every byte goes to
    /// the store once, as a part; publication copies the assembled file inside the store.
    #[tokio::test]
    async fn chunks_on_a_grid_are_sent_once() {
        let (store, s) = setup();
        let total = 3 * 6 * MIB + 2 * MIB;
        let bytes = data(total);
        let path = FilePath::new("v/grid.bin").unwrap();
        let up = s
            .open_upload(&path, UploadSpec::Resumable { total })
            .await
            .unwrap();
        for (a, b) in [(12, 18), (0, 6), (18, 20), (6, 12)] {
            chunk(&s, &up.id, &bytes, a * MIB, b * MIB).await;
        }
        let dir = format!(".tower-uploads/uploads/{}/chunks", up.id.0);
        assert!(
            objects_under(&store, &dir).await.is_empty(),
            "no chunk objects"
        );
        assert_eq!(store.part_bytes.load(Ordering::SeqCst), total);
        let small = store.put_bytes.load(Ordering::SeqCst);
        assert!(small < 64 << 10, "only records besides the parts: {small}");
        finish(&s, &up.id, &path, &bytes).await;
        assert_eq!(
            store.part_bytes.load(Ordering::SeqCst),
            total,
            "nothing sent again"
        );
        assert!(store.put_bytes.load(Ordering::SeqCst) < 64 << 10);
        assert_eq!(store.copies.load(Ordering::SeqCst), 1);
        let left = objects_under(&store, &format!(".tower-uploads/uploads/{}", up.id.0)).await;
        assert!(left.is_empty(), "{left:?}");
        let records = s
            .list_records(&RecordKey::new(format!("os/{}", up.id.0)).unwrap())
            .await
            .unwrap();
        assert!(records.is_empty(), "{records:?}");
    }

    /// The short last chunk first (no grid yet: a chunk object), then the others: the grid
    /// comes from the first whole chunk, and the last block is filled from the chunk object
    /// at assembly: read back and sent once more, that block only.
    #[tokio::test]
    async fn a_block_without_its_part_is_filled_from_chunk_objects() {
        let (store, s) = setup();
        let total = 2 * 6 * MIB + MIB;
        let bytes = data(total);
        let path = FilePath::new("tail-first.bin").unwrap();
        let up = s
            .open_upload(&path, UploadSpec::Resumable { total })
            .await
            .unwrap();
        for (a, b) in [(12, 13), (6, 12), (0, 6)] {
            chunk(&s, &up.id, &bytes, a * MIB, b * MIB).await;
        }
        assert_eq!(store.part_bytes.load(Ordering::SeqCst), 12 * MIB);
        finish(&s, &up.id, &path, &bytes).await;
        assert_eq!(store.part_bytes.load(Ordering::SeqCst), total);
    }

    /// Chunks below S3's smallest part never make a grid: chunk objects, and publication
    /// streams them through the server (the fallback).
    #[tokio::test]
    async fn small_chunks_fall_back_to_chunk_objects() {
        let (store, s) = setup();
        let total = 10 * MIB;
        let bytes = data(total);
        let path = FilePath::new("small-chunks.bin").unwrap();
        let up = s
            .open_upload(&path, UploadSpec::Resumable { total })
            .await
            .unwrap();
        for a in [8, 6, 4, 2, 0] {
            chunk(&s, &up.id, &bytes, a * MIB, (a + 2) * MIB).await;
        }
        assert_eq!(store.part_bytes.load(Ordering::SeqCst), 0);
        finish(&s, &up.id, &path, &bytes).await;
        assert_eq!(store.copies.load(Ordering::SeqCst), 0);
    }

    /// Two writers of one block at once: the first to claim its part sends it, the other
    /// writes a chunk object; neither overwrites the other's part.
    #[tokio::test]
    async fn one_part_per_block_across_racing_writers() {
        let (_, s) = setup();
        let total = 12 * MIB;
        let bytes = data(total);
        let path = FilePath::new("race.bin").unwrap();
        let up = s
            .open_upload(&path, UploadSpec::Resumable { total })
            .await
            .unwrap();
        chunk(&s, &up.id, &bytes, 6 * MIB, 12 * MIB).await; // the grid: 6 MiB
        let (a, b) = tokio::join!(
            chunk(&s, &up.id, &bytes, 0, 6 * MIB),
            chunk(&s, &up.id, &bytes, 0, 6 * MIB)
        );
        let ((), ()) = (a, b);
        finish(&s, &up.id, &path, &bytes).await;
    }

    /// A simple upload longer than 16 MiB: 8 MiB parts as it streams, the rest (its length
    /// unknown to the writer) in a chunk object, sent as the last part at assembly. A
    /// writer dropped before its commit gives its claimed parts back.
    #[tokio::test]
    async fn a_long_single_upload_streams_parts() {
        let (store, s) = setup();
        let total = 20 * MIB + 12_345;
        let bytes = data(total);
        let path = FilePath::new("single.bin").unwrap();

        let dropped = s.open_upload(&path, UploadSpec::Single).await.unwrap();
        let mut w = s.writer(&dropped.id, 0).await.unwrap();
        w.write(Bytes::copy_from_slice(&bytes[..17 * MIB as usize]))
            .await
            .unwrap();
        assert_eq!(store.part_bytes.load(Ordering::SeqCst), 16 * MIB);
        drop(w);
        let claim = RecordKey::new(format!("os/{}/p/1", dropped.id.0)).unwrap();
        for _ in 0..100 {
            if s.get_record(&claim).await.unwrap().is_none() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(s.get_record(&claim).await.unwrap().is_none(), "released");
        s.abort(&dropped.id).await.unwrap();

        let up = s.open_upload(&path, UploadSpec::Single).await.unwrap();
        let before = store.part_bytes.load(Ordering::SeqCst);
        chunk(&s, &up.id, &bytes, 0, total).await;
        assert_eq!(store.part_bytes.load(Ordering::SeqCst) - before, 16 * MIB);
        finish(&s, &up.id, &path, &bytes).await;
        assert_eq!(store.part_bytes.load(Ordering::SeqCst) - before, total);
    }
}
