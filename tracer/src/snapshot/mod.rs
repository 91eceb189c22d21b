//! The goroutines that already exist: read from a running process's memory
//! (`/proc/PID/mem`, never stopping it) through `runtime.allgs`.
//!
//! For each goroutine that is not dead: goid, state, wait reason, blocked
//! since (`g.waitsince`, see [`crate::goruntime::snapshot::blocked_since`]),
//! creation site (`gopc`), start function (`startpc`), parent goid (Go
//! 1.21+) and its stack, walked by frame pointers from its saved scheduler
//! state. `gotrace snapshot` prints them grouped ([`group`]); a `--pid`
//! trace seeds its model with them, so goroutines created before attach are
//! counted exactly in the leak report.
//!
//! Stacks get ids of their own, far below any kernel stack id, and live in
//! [`Snapshot::stacks`] in the kernel's convention (innermost first, the
//! first pc exact, the rest return addresses), so everything downstream
//! symbolises them like the kernel's.

pub mod cmd;
pub mod group;
pub mod mem;
pub mod read;
pub mod walk;

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::gobin::layout::{LayoutSource, RuntimeLayout};
use crate::gobin::{Arch, GoBinary};
use crate::goruntime::snapshot::{GState, StatusTable, blocked_since};
use mem::ProcMem;

/// Snapshot stack ids count down from here; kernel stack ids are ≥ 0 and
/// `NO_STACK` is -1.
pub const FIRST_STACK_ID: i32 = i32::MIN / 2;

/// Whether a stack id is one of a snapshot's.
pub fn is_snapshot_stack(id: i32) -> bool {
    id <= FIRST_STACK_ID
}

/// `len(allgs)` beyond this is a misread, not a program.
const MAX_ALLGS: u64 = 1 << 24;
/// Re-reads of the goroutine list when it was reallocated while read.
const LIST_RETRIES: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("no process with PID {0}")]
    NoSuchProcess(u32),
    /// `advice` comes from [`crate::target::AccessFacts::advice`].
    #[error("permission denied reading the memory of PID {pid}: {advice}")]
    Permission { pid: u32, advice: String },
    #[error("reading the memory of PID {pid}: {source}")]
    Io {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("PID {0} exited while its goroutines were read")]
    Gone(u32),
    #[error("cannot read the goroutines of this binary: {0}")]
    Unsupported(String),
    #[error("runtime.allgs of PID {pid} does not look right (runtime layout from {origin}): {why}")]
    BadList {
        pid: u32,
        origin: LayoutSource,
        why: String,
    },
}

/// One goroutine as read. Addresses are the process's (load bias included).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapGoroutine {
    pub goid: u64,
    /// `g.parentGoid` (Go 1.21+).
    pub parent_goid: Option<u64>,
    pub gopc: u64,
    pub startpc: u64,
    pub state: GState,
    /// Raw `g.waitreason` of a parked goroutine (the target's numbering).
    pub wait_reason: Option<u8>,
    /// CLOCK_MONOTONIC ns it has been blocked since at least (`waitsince`:
    /// set by the first GC that saw it blocked); None when unknown.
    pub blocked_since_ns: Option<u64>,
    /// Its stack in [`Snapshot::stacks`]; None for running goroutines and
    /// those that kept changing while read.
    pub stack: Option<i32>,
}

/// What reading took and what it had to leave out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapStats {
    /// `len(allgs)`: every g ever allocated, free ones included.
    pub allgs: u64,
    /// Free gs (dead, idle): not goroutines.
    pub free: u64,
    /// Goroutines read.
    pub live: u64,
    /// Goroutines read again because they changed while being read.
    pub retried: u64,
    /// Goroutines that kept changing: kept, without a stack.
    pub unstable: u64,
    /// gs never read consistently (unreadable, bad status or goid): left out.
    pub skipped: u64,
    /// Stacks whose frame-pointer chain broke before the outermost frame.
    pub stacks_truncated: u64,
    /// Re-reads of the goroutine list (reallocated while read).
    pub list_retries: u64,
    /// pread calls.
    pub reads: u64,
}

/// What the snapshot taken at attach gave (`trace.snapshot` in the report).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// Goroutines read (0 when it failed).
    pub goroutines: u64,
    pub took_ms: f64,
    /// Why there is none: the trace went on without it.
    pub error: Option<String>,
    pub stats: SnapStats,
}

impl SnapshotInfo {
    pub fn of(snap: &Snapshot) -> SnapshotInfo {
        SnapshotInfo {
            goroutines: snap.goroutines.len() as u64,
            took_ms: (snap.took_ns as f64 / 1e3).round() / 1e3,
            error: None,
            stats: snap.stats.clone(),
        }
    }

