//! Go's internal ABI (ABIInternal) as seen from a uprobe's `pt_regs`.
//!
//! Go does not use the C calling convention: aya's `ctx.arg(n)` would read the
//! wrong registers. amd64: args in RAX, RBX, RCX, RDI, RSI, R8–R11, current g
//! in R14 (valid at ABIInternal function entry). arm64: args in R0–R15, g in
//! R28, link register R30.

use aya_ebpf::{
    bindings::pt_regs, helpers::bpf_probe_read_kernel_buf, macros::map, maps::PerCpuArray,
    programs::ProbeContext,
};

use crate::probe::Probe;

/// Scratch space for a copy of the registers (arm64's are too large for the
/// 512-byte BPF stack).
#[map]
static REGS_SCRATCH: PerCpuArray<pt_regs> = PerCpuArray::with_max_entries(1, 0);

/// Integer argument `n` (0-based) at function entry, or the first result at a
/// RET instruction (results reuse the argument registers). `n` must be a
/// constant: inlined, the match folds to one fixed-offset load from the
/// context (a run-time index needs [`regs_copy`] + [`arg_in`]).
#[inline(always)]
pub fn arg(ctx: &ProbeContext, n: u32) -> u64 {
    // SAFETY: `regs` is the program's context pointer; the verifier allows
    // direct fixed-offset loads from it.
    arg_in(unsafe { &*ctx.regs }, n)
}

/// The probe's registers copied to a per-CPU map, for arguments whose
/// register index is only known at run time (the verifier forbids computed
/// offsets into the context itself).
#[inline(always)]
pub fn regs_copy(ctx: &ProbeContext) -> Option<&'static pt_regs> {
    let slot = REGS_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: the per-CPU slot is ours for the duration of this program;
    // ctx.regs is a valid kernel pointer to the probe's pt_regs.
    let buf = unsafe { core::slice::from_raw_parts_mut(slot.cast::<u8>(), size_of::<pt_regs>()) };
    unsafe { bpf_probe_read_kernel_buf(ctx.regs as *const u8, buf) }.ok()?;
    // SAFETY: fully initialised by the read above.
    Some(unsafe { &*slot })
}

/// Integer argument `n` from a stack copy of the registers (see [`arg`]).
#[inline(always)]
pub fn arg_in(regs: &pt_regs, n: u32) -> u64 {
    #[cfg(bpf_target_arch = "x86_64")]
    {
        match n {
            0 => regs.rax,
            1 => regs.rbx,
            2 => regs.rcx,
            3 => regs.rdi,
            4 => regs.rsi,
            5 => regs.r8,
            6 => regs.r9,
            7 => regs.r10,
            8 => regs.r11,
            _ => 0,
        }
    }
    #[cfg(bpf_target_arch = "aarch64")]
    {
        if n < 16 { regs.regs[n as usize] } else { 0 }
    }
}

/// The current goroutine's `*g` (valid at ABIInternal function entry).
#[inline(always)]
pub fn current_g(ctx: &ProbeContext) -> u64 {
    let regs = unsafe { &*ctx.regs };
    #[cfg(bpf_target_arch = "x86_64")]
    {
        regs.r14
    }
    #[cfg(bpf_target_arch = "aarch64")]
    {
        regs.regs[28]
    }
}

/// The return address a frame-pointer walk from the probe misses, or 0.
/// At a function's entry amd64 keeps it at [SP] (the callee has not pushed
/// BP yet); a probe placed after the prologue (`PUSH BP; MOV SP, BP`, so
/// BP == SP) has the frame set up and the walk finds it. arm64 keeps it in
/// the link register.
#[inline(always)]
pub fn return_address(p: &Probe) -> u64 {
    let regs = unsafe { &*p.ctx.regs };
    #[cfg(bpf_target_arch = "x86_64")]
    {
        if regs.rbp == regs.rsp {
            return 0;
        }
        p.read_u64(regs.rsp)
    }
    #[cfg(bpf_target_arch = "aarch64")]
    {
        regs.regs[30]
    }
}

/// The probed instruction's address and the frame pointer (amd64 RBP,
/// arm64 X29): where a frame-pointer walk starts.
#[inline(always)]
pub fn pc_and_fp(ctx: &ProbeContext) -> (u64, u64) {
    let regs = unsafe { &*ctx.regs };
    #[cfg(bpf_target_arch = "x86_64")]
    {
        (regs.rip, regs.rbp)
    }
    #[cfg(bpf_target_arch = "aarch64")]
    {
        (regs.pc, regs.regs[29])
    }
}
