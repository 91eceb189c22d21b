//! The tracing loop: ring buffer → decode → model, until the duration runs
//! out, a signal arrives or the target exits. Once a second it samples
//! growth and refreshes the view (status line or `top`). A command held at
//! its exit is analysed there ([`AtExitHook`]), then let go.

use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{SignalKind, signal};

use super::{AtExit, AtExitAnalysis, End};
use crate::decode::decode;
use crate::model::Model;
use crate::probe::Probes;
use crate::process::ptrace::ExitHold;
use crate::process::{ExitEvent, TargetExit, monotonic_ns};

/// How often the ring buffer is drained when the probes do not wake us.
const POLL_PERIOD: Duration = Duration::from_millis(5);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndReason {
    Duration,
    Signal,
    TargetExit(Option<String>),
    /// The target exec'd this program (its probes went with the old image).
    TargetExec(String),
}

impl EndReason {
    pub fn name(&self) -> &'static str {
        match self {
            EndReason::Duration => "duration",
            EndReason::Signal => "signal",
            EndReason::TargetExit(_) => "target-exit",
            EndReason::TargetExec(_) => "target-exec",
        }
    }

    /// How the target ended, if it did.
    pub fn exit(&self) -> Option<String> {
        match self {
            EndReason::TargetExit(s) => s.clone().or(Some("exited".into())),
            EndReason::TargetExec(new) => Some(format!("exec'd {new}")),
            _ => None,
        }
    }
}

/// The analysis of a command's last state, run while it is held at its
/// exit: read its memory through [`ExitHold::tid`] (the thread group
/// leader, hence `/proc/PID/mem`, may be gone). The process is let go when
/// it returns, or after [`crate::process::ptrace::HOLD_LIMIT`] whatever it
/// is doing (then its reads fail, and the report says the hold timed out).
/// It gets the model as the command's last events left it.
pub type AtExitHook<'a> = Box<dyn FnOnce(&ExitHold, &Model) -> AtExitAnalysis + 'a>;

pub struct Session<'a> {
    pub probes: &'a mut Probes,
    pub model: &'a mut Model,
    /// Run once, if the target is held at its exit (`-- CMD`).
    pub at_exit: Option<AtExitHook<'a>>,
    pub duration: Option<Duration>,
    /// Called once, right after the loop is ready to receive (e.g. to release
    /// a held child).
    pub on_ready: Option<Box<dyn FnOnce() -> std::io::Result<()> + 'a>>,
    /// Read this PIE target's load bias (pid, binary) as soon as it runs it.
    pub pie_pid: Option<(u32, std::path::PathBuf)>,
    /// Checks the first events against the binary (wrong offsets abort).
    pub validator: crate::capture::validate::Validator,
    /// Writes every record and growth sample to a recording (`--record`).
    pub recorder: Option<&'a mut crate::capture::record::Recorder>,
    /// Refreshed once a second.
    pub view: &'a mut dyn crate::view::View,
    /// Ends the trace when the target execs another program.
    pub exec_watch: Option<crate::process::ExecWatch>,
    /// Estimates what the probes cost and, with a budget, detaches the
    /// hottest, with goroutine samples for what they gave.
    pub governor: Option<&'a mut dyn crate::capture::governor::Govern>,
}

