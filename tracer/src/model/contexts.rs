//! Context nodes rebuilt from events: creation with parent edges, the first
//! cancel of each (later cancel calls are no-ops in Go too), Done channels,
//! and which goroutines were started while a context was their creator's
//! working context.
//!
//! Contexts are keyed by pointer while alive; a pointer created again (the
//! heap reused it) supersedes the old node. Types are kept as raw itab
//! addresses: naming them is the report's job.
//!
//! Memory stays flat on a service that makes a context per request: once
//! more than [`MAX_FINISHED`] contexts are finished (cancelled or
//! superseded), the oldest finished ones are retired, except those with
//! goroutines still alive that were started under them (the evidence of an
//! ignored cancel). Retired contexts count in [`ContextStats::retired`]; a
//! child of a retired context keeps its parent as `Parent::Other`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::HashMap;

use tracer_common::{CANCEL_CAUSE_MSG, CtxCancelEvent, CtxCreateEvent, GoCreateEvent, GoExitEvent};

use super::goroutines::StackRef;
use crate::decode::Event;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parent {
    /// A context traced as a node.
    Node(usize),
    /// Not a traced node: Background, TODO, WithoutCancel, a custom Context,
    /// or a cancelable context created before tracing began.
    Other { itab: u64, data: u64 },
}

#[derive(Clone, Debug)]
pub struct Cancel {
    pub ts_ns: u64,
    pub goid: u64,
    /// `CANCEL_METHOD_*`.
    pub method: u32,
    pub remove_from_parent: bool,
    /// `CANCEL_ERR_*` / `CANCEL_CAUSE_*` bits.
    pub flags: u32,
    pub err_itab: u64,
    pub cause_itab: u64,
    pub cause_msg: Option<String>,
    pub stack: Option<StackRef>,
    /// Return address into the function that called the cancel method.
    pub caller_pc: u64,
}

/// The error a cancel set, by its Go name: "context.Canceled",
/// "context.DeadlineExceeded", or "unknown" when the probe could not tell.
pub fn cancel_error_name(flags: u32) -> &'static str {
    if flags & tracer_common::CANCEL_ERR_CANCELED != 0 {
        "context.Canceled"
    } else if flags & tracer_common::CANCEL_ERR_DEADLINE != 0 {
        "context.DeadlineExceeded"
    } else {
        "unknown"
    }
}

#[derive(Clone, Debug)]
pub struct CtxNode {
    pub id: usize,
    pub ptr: u64,
    /// itab of the context as a `canceler` (its type); 0 if first seen
    /// cancelled (created before tracing).
    pub itab: u64,
    pub parent: Parent,
    /// The parent `Context` interface (itab, data) `propagateCancel` got,
    /// after `value_hops` WithValue layers: what the context's memory
    /// starts with while it lives. (0, 0) when its creation was not seen.
    pub parent_iface: (u64, u64),
    pub value_hops: u32,
    pub created_ns: Option<u64>,
    pub creator_goid: u64,
    pub create_stack: Option<StackRef>,
    /// `time.Time` (wall, ext) of a timerCtx deadline.
    pub deadline: (u64, i64),
    /// The live context the creator was started under, when this one was
    /// created (pattern 7: a Background-rooted child there breaks the chain).
    pub creator_context: Option<usize>,
    pub done_chan: Option<u64>,
    pub cancel: Option<Cancel>,
    pub children: Vec<usize>,
    /// Goroutines started while this was their creator's working context
    /// that have not exited (exits remove them: a long-lived context that
    /// starts a goroutine per request must not grow with every request).
    pub started: BTreeSet<u64>,
    /// The pointer was reused by a newer context.
    pub superseded: bool,
}

/// Finished contexts kept for the report before the oldest are retired.
pub const MAX_FINISHED: usize = 20_000;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContextStats {
    pub created: u64,
    pub cancelled: u64,
    /// Cancel calls on contexts already cancelled (no-ops in Go).
    pub repeat_cancels: u64,
    /// Cancels of contexts created before tracing began.
    pub cancelled_before_seen: u64,
    pub duplicates: u64,
    /// Finished contexts dropped from the model to bound its memory.
    pub retired: u64,
}

