//! The lifecycle model: goroutines rebuilt from events. Knows nothing of
//! symbols or output formats (those live in `report`).

pub mod goroutines;
pub mod sites;

pub use goroutines::{Goroutine, GoroutineModel, ModelStats, Origin, Parked, StackRef, State};
pub use sites::{SiteKey, SiteStats};
