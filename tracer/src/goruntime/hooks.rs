//! Runtime functions gotrace hooks, and why these ones.
//!
//! `goready` is inlined since Go 1.21 (do not hook it); `ready` is out of line in every version; `goexit1` runs on the
//! dying goroutine; `newproc1` runs on g0 and returns the new g.

use super::version::GoVersion;

/// How a probe is placed on its function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// At the function's first instruction.
    Entry,
    /// On every RET instruction of the function (found by disassembly): the
    /// safe replacement for a uretprobe on Go code.
    Returns,
    /// After the function's frame-pointer prologue (amd64 `PUSH BP; MOV SP,
    /// BP`, found by disassembly), or at its entry where no standard
    /// prologue is found. Past the stack-growth check, so a call whose
    /// prologue re-runs after `morestack` is seen once, not twice; the frame
    /// is set up, so the stack walk includes the caller without reading the
    /// return address. Argument registers are untouched by the prologue.
    AfterPrologue,
    /// On every direct call from the function to the named callee: the
    /// callee's arguments are in the Go ABI registers there, and only this
    /// caller's path pays for a probe hit.
    CallsTo(&'static str),
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

/// Where `propagateCancel`'s `parent` and `child` interfaces sit (Go ABI
/// register index of each interface's first word), per version.
pub struct PropagateCancelArgs {
    pub parent: u32,
    pub child: u32,
}

/// Context hooks for a Go version, or why contexts cannot be traced there.
pub fn context_hooks(
    version: &GoVersion,
) -> Result<(Vec<Hook>, PropagateCancelArgs), &'static str> {
    use Placement::*;
    if (version.major, version.minor) == (1, 20) {
        // 1.20's timerCtx embeds a *cancelCtx pointer, so its cancel and
        // propagateCancel pointers name different objects.
        return Err("Go 1.20 contexts are not supported (timerCtx layout)");
    }
    let (propagate, args) = if version.at_least(1, 21) {
        (
            "context.(*cancelCtx).propagateCancel",
            PropagateCancelArgs {
                parent: 1,
                child: 3,
            },
        )
    } else {
        (
            "context.propagateCancel",
            PropagateCancelArgs {
                parent: 0,
                child: 2,
            },
        )
    };
    let hook = |program, symbol, placement| Hook {
        program,
        symbol,
        placement,
        required: false,
    };
    Ok((
        vec![
            hook("go_ctx_create", propagate, Entry),
            hook("go_ctx_cancel", "context.(*cancelCtx).cancel", Entry),
            hook("go_ctx_cancel_timer", "context.(*timerCtx).cancel", Entry),
            hook(
                "go_ctx_cancel_afterfunc",
                "context.(*afterFuncCtx).cancel",
                Entry,
            ),
        ],
        args,
    ))
}

/// Where a context's Done channel becomes known. `Done` makes the channel
/// once, under the context's lock, and stores it with
/// `c.done.Store(d)`; a probe on that call fires once per context instead of
/// twice per `Done` call (servers call `Done` dozens of times per request).
/// The promoted `Done` of timerCtx and afterFuncCtx tail-jump to
/// `(*cancelCtx).Done` or inline it, so each is scanned.
pub fn context_done_store_hooks() -> Vec<Hook> {
    [
        "context.(*cancelCtx).Done",
        "context.(*timerCtx).Done",
        "context.(*afterFuncCtx).Done",
    ]
    .into_iter()
    .map(|symbol| Hook {
        program: "go_ctx_done_store",
        symbol,
        placement: Placement::CallsTo(ATOMIC_VALUE_STORE),
        required: false,
    })
    .collect()
}

/// The store that publishes a context's Done channel.
pub const ATOMIC_VALUE_STORE: &str = "sync/atomic.(*Value).Store";

/// The fallback when no `Done` calls `atomic.Value.Store` directly (a
/// release that inlines it): every `Done` call's entry and returns.
pub fn context_done_call_hooks() -> Vec<Hook> {
    use Placement::*;
    let hook = |program, symbol, placement| Hook {
        program,
        symbol,
        placement,
        required: false,
    };
    vec![
        hook("go_ctx_done", "context.(*cancelCtx).Done", Entry),
        hook("go_ctx_done_ret", "context.(*cancelCtx).Done", Returns),
        hook("go_ctx_done", "context.(*timerCtx).Done", Entry),
        hook("go_ctx_done_ret", "context.(*timerCtx).Done", Returns),
        hook("go_ctx_done", "context.(*afterFuncCtx).Done", Entry),
        hook("go_ctx_done_ret", "context.(*afterFuncCtx).Done", Returns),
    ]
}

