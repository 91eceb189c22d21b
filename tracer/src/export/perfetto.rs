//! `timeline.json`: the trace as a timeline in the Chrome Trace Event
//! format (JSON object form), which ui.perfetto.dev and chrome://tracing
//! open.
//!
//! ```text
//! {"displayTimeUnit":"ns",
//!  "traceEvents":[ one event per line ],
//!  "otherData":{ target, window, counts, what the memory cap left out }}
//! ```
//!
//! - Every goroutine is one thread track of the target's process (`pid` =
//!   target PID, `tid` = goid), named by `M` `thread_name` events
//!   (`g42 main.worker`) and ordered by `thread_sort_index`: goroutines
//!   grouped by start function (groups in order of their lowest goid,
//!   runtime goroutines last), by goid within a group.
//! - `X` complete events tile each track: `runnable` (created or woken:
//!   running or waiting for a P, which gotrace does not tell apart) and
//!   blocked slices named by Go's wait reason (`chan receive`), with
//!   `args.blocked_at` (the first program frame of the blocked stack). The
//!   first slice of a goroutine created during the trace has
//!   `args.created_by` (parent goid) and `args.go_statement`. A goroutine
//!   alive at the end has its last slice run to the end of the trace.
//! - Context cancels are `i` instant events (`"s":"t"`, name `context
//!   cancel`) on the cancelling goroutine's track, with `args.context` (the
//!   id in report.json's `contexts.nodes`), `err`, `cause`,
//!   `propagated_from` and `cancelled_at`.
//! - Flows (`s` → `f`, same `id`, `cat` and `name`; the `f` has `"bp":"e"`
//!   and binds to the slice it falls in): `go` from the `go` statement on the
//!   parent's track to the child's first slice; `cancel` from a parent
//!   context's cancel to each child cancel it propagated to; `wake` from a
//!   cancel to each goroutine it woke from a wait on the context's Done
//!   channel.
//! - `ts` and `dur` are microseconds (with nanoseconds as three decimals)
//!   since the start of the trace. All `X` events come first, so an `f` at a
//!   slice's first nanosecond is read after the slice it binds to.
//!
//! When the timeline's memory cap was reached the history ends there: open
//! slices end at that point, a global instant `timeline truncated` marks it
//! and `otherData` says what was left out.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};

use serde_json::{Value, json};
use tracer_common::CANCEL_CAUSE_IS_ERR;

use crate::model::contexts::cancel_error_name;

use crate::gobin::symbolize::Frame;
use crate::goruntime::{is_system_function, wait_reason};
use crate::model::ContextModel;
use crate::model::StackRef;
use crate::model::timeline::{NONE, Step, Timeline, Track};
use crate::resolve::StackResolver;

/// Names for code addresses and stacks (a [`StackResolver`] in gotrace).
pub trait Symbols {
    /// The function a goroutine runs, from its start pc.
    fn start_function(&mut self, startpc: u64) -> String;
    /// A stack's frames, innermost first.
    fn frames(&mut self, stack: StackRef) -> Vec<Frame>;
    /// The `go` statement at `gopc` (a return address).
    fn go_statement(&mut self, gopc: u64) -> Option<Frame>;
}

impl Symbols for StackResolver<'_> {
    fn start_function(&mut self, startpc: u64) -> String {
        StackResolver::start_function(self, startpc)
    }
    fn frames(&mut self, stack: StackRef) -> Vec<Frame> {
        StackResolver::frames(self, stack)
    }
    fn go_statement(&mut self, gopc: u64) -> Option<Frame> {
        self.pc(gopc, true)
    }
}

pub struct Input<'a> {
    pub timeline: &'a Timeline,
    pub contexts: &'a ContextModel,
    /// Raw wait reason → `waitReason*` constant name (the target's layout).
    pub wait_reasons: &'a BTreeMap<u8, String>,
    pub pid: u32,
    pub process_name: String,
    /// CLOCK_MONOTONIC ns of the trace window.
    pub start_ns: u64,
    pub end_ns: u64,
    /// More `otherData` entries (target, Go version...).
    pub other: Vec<(&'static str, Value)>,
}

/// What was written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub tracks: usize,
    pub slices: usize,
    pub cancels: usize,
    pub flows: usize,
}

/// A point on a track: (goid, ns).
type At = (u64, u64);

/// Event names the flows and instants use.
pub const CANCEL_NAME: &str = "context cancel";
pub const TRUNCATED_NAME: &str = "timeline truncated";

