//! Multipart uploads and staged bodies: how a large body reaches the store in parts.

use bytes::Bytes;
use futures_util::TryStreamExt;
use object_store::multipart::PartId;
use object_store::path::Path;
use object_store::{
    Attributes, MultipartId, ObjectStore, PutMultipartOptions, PutOptions, PutPayload,
};

use super::{ByteStream, StorageError, StorageResult};
use super::{MultipartMarker, ObjectStoreStorage, PART_SIZE, os_err};

/// A multipart upload: tracked (its id recorded under the upload, so that an abandoned one is
/// aborted with its upload) where the store lets us set attributes at creation, else the
/// store's own handle.
pub(super) enum Multipart {
    Tracked {
        key: Path,
        id: MultipartId,
        marker: Path,
        parts: Vec<PartId>,
    },
    Handle(Box<dyn object_store::MultipartUpload>),
}

impl ObjectStoreStorage {
    pub(super) async fn start_multipart(
        &self,
        key: &Path,
        marker: Path,
        attributes: Attributes,
    ) -> StorageResult<Multipart> {
        let opts = PutMultipartOptions {
            attributes: attributes.clone(),
            ..Default::default()
        };
        match self.multipart.create_multipart_opts(key, opts).await {
            Ok(id) => {
                let m = MultipartMarker {
                    key: key.to_string(),
                    id: id.clone(),
                };
                let body = serde_json::to_vec(&m).map_err(StorageError::backend)?;
                self.put_small(&marker, body.into()).await?;
                Ok(Multipart::Tracked {
                    key: key.clone(),
                    id,
                    marker,
                    parts: Vec::new(),
                })
            }
            Err(object_store::Error::NotSupported { .. })
            | Err(object_store::Error::NotImplemented { .. }) => {
                let opts = PutMultipartOptions {
                    attributes,
                    ..Default::default()
                };
                Ok(Multipart::Handle(
                    self.store
                        .put_multipart_opts(key, opts)
                        .await
                        .map_err(os_err)?,
                ))
            }
            Err(e) => Err(os_err(e)),
        }
    }

    pub(super) async fn put_part(&self, mp: &mut Multipart, data: PutPayload) -> StorageResult<()> {
        match mp {
            Multipart::Tracked { key, id, parts, .. } => {
                let part = self
                    .multipart
                    .put_part(key, id, parts.len(), data)
                    .await
                    .map_err(os_err)?;
                parts.push(part);
                Ok(())
            }
            Multipart::Handle(h) => h.put_part(data).await.map_err(os_err),
        }
    }

    pub(super) async fn complete(&self, mp: Multipart) -> StorageResult<()> {
        match mp {
            Multipart::Tracked {
                key,
                id,
                marker,
                parts,
            } => {
                self.multipart
                    .complete_multipart(&key, &id, parts)
                    .await
                    .map_err(os_err)?;
                self.delete_quiet(&marker).await
            }
            Multipart::Handle(mut h) => h.complete().await.map(|_| ()).map_err(os_err),
        }
    }

    pub(super) async fn abort_multipart(&self, mp: Multipart) {
        match mp {
            Multipart::Tracked {
                key, id, marker, ..
            } => {
                let _ = self.multipart.abort_multipart(&key, &id).await;
                let _ = self.delete_quiet(&marker).await;
            }
            Multipart::Handle(mut h) => {
                let _ = h.abort().await;
            }
        }
    }
}

/// Gathers frames into parts of exactly [`PART_SIZE`] bytes.
#[derive(Default)]
pub(super) struct PartBuffer {
    pub(super) frames: Vec<Bytes>,
    pub(super) len: usize,
}

impl PartBuffer {
    pub(super) fn push(&mut self, b: Bytes) {
        self.len += b.len();
        if !b.is_empty() {
            self.frames.push(b);
        }
    }

    /// The next full part, if there is one.
    pub(super) fn take_part(&mut self) -> Option<PutPayload> {
        self.take_exact(PART_SIZE)
    }

    /// The first `n` bytes, if there are that many.
    pub(super) fn take_exact(&mut self, n: usize) -> Option<PutPayload> {
        if self.len < n {
            return None;
        }
        let mut out = Vec::new();
        let mut need = n;
        while need > 0 {
            let mut f = self.frames.remove(0);
            if f.len() > need {
                let rest = f.split_off(need);
                self.frames.insert(0, rest);
            }
            need -= f.len();
            out.push(f);
        }
        self.len -= n;
        Some(out.into_iter().collect())
    }

    pub(super) fn take_rest(&mut self) -> PutPayload {
        self.len = 0;
        std::mem::take(&mut self.frames).into_iter().collect()
    }
}

/// An object written but not yet visible: the bytes of a small one, or a multipart upload
/// whose parts are all uploaded.
pub(super) enum Staged {
    Small(PutPayload, Attributes),
    Multi(Multipart),
}

impl ObjectStoreStorage {
    /// Uploads `stream` for `key`: kept in memory when it fits in one part, else as the parts
    /// of a multipart upload. Nothing is visible at `key` until [`Self::commit_staged`].
    pub(super) async fn stage(
        &self,
        key: &Path,
        marker: Path,
        attributes: Attributes,
        mut stream: ByteStream,
    ) -> StorageResult<Staged> {
        let mut buf = PartBuffer::default();
        let mut mp: Option<Multipart> = None;
        let result: StorageResult<()> = async {
            while let Some(frame) = stream.try_next().await? {
                buf.push(frame);
                while let Some(part) = buf.take_part() {
                    if mp.is_none() {
                        mp = Some(
                            self.start_multipart(key, marker.clone(), attributes.clone())
                                .await?,
                        );
                    }
                    if let Some(m) = mp.as_mut() {
                        self.put_part(m, part).await?;
                    }
                }
            }
            Ok(())
        }
        .await;
        let rest = buf.take_rest();
        match (result, mp) {
            (Err(e), Some(m)) => {
                self.abort_multipart(m).await;
                Err(e)
            }
            (Err(e), None) => Err(e),
            (Ok(()), None) => Ok(Staged::Small(rest, attributes)),
            (Ok(()), Some(mut m)) => {
                if rest.content_length() > 0
                    && let Err(e) = self.put_part(&mut m, rest).await
                {
                    self.abort_multipart(m).await;
                    return Err(e);
                }
                Ok(Staged::Multi(m))
            }
        }
    }

    /// Makes a staged object visible at `key`, atomically.
    pub(super) async fn commit_staged(&self, key: &Path, staged: Staged) -> StorageResult<()> {
        match staged {
            Staged::Small(payload, attributes) => {
                let opts = PutOptions {
                    attributes,
                    ..Default::default()
                };
                self.store
                    .put_opts(key, payload, opts)
                    .await
                    .map(|_| ())
                    .map_err(os_err)
            }
            Staged::Multi(m) => self.complete(m).await,
        }
    }

    pub(super) async fn discard_staged(&self, staged: Staged) {
        if let Staged::Multi(m) = staged {
            self.abort_multipart(m).await;
        }
    }
}
