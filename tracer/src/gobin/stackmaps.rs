//! A goroutine's live stack words, as Go's garbage collector finds them
//! (runtime `scanstack` / `scanframeworker`, `unwinder`, `getStackMap`):
//! unwind from the saved pc and sp frame by frame with the pclntab's pcsp
//! table, then per frame take the words its locals and arguments pointer
//! maps say are live at the frame's pc, plus the stack objects (variables
//! whose address is taken) that a live word points into, transitively.
//!
//! Everything is read from the file, not from the process: the pclntab and
//! the funcdata it points at. Whatever cannot be decoded is scanned
//! conservatively (every word), and when the unwind fails (an unknown pc,
//! a frame outside the stack, an SP-writing function, too deep) the rest of
//! the stack from the last trusted frame is: a superset of Go's live words
//! is always safe for the leak proof, a missing one never is.
//!
//! Frames Go itself scans conservatively are scanned so: `asyncPreempt`
//! and `debugCallV2` (their frame holds the interrupted registers) and the
//! frame they interrupted; reflect's stubs (their argument map is dynamic).
//!
//! Stack objects reached from a live word are scanned whole (Go scans them
//! through their type's pointer mask: whole is a superset). Frames of
//! functions that record a `_defer` or `_panic` on the stack reach those
//! records through `g._defer` / `g._panic`, not through a live word: the
//! caller passes those pointers as `seeds`.
//!
//! The maps decode on every architecture; the unwinder is amd64's only:
//! on arm64 (link register at 0(SP), no frame-pointer slot above the
//! locals, `argp = fp + 8`) every stack is scanned conservatively for now.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rustc_hash::FxHashMap;

use super::Arch;
use super::pclntab::{
    ARGS_SIZE_UNKNOWN, FUNC_FLAG_SP_WRITE, FUNC_FLAG_TOP_FRAME, Func, Pclntab, StackObject,
};

/// Frames unwound before giving up (the runtime's stacks are at most 1 GiB;
/// a goroutine this deep is scanned conservatively past this).
const MAX_FRAMES: usize = 100_000;
/// Pcs whose facts are kept (cleared when full).
const CACHE_MAX: usize = 1 << 16;
const PTR: u64 = 8;
/// The runtime's largest stack on 64-bit systems (maxstacksize).
const MAX_STACK: u64 = 1 << 30;

/// Where a goroutine resumes (`g.sched`), as read from the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Regs {
    pub pc: u64,
    pub sp: u64,
    pub bp: u64,
}

/// Why the unwind stopped before the outermost frame.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Fallback {
    /// The stack could not be read.
    Unreadable,
    /// A pc in no function of the binary.
    UnknownPc,
    /// A function without frame-size information, or a frame outside the
    /// stack bounds.
    BadFrame,
    /// A function that writes SP in a way the pcsp table cannot tell.
    SpWrite,
    /// More than the frames the unwinder follows.
    TooDeep,
    /// The binary's stack maps cannot be read (no `moduledata.gofunc`) or
    /// the architecture is not supported: the whole stack.
    NoMaps,
}

/// The words of one stack that Go's collector would scan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StackWords {
    /// `(addr, len)` ranges to scan conservatively (every word): frames
    /// scanned so, reached stack objects, the rest after a failed unwind.
    pub ranges: Vec<(u64, u64)>,
    /// `(slot address, value as read)` of live pointer slots of frames
    /// scanned precisely (outside `ranges`).
    pub words: Vec<(u64, u64)>,
    pub precise_frames: u32,
    pub conservative_frames: u32,
    /// Set when part of the stack was scanned conservatively because the
    /// unwind failed there.
    pub fallback: Option<Fallback>,
}

/// Functions the collector treats apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Special {
    /// `runtime.asyncPreempt`, `runtime.debugCallV2`: conservative, and so
    /// is the frame they interrupted.
    Injected,
    /// `runtime.sigpanic`: its caller continues at its `deferreturn` call,
    /// or not at all.
    SigPanic,
    /// `reflect.makeFuncStub`, `reflect.methodValueCall`: dynamic argument
    /// maps (conservative, and so is their caller's frame, which holds the
    /// arguments).
    Reflect,
}

