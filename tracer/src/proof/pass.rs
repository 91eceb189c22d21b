//! One pass of the analysis over the target's memory, as Go's leak-finding
//! GC cycle does it: mark from the roots (globals, specials, finalizer and
//! cleanup queues, the stacks of goroutines that are not parked on a
//! channel or sync primitive), then, to a fixpoint, turn every candidate
//! whose primitive is marked (or not in the heap) into a root.

use std::collections::HashMap;

use super::heap::{Heap, HeapStats};
use super::mark::{Marker, Root};
use super::roots::{RootStats, mark_roots};
use super::stacks::{StackScan, StackStats};
use super::waits::{self, SemTable};
use super::{Ctx, Unproven};
use crate::goruntime::gstatus::GState;
use crate::goruntime::wait_reason::{self, Pattern, ProofWait};
use crate::snapshot::read::LiveG;

/// A candidate as one pass saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub goid: u64,
    pub wait_reason: u8,
    /// The primitives (channels, semaphore addresses).
    pub waits_on: Vec<u64>,
    /// What identifies this park: if any of it changed, it is another park.
    pub park: (u64, u32, u8, u64, u64, u64),
    pub outcome: Outcome,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Leaked,
    /// Woken possible: what reaches the primitive (None: not in the heap).
    Wakeable(Option<Root>),
    Unproven(Unproven),
}

pub struct Pass {
    pub seen: Vec<Seen>,
    /// Stacks of the goroutines `(goid, pcs)`, sorted by goid, for naming
    /// a goroutine root: left empty by [`run`], which only borrows the
    /// goroutines, for its caller to move them in (looked up with [`stack_in`]).
    pub stacks: Vec<(u64, Vec<u64>)>,
    pub running: u64,
    pub heap: HeapStats,
    pub roots: RootStats,
    pub stack_scan: StackStats,
    /// Roots that could not be read: a leak seen in this pass is unproven.
    pub incomplete: u64,
    pub sweepgen: (u32, u32),
    /// The marks, kept for questions about other objects (`Ctx::keep`).
    pub reach: Option<super::reach::Reach>,
}

impl Pass {
    /// Moves in the stacks of `live` (the goroutines this pass ran on).
    pub fn keep_stacks(&mut self, live: Vec<LiveG>) {
        // A new list rather than `collect` in place, which would keep the
        // goroutines' far larger allocation alive.
        self.stacks = Vec::with_capacity(live.len());
        self.stacks
            .extend(live.into_iter().map(|g| (g.raw.goid, g.stack.pcs)));
        self.stacks.sort_unstable_by_key(|(goid, _)| *goid);
    }
}

/// The pcs of `goid` in `stacks` (sorted by goid; empty when absent).
pub fn stack_in(stacks: &[(u64, Vec<u64>)], goid: u64) -> &[u64] {
    match stacks.binary_search_by_key(&goid, |(g, _)| *g) {
        Ok(i) => &stacks[i].1,
        Err(_) => &[],
    }
}

/// A candidate before marking: its primitives and state.
struct Cand {
    i: usize,
    wait: ProofWait,
    waits_on: Vec<u64>,
    problem: Option<Unproven>,
}

