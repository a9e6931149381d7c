//! The terminal upload service: routes a request to upload, delivery or the JSON API, or
//! hands it to the inner service (layer mode) when it is not ours.

use futures_util::future::BoxFuture;
use http::{HeaderValue, Request, Response, header};
use http_body::Body;
use http_body_util::Either;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_service::Service;

use crate::Grant;
use crate::body::{BodySeen, BoxError, ResponseBody, Tracked};
use crate::config::Config;
use crate::error::{ApiError, ErrorKind};
use crate::metrics::{self, Kind};
use crate::path::FilePath;
use crate::response::{Answer, RequestFacts, ResponseStyle};
use crate::route::Endpoint;
use crate::upload::body::IdleTimeout;

/// Routes requests under the mount prefix to the upload endpoints; everything else goes to
/// `S` (the app's own service in layer mode, [`NotFound`] for a standalone service).
#[derive(Clone)]
pub struct Handler<S> {
    cfg: Arc<Config>,
    inner: S,
    /// Standalone: answer 404/405 ourselves instead of falling through.
    terminal: bool,
}

impl<S> std::fmt::Debug for Handler<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handler")
            .field("prefix", &self.cfg.prefix)
            .field("terminal", &self.terminal)
            .finish_non_exhaustive()
    }
}

impl<S> Handler<S> {
    pub(crate) fn new(cfg: Arc<Config>, inner: S, terminal: bool) -> Self {
        Handler {
            cfg,
            inner,
            terminal,
        }
    }
}

/// What a request under the prefix is (`None` from [`Handler::route`]: not ours).
enum Route {
    Signatures,
    /// `POST /uploads`: a new upload session.
    CreateSession,
    /// `POST /store/single`, `PUT`/`POST /store/resumable`: uploads with a session key.
    Session(SessionCall),
    Upload(FilePath),
    Deliver(FilePath),
    /// The tus endpoint (PROTOCOL.md §9).
    Tus(TusCall),
    Refuse(ApiError),
}

/// Which tus request a request is.
enum TusCall {
    Create,
    Options,
    /// `HEAD`, `PATCH` or `DELETE` on an upload URL: its id.
    Upload(String),
}

/// Which session endpoint a request is for.
#[derive(Clone, Copy)]
enum SessionCall {
    Single,
    Part,
    Complete,
}

impl<S> Handler<S> {
    /// What a request is ([`Endpoint`], from the one route table), and whether its grant
    /// allows it; `None`: not ours.
    fn route<B>(&self, req: &Request<B>) -> Option<Route> {
        let rest = self.cfg.strip_prefix(req.uri().path())?;
        let not_ours = |err: ApiError| self.terminal.then_some(Route::Refuse(err));
        let grant = req.extensions().get::<Grant>();
        let route = match Endpoint::of(req.method(), rest) {
            Endpoint::Signatures => Route::Signatures,
            Endpoint::CreateSession => Route::CreateSession,
            Endpoint::SessionSingle => Route::Session(SessionCall::Single),
            Endpoint::SessionPart => Route::Session(SessionCall::Part),
            Endpoint::SessionComplete => Route::Session(SessionCall::Complete),
            Endpoint::Upload(raw) => match FilePath::from_uri_path(raw) {
                Ok(path) => Route::Upload(path),
                Err(e) => Route::Refuse(e.into()),
            },
            Endpoint::Deliver(raw) => match FilePath::from_uri_path(raw) {
                Ok(path) => Route::Deliver(path),
                Err(e) => return not_ours(e.into()),
            },
            Endpoint::TusCreate => Route::Tus(TusCall::Create),
            Endpoint::TusOptions => Route::Tus(TusCall::Options),
            Endpoint::TusUpload(id) => Route::Tus(TusCall::Upload(id.to_owned())),
            Endpoint::LooksLikeAdmin | Endpoint::Other => {
                return not_ours(method_not_allowed());
            }
        };
        Some(match authorize(&self.cfg, grant, &route) {
            Ok(()) => route,
            Err(err) => Route::Refuse(err),
        })
    }
}

