//! Shared helpers for the integration tests: a real server on loopback, signing, raw HTTP,
//! and looking at what is on disk.
//!
//! Kept generic on purpose (several test files use it): add helpers, never remove one.
#![allow(dead_code)]

use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tower_uploads::auth::{ApiKey, SignedMethod, Signer};
use tower_uploads::path::FilePath;
use tower_uploads::{FsStorage, Uploads};

/// The API key every test server is configured with (first, primary key).
pub const KEY: &str = "test-key-primary";

/// The bookkeeping directory of `FsStorage`.
pub const RESERVED: &str = ".tower-uploads";

pub mod hostile_media;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod process;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A running server: the `Uploads` service over an `FsStorage` in a temporary directory.
///
/// Layout: `<sandbox>/data` is the storage root, so that anything written next to the root
/// (an escape) shows up as a new entry of the sandbox.
pub struct TestServer {
    /// `http://127.0.0.1:<port>` (no trailing slash); also the configured `base_url`.
    pub base: String,
    /// The listening address.
    pub addr: SocketAddr,
    /// The storage root.
    pub data: PathBuf,
    /// The primary API key.
    pub key: String,
    /// The temporary directory holding `data` (and nothing else).
    pub sandbox: TempDir,
    task: JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves any tower service on `127.0.0.1:0` with hyper-util's auto (HTTP/1 + HTTP/2)
/// server, in the current tokio runtime. Returns the address and the accept loop's task.
pub async fn serve<S, B>(service: S) -> (SocketAddr, JoinHandle<()>)
where
    S: tower::Service<http::Request<Incoming>, Response = http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    (addr, serve_listener(listener, service))
}

/// Like [`serve`], on a listener bound by the caller (to know the address before building
/// the service).
pub fn serve_listener<S, B>(listener: TcpListener, service: S) -> JoinHandle<()>
where
    S: tower::Service<http::Request<Incoming>, Response = http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let _ = stream.set_nodelay(true);
            let service = TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let builder = auto::Builder::new(TokioExecutor::new());
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

/// A fresh sandbox: a temporary directory with an empty `data` subdirectory.
pub fn sandbox() -> (TempDir, PathBuf) {
    let sandbox = tempfile::Builder::new()
        .prefix("tower-uploads-test")
        .tempdir()
        .expect("tempdir");
    let data = sandbox.path().join("data");
    std::fs::create_dir(&data).expect("data dir");
    (sandbox, data)
}

/// Starts the standalone service with the default configuration: key [`KEY`], `base_url`
/// = the server's own address.
pub async fn start() -> TestServer {
    start_with(|u| u).await
}

/// Starts the standalone service; `configure` gets the builder (storage, key [`KEY`] and
/// `base_url` already set) and may change anything (more keys, limits, private, …).
pub async fn start_with(configure: impl FnOnce(Uploads) -> Uploads) -> TestServer {
    let (sandbox, data) = sandbox();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let base = format!("http://{addr}");
    let storage = FsStorage::new(&data).expect("storage");
    let uploads = configure(Uploads::new(storage).key(KEY).base_url(base.clone()));
    let task = serve_listener(listener, uploads.service());
    TestServer {
        base,
        addr,
        data,
        key: KEY.to_owned(),
        sandbox,
        task,
    }
}

impl TestServer {
    /// `<base>/<uri_path>` (`uri_path` as it goes on the wire, without leading `/`).
    pub fn url(&self, uri_path: &str) -> String {
        format!("{}/{}", self.base, uri_path.trim_start_matches('/'))
    }

