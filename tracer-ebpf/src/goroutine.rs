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
//! A park is seen after `runtime.gopark`'s prologue (once per call, with
//! the frame set up, so the walk includes gopark's caller). Its channels
//! are those of the `g.waiting` sudog list: the first `WAIT_CHANS` in the
//! park event, the rest of a large `select` in a `GoParkChans` event.
//!
//! Each program reads the `g` fields it needs with one copy of a window that
//! covers them (`Config::g_window_*`): on some hosts a user-memory read costs
//! as much as the rest of a program.

use aya_ebpf::{
    macros::{map, uprobe},
    maps::{Array, PerCpuArray},
    programs::ProbeContext,
};
use tracer_common::{
    CONFIG_FLAG_G_WINDOW, CONFIG_FLAG_PARENT_GOID, CONFIG_FLAG_SUDOG_WINDOW,
    CONFIG_FLAG_WAIT_CHANS, COUNTER_PARENTS_LOST, COUNTER_WAIT_CHANS_TRUNCATED, Config,
    G_WINDOW_MAX, GoCreateEvent, GoExitEvent, GoIdentity, GoParkChansEvent, GoParkEvent,
    GoReadyEvent, MORE_WAIT_CHANS, NO_STACK, Program, SUDOG_WINDOW_MAX, WAIT_CHANS,
};

use crate::{
    envelope::emit,
    goabi::{arg, current_g, return_address},
    maps::bump,
    probe::{Probe, run},
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
fn read_g(p: &Probe, cfg: &Config, g: u64, parent_fallback: u64) -> GFields {
    let has_parent = cfg.flags & CONFIG_FLAG_PARENT_GOID != 0;
    let has_waiting = cfg.flags & CONFIG_FLAG_WAIT_CHANS != 0;
    if cfg.flags & CONFIG_FLAG_G_WINDOW != 0
        && let Some(w) = copy_g_window(p, cfg, g)
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
            goid: p.read_u64(g + cfg.g_goid),
            parent_goid: if has_parent {
                p.read_u64(g + cfg.g_parent_goid)
            } else {
                parent_fallback
            },
            gopc: p.read_u64(g + cfg.g_gopc),
            startpc: p.read_u64(g + cfg.g_startpc),
        },
        waiting: if has_waiting {
            p.read_u64(g + cfg.g_waiting)
        } else {
            0
        },
    }
}

#[inline(always)]
fn copy_g_window(p: &Probe, cfg: &Config, g: u64) -> Option<&'static [u64; G_WORDS]> {
    let len = cfg.g_window_len;
    if g == 0 || len == 0 || len > G_WINDOW_MAX {
        return None;
    }
    let buf = G_COPY.get_ptr_mut(0)?;
    // SAFETY: the per-CPU slot holds G_WINDOW_MAX bytes and len is at most
    // that. On failure the helper zeroes it and the caller falls back to
    // field reads.
    let ok = unsafe { p.read_into(buf.cast(), len, g + cfg.g_window_base as u64) };
    // SAFETY: initialised by the copy.
    ok.then(|| unsafe { &*buf })
}

/// `runtime.newproc` entry, on the creating goroutine (Go < 1.21, and
/// arm64 before Go 1.25).
#[uprobe]
pub fn go_newproc(ctx: ProbeContext) -> u32 {
    run(&ctx, Program::GoNewproc, |p, cfg| {
        let (stack_id, caller_pc) = if CREATION_STACK_AT_NEWPROC {
            (user_stack(p), return_address(p))
        } else {
            (NO_STACK, 0)
        };
        let stash = NewprocStash {
            tid: p.tid,
            armed: 1,
            goid: p.read_u64(current_g(&ctx) + cfg.g_goid),
            stack_id,
            _pad: 0,
            caller_pc,
        };
        // An entry probe can fire twice for one call (the prologue re-enters
        // after stack growth): overwriting the thread's slot deduplicates.
        if let Some(slot) = NEWPROC.get_ptr_mut(p.tid % NEWPROC_SLOTS) {
            // SAFETY: an array slot; only this thread's newproc1 reads it back.
            unsafe { *slot = stash };
        }
    })
}

/// What `go_newproc` stashed on this thread, taken (disarmed), if any. A
/// slot another thread armed since leaves this creation's parent unknown
/// (counted when the parent comes from the stash).
#[inline(always)]
fn take_stash(p: &Probe, parent_from_stash: bool) -> Option<NewprocStash> {
    let slot = NEWPROC.get_ptr_mut(p.tid % NEWPROC_SLOTS)?;
    // SAFETY: an array slot, read and disarmed at once.
    let s = unsafe { &mut *slot };
    if s.armed != 1 {
        if parent_from_stash {
            p.skipped("no newproc entry stashed the creator");
        }
        return None;
    }
    if s.tid != p.tid {
        if parent_from_stash {
            bump(COUNTER_PARENTS_LOST);
            p.skipped("creator slot taken by another thread");
        }
        return None;
    }
    s.armed = 0;
    Some(*s)
}