/// One pass over the goroutines `live` (and the g structs `all`, dead ones
/// included) of the process whose memory is `mem`.
pub fn run(
    ctx: &Ctx,
    live: &[LiveG],
    all: &[u64],
    mem: &dyn crate::process::mem::Memory,
) -> Result<Pass, String> {
    let hl = ctx.heap;
    let mheap = ctx.globals.mheap.wrapping_add(ctx.bias);
    let sweepgen = || mem.u64(mheap + hl.mheap_sweepgen).map_or(0, |v| v as u32);
    let sweep0 = sweepgen();
    let mut heap = Heap::open(mem, hl, mheap).map_err(|e| e.to_string())?;
    let waits: Vec<ProofWait> = live.iter().map(|g| proof_wait(ctx, g)).collect();
    let sem = needs_semtable(ctx, &waits).then(|| {
        waits::sem_table(
            mem,
            hl,
            ctx.globals.semtable.unwrap_or(0).wrapping_add(ctx.bias),
        )
    });
    // Every g struct: allgs, and each M's g0 and gsignal (read once).
    let gs: Vec<u64> = all
        .iter()
        .copied()
        .chain(super::roots::m_gs(mem, hl, &ctx.globals, ctx.bias))
        .collect();
    // Word addresses collected in a list (the marker sorts them once): a
    // hash set of the 100 000s of them costs more.
    let mut hidden: Vec<u64> = match ctx.g_stack_hi {
        Some(hi) => gs.iter().map(|gp| gp + hi).collect(),
        None => Vec::new(),
    };
    hidden.extend(super::roots::p_stale_words(mem, hl, &ctx.globals, ctx.bias));
    hidden.extend(super::roots::slack_words(
        &mut heap,
        hl,
        &gs,
        &ctx.globals,
        ctx.bias,
    ));
    let ahead = waits::Prefetched::new(
        mem,
        hl,
        live.iter()
            .zip(&waits)
            .filter(|(_, w)| **w != ProofWait::Root)
            .map(|(g, _)| g.raw.waiting),
    );
    let mut cands: Vec<Cand> = Vec::new();
    for (i, (g, w)) in live.iter().zip(&waits).enumerate() {
        if *w != ProofWait::Root {
            cands.push(candidate(ctx, &ahead, g, *w, i, sem.as_ref(), &mut hidden));
        }
    }
    drop(ahead);
    if ctx.keep {
        heap.keep_origins();
    }
    for p in cands.iter().flat_map(|c| &c.waits_on) {
        heap.watch(*p);
    }
    let mut m = Marker::new(&mut heap, hidden);
    let roots = mark_roots(&mut m, hl, &ctx.globals, ctx.bias);
    let mut incomplete = roots.incomplete;
    let mut running = 0;
    let mut stacks = StackScan::new(ctx, mem);
    let mut roots_gs = Vec::new();
    for (g, w) in live.iter().zip(&waits) {
        // A g that kept changing while read may have been woken and be
        // running, whatever its status said: its whole stack is a root (it
        // stays a candidate, unproven as "changed"), or what only it holds
        // could be proven unreachable.
        if *w != ProofWait::Root && g.stable {
            continue;
        }
        running += u64::from(g.state == GState::Running);
        // Where a goroutine on a CPU or in a system call resumes is not in
        // g.sched: its whole stack.
        let whole = matches!(g.state, GState::Running | GState::Syscall) || !g.stable;
        let r = m.root(Root::Goroutine {
            goid: g.raw.goid,
            slot: None,
            pc: None,
        });
        roots_gs.push((g, whole, r));
    }
    incomplete += stacks.add(&roots_gs);
    incomplete += scan_stacks(&mut m, &mut stacks);
    let mut outcomes = fixpoint(&mut m, live, &cands, &mut stacks, &mut incomplete);
    if m.parents.is_some() {
        for (c, o) in cands.iter().zip(&outcomes) {
            if let (Outcome::Wakeable(_), Some(p)) = (o, c.waits_on.first()) {
                log::debug!(
                    "proof path: goroutine {} waits on {p:#x}",
                    live[c.i].raw.goid
                );
                m.log_path(*p);
            }
        }
    }
    name_frames(ctx, &mut outcomes, live, mem);
    let heap_stats = m.heap.stats;
    let reach = ctx
        .keep
        .then(|| super::reach::Reach::keep(ctx, &mut m, live, root_range));
    let seen = cands
        .iter()
        .zip(outcomes)
        .map(|(c, outcome)| {
            let g = &live[c.i];
            Seen {
                goid: g.raw.goid,
                wait_reason: g.raw.waitreason,
                waits_on: c.waits_on.clone(),
                park: (
                    g.gp,
                    g.raw.status,
                    g.raw.waitreason,
                    g.raw.sched_sp,
                    g.raw.sched_pc,
                    g.raw.waiting,
                ),
                outcome,
            }
        })
        .collect();
    Ok(Pass {
        seen,
        stacks: Vec::new(),
        running,
        heap: heap_stats,
        roots,
        stack_scan: stacks.stats,
        incomplete,
        sweepgen: (sweep0, sweepgen()),
        reach,
    })
}

