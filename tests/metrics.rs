//! Metrics over the demo server binary: with `--metrics` it serves the crate's metrics
//! (`tower_uploads::metrics`) in Prometheus' text format at `GET /metrics`, without
//! credentials even when delivery is private; a load of simple PUTs, a chunked upload in
//! three `Content-Range` chunks, an abandoned one, an upload session, rejected uploads and
//! GETs moves the counters and histograms by exactly what it did, as scraped and parsed here
//! (while the load runs, and after). Without the flag `/metrics` is a file path as any other.
//!
//! Runs the demo server binary (`cargo build --examples` first when running this file alone).

mod common;

use common::process::DemoServer;
use common::{KEY, client, pattern, sandbox};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

// --- the exposition ----------------------------------------------------------------------

/// One sample line: `name{label="value",…} value`.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed text exposition: the `# TYPE` of each metric family, and every sample.
#[derive(Debug, Default)]
struct Exposition {
    types: BTreeMap<String, String>,
    samples: Vec<Sample>,
}

impl Exposition {
    /// Parses the text format (version 0.0.4); panics on a line it cannot read.
    fn parse(text: &str) -> Exposition {
        let mut out = Exposition::default();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if let Some(comment) = line.strip_prefix('#') {
                let mut words = comment.split_whitespace();
                if words.next() == Some("TYPE") {
                    let name = words.next().expect("a name after # TYPE");
                    let kind = words.next().expect("a type after the name");
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                        "unknown type in {line:?}"
                    );
                    let old = out.types.insert(name.to_owned(), kind.to_owned());
                    assert!(old.is_none(), "two # TYPE lines for {name}");
                }
                continue; // # HELP and other comments
            }
            out.samples.push(parse_sample(line));
        }
        out
    }

    /// The sum of the samples named `name` whose labels include `labels` (0 when none).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).is_some_and(|x| x == v))
            })
            .map(|s| s.value)
            .sum()
    }

    /// The `# TYPE` of a family.
    fn type_of(&self, family: &str) -> Option<&str> {
        self.types.get(family).map(String::as_str)
    }
}

/// `name{k="v",…} value [timestamp]`, with the format's escapes in label values.
fn parse_sample(line: &str) -> Sample {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or_else(|| panic!("no value in {line:?}"));
    let name = &line[..name_end];
    assert!(
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
        "bad metric name in {line:?}"
    );
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices().peekable();
        let end = loop {
            let (i, c) = chars
                .next()
                .unwrap_or_else(|| panic!("unclosed {{ in {line:?}"));
            match c {
                '}' => break i,
                ',' | ' ' => continue,
                _ => {}
            }
            let mut key = String::from(c);
            for (_, c) in chars.by_ref() {
                if c == '=' {
                    break;
                }
                key.push(c);
            }
            assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "{line:?}");
            let mut value = String::new();
            loop {
                match chars.next().map(|(_, c)| c) {
                    Some('"') => break,
                    Some('\\') => match chars.next().map(|(_, c)| c) {
                        Some('n') => value.push('\n'),
                        Some(c @ ('\\' | '"')) => value.push(c),
                        other => panic!("bad escape {other:?} in {line:?}"),
                    },
                    Some(c) => value.push(c),
                    None => panic!("unclosed label value in {line:?}"),
                }
            }
            labels.insert(key, value);
        };
        rest = &after[end + 1..];
    }
    let value = rest
        .split_whitespace()
        .next()
        .unwrap_or_else(|| panic!("no value in {line:?}"));
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}")),
    };
    Sample {
        name: name.to_owned(),
        labels,
        value,
    }
}

#[test]
fn the_parser_reads_the_format() {
    let text = "# HELP a_total Things.\n# TYPE a_total counter\n\
                a_total{kind=\"x\",msg=\"q\\\"\\\\n\\n\"} 3\na_total{kind=\"y\"} 4 1700000000\n\
                # TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.5\nh_count 2\n";
    let e = Exposition::parse(text);
    assert_eq!(e.type_of("a_total"), Some("counter"));
    assert_eq!(e.type_of("h"), Some("histogram"));
    assert_eq!(e.value("a_total", &[]), 7.0);
    assert_eq!(e.value("a_total", &[("kind", "x")]), 3.0);
    assert_eq!(e.samples[0].labels["msg"], "q\"\\n\n");
    assert_eq!(e.value("h_bucket", &[("le", "+Inf")]), 2.0);
    assert_eq!(e.value("h_count", &[]), 2.0);
    assert_eq!(e.value("nothing", &[]), 0.0);
}

// --- the demo server -----------------------------------------------------------------------

const STARTED: &str = "tower_uploads_uploads_started_total";
const COMPLETED: &str = "tower_uploads_uploads_completed_total";
const FAILED: &str = "tower_uploads_uploads_failed_total";
const REJECTED: &str = "tower_uploads_requests_rejected_total";
const RECEIVED: &str = "tower_uploads_bytes_received_total";
const DELIVERED: &str = "tower_uploads_bytes_delivered_total";
const REQUEST_DURATION: &str = "tower_uploads_request_duration_seconds";
const CHUNK_DURATION: &str = "tower_uploads_chunk_duration_seconds";
const IN_PROGRESS: &str = "tower_uploads_uploads_in_progress";
const BUFFERS: &str = "tower_uploads_buffer_bytes";

