//! Tickers never stopped (leak pattern 4), judged by what still
//! references them (`report::reachability`).

use std::collections::BTreeMap;

use serde::Serialize;

use super::Summary;
use super::contexts::Undecided;
use super::reachability::{self, Evidence};
use crate::gobin::symbolize::Frame;
use crate::goruntime::is_user_function;
use crate::model::timers::{Timer, TimerModel};
use crate::model::{GoroutineModel, State};
use crate::proof::held::Held;
use crate::resolve::StackResolver;

#[derive(Clone, Debug, Default, Serialize)]
pub struct TimerReport {
    /// Why timers were not traced, if they were not.
    pub not_traced: Option<String>,
    /// The runtime's timer heaps read from memory at the end of a sampled
    /// or budgeted trace (null in full mode).
    pub from_memory: Option<crate::timermem::FromMemory>,
    pub started: u64,
    pub stopped: u64,
    /// Tickers started during the trace and never stopped, by verdict.
    pub never_stopped: NeverStopped,
    /// Pattern 4: the tickers never stopped judged leaked (the program no
    /// longer references them and the runtime keeps firing them, or their
    /// only holders are proven leaked) or collected (nothing references
    /// them: Go 1.23+ frees them), grouped by creation site.
    pub tickers_never_stopped: Vec<TickerGroup>,
    /// Every ticker never stopped (at most [`MAX_JUDGED`]), with its
    /// verdict and what decided it.
    pub judged: Vec<TickerOut>,
}

/// Tickers listed one by one in `judged`.
pub const MAX_JUDGED: usize = 1000;

#[derive(Clone, Debug, Serialize)]
pub struct TickerOut {
    pub created_at: Option<Frame>,
    pub creator_goid: u64,
    pub period_s: f64,
    pub age_s: f64,
    /// "leaked", "running", "collected" or "undecided".
    pub verdict: &'static str,
    pub evidence: Evidence,
}

/// Tickers never stopped, by verdict.
#[derive(Clone, Debug, Default, Serialize)]
pub struct NeverStopped {
    pub total: usize,
    pub leaked: usize,
    /// Referenced by live code: running, not a leak.
    pub running: usize,
    /// Referenced by nothing, not even the runtime: freed by the GC.
    pub collected: usize,
    pub undecided: Undecided,
}

#[derive(Clone, Debug, Serialize)]
pub struct TickerGroup {
    pub created_at: Option<Frame>,
    pub creation_stack: Vec<Frame>,
    pub count: usize,
    pub period_s: f64,
    pub age_s: Option<Summary>,
    /// Live goroutines parked on these tickers' channels.
    pub waiting_goroutines: Vec<u64>,
    /// Functions those goroutines run.
    pub looping_functions: Vec<String>,
    /// "leak" or "collected" (advice: nothing references them, Go 1.23+
    /// frees them without Stop).
    pub verdict: &'static str,
    /// The evidence: proven-leaked goroutines that are their only
    /// holders...
    pub leaked_holders: Vec<u64>,
    /// ... and how many the runtime's timer heap alone keeps firing.
    pub runtime_held: usize,
}

pub struct TimerInput<'a> {
    pub end_ns: u64,
    /// What the leak proof found holding the tickers (None: not run).
    pub held: Option<&'a Held>,
}

type Key = (String, i64, &'static str);

pub fn build(
    timers: &TimerModel,
    gs: &GoroutineModel,
    resolver: &mut StackResolver<'_>,
    input: &TimerInput<'_>,
) -> TimerReport {
    let mut counts = NeverStopped::default();
    let mut groups: BTreeMap<Key, Vec<(&Timer, Evidence)>> = BTreeMap::new();
    let mut sites: BTreeMap<Key, (Option<Frame>, Vec<Frame>)> = BTreeMap::new();
    let mut judged = Vec::new();
    for t in timers.unstopped().filter(|t| t.period_ns > 0) {
        let h = input.held.and_then(|h| h.ticker(t.ptr));
        let (verdict, evidence) = reachability::ticker(h, input.held);
        counts.total += 1;
        let frames: Vec<Frame> = t
            .stack
            .map(|s| resolver.frames(s))
            .unwrap_or_default()
            .into_iter()
            .skip_while(|f| !is_user_function(&f.function))
            .collect();
        let at = frames.first().cloned();
        if judged.len() < MAX_JUDGED {
            judged.push(TickerOut {
                created_at: at.clone(),
                creator_goid: t.creator_goid,
                period_s: t.period_ns as f64 / 1e9,
                age_s: input.end_ns.saturating_sub(t.created_ns) as f64 / 1e9,
                verdict,
                evidence: evidence.clone(),
            });
        }
        let verdict = match verdict {
            "leaked" => {
                counts.leaked += 1;
                "leak"
            }
            "collected" => {
                counts.collected += 1;
                "collected"
            }
            "running" => {
                counts.running += 1;
                continue;
            }
            _ => {
                let why = evidence.reason.as_deref().unwrap_or("unknown");
                counts.undecided.add(why);
                continue;
            }
        };
        let key = (
            at.as_ref()
                .map(|f| format!("{}:{}", f.function, f.line))
                .unwrap_or_default(),
            t.period_ns,
            verdict,
        );
        sites.entry(key.clone()).or_insert((at, frames));
        groups.entry(key).or_default().push((t, evidence));
    }
    let mut out: Vec<TickerGroup> = groups
        .into_iter()
        .map(|(key, ts)| {
            let site = sites.remove(&key).unwrap_or_default();
            group(gs, resolver, input, key, site, &ts)
        })
        .collect();
    out.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.created_at.cmp(&b.created_at))
            .then(a.period_s.total_cmp(&b.period_s))
    });
    TimerReport {
        not_traced: None,
        from_memory: None,
        started: timers.stats().started,
        stopped: timers.stats().stopped,
        never_stopped: counts,
        tickers_never_stopped: out,
        judged,
    }
}

fn group(
    gs: &GoroutineModel,
    resolver: &mut StackResolver<'_>,
    input: &TimerInput<'_>,
    key: Key,
    (created_at, creation_stack): (Option<Frame>, Vec<Frame>),
    ts: &[(&Timer, Evidence)],
) -> TickerGroup {
    let chans: Vec<u64> = ts.iter().map(|(t, _)| t.chan).filter(|c| *c != 0).collect();
    let mut waiting = Vec::new();
    let mut looping = Vec::new();
    for g in gs.live() {
        if let State::Parked(p) = g.state()
            && p.chans.iter().any(|c| *c != 0 && chans.contains(c))
        {
            waiting.push(g.goid());
            let f = resolver.start_function(g.startpc());
            if !looping.contains(&f) {
                looping.push(f);
            }
        }
    }
    waiting.sort_unstable();
    looping.sort();
    let mut leaked: Vec<u64> = ts
        .iter()
        .flat_map(|(_, e)| e.leaked_holders.iter().copied())
        .collect();
    leaked.sort_unstable();
    leaked.dedup();
    TickerGroup {
        created_at,
        creation_stack,
        count: ts.len(),
        period_s: key.1 as f64 / 1e9,
        age_s: Summary::of(
            ts.iter()
                .map(|(t, _)| input.end_ns.saturating_sub(t.created_ns) as f64 / 1e9)
                .collect(),
        ),
        waiting_goroutines: waiting,
        looping_functions: looping,
        verdict: key.2,
        leaked_holders: leaked,
        runtime_held: ts
            .iter()
            .filter(|(_, e)| e.runtime_holds && e.leaked_holders.is_empty())
            .count(),
    }
}
