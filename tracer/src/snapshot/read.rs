//! Reading every goroutine of a running process, consistently enough.
//!
//! Three passes keep it fast for 100k goroutines: every g in batched reads
//! (g structs sit next to each other in heap spans), then each live
//! goroutine's stack (one read of its used part), then every g again in
//! batched reads. A g whose fields changed between the first and last
//! read (it ran, its stack moved, it exited) is read again on its own, a
//! bounded number of times.

use super::SnapStats;
use super::walk::{Resume, Walked, walk};
use crate::gobin::layout::GOffsets;
use crate::goruntime::gstatus::{AMD64_SYSCALL_BP_BELOW_SP, GState, Status, StatusTable};
use crate::process::mem::{ProcMem, STACK_GAP_MAX, le_u32, le_u64};

/// Individual re-reads of a g that keeps changing, and the pause before
/// the n-th one (n times this).
const RETRIES: usize = 4;
const RETRY_PAUSE: std::time::Duration = std::time::Duration::from_micros(20);
/// Goids are allocated in order from 1; this leaves room for 10 years of
/// a million goroutines a second.
const MAX_GOID: u64 = 1 << 48;
/// The runtime's largest stack on 64-bit systems (maxstacksize).
const MAX_STACK: u64 = 1 << 30;
/// Bytes of a stack read at once from its saved sp (deeper frames are
/// read word by word).
const STACK_READ: u64 = 16 << 10;

/// The fields of one g that a snapshot uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawG {
    pub goid: u64,
    pub parent_goid: u64,
    pub gopc: u64,
    pub startpc: u64,
    pub status: u32,
    pub waitreason: u8,
    pub waitsince: i64,
    pub sched_sp: u64,
    pub sched_pc: u64,
    pub sched_bp: u64,
    pub lo: u64,
    pub hi: u64,
    pub syscallsp: u64,
    pub syscallpc: u64,
    pub syscallbp: Option<u64>,
    /// `g.waiting` and `g.param` (0 when the offsets are not known).
    pub waiting: u64,
    pub param: u64,
}

impl RawG {
    fn decode(b: &[u8], o: &GOffsets) -> RawG {
        RawG {
            goid: le_u64(b, o.goid),
            parent_goid: o.parent_goid.map_or(0, |p| le_u64(b, p)),
            gopc: le_u64(b, o.gopc),
            startpc: le_u64(b, o.startpc),
            status: le_u32(b, o.atomicstatus),
            waitreason: b.get(o.waitreason as usize).copied().unwrap_or(0),
            waitsince: le_u64(b, o.waitsince) as i64,
            sched_sp: le_u64(b, o.sched_sp),
            sched_pc: le_u64(b, o.sched_pc),
            sched_bp: le_u64(b, o.sched_bp),
            lo: le_u64(b, o.stack_lo),
            hi: le_u64(b, o.stack_hi),
            syscallsp: le_u64(b, o.syscallsp),
            syscallpc: le_u64(b, o.syscallpc),
            syscallbp: o.syscallbp.map(|p| le_u64(b, p)),
            waiting: o.waiting.map_or(0, |p| le_u64(b, p)),
            param: o.param.map_or(0, |p| le_u64(b, p)),
        }
    }
}

/// A goroutine read consistently (or, `stable == false`, one that kept
/// changing: its identity and last state without a stack).
#[derive(Clone, Debug)]
pub struct LiveG {
    /// The g's address.
    pub gp: u64,
    pub raw: RawG,
    pub state: GState,
    pub stack: Walked,
    pub stable: bool,
}

pub struct Reader<'a> {
    pub mem: &'a ProcMem,
    pub off: GOffsets,
    pub statuses: &'a StatusTable,
    /// amd64: a syscall's frame pointer can be found without `syscallbp`.
    pub amd64: bool,
}

/// What a g read says it is.
enum Kind {
    Free,
    Live(GState),
    /// Moving stack, unknown status, implausible goid: read again.
    Again,
}

