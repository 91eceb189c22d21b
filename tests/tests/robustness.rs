//! Failure-proofing: the target is never hurt (stack growth, panics,
//! Goexit and churn under the probes on every Go version), and every way a
//! trace can go wrong ends with a report or one clear line: a full ring
//! buffer, a target that execs, a second gotrace, a target that dies while
//! gotrace attaches, a Go version gotrace does not know.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use gotrace_e2e::{
    CommandExt as _, RUN_TIMEOUT, assert_one_line_error, fixture, fixture_variant, gotrace,
    gotrace_bin, per_go_version, root_guard, trace_command, trace_pid,
};

/// The stress fixture (deep recursion parked at the bottom, panics recovered
/// at depth, Goexit from deep frames, 5000-goroutine churn; 27 000
/// goroutines in all) runs to completion with correct results, traced from
/// its first instruction, twice in a row: every goroutine it starts is seen
/// created and exiting, and the default ring buffer drops nothing (drops
/// with a small ring: `ring_buffer_overflow_is_counted`).
fn stress_runs_clean(go: &str) {
    let bin = fixture("stress", go);
    for round in 0..2 {
        let t = trace_command(&bin, "0s", &[]).unwrap_or_else(|e| panic!("{e:#}"));
        assert!(
            t.fixture_stdout.contains("stress ok "),
            "Go {go} round {round}:\n{}\n{}",
            t.fixture_stdout,
            t.gotrace_stderr
        );
        let r = &t.report;
        assert_eq!(r["trace"]["ended_by"], "target-exit", "{r:#}");
        assert_eq!(r["target"]["exit"], "exit status 0", "{r:#}");
        assert_eq!(r["trace"]["kernel"]["dropped_total"], 0, "{:#}", r["trace"]);
        let spawned = t.fixture_count("spawned", "goroutines");
        let by_main = |key: &str| -> u64 {
            let growth = r["growth"].as_array().expect("growth");
            let from_main = growth
                .iter()
                .filter(|g| g["created_at"]["function"] == "main.main");
            from_main.map(|g| g[key].as_u64().unwrap()).sum()
        };
        assert_eq!(by_main("created"), spawned, "Go {go}: {:#}", r["growth"]);
        assert_eq!(by_main("exited"), spawned, "Go {go}: {:#}", r["growth"]);
        assert_eq!(r["trace"]["inconsistent_events"], 0);
    }
}

per_go_version!(stress_runs_clean);

