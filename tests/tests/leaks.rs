//! Goroutine leak patterns 1, 2, 3, 9 and 10 (the catalogue in README.md) and a
//! clean control, each built with every Go in `GO_VERSIONS`, traced by the
//! real gotrace binary from the program's first goroutine (`-- CMD`).

use gotrace_e2e::{Traced, fixture, go_minors, gotrace, trace_command};
use serde_json::Value;

const ARGS: &[&str] = &["--leak-threshold", "1s"];

fn run(name: &str, go: &str, hold: &str) -> Traced {
    let bin = fixture(name, go);
    let t = trace_command(&bin, hold, ARGS)
        .unwrap_or_else(|e| panic!("tracing {name} (Go {go}): {e:#}"));
    // Every probe `gotrace probes` plans for this binary was attached.
    let planned = gotrace(&["probes", bin.to_str().unwrap()]);
    assert!(planned.status.success(), "{planned:?}");
    let planned = String::from_utf8_lossy(&planned.stdout).lines().count();
    assert_eq!(t.report["trace"]["probes_attached"], planned, "Go {go}");
    t
}

/// The single suspect group running `start`, checked for the leak's shape.
fn group<'a>(t: &'a Traced, start: &str, pattern: &str, created_by: &str, count: u64) -> &'a Value {
    let groups = t.suspects_running(start);
    assert_eq!(
        groups.len(),
        1,
        "expected one suspect group running {start}; report:\n{:#}",
        t.report
    );
    let g = groups[0];
    assert_eq!(g["pattern"], pattern, "{g:#}");
    assert_eq!(g["count"], count, "{g:#}");
    assert_eq!(g["created_at"]["function"], created_by, "{g:#}");
    assert_eq!(g["blocked_at"]["function"], start, "{g:#}");
    assert!(g["blocked_for_s"]["min"].as_f64().unwrap() >= 1.0, "{g:#}");
    let stack: Vec<&str> = g["blocked_stack"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["function"].as_str().unwrap())
        .collect();
    assert_eq!(
        stack.first(),
        Some(&"runtime.gopark"),
        "blocked stack {stack:?}"
    );
    assert!(stack.contains(&start), "blocked stack {stack:?}");
    let creation: Vec<&str> = g["creation_stack"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["function"].as_str().unwrap())
        .collect();
    assert_eq!(
        creation.first(),
        Some(&created_by),
        "creation stack {creation:?}"
    );
    g
}

fn common_checks(t: &Traced, go: &str) {
    let r = &t.report;
    assert_eq!(r["schema_version"], 1);
    assert!(
        r["target"]["go_version"]
            .as_str()
            .unwrap()
            .starts_with(&format!("go{go}")),
        "{:#}",
        r["target"]
    );
    assert_eq!(r["trace"]["ended_by"], "target-exit");
    assert_eq!(r["trace"]["kernel"]["dropped_total"], 0);
}

fn chanrecv(go: &str) {
    let t = run("chanrecv", go, "2s");
    common_checks(&t, go);
    let g = group(
        &t,
        "main.receiveForever",
        "chan_receive",
        "main.startReceivers",
        10,
    );
    assert_eq!(g["wait_reason"], "chan receive");
    assert_eq!(g["leak_pattern"], 1);
    // Created by the main goroutine: g.parentGoid (1.21+) read through DWARF.
    assert_eq!(g["parent_goids"], serde_json::json!([1]), "{g:#}");
    assert_eq!(t.report["suspect_count"], 10);
    assert_eq!(t.exit_code, Some(3), "leaks found → exit 3");
    assert!(
        t.gotrace_stdout.contains("blocked channel receive"),
        "{}",
        t.gotrace_stdout
    );
}

fn chansend(go: &str) {
    let t = run("chansend", go, "2s");
    common_checks(&t, go);
    let g = group(
        &t,
        "main.slowCompute",
        "chan_send",
        "main.callWithTimeout",
        8,
    );
    assert_eq!(g["wait_reason"], "chan send");
    assert_eq!(g["leak_pattern"], 2);
    assert_eq!(t.report["suspect_count"], 8);
}

fn selectwait(go: &str) {
    let t = run("selectwait", go, "2s");
    common_checks(&t, go);
    let g = group(&t, "main.selectForever", "select", "main.main", 6);
    assert_eq!(g["wait_reason"], "select");
    assert_eq!(g["leak_pattern"], 3);
    assert_eq!(t.report["suspect_count"], 6);
}

fn locks(go: &str) {
    let t = run("locks", go, "2s");
    common_checks(&t, go);
    group(&t, "main.lockWaiter", "mutex", "main.main", 5);
    // Go < 1.24 parks WaitGroup.Wait as plain "semacquire": the stack decides.
    let wg = group(&t, "main.waitGroupWaiter", "wait_group", "main.main", 3);
    assert_eq!(wg["leak_pattern"], 9);
    group(&t, "main.rlockWaiter", "rw_mutex", "main.main", 2);
    group(&t, "main.transferAB", "mutex", "main.main", 1);
    group(&t, "main.transferBA", "mutex", "main.main", 1);
    assert_eq!(t.report["suspect_count"], 12);
}

