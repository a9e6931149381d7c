//! A storage backend of your own: [`SqliteStorage`] implements the crate's `Storage` trait
//! over one SQLite database (published files, uploads in progress, their bytes, records),
//! importing only `tower_uploads::storage::prelude::*`, `rusqlite`, `tokio` and `std`; `main`
//! serves the upload endpoints over it with axum. `tests/custom_storage.rs` runs the crate's
//! conformance suite on it.
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
//! uploads(id PK AUTOINCREMENT, path, resumable UNIQUE, total, created, updated, claimed_by)
//! ranges(upload -> uploads ON DELETE CASCADE, lo, hi)   committed ranges, merged on reading
//! blocks(owner, idx, data) PK(owner, idx)   bytes [idx MiB, idx MiB + len(data)) of owner
//! records(key PK, value)
//! instances(token PK, seen)   heartbeat of every open SqliteStorage, for claim take-over
//! ```
//!
//! How the contract is kept:
//! - the blocks of upload `id` are `owner = id`; `publish` points `files.blob` at that id and
//!   deletes the upload row in one transaction (zero-copy), deleting the old version's blocks;
//!   ids are never reused (AUTOINCREMENT), so a file's blocks never meet a new upload's;
//! - a resumable upload is created or joined by `INSERT … ON CONFLICT (resumable) DO
//!   NOTHING`, a claim is won by the one `UPDATE … WHERE claimed_by IS NULL` that changes its
//!   row, a create-only record by `INSERT … ON CONFLICT DO NOTHING`;
//! - every block write checks in its transaction that the upload is unclaimed, so a claim
//!   closes the upload to writers atomically;
//! - a claim whose holder's storage stopped its heartbeat (its process died) is taken over;
//!   `publish` requires the claim to be this storage's own;
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
/// How often an open storage records that it is alive…
const BEAT: Duration = Duration::from_secs(5);
/// …and after how long without it its claims are taken over.
const DEAD: Duration = Duration::from_secs(60);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, blob INTEGER NOT NULL,
  size INTEGER NOT NULL, etag TEXT NOT NULL, modified INTEGER NOT NULL,
  content_type TEXT NOT NULL, attributes BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS uploads (id INTEGER PRIMARY KEY AUTOINCREMENT, path TEXT NOT NULL,
  resumable TEXT UNIQUE, total INTEGER, created INTEGER NOT NULL, updated INTEGER NOT NULL,
  claimed_by TEXT);
CREATE TABLE IF NOT EXISTS ranges (upload INTEGER NOT NULL REFERENCES uploads ON DELETE CASCADE,
  lo INTEGER NOT NULL, hi INTEGER NOT NULL, PRIMARY KEY (upload, lo, hi));
CREATE TABLE IF NOT EXISTS blocks (owner INTEGER NOT NULL, idx INTEGER NOT NULL,
  data BLOB NOT NULL, PRIMARY KEY (owner, idx));
