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
    pub fn apply(&mut self, event: &crate::decode::Event) {
        self.goroutines.apply(event);
        self.contexts.apply(event);
        self.timers.apply(event);
    }
}
