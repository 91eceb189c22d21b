//! Sampled mode (`--sampled`: no probe, goroutine samples read from the
//! target's memory) against full tracing (`--full`) of the same fixture,
//! each attached with `--pid` before the leaks are planted: the same leak
//! groups, counts, creation sites, blocked stacks and growth verdicts, the
//! counts exact from the fixtures' own output.

use std::collections::BTreeMap;

use gotrace_e2e::{Traced, fixture, func, list, per_go_version, trace_pid, trace_pid_env};
use serde_json::Value;

const MODES: [&str; 2] = ["--full", "--sampled"];

/// `fixture` traced with `--pid` in `mode` for 4 s (it holds for 60; 6 s for preexisting),
/// 8 s for the demo service (its load lasts 3 s untraced).
fn traced(name: &str, go: &str, mode: &str) -> Traced {
    let bin = fixture(name, go);
    // preexisting plants 5 000 goroutines, some after attach: on a loaded
    // machine main may reach its hold late, and must be parked past the
    // 1 s threshold in both modes.
    let duration = match name {
        "leakyservice" => "8s",
        "preexisting" => "6s",
        _ => "4s",
    };
    let args = [mode, "--duration", duration, "--leak-threshold", "1s"];
    trace_pid(&bin, "60s", &args).unwrap_or_else(|e| panic!("{name} {mode} (Go {go}): {e:#}"))
}

/// "function file:line" of a frame ("" for none).
fn at(frame: &Value) -> String {
    format!(
        "{} {}:{}",
        func(frame),
        frame["file"].as_str().unwrap_or(""),
        frame["line"]
    )
}

/// A suspect group as both modes must show it: the key, the count and the
/// blocked stack. The innermost frame (runtime.gopark) goes by function
/// only: the park probe reads its pc after gopark's prologue, a sample
/// where the goroutine resumes.
fn suspects(t: &Traced) -> BTreeMap<String, (u64, Vec<String>)> {
    list(&t.report, "suspects")
        .iter()
        .map(|g| {
            let key = format!(
                "{} | {} | {} | created at {} | blocked at {}",
                g["start_function"].as_str().unwrap(),
                g["pattern"].as_str().unwrap(),
                g["wait_reason"].as_str().unwrap_or("-"),
                at(&g["created_at"]),
                at(&g["blocked_at"]),
            );
            let stack = list(g, "blocked_stack")
                .iter()
                .enumerate()
                .map(|(i, f)| if i == 0 { func(f).to_string() } else { at(f) })
                .collect();
            (key, (g["count"].as_u64().unwrap(), stack))
        })
        .collect()
}

/// Whether each creation site of the program grew without bound (a site
/// absent from `growth`, none of whose goroutines a sample saw, did not).
fn unbounded(t: &Traced) -> BTreeMap<String, bool> {
    list(&t.report, "growth")
        .iter()
        .map(|g| {
            let site = format!(
                "{} {}",
                g["start_function"].as_str().unwrap(),
                at(&g["created_at"])
            );
            (site, g["unbounded"].as_bool().unwrap())
        })
        .collect()
}

