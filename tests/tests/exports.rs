//! Exports next to report.json: folded stacks and inferno flame graphs
//! (blocked, created, off-CPU, suspects), pprof profiles that the real
//! `go tool pprof` opens and the Perfetto / Chrome trace-event timeline.

use std::path::PathBuf;

use gotrace_e2e::{CommandExt as _, RUN_TIMEOUT, Traced, fixture, root_guard, trace_command};

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
    // Suspects: exactly the report's (the accept loop, idle by design, is
    // blocked but no suspect).
    let suspects = read(&dir, "suspects.folded");
    let subscribe = t.fixture_count("planted", "subscribe");
    assert_eq!(
        weight_of(&suspects, "main.queryBackend"),
        search,
        "{suspects}"
    );
    assert_eq!(
        weight_of(&suspects, "main.subscriberLoop"),
        subscribe,
        "{suspects}"
    );
    assert_eq!(weight_of(&suspects, "main.cacheRefresher"), 1, "{suspects}");
    assert_eq!(
        weight_of(&suspects, ""),
        t.report["suspect_count"],
        "{suspects}"
    );
    assert!(
        !suspects.contains("net/http.(*Server).Serve;"),
        "{suspects}"
    );
    assert_eq!(
        weight_of(&blocked, "net/http.(*Server).Serve;"),
        1,
        "{blocked}"
    );
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

/// The summed counts of the folded lines containing `needle`.
fn weight_of(folded: &str, needle: &str) -> u64 {
    folded
        .lines()
        .filter(|l| l.contains(needle))
        .map(|l| {
            let (_, n) = l.rsplit_once(' ').unwrap_or_else(|| panic!("{l}"));
            n.parse::<u64>().unwrap_or_else(|_| panic!("{l}"))
        })
        .sum()
}

/// `go tool pprof` (the real one) on gotrace's profiles.
fn pprof(args: &[&str], file: &std::path::Path) -> String {
    let out = gotrace_e2e::go_tool("1.26")
        .args(["tool", "pprof"])
        .args(args)
        .arg(file)
        .output_within(RUN_TIMEOUT)
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

/// timeline.json, checked against the trace-event format gotrace documents
/// (`export::perfetto`): the events, the track names and the flows.
struct Timeline {
    events: Vec<serde_json::Value>,
    /// tid (goid) → track name.
    tracks: std::collections::BTreeMap<u64, String>,
    /// (name, start event, finish event), matched by id.
    flows: Vec<(String, serde_json::Value, serde_json::Value)>,
}

fn num(e: &serde_json::Value, key: &str) -> f64 {
    e[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number: {e}"))
}

fn tid(e: &serde_json::Value) -> u64 {
    e["tid"].as_u64().unwrap_or_else(|| panic!("no tid: {e}"))
}

fn timeline(dir: &std::path::Path, pid: u64) -> Timeline {
    use std::collections::BTreeMap;
    let json: serde_json::Value = serde_json::from_str(&read(dir, "timeline.json"))
        .unwrap_or_else(|e| panic!("timeline.json is not JSON: {e}"));
    assert_eq!(json["displayTimeUnit"], "ns");
    assert!(json["otherData"].is_object(), "{}", json["otherData"]);
    let events = json["traceEvents"].as_array().expect("traceEvents").clone();
    let mut tracks = BTreeMap::new();
    let mut starts: BTreeMap<(String, u64), serde_json::Value> = BTreeMap::new();
    let mut ends: BTreeMap<(String, u64), serde_json::Value> = BTreeMap::new();
    for e in &events {
        let ph = e["ph"].as_str().unwrap_or_else(|| panic!("no ph: {e}"));
        let name = e["name"].as_str().unwrap_or_else(|| panic!("no name: {e}"));
        assert_eq!(e["pid"].as_u64(), Some(pid), "{e}");
        tid(e);
        num(e, "ts");
        let flow_key = || (name.to_string(), e["id"].as_u64().expect("flow id"));
        match ph {
            "M" => {
                if name == "thread_name" {
                    let track = e["args"]["name"].as_str().expect("track name");
                    assert!(tracks.insert(tid(e), track.to_string()).is_none(), "{e}");
                }
            }
            "X" => assert!(num(e, "dur") >= 0.0, "{e}"),
            "i" => assert!(e["s"] == "t" || e["s"] == "g", "{e}"),
            "s" => assert!(starts.insert(flow_key(), e.clone()).is_none(), "{e}"),
            "f" => {
                assert_eq!(e["bp"], "e", "{e}");
                assert!(ends.insert(flow_key(), e.clone()).is_none(), "{e}");
            }
            other => panic!("unexpected ph {other}: {e}"),
        }
    }
    // Every track with events is named, and every flow is whole.
    for e in events.iter().filter(|e| e["ph"] != "M" && e["s"] != "g") {
        assert!(tracks.contains_key(&tid(e)), "unnamed track: {e}");
    }
    assert_eq!(
        starts.keys().collect::<Vec<_>>(),
        ends.keys().collect::<Vec<_>>(),
        "flow starts and ends differ"
    );
    let flows = starts
        .into_iter()
        .zip(ends)
        .map(|(((name, _), s), (_, f))| (name, s, f))
        .collect();
    Timeline {
        events,
        tracks,
        flows,
    }
}

impl Timeline {
    /// Goroutines (tids) whose track runs `function`.
    fn running(&self, function: &str) -> Vec<u64> {
        self.tracks
            .iter()
            .filter(|(_, n)| n.split_once(' ').map(|(_, f)| f) == Some(function))
            .map(|(t, _)| *t)
            .collect()
    }

    fn slices(&self, goid: u64) -> Vec<&serde_json::Value> {
        self.events
            .iter()
            .filter(|e| e["ph"] == "X" && tid(e) == goid)
            .collect()
    }

    fn flows(&self, name: &str) -> Vec<(&serde_json::Value, &serde_json::Value)> {
        self.flows
            .iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, s, f)| (s, f))
            .collect()
    }

    fn function_of(&self, goid: u64) -> &str {
        self.tracks[&goid].split_once(' ').map_or("", |(_, f)| f)
    }
}

