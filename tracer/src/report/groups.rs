//! Builds the report from the model: live goroutines grouped by (start
//! function, creation site, blocked site, wait reason), classified into the
//! leak patterns of `shared/leak-patterns.md`, plus per-site growth.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use super::resolve::StackResolver;
use super::{GoroutineCounts, Group, Growth, Report, SCHEMA_VERSION, Summary, Target, Tool, Trace};
use crate::gobin::symbolize::Frame;
use crate::goruntime::wait_reason::{self, Pattern};
use crate::goruntime::{is_system_function, is_user_function};
use crate::model::{GoroutineModel, Origin, SiteKey, SiteStats, State};

/// Everything the report needs besides the model.
pub struct BuildInput<'a, 'r> {
    pub model: &'a GoroutineModel,
    pub resolver: &'a mut StackResolver<'r>,
    /// Wait-reason value → runtime constant name (from DWARF).
    pub wait_reasons: &'a BTreeMap<u8, String>,
    pub start_ns: u64,
    pub end_ns: u64,
    pub leak_threshold: Duration,
    pub target: Target,
    /// Trace metadata; its duration and threshold are filled in here.
    pub trace: Trace,
}

const SAMPLE_GOIDS: usize = 5;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct GroupKey {
    suspect: bool,
    start_function: String,
    created_at: Option<Frame>,
    blocked_at: Option<Frame>,
    wait_reason: Option<String>,
    pattern: Pattern,
    /// What an idle-by-design standard-library goroutine is.
    idle: Option<&'static str>,
}

