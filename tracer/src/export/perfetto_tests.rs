use std::collections::BTreeMap;

use serde_json::Value;

use super::*;
use crate::model::Model;
use crate::model::timeline::tests::{cancel, create, ctx_create, done, exit, park, ready};

struct Fake;

impl Symbols for Fake {
    fn start_function(&mut self, startpc: u64) -> String {
        format!("main.fn{startpc:x}")
    }
    fn frames(&mut self, stack: StackRef) -> Vec<Frame> {
        let f = |function: &str, line| Frame {
            function: function.into(),
            file: Some("/src/main.go".into()),
            line,
        };
        vec![
            f("runtime.gopark", 1),
            f(&format!("main.site{}", stack.id), 42),
        ]
    }
    fn go_statement(&mut self, gopc: u64) -> Option<Frame> {
        Some(Frame {
            function: format!("main.spawner{gopc:x}"),
            file: Some("/src/main.go".into()),
            line: 7,
        })
    }
}

const CHAN_RECEIVE: u32 = 14;

fn reasons() -> BTreeMap<u8, String> {
    BTreeMap::from([(CHAN_RECEIVE as u8, "waitReasonChanReceive".to_string())])
}

/// g1 (before the trace) makes a context and its child, starts g5 (waits on
/// the child's Done) and g6 (parks, exits); g2 cancels the parent, which
/// cancels the child and wakes g5.
fn model() -> Model {
    let mut m = Model::default();
    m.apply(&ctx_create(1, 0xa0, 0, 1_000));
    m.apply(&ctx_create(1, 0xb0, 0xa0, 2_000));
    m.apply(&done(0xb0, 0xc0, 2_500));
    m.apply(&create(5, 1, 3_000));
    m.apply(&park(5, 4_000, CHAN_RECEIVE, [0xc0, 0, 0, 0]));
    m.apply(&create(6, 1, 4_500));
    m.apply(&park(6, 5_000, CHAN_RECEIVE, [0; 4]));
    m.apply(&cancel(2, 0xa0, true, 10_000));
    m.apply(&cancel(2, 0xb0, false, 10_100));
    m.apply(&ready(5, 10_200, 2));
    m.apply(&ready(6, 11_000, 1));
    m.apply(&exit(6, 12_000));
    m
}

fn render(m: &Model, end_ns: u64) -> (Vec<u8>, Summary) {
    let wait_reasons = reasons();
    let input = Input {
        timeline: &m.timeline,
        contexts: &m.contexts,
        wait_reasons: &wait_reasons,
        pid: 4242,
        process_name: "demo (PID 4242)".into(),
        start_ns: 500,
        end_ns,
        other: vec![("go_version", json!("go1.26.0"))],
    };
    let mut buf = Vec::new();
    let sum = write(&mut buf, &input, &mut Fake).unwrap();
    (buf, sum)
}

fn events(json: &Value) -> &Vec<Value> {
    json["traceEvents"].as_array().expect("traceEvents")
}

fn of<'a>(json: &'a Value, ph: &str) -> Vec<&'a Value> {
    events(json).iter().filter(|e| e["ph"] == ph).collect()
}