/// `GET /metrics`, with no credentials: the parsed exposition, checked to be one.
async fn scrape(server: &DemoServer) -> Exposition {
    let res = client()
        .get(server.url("metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"],
        "text/plain; version=0.0.4",
        "the Prometheus text format"
    );
    Exposition::parse(&res.text().await.expect("the exposition"))
}

/// What the load did, for the expectations.
#[derive(Debug, Default)]
struct Did {
    simple: Vec<usize>,
    received: u64,
    delivered: u64,
}

const SIMPLE: usize = 8;
const CHUNK: usize = 100_000;
const LIMIT: usize = 1_000_000;

/// The load: simple PUTs, a chunked upload in three chunks, the first chunk of another left
/// behind, an upload session's form, two refused PUTs (a wrong key, a body over the limit)
/// and GETs of the simple files (with the key: delivery is private).
async fn load(base: String) -> Did {
    let http = client();
    let auth = format!("Bearer {KEY}");
    let mut did = Did::default();
    for i in 0..SIMPLE {
        let body = pattern(1_000 + i * 3_000, i as u64);
        let res = http
            .put(format!("{base}/simple/{i}.bin"))
            .header("authorization", &auth)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201, "simple PUT {i}");
        did.simple.push(body.len());
        did.received += body.len() as u64;
    }
    let file = pattern(3 * CHUNK, 77);
    for (n, chunk) in file.chunks(CHUNK).enumerate() {
        let (start, end) = (n * CHUNK, n * CHUNK + chunk.len() - 1);
        let res = http
            .put(format!("{base}/chunked/big.bin"))
            .header("authorization", &auth)
            .header(
                "content-range",
                format!("bytes {start}-{end}/{}", file.len()),
            )
            .body(chunk.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), if n == 2 { 201 } else { 202 }, "chunk {n}");
        did.received += chunk.len() as u64;
    }
    let res = http
        .put(format!("{base}/chunked/abandoned.bin"))
        .header("authorization", &auth)
        .header(
            "content-range",
            format!("bytes 0-{}/{}", CHUNK - 1, 3 * CHUNK),
        )
        .body(file[..CHUNK].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202, "the abandoned upload's chunk");
    did.received += CHUNK as u64;

    // An upload session: created, then its single-file form.
    let res = http
        .post(format!("{base}/uploads"))
        .header("authorization", &auth)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "POST /uploads");
    let v: serde_json::Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    let url = v["data"]["url"].as_str().expect("data.url").to_owned();
    let part = pattern(5_000, 5);
    let mut form = b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"s.bin\"\r\n\
                     Content-Type: application/octet-stream\r\n\r\n"
        .to_vec();
    form.extend_from_slice(&part);
    form.extend_from_slice(b"\r\n--b--\r\n");
    let res = http
        .post(url)
        .header("content-type", "multipart/form-data; boundary=b")
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "the session's form");
    did.received += part.len() as u64;

    // Refused: a wrong key (by the signature layer), a body over --max-file-size (413 on its
    // Content-Length, before the body).
    let res = http
        .put(format!("{base}/refused/a.bin"))
        .header("authorization", "Bearer not-the-key")
        .body(vec![1u8; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = http
        .put(format!("{base}/refused/b.bin"))
        .header("authorization", &auth)
        .body(vec![1u8; LIMIT + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);

    for (i, len) in did.simple.iter().enumerate().step_by(2) {
        let res = http
            .get(format!("{base}/simple/{i}.bin"))
            .header("authorization", &auth)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let bytes = res.bytes().await.unwrap();
        assert_eq!(bytes.len(), *len);
        did.delivered += bytes.len() as u64;
    }
    did
}

/// Every counter of `after` at least its value in `before` (counters never go down).
fn assert_monotonic(before: &Exposition, after: &Exposition) {
    for s in &before.samples {
        let family = s.name.trim_end_matches("_total");
        if before.type_of(&s.name) != Some("counter") && before.type_of(family) != Some("counter") {
            continue;
        }
        let labels: Vec<(&str, &str)> = s
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert!(
            after.value(&s.name, &labels) >= s.value,
            "{} {:?} went down",
            s.name,
            s.labels
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_during_and_after_a_load_shows_what_it_did() {
    let (_sandbox, data) = sandbox();
    let max = LIMIT.to_string();
    // Private delivery: /metrics needs no credentials all the same. --upload-ttl 8: the
    // sweeper lists the uploads in progress every 2 s.
    let server = DemoServer::start(
        &data,
        &[
            "--metrics",
            "--private",
            "--max-file-size",
            &max,
            "--upload-ttl",
            "8",
        ],
    );
    let before = scrape(&server).await;

    // Scrapes while the load runs: each one parses, and no counter goes down.
    let load = tokio::spawn(load(server.base.clone()));
    let mut last = before;
    let mut during = 0;
    while !load.is_finished() {
        let now = scrape(&server).await;
        assert_monotonic(&last, &now);
        last = now;
        during += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let did = load.await.expect("the load");
    assert!(during > 0, "scraped during the load");
    let after = scrape(&server).await;
    assert_monotonic(&last, &after);

    // The server is this test's alone: every value is what the load did.
    let v = |name: &str, labels: &[(&str, &str)]| after.value(name, labels);
    let simple = [("protocol", "ittybit"), ("kind", "simple")];
    let chunked = [("protocol", "ittybit"), ("kind", "chunked")];
    let session = [("protocol", "ittybit"), ("kind", "session")];
    assert_eq!(v(STARTED, &simple), SIMPLE as f64, "simple PUTs opened");
    assert_eq!(
        v(COMPLETED, &simple),
        SIMPLE as f64,
        "simple files published"
    );
    assert_eq!(v(STARTED, &chunked), 2.0, "two resumable uploads created");
    assert_eq!(v(COMPLETED, &chunked), 1.0, "one published");
    assert_eq!(v(STARTED, &session), 1.0, "one session created");
    assert_eq!(v(COMPLETED, &session), 1.0, "its media answered");
    assert_eq!(v(FAILED, &[]), 0.0, "no 5xx");
    assert_eq!(
        v(REJECTED, &[("kind", "simple"), ("error", "token_invalid")]),
        1.0,
        "the wrong key"
    );
    assert_eq!(
        v(REJECTED, &[("kind", "simple"), ("error", "file_too_large")]),
        1.0,
        "the body over the limit"
    );
    assert_eq!(v(REJECTED, &[]), 2.0, "nothing else was refused");
    // Refused bodies are not read: exactly the files' bytes.
    assert_eq!(v(RECEIVED, &[]), did.received as f64, "bytes received");
    assert_eq!(v(DELIVERED, &[]), did.delivered as f64, "bytes delivered");

    for family in [REQUEST_DURATION, CHUNK_DURATION] {
        assert_eq!(after.type_of(family), Some("histogram"), "{family}");
    }
    let count = |endpoint: &str| {
        v(
            &format!("{REQUEST_DURATION}_count"),
            &[("endpoint", endpoint)],
        )
    };
    // The wrong key never reached the handler; the 413 did.
    assert_eq!(count("simple"), SIMPLE as f64 + 1.0);
    assert_eq!(count("chunked"), 4.0);
    assert_eq!(count("session"), 2.0);
    assert_eq!(count("deliver"), did.simple.len().div_ceil(2) as f64);
    assert_eq!(v(&format!("{CHUNK_DURATION}_count"), &[]), 4.0);
    assert!(v(&format!("{CHUNK_DURATION}_sum"), &[]) > 0.0);
    for endpoint in ["simple", "chunked", "session", "deliver"] {
        assert_eq!(
            v(
                &format!("{REQUEST_DURATION}_bucket"),
                &[("endpoint", endpoint), ("le", "+Inf")]
            ),
            count(endpoint),
            "{endpoint}: the +Inf bucket holds every request"
        );
    }
    for (name, kind) in [
        (STARTED, "counter"),
        (COMPLETED, "counter"),
        (REJECTED, "counter"),
        (RECEIVED, "counter"),
        (DELIVERED, "counter"),
    ] {
        assert_eq!(after.type_of(name), Some(kind), "{name}");
    }
    // The chunks (100,000 bytes each) were gathered in FsStorage's pooled write buffers: the
    // pool holds some, within its default budget, kept for the next writers.
    assert_eq!(after.type_of(BUFFERS), Some("gauge"));
    let buffers = after.value(BUFFERS, &[]);
    assert!(
        buffers > 0.0 && buffers <= tower_uploads::storage::DEFAULT_BUFFER_BUDGET as f64,
        "buffer bytes: {buffers}"
    );

    // The sweeper's next run (every 2 s) lists the abandoned upload.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = scrape(&server).await;
        assert_eq!(now.type_of(IN_PROGRESS), Some("gauge"));
        if now.value(IN_PROGRESS, &[]) == 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "uploads in progress: {}",
            now.value(IN_PROGRESS, &[])
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn without_the_flag_metrics_is_a_file_path() {
    let (_sandbox, data) = sandbox();
    let server = DemoServer::start(&data, &[]);
    let res = client().get(server.url("metrics")).send().await.unwrap();
    assert_eq!(res.status(), 404, "no file there");
    let body = res.text().await.unwrap();
    assert!(!body.contains("# TYPE"), "no exposition: {body}");
    assert!(body.contains("file_not_found"), "{body}");
    // It is a file path like any other: a file uploaded there is served there.
    let res = client()
        .put(server.url("metrics"))
        .header("authorization", format!("Bearer {KEY}"))
        .body("not metrics")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let res = client().get(server.url("metrics")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "not metrics");
}
