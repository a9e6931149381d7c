//! The tower middleware that enforces PROTOCOL.md §2 in front of any service.

use super::unix_now;
use super::verify::{Verifier, VerifyInput};
use crate::Grant;
use crate::error::ApiError;
use crate::response::ResponseFuture;
use crate::response::{ResponseStyle, error_response};
use crate::route::Endpoint;
use http::{Request, Response, header};
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_layer::Layer;
use tower_service::Service;

/// What the [`Signature`] middleware checks, and how it answers refusals.
///
/// For a request whose path is under [`prefix`](AuthPolicy::prefix):
///
/// | request | check |
/// |---|---|
/// | `PUT`/`POST` on `<prefix>/store/single`, `<prefix>/store/resumable` (exactly these raw paths) | none (upload-session keys are checked by the endpoint) |
/// | `PUT` anything else | a bearer key or a `put` signed URL |
/// | `POST <prefix>/signatures`, `POST <prefix>/uploads` | a bearer key only |
/// | `GET`/`HEAD` | none, or a bearer key / `get` signed URL when [`private_delivery`](AuthPolicy::private_delivery) |
/// | any other method, other `POST`s | none |
///
/// Requests outside the prefix pass through untouched.
#[derive(Clone, Debug)]
pub struct AuthPolicy {
    /// Checks the credentials.
    pub verifier: Verifier,
    /// The mount prefix (e.g. `/files`); `""` mounts at the root. A trailing `/` is ignored.
    pub prefix: String,
    /// `GET`/`HEAD` need credentials too.
    pub private_delivery: bool,
    /// The default style of error responses (the request's `Accept-Version` can change it).
    pub style: ResponseStyle,
}

impl AuthPolicy {
    /// A policy with `verifier`, mounted at the root, public delivery, envelope-style errors.
    pub fn new(verifier: Verifier) -> Self {
        AuthPolicy {
            verifier,
            prefix: String::new(),
            private_delivery: false,
            style: ResponseStyle::default(),
        }
    }

    /// Sets the mount prefix.
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sets whether delivery (`GET`/`HEAD`) needs credentials.
    #[must_use]
    pub fn private_delivery(mut self, on: bool) -> Self {
        self.private_delivery = on;
        self
    }

    /// Sets the default style of error responses.
    #[must_use]
    pub fn style(mut self, style: ResponseStyle) -> Self {
        self.style = style;
        self
    }

    /// The prefix as matched: a leading `/`, no trailing `/`, or `""`.
    fn normalized(mut self) -> Self {
        self.prefix = crate::route::normalize_prefix(&self.prefix);
        self
    }

    /// What to check for a request ([`Endpoint`], from the one route table): `None` to pass
    /// it through, `Some(bearer_only)` to verify it.
    fn check_for(&self, endpoint: Endpoint<'_>) -> Option<bool> {
        match endpoint {
            // Upload-session keys are checked by their endpoints.
            e if e.is_session_key_endpoint() => None,
            Endpoint::Upload(_) => Some(false),
            Endpoint::Signatures | Endpoint::CreateSession | Endpoint::LooksLikeAdmin => Some(true),
            // A tus creation names its file in its metadata: a bearer key (or the app's
            // grant), checked against the file by the handler. An upload URL is a capability.
            Endpoint::TusCreate => Some(true),
            Endpoint::TusOptions | Endpoint::TusUpload(_) => None,
            Endpoint::Deliver(_) => self.private_delivery.then_some(false),
            _ => None,
        }
    }
}

