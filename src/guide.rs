//! The user guide: quick starts for axum, hyper and warp, the protocol at a glance, upload
//! sessions, media facts and conditions, writing a storage backend of your own, object
//! storage shared by several instances, and security notes. (Documentation only; every Rust
//! example here runs as a doctest.) Behind tower-http layers (CORS, tracing, timeouts, body
//! limits): see [`stack`](crate::stack).
//!
//! # Quick start: axum
//!
//! Nest the standalone service under a prefix (axum strips it), or wrap your router with the
//! layer (requests under the prefix that are uploads, deliveries of stored files or
//! `POST <prefix>/signatures` are answered by it; everything else reaches your routes).
//!
//! ```
//! use axum::{Router, body::Body, routing::get};
//! use http::{Request, StatusCode};
//! use tower::ServiceExt;
//! use tower_uploads::{MemoryStorage, Uploads};
//!
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! let uploads = Uploads::new(MemoryStorage::new()) // FsStorage::new("./data")? in real life
//!     .key("my-api-key")
//!     .base_url("https://example.com/files");
//! let _sweeper = uploads.spawn_sweeper(); // expires abandoned chunked uploads
//! let app = Router::new()
//!     .route("/health", get(|| async { "ok" }))
//!     .nest_service("/files", uploads.service());
//! // axum::serve(tokio::net::TcpListener::bind("0.0.0.0:3000").await?, app).await?;
//!
//! let put = Request::put("/files/hello.txt")
//!     .header("authorization", "Bearer my-api-key")
//!     .body(Body::from("hi"))
//!     .unwrap();
//! assert_eq!(app.clone().oneshot(put).await.unwrap().status(), StatusCode::CREATED);
//! let get = Request::get("/files/hello.txt").body(Body::empty()).unwrap();
//! assert_eq!(app.oneshot(get).await.unwrap().status(), StatusCode::OK);
//! # });
//! ```
//!
//! # Quick start: hyper
//!
//! The standalone service on hyper-util's server (HTTP/1 and HTTP/2), as `examples/server.rs`
//! does:
//!
//! ```
//! use hyper_util::rt::{TokioExecutor, TokioIo};
//! use hyper_util::server::conn::auto;
//! use hyper_util::service::TowerToHyperService;
//! use tower_uploads::{MemoryStorage, Uploads};
//!
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! let base = format!("http://{}", listener.local_addr().unwrap());
//! let service = Uploads::new(MemoryStorage::new())
//!     .key("my-api-key")
//!     .base_url(base.clone())
//!     .service();
//! let server = tokio::spawn(async move {
//!     loop {
//!         let stream = match listener.accept().await {
//!             Ok((stream, _)) => stream,
//!             Err(_) => {
//!                 // Out of descriptors, say: wait for some to close, and go on accepting.
//!                 tokio::time::sleep(std::time::Duration::from_millis(100)).await;
//!                 continue;
//!             }
//!         };
//!         let service = TowerToHyperService::new(service.clone());
//!         tokio::spawn(async move {
//!             let _ = auto::Builder::new(TokioExecutor::new())
//!                 .serve_connection(TokioIo::new(stream), service)
//!                 .await;
//!         });
//!     }
//! });
//!
//! let client = reqwest::Client::new();
//! let res = client
//!     .put(format!("{base}/docs/a.txt"))
//!     .bearer_auth("my-api-key")
//!     .body("hello")
//!     .send()
//!     .await
//!     .unwrap();
//! assert_eq!(res.status(), 201);
//! let body = client.get(format!("{base}/docs/a.txt")).send().await.unwrap().text().await.unwrap();
//! assert_eq!(body, "hello");
//! server.abort();
//! # });
//! ```
//!
//! Facing the internet, a server must also close connections that never send a request
//! (SECURITY.md): hyper's `header_read_timeout` covers HTTP/1 only, and only once the
//! protocol is known, while hyper-util's auto builder waits with no timeout for the bytes that
//! tell HTTP/1 from HTTP/2, and HTTP/2 has no such timeout. `serve` in `examples/server.rs`
//! is the connection code to copy: it closes a connection, HTTP/1 or HTTP/2, that has had no
//! request in progress for the timeout (from its start until a whole request head arrives,
//! and between requests).
//!
//! # Quick start: warp
//!
//! warp's filters become a tower service (`warp::service`) that the layer wraps:
//!
//! ```
//! use http::{Request, StatusCode};
//! use http_body_util::{BodyExt, Full};
//! use tower::ServiceExt;
//! use tower_layer::Layer;
//! use tower_uploads::{MemoryStorage, Uploads};
//! use warp::Filter;
//!
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! let routes = warp::path("hello").map(|| "hello from warp");
//! let layer = Uploads::new(MemoryStorage::new())
//!     .key("my-api-key")
//!     .prefix("/files")
//!     .base_url("https://example.com/files")
//!     .layer();
//! let service = layer.layer(warp::service(routes));
//! // Serve `service` with hyper-util as in the hyper quick start.
//!
//! let put = Request::put("/files/x.bin")
//!     .header("authorization", "Bearer my-api-key")
//!     .body(Full::new(&b"xyz"[..]))
//!     .unwrap();
//! assert_eq!(service.clone().oneshot(put).await.unwrap().status(), StatusCode::CREATED);
//! let hello = Request::get("/hello").body(Full::new(&b""[..])).unwrap();
//! let res = service.oneshot(hello).await.unwrap();
//! assert_eq!(&res.into_body().collect().await.unwrap().to_bytes()[..], b"hello from warp");
//! # });
//! ```
//!
//! # The protocol at a glance
//!
//! The full contract, with every rule the tests check and how this crate reads the points it
//! leaves open, is `docs/PROTOCOL.md` in the repository. Paths are
//! `<prefix>/<folder>/…/<filename>`.
//!
//! | request | credentials | answer |
//! |---|---|---|
//! | `PUT <path>`, the file as body | bearer key, or a `put` signed URL | `201` File object, `Location` |
//! | `PUT <path>`, `Content-Range: bytes <a>-<b>/<total>`, the chunk | same | `202` + `Range: bytes=…` + `{total, ranges}` while gaps remain; `201` File object from the chunk that closes the last gap; `200` File object for a retry of a finished upload |
//! | `PUT <path>`, `Content-Range: bytes */<total>`, empty body (status query) | same | `202` with the received ranges (empty when unknown), or `200` File object when complete |
//! | `GET` / `HEAD <path>` (`Range`, `If-None-Match`, `If-Modified-Since`, `If-Range`) | none; bearer or a `get` signed URL with [`Uploads::private`](crate::Uploads::private) | `200`, `206`, `304`, `416`, streamed |
//! | `POST <prefix>/signatures`, JSON `{filename, folder?, expiry?, method?}` | bearer only | `200` `{domain, filename, folder, expiry, method, signature, url}` |
//! | `POST /uploads` `{resumable?, conditions?, alias?, metadata?}` (upload session) | bearer only | `200` envelope; `data.url` = `/store/single?key=K` or `/store/resumable?key=K` |
//! | `POST /store/single?key=K`, `multipart/form-data` with a `file` part | the session key | `200` Media object |
//! | `PUT /store/resumable?key=K`, `X-Upload-Index: i`, the part | the session key | `200` `{index, etag}` (any order, retries: the last wins) |
//! | `POST /store/resumable?key=K` `{parts: [{index, etag}, …]}` | the session key | `200` Media object; a used or expired key: `410 upload_gone` |
//! | tus 1.0.0 (PROTOCOL.md §9): `OPTIONS <prefix>/tus`; `POST <prefix>/tus` with `Tus-Resumable: 1.0.0`, `Upload-Length`, `Upload-Metadata` (`filename`, `folder`; the rest goes into the File object's `metadata`; `filetype` is the type hint), optionally a first `application/offset+octet-stream` body | bearer key (or the app's grant) | `201`, `Location: <prefix>/tus/<id>` (a capability), `Upload-Expires` |
//! | `HEAD` / `PATCH` (`Upload-Offset`, optionally `Upload-Checksum: sha1\|sha256\|md5 <base64>`) / `DELETE <prefix>/tus/<id>` | none: the URL | `200` `Upload-Offset`; `204` the new offset, and `Content-Location` of the file once complete; `409` wrong offset, `460` checksum mismatch, `404` finished, terminated or expired. Deferred lengths and concatenation: not yet |
//!
//! Request headers on uploads: `Content-Digest: sha-256=:<base64>:` (verified before a chunk
//! counts; `400 digest_mismatch`, also for a malformed header), `If-None-Match: *` (create
//! only) and `If-Match: <etag>` on a simple `PUT` or on the chunk that creates or joins an
//! upload (`412 precondition_failed`), `Accept-Version: 2025-08-20` or later (bare objects
//! instead of ittybit's `{meta, data, error, links}` envelope). A signed URL is
//! `<base>/<path>?expiry=<unix secs>&method=<put|get>&signature=<base64url HMAC-SHA256 of
//! "<path>?expiry=…&method=…">` ([`auth::Signer`](crate::auth::Signer)).
//!
//! | status | `kind` | when |
//! |---|---|---|
//! | 400 | `path_invalid`, `range_invalid` (length mismatch), `digest_mismatch`, `part_invalid`, `metadata_invalid`, `conditions_invalid`, `multipart_invalid`, `bad_request` | malformed input; a body that ended early |
//! | 401 | `token_missing`, `token_invalid` | no credentials; an unknown bearer key |
//! | 403 | `signature_invalid`, `signature_expired`, `key_invalid`, `forbidden` | a bad or expired signed URL; a tampered session key; credentials (a [`Grant`](crate::Grant)) that do not cover the file or the method |
//! | 404 | `file_not_found` | nothing stored there |
//! | 405 | `method_not_allowed` | a method the endpoint does not accept |
//! | 408 | `request_timeout` | no body byte for the idle timeout (`Uploads::body_idle_timeout`) |
//! | 409 | `range_conflict`, `alias_taken` | a chunk's total differs from its upload's (also: another request's finalization of the upload outlasted 30 s, or the upload kept changing under the chunk: send it again); an upload session's alias is already a file |
//! | 410 | `upload_gone` | an upload-session key used or expired |
//! | 412 | `precondition_failed` | `If-None-Match` / `If-Match` |
//! | 413 | `file_too_large` | `Content-Length`, a chunk or a total over the limits |
//! | 416 | `range_invalid`, `range_not_satisfiable` | a bad `Content-Range`; a `Range` past the end |
//! | 422 | `conditions_failed`, `upload_rejected` | the file breaks the upload conditions; the app's hook rejected it (with the hook's status) |
//! | 429 | `too_many_uploads` | more resumable uploads in progress than `Uploads::max_incomplete_uploads` |
//! | 500 / 507 | `internal_error` / `insufficient_storage` | the storage failed / is full |
//!
//! # Upload sessions
//!
//! ittybit's earlier `/uploads` API: the backend asks for a one-time upload URL, the browser
//! sends the file to it without any other credential ([`session`](crate::session) has the
//! endpoints, keys and limits; `docs/PROTOCOL.md` how this crate reads them). Against the demo
//! server (`examples/server.rs`, key `my-secret-key`):
//!
//! ```sh
//! # The backend makes a one-time upload URL (bearer key)
//! curl -s -X POST http://127.0.0.1:8080/uploads -H 'Authorization: Bearer my-secret-key' \
//!   -d '{"metadata": {"user_id": "u1"}, "alias": "avatars/u1"}'
//! # → {"meta":{…},"data":{"id":"ses_…","url":"http://127.0.0.1:8080/store/single?key=…",…},…}
//! URL='http://127.0.0.1:8080/store/single?key=…'   # that data.url
//!
//! # The browser (or curl) posts the file as a form → 200 + the Media object; the key is spent
//! curl -s -F file=@me.png "$URL"
//!
//! # Resumable sessions ({"resumable": true}; data.url is /store/resumable?key=…): PUT the
//! # parts with X-Upload-Index, in any order, then POST the list
//! curl -s -X PUT "$URL" -H 'X-Upload-Index: 0' --data-binary @part0   # → {…,"data":{"index":0,"etag":"…"},…}
//! curl -s -X POST "$URL" -d '{"parts":[{"index":0,"etag":"…"}]}'      # → the Media object
//! ```
//!
//! # Media facts and conditions
//!
//! Every File object carries what the bytes show — `kind`, `type`, `width`, `height`, and for
//! audio and video `duration`, `fps`, `frames`, `bitrate`, `codec`, `container` — probed with
//! bounded ranged reads (an MP4's `moov` is found wherever it sits). Formats: PNG, JPEG, GIF
//! (frames, duration), WebP (animated too), AVIF/HEIC, BMP, TIFF, SVG; MP4/MOV/M4V/M4A,
//! WebM/MKV, MP3, WAV, FLAC, Ogg. Anything else is `kind: "other"`. What each format gives,
//! and what a probe may read: [`media::probe`](mod@crate::media::probe).
//!
//! Upload conditions (ittybit's rules, such as "an image, at most 10 MB") are set for the whole
//! app with [`Uploads::conditions`](crate::Uploads::conditions) (or
//! [`ConditionsLayer`](crate::conditions::ConditionsLayer) in front of the handler used alone)
//! and per upload session; all must hold. They are checked as early as the bytes allow, and a
//! failing upload gets 422 `conditions_failed` naming the failing rules; its bytes are deleted.
//! The document and its evaluation: [`conditions`](crate::conditions).
//!
//! # Writing a storage backend
//!
//! Uploads go wherever a [`Storage`](crate::Storage) puts them. [`FsStorage`](crate::FsStorage)
//! (a directory, the default), [`MemoryStorage`](crate::MemoryStorage) and, with feature
//! `object-store`, `storage::ObjectStoreStorage` (S3 and S3-compatible servers) come with the
//! crate; for anything else, implement the trait: nine methods, each small.
//!
//! | group | methods | what they promise |
//! |---|---|---|
//! | files | `read` (and `head`, derived from it unless overridden) | a published file's bytes, in bounded frames, of the version the stream started on |
//! | staged bytes | `write_upload`, `read_upload`, `publish_upload`, `delete_upload` | bytes land at their offset; publication is atomic, honours [`PutMode`](crate::storage::PutMode) atomically and stores the opaque `attributes` (the File object lives there); delete is idempotent and never touches a published file |
//! | records | `put_record`, `get_record`, `delete_record`, `list_records` | small documents; [`RecordMode::Create`](crate::storage::RecordMode) has exactly one winner among concurrent creators, `RecordMode::Update(etag)` (compare-and-swap) one among concurrent updates from that etag |
//!
//! Everything that must happen exactly once — a path's one resumable upload, the received
//! ranges, the one claim that finalizes, its take-over when its holder died — the crate
//! builds on the records ([`StorageExt`](crate::storage::StorageExt)), so a backend has no
//! lock, no claim and no range bookkeeping to write. [`Record::new`](crate::storage::Record::new)
//! derives an etag from a value, so a backend needs no version numbers either. Declare
//! [`stable_meta`](crate::storage::Capabilities::stable_meta) in
//! [`capabilities`](crate::storage::Storage::capabilities) only if `head` and `read` give the
//! etag and `modified` that `publish_upload` returned, and an etag is never reused: the
//! service then stores no File object for small simple uploads and derives it from the
//! version instead.
//!
//! **Start from a real backend**: `examples/custom_storage.rs` in the repository keeps files,
//! staged bytes in 1 MiB blocks and records in one SQLite database (publication a re-pointing
//! of rows in one transaction, reads streamed block by block) and passes every check.
//! [`MemoryStorage`](crate::MemoryStorage) is the shortest one. Everything an implementation
//! needs is in [`storage::prelude`](crate::storage::prelude), including `async_trait`,
//! `Bytes` and `futures_util`'s `stream`.
//!
//! Then run the conformance suite from a test of your backend, with the feature in your
//! dev-dependency (and `tokio` with `macros` and `rt-multi-thread`):
//!
//! ```toml
//! [dev-dependencies]
//! tower-uploads = { version = "0.1", features = ["conformance"] }
//! ```
//!
//! `tower_uploads::storage_conformance_tests!(MyStorage::new())` inside a test module makes
//! one test per check, named after it; `storage::conformance::run(Arc::new(storage))` runs
//! them all in one test. A failure names the check and the promise it checks. They cover
//! every promise above and the crate's coordination over them (an 8-way claim race, a claim
//! take-over), with fresh random paths (so they can run against a store that holds data).
//! The signature of every method, in a backend that wraps another and counts publications:
//!
//! ```
//! use std::ops::Range;
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use tower_uploads::storage::prelude::*;
//! use tower_uploads::storage::MemoryStorage;
//!
//! struct Counted<S> {
//!     inner: S,
//!     published: AtomicU64,
//! }
//!
//! #[async_trait]
//! impl<S: Storage> Storage for Counted<S> {
//!     async fn read(&self, path: &FilePath, range: Option<Range<u64>>)
//!         -> StorageResult<Option<(ObjectMeta, ByteStream)>> {
//!         self.inner.read(path, range).await
//!     }
//!     async fn write_upload(&self, upload: &UploadId, offset: u64)
//!         -> StorageResult<Box<dyn UploadWriter>> {
//!         self.inner.write_upload(upload, offset).await
//!     }
//!     async fn read_upload(&self, upload: &UploadId, range: Range<u64>) -> StorageResult<ByteStream> {
//!         self.inner.read_upload(upload, range).await
//!     }
//!     async fn publish_upload(&self, upload: &UploadId, path: &FilePath, size: u64,
//!         options: PublishOptions) -> StorageResult<ObjectMeta> {
//!         let meta = self.inner.publish_upload(upload, path, size, options).await?;
//!         self.published.fetch_add(1, Ordering::Relaxed);
//!         Ok(meta)
//!     }
//!     async fn delete_upload(&self, upload: &UploadId) -> StorageResult<()> {
//!         self.inner.delete_upload(upload).await
//!     }
//!     async fn put_record(&self, key: &RecordKey, value: Bytes, mode: RecordMode)
//!         -> StorageResult<String> {
//!         self.inner.put_record(key, value, mode).await
//!     }
//!     async fn get_record(&self, key: &RecordKey) -> StorageResult<Option<Record>> {
//!         self.inner.get_record(key).await
//!     }
//!     async fn delete_record(&self, key: &RecordKey) -> StorageResult<bool> {
//!         self.inner.delete_record(key).await
//!     }
//!     async fn list_records(&self, prefix: &RecordKey) -> StorageResult<Vec<RecordKey>> {
//!         self.inner.list_records(prefix).await
//!     }
//!     fn capabilities(&self) -> Capabilities {
//!         self.inner.capabilities() // a wrapper that changes no etag may pass them on
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! let storage = Arc::new(Counted { inner: MemoryStorage::new(), published: AtomicU64::new(0) });
//! // In your backend's tests (with `features = ["conformance"]` in your dev-dependency):
//! #[cfg(feature = "conformance")]
//! {
//!     tower_uploads::storage::conformance::run(storage.clone()).await;
//!     assert!(storage.published.load(Ordering::Relaxed) > 0);
//! }
//! // And it plugs in like any backend:
//! let _uploads = tower_uploads::Uploads::from_arc(storage).key("my-api-key");
//! # });
//! ```
//!
//! # Object storage, several instances
//!
//! With feature `object-store`, `storage::ObjectStoreStorage` keeps uploads and files in an S3
//! bucket (or an S3-compatible server: MinIO, Garage, …) through the `object_store` crate. Any
//! number of instances can share one bucket behind a load balancer: chunks of one upload may
//! go to any of them, in any order; exactly one gets the 201. Who decides "exactly once":
//!
//! - the store's own conditional writes (`If-None-Match: *`, `If-Match`), the default: S3,
//!   GCS, Azure, R2, MinIO and Ceph enforce them, and the storage probes the store once to
//!   make sure (`ObjectStoreStorage::probe_conditional_writes`); a store that ignores them
//!   (Garage) is never trusted with them;
//! - PostgreSQL, with feature `postgres`: `ObjectStoreStorage::with_records(PostgresRecords)`
//!   keeps the records (upload state, claims, sessions) in the database; any other
//!   `storage::RecordStore` (the app's database) the same way;
//! - this process alone: `ObjectStoreStorage::single_instance()`.
//!
//! The demo server on a bucket, configured by the standard `AWS_*` variables (with neither
//! `--coordinator` nor `--single-instance` it probes the store, and exits 2 if the store
//! ignores conditional writes):
//!
//! ```sh
//! AWS_ENDPOINT=http://127.0.0.1:3900 AWS_ALLOW_HTTP=true AWS_REGION=garage \
//! AWS_ACCESS_KEY_ID=GK… AWS_SECRET_ACCESS_KEY=… \
//! cargo run --features object-store,postgres --example server -- --store s3://my-bucket \
//!     --coordinator postgres://app@127.0.0.1:5432/app --key k
//! ```
//!
//! Chunks of one size from 5 to 16 MiB go straight into one multipart upload, so every byte
//! reaches the store once. Its tests, `cargo test --all-features --test object_store`, run
//! against a real Garage (`cargo install garage --version 2.5.0 --locked`) and PostgreSQL:
//! the ones `tests/garage/start.sh` and `tests/postgres/start.sh` started on loopback (they
//! print the variables), or else ones they start themselves. How it works, and what an upload
//! costs in requests and bytes: `ARCHITECTURE.md`, `PERFORMANCE.md`.
//!
//! # Security notes
//!
//! The threat model, each defence and the figures of the tests behind them are in
//! `SECURITY.md` in the repository. In short:
//!
//!
//! - **The API key stays on the server.** Browsers and other untrusted clients get signed
//!   URLs: your backend signs them ([`auth::Signer`](crate::auth::Signer), or
//!   `POST /signatures` with the bearer key, which is refused to anything else). A signed
//!   URL is bound to one path, one method and an expiry; anyone holding a `put` URL may
//!   write that path until it expires (and overwrite what is there: the URL does not carry
//!   `If-None-Match: *`), so keep expiries short, let the app choose the paths, and make
//!   them unique where a file must never be replaced.
//! - **Credentials are compared in constant time** (HMAC verification and SHA-256 digests of
//!   bearer keys), against every key of the set (rotation: add the new key, remove the old
//!   one later); an answer never says which key exists.
//! - **Never log raw URIs**: a signed URL's `signature` is in the query. Use
//!   [`stack::redacted_uri`](crate::stack::redacted_uri) in your `TraceLayer`; this crate's
//!   own spans carry the file path only, never the query or the `Authorization` header.
//! - **Delivery is public by default.** [`Uploads::private`](crate::Uploads::private) makes
//!   GET/HEAD need a key or a `get` signature. Uploaded files are served with their sniffed
//!   type, `X-Content-Type-Options: nosniff` and a sandboxing `Content-Security-Policy`, and
//!   scripts and style sheets as `text/plain` unless
//!   [`Uploads::active_types`](crate::Uploads::active_types) (the File object's `type` is
//!   unchanged), so that no upload can script your app; serving user files from a separate
//!   origin is better still.
//! - **Untrusted input is bounded**: paths are validated once and can never leave the
//!   storage root; `Content-Length`, chunk sizes and totals are checked against
//!   [`max_request_size`](crate::Uploads::max_request_size) /
//!   [`max_file_size`](crate::Uploads::max_file_size) before the body is read; media probes
//!   read at most 32 MiB + 64 KiB of any file, do work bounded by what they read, stop
//!   after 300 ms of work, and run on tokio's blocking pool, not on the async workers.
//!   Abandoned uploads expire
//!   ([`upload_ttl`](crate::Uploads::upload_ttl), the sweeper); a stalled body is cut off
//!   ([`body_idle_timeout`](crate::Uploads::body_idle_timeout), 408) and the uploads in
//!   progress can be capped
//!   ([`max_incomplete_uploads`](crate::Uploads::max_incomplete_uploads), 429). Add tower's
//!   `ConcurrencyLimitLayer` or a rate limiter per client if untrusted clients can open
//!   many uploads.
//! - **Integrity**: send `Content-Digest` with chunks (the browser demo and the CLI
//!   uploader do); a corrupted chunk is refused before its range counts, and a bad retry
//!   never overwrites bytes that already count.
