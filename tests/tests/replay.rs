//! Record and replay: `gotrace --pid N --record FILE` writes the raw event
//! stream; `gotrace report FILE` (run as an unprivileged user, with no
//! process to look at) rebuilds every output, byte for byte the live ones.

use std::path::{Path, PathBuf};
use std::process::Command;

use gotrace_e2e::{CommandExt as _, RUN_TIMEOUT, fixture, gotrace_bin, root_guard, trace_pid};

fn out_dir(stderr: &str) -> PathBuf {
    let line = stderr
        .lines()
        .find_map(|l| l.strip_prefix("gotrace: report written to "))
        .expect("report path on stderr");
    PathBuf::from(line).parent().unwrap().to_path_buf()
}

/// Every output file gotrace wrote in `dir`, by name.
fn outputs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name != "trigger" && !name.ends_with(".gotrace")
        })
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

/// Runs `gotrace ARGS` as user nobody; returns (exit code, stdout, stderr).
fn gotrace_as_nobody(args: &[&std::ffi::OsStr]) -> (Option<i32>, String, String) {
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(gotrace_bin())
        .args(args)
        .output_within(RUN_TIMEOUT)
        .expect("setpriv");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn offline_report_equals_the_live_one() {
    let Some(_g) = root_guard() else { return };
    let bin = fixture("leakyservice", "1.26");
    let rec_dir = tempfile::tempdir().unwrap();
    let rec = rec_dir.path().join("trace.gotrace");
    let t = trace_pid(
        &bin,
        "60s",
        &[
            "--full",
            "--duration",
            "3s",
            "--leak-threshold",
            "1s",
            "--record",
            rec.to_str().unwrap(),
        ],
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        t.gotrace_stderr.contains("recording written to"),
        "{}",
        t.gotrace_stderr
    );
    let live_dir = out_dir(&t.gotrace_stderr);
    let live = outputs(&live_dir);
    let names: Vec<&str> = live.iter().map(|(n, _)| n.as_str()).collect();
    for want in [
        "report.json",
        "blocked.svg",
        "goroutines.pb.gz",
        "offcpu.folded",
        "timeline.json",
    ] {
        assert!(names.contains(&want), "{want} not in {names:?}");
    }
    // The live trace saw the planted leaks and the contexts.
    assert!(!t.suspects().is_empty());
    assert!(
        t.report["contexts"]["created"].as_u64().unwrap_or(0) > 0,
        "{:#}",
        t.report["contexts"]
    );

    // Offline, unprivileged, into a directory nobody may write.
    let off = tempfile::tempdir().unwrap();
    let off_dir = off.path().join("out");
    std::fs::create_dir(&off_dir).unwrap();
    std::os::unix::fs::chown(&off_dir, Some(65534), Some(65534)).unwrap();
    let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    std::fs::set_permissions(off.path(), mode).unwrap();
    std::fs::set_permissions(
        rec_dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let (code, stdout, stderr) = gotrace_as_nobody(&[
        "report".as_ref(),
        rec.as_os_str(),
        "-o".as_ref(),
        off_dir.as_os_str(),
    ]);
    assert_eq!(code, t.exit_code, "{stderr}");
    assert_eq!(stdout, t.gotrace_stdout, "summary differs");
    let offline = outputs(&off_dir);
    assert_eq!(
        offline.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        live.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    for ((name, a), (_, b)) in live.iter().zip(&offline) {
        if a != b {
            let diff = Command::new("diff")
                .arg("-u")
                .arg(live_dir.join(name))
                .arg(off_dir.join(name))
                .output_within(RUN_TIMEOUT)
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            let head: String = diff.lines().take(60).collect::<Vec<_>>().join("\n");
            panic!("{name} differs between the live and the offline run:\n{head}");
        }
    }

    // A threshold given offline overrides the recorded one.
    let again = off.path().join("again");
    std::fs::create_dir(&again).unwrap();
    std::os::unix::fs::chown(&again, Some(65534), Some(65534)).unwrap();
    let (code, _, stderr) = gotrace_as_nobody(&[
        "report".as_ref(),
        rec.as_os_str(),
        "--leak-threshold".as_ref(),
        "1h".as_ref(),
        "-o".as_ref(),
        again.as_os_str(),
    ]);
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(again.join("report.json")).unwrap()).unwrap();
    // No goroutine is parked for an hour: only the leaks the recorded proof
    // proved are left among the suspects, and they decide the status.
    let leaked = r["leaked_count"].as_u64().expect("leaked_count");
    assert_eq!(r["suspect_count"], leaked, "{r:#}");
    assert_eq!(code, Some(if leaked > 0 { 3 } else { 0 }), "{stderr}");
    assert_eq!(r["trace"]["leak_threshold_s"], 3600.0);

    // The wrong binary is refused by build id, in one line.
    let other = fixture("control", "1.26");
    let (code, _, stderr) = gotrace_as_nobody(&[
        "report".as_ref(),
        rec.as_os_str(),
        "--binary".as_ref(),
        other.as_os_str(),
        "-o".as_ref(),
        again.as_os_str(),
    ]);
    assert_eq!(code, Some(1));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("is not the recorded binary (build id"),
        "{stderr}"
    );

    // A cut-off recording is an error, not a partial report.
    let bytes = std::fs::read(&rec).unwrap();
    let cut = off.path().join("cut.gotrace");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let (code, _, stderr) = gotrace_as_nobody(&["report".as_ref(), cut.as_os_str()]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.starts_with("gotrace: error: ")
            && stderr.contains("ends before the end of its trace"),
        "{stderr}"
    );
    let (code, _, stderr) = gotrace_as_nobody(&["report".as_ref(), bin.as_os_str()]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("is not a gotrace recording"), "{stderr}");
}

/// The goroutine samples of sampled mode, and of the default `--pid`
/// (budgeted: samples, creation/exit probes once they fit), are recorded
/// too: the offline outputs are the live ones, byte for byte.
#[test]
fn offline_report_of_samples_equals_the_live_one() {
    let Some(_g) = root_guard() else { return };
    let bin = fixture("growth", "1.26");
    for mode in ["--sampled", "--max-overhead=3"] {
        let rec_dir = tempfile::tempdir().unwrap();
        let rec = rec_dir.path().join("trace.gotrace");
        let args = [mode, "--duration", "3s", "--record", rec.to_str().unwrap()];
        let t = trace_pid(&bin, "60s", &args).unwrap_or_else(|e| panic!("{mode}: {e:#}"));
        assert!(
            t.report["trace"]["samples"]["taken"].as_u64().unwrap() >= 3,
            "{mode}: {:#}",
            t.report["trace"]
        );
        let live_dir = out_dir(&t.gotrace_stderr);
        let off = tempfile::tempdir().unwrap();
        let out = Command::new(gotrace_bin())
            .arg("report")
            .arg(&rec)
            .arg("-o")
            .arg(off.path())
            .output_within(RUN_TIMEOUT)
            .unwrap();
        assert_eq!(out.status.code(), t.exit_code, "{mode}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            t.gotrace_stdout,
            "{mode}"
        );
        let (live, offline) = (outputs(&live_dir), outputs(off.path()));
        assert_eq!(live.len(), offline.len(), "{mode}");
        for ((name, a), (_, b)) in live.iter().zip(&offline) {
            assert!(
                a == b,
                "{mode}: {name} differs between the live and the offline run"
            );
        }
    }
}
