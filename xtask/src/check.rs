//! `cargo xtask lint` and `cargo xtask test`.

use std::ffi::OsString;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};

use crate::build::build;
use crate::setup::setup;
use crate::util::{cargo, require_root, run, target_dir, tools_dir};
use crate::vm::Outcome;

/// rustfmt, clippy on the host crates, clippy on the eBPF crate. Runs all
/// three and fails if any of them failed.
pub fn lint() -> Result<()> {
    let checks: [(&str, &[&str]); 3] = [
        ("rustfmt", &["fmt", "--all", "--check"]),
        (
            "clippy (host crates)",
            // With the fuzz-only code (and the fuzz_seeds example it gates).
            &[
                "clippy",
                "--all-targets",
                "--features",
                "tracer/fuzzing",
                "--",
                "-D",
                "warnings",
            ],
        ),
        (
            "clippy (eBPF crate)",
            &[
                "+nightly",
                "clippy",
                "-p",
                "tracer-ebpf",
                "--release",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--",
                "-D",
                "warnings",
            ],
        ),
    ];
    let mut failed = Vec::new();
    for (name, args) in checks {
        if let Err(e) = run(cargo().args(args)) {
            eprintln!("lint: {name} failed: {e:#}");
            failed.push(name);
        }
    }
    // The arm64 register mapping must keep compiling (and linking: stack
    // limits differ) although it is not run here.
    let arm64 = cargo()
        .args([
            "+nightly",
            "build",
            "-p",
            "tracer-ebpf",
            "--release",
            "--target",
            "bpfel-unknown-none",
        ])
        .args(["-Z", "build-std=core"])
        .env("AYA_BPF_TARGET_ARCH", "aarch64")
        .env("CARGO_TARGET_DIR", target_dir().join("ebpf-arm64"))
        .status();
    if !matches!(arm64, Ok(s) if s.success()) {
        eprintln!("lint: eBPF build for arm64 failed");
        failed.push("eBPF build (arm64)");
    }
    if !failed.is_empty() {
        bail!("lint failed: {}", failed.join(", "));
    }
    println!("lint: ok");
    Ok(())
}

/// setup → lint → build → `cargo test [args]` with `GOTRACE_BIN` and
/// `GOTRACE_TOOLS` set → `oldkernel` (the fixtures under Linux 5.10) →
/// `arm64` (the fixtures on an emulated arm64 machine). A lint failure does
/// not stop the tests (so one run shows everything) but still fails the
/// command.
pub fn test(args: &[OsString]) -> Result<()> {
    require_root("cargo xtask test")?;
    let start = Instant::now();
    let mut summary: Vec<String> = Vec::new();
    let mut totals = None;
    let outcome = test_steps(args, &mut summary, &mut totals);
    if let Err(e) = &outcome {
        summary.push(format!("FAILED ({e:#})"));
    }
    println!(
        "xtask test summary: {} [{:.0}s]",
        summary.join(", "),
        start.elapsed().as_secs_f64()
    );
    // Last line: totals over every test binary, in the plain
    // "N passed, N failed" form (cargo's own last line is the doc-tests').
    if let Some(t) = totals {
        println!("tests: {t}");
    }
    outcome
}

