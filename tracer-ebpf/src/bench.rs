//! The benchmark floor: a uprobe program that does nothing. `gotrace
//! --bench-empty-probes` attaches it at exactly the points the real programs
//! use, so `cargo xtask bench` can measure what the kernel's uprobe machinery
//! alone costs on a machine (the trap, the single-step, the program call).

use aya_ebpf::{macros::uprobe, programs::ProbeContext};

#[uprobe]
pub fn gotrace_empty(_ctx: ProbeContext) -> u32 {
    0
}
