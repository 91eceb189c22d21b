//! The scenarios the guests run, each with what its fixture's design says
//! the report must hold (see tests/fixtures/README.md): lines of the
//! report's [`super::digest`], each matching a digest line exactly or up to
//! a space (a group line without its stacks). Counts the fixture prints
//! (`planted <what> N`) are read from its output (`{what}`, see
//! [`super::expand`]); the `+1` in `live_user` is the main goroutine. Fixed
//! numbers are what the fixture prints nothing for (the split of its
//! goroutines between wait reasons, the number of groups).

use super::{Mode, Scenario};

/// The scenarios check the probes on other kernels and architectures; the
/// leak proof reads memory only (tested on the host by tests/tests/proof.rs)
/// and its verdicts depend on timing the digests cannot share (which tiny
/// block is live, what a running goroutine's stack holds), so it is off.
const ARGS: &[&str] = &["--leak-threshold", "1s", "--no-prove"];

/// 10 × `receiveForever` parked on a channel nobody sends on.
pub const CHANRECV: Scenario = Scenario {
    fixture: "chanrecv",
    go: "1.26.6",
    mode: Mode::Command,
    variant: "",
    build_flags: &[],
    args: ARGS,
    exit: 3,
    expect: &[
        "live_user {chanrecv+1}",
        "verdict \"{chanrecv} leak suspects in 1 group\"",
        "suspect_count {chanrecv}",
        "suspect main.receiveForever x{chanrecv} \"chan_receive\" \"chan receive\" created_at=\"main.startReceivers\" blocked_at=\"main.receiveForever\"",
        "contexts ignored_cancels 0",
        "timers not_traced=\"no timer start function in this binary\" started=0 stopped=0",
    ],
};

/// The same, stripped (`-s -w`): symbols from pclntab, offsets from the
/// per-version table.
pub const CHANRECV_STRIPPED: Scenario = Scenario {
    variant: "stripped",
    build_flags: &["-ldflags=-s -w"],
    ..CHANRECV
};

pub const CTXLEAK: Scenario = Scenario {
    fixture: "ctxleak",
    go: "1.26.6",
    mode: Mode::Command,
    variant: "",
    build_flags: &[],
    args: ARGS,
    exit: 3,
    expect: &[
        "live_user {waiters+1}",
        "verdict \"{waiters} leak suspects in 2 groups\"",
        "suspect_count {waiters}",
        "suspect main.jobWorker x4 \"chan_receive\" \"chan receive\" created_at=\"main.startJob\" blocked_at=\"main.jobWorker\"",
        "suspect main.jobWorker x3 \"select\" \"select\" created_at=\"main.startJob\" blocked_at=\"main.jobWorker\"",
        "contexts not_traced=null created={timeout-leak+cancel-leak} cancelled=0 live_at_end={timeout-leak+cancel-leak} repeat_cancels=0",
        "timers not_traced=null started={timeout-leak} stopped=0",
    ],
};

/// Plants 10 × `receiveForever`, then kills itself with SIGKILL from a
/// thread other than the leader: held at its exit all the same (every
/// thread stops at its ptrace exit event, killed ones included), its last
/// state read there, its death reported as it was.
pub const EXITER_SIGKILL: Scenario = Scenario {
    fixture: "exiter",
    go: "1.26.6",
    mode: Mode::Command,
    variant: "sigkill",
    build_flags: &["-ldflags=-X main.defaultExit=SIGKILL"],
    args: ARGS,
    exit: 0,
    expect: &[
        "target_exit \"killed by signal 9\"",
        "at_exit timed_out=false error=null",
        "at_exit main.receiveForever x{exiter} \"waiting\" \"chan receive\"",
    ],
};

/// The tickers fixture at its exit: the probes' counts (the ticker
/// verdicts need the leak proof, which the scenarios skip).
pub const TICKERS: Scenario = Scenario {
    fixture: "tickers",
    go: "1.21.13",
    mode: Mode::Command,
    variant: "",
    build_flags: &[],
    args: ARGS,
    exit: 3,
    expect: &[
        "live_user {tickers+1}",
        "timers not_traced=null started={tickers+dropped+stopped+running} stopped={stopped+running}",
    ],
};

/// Attached with `--pid --full` before the trigger (every probe, as
/// under `-- CMD`), oldest supported Go.
pub const LOCKS_PID: Scenario = Scenario {
    fixture: "locks",
    go: "1.19.8",
    mode: Mode::Pid,
    variant: "",
    build_flags: &[],
    args: &[
        "--full",
        "--leak-threshold",
        "1s",
        "--duration",
        "3s",
        "--no-prove",
    ],
    exit: 3,
    expect: &[
        "live_user {mutex+waitgroup+rwmutex+abba+1}",
        // runtime.main, asleep in the fixture's hold, is the 6th group.
        "verdict \"{mutex+waitgroup+rwmutex+abba+1} leak suspects in 6 groups\"",
        "suspect_count {mutex+waitgroup+rwmutex+abba+1}",
        "suspect main.lockWaiter x{mutex} \"mutex\" \"semacquire\" created_at=\"main.main\" blocked_at=\"main.lockWaiter\"",
        "suspect main.waitGroupWaiter x{waitgroup} \"wait_group\" \"semacquire\" created_at=\"main.main\" blocked_at=\"main.waitGroupWaiter\"",
        "suspect main.rlockWaiter x{rwmutex} \"rw_mutex\" \"semacquire\" created_at=\"main.main\" blocked_at=\"main.rlockWaiter\"",
        "suspect main.transferAB x1 \"mutex\" \"semacquire\" created_at=\"main.main\" blocked_at=\"main.transferAB\"",
        "suspect main.transferBA x1 \"mutex\" \"semacquire\" created_at=\"main.main\" blocked_at=\"main.transferBA\"",
        "suspect runtime.main x1 \"sleep\" \"sleep\" created_at=\"runtime.newproc\" blocked_at=\"gotrace.test/fixtures/harness.Hold\"",
    ],
};

/// `locks --pid` on Go 1.21: on arm64 the oldest Go whose stack copying
/// moves saved frame pointers (before 1.21 a goroutine whose stack grew
/// keeps pointers into its old stack, and frame-pointer walks end in stale
/// frames). Wait reasons from Go 1.20 name the sync primitive.
pub const LOCKS_PID_GO121: Scenario = Scenario {
    go: "1.21.13",
    expect: &[
        "live_user {mutex+waitgroup+rwmutex+abba+1}",
        // runtime.main, asleep in the fixture's hold, is the 6th group.
        "verdict \"{mutex+waitgroup+rwmutex+abba+1} leak suspects in 6 groups\"",
        "suspect_count {mutex+waitgroup+rwmutex+abba+1}",
        "suspect main.lockWaiter x{mutex} \"mutex\" \"sync.Mutex.Lock\" created_at=\"main.main\" blocked_at=\"main.lockWaiter\"",
        "suspect main.waitGroupWaiter x{waitgroup} \"wait_group\" \"semacquire\" created_at=\"main.main\" blocked_at=\"main.waitGroupWaiter\"",
        "suspect main.rlockWaiter x{rwmutex} \"rw_mutex\" \"sync.RWMutex.RLock\" created_at=\"main.main\" blocked_at=\"main.rlockWaiter\"",
        "suspect main.transferAB x1 \"mutex\" \"sync.Mutex.Lock\" created_at=\"main.main\" blocked_at=\"main.transferAB\"",
        "suspect main.transferBA x1 \"mutex\" \"sync.Mutex.Lock\" created_at=\"main.main\" blocked_at=\"main.transferBA\"",
    ],
    ..LOCKS_PID
};
