//! The one place a [`Report`] is put together from a [`Capture`]: the
//! goroutine groups, the contexts and the timers, and the trace metadata.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;

use super::groups::{self, GroupInput};
use super::{Report, SCHEMA_VERSION, Target, Tool, Trace, contexts, timers};
use crate::capture::Capture;
use crate::gobin::GoBinary;
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
        },
        goroutines: g.counts,
        verdict: g.verdict,
        suspect_count: g.suspect_count,
        leaked_count: proof.map_or(0, |p| p.leaked),
        suspects: g.suspects,
        live: g.live,
        growth: g.growth,
        contexts: context_report(&input, resolver, leak_threshold_s)?,
        timers: timer_report(&input, resolver),
        proof: end.proof.clone(),
    })
}

fn context_report(
    input: &Input<'_>,
    resolver: &mut StackResolver<'_>,
    leak_threshold_s: f64,
) -> anyhow::Result<contexts::ContextReport> {
    let Capture {
        meta, model, end, ..
    } = input.capture;
    if let Some(why) = &meta.contexts_not_traced {
        return Ok(contexts::ContextReport {
            not_traced: Some(why.clone()),
            ..Default::default()
        });
    }
    let itabs = input
        .bin
        .itabs()
        .context("cannot read the binary's itabs")?;
    Ok(contexts::build(
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
    ))
}

fn timer_report(input: &Input<'_>, resolver: &mut StackResolver<'_>) -> timers::TimerReport {
    let Capture {
        meta, model, end, ..
    } = input.capture;
    if let Some(why) = &meta.timers_not_traced {
        return timers::TimerReport {
            not_traced: Some(why.clone()),
            ..Default::default()
        };
    }
    timers::build(
        &model.timers,
        &model.goroutines,
        resolver,
        &timers::TimerInput {
            end_ns: end.end_ns,
            held: end.held.as_ref(),
        },
    )
}
