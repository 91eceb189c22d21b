//! The benchmark floor: a uprobe program that does nothing but count its
//! hits. `gotrace
//! --bench-empty-probes` attaches it at exactly the points the real programs
//! use, so `cargo xtask bench` can measure what the kernel's uprobe machinery
//! alone costs on a machine (the trap, the single-step, the program call).
//! gotrace also times it on a function of its own at attach, to know what
//! one hit costs (`tracer/src/probe/budget.rs`).

use aya_ebpf::{macros::uprobe, programs::ProbeContext};
use tracer_common::Program;

use crate::maps::bump;

/// Counts its hits (a per-CPU increment, next to nothing beside the trap):
/// the calibration of what one hit costs checks that its probe fired.
#[uprobe]
pub fn gotrace_empty(_ctx: ProbeContext) -> u32 {
    bump(Program::GotraceEmpty.hits_slot());
    0
}
