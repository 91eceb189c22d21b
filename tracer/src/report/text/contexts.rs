//! Text rendering of the context report: failure patterns always, the full
//! cancel-propagation trees with `--contexts`.

use std::fmt::Write as _;

use crate::gobin::symbolize::Frame;
use crate::report::contexts::{ContextReport, CtxOut};

const MAX_TREE_LINES: usize = 400;

fn at(f: &Option<Frame>, frame: &dyn Fn(&Frame) -> String) -> String {
    f.as_ref().map(frame).unwrap_or_else(|| "?".into())
}

/// A creation or cancel site, naming net/http when its plumbing is the one.
fn site(f: &Option<Frame>, by: Option<&str>, frame: &dyn Fn(&Frame) -> String) -> String {
    match by {
        // The library's own frame, or program code that called into it.
        Some(lib) if f.as_ref().is_some_and(|f| f.function.starts_with(lib)) => {
            format!("{} ({lib}'s own per-request plumbing)", at(f, frame))
        }
        Some(lib) => format!(
            "{} (through {lib}'s own per-request plumbing)",
            at(f, frame)
        ),
        None => at(f, frame),
    }
}

/// "#3 #7 #9 ..." for a group's sample context ids out of `count`.
fn ctx_ids(sample: &[usize], count: usize) -> String {
    let s: Vec<String> = sample.iter().map(|i| format!("#{i}")).collect();
    format!(
        "{}{}",
        s.join(" "),
        if count > sample.len() { " ..." } else { "" }
    )
}

/// The first five distinct ids, and how many distinct ones there are.
fn distinct(v: impl Iterator<Item = usize>) -> (Vec<usize>, usize) {
    let mut v: Vec<usize> = v.collect();
    v.sort_unstable();
    v.dedup();
    let n = v.len();
    v.truncate(5);
    (v, n)
}

fn ids(v: &[u64]) -> String {
    let s: Vec<String> = v.iter().take(8).map(u64::to_string).collect();
    format!("{}{}", s.join(" "), if v.len() > 8 { " ..." } else { "" })
}

fn node_line(n: &CtxOut, frame: &dyn Fn(&Frame) -> String) -> String {
    let mut s = format!(
        "#{} {} created at {}",
        n.id,
        n.kind,
        site(&n.created_at, n.created_by, frame)
    );
    if let Some(d) = n.deadline_in_s {
        let _ = write!(s, ", deadline {d:+.1}s");
    }
    match &n.cancel {
        None => s.push_str(match n.verdict {
            Some("leaked") => " — never cancelled: LEAKED (no reachable cancel function)",
            Some("live") => " — live (its cancel function is reachable)",
            Some("collected") => " — never cancelled, collected (nothing holds it)",
            Some("afterfunc") => " — live (AfterFunc)",
            _ => " — live (undecided)",
        }),
        Some(c) => {
            let _ = write!(s, " — cancelled: {} by {}", c.err, c.origin);
            if let Some(cause) = &c.cause {
                let _ = write!(s, " (cause: {cause})");
            }
            let _ = write!(s, ", goroutine {}", c.by_goid);
            if c.at.is_some() {
                let _ = write!(s, " at {}", site(&c.at, c.at_by, frame));
            }
        }
    }
    if !n.waiting_goroutines.is_empty() {
        let _ = write!(s, "; waiting: goroutines {}", ids(&n.waiting_goroutines));
    }
    if n.cancel.is_some() && !n.started_goroutines_alive.is_empty() {
        let _ = write!(
            s,
            "; still alive: goroutines {}",
            ids(&n.started_goroutines_alive)
        );
    }
    s
}

fn tree(
    out: &mut String,
    c: &ContextReport,
    id: usize,
    depth: usize,
    lines: &mut usize,
    frame: &dyn Fn(&Frame) -> String,
) {
    if *lines >= MAX_TREE_LINES {
        return;
    }
    *lines += 1;
    let n = &c.nodes[id];
    let _ = writeln!(out, "  {}{}", "  ".repeat(depth), node_line(n, frame));
    for child in &n.children {
        if *child < c.nodes.len() {
            tree(out, c, *child, depth + 1, lines, frame);
        }
    }
}

