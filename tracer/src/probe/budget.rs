//! What the probes cost the target, and the overhead budget
//! (`--max-overhead PCT`).
//!
//! On this kind of machine a uprobe hit costs microseconds whatever its
//! program does (the trap, the single-step, the program call), so the cost
//! is hits × the cost of one hit:
//! - [`Probes::calibrate`] times one hit at attach: the do-nothing program
//!   on a function of gotrace's own, called in a loop with and without it
//!   (the thread's CPU time: a busy machine does not inflate it);
//! - the probes count their hits per program (`COUNTERS`);
//! - [`Budget::check`] turns the hits since the last check into the CPU
//!   they added to the target, and compares it with the CPU the target
//!   used on its own (its CPU clock minus that estimate). Over the budget,
//!   it picks the groups of probes to detach, hottest first, until the
//!   rest fits. A near-idle target is held to PCT % of a tenth of a core,
//!   not of the little it uses.
//!
//! The programs' own work adds to the trap (about 20 % on the benchmark's
//! workloads, `cargo xtask bench`), so the estimate is a little low; the
//! bench prints it beside the measured cost.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracer_common::Program;

use super::goroutine::AttachPoint;
use super::{ProbeError, Probes};

/// Probes detached together, since each one's data needs the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ProbeGroup {
    /// `gopark` and `goready`: parks and wakeups, the hottest.
    Parks,
    /// Creation and exit.
    Lifecycle,
    /// The `context` package.
    Contexts,
    /// Runtime timers.
    Timers,
}

impl ProbeGroup {
    pub const ALL: [ProbeGroup; 4] = [
        ProbeGroup::Parks,
        ProbeGroup::Lifecycle,
        ProbeGroup::Contexts,
        ProbeGroup::Timers,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ProbeGroup::Parks => "park/ready",
            ProbeGroup::Lifecycle => "creation/exit",
            ProbeGroup::Contexts => "contexts",
            ProbeGroup::Timers => "timers",
        }
    }

    pub fn programs(self) -> &'static [Program] {
        use Program::*;
        match self {
            ProbeGroup::Parks => &[GoPark, GoReady],
            ProbeGroup::Lifecycle => &[GoNewproc, GoNewproc1Ret, GoExit],
            ProbeGroup::Contexts => &[
                GoCtxCreate,
                GoCtxCancel,
                GoCtxCancelTimer,
                GoCtxCancelAfterfunc,
                GoCtxDoneStore,
                GoCtxDone,
                GoCtxDoneRet,
            ],
            ProbeGroup::Timers => &[GoTimerStart, GoTimerNew, GoTimerNewRet, GoTimerStop],
        }
    }

    fn of(program: Program) -> Option<ProbeGroup> {
        Self::ALL
            .into_iter()
            .find(|g| g.programs().contains(&program))
    }
}

/// What one hit costs here, as timed at attach.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Nanoseconds one hit adds to the thread that hits it (the median of
    /// the timed batches).
    pub hit_ns: f64,
    /// The fastest and slowest batch, per hit.
    pub min_ns: f64,
    pub max_ns: f64,
    /// Hits timed.
    pub hits: u64,
}

/// Batches of calls timed by the calibration.
const BATCHES: usize = 5;
const BATCH: u64 = 400;

/// The function the calibration probes: a call that does next to nothing.
#[inline(never)]
#[unsafe(no_mangle)]
pub extern "C" fn gotrace_calibration_point(x: u64) -> u64 {
    std::hint::black_box(x).wrapping_mul(3) ^ 1
}

/// CPU time of the calling thread, ns: what a hit costs is CPU the thread
/// spends (in the kernel), and other processes running meanwhile on a
/// shared machine do not count.
pub fn thread_cpu_ns() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 * 1e9 + ts.tv_nsec as f64
}

/// CPU nanoseconds `n` calls of the calibration point take.
fn time_calls(n: u64) -> f64 {
    let f: extern "C" fn(u64) -> u64 = std::hint::black_box(gotrace_calibration_point);
    let t = thread_cpu_ns();
    let mut acc = 0;
    for i in 0..n {
        acc ^= f(i);
    }
    std::hint::black_box(acc);
    thread_cpu_ns() - t
}

