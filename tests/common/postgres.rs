//! The PostgreSQL server of the tests (feature `postgres`): `TOWER_UPLOADS_TEST_PG`
//! (`tests/postgres/start.sh` prints it; `.ci/run` exports it), or, when it is unset and
//! PostgreSQL's server binaries are installed, a throwaway cluster started here once per test
//! binary with `tests/postgres/start.sh`. Without either the tests say so and pass only when
//! `CI` is unset; with `CI` set they fail.

use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The URL of the tests' database server, or `None` when there is none.
fn postgres() -> Option<&'static str> {
    static PG: OnceLock<Option<String>> = OnceLock::new();
    PG.get_or_init(|| {
        if let Ok(url) = std::env::var("TOWER_UPLOADS_TEST_PG") {
            return Some(url);
        }
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/postgres/start.sh");
        let out = Command::new("bash")
            .arg(script)
            .arg("--watch")
            .arg(std::process::id().to_string())
            .stderr(Stdio::piped())
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "tests/postgres/start.sh: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .flat_map(|l| l.split(' '))
            .find_map(|kv| kv.strip_prefix("TOWER_UPLOADS_TEST_PG="))
            .map(str::to_owned)
    })
    .as_deref()
}

/// The database server's URL, or `None` (skip) when there is none and `CI` is unset.
pub fn postgres_or_skip(test: &str) -> Option<&'static str> {
    let pg = postgres();
    if pg.is_none() {
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty());
        assert!(
            !ci,
            "{test}: no PostgreSQL (TOWER_UPLOADS_TEST_PG unset and tests/postgres/start.sh \
             failed); CI must run these tests (Debian's postgresql)"
        );
        eprintln!("{test}: SKIPPED — no PostgreSQL (set TOWER_UPLOADS_TEST_PG)");
    }
    pg
}

/// A new, empty database on the server of `url`; its URL.
pub async fn fresh_database(url: &str) -> String {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the tests' PostgreSQL");
    let task = tokio::spawn(connection);
    let name = format!("t_{}", tower_uploads::file::random_id("").to_lowercase());
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create a database");
    drop(client);
    let _ = task.await;
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let (server, _) = base.rsplit_once('/').expect("a URL with a database name");
    format!("{server}/{name}{query}")
}