pub fn render_timers(
    out: &mut String,
    t: &crate::report::timers::TimerReport,
    frame: &dyn Fn(&Frame) -> String,
) {
    if let Some(why) = &t.not_traced {
        let _ = writeln!(out, "\ntimers: not traced ({why})");
        if let Some(m) = &t.from_memory {
            timers_from_memory(out, m);
        }
        return;
    }
    for g in &t.tickers_never_stopped {
        ticker_line(out, g, frame);
    }
    let n = &t.never_stopped;
    if n.total > 0 {
        let _ = writeln!(
            out,
            "\ntickers never stopped: {} — {} leaked, {} running (referenced by live code), {} collected, {} undecided{}",
            n.total,
            n.leaked,
            n.running,
            n.collected,
            n.undecided.count,
            reasons(&n.undecided)
        );
    }
    if let Some(m) = &t.from_memory {
        timers_from_memory(out, m);
    }
}

fn ticker_line(
    out: &mut String,
    g: &crate::report::timers::TickerGroup,
    frame: &dyn Fn(&Frame) -> String,
) {
    let what = if g.verdict == "leak" {
        "TICKER NEVER STOPPED [leak pattern 4]"
    } else {
        "ticker never stopped (collected, advice)"
    };
    let why = if g.verdict != "leak" {
        "nothing references it any more: Go 1.23+ frees it without Stop".to_string()
    } else if !g.leaked_holders.is_empty() {
        format!(
            "its only holders, goroutine(s) {}, are proven leaked: nothing will ever stop it",
            ids(&g.leaked_holders)
        )
    } else {
        "the program no longer references it; the runtime's timer heap keeps it firing forever"
            .to_string()
    };
    let _ = writeln!(
        out,
        "\n{what}: {} time.Ticker(s) every {:.3}s created at {}: {why} (age {}){}",
        g.count,
        g.period_s,
        at(&g.created_at, frame),
        g.age_s
            .as_ref()
            .map(|a| format!("{:.1}s", a.max))
            .unwrap_or_default(),
        if g.waiting_goroutines.is_empty() {
            String::new()
        } else {
            format!(
                "; goroutine(s) {} wait on its channel in {}",
                ids(&g.waiting_goroutines),
                g.looping_functions.join(", ")
            )
        }
    );
}

/// " (why: n, ...)" for undecided counts.
fn reasons(u: &crate::report::contexts::Undecided) -> String {
    if u.reasons.is_empty() {
        return String::new();
    }
    let v: Vec<String> = u.reasons.iter().map(|(r, n)| format!("{r}: {n}")).collect();
    format!(" ({})", v.join("; "))
}

/// "the global main.x", "goroutine 12's stack (main.f)", ... for a leak's
/// holders.
fn holders(l: &crate::report::contexts::CtxLeak) -> String {
    let mut v: Vec<String> = l
        .held_by
        .iter()
        .map(|k| match k.name.as_deref() {
            // allp: the Ps' timer heaps, where an armed deadline's timer is.
            Some(name) if k.kind == "global" && name.starts_with("runtime.") => {
                format!("the runtime (from {name}: timers...)")
            }
            _ => crate::report::proof_text::kept_by(k),
        })
        .collect();
    if l.held_by_parents > 0 {
        v.push(format!(
            "{} live parent context(s) (their children)",
            l.held_by_parents
        ));
    }
    if l.timers_alive > 0 {
        v.push(format!("{} armed deadline timer(s)", l.timers_alive));
    }
    if l.held_by_goroutines > 0 {
        v.push(format!(
            "{} goroutine(s) waiting on Done or keeping it on their stacks",
            l.held_by_goroutines
        ));
    }
    if v.is_empty() {
        "?".into()
    } else {
        v.join(", ")
    }
}

pub fn render(out: &mut String, c: &ContextReport, trees: bool, frame: &dyn Fn(&Frame) -> String) {
    if let Some(why) = &c.not_traced {
        let _ = writeln!(out, "\ncontexts: not traced ({why})");
        if let Some(m) = &c.from_memory {
            from_memory(out, m);
        }
        return;
    }
    let _ = writeln!(
        out,
        "\nCONTEXTS: {} created, {} cancelled, {} live at end{}",
        c.created,
        c.cancelled,
        c.live_at_end,
        if c.cancelled_before_seen > 0 {
            format!(
                "; {} created before attach were cancelled",
                c.cancelled_before_seen
            )
        } else {
            String::new()
        }
    );
    never_cancelled_line(out, c);
    for l in &c.leaks {
        let _ = writeln!(
            out,
            "  CONTEXT LEAK [leak pattern 5]: {} {} context(s) created at {} never cancelled, and no \
             reachable reference can cancel them any more (their cancel function is garbage); held by {} \
             (age {}); {} timer(s) still armed, {} goroutine(s) waiting on Done",
            l.count,
            l.kind,
            site(&l.created_at, l.created_by, frame),
            holders(l),
            l.age_s
                .as_ref()
                .map(|a| format!("{:.1}s", a.max))
                .unwrap_or_default(),
            l.timers_alive,
            l.waiting_goroutines
        );
    }
    for g in &c.ignored_cancel_groups {
        ignored_cancel_line(out, g, frame);
    }
    if c.ignored_cancel_undecided.count > 0 {
        let _ = writeln!(
            out,
            "  ignored cancels undecided: {} cancelled context(s) with goroutines started under them still alive{}",
            c.ignored_cancel_undecided.count,
            reasons(&c.ignored_cancel_undecided)
        );
    }
    broken_chain_lines(out, c, frame);
    nested_deadline_lines(out, c, frame);
    if trees {
        let _ = writeln!(out, "\ncontext trees:");
        let mut lines = 0;
        for n in c.nodes.iter().filter(|n| n.parent.is_none()) {
            let _ = writeln!(out, "  [{}]", n.parent_kind);
            tree(out, c, n.id, 1, &mut lines, frame);
        }
        if lines >= MAX_TREE_LINES || c.nodes_truncated {
            let _ = writeln!(out, "  ... (truncated; every node is in report.json)");
        }
    }
}

