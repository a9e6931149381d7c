//! Keys, small objects and their metadata: the helpers every operation of
//! [`ObjectStoreStorage`] is built from.

use base64::Engine;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::{StreamExt, TryStreamExt};
use object_store::path::{Path, PathPart};
use object_store::{
    Attribute, Attributes, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload,
};
use std::ops::Range;
use std::sync::Arc;

use super::{ByteStream, ObjectMeta, PutMode, RecordKey, StorageError, StorageResult, UploadId};
use super::{
    Chunk, META_ATTRS, META_ATTRS_REF, META_META_REF, META_VERSION, MultipartMarker,
    ObjectStoreStorage, RESERVED, is_not_found, os_err, system_time,
};
use crate::path::FilePath;

/// The first line of a sidecar holding a content type and attributes (`META_META_REF`).
const SIDECAR: &[u8] = b"tu-meta\n";

/// A sidecar's bytes: the marker, the content type on its own line, the attributes.
pub(super) fn sidecar(content_type: &str, attributes: &[u8]) -> Bytes {
    let mut b = Vec::with_capacity(SIDECAR.len() + content_type.len() + 1 + attributes.len());
    b.extend_from_slice(SIDECAR);
    b.extend_from_slice(content_type.as_bytes());
    b.push(b'\n');
    b.extend_from_slice(attributes);
    Bytes::from(b)
}

/// A sidecar's content type and attributes; `None` when it is not one.
fn parse_sidecar(b: &Bytes) -> Option<(String, Bytes)> {
    let rest = b.strip_prefix(SIDECAR)?;
    let nl = rest.iter().position(|&c| c == b'\n')?;
    let content_type = std::str::from_utf8(&rest[..nl]).ok()?.to_owned();
    let at = SIDECAR.len() + nl + 1;
    Some((content_type, b.slice(at..)))
}

/// The sidecar object an object's metadata names, if any.
pub(super) fn sidecar_name(attrs: &Attributes) -> Option<String> {
    [META_ATTRS_REF, META_META_REF]
        .iter()
        .find_map(|k| attrs.get(&Attribute::Metadata((*k).into())))
        .map(|v| v.to_string())
}

/// Every object under `prefix`.
pub(super) async fn list(
    store: &Arc<dyn ObjectStore>,
    prefix: &Path,
) -> StorageResult<Vec<object_store::ObjectMeta>> {
    store.list(Some(prefix)).try_collect().await.map_err(os_err)
}

impl ObjectStoreStorage {
    // ---- keys ----

    pub(super) fn key(&self, parts: &[&str]) -> Path {
        let mut p = self.root.clone();
        for part in parts {
            p = p.join(PathPart::from(*part));
        }
        p
    }

    pub(super) fn file_key(&self, path: &FilePath) -> StorageResult<Path> {
        if path.segments().next() == Some(RESERVED) {
            return Err(StorageError::ReservedPath(
                "the top-level name .tower-uploads is reserved",
            ));
        }
        let mut p = self.root.clone();
        for seg in path.segments() {
            p = p.join(PathPart::from(seg));
        }
        Ok(p)
    }

    pub(super) fn upload_dir(&self, id: &UploadId) -> StorageResult<Path> {
        // Ids come from this storage; anything else cannot name an upload.
        let ok =
            id.0.len() >= 2 && id.0.len() <= 40 && id.0.bytes().all(|b| b.is_ascii_alphanumeric());
        if !ok {
            return Err(StorageError::NotFound);
        }
        Ok(self.key(&[RESERVED, "uploads", &id.0]))
    }

    pub(super) fn record_key(&self, key: &RecordKey) -> Path {
        let mut p = self.key(&[RESERVED, "records"]);
        for seg in key.as_str().split('/') {
            p = p.join(PathPart::from(seg));
        }
        p
    }

    // ---- small objects ----

    pub(super) async fn get_small(
        &self,
        key: &Path,
    ) -> StorageResult<Option<(Bytes, DateTime<Utc>)>> {
        match self.store.get(key).await {
            Ok(r) => {
                let modified = r.meta.last_modified;
                Ok(Some((r.bytes().await.map_err(os_err)?, modified)))
            }
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(os_err(e)),
        }
    }

    pub(super) async fn put_small(&self, key: &Path, value: Bytes) -> StorageResult<()> {
        self.store
            .put(key, PutPayload::from_bytes(value))
            .await
            .map(|_| ())
            .map_err(os_err)
    }

    pub(super) async fn exists(&self, key: &Path) -> StorageResult<bool> {
        match self.store.head(key).await {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(os_err(e)),
        }
    }

