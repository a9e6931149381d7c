//! Prints a signed URL.
//!
//! ```text
//! cargo run --example sign -- --key KEY [--base-url URL] [--method put|get] [--ttl SECS] PATH
//! ```
//!
//! `--key` defaults to env `ITTYBIT_API_KEY`; `--help` describes the flags.

use clap::builder::{PossibleValuesParser, TypedValueParser};
use std::time::{SystemTime, UNIX_EPOCH};
use tower_uploads::auth::{ApiKey, SignedMethod, Signer};
use tower_uploads::path::FilePath;

/// Prints a signed URL.
#[derive(clap::Parser)]
#[command(name = "sign", args_override_self = true)]
struct Args {
    /// The API key that signs (else env ITTYBIT_API_KEY).
    #[arg(long, value_name = "KEY", allow_hyphen_values = true)]
    key: Option<String>,
    /// The server's public URL.
    #[arg(
        long,
        value_name = "URL",
        default_value = "http://127.0.0.1:8080",
        allow_hyphen_values = true
    )]
    base_url: String,
    /// What the URL allows: put uploads, get downloads.
    #[arg(
        long,
        value_name = "put|get",
        default_value = "put",
        value_parser = PossibleValuesParser::new(["put", "get"])
            .map(|m| SignedMethod::from_param(&m).expect("a possible value")),
    )]
    method: SignedMethod,
    /// How long the URL is valid.
    #[arg(long, value_name = "SECS", default_value_t = 3600)]
    ttl: u64,
    /// The file's path (`folder/…/filename`).
    #[arg(value_name = "PATH", value_parser = |p: &str| FilePath::new(p))]
    path: FilePath,
}

fn main() {
    let args = <Args as clap::Parser>::parse();
    let key = args
        .key
        .or_else(|| std::env::var("ITTYBIT_API_KEY").ok())
        .unwrap_or_else(|| {
            <Args as clap::CommandFactory>::command()
                .error(
                    clap::error::ErrorKind::MissingRequiredArgument,
                    "no key: --key or ITTYBIT_API_KEY",
                )
                .exit()
        });
    let expiry = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + args.ttl;
    let signed = Signer::new(ApiKey::new(key), args.base_url).sign(&args.path, args.method, expiry);
    println!("{}", signed.url);
}
