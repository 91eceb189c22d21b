//! Where the timer programs (`tracer-ebpf/src/timers.rs`) go.

use tracer_common::Config;

use super::goroutine::{AttachPoint, PlanError, points_for};
use crate::gobin::{GoBinary, layout::RuntimeLayout};
use crate::goruntime::hooks;

/// Timer attach points, or why timers cannot be traced in this binary.
pub fn plan(
    bin: &GoBinary,
    layout: &RuntimeLayout,
) -> Result<Result<Vec<AttachPoint>, String>, PlanError> {
    let new_api = bin.version().at_least(1, 23);
    if !new_api
        && (layout.timer_period.is_none() || layout.timer_arg.is_none() || layout.timer_f.is_none())
    {
        return Ok(Err("runtime.timer not found in DWARF".into()));
    }
    let points = points_for(bin, &hooks::timer_hooks(bin.version()))?;
    if !points.iter().any(|p| p.program != "go_timer_stop") {
        return Ok(Err("no timer start function in this binary".into()));
    }
    Ok(Ok(points))
}

pub fn configure(cfg: &mut Config, layout: &RuntimeLayout) {
    cfg.timer_period = layout.timer_period.unwrap_or(0);
    cfg.timer_f = layout.timer_f.unwrap_or(0);
    cfg.timer_arg = layout.timer_arg.unwrap_or(0);
}
