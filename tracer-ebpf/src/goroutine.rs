//! Goroutine lifecycle probes: create, park, ready, exit.
//!
//! Userspace half: `tracer/src/probe/goroutine.rs` (which symbols to attach
//! and where).
//!
//! Creation takes three hooks because no single point sees everything:
//! - `runtime.newproc` entry runs on the creating goroutine: its user stack
//!   and goid are stashed per thread;
//! - `runtime.newproc1` entry runs on g0 (inside systemstack): `callergp` is
//!   its second argument, matched against the stash;
//! - uprobes on every RET of `runtime.newproc1` (never a uretprobe: Go moves
//!   stacks) read the new `*g` from the first result register.

use aya_ebpf::{
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns},
    macros::{map, uprobe},
    maps::LruHashMap,
    programs::ProbeContext,
};
use tracer_common::{
    CONFIG_FLAG_PARENT_GOID, CONFIG_FLAG_WAIT_CHANS, Config, EventHeader, EventKind, GoCreateEvent,
    GoExitEvent, GoIdentity, GoParkEvent, GoReadyEvent, NO_STACK, WAIT_CHANS,
};

use crate::{
    goabi::{arg, current_g, read_u64, return_address},
    maps::{EVENTS, bump, config, target_thread},
    stacks::user_stack,
};

/// Stashed at `newproc` entry, keyed by pid_tgid.
#[derive(Clone, Copy)]
struct NewprocStash {
    goid: u64,
    caller_pc: u64,
    stack_id: i32,
}

/// Stashed at `newproc1` entry for its RET probes, keyed by pid_tgid.
#[derive(Clone, Copy)]
struct PendingCreate {
    parent_goid: u64,
    caller_pc: u64,
    stack_id: i32,
}

#[map]
static NEWPROC: LruHashMap<u64, NewprocStash> = LruHashMap::with_max_entries(4096, 0);

#[map]
static PENDING_CREATE: LruHashMap<u64, PendingCreate> = LruHashMap::with_max_entries(4096, 0);

#[inline(always)]
pub fn header(kind: EventKind, tgid: u32, tid: u32) -> EventHeader {
    EventHeader {
        kind: kind as u32,
        tid,
        tgid,
        // SAFETY: plain helpers with no arguments.
        cpu: unsafe { bpf_get_smp_processor_id() },
        ts_ns: unsafe { bpf_ktime_get_ns() },
    }
}

/// Writes `ev` to the ring buffer, or counts it as dropped for `kind`.
#[inline(always)]
fn emit<T: 'static>(kind: EventKind, ev: T) {
    match EVENTS.reserve::<T>(0) {
        Some(mut entry) => {
            entry.write(ev);
            entry.submit(crate::maps::wakeup_flags());
        }
        None => bump(kind.index()),
    }
}

#[inline(always)]
fn identity(cfg: &Config, g: u64, parent_fallback: u64) -> GoIdentity {
    let parent_goid = if cfg.flags & CONFIG_FLAG_PARENT_GOID != 0 {
        read_u64(g + cfg.g_parent_goid)
    } else {
        parent_fallback
    };
    GoIdentity {
        goid: read_u64(g + cfg.g_goid),
        parent_goid,
        gopc: read_u64(g + cfg.g_gopc),
        startpc: read_u64(g + cfg.g_startpc),
    }
}

#[uprobe]
pub fn go_newproc(ctx: ProbeContext) -> u32 {
    let cfg = config();
    let Some((tgid, tid)) = target_thread(&cfg) else {
        return 0;
    };
    let stash = NewprocStash {
        goid: read_u64(current_g(&ctx) + cfg.g_goid),
        caller_pc: return_address(&ctx),
        stack_id: user_stack(&ctx, tgid, tid),
    };
    let key = ((tgid as u64) << 32) | tid as u64;
    // An entry probe can fire twice for one call (the prologue re-enters
    // after stack growth): overwriting the per-thread slot deduplicates.
    let _ = NEWPROC.insert(key, stash, 0);
    0
}

