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

/// The verdict on a context never cancelled, and its evidence.
pub fn never_cancelled(
    kind: &str,
    h: Option<&CtxHeld>,
    held: Option<&Held>,
    waiting: &[u64],
) -> (&'static str, Evidence) {
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
    if h.identity == Identity::Gone {
        return collected("its memory holds another object now");
    }
    let mut goroutines: Vec<u64> = h.stacks.iter().chain(waiting).copied().collect();
    goroutines.sort_unstable();
    goroutines.dedup();
    if h.reached_by.is_none() && goroutines.is_empty() {
        return collected("nothing references it");
    }
    let e = Evidence {
        held_by: h.reached_by.clone(),
        held_by_goroutines: goroutines,
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
    if !h.leaked_holders.is_empty() || h.runtime_holds {
        let e = Evidence {
            leaked_holders: h.leaked_holders.clone(),
            runtime_holds: h.runtime_holds,
            ..Evidence::default()
        };
        return ("leaked", e);
    }
    collected("nothing references it, not even the runtime's timer heap")
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
        let v =
            |c: &CtxHeld, waiting: &[u64]| never_cancelled("cancel", Some(c), Some(&h), waiting).0;
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
        assert_eq!(v(&gone, &[7]), "collected");
        let racing = CtxHeld {
            undecided: Some("passes disagreed".into()),
            ..rooted
        };
        assert_eq!(v(&racing, &[]), "undecided");
        assert_eq!(never_cancelled("cancel", None, None, &[]).0, "undecided");
        assert_eq!(never_cancelled("afterfunc", None, None, &[]).0, "afterfunc");
        let not_run = Held::not_done("the leak proof is failed".into());
        let (verdict, e) = never_cancelled("timer", None, Some(&not_run), &[]);
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
    }
}
