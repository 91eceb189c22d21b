//! `cargo xtask oldkernel`: boots an older kernel (Debian 11's Linux 5.10,
//! older than CentOS Stream 9's 5.14) under qemu and runs gotrace inside it
//! against Go fixtures, then runs the same binaries on the host and asserts
//! that both reports agree.
//!
//! Everything comes from Debian's packages and is cached in the tools
//! directory (`<tools>/oldkernel`): the kernel (`linux-image-*-cloud-amd64`
//! from bullseye, downloaded with a temporary sources list and unpacked, not
//! installed), qemu (`qemu-system-x86`) and a static busybox
//! (`busybox-static`). The guest has no disk: its root is an initramfs
//! (written here, no `cpio` needed) holding busybox, `gotrace` with the shared
//! libraries it links, the fixtures (static Go binaries), the scenario script
//! and `/init`. The console goes to the first serial port; the results
//! (`gotrace check --json` and each scenario's `report.json`, stdout, stderr
//! and exit status) come back base64-encoded on the second.
//!
//! The scenario script is the same shell script on both sides, so the guest
//! and the host run each fixture the same way.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::check::build;
use crate::setup::{ensure_bpf_linker, ensure_go, ensure_nightly, ensure_tools_dir, go_env};
use crate::util::{
    capture, cmd, installing, probe, require_root, run, skipped, target_dir, workspace_root,
};

/// The Debian release whose kernel is booted, and the metapackage that
/// names its current cloud kernel (`linux-image-5.10.0-NN-cloud-amd64`).
const DEBIAN_SUITE: &str = "bullseye";
const KERNEL_METAPACKAGE: &str = "linux-image-cloud-amd64";
/// Debian's archive keys (package debian-archive-keyring), older releases'
/// included.
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// How gotrace runs a fixture.
#[derive(Clone, Copy)]
enum Mode {
    /// `gotrace ARGS -- FIXTURE` (`GOTRACE_HOLD=2s`).
    Command,
    /// The fixture starts first and waits for its trigger; `gotrace ARGS
    /// --pid PID` attaches, then the trigger plants the leaks.
    Pid,
}

struct Scenario {
    fixture: &'static str,
    go: &'static str,
    mode: Mode,
    args: &'static [&'static str],
}

/// Together these load every program kind gotrace attaches: goroutine life
/// (all), contexts and `time.newTimer` (ctxleak, Go 1.26), `time.startTimer`
/// and `stopTimer` (tickers, Go 1.21), and attaching to a running process
/// with the oldest supported Go (locks, Go 1.19, `--pid`).
const SCENARIOS: &[Scenario] = &[
    Scenario {
        fixture: "chanrecv",
        go: "1.26.6",
        mode: Mode::Command,
        args: &["--leak-threshold", "1s"],
    },
    Scenario {
        fixture: "ctxleak",
        go: "1.26.6",
        mode: Mode::Command,
        args: &["--leak-threshold", "1s"],
    },
    Scenario {
        fixture: "tickers",
        go: "1.21.13",
        mode: Mode::Command,
        args: &["--leak-threshold", "1s"],
    },
    Scenario {
        fixture: "locks",
        go: "1.19.8",
        mode: Mode::Pid,
        args: &["--leak-threshold", "1s", "--duration", "3s"],
    },
];

impl Scenario {
    fn name(&self) -> String {
        let mode = match self.mode {
            Mode::Command => "",
            Mode::Pid => "-pid",
        };
        format!("{}-go{}{mode}", self.fixture, minor(self.go))
    }

    fn binary(&self) -> String {
        format!("{}-go{}", self.fixture, self.go)
    }
}

fn minor(version: &str) -> String {
    crate::setup::go_minor(version)
}

/// How the guest is run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Auto,
    Kvm,
    Tcg,
}

/// What one `oldkernel` run established.
pub struct Outcome {
    pub passed: u64,
    pub failed: u64,
}

