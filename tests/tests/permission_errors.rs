//! "Permission denied" says what to do: get root or CAP_SYS_PTRACE when
//! gotrace has neither, and what else refuses when it has them (here: a
//! sandbox whose root may not read /proc/1/exe).

use std::process::{Command, Stdio};

use gotrace_e2e::{
    CommandExt as _, RUN_TIMEOUT, assert_one_line_error, gotrace, gotrace_bin, root_guard,
};

/// As user nobody with no capabilities, inspecting a root process.
#[test]
fn without_privilege_the_error_says_get_it() {
    let Some(_g) = root_guard() else { return };
    let mut target = Command::new("sleep")
        .arg("60")
        .stdout(Stdio::null())
        .spawn_within(RUN_TIMEOUT)
        .unwrap();
    let pid = target.id();
    for sub in ["", "snapshot "] {
        let out = Command::new("capsh")
            .args(["--user=nobody", "--", "-c"])
            .arg(format!("exec {} {sub}--pid {pid}", gotrace_bin().display()))
            .stdin(Stdio::null())
            .output_within(RUN_TIMEOUT)
            .unwrap();
        assert_one_line_error(
            &out,
            &format!(
                "permission denied inspecting PID {pid}: run gotrace as root (or with CAP_SYS_PTRACE)"
            ),
        );
    }
    let _ = target.kill();
    let _ = target.wait();
}

/// As root where even root may not read PID 1 (a sandbox): the error names
/// the other causes instead of "run gotrace as root".
#[test]
fn as_root_the_error_says_what_else_refuses() {
    let Some(_g) = root_guard() else { return };
    if std::fs::read_link("/proc/1/exe").is_ok() {
        eprintln!("skipping: root may read /proc/1/exe here, nothing else refuses");
        return;
    }
    for args in [
        &["--pid", "1", "--duration", "1s"][..],
        &["snapshot", "--pid", "1"],
    ] {
        let out = gotrace(args);
        assert_one_line_error(
            &out,
            "permission denied inspecting PID 1: gotrace already runs as root with CAP_SYS_PTRACE, so something else refuses it",
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("run gotrace as root"), "{stderr}");
        assert!(stderr.contains("an LSM"), "{stderr}");
        assert!(
            stderr.contains("ptrace_scope") || stderr.contains("Yama is not active"),
            "{stderr}"
        );
    }
}
