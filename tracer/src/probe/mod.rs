//! Userspace half of the probes: load the embedded eBPF object with the
//! target's configuration, attach uprobes, and expose the maps.

pub mod context;
pub mod counters;
pub mod goroutine;
pub mod loader;
pub mod timers;

pub use loader::{ProbeError, Probes};
