//! Hooks: the app's own code at the moments that matter — an upload is complete (accept it,
//! add metadata, or reject it), a file was published (persist its File object in the app's
//! database, as ittybit's guides suggest), a chunk was received, an upload expired.
//!
//! Implement [`UploadHooks`] (every method has a default that does nothing) and give it to
//! [`Uploads::hooks`](crate::Uploads::hooks), or pass a closure to
//! [`Uploads::on_complete`](crate::Uploads::on_complete).
//!
//! ```
//! use tower_uploads::hooks::{Accept, Completion, Rejection, UploadHooks};
//! use tower_uploads::file::FileObject;
//! use tower_uploads::{Uploads, MemoryStorage};
//!
//! struct Db;
//!
//! #[async_trait::async_trait]
//! impl UploadHooks for Db {
//!     async fn on_complete(&self, done: &Completion) -> Result<Accept, Rejection> {
//!         if done.file.folder.as_deref() == Some("banned") {
//!             return Err(Rejection::new(http::StatusCode::FORBIDDEN, "uploads to banned/ are closed"));
//!         }
//!         Ok(Accept::with_metadata([("reviewed", serde_json::Value::Bool(false))]))
//!     }
//!     async fn on_published(&self, file: &FileObject) {
//!         // INSERT INTO files … (file.id, file.url, file.kind, file.filesize)
//!         let _ = file;
//!     }
//! }
//!
//! let uploads = Uploads::new(MemoryStorage::new()).key("k").hooks(Db);
//! # let _ = uploads.service();
//! ```
//!
//! # When each hook runs
//!
//! - [`on_complete`](UploadHooks::on_complete): once per upload, after its bytes are all
//!   stored, probed and found to meet the conditions, **before** anything is visible. For a
//!   resumable upload it runs in the request that completes it (the one answered 201), and
//!   [`Completion`] carries that request's headers and extensions — what the app's own auth
//!   middleware put there (its user) reaches the hook and can go into the metadata; for a
//!   session upload, before its key is spent. A [`Rejection`] discards the bytes and is the
//!   client's answer (its status and message, `kind: "upload_rejected"`); a rejected session
//!   key stays usable. Metadata from [`Accept`] is merged into the File object's `metadata`
//!   (the hook's keys win) before it is stored.
//! - [`on_published`](UploadHooks::on_published): after the file is published, before the
//!   client is answered, with the File object the client receives.
//! - [`on_chunk`](UploadHooks::on_chunk): after a `Content-Range` chunk's bytes count as
//!   received (not for the chunk that completes the upload: `on_complete` follows).
//! - [`on_expired`](UploadHooks::on_expired): when the sweeper discards an idle incomplete
//!   upload or an expired upload session.
//!
//! Hooks run inside the request (or the sweeper); keep them quick, and never panic in them.

use async_trait::async_trait;
use http::{HeaderMap, StatusCode};
use serde_json::{Map, Value};
use std::future::Future;
use std::ops::Range;

use crate::error::{ApiError, ErrorKind};
use crate::file::FileObject;
use crate::path::FilePath;
use crate::storage::UploadId;

/// A completed upload, waiting for [`UploadHooks::on_complete`]'s verdict.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Completion {
    /// The File object it will be published with (its `metadata` is the session's, if any).
    pub file: FileObject,
    /// Where it will be published.
    pub path: FilePath,
    /// The headers of the request that completed it.
    pub headers: HeaderMap,
    /// The extensions of the request that completed it: what the app's own middleware put
    /// there (its user, say) reaches the hook, and can go into the metadata.
    pub extensions: http::Extensions,
    /// The upload session it came through (`ses_…`), if any.
    pub session: Option<String>,
}

/// Accepts an upload, optionally adding metadata to its File object.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Accept {
    /// Merged into the File object's `metadata` (these keys win).
    pub metadata: Map<String, Value>,
}

impl Accept {
    /// Accepts with these metadata entries.
    pub fn with_metadata<K: Into<String>>(entries: impl IntoIterator<Item = (K, Value)>) -> Accept {
        Accept {
            metadata: entries.into_iter().map(|(k, v)| (k.into(), v)).collect(),
        }
    }
}

/// Rejects an upload: its bytes are discarded and the client gets this status and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    status: StatusCode,
    message: String,
}

impl Rejection {
    /// A rejection with `status` (a 4xx or 5xx; anything else becomes 422) and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Rejection {
        let status = if status.is_client_error() || status.is_server_error() {
            status
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        };
        Rejection {
            status,
            message: message.into(),
        }
    }

    /// The status answered.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The message answered.
    pub fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn into_api_error(self) -> ApiError {
        ApiError::new(ErrorKind::UploadRejected, self.message).with_status(self.status)
    }
}

/// A chunk that was received (its range counts).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ChunkEvent {
    /// The file's path.
    pub path: FilePath,
    /// The chunk's bytes, `[start, end)`.
    pub range: Range<u64>,
    /// The file's total size.
    pub total: u64,
    /// Bytes received so far, all chunks together.
    pub received: u64,
}

/// An upload or upload session the sweeper discarded.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ExpiredEvent {
    /// The discarded upload (`None` for a session).
    pub upload: Option<UploadId>,
    /// The path it was for, when the storage knows it.
    pub path: Option<FilePath>,
    /// The discarded session (`ses_…`), for an expired upload session.
    pub session: Option<String>,
}

