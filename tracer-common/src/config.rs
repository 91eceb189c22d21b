//! Attach-time configuration: offsets and addresses in the target, written
//! into the eBPF object's `CONFIG` global before load.

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
    /// The itab of `*context.timerCtx` as a `canceler` (a runtime address;
    /// 0 when the binary has none): only those children have a deadline.
    pub itab_timer_ctx: u64,
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
