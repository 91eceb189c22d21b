//! Text rendering of the context report: failure patterns always, the full
//! cancel-propagation trees with `--contexts`.

use std::fmt::Write as _;

use crate::gobin::symbolize::Frame;
use crate::report::contexts::{ContextReport, CtxOut};

const MAX_TREE_LINES: usize = 400;

fn at(f: &Option<Frame>, frame: &dyn Fn(&Frame) -> String) -> String {
    f.as_ref().map(frame).unwrap_or_else(|| "?".into())
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
        at(&n.created_at, frame)
    );
    if let Some(d) = n.deadline_in_s {
        let _ = write!(s, ", deadline {d:+.1}s");
    }
    match &n.cancel {
        None => s.push_str(" — live"),
        Some(c) => {
            let _ = write!(s, " — cancelled: {} by {}", c.err, c.origin);
            if let Some(cause) = &c.cause {
                let _ = write!(s, " (cause: {cause})");
            }
            let _ = write!(s, ", goroutine {} at {}", c.by_goid, at(&c.at, frame));
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
        return;
    }
    for g in &t.tickers_never_stopped {
        let what = if g.verdict == "leak" {
            "TICKER NEVER STOPPED [leak pattern 4]"
        } else {
            "ticker never stopped (advice)"
        };
        let _ = writeln!(
            out,
            "\n{what}: {} time.Ticker(s) every {:.3}s created at {}, never stopped (age {}){}",
            g.count,
            g.period_s,
            at(&g.created_at, frame),
            g.age_s
                .as_ref()
                .map(|a| format!("{:.1}s", a.max))
                .unwrap_or_default(),
            if g.waiting_goroutines.is_empty() {
                if g.verdict == "advice" {
                    "; Go 1.23+ collects it once nothing references it".to_string()
                } else {
                    String::new()
                }
            } else {
                format!(
                    "; goroutine(s) {} still loop on its channel in {}",
                    ids(&g.waiting_goroutines),
                    g.looping_functions.join(", ")
                )
            }
        );
    }
}

pub fn render(out: &mut String, c: &ContextReport, trees: bool, frame: &dyn Fn(&Frame) -> String) {
    if let Some(why) = &c.not_traced {
        let _ = writeln!(out, "\ncontexts: not traced ({why})");
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
    if c.leaks.is_empty() {
        let _ = writeln!(
            out,
            "no context leaks (every context older than the threshold was cancelled)"
        );
    }
    for l in &c.leaks {
        let _ = writeln!(
            out,
            "  CONTEXT LEAK [leak pattern 5]: {} {} context(s) never cancelled, created at {} (age {}); \
             {} timer(s) still armed, {} goroutine(s) waiting on Done",
            l.count,
            l.kind,
            at(&l.created_at, frame),
            l.age_s
                .as_ref()
                .map(|a| format!("{:.1}s", a.max))
                .unwrap_or_default(),
            l.timers_alive,
            l.waiting_goroutines
        );
    }
    for i in &c.ignored_cancels {
        let _ = writeln!(
            out,
            "  IGNORED CANCEL [leak pattern 6]: context #{} (created at {}) was cancelled at {} {:.1}s ago, \
             but {} goroutine(s) started under it still run: {} ({})",
            i.context,
            at(&i.created_at, frame),
            at(&i.cancelled_at, frame),
            i.cancelled_for_s,
            i.goroutines.len(),
            i.start_functions.join(", "),
            ids(&i.goroutines)
        );
    }
    for b in &c.broken_chains {
        let _ = writeln!(
            out,
            "  BROKEN CHAIN [leak pattern 7]: context #{} created from {} at {} by goroutine {}, which runs under \
             context #{} (created at {}{}): cancelling that one does not reach it",
            b.context,
            b.root,
            at(&b.created_at, frame),
            b.creator_goid,
            b.outer_context,
            at(&b.outer_created_at, frame),
            if b.outer_cancelled {
                ", since cancelled"
            } else {
                ""
            }
        );
    }
    for d in &c.nested_deadlines {
        let _ = writeln!(
            out,
            "  NESTED DEADLINE: context #{} (created at {}) did not time out: its parent's deadline \
             (context #{}, created at {}) cancelled it{}",
            d.context,
            at(&d.created_at, frame),
            d.cancelled_by,
            at(&d.cancelled_by_created_at, frame),
            match d.own_deadline_after_cancel_s {
                Some(s) => format!(" {s:.1}s before its own"),
                None => " (its own deadline was later, so Go never armed a timer for it)".into(),
            }
        );
    }
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
