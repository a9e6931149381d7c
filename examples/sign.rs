//! Prints a signed URL.
//!
//! ```text
//! cargo run --example sign -- --key KEY [--base-url URL] [--method put|get] [--ttl SECS] PATH
//! ```

use std::time::{SystemTime, UNIX_EPOCH};
use tower_uploads::auth::{ApiKey, SignedMethod, Signer};
use tower_uploads::path::FilePath;

fn main() {
    let mut key = std::env::var("ITTYBIT_API_KEY").ok();
    let mut base = "http://127.0.0.1:8080".to_owned();
    let mut method = SignedMethod::Put;
    let mut ttl = 3600u64;
    let mut path = None;
    let mut args = std::env::args().skip(1);
    let fail = |msg: &str| -> ! {
        eprintln!(
            "error: {msg}\nusage: sign --key KEY [--base-url URL] [--method put|get] [--ttl SECS] PATH"
        );
        std::process::exit(2)
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--key" => key = args.next(),
            "--base-url" => {
                base = args
                    .next()
                    .unwrap_or_else(|| fail("--base-url needs a URL"))
            }
            "--method" => {
                let m = args.next().unwrap_or_default();
                method =
                    SignedMethod::from_param(&m).unwrap_or_else(|| fail("--method is put or get"));
            }
            "--ttl" => {
                ttl = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| fail("--ttl needs seconds"))
            }
            p if !p.starts_with("--") && path.is_none() => path = Some(p.to_owned()),
            other => fail(&format!("unknown argument {other}")),
        }
    }
    let key = key.unwrap_or_else(|| fail("no key: --key or ITTYBIT_API_KEY"));
    let path = path.unwrap_or_else(|| fail("no path"));
    let path = FilePath::new(path).unwrap_or_else(|e| fail(&e.to_string()));
    let expiry = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + ttl;
    let signed = Signer::new(ApiKey::new(key), base).sign(&path, method, expiry);
    println!("{}", signed.url);
}
