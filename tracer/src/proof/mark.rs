//! Conservative marking: every aligned word of a root range or of a marked
//! object in a scan span that points into an allocated heap object marks
//! it. Precise maps could only remove edges; a word that merely looks like
//! a pointer keeps more alive, so the proof can miss a leak but never
//! invent one. Words of the waiters' own sudogs that Go's detector hides
//! (`hidden`) are skipped.

use std::collections::HashSet;

use super::heap::{Heap, Obj};
use crate::process::mem::le_u64;

/// Largest piece of an object or root range read at once.
const CHUNK: u64 = 1 << 20;
/// Bytes read per batch of queued objects.
const BATCH_BYTES: u64 = 8 << 20;

/// What first reached a marked object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Root {
    /// A word of a module's data or bss at this address.
    Global { addr: u64 },
    /// A goroutine's stack (a root goroutine, or a candidate found wakeable);
    /// `slot`: the stack word that first reached the object, `pc`: the
    /// frame holding that word (found after marking, for the report).
    Goroutine {
        goid: u64,
        slot: Option<u64>,
        pc: Option<u64>,
    },
    /// A finalizer's object or record, or a queued finalizer.
    Finalizer,
    /// Another special record (cleanup, weak handle...), or a queued cleanup.
    Special,
    /// A P's current tiny-allocation block, which Go's GC keeps whole
    /// (`gcMarkTinyAllocs`): small pointer-free objects share it.
    TinyBlock,
}

pub struct Marker<'h, 'a> {
    pub heap: &'h mut Heap<'a>,
    hidden: HashSet<u64>,
    work: Vec<(Obj, u32)>,
    pub roots: Vec<Root>,
}

impl<'h, 'a> Marker<'h, 'a> {
    pub fn new(heap: &'h mut Heap<'a>, hidden: HashSet<u64>) -> Self {
        Marker {
            heap,
            hidden,
            work: Vec::new(),
            roots: Vec::new(),
        }
    }

    /// Marks the object at `p` for `root` without scanning a word.
    pub fn mark_object(&mut self, p: u64, root: u32) {
        self.word(p, root);
    }

    pub fn root(&mut self, r: Root) -> u32 {
        self.roots.push(r);
        (self.roots.len() - 1) as u32
    }

    /// Marks the object `p` points into (if any) for `root`.
    fn word(&mut self, p: u64, root: u32) {
        self.word_at(0, p, root);
    }

    /// Marks the object `p` (read at `slot`) points into. A word of a
    /// goroutine's stack that reaches a new object becomes a root of its
    /// own, so that the report can name the frame holding the reference.
    fn word_at(&mut self, slot: u64, p: u64, root: u32) {
        let Some(o) = self.heap.find(p) else { return };
        if self.heap.is_marked(o) {
            return;
        }
        let root = match self.roots.get(root as usize) {
            Some(&Root::Goroutine {
                goid, slot: None, ..
            }) if slot != 0 => self.root(Root::Goroutine {
                goid,
                slot: Some(slot),
                pc: None,
            }),
            _ => root,
        };
        self.heap.mark(o, root);
        if !self.heap.noscan(o) {
            self.work.push((o, root));
        }
    }

    /// Every aligned word of `bytes`, read from `addr`.
    pub fn scan_bytes(&mut self, addr: u64, bytes: &[u8], root: u32) {
        let skew = ((8 - addr % 8) % 8) as usize;
        let Some(words) = bytes.get(skew..) else {
            return;
        };
        self.heap.stats.bytes_scanned += words.len() as u64;
        let base = addr + skew as u64;
        for (i, w) in words.chunks_exact(8).enumerate() {
            let at = base + 8 * i as u64;
            if !self.hidden.is_empty() && self.hidden.contains(&at) {
                continue;
            }
            if let Some(t) = trace_target()
                && le_u64(w, 0) & !15 == t & !15
            {
                log::debug!(
                    "proof: word at {at:#x} (root {root}) points at {:#x}",
                    le_u64(w, 0)
                );
            }
            self.word_at(at, le_u64(w, 0), root);
        }
    }