#[derive(Default)]
struct Acc {
    goids: Vec<u64>,
    parents: Vec<u64>,
    ages: Vec<f64>,
    blocked_for: Vec<f64>,
    before_attach: usize,
    blocked_before_attach: usize,
    creation_stack: Vec<Frame>,
    blocked_stack: Vec<Frame>,
    site: Option<SiteKey>,
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// Pattern from the wait reason, refined (or, without DWARF constants,
/// derived) from the blocked stack.
fn classify(
    raw_reason: u8,
    names: &BTreeMap<u8, String>,
    frames: &[Frame],
) -> (String, Pattern, Option<&'static str>) {
    let (text, pattern) = match names.get(&raw_reason) {
        Some(name) => {
            let r = wait_reason::from_constant(name);
            (r.text, r.pattern)
        }
        None => (format!("wait reason {raw_reason}"), Pattern::Other),
    };
    let functions = frames.iter().map(|f| f.function.as_str());
    let user_code = frames.iter().any(|f| is_program_frame(&f.function));
    let (pattern, idle) = wait_reason::classify_stack(pattern, functions, user_code);
    (text, pattern, idle)
}

/// The program's own code (`go` statement wrappers are already hidden by the
/// resolver).
fn is_program_frame(function: &str) -> bool {
    is_user_function(function)
}

fn blocked_site(frames: &[Frame]) -> Option<Frame> {
    frames
        .iter()
        .find(|f| is_program_frame(&f.function))
        .or_else(|| frames.iter().find(|f| !f.function.starts_with("runtime.")))
        .cloned()
}

/// Live count rose across the whole trace, not just once: the first third,
/// middle and end of the samples are strictly increasing, the count rarely
/// dropped, and it grew by at least one goroutine a second.
fn unbounded(site: &SiteStats) -> bool {
    let s = &site.samples;
    let n = s.len();
    if n < 4 || site.live < 10 {
        return false;
    }
    let (v0, v1, v2, v3) = (s[0].1, s[n / 3].1, s[2 * n / 3].1, s[n - 1].1);
    let rising = v0 < v1 && v1 < v2 && v2 <= v3;
    rising && site.monotonic_fraction() >= 0.7 && site.live_slope().is_some_and(|k| k >= 1.0)
}

pub fn build(input: BuildInput<'_, '_>) -> Report {
    let BuildInput {
        model,
        resolver,
        wait_reasons,
        start_ns,
        end_ns,
        leak_threshold,
        target,
        mut trace,
    } = input;
    let duration_s = secs(end_ns.saturating_sub(start_ns)).max(1e-9);
    let threshold_s = leak_threshold.as_secs_f64();
    let mut groups: HashMap<GroupKey, Acc> = HashMap::new();
    let (mut live_user, mut live_system) = (0, 0);

    let mut live: Vec<_> = model.live().collect();
    live.sort_by_key(|g| g.goid());
    for g in live {
        let start_function = resolver.start_function(g.startpc());
        if is_system_function(&start_function) {
            live_system += 1;
            continue;
        }
        live_user += 1;
        let created_at = resolver.pc(g.gopc(), true);
        let state = g.state();
        let parked_before_attach = matches!(&state, State::Parked(p) if p.before_attach);
        let (suspect, wait, pattern, idle, blocked_stack, blocked_for) = match state {
            State::Parked(p) => {
                let frames = p.stack.map(|s| resolver.frames(s)).unwrap_or_default();
                let (text, pattern, idle) = classify(p.reason, wait_reasons, &frames);
                let blocked_for = secs(end_ns.saturating_sub(p.since_ns));
                let suspect = blocked_for >= threshold_s
                    && !matches!(pattern, Pattern::Runtime | Pattern::Idle);
                (
                    suspect,
                    Some(text),
                    pattern,
                    idle,
                    frames,
                    Some(blocked_for),
                )
            }
            State::Runnable => (false, None, Pattern::Other, None, Vec::new(), None),
        };
        let key = GroupKey {
            suspect,
            start_function,
            created_at,
            blocked_at: blocked_site(&blocked_stack),
            wait_reason: wait,
            pattern,
            idle,
        };
        let acc = groups.entry(key).or_default();
        if acc.goids.is_empty() {
            acc.creation_stack = g
                .create_stack()
                .map(|s| resolver.frames(s))
                .unwrap_or_default()
                .into_iter()
                .skip_while(|f| f.function.starts_with("runtime."))
                .collect();
            acc.blocked_stack = blocked_stack;
            acc.site = Some(g.site());
        }
        acc.goids.push(g.goid());
        if let Some(p) = g.parent_goid()
            && acc.parents.len() < SAMPLE_GOIDS
            && !acc.parents.contains(&p)
        {
            acc.parents.push(p);
        }
        acc.blocked_for.extend(blocked_for);
        acc.blocked_before_attach += usize::from(parked_before_attach);
        match (g.origin(), g.created_ns()) {
            (Origin::Created, Some(t)) => acc.ages.push(secs(end_ns.saturating_sub(t))),
            _ => acc.before_attach += 1,
        }
    }

    let site_growth = |site: Option<SiteKey>| -> Option<f64> {
        let s = model.sites().get(&site?)?;
        (s.created > 0).then(|| (s.created as f64 - s.exited as f64) / duration_s)
    };
    let (mut suspects, mut others) = (Vec::new(), Vec::new());
    for (key, acc) in groups {
        let group = Group {
            pattern: key.pattern,
            description: if let Some(what) = key.idle {
                format!("{what} (idle by design)")
            } else if key.wait_reason.is_some() {
                key.pattern.describe().to_string()
            } else {
                "runnable or running".to_string()
            },
            leak_pattern: key
                .pattern
                .leak_pattern_number()
                .filter(|_| key.wait_reason.is_some()),
            state: if key.wait_reason.is_some() {
                "blocked"
            } else {
                "runnable"
            }
            .to_string(),
            wait_reason: key.wait_reason,
            count: acc.goids.len(),
            sample_goids: acc.goids.iter().copied().take(SAMPLE_GOIDS).collect(),
            parent_goids: acc.parents,
            start_function: key.start_function,
            created_at: key.created_at,
            blocked_at: key.blocked_at,
            age_s: Summary::of(acc.ages),
            before_attach: acc.before_attach,
            blocked_for_s: Summary::of(acc.blocked_for),
            blocked_before_attach: acc.blocked_before_attach,
            creation_stack: acc.creation_stack,
            blocked_stack: acc.blocked_stack,
            growth_per_s: site_growth(acc.site),
        };
        if key.suspect {
            suspects.push(group)
        } else {
            others.push(group)
        }
    }
    let order = |a: &Group, b: &Group| {
        let age = |g: &Group| g.blocked_for_s.as_ref().map(|s| s.max).unwrap_or(0.0);
        b.count
            .cmp(&a.count)
            .then(age(b).total_cmp(&age(a)))
            .then(a.start_function.cmp(&b.start_function))
            // Ties in a fixed order: outputs must not depend on hash order.
            .then_with(|| a.created_at.cmp(&b.created_at))
            .then_with(|| a.blocked_at.cmp(&b.blocked_at))
            .then_with(|| a.wait_reason.cmp(&b.wait_reason))
            .then_with(|| a.sample_goids.cmp(&b.sample_goids))
    };
    suspects.sort_by(order);
    others.sort_by(order);

    let mut growth: Vec<Growth> = model
        .sites()
        .iter()
        .filter(|(_, s)| s.created > 0)
        .filter_map(|(key, s)| {
            let start_function = resolver.start_function(key.startpc);
            if is_system_function(&start_function) {
                return None;
            }
            let unbounded = unbounded(s);
            Some(Growth {
                start_function,
                created_at: resolver.pc(key.gopc, true),
                created: s.created,
                exited: s.exited,
                live_at_end: s.live,
                net_per_s: (s.created as f64 - s.exited as f64) / duration_s,
                live_slope_per_s: s.live_slope(),
                unbounded,
                description: unbounded.then(|| {
                    "unbounded goroutine growth: goroutines from this site pile up linearly with load".into()
                }),
            })
        })
        .collect();
    growth.sort_by(|a, b| {
        b.net_per_s
            .total_cmp(&a.net_per_s)
            .then(b.created.cmp(&a.created))
            .then_with(|| a.start_function.cmp(&b.start_function))
            .then_with(|| a.created_at.cmp(&b.created_at))
    });

    let suspect_count: usize = suspects.iter().map(|g| g.count).sum();
    let verdict = if suspect_count == 0 {
        "no leak suspects".to_string()
    } else {
        let plural = |n: usize| if n == 1 { "" } else { "s" };
        format!(
            "{suspect_count} leak suspect{} in {} group{}",
            plural(suspect_count),
            suspects.len(),
            plural(suspects.len())
        )
    };
    let stats = model.stats();
    trace.duration_s = duration_s;
    trace.leak_threshold_s = threshold_s;
    trace.duplicates_ignored = stats.duplicates;
    trace.inconsistent_events = stats.inconsistent;
    Report {
        schema_version: SCHEMA_VERSION,
        tool: Tool {
            name: "gotrace",
            version: env!("CARGO_PKG_VERSION"),
        },
        target,
        trace,
        goroutines: GoroutineCounts {
            created: stats.created,
            exited: stats.exited,
            live_at_end: model.live_count(),
            live_user,
            live_system,
            seen_before_attach: stats.seen_before_attach,
            read_at_attach: stats.from_snapshot,
            unseen_exits: stats.unseen_exits,
        },
        verdict,
        suspect_count,
        suspects,
        live: others,
        growth,
        contexts: Default::default(),
        timers: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_needs_sustained_rise() {
        let linear = SiteStats {
            live: 300,
            samples: (0..6).map(|i| (i as f64, 100 * i as u64)).collect(),
            ..Default::default()
        };
        assert!(unbounded(&linear));
        let burst = SiteStats {
            live: 10,
            samples: vec![(0.0, 0), (1.0, 10), (2.0, 10), (3.0, 10), (4.0, 10)],
            ..Default::default()
        };
        assert!(!unbounded(&burst));
    }

    #[test]
    fn blocked_site_prefers_program_code() {
        let f = |name: &str| Frame {
            function: name.into(),
            file: None,
            line: 0,
        };
        let frames = vec![
            f("runtime.gopark"),
            f("sync.(*WaitGroup).Wait"),
            f("main.waiter"),
        ];
        assert_eq!(blocked_site(&frames).unwrap().function, "main.waiter");
        let std_only = vec![f("runtime.gopark"), f("net/http.(*conn).serve")];
        assert_eq!(
            blocked_site(&std_only).unwrap().function,
            "net/http.(*conn).serve"
        );
    }
}
