//! Context cancel-propagation trees and context failure patterns (5, 6, 7,
//! nested deadlines) and tickers never stopped (4), each fixture built with
//! every tested Go and traced by the real gotrace binary: from its first
//! goroutine, or (the patterns the leak proof decides) attached with --pid
//! before the fixture plants anything and stopped by --duration while it
//! still runs, so that the proof reads its memory; and the same verdicts
//! under `-- CMD`, decided while the command is held at its exit.

use gotrace_e2e::{Traced, fixture, func, list, root_guard, trace_command, trace_pid};
use serde_json::Value;

const ARGS: &[&str] = &["--leak-threshold", "1s"];

fn run(name: &str, go: &str, hold: &str) -> Traced {
    let bin = fixture(name, go);
    trace_command(&bin, hold, ARGS).unwrap_or_else(|e| panic!("tracing {name} (Go {go}): {e:#}"))
}

/// `gotrace --pid` for `duration`, the fixture holding longer: the trace
/// ends while it runs, and the leak proof reads it.
fn run_proved(name: &str, go: &str, duration: &str) -> Traced {
    let bin = fixture(name, go);
    let args = ["--full", "--leak-threshold", "1s", "--duration", duration];
    let t =
        trace_pid(&bin, "60s", &args).unwrap_or_else(|e| panic!("tracing {name} (Go {go}): {e:#}"));
    let proof = &t.report["proof"];
    assert_eq!(proof["status"], "done", "{proof:#}\n{}", t.gotrace_stderr);
    t
}

/// Contexts never cancelled left undecided must be ones net/http made (a
/// Transport's per-request dial contexts, Go 1.23+) that only a goroutine
/// stack, maybe a stale word, still points at: never a finding.
fn undecided_only_on_stale_stacks(c: &Value) {
    for n in list(c, "nodes")
        .iter()
        .filter(|n| n["verdict"] == "undecided")
    {
        assert_eq!(n["created_by"], "net/http", "{n:#}");
        let why = n["evidence"]["reason"].as_str().unwrap_or_default();
        assert!(why.starts_with("only goroutine stacks hold it"), "{n:#}");
    }
}

