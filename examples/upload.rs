//! A command-line uploader for tower-uploads (or ittybit) endpoints: a file to a signed URL,
//! or files and folders with a bearer key; resumable `Content-Range` chunks sent in parallel,
//! each with its `Content-Digest`, retried with exponential backoff, and an interrupted run
//! resumed by asking the server what it already has (the status query,
//! `Content-Range: bytes */<total>`). The server keeps the state: rerunning the same command
//! after a crash, a `kill -9` or a lost network sends only the missing bytes.
//!
//! ```text
//! cargo run --example upload -- --url 'http://127.0.0.1:8080/pets/cat.mp4?expiry=…&method=put&signature=…' cat.mp4
//! cargo run --example upload -- --base http://127.0.0.1:8080 --key KEY ./photos backups/photos
//! ```
//!
//! Flags: `--url SIGNED_URL` (one file), or `--base URL` with `--key KEY` (else env
//! `ITTYBIT_API_KEY`) and an optional destination path (default: the file's or folder's
//! name); `--chunk-size BYTES` (default 8 MiB; files up to this size go in one plain PUT),
//! `--parallel N` (default 4), `--retries N` per chunk (default 8), `--limit-rate BYTES` per
//! second (default: none), `--quiet` (no progress bar). Sizes take `k`/`m`/`g` suffixes.
//! `--help` describes them.
//!
//! Prints one line per file, `done <path> <status> sent=<bytes> <url>` (after a
//! `resuming <path>: <n> of <total> bytes already on the server` line when it resumed), and
//! exits 0 when every file is stored, 1 otherwise (2 on a bad command line). Plain `http://`
//! only: this example's `reqwest` is built without TLS.

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Bytes per frame of a chunk's body (the rate limiter's and the progress bar's step).
const FRAME: usize = 64 * 1024;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Where the files go.
#[derive(Clone)]
enum Target {
    /// One signed URL (one file).
    Signed(String),
    /// `<base>/<path>` with `Authorization: Bearer <key>`.
    Bearer { base: String, key: String },
}

/// A command-line uploader for tower-uploads (or ittybit) endpoints: resumable, parallel,
/// retried. Exits 0 when every file is stored, 1 otherwise, 2 on a bad command line.
#[derive(clap::Parser)]
#[command(name = "upload", args_override_self = true)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["url", "base"])))]
struct Args {
    /// A signed URL for one file.
    #[arg(long, value_name = "SIGNED_URL", allow_hyphen_values = true)]
    url: Option<String>,
    /// The server's URL: files go to URL/DEST with a bearer key.
    #[arg(long, value_name = "URL", allow_hyphen_values = true)]
    base: Option<String>,
    /// The bearer key for --base (else env ITTYBIT_API_KEY).
    #[arg(long, value_name = "KEY", allow_hyphen_values = true)]
    key: Option<String>,
    /// The size of a chunk; files up to this size go in one plain PUT. Takes k/m/g suffixes.
    #[arg(long, value_name = "BYTES", default_value = "8m", value_parser = size_arg)]
    chunk_size: u64,
    /// Chunks sent at once.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = positive)]
    parallel: usize,
    /// Retries per chunk.
    #[arg(long, value_name = "N", default_value_t = 8)]
    retries: u32,
    /// A cap on the bytes sent per second (default: none). Takes k/m/g suffixes.
    #[arg(long, value_name = "BYTES_PER_SEC", value_parser = size_arg)]
    limit_rate: Option<u64>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// The file or folder to upload.
    #[arg(value_name = "SOURCE")]
    source: PathBuf,
    /// Its destination path with --base (default: the file's or folder's name); a signed URL
    /// names its own.
    #[arg(value_name = "DEST", conflicts_with = "url")]
    dest: Option<String>,
}

fn size_arg(s: &str) -> Result<u64, String> {
    let lower = s.trim().to_ascii_lowercase();
    let split = lower
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(lower.len());
    let (num, unit) = lower.split_at(split);
    let mult: u64 = match unit {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("not a size: {s}")),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("not a size: {s}"))
}

/// `--parallel N`: at least 1.
fn positive(s: &str) -> Result<usize, String> {
    s.parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| "not a positive number".to_owned())
}

/// Where the files go; exits 2 when `--base` has no key.
fn target(args: &Args) -> Target {
    match (&args.url, &args.base) {
        (Some(url), _) => Target::Signed(url.clone()),
        (None, Some(base)) => {
            let key = args
                .key
                .clone()
                .or_else(|| std::env::var("ITTYBIT_API_KEY").ok());
            let key = key.unwrap_or_else(|| {
                <Args as clap::CommandFactory>::command()
                    .error(
                        clap::error::ErrorKind::MissingRequiredArgument,
                        "--base needs --key KEY or ITTYBIT_API_KEY",
                    )
                    .exit()
            });
            Target::Bearer {
                base: base.trim_end_matches('/').to_owned(),
                key,
            }
        }
        (None, None) => unreachable!("clap requires --url or --base"),
    }
}

