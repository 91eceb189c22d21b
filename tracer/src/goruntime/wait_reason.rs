//! Wait reasons: the runtime constant's name (read from DWARF with its value),
//! Go's own string for it, and the leak pattern a Go developer recognises.

use serde::Serialize;

/// What a parked goroutine is waiting for, in leak-report terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Pattern {
    ChanReceive,
    ChanSend,
    NilChanReceive,
    NilChanSend,
    Select,
    EmptySelect,
    Sleep,
    Mutex,
    RwMutex,
    WaitGroup,
    Cond,
    IoWait,
    Semaphore,
    /// An HTTP client call waiting for its response (leak pattern 8).
    HttpClientWait,
    /// Standard-library goroutines that wait by design: listener accept
    /// loops, idle keep-alive connections, os/signal delivery.
    Idle,
    /// The runtime's own background work (GC, finalizers, scavenger...).
    Runtime,
    Other,
}

impl Pattern {
    /// Whether a goroutine parked past the leak threshold in this pattern is
    /// a suspect: the runtime's own waits and waits idle by design (an
    /// accept loop) are not. The report and the suspects flame graph both
    /// ask here.
    pub fn can_leak(self) -> bool {
        !matches!(self, Pattern::Runtime | Pattern::Idle)
    }
}

impl Pattern {
    /// The words a Go developer recognises.
    pub fn describe(self) -> &'static str {
        match self {
            Pattern::ChanReceive => "blocked channel receive (nobody sends or closes)",
            Pattern::ChanSend => "blocked channel send (no receiver)",
            Pattern::NilChanReceive => "receive from nil channel (blocks forever)",
            Pattern::NilChanSend => "send to nil channel (blocks forever)",
            Pattern::Select => "select with no ready case",
            Pattern::EmptySelect => "empty select{} (blocks forever)",
            Pattern::Sleep => "sleep/timer wait",
            Pattern::Mutex => "sync.Mutex wait (lock never released, or lock-order deadlock)",
            Pattern::RwMutex => "sync.RWMutex wait (lock never released, or RLock after Lock)",
            Pattern::WaitGroup => "sync.WaitGroup.Wait whose Done never comes",
            Pattern::Cond => "sync.Cond.Wait never signalled",
            Pattern::IoWait => "network/IO wait (peer never answers; no deadline?)",
            Pattern::Semaphore => "semaphore wait",
            Pattern::HttpClientWait => {
                "HTTP client call waiting for a response (no timeout or deadline?)"
            }
            Pattern::Idle => "standard-library wait that is idle by design",
            Pattern::Runtime => "runtime background wait",
            Pattern::Other => "other wait",
        }
    }

    /// Number in the leak-pattern catalogue (README), where one fits.
    pub fn leak_pattern_number(self) -> Option<u8> {
        match self {
            Pattern::ChanReceive | Pattern::NilChanReceive => Some(1),
            Pattern::ChanSend | Pattern::NilChanSend => Some(2),
            Pattern::Select | Pattern::EmptySelect => Some(3),
            Pattern::Sleep => Some(4),
            Pattern::IoWait | Pattern::HttpClientWait => Some(8),
            Pattern::Mutex | Pattern::RwMutex | Pattern::WaitGroup => Some(9),
            _ => None,
        }
    }
}

