//! Metrics, through the `metrics` facade crate: the app installs a recorder
//! (`metrics-exporter-prometheus`, `metrics-exporter-statsd`, …) and these metrics appear in
//! it; without one they cost next to nothing. The demo server (`examples/server.rs`) serves
//! them in Prometheus' text format at `GET /metrics` when started with `--metrics`.
//!
//! Call [`describe`] once after installing a recorder to give them their help texts and units.
//!
//! | name | type | labels | unit | moves when |
//! |---|---|---|---|---|
//! | `tower_uploads_uploads_started_total` | counter | `protocol`, `kind` | uploads | `simple`: a simple `PUT` passed its checks and its upload was opened in the storage; `chunked`: a chunk created a new resumable upload (not one joining an upload in progress); `session`: `POST /uploads` created an upload session |
//! | `tower_uploads_uploads_completed_total` | counter | `protocol`, `kind` | uploads | `simple`, `chunked`: a request published a file (its `201`; retries and racing chunks answered `200` do not count); `session`: `/store/single` or the assembly answered the Media object |
//! | `tower_uploads_uploads_failed_total` | counter | `protocol`, `kind` | requests | an upload request was answered with a 5xx (the storage failed, or is full) |
//! | `tower_uploads_requests_rejected_total` | counter | `protocol`, `kind`, `error` | requests | an upload request was answered with a 4xx, by the upload handler or by the signature layer before it (bad credentials); `error` is the answer's [`kind`](crate::error::ErrorKind::as_str) (`token_invalid`, `file_too_large`, …) |
//! | `tower_uploads_bytes_received_total` | counter | | bytes | the bytes of uploaded files read from request bodies, as they arrive (simple `PUT`s, chunks, a session's file part and parts; not the multipart framing around a file part), also of requests refused later on |
//! | `tower_uploads_bytes_delivered_total` | counter | | bytes | the bytes of files handed to the server by `GET` response bodies, as they stream |
//! | `tower_uploads_request_duration_seconds` | histogram | `endpoint` | seconds | the upload handler answered a request: the time from its dispatch until the response head was ready (for uploads, after the whole body; a delivery's body streams after). `endpoint`: `simple`, `chunked`, `session`, `deliver`, `signatures`, `refused` (refused by the handler before any endpoint ran) |
//! | `tower_uploads_chunk_duration_seconds` | histogram | | seconds | the chunk core (`upload/chunk.rs`, protocol-neutral) was done with a chunk, at whatever end (an answer, an error, the client gone): receiving, verifying and counting it, and finalizing the upload when it completed it (`Content-Range: bytes */N` status queries are not chunks) |
//! | `tower_uploads_uploads_in_progress` | gauge | | uploads | each run of the [sweeper](crate::service::spawn_sweeper): the uploads the storage lists as in progress and that the run kept (resumable uploads, simple uploads whose body is streaming, session parts not yet assembled). The storage is the truth: every process sharing it reports the same value |
//! | `tower_uploads_buffer_bytes` | gauge | | bytes | the bytes of the buffers [`FsStorage`](crate::FsStorage)'s pool holds (write batches and read frames), in use or idle (at most `FsOptions::buffer_budget`); set when it changes |
//!
//! Labels: `protocol` is `ittybit` (the only upload protocol served so far; tus and the IETF
//! resumable-upload draft will have their own value); `kind` is `simple` (a whole-body `PUT`),
//! `chunked` (`Content-Range` chunks) or `session` (upload sessions, PROTOCOL §7). Every label
//! value is a `&'static str` and every key a `static`: recording allocates nothing per request.

use ::metrics::{Counter, Key, Label, Level, Metadata, Unit};
use std::time::Instant;

use crate::error::{ApiError, ErrorKind};

