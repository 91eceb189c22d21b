//! `gotrace top`: goroutines by state and wait reason, the creation sites
//! growing fastest, contexts and timers, events/s and drops. On a terminal
//! it redraws a screen (alternate screen, restored at the end); otherwise it
//! prints one plain line per refresh, for logs and pipes.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;

use super::{Tick, View};
use crate::gobin::GoBinary;
use crate::gobin::symbolize::Symbolizer;
use crate::goruntime::{is_system_function, wait_reason};
use crate::model::{GoroutineModel, SiteKey, State};
use crate::resolve::StackResolver;

/// The terminal is on the alternate screen: the panic hook, which exits
/// without running `close`, restores it through [`restore_terminal`].
static ALT_SCREEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Leaves the alternate screen and shows the cursor if the view had entered
/// it (for exits that skip `close`).
pub fn restore_terminal() {
    if ALT_SCREEN.swap(false, std::sync::atomic::Ordering::SeqCst) {
        let mut out = std::io::stdout();
        let _ = out.write_all(b"\x1b[?25h\x1b[?1049l");
        let _ = out.flush();
    }
}

/// Seconds of history the growth column looks back over.
const GROWTH_WINDOW_S: f64 = 10.0;
/// Rows of the group table.
const MAX_GROUPS: usize = 10;

/// One creation site, as the screen shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupRow {
    pub function: String,
    /// `file.go:42` of the `go` statement, when known.
    pub site: Option<String>,
    pub live: u64,
    pub created: u64,
    pub exited: u64,
    /// Net change of `live` per second over the last [`GROWTH_WINDOW_S`].
    pub growth_per_s: f64,
}

/// Everything on one screen; rendered as a table or as one line.
#[derive(Clone, Debug, PartialEq)]
pub struct Screen {
    pub t_s: f64,
    pub live: usize,
    pub live_user: usize,
    pub runnable: usize,
    pub parked: usize,
    pub created: u64,
    pub exited: u64,
    /// Parked user goroutines per wait reason, most first.
    pub by_reason: Vec<(String, usize)>,
    /// User creation sites, fastest-growing first.
    pub groups: Vec<GroupRow>,
    pub contexts_live: usize,
    pub contexts_cancelled: u64,
    pub timers_running: usize,
    pub events_per_s: f64,
    pub events_total: u64,
    /// `None`: the counters could not be read.
    pub dropped: Option<u64>,
    /// The mode, the probes' cost and budget, what was shed, the samples.
    pub watch: crate::view::WatchStatus,
}

pub struct Top<'a> {
    bin: &'a GoBinary,
    symbolizer: &'a Symbolizer,
    wait_reasons: &'a BTreeMap<u8, String>,
    title: String,
    tty: bool,
    entered: bool,
    resolver: Option<(u64, StackResolver<'a>)>,
    out: Box<dyn std::io::Write + 'a>,
}

impl<'a> Top<'a> {
    pub fn new(
        bin: &'a GoBinary,
        symbolizer: &'a Symbolizer,
        wait_reasons: &'a BTreeMap<u8, String>,
        title: String,
        tty: bool,
        out: Box<dyn std::io::Write + 'a>,
    ) -> Self {
        Self {
            bin,
            symbolizer,
            wait_reasons,
            title,
            tty,
            entered: false,
            resolver: None,
            out,
        }
    }

    fn resolver(&mut self, bias: u64) -> &mut StackResolver<'a> {
        if self.resolver.as_ref().is_none_or(|(b, _)| *b != bias) {
            let r = StackResolver::new(self.bin, self.symbolizer, HashMap::new(), bias);
            self.resolver = Some((bias, r));
        }
        &mut self.resolver.as_mut().expect("just set").1
    }

    /// The screen for this tick.
    pub fn screen(&mut self, t: &Tick<'_>) -> Screen {
        let wait_reasons = self.wait_reasons;
        let resolver = self.resolver(t.load_bias);
        let gm = &t.model.goroutines;
        let mut user_sites: HashMap<SiteKey, bool> = HashMap::new();
        let mut is_user = |startpc: u64, gopc: u64, r: &mut StackResolver<'_>| -> bool {
            *user_sites
                .entry(SiteKey { startpc, gopc })
                .or_insert_with(|| !is_system_function(&r.start_function(startpc)))
        };
        let (mut runnable, mut parked, mut live_user) = (0, 0, 0);
        let mut reasons: HashMap<u8, usize> = HashMap::new();
        for g in gm.live() {
            let user = is_user(g.startpc(), g.gopc(), resolver);
            live_user += usize::from(user);
            match g.state() {
                State::Runnable => runnable += 1,
                State::Parked(p) => {
                    parked += 1;
                    if user {
                        *reasons.entry(p.reason).or_default() += 1;
                    }
                }
            }
        }
        let mut by_reason: Vec<(String, usize)> = reasons
            .into_iter()
            .map(|(r, n)| (wait_reason::text(wait_reasons, r), n))
            .collect();
        by_reason.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));

        let groups = growth_rows(gm, resolver, t.t_s, &mut is_user);
        let stats = gm.stats();
        let ctx = &t.model.contexts;
        Screen {
            t_s: t.t_s,
            live: gm.live_count(),
            live_user,
            runnable,
            parked,
            created: stats.created,
            exited: stats.exited,
            by_reason,
            groups,
            contexts_live: ctx.nodes().filter(|n| n.is_live()).count(),
            contexts_cancelled: ctx.stats().cancelled,
            timers_running: t.model.timers.unstopped().count(),
            events_per_s: t.events_per_s,
            events_total: t.events_total,
            dropped: t.kernel.dropped_total,
            watch: t.watch.clone(),
        }
    }
}

