//! The demo server: tower-uploads on plain hyper, storing into a directory.
//!
//! ```text
//! cargo run --release --example server -- --listen 127.0.0.1:8080 --data ./data --key secret
//! ```
//!
//! Flags: `--listen ADDR` (default 127.0.0.1:8080), `--data DIR` (default ./data),
//! `--key KEY` (repeatable; else env `ITTYBIT_API_KEY`; else a random key, printed),
//! `--base-url URL`, `--max-file-size BYTES`, `--max-request-size BYTES`, `--private`,
//! `--legacy-signatures`, `--upload-ttl SECS` (default 86400), `--session-ttl SECS` (upload-session
//! keys, default 3600), `--conditions JSON` (ittybit
//! upload conditions every upload must meet, e.g.
//! `{"operator":"&&","rules":[{"key":"kind","operator":"==","value":"image"}]}`),
//! `--store URL` (instead of `--data`: `file:///dir` is the same as `--data /dir`;
//! `s3://bucket[/prefix]` keeps everything in an S3 bucket, configured by the standard
//! `AWS_*` environment variables, with feature `object-store`), and with an `s3://` store
//! `--coordinator postgres://USER@HOST:PORT/DB` (records and decisions in PostgreSQL, feature
//! `postgres`; `?host=/socket/dir` for a Unix socket) or `--single-instance` (decisions in
//! this process); with neither, the store must enforce conditional writes (probed at start:
//! a store that ignores them, such as Garage, exits 2 before listening).
//! Against hostile clients and faults (SECURITY.md): `--header-read-timeout SECS` (default 30;
//! a connection, HTTP/1 or HTTP/2, with no request in progress for that long is closed: one
//! that sends nothing, or not a whole request head, or stays idle between requests),
//! `--body-idle-timeout SECS` (default 60; 0 = none), `--max-incomplete-uploads N` (default: no
//! cap; 429 past it), `--durability process|power` (a directory's fsync policy, default
//! process: see `Durability`), `--inline-io BYTES` (`FsOptions::inline_io`, default 65536; 0 on
//! NFS or FUSE), `--buffer-budget BYTES` (`FsOptions::buffer_budget`, default 8388608: the
//! write and read buffers of all requests together). `--metrics` serves the crate's metrics
//! (`tower_uploads::metrics`) in Prometheus' text format at `GET /metrics`, answered before the
//! uploads see the request (no credentials; off by default, when `/metrics` is a file path like
//! any other). `--help` describes them; a value follows its flag as `--flag VALUE` or
//! `--flag=VALUE`; a bad command line exits 2. Prints `listening on http://ADDR` once it
//! accepts connections.

use futures_util::future::Either;
use http::Request;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tower::ServiceExt;
use tower_uploads::body::ResponseBody;
use tower_uploads::storage::{Durability, Storage};
use tower_uploads::{FsStorage, Uploads, UploadsService};

