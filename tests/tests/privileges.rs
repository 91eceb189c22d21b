//! Least privilege: gotrace run as user nobody with only the capabilities
//! the README lists (CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN, CAP_SYS_PTRACE, as
//! ambient capabilities through capsh) traces a root-owned Go process fully,
//! and writes its files 0644. One capability less is one clear line.

use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use gotrace_e2e::{CommandExt as _, RUN_TIMEOUT, fixture, gotrace_bin, root_guard};

const NEEDED: &str = "cap_bpf,cap_perfmon,cap_sys_admin,cap_sys_ptrace";

/// `capsh` running `gotrace ARGS` as nobody with exactly `caps`.
fn capped(caps: &str, args: &str) -> Command {
    let mut c = Command::new("capsh");
    c.arg(format!(
        "--caps={caps}+eip cap_setpcap,cap_setuid,cap_setgid+ep"
    ))
    .args(["--keep=1", "--user=nobody"])
    .arg(format!("--addamb={caps}"))
    .args(["--", "-c"])
    .arg(format!("exec {} {args}", gotrace_bin().display()));
    c
}

fn out_dir(parent: &Path, name: &str) -> std::path::PathBuf {
    std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = parent.join(name);
    std::fs::create_dir(&d).unwrap();
    std::os::unix::fs::chown(&d, Some(65534), Some(65534)).unwrap();
    d
}

#[test]
fn exactly_the_documented_capabilities() {
    let Some(_g) = root_guard() else { return };
    let bin = fixture("chanrecv", "1.26");
    let tmp = tempfile::tempdir().unwrap();
    let trigger = tmp.path().join("trigger");
    let mut target = Command::new(&bin)
        .env("GOTRACE_TRIGGER", &trigger)
        .env("GOTRACE_HOLD", "30s")
        .stdout(Stdio::null())
        .spawn_within(RUN_TIMEOUT)
        .unwrap();
    let pid = target.id();

    // One capability short: full tracing is a clear line, no files.
    let short = out_dir(tmp.path(), "short");
    let out: Output = capped(
        "cap_bpf,cap_perfmon,cap_sys_ptrace",
        &format!("--full --pid {pid} --duration 1s -o {}", short.display()),
    )
    .output_within(RUN_TIMEOUT)
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("CAP_SYS_ADMIN"), "{stderr}");
    // Sampled mode needs no eBPF: CAP_SYS_PTRACE, and, for another
    // user's process, CAP_DAC_READ_SEARCH (/proc/PID/mem is its owner's,
    // mode 0600).
    let sampled = out_dir(tmp.path(), "sampled");
    let out: Output = capped(
        "cap_sys_ptrace,cap_dac_read_search",
        &format!(
            "--sampled --pid {pid} --duration 1s -o {}",
            sampled.display()
        ),
    )
    .output_within(RUN_TIMEOUT)
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(sampled.join("report.json").exists(), "{stderr}");

    // The documented set: a full trace (by default: budgeted mode cannot
    // read the root-owned target's goroutines without CAP_DAC_READ_SEARCH
    // and traces with every probe under the budget instead).
    let dir = out_dir(tmp.path(), "out");
    let mut gotrace = capped(
        NEEDED,
        &format!(
            "--pid {pid} --duration 3s --leak-threshold 1s -o {}",
            dir.display()
        ),
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn_within(RUN_TIMEOUT)
    .unwrap();
    let mut err = BufReader::new(gotrace.stderr.take().unwrap());
    let mut seen = String::new();
    let mut line = String::new();
    while err.read_line(&mut line).unwrap() > 0 {
        seen.push_str(&line);
        if line.contains("attached") {
            break;
        }
        line.clear();
    }
    assert!(seen.contains("attached"), "{seen}");
    std::fs::write(&trigger, "go").unwrap();
    let status = gotrace.wait().unwrap();
    let _ = target.kill();
    let _ = target.wait();
    assert_eq!(status.code(), Some(3), "{seen}");
    let report = dir.join("report.json");
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let g = r["suspects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["start_function"] == "main.receiveForever")
        .unwrap_or_else(|| panic!("{r:#}"));
    assert_eq!(g["count"], 10);
    for entry in std::fs::read_dir(&dir).unwrap() {
        let m = entry.unwrap().metadata().unwrap();
        assert_eq!(m.uid(), 65534);
        assert_eq!(m.mode() & 0o022, 0, "group/world-writable: {:o}", m.mode());
    }
}
