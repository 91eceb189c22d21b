//! Attaching to an already running process (`--pid`), ending a trace by
//! duration or signal, and bad input: each gets a clear one-line error and a
//! non-zero exit, never a panic.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use gotrace_e2e::{
    CommandExt as _, RUN_TIMEOUT, assert_one_line_error, fixture, gotrace, gotrace_bin, root_guard,
    trace_pid_with_siblings,
};

fn check_group(report: &serde_json::Value) {
    let g = report["suspects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["start_function"] == "main.receiveForever")
        .unwrap_or_else(|| panic!("no receiveForever group: {report:#}"));
    assert_eq!(g["count"], 10, "{g:#}");
    assert_eq!(g["pattern"], "chan_receive");
    assert_eq!(g["created_at"]["function"], "main.startReceivers");
    assert_eq!(g["blocked_at"]["function"], "main.receiveForever");
}

/// The fixture is already running (held at its trigger) when gotrace
/// attaches; the leak happens afterwards; `--duration` ends the trace. A
/// second instance of the same binary leaks at the same moment and must not
/// be counted (kernel-side tgid filter, per-process uprobes).
#[test]
fn pid_attach_with_duration() {
    let Some(_g) = root_guard() else { return };
    for go in ["1.26", "1.21"] {
        let bin = fixture("chanrecv", go);
        let args = ["--duration", "3s", "--leak-threshold", "1s"];
        let t = trace_pid_with_siblings(&bin, "60s", &args, 1)
            .unwrap_or_else(|e| panic!("Go {go}: {e:#}"));
        let r = &t.report;
        assert_eq!(r["trace"]["ended_by"], "duration", "{r:#}");
        assert!(r["trace"]["duration_s"].as_f64().unwrap() >= 2.9);
        assert_eq!(r["target"]["exit"], serde_json::Value::Null);
        check_group(r);
        assert_eq!(t.exit_code, Some(3));
        assert!(
            t.fixture_stdout.contains("planted chanrecv 10"),
            "{}",
            t.fixture_stdout
        );
    }
}

/// Address of a text symbol, from `go tool nm`.
fn symbol_addr(bin: &Path, name: &str) -> u64 {
    let out = Command::new(gotrace_e2e::go_for("1.26"))
        .args(["tool", "nm"])
        .arg(bin)
        .output_within(RUN_TIMEOUT)
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.split_whitespace().nth(2) == Some(name))
        .unwrap_or_else(|| panic!("{name} not in nm output"));
    u64::from_str_radix(line.split_whitespace().next().unwrap(), 16).unwrap()
}

/// First byte of the target's code at `addr`, read live from its memory.
fn code_byte(pid: u32, addr: u64) -> u8 {
    use std::os::unix::fs::FileExt;
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut b = [0u8];
    mem.read_exact_at(&mut b, addr).unwrap();
    b[0]
}

/// SIGTERM to gotrace ends the trace and still writes the report; the
/// target keeps running with every uprobe removed (its code bytes restored).
#[test]
fn sigterm_ends_trace_and_detaches() {
    let Some(_g) = root_guard() else { return };
    let bin = fixture("chanrecv", "1.26");
    // goexit1 is probed at its entry (gopark after its prologue).
    let probed = symbol_addr(&bin, "runtime.goexit1");
    let dir = tempdir("sigterm");
    let mut target = Command::new(&bin)
        .env("GOTRACE_HOLD", "60s")
        .stdout(Stdio::null())
        .spawn_within(RUN_TIMEOUT)
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let original = code_byte(target.id(), probed);
    assert_ne!(original, 0xcc);
    let mut gotrace = Command::new(gotrace_bin())
        // Every probe from the start: by default --pid attaches the
        // creation/exit probes only once it has seen they fit the budget.
        .args(["--full", "--leak-threshold", "100ms", "-o"])
        .arg(&dir)
        .arg("--pid")
        .arg(target.id().to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn_within(RUN_TIMEOUT)
        .unwrap();
    let mut err = std::io::BufReader::new(gotrace.stderr.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut err, &mut line).unwrap();
    assert!(line.contains("attached"), "{line}");
    assert_eq!(
        code_byte(target.id(), probed),
        0xcc,
        "uprobe breakpoint in place while tracing"
    );
    std::thread::sleep(Duration::from_secs(1));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(gotrace.id() as i32, libc::SIGTERM) };
    let out = gotrace.wait_with_output().unwrap();
    let mut stderr = String::new();
    let _ = std::io::Read::read_to_string(&mut err, &mut stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    // The 10 receivers were parked before gotrace attached (read then),
    // for longer than --leak-threshold 100ms by the end.
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("report.json")).expect("report written"),
    )
    .unwrap();
    assert_eq!(report["trace"]["ended_by"], "signal");
    assert!(target.try_wait().unwrap().is_none(), "target died");
    assert_eq!(
        code_byte(target.id(), probed),
        original,
        "uprobe removed after detach"
    );
    let _ = target.kill();
    let _ = target.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("gotrace-e2e-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn no_such_pid() {
    assert_one_line_error(
        &gotrace(&["--pid", "999999999"]),
        "no process with PID 999999999",
    );
}

#[test]
fn not_a_go_binary() {
    assert_one_line_error(&gotrace(&["--", "/bin/true"]), "not a Go binary");
}

