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
use crate::gobin::layout::GOffsets;
use crate::gobin::stackmaps::{Fallback, Regs, StackMaps, StackWords};
use crate::process::mem::{Memory, le_u64};
use crate::snapshot::read::LiveG;

/// The runtime's largest stack on 64-bit systems (maxstacksize).
pub(super) const MAX_STACK: u64 = 1 << 30;
/// Deferred calls followed per goroutine; a longer chain is garbage or a
/// cycle, and every stack object is scanned instead.
const MAX_DEFERS: usize = 10_000;
/// Stacks read together (one `process_vm_readv` takes 1024 ranges), and
/// at most this many bytes of them.
const BATCH_STACKS: usize = 1024;
const BATCH_BYTES: u64 = 16 << 20;

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
    /// Stacks whose goroutine ran (or changed state) while its stack was
    /// read: scanned whole instead (counted in `conservative` too).
    pub changed: u64,
    /// Of the `conservative` stacks, those scanned from a held thread's
    /// stack pointer up (the rest of it is no longer in use), not whole.
    #[serde(default)]
    pub from_thread_sp: u64,
}

/// What precise stack scanning needs besides the heap layout.
#[derive(Clone, Copy)]
pub struct StackCtx<'a> {
    pub maps: &'a StackMaps,
    /// Where a g keeps its status and saved registers (checked again after
    /// its stack is read).
    pub g: &'a GOffsets,
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
    stacks: Option<StackCtx<'a>>,
    pub ranges: RootRanges,
    pub words: RootWords,
    pub stats: StackStats,
}

impl<'c, 'a> StackScan<'c, 'a> {
    pub fn new(ctx: &'c Ctx<'a>, mem: &'c dyn Memory) -> Self {
        StackScan {
            ctx,
            mem,
            stacks: ctx.stacks.filter(|s| s.maps.precise()),
            ranges: Vec::new(),
            words: Vec::new(),
            stats: StackStats::default(),
        }
    }

    /// Adds the stacks of `gs`, each `(g, whole, root)`: `whole` scans
    /// `[lo, hi)`, else from where the goroutine resumes. Returns how many
    /// had unusable stack bounds.
    pub fn add(&mut self, gs: &[(&LiveG, bool, u32)]) -> u64 {
        let mut bad = 0;
        let mut batch: Vec<(&LiveG, u32)> = Vec::new();
        let mut bytes = 0;
        for &(g, whole, root) in gs {
            let r = &g.raw;
            if !(r.lo < r.hi && r.hi - r.lo <= MAX_STACK) {
                bad += 1;
                continue;
            }
            let parked = (r.lo..r.hi).contains(&r.sched_sp);
            if whole || !parked || self.stacks.is_none() {
                let lo = if !whole && parked {
                    r.sched_sp
                } else {
                    self.thread_sp(r.lo, r.hi).unwrap_or(r.lo)
                };
                self.whole(lo, r.hi, root);
                continue;
            }
            batch.push((g, root));
            bytes += r.hi - r.sched_sp;
            if batch.len() >= BATCH_STACKS || bytes >= BATCH_BYTES {
                self.precise(&batch);
                (batch, bytes) = (Vec::new(), 0);
            }
        }
        if !batch.is_empty() {
            self.precise(&batch);
        }
        bad
    }

    /// Where a held thread's stack pointer is inside `[lo, hi)`: that
    /// stack's thread stopped there for good, and below it nothing is in
    /// use (the words there are dead frames: scanning them would keep what
    /// they once pointed at).
    fn thread_sp(&mut self, lo: u64, hi: u64) -> Option<u64> {
        let sp = *self
            .ctx
            .stopped_sps
            .iter()
            .find(|sp| (lo..hi).contains(*sp))?;
        self.stats.from_thread_sp += 1;
        Some(sp)
    }

    fn whole(&mut self, lo: u64, hi: u64, root: u32) {
        self.stats.conservative += 1;
        self.ranges.push((lo, hi - lo, root));
    }

