//! The leak proof: which parked goroutines can never be woken, decided
//! from outside the process by reachability over its memory — the same
//! question Go 1.26+'s `goroutineleak` profile answers inside it, on every
//! Go version gotrace reads, without stopping the target.
//!
//! A goroutine parked on a channel or sync primitive (a candidate) is
//! leaked when no root reaches its primitive: not a global, not a finalizer
//! or special record, not the stack of a goroutine that runs, sleeps, waits
//! for IO or is itself wakeable (a fixpoint). Stacks are scanned as Go's
//! collector scans them, by the binary's stack maps ([`stacks`]), so a dead
//! slot keeps nothing alive; anything that cannot be decoded, and the heap,
//! is scanned conservatively (every word that points into an allocated heap
//! object is an edge), so an error can only hide a leak, never invent one.
//! The memory changes while it is read, so a leak counts as proven only
//! when two passes agree on an unchanged park, with every root read. Everything else is "unproven",
//! with the reason counted. Not read: the registers of goroutines running
//! on a CPU during the analysis (counted as `running`).

pub mod heap;
pub mod held;
mod mark;
mod pass;
pub mod reach;
pub mod roots;
pub mod stacks;
mod waits;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::gobin::GoBinary;
use crate::gobin::heap_layout::{HeapGlobals, HeapLayout};
use crate::gobin::layout::RuntimeLayout;
use crate::gobin::stackmaps::StackMaps;
use crate::gobin::symbolize::Symbolizer;
use crate::goruntime::wait_reason;
use mark::Root;
use pass::{Outcome, Pass};

/// Pause between the two passes: long enough that a goroutine about to be
/// woken has been, short enough not to matter to a user.
const BETWEEN_PASSES: Duration = Duration::from_millis(20);
/// Attempts at a pass during which no GC cycle ended.
const PASS_ATTEMPTS: usize = 3;

/// Why a candidate's leak is not proven.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unproven {
    /// It ran, or its park changed, while read or between the passes.
    Changed,
    /// Its wait records (sudogs) could not be read.
    Unreadable,
    /// Its primitive could not be located (e.g. sync.Cond before Go 1.26).
    NotLocated,
    /// Some root could not be read: an edge may be missing.
    RootsIncomplete,
    /// A GC cycle ended during every attempt at a pass.
    HeapChanged,
    /// Seen leaked in one pass only.
    OnePass,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Leaked,
    Wakeable,
    Unproven,
}

/// What reaches a wakeable goroutine's primitive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptBy {
    /// "global", "goroutine", "not_heap", "finalizer", "special" or
    /// "tiny_block".
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goid: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProofGoroutine {
    pub goid: u64,
    pub verdict: Verdict,
    pub wait_reason: String,
    pub waits_on: Vec<String>,
    pub kept_by: Option<KeptBy>,
    pub unproven_reason: Option<Unproven>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProofHeap {
    pub spans: u64,
    pub objects_marked: u64,
    pub bytes_scanned: u64,
    pub read_errors: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Proof {
    /// "done", "unsupported" or "failed".
    pub status: String,
    pub error: Option<String>,
    pub method: String,
    pub passes: u32,
    pub took_ms: f64,
    pub candidates: u64,
    pub leaked: u64,
    pub wakeable: u64,
    pub unproven: u64,
    pub unproven_reasons: BTreeMap<Unproven, u64>,
    pub running: u64,
    pub heap: ProofHeap,
    /// What the second pass read besides stacks (modules, special records,
    /// finalizer and cleanup blocks; `incomplete`: unreadable roots).
    pub roots: roots::RootStats,
    /// How the second pass scanned the stacks of root and wakeable
    /// goroutines (precise by stack maps, or whole).
    #[serde(default)]
    pub stacks: stacks::StackStats,
    pub goroutines: Vec<ProofGoroutine>,
}

impl Proof {
    fn not_done(status: &str, error: String, took: Duration) -> Proof {
        Proof {
            status: status.to_string(),
            error: Some(error),
            method: "conservative".to_string(),
            passes: 0,
            took_ms: millis(took),
            candidates: 0,
            leaked: 0,
            wakeable: 0,
            unproven: 0,
            unproven_reasons: BTreeMap::new(),
            running: 0,
            heap: ProofHeap::default(),
            roots: roots::RootStats::default(),
            stacks: stacks::StackStats::default(),
            goroutines: Vec::new(),
        }
    }

    pub fn done(&self) -> bool {
        self.status == "done"
    }

    /// Goids proven leaked.
    pub fn leaked_goids(&self) -> impl Iterator<Item = u64> + '_ {
        self.goroutines
            .iter()
            .filter(|g| g.verdict == Verdict::Leaked)
            .map(|g| g.goid)
    }
}

/// The process to analyse.
pub struct Target<'a> {
    pub pid: u32,
    pub bin: &'a GoBinary,
    pub layout: &'a RuntimeLayout,
    pub bias: u64,
    pub symbolizer: &'a Symbolizer,
    /// The process is held at its exit: no thread of it can run again, so
    /// each thread's stack pointer (`/proc/PID/task/TID/syscall`) says
    /// where the stack of the goroutine it was running is live.
    pub held: bool,
}

