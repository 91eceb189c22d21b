//! Exports next to report.json: folded stacks and inferno flame graphs
//! (blocked, created, off-CPU, suspects) and pprof profiles that the real
//! `go tool pprof` opens.

use std::path::PathBuf;

use gotrace_e2e::{Traced, fixture, root_guard, trace_command};

fn out_dir(t: &Traced) -> PathBuf {
    let line = t
        .gotrace_stderr
        .lines()
        .find_map(|l| l.strip_prefix("gotrace: report written to "))
        .expect("report path on stderr");
    PathBuf::from(line).parent().unwrap().to_path_buf()
}

fn read(dir: &std::path::Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn flame_graphs_of_the_demo_service() {
    let Some(_g) = root_guard() else { return };
    let bin = fixture("leakyservice", "1.26");
    let t = trace_command(&bin, "2s", &["--leak-threshold", "1s"]).unwrap();
    let dir = out_dir(&t);
    let search = t.fixture_count("planted", "search");
    // Folded: root first (the wait reason), leaf last, exact counts.
    let blocked = read(&dir, "blocked.folded");
    let line = blocked
        .lines()
        .find(|l| l.starts_with("chan send;") && l.contains(";main.queryBackend;"))
        .unwrap_or_else(|| panic!("{blocked}"));
    assert!(
        line.ends_with(&format!("runtime.gopark {search}")),
        "{line}"
    );
    let suspects = read(&dir, "suspects.folded");
    assert!(suspects.contains("main.subscriberLoop"), "{suspects}");
    assert!(!suspects.contains("net/http.(*Server).Serve;") || blocked.contains("IO wait"));
    let created = read(&dir, "created.folded");
    assert!(
        created
            .lines()
            .any(|l| l.contains("main.handleSearch") && l.ends_with(&format!(" {search}"))),
        "{created}"
    );
    let offcpu = read(&dir, "offcpu.folded");
    assert!(
        offcpu.lines().any(|l| l.starts_with("chan send;")),
        "{offcpu}"
    );
    // SVGs: searchable inferno graphs titled with the target.
    for name in ["blocked", "created", "offcpu", "suspects"] {
        let svg = read(&dir, &format!("{name}.svg"));
        assert!(
            svg.starts_with("<?xml") && svg.contains("<svg"),
            "{name}.svg"
        );
        assert!(
            svg.contains("main.queryBackend"),
            "{name}.svg lacks the leak"
        );
        assert!(
            svg.contains("leakyservice") && svg.contains("go1.26"),
            "{name}.svg subtitle"
        );
        assert!(svg.contains("search"), "{name}.svg has no search");
    }
}

/// `go tool pprof` (the real one) on gotrace's profiles.
fn pprof(args: &[&str], file: &std::path::Path) -> String {
    let out = std::process::Command::new(gotrace_e2e::go_for("1.26"))
        .args(["tool", "pprof"])
        .args(args)
        .arg(file)
        .env("GOTOOLCHAIN", "local")
        .env("GOCACHE", gotrace_e2e::tools_dir().join("gocache-1.26"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The cum count of `function` in `go tool pprof -top` output.
fn cum(top: &str, function: &str) -> f64 {
    let line = top
        .lines()
        .find(|l| l.split_whitespace().last() == Some(function))
        .unwrap_or_else(|| panic!("{function} not in:\n{top}"));
    let cols: Vec<&str> = line.split_whitespace().collect();
    cols[3]
        .trim_end_matches('s')
        .parse()
        .unwrap_or_else(|_| panic!("{line}"))
}

#[test]
fn pprof_profiles_open_in_go_tool_pprof() {
    let Some(_g) = root_guard() else { return };
    let bin = fixture("leakyservice", "1.26");
    let t = trace_command(&bin, "2s", &["--leak-threshold", "1s"]).unwrap();
    let dir = out_dir(&t);
    let search = t.fixture_count("planted", "search") as f64;
    let subscribe = t.fixture_count("planted", "subscribe") as f64;
    let top = pprof(&["-top"], &dir.join("goroutines.pb.gz"));
    assert!(top.contains("Type: goroutine"), "{top}");
    assert_eq!(cum(&top, "main.queryBackend"), search, "{top}");
    assert_eq!(cum(&top, "main.subscriberLoop"), subscribe, "{top}");
    let traces = pprof(&["-traces"], &dir.join("goroutines.pb.gz"));
    assert!(
        traces.contains("wait_reason:  chan send") || traces.contains("wait_reason: chan send"),
        "{traces}"
    );
    let block = traces
        .split("-----------+")
        .find(|b| b.contains("main.queryBackend"))
        .expect("queryBackend trace");
    let order: Vec<&str> = block
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    let (gopark, leak) = (
        order.iter().position(|f| *f == "runtime.gopark").unwrap(),
        order
            .iter()
            .position(|f| *f == "main.queryBackend")
            .unwrap(),
    );
    assert!(gopark < leak, "innermost first: {block}");
    let delay = pprof(&["-top", "-unit=s"], &dir.join("blocked.pb.gz"));
    assert!(delay.contains("Type: delay"), "{delay}");
    // 450 goroutines parked ≥1s each: at least 450 s of blocked time.
    assert!(cum(&delay, "main.queryBackend") >= search, "{delay}");
}

#[test]
fn nothing_to_draw_is_said_not_drawn() {
    let Some(_g) = root_guard() else { return };
    let bin = fixture("control", "1.26");
    let t = trace_command(&bin, "1s", &["--leak-threshold", "1s"]).unwrap();
    let dir = out_dir(&t);
    assert_eq!(read(&dir, "suspects.folded"), "");
    assert!(!dir.join("suspects.svg").exists());
    assert!(
        t.gotrace_stderr.contains("nothing to draw"),
        "{}",
        t.gotrace_stderr
    );
}
