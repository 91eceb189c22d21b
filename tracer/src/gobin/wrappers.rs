//! `go f(x)` compiles to a wrapper closure that calls `f`: `caller.gowrapN`
//! (Go 1.22+) or `caller.funcN` (Go ≤ 1.21, the same name scheme as real
//! closures). The goroutine's start pc is the wrapper; a Go developer wants
//! `f`. This finds `f` from the machine code.

use std::collections::HashSet;

use iced_x86::{Decoder, DecoderOptions, FlowControl, Instruction};

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
    if bin.arch() != Arch::X86_64 {
        return None;
    }
    let sym = bin.symbols().containing(addr)?;
    let (gowrap, closure) = (is_gowrap(&sym.name), is_closure(&sym.name));
    if !gowrap && !closure {
        return None;
    }
    let code = bin.code(sym).ok()?;
    let mut decoder = Decoder::with_ip(64, code, sym.addr, DecoderOptions::NONE);
    let mut instr = Instruction::default();
    let mut callees: Vec<String> = Vec::new();
    let mut lines = HashSet::new();
    while decoder.can_decode() {
        decoder.decode_out(&mut instr);
        if instr.is_invalid() {
            break;
        }
        if closure
            && let Some(f) = symbolizer.symbolize(instr.ip(), false).last()
            && f.line != 0
        {
            lines.insert((f.file.clone(), f.line));
        }
        if instr.flow_control() == FlowControl::Call && instr.is_call_near() {
            let target = instr.near_branch_target();
            if let Some(t) = bin.symbols().containing(target)
                && !t.name.starts_with("runtime.")
                && !callees.contains(&t.name)
            {
                callees.push(t.name.clone());
            }
        }
    }
    if callees.len() != 1 || (closure && lines.len() > 1) {
        return None;
    }
    callees.pop()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::gobin::testutil::probe;

    #[test]
    fn wrappers_resolve_to_the_called_function_and_closures_do_not() {
        for minor in ["1.21", "1.26"] {
            let bin = GoBinary::open(&probe(minor)).unwrap();
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