#[derive(Default)]
pub struct ContextModel {
    /// By id; ids grow with creation and are never reused.
    nodes: BTreeMap<usize, CtxNode>,
    next_id: usize,
    /// Finished nodes, oldest first (candidates for retirement).
    finished: VecDeque<usize>,
    by_ptr: HashMap<u64, usize>,
    by_chan: HashMap<u64, usize>,
    /// Per goroutine: contexts it created that are still live, newest last.
    created_by: HashMap<u64, Vec<usize>>,
    /// Per goroutine: the context it was started under.
    started_under: HashMap<u64, usize>,
    stats: ContextStats,
}

impl ContextModel {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every node still held, in creation order.
    pub fn nodes(&self) -> impl Iterator<Item = &CtxNode> {
        self.nodes.values()
    }

    pub fn get(&self, id: usize) -> Option<&CtxNode> {
        self.nodes.get(&id)
    }

    pub fn stats(&self) -> &ContextStats {
        &self.stats
    }

    /// The context whose Done channel is `chan`.
    pub fn by_chan(&self, chan: u64) -> Option<&CtxNode> {
        self.by_chan.get(&chan).and_then(|i| self.nodes.get(i))
    }

    /// The node a context pointer stands for now.
    pub fn id_of(&self, ptr: u64) -> Option<usize> {
        self.by_ptr.get(&ptr).copied()
    }

    /// The context a goroutine was started under.
    pub fn started_under(&self, goid: u64) -> Option<&CtxNode> {
        self.started_under
            .get(&goid)
            .and_then(|i| self.nodes.get(i))
    }

    pub fn apply(&mut self, event: &Event) {
        match event {
            Event::CtxCreate(e) => self.on_create(e),
            Event::CtxCancel(e) => self.on_cancel(e),
            Event::CtxDone(e) => self.on_done(e.ctx, e.chan),
            Event::Create(e) => self.on_go_create(e),
            Event::Exit(e) => self.on_go_exit(e),
            _ => {}
        }
    }

    fn live(&self, id: usize) -> bool {
        self.nodes.get(&id).is_some_and(CtxNode::is_live)
    }

    fn node(&mut self, id: usize) -> &mut CtxNode {
        self.nodes.get_mut(&id).expect("indexed node exists")
    }

    /// `id` just finished: queue it, and retire the oldest finished nodes
    /// beyond the cap.
    fn finished(&mut self, id: usize) {
        self.finished.push_back(id);
        while self.finished.len() > MAX_FINISHED {
            let Some(old) = self.finished.pop_front() else {
                break;
            };
            let Some(n) = self.nodes.get(&old) else {
                continue;
            };
            // Goroutines started under it and still alive: keep it.
            if n.started
                .iter()
                .any(|g| self.started_under.get(g) == Some(&old))
            {
                continue;
            }
            self.retire(old);
        }
    }

    fn retire(&mut self, id: usize) {
        let Some(n) = self.nodes.remove(&id) else {
            return;
        };
        self.stats.retired += 1;
        if self.by_ptr.get(&n.ptr) == Some(&id) {
            self.by_ptr.remove(&n.ptr);
        }
        if let Some(c) = n.done_chan
            && self.by_chan.get(&c) == Some(&id)
        {
            self.by_chan.remove(&c);
        }
        if let Parent::Node(p) = n.parent
            && let Some(parent) = self.nodes.get_mut(&p)
        {
            parent.children.retain(|c| *c != id);
        }
        for c in &n.children {
            if let Some(child) = self.nodes.get_mut(c) {
                child.parent = Parent::Other {
                    itab: n.itab,
                    data: n.ptr,
                };
            }
        }
        if let Some(v) = self.created_by.get_mut(&n.creator_goid) {
            v.retain(|i| *i != id);
        }
    }

    /// What goroutine `goid` works under: its newest live context, else the
    /// one it was started under (if still live).
    fn working_context(&self, goid: u64) -> Option<usize> {
        let own = self
            .created_by
            .get(&goid)
            .and_then(|v| v.iter().rev().find(|i| self.live(**i)));
        own.copied().or_else(|| {
            self.started_under
                .get(&goid)
                .copied()
                .filter(|i| self.live(*i))
        })
    }

