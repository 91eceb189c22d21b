//! A made-up Go heap in an [`ImageMem`]: one arena, one span of 64-byte
//! objects, one module, a semaphore table and goroutines, laid out by a
//! [`HeapLayout`] of its own. The analysis's unit tests build scenarios
//! here, and the fuzz target mutates the image's bytes.

use std::collections::BTreeMap;

use super::Ctx;
use crate::gobin::heap_layout::{Field, HeapGlobals, HeapLayout, Traceable};
use crate::goruntime::gstatus::GState;
use crate::process::mem::ImageMem;
use crate::snapshot::read::{LiveG, RawG};
use crate::snapshot::walk::Walked;

pub const MHEAP: u64 = 0x1000;
pub const L2: u64 = 0x10_0000;
pub const ARENA: u64 = 0x20_0000;
pub const MSPAN: u64 = 0x30_0000;
pub const ALLOC_BITS: u64 = 0x30_1000;
pub const MODULE: u64 = 0x40_0000;
pub const DATA: u64 = 0x50_0000;
pub const MASK: u64 = 0x50_1000;
pub const SEMTABLE: u64 = 0x60_0000;
pub const STACKS: u64 = 0x700_0000;
pub const STACK_SIZE: u64 = 0x1000;
/// The heap: one 8 KiB span of 128 objects of 64 bytes.
pub const HEAP: u64 = 0xc0_0000_0000;
pub const ELEM: u64 = 64;
/// A "g" of the image's `gs` fills 40 of its 64-byte slot.
pub const G_SIZE: u64 = 40;
pub const NELEMS: u64 = 128;
/// Words of module data (each may point at an object).
pub const GLOBALS: u64 = 8;

/// Wait reasons of the image (values as in Go 1.26).
pub const CHAN_RECEIVE: u8 = 19;
pub const CHAN_RECEIVE_NIL: u8 = 15;
pub const MUTEX_LOCK: u8 = 22;
pub const SLEEP: u8 = 14;
pub const COND_WAIT: u8 = 21;

pub fn layout() -> HeapLayout {
    HeapLayout {
        source: Default::default(),
        globals: Some(globals()),
        globals_code: Vec::new(),
        arena_base_offset: 0,
        log_heap_arena_bytes: 26,
        arena_l1_bits: 0,
        arena_l2_bits: 22,
        page_size: 8192,
        pages_per_arena: 8192,
        mheap_arenas: 0,
        mheap_all_arenas: 8,
        mheap_allspans: 32,
        mheap_sweepgen: 56,
        heap_arena_spans: 0,
        span_start_addr: 0,
        span_npages: 8,
        span_freeindex: Field { off: 16, size: 2 },
        span_nelems: Field { off: 18, size: 2 },
        span_alloc_bits: 24,
        span_sweepgen: 32,
        span_spanclass: 36,
        span_state: 37,
        span_elemsize: 40,
        span_limit: 48,
        span_specials: 56,
        span_in_use: 1,
        special_next: 0,
        special_offset: Field { off: 8, size: 2 },
        special_kind: Field { off: 10, size: 1 },
        kind_special_finalizer: 1,
        special_finalizer_size: 48,
        special_max_size: 48,
        kind_special_profile: Some(3),
        md_data: 0,
        md_edata: 8,
        md_bss: 16,
        md_ebss: 24,
        md_gcdatamask: 32,
        md_gcbssmask: 48,
        md_next: 64,
        bitvector_n: 0,
        bitvector_bytedata: 8,
        g_waiting: 0,
        g_param: 0,
        g_defer: None,
        g_panic: None,
        defer_fn: None,
        defer_link: None,
        sudog_g: 0,
        sudog_next: 8,
        sudog_prev: 16,
        sudog_parent: 24,
        sudog_elem: Traceable { off: 32, vu: None },
        sudog_c: Traceable { off: 40, vu: None },
        sudog_waitlink: 48,
        sudog_waittail: 56,
        sudog_is_select: 63,
        semtable_len: 4,
        semtable_stride: 64,
        sema_root_treap: 8,
        finblock_alllink: 0,
        finblock_size: 64,
        cleanups_all: None,
        cleanup_block_alllink: None,
        cleanup_block_n: None,
        cleanup_block_cleanups: None,
        cleanup_size: None,
        cleanup_block_size: None,
        p_mcache: None,
        mcache_tiny: None,
        m_alllink: None,
        m_g0: None,
        m_gsignal: None,
        notify_list_head: Some(16),
        cond_notify: Some(16),
        g_size: Some(G_SIZE),
        m_size: None,
        p_size: None,
        p_stale: Vec::new(),
    }
}

