//! `cargo xtask build`, `cargo xtask lint` and `cargo xtask test`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};

use crate::setup::setup;
use crate::util::{cargo, require_root, run, target_dir, tools_dir};

/// `cargo build --release -p tracer` (tracer/build.rs also builds the eBPF
/// object with nightly + bpf-linker). Returns the path of `gotrace`.
pub fn build() -> Result<PathBuf> {
    run(cargo().args(["build", "--release", "-p", "tracer"]))?;
    let bin = target_dir().join("release/gotrace");
    if !bin.exists() {
        bail!("cargo build succeeded but {} is missing", bin.display());
    }
    Ok(bin)
}

/// rustfmt, clippy on the host crates, clippy on the eBPF crate. Runs all
/// three and fails if any of them failed.
pub fn lint() -> Result<()> {
    let checks: [(&str, &[&str]); 3] = [
        ("rustfmt", &["fmt", "--all", "--check"]),
        (
            "clippy (host crates)",
            &["clippy", "--all-targets", "--", "-D", "warnings"],
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
    if !failed.is_empty() {
        bail!("lint failed: {}", failed.join(", "));
    }
    println!("lint: ok");
    Ok(())
}

/// setup → lint → build → `cargo test [args]` with `GOTRACE_BIN` and
/// `GOTRACE_TOOLS` set. A lint failure does not stop the tests (so one run
/// shows everything) but still fails the command.
pub fn test(args: &[OsString]) -> Result<()> {
    require_root("cargo xtask test")?;
    let start = Instant::now();
    let mut summary: Vec<String> = Vec::new();
    let outcome = test_steps(args, &mut summary);
    if let Err(e) = &outcome {
        summary.push(format!("FAILED ({e:#})"));
    }
    println!(
        "xtask test summary: {} [{:.0}s]",
        summary.join(", "),
        start.elapsed().as_secs_f64()
    );
    outcome
}

fn test_steps(args: &[OsString], summary: &mut Vec<String>) -> Result<()> {
    setup()?;
    summary.push("setup ok".into());

    let lint = lint();
    summary.push(match &lint {
        Ok(()) => "lint ok".into(),
        Err(e) => format!("{e:#}"),
    });

    let bin = build()?;
    summary.push("build ok".into());

    run(cargo()
        .arg("test")
        .args(args)
        .env("GOTRACE_BIN", &bin)
        .env("GOTRACE_TOOLS", tools_dir()))?;
    summary.push("tests ok".into());
    lint
}
