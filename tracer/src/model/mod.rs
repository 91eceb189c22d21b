//! The lifecycle model: goroutines rebuilt from events, and a bounded
//! history of them for the timeline. Knows nothing of symbols or output
//! formats (those live in `report` and `export`).

pub mod contexts;
pub mod existing;
pub mod goroutines;
#[cfg(test)]
mod mem_tests;
pub mod sites;
pub mod stacks;
pub mod timeline;
pub mod timers;

pub use contexts::{ContextModel, CtxNode};
pub use goroutines::{
    Goroutine, GoroutineModel, GoroutineRef, ModelStats, Origin, Parked, SampleRules, Sampling,
    StackRef, State,
};
pub use sites::{SiteKey, SiteStats};

/// The model's maps are keyed by goids, pointers and small ids from the
/// target: a fast non-cryptographic hash (no untrusted-key concern; the
/// data comes from our own probes) and a fixed iteration order.
pub type HashMap<K, V> = rustc_hash::FxHashMap<K, V>;

/// Everything rebuilt from the event stream.
#[derive(Default)]
pub struct Model {
    pub goroutines: GoroutineModel,
    pub contexts: ContextModel,
    pub timers: timers::TimerModel,
    /// Bounded history for the timeline export.
    pub timeline: timeline::Timeline,
    /// Stacks the eBPF stack walk sent as `StackDump` events, by id.
    pub dumped: stacks::DumpedStacks,
}

impl Model {
    /// Seeds the goroutines with a snapshot taken at attach (before any
    /// event is applied).
    pub fn seed(&mut self, snap: &existing::Snapshot) {
        self.goroutines.seed(snap);
    }

    /// Folds in a sample taken while the trace runs (see
    /// [`goroutines::SampleRules`] for what it may change); `unread`: the
    /// goids (sorted) of live goroutines whose g it could not read.
    pub fn observe(&mut self, snap: &existing::Snapshot, rules: SampleRules, unread: &[u64]) {
        self.goroutines.observe(snap, rules, unread);
    }

    pub fn apply(&mut self, event: &crate::decode::Event) {
        use crate::decode::Event;
        if let Event::StackDump(d) = event {
            self.dumped.add(d);
            return;
        }
        // A stack dumped twice (evicted from the eBPF fingerprint LRU) goes
        // by its first id.
        let mut remapped;
        let mut event = event;
        if let Some(id) = event.stack_id()
            && id < tracer_common::NO_STACK
            && self.dumped.canonical(id) != id
        {
            remapped = event.clone();
            if let Some(s) = remapped.stack_id_mut() {
                *s = self.dumped.canonical(id);
            }
            event = &remapped;
        }
        // The park a wakeup ends, before the goroutine model forgets it.
        let woken_from = match event {
            crate::decode::Event::Ready(e) => {
                match self.goroutines.get(e.goid).map(|g| g.state()) {
                    Some(State::Parked(p)) => Some(p),
                    _ => None,
                }
            }
            _ => None,
        };
        self.goroutines.apply(event);
        self.contexts.apply(event);
        self.timers.apply(event);
        self.timeline.apply(event, woken_from, &self.contexts);
    }

    /// Every stack id the model still refers to: live goroutines' creation
    /// and blocked stacks, creation sites, parked-time totals, unstopped
    /// timers, contexts and the timeline's history. These are the stacks a
    /// capture (and a recording) keeps; the others are not needed.
    pub fn stack_ids(&self) -> std::collections::BTreeSet<i32> {
        let mut ids = std::collections::BTreeSet::new();
        for g in self.goroutines.live() {
            ids.extend(g.create_stack().map(|s| s.id));
            if let State::Parked(p) = g.state() {
                ids.extend(p.stack.map(|s| s.id));
            }
        }
        ids.extend(
            self.goroutines
                .creations()
                .keys()
                .filter_map(|(s, _)| s.map(|s| s.id)),
        );
        ids.extend(
            self.goroutines
                .off_cpu_at(0)
                .keys()
                .filter_map(|(s, _)| s.map(|s| s.id)),
        );
        for t in self.timers.unstopped() {
            ids.extend(t.stack.map(|s| s.id));
        }
        for n in self.contexts.nodes() {
            ids.extend(n.create_stack.map(|s| s.id));
            ids.extend(n.cancel.as_ref().and_then(|c| c.stack).map(|s| s.id));
        }
        ids.extend(self.timeline.stack_ids());
        ids.remove(&tracer_common::NO_STACK);
        ids
    }
}