pub fn globals() -> HeapGlobals {
    HeapGlobals {
        mheap: MHEAP,
        firstmoduledata: MODULE,
        semtable: Some(SEMTABLE),
        allfin: None,
        gc_cleanups: None,
        allp: None,
        allm: None,
    }
}

pub fn wait_reasons() -> BTreeMap<u8, String> {
    [
        (CHAN_RECEIVE, "waitReasonChanReceive"),
        (CHAN_RECEIVE_NIL, "waitReasonChanReceiveNilChan"),
        (MUTEX_LOCK, "waitReasonSyncMutexLock"),
        (SLEEP, "waitReasonSleep"),
        (COND_WAIT, "waitReasonSyncCondWait"),
    ]
    .into_iter()
    .map(|(v, n)| (v, n.to_string()))
    .collect()
}

pub fn obj(i: u64) -> u64 {
    HEAP + i * ELEM
}

/// A heap with every object allocated and zero, no globals set, no
/// goroutines.
pub struct Image {
    pub mem: ImageMem,
    pub live: Vec<LiveG>,
    /// Heap objects that are g structs (allgs).
    pub gs: Vec<u64>,
}

fn put(region: &mut [u8], off: u64, v: u64) {
    region[off as usize..off as usize + 8].copy_from_slice(&v.to_le_bytes());
}

impl Default for Image {
    fn default() -> Self {
        Image::new()
    }
}

impl Image {
    pub fn new() -> Image {
        let hl = layout();
        let mut mem = ImageMem::default();
        let mut mheap = vec![0u8; 0x100];
        let ai = HEAP >> 26;
        put(&mut mheap, hl.mheap_arenas, L2);
        put(&mut mheap, hl.mheap_all_arenas, MHEAP + 0x80);
        put(&mut mheap, hl.mheap_all_arenas + 8, 1);
        put(&mut mheap, hl.mheap_allspans, MHEAP + 0x88);
        put(&mut mheap, hl.mheap_allspans + 8, 1);
        put(&mut mheap, 0x80, ai);
        put(&mut mheap, 0x88, MSPAN);
        mem.regions.insert(MHEAP, mheap);
        let mut l2 = vec![0u8; 8 * (ai as usize + 1)];
        put(&mut l2, 8 * ai, ARENA);
        mem.regions.insert(L2, l2);
        let mut arena = vec![0u8; 8 * 8192];
        put(&mut arena, 8 * ((HEAP / 8192) % 8192), MSPAN);
        mem.regions.insert(ARENA, arena);
        let mut span = vec![0u8; 0x80];
        put(&mut span, hl.span_start_addr, HEAP);
        put(&mut span, hl.span_npages, 1);
        span[18..20].copy_from_slice(&(NELEMS as u16).to_le_bytes());
        put(&mut span, hl.span_alloc_bits, ALLOC_BITS);
        span[hl.span_state as usize] = 1;
        put(&mut span, hl.span_elemsize, ELEM);
        put(&mut span, hl.span_limit, HEAP + NELEMS * ELEM);
        mem.regions.insert(MSPAN, span);
        mem.regions
            .insert(ALLOC_BITS, vec![0xff; (NELEMS / 8) as usize]);
        mem.regions
            .insert(HEAP, vec![0u8; (NELEMS * ELEM) as usize]);
        let mut module = vec![0u8; 0x80];
        put(&mut module, hl.md_data, DATA);
        put(&mut module, hl.md_edata, DATA + 8 * GLOBALS);
        module[hl.md_gcdatamask as usize..][..4].copy_from_slice(&(GLOBALS as u32).to_le_bytes());
        put(&mut module, hl.md_gcdatamask + 8, MASK);
        mem.regions.insert(MODULE, module);
        mem.regions.insert(DATA, vec![0u8; 8 * GLOBALS as usize]);
        mem.regions
            .insert(MASK, vec![0xff; GLOBALS.div_ceil(8) as usize]);
        mem.regions.insert(SEMTABLE, vec![0u8; 64 * 4]);
        Image {
            mem,
            live: Vec::new(),
            gs: Vec::new(),
        }
    }

    /// Writes the word `v` at `addr` (inside a region).
    pub fn set(&mut self, addr: u64, v: u64) {
        let (start, bytes) = self
            .mem
            .regions
            .range_mut(..=addr)
            .next_back()
            .expect("mapped");
        put(bytes, addr - start, v);
    }

