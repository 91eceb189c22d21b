//! One trace, end to end: inspect the target binary, attach, run the session,
//! write the report.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::capture::{Capture, End, Meta};
use crate::cli::{DEFAULT_LEAK_THRESHOLD, TargetArgs, TraceArgs};
use crate::gobin::GoBinary;
use crate::goruntime::hooks::{MAX_VERIFIED, MIN_SUPPORTED};
use crate::model::Model;
use crate::probe::{Probes, goroutine};
use crate::record::Recorder;
use crate::report::Report;
use crate::session::{EndReason, Session};
use crate::snapshot::{Snapshot, SnapshotInfo, is_snapshot_stack};
use crate::target::{self, ExitWatcher, HeldChild};

pub struct TraceOutcome {
    /// None for commands that do not build a report.
    pub report: Option<Report>,
}

impl TraceOutcome {
    /// Outcome of a command that lists things rather than tracing.
    pub fn listing() -> Self {
        Self { report: None }
    }

    /// 0 when no leak suspects, 3 when there are some.
    pub fn exit_code(&self) -> u8 {
        match &self.report {
            Some(r) if r.suspect_count > 0 => 3,
            _ => 0,
        }
    }
}

/// The binary, checked to be a Go program gotrace can trace.
pub(crate) fn inspect(path: &Path, shown: &str) -> anyhow::Result<GoBinary> {
    let bin = GoBinary::open(path).with_context(|| format!("cannot trace {shown}"))?;
    let v = bin.version();
    if (v.major, v.minor) < MIN_SUPPORTED {
        bail!(
            "unsupported Go version {} in {shown}: gotrace supports Go {}.{} and later",
            v.raw,
            MIN_SUPPORTED.0,
            MIN_SUPPORTED.1
        );
    }
    Ok(bin)
}

enum Mode {
    Pid(u32),
    Command(Vec<String>),
}

/// What the user sees while the trace runs.
#[derive(Clone, Copy, Debug)]
pub enum ViewChoice {
    /// A status line on stderr when it is a terminal.
    Status,
    /// `gotrace top`: a screen on stdout (`tty`) or one line per second.
    Top { tty: bool },
}

/// `gotrace [--pid N | -- CMD]`: trace, then write every output.
pub fn run(args: TraceArgs) -> anyhow::Result<TraceOutcome> {
    let leak_threshold = args.report.leak_threshold.unwrap_or(DEFAULT_LEAK_THRESHOLD);
    let traced = trace(
        &args.target,
        leak_threshold,
        args.record.as_deref(),
        ViewChoice::Status,
    )?;
    finish(
        &traced,
        Some(&args.output),
        leak_threshold,
        args.report.contexts,
    )
}

/// `gotrace top`: the live view, then the summary (and the outputs with -o).
pub fn run_top(args: crate::cli::TopArgs) -> anyhow::Result<TraceOutcome> {
    use std::io::IsTerminal as _;
    let leak_threshold = args.report.leak_threshold.unwrap_or(DEFAULT_LEAK_THRESHOLD);
    let tty = std::io::stdout().is_terminal();
    let traced = trace(&args.target, leak_threshold, None, ViewChoice::Top { tty })?;
    finish(
        &traced,
        args.output.as_deref(),
        leak_threshold,
        args.report.contexts,
    )
}

/// A finished live trace: the capture and what is needed to symbolise it.
pub struct Traced {
    pub capture: Capture,
    pub bin: GoBinary,
    pub layout: crate::gobin::layout::RuntimeLayout,
    pub symbolizer: crate::gobin::symbolize::Symbolizer,
}

/// Builds the report (and writes the outputs to `dir`), prints the summary.
pub fn finish(
    t: &Traced,
    dir: Option<&Path>,
    leak_threshold: Duration,
    contexts: bool,
) -> anyhow::Result<TraceOutcome> {
    let produced = crate::outputs::produce(
        &t.capture,
        &t.bin,
        &t.layout,
        &t.symbolizer,
        &crate::outputs::Options {
            dir,
            leak_threshold,
        },
    )?;
    print!(
        "{}",
        crate::report::text::render(&produced.report, contexts)
    );
    if let Some(p) = &produced.report_path {
        eprintln!("gotrace: report written to {}", p.display());
    }
    for line in &produced.notes {
        eprintln!("gotrace: {line}");
    }
    Ok(TraceOutcome {
        report: Some(produced.report),
    })
}

