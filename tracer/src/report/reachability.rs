//! The verdicts on contexts and tickers that the leak proof's marks decide
//! (`proof::held`): the one home of the criteria the README states.
//!
//! - A context never cancelled is **leaked** when nothing reachable can
//!   cancel it (no reachable `CancelFunc`) and something still holds it (a
//!   root, or goroutines that wait on it or keep it on their stacks); with
//!   a reachable cancel it is **live**; held by nothing it is
//!   **collected** (garbage: nothing leaks, however `go vet` judges the
//!   code). AfterFunc contexts are never leaks (stop is optional).
//! - A ticker never stopped is **leaked** when the program no longer
//!   references it and the runtime still fires it, or when its only
//!   holders are proven-leaked goroutines; referenced by live code it is
//!   **running**; referenced by nothing and not fired it is **collected**
//!   (Go 1.23+ frees such timers).
//!
//! Everything else is **undecided**, with the reason.

use serde::Serialize;

use crate::proof::KeptBy;
use crate::proof::held::{CtxHeld, Held, Identity, TickerHeld};

/// Why a context or ticker was not judged when the proof gave no answer.
pub fn not_asked(held: Option<&Held>) -> String {
    match held {
        None => "the leak proof did not run (--no-prove, or the target had exited)".into(),
        Some(h) if !h.done() => h.status.clone(),
        Some(_) => "not asked (created or stopped while the proof ran)".into(),
    }
}

/// A reachable function that can still cancel a context.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CancelFuncOut {
    pub function: String,
    pub address: String,
    pub kept_by: KeptBy,
}

/// What decided a context's or ticker's verdict.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Evidence {
    /// The reachable cancel function (a context judged live).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel_func: Option<CancelFuncOut>,
    /// What reaches the object from a root.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_by: Option<KeptBy>,
    /// Goroutines that hold it on their stacks (or wait on its Done
    /// channel) without being roots: proven leaked, or not decided.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub held_by_goroutines: Vec<u64>,
    /// The live parent context (id) whose children hold it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_by_parent: Option<usize>,
    /// Tickers: what of the program references it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub referenced_by: Vec<KeptBy>,
    /// Tickers: proven-leaked goroutines that hold it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub leaked_holders: Vec<u64>,
    /// Tickers: the runtime's timer heap still holds it (it fires).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub runtime_holds: bool,
    /// Why it is undecided, or collected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What the trace itself knows holds a context never cancelled.
#[derive(Clone, Copy, Debug, Default)]
pub struct Known<'a> {
    /// Live goroutines parked on its Done channel.
    pub waiting: &'a [u64],
    /// Its deadline's timer is armed: the runtime holds it until then.
    pub armed: bool,
    /// The live cancelable parent (report id) it is registered with,
    /// whose children hold it until that parent is cancelled.
    pub registered_with: Option<usize>,
}

/// The verdict on a context never cancelled, and its evidence. A goroutine
/// stack alone is no evidence that something holds it: stacks are scanned
/// conservatively, and a stale word may point at a context long gone from
/// the program's hands.
pub fn never_cancelled(
    kind: &str,
    h: Option<&CtxHeld>,
    held: Option<&Held>,
    known: Known<'_>,
) -> (&'static str, Evidence) {
    let waiting = known.waiting;
    if kind == "afterfunc" {
        return ("afterfunc", Evidence::default());
    }
    let Some(h) = h else {
        return undecided(not_asked(held));
    };
    if let Some(f) = &h.cancel_fn {
        let e = Evidence {
            cancel_func: Some(CancelFuncOut {
                function: f.function.clone(),
                address: format!("{:#x}", f.addr),
                kept_by: f.kept_by.clone(),
            }),
            ..Evidence::default()
        };
        return ("live", e);
    }
    if let Some(why) = &h.undecided {
        return undecided(why.clone());
    }
    if h.identity == Identity::Gone && waiting.is_empty() {
        return collected("its memory holds another object now");
    }
    if h.identity == Identity::Gone {
        // Collected (its cancel function with it), while goroutines still
        // wait on its Done channel: nothing can ever close it.
        let e = Evidence {
            held_by_goroutines: waiting.to_vec(),
            reason: Some("collected, but goroutines still wait on its Done channel".into()),
            ..Evidence::default()
        };
        return ("leaked", e);
    }
    let mut goroutines: Vec<u64> = h.stacks.iter().chain(waiting).copied().collect();
    goroutines.sort_unstable();
    goroutines.dedup();
    let rooted = h.reached_by.as_ref().is_some_and(|k| k.kind != "goroutine");
    let registered = known.registered_with.is_some();
    let decisive = rooted || !waiting.is_empty() || known.armed || registered;
    if !decisive && (h.reached_by.is_some() || !goroutines.is_empty()) {
        return undecided(
            "only goroutine stacks hold it (scanned conservatively: maybe a stale word)".into(),
        );
    }
    if !decisive {
        return collected("nothing references it");
    }
    let e = Evidence {
        held_by: h.reached_by.clone(),
        held_by_goroutines: goroutines,
        held_by_parent: known.registered_with,
        ..Evidence::default()
    };
    ("leaked", e)
}