/// One file to upload.
struct Job {
    local: PathBuf,
    /// The destination path (`folder/…/name`), for messages and bearer URLs.
    dest: String,
    size: u64,
}

/// The files under `source` (itself, or everything below a folder, sorted), with their
/// destination paths.
fn jobs(source: &Path, dest: Option<&str>) -> Result<Vec<Job>, Error> {
    let name = source
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or("SOURCE has no name")?;
    let dest = dest.unwrap_or(&name).trim_matches('/').to_owned();
    let meta = std::fs::metadata(source)?;
    if meta.is_file() {
        return Ok(vec![Job {
            local: source.to_owned(),
            dest,
            size: meta.len(),
        }]);
    }
    let mut out = Vec::new();
    let mut stack = vec![(source.to_owned(), dest)];
    while let Some((dir, prefix)) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let dest = format!("{prefix}/{name}");
            let ft = entry.file_type()?;
            if ft.is_dir() {
                stack.push((entry.path(), dest));
            } else if ft.is_file() {
                let size = entry.metadata()?.len();
                out.push(Job {
                    local: entry.path(),
                    dest,
                    size,
                });
            }
        }
    }
    out.sort_by(|a, b| a.dest.cmp(&b.dest));
    Ok(out)
}

/// A shared send-rate cap: each frame reserves its slot in time.
struct RateLimit {
    bytes_per_sec: u64,
    next: Mutex<Instant>,
}

impl RateLimit {
    async fn take(&self, n: usize) {
        let at = {
            let mut next = self.next.lock().await;
            let at = (*next).max(Instant::now());
            *next = at + Duration::from_secs_f64(n as f64 / self.bytes_per_sec as f64);
            at
        };
        tokio::time::sleep_until(at).await;
    }
}

/// What the uploader shares between chunks.
struct Ctx {
    client: reqwest::Client,
    target: Target,
    retries: u32,
    rate: Option<RateLimit>,
    bar: ProgressBar,
    /// Chunk bytes sent whose request got an answer (any answer), across all files.
    sent: std::sync::atomic::AtomicU64,
}

impl Ctx {
    fn request(&self, job: &Job) -> reqwest::RequestBuilder {
        let req = match &self.target {
            Target::Signed(url) => self.client.put(url),
            Target::Bearer { base, key } => {
                let path = tower_uploads::path::FilePath::new(job.dest.clone())
                    .map(|p| p.to_uri_path())
                    .unwrap_or_else(|_| job.dest.clone());
                self.client.put(format!("{base}/{path}")).bearer_auth(key)
            }
        };
        req.header("accept-version", "2025-08-20")
    }
}

/// An answer: status and JSON body.
struct Reply {
    status: u16,
    body: serde_json::Value,
}

impl Reply {
    fn message(&self) -> String {
        let kind = self.body["kind"].as_str().unwrap_or("?");
        let message = self.body["message"].as_str().unwrap_or("");
        format!("{} {kind}: {message}", self.status)
    }
}

/// Whether a failure is worth retrying (the network, the server's 5xx, 408, 429).
fn retryable(status: u16) -> bool {
    status == 408 || status == 429 || status >= 500
}

/// Sends one request built by `build` (a fresh body each attempt), retrying with backoff.
async fn with_retries<F, Fut>(ctx: &Ctx, what: &str, mut attempt_once: F) -> Result<Reply, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Reply, reqwest::Error>>,
{
    let mut attempt = 0u32;
    loop {
        let error = match attempt_once().await {
            Ok(reply) if !retryable(reply.status) => return Ok(reply),
            Ok(reply) => reply.message(),
            Err(e) => e.to_string(),
        };
        if attempt >= ctx.retries {
            return Err(
                format!("{what}: giving up after {} attempts: {error}", attempt + 1).into(),
            );
        }
        let backoff = Duration::from_millis(250u64 << attempt.min(6)).min(Duration::from_secs(10));
        let jitter = Duration::from_millis(rand::random::<u64>() % 250);
        ctx.bar
            .suspend(|| eprintln!("{what}: {error}; retrying in {:?}", backoff + jitter));
        tokio::time::sleep(backoff + jitter).await;
        attempt += 1;
    }
}

async fn reply(res: reqwest::Response) -> Result<Reply, reqwest::Error> {
    let status = res.status().as_u16();
    let bytes = res.bytes().await?;
    Ok(Reply {
        status,
        body: serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    })
}

