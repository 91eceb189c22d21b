//! Runtime timers started and not (yet) stopped, keyed by timer pointer.

use super::HashMap;

use tracer_common::{TimerStartEvent, TimerStopEvent};

use super::goroutines::StackRef;
use crate::decode::Event;

#[derive(Clone, Debug)]
pub struct Timer {
    pub ptr: u64,
    pub period_ns: i64,
    /// Code address of the timer function.
    pub func: u64,
    pub chan: u64,
    pub created_ns: u64,
    pub creator_goid: u64,
    pub stack: Option<StackRef>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TimerStats {
    pub started: u64,
    pub stopped: u64,
    /// Stops of timers started before tracing began (or already stopped).
    pub unmatched_stops: u64,
}

#[derive(Default)]
pub struct TimerModel {
    live: HashMap<u64, Timer>,
    stats: TimerStats,
}

impl TimerModel {
    pub fn apply(&mut self, event: &Event) {
        match event {
            Event::TimerStart(e) => self.on_start(e),
            Event::TimerStop(e) => self.on_stop(e),
            _ => {}
        }
    }

    fn on_start(&mut self, e: &TimerStartEvent) {
        self.stats.started += 1;
        self.live.insert(
            e.timer,
            Timer {
                ptr: e.timer,
                period_ns: e.period,
                func: e.func,
                chan: e.chan,
                created_ns: e.header.ts_ns,
                creator_goid: e.goid,
                stack: StackRef::new(e.stack_id, e.caller_pc),
            },
        );
    }

    fn on_stop(&mut self, e: &TimerStopEvent) {
        match self.live.remove(&e.timer) {
            Some(_) => self.stats.stopped += 1,
            None => self.stats.unmatched_stops += 1,
        }
    }

    /// Timers started during the trace and never stopped. One-shot timers
    /// that fired are in here too: only periodic ones (tickers) say much.
    pub fn unstopped(&self) -> impl Iterator<Item = &Timer> {
        self.live.values()
    }

    pub fn stats(&self) -> &TimerStats {
        &self.stats
    }
}
