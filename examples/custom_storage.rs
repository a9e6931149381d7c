//! A storage backend of your own: [`SqliteStorage`] implements the crate's `Storage` trait
//! (its nine methods) over one SQLite database — published files, the staged bytes of
//! uploads, records — importing only `tower_uploads::storage::prelude::*`, `rusqlite`,
//! `tokio` and `std`; `main` serves the upload endpoints over it with axum.
//! `tests/custom_storage.rs` runs the crate's conformance suite on it.
//!
//! ```text
//! cargo run --example custom_storage -- --db ./uploads.sqlite3 --listen 127.0.0.1:3000 --key demo-key
//! curl -X PUT localhost:3000/hello.txt -H 'Authorization: Bearer demo-key' -d 'hi'
//! curl localhost:3000/hello.txt
//! ```
//!
//! Prints `listening on http://ADDR` once it accepts connections. Tables (times in Unix ns):
//!
//! ```text
//! files(path PK, blob, size, etag, modified, content_type, attributes)   published files
//! blocks(owner, idx, data) PK(owner, idx)   bytes [idx MiB, idx MiB + len(data)) of owner
//! records(key PK, value)
//! ```
//!
//! How the contract is kept:
//! - the blocks of upload `id` are `owner = id`; `publish_upload` points `files.blob` at
//!   that id in one transaction (zero-copy), deleting the old version's blocks; upload ids
//!   are the crate's, never reused, so a file's blocks never meet a new upload's, and
//!   `delete_upload` leaves the blocks of a published file alone;
//! - a create-only record is an `INSERT` of a missing key, an update one of a key whose
//!   value still has the etag read (etags are digests of the values), each in a transaction:
//!   on these the crate builds a path's one upload, the received ranges and the one claim;
//! - the database is in WAL mode and every `read` stream holds a read transaction on a
//!   connection of its own: it reads the snapshot it started on, whatever is published or
//!   deleted meanwhile, one block per frame, as it is polled.

use rusqlite::types::FromSql;
use rusqlite::{Connection, OptionalExtension, Params, Row, ToSql, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, UNIX_EPOCH};
use tower_uploads::storage::prelude::*;

/// Bytes per `blocks` row, the most a writer buffers and the largest frame a read yields.
const BLOCK: u64 = 1 << 20;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, blob TEXT NOT NULL,
  size INTEGER NOT NULL, etag TEXT NOT NULL, modified INTEGER NOT NULL,
  content_type TEXT NOT NULL, attributes BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS files_blob ON files (blob);
CREATE TABLE IF NOT EXISTS blocks (owner TEXT NOT NULL, idx INTEGER NOT NULL,
  data BLOB NOT NULL, PRIMARY KEY (owner, idx));
CREATE TABLE IF NOT EXISTS records (key TEXT PRIMARY KEY, value BLOB NOT NULL);";

const META: &str =
    "SELECT size, etag, modified, content_type, attributes, blob FROM files WHERE path = ?1";
const DROP_FILE_BLOCKS: &str =
    "DELETE FROM blocks WHERE owner = (SELECT blob FROM files WHERE path = ?1)";
/// Whether the blocks of `?1` are a published file's.
const PUBLISHED: &str = "SELECT EXISTS (SELECT 1 FROM files WHERE blob = ?1)";

/// A [`Storage`] in one SQLite database file, shared by every process that opens it.
#[derive(Clone)]
pub struct SqliteStorage {
    db: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl SqliteStorage {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: impl AsRef<Path>) -> rusqlite::Result<SqliteStorage> {
        let conn = connect(path.as_ref())?;
        conn.execute_batch(SCHEMA)?;
        Ok(SqliteStorage {
            db: Arc::new(Mutex::new(conn)),
            path: path.as_ref().into(),
        })
    }

