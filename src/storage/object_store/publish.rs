//! Publication, made visible at once under the path's publication lease, so that `Create`
//! and `Update(etag)` hold across instances: an upload assembled from parts (`parts.rs`) is
//! copied inside the store (CopyObject: no byte through the server); chunk objects are
//! streamed through the server into a new object at the file's key.
//!
//! The lease is a record (`publishing/<sha256(path)>`) created create-only — decided by the
//! coordination's records: the store's conditional writes, the database's transactions —
//! holding an owner token and an end time. A lease whose end passed is taken over by
//! compare-and-swap. A holder checks the precondition against the object at the path and
//! completes the staged object, all well within [`PATH_LEASE`]; instances' clocks are
//! assumed to agree within a few seconds (NTP).

use base64::Engine;
use bytes::Bytes;
use object_store::{Attribute, AttributeValue, Attributes};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use object_store::ObjectStoreExt;
use object_store::path::Path;
use std::ops::Range;

use super::multipart::Staged;
use super::objects::{sidecar, sidecar_name};
use super::parts::Source;
use super::{
    INLINE_ATTRS, META_ATTRS, META_ATTRS_REF, META_VERSION, ObjectStoreStorage, RESERVED, cover,
    hex_sha256, os_err,
};
use crate::path::FilePath;
use crate::storage::{
    ObjectMeta, PublishOptions, PutMode, RecordKey, RecordMode, Storage, StorageError,
    StorageResult, UploadId,
};

/// The largest object S3 copies in one request (CopyObject); a bigger assembled file is
/// streamed through the server instead.
const COPY_MAX: u64 = 5 << 30;

/// How long a publication lease lasts: a publisher that died holding one delays the path's
/// next publication by at most this.
pub(super) const PATH_LEASE: Duration = Duration::from_secs(30);
/// How long a publisher waits for the path's lease before it answers an error.
const LEASE_WAIT: Duration = Duration::from_secs(60);

#[derive(Serialize, Deserialize)]
struct LeaseValue {
    owner: String,
    /// Unix milliseconds.
    until: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// How a publication makes its object visible at the file's key.
enum Placement<'a> {
    /// Copy the assembled file inside the store.
    Copy(&'a Path),
    /// Complete the object staged for the key.
    Staged(Staged),
}

/// A held publication lease of one path.
struct PathLease {
    key: RecordKey,
    value: Bytes,
}

impl ObjectStoreStorage {
    /// Publishes the first `size` bytes of the upload at `path` (see the module docs), then
    /// deletes the upload's objects.
    pub(super) async fn publish_chunks(
        &self,
        upload: &UploadId,
        path: &FilePath,
        size: u64,
        options: PublishOptions,
    ) -> StorageResult<ObjectMeta> {
        let key = self.file_key(path)?;
        let meta = match self.assembled(upload, Some(size)).await? {
            Source::File(file, version) if size <= COPY_MAX => {
                self.publish_copy(path, &key, &file, &version, options)
                    .await?
            }
            Source::File(file, _) => {
                let pieces = vec![(file, 0..size)];
                self.publish_stream(upload, path, &key, pieces, options)
                    .await?
            }
            Source::Chunks => {
                let chunks = self.chunks(upload).await?;
                let pieces = cover(&chunks, 0..size)
                    .ok_or_else(|| StorageError::other("publish: the upload is incomplete"))?;
                self.publish_stream(upload, path, &key, pieces, options)
                    .await?
            }
        };
        // The file is published: the upload's objects left now are the sweeper's.
        if let Err(e) = self.forget(upload).await {
            tracing::warn!(upload = %upload, error = %e, "published; its chunks are left to the sweeper");
        }
        Ok(meta)
    }

    /// Publishes an assembled file by copying it inside the store: its content type and
    /// attributes go into the sidecar its metadata names, first.
    async fn publish_copy(
        &self,
        path: &FilePath,
        key: &Path,
        file: &Path,
        version: &str,
        options: PublishOptions,
    ) -> StorageResult<ObjectMeta> {
        let sidecar_key = self.key(&[RESERVED, "attrs", version]);
        let body = sidecar(&options.content_type, &options.attributes);
        self.put_small(&sidecar_key, body).await?;
        let result = self
            .under_lease(path, key, &options.mode, Placement::Copy(file))
            .await;
        if result.is_err() {
            let _ = self.delete_quiet(&sidecar_key).await;
        }
        result
    }

