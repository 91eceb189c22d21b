//! gotrace eBPF programs: uprobes on the Go runtime.
//!
//! Pipeline: probe (this crate) → ring buffer `EVENTS` → userspace decode →
//! model → report. Every program filters on the target's tgid first.
//!
//! Modules, bottom to top; each imports only from those above it in this
//! list: `maps` (configuration, ring buffer, counters) → `probe` (the run,
//! counted user-memory reads, aya-log diagnostics) → `goabi` (Go's register
//! ABI) → `envelope` (the one emit path) → `stacks` (the stack walk) →
//! the programs: `goroutine`, `context`, `timers`, `bench`.
#![no_std]
#![no_main]

mod bench;
mod context;
mod envelope;
mod goabi;
mod goroutine;
mod maps;
mod probe;
mod stacks;
mod timers;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