const SPECIALS: [(&str, Special); 5] = [
    ("runtime.asyncPreempt", Special::Injected),
    ("runtime.debugCallV2", Special::Injected),
    ("runtime.sigpanic", Special::SigPanic),
    ("reflect.makeFuncStub", Special::Reflect),
    ("reflect.methodValueCall", Special::Reflect),
];

/// The pointer maps of a frame at one pc.
#[derive(Clone, Debug, Default)]
struct Maps {
    /// Live words of the locals below `varp` (`nbit` bits).
    locals: Option<(i32, Vec<u8>)>,
    /// Live words of the arguments from `argp`.
    args: Option<(i32, Vec<u8>)>,
    objects: Vec<StackObject>,
}

/// What the unwinder needs to know about a pc (link-time).
#[derive(Debug)]
struct PcFacts {
    func: Func,
    special: Option<Special>,
    /// None: no pcsp value at the pc.
    sp_delta: Option<i32>,
    /// The maps for a frame continuing at this pc; None: scan it
    /// conservatively (missing or undecodable maps).
    maps: Option<Arc<Maps>>,
}

/// One physical frame.
#[derive(Clone, Debug)]
struct Frame {
    facts: Arc<PcFacts>,
    /// Its maps at `continpc` (None: conservative, or a dead frame).
    maps: Option<Arc<Maps>>,
    sp: u64,
    varp: u64,
    argp: u64,
    /// Where the frame continues (0: never: a frame that panicked with no
    /// defer to recover it).
    continpc: u64,
}

/// The stack maps of one binary, with a cache of decoded pcs.
pub struct StackMaps {
    tab: Arc<Pclntab>,
    arch: Arch,
    specials: HashMap<u64, Special>,
    cache: Mutex<FxHashMap<u64, Option<Arc<PcFacts>>>>,
}

impl std::fmt::Debug for StackMaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StackMaps")
            .field("arch", &self.arch)
            .field("specials", &self.specials.len())
            .finish()
    }
}

