//! Contexts read from memory at the end of a sampled trace
//! (`contexts.from_memory`): the contexts the parked goroutines hold on
//! their stacks, cancelled or not, and who waits on a Done channel, with
//! the counts the fixtures plant; null with `--full`.

use gotrace_e2e::{Traced, fixture, per_go_version, trace_pid};
use serde_json::Value;

/// `name` attached with `--pid` in `mode` for 4 s (it holds for 60).
fn traced(name: &str, go: &str, mode: &str) -> Traced {
    let bin = fixture(name, go);
    let args = [mode, "--duration", "4s", "--leak-threshold", "1s"];
    trace_pid(&bin, "60s", &args).unwrap_or_else(|e| panic!("{name} {mode} (Go {go}): {e:#}"))
}

fn from_memory(t: &Traced) -> &Value {
    &t.report["contexts"]["from_memory"]
}

/// The group of goroutines started by `start` parked for `reason`.
fn group<'a>(m: &'a Value, start: &str, reason: &str) -> &'a Value {
    let found: Vec<&Value> = m["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["start"] == start && g["wait_reason"] == reason)
        .collect();
    assert_eq!(found.len(), 1, "{start} ({reason}): {m:#}");
    found[0]
}

fn read_ok(m: &Value) {
    assert_eq!(m["read"], true, "{m:#}");
    assert_eq!(m["error"], Value::Null, "{m:#}");
    assert!(
        !m["undecided"]["not_decidable"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{m:#}"
    );
}

/// ctxignore: 5 ignorers parked on `<-work` hold the cancelled context (it
/// is live on their stacks: they use it after the receive); the 3 watchers
/// that waited on its Done have exited.
fn ctxignore(go: &str) {
    let t = traced("ctxignore", go, "--sampled");
    let m = from_memory(&t);
    read_ok(m);
    let ignorers = t.fixture_count("planted", "ignorers");
    assert_eq!(ignorers, 5);
    let g = group(m, "main.ignoresContext", "chan receive");
    assert_eq!(g["holding"], ignorers, "{m:#}");
    assert_eq!(g["holding_cancelled_parked_elsewhere"], ignorers, "{m:#}");
    assert_eq!(g["waiting_on_done"], 0, "{m:#}");
    assert_eq!(g["blocked_at"], "main.ignoresContext", "{m:#}");
    assert_eq!(g["sample_chain"][0], "*context.cancelCtx", "{m:#}");
    assert_eq!(m["waiting_on_done"]["count"], 0, "{m:#}");
    assert!(m["cancelled"].as_u64().unwrap() >= 1, "{m:#}");
    let text = &t.gotrace_stdout;
    assert!(text.contains("contexts in memory"), "{text}");
    let full = traced("ctxignore", go, "--full");
    assert_eq!(full.report["contexts"]["from_memory"], Value::Null);
}

/// ctxleak: 7 jobWorkers wait on the Done of their never-cancelled
/// WithTimeout context, which each holds: 4 (even `i`) in a plain
/// `<-ctx.Done()`, 3 in a select; none holds a cancelled one. The same in
/// sampled mode and in the `--pid` default (budgeted).
fn ctxleak(go: &str) {
    for (flag, mode) in [("--sampled", "sampled"), ("--max-overhead=3", "budgeted")] {
        ctxleak_in(go, flag, mode);
    }
}

fn ctxleak_in(go: &str, flag: &str, mode: &str) {
    let t = traced("ctxleak", go, flag);
    assert_eq!(t.report["trace"]["mode"], mode);
    let m = from_memory(&t);
    read_ok(m);
    let waiters = t.fixture_count("planted", "waiters");
    assert_eq!(waiters, 7);
    for (reason, n) in [("chan receive", 4), ("select", 3)] {
        let g = group(m, "main.jobWorker", reason);
        assert_eq!(g["waiting_on_done"], n, "{reason}: {m:#}");
        assert_eq!(g["holding"], n, "{reason}: {m:#}");
        assert_eq!(g["holding_cancelled_parked_elsewhere"], 0, "{m:#}");
        assert_eq!(g["sample_chain"][0], "*context.timerCtx", "{m:#}");
    }
    assert_eq!(m["waiting_on_done"]["count"], waiters, "{m:#}");
    assert_eq!(m["waiting_on_done"]["cancelled"], 0, "{m:#}");
    assert_eq!(
        m["seen_in_memory"]["holding_cancelled_parked_elsewhere"], 0,
        "{m:#}"
    );
}

per_go_version!(ctxignore, ctxleak);
