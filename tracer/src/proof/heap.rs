//! The target's heap as the runtime indexes it: `mheap_.arenas` → each
//! arena's `spans` → the span's object bounds and allocation bits, plus one
//! mark bit per object for the analysis.
//!
//! Everything is read from untrusted, changing memory: every length is
//! bounded, a span that does not look like one is "not heap", and nothing
//! here can panic on what it reads.

use std::collections::HashMap;

use crate::gobin::heap_layout::{Field, HeapLayout};
use crate::process::mem::{Memory, le_u64};

/// Arenas beyond this are a misread (4 TiB of heap).
const MAX_ARENAS: u64 = 1 << 16;
/// A span larger than this (1 TiB) is a misread.
const MAX_SPAN_BYTES: u64 = 1 << 40;
/// Objects in one span beyond this are a misread (8 KiB / 8 B = 1024 in the
/// smallest class; a span of many pages of 16-byte objects stays far below).
const MAX_NELEMS: u64 = 1 << 20;
/// Spans whose objects take at most this many bytes are read whole when
/// the marker scans them (one read for all their queued objects).
const WHOLE_SPAN_MAX: u64 = 64 << 10;

/// Reads a little-endian field of `size` bytes.
pub fn field(b: &[u8], f: Field) -> u64 {
    let off = f.off as usize;
    let Some(bytes) = b.get(off..off + f.size as usize) else {
        return 0;
    };
    let mut w = [0u8; 8];
    w[..bytes.len()].copy_from_slice(bytes);
    u64::from_le_bytes(w)
}

fn byte(b: &[u8], off: u64) -> u8 {
    b.get(off as usize).copied().unwrap_or(0)
}

/// One in-use span, as read once per pass. What finding and marking an
/// object reads comes first, in one cache line (`repr(C)` keeps the order,
/// the alignment starts each span on a line).
#[repr(C, align(64))]
pub struct Span {
    pub start: u64,
    pub limit: u64,
    pub elemsize: u64,
    /// `elemsize`'s reciprocal (⌈2³² / elemsize⌉), 0 for a division.
    div_mul: u64,
    nelems: u32,
    freeindex: u32,
    /// Allocation and mark bits, interleaved so that both of an object sit
    /// side by side: word 2k has the allocation bits of objects 64k to
    /// 64k + 63, word 2k + 1 their marks.
    bits: Box<[u64]>,
    pub noscan: bool,
    /// In the marker's queue of spans to scan (or being scanned).
    pub queued: bool,
    /// The span could not be read whole: read object by object.
    whole_failed: bool,
    /// The watched objects (those a candidate waits on), sorted by index,
    /// each with the root that first reached it ([`NO_ROOT`] until marked):
    /// only their origin is ever asked, so only theirs is kept.
    watched: Vec<(u32, u32)>,
    /// Marked objects not scanned yet, with the root that reached each.
    pub grey: Vec<(u32, u32)>,
    /// Every object's root ([`NO_ROOT`]: not marked), when the pass keeps
    /// them all ([`Heap::keep_origins`]); empty otherwise (then `watched`
    /// has the few asked for).
    origins: Box<[u32]>,
}

/// A watched object not marked yet.
const NO_ROOT: u32 = u32::MAX;

impl Span {
    /// The index of the object `off` bytes into the span: a multiplication
    /// by the reciprocal, which is high by at most one (as Go's
    /// `divMagic`), corrected; a division for spans of 4 GiB or more.
    #[inline]
    fn index(&self, off: u64) -> u64 {
        if self.div_mul == 0 {
            return off / self.elemsize;
        }
        let q = (off * self.div_mul) >> 32;
        if q * self.elemsize > off { q - 1 } else { q }
    }

    /// `(*mspan).isFree`'s complement: below `freeindex` or allocation bit set.
    #[inline]
    fn allocated(&self, idx: u64) -> bool {
        idx < u64::from(self.freeindex) || self.bit(idx, 0)
    }

    pub fn marked(&self, idx: u64) -> bool {
        self.bit(idx, 1)
    }

    /// Object `idx`'s allocation (`which` 0) or mark (1) bit.
    #[inline]
    fn bit(&self, idx: u64, which: usize) -> bool {
        self.bits
            .get(2 * (idx / 64) as usize + which)
            .is_some_and(|w| w >> (idx % 64) & 1 == 1)
    }