#[test]
fn timeline_of_the_demo_service() {
    let Some(_g) = root_guard() else { return };
    let bin = fixture("leakyservice", "1.26");
    let t = trace_command(&bin, "2s", &["--leak-threshold", "1s"]).unwrap();
    let dir = out_dir(&t);
    assert!(
        t.gotrace_stderr.contains("ui.perfetto.dev") && t.gotrace_stderr.contains("timeline.json"),
        "{}",
        t.gotrace_stderr
    );
    let pid = t.report["target"]["pid"].as_u64().expect("pid");
    let tl = timeline(&dir, pid);
    let search = t.fixture_count("planted", "search") as usize;
    let subscribe = t.fixture_count("planted", "subscribe") as usize;
    let backends = tl.running("main.queryBackend");
    assert_eq!(backends.len(), search, "{:?}", tl.tracks);
    assert_eq!(tl.running("main.subscriberLoop").len(), subscribe);
    assert_eq!(tl.running("main.cacheRefresher").len(), 1);
    let go_flows = tl.flows("go");
    for g in &backends {
        // Created by a request's goroutine, parked in the send to the end.
        let slices = tl.slices(*g);
        assert_eq!(slices[0]["name"], "runnable", "{slices:?}");
        assert!(slices[0]["args"]["created_by"].as_u64().unwrap() > 0);
        let last = slices.last().unwrap();
        assert_eq!(last["name"], "chan send", "{slices:?}");
        assert!(
            last["args"]["blocked_at"]
                .as_str()
                .unwrap()
                .starts_with("main.queryBackend ("),
            "{last}"
        );
        let (s, f) = go_flows
            .iter()
            .find(|(_, f)| tid(f) == *g)
            .unwrap_or_else(|| panic!("no creation flow to g{g}"));
        assert_eq!(num(s, "ts"), num(f, "ts"));
        assert_eq!(tl.function_of(tid(s)), "net/http.(*conn).serve");
    }
    // Each /search gives up on its context's deadline: the cancel wakes the
    // handler (in its connection's goroutine) from its select. Every other
    // cancel (net/http's own request contexts) is a cancel func's; the
    // timeline has each cancel the report counts.
    let cancels: Vec<&serde_json::Value> = tl
        .events
        .iter()
        .filter(|e| e["ph"] == "i" && e["name"] == "context cancel")
        .collect();
    let deadlines = cancels
        .iter()
        .filter(|e| e["args"]["err"] == "context.DeadlineExceeded")
        .count();
    assert_eq!(deadlines, search / 3, "{deadlines} deadline cancels");
    assert_eq!(
        cancels.len() as u64,
        t.report["contexts"]["cancelled"],
        "cancels"
    );
    let woken_handlers = tl
        .flows("wake")
        .iter()
        .filter(|(_, f)| tl.function_of(tid(f)) == "net/http.(*conn).serve")
        .count();
    assert_eq!(woken_handlers, search / 3);
    assert_eq!(
        tl.events
            .iter()
            .filter(|e| e["name"] == "timeline truncated")
            .count(),
        0
    );
}