/// (runtime constant name, Go's `waitReasonStrings` entry, pattern).
/// Names are stable across versions; values are not (they come from DWARF).
const TABLE: &[(&str, &str, Pattern)] = &[
    ("waitReasonZero", "", Pattern::Other),
    (
        "waitReasonGCAssistMarking",
        "GC assist marking",
        Pattern::Runtime,
    ),
    ("waitReasonIOWait", "IO wait", Pattern::IoWait),
    (
        "waitReasonChanReceiveNilChan",
        "chan receive (nil chan)",
        Pattern::NilChanReceive,
    ),
    (
        "waitReasonChanSendNilChan",
        "chan send (nil chan)",
        Pattern::NilChanSend,
    ),
    ("waitReasonDumpingHeap", "dumping heap", Pattern::Runtime),
    (
        "waitReasonGarbageCollection",
        "garbage collection",
        Pattern::Runtime,
    ),
    (
        "waitReasonGarbageCollectionScan",
        "garbage collection scan",
        Pattern::Runtime,
    ),
    ("waitReasonPanicWait", "panicwait", Pattern::Other),
    ("waitReasonSelect", "select", Pattern::Select),
    (
        "waitReasonSelectNoCases",
        "select (no cases)",
        Pattern::EmptySelect,
    ),
    ("waitReasonGCAssistWait", "GC assist wait", Pattern::Runtime),
    ("waitReasonGCSweepWait", "GC sweep wait", Pattern::Runtime),
    (
        "waitReasonGCScavengeWait",
        "GC scavenge wait",
        Pattern::Runtime,
    ),
    (
        "waitReasonChanReceive",
        "chan receive",
        Pattern::ChanReceive,
    ),
    ("waitReasonChanSend", "chan send", Pattern::ChanSend),
    (
        "waitReasonFinalizerWait",
        "finalizer wait",
        Pattern::Runtime,
    ),
    ("waitReasonForceGCIdle", "force gc (idle)", Pattern::Runtime),
    (
        "waitReasonUpdateGOMAXPROCSIdle",
        "GOMAXPROCS updater (idle)",
        Pattern::Runtime,
    ),
    ("waitReasonSemacquire", "semacquire", Pattern::Semaphore),
    ("waitReasonSleep", "sleep", Pattern::Sleep),
    ("waitReasonSyncCondWait", "sync.Cond.Wait", Pattern::Cond),
    ("waitReasonSyncMutexLock", "sync.Mutex.Lock", Pattern::Mutex),
    (
        "waitReasonSyncRWMutexRLock",
        "sync.RWMutex.RLock",
        Pattern::RwMutex,
    ),
    (
        "waitReasonSyncRWMutexLock",
        "sync.RWMutex.Lock",
        Pattern::RwMutex,
    ),
    (
        "waitReasonSyncWaitGroupWait",
        "sync.WaitGroup.Wait",
        Pattern::WaitGroup,
    ),
    (
        "waitReasonTraceReaderBlocked",
        "trace reader (blocked)",
        Pattern::Runtime,
    ),
    (
        "waitReasonWaitForGCCycle",
        "wait for GC cycle",
        Pattern::Runtime,
    ),
    (
        "waitReasonGCWorkerIdle",
        "GC worker (idle)",
        Pattern::Runtime,
    ),
    (
        "waitReasonGCWorkerActive",
        "GC worker (active)",
        Pattern::Runtime,
    ),
    ("waitReasonPreempted", "preempted", Pattern::Other),
    ("waitReasonDebugCall", "debug call", Pattern::Other),
    (
        "waitReasonGCMarkTermination",
        "GC mark termination",
        Pattern::Runtime,
    ),
    (
        "waitReasonStoppingTheWorld",
        "stopping the world",
        Pattern::Runtime,
    ),
    (
        "waitReasonFlushProcCaches",
        "flushing proc caches",
        Pattern::Runtime,
    ),
    (
        "waitReasonTraceGoroutineStatus",
        "trace goroutine status",
        Pattern::Runtime,
    ),
    (
        "waitReasonTraceProcStatus",
        "trace proc status",
        Pattern::Runtime,
    ),
    (
        "waitReasonPageTraceFlush",
        "page trace flush",
        Pattern::Runtime,
    ),
    ("waitReasonCoroutine", "coroutine", Pattern::Other),
    (
        "waitReasonGCWeakToStrongWait",
        "GC weak to strong wait",
        Pattern::Runtime,
    ),
    ("waitReasonSynctestRun", "synctest.Run", Pattern::Other),
    ("waitReasonSynctestWait", "synctest.Wait", Pattern::Other),
    (
        "waitReasonSynctestChanReceive",
        "chan receive (durable)",
        Pattern::ChanReceive,
    ),
    (
        "waitReasonSynctestChanSend",
        "chan send (durable)",
        Pattern::ChanSend,
    ),
    (
        "waitReasonSynctestSelect",
        "select (durable)",
        Pattern::Select,
    ),
    (
        "waitReasonSynctestWaitGroupWait",
        "sync.WaitGroup.Wait (durable)",
        Pattern::WaitGroup,
    ),
    ("waitReasonCleanupWait", "cleanup wait", Pattern::Runtime),
];

