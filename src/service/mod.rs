//! [`Uploads`]: the builder that bundles the whole stack — signature checks, uploads,
//! delivery and the signatures API — as one tower [`Layer`] or one [`Service`].
//!
//! ```
//! use axum::{Router, routing::get};
//! use tower_uploads::{Uploads, storage::MemoryStorage};
//!
//! let uploads = Uploads::new(MemoryStorage::new()).key("my-api-key");
//! // Either nest the standalone service under a prefix…
//! let app: Router = Router::new()
//!     .route("/health", get(|| async { "ok" }))
//!     .nest_service("/files", uploads.clone().base_url("https://example.com/files").service());
//! // …or wrap an existing router: requests under the prefix are ours, the rest go through.
//! let app2: Router = Router::new()
//!     .route("/health", get(|| async { "ok" }))
//!     .layer(uploads.prefix("/files").layer());
//! # let _ = (app, app2);
//! ```

mod handler;
mod memory;
mod sweeper;

pub use crate::config::{
    DEFAULT_BODY_IDLE_TIMEOUT, DEFAULT_MAX_FILE_SIZE, DEFAULT_MAX_REQUEST_SIZE,
    MAX_FILE_SIZE_CEILING,
};
pub use handler::{Handler, NotFound};
#[doc(hidden)]
pub use sweeper::{SweepReport, spawn_sweeper, spawn_sweeper_with, sweep, sweep_with};

use http::{Request, Response};
use http_body::Body;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tower_layer::Layer;
use tower_service::Service;

use crate::auth::{ApiKey, AuthPolicy, KeySet, Signature, Verifier};
use crate::body::{BoxError, ResponseBody};
use crate::conditions::Conditions;
use crate::config::Config;
use crate::hooks::{Accept, Completion, OnComplete, Rejection, UploadHooks};
use crate::response::ResponseStyle;
use crate::route::normalize_prefix;
use crate::storage::Storage;

/// Builds the upload stack. See the [module docs](self) for how to mount it.
#[derive(Clone)]
#[must_use]
pub struct Uploads {
    storage: Arc<dyn Storage>,
    keys: Vec<ApiKey>,
    base_url: Option<String>,
    prefix: String,
    max_request_size: u64,
    max_file_size: u64,
    style: ResponseStyle,
    private: bool,
    legacy_signatures: bool,
    leeway_secs: u64,
    signature_ttl: Duration,
    upload_ttl: Duration,
    session_ttl: Duration,
    hooks: Option<Arc<dyn UploadHooks>>,
    conditions: Option<Arc<Conditions>>,
    body_idle_timeout: Option<Duration>,
    max_incomplete_uploads: Option<usize>,
    active_types: bool,
    trim_allocator: bool,
}

impl std::fmt::Debug for Uploads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uploads")
            .field("keys", &self.keys.len())
            .field("base_url", &self.base_url)
            .field("prefix", &self.prefix)
            .field("max_request_size", &self.max_request_size)
            .field("max_file_size", &self.max_file_size)
            .field("private", &self.private)
            .finish_non_exhaustive()
    }
}

impl Uploads {
    /// A stack writing into `storage`. Add a [`key`](Self::key) for bearer keys, signed URLs
    /// and upload sessions; without one, only requests that the app's own middleware
    /// authorized (a [`Grant`](crate::Grant) in their extensions) write.
    pub fn new(storage: impl Storage) -> Uploads {
        Self::from_arc(Arc::new(storage))
    }

    /// A stack writing into a shared storage.
    pub fn from_arc(storage: Arc<dyn Storage>) -> Uploads {
        Uploads {
            storage,
            keys: Vec::new(),
            base_url: None,
            prefix: String::new(),
            max_request_size: DEFAULT_MAX_REQUEST_SIZE,
            max_file_size: DEFAULT_MAX_FILE_SIZE,
            style: ResponseStyle::Envelope,
            private: false,
            legacy_signatures: false,
            leeway_secs: 0,
            signature_ttl: Duration::from_secs(3600),
            upload_ttl: Duration::from_secs(24 * 3600),
            session_ttl: Duration::from_secs(3600),
            hooks: None,
            conditions: None,
            body_idle_timeout: Some(crate::config::DEFAULT_BODY_IDLE_TIMEOUT),
            max_incomplete_uploads: None,
            active_types: false,
            trim_allocator: true,
        }
    }

