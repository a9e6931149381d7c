//! # tower-uploads
//!
//! ittybit-compatible upload endpoints for any hyper, axum or warp app: signed URLs, simple
//! `PUT` uploads, resumable `Content-Range` chunk uploads, file delivery — on the app's own
//! routes, with its own persistence behind the [`Storage`](storage::Storage) trait.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod api;
/// Credentials: bearer keys and signed URLs.
pub mod auth;
pub mod body;
/// GET/HEAD of stored files.
pub mod delivery;
pub mod error;
pub mod file;
pub mod media;
pub mod path;
pub mod response;
pub mod service;
pub mod storage;
pub mod upload;

pub use service::{Uploads, UploadsLayer, UploadsService};
pub use storage::{FsStorage, MemoryStorage, Storage};