    /// Runs `f` in an immediate transaction on the shared connection, off the async threads.
    async fn tx<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Res<T> + Send + 'static,
    ) -> StorageResult<T> {
        let db = self.db.clone();
        blocking(move || {
            let mut conn = lock(&db);
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    /// A connection of its own in a read transaction, with the row of `sql` that it sees.
    async fn snapshot<T: Send + 'static>(
        &self,
        sql: &'static str,
        param: impl ToSql + Send + 'static,
        row: fn(&Row) -> rusqlite::Result<T>,
    ) -> StorageResult<Option<(Connection, T)>> {
        let path = self.path.clone();
        blocking(move || {
            let conn = connect(&path)?;
            conn.execute_batch("BEGIN")?;
            let found = conn.query_row(sql, [param], row).optional()?;
            Ok(found.map(|t| (conn, t)))
        })
        .await
    }
}

fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.execute_batch("PRAGMA journal_mode = WAL;")?;
    Ok(conn)
}

fn lock(db: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    db.lock().unwrap_or_else(|e| e.into_inner())
}

/// A failure inside a database closure: SQLite's, or one of the contract.
struct Fail(StorageError);
type Res<T> = Result<T, Fail>;

impl From<rusqlite::Error> for Fail {
    fn from(e: rusqlite::Error) -> Fail {
        Fail(match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => StorageError::StorageFull,
            _ => StorageError::backend(e),
        })
    }
}

impl From<StorageError> for Fail {
    fn from(e: StorageError) -> Fail {
        Fail(e)
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Res<T> + Send + 'static,
) -> StorageResult<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(|Fail(e)| e),
        Err(e) => Err(StorageError::backend(e)),
    }
}

fn now() -> i64 {
    UNIX_EPOCH.elapsed().map_or(0, |d| d.as_nanos() as i64)
}

fn time(nanos: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(nanos as u64)
}

fn meta(r: &Row) -> rusqlite::Result<(ObjectMeta, String)> {
    let meta = ObjectMeta {
        size: r.get(0)?,
        etag: r.get(1)?,
        modified: time(r.get(2)?),
        content_type: r.get(3)?,
        attributes: Bytes::from(r.get::<_, Vec<u8>>(4)?),
    };
    Ok((meta, r.get(5)?))
}

/// The first column of the row of `sql`, if there is one.
fn one<T: FromSql>(c: &Connection, sql: &str, params: impl Params) -> rusqlite::Result<Option<T>> {
    c.query_row(sql, params, |r| r.get(0)).optional()
}

/// `range` of the blocks of `owner`, read through `conn` (in its read transaction) one
/// block-aligned frame at a time as the stream is polled. A hole reads as zeros.
fn frames(conn: Connection, owner: String, range: Range<u64>) -> ByteStream {
    let end = range.end;
    stream::try_unfold(
        (conn, owner, range.start),
        move |(conn, owner, pos)| async move {
            if pos >= end {
                return Ok(None);
            }
            let n = (BLOCK - pos % BLOCK).min(end - pos);
            blocking(move || {
                let sql = "SELECT substr(data, ?1, ?2) FROM blocks WHERE owner = ?3 AND idx = ?4";
                let args = (pos % BLOCK + 1, n, &owner, pos / BLOCK);
                let mut frame: Vec<u8> = one(&conn, sql, args)?.unwrap_or_default();
                frame.resize(n as usize, 0);
                Ok(Some((Bytes::from(frame), (conn, owner, pos + n))))
            })
            .await
        },
    )
    .boxed()
}

#[async_trait]
impl Storage for SqliteStorage {
    async fn head(&self, path: &FilePath) -> StorageResult<Option<ObjectMeta>> {
        let path = path.as_str().to_owned();
        self.tx(move |c| Ok(c.query_row(META, [path], meta).optional()?.map(|m| m.0)))
            .await
    }

