//! The event ABI shared by the eBPF programs (`tracer-ebpf`) and userspace
//! (`tracer`).
//!
//! Everything here is `#[repr(C)]` and plain old data: the kernel writes these
//! structs into the ring buffer and userspace reads them back byte for byte.
//! Event kinds have stable explicit numbers; never renumber, only append.
#![cfg_attr(target_arch = "bpf", no_std)]

/// Every event starts with this header.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    /// An [`EventKind`] as u32.
    pub kind: u32,
    /// Thread id (kernel view) that hit the probe.
    pub tid: u32,
    /// Thread-group id (process id, kernel view).
    pub tgid: u32,
    /// CPU the probe ran on.
    pub cpu: u32,
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
}

/// Stable event kind numbers.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A goroutine was created (`runtime.newproc1` returned).
    GoCreate = 1,
    /// A goroutine parked (`runtime.gopark`).
    GoPark = 2,
    /// A parked goroutine was made runnable (`runtime.ready`).
    GoReady = 3,
    /// A goroutine exited (`runtime.goexit1`).
    GoExit = 4,
}

impl EventKind {
    pub const ALL: [EventKind; 4] = [
        EventKind::GoCreate,
        EventKind::GoPark,
        EventKind::GoReady,
        EventKind::GoExit,
    ];

    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::GoCreate),
            2 => Some(Self::GoPark),
            3 => Some(Self::GoReady),
            4 => Some(Self::GoExit),
            _ => None,
        }
    }

    /// Index into the per-kind counter arrays (`DROPS`).
    pub const fn index(self) -> u32 {
        self as u32
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::GoCreate => "go_create",
            Self::GoPark => "go_park",
            Self::GoReady => "go_ready",
            Self::GoExit => "go_exit",
        }
    }
}

/// Number of slots in the per-kind counter arrays (index = kind number).
pub const MAX_KINDS: u32 = 8;

/// Slots of the per-CPU `COUNTERS` map: `[0, MAX_KINDS)` count ring-buffer
/// drops per event kind, then the named counters below.
pub const COUNTER_SLOTS: u32 = MAX_KINDS + 4;
/// `bpf_get_stackid` failures (stack map full or hash collision).
pub const COUNTER_STACK_ERRORS: u32 = MAX_KINDS;

/// Sentinel for "no stack captured".
pub const NO_STACK: i32 = -1;

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
    /// Creator's user stack (stack-trace map id), captured at `runtime.newproc`.
    pub stack_id: i32,
    pub _pad: u32,
    /// Return address at `runtime.newproc` entry (the frame the FP walk misses).
    pub caller_pc: u64,
}

/// `EventKind::GoPark`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoParkEvent {
    pub header: EventHeader,
    pub g: GoIdentity,
    /// Blocked user stack (stack-trace map id).
    pub stack_id: i32,
    /// `waitReason` argument of `gopark`, as the target's runtime numbers it.
    pub reason: u32,
    /// Return address at `gopark` entry (the frame the FP walk misses).
    pub caller_pc: u64,
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

/// Attach-time configuration, written into the eBPF object's `CONFIG` global
/// before load. All offsets come from the target's DWARF (or, for stripped
/// binaries, a per-version table): nothing here is hard-coded.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Only events from this tgid (kernel view) are emitted.
    pub target_tgid: u32,
    /// `CONFIG_FLAG_*` bits.
    pub flags: u32,
    /// Offset of `runtime.g.goid`.
    pub g_goid: u64,
    /// Offset of `runtime.g.parentGoid` (valid with `CONFIG_FLAG_PARENT_GOID`).
    pub g_parent_goid: u64,
    /// Offset of `runtime.g.gopc`.
    pub g_gopc: u64,
    /// Offset of `runtime.g.startpc`.
    pub g_startpc: u64,
}

/// `g.parentGoid` exists (Go 1.21+).
pub const CONFIG_FLAG_PARENT_GOID: u32 = 1;

// SAFETY: repr(C) plain old data, no implicit padding, valid for any bits.
#[cfg(feature = "user")]
unsafe impl aya::Pod for Config {}
