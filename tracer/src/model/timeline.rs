//! A bounded history of the trace for the timeline export: per goroutine
//! its state changes (runnable ↔ parked with the raw wait reason and blocked
//! stack, exit), its creation (parent, time, creation stack), the first
//! cancel of each context (by which goroutine, propagated from which parent
//! cancel) and the goroutines a cancel woke from a wait on the context's
//! Done channel.
//!
//! Built only from the event stream, in event order, so a replayed
//! recording rebuilds the same history. Memory is bounded: every stored
//! entry is counted at its element size (vector growth may add up to as
//! much again) and once [`BUDGET_BYTES`] is reached nothing more is stored.
//! The history is then a consistent prefix of the trace that ends at
//! [`Timeline::full_at_ns`], and [`Omitted`] counts what came after.
//!
//! Goroutines that existed before tracing began get a track from their first
//! observed activity (a park, creating a goroutine or a context, a cancel):
//! they were running then.

use super::HashMap;

use super::contexts::{ContextModel, Parent};
use super::goroutines::{Parked, StackRef};
use tracer_common::{GoCreateEvent, GoParkEvent};

use crate::decode::Event;

/// Memory the history may take (entries counted at their element size).
pub const BUDGET_BYTES: usize = 16 << 20;

/// No stack / no cancel: the `u32::MAX` index.
pub const NONE: u32 = u32::MAX;

/// What a goroutine did at `ts_ns`; 16 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    pub ts_ns: u64,
    /// Index into [`Timeline::stacks`] (blocked stack), or [`NONE`].
    pub stack: u32,
    kind: u8,
    /// Raw `waitReason` (the target's numbering) of a park.
    pub reason: u8,
}

/// The state a [`Transition`] enters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Created or woken: running or waiting for a P (not told apart).
    Runnable,
    Parked {
        reason: u8,
        stack: u32,
    },
    Exit,
}

const RUNNABLE: u8 = 0;
const PARKED: u8 = 1;
const EXIT: u8 = 2;

impl Transition {
    fn new(ts_ns: u64, step: Step) -> Self {
        let (kind, reason, stack) = match step {
            Step::Runnable => (RUNNABLE, 0, NONE),
            Step::Parked { reason, stack } => (PARKED, reason, stack),
            Step::Exit => (EXIT, 0, NONE),
        };
        Self {
            ts_ns,
            stack,
            kind,
            reason,
        }
    }

    pub fn step(&self) -> Step {
        match self.kind {
            PARKED => Step::Parked {
                reason: self.reason,
                stack: self.stack,
            },
            EXIT => Step::Exit,
            _ => Step::Runnable,
        }
    }
}

/// One goroutine's history.
#[derive(Clone, Debug)]
pub struct Track {
    pub goid: u64,
    /// 0 when unknown.
    pub parent_goid: u64,
    /// 0 until known (a goroutine from before the trace, not parked yet).
    pub startpc: u64,
    pub gopc: u64,
    /// Its creation was traced: when.
    pub created_ns: Option<u64>,
    /// Index into [`Timeline::stacks`] of the creator's stack, or [`NONE`].
    pub create_stack: u32,
    /// In time order; the first one starts the track.
    pub transitions: Vec<Transition>,
}

impl Track {
    pub fn exited(&self) -> bool {
        self.transitions.last().map(|t| t.step()) == Some(Step::Exit)
    }
}

/// The first cancel of a context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CancelMark {
    pub ts_ns: u64,
    /// The cancelling goroutine (it has a track).
    pub goid: u64,
    /// The context: index into [`ContextModel::nodes`] (report.json's id).
    pub node: u32,
    /// The parent's cancel this one was propagated from (index into
    /// [`Timeline::cancels`]), or [`NONE`].
    pub from: u32,
    /// `CANCEL_ERR_*` / `CANCEL_CAUSE_*` bits, as the context model has them.
    pub flags: u32,
}