    async fn read(
        &self,
        path: &FilePath,
        range: Option<Range<u64>>,
    ) -> StorageResult<Option<(ObjectMeta, ByteStream)>> {
        let found = self.snapshot(META, path.as_str().to_owned(), meta).await?;
        let Some((conn, (meta, blob))) = found else {
            return Ok(None);
        };
        let range = meta.resolve_range(range)?;
        Ok(Some((meta, frames(conn, blob, range))))
    }

    async fn write_upload(
        &self,
        upload: &UploadId,
        offset: u64,
    ) -> StorageResult<Box<dyn UploadWriter>> {
        Ok(Box::new(Writer {
            storage: self.clone(),
            id: upload.0.clone(),
            pos: offset,
            buf: Vec::new(),
        }))
    }

    async fn read_upload(&self, upload: &UploadId, range: Range<u64>) -> StorageResult<ByteStream> {
        let path = self.path.clone();
        let conn = blocking(move || {
            let conn = connect(&path)?;
            conn.execute_batch("BEGIN")?;
            Ok(conn)
        })
        .await?;
        Ok(frames(conn, upload.0.clone(), range))
    }

    async fn publish_upload(
        &self,
        upload: &UploadId,
        path: &FilePath,
        size: u64,
        options: PublishOptions,
    ) -> StorageResult<ObjectMeta> {
        let (id, path) = (upload.0.clone(), path.as_str().to_owned());
        self.tx(move |c| {
            let current: Option<String> =
                one(c, "SELECT etag FROM files WHERE path = ?1", [&path])?;
            let allowed = match &options.mode {
                PutMode::Overwrite => true,
                PutMode::Create => current.is_none(),
                PutMode::Update(etag) => current.as_ref() == Some(etag),
            };
            if !allowed {
                Err(StorageError::PreconditionFailed)?;
            }
            c.execute(DROP_FILE_BLOCKS, [&path])?; // the old version's
            let sql = "DELETE FROM blocks WHERE owner = ?1 AND idx >= ?2";
            c.execute(sql, (&id, size.div_ceil(BLOCK)))?;
            let modified = now();
            let meta = ObjectMeta {
                size,
                etag: format!("{id}.{modified:x}"),
                modified: time(modified),
                content_type: options.content_type,
                attributes: options.attributes,
            };
            let sql = "INSERT OR REPLACE INTO files VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
            let (etag, ty, attributes) = (&meta.etag, &meta.content_type, &meta.attributes[..]);
            c.execute(sql, (&path, &id, size, etag, modified, ty, attributes))?;
            Ok(meta)
        })
        .await
    }

    async fn delete_upload(&self, upload: &UploadId) -> StorageResult<()> {
        let id = upload.0.clone();
        self.tx(move |c| {
            // Once published, the blocks are the file's: left alone.
            if !one::<bool>(c, PUBLISHED, [&id])?.unwrap_or(false) {
                c.execute("DELETE FROM blocks WHERE owner = ?1", [&id])?;
            }
            Ok(())
        })
        .await
    }

    async fn put_record(
        &self,
        key: &RecordKey,
        value: Bytes,
        mode: RecordMode,
    ) -> StorageResult<String> {
        let key = key.as_str().to_owned();
        self.tx(move |c| {
            // Etags are digests of the values: an update compares what it read.
            let old = one::<Vec<u8>>(c, "SELECT value FROM records WHERE key = ?1", [&key])?;
            let allowed = match &mode {
                RecordMode::Create => old.is_none(),
                RecordMode::Update(etag) => old.is_some_and(|v| Record::etag_of(&v) == *etag),
                _ => true,
            };
            if !allowed {
                Err(StorageError::PreconditionFailed)?;
            }
            c.execute(
                "INSERT OR REPLACE INTO records VALUES (?1, ?2)",
                (key, &value[..]),
            )?;
            Ok(Record::etag_of(&value))
        })
        .await
    }

    async fn get_record(&self, key: &RecordKey) -> StorageResult<Option<Record>> {
        let key = key.as_str().to_owned();
        self.tx(move |c| {
            let sql = "SELECT value FROM records WHERE key = ?1";
            Ok(one::<Vec<u8>>(c, sql, [key])?.map(|v| Record::new(v.into())))
        })
        .await
    }