pub(crate) const UPLOADS_STARTED: &str = "tower_uploads_uploads_started_total";
pub(crate) const UPLOADS_COMPLETED: &str = "tower_uploads_uploads_completed_total";
pub(crate) const UPLOADS_FAILED: &str = "tower_uploads_uploads_failed_total";
pub(crate) const REQUESTS_REJECTED: &str = "tower_uploads_requests_rejected_total";
pub(crate) const BYTES_RECEIVED: &str = "tower_uploads_bytes_received_total";
pub(crate) const BYTES_DELIVERED: &str = "tower_uploads_bytes_delivered_total";
pub(crate) const REQUEST_DURATION: &str = "tower_uploads_request_duration_seconds";
pub(crate) const CHUNK_DURATION: &str = "tower_uploads_chunk_duration_seconds";
pub(crate) const UPLOADS_IN_PROGRESS: &str = "tower_uploads_uploads_in_progress";
/// The bytes of write buffers FsStorage holds (gauge); set by its buffer pool (which names it
/// itself: the storage does not depend on this module).
pub(crate) const BUFFER_BYTES: &str = crate::storage::BUFFER_BYTES_METRIC;

/// Registers the help text and unit of every metric above with the installed recorder (the
/// `# HELP` lines of a Prometheus exposition). Call it after installing the recorder;
/// calling it again is harmless.
pub fn describe() {
    use ::metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        UPLOADS_STARTED,
        Unit::Count,
        "Uploads started: simple PUTs opened, resumable uploads created by a chunk, upload sessions created."
    );
    describe_counter!(
        UPLOADS_COMPLETED,
        Unit::Count,
        "Uploads completed: files published by a request (201), media answered by an upload session."
    );
    describe_counter!(
        UPLOADS_FAILED,
        Unit::Count,
        "Upload requests answered with a 5xx (storage failures)."
    );
    describe_counter!(
        REQUESTS_REJECTED,
        Unit::Count,
        "Upload requests answered with a 4xx, by error kind."
    );
    describe_counter!(
        BYTES_RECEIVED,
        Unit::Bytes,
        "Bytes of uploaded files read from request bodies."
    );
    describe_counter!(
        BYTES_DELIVERED,
        Unit::Bytes,
        "Bytes of files streamed in GET responses."
    );
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "Time from a request's dispatch to its response head, by endpoint."
    );
    describe_histogram!(
        CHUNK_DURATION,
        Unit::Seconds,
        "Time to receive, verify, count (and, for the last one, finalize) a chunk."
    );
    describe_gauge!(
        UPLOADS_IN_PROGRESS,
        Unit::Count,
        "Uploads in progress in the storage, as the sweeper last listed them."
    );
    describe_gauge!(
        BUFFER_BYTES,
        Unit::Bytes,
        "Bytes of write buffers held by FsStorage."
    );
}

/// What an upload request is, for the `kind` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A whole-body `PUT`.
    Simple = 0,
    /// A `Content-Range` chunk (or a status query).
    Chunked = 1,
    /// An upload-session endpoint.
    Session = 2,
}

impl Kind {
    /// The kind of an upload request under the mount `prefix`; `None` for the other requests
    /// (deliveries, `POST /signatures`, requests not ours).
    pub(crate) fn of_request<B>(prefix: &str, req: &http::Request<B>) -> Option<Kind> {
        use crate::route::Endpoint;
        let rest = crate::route::strip_prefix(prefix, req.uri().path())?;
        match Endpoint::of(req.method(), rest) {
            Endpoint::Upload(_) => Some(Kind::of_put(req.headers())),
            Endpoint::CreateSession
            | Endpoint::SessionSingle
            | Endpoint::SessionPart
            | Endpoint::SessionComplete => Some(Kind::Session),
            _ => None,
        }
    }

    /// A `PUT` of a file: `Chunked` with a `Content-Range`, else `Simple`.
    pub(crate) fn of_put(headers: &http::HeaderMap) -> Kind {
        if headers.contains_key(http::header::CONTENT_RANGE) {
            Kind::Chunked
        } else {
            Kind::Simple
        }
    }
}

/// What the upload handler ran for a request, for the `endpoint` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Simple = 0,
    Chunked = 1,
    Session = 2,
    Deliver = 3,
    Signatures = 4,
    /// Refused by the handler before any endpoint ran.
    Refused = 5,
}

static METADATA: Metadata<'static> =
    Metadata::new("tower_uploads", Level::INFO, Some(module_path!()));

const fn label(key: &'static str, value: &'static str) -> Label {
    Label::from_static_parts(key, value)
}

