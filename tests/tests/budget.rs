//! The overhead budget: what one probe hit costs is timed at attach, the
//! probes' cost is estimated from their hit counts, and the hottest groups
//! are detached when it goes over (`--max-overhead`); by default `--pid`
//! attaches no per-event probe until goroutine samples show that the
//! creation/exit probes fit.

use gotrace_e2e::{fixture, list, root_guard, trace_command, trace_pid};
use serde_json::Value;

/// The groups detached, as report.json lists them.
fn shed(r: &Value) -> Vec<&str> {
    list(&r["trace"]["budget"], "shed")
        .iter()
        .map(|s| s["probes"].as_str().unwrap())
        .collect()
}

/// `busy` serves 5000 requests a second, each a goroutine, a context with
/// a timer and two channel operations: far over a 3 % budget with every
/// probe. The groups go hottest first, the moment the first check has
/// evidence, and samples carry on.
#[test]
fn full_tracing_over_budget_sheds_the_hottest_first() {
    let Some(_g) = root_guard() else { return };
    let bin = fixture("busy", "1.26");
    let t = trace_command(&bin, "4s", &["--max-overhead", "3"]).unwrap_or_else(|e| panic!("{e:#}"));
    let r = &t.report;
    let b = &r["trace"]["budget"];
    assert_eq!(r["trace"]["mode"], "full");
    assert_eq!(b["max_overhead_pct"], 3.0);
    assert!(b["hit_cost_us"].as_f64().unwrap() > 0.0, "{b:#}");
    let gone = list(b, "shed");
    assert!(!gone.is_empty(), "nothing shed: {b:#}");
    let cost = |s: &Value| s["cost_pct"].as_f64().unwrap();
    for pair in gone.windows(2) {
        let same_time = pair[0]["at_s"] == pair[1]["at_s"];
        let parks_first = pair[0]["probes"] == "park/ready";
        assert!(
            !same_time || parks_first || cost(&pair[0]) >= cost(&pair[1]),
            "not hottest first: {b:#}"
        );
    }
    for s in gone {
        assert!(s["estimate_pct"].as_f64().unwrap() > 3.0, "{s:#}");
        assert!(s["at_s"].as_f64().unwrap() < 2.0, "decided late: {s:#}");
    }
    let names = shed(r);
    if let Some(i) = names.iter().position(|n| *n == "creation/exit") {
        assert!(names[..i].contains(&"park/ready"), "{names:?}");
    }
    if names.contains(&"park/ready") {
        assert!(
            r["trace"]["samples"]["taken"].as_u64().unwrap() >= 1,
            "{r:#}"
        );
    }
    if names.contains(&"contexts") {
        let why = r["contexts"]["not_traced"].as_str().unwrap();
        assert!(why.contains("detached"), "{why}");
    }
    assert!(
        t.gotrace_stdout.contains("SHED at "),
        "{}",
        t.gotrace_stdout
    );
    assert!(
        t.gotrace_stderr.contains("overhead budget"),
        "{}",
        t.gotrace_stderr
    );
    // Leak-free, whatever was shed.
    assert_eq!(r["suspect_count"], 0, "{:#}", r["suspects"]);
}

/// Without a budget (`--full`) nothing is detached; the cost is estimated.
#[test]
fn full_tracing_estimates_its_cost() {
    let Some(_g) = root_guard() else { return };
    let bin = fixture("chanrecv", "1.26");
    let t =
        trace_command(&bin, "2s", &["--leak-threshold", "1s"]).unwrap_or_else(|e| panic!("{e:#}"));
    let b = &t.report["trace"]["budget"];
    assert_eq!(b["max_overhead_pct"], Value::Null);
    assert!(shed(&t.report).is_empty());
    let hits = t.report["trace"]["kernel"]["hits"]["go_park"]
        .as_u64()
        .unwrap();
    assert!(hits >= 10, "{:#}", t.report["trace"]["kernel"]);
    assert!(b["hits"].as_u64().unwrap() >= hits, "{b:#}");
    assert!(b["added_cpu_ms"].as_f64().unwrap() > 0.0, "{b:#}");
    assert!(
        t.gotrace_stdout.contains("probe cost: "),
        "{}",
        t.gotrace_stdout
    );
}

/// By default `--pid` starts with no probe; a process that creates few
/// goroutines gets the creation/exit probes once two samples show it.
#[test]
fn default_pid_attaches_creation_probes_when_they_fit() {
    let Some(_g) = root_guard() else { return };
    let bin = fixture("chanrecv", "1.26");
    let t = trace_pid(&bin, "60s", &["--duration", "4s", "--leak-threshold", "1s"])
        .unwrap_or_else(|e| panic!("{e:#}"));
    let r = &t.report;
    assert_eq!(r["trace"]["mode"], "budgeted");
    assert_eq!(r["trace"]["probes_attached"], 0, "none at attach");
    let a = list(&r["trace"]["budget"], "admitted");
    assert_eq!(a.len(), 1, "{:#}", r["trace"]["budget"]);
    assert_eq!(a[0]["probes"], "creation/exit");
    assert!(a[0]["at_s"].as_f64().unwrap() >= 0.9, "{:#}", a[0]);
    let g = t.suspects_running("main.receiveForever");
    assert_eq!(g.len(), 1, "{:#}", r["suspects"]);
    assert_eq!(g[0]["count"], 10);
}

/// A target busy creating goroutines is never trapped by default: the
/// creation/exit probes would cost more than half the budget, so no probe
/// is ever attached and no hit counted; the report comes from samples.
#[test]
fn default_pid_on_a_busy_target_attaches_nothing() {
    let Some(_g) = root_guard() else { return };
    let bin = fixture("busy", "1.26");
    let t = trace_pid(&bin, "60s", &["--duration", "4s"]).unwrap_or_else(|e| panic!("{e:#}"));
    let r = &t.report;
    let b = &r["trace"]["budget"];
    assert_eq!(r["trace"]["mode"], "budgeted");
    assert!(list(b, "admitted").is_empty(), "{b:#}");
    let left = list(b, "not_admitted");
    assert_eq!(left.len(), 1, "{b:#}");
    assert_eq!(left[0]["probes"], "creation/exit");
    assert!(left[0]["predicted_pct"].as_f64().unwrap() > 1.5, "{b:#}");
    assert_eq!(b["hits"], 0, "{b:#}");
    assert_eq!(r["trace"]["events_received"], 0);
    assert!(r["trace"]["samples"]["taken"].as_u64().unwrap() >= 4);
    assert_eq!(r["suspect_count"], 0, "{:#}", r["suspects"]);
    let why = r["contexts"]["not_traced"].as_str().unwrap();
    assert!(why.contains("--full"), "{why}");
}