/// Longest a guest may run before it is killed.
const GUEST_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// With KVM, the guest must have said it is up within this long; otherwise
/// KVM is taken as unusable and the guest is started again under TCG.
const KVM_LIVENESS: Duration = Duration::from_secs(40);

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
    ensure_guest_tools()?;
    let kernel = ensure_kernel()?;
    let gotrace = build()?;
    let work = target_dir().join("oldkernel");
    let fixtures = work.join("fixtures");
    std::fs::create_dir_all(&fixtures)?;
    for s in SCENARIOS {
        build_fixture(s, &fixtures)?;
    }
    let script = work.join("scenarios.sh");
    std::fs::write(&script, scenario_script())?;
    let initramfs = work.join("initramfs.cpio");
    write_initramfs(&initramfs, &gotrace, &fixtures, &script)?;
    let prepared = start.elapsed();

    let guest = boot(&kernel, &initramfs, &work, accel)?;
    println!(
        "oldkernel: guest Linux {} under {} ran in {:.0}s",
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
        .env("GOTRACE", &gotrace)
        .env("FIXTURES", &fixtures)
        .env("OUT", &host_dir))?;
    let host_elapsed = host_start.elapsed();
    let host_check = capture(cmd(&gotrace).args(["check", "--json"]))?;

    let mut results: Vec<(String, Result<String>)> = Vec::new();
    results.push((
        "gotrace check (every program loads)".into(),
        check_result(guest.file("check.json")),
    ));
    for s in SCENARIOS {
        let name = s.name();
        results.push((name.clone(), compare(&name, &guest_dir, &host_dir)));
    }

    let total = start.elapsed();
    let summary = summary_markdown(&guest, &results, &host_check, total, prepared, host_elapsed);
    std::fs::write(work.join("result.md"), &summary)?;
    println!("\n{summary}");
    let failed = results.iter().filter(|(_, r)| r.is_err()).count() as u64;
    for (name, r) in &results {
        match r {
            Ok(_) => println!("oldkernel: ok: {name}"),
            Err(e) => println!("oldkernel: FAILED: {name}: {e:#}"),
        }
    }
    println!(
        "oldkernel: {} passed, {failed} failed [{:.0}s; result in {}]",
        results.len() as u64 - failed,
        total.as_secs_f64(),
        work.join("result.md").display()
    );
    Ok(Outcome {
        passed: results.len() as u64 - failed,
        failed,
    })
}

// ---------------------------------------------------------------- tools

fn dpkg_installed(package: &str) -> bool {
    probe(cmd("dpkg-query").args(["-W", "-f=${Status}", package]))
        .is_some_and(|s| s.contains("install ok installed"))
}

