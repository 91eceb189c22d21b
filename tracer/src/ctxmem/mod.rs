//! Contexts read from the target's memory, without probes (sampled and
//! budgeted modes, where the context probes are not attached): the
//! contexts each parked goroutine holds on its stack, whether each is
//! cancelled, its Done channel and its parents, and which goroutines are
//! parked on a context's Done.
//!
//! A context value is an interface `(itab, data)`: a stack word equal to
//! the address of one of the binary's `T,context.Context` itabs followed by
//! a non-zero word is taken for one. The scan is conservative (a dead slot
//! of a live frame counts), so what it finds is "seen in memory", never a
//! proven finding. What memory cannot tell (whether a cancel function was
//! dropped, contexts kept only in registers or in the heap) is listed as
//! undecided.

pub mod chain;

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::gobin::GoBinary;
use crate::gobin::layout::RuntimeLayout;
use crate::gobin::symbolize::Symbolizer;
use crate::goruntime::gstatus::GState;
use crate::process::mem::Memory;
use crate::snapshot::read::LiveG;
use chain::Offsets;

/// Contexts kept per goroutine, and distinct contexts read in all.
pub const MAX_PER_GOROUTINE: usize = 64;
pub const MAX_CONTEXTS: usize = 20_000;
/// Bytes of one stack scanned (from its saved sp up).
pub const MAX_STACK_BYTES: u64 = 1 << 20;
/// Channels followed in one goroutine's wait list (a select's cases).
const MAX_SUDOGS: usize = 256;
/// Groups listed, and sample goids per group.
const MAX_GROUPS: usize = 100;
const SAMPLES: usize = 5;

/// What memory cannot tell, listed with every read.
pub const NOT_DECIDABLE: [&str; 3] = [
    "whether a context's cancel function was dropped (needs --full: the probes see it made and never called)",
    "contexts held only in registers (running goroutines) or only in the heap",
    "which contexts were made or cancelled during the trace, and where",
];

/// The read, as `report.json` shows it under `contexts.from_memory`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FromMemory {
    pub read: bool,
    /// Why nothing (or not everything) was read.
    pub error: Option<String>,
    pub took_ms: f64,
    /// Parked goroutines whose stacks were scanned.
    pub goroutines_scanned: u64,
    /// Of them, those holding at least one context.
    pub goroutines_holding: u64,
    /// Distinct contexts found on those stacks, and how many are cancelled.
    pub contexts: u64,
    pub cancelled: u64,
    pub waiting_on_done: WaitingOnDone,
    /// Parked on something other than a Done channel while holding a
    /// cancelled context: the memory form of an ignored cancel, seen in
    /// memory, not proven.
    pub seen_in_memory: SeenInMemory,
    pub groups: Vec<Group>,
    pub groups_truncated: bool,
    pub undecided: Undecided,
    pub limits: Limits,
    /// Words, stacks and wait lists that could not be read.
    pub read_errors: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WaitingOnDone {
    /// Parked goroutines waiting on the Done channel of a context found.
    pub count: u64,
    /// Of them, waiting on a context already cancelled (about to wake).
    pub cancelled: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SeenInMemory {
    pub holding_cancelled_parked_elsewhere: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Undecided {
    /// Contexts whose chain reaches a type memory cannot follow before any
    /// cancelCtx: whether they are cancelled is unknown.
    pub contexts_unknown_state: u64,
    pub not_decidable: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// Goroutines with more than [`MAX_PER_GOROUTINE`] contexts.
    pub per_goroutine_hit: u64,
    /// Contexts not read once [`MAX_CONTEXTS`] were.
    pub total_hit: u64,
    /// Stacks scanned only up to [`MAX_STACK_BYTES`].
    pub stacks_cut: u64,
    /// Parent chains cut at their depth limit or at a loop.
    pub chains_cut: u64,
}

/// Goroutines with the same start function and blocked site.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub start: String,
    pub blocked_at: String,
    pub wait_reason: String,
    /// Goroutines of the group holding a context.
    pub holding: u64,
    pub waiting_on_done: u64,
    /// Holding a cancelled context while parked elsewhere (seen in memory).
    pub holding_cancelled_parked_elsewhere: u64,
    /// The chain of one context the group holds (innermost type first).
    pub sample_chain: Vec<String>,
    pub sample_goids: Vec<u64>,
}

/// What the read needs of the target.
pub struct Target<'a> {
    pub pid: u32,
    pub bin: &'a GoBinary,
    pub layout: &'a RuntimeLayout,
    pub bias: u64,
    pub symbolizer: &'a Symbolizer,
}