    /// Stacks of parked goroutines by their stack maps, read together:
    /// their bytes and the g words leading to their `_defer`/`_panic`
    /// records, then the g's state again, to know they did not run.
    fn precise(&mut self, gs: &[(&LiveG, u32)]) {
        let Some(sc) = self.stacks else {
            return;
        };
        let hl = self.ctx.heap;
        let mut bufs: Vec<Vec<u8>> = gs
            .iter()
            .map(|(g, _)| vec![0u8; (g.raw.hi - g.raw.sched_sp) as usize])
            .collect();
        let mut ranges: Vec<(u64, &mut [u8])> = gs
            .iter()
            .zip(bufs.iter_mut())
            .map(|((g, _), b)| (g.raw.sched_sp, &mut b[..]))
            .collect();
        let read = self.mem.read_vectored(&mut ranges);
        drop(ranges);
        let heads = match (hl.g_panic, hl.g_defer) {
            (Some(p), Some(d)) => g_words(self.mem, gs, &[p, d]),
            _ => vec![None; gs.len()],
        };
        let mut results = Vec::with_capacity(gs.len());
        for (((g, _), buf), (ok, head)) in gs.iter().zip(&bufs).zip(read.iter().zip(heads)) {
            let seeds = head.and_then(|h| runtime_seeds(self.mem, hl, g, h[0], h[1]));
            let regs = Regs {
                pc: g.raw.sched_pc,
                sp: g.raw.sched_sp,
                bp: g.raw.sched_bp,
            };
            let (lo, hi) = (g.raw.lo, g.raw.hi);
            let bytes = ok.then_some(&buf[..]);
            let w = sc
                .maps
                .live_words_in(self.ctx.bias, regs, lo, hi, bytes, seeds.as_deref());
            results.push((w, seeds));
        }
        let o = sc.g;
        let now = g_words(
            self.mem,
            gs,
            &[o.atomicstatus, o.sched_sp, o.sched_pc, o.sched_bp],
        );
        for (((g, root), (w, seeds)), now) in gs.iter().zip(results).zip(now) {
            let r = &g.raw;
            let same = now.is_some_and(|n| {
                n[0] as u32 == r.status && n[1..] == [r.sched_sp, r.sched_pc, r.sched_bp]
            });
            if !same {
                // It ran: the maps were read for frames that may no
                // longer be there.
                self.stats.changed += 1;
                self.whole(r.lo, r.hi, *root);
                continue;
            }
            self.precise_result(&w, seeds.as_deref(), *root);
        }
    }

    fn precise_result(&mut self, w: &StackWords, seeds: Option<&[u64]>, root: u32) {
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
            .extend(seeds.iter().copied().flatten().map(|&v| (0, v, root)));
    }

    /// The ranges and words added since the last call.
    pub fn take(&mut self) -> (RootRanges, RootWords) {
        (
            std::mem::take(&mut self.ranges),
            std::mem::take(&mut self.words),
        )
    }
}

