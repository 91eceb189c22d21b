//! A real Prometheus server for the tests: Debian's `prometheus` package
//! (2.42 on bookworm, a stripped Go 1.19 build), installed by `cargo xtask
//! setup`. Software no one here wrote, run the way an operator would: its
//! own config file and storage directory, on a loopback port.
//!
//! ```no_run
//! use gotrace_e2e::prometheus::{Prometheus, ScrapeTarget};
//! use std::time::Duration;
//! let prom = Prometheus::start(&[ScrapeTarget::new("app", "127.0.0.1:8080", "/metrics")]).unwrap();
//! prom.wait_scraped("app", Duration::from_secs(30)).unwrap();
//! let (status, _body) = prom.get("/api/v1/query?query=up").unwrap();
//! assert_eq!(status, 200);
//! ```

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::{CommandExt as _, RUN_TIMEOUT, Spawned};

/// Where Debian's package puts the server.
pub const PROMETHEUS_BIN: &str = "/usr/bin/prometheus";

/// How long the server may take to answer `/-/ready` (TSDB opened, WAL
/// replayed: a second or two on a fresh directory).
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// One more scrape job besides Prometheus scraping itself.
#[derive(Clone, Debug)]
pub struct ScrapeTarget {
    pub job: String,
    /// `host:port`
    pub address: String,
    pub metrics_path: String,
}

impl ScrapeTarget {
    pub fn new(job: &str, address: &str, metrics_path: &str) -> ScrapeTarget {
        ScrapeTarget {
            job: job.into(),
            address: address.into(),
            metrics_path: metrics_path.into(),
        }
    }
}

/// A running Prometheus, killed (with its process group) when dropped or
/// after [`RUN_TIMEOUT`] (the tests' deadline for every process); its
/// config, storage and log live in a temporary directory removed then too.
pub struct Prometheus {
    child: Spawned,
    pub pid: u32,
    pub port: u16,
    dir: tempfile::TempDir,
}

/// The server's binary, or a panic saying how to install it.
pub fn prometheus_bin() -> PathBuf {
    let bin = PathBuf::from(PROMETHEUS_BIN);
    assert!(
        bin.is_file(),
        "{PROMETHEUS_BIN} missing: run `cargo xtask setup` (it installs Debian's prometheus package)"
    );
    bin
}

/// The config: every job scraped each second, Prometheus itself first.
fn config(port: u16, extra: &[ScrapeTarget]) -> String {
    let mut c = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         scrape_configs:\n  - job_name: prometheus\n    static_configs:\n      \
         - targets: ['127.0.0.1:{port}']\n"
    );
    for t in extra {
        c.push_str(&format!(
            "  - job_name: {}\n    metrics_path: {}\n    static_configs:\n      \
             - targets: ['{}']\n",
            t.job, t.metrics_path, t.address
        ));
    }
    c
}

