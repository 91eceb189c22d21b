//! The leak report: a serialisable view built from the model. `report.json`
//! is this struct through serde_json; the text summary renders the same data.
//!
//! [`assemble`] builds it, once, from a capture. Schema changes bump
//! [`SCHEMA_VERSION`] and are documented in docs/report-schema.md.

pub mod assemble;
pub mod contexts;
pub mod grouping;
pub mod groups;
pub mod proof_text;
pub mod snapshot;
pub mod text;
pub mod timers;

use serde::Serialize;

use crate::gobin::symbolize::Frame;
use crate::goruntime::wait_reason::Pattern;
use crate::probe::counters::KernelCounters;

pub use assemble::{Input, assemble};

pub const SCHEMA_VERSION: u32 = 1;

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub schema_version: u32,
    pub tool: Tool,
    pub target: Target,
    pub trace: Trace,
    pub goroutines: GoroutineCounts,
    /// "no leak suspects" or "N leak suspects in M groups".
    pub verdict: String,
    pub suspect_count: usize,
    /// Goroutines the leak proof proved leaked (0 when it did not run).
    pub leaked_count: u64,
    /// Groups of user goroutines blocked at least `leak_threshold_s`.
    pub suspects: Vec<Group>,
    /// The other live user goroutines, grouped the same way.
    pub live: Vec<Group>,
    /// Per creation site: goroutines created and exited over the trace.
    pub growth: Vec<Growth>,
    /// Contexts: cancel-propagation trees and context failure patterns.
    pub contexts: contexts::ContextReport,
    /// Tickers never stopped (pattern 4).
    pub timers: timers::TimerReport,
    /// The leak proof run at the end of the trace (null when not run).
    pub proof: Option<crate::proof::Proof>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Tool {
    pub name: &'static str,
    pub version: &'static str,
}