/// How the contexts never cancelled were judged.
fn never_cancelled_line(out: &mut String, c: &ContextReport) {
    let n = &c.never_cancelled;
    if n.total == 0 {
        let _ = writeln!(out, "no context leaks (every context seen was cancelled)");
        return;
    }
    if n.leaked == 0 {
        let _ = writeln!(out, "no context leaks");
    }
    let _ = writeln!(
        out,
        "  never cancelled: {} — {} leaked, {} live (a reachable cancel function), {} collected \
         (nothing holds them), {} AfterFunc, {} undecided{}",
        n.total,
        n.leaked,
        n.live,
        n.collected,
        n.afterfunc,
        n.undecided.count,
        reasons(&n.undecided)
    );
}

fn ignored_cancel_line(
    out: &mut String,
    g: &crate::report::contexts::IgnoredCancelGroup,
    frame: &dyn Fn(&Frame) -> String,
) {
    let cancelled = match &g.cancelled_at {
        Some(_) => format!(
            "cancelled ({}) at {}",
            g.origin,
            site(&g.cancelled_at, g.cancelled_by, frame)
        ),
        None => format!("cancelled ({})", g.origin),
    };
    let ago = g
        .cancelled_for_s
        .as_ref()
        .map(|a| {
            if a.max - a.min < 0.05 {
                format!("{:.1}s", a.max)
            } else {
                format!("{:.1}s..{:.1}s", a.min, a.max)
            }
        })
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "  IGNORED CANCEL [leak pattern 6]: {} context(s) created at {}, {cancelled} {ago} ago, \
         but {} goroutine(s) that hold them on their stacks stay parked on something else: {} (goids {}); contexts {}",
        g.count,
        site(&g.created_at, g.created_by, frame),
        g.goroutines,
        g.start_functions.join(", "),
        ids(&g.sample_goids)
            + if g.goroutines > g.sample_goids.len() {
                " ..."
            } else {
                ""
            },
        ctx_ids(&g.sample_ids, g.count),
    );
}

/// One line per (site, root, outer site) instead of one per context: a
/// service makes the same mistake once per request.
fn broken_chain_lines(out: &mut String, c: &ContextReport, frame: &dyn Fn(&Frame) -> String) {
    let mut groups: Vec<(String, Vec<&crate::report::contexts::BrokenChain>)> = Vec::new();
    for b in &c.broken_chains {
        let key = format!(
            "{}|{}|{}|{}",
            at(&b.created_at, frame),
            b.root,
            at(&b.outer_created_at, frame),
            b.outer_cancelled
        );
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(b),
            None => groups.push((key, vec![b])),
        }
    }
    for (_, bs) in groups {
        let b = bs[0];
        let sample: Vec<usize> = bs.iter().take(5).map(|b| b.context).collect();
        let outer = distinct(bs.iter().map(|b| b.outer_context));
        let _ = writeln!(
            out,
            "  BROKEN CHAIN [leak pattern 7]: {} context(s) {} created from {} at {} by goroutine(s) running under \
             context(s) {} (created at {}{}): cancelling those does not reach them",
            bs.len(),
            ctx_ids(&sample, bs.len()),
            b.root,
            at(&b.created_at, frame),
            ctx_ids(&outer.0, outer.1),
            at(&b.outer_created_at, frame),
            if b.outer_cancelled {
                ", since cancelled"
            } else {
                ""
            }
        );
    }
}

