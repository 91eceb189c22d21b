//! Folded stacks ("root;...;leaf count"), the input of flame graphs and of
//! other tools (speedscope, FlameGraph.pl). Built from the model through the
//! stack resolver.

use crate::gobin::symbolize::Frame;
use crate::goruntime::{is_system_function, is_user_function, wait_reason};
use crate::model::{GoroutineModel, State};
use crate::resolve::StackResolver;

/// One stack (innermost first, as the resolver gives it) with a weight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Weighted {
    pub frames: Vec<Frame>,
    /// Extra frame drawn under the root (e.g. the wait reason).
    pub root: Option<String>,
    /// Extra frame drawn above the leaf (e.g. `go main.worker`).
    pub leaf: Option<String>,
    pub weight: u64,
}

/// The four stack sets gotrace draws.
pub struct Stacks {
    /// Live user goroutines parked at the end, by blocked stack.
    pub blocked: Vec<Weighted>,
    /// Goroutines created during the trace, by creation stack.
    pub created: Vec<Weighted>,
    /// Time parked (µs) by blocked stack, under the wait reason.
    pub off_cpu: Vec<Weighted>,
    /// Leak suspects only (parked at least the threshold, in a wait that can
    /// leak: the report's suspects), by blocked stack.
    pub suspects: Vec<Weighted>,
}

pub fn collect(
    gs: &GoroutineModel,
    resolver: &mut StackResolver<'_>,
    wait_reasons: &std::collections::BTreeMap<u8, String>,
    end_ns: u64,
    leak_threshold_ns: u64,
) -> Stacks {
    let mut blocked = Vec::new();
    let mut suspects = Vec::new();
    for g in gs.live() {
        let State::Parked(p) = g.state() else {
            continue;
        };
        if is_system_function(&resolver.start_function(g.startpc())) {
            continue;
        }
        let frames = p.stack.map(|s| resolver.frames(s)).unwrap_or_default();
        let root = Some(wait_reason::text(wait_reasons, p.reason));
        // The report's rule for suspects (`report::groups`), not the
        // threshold alone: an accept loop idle by design is no suspect.
        let functions = frames.iter().map(|f| f.function.as_str());
        let user_code = frames.iter().any(|f| is_user_function(&f.function));
        let reason = wait_reason::of_value(wait_reasons, p.reason).pattern;
        let (pattern, _) = wait_reason::classify_stack(reason, functions, user_code);
        if end_ns.saturating_sub(p.since_ns) >= leak_threshold_ns && pattern.can_leak() {
            suspects.push(Weighted {
                frames: frames.clone(),
                root: root.clone(),
                leaf: None,
                weight: 1,
            });
        }
        blocked.push(Weighted {
            frames,
            root,
            leaf: None,
            weight: 1,
        });
    }
    let created: Vec<Weighted> = gs
        .creations()
        .iter()
        .map(|((stack, startpc), n)| Weighted {
            frames: stack.map(|s| resolver.frames(s)).unwrap_or_default(),
            root: None,
            leaf: Some(format!("go {}", resolver.start_function(*startpc))),
            weight: *n,
        })
        .collect();
    let off_cpu: Vec<Weighted> = gs
        .off_cpu_at(end_ns)
        .into_iter()
        .filter(|(_, ns)| *ns >= 1_000)
        .map(|((stack, reason), ns)| Weighted {
            frames: stack.map(|s| resolver.frames(s)).unwrap_or_default(),
            root: Some(wait_reason::text(wait_reasons, reason)),
            leaf: None,
            weight: ns / 1_000,
        })
        .collect();
    let mut stacks = Stacks {
        blocked,
        created,
        off_cpu,
        suspects,
    };
    // The model's maps iterate in no fixed order; exports must not depend
    // on it (a replayed recording gives byte-identical files).
    for set in [
        &mut stacks.blocked,
        &mut stacks.created,
        &mut stacks.off_cpu,
        &mut stacks.suspects,
    ] {
        set.sort_by(|a, b| {
            (&a.root, &a.frames, &a.leaf, a.weight).cmp(&(&b.root, &b.frames, &b.leaf, b.weight))
        });
    }
    stacks
}

