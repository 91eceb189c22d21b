//! Userspace half of the probes: load the embedded eBPF object with the
//! target's configuration, attach uprobes, and expose the maps.

pub mod budget;
pub mod compat;
pub mod context;
pub mod counters;
pub mod goroutine;
pub mod loader;
pub mod timers;

pub use loader::{
    AttachOptions, ProbeError, Probes, ProgramCheck, ProgramStats, load_every_program,
};

use crate::gobin::GoBinary;
use crate::gobin::layout::RuntimeLayout;

/// Every point gotrace attaches to in one binary, and the context and timer
/// plans (or why those are not traced).
pub struct Plan {
    pub points: Vec<goroutine::AttachPoint>,
    pub contexts: Result<context::ContextPlan, String>,
    pub timers: Result<Vec<goroutine::AttachPoint>, String>,
}

/// Plans the probes for `bin`. `pie_under_command`: a PIE started by gotrace,
/// whose context probes cannot be configured (no load address before exec).
pub fn plan(
    bin: &GoBinary,
    layout: &RuntimeLayout,
    shown: &str,
    pie_under_command: bool,
) -> anyhow::Result<Plan> {
    use anyhow::Context as _;
    let mut points =
        goroutine::plan(bin).with_context(|| format!("cannot place probes in {shown}"))?;
    let contexts = match context::plan(bin, layout)
        .with_context(|| format!("cannot place context probes in {shown}"))?
    {
        // The context probes compare against absolute addresses.
        Ok(_) if pie_under_command => {
            Err("contexts of PIE binaries can only be traced with --pid".to_string())
        }
        other => other,
    };
    if let Ok(p) = &contexts {
        points.extend(p.points.iter().cloned());
    }
    let timers = timers::plan(bin, layout)
        .with_context(|| format!("cannot place timer probes in {shown}"))?;
    if let Ok(p) = &timers {
        points.extend(p.iter().cloned());
    }
    Ok(Plan {
        points,
        contexts,
        timers,
    })
}
