//! The loop of sampled mode: no probe, a goroutine sample every interval
//! (see [`super::sampler`]), until the duration runs out, a signal arrives
//! or the target exits. After each sample: the growth sample of every
//! creation site, the view. A command is held at its exit for its last
//! state (the hook given runs the leak proof there).

use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

use super::AtExit;
use super::End;
use super::record::Recorder;
use super::sampler::Sampler;
use super::session::{AtExitHook, EndReason, analyse_held};
use crate::model::{Model, SampleRules};
use crate::probe::counters::KernelCounters;
use crate::process::{ExitEvent, TargetExit, monotonic_ns};

pub struct SampledSession<'s, 'a> {
    pub sampler: &'s mut Sampler<'a>,
    pub model: &'s mut Model,
    /// Analyses a command held at its exit (`-- CMD`): its last state.
    pub at_exit: Option<AtExitHook<'s>>,
    pub duration: Option<Duration>,
    /// A command gotrace started, held before exec: released once the
    /// loop runs. Its goroutines are all created during the trace.
    pub on_ready: Option<Box<dyn FnOnce() -> std::io::Result<()> + 's>>,
    /// Refreshed after each sample.
    pub view: &'s mut dyn crate::view::View,
    /// Writes every sample and growth sample to a recording (`--record`).
    pub recorder: Option<&'s mut Recorder>,
    pub exec_watch: Option<crate::process::ExecWatch>,
}

impl SampledSession<'_, '_> {
    /// Samples until the trace ends; returns how and when it ended. The
    /// model must hold the first sample already (`--pid`), or nothing (a
    /// command). `exit` tells when the target ends.
    pub async fn run(mut self, exit: &mut TargetExit) -> anyhow::Result<End> {
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
        let mut at_exit: Option<AtExit> = None;
        if let Some(ready) = self.on_ready.take() {
            ready()?;
        }
        self.growth_sample(0.0);
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
                ev = exit.next() => match ev {
                    // Its last state, sampled and analysed before it is
                    // let go.
                    ExitEvent::Held(hold) => {
                        self.sample(start_ns, Some(hold.tid));
                        at_exit = analyse_held(self.at_exit.take(), hold, self.model);
                    }
                    ExitEvent::Exited(status) => break EndReason::TargetExit(status),
                },
            }
        };
        // The state at the end, unless the target is gone.
        if !matches!(end, EndReason::TargetExit(_) | EndReason::TargetExec(_)) {
            self.sample(start_ns, None);
        }
        self.view.close();
        let mut out = self.end(end, start_ns);
        out.at_exit = at_exit;
        Ok(out)
    }

    /// One sample, folded in, with the growth sample of every site; read
    /// through thread `tid` when given (a command held at its exit).
    fn sample(&mut self, start_ns: u64, tid: Option<u32>) {
        let (model, rec) = (&mut *self.model, self.recorder.as_deref_mut());
        let read = match tid {
            Some(tid) => self
                .sampler
                .sample_through(tid, model, SampleRules::ALL, rec),
            None => self.sampler.sample(model, SampleRules::ALL, rec),
        };
        if read {
            self.growth_sample(monotonic_ns().saturating_sub(start_ns) as f64 / 1e9);
        }
    }

    /// Every creation site's live count, `t_s` seconds into the trace
    /// (recorded, so that a replay samples at the same points).
    fn growth_sample(&mut self, t_s: f64) {
        if let Some(r) = self.recorder.as_deref_mut() {
            r.tick(t_s);
        }
        self.model.goroutines.sample_sites(t_s);
    }

    /// After each interval: a sample, the proof, the view, exec detection.
    fn tick(&mut self, start_ns: u64) -> Option<EndReason> {
        self.sample(start_ns, None);
        let now = monotonic_ns();
        let kernel = KernelCounters::default();
        self.view.tick(&crate::view::Tick {
            t_s: now.saturating_sub(start_ns) as f64 / 1e9,
            model: self.model,
            events_total: 0,
            events_per_s: 0.0,
            kernel: &kernel,
            load_bias: self.sampler.bias.unwrap_or(0),
            watch: crate::view::WatchStatus {
                mode: crate::capture::Mode::Sampled.name(),
                samples: self.sampler.info.taken,
                ..Default::default()
            },
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
            proof: None,
            at_exit: None,
            held: None,
            ctx_memory: None,
            timer_memory: None,
            samples: Some(self.sampler.info.clone()),
            budget: None,
            state_ns: matches!(end, EndReason::TargetExit(_) | EndReason::TargetExec(_))
                .then(|| self.model.goroutines.sampling().last_ns),
        }
    }
}
