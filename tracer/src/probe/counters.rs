//! Kernel-side counters: ring-buffer drops per event kind, stack failures.

use aya::maps::{MapData, PerCpuArray};
use tracer_common::{COUNTER_PARENTS_LOST, COUNTER_STACK_ERRORS, EventKind};

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KernelCounters {
    /// Events the ring buffer had no room for, per event kind name.
    pub dropped: std::collections::BTreeMap<String, u64>,
    pub dropped_total: u64,
    /// User stacks that could not be captured (their stack event dropped).
    pub stack_errors: u64,
    /// Creations whose creator goid was lost (Go < 1.21: a per-thread slot
    /// taken by another thread).
    #[serde(default)]
    pub parents_lost: u64,
}

pub fn read(map: &PerCpuArray<&MapData, u64>) -> KernelCounters {
    let sum = |slot: u32| -> u64 { map.get(&slot, 0).map(|v| v.iter().sum()).unwrap_or(0) };
    let mut c = KernelCounters::default();
    for kind in EventKind::ALL {
        let n = sum(kind.index());
        c.dropped.insert(kind.name().to_string(), n);
        c.dropped_total += n;
    }
    c.stack_errors = sum(COUNTER_STACK_ERRORS);
    c.parents_lost = sum(COUNTER_PARENTS_LOST);
    c
}