/// A goroutine parked on a context's Done channel, made runnable after the
/// context was cancelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wake {
    pub ts_ns: u64,
    /// Index into [`Timeline::cancels`].
    pub cancel: u32,
    /// Index into [`Timeline::tracks`].
    pub track: u32,
}

/// What the budget left out, counted after [`Timeline::full_at_ns`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Omitted {
    /// Goroutine and context events not stored.
    pub events: u64,
    /// Goroutines created whose tracks were not stored.
    pub goroutines: u64,
    /// Context cancels not stored.
    pub cancels: u64,
}

pub struct Timeline {
    tracks: Vec<Track>,
    /// goid → track, exited goroutines included (goids are never reused).
    by_goid: HashMap<u64, u32>,
    stacks: Vec<StackRef>,
    stack_index: HashMap<StackRef, u32>,
    cancels: Vec<CancelMark>,
    /// Context node → its cancel mark.
    cancel_of_node: HashMap<usize, u32>,
    wakes: Vec<Wake>,
    bytes: usize,
    budget: usize,
    full_at_ns: Option<u64>,
    omitted: Omitted,
}

impl Default for Timeline {
    fn default() -> Self {
        Self::with_budget(BUDGET_BYTES)
    }
}

/// Bytes counted per stored entry (element sizes; a map entry as its key
/// and value).
const TRACK_BYTES: usize = size_of::<Track>() + size_of::<(u64, u32)>();
const TRANSITION_BYTES: usize = size_of::<Transition>();
const STACK_BYTES: usize = 2 * size_of::<StackRef>() + size_of::<u32>();
const CANCEL_BYTES: usize = size_of::<CancelMark>() + size_of::<(usize, u32)>();
const WAKE_BYTES: usize = size_of::<Wake>();

impl Timeline {
    pub fn with_budget(budget: usize) -> Self {
        Self {
            tracks: Vec::new(),
            by_goid: HashMap::default(),
            stacks: Vec::new(),
            stack_index: HashMap::default(),
            cancels: Vec::new(),
            cancel_of_node: HashMap::default(),
            wakes: Vec::new(),
            bytes: 0,
            budget,
            full_at_ns: None,
            omitted: Omitted::default(),
        }
    }

    pub fn tracks(&self) -> &[Track] {
        &self.tracks
    }

    pub fn track_of(&self, goid: u64) -> Option<usize> {
        self.by_goid.get(&goid).map(|i| *i as usize)
    }

    pub fn stack(&self, index: u32) -> Option<StackRef> {
        self.stacks.get(index as usize).copied()
    }

    pub fn cancels(&self) -> &[CancelMark] {
        &self.cancels
    }

    pub fn wakes(&self) -> &[Wake] {
        &self.wakes
    }

