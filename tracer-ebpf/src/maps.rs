//! The bottom layer: the attach-time configuration, the ring buffer and the
//! counters every probe shares. Imports nothing from this crate.

use aya_ebpf::{
    macros::map,
    maps::{PerCpuArray, RingBuf},
};
use tracer_common::{COUNTER_SLOTS, Config};

/// Attach-time configuration, set by userspace (`EbpfLoader::override_global`).
/// In `.rodata`: the verifier sees its values as constants and prunes the
/// paths they rule out.
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
    itab_timer_ctx: 0,
};

/// The configuration, read in place (a copy would take 232 of the 512
/// stack bytes Linux 5.10 allows a program and the subprograms it calls).
#[inline(always)]
pub fn config() -> &'static Config {
    let p: *const Config = &raw const CONFIG;
    // SAFETY: CONFIG is a valid static. The address passes through a
    // volatile read so the compiler cannot tie the loads below to CONFIG's
    // initializer and fold them (userspace rewrites the value before load).
    unsafe { &*core::ptr::read_volatile(&p) }
}

/// Size of the ring buffer in bytes (`CONFIG.ring_bytes`), read alone: the
/// whole struct is not copied again on every event.
#[inline(always)]
pub fn ring_bytes() -> u64 {
    // SAFETY: one field read through a volatile pointer (see `config`).
    unsafe { core::ptr::read_volatile(&raw const CONFIG.ring_bytes) }
}

/// Non-zero when userspace asked for the probes' diagnostics
/// (`--debug-probes`). In `.rodata` like `CONFIG`: with 0 the verifier
/// prunes every diagnostic path, which then costs nothing.
#[unsafe(no_mangle)]
static DEBUG_PROBES: u8 = 0;

#[inline(always)]
pub fn debug_probes() -> bool {
    // SAFETY: volatile read of a global userspace sets before load.
    unsafe { core::ptr::read_volatile(&DEBUG_PROBES) != 0 }
}

/// Events to userspace. 8 MiB by default (`--ring-buffer` resizes it).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(8 << 20, 0);

/// Per-CPU counters; the slot layout is `tracer_common::counters`.
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

#[inline(always)]
pub fn bump(slot: u32) {
    if let Some(p) = COUNTERS.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *p += 1 };
    }
}
