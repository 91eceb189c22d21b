//! User stacks. `bpf_get_stackid` keeps each distinct stack once in the
//! `STACKS` map and hands out its bucket as the id; two different stacks
//! whose hashes share a bucket cannot both be kept (the second gets
//! `-EEXIST`, every time, for a given binary). Such a stack is copied with
//! `bpf_get_stack` and sent once as a `StackDump` event under a synthetic id
//! (below -1); a small LRU map of stack fingerprints makes later hits of the
//! same stack reuse that id instead of sending it again.
//!
//! Userspace half: `tracer/src/model/stacks.rs`.

use aya_ebpf::{
    EbpfContext as _,
    bindings::BPF_F_USER_STACK,
    helpers::{bpf_get_smp_processor_id, bpf_get_stack},
    macros::map,
    maps::{LruHashMap, PerCpuArray},
    programs::{ProbeContext, tracing::StackIdContext as _},
};
use tracer_common::{EventKind, NO_STACK, STACK_DUMP_DEPTH, STACK_DUMP_ID_SPAN, StackDumpEvent};

use crate::goroutine::header;
use crate::maps::{COUNTER_STACK_ERRORS, EVENTS, STACKS, bump};

/// Where a refused stack is copied before it is fingerprinted and sent.
#[map]
static STACK_SCRATCH: PerCpuArray<StackDumpEvent> = PerCpuArray::with_max_entries(1, 0);

/// Fingerprint of a dumped stack → its synthetic id.
#[map]
static DUMPED: LruHashMap<u64, i32> = LruHashMap::with_max_entries(4096, 0);

/// Per-CPU sequence numbers for synthetic ids.
#[map]
static DUMP_SEQ: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// The current thread's user stack as a stack id (map bucket, or a dumped
/// stack's synthetic id), or `NO_STACK` when neither worked (counted).
#[inline(always)]
pub fn user_stack(ctx: &ProbeContext, tgid: u32, tid: u32) -> i32 {
    match ctx.get_stackid(&STACKS, BPF_F_USER_STACK as u64) {
        Ok(id) => id as i32,
        Err(_) => dump(ctx, tgid, tid).unwrap_or_else(|| {
            bump(COUNTER_STACK_ERRORS);
            NO_STACK
        }),
    }
}

#[inline(never)]
fn dump(ctx: &ProbeContext, tgid: u32, tid: u32) -> Option<i32> {
    let buf = STACK_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: per-CPU scratch owned by this program run; the helper writes
    // at most the size we give it into the ips array.
    let ev = unsafe { &mut *buf };
    let n = unsafe {
        bpf_get_stack(
            ctx.as_ptr(),
            ev.ips.as_mut_ptr().cast(),
            (STACK_DUMP_DEPTH * 8) as u32,
            BPF_F_USER_STACK as u64,
        )
    };
    if n <= 0 {
        return None;
    }
    let nr = ((n as usize) / 8).min(STACK_DUMP_DEPTH);
    // FNV-1a over the frames.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ nr as u64;
    for i in 0..STACK_DUMP_DEPTH {
        if i >= nr {
            break;
        }
        h = (h ^ ev.ips[i]).wrapping_mul(0x0000_0100_0000_01b3);
    }
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
    ev.header = header(EventKind::StackDump, tgid, tid);
    ev.id = id;
    ev.nr = nr as u32;
    if EVENTS
        .output::<StackDumpEvent>(&*ev, crate::maps::wakeup_flags())
        .is_err()
    {
        bump(EventKind::StackDump.index());
        return None;
    }
    let _ = DUMPED.insert(h, id, 0);
    Some(id)
}
