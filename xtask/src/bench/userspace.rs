//! gotrace's own costs: replaying a recorded stream (decode + model +
//! report, one core), memory per live goroutine, attach time on a large
//! binary, and drops at a high event rate.

use std::io::BufReader;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use super::go_build;
use super::run::{field_f64, field_u64, wait_line};

#[derive(Clone, Debug, Default)]
pub struct Userspace {
    pub replay_events: u64,
    pub replay_wall_s: f64,
    pub replay_cpu_s: f64,
    /// The whole `gotrace report` (replay, symbols, every output file).
    pub report_wall_s: f64,
    pub report_cpu_s: f64,
    pub replay_max_rss_kib: u64,
    pub park_goroutines: u64,
    pub park_bytes_per_goroutine: f64,
    pub park_live_in_report: u64,
    pub attach_binary_mib: f64,
    pub attach_ms: Vec<f64>,
    pub rate_events_per_s: f64,
    pub rate_events: u64,
    pub rate_dropped: u64,
}

/// CPU seconds and max RSS (KiB) of children reaped so far.
fn children_usage() -> (f64, u64) {
    // SAFETY: getrusage fills the struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (tv(ru.ru_utime) + tv(ru.ru_stime), ru.ru_maxrss as u64)
}

fn report(dir: &Path) -> Result<Value> {
    Ok(serde_json::from_slice(&std::fs::read(
        dir.join("report.json"),
    )?)?)
}

