//! Where the goroutine-lifecycle programs (`tracer-ebpf/src/goroutine.rs`) go
//! in a target binary, and the configuration they read.

use tracer_common::{CONFIG_FLAG_PARENT_GOID, Config};

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
    let mut points = Vec::new();
    for hook in hooks::goroutine_hooks(bin.version()) {
        let vaddrs = match hook.placement {
            Placement::Entry => {
                let sym = bin.symbols().lookup(hook.symbol).ok_or(PlanError::Symbol {
                    symbol: hook.symbol,
                    source: crate::gobin::BinaryError::SymbolNotFound(hook.symbol.to_string()),
                })?;
                vec![sym.addr]
            }
            Placement::Returns => {
                let rets = bin
                    .ret_addresses(hook.symbol)
                    .map_err(|source| PlanError::Symbol {
                        symbol: hook.symbol,
                        source,
                    })?;
                if rets.is_empty() {
                    return Err(PlanError::NoReturns {
                        symbol: hook.symbol,
                    });
                }
                rets
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
    Config {
        target_tgid,
        flags,
        g_goid: layout.g_goid,
        g_parent_goid: layout.g_parent_goid.unwrap_or(0),
        g_gopc: layout.g_gopc,
        g_startpc: layout.g_startpc,
    }
}
