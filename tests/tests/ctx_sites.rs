//! Where a context was made and cancelled names program code (or net/http's
//! own per-request plumbing, said as such), never a frame of package
//! context such as `(*cancelCtx).propagateCancel`; and context findings are
//! grouped like goroutines, one summary line per site instead of one per
//! context. The demo service and the every-constructor fixture, traced from
//! their first goroutine by the real gotrace.

use std::collections::BTreeMap;

use gotrace_e2e::{Traced, fixture, func, list, trace_command};
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

/// The demo: 3 queryBackend goroutines per /search outlive the request's
/// timed-out context, 1 subscriberLoop per /subscribe outlives the request
/// context net/http made and cancelled.
fn leakyservice(go: &str) {
    let t = run("leakyservice", go, "2s");
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
    let groups = list(c, "ignored_cancel_groups");
    assert_eq!(groups.len(), 2, "{groups:#?}");
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
    let g = &groups[1];
    assert_eq!(g["created_by"], "net/http", "{g:#}");
    assert!(func(&g["created_at"]).starts_with("net/http."), "{g:#}");
    assert!(func(&g["cancelled_at"]).starts_with("net/http."), "{g:#}");
    assert_eq!(g["count"], subscribe);
    assert_eq!(g["goroutines"], subscribe);
    assert_eq!(
        g["start_functions"],
        serde_json::json!(["main.subscriberLoop"])
    );
    // Per context, as before, each pointing at its group.
    let each = list(c, "ignored_cancels");
    assert_eq!(each.len() as u64, search / 3 + subscribe);
    let in_first = each.iter().filter(|i| i["group"] == 0).count() as u64;
    assert_eq!(in_first, search / 3);
    let lines = t
        .gotrace_stdout
        .lines()
        .filter(|l| l.contains("IGNORED CANCEL"))
        .count();
    assert_eq!(lines, 2, "{}", t.gotrace_stdout);
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
