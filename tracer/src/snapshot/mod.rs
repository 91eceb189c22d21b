//! The goroutines that already exist: read from a running process's memory
//! (`/proc/PID/mem`, never stopping it) through `runtime.allgs`.
//!
//! For each goroutine that is not dead: goid, state, wait reason, blocked
//! since (`g.waitsince`, see [`crate::goruntime::gstatus::blocked_since`]),
//! creation site (`gopc`), start function (`startpc`), parent goid (Go
//! 1.21+) and its stack, walked by frame pointers from its saved scheduler
//! state. The result is a [`Snapshot`] (defined with the model, which a
//! `--pid` trace seeds with it so goroutines created before attach are
//! counted exactly); `gotrace snapshot` prints it grouped
//! (`report::snapshot`).

pub mod read;
pub mod walk;

use std::collections::{BTreeMap, HashMap};

use crate::gobin::layout::{LayoutSource, RuntimeLayout};
use crate::gobin::{Arch, GoBinary};
use crate::goruntime::gstatus::{StatusTable, blocked_since};
use crate::model::existing::{FIRST_STACK_ID, SnapGoroutine, SnapStats, Snapshot};
use crate::process::mem::ProcMem;

/// `len(allgs)` beyond this is a misread, not a program.
const MAX_ALLGS: u64 = 1 << 24;
/// Re-reads of the goroutine list when it was reallocated while read.
const LIST_RETRIES: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("no process with PID {0}")]
    NoSuchProcess(u32),
    /// `advice` comes from [`crate::process::AccessFacts::advice`].
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

/// Every live goroutine of a process as read, before interning: what the
/// leak proof works on.
pub struct LiveRead {
    pub mem: ProcMem,
    pub taken_ns: u64,
    pub clock: std::time::Instant,
    pub live: Vec<read::LiveG>,
    /// Every entry of `allgs` (dead goroutines' g structs too).
    pub all: Vec<u64>,
    pub stats: SnapStats,
    /// The g structs skipped because they could not be read.
    pub skipped_gps: Vec<u64>,
}

/// Stack ids that stay the same across the snapshots of one trace: each
/// distinct stack gets one id, counting down from [`FIRST_STACK_ID`], the
/// first time any snapshot reads it.
#[derive(Debug, Default)]
pub struct StackIds {
    ids: HashMap<Vec<u64>, i32>,
}

impl StackIds {
    /// The id of `pcs`, a new one if it was never seen.
    fn id(&mut self, pcs: &[u64]) -> i32 {
        if let Some(id) = self.ids.get(pcs) {
            return *id;
        }
        let id = FIRST_STACK_ID - self.ids.len() as i32;
        self.ids.insert(pcs.to_vec(), id);
        id
    }
}

/// Reads every goroutine of `pid`, which runs `bin` loaded at `bias`.
pub fn take(
    pid: u32,
    bin: &GoBinary,
    layout: &RuntimeLayout,
    bias: u64,
) -> Result<Snapshot, SnapshotError> {
    take_with(pid, bin, layout, bias, &mut StackIds::default())
}

/// [`take`], naming stacks with `ids` (kept from one snapshot to the next
/// by a trace that samples, so that a stack keeps its id).
pub fn take_with(
    pid: u32,
    bin: &GoBinary,
    layout: &RuntimeLayout,
    bias: u64,
    ids: &mut StackIds,
) -> Result<Snapshot, SnapshotError> {
    let read = read_live(pid, bin, layout, bias, None)?;
    Ok(into_snapshot(read, ids))
}

/// The snapshot of goroutines read by [`read_live`], stacks named by `ids`.
pub fn into_snapshot(read: LiveRead, ids: &mut StackIds) -> Snapshot {
    let LiveRead {
        mem,
        taken_ns,
        clock,
        live,
        mut stats,
        skipped_gps,
        ..
    } = read;
    let (goroutines, stacks) = intern(live, taken_ns, &mut stats, ids);
    stats.live = goroutines.len() as u64;
    stats.reads = mem.reads();
    Snapshot {
        taken_ns,
        took_ns: clock.elapsed().as_nanos() as u64,
        goroutines,
        stacks,
        stats,
        skipped_gps,
    }
}

