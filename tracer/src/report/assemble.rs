//! The one place a [`Report`] is put together from a [`Capture`]: the
//! goroutine groups, the contexts and the timers, and the trace metadata.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;

use super::groups::{self, GroupInput};
use super::{
    AtExitReport, ExitCount, Report, SCHEMA_VERSION, Target, Tool, Trace, contexts, timers,
};
use crate::capture::{AtExit, Capture};
use crate::gobin::GoBinary;
use crate::goruntime::gstatus::GState;
use crate::goruntime::{is_system_function, wait_reason};
use crate::resolve::StackResolver;

pub struct Input<'a> {
    pub capture: &'a Capture,
    /// The traced binary (its itabs name context types).
    pub bin: &'a GoBinary,
    /// Wait-reason value → runtime constant name (from DWARF).
    pub wait_reasons: &'a BTreeMap<u8, String>,
    pub leak_threshold: Duration,
}

pub fn assemble(input: Input<'_>, resolver: &mut StackResolver<'_>) -> anyhow::Result<Report> {
    let Capture {
        meta, model, end, ..
    } = input.capture;
    let proof = end.proof.as_ref().filter(|p| p.done());
    let proven: Option<std::collections::HashSet<u64>> = proof.map(|p| p.leaked_goids().collect());
    let g = groups::build(GroupInput {
        model: &model.goroutines,
        resolver,
        wait_reasons: input.wait_reasons,
        start_ns: end.start_ns,
        end_ns: end.end_ns,
        state_ns: end.state_ns.unwrap_or(end.end_ns),
        leak_threshold: input.leak_threshold,
        proven: proven.as_ref(),
    });
    let stats = model.goroutines.stats();
    let leak_threshold_s = input.leak_threshold.as_secs_f64();
    Ok(Report {
        schema_version: SCHEMA_VERSION,
        tool: Tool {
            name: "gotrace",
            version: env!("CARGO_PKG_VERSION"),
        },
        target: Target {
            pid: meta.pid,
            exe: meta.exe.clone(),
            go_version: meta.go_version.clone(),
            arch: meta.arch.clone(),
            exit: end.exit.clone(),
        },
        trace: Trace {
            mode: meta.mode.name(),
            duration_s: (end.end_ns.saturating_sub(end.start_ns) as f64 / 1e9).max(1e-9),
            ended_by: end.ended_by.clone(),
            leak_threshold_s,
            probes_attached: meta.probes_attached,
            events_received: end.events,
            events_undecodable: end.undecodable,
            kernel: end.kernel.clone(),
            duplicates_ignored: stats.duplicates,
            inconsistent_events: stats.inconsistent,
            snapshot: meta.snapshot.clone(),
            at_exit: end
                .at_exit
                .as_ref()
                .map(|a| at_exit_report(a, resolver, input.wait_reasons)),
            samples: end.samples.clone(),
            budget: end.budget.clone(),
        },
        goroutines: g.counts,
        verdict: g.verdict,
        suspect_count: g.suspect_count,
        // The proven leaks among the goroutines the report shows (the
        // proof may see goroutines created after the trace ended).
        leaked_count: proof.map_or(0, |_| {
            g.suspects
                .iter()
                .chain(&g.live)
                .map(|grp| grp.proven_leaked as u64)
                .sum()
        }),
        suspects: g.suspects,
        live: g.live,
        growth: g.growth,
        contexts: context_report(&input, resolver, leak_threshold_s)?,
        timers: timer_report(&input, resolver),
        proof: end.proof.clone(),
    })
}

/// The goroutines read at exit, counted by (start function, state, wait
/// reason); the runtime's own are left out.
fn at_exit_report(
    a: &AtExit,
    resolver: &mut StackResolver<'_>,
    wait_reasons: &BTreeMap<u8, String>,
) -> AtExitReport {
    let mut counts: BTreeMap<(String, GState, Option<String>), usize> = BTreeMap::new();
    for g in &a.analysis.goroutines {
        let start_function = resolver.start_function(g.startpc);
        if is_system_function(&start_function) {
            continue;
        }
        let reason = g.wait_reason.map(|r| wait_reason::text(wait_reasons, r));
        *counts.entry((start_function, g.state, reason)).or_default() += 1;
    }
    let mut goroutines: Vec<ExitCount> = counts
        .into_iter()
        .map(|((start_function, state, wait_reason), count)| ExitCount {
            start_function,
            state,
            wait_reason,
            count,
        })
        .collect();
    goroutines.sort_by_key(|c| std::cmp::Reverse(c.count));
    AtExitReport {
        tid: a.tid,
        held_ms: a.held_ms,
        timed_out: a.timed_out,
        snapshot: a.analysis.snapshot.clone(),
        goroutines,
    }
}

fn context_report(
    input: &Input<'_>,
    resolver: &mut StackResolver<'_>,
    leak_threshold_s: f64,
) -> anyhow::Result<contexts::ContextReport> {
    let Capture {
        meta, model, end, ..
    } = input.capture;
    if let Some(why) = meta
        .contexts_not_traced
        .clone()
        .or_else(|| shed(end, "contexts"))
    {
        return Ok(contexts::ContextReport {
            not_traced: Some(why),
            from_memory: end.ctx_memory.clone(),
            ..Default::default()
        });
    }
    let itabs = input
        .bin
        .itabs()
        .context("cannot read the binary's itabs")?;
    let mut report = contexts::build(
        &model.contexts,
        &model.goroutines,
        resolver,
        &contexts::ContextInput {
            itabs: &itabs,
            end_ns: end.end_ns,
            end_unix_ns: end.end_unix_ns as i128,
            leak_threshold_s,
            held: end.held.as_ref(),
        },
    );
    report.from_memory = end.ctx_memory.clone();
    Ok(report)
}

fn timer_report(input: &Input<'_>, resolver: &mut StackResolver<'_>) -> timers::TimerReport {
    let Capture {
        meta, model, end, ..
    } = input.capture;
    if let Some(why) = meta
        .timers_not_traced
        .clone()
        .or_else(|| shed(end, "timers"))
    {
        return timers::TimerReport {
            not_traced: Some(why),
            from_memory: end.timer_memory.clone(),
            ..Default::default()
        };
    }
    let mut report = timers::build(
        &model.timers,
        &model.goroutines,
        resolver,
        &timers::TimerInput {
            end_ns: end.end_ns,
            held: end.held.as_ref(),
        },
    );
    report.from_memory = end.timer_memory.clone();
    report
}

/// Why the `probes` group ("contexts", "timers") has no findings when the
/// overhead budget detached it: what it saw before is a part, and a part
/// would show contexts never cancelled that were, tickers never stopped
/// that were.
fn shed(end: &crate::capture::End, probes: &str) -> Option<String> {
    let budget = end.budget.as_ref()?;
    let s = budget.shed.iter().find(|s| s.probes == probes)?;
    Some(format!(
        "its probes were detached {:.2}s into the trace, over the {}% overhead budget (they cost ≈ {:.1}% of the target's CPU); --full traces them whatever the cost",
        s.at_s,
        budget.max_overhead_pct.unwrap_or(0.0),
        s.cost_pct
    ))
}
