//! `cargo xtask arm64`: gotrace on arm64 for real. Cross-builds `gotrace`
//! for aarch64 (static, the arm64 eBPF object embedded) and the fixtures
//! with `GOARCH=arm64`, boots Debian 12's arm64 kernel under
//! `qemu-system-aarch64` (TCG, `-M virt -cpu max`) and runs the scenarios
//! there, then the same scenarios on the host (amd64 builds of the same
//! fixtures), and checks both against each other and against the fixtures'
//! counts (see [`crate::vm`]).
//!
//! The cross toolchain comes from rustup (`aarch64-unknown-linux-gnu`) and
//! Debian (`gcc-aarch64-linux-gnu`, `libc6-dev-arm64-cross`, to link);
//! the kernel (`linux-image-*-arm64`) and busybox (`busybox-static`, arm64)
//! are downloaded once into `<tools>/arm64`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};

use crate::build::build;
use crate::setup::{ensure_bpf_linker, ensure_nightly};
use crate::util::{cargo, cmd, installing, probe, require_root, run, skipped, target_dir};
use crate::vm::{
    Accel, Machine, Outcome, Scenario, Sides, build_fixture, ensure_debian_packages, run_guest,
    scenarios,
};

const RUST_TARGET: &str = "aarch64-unknown-linux-gnu";

const MACHINE: Machine = Machine {
    name: "arm64",
    debian_arch: "arm64",
    suite: "bookworm",
    kernel_metapackage: "linux-image-arm64",
    qemu: "qemu-system-aarch64",
    qemu_package: "qemu-system-arm",
    // pauth-impdef: pointer authentication with a cheap (not the
    // architected QARMA) algorithm; the guest kernel signs every return
    // address, and QARMA under TCG costs a large share of the run.
    tcg_args: &["-M", "virt", "-cpu", "max,pauth-impdef=on"],
    kvm_possible: false,
    console: "ttyAMA0",
    data_port: None,
    append: "",
    foreign: true,
    verifier_doc: false,
};

/// Every program kind (goroutine life, contexts, `time.newTimer` on Go
/// 1.26, `time.startTimer`/`stopTimer` on 1.21), the creation stack taken
/// at `newproc` entry (Go 1.21) and after `systemstack` (1.26), `--pid`, and
/// a stripped binary. `--pid` runs on Go 1.21, not 1.19 as under Linux 5.10:
/// see [`scenarios::LOCKS_PID_GO121`].
const SCENARIOS: &[Scenario] = &[
    scenarios::CHANRECV,
    scenarios::CHANRECV_STRIPPED,
    scenarios::CTXLEAK,
    scenarios::TICKERS,
    scenarios::LOCKS_PID_GO121,
];

pub fn arm64(args: &[String]) -> Result<()> {
    if let Some(a) = args.first() {
        bail!("unknown argument {a:?} (usage: arm64)");
    }
    require_root("cargo xtask arm64")?;
    ensure_nightly()?;
    ensure_bpf_linker()?;
    let outcome = run_suite()?;
    if outcome.failed > 0 {
        bail!(
            "arm64: {} of {} checks failed",
            outcome.failed,
            outcome.passed + outcome.failed
        );
    }
    Ok(())
}

/// Everything but the toolchain setup (done by the caller): used by
/// `cargo xtask arm64` and `cargo xtask test`.
pub fn run_suite() -> Result<Outcome> {
    let start = Instant::now();
    ensure_cross_toolchain()?;
    let guest_gotrace = cross_build()?;
    let host_gotrace = build()?;
    let work = target_dir().join(MACHINE.name);
    let guest_fixtures = work.join("fixtures-arm64");
    let host_fixtures = work.join("fixtures-host");
    for dir in [&guest_fixtures, &host_fixtures] {
        std::fs::create_dir_all(dir)?;
    }
    for s in SCENARIOS {
        build_fixture(s, &guest_fixtures, Some("arm64"))?;
        build_fixture(s, &host_fixtures, None)?;
    }
    let sides = Sides {
        guest_gotrace: &guest_gotrace,
        guest_fixtures: &guest_fixtures,
        host_gotrace: &host_gotrace,
        host_fixtures: &host_fixtures,
    };
    run_guest(&MACHINE, SCENARIOS, &sides, Accel::Tcg, start)
}

/// rustup's aarch64 target and Debian's cross linker and C library.
fn ensure_cross_toolchain() -> Result<()> {
    let installed = probe(cmd("rustup").args(["target", "list", "--installed"]))
        .is_some_and(|out| out.lines().any(|l| l.trim() == RUST_TARGET));
    if installed {
        skipped(format!("rust target {RUST_TARGET}"));
    } else {
        installing(format!("rust target {RUST_TARGET}"));
        run(cmd("rustup").args(["target", "add", RUST_TARGET]))?;
    }
    ensure_debian_packages(&["gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross"])
}

/// `gotrace` for aarch64, statically linked (the guest has no libc).
/// aya-build builds the embedded eBPF object for the crate's target
/// architecture (`CARGO_CFG_TARGET_ARCH`), so it is the arm64 one.
fn cross_build() -> Result<PathBuf> {
    run(cargo()
        .args([
            "build",
            "--release",
            "-p",
            "tracer",
            "--target",
            RUST_TARGET,
        ])
        .env(
            "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER",
            "aarch64-linux-gnu-gcc",
        )
        .env(
            "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
            "-C target-feature=+crt-static",
        ))?;
    let bin = target_dir().join(RUST_TARGET).join("release/gotrace");
    if !bin.exists() {
        bail!("cargo build succeeded but {} is missing", bin.display());
    }
    Ok(bin)
}
