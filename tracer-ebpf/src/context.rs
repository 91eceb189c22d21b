//! Context probes: creation (`propagateCancel`), every cancel method, and the
//! Done channel of each context.
//!
//! Userspace half: `tracer/src/probe/context.rs`.
//!
//! Every cancelable context (WithCancel*, WithDeadline*, WithTimeout*,
//! AfterFunc) passes through `propagateCancel` — the public constructors are
//! partly inlined into user code, this internal is not. Every cancellation
//! passes through a `cancel` method; a parent's cancel calls its children's
//! `cancel` nested on the same goroutine, and the caller's return address
//! tells which path it was (CancelFunc, timer, propagation).

use aya_ebpf::{
    macros::{map, uprobe},
    maps::LruHashMap,
    programs::ProbeContext,
};
use tracer_common::{
    CANCEL_CAUSE_IS_ERR, CANCEL_CAUSE_MSG, CANCEL_ERR_CANCELED, CANCEL_ERR_DEADLINE,
    CANCEL_METHOD_AFTER_FUNC_CTX, CANCEL_METHOD_CANCEL_CTX, CANCEL_METHOD_TIMER_CTX, CAUSE_MSG_LEN,
    CONFIG_FLAG_CANCEL_CAUSE, Config, CtxCancelEvent, CtxCreateEvent, CtxDoneEvent, Program,
};

use crate::{
    envelope::emit,
    goabi::{arg, arg_in, current_g, regs_copy, return_address},
    probe::{Probe, run},
    stacks::user_stack,
};

/// `WithValue` wrappers skipped to find a context's real parent.
const MAX_VALUE_HOPS: u32 = 8;

#[uprobe]
pub fn go_ctx_create(ctx: ProbeContext) -> u32 {
    run(&ctx, Program::GoCtxCreate, |p, cfg| {
        // The stack walk first: verified once, not once per path below.
        let stack_id = user_stack(p);
        // propagateCancel's argument registers differ between Go versions.
        let Some(regs) = regs_copy(&ctx) else {
            p.skipped("registers not copied");
            return;
        };
        let pr = cfg.pc_parent_reg;
        let cr = cfg.pc_child_reg;
        let (mut parent_itab, mut parent_data) = (arg_in(regs, pr), arg_in(regs, pr + 1));
        let mut hops = 0;
        while hops < MAX_VALUE_HOPS && cfg.itab_value_ctx != 0 && parent_itab == cfg.itab_value_ctx
        {
            // valueCtx embeds its parent Context (itab, data) at offset 0.
            let next_itab = p.read_u64(parent_data);
            parent_data = p.read_u64(parent_data + 8);
            parent_itab = next_itab;
            hops += 1;
        }
        let child = arg_in(regs, cr + 1);
        let child_itab = arg_in(regs, cr);
        let goid = p.read_u64(current_g(&ctx) + cfg.g_goid);
        let caller_pc = return_address(p);
        // Only a timerCtx has a deadline (a binary without its itab makes
        // none). A cancelCtx is read before propagateCancel first writes to
        // it: in a fresh page not yet faulted in, any read of it fails.
        let (deadline_wall, deadline_ext) =
            if cfg.itab_timer_ctx != 0 && child_itab == cfg.itab_timer_ctx {
                (
                    p.read_u64(child + cfg.timer_deadline),
                    p.read_u64(child + cfg.timer_deadline + 8) as i64,
                )
            } else {
                (0, 0)
            };
        emit(p, |ev: &mut CtxCreateEvent| {
            ev.goid = goid;
            ev.ctx = child;
            ev.child_itab = child_itab;
            ev.parent_itab = parent_itab;
            ev.parent_data = parent_data;
            ev.value_hops = hops;
            ev.stack_id = stack_id;
            ev.caller_pc = caller_pc;
            ev.deadline_wall = deadline_wall;
            ev.deadline_ext = deadline_ext;
        });
    })
}

#[inline(always)]
fn on_cancel(ctx: &ProbeContext, prog: Program, method: u32) -> u32 {
    run(ctx, prog, |p, cfg| {
        // The stack walk first: verified once, not once per path below.
        let stack_id = user_stack(p);
        emit(p, |ev: &mut CtxCancelEvent| {
            fill_cancel(p, cfg, method, stack_id, ev)
        });
    })
}

