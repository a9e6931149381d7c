//! [`ConditionsLayer`]: app-wide upload conditions as a tower middleware.

use super::eval::{Decision, Facts};
use super::extension::UploadConditions;
use super::model::{Conditions, Key};
use crate::headers::content_range::{self, ContentRange};
use crate::response::ResponseFuture;
use crate::response::{ResponseStyle, error_response};
use crate::route::Endpoint;
use http::{HeaderMap, Request, Response, header};
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_layer::Layer;
use tower_service::Service;

/// A [`Layer`] applying app-wide upload conditions (PROTOCOL.md §5: "set per app, a policy
/// on the layer").
///
/// The middleware never reads the body. For every request it adds its conditions to the
/// request's [`UploadConditions`] extension (creating it if an outer layer did not), where
/// the upload service finds them and checks them as the facts arrive. And it answers
/// **422 `conditions_failed`** itself, without calling the inner service, when a `PUT`'s
/// declared size already fails them ([`Phase::Declared`](super::Phase::Declared)):
///
/// - a `Content-Range: bytes a-b/total` (or `bytes=a-b/total`) chunk declares `total`;
///   malformed or out-of-bounds ranges and status queries (`bytes */total`) are left to the
///   service;
/// - a simple `PUT` (no `Content-Range`) declares its `Content-Length`;
/// - the parts of an upload session (`PUT <prefix>/store/resumable`) declare nothing: their
///   length is a part's, not the file's;
/// - requests outside the [`prefix`](ConditionsLayer::prefix) declare nothing.
///
/// Requests are read with the same route table as the upload handler's and the signature
/// layer's: give it the same prefix as theirs (none when the stack is nested, as with
/// axum's `nest_service`).
///
/// Only a definite failure is answered here: with `||`, a failing `filesize` rule beside a
/// rule still unknown passes on, to be decided when the facts arrive.
///
/// It can sit anywhere in front of the upload [`Handler`](crate::Handler). Inside the
/// [`SignatureLayer`](crate::auth::SignatureLayer) or the app's own auth (added before it
/// with axum's `Router::layer`, after it with `ServiceBuilder`), a request without
/// credentials learns nothing of the policy; outside it, an oversized upload is refused
/// before its credentials are even checked.
///
/// ```
/// use tower_uploads::conditions::{Conditions, ConditionsLayer};
///
/// let conditions = Conditions::parse(
///     br#"{"operator": "&&", "rules": [{"key": "filesize", "operator": "<=", "value": 10485760}]}"#,
/// ).unwrap();
/// let layer = ConditionsLayer::new(conditions);
/// // axum: `Router::new().route(...).layer(layer)`; tower: `ServiceBuilder::new().layer(layer)`.
/// # let _ = layer;
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct ConditionsLayer {
    conditions: Arc<Conditions>,
    style: ResponseStyle,
    prefix: Arc<str>,
}

impl ConditionsLayer {
    /// A layer applying `conditions` (a [`Conditions`] or an `Arc<Conditions>`), with
    /// envelope-style error responses by default.
    pub fn new(conditions: impl Into<Arc<Conditions>>) -> Self {
        ConditionsLayer {
            conditions: conditions.into(),
            style: ResponseStyle::default(),
            prefix: Arc::from(""),
        }
    }

    /// The mount prefix of the uploads (e.g. `/files`; default: the root), as given to the
    /// [`Uploads`](crate::Uploads) stack or the [`AuthPolicy`](crate::auth::AuthPolicy).
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = Arc::from(crate::route::normalize_prefix(prefix));
        self
    }

    /// Sets the default style of error responses (the request's `Accept-Version` can
    /// change it).
    pub fn style(mut self, style: ResponseStyle) -> Self {
        self.style = style;
        self
    }

    /// The conditions.
    pub fn conditions(&self) -> &Arc<Conditions> {
        &self.conditions
    }
}

impl<S> Layer<S> for ConditionsLayer {
    type Service = ConditionsMiddleware<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ConditionsMiddleware {
            inner,
            conditions: Arc::clone(&self.conditions),
            style: self.style,
            prefix: Arc::clone(&self.prefix),
        }
    }
}

/// The middleware made by [`ConditionsLayer`].
///
/// # Response type
///
/// `Response<Either<ResBody, ResponseBody>>`: the inner service's response is passed on
/// unchanged as [`Either::Left`](http_body_util::Either::Left), a 422 made here is
/// [`Either::Right`](http_body_util::Either::Right) with a
/// [`ResponseBody`](crate::body::ResponseBody), as with
/// [`Signature`](crate::auth::Signature). The request body type is anything; it is not
/// required to be `Sync`.
#[derive(Clone, Debug)]
pub struct ConditionsMiddleware<S> {
    inner: S,
    conditions: Arc<Conditions>,
    style: ResponseStyle,
    prefix: Arc<str>,
}

