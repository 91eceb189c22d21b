//! A Linux guest under qemu that runs gotrace against Go fixtures: what
//! `cargo xtask oldkernel` (Debian 11's Linux 5.10, amd64) and `cargo xtask
//! arm64` (Debian 12's arm64 kernel, emulated) share.
//!
//! Everything comes from Debian's packages and is cached in the tools
//! directory (`<tools>/<machine>`): the kernel (`linux-image-*`, downloaded
//! with a temporary sources list and unpacked, not installed), qemu and a
//! static busybox. The guest has no disk: its root is an initramfs (written
//! here, no `cpio` needed) holding busybox, `gotrace`, the fixtures (static
//! Go binaries), the scenario script and `/init`. The results (`gotrace
//! check --json` and each scenario's `report.json`, stdout, stderr and exit
//! status) come back base64-encoded on a serial port.
//!
//! The scenario script is the same shell script in the guest and on the
//! host, so both run each fixture the same way; each scenario's report is
//! compared with the host's and checked against the counts the fixture's
//! design gives.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

mod compare;
mod guest;
mod initramfs;
mod kernel;
pub mod scenarios;

pub use compare::*;
pub use guest::*;
pub use initramfs::*;
pub use kernel::*;

use crate::setup::{ensure_tools_dir, go_env};
use crate::util::{capture, cmd, installing, probe, run, skipped, workspace_root};

/// Debian's archive keys (package debian-archive-keyring), older releases'
/// included.
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// What differs between the emulated machines.
pub struct Machine {
    /// Names the cache (`<tools>/<name>`), the work directory
    /// (`target/<name>`) and the log lines.
    pub name: &'static str,
    /// Debian's architecture name (`amd64`, `arm64`).
    pub debian_arch: &'static str,
    /// The Debian release whose kernel is booted, and the metapackage that
    /// names its current kernel.
    pub suite: &'static str,
    pub kernel_metapackage: &'static str,
    /// The qemu binary and its Debian package.
    pub qemu: &'static str,
    pub qemu_package: &'static str,
    /// qemu arguments choosing the board and CPU under TCG.
    pub tcg_args: &'static [&'static str],
    /// Whether KVM can run this guest on an amd64 host.
    pub kvm_possible: bool,
    /// The kernel's console (`ttyS0`, `ttyAMA0`).
    pub console: &'static str,
    /// A second serial port for the results, or None: the results share
    /// the console (arm64's `virt` board has one UART), the kernel's own
    /// messages silenced first.
    pub data_port: Option<&'static str>,
    /// Extra kernel command line.
    pub append: &'static str,
    /// Whether busybox comes from Debian's package for `debian_arch` (a
    /// foreign architecture) rather than the host's `busybox-static`.
    pub foreign: bool,
    /// Whether this guest's `gotrace check` goes into docs/verifier.md
    /// (the Linux 5.10 one: the oldest kernel, the tightest verifier).
    pub verifier_doc: bool,
}

/// How gotrace runs a fixture.
#[derive(Clone, Copy)]
pub enum Mode {
    /// `gotrace ARGS -- FIXTURE` (`GOTRACE_HOLD=2s`, `GOTRACE_LINGER=300ms`).
    Command,
    /// The fixture starts first and waits for its trigger; `gotrace ARGS
    /// --pid PID` attaches, then the trigger plants the leaks.
    Pid,
}

pub struct Scenario {
    pub fixture: &'static str,
    pub go: &'static str,
    pub mode: Mode,
    /// `""`, or a variant of the build (`"stripped"`) with its flags.
    pub variant: &'static str,
    pub build_flags: &'static [&'static str],
    pub args: &'static [&'static str],
    /// gotrace's exit status (3: leak suspects found).
    pub exit: u8,
    /// Report digest lines ([`digest`]) that must be there, exactly: the
    /// counts the fixture's design gives, checked on each side on its own
    /// so that a bug on both sides still fails. `{a}` stands for the count
    /// of the fixture's `planted a N` line, `{a+b+1}` for a sum of such
    /// counts and numbers (see [`expand`]).
    pub expect: &'static [&'static str],
}

impl Scenario {
    pub fn name(&self) -> String {
        let mode = match self.mode {
            Mode::Command => "",
            Mode::Pid => "-pid",
        };
        let variant = if self.variant.is_empty() {
            String::new()
        } else {
            format!("-{}", self.variant)
        };
        format!(
            "{}-go{}{variant}{mode}",
            self.fixture,
            crate::setup::go_minor(self.go)
        )
    }

    pub fn binary(&self) -> String {
        if self.variant.is_empty() {
            format!("{}-go{}", self.fixture, self.go)
        } else {
            format!("{}-go{}-{}", self.fixture, self.go, self.variant)
        }
    }
}

/// How the guest is run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Auto,
    Kvm,
    Tcg,
}

/// What one guest run established.
pub struct Outcome {
    pub passed: u64,
    pub failed: u64,
}

