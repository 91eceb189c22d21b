//! Tickers never stopped (leak pattern 4), with the Go 1.23 caveat.

use std::collections::BTreeMap;

use serde::Serialize;

use super::Summary;
use crate::gobin::symbolize::Frame;
use crate::goruntime::is_user_function;
use crate::model::timers::TimerModel;
use crate::model::{GoroutineModel, State};
use crate::resolve::StackResolver;

#[derive(Clone, Debug, Default, Serialize)]
pub struct TimerReport {
    /// Why timers were not traced, if they were not.
    pub not_traced: Option<String>,
    pub started: u64,
    pub stopped: u64,
    /// Tickers started during the trace, older than the leak threshold and
    /// never stopped, grouped by creation site.
    pub tickers_never_stopped: Vec<TickerGroup>,
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
    /// "leak": a goroutine still loops on ticker.C, or the Go version never
    /// collects an unstopped ticker; "advice": Go 1.23+ collects it once
    /// nothing references it.
    pub verdict: &'static str,
}

pub struct TimerInput {
    pub end_ns: u64,
    pub leak_threshold_s: f64,
    /// Go 1.23+ collects unreferenced tickers.
    pub collects_unreferenced: bool,
}

pub fn build(
    timers: &TimerModel,
    gs: &GoroutineModel,
    resolver: &mut StackResolver<'_>,
    input: &TimerInput,
) -> TimerReport {
    let mut groups: BTreeMap<(String, i64), Vec<&crate::model::timers::Timer>> = BTreeMap::new();
    let mut sites: BTreeMap<(String, i64), (Option<Frame>, Vec<Frame>)> = BTreeMap::new();
    for t in timers.unstopped().filter(|t| t.period_ns > 0) {
        let age = input.end_ns.saturating_sub(t.created_ns) as f64 / 1e9;
        if age < input.leak_threshold_s {
            continue;
        }
        let frames: Vec<Frame> = t
            .stack
            .map(|s| resolver.frames(s))
            .unwrap_or_default()
            .into_iter()
            .skip_while(|f| !is_user_function(&f.function))
            .collect();
        let at = frames.first().cloned();
        let key = (
            at.as_ref()
                .map(|f| format!("{}:{}", f.function, f.line))
                .unwrap_or_default(),
            t.period_ns,
        );
        sites.entry(key.clone()).or_insert((at, frames));
        groups.entry(key).or_default().push(t);
    }
    let mut out = Vec::new();
    for (key, ts) in groups {
        let chans: Vec<u64> = ts.iter().map(|t| t.chan).filter(|c| *c != 0).collect();
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
        let (created_at, creation_stack) = sites.remove(&key).unwrap_or_default();
        let verdict = if !waiting.is_empty() || !input.collects_unreferenced {
            "leak"
        } else {
            "advice"
        };
        out.push(TickerGroup {
            created_at,
            creation_stack,
            count: ts.len(),
            period_s: key.1 as f64 / 1e9,
            age_s: Summary::of(
                ts.iter()
                    .map(|t| input.end_ns.saturating_sub(t.created_ns) as f64 / 1e9)
                    .collect(),
            ),
            waiting_goroutines: waiting,
            looping_functions: looping,
            verdict,
        });
    }
    out.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.created_at.cmp(&b.created_at))
            .then(a.period_s.total_cmp(&b.period_s))
    });
    TimerReport {
        not_traced: None,
        started: timers.stats().started,
        stopped: timers.stats().stopped,
        tickers_never_stopped: out,
    }
}