impl<S> ConditionsMiddleware<S> {
    /// Wraps `inner` with `conditions` and envelope-style error responses.
    pub fn new(inner: S, conditions: impl Into<Arc<Conditions>>) -> Self {
        ConditionsLayer::new(conditions).layer(inner)
    }

    /// A [`ConditionsLayer`] with `conditions`.
    pub fn layer(conditions: impl Into<Arc<Conditions>>) -> ConditionsLayer {
        ConditionsLayer::new(conditions)
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
}

impl<S, B, ResBody> Service<Request<B>> for ConditionsMiddleware<S>
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
        let mut conditions = req
            .extensions_mut()
            .remove::<UploadConditions>()
            .unwrap_or_default();
        conditions.push_app(Arc::clone(&self.conditions));

        let has_size_rule = conditions
            .app()
            .iter()
            .chain(conditions.session())
            .any(|c| c.has_key(Key::Filesize));
        if has_size_rule
            && let Some(rest) = crate::route::strip_prefix(&self.prefix, req.uri().path())
            && let Some(size) = declared_size(Endpoint::of(req.method(), rest), req.headers())
        {
            let verdict = conditions.evaluate(&Facts::declared(Some(size)));
            if verdict.decision() == Decision::Fail {
                let err = verdict.to_api_error();
                tracing::debug!(
                    method = %req.method(),
                    path = req.uri().path(),
                    declared_size = size,
                    "upload refused: {}",
                    err.message()
                );
                return ResponseFuture::refused(error_response(&req, self.style, &err));
            }
        }

        req.extensions_mut().insert(conditions);
        // Call the service that was driven to readiness; keep a fresh clone.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::inner(inner.call(req))
    }
}

