//! `gotrace agent`: checks the arguments, binds, says where it listens and
//! runs [`crate::agent`] until Ctrl-C or SIGTERM.

use std::time::Duration;

use anyhow::{Context as _, bail};

use super::Outcome;
use super::cli::AgentArgs;
use crate::agent::http::HttpLimits;
use crate::agent::watch::Limits;
use crate::agent::{Agent, Config};

/// Groups kept per process for report.json and the pprof profile.
const MAX_GROUPS: usize = 500;
/// Goids listed per group in report.json.
const MAX_GOIDS: usize = 10;

pub fn run(args: AgentArgs) -> anyhow::Result<Outcome> {
    if args.interval < Duration::from_millis(100) {
        bail!("--interval must be at least 100ms");
    }
    if !(1..=100).contains(&args.max_cpu) {
        bail!("--max-cpu must be between 1 and 100 (percent of one core)");
    }
    if args.max_processes == 0 || args.max_sites == 0 {
        bail!("--max-processes and --max-sites must be at least 1");
    }
    let pattern = args
        .pattern
        .as_deref()
        .map(regex::Regex::new)
        .transpose()
        .map_err(|e| {
            // regex's message spans lines (the pattern, a caret, the
            // error): one line here.
            let msg = e.to_string();
            anyhow::anyhow!(
                "invalid --match pattern: {}",
                msg.split_whitespace().collect::<Vec<_>>().join(" ")
            )
        })?;
    let cfg = Config {
        listen: args.listen,
        pids: args.pids,
        pattern,
        interval: args.interval,
        prove_every: args.prove_every,
        max_processes: args.max_processes,
        max_cpu_percent: args.max_cpu,
        pid_label: args.pid_label,
        limits: Limits {
            max_sites: args.max_sites,
            max_groups: MAX_GROUPS,
            max_goids: MAX_GOIDS,
            leak_threshold: args.leak_threshold,
        },
        http: HttpLimits {
            max_connections: 64,
            max_request_bytes: 8 << 10,
            timeout: Duration::from_secs(10),
        },
    };
    let listen = cfg.listen;
    let agent = Agent::bind(cfg).with_context(|| format!("cannot listen on {listen}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    eprintln!(
        "gotrace agent: listening on http://{} (/metrics, /debug/pprof/goroutine, /report.json)",
        agent.local_addr()?
    );
    runtime.block_on(agent.run(stop_signal()))?;
    eprintln!("gotrace agent: stopped");
    Ok(Outcome::listing())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
