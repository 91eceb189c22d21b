//! The goroutines that existed before a trace began, as read from the
//! target's memory at attach (`snapshot::take` reads them; this module only
//! says what was read, so the model can be seeded without knowing how).
//!
//! Stacks get ids of their own, far below any id the eBPF stack walk hands
//! out, and live in [`Snapshot::stacks`] in the same convention (innermost
//! first, the first pc exact, the rest return addresses), so everything
//! downstream symbolises them alike.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::goruntime::gstatus::GState;

/// Snapshot stack ids count down from here; the eBPF stack ids are ≥ 0 and
/// `NO_STACK` is -1.
pub const FIRST_STACK_ID: i32 = i32::MIN / 2;

/// Whether a stack id is one of a snapshot's.
pub fn is_snapshot_stack(id: i32) -> bool {
    id <= FIRST_STACK_ID
}

/// One goroutine as read. Addresses are the process's (load bias included).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapGoroutine {
    /// Where its g is in the target's memory (0 in recordings from before
    /// gotrace kept it).
    #[serde(default)]
    pub gp: u64,
    pub goid: u64,
    /// `g.parentGoid` (Go 1.21+).
    pub parent_goid: Option<u64>,
    pub gopc: u64,
    pub startpc: u64,
    pub state: GState,
    /// Raw `g.waitreason` of a parked goroutine (the target's numbering).
    pub wait_reason: Option<u8>,
    /// CLOCK_MONOTONIC ns it has been blocked since at least (`waitsince`:
    /// set by the first GC that saw it blocked); None when unknown.
    pub blocked_since_ns: Option<u64>,
    /// Its stack in [`Snapshot::stacks`]; None for running goroutines and
    /// those that kept changing while read.
    pub stack: Option<i32>,
}

/// What reading took and what it had to leave out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapStats {
    /// `len(allgs)`: every g ever allocated, free ones included.
    pub allgs: u64,
    /// Free gs (dead, idle): not goroutines.
    pub free: u64,
    /// Goroutines read.
    pub live: u64,
    /// Goroutines read again because they changed while being read.
    pub retried: u64,
    /// Goroutines that kept changing: kept, without a stack.
    pub unstable: u64,
    /// gs never read consistently (unreadable, bad status or goid): left out.
    pub skipped: u64,
    /// Stacks whose frame-pointer chain broke before the outermost frame.
    pub stacks_truncated: u64,
    /// Re-reads of the goroutine list (reallocated while read).
    pub list_retries: u64,
    /// pread calls.
    pub reads: u64,
    /// The highest goid any g holds, free ones included (the runtime does
    /// not clear it): about the last goid handed out, so its growth from
    /// one sample to the next counts the goroutines created in between,
    /// short-lived ones too (give or take the batch of 16 each P takes).
    #[serde(default)]
    pub max_goid: u64,
}

/// What the snapshot taken at attach gave (`trace.snapshot` in the report).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// Goroutines read (0 when it failed).
    pub goroutines: u64,
    pub took_ms: f64,
    /// Why there is none: the trace went on without it.
    pub error: Option<String>,
    pub stats: SnapStats,
}

impl SnapshotInfo {
    pub fn of(snap: &Snapshot) -> SnapshotInfo {
        SnapshotInfo {
            goroutines: snap.goroutines.len() as u64,
            took_ms: (snap.took_ns as f64 / 1e3).round() / 1e3,
            error: None,
            stats: snap.stats.clone(),
        }
    }

    pub fn failed(why: String) -> SnapshotInfo {
        SnapshotInfo {
            goroutines: 0,
            took_ms: 0.0,
            error: Some(why),
            stats: SnapStats::default(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// CLOCK_MONOTONIC ns when reading began, and how long it took.
    pub taken_ns: u64,
    pub took_ns: u64,
    /// Sorted by goid.
    pub goroutines: Vec<SnapGoroutine>,
    /// Raw stacks by id (see the module doc).
    pub stacks: BTreeMap<i32, Vec<u64>>,
    pub stats: SnapStats,
    /// The g pointers never read consistently (`stats.skipped` of them):
    /// whatever goroutine they hold is not in `goroutines`, though alive.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_gps: Vec<u64>,
}