/// Where the calibration point is in gotrace's own executable file.
fn own_file_offset() -> Option<u64> {
    let addr = gotrace_calibration_point as *const () as u64;
    let exe = std::fs::read_link("/proc/self/exe").ok()?;
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines().find_map(|line| {
        let mut parts = line.split_whitespace();
        let (lo, hi) = parts.next()?.split_once('-')?;
        let (lo, hi) = (
            u64::from_str_radix(lo, 16).ok()?,
            u64::from_str_radix(hi, 16).ok()?,
        );
        let offset = u64::from_str_radix(parts.nth(1)?, 16).ok()?;
        let path = parts.nth(2)?;
        ((lo..hi).contains(&addr) && std::path::Path::new(path) == exe).then(|| addr - lo + offset)
    })
}

impl Probes {
    /// Times one uprobe hit on this machine (see the module doc); a few
    /// milliseconds. Runs on the calling thread.
    pub fn calibrate(&mut self) -> Result<Calibration, ProbeError> {
        let program = Program::GotraceEmpty;
        let offset = own_file_offset().ok_or_else(|| {
            ProbeError::Calibration("cannot find gotrace's own code in /proc/self/maps".into())
        })?;
        let point = AttachPoint {
            program: program.name(),
            symbol: "gotrace_calibration_point",
            vaddr: 0,
            file_offset: offset,
        };
        let pid = std::num::NonZeroU32::new(std::process::id()).expect("a pid is not 0");
        let scope = aya::programs::uprobe::UProbeScope::OneProcess(pid);
        let bare: Vec<f64> = (0..BATCHES).map(|_| time_calls(BATCH)).collect();
        let link = self.attach_point(&point, std::path::Path::new("/proc/self/exe"), scope)?;
        let before = self.hits().and_then(|h| h.get(&program).copied());
        time_calls(BATCH / 4); // warm up
        let probed: Vec<f64> = (0..BATCHES).map(|_| time_calls(BATCH)).collect();
        let after = self.hits().and_then(|h| h.get(&program).copied());
        self.detach_link(point.program, link)?;
        // At least every call (the benchmark's empty probes on the target
        // count in the same slot).
        let fired = after.zip(before).map(|(a, b)| a - b);
        if fired < Some(BATCH * (BATCHES as u64) + BATCH / 4) {
            return Err(ProbeError::Calibration(format!(
                "the calibration probe fired {fired:?} times, not {}",
                BATCH * (BATCHES as u64) + BATCH / 4
            )));
        }
        Ok(calibration(&bare, &probed))
    }
}

/// Per-hit cost from timed batches of `BATCH` calls without and with the
/// probe.
fn calibration(bare: &[f64], probed: &[f64]) -> Calibration {
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let base = median(bare);
    let mut per_hit: Vec<f64> = probed
        .iter()
        .map(|t| ((t - base) / BATCH as f64).max(0.0))
        .collect();
    per_hit.sort_by(f64::total_cmp);
    Calibration {
        hit_ns: round3(median(&per_hit)),
        min_ns: round3(per_hit[0]),
        max_ns: round3(per_hit[per_hit.len() - 1]),
        hits: BATCH * probed.len() as u64,
    }
}

/// `x` to 3 decimals: the report's figures, which a recording stores as
/// JSON and must give back exactly.
pub fn round3(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}

/// A near-idle target is held to the budget's share of this much CPU (a
/// tenth of a core), not of the little it uses.
const FLOOR_CORES: f64 = 0.1;
/// A window decides once the probes added this much CPU, or lasted this
/// long: a few hits in 10 ms say nothing.
const EVIDENCE_NS: f64 = 1e6;
const LONGEST_WINDOW: Duration = Duration::from_secs(1);
/// The first check, 10 ms after attach; each next one twice later, up to
/// once a second.
const FIRST_CHECK: Duration = Duration::from_millis(10);

/// Hits and CPU time at one moment.
#[derive(Clone, Debug, Default)]
pub struct Reading {
    pub at_ns: u64,
    pub hits: BTreeMap<Program, u64>,
    /// The target's CPU time (None: unreadable, it is gone).
    pub cpu_ns: Option<u64>,
}

