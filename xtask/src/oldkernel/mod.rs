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

mod compare;
mod guest;
mod initramfs;
mod kernel;

use compare::*;
use guest::*;
use initramfs::*;
use kernel::*;

use crate::build::build;
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
    /// What the report must say on either kernel (see `compare::absolute`).
    expect: &'static [Expect],
}

/// One finding a scenario's report must hold exactly, its count read from
/// the fixture's `planted <what> <N>` line: a bug on both kernels fails
/// here although the two reports agree.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// A suspect group running `start` with `planted` goroutines.
    Suspects {
        start: &'static str,
        planted: &'static str,
    },
    /// `suspect_count` is the sum of these `planted` counts.
    SuspectCount(&'static [&'static str]),
    /// A context leak of `kind` created in `created_at`, `planted` strong.
    ContextLeak {
        created_at: &'static str,
        kind: &'static str,
        planted: &'static str,
    },
    /// Tickers never stopped, created in `created_at`, `planted` strong.
    Tickers {
        created_at: &'static str,
        planted: &'static str,
    },
    /// `timers.stopped` equals `planted`.
    TimersStopped(&'static str),
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
        expect: &[
            Expect::Suspects {
                start: "main.receiveForever",
                planted: "chanrecv",
            },
            Expect::SuspectCount(&["chanrecv"]),
        ],
    },
    Scenario {
        fixture: "ctxleak",
        go: "1.26.6",
        mode: Mode::Command,
        args: &["--leak-threshold", "1s"],
        expect: &[
            Expect::ContextLeak {
                created_at: "main.startJob",
                kind: "timer",
                planted: "timeout-leak",
            },
            Expect::ContextLeak {
                created_at: "main.makeIdleContexts",
                kind: "cancel",
                planted: "cancel-leak",
            },
        ],
    },
    Scenario {
        fixture: "tickers",
        go: "1.21.13",
        mode: Mode::Command,
        args: &["--leak-threshold", "1s"],
        expect: &[
            Expect::Tickers {
                created_at: "main.startPoller",
                planted: "tickers",
            },
            Expect::TimersStopped("stopped"),
        ],
    },
    Scenario {
        fixture: "locks",
        go: "1.19.8",
        mode: Mode::Pid,
        args: &["--leak-threshold", "1s", "--duration", "3s"],
        expect: &[
            Expect::Suspects {
                start: "main.lockWaiter",
                planted: "mutex",
            },
            Expect::Suspects {
                start: "main.waitGroupWaiter",
                planted: "waitgroup",
            },
            Expect::Suspects {
                start: "main.rlockWaiter",
                planted: "rwmutex",
            },
            Expect::SuspectCount(&["mutex", "waitgroup", "rwmutex", "abba"]),
        ],
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
    let host_check = crate::verifier::host_check(&gotrace)?;
    let guest_check: Option<Value> = guest
        .file("check.json")
        .and_then(|j| serde_json::from_slice(j).ok());
    crate::verifier::write(&host_check, guest_check.as_ref())?;

    let mut results: Vec<(String, Result<String>)> = Vec::new();
    results.push((
        "gotrace check (every program loads)".into(),
        check_result(guest.file("check.json")),
    ));
    for s in SCENARIOS {
        let name = s.name();
        results.push((
            name.clone(),
            compare(&name, s.expect, &guest_dir, &host_dir),
        ));
    }

    let total = start.elapsed();
    let summary = summary_markdown(
        &guest,
        &results,
        &crate::verifier::table(&host_check, guest_check.as_ref()),
        total,
        prepared,
        host_elapsed,
    );
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
    fn absolute_checks_count_what_was_planted() {
        let locks = SCENARIOS.iter().find(|s| s.fixture == "locks").unwrap();
        let out = "planted mutex 5\nplanted waitgroup 3\nplanted rwmutex 2\nplanted abba 2\n";
        let group = |start: &str, n: u64| serde_json::json!({"start_function": start, "count": n});
        let mut r = serde_json::json!({
            "trace": {"kernel": {"dropped_total": 0}},
            "suspect_count": 12,
            "suspects": [
                group("main.lockWaiter", 5),
                group("main.waitGroupWaiter", 3),
                group("main.rlockWaiter", 2),
            ],
        });
        assert_eq!(
            absolute(locks.expect, &r, out).unwrap(),
            Vec::<String>::new()
        );
        r["suspects"][0]["count"] = 4.into();
        r["suspect_count"] = 11.into();
        r["trace"]["kernel"]["dropped_total"] = 1.into();
        let problems = absolute(locks.expect, &r, out).unwrap();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(absolute(locks.expect, &r, "").is_err(), "no planted lines");

        let tickers = SCENARIOS.iter().find(|s| s.fixture == "tickers").unwrap();
        let r = serde_json::json!({
            "trace": {"kernel": {"dropped_total": 0}},
            "timers": {"stopped": 1, "tickers_never_stopped": [
                {"created_at": {"function": "main.startPoller"}, "count": 3}
            ]},
        });
        let out = "planted tickers 3\nplanted stopped 1\n";
        assert_eq!(
            absolute(tickers.expect, &r, out).unwrap(),
            Vec::<String>::new()
        );
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