impl FromMemory {
    /// Nothing read, and why.
    pub fn not_read(why: String) -> FromMemory {
        FromMemory {
            error: Some(why),
            undecided: undecided(0),
            ..Default::default()
        }
    }
}

fn undecided(unknown: u64) -> Undecided {
    Undecided {
        contexts_unknown_state: unknown,
        not_decidable: NOT_DECIDABLE.iter().map(|s| s.to_string()).collect(),
    }
}

/// Reads the contexts of `t`'s parked goroutines.
pub fn read(t: &Target<'_>) -> FromMemory {
    let clock = Instant::now();
    let mut out = match read_inner(t) {
        Ok(out) => out,
        Err(why) => FromMemory::not_read(why),
    };
    // Whole microseconds: a shorter float reads back the same from a
    // recording (a replay's report equals the live one).
    out.took_ms = (clock.elapsed().as_secs_f64() * 1e6).round() / 1e3;
    out
}

fn read_inner(t: &Target<'_>) -> Result<FromMemory, String> {
    let index = t
        .bin
        .dwarf_index(|n| n.starts_with(b"context."))
        .map_err(|e| format!("context field offsets unknown: {e}"))?;
    let offsets =
        Offsets::from_dwarf(&index).map_err(|e| format!("context field offsets unknown: {e}"))?;
    let itabs: HashMap<u64, String> = t
        .bin
        .itabs()
        .map_err(|e| format!("cannot read the binary's itabs: {e}"))?
        .into_iter()
        .filter(|(_, n)| n.ends_with(",context.Context"))
        .map(|(a, n)| (a.wrapping_add(t.bias), n))
        .collect();
    if itabs.is_empty() {
        return Err("the binary has no context.Context itab".into());
    }
    let live = crate::snapshot::read_live(t.pid, t.bin, t.layout, t.bias, None)
        .map_err(|e| format!("cannot read the goroutines: {e}"))?;
    let mut scan = Scan {
        mem: &live.mem,
        itabs: &itabs,
        offsets,
        layout: t.layout,
        contexts: HashMap::new(),
        out: FromMemory {
            read: true,
            ..Default::default()
        },
    };
    let parked: Vec<Held> = live
        .live
        .iter()
        .filter(|g| g.stable && g.state == GState::Waiting)
        .map(|g| scan.goroutine(g))
        .collect();
    Ok(scan.finish(t, &live.live, parked))
}

/// One parked goroutine: the contexts on its stack, the channels it waits on.
struct Held {
    goid: u64,
    contexts: Vec<u64>,
    chans: Vec<u64>,
}

struct Scan<'a> {
    mem: &'a dyn Memory,
    itabs: &'a HashMap<u64, String>,
    offsets: Offsets,
    layout: &'a RuntimeLayout,
    /// Every context read, by its data word.
    contexts: HashMap<u64, chain::Read>,
    out: FromMemory,
}

