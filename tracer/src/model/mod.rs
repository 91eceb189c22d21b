//! The lifecycle model: goroutines rebuilt from events. Knows nothing of
//! symbols or output formats (those live in `report`).

pub mod contexts;
pub mod goroutines;
pub mod sites;
pub mod timers;

pub use contexts::{ContextModel, CtxNode};
pub use goroutines::{Goroutine, GoroutineModel, ModelStats, Origin, Parked, StackRef, State};
pub use sites::{SiteKey, SiteStats};

/// Everything rebuilt from the event stream.
#[derive(Default)]
pub struct Model {
    pub goroutines: GoroutineModel,
    pub contexts: ContextModel,
    pub timers: timers::TimerModel,
}

impl Model {
    /// Seeds the goroutines with a snapshot taken at attach (before any
    /// event is applied).
    pub fn seed(&mut self, snap: &crate::snapshot::Snapshot) {
        self.goroutines.seed(snap);
    }

    pub fn apply(&mut self, event: &crate::decode::Event) {
        self.goroutines.apply(event);
        self.contexts.apply(event);
        self.timers.apply(event);
    }

    /// Every kernel stack id the model still refers to: live goroutines'
    /// creation and blocked stacks, creation sites, parked-time totals,
    /// unstopped timers and contexts. These are what must be read out of the
    /// stack map before it goes away.
    pub fn stack_ids(&self) -> std::collections::BTreeSet<i32> {
        let mut ids = std::collections::BTreeSet::new();
        for g in self.goroutines.live() {
            ids.extend(g.create_stack.map(|s| s.id));
            if let State::Parked(p) = g.state {
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
        ids.remove(&tracer_common::NO_STACK);
        ids
    }
}