/// Whether `grant` allows `route`: writes need a grant covering the file; reads need one
/// when delivery is private; the API endpoints need an API key's grant (and a key to sign
/// with). Session-key endpoints check their key themselves.
fn authorize(cfg: &Config, grant: Option<&Grant>, route: &Route) -> Result<(), ApiError> {
    let needs = match route {
        Route::Upload(path) => Need::Write(path),
        Route::Deliver(path) if cfg.private => Need::Read(path),
        Route::Signatures | Route::CreateSession => Need::Admin,
        // A tus creation's grant is checked against the file its metadata names; an
        // upload URL is a capability.
        Route::Deliver(_) | Route::Session(_) | Route::Tus(_) | Route::Refuse(_) => return Ok(()),
    };
    let Some(grant) = grant else {
        return Err(unauthenticated());
    };
    if grant.expired(crate::auth::unix_now()) {
        return Err(ApiError::new(
            ErrorKind::SignatureExpired,
            "the credentials of this request have expired",
        ));
    }
    let allowed = match needs {
        Need::Write(path) => grant.permits_write(path),
        Need::Read(path) => grant.permits_read(path),
        Need::Admin => grant.is_admin(),
    };
    if !allowed {
        return Err(ApiError::new(
            ErrorKind::Forbidden,
            match needs {
                Need::Write(_) => "these credentials may not write this file",
                Need::Read(_) => "these credentials may not read this file",
                Need::Admin => "this endpoint needs an API key (Authorization: Bearer)",
            },
        ));
    }
    if matches!(needs, Need::Admin) {
        cfg.signing_key()?;
    }
    Ok(())
}

enum Need<'a> {
    Write(&'a FilePath),
    Read(&'a FilePath),
    Admin,
}

fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorKind::MethodNotAllowed,
        "this endpoint accepts GET, HEAD and PUT on files, POST on /signatures, /uploads and /store/…",
    )
}

fn with_allow(mut res: Response<ResponseBody>, err: &ApiError) -> Response<ResponseBody> {
    if err.kind() == ErrorKind::MethodNotAllowed {
        res.headers_mut().insert(
            header::ALLOW,
            HeaderValue::from_static("GET, HEAD, PUT, POST"),
        );
    }
    res
}

