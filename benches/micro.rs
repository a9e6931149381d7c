//! Micro-benchmarks of the hot pure functions (criterion): signature verification (signed URL
//! and bearer), Content-Range parsing, conditions evaluation, sniffing.
//!
//! ```text
//! cargo bench --bench micro
//! ```

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderValue, Method};
use std::hint::black_box;
use tower_uploads::auth::{ApiKey, KeySet, SignedMethod, Signer, Verifier, VerifyInput};
use tower_uploads::conditions::{Conditions, Facts};
use tower_uploads::media::sniff;
use tower_uploads::path::FilePath;
use tower_uploads::upload::content_range;

fn auth(c: &mut Criterion) {
    let keys = KeySet::new([
        ApiKey::new("old-key-0123456789"),
        ApiKey::new("bench-key-0123456789"),
    ]);
    let verifier = Verifier::new(keys);
    let signer = Signer::new(ApiKey::new("bench-key-0123456789"), "http://x");
    let path = FilePath::new("photos/2025/cat one.png").expect("path");
    let url = signer.sign(&path, SignedMethod::Put, 4_102_444_800).url;
    let (raw_path, query) = url
        .strip_prefix("http://x/")
        .and_then(|rest| rest.split_once('?'))
        .expect("signed url");
    let put = Method::PUT;
    let signed = VerifyInput {
        method: &put,
        raw_path,
        query: Some(query),
        authorization: None,
        bearer_only: false,
    };
    c.bench_function("verify signed URL (2 keys, second matches)", |b| {
        b.iter(|| verifier.verify(black_box(&signed), 1_800_000_000))
    });
    let single = Verifier::new(KeySet::new([ApiKey::new("bench-key-0123456789")]));
    c.bench_function("verify signed URL (1 key)", |b| {
        b.iter(|| single.verify(black_box(&signed), 1_800_000_000))
    });
    let bearer_header = HeaderValue::from_static("Bearer bench-key-0123456789");
    let bearer = VerifyInput {
        authorization: Some(&bearer_header),
        ..signed
    };
    c.bench_function("verify bearer key (2 keys)", |b| {
        b.iter(|| verifier.verify(black_box(&bearer), 1_800_000_000))
    });
}

fn parsing(c: &mut Criterion) {
    c.bench_function("parse Content-Range", |b| {
        b.iter(|| content_range::parse(black_box(b"bytes=16777216-33554431/1073741824")))
    });
    c.bench_function("validate path", |b| {
        b.iter(|| FilePath::from_uri_path(black_box("/photos/2025/cat%20one.png")))
    });
}

fn conditions(c: &mut Criterion) {
    let doc = br#"{"operator":"&&","rules":[
        {"key":"kind","operator":"==","value":"video"},
        {"key":"filesize","operator":"<=","value":104857600},
        {"key":"width","operator":"<=","value":1920},
        {"key":"height","operator":"<=","value":1920},
        {"key":"duration","operator":"<=","value":300}]}"#;
    let conditions = Conditions::parse(doc).expect("conditions");
    let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    png.extend_from_slice(&640u32.to_be_bytes());
    png.extend_from_slice(&480u32.to_be_bytes());
    png.extend_from_slice(&[8, 2, 0, 0, 0, 0, 0, 0, 0]);
    let facts = sniff(&png, None, "a.png");
    c.bench_function("parse conditions (5 rules)", |b| {
        b.iter(|| Conditions::parse(black_box(doc)))
    });
    c.bench_function("evaluate conditions (5 rules, complete)", |b| {
        b.iter(|| conditions.evaluate(black_box(&Facts::complete(12_345, &facts))))
    });
    c.bench_function("sniff PNG head", |b| {
        b.iter(|| sniff(black_box(&png), None, "a.png"))
    });
}

criterion_group!(benches, auth, parsing, conditions);
criterion_main!(benches);