/// One trace event, written with its keys in a fixed order.
struct TraceEvent<'a> {
    ph: char,
    name: &'a str,
    cat: &'a str,
    tid: u64,
    /// Nanoseconds since the base.
    ts: u64,
    dur: Option<u64>,
    id: Option<u64>,
    bind_enclosing: bool,
    scope: Option<char>,
    args: Option<Value>,
}

impl<'a> TraceEvent<'a> {
    fn new(ph: char, name: &'a str, cat: &'a str, tid: u64, ts: u64) -> Self {
        Self {
            ph,
            name,
            cat,
            tid,
            ts,
            dur: None,
            id: None,
            bind_enclosing: false,
            scope: None,
            args: None,
        }
    }
}

/// ns → µs with three decimals: exact, and the same bytes every time.
fn micros(ns: u64) -> String {
    format!("{}.{:03}", ns / 1000, ns % 1000)
}

struct Writer<W: Write> {
    w: W,
    pid: u32,
    first: bool,
}

impl<W: Write> Writer<W> {
    fn event(&mut self, e: &TraceEvent<'_>) -> io::Result<()> {
        let w = &mut self.w;
        w.write_all(if self.first { b"\n" } else { b",\n" })?;
        self.first = false;
        write!(w, "{{\"ph\":\"{}\",\"name\":", e.ph)?;
        serde_json::to_writer(&mut *w, e.name)?;
        if !e.cat.is_empty() {
            write!(w, ",\"cat\":\"{}\"", e.cat)?;
        }
        write!(
            w,
            ",\"pid\":{},\"tid\":{},\"ts\":{}",
            self.pid,
            e.tid,
            micros(e.ts)
        )?;
        if let Some(d) = e.dur {
            write!(w, ",\"dur\":{}", micros(d))?;
        }
        if let Some(id) = e.id {
            write!(w, ",\"id\":{id}")?;
        }
        if e.bind_enclosing {
            w.write_all(b",\"bp\":\"e\"")?;
        }
        if let Some(s) = e.scope {
            write!(w, ",\"s\":\"{s}\"")?;
        }
        if let Some(args) = &e.args {
            w.write_all(b",\"args\":")?;
            serde_json::to_writer(&mut *w, args)?;
        }
        w.write_all(b"}")
    }
}

fn frame_text(f: &Frame) -> String {
    match &f.file {
        Some(file) => format!("{} ({file}:{})", f.function, f.line),
        None => f.function.clone(),
    }
}

/// Where a stack is, in one line: its first program frame, else its first
/// frame outside the runtime, else its first frame.
fn where_text(frames: &[Frame]) -> Option<String> {
    crate::gobin::frame::site(frames)
        .or(frames.first())
        .map(frame_text)
}

/// Writes the timeline. Deterministic: the same model gives the same bytes.
pub fn write(w: impl Write, input: &Input<'_>, sym: &mut dyn Symbols) -> io::Result<Summary> {
    let tl = input.timeline;
    let tracks = tl.tracks();
    let first_ts = tracks
        .iter()
        .filter_map(|t| t.transitions.first().map(|x| x.ts_ns))
        .chain(tl.cancels().iter().map(|c| c.ts_ns))
        .min()
        .unwrap_or(input.start_ns);
    let base = input.start_ns.min(first_ts);
    let close_ns = tl.full_at_ns().unwrap_or(input.end_ns);
    let rel = |ns: u64| ns.saturating_sub(base);

    let (functions, order) = track_order(tracks, sym);
    let mut out = Writer {
        w: io::BufWriter::new(w),
        pid: input.pid,
        first: true,
    };
    let mut sum = Summary {
        tracks: tracks.len(),
        ..Default::default()
    };
    out.w
        .write_all(b"{\"displayTimeUnit\":\"ns\",\"traceEvents\":[")?;
    write_track_names(&mut out, input, tracks, &functions, &order)?;

    // Slices, track by track.
    let mut blocked_at: HashMap<u32, Option<String>> = HashMap::new();
    for &i in &order {
        let t = &tracks[i];
        sum.slices += write_slices(&mut out, t, input, sym, &mut blocked_at, close_ns, &rel)?;
    }
    sum.cancels += write_cancels(&mut out, input, sym, &rel)?;
    if let Some(at) = tl.full_at_ns() {
        let o = tl.omitted();
        let e = TraceEvent {
            scope: Some('g'),
            args: Some(json!({
                "omitted_events": o.events,
                "omitted_goroutines": o.goroutines,
                "omitted_cancels": o.cancels,
            })),
            ..TraceEvent::new('i', TRUNCATED_NAME, "gotrace", 0, rel(at))
        };
        out.event(&e)?;
    }
    for (n, (name, (g0, t0), (g1, t1))) in flows(tl).into_iter().enumerate() {
        let id = Some(n as u64 + 1);
        out.event(&TraceEvent {
            id,
            ..TraceEvent::new('s', name, "flow", g0, rel(t0))
        })?;
        out.event(&TraceEvent {
            id,
            bind_enclosing: true,
            ..TraceEvent::new('f', name, "flow", g1, rel(t1))
        })?;
        sum.flows += 1;
    }
    out.w.write_all(b"\n],\n\"otherData\":")?;
    serde_json::to_writer_pretty(&mut out.w, &other_data(input, &sum, base))?;
    out.w.write_all(b"}\n")?;
    out.w.flush()?;
    Ok(sum)
}

