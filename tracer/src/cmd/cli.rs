//! Command-line interface.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// eBPF goroutine tracer for Go programs: attach to a running Go process (or
/// start one) and report which goroutines pile up, where they were created
/// and where they are stuck.
#[derive(Debug, Parser)]
#[command(name = "gotrace", version, about, long_about = None)]
#[command(args_conflicts_with_subcommands = true)]
#[command(
    after_help = "Examples:\n  sudo gotrace --pid 4242 --duration 30s\n  sudo gotrace -o out -- ./myservice --flag\n  sudo gotrace --pid 4242 --record trace.gotrace && gotrace report trace.gotrace\n  sudo gotrace top --pid 4242\n  sudo gotrace snapshot --pid 4242\n\nExit status: 0 no leak suspects, 3 leak suspects found, 1 error, 2 usage."
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Option<Command>,

    #[command(flatten)]
    pub trace: TraceArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Rebuild every output (summary, report.json, flame graphs, pprof,
    /// timeline) from a recording made with --record, without root.
    Report(ReportArgs),
    /// Live view: goroutines by state, the fastest-growing groups, contexts,
    /// events/s and drops, refreshed every second (plain lines when stdout
    /// is not a terminal).
    Top(TopArgs),
    /// List the uprobes gotrace would attach to BINARY (symbol+offset and
    /// program), without attaching anything.
    Probes(ProbesArgs),
    /// Print the goroutines a running Go process has right now, grouped
    /// like the pprof goroutine profile (debug=2), read from its memory
    /// without stopping it (no probes; root or CAP_SYS_PTRACE).
    Snapshot(SnapshotArgs),
    /// Check that this kernel can run gotrace: load every eBPF program
    /// (attaching nothing) and print what the verifier reports for each.
    Check(CheckArgs),
    /// Watch every Go process of the host (or those named) without probes
    /// and serve Prometheus metrics, pprof goroutine profiles and
    /// report.json over HTTP (loopback by default), until Ctrl-C/SIGTERM.
    Agent(AgentArgs),
}

/// What to trace and for how long.
#[derive(Debug, Args, Clone)]
pub struct TargetArgs {
    /// Trace this running process.
    #[arg(short, long, conflicts_with = "command")]
    pub pid: Option<u32>,

    /// Stop after this long (e.g. 30s, 2m, 500ms). Default: until Ctrl-C,
    /// SIGTERM or the target exits.
    #[arg(short, long, value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Size of the ring buffer the probes write events into (a power of two,
    /// at least one page: 64K, 8M, 1G). Events that find it full are dropped
    /// and counted; raise it if the summary shows drops.
    #[arg(long, value_name = "SIZE", value_parser = parse_ring_size, default_value = "8M")]
    pub ring_buffer: u32,

    /// Sampled mode: no probe at all. gotrace reads the target's goroutines
    /// from its memory every --sample-interval (never stopping it) and
    /// builds the report from those samples: exact groups and counts,
    /// growth per creation site, ages and blocked times as lower bounds;
    /// no contexts or timers. Needs no eBPF: CAP_SYS_PTRACE (and, for
    /// another user's process, CAP_DAC_READ_SEARCH).
    #[arg(long, conflicts_with_all = ["full", "max_overhead", "bench_empty_probes"])]
    pub sampled: bool,

    /// Full tracing: every probe (parks and wakeups, creations and exits,
    /// contexts, timers) from the start, whatever it costs, unless
    /// --max-overhead bounds it. The default with `-- CMD`; with --pid the
    /// default is goroutine samples plus the creation/exit probes when
    /// they fit the overhead budget.
    #[arg(long)]
    pub full: bool,

    /// Overhead budget: the CPU the probes may add to the target, in % of
    /// the CPU it uses itself (3 by default with --pid). Probes whose
    /// estimated cost goes over are detached, the hottest first, and
    /// goroutine samples carry on for what they gave. With --full, none
    /// unless given.
    #[arg(long, value_name = "PCT", value_parser = parse_percent)]
    pub max_overhead: Option<f64>,

