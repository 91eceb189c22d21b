//! Where a context was made and cancelled names program code (or net/http's
//! own per-request plumbing, said as such), never a frame of package
//! context such as `(*cancelCtx).propagateCancel`; and context findings are
//! grouped like goroutines, one summary line per site instead of one per
//! context. The every-constructor fixture traced from its first goroutine,
//! the demo service attached with --pid before its load starts and stopped
//! while it runs (its findings need the leak proof), by the real gotrace.

use std::collections::BTreeMap;

use gotrace_e2e::{Traced, fixture, func, list, trace_command, trace_pid};
use serde_json::Value;

fn run(name: &str, go: &str, hold: &str) -> Traced {
    let bin = fixture(name, go);
    trace_command(&bin, hold, &["--leak-threshold", "1s"])
        .unwrap_or_else(|e| panic!("tracing {name} (Go {go}): {e:#}"))
}

/// Every creation and cancel site of the report is outside package
/// context, and every context seen from its creation has one.
fn no_site_in_package_context(c: &Value) {
    for n in list(c, "nodes") {
        assert!(n["created_at"].is_object(), "no creation site: {n:#}");
        assert!(!func(&n["created_at"]).starts_with("context."), "{n:#}");
        assert!(!func(&n["cancel"]["at"]).starts_with("context."), "{n:#}");
    }
    for key in ["leaks", "ignored_cancels", "ignored_cancel_groups"] {
        for f in list(c, key) {
            assert!(!func(&f["created_at"]).starts_with("context."), "{f:#}");
            assert!(!func(&f["cancelled_at"]).starts_with("context."), "{f:#}");
        }
    }
}

/// The demo: 3 queryBackend goroutines per /search hold the request's
/// timed-out context and stay blocked in their send (an ignored cancel).
/// The subscriberLoop goroutines never had a context (not ignoring one),
/// and the contexts net/http's Transport makes per request (Go 1.23+) and
/// never cancels are garbage once the request is done (no leak).
fn leakyservice(go: &str) {
    let bin = fixture("leakyservice", go);
    let args = ["--full", "--leak-threshold", "1s", "--duration", "8s"];
    let t =
        trace_pid(&bin, "60s", &args).unwrap_or_else(|e| panic!("leakyservice (Go {go}): {e:#}"));
    assert_eq!(t.report["proof"]["status"], "done", "{}", t.gotrace_stderr);
    let c = &t.report["contexts"];
    assert_eq!(c["not_traced"], Value::Null, "{c:#}");
    assert_eq!(c["retired"], 0);
    no_site_in_package_context(c);
    let search = t.fixture_count("planted", "search");
    let subscribe = t.fixture_count("planted", "subscribe");
    let by_search: Vec<&Value> = list(c, "nodes")
        .iter()
        .filter(|n| func(&n["created_at"]) == "main.handleSearch")
        .collect();
    assert_eq!(by_search.len() as u64, search / 3);
    for n in &by_search {
        assert_eq!(n["created_by"], Value::Null, "{n:#}");
        assert_eq!(n["cancel"]["origin"], "deadline", "{n:#}");
        assert_eq!(n["cancel"]["at"], Value::Null, "a timer fired it: {n:#}");
    }
    assert!(list(c, "leaks").is_empty(), "{:#}", c["leaks"]);
    assert_eq!(
        c["never_cancelled"]["leaked"], 0,
        "{:#}",
        c["never_cancelled"]
    );
    // Only net/http's per-request dial contexts may be undecided: a stale
    // stack word may still point at them (never a finding).
    for n in list(c, "nodes")
        .iter()
        .filter(|n| n["verdict"] == "undecided")
    {
        assert_eq!(n["created_by"], "net/http", "{n:#}");
    }
    assert!(search > 0 && subscribe > 0, "{}", t.fixture_stdout);
    let groups = list(c, "ignored_cancel_groups");
    assert_eq!(groups.len(), 1, "{groups:#?}");
    let g = &groups[0];
    assert_eq!(func(&g["created_at"]), "main.handleSearch", "{g:#}");
    assert_eq!(g["origin"], "deadline");
    assert_eq!(g["count"], search / 3);
    assert_eq!(g["goroutines"], search);
    assert_eq!(
        g["start_functions"],
        serde_json::json!(["main.queryBackend"])
    );
    assert_eq!(list(g, "sample_ids").len(), 5);
    // Per context, each pointing at its group.
    let each = list(c, "ignored_cancels");
    assert_eq!(each.len() as u64, search / 3);
    assert!(each.iter().all(|i| i["group"] == 0));
    let lines = t
        .gotrace_stdout
        .lines()
        .filter(|l| l.contains("IGNORED CANCEL"))
        .count();
    assert_eq!(lines, 1, "{}", t.gotrace_stdout);
    assert!(
        !t.gotrace_stdout.contains("CONTEXT LEAK"),
        "{}",
        t.gotrace_stdout
    );
    assert!(
        !t.gotrace_stdout.contains("context.(*"),
        "{}",
        t.gotrace_stdout
    );
}

/// The function that makes each constructor's contexts in ctxcount.
fn maker(constructor: &str) -> &'static str {
    match constructor {
        "Root" => "main.main",
        "WithCancel" => "main.countWithCancel",
        "WithTimeout" => "main.countWithTimeout",
        "WithDeadline" => "main.countWithDeadline",
        "WithCancelCause" => "main.countWithCancelCause",
        "WithDeadlineCause" => "main.countWithDeadlineCause",
        "WithTimeoutCause" => "main.countWithTimeoutCause",
        "AfterFunc" | "AfterFuncParent" => "main.countAfterFunc",
        other => panic!("unknown constructor {other}"),
    }
}

/// Every public constructor: each context's site is the fixture function
/// that called it, with the exact count, and each cancel's is program code.
fn ctxcount(go: &str) {
    let t = run("ctxcount", go, "300ms");
    let c = &t.report["contexts"];
    assert_eq!(c["not_traced"], Value::Null, "{c:#}");
    assert_eq!(c["retired"], 0);
    no_site_in_package_context(c);
    let mut want: BTreeMap<&str, u64> = BTreeMap::new();
    for l in t.fixture_stdout.lines() {
        if let Some(rest) = l.strip_prefix("created ") {
            let (what, n) = rest.split_once(' ').unwrap();
            *want.entry(maker(what)).or_default() += n.trim().parse::<u64>().unwrap();
        }
    }
    let mut got: BTreeMap<&str, u64> = BTreeMap::new();
    for n in list(c, "nodes") {
        assert_eq!(n["created_by"], Value::Null, "{n:#}");
        assert!(func(&n["cancel"]["at"]).starts_with("main."), "{n:#}");
        *got.entry(func(&n["created_at"])).or_default() += 1;
    }
    assert_eq!(got, want, "{}", t.fixture_stdout);
}

gotrace_e2e::per_go_version!(leakyservice, ctxcount);
