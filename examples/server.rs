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
//! `AWS_*` environment variables, with feature `object-store`).
//! Against hostile clients and faults (SECURITY.md): `--header-read-timeout SECS` (default 30),
//! `--body-idle-timeout SECS` (default 60; 0 = none), `--max-incomplete-uploads N` (default: no
//! cap; 429 past it), `--durability process|power` (a directory's fsync policy, default
//! process: see `Durability`), `--inline-io BYTES` (`FsStorage::inline_io`, default 65536; 0 on
//! NFS or FUSE). Prints `listening on http://ADDR` once it accepts connections.

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tower_uploads::storage::{Durability, Storage};
use tower_uploads::{FsStorage, Uploads};

const USAGE: &str = "usage: server [--listen ADDR] [--data DIR] [--key KEY]... [--base-url URL] \
[--max-file-size BYTES] [--max-request-size BYTES] [--private] [--legacy-signatures] \
[--upload-ttl SECS] [--session-ttl SECS] [--conditions JSON] [--store URL] \
[--header-read-timeout SECS] [--body-idle-timeout SECS] [--max-incomplete-uploads N] \
[--durability process|power] [--inline-io BYTES]";

struct Args {
    listen: SocketAddr,
    data: PathBuf,
    keys: Vec<String>,
    base_url: Option<String>,
    max_file_size: Option<u64>,
    max_request_size: Option<u64>,
    private: bool,
    legacy_signatures: bool,
    upload_ttl: Option<u64>,
    session_ttl: Option<u64>,
    conditions: Option<tower_uploads::conditions::Conditions>,
    store: Option<String>,
    hardening: Hardening,
}

/// The flags against hostile clients and faults (SECURITY.md).
struct Hardening {
    header_read_timeout: Duration,
    body_idle_timeout: Option<u64>,
    max_incomplete_uploads: Option<usize>,
    durability: Durability,
    /// `FsStorage::inline_io`.
    inline_io: Option<u64>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        listen: "127.0.0.1:8080".parse().expect("valid default"),
        data: PathBuf::from("./data"),
        keys: Vec::new(),
        base_url: None,
        max_file_size: None,
        max_request_size: None,
        private: false,
        legacy_signatures: false,
        upload_ttl: None,
        session_ttl: None,
        conditions: None,
        store: None,
        hardening: Hardening {
            header_read_timeout: Duration::from_secs(30),
            body_idle_timeout: None,
            max_incomplete_uploads: None,
            durability: Durability::Process,
            inline_io: None,
        },
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
            _ => (flag.clone(), None),
        };
        let mut value = |what: &str| {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{name} needs {what}"))
        };
        let number = |s: String, name: &str| {
            s.parse::<u64>()
                .map_err(|_| format!("{name}: not a number of bytes/seconds: {s}"))
        };
        match name.as_str() {
            "--listen" => {
                let v = value("an address")?;
                args.listen = v
                    .parse()
                    .map_err(|_| format!("--listen: bad address {v}"))?;
            }
            "--data" => args.data = PathBuf::from(value("a directory")?),
            "--store" => args.store = Some(value("a URL")?),
            "--key" => args.keys.push(value("a key")?),
            "--base-url" => args.base_url = Some(value("a URL")?),
            "--max-file-size" => args.max_file_size = Some(number(value("bytes")?, &name)?),
            "--max-request-size" => args.max_request_size = Some(number(value("bytes")?, &name)?),
            "--upload-ttl" => args.upload_ttl = Some(number(value("seconds")?, &name)?),
            "--session-ttl" => args.session_ttl = Some(number(value("seconds")?, &name)?),
            "--conditions" => {
                let json = value("a JSON document")?;
                let parsed = tower_uploads::conditions::Conditions::parse(json.as_bytes())
                    .map_err(|e| format!("--conditions: {e}"))?;
                args.conditions = Some(parsed);
            }
            "--header-read-timeout" => {
                let secs = number(value("seconds")?, &name)?.max(1);
                args.hardening.header_read_timeout = Duration::from_secs(secs);
            }
            "--body-idle-timeout" => {
                args.hardening.body_idle_timeout = Some(number(value("seconds")?, &name)?);
            }
            "--max-incomplete-uploads" => {
                let n = number(value("a count")?, &name)?;
                args.hardening.max_incomplete_uploads =
                    Some(usize::try_from(n).unwrap_or(usize::MAX));
            }
            "--durability" => {
                args.hardening.durability = match value("process or power")?.as_str() {
                    "process" => Durability::Process,
                    "power" => Durability::Power,
                    v => return Err(format!("--durability: process or power, not {v}")),
                };
            }
            "--inline-io" => {
                args.hardening.inline_io = Some(number(value("a number of bytes")?, &name)?);
            }
            "--private" => args.private = true,
            "--legacy-signatures" => args.legacy_signatures = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument: {other}")),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
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
    let storage = match open_storage(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
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
        uploads = uploads.max_incomplete_uploads(n);
    }
    let header_read_timeout = args.hardening.header_read_timeout;
    let _sweeper = uploads.spawn_sweeper();
    let service = uploads.service();

    println!("listening on http://{addr}");
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(service.clone());
        tokio::spawn(async move {
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout);
            if let Err(e) = builder
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
}

/// The storage of `--store URL` (`file:///dir`, `s3://bucket[/prefix]`), else of `--data DIR`.
fn open_storage(args: &Args) -> Result<Arc<dyn Storage>, String> {
    let dir = match args.store.as_deref() {
        None => args.data.clone(),
        Some(url) if url.starts_with("file://") => PathBuf::from(&url["file://".len()..]),
        #[cfg(feature = "object-store")]
        Some(url) if url.starts_with("s3://") => {
            let s = tower_uploads::storage::ObjectStoreStorage::from_url(url)
                .map_err(|e| format!("cannot use {url}: {e}"))?;
            return Ok(Arc::new(s));
        }
        Some(url) => {
            return Err(format!(
                "--store: unsupported URL {url} (file:///dir, or s3://bucket with feature object-store)"
            ));
        }
    };
    FsStorage::new(&dir)
        .map(|s| {
            let s = s.durability(args.hardening.durability);
            let s = match args.hardening.inline_io {
                Some(limit) => s.inline_io(limit),
                None => s,
            };
            Arc::new(s) as Arc<dyn Storage>
        })
        .map_err(|e| format!("cannot use {}: {e}", dir.display()))
}