/// qemu and a static busybox, from Debian.
fn ensure_guest_tools() -> Result<()> {
    let missing: Vec<&str> = ["qemu-system-x86", "busybox-static"]
        .into_iter()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        skipped("qemu-system-x86, busybox-static");
    } else {
        installing(format!("Debian packages {}", missing.join(" ")));
        run(cmd("apt-get").arg("update").arg("-qq"))?;
        run(cmd("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    // The guest has no libraries for busybox: it must be the static one.
    if !shared_libraries(Path::new(BUSYBOX))?.is_empty() {
        bail!("{BUSYBOX} is dynamically linked: the busybox-static package should provide it");
    }
    Ok(())
}

/// busybox-static's binary.
const BUSYBOX: &str = "/bin/busybox";

/// The booted kernel: its image, its config and the package it came from.
pub struct Kernel {
    vmlinuz: PathBuf,
    package: String,
}

/// `<tools>/oldkernel/<package>/{vmlinuz,config,package}`: the current cloud
/// kernel of Debian 11, downloaded once with apt from a temporary sources
/// list (the machine's own sources are left alone) and unpacked.
pub fn ensure_kernel() -> Result<Kernel> {
    let base = ensure_tools_dir()?.join("oldkernel");
    std::fs::create_dir_all(&base)?;
    // Any kernel already unpacked is used as it is (no network needed).
    let mut cached: Vec<PathBuf> = std::fs::read_dir(&base)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("vmlinuz").is_file() && p.join("package").is_file())
        .collect();
    cached.sort();
    if let Some(dir) = cached.pop() {
        let package = std::fs::read_to_string(dir.join("package"))?
            .trim()
            .to_string();
        skipped(format!("kernel {package} ({})", dir.display()));
        return Ok(Kernel {
            vmlinuz: dir.join("vmlinuz"),
            package,
        });
    }

    let apt = base.join("apt");
    for d in ["lists/partial", "cache/archives/partial", "debs"] {
        std::fs::create_dir_all(apt.join(d))?;
    }
    let sources = apt.join("sources.list");
    std::fs::write(
        &sources,
        format!(
            "deb [signed-by={KEYRING}] http://deb.debian.org/debian {DEBIAN_SUITE} main\n\
             deb [signed-by={KEYRING}] http://deb.debian.org/debian-security {DEBIAN_SUITE}-security main\n"
        ),
    )?;
    let apt_opts = |c: &mut Command| {
        c.arg("-o")
            .arg(format!("Dir::Etc::sourcelist={}", sources.display()))
            .args(["-o", "Dir::Etc::sourceparts=-"])
            .arg("-o")
            .arg(format!("Dir::State::Lists={}", apt.join("lists").display()))
            .arg("-o")
            .arg(format!("Dir::Cache={}", apt.join("cache").display()))
            .args(["-o", "APT::Get::List-Cleanup=0"])
            .args(["-o", "APT::Sandbox::User=root"]);
    };
    installing(format!(
        "Debian {DEBIAN_SUITE}'s cloud kernel (package lists)"
    ));
    let mut update = cmd("apt-get");
    apt_opts(&mut update);
    run(update.args(["update", "-qq"]))?;
    let mut depends = cmd("apt-cache");
    apt_opts(&mut depends);
    let deps = capture(depends.args(["depends", KERNEL_METAPACKAGE]))?;
    let package = deps
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-"))
        .with_context(|| format!("{KERNEL_METAPACKAGE} depends on no linux-image:\n{deps}"))?
        .to_string();
    installing(format!("kernel {package}"));
    let debs = apt.join("debs");
    let mut download = cmd("apt-get");
    apt_opts(&mut download);
    run(download
        .args(["download", "-qq"])
        .arg(&package)
        .current_dir(&debs))?;
    let deb = std::fs::read_dir(&debs)?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{package}_")))
        })
        .with_context(|| format!("apt-get download left no {package}_*.deb"))?;
    let unpacked = apt.join("unpacked");
    let _ = std::fs::remove_dir_all(&unpacked);
    run(cmd("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
    let boot = unpacked.join("boot");
    let find = |prefix: &str| -> Result<PathBuf> {
        std::fs::read_dir(&boot)?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
            })
            .with_context(|| format!("no {prefix}* in {}", boot.display()))
    };
    let version = deb
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.split('_').nth(1))
        .unwrap_or("?")
        .to_string();
    let dir = base.join(&package);
    let tmp = base.join(format!("{package}.partial"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    std::fs::copy(find("vmlinuz-")?, tmp.join("vmlinuz"))?;
    std::fs::copy(find("config-")?, tmp.join("config"))?;
    std::fs::write(tmp.join("package"), format!("{package} {version}\n"))?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir)?;
    // The .deb and the lists are not needed once the kernel is unpacked.
    let _ = std::fs::remove_dir_all(&apt);
    Ok(Kernel {
        vmlinuz: dir.join("vmlinuz"),
        package: format!("{package} {version}"),
    })
}

fn build_fixture(s: &Scenario, dir: &Path) -> Result<()> {
    let go = ensure_go(s.go)?;
    let mut c = cmd(go);
    c.args(["build", "-o"])
        .arg(dir.join(s.binary()))
        .arg(format!("./{}", s.fixture))
        .current_dir(workspace_root().join("tests/fixtures"));
    go_env(&mut c, s.go);
    run(&mut c)
}

// ---------------------------------------------------------------- scripts

