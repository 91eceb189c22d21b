//! `gotrace -- CMD` traces the command with ptrace and holds it at its exit:
//! the report's `trace.at_exit` is read from its last state, however it
//! ends (exit code, panic, fatal signal; from the leader thread or another),
//! its exit status is reported unchanged, and signals (preemption, handlers,
//! SIGCHLD, SIGSTOP/SIGCONT) keep working under the tracer.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use gotrace_e2e::*;
use serde_json::Value;

/// How many goroutines the at-exit snapshot saw running `function`,
/// parked in `wait_reason`.
fn at_exit_count(report: &Value, function: &str, wait_reason: &str) -> u64 {
    let a = &report["trace"]["at_exit"];
    assert!(a.is_object(), "no at_exit: {:#}", report["trace"]);
    assert_eq!(a["timed_out"], false, "{a:#}");
    assert_eq!(a["snapshot"]["error"], Value::Null, "{a:#}");
    list(a, "goroutines")
        .iter()
        .filter(|g| g["start_function"] == function && g["wait_reason"] == wait_reason)
        .map(|g| g["count"].as_u64().unwrap())
        .sum()
}

/// chanrecv exits from main (usually on the thread group leader) right
/// after planting; exiter exits with status 7 from another thread.
fn at_exit_sees_every_planted_goroutine(go: &str) {
    let bin = fixture("chanrecv", go);
    let t = trace_command(&bin, "0s", &[]).unwrap_or_else(|e| panic!("{e:#}"));
    let r = &t.report;
    assert_eq!(r["trace"]["ended_by"], "target-exit", "{r:#}");
    assert_eq!(r["target"]["exit"], "exit status 0", "{r:#}");
    let planted = t.fixture_count("planted", "chanrecv");
    assert_eq!(planted, 10);
    assert_eq!(
        at_exit_count(r, "main.receiveForever", "chan receive"),
        planted,
        "Go {go}: {:#}",
        r["trace"]["at_exit"]
    );
    // The planted receivers are proven leaked on the last state: status 3.
    assert_eq!(r["leaked_count"], 10, "{}", t.gotrace_stderr);
    assert_eq!(t.exit_code, Some(3), "{}", t.gotrace_stderr);

    let bin = fixture("exiter", go);
    let t =
        trace_command_env(&bin, &[("GOTRACE_EXIT", "7")], &[]).unwrap_or_else(|e| panic!("{e:#}"));
    let r = &t.report;
    assert_eq!(r["target"]["exit"], "exit status 7", "{r:#}");
    // Held by the exiting thread, not the leader (main is locked to it).
    assert_ne!(r["trace"]["at_exit"]["tid"], r["target"]["pid"], "{r:#}");
    assert_eq!(
        at_exit_count(r, "main.receiveForever", "chan receive"),
        t.fixture_count("planted", "exiter"),
        "Go {go}: {:#}",
        r["trace"]["at_exit"]
    );
    // gotrace's own status does not follow the command's: 3 for the
    // receivers proven leaked at exit.
    assert_eq!(r["leaked_count"], 10, "{}", t.gotrace_stderr);
    assert_eq!(t.exit_code, Some(3), "{}", t.gotrace_stderr);
}

/// Sampled mode (no probe) holds a command at its exit too: the last
/// state is read there and the proof proves the planted receivers leaked.
fn sampled_mode_holds_at_exit(go: &str) {
    let bin = fixture("chanrecv", go);
    let t = trace_command(&bin, "0s", &["--sampled"]).unwrap_or_else(|e| panic!("{e:#}"));
    let r = &t.report;
    assert_eq!(r["trace"]["mode"], "sampled", "{r:#}");
    assert_eq!(r["trace"]["ended_by"], "target-exit", "{r:#}");
    assert_eq!(r["target"]["exit"], "exit status 0", "{r:#}");
    let planted = t.fixture_count("planted", "chanrecv");
    assert_eq!(
        at_exit_count(r, "main.receiveForever", "chan receive"),
        planted,
        "Go {go}: {:#}",
        r["trace"]["at_exit"]
    );
    assert_eq!(r["proof"]["status"], "done", "{:#}", r["proof"]);
    assert_eq!(r["proof"]["leaked"], planted, "{:#}", r["proof"]);
    assert_eq!(r["leaked_count"], planted, "{}", t.gotrace_stderr);
    assert_eq!(t.exit_code, Some(3), "{}", t.gotrace_stderr);
}

