//! `gotrace agent`: a long-running watch over the Go processes of a host,
//! without probes. [`discover`] finds the processes, [`watch`] reads one
//! (the snapshot path, the leak proof), [`host`] runs the passes and
//! publishes, [`metrics`], [`profile`] and [`http`] serve what was
//! published. The command (`cmd::agent`) only parses and prints.
//!
//! Memory is bounded whatever the targets do: at most
//! [`Config::max_processes`] processes are watched, and per process at
//! most [`watch::Limits::max_sites`] label sets per metric,
//! [`watch::Limits::max_groups`] groups (each with at most
//! [`watch::Limits::max_goids`] goids) are kept between passes.

pub mod discover;
pub mod host;
pub mod http;
pub mod metrics;
pub mod profile;
pub mod watch;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use discover::Found;
use watch::{ErrorKind, Limits};

/// Every error kind, so each counter is exposed from 0.
pub const ERROR_KINDS: [ErrorKind; 7] = [
    ErrorKind::Gone,
    ErrorKind::NotGo,
    ErrorKind::UnsupportedGo,
    ErrorKind::Permission,
    ErrorKind::Read,
    ErrorKind::Proof,
    ErrorKind::ProcessCap,
];

/// What to watch and how.
#[derive(Debug)]
pub struct Config {
    pub listen: SocketAddr,
    /// Watch these PIDs...
    pub pids: Vec<u32>,
    /// ... and the processes whose executable's name matches. Neither:
    /// every Go process.
    pub pattern: Option<regex::Regex>,
    pub interval: Duration,
    pub prove_every: Duration,
    pub max_processes: usize,
    /// Passes take at most this percent of one core (the interval is
    /// stretched otherwise).
    pub max_cpu_percent: u32,
    /// Add a `pid` label to every process's series.
    pub pid_label: bool,
    pub limits: Limits,
    pub http: http::HttpLimits,
}

impl Config {
    /// Whether --pid or --match named what to watch.
    pub fn explicit(&self) -> bool {
        !self.pids.is_empty() || self.pattern.is_some()
    }

    /// Whether the process `f` is one to watch (if it is Go).
    pub fn selects(&self, f: &Found) -> bool {
        if !self.explicit() {
            return f.id.pid != std::process::id();
        }
        self.pids.contains(&f.id.pid) || self.pattern.as_ref().is_some_and(|r| r.is_match(&f.name))
    }
}

/// An agent with its listening socket bound.
pub struct Agent {
    cfg: Arc<Config>,
    listener: std::net::TcpListener,
}

impl Agent {
    pub fn bind(cfg: Config) -> std::io::Result<Agent> {
        let listener = std::net::TcpListener::bind(cfg.listen)?;
        listener.set_nonblocking(true)?;
        Ok(Agent {
            cfg: Arc::new(cfg),
            listener,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Watches and serves until `stop` resolves; returns once the watching
    /// thread finished its pass.
    pub async fn run(self, stop: impl std::future::Future<Output = ()>) -> std::io::Result<()> {
        let shared: host::Shared = Default::default();
        let halt = Arc::new(AtomicBool::new(false));
        let worker = {
            let host = host::Host::new(Arc::clone(&self.cfg), Arc::clone(&shared));
            let halt = Arc::clone(&halt);
            std::thread::Builder::new()
                .name("gotrace-agent".into())
                .spawn(move || host.run(halt))?
        };
        let server = Arc::new(http::Server {
            shared,
            stats: Arc::new(Mutex::new(metrics::HttpStats::default())),
            limits: self.cfg.http,
            pid_label: self.cfg.pid_label,
        });
        let listener = tokio::net::TcpListener::from_std(self.listener)?;
        tokio::select! {
            () = http::serve(listener, server) => {}
            () = stop => {}
        }
        halt.store(true, Ordering::Relaxed);
        let _ = tokio::task::spawn_blocking(move || worker.join()).await;
        Ok(())
    }
}