impl Reader<'_> {
    fn kind(&self, g: &RawG) -> Kind {
        match self.statuses.classify(g.status) {
            Status::Free => Kind::Free,
            Status::Live(_) if g.goid == 0 || g.goid >= MAX_GOID => Kind::Again,
            Status::Live(state) => Kind::Live(state),
            Status::Moving | Status::Unknown => Kind::Again,
        }
    }

    /// Same goroutine in the same state (`waitsince` may be set by a GC in
    /// between, and the GC's scan bit may come and go).
    fn same(&self, a: &RawG, b: &RawG) -> bool {
        let key = |g: &RawG| {
            (
                g.goid,
                self.statuses.classify(g.status),
                g.waitreason,
                (g.sched_sp, g.sched_pc, g.sched_bp),
                (g.lo, g.hi),
                (g.syscallsp, g.syscallpc, g.syscallbp),
                (g.waiting, g.param),
            )
        };
        key(a) == key(b)
    }

    fn resume(&self, g: &RawG, state: GState) -> Option<Resume> {
        match state {
            GState::Running => None,
            GState::Syscall => {
                let bp = match g.syscallbp {
                    Some(bp) => bp,
                    None if self.amd64 => g
                        .syscallsp
                        .checked_sub(AMD64_SYSCALL_BP_BELOW_SP)
                        .and_then(|a| self.mem.u64(a))
                        .unwrap_or(0),
                    None => 0,
                };
                Some(Resume {
                    pc: g.syscallpc,
                    sp: g.syscallsp,
                    bp,
                    pc_is_return: true,
                })
            }
            _ => Some(Resume {
                pc: g.sched_pc,
                sp: g.sched_sp,
                bp: g.sched_bp,
                // newproc1 points a new goroutine's pc at its function's entry.
                pc_is_return: g.sched_pc != g.startpc,
            }),
        }
    }

    /// Where the goroutine resumes and which stack bytes to read for it:
    /// None when it has no stack to walk; `Err` when its saved state does
    /// not fit its stack bounds.
    fn plan(&self, g: &RawG, state: GState) -> Result<Option<(Resume, u64, u64)>, ()> {
        let Some(r) = self.resume(g, state) else {
            return Ok(None);
        };
        if r.pc == 0 {
            return Ok(None);
        }
        let sane = g.lo < g.hi && g.hi - g.lo <= MAX_STACK && (g.lo..=g.hi).contains(&r.sp);
        if !sane {
            return Err(());
        }
        Ok(Some((r, r.sp, g.hi.min(r.sp.saturating_add(STACK_READ)))))
    }

    /// Walks with the stack bytes `buf` read from `start` (words outside
    /// are read one by one).
    fn walk_in(&self, r: &Resume, g: &RawG, buf: Option<&[u8]>, start: u64) -> Walked {
        let end = start + buf.map_or(0, |b| b.len() as u64);
        let mut word = |a: u64| -> Option<u64> {
            match buf {
                Some(b) if a >= start && a + 8 <= end => Some(le_u64(b, a - start)),
                _ => self.mem.u64(a),
            }
        };
        walk(r, g.lo, g.hi, &mut word)
    }

    fn stack(&self, g: &RawG, state: GState) -> Walked {
        match self.plan(g, state) {
            Ok(None) => Walked::default(),
            Err(()) => Walked {
                truncated: true,
                ..Walked::default()
            },
            Ok(Some((r, start, end))) => {
                let mut buf = vec![0u8; (end - start) as usize];
                let have = self.mem.read(start, &mut buf);
                self.walk_in(&r, g, have.then_some(&buf[..]), start)
            }
        }
    }

    fn read_one(&self, gp: u64) -> Option<RawG> {
        let mut b = vec![0u8; self.off.span() as usize];
        self.mem
            .read(gp, &mut b)
            .then(|| RawG::decode(&b, &self.off))
    }

    /// One g on its own, until two reads around its stack agree.
    fn settle(&self, gp: u64, stats: &mut SnapStats) -> Option<LiveG> {
        stats.retried += 1;
        let mut last = None;
        for attempt in 0..RETRIES {
            if attempt > 0 {
                // Give a stack copy (or whatever changed it) time to end.
                std::thread::sleep(RETRY_PAUSE * attempt as u32);
            }
            let Some(g) = self.read_one(gp) else {
                continue;
            };
            let state = match self.kind(&g) {
                Kind::Free => {
                    stats.free += 1;
                    return None;
                }
                Kind::Again => continue,
                Kind::Live(s) => s,
            };
            last = Some((g, state));
            let stack = self.stack(&g, state);
            match self.read_one(gp) {
                Some(after) if self.same(&g, &after) => {
                    return Some(LiveG {
                        gp,
                        raw: after,
                        state,
                        stack,
                        stable: true,
                    });
                }
                _ => continue,
            }
        }
        match last {
            Some((raw, state)) => {
                stats.unstable += 1;
                Some(LiveG {
                    gp,
                    raw,
                    state,
                    stack: Walked::default(),
                    stable: false,
                })
            }
            None => {
                stats.skipped += 1;
                None
            }
        }
    }

    /// Every live goroutine among the g pointers `gps`, and the pointers
    /// of the gs never read consistently (counted in `stats.skipped`).
    pub fn read_all(&self, gps: &[u64], stats: &mut SnapStats) -> (Vec<LiveG>, Vec<u64>) {
        let mut sorted: Vec<u64> = gps.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let bad = sorted
            .iter()
            .filter(|p| **p == 0 || !p.is_multiple_of(8))
            .count();
        stats.skipped += bad as u64;
        sorted.retain(|p| *p != 0 && p.is_multiple_of(8));
        let span = self.off.span();

        let clock = std::time::Instant::now();
        let mut again = Vec::new();
        let mut first = Vec::new();
        let gs = self.mem.read_many(&sorted, span);
        log::debug!(
            "snapshot: {} gs read in {:?}",
            sorted.len(),
            clock.elapsed()
        );
        for (gp, bytes) in sorted.iter().zip(gs) {
            let Some(bytes) = bytes else {
                again.push(*gp);
                continue;
            };
            let g = RawG::decode(&bytes, &self.off);
            if g.goid < MAX_GOID {
                stats.max_goid = stats.max_goid.max(g.goid);
            }
            match self.kind(&g) {
                Kind::Free => stats.free += 1,
                Kind::Again => again.push(*gp),
                Kind::Live(state) => first.push((*gp, g, state)),
            }
        }
        // Every stack, neighbours in one read.
        let plans: Vec<_> = first.iter().map(|(_, g, s)| self.plan(g, *s)).collect();
        let ranges: Vec<(u64, u64)> = plans
            .iter()
            .filter_map(|p| p.as_ref().ok().and_then(|p| p.as_ref()))
            .map(|(_, start, end)| (*start, end - start))
            .collect();
        let mut bufs = self.mem.read_ranges(&ranges, STACK_GAP_MAX).into_iter();
        log::debug!("snapshot: stacks read at {:?}", clock.elapsed());
        let mut read = Vec::with_capacity(first.len());
        for ((gp, g, state), plan) in first.into_iter().zip(plans) {
            let stack = match plan {
                Ok(None) => Walked::default(),
                Err(()) => Walked {
                    truncated: true,
                    ..Walked::default()
                },
                Ok(Some((r, start, _))) => {
                    let buf = bufs.next().flatten();
                    self.walk_in(&r, &g, buf.as_deref(), start)
                }
            };
            read.push((gp, g, state, stack));
        }
        log::debug!("snapshot: stacks walked at {:?}", clock.elapsed());
        let gps: Vec<u64> = read.iter().map(|r| r.0).collect();
        let mut live = Vec::with_capacity(read.len());
        for ((gp, g, state, stack), after) in read.into_iter().zip(self.mem.read_many(&gps, span)) {
            match after.map(|b| RawG::decode(&b, &self.off)) {
                Some(after) if self.same(&g, &after) => live.push(LiveG {
                    gp,
                    raw: after,
                    state,
                    stack,
                    stable: true,
                }),
                _ => again.push(gp),
            }
        }
        log::debug!("snapshot: gs read again at {:?}", clock.elapsed());
        let mut skipped = Vec::new();
        for gp in again {
            let before = stats.skipped;
            live.extend(self.settle(gp, stats));
            if stats.skipped > before {
                skipped.push(gp);
            }
        }
        (live, skipped)
    }
}