    /// Bytes of history stored (element sizes).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn budget(&self) -> usize {
        self.budget
    }

    /// When the budget ran out: nothing after this is stored.
    pub fn full_at_ns(&self) -> Option<u64> {
        self.full_at_ns
    }

    pub fn omitted(&self) -> &Omitted {
        &self.omitted
    }

    /// Kernel stack ids the history refers to.
    pub fn stack_ids(&self) -> impl Iterator<Item = i32> + '_ {
        self.stacks.iter().map(|s| s.id)
    }

    /// Reserves `cost` bytes; false (and the history is closed at `ts`) when
    /// the budget is spent.
    fn reserve(&mut self, cost: usize, ts: u64) -> bool {
        if self.full_at_ns.is_some() {
            return false;
        }
        if self.bytes + cost > self.budget {
            self.full_at_ns = Some(ts);
            return false;
        }
        self.bytes += cost;
        true
    }

    /// Applies one event. Called after the goroutine and context models took
    /// it: `woken_from` is the park a `Ready` ended (as the goroutine model
    /// had it before the event) and `contexts` already has the event.
    pub fn apply(&mut self, event: &Event, woken_from: Option<Parked>, contexts: &ContextModel) {
        let ts = event.header().ts_ns;
        if self.full_at_ns.is_some() {
            self.count_omitted(event);
            return;
        }
        match event {
            Event::Create(e) => self.created(e, ts),
            Event::Park(e) => self.parked(e, ts),
            Event::Ready(e) => {
                let Some(i) = self.by_goid.get(&e.goid).copied() else {
                    return;
                };
                let last = self.tracks[i as usize].transitions.last().map(|t| t.step());
                if !matches!(last, Some(Step::Parked { .. })) {
                    return;
                }
                self.push(i, ts, Step::Runnable);
                if let Some(p) = woken_from {
                    self.woken(i, ts, &p, contexts);
                }
            }
            Event::Exit(e) => {
                if let Some(i) = self.by_goid.get(&e.goid).copied()
                    && !self.tracks[i as usize].exited()
                {
                    self.push(i, ts, Step::Exit);
                }
            }
            Event::CtxCreate(e) => self.active(e.goid, ts),
            Event::CtxCancel(e) => {
                self.active(e.goid, ts);
                self.cancelled(e.ctx, e.goid, e.remove_from_parent != 0, ts, contexts);
            }
            Event::CtxDone(_)
            | Event::TimerStart(_)
            | Event::TimerStop(_)
            | Event::StackDump(_)
            | Event::ParkChans(_) => {}
        }
    }

    /// A new goroutine gets its track.
    fn created(&mut self, e: &GoCreateEvent, ts: u64) {
        self.active(e.g.parent_goid, ts);
        if e.g.goid == 0 || self.by_goid.contains_key(&e.g.goid) {
            return; // re-fired probe (or nonsense)
        }
        let stack = self.intern(StackRef::new(e.stack_id, e.caller_pc), ts);
        if self.full_at_ns.is_some() || !self.reserve(TRACK_BYTES + TRANSITION_BYTES, ts) {
            self.omitted.goroutines += 1;
            self.omitted.events += 1;
            return;
        }
        self.push_track(Track {
            goid: e.g.goid,
            parent_goid: e.g.parent_goid,
            startpc: e.g.startpc,
            gopc: e.g.gopc,
            created_ns: Some(ts),
            create_stack: stack,
            transitions: vec![Transition::new(ts, Step::Runnable)],
        });
    }

    /// A park: a new step on its track, or a new track for a goroutine
    /// first seen parking (it existed before the trace).
    fn parked(&mut self, e: &GoParkEvent, ts: u64) {
        let goid = e.g.goid;
        if goid == 0 {
            return;
        }
        let stack = self.intern(StackRef::new(e.stack_id, e.caller_pc), ts);
        let step = Step::Parked {
            reason: e.reason as u8,
            stack,
        };
        match self.by_goid.get(&goid).copied() {
            Some(i) => {
                let t = &mut self.tracks[i as usize];
                if t.startpc == 0 {
                    (t.startpc, t.gopc, t.parent_goid) = (e.g.startpc, e.g.gopc, e.g.parent_goid);
                }
                let last = t.transitions.last().map(|t| t.step());
                if last == Some(step) || last == Some(Step::Exit) {
                    return; // re-fired probe, or a late event
                }
                self.push(i, ts, step);
            }
            None => {
                if !self.reserve(TRACK_BYTES + TRANSITION_BYTES, ts) {
                    self.omitted.events += 1;
                    return;
                }
                self.push_track(Track {
                    goid,
                    parent_goid: e.g.parent_goid,
                    startpc: e.g.startpc,
                    gopc: e.g.gopc,
                    created_ns: None,
                    create_stack: NONE,
                    transitions: vec![Transition::new(ts, step)],
                });
            }
        }
    }

    fn count_omitted(&mut self, event: &Event) {
        match event {
            Event::Create(_) => {
                self.omitted.goroutines += 1;
                self.omitted.events += 1;
            }
            Event::CtxCancel(_) => {
                self.omitted.cancels += 1;
                self.omitted.events += 1;
            }
            Event::Park(_) | Event::Ready(_) | Event::Exit(_) => self.omitted.events += 1,
            _ => {}
        }
    }

    fn push_track(&mut self, track: Track) {
        self.by_goid.insert(track.goid, self.tracks.len() as u32);
        self.tracks.push(track);
    }

    fn push(&mut self, track: u32, ts: u64, step: Step) {
        if self.reserve(TRANSITION_BYTES, ts) {
            self.tracks[track as usize]
                .transitions
                .push(Transition::new(ts, step));
        } else {
            self.omitted.events += 1;
        }
    }

    fn intern(&mut self, stack: Option<StackRef>, ts: u64) -> u32 {
        let Some(s) = stack else { return NONE };
        if let Some(&i) = self.stack_index.get(&s) {
            return i;
        }
        if !self.reserve(STACK_BYTES, ts) {
            return NONE;
        }
        let i = self.stacks.len() as u32;
        self.stacks.push(s);
        self.stack_index.insert(s, i);
        i
    }

    /// Goroutine `goid` is running at `ts`: give it a track if it has none
    /// (it existed before the trace).
    fn active(&mut self, goid: u64, ts: u64) {
        if goid == 0 || self.by_goid.contains_key(&goid) {
            return;
        }
        if self.reserve(TRACK_BYTES + TRANSITION_BYTES, ts) {
            self.push_track(Track {
                goid,
                parent_goid: 0,
                startpc: 0,
                gopc: 0,
                created_ns: None,
                create_stack: NONE,
                transitions: vec![Transition::new(ts, Step::Runnable)],
            });
        }
    }

    fn cancelled(
        &mut self,
        ctx: u64,
        goid: u64,
        remove_from_parent: bool,
        ts: u64,
        contexts: &ContextModel,
    ) {
        let Some(id) = contexts.id_of(ctx) else {
            return;
        };
        let Some(node) = contexts.get(id) else {
            return;
        };
        let Some(cancel) = &node.cancel else { return };
        if self.cancel_of_node.contains_key(&id) {
            return; // a repeat cancel (no-op in Go)
        }
        // Children are cancelled with removeFromParent=false by the
        // parent's cancel (or by propagateCancel when the parent was
        // already done); a cancel func or deadline passes true.
        let from = match node.parent {
            Parent::Node(p) if !remove_from_parent => {
                self.cancel_of_node.get(&p).copied().unwrap_or(NONE)
            }
            _ => NONE,
        };
        if !self.reserve(CANCEL_BYTES, ts) {
            self.omitted.cancels += 1;
            self.omitted.events += 1;
            return;
        }
        self.cancel_of_node.insert(id, self.cancels.len() as u32);
        self.cancels.push(CancelMark {
            ts_ns: ts,
            goid,
            node: id as u32,
            from,
            flags: cancel.flags,
        });
    }

    /// Track `track` was made runnable at `ts` after parking as `p`: if it
    /// waited on the Done channel of a context cancelled since it parked,
    /// that cancel woke it.
    fn woken(&mut self, track: u32, ts: u64, p: &Parked, contexts: &ContextModel) {
        let by_cancel = p.chans.iter().filter(|c| **c != 0).find_map(|c| {
            let node = contexts.by_chan(*c)?;
            let mark = *self.cancel_of_node.get(&node.id)?;
            (self.cancels[mark as usize].ts_ns >= p.since_ns).then_some(mark)
        });
        if let Some(cancel) = by_cancel
            && self.reserve(WAKE_BYTES, ts)
        {
            self.wakes.push(Wake {
                ts_ns: ts,
                cancel,
                track,
            });
        }
    }
}

#[cfg(test)]
#[path = "timeline_tests.rs"]
pub(crate) mod tests;
