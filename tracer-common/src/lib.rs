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
    /// A cancelable context was created (`propagateCancel`).
    CtxCreate = 5,
    /// A context's cancel method ran (`(*cancelCtx|*timerCtx|*afterFuncCtx).cancel`).
    CtxCancel = 6,
    /// A context's Done channel became known (`Done` returned it).
    CtxDone = 7,
    /// A runtime timer was started (`time.startTimer` ≤1.22, `time.newTimer` 1.23+).
    TimerStart = 8,
    /// A runtime timer was stopped (`time.stopTimer`).
    TimerStop = 9,
    /// A user stack seen for the first time, sent once under a synthetic id
    /// that the events referring to it carry.
    StackDump = 10,
}

impl EventKind {
    pub const ALL: [EventKind; 10] = [
        EventKind::GoCreate,
        EventKind::GoPark,
        EventKind::GoReady,
        EventKind::GoExit,
        EventKind::CtxCreate,
        EventKind::CtxCancel,
        EventKind::CtxDone,
        EventKind::TimerStart,
        EventKind::TimerStop,
        EventKind::StackDump,
    ];

    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::GoCreate),
            2 => Some(Self::GoPark),
            3 => Some(Self::GoReady),
            4 => Some(Self::GoExit),
            5 => Some(Self::CtxCreate),
            6 => Some(Self::CtxCancel),
            7 => Some(Self::CtxDone),
            8 => Some(Self::TimerStart),
            9 => Some(Self::TimerStop),
            10 => Some(Self::StackDump),
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
            Self::CtxCreate => "ctx_create",
            Self::CtxCancel => "ctx_cancel",
            Self::CtxDone => "ctx_done",
            Self::TimerStart => "timer_start",
            Self::TimerStop => "timer_stop",
            Self::StackDump => "stack_dump",
        }
    }
}

/// Number of slots in the per-kind counter arrays (index = kind number).
pub const MAX_KINDS: u32 = 16;

/// Slots of the per-CPU `COUNTERS` map: `[0, MAX_KINDS)` count ring-buffer
/// drops per event kind, then the named counters below.
pub const COUNTER_SLOTS: u32 = MAX_KINDS + 4;
/// User stacks that could not be captured (their `StackDump` event dropped).
pub const COUNTER_STACK_ERRORS: u32 = MAX_KINDS;
/// Creations whose creator is unknown because another thread of the target
/// took the creator's per-thread slot first (Go < 1.21 only).
pub const COUNTER_PARENTS_LOST: u32 = MAX_KINDS + 1;

/// Sentinel for "no stack captured".
pub const NO_STACK: i32 = -1;

/// Frames kept in a [`StackDumpEvent`] (the kernel's `perf_event_max_stack`
/// default).
pub const STACK_DUMP_DEPTH: usize = 127;

/// Synthetic ids of dumped stacks are in `[-(2 + STACK_DUMP_ID_SPAN), -2]`;
/// anything further below is free for userspace (e.g. snapshot stacks).
pub const STACK_DUMP_ID_SPAN: i32 = 1 << 29;

/// `EventKind::StackDump`: the frames of a stack the eBPF side had not
/// store, under the synthetic id (< -1) the events that follow carry.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackDumpEvent {
    pub header: EventHeader,
    pub id: i32,
    /// Frames used in `ips`.
    pub nr: u32,
    /// Return addresses, innermost first (as the stack map stores them).
    pub ips: [u64; STACK_DUMP_DEPTH],
}

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
    /// Channels the goroutine waits on (`g.waiting` sudogs' `c`), 0 = none.
    pub chans: [u64; WAIT_CHANS],
}

/// How many waiting channels a park event carries.
pub const WAIT_CHANS: usize = 4;

/// `EventKind::CtxCreate`: `propagateCancel(parent, child)` entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtxCreateEvent {
    pub header: EventHeader,
    /// Creating goroutine.
    pub goid: u64,
    /// The new context (the `canceler` data pointer).
    pub ctx: u64,
    /// itab of the new context as a `canceler`: names its type.
    pub child_itab: u64,
    /// The parent `Context` after skipping `WithValue` wrappers.
    pub parent_itab: u64,
    pub parent_data: u64,
    /// `WithValue` wrappers skipped to reach `parent_*`.
    pub value_hops: u32,
    pub stack_id: i32,
    pub caller_pc: u64,
    /// `timerCtx.deadline` (a `time.Time`: wall, ext); junk for other kinds.
    pub deadline_wall: u64,
    pub deadline_ext: i64,
}

/// Which cancel method an event comes from.
pub const CANCEL_METHOD_CANCEL_CTX: u32 = 1;
pub const CANCEL_METHOD_TIMER_CTX: u32 = 2;
pub const CANCEL_METHOD_AFTER_FUNC_CTX: u32 = 3;

/// The error is the target's `context.Canceled` value.
pub const CANCEL_ERR_CANCELED: u32 = 1;
/// The error is a `context.deadlineExceededError`.
pub const CANCEL_ERR_DEADLINE: u32 = 2;
/// `cause_msg` holds the cause's message (errors.New / fmt.Errorf causes).
pub const CANCEL_CAUSE_MSG: u32 = 4;
/// The cause is the error itself (no cause given).
pub const CANCEL_CAUSE_IS_ERR: u32 = 8;

pub const CAUSE_MSG_LEN: usize = 64;

