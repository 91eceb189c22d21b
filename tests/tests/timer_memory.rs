//! Timers read from memory at the end of a sampled or budgeted trace
//! (`timers.from_memory`): the runtime's timer heaps by callback and
//! period, with the counts the tickers fixture plants; null with `--full`.
//!
//! The fixture's 3 pollers' 100 ms tickers are never stopped and nobody
//! receives from them, nor from the dropped 50 ms ticker; the running
//! loop's 20 ms ticker is waited on in a select. Before Go 1.23 the
//! runtime keeps every started ticker in a heap: all of them are there.
//! From Go 1.23 a channel timer nobody waits on is kept out (the limit the
//! report states): only the running loop's can be.

use gotrace_e2e::{Traced, fixture, per_go_version, trace_pid};
use serde_json::Value;

/// The tickers fixture attached with `--pid` and `flag` for 3 s (it holds
/// for 60).
fn traced(go: &str, flag: &str) -> Traced {
    let bin = fixture("tickers", go);
    let args = [flag, "--duration", "3s"];
    trace_pid(&bin, "60s", &args).unwrap_or_else(|e| panic!("tickers {flag} (Go {go}): {e:#}"))
}

/// The `time.sendTime` timers firing every `period` seconds.
fn tickers(m: &Value, period: f64) -> Option<&Value> {
    let found: Vec<&Value> = m["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["callback"] == "time.sendTime" && g["period_s"] == period)
        .collect();
    assert!(found.len() <= 1, "{m:#}");
    found.first().copied()
}

fn timer_heaps(go: &str) {
    for (flag, mode) in [("--sampled", "sampled"), ("--max-overhead=3", "budgeted")] {
        let t = traced(go, flag);
        assert_eq!(t.report["trace"]["mode"], mode);
        let m = &t.report["timers"]["from_memory"];
        assert_eq!(m["read"], true, "{m:#}");
        assert_eq!(m["error"], Value::Null, "{m:#}");
        assert_eq!(m["read_errors"], 0, "{m:#}");
        assert!(m["ps"].as_u64().unwrap() >= 1, "{m:#}");
        assert_eq!(m["not_decidable"].as_array().unwrap().len(), 2, "{m:#}");
        let pollers = t.fixture_count("planted", "tickers");
        assert_eq!(pollers, 3);
        let minor: u32 = go.trim_start_matches("1.").parse().unwrap();
        if minor < 23 {
            let p = tickers(m, 0.1).expect("the pollers' tickers");
            assert_eq!(p["count"], pollers, "{m:#}");
            assert_eq!(
                (&p["channel"], &p["waiting_goroutines"]),
                (&true.into(), &0.into()),
                "{m:#}"
            );
            let d = tickers(m, 0.05).expect("the dropped ticker");
            assert_eq!(
                (&d["count"], &d["waiting_goroutines"]),
                (&1.into(), &0.into()),
                "{m:#}"
            );
            assert_eq!(
                tickers(m, 0.02).expect("the running loop's")["count"],
                1,
                "{m:#}"
            );
        } else {
            assert!(tickers(m, 0.1).is_none(), "{m:#}");
            assert!(tickers(m, 0.05).is_none(), "{m:#}");
        }
        // The running loop's ticker is the one waited on (when it is in
        // the heap: from Go 1.23 it is out while the loop handles a tick).
        if let Some(r) = tickers(m, 0.02) {
            assert_eq!(r["count"], 1, "{m:#}");
            assert!(r["waiting_goroutines"].as_u64().unwrap() <= 1, "{m:#}");
        }
        let text = &t.gotrace_stdout;
        assert!(text.contains("timers in memory"), "{text}");
        assert!(
            text.contains("time.sendTime x1 every 0.02s, ") || minor >= 23,
            "{text}"
        );
    }
    let full = traced(go, "--full");
    assert_eq!(full.report["timers"]["from_memory"], Value::Null);
}

per_go_version!(timer_heaps);