    async fn delete_record(&self, key: &RecordKey) -> StorageResult<bool> {
        let key = key.as_str().to_owned();
        self.tx(move |c| Ok(c.execute("DELETE FROM records WHERE key = ?1", [key])? == 1))
            .await
    }

    async fn list_records(&self, prefix: &RecordKey) -> StorageResult<Vec<RecordKey>> {
        let prefix = prefix.as_str().to_owned();
        let keys: Vec<String> = self
            .tx(move |c| {
                // `prefix/…`: from `prefix/` up to `prefix0` ('0' follows '/').
                let sql = "SELECT key FROM records WHERE key > ?1 || '/' AND key < ?1 || '0'";
                let mut st = c.prepare(sql)?;
                Ok(st
                    .query_map([prefix], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?)
            })
            .await?;
        Ok(keys
            .into_iter()
            .filter_map(|k| RecordKey::new(k).ok())
            .collect())
    }
}

/// Gathers bytes into block-aligned pieces of at most [`BLOCK`] and stores each one.
struct Writer {
    storage: SqliteStorage,
    id: String,
    /// Where `buf` starts; `buf` never crosses a block boundary.
    pos: u64,
    buf: Vec<u8>,
}

impl Writer {
    /// Stores `buf` at `pos`, into the block that holds it.
    async fn store(&mut self) -> StorageResult<()> {
        let (id, at, piece) = (self.id.clone(), self.pos, std::mem::take(&mut self.buf));
        self.pos += piece.len() as u64;
        self.storage
            .tx(move |c| {
                if one::<bool>(c, PUBLISHED, [&id])?.unwrap_or(false) {
                    Err(StorageError::UploadClosed)?; // never into a published file
                }
                let (idx, off) = (at / BLOCK, (at % BLOCK) as usize);
                let data = if off == 0 && piece.len() as u64 == BLOCK {
                    piece
                } else {
                    let sql = "SELECT data FROM blocks WHERE owner = ?1 AND idx = ?2";
                    let mut data: Vec<u8> = one(c, sql, (&id, idx))?.unwrap_or_default();
                    data.resize(data.len().max(off + piece.len()), 0);
                    data[off..off + piece.len()].copy_from_slice(&piece);
                    data
                };
                let sql = "INSERT OR REPLACE INTO blocks VALUES (?1, ?2, ?3)";
                c.execute(sql, (&id, idx, data))?;
                Ok(())
            })
            .await
    }
}

#[async_trait]
impl UploadWriter for Writer {
    async fn write(&mut self, mut data: Bytes) -> StorageResult<()> {
        while !data.is_empty() {
            let room = (BLOCK - self.pos % BLOCK) as usize - self.buf.len();
            let piece = data.split_to(room.min(data.len()));
            self.buf.extend_from_slice(&piece);
            if piece.len() == room {
                self.store().await?;
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> StorageResult<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            self.store().await
        }
    }

    async fn commit(mut self: Box<Self>) -> StorageResult<()> {
        self.flush().await // every block is stored in a committed transaction
    }
}

/// Serves the upload endpoints over a SqliteStorage.
#[derive(clap::Parser)]
struct Args {
    /// The SQLite database file (created if missing).
    #[arg(long, default_value = "./uploads.sqlite3")]
    db: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: std::net::SocketAddr,
    /// The API key clients send as `Authorization: Bearer KEY`.
    #[arg(long, default_value = "demo-key")]
    key: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = <Args as clap::Parser>::parse();
    let uploads = tower_uploads::Uploads::new(SqliteStorage::open(&args.db)?).key(args.key);
    let _sweeper = uploads.spawn_sweeper(); // aborts idle uploads
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let app = axum::Router::new().fallback_service(uploads.service());
    axum::serve(listener, app).await?;
    Ok(())
}
