//! User stacks: a frame-pointer walk of the target thread, interned by
//! fingerprint. Each distinct stack is sent once as a `StackDump` event
//! under a synthetic id (below -1); an LRU map of stack fingerprints gives
//! later hits the same id, and userspace aliases a stack sent again (after
//! eviction) to its first id.
//!
//! Userspace half: `tracer/src/model/stacks.rs`.

use aya_ebpf::{
    helpers::{bpf_get_smp_processor_id, bpf_probe_read_kernel_buf, bpf_probe_read_user},
    macros::map,
    maps::{LruHashMap, PerCpuArray},
    programs::ProbeContext,
};
use aya_log_ebpf::debug;
use tracer_common::{
    COUNTER_STACK_ERRORS, COUNTER_STACKS_TRUNCATED, EventHeader, NO_STACK, Program,
    STACK_DUMP_DEPTH, STACK_DUMP_ID_SPAN, StackDumpEvent,
};

use crate::{
    envelope::emit,
    goabi::pc_and_fp,
    maps::{bump, debug_probes},
    probe::Probe,
};

/// Where a stack is walked before it is fingerprinted (and sent if new).
#[map]
static STACK_SCRATCH: PerCpuArray<StackDumpEvent> = PerCpuArray::with_max_entries(1, 0);

/// Fingerprint of a dumped stack → its synthetic id.
#[map]
static DUMPED: LruHashMap<u64, i32> = LruHashMap::with_max_entries(4096, 0);

/// Per-CPU sequence numbers for synthetic ids.
#[map]
static DUMP_SEQ: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// The current thread's user stack as a stack id, or `NO_STACK` when it
/// could not be read (counted).
///
/// The frame-pointer walk is done here rather than by `bpf_get_stackid`:
/// on the hosts measured the kernel's walk cost about 1.3 µs for a
/// five-frame Go stack, this one about half. A stack deeper than
/// `STACK_DUMP_DEPTH` frames keeps its innermost ones (counted).
#[inline(always)]
pub fn user_stack(p: &Probe) -> i32 {
    walk(p.ctx, p.prog, p.tgid, p.tid).unwrap_or_else(|| {
        bump(COUNTER_STACK_ERRORS);
        NO_STACK
    })
}

/// FNV-1a step.
#[inline(always)]
fn fnv(h: u64, v: u64) -> u64 {
    (h ^ v).wrapping_mul(0x0000_0100_0000_01b3)
}

/// Walked once per program (a subprogram: verified once per call site, not
/// once per path of the caller).
#[inline(never)]
fn walk(ctx: &ProbeContext, prog: Program, tgid: u32, tid: u32) -> Option<i32> {
    let p = Probe {
        ctx,
        prog,
        tgid,
        tid,
    };
    let buf = STACK_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: per-CPU scratch owned by this program run.
    let ev = unsafe { &mut *buf };
    let (pc, mut fp) = pc_and_fp(ctx);
    ev.ips[0] = pc;
    let mut h = fnv(0xcbf2_9ce4_8422_2325, pc);
    let mut nr = 1usize;
    // Like the kernel's user unwinder: follow saved frame pointers, keep
    // each frame's return address, stop at a null or unreadable frame.
    for i in 1..STACK_DUMP_DEPTH {
        if fp == 0 {
            break;
        }
        // SAFETY: bpf_probe_read_user validates the address.
        let Ok(frame) = (unsafe { bpf_probe_read_user(fp as *const [u64; 2]) }) else {
            p.read_failed(fp);
            fp = 0;
            break;
        };
        ev.ips[i] = frame[1];
        h = fnv(h, frame[1]);
        nr = i + 1;
        fp = frame[0];
    }
    if fp != 0 {
        // Frames remain past the last slot: the stack is cut.
        bump(COUNTER_STACKS_TRUNCATED);
        if debug_probes() {
            debug!(ctx, "stack cut at {} frames", STACK_DUMP_DEPTH as u32);
        }
    }
    let h = fnv(h, nr as u64);
    // SAFETY: LRU map value read; a concurrent update only replaces it.
    if let Some(id) = unsafe { DUMPED.get(h) } {
        return Some(*id);
    }
    let seq = DUMP_SEQ.get_ptr_mut(0)?;
    // SAFETY: per-CPU slot, no concurrent writer on this CPU.
    let s = unsafe {
        *seq = seq.read().wrapping_add(1);
        *seq
    };
    // SAFETY: plain helper with no arguments.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let span = (STACK_DUMP_ID_SPAN as u32) >> 8;
    let id = -(2 + (((s % span) << 8) | (cpu & 0xff)) as i32);
    ev.id = id;
    ev.nr = nr as u32;
    let sent = emit(&p, |out: &mut StackDumpEvent| {
        // One helper call copies the ~1 KiB body (an inline copy would
        // unroll into hundreds of instructions); `emit` wrote the header.
        const HEADER: usize = size_of::<EventHeader>();
        // SAFETY: `out` is a whole StackDumpEvent; a kernel-to-kernel copy
        // of everything after the header, from the scratch this run owns.
        let dst = unsafe {
            core::slice::from_raw_parts_mut(
                (out as *mut StackDumpEvent).cast::<u8>().add(HEADER),
                size_of::<StackDumpEvent>() - HEADER,
            )
        };
        let _ = unsafe { bpf_probe_read_kernel_buf(buf.cast::<u8>().add(HEADER), dst) };
    });
    if !sent {
        return None;
    }
    let _ = DUMPED.insert(h, id, 0);
    Some(id)
}
