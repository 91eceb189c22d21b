//! `gotrace --sampled [--pid N | -- CMD]`: no probe; the goroutines are
//! read from the target's memory every `--sample-interval`, and the
//! report is built from those samples (see `capture::sampler`).

use std::time::Duration;

use anyhow::Context as _;

use super::cli::TargetArgs;
use super::open::Opened;
use super::trace::{Started, Target, ViewChoice, make_view, meta, referenced_stacks};
use crate::capture::sampled::SampledSession;
use crate::capture::sampler::Sampler;
use crate::capture::{Capture, Meta, Mode};
use crate::model::Model;
use crate::model::existing::SnapshotInfo;
use crate::process::{self, ExitWatcher};

/// Why sampled mode has no contexts or timers.
const NOT_TRACED: &str = "sampled mode has no probes; trace with --full or --max-overhead for them";

/// Samples the target until the trace ends; the capture and the opened
/// binary.
pub(super) fn trace(
    args: &TargetArgs,
    target: &Target,
    leak_threshold: Duration,
    view: ViewChoice,
) -> anyhow::Result<(Capture, Opened)> {
    let (exe, shown) = target.exe()?;
    let opened = Opened::open(&exe, &shown)?;
    for line in opened.layout_warnings() {
        eprintln!("gotrace: {line}");
    }
    let mut started = Started::start(target, &exe)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let pid = started.pid;
    let exit = match runtime.block_on(async { ExitWatcher::new(pid, started.child.is_some()) }) {
        Ok(e) => e,
        Err(e) => return started.abort(e),
    };
    let mut sampler = Sampler::new(pid, &opened.bin, &opened.layout, args.sample_interval);
    let mut model = Model::default();
    let snapshot = match target {
        Target::Pid(_) => match seed(&mut sampler, &mut model, &opened) {
            Ok(info) => Some(info),
            Err(e) => return started.abort(e),
        },
        Target::Command(_) => None,
    };
    let meta = Meta {
        mode: Mode::Sampled,
        contexts_not_traced: Some(NOT_TRACED.into()),
        timers_not_traced: Some(NOT_TRACED.into()),
        ..meta(pid, &opened, leak_threshold, snapshot.clone())
    };
    announce(pid, &opened, &sampler, snapshot.as_ref());
    let mut view = make_view(view, pid, &opened);
    let session = SampledSession {
        sampler: &mut sampler,
        model: &mut model,
        exit: &exit,
        duration: args.duration,
        on_ready: started
            .child
            .as_mut()
            .map(|c| Box::new(move || c.release()) as Box<dyn FnOnce() -> std::io::Result<()>>),
        binary: opened.exe.clone(),
        pie: opened.bin.is_pie(),
        view: view.as_mut(),
        exec_watch: process::ExecWatch::new(pid, &opened.exe),
    };
    let end = runtime.block_on(session.run())?;
    drop(view);
    let stacks = referenced_stacks(&model, std::mem::take(&mut sampler.stacks));
    drop(sampler);
    let capture = Capture {
        meta,
        model,
        stacks,
        end,
    };
    Ok((capture, opened))
}

/// The first sample of a running process (the goroutines it has before
/// the trace starts): without it there is nothing to compare with.
fn seed(
    sampler: &mut Sampler<'_>,
    model: &mut Model,
    opened: &Opened,
) -> anyhow::Result<SnapshotInfo> {
    let pid = sampler.pid;
    sampler.bias = Some(
        opened
            .load_bias(pid)
            .with_context(|| format!("cannot find where PID {pid} loaded its executable"))?,
    );
    Ok(sampler.seed(model)?)
}

/// The "attached" line of sampled mode.
fn announce(pid: u32, opened: &Opened, sampler: &Sampler<'_>, first: Option<&SnapshotInfo>) {
    let existing = match first {
        Some(s) => format!(
            ", read {} existing goroutines in {:.1} ms",
            s.goroutines, s.took_ms
        ),
        None => String::new(),
    };
    eprintln!(
        "gotrace: attached to PID {pid} ({}, {}) in sampled mode: no probes, goroutines read every {:.1}s{existing}; Ctrl-C to stop",
        opened.exe.display(),
        opened.bin.version().raw,
        sampler.next_interval().as_secs_f64(),
    );
}