/// A [`Layer`] that checks credentials (bearer keys, signed URLs) before the inner service,
/// following an [`AuthPolicy`].
///
/// Refused requests are answered by the middleware itself (401/403, or 400 `path_invalid`
/// for a validly signed but invalid path), without calling the inner service or reading the
/// body. Accepted requests get a [`Grant`] in their extensions (an API key's, or a signed
/// URL's: its one file, for its one method, until its expiry). A request that already
/// carries a [`Grant`] (the app's own middleware authorized it) passes unchecked.
///
/// ```
/// use tower_uploads::auth::{ApiKey, AuthPolicy, KeySet, SignatureLayer, Verifier};
///
/// let keys = KeySet::new([ApiKey::new("secret")]);
/// let layer = SignatureLayer::new(AuthPolicy::new(Verifier::new(keys)).prefix("/files"));
/// // axum: `Router::new().route(...).layer(layer)`; tower: `ServiceBuilder::new().layer(layer)`.
/// # let _ = layer;
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct SignatureLayer {
    policy: Arc<AuthPolicy>,
}

impl SignatureLayer {
    /// A layer enforcing `policy`.
    pub fn new(policy: AuthPolicy) -> Self {
        SignatureLayer {
            policy: Arc::new(policy.normalized()),
        }
    }

    /// The policy (with its prefix normalized).
    pub fn policy(&self) -> &AuthPolicy {
        &self.policy
    }
}

impl<S> Layer<S> for SignatureLayer {
    type Service = Signature<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Signature {
            inner,
            policy: Arc::clone(&self.policy),
        }
    }
}

/// The middleware made by [`SignatureLayer`].
///
/// # Response type
///
/// `Response<Either<ResBody, ResponseBody>>`: the inner service's response is passed on
/// unchanged as [`Either::Left`](http_body_util::Either::Left), a refusal made here is
/// [`Either::Right`](http_body_util::Either::Right) with a [`ResponseBody`](crate::body::ResponseBody).
/// Nothing is boxed on the accepted path. [`Either`](http_body_util::Either) is a
/// `Body<Data = Bytes, Error = BoxError>` whenever `ResBody: Body<Data = Bytes>` with
/// `ResBody::Error: Into<BoxError>`, so the middleware composes with axum's
/// `Router::layer` (the response implements `IntoResponse`), hyper and warp.
#[derive(Clone, Debug)]
pub struct Signature<S> {
    inner: S,
    policy: Arc<AuthPolicy>,
}

impl<S> Signature<S> {
    /// Wraps `inner` with `policy`.
    pub fn new(inner: S, policy: AuthPolicy) -> Self {
        Signature {
            inner,
            policy: Arc::new(policy.normalized()),
        }
    }

    /// A [`SignatureLayer`] with `policy`.
    pub fn layer(policy: AuthPolicy) -> SignatureLayer {
        SignatureLayer::new(policy)
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, consuming the middleware.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// Checks a request: `Ok(None)` to pass it through untouched, `Ok(Some(grant))` when its
    /// credentials were verified, `Err` to refuse it. A request that already carries a
    /// [`Grant`] (from the app's own middleware) passes untouched.
    fn check<B>(&self, req: &Request<B>) -> Result<Option<Grant>, ApiError> {
        let policy = &*self.policy;
        let Some(rest) = crate::route::strip_prefix(&policy.prefix, req.uri().path()) else {
            return Ok(None);
        };
        if req.extensions().get::<Grant>().is_some() {
            return Ok(None);
        }
        let Some(bearer_only) = policy.check_for(Endpoint::of(req.method(), rest)) else {
            return Ok(None);
        };
        let input = VerifyInput {
            method: req.method(),
            raw_path: rest,
            query: req.uri().query(),
            authorization: req.headers().get(header::AUTHORIZATION),
            bearer_only,
        };
        let verified = policy.verifier.verify(&input, unix_now())?;
        let grant = Grant::from(verified);
        // The grant ends when the verifier would refuse the URL: at its expiry plus leeway.
        Ok(Some(match grant.expiry() {
            Some(end) => grant.expires_at(end.saturating_add(policy.verifier.leeway())),
            None => grant,
        }))
    }
}

impl<S, B, ResBody> Service<Request<B>> for Signature<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone,
{
    type Response = Response<http_body_util::Either<ResBody, crate::body::ResponseBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        match self.check(&req) {
            Ok(grant) => {
                if let Some(grant) = grant {
                    req.extensions_mut().insert(grant);
                }
                // Call the service that was driven to readiness; keep a fresh clone.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::inner(inner.call(req))
            }
            Err(err) => {
                tracing::debug!(
                    method = %req.method(),
                    path = req.uri().path(),
                    kind = %err.kind(),
                    "request refused"
                );
                if let Some(kind) = crate::metrics::Kind::of_request(&self.policy.prefix, &req) {
                    crate::metrics::upload_refused(kind, &err);
                }
                let mut res = error_response(&req, self.policy.style, &err);
                if has_body(&req) {
                    // Refused without reading the body: this connection cannot carry
                    // another request, and the client should know before it tries.
                    res.headers_mut().insert(
                        http::header::CONNECTION,
                        http::HeaderValue::from_static("close"),
                    );
                }
                ResponseFuture::refused(res)
            }
        }
    }
}