/// Builds one scenario's fixture into `dir` as a static binary; `goarch`
/// cross-compiles (`arm64`).
pub fn build_fixture(s: &Scenario, dir: &Path, goarch: Option<&str>) -> Result<()> {
    let go = crate::setup::ensure_go(s.go)?;
    let mut c = cmd(go);
    c.arg("build")
        .args(s.build_flags)
        .arg("-o")
        .arg(dir.join(s.binary()))
        .arg(format!("./{}", s.fixture))
        .current_dir(workspace_root().join("tests/fixtures"))
        .env("CGO_ENABLED", "0");
    go_env(&mut c, s.go);
    if let Some(arch) = goarch {
        c.env("GOARCH", arch);
    }
    run(&mut c)
}

/// What the guest runs, and what the host runs to compare with it.
pub struct Sides<'a> {
    pub guest_gotrace: &'a Path,
    pub guest_fixtures: &'a Path,
    pub host_gotrace: &'a Path,
    pub host_fixtures: &'a Path,
}

/// Boots the guest with `scenarios`, runs the same scenarios on the host,
/// compares and checks. `work` is `target/<machine>`.
pub fn run_guest(
    m: &Machine,
    scenarios: &[Scenario],
    sides: &Sides,
    accel: Accel,
    start: Instant,
) -> Result<Outcome> {
    let guest_tools = ensure_guest_tools(m)?;
    let kernel = ensure_kernel(m)?;
    let work = crate::util::target_dir().join(m.name);
    std::fs::create_dir_all(&work)?;
    let script = work.join("scenarios.sh");
    std::fs::write(&script, scenario_script(scenarios))?;
    let initramfs = work.join("initramfs.cpio");
    let init = init_script(m, scenarios);
    write_initramfs(&initramfs, &guest_tools, sides, scenarios, &script, &init)?;
    let prepared = start.elapsed();

    let guest = boot(m, &kernel, &initramfs, &work, accel)?;
    println!(
        "{}: guest Linux {} under {} ran in {:.0}s",
        m.name,
        guest.release,
        guest.accel,
        guest.elapsed.as_secs_f64()
    );
    let guest_dir = work.join("guest");
    let _ = std::fs::remove_dir_all(&guest_dir);
    for (name, data) in &guest.files {
        let path = guest_dir.join(name);
        std::fs::create_dir_all(path.parent().expect("file under guest/"))?;
        std::fs::write(&path, data)?;
    }

    let host_start = Instant::now();
    let host_dir = work.join("host");
    let _ = std::fs::remove_dir_all(&host_dir);
    std::fs::create_dir_all(&host_dir)?;
    run(cmd("sh")
        .arg(&script)
        .env("GOTRACE", sides.host_gotrace)
        .env("FIXTURES", sides.host_fixtures)
        .env("OUT", &host_dir))?;
    let host_elapsed = host_start.elapsed();
    let host_check = crate::verifier::host_check(sides.host_gotrace)?;
    let guest_check: Option<Value> = guest
        .file("check.json")
        .and_then(|j| serde_json::from_slice(j).ok());
    if m.verifier_doc {
        crate::verifier::write(&host_check, guest_check.as_ref())?;
    }

    let mut results: Vec<(String, Result<String>)> = Vec::new();
    results.push((
        "gotrace check (every program loads)".into(),
        check_result(guest.file("check.json")),
    ));
    for s in scenarios {
        let same_arch = !m.foreign;
        results.push((s.name(), compare(s, &guest_dir, &host_dir, same_arch)));
    }
    let times = Times {
        total: start.elapsed(),
        prepared,
        host: host_elapsed,
    };
    let table = crate::verifier::table(&host_check, guest_check.as_ref().map(|g| (g, m.name)));
    let summary = summary_markdown(&guest, &results, &table, &times);
    std::fs::write(work.join("result.md"), &summary)?;
    println!("\n{summary}");
    Ok(tally(m, &results, &times, &work))
}

/// Prints each check's result and the totals.
fn tally(m: &Machine, results: &[(String, Result<String>)], t: &Times, work: &Path) -> Outcome {
    let failed = results.iter().filter(|(_, r)| r.is_err()).count() as u64;
    for (name, r) in results {
        match r {
            Ok(_) => println!("{}: ok: {name}", m.name),
            Err(e) => println!("{}: FAILED: {name}: {e:#}", m.name),
        }
    }
    let passed = results.len() as u64 - failed;
    println!(
        "{}: {passed} passed, {failed} failed [{:.0}s; result in {}]",
        m.name,
        t.total.as_secs_f64(),
        work.join("result.md").display()
    );
    Outcome { passed, failed }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trip() {
        assert_eq!(base64_decode("aGVsbG8K").unwrap(), b"hello\n");
        assert_eq!(base64_decode("YQ==").unwrap(), b"a");
        assert_eq!(base64_decode("YWJj\nZGVm").unwrap(), b"abcdef");
    }

    #[test]
    fn cpio_entries_are_aligned() {
        let mut c = Cpio::new();
        c.dir("bin");
        c.file("bin/x", 0o755, b"abcde");
        let data = c.finish();
        assert!(data.len().is_multiple_of(4));
        assert!(data.starts_with(b"070701"));
        let text = String::from_utf8_lossy(&data);
        assert!(text.contains("bin/x\0"));
        assert!(text.contains("TRAILER!!!\0"));
    }
}