    /// A goroutine with its own stack (8 words used, holding `stack`),
    /// parked with `reason` (or sleeping) and its first sudog at `waiting`.
    pub fn goroutine(&mut self, goid: u64, reason: u8, waiting: u64, stack: &[u64]) {
        let lo = STACKS + goid * STACK_SIZE;
        let hi = lo + STACK_SIZE;
        let sp = hi - 64;
        let mut bytes = vec![0u8; STACK_SIZE as usize];
        for (i, v) in stack.iter().enumerate() {
            put(&mut bytes, sp - lo + 8 * i as u64, *v);
        }
        self.mem.regions.insert(lo, bytes);
        self.live.push(LiveG {
            gp: 0x8000_0000 + goid * 0x100,
            raw: RawG {
                goid,
                parent_goid: 0,
                gopc: 0,
                startpc: 0,
                status: 4,
                waitreason: reason,
                waitsince: 0,
                sched_sp: sp,
                sched_pc: 0x1234,
                sched_bp: 0,
                lo,
                hi,
                syscallsp: 0,
                syscallpc: 0,
                syscallbp: None,
                waiting,
                param: 0,
            },
            state: GState::Waiting,
            stack: Walked::default(),
            stable: true,
        });
    }

    /// A sudog in heap object `at` for goroutine `gp`, on channel `c` (or
    /// semaphore `elem`).
    pub fn sudog(&mut self, at: u64, gp: u64, c: u64, elem: u64) {
        let hl = layout();
        self.set(at + hl.sudog_g, gp);
        self.set(at + hl.sudog_c.off, c);
        self.set(at + hl.sudog_elem.off, elem);
    }
}

/// Runs one pass over the image.
pub fn run(image: &Image) -> Result<super::pass::Pass, String> {
    run_with(image, false)
}

/// Runs one pass over the image, keeping its marks ([`super::reach`]).
pub fn run_keeping(image: &Image) -> Result<super::pass::Pass, String> {
    run_with(image, true)
}

fn run_with(image: &Image, keep: bool) -> Result<super::pass::Pass, String> {
    let hl = layout();
    let reasons = wait_reasons();
    let functions = |_: &[u64]| Vec::new();
    let ctx = Ctx {
        wait_reasons: &reasons,
        g_stack_hi: None,
        heap: &hl,
        globals: globals(),
        bias: 0,
        functions: &functions,
        stacks: None,
        keep,
        stopped_sps: Vec::new(),
    };
    let mut pass = super::pass::run(&ctx, &image.live, &image.gs, &image.mem)?;
    pass.keep_stacks(image.live.clone());
    Ok(pass)
}

pub fn gp(goid: u64) -> u64 {
    0x8000_0000 + goid * 0x100
}

/// Channels A..D, a "g" object reaching G11's sudog, two mutexes.
pub fn scenario() -> Image {
    let mut im = Image::new();
    let hl = layout();
    let (a, b, c, d, e) = (obj(0), obj(1), obj(2), obj(3), obj(4));
    im.set(e + 8, d);
    for (i, goid, ch) in [(10, 10, a), (11, 11, b), (12, 12, c), (13, 13, d)] {
        im.sudog(obj(i), gp(goid), ch, 0);
    }
    // A global reaches a "g" that reaches G11's sudog: its `c` is hidden.
    im.set(obj(20), obj(11));
    im.set(DATA, a);
    im.set(DATA + 8, obj(20));
    im.goroutine(10, CHAN_RECEIVE, obj(10), &[]);
    im.goroutine(11, CHAN_RECEIVE, obj(11), &[]);
    im.goroutine(12, CHAN_RECEIVE, obj(12), &[e]);
    im.goroutine(13, CHAN_RECEIVE, obj(13), &[]);
    im.goroutine(14, CHAN_RECEIVE_NIL, 0, &[]);
    im.goroutine(20, SLEEP, 0, &[c]);
    // Mutexes: G15's in an unreachable object, G16's in one a global holds.
    // Their sudogs are in the semaphore table, which a global reaches.
    im.sudog(obj(31), gp(15), 0, obj(30) + 8);
    im.sudog(obj(33), gp(16), 0, obj(32) + 8);
    im.set(obj(31) + hl.sudog_prev, obj(33));
    im.set(SEMTABLE + hl.sema_root_treap, obj(31));
    im.set(DATA + 16, obj(32));
    im.set(DATA + 24, obj(31));
    im.goroutine(15, MUTEX_LOCK, 0, &[]);
    im.goroutine(16, MUTEX_LOCK, 0, &[]);
    im
}

/// The scenario with `data` patched in: each 4 bytes are (region, offset
/// high, offset low, value). What the fuzz target runs.
pub fn patched(data: &[u8]) -> Image {
    let mut im = scenario();
    let keys: Vec<u64> = im.mem.regions.keys().copied().collect();
    for p in data.chunks_exact(4) {
        let k = keys[p[0] as usize % keys.len()];
        let r = im.mem.regions.get_mut(&k).expect("a region");
        let at = u16::from_be_bytes([p[1], p[2]]) as usize % r.len();
        r[at] = p[3];
    }
    im
}
