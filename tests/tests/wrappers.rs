//! `go f(x)` statements run a compiler-made wrapper, named `gowrapN` on Go
//! 1.22+ and like any closure (`funcN`, nested `funcN.M`) on Go 1.21 and
//! older. Every report row must name `f`, on every Go version: the
//! `gowrap` fixture, traced from its first goroutine by the real gotrace.

use gotrace_e2e::{Traced, fixture, trace_command};
use serde_json::Value;

fn run(go: &str) -> Traced {
    let bin = fixture("gowrap", go);
    trace_command(&bin, "2s", &["--leak-threshold", "1s"])
        .unwrap_or_else(|e| panic!("tracing gowrap (Go {go}): {e:#}"))
}

/// The one suspect group running `start`, with its exact count and creator.
fn group<'a>(t: &'a Traced, start: &str, created_by: &str, count: u64) -> &'a Value {
    let groups = t.suspects_running(start);
    assert_eq!(
        groups.len(),
        1,
        "expected one suspect group running {start}; suspects:\n{:#}",
        t.report["suspects"]
    );
    let g = groups[0];
    assert_eq!(g["count"], count, "{g:#}");
    assert_eq!(g["pattern"], "chan_receive", "{g:#}");
    assert_eq!(g["created_at"]["function"], created_by, "{g:#}");
    g
}

fn gowrap(go: &str) {
    let t = run(go);
    assert_eq!(t.report["trace"]["ended_by"], "target-exit");
    assert_eq!(t.report["trace"]["kernel"]["dropped_total"], 0);
    // `go perRequest(make(chan int))` inside a closure inside plantLeaks:
    // the wrapper is main.plantLeaks.func1.1 on Go <= 1.21.
    let per = t.fixture_count("planted", "perRequest");
    let g = group(&t, "main.perRequest", "main.plantLeaks.func1", per);
    assert_eq!(g["blocked_at"]["function"], "main.perRequest", "{g:#}");
    // `go s.wait()`: the method is inlined into the wrapper on Go 1.22+.
    let sessions = t.fixture_count("planted", "session");
    group(&t, "main.(*session).wait", "main.plantLeaks", sessions);
    // Several arguments, a struct among them copied with runtime.duffcopy.
    let batches = t.fixture_count("planted", "process");
    group(&t, "main.process", "main.plantLeaks", batches);
    // A real one-line closure (it makes the channel itself) keeps its name.
    let literals = t.fixture_count("planted", "literal");
    let g = group(&t, "main.plantLeaks.func2", "main.plantLeaks", literals);
    assert_eq!(g["blocked_at"]["function"], "main.perRequest", "{g:#}");
    assert_eq!(
        t.report["suspect_count"],
        per + sessions + batches + literals,
        "{:#}",
        t.report["suspects"]
    );
    // The growth rows carry the same names.
    assert_eq!(t.growth_of("main.perRequest")["created"], per);
    assert_eq!(t.growth_of("main.process")["created"], batches);
    for row in t.report["growth"].as_array().unwrap() {
        let start = row["start_function"].as_str().unwrap_or("");
        assert!(
            !start.contains("gowrap") && !start.starts_with("main.plantLeaks.func1"),
            "a wrapper name leaked into growth: {row:#}"
        );
    }
    assert!(
        t.gotrace_stdout.contains("main.perRequest"),
        "{}",
        t.gotrace_stdout
    );
}

gotrace_e2e::per_go_version!(gowrap);