    /// Sets the allocation bits from the runtime's bitmap (a bit per
    /// object, little-endian bytes), or every one when it is unknown.
    fn set_alloc(&mut self, bitmap: Option<&[u8]>) {
        for k in 0..self.bits.len() / 2 {
            self.bits[2 * k] = match bitmap {
                Some(b) => {
                    let mut w = [0u8; 8];
                    let bytes = b.get(8 * k..).unwrap_or(&[]);
                    let n = bytes.len().min(8);
                    w[..n].copy_from_slice(&bytes[..n]);
                    u64::from_le_bytes(w)
                }
                None => u64::MAX,
            };
        }
    }

    /// Which root first reached object `idx`, for a watched object (any
    /// object when every origin is kept).
    pub fn origin(&self, idx: u64) -> Option<u32> {
        if !self.origins.is_empty() {
            return self
                .origins
                .get(idx as usize)
                .copied()
                .filter(|r| *r != NO_ROOT);
        }
        let k = self
            .watched
            .binary_search_by_key(&(idx as u32), |w| w.0)
            .ok()?;
        Some(self.watched[k].1).filter(|r| *r != NO_ROOT)
    }

    /// How many objects the span has.
    pub fn nelems(&self) -> u64 {
        u64::from(self.nelems)
    }

    /// The index of the object containing `addr`, if one does (allocated
    /// or not).
    pub fn slot(&self, addr: u64) -> Option<u64> {
        if addr < self.start || addr >= self.limit {
            return None;
        }
        let idx = self.index(addr - self.start);
        (idx < u64::from(self.nelems)).then_some(idx)
    }

    /// Bytes of the span's objects, `[start, start + nelems * elemsize)`.
    pub fn objects_len(&self) -> u64 {
        u64::from(self.nelems) * self.elemsize
    }

    /// Whether the marker reads the span's objects in one piece: a small
    /// span that could be read so before.
    pub fn whole(&self) -> bool {
        !self.whole_failed && self.objects_len() <= WHOLE_SPAN_MAX
    }

    /// From now on, its objects are read one by one.
    pub fn whole_failed(&mut self) {
        self.whole_failed = true;
    }
}

/// An object: its span (index into [`Heap::spans`]) and slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Obj {
    pub span: u32,
    pub idx: u32,
}

#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct HeapStats {
    pub arenas: u64,
    pub spans: u64,
    pub objects_marked: u64,
    pub bytes_scanned: u64,
    pub read_errors: u64,
    /// Whole spans read for scanning.
    pub span_reads: u64,
    /// Bytes read from the heap and root ranges for scanning.
    pub bytes_read: u64,
}

pub struct Heap<'a> {
    mem: &'a dyn Memory,
    hl: &'a HeapLayout,
    /// The arenas, sorted by index.
    arenas: Vec<Arena>,
    /// Arena index − `first_arena` → position in `arenas` ([`NO_ARENA`]:
    /// none), when the indices are close enough together for a table
    /// (else empty: a binary search).
    arena_table: Vec<u32>,
    first_arena: u64,
    /// Lowest and highest address any arena covers (a cheap filter for
    /// words that cannot be heap pointers).
    lo: u64,
    hi: u64,
    /// log2 of the page size when it is a power of two (a shift instead of
    /// a division per word).
    page_shift: Option<u32>,
    pub spans: Vec<Span>,
    /// `*mspan` → index in `spans`; None for a span that is not in use.
    by_ptr: HashMap<u64, Option<u32>, AddrHash>,
    mspan_len: usize,
    /// Keep every marked object's root, not only the watched ones'.
    all_origins: bool,
    pub stats: HeapStats,
}

/// One arena of the heap index.
struct Arena {
    index: u64,
    /// Page → `*mspan`, as the arena's `spans` array says.
    spans: Vec<u64>,
    /// Page → index in [`Heap::spans`] once looked up ([`UNKNOWN`] before,
    /// [`NOT_IN_USE`] for no span in use).
    resolved: Vec<u32>,
}