/// Each track's start function, and the order tracks are shown in: the
/// program's goroutines before the runtime's, grouped by start function
/// (groups in order of their first goid), then by goid.
fn track_order(tracks: &[Track], sym: &mut dyn Symbols) -> (Vec<Option<String>>, Vec<usize>) {
    let functions: Vec<Option<String>> = tracks
        .iter()
        .map(|t| (t.startpc != 0).then(|| sym.start_function(t.startpc)))
        .collect();
    let mut group_rank: HashMap<&str, u64> = HashMap::new();
    for (t, f) in tracks.iter().zip(&functions) {
        let r = group_rank
            .entry(f.as_deref().unwrap_or(""))
            .or_insert(t.goid);
        *r = (*r).min(t.goid);
    }
    let mut order: Vec<usize> = (0..tracks.len()).collect();
    order.sort_by_key(|&i| {
        let f = functions[i].as_deref().unwrap_or("");
        (is_system_function(f), group_rank[f], tracks[i].goid)
    });
    (functions, order)
}

/// The process name, then each track's name and rank.
fn write_track_names<W: Write>(
    out: &mut Writer<W>,
    input: &Input<'_>,
    tracks: &[Track],
    functions: &[Option<String>],
    order: &[usize],
) -> io::Result<()> {
    let meta = |name: &'static str, tid: u64, args: Value| TraceEvent {
        args: Some(args),
        ..TraceEvent::new('M', name, "", tid, 0)
    };
    out.event(&meta(
        "process_name",
        0,
        json!({ "name": input.process_name }),
    ))?;
    for (rank, &i) in order.iter().enumerate() {
        let t = &tracks[i];
        let name = match &functions[i] {
            Some(f) => format!("g{} {f}", t.goid),
            None => format!("g{}", t.goid),
        };
        out.event(&meta("thread_name", t.goid, json!({ "name": name })))?;
        out.event(&meta(
            "thread_sort_index",
            t.goid,
            json!({ "sort_index": rank }),
        ))?;
    }
    Ok(())
}

/// One instant event per context cancel; returns how many.
fn write_cancels<W: Write>(
    out: &mut Writer<W>,
    input: &Input<'_>,
    sym: &mut dyn Symbols,
    rel: &dyn Fn(u64) -> u64,
) -> io::Result<usize> {
    let tl = input.timeline;
    // report.json numbers contexts by position among the nodes the model
    // still holds (old finished ones are retired on long traces).
    let pos: HashMap<usize, usize> = input
        .contexts
        .nodes()
        .enumerate()
        .map(|(i, n)| (n.id, i))
        .collect();
    let mut n = 0;
    for c in tl.cancels() {
        let Some(node) = input.contexts.get(c.node as usize) else {
            continue;
        };
        let mut args = serde_json::Map::new();
        args.insert("context".into(), json!(pos.get(&(c.node as usize))));
        let err = cancel_error_name(c.flags);
        args.insert("err".into(), json!(err));
        if let Some(cancel) = &node.cancel {
            if c.flags & CANCEL_CAUSE_IS_ERR == 0
                && let Some(msg) = &cancel.cause_msg
            {
                args.insert("cause".into(), json!(msg));
            }
            if let Some(at) = cancel.stack.and_then(|s| where_text(&sym.frames(s))) {
                args.insert("cancelled_at".into(), json!(at));
            }
        }
        if let Some(from) = tl.cancels().get(c.from as usize) {
            args.insert("propagated_from".into(), json!(from.node));
        }
        let e = TraceEvent {
            scope: Some('t'),
            args: Some(Value::Object(args)),
            ..TraceEvent::new('i', CANCEL_NAME, "context", c.goid, rel(c.ts_ns))
        };
        out.event(&e)?;
        n += 1;
    }
    Ok(n)
}

