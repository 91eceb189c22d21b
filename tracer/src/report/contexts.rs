//! The context part of the report: the cancel-propagation tree(s) and the
//! context failure patterns of the leak-pattern catalogue (README: 5, 6, 7
//! and nested deadlines).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use tracer_common::{
    CANCEL_CAUSE_IS_ERR, CANCEL_ERR_DEADLINE, CANCEL_METHOD_AFTER_FUNC_CTX, CANCEL_METHOD_TIMER_CTX,
};

use super::Summary;
use crate::gobin::symbolize::Frame;
use crate::goruntime::{is_system_function, is_user_function};
use crate::model::contexts::{Cancel, ContextModel, CtxNode, Parent, cancel_error_name};
use crate::model::{GoroutineModel, State};
use crate::resolve::StackResolver;

/// Nodes listed in full in `report.json`; beyond this only counts and groups.
const MAX_NODES: usize = 10_000;
const SAMPLES: usize = 5;

#[derive(Clone, Debug, Default, Serialize)]
pub struct ContextReport {
    /// Why contexts were not traced, if they were not.
    pub not_traced: Option<String>,
    pub created: u64,
    pub cancelled: u64,
    pub live_at_end: usize,
    /// Cancel calls on already-cancelled contexts (e.g. `defer cancel()`
    /// after a timeout): no-ops in Go.
    pub repeat_cancels: u64,
    /// Cancels of contexts created before tracing began.
    pub cancelled_before_seen: u64,
    /// Every context seen, with parent ids: the cancel-propagation trees.
    pub nodes: Vec<CtxOut>,
    pub nodes_truncated: bool,
    /// Old finished contexts dropped during the trace to bound memory (the
    /// counts above include them; the nodes and findings do not).
    pub retired: u64,
    /// Pattern 5: contexts never cancelled, grouped by creation site.
    pub leaks: Vec<CtxLeak>,
    /// Pattern 6: cancelled contexts whose goroutines are still alive.
    pub ignored_cancels: Vec<IgnoredCancel>,
    /// Pattern 7: Background/TODO-rooted contexts made under a cancelable one.
    pub broken_chains: Vec<BrokenChain>,
    /// Contexts cancelled by an ancestor's deadline before their own.
    pub nested_deadlines: Vec<NestedDeadline>,
}

