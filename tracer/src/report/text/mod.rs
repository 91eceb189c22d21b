//! The human summary printed at the end of a trace.

use std::fmt::Write as _;

mod contexts;

use super::{Group, Report, Summary};
use crate::gobin::symbolize::Frame;

const STACK_LINES: usize = 12;

/// GOROOT of the target's toolchain, recovered from a runtime frame's file
/// (`<GOROOT>/src/runtime/proc.go`), to print standard-library paths short.
fn goroot(r: &Report) -> Option<String> {
    r.suspects
        .iter()
        .chain(&r.live)
        .flat_map(|g| &g.blocked_stack)
        .find_map(|f| {
            let file = f.file.as_deref()?;
            if !f.function.starts_with("runtime.") {
                return None;
            }
            file.find("/src/runtime/").map(|i| file[..i].to_string())
        })
}

struct Paths(Option<String>);

impl Paths {
    fn frame(&self, f: &Frame) -> String {
        match (&f.file, &self.0) {
            (Some(file), Some(root)) if file.starts_with(root.as_str()) => {
                format!("{} ($GOROOT{}:{})", f.function, &file[root.len()..], f.line)
            }
            (Some(file), _) => format!("{} ({}:{})", f.function, file, f.line),
            (None, _) => f.function.clone(),
        }
    }
}

fn span(s: &Option<Summary>) -> String {
    match s {
        Some(s) if (s.max - s.min) < 0.05 => format!("{:.1}s", s.max),
        Some(s) => format!("{:.1}s..{:.1}s (median {:.1}s)", s.min, s.max, s.median),
        None => "-".into(),
    }
}