    /// Adds an API key. Several keys are valid at once (rotation); the first one signs the
    /// URLs that `POST /signatures` makes.
    pub fn key(mut self, key: impl Into<ApiKey>) -> Uploads {
        self.keys.push(key.into());
        self
    }

    /// The public URL of the mount point, e.g. `https://example.com/files`, used in `url`,
    /// `Location` and signed URLs. Default: `http://<Host header><prefix>`.
    pub fn base_url(mut self, url: impl Into<String>) -> Uploads {
        self.base_url = Some(url.into().trim_end_matches('/').to_owned());
        self
    }

    /// The mount prefix as it appears in the request URIs this stack sees (layer mode:
    /// e.g. `/files`; with axum's `nest_service`, which strips it, leave it empty).
    pub fn prefix(mut self, prefix: &str) -> Uploads {
        self.prefix = normalize_prefix(prefix);
        self
    }

    /// The largest request body (default 64 MiB). Larger simple uploads get 413.
    pub fn max_request_size(mut self, bytes: u64) -> Uploads {
        self.max_request_size = bytes;
        self
    }

    /// The largest file (default 1 GiB, at most [`MAX_FILE_SIZE_CEILING`] = 5 TiB).
    pub fn max_file_size(mut self, bytes: u64) -> Uploads {
        self.max_file_size = bytes.min(MAX_FILE_SIZE_CEILING);
        self
    }

    /// The body style of responses to requests without `Accept-Version` (default: the
    /// envelope that ittybit's guides document).
    pub fn response_style(mut self, style: ResponseStyle) -> Uploads {
        self.style = style;
        self
    }

    /// Private delivery: GET/HEAD need a bearer key or a `get` signature (default: public).
    pub fn private(mut self, private: bool) -> Uploads {
        self.private = private;
        self
    }

    /// Accepts the seed-style signed URLs without `method` (signed over
    /// `<path>?expiry=<expiry>`), for PUT only. Off by default.
    pub fn legacy_signatures(mut self, on: bool) -> Uploads {
        self.legacy_signatures = on;
        self
    }

    /// Clock-skew leeway for signature expiry (default 0).
    pub fn signature_leeway(mut self, leeway: Duration) -> Uploads {
        self.leeway_secs = leeway.as_secs();
        self
    }

    /// Default lifetime of URLs made by `POST /signatures` (default 1 h).
    pub fn signature_ttl(mut self, ttl: Duration) -> Uploads {
        self.signature_ttl = ttl;
        self
    }

    /// How long an incomplete resumable upload lives without activity (default 24 h).
    pub fn upload_ttl(mut self, ttl: Duration) -> Uploads {
        self.upload_ttl = ttl;
        self
    }

    /// How long the key of an upload session (`POST /uploads`, PROTOCOL §7) stays valid
    /// (default 1 h). Sessions and their unassembled parts are swept one
    /// [`upload_ttl`](Self::upload_ttl) after that.
    pub fn session_ttl(mut self, ttl: Duration) -> Uploads {
        self.session_ttl = ttl;
        self
    }

    /// The app's [hooks](crate::hooks): decide on complete uploads (accept, add metadata,
    /// reject), learn of published files, received chunks and expired uploads.
    pub fn hooks(mut self, hooks: impl UploadHooks) -> Uploads {
        self.hooks = Some(Arc::new(hooks));
        self
    }

    /// A completion hook from a closure: called once per complete upload before it is
    /// published; `Ok(Accept)` publishes it (with the metadata added), `Err(Rejection)`
    /// discards it and answers the rejection. Replaces any [`hooks`](Self::hooks).
    pub fn on_complete<F, Fut>(self, hook: F) -> Uploads
    where
        F: Fn(Completion) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Accept, Rejection>> + Send + 'static,
    {
        self.hooks(OnComplete(hook))
    }

    /// Conditions every upload must meet (PROTOCOL §5), checked as early as the bytes
    /// allow: `filesize` before the body, `kind`/`mimetype`/`width`/`height` on the first
    /// bytes, the rest on the complete file. A failing upload is answered 422
    /// `conditions_failed` and its bytes are deleted.
    pub fn conditions(mut self, conditions: Conditions) -> Uploads {
        self.conditions = Some(Arc::new(conditions));
        self
    }

    // --- limits against hostile clients (issue 9) ---

