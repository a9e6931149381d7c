//! Durability (SECURITY.md, "Durability"): what a 202 or a 201 promises survives the server
//! process being killed (SIGKILL) the moment the answer arrives — with the default policy
//! (`--durability process`: the bytes are in the kernel's page cache) and with
//! `--durability power` (`fsync` before the answer). A power cut is not simulated here: the
//! `power` policy's extra promise rests on the `fsync` calls documented in `storage/fs/mod.rs`.
//!
//! Runs the demo server binary (`cargo build --examples` first when running this file alone).

#[path = "support/client.rs"]
mod client;
mod common;

use bytes::Bytes;
use client::{Retry, Tally, sha256_hex};
use common::pattern;
use common::process::DemoServer as Demo;
use serde_json::Value;

const KEY: &str = "durability-test-key";

fn ranges(body: &Value) -> Vec<[u64; 2]> {
    let data = match body.get("data") {
        Some(d) if d.is_object() => d,
        _ => body,
    };
    serde_json::from_value(data["ranges"].clone()).unwrap_or_default()
}

/// Chunks of a 3 MiB file go one at a time to a demo server that is killed with SIGKILL as
/// soon as each 202 arrives; the next server on the same directory counts every acknowledged
/// range. The last chunk's 201, killed right after too, leaves the published file whole.
async fn kill_after_every_answer(durability: &str) -> usize {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let total = 3 * (1 << 20) + 11;
    let file = Bytes::from(pattern(total, 77));
    let plan = client::chunks(total, 400 * 1024 + 5);
    let http = reqwest::Client::new();
    let auth = format!("Bearer {KEY}");
    let path = "durable/file.bin";
    let mut acknowledged: Vec<[u64; 2]> = Vec::new();
    let mut kills = 0;
    // Out of order: odd chunks first, then even ones.
    let order: Vec<_> = plan
        .iter()
        .skip(1)
        .step_by(2)
        .chain(plan.iter().step_by(2))
        .cloned()
        .collect();
    for (i, c) in order.iter().enumerate() {
        let demo = Demo::start_keyed(&data, KEY, &["--durability", durability]);
        let url = demo.url(path);
        let mut tally = Tally::default();
        let r = client::put_chunk(
            &http,
            &url,
            &auth,
            &file,
            c.clone(),
            Retry {
                attempts: 1,
                ..Retry::default()
            },
            &mut tally,
        )
        .await;
        demo.kill9();
        kills += 1;
        let last = i + 1 == order.len();
        assert_eq!(
            r.status,
            if last { 201 } else { 202 },
            "{durability}: chunk {c:?}: {}",
            r.body
        );
        acknowledged.push([c.start as u64, c.end as u64 - 1]);
        // A fresh server counts every acknowledged range.
        let demo = Demo::start_keyed(&data, KEY, &["--durability", durability]);
        let st = client::status(
            &http,
            &demo.url(path),
            &auth,
            total,
            Retry::default(),
            &mut tally,
        )
        .await;
        if last {
            assert_eq!(st.status, 200, "{}", st.body);
            let (code, got) =
                client::get(&http, &demo.url(path), None, Retry::default(), &mut tally).await;
            assert_eq!(
                (code, sha256_hex(&got)),
                (200, sha256_hex(&file)),
                "{durability}: the published file"
            );
        } else {
            assert_eq!(st.status, 202, "{}", st.body);
            let counted = ranges(&st.body);
            for a in &acknowledged {
                assert!(
                    counted.iter().any(|r| r[0] <= a[0] && a[1] <= r[1]),
                    "{durability}: acknowledged range {a:?} lost after SIGKILL; counted {counted:?}"
                );
            }
        }
        demo.kill9();
        kills += 1;
    }
    // A simple upload killed right after its 201.
    let demo = Demo::start_keyed(&data, KEY, &["--durability", durability]);
    let mut tally = Tally::default();
    let small = Bytes::from(pattern(100_000, 5));
    let r = client::put_whole(
        &http,
        &demo.url("durable/small.bin"),
        &auth,
        &small,
        Retry {
            attempts: 1,
            ..Retry::default()
        },
        &mut tally,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    demo.kill9();
    kills += 1;
    let demo = Demo::start_keyed(&data, KEY, &["--durability", durability]);
    let (code, got) = client::get(
        &http,
        &demo.url("durable/small.bin"),
        None,
        Retry::default(),
        &mut tally,
    )
    .await;
    assert_eq!((code, got.len()), (200, small.len()));
    assert_eq!(sha256_hex(&got), sha256_hex(&small));
    kills
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_right_after_202_keeps_the_range_process_durability() {
    let kills = kill_after_every_answer("process").await;
    eprintln!(
        "FIGURES durability: process policy: {kills} SIGKILLs right after an answer, every acknowledged range kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_right_after_202_keeps_the_range_power_durability() {
    let kills = kill_after_every_answer("power").await;
    eprintln!(
        "FIGURES durability: power policy: {kills} SIGKILLs right after an answer, every acknowledged range kept"
    );
}