/// Asks what the server has of `job` (`bytes */<total>`).
async fn status_query(ctx: &Ctx, job: &Job) -> Result<Reply, Error> {
    with_retries(ctx, &format!("{}: status query", job.dest), || async {
        let res = ctx
            .request(job)
            .header("content-range", format!("bytes */{}", job.size))
            .body(Vec::new())
            .send()
            .await?;
        reply(res).await
    })
    .await
}

/// The inclusive `[[a, b], …]` ranges of a progress answer.
fn ranges_of(body: &serde_json::Value) -> Vec<Range<u64>> {
    body["ranges"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| Some(r[0].as_u64()?..r[1].as_u64()? + 1))
                .collect()
        })
        .unwrap_or_default()
}

/// `[0, total)` minus `have`, cut into pieces of at most `chunk` bytes.
fn missing(total: u64, have: &[Range<u64>], chunk: u64) -> Vec<Range<u64>> {
    let mut gaps = Vec::new();
    let mut at = 0;
    for r in tower_uploads::storage::merge_ranges(have.to_vec()) {
        if r.start > at {
            gaps.push(at..r.start.min(total));
        }
        at = at.max(r.end);
    }
    if at < total {
        gaps.push(at..total);
    }
    gaps.into_iter()
        .flat_map(|g| {
            (g.start..g.end)
                .step_by(chunk as usize)
                .map(move |s| s..(s + chunk).min(g.end))
        })
        .collect()
}

async fn read_range(file: &Path, range: Range<u64>) -> Result<Bytes, Error> {
    let mut f = tokio::fs::File::open(file).await?;
    f.seek(std::io::SeekFrom::Start(range.start)).await?;
    let mut buf = vec![0; (range.end - range.start) as usize];
    f.read_exact(&mut buf).await?;
    Ok(Bytes::from(buf))
}

/// The body of one attempt: frames of the chunk, paced by the rate limit and counted on
/// the progress bar (`shown` tracks what this attempt added, to take it back on failure).
fn paced_body(
    ctx: &Arc<Ctx>,
    data: Bytes,
    shown: Arc<std::sync::atomic::AtomicU64>,
) -> reqwest::Body {
    use std::sync::atomic::Ordering::Relaxed;
    let frames: Vec<Bytes> = (0..data.len())
        .step_by(FRAME)
        .map(|i| data.slice(i..(i + FRAME).min(data.len())))
        .collect();
    let ctx = ctx.clone();
    let stream = futures_util::stream::iter(frames).then(move |frame| {
        let ctx = ctx.clone();
        let shown = shown.clone();
        async move {
            if let Some(rate) = &ctx.rate {
                rate.take(frame.len()).await;
            }
            ctx.bar.inc(frame.len() as u64);
            shown.fetch_add(frame.len() as u64, Relaxed);
            Ok::<_, std::io::Error>(frame)
        }
    });
    reqwest::Body::wrap_stream(stream)
}

/// Sends one chunk (with retries); its answer.
async fn send_chunk(ctx: Arc<Ctx>, job: Arc<Job>, range: Range<u64>) -> Result<Reply, Error> {
    use std::sync::atomic::Ordering::Relaxed;
    let data = read_range(&job.local, range.clone()).await?;
    let digest = format!(
        "sha-256=:{}:",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            Sha256::digest(&data)
        )
    );
    let content_range = format!("bytes {}-{}/{}", range.start, range.end - 1, job.size);
    let what = format!("{} {content_range}", job.dest);
    let len = data.len() as u64;
    let reply = with_retries(&ctx, &what, || {
        let shown = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let req = ctx
            .request(&job)
            .header("content-range", content_range.clone())
            .header("content-digest", digest.clone())
            .header("content-length", len)
            .body(paced_body(&ctx, data.clone(), shown.clone()));
        let ctx = ctx.clone();
        async move {
            let result = match req.send().await {
                Ok(res) => reply(res).await,
                Err(e) => Err(e),
            };
            match &result {
                Ok(r) if r.status < 300 => {
                    ctx.sent.fetch_add(len, Relaxed);
                }
                _ => {
                    // Not stored: take this attempt's bytes off the bar.
                    let back = shown.load(Relaxed);
                    ctx.bar
                        .set_position(ctx.bar.position().saturating_sub(back));
                }
            }
            result
        }
    })
    .await?;
    if reply.status >= 300 {
        return Err(format!("{what}: {}", reply.message()).into());
    }
    Ok(reply)
}