#[derive(Clone, Debug, Serialize)]
pub struct Target {
    pub pid: u32,
    pub exe: String,
    pub go_version: String,
    pub arch: String,
    /// How the target ended, if it did during the trace.
    pub exit: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Trace {
    /// "full" (every probe), "sampled" (goroutine samples, no probe) or
    /// "budgeted" (probes under an overhead budget, samples for what was
    /// shed).
    pub mode: &'static str,
    pub duration_s: f64,
    /// "duration", "signal" or "target-exit".
    pub ended_by: String,
    pub leak_threshold_s: f64,
    pub probes_attached: usize,
    pub events_received: u64,
    pub events_undecodable: u64,
    pub kernel: KernelCounters,
    /// Repeated probe hits the model ignored (stack-growth re-entry).
    pub duplicates_ignored: u64,
    /// Events that contradicted the model's state (e.g. after drops).
    pub inconsistent_events: u64,
    /// The goroutines read from the process at attach (`--pid`); null when
    /// gotrace started the program.
    pub snapshot: Option<crate::model::existing::SnapshotInfo>,
    /// The command's last state, read while it was held at its exit
    /// (`-- CMD`); null otherwise.
    pub at_exit: Option<AtExitReport>,
    /// The goroutine samples taken while the trace ran; null when none were
    /// (full tracing).
    pub samples: Option<crate::capture::sampler::SampleInfo>,
    /// What the probes cost the target (estimated from what one hit costs
    /// here and how many there were) and what the overhead budget detached;
    /// null in sampled mode.
    pub budget: Option<crate::probe::budget::BudgetReport>,
}

#[derive(Clone, Debug, Serialize)]
pub struct AtExitReport {
    /// The exiting thread it was held by.
    pub tid: u32,
    pub held_ms: f64,
    /// The hold limit ran out before the analysis finished.
    pub timed_out: bool,
    /// The goroutine snapshot taken there.
    pub snapshot: crate::model::existing::SnapshotInfo,
    /// The program's goroutines in it (not the runtime's), counted by what
    /// they run and how they wait, most first.
    pub goroutines: Vec<ExitCount>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ExitCount {
    pub start_function: String,
    pub state: crate::goruntime::gstatus::GState,
    /// Go's wait-reason string, for parked goroutines.
    pub wait_reason: Option<String>,
    pub count: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct GoroutineCounts {
    pub created: u64,
    pub exited: u64,
    pub live_at_end: usize,
    pub live_user: usize,
    /// The runtime's own goroutines (GC workers, finalizer...), never suspects.
    pub live_system: usize,
    /// Goroutines that existed before tracing began (read at attach, or
    /// first seen parking).
    pub seen_before_attach: u64,
    /// Of those, the ones read from the process at attach.
    pub read_at_attach: u64,
    /// Exits of goroutines created before attach and never seen otherwise.
    pub unseen_exits: u64,
    /// Of `created`, those only samples saw (no creation probe): a lower
    /// bound, since a goroutine that lived between two samples is missed.
    pub created_seen_by_samples: u64,
    /// Of `exited`, those only samples saw go.
    pub exited_seen_by_samples: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl Summary {
    pub fn of(mut values: Vec<f64>) -> Option<Summary> {
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        Some(Summary {
            min: values[0],
            median: values[values.len() / 2],
            max: values[values.len() - 1],
        })
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Group {
    pub pattern: Pattern,
    /// The pattern in words a Go developer recognises.
    pub description: String,
    /// Number in the leak-pattern catalogue (README), when one fits.
    pub leak_pattern: Option<u8>,
    /// "blocked" or "runnable".
    pub state: String,
    /// Go's wait-reason string ("chan receive"), for blocked groups.
    pub wait_reason: Option<String>,
    pub count: usize,
    pub sample_goids: Vec<u64>,
    /// Distinct parent goids (the goroutines that ran the `go` statement),
    /// up to 5; empty when unknown.
    pub parent_goids: Vec<u64>,
    /// Function the goroutines run (g.startpc).
    pub start_function: String,
    /// The `go` statement that created them (g.gopc).
    pub created_at: Option<Frame>,
    /// First frame of the program's own code in the blocked stack.
    pub blocked_at: Option<Frame>,
    /// Seconds since creation (goroutines created during the trace).
    pub age_s: Option<Summary>,
    /// Goroutines of the group whose creation only a sample saw: their age
    /// counts from that sample, a lower bound.
    pub age_lower_bound: usize,
    /// Goroutines of the group that existed before tracing began.
    pub before_attach: usize,
    /// Seconds parked, as of the end of the trace.
    pub blocked_for_s: Option<Summary>,
    /// Goroutines of the group already parked at attach: their blocked_for_s
    /// is a lower bound (since `g.waitsince`, the first GC that saw them
    /// parked, when the runtime recorded it; else since attach).
    pub blocked_before_attach: usize,
    /// Goroutines of the group whose park only a sample saw (no park
    /// probe): their blocked_for_s counts from that sample (or from
    /// `g.waitsince`), a lower bound.
    pub blocked_seen_by_samples: usize,
    /// Creator's stack at the `go` statement (innermost first).
    pub creation_stack: Vec<Frame>,
    /// Stack where the goroutines are parked (innermost first).
    pub blocked_stack: Vec<Frame>,
    /// Net growth of the creation site (created − exited) per second.
    pub growth_per_s: Option<f64>,
    /// Of `count`: proven leaked by the leak proof; parked at least the
    /// threshold but not proven (suspects); parked for less.
    pub proven_leaked: usize,
    pub suspects_unproven: usize,
    pub parked: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct Growth {
    pub start_function: String,
    pub created_at: Option<Frame>,
    pub created: u64,
    pub exited: u64,
    pub live_at_end: u64,
    /// (created − exited) / trace duration.
    pub net_per_s: f64,
    /// Least-squares slope of the site's live count over the trace.
    pub live_slope_per_s: Option<f64>,
    /// Live count kept rising across the whole trace (leak pattern 10).
    pub unbounded: bool,
    pub description: Option<String>,
}

#[cfg(test)]
mod tests;
