//! What the probes cost while a trace runs (`probe::budget`): the budget's
//! checks, which detach the groups of probes that cost too much; the
//! goroutine samples (`capture::sampler`) that carry on for what a
//! detached group gave (the parks after park/ready, the creations and exits
//! after creation/exit), or that make the whole story with `--pid` by
//! default; and, in that default, the creation/exit probes attached once
//! their cost, predicted from the samples, fits the budget.

use std::time::Duration;

use super::End;
use super::record::Recorder;
use super::sampler::Sampler;
use crate::model::{Model, SampleRules};
use crate::probe::Probes;
use crate::probe::budget::{Admission, Budget, ProbeGroup, Reading, round3};
use crate::probe::goroutine::AttachPoint;
use crate::process::monotonic_ns;
use crate::view::WatchStatus;

/// What the live loop (`capture::session`) asks of the budget.
pub trait Govern {
    /// How long until the next budget check.
    fn next_check(&self) -> Duration;
    /// A budget check `t_s` seconds into the trace: detaches what goes over.
    fn check(&mut self, probes: &mut Probes, t_s: f64);
    /// Once a second, before the growth sample: a goroutine sample when
    /// samples keep part of the model, and the groups that now fit.
    fn tick(
        &mut self,
        model: &mut Model,
        probes: &mut Probes,
        rec: Option<&mut Recorder>,
        t_s: f64,
    );
    /// The end of the trace, every event drained: a last sample unless the
    /// target is `gone`.
    fn finish_samples(&mut self, model: &mut Model, gone: bool, rec: Option<&mut Recorder>);
    /// The totals into `end`.
    fn close(&mut self, probes: &Probes, model: &Model, end: &mut End, gone: bool);
    /// The budget as it stands, for the live view.
    fn status(&self) -> WatchStatus;
}

/// The budget and the samples of one trace.
pub struct Governor<'b> {
    pub budget: Budget,
    pub sampler: Sampler<'b>,
    /// What the samples keep up to date.
    rules: SampleRules,
    /// Groups to attach once their predicted cost fits (the default with
    /// --pid), with their points.
    pending: Vec<(ProbeGroup, Vec<AttachPoint>)>,
    /// (time, highest goid, target CPU) at the last tick: the creation
    /// rate, since goids count creations (each P takes them 16 at a time).
    last_point: Option<(u64, u64, u64)>,
    mode: super::Mode,
}

impl<'b> Governor<'b> {
    /// `rules`: what samples keep from the start; `pending`: groups to
    /// attach when they fit.
    pub fn new(
        mode: super::Mode,
        budget: Budget,
        sampler: Sampler<'b>,
        rules: SampleRules,
        pending: Vec<(ProbeGroup, Vec<AttachPoint>)>,
    ) -> Self {
        Self {
            budget,
            sampler,
            rules,
            pending,
            last_point: None,
            mode,
        }
    }

    fn reading(&self, probes: &Probes) -> Option<Reading> {
        Some(Reading {
            at_ns: monotonic_ns(),
            hits: probes.hits()?,
            cpu_ns: crate::process::cpu::cpu_ns(self.sampler.pid),
        })
    }

    fn sampling(&self) -> bool {
        self.rules != SampleRules::default()
    }

    /// The window's start; call once the probes of the start are attached.
    pub fn begin(&mut self, probes: &Probes) {
        if let Some(now) = self.reading(probes) {
            self.budget.begin(now);
        }
    }

