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
/// Objects in one span beyond this are a misread (8 KiB / 8 B = 1024 in the
/// smallest class; a span of many pages of 16-byte objects stays far below).
const MAX_NELEMS: u64 = 1 << 20;

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

/// One in-use span, as read once per pass.
pub struct Span {
    pub start: u64,
    pub limit: u64,
    pub elemsize: u64,
    pub nelems: u64,
    pub noscan: bool,
    freeindex: u64,
    alloc: Vec<u8>,
    marks: Vec<u64>,
    /// Which root first reached each marked object (index into the
    /// analysis's root list), by object index.
    origin: HashMap<u32, u32>,
}

impl Span {
    /// `(*mspan).isFree`'s complement: below `freeindex` or allocation bit set.
    fn allocated(&self, idx: u64) -> bool {
        idx < self.freeindex
            || self
                .alloc
                .get((idx / 8) as usize)
                .is_some_and(|b| b >> (idx % 8) & 1 == 1)
    }

    pub fn marked(&self, idx: u64) -> bool {
        self.marks
            .get((idx / 64) as usize)
            .is_some_and(|w| w >> (idx % 64) & 1 == 1)
    }

    pub fn origin(&self, idx: u64) -> Option<u32> {
        self.origin.get(&(idx as u32)).copied()
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
}

pub struct Heap<'a> {
    mem: &'a dyn Memory,
    hl: &'a HeapLayout,
    /// Arena index → the arena's `spans` array.
    arenas: HashMap<u64, Vec<u64>>,
    /// Lowest and highest address any arena covers (a cheap filter for
    /// words that cannot be heap pointers).
    lo: u64,
    hi: u64,
    pub spans: Vec<Span>,
    /// `*mspan` → index in `spans`; None for a span that is not in use.
    by_ptr: HashMap<u64, Option<u32>>,
    mspan_len: usize,
    pub stats: HeapStats,
}

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
            arenas: HashMap::new(),
            lo: u64::MAX,
            hi: 0,
            spans: Vec::new(),
            by_ptr: HashMap::new(),
            mspan_len: mspan_len(hl),
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
            heap.arenas
                .insert(ai, spans.chunks_exact(8).map(|w| le_u64(w, 0)).collect());
        }
        heap.stats.arenas = heap.arenas.len() as u64;
        Ok(heap)
    }

    /// The allocated object containing `p`, if `p` points into the heap.
    pub fn find(&mut self, p: u64) -> Option<Obj> {
        if p < self.lo || p >= self.hi {
            return None;
        }
        let hl = self.hl;
        let ai = p.wrapping_sub(hl.arena_base_offset) >> hl.log_heap_arena_bytes;
        let spans = self.arenas.get(&ai)?;
        let sp = *spans.get(((p / hl.page_size) % hl.pages_per_arena) as usize)?;
        if sp == 0 {
            return None;
        }
        let si = self.span(sp)?;
        let s = &self.spans[si as usize];
        if p < s.start || p >= s.limit {
            return None;
        }
        let idx = (p - s.start) / s.elemsize;
        (idx < s.nelems && s.allocated(idx)).then_some(Obj {
            span: si,
            idx: idx as u32,
        })
    }

    /// Whether `p` is outside every in-use heap span: a global, a stack, or
    /// not memory at all. Go's detector counts such primitives as alive.
    pub fn not_heap(&mut self, p: u64) -> bool {
        if p < self.lo || p >= self.hi {
            return true;
        }
        let hl = self.hl;
        let ai = p.wrapping_sub(hl.arena_base_offset) >> hl.log_heap_arena_bytes;
        let Some(spans) = self.arenas.get(&ai) else {
            return true;
        };
        let sp = spans
            .get(((p / hl.page_size) % hl.pages_per_arena) as usize)
            .copied()
            .unwrap_or(0);
        if sp == 0 {
            return true;
        }
        match self.span(sp) {
            None => true,
            Some(si) => {
                let s = &self.spans[si as usize];
                p < s.start || p >= s.limit
            }
        }
    }

    /// The span at `sp`, read on first use; None when it is not in use.
    fn span(&mut self, sp: u64) -> Option<u32> {
        if let Some(known) = self.by_ptr.get(&sp) {
            return *known;
        }
        let read = self.read_span(sp);
        let si = read.map(|s| {
            self.spans.push(s);
            (self.spans.len() - 1) as u32
        });
        self.by_ptr.insert(sp, si);
        si
    }

    fn read_span(&mut self, sp: u64) -> Option<Span> {
        let hl = self.hl;
        let mut b = vec![0u8; self.mspan_len];
        if !self.mem.read(sp, &mut b) {
            self.stats.read_errors += 1;
            return None;
        }
        if byte(&b, hl.span_state) != hl.span_in_use {
            return None;
        }
        let start = le_u64(&b, hl.span_start_addr);
        let npages = le_u64(&b, hl.span_npages);
        let elemsize = le_u64(&b, hl.span_elemsize);
        let nelems = field(&b, hl.span_nelems);
        let limit = le_u64(&b, hl.span_limit);
        let bytes = npages.checked_mul(hl.page_size)?;
        let sane = elemsize > 0
            && nelems > 0
            && nelems <= MAX_NELEMS
            && start % 8 == 0
            && limit > start
            && limit - start <= bytes
            && nelems.checked_mul(elemsize).is_some_and(|n| n <= bytes);
        if !sane {
            self.stats.read_errors += 1;
            return None;
        }
        let mut alloc = vec![0u8; nelems.div_ceil(8) as usize];
        let bits = le_u64(&b, hl.span_alloc_bits);
        if bits == 0 || !self.mem.read(bits, &mut alloc) {
            // Unknown allocation bits: every slot counts as allocated,
            // which only adds edges.
            alloc.iter_mut().for_each(|x| *x = 0xff);
            self.stats.read_errors += 1;
        }
        self.stats.spans += 1;
        Some(Span {
            start,
            limit,
            elemsize,
            nelems,
            noscan: byte(&b, hl.span_spanclass) & 1 == 1,
            freeindex: field(&b, hl.span_freeindex),
            alloc,
            marks: vec![0; nelems.div_ceil(64) as usize],
            origin: HashMap::new(),
        })
    }

    /// Sets the mark of `o`; true when it was not marked before.
    pub fn mark(&mut self, o: Obj, root: u32) -> bool {
        let s = &mut self.spans[o.span as usize];
        let idx = o.idx as u64;
        let w = &mut s.marks[(idx / 64) as usize];
        if *w >> (idx % 64) & 1 == 1 {
            return false;
        }
        *w |= 1 << (idx % 64);
        s.origin.insert(o.idx, root);
        self.stats.objects_marked += 1;
        true
    }

    /// Address and size of `o`.
    pub fn bounds(&self, o: Obj) -> (u64, u64) {
        let s = &self.spans[o.span as usize];
        (s.start + o.idx as u64 * s.elemsize, s.elemsize)
    }

    pub fn is_marked(&self, o: Obj) -> bool {
        self.spans[o.span as usize].marked(o.idx as u64)
    }

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
