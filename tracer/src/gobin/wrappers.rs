//! `go f(x)` compiles to a wrapper closure that calls `f` with the captured
//! arguments: `caller.gowrapN` (Go 1.22+), `caller.funcN` or, nested in
//! another closure, `caller.funcN.M` (Go ≤ 1.21, the same name scheme as real
//! closures). The goroutine's start pc is the wrapper; a Go developer wants
//! `f`. This finds `f` from the machine code (amd64 and arm64), so it does
//! not depend on how a version names the wrapper.

use iced_x86::{Decoder, DecoderOptions, FlowControl, Instruction};

use super::rets::aarch64_bl_target;
use super::symbolize::Symbolizer;
use super::{Arch, GoBinary};
use crate::goruntime::package_of;

fn digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// `gowrapN`: Go 1.22+ gives this name to `go` statement wrappers only.
fn is_gowrap(name: &str) -> bool {
    name.rsplit_once('.')
        .and_then(|(_, last)| last.strip_prefix("gowrap"))
        .is_some_and(digits)
}

/// A compiler-made function literal: the last dotted part is `gowrapN`,
/// `funcN` or, for a closure nested in a closure on Go ≤ 1.21, just `N`.
/// Only these can be `go` statement wrappers; a named function never is.
fn is_function_literal(name: &str) -> bool {
    let Some((outer, last)) = name.rsplit_once('.') else {
        return false;
    };
    is_gowrap(name)
        || last.strip_prefix("func").is_some_and(digits)
        || (digits(last)
            && outer
                .rsplit('.')
                .next()
                .is_some_and(|p| p.starts_with("func")))
}

/// Calls a wrapper may make besides its one callee: stack growth and the
/// block copies the compiler uses to move large arguments.
fn is_plumbing(name: &str) -> bool {
    let name = name.trim_end_matches(".abi0");
    name.starts_with("runtime.morestack") || matches!(name, "runtime.duffcopy" | "runtime.duffzero")
}

/// The function a `go` statement wrapper at `addr` calls, or None when `addr`
/// is not such a wrapper.
///
/// A wrapper is a function literal whose own code (outside what was inlined
/// into it) makes no indirect call, sits on one source line (the `go`
/// statement; not checked for `gowrapN`, which only wrappers are called),
/// and calls exactly one function besides stack-growth plumbing —
/// either a real CALL or a call the compiler inlined (Go 1.22+ inlines small
/// callees into `gowrapN`). A real closure fails one of these: its body spans
/// lines, or it calls a second function (e.g. `runtime.makechan` for
/// `go func() { f(make(chan int)) }()`). A one-line literal that only
/// forwards to one function is indistinguishable from a wrapper and is
/// treated as one, which names the same function a reader would.
pub fn go_wrapper_callee(bin: &GoBinary, symbolizer: &Symbolizer, addr: u64) -> Option<String> {
    let sym = bin.symbols().containing(addr)?;
    if !is_function_literal(&sym.name) {
        return None;
    }
    let one_line = !is_gowrap(&sym.name);
    let code = bin.code(sym).ok()?;
    let mut callee: Option<String> = None;
    let mut line: Option<(Option<String>, u32)> = None;
    for (pc, flow) in instructions(bin.arch(), sym.addr, code) {
        let frames = symbolizer.symbolize(pc, false);
        let own = frames.last()?;
        if one_line && own.line != 0 {
            let here = (own.file.clone(), own.line);
            if line.get_or_insert_with(|| here.clone()) != &here {
                return None;
            }
        }
        let called = if frames.len() >= 2 {
            // Code inlined into the wrapper: the frame just inside the
            // wrapper is the function the `go` statement named; its own
            // calls are its business.
            Some(frames[frames.len() - 2].function.clone())
        } else {
            match flow {
                Flow::IndirectCall => return None,
                Flow::Call(target) => {
                    let target = bin.symbols().containing(target)?;
                    (!is_plumbing(&target.name)).then(|| target.name.clone())
                }
                Flow::Other => None,
            }
        };
        if let Some(c) = called
            && callee.get_or_insert_with(|| c.clone()) != &c
        {
            return None;
        }
    }
    let callee = callee?;
    // `go runtime.GC()` in program code runs a program goroutine (Go's
    // isSystemGoroutine judges by the wrapper): naming it runtime.GC would
    // file it with the runtime's own, so it keeps the wrapper's name.
    if package_of(&callee) == "runtime" && package_of(&sym.name) != "runtime" {
        return None;
    }
    Some(callee)
}

/// What an instruction does to control flow, as far as finding a wrapper's
/// callee goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    /// A direct call to this address.
    Call(u64),
    /// A call through a register or memory.
    IndirectCall,
    Other,
}

/// Each instruction's address in `code` (a function's body at `addr`) and
/// its [`Flow`]; decoding stops at the first invalid instruction.
fn instructions(arch: Arch, addr: u64, code: &[u8]) -> Vec<(u64, Flow)> {
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
                let flow = match instr.flow_control() {
                    FlowControl::IndirectCall => Flow::IndirectCall,
                    FlowControl::Call if instr.is_call_near() => {
                        Flow::Call(instr.near_branch_target())
                    }
                    _ => Flow::Other,
                };
                out.push((instr.ip(), flow));
            }
            out
        }
        Arch::Aarch64 => code
            .chunks_exact(4)
            .enumerate()
            .map_while(|(i, w)| {
                let pc = addr.checked_add(4 * i as u64)?;
                let word = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
                Some((pc, aarch64_flow(pc, word)))
            })
            .collect(),
    }
}

/// `BL imm26` is a direct call; `BLR Xn` (1101011 0001 11111 000000 Rn
/// 00000) an indirect one.
fn aarch64_flow(pc: u64, word: u32) -> Flow {
    if let Some(target) = aarch64_bl_target(pc, word) {
        Flow::Call(target)
    } else if word & 0xffff_fc1f == 0xd63f_0000 {
        Flow::IndirectCall
    } else {
        Flow::Other
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
        assert!(is_function_literal("main.startReceivers.gowrap1"));
        assert!(is_function_literal("main.serve.func12"));
        assert!(is_function_literal("main.plantLeaks.func2.2"));
        assert!(is_function_literal("main.(*server).run.func1.3"));
        assert!(!is_function_literal("main.gowrapper"));
        assert!(!is_function_literal("main.function"));
        assert!(!is_function_literal("main.v2"));
        assert!(!is_function_literal("gowrap1"));
        assert!(is_plumbing("runtime.morestack.abi0"));
        assert!(is_plumbing("runtime.morestack_noctxt.abi0"));
        assert!(!is_plumbing("runtime.makechan"));
    }

    #[test]
    fn aarch64_calls() {
        // bl +8; blr x1; ret; nop
        let pc = 0x1000;
        assert_eq!(aarch64_flow(pc, 0x9400_0002), Flow::Call(0x1008));
        assert_eq!(aarch64_flow(pc, 0xd63f_0020), Flow::IndirectCall);
        assert_eq!(aarch64_flow(pc, 0xd65f_03c0), Flow::Other);
        assert_eq!(aarch64_flow(pc, 0xd503_201f), Flow::Other);
    }
}
