//! Who decides the records' create-only and compare-and-swap writes — and so, through the
//! crate's coordination on records (`storage/coord`), every exactly-once step of uploads:
//!
//! - [`Deciders::Store`] (the default): the store's own conditional writes, where it enforces
//!   them ([`ConditionalWrites::Enforced`], probed once per storage, at the first record
//!   operation): create-only is `If-None-Match: *`, compare-and-swap is `If-Match` on the
//!   store's etag. A store that ignores them is never trusted with them: every record
//!   operation fails, saying so.
//! - [`Deciders::SingleInstance`]: this process, under a mutex per key (64 stripes); the
//!   records are kept in the bucket with plain writes, their etags digests of their values.
//! - [`Deciders::External`]: another [`RecordStore`] (PostgreSQL); bytes stay in the store.
//!
//! A conditional write whose acknowledgement was lost and that the client then retried (the
//! S3 client retries by itself) is refused by the store, as the first attempt took effect:
//! a refused write is read back, and a record that carries this write's token is taken as
//! this write's. Every record object begins with its write's token (`tu-rec <token>\n`,
//! stripped on reading), so two writers of the same value — two spenders of one session
//! key, both writing `{}` — are still told apart.

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use std::sync::Arc;

use super::objects::list;
use super::probe::refused;
use super::{ConditionalWrites, ObjectStoreStorage, RESERVED, is_not_found, os_err};
use crate::storage::{Record, RecordKey, RecordMode, RecordStore, StorageError, StorageResult};

/// What a record object written by a conditional write begins with, then its token and a
/// newline.
const TOKEN_TAG: &[u8] = b"tu-rec ";

/// A stored record's write token and value (a record written without one: no token).
fn untokened(stored: Bytes) -> (Option<Bytes>, Bytes) {
    if let Some(rest) = stored.strip_prefix(TOKEN_TAG)
        && let Some(nl) = rest.iter().position(|&b| b == b'\n')
    {
        let at = TOKEN_TAG.len();
        return (Some(stored.slice(at..at + nl)), stored.slice(at + nl + 1..));
    }
    (None, stored)
}

/// Who decides the records' conditional writes (see the module docs).
#[derive(Clone, Default)]
pub(super) enum Deciders {
    #[default]
    Store,
    SingleInstance(Arc<Stripes>),
    External(Arc<dyn RecordStore>),
}

/// One async mutex per stripe of record keys.
pub(super) struct Stripes([tokio::sync::Mutex<()>; 64]);

impl Default for Stripes {
    fn default() -> Self {
        Stripes(std::array::from_fn(|_| tokio::sync::Mutex::new(())))
    }
}

impl Stripes {
    async fn lock(&self, key: &RecordKey) -> tokio::sync::MutexGuard<'_, ()> {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let h = BuildHasherDefault::<DefaultHasher>::default().hash_one(key.as_str());
        self.0[(h % 64) as usize].lock().await
    }
}

impl ObjectStoreStorage {
    pub(super) async fn records_put(
        &self,
        key: &RecordKey,
        value: Bytes,
        mode: RecordMode,
    ) -> StorageResult<String> {
        let object = self.record_key(key);
        match &self.deciders {
            Deciders::External(r) => r.put_record(key, value, mode).await,
            Deciders::SingleInstance(stripes) => {
                if mode == RecordMode::Overwrite {
                    return self.put_plain(&object, value).await;
                }
                let _decided = stripes.lock(key).await;
                self.put_checked(&object, value, mode).await
            }
            Deciders::Store => {
                self.trusted().await?;
                self.put_conditional(&object, value, mode).await
            }
        }
    }

    pub(super) async fn records_get(&self, key: &RecordKey) -> StorageResult<Option<Record>> {
        let object = self.record_key(key);
        match &self.deciders {
            Deciders::External(r) => r.get_record(key).await,
            Deciders::Store => {
                self.trusted().await?;
                self.get_tagged(&object).await
            }
            Deciders::SingleInstance(_) => {
                Ok(self.get_small(&object).await?.map(|(b, _)| Record::new(b)))
            }
        }
    }

    pub(super) async fn records_delete(&self, key: &RecordKey) -> StorageResult<bool> {
        match &self.deciders {
            Deciders::External(r) => return r.delete_record(key).await,
            Deciders::Store => self.trusted().await?,
            Deciders::SingleInstance(_) => {}
        }
        let object = self.record_key(key);
        if !self.exists(&object).await? {
            return Ok(false);
        }
        self.delete_quiet(&object).await?;
        Ok(true)
    }

