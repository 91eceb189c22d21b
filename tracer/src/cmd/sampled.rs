//! `gotrace --sampled [--pid N | -- CMD]`: no probe; the goroutines are
//! read from the target's memory every `--sample-interval`, and the
//! report is built from those samples (see `capture::sampler`).

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;

use super::cli::TargetArgs;
use super::open::Opened;
use super::trace::{
    Started, Target, ViewChoice, analyse_at_exit, end_from_memory, end_proof, finish_recording,
    make_view, meta, referenced_stacks, start_recording,
};
use crate::capture::sampled::SampledSession;
use crate::capture::sampler::Sampler;
use crate::capture::{Capture, Meta, Mode};
use crate::model::Model;
use crate::model::existing::{Snapshot, SnapshotInfo};
use crate::process::{self, ptrace::ExitHold};

/// Why sampled mode has no contexts or timers.
const NOT_TRACED: &str = "sampled mode has no probes; trace with --full or --max-overhead for them";

/// Samples the target until the trace ends (recording it to `record`);
/// the capture and the opened binary.
pub(super) fn trace(
    args: &TargetArgs,
    target: &Target,
    leak_threshold: Duration,
    record: Option<&Path>,
    view: ViewChoice,
) -> anyhow::Result<(Capture, Opened)> {
    let (exe, shown) = target.exe()?;
    let opened = Opened::open(&exe, &shown)?;
    for line in opened.layout_warnings() {
        eprintln!("gotrace: {line}");
    }
    let mut started = Started::start(target, &exe, &shown)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let pid = started.pid;
    let mut exit = match runtime.block_on(async { started.exit_watch() }) {
        Ok(e) => e,
        Err(e) => return started.abort(e),
    };
    let mut sampler = Sampler::new(
        pid,
        &opened.bin,
        &opened.layout,
        &opened.exe,
        args.sample_interval,
    );
    let first = match target {
        Target::Pid(_) => match first(&mut sampler, &opened) {
            Ok(snap) => Some(snap),
            Err(e) => return started.abort(e),
        },
        Target::Command(_) => None,
    };
    let meta = Meta {
        mode: Mode::Sampled,
        contexts_not_traced: Some(NOT_TRACED.into()),
        timers_not_traced: Some(NOT_TRACED.into()),
        ..meta(
            pid,
            &opened,
            leak_threshold,
            first.as_ref().map(SnapshotInfo::of),
        )
    };
    let mut recorder = match record.map(|path| start_recording(path, &meta)).transpose() {
        Ok(r) => r,
        Err(e) => return started.abort(e),
    };
    let mut model = Model::default();
    if let Some(snap) = &first {
        if let Some(r) = recorder.as_mut() {
            r.snapshot(snap);
        }
        model.seed(snap);
    }
    announce(pid, &opened, &sampler, first.as_ref());
    let mut view = make_view(view, pid, &opened);
    let session = SampledSession {
        sampler: &mut sampler,
        model: &mut model,
        at_exit: Some(Box::new(|hold: &ExitHold, model: &Model| {
            analyse_at_exit(&opened, hold, model, args.prove().then_some(leak_threshold))
        })),
        duration: args.duration,
        on_ready: started
            .child
            .as_mut()
            .map(|c| Box::new(move || c.release()) as Box<dyn FnOnce() -> std::io::Result<()>>),
        view: view.as_mut(),
        recorder: recorder.as_mut(),
        exec_watch: process::ExecWatch::new(pid, &opened.exe),
    };
    let mut end = runtime.block_on(session.run(&mut exit))?;
    drop(view);
    let stacks = referenced_stacks(&model, std::mem::take(&mut sampler.stacks));
    drop(sampler);
    end_proof(args, leak_threshold, (pid, &opened), &model, &mut end);
    end_from_memory(Mode::Sampled, (pid, &opened), &mut end);
    finish_recording(recorder, record, &end, &stacks);
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
fn first(sampler: &mut Sampler<'_>, opened: &Opened) -> anyhow::Result<Snapshot> {
    let pid = sampler.pid;
    sampler.bias = Some(
        opened
            .load_bias(pid)
            .with_context(|| format!("cannot find where PID {pid} loaded its executable"))?,
    );
    Ok(sampler.first()?)
}

/// The "attached" line of sampled mode.
fn announce(pid: u32, opened: &Opened, sampler: &Sampler<'_>, first: Option<&Snapshot>) {
    let existing = match first {
        Some(s) => format!(
            ", read {} existing goroutines in {:.1} ms",
            s.goroutines.len(),
            s.took_ns as f64 / 1e6
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
