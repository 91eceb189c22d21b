//! Conservative marking: every aligned word of a root range or of a marked
//! object in a scan span that points into an allocated heap object marks
//! it. Precise maps could only remove edges; a word that merely looks like
//! a pointer keeps more alive, so the proof can miss a leak but never
//! invent one. Words of the waiters' own sudogs that Go's detector hides
//! (`hidden`) are skipped.

use std::collections::VecDeque;

use super::heap::{Heap, Obj};
use crate::process::mem::le_u64;

/// Largest piece of an object or root range read at once.
const CHUNK: u64 = 1 << 20;
/// Bytes read at once (about: a piece or span more may go over).
const READ_BYTES: u64 = 1 << 20;
/// Small spans read at once.
const SPANS_PER_READ: usize = 1024;
/// Pieces read at once.
const PIECES_PER_READ: usize = 1024;

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
    /// Hidden word addresses, sorted.
    hidden: Vec<u64>,
    /// Spans with marked objects not scanned yet ([`Span::grey`]), in the
    /// order they got their first one.
    queue: VecDeque<u32>,
    pub roots: Vec<Root>,
    /// Read buffer, kept between reads.
    buf: Vec<u8>,
    /// A spare pending list for [`Marker::scan_span`].
    spare: Vec<(u32, u32)>,
    /// `GOTRACE_PROOF_PATHS=1`: the slot that first marked each object,
    /// by object, to log how a wakeable goroutine's primitive is reached.
    pub parents: Option<std::collections::HashMap<(u32, u32), u64>>,
}

/// A piece of an object or root range to scan: address, length, root.
type Piece = (u64, u64, u32);

/// Makes `buf` at least `len` bytes long (what it held stays: every read
/// overwrites its part, and a part whose read failed is not scanned).
fn grow(buf: &mut Vec<u8>, len: usize) {
    if buf.len() < len {
        buf.resize(len, 0);
    }
}

/// Pieces queued before they are read and scanned.
const MAX_PIECES: usize = 4096;

/// Splits `[addr, addr + len)` into pieces of at most [`CHUNK`] bytes.
fn pieces(out: &mut Vec<Piece>, addr: u64, len: u64, root: u32) {
    let mut off = 0;
    while off < len {
        let n = (len - off).min(CHUNK);
        out.push((addr + off, n, root));
        off += n;
    }
}