/// A group of probes detached for the budget.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Shed {
    /// Seconds into the trace.
    pub at_s: f64,
    /// "park/ready", "creation/exit", "contexts" or "timers".
    pub probes: String,
    pub programs: Vec<String>,
    /// Their hits per second in the window that decided.
    pub hits_per_s: f64,
    /// What they cost the target in that window, in % of its own CPU.
    pub cost_pct: f64,
    /// What all the probes cost it then.
    pub estimate_pct: f64,
    /// How long after `at_s` the kernel had removed the last of them (it
    /// removes uprobes one at a time, each after a grace period; they cost
    /// the target until then); null: not yet at the end of the trace.
    #[serde(default)]
    pub removed_after_s: Option<f64>,
}

/// A group of probes attached during the trace, or left out, on the cost
/// predicted for it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Admission {
    /// Seconds into the trace of the prediction.
    pub at_s: f64,
    pub probes: String,
    /// Hits per second expected (creations/s × hits per creation).
    pub hits_per_s: f64,
    /// Their expected cost, in % of the target's own CPU.
    pub predicted_pct: f64,
}

/// What one group of probes cost the target over the whole trace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupCost {
    pub probes: String,
    pub hits: u64,
    pub added_cpu_ms: f64,
    /// In % of the target's own CPU.
    pub pct: f64,
}

/// The budget's part of the report (`trace.budget`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BudgetReport {
    /// The budget, in % of the target's own CPU; null: full tracing, the
    /// cost estimated but nothing detached.
    pub max_overhead_pct: Option<f64>,
    /// What one hit costs here (calibrated at attach), in µs; null when the
    /// calibration failed (then nothing is estimated or detached).
    pub hit_cost_us: Option<f64>,
    pub calibration: Option<Calibration>,
    /// Why there is no calibration.
    pub calibration_error: Option<String>,
    /// Over the whole trace: the CPU the probes added to the target (ms),
    /// and as a % of the CPU the target used on its own.
    pub added_cpu_ms: f64,
    pub estimate_pct: Option<f64>,
    /// The highest estimate of one check window.
    pub peak_pct: f64,
    /// Probe hits on the target over the trace.
    pub hits: u64,
    /// The same per group of probes (those with hits).
    #[serde(default)]
    pub groups: Vec<GroupCost>,
    /// The groups detached, in order.
    pub shed: Vec<Shed>,
    /// The groups attached during the trace because their cost, predicted
    /// from goroutine samples, fit the budget (the default with --pid).
    pub admitted: Vec<Admission>,
    /// Groups that could be attached but were not: the last prediction.
    pub not_admitted: Vec<Admission>,
    /// Windows whose estimate could not be made (the target's CPU clock
    /// unreadable).
    pub unknown_windows: u64,
}

/// The estimate of one window.
struct Window {
    secs: f64,
    /// Added CPU per group, ns.
    added: BTreeMap<ProbeGroup, f64>,
    hits: BTreeMap<ProbeGroup, u64>,
    /// The target's own CPU (what it used minus the estimate), floored.
    base_ns: f64,
}

impl Window {
    fn total(&self) -> f64 {
        self.added.values().sum()
    }

    fn pct(&self, added: f64) -> f64 {
        100.0 * added / self.base_ns
    }
}

/// Estimates the probes' cost over a trace and, with a budget, decides
/// what to detach.
pub struct Budget {
    pub report: BudgetReport,
    /// The estimate of the last window that decided, % of the target's CPU.
    pub last_pct: f64,
    hit_ns: Option<f64>,
    attached: Vec<ProbeGroup>,
    start: Option<Reading>,
    last: Option<Reading>,
    next: Duration,
}

impl Budget {
    /// `max_pct`: None for full tracing (estimate only). `groups`: the
    /// groups with probes attached.
    pub fn new(
        max_pct: Option<f64>,
        calibration: Result<Calibration, String>,
        groups: Vec<ProbeGroup>,
    ) -> Self {
        let (calibration, calibration_error) = match calibration {
            Ok(c) => (Some(c), None),
            Err(e) => (None, Some(e)),
        };
        Budget {
            hit_ns: calibration.as_ref().map(|c| c.hit_ns),
            report: BudgetReport {
                max_overhead_pct: max_pct,
                // Rounded: a recording keeps it as JSON, and a replay must
                // print the same figure.
                hit_cost_us: calibration.as_ref().map(|c| (c.hit_ns * 1e3).round() / 1e6),
                calibration,
                calibration_error,
                ..BudgetReport::default()
            },
            last_pct: 0.0,
            attached: groups,
            start: None,
            last: None,
            next: FIRST_CHECK,
        }
    }