    pub fn failed(why: String) -> SnapshotInfo {
        SnapshotInfo {
            goroutines: 0,
            took_ms: 0.0,
            error: Some(why),
            stats: SnapStats::default(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// CLOCK_MONOTONIC ns when reading began, and how long it took.
    pub taken_ns: u64,
    pub took_ns: u64,
    /// Sorted by goid.
    pub goroutines: Vec<SnapGoroutine>,
    /// Raw stacks by id (see the module doc).
    pub stacks: BTreeMap<i32, Vec<u64>>,
    pub stats: SnapStats,
}

/// Reads `allglen` then `allgptr` (the runtime publishes the pointer
/// first), the list, then the pointer again: a reallocation in between
/// means reading again.
fn read_list(
    mem: &ProcMem,
    allglen: u64,
    allgptr: u64,
    bad: &dyn Fn(String) -> SnapshotError,
    stats: &mut SnapStats,
) -> Result<Vec<u64>, SnapshotError> {
    for _ in 0..LIST_RETRIES {
        let (Some(len), Some(ptr)) = (mem.u64(allglen), mem.u64(allgptr)) else {
            return Err(bad(format!(
                "cannot read allglen at {allglen:#x} / allgptr at {allgptr:#x}"
            )));
        };
        if len > MAX_ALLGS || (len > 0 && (ptr == 0 || !ptr.is_multiple_of(8))) {
            return Err(bad(format!("allglen {len}, allgptr {ptr:#x}")));
        }
        let mut buf = vec![0u8; len as usize * 8];
        let ok = mem.read(ptr, &mut buf);
        if ok && mem.u64(allgptr) == Some(ptr) {
            stats.allgs = len;
            return Ok(buf
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect());
        }
        stats.list_retries += 1;
    }
    Err(bad("it kept changing while read".into()))
}

/// Reads every goroutine of `pid`, which runs `bin` loaded at `bias`.
pub fn take(
    pid: u32,
    bin: &GoBinary,
    layout: &RuntimeLayout,
    bias: u64,
) -> Result<Snapshot, SnapshotError> {
    let off = layout.snapshot_offsets().ok_or_else(|| {
        SnapshotError::Unsupported("the runtime layout has no g.stack/g.sched/gobuf offsets".into())
    })?;
    let allg = layout.allg.ok_or_else(|| {
        SnapshotError::Unsupported(format!(
            "runtime.allgs not found (no DWARF variable, and no known code loads it for {} on {})",
            bin.version().raw,
            bin.arch()
        ))
    })?;
    let statuses = StatusTable::new(&layout.g_statuses).map_err(SnapshotError::Unsupported)?;
    let mem = ProcMem::open(pid)?;
    let taken_ns = crate::target::monotonic_ns();
    let clock = std::time::Instant::now();
    let mut stats = SnapStats::default();
    let bad = |why: String| SnapshotError::BadList {
        pid,
        origin: layout.source,
        why,
    };
    let list = read_list(
        &mem,
        allg.allglen.wrapping_add(bias),
        allg.allgptr.wrapping_add(bias),
        &bad,
        &mut stats,
    );
    let list = match list {
        Err(_) if !std::path::Path::new(&format!("/proc/{pid}")).exists() => {
            return Err(SnapshotError::Gone(pid));
        }
        other => other?,
    };
    let reader = read::Reader {
        mem: &mem,
        off,
        statuses: &statuses,
        amd64: bin.arch() == Arch::X86_64,
    };
    let mut live = reader.read_all(&list, &mut stats);
    if live.is_empty() && stats.skipped > 0 {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            return Err(SnapshotError::Gone(pid));
        }
        return Err(bad(format!(
            "none of its {} entries is a readable goroutine",
            list.len()
        )));
    }
    live.sort_by_key(|g| g.raw.goid);
    live.dedup_by_key(|g| g.raw.goid);

    let mut ids: HashMap<Vec<u64>, i32> = HashMap::new();
    let mut stacks = BTreeMap::new();
    let mut goroutines = Vec::with_capacity(live.len());
    for g in live {
        stats.stacks_truncated += u64::from(g.stack.truncated);
        let stack = (!g.stack.pcs.is_empty()).then(|| {
            let next = FIRST_STACK_ID - ids.len() as i32;
            *ids.entry(g.stack.pcs.clone()).or_insert_with(|| {
                stacks.insert(next, g.stack.pcs.clone());
                next
            })
        });
        let r = &g.raw;
        goroutines.push(SnapGoroutine {
            goid: r.goid,
            parent_goid: (r.parent_goid != 0).then_some(r.parent_goid),
            gopc: r.gopc,
            startpc: r.startpc,
            state: g.state,
            wait_reason: g.state.is_parked().then_some(r.waitreason),
            blocked_since_ns: blocked_since(r.waitsince, g.state).filter(|t| *t <= taken_ns),
            stack,
        });
    }
    stats.live = goroutines.len() as u64;
    stats.reads = mem.reads();
    Ok(Snapshot {
        taken_ns,
        took_ns: clock.elapsed().as_nanos() as u64,
        goroutines,
        stacks,
        stats,
    })
}

#[cfg(test)]
mod tests;
