//! The roots that are not goroutine stacks, as Go's `markroot` takes them
//! (mgcmark.go): module data and bss through their pointer masks, the
//! special records of every in-use span (a finalizer's object contents and
//! function, cleanup functions, weak handles), queued finalizers and
//! queued cleanups.

use super::heap::{Heap, field};
use super::mark::{Marker, Root};
use crate::gobin::heap_layout::{HeapGlobals, HeapLayout};
use crate::process::mem::{Memory, le_u64, pointer_slice};

/// Modules beyond this are a misread (a plugin-heavy program has a few).
const MAX_MODULES: usize = 64;
/// Bytes of one module's data or bss beyond this are a misread.
const MAX_SECTION: u64 = 1 << 30;
/// Bytes of a data or bss section read at a time (a multiple of 64).
const SECTION_PIECE: u64 = 1 << 20;
/// Spans in `mheap_.allspans` beyond this are a misread.
const MAX_SPANS: u64 = 1 << 26;
/// Entries of `mheap_.allspans` read at a time.
const SPANS_PER_READ: u64 = 1 << 16;
/// Special records on one span, finalizer or cleanup blocks, beyond this.
const MAX_LIST: usize = 1 << 20;
/// Ps (GOMAXPROCS) and Ms (threads) beyond these are a misread.
const MAX_PS: u64 = 1 << 16;
const MAX_MS: usize = 1 << 16;

/// What reading the roots met: problems that can hide an edge.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RootStats {
    pub modules: u64,
    pub specials: u64,
    pub finalizer_blocks: u64,
    pub cleanup_blocks: u64,
    /// Root memory that could not be read (or a list that did not end).
    pub incomplete: u64,
}

pub fn mark_roots(m: &mut Marker, hl: &HeapLayout, g: &HeapGlobals, bias: u64) -> RootStats {
    let mut st = RootStats::default();
    modules(m, hl, g.firstmoduledata.wrapping_add(bias), &mut st);
    specials(m, hl, g.mheap.wrapping_add(bias), &mut st);
    if let Some(allfin) = g.allfin {
        let head = m.heap.mem().u64(allfin.wrapping_add(bias)).unwrap_or(0);
        st.finalizer_blocks = blocks(
            m,
            head,
            hl.finblock_alllink,
            hl.finblock_size,
            Root::Finalizer,
            &mut st,
        );
    }
    if let (Some(gc), Some(all), Some(link), Some(size)) = (
        g.gc_cleanups,
        hl.cleanups_all,
        hl.cleanup_block_alllink,
        hl.cleanup_block_size,
    ) {
        let head = m
            .heap
            .mem()
            .u64(gc.wrapping_add(bias).wrapping_add(all))
            .unwrap_or(0);
        st.cleanup_blocks = blocks(m, head, link, size, Root::Special, &mut st);
    }
    tiny_blocks(m, hl, g, bias, &mut st);
    st
}

/// Each P's current tiny block (`allp[i].mcache.tiny`), as Go's
/// `gcMarkTinyAllocs` marks them.
fn tiny_blocks(m: &mut Marker, hl: &HeapLayout, g: &HeapGlobals, bias: u64, st: &mut RootStats) {
    let (Some(allp), Some(mcache), Some(tiny)) = (g.allp, hl.p_mcache, hl.mcache_tiny) else {
        return;
    };
    let mem = m.heap.mem();
    let Some(ps) = pointer_slice(mem, allp.wrapping_add(bias), MAX_PS) else {
        st.incomplete += 1;
        return;
    };
    let root = m.root(Root::TinyBlock);
    for p in ps {
        let block = p
            .and_then(|p| mem.u64(p + mcache))
            .filter(|c| *c != 0)
            .and_then(|c| mem.u64(c + tiny));
        match block {
            Some(0) => {}
            Some(b) => m.mark_object(b, root),
            None => st.incomplete += 1,
        }
    }
}

/// The words of every P's write-barrier buffer, GC work queues and page
/// cache ([`HeapLayout::p_stale`]): stale copies of pointers and page
/// addresses, which Go never scans (a P is scanned by its type, and these
/// are uintptrs or point outside the heap; `markroot` adds no P root).
pub fn p_stale_words(mem: &dyn Memory, hl: &HeapLayout, g: &HeapGlobals, bias: u64) -> Vec<u64> {
    let Some(allp) = g.allp.filter(|_| !hl.p_stale.is_empty()) else {
        return Vec::new();
    };
    pointer_slice(mem, allp.wrapping_add(bias), MAX_PS)
        .unwrap_or_default()
        .into_iter()
        .flatten()
        .filter(|p| *p != 0)
        .flat_map(|p| {
            hl.p_stale
                .iter()
                .flat_map(move |&(off, size)| (0..size / 8).map(move |w| p + off + 8 * w))
        })
        .collect()
}