#[test]
fn missing_command() {
    assert_one_line_error(&gotrace(&["--", "/nonexistent/prog"]), "command not found");
}

#[test]
fn nothing_to_trace() {
    assert_one_line_error(&gotrace(&[]), "nothing to trace");
}

/// An unprivileged user gets a permission error, not a crash.
#[test]
fn unprivileged_user_gets_permission_error() {
    let Some(_g) = root_guard() else { return };
    let bin = fixture("chanrecv", "1.26");
    // The binaries live under root's target dir: copy both where nobody can read.
    let dir = tempdir("unpriv");
    let (gt, fx) = (dir.join("gotrace"), dir.join("chanrecv"));
    std::fs::copy(gotrace_bin(), &gt).unwrap();
    std::fs::copy(&bin, &fx).unwrap();
    chmod_world_readable(&dir);
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(&gt)
        .args(["-o", "/tmp", "--"])
        .arg(&fx)
        .env("GOTRACE_HOLD", "100ms")
        .stdin(Stdio::null())
        .output_within(RUN_TIMEOUT)
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.starts_with("gotrace: error:"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(line.contains("permission denied"), "{line}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

fn chmod_world_readable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for p in [dir.to_path_buf(), dir.join("gotrace"), dir.join("chanrecv")] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// On a terminal, a status line every second; off a terminal, none.
#[test]
fn status_line_only_on_a_terminal() {
    let Some(_g) = root_guard() else { return };
    let bin = fixture("chanrecv", "1.26");
    let dir = tempdir("status");
    let cmd = format!(
        "{} --leak-threshold 1s -o {} -- {}",
        gotrace_bin().display(),
        dir.display(),
        bin.display()
    );
    // `script` runs the command on a pseudo-terminal.
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("GOTRACE_HOLD", "2500ms")
        .stdin(Stdio::null())
        .output_within(RUN_TIMEOUT)
        .unwrap();
    let tty = String::from_utf8_lossy(&out.stdout);
    let lines = tty.matches(" live | ").count();
    assert!(lines >= 2, "expected a status line per second:\n{tty}");
    assert!(
        tty.contains(" created | ") && tty.contains(" exited | "),
        "{tty}"
    );
    assert!(tty.contains(" dropped"), "{tty}");

    let out = Command::new(gotrace_bin())
        .args(["--leak-threshold", "1s", "-o"])
        .arg(&dir)
        .arg("--")
        .arg(&bin)
        .env("GOTRACE_HOLD", "1500ms")
        .output_within(RUN_TIMEOUT)
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains(" live | "),
        "no status line off a terminal:\n{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A target in its own mount and PID namespace, run from a binary that only
/// exists inside that mount namespace: gotrace resolves it through
/// /proc/PID/exe and filters on the PID the kernel (host) sees.
#[test]
fn target_in_other_mount_and_pid_namespace() {
    use std::io::BufRead as _;
    let Some(_g) = root_guard() else { return };
    let bin = fixture("chanrecv", "1.26");
    let dir = tempdir("ns");
    let inner = dir.join("inner");
    std::fs::create_dir_all(&inner).unwrap();
    let trigger = dir.join("trigger");
    let script = format!(
        "mount -t tmpfs none {0} && cp {1} {0}/fx && exec {0}/fx",
        inner.display(),
        bin.display()
    );
    let mut ns = Command::new("unshare")
        .args([
            "--mount",
            "--pid",
            "--fork",
            "--mount-proc",
            "--propagation",
            "private",
            "sh",
            "-c",
        ])
        .arg(&script)
        .env("GOTRACE_TRIGGER", &trigger)
        .env("GOTRACE_HOLD", "60s")
        .stdout(Stdio::piped())
        .spawn_within(RUN_TIMEOUT)
        .unwrap();
    let mut out = std::io::BufReader::new(ns.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("waiting for trigger") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "fixture ended early");
    }
    // The fixture is unshare's forked child: its PID as the host sees it.
    let children =
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", ns.id())).unwrap();
    let host_pid: u32 = children
        .split_whitespace()
        .next()
        .expect("child")
        .parse()
        .unwrap();
    assert!(
        !inner.join("fx").exists(),
        "the binary must not be visible outside the namespace"
    );
    let exe = std::fs::read_link(format!("/proc/{host_pid}/exe")).unwrap();
    assert!(exe.ends_with("fx"), "{exe:?}");

    let mut gotrace = Command::new(gotrace_bin())
        .args(["--duration", "3s", "--leak-threshold", "1s", "-o"])
        .arg(&dir)
        .arg("--pid")
        .arg(host_pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn_within(RUN_TIMEOUT)
        .unwrap();
    let mut err = std::io::BufReader::new(gotrace.stderr.take().unwrap());
    let mut first = String::new();
    err.read_line(&mut first).unwrap();
    assert!(first.contains("attached"), "{first}");
    std::fs::write(&trigger, b"go").unwrap();
    let status = gotrace.wait().unwrap();
    // SAFETY: signalling processes we started.
    unsafe { libc::kill(host_pid as i32, libc::SIGKILL) };
    let _ = ns.kill();
    let _ = ns.wait();
    assert_eq!(status.code(), Some(3), "leaks found");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    check_group(&report);
    assert_eq!(report["target"]["pid"], host_pid);
    let _ = std::fs::remove_dir_all(&dir);
}
