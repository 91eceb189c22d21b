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
    helpers::bpf_probe_read_user_buf,
    macros::{map, uprobe},
    maps::LruHashMap,
    programs::ProbeContext,
};
use tracer_common::{
    CANCEL_CAUSE_IS_ERR, CANCEL_CAUSE_MSG, CANCEL_ERR_CANCELED, CANCEL_ERR_DEADLINE,
    CANCEL_METHOD_AFTER_FUNC_CTX, CANCEL_METHOD_CANCEL_CTX, CANCEL_METHOD_TIMER_CTX, CAUSE_MSG_LEN,
    CONFIG_FLAG_CANCEL_CAUSE, Config, CtxCancelEvent, CtxCreateEvent, CtxDoneEvent, EventKind,
};

use crate::{
    goabi::{arg, arg_in, current_g, read_u64, regs_copy, return_address},
    goroutine::header,
    maps::{config, reserve, target_thread},
    stacks::user_stack,
};

/// `WithValue` wrappers skipped to find a context's real parent.
const MAX_VALUE_HOPS: u32 = 8;

#[uprobe]
pub fn go_ctx_create(ctx: ProbeContext) -> u32 {
    let cfg = config();
    let Some((tgid, tid)) = target_thread(&cfg) else {
        return 0;
    };
    // The stack walk first: verified once, not once per path below.
    let stack_id = user_stack(&ctx, tgid, tid);
    // propagateCancel's argument registers differ between Go versions.
    let Some(regs) = regs_copy(&ctx) else {
        return 0;
    };
    let p = cfg.pc_parent_reg;
    let c = cfg.pc_child_reg;
    let (mut parent_itab, mut parent_data) = (arg_in(regs, p), arg_in(regs, p + 1));
    let mut hops = 0;
    while hops < MAX_VALUE_HOPS && cfg.itab_value_ctx != 0 && parent_itab == cfg.itab_value_ctx {
        // valueCtx embeds its parent Context (itab, data) at offset 0.
        let next_itab = read_u64(parent_data);
        parent_data = read_u64(parent_data + 8);
        parent_itab = next_itab;
        hops += 1;
    }
    let child = arg_in(regs, c + 1);
    let child_itab = arg_in(regs, c);
    let Some(mut entry) = reserve::<CtxCreateEvent>(EventKind::CtxCreate) else {
        return 0;
    };
    entry.write(CtxCreateEvent {
        header: header(EventKind::CtxCreate, tgid, tid),
        goid: read_u64(current_g(&ctx) + cfg.g_goid),
        ctx: child,
        child_itab,
        parent_itab,
        parent_data,
        value_hops: hops,
        stack_id,
        caller_pc: return_address(&ctx),
        deadline_wall: read_u64(child + cfg.timer_deadline),
        deadline_ext: read_u64(child + cfg.timer_deadline + 8) as i64,
    });
    entry.submit(crate::maps::wakeup_flags());
    0
}

#[inline(always)]
fn on_cancel(ctx: &ProbeContext, method: u32) -> u32 {
    let cfg = config();
    let Some((tgid, tid)) = target_thread(&cfg) else {
        return 0;
    };
    // The stack walk first: verified once, not once per path below.
    let stack_id = user_stack(ctx, tgid, tid);
    let Some(mut entry) = reserve::<CtxCancelEvent>(EventKind::CtxCancel) else {
        return 0;
    };
    fill_cancel(ctx, &cfg, method, tgid, tid, stack_id, entry.as_mut_ptr());
    entry.submit(crate::maps::wakeup_flags());
    0
}