/// Attaches to the target, runs the session until it ends and returns the
/// capture (with every stack it references read out of the kernel).
pub fn trace(
    args: &TargetArgs,
    leak_threshold: Duration,
    record: Option<&Path>,
    view: ViewChoice,
) -> anyhow::Result<Traced> {
    let mode = match (args.pid, args.command.is_empty()) {
        (Some(pid), true) => Mode::Pid(pid),
        (None, false) => Mode::Command(args.command.clone()),
        _ => bail!("nothing to trace: give --pid PID or -- CMD [ARGS...]"),
    };
    let (exe_path, shown) = match &mode {
        Mode::Pid(pid) => (target::exe_of(*pid)?, format!("PID {pid}")),
        Mode::Command(argv) => {
            let p = target::resolve_command(&argv[0])?;
            let shown = p.display().to_string();
            (p, shown)
        }
    };
    let bin = inspect(&exe_path, &shown)?;
    let layout = bin
        .layout()
        .with_context(|| format!("cannot read the Go runtime layout of {shown}"))?;
    let v = bin.version();
    if (v.major, v.minor) > MAX_VERIFIED {
        eprintln!(
            "gotrace: warning: {} is newer than the newest verified Go ({}.{}): offsets come from its DWARF",
            v.raw, MAX_VERIFIED.0, MAX_VERIFIED.1
        );
    }
    let layout_origin = match layout.source {
        crate::gobin::layout::LayoutSource::Dwarf => "DWARF",
        crate::gobin::layout::LayoutSource::Table => {
            eprintln!(
                "gotrace: {shown} has no DWARF: runtime offsets from the per-version table ({}), \
                 symbols from pclntab",
                bin.version().raw
            );
            "table"
        }
    };
    let crate::probe::Plan {
        points,
        contexts: ctx_plan,
        timers: timer_plan,
    } = crate::probe::plan(
        &bin,
        &layout,
        &shown,
        bin.is_pie() && !args.command.is_empty(),
    )?;
    let symbolizer = bin.symbolizer().context("cannot load symbols")?;

    // Start a command held before exec (still single-threaded here).
    let mut child: Option<HeldChild> = match &mode {
        Mode::Command(argv) => Some(target::spawn_held(&exe_path, argv)?),
        Mode::Pid(_) => None,
    };
    let pid = match (&mode, &child) {
        (Mode::Pid(pid), _) => *pid,
        (_, Some(c)) => c.pid,
        _ => unreachable!("command mode always has a child"),
    };
    let is_child = child.is_some();
    let _lock = match crate::lock::lock(pid) {
        Ok(l) => l,
        Err(e) => {
            if let Some(c) = child.take() {
                c.abort();
            }
            return Err(e.into());
        }
    };
    let attach = || -> anyhow::Result<(Probes, ExitWatcher)> {
        let mut config = goroutine::config(pid, &layout);
        if timer_plan.is_ok() {
            crate::probe::timers::configure(&mut config, &layout);
        }
        if let Ok(p) = &ctx_plan {
            let bias = if bin.is_pie() {
                target::load_bias(pid, &exe_path).unwrap_or(0)
            } else {
                0
            };
            p.configure(&mut config, &layout, bias);
        }
        let probes = Probes::attach(
            config,
            &exe_path,
            pid,
            &points,
            crate::probe::AttachOptions {
                ring_bytes: args.ring_buffer,
                empty_programs: args.bench_empty_probes,
                debug_probes: args.debug_probes
                    || log::log_enabled!(target: "tracer_ebpf", log::Level::Debug),
            },
        )?;
        let exit = ExitWatcher::new(pid, is_child)?;
        Ok((probes, exit))
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let attached = runtime.block_on(async { attach() });
    let (mut probes, exit) = match attached {
        Ok(v) => v,
        Err(e) => {
            if let Some(c) = child.take() {
                c.abort();
            }
            return Err(e);
        }
    };
    // The goroutines that already exist (--pid only: a command started
    // under gotrace has none), read right after the probes are attached so
    // that none falls between the two.
    let snapshot = match &mode {
        Mode::Pid(_) => Some(read_existing(pid, &bin, &layout, &exe_path)),
        Mode::Command(_) => None,
    };
    let meta = Meta {
        pid,
        exe: std::fs::canonicalize(&exe_path)
            .unwrap_or(exe_path.clone())
            .display()
            .to_string(),
        build_id: bin.build_id(),
        go_version: bin.version().raw.clone(),
        arch: format!("{:?}", bin.arch()).to_lowercase(),
        contexts_not_traced: ctx_plan.as_ref().err().cloned(),
        timers_not_traced: timer_plan.as_ref().err().cloned(),
        probes_attached: probes.attached(),
        leak_threshold_ns: leak_threshold.as_nanos() as u64,
        snapshot: snapshot.as_ref().map(|s| match s {
            Ok(snap) => SnapshotInfo::of(snap),
            Err(e) => SnapshotInfo::failed(e.clone()),
        }),
    };
    let mut recorder = match record {
        Some(path) => match Recorder::create(path, &meta) {
            Ok(r) => Some(r),
            Err(e) => {
                drop(probes);
                if let Some(c) = child.take() {
                    c.abort();
                }
                return Err(e.into());
            }
        },
        None => None,
    };
    let existing = match &snapshot {
        Some(Ok(snap)) => format!(
            ", read {} existing goroutines in {:.1} ms",
            snap.goroutines.len(),
            snap.took_ns as f64 / 1e6
        ),
        _ => String::new(),
    };
    eprintln!(
        "gotrace: attached {} uprobes to PID {pid} ({}, {}){existing}; Ctrl-C to stop",
        probes.attached(),
        exe_path.display(),
        bin.version().raw
    );
    if let Some(Err(e)) = &snapshot {
        eprintln!(
            "gotrace: warning: cannot read the existing goroutines ({e}); those created before \
             attach show up when they next park"
        );
    }

    let mut view: Box<dyn crate::view::View + '_> = match view {
        ViewChoice::Status => Box::new(crate::view::status::StatusLine::new()),
        ViewChoice::Top { tty } => Box::new(crate::view::top::Top::new(
            &bin,
            &symbolizer,
            &layout.wait_reasons,
            format!("PID {pid} {} ({})", exe_path.display(), bin.version().raw),
            tty,
            Box::new(std::io::stdout()),
        )),
    };
    let mut model = Model::default();
    let mut snapshot_stacks = BTreeMap::new();
    if let Some(Ok(snap)) = snapshot {
        if let Some(r) = recorder.as_mut() {
            r.snapshot(&snap);
        }
        model.seed(&snap);
        snapshot_stacks = snap.stacks;
    }
    let outcome = runtime.block_on(
        Session {
            probes: &mut probes,
            model: &mut model,
            exit: &exit,
            duration: args.duration,
            pie_pid: bin.is_pie().then(|| (pid, exe_path.clone())),
            validator: crate::validate::Validator::new(
                bin.symbols().iter().map(|f| f.addr).collect(),
                if bin.is_pie() {
                    target::load_bias(pid, &exe_path)
                } else {
                    Some(0)
                },
                layout_origin,
            ),
            on_ready: child
                .as_mut()
                .map(|c| Box::new(move || c.release()) as Box<dyn FnOnce() -> std::io::Result<()>>),
            recorder: recorder.as_mut(),
            view: view.as_mut(),
            exec_watch: target::ExecWatch::new(pid, &exe_path),
        }
        .run(),
    );
    drop(view);
    let outcome = outcome?;

    // Every stack the model references: kernel stacks came as events,
    // snapshot stacks were read at attach.
    let stacks = model
        .stack_ids()
        .into_iter()
        .filter_map(|id| {
            let pcs = if is_snapshot_stack(id) {
                snapshot_stacks.remove(&id)?
            } else {
                model.dumped.get(id)?.clone()
            };
            Some((id, pcs))
        })
        .collect();
    let kernel = probes.counters();
    drop(probes); // detach every uprobe before the slow part

    let load_bias = if bin.is_pie() {
        outcome
            .load_bias
            .or_else(|| target::load_bias(pid, &exe_path))
            .unwrap_or(0)
    } else {
        0
    };
    let end = End {
        ended_by: outcome.end.name().to_string(),
        exit: match &outcome.end {
            EndReason::TargetExit(s) => s.clone().or(Some("exited".into())),
            EndReason::TargetExec(new) => Some(format!("exec'd {new}")),
            _ => None,
        },
        start_ns: outcome.start_ns,
        end_ns: outcome.end_ns,
        end_unix_ns: outcome.end_unix_ns as i64,
        events: outcome.events,
        undecodable: outcome.undecodable,
        load_bias,
        kernel,
    };
    if let (Some(r), Some(path)) = (recorder, record) {
        match r.finish(&end, &stacks) {
            Ok(()) => eprintln!("gotrace: recording written to {}", path.display()),
            Err(e) => eprintln!("gotrace: warning: {:#}", anyhow::Error::from(e)),
        }
    }
    Ok(Traced {
        capture: Capture {
            meta,
            model,
            stacks,
            end,
        },
        bin,
        layout,
        symbolizer,
    })
}

