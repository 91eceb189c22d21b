//! Goroutine lifecycle probes: create, park, ready, exit.
//!
//! Userspace half: `tracer/src/probe/goroutine.rs` (which symbols to attach
//! and where).
//!
//! Creation is seen at every RET of `runtime.newproc1` (uprobes on the RET
//! instructions, never a uretprobe: Go moves stacks), which reads the new
//! `*g` from the first result register. `newproc1` runs on g0 inside
//! `systemstack`, which switches stacks without touching the frame pointer,
//! so the frame-pointer walk from there goes on through `runtime.newproc`
//! into the creating goroutine's stack: the creation stack needs no probe on
//! the creator. The creator's goid is `g.parentGoid` (Go 1.21+); before 1.21
//! a `runtime.newproc` entry probe stashes it per thread for the RET probe
//! (the same thread runs both). On arm64 before Go 1.25 `systemstack` breaks
//! the frame-pointer chain, and that entry probe stashes the creation stack
//! too.
//!
//! Each program reads the `g` fields it needs with one copy of a window that
//! covers them (`Config::g_window_*`): on some hosts a user-memory read costs
//! as much as the rest of a program.

use aya_ebpf::{
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns, generated::bpf_probe_read_user},
    macros::{map, uprobe},
    maps::{Array, PerCpuArray},
    programs::ProbeContext,
};
use tracer_common::{
    CONFIG_FLAG_G_WINDOW, CONFIG_FLAG_PARENT_GOID, CONFIG_FLAG_SUDOG_WINDOW,
    CONFIG_FLAG_WAIT_CHANS, Config, EventHeader, EventKind, G_WINDOW_MAX, GoCreateEvent,
    GoExitEvent, GoIdentity, GoParkEvent, GoReadyEvent, NO_STACK, SUDOG_WINDOW_MAX, WAIT_CHANS,
};

use crate::{
    goabi::{arg, current_g, read_u64, return_address},
    maps::{COUNTER_PARENTS_LOST, EVENTS, bump, config, target_thread},
    stacks::user_stack,
};

/// Stashed at `newproc` entry (Go < 1.21, and arm64 before Go 1.25) for
/// the RET probes of `newproc1`, in the slot of the thread
/// (`tid % NEWPROC_SLOTS`); `tid` tells a slot's owner.
#[derive(Clone, Copy)]
struct NewprocStash {
    tid: u32,
    /// 1 from `newproc` entry until a `newproc1` RET takes it.
    armed: u32,
    /// The creator's goid.
    goid: u64,
    /// arm64: the creation stack, walked here on the creating goroutine
    /// (see [`CREATION_STACK_AT_NEWPROC`]), and the return address the walk
    /// from an entry misses; `NO_STACK` and 0 elsewhere.
    stack_id: i32,
    _pad: u32,
    caller_pc: u64,
}

/// arm64's `systemstack` before Go 1.25 loads g0's frame pointer, so the
/// walk from `newproc1` (on g0) never reaches the creator's frames; the
/// `newproc` entry probe (attached there only on such binaries) walks them.
const CREATION_STACK_AT_NEWPROC: bool = cfg!(bpf_target_arch = "aarch64");

const NEWPROC_SLOTS: u32 = 4096;

#[map]
static NEWPROC: Array<NewprocStash> = Array::with_max_entries(NEWPROC_SLOTS, 0);

const G_WORDS: usize = (G_WINDOW_MAX / 8) as usize;
const SUDOG_WORDS: usize = (SUDOG_WINDOW_MAX / 8) as usize;

/// Per-CPU landing place of a `g` window copy (uprobe programs run with
/// preemption off, so a program run owns its CPU's slot).
#[map]
static G_COPY: PerCpuArray<[u64; G_WORDS]> = PerCpuArray::with_max_entries(1, 0);

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

/// The `g` fields the lifecycle programs use.
struct GFields {
    id: GoIdentity,
    waiting: u64,
}

/// Word at field offset `off` of a window copied from `base`.
#[inline(always)]
fn word<const N: usize>(w: &[u64; N], base: u32, off: u64) -> u64 {
    w[(off.wrapping_sub(base as u64) >> 3) as usize & (N - 1)]
}

#[inline(always)]
fn read_g(cfg: &Config, g: u64, parent_fallback: u64) -> GFields {
    let has_parent = cfg.flags & CONFIG_FLAG_PARENT_GOID != 0;
    let has_waiting = cfg.flags & CONFIG_FLAG_WAIT_CHANS != 0;
    if cfg.flags & CONFIG_FLAG_G_WINDOW != 0
        && let Some(w) = copy_g_window(cfg, g)
    {
        let base = cfg.g_window_base;
        return GFields {
            id: GoIdentity {
                goid: word(w, base, cfg.g_goid),
                parent_goid: if has_parent {
                    word(w, base, cfg.g_parent_goid)
                } else {
                    parent_fallback
                },
                gopc: word(w, base, cfg.g_gopc),
                startpc: word(w, base, cfg.g_startpc),
            },
            waiting: if has_waiting {
                word(w, base, cfg.g_waiting)
            } else {
                0
            },
        };
    }
    GFields {
        id: GoIdentity {
            goid: read_u64(g + cfg.g_goid),
            parent_goid: if has_parent {
                read_u64(g + cfg.g_parent_goid)
            } else {
                parent_fallback
            },
            gopc: read_u64(g + cfg.g_gopc),
            startpc: read_u64(g + cfg.g_startpc),
        },
        waiting: if has_waiting {
            read_u64(g + cfg.g_waiting)
        } else {
            0
        },
    }
}