/// A loopback port nobody listens on right now.
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Prometheus {
    /// Starts the server on a free loopback port, scraping itself (and
    /// `extra`) every second, and waits until `/-/ready` answers 200. Tries
    /// three ports in case another process takes the free one first.
    pub fn start(extra: &[ScrapeTarget]) -> anyhow::Result<Prometheus> {
        let bin = prometheus_bin();
        let mut last = None;
        for _ in 0..3 {
            match Prometheus::start_once(&bin, extra) {
                Ok(p) => return Ok(p),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap())
    }

    fn start_once(bin: &Path, extra: &[ScrapeTarget]) -> anyhow::Result<Prometheus> {
        let dir = tempfile::Builder::new().prefix("gotrace-prom").tempdir()?;
        let port = free_port()?;
        let cfg = dir.path().join("prometheus.yml");
        std::fs::write(&cfg, config(port, extra))?;
        let log = std::fs::File::create(dir.path().join("prometheus.log"))?;
        let child = Command::new(bin)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn_within(RUN_TIMEOUT)?;
        let pid = child.id();
        let mut prom = Prometheus {
            child,
            pid,
            port,
            dir,
        };
        prom.wait_ready()?;
        Ok(prom)
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let start = Instant::now();
        while start.elapsed() < READY_TIMEOUT {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "prometheus exited ({status}) before it was ready:\n{}",
                    self.log()
                );
            }
            if matches!(self.get("/-/ready"), Ok((200, _))) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "prometheus not ready after {READY_TIMEOUT:?}; its log:\n{}",
            self.log()
        )
    }

    /// Waits (up to `timeout`) until every target of scrape job `job` has
    /// been scraped successfully (`health` "up" in `/api/v1/targets`). The
    /// first scrape comes a few seconds after start: Prometheus applies
    /// discovered targets at most every 5 s.
    pub fn wait_scraped(&self, job: &str, timeout: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        let mut last = String::new();
        while start.elapsed() < timeout {
            if let Ok((200, body)) = self.get("/api/v1/targets") {
                if job_is_up(&body, job) {
                    return Ok(());
                }
                last = body;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        bail!("job {job} not scraped after {timeout:?}; targets: {last}")
    }

    /// Rewrites the config with `extra` jobs (besides itself) and has the
    /// server reload it with SIGHUP, as an operator would: it starts a
    /// scrape pool and loop per new job.
    pub fn reload(&self, extra: &[ScrapeTarget]) -> anyhow::Result<()> {
        let cfg = self.dir.path().join("prometheus.yml");
        std::fs::write(&cfg, config(self.port, extra))?;
        // SAFETY: kill(2) on our own child's pid, which it still is (the
        // child is reaped only when `self` is dropped).
        if unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGHUP) } != 0 {
            bail!("SIGHUP to prometheus: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// `GET path` on the server: (status, body).
    pub fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        http_get(SocketAddr::from(([127, 0, 0, 1], self.port)), path)
    }

    /// Whether it still runs.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().is_ok_and(|s| s.is_none())
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

/// Whether `/api/v1/targets` (`body`) lists job `job` with every target up.
fn job_is_up(body: &str, job: &str) -> bool {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(body) else {
        return false;
    };
    let Some(targets) = v["data"]["activeTargets"].as_array() else {
        return false;
    };
    let mine: Vec<_> = targets
        .iter()
        .filter(|t| t["labels"]["job"] == job)
        .collect();
    !mine.is_empty() && mine.iter().all(|t| t["health"] == "up")
}

/// A minimal HTTP/1.0 GET (no client crate needed): (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let timeout = Duration::from_secs(5);
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    // One write: `write!` on the stream would send the request in pieces.
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("no HTTP status in {head:?}"))?;
    Ok((status, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_scrapes_itself_and_the_extra_targets() {
        let c = config(9090, &[ScrapeTarget::new("app", "127.0.0.1:8080", "/m")]);
        assert!(c.contains("scrape_interval: 1s"), "{c}");
        assert!(c.contains("- targets: ['127.0.0.1:9090']"), "{c}");
        assert!(c.contains("job_name: app\n    metrics_path: /m\n"), "{c}");
        assert!(c.contains("- targets: ['127.0.0.1:8080']"), "{c}");
    }

    #[test]
    fn a_job_is_up_when_all_its_targets_are() {
        let t =
            |job: &str, health: &str| serde_json::json!({"labels": {"job": job}, "health": health});
        let body = |ts: Vec<serde_json::Value>| {
            serde_json::json!({"status": "success", "data": {"activeTargets": ts}}).to_string()
        };
        assert!(job_is_up(
            &body(vec![t("prometheus", "up"), t("app", "down")]),
            "prometheus"
        ));
        assert!(!job_is_up(
            &body(vec![t("prometheus", "up"), t("app", "down")]),
            "app"
        ));
        assert!(!job_is_up(
            &body(vec![t("prometheus", "unknown")]),
            "prometheus"
        ));
        assert!(!job_is_up(&body(vec![]), "prometheus"));
        assert!(!job_is_up("not json", "prometheus"));
    }

    #[test]
    fn http_get_reads_status_and_body() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            // The whole request head, however many reads it takes.
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            while !buf.ends_with(b"\r\n\r\n") {
                let n = c.read(&mut chunk).unwrap();
                assert!(n > 0, "{:?}", String::from_utf8_lossy(&buf));
                buf.extend_from_slice(&chunk[..n]);
            }
            assert!(buf.starts_with(b"GET /-/ready HTTP/1.0\r\n"));
            c.write_all(b"HTTP/1.0 200 OK\r\nX: y\r\n\r\nReady.\n")
                .unwrap();
        });
        assert_eq!(
            http_get(addr, "/-/ready").unwrap(),
            (200, "Ready.\n".into())
        );
        server.join().unwrap();
    }
}
