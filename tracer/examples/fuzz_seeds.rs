//! Writes the seed corpus of the fuzz targets in `fuzz/` (run by
//! `cargo xtask fuzz`):
//!
//! ```text
//! fuzz_seeds OUT_DIR [BINARY...]
//! ```
//!
//! builds `tracer/testdata/probe` with every installed Go toolchain (and,
//! with the newest, stripped, PIE and arm64 variants), cuts seeds from each
//! and from the given binaries into `OUT_DIR/<target>/`, and records a small
//! trace of a probe into `OUT_DIR/recording/`, next to a copy of that probe,
//! `OUT_DIR/recording-target`, to report it against.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use tracer::fuzzing::seeds;
use tracer::gobin::testutil::{BuildOpts, build_testdata, find_go};

const MINORS: [&str; 6] = ["1.19", "1.21", "1.23", "1.25", "1.26", "1.27"];

/// Probes built by every installed toolchain, and which one to record.
fn probes() -> (Vec<PathBuf>, Option<PathBuf>) {
    let installed: Vec<&str> = MINORS
        .into_iter()
        .filter(|m| find_go(m).is_some())
        .collect();
    let mut builds: Vec<(&str, BuildOpts<'_>)> = installed
        .iter()
        .map(|m| (*m, BuildOpts::default()))
        .collect();
    let newest = installed.iter().rev().find(|m| **m <= "1.26").copied();
    if let Some(newest) = newest {
        for opts in [
            BuildOpts {
                args: &["-ldflags=-s -w"],
                env: &[],
            },
            BuildOpts {
                args: &["-buildmode=pie"],
                env: &[],
            },
            BuildOpts {
                args: &[],
                env: &[("GOARCH", "arm64"), ("CGO_ENABLED", "0")],
            },
        ] {
            builds.push((newest, opts));
        }
    }
    let built = builds
        .into_iter()
        .filter_map(|(minor, opts)| match build_testdata("probe", minor, opts) {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("fuzz_seeds: skipping Go {minor} {opts:?}: {e}");
                None
            }
        })
        .collect();
    let recorded = newest.and_then(|m| build_testdata("probe", m, BuildOpts::default()).ok());
    (built, recorded)
}

fn run(out: &Path, extra: &[PathBuf]) -> Result<(), String> {
    let (mut binaries, recorded) = probes();
    binaries.extend_from_slice(extra);
    let mut written = 0;
    for seed in seeds::synthetic() {
        let dir = out.join(seed.target);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = dir.join(format!("seed-{}", seed.name));
        std::fs::write(&path, &seed.bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        written += 1;
    }
    for bin in &binaries {
        let name = bin
            .file_name()
            .map_or_else(|| "binary".into(), |n| n.to_string_lossy().into_owned());
        for seed in seeds::from_binary(bin)? {
            let dir = out.join(seed.target);
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let path = dir.join(format!("seed-{name}-{}", seed.name));
            std::fs::write(&path, &seed.bytes).map_err(|e| format!("{}: {e}", path.display()))?;
            written += 1;
        }
    }
    if let Some(probe) = recorded {
        let target = out.join("recording-target");
        std::fs::copy(&probe, &target).map_err(|e| format!("{}: {e}", target.display()))?;
        let dir = out.join("recording");
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        seeds::recording(&target, &dir.join("seed-probe"))?;
        written += 1;
    }
    println!(
        "fuzz_seeds: {written} seeds from {} binaries in {}",
        binaries.len(),
        out.display()
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let Some((out, extra)) = args.split_first() else {
        eprintln!("usage: fuzz_seeds OUT_DIR [BINARY...]");
        return ExitCode::from(2);
    };
    match run(out, extra) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fuzz_seeds: {e}");
            ExitCode::FAILURE
        }
    }
}
