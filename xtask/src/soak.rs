//! `cargo xtask soak [--duration 10m] [--rate 5000] [--interval 5s]`: traces
//! the `busy` fixture (a context and a goroutine per request, leak-free) for
//! a long time and records gotrace's resident memory as it goes. Memory must
//! stay flat: the run fails if the last third of the samples sits more than
//! 5 % (and 4 MiB) above the first third after warm-up. Writes
//! `target/soak/soak.md` and `soak.json`.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::build::build;
use crate::setup::{ensure_bpf_linker, ensure_go, ensure_nightly, go_env, newest_go};
use crate::util::{cmd, require_root, run, target_dir, workspace_root};

struct Options {
    duration: Duration,
    rate: u32,
    interval: Duration,
}

fn parse_duration(s: &str) -> Result<Duration> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().with_context(|| format!("bad duration {s:?}"))?;
    Ok(match unit {
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => bail!("bad duration {s:?} (use s, m or h)"),
    })
}

fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options {
        duration: Duration::from_secs(600),
        rate: 5000,
        interval: Duration::from_secs(5),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--duration" => o.duration = parse_duration(val()?)?,
            "--interval" => o.interval = parse_duration(val()?)?,
            "--rate" => o.rate = val()?.parse().context("bad --rate")?,
            other => bail!("unknown soak option {other:?}"),
        }
    }
    Ok(o)
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn median(v: &[u64]) -> u64 {
    let mut v = v.to_vec();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

pub fn soak(args: &[String]) -> Result<()> {
    let o = parse(args)?;
    require_root("cargo xtask soak")?;
    ensure_nightly()?;
    ensure_bpf_linker()?;
    let version = newest_go();
    let go = ensure_go(version)?;
    let gotrace = build()?;
    let out = target_dir().join("soak");
    std::fs::create_dir_all(&out)?;
    let busy = out.join("busy");
    let mut go_build = cmd(&go);
    go_build
        .args(["build", "-o"])
        .arg(&busy)
        .arg("./busy")
        .current_dir(workspace_root().join("tests/fixtures"));
    go_env(&mut go_build, version);
    run(&mut go_build)?;

    let hold = o.duration + Duration::from_secs(60);
    let mut child = cmd(&gotrace)
        .arg("--duration")
        .arg(format!("{}s", o.duration.as_secs()))
        .arg("-o")
        .arg(&out)
        .arg("--")
        .arg(&busy)
        .env("GOTRACE_HOLD", format!("{}s", hold.as_secs()))
        .env("GOTRACE_RATE", o.rate.to_string())
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("starting gotrace")?;
    println!(
        "soak: tracing busy ({} requests/s) for {}s, sampling gotrace's RSS every {}s",
        o.rate,
        o.duration.as_secs(),
        o.interval.as_secs()
    );
    let start = Instant::now();
    let mut samples: Vec<(f64, u64)> = Vec::new();
    loop {
        if let Some(status) = child.try_wait()? {
            if !matches!(status.code(), Some(0 | 3)) {
                bail!("gotrace failed: {status}");
            }
            break;
        }
        if let Some(kib) = rss_kib(child.id()) {
            let t = start.elapsed().as_secs_f64();
            println!("  t={t:>6.0}s  rss={:>8} KiB", kib);
            samples.push((t, kib));
        }
        std::thread::sleep(o.interval);
    }
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json"))?)?;
    let events = report["trace"]["events_received"].as_u64().unwrap_or(0);
    let dropped = report["trace"]["kernel"]["dropped_total"]
        .as_u64()
        .unwrap_or(0);

    // Skip the first 10 % (maps and caches filling up), then compare thirds.
    let warm: Vec<u64> = samples
        .iter()
        .filter(|(t, _)| *t >= o.duration.as_secs_f64() * 0.1)
        .map(|(_, k)| *k)
        .collect();
    if warm.len() < 6 {
        bail!("too few samples ({}) for a verdict: run longer", warm.len());
    }
    let third = warm.len() / 3;
    let first = median(&warm[..third]);
    let last = median(&warm[warm.len() - third..]);
    let growth_kib = last.saturating_sub(first);
    let flat = growth_kib <= 4096 || (growth_kib as f64) <= first as f64 * 0.05;
    let md = format!(
        "# gotrace soak\n\n- workload: busy fixture, {} requests/s ({} events received, {} dropped)\n- duration: {} s, RSS sampled every {} s\n- RSS after warm-up: first third median {} KiB, last third median {} KiB (+{} KiB)\n- verdict: {}\n\n| t (s) | RSS (KiB) |\n|---:|---:|\n{}",
        o.rate,
        events,
        dropped,
        o.duration.as_secs(),
        o.interval.as_secs(),
        first,
        last,
        growth_kib,
        if flat { "flat" } else { "GROWING" },
        samples
            .iter()
            .map(|(t, k)| format!("| {t:.0} | {k} |\n"))
            .collect::<String>()
    );
    std::fs::write(out.join("soak.md"), &md)?;
    let json = serde_json::json!({
        "rate": o.rate, "duration_s": o.duration.as_secs(), "events": events, "dropped": dropped,
        "first_third_kib": first, "last_third_kib": last, "flat": flat,
        "samples": samples.iter().map(|(t, k)| serde_json::json!({"t_s": t, "rss_kib": k})).collect::<Vec<_>>(),
    });
    std::fs::write(out.join("soak.json"), serde_json::to_string_pretty(&json)?)?;
    println!(
        "soak: {events} events, RSS {first} KiB → {last} KiB: {} (target/soak/soak.md)",
        if flat { "flat" } else { "GROWING" }
    );
    if !flat {
        bail!("gotrace's memory grew by {growth_kib} KiB over the soak");
    }
    Ok(())
}
