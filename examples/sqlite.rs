//! An axum app that keeps a row per uploaded file in its own SQLite database, from the
//! upload hooks — ittybit's guides: "persist this info to your database".
//!
//! - `on_complete` refuses files under `readonly/` (403, nothing stored) and stamps every
//!   accepted file's metadata with the app's name;
//! - `on_published` inserts the File object into the `files` table;
//! - `GET /app/files` lists the rows (the app serving what it knows about its files).
//!
//! ```text
//! cargo run --example sqlite -- --listen 127.0.0.1:3000 --data ./data --db ./files.db --key demo-key
//! curl -X PUT localhost:3000/files/hello.txt -H 'Authorization: Bearer demo-key' -d 'hi'
//! curl localhost:3000/app/files
//! ```
//!
//! Flags (`--help` describes them): `--listen ADDR` (default 127.0.0.1:3000), `--data DIR`
//! (default ./data), `--db FILE` (default ./files.db), `--key KEY` (else env `ITTYBIT_API_KEY`,
//! else demo-key). Prints `listening on http://ADDR` once it accepts connections.

use axum::{Json, Router, extract::State, routing::get};
use rusqlite::Connection;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tower_uploads::file::FileObject;
use tower_uploads::hooks::{Accept, Completion, Rejection, UploadHooks};
use tower_uploads::{FsStorage, Uploads};

/// The app's database: one connection, used off the async threads.
#[derive(Clone)]
struct Db(Arc<Mutex<Connection>>);

impl Db {
    fn open(path: &std::path::Path) -> rusqlite::Result<Db> {
        let conn = Connection::open(path)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS files (
                 id TEXT PRIMARY KEY,
                 media_id TEXT NOT NULL,
                 folder TEXT,
                 filename TEXT NOT NULL,
                 kind TEXT NOT NULL,
                 type TEXT NOT NULL,
                 filesize INTEGER NOT NULL,
                 url TEXT NOT NULL,
                 metadata TEXT,
                 created TEXT NOT NULL
             );",
        )?;
        Ok(Db(Arc::new(Mutex::new(conn))))
    }

    /// Runs `f` with the connection on a blocking thread.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> rusqlite::Result<T> {
        let db = self.0.clone();
        tokio::task::spawn_blocking(move || f(&db.lock().unwrap_or_else(|e| e.into_inner())))
            .await
            .expect("the database task panicked")
    }
}

#[async_trait::async_trait]
impl UploadHooks for Db {
    async fn on_complete(&self, done: &Completion) -> Result<Accept, Rejection> {
        if done.path.as_str().starts_with("readonly/") {
            return Err(Rejection::new(
                http::StatusCode::FORBIDDEN,
                "readonly/ is read-only in this app",
            ));
        }
        Ok(Accept::with_metadata([(
            "stored_by",
            Value::from("sqlite-example"),
        )]))
    }

    async fn on_published(&self, file: &FileObject) {
        let f = file.clone();
        let inserted = self
            .with(move |c| {
                c.execute(
                    "INSERT OR REPLACE INTO files
                     (id, media_id, folder, filename, kind, type, filesize, url, metadata, created)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                    rusqlite::params![
                        f.id,
                        f.media_id,
                        f.folder,
                        f.filename,
                        f.kind,
                        f.mime_type,
                        f.filesize as i64,
                        f.url,
                        f.metadata.map(|m| Value::Object(m).to_string()),
                        f.created,
                    ],
                )
            })
            .await;
        if let Err(e) = inserted {
            // The file is published; the app decides what a failed insert means for it.
            eprintln!("could not record {}: {e}", file.id);
        }
    }
}

async fn list_files(State(db): State<Db>) -> Json<Value> {
    let rows = db
        .with(|c| {
            let mut stmt = c.prepare(
                "SELECT id, folder, filename, kind, filesize, url, metadata FROM files ORDER BY created, id",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(json!({
                    "id": r.get::<_, String>(0)?,
                    "folder": r.get::<_, Option<String>>(1)?,
                    "filename": r.get::<_, String>(2)?,
                    "kind": r.get::<_, String>(3)?,
                    "filesize": r.get::<_, i64>(4)?,
                    "url": r.get::<_, String>(5)?,
                    "metadata": r.get::<_, Option<String>>(6)?
                        .and_then(|m| serde_json::from_str::<Value>(&m).ok()),
                }))
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })
        .await
        .unwrap_or_default();
    Json(json!({ "files": rows }))
}

/// An axum app that keeps a row per uploaded file in its own SQLite database, from the upload
/// hooks.
#[derive(clap::Parser)]
#[command(name = "sqlite", args_override_self = true)]
struct Args {
    /// The address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:3000")]
    listen: String,
    /// The directory of the uploads and files.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "./data",
        allow_hyphen_values = true
    )]
    data: PathBuf,
    /// The SQLite database.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "./files.db",
        allow_hyphen_values = true
    )]
    db: PathBuf,
    /// The API key (default: env ITTYBIT_API_KEY, else demo-key).
    #[arg(long, value_name = "KEY", allow_hyphen_values = true)]
    key: Option<String>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = <Args as clap::Parser>::parse();
    let key = args
        .key
        .unwrap_or_else(|| std::env::var("ITTYBIT_API_KEY").unwrap_or_else(|_| "demo-key".into()));
    let db = Db::open(&args.db)?;
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    let addr = listener.local_addr()?;
    let uploads = Uploads::new(FsStorage::new(&args.data)?)
        .key(key)
        .base_url(format!("http://{addr}/files"))
        .hooks(db.clone());
    let _sweeper = uploads.spawn_sweeper();
    let app = Router::new()
        .route("/app/files", get(list_files))
        .with_state(db)
        .nest_service("/files", uploads.service());
    println!("listening on http://{addr}");
    axum::serve(listener, app).await?;
    Ok(())
}