/// The scenario runner, the same on the guest (busybox sh) and the host.
/// Environment: `GOTRACE`, `FIXTURES`, `OUT`. Each scenario writes
/// `$OUT/NAME/{report.json,stdout,stderr,exit}`.
fn scenario_script() -> String {
    let mut s = String::from(
        r#"#!/bin/sh
# Generated by `cargo xtask oldkernel`: runs gotrace against each fixture.
set -u
export GOMAXPROCS=2
wait_for() { # FILE NEEDLE SECONDS
    i=0
    while ! grep -q "$2" "$1" 2>/dev/null; do
        i=$((i + 1))
        [ "$i" -gt $(($3 * 10)) ] && return 1
        sleep 0.1
    done
}
run_command() { # NAME BINARY ARGS...
    d="$OUT/$1"; bin="$FIXTURES/$2"; shift 2
    mkdir -p "$d"
    echo "scenario $(basename "$d"): gotrace $* -- $bin"
    GOTRACE_HOLD=2s "$GOTRACE" "$@" -o "$d" -- "$bin" >"$d/stdout" 2>"$d/stderr" </dev/null
    echo $? >"$d/exit"
}
run_pid() { # NAME BINARY ARGS...
    d="$OUT/$1"; bin="$FIXTURES/$2"; shift 2
    mkdir -p "$d"; rm -f "$d/trigger"
    echo "scenario $(basename "$d"): gotrace $* --pid (of $bin)"
    GOTRACE_TRIGGER="$d/trigger" GOTRACE_HOLD=60s "$bin" >"$d/fixture" 2>&1 </dev/null &
    fpid=$!
    if ! wait_for "$d/fixture" "waiting for trigger" 60; then
        echo "the fixture did not start" >"$d/stderr"; echo 125 >"$d/exit"
        kill "$fpid"; wait "$fpid"; return
    fi
    "$GOTRACE" "$@" -o "$d" --pid "$fpid" >"$d/stdout" 2>"$d/stderr" </dev/null &
    gpid=$!
    wait_for "$d/stderr" attached 120 || echo "(gotrace did not attach)" >>"$d/fixture"
    touch "$d/trigger"
    wait "$gpid"
    echo $? >"$d/exit"
    kill "$fpid" 2>/dev/null; wait "$fpid" 2>/dev/null
    return 0
}
"#,
    );
    for sc in SCENARIOS {
        let func = match sc.mode {
            Mode::Command => "run_command",
            Mode::Pid => "run_pid",
        };
        s.push_str(&format!(
            "{func} {} {} {}\n",
            sc.name(),
            sc.binary(),
            sc.args.join(" ")
        ));
    }
    s
}

/// The guest's `/init`: mounts what gotrace needs (proc, sysfs, devtmpfs;
/// no tracefs, no bpffs), hides the kernel's BTF, runs `gotrace check` and
/// the scenarios, and sends the results over the second serial port.
fn init_script() -> String {
    let mut names: Vec<String> = SCENARIOS.iter().map(Scenario::name).collect();
    names.sort();
    format!(
        r#"#!/bin/busybox sh
/bin/busybox mkdir -p /usr/bin /usr/sbin /sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mkdir -p /out
ip link set lo up
stty -F /dev/ttyS1 raw -echo 2>/dev/null
exec 3>/dev/ttyS1
echo "@@ up" >&3
echo "@@ kernel $(uname -r)" >&3
# gotrace must not need the kernel's BTF: hide it.
if [ -e /sys/kernel/btf/vmlinux ]; then
    mount -t tmpfs tmpfs /sys/kernel/btf
    echo "@@ btf in the kernel, hidden from gotrace (tmpfs over /sys/kernel/btf)" >&3
else
    echo "@@ btf absent" >&3
fi
emit() {{ # NAME FILE
    [ -f "$2" ] || return 0
    echo "@@ file $1" >&3
    base64 "$2" >&3
    echo "@@ end" >&3
}}
echo "guest: Linux $(uname -r), $(nproc) CPUs"
gotrace check 2>&1 | tee /tmp/check.txt
gotrace check --json >/tmp/check.json 2>/tmp/check.err
emit check.txt /tmp/check.txt
emit check.json /tmp/check.json
emit check.err /tmp/check.err
GOTRACE=/bin/gotrace FIXTURES=/fixtures OUT=/out sh /scenarios.sh
for n in {names}; do
    for f in report.json stdout stderr exit fixture; do emit "$n/$f" "/out/$n/$f"; done
done
echo "@@ done" >&3
poweroff -f
"#,
        names = names.join(" ")
    )
}

// ---------------------------------------------------------------- initramfs

/// A `newc` cpio archive (what the kernel unpacks as its initramfs).
struct Cpio {
    data: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn new() -> Self {
        Self {
            data: Vec::new(),
            ino: 1,
        }
    }

    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), body: &[u8]) {
        let name = name.trim_start_matches('/');
        let fields = [
            self.ino,
            mode,
            0,
            0,
            if mode & 0o040000 != 0 { 2 } else { 1 },
            0,
            body.len() as u32,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0,
        ];
        self.ino += 1;
        self.data.extend_from_slice(b"070701");
        for f in fields {
            self.data.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.data.extend_from_slice(name.as_bytes());
        self.data.push(0);
        self.pad();
        self.data.extend_from_slice(body);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.data.len().is_multiple_of(4) {
            self.data.push(0);
        }
    }

    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, (0, 0), &[]);
    }

    fn file(&mut self, name: &str, mode: u32, body: &[u8]) {
        self.entry(name, 0o100000 | mode, (0, 0), body);
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.data
    }
}