    /// Attaches the pending groups whose cost, predicted from the creation
    /// rate between the last two ticks, fits the budget.
    fn admit(&mut self, probes: &mut Probes, t_s: f64) {
        let (Some((at, goid)), Some(cpu)) = (
            self.sampler.last_goid,
            crate::process::cpu::cpu_ns(self.sampler.pid),
        ) else {
            return;
        };
        let Some((at0, goid0, cpu0)) = self.last_point.replace((at, goid, cpu)) else {
            return;
        };
        let secs = at.saturating_sub(at0) as f64 / 1e9;
        if secs <= 0.0 || self.pending.is_empty() {
            return;
        }
        let creations = goid.saturating_sub(goid0) as f64 / secs;
        let own = cpu.saturating_sub(cpu0) as f64 / 1e9 / secs;
        let mut still = Vec::new();
        for (group, points) in std::mem::take(&mut self.pending) {
            // One hit per goroutine for each of the group's programs.
            let mut programs: Vec<&str> = points.iter().map(|p| p.program).collect();
            programs.dedup();
            let hits_per_s = creations * programs.len() as f64;
            let Some(pct) = self.budget.predict(hits_per_s, own) else {
                continue; // no calibration: never attached
            };
            let a = Admission {
                at_s: round3(t_s),
                probes: group.name().to_string(),
                hits_per_s: round3(hits_per_s),
                predicted_pct: round3(pct),
            };
            if !self.budget.admits(pct) {
                self.budget.leave_out(a);
                still.push((group, points));
                continue;
            }
            match (probes.attach_more(&points), self.reading(probes)) {
                (Ok(()), Some(now)) => {
                    eprintln!(
                        "gotrace: attached the {} probes at {t_s:.1}s: ≈ {pct:.2}% of the target's CPU expected ({hits_per_s:.0} hits/s)",
                        group.name()
                    );
                    self.budget.admit(group, now, a);
                    if group == ProbeGroup::Lifecycle {
                        self.rules.presence = false;
                    }
                }
                (Err(e), _) => eprintln!(
                    "gotrace: warning: attaching the {} probes: {e}",
                    group.name()
                ),
                (Ok(()), None) => {}
            }
        }
        self.pending = still;
    }
}

impl Govern for Governor<'_> {
    fn next_check(&self) -> Duration {
        self.budget.next_check()
    }

    fn check(&mut self, probes: &mut Probes, t_s: f64) {
        let Some(now) = self.reading(probes) else {
            self.budget.report.unknown_windows += 1;
            return;
        };
        let shed = self.budget.check(now, t_s);
        // Hottest first: the kernel removes them one after the other.
        let names: Vec<&str> = shed
            .iter()
            .flat_map(|g| g.programs().iter().map(|p| p.name()))
            .collect();
        if let Err(e) = probes.detach(&names) {
            eprintln!("gotrace: warning: detaching probes: {e}");
        }
        for (group, s) in shed
            .iter()
            .zip(self.budget.report.shed.iter().rev().take(shed.len()).rev())
        {
            match group {
                ProbeGroup::Parks => self.rules.states = true,
                ProbeGroup::Lifecycle => self.rules.presence = true,
                ProbeGroup::Contexts | ProbeGroup::Timers => {}
            }
            self.pending.retain(|(g, _)| g != group);
            eprintln!(
                "gotrace: over the {}% overhead budget at {:.2}s (probes ≈ {:.1}% of the target's CPU): detaching the {} probes ({:.0} hits/s, ≈ {:.1}%){}",
                self.budget.report.max_overhead_pct.unwrap_or(0.0),
                s.at_s,
                s.estimate_pct,
                s.probes,
                s.hits_per_s,
                s.cost_pct,
                match group {
                    ProbeGroup::Parks | ProbeGroup::Lifecycle =>
                        "; goroutine samples carry on for them",
                    _ => "",
                }
            );
        }
    }

    fn tick(
        &mut self,
        model: &mut Model,
        probes: &mut Probes,
        rec: Option<&mut Recorder>,
        t_s: f64,
    ) {
        if !self.sampling() && self.pending.is_empty() {
            return;
        }
        self.sampler.sample(model, self.rules, rec);
        self.admit(probes, t_s);
    }

    fn finish_samples(&mut self, model: &mut Model, gone: bool, rec: Option<&mut Recorder>) {
        // The state at the end, unless the target is gone.
        if self.sampling() && !gone {
            self.sampler.sample(model, self.rules, rec);
        }
    }

    fn close(&mut self, probes: &Probes, model: &Model, end: &mut End, gone: bool) {
        if gone && self.rules.states {
            // The parks are as the last sample saw them.
            end.state_ns = Some(model.goroutines.sampling().last_ns);
        }
        if let Some(now) = self.reading(probes) {
            self.budget.finish(now);
        }
        self.budget.removed(&probes.removed(), end.start_ns);
        end.budget = Some(self.budget.report.clone());
        end.samples = (self.sampler.info.taken > 0).then(|| self.sampler.info.clone());
    }

    fn status(&self) -> WatchStatus {
        let r = &self.budget.report;
        WatchStatus {
            mode: self.mode.name(),
            max_pct: r.max_overhead_pct,
            last_pct: self.budget.last_pct,
            peak_pct: r.peak_pct,
            shed: r
                .shed
                .iter()
                .map(|s| format!("{} at {:.2}s", s.probes, s.at_s))
                .collect(),
            samples: self.sampler.info.taken,
        }
    }
}