const UNKNOWN: u32 = u32::MAX;
const NOT_IN_USE: u32 = u32::MAX - 1;
const NO_ARENA: u32 = u32::MAX;
/// Largest arena table (indices from the lowest arena's to the highest's).
const ARENA_TABLE_MAX: u64 = 1 << 16;

#[derive(Debug, thiserror::Error)]
pub enum HeapError {
    #[error("cannot read runtime.mheap_ at {0:#x}")]
    Mheap(u64),
    #[error("the heap index looks wrong: {0}")]
    Index(String),
}

impl<'a> Heap<'a> {
    /// Reads the arena index of the heap whose `mheap_` is at `mheap`.
    pub fn open(
        mem: &'a dyn Memory,
        hl: &'a HeapLayout,
        mheap: u64,
    ) -> Result<Heap<'a>, HeapError> {
        if hl.arena_l1_bits != 0 {
            return Err(HeapError::Index(format!(
                "arenaL1Bits is {}, only 0 is read",
                hl.arena_l1_bits
            )));
        }
        let l2 = mem
            .u64(mheap + hl.mheap_arenas)
            .ok_or(HeapError::Mheap(mheap))?;
        let (ptr, len) = (
            mem.u64(mheap + hl.mheap_all_arenas)
                .ok_or(HeapError::Mheap(mheap))?,
            mem.u64(mheap + hl.mheap_all_arenas + 8)
                .ok_or(HeapError::Mheap(mheap))?,
        );
        if len == 0 || len > MAX_ARENAS || l2 == 0 {
            return Err(HeapError::Index(format!("{len} arenas, index at {l2:#x}")));
        }
        let mut idx = vec![0u8; len as usize * 8];
        if !mem.read(ptr, &mut idx) {
            return Err(HeapError::Index(format!(
                "cannot read the arena list at {ptr:#x}"
            )));
        }
        let mut heap = Heap {
            mem,
            hl,
            arenas: Vec::new(),
            arena_table: Vec::new(),
            first_arena: 0,
            lo: u64::MAX,
            hi: 0,
            page_shift: hl
                .page_size
                .is_power_of_two()
                .then(|| hl.page_size.trailing_zeros()),
            spans: Vec::new(),
            by_ptr: HashMap::default(),
            mspan_len: mspan_len(hl),
            all_origins: false,
            stats: HeapStats::default(),
        };
        let arena_bytes = 1u64 << hl.log_heap_arena_bytes;
        for c in idx.chunks_exact(8) {
            let ai = le_u64(c, 0);
            if ai >= 1 << hl.arena_l2_bits {
                return Err(HeapError::Index(format!(
                    "arena index {ai:#x} out of range"
                )));
            }
            let ha = mem.u64(l2 + 8 * ai).unwrap_or(0);
            let mut spans = vec![0u8; hl.pages_per_arena as usize * 8];
            if ha == 0 || !mem.read(ha + hl.heap_arena_spans, &mut spans) {
                heap.stats.read_errors += 1;
                continue;
            }
            let base = (ai << hl.log_heap_arena_bytes).wrapping_add(hl.arena_base_offset);
            heap.lo = heap.lo.min(base);
            heap.hi = heap.hi.max(base.saturating_add(arena_bytes));
            // A repeated index: the last read wins.
            heap.arenas.retain(|a| a.index != ai);
            heap.arenas.push(Arena {
                index: ai,
                spans: spans.chunks_exact(8).map(|w| le_u64(w, 0)).collect(),
                resolved: vec![UNKNOWN; hl.pages_per_arena as usize],
            });
        }
        heap.index_arenas();
        heap.stats.arenas = heap.arenas.len() as u64;
        Ok(heap)
    }

    /// Sorts the arenas and, when their indices are close together, makes
    /// the table from index to arena.
    fn index_arenas(&mut self) {
        self.arenas.sort_by_key(|a| a.index);
        if let (Some(first), Some(last)) = (self.arenas.first(), self.arenas.last())
            && last.index - first.index < ARENA_TABLE_MAX
        {
            self.first_arena = first.index;
            self.arena_table = vec![NO_ARENA; (last.index - first.index + 1) as usize];
            for (k, a) in self.arenas.iter().enumerate() {
                self.arena_table[(a.index - first.index) as usize] = k as u32;
            }
        }
    }

    /// Lowest and highest address (exclusive) any arena covers: a word
    /// outside is no heap pointer.
    pub fn range(&self) -> (u64, u64) {
        (self.lo, self.hi)
    }

    /// Position in `arenas` of the arena with index `ai`.
    #[inline]
    fn arena_at(&self, ai: u64) -> Option<usize> {
        if self.arena_table.is_empty() {
            return self.arenas.binary_search_by_key(&ai, |a| a.index).ok();
        }
        match self
            .arena_table
            .get(ai.wrapping_sub(self.first_arena) as usize)
        {
            Some(&k) if k != NO_ARENA => Some(k as usize),
            _ => None,
        }
    }

    /// The in-use span whose pages hold `p`, if any.
    #[inline]
    fn span_at(&mut self, p: u64) -> Option<u32> {
        if p < self.lo || p >= self.hi {
            return None;
        }
        let hl = self.hl;
        let ai = p.wrapping_sub(hl.arena_base_offset) >> hl.log_heap_arena_bytes;
        let a = self.arena_at(ai)?;
        let page = match self.page_shift {
            Some(shift) => p >> shift,
            None => p / hl.page_size,
        } % hl.pages_per_arena;
        let arena = &self.arenas[a];
        match *arena.resolved.get(page as usize)? {
            UNKNOWN => {}
            NOT_IN_USE => return None,
            si => return Some(si),
        }
        self.load_arena(a);
        match self.arenas[a].resolved[page as usize] {
            UNKNOWN | NOT_IN_USE => None,
            si => Some(si),
        }
    }

    /// The allocated object containing `p`, if `p` points into the heap.
    #[inline]
    pub fn find(&mut self, p: u64) -> Option<Obj> {
        let si = self.span_at(p)?;
        let s = &self.spans[si as usize];
        if p < s.start || p >= s.limit {
            return None;
        }
        let idx = s.index(p - s.start);
        (idx < u64::from(s.nelems) && s.allocated(idx)).then_some(Obj {
            span: si,
            idx: idx as u32,
        })
    }

    /// Marks the allocated object containing `p` for `root`: the object if
    /// it was not marked before ([`Heap::find`] then [`Heap::mark`]).
    #[inline]
    pub fn mark_at(&mut self, p: u64, root: u32) -> Option<Obj> {
        let o = self.find(p)?;
        self.mark(o, root).then_some(o)
    }

    /// Whether `p` is outside every in-use heap span: a global, a stack, or
    /// not memory at all. Go's detector counts such primitives as alive.
    pub fn not_heap(&mut self, p: u64) -> bool {
        match self.span_at(p) {
            None => true,
            Some(si) => {
                let s = &self.spans[si as usize];
                p < s.start || p >= s.limit
            }
        }
    }

    /// Reads the spans the pages of arena `a` name (those not read yet):
    /// their headers, then their allocation bits, each in a few vectored
    /// reads; every page of the arena is resolved afterwards.
    #[cold]
    fn load_arena(&mut self, a: usize) {
        let mut sps: Vec<u64> = self.arenas[a]
            .spans
            .iter()
            .copied()
            .filter(|sp| *sp != 0 && !self.by_ptr.contains_key(sp))
            .collect();
        sps.sort_unstable();
        sps.dedup();
        let heads = read_each(self.mem, sps.iter().map(|sp| (*sp, self.mspan_len)));
        let mut found = Vec::new();
        for (sp, head) in sps.iter().zip(&heads) {
            match head {
                Some(b) => found.extend(self.parse_span(b).map(|s| (*sp, s))),
                None => self.stats.read_errors += 1,
            }
        }
        let bits = read_each(
            self.mem,
            found
                .iter()
                .map(|(_, (s, at))| (*at, u64::from(s.nelems).div_ceil(8) as usize)),
        );
        for sp in &sps {
            self.by_ptr.insert(*sp, None);
        }
        for ((sp, (mut s, at)), bits) in found.into_iter().zip(bits) {
            match bits {
                Some(b) if at != 0 => s.set_alloc(Some(&b)),
                // Unknown allocation bits: every slot counts as allocated,
                // which only adds edges.
                _ => {
                    s.set_alloc(None);
                    self.stats.read_errors += 1;
                }
            }
            self.stats.spans += 1;
            self.spans.push(s);
            self.by_ptr.insert(sp, Some((self.spans.len() - 1) as u32));
        }
        let arena = &mut self.arenas[a];
        for (page, sp) in arena.spans.iter().enumerate() {
            arena.resolved[page] = match self.by_ptr.get(sp) {
                Some(Some(si)) => *si,
                _ => NOT_IN_USE,
            };
        }
    }

    /// The span whose header is `b` if it is in use and looks sane (its
    /// allocation bits still to read, all clear), and where its bits are.
    fn parse_span(&mut self, b: &[u8]) -> Option<(Span, u64)> {
        let hl = self.hl;
        if byte(b, hl.span_state) != hl.span_in_use {
            return None;
        }
        let start = le_u64(b, hl.span_start_addr);
        let npages = le_u64(b, hl.span_npages);
        let elemsize = le_u64(b, hl.span_elemsize);
        let nelems = field(b, hl.span_nelems);
        let limit = le_u64(b, hl.span_limit);
        let bytes = npages.checked_mul(hl.page_size)?;
        let sane = elemsize > 0
            && bytes <= MAX_SPAN_BYTES
            && nelems > 0
            && nelems <= MAX_NELEMS
            && start.is_multiple_of(8)
            && limit > start
            && limit - start <= bytes
            && nelems.checked_mul(elemsize).is_some_and(|n| n <= bytes);
        if !sane {
            self.stats.read_errors += 1;
            return None;
        }
        let span = Span {
            start,
            limit,
            elemsize,
            nelems: nelems as u32,
            noscan: byte(b, hl.span_spanclass) & 1 == 1,
            // Offsets below 2³²: the product fits in 64 bits.
            div_mul: match (limit - start).max(nelems * elemsize) < 1 << 32 {
                true => (u32::MAX as u64 / elemsize) + 1,
                false => 0,
            },
            freeindex: field(b, hl.span_freeindex).min(u32::MAX.into()) as u32,
            bits: vec![0; 2 * nelems.div_ceil(64) as usize].into(),
            watched: Vec::new(),
            grey: Vec::new(),
            origins: match self.all_origins {
                true => vec![NO_ROOT; nelems as usize].into(),
                false => Box::new([]),
            },
            queued: false,
            whole_failed: false,
        };
        Some((span, le_u64(b, hl.span_alloc_bits)))
    }

    /// Sets the mark of `o`; true when it was not marked before.
    #[inline]
    pub fn mark(&mut self, o: Obj, root: u32) -> bool {
        let s = &mut self.spans[o.span as usize];
        let idx = o.idx as u64;
        let w = &mut s.bits[2 * (idx / 64) as usize + 1];
        if *w >> (idx % 64) & 1 == 1 {
            return false;
        }
        *w |= 1 << (idx % 64);
        if !s.origins.is_empty() {
            s.origins[idx as usize] = root;
        } else if !s.watched.is_empty()
            && let Ok(k) = s.watched.binary_search_by_key(&o.idx, |w| w.0)
        {
            s.watched[k].1 = root;
        }
        self.stats.objects_marked += 1;
        true
    }

    /// From now on, every marked object's root is kept (4 bytes an object
    /// of every span read), for questions asked after the pass. Before
    /// marking starts.
    pub fn keep_origins(&mut self) {
        self.all_origins = true;
        for s in self.spans.iter_mut().filter(|s| s.origins.is_empty()) {
            s.origins = vec![NO_ROOT; s.nelems as usize].into();
        }
    }

    /// Keeps the origin of the object holding `p` (a primitive a candidate
    /// waits on), for [`Heap::origin`]. Before marking starts.
    pub fn watch(&mut self, p: u64) {
        if let Some(o) = self.find(p) {
            let w = &mut self.spans[o.span as usize].watched;
            if let Err(k) = w.binary_search_by_key(&o.idx, |w| w.0) {
                w.insert(k, (o.idx, NO_ROOT));
            }
        }
    }

    /// Address and size of `o`.
    pub fn bounds(&self, o: Obj) -> (u64, u64) {
        let s = &self.spans[o.span as usize];
        (s.start + o.idx as u64 * s.elemsize, s.elemsize)
    }

    pub fn is_marked(&self, o: Obj) -> bool {
        self.spans[o.span as usize].marked(o.idx as u64)
    }

    /// Which root first reached `o`: known for watched objects only.
    pub fn origin(&self, o: Obj) -> Option<u32> {
        self.spans[o.span as usize].origin(o.idx as u64)
    }

    pub fn noscan(&self, o: Obj) -> bool {
        self.spans[o.span as usize].noscan
    }

    pub fn mem(&self) -> &'a dyn Memory {
        self.mem
    }
}

