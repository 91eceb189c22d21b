//! Every value a user can type gets a one-line error, never a panic: the
//! real gotrace binary with bad arguments (no root needed, nothing is
//! traced), and its panic hook.

use std::process::{Command, Output, Stdio};

use gotrace_e2e::{CommandExt as _, RUN_TIMEOUT, assert_one_line_error, gotrace, gotrace_bin};

/// Exit status 2 (usage) and exactly one line on stderr, containing `needle`.
fn assert_usage_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got:\n{stderr}");
    assert!(lines[0].starts_with("gotrace: error: "), "{stderr}");
    assert!(lines[0].contains(needle), "{needle:?} not in {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn huge_durations_are_usage_errors() {
    let huge = "100000000000000000000000s";
    for args in [
        vec!["--duration", huge, "--pid", "1"],
        vec!["--leak-threshold", huge, "--pid", "1"],
        vec!["--leak-threshold", "1e300", "--pid", "1"],
        vec!["--duration", "8761h", "--pid", "1"],
        vec!["top", "--pid", "1", "--duration", huge],
        vec!["top", "--pid", "1", "--leak-threshold", huge],
        vec!["report", "x.gotrace", "--leak-threshold", huge],
    ] {
        let out = gotrace(&args);
        let needle = if args.contains(&"1e300") {
            "invalid duration unit"
        } else {
            "is too long (at most 8760h, one year)"
        };
        assert_usage_error(&out, needle);
    }
}

#[test]
fn other_bad_values_are_one_line_usage_errors() {
    for (args, needle) in [
        (
            &["--duration=-1s", "--pid", "1"][..],
            "invalid duration \"-1s\"",
        ),
        (&["--duration", "5x", "--pid", "1"], "invalid duration unit"),
        (&["--duration", "NaN", "--pid", "1"], "invalid duration"),
        (
            &["--ring-buffer", "3M", "--pid", "1"],
            "must be a power of two",
        ),
        (&["--ring-buffer", "99999999999999999999G"], "invalid size"),
        (&["--pid", "abc"], "invalid value 'abc' for '--pid <PID>'"),
        (&["--pid", "99999999999"], "--pid <PID>"),
        (&["--pid", "1", "--", "ls"], "cannot be used with"),
        (&["snapshot"], "--pid <PID>"),
        (&["--no-such-flag"], "--no-such-flag"),
    ] {
        assert_usage_error(&gotrace(args), needle);
    }
}

#[test]
fn help_and_version_still_print() {
    let out = gotrace(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Exit status:"));
    let out = gotrace(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("gotrace "));
}

/// A panic that slips through anyway is one line and exit status 1.
#[test]
fn a_panic_is_one_line_and_status_1() {
    let out = Command::new(gotrace_bin())
        .arg("--version")
        .env("GOTRACE_TEST_PANIC", "1")
        .stdin(Stdio::null())
        .output_within(RUN_TIMEOUT)
        .expect("run gotrace");
    assert_one_line_error(
        &out,
        "gotrace: error: internal error: GOTRACE_TEST_PANIC is set second line (at ",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{stderr}"
    );
}
