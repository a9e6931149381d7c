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

/// How a store answered a conditional put.
enum Answer {
    Took(object_store::PutResult),
    Refused,
    /// The store (or its client) does not do conditional puts.
    Unsupported,
}

/// Whether `e` is a store's refusal of a conditional put.
pub(super) fn refused(e: &object_store::Error) -> bool {
    matches!(
        e,
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }
    )
}

/// The probe on `key`, which must not exist.
async fn probe(store: &dyn ObjectStore, key: &Path) -> StorageResult<ConditionalWrites> {
    use ConditionalWrites::{Enforced, Ignored};
    let put = |n: u8, mode: PutMode| async move {
        let payload = PutPayload::from_bytes(Bytes::from(vec![n]));
        match store.put_opts(key, payload, PutOptions::from(mode)).await {
            Ok(r) => Ok(Answer::Took(r)),
            Err(e) if refused(&e) => Ok(Answer::Refused),
            Err(object_store::Error::NotImplemented { .. }) => Ok(Answer::Unsupported),
            Err(e) => Err(os_err(e)),
        }
    };
    let Answer::Took(first) = put(1, PutMode::Create).await? else {
        return Ok(Ignored);
    };
    let Some(etag) = first.e_tag else {
        return Ok(Ignored); // nothing to compare and swap with
    };
    if !matches!(put(2, PutMode::Create).await?, Answer::Refused) {
        return Ok(Ignored);
    }
    let stale = UpdateVersion {
        e_tag: Some("\"tower-uploads-probe-stale\"".into()),
        version: None,
    };
    if !matches!(put(3, PutMode::Update(stale)).await?, Answer::Refused) {
        return Ok(Ignored);
    }
    let current = UpdateVersion {
        e_tag: Some(etag),
        version: first.version,
    };
    Ok(match put(4, PutMode::Update(current)).await? {
        Answer::Took(_) => Enforced,
        Answer::Refused | Answer::Unsupported => Ignored, // its etags cannot be compared
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::object_store::test_store::TestStore;
    use futures_util::StreamExt;
    use object_store::memory::InMemory;
    use std::sync::Arc;

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

        let heedless = Arc::new(TestStore::heedless());
        let storage = ObjectStoreStorage::new(heedless.clone());
        let found = storage.probe_conditional_writes().await.unwrap();
        assert_eq!(found, ConditionalWrites::Ignored);
        assert_eq!(
            heedless.list(None).count().await,
            0,
            "the probe's key is gone"
        );
    }
}
