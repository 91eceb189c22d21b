//! Goroutines that exist before gotrace attaches. The `preexisting` fixture
//! leaks thousands of goroutines at two sites, prints what its own
//! `runtime.Stack(all)` dump says about them, and waits. `gotrace snapshot`
//! and the `--pid` trace must count them exactly, with the same sites, wait
//! reasons and goids.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use gotrace_e2e::{
    CommandExt as _, RUN_TIMEOUT, fixture, fixture_variant, gotrace_bin, hold_fixture, root_guard,
    trace_pid,
};
use serde_json::Value;

/// One `stacks` line of the fixture: its own goroutine dump, grouped.
#[derive(Debug)]
struct Own {
    function: String,
    count: u64,
    state: String,
    creator: String,
    /// "file:line" of the `go` statement.
    site: String,
    goids: Vec<u64>,
}

fn own_stacks(stdout: &str) -> Vec<Own> {
    let own: Vec<Own> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("stacks "))
        .map(|l| {
            let (head, goids) = l.split_once(" goids ").expect("goids");
            let (head, creator) = head.split_once(" created-by ").expect("created-by");
            let (head, state) = head.split_once(" [").expect("state");
            let (function, count) = head.split_once(' ').expect("count");
            let (creator, site) = creator.split_once(' ').expect("site");
            let mut goids: Vec<u64> = goids.split(',').map(|g| g.parse().unwrap()).collect();
            goids.sort_unstable();
            Own {
                function: function.into(),
                count: count.parse().unwrap(),
                state: state.trim_end_matches(']').into(),
                creator: creator.into(),
                site: site.into(),
                goids,
            }
        })
        .collect();
    assert_eq!(own.len(), 2, "two leak sites in:\n{stdout}");
    own
}

fn site(frame: &Value) -> String {
    format!(
        "{}:{}",
        frame["file"].as_str().unwrap_or("?"),
        frame["line"]
    )
}

fn goids(v: &Value) -> Vec<u64> {
    let mut g: Vec<u64> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    g.sort_unstable();
    g
}

fn snapshot(pid: u32, json: bool) -> Output {
    let mut c = Command::new(gotrace_bin());
    c.args(["snapshot", "--pid", &pid.to_string()]);
    if json {
        c.arg("--json");
    }
    c.stdin(Stdio::null())
        .output_within(RUN_TIMEOUT)
        .expect("run gotrace snapshot")
}

