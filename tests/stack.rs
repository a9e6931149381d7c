//! tower-uploads inside a tower-http stack, on a real server on loopback: CORS preflights
//! for chunk uploads, `TimeoutLayer` / `RequestBodyTimeoutLayer` cancelling a chunk mid-body,
//! `RequestBodyLimitLayer` in front, and `TraceLayer` + the crate's own spans — with the log
//! output captured and searched for keys and signatures.

mod common;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use common::{data, kind, pattern, sha256};
use http::{Request, StatusCode};
use serde_json::Value;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::{RequestBodyTimeoutLayer, TimeoutLayer};
use tower_http::trace::TraceLayer;
use tower_uploads::auth::SignedMethod;
use tower_uploads::{FsStorage, Uploads, stack};

const ORIGIN: &str = "https://app.example.com";

/// A server running `app` (built from an `Uploads` over a fresh `FsStorage` whose base URL
/// is `<server>/files`), with everything a test needs to talk to it.
struct Server {
    base: String,
    addr: std::net::SocketAddr,
    key: String,
    data: std::path::PathBuf,
    _sandbox: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    async fn start(key: &str, app: impl FnOnce(Uploads) -> Router) -> Server {
        let (sandbox, data) = common::sandbox();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let base = format!("http://{addr}");
        let uploads = Uploads::new(FsStorage::new(&data).expect("storage"))
            .key(key)
            .base_url(format!("{base}/files"));
        let task = common::serve_listener(listener, app(uploads));
        Server {
            base,
            addr,
            key: key.to_owned(),
            data,
            _sandbox: sandbox,
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base, path.trim_start_matches('/'))
    }

    fn bearer(&self) -> String {
        format!("Bearer {}", self.key)
    }

    /// A `PUT <uri_path>` with the bearer key, to be given a body.
    fn put(&self, uri_path: &str) -> reqwest::RequestBuilder {
        common::client()
            .put(self.url(uri_path))
            .header("authorization", self.bearer())
    }

    /// `PUT <uri_path>` with the bearer key, a `Content-Range` and `body`.
    async fn chunk(&self, uri_path: &str, range: &str, body: &[u8]) -> reqwest::Response {
        self.put(uri_path)
            .header("content-range", range)
            .body(body.to_vec())
            .send()
            .await
            .expect("PUT")
    }
}

fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::exact(ORIGIN.parse().unwrap()))
        .allow_methods(stack::CORS_METHODS)
        .allow_headers(stack::CORS_REQUEST_HEADERS)
        .expose_headers(stack::CORS_EXPOSE_HEADERS)
        .max_age(Duration::from_secs(600))
}