/// The two reports show the same suspect groups with the same blocked
/// stacks (the counts are checked against each run's fixture output).
fn same_suspects(name: &str, full: &Traced, sampled: &Traced) {
    let shape = |t: &Traced| -> BTreeMap<String, Vec<String>> {
        suspects(t)
            .into_iter()
            .map(|(k, (_, stack))| (k, stack))
            .collect()
    };
    assert_eq!(
        shape(full),
        shape(sampled),
        "{name}: full vs sampled suspects\nfull: {:#}\nsampled: {:#}",
        full.report["suspects"],
        sampled.report["suspects"]
    );
    assert_eq!(full.report["trace"]["mode"], "full");
    assert_eq!(sampled.report["trace"]["mode"], "sampled");
    assert_eq!(sampled.report["trace"]["probes_attached"], 0);
    // Samples every interval (stretched when reading costs gotrace much
    // CPU: max_interval_s), each gap that plus a read and the scheduler's
    // lag: at least duration / (max_interval + 0.5 s) of them.
    let s = &sampled.report["trace"]["samples"];
    let duration = sampled.report["trace"]["duration_s"].as_f64().unwrap();
    let gap = s["max_interval_s"].as_f64().unwrap() + 0.5;
    let taken = s["taken"].as_u64().unwrap();
    assert!(taken >= 3 && taken as f64 >= duration / gap, "{s}");
    assert_eq!(s["failed"], 0, "{s}");
    assert_eq!(full.exit_code, Some(3));
    assert_eq!(sampled.exit_code, Some(3));
    // The leak proof runs at the end in both modes and proves the same.
    for t in [full, sampled] {
        assert_eq!(
            t.report["proof"]["status"], "done",
            "{name}: {:#}",
            t.report["proof"]
        );
    }
    let proven = |t: &Traced| -> Vec<(String, u64)> {
        list(&t.report, "suspects")
            .iter()
            .map(|g| {
                let f = g["start_function"].as_str().unwrap_or("").to_string();
                (f, g["proven_leaked"].as_u64().unwrap_or(0))
            })
            .collect()
    };
    // A mutex or WaitGroup is a tiny allocation: when it shares the P's
    // current tiny block, a root (as in Go's own detector), its waiters
    // are wakeable. Which ones do is down to allocation timing, so with
    // locks each run proves a subset of the suspects; with channels the
    // same goroutines.
    if name == "locks" {
        for t in [full, sampled] {
            let leaked = t.report["leaked_count"].as_u64().unwrap();
            let suspects = t.report["suspect_count"].as_u64().unwrap();
            assert!(leaked < suspects, "{name}: {leaked} of {suspects}");
        }
        return;
    }
    // With GOTRACE_PROOF_PATHS=1 and RUST_LOG=tracer::proof=debug in the
    // environment, gotrace logs the slots that reached a wakeable
    // goroutine's primitive.
    let paths = |t: &Traced| -> String {
        let lines = t
            .gotrace_stderr
            .lines()
            .filter(|l| l.contains("proof path"));
        lines.collect::<Vec<_>>().join("\n")
    };
    // The heap is scanned conservatively: a stale word in a runtime
    // structure (a g, an M, a P, reached from runtime.allgptr, allm, allp)
    // can reach a channel, and its waiters are then "wakeable": a miss,
    // never a false proof. Seen about once in 100 runs on Go 1.26/1.27
    // (a P's saved vector registers, now hidden: HeapLayout::p_stale);
    // other such words may remain. Allowed and printed; counted back, the
    // two modes prove the same.
    let misses = |t: &Traced| -> u64 {
        let kept = |v: &Value| {
            v["verdict"] == "wakeable"
                && v["kept_by"]["kind"] == "global"
                && v["kept_by"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("runtime."))
        };
        let n = list(&t.report["proof"], "goroutines")
            .iter()
            .filter(|v| kept(v))
            .count() as u64;
        if n > 0 {
            eprintln!(
                "{name} {}: {n} waiters not proven, kept by a runtime root: {:?}\n{}",
                t.report["trace"]["mode"],
                proven(t),
                paths(t)
            );
        }
        n
    };
    let leaked = |t: &Traced| t.report["leaked_count"].as_u64().unwrap();
    assert_eq!(
        leaked(full) + misses(full),
        leaked(sampled) + misses(sampled),
        "{name}: full vs sampled proven leaks: {:?} vs {:?}\nfull proof: {}\nsampled proof: {}\npaths:\n{}\n{}",
        proven(full),
        proven(sampled),
        full.report["proof"],
        sampled.report["proof"],
        paths(full),
        paths(sampled)
    );
}

/// The suspect count of the group running `start`.
fn count(t: &Traced, start: &str) -> u64 {
    let found: Vec<u64> = suspects(t)
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("{start} |")))
        .map(|(_, (n, _))| *n)
        .collect();
    assert_eq!(found.len(), 1, "{start}: {:#}", t.report["suspects"]);
    found[0]
}