impl<'h, 'a> Marker<'h, 'a> {
    /// `hidden`: the hidden word addresses, in any order, repeats allowed.
    pub fn new(heap: &'h mut Heap<'a>, mut hidden: Vec<u64>) -> Self {
        hidden.sort_unstable();
        hidden.dedup();
        Marker {
            heap,
            hidden,
            queue: VecDeque::new(),
            roots: Vec::new(),
            buf: Vec::new(),
            spare: Vec::new(),
            parents: std::env::var_os("GOTRACE_PROOF_PATHS").map(|_| Default::default()),
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
        if let Some(o) = self.heap.mark_at(p, root) {
            self.grey(o, root);
        }
    }

    /// Marks the object `p` (read at `slot` of a goroutine's stack) points
    /// into. A stack word that reaches a new object becomes a root of its
    /// own, so that the report can name the frame holding the reference.
    fn word_at(&mut self, slot: u64, p: u64, root: u32) {
        if self.parents.is_some()
            && let Some(o) = self.heap.find(p)
            && !self.heap.is_marked(o)
        {
            self.note_parent(o, slot);
        }
        let Some(&Root::Goroutine {
            goid, slot: None, ..
        }) = self.roots.get(root as usize)
        else {
            return self.word(p, root);
        };
        let Some(o) = self.heap.find(p) else { return };
        if self.heap.is_marked(o) {
            return;
        }
        let root = self.root(Root::Goroutine {
            goid,
            slot: Some(slot),
            pc: None,
        });
        if self.heap.mark(o, root) {
            self.grey(o, root);
        }
    }

    fn note_parent(&mut self, o: Obj, slot: u64) {
        if let Some(m) = self.parents.as_mut() {
            m.entry((o.span, o.idx)).or_insert(slot);
        }
    }

    /// Logs the chain of slots that first reached the object at `p`, from
    /// it back to a root word (`GOTRACE_PROOF_PATHS`).
    pub fn log_path(&mut self, p: u64) {
        let mut at = p;
        for _ in 0..64 {
            let Some(o) = self.heap.find(at) else {
                log::debug!("proof path: {at:#x} is no heap object (a root)");
                return;
            };
            let s = &self.heap.spans[o.span as usize];
            let base = s.start + u64::from(o.idx) * s.elemsize;
            let size = s.elemsize;
            let Some(slot) = self
                .parents
                .as_ref()
                .and_then(|m| m.get(&(o.span, o.idx)).copied())
            else {
                log::debug!("proof path: object {base:#x} ({size} B): no parent recorded");
                return;
            };
            log::debug!(
                "proof path: object {base:#x} ({size} B, +{:#x}) <- slot {slot:#x}",
                at - base
            );
            at = slot;
        }
    }

    /// Queues a newly marked object for scanning (unless it holds no
    /// pointers).
    fn grey(&mut self, o: Obj, root: u32) {
        if self.heap.noscan(o) {
            return;
        }
        let s = &mut self.heap.spans[o.span as usize];
        s.grey.push((o.idx, root));
        if !s.queued {
            s.queued = true;
            self.queue.push_back(o.span);
        }
    }

    /// The hidden words from `at` on: an index into `hidden`.
    fn hidden_from(&self, at: u64) -> usize {
        self.hidden.partition_point(|h| *h < at)
    }

    /// Every aligned word of `bytes`, read from `addr`.
    pub fn scan_bytes(&mut self, addr: u64, bytes: &[u8], root: u32) {
        let h = self.hidden_from(addr);
        self.scan_words(addr, bytes, root, h);
    }

    /// [`Marker::scan_bytes`], with `h` the index in `hidden` of the first
    /// hidden word at or after `addr` (or any index past every hidden word
    /// of the range).
    fn scan_words(&mut self, addr: u64, bytes: &[u8], root: u32, mut h: usize) {
        let skew = ((8 - addr % 8) % 8) as usize;
        let Some(words) = bytes.get(skew..) else {
            return;
        };
        self.heap.stats.bytes_scanned += words.len() as u64;
        let base = addr + skew as u64;
        let mut next_hidden = self.hidden.get(h).copied().unwrap_or(u64::MAX);
        let trace = trace_target();
        let (lo, hi) = self.heap.range();
        for (i, w) in words.chunks_exact(8).enumerate() {
            let at = base + 8 * i as u64;
            if at >= next_hidden {
                while next_hidden < at {
                    h += 1;
                    next_hidden = self.hidden.get(h).copied().unwrap_or(u64::MAX);
                }
                if next_hidden == at {
                    continue;
                }
            }
            let v = u64::from_le_bytes(w.try_into().expect("8 bytes"));
            if let Some(t) = trace
                && v & !15 == t & !15
            {
                log::debug!("proof: word at {at:#x} (root {root}) points at {v:#x}");
            }
            if v >= lo && v < hi {
                self.word_at(at, v, root);
            }
        }
    }

    /// Words of a data/bss section whose pointer-mask bit is set; each word
    /// that newly marks an object becomes its own root (so a report can name
    /// the global).
    pub fn scan_masked(&mut self, addr: u64, bytes: &[u8], mask: &[u8]) {
        let mut h = self.hidden_from(addr);
        for (i, w) in bytes.chunks_exact(8).enumerate() {
            if mask.get(i / 8).is_none_or(|m| m >> (i % 8) & 1 == 0) {
                continue;
            }
            let at = addr + 8 * i as u64;
            while self.hidden.get(h).is_some_and(|x| *x < at) {
                h += 1;
            }
            if self.hidden.get(h) == Some(&at) {
                continue;
            }
            if let Some(o) = self.heap.find(le_u64(w, 0))
                && !self.heap.is_marked(o)
            {
                self.note_parent(o, at);
                let root = self.root(Root::Global { addr: at });
                self.heap.mark(o, root);
                self.grey(o, root);
            }
        }
        self.heap.stats.bytes_scanned += bytes.len() as u64;
    }

    /// Words already read `(slot, value, root)`: the live pointer slots of
    /// precisely scanned stacks, and pointers the runtime holds for them
    /// (slot 0).
    pub fn scan_values(&mut self, words: &[(u64, u64, u32)]) {
        for &(slot, v, root) in words {
            if slot != 0 && self.hidden.binary_search(&slot).is_ok() {
                continue;
            }
            self.word_at(slot, v, root);
        }
        self.heap.stats.bytes_scanned += 8 * words.len() as u64;
    }

    /// Root ranges `(addr, len, root)`, read in batches; a range that cannot
    /// be read counts as a read error (the caller decides what that costs).
    pub fn scan_ranges(&mut self, ranges: &[(u64, u64, u32)]) -> u64 {
        let mut out = Vec::new();
        for &(addr, len, root) in ranges {
            pieces(&mut out, addr, len, root);
        }
        self.read_and_scan(&out)
    }

    /// Scans marked objects until none is left, span by span: a small
    /// span's objects are read in one piece with up to [`SPANS_PER_READ`]
    /// others, and objects it marks in the same span are scanned from that
    /// copy; the objects of a large span are read one by one.
    pub fn drain(&mut self) -> u64 {
        let mut errors = 0;
        let mut batch = Vec::new();
        while let Some(first) = self.queue.pop_front() {
            if !self.heap.spans[first as usize].whole() {
                errors += self.scan_alone(first);
                continue;
            }
            batch.clear();
            batch.push(first);
            let mut bytes = self.heap.spans[first as usize].objects_len();
            while bytes < READ_BYTES && batch.len() < SPANS_PER_READ {
                match self.queue.front() {
                    Some(&si) if self.heap.spans[si as usize].whole() => {
                        self.queue.pop_front();
                        batch.push(si);
                        bytes += self.heap.spans[si as usize].objects_len();
                    }
                    _ => break,
                }
            }
            self.scan_spans(&batch);
        }
        errors
    }

    /// Reads the small spans `batch` whole and scans their marked objects;
    /// a span that cannot be read whole goes back to the queue, to be read
    /// object by object.
    fn scan_spans(&mut self, batch: &[u32]) {
        let lens: Vec<usize> = batch
            .iter()
            .map(|si| self.heap.spans[*si as usize].objects_len() as usize)
            .collect();
        let mut buf = std::mem::take(&mut self.buf);
        grow(&mut buf, lens.iter().sum());
        let mut ranges = Vec::with_capacity(batch.len());
        let mut rest = &mut buf[..];
        for (si, len) in batch.iter().zip(&lens) {
            let (piece, tail) = rest.split_at_mut(*len);
            ranges.push((self.heap.spans[*si as usize].start, piece));
            rest = tail;
        }
        let ok = self.heap.mem().read_vectored(&mut ranges);
        drop(ranges);
        let mut off = 0;
        for ((si, len), ok) in batch.iter().zip(lens).zip(ok) {
            if ok {
                self.heap.stats.span_reads += 1;
                self.heap.stats.bytes_read += len as u64;
                self.scan_span(*si, &buf[off..off + len]);
            } else {
                self.heap.spans[*si as usize].whole_failed();
                self.queue.push_back(*si);
            }
            off += len;
        }
        self.buf = buf;
    }

    /// Scans span `si`'s marked objects from `data` (its objects' bytes),
    /// and those they mark in the span, until none is left.
    fn scan_span(&mut self, si: u32, data: &[u8]) {
        // The pending list is swapped with a spare one each round, so that
        // neither is allocated anew.
        let mut grey = std::mem::take(&mut self.spare);
        loop {
            grey.clear();
            std::mem::swap(&mut grey, &mut self.heap.spans[si as usize].grey);
            if grey.is_empty() {
                break;
            }
            let start = self.heap.spans[si as usize].start;
            // Hidden words are a few per g or sudog: most spans have none,
            // and their objects need no search for them.
            let first = self.hidden_from(start);
            let none = self
                .hidden
                .get(first)
                .is_none_or(|h| *h >= start + data.len() as u64);
            for &(idx, root) in &grey {
                let (base, size) = self.heap.bounds(Obj { span: si, idx });
                let at = (base - start) as usize;
                let Some(bytes) = data.get(at..at + size as usize) else {
                    continue;
                };
                if none {
                    self.scan_words(base, bytes, root, first);
                } else {
                    self.scan_bytes(base, bytes, root);
                }
            }
        }
        let s = &mut self.heap.spans[si as usize];
        s.queued = false;
        let left = std::mem::take(&mut s.grey);
        self.spare = if left.capacity() > grey.capacity() {
            left
        } else {
            grey
        };
    }

    /// Scans span `si`'s marked objects, each read on its own, until none
    /// is left; returns the pieces that could not be read.
    fn scan_alone(&mut self, si: u32) -> u64 {
        let mut errors = 0;
        let mut out = Vec::new();
        loop {
            let grey = std::mem::take(&mut self.heap.spans[si as usize].grey);
            if grey.is_empty() {
                break;
            }
            out.clear();
            for (idx, root) in grey {
                let (base, size) = self.heap.bounds(Obj { span: si, idx });
                pieces(&mut out, base, size, root);
                // Scanned as they come past a bound: the span's object
                // size is the target's word, gotrace's memory must not
                // follow it.
                if out.len() >= MAX_PIECES {
                    errors += self.read_and_scan(&out);
                    out.clear();
                }
            }
            errors += self.read_and_scan(&out);
        }
        self.heap.spans[si as usize].queued = false;
        errors
    }

    /// Reads and scans `pieces` in order, about [`READ_BYTES`] at a time;
    /// returns the pieces that could not be read.
    fn read_and_scan(&mut self, pieces: &[Piece]) -> u64 {
        let mut errors = 0;
        let mut i = 0;
        let mut buf = std::mem::take(&mut self.buf);
        while i < pieces.len() {
            let (mut j, mut bytes) = (i, 0);
            while j < pieces.len() && (j == i || bytes < READ_BYTES) && j - i < PIECES_PER_READ {
                bytes += pieces[j].1;
                j += 1;
            }
            let group = &pieces[i..j];
            grow(&mut buf, bytes as usize);
            let mut ranges = Vec::with_capacity(group.len());
            let mut rest = &mut buf[..];
            for (addr, len, _) in group {
                let (piece, tail) = rest.split_at_mut(*len as usize);
                ranges.push((*addr, piece));
                rest = tail;
            }
            let ok = self.heap.mem().read_vectored(&mut ranges);
            drop(ranges);
            self.heap.stats.bytes_read += bytes;
            let mut off = 0;
            for ((addr, len, root), ok) in group.iter().zip(ok) {
                let len = *len as usize;
                if ok {
                    self.scan_bytes(*addr, &buf[off..off + len], *root);
                } else {
                    errors += 1;
                }
                off += len;
            }
            i = j;
        }
        self.buf = buf;
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