    /// Publishes `pieces` streamed through this server into a new object (a file of at
    /// most one part: one PUT) with its content type and attributes.
    async fn publish_stream(
        &self,
        upload: &UploadId,
        path: &FilePath,
        key: &Path,
        pieces: Vec<(Path, Range<u64>)>,
        options: PublishOptions,
    ) -> StorageResult<ObjectMeta> {
        let dir = self.upload_dir(upload)?;
        let version = crate::id::random_id("v");
        let mut attributes = Attributes::new();
        attributes.insert(
            Attribute::ContentType,
            AttributeValue::from(options.content_type.clone()),
        );
        attributes.insert(
            Attribute::Metadata(META_VERSION.into()),
            AttributeValue::from(version.clone()),
        );
        let b64 = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&options.attributes);
        if b64.len() <= INLINE_ATTRS {
            attributes.insert(Attribute::Metadata(META_ATTRS.into()), b64.into());
        } else {
            let sidecar = self.key(&[RESERVED, "attrs", &version]);
            self.put_small(&sidecar, options.attributes.clone()).await?;
            attributes.insert(
                Attribute::Metadata(META_ATTRS_REF.into()),
                AttributeValue::from(version.clone()),
            );
        }
        let stream = self.pieces_stream(pieces);
        let marker = dir.join("mp").join(format!("final-{version}"));
        let staged = self.stage(key, marker, attributes, stream).await?;
        self.under_lease(path, key, &options.mode, Placement::Staged(staged))
            .await
    }

    /// Under the path's publication lease: checks `mode` against what is at `key`, makes
    /// the new object visible (`placement`; a staged one refused by the check is
    /// discarded), deletes the replaced one's sidecar, and returns the new object's meta.
    async fn under_lease(
        &self,
        path: &FilePath,
        key: &Path,
        mode: &PutMode,
        placement: Placement<'_>,
    ) -> StorageResult<ObjectMeta> {
        let lease = match self.path_lease(path).await {
            Ok(lease) => lease,
            Err(e) => {
                self.discard(placement).await;
                return Err(e);
            }
        };
        let result = async {
            let current = match self.head_key(key).await.and_then(|current| {
                Self::check_mode(mode, current.as_ref().map(|(m, _)| m)).map(|()| current)
            }) {
                Ok(current) => current,
                Err(e) => {
                    self.discard(placement).await;
                    return Err(e);
                }
            };
            match placement {
                Placement::Copy(file) => self.store.copy(file, key).await.map_err(os_err)?,
                Placement::Staged(staged) => self.commit_staged(key, staged).await?,
            }
            if let Some((_, attrs)) = current
                && let Some(r) = sidecar_name(&attrs)
            {
                let _ = self.delete_quiet(&self.key(&[RESERVED, "attrs", &r])).await;
            }
            self.head_key(key)
                .await?
                .map(|(m, _)| m)
                .ok_or(StorageError::NotFound)
        }
        .await;
        self.release(lease).await;
        result
    }

    async fn discard(&self, placement: Placement<'_>) {
        if let Placement::Staged(staged) = placement {
            self.discard_staged(staged).await;
        }
    }

    /// Takes the path's publication lease, waiting (at most [`LEASE_WAIT`]) while another
    /// publisher holds it.
    async fn path_lease(&self, path: &FilePath) -> StorageResult<PathLease> {
        let key = RecordKey::new(format!("publishing/{}", &hex_sha256(path.as_str())[..32]))
            .map_err(StorageError::backend)?;
        let deadline = Instant::now() + LEASE_WAIT;
        let owner = crate::id::random_id("l");
        let mut attempt = 0u32;
        loop {
            let value = serde_json::to_vec(&LeaseValue {
                owner: owner.clone(),
                until: now_ms() + PATH_LEASE.as_millis() as u64,
            })
            .map(Bytes::from)
            .map_err(StorageError::backend)?;
            let taken = match self
                .put_record(&key, value.clone(), RecordMode::Create)
                .await
            {
                Ok(_) => true,
                Err(StorageError::PreconditionFailed) => match self.get_record(&key).await? {
                    Some(held) => {
                        let over = serde_json::from_slice::<LeaseValue>(&held.value)
                            .map_or(true, |l| l.until <= now_ms());
                        over && match self
                            .put_record(&key, value.clone(), RecordMode::Update(held.etag))
                            .await
                        {
                            Ok(_) => true,
                            Err(StorageError::PreconditionFailed) => false,
                            Err(e) => return Err(e),
                        }
                    }
                    None => false, // released meanwhile: try again at once
                },
                Err(e) => return Err(e),
            };
            if taken {
                return Ok(PathLease { key, value });
            }
            if Instant::now() > deadline {
                return Err(StorageError::other(
                    "another publication of this path has not finished",
                ));
            }
            let ms = (5u64 << attempt.min(6)).min(200);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            attempt += 1;
        }
    }

    /// Gives the lease back, if it is still ours (best effort: it ends by itself).
    async fn release(&self, lease: PathLease) {
        if let Ok(Some(held)) = self.get_record(&lease.key).await
            && held.value == lease.value
        {
            let _ = self.delete_record(&lease.key).await;
        }
    }
}
