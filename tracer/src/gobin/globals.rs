//! Where the runtime keeps its list of goroutines: the addresses of
//! `runtime.allglen` and `runtime.allgptr` (the lock-free view of
//! `runtime.allgs`).
//!
//! A binary with DWARF names them directly (`DW_TAG_variable`). A stripped
//! binary has no data symbols at all, so the per-version table records which
//! instructions of a runtime function load them ([`AllgCode`]: the n-th
//! distinct RIP-relative memory operand of the function); the function is
//! found through the pclntab and disassembled. `cargo xtask layouts` derives
//! that record from DWARF, and a test checks it against DWARF on every
//! installed version.

use iced_x86::{Decoder, DecoderOptions};

use super::{Arch, BinaryError, GoBinary};
use crate::goruntime::gstatus::ALLG_READERS;

const ALLGS: &str = "runtime.allgs";

/// Link-time addresses of `runtime.allglen` and `runtime.allgptr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AllgAddrs {
    pub allglen: u64,
    pub allgptr: u64,
}

/// `function` loads `allglen` through its `allglen`-th distinct RIP-relative
/// memory operand and `allgptr` through its `allgptr`-th (amd64).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AllgCode {
    pub function: String,
    pub allglen: usize,
    pub allgptr: usize,
}

/// Distinct RIP-relative memory targets of `function`'s code, in the order
/// they first appear (amd64 only; `what` names the search in the error
/// other architectures get).
pub(crate) fn rip_targets(
    bin: &GoBinary,
    function: &str,
    what: &str,
) -> Result<Vec<u64>, BinaryError> {
    if bin.arch() != Arch::X86_64 {
        return Err(BinaryError::UnsupportedArch(format!(
            "{} (finding {what} without symbols)",
            bin.arch()
        )));
    }
    let sym = bin
        .symbols()
        .lookup(function)
        .ok_or_else(|| BinaryError::SymbolNotFound(function.to_string()))?;
    let code = bin.code(sym)?;
    let mut targets = Vec::new();
    let mut dec = Decoder::with_ip(64, code, sym.addr, DecoderOptions::NONE);
    for instr in dec.iter() {
        if instr.is_ip_rel_memory_operand() {
            let t = instr.ip_rel_memory_address();
            if !targets.contains(&t) {
                targets.push(t);
            }
        }
    }
    Ok(targets)
}

/// Which function's code loads `addrs`, and through which operands (for the
/// table; `addrs` come from DWARF). None when no known reader does.
pub fn locate_code(bin: &GoBinary, addrs: &AllgAddrs) -> Option<AllgCode> {
    ALLG_READERS.iter().find_map(|function| {
        let targets = rip_targets(bin, function, ALLGS).ok()?;
        let at = |a: u64| targets.iter().position(|t| *t == a);
        Some(AllgCode {
            function: function.to_string(),
            allglen: at(addrs.allglen)?,
            allgptr: at(addrs.allgptr)?,
        })
    })
}

/// The addresses, read off the code as `code` says.
pub fn from_code(bin: &GoBinary, code: &AllgCode) -> Result<AllgAddrs, BinaryError> {
    let targets = rip_targets(bin, &code.function, ALLGS)?;
    let get = |i: usize| {
        targets.get(i).copied().ok_or_else(|| {
            BinaryError::SymbolNotFound(format!(
                "runtime.allgs (operand {i} of {}: it has {})",
                code.function,
                targets.len()
            ))
        })
    };
    Ok(AllgAddrs {
        allglen: get(code.allglen)?,
        allgptr: get(code.allgptr)?,
    })
}
