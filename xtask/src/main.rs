//! Project automation for gotrace: `cargo xtask <command>`.

mod arm64;
mod bench;
mod build;
mod check;
mod demo;
mod fuzz;
mod layouts;
mod oldkernel;
mod setup;
mod soak;
mod util;
mod verifier;
mod vm;

use std::ffi::OsString;
use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  setup              install the nightly toolchain (+ rust-src), bpf-linker
                     and the Go toolchains the tests use (idempotent)
  build              cargo build --release -p tracer (eBPF object included)
  lint               rustfmt check, clippy on host crates and the eBPF crate
  test [-- ARGS]     setup, lint, build, then cargo test [ARGS] (needs root)
  demo               trace the leakyservice fixture and print its leak report
                     (needs root)
  layouts            regenerate tracer/data/runtime-layouts.json and
                     heap-layouts.json from DWARF
  check-table        write docs/verifier.md (each eBPF program's size and
                     verifier instruction count) from `gotrace check --json`
                     (needs root; oldkernel and test write it too)
  bench [--runs 5] [--quick]
                     overhead vs untraced, empty probes, bpftrace and
                     runtime/trace; replay rate, memory, attach time; the
                     leak proof at scale; writes target/bench/bench.md
                     (needs root)
  bench proof [--runs 5]
                     the leak proof alone: `snapshot --prove` on 100 000
                     goroutines and a 1 GiB heap (time, memory, leaked
                     count, the target's latency); writes
                     target/bench/proof.md (needs root)
  oldkernel [--accel auto|kvm|tcg]
                     boot Debian 11's Linux 5.10 under qemu, run gotrace in it
                     against Go fixtures and compare with the host's reports
                     (needs root; downloads the kernel once)
  arm64              cross-build gotrace and the fixtures for arm64, boot
                     Debian 12's arm64 kernel under qemu (TCG), run gotrace
                     in it and check its reports against the fixtures' counts
                     and the host's (needs root; downloads the kernel once)
  soak [--duration 10m] [--rate 5000] [--interval 5s]
                     trace a busy fixture for a long time; fail if gotrace's
                     memory grows (needs root)
  fuzz [--time SECS] [TARGET...]
                     run the cargo-fuzz targets (default: all, 60 s each;
                     elf_open pclntab buildinfo dwarf_layout recording),
                     seeded from freshly built Go binaries; fails on a crash

environment:
  GOTRACE_TOOLS      tools directory (default ~/.cache/gotrace)
  GOTRACE_SKIP_E2E   =1: without root, the end-to-end tests skip (and are
                     counted as skipped) instead of failing (never under CI=true)";

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let command = args.next();
    let rest: Vec<OsString> = args.collect();
    let command = command.as_ref().and_then(|c| c.to_str());

    let result = match command {
        Some("setup") if rest.is_empty() => setup::setup(),
        Some("build") if rest.is_empty() => build::build().map(|bin| {
            println!("built {}", bin.display());
        }),
        Some("lint") if rest.is_empty() => check::lint(),
        Some("test") => {
            // `cargo xtask test -- go1_26` forwards `go1_26` to cargo test.
            let forwarded = match rest.first() {
                Some(first) if first == "--" => &rest[1..],
                _ => &rest[..],
            };
            check::test(forwarded)
        }
        Some("demo") if rest.is_empty() => demo::demo(),
        Some("layouts") if rest.is_empty() => layouts::layouts(),
        Some("check-table") if rest.is_empty() => verifier::check_table(),
        Some("bench") => bench::bench(
            &rest
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>(),
        ),
        Some("oldkernel") => oldkernel::oldkernel(
            &rest
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>(),
        ),
        Some("arm64") => arm64::arm64(
            &rest
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>(),
        ),
        Some("soak") => soak::soak(
            &rest
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>(),
        ),
        Some("fuzz") => fuzz::fuzz(&rest),
        Some("help" | "-h" | "--help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
