//! `gotrace top`: the live view. Without a terminal it prints one plain line
//! per second; on a terminal (tmux) it draws a screen and restores the
//! terminal at the end.

use std::process::Command;
use std::time::{Duration, Instant};

use gotrace_e2e::{CommandExt as _, RUN_TIMEOUT, fixture, gotrace_bin, root_guard, trace_pid};

/// `growth` starts one leaking main.handleRequest every 10 ms: top must show
/// it as the fastest-growing group, at about 100 goroutines a second.
#[test]
fn plain_lines_when_not_a_terminal() {
    let Some(_g) = root_guard() else { return };
    let bin = fixture("growth", "1.26");
    let t = trace_pid(&bin, "8s", &["top", "--duration", "4s"]).unwrap_or_else(|e| panic!("{e:#}"));
    let lines: Vec<&str> = t
        .gotrace_stdout
        .lines()
        .filter(|l| l.starts_with("t="))
        .collect();
    assert!(lines.len() >= 4, "{}", t.gotrace_stdout);
    assert!(
        !t.gotrace_stdout.contains('\x1b'),
        "escape codes on a pipe:\n{}",
        t.gotrace_stdout
    );
    let last = lines[lines.len() - 1];
    for field in [
        "live=",
        "parked=",
        "contexts_live=",
        "events_per_s=",
        "dropped=0",
        "mode=budgeted",
        "budget_pct=3",
    ] {
        assert!(last.contains(field), "{field} missing: {last}");
    }
    let growth: f64 = last
        .split(" top=main.handleRequest@")
        .nth(1)
        .and_then(|rest| rest.split("growth=").nth(1))
        .and_then(|g| g.trim_end_matches("/s").parse().ok())
        .unwrap_or_else(|| panic!("handleRequest is not the top group: {last}"));
    assert!((40.0..=150.0).contains(&growth), "growth {growth}: {last}");
    // Then the usual summary, and report.json because -o was given.
    assert!(t.gotrace_stdout.contains("main.handleRequest"));
    assert_eq!(t.report["trace"]["ended_by"], "duration");
}

fn tmux(socket: &str, args: &[&str]) -> String {
    let out = Command::new("tmux")
        .arg("-L")
        .arg(socket)
        .args(args)
        .output_within(RUN_TIMEOUT)
        .expect("tmux");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct KillServer(String);
impl Drop for KillServer {
    fn drop(&mut self) {
        tmux(&self.0, &["kill-server"]);
    }
}

#[test]
fn screen_under_tmux() {
    let Some(_g) = root_guard() else { return };
    let bin = fixture("growth", "1.26");
    let socket = format!("gotrace-top-{}", std::process::id());
    let _server = KillServer(socket.clone());
    let cmd = format!(
        "env GOTRACE_HOLD=10s {} top --duration 4s -- {}; echo TOP-EXIT=$?; sleep 60",
        gotrace_bin().display(),
        bin.display()
    );
    tmux(
        &socket,
        &[
            "new-session",
            "-d",
            "-s",
            "top",
            "-x",
            "130",
            "-y",
            "40",
            &cmd,
        ],
    );
    let capture = || tmux(&socket, &["capture-pane", "-p", "-t", "top"]);
    // The screen, while tracing.
    let start = Instant::now();
    let mut screen = String::new();
    while start.elapsed() < Duration::from_secs(20) {
        screen = capture();
        if screen.contains("main.handleRequest (main.go:") {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(screen.contains("gotrace top — PID"), "{screen}");
    assert!(screen.contains("GROWTH/s"), "{screen}");
    assert!(
        screen.contains("PARKED USER GOROUTINES BY REASON"),
        "{screen}"
    );
    let row = screen
        .lines()
        .find(|l| l.contains("main.handleRequest (main.go:"))
        .unwrap_or_else(|| panic!("no handleRequest row:\n{screen}"));
    assert!(row.contains('+'), "{row}");
    // After the trace: the terminal is back (no alternate screen) and shows
    // the summary and the exit status.
    let start = Instant::now();
    let mut after = String::new();
    while start.elapsed() < Duration::from_secs(30) {
        after = capture();
        if after.contains("TOP-EXIT=") {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    // The growing handlers are proven leaked at the end: status 3.
    assert!(after.contains("TOP-EXIT=3"), "{after}");
    assert!(
        !after.contains("GROWTH/s"),
        "alternate screen not left:\n{after}"
    );
    let alt = tmux(
        &socket,
        &["display-message", "-p", "-t", "top", "#{alternate_on}"],
    );
    assert_eq!(alt.trim(), "0");
}