/// A wait reason resolved against the target's constants.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct WaitReason {
    /// Go's string, as `runtime.Stack` / pprof print it ("chan receive").
    pub text: String,
    pub pattern: Pattern,
}

/// What a raw `g.waitreason` value means in a binary whose constants are
/// `names` (value → constant name, from DWARF): Go's text and the pattern,
/// or "wait reason N" when the binary does not say.
pub fn of_value(names: &std::collections::BTreeMap<u8, String>, value: u8) -> WaitReason {
    match names.get(&value) {
        Some(name) => from_constant(name),
        None => WaitReason {
            text: format!("wait reason {value}"),
            pattern: Pattern::Other,
        },
    }
}

/// Go's text for a raw `g.waitreason` value (see [`of_value`]).
pub fn text(names: &std::collections::BTreeMap<u8, String>, value: u8) -> String {
    of_value(names, value).text
}

/// Looks up a wait-reason constant name (without the `runtime.` prefix).
pub fn from_constant(name: &str) -> WaitReason {
    match TABLE.iter().find(|(n, _, _)| *n == name) {
        Some((_, text, pattern)) => WaitReason {
            text: (*text).to_string(),
            pattern: *pattern,
        },
        None => WaitReason {
            text: name.trim_start_matches("waitReason").to_string(),
            pattern: Pattern::Other,
        },
    }
}

/// Refines a pattern with the blocked stack. Before Go 1.20 (mutexes) and
/// 1.24 (WaitGroup) these all parked as plain "semacquire"; without DWARF
/// constants the reason is unknown ([`Pattern::Other`]) and the stack decides.
pub fn refine<'a>(pattern: Pattern, functions: impl IntoIterator<Item = &'a str>) -> Pattern {
    if !matches!(pattern, Pattern::Semaphore | Pattern::Other) {
        return pattern;
    }
    const BY_FRAME: &[(&str, Pattern)] = &[
        ("sync.(*WaitGroup).Wait", Pattern::WaitGroup),
        ("sync.(*RWMutex).", Pattern::RwMutex),
        ("sync.(*Mutex).", Pattern::Mutex),
        ("internal/sync.(*Mutex).", Pattern::Mutex),
        ("sync.(*Cond).Wait", Pattern::Cond),
        ("runtime.chanrecv", Pattern::ChanReceive),
        ("runtime.chansend", Pattern::ChanSend),
        ("runtime.selectgo", Pattern::Select),
        ("time.Sleep", Pattern::Sleep),
        ("runtime.netpollblock", Pattern::IoWait),
    ];
    for f in functions {
        if let Some((_, p)) = BY_FRAME.iter().find(|(prefix, _)| f.starts_with(prefix)) {
            return *p;
        }
    }
    pattern
}

/// Standard-library waits that are not leaks when no program code is on the
/// stack: (frame prefix, what it is).
const IDLE_BY_DESIGN: &[(&str, &str)] = &[
    ("internal/poll.(*FD).Accept", "listener accept loop"),
    (
        "net/http.(*persistConn).readLoop",
        "HTTP client keep-alive connection",
    ),
    (
        "net/http.(*persistConn).writeLoop",
        "HTTP client keep-alive connection",
    ),
    (
        "net/http.(*connReader).backgroundRead",
        "HTTP server connection",
    ),
    (
        "net/http.(*conn).serve",
        "idle HTTP server keep-alive connection",
    ),
    ("os/signal.signal_recv", "os/signal delivery loop"),
];

