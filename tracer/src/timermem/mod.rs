//! Timers read from the target's memory, without probes (sampled and
//! budgeted modes, where the timer probes are not attached): the runtime's
//! timer heaps, one per P, by callback and period — the tickers and timers
//! that will fire, and how many goroutines wait on each channel timer's
//! channel.
//!
//! What the heaps cannot tell is listed with every read: where a timer was
//! made (no probe saw it), and, from Go 1.23, the channel timers nobody
//! waits on (the runtime keeps them out of the heaps; a ticker only a
//! leaked goroutine holds is one of them), which only `--full` sees.

mod offsets;

use std::collections::BTreeMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::ctxmem::Target;
use crate::process::mem::{Memory, ProcMem, pointer_slice};
use offsets::Offsets;

/// Ps read, timers per heap, and waiters counted per channel, at most.
const MAX_PS: u64 = 1024;
const MAX_PER_HEAP: u64 = 100_000;
const MAX_WAITERS: u64 = 100_000;
/// Groups listed.
const MAX_GROUPS: usize = 100;

/// What memory cannot tell, listed with every read.
pub const NOT_DECIDABLE: [&str; 2] = [
    "where a timer or ticker was made, and whether it is stopped later (needs --full: the timer probes)",
    "from Go 1.23, channel timers and tickers nobody waits on: the runtime keeps them out of its heaps (a ticker only a leaked goroutine holds is one)",
];

/// The read, as `report.json` shows it under `timers.from_memory`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FromMemory {
    pub read: bool,
    /// Why nothing (or not everything) was read.
    pub error: Option<String>,
    pub took_ms: f64,
    /// Ps whose timer heap was read.
    pub ps: u64,
    /// Timers in the heaps that will fire, and of them the periodic ones.
    pub timers: u64,
    pub periodic: u64,
    /// Timers still in a heap but stopped or deleted (removed when the P
    /// next cleans its heap; they do not fire).
    pub stopped_in_heaps: u64,
    /// The timers that will fire, by callback and period, most first.
    pub groups: Vec<Group>,
    pub groups_truncated: bool,
    pub not_decidable: Vec<String>,
    /// Heaps, timers and channels that could not be read (or changed
    /// while read).
    pub read_errors: u64,
}

/// Timers with the same callback and period.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Group {
    /// The function the runtime calls when it fires (`time.sendTime`: a
    /// `time.Timer` or `time.Ticker` channel; `time.goFunc`: `AfterFunc`).
    pub callback: String,
    /// Null for a one-shot timer.
    pub period_s: Option<f64>,
    pub count: u64,
    /// Channel timers (`time.Timer`, `time.Ticker`): goroutines parked
    /// receiving from their channels.
    pub channel: bool,
    pub waiting_goroutines: u64,
}

impl FromMemory {
    /// Nothing read, and why.
    pub fn not_read(why: String) -> FromMemory {
        FromMemory {
            error: Some(why),
            not_decidable: NOT_DECIDABLE.map(String::from).to_vec(),
            ..Default::default()
        }
    }
}

/// Reads the timer heaps of `t`'s process as they are now.
pub fn read(t: &Target<'_>) -> FromMemory {
    let clock = Instant::now();
    let mut out = read_inner(t).unwrap_or_else(FromMemory::not_read);
    // Whole microseconds: a shorter float reads back the same from a
    // recording (a replay's report equals the live one).
    out.took_ms = (clock.elapsed().as_secs_f64() * 1e6).round() / 1e3;
    out
}

