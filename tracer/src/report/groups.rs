//! The goroutine half of the report: live goroutines grouped by (start
//! function, creation site, blocked site, wait reason), classified into the
//! leak patterns of the catalogue (README), plus per-site growth.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use super::grouping::{SAMPLE, add_parent, blocked_site, first_program_frame};
use super::{GoroutineCounts, Group, Growth, Summary};
use crate::gobin::symbolize::Frame;
use crate::goruntime::is_system_function;
use crate::goruntime::wait_reason::{self, Pattern};
use crate::model::{GoroutineModel, Origin, SiteKey, SiteStats, State};
use crate::resolve::StackResolver;

/// What grouping needs besides the model.
pub struct GroupInput<'a, 'r> {
    pub model: &'a GoroutineModel,
    pub resolver: &'a mut StackResolver<'r>,
    /// Wait-reason value → runtime constant name (from DWARF).
    pub wait_reasons: &'a BTreeMap<u8, String>,
    pub start_ns: u64,
    pub end_ns: u64,
    /// When the goroutines were last seen as the model holds them (ages and
    /// blocked times count up to it): `end_ns`, or the last sample.
    pub state_ns: u64,
    pub leak_threshold: Duration,
    /// Goids the leak proof proved leaked; None when it did not run.
    pub proven: Option<&'a HashSet<u64>>,
}

/// The goroutine half of the report.
pub struct Groups {
    pub counts: GoroutineCounts,
    pub verdict: String,
    pub suspect_count: usize,
    pub suspects: Vec<Group>,
    pub live: Vec<Group>,
    pub growth: Vec<Growth>,
}

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