impl StackMaps {
    /// The stack maps of `bin`: None when it has no usable pclntab.
    pub fn new(bin: &super::GoBinary) -> Option<StackMaps> {
        let tab = bin.pclntab()?.clone();
        let specials = tab
            .func_entries()
            .filter_map(|(entry, name)| {
                SPECIALS
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, s)| (entry, *s))
            })
            .collect();
        Some(StackMaps {
            tab,
            arch: bin.arch(),
            specials,
            cache: Mutex::new(FxHashMap::default()),
        })
    }

    /// True when stacks can be scanned precisely (amd64, with the funcdata
    /// found).
    pub fn precise(&self) -> bool {
        self.arch == Arch::X86_64 && self.tab.has_inline_tree()
    }

    /// The live words of the stack `[lo, hi)` of a goroutine resuming at
    /// `regs` (addresses as in the process: code at link time + `bias`).
    /// `seeds`: pointers the runtime holds into the stack besides its
    /// frames (`g._defer` records' `fn` and `link`, `g._panic`); the stack
    /// objects they point into are scanned. None when they are not known:
    /// every stack object of the frames is then scanned.
    pub fn live_words(
        &self,
        bias: u64,
        regs: Regs,
        lo: u64,
        hi: u64,
        mem: &dyn crate::process::mem::Memory,
        seeds: Option<&[u64]>,
    ) -> StackWords {
        if !stack_ok(regs, lo, hi) {
            return self.live_words_in(bias, regs, lo, hi, None, seeds);
        }
        let mut buf = vec![0u8; (hi - regs.sp) as usize];
        let read = mem.read(regs.sp, &mut buf);
        self.live_words_in(bias, regs, lo, hi, read.then_some(&buf[..]), seeds)
    }

    /// [`live_words`](Self::live_words) on the stack's bytes from
    /// `regs.sp` to `hi`, read already (None: they could not be).
    pub fn live_words_in(
        &self,
        bias: u64,
        regs: Regs,
        lo: u64,
        hi: u64,
        bytes: Option<&[u8]>,
        seeds: Option<&[u64]>,
    ) -> StackWords {
        let whole = |why| StackWords {
            ranges: vec![(regs.sp, hi.saturating_sub(regs.sp))],
            conservative_frames: 1,
            fallback: Some(why),
            ..StackWords::default()
        };
        if !stack_ok(regs, lo, hi) {
            return StackWords {
                ranges: vec![(lo, hi.saturating_sub(lo))],
                ..whole(Fallback::BadFrame)
            };
        }
        if !self.precise() {
            return whole(Fallback::NoMaps);
        }
        let Some(bytes) = bytes.filter(|b| b.len() as u64 == hi - regs.sp) else {
            return whole(Fallback::Unreadable);
        };
        let stack = Stack {
            base: regs.sp,
            bytes,
        };
        let (frames, failed) = self.unwind(bias, regs, hi, &stack);
        let mut out = Scan::default();
        let mut conservative = false;
        for f in &frames {
            conservative = out.frame(f, conservative, &stack);
        }
        if let Some((why, from)) = failed {
            out.words.fallback = Some(why);
            out.words.conservative_frames += 1;
            out.conservative(from, hi - from);
        }
        out.reach(lo, hi, &stack, seeds);
        out.finish(&stack)
    }

    /// The facts of the link-time `pc`, cached.
    fn facts(&self, pc: u64) -> Option<Arc<PcFacts>> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = cache.get(&pc) {
            return f.clone();
        }
        let facts = self.decode(pc).map(Arc::new);
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(pc, facts.clone());
        facts
    }

    fn decode(&self, pc: u64) -> Option<PcFacts> {
        let func = self.tab.func_at(pc)?;
        let sp_delta = func
            .has_frame_info()
            .then(|| self.tab.sp_delta(&func, pc))
            .flatten();
        let special = self.specials.get(&func.entry()).copied();
        let maps = sp_delta
            .and_then(|d| self.maps(&func, pc, locals_size(d)))
            .map(Arc::new);
        Some(PcFacts {
            func,
            special,
            sp_delta,
            maps,
        })
    }

    /// `getStackMap` for a frame of `f` continuing at `continpc` (not 0),
    /// whose locals are `locals` bytes: None when Go would find them
    /// missing or out of range (it throws; we scan conservatively).
    fn maps(&self, f: &Func, continpc: u64, locals: u64) -> Option<Maps> {
        let mut index = -1;
        if continpc != f.entry() {
            // Back up into the CALL: a return address's map is the call's.
            index = self.tab.stack_map_index(f, continpc - 1);
        }
        if index == -1 {
            // The prologue, or the entry: the entry map.
            index = 0;
        }
        let mut maps = Maps::default();
        if locals > 0 {
            let m = self.tab.stack_map(f, false).filter(|m| m.n > 0)?;
            if m.nbit > 0 {
                maps.locals = Some((m.nbit, m.bitmap(index)?.to_vec()));
            }
        }
        if f.args() == ARGS_SIZE_UNKNOWN {
            return None;
        }
        if f.args() >= PTR as i32 {
            let m = self.tab.stack_map(f, true).filter(|m| m.n > 0)?;
            if m.nbit > 0 {
                maps.args = Some((m.nbit, m.bitmap(index)?.to_vec()));
            }
        }
        maps.objects = self.tab.stack_objects(f)?;
        Some(maps)
    }

    /// Unwinds from `regs` (amd64): the frames, and where the conservative
    /// rest starts when the unwind failed.
    fn unwind(
        &self,
        bias: u64,
        regs: Regs,
        hi: u64,
        stack: &Stack,
    ) -> (Vec<Frame>, Option<(Fallback, u64)>) {
        let mut frames: Vec<Frame> = Vec::new();
        let mut pc = regs.pc.wrapping_sub(bias);
        let mut sp = regs.sp;
        let mut callee = None;
        // The rest of the stack from the frame before the failure: its
        // return address was what went wrong.
        let fail = |mut frames: Vec<Frame>, why, sp: u64| {
            let from = frames.pop().map_or(sp, |f| f.sp);
            (frames, Some((why, from)))
        };
        for depth in 0..MAX_FRAMES {
            let Some(facts) = self.facts(pc) else {
                return fail(frames, Fallback::UnknownPc, sp);
            };
            let Some(delta) = facts.sp_delta.and_then(|d| u64::try_from(d).ok()) else {
                return fail(frames, Fallback::BadFrame, sp);
            };
            // amd64: the CALL pushed the return address above the frame.
            let fp = sp + delta + PTR;
            if fp > hi {
                return fail(frames, Fallback::BadFrame, sp);
            }
            let flag = facts.func.flag();
            // Go ignores SPWRITE in the innermost frame: it stopped on
            // entry, before any write to SP.
            if flag & FUNC_FLAG_TOP_FRAME == 0 && flag & FUNC_FLAG_SP_WRITE != 0 && depth > 0 {
                return fail(frames, Fallback::SpWrite, sp);
            }
            let lr = if flag & FUNC_FLAG_TOP_FRAME != 0 {
                0
            } else {
                match stack.word(fp - PTR) {
                    Some(lr) => lr,
                    None => return fail(frames, Fallback::BadFrame, sp),
                }
            };
            let frame = self.frame(facts, pc, sp, fp, callee);
            // The saved frame pointer is the innermost frame's own (the
            // slot below its return address) whenever it has one: else
            // what was read is not one consistent state.
            if depth == 0 && frame.varp < fp - PTR && regs.bp != 0 && regs.bp != frame.varp {
                return (frames, Some((Fallback::BadFrame, sp)));
            }
            frames.push(frame);
            if lr == 0 {
                return (frames, None);
            }
            let next = lr.wrapping_sub(bias);
            if next == pc && fp == sp {
                return fail(frames, Fallback::BadFrame, sp);
            }
            callee = frames.last().and_then(|f| f.facts.special);
            pc = next;
            sp = fp;
        }
        fail(frames, Fallback::TooDeep, sp)
    }
}

