//! Runtime timer events (tickers and timers started and stopped).

use crate::EventHeader;

/// `EventKind::TimerStart`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimerStartEvent {
    pub header: EventHeader,
    pub goid: u64,
    /// The runtime timer (`*runtime.timer` / `*runtime.timeTimer`).
    pub timer: u64,
    /// Nanoseconds between ticks; 0 for one-shot timers.
    pub period: i64,
    /// The timer function (`time.sendTime` for Ticker/Timer channels).
    pub func: u64,
    /// The channel it sends on (the `arg` of sendTime).
    pub chan: u64,
    pub stack_id: i32,
    pub _pad: u32,
    pub caller_pc: u64,
}

/// `EventKind::TimerStop`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimerStopEvent {
    pub header: EventHeader,
    pub goid: u64,
    pub timer: u64,
}