/// One line per (site, cancelling ancestor's site).
fn nested_deadline_lines(out: &mut String, c: &ContextReport, frame: &dyn Fn(&Frame) -> String) {
    let mut groups: Vec<(String, Vec<&crate::report::contexts::NestedDeadline>)> = Vec::new();
    for d in &c.nested_deadlines {
        let key = format!(
            "{}|{}|{}",
            at(&d.created_at, frame),
            at(&d.cancelled_by_created_at, frame),
            d.own_deadline_after_cancel_s.is_some()
        );
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(d),
            None => groups.push((key, vec![d])),
        }
    }
    for (_, ds) in groups {
        let d = ds[0];
        let sample: Vec<usize> = ds.iter().take(5).map(|d| d.context).collect();
        let by = distinct(ds.iter().map(|d| d.cancelled_by));
        let before = ds
            .iter()
            .filter_map(|d| d.own_deadline_after_cancel_s)
            .fold(None, |m: Option<f64>, s| Some(m.map_or(s, |m| m.min(s))));
        let _ = writeln!(
            out,
            "  NESTED DEADLINE: {} context(s) {} (created at {}) did not time out: their parent's deadline \
             (context(s) {}, created at {}) cancelled them{}",
            ds.len(),
            ctx_ids(&sample, ds.len()),
            at(&d.created_at, frame),
            ctx_ids(&by.0, by.1),
            at(&d.cancelled_by_created_at, frame),
            match before {
                Some(s) => format!(" at least {s:.1}s before their own"),
                None =>
                    " (their own deadline was later, so Go never armed a timer for them)".into(),
            }
        );
    }
}

/// The timer heaps read from memory at the end of a sampled or budgeted
/// trace.
fn timers_from_memory(out: &mut String, m: &crate::timermem::FromMemory) {
    if !m.read {
        let why = m.error.as_deref().unwrap_or("?");
        let _ = writeln!(out, "timers in memory: not read ({why})");
        return;
    }
    let _ = writeln!(
        out,
        "timers in memory (the runtime's heaps, {} P(s)): {} will fire, {} of them periodic; {} stopped awaiting removal",
        m.ps, m.timers, m.periodic, m.stopped_in_heaps
    );
    for g in m.groups.iter().take(10) {
        let every = g
            .period_s
            .map_or_else(|| "once".to_string(), |p| format!("every {p}s"));
        let waiting = if g.channel {
            format!(
                ", {} goroutine(s) waiting on the channel",
                g.waiting_goroutines
            )
        } else {
            String::new()
        };
        let _ = writeln!(out, "  {} x{} {every}{waiting}", g.callback, g.count);
    }
    if m.read_errors > 0 {
        let _ = writeln!(out, "  read errors {}", m.read_errors);
    }
    let _ = writeln!(
        out,
        "  not decidable from memory: {}",
        m.not_decidable.join("; ")
    );
}

/// The contexts read from memory at the end of a sampled or budgeted trace.
fn from_memory(out: &mut String, m: &crate::ctxmem::FromMemory) {
    if !m.read {
        let why = m.error.as_deref().unwrap_or("?");
        let _ = writeln!(out, "contexts in memory: not read ({why})");
        return;
    }
    let _ = writeln!(
        out,
        "contexts in memory (parked goroutines' stacks, seen not proven): {} context(s), {} cancelled, held by {} of {} parked goroutine(s); {} waiting on a Done ({} of them cancelled); {} holding a cancelled context parked elsewhere",
        m.contexts,
        m.cancelled,
        m.goroutines_holding,
        m.goroutines_scanned,
        m.waiting_on_done.count,
        m.waiting_on_done.cancelled,
        m.seen_in_memory.holding_cancelled_parked_elsewhere,
    );
    for g in m.groups.iter().take(10) {
        let _ = writeln!(
            out,
            "  {} blocked at {} ({}): {} holding, {} waiting on a Done, {} holding a cancelled context",
            g.start,
            g.blocked_at,
            g.wait_reason,
            g.holding,
            g.waiting_on_done,
            g.holding_cancelled_parked_elsewhere,
        );
    }
    let l = &m.limits;
    if m.read_errors + l.per_goroutine_hit + l.total_hit + l.stacks_cut + l.chains_cut > 0 {
        let _ = writeln!(
            out,
            "  read errors {}, limits hit: per goroutine {}, total {}, stacks cut {}, chains cut {}",
            m.read_errors, l.per_goroutine_hit, l.total_hit, l.stacks_cut, l.chains_cut
        );
    }
    let _ = writeln!(
        out,
        "  undecided: {} context(s) of a type memory cannot follow; not decidable from memory: {}",
        m.undecided.contexts_unknown_state,
        m.undecided.not_decidable.join("; ")
    );
}