impl<S, B, ResBody> Service<Request<B>> for Handler<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError> + Send,
    ResBody: Send + 'static,
{
    type Response = Response<Either<ResBody, ResponseBody>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let Some(route) = self.route(&req) else {
            let clone = self.inner.clone();
            let mut inner = std::mem::replace(&mut self.inner, clone);
            return Box::pin(async move { Ok(inner.call(req).await?.map(Either::Left)) });
        };
        let cfg = self.cfg.clone();
        let terminal = self.terminal;
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let span = crate::stack::request_span(&req, route_path(&route, req.uri().path()));
        let outer = span.clone();
        let endpoint = metric_endpoint(&route, req.headers());
        let since = std::time::Instant::now();
        let busy = super::memory::Busy::enter(cfg.trim_allocator);
        let fut = async move {
            let _busy = busy;
            let style = ResponseStyle::negotiate(req.headers(), cfg.style);
            let facts = RequestFacts::of(&req);
            let answer = Answer::new(style, &facts);
            let res = match route {
                Route::Refuse(err) => {
                    if let Some(kind) = Kind::of_request(&cfg.prefix, &req) {
                        metrics::upload_refused(kind, &err);
                    }
                    let mut res = with_allow(answer.error(&err), &err);
                    if crate::auth::has_body(&req) {
                        // Refused without reading the body: the connection cannot carry
                        // another request.
                        res.headers_mut()
                            .insert(header::CONNECTION, HeaderValue::from_static("close"));
                    }
                    res
                }
                Route::Signatures => crate::api::signatures::create(&cfg, req, &answer)
                    .await
                    .unwrap_or_else(|e| answer.error(&e)),
                Route::CreateSession => {
                    let answer = Answer::new(ResponseStyle::Envelope, &facts);
                    match crate::session::create(&cfg, req, &answer).await {
                        Ok(res) => {
                            metrics::upload_started(Kind::Session);
                            res
                        }
                        Err(e) => {
                            metrics::upload_refused(Kind::Session, &e);
                            answer.error(&e)
                        }
                    }
                }
                Route::Session(call) => {
                    // The clients of this API read the envelope, whatever they send.
                    let answer = Answer::new(ResponseStyle::Envelope, &facts);
                    let (req, seen) = tracked(req, cfg.body_idle_timeout);
                    let mut res = match call {
                        SessionCall::Single => crate::session::single(&cfg, req, &answer).await,
                        SessionCall::Part => crate::session::put_part(&cfg, req, &answer).await,
                        SessionCall::Complete => crate::session::complete(&cfg, req, &answer).await,
                    }
                    .map_or_else(
                        |e| {
                            metrics::upload_refused(Kind::Session, &e);
                            answer.error(&e)
                        },
                        |res| {
                            if !matches!(call, SessionCall::Part) && res.status().is_success() {
                                metrics::upload_completed(Kind::Session);
                            }
                            res
                        },
                    );
                    body_done(&span, &mut res, &seen);
                    res
                }
                Route::Upload(path) => {
                    let (req, seen) = tracked(req, cfg.body_idle_timeout);
                    let kind = Kind::of_put(req.headers());
                    let mut res = if kind == Kind::Chunked {
                        crate::upload::put_chunk(&cfg, req, &path).await
                    } else {
                        crate::upload::put_whole(&cfg, req, &path).await
                    }
                    .map_or_else(
                        |e| {
                            metrics::upload_refused(kind, &e);
                            answer.error(&e)
                        },
                        |outcome| {
                            if outcome.created() {
                                metrics::upload_completed(kind);
                            }
                            outcome.respond(&answer)
                        },
                    );
                    body_done(&span, &mut res, &seen);
                    res
                }
                Route::Tus(call) => {
                    let (req, seen) = tracked(req, cfg.body_idle_timeout);
                    let method = req.method().clone();
                    let grant = req.extensions().get::<Grant>().cloned();
                    let done = match call {
                        TusCall::Options => Ok(crate::upload::tus::options(&cfg)),
                        TusCall::Create => {
                            crate::upload::tus::create(&cfg, req, grant.as_ref()).await
                        }
                        TusCall::Upload(id) => match method {
                            http::Method::HEAD => crate::upload::tus::head(&cfg, &id).await,
                            http::Method::PATCH => crate::upload::tus::patch(&cfg, req, &id).await,
                            _ => crate::upload::tus::delete(&cfg, &id).await,
                        },
                    };
                    let mut res = done.unwrap_or_else(|e| {
                        metrics::upload_refused(Kind::Chunked, &e);
                        crate::upload::tus::tus_error(answer.error(&e))
                    });
                    body_done(&span, &mut res, &seen);
                    res
                }
                Route::Deliver(path) => {
                    match crate::delivery::deliver_with(
                        &*cfg.storage,
                        &path,
                        req.method(),
                        req.headers(),
                        style,
                        &facts,
                        cfg.delivery,
                    )
                    .await
                    {
                        Ok(res) => res,
                        Err(e) if e.kind() == ErrorKind::FileNotFound => {
                            // `<media id>/original` of a media published under its alias.
                            let aliased = match crate::session::resolve_media(&cfg, &path).await {
                                Some(target) => Some(
                                    crate::delivery::deliver_with(
                                        &*cfg.storage,
                                        &target,
                                        req.method(),
                                        req.headers(),
                                        style,
                                        &facts,
                                        cfg.delivery,
                                    )
                                    .await,
                                ),
                                None => None,
                            };
                            match aliased {
                                Some(Ok(res)) => res,
                                Some(Err(e2)) if e2.kind() != ErrorKind::FileNotFound => {
                                    with_allow(answer.error(&e2), &e2)
                                }
                                _ if !terminal => {
                                    return Ok(inner.call(req).await?.map(Either::Left));
                                }
                                _ => with_allow(answer.error(&e), &e),
                            }
                        }
                        Err(e) => with_allow(answer.error(&e), &e),
                    }
                }
            };
            crate::stack::record_outcome(&span, &res);
            metrics::request_done(endpoint, since);
            Ok(res.map(Either::Right))
        };
        Box::pin(tracing::Instrument::instrument(fut, outer))
    }
}

