//! One run of a program: who hit the probe, and the user-memory reads that
//! count what fails (per program, in `COUNTERS`) and, with `--debug-probes`,
//! say so on gotrace's stderr through aya-log.
//!
//! The diagnostics cost nothing when off: every one sits behind
//! [`debug_probes`], a `.rodata` flag the verifier sees as the constant 0
//! and prunes. When on, failed reads are noted during the run and logged
//! once at its end ([`run`]): a log call inside the walks' loops would be
//! verified once per iteration.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, generated::bpf_probe_read_user},
    macros::map,
    maps::PerCpuArray,
    programs::ProbeContext,
};
use aya_log_ebpf::debug;
use tracer_common::{Config, Program};

use crate::maps::{bump, config, debug_probes};

/// Failed reads of the current run (count, last address), for the log line
/// at its end; used only with `--debug-probes`.
#[map]
static RUN_FAILS: PerCpuArray<[u64; 2]> = PerCpuArray::with_max_entries(1, 0);

/// Runs `body` for program `prog` if the calling thread belongs to the
/// target: every program's entry point.
#[inline(always)]
pub fn run(ctx: &ProbeContext, prog: Program, body: impl FnOnce(&Probe, &Config)) -> u32 {
    let cfg = config();
    let Some(p) = Probe::start(ctx, prog, cfg) else {
        return 0;
    };
    if debug_probes() {
        set_fails([0, 0]);
    }
    body(&p, cfg);
    if debug_probes()
        && let Some(f) = RUN_FAILS.get_ptr(0)
    {
        // SAFETY: per-CPU slot of this run.
        let [n, last] = unsafe { *f };
        if n > 0 {
            debug!(
                ctx,
                "{}: {} user-memory reads failed, the last at 0x{:x}",
                prog.name(),
                n,
                last
            );
        }
    }
    0
}

#[inline(always)]
fn set_fails(v: [u64; 2]) {
    if let Some(f) = RUN_FAILS.get_ptr_mut(0) {
        // SAFETY: per-CPU slot; a program run owns its CPU.
        unsafe { *f = v };
    }
}

/// The running program and the target thread it runs on.
#[derive(Clone, Copy)]
pub struct Probe<'a> {
    pub ctx: &'a ProbeContext,
    pub prog: Program,
    pub tgid: u32,
    pub tid: u32,
}

impl<'a> Probe<'a> {
    /// The run, if the calling thread belongs to the target process.
    #[inline(always)]
    pub fn start(ctx: &'a ProbeContext, prog: Program, cfg: &Config) -> Option<Self> {
        let pid_tgid = bpf_get_current_pid_tgid();
        let tgid = (pid_tgid >> 32) as u32;
        if tgid != cfg.target_tgid {
            return None;
        }
        // What the target pays per hit is estimated from these.
        bump(prog.hits_slot());
        Some(Self {
            ctx,
            prog,
            tgid,
            tid: pid_tgid as u32,
        })
    }

    /// A u64 of the target's memory; 0 for a null address (no read) or a
    /// read that faults (counted).
    #[inline(always)]
    pub fn read_u64(&self, addr: u64) -> u64 {
        if addr == 0 {
            return 0;
        }
        // SAFETY: bpf_probe_read_user validates the address and fails cleanly.
        match unsafe { aya_ebpf::helpers::bpf_probe_read_user(addr as *const u64) } {
            Ok(v) => v,
            Err(_) => {
                self.read_failed(addr);
                0
            }
        }
    }

    /// Copies `len` bytes of the target's memory at `src` to `dst`; false
    /// (counted) when the read faults, and the helper zeroes `dst` then.
    ///
    /// # Safety
    /// `dst` must hold at least `len` bytes.
    #[inline(always)]
    pub unsafe fn read_into(&self, dst: *mut u8, len: u32, src: u64) -> bool {
        // SAFETY: the caller guarantees the room; the helper validates `src`.
        let r = unsafe { bpf_probe_read_user(dst.cast(), len, src as *const core::ffi::c_void) };
        if r != 0 {
            self.read_failed(src);
        }
        r == 0
    }

    /// Counts a failed read of `addr` for this program (and notes it for
    /// the run's log line).
    #[inline(always)]
    pub fn read_failed(&self, addr: u64) {
        bump(self.prog.read_errors_slot());
        if debug_probes()
            && let Some(f) = RUN_FAILS.get_ptr_mut(0)
        {
            // SAFETY: per-CPU slot; a program run owns its CPU.
            unsafe { *f = [(*f)[0] + 1, addr] };
        }
    }

    /// Logs a path skipped because what it needs is missing.
    #[inline(always)]
    pub fn skipped(&self, why: &'static str) {
        if debug_probes() {
            debug!(self.ctx, "{}: skipped: {}", self.prog.name(), why);
        }
    }
}
