//! Kernel-side counters: ring-buffer drops per event kind, stacks lost or
//! cut, wait lists cut, failed user-memory reads per program. Every count
//! is an `Option`: `None` (null in report.json, "unknown" in the summary)
//! when the counters could not be read, never a 0 that was not seen.

use std::collections::BTreeMap;

use aya::maps::{MapData, PerCpuArray};
use tracer_common::{
    COUNTER_PARENTS_LOST, COUNTER_STACK_ERRORS, COUNTER_STACKS_TRUNCATED,
    COUNTER_WAIT_CHANS_TRUNCATED, EventKind, Program,
};

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KernelCounters {
    /// Events the ring buffer had no room for, per event kind name (empty
    /// when unknown).
    pub dropped: BTreeMap<String, u64>,
    pub dropped_total: Option<u64>,
    /// User stacks that could not be captured (their stack event dropped).
    pub stack_errors: Option<u64>,
    /// Creations whose creator goid was lost (Go < 1.21: a per-thread slot
    /// taken by another thread).
    #[serde(default)]
    pub parents_lost: Option<u64>,
    /// Events whose user stack was cut at the walk's depth limit (127
    /// frames): the outermost frames are missing.
    #[serde(default)]
    pub stacks_truncated: Option<u64>,
    /// Parks whose wait list was cut at `MAX_WAIT_CHANS` channels: a
    /// goroutine in a larger `select` may miss its context.
    #[serde(default)]
    pub wait_chans_truncated: Option<u64>,
    /// Failed reads of the target's memory, per program name (the programs
    /// with none are left out; empty when unknown).
    #[serde(default)]
    pub read_errors: BTreeMap<String, u64>,
    #[serde(default)]
    pub read_errors_total: Option<u64>,
    /// Probe hits on the target's threads, per program name (the programs
    /// with none are left out; empty when unknown).
    #[serde(default)]
    pub hits: BTreeMap<String, u64>,
    #[serde(default)]
    pub hits_total: Option<u64>,
}

/// Sums the per-CPU values of every slot; all `None` if any slot cannot be
/// read.
pub fn read(map: &PerCpuArray<&MapData, u64>) -> KernelCounters {
    let sum = |slot: u32| -> Option<u64> {
        map.get(&slot, 0)
            .inspect_err(|e| log::warn!("reading counter slot {slot}: {e}"))
            .ok()
            .map(|v| v.iter().sum())
    };
    from_slots(sum).unwrap_or_default()
}

/// The counters from a slot reader; `None` if any slot is unreadable.
fn from_slots(sum: impl Fn(u32) -> Option<u64>) -> Option<KernelCounters> {
    let mut c = KernelCounters::default();
    let mut dropped_total = 0;
    for kind in EventKind::ALL {
        let n = sum(kind.index())?;
        c.dropped.insert(kind.name().to_string(), n);
        dropped_total += n;
    }
    c.dropped_total = Some(dropped_total);
    c.stack_errors = Some(sum(COUNTER_STACK_ERRORS)?);
    c.parents_lost = Some(sum(COUNTER_PARENTS_LOST)?);
    c.stacks_truncated = Some(sum(COUNTER_STACKS_TRUNCATED)?);
    c.wait_chans_truncated = Some(sum(COUNTER_WAIT_CHANS_TRUNCATED)?);
    let mut total = 0;
    for p in Program::ALL {
        let n = sum(p.read_errors_slot())?;
        if n > 0 {
            c.read_errors.insert(p.name().to_string(), n);
        }
        total += n;
    }
    c.read_errors_total = Some(total);
    let hits = hits_from_slots(&sum)?;
    c.hits_total = Some(hits.values().sum());
    c.hits = hits
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(p, n)| (p.name().to_string(), n))
        .collect();
    Some(c)
}

/// Hits per program (every program); `None` if a slot is unreadable.
fn hits_from_slots(sum: &impl Fn(u32) -> Option<u64>) -> Option<BTreeMap<Program, u64>> {
    Program::ALL
        .iter()
        .map(|p| Some((*p, sum(p.hits_slot())?)))
        .collect()
}

/// The hit counters alone (what the overhead budget reads often): hits per
/// program; `None` if a slot is unreadable.
pub fn read_hits(map: &PerCpuArray<&MapData, u64>) -> Option<BTreeMap<Program, u64>> {
    hits_from_slots(&|slot: u32| map.get(&slot, 0).ok().map(|v| v.iter().sum()))
}

/// A count for the summary: the number, or "unknown".
pub fn shown(n: Option<u64>) -> String {
    n.map_or_else(|| "unknown".to_string(), |n| n.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_slot_makes_every_count_unknown() {
        let c = from_slots(|slot| (slot != COUNTER_STACKS_TRUNCATED).then_some(1));
        assert_eq!(c, None);
        let c = KernelCounters::default();
        assert_eq!((c.dropped_total, c.read_errors_total), (None, None));
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["dropped_total"], serde_json::Value::Null);
        assert_eq!(shown(c.dropped_total), "unknown");
    }

    #[test]
    fn read_errors_are_per_program() {
        let slot = Program::GoPark.read_errors_slot();
        let c = from_slots(|s| Some(if s == slot { 3 } else { 0 })).unwrap();
        assert_eq!(c.read_errors_total, Some(3));
        assert_eq!(
            c.read_errors.into_iter().collect::<Vec<_>>(),
            [("go_park".to_string(), 3)]
        );
        assert_eq!(c.dropped_total, Some(0));
    }

    /// The per-program counters are named after the object's programs: the
    /// list in tracer-common and the object agree both ways.
    #[test]
    fn program_list_matches_the_object() {
        use object::{Object as _, ObjectSection as _, ObjectSymbol as _};
        let file = object::File::parse(crate::probe::loader::EBPF_OBJECT).unwrap();
        let mut in_object: Vec<String> = file
            .symbols()
            .filter(|s| s.kind() == object::SymbolKind::Text && s.is_global())
            .filter(|s| {
                s.section_index()
                    .and_then(|i| file.section_by_index(i).ok())
                    .and_then(|sec| sec.name().ok().map(|n| n.starts_with("uprobe")))
                    .unwrap_or(false)
            })
            .filter_map(|s| s.name().ok().map(str::to_string))
            .collect();
        in_object.sort();
        let mut listed: Vec<String> = Program::ALL.iter().map(|p| p.name().to_string()).collect();
        listed.sort();
        assert_eq!(in_object, listed);
    }

    #[test]
    fn recordings_from_before_keep_their_counts() {
        let old = r#"{"dropped":{"go_park":2},"dropped_total":2,"stack_errors":0}"#;
        let c: KernelCounters = serde_json::from_str(old).unwrap();
        assert_eq!((c.dropped_total, c.stack_errors), (Some(2), Some(0)));
        assert_eq!((c.parents_lost, c.stacks_truncated), (None, None));
    }
}
