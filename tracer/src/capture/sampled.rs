//! The loop of sampled mode: no probe, a goroutine sample every interval
//! (see [`super::sampler`]), until the duration runs out, a signal arrives
//! or the target exits. After each sample: the growth sample of every
//! creation site, the leak proof's turn, the view.

use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

use super::End;
use super::sampler::{Sampler, prove};
use super::session::EndReason;
use crate::model::{Model, SampleRules};
use crate::probe::counters::KernelCounters;
use crate::process::{ExitWatcher, monotonic_ns};

pub struct SampledSession<'s, 'a> {
    pub sampler: &'s mut Sampler<'a>,
    pub model: &'s mut Model,
    pub exit: &'s ExitWatcher,
    pub duration: Option<Duration>,
    /// A command gotrace started, held before exec: released once the
    /// loop runs. Its goroutines are all created during the trace.
    pub on_ready: Option<Box<dyn FnOnce() -> std::io::Result<()> + 's>>,
    /// Where the target's binary is, to find its load bias after exec.
    pub binary: std::path::PathBuf,
    pub pie: bool,
    /// Refreshed after each sample.
    pub view: &'s mut dyn crate::view::View,
    pub exec_watch: Option<crate::process::ExecWatch>,
}

impl SampledSession<'_, '_> {
    /// Samples until the trace ends; returns how and when it ended. The
    /// model must hold the first sample already (`--pid`), or nothing (a
    /// command).
    pub async fn run(mut self) -> anyhow::Result<End> {
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut sigterm = signal(SignalKind::terminate())?;
        let start_ns = monotonic_ns();
        let duration = self.duration;
        let deadline = async move {
            match duration {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(deadline);
        let exited = self.exit.exited();
        tokio::pin!(exited);
        if let Some(ready) = self.on_ready.take() {
            ready()?;
        }
        self.model.goroutines.sample_sites(0.0);
        let end = loop {
            let next = tokio::time::sleep(self.sampler.next_interval());
            tokio::select! {
                _ = next => {
                    if let Some(end) = self.tick(start_ns) {
                        break end;
                    }
                }
                _ = sigint.recv() => break EndReason::Signal,
                _ = sigterm.recv() => break EndReason::Signal,
                _ = &mut deadline => break EndReason::Duration,
                status = &mut exited => break EndReason::TargetExit(status),
            }
        };
        // The state at the end, unless the target is gone.
        if !matches!(end, EndReason::TargetExit(_) | EndReason::TargetExec(_)) {
            self.sample(start_ns);
        }
        self.view.close();
        prove(self.sampler.pid);
        Ok(self.end(end, start_ns))
    }

    /// One sample, folded in, with the growth sample of every site.
    fn sample(&mut self, start_ns: u64) -> bool {
        if self.sampler.bias.is_none() {
            self.sampler.bias = if self.pie {
                crate::process::load_bias(self.sampler.pid, &self.binary)
            } else {
                Some(0)
            };
        }
        if !self.sampler.sample(self.model, SampleRules::ALL) {
            return false;
        }
        let t = monotonic_ns().saturating_sub(start_ns) as f64 / 1e9;
        self.model.goroutines.sample_sites(t);
        true
    }

    /// After each interval: a sample, the proof, the view, exec detection.
    fn tick(&mut self, start_ns: u64) -> Option<EndReason> {
        if self.sample(start_ns) {
            prove(self.sampler.pid);
        }
        let now = monotonic_ns();
        let kernel = KernelCounters::default();
        self.view.tick(&crate::view::Tick {
            t_s: now.saturating_sub(start_ns) as f64 / 1e9,
            model: self.model,
            events_total: 0,
            events_per_s: 0.0,
            kernel: &kernel,
            load_bias: self.sampler.bias.unwrap_or(0),
        });
        self.exec_watch
            .as_mut()
            .and_then(|w| w.new_exe())
            .map(EndReason::TargetExec)
    }

    fn end(&self, end: EndReason, start_ns: u64) -> End {
        let end_ns = monotonic_ns();
        let end_unix_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        End {
            ended_by: end.name().to_string(),
            exit: end.exit(),
            start_ns,
            end_ns,
            end_unix_ns,
            events: 0,
            undecodable: 0,
            load_bias: self.sampler.bias.unwrap_or(0),
            kernel: KernelCounters::default(),
            samples: Some(self.sampler.info.clone()),
            state_ns: matches!(end, EndReason::TargetExit(_) | EndReason::TargetExec(_))
                .then(|| self.model.goroutines.sampling().last_ns),
        }
    }
}
