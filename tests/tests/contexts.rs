//! Context cancel-propagation trees and context failure patterns (5, 6, 7,
//! nested deadlines) and tickers never stopped (4), each fixture built with Go 1.26, 1.21 and 1.19 (the
//! context package changed in 1.20 and 1.21) and traced from its first
//! goroutine by the real gotrace binary.

use gotrace_e2e::{Traced, fixture, func, list, root_guard, trace_command};
use serde_json::Value;

const ARGS: &[&str] = &["--leak-threshold", "1s"];

fn run(name: &str, go: &str, hold: &str) -> Traced {
    let bin = fixture(name, go);
    trace_command(&bin, hold, ARGS).unwrap_or_else(|e| panic!("tracing {name} (Go {go}): {e:#}"))
}

fn ctx(t: &Traced) -> &Value {
    let c = &t.report["contexts"];
    assert_eq!(c["not_traced"], Value::Null, "{c:#}");
    c
}

/// Nodes created in `function`.
fn nodes_from<'a>(c: &'a Value, function: &str) -> Vec<&'a Value> {
    list(c, "nodes")
        .iter()
        .filter(|n| func(&n["created_at"]) == function)
        .collect()
}

fn clean_patterns(c: &Value, except: &[&str]) {
    for key in [
        "leaks",
        "ignored_cancels",
        "broken_chains",
        "nested_deadlines",
    ] {
        if !except.contains(&key) {
            assert!(list(c, key).is_empty(), "unexpected {key}: {:#}", c[key]);
        }
    }
}

/// Pattern 5: WithTimeout / WithCancel whose cancel func is never called.
fn ctxleak(go: &str) {
    let t = run("ctxleak", go, "2s");
    let c = ctx(&t);
    let leaks = list(c, "leaks");
    let timer = leaks
        .iter()
        .find(|l| func(&l["created_at"]) == "main.startJob")
        .expect("startJob leak");
    assert_eq!(timer["kind"], "timer", "{timer:#}");
    assert_eq!(timer["count"], 7);
    assert_eq!(timer["timers_alive"], 7, "their timers are still armed");
    assert_eq!(
        timer["waiting_goroutines"], 7,
        "jobWorker goroutines wait on Done: {timer:#}"
    );
    let idle = leaks
        .iter()
        .find(|l| func(&l["created_at"]) == "main.makeIdleContexts")
        .expect("idle leak");
    assert_eq!(idle["kind"], "cancel");
    assert_eq!(idle["count"], 4);
    assert_eq!(idle["waiting_goroutines"], 0);
    assert_eq!(leaks.len(), 2, "{leaks:#?}");
    clean_patterns(c, &["leaks"]);
    // The waiting goroutines know their context.
    for n in nodes_from(c, "main.startJob") {
        assert_eq!(n["state"], "live");
        assert_eq!(
            n["parent_kind"],
            if go == "1.19" {
                "context.Background/TODO"
            } else {
                "context.Background"
            }
        );
        assert_eq!(list(n, "waiting_goroutines").len(), 1, "{n:#}");
        assert!(n["deadline_in_s"].as_f64().unwrap() > 3000.0, "{n:#}");
    }
    assert!(
        t.gotrace_stdout.contains("CONTEXT LEAK"),
        "{}",
        t.gotrace_stdout
    );
}

/// Pattern 6: the context is cancelled but goroutines started under it do
/// not watch ctx.Done() and keep running.
fn ctxignore(go: &str) {
    let t = run("ctxignore", go, "2s");
    let c = ctx(&t);
    let ignored = list(c, "ignored_cancels");
    assert_eq!(ignored.len(), 1, "{ignored:#?}");
    let i = &ignored[0];
    assert_eq!(list(i, "goroutines").len(), 5, "{i:#}");
    assert_eq!(
        i["start_functions"],
        serde_json::json!(["main.ignoresContext"])
    );
    assert_eq!(func(&i["cancelled_at"]), "main.shutdown");
    let node = &list(c, "nodes")[i["context"].as_u64().unwrap() as usize];
    let cancel = &node["cancel"];
    assert_eq!(cancel["err"], "context.Canceled");
    assert_eq!(cancel["origin"], "cancel func");
    assert_eq!(cancel["by_goid"], 1);
    // The watchers exited after the cancel: not listed.
    assert_eq!(list(node, "started_goroutines_alive").len(), 5, "{node:#}");
    clean_patterns(c, &["ignored_cancels"]);
}