/// The program's creation sites, fastest-growing first (at most
/// [`MAX_GROUPS`]): growth is live now minus live about
/// [`GROWTH_WINDOW_S`] ago.
fn growth_rows(
    gm: &GoroutineModel,
    resolver: &mut StackResolver<'_>,
    t_s: f64,
    is_user: &mut dyn FnMut(u64, u64, &mut StackResolver<'_>) -> bool,
) -> Vec<GroupRow> {
    let mut groups: Vec<GroupRow> = Vec::new();
    for (key, s) in gm.sites() {
        if s.live == 0 && s.created == 0 {
            continue;
        }
        if !is_user(key.startpc, key.gopc, resolver) {
            continue;
        }
        let since = t_s - GROWTH_WINDOW_S;
        let growth_per_s = match s.samples.iter().find(|(ts, _)| *ts >= since) {
            Some((ts, then)) if t_s - ts > 0.5 => (s.live as f64 - *then as f64) / (t_s - ts),
            _ => 0.0,
        };
        groups.push(GroupRow {
            function: resolver.start_function(key.startpc),
            site: resolver.pc(key.gopc, true).and_then(|f| {
                let file = f.file?;
                let base = file.rsplit('/').next().unwrap_or(&file).to_string();
                Some(format!("{base}:{}", f.line))
            }),
            live: s.live,
            created: s.created,
            exited: s.exited,
            growth_per_s,
        });
    }
    groups.sort_by(|a, b| {
        b.growth_per_s
            .total_cmp(&a.growth_per_s)
            .then(b.live.cmp(&a.live))
            .then_with(|| a.function.cmp(&b.function))
    });
    groups.truncate(MAX_GROUPS);
    groups
}

/// The plain line printed per refresh when stdout is not a terminal.
pub fn render_line(s: &Screen) -> String {
    let mut line = format!(
        "t={:.0}s live={} user={} runnable={} parked={} created={} exited={} contexts_live={} contexts_cancelled={} timers={} events_per_s={:.0} dropped={}",
        s.t_s,
        s.live,
        s.live_user,
        s.runnable,
        s.parked,
        s.created,
        s.exited,
        s.contexts_live,
        s.contexts_cancelled,
        s.timers_running,
        s.events_per_s,
        crate::probe::counters::shown(s.dropped)
    );
    line.push_str(&watch_fields(&s.watch));
    if let Some(g) = s.groups.first() {
        line.push_str(&format!(
            " top={}{} live={} growth={:+.1}/s",
            g.function,
            g.site
                .as_deref()
                .map(|x| format!("@{x}"))
                .unwrap_or_default(),
            g.live,
            g.growth_per_s
        ));
    }
    line
}

/// ` mode=... cost_pct=... budget_pct=... shed=... samples=...` of the
/// plain line (the cost and budget only when there are probes).
fn watch_fields(w: &crate::view::WatchStatus) -> String {
    let mut out = format!(" mode={}", w.mode);
    if w.mode != "sampled" {
        out.push_str(&format!(" cost_pct={:.1}", w.last_pct));
    }
    if let Some(max) = w.max_pct {
        out.push_str(&format!(" budget_pct={max}"));
    }
    if !w.shed.is_empty() {
        out.push_str(&format!(" shed={}", w.shed.join(",").replace(" at ", "@")));
    }
    out.push_str(&format!(" samples={}", w.samples));
    out
}

/// The screen's line on the mode, the probes' cost and what was shed.
fn watch_line(w: &crate::view::WatchStatus) -> String {
    let cost = match (w.mode, w.max_pct) {
        ("sampled", _) => "no probes".to_string(),
        (_, Some(max)) => format!(
            "probes ≈ {:.1}% of the target's CPU (peak {:.1}%, budget {max}%)",
            w.last_pct, w.peak_pct
        ),
        (_, None) => format!(
            "probes ≈ {:.1}% of the target's CPU (peak {:.1}%, no budget)",
            w.last_pct, w.peak_pct
        ),
    };
    let shed = if w.shed.is_empty() {
        String::new()
    } else {
        format!(" | SHED: {}", w.shed.join(", "))
    };
    format!("Mode: {} | {cost}{shed} | Samples: {}", w.mode, w.samples)
}

/// The full screen, `width` columns wide.
pub fn render_screen(title: &str, s: &Screen, width: usize) -> String {
    let width = width.max(60);
    let mut out = String::new();
    let mut line = |l: String| {
        let mut l = l;
        if l.chars().count() > width {
            l = l.chars().take(width - 1).collect::<String>() + "…";
        }
        out.push_str(&l);
        out.push('\n');
    };
    line(format!("gotrace top — {title} — {:.0}s", s.t_s));
    line(format!(
        "Goroutines: {} live ({} user) | {} runnable, {} parked | {} created, {} exited",
        s.live, s.live_user, s.runnable, s.parked, s.created, s.exited
    ));
    line(format!(
        "Contexts: {} live, {} cancelled | Timers running: {} | Events: {:.0}/s, {} total, {} dropped",
        s.contexts_live,
        s.contexts_cancelled,
        s.timers_running,
        s.events_per_s,
        s.events_total,
        crate::probe::counters::shown(s.dropped)
    ));
    line(watch_line(&s.watch));
    line(String::new());
    line(format!(
        "{:<32} {:>10}",
        "PARKED USER GOROUTINES BY REASON", "COUNT"
    ));
    if s.by_reason.is_empty() {
        line("(none)".into());
    }
    for (reason, n) in s.by_reason.iter().take(8) {
        line(format!("{reason:<32} {n:>10}"));
    }
    line(String::new());
    line(format!(
        "{:>8} {:>9} {:>9} {:>9}  {}",
        "LIVE", "GROWTH/s", "CREATED", "EXITED", "GOROUTINE (go statement)"
    ));
    if s.groups.is_empty() {
        line("(no user goroutines seen yet)".into());
    }
    for g in &s.groups {
        line(format!(
            "{:>8} {:>+9.1} {:>9} {:>9}  {}{}",
            g.live,
            g.growth_per_s,
            g.created,
            g.exited,
            g.function,
            g.site
                .as_deref()
                .map(|x| format!(" ({x})"))
                .unwrap_or_default()
        ));
    }
    line(String::new());
    line("Ctrl-C to stop".into());
    out
}

fn terminal_width() -> usize {
    // SAFETY: TIOCGWINSZ fills a winsize; on failure we keep the default.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    if ok && ws.ws_col > 0 {
        ws.ws_col as usize
    } else {
        100
    }
}

