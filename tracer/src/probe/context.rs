//! Where the context programs (`tracer-ebpf/src/context.rs`) go, and the
//! addresses they compare against (itabs, `context.Canceled`).

use std::collections::HashMap;

use tracer_common::{CONFIG_FLAG_CANCEL_CAUSE, Config};

use super::goroutine::{AttachPoint, PlanError, points_for};
use crate::gobin::{GoBinary, layout::RuntimeLayout};
use crate::goruntime::hooks::{self, PropagateCancelArgs};

/// Context tracing for one binary.
pub struct ContextPlan {
    pub points: Vec<AttachPoint>,
    args: PropagateCancelArgs,
    /// itab address → `T,I` (names the dynamic types of contexts and errors).
    pub itabs: HashMap<u64, String>,
    canceled_var: u64,
    cancel_has_cause: bool,
}

fn itab(itabs: &HashMap<u64, String>, name: &str) -> u64 {
    itabs
        .iter()
        .find(|(_, n)| n.as_str() == name)
        .map(|(a, _)| *a)
        .unwrap_or(0)
}

/// The context plan, or None with the reason (context package not linked,
/// unsupported version, missing DWARF fields).
pub fn plan(
    bin: &GoBinary,
    layout: &RuntimeLayout,
) -> Result<Result<ContextPlan, String>, PlanError> {
    let (hooks, args) = match hooks::context_hooks(bin.version()) {
        Ok(v) => v,
        Err(why) => return Ok(Err(why.to_string())),
    };
    // timerCtx is absent from DWARF when the program never makes one.
    if layout.cancel_ctx_done.is_none() {
        return Ok(Err(
            "the context package is not linked into this binary".into()
        ));
    }
    if layout.source == crate::gobin::layout::LayoutSource::Table
        && bin
            .data_symbols(&["context.Canceled"])
            .map(|m| m.is_empty())
            .unwrap_or(true)
    {
        log::info!(
            "stripped binary: context.Canceled is unknown, cancel errors are identified by type only"
        );
    }
    let mut points = points_for(bin, &hooks)?;
    let done_points = points_for(bin, &hooks::context_done_store_hooks())?;
    if done_points.is_empty() {
        points.extend(points_for(bin, &hooks::context_done_call_hooks())?);
    } else {
        points.extend(done_points);
    }
    if !points.iter().any(|p| p.program == "go_ctx_create") {
        return Ok(Err("no propagateCancel in this binary".into()));
    }
    let itabs = bin.itabs().map_err(|source| PlanError::Symbol {
        symbol: "itabs",
        source,
    })?;
    let canceled_var = bin
        .data_symbols(&["context.Canceled"])
        .map_err(|source| PlanError::Symbol {
            symbol: "context.Canceled",
            source,
        })?
        .get("context.Canceled")
        .copied()
        .unwrap_or(0);
    Ok(Ok(ContextPlan {
        points,
        args,
        itabs,
        canceled_var,
        cancel_has_cause: bin.version().at_least(1, 20),
    }))
}

impl ContextPlan {
    /// Fills the context part of the eBPF `CONFIG`. `bias` is added to
    /// binary addresses (PIE load bias; 0 otherwise).
    pub fn configure(&self, cfg: &mut Config, layout: &RuntimeLayout, bias: u64) {
        let at = |a: u64| if a == 0 { 0 } else { a + bias };
        cfg.pc_parent_reg = self.args.parent;
        cfg.pc_child_reg = self.args.child;
        cfg.ctx_done = layout.cancel_ctx_done.unwrap_or(0);
        cfg.timer_deadline = layout.timer_ctx_deadline.unwrap_or(0);
        cfg.itab_value_ctx = at(itab(&self.itabs, "*context.valueCtx,context.Context"));
        cfg.itab_timer_ctx = at(itab(&self.itabs, "*context.timerCtx,context.canceler"));
        cfg.itab_deadline_exceeded = at(itab(&self.itabs, "context.deadlineExceededError,error"));
        cfg.itab_error_string = at(itab(&self.itabs, "*errors.errorString,error"));
        cfg.itab_wrap_error = at(itab(&self.itabs, "*fmt.wrapError,error"));
        cfg.canceled_var = at(self.canceled_var);
        if self.cancel_has_cause {
            cfg.flags |= CONFIG_FLAG_CANCEL_CAUSE;
        }
    }
}