/// Hashing for maps keyed by addresses the analysis itself read: a
/// multiplication (no defence against chosen keys is needed, and SipHash
/// costs more than the lookup).
#[derive(Clone, Copy, Default)]
pub struct AddrHash;

impl std::hash::BuildHasher for AddrHash {
    type Hasher = AddrHasher;
    fn build_hasher(&self) -> AddrHasher {
        AddrHasher(0)
    }
}

pub struct AddrHasher(u64);

impl std::hash::Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0 ^ v)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(29);
    }
}

/// Reads `(addr, len)` ranges in a few vectored reads; None for a range
/// that could not be read.
fn read_each(mem: &dyn Memory, ranges: impl Iterator<Item = (u64, usize)>) -> Vec<Option<Vec<u8>>> {
    let ranges: Vec<(u64, usize)> = ranges.collect();
    let mut bufs: Vec<Vec<u8>> = ranges.iter().map(|(_, n)| vec![0u8; *n]).collect();
    let mut io: Vec<(u64, &mut [u8])> = ranges
        .iter()
        .zip(bufs.iter_mut())
        .map(|((a, _), b)| (*a, &mut b[..]))
        .collect();
    let ok = mem.read_vectored(&mut io);
    drop(io);
    bufs.into_iter()
        .zip(ok)
        .map(|(b, ok)| ok.then_some(b))
        .collect()
}

