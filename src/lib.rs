//! # tower-uploads
//!
//! ittybit-compatible upload endpoints for any hyper, axum or warp app: signed URLs, simple
//! `PUT` uploads, resumable `Content-Range` chunk uploads, file delivery — on the app's own
//! routes, with its own persistence behind the [`Storage`] trait. Clients
//! written for ittybit (its SDKs, its docs' `fetch` snippets, curl) work unchanged.
//!
//! ```
//! use http::{Request, StatusCode};
//! use http_body_util::{BodyExt, Full};
//! use tower::ServiceExt;
//! use tower_uploads::{MemoryStorage, Uploads};
//! use tower_uploads::auth::{ApiKey, SignedMethod, Signer};
//! use tower_uploads::path::FilePath;
//!
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! let uploads = Uploads::new(MemoryStorage::new())
//!     .key("secret-key")
//!     .base_url("https://files.example.com");
//! let service = uploads.service();
//!
//! // The app's backend signs a URL (or asks `POST /signatures`)…
//! let signer = Signer::new(ApiKey::new("secret-key"), "https://files.example.com");
//! let path = FilePath::new("avatars/me.txt").unwrap();
//! let signed = signer.sign(&path, SignedMethod::Put, 4_102_444_800);
//! let uri = signed.url.strip_prefix("https://files.example.com").unwrap().to_owned();
//!
//! // …and the browser PUTs the file to it, without any key.
//! let put = Request::put(uri).body(Full::new("hello".as_bytes())).unwrap();
//! let res = service.clone().oneshot(put).await.unwrap();
//! assert_eq!(res.status(), StatusCode::CREATED);
//! let body = res.into_body().collect().await.unwrap().to_bytes();
//! let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
//! assert_eq!(doc["data"]["url"], "https://files.example.com/avatars/me.txt");
//! assert_eq!(doc["data"]["filesize"], 5);
//!
//! // Delivery is public by default.
//! let get = Request::get("/avatars/me.txt").body(Full::new(&b""[..])).unwrap();
//! let res = service.oneshot(get).await.unwrap();
//! assert_eq!(res.status(), StatusCode::OK);
//! assert_eq!(&res.into_body().collect().await.unwrap().to_bytes()[..], b"hello");
//! # });
//! ```
//!
//! It runs on tokio with the time driver on (`Builder::enable_all()` or `enable_time()`, as
//! `#[tokio::main]` does): the body idle timeout, a chunk's short waits while another request
//! finalizes the same upload, and the sweeper use tokio's timers; [`FsStorage`] uses its
//! blocking pool.
//!
//! ## Where to start
//!
//! - [`guide`]: quick starts for axum, hyper and warp; the protocol at a glance; writing a
//!   [`Storage`] backend (with the conformance suite); security notes.
//! - [`stack`]: the recommended tower-http stack around it — CORS for browsers, tracing
//!   without secrets, timeouts, body limits.
//! - `examples/` in the repository: `server.rs` (the demo server), `axum.rs`, `hyper.rs`,
//!   `warp.rs`, `custom_auth.rs` (the handler behind the app's own login, no API key),
//!   `custom_storage.rs` (a `Storage` backend over SQLite, the template for your own),
//!   `sign.rs`, `sqlite.rs` (hooks keeping rows), `browser/` (a page uploading in parallel,
//!   resumable chunks) and `upload.rs` (a resumable, parallel command-line uploader).
//!
//! ## Map
//!
//! - [`Uploads`] bundles the stack, the preset; mount it with `.layer()` or `.service()`
//!   ([`service`] module docs show both with axum). It is three pieces, each usable alone:
//!   - [`auth`]: bearer keys, signed URLs ([`auth::Signer`]), the [`auth::SignatureLayer`]
//!     that turns credentials into a [`Grant`];
//!   - [`Handler`] ([`Uploads::handler`]): uploads, chunks, delivery, upload sessions and
//!     `POST /signatures` over a [`Storage`], authorized from the request's [`Grant`] alone
//!     — the signature layer's, or one the app's own auth middleware inserts ([`grant`]);
//!   - [`conditions`]: ittybit's upload conditions and the [`conditions::ConditionsLayer`].
//! - [`hooks`]: the app's say on each upload (accept, metadata, reject; published, expired).
//! - [`storage`]: the [`Storage`] trait, its [`prelude`](storage::prelude), [`FsStorage`],
//!   [`MemoryStorage`], and the conformance suite for custom backends (feature
//!   `conformance`).
//! - [`path`], [`file`](mod@file), [`media`], [`response`], [`error`]: the pieces of the wire
//!   contract (`docs/PROTOCOL.md` in the repository).
//! - [`stack`]: CORS header lists and log redaction for a tower-http stack; [`guide`]: docs.
//! - [`metrics`](mod@metrics): counters, histograms and gauges through the `metrics` facade
//!   crate (uploads started, completed, failed and rejected, bytes, latencies).
//!
//! See `ARCHITECTURE.md` in the repository for how a request flows through the layers.
// One `unsafe` block in the crate: glibc's `malloc_trim` (service/memory.rs).
#![deny(unsafe_code)]
#![warn(missing_docs)]
// Lists of byte ranges are this crate's domain: `vec![a..b]` is never a mistaken `(a..b).collect()`.
#![allow(clippy::single_range_in_vec_init)]

mod api;
pub mod auth;
pub mod body;
pub mod conditions;
pub(crate) mod config;
pub mod delivery;
pub mod error;
pub mod file;
pub mod grant;
pub mod guide;
pub(crate) mod headers;
pub mod hooks;
pub(crate) mod id;
pub mod media;
pub mod metrics;
pub mod path;
pub mod response;
pub(crate) mod route;
pub mod service;
pub mod session;
pub mod stack;
pub mod storage;
pub mod upload;

pub use grant::{Grant, Scope};
pub use service::{Handler, HandlerLayer, Uploads, UploadsLayer, UploadsService};
pub use storage::{FsStorage, MemoryStorage, Storage, StorageExt};
