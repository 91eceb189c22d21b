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
    /// Starts that repeated the previous start of the same timer (the entry
    /// probe of `time.startTimer` fired again, see [`TimerModel::apply`]).
    pub duplicates: u64,
}

/// How soon a repeated start of a live timer counts as the same call.
const DUPLICATE_WINDOW_NS: u64 = 100_000_000;

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

    /// An entry uprobe fires a second time for one call when the function's
    /// prologue finds its stack guard tripped (stack growth, or a preemption
    /// request from sysmon, frequent on a slow machine) and re-runs the
    /// function from its entry after `morestack`. Go ≤ 1.22's
    /// `time.startTimer` is such an entry probe: a start of a timer that is
    /// still live, by the same goroutine, with the same period, function and
    /// channel, soon after the first one, is that same call again.
    fn on_start(&mut self, e: &TimerStartEvent) {
        if let Some(t) = self.live.get(&e.timer)
            && t.creator_goid == e.goid
            && t.period_ns == e.period
            && t.func == e.func
            && t.chan == e.chan
            && e.header.ts_ns.saturating_sub(t.created_ns) < DUPLICATE_WINDOW_NS
        {
            self.stats.duplicates += 1;
            return;
        }
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

#[cfg(test)]
mod tests {
    use tracer_common::{EventHeader, EventKind};

    use super::*;

    fn start(timer: u64, goid: u64, ts_ns: u64) -> Event {
        Event::TimerStart(TimerStartEvent {
            header: EventHeader {
                kind: EventKind::TimerStart as u32,
                ts_ns,
                ..Default::default()
            },
            goid,
            timer,
            period: 100_000_000,
            func: 0x4000,
            chan: 0xc000_0100,
            ..Default::default()
        })
    }

    fn stop(timer: u64) -> Event {
        Event::TimerStop(TimerStopEvent {
            header: EventHeader {
                kind: EventKind::TimerStop as u32,
                ..Default::default()
            },
            goid: 1,
            timer,
        })
    }

    /// A re-fired entry probe (same timer, goroutine and arguments, moments
    /// later) is one start; a restart after a stop, another goroutine's
    /// start or a start long after are real ones.
    #[test]
    fn repeated_entry_probe_counts_once() {
        let mut m = TimerModel::default();
        m.apply(&start(0xa0, 1, 1_000));
        m.apply(&start(0xa0, 1, 2_000_000)); // re-fired after morestack
        assert_eq!((m.stats().started, m.stats().duplicates), (1, 1));
        m.apply(&stop(0xa0));
        m.apply(&start(0xa0, 1, 3_000_000)); // reused after a stop
        m.apply(&start(0xa0, 2, 3_500_000)); // another goroutine
        m.apply(&start(0xa0, 2, 900_000_000)); // long after: a new timer
        let s = m.stats();
        assert_eq!((s.started, s.stopped, s.duplicates), (4, 1, 1));
        assert_eq!(m.unstopped().count(), 1);
    }
}