    /// How long until the next check.
    pub fn next_check(&self) -> Duration {
        self.next
    }

    /// The groups still attached.
    pub fn attached(&self) -> &[ProbeGroup] {
        &self.attached
    }

    /// Whether `group` was detached for the budget.
    pub fn was_shed(&self, group: ProbeGroup) -> bool {
        self.report.shed.iter().any(|s| s.probes == group.name())
    }

    /// The budget's start: the readings the first window counts from.
    pub fn begin(&mut self, now: Reading) {
        self.start = Some(now.clone());
        self.last = Some(now);
    }

    /// The cost of `hits_per_s` more hits on a target using `own_cpu` (its
    /// CPU seconds per second), in % of its own CPU; None without a
    /// calibration.
    pub fn predict(&self, hits_per_s: f64, own_cpu: f64) -> Option<f64> {
        let hit_ns = self.hit_ns?;
        Some(100.0 * hits_per_s * hit_ns / (own_cpu.max(FLOOR_CORES) * 1e9))
    }

    /// Whether a group predicted to cost `pct` may be attached: within half
    /// the budget, so that a little more load does not detach it at once.
    pub fn admits(&self, pct: f64) -> bool {
        self.report
            .max_overhead_pct
            .is_some_and(|max| pct <= max / 2.0)
    }

    /// `group` was attached at `now`: windows count from there.
    pub fn admit(&mut self, group: ProbeGroup, now: Reading, a: Admission) {
        self.attached.push(group);
        self.report.not_admitted.retain(|n| n.probes != a.probes);
        self.report.admitted.push(a);
        if self.start.is_none() {
            self.start = Some(now.clone());
        }
        self.last = Some(now);
        self.next = FIRST_CHECK;
    }

    /// `group` stays out: the latest prediction, for the report.
    pub fn leave_out(&mut self, a: Admission) {
        self.report.not_admitted.retain(|n| n.probes != a.probes);
        self.report.not_admitted.push(a);
    }

    /// One check with the hits and CPU time now, `t_s` seconds into the
    /// trace: the groups to detach now (already counted as shed).
    pub fn check(&mut self, now: Reading, t_s: f64) -> Vec<ProbeGroup> {
        let Some(last) = self.last.clone() else {
            self.start = Some(now.clone());
            self.last = Some(now);
            return Vec::new();
        };
        let Some(w) = self.window(&last, &now) else {
            self.report.unknown_windows += u64::from(now.cpu_ns.is_none());
            self.last = Some(now);
            return Vec::new();
        };
        let decided = w.total() >= EVIDENCE_NS || w.secs >= LONGEST_WINDOW.as_secs_f64();
        if !decided {
            return Vec::new(); // keep the window open
        }
        self.next = (self.next * 2).min(LONGEST_WINDOW);
        let pct = w.pct(w.total());
        self.last_pct = pct;
        self.report.peak_pct = self.report.peak_pct.max(round3(pct));
        self.last = Some(now);
        match self.report.max_overhead_pct {
            Some(max) if pct > max => self.shed(&w, max, t_s),
            _ => Vec::new(),
        }
    }

    /// The estimate between two readings; None without a calibration or
    /// the target's CPU time.
    fn window(&self, a: &Reading, b: &Reading) -> Option<Window> {
        let hit_ns = self.hit_ns?;
        let secs = b.at_ns.saturating_sub(a.at_ns) as f64 / 1e9;
        let used = b.cpu_ns?.saturating_sub(a.cpu_ns?) as f64;
        let mut added = BTreeMap::new();
        let mut hits = BTreeMap::new();
        for (p, n) in &b.hits {
            let Some(g) = ProbeGroup::of(*p) else {
                continue;
            };
            let d = n.saturating_sub(a.hits.get(p).copied().unwrap_or(0));
            *hits.entry(g).or_insert(0) += d;
            *added.entry(g).or_insert(0.0) += d as f64 * hit_ns;
        }
        let total: f64 = added.values().sum();
        let floor = secs * 1e9 * FLOOR_CORES;
        Some(Window {
            secs,
            added,
            hits,
            base_ns: (used - total).max(floor).max(1.0),
        })
    }

