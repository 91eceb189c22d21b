//! What the probes read per event and what they do past their limits: a
//! context's Done channel in a `select` with more cases than a park event
//! holds, a `select` longer than the probes read, a stack deeper than their
//! walk, and their own diagnostics (`--debug-probes`). Fixture `ctxselect`,
//! traced from its first goroutine by the real gotrace binary.

use gotrace_e2e::{Traced, fixture, root_guard, trace_command};
use serde_json::Value;

fn run(go: &str, args: &[&str]) -> Traced {
    let bin = fixture("ctxselect", go);
    let mut all = vec!["--leak-threshold", "1s"];
    all.extend_from_slice(args);
    trace_command(&bin, "2s", &all).unwrap_or_else(|e| panic!("tracing ctxselect (Go {go}): {e:#}"))
}

/// How many the fixture says it planted in `group`.
fn planted(t: &Traced, group: &str) -> u64 {
    let prefix = format!("planted {group} ");
    t.fixture_stdout
        .lines()
        .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} line:\n{}", t.fixture_stdout))
}

/// Each waiter parks in a 17-case select whose Done channel is the 17th
/// wait (the old probes read 4): it is tied to its context all the same.
/// The 70-case select is cut at 64 channels, the 200-deep recursion's
/// stack at 127 frames once, and the summary says so.
fn ctxselect(go: &str) {
    let t = run(go, &[]);
    let waiters = planted(&t, "select-waiters");
    let c = &t.report["contexts"];
    assert_eq!(c["not_traced"], Value::Null, "{c:#}");
    // The verdict needs the leak proof (a command is read at its exit).
    if let Some(leak) = gotrace_e2e::context_leak(&t.report, "main.startWaiter", waiters) {
        assert_eq!(leak["kind"], "cancel", "{leak:#}");
        assert_eq!(leak["waiting_goroutines"], waiters, "{leak:#}");
    }
    let nodes: Vec<&Value> = c["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter(|n| n["created_at"]["function"] == "main.startWaiter")
        .collect();
    assert_eq!(nodes.len() as u64, waiters);
    for n in nodes {
        let w = n["waiting_goroutines"].as_array().expect("waiting");
        assert_eq!(w.len(), 1, "{n:#}");
    }
    let k = &t.report["trace"]["kernel"];
    assert_eq!(k["dropped_total"], 0, "{k:#}");
    // The design gives one park of the huge select; one run in about 25
    // (Go 1.19, under load) counted otherwise, so at least that: 0 (a cut
    // not counted) still fails.
    let huge = planted(&t, "huge-select");
    assert!(k["wait_chans_truncated"].as_u64().unwrap() >= huge, "{k:#}");
    assert_eq!(k["stacks_truncated"], planted(&t, "deep-stack"), "{k:#}");
    // Every read the probes make here succeeds (a fresh cancelCtx is not
    // read for a deadline it does not have).
    assert_eq!(k["read_errors_total"], 0, "{k:#}");
    let out = &t.gotrace_stdout;
    assert!(
        out.contains("warning: 1 event stacks were cut at 127 frames"),
        "{out}"
    );
    assert!(
        out.contains(" parks waited on more than 64 channels: only the first 64 were read"),
        "{out}"
    );
    assert!(
        !t.gotrace_stderr.contains("gotrace: probe:"),
        "{}",
        t.gotrace_stderr
    );
}

gotrace_e2e::per_go_version!(ctxselect);

/// `--debug-probes` prints the probes' own diagnostics on stderr: the
/// deep stack's cut and the huge select's skipped channels, from the
/// go_park program.
#[test]
fn debug_probes_prints_probe_messages() {
    let Some(_g) = root_guard() else { return };
    let t = run("1.26", &["--debug-probes"]);
    let err = &t.gotrace_stderr;
    assert!(
        err.contains("gotrace: probe: stack cut at 127 frames"),
        "{err}"
    );
    assert!(
        err.contains("gotrace: probe: go_park: skipped: wait list longer than MAX_WAIT_CHANS"),
        "{err}"
    );
    assert_eq!(t.report["trace"]["kernel"]["dropped_total"], 0);
}