/// The shared libraries `bin` loads (from `ldd`), the dynamic loader included.
fn shared_libraries(bin: &Path) -> Result<Vec<PathBuf>> {
    // ldd fails ("not a dynamic executable") on a static binary.
    let Some(out) = probe(cmd("ldd").arg(bin)) else {
        return Ok(Vec::new());
    };
    Ok(out
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

fn write_initramfs(out: &Path, gotrace: &Path, fixtures: &Path, script: &Path) -> Result<()> {
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let mut cpio = Cpio::new();
    for d in [
        "bin", "dev", "proc", "sys", "tmp", "run", "out", "fixtures", "lib", "lib64", "usr",
    ] {
        cpio.dir(d);
    }
    cpio.entry("dev/console", 0o020600, (5, 1), &[]);
    cpio.file("bin/busybox", 0o755, &read(Path::new(BUSYBOX))?);
    cpio.file("bin/gotrace", 0o755, &read(gotrace)?);
    let mut dirs: Vec<String> = Vec::new();
    for lib in shared_libraries(gotrace)? {
        // Every parent directory, once, before the file.
        let mut parent = PathBuf::new();
        for c in lib
            .parent()
            .into_iter()
            .flat_map(|p| p.components())
            .skip(1)
        {
            parent.push(c);
            let p = parent.to_string_lossy().into_owned();
            if !dirs.contains(&p) && !["lib", "lib64", "usr"].contains(&p.as_str()) {
                cpio.dir(&p);
                dirs.push(p);
            }
        }
        cpio.file(&lib.to_string_lossy(), 0o755, &read(&lib)?);
    }
    for s in SCENARIOS {
        let bin = s.binary();
        cpio.file(
            &format!("fixtures/{bin}"),
            0o755,
            &read(&fixtures.join(&bin))?,
        );
    }
    cpio.file("scenarios.sh", 0o755, &read(script)?);
    cpio.file("init", 0o755, init_script().as_bytes());
    std::fs::write(out, cpio.finish()).with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

// ---------------------------------------------------------------- qemu

/// What came back from the guest.
struct Guest {
    release: String,
    btf: String,
    accel: String,
    elapsed: Duration,
    kernel_package: String,
    files: BTreeMap<String, Vec<u8>>,
}

impl Guest {
    fn file(&self, name: &str) -> Option<&[u8]> {
        self.files.get(name).map(Vec::as_slice)
    }
}

/// Why `/dev/kvm` cannot boot a stock kernel here, if it cannot.
fn kvm_unusable() -> Option<String> {
    let dev = Path::new("/dev/kvm");
    if !dev.exists() {
        return Some("/dev/kvm is missing".into());
    }
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev)
        .is_err()
    {
        return Some("/dev/kvm cannot be opened".into());
    }
    if Path::new("/sys/module/kvm_pvm").exists()
        && !Path::new("/sys/module/kvm_intel").exists()
        && !Path::new("/sys/module/kvm_amd").exists()
    {
        // Pagetable-based virtual machines run only guest kernels built for
        // PVM: a stock kernel hangs right after it is decompressed.
        return Some(
            "this host's KVM is kvm_pvm (nested PVM), which boots only PVM guest kernels".into(),
        );
    }
    None
}

fn boot(kernel: &Kernel, initramfs: &Path, work: &Path, accel: Accel) -> Result<Guest> {
    let use_kvm = match accel {
        Accel::Tcg => false,
        Accel::Kvm => true,
        Accel::Auto => match kvm_unusable() {
            Some(why) => {
                println!("oldkernel: using TCG (software emulation): {why}");
                false
            }
            None => true,
        },
    };
    if use_kvm {
        match boot_with(kernel, initramfs, work, true) {
            Ok(g) => return Ok(g),
            Err(e) if accel == Accel::Auto => {
                println!("oldkernel: KVM did not work ({e:#}); retrying under TCG");
            }
            Err(e) => return Err(e),
        }
    }
    boot_with(kernel, initramfs, work, false)
}

fn boot_with(kernel: &Kernel, initramfs: &Path, work: &Path, kvm: bool) -> Result<Guest> {
    let console = work.join("console.log");
    let data = work.join("data.log");
    for f in [&console, &data] {
        let _ = std::fs::remove_file(f);
    }
    let mut c = cmd("qemu-system-x86_64");
    c.args(["-nodefaults", "-no-user-config", "-display", "none"])
        .args(["-no-reboot", "-m", "1024", "-smp", "2"]);
    if kvm {
        c.args(["-accel", "kvm", "-cpu", "host"]);
    } else {
        c.args(["-accel", "tcg", "-cpu", "max"]);
    }
    c.arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        .args([
            "-append",
            // no_timer_check: a slow (TCG) guest on a busy host otherwise
            // fails the IO-APIC timer check and panics.
            "console=ttyS0 panic=-1 quiet loglevel=3 no_timer_check",
        ])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-serial")
        .arg(format!("file:{}", data.display()))
        .stdin(Stdio::null());
    crate::util::announce(&c);
    let start = Instant::now();
    let mut child = c.spawn().context("starting qemu-system-x86_64")?;
    let mut up = false;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if !up {
            up = std::fs::read_to_string(&data).is_ok_and(|d| d.contains("@@ up"));
        }
        let waited = start.elapsed();
        let hung = if kvm && !up && waited > KVM_LIVENESS {
            Some(format!(
                "the guest said nothing in {}s",
                KVM_LIVENESS.as_secs()
            ))
        } else if waited > GUEST_TIMEOUT {
            Some(format!("the guest ran over {}s", GUEST_TIMEOUT.as_secs()))
        } else {
            None
        };
        if let Some(why) = hung {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{why}; console:\n{}", console_tail(&console));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let elapsed = start.elapsed();
    if !status.success() {
        bail!(
            "qemu failed: {status}; console:\n{}",
            console_tail(&console)
        );
    }
    let text = std::fs::read_to_string(&data).unwrap_or_default();
    let mut guest = Guest {
        release: String::new(),
        btf: String::new(),
        accel: if kvm { "KVM".into() } else { "TCG".into() },
        elapsed,
        kernel_package: kernel.package.clone(),
        files: BTreeMap::new(),
    };
    let mut current: Option<(String, String)> = None;
    let mut done = false;
    for line in text.lines().map(|l| l.trim_end_matches('\r')) {
        if let Some((name, body)) = current.as_mut() {
            if line == "@@ end" {
                let bytes = base64_decode(body)
                    .with_context(|| format!("guest file {name}: bad base64"))?;
                guest.files.insert(name.clone(), bytes);
                current = None;
            } else {
                body.push_str(line.trim());
            }
            continue;
        }
        if let Some(r) = line.strip_prefix("@@ kernel ") {
            guest.release = r.trim().to_string();
        } else if let Some(b) = line.strip_prefix("@@ btf ") {
            guest.btf = b.trim().to_string();
        } else if let Some(name) = line.strip_prefix("@@ file ") {
            current = Some((name.trim().to_string(), String::new()));
        } else if line == "@@ done" {
            done = true;
        }
    }
    let console_text = std::fs::read_to_string(&console).unwrap_or_default();
    for line in console_text.lines().map(|l| l.trim_end_matches('\r')) {
        if !line.trim().is_empty() && !line.contains('\x1b') {
            println!("guest| {line}");
        }
    }
    if !done {
        bail!("the guest stopped before it sent every result");
    }
    Ok(guest)
}

fn console_tail(console: &Path) -> String {
    let text = std::fs::read_to_string(console).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn base64_decode(text: &str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            b' ' | b'\n' | b'\r' | b'\t' => continue,
            _ => bail!("unexpected byte {c:#x}"),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------- comparison

/// `gotrace check --json` from the guest: every program loaded.
fn check_result(json: Option<&[u8]>) -> Result<String> {
    let json = json.context("the guest sent no check.json")?;
    let v: Value = serde_json::from_slice(json).context("guest check.json")?;
    let programs = v["programs"].as_array().context("no programs")?;
    let refused: Vec<String> = programs
        .iter()
        .filter(|p| p["loaded"] != true)
        .map(|p| format!("{}: {}", p["name"], p["error"]))
        .collect();
    if !refused.is_empty() || v["ok"] != true {
        bail!("refused on the old kernel:\n{}", refused.join("\n"));
    }
    Ok(format!("{} programs loaded", programs.len()))
}

/// The parts of a report that must not depend on the kernel: the leak
/// groups, their counts, functions and wait reasons, the context and timer
/// findings, and that nothing was lost. Timings and ids are left out.
fn digest(r: &Value) -> Vec<String> {
    let mut d = Vec::new();
    let t = &r["trace"];
    d.push(format!("go_version {}", r["target"]["go_version"]));
    d.push(format!("probes_attached {}", t["probes_attached"]));
    d.push(format!("dropped {}", t["kernel"]["dropped_total"]));
    d.push(format!("stack_errors {}", t["kernel"]["stack_errors"]));
    d.push(format!("undecodable {}", t["events_undecodable"]));
    d.push(format!("live_user {}", r["goroutines"]["live_user"]));
    d.push(format!("verdict {}", r["verdict"]));
    d.push(format!("suspect_count {}", r["suspect_count"]));
    let funcs = |stack: &Value| -> String {
        stack
            .as_array()
            .map(|s| {
                s.iter()
                    .map(|f| f["function"].as_str().unwrap_or("?"))
                    .collect::<Vec<_>>()
                    .join(" < ")
            })
            .unwrap_or_default()
    };
    let mut groups: Vec<String> = Vec::new();
    for (kind, list) in [("suspect", &r["suspects"]), ("live", &r["live"])] {
        for g in list.as_array().into_iter().flatten() {
            let start = g["start_function"].as_str().unwrap_or("");
            if kind == "live" && !start.starts_with("main.") {
                continue; // the runtime's own goroutines vary with GC timing
            }
            groups.push(format!(
                "{kind} {start} x{} {} {} created_at={} blocked_at={} blocked=[{}] created=[{}]",
                g["count"],
                g["pattern"],
                g["wait_reason"],
                g["created_at"]["function"],
                g["blocked_at"]["function"],
                funcs(&g["blocked_stack"]),
                funcs(&g["creation_stack"]),
            ));
        }
    }
    groups.sort();
    d.extend(groups);
    let c = &r["contexts"];
    d.push(format!(
        "contexts not_traced={} created={} cancelled={} live_at_end={} repeat_cancels={}",
        c["not_traced"], c["created"], c["cancelled"], c["live_at_end"], c["repeat_cancels"]
    ));
    let mut leaks: Vec<String> = c["leaks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| {
            format!(
                "context leak {} x{} created_at={} timers_alive={} waiting={}",
                l["kind"],
                l["count"],
                l["created_at"]["function"],
                l["timers_alive"],
                l["waiting_goroutines"]
            )
        })
        .collect();
    leaks.sort();
    d.extend(leaks);
    for k in ["ignored_cancels", "broken_chains", "nested_deadlines"] {
        d.push(format!(
            "contexts {k} {}",
            c[k].as_array().map_or(0, Vec::len)
        ));
    }
    let tm = &r["timers"];
    d.push(format!(
        "timers not_traced={} started={} stopped={}",
        tm["not_traced"], tm["started"], tm["stopped"]
    ));
    let mut tickers: Vec<String> = tm["tickers_never_stopped"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            format!(
                "ticker created_at={} x{} period={} verdict={} loops={}",
                t["created_at"]["function"],
                t["count"],
                t["period_s"],
                t["verdict"],
                t["looping_functions"]
            )
        })
        .collect();
    tickers.sort();
    d.extend(tickers);
    d
}

fn compare(name: &str, guest_dir: &Path, host_dir: &Path) -> Result<String> {
    let load = |dir: &Path, side: &str| -> Result<(Value, String)> {
        let d = dir.join(name);
        let exit = std::fs::read_to_string(d.join("exit")).unwrap_or_default();
        let stderr = std::fs::read_to_string(d.join("stderr")).unwrap_or_default();
        let text = std::fs::read_to_string(d.join("report.json")).with_context(|| {
            format!(
                "{side}: no report.json (gotrace exit {}): {}",
                exit.trim(),
                stderr.trim()
            )
        })?;
        let report = serde_json::from_str(&text).with_context(|| format!("{side} report.json"))?;
        Ok((report, exit.trim().to_string()))
    };
    let (guest, guest_exit) = load(guest_dir, "guest")?;
    let (host, host_exit) = load(host_dir, "host")?;
    let (g, h) = (digest(&guest), digest(&host));
    let mut problems = Vec::new();
    if guest_exit != host_exit {
        problems.push(format!("exit status: guest {guest_exit}, host {host_exit}"));
    }
    for line in &g {
        if !h.contains(line) {
            problems.push(format!("guest only: {line}"));
        }
    }
    for line in &h {
        if !g.contains(line) {
            problems.push(format!("host only:  {line}"));
        }
    }
    if guest["trace"]["kernel"]["dropped_total"] != 0 {
        problems.push("the guest dropped events".into());
    }
    if guest["suspect_count"] == 0
        && guest["timers"]["tickers_never_stopped"] == Value::Array(vec![])
    {
        problems.push("the guest found nothing to report".into());
    }
    if !problems.is_empty() {
        bail!("reports differ:\n  {}", problems.join("\n  "));
    }
    Ok(format!(
        "exit {guest_exit}, {} suspects, {} events, same as the host",
        guest["suspect_count"], guest["trace"]["events_received"]
    ))
}

// ---------------------------------------------------------------- summary

fn summary_markdown(
    guest: &Guest,
    results: &[(String, Result<String>)],
    host_check: &str,
    total: Duration,
    prepared: Duration,
    host_elapsed: Duration,
) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "Guest: Linux {} ({}), {}, 2 vCPUs, 1 GiB; kernel BTF: {}.\n\
         Time: {:.0}s in all ({:.0}s preparing, {:.0}s in the guest, {:.0}s for the host runs).\n\n",
        guest.release,
        guest.kernel_package,
        guest.accel,
        if guest.btf.is_empty() { "unknown" } else { &guest.btf },
        total.as_secs_f64(),
        prepared.as_secs_f64(),
        guest.elapsed.as_secs_f64(),
        host_elapsed.as_secs_f64(),
    ));
    s.push_str("| check | result |\n|---|---|\n");
    for (name, r) in results {
        let text = match r {
            Ok(t) => format!("ok: {t}"),
            Err(e) => format!("FAILED: {}", format!("{e:#}").replace('\n', " ")),
        };
        s.push_str(&format!("| {name} | {text} |\n"));
    }
    let guest_check: Option<Value> = guest
        .file("check.json")
        .and_then(|j| serde_json::from_slice(j).ok());
    let host_check: Option<Value> = serde_json::from_str(host_check).ok();
    let host_release = host_check
        .as_ref()
        .and_then(|v| v["kernel"]["release"].as_str())
        .unwrap_or("host")
        .to_string();
    s.push_str(&format!(
        "\n| program | xlated insns (5.10) | xlated insns ({host_release}) | verified insns ({host_release}) | of the 1 M limit |\n|---|---:|---:|---:|---:|\n"
    ));
    let by_name = |v: &Option<Value>| -> BTreeMap<String, Value> {
        v.as_ref()
            .and_then(|v| v["programs"].as_array().cloned())
            .unwrap_or_default()
            .into_iter()
            .map(|p| (p["name"].as_str().unwrap_or("?").to_string(), p))
            .collect()
    };
    let (g, h) = (by_name(&guest_check), by_name(&host_check));
    for (name, hp) in &h {
        let gx = g
            .get(name)
            .map_or("-".to_string(), |p| p["xlated_insns"].to_string());
        let verified = hp["verified_insns"].as_u64();
        s.push_str(&format!(
            "| {name} | {gx} | {} | {} | {} |\n",
            hp["xlated_insns"],
            verified.map_or("n/a".into(), |v| v.to_string()),
            verified.map_or("-".into(), |v| format!("{:.2} %", v as f64 / 10_000.0)),
        ));
    }
    s
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

    #[test]
    fn script_lists_every_scenario() {
        let s = scenario_script();
        for sc in SCENARIOS {
            assert!(s.contains(&sc.name()), "{}", sc.name());
        }
        assert!(init_script().contains("locks-go1.19-pid"));
    }
}
