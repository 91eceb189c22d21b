//! A pass's marks, kept once it returns when the proof has questions to
//! ask (`Ctx::keep`; the pass then keeps every marked object's root,
//! [`super::heap::Heap::keep_origins`]): which heap objects the roots
//! reach and which root reached each first, every goroutine's stack range,
//! the modules' pointer words. Callers ask about objects the trace knows
//! (contexts, tickers): is the object containing ADDR reachable, from which
//! root ([`Reach::object`]), and what points at it: marked objects,
//! goroutine stacks, globals ([`Reach::holders`]).
//!
//! Same conservative rules as the marking: every aligned word that points
//! into an object is a reference. The holders are read after the pass, from
//! memory that kept changing: a caller that decides something from them
//! asks two passes and keeps what both say.

use std::collections::{BTreeMap, HashMap};

use super::Ctx;
use super::heap::Span;
use super::mark::{Marker, Root};
use crate::gobin::heap_layout::HeapLayout;
use crate::process::mem::{Memory, le_u64};
use crate::snapshot::read::LiveG;

/// Modules beyond this, or a section larger than this, are a misread.
const MAX_MODULES: usize = 64;
const MAX_SECTION: u64 = 1 << 30;
/// Ps (GOMAXPROCS) beyond this are a misread.
const MAX_PS: u64 = 1 << 16;
/// Bytes read per batch when scanning for holders.
const BATCH_BYTES: u64 = 8 << 20;
const CHUNK: u64 = 1 << 20;

/// A goroutine's stack as the pass saw it.
#[derive(Clone, Debug)]
pub struct Stack {
    pub goid: u64,
    pub gp: u64,
    /// The words a scan reads: `[lo, hi)` (from the saved sp when parked).
    pub lo: u64,
    pub hi: u64,
    /// On a CPU during the pass: its registers were not read.
    pub running: bool,
}

/// A module's data or bss, with its pointer mask (one bit per word).
struct Section {
    start: u64,
    end: u64,
    mask: Vec<u8>,
}

/// A heap object of a span the pass read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Object {
    pub base: u64,
    pub size: u64,
    pub marked: bool,
    /// Index of the root that first reached it.
    origin: Option<u32>,
}

/// Something that holds a pointer into an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Holder {
    /// A heap object (marked or not: see `marked`).
    Heap {
        base: u64,
        size: u64,
        marked: bool,
        root: Option<Root>,
    },
    /// A word of a goroutine's stack.
    Stack { goid: u64, at: u64 },
    /// A pointer word of a module's data or bss.
    Global { at: u64 },
}

pub struct Reach {
    spans: Vec<Span>,
    /// `(start, index into spans)`, sorted.
    by_start: Vec<(u64, u32)>,
    roots: Vec<Root>,
    pub stacks: Vec<Stack>,
    sections: Vec<Section>,
    /// The Ps (`allp`): the objects they point at directly are the
    /// runtime's own (timer heaps, caches).
    pub ps: Vec<u64>,
    /// `sudog.g` and `sudog.c` offsets (a channel's waiters are sudogs).
    pub sudog_g: u64,
    pub sudog_c: u64,
    /// Each goroutine's stack pcs, sorted by goid (set by the caller, for
    /// naming).
    pub pcs: Vec<(u64, Vec<u64>)>,
}

impl Reach {
    /// Takes the marks out of `m` at the end of a pass over `live`;
    /// `ranges` gives each goroutine's stack words as the pass reads them.
    pub fn keep(
        ctx: &Ctx,
        m: &mut Marker,
        live: &[LiveG],
        ranges: impl Fn(&LiveG) -> Option<(u64, u64)>,
    ) -> Reach {
        let mem = m.heap.mem();
        let spans = std::mem::take(&mut m.heap.spans);
        let mut by_start: Vec<(u64, u32)> = spans
            .iter()
            .enumerate()
            .map(|(i, s)| (s.start, i as u32))
            .collect();
        by_start.sort_unstable();
        let stacks = live
            .iter()
            .filter_map(|g| {
                let (lo, hi) = ranges(g)?;
                Some(Stack {
                    goid: g.raw.goid,
                    gp: g.gp,
                    lo,
                    hi,
                    running: g.state == crate::goruntime::gstatus::GState::Running,
                })
            })
            .collect();
        let first = ctx.globals.firstmoduledata.wrapping_add(ctx.bias);
        Reach {
            spans,
            by_start,
            roots: std::mem::take(&mut m.roots),
            stacks,
            sections: sections(mem, ctx.heap, first),
            ps: ps(mem, ctx.globals.allp.map(|a| a.wrapping_add(ctx.bias))),
            sudog_g: ctx.heap.sudog_g,
            sudog_c: ctx.heap.sudog_c.off,
            pcs: Vec::new(),
        }
    }