CREATE TABLE IF NOT EXISTS records (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS instances (token TEXT PRIMARY KEY, seen INTEGER NOT NULL);";

const META: &str =
    "SELECT size, etag, modified, content_type, attributes, blob FROM files WHERE path = ?1";
const INFO: &str = "SELECT id, path, total, created, updated FROM uploads";
const DROP_FILE_BLOCKS: &str =
    "DELETE FROM blocks WHERE owner = (SELECT blob FROM files WHERE path = ?1)";

/// A [`Storage`] in one SQLite database file, shared by every process that opens it.
#[derive(Clone)]
pub struct SqliteStorage {
    db: Arc<Mutex<Connection>>,
    path: PathBuf,
    /// This storage's claim holder token, kept alive in `instances` by a heartbeat thread.
    me: Arc<str>,
}

impl SqliteStorage {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: impl AsRef<Path>) -> rusqlite::Result<SqliteStorage> {
        let conn = connect(path.as_ref())?;
        conn.execute_batch(SCHEMA)?;
        let me: String = conn.query_row("SELECT hex(randomblob(16))", [], |r| r.get(0))?;
        let db = Arc::new(Mutex::new(conn));
        beat(&db, &me)?;
        let (weak, token) = (Arc::downgrade(&db), me.clone());
        std::thread::spawn(move || {
            while let Some(db) = weak.upgrade() {
                let _ = beat(&db, &token);
                drop(db);
                std::thread::sleep(BEAT);
            }
        });
        Ok(SqliteStorage {
            db,
            path: path.as_ref().into(),
            me: me.into(),
        })
    }

    /// Runs `f` in an immediate transaction on the shared connection, off the async threads.
    async fn tx<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection, &str) -> Res<T> + Send + 'static,
    ) -> StorageResult<T> {
        let (db, me) = (self.db.clone(), self.me.clone());
        blocking(move || {
            let mut conn = lock(&db);
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = f(&tx, &me)?;
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
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON;")?;
    Ok(conn)
}

fn lock(db: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    db.lock().unwrap_or_else(|e| e.into_inner())
}

fn beat(db: &Mutex<Connection>, me: &str) -> rusqlite::Result<()> {
    let conn = lock(db);
    let sql = "INSERT OR REPLACE INTO instances VALUES (?1, ?2)";
    conn.execute(sql, (me, now()))?;
    conn.execute("DELETE FROM instances WHERE seen < ?1", [alive_since()])?;
    Ok(())
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

fn alive_since() -> i64 {
    now() - DEAD.as_nanos() as i64
}

fn time(nanos: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(nanos as u64)
}

/// The row id of an upload (-1, which matches none, for an id not of this storage).
fn key(id: &UploadId) -> i64 {
    id.0.parse().unwrap_or(-1)
}

fn meta(r: &Row) -> rusqlite::Result<(ObjectMeta, i64)> {
    let meta = ObjectMeta {
        size: r.get(0)?,
        etag: r.get(1)?,
        modified: time(r.get(2)?),
        content_type: r.get(3)?,
        attributes: Bytes::from(r.get::<_, Vec<u8>>(4)?),
    };
    Ok((meta, r.get(5)?))
}

fn info(r: &Row) -> rusqlite::Result<UploadInfo> {
    Ok(UploadInfo {
        id: UploadId(r.get::<_, i64>(0)?.to_string()),
        path: FilePath::new(r.get::<_, String>(1)?).ok(),
        total: r.get(2)?,
        created: time(r.get(3)?),
        updated: time(r.get(4)?),
        created_now: false,
    })
}

fn received(c: &Connection, id: i64) -> Res<Vec<Range<u64>>> {
    let mut st = c.prepare("SELECT lo, hi FROM ranges WHERE upload = ?1")?;
    let rows = st.query_map([id], |r| Ok(r.get::<_, u64>(0)?..r.get::<_, u64>(1)?))?;
    Ok(merge_ranges(rows.collect::<rusqlite::Result<_>>()?))
}

/// The first column of the row of `sql`, if there is one.
fn one<T: FromSql>(c: &Connection, sql: &str, params: impl Params) -> rusqlite::Result<Option<T>> {
    c.query_row(sql, params, |r| r.get(0)).optional()
}

/// Refuses a write into an upload that is claimed or gone.
fn check_open(c: &Connection, id: i64) -> Res<()> {
    let sql = "SELECT claimed_by IS NULL FROM uploads WHERE id = ?1";
    match one(c, sql, [id])? {
        Some(true) => Ok(()),
        _ => Err(StorageError::UploadClosed.into()),
    }
}

/// `range` of the blocks of `owner`, read through `conn` (in its read transaction) one
/// block-aligned frame at a time as the stream is polled. A hole reads as zeros.
fn frames(conn: Connection, owner: i64, range: Range<u64>) -> ByteStream {
    let end = range.end;
    stream::try_unfold((conn, range.start), move |(conn, pos)| async move {
        if pos >= end {
            return Ok(None);
        }
        let n = (BLOCK - pos % BLOCK).min(end - pos);
        blocking(move || {
            let sql = "SELECT substr(data, ?1, ?2) FROM blocks WHERE owner = ?3 AND idx = ?4";
            let args = (pos % BLOCK + 1, n, owner, pos / BLOCK);
            let mut frame: Vec<u8> = one(&conn, sql, args)?.unwrap_or_default();
            frame.resize(n as usize, 0);
            Ok(Some((Bytes::from(frame), (conn, pos + n))))
        })
        .await
    })
    .boxed()
}

#[async_trait]
impl Storage for SqliteStorage {
    async fn head(&self, path: &FilePath) -> StorageResult<Option<ObjectMeta>> {
        let path = path.as_str().to_owned();
        self.tx(move |c, _| Ok(c.query_row(META, [path], meta).optional()?.map(|m| m.0)))
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

    async fn delete(&self, path: &FilePath) -> StorageResult<bool> {
        let path = path.as_str().to_owned();
        self.tx(move |c, _| {
            c.execute(DROP_FILE_BLOCKS, [&path])?;
            Ok(c.execute("DELETE FROM files WHERE path = ?1", [&path])? == 1)
        })
        .await
    }

    async fn open_upload(&self, path: &FilePath, spec: UploadSpec) -> StorageResult<UploadInfo> {
        let path = path.as_str().to_owned();
        let (total, resumable) = match spec {
            UploadSpec::Resumable { total } => (Some(total), Some(path.clone())),
            UploadSpec::Single | UploadSpec::Lasting => (None, None),
        };
        self.tx(move |c, _| {
            let sql = "INSERT INTO uploads (path, resumable, total, created, updated)
                       VALUES (?1, ?2, ?3, ?4, ?4) ON CONFLICT (resumable) DO NOTHING";
            let created = c.execute(sql, (&path, &resumable, total, now()))? == 1;
            let mut info = if created {
                let sql = format!("{INFO} WHERE id = ?1");
                c.query_row(&sql, [c.last_insert_rowid()], info)?
            } else {
                c.query_row(&format!("{INFO} WHERE resumable = ?1"), [path], info)?
            };
            info.created_now = created;
            Ok(info)
        })
        .await
    }

    async fn find_upload(&self, path: &FilePath) -> StorageResult<Option<UploadInfo>> {
        let path = path.as_str().to_owned();
        let sql = format!("{INFO} WHERE resumable = ?1");
        self.tx(move |c, _| Ok(c.query_row(&sql, [path], info).optional()?))
            .await
    }

    async fn writer(&self, upload: &UploadId, offset: u64) -> StorageResult<Box<dyn UploadWriter>> {
        let id = key(upload);
        self.tx(move |c, _| check_open(c, id)).await?;
        Ok(Box::new(Writer {
            storage: self.clone(),
            id,
            start: offset,
            pos: offset,
            buf: Vec::new(),
        }))
    }

    async fn received(&self, upload: &UploadId) -> StorageResult<Vec<Range<u64>>> {
        let id = key(upload);
        self.tx(move |c, _| {
            let sql = "SELECT 1 FROM uploads WHERE id = ?1";
            one::<i64>(c, sql, [id])?.ok_or(StorageError::NotFound)?;
            received(c, id)
        })
        .await
    }

    async fn claim(&self, upload: &UploadId) -> StorageResult<Claim> {
        let id = key(upload);
        self.tx(move |c, me| {
            // Open, released (''), or held by a storage whose heartbeat stopped.
            let sql = "UPDATE uploads SET claimed_by = ?2 WHERE id = ?1 AND (claimed_by IS NULL
                       OR (claimed_by <> ?2 AND claimed_by NOT IN
                           (SELECT token FROM instances WHERE seen >= ?3)))";
            let won = c.execute(sql, (id, me, alive_since()))? == 1;
            Ok(if won { Claim::Won } else { Claim::Lost })
        })
        .await
    }

    async fn unclaim(&self, upload: &UploadId) -> StorageResult<()> {
        let id = key(upload);
        self.tx(move |c, me| {
            let sql = "UPDATE uploads SET claimed_by = '' WHERE id = ?1 AND claimed_by = ?2";
            c.execute(sql, (id, me))?;
            Ok(())
        })
        .await
    }

    async fn read_upload(&self, upload: &UploadId, range: Range<u64>) -> StorageResult<ByteStream> {
        let sql = "SELECT id FROM uploads WHERE id = ?1";
        match self.snapshot(sql, key(upload), |r| r.get(0)).await? {
            Some((conn, id)) => Ok(frames(conn, id, range)),
            None => Err(StorageError::NotFound),
        }
    }

    async fn publish(
        &self,
        upload: &UploadId,
        path: &FilePath,
        size: u64,
        options: PublishOptions,
    ) -> StorageResult<ObjectMeta> {
        let (id, path) = (key(upload), path.as_str().to_owned());
        self.tx(move |c, me| {
            let sql = "SELECT claimed_by FROM uploads WHERE id = ?1";
            match one::<Option<String>>(c, sql, [id])? {
                Some(Some(holder)) if holder == me => {}
                Some(None) => Err(StorageError::other("publish of an unclaimed upload"))?,
                _ => Err(StorageError::UploadClosed)?, // gone, or taken over
            }
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
            c.execute(sql, (id, size.div_ceil(BLOCK)))?;
            c.execute("DELETE FROM uploads WHERE id = ?1", [id])?;
            let modified = now();
            let meta = ObjectMeta {
                size,
                etag: format!("{id:x}.{modified:x}"),
                modified: time(modified),
                content_type: options.content_type,
                attributes: options.attributes,
            };
            let sql = "INSERT OR REPLACE INTO files VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
            let (etag, ty, attributes) = (&meta.etag, &meta.content_type, &meta.attributes[..]);
            c.execute(sql, (&path, id, size, etag, modified, ty, attributes))?;
            Ok(meta)
        })
        .await
    }

    async fn abort(&self, upload: &UploadId) -> StorageResult<()> {
        let id = key(upload);
        self.tx(move |c, _| {
            // Once published, the row is gone and the blocks are the file's: left alone.
            if c.execute("DELETE FROM uploads WHERE id = ?1", [id])? == 1 {
                c.execute("DELETE FROM blocks WHERE owner = ?1", [id])?;
            }
            Ok(())
        })
        .await
    }

    async fn list_uploads(&self) -> StorageResult<Vec<UploadInfo>> {
        self.tx(|c, _| {
            let mut st = c.prepare(&format!("{INFO} ORDER BY id"))?;
            Ok(st.query_map([], info)?.collect::<rusqlite::Result<_>>()?)
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
        self.tx(move |c, _| {
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
        self.tx(move |c, _| {
            let sql = "SELECT value FROM records WHERE key = ?1";
            Ok(one::<Vec<u8>>(c, sql, [key])?.map(|v| Record::new(v.into())))
        })
        .await
    }

    async fn delete_record(&self, key: &RecordKey) -> StorageResult<bool> {
        let key = key.as_str().to_owned();
        self.tx(move |c, _| Ok(c.execute("DELETE FROM records WHERE key = ?1", [key])? == 1))
            .await
    }

    async fn list_records(&self, prefix: &RecordKey) -> StorageResult<Vec<RecordKey>> {
        let prefix = prefix.as_str().to_owned();
        let keys: Vec<String> = self
            .tx(move |c, _| {
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
    id: i64,
    start: u64,
    /// Where `buf` starts; `buf` never crosses a block boundary.
    pos: u64,
    buf: Vec<u8>,
}

impl Writer {
    /// Stores `buf` at `pos`, into the block that holds it, unless the upload was claimed.
    async fn store(&mut self) -> StorageResult<()> {
        let (id, at, piece) = (self.id, self.pos, std::mem::take(&mut self.buf));
        self.pos += piece.len() as u64;
        self.storage
            .tx(move |c, _| {
                check_open(c, id)?;
                let (idx, off) = (at / BLOCK, (at % BLOCK) as usize);
                let data = if off == 0 && piece.len() as u64 == BLOCK {
                    piece
                } else {
                    let sql = "SELECT data FROM blocks WHERE owner = ?1 AND idx = ?2";
                    let mut data: Vec<u8> = one(c, sql, (id, idx))?.unwrap_or_default();
                    data.resize(data.len().max(off + piece.len()), 0);
                    data[off..off + piece.len()].copy_from_slice(&piece);
                    data
                };
                let sql = "INSERT OR REPLACE INTO blocks VALUES (?1, ?2, ?3)";
                c.execute(sql, (id, idx, data))?;
                c.execute("UPDATE uploads SET updated = ?2 WHERE id = ?1", (id, now()))?;
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

    async fn commit(mut self: Box<Self>) -> StorageResult<Vec<Range<u64>>> {
        self.flush().await?;
        let (id, range) = (self.id, self.start..self.pos);
        self.storage
            .tx(move |c, _| {
                check_open(c, id)?;
                if !range.is_empty() {
                    let sql = "INSERT OR IGNORE INTO ranges VALUES (?1, ?2, ?3)";
                    c.execute(sql, (id, range.start, range.end))?;
                }
                c.execute("UPDATE uploads SET updated = ?2 WHERE id = ?1", (id, now()))?;
                received(c, id)
            })
            .await
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
    let _sweeper = uploads.spawn_sweeper(); // aborts idle uploads: list_uploads + abort
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let app = axum::Router::new().fallback_service(uploads.service());
    axum::serve(listener, app).await?;
    Ok(())
}