/// Flow arrows (name, from, to): `go` statements, cancel propagation, and
/// wakeups by a cancel.
fn flows(tl: &Timeline) -> Vec<(&'static str, At, At)> {
    let tracks = tl.tracks();
    let mut flows: Vec<(&str, At, At)> = Vec::new();
    for t in tracks {
        let (Some(created), Some(parent)) = (t.created_ns, tl.track_of(t.parent_goid)) else {
            continue;
        };
        if tracks[parent]
            .transitions
            .first()
            .is_some_and(|x| x.ts_ns <= created)
        {
            flows.push(("go", (t.parent_goid, created), (t.goid, created)));
        }
    }
    for c in tl.cancels() {
        if let Some(from) = tl.cancels().get(c.from as usize) {
            flows.push(("cancel", (from.goid, from.ts_ns), (c.goid, c.ts_ns)));
        }
    }
    for wk in tl.wakes() {
        let (Some(c), Some(t)) = (
            tl.cancels().get(wk.cancel as usize),
            tracks.get(wk.track as usize),
        ) else {
            continue;
        };
        flows.push(("wake", (c.goid, c.ts_ns), (t.goid, wk.ts_ns)));
    }
    flows
}

/// `otherData`: what the trace was, and what the memory cap left out.
fn other_data(input: &Input<'_>, sum: &Summary, base: u64) -> Value {
    let tl = input.timeline;
    let rel = |ns: u64| ns.saturating_sub(base);
    let o = tl.omitted();
    let mut other = serde_json::Map::new();
    other.insert("generator".into(), json!("gotrace"));
    other.insert("pid".into(), json!(input.pid));
    for (k, v) in &input.other {
        other.insert((*k).into(), v.clone());
    }
    other.insert("trace_start_monotonic_ns".into(), json!(base));
    other.insert(
        "window_s".into(),
        json!(input.end_ns.saturating_sub(base) as f64 / 1e9),
    );
    other.insert("goroutines".into(), json!(sum.tracks));
    other.insert("slices".into(), json!(sum.slices));
    other.insert("context_cancels".into(), json!(sum.cancels));
    other.insert("flows".into(), json!(sum.flows));
    other.insert(
        "runnable".into(),
        json!("created or woken: running or waiting for a P (not told apart)"),
    );
    other.insert("timeline_bytes".into(), json!(tl.bytes()));
    other.insert("timeline_budget_bytes".into(), json!(tl.budget()));
    other.insert(
        "truncated_at_s".into(),
        json!(tl.full_at_ns().map(|t| rel(t) as f64 / 1e9)),
    );
    other.insert("omitted_events".into(), json!(o.events));
    other.insert("omitted_goroutines".into(), json!(o.goroutines));
    other.insert("omitted_cancels".into(), json!(o.cancels));
    Value::Object(other)
}

/// One track's `X` events; returns how many.
fn write_slices<W: Write>(
    out: &mut Writer<W>,
    t: &Track,
    input: &Input<'_>,
    sym: &mut dyn Symbols,
    blocked_at: &mut HashMap<u32, Option<String>>,
    close_ns: u64,
    rel: &dyn Fn(u64) -> u64,
) -> io::Result<usize> {
    let mut n = 0;
    for (k, x) in t.transitions.iter().enumerate() {
        let (name, cat, mut args) = match x.step() {
            Step::Exit => break,
            Step::Runnable => ("runnable".to_string(), "runnable", serde_json::Map::new()),
            Step::Parked { reason, stack } => {
                let mut args = serde_json::Map::new();
                let at = blocked_at.entry(stack).or_insert_with(|| {
                    let s = input.timeline.stack(stack).filter(|_| stack != NONE)?;
                    where_text(&sym.frames(s))
                });
                if let Some(at) = at {
                    args.insert("blocked_at".into(), json!(at));
                }
                (
                    wait_reason::text(input.wait_reasons, reason),
                    "blocked",
                    args,
                )
            }
        };
        if k == 0
            && let Some(_) = t.created_ns
        {
            args.insert("created_by".into(), json!(t.parent_goid));
            if let Some(f) = sym.go_statement(t.gopc) {
                args.insert("go_statement".into(), json!(frame_text(&f)));
            }
        }
        let end = match t.transitions.get(k + 1) {
            Some(next) => next.ts_ns,
            None => close_ns,
        }
        .max(x.ts_ns);
        out.event(&TraceEvent {
            dur: Some(end - x.ts_ns),
            args: (!args.is_empty()).then_some(Value::Object(args)),
            ..TraceEvent::new('X', &name, cat, t.goid, rel(x.ts_ns))
        })?;
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
#[path = "perfetto_tests.rs"]
mod tests;