/// Every M on `allm`.
fn ms(mem: &dyn Memory, hl: &HeapLayout, g: &HeapGlobals, bias: u64) -> Vec<u64> {
    let (Some(allm), Some(link)) = (g.allm, hl.m_alllink) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut mp = mem.u64(allm.wrapping_add(bias)).unwrap_or(0);
    while mp != 0 && out.len() < MAX_MS {
        out.push(mp);
        mp = mem.u64(mp + link).unwrap_or(0);
    }
    out
}

/// The g structs outside allgs (each M's g0 and gsignal), whose
/// `stack.hi` must not count as an edge either.
pub fn m_gs(mem: &dyn Memory, hl: &HeapLayout, g: &HeapGlobals, bias: u64) -> Vec<u64> {
    let (Some(g0), Some(gsignal)) = (hl.m_g0, hl.m_gsignal) else {
        return Vec::new();
    };
    ms(mem, hl, g, bias)
        .into_iter()
        .flat_map(|mp| [mp + g0, mp + gsignal])
        .filter_map(|a| mem.u64(a))
        .filter(|g| *g != 0)
        .collect()
}

/// The words of each g (`gs`), M and P's heap slot past the struct: Go
/// (1.24+) zeroes only the bytes asked for, so the rest of the size class
/// keeps what the slot held before (a channel's address, seen on Go 1.26),
/// and Go never scans it.
pub fn slack_words(
    heap: &mut Heap<'_>,
    hl: &HeapLayout,
    gs: &[u64],
    g: &HeapGlobals,
    bias: u64,
) -> Vec<u64> {
    let mem = heap.mem();
    let mut typed: Vec<(u64, Option<u64>)> = gs.iter().map(|p| (*p, hl.g_size)).collect();
    typed.extend(ms(mem, hl, g, bias).into_iter().map(|m| (m, hl.m_size)));
    if let Some(allp) = g.allp {
        let ps = pointer_slice(mem, allp.wrapping_add(bias), MAX_PS).unwrap_or_default();
        typed.extend(ps.into_iter().flatten().map(|p| (p, hl.p_size)));
    }
    let mut out = Vec::new();
    for (base, size) in typed {
        let (Some(size), Some(o)) = (size, heap.find(base)) else {
            continue;
        };
        let s = &heap.spans[o.span as usize];
        let slot = s.start + u64::from(o.idx) * s.elemsize;
        let end = (base + size).next_multiple_of(8);
        out.extend((end..slot + s.elemsize).step_by(8));
    }
    out
}

/// Data and bss of each module, through `gcdatamask` / `gcbssmask`.
fn modules(m: &mut Marker, hl: &HeapLayout, first: u64, st: &mut RootStats) {
    let mem = m.heap.mem();
    let mut md = first;
    for _ in 0..MAX_MODULES {
        if md == 0 {
            return;
        }
        let mut b = vec![0u8; (hl.md_next + 8).max(hl.md_gcbssmask + 16) as usize];
        if !mem.read(md, &mut b) {
            st.incomplete += 1;
            return;
        }
        st.modules += 1;
        for (start, end, mask) in [
            (hl.md_data, hl.md_edata, hl.md_gcdatamask),
            (hl.md_bss, hl.md_ebss, hl.md_gcbssmask),
        ] {
            let (start, end) = (le_u64(&b, start), le_u64(&b, end));
            if !section(m, hl, start, end, &b[mask as usize..]) {
                st.incomplete += 1;
            }
        }
        md = le_u64(&b, hl.md_next);
    }
    st.incomplete += 1;
}

/// One section with its `bitvector` (read from `bv`); false when it could
/// not be read.
fn section(m: &mut Marker, hl: &HeapLayout, start: u64, end: u64, bv: &[u8]) -> bool {
    let mem = m.heap.mem();
    if end < start || end - start > MAX_SECTION || !start.is_multiple_of(8) {
        return false;
    }
    if end == start {
        return true;
    }
    let nbits = le_u64(bv, hl.bitvector_n) & 0xffff_ffff;
    let data = le_u64(bv, hl.bitvector_bytedata);
    let words = (end - start) / 8;
    let mut mask = vec![0u8; nbits.min(words).div_ceil(8) as usize];
    if !mem.read(data, &mut mask) {
        return false;
    }
    // The section in pieces (a multiple of 64 bytes: one mask byte each),
    // so that gotrace's memory does not follow the target's sizes.
    let len = end - start;
    let mut bytes = vec![0u8; len.min(SECTION_PIECE) as usize];
    let mut whole = true;
    for off in (0..len).step_by(SECTION_PIECE as usize) {
        let piece = &mut bytes[..(len - off).min(SECTION_PIECE) as usize];
        if !mem.read(start + off, piece) {
            whole = false;
            continue;
        }
        let mask = mask.get((off / 64) as usize..).unwrap_or(&[]);
        m.scan_masked(start + off, piece, mask);
    }
    whole
}