impl View for Top<'_> {
    fn tick(&mut self, t: &Tick<'_>) {
        let screen = self.screen(t);
        let text = if self.tty {
            let mut s = String::new();
            if !self.entered {
                // Alternate screen, hide the cursor.
                s.push_str("\x1b[?1049h\x1b[?25l");
                self.entered = true;
                ALT_SCREEN.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            s.push_str("\x1b[H\x1b[2J");
            s.push_str(
                &render_screen(&self.title, &screen, terminal_width()).replace('\n', "\r\n"),
            );
            s
        } else {
            render_line(&screen) + "\n"
        };
        let _ = self.out.write_all(text.as_bytes());
        let _ = self.out.flush();
    }

    fn close(&mut self) {
        if self.entered {
            let _ = self.out.write_all(b"\x1b[?25h\x1b[?1049l");
            let _ = self.out.flush();
            self.entered = false;
            ALT_SCREEN.store(false, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

impl Drop for Top<'_> {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn screen() -> Screen {
        Screen {
            t_s: 12.0,
            live: 120,
            live_user: 110,
            runnable: 3,
            parked: 117,
            created: 500,
            exited: 390,
            by_reason: vec![("chan receive".into(), 100), ("select".into(), 10)],
            groups: vec![GroupRow {
                function: "main.worker".into(),
                site: Some("main.go:42".into()),
                live: 100,
                created: 100,
                exited: 0,
                growth_per_s: 10.0,
            }],
            contexts_live: 4,
            contexts_cancelled: 7,
            timers_running: 1,
            events_per_s: 250.0,
            events_total: 3000,
            dropped: Some(0),
            watch: crate::view::WatchStatus {
                mode: "full",
                max_pct: Some(3.0),
                last_pct: 1.25,
                peak_pct: 40.0,
                shed: vec!["park/ready at 0.02s".into()],
                samples: 4,
            },
        }
    }

    #[test]
    fn plain_line_names_the_fastest_group() {
        let l = render_line(&screen());
        assert!(
            l.starts_with("t=12s live=120 user=110 runnable=3 parked=117"),
            "{l}"
        );
        assert!(l.contains("dropped=0"), "{l}");
        assert!(
            l.contains(" mode=full cost_pct=1.2 budget_pct=3 shed=park/ready@0.02s samples=4 "),
            "{l}"
        );
        assert!(
            l.ends_with("top=main.worker@main.go:42 live=100 growth=+10.0/s"),
            "{l}"
        );
    }

    #[test]
    fn screen_fits_the_width() {
        let s = render_screen("PID 1 /srv/x (go1.26.6)", &screen(), 60);
        assert!(s.lines().all(|l| l.chars().count() <= 60), "{s}");
        assert!(s.contains("chan receive"), "{s}");
        let s = render_screen("x", &screen(), 200);
        assert!(
            s.contains("| SHED: park/ready at 0.02s | Samples: 4"),
            "{s}"
        );
        let s = render_screen("PID 1 /srv/x (go1.26.6)", &screen(), 120);
        assert!(s.contains("main.worker (main.go:42)"), "{s}");
    }
}