#[derive(Clone, Debug, Serialize)]
pub struct CtxOut {
    pub id: usize,
    /// "cancel", "timer", "afterfunc" or "unknown" (created before tracing).
    pub kind: &'static str,
    /// Parent node id, when the parent is a traced context.
    pub parent: Option<usize>,
    /// What the parent is: "context" (a node), "context.Background",
    /// "context.TODO", "WithoutCancel", "before attach", or a custom type.
    pub parent_kind: String,
    /// `WithValue` layers between this context and its parent.
    pub value_hops: u32,
    pub created_at: Option<Frame>,
    /// The creating goroutine's stack at creation (innermost first); only
    /// for contexts still live at the end.
    pub creation_stack: Vec<Frame>,
    pub creator_goid: Option<u64>,
    pub age_s: Option<f64>,
    /// Deadline relative to the end of the trace (negative: passed).
    pub deadline_in_s: Option<f64>,
    /// "live" or "cancelled".
    pub state: &'static str,
    pub cancel: Option<CancelOut>,
    pub children: Vec<usize>,
    /// Live goroutines parked on this context's Done channel.
    pub waiting_goroutines: Vec<u64>,
    /// Live goroutines started while this was their creator's context.
    pub started_goroutines_alive: Vec<u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct CancelOut {
    /// "context.Canceled" or "context.DeadlineExceeded", compared with the
    /// target's own values.
    pub err: &'static str,
    /// The cause (Go 1.20+) when it differs from err: message and/or type.
    pub cause: Option<String>,
    /// "cancel func", "deadline", "parent", "parent's deadline",
    /// "parent (already done at creation)", "afterfunc" or the caller.
    pub origin: String,
    pub by_goid: u64,
    /// Where the cancel was called (first frame of program code).
    pub at: Option<Frame>,
    pub stack: Vec<Frame>,
    /// Seconds after creation.
    pub after_s: Option<f64>,
    /// For propagated cancels: the parent it came from, and the context
    /// where the cancel started.
    pub propagated_from: Option<usize>,
    pub root: Option<usize>,
}

#[derive(Clone, Debug, Serialize)]
pub struct CtxLeak {
    pub kind: &'static str,
    pub created_at: Option<Frame>,
    pub creation_stack: Vec<Frame>,
    pub count: usize,
    pub sample_ids: Vec<usize>,
    pub age_s: Option<Summary>,
    /// Live timers these contexts keep (deadline not reached yet).
    pub timers_alive: usize,
    /// Goroutines still parked on their Done channels.
    pub waiting_goroutines: usize,
    pub sample_waiting_goids: Vec<u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct IgnoredCancel {
    pub context: usize,
    pub created_at: Option<Frame>,
    pub cancelled_at: Option<Frame>,
    pub cancelled_for_s: f64,
    /// Goroutines started under the context, alive after its cancel.
    pub goroutines: Vec<u64>,
    pub start_functions: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct BrokenChain {
    pub context: usize,
    /// "context.Background" or "context.TODO".
    pub root: String,
    pub created_at: Option<Frame>,
    pub creator_goid: u64,
    /// The cancelable context the creator was started under.
    pub outer_context: usize,
    pub outer_created_at: Option<Frame>,
    /// Whether the outer context was cancelled while this one lived on.
    pub outer_cancelled: bool,
    pub state: &'static str,
}

#[derive(Clone, Debug, Serialize)]
pub struct NestedDeadline {
    pub context: usize,
    pub created_at: Option<Frame>,
    /// Seconds from its cancel to its own deadline (it did not time out).
    /// None when Go dropped its deadline: asking WithDeadline/WithTimeout for
    /// a deadline later than the parent's makes a plain cancel context.
    pub own_deadline_after_cancel_s: Option<f64>,
    pub cancelled_by: usize,
    pub cancelled_by_created_at: Option<Frame>,
}

/// Inputs besides the models.
pub struct ContextInput<'a> {
    /// itab address → `T,I`.
    pub itabs: &'a HashMap<u64, String>,
    pub end_ns: u64,
    /// Wall clock (unix ns) at `end_ns`, to place deadlines.
    pub end_unix_ns: i128,
    pub leak_threshold_s: f64,
}

fn itab_type(itabs: &HashMap<u64, String>, itab: u64) -> Option<&str> {
    itabs.get(&itab).map(|n| n.split(',').next().unwrap_or(n))
}

fn kind(itabs: &HashMap<u64, String>, n: &CtxNode) -> &'static str {
    let method = n.cancel.as_ref().map(|c| c.method);
    match itab_type(itabs, n.itab) {
        Some("*context.cancelCtx") => "cancel",
        Some("*context.timerCtx") => "timer",
        Some("*context.afterFuncCtx") => "afterfunc",
        _ if method == Some(CANCEL_METHOD_TIMER_CTX) => "timer",
        _ if method == Some(CANCEL_METHOD_AFTER_FUNC_CTX) => "afterfunc",
        _ => "unknown",
    }
}

fn parent_kind(itabs: &HashMap<u64, String>, n: &CtxNode) -> String {
    match &n.parent {
        Parent::Node(_) => "context".into(),
        Parent::Other { itab: 0, .. } => "before attach".into(),
        Parent::Other { itab, .. } => match itab_type(itabs, *itab) {
            Some("context.backgroundCtx") => "context.Background".into(),
            Some("context.todoCtx") => "context.TODO".into(),
            // Before Go 1.21 both are an *emptyCtx.
            Some("*context.emptyCtx") => "context.Background/TODO".into(),
            Some("context.withoutCancelCtx") => "WithoutCancel".into(),
            Some("*context.cancelCtx" | "*context.timerCtx" | "*context.afterFuncCtx") => {
                "context created before attach".into()
            }
            Some(t) => t.to_string(),
            None => "unknown".into(),
        },
    }
}

/// Go's time.Time (wall, ext) → unix nanoseconds.
pub fn go_time_unix_ns(wall: u64, ext: i64) -> i128 {
    const HAS_MONOTONIC: u64 = 1 << 63;
    const NSEC_SHIFT: u32 = 30;
    const NSEC_MASK: u64 = (1 << NSEC_SHIFT) - 1;
    const DAY: i64 = 86_400;
    const WALL_TO_INTERNAL: i64 = (1884 * 365 + 1884 / 4 - 1884 / 100 + 1884 / 400) * DAY;
    const UNIX_TO_INTERNAL: i64 = (1969 * 365 + 1969 / 4 - 1969 / 100 + 1969 / 400) * DAY;
    let sec = if wall & HAS_MONOTONIC != 0 {
        WALL_TO_INTERNAL + ((wall << 1) >> (NSEC_SHIFT + 1)) as i64
    } else {
        ext
    };
    (sec - UNIX_TO_INTERNAL) as i128 * 1_000_000_000 + (wall & NSEC_MASK) as i128
}

fn origin(caller: &str, c: &Cancel) -> &'static str {
    let deadline = c.flags & CANCEL_ERR_DEADLINE != 0;
    if caller.starts_with("context.(*cancelCtx).cancel")
        || caller.starts_with("context.(*timerCtx).cancel")
        || caller.starts_with("context.(*afterFuncCtx).cancel")
    {
        "parent"
    } else if caller.starts_with("context.(*cancelCtx).propagateCancel")
        || caller.starts_with("context.propagateCancel")
    {
        "parent (already done at creation, or a custom parent)"
    } else if caller.starts_with("context.WithDeadline")
        || caller.starts_with("context.WithTimeout")
    {
        if deadline { "deadline" } else { "cancel func" }
    } else if caller.starts_with("context.WithCancel") {
        "cancel func"
    } else if caller.starts_with("context.AfterFunc") {
        "afterfunc"
    } else {
        "other"
    }
}