    /// Words of a data/bss section whose pointer-mask bit is set; each word
    /// that newly marks an object becomes its own root (so a report can name
    /// the global).
    pub fn scan_masked(&mut self, addr: u64, bytes: &[u8], mask: &[u8]) {
        for (i, w) in bytes.chunks_exact(8).enumerate() {
            if mask.get(i / 8).is_none_or(|m| m >> (i % 8) & 1 == 0) {
                continue;
            }
            let at = addr + 8 * i as u64;
            if self.hidden.contains(&at) {
                continue;
            }
            if let Some(o) = self.heap.find(le_u64(w, 0))
                && !self.heap.is_marked(o)
            {
                let root = self.root(Root::Global { addr: at });
                self.heap.mark(o, root);
                if !self.heap.noscan(o) {
                    self.work.push((o, root));
                }
            }
        }
        self.heap.stats.bytes_scanned += bytes.len() as u64;
    }

    /// Words already read `(slot, value, root)`: the live pointer slots of
    /// precisely scanned stacks, and pointers the runtime holds for them
    /// (slot 0).
    pub fn scan_values(&mut self, words: &[(u64, u64, u32)]) {
        for &(slot, v, root) in words {
            if slot != 0 && !self.hidden.is_empty() && self.hidden.contains(&slot) {
                continue;
            }
            self.word_at(slot, v, root);
        }
        self.heap.stats.bytes_scanned += 8 * words.len() as u64;
    }

    /// Root ranges `(addr, len, root)`, read in batches; a range that cannot
    /// be read counts as a read error (the caller decides what that costs).
    pub fn scan_ranges(&mut self, ranges: &[(u64, u64, u32)]) -> u64 {
        let mut pieces = Vec::new();
        for &(addr, len, root) in ranges {
            let mut off = 0;
            while off < len {
                let n = (len - off).min(CHUNK);
                pieces.push((addr + off, n, root));
                off += n;
            }
        }
        self.read_and_scan(&pieces)
    }

    /// Scans queued objects until none is left.
    pub fn drain(&mut self) -> u64 {
        let mut errors = 0;
        while !self.work.is_empty() {
            let mut pieces = Vec::new();
            let mut bytes = 0;
            while let Some((o, root)) = self.work.pop() {
                let (base, size) = self.heap.bounds(o);
                let mut off = 0;
                while off < size {
                    let n = (size - off).min(CHUNK);
                    pieces.push((base + off, n, root));
                    off += n;
                }
                bytes += size;
                if bytes >= BATCH_BYTES {
                    break;
                }
            }
            errors += self.read_and_scan(&pieces);
        }
        errors
    }

    fn read_and_scan(&mut self, pieces: &[(u64, u64, u32)]) -> u64 {
        let mut errors = 0;
        for group in pieces.chunks(1024) {
            let mut bufs: Vec<Vec<u8>> = group
                .iter()
                .map(|(_, n, _)| vec![0u8; *n as usize])
                .collect();
            let mut ranges: Vec<(u64, &mut [u8])> = group
                .iter()
                .zip(bufs.iter_mut())
                .map(|((a, _, _), b)| (*a, &mut b[..]))
                .collect();
            let ok = self.heap.mem().read_vectored(&mut ranges);
            drop(ranges);
            for (((addr, _, root), buf), ok) in group.iter().zip(&bufs).zip(ok) {
                if ok {
                    self.scan_bytes(*addr, buf, *root);
                } else {
                    errors += 1;
                }
            }
        }
        self.heap.stats.read_errors += errors;
        errors
    }
}

/// `GOTRACE_PROOF_TRACE=ADDR` (hex): log every scanned word that points
/// into ADDR's 16-byte block (debugging why a primitive is reachable).
fn trace_target() -> Option<u64> {
    static T: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *T.get_or_init(|| {
        let v = std::env::var("GOTRACE_PROOF_TRACE").ok()?;
        u64::from_str_radix(v.trim_start_matches("0x"), 16).ok()
    })
}