impl Scan<'_> {
    fn goroutine(&mut self, g: &LiveG) -> Held {
        self.out.goroutines_scanned += 1;
        let mut held = Held {
            goid: g.raw.goid,
            contexts: Vec::new(),
            chans: self.waits_on(g),
        };
        let (lo, hi) = (g.raw.sched_sp & !7, g.raw.hi);
        if lo == 0 || hi <= lo {
            self.out.read_errors += 1;
            return held;
        }
        let hi = if hi - lo > MAX_STACK_BYTES {
            self.out.limits.stacks_cut += 1;
            lo + MAX_STACK_BYTES
        } else {
            hi
        };
        let mut buf = vec![0u8; (hi - lo) as usize];
        if !self.mem.read(lo, &mut buf) {
            self.out.read_errors += 1;
            return held;
        }
        let words: Vec<u64> = buf
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        for w in words.windows(2) {
            let (itab, data) = (w[0], w[1]);
            if data == 0 || !self.itabs.contains_key(&itab) || held.contexts.contains(&data) {
                continue;
            }
            if held.contexts.len() == MAX_PER_GOROUTINE {
                self.out.limits.per_goroutine_hit += 1;
                break;
            }
            if !self.contexts.contains_key(&data) {
                if self.contexts.len() == MAX_CONTEXTS {
                    self.out.limits.total_hit += 1;
                    continue;
                }
                let r = chain::read(self.mem, self.itabs, &self.offsets, (itab, data));
                self.out.read_errors += r.read_errors;
                self.contexts.insert(data, r);
            }
            held.contexts.push(data);
        }
        held
    }

    /// The channels of `g`'s wait list (`g.waiting`, one sudog per case).
    fn waits_on(&mut self, g: &LiveG) -> Vec<u64> {
        let (Some(c_off), Some(link_off)) = (self.layout.sudog_c, self.layout.sudog_waitlink)
        else {
            return Vec::new();
        };
        let mut chans = Vec::new();
        let mut sudog = g.raw.waiting;
        while sudog != 0 && chans.len() < MAX_SUDOGS {
            match (self.mem.u64(sudog + c_off), self.mem.u64(sudog + link_off)) {
                (Some(c), Some(next)) => {
                    if c != 0 {
                        chans.push(c);
                    }
                    sudog = next;
                }
                _ => {
                    self.out.read_errors += 1;
                    break;
                }
            }
        }
        chans
    }

    fn finish(mut self, t: &Target<'_>, live: &[LiveG], parked: Vec<Held>) -> FromMemory {
        let by_goid: HashMap<u64, &LiveG> = live.iter().map(|g| (g.raw.goid, g)).collect();
        // Every Done channel known, with whether its context is cancelled.
        let done: HashMap<u64, bool> = self
            .contexts
            .values()
            .filter(|r| r.done != 0)
            .map(|r| (r.done, r.cancelled == Some(true)))
            .collect();
        let mut groups: BTreeMap<(String, String, String), Group> = BTreeMap::new();
        let mut namer = Namer::new(t);
        for h in &parked {
            let on_done: Vec<bool> = h
                .chans
                .iter()
                .filter_map(|c| done.get(c).copied())
                .collect();
            let cancelled_held = h
                .contexts
                .iter()
                .any(|d| self.contexts[d].cancelled == Some(true));
            let elsewhere = cancelled_held && on_done.is_empty();
            if h.contexts.is_empty() && on_done.is_empty() {
                continue;
            }
            let o = &mut self.out;
            o.goroutines_holding += u64::from(!h.contexts.is_empty());
            o.waiting_on_done.count += u64::from(!on_done.is_empty());
            o.waiting_on_done.cancelled += u64::from(on_done.iter().any(|c| *c));
            o.seen_in_memory.holding_cancelled_parked_elsewhere += u64::from(elsewhere);
            let Some(g) = by_goid.get(&h.goid) else {
                continue;
            };
            let key = namer.key(g);
            let grp = groups.entry(key.clone()).or_insert_with(|| Group {
                start: key.0,
                blocked_at: key.1,
                wait_reason: key.2,
                ..Default::default()
            });
            grp.holding += u64::from(!h.contexts.is_empty());
            grp.waiting_on_done += u64::from(!on_done.is_empty());
            grp.holding_cancelled_parked_elsewhere += u64::from(elsewhere);
            if grp.sample_chain.is_empty()
                && let Some(d) = h.contexts.first()
            {
                grp.sample_chain = self.contexts[d].chain.clone();
            }
            if grp.sample_goids.len() < SAMPLES {
                grp.sample_goids.push(h.goid);
            }
        }
        let mut out = self.out;
        out.contexts = self.contexts.len() as u64;
        out.cancelled = self
            .contexts
            .values()
            .filter(|r| r.cancelled == Some(true))
            .count() as u64;
        out.limits.chains_cut = self.contexts.values().filter(|r| r.chain_cut).count() as u64;
        out.undecided = undecided(
            self.contexts
                .values()
                .filter(|r| r.cancelled.is_none())
                .count() as u64,
        );
        let mut groups: Vec<Group> = groups.into_values().collect();
        groups.sort_by_key(|g| std::cmp::Reverse(g.holding + g.waiting_on_done));
        out.groups_truncated = groups.len() > MAX_GROUPS;
        groups.truncate(MAX_GROUPS);
        out.groups = groups;
        out
    }
}

/// Names a goroutine's group: start function, blocked site, wait reason.
struct Namer<'a> {
    resolver: crate::resolve::StackResolver<'a>,
    t: &'a Target<'a>,
}

impl<'a> Namer<'a> {
    fn new(t: &'a Target<'a>) -> Self {
        Namer {
            resolver: crate::resolve::StackResolver::new(
                t.bin,
                t.symbolizer,
                HashMap::new(),
                t.bias,
            ),
            t,
        }
    }

    fn key(&mut self, g: &LiveG) -> (String, String, String) {
        let start = self.resolver.start_function(g.raw.startpc);
        let frames: Vec<_> = g
            .stack
            .pcs
            .iter()
            .enumerate()
            .flat_map(|(i, pc)| {
                self.t
                    .symbolizer
                    .symbolize(pc.wrapping_sub(self.t.bias), i > 0)
            })
            .collect();
        let site = crate::gobin::frame::site(&frames)
            .map(|f| f.function.clone())
            .unwrap_or_else(|| "unknown".into());
        let reason =
            crate::goruntime::wait_reason::text(&self.t.layout.wait_reasons, g.raw.waitreason);
        (start, site, reason)
    }
}