    /// Shortest interval between goroutine samples (sampled mode, and
    /// after probes were shed); longer when reading the goroutines takes
    /// more than 1/50 of it.
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "1s")]
    pub sample_interval: Duration,

    /// Benchmark floor: attach a do-nothing program at every probe point
    /// (no events, no report content). Used by `cargo xtask bench`.
    #[arg(long, hide = true)]
    pub bench_empty_probes: bool,

    /// Print the probes' own diagnostics on stderr (a read of the target's
    /// memory failed, a path skipped, the ring buffer full). Also on with
    /// RUST_LOG=tracer_ebpf=debug. Costs nothing when off.
    #[arg(long)]
    pub debug_probes: bool,

    /// Do not run the leak proof at the end of the trace (by default the
    /// parked goroutines that nothing reachable can wake are proven leaked
    /// from the target's memory; the report then leads with them).
    #[arg(long)]
    pub no_prove: bool,

    /// Command to start and trace from its first goroutine (after `--`).
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// How the outputs are built.
#[derive(Debug, Args, Clone)]
pub struct ReportOptions {
    /// Goroutines parked at least this long are leak suspects (default 5s;
    /// `report` defaults to the recorded trace's threshold).
    #[arg(long, value_parser = parse_duration)]
    pub leak_threshold: Option<Duration>,

    /// Print every context's cancel-propagation tree in the summary (the
    /// trees are always in report.json).
    #[arg(long)]
    pub contexts: bool,
}

impl TargetArgs {
    /// Whether the trace ends with the leak proof.
    pub fn prove(&self) -> bool {
        !self.no_prove && !self.bench_empty_probes
    }
}

#[derive(Debug, Args, Clone)]
pub struct TraceArgs {
    #[command(flatten)]
    pub target: TargetArgs,

    /// Directory for report.json and the other outputs (created if missing).
    #[arg(short, long, default_value = ".")]
    pub output: PathBuf,

    /// Also write the raw event stream (and the stacks it references) to
    /// FILE, for `gotrace report FILE` later or on another machine.
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,

    #[command(flatten)]
    pub report: ReportOptions,
}

#[derive(Debug, Args, Clone)]
pub struct ReportArgs {
    /// A recording written by `gotrace --record FILE`.
    pub file: PathBuf,

    /// Directory for report.json and the other outputs (created if missing).
    #[arg(short, long, default_value = ".")]
    pub output: PathBuf,

    /// The traced binary, when it is no longer at the recorded path (its
    /// build id must match the recording's).
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,

    #[command(flatten)]
    pub report: ReportOptions,
}

#[derive(Debug, Args, Clone)]
pub struct ProbesArgs {
    /// A Go executable (for a running process: /proc/PID/exe).
    pub binary: PathBuf,
}

#[derive(Debug, Args, Clone)]
pub struct CheckArgs {
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,

    /// Load the programs with their diagnostics on (as `--debug-probes`
    /// runs them).
    #[arg(long)]
    pub debug_probes: bool,
}

#[derive(Debug, Args, Clone)]
pub struct TopArgs {
    #[command(flatten)]
    pub target: TargetArgs,

    /// Also write the usual outputs to this directory when the view ends.
    #[arg(short, long)]
    pub output: Option<PathBuf>,

    #[command(flatten)]
    pub report: ReportOptions,
}

#[derive(Debug, Args, Clone)]
pub struct SnapshotArgs {
    /// The running Go process.
    #[arg(short, long)]
    pub pid: u32,

    /// Print JSON (every group with all its goids) instead of text.
    #[arg(long)]
    pub json: bool,

    /// Also show the runtime's own goroutines (GC workers, finalizer...).
    #[arg(long)]
    pub all: bool,

    /// Prove leaks: find the parked goroutines that nothing reachable can
    /// ever wake (two passes over the process's memory; it keeps running).
    /// Exit status 3 when a leak is proven.
    #[arg(long)]
    pub prove: bool,
}

/// Where the agent listens unless told otherwise: loopback only.
pub const AGENT_LISTEN: &str = "127.0.0.1:9977";