/// The size of the file a request declares before its body is read (see
/// [`ConditionsLayer`]): for a file upload, the total of a valid `Content-Range` chunk,
/// else its `Content-Length`; `None` for anything else.
fn declared_size(endpoint: Endpoint<'_>, headers: &HeaderMap) -> Option<u64> {
    if !matches!(endpoint, Endpoint::Upload(_)) {
        return None;
    }
    if let Some(value) = headers.get(header::CONTENT_RANGE) {
        return match content_range::parse(value.as_bytes()) {
            Ok(range @ ContentRange::Chunk { total, .. }) if range.validate().is_ok() => {
                Some(total)
            }
            _ => None,
        };
    }
    let value = headers.get(header::CONTENT_LENGTH)?.as_bytes();
    // Digits only: `u64::from_str` would also take a `+`.
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::Method;
    use http::StatusCode;
    use http_body_util::{BodyExt, Full};
    use std::convert::Infallible;
    use tower::ServiceExt;

    /// What the inner service saw (put in the response's extensions).
    #[derive(Clone, Debug)]
    struct Seen(Option<UploadConditions>);

    struct Answer {
        status: StatusCode,
        /// `Some` when the inner service was called.
        seen: Option<Seen>,
        kind: Option<String>,
        message: Option<String>,
    }

    fn conditions(json: &str) -> Conditions {
        Conditions::parse(json.as_bytes()).unwrap()
    }

    const MAX_1000: &str =
        r#"{"operator": "&&", "rules": [{"key": "filesize", "operator": "<=", "value": 1000}]}"#;

    async fn run(layer: ConditionsLayer, req: Request<Full<Bytes>>) -> Answer {
        let inner = tower::service_fn(|req: Request<Full<Bytes>>| async move {
            let seen = Seen(req.extensions().get::<UploadConditions>().cloned());
            let mut res = Response::new(Full::new(Bytes::from_static(b"inner")));
            res.extensions_mut().insert(seen);
            Ok::<_, Infallible>(res)
        });
        let svc = layer.layer(inner);
        let res = svc.oneshot(req).await.unwrap();
        let status = res.status();
        let seen = res.extensions().get::<Seen>().cloned();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let doc = serde_json::from_slice::<serde_json::Value>(&body).ok();
        let field = |name: &str| {
            let doc = doc.as_ref()?;
            let v = doc
                .get(name)
                .or_else(|| doc.pointer(&format!("/error/{name}")))?;
            v.as_str().map(str::to_owned)
        };
        Answer {
            status,
            seen,
            kind: field("kind"),
            message: field("message"),
        }
    }

    fn put(uri: &str) -> http::request::Builder {
        Request::put(uri)
    }

    #[tokio::test]
    async fn declared_content_length() {
        // Over: 422 without calling the inner service.
        let r = run(
            ConditionsLayer::new(conditions(MAX_1000)),
            put("/a.png")
                .header("content-length", "2000")
                .body(Full::default())
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(r.kind.as_deref(), Some("conditions_failed"));
        assert_eq!(
            r.message.as_deref(),
            Some(
                "conditions failed: the app's rules[0] (filesize <= 1000: the file has 2000 bytes)"
            )
        );
        assert!(r.seen.is_none(), "inner service called");

        // Under, and at the limit: passed on with the extension.
        for size in ["1000", "10", "0"] {
            let r = run(
                ConditionsLayer::new(conditions(MAX_1000)),
                put("/a.png")
                    .header("content-length", size)
                    .body(Full::default())
                    .unwrap(),
            )
            .await;
            assert_eq!(r.status, StatusCode::OK, "{size}");
            let ext = r.seen.unwrap().0.expect("extension present");
            assert_eq!(ext.app().len(), 1);
            assert_eq!(*ext.app()[0], conditions(MAX_1000));
            assert!(ext.session().is_none());
        }

        // No declared size (chunked transfer), or an unparseable one: the service decides.
        for len in [None, Some("+2000"), Some("20x"), Some("")] {
            let mut b = put("/a.png");
            if let Some(len) = len {
                b = b.header("content-length", len);
            }
            let r = run(
                ConditionsLayer::new(conditions(MAX_1000)),
                b.body(Full::default()).unwrap(),
            )
            .await;
            assert_eq!(r.status, StatusCode::OK, "{len:?}");
            assert!(r.seen.unwrap().0.is_some());
        }
    }

    #[tokio::test]
    async fn declared_content_range_total() {
        let layer = || ConditionsLayer::new(conditions(MAX_1000));
        // The total counts, not the chunk's length.
        for header in [
            "bytes 0-99/5000",
            "bytes=0-100/5000",
            "BYTES 4000-4999/5000",
        ] {
            let r = run(
                layer(),
                put("/big.mp4")
                    .header("content-range", header)
                    .header("content-length", "100")
                    .body(Full::default())
                    .unwrap(),
            )
            .await;
            assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{header}");
            assert_eq!(r.kind.as_deref(), Some("conditions_failed"));
            assert!(r.seen.is_none());
        }
        for header in [
            "bytes 0-99/1000",
            "bytes=0-100/1000",
            // Left to the service: malformed, out of bounds, status query, multi-range.
            "bytes 0-99",
            "bytes 0-99999/5000",
            "bytes */5000",
            "bytes 0-1/5000, 2-3/5000",
        ] {
            let r = run(
                layer(),
                put("/big.mp4")
                    .header("content-range", header)
                    .header("content-length", "100000")
                    .body(Full::default())
                    .unwrap(),
            )
            .await;
            assert_eq!(r.status, StatusCode::OK, "{header}");
            assert!(r.seen.unwrap().0.is_some());
        }
    }

    #[tokio::test]
    async fn other_requests_untouched() {
        for (prefix, method, uri) in [
            ("", Method::GET, "/a.png"),
            ("", Method::HEAD, "/a.png"),
            ("", Method::POST, "/store/single?key=k"),
            ("", Method::POST, "/uploads"),
            ("", Method::PUT, "/store/resumable?key=k"),
            ("/files", Method::PUT, "/files/store/resumable?key=k"),
            // Outside the prefix: not an upload of this stack.
            ("/files", Method::PUT, "/other/a.png"),
        ] {
            let layer = ConditionsLayer::new(conditions(MAX_1000)).prefix(prefix);
            let b = Request::builder()
                .method(method.clone())
                .uri(uri)
                .header("content-length", "5000");
            let r = run(layer, b.body(Full::default()).unwrap()).await;
            assert_eq!(r.status, StatusCode::OK, "{prefix} {method} {uri}");
            // The extension is there for every request.
            assert!(r.seen.unwrap().0.is_some());
        }
    }

    #[tokio::test]
    async fn prefix_routes_like_the_handler() {
        let layer = || ConditionsLayer::new(conditions(MAX_1000)).prefix("/files/");
        for (uri, want) in [
            ("/files/a.png", StatusCode::UNPROCESSABLE_ENTITY),
            ("/files/a/store/resumable", StatusCode::UNPROCESSABLE_ENTITY),
            ("/files/store/resumable", StatusCode::OK),
            ("/filesx/a.png", StatusCode::OK),
        ] {
            let r = run(
                layer(),
                put(uri)
                    .header("content-length", "5000")
                    .body(Full::default())
                    .unwrap(),
            )
            .await;
            assert_eq!(r.status, want, "{uri}");
        }
    }

    #[tokio::test]
    async fn or_and_pending() {
        // `||` with a rule not known yet: undecided, passed on.
        let c = conditions(
            r#"{"operator": "||", "rules": [
                {"key": "filesize", "operator": "<=", "value": 1000},
                {"key": "kind", "operator": "==", "value": "image"}]}"#,
        );
        let r = run(
            ConditionsLayer::new(c),
            put("/a")
                .header("content-length", "5000")
                .body(Full::default())
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);

        // `&&` with a pending rule and a failing one: failed.
        let c = conditions(
            r#"{"rules": [
                {"key": "kind", "operator": "==", "value": "image"},
                {"key": "filesize", "operator": "<", "value": 1000}]}"#,
        );
        let r = run(
            ConditionsLayer::new(c),
            put("/a")
                .header("content-length", "5000")
                .body(Full::default())
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            r.message.as_deref(),
            Some(
                "conditions failed: the app's rules[1] (filesize < 1000: the file has 5000 bytes)"
            )
        );
    }

    #[tokio::test]
    async fn stacked_layers_and_styles() {
        let inner = tower::service_fn(|req: Request<Full<Bytes>>| async move {
            let seen = Seen(req.extensions().get::<UploadConditions>().cloned());
            let mut res = Response::new(Full::new(Bytes::new()));
            res.extensions_mut().insert(seen);
            Ok::<_, Infallible>(res)
        });
        let min = conditions(r#"{"rules": [{"key": "filesize", "operator": ">=", "value": 10}]}"#);
        let svc = ConditionsLayer::new(conditions(MAX_1000)).layer(
            ConditionsLayer::new(min.clone())
                .style(ResponseStyle::Bare)
                .layer(inner),
        );

        let res = svc
            .clone()
            .oneshot(
                put("/a")
                    .header("content-length", "50")
                    .body(Full::default())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let ext = res.extensions().get::<Seen>().unwrap().0.clone().unwrap();
        assert_eq!(ext.app().len(), 2);
        assert_eq!(*ext.app()[1], min);

        // The inner layer refuses in its own (bare) style.
        let res = svc
            .clone()
            .oneshot(
                put("/a")
                    .header("content-length", "5")
                    .body(Full::default())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(doc["kind"], "conditions_failed");

        // The outer one in the envelope, unless `Accept-Version` asks otherwise.
        let res = svc
            .clone()
            .oneshot(
                put("/a")
                    .header("content-length", "5000")
                    .body(Full::default())
                    .unwrap(),
            )
            .await
            .unwrap();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(doc["error"]["kind"], "conditions_failed");
        assert_eq!(doc["meta"]["status"], 422);
        let res = svc
            .oneshot(
                put("/a")
                    .header("content-length", "5000")
                    .header("accept-version", "2025-08-20")
                    .body(Full::default())
                    .unwrap(),
            )
            .await
            .unwrap();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(doc["kind"], "conditions_failed");
    }

    #[tokio::test]
    async fn session_conditions_set_outside_apply() {
        // An outer layer (or the app) may already have put session conditions in.
        let session =
            conditions(r#"{"rules": [{"key": "filesize", "operator": "<", "value": 100}]}"#);
        let mut ext = UploadConditions::new();
        ext.set_session(Some(Arc::new(session)));
        let mut req = put("/a")
            .header("content-length", "500")
            .body(Full::default())
            .unwrap();
        req.extensions_mut().insert(ext);
        let r = run(ConditionsLayer::new(conditions(MAX_1000)), req).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            r.message.as_deref(),
            Some(
                "conditions failed: the upload's rules[0] (filesize < 100: the file has 500 bytes)"
            )
        );
    }

    #[tokio::test]
    async fn composes_with_axum() {
        use axum::Router;
        use axum::routing::put as axum_put;
        let app: Router = Router::new()
            .route(
                "/{*path}",
                axum_put(|req: axum::extract::Request| async move {
                    let n = req
                        .extensions()
                        .get::<UploadConditions>()
                        .map_or(0, |c| c.app().len());
                    format!("{n}")
                }),
            )
            .layer(ConditionsLayer::new(conditions(MAX_1000)));
        let res = app
            .clone()
            .oneshot(
                Request::put("/a.png")
                    .body(axum::body::Body::from("x"))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"1");
        let res = app
            .oneshot(
                Request::put("/a.png")
                    .header("content-range", "bytes 0-0/1001")
                    .body(axum::body::Body::from("x"))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }
}
