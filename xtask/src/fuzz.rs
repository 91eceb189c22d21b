//! `cargo xtask fuzz [--time SECS] [TARGET...]`: runs the cargo-fuzz
//! targets of `fuzz/` (gotrace's parsers of untrusted input) one after the
//! other, one libFuzzer job each.
//!
//! Corpora, per target:
//! - `target/fuzz/corpus/<target>`: the working corpus (new inputs land
//!   here, kept between runs, not committed);
//! - `fuzz/corpus/<target>`: the small committed corpus (read only);
//! - `target/fuzz/seeds/<target>`: written afresh on every run by the
//!   `fuzz_seeds` example from freshly built real Go binaries (every
//!   installed toolchain, stripped, PIE, arm64), small synthetic ones, and a
//!   recording made with the library.
//!
//! A crash, a timeout (hang) or an allocation over the limit fails the
//! command with the reproducer's path under `target/fuzz/artifacts/`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, Result, bail};

use crate::setup::ensure_nightly;
use crate::util::{cargo, cmd, installing, probe, run, run_status, skipped, target_dir};

pub const TARGETS: [&str; 6] = [
    "elf_open",
    "pclntab",
    "buildinfo",
    "dwarf_layout",
    "recording",
    "heap",
];
/// Seconds per target when `--time` is not given.
const DEFAULT_SECS: u64 = 60;
/// An input running longer than this is a hang.
const TIMEOUT_SECS: u64 = 30;
/// One allocation above this is a bug (inputs are at most a few MiB).
const MALLOC_LIMIT_MB: u64 = 128;

struct Options {
    secs: u64,
    targets: Vec<String>,
}

fn parse(args: &[OsString]) -> Result<Options> {
    let mut opts = Options {
        secs: DEFAULT_SECS,
        targets: Vec::new(),
    };
    let mut args = args.iter().map(|a| a.to_string_lossy().into_owned());
    while let Some(arg) = args.next() {
        if arg == "--time" {
            let secs = args.next().context("--time needs a number of seconds")?;
            opts.secs = secs
                .parse()
                .with_context(|| format!("--time {secs}: not a number of seconds"))?;
        } else if TARGETS.contains(&arg.as_str()) {
            opts.targets.push(arg);
        } else {
            bail!(
                "unknown fuzz target or option {arg:?} (targets: {})",
                TARGETS.join(", ")
            );
        }
    }
    if opts.targets.is_empty() {
        opts.targets = TARGETS.iter().map(|t| t.to_string()).collect();
    }
    Ok(opts)
}

/// `cargo fuzz`, installed with `cargo install cargo-fuzz --locked` if missing.
fn ensure_cargo_fuzz() -> Result<()> {
    if let Some(version) = probe(cmd("cargo").args(["fuzz", "--version"])) {
        skipped(version.trim());
        return Ok(());
    }
    installing("cargo-fuzz");
    run(cmd("cargo").args(["install", "cargo-fuzz", "--locked"]))
}

/// Writes `target/fuzz/seeds` afresh; returns it.
fn seed() -> Result<PathBuf> {
    let seeds = target_dir().join("fuzz/seeds");
    if seeds.exists() {
        std::fs::remove_dir_all(&seeds).with_context(|| format!("removing {}", seeds.display()))?;
    }
    run(cargo()
        .args([
            "run",
            "--release",
            "-p",
            "tracer",
            "--features",
            "fuzzing",
            "--example",
            "fuzz_seeds",
            "--",
        ])
        .arg(&seeds))?;
    Ok(seeds)
}

fn newest_file(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .max()
        .map(|(_, p)| p)
}

pub fn fuzz(args: &[OsString]) -> Result<()> {
    let opts = parse(args)?;
    let start = Instant::now();
    ensure_nightly()?;
    ensure_cargo_fuzz()?;
    let seeds = seed()?;
    let root = crate::util::workspace_root();
    let mut failed = Vec::new();
    for target in &opts.targets {
        let work = target_dir().join("fuzz/corpus").join(target);
        let artifacts = target_dir().join("fuzz/artifacts").join(target);
        for dir in [&work, &artifacts] {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let before = newest_file(&artifacts);
        let mut c = cargo();
        c.args(["+nightly", "fuzz", "run", "--debug-assertions", target])
            .arg(&work);
        for dir in [root.join("fuzz/corpus").join(target), seeds.join(target)] {
            if dir.is_dir() {
                c.arg(dir);
            }
        }
        c.arg("--")
            .arg(format!("-max_total_time={}", opts.secs))
            .arg(format!("-timeout={TIMEOUT_SECS}"))
            .arg(format!("-malloc_limit_mb={MALLOC_LIMIT_MB}"))
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .arg("-print_final_stats=1");
        if target == "recording" {
            c.env("GOTRACE_FUZZ_TARGET", seeds.join("recording-target"));
        }
        let status = run_status(&mut c)?;
        if status.success() {
            println!("fuzz: {target}: no crash in {}s", opts.secs);
            continue;
        }
        let found = newest_file(&artifacts).filter(|p| Some(p) != before.as_ref());
        match found {
            Some(input) => {
                println!(
                    "fuzz: {target}: FAILED, reproducer {}\n  reproduce: cargo +nightly fuzz run {target} {}\n  minimise:  cargo +nightly fuzz tmin {target} {}",
                    input.display(),
                    input.display(),
                    input.display()
                );
                failed.push(format!("{target} ({})", input.display()));
            }
            None => failed.push(format!("{target} (cargo fuzz failed: {status})")),
        }
    }
    println!("fuzz: done in {:.0}s", start.elapsed().as_secs_f64());
    if !failed.is_empty() {
        bail!("fuzzing found problems: {}", failed.join(", "));
    }
    Ok(())
}