/// What `scanstack` reaches through the g rather than through its frames,
/// from the g's `_panic` and `_defer` words: `_panic`, and each `_defer`
/// record's `fn` and `link` (and the record when it is not on the stack).
/// None when a record cannot be read.
pub fn runtime_seeds(
    mem: &dyn Memory,
    hl: &HeapLayout,
    g: &LiveG,
    panic: u64,
    defer: u64,
) -> Option<Vec<u64>> {
    let (fn_, link) = (hl.defer_fn?, hl.defer_link?);
    let mut seeds = vec![panic];
    let mut d = defer;
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

/// The words at offsets `offs` of each g (read together; None: unreadable).
fn g_words(mem: &dyn Memory, gs: &[(&LiveG, u32)], offs: &[u64]) -> Vec<Option<Vec<u64>>> {
    let (Some(&first), Some(&last)) = (offs.iter().min(), offs.iter().max()) else {
        return vec![None; gs.len()];
    };
    let mut bufs = vec![vec![0u8; (last - first + 8) as usize]; gs.len()];
    let mut ranges: Vec<(u64, &mut [u8])> = gs
        .iter()
        .zip(bufs.iter_mut())
        .map(|((g, _), b)| (g.gp.wrapping_add(first), &mut b[..]))
        .collect();
    let ok = mem.read_vectored(&mut ranges);
    drop(ranges);
    bufs.iter()
        .zip(ok)
        .map(|(b, ok)| ok.then(|| offs.iter().map(|o| le_u64(b, o - first)).collect()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::mem::ImageMem;

    fn live(lo: u64, hi: u64) -> LiveG {
        let mut im = super::super::image::Image::new();
        im.goroutine(1, 0, 0, &[]);
        let mut g = im.live.pop().unwrap();
        (g.raw.lo, g.raw.hi) = (lo, hi);
        g
    }

    #[test]
    fn defer_chain_seeds() {
        let mut hl = super::super::image::layout();
        (hl.defer_fn, hl.defer_link) = (Some(8), Some(16));
        let (lo, hi) = (0x1000, 0x2000);
        let g = live(lo, hi);
        let mut mem = ImageMem::default();
        let put = |mem: &mut ImageMem, at: u64, words: &[u64]| {
            let b = words.iter().flat_map(|w| w.to_le_bytes()).collect();
            mem.regions.insert(at, b);
        };
        // A record on the stack (fn: a closure on the stack) linked to one
        // in the heap (fn: a heap closure), linked to nothing.
        put(&mut mem, 0x1800, &[0, 0x1900, 0x9000]);
        put(&mut mem, 0x9000, &[0, 0xa000, 0]);
        let seeds = runtime_seeds(&mem, &hl, &g, 0x1c00, 0x1800).unwrap();
        assert_eq!(seeds, vec![0x1c00, 0x1900, 0x9000, 0x9000, 0xa000, 0]);
        // A cycle is followed a bounded number of times, then given up.
        put(&mut mem, 0x9000, &[0, 0xa000, 0x1800]);
        assert_eq!(runtime_seeds(&mem, &hl, &g, 0, 0x1800), None);
        // An unreadable record, or no record at all.
        assert_eq!(runtime_seeds(&mem, &hl, &g, 0, 0x5000), None);
        assert_eq!(runtime_seeds(&mem, &hl, &g, 7, 0), Some(vec![7]));
    }

    /// A running goroutine's stack is scanned from a held thread's stack
    /// pointer when one is inside it (below it are dead frames), else
    /// whole.
    #[test]
    fn a_held_threads_stack_pointer_bounds_a_running_stack() {
        let hl = super::super::image::layout();
        let reasons = BTreeMap::new();
        let functions = |_: &[u64]| Vec::new();
        let ctx = Ctx {
            wait_reasons: &reasons,
            g_stack_hi: None,
            heap: &hl,
            globals: super::super::image::globals(),
            bias: 0,
            functions: &functions,
            stacks: None,
            keep: false,
            stopped_sps: vec![0x7000, 0x1c00],
        };
        let mem = ImageMem::default();
        let mut scan = StackScan::new(&ctx, &mem);
        let (a, b) = (live(0x1000, 0x2000), live(0x3000, 0x4000));
        assert_eq!(scan.add(&[(&a, true, 0), (&b, true, 1)]), 0);
        assert_eq!(scan.ranges, vec![(0x1c00, 0x400, 0), (0x3000, 0x1000, 1)]);
        assert_eq!((scan.stats.conservative, scan.stats.from_thread_sp), (2, 1));
    }

    /// The motivating case: channels left dead in main's frame (a finished
    /// loop's `fmt.Printf` argument array) kept their waiters "wakeable"
    /// under a conservative scan. By the stack maps, exactly those waiters
    /// are proven leaked, and the root stacks are all read precisely.
    #[test]
    fn dead_slots_keep_nothing_alive() {
        use crate::gobin::GoBinary;
        use crate::gobin::testutil::{BuildOpts, build_testdata};
        use crate::proof::stackmaps_tests::{parked, start};
        use crate::proof::{Target, Verdict, prove};
        for minor in ["1.21", "1.27"] {
            let path = build_testdata("stackmaps", minor, BuildOpts::default()).unwrap();
            let bin = GoBinary::open(&path).unwrap();
            let layout = bin.layout().unwrap();
            let symbolizer = bin.symbolizer().unwrap();
            let (child, printed) = start(&path);
            let pid = child.0.id();
            let (found, _) = parked(&path, pid);
            let (regs, _, hi, _) = &found["main.main"];
            let mut main = vec![0u8; (hi - regs.sp) as usize];
            let mem = crate::process::mem::ProcMem::open(pid).unwrap();
            assert!(Memory::read(&mem, regs.sp, &mut main));
            let last = printed["leak"][2];
            assert!(
                main.chunks_exact(8).any(|w| le_u64(w, 0) == last),
                "Go {minor}: {last:#x} is not left in main's frame"
            );
            let t = Target {
                pid,
                bin: &bin,
                layout: &layout,
                bias: 0,
                symbolizer: &symbolizer,
                held: false,
            };
            // Until every waiter has parked and both passes agree on it (a
            // loaded machine may be slow to get there).
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            let mut want: Vec<String> = printed["leak"].iter().map(|a| format!("{a:#x}")).collect();
            want.sort();
            let proof = loop {
                let proof = prove(&t);
                let settled = want.iter().all(|c| {
                    proof
                        .goroutines
                        .iter()
                        .any(|g| g.waits_on.contains(c) && g.verdict != Verdict::Unproven)
                });
                if settled || std::time::Instant::now() > deadline {
                    break proof;
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
            };
            let mut leaked: Vec<String> = proof
                .goroutines
                .iter()
                .filter(|g| g.verdict == Verdict::Leaked)
                .flat_map(|g| g.waits_on.clone())
                .collect();
            leaked.sort();
            assert_eq!(leaked, want, "Go {minor}: {proof:?}");
            let s = &proof.stacks;
            assert!(s.precise > 0, "Go {minor}: {s:?}");
            assert!(
                s.fallbacks.is_empty() && s.changed == 0,
                "Go {minor}: {s:?}"
            );
            drop(child);
        }
    }
}