    fn on_create(&mut self, e: &CtxCreateEvent) {
        if let Some(&old) = self.by_ptr.get(&e.ctx)
            && let Some(n) = self.nodes.get(&old)
        {
            // An entry probe re-firing (stack growth) repeats the same call:
            // same goroutine, same parent, still the newest context that
            // goroutine made, moments later. (The window is wide because a
            // loaded machine can deschedule the thread between the two hits;
            // a real reuse of the pointer needs a GC cycle in between.)
            let newest_of_creator =
                self.created_by.get(&e.goid).and_then(|v| v.last()) == Some(&old);
            if n.cancel.is_none()
                && n.creator_goid == e.goid
                && newest_of_creator
                && n.parent_data_is(e.parent_data, &self.nodes)
                && n.created_ns
                    .is_some_and(|t| e.header.ts_ns.saturating_sub(t) < 50_000_000)
            {
                self.stats.duplicates += 1;
                return;
            }
            let was_live = n.is_live();
            self.node(old).superseded = true;
            if was_live {
                self.finished(old);
            }
        }
        self.stats.created += 1;
        let id = self.next_id;
        self.next_id += 1;
        let parent = match self.by_ptr.get(&e.parent_data) {
            Some(&p) if self.nodes.get(&p).is_some_and(|n| !n.superseded) => Parent::Node(p),
            _ => Parent::Other {
                itab: e.parent_itab,
                data: e.parent_data,
            },
        };
        if let Parent::Node(p) = parent {
            self.node(p).children.push(id);
        }
        // Pattern 7 asks what the creator was started under, not what it
        // created itself (sibling contexts from Background are fine).
        let creator_context = self
            .started_under
            .get(&e.goid)
            .copied()
            .filter(|i| self.live(*i));
        self.nodes.insert(
            id,
            CtxNode {
                id,
                ptr: e.ctx,
                itab: e.child_itab,
                parent,
                parent_iface: (e.parent_itab, e.parent_data),
                value_hops: e.value_hops,
                created_ns: Some(e.header.ts_ns),
                creator_goid: e.goid,
                create_stack: StackRef::new(e.stack_id, e.caller_pc),
                deadline: (e.deadline_wall, e.deadline_ext),
                creator_context,
                done_chan: None,
                cancel: None,
                children: Vec::new(),
                started: BTreeSet::new(),
                superseded: false,
            },
        );
        self.by_ptr.insert(e.ctx, id);
        self.created_by.entry(e.goid).or_default().push(id);
    }

    fn on_cancel(&mut self, e: &CtxCancelEvent) {
        let id = match self.by_ptr.get(&e.ctx) {
            Some(&id) => id,
            None => {
                // Created before tracing began: a node of unknown origin.
                self.stats.cancelled_before_seen += 1;
                let id = self.next_id;
                self.next_id += 1;
                self.nodes.insert(
                    id,
                    CtxNode {
                        id,
                        ptr: e.ctx,
                        itab: 0,
                        parent: Parent::Other { itab: 0, data: 0 },
                        parent_iface: (0, 0),
                        value_hops: 0,
                        created_ns: None,
                        creator_goid: 0,
                        create_stack: None,
                        deadline: (0, 0),
                        creator_context: None,
                        done_chan: None,
                        cancel: None,
                        children: Vec::new(),
                        started: BTreeSet::new(),
                        superseded: false,
                    },
                );
                self.by_ptr.insert(e.ctx, id);
                id
            }
        };
        if e.done_chan != 0 && self.node(id).done_chan.is_none() {
            self.node(id).done_chan = Some(e.done_chan);
            self.by_chan.insert(e.done_chan, id);
        }
        if self.node(id).cancel.is_some() {
            self.stats.repeat_cancels += 1;
            return;
        }
        self.stats.cancelled += 1;
        let msg = (e.flags & CANCEL_CAUSE_MSG != 0).then(|| {
            let len = (e.cause_len as usize).min(e.cause_msg.len());
            String::from_utf8_lossy(&e.cause_msg[..len]).into_owned()
        });
        let was_live = !self.node(id).superseded;
        self.node(id).cancel = Some(Cancel {
            ts_ns: e.header.ts_ns,
            goid: e.goid,
            method: e.method,
            remove_from_parent: e.remove_from_parent != 0,
            flags: e.flags,
            err_itab: e.err_itab,
            cause_itab: e.cause_itab,
            cause_msg: msg,
            stack: StackRef::new(e.stack_id, e.caller_pc),
            caller_pc: e.caller_pc,
        });
        if was_live {
            self.finished(id);
        }
    }