/// Traces `busy` at `rate` requests/s for `secs`, optionally recording.
fn trace_busy(
    gotrace: &Path,
    busy: &Path,
    dir: &Path,
    rate: u32,
    secs: u64,
    ring: &str,
    record: Option<&Path>,
) -> Result<Value> {
    let mut c = Command::new(gotrace);
    c.args([
        "--ring-buffer",
        ring,
        "--duration",
        &format!("{secs}s"),
        "-o",
    ])
    .arg(dir);
    if let Some(r) = record {
        c.arg("--record").arg(r);
    }
    let status = c
        .arg("--")
        .arg(busy)
        .env("GOTRACE_HOLD", format!("{}s", secs + 30))
        .env("GOTRACE_RATE", rate.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if !matches!(status.code(), Some(0 | 3)) {
        bail!("gotrace on busy failed: {status}");
    }
    report(dir)
}

fn rss_anon_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

pub fn measure(gotrace: &Path, work: &Path, quick: bool) -> Result<Userspace> {
    let mut u = Userspace::default();
    let busy = work.join("busy");
    go_build("busy", &busy)?;

    // Drops at a high rate, default ring buffer.
    let dir = work.join("rate");
    let _ = std::fs::remove_dir_all(&dir);
    let r = trace_busy(
        gotrace,
        &busy,
        &dir,
        16_000,
        if quick { 5 } else { 10 },
        "8M",
        None,
    )?;
    u.rate_events = field_u64(&r, "/trace/events_received")?;
    u.rate_dropped = field_u64(&r, "/trace/kernel/dropped_total")?;
    u.rate_events_per_s = u.rate_events as f64 / field_f64(&r, "/trace/duration_s")?;
    println!(
        "  rate: {:.0} events/s, {} dropped",
        u.rate_events_per_s, u.rate_dropped
    );

    // Replay: record a long stream, then time `gotrace report` on it.
    let want: u64 = if quick { 1_000_000 } else { 10_000_000 };
    let rec = work.join("stream.gotrace");
    let dir = work.join("record");
    let _ = std::fs::remove_dir_all(&dir);
    let secs = (want as f64 / u.rate_events_per_s.max(10_000.0) * 1.15).ceil() as u64 + 2;
    let r = trace_busy(gotrace, &busy, &dir, 16_000, secs, "256M", Some(&rec))?;
    u.replay_events = field_u64(&r, "/trace/events_received")?;
    let out = work.join("replayed");
    let _ = std::fs::remove_dir_all(&out);
    let (cpu0, _) = children_usage();
    let t0 = Instant::now();
    let replay = Command::new(gotrace)
        .arg("report")
        .arg(&rec)
        .arg("-o")
        .arg(&out)
        .stdout(Stdio::null())
        .output()?;
    u.report_wall_s = t0.elapsed().as_secs_f64();
    let (cpu1, maxrss) = children_usage();
    if !matches!(replay.status.code(), Some(0 | 3)) {
        bail!("gotrace report failed: {}", replay.status);
    }
    u.report_cpu_s = cpu1 - cpu0;
    u.replay_max_rss_kib = maxrss;
    // "gotrace: replayed N events in W s (C s CPU, ...)": decode + model only.
    let err = String::from_utf8_lossy(&replay.stderr);
    let line = err
        .lines()
        .find(|l| l.starts_with("gotrace: replayed "))
        .context("no replay timing from gotrace report")?;
    let num = |after: &str| -> Option<f64> {
        line.split(after)
            .nth(1)?
            .split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .next()?
            .parse()
            .ok()
    };
    u.replay_wall_s = num(" events in ").unwrap_or(f64::NAN);
    u.replay_cpu_s = num("s (").unwrap_or(f64::NAN);
    let _ = std::fs::remove_file(&rec);
    println!(
        "  replay: {} events in {:.2}s CPU ({:.0} events/s); whole report {:.2}s CPU",
        u.replay_events,
        u.replay_cpu_s,
        u.replay_events as f64 / u.replay_cpu_s,
        u.report_cpu_s
    );

    // Memory per live goroutine.
    let bench = work.join("bench");
    let n: u64 = if quick { 100_000 } else { 1_000_000 };
    let trigger = work.join("park-trigger");
    let _ = std::fs::remove_file(&trigger);
    let mut park = Command::new(&bench)
        .args(["park", &n.to_string()])
        .env("GOTRACE_TRIGGER", &trigger)
        .env("GOTRACE_HOLD", "600s")
        .stdout(Stdio::piped())
        .spawn()?;
    let mut park_out = BufReader::new(park.stdout.take().context("stdout")?);
    wait_line(
        &mut park_out,
        "waiting for trigger",
        Duration::from_secs(30),
    )?;
    let dir = work.join("park");
    let _ = std::fs::remove_dir_all(&dir);
    let mut g = Command::new(gotrace)
        // --full: the memory of the model the events build.
        .args([
            "--full",
            "--ring-buffer",
            "1G",
            "--pid",
            &park.id().to_string(),
            "-o",
        ])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut g_err = BufReader::new(g.stderr.take().context("stderr")?);
    wait_line(&mut g_err, "attached", Duration::from_secs(60))?;
    std::thread::spawn(move || std::io::copy(&mut g_err, &mut std::io::sink()));
    std::thread::sleep(Duration::from_millis(500));
    let rss =
        |pid| rss_anon_kib(pid).with_context(|| format!("no RssAnon for gotrace (PID {pid})"));
    let before = rss(g.id())?;
    std::fs::write(&trigger, "go")?;
    wait_line(&mut park_out, "parked", Duration::from_secs(300))?;
    // Wait for gotrace to drain the ring buffer: RSS stable for 2 s.
    let mut last = 0;
    let mut stable = 0;
    for _ in 0..120 {
        std::thread::sleep(Duration::from_millis(500));
        let now = rss(g.id())?;
        stable = if now == last { stable + 1 } else { 0 };
        last = now;
        if stable >= 4 {
            break;
        }
    }
    u.park_goroutines = n;
    u.park_bytes_per_goroutine = (last.saturating_sub(before) * 1024) as f64 / n as f64;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(g.id() as i32, libc::SIGINT) };
    let _ = g.wait();
    let _ = park.kill();
    let _ = park.wait();
    u.park_live_in_report = field_u64(&report(&dir)?, "/goroutines/live_user")?;
    println!(
        "  memory: {:.0} bytes per live goroutine ({} live in the report)",
        u.park_bytes_per_goroutine, u.park_live_in_report
    );

    // Attach time on a large binary.
    let big = work.join("benchbig");
    go_build("benchbig", &big)?;
    u.attach_binary_mib = std::fs::metadata(&big)?.len() as f64 / (1 << 20) as f64;
    for _ in 0..if quick { 1 } else { 3 } {
        let trigger = work.join("big-trigger");
        let _ = std::fs::remove_file(&trigger);
        let mut target = Command::new(&big)
            .env("GOTRACE_TRIGGER", &trigger)
            .stdout(Stdio::piped())
            .spawn()?;
        let mut t_out = BufReader::new(target.stdout.take().context("stdout")?);
        wait_line(&mut t_out, "waiting for trigger", Duration::from_secs(30))?;
        let t0 = Instant::now();
        let mut g = Command::new(gotrace)
            // --full: every uprobe attached before "attached".
            .args(["--full", "--pid", &target.id().to_string(), "-o"])
            .arg(work.join("big"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut g_err = BufReader::new(g.stderr.take().context("stderr")?);
        wait_line(&mut g_err, "attached", Duration::from_secs(60))?;
        u.attach_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        // SAFETY: signalling our own child.
        unsafe { libc::kill(g.id() as i32, libc::SIGINT) };
        let _ = g.wait();
        let _ = target.kill();
        let _ = target.wait();
    }
    println!(
        "  attach: {:?} ms on {:.1} MiB",
        u.attach_ms, u.attach_binary_mib
    );
    Ok(u)
}
