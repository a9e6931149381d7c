//! Publication: an upload's chunks staged for the file's key, then made visible at once
//! under the path's publication lease, so that `Create` and `Update(etag)` hold across
//! instances.
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

use super::{
    INLINE_ATTRS, META_ATTRS, META_ATTRS_REF, META_VERSION, ObjectStoreStorage, RESERVED, cover,
    hex_sha256,
};
use crate::path::FilePath;
use crate::storage::{
    ObjectMeta, PublishOptions, RecordKey, RecordMode, Storage, StorageError, StorageResult,
    UploadId,
};

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

/// A held publication lease of one path.
struct PathLease {
    key: RecordKey,
    value: Bytes,
}

impl ObjectStoreStorage {
    /// Publishes the first `size` bytes of the upload's chunks at `path` (see the module
    /// docs), then deletes the upload's objects.
    pub(super) async fn publish_chunks(
        &self,
        upload: &UploadId,
        path: &FilePath,
        size: u64,
        options: PublishOptions,
    ) -> StorageResult<ObjectMeta> {
        let key = self.file_key(path)?;
        let dir = self.upload_dir(upload)?;
        let chunks = self.chunks(upload).await?;
        let pieces = cover(&chunks, 0..size)
            .ok_or_else(|| StorageError::other("publish: the upload is incomplete"))?;

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
        let staged = self.stage(&key, marker, attributes, stream).await?;
        let lease = match self.path_lease(path).await {
            Ok(lease) => lease,
            Err(e) => {
                self.discard_staged(staged).await;
                return Err(e);
            }
        };
        let result = async {
            let current = match self.head_key(&key).await {
                Ok(c) => c,
                Err(e) => {
                    self.discard_staged(staged).await;
                    return Err(e);
                }
            };
            if let Err(e) = Self::check_mode(&options.mode, current.as_ref().map(|(m, _)| m)) {
                self.discard_staged(staged).await;
                return Err(e);
            }
            self.commit_staged(&key, staged).await?;
            if let Some((_, attrs)) = current
                && let Some(r) = attrs.get(&Attribute::Metadata(META_ATTRS_REF.into()))
            {
                let _ = self.delete_quiet(&self.key(&[RESERVED, "attrs", r])).await;
            }
            self.head_key(&key)
                .await?
                .map(|(m, _)| m)
                .ok_or(StorageError::NotFound)
        }
        .await;
        self.release(lease).await;
        let meta = result?;
        // The file is published: the upload's objects left now are the sweeper's.
        if let Err(e) = self.forget(upload).await {
            tracing::warn!(upload = %upload, error = %e, "published; its chunks are left to the sweeper");
        }
        Ok(meta)
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
