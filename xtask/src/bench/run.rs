//! One measurement: a workload under one tracing configuration.
//!
//! Every workload waits at a trigger file after printing "ready", so the
//! tracer attaches before the measured part starts: gotrace's default
//! (`--pid`: goroutine samples, creation/exit probes only when they fit the
//! 3 % budget), gotrace `--sampled` (no probe), gotrace `--full` (every
//! probe), the same uprobes with a do-nothing program
//! (`--bench-empty-probes`, the floor of this kernel), bpftrace counting
//! hits at the same points, or Go's own runtime/trace (started by the
//! workload at the trigger). The configurations that trap on every event
//! run a shorter workload than the others (`Env::ops`): the comparison is
//! per operation.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Config {
    None,
    Default,
    Sampled,
    /// `gotrace agent` watching the workload (1 s interval, a proof every
    /// 5 s: busier than its defaults of 15 s and 60 s).
    Agent,
    Full,
    EmptyProbes,
    Bpftrace,
    RuntimeTrace,
}

impl Config {
    /// Those whose cost is within the machine's noise: measured in more
    /// rounds.
    pub const CHEAP: [Config; 4] = [
        Config::None,
        Config::Default,
        Config::Sampled,
        Config::Agent,
    ];

    pub const ALL: [Config; 8] = [
        Config::None,
        Config::Default,
        Config::Sampled,
        Config::Agent,
        Config::Full,
        Config::EmptyProbes,
        Config::Bpftrace,
        Config::RuntimeTrace,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Config::None => "untraced",
            Config::Default => "gotrace --pid (default)",
            Config::Sampled => "gotrace --sampled",
            Config::Agent => "gotrace agent",
            Config::Full => "gotrace --full",
            Config::EmptyProbes => "empty probes (floor)",
            Config::Bpftrace => "bpftrace (count)",
            Config::RuntimeTrace => "Go runtime/trace",
        }
    }

    /// Traps on every event: runs the shorter workload.
    pub fn traps(self) -> bool {
        matches!(self, Config::Full | Config::EmptyProbes | Config::Bpftrace)
    }

    /// A gotrace configuration (its report.json is read).
    fn gotrace(self) -> bool {
        matches!(self, Config::Default | Config::Sampled | Config::Full)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Workload {
    Http,
    Churn,
    PingPong,
}

impl Workload {
    pub const ALL: [Workload; 3] = [Workload::Http, Workload::Churn, Workload::PingPong];

    pub fn name(self) -> &'static str {
        match self {
            Workload::Http => "http",
            Workload::Churn => "churn",
            Workload::PingPong => "pingpong",
        }
    }

    pub fn unit(self) -> &'static str {
        match self {
            Workload::Http => "requests",
            Workload::Churn => "goroutines",
            Workload::PingPong => "round trips",
        }
    }
}

/// What one run measured.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Operations per second (requests, goroutines, round trips).
    pub ops_per_s: f64,
    /// CPU seconds the target spent per operation (user + system, which
    /// includes the uprobe traps and the eBPF programs).
    pub cpu_per_op_s: f64,
    /// Events gotrace received and dropped (gotrace runs only).
    pub events: Option<u64>,
    pub dropped: Option<u64>,
    /// The CPU gotrace estimated its probes added to the target, per
    /// operation, in seconds (gotrace runs with probes).
    pub estimated_per_op_s: Option<f64>,
    /// The round it belongs to: compared with the untraced run of the
    /// same round.
    pub round: usize,
    /// The tracer's own CPU during the measured part, in % of one core
    /// (on a 2-core machine it competes with the target for the CPUs).
    pub tracer_cpu_pct: Option<f64>,
}

pub struct Env<'a> {
    pub gotrace: &'a Path,
    pub bench_bin: &'a Path,
    pub work: &'a Path,
    /// Operations per workload, under the configurations that trap on
    /// every event (`_n`) and under the others (`_long`).
    pub churn_n: u64,
    pub pingpong_n: u64,
    pub http_n: u64,
    pub churn_long: u64,
    pub pingpong_long: u64,
    pub http_long: u64,
    pub http_conns: u64,
    /// The bpftrace script counting hits at gotrace's probe points.
    pub bpftrace_script: &'a Path,
}

