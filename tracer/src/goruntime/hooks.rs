//! Runtime functions gotrace hooks, and why these ones.
//!
//! See `shared/go-runtime-notes.md`: `goready` is inlined since Go 1.21 (do not
//! hook it); `ready` is out of line in every version; `goexit1` runs on the
//! dying goroutine; `newproc1` runs on g0 and returns the new g.

use super::super::gobin::buildinfo::GoVersion;

/// How a probe is placed on its function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// At the function's first instruction.
    Entry,
    /// On every RET instruction of the function (found by disassembly): the
    /// safe replacement for a uretprobe on Go code.
    Returns,
}

/// One eBPF program attached to one runtime function.
#[derive(Clone, Copy, Debug)]
pub struct Hook {
    /// Program name in the eBPF object.
    pub program: &'static str,
    /// Function symbol in the target.
    pub symbol: &'static str,
    pub placement: Placement,
    /// Missing in the target is an error (true) or a degraded trace (false).
    pub required: bool,
}

/// Oldest Go release gotrace supports (pclntab/buildinfo formats, runtime.g
/// layout family).
pub const MIN_SUPPORTED: (u32, u32) = (1, 19);
/// Newest release whose runtime gotrace was verified against.
pub const MAX_VERIFIED: (u32, u32) = (1, 27);

/// The goroutine-lifecycle hooks for a Go version. The names are the same in
/// every supported release (1.19–1.27); the per-version split lives here when
/// they diverge.
pub fn goroutine_hooks(_version: &GoVersion) -> Vec<Hook> {
    use Placement::*;
    vec![
        Hook {
            program: "go_newproc",
            symbol: "runtime.newproc",
            placement: Entry,
            required: true,
        },
        Hook {
            program: "go_newproc1",
            symbol: "runtime.newproc1",
            placement: Entry,
            required: true,
        },
        Hook {
            program: "go_newproc1_ret",
            symbol: "runtime.newproc1",
            placement: Returns,
            required: true,
        },
        Hook {
            program: "go_park",
            symbol: "runtime.gopark",
            placement: Entry,
            required: true,
        },
        Hook {
            program: "go_ready",
            symbol: "runtime.ready",
            placement: Entry,
            required: true,
        },
        Hook {
            program: "go_exit",
            symbol: "runtime.goexit1",
            placement: Entry,
            required: true,
        },
    ]
}
