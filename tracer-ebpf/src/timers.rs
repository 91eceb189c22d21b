//! Timer probes: which tickers and timers start and stop (leak pattern 4).
//!
//! Userspace half: `tracer/src/probe/timers.rs`. Go ≤ 1.22 starts a
//! Ticker's embedded runtime timer with `time.startTimer(*timer)`; Go 1.23+
//! allocates it in `time.newTimer(when, period, f, arg, c)`, which returns it
//! (read on its RET instructions). `time.stopTimer(t)` exists in both.

use aya_ebpf::{
    macros::{map, uprobe},
    maps::LruHashMap,
    programs::ProbeContext,
};
use tracer_common::{EventKind, TimerStartEvent, TimerStopEvent};

use crate::{
    goabi::{arg, current_g, read_u64, return_address},
    goroutine::header,
    maps::{config, reserve, target_thread},
    stacks::user_stack,
};

/// `time.startTimer(t *runtime.timer)` entry (Go ≤ 1.22).
#[uprobe]
pub fn go_timer_start(ctx: ProbeContext) -> u32 {
    let cfg = config();
    let Some((tgid, tid)) = target_thread(&cfg) else {
        return 0;
    };
    let stack_id = user_stack(&ctx, tgid, tid);
    let t = arg(&ctx, 0);
    let Some(mut entry) = reserve::<TimerStartEvent>(EventKind::TimerStart) else {
        return 0;
    };
    entry.write(TimerStartEvent {
        header: header(EventKind::TimerStart, tgid, tid),
        goid: read_u64(current_g(&ctx) + cfg.g_goid),
        timer: t,
        period: read_u64(t + cfg.timer_period) as i64,
        func: read_u64(read_u64(t + cfg.timer_f)),
        // arg is an `any`: (type, data); data is the channel.
        chan: read_u64(t + cfg.timer_arg + 8),
        stack_id,
        _pad: 0,
        caller_pc: return_address(&ctx),
    });
    entry.submit(crate::maps::wakeup_flags());
    0
}

/// A `time.newTimer` call in flight, by goid.
#[derive(Clone, Copy)]
struct NewTimer {
    period: i64,
    func: u64,
    chan: u64,
    caller_pc: u64,
    stack_id: i32,
}

#[map]
static NEW_TIMERS: LruHashMap<u64, NewTimer> = LruHashMap::with_max_entries(4096, 0);

/// `time.newTimer(when, period, f, arg any, c)` entry (Go 1.23+).
#[uprobe]
pub fn go_timer_new(ctx: ProbeContext) -> u32 {
    let cfg = config();
    let Some((tgid, tid)) = target_thread(&cfg) else {
        return 0;
    };
    let stack_id = user_stack(&ctx, tgid, tid);
    let goid = read_u64(current_g(&ctx) + cfg.g_goid);
    let pending = NewTimer {
        period: arg(&ctx, 1) as i64,
        // f is a func value: a pointer to the closure, whose first word is the code.
        func: read_u64(arg(&ctx, 2)),
        chan: arg(&ctx, 4),
        caller_pc: return_address(&ctx),
        stack_id,
    };
    let _ = NEW_TIMERS.insert(goid, pending, 0);
    0
}

/// Every RET of `time.newTimer`: the timer is the first result.
#[uprobe]
pub fn go_timer_new_ret(ctx: ProbeContext) -> u32 {
    let cfg = config();
    let Some((tgid, tid)) = target_thread(&cfg) else {
        return 0;
    };
    let goid = read_u64(current_g(&ctx) + cfg.g_goid);
    // SAFETY: copied out at once.
    let Some(p) = (unsafe { NEW_TIMERS.get(goid) }).copied() else {
        return 0;
    };
    let _ = NEW_TIMERS.remove(goid);
    let Some(mut entry) = reserve::<TimerStartEvent>(EventKind::TimerStart) else {
        return 0;
    };
    entry.write(TimerStartEvent {
        header: header(EventKind::TimerStart, tgid, tid),
        goid,
        timer: arg(&ctx, 0),
        period: p.period,
        func: p.func,
        chan: p.chan,
        stack_id: p.stack_id,
        _pad: 0,
        caller_pc: p.caller_pc,
    });
    entry.submit(crate::maps::wakeup_flags());
    0
}

/// `time.stopTimer(t)` entry.
#[uprobe]
pub fn go_timer_stop(ctx: ProbeContext) -> u32 {
    let cfg = config();
    let Some((tgid, tid)) = target_thread(&cfg) else {
        return 0;
    };
    if let Some(mut entry) = reserve::<TimerStopEvent>(EventKind::TimerStop) {
        entry.write(TimerStopEvent {
            header: header(EventKind::TimerStop, tgid, tid),
            goid: read_u64(current_g(&ctx) + cfg.g_goid),
            timer: arg(&ctx, 0),
        });
        entry.submit(crate::maps::wakeup_flags());
    }
    0
}