/// Marks from the stacks added to `stacks` since the last call, to the
/// end; the ranges that could not be read.
fn scan_stacks(m: &mut Marker, stacks: &mut StackScan) -> u64 {
    let (ranges, words) = stacks.take();
    m.scan_values(&words);
    let errors = m.scan_ranges(&ranges);
    errors + m.drain()
}

/// Marks until no candidate's primitive changes state; returns each
/// candidate's outcome.
fn fixpoint(
    m: &mut Marker,
    live: &[LiveG],
    cands: &[Cand],
    stacks: &mut StackScan,
    incomplete: &mut u64,
) -> Vec<Outcome> {
    let mut out: Vec<Option<Outcome>> = cands
        .iter()
        .map(|c| c.problem.map(Outcome::Unproven))
        .collect();
    loop {
        let mut woke = Vec::new();
        for (k, c) in cands.iter().enumerate() {
            if out[k].is_some() || c.wait == ProofWait::Never {
                continue;
            }
            if let Some(by) = c.waits_on.iter().find_map(|p| alive(m, *p)) {
                out[k] = Some(Outcome::Wakeable(by));
                woke.push(k);
            }
        }
        if woke.is_empty() {
            break;
        }
        let gs: Vec<_> = woke
            .into_iter()
            .map(|k| {
                let g = &live[cands[k].i];
                (
                    g,
                    false,
                    m.root(Root::Goroutine {
                        goid: g.raw.goid,
                        slot: None,
                        pc: None,
                    }),
                )
            })
            .collect();
        *incomplete += stacks.add(&gs);
        *incomplete += scan_stacks(m, stacks);
    }
    out.into_iter()
        .map(|o| o.unwrap_or(Outcome::Leaked))
        .collect()
}

/// Some(what keeps it) when the primitive at `p` is alive: a marked heap
/// object (its root), or not in the heap at all (None inside).
fn alive(m: &mut Marker, p: u64) -> Option<Option<Root>> {
    match m.heap.find(p) {
        Some(o) if m.heap.is_marked(o) => Some(
            m.heap
                .origin(o)
                .and_then(|r| m.roots.get(r as usize).cloned()),
        ),
        Some(_) => None,
        None if m.heap.not_heap(p) => Some(None),
        // In a heap span but in a free slot: the primitive's object was
        // freed, nothing can reach it.
        None => None,
    }
}

/// How the detector treats `g` (`Root` for anything not parked on a
/// channel or sync primitive, or already handed a wake-up in `g.param`).
fn proof_wait(ctx: &Ctx, g: &LiveG) -> ProofWait {
    if !matches!(g.state, GState::Waiting | GState::Leaked) || g.raw.param != 0 {
        return ProofWait::Root;
    }
    let Some(name) = ctx.wait_reasons.get(&g.raw.waitreason) else {
        return ProofWait::Root;
    };
    match wait_reason::proof_wait(name) {
        ProofWait::Root if name == "waitReasonSemacquire" => {
            // Before the sync-specific reasons (Go 1.20 for mutexes, 1.24
            // for WaitGroup) sync waits parked as a plain semacquire.
            let names = (ctx.functions)(&g.stack.pcs);
            match wait_reason::refine(Pattern::Semaphore, names.iter().map(String::as_str)) {
                Pattern::Mutex | Pattern::RwMutex | Pattern::WaitGroup => ProofWait::Sync,
                _ => ProofWait::Root,
            }
        }
        w => w,
    }
}

