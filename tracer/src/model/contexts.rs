//! Context nodes rebuilt from events: creation with parent edges, the first
//! cancel of each (later cancel calls are no-ops in Go too), Done channels,
//! and which goroutines were started while a context was their creator's
//! working context.
//!
//! Contexts are keyed by pointer while alive; a pointer created again (the
//! heap reused it) supersedes the old node. Types are kept as raw itab
//! addresses: naming them is the report's job.

use std::collections::HashMap;

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

#[derive(Clone, Debug)]
pub struct CtxNode {
    pub id: usize,
    pub ptr: u64,
    /// itab of the context as a `canceler` (its type); 0 if first seen
    /// cancelled (created before tracing).
    pub itab: u64,
    pub parent: Parent,
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
    /// Goroutines started while this was their creator's working context.
    pub started: Vec<u64>,
    /// The pointer was reused by a newer context.
    pub superseded: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContextStats {
    pub created: u64,
    pub cancelled: u64,
    /// Cancel calls on contexts already cancelled (no-ops in Go).
    pub repeat_cancels: u64,
    /// Cancels of contexts created before tracing began.
    pub cancelled_before_seen: u64,
    pub duplicates: u64,
}

#[derive(Default)]
pub struct ContextModel {
    nodes: Vec<CtxNode>,
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

    pub fn nodes(&self) -> &[CtxNode] {
        &self.nodes
    }

    pub fn stats(&self) -> &ContextStats {
        &self.stats
    }

    /// The context whose Done channel is `chan`.
    pub fn by_chan(&self, chan: u64) -> Option<&CtxNode> {
        self.by_chan.get(&chan).map(|i| &self.nodes[*i])
    }

    /// The node a context pointer stands for now.
    pub fn id_of(&self, ptr: u64) -> Option<usize> {
        self.by_ptr.get(&ptr).copied()
    }

    /// The context a goroutine was started under.
    pub fn started_under(&self, goid: u64) -> Option<&CtxNode> {
        self.started_under.get(&goid).map(|i| &self.nodes[*i])
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
        let n = &self.nodes[id];
        n.cancel.is_none() && !n.superseded
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
        if let Some(&old) = self.by_ptr.get(&e.ctx) {
            let n = &self.nodes[old];
            // An entry probe re-firing (stack growth) repeats the same call.
            if n.cancel.is_none()
                && n.creator_goid == e.goid
                && n.parent_data_is(e.parent_data, &self.nodes)
                && n.created_ns
                    .is_some_and(|t| e.header.ts_ns.saturating_sub(t) < 1_000_000)
            {
                self.stats.duplicates += 1;
                return;
            }
            self.nodes[old].superseded = true;
        }
        self.stats.created += 1;
        let id = self.nodes.len();
        let parent = match self.by_ptr.get(&e.parent_data) {
            Some(&p) if !self.nodes[p].superseded => Parent::Node(p),
            _ => Parent::Other {
                itab: e.parent_itab,
                data: e.parent_data,
            },
        };
        if let Parent::Node(p) = parent {
            self.nodes[p].children.push(id);
        }
        // Pattern 7 asks what the creator was started under, not what it
        // created itself (sibling contexts from Background are fine).
        let creator_context = self
            .started_under
            .get(&e.goid)
            .copied()
            .filter(|i| self.live(*i));
        self.nodes.push(CtxNode {
            id,
            ptr: e.ctx,
            itab: e.child_itab,
            parent,
            value_hops: e.value_hops,
            created_ns: Some(e.header.ts_ns),
            creator_goid: e.goid,
            create_stack: StackRef::new(e.stack_id, e.caller_pc),
            deadline: (e.deadline_wall, e.deadline_ext),
            creator_context,
            done_chan: None,
            cancel: None,
            children: Vec::new(),
            started: Vec::new(),
            superseded: false,
        });
        self.by_ptr.insert(e.ctx, id);
        self.created_by.entry(e.goid).or_default().push(id);
    }

    fn on_cancel(&mut self, e: &CtxCancelEvent) {
        let id = match self.by_ptr.get(&e.ctx) {
            Some(&id) => id,
            None => {
                // Created before tracing began: a node of unknown origin.
                self.stats.cancelled_before_seen += 1;
                let id = self.nodes.len();
                self.nodes.push(CtxNode {
                    id,
                    ptr: e.ctx,
                    itab: 0,
                    parent: Parent::Other { itab: 0, data: 0 },
                    value_hops: 0,
                    created_ns: None,
                    creator_goid: 0,
                    create_stack: None,
                    deadline: (0, 0),
                    creator_context: None,
                    done_chan: None,
                    cancel: None,
                    children: Vec::new(),
                    started: Vec::new(),
                    superseded: false,
                });
                self.by_ptr.insert(e.ctx, id);
                id
            }
        };
        if e.done_chan != 0 && self.nodes[id].done_chan.is_none() {
            self.nodes[id].done_chan = Some(e.done_chan);
            self.by_chan.insert(e.done_chan, id);
        }
        if self.nodes[id].cancel.is_some() {
            self.stats.repeat_cancels += 1;
            return;
        }
        self.stats.cancelled += 1;
        let msg = (e.flags & CANCEL_CAUSE_MSG != 0).then(|| {
            let len = (e.cause_len as usize).min(e.cause_msg.len());
            String::from_utf8_lossy(&e.cause_msg[..len]).into_owned()
        });
        self.nodes[id].cancel = Some(Cancel {
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
    }

    fn on_done(&mut self, ctx: u64, chan: u64) {
        if let Some(&id) = self.by_ptr.get(&ctx) {
            self.nodes[id].done_chan = Some(chan);
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
            self.nodes[ctx].started.push(e.g.goid);
        }
    }

    fn on_go_exit(&mut self, e: &GoExitEvent) {
        self.started_under.remove(&e.goid);
        self.created_by.remove(&e.goid);
    }
}

impl CtxNode {
    fn parent_data_is(&self, data: u64, nodes: &[CtxNode]) -> bool {
        match self.parent {
            Parent::Node(p) => nodes[p].ptr == data,
            Parent::Other { data: d, .. } => d == data,
        }
    }

    pub fn is_live(&self) -> bool {
        self.cancel.is_none() && !self.superseded
    }
}