/// A 4 KiB ring buffer against ctxcount's burst of ~18 000 events: drops are
/// counted per kind, shown in the summary with a warning, and the model
/// stays consistent (no negative counts, nothing exits twice).
#[test]
fn ring_buffer_overflow_is_counted() {
    let Some(_g) = root_guard() else { return };
    let bin = fixture("ctxcount", "1.26");
    let t = trace_command(&bin, "1s", &["--ring-buffer", "4K"]).unwrap_or_else(|e| panic!("{e:#}"));
    let k = &t.report["trace"]["kernel"];
    let total = k["dropped_total"].as_u64().unwrap();
    assert!(total > 0, "no drops with a 4K ring buffer: {k:#}");
    let per_kind: u64 = k["dropped"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(per_kind, total, "{k:#}");
    let line = t
        .gotrace_stdout
        .lines()
        .find(|l| l.starts_with("events: "))
        .unwrap();
    assert!(line.contains(&format!("{total} dropped (")), "{line}");
    assert!(
        t.gotrace_stdout
            .contains("warning: the ring buffer was full"),
        "{}",
        t.gotrace_stdout
    );
    let g = &t.report["goroutines"];
    let n = |k: &str| g[k].as_u64().unwrap_or_else(|| panic!("{k}: {g:#}"));
    assert!(
        n("exited") <= n("created") + n("seen_before_attach"),
        "{g:#}"
    );
    assert_eq!(n("live_at_end"), n("live_user") + n("live_system"), "{g:#}");
    let c = &t.report["contexts"];
    assert!(
        c["cancelled"].as_u64().unwrap()
            <= c["created"].as_u64().unwrap() + c["cancelled_before_seen"].as_u64().unwrap(),
        "{c:#}"
    );
    // Bad sizes are usage errors.
    let out = gotrace(&["--ring-buffer", "3M", "--pid", "1"]);
    assert_eq!(out.status.code(), Some(2));
}

/// The target replaces itself with /bin/sleep: the trace ends there
/// ("target-exec") and the report still has the goroutines it leaked.
#[test]
fn exec_ends_the_trace_with_a_report() {
    let Some(_g) = root_guard() else { return };
    let bin = fixture("execer", "1.26");
    let t = trace_pid(&bin, "2s", &["--full", "--leak-threshold", "1s"])
        .unwrap_or_else(|e| panic!("{e:#}"));
    let r = &t.report;
    assert_eq!(r["trace"]["ended_by"], "target-exec", "{r:#}");
    let exit = r["target"]["exit"].as_str().unwrap();
    assert!(
        exit.starts_with("exec'd ") && exit.ends_with("/sleep"),
        "{exit}"
    );
    let g = t.suspects_running("main.waitForever");
    assert_eq!(g.len(), 1, "{r:#}");
    assert_eq!(g[0]["count"], 3);
    assert_eq!(t.exit_code, Some(3));
}

/// A second gotrace on the same process is refused, naming the first; the
/// first one is not disturbed.
#[test]
fn second_gotrace_is_refused() {
    let Some(_g) = root_guard() else { return };
    let bin = fixture("chanrecv", "1.26");
    let dir = tempfile::tempdir().unwrap();
    let trigger = dir.path().join("trigger");
    let mut target = Command::new(&bin)
        .env("GOTRACE_TRIGGER", &trigger)
        .env("GOTRACE_HOLD", "30s")
        .stdout(Stdio::null())
        .spawn_within(RUN_TIMEOUT)
        .unwrap();
    let pid = target.id().to_string();
    let mut first = Command::new(gotrace_bin())
        .args([
            "--pid",
            &pid,
            "--duration",
            "4s",
            "--leak-threshold",
            "1s",
            "-o",
        ])
        .arg(dir.path().join("first"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn_within(RUN_TIMEOUT)
        .unwrap();
    let mut err = BufReader::new(first.stderr.take().unwrap());
    let mut line = String::new();
    while err.read_line(&mut line).unwrap() > 0 && !line.contains("attached") {}
    assert!(line.contains("attached"), "{line}");
    let second_dir = dir.path().join("second");
    let out = gotrace(&["--pid", &pid, "-o", second_dir.to_str().unwrap()]);
    assert_one_line_error(
        &out,
        &format!(
            "PID {pid} is already being traced by gotrace (PID {})",
            first.id()
        ),
    );
    assert!(!second_dir.join("report.json").exists());
    std::fs::write(&trigger, "go").unwrap();
    let status = first.wait().unwrap();
    // The trigger planted 10 receivers, parked about 4 s at the end.
    assert_eq!(status.code(), Some(3), "{status:?}");
    assert!(dir.path().join("first/report.json").exists());
    // Once the first has gone, the lock is free again.
    let out = gotrace(&[
        "--pid",
        &pid,
        "--duration",
        "1s",
        "--leak-threshold",
        "1s",
        "-o",
        second_dir.to_str().unwrap(),
    ]);
    // The same receivers, read at attach, parked for over 4 s.
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let _ = target.kill();
    let _ = target.wait();
}

/// The target is killed at different moments while gotrace attaches: each
/// run ends with one clear error line or with a report, never a panic.
#[test]
fn target_killed_during_attach() {
    let Some(_g) = root_guard() else { return };
    let bin = fixture("chanrecv", "1.26");
    for delay_ms in [0u64, 2, 5, 10, 20, 40, 80, 160] {
        let dir = tempfile::tempdir().unwrap();
        let mut target = Command::new(&bin)
            .env("GOTRACE_TRIGGER", dir.path().join("never"))
            .stdout(Stdio::null())
            .spawn_within(RUN_TIMEOUT)
            .unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let pid = target.id().to_string();
        let tracer = Command::new(gotrace_bin())
            .args(["--pid", &pid, "--duration", "5s", "-o"])
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn_within(RUN_TIMEOUT)
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = target.kill();
        let _ = target.wait();
        let out = tracer.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
            "delay {delay_ms}ms: {stderr}"
        );
        match out.status.code() {
            Some(1) => {
                let errors: Vec<&str> = stderr
                    .lines()
                    .filter(|l| l.starts_with("gotrace: error: "))
                    .collect();
                assert_eq!(errors.len(), 1, "delay {delay_ms}ms: {stderr}");
            }
            // Never triggered, it planted nothing: no suspects.
            Some(0) => {
                let r: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap())
                        .unwrap();
                assert_eq!(r["trace"]["ended_by"], "target-exit", "delay {delay_ms}ms");
            }
            other => panic!("delay {delay_ms}ms: exit {other:?}: {stderr}"),
        }
    }
}

fn patched_copy(bin: &Path, from: &[u8], to: &[u8], dir: &Path) -> std::path::PathBuf {
    let mut data = std::fs::read(bin).unwrap();
    let mut n = 0;
    let mut i = 0;
    while let Some(at) = data[i..].windows(from.len()).position(|w| w == from) {
        data[i + at..i + at + to.len()].copy_from_slice(to);
        i += at + from.len();
        n += 1;
    }
    assert!(
        n > 0,
        "{} has no {:?}",
        bin.display(),
        String::from_utf8_lossy(from)
    );
    let out = dir.join(bin.file_name().unwrap());
    std::fs::write(&out, data).unwrap();
    std::fs::set_permissions(&out, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    out
}

/// Version strings rewritten in real binaries: a Go too old is refused; a
/// stripped Go newer than the layout table is refused (no DWARF to read
/// offsets from), and so is a stripped Go 1.20 (no 1.20 toolchain can be
/// installed to build its table entry from); each in one line.
#[test]
fn unknown_go_versions_are_refused() {
    let Some(_g) = root_guard() else { return };
    let dir = tempfile::tempdir().unwrap();
    let old = patched_copy(
        &fixture("chanrecv", "1.26"),
        b"go1.26.",
        b"go1.12.",
        dir.path(),
    );
    let out = gotrace(&["--", old.to_str().unwrap()]);
    assert_one_line_error(&out, "unsupported Go version go1.12.");
    assert_one_line_error(&out, "gotrace supports Go 1.19 and later");

    let future_dir = dir.path().join("future");
    std::fs::create_dir(&future_dir).unwrap();
    let stripped = fixture_variant("chanrecv", "1.26", "stripped", &["-ldflags=-s -w"]);
    let future = patched_copy(&stripped, b"go1.26.", b"go1.99.", &future_dir);
    let out = gotrace(&["--", future.to_str().unwrap()]);
    assert_one_line_error(&out, "newer than gotrace's runtime layout table");

    let go1_20_dir = dir.path().join("go1.20");
    std::fs::create_dir(&go1_20_dir).unwrap();
    let stripped = fixture_variant("chanrecv", "1.21", "stripped", &["-ldflags=-s -w"]);
    let go1_20 = patched_copy(&stripped, b"go1.21.", b"go1.20.", &go1_20_dir);
    let out = gotrace(&["--", go1_20.to_str().unwrap()]);
    assert_one_line_error(
        &out,
        "is not in gotrace's runtime layout table (1.19, 1.21, ",
    );
    assert_one_line_error(&out, "the binary has no DWARF: rebuild without -w");
}