/// The command's programs keep their signals: preemption (SIGURG) under
/// GOMAXPROCS 1, 200 SIGUSR1 to a handler, SIGCHLD from os/exec, EPIPE.
fn signals_still_work(go: &str) {
    let bin = fixture("signals", go);
    let t = trace_command(&bin, "0s", &[]).unwrap_or_else(|e| panic!("{e:#}"));
    let out = &t.fixture_stdout;
    assert!(!out.contains("FAIL"), "Go {go}: {out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("signals usr1 "))
        .unwrap_or_else(|| panic!("Go {go}: no result line: {out}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words[2], "200", "{line}");
    assert_ne!(words[4], "0", "{line}");
    assert_ne!(words[5], "0", "{line}");
    assert_eq!(&words[6..], ["children", "20", "epipe", "true"], "{line}");
    assert!(out.contains("\ndone\n"), "{out}");
    assert_eq!(t.report["target"]["exit"], "exit status 0");
    assert_eq!(t.exit_code, Some(0), "{}", t.gotrace_stderr);
}

per_go_version!(
    at_exit_sees_every_planted_goroutine,
    sampled_mode_holds_at_exit,
    signals_still_work
);

/// Each way of ending is reported as it happened, and the last state was
/// read first (SIGKILL included: on Linux 6.18 a killed thread still stops
/// at its ptrace exit event).
#[test]
fn exit_statuses_are_preserved() {
    let Some(_g) = root_guard() else { return };
    let bin = fixture("exiter", "1.26");
    for (how, status) in [
        ("0", "exit status 0"),
        ("3", "exit status 3"),
        ("panic", "exit status 2"),
        ("SIGKILL", "killed by signal 9"),
        ("SIGSEGV", "killed by signal 11"),
    ] {
        let t = trace_command_env(&bin, &[("GOTRACE_EXIT", how)], &[])
            .unwrap_or_else(|e| panic!("{how}: {e:#}"));
        let r = &t.report;
        assert_eq!(r["target"]["exit"], status, "{how}: {r:#}");
        assert_eq!(r["trace"]["ended_by"], "target-exit", "{how}");
        assert_eq!(
            at_exit_count(r, "main.receiveForever", "chan receive"),
            10,
            "{how}: {:#}",
            r["trace"]["at_exit"]
        );
        assert!(
            t.gotrace_stdout.contains("held at exit (thread "),
            "{how}: {}",
            t.gotrace_stdout
        );
        if how == "panic" {
            assert!(
                t.gotrace_stderr
                    .contains("panic: exiter: planted and panicking"),
                "{}",
                t.gotrace_stderr
            );
        }
        // Proven leaked on the last state, however it ended.
        assert_eq!(t.report["leaked_count"], 10, "{how}: {}", t.gotrace_stderr);
        assert_eq!(t.exit_code, Some(3), "{how}: {}", t.gotrace_stderr);
    }
}

/// An analysis that outlasts the hold limit (10 s; made slow on purpose)
/// does not keep the process: it is let go, exits as it would have, and
/// the report says the hold timed out.
#[test]
fn the_hold_limit_lets_the_command_go() {
    let Some(_g) = root_guard() else { return };
    let bin = fixture("exiter", "1.26");
    let start = Instant::now();
    let t = trace_command_env(
        &bin,
        &[
            ("GOTRACE_EXIT", "4"),
            ("GOTRACE_TEST_AT_EXIT_DELAY_MS", "11000"),
        ],
        // The receivers stay parked past the default threshold meanwhile.
        &["--leak-threshold", "60s"],
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let r = &t.report;
    assert_eq!(r["target"]["exit"], "exit status 4", "{r:#}");
    let a = &r["trace"]["at_exit"];
    assert_eq!(a["timed_out"], true, "{a:#}");
    let held = a["held_ms"].as_f64().unwrap();
    assert!((10_000.0..11_000.0).contains(&held), "{a:#}");
    // Read after the process was let go: nothing to read any more.
    assert!(a["snapshot"]["error"].is_string(), "{a:#}");
    assert!(
        t.gotrace_stdout.contains("the hold limit (10 s) ran out"),
        "{}",
        t.gotrace_stdout
    );
    assert_eq!(t.exit_code, Some(0), "{}", t.gotrace_stderr);
    assert!(start.elapsed() < Duration::from_secs(40));
}

/// The state letter of /proc/PID/stat ('T' stopped, 't' stopped under a
/// tracer); None once the process is gone.
fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: signalling the fixture this test started.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill({pid}, {sig})");
}

/// A user's SIGSTOP stops the traced command (it does not go on to exit
/// while stopped) and SIGCONT lets it finish as usual.
#[test]
fn sigstop_and_sigcont_work_under_the_tracer() {
    let Some(_g) = root_guard() else { return };
    let bin = fixture("chanrecv", "1.26");
    let dir = tempfile::tempdir().unwrap();
    let mut gotrace = Command::new(gotrace_bin())
        .arg("-o")
        .arg(dir.path())
        .arg("--")
        .arg(&bin)
        .env("GOTRACE_HOLD", "1s")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn_within(RUN_TIMEOUT)
        .unwrap();
    let (tx, lines) = mpsc::channel();
    let stdout = BufReader::new(gotrace.stdout.take().unwrap());
    std::thread::spawn(move || {
        for l in stdout.lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let next_line = |timeout: Duration| lines.recv_timeout(timeout).ok();
    let first = next_line(Duration::from_secs(30)).expect("fixture line");
    let pid: i32 = first
        .strip_prefix("fixture chanrecv pid ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{first}"));
    assert_eq!(
        next_line(Duration::from_secs(30)).as_deref(),
        Some("planted chanrecv 10")
    );
    signal(pid, libc::SIGSTOP);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !matches!(proc_state(pid), Some('T' | 't')) {
        assert!(Instant::now() < deadline, "{:?}", proc_state(pid));
        std::thread::sleep(Duration::from_millis(10));
    }
    // Its 1 s hold runs out meanwhile: stopped, it cannot print "done".
    assert_eq!(next_line(Duration::from_secs(2)), None);
    assert!(matches!(proc_state(pid), Some('T' | 't')));
    signal(pid, libc::SIGCONT);
    assert_eq!(
        next_line(Duration::from_secs(10)).as_deref(),
        Some("done"),
        "after SIGCONT"
    );
    let status = gotrace.wait().unwrap();
    // The receivers are proven leaked at exit.
    assert_eq!(status.code(), Some(3));
    let r: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(r["target"]["exit"], "exit status 0", "{r:#}");
    assert_eq!(at_exit_count(&r, "main.receiveForever", "chan receive"), 10);
}