/// Folded lines, root first, merged and sorted (stable output).
pub fn fold(stacks: &[Weighted]) -> Vec<String> {
    let mut merged: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    for s in stacks {
        let mut names: Vec<String> = s.root.iter().cloned().collect();
        names.extend(
            s.frames
                .iter()
                .rev()
                // Every goroutine's stack starts there: no information.
                .filter(|f| f.function != "runtime.goexit")
                .map(|f| f.function.replace(';', ":")),
        );
        names.extend(s.leaf.iter().cloned());
        if names.is_empty() {
            names.push("[unknown]".into());
        }
        let total = merged.entry(names.join(";")).or_default();
        *total = total.saturating_add(s.weight);
    }
    merged
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| format!("{k} {n}"))
        .collect()
}

/// pprof profiles of the same stacks: live blocked goroutines by stack
/// (`goroutine/count`, like Go's goroutine profile) and time parked
/// (`delay/nanoseconds`, like Go's block profile), both labelled with the
/// wait reason.
pub fn pprof_profiles(stacks: &Stacks, time_nanos: i64, duration_nanos: i64) -> (Vec<u8>, Vec<u8>) {
    use super::pprof::{Profile, Sample, encode};
    let samples = |set: &[Weighted], scale: i64| -> Vec<Sample> {
        set.iter()
            .map(|w| Sample {
                stack: w.frames.clone(),
                // Weights come from recorded timestamps: clamp, do not wrap.
                values: vec![
                    i64::try_from(w.weight)
                        .unwrap_or(i64::MAX)
                        .saturating_mul(scale),
                ],
                labels: w
                    .root
                    .iter()
                    .map(|r| ("wait_reason".to_string(), r.clone()))
                    .collect(),
            })
            .collect()
    };
    let profile = |ty: &str, unit: &str, samples: Vec<Sample>| Profile {
        sample_types: vec![(ty.to_string(), unit.to_string())],
        samples,
        time_nanos,
        duration_nanos,
        period_type: Some((ty.to_string(), unit.to_string())),
        period: 1,
        comments: vec!["gotrace".to_string()],
    };
    (
        encode(&profile("goroutine", "count", samples(&stacks.blocked, 1))),
        // off_cpu weights are microseconds.
        encode(&profile(
            "delay",
            "nanoseconds",
            samples(&stacks.off_cpu, 1_000),
        )),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str) -> Frame {
        Frame {
            function: name.into(),
            file: None,
            line: 0,
        }
    }

    #[test]
    fn folds_root_first_and_merges() {
        let a = Weighted {
            frames: vec![f("runtime.gopark"), f("main.work")],
            root: Some("chan receive".into()),
            leaf: None,
            weight: 2,
        };
        let lines = fold(&[a.clone(), a]);
        assert_eq!(lines, ["chan receive;main.work;runtime.gopark 4"]);
        let created = Weighted {
            frames: vec![f("main.start"), f("main.main")],
            root: None,
            leaf: Some("go main.worker".into()),
            weight: 3,
        };
        assert_eq!(fold(&[created]), ["main.main;main.start;go main.worker 3"]);
        assert_eq!(fold(&[]), Vec::<String>::new());
    }

    /// Weights computed from a corrupt recording's timestamps can be huge:
    /// they saturate instead of overflowing (found by fuzzing recording).
    #[test]
    fn huge_weights_saturate() {
        let w = Weighted {
            frames: vec![f("main.work")],
            root: Some("sleep".into()),
            leaf: None,
            weight: u64::MAX,
        };
        assert_eq!(
            fold(&[w.clone(), w.clone()]),
            [format!("sleep;main.work {}", u64::MAX)]
        );
        let stacks = Stacks {
            blocked: vec![w.clone()],
            created: Vec::new(),
            off_cpu: vec![w],
            suspects: Vec::new(),
        };
        let (goroutines, blocked) = pprof_profiles(&stacks, i64::MIN, i64::MAX);
        assert!(!goroutines.is_empty() && !blocked.is_empty());
    }
}
