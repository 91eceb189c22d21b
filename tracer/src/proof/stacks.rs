//! Which words of a goroutine's stack are roots: those Go's collector
//! scans ([`StackMaps::live_words`]: live slots by the binary's stack
//! maps, reached stack objects, and the `_defer`/`_panic` records the g
//! points at), or the whole stack, conservatively, for a goroutine whose
//! saved state is not where it resumes (on a CPU, in a system call, read
//! while changing) or when the binary's stack maps cannot be used.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Ctx;
use crate::gobin::heap_layout::HeapLayout;
use crate::gobin::stackmaps::{Fallback, Regs, StackMaps};
use crate::process::mem::Memory;
use crate::snapshot::read::LiveG;

/// The runtime's largest stack on 64-bit systems (maxstacksize).
pub(super) const MAX_STACK: u64 = 1 << 30;
/// Deferred calls followed per goroutine; a longer chain is garbage or a
/// cycle, and every stack object is scanned instead.
const MAX_DEFERS: usize = 10_000;

/// How the stacks of a pass were scanned.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackStats {
    /// Stacks scanned through the stack maps.
    pub precise: u64,
    /// Stacks scanned whole: running, in a system call, read while
    /// changing, or without usable stack maps.
    pub conservative: u64,
    /// Frames of the precise stacks scanned by their maps, and scanned
    /// conservatively (as Go does after an asynchronous preemption, or
    /// frames without maps; the rest of a stack whose unwind failed counts
    /// as one).
    pub precise_frames: u64,
    pub conservative_frames: u64,
    /// Precise stacks whose unwind failed part way, by reason.
    pub fallbacks: BTreeMap<Fallback, u64>,
}

/// `(addr, len, root)` ranges to scan conservatively.
pub type RootRanges = Vec<(u64, u64, u32)>;
/// `(slot, value, root)` words read already (slot 0: held by the g).
pub type RootWords = Vec<(u64, u64, u32)>;

/// The root words of the stacks added so far, for `Marker::scan_ranges`
/// and `Marker::scan_values`.
pub struct StackScan<'c, 'a> {
    ctx: &'c Ctx<'a>,
    mem: &'c dyn Memory,
    maps: Option<&'c StackMaps>,
    pub ranges: RootRanges,
    pub words: RootWords,
    pub stats: StackStats,
}

impl<'c, 'a> StackScan<'c, 'a> {
    pub fn new(ctx: &'c Ctx<'a>, mem: &'c dyn Memory) -> Self {
        StackScan {
            ctx,
            mem,
            maps: ctx.stacks.filter(|m| m.precise()),
            ranges: Vec::new(),
            words: Vec::new(),
            stats: StackStats::default(),
        }
    }

    /// Adds `g`'s stack as root `root`: `whole` for `[lo, hi)`, else from
    /// where it resumes. False when its stack bounds are unusable.
    pub fn add(&mut self, g: &LiveG, whole: bool, root: u32) -> bool {
        let r = &g.raw;
        if !(r.lo < r.hi && r.hi - r.lo <= MAX_STACK) {
            return false;
        }
        let parked = (r.lo..r.hi).contains(&r.sched_sp);
        let Some(maps) = self.maps.filter(|_| !whole && parked) else {
            let lo = if !whole && parked { r.sched_sp } else { r.lo };
            self.stats.conservative += 1;
            self.ranges.push((lo, r.hi - lo, root));
            return true;
        };
        let seeds = runtime_seeds(self.mem, self.ctx.heap, g);
        let regs = Regs {
            pc: r.sched_pc,
            sp: r.sched_sp,
            bp: r.sched_bp,
        };
        let w = maps.live_words(self.ctx.bias, regs, r.lo, r.hi, self.mem, seeds.as_deref());
        self.stats.precise += 1;
        self.stats.precise_frames += u64::from(w.precise_frames);
        self.stats.conservative_frames += u64::from(w.conservative_frames);
        if let Some(why) = w.fallback {
            *self.stats.fallbacks.entry(why).or_default() += 1;
        }
        self.ranges
            .extend(w.ranges.iter().map(|&(a, n)| (a, n, root)));
        self.words
            .extend(w.words.iter().map(|&(s, v)| (s, v, root)));
        self.words
            .extend(seeds.iter().flatten().map(|&v| (0, v, root)));
        true
    }

    /// The ranges and words added since the last call.
    pub fn take(&mut self) -> (RootRanges, RootWords) {
        (
            std::mem::take(&mut self.ranges),
            std::mem::take(&mut self.words),
        )
    }
}

/// What `scanstack` reaches through the g rather than through its frames:
/// each `_defer` record's `fn` and `link` (and the record when it is not
/// on the stack), and `_panic`. None when the layout lacks them or they
/// cannot be read.
pub fn runtime_seeds(mem: &dyn Memory, hl: &HeapLayout, g: &LiveG) -> Option<Vec<u64>> {
    let (gd, gp, fn_, link) = (hl.g_defer?, hl.g_panic?, hl.defer_fn?, hl.defer_link?);
    let mut seeds = vec![mem.u64(g.gp.checked_add(gp)?)?];
    let mut d = mem.u64(g.gp.checked_add(gd)?)?;
    for _ in 0..MAX_DEFERS {
        if d == 0 {
            return Some(seeds);
        }
        if !(g.raw.lo..g.raw.hi).contains(&d) {
            seeds.push(d);
        }
        seeds.push(mem.u64(d.checked_add(fn_)?)?);
        d = mem.u64(d.checked_add(link)?)?;
        seeds.push(d);
    }
    None
}
