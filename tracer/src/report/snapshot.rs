//! `gotrace snapshot`'s output: goroutines grouped by (state and wait
//! reason, start function, creation site, stack), printed like the pprof
//! goroutine profile with `debug=2` but one entry per group, or as JSON.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use serde::Serialize;

use super::Summary;
use super::grouping::{add_parent, first_program_frame};
use crate::gobin::symbolize::Frame;
use crate::goruntime::gstatus::GState;
use crate::goruntime::{is_system_function, wait_reason};
use crate::model::StackRef;
use crate::model::existing::{SnapGoroutine, SnapStats, Snapshot};
use crate::resolve::StackResolver;

#[derive(Clone, Debug, Serialize)]
pub struct SnapGroup {
    pub count: usize,
    /// "waiting", "runnable", "running", "syscall", "preempted", "leaked".
    pub state: GState,
    /// Go's wait-reason string ("chan receive") of parked goroutines.
    pub wait_reason: Option<String>,
    /// The runtime's own goroutines (shown with --all).
    pub system: bool,
    /// What the goroutines run (g.startpc; `go` wrappers resolved).
    pub start_function: String,
    /// The `go` statement that created them (g.gopc).
    pub created_at: Option<Frame>,
    /// First frame of the program's own code in the stack.
    pub blocked_at: Option<Frame>,
    /// Distinct creator goids (Go 1.21+), up to 5.
    pub parent_goids: Vec<u64>,
    /// Seconds blocked, at least (from g.waitsince), for the goroutines of
    /// the group where the runtime recorded it.
    pub blocked_for_s: Option<Summary>,
    /// How many of them have no blocked-since time recorded (no GC since
    /// they parked).
    pub blocked_since_unknown: usize,
    /// Innermost first, without runtime.goexit.
    pub stack: Vec<Frame>,
    /// Why there is no stack (running, or changing while read).
    pub no_stack: Option<&'static str>,
    /// Every goroutine of the group.
    pub goids: Vec<u64>,
    /// How many of them the leak proof proved leaked, and which.
    pub leaked: usize,
    pub leaked_goids: Vec<u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SnapReport {
    pub pid: u32,
    pub exe: String,
    pub go_version: String,
    /// Goroutines read (system ones included).
    pub total: usize,
    /// Goroutines of the program (not the runtime's own).
    pub user: usize,
    pub system: usize,
    pub took_ms: f64,
    pub groups: Vec<SnapGroup>,
    pub stats: SnapStats,
    /// The leak proof (`--prove`), else None.
    pub proof: Option<crate::proof::Proof>,
}

impl SnapReport {
    /// The report of `snap` (of process `pid` running `exe`, Go
    /// `go_version`): its counts and stats, `groups` as built from it
    /// (`system` of its goroutines are the runtime's), no proof yet.
    pub fn of(
        (pid, exe, go_version): (u32, String, String),
        snap: &Snapshot,
        system: usize,
        groups: Vec<SnapGroup>,
    ) -> Self {
        SnapReport {
            pid,
            exe,
            go_version,
            total: snap.goroutines.len(),
            user: snap.goroutines.len() - system,
            system,
            took_ms: snap.took_ns as f64 / 1e6,
            groups,
            stats: snap.stats.clone(),
            proof: None,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    state: GState,
    reason: Option<u8>,
    startpc: u64,
    gopc: u64,
    stack: Option<i32>,
}

/// Groups `snap`; `all` keeps the runtime's own goroutines.
pub fn build(
    snap: &Snapshot,
    resolver: &mut StackResolver<'_>,
    wait_reasons: &BTreeMap<u8, String>,
    all: bool,
) -> (Vec<SnapGroup>, usize) {
    let mut by_key: HashMap<Key, Vec<&SnapGoroutine>> = HashMap::new();
    for g in &snap.goroutines {
        let key = Key {
            state: g.state,
            reason: g.wait_reason,
            startpc: g.startpc,
            gopc: g.gopc,
            stack: g.stack,
        };
        by_key.entry(key).or_default().push(g);
    }
    let mut groups = Vec::new();
    let mut system_count = 0;
    for (key, gs) in by_key {
        let start_function = resolver.start_function(key.startpc);
        let system = is_system_function(&start_function);
        if system {
            system_count += gs.len();
            if !all {
                continue;
            }
        }
        let mut stack = key
            .stack
            .map(|id| resolver.frames(StackRef { id, caller_pc: 0 }))
            .unwrap_or_default();
        while stack.last().is_some_and(|f| f.function == "runtime.goexit") {
            stack.pop();
        }
        let wait_reason = key.reason.map(|r| wait_reason::text(wait_reasons, r));
        let mut parents = Vec::new();
        for p in gs.iter().filter_map(|g| g.parent_goid) {
            add_parent(&mut parents, p);
        }
        let since: Vec<f64> = gs
            .iter()
            .filter_map(|g| g.blocked_since_ns)
            .map(|t| snap.taken_ns.saturating_sub(t) as f64 / 1e9)
            .collect();
        groups.push(SnapGroup {
            count: gs.len(),
            state: key.state,
            blocked_since_unknown: if key.state.is_parked() {
                gs.len() - since.len()
            } else {
                0
            },
            wait_reason,
            system,
            start_function,
            created_at: resolver.pc(key.gopc, true),
            blocked_at: first_program_frame(&stack).cloned(),
            parent_goids: parents,
            blocked_for_s: Summary::of(since),
            no_stack: match (key.stack, key.state) {
                (Some(_), _) => None,
                (None, GState::Running) => Some("running on another thread"),
                (None, _) => Some("it kept changing while read"),
            },
            stack,
            goids: gs.iter().map(|g| g.goid).collect(),
            leaked: 0,
            leaked_goids: Vec::new(),
        });
    }
    groups.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.state.cmp(&b.state))
            .then_with(|| a.wait_reason.cmp(&b.wait_reason))
            .then_with(|| a.start_function.cmp(&b.start_function))
            .then_with(|| a.created_at.cmp(&b.created_at))
            .then_with(|| a.goids.cmp(&b.goids))
    });
    (groups, system_count)
}

