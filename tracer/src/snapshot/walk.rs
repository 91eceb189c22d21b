//! A goroutine's stack from its saved scheduler state, by frame pointers.
//!
//! Go keeps frame pointers on amd64 and arm64: in every frame with one,
//! `[fp]` is the caller's frame pointer and `[fp + 8]` the return address
//! into the caller (the layout the runtime's own `fpTracebackPCs` walks).
//! A parked goroutine's `g.sched` holds the pc, sp and frame pointer that
//! `mcall` saved in `gopark`; a goroutine in a syscall has `syscallpc` /
//! `syscallsp` (and `syscallbp` from Go 1.23). The outermost frame of a
//! goroutine holds a zero frame pointer (goroutines start with BP = 0) and
//! returns into `runtime.goexit`.
//!
//! Every address is checked against the goroutine's stack bounds
//! (`g.stack.lo`..`hi`) and must move towards `hi`, so a torn or garbage
//! read ends the walk instead of wandering through memory.

/// Deepest stack kept (Go's own tracebacks print 100 frames).
pub const MAX_FRAMES: usize = 100;

/// Where a goroutine resumes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resume {
    pub pc: u64,
    pub sp: u64,
    pub bp: u64,
    /// `pc` is a return address (saved by a call), not an exact pc (a
    /// goroutine that never ran resumes at its function's entry).
    pub pc_is_return: bool,
}

/// The walk's result: pcs innermost first, stored like the kernel's stacks
/// (the first pc exact: a return address is stored as `pc - 1`, inside its
/// call instruction; the others are return addresses).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Walked {
    pub pcs: Vec<u64>,
    /// The chain left the stack bounds (or a word was unreadable) before
    /// reaching the outermost frame.
    pub truncated: bool,
}

/// Walks from `r` within `[lo, hi)`, reading stack words with `word`.
pub fn walk(r: &Resume, lo: u64, hi: u64, word: &mut dyn FnMut(u64) -> Option<u64>) -> Walked {
    let mut out = Walked::default();
    if r.pc == 0 {
        return out;
    }
    out.pcs.push(if r.pc_is_return { r.pc - 1 } else { r.pc });
    let mut bp = r.bp;
    let mut floor = r.sp.max(lo);
    while out.pcs.len() < MAX_FRAMES {
        if bp == 0 {
            return out;
        }
        if !bp.is_multiple_of(8) || bp < floor || bp.saturating_add(16) > hi {
            break;
        }
        let (Some(next), Some(ret)) = (word(bp), word(bp + 8)) else {
            break;
        };
        if ret == 0 {
            return out;
        }
        out.pcs.push(ret);
        floor = bp + 16;
        bp = next;
    }
    out.truncated = bp != 0;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake stack at 0x1000..0x1100: words by address.
    fn stack(words: &[(u64, u64)]) -> impl FnMut(u64) -> Option<u64> + use<> {
        let map: std::collections::HashMap<u64, u64> = words.iter().copied().collect();
        move |a| map.get(&a).copied().or(Some(0xdead))
    }

    #[test]
    fn walks_to_the_outermost_frame() {
        // gopark's frame at 0x1020 -> chanrecv at 0x1040 -> main.f at 0x1080
        // whose caller frame pointer is 0 (returns into goexit).
        let mut w = stack(&[
            (0x1020, 0x1040),
            (0x1028, 0x4001),
            (0x1040, 0x1080),
            (0x1048, 0x4002),
            (0x1080, 0),
            (0x1088, 0x4003),
        ]);
        let r = Resume {
            pc: 0x4000,
            sp: 0x1010,
            bp: 0x1020,
            pc_is_return: true,
        };
        let got = walk(&r, 0x1000, 0x1100, &mut w);
        assert_eq!(got.pcs, vec![0x3fff, 0x4001, 0x4002, 0x4003]);
        assert!(!got.truncated);
        // A goroutine that never ran: its entry pc, exact, nothing else.
        let fresh = Resume {
            pc: 0x5000,
            sp: 0x10f8,
            bp: 0,
            pc_is_return: false,
        };
        assert_eq!(walk(&fresh, 0x1000, 0x1100, &mut w).pcs, vec![0x5000]);
    }

    #[test]
    fn garbage_ends_the_walk() {
        // Frame pointer going down, out of bounds, misaligned.
        for (bp, next) in [(0x1040, 0x1020), (0x1040, 0x9000), (0x1040, 0x1043)] {
            let mut w = stack(&[(bp, next), (bp + 8, 0x4001)]);
            let r = Resume {
                pc: 0x4000,
                sp: 0x1010,
                bp,
                pc_is_return: true,
            };
            let got = walk(&r, 0x1000, 0x1100, &mut w);
            assert_eq!(got.pcs, vec![0x3fff, 0x4001], "{next:#x}");
            assert!(got.truncated);
        }
        // A frame pointer below the saved sp is not trusted at all.
        let r = Resume {
            pc: 0x4000,
            sp: 0x1050,
            bp: 0x1040,
            pc_is_return: true,
        };
        let got = walk(&r, 0x1000, 0x1100, &mut stack(&[]));
        assert_eq!((got.pcs.len(), got.truncated), (1, true));
        // A cycle cannot loop forever.
        let mut w = stack(&[(0x1040, 0x1040), (0x1048, 1)]);
        let r = Resume { sp: 0x1000, ..r };
        assert_eq!(walk(&r, 0x1000, 0x1100, &mut w).pcs.len(), 2);
    }
}