/// Pattern 7: a child made from context.Background() inside a request.
fn ctxbroken(go: &str) {
    let t = run("ctxbroken", go, "2s");
    let c = ctx(&t);
    let broken = list(c, "broken_chains");
    assert_eq!(broken.len(), 3, "{broken:#?}");
    for b in broken {
        assert_eq!(func(&b["created_at"]), "main.handleRequest", "{b:#}");
        assert!(
            b["root"]
                .as_str()
                .unwrap()
                .starts_with("context.Background"),
            "{b:#}"
        );
        assert_eq!(func(&b["outer_created_at"]), "main.main");
        assert_eq!(b["outer_cancelled"], true);
        assert_eq!(b["state"], "live");
    }
    // The request contexts were cancelled; the broken-off ones leak.
    let leak = list(c, "leaks")
        .iter()
        .find(|l| func(&l["created_at"]) == "main.handleRequest")
        .cloned();
    assert_eq!(
        leak.expect("leak of the broken-off contexts")["waiting_goroutines"],
        3
    );
    assert!(
        t.gotrace_stdout.contains("BROKEN CHAIN"),
        "{}",
        t.gotrace_stdout
    );
}

/// Nested WithTimeout: the parent's deadline cancels the child, which must
/// not be reported as having timed out itself.
fn ctxnested(go: &str) {
    let t = run("ctxnested", go, "1s");
    let c = ctx(&t);
    let nested = list(c, "nested_deadlines");
    assert_eq!(nested.len(), 2, "{nested:#?}");
    for d in nested {
        assert_eq!(func(&d["created_at"]), "main.innerCall");
        assert_eq!(func(&d["cancelled_by_created_at"]), "main.outerCall");
        // WithTimeout(parent, 1h) under a 300ms parent: Go makes it a plain
        // cancel context, so it has no deadline of its own.
        assert_eq!(d["own_deadline_after_cancel_s"], Value::Null, "{d:#}");
    }
    for n in nodes_from(c, "main.innerCall") {
        assert_eq!(n["cancel"]["err"], "context.DeadlineExceeded", "{n:#}");
        assert_eq!(n["cancel"]["origin"], "parent's deadline", "{n:#}");
        let parent = &list(c, "nodes")[n["parent"].as_u64().expect("parent edge") as usize];
        assert_eq!(func(&parent["created_at"]), "main.outerCall");
        assert_eq!(n["cancel"]["propagated_from"], parent["id"]);
    }
    for n in nodes_from(c, "main.outerCall") {
        assert_eq!(n["cancel"]["err"], "context.DeadlineExceeded");
        assert_eq!(n["cancel"]["origin"], "deadline", "{n:#}");
    }
    assert_eq!(nodes_from(c, "main.innerCall").len(), 2);
    clean_patterns(c, &["nested_deadlines"]);
}

/// Go 1.20+ causes, read from the cancel call.
fn ctxcause(go: &str) {
    let t = run("ctxcause", go, "1s");
    if go == "1.19" {
        // No WithCancelCause/WithTimeoutCause before Go 1.20/1.21.
        assert!(
            t.fixture_stdout.contains("skipped cause"),
            "{}",
            t.fixture_stdout
        );
        return;
    }
    let c = ctx(&t);
    let by_cancel = nodes_from(c, "main.cancelWithCause");
    assert_eq!(by_cancel.len(), 1);
    let cancel = &by_cancel[0]["cancel"];
    assert_eq!(cancel["cause"], "shutting down: disk full", "{cancel:#}");
    assert_eq!(cancel["err"], "context.Canceled");
    assert_eq!(cancel["origin"], "cancel func");
    let by_timer = nodes_from(c, "main.timeoutWithCause");
    assert_eq!(by_timer.len(), 1);
    let cancel = &by_timer[0]["cancel"];
    assert_eq!(cancel["cause"], "backend too slow", "{cancel:#}");
    assert_eq!(cancel["err"], "context.DeadlineExceeded");
    assert_eq!(cancel["origin"], "deadline");
}