/// A saved sp inside a plausible stack `[lo, hi)`.
pub fn stack_ok(regs: Regs, lo: u64, hi: u64) -> bool {
    lo <= regs.sp && regs.sp < hi && hi - lo <= MAX_STACK
}

/// Bytes of locals below `varp` in an amd64 frame that has pushed `delta`
/// bytes: the frame pointer's slot is not one of them (`varp > sp`
/// means the function saved BP at the top of its frame).
fn locals_size(delta: i32) -> u64 {
    let delta = u64::try_from(delta).unwrap_or(0);
    delta.saturating_sub(PTR)
}

impl StackMaps {
    /// The frame of `facts` at `pc` whose callee was `callee`.
    fn frame(
        &self,
        facts: Arc<PcFacts>,
        pc: u64,
        sp: u64,
        fp: u64,
        callee: Option<Special>,
    ) -> Frame {
        // varp: below the return address, and below the saved frame
        // pointer when the frame has one (`varp > sp`).
        let mut varp = fp - PTR;
        if varp > sp {
            varp -= PTR;
        }
        let continpc = if callee == Some(Special::SigPanic) {
            match facts.func.deferreturn() {
                0 => 0,
                // +1: the map lookup backs up by one, as for a return pc.
                d => facts.func.entry() + u64::from(d) + 1,
            }
        } else {
            pc
        };
        let maps = if continpc == pc {
            facts.maps.clone()
        } else if continpc == 0 {
            None
        } else {
            self.maps(&facts.func, continpc, varp - sp).map(Arc::new)
        };
        Frame {
            facts,
            maps,
            sp,
            varp,
            argp: fp,
            continpc,
        }
    }
}

/// The stack bytes `[base, base + len)`.
struct Stack<'a> {
    base: u64,
    bytes: &'a [u8],
}

impl Stack<'_> {
    fn word(&self, addr: u64) -> Option<u64> {
        let off = usize::try_from(addr.checked_sub(self.base)?).ok()?;
        let b = self.bytes.get(off..off.checked_add(8)?)?;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    }

    fn end(&self) -> u64 {
        self.base + self.bytes.len() as u64
    }
}

/// The scan being built.
#[derive(Default)]
struct Scan {
    words: StackWords,
    /// Stack objects `(addr, size)` of the frames scanned precisely.
    objects: Vec<(u64, u64)>,
}

impl Scan {
    fn conservative(&mut self, addr: u64, len: u64) {
        if len > 0 {
            self.words.ranges.push((addr, len));
        }
    }