/// `gotrace snapshot` on the held fixture agrees with its own dump.
fn check_snapshot(bin: &std::path::Path, leaks: u64) {
    let held = hold_fixture(
        bin,
        &[("GOTRACE_LEAKS", &leaks.to_string())],
        Duration::from_secs(120),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let own = own_stacks(&held.stdout);
    let out = snapshot(held.pid, true);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    eprintln!("{}: {}", bin.display(), stderr.trim());
    let r: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let groups = r["groups"].as_array().unwrap();
    for o in &own {
        let gs: Vec<&Value> = groups
            .iter()
            .filter(|g| g["start_function"] == o.function.as_str())
            .collect();
        assert_eq!(gs.len(), 1, "{}: {gs:#?}", o.function);
        let g = gs[0];
        assert_eq!(g["count"], o.count, "{}", o.function);
        assert_eq!(goids(&g["goids"]), o.goids, "{}", o.function);
        assert_eq!(g["state"], "waiting");
        assert_eq!(g["wait_reason"], o.state.as_str());
        assert_eq!(g["created_at"]["function"], o.creator.as_str());
        assert_eq!(site(&g["created_at"]), o.site);
        assert_eq!(g["blocked_at"]["function"], o.function.as_str());
        // The fixture ran a GC after planting: waitsince is recorded.
        assert_eq!(g["blocked_since_unknown"], 0, "{g:#}");
        assert!(g["blocked_for_s"]["min"].as_f64().unwrap() > 0.0);
    }
    assert_eq!(
        own.iter().map(|o| o.count).sum::<u64>(),
        leaks,
        "the fixture's own count"
    );
    // Every user goroutine, as runtime.NumGoroutine counts them.
    assert_eq!(r["user"], held.count("goroutines"), "{stderr}");
    let stats = &r["stats"];
    assert_eq!(stats["skipped"], 0, "{stats}");
    assert_eq!(stats["stacks_truncated"], 0, "{stats}");
    eprintln!(
        "snapshot of {} goroutines took {} ms",
        r["total"], r["took_ms"]
    );

    // The text form, pprof-like.
    let out = snapshot(held.pid, false);
    let text = String::from_utf8_lossy(&out.stdout);
    for o in &own {
        let header = format!("{} goroutines: [{}", o.count, o.state);
        assert!(text.contains(&header), "{header:?} not in:\n{text}");
        assert!(text.contains(&format!("created by {}", o.creator)));
        assert!(text.contains(&format!("\n{}(...)\n\t", o.function)));
    }
    assert!(
        text.starts_with(&format!("goroutine profile: total {}\n", r["user"])),
        "{text}"
    );
}

/// The `--pid` trace counts the goroutines from before attach exactly, in
/// the same groups as the ones leaked at the same site after attach.
fn check_trace(bin: &std::path::Path, record: bool) {
    let rec = tempfile::tempdir().unwrap();
    let rec_file = rec.path().join("trace.gotrace");
    let mut args = vec!["--duration", "3s", "--leak-threshold", "1s"];
    if record {
        args.extend(["--record", rec_file.to_str().unwrap()]);
    }
    let t = trace_pid(bin, "60s", &args).unwrap_or_else(|e| panic!("{e:#}"));
    let own = own_stacks(&t.fixture_stdout);
    let after = t.fixture_count("planted", "receivers-after-attach");
    let r = &t.report;
    let snap = &r["trace"]["snapshot"];
    assert_eq!(snap["error"], Value::Null, "{snap}");
    assert!(
        t.gotrace_stderr.contains("existing goroutines in"),
        "{}",
        t.gotrace_stderr
    );
    assert_eq!(r["goroutines"]["read_at_attach"], snap["goroutines"]);
    for o in &own {
        let gs = t.suspects_running(&o.function);
        assert_eq!(gs.len(), 1, "{}: {gs:#?}", o.function);
        let g = gs[0];
        let extra = if o.function == "main.receiveForever" {
            after
        } else {
            0
        };
        assert_eq!(g["count"], o.count + extra, "{}: {g:#}", o.function);
        assert_eq!(g["before_attach"], o.count, "{}", o.function);
        assert_eq!(g["blocked_before_attach"], o.count, "{}", o.function);
        assert_eq!(g["wait_reason"], o.state.as_str());
        assert_eq!(g["created_at"]["function"], o.creator.as_str());
        assert_eq!(site(&g["created_at"]), o.site);
        assert_eq!(g["blocked_at"]["function"], o.function.as_str());
        // Blocked since the fixture's GC, before the 3 s trace began.
        let max = g["blocked_for_s"]["max"].as_f64().unwrap();
        assert!(max >= 2.9, "{}: {}", o.function, g["blocked_for_s"]);
        assert_eq!(g["pattern"], o.state.replace(' ', "_"));
    }
    if record {
        // The replay seeds its model from the recording's snapshot.
        let dir = rec.path().join("replayed");
        let out = Command::new(gotrace_bin())
            .arg("report")
            .arg(&rec_file)
            .arg("-o")
            .arg(&dir)
            .output_within(RUN_TIMEOUT)
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(3),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let replayed: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap())
                .unwrap();
        assert_eq!(&replayed, r);
    }
}

fn snapshot_counts_exactly(go: &str) {
    check_snapshot(&fixture("preexisting", go), 5000);
}

fn trace_counts_existing_goroutines(go: &str) {
    check_trace(&fixture("preexisting", go), go == "1.26");
}

gotrace_e2e::per_go_version!(snapshot_counts_exactly, trace_counts_existing_goroutines);