/// The demo server: tower-uploads on plain hyper, storing into a directory.
#[derive(clap::Parser)]
#[command(name = "server", args_override_self = true)]
struct Args {
    /// The address to listen on (port 0: any free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The directory of the uploads and files.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "./data",
        allow_hyphen_values = true
    )]
    data: PathBuf,
    /// An API key (repeatable); else env ITTYBIT_API_KEY; else a random key, printed.
    #[arg(long = "key", value_name = "KEY", allow_hyphen_values = true)]
    keys: Vec<String>,
    /// The public URL of the files, in their `url`, `Location` and signed URLs (default:
    /// http://ADDR).
    #[arg(long, value_name = "URL", allow_hyphen_values = true)]
    base_url: Option<String>,
    /// The largest file (default 1 GiB).
    #[arg(long, value_name = "BYTES")]
    max_file_size: Option<u64>,
    /// The largest request body (default 64 MiB).
    #[arg(long, value_name = "BYTES")]
    max_request_size: Option<u64>,
    /// Private delivery: GET and HEAD need a bearer key or a `get` signature.
    #[arg(long)]
    private: bool,
    /// Accepts the seed-style signed URLs without `method`, for PUT only.
    #[arg(long)]
    legacy_signatures: bool,
    /// How long an incomplete resumable upload lives without activity (default 86400).
    #[arg(long, value_name = "SECS")]
    upload_ttl: Option<u64>,
    /// How long the key of an upload session stays valid (default 3600).
    #[arg(long, value_name = "SECS")]
    session_ttl: Option<u64>,
    /// The ittybit upload conditions every upload must meet, e.g.
    /// {"operator":"&&","rules":[{"key":"kind","operator":"==","value":"image"}]}
    #[arg(long, value_name = "JSON", value_parser = conditions)]
    conditions: Option<tower_uploads::conditions::Conditions>,
    /// Instead of --data: file:///dir (the same as --data /dir), or s3://bucket[/prefix]
    /// (configured by the standard AWS_* environment variables; feature object-store).
    #[arg(long, value_name = "URL", allow_hyphen_values = true)]
    store: Option<String>,
    /// With an s3:// store: keeps the records (upload state, claims, sessions) in PostgreSQL
    /// and decides them there (feature postgres): postgres://USER@HOST:PORT/DB, or
    /// postgres://USER@/DB?host=/socket/dir for a Unix socket.
    #[arg(long, value_name = "URL")]
    coordinator: Option<String>,
    /// With an s3:// store: this is the only instance on the bucket; decisions are taken in
    /// this process.
    #[arg(long, conflicts_with = "coordinator")]
    single_instance: bool,
    /// Serves Prometheus metrics at GET /metrics, before the uploads see the request (no
    /// credentials). Off by default: /metrics is then a file path like any other.
    #[arg(long)]
    metrics: bool,
    #[command(flatten)]
    hardening: Hardening,
}

/// The flags against hostile clients and faults (SECURITY.md).
#[derive(clap::Args)]
#[command(next_help_heading = "Against hostile clients and faults (SECURITY.md)")]
struct Hardening {
    /// A connection, HTTP/1 or HTTP/2, with no request in progress for this long is closed:
    /// one that sends nothing, or not a whole request head, or stays idle between requests
    /// (0 counts as 1).
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    header_read_timeout: u64,
    /// How long an upload's request body may go without a byte (default 60; 0 = none).
    #[arg(long, value_name = "SECS")]
    body_idle_timeout: Option<u64>,
    /// Caps the resumable uploads in progress; 429 past it (default: no cap).
    #[arg(long, value_name = "N")]
    max_incomplete_uploads: Option<u64>,
    /// A directory's fsync policy (`Durability`).
    #[arg(
        long,
        value_name = "process|power",
        value_enum,
        default_value = "process"
    )]
    durability: DurabilityArg,
    /// Simple uploads up to this size are written on the calling thread, not tokio's blocking
    /// pool (`FsOptions::inline_io`, default 65536; 0 on NFS or FUSE).
    #[arg(long, value_name = "BYTES")]
    inline_io: Option<u64>,
    /// The most bytes of write and read buffers all requests hold at once; past it a body is
    /// read more slowly (`FsOptions::buffer_budget`, default 8388608).
    #[arg(long, value_name = "BYTES")]
    buffer_budget: Option<usize>,
}

/// The values of `--durability`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum DurabilityArg {
    /// No fsync: survives the process being killed, not a power cut.
    Process,
    /// fsync before a range counts and before a publication is answered.
    Power,
}

/// `--conditions JSON`, parsed.
fn conditions(json: &str) -> Result<tower_uploads::conditions::Conditions, String> {
    tower_uploads::conditions::Conditions::parse(json.as_bytes()).map_err(|e| e.to_string())
}