const PROTOCOL: Label = label("protocol", "ittybit");
const SIMPLE: Label = label("kind", "simple");
const CHUNKED: Label = label("kind", "chunked");
const SESSION: Label = label("kind", "session");

static BY_KIND: [[Label; 2]; 3] = [[PROTOCOL, SIMPLE], [PROTOCOL, CHUNKED], [PROTOCOL, SESSION]];

/// The keys of a metric labelled by `protocol` and `kind`, indexed by [`Kind`].
macro_rules! by_kind {
    ($name:expr) => {
        [
            Key::from_static_parts($name, &BY_KIND[0]),
            Key::from_static_parts($name, &BY_KIND[1]),
            Key::from_static_parts($name, &BY_KIND[2]),
        ]
    };
}

static STARTED_KEYS: [Key; 3] = by_kind!(UPLOADS_STARTED);
static COMPLETED_KEYS: [Key; 3] = by_kind!(UPLOADS_COMPLETED);
static FAILED_KEYS: [Key; 3] = by_kind!(UPLOADS_FAILED);

static BY_ENDPOINT: [[Label; 1]; 6] = [
    [label("endpoint", "simple")],
    [label("endpoint", "chunked")],
    [label("endpoint", "session")],
    [label("endpoint", "deliver")],
    [label("endpoint", "signatures")],
    [label("endpoint", "refused")],
];

static DURATION_KEYS: [Key; 6] = [
    Key::from_static_parts(REQUEST_DURATION, &BY_ENDPOINT[0]),
    Key::from_static_parts(REQUEST_DURATION, &BY_ENDPOINT[1]),
    Key::from_static_parts(REQUEST_DURATION, &BY_ENDPOINT[2]),
    Key::from_static_parts(REQUEST_DURATION, &BY_ENDPOINT[3]),
    Key::from_static_parts(REQUEST_DURATION, &BY_ENDPOINT[4]),
    Key::from_static_parts(REQUEST_DURATION, &BY_ENDPOINT[5]),
];

static CHUNK_DURATION_KEY: Key = Key::from_static_name(CHUNK_DURATION);
static BYTES_RECEIVED_KEY: Key = Key::from_static_name(BYTES_RECEIVED);
static BYTES_DELIVERED_KEY: Key = Key::from_static_name(BYTES_DELIVERED);
static IN_PROGRESS_KEY: Key = Key::from_static_name(UPLOADS_IN_PROGRESS);

/// The key of `tower_uploads_requests_rejected_total` for a `kind` and an `error`: one
/// `static` per pair, so that a rejection allocates no labels either. A new [`ErrorKind`]
/// must be listed here (the match is exhaustive).
macro_rules! rejected_keys {
    ($($variant:ident)*) => {
        fn rejected_key(kind: Kind, error: ErrorKind) -> &'static Key {
            match error {
                $(ErrorKind::$variant => {
                    const ERROR: Label = label("error", ErrorKind::$variant.as_str());
                    static LABELS: [[Label; 3]; 3] = [
                        [PROTOCOL, SIMPLE, ERROR],
                        [PROTOCOL, CHUNKED, ERROR],
                        [PROTOCOL, SESSION, ERROR],
                    ];
                    static KEYS: [Key; 3] = [
                        Key::from_static_parts(REQUESTS_REJECTED, &LABELS[0]),
                        Key::from_static_parts(REQUESTS_REJECTED, &LABELS[1]),
                        Key::from_static_parts(REQUESTS_REJECTED, &LABELS[2]),
                    ];
                    &KEYS[kind as usize]
                })*
            }
        }
    };
}

rejected_keys!(
    PathInvalid TokenMissing TokenInvalid SignatureInvalid SignatureExpired KeyInvalid
    Forbidden FileNotFound MethodNotAllowed RangeConflict UploadGone PreconditionFailed
    FileTooLarge RangeInvalid RangeNotSatisfiable DigestMismatch ConditionsFailed
    ConditionsInvalid MetadataInvalid PartInvalid MultipartInvalid AliasTaken UploadRejected
    BadRequest TooManyUploads RequestTimeout InternalError InsufficientStorage
);