/// What a pass needs.
pub struct Ctx<'a> {
    /// `runtime.waitReason` value → constant name.
    pub wait_reasons: &'a BTreeMap<u8, String>,
    pub heap: &'a HeapLayout,
    pub globals: HeapGlobals,
    pub bias: u64,
    /// Offset of `g.stack.hi`: one past a stack's end, often the first
    /// byte of the next heap span, so never an edge.
    pub g_stack_hi: Option<u64>,
    /// Function names of a stack (pcs as read), innermost first.
    pub functions: &'a dyn Fn(&[u64]) -> Vec<String>,
    /// The binary's stack maps (None: stacks are scanned conservatively).
    pub stacks: Option<stacks::StackCtx<'a>>,
    /// Keep each pass's marks ([`reach::Reach`]), with every marked
    /// object's root.
    pub keep: bool,
    /// Stack pointers of the threads of a process held at its exit (none
    /// when it runs: a running thread's stack pointer changes).
    pub stopped_sps: Vec<u64>,
}

impl Ctx<'_> {
    fn is_select(&self, wait_reason: u8) -> bool {
        self.wait_reasons.get(&wait_reason).map(String::as_str) == Some("waitReasonSelect")
    }
}

/// Milliseconds to the microsecond (a short decimal, so that a recording
/// replays the same number).
fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Runs the proof on `t`: never fails, says in `status` what it could do.
pub fn prove(t: &Target) -> Proof {
    prove_keeping(t, false).0
}

/// The proof, and, with `keep`, the marks of its two passes (none when it
/// did not run) for questions about other objects ([`held`]). Keeping them
/// costs memory (both passes' spans, every marked object's root): only
/// when there are questions.
pub fn prove_keeping(t: &Target, keep: bool) -> (Proof, Vec<reach::Reach>) {
    let clock = Instant::now();
    let hl = match HeapLayout::load(t.bin) {
        Ok(hl) => hl,
        Err(e) => {
            let p = Proof::not_done("unsupported", e.to_string(), clock.elapsed());
            return (p, Vec::new());
        }
    };
    let Some(globals) = hl.globals else {
        let why = "the runtime's heap globals (mheap_, firstmoduledata) were not found";
        return (
            Proof::not_done("unsupported", why.into(), clock.elapsed()),
            Vec::new(),
        );
    };
    let functions = |pcs: &[u64]| -> Vec<String> {
        pcs.iter()
            .flat_map(|pc| t.symbolizer.symbolize(pc.wrapping_sub(t.bias), true))
            .map(|f| f.function)
            .collect()
    };
    let maps = StackMaps::new(t.bin);
    let g_off = t.layout.snapshot_offsets();
    let ctx = Ctx {
        wait_reasons: &t.layout.wait_reasons,
        g_stack_hi: t.layout.snapshot_offsets().map(|o| o.stack_hi),
        heap: &hl,
        globals,
        bias: t.bias,
        functions: &functions,
        keep,
        stopped_sps: if t.held {
            crate::process::ptrace::stopped_sps(t.pid)
        } else {
            Vec::new()
        },
        stacks: maps
            .as_ref()
            .zip(g_off.as_ref())
            .map(|(maps, g)| stacks::StackCtx { maps, g }),
    };
    let first = match one_pass(t, &ctx) {
        Ok(p) => p,
        Err(e) => return (Proof::not_done("failed", e, clock.elapsed()), Vec::new()),
    };
    std::thread::sleep(BETWEEN_PASSES);
    let second = match one_pass(t, &ctx) {
        Ok(p) => p,
        Err(e) => return (Proof::not_done("failed", e, clock.elapsed()), Vec::new()),
    };
    let mut proof = combine(&ctx, t, &first, &second);
    if ctx.stacks.is_some_and(|s| s.maps.precise()) {
        proof.method = "stack maps, conservative heap".to_string();
    }
    proof.took_ms = millis(clock.elapsed());
    let keep = |p: Pass| {
        p.reach.map(|mut r| {
            r.pcs = p.stacks;
            r
        })
    };
    let reaches = [keep(first), keep(second)].into_iter().flatten().collect();
    (proof, reaches)
}