fn group(out: &mut String, p: &Paths, i: usize, g: &Group, stacks: bool) {
    let pattern = g
        .leak_pattern
        .map(|n| format!("  [leak pattern {n}]"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "[{i}] {} goroutine(s): {}{pattern}",
        g.count, g.description
    );
    if let Some(w) = &g.wait_reason {
        let bound = match (g.blocked_before_attach, g.blocked_seen_by_samples) {
            (0, 0) => String::new(),
            (n, 0) if n == g.count => " or more (blocked before attach)".to_string(),
            (n, 0) => format!("; {n} blocked before attach: or more"),
            (0, n) if n == g.count => " or more (parks seen by samples)".to_string(),
            (a, n) => format!(
                "; {} seen blocked by samples or before attach: or more",
                a + n
            ),
        };
        let _ = writeln!(
            out,
            "    wait reason:  {w}, blocked for {}{bound}",
            span(&g.blocked_for_s)
        );
    }
    let age = if g.before_attach == g.count {
        "created before attach".to_string()
    } else if g.age_lower_bound > 0 {
        let before = match g.before_attach {
            0 => String::new(),
            n => format!(", {n} created before attach"),
        };
        format!(
            "{} or more ({} first seen by a sample{before})",
            span(&g.age_s),
            g.age_lower_bound
        )
    } else if g.before_attach > 0 {
        format!(
            "{} ({} created before attach)",
            span(&g.age_s),
            g.before_attach
        )
    } else {
        span(&g.age_s)
    };
    let _ = writeln!(out, "    runs:         {}   age {age}", g.start_function);
    if let Some(c) = &g.created_at {
        let _ = writeln!(out, "    created at:   {}", p.frame(c));
    }
    if let Some(b) = &g.blocked_at {
        let _ = writeln!(out, "    blocked at:   {}", p.frame(b));
    }
    let ids: Vec<String> = g.sample_goids.iter().map(u64::to_string).collect();
    let _ = writeln!(
        out,
        "    goids:        {}{}",
        ids.join(" "),
        if g.count > ids.len() { " ..." } else { "" }
    );
    if stacks {
        for (title, st) in [
            ("blocked stack", &g.blocked_stack),
            ("creation stack", &g.creation_stack),
        ] {
            if st.is_empty() {
                continue;
            }
            let _ = writeln!(out, "    {title}:");
            for f in st.iter().take(STACK_LINES) {
                let _ = writeln!(out, "      {}", p.frame(f));
            }
            if st.len() > STACK_LINES {
                let _ = writeln!(out, "      ... {} more", st.len() - STACK_LINES);
            }
        }
    }
}

pub fn render(r: &Report, context_trees: bool) -> String {
    let mut out = String::new();
    let paths = Paths(goroot(r));
    header(&mut out, r);
    if r.trace.mode != "sampled" {
        kernel_lines(&mut out, r);
    }
    budget_lines(&mut out, r);
    samples_line(&mut out, r);
    let _ = writeln!(out);
    suspects(&mut out, r, &paths);
    unbounded_growth(&mut out, r, &paths);
    if !r.live.is_empty() {
        let _ = writeln!(out, "\nother live goroutines:");
        for (i, grp) in r.live.iter().enumerate() {
            group(&mut out, &paths, i + 1, grp, false);
        }
    }
    contexts::render_timers(&mut out, &r.timers, &|f| paths.frame(f));
    contexts::render(&mut out, &r.contexts, context_trees, &|f| paths.frame(f));
    out
}

/// What was traced, the goroutine counts, the snapshot at attach.
fn header(out: &mut String, r: &Report) {
    let t = &r.target;
    let _ = writeln!(
        out,
        "gotrace: pid {} {} ({}), traced {:.1}s, ended by {}{}",
        t.pid,
        t.exe,
        t.go_version,
        r.trace.duration_s,
        r.trace.ended_by,
        t.exit
            .as_ref()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default()
    );
    let g = &r.goroutines;
    let seen = |n: u64, what: &str| match n {
        0 => String::new(),
        n => format!(" ({n} {what} only by samples: a lower bound)"),
    };
    let _ = writeln!(
        out,
        "goroutines: {} created{}, {} exited{}, {} live at end ({} user, {} runtime); {} already running at attach",
        g.created,
        seen(g.created_seen_by_samples, "seen"),
        g.exited,
        seen(g.exited_seen_by_samples, "seen gone"),
        g.live_at_end,
        g.live_user,
        g.live_system,
        g.seen_before_attach
    );
    match &r.trace.snapshot {
        Some(s) if s.error.is_none() => {
            let st = &s.stats;
            let _ = writeln!(
                out,
                "snapshot at attach: {} goroutines read in {:.1} ms ({} re-read, {} kept changing, {} skipped)",
                s.goroutines, s.took_ms, st.retried, st.unstable, st.skipped
            );
        }
        Some(s) => {
            let _ = writeln!(
                out,
                "snapshot at attach failed: {}",
                s.error.as_deref().unwrap_or_default()
            );
        }
        None => {}
    }
    if let Some(a) = &r.trace.at_exit {
        at_exit(out, a);
    }
}

/// The line about the command's last state, read while held at its exit.
fn at_exit(out: &mut String, a: &crate::report::AtExitReport) {
    let read = match &a.snapshot.error {
        None => format!(
            "{} goroutines read in {:.1} ms",
            a.snapshot.goroutines, a.snapshot.took_ms
        ),
        Some(e) => format!("snapshot failed: {e}"),
    };
    let limit = if a.timed_out {
        format!(
            "; the hold limit ({} s) ran out, the process was let go before the analysis finished",
            crate::process::ptrace::HOLD_LIMIT.as_secs()
        )
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "held at exit (thread {}) for {:.1} ms: {read}{limit}",
        a.tid, a.held_ms
    );
}

/// What the probes cost the target and what the budget detached.
fn budget_lines(out: &mut String, r: &Report) {
    let Some(b) = &r.trace.budget else {
        return;
    };
    let Some(us) = b.hit_cost_us else {
        let _ = writeln!(
            out,
            "probe cost: unknown ({}): no overhead budget",
            b.calibration_error.as_deref().unwrap_or("not calibrated")
        );
        return;
    };
    let budget = match b.max_overhead_pct {
        Some(max) => format!("budget {max}%"),
        None => "full tracing, no budget".to_string(),
    };
    let estimate = b
        .estimate_pct
        .map_or_else(|| "unknown".to_string(), |p| format!("≈ {p:.1}%"));
    let _ = writeln!(
        out,
        "probe cost: {} hits × {us:.1} µs = {:.0} ms of the target's CPU, {estimate} of its own (peak {:.1}% over a check window; {budget})",
        b.hits, b.added_cpu_ms, b.peak_pct
    );
    if b.groups.len() > 1 {
        let parts: Vec<String> = b
            .groups
            .iter()
            .map(|g| format!("{} {} hits ≈ {:.1}%", g.probes, g.hits, g.pct))
            .collect();
        let _ = writeln!(out, "  by probes: {}", parts.join(", "));
    }
    for a in &b.admitted {
        let _ = writeln!(
            out,
            "attached at {:.1}s: the {} probes ({:.0} hits/s expected, ≈ {:.2}% of the target's CPU)",
            a.at_s, a.probes, a.hits_per_s, a.predicted_pct
        );
    }
    for a in &b.not_admitted {
        let _ = writeln!(
            out,
            "not attached: the {} probes ({:.0} hits/s expected at {:.1}s, ≈ {:.2}% of the target's CPU: over half the budget); from goroutine samples",
            a.probes, a.hits_per_s, a.at_s, a.predicted_pct
        );
    }
    for s in &b.shed {
        let _ = writeln!(
            out,
            "SHED at {:.2}s: the {} probes ({:.0} hits/s, ≈ {:.1}% of the target's CPU; all probes ≈ {:.1}%), {}{}",
            s.at_s,
            s.probes,
            s.hits_per_s,
            s.cost_pct,
            s.estimate_pct,
            s.removed_after_s.map_or_else(
                || "still being removed at the end".to_string(),
                |r| format!("removed {r:.2}s later")
            ),
            match s.probes.as_str() {
                "park/ready" => ": parks from goroutine samples since",
                "creation/exit" => ": creations and exits from goroutine samples since",
                _ => ": not reported",
            }
        );
    }
}

/// What the samples did, when the trace took some.
fn samples_line(out: &mut String, r: &Report) {
    let Some(s) = &r.trace.samples else {
        return;
    };
    let what = if r.trace.mode == "sampled" {
        "sampled mode (no probes)"
    } else {
        "samples"
    };
    let _ = writeln!(
        out,
        "{what}: {} goroutine samples, every {:.1}s{}, each read in {:.1} ms at most ({:.1} ms of gotrace's CPU); {} failed, {} goroutines kept changing, {} gs skipped, {} unreadable gs kept alive",
        s.taken,
        s.interval_s,
        if s.max_interval_s > s.interval_s + 1e-3 {
            format!(" (up to {:.1}s: reading took long)", s.max_interval_s)
        } else {
            String::new()
        },
        s.took_ms_max,
        s.cpu_ms_max,
        s.failed,
        s.unstable,
        s.skipped,
        s.kept_unread
    );
    if let Some(e) = &s.error {
        let _ = writeln!(out, "warning: the last sample that failed: {e}");
    }
}

fn suspects(out: &mut String, r: &Report, paths: &Paths) {
    if let Some(p) = r.proof.as_ref() {
        let _ = writeln!(out, "{}\n", crate::report::proof_text::summary(p));
        if p.done() {
            return proven(out, r, p, paths);
        }
    }
    if r.suspects.is_empty() {
        let _ = writeln!(
            out,
            "no leak suspects (no user goroutine blocked ≥ {:.1}s)",
            r.trace.leak_threshold_s
        );
        return;
    }
    let _ = writeln!(
        out,
        "LEAK SUSPECTS: {} (blocked ≥ {:.1}s)\n",
        r.verdict, r.trace.leak_threshold_s
    );
    for (i, grp) in r.suspects.iter().enumerate() {
        group(out, paths, i + 1, grp, true);
        let _ = writeln!(out);
    }
}

/// With a leak proof: the proven leaks first, then the suspects it could
/// not prove, each with what keeps its primitive reachable.
fn proven(out: &mut String, r: &Report, p: &crate::proof::Proof, paths: &Paths) {
    let leaked: Vec<&Group> = r.suspects.iter().filter(|g| g.proven_leaked > 0).collect();
    if r.suspects.is_empty() {
        let _ = writeln!(
            out,
            "no leak suspects (none proven leaked, no user goroutine blocked ≥ {:.1}s)",
            r.trace.leak_threshold_s
        );
        return;
    }
    if leaked.is_empty() {
        let _ = writeln!(out, "no leak proven");
    } else {
        let _ = writeln!(
            out,
            "LEAKED (proven: nothing reachable can wake it): {} goroutine(s) in {} group(s)\n",
            r.leaked_count,
            leaked.len()
        );
    }
    for (i, grp) in leaked.iter().enumerate() {
        group(out, paths, i + 1, grp, true);
        let _ = writeln!(
            out,
            "    proven:       {} of {} leaked",
            grp.proven_leaked, grp.count
        );
        let _ = writeln!(out);
    }
    let unproven: Vec<&Group> = r
        .suspects
        .iter()
        .filter(|g| g.suspects_unproven > 0)
        .collect();
    if unproven.is_empty() {
        return;
    }
    let n: usize = unproven.iter().map(|g| g.suspects_unproven).sum();
    let _ = writeln!(
        out,
        "SUSPECTS, NOT PROVEN: {n} goroutine(s) blocked ≥ {:.1}s that something can still wake\n",
        r.trace.leak_threshold_s
    );
    for (i, grp) in unproven.iter().enumerate() {
        group(out, paths, i + 1, grp, false);
        let mut why = String::new();
        crate::report::proof_text::kept_lines(&mut why, p, &grp.sample_goids);
        for line in why.lines() {
            let _ = writeln!(out, "    {}", line.trim_start_matches("# "));
        }
        let _ = writeln!(out);
    }
}

fn unbounded_growth(out: &mut String, r: &Report, paths: &Paths) {
    let unbounded: Vec<_> = r.growth.iter().filter(|g| g.unbounded).collect();
    if unbounded.is_empty() {
        return;
    }
    let _ = writeln!(out, "\nUNBOUNDED GROWTH  [leak pattern 10]");
    for gr in unbounded {
        let site = gr
            .created_at
            .as_ref()
            .map(|f| paths.frame(f))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {} created at {}: {:+.1}/s ({} created, {} exited, {} live)",
            gr.start_function, site, gr.net_per_s, gr.created, gr.exited, gr.live_at_end
        );
    }
}