fn counter(key: &'static Key) -> Counter {
    ::metrics::with_recorder(|r| r.register_counter(key, &METADATA))
}

/// An upload of `kind` started (see the module docs for what that is per kind).
pub(crate) fn upload_started(kind: Kind) {
    counter(&STARTED_KEYS[kind as usize]).increment(1);
}

/// An upload of `kind` completed (a file published, a media answered).
pub(crate) fn upload_completed(kind: Kind) {
    counter(&COMPLETED_KEYS[kind as usize]).increment(1);
}

/// An upload request of `kind` was answered with `err`: failed (5xx) or rejected (4xx).
pub(crate) fn upload_refused(kind: Kind, err: &ApiError) {
    if err.status().is_server_error() {
        counter(&FAILED_KEYS[kind as usize]).increment(1);
    } else {
        counter(rejected_key(kind, err.kind())).increment(1);
    }
}

/// The counter of file bytes received: taken once per body, incremented per frame.
pub(crate) fn bytes_received() -> Counter {
    counter(&BYTES_RECEIVED_KEY)
}

/// The counter of file bytes delivered: taken once per response, incremented per frame.
pub(crate) fn bytes_delivered() -> Counter {
    counter(&BYTES_DELIVERED_KEY)
}

/// The handler answered a request to `endpoint` dispatched at `since`.
pub(crate) fn request_done(endpoint: Endpoint, since: Instant) {
    ::metrics::with_recorder(|r| {
        r.register_histogram(&DURATION_KEYS[endpoint as usize], &METADATA)
    })
    .record(since.elapsed());
}

/// Times a chunk in the chunk core: records its duration when dropped, at whatever end
/// (an answer, an error, the request cancelled).
pub(crate) struct ChunkTimer(Instant);

impl ChunkTimer {
    pub(crate) fn start() -> ChunkTimer {
        ChunkTimer(Instant::now())
    }
}

impl Drop for ChunkTimer {
    fn drop(&mut self) {
        ::metrics::with_recorder(|r| r.register_histogram(&CHUNK_DURATION_KEY, &METADATA))
            .record(self.0.elapsed());
    }
}

