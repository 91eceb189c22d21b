//! gotrace eBPF programs: uprobes on the Go runtime.
//!
//! Pipeline: probe (this crate) → ring buffer `EVENTS` → userspace decode →
//! model → report. Every program filters on the target's tgid first.
#![no_std]
#![no_main]

mod bench;
mod context;
mod goabi;
mod goroutine;
mod maps;
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
