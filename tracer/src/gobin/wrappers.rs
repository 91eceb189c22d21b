//! `go f(x)` compiles to a wrapper closure that calls `f`: `caller.gowrapN`
//! (Go 1.22+) or `caller.funcN` (Go ≤ 1.21, the same name scheme as real
//! closures). The goroutine's start pc is the wrapper; a Go developer wants
//! `f`. This finds `f` from the machine code (amd64 and arm64).

use std::collections::HashSet;

use iced_x86::{Decoder, DecoderOptions, FlowControl, Instruction};

use super::rets::aarch64_bl_target;
use super::symbolize::Symbolizer;
use super::{Arch, GoBinary};

fn is_gowrap(name: &str) -> bool {
    name.rsplit('.').next().is_some_and(|last| {
        last.strip_prefix("gowrap")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    })
}

fn is_closure(name: &str) -> bool {
    name.rsplit('.').next().is_some_and(|last| {
        last.strip_prefix("func")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// The function a `go` statement wrapper at `addr` calls, or None when `addr`
/// is not such a wrapper. `gowrapN` is always one; a `funcN` counts as one
/// only when all its code sits on a single source line (the `go` statement),
/// which a real closure body does not.
pub fn go_wrapper_callee(bin: &GoBinary, symbolizer: &Symbolizer, addr: u64) -> Option<String> {
    let sym = bin.symbols().containing(addr)?;
    let (gowrap, closure) = (is_gowrap(&sym.name), is_closure(&sym.name));
    if !gowrap && !closure {
        return None;
    }
    let code = bin.code(sym).ok()?;
    let mut callees: Vec<String> = Vec::new();
    let mut lines = HashSet::new();
    for (pc, call) in instructions(bin.arch(), sym.addr, code) {
        if closure
            && let Some(f) = symbolizer.symbolize(pc, false).last()
            && f.line != 0
        {
            lines.insert((f.file.clone(), f.line));
        }
        if let Some(target) = call
            && let Some(t) = bin.symbols().containing(target)
            && !t.name.starts_with("runtime.")
            && !callees.contains(&t.name)
        {
            callees.push(t.name.clone());
        }
    }
    if callees.len() != 1 || (closure && lines.len() > 1) {
        return None;
    }
    callees.pop()
}

/// Each instruction's address in `code` (a function's body at `addr`), with
/// the target of a direct call if it is one.
fn instructions(arch: Arch, addr: u64, code: &[u8]) -> Vec<(u64, Option<u64>)> {
    match arch {
        Arch::X86_64 => {
            let mut decoder = Decoder::with_ip(64, code, addr, DecoderOptions::NONE);
            let mut instr = Instruction::default();
            let mut out = Vec::new();
            while decoder.can_decode() {
                decoder.decode_out(&mut instr);
                if instr.is_invalid() {
                    break;
                }
                let call = (instr.flow_control() == FlowControl::Call && instr.is_call_near())
                    .then(|| instr.near_branch_target());
                out.push((instr.ip(), call));
            }
            out
        }
        Arch::Aarch64 => code
            .chunks_exact(4)
            .enumerate()
            .map_while(|(i, w)| {
                let pc = addr.checked_add(4 * i as u64)?;
                let word = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
                Some((pc, aarch64_bl_target(pc, word)))
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::gobin::testutil::{BuildOpts, build_testdata};

    #[test]
    fn wrappers_resolve_to_the_called_function_and_closures_do_not() {
        let arm64 = BuildOpts {
            args: &[],
            env: &[("GOARCH", "arm64"), ("CGO_ENABLED", "0")],
        };
        for (minor, opts) in [
            ("1.21", BuildOpts::default()),
            ("1.26", BuildOpts::default()),
            ("1.21", arm64),
            ("1.26", arm64),
        ] {
            let path = build_testdata("probe", minor, opts).unwrap_or_else(|e| panic!("{e}"));
            let bin = GoBinary::open(&path).unwrap();
            let minor = format!("{minor} {}", bin.arch());
            let sym = bin.symbolizer().unwrap();
            let mut callees = Vec::new();
            let mut closures = 0;
            for f in bin
                .symbols()
                .iter()
                .filter(|f| f.name.starts_with("main.main."))
            {
                match go_wrapper_callee(&bin, &sym, f.addr) {
                    Some(c) => callees.push(c),
                    None => closures += 1,
                }
            }
            callees.sort();
            assert_eq!(
                callees,
                ["main.receiveForever", "main.worker"],
                "Go {minor}"
            );
            assert_eq!(
                closures, 1,
                "Go {minor}: the multi-line closure stays itself"
            );
            // Not a wrapper at all.
            let leaf = bin.symbols().lookup("main.leaf").unwrap();
            assert_eq!(go_wrapper_callee(&bin, &sym, leaf.addr), None);
        }
    }

    #[test]
    fn names() {
        assert!(is_gowrap("main.startReceivers.gowrap1"));
        assert!(!is_gowrap("main.gowrapper"));
        assert!(is_closure("main.serve.func12"));
        assert!(!is_closure("main.function"));
    }
}