fn header_list(headers: &reqwest::header::HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("").split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

async fn preflight(server: &Server, path: &str, origin: &str) -> reqwest::Response {
    common::client()
        .request(reqwest::Method::OPTIONS, server.url(path))
        .header("origin", origin)
        .header("access-control-request-method", "PUT")
        .header(
            "access-control-request-headers",
            "content-range, content-digest, authorization, x-upload-index",
        )
        .send()
        .await
        .expect("OPTIONS")
}

/// The browser's view of a chunked upload from another origin: preflight, chunks whose
/// `Range`/`Location` the page can read, refusals it can read too; for the service nested
/// in a router and for the layer wrapping one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_for_chunks_and_exposed_headers() {
    let nested = Server::start("cors-key-nested", |u| {
        Router::new()
            .route("/health", get(|| async { "ok" }))
            .nest_service("/files", u.service())
            .layer(cors())
    })
    .await;
    let layered = Server::start("cors-key-layered", |u| {
        Router::new()
            .route("/health", get(|| async { "ok" }))
            .layer(u.prefix("/files").layer())
            .layer(cors())
    })
    .await;
    for server in [&nested, &layered] {
        // Preflight: answered by the CORS layer, before any credentials are asked for.
        let res = preflight(server, "files/in/video.bin", ORIGIN).await;
        assert_eq!(res.status(), 200, "preflight");
        let h = res.headers();
        assert_eq!(h["access-control-allow-origin"], ORIGIN);
        let methods = header_list(h, "access-control-allow-methods");
        assert!(methods.contains(&"put".into()), "{methods:?}");
        let allowed = header_list(h, "access-control-allow-headers");
        for want in [
            "content-range",
            "content-digest",
            "authorization",
            "x-upload-index",
        ] {
            assert!(allowed.contains(&want.into()), "{want} not in {allowed:?}");
        }
        assert_eq!(h["access-control-max-age"], "600");
        // A tus client's PATCH preflight, and the tus headers a page must read.
        let res = common::client()
            .request(reqwest::Method::OPTIONS, server.url("files/tus/t123"))
            .header("origin", ORIGIN)
            .header("access-control-request-method", "PATCH")
            .header(
                "access-control-request-headers",
                "tus-resumable, upload-offset, upload-checksum, content-type",
            )
            .send()
            .await
            .expect("OPTIONS");
        assert_eq!(res.status(), 200, "tus preflight");
        let methods = header_list(res.headers(), "access-control-allow-methods");
        assert!(methods.contains(&"patch".into()) && methods.contains(&"delete".into()));
        let allowed = header_list(res.headers(), "access-control-allow-headers");
        for want in ["tus-resumable", "upload-offset", "upload-checksum"] {
            assert!(allowed.contains(&want.into()), "{want} not in {allowed:?}");
        }
        // Another origin is not allowed (`exact` names the one origin that is).
        let res = preflight(server, "files/in/video.bin", "https://evil.example").await;
        assert_ne!(
            res.headers()
                .get("access-control-allow-origin")
                .map(|v| v.to_str().unwrap()),
            Some("https://evil.example")
        );

        // The chunks themselves.
        let body = pattern(10_000, 7);
        let put = |range: String, bytes: Vec<u8>| {
            server
                .put("files/in/video.bin")
                .header("origin", ORIGIN)
                .header("content-range", range)
                .body(bytes)
                .send()
        };
        let res = put("bytes 0-5999/10000".into(), body[..6000].to_vec())
            .await
            .unwrap();
        assert_eq!(res.status(), 202);
        assert_eq!(res.headers()["access-control-allow-origin"], ORIGIN);
        assert_eq!(res.headers()["range"], "bytes=0-5999");
        let exposed = header_list(res.headers(), "access-control-expose-headers");
        for want in [
            "location",
            "range",
            "etag",
            "upload-offset",
            "tus-resumable",
            "upload-expires",
        ] {
            assert!(exposed.contains(&want.into()), "{want} not in {exposed:?}");
        }
        let res = put("bytes 6000-9999/10000".into(), body[6000..].to_vec())
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        assert_eq!(res.headers()["access-control-allow-origin"], ORIGIN);
        assert!(
            res.headers()["location"]
                .to_str()
                .unwrap()
                .ends_with("/files/in/video.bin")
        );
        assert_eq!(
            sha256(&std::fs::read(server.data.join("in/video.bin")).unwrap()),
            sha256(&body)
        );

        // A refusal carries the CORS headers too, so that the page can read why.
        let res = common::client()
            .put(server.url("files/in/nokey.bin"))
            .header("origin", ORIGIN)
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401);
        assert_eq!(res.headers()["access-control-allow-origin"], ORIGIN);

        // The app's own route still answers.
        let res = common::client()
            .get(server.url("health"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.text().await.unwrap(), "ok");
    }
}

/// Sends a chunk's head and half its body, then stalls; returns the response read.
async fn stalled_chunk(server: &Server, path: &str, total: usize) -> common::RawResponse {
    let mut conn = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "PUT /files/{path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\
         content-range: bytes 0-999/{total}\r\ncontent-length: 1000\r\n\r\n",
        server.key
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&pattern(500, 1)).await.unwrap();
    common::read_response(&mut conn, Duration::from_secs(10)).await
}

/// What the status query says is received of `path` (inclusive pairs), or the status.
async fn received(server: &Server, path: &str, total: usize) -> (u16, Value) {
    let res = server
        .chunk(&format!("files/{path}"), &format!("bytes */{total}"), b"")
        .await;
    let (status, _, body) = common::json(res).await;
    (status, data(&body)["ranges"].clone())
}