/// Polls for a PIE target's load bias for up to `wait` (exec may still be
/// under way right after the child is released).
fn poll_bias(pid: u32, binary: &std::path::Path, wait: Duration) -> Option<u64> {
    let start = std::time::Instant::now();
    loop {
        if let Some(b) = crate::process::load_bias(pid, binary) {
            return Some(b);
        }
        if start.elapsed() >= wait {
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

struct Counts {
    events: u64,
    undecodable: u64,
}

/// What the loop keeps between wakeups.
struct Progress {
    counts: Counts,
    start_ns: u64,
    last_events: u64,
    last_tick_ns: u64,
    /// Load bias of a PIE target, once read while it ran.
    load_bias: Option<u64>,
    /// What was read while the target was held at its exit.
    at_exit: Option<AtExit>,
}

fn drain(
    ring: &mut RingBuf<MapData>,
    model: &mut Model,
    counts: &mut Counts,
    validator: &mut crate::capture::validate::Validator,
    mut recorder: Option<&mut crate::capture::record::Recorder>,
) -> Result<(), crate::capture::validate::ValidationError> {
    while let Some(item) = ring.next() {
        counts.events += 1;
        if let Some(r) = recorder.as_deref_mut() {
            r.event(&item);
        }
        match decode(&item) {
            Ok(ev) => {
                validator.check(&ev)?;
                model.apply(&ev)
            }
            Err(e) => {
                counts.undecodable += 1;
                log::debug!("undecodable event: {e}");
            }
        }
    }
    Ok(())
}

/// Growth sample of every creation site, `t_s` seconds into the trace
/// (recorded, so a replay samples at the same points).
fn sample(model: &mut Model, recorder: Option<&mut crate::capture::record::Recorder>, t_s: f64) {
    if let Some(r) = recorder {
        r.tick(t_s);
    }
    model.goroutines.sample_sites(t_s);
}

impl Session<'_> {
    /// Runs until the trace ends (`exit` tells when the target does);
    /// returns how and when it ended, with the kernel's counters as they
    /// stand then.
    pub async fn run(mut self, exit: &mut TargetExit) -> anyhow::Result<End> {
        let ring = self.probes.take_events()?;
        // SAFETY: the ring buffer owns its map fd and keeps it open and unchanged
        // until the AsyncFd (which owns the ring buffer) is dropped.
        let mut ring =
            unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
                .map_err(std::io::Error::from)?;
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
        // The probes wake us only when a quarter of the ring is in use
        // (batched wakeups); otherwise we drain it on this period.
        let mut poll = tokio::time::interval(POLL_PERIOD);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let governed = self.governor.is_some();
        let first_check = self
            .governor
            .as_ref()
            .map_or(Duration::MAX, |g| g.next_check());
        let budget_check = tokio::time::sleep(first_check.min(Duration::from_secs(3600)));
        tokio::pin!(budget_check);
        let mut progress = Progress {
            counts: Counts {
                events: 0,
                undecodable: 0,
            },
            start_ns,
            last_events: 0,
            last_tick_ns: start_ns,
            load_bias: None,
            at_exit: None,
        };
        if let Some(ready) = self.on_ready.take() {
            ready()?;
        }
        progress.load_bias = self
            .pie_pid
            .as_ref()
            .and_then(|(pid, bin)| poll_bias(*pid, bin, Duration::from_millis(200)));
        let end = loop {
            tokio::select! {
                guard = ring.readable_mut() => {
                    let mut guard = guard?;
                    self.drain(guard.get_inner_mut(), &mut progress.counts)?;
                    guard.clear_ready();
                }
                // Nothing to drain while no probe is attached (budgeted
                // mode before its probes fit, or after all were shed):
                // no wakeup every 5 ms then.
                _ = poll.tick(), if self.probes.attached_now() > 0 => {
                    self.probes.flush_logs();
                    self.drain(ring.get_mut(), &mut progress.counts)?;
                }
                _ = tick.tick() => {
                    if let Some(end) = self.tick(&mut progress) {
                        break end;
                    }
                }
                _ = &mut budget_check, if governed => {
                    let next = self.check_budget(start_ns);
                    budget_check.as_mut().reset(tokio::time::Instant::now() + next);
                }
                _ = sigint.recv() => break EndReason::Signal,
                _ = sigterm.recv() => break EndReason::Signal,
                _ = &mut deadline => break EndReason::Duration,
                ev = exit.next() => match ev {
                    ExitEvent::Held(hold) => {
                        // Its last events first, then its last state.
                        self.drain(ring.get_mut(), &mut progress.counts)?;
                        progress.at_exit = analyse_held(self.at_exit.take(), hold, self.model);
                    }
                    ExitEvent::Exited(status) => break EndReason::TargetExit(status),
                },
            }
        };
        self.finish(ring.get_mut(), end, progress)
    }

    /// Drains the ring into the model (and the recording).
    fn drain(
        &mut self,
        ring: &mut RingBuf<MapData>,
        counts: &mut Counts,
    ) -> Result<(), crate::capture::validate::ValidationError> {
        drain(
            ring,
            self.model,
            counts,
            &mut self.validator,
            self.recorder.as_deref_mut(),
        )
    }

    /// A budget check; when the next one is due.
    fn check_budget(&mut self, start_ns: u64) -> Duration {
        let t = monotonic_ns().saturating_sub(start_ns) as f64 / 1e9;
        match self.governor.as_deref_mut() {
            Some(g) => {
                g.check(self.probes, t);
                g.next_check()
            }
            None => Duration::from_secs(3600),
        }
    }

    /// Once a second: growth samples, the view, exec detection.
    fn tick(&mut self, p: &mut Progress) -> Option<EndReason> {
        if let Some(g) = self.governor.as_deref_mut() {
            let t = monotonic_ns().saturating_sub(p.start_ns) as f64 / 1e9;
            g.tick(self.model, self.probes, self.recorder.as_deref_mut(), t);
        }
        if p.load_bias.is_none() {
            p.load_bias = self
                .pie_pid
                .as_ref()
                .and_then(|(pid, bin)| crate::process::load_bias(*pid, bin));
        }
        let now = monotonic_ns();
        let t = now.saturating_sub(p.start_ns) as f64 / 1e9;
        sample(self.model, self.recorder.as_deref_mut(), t);
        let kernel = self.probes.counters();
        let secs = now.saturating_sub(p.last_tick_ns).max(1) as f64 / 1e9;
        self.view.tick(&crate::view::Tick {
            t_s: t,
            model: self.model,
            events_total: p.counts.events,
            events_per_s: (p.counts.events - p.last_events) as f64 / secs,
            kernel: &kernel,
            load_bias: p.load_bias.unwrap_or(0),
            watch: self
                .governor
                .as_ref()
                .map(|g| g.status())
                .unwrap_or_default(),
        });
        p.last_tick_ns = now;
        p.last_events = p.counts.events;
        self.exec_watch
            .as_mut()
            .and_then(|w| w.new_exe())
            .map(EndReason::TargetExec)
    }

    /// The last drain and sample, then how the trace ended.
    fn finish(
        mut self,
        ring: &mut RingBuf<MapData>,
        end: EndReason,
        mut p: Progress,
    ) -> anyhow::Result<End> {
        let end_ns = monotonic_ns();
        let end_unix_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0);
        // Whatever the kernel wrote before we stopped still belongs to the trace.
        self.probes.flush_logs();
        self.drain(ring, &mut p.counts)?;
        let gone = matches!(end, EndReason::TargetExit(_) | EndReason::TargetExec(_));
        if let Some(g) = self.governor.as_deref_mut() {
            g.finish_samples(self.model, gone, self.recorder.as_deref_mut());
        }
        sample(
            self.model,
            self.recorder.as_deref_mut(),
            end_ns.saturating_sub(p.start_ns) as f64 / 1e9,
        );
        self.view.close();
        let kernel = self.probes.counters();
        let load_bias = match &self.pie_pid {
            Some((pid, bin)) => p
                .load_bias
                .or_else(|| crate::process::load_bias(*pid, bin))
                .unwrap_or(0),
            None => 0,
        };
        let mut out = End {
            ended_by: end.name().to_string(),
            exit: end.exit(),
            start_ns: p.start_ns,
            end_ns,
            end_unix_ns: end_unix_ns as i64,
            events: p.counts.events,
            undecodable: p.counts.undecodable,
            load_bias,
            kernel,
            proof: None,
            at_exit: p.at_exit,
            samples: None,
            state_ns: None,
            budget: None,
            held: None,
            ctx_memory: None,
            timer_memory: None,
        };
        if let Some(g) = self.governor.as_deref_mut() {
            g.close(self.probes, self.model, &mut out, gone);
        }
        Ok(out)
    }
}

/// Runs `hook` on the held target, then lets it go (without a hook,
/// dropping `hold` lets it go).
pub fn analyse_held(hook: Option<AtExitHook<'_>>, hold: ExitHold, model: &Model) -> Option<AtExit> {
    let analysis = hook?(&hold, model);
    let tid = hold.tid;
    let released = hold.release();
    Some(AtExit {
        tid,
        held_ms: (released.held.as_secs_f64() * 1e6).round() / 1e3,
        timed_out: released.timed_out,
        analysis,
    })
}
