//! `cargo xtask build`: the one way every command builds gotrace.

use std::path::PathBuf;

use anyhow::{Result, bail};

use crate::util::{cargo, run, target_dir};

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
