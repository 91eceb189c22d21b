//! What holds the objects a trace knows, decided from the proof's marks:
//!
//! - a context: whether something reachable can still cancel it (its
//!   `CancelFunc`, a closure `{fn, c}` that `context.WithCancel` and the
//!   other constructors return, or an `AfterFunc` stop function), and what
//!   keeps the context itself (a root, or the stacks of goroutines that are
//!   not roots);
//! - a ticker: what of the program still references it or its channel,
//!   apart from the runtime's own timer heap (objects the Ps point at) and
//!   the channel's waiters, and whether the runtime still holds it (it
//!   keeps firing) or nothing does (the GC frees it).
//!
//! Both passes answer; an answer counts only when both agree, else it is
//! "undecided" with the reason, as is everything the proof could not read.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::reach::{Holder, Object, Reach};
use super::{KeptBy, Namer, Proof, Target};
use crate::process::mem::Memory;

/// `WithValue` layers followed to check a context's parent.
const MAX_VALUE_HOPS: u32 = 64;

/// A context the trace saw created (or cancelled).
#[derive(Clone, Debug, Default)]
pub struct CtxQuery {
    /// The context's address (its `cancelCtx`).
    pub ptr: u64,
    /// The parent `Context` interface `propagateCancel` got, after
    /// `value_hops` `WithValue` layers; (0, 0) when not seen.
    pub parent: (u64, u64),
    pub value_hops: u32,
    /// Its Done channel, when seen.
    pub done: Option<u64>,
    /// The goroutine that made it.
    pub creator: u64,
    /// Cancelled already (asked about for the goroutines that hold it).
    pub cancelled: bool,
}

/// A ticker (or timer) the trace saw started.
#[derive(Clone, Debug, Default)]
pub struct TickerQuery {
    /// The runtime timer's address (inside the `time.Ticker`).
    pub ptr: u64,
    /// Its channel (`Ticker.C`), 0 when it has none.
    pub chan: u64,
    /// The goroutine that started it.
    pub creator: u64,
}

#[derive(Clone, Debug, Default)]
pub struct Queries {
    pub contexts: Vec<CtxQuery>,
    pub tickers: Vec<TickerQuery>,
    /// Runtime address of the `*context.valueCtx,context.Context` itab.
    pub itab_value_ctx: u64,
    /// Offset of `cancelCtx.done` (an `atomic.Value`: the channel is its
    /// second word).
    pub cancel_ctx_done: Option<u64>,
    /// The target's runtime frees a ticker nothing references (Go 1.23+
    /// without `asynctimerchan=1`).
    pub timers_collected: bool,
    /// The process is held at its exit: no goroutine runs again, so what a
    /// goroutine on a CPU keeps in its registers cancels or stops nothing.
    pub at_exit: bool,
}