/// The goroutines of one group, as they are found.
#[derive(Default)]
struct Members {
    goids: Vec<u64>,
    parents: Vec<u64>,
    ages: Vec<f64>,
    blocked_for: Vec<f64>,
    before_attach: usize,
    age_lower_bound: usize,
    blocked_before_attach: usize,
    blocked_seen_by_samples: usize,
    creation_stack: Vec<Frame>,
    blocked_stack: Vec<Frame>,
    site: Option<SiteKey>,
    proven: usize,
    suspects_unproven: usize,
    parked: usize,
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// Pattern from the wait reason, refined (or, without DWARF constants,
/// derived) from the blocked stack.
pub(crate) fn classify(
    raw_reason: u8,
    names: &BTreeMap<u8, String>,
    frames: &[Frame],
) -> (String, Pattern, Option<&'static str>) {
    let wait_reason::WaitReason { text, pattern } = wait_reason::of_value(names, raw_reason);
    let functions = frames.iter().map(|f| f.function.as_str());
    let user_code = first_program_frame(frames).is_some();
    let (pattern, idle) = wait_reason::classify_stack(pattern, functions, user_code);
    (text, pattern, idle)
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

pub fn build(input: GroupInput<'_, '_>) -> Groups {
    let GroupInput {
        model,
        resolver,
        wait_reasons,
        start_ns,
        end_ns,
        state_ns,
        leak_threshold,
        proven,
    } = input;
    let duration_s = secs(end_ns.saturating_sub(start_ns)).max(1e-9);
    let found = collect(
        model,
        resolver,
        wait_reasons,
        (state_ns, leak_threshold),
        proven,
    );
    let (suspects, live) = into_groups(found.groups, model, duration_s);
    let growth = growth(model, resolver, duration_s);
    let suspect_count: usize = suspects.iter().map(|g| g.count).sum();
    let stats = model.stats();
    Groups {
        counts: GoroutineCounts {
            created: stats.created,
            exited: stats.exited,
            live_at_end: model.live_count(),
            live_user: found.live_user,
            live_system: found.live_system,
            seen_before_attach: stats.seen_before_attach,
            read_at_attach: stats.from_snapshot,
            unseen_exits: stats.unseen_exits,
            created_seen_by_samples: stats.created_seen_by_samples,
            exited_seen_by_samples: stats.exited_seen_by_samples,
        },
        verdict: verdict(suspect_count, &suspects, proven.is_some()),
        suspect_count,
        suspects,
        live,
        growth,
    }
}

/// Live goroutines by group key, and how many are the program's.
struct Found {
    groups: HashMap<GroupKey, Members>,
    live_user: usize,
    live_system: usize,
}

/// Sorts every live goroutine into its group, as of `now_ns` (ages and
/// blocked times count up to it).
fn collect(
    model: &GoroutineModel,
    resolver: &mut StackResolver<'_>,
    wait_reasons: &BTreeMap<u8, String>,
    (now_ns, leak_threshold): (u64, Duration),
    proven: Option<&HashSet<u64>>,
) -> Found {
    let threshold_s = leak_threshold.as_secs_f64();
    let mut found = Found {
        groups: HashMap::new(),
        live_user: 0,
        live_system: 0,
    };
    let mut live: Vec<_> = model.live().collect();
    live.sort_by_key(|g| g.goid());
    for g in live {
        let start_function = resolver.start_function(g.startpc());
        if is_system_function(&start_function) {
            found.live_system += 1;
            continue;
        }
        found.live_user += 1;
        let created_at = resolver.pc(g.gopc(), true);
        let state = g.state();
        let parked_before_attach = matches!(&state, State::Parked(p) if p.before_attach);
        let leaked = proven.is_some_and(|p| p.contains(&g.goid()));
        let park_sampled = matches!(&state, State::Parked(p) if p.sampled);
        let (suspect, wait, pattern, idle, blocked_stack, blocked_for) = match state {
            State::Parked(p) => {
                let frames = p.stack.map(|s| resolver.frames(s)).unwrap_or_default();
                let (text, pattern, idle) = classify(p.reason, wait_reasons, &frames);
                let blocked_for = secs(now_ns.saturating_sub(p.since_ns));
                let suspect = blocked_for >= threshold_s && pattern.can_leak();
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
            suspect: suspect || leaked,
            start_function,
            created_at,
            blocked_at: blocked_site(&blocked_stack),
            wait_reason: wait,
            pattern,
            idle,
        };
        let m = found.groups.entry(key).or_default();
        if m.goids.is_empty() {
            m.creation_stack = g
                .create_stack()
                .map(|s| resolver.frames(s))
                .unwrap_or_default()
                .into_iter()
                .skip_while(|f| f.function.starts_with("runtime."))
                .collect();
            m.blocked_stack = blocked_stack;
            m.site = Some(g.site());
        }
        m.goids.push(g.goid());
        if leaked {
            m.proven += 1;
        } else if suspect {
            m.suspects_unproven += 1;
        } else if blocked_for.is_some() {
            m.parked += 1;
        }
        if let Some(p) = g.parent_goid() {
            add_parent(&mut m.parents, p);
        }
        m.blocked_for.extend(blocked_for);
        m.blocked_before_attach += usize::from(parked_before_attach);
        m.blocked_seen_by_samples += usize::from(park_sampled);
        m.age_lower_bound += usize::from(g.origin() == Origin::Sampled);
        match g.created_ns() {
            Some(t) => m.ages.push(secs(now_ns.saturating_sub(t))),
            None => m.before_attach += 1,
        }
    }
    found
}

/// The groups, suspects apart, each list in a fixed order.
fn into_groups(
    groups: HashMap<GroupKey, Members>,
    model: &GoroutineModel,
    duration_s: f64,
) -> (Vec<Group>, Vec<Group>) {
    let site_growth = |site: Option<SiteKey>| -> Option<f64> {
        let s = model.sites().get(&site?)?;
        (s.created > 0).then(|| (s.created as f64 - s.exited as f64) / duration_s)
    };
    let (mut suspects, mut others) = (Vec::new(), Vec::new());
    for (key, m) in groups {
        let suspect = key.suspect;
        let growth_per_s = site_growth(m.site);
        let group = group(key, m, growth_per_s);
        if suspect {
            suspects.push(group)
        } else {
            others.push(group)
        }
    }
    suspects.sort_by(order);
    others.sort_by(order);
    (suspects, others)
}

fn group(key: GroupKey, m: Members, growth_per_s: Option<f64>) -> Group {
    Group {
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
        count: m.goids.len(),
        sample_goids: m.goids.iter().copied().take(SAMPLE).collect(),
        parent_goids: m.parents,
        start_function: key.start_function,
        created_at: key.created_at,
        blocked_at: key.blocked_at,
        age_s: Summary::of(m.ages),
        age_lower_bound: m.age_lower_bound,
        before_attach: m.before_attach,
        blocked_for_s: Summary::of(m.blocked_for),
        blocked_before_attach: m.blocked_before_attach,
        blocked_seen_by_samples: m.blocked_seen_by_samples,
        creation_stack: m.creation_stack,
        blocked_stack: m.blocked_stack,
        growth_per_s,
        proven_leaked: m.proven,
        suspects_unproven: m.suspects_unproven,
        parked: m.parked,
    }
}

/// Biggest first, then longest blocked; ties in a fixed order, so outputs
/// never depend on hash order.
fn order(a: &Group, b: &Group) -> std::cmp::Ordering {
    let age = |g: &Group| g.blocked_for_s.as_ref().map(|s| s.max).unwrap_or(0.0);
    b.count
        .cmp(&a.count)
        .then(age(b).total_cmp(&age(a)))
        .then(a.start_function.cmp(&b.start_function))
        .then_with(|| a.created_at.cmp(&b.created_at))
        .then_with(|| a.blocked_at.cmp(&b.blocked_at))
        .then_with(|| a.wait_reason.cmp(&b.wait_reason))
        .then_with(|| a.sample_goids.cmp(&b.sample_goids))
}

/// Per creation site of the program: created, exited, and whether the live
/// count grew without bound.
fn growth(
    model: &GoroutineModel,
    resolver: &mut StackResolver<'_>,
    duration_s: f64,
) -> Vec<Growth> {
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
    growth
}

fn verdict(suspect_count: usize, suspects: &[Group], proof_ran: bool) -> String {
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    let leaked: usize = suspects.iter().map(|g| g.proven_leaked).sum();
    let unproven: usize = suspects.iter().map(|g| g.suspects_unproven).sum();
    if proof_ran && leaked + unproven > 0 {
        let groups = suspects.iter().filter(|g| g.proven_leaked > 0).count();
        let mut v = if leaked == 0 {
            "no leak proven".to_string()
        } else {
            format!(
                "{leaked} goroutine{} proven leaked in {groups} group{}",
                plural(leaked),
                plural(groups)
            )
        };
        if unproven > 0 {
            v.push_str(&format!(
                "; {unproven} more parked past the threshold (suspects, not proven)"
            ));
        }
        return v;
    }
    if suspect_count == 0 {
        return "no leak suspects".to_string();
    }
    let groups = suspects.len();
    format!(
        "{suspect_count} leak suspect{} in {groups} group{}",
        plural(suspect_count),
        plural(groups)
    )
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
}