/// The proof, and what holds the objects `q` asks about (both passes
/// agreeing), or why that is not known. The passes keep their marks only
/// when `q` asks about something.
pub fn prove_asking(t: &Target, q: &held::Queries) -> (Proof, held::Held) {
    let (proof, reaches) = prove_keeping(t, !q.is_empty());
    let held = held::ask(t, &proof, &reaches, q);
    (proof, held)
}

/// A pass during which no GC cycle ended, if one of a few attempts is.
fn one_pass(t: &Target, ctx: &Ctx) -> Result<Pass, String> {
    let mut last = None;
    for _ in 0..PASS_ATTEMPTS {
        let read =
            crate::snapshot::read_live(t.pid, t.bin, t.layout, t.bias, Some(ctx.heap.g_param))
                .map_err(|e| e.to_string())?;
        let mut p = pass::run(ctx, &read.live, &read.all, &read.mem)?;
        p.keep_stacks(read.live);
        if p.sweepgen.0 == p.sweepgen.1 {
            return Ok(p);
        }
        last = Some(p);
    }
    Ok(last.expect("at least one attempt"))
}

/// The verdicts: leaked only when both passes saw the same park leaked with
/// every root read and no GC cycle in between.
fn combine(ctx: &Ctx, t: &Target, a: &Pass, b: &Pass) -> Proof {
    let clean = |p: &Pass| -> Option<Unproven> {
        if p.incomplete > 0 || p.heap.read_errors > 0 {
            Some(Unproven::RootsIncomplete)
        } else if p.sweepgen.0 != p.sweepgen.1 {
            Some(Unproven::HeapChanged)
        } else {
            None
        }
    };
    let dirty = clean(a).or(clean(b));
    let before: HashMap<u64, &pass::Seen> = a.seen.iter().map(|s| (s.goid, s)).collect();
    let mut names = Namer::new(t, &b.stacks);
    let mut proof = Proof::not_done("done", String::new(), Duration::ZERO);
    proof.error = None;
    proof.passes = 2;
    proof.running = a.running.max(b.running);
    proof.heap = ProofHeap {
        spans: b.heap.spans,
        objects_marked: b.heap.objects_marked,
        bytes_scanned: b.heap.bytes_scanned,
        read_errors: a.heap.read_errors + b.heap.read_errors,
    };
    proof.roots = b.roots;
    proof.stacks = b.stack_scan.clone();
    proof.roots.incomplete = a.incomplete + b.incomplete;
    for s in &b.seen {
        let reason_name = ctx.wait_reasons.get(&s.wait_reason).map(String::as_str);
        if s.goid == 1 && reason_name == Some("waitReasonSelectNoCases") {
            // Go 1.27 leaves main's `select {}` out of its report: a program
            // parked there on purpose. Like Go, its stack was not a root.
            continue;
        }
        let earlier = before.get(&s.goid);
        let (verdict, kept_by, why) = match &s.outcome {
            Outcome::Unproven(r) => (Verdict::Unproven, None, Some(*r)),
            Outcome::Wakeable(root) => {
                (Verdict::Wakeable, Some(names.kept_by(root.as_ref())), None)
            }
            Outcome::Leaked => match earlier {
                None => (Verdict::Unproven, None, Some(Unproven::OnePass)),
                Some(e) if e.park != s.park || e.waits_on != s.waits_on => {
                    (Verdict::Unproven, None, Some(Unproven::Changed))
                }
                Some(e) if e.outcome != Outcome::Leaked => {
                    (Verdict::Unproven, None, Some(Unproven::OnePass))
                }
                Some(_) => match dirty {
                    Some(r) => (Verdict::Unproven, None, Some(r)),
                    None => (Verdict::Leaked, None, None),
                },
            },
        };
        proof.candidates += 1;
        match verdict {
            Verdict::Leaked => proof.leaked += 1,
            Verdict::Wakeable => proof.wakeable += 1,
            Verdict::Unproven => proof.unproven += 1,
        }
        if let Some(r) = why {
            *proof.unproven_reasons.entry(r).or_default() += 1;
        }
        proof.goroutines.push(ProofGoroutine {
            goid: s.goid,
            verdict,
            wait_reason: wait_reason::text(ctx.wait_reasons, s.wait_reason),
            waits_on: s.waits_on.iter().map(|p| format!("{p:#x}")).collect(),
            kept_by,
            unproven_reason: why,
        });
    }
    proof.goroutines.sort_by_key(|g| g.goid);
    proof
}

