//! The per-CPU `COUNTERS` map: what the probes could not do, counted so
//! that userspace can report it. Slot layout:
//! - `[0, MAX_KINDS)`: ring-buffer drops per event kind (index = kind number);
//! - `[MAX_KINDS, READ_ERRORS_BASE)`: the named counters below;
//! - `[READ_ERRORS_BASE, HITS_BASE)`: failed user-memory reads per
//!   program (index = [`Program`] number);
//! - `[HITS_BASE, COUNTER_SLOTS)`: runs per program on the target's
//!   threads, i.e. probe hits (index = [`Program`] number), from which
//!   userspace estimates what the probes cost the target.

/// Number of slots for per-kind drops (index = kind number).
pub const MAX_KINDS: u32 = 16;

/// User stacks that could not be captured (their `StackDump` event dropped).
pub const COUNTER_STACK_ERRORS: u32 = MAX_KINDS;
/// Creations whose creator is unknown because another thread of the target
/// took the creator's per-thread slot first (Go < 1.21 only).
pub const COUNTER_PARENTS_LOST: u32 = MAX_KINDS + 1;
/// Events whose user stack was cut at `STACK_DUMP_DEPTH` frames.
pub const COUNTER_STACKS_TRUNCATED: u32 = MAX_KINDS + 2;
/// Parks whose wait list was cut at `MAX_WAIT_CHANS` channels.
pub const COUNTER_WAIT_CHANS_TRUNCATED: u32 = MAX_KINDS + 3;

/// First slot of the per-program failed-read counters.
pub const READ_ERRORS_BASE: u32 = 32;
/// Programs the per-program counters have room for.
pub const MAX_PROGRAMS: u32 = 32;
/// First slot of the per-program hit counters.
pub const HITS_BASE: u32 = READ_ERRORS_BASE + MAX_PROGRAMS;
/// Slots of the `COUNTERS` map.
pub const COUNTER_SLOTS: u32 = HITS_BASE + MAX_PROGRAMS;

const _: () = assert!(COUNTER_WAIT_CHANS_TRUNCATED < READ_ERRORS_BASE);

/// Declares the programs of the eBPF object once: stable numbers for their
/// counters and the names the object (and the attach plans) use.
macro_rules! programs {
    ($($(#[$doc:meta])* $prog:ident = $n:literal => $name:literal;)*) => {
        /// Every eBPF program, by its counter number.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Program {
            $($(#[$doc])* $prog = $n,)*
        }

        impl Program {
            pub const ALL: &'static [Program] = &[$(Program::$prog),*];

            /// The program's name in the object (its function name).
            pub const fn name(self) -> &'static str {
                match self {
                    $(Self::$prog => $name,)*
                }
            }
        }
    };
}

programs! {
    GoNewproc = 0 => "go_newproc";
    GoNewproc1Ret = 1 => "go_newproc1_ret";
    GoPark = 2 => "go_park";
    GoReady = 3 => "go_ready";
    GoExit = 4 => "go_exit";
    GoCtxCreate = 5 => "go_ctx_create";
    GoCtxCancel = 6 => "go_ctx_cancel";
    GoCtxCancelTimer = 7 => "go_ctx_cancel_timer";
    GoCtxCancelAfterfunc = 8 => "go_ctx_cancel_afterfunc";
    GoCtxDoneStore = 9 => "go_ctx_done_store";
    GoCtxDone = 10 => "go_ctx_done";
    GoCtxDoneRet = 11 => "go_ctx_done_ret";
    GoTimerStart = 12 => "go_timer_start";
    GoTimerNew = 13 => "go_timer_new";
    GoTimerNewRet = 14 => "go_timer_new_ret";
    GoTimerStop = 15 => "go_timer_stop";
    /// The do-nothing benchmark floor (`--bench-empty-probes`).
    GotraceEmpty = 16 => "gotrace_empty";
}

const _: () = assert!(Program::ALL.len() as u32 <= MAX_PROGRAMS);

impl Program {
    /// Slot of the program's failed-read counter in `COUNTERS`.
    pub const fn read_errors_slot(self) -> u32 {
        READ_ERRORS_BASE + self as u32
    }

    /// Slot of the program's hit counter in `COUNTERS`.
    pub const fn hits_slot(self) -> u32 {
        HITS_BASE + self as u32
    }
}

#[cfg(all(test, not(target_arch = "bpf")))]
mod tests {
    use super::*;

    #[test]
    fn slots_do_not_overlap() {
        assert!(crate::EventKind::ALL.iter().all(|k| k.index() < MAX_KINDS));
        for p in Program::ALL {
            assert!((*p as u32) < MAX_PROGRAMS, "{}", p.name());
            assert!(p.read_errors_slot() < HITS_BASE);
            assert!(p.hits_slot() < COUNTER_SLOTS);
        }
    }
}