/// The path a request's span names: the file path (never the query, which may hold a
/// signature), or the endpoint.
fn route_path<'a>(route: &'a Route, uri_path: &'a str) -> &'a str {
    match route {
        Route::Signatures => "signatures",
        Route::Upload(path) | Route::Deliver(path) => path.as_str(),
        // Session endpoints: the path only; their `key` is in the query.
        Route::CreateSession | Route::Session(_) | Route::Tus(_) | Route::Refuse(_) => uri_path,
    }
}

/// The `endpoint` label of a request's duration.
fn metric_endpoint(route: &Route, headers: &http::HeaderMap) -> metrics::Endpoint {
    match route {
        Route::Upload(_) if Kind::of_put(headers) == Kind::Chunked => metrics::Endpoint::Chunked,
        Route::Upload(_) => metrics::Endpoint::Simple,
        // Counted with the chunks until tus has a label of its own.
        Route::Tus(_) => metrics::Endpoint::Chunked,
        Route::CreateSession | Route::Session(_) => metrics::Endpoint::Session,
        Route::Deliver(_) => metrics::Endpoint::Deliver,
        Route::Signatures => metrics::Endpoint::Signatures,
        Route::Refuse(_) => metrics::Endpoint::Refused,
    }
}

/// The request with a body that records whether it was read to its end, and how much of it,
/// and that fails when no byte arrives for `idle` (408 on uploads: see
/// `Uploads::body_idle_timeout`).
fn tracked<B>(
    req: Request<B>,
    idle: Option<std::time::Duration>,
) -> (Request<Tracked<IdleTimeout<B>>>, std::sync::Arc<BodySeen>)
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let (parts, body) = req.into_parts();
    let (body, seen) = Tracked::new(IdleTimeout::new(body, idle));
    (Request::from_parts(parts, body), seen)
}

/// After an answer to a request with a body: the span records how much of it was read, and
/// the answer closes the connection unless it was read to its end.
fn body_done(span: &tracing::Span, res: &mut Response<ResponseBody>, seen: &BodySeen) {
    span.record("bytes", seen.bytes());
    close_unless_read(res, seen);
}

/// Answered without reading the whole body: the connection cannot carry another request;
/// say so rather than let the client find out.
fn close_unless_read(res: &mut Response<ResponseBody>, seen: &BodySeen) {
    if !seen.ended() {
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
}

fn unauthenticated() -> ApiError {
    ApiError::new(
        ErrorKind::TokenMissing,
        "this request needs an Authorization: Bearer key or a signed URL",
    )
}

/// The inner service of a standalone [`UploadsService`](super::UploadsService): nothing
/// falls through to it (the handler answers 404/405 itself), but it completes the types.
#[derive(Clone, Copy, Debug, Default)]
pub struct NotFound;

impl<B> Service<Request<B>> for NotFound {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let err = ApiError::new(ErrorKind::FileNotFound, "no file at this path");
        std::future::ready(Ok(crate::response::error_response(
            &req,
            ResponseStyle::Envelope,
            &err,
        )))
    }
}