/// Uploads one file; its final answer (200/201 with the File object).
async fn upload_file(
    ctx: &Arc<Ctx>,
    job: Arc<Job>,
    chunk: u64,
    parallel: usize,
) -> Result<Reply, Error> {
    if job.size <= chunk {
        // One plain PUT (also the only way to store an empty file).
        let data = read_range(&job.local, 0..job.size).await?;
        let r = send_whole(ctx, &job, data).await?;
        return Ok(r);
    }
    for round in 0..4 {
        let status = status_query(ctx, &job).await?;
        let have = match status.status {
            202 => ranges_of(&status.body),
            // A file of this size is already there: maybe ours (a run that finished), maybe
            // not. Send everything: chunks equal to it are answered 200 and write nothing,
            // a differing one starts the new upload.
            200 if round > 0 => return Ok(status),
            200 => Vec::new(),
            _ => return Err(format!("{}: status query: {}", job.dest, status.message()).into()),
        };
        let have_bytes: u64 = have.iter().map(|r| r.end - r.start).sum();
        if round == 0 && have_bytes > 0 {
            ctx.bar.inc(have_bytes);
            ctx.bar.suspend(|| {
                println!(
                    "resuming {}: {have_bytes} of {} bytes already on the server",
                    job.dest, job.size
                )
            });
        }
        let todo = missing(job.size, &have, chunk);
        let mut results = futures_util::stream::iter(todo)
            .map(|r| send_chunk(ctx.clone(), job.clone(), r))
            .buffer_unordered(parallel);
        let mut done = None;
        while let Some(reply) = results.try_next().await? {
            if reply.status == 201 {
                done = Some(reply);
            }
        }
        if let Some(reply) = done {
            return Ok(reply);
        }
    }
    Err(format!("{}: the upload did not complete after 4 rounds", job.dest).into())
}

async fn send_whole(ctx: &Arc<Ctx>, job: &Job, data: Bytes) -> Result<Reply, Error> {
    use std::sync::atomic::Ordering::Relaxed;
    let len = data.len() as u64;
    let reply = with_retries(ctx, &job.dest, || {
        let shown = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let req = ctx
            .request(job)
            .header("content-length", len)
            .body(paced_body(ctx, data.clone(), shown.clone()));
        async move {
            let result = match req.send().await {
                Ok(res) => reply(res).await,
                Err(e) => Err(e),
            };
            if !matches!(&result, Ok(r) if r.status < 300) {
                ctx.bar
                    .set_position(ctx.bar.position().saturating_sub(shown.load(Relaxed)));
            }
            result
        }
    })
    .await?;
    if reply.status >= 300 {
        return Err(format!("{}: {}", job.dest, reply.message()).into());
    }
    ctx.sent.fetch_add(len, Relaxed);
    Ok(reply)
}

#[tokio::main]
async fn main() {
    let args = <Args as clap::Parser>::parse();
    let target = target(&args);
    // A signed URL names the destination: show its path.
    let dest = match &target {
        Target::Signed(url) => reqwest::Url::parse(url).ok().map(|u| {
            percent_encoding::percent_decode_str(u.path().trim_start_matches('/'))
                .decode_utf8_lossy()
                .into_owned()
        }),
        Target::Bearer { .. } => args.dest.clone(),
    };
    let jobs = jobs(&args.source, dest.as_deref()).unwrap_or_else(|e| {
        eprintln!("error: {}: {e}", args.source.display());
        std::process::exit(2)
    });
    if matches!(target, Target::Signed(_)) && jobs.len() != 1 {
        eprintln!("error: a signed URL is for one file; use --base and --key for a folder");
        std::process::exit(2);
    }
    let total: u64 = jobs.iter().map(|j| j.size).sum();
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] [{wide_bar}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let ctx = Arc::new(Ctx {
        client: reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .expect("HTTP client"),
        target,
        retries: args.retries,
        rate: args.limit_rate.map(|bytes_per_sec| RateLimit {
            bytes_per_sec,
            next: Mutex::new(Instant::now()),
        }),
        bar: bar.clone(),
        sent: Default::default(),
    });
    let mut failed = 0;
    for job in jobs {
        let job = Arc::new(job);
        let before = ctx.sent.load(std::sync::atomic::Ordering::Relaxed);
        match upload_file(&ctx, job.clone(), args.chunk_size, args.parallel).await {
            Ok(reply) => {
                let sent = ctx.sent.load(std::sync::atomic::Ordering::Relaxed) - before;
                let url = reply.body["url"].as_str().unwrap_or("").to_owned();
                bar.suspend(|| println!("done {} {} sent={sent} {url}", job.dest, reply.status));
            }
            Err(e) => {
                failed += 1;
                bar.suspend(|| eprintln!("error: {e}"));
            }
        }
    }
    bar.finish_and_clear();
    let sent = ctx.sent.load(std::sync::atomic::Ordering::Relaxed);
    println!("sent {sent} bytes; {failed} failed");
    std::process::exit(if failed == 0 { 0 } else { 1 });
}