fn first_user(frames: &[Frame]) -> Option<Frame> {
    frames
        .iter()
        .find(|f| is_user_function(&f.function))
        .or(frames.first())
        .cloned()
}

pub fn build(
    ctxs: &ContextModel,
    gs: &GoroutineModel,
    resolver: &mut StackResolver<'_>,
    input: &ContextInput<'_>,
) -> ContextReport {
    let itabs = input.itabs;
    let secs = |ns: u64| ns as f64 / 1e9;
    // Live goroutines parked on each context's Done channel.
    let mut waiting: HashMap<usize, Vec<u64>> = HashMap::new();
    for g in gs.live() {
        if let State::Parked(p) = g.state() {
            for chan in p.chans.iter().filter(|c| **c != 0) {
                if let Some(n) = ctxs.by_chan(*chan) {
                    waiting.entry(n.id).or_default().push(g.goid());
                }
            }
        }
    }
    for v in waiting.values_mut() {
        v.sort_unstable();
        v.dedup();
    }
    // Report ids are positions among the nodes still held (the model retires
    // old finished contexts, so its own ids have gaps).
    let nodes: Vec<&CtxNode> = ctxs.nodes().collect();
    let pos: HashMap<usize, usize> = nodes.iter().enumerate().map(|(i, n)| (n.id, i)).collect();
    let mut origins: Vec<Option<&'static str>> = vec![None; nodes.len()];
    // Made by WithDeadline*/WithTimeout* (even when Go made it a cancelCtx).
    let mut asked_deadline = vec![false; nodes.len()];
    let mut out: Vec<CtxOut> = Vec::with_capacity(nodes.len().min(MAX_NODES));
    for (i, n) in nodes.iter().enumerate() {
        let parent = match n.parent {
            Parent::Node(p) => pos.get(&p).copied(),
            Parent::Other { .. } => None,
        };
        let create_frames = n
            .create_stack
            .map(|s| resolver.frames(s))
            .unwrap_or_default();
        asked_deadline[i] = create_frames.iter().any(|f| {
            f.function.starts_with("context.WithDeadline")
                || f.function.starts_with("context.WithTimeout")
        });
        let cancel = n.cancel.as_ref().map(|c| {
            let caller = resolver.caller_function(c.caller_pc);
            let o = origin(&caller, c);
            origins[i] = Some(o);
            let stack = c.stack.map(|s| resolver.frames(s)).unwrap_or_default();
            let err = cancel_error_name(c.flags);
            let cause = (c.flags & CANCEL_CAUSE_IS_ERR == 0).then(|| {
                let ty = itab_type(itabs, c.cause_itab).unwrap_or("error");
                match &c.cause_msg {
                    Some(m) => m.clone(),
                    None => format!("({ty})"),
                }
            });
            CancelOut {
                err,
                cause,
                origin: if o == "other" { caller } else { o.to_string() },
                by_goid: c.goid,
                at: first_user(&stack),
                stack,
                after_s: n.created_ns.map(|t| secs(c.ts_ns.saturating_sub(t))),
                propagated_from: if o == "parent" { parent } else { None },
                root: None,
            }
        });
        let started_alive: Vec<u64> = n
            .started
            .iter()
            .copied()
            .filter(|g| gs.get(*g).is_some())
            .collect();
        let is_timer = kind(itabs, n) == "timer";
        out.push(CtxOut {
            id: i,
            kind: kind(itabs, n),
            parent,
            parent_kind: parent_kind(itabs, n),
            value_hops: n.value_hops,
            created_at: first_user(&create_frames),
            // Full stacks for live contexts (the leak candidates) keep the
            // JSON small on services that make a context per request.
            creation_stack: if n.cancel.is_none() {
                create_frames
            } else {
                Vec::new()
            },
            creator_goid: n.created_ns.map(|_| n.creator_goid),
            age_s: n.created_ns.map(|t| secs(input.end_ns.saturating_sub(t))),
            deadline_in_s: (is_timer && n.created_ns.is_some()).then(|| {
                (go_time_unix_ns(n.deadline.0, n.deadline.1) - input.end_unix_ns) as f64 / 1e9
            }),
            state: if n.cancel.is_some() {
                "cancelled"
            } else {
                "live"
            },
            cancel,
            children: n
                .children
                .iter()
                .filter_map(|c| pos.get(c).copied())
                .collect(),
            waiting_goroutines: waiting.remove(&n.id).unwrap_or_default(),
            started_goroutines_alive: started_alive,
        });
    }
    // Where each propagated cancel started, and nested deadlines.
    let mut nested = Vec::new();
    for i in 0..out.len() {
        let Some(mut cur) = out[i].cancel.as_ref().and_then(|c| c.propagated_from) else {
            continue;
        };
        let mut hops = 0;
        while let Some(p) = out[cur].cancel.as_ref().and_then(|c| c.propagated_from) {
            if hops > 64 {
                break;
            }
            cur = p;
            hops += 1;
        }
        let root_deadline = origins[cur] == Some("deadline");
        if let Some(c) = out[i].cancel.as_mut() {
            c.root = Some(cur);
            if root_deadline {
                c.origin = "parent's deadline".into();
            }
        }
        if root_deadline && asked_deadline[i] {
            let n = nodes[i];
            let cancel_ts = n.cancel.as_ref().map(|c| c.ts_ns).unwrap_or(0);
            let cancel_unix = input.end_unix_ns - input.end_ns.saturating_sub(cancel_ts) as i128;
            let own = (out[i].kind == "timer")
                .then(|| (go_time_unix_ns(n.deadline.0, n.deadline.1) - cancel_unix) as f64 / 1e9);
            if own.is_none_or(|s| s > 0.0) {
                nested.push(NestedDeadline {
                    context: i,
                    created_at: out[i].created_at.clone(),
                    own_deadline_after_cancel_s: own,
                    cancelled_by: cur,
                    cancelled_by_created_at: out[cur].created_at.clone(),
                });
            }
        }
    }
    let leaks = leaks(&out, input);
    let ignored = ignored_cancels(&nodes, gs, resolver, &out, input);
    let broken = broken_chains(&nodes, &pos, &out);
    let stats = ctxs.stats();
    let live_at_end = out.iter().filter(|n| n.state == "live").count();
    let truncated = out.len() > MAX_NODES;
    out.truncate(MAX_NODES);
    ContextReport {
        not_traced: None,
        created: stats.created,
        cancelled: stats.cancelled,
        live_at_end,
        repeat_cancels: stats.repeat_cancels,
        cancelled_before_seen: stats.cancelled_before_seen,
        nodes: out,
        nodes_truncated: truncated,
        retired: stats.retired,
        leaks,
        ignored_cancels: ignored,
        broken_chains: broken,
        nested_deadlines: nested,
    }
}

