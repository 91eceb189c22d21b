//! The context part of the report: the cancel-propagation tree(s) and the
//! context failure patterns of the leak-pattern catalogue (README: 5, 6, 7
//! and nested deadlines).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use tracer_common::{
    CANCEL_CAUSE_IS_ERR, CANCEL_ERR_DEADLINE, CANCEL_METHOD_AFTER_FUNC_CTX, CANCEL_METHOD_TIMER_CTX,
};

use super::Summary;
use super::reachability::{self, Evidence};
use crate::gobin::symbolize::Frame;
use crate::goruntime::{is_system_function, is_user_function, package_of};
use crate::model::contexts::{Cancel, ContextModel, CtxNode, Parent, cancel_error_name};
use crate::model::{GoroutineModel, State};
use crate::proof::KeptBy;
use crate::proof::held::{CtxHeld, Held, Identity};
use crate::resolve::StackResolver;

/// Nodes listed in full in `report.json`; beyond this only counts and groups.
const MAX_NODES: usize = 10_000;
const SAMPLES: usize = 5;

#[derive(Clone, Debug, Default, Serialize)]
pub struct ContextReport {
    /// Why contexts were not traced, if they were not.
    pub not_traced: Option<String>,
    /// Sampled and budgeted modes: the contexts of the parked goroutines,
    /// read from memory at the end (null in full mode).
    pub from_memory: Option<crate::ctxmem::FromMemory>,
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
    /// Contexts never cancelled, by verdict (what the leak proof decided).
    pub never_cancelled: NeverCancelled,
    /// Pattern 5: contexts never cancelled that nothing reachable can
    /// cancel any more and that something still holds, grouped by creation
    /// site.
    pub leaks: Vec<CtxLeak>,
    /// Pattern 6 grouped by creation site, cancel site and origin: what the
    /// summary prints.
    pub ignored_cancel_groups: Vec<IgnoredCancelGroup>,
    /// Pattern 6, one entry per context (cancelled at least the threshold
    /// ago, still held on the stacks of goroutines parked on something
    /// else since); `group` indexes `ignored_cancel_groups`.
    pub ignored_cancels: Vec<IgnoredCancel>,
    /// Cancelled contexts with goroutines started under them still alive
    /// whose holders could not be read (no proof, or not checkable).
    pub ignored_cancel_undecided: Undecided,
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
    /// The first frame outside package context (see [`site`]).
    pub created_at: Option<Frame>,
    /// "net/http" when net/http's own plumbing made the context.
    pub created_by: Option<&'static str>,
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
    /// Never cancelled: "leaked", "live" (a reachable cancel function),
    /// "collected" (nothing holds it), "afterfunc" or "undecided"; null
    /// once cancelled.
    pub verdict: Option<&'static str>,
    /// What decided `verdict`.
    pub evidence: Option<Evidence>,
}

/// Contexts never cancelled, by verdict.
#[derive(Clone, Debug, Default, Serialize)]
pub struct NeverCancelled {
    pub total: usize,
    /// Nothing reachable can cancel them, and something holds them.
    pub leaked: usize,
    /// A reachable cancel function: live, cancel still possible.
    pub live: usize,
    /// Held by nothing: garbage, collected without a cancel (nothing leaks).
    pub collected: usize,
    /// AfterFunc registrations: they end with their parent.
    pub afterfunc: usize,
    pub undecided: Undecided,
}

/// What could not be decided, and why.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Undecided {
    pub count: usize,
    /// Reason → count.
    pub reasons: BTreeMap<String, usize>,
}