/// A timeout (whole request or body) that fires mid-chunk leaves nothing counted, and the
/// retry completes the upload with the right bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_cancel_a_stalled_chunk_without_counting_it() {
    let whole = Server::start("timeout-key", |u| {
        Router::new()
            .nest_service("/files", u.service())
            .layer(TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                Duration::from_millis(300),
            ))
    })
    .await;
    let body_only = Server::start("body-timeout-key", |u| {
        Router::new()
            .nest_service("/files", u.service())
            .layer(RequestBodyTimeoutLayer::new(Duration::from_millis(300)))
    })
    .await;
    for (server, want) in [(&whole, 408), (&body_only, 400)] {
        let res = stalled_chunk(server, "slow.bin", 2000).await;
        assert_eq!(res.status, want, "{:?}", String::from_utf8_lossy(&res.body));
        let (status, ranges) = received(server, "slow.bin", 2000).await;
        assert_eq!(status, 202);
        assert_eq!(ranges, serde_json::json!([]), "a cancelled chunk counted");

        let body = pattern(2000, 3);
        for (range, part) in [
            ("bytes 0-999/2000", &body[..1000]),
            ("bytes 1000-1999/2000", &body[1000..]),
        ] {
            let res = server.chunk("files/slow.bin", range, part).await;
            assert!(res.status().is_success(), "{range}: {}", res.status());
        }
        assert_eq!(std::fs::read(server.data.join("slow.bin")).unwrap(), body);
    }
}

/// `RequestBodyLimitLayer` in front: a declared oversize body gets its 413; a streamed one
/// cut off by it gets tower-uploads' JSON 413, and nothing is published or counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_limit_layer_in_front() {
    let server = Server::start("limit-key", |u| {
        Router::new()
            .nest_service("/files", u.service())
            .layer(RequestBodyLimitLayer::new(1000))
    })
    .await;
    // Declared: answered by the limit layer before the body.
    let res = server
        .put("files/big.bin")
        .body(pattern(2000, 1))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    // Streamed without a length: cut off mid-body, answered by us.
    let stream = futures_util::stream::iter(
        (0..4).map(|i| Ok::<_, std::io::Error>(bytes::Bytes::from(pattern(500, i)))),
    );
    for range in [None, Some("bytes 0-1999/4000")] {
        let mut req = server.put("files/big.bin");
        if let Some(range) = range {
            req = req.header("content-range", range);
        }
        let res = req
            .body(reqwest::Body::wrap_stream(stream.clone()))
            .send()
            .await
            .unwrap();
        let (status, _, body) = common::json(res).await;
        assert_eq!(status, 413, "{range:?}: {body}");
        assert_eq!(kind(&body), Some("file_too_large"), "{range:?}");
    }
    assert!(!server.data.join("big.bin").exists());
    let (status, ranges) = received(&server, "big.bin", 4000).await;
    assert_eq!((status, ranges), (202, serde_json::json!([])));
    // Within the limit: fine.
    let res = server
        .put("files/small.bin")
        .body(pattern(900, 2))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
}

// --- tracing ----------------------------------------------------------------------------