fn needs_semtable(ctx: &Ctx, waits: &[ProofWait]) -> bool {
    ctx.heap.sudog_elem.vu.is_none()
        && ctx.globals.semtable.is_some()
        && waits.contains(&ProofWait::Sync)
}

fn candidate(
    ctx: &Ctx,
    mem: &dyn crate::process::mem::Memory,
    g: &LiveG,
    wait: ProofWait,
    i: usize,
    sem: Option<&SemTable>,
    hidden: &mut Vec<u64>,
) -> Cand {
    let hl = ctx.heap;
    let mut c = Cand {
        i,
        wait,
        waits_on: Vec::new(),
        problem: None,
    };
    if !g.stable {
        c.problem = Some(Unproven::Changed);
        return c;
    }
    if wait == ProofWait::Never {
        return c;
    }
    let chain = if g.raw.waiting == 0 {
        Some(Vec::new())
    } else {
        waits::waiting_chain(mem, hl, g.raw.waiting)
    };
    let Some(chain) = chain else {
        c.problem = Some(Unproven::Unreadable);
        return c;
    };
    if wait == ProofWait::Chan {
        for s in &chain {
            waits::hide(hidden, s.at, hl.sudog_c);
            c.waits_on.push(s.c);
        }
        if chain.is_empty() {
            // A `select` whose cases were all nil channels parks with no
            // sudog, never to wake (like `select {}`); a channel operation
            // always links its sudog first.
            if ctx.is_select(g.raw.waitreason) {
                c.wait = ProofWait::Never;
            } else {
                c.problem = Some(Unproven::NotLocated);
            }
        }
        return c;
    }
    // Sync: Go 1.26+ links the sudog from g.waiting; before, the semaphore
    // table has it (Cond waits are in the Cond's own list: not located).
    let sudogs: Vec<_> = if hl.sudog_elem.vu.is_some() {
        chain
    } else {
        sem.and_then(|t| t.by_g.get(&g.gp))
            .cloned()
            .unwrap_or_default()
    };
    for s in &sudogs {
        waits::hide(hidden, s.at, hl.sudog_elem);
    }
    log::debug!(
        "proof: goroutine {} sync wait, sudogs {:x?}",
        g.raw.goid,
        sudogs.iter().map(|s| (s.at, s.elem)).collect::<Vec<_>>()
    );
    match sudogs.first() {
        Some(s) => c.waits_on.push(s.elem),
        None => match cond_wait(ctx, mem, g) {
            Some(nl) => c.waits_on.push(nl),
            None => c.problem = Some(Unproven::NotLocated),
        },
    }
    c
}

/// Words of a Cond waiter's stack tried as its Cond (or notifyList).
const COND_WORDS: usize = 4096;
/// Waiters of one notifyList walked.
const COND_WAITERS: usize = 1 << 16;

/// Before Go 1.26 a sync.Cond waiter's sudog is only in the Cond's own
/// notify list. The Cond is live in the `Wait` frame (it locks `c.L`
/// after waking), so some word of the waiter's stack is the Cond: the one
/// whose notify list holds a sudog of this goroutine. Returns the
/// notifyList's address.
fn cond_wait(ctx: &Ctx, mem: &dyn crate::process::mem::Memory, g: &LiveG) -> Option<u64> {
    let hl = ctx.heap;
    let (head, notify) = (hl.notify_list_head?, hl.cond_notify?);
    if ctx.wait_reasons.get(&g.raw.waitreason).map(String::as_str) != Some("waitReasonSyncCondWait")
    {
        return None;
    }
    let (lo, hi) = stack_range(g)?;
    let len = (hi - lo).min(8 * COND_WORDS as u64);
    let mut bytes = vec![0u8; len as usize];
    if !mem.read(lo, &mut bytes) {
        return None;
    }
    let holds_g = |nl: u64| -> bool {
        let mut s = mem.u64(nl + head).unwrap_or(0);
        for _ in 0..COND_WAITERS {
            if s == 0 {
                return false;
            }
            match waits::read_sudog(mem, hl, s) {
                Some(sg) if sg.g == g.gp => return true,
                Some(sg) => s = sg.next,
                None => return false,
            }
        }
        false
    };
    bytes
        .chunks_exact(8)
        .map(|w| crate::process::mem::le_u64(w, 0))
        .filter(|w| *w != 0 && w % 8 == 0)
        .flat_map(|w| [w + notify, w])
        .find(|nl| holds_g(*nl))
}