/// itab symbol names for a type as an interface: Go 1.20+ spell them
/// `go:itab.T,I`, older releases `go.itab.T,I`.
pub fn itab_symbols(ty_iface: &str) -> [String; 2] {
    [format!("go:itab.{ty_iface}"), format!("go.itab.{ty_iface}")]
}

/// Timer hooks for a Go version (leak pattern 4).
pub fn timer_hooks(version: &GoVersion) -> Vec<Hook> {
    use Placement::*;
    let hook = |program, symbol, placement| Hook {
        program,
        symbol,
        placement,
        required: false,
    };
    let mut hooks = if version.at_least(1, 23) {
        vec![
            hook("go_timer_new", "time.newTimer", Entry),
            hook("go_timer_new_ret", "time.newTimer", Returns),
        ]
    } else {
        vec![hook("go_timer_start", "time.startTimer", Entry)]
    };
    hooks.push(hook("go_timer_stop", "time.stopTimer", Entry));
    hooks
}

/// Whether a Ticker or Timer nothing references is garbage collected
/// without Stop: from Go 1.23, unless `asynctimerchan=1`, the default when
/// the main module's go.mod says an older Go (`default_godebug`, the
/// binary's `DefaultGODEBUG`), which the process's own `GODEBUG`
/// environment overrides.
pub fn unreferenced_timers_collected(
    version: &GoVersion,
    default_godebug: Option<&str>,
    env_godebug: Option<&str>,
) -> bool {
    let setting = |s: Option<&str>| {
        s.into_iter()
            .flat_map(|s| s.split(','))
            .filter_map(|kv| kv.trim().strip_prefix("asynctimerchan="))
            .next_back()
            .map(str::to_string)
    };
    let value = setting(env_godebug).or_else(|| setting(default_godebug));
    version.at_least(1, 23) && value.as_deref() != Some("1")
}

/// Whether a frame-pointer walk from a function `systemstack` runs on g0
/// stops on g0: arm64's `systemstack` loaded g0's saved frame pointer
/// before switching until Go 1.25, which keeps the caller's; amd64's never
/// touched it.
pub fn systemstack_hides_caller(version: &GoVersion, arm64: bool) -> bool {
    arm64 && !version.at_least(1, 25)
}

/// The goroutine-lifecycle hooks for a Go version. The names are the same in
/// every supported release (1.19–1.27); the per-version split lives here when
/// they diverge.
///
/// `runtime.newproc` is probed before Go 1.21, for the creator's goid
/// (later releases keep it in `g.parentGoid`). The creation stack is walked
/// from `newproc1`'s returns, through `systemstack`, except on arm64 before
/// Go 1.25 (see [`systemstack_hides_caller`]), where the `newproc` entry
/// probe walks it on the creating goroutine.
pub fn goroutine_hooks(version: &GoVersion, arm64: bool) -> Vec<Hook> {
    use Placement::*;
    let mut hooks = Vec::new();
    if !version.at_least(1, 21) || systemstack_hides_caller(version, arm64) {
        hooks.push(Hook {
            program: "go_newproc",
            symbol: "runtime.newproc",
            placement: Entry,
            required: true,
        });
    }
    hooks.extend([
        Hook {
            program: "go_newproc1_ret",
            symbol: "runtime.newproc1",
            placement: Returns,
            required: true,
        },
        Hook {
            program: "go_park",
            symbol: "runtime.gopark",
            placement: AfterPrologue,
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
    ]);
    hooks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreferenced_timers_are_collected_from_go_1_23_unless_asynctimerchan_1() {
        let v = |s| GoVersion::parse(s);
        let old_mod = Some("asynctimerchan=1,panicnil=1");
        assert!(!unreferenced_timers_collected(&v("go1.22.10"), None, None));
        assert!(unreferenced_timers_collected(&v("go1.23.9"), None, None));
        assert!(!unreferenced_timers_collected(
            &v("go1.26.6"),
            old_mod,
            None
        ));
        assert!(unreferenced_timers_collected(
            &v("go1.26.6"),
            old_mod,
            Some("asynctimerchan=0")
        ));
        assert!(!unreferenced_timers_collected(
            &v("go1.26.6"),
            Some("asynctimerchan=0"),
            Some("x=1,asynctimerchan=1")
        ));
        assert!(!unreferenced_timers_collected(
            &v("go1.19.8"),
            Some("asynctimerchan=0"),
            None
        ));
    }

    #[test]
    fn newproc_entry_probe_where_the_creator_is_not_reachable_otherwise() {
        let has = |v: &str, arm64| {
            goroutine_hooks(&GoVersion::parse(v), arm64)
                .iter()
                .any(|h| h.program == "go_newproc")
        };
        assert!(has("go1.19.8", false));
        assert!(!has("go1.21.13", false));
        assert!(has("go1.21.13", true));
        assert!(has("go1.24.11", true));
        assert!(!has("go1.25.5", true));
    }
}