    fn on_done(&mut self, ctx: u64, chan: u64) {
        if let Some(&id) = self.by_ptr.get(&ctx) {
            self.node(id).done_chan = Some(chan);
            self.by_chan.insert(chan, id);
        }
    }

    fn on_go_create(&mut self, e: &GoCreateEvent) {
        let parent = e.g.parent_goid;
        if parent == 0 {
            return;
        }
        if let Some(ctx) = self.working_context(parent) {
            self.started_under.insert(e.g.goid, ctx);
            self.node(ctx).started.insert(e.g.goid);
        }
    }

    fn on_go_exit(&mut self, e: &GoExitEvent) {
        if let Some(ctx) = self.started_under.remove(&e.goid)
            && let Some(n) = self.nodes.get_mut(&ctx)
        {
            n.started.remove(&e.goid);
        }
        self.created_by.remove(&e.goid);
    }
}

impl CtxNode {
    fn parent_data_is(&self, data: u64, nodes: &BTreeMap<usize, CtxNode>) -> bool {
        match self.parent {
            Parent::Node(p) => nodes.get(&p).is_some_and(|n| n.ptr == data),
            Parent::Other { data: d, .. } => d == data,
        }
    }

    pub fn is_live(&self) -> bool {
        self.cancel.is_none() && !self.superseded
    }
}

#[cfg(test)]
mod tests {
    use tracer_common::{CtxCancelEvent, CtxCreateEvent, EventHeader, GoCreateEvent, GoIdentity};

    use super::*;

    fn create(ctx: u64, goid: u64, ts: u64) -> Event {
        Event::CtxCreate(CtxCreateEvent {
            header: EventHeader {
                ts_ns: ts,
                ..Default::default()
            },
            goid,
            ctx,
            parent_data: 1,
            stack_id: -1,
            ..Default::default()
        })
    }

    fn cancel(ctx: u64, ts: u64) -> Event {
        Event::CtxCancel(Box::new(CtxCancelEvent {
            header: EventHeader {
                ts_ns: ts,
                ..Default::default()
            },
            ctx,
            stack_id: -1,
            ..Default::default()
        }))
    }

    /// A context per request, forever: the model keeps MAX_FINISHED finished
    /// ones plus the live ones, and counts the rest as retired; a context
    /// with a goroutine still running under it is never retired.
    #[test]
    fn finished_contexts_are_retired_beyond_the_cap() {
        let mut m = ContextModel::new();
        // Context 0x10 starts goroutine 99 (still alive), then is cancelled.
        m.apply(&create(0x10, 7, 1));
        m.apply(&Event::Create(GoCreateEvent {
            g: GoIdentity {
                goid: 99,
                parent_goid: 7,
                ..Default::default()
            },
            stack_id: -1,
            ..Default::default()
        }));
        m.apply(&cancel(0x10, 2));
        let extra = 1_000u64;
        for i in 0..(MAX_FINISHED as u64 + extra) {
            let ptr = 0x1000 + i * 0x40;
            m.apply(&create(ptr, 8, 10 + 2 * i));
            m.apply(&cancel(ptr, 11 + 2 * i));
        }
        m.apply(&create(0x9, 8, u64::MAX / 2)); // one live context
        assert_eq!(m.stats().created, MAX_FINISHED as u64 + extra + 2);
        assert_eq!(m.stats().cancelled, MAX_FINISHED as u64 + extra + 1);
        assert_eq!(m.stats().retired, extra);
        assert_eq!(m.nodes().count(), MAX_FINISHED + 2);
        assert!(m.get(0).is_some_and(|n| n.started.contains(&99)));
        assert_eq!(m.nodes().filter(|n| n.is_live()).count(), 1);
        // Retired pointers are forgotten: a cancel of one counts as unseen.
        m.apply(&cancel(0x1000, u64::MAX / 2));
        assert_eq!(m.stats().cancelled_before_seen, 1);
    }
}