    pub(super) async fn records_list(&self, prefix: &RecordKey) -> StorageResult<Vec<RecordKey>> {
        match &self.deciders {
            Deciders::External(r) => return r.list_records(prefix).await,
            Deciders::Store => self.trusted().await?,
            Deciders::SingleInstance(_) => {}
        }
        let base = self.key(&[RESERVED, "records"]);
        let mut out = Vec::new();
        for o in list(&self.store, &self.record_key(prefix)).await? {
            let Some(rel) = o.location.prefix_match(&base) else {
                continue;
            };
            let rel: Vec<String> = rel.map(|p| p.as_ref().to_owned()).collect();
            if let Ok(k) = RecordKey::new(rel.join("/")) {
                out.push(k);
            }
        }
        Ok(out)
    }

    /// `Ok` when the store enforces conditional writes (probed once); else the error every
    /// record operation answers: such a store is never trusted with them.
    async fn trusted(&self) -> StorageResult<()> {
        match self.conditional_writes().await? {
            ConditionalWrites::Enforced => Ok(()),
            ConditionalWrites::Ignored => Err(StorageError::other(
                "the object store ignores conditional writes (If-None-Match / If-Match), so it \
                 cannot decide which instance finalizes an upload: keep the records elsewhere \
                 (ObjectStoreStorage::with_records, e.g. PostgresRecords) or run one instance \
                 (ObjectStoreStorage::single_instance)",
            )),
        }
    }

    /// A plain write; the etag is the value's digest.
    async fn put_plain(&self, object: &Path, value: Bytes) -> StorageResult<String> {
        let etag = Record::etag_of(&value);
        self.put_small(object, value).await?;
        Ok(etag)
    }

    /// Create or update, read then written: the caller excludes every other decider of
    /// this key (etags are digests of the values).
    async fn put_checked(
        &self,
        object: &Path,
        value: Bytes,
        mode: RecordMode,
    ) -> StorageResult<String> {
        let current = self.get_small(object).await?;
        match (&mode, current) {
            (RecordMode::Create, None) => {}
            (RecordMode::Update(want), Some((have, _))) if Record::etag_of(&have) == *want => {}
            _ => return Err(StorageError::PreconditionFailed),
        }
        self.put_plain(object, value).await
    }
}

impl ObjectStoreStorage {
    /// Whether the store enforces conditional writes: probed at the first call, then kept
    /// (shared by the storage's clones).
    pub(super) async fn conditional_writes(&self) -> StorageResult<ConditionalWrites> {
        self.conditional
            .get_or_try_init(|| self.probe_conditional_writes())
            .await
            .copied()
    }

    /// A record's value and the store's etag of it.
    pub(super) async fn get_tagged(&self, object: &Path) -> StorageResult<Option<Record>> {
        Ok(self.get_with_token(object).await?.map(|(record, _)| record))
    }

    /// A record's value, the store's etag of it, and its write's token.
    async fn get_with_token(
        &self,
        object: &Path,
    ) -> StorageResult<Option<(Record, Option<Bytes>)>> {
        match self.store.get(object).await {
            Ok(r) => {
                let etag = r.meta.e_tag.clone();
                let stored = r.bytes().await.map_err(os_err)?;
                let (token, value) = untokened(stored);
                let record = match etag {
                    Some(etag) => Record { value, etag },
                    None => Record::new(value),
                };
                Ok(Some((record, token)))
            }
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(os_err(e)),
        }
    }

    /// `put_record` on a store that enforces conditional writes; returns the store's etag.
    pub(super) async fn put_conditional(
        &self,
        object: &Path,
        value: Bytes,
        mode: RecordMode,
    ) -> StorageResult<String> {
        let put_mode = match &mode {
            RecordMode::Overwrite => PutMode::Overwrite,
            RecordMode::Create => PutMode::Create,
            RecordMode::Update(etag) => PutMode::Update(UpdateVersion {
                e_tag: Some(etag.clone()),
                version: None,
            }),
        };
        let token = Bytes::from(crate::id::random_id("w"));
        let payload = PutPayload::from_iter([
            Bytes::from_static(TOKEN_TAG),
            token.clone(),
            Bytes::from_static(b"\n"),
            value,
        ]);
        match self
            .store
            .put_opts(object, payload, PutOptions::from(put_mode))
            .await
        {
            Ok(r) => match r.e_tag {
                Some(etag) => Ok(etag),
                // No etag in the answer: the one the store reports on reading.
                None => self.etag_of_own(object, &token).await,
            },
            // Refused, or (an update) no such record: unless a retry of this write was.
            Err(e) if refused(&e) || matches!(e, object_store::Error::NotFound { .. }) => {
                self.etag_of_own(object, &token).await
            }
            Err(e) => Err(os_err(e)),
        }
    }

