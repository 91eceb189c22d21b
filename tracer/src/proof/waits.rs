//! What each parked goroutine waits on, and the words Go's detector hides
//! so that a waiter's own bookkeeping does not keep its primitive alive.
//!
//! - Channel waits and `select`: `g.waiting` → a sudog per case, linked by
//!   `waitlink`; each `sudog.c` is a channel. Its `c` word is hidden.
//! - sync waits: the semaphore address (`sudog.elem`, inside the Mutex,
//!   RWMutex, WaitGroup or Cond's notify list). From Go 1.26 the first sudog
//!   of `g.waiting`; before, the runtime's semaphore table (`semtable`, a
//!   treap of sudogs per address), which every sync wait but Cond's goes
//!   through. Those sudogs' `elem` words are hidden.

use std::collections::{HashMap, HashSet};

use super::heap::AddrHash;
use crate::gobin::heap_layout::{HeapLayout, Traceable};
use crate::process::mem::{Memory, le_u64};

/// Cases of one `select` (Go allows 65536) and sudogs of the semaphore table.
const MAX_CASES: usize = 1 << 16;
const MAX_SEMA_SUDOGS: usize = 1 << 20;

/// A sudog's fields the proof reads.
#[derive(Clone, Copy, Debug)]
pub struct Sudog {
    pub at: u64,
    pub g: u64,
    pub elem: u64,
    pub c: u64,
    pub next: u64,
    pub prev: u64,
    pub waitlink: u64,
}

fn sudog_len(hl: &HeapLayout) -> usize {
    let t = |t: Traceable| t.vu.unwrap_or(t.off).max(t.off) + 8;
    [
        hl.sudog_g + 8,
        hl.sudog_next + 8,
        hl.sudog_prev + 8,
        hl.sudog_waitlink + 8,
        t(hl.sudog_elem),
        t(hl.sudog_c),
    ]
    .into_iter()
    .max()
    .unwrap_or(0) as usize
}

/// The value of a pointer that Go 1.26 may have hidden (`vu` is the truth).
fn traceable(b: &[u8], t: Traceable) -> u64 {
    le_u64(b, t.vu.unwrap_or(t.off))
}

pub fn read_sudog(mem: &dyn Memory, hl: &HeapLayout, at: u64) -> Option<Sudog> {
    let len = sudog_len(hl);
    let mut small = [0u8; 256];
    let mut big = Vec::new();
    let b: &mut [u8] = if len <= small.len() {
        &mut small[..len]
    } else {
        big.resize(len, 0);
        &mut big
    };
    if !mem.read(at, b) {
        return None;
    }
    let b = &*b;
    Some(Sudog {
        at,
        g: le_u64(b, hl.sudog_g),
        elem: traceable(b, hl.sudog_elem),
        c: traceable(b, hl.sudog_c),
        next: le_u64(b, hl.sudog_next),
        prev: le_u64(b, hl.sudog_prev),
        waitlink: le_u64(b, hl.sudog_waitlink),
    })
}

/// The words of `field` in the sudog at `at` (both halves from Go 1.26).
pub fn hide(hidden: &mut Vec<u64>, at: u64, field: Traceable) {
    hidden.push(at + field.off);
    if let Some(vu) = field.vu {
        hidden.push(at + vu);
    }
}

/// The sudogs of `g.waiting`, in order; None when the chain is unreadable
/// or does not end.
pub fn waiting_chain(mem: &dyn Memory, hl: &HeapLayout, first: u64) -> Option<Vec<Sudog>> {
    let mut out = Vec::new();
    let mut at = first;
    while at != 0 {
        if out.len() >= MAX_CASES {
            return None;
        }
        let s = read_sudog(mem, hl, at)?;
        at = s.waitlink;
        out.push(s);
    }
    Some(out)
}

/// Levels of `waitlink` read ahead (a `select` with more cases reads the
/// rest one by one).
const PREFETCH_LEVELS: usize = 8;

/// The sudogs of many `g.waiting` chains, read ahead a level at a time in
/// vectored reads (one read per sudog costs a system call each); any other
/// read goes to the process.
pub struct Prefetched<'m> {
    mem: &'m dyn Memory,
    len: usize,
    /// Sudog address → offset of its bytes in `bytes`.
    at: HashMap<u64, usize, AddrHash>,
    bytes: Vec<u8>,
}

impl<'m> Prefetched<'m> {
    pub fn new(mem: &'m dyn Memory, hl: &HeapLayout, firsts: impl Iterator<Item = u64>) -> Self {
        let len = sudog_len(hl);
        let mut p = Prefetched {
            mem,
            len,
            at: HashMap::default(),
            bytes: Vec::new(),
        };
        let mut level: Vec<u64> = firsts.filter(|a| *a != 0).collect();
        for _ in 0..PREFETCH_LEVELS {
            level.sort_unstable();
            level.dedup();
            level.retain(|a| !p.at.contains_key(a));
            if level.is_empty() {
                break;
            }
            let mut bufs = vec![0u8; len * level.len()];
            let mut io: Vec<(u64, &mut [u8])> = level
                .iter()
                .copied()
                .zip(bufs.chunks_exact_mut(len))
                .collect();
            let ok = mem.read_vectored(&mut io);
            drop(io);
            let mut next = Vec::new();
            for ((a, b), ok) in level.iter().zip(bufs.chunks_exact(len)).zip(ok) {
                if ok {
                    next.push(le_u64(b, hl.sudog_waitlink));
                    p.at.insert(*a, p.bytes.len());
                    p.bytes.extend_from_slice(b);
                }
            }
            level = next;
        }
        p
    }
}

impl Memory for Prefetched<'_> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        if buf.len() == self.len
            && let Some(off) = self.at.get(&addr)
        {
            buf.copy_from_slice(&self.bytes[*off..*off + self.len]);
            return true;
        }
        self.mem.read(addr, buf)
    }

    fn read_vectored(&self, ranges: &mut [(u64, &mut [u8])]) -> Vec<bool> {
        self.mem.read_vectored(ranges)
    }
}

/// Every sudog queued in the semaphore table, by the g that waits.
pub struct SemTable {
    pub by_g: HashMap<u64, Vec<Sudog>>,
    /// The walk met an unreadable node or did not end.
    pub incomplete: bool,
}

pub fn sem_table(mem: &dyn Memory, hl: &HeapLayout, semtable: u64) -> SemTable {
    let mut t = SemTable {
        by_g: HashMap::new(),
        incomplete: false,
    };
    let mut seen = HashSet::new();
    let mut todo = Vec::new();
    for i in 0..hl.semtable_len {
        match mem.u64(semtable + i * hl.semtable_stride + hl.sema_root_treap) {
            Some(0) => {}
            Some(root) => todo.push(root),
            None => t.incomplete = true,
        }
    }
    while let Some(at) = todo.pop() {
        if at == 0 || !seen.insert(at) {
            continue;
        }
        if seen.len() > MAX_SEMA_SUDOGS {
            t.incomplete = true;
            break;
        }
        let Some(s) = read_sudog(mem, hl, at) else {
            t.incomplete = true;
            continue;
        };
        // prev/next are the treap's children; waitlink the other waiters on
        // the same address.
        todo.extend([s.prev, s.next, s.waitlink]);
        t.by_g.entry(s.g).or_default().push(s);
    }
    t
}
