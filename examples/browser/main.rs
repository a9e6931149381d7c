//! The browser demo: an axum app whose page uploads a file straight from the browser.
//!
//! ```text
//! cargo run --release --example browser -- --listen 127.0.0.1:3000 --data ./data
//! # open http://127.0.0.1:3000/
//! ```
//!
//! The page (`index.html`, `app.js` next to this file) asks the app's own endpoint
//! `POST /api/sign` for a signed `PUT` URL — the app decides the path and would check its
//! user's session here; the browser never sees the API key — then uploads the file to that
//! URL in parallel `Content-Range` chunks with a progress bar, retries failed chunks with
//! backoff, resumes after a reload (it asks the status query, `Content-Range: bytes */<total>`,
//! what is missing and sends only that), and shows the returned File object (an image is
//! previewed from its `url`).
//!
//! The stack is the one `tower_uploads::stack` recommends: a `TraceLayer` that logs redacted
//! URIs, a `CorsLayer` that lets the page's origin upload, a request-body timeout, and the
//! upload service nested under `/files`.
//!
//! Flags: `--listen ADDR` (default 127.0.0.1:3000; port 0 picks one), `--data DIR` (default
//! ./data), `--key KEY` (else env `ITTYBIT_API_KEY`, else a random one), `--files-host HOST`
//! (the host name in the upload URLs, default the listen IP: with `localhost` the page at
//! `http://127.0.0.1:…` uploads cross-origin, through the `CorsLayer` and its preflights). Prints
//! `listening on http://ADDR` once it accepts connections. Logs go to stderr
//! (`RUST_LOG`, default `info,tower_http=debug`: every request, with its URI redacted).

use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::TraceLayer;
use tower_uploads::auth::{ApiKey, SignedMethod, Signer};
use tower_uploads::path::FilePath;
use tower_uploads::{FsStorage, Uploads, stack};

const INDEX: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
/// How long a signed URL handed to the page is valid: long enough to resume tomorrow.
const URL_TTL: Duration = Duration::from_secs(24 * 3600);

#[derive(Clone)]
struct App {
    signer: Signer,
}

#[derive(Deserialize)]
struct SignRequest {
    filename: String,
}

/// The app's own endpoint: decides where the user's file goes, and signs a `PUT` for it.
async fn sign(State(app): State<App>, Json(req): Json<SignRequest>) -> Response {
    let Ok(path) = FilePath::new(format!("uploads/{}", safe_name(&req.filename))) else {
        return (StatusCode::BAD_REQUEST, "bad file name").into_response();
    };
    let expiry = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + URL_TTL.as_secs();
    let signed = app.signer.sign(&path, SignedMethod::Put, expiry);
    Json(serde_json::json!({
        "url": signed.url,
        "path": signed.path.as_str(),
        "expiry": signed.expiry,
    }))
    .into_response()
}

/// A file name the app is happy to store: ASCII letters, digits, `.`, `_`, `-` (others
/// become `_`), at most 100 characters, not starting with a dot.
fn safe_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect();
    if out.is_empty() || out.starts_with('.') {
        out.insert_str(0, "file");
    }
    out
}

struct Args {
    listen: SocketAddr,
    data: PathBuf,
    key: Option<String>,
    files_host: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        listen: "127.0.0.1:3000".parse().expect("valid default"),
        data: PathBuf::from("./data"),
        key: std::env::var("ITTYBIT_API_KEY")
            .ok()
            .filter(|k| !k.is_empty()),
        files_host: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => {
                let v = value()?;
                args.listen = v.parse().map_err(|_| format!("bad address {v}"))?;
            }
            "--data" => args.data = PathBuf::from(value()?),
            "--key" => args.key = Some(value()?),
            "--files-host" => args.files_host = Some(value()?),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("error: {e}\nusage: browser [--listen ADDR] [--data DIR] [--key KEY] [--files-host HOST]");
        std::process::exit(2)
    });
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tower_http=debug".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();

    let key = args
        .key
        .unwrap_or_else(|| tower_uploads::file::random_id("key_"));
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    let page_origin = format!("http://{addr}");
    let files_url = match &args.files_host {
        Some(host) => format!("http://{host}:{}/files", addr.port()),
        None => format!("{page_origin}/files"),
    };
    let uploads = Uploads::new(FsStorage::new(&args.data)?)
        .key(key.clone())
        .base_url(files_url.clone())
        .max_request_size(32 << 20);
    let _sweeper = uploads.spawn_sweeper();
    let app = App {
        signer: Signer::new(ApiKey::new(key), files_url),
    };

    let router = Router::new()
        .route("/", get(|| async { Html(INDEX) }))
        .route(
            "/app.js",
            get(|| async { ([(header::CONTENT_TYPE, "text/javascript")], APP_JS) }),
        )
        .route("/api/sign", post(sign))
        .with_state(app)
        .nest_service("/files", uploads.service())
        .layer(RequestBodyTimeoutLayer::new(Duration::from_secs(60)))
        .layer(
            CorsLayer::new()
                .allow_origin(AllowOrigin::exact(page_origin.parse()?))
                .allow_methods(stack::CORS_METHODS)
                .allow_headers(stack::CORS_REQUEST_HEADERS)
                .expose_headers(stack::CORS_EXPOSE_HEADERS)
                .max_age(Duration::from_secs(600)),
        )
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &Request<Body>| {
                tracing::info_span!("http", method = %req.method(), uri = %stack::redacted_uri(req.uri()))
            }),
        );

    println!("listening on http://{addr}");
    axum::serve(listener, router).await?;
    Ok(())
}