    pub(super) async fn delete_quiet(&self, key: &Path) -> StorageResult<()> {
        match self.store.delete(key).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(os_err(e)),
        }
    }

    pub(super) async fn chunks(&self, id: &UploadId) -> StorageResult<Vec<Chunk>> {
        let dir = self.upload_dir(id)?.join("chunks");
        let mut out = Vec::new();
        for o in list(&self.store, &dir).await? {
            let Some(name) = o.location.filename() else {
                continue;
            };
            let Some(start) = name.split('-').next().and_then(|s| s.parse::<u64>().ok()) else {
                continue;
            };
            out.push(Chunk {
                start,
                end: start.saturating_add(o.size),
                location: o.location,
            });
        }
        Ok(out)
    }

    /// A stream of the bytes of `pieces`, in order, each with one ranged GET.
    pub(super) fn pieces_stream(&self, pieces: Vec<(Path, Range<u64>)>) -> ByteStream {
        let store = self.store.clone();
        futures_util::stream::iter(pieces.into_iter().filter(|(_, r)| r.start < r.end))
            .then(move |(location, range)| {
                let store = store.clone();
                async move {
                    let opts = GetOptions {
                        range: Some(GetRange::Bounded(range)),
                        ..Default::default()
                    };
                    let r = store.get_opts(&location, opts).await.map_err(os_err)?;
                    Ok::<_, StorageError>(r.into_stream().map_err(os_err))
                }
            })
            .try_flatten()
            .boxed()
    }

    /// Our meta of a stored object, from its GET/HEAD result.
    pub(super) async fn meta_of(
        &self,
        meta: &object_store::ObjectMeta,
        attrs: &Attributes,
    ) -> StorageResult<ObjectMeta> {
        let get = |k: &'static str| {
            attrs
                .get(&Attribute::Metadata(k.into()))
                .map(|v| v.to_string())
        };
        let mut content_type = attrs
            .get(&Attribute::ContentType)
            .map(|v| v.to_string())
            .unwrap_or_else(|| "application/octet-stream".into());
        let attributes = if let Some(b64) = get(META_ATTRS) {
            base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(b64.as_bytes())
                .map(Bytes::from)
                .unwrap_or_default()
        } else if let Some(r) = get(META_ATTRS_REF) {
            let key = self.key(&[RESERVED, "attrs", &r]);
            self.get_small(&key)
                .await?
                .map(|(b, _)| b)
                .unwrap_or_default()
        } else if let Some(r) = get(META_META_REF) {
            // Assembled from parts: content type and attributes in the sidecar.
            let key = self.key(&[RESERVED, "attrs", &r]);
            let sidecar = self.get_small(&key).await?.map(|(b, _)| b);
            match sidecar.as_ref().and_then(parse_sidecar) {
                Some((t, a)) => {
                    content_type = t;
                    a
                }
                None => Bytes::new(),
            }
        } else {
            Bytes::new()
        };
        Ok(ObjectMeta {
            size: meta.size,
            etag: get(META_VERSION)
                .or_else(|| meta.e_tag.clone().map(|e| e.trim_matches('"').to_owned()))
                .unwrap_or_default(),
            modified: system_time(meta.last_modified),
            content_type,
            attributes,
        })
    }

    pub(super) async fn head_key(
        &self,
        key: &Path,
    ) -> StorageResult<Option<(ObjectMeta, Attributes)>> {
        let opts = GetOptions {
            head: true,
            ..Default::default()
        };
        match self.store.get_opts(key, opts).await {
            Ok(r) => Ok(Some((
                self.meta_of(&r.meta, &r.attributes).await?,
                r.attributes,
            ))),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(os_err(e)),
        }
    }

    /// Deletes an upload's objects and its part records: its multipart uploads in progress
    /// aborted, its chunks, its assembled file.
    pub(super) async fn forget(&self, id: &UploadId) -> StorageResult<()> {
        self.forget_parts(id).await?;
        let dir = self.upload_dir(id)?;
        for o in list(&self.store, &dir).await? {
            let rel: Vec<_> = o
                .location
                .prefix_match(&dir)
                .map(|p| p.collect())
                .unwrap_or_default();
            if rel.first().map(|p| p.as_ref()) == Some("mp")
                && let Some((bytes, _)) = self.get_small(&o.location).await?
                && let Ok(m) = serde_json::from_slice::<MultipartMarker>(&bytes)
                && let Ok(key) = Path::parse(&m.key)
            {
                let _ = self.multipart.abort_multipart(&key, &m.id).await;
            }
            self.delete_quiet(&o.location).await?;
        }
        Ok(())
    }

    /// Checks a publication's precondition against what is at the path now.
    pub(super) fn check_mode(mode: &PutMode, current: Option<&ObjectMeta>) -> StorageResult<()> {
        match (mode, current) {
            (PutMode::Overwrite, _) => Ok(()),
            (PutMode::Create, None) => Ok(()),
            (PutMode::Update(etag), Some(m)) if m.etag == *etag => Ok(()),
            _ => Err(StorageError::PreconditionFailed),
        }
    }
}