impl Env<'_> {
    /// Operations of `w` under `c`.
    pub fn ops(&self, w: Workload, c: Config) -> u64 {
        match (w, c.traps()) {
            (Workload::Http, true) => self.http_n,
            (Workload::Churn, true) => self.churn_n,
            (Workload::PingPong, true) => self.pingpong_n,
            (Workload::Http, false) => self.http_long,
            (Workload::Churn, false) => self.churn_long,
            (Workload::PingPong, false) => self.pingpong_long,
        }
    }
}

/// Reads lines from `out` until one contains `needle`; returns that line.
pub fn wait_line(out: &mut impl BufRead, needle: &str, timeout: Duration) -> Result<String> {
    let start = Instant::now();
    let mut line = String::new();
    while start.elapsed() < timeout {
        line.clear();
        if out.read_line(&mut line)? == 0 {
            bail!("stream ended before {needle:?}");
        }
        if line.contains(needle) {
            return Ok(line.trim().to_string());
        }
    }
    bail!("timed out waiting for {needle:?}")
}

struct Tracer {
    child: Child,
    config: Config,
    /// Its CPU time when the measured part began.
    cpu0: Option<f64>,
    out_dir: PathBuf,
    /// bpftrace's stdout, collected until it exits.
    stdout: Option<std::thread::JoinHandle<String>>,
}

impl Tracer {
    /// Its CPU since the measured part began, in % of one core over
    /// `wall_s`.
    fn cpu_pct(&self, wall_s: f64) -> Option<f64> {
        let now = proc_cpu_s(self.child.id()).ok()?;
        Some(100.0 * (now - self.cpu0?) / wall_s)
    }

