//! The demo server (`examples/server.rs`) as a child process.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{KEY, server_binary};

/// A running demo server, killed (SIGKILL) when dropped.
pub struct DemoServer {
    /// The child process.
    pub child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The listening address.
    pub addr: std::net::SocketAddr,
}

impl DemoServer {
    /// Starts the demo server on `127.0.0.1:0` over `data` with key [`KEY`] and `extra`
    /// arguments, and waits for its `listening on http://ADDR` line.
    pub fn start(data: &Path, extra: &[&str]) -> DemoServer {
        Self::start_keyed(data, KEY, extra)
    }

    /// [`start`](Self::start) with environment variables for the process (an S3 store's
    /// `AWS_*`).
    pub fn start_env(data: &Path, extra: &[&str], env: &[(String, String)]) -> DemoServer {
        Self::start_with(data, KEY, extra, env)
    }

    /// Like [`start`](Self::start), with another key.
    pub fn start_keyed(data: &Path, key: &str, extra: &[&str]) -> DemoServer {
        Self::start_with(data, key, extra, &[] as &[(&str, &str)])
    }

    /// Like [`start`](Self::start), with another key and environment variables.
    pub fn start_with<K, V>(data: &Path, key: &str, extra: &[&str], env: &[(K, V)]) -> DemoServer
    where
        K: AsRef<std::ffi::OsStr>,
        V: AsRef<std::ffi::OsStr>,
    {
        Self::start_binary(&server_binary(), data, key, extra, env)
    }

    /// Like [`start_keyed`](Self::start_keyed), with the release build of the demo server
    /// (`cargo run --release --example server`, as README starts it), built first if needed:
    /// what the memory tests measure is the server users run, not a debug build (whose
    /// binary alone is 12 MiB more resident memory).
    pub fn start_release(data: &Path, key: &str, extra: &[&str]) -> DemoServer {
        Self::start_binary(
            &super::release_server_binary(),
            data,
            key,
            extra,
            &[] as &[(&str, &str)],
        )
    }

    fn start_binary<K, V>(
        binary: &Path,
        data: &Path,
        key: &str,
        extra: &[&str],
        env: &[(K, V)],
    ) -> DemoServer
    where
        K: AsRef<std::ffi::OsStr>,
        V: AsRef<std::ffi::OsStr>,
    {
        let mut child = Command::new(binary)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data")
            .arg(data)
            .arg("--key")
            .arg(key)
            .args(extra)
            .env("RUST_LOG", "warn")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the demo server");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads every line until the process ends (so that it never writes to a closed pipe).
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let _ = tx.send(line);
            }
        });
        let line = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => line,
            Err(e) => {
                let _ = child.kill();
                let status = child.wait();
                panic!("the demo server printed no line ({e}); exit: {status:?}");
            }
        };
        let Some(addr) = line.strip_prefix("listening on http://") else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("unexpected first line of the demo server: {line:?}");
        };
        let addr: std::net::SocketAddr = addr.trim().parse().expect("an address");
        DemoServer {
            child,
            base: format!("http://{addr}"),
            addr,
        }
    }

    /// `<base>/<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base, path.trim_start_matches('/'))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The open file descriptors of the process.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// The current resident set size (`VmRSS`), in KiB.
    pub fn rss_kib(&self) -> u64 {
        status_kib(self.pid(), "VmRSS:")
    }

    /// SIGKILL, and reap.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The peak resident set size (`VmHWM`) of the process, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        status_kib(self.pid(), "VmHWM:")
    }
}

/// A `kB` field of `/proc/<pid>/status` (0 when the process is gone).
pub fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

impl Drop for DemoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