    /// Adds frame `f`; `conservative` when the frame below asked for it.
    /// Returns whether the next frame must be scanned conservatively.
    fn frame(&mut self, f: &Frame, conservative: bool, stack: &Stack) -> bool {
        let special = f.facts.special;
        let maps = &f.maps;
        let injected = special == Some(Special::Injected);
        let reflect = special == Some(Special::Reflect);
        let dead = f.continpc == 0;
        if conservative || injected || reflect || (maps.is_none() && !dead) {
            self.words.conservative_frames += 1;
            self.conservative(f.sp, f.varp.saturating_sub(f.sp));
            let args = f.facts.func.args();
            if args > 0 {
                self.conservative(f.argp, args as u64);
            }
            // The interrupted frame holds live registers' values; an
            // unknown argument size is in the caller's frame.
            return injected || reflect || args == ARGS_SIZE_UNKNOWN;
        }
        self.words.precise_frames += 1;
        let Some(maps) = maps.as_deref() else {
            // A frame that will never run again: nothing in it is live.
            return false;
        };
        if let Some((nbit, bits)) = &maps.locals {
            let base = f.varp.wrapping_sub(*nbit as u64 * PTR);
            self.bits(base, *nbit, bits, stack);
        }
        if let Some((nbit, bits)) = &maps.args {
            self.bits(f.argp, *nbit, bits, stack);
        }
        for o in &maps.objects {
            let base = if o.off >= 0 { f.argp } else { f.varp };
            let addr = base.wrapping_add(o.off as i64 as u64);
            if addr >= f.sp && o.size > 0 {
                self.objects.push((addr, o.size as u64));
            }
        }
        false
    }

    /// The words of `[base, base + nbit words)` whose bit is set.
    fn bits(&mut self, base: u64, nbit: i32, bits: &[u8], stack: &Stack) {
        for i in 0..nbit.max(0) as u64 {
            if bits
                .get((i / 8) as usize)
                .is_none_or(|b| b >> (i % 8) & 1 == 0)
            {
                continue;
            }
            let slot = base.wrapping_add(i * PTR);
            // A slot outside the stack is not one of this goroutine's (a
            // garbage frame; a real one never has any).
            if let Some(v) = stack.word(slot) {
                self.words.words.push((slot, v));
            }
        }
    }

    /// Adds the stack objects that a live word (or a seed) points into,
    /// transitively (their words are scanned whole).
    fn reach(&mut self, lo: u64, hi: u64, stack: &Stack, seeds: Option<&[u64]>) {
        self.objects.sort_unstable();
        self.objects.dedup();
        let mut reached = vec![false; self.objects.len()];
        let Some(seeds) = seeds else {
            self.words.ranges.extend(self.objects.iter());
            return;
        };
        let mut queue: Vec<u64> = seeds.to_vec();
        queue.extend(self.words.words.iter().map(|(_, v)| *v));
        for &(addr, len) in &self.words.ranges {
            queue.extend(words_of(stack, addr, len));
        }
        // Each object is reached once: the queue ends.
        while let Some(v) = queue.pop() {
            if !(lo..hi).contains(&v) {
                continue;
            }
            let i = self.objects.partition_point(|(a, _)| *a <= v);
            let Some(k) = i.checked_sub(1) else {
                continue;
            };
            let (addr, size) = self.objects[k];
            if reached[k] || v >= addr + size {
                continue;
            }
            reached[k] = true;
            self.words.ranges.push((addr, size));
            queue.extend(words_of(stack, addr, size));
        }
    }

    /// Sorted, merged ranges inside the stack; the precise words outside
    /// them. (A frame that is really on this stack has nothing outside.)
    fn finish(mut self, stack: &Stack) -> StackWords {
        let r = &mut self.words.ranges;
        for (a, n) in r.iter_mut() {
            let end = a.saturating_add(*n).min(stack.end());
            *a = (*a).max(stack.base);
            *n = end.saturating_sub(*a);
        }
        r.retain(|&(_, n)| n > 0);
        r.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(r.len());
        for &(a, n) in r.iter() {
            match merged.last_mut() {
                Some((b, m)) if a <= *b + *m => *m = (*m).max(a + n - *b),
                _ => merged.push((a, n)),
            }
        }
        self.words.words.sort_unstable();
        self.words.words.dedup();
        self.words.words.retain(|(slot, _)| {
            let i = merged.partition_point(|(a, _)| *a <= *slot);
            i == 0 || {
                let (a, n) = merged[i - 1];
                *slot >= a + n
            }
        });
        self.words.ranges = merged;
        self.words
    }
}

/// The values of the aligned words of `[addr, addr + len)` that were read.
fn words_of<'a>(stack: &'a Stack, addr: u64, len: u64) -> impl Iterator<Item = u64> + 'a {
    let start = addr.next_multiple_of(PTR).max(stack.base);
    let end = addr.saturating_add(len).min(stack.end());
    (start..end)
        .step_by(PTR as usize)
        .filter_map(move |a| stack.word(a))
}