fn us(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// The format's rules, as the e2e test checks them too.
fn check_format(json: &Value) {
    assert_eq!(json["displayTimeUnit"], "ns");
    let mut starts: BTreeMap<(String, u64), usize> = BTreeMap::new();
    let mut ends: BTreeMap<(String, u64), usize> = BTreeMap::new();
    for e in events(json) {
        us(&e["ts"]);
        assert_eq!(e["pid"], 4242, "{e}");
        assert!(e["tid"].is_u64(), "{e}");
        assert!(e["name"].is_string(), "{e}");
        match e["ph"].as_str().unwrap() {
            "X" => assert!(us(&e["dur"]) >= 0.0, "{e}"),
            "M" => assert!(e["args"]["name"].is_string() || e["args"]["sort_index"].is_u64()),
            "i" => assert!(e["s"] == "t" || e["s"] == "g", "{e}"),
            "s" => {
                *starts
                    .entry((e["name"].to_string(), e["id"].as_u64().unwrap()))
                    .or_default() += 1
            }
            "f" => {
                assert_eq!(e["bp"], "e");
                *ends
                    .entry((e["name"].to_string(), e["id"].as_u64().unwrap()))
                    .or_default() += 1
            }
            other => panic!("unexpected ph {other}: {e}"),
        }
    }
    assert_eq!(starts, ends, "every flow start has its end");
    assert!(starts.values().all(|n| *n == 1), "flow ids are unique");
}

#[test]
fn tracks_slices_cancels_and_flows() {
    let m = model();
    let (bytes, sum) = render(&m, 20_000);
    let json: Value = serde_json::from_slice(&bytes).expect("valid JSON");
    check_format(&json);
    assert_eq!(
        sum,
        Summary {
            tracks: 4,
            slices: 8,
            cancels: 2,
            flows: 4
        }
    );
    // Tracks: g1 and g2 existed before the trace (start function unknown).
    let names: Vec<&str> = of(&json, "M")
        .iter()
        .filter(|e| e["name"] == "thread_name")
        .map(|e| e["args"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["g1", "g2", "g5 main.fn205", "g6 main.fn206"]);
    let process = &of(&json, "M")[0];
    assert_eq!(process["name"], "process_name");
    assert_eq!(process["args"]["name"], "demo (PID 4242)");

    // g5: runnable from its creation, blocked, woken by the cancel, alive
    // at the end.
    let g5: Vec<&Value> = of(&json, "X")
        .into_iter()
        .filter(|e| e["tid"] == 5)
        .collect();
    let spans: Vec<(&str, f64, f64)> = g5
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), us(&e["ts"]), us(&e["dur"])))
        .collect();
    assert_eq!(
        spans,
        [
            ("runnable", 2.5, 1.0),
            ("chan receive", 3.5, 6.2),
            ("runnable", 9.7, 9.8)
        ]
    );
    assert_eq!(g5[0]["args"]["created_by"], 1);
    assert_eq!(
        g5[0]["args"]["go_statement"],
        "main.spawner101 (/src/main.go:7)"
    );
    assert_eq!(g5[1]["args"]["blocked_at"], "main.site5 (/src/main.go:42)");
    assert_eq!(g5[1]["cat"], "blocked");
    // g6 exited: its last slice ends there.
    let g6_last = of(&json, "X").into_iter().rfind(|e| e["tid"] == 6).unwrap();
    assert_eq!((us(&g6_last["ts"]), us(&g6_last["dur"])), (10.5, 1.0));

    // Cancels on g2's track; the child's says where it came from.
    let cancels = of(&json, "i");
    assert_eq!(cancels.len(), 2);
    assert!(
        cancels
            .iter()
            .all(|c| c["name"] == CANCEL_NAME && c["tid"] == 2)
    );
    assert_eq!(cancels[0]["args"]["err"], "context.Canceled");
    assert_eq!(cancels[1]["args"]["context"], 1);
    assert_eq!(cancels[1]["args"]["propagated_from"], 0);

    // Flows: go ×2 (g1 → g5, g1 → g6), cancel (parent → child), wake (→ g5).
    let flow = |name: &str| -> Vec<(u64, f64, u64, f64)> {
        let s = of(&json, "s");
        let f = of(&json, "f");
        s.iter()
            .filter(|e| e["name"] == name)
            .map(|a| {
                let b = f.iter().find(|b| b["id"] == a["id"]).unwrap();
                let tid = |e: &Value| e["tid"].as_u64().unwrap();
                (tid(a), us(&a["ts"]), tid(b), us(&b["ts"]))
            })
            .collect()
    };
    assert_eq!(flow("go"), [(1, 2.5, 5, 2.5), (1, 4.0, 6, 4.0)]);
    assert_eq!(flow("cancel"), [(2, 9.5, 2, 9.6)]);
    assert_eq!(flow("wake"), [(2, 9.6, 5, 9.7)]);
    assert_eq!(json["otherData"]["go_version"], "go1.26.0");
    assert_eq!(json["otherData"]["truncated_at_s"], Value::Null);
    // Slices come before instants and flows.
    let first_other = events(&json)
        .iter()
        .position(|e| e["ph"] != "M" && e["ph"] != "X")
        .unwrap();
    assert!(events(&json)[first_other..].iter().all(|e| e["ph"] != "X"));

    // Deterministic.
    assert_eq!(render(&m, 20_000).0, bytes);
}

#[test]
fn a_full_timeline_ends_where_it_was_cut() {
    let mut m = Model {
        timeline: Timeline::with_budget(300),
        ..Default::default()
    };
    let mut ts = 1_000;
    for goid in 10..40 {
        m.apply(&create(goid, 1, ts));
        m.apply(&park(goid, ts + 100, CHAN_RECEIVE, [0; 4]));
        ts += 1_000;
    }
    let cut = m.timeline.full_at_ns().expect("the budget ran out");
    let (bytes, _) = render(&m, 1_000_000);
    let json: Value = serde_json::from_slice(&bytes).unwrap();
    check_format(&json);
    let cut_us = (cut - 500) as f64 / 1e3;
    for e in of(&json, "X") {
        assert!(us(&e["ts"]) + us(&e["dur"]) <= cut_us + 1e-9, "{e}");
    }
    let mark = of(&json, "i")
        .into_iter()
        .find(|e| e["name"] == TRUNCATED_NAME)
        .expect("truncation mark");
    assert_eq!(mark["s"], "g");
    let other = &json["otherData"];
    assert!(other["omitted_events"].as_u64().unwrap() > 0, "{other}");
    assert!(other["omitted_goroutines"].as_u64().unwrap() > 0, "{other}");
    assert_eq!(us(&other["truncated_at_s"]), (cut - 500) as f64 / 1e9);
}

#[test]
fn an_empty_trace_is_still_a_trace() {
    let m = Model::default();
    let (bytes, sum) = render(&m, 2_000);
    let json: Value = serde_json::from_slice(&bytes).unwrap();
    check_format(&json);
    assert_eq!(sum, Summary::default());
    assert_eq!(events(&json).len(), 1, "just the process name");
}