    /// The object containing `addr`, when it is in a span the pass read
    /// (a span nothing pointed into was never read: its objects are not
    /// marked).
    pub fn object(&self, addr: u64) -> Option<Object> {
        let i = self.by_start.partition_point(|(s, _)| *s <= addr);
        let (_, si) = *self.by_start.get(i.checked_sub(1)?)?;
        let s = &self.spans[si as usize];
        let idx = s.slot(addr)?;
        Some(Object {
            base: s.start + idx * s.elemsize,
            size: s.elemsize,
            marked: s.marked(idx),
            origin: s.origin(idx),
        })
    }

    /// The root that first reached a marked object.
    pub fn root_of(&self, o: &Object) -> Option<&Root> {
        self.roots.get(o.origin? as usize)
    }

    /// The marked objects of pointer-bearing spans.
    fn marked_scannable(&self) -> impl Iterator<Item = Object> + '_ {
        self.spans.iter().filter(|s| !s.noscan).flat_map(|s| {
            (0..s.nelems()).filter(|i| s.marked(*i)).map(|i| Object {
                base: s.start + i * s.elemsize,
                size: s.elemsize,
                marked: true,
                origin: s.origin(i),
            })
        })
    }

    /// What holds a pointer into each target `(addr, len)`: marked objects
    /// of pointer-bearing spans, every goroutine's stack words and the
    /// modules' pointer words, read now. Keyed by target address; a range
    /// that could not be read counts in `errors`.
    pub fn holders(&self, mem: &dyn Memory, targets: &[(u64, u64)]) -> Holders {
        let mut t = Targets::new(targets);
        let mut pieces: Vec<(u64, u64, Source)> = Vec::new();
        for o in self.marked_scannable() {
            push_pieces(&mut pieces, o.base, o.size, Source::Object(o));
        }
        for (i, s) in self.stacks.iter().enumerate() {
            push_pieces(
                &mut pieces,
                s.lo,
                s.hi.saturating_sub(s.lo),
                Source::Stack(i),
            );
        }
        let mut out = Holders::default();
        self.scan(mem, &pieces, &mut t, &mut out);
        for s in &self.sections {
            global_holders(mem, s, &t, &mut out);
        }
        out
    }

    fn scan(
        &self,
        mem: &dyn Memory,
        pieces: &[(u64, u64, Source)],
        t: &mut Targets,
        out: &mut Holders,
    ) {
        let mut start = 0;
        while start < pieces.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < pieces.len() && bytes < BATCH_BYTES && end - start < 1024 {
                bytes += pieces[end].1;
                end += 1;
            }
            let group = &pieces[start..end];
            let mut bufs: Vec<Vec<u8>> = group.iter().map(|p| vec![0u8; p.1 as usize]).collect();
            let mut ranges: Vec<(u64, &mut [u8])> = group
                .iter()
                .zip(bufs.iter_mut())
                .map(|(p, b)| (p.0, &mut b[..]))
                .collect();
            let ok = mem.read_vectored(&mut ranges);
            drop(ranges);
            for ((p, buf), ok) in group.iter().zip(&bufs).zip(ok) {
                if !ok {
                    out.errors += 1;
                    continue;
                }
                self.scan_piece(p, buf, t, out);
            }
            start = end;
        }
    }

    fn scan_piece(&self, p: &(u64, u64, Source), buf: &[u8], t: &mut Targets, out: &mut Holders) {
        let skew = ((8 - p.0 % 8) % 8) as usize;
        let Some(words) = buf.get(skew..) else {
            return;
        };
        let base = p.0 + skew as u64;
        for (i, w) in words.chunks_exact(8).enumerate() {
            let Some(target) = t.hit(le_u64(w, 0)) else {
                continue;
            };
            let holder = match &p.2 {
                Source::Object(o) => {
                    if target >= o.base && target < o.base + o.size {
                        continue; // an object pointing into itself
                    }
                    Holder::Heap {
                        base: o.base,
                        size: o.size,
                        marked: o.marked,
                        root: self.root_of(o).cloned(),
                    }
                }
                Source::Stack(k) => Holder::Stack {
                    goid: self.stacks[*k].goid,
                    at: base + 8 * i as u64,
                },
            };
            out.add(target, holder);
        }
    }

    /// The objects the Ps point at directly (their timer heaps among them).
    pub fn p_owned(&self, mem: &dyn Memory) -> Vec<u64> {
        let mut out = Vec::new();
        for p in &self.ps {
            let Some(o) = self.object(*p) else { continue };
            let mut b = vec![0u8; o.size as usize];
            if !mem.read(o.base, &mut b) {
                continue;
            }
            out.extend(
                b.chunks_exact(8)
                    .filter_map(|w| self.object(le_u64(w, 0)))
                    .map(|o| o.base),
            );
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// Where a scanned piece came from.
#[derive(Clone, Copy)]
enum Source {
    Object(Object),
    /// Index into `Reach::stacks`.
    Stack(usize),
}

fn push_pieces(pieces: &mut Vec<(u64, u64, Source)>, addr: u64, len: u64, src: Source) {
    let mut off = 0;
    while off < len {
        let n = (len - off).min(CHUNK);
        pieces.push((addr + off, n, src));
        off += n;
    }
}

/// Holders found, by target address.
#[derive(Default)]
pub struct Holders {
    pub by_target: HashMap<u64, Vec<Holder>>,
    /// Ranges that could not be read: a holder may be missing.
    pub errors: u64,
}

impl Holders {
    fn add(&mut self, target: u64, h: Holder) {
        let v = self.by_target.entry(target).or_default();
        if !v.contains(&h) {
            v.push(h);
        }
    }

    pub fn of(&self, target: u64) -> &[Holder] {
        self.by_target.get(&target).map_or(&[], Vec::as_slice)
    }
}

/// The targets' ranges, for a fast "does this word point into one".
struct Targets {
    /// start → (end, target address).
    ranges: BTreeMap<u64, (u64, u64)>,
    lo: u64,
    hi: u64,
}

impl Targets {
    fn new(targets: &[(u64, u64)]) -> Targets {
        let ranges: BTreeMap<u64, (u64, u64)> = targets
            .iter()
            .map(|&(a, len)| (a, (a.saturating_add(len.max(1)), a)))
            .collect();
        let lo = ranges.keys().next().copied().unwrap_or(u64::MAX);
        let hi = ranges.values().map(|(e, _)| *e).max().unwrap_or(0);
        Targets { ranges, lo, hi }
    }

    fn hit(&self, w: u64) -> Option<u64> {
        if w < self.lo || w >= self.hi {
            return None;
        }
        let (_, &(end, target)) = self.ranges.range(..=w).next_back()?;
        (w < end).then_some(target)
    }
}

/// Every module's data and bss with its pointer mask (as `roots` walks
/// them for the marking).
fn sections(mem: &dyn Memory, hl: &HeapLayout, first: u64) -> Vec<Section> {
    let mut out = Vec::new();
    let mut md = first;
    for _ in 0..MAX_MODULES {
        if md == 0 {
            break;
        }
        let mut b = vec![0u8; (hl.md_next + 8).max(hl.md_gcbssmask + 16) as usize];
        if !mem.read(md, &mut b) {
            break;
        }
        for (start, end, mask) in [
            (hl.md_data, hl.md_edata, hl.md_gcdatamask),
            (hl.md_bss, hl.md_ebss, hl.md_gcbssmask),
        ] {
            let (start, end) = (le_u64(&b, start), le_u64(&b, end));
            if end <= start || end - start > MAX_SECTION || start % 8 != 0 {
                continue;
            }
            let bv = &b[mask as usize..];
            let nbits = le_u64(bv, hl.bitvector_n) & 0xffff_ffff;
            let data = le_u64(bv, hl.bitvector_bytedata);
            let mut m = vec![0u8; nbits.min((end - start) / 8).div_ceil(8) as usize];
            if mem.read(data, &mut m) {
                out.push(Section {
                    start,
                    end,
                    mask: m,
                });
            }
        }
        md = le_u64(&b, hl.md_next);
    }
    out
}

/// The Ps of `allp` (a `[]*p` at `allp`).
fn ps(mem: &dyn Memory, allp: Option<u64>) -> Vec<u64> {
    let Some(allp) = allp else {
        return Vec::new();
    };
    crate::process::mem::pointer_slice(mem, allp, MAX_PS)
        .unwrap_or_default()
        .into_iter()
        .flatten()
        .filter(|p| *p != 0)
        .collect()
}

/// The pointer words of section `s` that hit a target of `t`, the section
/// read in pieces (a multiple of 64 bytes: one mask byte each) so that
/// gotrace's memory does not follow the target's sizes.
fn global_holders(mem: &dyn Memory, s: &Section, t: &Targets, out: &mut Holders) {
    const PIECE: u64 = 1 << 20;
    let len = s.end - s.start;
    let mut bytes = vec![0u8; len.min(PIECE) as usize];
    for off in (0..len).step_by(PIECE as usize) {
        let piece = &mut bytes[..(len - off).min(PIECE) as usize];
        if !mem.read(s.start + off, piece) {
            out.errors += 1;
            continue;
        }
        let first = (off / 8) as usize;
        for (i, w) in piece.chunks_exact(8).enumerate() {
            let i = first + i;
            if s.mask.get(i / 8).is_none_or(|m| m >> (i % 8) & 1 == 0) {
                continue;
            }
            if let Some(target) = t.hit(le_u64(w, 0)) {
                out.add(
                    target,
                    Holder::Global {
                        at: s.start + 8 * i as u64,
                    },
                );
            }
        }
    }
}