fn growth(go: &str) {
    let t = run("growth", go, "4s");
    common_checks(&t, go);
    let spawned = t.fixture_count("spawned", "handleRequest");
    let fast = t.fixture_count("spawned", "handleFast");
    let leaky = t.growth_of("main.handleRequest");
    assert_eq!(
        leaky["created"], spawned,
        "every creation traced: {leaky:#}"
    );
    assert_eq!(leaky["exited"], 0);
    assert_eq!(leaky["live_at_end"], spawned);
    assert_eq!(leaky["unbounded"], true, "{leaky:#}");
    assert_eq!(leaky["created_at"]["function"], "main.serve");
    assert!(leaky["net_per_s"].as_f64().unwrap() > 20.0, "{leaky:#}");
    let ok = t.growth_of("main.handleFast");
    assert_eq!(ok["created"], fast, "{ok:#}");
    assert_eq!(ok["exited"], fast, "{ok:#}");
    assert_eq!(ok["unbounded"], false);
    // Every leaked handler is live; the older ones are suspects.
    let suspects = t.suspects_running("main.handleRequest");
    assert_eq!(suspects.len(), 1, "{:#}", t.report["suspects"]);
    let n = suspects[0]["count"].as_u64().unwrap();
    assert!(n > spawned / 2 && n <= spawned, "{n} of {spawned} suspects");
    assert!(
        t.gotrace_stdout.contains("UNBOUNDED GROWTH"),
        "{}",
        t.gotrace_stdout
    );
}

fn control(go: &str) {
    let t = run("control", go, "2s");
    common_checks(&t, go);
    let r = &t.report;
    assert_eq!(r["verdict"], "no leak suspects", "{r:#}");
    assert_eq!(r["suspect_count"], 0);
    assert_eq!(t.exit_code, Some(0));
    let w = t.growth_of("main.worker");
    assert_eq!(w["created"], 200);
    assert_eq!(w["exited"], 200);
    assert_eq!(w["unbounded"], false);
    // Only the main goroutine (running at exit) is left of the program's own.
    assert_eq!(r["goroutines"]["live_user"], 1, "{:#}", r["live"]);
    assert!(t.gotrace_stdout.contains("no leak suspects"));
}

/// The bundled demo (`cargo xtask demo`): an HTTP service with a built-in
/// load generator. Exactly the leaks it plants, nothing else.
fn leakyservice(go: &str) {
    let t = run("leakyservice", go, "2s");
    common_checks(&t, go);
    let search = t.fixture_count("planted", "search");
    let subscribe = t.fixture_count("planted", "subscribe");
    group(
        &t,
        "main.queryBackend",
        "chan_send",
        "main.handleSearch",
        search,
    );
    group(
        &t,
        "main.subscriberLoop",
        "chan_receive",
        "main.handleSubscribe",
        subscribe,
    );
    group(&t, "main.cacheRefresher", "wait_group", "main.main", 1);
    assert_eq!(
        t.report["suspect_count"],
        search + subscribe + 1,
        "{:#}",
        t.report["suspects"]
    );
    // The server's accept loop waits by design: listed, not a suspect.
    let live = t.report["live"].as_array().unwrap();
    assert!(
        live.iter()
            .any(|g| g["pattern"] == "idle" && g["start_function"] == "net/http.(*Server).Serve"),
        "{:#}",
        t.report["live"]
    );
    assert_eq!(t.growth_of("main.queryBackend")["unbounded"], true);
}

gotrace_e2e::per_go_version!(
    chanrecv,
    chansend,
    selectwait,
    locks,
    growth,
    control,
    leakyservice,
);

/// The Go versions tested here are exactly those of gotrace's runtime
/// layout table (`cargo xtask layouts` builds it from the same list): every
/// tested version also works stripped, and no table entry goes untested.
#[test]
fn tested_versions_are_the_layout_table() {
    let path = gotrace_e2e::workspace_root().join("tracer/data/runtime-layouts.json");
    let table: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut in_table: Vec<(u32, u32)> = table["layouts"]
        .as_object()
        .expect("layouts")
        .iter()
        .map(|(k, e)| {
            let built_with = e["built_with"].as_str().unwrap();
            assert!(
                built_with.starts_with(&format!("go{k}.")),
                "{k}: {built_with}"
            );
            minor_key(k)
        })
        .collect();
    in_table.sort();
    let tested: Vec<(u32, u32)> = go_minors().into_iter().map(minor_key).collect();
    assert_eq!(tested, in_table, "tested Go minors vs {}", path.display());
}

fn minor_key(v: &str) -> (u32, u32) {
    let (a, b) = v.split_once('.').unwrap_or_else(|| panic!("{v}"));
    (a.parse().unwrap(), b.parse().unwrap())
}