/// Bytes of an mspan to read to see every field the heap uses.
fn mspan_len(hl: &HeapLayout) -> usize {
    [
        hl.span_start_addr + 8,
        hl.span_npages + 8,
        hl.span_freeindex.off + hl.span_freeindex.size as u64,
        hl.span_nelems.off + hl.span_nelems.size as u64,
        hl.span_alloc_bits + 8,
        hl.span_spanclass + 1,
        hl.span_state + 1,
        hl.span_elemsize + 8,
        hl.span_limit + 8,
        hl.span_specials + 8,
        hl.span_sweepgen + 4,
    ]
    .into_iter()
    .max()
    .unwrap_or(0) as usize
}

impl Drop for Heap<'_> {
    fn drop(&mut self) {
        log::debug!("proof: heap {:?}", self.stats);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(elemsize: u64, nelems: u64) -> Span {
        let limit = elemsize * nelems;
        Span {
            start: 0,
            limit,
            elemsize,
            nelems: nelems as u32,
            noscan: false,
            div_mul: (u32::MAX as u64 / elemsize) + 1,
            freeindex: 0,
            bits: Box::new([]),
            watched: Vec::new(),
            grey: Vec::new(),
            origins: Box::new([]),
            queued: false,
            whole_failed: false,
        }
    }

    /// The reciprocal gives the division's index for every offset of a
    /// span, Go's size classes and odd sizes alike.
    #[test]
    fn index_by_reciprocal_is_the_division() {
        let sizes = [
            1,
            3,
            7,
            8,
            16,
            24,
            48,
            80,
            96,
            112,
            144,
            208,
            576,
            1152,
            3072,
            9472,
            10240,
            13568,
            27264,
            32768,
            65537,
            1 << 20,
            3 << 20,
        ];
        for size in sizes {
            let nelems = ((64u64 << 20) / size).clamp(1, MAX_NELEMS);
            let s = span(size, nelems);
            let end = size * nelems;
            let step = (end / 100_000).max(1);
            let offsets = (0..end)
                .step_by(step as usize)
                .chain((1..nelems.min(1000)).flat_map(|i| [i * size - 1, i * size, i * size + 1]));
            for off in offsets.filter(|o| *o < end) {
                assert_eq!(s.index(off), off / size, "size {size} offset {off}");
            }
        }
    }
}