/// `EventKind::CtxCancel`: a cancel method's entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtxCancelEvent {
    pub header: EventHeader,
    pub goid: u64,
    /// The context (method receiver).
    pub ctx: u64,
    /// `CANCEL_METHOD_*`.
    pub method: u32,
    /// `removeFromParent` argument.
    pub remove_from_parent: u32,
    pub err_itab: u64,
    pub err_data: u64,
    pub cause_itab: u64,
    pub cause_data: u64,
    /// `CANCEL_ERR_*` / `CANCEL_CAUSE_*` bits.
    pub flags: u32,
    pub stack_id: i32,
    pub caller_pc: u64,
    /// The context's Done channel as stored in `cancelCtx.done`, 0 if none yet.
    pub done_chan: u64,
    pub cause_len: u32,
    pub _pad: u32,
    pub cause_msg: [u8; CAUSE_MSG_LEN],
}

impl Default for CtxCancelEvent {
    fn default() -> Self {
        Self {
            header: EventHeader::default(),
            goid: 0,
            ctx: 0,
            method: 0,
            remove_from_parent: 0,
            err_itab: 0,
            err_data: 0,
            cause_itab: 0,
            cause_data: 0,
            flags: 0,
            stack_id: NO_STACK,
            caller_pc: 0,
            done_chan: 0,
            cause_len: 0,
            _pad: 0,
            cause_msg: [0; CAUSE_MSG_LEN],
        }
    }
}

/// `EventKind::CtxDone`: a context's Done channel (first time seen).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtxDoneEvent {
    pub header: EventHeader,
    pub ctx: u64,
    pub chan: u64,
}

/// `EventKind::TimerStart`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimerStartEvent {
    pub header: EventHeader,
    pub goid: u64,
    /// The runtime timer (`*runtime.timer` / `*runtime.timeTimer`).
    pub timer: u64,
    /// Nanoseconds between ticks; 0 for one-shot timers.
    pub period: i64,
    /// The timer function (`time.sendTime` for Ticker/Timer channels).
    pub func: u64,
    /// The channel it sends on (the `arg` of sendTime).
    pub chan: u64,
    pub stack_id: i32,
    pub _pad: u32,
    pub caller_pc: u64,
}

/// `EventKind::TimerStop`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimerStopEvent {
    pub header: EventHeader,
    pub goid: u64,
    pub timer: u64,
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
    /// `runtime.g.waiting`, `runtime.sudog.c`, `runtime.sudog.waitlink`
    /// (valid with `CONFIG_FLAG_WAIT_CHANS`).
    pub g_waiting: u64,
    pub sudog_c: u64,
    pub sudog_waitlink: u64,
    /// Register index (Go ABI) of propagateCancel's `parent` and `child`
    /// interfaces (two registers each).
    pub pc_parent_reg: u32,
    pub pc_child_reg: u32,
    /// `context.cancelCtx.done`, `context.timerCtx.deadline` offsets.
    pub ctx_done: u64,
    pub timer_deadline: u64,
    /// Addresses in the target (runtime addresses): the itabs of
    /// `*context.valueCtx` as Context, `deadlineExceededError` as error,
    /// `*errors.errorString` / `*fmt.wrapError` as error; the
    /// `context.Canceled` variable.
    pub itab_value_ctx: u64,
    pub itab_deadline_exceeded: u64,
    pub itab_error_string: u64,
    pub itab_wrap_error: u64,
    pub canceled_var: u64,
    /// `runtime.timer` `period`, `f`, `arg` offsets (Go ≤ 1.22's startTimer).
    pub timer_period: u64,
    pub timer_f: u64,
    pub timer_arg: u64,
    /// One copy of `g_window_len` bytes at `g + g_window_base` covers goid,
    /// parentGoid, gopc, startpc and waiting (valid with
    /// `CONFIG_FLAG_G_WINDOW`): one user-memory read instead of five.
    pub g_window_base: u32,
    pub g_window_len: u32,
    /// The same for a sudog's `c` and `waitlink` (`CONFIG_FLAG_SUDOG_WINDOW`).
    pub sudog_window_base: u32,
    pub sudog_window_len: u32,
    /// Size of the `EVENTS` ring buffer in bytes (set by the loader): the
    /// probes compare the data waiting in it against a quarter of this.
    pub ring_bytes: u64,
}

/// Largest `Config::g_window_len`, in bytes.
pub const G_WINDOW_MAX: u32 = 256;
/// Largest `Config::sudog_window_len`, in bytes.
pub const SUDOG_WINDOW_MAX: u32 = 64;

/// `g.parentGoid` exists (Go 1.21+).
pub const CONFIG_FLAG_PARENT_GOID: u32 = 1;
/// Park events carry the channels in `g.waiting`.
pub const CONFIG_FLAG_WAIT_CHANS: u32 = 2;
/// Context cancel methods take a `cause` (Go 1.20+).
pub const CONFIG_FLAG_CANCEL_CAUSE: u32 = 4;
/// `Config::g_window_*` is set.
pub const CONFIG_FLAG_G_WINDOW: u32 = 8;
/// `Config::sudog_window_*` is set.
pub const CONFIG_FLAG_SUDOG_WINDOW: u32 = 16;

// SAFETY: repr(C) plain old data, no implicit padding, valid for any bits.
#[cfg(feature = "user")]
unsafe impl aya::Pod for Config {}