/// Writes the event field by field straight into the ring buffer (it is too
/// large to build on the 512-byte BPF stack and copy).
#[inline(always)]
fn fill_cancel(p: &Probe, cfg: &Config, method: u32, stack_id: i32, ev: &mut CtxCancelEvent) {
    let ctx = p.ctx;
    let c = arg(ctx, 0);
    let (err_itab, err_data) = (arg(ctx, 2), arg(ctx, 3));
    let (cause_itab, cause_data) = if cfg.flags & CONFIG_FLAG_CANCEL_CAUSE != 0 {
        (arg(ctx, 4), arg(ctx, 5))
    } else {
        (0, 0)
    };
    let mut flags = 0;
    if cfg.canceled_var != 0
        && err_itab == p.read_u64(cfg.canceled_var)
        && err_data == p.read_u64(cfg.canceled_var + 8)
    {
        flags |= CANCEL_ERR_CANCELED;
    }
    if cfg.itab_deadline_exceeded != 0 && err_itab == cfg.itab_deadline_exceeded {
        flags |= CANCEL_ERR_DEADLINE;
    }
    if cause_itab == 0 || (cause_itab == err_itab && cause_data == err_data) {
        flags |= CANCEL_CAUSE_IS_ERR;
    }
    ev.goid = p.read_u64(current_g(ctx) + cfg.g_goid);
    ev.ctx = c;
    ev.method = method;
    ev.remove_from_parent = (arg(ctx, 1) & 0xff) as u32;
    ev.err_itab = err_itab;
    ev.err_data = err_data;
    ev.cause_itab = cause_itab;
    ev.cause_data = cause_data;
    ev.stack_id = stack_id;
    ev.caller_pc = return_address(p);
    // cancelCtx.done is an atomic.Value: (type, data); data is the channel.
    ev.done_chan = p.read_u64(c + cfg.ctx_done + 8);
    ev.cause_len = 0;
    ev._pad = 0;
    // errors.New and fmt.Errorf causes keep their message string at offset 0.
    let has_msg = cause_itab != 0
        && flags & CANCEL_CAUSE_IS_ERR == 0
        && (cause_itab == cfg.itab_error_string || cause_itab == cfg.itab_wrap_error);
    if has_msg {
        let ptr = p.read_u64(cause_data);
        let len = p.read_u64(cause_data + 8);
        // Only the string's own bytes (at most CAUSE_MSG_LEN): a short
        // message may end right before an unmapped page.
        let n = if len < CAUSE_MSG_LEN as u64 {
            len as u32
        } else {
            CAUSE_MSG_LEN as u32
        };
        // SAFETY: at most CAUSE_MSG_LEN bytes into the reserved record;
        // faults are counted (and leave no message).
        if unsafe { p.read_into(ev.cause_msg.as_mut_ptr(), n, ptr) } {
            ev.cause_len = n;
            flags |= CANCEL_CAUSE_MSG;
        }
    }
    ev.flags = flags;
}

#[uprobe]
pub fn go_ctx_cancel(ctx: ProbeContext) -> u32 {
    on_cancel(&ctx, Program::GoCtxCancel, CANCEL_METHOD_CANCEL_CTX)
}

#[uprobe]
pub fn go_ctx_cancel_timer(ctx: ProbeContext) -> u32 {
    on_cancel(&ctx, Program::GoCtxCancelTimer, CANCEL_METHOD_TIMER_CTX)
}

#[uprobe]
pub fn go_ctx_cancel_afterfunc(ctx: ProbeContext) -> u32 {
    on_cancel(
        &ctx,
        Program::GoCtxCancelAfterfunc,
        CANCEL_METHOD_AFTER_FUNC_CTX,
    )
}

/// Receiver of an in-flight `Done` call, by goid.
#[map]
static DONE_CALLS: LruHashMap<u64, u64> = LruHashMap::with_max_entries(4096, 0);

/// Last Done channel reported per context (so each is sent once).
#[map]
static DONE_SEEN: LruHashMap<u64, u64> = LruHashMap::with_max_entries(65536, 0);

/// On `Done`'s call `c.done.Store(d)` (the channel being made, once per
/// context): the `*atomic.Value` receiver is the first argument register,
/// the stored `any` the next two (type word, then the channel).
#[uprobe]
pub fn go_ctx_done_store(ctx: ProbeContext) -> u32 {
    run(&ctx, Program::GoCtxDoneStore, |p, cfg| {
        let value = arg(&ctx, 0);
        let chan = arg(&ctx, 2);
        if value == 0 || chan == 0 || value < cfg.ctx_done {
            p.skipped("Done's Store without a context or channel");
            return;
        }
        emit_done(p, value - cfg.ctx_done, chan);
    })
}

/// A context's Done channel, to userspace.
#[inline(always)]
fn emit_done(p: &Probe, ctx: u64, chan: u64) {
    emit(p, |ev: &mut CtxDoneEvent| {
        ev.ctx = ctx;
        ev.chan = chan;
    });
}

/// `(*cancelCtx|*timerCtx|*afterFuncCtx).Done` entry (the fallback when
/// `Done` has no direct call to `atomic.Value.Store`).
#[uprobe]
pub fn go_ctx_done(ctx: ProbeContext) -> u32 {
    run(&ctx, Program::GoCtxDone, |p, cfg| {
        let goid = p.read_u64(current_g(&ctx) + cfg.g_goid);
        let _ = DONE_CALLS.insert(goid, arg(&ctx, 0), 0);
    })
}

/// Every RET of a `Done` method: the channel is the first result.
#[uprobe]
pub fn go_ctx_done_ret(ctx: ProbeContext) -> u32 {
    run(&ctx, Program::GoCtxDoneRet, |p, cfg| {
        let goid = p.read_u64(current_g(&ctx) + cfg.g_goid);
        // SAFETY: copied out at once.
        let Some(c) = (unsafe { DONE_CALLS.get(goid) }).copied() else {
            p.skipped("Done returned without its entry seen");
            return;
        };
        let _ = DONE_CALLS.remove(goid);
        let chan = arg(&ctx, 0);
        if chan == 0 {
            return;
        }
        // SAFETY: copied out at once.
        if unsafe { DONE_SEEN.get(c) }.copied() == Some(chan) {
            return;
        }
        let _ = DONE_SEEN.insert(c, chan, 0);
        emit_done(p, c, chan);
    })
}
