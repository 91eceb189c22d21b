//! Finding return and call instructions in machine code.
//!
//! Returns: for uretprobe-free return tracing (Go moves stacks, so
//! uretprobes are unsafe; instead a uprobe is put on every `RET` of a
//! function). Calls: a uprobe on a `CALL f` instruction sees `f`'s arguments
//! in the Go ABI registers, without probing `f` itself on every other path.

use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic};

use super::Arch;

/// Virtual addresses of every return instruction in `code`, which is the
/// body of a function starting at virtual address `func_addr`.
pub fn ret_addresses(arch: Arch, func_addr: u64, code: &[u8]) -> Vec<u64> {
    match arch {
        Arch::X86_64 => x86_64_rets(func_addr, code),
        Arch::Aarch64 => aarch64_rets(func_addr, code),
    }
}

/// Linear-sweep decode; Go pads between functions with INT3, not data, so
/// the sweep stays in sync with the instruction stream.
fn x86_64_rets(func_addr: u64, code: &[u8]) -> Vec<u64> {
    let mut decoder = Decoder::with_ip(64, code, func_addr, DecoderOptions::NONE);
    let mut instr = Instruction::default();
    let mut rets = Vec::new();
    while decoder.can_decode() {
        decoder.decode_out(&mut instr);
        // Mnemonic::Ret covers both `RET` and `RET imm16` (near returns).
        if instr.mnemonic() == Mnemonic::Ret {
            rets.push(instr.ip());
        }
    }
    rets
}

/// `RET {Xn}`: 1101011 0 0 10 11111 000000 Rn 00000.
const A64_RET_MASK: u32 = 0xffff_fc1f;
const A64_RET: u32 = 0xd65f_0000;

fn aarch64_rets(func_addr: u64, code: &[u8]) -> Vec<u64> {
    code.chunks_exact(4)
        .enumerate()
        .filter(|(_, w)| {
            let word = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
            word & A64_RET_MASK == A64_RET
        })
        // A function placed at the end of the address space by a corrupt
        // file: no address past it.
        .map_while(|(i, _)| func_addr.checked_add(4 * i as u64))
        .collect()
}

/// The address of the instruction after a Go amd64 function's prologue:
/// the stack-bound check (`CMP SP|R12, 16(R14)`, with `LEA -n(SP), R12`
/// for big frames), its conditional jump to `morestack`, `PUSH BP` and
/// `MOV SP, BP`. None for anything else (other architectures, frameless or
/// unusual functions): no instruction before the probe may write an
/// argument register.
pub fn prologue_end(arch: Arch, func_addr: u64, code: &[u8]) -> Option<u64> {
    use iced_x86::{OpKind, Register};
    if arch != Arch::X86_64 {
        return None;
    }
    let mut decoder = Decoder::with_ip(64, code, func_addr, DecoderOptions::NONE);
    let mut instr = Instruction::default();
    let mut pushed = false;
    for _ in 0..6 {
        if !decoder.can_decode() {
            return None;
        }
        decoder.decode_out(&mut instr);
        let reg0 = || (instr.op0_kind() == OpKind::Register).then(|| instr.op0_register());
        match instr.mnemonic() {
            Mnemonic::Cmp if !pushed => {}
            Mnemonic::Lea if !pushed && reg0() == Some(Register::R12) => {}
            Mnemonic::Jbe | Mnemonic::Jb if !pushed => {}
            Mnemonic::Push if !pushed && reg0() == Some(Register::RBP) => pushed = true,
            Mnemonic::Mov
                if pushed
                    && reg0() == Some(Register::RBP)
                    && instr.op1_kind() == OpKind::Register
                    && instr.op1_register() == Register::RSP =>
            {
                return Some(instr.next_ip());
            }
            _ => return None,
        }
    }
    None
}

/// Virtual addresses of every direct call to `target` in `code` (the body of
/// a function starting at `func_addr`).
pub fn call_sites(arch: Arch, func_addr: u64, code: &[u8], target: u64) -> Vec<u64> {
    match arch {
        Arch::X86_64 => {
            let mut decoder = Decoder::with_ip(64, code, func_addr, DecoderOptions::NONE);
            let mut instr = Instruction::default();
            let mut calls = Vec::new();
            while decoder.can_decode() {
                decoder.decode_out(&mut instr);
                if instr.mnemonic() == Mnemonic::Call
                    && instr.is_call_near()
                    && instr.near_branch_target() == target
                {
                    calls.push(instr.ip());
                }
            }
            calls
        }
        Arch::Aarch64 => code
            .chunks_exact(4)
            .enumerate()
            .map_while(|(i, w)| {
                let pc = func_addr.checked_add(4 * i as u64)?;
                Some((pc, u32::from_le_bytes([w[0], w[1], w[2], w[3]])))
            })
            .filter(|&(pc, word)| aarch64_bl_target(pc, word) == Some(target))
            .map(|(pc, _)| pc)
            .collect(),
    }
}

/// The target of the arm64 instruction `word` at `pc` if it is a direct
/// call: `BL imm26` (100101 imm26), target = pc + sext(imm26) * 4.
pub fn aarch64_bl_target(pc: u64, word: u32) -> Option<u64> {
    if word & 0xfc00_0000 != 0x9400_0000 {
        return None;
    }
    let imm = (((word & 0x03ff_ffff) << 6) as i32 >> 6) as i64 * 4;
    pc.checked_add_signed(imm)
}