#[test]
fn stripped_binaries() {
    let Some(_g) = root_guard() else { return };
    for go in ["1.21", "1.26"] {
        let bin = fixture_variant("preexisting", go, "stripped", &["-ldflags=-s -w"]);
        check_snapshot(&bin, 5000);
        check_trace(&bin, false);
    }
}

#[test]
fn pie_binary() {
    let Some(_g) = root_guard() else { return };
    let bin = fixture_variant("preexisting", "1.27", "pie", &["-buildmode=pie"]);
    check_snapshot(&bin, 2000);
    check_trace(&bin, false);
}

/// 100k goroutines: the counts stay exact. The time it takes is printed,
/// not asserted (a shared 2-core machine is no benchmark).
#[test]
fn hundred_thousand_goroutines() {
    let Some(_g) = root_guard() else { return };
    check_snapshot(&fixture("preexisting", "1.26"), 100_000);
}

/// A process in motion (goroutines created, growing their stacks, parking
/// and exiting all the time): every snapshot still succeeds and still
/// counts the parked leaks exactly; what changed while read is re-read.
#[test]
fn snapshot_of_a_busy_process() {
    let Some(_g) = root_guard() else { return };
    for go in ["1.19", "1.26"] {
        let mut held = hold_fixture(
            &fixture("preexisting", go),
            &[("GOTRACE_LEAKS", "2000"), ("GOTRACE_CHURN", "1")],
            Duration::from_secs(60),
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
        let own = own_stacks(&held.stdout);
        let (mut retried, mut unstable, mut skipped) = (0, 0, 0);
        for _ in 0..30 {
            let out = snapshot(held.pid, true);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(0), "{stderr}");
            let r: Value = serde_json::from_slice(&out.stdout).expect("JSON");
            for o in &own {
                let g = r["groups"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|g| g["start_function"] == o.function.as_str())
                    .unwrap_or_else(|| panic!("no {} group", o.function));
                assert_eq!(goids(&g["goids"]), o.goids, "{}", o.function);
            }
            let s = &r["stats"];
            retried += s["retried"].as_u64().unwrap();
            unstable += s["unstable"].as_u64().unwrap();
            skipped += s["skipped"].as_u64().unwrap();
        }
        eprintln!(
            "Go {go}, 30 snapshots: {retried} re-read, {unstable} kept changing, {skipped} skipped"
        );
        assert!(held.alive(), "the target survived");
    }
}

/// Bad input: one line, non-zero exit.
#[test]
fn snapshot_errors() {
    let out = snapshot(999_999_999, false);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim(),
        "gotrace: error: no process with PID 999999999"
    );
    // Not a Go program.
    let Some(_g) = root_guard() else { return };
    let mut sleeper = Command::new("sleep")
        .arg("30")
        .spawn_within(RUN_TIMEOUT)
        .unwrap();
    let out = snapshot(sleeper.id(), false);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("not a Go binary"), "{stderr}");
}

/// Without root (or CAP_SYS_PTRACE) reading another user's process is a
/// clear one-line error.
#[test]
fn snapshot_needs_privileges() {
    use std::os::unix::fs::PermissionsExt as _;
    let Some(_g) = root_guard() else { return };
    let held = hold_fixture(
        &fixture("preexisting", "1.26"),
        &[("GOTRACE_LEAKS", "10")],
        Duration::from_secs(60),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    // gotrace lives under root's target dir: copy it where nobody can run it.
    let dir = tempfile::tempdir().unwrap();
    let gt = dir.path().join("gotrace");
    std::fs::copy(gotrace_bin(), &gt).unwrap();
    for p in [dir.path(), gt.as_path()] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(&gt)
        .args(["snapshot", "--pid", &held.pid.to_string()])
        .stdin(Stdio::null())
        .output_within(RUN_TIMEOUT)
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("gotrace: error: permission denied")
            && stderr.contains("CAP_SYS_PTRACE"),
        "{stderr}"
    );
}