/// Everything any test of this binary logs (a global subscriber: the server's tasks run on
/// the runtime's worker threads).
fn captured() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || Capture(sink.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
        log
    })
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The recommended `TraceLayer` + the crate's spans: the fields are there (path, range,
/// bytes, status, outcome) and neither the key nor any signature or session key appears
/// anywhere in the output at TRACE level, whatever the request did (signed PUT, bearer
/// chunks, status query, forged signature, wrong key, signatures API, upload session, signed
/// GET).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracing_fields_without_secrets() {
    let log = captured();
    let key = format!("trace-secret-{}", tower_uploads::file::random_id(""));
    let server = Server::start(&key, |u| {
        Router::new()
            .nest_service("/files", u.private(true).service())
            .layer(
                TraceLayer::new_for_http().make_span_with(|req: &Request<Body>| {
                    tracing::info_span!(
                        "http",
                        method = %req.method(),
                        uri = %stack::redacted_uri(req.uri())
                    )
                }),
            )
    })
    .await;
    let mut secrets = vec![key.clone()];
    let signed = |path: &str, method: SignedMethod| {
        common::sign_url(
            &key,
            &format!("{}/files", server.base),
            path,
            method,
            common::now() + 600,
        )
    };
    let signature_of = |url: &str| url.rsplit_once("signature=").unwrap().1.to_owned();

    // A signed simple PUT.
    let url = signed("traced/signed.bin", SignedMethod::Put);
    secrets.push(signature_of(&url));
    let res = common::client()
        .put(&url)
        .body(pattern(3000, 1))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    // Bearer chunks and a status query.
    let body = pattern(5000, 2);
    for (range, part) in [
        ("bytes 0-2999/5000", &body[..3000]),
        ("bytes */5000", &body[..0]),
        ("bytes 3000-4999/5000", &body[3000..]),
    ] {
        let res = server.chunk("files/traced/chunked.bin", range, part).await;
        assert!(res.status().is_success());
    }
    // A forged signature, a wrong key.
    let forged = format!("{}x", &url);
    let res = common::client()
        .put(&forged)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let res = common::client()
        .put(server.url("files/traced/wrong.bin"))
        .header("authorization", format!("Bearer {key}-wrong"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    // The signatures API (its answer holds a signature) and a signed GET of private delivery.
    let res = common::client()
        .post(server.url("files/signatures"))
        .header("authorization", server.bearer())
        .header("accept-version", "2025-08-20")
        .body(r#"{"filename":"api.bin","folder":"traced","method":"put"}"#)
        .send()
        .await
        .unwrap();
    let (status, _, doc) = common::json(res).await;
    assert_eq!(status, 200);
    secrets.push(doc["signature"].as_str().unwrap().to_owned());
    // An upload session: its key travels in the query of the store URLs.
    let res = common::client()
        .post(server.url("files/uploads"))
        .header("authorization", server.bearer())
        .body(r#"{"resumable": true}"#)
        .send()
        .await
        .unwrap();
    let (status, _, doc) = common::json(res).await;
    assert_eq!(status, 200, "{doc}");
    let store = data(&doc)["url"].as_str().unwrap().to_owned();
    secrets.push(store.rsplit_once("key=").unwrap().1.to_owned());
    let res = common::client()
        .put(&store)
        .header("x-upload-index", "0")
        .body(pattern(1000, 9))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let get = signed("traced/signed.bin", SignedMethod::Get);
    secrets.push(signature_of(&get));
    let res = common::client().get(&get).send().await.unwrap();
    assert_eq!(res.bytes().await.unwrap().len(), 3000);

    // Spans close after the response is sent: give the last ones a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let text = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
    let ours: Vec<&str> = text.lines().filter(|l| l.contains("traced/")).collect();
    let has = |needles: &[&str]| ours.iter().any(|l| needles.iter().all(|n| l.contains(n)));
    assert!(
        has(&[
            "path=traced/signed.bin",
            "bytes=3000",
            "status=201",
            "outcome=created"
        ]),
        "signed PUT: {ours:#?}"
    );
    assert!(
        has(&[
            "path=traced/chunked.bin",
            "range=bytes 0-2999/5000",
            "bytes=3000",
            "status=202"
        ]),
        "first chunk: {ours:#?}"
    );
    assert!(
        has(&[
            "path=traced/chunked.bin",
            "range=bytes */5000",
            "bytes=0",
            "status=202"
        ]),
        "status query: {ours:#?}"
    );
    assert!(
        has(&["range=bytes 3000-4999/5000", "status=201"]),
        "last chunk: {ours:#?}"
    );
    assert!(
        has(&["traced/signed.bin", "kind=signature_invalid"]),
        "forged signature: {ours:#?}"
    );
    assert!(
        has(&["method=GET path=traced/signed.bin status=200 outcome=ok"]),
        "signed GET: {ours:#?}"
    );
    assert!(
        has(&["uri=/files/traced/signed.bin?expiry="]),
        "TraceLayer span: {ours:#?}"
    );
    assert!(
        text.contains("signature=REDACTED"),
        "the redacted URI is logged"
    );
    for secret in &secrets {
        assert!(secret.len() >= 16, "a real secret: {secret}");
        assert!(
            !text.contains(secret.as_str()),
            "a secret was logged: {secret}"
        );
    }
    assert!(
        !text.to_ascii_lowercase().contains("bearer "),
        "an Authorization header was logged"
    );
}
