//! Whether a store enforces conditional writes: the startup probe of issue 21's coordination
//! on the store's own create-only and compare-and-swap puts.
//!
//! S3 enforces `If-None-Match: *` and `If-Match` on `PutObject` (since 2024), as do GCS, Azure,
//! Cloudflare R2, MinIO and Ceph; `object_store` sends them for `PutMode::Create` and
//! `PutMode::Update`. Garage accepts the headers and ignores them. A store is trusted with
//! exactly-once decisions only when it has just refused, on a fresh key, a second create-only
//! put and an update with a stale etag, and accepted an update with the right one. One run
//! of the probe cannot show that the store decides *races* atomically; a store that honours
//! the headers one request at a time but not under concurrency passes it.

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload, UpdateVersion};

use super::{ObjectStoreStorage, RESERVED, os_err};
use crate::storage::StorageResult;

/// What [`ObjectStoreStorage::probe_conditional_writes`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionalWrites {
    /// The store refused a second create-only put and a stale update, and took a current one.
    Enforced,
    /// The store took a put that a condition should have refused, or does not support them:
    /// exactly-once decisions need a coordinator of their own.
    Ignored,
}

impl ObjectStoreStorage {
    /// Writes a fresh key under `.tower-uploads/probe/` create-only twice, then updates it with
    /// a stale etag and with its own, and deletes it: [`ConditionalWrites::Enforced`] only when
    /// the store refused both the second create and the stale update and took the current one.
    ///
    /// # Errors
    ///
    /// The store failed otherwise (unreachable, credentials refused, …).
    pub async fn probe_conditional_writes(&self) -> StorageResult<ConditionalWrites> {
        let key = self.key(&[RESERVED, "probe", &crate::id::random_id("")]);
        let found = probe(&*self.store, &key).await;
        let _ = self.delete_quiet(&key).await; // best effort; the key is unique
        found
    }
}

/// The probe on `key`, which must not exist.
async fn probe(store: &dyn ObjectStore, key: &Path) -> StorageResult<ConditionalWrites> {
    use ConditionalWrites::{Enforced, Ignored};
    let put = |n: u8, mode: PutMode| async move {
        let payload = PutPayload::from_bytes(Bytes::from(vec![n]));
        store.put_opts(key, payload, PutOptions::from(mode)).await
    };
    let refused = |e: &object_store::Error| {
        matches!(
            e,
            object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }
        )
    };
    let first = match put(1, PutMode::Create).await {
        Ok(r) => r,
        Err(object_store::Error::NotImplemented { .. }) => return Ok(Ignored),
        Err(e) => return Err(os_err(e)),
    };
    match put(2, PutMode::Create).await {
        Ok(_) => return Ok(Ignored),
        Err(e) if refused(&e) => {}
        Err(object_store::Error::NotImplemented { .. }) => return Ok(Ignored),
        Err(e) => return Err(os_err(e)),
    }
    let Some(etag) = first.e_tag else {
        return Ok(Ignored); // nothing to compare and swap with
    };
    let stale = UpdateVersion {
        e_tag: Some("\"tower-uploads-probe-stale\"".into()),
        version: None,
    };
    match put(3, PutMode::Update(stale)).await {
        Ok(_) => return Ok(Ignored),
        Err(e) if refused(&e) => {}
        Err(object_store::Error::NotImplemented { .. }) => return Ok(Ignored),
        Err(e) => return Err(os_err(e)),
    }
    let current = UpdateVersion {
        e_tag: Some(etag),
        version: first.version,
    };
    match put(4, PutMode::Update(current)).await {
        Ok(_) => Ok(Enforced),
        Err(e) if refused(&e) => Ok(Ignored), // its etags cannot be compared
        Err(object_store::Error::NotImplemented { .. }) => Ok(Ignored),
        Err(e) => Err(os_err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use futures_util::stream::BoxStream;
    use object_store::memory::InMemory;
    use std::sync::Arc;

    /// An in-memory store that takes every put as a plain one, as Garage does.
    #[derive(Debug)]
    struct Heedless(InMemory);

    impl std::fmt::Display for Heedless {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Heedless")
        }
    }

    #[async_trait::async_trait]
    impl ObjectStore for Heedless {
        async fn put_opts(
            &self,
            location: &Path,
            payload: PutPayload,
            mut opts: PutOptions,
        ) -> object_store::Result<object_store::PutResult> {
            opts.mode = PutMode::Overwrite;
            self.0.put_opts(location, payload, opts).await
        }
        async fn put_multipart_opts(
            &self,
            location: &Path,
            opts: object_store::PutMultipartOptions,
        ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
            self.0.put_multipart_opts(location, opts).await
        }
        async fn get_opts(
            &self,
            location: &Path,
            options: object_store::GetOptions,
        ) -> object_store::Result<object_store::GetResult> {
            self.0.get_opts(location, options).await
        }
        fn delete_stream(
            &self,
            locations: BoxStream<'static, object_store::Result<Path>>,
        ) -> BoxStream<'static, object_store::Result<Path>> {
            self.0.delete_stream(locations)
        }
        fn list(
            &self,
            prefix: Option<&Path>,
        ) -> BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
            self.0.list(prefix)
        }
        async fn list_with_delimiter(
            &self,
            prefix: Option<&Path>,
        ) -> object_store::Result<object_store::ListResult> {
            self.0.list_with_delimiter(prefix).await
        }
        async fn copy_opts(
            &self,
            from: &Path,
            to: &Path,
            options: object_store::CopyOptions,
        ) -> object_store::Result<()> {
            self.0.copy_opts(from, to, options).await
        }
    }

    /// `InMemory` enforces conditional puts; a store that takes them as plain puts does not;
    /// either way the probe leaves nothing behind.
    #[tokio::test]
    async fn the_probe_tells_enforcing_stores_from_heedless_ones() {
        let enforcing = Arc::new(InMemory::new());
        let storage = ObjectStoreStorage::new(enforcing.clone());
        let found = storage.probe_conditional_writes().await.unwrap();
        assert_eq!(found, ConditionalWrites::Enforced);
        assert_eq!(
            enforcing.list(None).count().await,
            0,
            "the probe's key is gone"
        );

        let heedless = Heedless(InMemory::new());
        let key = Path::from("probe/x");
        assert_eq!(
            probe(&heedless, &key).await.unwrap(),
            ConditionalWrites::Ignored
        );
    }
}
