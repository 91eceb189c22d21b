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
use tracer_common::{Program, TimerStartEvent, TimerStopEvent};

use crate::{
    envelope::emit,
    goabi::{arg, current_g, return_address},
    probe::{Probe, run},
    stacks::user_stack,
};

/// `time.startTimer(t *runtime.timer)` entry (Go ≤ 1.22).
#[uprobe]
pub fn go_timer_start(ctx: ProbeContext) -> u32 {
    run(&ctx, Program::GoTimerStart, |p, cfg| {
        let stack_id = user_stack(p);
        let t = arg(&ctx, 0);
        let start = NewTimer {
            period: p.read_u64(t + cfg.timer_period) as i64,
            func: p.read_u64(p.read_u64(t + cfg.timer_f)),
            // arg is an `any`: (type, data); data is the channel.
            chan: p.read_u64(t + cfg.timer_arg + 8),
            caller_pc: return_address(p),
            stack_id,
        };
        let goid = p.read_u64(current_g(&ctx) + cfg.g_goid);
        emit_start(p, goid, t, &start);
    })
}

/// A timer start, to userspace.
#[inline(always)]
fn emit_start(p: &Probe, goid: u64, timer: u64, t: &NewTimer) {
    emit(p, |ev: &mut TimerStartEvent| {
        ev.goid = goid;
        ev.timer = timer;
        ev.period = t.period;
        ev.func = t.func;
        ev.chan = t.chan;
        ev.stack_id = t.stack_id;
        ev._pad = 0;
        ev.caller_pc = t.caller_pc;
    });
}

/// A timer being started: what `time.newTimer` (Go 1.23+) is called with,
/// kept by goid until it returns the timer.
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
    run(&ctx, Program::GoTimerNew, |p, cfg| {
        let stack_id = user_stack(p);
        let goid = p.read_u64(current_g(&ctx) + cfg.g_goid);
        let pending = NewTimer {
            period: arg(&ctx, 1) as i64,
            // f is a func value: a pointer to the closure, whose first word is the code.
            func: p.read_u64(arg(&ctx, 2)),
            chan: arg(&ctx, 4),
            caller_pc: return_address(p),
            stack_id,
        };
        let _ = NEW_TIMERS.insert(goid, pending, 0);
    })
}

/// Every RET of `time.newTimer`: the timer is the first result.
#[uprobe]
pub fn go_timer_new_ret(ctx: ProbeContext) -> u32 {
    run(&ctx, Program::GoTimerNewRet, |p, cfg| {
        let goid = p.read_u64(current_g(&ctx) + cfg.g_goid);
        // SAFETY: copied out at once.
        let Some(t) = (unsafe { NEW_TIMERS.get(goid) }).copied() else {
            p.skipped("newTimer returned without its entry seen");
            return;
        };
        let _ = NEW_TIMERS.remove(goid);
        emit_start(p, goid, arg(&ctx, 0), &t);
    })
}

/// `time.stopTimer(t)` entry.
#[uprobe]
pub fn go_timer_stop(ctx: ProbeContext) -> u32 {
    run(&ctx, Program::GoTimerStop, |p, cfg| {
        let goid = p.read_u64(current_g(&ctx) + cfg.g_goid);
        let timer = arg(&ctx, 0);
        emit(p, |ev: &mut TimerStopEvent| {
            ev.goid = goid;
            ev.timer = timer;
        });
    })
}
