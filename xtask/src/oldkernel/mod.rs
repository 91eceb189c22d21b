//! `cargo xtask oldkernel`: boots an older kernel (Debian 11's Linux 5.10,
//! older than CentOS Stream 9's 5.14) under qemu and runs gotrace inside it
//! against Go fixtures, then runs the same binaries on the host and asserts
//! that both reports agree and hold the fixtures' counts (see [`crate::vm`]).
//!
//! The kernel is `linux-image-*-cloud-amd64` from bullseye, cached in
//! `<tools>/oldkernel`; qemu is `qemu-system-x86` (KVM when it can boot a
//! stock kernel, else TCG); gotrace is the host's build with the shared
//! libraries it links. The console goes to the first serial port, the
//! results to the second.

use std::time::Instant;

use anyhow::{Result, bail};

use crate::build::build;
use crate::setup::{ensure_bpf_linker, ensure_nightly};
use crate::util::{require_root, target_dir};
use crate::vm::{Accel, Machine, Outcome, Scenario, Sides, build_fixture, run_guest, scenarios};

const MACHINE: Machine = Machine {
    name: "oldkernel",
    debian_arch: "amd64",
    suite: "bullseye",
    kernel_metapackage: "linux-image-cloud-amd64",
    qemu: "qemu-system-x86_64",
    qemu_package: "qemu-system-x86",
    tcg_args: &["-cpu", "max"],
    kvm_possible: true,
    console: "ttyS0",
    data_port: Some("ttyS1"),
    // A slow (TCG) guest on a busy host otherwise fails the IO-APIC timer
    // check and panics.
    append: "no_timer_check",
    foreign: false,
    verifier_doc: true,
};

/// Together these load every program kind gotrace attaches: goroutine life
/// (all), contexts and `time.newTimer` (ctxleak, Go 1.26), `time.startTimer`
/// and `stopTimer` (tickers, Go 1.21), and attaching to a running process
/// with the oldest supported Go (locks, Go 1.19, `--pid`); exiter checks
/// the ptrace hold at exit on this kernel, through a SIGKILL.
const SCENARIOS: &[Scenario] = &[
    scenarios::CHANRECV,
    scenarios::CTXLEAK,
    scenarios::EXITER_SIGKILL,
    scenarios::TICKERS,
    scenarios::LOCKS_PID,
];

pub fn oldkernel(args: &[String]) -> Result<()> {
    let mut accel = Accel::Auto;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--accel" => {
                accel = match it.next().map(String::as_str) {
                    Some("auto") => Accel::Auto,
                    Some("kvm") => Accel::Kvm,
                    Some("tcg") => Accel::Tcg,
                    other => bail!("--accel takes auto, kvm or tcg, not {other:?}"),
                }
            }
            other => bail!("unknown argument {other:?} (usage: oldkernel [--accel auto|kvm|tcg])"),
        }
    }
    require_root("cargo xtask oldkernel")?;
    ensure_nightly()?;
    ensure_bpf_linker()?;
    let outcome = run_suite(accel)?;
    if outcome.failed > 0 {
        bail!(
            "old kernel: {} of {} checks failed",
            outcome.failed,
            outcome.passed + outcome.failed
        );
    }
    Ok(())
}

/// Everything but the toolchain setup (done by the caller): used by
/// `cargo xtask oldkernel` and `cargo xtask test`.
pub fn run_suite(accel: Accel) -> Result<Outcome> {
    let start = Instant::now();
    let gotrace = build()?;
    let fixtures = target_dir().join("oldkernel/fixtures");
    std::fs::create_dir_all(&fixtures)?;
    for s in SCENARIOS {
        build_fixture(s, &fixtures, None)?;
    }
    let sides = Sides {
        guest_gotrace: &gotrace,
        guest_fixtures: &fixtures,
        host_gotrace: &gotrace,
        host_fixtures: &fixtures,
    };
    run_guest(&MACHINE, SCENARIOS, &sides, accel, start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_lists_every_scenario() {
        let s = crate::vm::scenario_script(SCENARIOS);
        for sc in SCENARIOS {
            assert!(s.contains(&sc.name()), "{}", sc.name());
        }
        assert!(crate::vm::init_script(&MACHINE, SCENARIOS).contains("locks-go1.19-pid"));
    }
}
