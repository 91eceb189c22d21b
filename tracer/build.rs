//! Builds `tracer-ebpf` for the BPF target (nightly + bpf-linker, through
//! aya-build) and drops the object into OUT_DIR, where `probe::loader` embeds
//! it with `include_bytes_aligned!`.
//!
//! aya-build relays every line of the nested cargo build (about 200
//! `Compiling ...` lines on a first build) as a `cargo:warning`. This script
//! runs aya-build in a copy of itself, keeps that output, and passes on only
//! the `cargo:` instructions that are not warnings, plus the warnings that
//! are not cargo's progress lines; when the nested build fails, all of it.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};

/// Set in the copy of this script that runs aya-build.
const CHILD: &str = "TRACER_BUILD_EBPF_CHILD";

fn main() -> anyhow::Result<()> {
    if std::env::var_os(CHILD).is_some() {
        return build_ebpf();
    }
    let mut child = Command::new(std::env::current_exe()?)
        .env(CHILD, "1")
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().expect("piped stdout");
    let mut held = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        match line.strip_prefix("cargo:warning=") {
            Some(text) if is_progress(text) => held.push(line),
            _ => println!("{line}"),
        }
    }
    let status = child.wait()?;
    if !status.success() {
        for line in &held {
            println!("{line}");
        }
        anyhow::bail!("building the eBPF object failed ({status}): see the warnings above");
    }
    Ok(())
}

/// Cargo's status lines ("   Compiling x v1", "    Finished ..."): noise
/// unless the build fails.
fn is_progress(text: &str) -> bool {
    const VERBS: &[&str] = &[
        "Compiling",
        "Finished",
        "Fresh",
        "Checking",
        "Blocking",
        "Updating",
        "Locking",
        "Adding",
        "Downloading",
        "Downloaded",
    ];
    let word = text.split_whitespace().next().unwrap_or("");
    text.trim().is_empty() || VERBS.contains(&word)
}

fn build_ebpf() -> anyhow::Result<()> {
    let ebpf_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tracer-ebpf");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "tracer-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
}