/// The command line, or exit: 0 after `--help`, 2 with clap's message on stderr for a bad one.
fn parse_args() -> Args {
    use clap::Parser;
    Args::try_parse().unwrap_or_else(|e| {
        if !e.use_stderr() {
            e.exit();
        }
        // Its usage line as `usage:`, as before clap (what scripts and tests look for).
        eprint!(
            "{}",
            e.render().to_string().replace("\nUsage: ", "\nusage: ")
        );
        std::process::exit(2)
    })
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,tower_uploads=info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let mut keys = args.keys.clone();
    if keys.is_empty() {
        match std::env::var("ITTYBIT_API_KEY") {
            Ok(k) if !k.is_empty() => keys.push(k),
            _ => {
                let k = tower_uploads::file::random_id("key_");
                println!("generated API key: {k}");
                keys.push(k);
            }
        }
    }
    let storage = match open_storage(&args).await {
        Ok(s) => s,
        Err((code, e)) => {
            eprintln!("error: {e}");
            std::process::exit(code);
        }
    };
    let listener = match TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", args.listen);
            std::process::exit(1);
        }
    };
    let addr = listener.local_addr().expect("bound address");
    let mut uploads = Uploads::from_arc(storage)
        .base_url(args.base_url.unwrap_or_else(|| format!("http://{addr}")))
        .private(args.private)
        .legacy_signatures(args.legacy_signatures);
    for k in keys {
        uploads = uploads.key(k);
    }
    if let Some(n) = args.max_file_size {
        uploads = uploads.max_file_size(n);
    }
    if let Some(n) = args.max_request_size {
        uploads = uploads.max_request_size(n);
    }
    if let Some(conditions) = args.conditions {
        uploads = uploads.conditions(conditions);
    }
    if let Some(secs) = args.upload_ttl {
        uploads = uploads.upload_ttl(Duration::from_secs(secs));
    }
    if let Some(secs) = args.session_ttl {
        uploads = uploads.session_ttl(Duration::from_secs(secs));
    }
    if let Some(secs) = args.hardening.body_idle_timeout {
        uploads = uploads.body_idle_timeout((secs > 0).then(|| Duration::from_secs(secs)));
    }
    if let Some(n) = args.hardening.max_incomplete_uploads {
        uploads = uploads.max_incomplete_uploads(usize::try_from(n).unwrap_or(usize::MAX));
    }
    let header_read_timeout = Duration::from_secs(args.hardening.header_read_timeout.max(1));
    let metrics = args.metrics.then(install_metrics);
    let _sweeper = uploads.spawn_sweeper();
    let service = uploads.service();

    println!("listening on http://{addr}");
    let mut accept_errors = AcceptErrors::default();
    let connections = Arc::new(AtomicUsize::new(0));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of descriptors (EMFILE, ENFILE) or memory, or a connection reset before
                // it was accepted: wait a little (connections that time out free descriptors)
                // and go on accepting; log once a second at most.
                accept_errors.failed(&e);
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        let open = Open::count(&connections);
        tokio::spawn(serve(
            stream,
            service,
            metrics.clone(),
            header_read_timeout,
            open,
        ));
    }
}

/// hyper's read buffer for a connection accepted while `open` others are: 64 KiB while few
/// are (reads that large keep one upload as fast as 2 MiB batches can take it: smaller ones
/// cost system time), 16 KiB beyond (a streaming body pins up to two buffers, and glibc keeps
/// in its arenas what it once held: with 600 connections of the load test, 64 KiB buffers
/// alone were 58 MiB at the peak; nginx's `client_body_buffer_size` is 16 KiB).
fn read_buffer(open: usize) -> usize {
    if open < 64 { 64 * 1024 } else { 16 * 1024 }
}

/// One open connection, counted while it lives (for [`read_buffer`]).
struct Open(Arc<AtomicUsize>);

impl Open {
    fn count(connections: &Arc<AtomicUsize>) -> Open {
        connections.fetch_add(1, Ordering::Relaxed);
        Open(connections.clone())
    }

    /// The connections open besides this one.
    fn others(&self) -> usize {
        self.0.load(Ordering::Relaxed).saturating_sub(1)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How long the accept loop waits after a failed `accept` (out of descriptors, say).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How long a connection shut down for idleness may take to say goodbye (HTTP/2 `GOAWAY`)
/// before it is dropped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// The bucket bounds of the duration histograms, in seconds: a 4 KiB PUT on loopback takes
/// well under a millisecond, a chunk of many MiB seconds.
const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0,
];

/// Installs the Prometheus recorder (`--metrics`), the metrics' descriptions, and a task that
/// drains its histograms every few seconds (the exporter's upkeep, needed between scrapes).
fn install_metrics() -> PrometheusHandle {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), DURATION_BUCKETS)
        .and_then(PrometheusBuilder::install_recorder)
        .unwrap_or_else(|e| {
            eprintln!("error: cannot install the metrics recorder: {e}");
            std::process::exit(1)
        });
    tower_uploads::metrics::describe();
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    handle
}

