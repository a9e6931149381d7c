//! An axum app with its own login puts the crate's uploads behind it: no API key at all.
//! Its middleware turns the logged-in user into a [`Grant`] on the folder `files/<user>/`;
//! the upload handler (simple PUTs, resumable chunks, delivery) authorizes from that alone.
//! Here the "login" is a trusted `X-User` header; a real app reads its session cookie or JWT.
//!
//! ```text
//! cargo run --example custom_auth
//! curl -X PUT localhost:3000/files/alice/a.txt -H 'X-User: alice' -d 'hi'   # 201
//! curl -X PUT localhost:3000/files/bob/a.txt -H 'X-User: alice' -d 'hi'     # 403 forbidden
//! curl localhost:3000/files/alice/a.txt -H 'X-User: alice'                  # hi
//! ```

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use clap::Parser;
use tower_uploads::{FsStorage, Grant, Uploads};

/// The app's own auth: the user may read and write under `files/<user>/`, nowhere else.
pub async fn user_grant(mut req: Request, next: Next) -> Response {
    let user = req.headers().get("x-user").and_then(|v| v.to_str().ok());
    let Some(grant) = user.and_then(|u| Grant::folder(&format!("files/{u}")).ok()) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    req.extensions_mut().insert(grant.read().write());
    next.run(req).await
}

#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: std::net::SocketAddr,
    /// Directory of the stored files.
    #[arg(long, default_value = "./data")]
    data: std::path::PathBuf,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    // Private delivery: reading needs the grant too, so users read only their own files.
    let uploads = Uploads::new(FsStorage::new(&args.data)?).private(true);
    let _sweeper = uploads.spawn_sweeper();
    let app = axum::Router::new()
        .fallback_service(uploads.handler())
        .layer(middleware::from_fn(user_grant));

    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
