//! What the user sees while a trace runs. The session calls its view once a
//! second with the model as it stands; views never change the model.
//!
//! - [`status::StatusLine`]: one refreshing line on a terminal's stderr
//!   (nothing otherwise), for `gotrace --pid N`.
//! - [`top::Top`]: `gotrace top`, a full-screen table, or plain lines when
//!   stdout is not a terminal.

pub mod status;
pub mod top;

use crate::model::Model;
use crate::probe::counters::KernelCounters;

/// The state of the trace at one refresh.
pub struct Tick<'m> {
    /// Seconds since the trace started.
    pub t_s: f64,
    pub model: &'m Model,
    pub events_total: u64,
    /// Events received since the previous tick, per second.
    pub events_per_s: f64,
    pub kernel: &'m KernelCounters,
    /// Runtime address minus binary address, once known (PIE).
    pub load_bias: u64,
    /// How the trace watches the target: its mode, the probes' cost and
    /// the budget, the samples.
    pub watch: WatchStatus,
}

pub trait View {
    fn tick(&mut self, tick: &Tick<'_>);
    /// The trace is over: restore the terminal.
    fn close(&mut self);
}

/// How the trace watches the target, as the live view shows it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WatchStatus {
    /// "full", "sampled" or "budgeted".
    pub mode: &'static str,
    /// None: no budget.
    pub max_pct: Option<f64>,
    /// The last window's estimate and the highest, % of the target's CPU.
    pub last_pct: f64,
    pub peak_pct: f64,
    /// "park/ready at 0.01s", in order.
    pub shed: Vec<String>,
    pub samples: u64,
}
