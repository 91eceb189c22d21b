//! A finished trace before symbolisation: what the target is, the model
//! rebuilt from its events, the raw stacks the model refers to and how the
//! trace ended. A live trace and a replayed recording both produce one;
//! `outputs` turns it into the report and the exports, so the two paths
//! cannot drift apart.

pub mod governor;
pub mod record;
pub mod sampled;
pub mod sampler;
pub mod session;
pub mod validate;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::Model;
use crate::model::existing::{SnapGoroutine, SnapshotInfo};
use crate::probe::counters::KernelCounters;

/// How a trace watches the target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Every probe, for the whole trace.
    #[default]
    Full,
    /// No probe: goroutine samples only.
    Sampled,
    /// Probes under an overhead budget: those that cost too much are
    /// detached, and samples carry on for what they gave.
    Budgeted,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::Sampled => "sampled",
            Mode::Budgeted => "budgeted",
        }
    }
}

/// Known at attach time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub pid: u32,
    /// Canonical path of the traced binary.
    pub exe: String,
    /// The binary's Go build id (`.note.go.buildid`), to find it again.
    pub build_id: Option<String>,
    pub go_version: String,
    pub arch: String,
    /// Why contexts were not traced; None when they were.
    pub contexts_not_traced: Option<String>,
    /// Why timers were not traced; None when they were.
    pub timers_not_traced: Option<String>,
    pub probes_attached: usize,
    /// Leak threshold the trace ran with (the default for `report`).
    pub leak_threshold_ns: u64,
    /// The goroutines read at attach (`--pid` only; the snapshot itself is
    /// the recording's SNAPSHOT frame).
    #[serde(default)]
    pub snapshot: Option<crate::model::existing::SnapshotInfo>,
    /// Recordings from before modes existed were full traces.
    #[serde(default)]
    pub mode: Mode,
}

/// Known when the trace ends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct End {
    /// "duration", "signal" or "target-exit".
    pub ended_by: String,
    /// How the target ended, if it did.
    pub exit: Option<String>,
    /// CLOCK_MONOTONIC ns of the trace window.
    pub start_ns: u64,
    pub end_ns: u64,
    /// Wall clock (unix ns) at `end_ns`.
    pub end_unix_ns: i64,
    pub events: u64,
    pub undecodable: u64,
    /// Runtime address minus binary address (non-zero for a PIE).
    pub load_bias: u64,
    pub kernel: KernelCounters,
    /// The leak proof run at the end of the trace (None: not run).
    #[serde(default)]
    pub proof: Option<crate::proof::Proof>,
    /// What was read while the command was held at its exit (`-- CMD`);
    /// None otherwise.
    #[serde(default)]
    pub at_exit: Option<AtExit>,
    /// The samples taken while the trace ran (none in full mode).
    #[serde(default)]
    pub samples: Option<sampler::SampleInfo>,
    /// When the goroutines were last seen as the model holds them, when
    /// that is before `end_ns`: the last sample of a sampled trace whose
    /// target exited. Blocked times and ages count up to it.
    #[serde(default)]
    pub state_ns: Option<u64>,
    /// What the probes cost the target, and what the overhead budget
    /// detached (none in sampled mode).
    #[serde(default)]
    pub budget: Option<crate::probe::budget::BudgetReport>,
    /// What holds the contexts and tickers the trace saw, from the proof's
    /// marks (None: the proof did not run).
    #[serde(default)]
    pub held: Option<crate::proof::held::Held>,
    /// The contexts of the parked goroutines, read from memory at the end
    /// of a sampled or budgeted trace (None in full mode).
    #[serde(default)]
    pub ctx_memory: Option<crate::ctxmem::FromMemory>,
    /// The runtime's timer heaps, read from memory at the end of a sampled
    /// or budgeted trace (None in full mode).
    #[serde(default)]
    pub timer_memory: Option<crate::timermem::FromMemory>,
}

/// The analysis of a command's last state, made while it was held at its
/// exit (see [`crate::process::ptrace`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AtExitAnalysis {
    /// The goroutine snapshot (its `error` says why there is none).
    pub snapshot: SnapshotInfo,
    /// The goroutines it read (their stacks are not kept).
    pub goroutines: Vec<SnapGoroutine>,
    /// The leak proof on that last state (lifted into [`End::proof`]).
    #[serde(default, skip)]
    pub proof: Option<crate::proof::Proof>,
    /// What holds the trace's contexts and tickers in that last state
    /// (lifted into [`End::held`]).
    #[serde(default, skip)]
    pub held: Option<crate::proof::held::Held>,
}

/// A hold at exit: which thread held it, for how long, and the analysis.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AtExit {
    /// The exiting thread the process was held by (its memory was read
    /// through `/proc/TID/mem`).
    pub tid: u32,
    pub held_ms: f64,
    /// The hold limit ran out: the process was let go before the analysis
    /// finished (its reads after that failed).
    pub timed_out: bool,
    pub analysis: AtExitAnalysis,
}

pub struct Capture {
    pub meta: Meta,
    pub model: Model,
    /// Raw user stacks (innermost first) by stack id: the eBPF walk's and
    /// the attach snapshot's.
    pub stacks: BTreeMap<i32, Vec<u64>>,
    pub end: End,
}