/// The events line and what the probes lost, cut or could not read: drops
/// always, the rest when non-zero, every count "unknown" when the counters
/// could not be read.
fn kernel_lines(out: &mut String, r: &Report) {
    use crate::probe::counters::shown;
    let k = &r.trace.kernel;
    let parts = |m: &std::collections::BTreeMap<String, u64>| -> String {
        let v: Vec<String> = m
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        v.join(", ")
    };
    let dropped = k.dropped_total.unwrap_or(0);
    let _ = writeln!(
        out,
        "events: {} received, {} dropped{}, {} stacks lost{}",
        r.trace.events_received,
        shown(k.dropped_total),
        if dropped > 0 {
            format!(" ({})", parts(&k.dropped))
        } else {
            String::new()
        },
        shown(k.stack_errors),
        match k.parents_lost {
            Some(n) if n > 0 => format!(", {n} creators unknown"),
            _ => String::new(),
        }
    );
    if dropped > 0 {
        let _ = writeln!(
            out,
            "warning: the ring buffer was full {dropped} times: counts below are lower bounds and some goroutines may look older than they are (raise --ring-buffer)",
        );
    }
    if k.dropped_total.is_none() {
        let _ = writeln!(
            out,
            "warning: the probes' counters could not be read: drops, lost or cut stacks and failed reads are unknown"
        );
    }
    if let Some(n) = k.stacks_truncated.filter(|n| *n > 0) {
        let _ = writeln!(
            out,
            "warning: {n} event stacks were cut at {} frames: their outermost frames are missing",
            tracer_common::STACK_DUMP_DEPTH
        );
    }
    if let Some(n) = k.wait_chans_truncated.filter(|n| *n > 0) {
        let _ = writeln!(
            out,
            "warning: {n} parks waited on more than {} channels: only the first {} were read (a goroutine may not be tied to its context)",
            tracer_common::MAX_WAIT_CHANS,
            tracer_common::MAX_WAIT_CHANS
        );
    }
    if let Some(n) = k.read_errors_total.filter(|n| *n > 0) {
        let _ = writeln!(
            out,
            "warning: {n} reads of the target's memory failed in the probes ({}): the fields they fill read as 0 (--debug-probes tells more)",
            parts(&k.read_errors)
        );
    }
}