/// Traces `name` in both modes, checks that they agree, and checks each
/// run's suspect count per start function with `want` (from the run's
/// fixture output); the main goroutine, asleep in the fixture's hold, is
/// the one other suspect.
fn both(name: &str, go: &str, want: &dyn Fn(&Traced) -> Vec<(&'static str, u64)>) {
    let [full, sampled] = MODES.map(|m| traced(name, go, m));
    same_suspects(name, &full, &sampled);
    for t in [&full, &sampled] {
        let mode = &t.report["trace"]["mode"];
        let want = want(t);
        for (start, n) in &want {
            assert_eq!(
                count(t, start),
                *n,
                "{name} {mode}: {start}: {:#}",
                t.report["suspects"]
            );
        }
        let total: u64 = want.iter().map(|(_, n)| n).sum();
        let all = t.report["suspect_count"].as_u64().unwrap();
        assert_eq!(all, total + 1, "{name} {mode}: {:#}", t.report["suspects"]);
    }
}

fn chanrecv(go: &str) {
    both("chanrecv", go, &|_| vec![("main.receiveForever", 10)]);
}

fn chansend(go: &str) {
    both("chansend", go, &|t| {
        vec![("main.slowCompute", t.fixture_count("planted", "chansend"))]
    });
}

fn selectwait(go: &str) {
    both("selectwait", go, &|_| vec![("main.selectForever", 6)]);
}

fn locks(go: &str) {
    both("locks", go, &|_| {
        vec![
            ("main.lockWaiter", 5),
            ("main.waitGroupWaiter", 3),
            ("main.rlockWaiter", 2),
            ("main.transferAB", 1),
            ("main.transferBA", 1),
        ]
    });
}

fn leakyservice(go: &str) {
    both("leakyservice", go, &|t| {
        vec![
            ("main.queryBackend", t.fixture_count("planted", "search")),
            (
                "main.subscriberLoop",
                t.fixture_count("planted", "subscribe"),
            ),
            ("main.cacheRefresher", 1),
        ]
    });
}

/// Goroutines leaked before attach and after, in one group per site.
fn preexisting(go: &str) {
    both("preexisting", go, &|t| {
        let after = t.fixture_count("planted", "receivers-after-attach");
        vec![
            (
                "main.receiveForever",
                t.fixture_count("planted", "receivers") + after,
            ),
            ("main.sendForever", t.fixture_count("planted", "senders")),
        ]
    });
}

/// A request loop leaving one goroutine behind per request for 4 s, then
/// 1.5 s more alive (GOTRACE_LINGER) so that a last sample sees the end:
/// the same growth verdicts, and every leaked goroutine counted.
fn growth(go: &str) {
    let bin = fixture("growth", go);
    let [full, sampled] = MODES.map(|mode| {
        let args = [mode, "--leak-threshold", "1s"];
        trace_pid_env(&bin, "4s", &args, &[("GOTRACE_LINGER", "1.5s")])
            .unwrap_or_else(|e| panic!("growth {mode} (Go {go}): {e:#}"))
    });
    let verdicts = |t: &Traced| -> BTreeMap<String, bool> {
        unbounded(t).into_iter().filter(|(_, u)| *u).collect()
    };
    assert_eq!(
        verdicts(&full),
        verdicts(&sampled),
        "unbounded sites; full: {:#}\nsampled: {:#}",
        full.report["growth"],
        sampled.report["growth"]
    );
    for t in [&full, &sampled] {
        let spawned = t.fixture_count("spawned", "handleRequest");
        let leaky = t.growth_of("main.handleRequest");
        assert_eq!(
            leaky["unbounded"], true,
            "{}: {leaky:#}",
            t.report["trace"]["mode"]
        );
        assert_eq!(leaky["live_at_end"], spawned, "{leaky:#}");
        assert_eq!(leaky["exited"], 0, "{leaky:#}");
        assert_eq!(leaky["created_at"]["function"], "main.serve");
        // Every handleFast is gone: not a growing site (in sampled mode,
        // possibly never seen at all).
        assert!(
            !unbounded(t)
                .iter()
                .any(|(k, u)| k.starts_with("main.handleFast") && *u)
        );
        assert_eq!(t.report["trace"]["ended_by"], "target-exit");
    }
    // Sampled: the leaked goroutines seen by samples, ages lower bounds.
    let leaky = sampled.growth_of("main.handleRequest");
    assert_eq!(leaky["created"], leaky["live_at_end"], "{leaky:#}");
    let g = sampled.suspects_running("main.handleRequest");
    assert_eq!(g.len(), 1, "{:#}", sampled.report["suspects"]);
    assert_eq!(g[0]["age_lower_bound"], g[0]["count"], "{:#}", g[0]);
}

per_go_version!(
    chanrecv,
    chansend,
    selectwait,
    locks,
    leakyservice,
    preexisting,
    growth
);