/// Writes the event field by field straight into the ring buffer (it is too
/// large to build on the 512-byte BPF stack and copy).
#[inline(always)]
fn fill_cancel(
    ctx: &ProbeContext,
    cfg: &Config,
    method: u32,
    tgid: u32,
    tid: u32,
    stack_id: i32,
    ev: *mut CtxCancelEvent,
) {
    let c = arg(ctx, 0);
    let (err_itab, err_data) = (arg(ctx, 2), arg(ctx, 3));
    let (cause_itab, cause_data) = if cfg.flags & CONFIG_FLAG_CANCEL_CAUSE != 0 {
        (arg(ctx, 4), arg(ctx, 5))
    } else {
        (0, 0)
    };
    let mut flags = 0;
    if cfg.canceled_var != 0
        && err_itab == read_u64(cfg.canceled_var)
        && err_data == read_u64(cfg.canceled_var + 8)
    {
        flags |= CANCEL_ERR_CANCELED;
    }
    if cfg.itab_deadline_exceeded != 0 && err_itab == cfg.itab_deadline_exceeded {
        flags |= CANCEL_ERR_DEADLINE;
    }
    if cause_itab == 0 || (cause_itab == err_itab && cause_data == err_data) {
        flags |= CANCEL_CAUSE_IS_ERR;
    }
    // SAFETY: `ev` points at a reserved, exclusively owned ring-buffer slot.
    let ev = unsafe { &mut *ev };
    ev.header = header(EventKind::CtxCancel, tgid, tid);
    ev.goid = read_u64(current_g(ctx) + cfg.g_goid);
    ev.ctx = c;
    ev.method = method;
    ev.remove_from_parent = (arg(ctx, 1) & 0xff) as u32;
    ev.err_itab = err_itab;
    ev.err_data = err_data;
    ev.cause_itab = cause_itab;
    ev.cause_data = cause_data;
    ev.stack_id = stack_id;
    ev.caller_pc = return_address(ctx);
    // cancelCtx.done is an atomic.Value: (type, data); data is the channel.
    ev.done_chan = read_u64(c + cfg.ctx_done + 8);
    ev.cause_len = 0;
    ev._pad = 0;
    // errors.New and fmt.Errorf causes keep their message string at offset 0.
    let has_msg = cause_itab != 0
        && flags & CANCEL_CAUSE_IS_ERR == 0
        && (cause_itab == cfg.itab_error_string || cause_itab == cfg.itab_wrap_error);
    if has_msg {
        let ptr = read_u64(cause_data);
        let len = read_u64(cause_data + 8);
        // SAFETY: fixed-size read into the reserved buffer; faults are reported.
        let read = unsafe { bpf_probe_read_user_buf(ptr as *const u8, &mut ev.cause_msg) };
        if read.is_ok() {
            ev.cause_len = if len < CAUSE_MSG_LEN as u64 {
                len as u32
            } else {
                CAUSE_MSG_LEN as u32
            };
            flags |= CANCEL_CAUSE_MSG;
        }
    }
    ev.flags = flags;
}

#[uprobe]
pub fn go_ctx_cancel(ctx: ProbeContext) -> u32 {
    on_cancel(&ctx, CANCEL_METHOD_CANCEL_CTX)
}

#[uprobe]
pub fn go_ctx_cancel_timer(ctx: ProbeContext) -> u32 {
    on_cancel(&ctx, CANCEL_METHOD_TIMER_CTX)
}

#[uprobe]
pub fn go_ctx_cancel_afterfunc(ctx: ProbeContext) -> u32 {
    on_cancel(&ctx, CANCEL_METHOD_AFTER_FUNC_CTX)
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
    let cfg = config();
    let Some((tgid, tid)) = target_thread(&cfg) else {
        return 0;
    };
    let value = arg(&ctx, 0);
    let chan = arg(&ctx, 2);
    if value == 0 || chan == 0 || value < cfg.ctx_done {
        return 0;
    }
    emit_done(tgid, tid, value - cfg.ctx_done, chan);
    0
}

/// A context's Done channel, to userspace.
#[inline(always)]
fn emit_done(tgid: u32, tid: u32, ctx: u64, chan: u64) {
    if let Some(mut entry) = reserve::<CtxDoneEvent>(EventKind::CtxDone) {
        entry.write(CtxDoneEvent {
            header: header(EventKind::CtxDone, tgid, tid),
            ctx,
            chan,
        });
        entry.submit(crate::maps::wakeup_flags());
    }
}

/// `(*cancelCtx|*timerCtx|*afterFuncCtx).Done` entry (the fallback when
/// `Done` has no direct call to `atomic.Value.Store`).
#[uprobe]
pub fn go_ctx_done(ctx: ProbeContext) -> u32 {
    let cfg = config();
    if target_thread(&cfg).is_none() {
        return 0;
    }
    let goid = read_u64(current_g(&ctx) + cfg.g_goid);
    let _ = DONE_CALLS.insert(goid, arg(&ctx, 0), 0);
    0
}

/// Every RET of a `Done` method: the channel is the first result.
#[uprobe]
pub fn go_ctx_done_ret(ctx: ProbeContext) -> u32 {
    let cfg = config();
    let Some((tgid, tid)) = target_thread(&cfg) else {
        return 0;
    };
    let goid = read_u64(current_g(&ctx) + cfg.g_goid);
    // SAFETY: copied out at once.
    let Some(c) = (unsafe { DONE_CALLS.get(goid) }).copied() else {
        return 0;
    };
    let _ = DONE_CALLS.remove(goid);
    let chan = arg(&ctx, 0);
    if chan == 0 {
        return 0;
    }
    // SAFETY: copied out at once.
    if unsafe { DONE_SEEN.get(c) }.copied() == Some(chan) {
        return 0;
    }
    let _ = DONE_SEEN.insert(c, chan, 0);
    emit_done(tgid, tid, c, chan);
    0
}