    /// Ends the tracer (bpftrace needs a SIGINT; gotrace ends by itself when
    /// the target exits) and reads gotrace's counters: events, drops, and
    /// the CPU its probes added by its own estimate (seconds).
    fn finish(mut self) -> Result<(Option<u64>, Option<u64>, Option<f64>)> {
        if matches!(self.config, Config::Bpftrace | Config::Agent) {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait()? {
                if self.config != Config::Bpftrace && !matches!(status.code(), Some(0 | 3)) {
                    let mut err = String::new();
                    if let Some(mut e) = self.child.stderr.take() {
                        let _ = e.read_to_string(&mut err);
                    }
                    bail!("{} failed: {status}\n{err}", self.config.name());
                }
                break;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("{} did not stop", self.config.name());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(out) = self.stdout.take() {
            let text = out.join().unwrap_or_default();
            let hits = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("@hits: "))
                .and_then(|n| n.trim().parse().ok());
            if hits.is_none() {
                bail!("bpftrace counted nothing:\n{text}");
            }
            // Counting into a map loses nothing it could report: no drop
            // figure, rather than a made-up 0.
            return Ok((hits, None, None));
        }
        if !self.config.gotrace() {
            return Ok((None, None, None));
        }
        let r: Value = serde_json::from_slice(&std::fs::read(self.out_dir.join("report.json"))?)?;
        let estimated = r
            .pointer("/trace/budget/added_cpu_ms")
            .and_then(Value::as_f64)
            .map(|ms| ms / 1e3);
        Ok((
            Some(field_u64(&r, "/trace/events_received")?),
            r.pointer("/trace/kernel/dropped_total")
                .and_then(Value::as_u64),
            estimated,
        ))
    }
}

fn attach(env: &Env<'_>, config: Config, pid: u32, bin: &Path) -> Result<Option<Tracer>> {
    let out_dir = env.work.join(format!("out-{pid}"));
    std::fs::create_dir_all(&out_dir)?;
    let mut c = match config {
        Config::None | Config::RuntimeTrace => return Ok(None),
        Config::Default | Config::Sampled | Config::Full | Config::EmptyProbes => {
            let mut c = Command::new(env.gotrace);
            // The default ring buffer: the overhead a user gets.
            c.args(["--pid", &pid.to_string(), "-o"]).arg(&out_dir);
            match config {
                Config::EmptyProbes => c.arg("--bench-empty-probes"),
                Config::Sampled => c.arg("--sampled"),
                Config::Full => c.arg("--full"),
                _ => &mut c,
            };
            c.stdout(Stdio::null()).stderr(Stdio::piped());
            c
        }
        Config::Agent => {
            let mut c = Command::new(env.gotrace);
            c.args([
                "agent",
                "--pid",
                &pid.to_string(),
                "--listen",
                "127.0.0.1:0",
            ])
            .args(["--interval", "1s", "--prove-every", "5s"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
            c
        }
        Config::Bpftrace => {
            let mut c = Command::new("bpftrace");
            c.args(["-p", &pid.to_string()])
                .arg(env.bpftrace_script)
                .env("BPFTRACE_BIN", bin)
                .stdout(Stdio::piped())
                .stderr(Stdio::null());
            c
        }
    };
    let mut child = c
        .spawn()
        .with_context(|| format!("starting {}", config.name()))?;
    // gotrace says "attached" on stderr; bpftrace "Attaching N probes" on stdout.
    let mut stdout = None;
    let ready = if config == Config::Bpftrace {
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let r = wait_line(&mut out, "Attaching", Duration::from_secs(60));
        stdout = Some(std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        }));
        r
    } else {
        let mut err = BufReader::new(child.stderr.take().expect("stderr"));
        let ready = if config == Config::Agent {
            "listening"
        } else {
            "attached"
        };
        let r = wait_line(&mut err, ready, Duration::from_secs(60));
        std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
        r
    };
    if let Err(e) = ready {
        let _ = child.kill();
        return Err(e.context(format!("{} did not attach", config.name())));
    }
    // bpftrace prints "Attaching" before the last probes are in place.
    std::thread::sleep(Duration::from_millis(300));
    Ok(Some(Tracer {
        cpu0: proc_cpu_s(child.id()).ok(),
        child,
        config,
        out_dir,
        stdout,
    }))
}

/// A workload held at its trigger: the process, its stdout, the trigger
/// file and the address it listens on (server only).
struct Held {
    child: Child,
    out: BufReader<ChildStdout>,
    trigger: PathBuf,
    listening: Option<String>,
}

fn spawn_workload(env: &Env<'_>, config: Config, args: &[String]) -> Result<Held> {
    let trigger = env.work.join(format!("trigger-{}", std::process::id()));
    let _ = std::fs::remove_file(&trigger);
    let mut c = Command::new(env.bench_bin);
    c.args(args)
        .env("GOTRACE_TRIGGER", &trigger)
        .stdout(Stdio::piped())
        .stdin(Stdio::null());
    if config == Config::RuntimeTrace {
        c.env("BENCH_TRACE", env.work.join("runtime.trace"));
    }
    let mut child = c.spawn().context("starting the workload")?;
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut listening = None;
    let mut line = String::new();
    loop {
        line.clear();
        if out.read_line(&mut line)? == 0 {
            bail!("the workload exited before its trigger");
        }
        if let Some(a) = line.trim().strip_prefix("listening ") {
            listening = Some(a.to_string());
        }
        if line.contains("waiting for trigger") {
            break;
        }
    }
    Ok(Held {
        child,
        out,
        trigger,
        listening,
    })
}

/// Target CPU time (user + system) of a running process, in seconds.
fn proc_cpu_s(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = &stat[stat.rfind(')').context("bad stat")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    // SAFETY: trivial libc call.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks / hz)
}

pub fn measure(env: &Env<'_>, workload: Workload, config: Config) -> Result<Sample> {
    match workload {
        Workload::Churn | Workload::PingPong => {
            let n = env.ops(workload, config);
            let mode = workload.name();
            let args = [mode.to_string(), n.to_string()];
            let Held {
                mut child,
                mut out,
                trigger,
                ..
            } = spawn_workload(env, config, &args)?;
            let tracer = attach(env, config, child.id(), env.bench_bin)?;
            std::fs::write(&trigger, "go")?;
            let line = wait_line(&mut out, "\"mode\"", Duration::from_secs(600))?;
            let v: Value = serde_json::from_str(&line)?;
            let wall_s = field_f64(&v, "/wall_s")?;
            let tracer_cpu_pct = tracer.as_ref().and_then(|t| t.cpu_pct(wall_s));
            let status = child.wait()?;
            if !status.success() {
                bail!("workload {mode} failed: {status}");
            }
            let (events, dropped, estimated) = match tracer {
                Some(t) => t.finish()?,
                None => (None, None, None),
            };
            Ok(Sample {
                tracer_cpu_pct,
                ops_per_s: field_f64(&v, "/ops_per_s")?,
                cpu_per_op_s: field_f64(&v, "/cpu_s")? / n as f64,
                events,
                dropped,
                estimated_per_op_s: estimated.map(|s| s / n as f64),
                round: 0,
            })
        }
        Workload::Http => {
            let Held {
                child: mut server,
                mut out,
                trigger,
                listening,
            } = spawn_workload(env, config, &["server".into()])?;
            let addr = listening.context("the server printed no address")?;
            let pid = server.id();
            let tracer = attach(env, config, pid, env.bench_bin)?;
            std::fs::write(&trigger, "go")?;
            let cpu0 = proc_cpu_s(pid)?;
            let load_started = Instant::now();
            let n = env.ops(workload, config);
            let load = Command::new(env.bench_bin)
                .args(["load", &addr, &n.to_string(), &env.http_conns.to_string()])
                .stdin(Stdio::null())
                .output()
                .context("running the load generator")?;
            let cpu1 = proc_cpu_s(pid)?;
            let tracer_cpu_pct = tracer
                .as_ref()
                .and_then(|t| t.cpu_pct(load_started.elapsed().as_secs_f64()));
            // SAFETY: signalling our own child.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            let _ = wait_line(&mut out, "done", Duration::from_secs(30));
            let _ = server.wait();
            let (events, dropped, estimated) = match tracer {
                Some(t) => t.finish()?,
                None => (None, None, None),
            };
            if !load.status.success() {
                bail!(
                    "load generator failed: {}",
                    String::from_utf8_lossy(&load.stderr)
                );
            }
            let line = String::from_utf8_lossy(&load.stdout);
            let line = line
                .lines()
                .last()
                .context("the load generator printed nothing")?;
            let v: Value = serde_json::from_str(line)
                .with_context(|| format!("the load generator's last line: {line}"))?;
            Ok(Sample {
                tracer_cpu_pct,
                ops_per_s: field_f64(&v, "/ops_per_s")?,
                cpu_per_op_s: (cpu1 - cpu0) / n as f64,
                events,
                dropped,
                estimated_per_op_s: estimated.map(|s| s / n as f64),
                round: 0,
            })
        }
    }
}

/// The number at JSON `pointer` ("/trace/events_received") in `v`; an error
/// naming it when missing, so that no figure silently becomes 0.
pub fn field_f64(v: &Value, pointer: &str) -> Result<f64> {
    v.pointer(pointer)
        .and_then(Value::as_f64)
        .with_context(|| format!("no number at {pointer} in {}", short(v)))
}

/// Like [`field_f64`], for counts.
pub fn field_u64(v: &Value, pointer: &str) -> Result<u64> {
    v.pointer(pointer)
        .and_then(Value::as_u64)
        .with_context(|| format!("no count at {pointer} in {}", short(v)))
}

/// `v` as JSON, cut to a length an error message can carry.
fn short(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(300) {
        Some((at, _)) => format!("{}...", &s[..at]),
        None => s,
    }
}