/// The sweeper's count of the uploads in progress in the storage.
pub(crate) fn set_uploads_in_progress(n: usize) {
    ::metrics::with_recorder(|r| r.register_gauge(&IN_PROGRESS_KEY, &METADATA)).set(n as f64);
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Request, StatusCode};
    use http_body_util::{BodyExt, Full};
    use metrics_exporter_prometheus::PrometheusBuilder;
    use tower::ServiceExt;

    #[test]
    fn keys_carry_their_names_and_labels() {
        let labels = |key: &Key| {
            key.labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect::<Vec<_>>()
                .join(",")
        };
        let key = rejected_key(Kind::Chunked, ErrorKind::FileTooLarge);
        assert_eq!(key.name(), REQUESTS_REJECTED);
        assert_eq!(
            labels(key),
            "protocol=ittybit,kind=chunked,error=file_too_large"
        );
        let key = rejected_key(Kind::Session, ErrorKind::InsufficientStorage);
        assert_eq!(
            labels(key),
            "protocol=ittybit,kind=session,error=insufficient_storage"
        );
        for (kind, name) in [
            (Kind::Simple, "simple"),
            (Kind::Chunked, "chunked"),
            (Kind::Session, "session"),
        ] {
            let key = &STARTED_KEYS[kind as usize];
            assert_eq!(key.name(), UPLOADS_STARTED);
            assert_eq!(labels(key), format!("protocol=ittybit,kind={name}"));
            let key = rejected_key(kind, ErrorKind::TokenInvalid);
            assert_eq!(
                labels(key),
                format!("protocol=ittybit,kind={name},error=token_invalid")
            );
        }
        for (endpoint, name) in [
            (Endpoint::Simple, "simple"),
            (Endpoint::Chunked, "chunked"),
            (Endpoint::Session, "session"),
            (Endpoint::Deliver, "deliver"),
            (Endpoint::Signatures, "signatures"),
            (Endpoint::Refused, "refused"),
        ] {
            let key = &DURATION_KEYS[endpoint as usize];
            assert_eq!(key.name(), REQUEST_DURATION);
            assert_eq!(labels(key), format!("endpoint={name}"));
        }
        for name in [
            UPLOADS_STARTED,
            UPLOADS_COMPLETED,
            UPLOADS_FAILED,
            REQUESTS_REJECTED,
            BYTES_RECEIVED,
            BYTES_DELIVERED,
            REQUEST_DURATION,
            CHUNK_DURATION,
            UPLOADS_IN_PROGRESS,
            BUFFER_BYTES,
        ] {
            assert!(name.starts_with("tower_uploads_"), "{name}");
        }
    }

    #[test]
    fn kinds_of_requests() {
        let req = |method: &str, uri: &str, range: bool| {
            let mut b = Request::builder().method(method).uri(uri);
            if range {
                b = b.header("content-range", "bytes 0-1/4");
            }
            b.body(()).unwrap()
        };
        let rows = [
            ("PUT", "/files/a.bin", false, Some(Kind::Simple)),
            ("PUT", "/files/a.bin", true, Some(Kind::Chunked)),
            ("POST", "/files/uploads", false, Some(Kind::Session)),
            ("PUT", "/files/store/resumable", false, Some(Kind::Session)),
            ("POST", "/files/store/single", false, Some(Kind::Session)),
            ("GET", "/files/a.bin", false, None),
            ("POST", "/files/signatures", false, None),
            ("PUT", "/other/a.bin", false, None),
        ];
        for (method, uri, range, want) in rows {
            assert_eq!(
                Kind::of_request("/files", &req(method, uri, range)),
                want,
                "{method} {uri}"
            );
        }
    }

    /// One simple PUT, one GET and one refused PUT through the preset, with a Prometheus
    /// recorder installed for this thread only.
    #[test]
    fn requests_move_the_metrics() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        ::metrics::with_local_recorder(&recorder, || {
            describe();
            rt.block_on(async {
                let service = crate::Uploads::new(crate::MemoryStorage::new())
                    .key("k")
                    .service();
                let put = |key: &str| {
                    Request::put("/a.txt")
                        .header("authorization", format!("Bearer {key}"))
                        .body(Full::new(&b"hello"[..]))
                        .unwrap()
                };
                let res = service.clone().oneshot(put("k")).await.unwrap();
                assert_eq!(res.status(), StatusCode::CREATED);
                let res = service.clone().oneshot(put("wrong")).await.unwrap();
                assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
                let get = Request::get("/a.txt").body(Full::new(&b""[..])).unwrap();
                let res = service.clone().oneshot(get).await.unwrap();
                assert_eq!(res.status(), StatusCode::OK);
                let body = res.into_body().collect().await.unwrap().to_bytes();
                assert_eq!(&body[..], b"hello");
                let storage: std::sync::Arc<dyn crate::Storage> =
                    std::sync::Arc::new(crate::MemoryStorage::new());
                crate::service::sweep(&storage, std::time::Duration::from_secs(60))
                    .await
                    .unwrap();
            });
        });
        let text = handle.render();
        for line in [
            r#"tower_uploads_uploads_started_total{protocol="ittybit",kind="simple"} 1"#,
            r#"tower_uploads_uploads_completed_total{protocol="ittybit",kind="simple"} 1"#,
            r#"tower_uploads_requests_rejected_total{protocol="ittybit",kind="simple",error="token_invalid"} 1"#,
            "tower_uploads_bytes_received_total 5",
            "tower_uploads_bytes_delivered_total 5",
            "tower_uploads_uploads_in_progress 0",
            "# HELP tower_uploads_uploads_started_total Uploads started",
        ] {
            assert!(
                text.lines().any(|l| l.starts_with(line)),
                "no {line:?} in\n{text}"
            );
        }
        for name in [
            r#"tower_uploads_request_duration_seconds{endpoint="simple",quantile="#,
            r#"tower_uploads_request_duration_seconds{endpoint="deliver",quantile="#,
        ] {
            assert!(text.contains(name), "no {name:?} in\n{text}");
        }
        assert!(
            !text.contains("tower_uploads_uploads_failed_total{"),
            "nothing failed:\n{text}"
        );
    }
}
