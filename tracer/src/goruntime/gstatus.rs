//! What a snapshot of a running program needs to know about the Go runtime
//! besides offsets: what each goroutine status means, where the runtime
//! loads its goroutine list, and how a goroutine's saved state leads to its
//! stack.
//!
//! Status *values* come from the target (`runtime._G*` constants in DWARF,
//! or the per-version table); only their names are interpreted here.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

/// Runtime functions whose code loads `runtime.allglen` then
/// `runtime.allgptr` (the lock-free way to read `allgs`, proc.go
/// `atomicAllG`), tried in order to find them in binaries without symbols.
pub const ALLG_READERS: &[&str] = &["runtime.forEachGRace", "runtime.forEachG"];

/// On amd64, `runtime.entersyscall` saves its caller's frame pointer right
/// below its return address, which sits right below `g.syscallsp` (the
/// caller's SP): the frame pointer of a goroutine in a syscall is the word
/// at `syscallsp - 16`. Needed before Go 1.23, which added `g.syscallbp`.
pub const AMD64_SYSCALL_BP_BELOW_SP: u64 = 16;

/// A live goroutine's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GState {
    /// Ready to run, waiting for a P (or never run yet).
    Runnable,
    /// On a thread right now: its saved state is stale, no stack.
    Running,
    /// In a system call.
    Syscall,
    /// Parked (`gopark`), with a wait reason.
    Waiting,
    /// Suspended by an asynchronous preemption.
    Preempted,
    /// Parked on something unreachable, as found by the Go 1.26+
    /// goroutine leak detector (GOEXPERIMENT=goroutineleakprofile).
    Leaked,
}

impl GState {
    /// Go's word for the state in tracebacks (waiting goroutines show their
    /// wait reason instead).
    pub fn text(self) -> &'static str {
        match self {
            GState::Runnable => "runnable",
            GState::Running => "running",
            GState::Syscall => "syscall",
            GState::Waiting => "waiting",
            GState::Preempted => "preempted",
            GState::Leaked => "leaked",
        }
    }

    /// Parked: its wait reason and `waitsince` mean something.
    pub fn is_parked(self) -> bool {
        matches!(self, GState::Waiting | GState::Leaked)
    }
}

/// What a raw `g.atomicstatus` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Live(GState),
    /// `_Gdead`, `_Gdeadextra` or `_Gidle`: not a goroutine (free g).
    Free,
    /// `_Gcopystack`: its stack is being moved; read it again.
    Moving,
    /// A value the target's constants do not name.
    Unknown,
}

/// The target's status numbering.
#[derive(Clone, Debug)]
pub struct StatusTable {
    scan_bit: u32,
    by_value: HashMap<u32, Status>,
}

impl StatusTable {
    /// From `runtime._G*` constants (value -> name without "runtime.").
    /// Errors when the names a snapshot cannot do without are missing.
    pub fn new(constants: &BTreeMap<u32, String>) -> Result<StatusTable, String> {
        let mut scan_bit = None;
        let mut by_value = HashMap::new();
        for (value, name) in constants {
            let status = match name.as_str() {
                "_Gscan" => {
                    scan_bit = Some(*value);
                    continue;
                }
                "_Grunnable" => Status::Live(GState::Runnable),
                "_Grunning" => Status::Live(GState::Running),
                "_Gsyscall" => Status::Live(GState::Syscall),
                "_Gwaiting" => Status::Live(GState::Waiting),
                "_Gpreempted" => Status::Live(GState::Preempted),
                "_Gleaked" => Status::Live(GState::Leaked),
                "_Gidle" | "_Gdead" | "_Gdeadextra" => Status::Free,
                "_Gcopystack" => Status::Moving,
                // _Gscan+X combinations are the scan bit on X.
                _ => continue,
            };
            by_value.insert(*value, status);
        }
        let missing: Vec<&str> = ["_Gscan", "_Gdead", "_Gwaiting", "_Grunning", "_Grunnable"]
            .into_iter()
            .filter(|n| !constants.values().any(|c| c == n))
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "goroutine status constants missing: {}",
                missing.join(", ")
            ));
        }
        Ok(StatusTable {
            scan_bit: scan_bit.unwrap_or(0),
            by_value,
        })
    }

    /// Meaning of a raw status; the GC's scan bit is ignored (a goroutine
    /// being scanned keeps its state and its stack does not move).
    pub fn classify(&self, raw: u32) -> Status {
        self.by_value
            .get(&(raw & !self.scan_bit))
            .copied()
            .unwrap_or(Status::Unknown)
    }
}

/// `g.waitsince` is not the time a goroutine parked: the GC sets it to the
/// start time of the first cycle that finds the goroutine parked (or in a
/// syscall), and `execute`/`exitsyscall` reset it to 0. A non-zero value
/// (CLOCK_MONOTONIC ns, as `nanotime`) thus means "blocked since at least
/// that GC": a lower bound on how long it has been blocked, give or take one
/// GC cycle. Zero means no GC ran since it parked.
pub fn blocked_since(waitsince: i64, state: GState) -> Option<u64> {
    (waitsince > 0 && (state.is_parked() || state == GState::Syscall)).then_some(waitsince as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn go126() -> BTreeMap<u32, String> {
        [
            (0, "_Gidle"),
            (1, "_Grunnable"),
            (2, "_Grunning"),
            (3, "_Gsyscall"),
            (4, "_Gwaiting"),
            (5, "_Gmoribund_unused"),
            (6, "_Gdead"),
            (7, "_Genqueue_unused"),
            (8, "_Gcopystack"),
            (9, "_Gpreempted"),
            (10, "_Gleaked"),
            (11, "_Gdeadextra"),
            (0x1000, "_Gscan"),
            (0x1004, "_Gscanwaiting"),
        ]
        .into_iter()
        .map(|(v, n)| (v, n.to_string()))
        .collect()
    }

    #[test]
    fn statuses_by_name() {
        let t = StatusTable::new(&go126()).unwrap();
        assert_eq!(t.classify(4), Status::Live(GState::Waiting));
        assert_eq!(t.classify(0x1004), Status::Live(GState::Waiting));
        assert_eq!(t.classify(0x1001), Status::Live(GState::Runnable));
        assert_eq!(t.classify(6), Status::Free);
        assert_eq!(t.classify(11), Status::Free);
        assert_eq!(t.classify(8), Status::Moving);
        assert_eq!(t.classify(5), Status::Unknown);
        assert_eq!(t.classify(77), Status::Unknown);
        let mut old = go126();
        old.remove(&0x1000);
        old.remove(&6);
        let err = StatusTable::new(&old).unwrap_err();
        assert_eq!(err, "goroutine status constants missing: _Gscan, _Gdead");
    }

    #[test]
    fn waitsince_is_a_lower_bound_when_set() {
        assert_eq!(blocked_since(0, GState::Waiting), None);
        assert_eq!(blocked_since(-5, GState::Waiting), None);
        assert_eq!(blocked_since(123, GState::Waiting), Some(123));
        assert_eq!(blocked_since(123, GState::Syscall), Some(123));
        assert_eq!(blocked_since(123, GState::Runnable), None);
    }
}