#[inline(always)]
fn copy_g_window(cfg: &Config, g: u64) -> Option<&'static [u64; G_WORDS]> {
    let len = cfg.g_window_len;
    if g == 0 || len == 0 || len > G_WINDOW_MAX {
        return None;
    }
    let buf = G_COPY.get_ptr_mut(0)?;
    // SAFETY: the per-CPU slot holds G_WINDOW_MAX bytes and len is at most
    // that; the helper validates the user address and fails cleanly.
    let r = unsafe {
        bpf_probe_read_user(
            buf.cast(),
            len,
            (g + cfg.g_window_base as u64) as *const core::ffi::c_void,
        )
    };
    // SAFETY: initialised by the copy (the helper zeroes it on failure).
    (r == 0).then(|| unsafe { &*buf })
}

/// `runtime.newproc` entry, on the creating goroutine (Go < 1.21 only).
#[uprobe]
pub fn go_newproc(ctx: ProbeContext) -> u32 {
    let cfg = config();
    let Some((tgid, tid)) = target_thread(&cfg) else {
        return 0;
    };
    let (stack_id, caller_pc) = if CREATION_STACK_AT_NEWPROC {
        (user_stack(&ctx, tgid, tid), return_address(&ctx))
    } else {
        (NO_STACK, 0)
    };
    let stash = NewprocStash {
        tid,
        armed: 1,
        goid: read_u64(current_g(&ctx) + cfg.g_goid),
        stack_id,
        _pad: 0,
        caller_pc,
    };
    // An entry probe can fire twice for one call (the prologue re-enters
    // after stack growth): overwriting the thread's slot deduplicates.
    if let Some(slot) = NEWPROC.get_ptr_mut(tid % NEWPROC_SLOTS) {
        // SAFETY: an array slot; only this thread's newproc1 reads it back.
        unsafe { *slot = stash };
    }
    0
}

/// What `go_newproc` stashed on this thread, taken (disarmed), if any. A
/// slot another thread armed since leaves this creation's parent unknown
/// (counted when the parent comes from the stash).
#[inline(always)]
fn take_stash(tid: u32, parent_from_stash: bool) -> Option<NewprocStash> {
    let slot = NEWPROC.get_ptr_mut(tid % NEWPROC_SLOTS)?;
    // SAFETY: an array slot, read and disarmed at once.
    let s = unsafe { &mut *slot };
    if s.armed != 1 {
        return None;
    }
    if s.tid != tid {
        if parent_from_stash {
            bump(COUNTER_PARENTS_LOST);
        }
        return None;
    }
    s.armed = 0;
    Some(*s)
}

/// Attached to every RET instruction of `runtime.newproc1`.
#[uprobe]
pub fn go_newproc1_ret(ctx: ProbeContext) -> u32 {
    let cfg = config();
    let Some((tgid, tid)) = target_thread(&cfg) else {
        return 0;
    };
    let parent_from_stash = cfg.flags & CONFIG_FLAG_PARENT_GOID == 0;
    let stash = take_stash(tid, parent_from_stash);
    let parent = match stash {
        Some(s) if parent_from_stash => s.goid,
        _ => 0,
    };
    // The stack walk before the paths below: verified once, not per path.
    let (stack_id, caller_pc) = match stash {
        Some(s) if s.stack_id != NO_STACK => (s.stack_id, s.caller_pc),
        _ => (user_stack(&ctx, tgid, tid), 0),
    };
    let newg = arg(&ctx, 0);
    if newg == 0 {
        return 0;
    }
    emit(
        EventKind::GoCreate,
        GoCreateEvent {
            header: header(EventKind::GoCreate, tgid, tid),
            g: read_g(&cfg, newg, parent).id,
            stack_id,
            _pad: 0,
            // The walk from newproc1 includes newproc's return address.
            caller_pc,
        },
    );
    0
}

/// Channels in the goroutine's `g.waiting` sudog list (set by chanrecv,
/// chansend and selectgo before they park).
#[inline(always)]
fn waiting_chans(cfg: &Config, waiting: u64) -> [u64; WAIT_CHANS] {
    let mut chans = [0u64; WAIT_CHANS];
    if cfg.flags & CONFIG_FLAG_WAIT_CHANS == 0 {
        return chans;
    }
    let windowed = cfg.flags & CONFIG_FLAG_SUDOG_WINDOW != 0
        && cfg.sudog_window_len > 0
        && cfg.sudog_window_len <= SUDOG_WINDOW_MAX;
    let mut sg = waiting;
    for slot in chans.iter_mut() {
        if sg == 0 {
            break;
        }
        if windowed {
            let mut w = [0u64; SUDOG_WORDS];
            // SAFETY: w holds SUDOG_WINDOW_MAX bytes, the length is at most
            // that; a failed read leaves zeroes (ends the walk).
            unsafe {
                bpf_probe_read_user(
                    w.as_mut_ptr().cast(),
                    cfg.sudog_window_len,
                    (sg + cfg.sudog_window_base as u64) as *const core::ffi::c_void,
                )
            };
            *slot = word(&w, cfg.sudog_window_base, cfg.sudog_c);
            sg = word(&w, cfg.sudog_window_base, cfg.sudog_waitlink);
        } else {
            *slot = read_u64(sg + cfg.sudog_c);
            sg = read_u64(sg + cfg.sudog_waitlink);
        }
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
    // The stack walk first: verified once, not once per path below.
    let stack_id = user_stack(&ctx, tgid, tid);
    let g = read_g(&cfg, current_g(&ctx), 0);
    emit(
        EventKind::GoPark,
        GoParkEvent {
            header: header(EventKind::GoPark, tgid, tid),
            g: g.id,
            stack_id,
            reason: (arg(&ctx, 2) & 0xff) as u32,
            caller_pc: return_address(&ctx),
            chans: waiting_chans(&cfg, g.waiting),
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