/// Nested deadlines (ctxnested): the outer context's deadline cancels the
/// inner one, whose cancel wakes main.waitInner.
fn timeline_of_context_cancels(go: &str) {
    let bin = fixture("ctxnested", go);
    let t = trace_command(&bin, "1s", &["--leak-threshold", "1s"]).unwrap();
    let dir = out_dir(&t);
    let pid = t.report["target"]["pid"].as_u64().expect("pid");
    let tl = timeline(&dir, pid);
    let pairs = t.fixture_count("planted", "nested") as usize;
    let cancels: Vec<&serde_json::Value> = tl
        .events
        .iter()
        .filter(|e| e["ph"] == "i" && e["name"] == "context cancel")
        .collect();
    assert_eq!(cancels.len(), 2 * pairs, "{cancels:#?}");
    let propagated: Vec<&&serde_json::Value> = cancels
        .iter()
        .filter(|c| c["args"]["propagated_from"].is_u64())
        .collect();
    assert_eq!(propagated.len(), pairs, "{cancels:#?}");
    for c in &cancels {
        assert_eq!(c["args"]["err"], "context.DeadlineExceeded", "{c}");
    }
    let at = |e: &serde_json::Value| (tid(e), num(e, "ts"));
    let cancel_flows = tl.flows("cancel");
    assert_eq!(cancel_flows.len(), pairs);
    for (s, f) in &cancel_flows {
        let from = cancels
            .iter()
            .find(|c| at(c) == at(s))
            .expect("flow from a cancel");
        let to = propagated
            .iter()
            .find(|c| at(c) == at(f))
            .expect("flow to a child cancel");
        assert_eq!(to["args"]["propagated_from"], from["args"]["context"]);
    }
    let waiters = tl.running("main.waitInner");
    assert_eq!(waiters.len(), pairs, "{:?}", tl.tracks);
    for g in &waiters {
        let slices = tl.slices(*g);
        let wait = slices
            .iter()
            .find(|s| s["name"] == "chan receive")
            .unwrap_or_else(|| panic!("g{g} never waited: {slices:?}"));
        assert!(
            wait["args"]["blocked_at"]
                .as_str()
                .unwrap()
                .starts_with("main.waitInner ("),
            "{wait}"
        );
        let (s, f) = tl
            .flows("wake")
            .into_iter()
            .find(|(_, f)| tid(f) == *g)
            .unwrap_or_else(|| panic!("g{g} not woken by a cancel"));
        assert!(propagated.iter().any(|c| at(c) == at(s)), "{s}");
        assert!(num(f, "ts") >= num(wait, "ts") + num(wait, "dur") - 0.001);
        let (creator, _) = tl
            .flows("go")
            .into_iter()
            .find(|(_, f)| tid(f) == *g)
            .expect("creation flow");
        assert_eq!(tid(creator), 1, "started by the main goroutine");
    }
}

#[test]
fn timeline_of_context_cancels_go1_26() {
    if let Some(_g) = root_guard() {
        timeline_of_context_cancels("1.26")
    }
}

#[test]
fn timeline_of_context_cancels_go1_19() {
    if let Some(_g) = root_guard() {
        timeline_of_context_cancels("1.19")
    }
}
