//! An existing axum app gains upload endpoints under `/files`, next to its own routes.
//!
//! ```text
//! cargo run --example axum
//! curl -X PUT localhost:3000/files/hello.txt -H 'Authorization: Bearer demo-key' -d 'hi'
//! curl localhost:3000/files/hello.txt
//! curl localhost:3000/health
//! ```

use axum::{Json, Router, routing::get};
use tower_uploads::{FsStorage, Uploads};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let storage = FsStorage::new("./data")?;
    let uploads = Uploads::new(storage)
        .key(std::env::var("ITTYBIT_API_KEY").unwrap_or_else(|_| "demo-key".into()))
        .base_url("http://127.0.0.1:3000/files");
    let _sweeper = uploads.spawn_sweeper();

    // The app's own routes…
    let app = Router::new()
        .route(
            "/health",
            get(|| async { Json(serde_json::json!({"ok": true})) }),
        )
        // …and every ittybit upload endpoint under /files (axum strips the prefix).
        .nest_service("/files", uploads.service());

    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