impl Undecided {
    pub fn add(&mut self, why: &str) {
        self.count += 1;
        *self.reasons.entry(why.to_string()).or_default() += 1;
    }
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
    /// Where the cancel was called, like `created_at` (see [`site`]); None
    /// when no frame is outside package context (a deadline's timer).
    pub at: Option<Frame>,
    /// "net/http" when net/http's own plumbing cancelled it.
    pub at_by: Option<&'static str>,
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
    pub created_by: Option<&'static str>,
    pub creation_stack: Vec<Frame>,
    pub count: usize,
    pub sample_ids: Vec<usize>,
    pub age_s: Option<Summary>,
    /// Live timers these contexts keep (deadline not reached yet).
    pub timers_alive: usize,
    /// Goroutines still parked on their Done channels.
    pub waiting_goroutines: usize,
    pub sample_waiting_goids: Vec<u64>,
    /// The evidence: what still holds them (distinct roots, at most 5)...
    pub held_by: Vec<KeptBy>,
    /// ... goroutines that hold them (on their stacks, or waiting on
    /// Done) without being roots...
    pub held_by_goroutines: usize,
    /// ... and how many live parents hold them in their children.
    pub held_by_parents: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct IgnoredCancel {
    pub context: usize,
    /// Index in `ignored_cancel_groups`.
    pub group: usize,
    pub created_at: Option<Frame>,
    pub created_by: Option<&'static str>,
    pub cancelled_at: Option<Frame>,
    pub cancelled_by: Option<&'static str>,
    /// The cancel's origin ("cancel func", "deadline", "parent", ...).
    pub origin: String,
    pub cancelled_for_s: f64,
    /// Goroutines whose stacks hold the context, parked on something else
    /// for at least the threshold (the evidence).
    pub goroutines: Vec<u64>,
    pub start_functions: Vec<String>,
}

/// Ignored cancels with the same creation site, cancel site and origin.
#[derive(Clone, Debug, Serialize)]
pub struct IgnoredCancelGroup {
    pub created_at: Option<Frame>,
    pub created_by: Option<&'static str>,
    pub cancelled_at: Option<Frame>,
    pub cancelled_by: Option<&'static str>,
    pub origin: String,
    /// Contexts in the group.
    pub count: usize,
    pub sample_ids: Vec<usize>,
    /// Seconds since each context's cancel.
    pub cancelled_for_s: Option<Summary>,
    /// Goroutines still alive, over all the group's contexts.
    pub goroutines: usize,
    pub sample_goids: Vec<u64>,
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
    /// What the leak proof found holding the contexts (None: not run).
    pub held: Option<&'a Held>,
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

fn is_net_http(function: &str) -> bool {
    let pkg = package_of(function);
    pkg == "net/http" || pkg.starts_with("net/http/")
}

/// The library named as a context's maker or canceller when its own plumbing
/// did it rather than the program.
pub const NET_HTTP: &str = "net/http";

/// Where a context was made or cancelled, from that stack (innermost
/// first): never a frame of package context (its internals such as
/// `(*cancelCtx).propagateCancel` are how, not where) nor of the runtime.
/// Program code is preferred over the standard-library code it called
/// (`signal.NotifyContext` and `http.Client.Do` name their caller). When
/// net/http's own per-connection and per-request plumbing made the context
/// (the first frame outside package context is net/http's) that is said
/// with `NET_HTTP`, and its frame is the site when no program code is on
/// the stack (the server's request contexts). None when every frame is the
/// context package's or the runtime's (a deadline's timer firing).
pub fn site(frames: &[Frame]) -> (Option<Frame>, Option<&'static str>) {
    let mut outside = frames.iter().filter(|f| {
        let pkg = package_of(&f.function);
        pkg != "context" && pkg != "runtime"
    });
    let Some(first) = outside.clone().next() else {
        return (None, None);
    };
    let by_http = is_net_http(&first.function).then_some(NET_HTTP);
    if let Some(user) = outside.clone().find(|f| is_user_function(&f.function)) {
        return (Some(user.clone()), by_http);
    }
    match outside.find(|f| is_net_http(&f.function)) {
        Some(h) => (Some(h.clone()), Some(NET_HTTP)),
        None => (Some(first.clone()), None),
    }
}

/// Live goroutines parked on each context's Done channel, by model id.
fn waiting_by_context(ctxs: &ContextModel, gs: &GoroutineModel) -> HashMap<usize, Vec<u64>> {
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
    waiting
}

/// The cancel of node `n` (parent: its report id), with its origin.
fn cancel_out(
    n: &CtxNode,
    c: &Cancel,
    parent: Option<usize>,
    resolver: &mut StackResolver<'_>,
    itabs: &HashMap<u64, String>,
) -> (CancelOut, &'static str) {
    let caller = resolver.caller_function(c.caller_pc);
    let o = origin(&caller, c);
    let stack = c.stack.map(|s| resolver.frames(s)).unwrap_or_default();
    let cause = (c.flags & CANCEL_CAUSE_IS_ERR == 0).then(|| {
        let ty = itab_type(itabs, c.cause_itab).unwrap_or("error");
        match &c.cause_msg {
            Some(m) => m.clone(),
            None => format!("({ty})"),
        }
    });
    let (at, at_by) = site(&stack);
    let out = CancelOut {
        err: cancel_error_name(c.flags),
        cause,
        origin: if o == "other" { caller } else { o.to_string() },
        by_goid: c.goid,
        at,
        at_by,
        stack,
        after_s: n.created_ns.map(|t| c.ts_ns.saturating_sub(t) as f64 / 1e9),
        propagated_from: if o == "parent" { parent } else { None },
        root: None,
    };
    (out, o)
}

/// Node `n` at report position `i`, with its cancel origin and whether a
/// WithDeadline*/WithTimeout* made it (even when Go made it a cancelCtx).
fn node_out(
    i: usize,
    n: &CtxNode,
    pos: &HashMap<usize, usize>,
    waiting: &mut HashMap<usize, Vec<u64>>,
    ctx: &mut NodeContext<'_, '_>,
) -> (CtxOut, Option<&'static str>, bool) {
    let (itabs, input) = (ctx.input.itabs, ctx.input);
    let parent = match n.parent {
        Parent::Node(p) => pos.get(&p).copied(),
        Parent::Other { .. } => None,
    };
    let create_frames = n
        .create_stack
        .map(|s| ctx.resolver.frames(s))
        .unwrap_or_default();
    let asked_deadline = create_frames.iter().any(|f| {
        f.function.starts_with("context.WithDeadline")
            || f.function.starts_with("context.WithTimeout")
    });
    let cancel = n
        .cancel
        .as_ref()
        .map(|c| cancel_out(n, c, parent, ctx.resolver, itabs));
    let origin = cancel.as_ref().map(|(_, o)| *o);
    let kind = kind(itabs, n);
    let (created_at, created_by) = site(&create_frames);
    let out = CtxOut {
        id: i,
        kind,
        parent,
        parent_kind: parent_kind(itabs, n),
        value_hops: n.value_hops,
        created_at,
        created_by,
        // Full stacks for live contexts (the leak candidates) keep the
        // JSON small on services that make a context per request.
        creation_stack: if n.cancel.is_none() {
            create_frames
        } else {
            Vec::new()
        },
        creator_goid: n.created_ns.map(|_| n.creator_goid),
        age_s: n
            .created_ns
            .map(|t| input.end_ns.saturating_sub(t) as f64 / 1e9),
        deadline_in_s: (kind == "timer" && n.created_ns.is_some()).then(|| {
            (go_time_unix_ns(n.deadline.0, n.deadline.1) - input.end_unix_ns) as f64 / 1e9
        }),
        state: if n.cancel.is_some() {
            "cancelled"
        } else {
            "live"
        },
        cancel: cancel.map(|(c, _)| c),
        children: n
            .children
            .iter()
            .filter_map(|c| pos.get(c).copied())
            .collect(),
        waiting_goroutines: waiting.remove(&n.id).unwrap_or_default(),
        verdict: None,
        evidence: None,
        started_goroutines_alive: n
            .started
            .iter()
            .copied()
            .filter(|g| ctx.gs.get(*g).is_some())
            .collect(),
    };
    (out, origin, asked_deadline)
}

/// What building one node needs besides the node.
struct NodeContext<'r, 'a> {
    gs: &'r GoroutineModel,
    resolver: &'r mut StackResolver<'a>,
    input: &'r ContextInput<'r>,
}

/// Follows each propagated cancel to the context where it started (setting
/// `root`, and "parent's deadline" as the origin when that one timed out)
/// and lists the contexts a parent's deadline cancelled before their own.
fn propagation_roots(
    out: &mut [CtxOut],
    nodes: &[&CtxNode],
    origins: &[Option<&'static str>],
    asked_deadline: &[bool],
    input: &ContextInput<'_>,
) -> Vec<NestedDeadline> {
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
        if !(root_deadline && asked_deadline[i]) {
            continue;
        }
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
    nested
}

pub fn build(
    ctxs: &ContextModel,
    gs: &GoroutineModel,
    resolver: &mut StackResolver<'_>,
    input: &ContextInput<'_>,
) -> ContextReport {
    let mut waiting = waiting_by_context(ctxs, gs);
    // Report ids are positions among the nodes still held (the model retires
    // old finished contexts, so its own ids have gaps).
    let nodes: Vec<&CtxNode> = ctxs.nodes().collect();
    let pos: HashMap<usize, usize> = nodes.iter().enumerate().map(|(i, n)| (n.id, i)).collect();
    let mut origins = Vec::with_capacity(nodes.len());
    let mut asked_deadline = Vec::with_capacity(nodes.len());
    let mut out: Vec<CtxOut> = Vec::with_capacity(nodes.len().min(MAX_NODES));
    let mut nc = NodeContext {
        gs,
        resolver,
        input,
    };
    for (i, n) in nodes.iter().enumerate() {
        let (o, origin, asked) = node_out(i, n, &pos, &mut waiting, &mut nc);
        out.push(o);
        origins.push(origin);
        asked_deadline.push(asked);
    }
    let nested = propagation_roots(&mut out, &nodes, &origins, &asked_deadline, input);
    let held = held_by_ptr(input.held);
    let never_cancelled = judge_never_cancelled(&mut out, &nodes, &held, input);
    let leaks = leaks(&out);
    let mut ignored_undecided = Undecided::default();
    let ignored = ignored_cancels(
        &nodes,
        gs,
        nc.resolver,
        &out,
        input,
        &held,
        &mut ignored_undecided,
    );
    let (ignored_groups, ignored) = group_ignored_cancels(ignored);
    let broken = broken_chains(&nodes, &pos, &out);
    let stats = ctxs.stats();
    let live_at_end = out.iter().filter(|n| n.state == "live").count();
    let truncated = out.len() > MAX_NODES;
    out.truncate(MAX_NODES);
    ContextReport {
        not_traced: None,
        from_memory: None,
        created: stats.created,
        cancelled: stats.cancelled,
        live_at_end,
        repeat_cancels: stats.repeat_cancels,
        cancelled_before_seen: stats.cancelled_before_seen,
        nodes: out,
        nodes_truncated: truncated,
        retired: stats.retired,
        never_cancelled,
        leaks,
        ignored_cancel_groups: ignored_groups,
        ignored_cancels: ignored,
        ignored_cancel_undecided: ignored_undecided,
        broken_chains: broken,
        nested_deadlines: nested,
    }
}

/// The proof's answers by context address.
fn held_by_ptr(held: Option<&Held>) -> HashMap<u64, &CtxHeld> {
    held.map(|h| h.contexts.iter().map(|c| (c.ptr, c)).collect())
        .unwrap_or_default()
}

/// Sets the verdict and evidence of every context never cancelled, and
/// counts them.
fn judge_never_cancelled(
    out: &mut [CtxOut],
    nodes: &[&CtxNode],
    held: &HashMap<u64, &CtxHeld>,
    input: &ContextInput<'_>,
) -> NeverCancelled {
    let mut counts = NeverCancelled::default();
    let live: Vec<bool> = out.iter().map(|o| o.state == "live").collect();
    for (o, n) in out.iter_mut().zip(nodes) {
        if o.state != "live" {
            continue;
        }
        let h = held.get(&n.ptr).copied();
        let known = reachability::Known {
            waiting: &o.waiting_goroutines,
            armed: o.kind == "timer" && o.deadline_in_s.is_some_and(|d| d > 0.0),
            registered_with: o.parent.filter(|p| live.get(*p).copied().unwrap_or(false)),
        };
        let (verdict, evidence) = reachability::never_cancelled(o.kind, h, input.held, known);
        counts.total += 1;
        match verdict {
            "leaked" => counts.leaked += 1,
            "live" => counts.live += 1,
            "collected" => counts.collected += 1,
            "afterfunc" => counts.afterfunc += 1,
            _ => counts
                .undecided
                .add(evidence.reason.as_deref().unwrap_or("unknown")),
        }
        o.verdict = Some(verdict);
        o.evidence = Some(evidence);
    }
    counts
}

/// Pattern 5: the contexts judged leaked, grouped by creation site.
fn leaks(out: &[CtxOut]) -> Vec<CtxLeak> {
    let mut groups: BTreeMap<(String, &'static str), Vec<&CtxOut>> = BTreeMap::new();
    for n in out.iter().filter(|n| n.verdict == Some("leaked")) {
        groups
            .entry((site_key(&n.created_at), n.kind))
            .or_default()
            .push(n);
    }
    let mut leaks: Vec<CtxLeak> = groups.into_values().map(|ns| leak_group(&ns)).collect();
    leaks.sort_by_key(|l| std::cmp::Reverse(l.count));
    leaks
}

fn leak_group(ns: &[&CtxOut]) -> CtxLeak {
    let waiting: Vec<u64> = ns
        .iter()
        .flat_map(|n| n.waiting_goroutines.iter().copied())
        .collect();
    let mut held_by: Vec<KeptBy> = Vec::new();
    let mut goroutines: Vec<u64> = Vec::new();
    for e in ns.iter().filter_map(|n| n.evidence.as_ref()) {
        if let Some(k) = &e.held_by
            && !held_by.contains(k)
            && held_by.len() < SAMPLES
        {
            held_by.push(k.clone());
        }
        goroutines.extend(&e.held_by_goroutines);
    }
    goroutines.sort_unstable();
    goroutines.dedup();
    let parents = ns
        .iter()
        .filter(|n| {
            n.evidence
                .as_ref()
                .is_some_and(|e| e.held_by_parent.is_some())
        })
        .count();
    CtxLeak {
        kind: ns[0].kind,
        created_at: ns[0].created_at.clone(),
        created_by: ns[0].created_by,
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
        held_by,
        held_by_goroutines: goroutines.len(),
        held_by_parents: parents,
    }
}

/// Pattern 6: per context cancelled at least the threshold ago, the
/// goroutines started under it whose stacks hold it and that have stayed
/// parked on something else for the threshold since (see [`ignores`]).
/// Being started under it is required too: stacks are scanned
/// conservatively, and a goroutine's stack reuses the memory of exited
/// ones, whose stale words may point at any context. What the proof could
/// not answer is counted in `undecided`, for the contexts that have
/// goroutines started under them still alive.
fn ignored_cancels(
    nodes: &[&CtxNode],
    gs: &GoroutineModel,
    resolver: &mut StackResolver<'_>,
    out: &[CtxOut],
    input: &ContextInput<'_>,
    held: &HashMap<u64, &CtxHeld>,
    undecided: &mut Undecided,
) -> Vec<IgnoredCancel> {
    let mut res = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let Some(c) = &n.cancel else { continue };
        let cancelled_for = input.end_ns.saturating_sub(c.ts_ns) as f64 / 1e9;
        if cancelled_for < input.leak_threshold_s {
            continue;
        }
        let h = held.get(&n.ptr).copied();
        let suspected = !out[i].started_goroutines_alive.is_empty();
        let h = match h {
            Some(h) if h.identity == Identity::Same => h,
            // Collected since: no goroutine can hold it.
            Some(h) if h.identity == Identity::Gone => continue,
            Some(h) => {
                if suspected {
                    undecided.add(
                        h.undecided
                            .as_deref()
                            .unwrap_or("its memory could not be checked"),
                    );
                }
                continue;
            }
            None => {
                if suspected {
                    undecided.add(&reachability::not_asked(input.held));
                }
                continue;
            }
        };
        let mut goroutines = Vec::new();
        let mut start_functions = Vec::new();
        for goid in h.stacks.iter().filter(|g| n.started.contains(g)) {
            let Some(f) = ignores(gs, resolver, n, c, *goid, input) else {
                continue;
            };
            goroutines.push(*goid);
            if !start_functions.contains(&f) {
                start_functions.push(f);
            }
        }
        if goroutines.is_empty() {
            if suspected && let Some(why) = &h.undecided {
                undecided.add(why);
            }
            continue;
        }
        let cancel = out[i].cancel.as_ref();
        res.push(IgnoredCancel {
            context: i,
            group: 0,
            created_at: out[i].created_at.clone(),
            created_by: out[i].created_by,
            cancelled_at: cancel.and_then(|c| c.at.clone()),
            cancelled_by: cancel.and_then(|c| c.at_by),
            origin: cancel.map(|c| c.origin.clone()).unwrap_or_default(),
            cancelled_for_s: cancelled_for,
            goroutines,
            start_functions,
        });
    }
    res
}

/// Whether goroutine `goid`, whose stack holds the cancelled context `n`,
/// ignores its cancel: alive, parked for at least the threshold on
/// something other than the context's Done channel, running program code
/// (not only the standard library's, such as a keep-alive connection's
/// loops), and not the goroutine that cancelled it. Its start function
/// when it does.
fn ignores(
    gs: &GoroutineModel,
    resolver: &mut StackResolver<'_>,
    n: &CtxNode,
    c: &Cancel,
    goid: u64,
    input: &ContextInput<'_>,
) -> Option<String> {
    let g = gs.get(goid)?;
    let State::Parked(p) = g.state() else {
        return None;
    };
    let parked_s = input.end_ns.saturating_sub(p.since_ns) as f64 / 1e9;
    if goid == c.goid || parked_s < input.leak_threshold_s {
        return None;
    }
    if n.done_chan.is_some_and(|d| p.chans.iter().any(|w| *w == d)) {
        return None;
    }
    let f = resolver.start_function(g.startpc());
    if is_system_function(&f) {
        return None;
    }
    let frames = p.stack.map(|s| resolver.frames(s)).unwrap_or_default();
    frames
        .iter()
        .any(|fr| is_user_function(&fr.function))
        .then_some(f)
}

/// A grouping key for a site: function, file and line.
fn site_key(f: &Option<Frame>) -> String {
    f.as_ref()
        .map(|f| {
            format!(
                "{}:{}:{}",
                f.function,
                f.file.as_deref().unwrap_or(""),
                f.line
            )
        })
        .unwrap_or_default()
}

/// Groups ignored cancels by creation site, cancel site and origin, largest
/// group first, and points each entry at its group.
fn group_ignored_cancels(
    mut each: Vec<IgnoredCancel>,
) -> (Vec<IgnoredCancelGroup>, Vec<IgnoredCancel>) {
    let mut by_key: BTreeMap<(String, String, String), Vec<usize>> = BTreeMap::new();
    for (k, i) in each.iter().enumerate() {
        let key = (
            site_key(&i.created_at),
            site_key(&i.cancelled_at),
            i.origin.clone(),
        );
        by_key.entry(key).or_default().push(k);
    }
    let mut members: Vec<Vec<usize>> = by_key.into_values().collect();
    members.sort_by_key(|m| std::cmp::Reverse(m.len()));
    let groups = members
        .iter()
        .map(|m| {
            let first = &each[m[0]];
            let mut goids: Vec<u64> = Vec::new();
            let mut start_functions: Vec<String> = Vec::new();
            for i in m.iter().map(|&k| &each[k]) {
                goids.extend(&i.goroutines);
                for f in &i.start_functions {
                    if !start_functions.contains(f) {
                        start_functions.push(f.clone());
                    }
                }
            }
            goids.sort_unstable();
            IgnoredCancelGroup {
                created_at: first.created_at.clone(),
                created_by: first.created_by,
                cancelled_at: first.cancelled_at.clone(),
                cancelled_by: first.cancelled_by,
                origin: first.origin.clone(),
                count: m.len(),
                sample_ids: m.iter().take(SAMPLES).map(|&k| each[k].context).collect(),
                cancelled_for_s: Summary::of(m.iter().map(|&k| each[k].cancelled_for_s).collect()),
                goroutines: goids.len(),
                sample_goids: goids.into_iter().take(SAMPLES).collect(),
                start_functions,
            }
        })
        .collect();
    for (g, m) in members.iter().enumerate() {
        for &k in m {
            each[k].group = g;
        }
    }
    (groups, each)
}

/// Pattern 7: a context program code made from Background/TODO in a
/// goroutine started under a cancelable context (cancelling that one does
/// not reach it).
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
            // Only what program code made: the standard library's own
            // roots (net/http's per-connection contexts) are its design,
            // and a goroutine "started under" a context is only the one
            // its creator last made, maybe unrelated.
            let by_program = out[i]
                .created_at
                .as_ref()
                .is_some_and(|f| is_user_function(&f.function));
            if !by_program || out[i].created_by.is_some() {
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

    fn frames(names: &[&str]) -> Vec<Frame> {
        names
            .iter()
            .map(|n| Frame {
                function: n.to_string(),
                file: None,
                line: 1,
            })
            .collect()
    }

    fn site_of(names: &[&str]) -> (Option<String>, Option<&'static str>) {
        let (f, by) = site(&frames(names));
        (f.map(|f| f.function), by)
    }

    #[test]
    fn sites_are_never_inside_package_context() {
        let user = |s: &str| Some(s.to_string());
        assert_eq!(
            site_of(&[
                "context.(*cancelCtx).propagateCancel",
                "context.withCancel",
                "context.WithDeadlineCause",
                "context.WithTimeout",
                "main.handleSearch",
                "net/http.HandlerFunc.ServeHTTP",
            ]),
            (user("main.handleSearch"), None)
        );
        // The server's request context: net/http made it, no program code.
        assert_eq!(
            site_of(&[
                "context.(*cancelCtx).propagateCancel",
                "context.WithCancel",
                "net/http.(*conn).readRequest",
                "net/http.(*conn).serve",
                "runtime.goexit",
            ]),
            (user("net/http.(*conn).readRequest"), Some(NET_HTTP))
        );
        // The client's: made by net/http for the program's call.
        assert_eq!(
            site_of(&[
                "context.(*cancelCtx).propagateCancel",
                "context.WithCancel",
                "net/http.(*Transport).getConn",
                "net/http.(*Client).Do",
                "main.loadClient",
            ]),
            (user("main.loadClient"), Some(NET_HTTP))
        );
        // A dial's AfterFunc deep under net/http's own goroutine.
        assert_eq!(
            site_of(&[
                "context.AfterFunc",
                "net.(*netFD).connect",
                "net.(*Dialer).DialContext",
                "net/http.(*Transport).dial",
                "runtime.goexit",
            ]),
            (user("net/http.(*Transport).dial"), Some(NET_HTTP))
        );
        // Other standard wrappers name the program's call.
        assert_eq!(
            site_of(&["context.WithCancel", "os/signal.NotifyContext", "main.main"]),
            (user("main.main"), None)
        );
        assert_eq!(
            site_of(&["context.WithCancel", "os/signal.NotifyContext"]),
            (user("os/signal.NotifyContext"), None)
        );
        // A deadline's timer: nothing outside package context and the runtime.
        assert_eq!(
            site_of(&[
                "context.(*timerCtx).cancel",
                "context.WithDeadlineCause.func2",
                "runtime.goexit",
            ]),
            (None, None)
        );
        assert_eq!(site_of(&[]), (None, None));
        // A package whose name only starts like "context" is not it.
        assert_eq!(
            site_of(&["context.WithCancel", "contextutil.Make", "example.com/x.F"]),
            (user("example.com/x.F"), None)
        );
    }

    fn ignored(context: usize, created: &str, cancelled: &str, goids: &[u64]) -> IgnoredCancel {
        let f = |n: &str| frames(&[n]).pop();
        IgnoredCancel {
            context,
            group: usize::MAX,
            created_at: f(created),
            created_by: None,
            cancelled_at: f(cancelled),
            cancelled_by: None,
            origin: "cancel func".into(),
            cancelled_for_s: context as f64,
            goroutines: goids.to_vec(),
            start_functions: vec!["main.worker".into()],
        }
    }

    #[test]
    fn ignored_cancels_group_by_creation_and_cancel_site() {
        let each = vec![
            ignored(3, "main.a", "main.stop", &[30, 31]),
            ignored(5, "main.b", "main.stop", &[50]),
            ignored(7, "main.a", "main.stop", &[70]),
            ignored(9, "main.a", "main.other", &[90]),
            ignored(11, "main.a", "main.stop", &[110, 111, 112]),
        ];
        let (groups, each) = group_ignored_cancels(each);
        assert_eq!(groups.len(), 3);
        let g = &groups[0];
        assert_eq!(g.count, 3);
        assert_eq!(g.sample_ids, [3, 7, 11]);
        assert_eq!(g.goroutines, 6);
        assert_eq!(g.sample_goids, [30, 31, 70, 110, 111]);
        let age = g.cancelled_for_s.as_ref().unwrap();
        assert_eq!((age.min, age.median, age.max), (3.0, 7.0, 11.0));
        assert_eq!(g.created_at.as_ref().unwrap().function, "main.a");
        assert_eq!(g.cancelled_at.as_ref().unwrap().function, "main.stop");
        let group_of: Vec<(usize, usize)> = each.iter().map(|i| (i.context, i.group)).collect();
        let other = |c| group_of.iter().find(|(x, _)| *x == c).unwrap().1;
        assert_eq!((other(3), other(7), other(11)), (0, 0, 0));
        assert_ne!(other(5), other(9));
        assert!(other(5) > 0 && other(9) > 0);
        assert_eq!(groups.iter().map(|g| g.count).sum::<usize>(), 5);
    }

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
