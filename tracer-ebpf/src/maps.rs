//! Maps shared by every probe, and the attach-time configuration.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::bpf_get_current_pid_tgid,
    macros::map,
    maps::{PerCpuArray, RingBuf},
};
use tracer_common::Config;

/// Attach-time configuration, set by userspace (`EbpfLoader::set_global`).
#[unsafe(no_mangle)]
static CONFIG: Config = Config {
    target_tgid: 0,
    flags: 0,
    g_goid: 0,
    g_parent_goid: 0,
    g_gopc: 0,
    g_startpc: 0,
    g_waiting: 0,
    sudog_c: 0,
    sudog_waitlink: 0,
    pc_parent_reg: 0,
    pc_child_reg: 0,
    ctx_done: 0,
    timer_deadline: 0,
    itab_value_ctx: 0,
    itab_deadline_exceeded: 0,
    itab_error_string: 0,
    itab_wrap_error: 0,
    canceled_var: 0,
    timer_period: 0,
    timer_f: 0,
    timer_arg: 0,
    g_window_base: 0,
    g_window_len: 0,
    sudog_window_base: 0,
    sudog_window_len: 0,
    ring_bytes: 0,
};

#[inline(always)]
pub fn config() -> Config {
    // SAFETY: read through a volatile pointer so the compiler keeps the load
    // (userspace rewrites the value before load).
    unsafe { core::ptr::read_volatile(&CONFIG) }
}

/// Events to userspace. 8 MiB: ~100 k events of slack at 80 bytes each.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(8 << 20, 0);

/// Per-CPU counters, indexed by [`Counter`] or by event kind for drops.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

/// Slot layout of `COUNTERS` (mirrored in userspace `probe::counters`):
/// `[0, MAX_KINDS)` ring-buffer drops per event kind, then the named counters.
pub const COUNTER_SLOTS: u32 = tracer_common::COUNTER_SLOTS;
/// User stacks that could not be captured.
pub const COUNTER_STACK_ERRORS: u32 = tracer_common::COUNTER_STACK_ERRORS;
/// Creations whose creator goid was lost.
pub const COUNTER_PARENTS_LOST: u32 = tracer_common::COUNTER_PARENTS_LOST;

#[inline(always)]
pub fn bump(slot: u32) {
    if let Some(p) = COUNTERS.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *p += 1 };
    }
}

/// Submit flags for the next event. Wakeups are batched: userspace drains
/// the ring every few milliseconds on its own and is woken early only when
/// a quarter of the ring is in use. A wakeup per event would cost a
/// consumer wakeup (and often a context switch) per goroutine transition.
#[inline(always)]
pub fn wakeup_flags() -> u64 {
    let used = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    // SAFETY: one field read through a volatile pointer (see `config`); the
    // whole struct is not copied again on every event.
    let ring_bytes = unsafe { core::ptr::read_volatile(&raw const CONFIG.ring_bytes) };
    if used >= ring_bytes / 4 {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// Reserves an event in the ring buffer, or counts a drop for `kind`.
#[inline(always)]
pub fn reserve<T: 'static>(
    kind: tracer_common::EventKind,
) -> Option<aya_ebpf::maps::ring_buf::RingBufEntry<T>> {
    let entry = EVENTS.reserve::<T>(0);
    if entry.is_none() {
        bump(kind.index());
    }
    entry
}

/// The calling thread's (tgid, tid) if it belongs to the target process.
#[inline(always)]
pub fn target_thread(cfg: &Config) -> Option<(u32, u32)> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if tgid != cfg.target_tgid {
        return None;
    }
    Some((tgid, pid_tgid as u32))
}
