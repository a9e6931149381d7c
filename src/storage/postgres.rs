//! [`PostgresRecords`]: records in PostgreSQL (feature `postgres`), decided by the
//! database's own atomic statements.
//!
//! One table, created if missing (by one instance at a time: under a transaction-scoped
//! advisory lock):
//!
//! ```sql
//! CREATE SEQUENCE tower_uploads_etag;
//! CREATE TABLE tower_uploads_records (
//!     key   text COLLATE "C" PRIMARY KEY,     -- RecordKey; "C": listing by key range
//!     value bytea  NOT NULL,
//!     etag  bigint NOT NULL DEFAULT nextval('tower_uploads_etag'));
//! ```
//!
//! | [`RecordMode`] | statement | exactly once because |
//! |---|---|---|
//! | `Create` | `INSERT … ON CONFLICT (key) DO NOTHING RETURNING etag` | the primary key |
//! | `Update(etag)` | `UPDATE … SET value, etag = nextval(…) WHERE key = $1 AND etag = $2` | a concurrent update waits for the row lock, then finds another etag |
//! | `Overwrite` | `INSERT … ON CONFLICT (key) DO UPDATE …` | — |
//!
//! An etag is a number from one sequence: never the same for two versions of a key, even
//! after a delete and a re-create.
//!
//! The connection: [`PostgresRecords::connect`] takes a URL
//! (`postgres://USER@HOST:PORT/DB`, or `postgres://USER@/DB?host=/socket/dir` for a Unix
//! socket) and connects without TLS, for a database on the same host or network. For TLS,
//! build a [`deadpool_postgres::Pool`] with the TLS connector of your choice and pass it to
//! [`PostgresRecords::from_pool`].

use async_trait::async_trait;
use bytes::Bytes;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};

use super::{Record, RecordKey, RecordMode, RecordStore, StorageError, StorageResult};

/// Connections a pool made by [`PostgresRecords::connect`] holds at most.
pub const DEFAULT_POOL_SIZE: usize = 16;

const SCHEMA: &str = "
CREATE SEQUENCE IF NOT EXISTS tower_uploads_etag;
CREATE TABLE IF NOT EXISTS tower_uploads_records (
    key   text COLLATE \"C\" PRIMARY KEY,
    value bytea  NOT NULL,
    etag  bigint NOT NULL DEFAULT nextval('tower_uploads_etag'));";
/// The advisory lock that makes creating the schema one instance's work at a time (two
/// `CREATE … IF NOT EXISTS` at once can both try to create).
const SCHEMA_LOCK: i64 = 0x7475_706c_6473; // "tuplds"

const CREATE: &str = "INSERT INTO tower_uploads_records (key, value) VALUES ($1, $2) \
    ON CONFLICT (key) DO NOTHING RETURNING etag";
const OVERWRITE: &str = "INSERT INTO tower_uploads_records (key, value) VALUES ($1, $2) \
    ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, \
    etag = nextval('tower_uploads_etag') RETURNING etag";
const UPDATE: &str = "UPDATE tower_uploads_records \
    SET value = $2, etag = nextval('tower_uploads_etag') \
    WHERE key = $1 AND etag = $3 RETURNING etag";
const GET: &str = "SELECT value, etag FROM tower_uploads_records WHERE key = $1";
const DELETE: &str = "DELETE FROM tower_uploads_records WHERE key = $1";
const LIST: &str = "SELECT key FROM tower_uploads_records WHERE key >= $1 AND key < $2";

/// Records in PostgreSQL: a [`RecordStore`] for
/// [`ObjectStoreStorage::with_records`](super::ObjectStoreStorage::with_records). Cloning
/// shares the pool.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use tower_uploads::storage::{ObjectStoreStorage, PostgresRecords};
/// let records = PostgresRecords::connect("postgres://app@127.0.0.1:5432/app").await?;
/// let storage = ObjectStoreStorage::from_url("s3://my-bucket")?.with_records(Arc::new(records));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresRecords {
    pool: Pool,
}

impl std::fmt::Debug for PostgresRecords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresRecords")
            .field("pool", &self.pool.status())
            .finish()
    }
}

fn pg_err(e: impl std::error::Error + Send + Sync + 'static) -> StorageError {
    StorageError::backend(e)
}

