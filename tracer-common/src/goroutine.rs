//! Goroutine lifecycle events: create, park, ready, exit.

use crate::EventHeader;

/// Identity of a goroutine as read from its `runtime.g`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoIdentity {
    pub goid: u64,
    /// `g.parentGoid` (Go 1.21+) or the creator's goid captured at creation;
    /// 0 when unknown.
    pub parent_goid: u64,
    /// `g.gopc`: pc of the `go` statement that created the goroutine.
    pub gopc: u64,
    /// `g.startpc`: entry pc of the goroutine's function.
    pub startpc: u64,
}

/// `EventKind::GoCreate`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoCreateEvent {
    pub header: EventHeader,
    pub g: GoIdentity,
    /// Creator's user stack (a `StackDump` id), walked from the RET of
    /// `runtime.newproc1` through `runtime.newproc` into the creator.
    pub stack_id: i32,
    pub _pad: u32,
    /// Always 0: the walk from `newproc1` already holds `newproc`'s return
    /// address. The field stays so that the record layout, and recordings
    /// made with it, do not change.
    pub caller_pc: u64,
}

/// `EventKind::GoPark`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoParkEvent {
    pub header: EventHeader,
    pub g: GoIdentity,
    /// Blocked user stack (a `StackDump` id).
    pub stack_id: i32,
    /// `waitReason` argument of `gopark`, as the target's runtime numbers it.
    pub reason: u32,
    /// A return address the frame-pointer walk misses, or 0 (amd64: the
    /// probe sits after `gopark`'s prologue, so the walk finds its caller
    /// and this is 0).
    pub caller_pc: u64,
    /// The first channels the goroutine waits on (`g.waiting` sudogs' `c`),
    /// 0 = none; a `GoParkChans` event follows with the others.
    pub chans: [u64; WAIT_CHANS],
}

/// How many waiting channels a park event carries itself.
pub const WAIT_CHANS: usize = 4;

/// Channels a `GoParkChans` event carries: with the park's own, a park
/// reports up to [`MAX_WAIT_CHANS`] (a `select` with that many cases).
pub const MORE_WAIT_CHANS: usize = 60;

/// Channels read per park at most; a longer `g.waiting` list is cut there
/// and counted (`COUNTER_WAIT_CHANS_TRUNCATED`).
pub const MAX_WAIT_CHANS: usize = WAIT_CHANS + MORE_WAIT_CHANS;

/// `EventKind::GoParkChans`: the channels of a park past its first
/// [`WAIT_CHANS`], sent by the same program run right after the `GoPark`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GoParkChansEvent {
    pub header: EventHeader,
    pub goid: u64,
    /// Channels used in `chans`.
    pub nr: u32,
    /// 1 when the wait list went on past [`MAX_WAIT_CHANS`].
    pub truncated: u32,
    pub chans: [u64; MORE_WAIT_CHANS],
}

impl Default for GoParkChansEvent {
    fn default() -> Self {
        Self {
            header: EventHeader::default(),
            goid: 0,
            nr: 0,
            truncated: 0,
            chans: [0; MORE_WAIT_CHANS],
        }
    }
}

/// `EventKind::GoReady`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoReadyEvent {
    pub header: EventHeader,
    /// The goroutine made runnable.
    pub goid: u64,
    /// The goroutine running `ready` (0 on the system stack).
    pub waker_goid: u64,
}

/// `EventKind::GoExit`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoExitEvent {
    pub header: EventHeader,
    pub goid: u64,
}