    /// The groups to detach, hottest first, until the rest fits `max`.
    /// Parks go no later than creations and exits: a park of a goroutine
    /// whose creation is no longer seen would start a story with no end.
    fn shed(&mut self, w: &Window, max: f64, t_s: f64) -> Vec<ProbeGroup> {
        let mut order = self.attached.clone();
        order.sort_by(|a, b| {
            let cost = |g: &ProbeGroup| w.added.get(g).copied().unwrap_or(0.0);
            cost(b).total_cmp(&cost(a)).then(a.cmp(b))
        });
        let mut left = w.total();
        let mut out = Vec::new();
        for g in order {
            if w.pct(left) <= max {
                break;
            }
            if g == ProbeGroup::Lifecycle
                && !out.contains(&ProbeGroup::Parks)
                && self.attached.contains(&ProbeGroup::Parks)
            {
                out.push(ProbeGroup::Parks);
                left -= w.added.get(&ProbeGroup::Parks).copied().unwrap_or(0.0);
            }
            if !out.contains(&g) {
                out.push(g);
                left -= w.added.get(&g).copied().unwrap_or(0.0);
            }
        }
        let estimate_pct = w.pct(w.total());
        for g in &out {
            self.report.shed.push(Shed {
                at_s: round3(t_s),
                probes: g.name().to_string(),
                programs: g.programs().iter().map(|p| p.name().to_string()).collect(),
                hits_per_s: round3(w.hits.get(g).copied().unwrap_or(0) as f64 / w.secs.max(1e-9)),
                cost_pct: round3(w.pct(w.added.get(g).copied().unwrap_or(0.0))),
                estimate_pct: round3(estimate_pct),
                removed_after_s: None,
            });
        }
        self.attached.retain(|g| !out.contains(g));
        out
    }

    /// When each detached group's last uprobe was removed, from the
    /// (program, CLOCK_MONOTONIC ns) removals; `start_ns`: the trace's
    /// start, which `at_s` counts from.
    pub fn removed(&mut self, removals: &[(&str, u64)], start_ns: u64) {
        for s in &mut self.report.shed {
            let done = removals
                .iter()
                .filter(|(p, _)| s.programs.iter().any(|q| q == p))
                .map(|(_, t)| *t)
                .max();
            s.removed_after_s =
                done.map(|t| round3((t.saturating_sub(start_ns) as f64 / 1e9 - s.at_s).max(0.0)));
        }
    }

    /// The totals over the whole trace, with the last reading (or, when it
    /// has no CPU time because the target is gone, the last one that had).
    pub fn finish(&mut self, end: Reading) {
        let Some(start) = self.start.clone() else {
            return;
        };
        let end = match (&end.cpu_ns, &self.last) {
            (None, Some(last)) => last.clone(),
            _ => end,
        };
        self.report.hits = end
            .hits
            .iter()
            .filter(|(p, _)| ProbeGroup::of(**p).is_some())
            .map(|(p, n)| n.saturating_sub(start.hits.get(p).copied().unwrap_or(0)))
            .sum();
        if let Some(w) = self.window(&start, &end) {
            self.report.added_cpu_ms = round3(w.total() / 1e6);
            self.report.estimate_pct = Some(round3(w.pct(w.total())));
            self.report.groups = ProbeGroup::ALL
                .into_iter()
                .filter_map(|g| {
                    let hits = *w.hits.get(&g)?;
                    let added = w.added.get(&g).copied().unwrap_or(0.0);
                    (hits > 0).then(|| GroupCost {
                        probes: g.name().to_string(),
                        hits,
                        added_cpu_ms: round3(added / 1e6),
                        pct: round3(w.pct(added)),
                    })
                })
                .collect();
        }
    }
}

#[cfg(test)]
mod tests;