/// Counts in each group the goroutines `proof` proved leaked.
pub fn apply_proof(groups: &mut [SnapGroup], proof: &crate::proof::Proof) {
    let leaked: std::collections::HashSet<u64> = proof.leaked_goids().collect();
    for g in groups {
        g.leaked_goids = g
            .goids
            .iter()
            .copied()
            .filter(|id| leaked.contains(id))
            .collect();
        g.leaked = g.leaked_goids.len();
    }
}

/// Whole minutes, as Go's traceback header prints them ("5 minutes").
fn minutes(g: &SnapGroup) -> Option<String> {
    let s = g.blocked_for_s.as_ref()?;
    let (lo, hi) = ((s.min / 60.0) as u64, (s.max / 60.0) as u64);
    let lo = if g.blocked_since_unknown > 0 { 0 } else { lo };
    match (lo, hi) {
        (_, 0) => None,
        (1, 1) => Some("1 minute".into()),
        (a, b) if a == b => Some(format!("{a} minutes")),
        (a, b) => Some(format!("{a}-{b} minutes")),
    }
}

const GOIDS_SHOWN: usize = 10;

fn frame_lines(out: &mut String, f: &Frame) {
    let _ = writeln!(out, "{}(...)", f.function);
    match &f.file {
        Some(file) => {
            let _ = writeln!(out, "\t{file}:{}", f.line);
        }
        None => {
            let _ = writeln!(out, "\t?");
        }
    }
}