fn read_inner(t: &Target<'_>) -> Result<FromMemory, String> {
    let index = t
        .bin
        .dwarf_index(|n| n.starts_with(b"runtime."))
        .map_err(|e| format!("timer field offsets unknown: {e}"))?;
    let off = Offsets::from_dwarf(&index)?;
    let mem = ProcMem::open(t.pid).map_err(|e| format!("cannot read PID {}: {e}", t.pid))?;
    let ps = pointer_slice(&mem, off.allp.wrapping_add(t.bias), MAX_PS)
        .ok_or("cannot read runtime.allp")?;
    let mut out = FromMemory {
        read: true,
        not_decidable: NOT_DECIDABLE.map(String::from).to_vec(),
        ..Default::default()
    };
    let mut groups: BTreeMap<(String, u64), Group> = BTreeMap::new();
    let name = |pc: u64| -> String {
        t.symbolizer
            .symbolize(pc.wrapping_sub(t.bias), false)
            .last()
            .map_or_else(|| format!("{pc:#x}"), |f| f.function.clone())
    };
    for p in ps {
        let Some(p) = p.filter(|p| *p != 0) else {
            out.read_errors += 1;
            continue;
        };
        let Some(timers) = heap(&mem, &off, p) else {
            out.read_errors += 1;
            continue;
        };
        out.ps += 1;
        for tp in timers {
            match one(&mem, &off, tp) {
                None => out.read_errors += 1,
                Some(Timer::Stopped) => out.stopped_in_heaps += 1,
                Some(Timer::Firing {
                    f_pc,
                    period,
                    arg,
                    is_chan,
                }) => {
                    out.timers += 1;
                    out.periodic += u64::from(period > 0);
                    let callback = name(f_pc);
                    // Before Go 1.23 a channel timer is one that calls
                    // time.sendTime (its argument: the channel).
                    let chan = is_chan.unwrap_or(callback == "time.sendTime") && arg != 0;
                    let g = groups.entry((callback.clone(), period)).or_insert(Group {
                        callback,
                        period_s: (period > 0).then(|| period as f64 / 1e9),
                        ..Default::default()
                    });
                    g.count += 1;
                    g.channel |= chan;
                    if chan {
                        g.waiting_goroutines += waiters(&mem, &off, arg, &mut out.read_errors);
                    }
                }
            }
        }
    }
    let mut groups: Vec<Group> = groups.into_values().collect();
    groups.sort_by(|a, b| b.count.cmp(&a.count).then(a.callback.cmp(&b.callback)));
    out.groups_truncated = groups.len() > MAX_GROUPS;
    groups.truncate(MAX_GROUPS);
    out.groups = groups;
    Ok(out)
}

/// The timer pointers of P `p`'s heap (None when it cannot be read).
fn heap(mem: &dyn Memory, off: &Offsets, p: u64) -> Option<Vec<u64>> {
    let at = p + off.p_heap;
    let (arr, len) = (mem.u64(at)?, mem.u64(at + 8)?);
    if len == 0 {
        return Some(Vec::new());
    }
    if arr == 0 || len > MAX_PER_HEAP {
        return None;
    }
    let mut b = vec![0u8; (len * off.heap_elem) as usize];
    if !mem.read(arr, &mut b) {
        return None;
    }
    Some(
        b.chunks_exact(off.heap_elem as usize)
            .map(|e| u64::from_le_bytes(e[..8].try_into().expect("8 bytes")))
            .filter(|t| *t != 0)
            .collect(),
    )
}

enum Timer {
    /// Stopped or deleted, still in the heap.
    Stopped,
    /// Will fire: its callback's code, period (0: once), the data word of
    /// its argument, and whether it is a channel timer (Go 1.23+ says so).
    Firing {
        f_pc: u64,
        period: u64,
        arg: u64,
        is_chan: Option<bool>,
    },
}

fn one(mem: &dyn Memory, off: &Offsets, t: u64) -> Option<Timer> {
    let state = field(mem, t + off.state.0, off.state.1)?;
    if off.stopped.contains(&state) || off.stopped_bits & state != 0 {
        return Some(Timer::Stopped);
    }
    let period = mem.u64(t + off.period)?;
    let f = mem.u64(t + off.f)?;
    let f_pc = if f == 0 { 0 } else { mem.u64(f)? };
    let arg = mem.u64(t + off.arg + 8)?;
    let is_chan = match off.is_chan {
        Some(o) => Some(field(mem, t + o, 1)? != 0),
        None => None,
    };
    Some(Timer::Firing {
        f_pc,
        period: if period > i64::MAX as u64 { 0 } else { period },
        arg,
        is_chan,
    })
}

/// A field of 1, 2 or 4 bytes (little-endian).
fn field(mem: &dyn Memory, at: u64, size: u64) -> Option<u64> {
    let mut b = [0u8; 4];
    let n = size.clamp(1, 4) as usize;
    mem.read(at, &mut b[..n])
        .then(|| u64::from(u32::from_le_bytes(b)))
}

/// Goroutines queued receiving from channel `c` (its `recvq`).
fn waiters(mem: &dyn Memory, off: &Offsets, c: u64, errors: &mut u64) -> u64 {
    let mut n = 0;
    let mut s = match mem.u64(c + off.chan_recvq) {
        Some(s) => s,
        None => {
            *errors += 1;
            return 0;
        }
    };
    while s != 0 && n < MAX_WAITERS {
        n += 1;
        match mem.u64(s + off.sudog_next) {
            Some(next) => s = next,
            None => {
                *errors += 1;
                break;
            }
        }
    }
    n
}