/// Reads every live goroutine of `pid` (sorted by goid), also reading
/// `g.param` when `param` gives its offset.
pub fn read_live(
    pid: u32,
    bin: &GoBinary,
    layout: &RuntimeLayout,
    bias: u64,
    param: Option<u64>,
) -> Result<LiveRead, SnapshotError> {
    let mut off = layout.snapshot_offsets().ok_or_else(|| {
        SnapshotError::Unsupported("the runtime layout has no g.stack/g.sched/gobuf offsets".into())
    })?;
    off.param = param;
    let allg = layout.allg.ok_or_else(|| {
        SnapshotError::Unsupported(format!(
            "runtime.allgs not found (no DWARF variable, and no known code loads it for {} on {})",
            bin.version().raw,
            bin.arch()
        ))
    })?;
    let statuses = StatusTable::new(&layout.g_statuses).map_err(SnapshotError::Unsupported)?;
    let mem = open_mem(pid)?;
    let taken_ns = crate::process::monotonic_ns();
    let clock = std::time::Instant::now();
    let mut stats = SnapStats::default();
    let bad = |why: String| SnapshotError::BadList {
        pid,
        origin: layout.source,
        why,
    };
    let gone = || !std::path::Path::new(&format!("/proc/{pid}")).exists();
    let list = read_list(
        &mem,
        allg.allglen.wrapping_add(bias),
        allg.allgptr.wrapping_add(bias),
        &bad,
        &mut stats,
    );
    let list = match list {
        Err(_) if gone() => return Err(SnapshotError::Gone(pid)),
        other => other?,
    };
    let reader = read::Reader {
        mem: &mem,
        off,
        statuses: &statuses,
        amd64: bin.arch() == Arch::X86_64,
    };
    let (mut live, skipped_gps) = reader.read_all(&list, &mut stats);
    if live.is_empty() && stats.skipped > 0 {
        if gone() {
            return Err(SnapshotError::Gone(pid));
        }
        return Err(bad(format!(
            "none of its {} entries is a readable goroutine",
            list.len()
        )));
    }
    live.sort_by_key(|g| g.raw.goid);
    live.dedup_by_key(|g| g.raw.goid);
    Ok(LiveRead {
        mem,
        taken_ns,
        clock,
        live,
        all: list,
        stats,
        skipped_gps,
    })
}

/// `/proc/PID/mem`, with the error a user can act on.
pub fn open_mem(pid: u32) -> Result<ProcMem, SnapshotError> {
    ProcMem::open(pid).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => SnapshotError::NoSuchProcess(pid),
        std::io::ErrorKind::PermissionDenied => SnapshotError::Permission {
            pid,
            advice: crate::process::AccessFacts::gather(pid).advice(),
        },
        _ => SnapshotError::Io { pid, source: e },
    })
}

/// The goroutines as the model takes them, each distinct stack once under
/// its id in `ids`.
fn intern(
    live: Vec<read::LiveG>,
    taken_ns: u64,
    stats: &mut SnapStats,
    ids: &mut StackIds,
) -> (Vec<SnapGoroutine>, BTreeMap<i32, Vec<u64>>) {
    let mut stacks = BTreeMap::new();
    let mut goroutines = Vec::with_capacity(live.len());
    for g in live {
        stats.stacks_truncated += u64::from(g.stack.truncated);
        let stack = (!g.stack.pcs.is_empty()).then(|| {
            let id = ids.id(&g.stack.pcs);
            stacks.entry(id).or_insert_with(|| g.stack.pcs.clone());
            id
        });
        let r = &g.raw;
        goroutines.push(SnapGoroutine {
            gp: g.gp,
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
    (goroutines, stacks)
}

#[cfg(test)]
mod tests;