/// The words of `g`'s stack a holder may be in: all of it when it is on a
/// CPU, in a system call or was read while changing, else from where it
/// resumes.
fn root_range(g: &LiveG) -> Option<(u64, u64)> {
    let r = &g.raw;
    if matches!(g.state, GState::Running | GState::Syscall) || !g.stable {
        let sane = r.lo < r.hi && r.hi - r.lo <= super::stacks::MAX_STACK;
        return sane.then_some((r.lo, r.hi));
    }
    stack_range(g)
}

/// `[sched.sp, hi)` of a parked or runnable goroutine.
fn stack_range(g: &LiveG) -> Option<(u64, u64)> {
    let r = &g.raw;
    let sane = r.lo < r.hi && r.hi - r.lo <= super::stacks::MAX_STACK;
    if !sane {
        return None;
    }
    if (r.lo..r.hi).contains(&r.sched_sp) {
        Some((r.sched_sp, r.hi))
    } else {
        Some((r.lo, r.hi))
    }
}

/// Frames walked to find which one holds a stack word.
const MAX_FRAMES: usize = 4096;

/// For each outcome kept by a goroutine's stack word, the frame holding
/// that word: the innermost frame whose saved frame pointer is at or above
/// it (its locals lie just below its saved BP), by the frame-pointer chain.
fn name_frames(
    ctx: &Ctx,
    outcomes: &mut [Outcome],
    live: &[LiveG],
    mem: &dyn crate::process::mem::Memory,
) {
    let by_goid: HashMap<u64, &LiveG> = live.iter().map(|g| (g.raw.goid, g)).collect();
    for o in outcomes {
        let Outcome::Wakeable(Some(Root::Goroutine {
            goid,
            slot: Some(slot),
            pc,
        })) = o
        else {
            continue;
        };
        let Some(g) = by_goid.get(goid) else { continue };
        let r = &g.raw;
        let (mut frame_pc, mut bp) = (r.sched_pc, r.sched_bp);
        for _ in 0..MAX_FRAMES {
            if !(r.lo..r.hi).contains(&bp) {
                break;
            }
            if *slot <= bp {
                *pc = Some(frame_pc);
                break;
            }
            let (Some(ret), Some(next)) = (mem.u64(bp + 8), mem.u64(bp)) else {
                break;
            };
            (frame_pc, bp) = (ret, next);
        }
        if pc.is_none() && matches!(g.state, GState::Running | GState::Syscall) {
            *pc = frame_record_below(ctx, g, *slot, mem);
        }
    }
}

/// For a goroutine on a CPU (its saved registers are stale): the frame
/// holding `slot`, from the nearest frame record below it (a saved frame
/// pointer that points above `slot`, next to a return address into code),
/// whose return address lies in that frame's function. Naming only.
fn frame_record_below(
    ctx: &Ctx,
    g: &LiveG,
    slot: u64,
    mem: &dyn crate::process::mem::Memory,
) -> Option<u64> {
    let r = &g.raw;
    let mut at = slot.checked_sub(8)?;
    for _ in 0..MAX_FRAMES {
        if at < r.lo {
            return None;
        }
        let (saved, ret) = (mem.u64(at)?, mem.u64(at + 8)?);
        let code = || {
            (ctx.functions)(&[ret])
                .first()
                .is_some_and(|f| !f.starts_with("0x"))
        };
        if saved >= slot && saved < r.hi && saved > at && code() {
            return Some(ret);
        }
        at -= 8;
    }
    None
}
