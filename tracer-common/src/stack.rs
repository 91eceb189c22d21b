//! User stacks, walked and interned by the probes.

use crate::EventHeader;

/// Sentinel for "no stack captured".
pub const NO_STACK: i32 = -1;

/// Frames a probe's stack walk keeps (as the kernel's
/// `perf_event_max_stack` default); a deeper stack is cut there and counted
/// (`COUNTER_STACKS_TRUNCATED`).
pub const STACK_DUMP_DEPTH: usize = 127;

/// Synthetic ids of dumped stacks are in `[-(2 + STACK_DUMP_ID_SPAN), -2]`;
/// anything further below is free for userspace (e.g. snapshot stacks).
pub const STACK_DUMP_ID_SPAN: i32 = 1 << 29;

/// `EventKind::StackDump`: the frames of a stack the probes had not sent
/// before, under the synthetic id (< -1) the events that follow carry.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackDumpEvent {
    pub header: EventHeader,
    pub id: i32,
    /// Frames used in `ips`.
    pub nr: u32,
    /// The probed pc, then return addresses, innermost first.
    pub ips: [u64; STACK_DUMP_DEPTH],
}