/// The app's hooks. Every method has a default that does nothing (accepts).
#[async_trait]
pub trait UploadHooks: Send + Sync + 'static {
    /// Decides on a complete upload before it becomes visible.
    async fn on_complete(&self, completion: &Completion) -> Result<Accept, Rejection> {
        let _ = completion;
        Ok(Accept::default())
    }

    /// A file was published; `file` is what the client is answered.
    async fn on_published(&self, file: &FileObject) {
        let _ = file;
    }

    /// A chunk was received.
    async fn on_chunk(&self, event: &ChunkEvent) {
        let _ = event;
    }

    /// An upload or session expired and was discarded.
    async fn on_expired(&self, event: &ExpiredEvent) {
        let _ = event;
    }
}

/// Shared hooks: keep an `Arc` to read what they gathered.
#[async_trait]
impl<T: UploadHooks> UploadHooks for std::sync::Arc<T> {
    async fn on_complete(&self, completion: &Completion) -> Result<Accept, Rejection> {
        (**self).on_complete(completion).await
    }
    async fn on_published(&self, file: &FileObject) {
        (**self).on_published(file).await;
    }
    async fn on_chunk(&self, event: &ChunkEvent) {
        (**self).on_chunk(event).await;
    }
    async fn on_expired(&self, event: &ExpiredEvent) {
        (**self).on_expired(event).await;
    }
}

/// [`UploadHooks`] from an `on_complete` closure (see
/// [`Uploads::on_complete`](crate::Uploads::on_complete)).
pub struct OnComplete<F>(pub F);

impl<F> std::fmt::Debug for OnComplete<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnComplete(..)")
    }
}

#[async_trait]
impl<F, Fut> UploadHooks for OnComplete<F>
where
    F: Fn(Completion) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Accept, Rejection>> + Send + 'static,
{
    async fn on_complete(&self, completion: &Completion) -> Result<Accept, Rejection> {
        (self.0)(completion.clone()).await
    }
}

/// Runs `on_complete` and applies its verdict to `file`: merged metadata, or the rejection
/// as an [`ApiError`].
pub(crate) async fn decide(
    hooks: Option<&dyn UploadHooks>,
    file: &mut FileObject,
    path: &FilePath,
    headers: &HeaderMap,
    extensions: &http::Extensions,
    session: Option<&str>,
) -> Result<(), ApiError> {
    let Some(hooks) = hooks else {
        return Ok(());
    };
    let completion = Completion {
        file: file.clone(),
        path: path.clone(),
        headers: headers.clone(),
        extensions: extensions.clone(),
        session: session.map(str::to_owned),
    };
    match hooks.on_complete(&completion).await {
        Ok(accept) => {
            if !accept.metadata.is_empty() {
                file.metadata
                    .get_or_insert_with(Map::new)
                    .extend(accept.metadata);
            }
            Ok(())
        }
        Err(rejection) => {
            tracing::info!(path = %path, status = rejection.status().as_u16(), "upload rejected by the app's hook");
            Err(rejection.into_api_error())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::MediaFacts;

    /// [`decide`] for a request without headers, extensions or session.
    async fn decide_bare(
        hooks: Option<&dyn UploadHooks>,
        file: &mut FileObject,
        path: &FilePath,
    ) -> Result<(), ApiError> {
        let (headers, extensions) = (HeaderMap::new(), http::Extensions::new());
        decide(hooks, file, path, &headers, &extensions, None).await
    }

    fn file() -> (FileObject, FilePath) {
        let path = FilePath::new("a/b.bin").unwrap();
        let facts = crate::media::sniff(b"abc", None, "b.bin");
        let _: &MediaFacts = &facts;
        (
            FileObject::new(&path, "http://x/a/b.bin".into(), 3, &facts),
            path,
        )
    }

    #[tokio::test]
    async fn verdicts_apply_to_the_file() {
        let (mut f, path) = file();
        decide_bare(None, &mut f, &path).await.unwrap();
        assert_eq!(f.metadata, None);

        let add = OnComplete(|c: Completion| async move {
            assert_eq!(c.path.as_str(), "a/b.bin");
            Ok(Accept::with_metadata([("owner", Value::from("u1"))]))
        });
        f.metadata = Some(Map::from_iter([
            ("owner".to_owned(), Value::from("session")),
            ("k".to_owned(), Value::from(1)),
        ]));
        decide_bare(Some(&add), &mut f, &path).await.unwrap();
        let m = f.metadata.clone().unwrap();
        assert_eq!(m["owner"], "u1", "the hook's keys win");
        assert_eq!(m["k"], 1);

        let no = OnComplete(|_c: Completion| async move {
            Err(Rejection::new(StatusCode::FORBIDDEN, "not today"))
        });
        let e = decide_bare(Some(&no), &mut f, &path).await.unwrap_err();
        assert_eq!(
            (e.status(), e.kind().as_str(), e.message()),
            (StatusCode::FORBIDDEN, "upload_rejected", "not today")
        );
        assert_eq!(
            Rejection::new(StatusCode::OK, "x").status(),
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }
}