#[uprobe]
pub fn go_newproc1(ctx: ProbeContext) -> u32 {
    let cfg = config();
    let Some((tgid, tid)) = target_thread(&cfg) else {
        return 0;
    };
    let key = ((tgid as u64) << 32) | tid as u64;
    let callergp = arg(&ctx, 1);
    let parent_goid = if callergp != 0 {
        read_u64(callergp + cfg.g_goid)
    } else {
        0
    };
    let mut pending = PendingCreate {
        parent_goid,
        caller_pc: 0,
        stack_id: NO_STACK,
    };
    // SAFETY: the value is copied out before any other map operation.
    if let Some(stash) = unsafe { NEWPROC.get(key) }
        && stash.goid == parent_goid
    {
        pending.caller_pc = stash.caller_pc;
        pending.stack_id = stash.stack_id;
    }
    let _ = NEWPROC.remove(key);
    let _ = PENDING_CREATE.insert(key, pending, 0);
    0
}

/// Attached to every RET instruction of `runtime.newproc1`.
#[uprobe]
pub fn go_newproc1_ret(ctx: ProbeContext) -> u32 {
    let cfg = config();
    let Some((tgid, tid)) = target_thread(&cfg) else {
        return 0;
    };
    let key = ((tgid as u64) << 32) | tid as u64;
    // SAFETY: copied out immediately.
    let pending = unsafe { PENDING_CREATE.get(key) }.copied();
    let _ = PENDING_CREATE.remove(key);
    let newg = arg(&ctx, 0);
    if newg == 0 {
        return 0;
    }
    let (parent, caller_pc, stack_id) = match pending {
        Some(p) => (p.parent_goid, p.caller_pc, p.stack_id),
        None => (0, 0, NO_STACK),
    };
    emit(
        EventKind::GoCreate,
        GoCreateEvent {
            header: header(EventKind::GoCreate, tgid, tid),
            g: identity(&cfg, newg, parent),
            stack_id,
            _pad: 0,
            caller_pc,
        },
    );
    0
}

/// Channels in the goroutine's `g.waiting` sudog list (set by chanrecv,
/// chansend and selectgo before they park).
#[inline(always)]
fn waiting_chans(cfg: &Config, g: u64) -> [u64; WAIT_CHANS] {
    let mut chans = [0u64; WAIT_CHANS];
    if cfg.flags & CONFIG_FLAG_WAIT_CHANS == 0 {
        return chans;
    }
    let mut sg = read_u64(g + cfg.g_waiting);
    for slot in chans.iter_mut() {
        if sg == 0 {
            break;
        }
        *slot = read_u64(sg + cfg.sudog_c);
        sg = read_u64(sg + cfg.sudog_waitlink);
    }
    chans
}

/// `runtime.gopark(unlockf, lock, reason, traceReason, traceskip)` entry, on
/// the parking goroutine.
#[uprobe]
pub fn go_park(ctx: ProbeContext) -> u32 {
    let cfg = config();
    let Some((tgid, tid)) = target_thread(&cfg) else {
        return 0;
    };
    let g = current_g(&ctx);
    emit(
        EventKind::GoPark,
        GoParkEvent {
            header: header(EventKind::GoPark, tgid, tid),
            g: identity(&cfg, g, 0),
            stack_id: user_stack(&ctx, tgid, tid),
            reason: (arg(&ctx, 2) & 0xff) as u32,
            caller_pc: return_address(&ctx),
            chans: waiting_chans(&cfg, g),
        },
    );
    0
}

/// `runtime.ready(gp, traceskip, next)` entry: gp becomes runnable.
#[uprobe]
pub fn go_ready(ctx: ProbeContext) -> u32 {
    let cfg = config();
    let Some((tgid, tid)) = target_thread(&cfg) else {
        return 0;
    };
    let gp = arg(&ctx, 0);
    if gp == 0 {
        return 0;
    }
    emit(
        EventKind::GoReady,
        GoReadyEvent {
            header: header(EventKind::GoReady, tgid, tid),
            goid: read_u64(gp + cfg.g_goid),
            waker_goid: read_u64(current_g(&ctx) + cfg.g_goid),
        },
    );
    0
}

/// `runtime.goexit1` entry, on the exiting goroutine.
#[uprobe]
pub fn go_exit(ctx: ProbeContext) -> u32 {
    let cfg = config();
    let Some((tgid, tid)) = target_thread(&cfg) else {
        return 0;
    };
    emit(
        EventKind::GoExit,
        GoExitEvent {
            header: header(EventKind::GoExit, tgid, tid),
            goid: read_u64(current_g(&ctx) + cfg.g_goid),
        },
    );
    0
}