/// The verdict counts of contexts never cancelled: (leaked, live,
/// collected, undecided).
fn never_cancelled(c: &Value) -> (u64, u64, u64, u64) {
    let n = &c["never_cancelled"];
    let k = |k: &str| n[k].as_u64().unwrap_or_else(|| panic!("{k}: {n:#}"));
    (
        k("leaked"),
        k("live"),
        k("collected"),
        n["undecided"]["count"].as_u64().unwrap(),
    )
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

/// Pattern 5: WithTimeout / WithCancel whose cancel func was discarded:
/// nothing reachable can call it, and the contexts are still held (by
/// their timers and waiters, or by a global).
fn ctxleak(go: &str) {
    let t = run_proved("ctxleak", go, "4s");
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
    assert_eq!(timer["held_by_goroutines"], 7, "{timer:#}");
    let idle = leaks
        .iter()
        .find(|l| func(&l["created_at"]) == "main.makeIdleContexts")
        .expect("idle leak");
    assert_eq!(idle["kind"], "cancel");
    assert_eq!(idle["count"], 4);
    assert_eq!(idle["waiting_goroutines"], 0);
    // The evidence: the global that still holds them.
    let held_by = list(idle, "held_by");
    assert_eq!(held_by.len(), 1, "{idle:#}");
    assert_eq!(held_by[0]["kind"], "global", "{idle:#}");
    assert_eq!(held_by[0]["name"], "main.idleContexts", "{idle:#}");
    assert_eq!(leaks.len(), 2, "{leaks:#?}");
    assert_eq!(never_cancelled(c), (11, 0, 0, 0), "{c:#}");
    clean_patterns(c, &["leaks"]);
    // The waiting goroutines know their context.
    for n in nodes_from(c, "main.startJob") {
        assert_eq!(n["state"], "live");
        assert_eq!(n["verdict"], "leaked", "{n:#}");
        assert_eq!(n["evidence"]["cancel_func"], Value::Null, "{n:#}");
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
    let out = &t.gotrace_stdout;
    assert_eq!(out.matches("CONTEXT LEAK").count(), 2, "{out}");
    assert!(
        out.contains("held by the global main.idleContexts"),
        "{out}"
    );
}

/// Pattern 6: the context is cancelled but goroutines started under it,
/// whose stacks hold it, do not watch ctx.Done() and stay parked.
fn ctxignore(go: &str) {
    let t = run_proved("ctxignore", go, "4s");
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
    // Main, which cancelled it and still holds it, is not ignoring it.
    assert!(!list(i, "goroutines").contains(&1.into()), "{i:#}");
    assert_eq!(c["ignored_cancel_undecided"]["count"], 0, "{c:#}");
    clean_patterns(c, &["ignored_cancels"]);
    assert!(
        t.gotrace_stdout.contains("IGNORED CANCEL"),
        "{}",
        t.gotrace_stdout
    );
}

/// Pattern 7: a child made from context.Background() inside a request.
fn ctxbroken(go: &str) {
    let t = run_proved("ctxbroken", go, "4s");
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
    let leak = leak.expect("leak of the broken-off contexts");
    assert_eq!(leak["count"], 3, "{leak:#}");
    assert_eq!(leak["waiting_goroutines"], 3, "{leak:#}");
    assert_eq!(never_cancelled(c), (3, 0, 0, 0), "{c:#}");
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

/// Pattern 4: tickers never stopped. The 3 pollers' only holders are
/// their own leaked goroutines; the dropped ticker is referenced by
/// nothing: the runtime keeps firing it before Go 1.23, from 1.23
/// (asynctimerchan=0) it is garbage. The running loop's ticker and the
/// stopped one are not reported.
fn tickers(go: &str) {
    let t = run_proved("tickers", go, "4s");
    let timers = &t.report["timers"];
    assert_eq!(timers["not_traced"], Value::Null, "{timers:#}");
    let collects = go.trim_start_matches("1.").parse::<u32>().unwrap() >= 23;
    let groups = list(timers, "tickers_never_stopped");
    assert_eq!(groups.len(), 2, "{timers:#}");
    let g = groups
        .iter()
        .find(|g| func(&g["created_at"]) == "main.startPoller")
        .expect("the pollers' tickers");
    assert_eq!(g["count"], 3, "{timers:#}\n{:#}", t.report["proof"]);
    assert_eq!(g["period_s"], 0.1);
    assert_eq!(g["verdict"], "leak");
    let pollers: Vec<u64> = list(&t.report["proof"], "goroutines")
        .iter()
        .filter(|p| p["verdict"] == "leaked")
        .map(|p| p["goid"].as_u64().unwrap())
        .collect();
    assert_eq!(pollers.len(), 3, "{:#}", t.report["proof"]);
    assert_eq!(
        g["leaked_holders"],
        serde_json::json!(pollers),
        "the evidence: their only holders are proven leaked"
    );
    let d = groups
        .iter()
        .find(|g| func(&g["created_at"]) == "main.dropTicker")
        .expect("the dropped ticker");
    assert_eq!(d["count"], 1);
    if collects {
        assert_eq!(d["verdict"], "collected", "{d:#}");
        assert_eq!(d["runtime_held"], 0, "{d:#}");
    } else {
        assert_eq!(d["verdict"], "leak", "{d:#}");
        assert_eq!(d["runtime_held"], 1, "{d:#}");
    }
    let n = &timers["never_stopped"];
    assert_eq!(n["total"], 5, "{n:#}");
    assert_eq!(n["running"], 1, "runningLoop's ticker: {n:#}");
    assert_eq!(n["leaked"], if collects { 3 } else { 4 }, "{n:#}");
    assert_eq!(n["collected"], u64::from(collects), "{n:#}");
    assert_eq!(n["undecided"]["count"], 0, "{n:#}");
    let running = list(timers, "judged")
        .iter()
        .find(|j| j["verdict"] == "running")
        .cloned()
        .expect("a running ticker");
    assert_eq!(func(&running["created_at"]), "main.runningLoop");
    let by = list(&running["evidence"], "referenced_by");
    assert_eq!(by[0]["kind"], "goroutine", "{running:#}");
    assert_eq!(by[0]["function"], "main.runningLoop", "{running:#}");
    assert_eq!(
        timers["stopped"],
        t.fixture_count("planted", "stopped"),
        "properTicker's Stop seen: {timers:#}"
    );
    let out = &t.gotrace_stdout;
    let want = if collects { 1 } else { 2 };
    assert_eq!(out.matches("TICKER NEVER STOPPED").count(), want, "{out}");
}

/// Long-lived contexts and tickers that are not leaks: server-lifetime
/// contexts (one cancelled at shutdown, one still serving), a context kept
/// with its cancel in a struct, keep-alive connections that outlive their
/// request contexts, tickers in running loops with `defer t.Stop()`.
fn ctxdecoys(go: &str) {
    let t = run_proved("ctxdecoys", go, "4s");
    assert_eq!(
        t.fixture_count("decoy", "keepalive"),
        3,
        "{}",
        t.fixture_stdout
    );
    let c = ctx(&t);
    clean_patterns(c, &[]);
    assert_eq!(c["ignored_cancel_undecided"]["count"], 0, "{c:#}");
    let (leaked, live, _, _) = never_cancelled(c);
    assert_eq!(leaked, 0, "{c:#}");
    undecided_only_on_stale_stacks(c);
    for (function, n) in [("main.startServer", 1), ("main.openSession", 1)] {
        let nodes: Vec<&Value> = nodes_from(c, function)
            .into_iter()
            .filter(|n| n["state"] == "live")
            .collect();
        assert_eq!(nodes.len(), n, "{function}: {c:#}");
        for n in nodes {
            assert_eq!(n["verdict"], "live", "{n:#}");
            let f = &n["evidence"]["cancel_func"];
            assert_eq!(f["function"], "context.WithCancel.func1", "{n:#}");
        }
    }
    assert!(live >= 2, "{c:#}");
    let timers = &t.report["timers"];
    assert!(
        list(timers, "tickers_never_stopped").is_empty(),
        "{timers:#}"
    );
    let n = &timers["never_stopped"];
    assert_eq!(n["running"], 1, "server b's tickLoop: {n:#}");
    assert_eq!(n["undecided"]["count"], 0, "{n:#}");
    let out = &t.gotrace_stdout;
    for finding in [
        "CONTEXT LEAK",
        "IGNORED CANCEL",
        "BROKEN CHAIN",
        "TICKER NEVER STOPPED",
    ] {
        assert!(!out.contains(finding), "{finding}:\n{out}");
    }
}

/// `-- CMD`: the command is held at its exit and the proof reads its last
/// state there, so the discarded cancel funcs are decided as with --pid:
/// the 11 contexts leaked, none undecided.
fn ctxleak_at_exit(go: &str) {
    let t = run("ctxleak", go, "1s");
    assert_eq!(t.report["trace"]["ended_by"], "target-exit");
    let proof = &t.report["proof"];
    assert_eq!(proof["status"], "done", "{proof:#}\n{}", t.gotrace_stderr);
    let c = ctx(&t);
    assert_eq!(never_cancelled(c), (11, 0, 0, 0), "{c:#}");
    let leaks = list(c, "leaks");
    let count = |f: &str| {
        leaks
            .iter()
            .find(|l| func(&l["created_at"]) == f)
            .map(|l| l["count"].clone())
    };
    assert_eq!(count("main.startJob"), Some(7.into()), "{leaks:#?}");
    assert_eq!(count("main.makeIdleContexts"), Some(4.into()), "{leaks:#?}");
    assert!(
        t.gotrace_stdout.contains("CONTEXT LEAK"),
        "{}",
        t.gotrace_stdout
    );
}

/// `-- CMD`: the pollers' tickers, held only by their proven-leaked
/// goroutines, are decided leaked at the command's exit; no ticker is
/// left undecided.
fn tickers_at_exit(go: &str) {
    let t = run("tickers", go, "1s");
    assert_eq!(t.report["trace"]["ended_by"], "target-exit");
    let proof = &t.report["proof"];
    assert_eq!(proof["status"], "done", "{proof:#}\n{}", t.gotrace_stderr);
    let timers = &t.report["timers"];
    let g = list(timers, "tickers_never_stopped")
        .iter()
        .find(|g| func(&g["created_at"]) == "main.startPoller")
        .cloned()
        .unwrap_or_else(|| panic!("the pollers' tickers: {timers:#}"));
    assert_eq!(g["count"], 3, "{g:#}");
    assert_eq!(g["verdict"], "leak", "{g:#}");
    assert_eq!(list(&g, "leaked_holders").len(), 3, "{g:#}");
    let n = &timers["never_stopped"];
    assert_eq!(n["undecided"]["count"], 0, "{n:#}");
    assert!(n["leaked"].as_u64().unwrap() >= 3, "{n:#}");
}

fn fixture_total(t: &Traced, key: &str) -> u64 {
    t.fixture_stdout
        .lines()
        .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} line:\n{}", t.fixture_stdout))
}

gotrace_e2e::per_go_version!(
    ctxleak,
    ctxignore,
    ctxbroken,
    ctxnested,
    ctxcause,
    ctxcontrol,
    ctxcount,
    tickers,
    ctxdecoys,
    ctxleak_at_exit,
    tickers_at_exit,
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

/// A healthy Prometheus (Debian's stripped Go 1.19 build, scraping itself
/// every second), attached with --pid for 10 s with the default threshold
/// as a new user would, while a reload (SIGHUP) adds a scrape job: its
/// scrape pool and loop make component-lifetime contexts and a ticker
/// during the trace, and its scrapes run over keep-alive connections. No
/// context, ticker or ignored-cancel finding: the new contexts are live
/// (their cancel functions reachable), the ticker running.
#[test]
fn prometheus_has_no_context_or_ticker_findings() {
    use gotrace_e2e::prometheus::{Prometheus, ScrapeTarget};
    use std::time::Duration;
    let Some(_g) = root_guard() else { return };
    let mut prom = Prometheus::start(&[]).unwrap_or_else(|e| panic!("{e:#}"));
    prom.wait_scraped("prometheus", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let again = ScrapeTarget::new("again", &format!("127.0.0.1:{}", prom.port), "/metrics");
    let t = gotrace_e2e::trace_running(prom.pid, &["--full", "--duration", "10s"], || {
        prom.reload(std::slice::from_ref(&again))
            .unwrap_or_else(|e| panic!("{e:#}"))
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    prom.wait_scraped("again", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("the reload did not take: {e:#}"));
    let r = &t.report;
    assert_eq!(r["proof"]["status"], "done", "{}", t.gotrace_stderr);
    let c = ctx(&t);
    clean_patterns(c, &[]);
    assert!(list(c, "ignored_cancel_groups").is_empty(), "{c:#}");
    assert_eq!(c["ignored_cancel_undecided"]["count"], 0, "{c:#}");
    let (leaked, live, _, _) = never_cancelled(c);
    assert_eq!(leaked, 0, "{:#}", c["never_cancelled"]);
    undecided_only_on_stale_stacks(c);
    assert!(live >= 2, "{:#}", c["never_cancelled"]);
    for maker in ["scrape.newScrapePool", "scrape.newScrapeLoop"] {
        let made: Vec<&Value> = list(c, "nodes")
            .iter()
            .filter(|n| func(&n["created_at"]).ends_with(maker) && n["state"] == "live")
            .collect();
        assert_eq!(made.len(), 1, "{maker}: {c:#}");
        let f = &made[0]["evidence"]["cancel_func"];
        assert_eq!(f["function"], "context.WithCancel.func1", "{:#}", made[0]);
    }
    for n in list(c, "nodes") {
        assert!(!func(&n["created_at"]).starts_with("context."), "{n:#}");
    }
    let timers = &r["timers"];
    assert_eq!(timers["not_traced"], Value::Null, "{timers:#}");
    assert!(
        list(timers, "tickers_never_stopped").is_empty(),
        "{timers:#}"
    );
    let n = &timers["never_stopped"];
    assert!(
        n["running"].as_u64().unwrap() >= 1,
        "the new loop's ticker: {n:#}"
    );
    assert_eq!(n["leaked"], 0, "{n:#}");
    assert_eq!(n["undecided"]["count"], 0, "{n:#}");
    let out = &t.gotrace_stdout;
    for finding in [
        "CONTEXT LEAK",
        "IGNORED CANCEL",
        "BROKEN CHAIN",
        "TICKER NEVER STOPPED",
    ] {
        assert!(!out.contains(finding), "{finding}:\n{out}");
    }
    assert!(
        prom.alive(),
        "the trace stopped Prometheus:\n{}",
        prom.log()
    );
}