fn leaks(out: &[CtxOut], input: &ContextInput<'_>) -> Vec<CtxLeak> {
    let mut groups: BTreeMap<(String, &'static str), Vec<&CtxOut>> = BTreeMap::new();
    for n in out.iter().filter(|n| n.state == "live") {
        let Some(age) = n.age_s else { continue };
        if age < input.leak_threshold_s {
            continue;
        }
        let site = n
            .created_at
            .as_ref()
            .map(|f| {
                format!(
                    "{}:{}:{}",
                    f.function,
                    f.file.as_deref().unwrap_or(""),
                    f.line
                )
            })
            .unwrap_or_default();
        groups.entry((site, n.kind)).or_default().push(n);
    }
    let mut leaks: Vec<CtxLeak> = groups
        .into_values()
        .map(|ns| {
            let waiting: Vec<u64> = ns
                .iter()
                .flat_map(|n| n.waiting_goroutines.iter().copied())
                .collect();
            CtxLeak {
                kind: ns[0].kind,
                created_at: ns[0].created_at.clone(),
                creation_stack: Vec::new(),
                count: ns.len(),
                sample_ids: ns.iter().take(SAMPLES).map(|n| n.id).collect(),
                age_s: Summary::of(ns.iter().filter_map(|n| n.age_s).collect()),
                timers_alive: ns
                    .iter()
                    .filter(|n| n.deadline_in_s.is_some_and(|d| d > 0.0))
                    .count(),
                waiting_goroutines: waiting.len(),
                sample_waiting_goids: waiting.into_iter().take(SAMPLES).collect(),
            }
        })
        .collect();
    leaks.sort_by_key(|l| std::cmp::Reverse(l.count));
    leaks
}

fn ignored_cancels(
    nodes: &[&CtxNode],
    gs: &GoroutineModel,
    resolver: &mut StackResolver<'_>,
    out: &[CtxOut],
    input: &ContextInput<'_>,
) -> Vec<IgnoredCancel> {
    let mut res = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let Some(c) = &n.cancel else { continue };
        let cancelled_for = input.end_ns.saturating_sub(c.ts_ns) as f64 / 1e9;
        if cancelled_for < input.leak_threshold_s {
            continue;
        }
        let mut goroutines = Vec::new();
        let mut start_functions = Vec::new();
        for goid in &out[i].started_goroutines_alive {
            let Some(g) = gs.get(*goid) else { continue };
            // Started before the cancel and still here well after it.
            if g.created_ns().is_some_and(|t| t > c.ts_ns) {
                continue;
            }
            let f = resolver.start_function(g.startpc());
            if is_system_function(&f) {
                continue;
            }
            goroutines.push(*goid);
            if !start_functions.contains(&f) {
                start_functions.push(f);
            }
        }
        if goroutines.is_empty() {
            continue;
        }
        res.push(IgnoredCancel {
            context: i,
            created_at: out[i].created_at.clone(),
            cancelled_at: out[i].cancel.as_ref().and_then(|c| c.at.clone()),
            cancelled_for_s: cancelled_for,
            goroutines,
            start_functions,
        });
    }
    res
}

