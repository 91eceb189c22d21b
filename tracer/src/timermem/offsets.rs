//! Where the runtime keeps its timers, from the binary's DWARF: each P's
//! heap (`p.timers.heap`, `[]timerWhen`, from Go 1.23; `p.timers`,
//! `[]*timer`, before), a timer's fields, and the states that mean
//! stopped (constants of the binary, not of gotrace).

use crate::gobin::dwarf_index::DwarfIndex;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offsets {
    /// Link-time address of `runtime.allp`.
    pub allp: u64,
    /// The heap slice inside a P, and the size of one of its elements (the
    /// timer pointer is its first word).
    pub p_heap: u64,
    pub heap_elem: u64,
    /// `timer.period`, `.f` (a func value), `.arg` (an `any`).
    pub period: u64,
    pub f: u64,
    pub arg: u64,
    /// Where the state is read, and its size: `timer.astate` (Go 1.23+,
    /// the atomic copy readable without the timer's lock) or
    /// `timer.status`.
    pub state: (u64, u64),
    /// States (before Go 1.23: `timerDeleted`, `timerRemoving`,
    /// `timerRemoved`) or bits (Go 1.23+: `timerZombie`) of a stopped
    /// timer still in a heap.
    pub stopped: Vec<u64>,
    pub stopped_bits: u64,
    /// `timer.isChan` (Go 1.23+).
    pub is_chan: Option<u64>,
    /// `hchan.recvq` (its first sudog) and `sudog.next`.
    pub chan_recvq: u64,
    pub sudog_next: u64,
}

impl Offsets {
    pub fn from_dwarf(index: &DwarfIndex) -> Result<Offsets, String> {
        let missing = |what: &str| format!("timer field offsets unknown: no {what} in the DWARF");
        let member = |strukt: &str, name: &str| -> Result<(u64, Option<u64>), String> {
            let s = index
                .structure(strukt)
                .map_err(|e| format!("timer field offsets unknown: {e}"))?;
            s.member(name)
                .map(|m| (m.off, m.ty))
                .ok_or_else(|| missing(&format!("{strukt}.{name}")))
        };
        let allp = index
            .variable("runtime.allp")
            .ok_or_else(|| missing("runtime.allp"))?
            .addr;
        let (p_timers, _) = member("runtime.p", "timers")?;
        // Go 1.23+: a `timers` struct whose heap holds 16-byte timerWhen.
        let (p_heap, heap_elem) = match member("runtime.timers", "heap") {
            Ok((heap, _)) => (p_timers + heap, 16),
            Err(_) => (p_timers, 8),
        };
        let t = "runtime.timer";
        let state = match member(t, "astate") {
            Ok((off, _)) => (off, 1),
            Err(_) => (member(t, "status")?.0, 4),
        };
        let constant = |name: &str| index.constant(name).map(|v| v as u64);
        let stopped: Vec<u64> = [
            "runtime.timerDeleted",
            "runtime.timerRemoving",
            "runtime.timerRemoved",
        ]
        .iter()
        .filter_map(|n| constant(n))
        .collect();
        let stopped_bits = constant("runtime.timerZombie").unwrap_or(0);
        if stopped.is_empty() && stopped_bits == 0 {
            return Err(missing("timer state constant"));
        }
        Ok(Offsets {
            allp,
            p_heap,
            heap_elem,
            period: member(t, "period")?.0,
            f: member(t, "f")?.0,
            arg: member(t, "arg")?.0,
            state,
            stopped,
            stopped_bits,
            is_chan: member(t, "isChan").ok().map(|(o, _)| o),
            chan_recvq: member("runtime.hchan", "recvq")?.0,
            sudog_next: member("runtime.sudog", "next")?.0,
        })
    }
}
