//! Upload conditions (PROTOCOL.md §5) end to end, over a real server on loopback with an
//! `FsStorage` in a temporary directory (and over the demo server as a process).
//!
//! - Every key (`kind`, `mimetype` and its alias `type`, `filesize`, `width`, `height`,
//!   `duration`, `fps`, `bitrate`) with a passing and a failing document, on real media
//!   made by ffmpeg (an H.264 MP4, a WAV, an MP3) and on PNGs from `common::tiny_png`; every
//!   operator, `&&` and `||`, a rule on a property the file does not have, empty rule lists.
//! - Each phase where the protocol places it: `filesize` from `Content-Length` or the
//!   `Content-Range` total before any byte of the body is sent (raw sockets); `kind` as soon
//!   as the first 64 KiB are in (the rest of the body withheld); the rest on the complete
//!   file, including the chunk that completes a resumable upload.
//! - The app's conditions (`Uploads::conditions`) and a `ConditionsLayer`'s, both applying,
//!   with the layer wrapped around the service by `tower::Layer` and by axum's
//!   `Router::layer`.
//! - The demo server's `--conditions` flag.
//!
//! After every rejection the storage is checked: nothing published, and the staging,
//! uploads and tmp bookkeeping empty (after at most 1 s of background cleanup).
//!
//! The media tests need ffmpeg (`apt-get install --no-install-recommends ffmpeg`); without
//! it they are skipped with a message (and fail when `CI` is set). The demo server tests
//! need `cargo build --examples` first (a plain `cargo test` builds it too).

mod common;

use common::{KEY, RESERVED, TestServer, data, kind, pattern, server_binary, start_with, tiny_png};
use serde_json::{Value, json};
use std::collections::BTreeSet;

use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tower_uploads::conditions::{Conditions, ConditionsLayer};
use tower_uploads::{FsStorage, Uploads};

const KIB: usize = 1024;

/// How long an early answer may take.
const EARLY: Duration = Duration::from_secs(5);

// --- media -------------------------------------------------------------------------------

/// Real media made by ffmpeg, once per test process.
struct Media {
    /// H.264, 320×240, 25 fps, 2 s (moov at the end, ffmpeg's default).
    mp4: Vec<u8>,
    /// PCM, 8 kHz mono 16 bit, 1 s.
    wav: Vec<u8>,
    /// MPEG-1 layer III, 44.1 kHz, 64 kb/s, ~2 s.
    mp3: Vec<u8>,
}

fn ffmpeg(dir: &Path, args: &str, out: &str) -> Vec<u8> {
    let path = dir.join(out);
    let o = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args(args.split_whitespace())
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .expect("run ffmpeg");
    assert!(
        o.status.success(),
        "ffmpeg {args} {out}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::read(&path).expect("read ffmpeg's output")
}

/// The media, or `None` (with a message) when ffmpeg is not installed.
fn media() -> Option<&'static Media> {
    static MEDIA: OnceLock<Option<Media>> = OnceLock::new();
    MEDIA
        .get_or_init(|| {
            let have = Command::new("ffmpeg")
                .arg("-version")
                .stdin(Stdio::null())
                .output()
                .is_ok_and(|o| o.status.success());
            if !have {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "ffmpeg is not installed, and CI must run the media tests"
                );
                eprintln!(
                    "SKIPPED: ffmpeg is not installed (apt-get install --no-install-recommends ffmpeg)"
                );
                return None;
            }
            let dir = tempfile::Builder::new()
                .prefix("tower-uploads-conditions-media")
                .tempdir()
                .expect("tempdir");
            let mp4 = ffmpeg(
                dir.path(),
                "-f lavfi -i testsrc2=s=320x240:r=25:d=2 -c:v libx264 -preset ultrafast \
                 -pix_fmt yuv420p",
                "video.mp4",
            );
            let wav = ffmpeg(
                dir.path(),
                "-f lavfi -i sine=frequency=440:sample_rate=8000:duration=1",
                "sound.wav",
            );
            let mp3 = ffmpeg(
                dir.path(),
                "-f lavfi -i sine=frequency=440:sample_rate=44100:duration=2 -c:a libmp3lame \
                 -b:a 64k",
                "sound.mp3",
            );
            assert!(mp4.len() > 2 * 64 * KIB, "the MP4 spans several chunks");
            Some(Media { mp4, wav, mp3 })
        })
        .as_ref()
}

/// The files of the key table.
#[derive(Clone, Copy, Debug)]
enum F {
    /// `tiny_png(40, 30)`.
    Png,
    Mp4,
    Wav,
    Mp3,
    /// Unrecognisable bytes, named `.png` and sent as `image/png`.
    Junk,
}

impl F {
    fn name(self) -> &'static str {
        match self {
            F::Png => "pic.png",
            F::Mp4 => "clip.mp4",
            F::Wav => "sound.wav",
            F::Mp3 => "sound.mp3",
            F::Junk => "junk.png",
        }
    }

    fn bytes(self, m: &Media) -> Vec<u8> {
        match self {
            F::Png => tiny_png(40, 30),
            F::Mp4 => m.mp4.clone(),
            F::Wav => m.wav.clone(),
            F::Mp3 => m.mp3.clone(),
            F::Junk => pattern(5000, 7),
        }
    }
}

// --- documents ---------------------------------------------------------------------------

fn rule(key: &str, op: &str, value: Value) -> Value {
    json!({"key": key, "operator": op, "value": value})
}

fn all(rules: Vec<Value>) -> Value {
    json!({"operator": "&&", "rules": rules})
}