fn broken_chains(
    nodes: &[&CtxNode],
    pos: &HashMap<usize, usize>,
    out: &[CtxOut],
) -> Vec<BrokenChain> {
    nodes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| {
            let root = &out[i].parent_kind;
            if !root.starts_with("context.Background") && !root.starts_with("context.TODO") {
                return None;
            }
            let outer = pos.get(&n.creator_context?).copied()?;
            Some(BrokenChain {
                context: i,
                root: root.clone(),
                created_at: out[i].created_at.clone(),
                creator_goid: n.creator_goid,
                outer_context: outer,
                outer_created_at: out[outer].created_at.clone(),
                outer_cancelled: out[outer].state == "cancelled",
                state: out[i].state,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_time_conversion() {
        // time.Date(2026, 11, 22, 3, 0, 0, 5, UTC) without monotonic reading:
        // wall = nsec, ext = seconds since year 1.
        let unix = 1_795_316_400i64;
        let ext = unix + (1969 * 365 + 1969 / 4 - 1969 / 100 + 1969 / 400) * 86_400;
        assert_eq!(go_time_unix_ns(5, ext), unix as i128 * 1_000_000_000 + 5);
        // With a monotonic reading: seconds since 1885 in wall bits 30..63.
        let since_1885 = (unix + (1969 * 365 + 1969 / 4 - 1969 / 100 + 1969 / 400) * 86_400
            - (1884 * 365 + 1884 / 4 - 1884 / 100 + 1884 / 400) * 86_400)
            as u64;
        let wall = (1 << 63) | (since_1885 << 30) | 7;
        assert_eq!(
            go_time_unix_ns(wall, 12345),
            unix as i128 * 1_000_000_000 + 7
        );
    }
}