    /// How long an upload's request body may go without a byte before the request fails
    /// with 408 `request_timeout` and its bytes are discarded (a chunk's never count).
    /// Default [`DEFAULT_BODY_IDLE_TIMEOUT`] (60 s); `None` waits forever. This bounds a
    /// slow-loris *body*; the server bounds slow *headers* (hyper's `header_read_timeout`,
    /// as the demo server does).
    pub fn body_idle_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Uploads {
        self.body_idle_timeout = timeout.into();
        self
    }

    /// Caps the resumable uploads in progress in the storage at `max` (default: no cap): a
    /// chunk that would start one more is answered 429 `too_many_uploads` and stores nothing,
    /// while chunks of uploads already in progress go on. The count is the storage's (every
    /// process sharing it), taken after the new upload is created, so racing creators never
    /// exceed the cap (both may be refused). Uploads end by completing, or by expiring
    /// ([`upload_ttl`](Self::upload_ttl) and the [sweeper](Self::spawn_sweeper)).
    pub fn max_incomplete_uploads(mut self, max: impl Into<Option<usize>>) -> Uploads {
        self.max_incomplete_uploads = max.into();
        self
    }

    /// Deliver uploaded scripts and style sheets with their own type (`text/javascript`,
    /// `text/css`, …), so that pages of the app's origin can include them with
    /// `<script src>` or `<link rel=stylesheet>`. Default `false`: they are delivered as
    /// `text/plain; charset=utf-8`, which browsers (with the `nosniff` every delivery
    /// carries) neither run nor apply, since an uploaded script included by a page of the
    /// app's origin would get around a `script-src 'self'` policy (PROTOCOL.md §8,
    /// SECURITY.md). The File object's `type` says what the bytes are either way. Opt in
    /// only when every uploader is trusted with script on the app's origin, or when files
    /// are delivered from another origin.
    pub fn active_types(mut self, on: bool) -> Uploads {
        self.active_types = on;
        self
    }

    /// When a burst of requests ends, ask glibc's `malloc` to return the free memory it keeps
    /// (`malloc_trim`, once, a second later, off the async threads; a no-op with another
    /// allocator or system). Default `true`: the HTTP server's buffers and the requests'
    /// allocations otherwise stay with the allocator at their peak for good (the demo server
    /// under its load test: 51 MiB after the load without, 25 MiB with); `false` leaves
    /// the allocator alone, for an app that manages it itself.
    pub fn trim_allocator(mut self, on: bool) -> Uploads {
        self.trim_allocator = on;
        self
    }