impl PostgresRecords {
    /// Connects (without TLS) to the database at `url` — `postgres://USER[:PASSWORD]@HOST:PORT/DB`,
    /// or with `?host=/socket/dir` for a Unix socket — with a pool of at most
    /// [`DEFAULT_POOL_SIZE`] connections, and creates the table if it is missing.
    pub async fn connect(url: &str) -> StorageResult<PostgresRecords> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StorageError::other(format!("PostgreSQL URL {url:?}: {e}")))?;
        let manager = Manager::from_config(
            config,
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(DEFAULT_POOL_SIZE)
            .build()
            .map_err(pg_err)?;
        PostgresRecords::from_pool(pool).await
    }

    /// Uses `pool` (its TLS and sizes are the caller's), and creates the table if it is
    /// missing.
    pub async fn from_pool(pool: Pool) -> StorageResult<PostgresRecords> {
        let mut client = pool.get().await.map_err(pg_err)?;
        let tx = client.transaction().await.map_err(pg_err)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
            .await
            .map_err(pg_err)?;
        tx.batch_execute(SCHEMA).await.map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        Ok(PostgresRecords { pool })
    }

    async fn client(&self) -> StorageResult<deadpool_postgres::Object> {
        self.pool.get().await.map_err(pg_err)
    }
}

/// An etag as its number; `None` for anything this store never gave out.
fn etag_number(etag: &str) -> Option<i64> {
    etag.parse().ok()
}

#[async_trait]
impl RecordStore for PostgresRecords {
    async fn put_record(
        &self,
        key: &RecordKey,
        value: Bytes,
        mode: RecordMode,
    ) -> StorageResult<String> {
        let client = self.client().await?;
        let (k, v) = (key.as_str(), &value[..]);
        let row = match &mode {
            RecordMode::Create => {
                let st = client.prepare_cached(CREATE).await.map_err(pg_err)?;
                client.query_opt(&st, &[&k, &v]).await
            }
            RecordMode::Overwrite => {
                let st = client.prepare_cached(OVERWRITE).await.map_err(pg_err)?;
                client.query_opt(&st, &[&k, &v]).await
            }
            RecordMode::Update(etag) => {
                let Some(n) = etag_number(etag) else {
                    return Err(StorageError::PreconditionFailed);
                };
                let st = client.prepare_cached(UPDATE).await.map_err(pg_err)?;
                client.query_opt(&st, &[&k, &v, &n]).await
            }
        }
        .map_err(pg_err)?;
        match row {
            Some(row) => Ok(row.try_get::<_, i64>(0).map_err(pg_err)?.to_string()),
            None => Err(StorageError::PreconditionFailed),
        }
    }

    async fn get_record(&self, key: &RecordKey) -> StorageResult<Option<Record>> {
        let client = self.client().await?;
        let st = client.prepare_cached(GET).await.map_err(pg_err)?;
        let row = client
            .query_opt(&st, &[&key.as_str()])
            .await
            .map_err(pg_err)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let value: Vec<u8> = row.try_get(0).map_err(pg_err)?;
        let etag: i64 = row.try_get(1).map_err(pg_err)?;
        Ok(Some(Record {
            value: Bytes::from(value),
            etag: etag.to_string(),
        }))
    }

    async fn delete_record(&self, key: &RecordKey) -> StorageResult<bool> {
        let client = self.client().await?;
        let st = client.prepare_cached(DELETE).await.map_err(pg_err)?;
        let n = client
            .execute(&st, &[&key.as_str()])
            .await
            .map_err(pg_err)?;
        Ok(n > 0)
    }

    async fn list_records(&self, prefix: &RecordKey) -> StorageResult<Vec<RecordKey>> {
        // `prefix/…` is the byte range [prefix + "/", prefix + "0") under the "C" collation
        // ('0' follows '/').
        let (low, high) = (format!("{prefix}/"), format!("{prefix}0"));
        let client = self.client().await?;
        let st = client.prepare_cached(LIST).await.map_err(pg_err)?;
        let rows = client
            .query(&st, &[&low.as_str(), &high.as_str()])
            .await
            .map_err(pg_err)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let k: String = row.try_get(0).map_err(pg_err)?;
            if let Ok(k) = RecordKey::new(k) {
                out.push(k);
            }
        }
        Ok(out)
    }
}
