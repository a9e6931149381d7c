//! The demo server (`examples/server.rs`) as a child process with extra flags, for the tests
//! that need the real binary: its header-read timeout, its resource use (`/proc/<pid>`), or
//! being killed. Needs `cargo build --examples` (a plain `cargo test` builds it).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running demo server, killed (SIGKILL) when dropped.
pub struct Demo {
    pub child: Child,
    pub addr: SocketAddr,
    pub base: String,
}

impl Demo {
    /// Starts `server --listen 127.0.0.1:0 --data <data> --key <key> <extra…>` and waits for
    /// its `listening on` line.
    pub fn start(binary: &Path, data: &Path, key: &str, extra: &[&str]) -> Demo {
        Self::start_with_env(binary, data, key, extra, &[])
    }

    /// Like [`start`](Self::start), with extra environment variables.
    pub fn start_with_env(
        binary: &Path,
        data: &Path,
        key: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Demo {
        let mut child = Command::new(binary)
            .args(["--listen", "127.0.0.1:0", "--key", key, "--data"])
            .arg(data)
            .args(extra)
            .env("RUST_LOG", "error")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the demo server");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let _ = tx.send(line);
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("the demo server printed nothing: {e}"));
        let addr: SocketAddr = line
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected line {line:?}"))
            .trim()
            .parse()
            .expect("an address");
        Demo {
            child,
            addr,
            base: format!("http://{addr}"),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base, path.trim_start_matches('/'))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Open file descriptors of the process.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Resident set size in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// SIGKILL, and reap.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