/// Correct `defer cancel()` everywhere: nothing to report.
fn ctxcontrol(go: &str) {
    let t = run("ctxcontrol", go, "2s");
    let c = ctx(&t);
    clean_patterns(c, &[]);
    assert_eq!(
        c["created"],
        t.fixture_count("created", "contexts"),
        "{c:#}"
    );
    assert_eq!(c["created"], c["cancelled"], "{c:#}");
    assert_eq!(c["live_at_end"], 0);
    assert_eq!(t.report["suspect_count"], 0);
    assert!(
        t.gotrace_stdout.contains("no context leaks"),
        "{}",
        t.gotrace_stdout
    );
}

/// Thousands of contexts through every public constructor: the trace sees
/// exactly that many creations and cancels (none missed through inlining).
fn ctxcount(go: &str) {
    let t = run("ctxcount", go, "300ms");
    let c = ctx(&t);
    let total_created = fixture_total(&t, "total-created");
    let total_cancelled = fixture_total(&t, "total-cancelled");
    assert!(total_created >= 1500, "{}", t.fixture_stdout);
    assert_eq!(c["created"], total_created, "creations seen vs made");
    assert_eq!(c["cancelled"], total_cancelled, "cancels seen vs made");
    assert_eq!(t.report["trace"]["kernel"]["dropped_total"], 0);
}

/// Pattern 4: tickers never stopped, a goroutine looping on each channel;
/// the ticker stopped with `defer t.Stop()` is not reported.
fn tickers(go: &str) {
    let t = run("tickers", go, "2s");
    let timers = &t.report["timers"];
    assert_eq!(timers["not_traced"], Value::Null, "{timers:#}");
    let groups = list(timers, "tickers_never_stopped");
    assert_eq!(groups.len(), 1, "{groups:#?}");
    let g = &groups[0];
    assert_eq!(func(&g["created_at"]), "main.startPoller");
    assert_eq!(g["count"], 3);
    assert_eq!(g["period_s"], 0.1);
    assert_eq!(g["verdict"], "leak");
    assert_eq!(list(g, "waiting_goroutines").len(), 3, "{g:#}");
    assert_eq!(g["looping_functions"], serde_json::json!(["main.pollLoop"]));
    assert_eq!(
        timers["stopped"],
        t.fixture_count("planted", "stopped"),
        "properTicker's Stop seen: {timers:#}"
    );
    assert!(
        t.gotrace_stdout.contains("TICKER NEVER STOPPED"),
        "{}",
        t.gotrace_stdout
    );
}

fn fixture_total(t: &Traced, key: &str) -> u64 {
    t.fixture_stdout
        .lines()
        .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} line:\n{}", t.fixture_stdout))
}

gotrace_e2e::per_go_version!(
    ctxleak, ctxignore, ctxbroken, ctxnested, ctxcause, ctxcontrol, ctxcount, tickers,
);

/// `gotrace --full --pid N --contexts` prints the cancel-propagation tree
/// of a process that was already running (`--full`: with --pid, context
/// probes are not attached by default).
#[test]
fn context_tree_of_a_running_process() {
    let Some(_g) = root_guard() else { return };
    let bin = fixture("ctxnested", "1.26");
    let t = gotrace_e2e::trace_pid(
        &bin,
        "60s",
        &[
            "--full",
            "--contexts",
            "--duration",
            "3s",
            "--leak-threshold",
            "1s",
        ],
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let out = &t.gotrace_stdout;
    assert!(out.contains("context trees:"), "{out}");
    // A root from Background with its child nested under it.
    let root = out
        .lines()
        .position(|l| l.contains("timer created at main.outerCall"))
        .expect(out);
    let child = out.lines().nth(root + 1).unwrap_or_default();
    assert!(
        child.contains("created at main.innerCall") && child.contains("parent's deadline"),
        "{out}"
    );
    assert_eq!(
        t.report["contexts"]["nested_deadlines"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}