fn any(rules: Vec<Value>) -> Value {
    json!({"operator": "||", "rules": rules})
}

fn one(key: &str, op: &str, value: Value) -> Value {
    all(vec![rule(key, op, value)])
}

fn parse(doc: &Value) -> Conditions {
    Conditions::parse(doc.to_string().as_bytes())
        .unwrap_or_else(|e| panic!("a valid document {doc}: {e}"))
}

// --- a server seen from outside ------------------------------------------------------------

/// What the tests need of a server: where it listens and where its storage is.
#[derive(Clone, Debug)]
struct Target {
    /// The upload base URL (no trailing slash).
    base: String,
    /// The URI path prefix of the uploads (`""`, or `"/files"` under axum).
    prefix: String,
    addr: SocketAddr,
    /// The storage root.
    data: PathBuf,
    /// The directory holding `data` (and nothing else).
    sandbox: PathBuf,
}

#[derive(Debug)]
struct Reply {
    status: u16,
    body: Value,
}

impl Reply {
    fn message(&self) -> String {
        message(&self.body)
    }
}

fn message(v: &Value) -> String {
    v.get("message")
        .or_else(|| v.pointer("/error/message"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

impl Target {
    fn of(s: &TestServer) -> Target {
        Target {
            base: s.base.clone(),
            prefix: String::new(),
            addr: s.addr,
            data: s.data.clone(),
            sandbox: s.sandbox.path().to_owned(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        let res = req
            .header("authorization", format!("Bearer {KEY}"))
            .send()
            .await
            .expect("request");
        let (status, _, body) = common::json(res).await;
        Reply { status, body }
    }

    async fn put(&self, path: &str, body: Vec<u8>) -> Reply {
        self.send(common::client().put(self.url(path)).body(body))
            .await
    }

    /// A simple `PUT` with a `Content-Type`.
    async fn put_typed(&self, path: &str, body: Vec<u8>, content_type: &str) -> Reply {
        self.send(
            common::client()
                .put(self.url(path))
                .header("content-type", content_type)
                .body(body),
        )
        .await
    }

    /// A simple `PUT` streamed without `Content-Length` (chunked transfer encoding).
    async fn put_streamed(&self, path: &str, body: Vec<u8>) -> Reply {
        let frames: Vec<Result<Vec<u8>, std::io::Error>> =
            body.chunks(8 * KIB).map(|c| Ok(c.to_vec())).collect();
        let stream = futures_util::stream::iter(frames);
        self.send(
            common::client()
                .put(self.url(path))
                .body(reqwest::Body::wrap_stream(stream)),
        )
        .await
    }

    /// The chunk `r` of `file`, with an inclusive `Content-Range`.
    async fn chunk(&self, path: &str, file: &[u8], r: Range<usize>) -> Reply {
        let cr = format!("bytes {}-{}/{}", r.start, r.end - 1, file.len());
        self.send(
            common::client()
                .put(self.url(path))
                .header("content-range", cr)
                .body(file[r].to_vec()),
        )
        .await
    }

    /// `bytes */total`: the received ranges (`[[a, b], …]`, inclusive) of a 202.
    async fn status(&self, path: &str, total: usize) -> (u16, Value) {
        let r = self
            .send(
                common::client()
                    .put(self.url(path))
                    .header("content-range", format!("bytes */{total}"))
                    .body(Vec::new()),
            )
            .await;
        let ranges = data(&r.body).get("ranges").cloned().unwrap_or(Value::Null);
        (r.status, ranges)
    }

    async fn get(&self, path: &str) -> (u16, Vec<u8>) {
        let res = common::client()
            .get(self.url(path))
            .send()
            .await
            .expect("GET");
        let status = res.status().as_u16();
        (status, res.bytes().await.expect("body").to_vec())
    }

    /// The head of a raw HTTP/1.1 `PUT` of `path` with the bearer key.
    fn raw_head(&self, path: &str, content_length: usize, extra: &str) -> String {
        format!(
            "PUT {}/{path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {KEY}\r\n\
             Content-Length: {content_length}\r\n{extra}\r\n",
            self.prefix, self.addr
        )
    }

    fn entries(&self) -> BTreeSet<String> {
        common::list_entries(&self.data)
    }

    fn bookkeeping(&self, sub: &str) -> BTreeSet<String> {
        common::list_entries_under(&self.data.join(RESERVED).join(sub))
    }

    /// Waits (up to 1 s) for the background cleanup, then asserts that nothing was
    /// written: the entries are `before`'s, the staging, uploads and tmp bookkeeping is
    /// empty and nothing appeared next to the storage root.
    async fn assert_clean(&self, before: &BTreeSet<String>, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(1);
        let subs = ["staging", "uploads", "tmp"];
        while Instant::now() < deadline
            && !(subs.iter().all(|s| self.bookkeeping(s).is_empty()) && self.entries() == *before)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(&self.entries(), before, "{what}: entries changed");
        for sub in subs {
            assert!(
                self.bookkeeping(sub).is_empty(),
                "{what}: {RESERVED}/{sub} not empty: {:?}",
                self.bookkeeping(sub)
            );
        }
        let sandbox: BTreeSet<String> = std::fs::read_dir(&self.sandbox)
            .expect("read sandbox")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            sandbox,
            BTreeSet::from(["data".to_owned()]),
            "{what}: something was written next to the storage root"
        );
    }

    /// Asserts a 422 `conditions_failed` whose message contains every one of `needles`,
    /// then that the storage holds nothing new.
    async fn assert_rejected(
        &self,
        r: &Reply,
        needles: &[&str],
        before: &BTreeSet<String>,
        what: &str,
    ) {
        assert_eq!(r.status, 422, "{what}: {r:?}");
        assert_eq!(kind(&r.body), Some("conditions_failed"), "{what}: {r:?}");
        let msg = r.message();
        for needle in needles {
            assert!(
                msg.contains(needle),
                "{what}: the message does not name {needle:?}: {msg}"
            );
        }
        self.assert_clean(before, what).await;
    }

    /// Asserts a 201 and that the file is served as sent.
    async fn assert_published(&self, r: &Reply, path: &str, file: &[u8], what: &str) {
        assert_eq!(r.status, 201, "{what}: {r:?}");
        let (status, got) = self.get(path).await;
        assert_eq!(status, 200, "{what}: GET");
        assert!(got == file, "{what}: GET gives other bytes");
    }
}

/// The standalone service with the app conditions `doc`.
async fn start_app(doc: &Value) -> TestServer {
    let conditions = parse(doc);
    start_with(move |u| u.conditions(conditions)).await
}

/// Sends `head` and `body` on a new connection, then waits (at most [`EARLY`]) for the
/// answer without sending anything more. Returns the answer, how long it took after the
/// last byte was sent, and the connection (still open: the rest was never sent).
async fn raw_partial(
    addr: SocketAddr,
    head: &str,
    body: &[u8],
) -> (common::RawResponse, Duration, TcpStream) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    stream.write_all(head.as_bytes()).await.expect("write head");
    if !body.is_empty() {
        stream.write_all(body).await.expect("write body part");
    }
    stream.flush().await.expect("flush");
    let sent = Instant::now();
    let res = common::read_response(&mut stream, EARLY).await;
    (res, sent.elapsed(), stream)
}

fn assert_raw_422(res: &common::RawResponse, needles: &[&str], what: &str) {
    assert_eq!(
        res.status, 422,
        "{what}: no 422 within {EARLY:?} (status 0 = no answer): {res:?}"
    );
    let body = res.json();
    assert_eq!(kind(&body), Some("conditions_failed"), "{what}: {body}");
    let msg = message(&body);
    for needle in needles {
        assert!(msg.contains(needle), "{what}: {needle:?} not in {msg}");
    }
}

// --- every key ------------------------------------------------------------------------------

/// One row: a file, a document, and `None` for a pass or the words of the failure message.
type Case = (F, Value, Option<Vec<&'static str>>);

/// Runs every case on a server of its own (the conditions are the app's).
async fn run_cases(cases: Vec<Case>) {
    let Some(m) = media() else { return };
    for (i, (file, doc, failure)) in cases.into_iter().enumerate() {
        let what = format!("case {i}: {file:?} with {doc}");
        let server = start_app(&doc).await;
        let t = Target::of(&server);
        let before = t.entries();
        let bytes = file.bytes(m);
        let r = if matches!(file, F::Junk) {
            t.put_typed(file.name(), bytes.clone(), "image/png").await
        } else {
            t.put(file.name(), bytes.clone()).await
        };
        match failure {
            None => t.assert_published(&r, file.name(), &bytes, &what).await,
            Some(needles) => t.assert_rejected(&r, &needles, &before, &what).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kind_and_mimetype() {
    use F::*;
    run_cases(vec![
        (Png, one("kind", "==", json!("image")), None),
        (
            Png,
            one("kind", "==", json!("video")),
            Some(vec!["rules[0]", "kind", "the file is image"]),
        ),
        (Mp4, one("kind", "==", json!("video")), None),
        (Mp3, one("kind", "==", json!("AUDIO")), None),
        (
            Wav,
            one("kind", "!=", json!("audio")),
            Some(vec!["rules[0]", "kind", "audio"]),
        ),
        (Junk, one("kind", "==", json!("other")), None),
        (Png, one("mimetype", "==", json!("image/png")), None),
        (
            Png,
            one("mimetype", "!=", json!("image/png")),
            Some(vec!["rules[0]", "mimetype", "image/png"]),
        ),
        (Mp4, one("mimetype", "==", json!("video/mp4")), None),
        (Wav, one("mimetype", "==", json!("audio/*")), None),
        (Mp3, one("mimetype", "==", json!("audio/mpeg")), None),
        (
            Mp3,
            one("mimetype", "==", json!("video/*")),
            Some(vec!["rules[0]", "mimetype", "audio/mpeg"]),
        ),
        // Unrecognised bytes are application/octet-stream, whatever the name and type say.
        (
            Junk,
            one("mimetype", "==", json!("application/octet-stream")),
            None,
        ),
        (
            Junk,
            one("mimetype", "==", json!("image/png")),
            Some(vec!["rules[0]", "mimetype", "application/octet-stream"]),
        ),
        // `type` is an alias of `mimetype` (messages say `mimetype`).
        (Png, one("type", "==", json!("image/png")), None),
        (Wav, one("type", "!=", json!("video/*")), None),
        (
            Mp4,
            one("type", "==", json!("image/*")),
            Some(vec!["rules[0]", "mimetype", "video/mp4"]),
        ),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filesize_width_height() {
    use F::*;
    let Some(m) = media() else { return };
    let png = tiny_png(40, 30).len();
    let mp4 = m.mp4.len();
    run_cases(vec![
        (Png, one("filesize", "==", json!(png)), None),
        (
            Png,
            one("filesize", "<", json!(png)),
            Some(vec![
                "rules[0]",
                "filesize",
                &*format!("{png} bytes").leak(),
            ]),
        ),
        (Mp4, one("filesize", ">=", json!(mp4)), None),
        (Mp4, one("filesize", "<=", json!(mp4 as f64 + 0.5)), None),
        (
            Mp4,
            one("filesize", ">", json!(mp4)),
            Some(vec!["rules[0]", "filesize"]),
        ),
        (Png, one("width", "==", json!(40)), None),
        (
            Png,
            one("width", ">", json!(40)),
            Some(vec!["rules[0]", "width", "40 px wide"]),
        ),
        (Mp4, one("width", "==", json!(320)), None),
        (
            Mp4,
            one("width", "<", json!(320)),
            Some(vec!["rules[0]", "width", "320 px wide"]),
        ),
        // A property the file does not have.
        (
            Wav,
            one("width", ">=", json!(0)),
            Some(vec!["rules[0]", "width", "has no width"]),
        ),
        (Png, one("height", "<=", json!(30)), None),
        (
            Png,
            one("height", ">=", json!(31)),
            Some(vec!["rules[0]", "height", "30 px high"]),
        ),
        (Mp4, one("height", "==", json!(240)), None),
        (
            Mp4,
            one("height", "!=", json!(240)),
            Some(vec!["rules[0]", "height", "240 px high"]),
        ),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duration_fps_bitrate() {
    use F::*;
    run_cases(vec![
        (
            Mp4,
            all(vec![
                rule("duration", ">=", json!(1.9)),
                rule("duration", "<=", json!(2.1)),
            ]),
            None,
        ),
        (
            Mp4,
            one("duration", "<", json!(1.5)),
            Some(vec!["rules[0]", "duration", "lasts 2 s"]),
        ),
        (
            Wav,
            all(vec![
                rule("duration", ">", json!(0.9)),
                rule("duration", "<", json!(1.1)),
            ]),
            None,
        ),
        (
            Mp3,
            all(vec![
                rule("duration", ">", json!(1.5)),
                rule("duration", ">", json!(3)),
            ]),
            Some(vec!["rules[1]", "duration"]),
        ),
        // A rule on a property the file does not have: fails at Complete, `!=` too.
        (
            Png,
            one("duration", ">=", json!(0)),
            Some(vec!["rules[0]", "duration", "has no duration"]),
        ),
        (
            Png,
            one("duration", "!=", json!(5)),
            Some(vec!["rules[0]", "duration", "has no duration"]),
        ),
        (Mp4, one("fps", "==", json!(25)), None),
        (
            Mp4,
            one("fps", "!=", json!(25)),
            Some(vec!["rules[0]", "fps", "25 fps"]),
        ),
        (
            Wav,
            one("fps", ">", json!(0)),
            Some(vec!["rules[0]", "fps", "no frame rate"]),
        ),
        (
            Mp4,
            all(vec![
                rule("bitrate", ">", json!(100_000)),
                rule("bitrate", "<", json!(10_000_000)),
            ]),
            None,
        ),
        (
            Mp4,
            one("bitrate", "<=", json!(1000)),
            Some(vec!["rules[0]", "bitrate"]),
        ),
        (
            Mp3,
            all(vec![
                rule("bitrate", ">=", json!(32_000)),
                rule("bitrate", "<=", json!(128_000)),
            ]),
            None,
        ),
        (
            Wav,
            one("bitrate", ">", json!(200_000)),
            Some(vec!["rules[0]", "bitrate"]),
        ),
        (
            Png,
            one("bitrate", ">", json!(0)),
            Some(vec!["rules[0]", "bitrate", "has no bitrate"]),
        ),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn combinators_and_empty_rules() {
    use F::*;
    run_cases(vec![
        (
            Png,
            any(vec![
                rule("kind", "==", json!("video")),
                rule("kind", "==", json!("image")),
            ]),
            None,
        ),
        (
            Png,
            any(vec![
                rule("kind", "==", json!("video")),
                rule("width", ">", json!(1000)),
            ]),
            Some(vec!["none of", "rules[0]", "kind", "rules[1]", "width"]),
        ),
        (
            Mp4,
            any(vec![
                rule("duration", "<", json!(1)),
                rule("fps", "==", json!(25)),
            ]),
            None,
        ),
        (
            Png,
            all(vec![
                rule("kind", "==", json!("image")),
                rule("width", "==", json!(40)),
                rule("height", "==", json!(99)),
            ]),
            Some(vec!["rules[2]", "height"]),
        ),
        (
            Mp4,
            all(vec![
                rule("kind", "==", json!("video")),
                rule("width", "<=", json!(1920)),
                rule("height", "<=", json!(1080)),
                rule("duration", "<=", json!(300)),
                rule("filesize", "<=", json!(104_857_600)),
            ]),
            None,
        ),
        // Empty rule lists always hold, with either operator or none.
        (Mp4, all(vec![]), None),
        (Png, any(vec![]), None),
        (Junk, json!({"rules": []}), None),
    ])
    .await;
}

/// `&&`: only the failing rules are named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_message_names_only_the_failing_rules() {
    let server = start_app(&all(vec![
        rule("kind", "==", json!("image")),
        rule("width", "==", json!(40)),
        rule("height", "==", json!(99)),
        rule("duration", ">", json!(1)),
    ]))
    .await;
    let t = Target::of(&server);
    let before = t.entries();
    let r = t.put("a.png", tiny_png(40, 30)).await;
    t.assert_rejected(
        &r,
        &["rules[2]", "height", "rules[3]", "duration"],
        &before,
        "two failing rules",
    )
    .await;
    let msg = r.message();
    assert!(
        !msg.contains("rules[0]") && !msg.contains("rules[1]"),
        "holding rules named: {msg}"
    );
}

/// Without `Content-Length` (chunked transfer encoding) the size is known only at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filesize_of_a_streamed_body_is_checked_at_the_end() {
    let server = start_app(&one("filesize", "<=", json!(100_000))).await;
    let t = Target::of(&server);
    let before = t.entries();
    let r = t.put_streamed("big.bin", pattern(150_000, 3)).await;
    t.assert_rejected(
        &r,
        &["rules[0]", "filesize", "150000 bytes"],
        &before,
        "streamed",
    )
    .await;
    let small = pattern(90_000, 4);
    let r = t.put_streamed("small.bin", small.clone()).await;
    t.assert_published(&r, "small.bin", &small, "streamed, small")
        .await;
}

// --- early rejection, simple PUT ---------------------------------------------------------------

/// A `filesize` rule broken by the declared `Content-Length` is answered before the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_put_declared_size_is_refused_before_the_body() {
    let server = start_app(&all(vec![
        rule("kind", "!=", json!("audio")),
        rule("filesize", "<=", json!(1_000_000)),
    ]))
    .await;
    let t = Target::of(&server);
    let before = t.entries();
    let head = t.raw_head("big.bin", 50_000_000, "");
    let (res, took, _stream) = raw_partial(t.addr, &head, &[]).await;
    assert_raw_422(
        &res,
        &["rules[1]", "filesize", "50000000 bytes"],
        "declared",
    );
    assert!(!message(&res.json()).contains("rules[0]"), "{res:?}");
    eprintln!("simple PUT, declared size: 422 after {took:?} (no body sent)");
    t.assert_clean(&before, "declared").await;
}

/// A `kind` rule broken by a PNG is answered once the first 64 KiB are in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_put_kind_is_refused_after_the_first_bytes() {
    let server = start_app(&all(vec![
        rule("filesize", "<=", json!(1_000_000)),
        rule("kind", "==", json!("video")),
        rule("duration", "<=", json!(60)),
    ]))
    .await;
    let t = Target::of(&server);
    let before = t.entries();
    let mut body = tiny_png(64, 64);
    body.extend_from_slice(&pattern(300 * KIB - body.len(), 11));
    let head = t.raw_head("picture.mp4", body.len(), "Content-Type: video/mp4\r\n");
    let (res, took, stream) = raw_partial(t.addr, &head, &body[..70 * KIB]).await;
    assert_raw_422(
        &res,
        &["rules[1]", "kind", "the file is image"],
        "first bytes",
    );
    eprintln!("simple PUT, kind from the first bytes: 422 after {took:?} (70 of 300 KiB sent)");
    // Discarded already, while the client still holds the rest of the body.
    t.assert_clean(&before, "first bytes").await;
    drop(stream);
    t.assert_clean(&before, "first bytes, connection closed")
        .await;

    // The same file passes a document that wants an image.
    let server = start_app(&one("kind", "==", json!("image"))).await;
    let t = Target::of(&server);
    let r = t.put("picture.png", body.clone()).await;
    t.assert_published(&r, "picture.png", &body, "an image")
        .await;
}

// --- resumable ---------------------------------------------------------------------------------

/// A `filesize` rule broken by the `Content-Range` total is answered before the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumable_total_is_refused_before_the_body() {
    let server = start_app(&one("filesize", "<", json!(100_000))).await;
    let t = Target::of(&server);
    let before = t.entries();
    for cr in ["bytes 0-9999/5000000", "bytes=4990000-4999999/5000000"] {
        let head = t.raw_head("big.mp4", 10_000, &format!("Content-Range: {cr}\r\n"));
        let (res, took, _stream) = raw_partial(t.addr, &head, &[]).await;
        assert_raw_422(&res, &["rules[0]", "filesize", "5000000 bytes"], cr);
        eprintln!("resumable, declared total ({cr}): 422 after {took:?} (no body sent)");
        t.assert_clean(&before, cr).await;
    }
    // Nothing was started.
    assert_eq!(t.status("big.mp4", 5_000_000).await, (202, json!([])));
    // A total that passes is accepted.
    let file = pattern(60_000, 5);
    assert_eq!(t.chunk("ok.bin", &file, 30_000..60_000).await.status, 202);
    let r = t.chunk("ok.bin", &file, 0..30_000).await;
    t.assert_published(&r, "ok.bin", &file, "a small total")
        .await;
}

/// The chunk holding offset 0 of a non-image breaks `kind == "image"`: 422 on that chunk,
/// and the whole upload is discarded, chunks received earlier included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumable_first_chunk_is_checked_and_the_upload_discarded() {
    let server = start_app(&one("kind", "==", json!("image"))).await;
    let t = Target::of(&server);
    let before = t.entries();
    let file = pattern(300 * KIB, 21);
    let total = file.len();

    // Chunks of 100 KiB: chunk 2 first, then chunk 0 (its first 64 KiB decide).
    let r = t.chunk("clip.bin", &file, 200 * KIB..total).await;
    assert_eq!(r.status, 202, "{r:?}");
    // (The upload holds that chunk now: the cleanliness checks below mean something.)
    assert!(!t.bookkeeping("uploads").is_empty(), "no upload state seen");
    assert_eq!(
        data(&r.body)["ranges"],
        json!([[200 * KIB, total - 1]]),
        "{r:?}"
    );
    let r = t.chunk("clip.bin", &file, 0..100 * KIB).await;
    t.assert_rejected(
        &r,
        &["rules[0]", "kind", "the file is other"],
        &before,
        "chunk 0 after chunk 2",
    )
    .await;
    assert_eq!(t.status("clip.bin", total).await, (202, json!([])));
    assert_eq!(t.get("clip.bin").await.0, 404);

    // A first chunk shorter than 64 KiB that shows a non-image (an MP3's first 4 KiB):
    // checked at its end. Chunk 1 came first. (Bytes that show nothing recognisable are
    // another matter: see `resumable_short_first_chunk_is_not_judged_on_too_few_bytes`.)
    if let Some(m) = media() {
        let mp3 = &m.mp3;
        let r = t.chunk("short.mp3", mp3, 4 * KIB..8 * KIB).await;
        assert_eq!(r.status, 202, "{r:?}");
        let r = t.chunk("short.mp3", mp3, 0..4 * KIB).await;
        t.assert_rejected(
            &r,
            &["rules[0]", "kind", "the file is audio"],
            &before,
            "short chunk 0",
        )
        .await;
        assert_eq!(t.status("short.mp3", mp3.len()).await, (202, json!([])));
    }

    // Over a raw socket: 70 KiB of a 100 KiB chunk 0, then nothing: answered all the same.
    let r = t.chunk("raw.bin", &file, 100 * KIB..200 * KIB).await;
    assert_eq!(r.status, 202, "{r:?}");
    let head = t.raw_head(
        "raw.bin",
        100 * KIB,
        &format!("Content-Range: bytes 0-{}/{total}\r\n", 100 * KIB - 1),
    );
    let (res, took, stream) = raw_partial(t.addr, &head, &file[..70 * KIB]).await;
    assert_raw_422(&res, &["rules[0]", "kind"], "raw chunk 0");
    eprintln!("resumable, kind from chunk 0's first bytes: 422 after {took:?} (70 of 100 KiB)");
    t.assert_clean(&before, "raw chunk 0").await;
    drop(stream);
    assert_eq!(t.status("raw.bin", total).await, (202, json!([])));
    t.assert_clean(&before, "raw chunk 0, status").await;

    // An image in chunks passes (its chunk 0 is shorter than 64 KiB).
    let png = tiny_png(140, 150);
    let plan: Vec<Range<usize>> = (0..png.len())
        .step_by(20 * KIB)
        .map(|a| a..(a + 20 * KIB).min(png.len()))
        .collect();
    let mut last = None;
    for (i, r) in plan.iter().enumerate().rev() {
        let reply = t.chunk("ok.png", &png, r.clone()).await;
        if i > 0 {
            assert_eq!(reply.status, 202, "chunk {i}: {reply:?}");
        }
        last = Some(reply);
    }
    t.assert_published(&last.expect("a chunk"), "ok.png", &png, "image in chunks")
        .await;
}

/// `duration <= 1` on a 2 s MP4 uploaded in chunks: the completing chunk gets the 422.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumable_complete_file_is_checked_before_publication() {
    let Some(m) = media() else { return };
    let file = &m.mp4;
    let total = file.len();
    let plan = [0..64 * KIB, 128 * KIB..total, 64 * KIB..128 * KIB];

    let server = start_app(&all(vec![
        rule("kind", "==", json!("video")),
        rule("duration", "<=", json!(1)),
    ]))
    .await;
    let t = Target::of(&server);
    let before = t.entries();
    for r in &plan[..2] {
        let reply = t.chunk("clip.mp4", file, r.clone()).await;
        assert_eq!(reply.status, 202, "{r:?}: {reply:?}");
    }
    let r = t.chunk("clip.mp4", file, plan[2].clone()).await;
    t.assert_rejected(
        &r,
        &["rules[1]", "duration", "lasts 2 s"],
        &before,
        "completing chunk",
    )
    .await;
    assert_eq!(t.get("clip.mp4").await.0, 404);
    assert_eq!(t.status("clip.mp4", total).await, (202, json!([])));
    t.assert_clean(&before, "after the status query").await;

    // A document the clip meets: 201 on the completing chunk.
    let server = start_app(&all(vec![
        rule("kind", "==", json!("video")),
        rule("duration", ">", json!(1)),
        rule("fps", "==", json!(25)),
        rule("width", "==", json!(320)),
    ]))
    .await;
    let t = Target::of(&server);
    for r in &plan[..2] {
        assert_eq!(t.chunk("clip.mp4", file, r.clone()).await.status, 202);
    }
    let r = t.chunk("clip.mp4", file, plan[2].clone()).await;
    t.assert_published(&r, "clip.mp4", file, "a clip that passes")
        .await;
}

// --- per-upload conditions from the request's extensions -----------------------------------

/// A server whose service is wrapped in a `ConditionsLayer`.
struct Layered {
    target: Target,
    _sandbox: tempfile::TempDir,
    task: JoinHandle<()>,
}

impl Drop for Layered {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `Uploads::conditions(app)`, wrapped in `ConditionsLayer::new(layer)` by `tower::Layer`
/// (or by axum's `Router::layer`, with the uploads under `/files`).
async fn start_layered(app: &Value, layer: &Value, axum: bool) -> Layered {
    let (sandbox, data) = common::sandbox();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let prefix = if axum { "/files" } else { "" };
    let base = format!("http://{addr}{prefix}");
    let uploads = Uploads::new(FsStorage::new(&data).expect("storage"))
        .key(KEY)
        .base_url(base.clone())
        .conditions(parse(app));
    let layer = ConditionsLayer::new(parse(layer));
    let task = if axum {
        let router = axum::Router::new()
            .route("/health", axum::routing::get(|| async { "ok" }))
            .nest_service("/files", uploads.service())
            .layer(layer);
        common::serve_listener(listener, router)
    } else {
        common::serve_listener(listener, tower::Layer::layer(&layer, uploads.service()))
    };
    Layered {
        target: Target {
            base,
            prefix: prefix.to_owned(),
            addr,
            data,
            sandbox: sandbox.path().to_owned(),
        },
        _sandbox: sandbox,
        task,
    }
}

async fn app_and_layer_conditions_both_apply(axum: bool) {
    let app = one("width", "<=", json!(100));
    let layer = all(vec![
        rule("kind", "==", json!("image")),
        rule("height", ">=", json!(10)),
        rule("filesize", "<=", json!(1_000_000)),
    ]);
    let server = start_layered(&app, &layer, axum).await;
    let t = &server.target;
    let via = if axum { "axum" } else { "tower" };
    let before = t.entries();

    // Breaks the app's rule only.
    let r = t.put("wide.png", tiny_png(200, 20)).await;
    t.assert_rejected(
        &r,
        &["rules[0]", "width", "200 px wide"],
        &before,
        &format!("{via}: app"),
    )
    .await;
    assert!(!r.message().contains("height") && !r.message().contains("kind"));
    // Breaks the layer's second rule only.
    let r = t.put("flat.png", tiny_png(50, 5)).await;
    t.assert_rejected(
        &r,
        &["rules[1]", "height", "5 px high"],
        &before,
        &format!("{via}: layer"),
    )
    .await;
    assert!(!r.message().contains("width"), "{r:?}");
    // Breaks both: both named.
    let r = t.put("junk.bin", pattern(5000, 1)).await;
    t.assert_rejected(
        &r,
        &["rules[0]", "kind", "the file is other", "width"],
        &before,
        &format!("{via}: both"),
    )
    .await;
    // The layer's size rule, from the declared length, before the body.
    let head = t.raw_head("big.png", 2_000_000, "");
    let (res, took, _stream) = raw_partial(t.addr, &head, &[]).await;
    assert_raw_422(&res, &["rules[2]", "filesize"], &format!("{via}: declared"));
    eprintln!("{via}: the layer's filesize rule: 422 after {took:?} (no body sent)");
    t.assert_clean(&before, &format!("{via}: declared")).await;
    // …and from a Content-Range total.
    let head = t.raw_head("big.png", 1000, "Content-Range: bytes 0-999/2000000\r\n");
    let (res, _, _stream) = raw_partial(t.addr, &head, &[]).await;
    assert_raw_422(&res, &["rules[2]", "filesize"], &format!("{via}: total"));
    t.assert_clean(&before, &format!("{via}: total")).await;
    // A resumable upload whose chunk 0 is no image: the layer's kind rule, at Head.
    let file = pattern(200 * KIB, 2);
    assert_eq!(
        t.chunk("res.bin", &file, 100 * KIB..200 * KIB).await.status,
        202
    );
    let r = t.chunk("res.bin", &file, 0..100 * KIB).await;
    t.assert_rejected(
        &r,
        &["rules[0]", "kind"],
        &before,
        &format!("{via}: chunk 0"),
    )
    .await;
    assert_eq!(t.status("res.bin", file.len()).await, (202, json!([])));
    // A resumable image that breaks the app's rule (its width shows in chunk 0).
    let png = tiny_png(120, 40);
    assert_eq!(
        t.chunk("res.png", &png, 10_000..png.len()).await.status,
        202
    );
    let r = t.chunk("res.png", &png, 0..10_000).await;
    t.assert_rejected(
        &r,
        &["rules[0]", "width", "120 px wide"],
        &before,
        &format!("{via}: resumable, app"),
    )
    .await;
    // Meets both.
    let png = tiny_png(50, 50);
    let r = t.put("ok.png", png.clone()).await;
    t.assert_published(&r, "ok.png", &png, &format!("{via}: both hold"))
        .await;
    if axum {
        let res = common::client()
            .get(format!("http://{}/health", t.addr))
            .send()
            .await
            .expect("GET /health");
        assert_eq!(res.status(), 200, "the app's own route still answers");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditions_layer_around_the_service_with_tower() {
    app_and_layer_conditions_both_apply(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditions_layer_around_an_axum_router() {
    app_and_layer_conditions_both_apply(true).await;
}

// --- the demo server ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_server_applies_its_conditions() {
    let (sandbox, data) = common::sandbox();
    let doc = all(vec![
        rule("type", "==", json!("image/*")),
        rule("width", "<=", json!(64)),
        rule("filesize", "<", json!(1_000_000)),
    ]);
    let demo = common::process::DemoServer::start(&data, &["--conditions", &doc.to_string()]);
    let addr = demo.addr;
    let t = Target {
        base: format!("http://{addr}"),
        prefix: String::new(),
        addr,
        data: data.clone(),
        sandbox: sandbox.path().to_owned(),
    };
    let before = t.entries();
    let r = t.put("wide.png", tiny_png(100, 10)).await;
    t.assert_rejected(&r, &["rules[1]", "width"], &before, "demo: width")
        .await;
    let r = t.put("junk.png", pattern(3000, 9)).await;
    t.assert_rejected(
        &r,
        &["rules[0]", "mimetype", "application/octet-stream"],
        &before,
        "demo: type",
    )
    .await;
    let head = t.raw_head("big.png", 5_000_000, "");
    let (res, _, _stream) = raw_partial(addr, &head, &[]).await;
    assert_raw_422(&res, &["rules[2]", "filesize"], "demo: declared");
    t.assert_clean(&before, "demo: declared").await;
    let png = tiny_png(40, 30);
    let r = t.put("ok.png", png.clone()).await;
    t.assert_published(&r, "ok.png", &png, "demo: passes").await;
}

#[test]
fn demo_server_refuses_an_invalid_conditions_document() {
    let cases = [
        (
            r#"{"rules":[{"key":"colour","operator":"==","value":"red"}]}"#,
            &["--conditions", "rules[0]", "colour"][..],
        ),
        (
            r#"{"operator":"&&","rules":[{"key":"kind","operator":"==","value":"image"},{"key":"width","operator":"~","value":1}]}"#,
            &["--conditions", "rules[1]", "~"][..],
        ),
        (
            r#"{"rules":[{"key":"filesize","operator":"<","value":"big"}]}"#,
            &["--conditions", "rules[0]", "filesize"][..],
        ),
        (
            r#"{"rules":[{"key":"kind","operator":">","value":"image"}]}"#,
            &["--conditions", "rules[0]", "kind"][..],
        ),
        (r#"{"operator":"and","rules":[]}"#, &["--conditions"][..]),
        (r#"{"rules":[{"key":"kind""#, &["--conditions", "JSON"][..]),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    for (doc, needles) in cases {
        let out = Command::new(server_binary())
            .args(["--listen", "127.0.0.1:0", "--key", KEY, "--conditions", doc])
            .arg("--data")
            .arg(dir.path().join("data"))
            .stdin(Stdio::null())
            .output()
            .expect("run the demo server");
        assert_eq!(out.status.code(), Some(2), "{doc}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        for needle in needles {
            assert!(stderr.contains(needle), "{doc}: {needle:?} not in {stderr}");
        }
        assert!(out.stdout.is_empty(), "{doc}: nothing on stdout: {out:?}");
    }
    // Without a value at all.
    let out = Command::new(server_binary())
        .args(["--key", KEY, "--conditions"])
        .stdin(Stdio::null())
        .output()
        .expect("run the demo server");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--conditions"));
}

/// A first chunk too short to show what the file is must not be judged as if it held the
/// whole sniff window: 8 bytes of an MP4 (not even its `ftyp` box) or of a WAV (`RIFF` and a
/// size, no `WAVE`), or the first 1000 bytes of an SVG whose `<svg` tag comes after a 2 KB
/// comment, are not "other" files. The upload must go on, and be decided on the whole file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumable_short_first_chunk_is_not_judged_on_too_few_bytes() {
    let Some(m) = media() else { return };
    let mut svg = b"<?xml version=\"1.0\"?>\n<!-- ".to_vec();
    svg.extend(std::iter::repeat_n(b'x', 2000));
    svg.extend_from_slice(
        b" -->\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"10\" height=\"10\"></svg>\n",
    );
    let cases = [
        ("clip.mp4", &m.mp4, "video", 8),
        ("sound.wav", &m.wav, "audio", 8),
        ("pic.svg", &svg, "image", 1000),
    ];
    let mut wrong = Vec::new();
    for (name, file, kind, first) in cases {
        let server = start_app(&one("kind", "==", json!(kind))).await;
        let t = Target::of(&server);
        // The whole file passes, in one chunk…
        let r = t.chunk(name, file, 0..file.len()).await;
        t.assert_published(&r, name, file, &format!("{name} in one chunk"))
            .await;
        // …and must pass in two, the first short.
        let path = format!("again/{name}");
        let r = t.chunk(&path, file, first..file.len()).await;
        assert_eq!(r.status, 202, "{name}: {r:?}");
        let r = t.chunk(&path, file, 0..first).await;
        if r.status != 201 {
            wrong.push(format!(
                "{name}, chunk 0 of {first} bytes: {} {}",
                r.status,
                r.message()
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "a short chunk 0 was judged on too few bytes:\n{}",
        wrong.join("\n")
    );
}

/// The app's conditions are checked after the credentials: an unauthenticated `PUT` whose
/// declared size breaks them is a 401, not a 422 naming the app's rules.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_come_before_conditions() {
    let server = start_app(&one("filesize", "<=", json!(1000))).await;
    let t = Target::of(&server);
    let before = t.entries();
    let head = format!(
        "PUT /big.bin HTTP/1.1\r\nHost: {}\r\nContent-Length: 5000000\r\n\r\n",
        t.addr
    );
    let (res, _, _stream) = raw_partial(t.addr, &head, &[]).await;
    assert_eq!(res.status, 401, "{res:?}");
    t.assert_clean(&before, "unauthenticated").await;
}

/// With `Expect: 100-continue`, a declared size that breaks the conditions is answered with
/// the 422 alone: no `100 Continue` invites the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_continue_gets_the_422_without_100() {
    let server = start_app(&one("filesize", "<=", json!(1000))).await;
    let t = Target::of(&server);
    let before = t.entries();
    let head = t.raw_head("big.bin", 5_000_000, "Expect: 100-continue\r\n");
    let mut stream = TcpStream::connect(t.addr).await.expect("connect");
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + EARLY;
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        use tokio::io::AsyncReadExt;
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 422"), "{text}");
    t.assert_clean(&before, "expect 100-continue").await;
}
