//! The leak proof in words: one summary line, and per group what keeps
//! the goroutines that can still be woken (the engineer's next question).

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;

use crate::proof::{KeptBy, Proof, Verdict};

/// "kept by the global main.cache", "kept by goroutine 12 (main.dispatch)".
pub fn kept_by(k: &KeptBy) -> String {
    match k.kind.as_str() {
        "global" => format!("the global {}", k.name.as_deref().unwrap_or("?")),
        "goroutine" => match (&k.goid, &k.function) {
            (Some(id), Some(f)) => format!("goroutine {id}'s stack ({f})"),
            (Some(id), None) => format!("goroutine {id}'s stack"),
            _ => "a goroutine's stack".into(),
        },
        "not_heap" => "a primitive outside the heap (a global or a stack)".into(),
        "finalizer" => "a finalizer".into(),
        "tiny_block" => {
            "a tiny-allocation block the runtime keeps whole (small pointer-free objects share it)"
                .into()
        }
        _ => "a runtime special record".into(),
    }
}

/// Lines under a group: why its wakeable goroutines are not leaks, and how
/// many could not be decided.
pub fn kept_lines(out: &mut String, p: &Proof, goids: &[u64]) {
    let ids: HashSet<u64> = goids.iter().copied().collect();
    let mut kept: BTreeMap<String, usize> = BTreeMap::new();
    let mut unproven: BTreeMap<String, usize> = BTreeMap::new();
    for g in p.goroutines.iter().filter(|g| ids.contains(&g.goid)) {
        match (g.verdict, &g.kept_by, &g.unproven_reason) {
            (Verdict::Wakeable, Some(k), _) => *kept.entry(kept_by(k)).or_default() += 1,
            (Verdict::Unproven, _, Some(r)) => {
                *unproven.entry(format!("{r:?}").to_lowercase()).or_default() += 1
            }
            _ => {}
        }
    }
    for (what, n) in kept {
        let _ = writeln!(
            out,
            "# can be woken ({n}): its primitive is reachable from {what}"
        );
    }
    if !unproven.is_empty() {
        let why: Vec<String> = unproven.iter().map(|(r, n)| format!("{r} {n}")).collect();
        let _ = writeln!(out, "# unproven: {}", why.join(", "));
    }
}

/// One line: what the proof found and how sure it is.
pub fn summary(p: &Proof) -> String {
    if !p.done() {
        return format!(
            "leak proof {}: {}",
            if p.status == "unsupported" {
                "not available"
            } else {
                "failed"
            },
            p.error.as_deref().unwrap_or("?")
        );
    }
    let mut s = format!(
        "leak proof: {} leaked (proven: nothing reachable can wake them), {} can be woken, {} unproven",
        p.leaked, p.wakeable, p.unproven
    );
    if !p.unproven_reasons.is_empty() {
        let why: Vec<String> = p
            .unproven_reasons
            .iter()
            .map(|(r, n)| format!("{} {n}", format!("{r:?}").to_lowercase()))
            .collect();
        let _ = write!(s, " ({})", why.join(", "));
    }
    let _ = write!(
        s,
        " of {} parked on channels or locks; {} passes in {:.0} ms",
        p.candidates, p.passes, p.took_ms
    );
    if p.running > 0 {
        let _ = write!(
            s,
            "; registers of {} running goroutines not read",
            p.running
        );
    }
    s
}