/// Full classification of a parked goroutine: the wait reason's pattern,
/// refined by its stack. `user_code` says whether any frame is the program's
/// own (not counting `go` statement wrappers).
pub fn classify_stack<'a>(
    pattern: Pattern,
    functions: impl IntoIterator<Item = &'a str> + Clone,
    user_code: bool,
) -> (Pattern, Option<&'static str>) {
    let pattern = refine(pattern, functions.clone());
    if user_code
        && functions
            .clone()
            .into_iter()
            .any(|f| f.starts_with("net/http.(*persistConn).roundTrip"))
    {
        return (Pattern::HttpClientWait, None);
    }
    if !user_code && pattern != Pattern::Runtime {
        for f in functions {
            if let Some((_, what)) = IDLE_BY_DESIGN
                .iter()
                .find(|(prefix, _)| f.starts_with(prefix))
            {
                return (Pattern::Idle, Some(what));
            }
        }
    }
    (pattern, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_by_design_and_http_client_waits() {
        let accept = [
            "runtime.gopark",
            "internal/poll.(*FD).Accept",
            "net.(*TCPListener).Accept",
        ];
        assert_eq!(
            classify_stack(Pattern::IoWait, accept, false),
            (Pattern::Idle, Some("listener accept loop"))
        );
        // The same wait with the program's own code on the stack is not idle.
        assert_eq!(
            classify_stack(Pattern::IoWait, accept, true),
            (Pattern::IoWait, None)
        );
        let client = [
            "runtime.gopark",
            "runtime.selectgo",
            "net/http.(*persistConn).roundTrip",
            "main.fetch",
        ];
        assert_eq!(
            classify_stack(Pattern::Select, client, true),
            (Pattern::HttpClientWait, None)
        );
    }

    #[test]
    fn known_and_unknown_constants() {
        let r = from_constant("waitReasonChanReceive");
        assert_eq!(r.text, "chan receive");
        assert_eq!(r.pattern, Pattern::ChanReceive);
        let u = from_constant("waitReasonSomethingNew");
        assert_eq!(u.text, "SomethingNew");
        assert_eq!(u.pattern, Pattern::Other);
    }

    #[test]
    fn semacquire_refined_by_stack() {
        let stack = [
            "runtime.gopark",
            "sync.runtime_Semacquire",
            "sync.(*WaitGroup).Wait",
            "main.f",
        ];
        assert_eq!(refine(Pattern::Semaphore, stack), Pattern::WaitGroup);
        let stack = [
            "sync.runtime_SemacquireMutex",
            "sync.(*Mutex).lockSlow",
            "sync.(*Mutex).Lock",
        ];
        assert_eq!(refine(Pattern::Semaphore, stack), Pattern::Mutex);
        assert_eq!(refine(Pattern::ChanSend, stack), Pattern::ChanSend);
    }
}

/// How Go's own goroutine leak detector (Go 1.26+: mgcmark.go
/// `internalBlocked`, mgc.go `isMaybeRunnable`) treats a parked goroutine;
/// gotrace's leak proof applies the same rule on every version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProofWait {
    /// Not a candidate: its stack is a root (sleep, IO wait, runtime waits,
    /// plain semaphores, synctest's durable waits...).
    Root,
    /// Nil-channel operations and `select {}`: no primitive, never woken.
    Never,
    /// Channel operations and `select`: woken if any channel is reachable.
    Chan,
    /// sync.Mutex/RWMutex/WaitGroup/Cond: woken if the semaphore's object is
    /// reachable.
    Sync,
}

/// The leak detector's view of a wait-reason constant (name without the
/// `runtime.` prefix). A plain `waitReasonSemacquire` is a root here: the
/// caller refines it with the stack ([`refine`]) for Go versions before
/// the sync-specific reasons existed.
pub fn proof_wait(name: &str) -> ProofWait {
    match name {
        "waitReasonChanReceiveNilChan"
        | "waitReasonChanSendNilChan"
        | "waitReasonSelectNoCases" => ProofWait::Never,
        "waitReasonSelect" | "waitReasonChanReceive" | "waitReasonChanSend" => ProofWait::Chan,
        "waitReasonSyncCondWait"
        | "waitReasonSyncMutexLock"
        | "waitReasonSyncRWMutexRLock"
        | "waitReasonSyncRWMutexLock"
        | "waitReasonSyncWaitGroupWait" => ProofWait::Sync,
        _ => ProofWait::Root,
    }
}