/// True if the instruction at the start of `code` is a return instruction.
pub fn is_ret(arch: Arch, code: &[u8]) -> bool {
    match arch {
        Arch::X86_64 => {
            let mut decoder = Decoder::with_ip(64, code, 0, DecoderOptions::NONE);
            decoder.can_decode() && decoder.decode().mnemonic() == Mnemonic::Ret
        }
        Arch::Aarch64 => aarch64_rets(0, code.get(..4).unwrap_or(&[])) == [0],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x86_64_synthetic() {
        // push rbp; mov rbp,rsp; ret; mov eax,0xc3c3c3c3; ret 8; int3
        let code = [
            0x55, 0x48, 0x89, 0xe5, 0xc3, 0xb8, 0xc3, 0xc3, 0xc3, 0xc3, 0xc2, 0x08, 0x00, 0xcc,
        ];
        assert_eq!(
            ret_addresses(Arch::X86_64, 0x1000, &code),
            vec![0x1004, 0x100a]
        );
        assert!(is_ret(Arch::X86_64, &code[4..]));
        assert!(is_ret(Arch::X86_64, &code[10..]));
        assert!(!is_ret(Arch::X86_64, &code[5..]));
    }

    #[test]
    fn prologues() {
        // cmp 0x10(%r14),%rsp; jbe +0x10; push %rbp; mov %rsp,%rbp; sub $0x10,%rsp
        let code = [
            0x49, 0x3b, 0x66, 0x10, 0x76, 0x10, 0x55, 0x48, 0x89, 0xe5, 0x48, 0x83, 0xec, 0x10,
        ];
        assert_eq!(prologue_end(Arch::X86_64, 0x1000, &code), Some(0x100a));
        // big frame: lea -0x80(%rsp),%r12; cmp 0x10(%r14),%r12; jbe; push; mov
        let big = [
            0x4c, 0x8d, 0x64, 0x24, 0x80, 0x4d, 0x3b, 0x66, 0x10, 0x76, 0x10, 0x55, 0x48, 0x89,
            0xe5,
        ];
        assert_eq!(prologue_end(Arch::X86_64, 0x1000, &big), Some(0x100f));
        // an argument register written first: no.
        let writes_rax = [0x48, 0x31, 0xc0, 0x55, 0x48, 0x89, 0xe5];
        assert_eq!(prologue_end(Arch::X86_64, 0x1000, &writes_rax), None);
        // frameless.
        assert_eq!(prologue_end(Arch::X86_64, 0x1000, &[0xc3]), None);
        assert_eq!(prologue_end(Arch::Aarch64, 0x1000, &code), None);
    }

    #[test]
    fn call_sites_by_target() {
        // call +0 (to 0x1005); nop; call -6 (to 0x1000); call rel to 0x2000
        let mut code = vec![0xe8, 0, 0, 0, 0, 0x90, 0xe8, 0xf5, 0xff, 0xff, 0xff];
        let rel = (0x2000i64 - 0x1010) as i32;
        code.push(0xe8);
        code.extend_from_slice(&rel.to_le_bytes());
        assert_eq!(
            call_sites(Arch::X86_64, 0x1000, &code, 0x1005),
            vec![0x1000]
        );
        assert_eq!(
            call_sites(Arch::X86_64, 0x1000, &code, 0x1000),
            vec![0x1006]
        );
        assert_eq!(
            call_sites(Arch::X86_64, 0x1000, &code, 0x2000),
            vec![0x100b]
        );
        assert!(call_sites(Arch::X86_64, 0x1000, &code, 0x3000).is_empty());
        let words: [u32; 4] = [
            0x94000002, // bl +8
            0xd503201f, // nop
            0x97fffffe, // bl -8
            0x14000002, // b +8 (not a call)
        ];
        let code: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        assert_eq!(
            call_sites(Arch::Aarch64, 0x4000, &code, 0x4008),
            vec![0x4000]
        );
        assert_eq!(
            call_sites(Arch::Aarch64, 0x4000, &code, 0x4000),
            vec![0x4008]
        );
        assert!(call_sites(Arch::Aarch64, 0x4000, &code, 0x4014).is_empty());
    }

    #[test]
    fn aarch64_synthetic() {
        let words: [u32; 5] = [
            0xa9bf7bfd, // stp x29, x30, [sp, #-16]!
            0xd65f03c0, // ret
            0xd65f0220, // ret x17
            0xd61f0220, // br x17 (not a return)
            0xd63f0220, // blr x17
        ];
        let code: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        assert_eq!(
            ret_addresses(Arch::Aarch64, 0x4000, &code),
            vec![0x4004, 0x4008]
        );
        assert!(is_ret(Arch::Aarch64, &code[4..]));
        assert!(!is_ret(Arch::Aarch64, &code[12..]));
        assert_eq!(
            ret_addresses(Arch::Aarch64, u64::MAX - 7, &code),
            vec![u64::MAX - 3]
        );
        assert_eq!(
            ret_addresses(Arch::X86_64, u64::MAX - 1, &[0xc3, 0xc3, 0xc3]).len(),
            3
        );
    }
}