/// Names the roots that keep primitives alive.
struct Namer<'a> {
    t: &'a Target<'a>,
    /// Each goroutine's stack pcs, sorted by goid.
    stacks: &'a [(u64, Vec<u64>)],
    globals: HashMap<u64, Option<String>>,
}

impl<'a> Namer<'a> {
    fn new(t: &'a Target<'a>, stacks: &'a [(u64, Vec<u64>)]) -> Self {
        Namer {
            t,
            stacks,
            globals: HashMap::new(),
        }
    }

    fn kept_by(&mut self, root: Option<&Root>) -> KeptBy {
        let kind = |kind: &str| KeptBy {
            kind: kind.to_string(),
            name: None,
            goid: None,
            function: None,
        };
        match root {
            None => kind("not_heap"),
            Some(Root::Finalizer) => kind("finalizer"),
            Some(Root::Special) => kind("special"),
            Some(Root::TinyBlock) => kind("tiny_block"),
            Some(Root::Global { addr }) => {
                let (t, addr) = (self.t, *addr);
                let name = self
                    .globals
                    .entry(addr)
                    .or_insert_with(|| t.bin.data_symbol_containing(addr.wrapping_sub(t.bias)))
                    .clone();
                KeptBy {
                    name: Some(name.unwrap_or_else(|| format!("global at {addr:#x}"))),
                    ..kind("global")
                }
            }
            Some(Root::Goroutine { goid, pc, .. }) => {
                let symbolize = |pc: u64| {
                    self.t
                        .symbolizer
                        .symbolize(pc.wrapping_sub(self.t.bias), true)
                };
                // The frame holding the reference, when it is found and is
                // the program's; else where the goroutine is.
                let holder = pc
                    .map(symbolize)
                    .and_then(|frames| frames.last().cloned())
                    .filter(|f| crate::goruntime::is_user_function(&f.function));
                let pcs = pass::stack_in(self.stacks, *goid);
                let frames: Vec<_> = pcs.iter().flat_map(|pc| symbolize(*pc)).collect();
                // The program's frame, else the outermost (a runtime
                // worker such as runtime.gcBgMarkWorker).
                let site = crate::gobin::frame::site(&frames)
                    .or_else(|| frames.iter().rfind(|f| f.function != "runtime.goexit"))
                    .cloned();
                KeptBy {
                    goid: Some(*goid),
                    function: holder.or(site).map(|f| f.function),
                    ..kind("goroutine")
                }
            }
        }
    }
}

#[cfg(test)]
mod held_tests;
#[cfg(any(test, feature = "fuzzing"))]
pub mod image;
#[cfg(test)]
pub(crate) mod stackmaps_tests;
#[cfg(test)]
mod tests;