/// Whether a request announces a body (a non-zero `Content-Length`, or any
/// `Transfer-Encoding`).
pub(crate) fn has_body<B>(req: &Request<B>) -> bool {
    let headers = req.headers();
    headers.contains_key(http::header::TRANSFER_ENCODING)
        || headers
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{ApiKey, KeySet, SignedMethod, Signer};
    use crate::path::FilePath;
    use bytes::Bytes;
    use http::Method;
    use http::StatusCode;
    use http_body_util::{BodyExt, Full};
    use std::convert::Infallible;
    use tower::ServiceExt;

    const KEY: &str = "layer-key";

    #[derive(Clone, Debug)]
    struct Seen(Option<Grant>);

    fn policy() -> AuthPolicy {
        AuthPolicy::new(Verifier::new(KeySet::new([ApiKey::new(KEY)])))
    }

    struct Answer {
        status: StatusCode,
        /// `Some` when the inner service was called.
        seen: Option<Seen>,
        kind: Option<String>,
        www_authenticate: bool,
    }

    async fn run(policy: AuthPolicy, req: Request<Full<Bytes>>) -> Answer {
        let inner = tower::service_fn(|req: Request<Full<Bytes>>| async move {
            let seen = Seen(req.extensions().get::<Grant>().cloned());
            let mut res = Response::new(Full::new(Bytes::from_static(b"inner")));
            res.extensions_mut().insert(seen);
            Ok::<_, Infallible>(res)
        });
        let svc = SignatureLayer::new(policy).layer(inner);
        let res = svc.oneshot(req).await.unwrap();
        let status = res.status();
        let seen = res.extensions().get::<Seen>().cloned();
        let www_authenticate = res.headers().contains_key(header::WWW_AUTHENTICATE);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let kind = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                let kind = v.get("kind").or_else(|| v.pointer("/error/kind"))?;
                kind.as_str().map(str::to_owned)
            });
        Answer {
            status,
            seen,
            kind,
            www_authenticate,
        }
    }

    fn req(method: Method, uri: &str) -> http::request::Builder {
        Request::builder().method(method).uri(uri)
    }

    fn signed(path: &str, method: SignedMethod, expiry: u64) -> String {
        let signer = Signer::new(ApiKey::new(KEY), "");
        signer
            .sign(&FilePath::new(path).unwrap(), method, expiry)
            .url
    }

    fn later() -> u64 {
        unix_now() + 3600
    }

    #[tokio::test]
    async fn put_needs_credentials() {
        let r = run(
            policy(),
            req(Method::PUT, "/a.png").body(Full::default()).unwrap(),
        )
        .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.kind.as_deref(), Some("token_missing"));
        assert!(r.www_authenticate);
        assert!(r.seen.is_none(), "inner service called");

        let url = signed("dir/a b.png", SignedMethod::Put, later());
        let r = run(
            policy(),
            req(Method::PUT, &url).body(Full::default()).unwrap(),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        let g = r.seen.unwrap().0.unwrap();
        assert!(g.permits_write(&FilePath::new("dir/a b.png").unwrap()));
        assert!(!g.permits_write(&FilePath::new("dir/a.png").unwrap()));
        assert!(!g.is_admin());

        let r = run(
            policy(),
            req(Method::PUT, "/a.png")
                .header("authorization", format!("Bearer {KEY}"))
                .body(Full::default())
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.seen.unwrap().0.unwrap(), Grant::api_key());

        let r = run(
            policy(),
            req(Method::PUT, "/a.png")
                .header("authorization", "Bearer wrong")
                .body(Full::default())
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.kind.as_deref(), Some("token_invalid"));
        assert!(r.seen.is_none());
    }

    #[tokio::test]
    async fn refusals_in_both_styles() {
        let url = signed("a.png", SignedMethod::Put, 1);
        let r = run(
            policy(),
            req(Method::PUT, &url).body(Full::default()).unwrap(),
        )
        .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert_eq!(r.kind.as_deref(), Some("signature_expired"));
        assert!(r.seen.is_none());

        let url = signed("a.png", SignedMethod::Get, later());
        let r = run(
            policy(),
            req(Method::PUT, &url)
                .header("accept-version", "2025-08-20")
                .body(Full::default())
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert_eq!(r.kind.as_deref(), Some("signature_invalid"));

        let r = run(
            policy().style(ResponseStyle::Bare),
            req(Method::PUT, "/a.png?signature=x")
                .body(Full::default())
                .unwrap(),
        )
        .await;
        assert_eq!(r.kind.as_deref(), Some("signature_invalid"));
    }

    #[tokio::test]
    async fn delivery() {
        // Public: untouched, even with a bad signature.
        let r = run(
            policy(),
            req(Method::GET, "/a.png?signature=bad")
                .body(Full::default())
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(r.seen.unwrap().0.is_none());

        let private = || policy().private_delivery(true);
        for m in [Method::GET, Method::HEAD] {
            let r = run(
                private(),
                req(m.clone(), "/a.png").body(Full::default()).unwrap(),
            )
            .await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{m}");
            assert_eq!(r.kind.as_deref(), Some("token_missing"));
            assert!(r.seen.is_none());

            let url = signed("a.png", SignedMethod::Get, later());
            let r = run(
                private(),
                req(m.clone(), &url).body(Full::default()).unwrap(),
            )
            .await;
            assert_eq!(r.status, StatusCode::OK, "{m}");
            let g = r.seen.unwrap().0.unwrap();
            let a = FilePath::new("a.png").unwrap();
            assert!(g.permits_read(&a) && !g.permits_write(&a));

            let url = signed("a.png", SignedMethod::Put, later());
            let r = run(
                private(),
                req(m.clone(), &url).body(Full::default()).unwrap(),
            )
            .await;
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{m}");
        }
    }

    #[tokio::test]
    async fn bearer_only_endpoints() {
        for path in [
            "/signatures",
            "/uploads",
            "/%73ignatures",
            "/uploads/",
            "//signatures",
        ] {
            let url = format!(
                "{path}?{}",
                signed("a.png", SignedMethod::Put, later())
                    .split_once('?')
                    .unwrap()
                    .1
            );
            let r = run(
                policy(),
                req(Method::POST, &url).body(Full::default()).unwrap(),
            )
            .await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path}");
            assert_eq!(r.kind.as_deref(), Some("token_missing"), "{path}");
            assert!(r.seen.is_none());

            let r = run(
                policy(),
                req(Method::POST, path)
                    .header("authorization", format!("bearer {KEY}"))
                    .body(Full::default())
                    .unwrap(),
            )
            .await;
            assert_eq!(r.status, StatusCode::OK, "{path}");
            assert_eq!(r.seen.unwrap().0.unwrap(), Grant::api_key());
        }
        // Other POSTs and other methods pass untouched.
        for (m, path) in [
            (Method::POST, "/something"),
            (Method::POST, "/store/single?key=k"),
            (Method::DELETE, "/a.png"),
            (Method::OPTIONS, "/a.png"),
            (Method::PATCH, "/a.png"),
        ] {
            let r = run(
                policy(),
                req(m.clone(), path).body(Full::default()).unwrap(),
            )
            .await;
            assert_eq!(r.status, StatusCode::OK, "{m} {path}");
            assert!(r.seen.unwrap().0.is_none());
        }
    }

    #[tokio::test]
    async fn store_endpoints_pass_exactly() {
        for (m, path) in [
            (Method::POST, "/store/single?key=k"),
            (Method::PUT, "/store/resumable?key=k"),
            (Method::POST, "/store/resumable?key=k"),
        ] {
            let r = run(
                policy(),
                req(m.clone(), path).body(Full::default()).unwrap(),
            )
            .await;
            assert_eq!(r.status, StatusCode::OK, "{m} {path}");
        }
        // Reading a file at those paths is delivery: private delivery checks it.
        for m in [Method::GET, Method::HEAD] {
            let r = run(
                policy().private_delivery(true),
                req(m.clone(), "/store/single")
                    .body(Full::default())
                    .unwrap(),
            )
            .await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{m}");
        }
        for path in [
            // Not a session endpoint: a file upload, checked.
            "/store/single",
            "/store/resumable2",
            "/store%2Fsingle",
            "/store/single/x",
            "//store/single",
        ] {
            let r = run(
                policy(),
                req(Method::PUT, path).body(Full::default()).unwrap(),
            )
            .await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path}");
        }
    }

    #[tokio::test]
    async fn prefix() {
        let p = || policy().prefix("files/");
        let r = run(
            p(),
            req(Method::PUT, "/other/a.png")
                .body(Full::default())
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        let r = run(
            p(),
            req(Method::PUT, "/filesx/a.png")
                .body(Full::default())
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        let r = run(
            p(),
            req(Method::PUT, "/files/a.png")
                .body(Full::default())
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        let r = run(
            p(),
            req(Method::PUT, "/files").body(Full::default()).unwrap(),
        )
        .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        let r = run(
            p(),
            req(Method::PUT, "/files/store/resumable?key=k")
                .body(Full::default())
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        let r = run(
            p(),
            req(Method::POST, "/files/signatures")
                .body(Full::default())
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);

        // The signed path is the path after the prefix.
        let url = format!("/files{}", signed("d/a.png", SignedMethod::Put, later()));
        let r = run(p(), req(Method::PUT, &url).body(Full::default()).unwrap()).await;
        assert_eq!(r.status, StatusCode::OK);
        let g = r.seen.unwrap().0.unwrap();
        assert!(g.permits_write(&FilePath::new("d/a.png").unwrap()));
        assert_eq!(SignatureLayer::new(p()).policy().prefix, "/files");
    }

    #[tokio::test]
    async fn composes_with_axum() {
        use axum::Router;
        use axum::routing::put;
        let app: Router = Router::new()
            .route(
                "/{*path}",
                put(|req: axum::extract::Request| async move {
                    match req.extensions().get::<Grant>() {
                        Some(g) if g.is_admin() => "key".to_owned(),
                        Some(g) => format!("{:?}", g.scope()),
                        None => "none".to_owned(),
                    }
                }),
            )
            .layer(SignatureLayer::new(policy()));

        let res = app
            .clone()
            .oneshot(
                Request::put("/a.png")
                    .body(axum::body::Body::from("x"))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

        let url = signed("a.png", SignedMethod::Put, later());
        let res = app
            .oneshot(Request::put(url).body(axum::body::Body::from("x")).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], br#"File("a.png")"#);
    }
}
