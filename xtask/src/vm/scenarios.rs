//! The scenarios the guests run, each with what its fixture's design says
//! the report must hold (see tests/fixtures/README.md): lines of the
//! report's [`super::digest`], each matching a digest line exactly or up to
//! a space (a group line without its stacks).

use super::{Mode, Scenario};

const ARGS: &[&str] = &["--leak-threshold", "1s"];

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
        "live_user 11",
        "verdict \"10 leak suspects in 1 group\"",
        "suspect main.receiveForever x10 \"chan_receive\" \"chan receive\" created_at=\"main.startReceivers\" blocked_at=\"main.receiveForever\"",
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
        "live_user 8",
        "verdict \"7 leak suspects in 2 groups\"",
        "suspect main.jobWorker x4 \"chan_receive\" \"chan receive\" created_at=\"main.startJob\" blocked_at=\"main.jobWorker\"",
        "suspect main.jobWorker x3 \"select\" \"select\" created_at=\"main.startJob\" blocked_at=\"main.jobWorker\"",
        "contexts not_traced=null created=11 cancelled=0 live_at_end=11 repeat_cancels=0",
        "context leak \"timer\" x7 created_at=\"main.startJob\" timers_alive=7 waiting=7",
        "context leak \"cancel\" x4 created_at=\"main.makeIdleContexts\" timers_alive=0 waiting=0",
        "timers not_traced=null started=7 stopped=0",
    ],
};

pub const TICKERS: Scenario = Scenario {
    fixture: "tickers",
    go: "1.21.13",
    mode: Mode::Command,
    variant: "",
    build_flags: &[],
    args: ARGS,
    exit: 0,
    expect: &[
        "live_user 4",
        "verdict \"no leak suspects\"",
        "live main.pollLoop x3 \"chan_receive\" \"chan receive\" created_at=\"main.startPoller\" blocked_at=\"main.pollLoop\"",
        "timers not_traced=null started=4 stopped=1",
        "ticker created_at=\"main.startPoller\" x3 period=0.1 verdict=\"leak\" loops=[\"main.pollLoop\"]",
    ],
};

/// Attached with `--pid` before the trigger, oldest supported Go.
pub const LOCKS_PID: Scenario = Scenario {
    fixture: "locks",
    go: "1.19.8",
    mode: Mode::Pid,
    variant: "",
    build_flags: &[],
    args: &["--leak-threshold", "1s", "--duration", "3s"],
    exit: 3,
    expect: &[
        "live_user 13",
        "verdict \"13 leak suspects in 6 groups\"",
        "suspect main.lockWaiter x5 \"mutex\" \"semacquire\" created_at=\"main.main\" blocked_at=\"main.lockWaiter\"",
        "suspect main.waitGroupWaiter x3 \"wait_group\" \"semacquire\" created_at=\"main.main\" blocked_at=\"main.waitGroupWaiter\"",
        "suspect main.rlockWaiter x2 \"rw_mutex\" \"semacquire\" created_at=\"main.main\" blocked_at=\"main.rlockWaiter\"",
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
        "live_user 13",
        "verdict \"13 leak suspects in 6 groups\"",
        "suspect main.lockWaiter x5 \"mutex\" \"sync.Mutex.Lock\" created_at=\"main.main\" blocked_at=\"main.lockWaiter\"",
        "suspect main.waitGroupWaiter x3 \"wait_group\" \"semacquire\" created_at=\"main.main\" blocked_at=\"main.waitGroupWaiter\"",
        "suspect main.rlockWaiter x2 \"rw_mutex\" \"sync.RWMutex.RLock\" created_at=\"main.main\" blocked_at=\"main.rlockWaiter\"",
        "suspect main.transferAB x1 \"mutex\" \"sync.Mutex.Lock\" created_at=\"main.main\" blocked_at=\"main.transferAB\"",
        "suspect main.transferBA x1 \"mutex\" \"sync.Mutex.Lock\" created_at=\"main.main\" blocked_at=\"main.transferBA\"",
    ],
    ..LOCKS_PID
};