/// Attached to every RET instruction of `runtime.newproc1`.
#[uprobe]
pub fn go_newproc1_ret(ctx: ProbeContext) -> u32 {
    run(&ctx, Program::GoNewproc1Ret, |p, cfg| {
        let parent_from_stash = cfg.flags & CONFIG_FLAG_PARENT_GOID == 0;
        let stash = take_stash(p, parent_from_stash);
        let parent = match stash {
            Some(s) if parent_from_stash => s.goid,
            _ => 0,
        };
        // The stack walk before the paths below: verified once, not per path.
        let (stack_id, caller_pc) = match stash {
            Some(s) if s.stack_id != NO_STACK => (s.stack_id, s.caller_pc),
            _ => (user_stack(p), 0),
        };
        let newg = arg(&ctx, 0);
        if newg == 0 {
            p.skipped("newproc1 returned no g");
            return;
        }
        let g = read_g(p, cfg, newg, parent).id;
        emit(p, |ev: &mut GoCreateEvent| {
            ev.g = g;
            ev.stack_id = stack_id;
            ev._pad = 0;
            // From newproc1 the walk includes newproc's return address;
            // from newproc's entry it does not (stashed with the stack).
            ev.caller_pc = caller_pc;
        });
    })
}

/// A sudog's channel (`c`) and the next sudog of the wait list (`waitlink`).
#[inline(always)]
fn sudog(p: &Probe, cfg: &Config, sg: u64) -> (u64, u64) {
    let windowed = cfg.flags & CONFIG_FLAG_SUDOG_WINDOW != 0
        && cfg.sudog_window_len > 0
        && cfg.sudog_window_len <= SUDOG_WINDOW_MAX;
    if windowed {
        let mut w = [0u64; SUDOG_WORDS];
        // SAFETY: w holds SUDOG_WINDOW_MAX bytes, the length is at most
        // that; a failed read leaves zeroes (ends the walk).
        unsafe {
            p.read_into(
                w.as_mut_ptr().cast(),
                cfg.sudog_window_len,
                sg + cfg.sudog_window_base as u64,
            )
        };
        let base = cfg.sudog_window_base;
        (
            word(&w, base, cfg.sudog_c),
            word(&w, base, cfg.sudog_waitlink),
        )
    } else {
        (
            p.read_u64(sg + cfg.sudog_c),
            p.read_u64(sg + cfg.sudog_waitlink),
        )
    }
}

/// The first channels of the goroutine's `g.waiting` sudog list (set by
/// chanrecv, chansend and selectgo before they park), and the sudog the
/// list goes on with (0 at its end).
#[inline(always)]
fn waiting_chans(p: &Probe, cfg: &Config, waiting: u64) -> ([u64; WAIT_CHANS], u64) {
    let mut chans = [0u64; WAIT_CHANS];
    if cfg.flags & CONFIG_FLAG_WAIT_CHANS == 0 {
        return (chans, 0);
    }
    let mut sg = waiting;
    for slot in chans.iter_mut() {
        if sg == 0 {
            break;
        }
        (*slot, sg) = sudog(p, cfg, sg);
    }
    (chans, sg)
}

/// The rest of a long wait list, from sudog `sg` on, as a `GoParkChans`
/// event; a list longer than `MAX_WAIT_CHANS` is cut (counted).
#[inline(always)]
fn more_chans(p: &Probe, cfg: &Config, goid: u64, mut sg: u64) {
    emit(p, |ev: &mut GoParkChansEvent| {
        ev.goid = goid;
        let mut nr = 0;
        for i in 0..MORE_WAIT_CHANS {
            if sg == 0 {
                break;
            }
            (ev.chans[i], sg) = sudog(p, cfg, sg);
            nr = i + 1;
        }
        ev.nr = nr as u32;
        ev.truncated = (sg != 0) as u32;
        if sg != 0 {
            bump(COUNTER_WAIT_CHANS_TRUNCATED);
            p.skipped("wait list longer than MAX_WAIT_CHANS");
        }
    });
}

/// `runtime.gopark(unlockf, lock, reason, traceReason, traceskip)`, after
/// its prologue, on the parking goroutine.
#[uprobe]
pub fn go_park(ctx: ProbeContext) -> u32 {
    run(&ctx, Program::GoPark, |p, cfg| {
        // The stack walk first: verified once, not once per path below.
        let stack_id = user_stack(p);
        let g = read_g(p, cfg, current_g(&ctx), 0);
        let reason = (arg(&ctx, 2) & 0xff) as u32;
        let caller_pc = return_address(p);
        let mut rest = 0;
        let sent = emit(p, |ev: &mut GoParkEvent| {
            ev.g = g.id;
            ev.stack_id = stack_id;
            ev.reason = reason;
            ev.caller_pc = caller_pc;
            (ev.chans, rest) = waiting_chans(p, cfg, g.waiting);
        });
        if sent && rest != 0 {
            more_chans(p, cfg, g.id.goid, rest);
        }
    })
}

/// `runtime.ready(gp, traceskip, next)` entry: gp becomes runnable.
#[uprobe]
pub fn go_ready(ctx: ProbeContext) -> u32 {
    run(&ctx, Program::GoReady, |p, cfg| {
        let gp = arg(&ctx, 0);
        if gp == 0 {
            p.skipped("ready of a null g");
            return;
        }
        let goid = p.read_u64(gp + cfg.g_goid);
        let waker_goid = p.read_u64(current_g(&ctx) + cfg.g_goid);
        emit(p, |ev: &mut GoReadyEvent| {
            ev.goid = goid;
            ev.waker_goid = waker_goid;
        });
    })
}

/// `runtime.goexit1` entry, on the exiting goroutine.
#[uprobe]
pub fn go_exit(ctx: ProbeContext) -> u32 {
    run(&ctx, Program::GoExit, |p, cfg| {
        let goid = p.read_u64(current_g(&ctx) + cfg.g_goid);
        emit(p, |ev: &mut GoExitEvent| ev.goid = goid);
    })
}