#[derive(Debug, Args, Clone)]
pub struct AgentArgs {
    /// Address to serve HTTP on. The endpoints show function names and
    /// source paths of the watched programs: keep it on loopback or behind
    /// a firewall.
    #[arg(long, value_name = "ADDR", default_value = AGENT_LISTEN)]
    pub listen: std::net::SocketAddr,

    /// Watch this process (repeatable).
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,

    /// Watch the processes whose executable's base name matches REGEX (as
    /// processes start, restart and exit). Without --pid and --match:
    /// every Go process.
    #[arg(long = "match", value_name = "REGEX")]
    pub pattern: Option<String>,

    /// How often to look for processes and read their goroutines.
    #[arg(long, value_parser = parse_duration, default_value = "15s")]
    pub interval: Duration,

    /// How often to run the leak proof on each process (heavier: two passes
    /// over its heap).
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub prove_every: Duration,

    /// Goroutines parked at least this long and not proven leaked are
    /// counted as suspects.
    #[arg(long, value_parser = parse_duration, default_value = "10m")]
    pub leak_threshold: Duration,

    /// CPU budget: the passes (reads and proofs, one process after
    /// another on one thread) take at most this percent of one core; the
    /// interval is stretched to keep within it.
    #[arg(long, value_name = "PERCENT", default_value_t = 10)]
    pub max_cpu: u32,

    /// Processes watched at most (more are counted as errors, kind
    /// process_cap).
    #[arg(long, default_value_t = 64)]
    pub max_processes: usize,

    /// Label sets per process and metric (the sites with the most
    /// goroutines; the rest summed under site="other").
    #[arg(long, default_value_t = 50)]
    pub max_sites: usize,

    /// Add a `pid` label to every series (one series per process instead
    /// of one per executable name).
    #[arg(long)]
    pub pid_label: bool,
}

/// Default leak threshold of a live trace.
pub const DEFAULT_LEAK_THRESHOLD: Duration = Duration::from_secs(5);

/// Default overhead budget of `--pid` (percent of the target's own CPU);
/// README, Usage, says why.
pub const DEFAULT_MAX_OVERHEAD: f64 = 3.0;

/// "64K", "8M", "1G" or bytes: a power of two of at least one page.
pub fn parse_ring_size(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'K' | 'k')) => (&t[..i], 1u64 << 10),
        Some((i, 'M' | 'm')) => (&t[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?} (try 64K, 8M, 1G)"))?;
    let bytes = n.saturating_mul(mult);
    // SAFETY: trivial libc call.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    if !bytes.is_power_of_two() || bytes < page || bytes > 1 << 30 {
        return Err(format!(
            "ring buffer size {s:?} must be a power of two between {}K and 1G",
            page >> 10
        ));
    }
    Ok(bytes as u32)
}

/// "3", "0.5" or "3%": a percentage above 0 and at most 1000.
pub fn parse_percent(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let n: f64 = t
        .strip_suffix('%')
        .unwrap_or(t)
        .trim()
        .parse()
        .map_err(|_| format!("invalid percentage {s:?} (try 3 or 0.5)"))?;
    if !n.is_finite() || n <= 0.0 || n > 1000.0 {
        return Err(format!("percentage {s:?} must be above 0 and at most 1000"));
    }
    Ok(n)
}