impl Queries {
    /// Nothing to ask: the proof need not keep its marks.
    pub fn is_empty(&self) -> bool {
        self.contexts.is_empty() && self.tickers.is_empty()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Identity {
    /// The memory at the address still is this object.
    Same,
    /// It holds another object now: this one was collected.
    Gone,
    /// Could not be checked.
    Unknown,
}

/// A function that can cancel a context, and what reaches it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FnRef {
    /// Address of the closure (on a stack when it did not escape).
    pub addr: u64,
    /// The closure's function (`context.WithCancel.func1`...).
    pub function: String,
    pub kept_by: KeptBy,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CtxHeld {
    pub ptr: u64,
    pub identity: Identity,
    /// The root that reaches the context, when one does.
    pub reached_by: Option<KeptBy>,
    /// Goroutines whose stacks hold a pointer to it (roots or not).
    pub stacks: Vec<u64>,
    /// A reachable function that can still cancel it.
    pub cancel_fn: Option<FnRef>,
    /// Why this is not decided (the passes disagreed...).
    pub undecided: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TickerHeld {
    pub ptr: u64,
    pub identity: Identity,
    /// What of the program references it or its channel: stacks of
    /// goroutines not proven leaked, globals, reachable heap objects (by
    /// their root).
    pub held_by: Vec<KeptBy>,
    /// Proven-leaked goroutines whose stacks hold it or its channel.
    pub leaked_holders: Vec<u64>,
    /// The ticker is reachable (through the runtime's timer heap when
    /// nothing else holds it): it keeps firing.
    pub runtime_holds: bool,
    pub undecided: Option<String>,
}

/// The answers, stored with the trace (a replay shows the same).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Held {
    /// "done", or why nothing was decided.
    pub status: String,
    pub contexts: Vec<CtxHeld>,
    pub tickers: Vec<TickerHeld>,
    /// Ranges that could not be read while looking for holders.
    pub read_errors: u64,
    /// The target's runtime frees a ticker nothing references: one the
    /// timer heap still holds is not firing forever.
    #[serde(default)]
    pub timers_collected: bool,
    /// Time spent answering (both passes' holders).
    #[serde(default)]
    pub took_ms: f64,
}

impl Held {
    pub fn not_done(why: String) -> Held {
        Held {
            status: why,
            ..Held::default()
        }
    }

    pub fn done(&self) -> bool {
        self.status == "done"
    }

    pub fn context(&self, ptr: u64) -> Option<&CtxHeld> {
        self.contexts.iter().find(|c| c.ptr == ptr)
    }

    pub fn ticker(&self, ptr: u64) -> Option<&TickerHeld> {
        self.tickers.iter().find(|c| c.ptr == ptr)
    }
}

/// Answers `q` from both passes of a proof.
pub fn ask(t: &Target, proof: &Proof, reaches: &[Reach], q: &Queries) -> Held {
    let clock = std::time::Instant::now();
    if proof.done() && q.is_empty() {
        return Held {
            status: "done".into(),
            timers_collected: q.timers_collected,
            ..Held::default()
        };
    }
    if !proof.done() || reaches.len() != 2 {
        return Held::not_done(format!(
            "the leak proof is {}{}",
            proof.status,
            proof
                .error
                .as_ref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        ));
    }
    let mem = match crate::process::mem::ProcMem::open(t.pid) {
        Ok(m) => m,
        Err(e) => return Held::not_done(format!("cannot read PID {}'s memory: {e}", t.pid)),
    };
    let leaked: HashSet<u64> = proof.leaked_goids().collect();
    let unproven: HashSet<u64> = proof
        .goroutines
        .iter()
        .filter(|g| g.verdict == super::Verdict::Unproven)
        .map(|g| g.goid)
        .collect();
    let fname = |pc: u64| {
        t.bin
            .symbols()
            .containing(pc.wrapping_sub(t.bias))
            .filter(|f| f.addr == pc.wrapping_sub(t.bias))
            .map(|f| f.name.clone())
    };
    let answers: Vec<Held> = reaches
        .iter()
        .map(|r| {
            let mut namer = Namer::new(t, &r.pcs);
            one(&mut Asked {
                reach: r,
                mem: &mem,
                q,
                leaked: &leaked,
                unproven: &unproven,
                fname: &fname,
                name: &mut |root| namer.kept_by(root),
            })
        })
        .collect();
    let mut held = agree(&answers[0], &answers[1]);
    held.took_ms = clock.elapsed().as_secs_f64() * 1e3;
    held
}

/// What one pass's answers need.
pub struct Asked<'a, 'n> {
    pub reach: &'a Reach,
    pub mem: &'a dyn Memory,
    pub q: &'a Queries,
    /// Goroutines proven leaked.
    pub leaked: &'a HashSet<u64>,
    /// Goroutines whose leak the proof could not decide.
    pub unproven: &'a HashSet<u64>,
    /// Runtime code address → the function starting there.
    pub fname: &'a dyn Fn(u64) -> Option<String>,
    /// Names a root.
    pub name: &'n mut dyn FnMut(Option<&super::mark::Root>) -> KeptBy,
}

/// One pass's answers.
pub fn one(a: &mut Asked<'_, '_>) -> Held {
    let r = a.reach;
    let obj = |addr: u64| -> (u64, u64) {
        r.object(addr)
            .map_or((addr, 8), |o: Object| (o.base, o.size))
    };
    let mut targets: Vec<(u64, u64)> = a.q.contexts.iter().map(|c| obj(c.ptr)).collect();
    for t in &a.q.tickers {
        targets.push(obj(t.ptr));
        if t.chan != 0 {
            targets.push(obj(t.chan));
        }
    }
    let holders = r.holders(a.mem, &targets);
    // Memory that could not be read may hide a holder (a cancel function).
    let incomplete = (holders.errors > 0).then(|| {
        format!(
            "{} memory ranges could not be read: a holder may be missing",
            holders.errors
        )
    });
    let mut contexts = Vec::with_capacity(a.q.contexts.len());
    for c in &a.q.contexts {
        let mut h = ctx_held(a, c, holders.of(obj(c.ptr).0));
        if h.cancel_fn.is_none() && h.undecided.is_none() {
            h.undecided = incomplete.clone();
        }
        contexts.push(h);
    }
    let p_owned = if a.q.tickers.is_empty() {
        Vec::new()
    } else {
        r.p_owned(a.mem)
    };
    let mut tickers = Vec::with_capacity(a.q.tickers.len());
    for t in &a.q.tickers {
        let chan = if t.chan == 0 {
            &[][..]
        } else {
            holders.of(obj(t.chan).0)
        };
        let mut h = ticker_held(a, t, holders.of(obj(t.ptr).0), chan, &p_owned);
        if h.held_by.is_empty() && h.undecided.is_none() {
            h.undecided = incomplete.clone();
        }
        tickers.push(h);
    }
    Held {
        status: "done".into(),
        contexts,
        tickers,
        read_errors: holders.errors,
        timers_collected: a.q.timers_collected,
        took_ms: 0.0,
    }
}

fn ctx_held(a: &mut Asked<'_, '_>, c: &CtxQuery, hs: &[Holder]) -> CtxHeld {
    let r = a.reach;
    let identity = ctx_identity(a, c);
    let reached_by = r
        .object(c.ptr)
        .filter(|o| o.marked)
        .map(|o| (a.name)(r.root_of(&o)));
    let cancel_fn = cancel_fn(a, c, hs);
    let creator_running = running(a, c.creator);
    let undecided = if identity == Identity::Unknown {
        Some("its memory could not be checked".to_string())
    } else if creator_running && cancel_fn.is_none() && !c.cancelled {
        Some("the goroutine that made it was on a CPU (its registers are not read)".into())
    } else {
        None
    };
    CtxHeld {
        ptr: c.ptr,
        identity,
        reached_by,
        stacks: stack_holders(hs),
        cancel_fn,
        undecided,
    }
}

/// A reachable closure that cancels `c`: a marked heap object `{fn, c}`,
/// or one that did not escape, in the frame of a goroutine not proven
/// leaked.
fn cancel_fn(a: &mut Asked<'_, '_>, c: &CtxQuery, hs: &[Holder]) -> Option<FnRef> {
    for h in hs {
        let (addr, root) = match h {
            Holder::Heap {
                base,
                marked: true,
                root,
                ..
            } => (*base, root.clone()),
            Holder::Stack { goid, at } if !a.leaked.contains(goid) => {
                (at.wrapping_sub(8), Some(stack_root(*goid, *at)))
            }
            _ => continue,
        };
        let (Some(f), Some(w)) = (a.mem.u64(addr), a.mem.u64(addr + 8)) else {
            continue;
        };
        if let Some(function) = cancel_closure(a, f, w, c.ptr) {
            return Some(FnRef {
                addr,
                function,
                kept_by: (a.name)(root.as_ref()),
            });
        }
    }
    None
}

fn ticker_held(
    a: &mut Asked<'_, '_>,
    t: &TickerQuery,
    of_ticker: &[Holder],
    of_chan: &[Holder],
    p_owned: &[u64],
) -> TickerHeld {
    let r = a.reach;
    let o = r.object(t.ptr);
    let base = o.map_or(t.ptr, |o| o.base);
    let chan_base = r.object(t.chan).map_or(t.chan, |o| o.base);
    let identity = match a.mem.u64(base) {
        _ if t.chan == 0 => Identity::Unknown,
        Some(w) if w == t.chan => Identity::Same,
        Some(_) => Identity::Gone,
        None => Identity::Unknown,
    };
    let mut held_by: Vec<KeptBy> = Vec::new();
    let mut leaked = Vec::new();
    let mut unproven = false;
    let all = of_ticker.iter().map(|h| (h, false));
    for (h, chan) in all.chain(of_chan.iter().map(|h| (h, true))) {
        let root = match h {
            Holder::Stack { goid, .. } if a.leaked.contains(goid) => {
                leaked.push(*goid);
                continue;
            }
            Holder::Stack { goid, .. } if a.unproven.contains(goid) => {
                unproven = true;
                continue;
            }
            // The runtime's own goroutines (GC workers...) hold no program
            // ticker: a word there is stale, from a stack they reused.
            Holder::Stack { goid, .. } if system_goroutine(a, *goid) => continue,
            Holder::Stack { goid, at } => Some(stack_root(*goid, *at)),
            Holder::Global { at } => Some(super::mark::Root::Global { addr: *at }),
            Holder::Heap {
                base: hb,
                marked: true,
                root,
                ..
            } => {
                let runtime = *hb == base
                    || *hb == chan_base
                    || p_owned.binary_search(hb).is_ok()
                    || (chan && is_sudog(a, *hb, t.chan));
                if runtime {
                    continue;
                }
                root.clone()
            }
            Holder::Heap { .. } => continue,
        };
        let k = (a.name)(root.as_ref());
        if !held_by.contains(&k) {
            held_by.push(k);
        }
    }
    leaked.sort_unstable();
    leaked.dedup();
    let creator_running = running(a, t.creator);
    let undecided = if identity == Identity::Unknown {
        Some("its memory could not be checked".to_string())
    } else if creator_running && held_by.is_empty() {
        Some("the goroutine that started it was on a CPU (its registers are not read)".into())
    } else if unproven && held_by.is_empty() {
        Some("a goroutine that holds it may or may not be leaked (unproven)".into())
    } else {
        None
    };
    TickerHeld {
        ptr: t.ptr,
        identity,
        held_by,
        leaked_holders: leaked,
        runtime_holds: o.is_some_and(|o| o.marked),
        undecided,
    }
}

/// Whether goroutine `goid` was on a CPU during the pass and may still use
/// what its registers hold (not at the process's exit).
fn running(a: &Asked<'_, '_>, goid: u64) -> bool {
    !a.q.at_exit && a.reach.stacks.iter().any(|s| s.goid == goid && s.running)
}

/// Whether goroutine `goid` is one of the runtime's own (its stack has no
/// program frame, and its outermost function is the runtime's).
fn system_goroutine(a: &mut Asked<'_, '_>, goid: u64) -> bool {
    let k = (a.name)(Some(&super::mark::Root::Goroutine {
        goid,
        slot: None,
        pc: None,
    }));
    k.function
        .as_deref()
        .is_some_and(crate::goruntime::is_system_function)
}

/// The root a holding stack word names (its frame is not looked for: the
/// goroutine's own frame names it).
fn stack_root(goid: u64, slot: u64) -> super::mark::Root {
    super::mark::Root::Goroutine {
        goid,
        slot: Some(slot),
        pc: None,
    }
}

/// Whether the object at `at` is a sudog of a goroutine waiting on `chan`.
fn is_sudog(a: &Asked<'_, '_>, at: u64, chan: u64) -> bool {
    let r = a.reach;
    a.mem.u64(at + r.sudog_c) == Some(chan)
        && a.mem
            .u64(at + r.sudog_g)
            .is_some_and(|g| r.stacks.iter().any(|s| s.gp == g))
}

/// Pass `b`'s answers, kept where both passes agree on what decides them:
/// a cancel function either pass found is reachable (it exists); a
/// goroutine holds an object when both passes saw it on its stack; a
/// disagreement on anything else makes the answer undecided.
fn agree(a: &Held, b: &Held) -> Held {
    let mut out = b.clone();
    out.read_errors = a.read_errors + b.read_errors;
    let disagreed = || Some("the two passes disagreed".to_string());
    for c in &mut out.contexts {
        let Some(x) = a.context(c.ptr) else {
            c.undecided = c.undecided.take().or_else(disagreed);
            continue;
        };
        if c.cancel_fn.is_none() {
            c.cancel_fn = x.cancel_fn.clone();
        }
        let any_stack = !c.stacks.is_empty() || !x.stacks.is_empty();
        c.stacks.retain(|g| x.stacks.contains(g));
        let differ = x.identity != c.identity
            || x.reached_by.is_some() != c.reached_by.is_some()
            || (any_stack && c.stacks.is_empty());
        if differ && c.undecided.is_none() {
            c.undecided = disagreed();
        }
        if c.undecided.is_none() {
            c.undecided = x.undecided.clone();
        }
    }
    for t in &mut out.tickers {
        let Some(x) = a.ticker(t.ptr) else {
            t.undecided = t.undecided.take().or_else(disagreed);
            continue;
        };
        let any_leaked = !t.leaked_holders.is_empty() || !x.leaked_holders.is_empty();
        t.leaked_holders.retain(|g| x.leaked_holders.contains(g));
        // Firing forever: the runtime held it in both passes.
        t.runtime_holds &= x.runtime_holds;
        let differ = x.identity != t.identity
            || x.held_by.is_empty() != t.held_by.is_empty()
            || (any_leaked && t.leaked_holders.is_empty());
        if differ && t.undecided.is_none() {
            t.undecided = disagreed();
        }
        if t.undecided.is_none() {
            t.undecided = x.undecided.clone();
        }
    }
    out
}

/// Whether `function` is a closure of package context that cancels the
/// context it captures: the `CancelFunc`s of `WithCancel`,
/// `WithCancelCause` and `WithDeadline(Cause)` (also when inlined into a
/// caller and renamed after it) and `AfterFunc`'s stop function. Not the
/// timer callback of `WithDeadline(Cause)` (`func2`): it cancels only at
/// the deadline.
pub fn is_cancel_fn(function: &str) -> bool {
    const MAKERS: &[&str] = &[
        ".WithCancel.func",
        ".WithCancelCause.func",
        ".WithDeadline.func",
        ".WithDeadlineCause.func",
        ".AfterFunc.func",
    ];
    let timer =
        function.ends_with(".WithDeadline.func2") || function.ends_with(".WithDeadlineCause.func2");
    function.starts_with("context.") && MAKERS.iter().any(|m| function.contains(m)) && !timer
}

/// Whether the words `fn_word, captured` are a cancel closure of `ctx`.
fn cancel_closure(a: &Asked<'_, '_>, fn_word: u64, captured: u64, ctx: u64) -> Option<String> {
    if captured != ctx {
        return None;
    }
    (a.fname)(fn_word).filter(|f| is_cancel_fn(f))
}

/// Whether the object at `ptr` still is the context `c`: its embedded
/// `cancelCtx` starts with the parent interface (after the WithValue
/// layers), and its `done` holds the Done channel when that was seen.
fn ctx_identity(a: &Asked<'_, '_>, c: &CtxQuery) -> Identity {
    let mem = a.mem;
    let mut checked = false;
    // Without the valueCtx itab the WithValue layers cannot be followed.
    let followable = c.value_hops == 0 || a.q.itab_value_ctx != 0;
    if c.parent != (0, 0) && followable {
        let (Some(mut itab), Some(mut data)) = (mem.u64(c.ptr), mem.u64(c.ptr + 8)) else {
            return Identity::Unknown;
        };
        for _ in 0..c.value_hops.min(MAX_VALUE_HOPS) {
            if itab != a.q.itab_value_ctx {
                break;
            }
            match (mem.u64(data), mem.u64(data + 8)) {
                (Some(i), Some(d)) => (itab, data) = (i, d),
                _ => return Identity::Unknown,
            }
        }
        if (itab, data) != c.parent {
            return Identity::Gone;
        }
        checked = true;
    }
    if let (Some(done), Some(off)) = (c.done, a.q.cancel_ctx_done) {
        match mem.u64(c.ptr + off + 8) {
            Some(d) if d == done => checked = true,
            Some(_) => return Identity::Gone,
            None => return Identity::Unknown,
        }
    }
    if checked {
        Identity::Same
    } else {
        Identity::Unknown
    }
}

/// The goroutines among `hs` that hold `target` on their stacks.
fn stack_holders(hs: &[Holder]) -> Vec<u64> {
    let mut v: Vec<u64> = hs
        .iter()
        .filter_map(|h| match h {
            Holder::Stack { goid, .. } => Some(*goid),
            _ => None,
        })
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}