/// The verdict on a ticker never stopped, and its evidence.
pub fn ticker(h: Option<&TickerHeld>, held: Option<&Held>) -> (&'static str, Evidence) {
    let Some(h) = h else {
        return undecided(not_asked(held));
    };
    if !h.held_by.is_empty() {
        let e = Evidence {
            referenced_by: h.held_by.clone(),
            ..Evidence::default()
        };
        return ("running", e);
    }
    if let Some(why) = &h.undecided {
        return undecided(why.clone());
    }
    if h.identity == Identity::Gone {
        return collected("its memory holds another object now");
    }
    let collects = held.is_some_and(|h| h.timers_collected);
    let fires = h.runtime_holds && !collects;
    if !h.leaked_holders.is_empty() || fires {
        let e = Evidence {
            leaked_holders: h.leaked_holders.clone(),
            runtime_holds: fires,
            ..Evidence::default()
        };
        return ("leaked", e);
    }
    if collects {
        collected("nothing references it: this runtime frees it (Go 1.23+ timers)")
    } else {
        collected("nothing references it, not even the runtime's timer heap")
    }
}

fn undecided(why: String) -> (&'static str, Evidence) {
    let e = Evidence {
        reason: Some(why),
        ..Evidence::default()
    };
    ("undecided", e)
}

fn collected(why: &str) -> (&'static str, Evidence) {
    let e = Evidence {
        reason: Some(why.into()),
        ..Evidence::default()
    };
    ("collected", e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proof::held::FnRef;

    fn kept(kind: &str) -> KeptBy {
        KeptBy {
            kind: kind.into(),
            name: None,
            goid: None,
            function: None,
        }
    }

    fn ctx() -> CtxHeld {
        CtxHeld {
            ptr: 0xc000,
            identity: Identity::Same,
            reached_by: None,
            stacks: Vec::new(),
            cancel_fn: None,
            undecided: None,
        }
    }

    fn held() -> Held {
        Held {
            status: "done".into(),
            ..Held::default()
        }
    }

    /// Each way a never-cancelled context is judged, and what decides it.
    #[test]
    fn context_verdicts() {
        let h = held();
        let v = |c: &CtxHeld, waiting: &[u64]| {
            let known = Known {
                waiting,
                ..Known::default()
            };
            never_cancelled("cancel", Some(c), Some(&h), known).0
        };
        assert_eq!(v(&ctx(), &[]), "collected");
        assert_eq!(v(&ctx(), &[7]), "leaked", "goroutines wait on its Done");
        let rooted = CtxHeld {
            reached_by: Some(kept("global")),
            ..ctx()
        };
        assert_eq!(v(&rooted, &[]), "leaked");
        let live = CtxHeld {
            cancel_fn: Some(FnRef {
                addr: 1,
                function: "context.WithCancel.func1".into(),
                kept_by: kept("global"),
            }),
            undecided: Some("creator running".into()),
            ..rooted.clone()
        };
        assert_eq!(v(&live, &[]), "live", "a reachable cancel decides");
        let gone = CtxHeld {
            identity: Identity::Gone,
            ..rooted.clone()
        };
        assert_eq!(v(&gone, &[]), "collected");
        assert_eq!(v(&gone, &[7]), "leaked", "its waiters remain");
        let racing = CtxHeld {
            undecided: Some("passes disagreed".into()),
            ..rooted
        };
        assert_eq!(v(&racing, &[]), "undecided");
        // A goroutine stack alone decides nothing; a registration does.
        let on_stack = CtxHeld {
            reached_by: Some(kept("goroutine")),
            ..ctx()
        };
        assert_eq!(v(&on_stack, &[]), "undecided");
        let registered = Known {
            registered_with: Some(3),
            ..Known::default()
        };
        assert_eq!(
            never_cancelled("cancel", Some(&on_stack), Some(&h), registered).0,
            "leaked"
        );
        let none = Known::default();
        assert_eq!(never_cancelled("cancel", None, None, none).0, "undecided");
        assert_eq!(
            never_cancelled("afterfunc", None, None, none).0,
            "afterfunc"
        );
        let not_run = Held::not_done("the leak proof is failed".into());
        let (verdict, e) = never_cancelled("timer", None, Some(&not_run), none);
        assert_eq!(verdict, "undecided");
        assert_eq!(e.reason.as_deref(), Some("the leak proof is failed"));
    }

    #[test]
    fn ticker_verdicts() {
        let h = held();
        let t = TickerHeld {
            ptr: 1,
            identity: Identity::Same,
            held_by: Vec::new(),
            leaked_holders: Vec::new(),
            runtime_holds: false,
            undecided: None,
        };
        let v = |t: &TickerHeld| ticker(Some(t), Some(&h)).0;
        assert_eq!(v(&t), "collected");
        let fired = TickerHeld {
            runtime_holds: true,
            ..t.clone()
        };
        assert_eq!(v(&fired), "leaked");
        let consumer_leaked = TickerHeld {
            leaked_holders: vec![9],
            ..t.clone()
        };
        assert_eq!(v(&consumer_leaked), "leaked");
        let looping = TickerHeld {
            held_by: vec![kept("goroutine")],
            ..fired
        };
        assert_eq!(v(&looping), "running");
        assert_eq!(ticker(None, None).0, "undecided");
        let collects = Held {
            timers_collected: true,
            ..held()
        };
        let fired = TickerHeld {
            runtime_holds: true,
            ..t.clone()
        };
        assert_eq!(ticker(Some(&fired), Some(&collects)).0, "collected");
    }
}