/// The special records of every in-use span (`mheap_.allspans`).
fn specials(m: &mut Marker, hl: &HeapLayout, mheap: u64, st: &mut RootStats) {
    let mem = m.heap.mem();
    let (Some(ptr), Some(len)) = (
        mem.u64(mheap + hl.mheap_allspans),
        mem.u64(mheap + hl.mheap_allspans + 8),
    ) else {
        st.incomplete += 1;
        return;
    };
    if len > MAX_SPANS {
        st.incomplete += 1;
        return;
    }
    // The list in pieces: its length is the target's word, and gotrace's
    // memory must not follow it.
    let mut list = vec![0u8; SPANS_PER_READ as usize * 8];
    for first in (0..len).step_by(SPANS_PER_READ as usize) {
        let n = (len - first).min(SPANS_PER_READ) as usize;
        let piece = &mut list[..n * 8];
        if !mem.read(ptr.wrapping_add(first * 8), piece) {
            st.incomplete += 1;
            return;
        }
        let spans: Vec<u64> = piece.chunks_exact(8).map(|w| le_u64(w, 0)).collect();
        span_batch_specials(m, hl, &spans, st);
    }
}

/// The special records of the spans at `spans` (read in batches).
fn span_batch_specials(m: &mut Marker, hl: &HeapLayout, spans: &[u64], st: &mut RootStats) {
    let mem = m.heap.mem();
    let need = (hl.span_specials.max(hl.span_state).max(hl.span_start_addr) + 8) as usize;
    for batch in spans.chunks(1024) {
        let mut bufs: Vec<Vec<u8>> = batch.iter().map(|_| vec![0u8; need]).collect();
        let mut ranges: Vec<(u64, &mut [u8])> = batch
            .iter()
            .zip(bufs.iter_mut())
            .map(|(a, b)| (*a, &mut b[..]))
            .collect();
        let ok = mem.read_vectored(&mut ranges);
        drop(ranges);
        for (b, ok) in bufs.iter().zip(ok) {
            if !ok {
                st.incomplete += 1;
                continue;
            }
            let head = le_u64(b, hl.span_specials);
            if b[hl.span_state as usize] == hl.span_in_use && head != 0 {
                span_specials(m, hl, le_u64(b, hl.span_start_addr), head, st);
            }
        }
    }
}

fn span_specials(m: &mut Marker, hl: &HeapLayout, start: u64, head: u64, st: &mut RootStats) {
    let mem = m.heap.mem();
    let mut sp = head;
    for _ in 0..MAX_LIST {
        if sp == 0 {
            return;
        }
        let size = hl
            .special_max_size
            .max(hl.special_finalizer_size)
            .max(hl.special_next + 8);
        let mut rec = vec![0u8; size as usize];
        if !mem.read(sp, &mut rec) {
            st.incomplete += 1;
            return;
        }
        st.specials += 1;
        let kind = field(&rec, hl.special_kind) as u8;
        if Some(kind) != hl.kind_special_profile {
            let finalizer = kind == hl.kind_special_finalizer;
            let root = m.root(if finalizer {
                Root::Finalizer
            } else {
                Root::Special
            });
            // The record's own words (fn, fint, ot; cleanup fn; handle).
            let body = hl.special_kind.off + 1;
            m.scan_bytes(sp + body, &rec[body as usize..], root);
            if finalizer {
                // Go marks the object's contents, not the object.
                let p = start + field(&rec, hl.special_offset);
                if let Some(o) = m.heap.find(p) {
                    let (base, len) = m.heap.bounds(o);
                    if m.scan_ranges(&[(base, len, root)]) > 0 {
                        st.incomplete += 1;
                    }
                }
            }
        }
        sp = le_u64(&rec, hl.special_next);
    }
    st.incomplete += 1;
}

/// A linked list of fixed-size blocks (finalizer or cleanup queues), each
/// scanned whole: Go scans them with a pointer mask, every word is a
/// superset.
fn blocks(m: &mut Marker, head: u64, link: u64, size: u64, kind: Root, st: &mut RootStats) -> u64 {
    let mem = m.heap.mem();
    let root = m.root(kind);
    let mut b = head;
    let mut n = 0;
    while b != 0 {
        if n as usize >= MAX_LIST {
            st.incomplete += 1;
            break;
        }
        let mut buf = vec![0u8; size as usize];
        if !mem.read(b, &mut buf) {
            st.incomplete += 1;
            break;
        }
        m.scan_bytes(b, &buf, root);
        n += 1;
        b = le_u64(&buf, link);
    }
    n
}