/// The goroutines of `pid` right now; errors as one line for the report.
fn read_existing(
    pid: u32,
    bin: &GoBinary,
    layout: &crate::gobin::layout::RuntimeLayout,
    exe: &Path,
) -> Result<Snapshot, String> {
    let bias = if bin.is_pie() {
        target::load_bias(pid, exe).ok_or("cannot find the executable's load address")?
    } else {
        0
    };
    crate::snapshot::take(pid, bin, layout, bias).map_err(|e| e.to_string())
}

/// `gotrace probes BINARY`: where gotrace would attach, one line per uprobe
/// (`symbol+offset program vaddr=.. file_offset=..`), for comparisons with
/// other tools.
pub fn run_probes(args: crate::cli::ProbesArgs) -> anyhow::Result<TraceOutcome> {
    let shown = args.binary.display().to_string();
    let bin = inspect(&args.binary, &shown)?;
    let layout = bin
        .layout()
        .with_context(|| format!("cannot read the Go runtime layout of {shown}"))?;
    let plan = crate::probe::plan(&bin, &layout, &shown, false)?;
    for p in &plan.points {
        let base = bin
            .symbols()
            .iter()
            .find(|f| f.name == p.symbol)
            .map(|f| f.addr)
            .unwrap_or(p.vaddr);
        println!(
            "{}+{:#x} {} vaddr={:#x} file_offset={:#x}",
            p.symbol,
            p.vaddr - base,
            p.program,
            p.vaddr,
            p.file_offset
        );
    }
    Ok(TraceOutcome::listing())
}