/// `GET /metrics` (or `HEAD`) with `--metrics`: the exposition, whatever else the request
/// carries.
fn is_scrape<B>(req: &Request<B>) -> bool {
    (req.method() == http::Method::GET || req.method() == http::Method::HEAD)
        && req.uri().path() == "/metrics"
}

/// The Prometheus text exposition of the recorder's metrics.
fn exposition(handle: &PrometheusHandle) -> http::Response<ResponseBody> {
    http::Response::builder()
        .header(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")
        .header(http::header::CACHE_CONTROL, "no-store")
        .body(ResponseBody::full(handle.render()))
        .expect("a valid response")
}

/// Serves one connection, HTTP/1 or HTTP/2, and closes it once it has had no request in
/// progress for `idle` (SECURITY.md): from the moment it was accepted until a complete
/// request head arrives, and again between requests.
///
/// hyper's own `header_read_timeout` covers HTTP/1 only, and only once the protocol is known:
/// hyper-util's auto builder first waits, with no timeout, for the 24 bytes that tell HTTP/1
/// from HTTP/2, and HTTP/2 has no such timeout at all, so a connection that sends nothing,
/// or only the HTTP/2 preface and `SETTINGS`, or a `HEADERS` frame that never ends, would
/// hold its descriptor forever. Here a request counts as in progress from the moment the
/// service is called (its head is complete) until its response body is done or dropped.
async fn serve(
    stream: tokio::net::TcpStream,
    service: UploadsService,
    metrics: Option<PrometheusHandle>,
    idle: Duration,
    open: Open,
) {
    let (busy, mut watch) = tokio::sync::watch::channel(0usize);
    let busy = Arc::new(busy);
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let guard = Busy::start(&busy);
        let call = match metrics.as_ref().filter(|_| is_scrape(&req)) {
            Some(handle) => Either::Left(std::future::ready(Ok(exposition(handle)))),
            None => Either::Right(service.clone().oneshot(req)),
        };
        async move {
            let res = call.await?;
            // The guard lives as long as the response body: a long download is not idle.
            Ok::<_, Infallible>(res.map(|body| {
                body.map_frame(move |frame| {
                    let _in_progress = &guard;
                    frame
                })
            }))
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(idle)
        // hyper's read buffer grows to ~400 KiB per connection under a streaming body by
        // default; with 200 uploads that alone held ~80 MiB, which glibc then kept.
        .max_buf_size(read_buffer(open.others()));
    builder
        .http2()
        .timer(TokioTimer::new())
        // A peer that stops answering pings is gone, also while a request is in progress
        // (which the idle timer below leaves alone).
        .keep_alive_interval(idle)
        .keep_alive_timeout(idle);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    loop {
        let in_progress = *watch.borrow_and_update();
        let timed_out = tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            Ok(()) = watch.changed() => false,
            () = tokio::time::sleep(idle), if in_progress == 0 => true,
        };
        if timed_out {
            break;
        }
    }
    tracing::debug!(?idle, "closing a connection with no request in progress");
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
}

/// One request in progress on a connection (see [`serve`]).
struct Busy(Arc<tokio::sync::watch::Sender<usize>>);

impl Busy {
    fn start(count: &Arc<tokio::sync::watch::Sender<usize>>) -> Busy {
        count.send_modify(|n| *n += 1);
        Busy(count.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

/// Logs failed `accept`s at most once a second, with how many there were.
#[derive(Default)]
struct AcceptErrors {
    since: Option<std::time::Instant>,
    count: u64,
}

impl AcceptErrors {
    fn failed(&mut self, e: &std::io::Error) {
        self.count += 1;
        if self
            .since
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            tracing::warn!(error = %e, failures = self.count, "accept failed; retrying");
            self.since = Some(std::time::Instant::now());
            self.count = 0;
        }
    }
}

/// The storage of `--store URL` (`file:///dir`, `s3://bucket[/prefix]`), else of `--data DIR`;
/// or the exit status and message.
async fn open_storage(args: &Args) -> Result<Arc<dyn Storage>, (i32, String)> {
    let dir = match args.store.as_deref() {
        None => args.data.clone(),
        Some(url) if url.starts_with("file://") => PathBuf::from(&url["file://".len()..]),
        Some(url) if url.starts_with("s3://") => return object_storage(args, url).await,
        Some(url) => {
            return Err((
                1,
                format!(
                    "--store: unsupported URL {url} (file:///dir, or s3://bucket with feature object-store)"
                ),
            ));
        }
    };
    if args.coordinator.is_some() || args.single_instance {
        return Err((
            2,
            "--coordinator and --single-instance apply to an s3:// --store only".into(),
        ));
    }
    let options = FsStorage::options().durability(match args.hardening.durability {
        DurabilityArg::Process => Durability::Process,
        DurabilityArg::Power => Durability::Power,
    });
    let options = match args.hardening.inline_io {
        Some(limit) => options.inline_io(limit),
        None => options,
    };
    let options = match args.hardening.buffer_budget {
        Some(bytes) => options.buffer_budget(bytes),
        None => options,
    };
    options
        .open(&dir)
        .map(|s| Arc::new(s) as Arc<dyn Storage>)
        .map_err(|e| (1, format!("cannot use {}: {e}", dir.display())))
}

/// An `s3://` store, coordinated by PostgreSQL (`--coordinator`), by this process alone
/// (`--single-instance`), or by the store's own conditional writes when the startup probe
/// finds them enforced; a store that ignores them is refused (status 2).
#[cfg(feature = "object-store")]
async fn object_storage(args: &Args, url: &str) -> Result<Arc<dyn Storage>, (i32, String)> {
    use tower_uploads::storage::{ConditionalWrites, ObjectStoreStorage};
    let s = ObjectStoreStorage::from_url(url).map_err(|e| (1, format!("cannot use {url}: {e}")))?;
    if args.single_instance {
        return Ok(Arc::new(s.single_instance()));
    }
    if let Some(pg) = args.coordinator.as_deref() {
        return coordinated(s, pg).await;
    }
    match s.probe_conditional_writes().await {
        Ok(ConditionalWrites::Enforced) => Ok(Arc::new(s)),
        Ok(ConditionalWrites::Ignored) => Err((
            2,
            format!(
                "the store at {url} ignores conditional writes (If-None-Match / If-Match), so \
                 it cannot decide which instance finalizes an upload: run with \
                 --coordinator postgres://USER@HOST:PORT/DB (several instances) or \
                 --single-instance (this one only)"
            ),
        )),
        Err(e) => Err((1, format!("cannot use {url}: {e}"))),
    }
}

#[cfg(not(feature = "object-store"))]
async fn object_storage(_: &Args, url: &str) -> Result<Arc<dyn Storage>, (i32, String)> {
    Err((
        1,
        format!("--store {url}: built without feature object-store"),
    ))
}

#[cfg(all(feature = "object-store", feature = "postgres"))]
async fn coordinated(
    s: tower_uploads::storage::ObjectStoreStorage,
    url: &str,
) -> Result<Arc<dyn Storage>, (i32, String)> {
    let records = tower_uploads::storage::PostgresRecords::connect(url)
        .await
        .map_err(|e| (1, format!("--coordinator {url}: {e}")))?;
    Ok(Arc::new(s.with_records(Arc::new(records))))
}

#[cfg(all(feature = "object-store", not(feature = "postgres")))]
async fn coordinated(
    _: tower_uploads::storage::ObjectStoreStorage,
    url: &str,
) -> Result<Arc<dyn Storage>, (i32, String)> {
    Err((
        2,
        format!("--coordinator {url}: built without feature postgres"),
    ))
}