    /// `Bearer <key>`.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.key)
    }

    /// A URL for `path` (decoded form, e.g. `"a b/c.png"`) signed with the primary key.
    pub fn sign(&self, path: &str, method: SignedMethod, expiry: u64) -> String {
        sign_url(&self.key, &self.base, path, method, expiry)
    }

    /// A URL for `path` signed with the primary key, valid for an hour.
    pub fn sign_for(&self, path: &str, method: SignedMethod) -> String {
        self.sign(path, method, now() + 3600)
    }

    /// Every file under the storage root (relative paths, `/`-separated), excluding the
    /// bookkeeping that survives a request by design (`.tower-uploads/meta`, `locks`).
    pub fn files(&self) -> BTreeSet<String> {
        list_files(&self.data)
    }

    /// Every file and directory under the storage root (directories end in `/`), excluding
    /// `.tower-uploads/meta`, `.tower-uploads/locks` and the fixed bookkeeping directories.
    pub fn entries(&self) -> BTreeSet<String> {
        list_entries(&self.data)
    }

    /// The files under a bookkeeping subdirectory (`"staging"`, `"uploads"`, `"tmp"`, …).
    pub fn bookkeeping(&self, sub: &str) -> BTreeSet<String> {
        list_entries_under(&self.data.join(RESERVED).join(sub))
    }

    /// The bytes stored at `path` (decoded form), if any.
    pub fn read(&self, path: &str) -> Option<Vec<u8>> {
        std::fs::read(self.data.join(path)).ok()
    }

    /// Names of the entries of the sandbox (should be exactly `["data"]`).
    pub fn sandbox_entries(&self) -> BTreeSet<String> {
        std::fs::read_dir(self.sandbox.path())
            .expect("read sandbox")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// Asserts that nothing was written: the entries are those of `before`, the staging,
    /// uploads and tmp bookkeeping is empty and the sandbox holds only `data`.
    pub fn assert_nothing_written(&self, before: &BTreeSet<String>, what: &str) {
        assert_eq!(&self.entries(), before, "{what}: entries changed");
        for sub in ["staging", "uploads", "tmp"] {
            assert!(
                self.bookkeeping(sub).is_empty(),
                "{what}: {RESERVED}/{sub} not empty: {:?}",
                self.bookkeeping(sub)
            );
        }
        assert_eq!(
            self.sandbox_entries(),
            BTreeSet::from(["data".to_owned()]),
            "{what}: something was written next to the storage root"
        );
    }

    /// Waits (up to `limit`) until the staging, uploads and tmp bookkeeping is empty.
    pub async fn wait_bookkeeping_empty(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if ["staging", "uploads", "tmp"]
                .iter()
                .all(|s| self.bookkeeping(s).is_empty())
            {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `PUT <url>` of `body` with the bearer key.
    pub async fn put(&self, uri_path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        client()
            .put(self.url(uri_path))
            .header("authorization", self.bearer())
            .body(body)
            .send()
            .await
            .expect("PUT")
    }

    /// `GET <url>` without credentials.
    pub async fn get(&self, uri_path: &str) -> reqwest::Response {
        client().get(self.url(uri_path)).send().await.expect("GET")
    }

    /// Sends raw bytes to the server and reads one response (see [`raw_request`]).
    pub async fn raw(&self, request: &[u8]) -> RawResponse {
        raw_request(self.addr, request, Duration::from_secs(5)).await
    }
}

/// A URL signed with `key` (see `tower_uploads::auth::Signer`).
pub fn sign_url(key: &str, base: &str, path: &str, method: SignedMethod, expiry: u64) -> String {
    let path = FilePath::new(path).expect("valid path to sign");
    Signer::new(ApiKey::new(key), base)
        .sign(&path, method, expiry)
        .url
}

/// Unix seconds now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// A plain HTTP client (no pooling surprises across tests: one per call is fine).
pub fn client() -> reqwest::Client {
    client_with_timeout(Duration::from_secs(30))
}

/// A client whose requests give up after `timeout`.
pub fn client_with_timeout(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .expect("client")
}

/// Status, headers and JSON body of a response (`Value::Null` when the body is not JSON).
pub async fn json(res: reqwest::Response) -> (u16, reqwest::header::HeaderMap, Value) {
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let bytes = res.bytes().await.expect("body");
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, headers, value)
}

/// The error `kind` of a JSON error body, in either style (`/kind` or `/error/kind`).
pub fn kind(v: &Value) -> Option<&str> {
    v.get("kind")
        .or_else(|| v.pointer("/error/kind"))
        .and_then(Value::as_str)
}

/// The object of a success body, in either style (`/data` of an envelope, else the body).
pub fn data(v: &Value) -> &Value {
    match v.get("meta") {
        Some(_) => v.get("data").unwrap_or(&Value::Null),
        None => v,
    }
}

/// Lowercase hex SHA-256.
pub fn sha256(bytes: &[u8]) -> String {
    hex_lower(&Sha256::digest(bytes))
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Deterministic pseudo-random bytes (xorshift), different for each `seed`.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Files under `root` (relative, `/`-separated), excluding `.tower-uploads/meta` and
/// `.tower-uploads/locks`.
pub fn list_files(root: &Path) -> BTreeSet<String> {
    list_entries(root)
        .into_iter()
        .filter(|e| !e.ends_with('/'))
        .collect()
}

/// Files and directories (ending in `/`) under `root`, excluding `.tower-uploads/meta`,
/// `.tower-uploads/locks` and the fixed bookkeeping directories themselves.
pub fn list_entries(root: &Path) -> BTreeSet<String> {
    let fixed: BTreeSet<String> = std::iter::once(format!("{RESERVED}/"))
        .chain(
            ["staging", "uploads", "meta", "locks", "tmp"]
                .iter()
                .map(|s| format!("{RESERVED}/{s}/")),
        )
        .collect();
    let skip = [format!("{RESERVED}/meta/"), format!("{RESERVED}/locks/")];
    list_entries_under(root)
        .into_iter()
        .filter(|e| !fixed.contains(e))
        .filter(|e| !skip.iter().any(|s| e.starts_with(s.as_str())))
        .collect()
}

/// Every file and directory (ending in `/`) under `root`, relative; empty if `root` is
/// missing.
pub fn list_entries_under(root: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let rel = path
                .strip_prefix(root)
                .expect("under root")
                .to_string_lossy()
                .replace('\\', "/");
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_dir() {
                out.insert(format!("{rel}/"));
                walk(root, &path, out);
            } else {
                out.insert(rel);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, root, &mut out);
    out
}

/// A response read off a raw connection.
#[derive(Debug)]
pub struct RawResponse {
    /// The status code (0 when no response arrived before the timeout or EOF).
    pub status: u16,
    /// Header names lowercased, in order.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (`Null` if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// Writes `request` as is on a new connection, then reads one HTTP/1.1 response (within
/// `timeout`; status 0 if none came).
pub async fn raw_request(addr: SocketAddr, request: &[u8], timeout: Duration) -> RawResponse {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write request");
    read_response(&mut stream, timeout).await
}

/// Reads one HTTP/1.1 response from `stream` (Content-Length, chunked, or until EOF),
/// giving up after `timeout` (status 0 if the head did not arrive).
pub async fn read_response<R: tokio::io::AsyncRead + Unpin>(
    stream: &mut R,
    timeout: Duration,
) -> RawResponse {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let none = || RawResponse {
        status: 0,
        headers: Vec::new(),
        body: Vec::new(),
    };
    // The head, skipping any 1xx interim responses.
    let (status, headers, mut rest) = loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let rest = buf[end + 4..].to_vec();
            let mut lines = head.split("\r\n");
            let status: u16 = lines
                .next()
                .and_then(|l| l.split(' ').nth(1))
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
                .collect();
            if (100..200).contains(&status) {
                buf = rest;
                continue;
            }
            break (status, headers, rest);
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return none(),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let length: Option<usize> = header("content-length").and_then(|v| v.parse().ok());
    let chunked = header("transfer-encoding").is_some_and(|v| v.contains("chunked"));
    let no_body = status == 204 || status == 304;
    let complete = |rest: &[u8]| -> Option<Vec<u8>> {
        if no_body {
            return Some(Vec::new());
        }
        if let Some(n) = length {
            return (rest.len() >= n).then(|| rest[..n].to_vec());
        }
        if chunked {
            return dechunk(rest);
        }
        None
    };
    loop {
        if let Some(body) = complete(&rest) {
            return RawResponse {
                status,
                headers,
                body,
            };
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => rest.extend_from_slice(&chunk[..n]),
            // EOF, error or timeout: whatever arrived is the body.
            _ => {
                return RawResponse {
                    status,
                    headers,
                    body: rest,
                };
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The body of a complete chunked encoding, or `None` if more is needed.
fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = find(data, b"\r\n")?;
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        if data.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// A valid PNG of `width` × `height` RGB pixels (uncompressed deflate, correct CRCs).
pub fn tiny_png(width: u32, height: u32) -> Vec<u8> {
    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut crc_input = kind.to_vec();
        crc_input.extend_from_slice(data);
        out.extend_from_slice(&crc_input);
        out.extend_from_slice(&crc32(&crc_input).to_be_bytes());
    }
    let mut raw = Vec::new();
    for y in 0..height {
        raw.push(0); // filter: none
        for x in 0..width {
            raw.extend_from_slice(&[(x * 40) as u8, (y * 60) as u8, 128]);
        }
    }
    assert!(raw.len() < 65_535, "tiny_png is for tiny images");
    // zlib: header, one stored block, adler32.
    let mut z = vec![0x78, 0x01, 0x01];
    let len = raw.len() as u16;
    z.extend_from_slice(&len.to_le_bytes());
    z.extend_from_slice(&(!len).to_le_bytes());
    z.extend_from_slice(&raw);
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in &raw {
        a = (a + u32::from(byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    z.extend_from_slice(&((b << 16) | a).to_be_bytes());

    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB, deflate, no filter, no interlace
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &z);
    chunk(&mut out, b"IEND", &[]);
    out
}

/// `Bytes` of a `Vec` (for `reqwest` bodies).
pub fn bytes(v: &[u8]) -> Bytes {
    Bytes::copy_from_slice(v)
}

/// `target/<profile>/examples/server`, found from the running test binary
/// (`target/<profile>/deps/<test>-<hash>`). `cargo test` builds the examples first.
pub fn server_binary() -> std::path::PathBuf {
    example_binary("server")
}

/// `target/release/examples/server`, built now (`cargo build --release --example server`,
/// once per test binary; a no-op when it is up to date, as in `.ci/run`, whose `examples`
/// step comes first).
pub fn release_server_binary() -> std::path::PathBuf {
    static BUILT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let status = std::process::Command::new(cargo)
                .args(["build", "--quiet", "--release", "--example", "server"])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .expect("run cargo");
            assert!(
                status.success(),
                "cargo build --release --example server failed"
            );
            let target = profile_dir()
                .parent()
                .expect("target/<profile>")
                .to_path_buf();
            target
                .join("release")
                .join("examples")
                .join(format!("server{}", std::env::consts::EXE_SUFFIX))
        })
        .clone()
}

/// `target/<profile>`: where this test binary was built (it lives in `<profile>/deps`).
fn profile_dir() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(std::path::Path::parent)
        .expect("the test binary lives in target/<profile>/deps")
        .to_path_buf()
}

/// `target/<profile>/examples/<name>` (see [`server_binary`]).
pub fn example_binary(name: &str) -> std::path::PathBuf {
    let bin = profile_dir()
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "the example binary {} is missing: run `cargo build --examples` first \
         (a plain `cargo test` builds it too)",
        bin.display()
    );
    bin
}
