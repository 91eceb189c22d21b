//! The one way an event reaches userspace: reserve its record in `EVENTS`,
//! let the program fill the body in place, stamp the envelope (the
//! [`EventHeader`]) and submit; when the ring is full, count a drop for the
//! event's kind instead.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns},
};
use aya_log_ebpf::debug;
use tracer_common::{Event, EventHeader};

use crate::{
    maps::{EVENTS, bump, debug_probes, ring_bytes},
    probe::Probe,
};

/// Sends one `T`: `emit` stamps the header, then `fill` writes every other
/// field straight into the reserved record (events larger than the
/// 512-byte BPF stack never pass through it). False when the ring was full
/// (counted).
#[inline(always)]
pub fn emit<T: Event>(p: &Probe, fill: impl FnOnce(&mut T)) -> bool {
    let Some(mut entry) = EVENTS.reserve::<T>(0) else {
        bump(T::KIND.index());
        if debug_probes() {
            debug!(
                p.ctx,
                "{}: ring buffer full, {} dropped",
                p.prog.name(),
                T::KIND.name()
            );
        }
        return false;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: the record is ours until submitted; its memory comes from the
    // kernel (initialised as far as Rust can tell) and T is plain old data
    // valid for any bits, starting with its header (the `Event` contract).
    // The header (its timestamp) first: the model compares timestamps
    // across CPUs (a cancel after a park), so the clock is read before the
    // body's reads, not after them.
    unsafe {
        ev.cast::<EventHeader>().write(EventHeader {
            kind: T::KIND as u32,
            tid: p.tid,
            tgid: p.tgid,
            cpu: bpf_get_smp_processor_id(),
            ts_ns: bpf_ktime_get_ns(),
        });
        fill(&mut *ev);
    }
    entry.submit(wakeup_flags());
    true
}

/// Submit flags for the next event. Wakeups are batched: userspace drains
/// the ring every few milliseconds on its own and is woken early only when
/// a quarter of the ring is in use. A wakeup per event would cost a
/// consumer wakeup (and often a context switch) per goroutine transition.
#[inline(always)]
fn wakeup_flags() -> u64 {
    let used = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    if used >= ring_bytes() / 4 {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}