/// The pprof-like text (stdout of `gotrace snapshot`).
pub fn render(r: &SnapReport) -> String {
    let mut out = String::new();
    let shown: usize = r.groups.iter().map(|g| g.count).sum();
    let _ = writeln!(out, "goroutine profile: total {shown}\n");
    for g in &r.groups {
        let mut what = g
            .wait_reason
            .clone()
            .unwrap_or_else(|| g.state.text().to_string());
        if let Some(m) = minutes(g) {
            what = format!("{what}, {m}");
        }
        let _ = writeln!(
            out,
            "{} goroutine{}: [{what}]",
            g.count,
            if g.count == 1 { "" } else { "s" }
        );
        let ids: Vec<String> = g
            .goids
            .iter()
            .take(GOIDS_SHOWN)
            .map(u64::to_string)
            .collect();
        let more = g.goids.len().saturating_sub(GOIDS_SHOWN);
        let more = if more > 0 {
            format!(" ... ({more} more)")
        } else {
            String::new()
        };
        let _ = writeln!(out, "# goids {}{more}", ids.join(" "));
        if g.leaked > 0 {
            let _ = writeln!(
                out,
                "# LEAKED (proven: nothing reachable can wake it): {} of {}",
                g.leaked, g.count
            );
        }
        if let Some(p) = &r.proof {
            super::proof_text::kept_lines(&mut out, p, &g.goids);
        }
        if let Some(why) = g.no_stack {
            let _ = writeln!(out, "(stack unavailable: {why})");
        }
        for f in &g.stack {
            frame_lines(&mut out, f);
        }
        // Like Go, no "created by" for the main goroutine.
        if let Some(c) = g.created_at.as_ref().filter(|_| g.goids != [1]) {
            let by = match g.parent_goids.as_slice() {
                [] => String::new(),
                [one] => format!(" in goroutine {one}"),
                many => {
                    let ids: Vec<String> = many.iter().map(u64::to_string).collect();
                    format!(" in goroutines {}", ids.join(", "))
                }
            };
            let _ = writeln!(out, "created by {}{by}", c.function);
            let _ = writeln!(out, "\t{}:{}", c.file.as_deref().unwrap_or("?"), c.line);
        }
        let _ = writeln!(out);
    }
    out
}

/// The one-line summary (stderr of `gotrace snapshot`).
pub fn summary(r: &SnapReport, all: bool) -> String {
    let s = &r.stats;
    let hidden = if all || r.system == 0 {
        String::new()
    } else {
        format!(", {} of the runtime's own not shown (--all)", r.system)
    };
    format!(
        "PID {}: {} goroutines ({} user{hidden}) in {} groups, read in {:.1} ms \
         (allgs {}: {} free; {} re-read, {} kept changing, {} skipped; {} reads)",
        r.pid,
        r.total,
        r.user,
        r.groups.len(),
        r.took_ms,
        s.allgs,
        s.free,
        s.retried,
        s.unstable,
        s.skipped,
        s.reads
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(min: f64, max: f64, unknown: usize) -> SnapGroup {
        SnapGroup {
            count: 3,
            state: GState::Waiting,
            wait_reason: Some("chan receive".into()),
            system: false,
            start_function: "main.f".into(),
            created_at: None,
            blocked_at: None,
            parent_goids: vec![],
            leaked: 0,
            leaked_goids: Vec::new(),
            blocked_for_s: Some(Summary {
                min,
                median: min,
                max,
            }),
            blocked_since_unknown: unknown,
            stack: vec![],
            no_stack: None,
            goids: vec![5, 6, 7],
        }
    }

    #[test]
    fn minutes_like_go() {
        assert_eq!(minutes(&group(10.0, 59.0, 0)), None);
        assert_eq!(minutes(&group(60.0, 119.0, 0)).unwrap(), "1 minute");
        assert_eq!(minutes(&group(300.0, 359.0, 0)).unwrap(), "5 minutes");
        assert_eq!(minutes(&group(125.0, 400.0, 0)).unwrap(), "2-6 minutes");
        // Some have no time recorded: they may have parked just now.
        assert_eq!(minutes(&group(300.0, 300.0, 1)).unwrap(), "0-5 minutes");
        let r = SnapReport {
            pid: 1,
            exe: "x".into(),
            go_version: "go1.26.6".into(),
            total: 3,
            user: 3,
            system: 0,
            took_ms: 1.0,
            groups: vec![group(300.0, 300.0, 0)],
            stats: SnapStats::default(),
            proof: None,
        };
        let text = render(&r);
        assert!(
            text.starts_with(
                "goroutine profile: total 3\n\n3 goroutines: [chan receive, 5 minutes]\n# goids 5 6 7\n"
            ),
            "{text}"
        );
    }
}