    /// The storage.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// Starts the background task that discards incomplete uploads idle for longer than the
    /// [`upload_ttl`](Self::upload_ttl) and frees their bytes, and upload sessions expired
    /// for longer than that (checking every TTL / 4, at most
    /// every minute). Needs a tokio runtime; abort the handle to stop it.
    pub fn spawn_sweeper(&self) -> tokio::task::JoinHandle<()> {
        let every = (self.upload_ttl / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
        sweeper::spawn_sweeper_with(
            self.storage.clone(),
            self.upload_ttl,
            every,
            self.hooks.clone(),
        )
    }

    /// The configuration every request of the stack shares.
    pub(crate) fn config(&self) -> Arc<Config> {
        Arc::new(Config {
            storage: self.storage.clone(),
            keys: KeySet::try_new(self.keys.iter().cloned()),
            base_url: self.base_url.clone(),
            prefix: self.prefix.clone(),
            max_request_size: self.max_request_size,
            max_file_size: self.max_file_size,
            style: self.style,
            signature_ttl: self.signature_ttl,
            upload_ttl: self.upload_ttl,
            session_ttl: self.session_ttl,
            hooks: self.hooks.clone(),
            conditions: self.conditions.clone(),
            body_idle_timeout: self.body_idle_timeout,
            max_incomplete_uploads: self.max_incomplete_uploads,
            private: self.private,
            delivery: crate::delivery::DeliveryOptions::default().active_types(self.active_types),
            trim_allocator: self.trim_allocator,
        })
    }

    /// The [`AuthPolicy`] of this stack's [`SignatureLayer`](crate::auth::SignatureLayer):
    /// its keys (none: [`Verifier::without_keys`]), prefix, private delivery, signature
    /// options and response style.
    pub fn auth_policy(&self) -> AuthPolicy {
        let verifier = match KeySet::try_new(self.keys.iter().cloned()) {
            Some(keys) => Verifier::new(keys),
            None => Verifier::without_keys(),
        }
        .legacy_signatures(self.legacy_signatures)
        .leeway_secs(self.leeway_secs);
        AuthPolicy::new(verifier)
            .prefix(self.prefix.clone())
            .private_delivery(self.private)
            .style(self.style)
    }

    /// The upload [`Handler`] alone, without signature checks, as a terminal service
    /// (404/405 for anything it does not serve): simple uploads, chunks, status queries,
    /// delivery, upload sessions and the signatures API over the storage. It authorizes
    /// each request from the [`Grant`](crate::Grant) in its extensions — put there by the
    /// app's own middleware, or by a [`SignatureLayer`](crate::auth::SignatureLayer) in
    /// front of it. No API key is needed; without one, `POST /signatures` and
    /// `POST /uploads` answer 403 `forbidden`.
    pub fn handler(&self) -> Handler<NotFound> {
        Handler::new(self.config(), NotFound, true)
    }

    /// The upload [`Handler`] alone as a layer around the app's service (see
    /// [`handler`](Self::handler) for what it serves and how it authorizes): requests that
    /// are not its own, and deliveries of missing files, reach the app.
    pub fn handler_layer(&self) -> HandlerLayer {
        HandlerLayer { cfg: self.config() }
    }

    /// The stack as a layer around an app's service: requests under the
    /// [`prefix`](Self::prefix) that are uploads, deliveries of existing files or
    /// `POST /signatures` are answered here; everything else reaches the app. It is the
    /// [`SignatureLayer`](crate::auth::SignatureLayer) of [`auth_policy`](Self::auth_policy)
    /// around the [`handler_layer`](Self::handler_layer).
    pub fn layer(&self) -> UploadsLayer {
        UploadsLayer {
            cfg: self.config(),
            policy: self.auth_policy(),
        }
    }

    /// The stack as a standalone service (404/405 for anything it does not serve): the
    /// [`SignatureLayer`](crate::auth::SignatureLayer) of [`auth_policy`](Self::auth_policy)
    /// around the [`handler`](Self::handler).
    pub fn service(&self) -> UploadsService {
        UploadsService {
            inner: Signature::new(self.handler(), self.auth_policy()),
        }
    }
}

/// The [`Layer`] made by [`Uploads::handler_layer`]: wraps the app's service in a
/// [`Handler`].
#[derive(Clone)]
#[must_use]
pub struct HandlerLayer {
    cfg: Arc<Config>,
}

impl std::fmt::Debug for HandlerLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlerLayer")
            .field("prefix", &self.cfg.prefix)
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for HandlerLayer {
    type Service = Handler<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Handler::new(self.cfg.clone(), inner, false)
    }
}

/// The [`Layer`] made by [`Uploads::layer`].
#[derive(Clone)]
#[must_use]
pub struct UploadsLayer {
    cfg: Arc<Config>,
    policy: AuthPolicy,
}

impl std::fmt::Debug for UploadsLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadsLayer")
            .field("prefix", &self.cfg.prefix)
            .finish_non_exhaustive()
    }
}

/// The middleware made by [`UploadsLayer`]: signature checks, then the upload handler,
/// then the app's service `S`.
pub type UploadsMiddleware<S> = Signature<Handler<S>>;

impl<S> Layer<S> for UploadsLayer {
    type Service = UploadsMiddleware<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Signature::new(
            HandlerLayer {
                cfg: self.cfg.clone(),
            }
            .layer(inner),
            self.policy.clone(),
        )
    }
}

/// The standalone service made by [`Uploads::service`].
#[derive(Clone, Debug)]
pub struct UploadsService {
    inner: Signature<Handler<NotFound>>,
}

impl<B> Service<Request<B>> for UploadsService
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError> + Send,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = futures_util::future::MapOk<
        <Signature<Handler<NotFound>> as Service<Request<B>>>::Future,
        fn(
            Response<
                http_body_util::Either<
                    http_body_util::Either<ResponseBody, ResponseBody>,
                    ResponseBody,
                >,
            >,
        ) -> Response<ResponseBody>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Service::<Request<B>>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        use futures_util::TryFutureExt;
        fn flatten(
            res: Response<
                http_body_util::Either<
                    http_body_util::Either<ResponseBody, ResponseBody>,
                    ResponseBody,
                >,
            >,
        ) -> Response<ResponseBody> {
            use http_body_util::Either::{Left, Right};
            res.map(|b| match b {
                Left(Left(b)) | Left(Right(b)) | Right(b) => b,
            })
        }
        self.inner
            .call(req)
            .map_ok(flatten as fn(_) -> Response<ResponseBody>)
    }
}