/// The longest duration or threshold accepted: a year. Longer values are
/// typing mistakes, and they would overflow the clock arithmetic
/// (`Instant + Duration`, nanosecond counts in u64) further on.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// "30s", "500ms", "2m", "1h", "1.5s" or a bare number of seconds, at most
/// [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (try 30s, 500ms, 2m)"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1e3,
        "us" | "µs" => n / 1e6,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(format!(
                "invalid duration unit {unit:?} in {s:?} (use ms, s, m or h)"
            ));
        }
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("invalid duration {s:?}"));
    }
    if secs > MAX_DURATION.as_secs_f64() {
        return Err(format!(
            "duration {s:?} is too long (at most {}h, one year)",
            MAX_DURATION.as_secs() / 3600
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("1e9").is_err());
        assert!(parse_duration("1.2.3s").is_err());
        assert!(parse_duration("100000000000000000000000s").is_err());
        assert!(parse_duration("1000000000000000000000000000000000000000h").is_err());
        assert_eq!(parse_duration("8760h"), Ok(MAX_DURATION));
        assert!(parse_duration("8761h").is_err());
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn percentages() {
        assert_eq!(parse_percent("3"), Ok(3.0));
        assert_eq!(parse_percent("0.5%"), Ok(0.5));
        assert!(parse_percent("0").is_err());
        assert!(parse_percent("-1").is_err());
        assert!(parse_percent("NaN").is_err());
        assert!(parse_percent("x").is_err());
    }

    #[test]
    fn modes_exclude_each_other() {
        for args in [
            &["gotrace", "--sampled", "--full", "--pid", "1"][..],
            &["gotrace", "--sampled", "--max-overhead", "3", "--pid", "1"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?}");
        }
        let c = Cli::try_parse_from(["gotrace", "--sampled", "--pid", "1"]).unwrap();
        assert!(c.trace.target.sampled);
        assert_eq!(c.trace.target.sample_interval, Duration::from_secs(1));
        let c = Cli::try_parse_from(["gotrace", "--full", "--max-overhead", "5", "--pid", "1"]);
        assert_eq!(c.unwrap().trace.target.max_overhead, Some(5.0));
    }

    #[test]
    fn ring_sizes() {
        assert_eq!(parse_ring_size("8M"), Ok(8 << 20));
        assert_eq!(parse_ring_size("64k"), Ok(64 << 10));
        assert_eq!(parse_ring_size("1G"), Ok(1 << 30));
        assert!(parse_ring_size("3M").is_err());
        assert!(parse_ring_size("2G").is_err());
        assert!(parse_ring_size("1K").is_err());
        assert!(parse_ring_size("x").is_err());
    }

    #[test]
    fn pid_and_command_conflict() {
        assert!(Cli::try_parse_from(["gotrace", "--pid", "1", "--", "ls"]).is_err());
        let c = Cli::try_parse_from(["gotrace", "-o", "x", "--", "./prog", "-v"]).unwrap();
        assert_eq!(c.trace.target.command, vec!["./prog", "-v"]);
        assert!(c.cmd.is_none());
    }

    #[test]
    fn subcommands() {
        let c = Cli::try_parse_from(["gotrace", "report", "t.rec", "-o", "out"]).unwrap();
        let Some(Command::Report(r)) = c.cmd else {
            panic!("not report")
        };
        assert_eq!(r.file, PathBuf::from("t.rec"));
        let c = Cli::try_parse_from(["gotrace", "top", "--pid", "7"]).unwrap();
        let Some(Command::Top(t)) = c.cmd else {
            panic!("not top")
        };
        assert_eq!(t.target.pid, Some(7));
        // A program called "report" is still traceable after `--`.
        let c = Cli::try_parse_from(["gotrace", "--", "report"]).unwrap();
        assert!(c.cmd.is_none());
        assert!(Cli::try_parse_from(["gotrace", "--pid", "1", "report", "x"]).is_err());
        let c = Cli::try_parse_from(["gotrace", "snapshot", "--pid", "7", "--json"]).unwrap();
        let Some(Command::Snapshot(s)) = c.cmd else {
            panic!("not snapshot")
        };
        assert_eq!((s.pid, s.json, s.all), (7, true, false));
        assert!(Cli::try_parse_from(["gotrace", "snapshot"]).is_err());
        let c = Cli::try_parse_from(["gotrace", "agent", "--pid", "3", "--pid", "4"]).unwrap();
        let Some(Command::Agent(a)) = c.cmd else {
            panic!("not agent")
        };
        assert_eq!(a.pids, vec![3, 4]);
        assert_eq!(a.listen.to_string(), AGENT_LISTEN);
        assert!(a.listen.ip().is_loopback());
        assert_eq!(a.interval, Duration::from_secs(15));
    }
}
