//! `PostgresRecords`: records in PostgreSQL, decided by its statements (feature `postgres`).
//! The storage conformance suite, check by check, each on a fresh database, with the bytes in
//! an in-memory object store and every record (upload state and ranges, claims, sessions) in
//! PostgreSQL; and record races across separate connection pools (separate instances).
#![cfg(all(feature = "postgres", feature = "object-store"))]

mod common;

use bytes::Bytes;
use common::postgres::{fresh_database, postgres_or_skip};
use std::sync::Arc;
use tower_uploads::storage::{
    ObjectStoreStorage, PostgresRecords, RecordKey, RecordMode, RecordStore, StorageError,
    conformance,
};

async fn storage_on(url: &str) -> Arc<ObjectStoreStorage> {
    let records = PostgresRecords::connect(url).await.expect("connect");
    Arc::new(
        ObjectStoreStorage::from_url("memory://")
            .unwrap()
            .with_records(Arc::new(records)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_with_records_in_postgres() {
    let Some(pg) = postgres_or_skip("conformance_with_records_in_postgres") else {
        return;
    };
    for check in conformance::CHECKS {
        let db = fresh_database(pg).await;
        check.run(storage_on(&db).await).await;
    }
}

/// Eight instances (each its own pool) create one key at once, then update it from one
/// etag at once: exactly one of each wins; a stale etag and a foreign one are refused; the
/// schema is created once although all eight connect at the same time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn races_across_instances() {
    let Some(pg) = postgres_or_skip("races_across_instances") else {
        return;
    };
    let db = fresh_database(pg).await;
    let connects = (0..8).map(|_| PostgresRecords::connect(&db));
    let instances: Vec<PostgresRecords> = futures_util::future::join_all(connects)
        .await
        .into_iter()
        .map(|r| r.expect("connect while others create the schema"))
        .collect();
    let key = RecordKey::new("uploads/u1").unwrap();
    let creates = instances
        .iter()
        .enumerate()
        .map(|(i, r)| r.put_record(&key, Bytes::from(format!("v{i}")), RecordMode::Create));
    let results = futures_util::future::join_all(creates).await;
    let won: Vec<_> = results.iter().filter(|r| r.is_ok()).collect();
    assert_eq!(won.len(), 1, "one create wins: {results:?}");
    assert!(
        results
            .iter()
            .filter(|r| r.is_err())
            .all(|r| matches!(r, Err(StorageError::PreconditionFailed)))
    );
    let first = instances[3].get_record(&key).await.unwrap().unwrap();
    let updates = instances.iter().enumerate().map(|(i, r)| {
        r.put_record(
            &key,
            Bytes::from(format!("w{i}")),
            RecordMode::Update(first.etag.clone()),
        )
    });
    let results = futures_util::future::join_all(updates).await;
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    let stale = instances[0]
        .put_record(&key, Bytes::from("x"), RecordMode::Update(first.etag))
        .await;
    assert!(matches!(stale, Err(StorageError::PreconditionFailed)));
    let foreign = instances[0]
        .put_record(&key, Bytes::from("x"), RecordMode::Update("an etag".into()))
        .await;
    assert!(matches!(foreign, Err(StorageError::PreconditionFailed)));
    // Deleted and created again: the old etag does not name the new record.
    let before = instances[1].get_record(&key).await.unwrap().unwrap();
    assert!(instances[1].delete_record(&key).await.unwrap());
    assert!(!instances[1].delete_record(&key).await.unwrap());
    instances[2]
        .put_record(&key, before.value.clone(), RecordMode::Create)
        .await
        .unwrap();
    let again = instances[4]
        .put_record(&key, Bytes::from("y"), RecordMode::Update(before.etag))
        .await;
    assert!(matches!(again, Err(StorageError::PreconditionFailed)));
    // Listing is by key prefix, segment-wise.
    for k in [
        "uploads/u1/w/a",
        "uploads/u1/w/b",
        "uploads/u10",
        "uploads/u1x",
    ] {
        let k = RecordKey::new(k).unwrap();
        instances[5]
            .put_record(&k, Bytes::from("1"), RecordMode::Overwrite)
            .await
            .unwrap();
    }
    let mut listed: Vec<String> = instances[6]
        .list_records(&key)
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.as_str().to_owned())
        .collect();
    listed.sort();
    assert_eq!(listed, ["uploads/u1/w/a", "uploads/u1/w/b"]);
}