fn test_steps(
    args: &[OsString],
    summary: &mut Vec<String>,
    totals_out: &mut Option<Totals>,
) -> Result<()> {
    setup()?;
    summary.push("setup ok".into());

    let lint = lint();
    summary.push(match &lint {
        Ok(()) => "lint ok".into(),
        Err(e) => format!("{e:#}"),
    });

    let bin = build()?;
    summary.push("build ok".into());

    // End-to-end tests that skip (GOTRACE_SKIP_E2E=1 without root) pass as
    // far as libtest knows; each lists itself here, to be counted as skipped.
    let skip_log = target_dir().join("e2e-skipped.log");
    let _ = std::fs::remove_file(&skip_log);
    let (mut totals, status) = run_tests(
        cargo()
            .arg("test")
            // Every test binary runs even when one fails, so one run shows
            // every failure.
            .arg("--no-fail-fast")
            .args(args)
            .env("GOTRACE_BIN", &bin)
            .env("GOTRACE_TOOLS", tools_dir())
            .env("GOTRACE_SKIP_LOG", &skip_log),
    )?;
    let skipped = std::fs::read_to_string(&skip_log).unwrap_or_default();
    totals.count_skips(skipped.lines().count() as u64);
    let failed = !status.success();
    let mut totals = Totals {
        failed: totals.failed.max(u64::from(failed)),
        ..totals
    };
    *totals_out = Some(totals);
    let tests = if failed {
        Err(anyhow::anyhow!("cargo test failed: {status}"))
    } else {
        summary.push("tests ok".into());
        Ok(())
    };

    // The same fixtures under Debian 11's Linux 5.10 in qemu, then on arm64
    // (Debian 12's arm64 kernel, emulated), about a minute each under TCG
    // once cached: each check counts as a test. Like lint,
    // they run even when cargo test failed, so one run shows everything;
    // not when the run was narrowed to some tests.
    let guests: [(&str, GuestRun); 2] = [
        ("old kernel", || {
            crate::oldkernel::run_suite(crate::vm::Accel::Auto)
        }),
        ("arm64", crate::arm64::run_suite),
    ];
    let mut errors: Vec<anyhow::Error> = tests.err().into_iter().collect();
    for (name, run_suite) in guests {
        if !args.is_empty() {
            summary.push(format!("{name} skipped (test arguments given)"));
            continue;
        }
        if let Err(e) = guest_step(name, run_suite(), summary, &mut totals) {
            errors.push(e);
        }
        *totals_out = Some(totals);
    }
    match errors.len() {
        0 => lint,
        1 => Err(errors.remove(0)),
        _ => bail!(
            "{}",
            errors
                .iter()
                .map(|e| format!("{e:#}"))
                .collect::<Vec<_>>()
                .join("; ")
        ),
    }
}

/// One qemu run of the fixtures (`oldkernel`, `arm64`).
type GuestRun = fn() -> Result<Outcome>;

/// Adds one guest run's checks to the totals and the summary.
fn guest_step(
    name: &str,
    outcome: Result<Outcome>,
    summary: &mut Vec<String>,
    totals: &mut Totals,
) -> Result<()> {
    match &outcome {
        Ok(o) => {
            totals.passed += o.passed;
            totals.failed += o.failed;
        }
        Err(_) => totals.failed += 1,
    }
    match outcome {
        Ok(o) if o.failed == 0 => {
            summary.push(format!("{name} ok ({} checks)", o.passed));
            Ok(())
        }
        Ok(o) => Err(anyhow::anyhow!("{name}: {} checks failed", o.failed)),
        Err(e) => Err(e.context(name.to_string())),
    }
}

#[derive(Clone, Copy, Default)]
struct Totals {
    passed: u64,
    failed: u64,
    /// Ignored by libtest, or skipped at run time (see `count_skips`).
    ignored: u64,
}

impl Totals {
    /// `n` tests that libtest counted as passed said they skipped.
    fn count_skips(&mut self, n: u64) {
        let n = n.min(self.passed);
        self.passed -= n;
        self.ignored += n;
    }

    /// Adds one `test result: ok. 3 passed; 0 failed; 1 ignored; ...` line.
    fn add(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split([';', '.']) {
            let mut words = part.split_whitespace();
            let (Some(n), Some(what)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

impl std::fmt::Display for Totals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} passed, {} failed, {} skipped",
            self.passed, self.failed, self.ignored
        )
    }
}

/// Runs cargo test, echoing its stdout while totalling its result lines.
fn run_tests(c: &mut Command) -> Result<(Totals, std::process::ExitStatus)> {
    use std::io::{BufRead as _, BufReader};
    crate::util::announce(c);
    let mut child = c
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("could not start cargo test")?;
    let mut totals = Totals::default();
    let stdout = child.stdout.take().context("cargo test stdout")?;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        totals.add(&line);
    }
    let status = child.wait()?;
    Ok((totals, status))
}

#[cfg(test)]
mod tests {
    use super::Totals;

    #[test]
    fn totals_from_cargo_lines() {
        let mut t = Totals::default();
        t.add("test result: ok. 38 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.75s");
        t.add("test result: FAILED. 1 passed; 3 failed; 0 ignored; 0 measured; 0 filtered out");
        t.add("running 3 tests");
        assert_eq!((t.passed, t.failed, t.ignored), (39, 3, 2));
        t.count_skips(9);
        assert_eq!((t.passed, t.failed, t.ignored), (30, 3, 11));
        assert_eq!(t.to_string(), "30 passed, 3 failed, 11 skipped");
    }
}
