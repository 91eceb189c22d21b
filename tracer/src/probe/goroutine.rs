//! Where the goroutine-lifecycle programs (`tracer-ebpf/src/goroutine.rs`) go
//! in a target binary, and the configuration they read.

use tracer_common::{
    CONFIG_FLAG_G_WINDOW, CONFIG_FLAG_PARENT_GOID, CONFIG_FLAG_SUDOG_WINDOW,
    CONFIG_FLAG_WAIT_CHANS, Config, G_WINDOW_MAX, SUDOG_WINDOW_MAX,
};

use crate::gobin::{GoBinary, layout::RuntimeLayout};
use crate::goruntime::hooks::{self, Placement};

/// One concrete uprobe: a program and a file offset in the target binary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachPoint {
    pub program: &'static str,
    pub symbol: &'static str,
    /// Virtual address in the binary.
    pub vaddr: u64,
    /// Offset in the file, what the uprobe PMU wants.
    pub file_offset: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{symbol} not found in the target: {source}")]
    Symbol {
        symbol: &'static str,
        #[source]
        source: crate::gobin::BinaryError,
    },
    #[error("{symbol} has no return instruction to probe")]
    NoReturns { symbol: &'static str },
    #[error("address {vaddr:#x} of {symbol} is not in a loadable segment")]
    NotMapped { symbol: &'static str, vaddr: u64 },
}

/// Every attach point for the goroutine hooks of this binary.
pub fn plan(bin: &GoBinary) -> Result<Vec<AttachPoint>, PlanError> {
    let arm64 = bin.arch() == crate::gobin::Arch::Aarch64;
    points_for(bin, &hooks::goroutine_hooks(bin.version(), arm64))
}

/// Attach points for `hooks`; hooks that are not `required` are skipped when
/// their function is absent from the binary.
pub fn points_for(bin: &GoBinary, hooks: &[hooks::Hook]) -> Result<Vec<AttachPoint>, PlanError> {
    let mut points = Vec::new();
    for hook in hooks {
        if !hook.required && bin.symbols().lookup(hook.symbol).is_none() {
            continue;
        }
        let vaddrs = match hook.placement {
            Placement::Entry | Placement::AfterPrologue => {
                let sym = bin.symbols().lookup(hook.symbol).ok_or(PlanError::Symbol {
                    symbol: hook.symbol,
                    source: crate::gobin::BinaryError::SymbolNotFound(hook.symbol.to_string()),
                })?;
                let after = if hook.placement == Placement::AfterPrologue {
                    bin.prologue_end(hook.symbol)
                        .map_err(|source| PlanError::Symbol {
                            symbol: hook.symbol,
                            source,
                        })?
                } else {
                    None
                };
                vec![after.unwrap_or(sym.addr)]
            }
            Placement::Returns => {
                let rets = bin
                    .ret_addresses(hook.symbol)
                    .map_err(|source| PlanError::Symbol {
                        symbol: hook.symbol,
                        source,
                    })?;
                if rets.is_empty() {
                    if !hook.required {
                        // A tail-calling wrapper: its callee's RETs are probed.
                        continue;
                    }
                    return Err(PlanError::NoReturns {
                        symbol: hook.symbol,
                    });
                }
                rets
            }
            Placement::CallsTo(callee) => {
                if bin.symbols().lookup(callee).is_none() {
                    continue;
                }
                bin.call_sites(hook.symbol, callee)
                    .map_err(|source| PlanError::Symbol {
                        symbol: hook.symbol,
                        source,
                    })?
            }
        };
        for vaddr in vaddrs {
            let file_offset = bin.file_offset(vaddr).ok_or(PlanError::NotMapped {
                symbol: hook.symbol,
                vaddr,
            })?;
            points.push(AttachPoint {
                program: hook.program,
                symbol: hook.symbol,
                vaddr,
                file_offset,
            });
        }
    }
    Ok(points)
}

/// The eBPF `CONFIG` for a target process and its runtime layout.
pub fn config(target_tgid: u32, layout: &RuntimeLayout) -> Config {
    let mut flags = 0;
    if layout.g_parent_goid.is_some() {
        flags |= CONFIG_FLAG_PARENT_GOID;
    }
    if let (Some(_), Some(_), Some(_)) = (layout.g_waiting, layout.sudog_c, layout.sudog_waitlink) {
        flags |= CONFIG_FLAG_WAIT_CHANS;
    }
    let mut g_fields = vec![layout.g_goid, layout.g_gopc, layout.g_startpc];
    g_fields.extend(layout.g_parent_goid);
    g_fields.extend(layout.g_waiting);
    let g_window = window(&g_fields, G_WINDOW_MAX);
    if g_window.is_some() {
        flags |= CONFIG_FLAG_G_WINDOW;
    }
    let sudog_window = match (layout.sudog_c, layout.sudog_waitlink) {
        (Some(c), Some(link)) => window(&[c, link], SUDOG_WINDOW_MAX),
        _ => None,
    };
    if sudog_window.is_some() {
        flags |= CONFIG_FLAG_SUDOG_WINDOW;
    }
    let (g_window_base, g_window_len) = g_window.unwrap_or((0, 0));
    let (sudog_window_base, sudog_window_len) = sudog_window.unwrap_or((0, 0));
    Config {
        target_tgid,
        flags,
        g_window_base,
        g_window_len,
        sudog_window_base,
        sudog_window_len,
        g_goid: layout.g_goid,
        g_parent_goid: layout.g_parent_goid.unwrap_or(0),
        g_gopc: layout.g_gopc,
        g_startpc: layout.g_startpc,
        g_waiting: layout.g_waiting.unwrap_or(0),
        sudog_c: layout.sudog_c.unwrap_or(0),
        sudog_waitlink: layout.sudog_waitlink.unwrap_or(0),
        ..Config::default()
    }
}

/// The span `(base, len)` that covers the 8-byte fields at `offsets` in one
/// read, if it fits in `max` bytes and every field is 8-aligned relative to
/// the base (the eBPF side indexes the copy in words).
fn window(offsets: &[u64], max: u32) -> Option<(u32, u32)> {
    let base = *offsets.iter().min()?;
    let end = offsets.iter().max()? + 8;
    let len = u32::try_from(end - base).ok()?;
    let aligned = offsets.iter().all(|o| (o - base) % 8 == 0);
    (aligned && len <= max).then_some((u32::try_from(base).ok()?, len))
}

#[cfg(test)]
mod tests {
    use super::window;

    #[test]
    fn windows() {
        // Go 1.27's g: goid, parentGoid, gopc, startpc, waiting.
        assert_eq!(window(&[152, 280, 288, 304, 320], 256), Some((152, 176)));
        assert_eq!(window(&[88, 72], 64), Some((72, 24)));
        assert_eq!(window(&[0, 256], 256), None);
        assert_eq!(window(&[0, 12], 256), None);
        assert_eq!(window(&[], 256), None);
    }
}