    /// The etag of the record at `object` if this write (`token`) made it (a retried attempt
    /// was refused), else [`StorageError::PreconditionFailed`].
    async fn etag_of_own(&self, object: &Path, token: &Bytes) -> StorageResult<String> {
        match self.get_with_token(object).await? {
            Some((r, Some(t))) if t == *token => Ok(r.etag),
            _ => Err(StorageError::PreconditionFailed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::object_store::test_store::TestStore;
    use crate::storage::{RecordKey, Storage};
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    /// On a store that enforces conditional writes, records are decided by them: a retried
    /// create or update whose first attempt took effect is this write's; another writer's
    /// create or a stale update is refused; the etags are the store's.
    #[tokio::test]
    async fn conditional_records_survive_lost_acknowledgements() {
        let store = Arc::new(TestStore::default());
        let storage = ObjectStoreStorage::new(store.clone());
        assert_eq!(
            storage.conditional_writes().await.unwrap(),
            ConditionalWrites::Enforced
        );
        let key = RecordKey::new("sessions/a").unwrap();
        store.lose_next.store(true, Ordering::SeqCst);
        let e1 = storage
            .put_record(&key, Bytes::from_static(b"one token-1"), RecordMode::Create)
            .await
            .expect("a create whose answer was lost is still this write's");
        let got = storage.get_record(&key).await.unwrap().unwrap();
        assert_eq!((&got.value[..], &got.etag), (&b"one token-1"[..], &e1));
        let other = storage
            .put_record(&key, Bytes::from_static(b"one token-2"), RecordMode::Create)
            .await;
        assert!(matches!(other, Err(StorageError::PreconditionFailed)));
        // The same value from another writer (two spenders of one session key) is refused
        // too: each write carries its own token.
        let same = storage
            .put_record(&key, Bytes::from_static(b"one token-1"), RecordMode::Create)
            .await;
        assert!(matches!(same, Err(StorageError::PreconditionFailed)));
        store.lose_next.store(true, Ordering::SeqCst);
        let e2 = storage
            .put_record(
                &key,
                Bytes::from_static(b"two token-1"),
                RecordMode::Update(e1.clone()),
            )
            .await
            .expect("an update whose answer was lost is still this write's");
        assert_ne!(e1, e2);
        let stale = storage
            .put_record(
                &key,
                Bytes::from_static(b"three token-2"),
                RecordMode::Update(e1),
            )
            .await;
        assert!(matches!(stale, Err(StorageError::PreconditionFailed)));
        let missing = RecordKey::new("sessions/b").unwrap();
        let update_missing = storage
            .put_record(&missing, Bytes::from_static(b"x"), RecordMode::Update(e2))
            .await;
        assert!(matches!(
            update_missing,
            Err(StorageError::PreconditionFailed)
        ));
        assert_eq!(
            storage.get_record(&key).await.unwrap().unwrap().value,
            Bytes::from_static(b"two token-1")
        );
    }
}

#[cfg(test)]
mod races {
    use super::*;
    use crate::path::FilePath;
    use crate::storage::object_store::test_store::TestStore;
    use crate::storage::{Claim, Storage, StorageExt, UploadSpec};
    use std::sync::atomic::Ordering;

    /// Sixteen claimers of one upload at once, on a store that enforces conditional writes
    /// atomically (object_store's `InMemory`), the first conditional write of each round
    /// sent twice (its answer lost, the client's retry refused): one `Won` per round.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn racing_claimers_with_lost_acknowledgements() {
        let store = Arc::new(TestStore::default());
        let s: Arc<dyn Storage> = Arc::new(ObjectStoreStorage::new(store.clone()));
        for round in 0..4 {
            let path = FilePath::new(format!("race/{round}.bin")).unwrap();
            let up = s
                .open_upload(&path, UploadSpec::Resumable { total: 3 })
                .await
                .unwrap();
            let mut w = s.writer(&up.id, 0).await.unwrap();
            w.write(Bytes::from_static(b"abc")).await.unwrap();
            w.commit().await.unwrap();
            store.lose_next.store(true, Ordering::SeqCst);
            let claims = (0..16).map(|_| {
                let (s, id) = (s.clone(), up.id.clone());
                tokio::spawn(async move { s.claim(&id).await.unwrap() })
            });
            let mut won = 0;
            for c in futures_util::future::join_all(claims).await {
                if c.unwrap() == Claim::Won {
                    won += 1;
                }
            }
            assert_eq!(won, 1, "round {round}");
            s.abort(&up.id).await.unwrap();
        }
    }
}
