//! `gotrace [--pid N | -- CMD]` and `gotrace top`: open the target, attach,
//! run the session, then build and write every output.
//!
//! The steps, in order: [`Target::choose`] (which process), [`Opened`]
//! (its binary), [`crate::probe::plan`], [`Started::start`] (spawn a held
//! command, take the per-process lock), [`Started::attach`], the goroutines
//! that already exist ([`read_existing`], `--pid` only), the session, and
//! [`finish`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::bail;

use super::Outcome;
use super::cli::{DEFAULT_LEAK_THRESHOLD, DEFAULT_MAX_OVERHEAD, TargetArgs, TopArgs, TraceArgs};
use super::open::Opened;
use crate::capture::governor::Governor;
use crate::capture::record::{RecordError, Recorder};
use crate::capture::sampler::Sampler;
use crate::capture::session::Session;
use crate::capture::{Capture, End, Meta, Mode};
use crate::model::existing::{Snapshot, SnapshotInfo, is_snapshot_stack};
use crate::model::{Model, SampleRules};
use crate::probe::budget::{Budget, ProbeGroup};
use crate::probe::{Plan, Probes, goroutine};
use crate::process::lock::TargetLock;
use crate::process::ptrace::{ExitHold, TracedChild};
use crate::process::{self, ExitWatcher, HeldChild, TargetExit};

/// What the user sees while the trace runs.
#[derive(Clone, Copy, Debug)]
pub enum ViewChoice {
    /// A status line on stderr when it is a terminal.
    Status,
    /// `gotrace top`: a screen on stdout (`tty`) or one line per second.
    Top { tty: bool },
}

/// `gotrace [--pid N | -- CMD]`: trace, then write every output.
pub fn run(args: TraceArgs) -> anyhow::Result<Outcome> {
    let leak_threshold = args.report.leak_threshold.unwrap_or(DEFAULT_LEAK_THRESHOLD);
    let (capture, opened) = trace(
        &args.target,
        leak_threshold,
        args.record.as_deref(),
        ViewChoice::Status,
    )?;
    finish(
        &capture,
        &opened,
        Some(&args.output),
        leak_threshold,
        args.report.contexts,
    )
}

/// `gotrace top`: the live view, then the summary (and the outputs with -o).
pub fn run_top(args: TopArgs) -> anyhow::Result<Outcome> {
    use std::io::IsTerminal as _;
    let leak_threshold = args.report.leak_threshold.unwrap_or(DEFAULT_LEAK_THRESHOLD);
    let tty = std::io::stdout().is_terminal();
    let (capture, opened) = trace(&args.target, leak_threshold, None, ViewChoice::Top { tty })?;
    finish(
        &capture,
        &opened,
        args.output.as_deref(),
        leak_threshold,
        args.report.contexts,
    )
}

/// Builds the report (and writes the outputs to `dir`), prints the summary.
pub fn finish(
    capture: &Capture,
    opened: &Opened,
    dir: Option<&Path>,
    leak_threshold: Duration,
    contexts: bool,
) -> anyhow::Result<Outcome> {
    let written = crate::outputs::produce(
        capture,
        &opened.bin,
        &opened.layout,
        &opened.symbolizer,
        &crate::outputs::Options {
            dir,
            leak_threshold,
        },
    )?;
    print!("{}", crate::report::text::render(&written.report, contexts));
    if let Some(p) = &written.report_path {
        eprintln!("gotrace: report written to {}", p.display());
    }
    for line in &written.notes {
        eprintln!("gotrace: {line}");
    }
    Ok(Outcome {
        report: Some(written.report),
        proven: None,
    })
}

/// How a trace of `target` watches it: `--sampled`, `--full` (or the
/// benchmark's empty probes); by default budgeted for a running process
/// and full for a command (`--max-overhead` sets the budget of either).
pub(super) fn mode_of(args: &TargetArgs, target: &Target) -> Mode {
    if args.sampled {
        Mode::Sampled
    } else if args.full || args.bench_empty_probes {
        Mode::Full
    } else if matches!(target, Target::Pid(_)) {
        Mode::Budgeted
    } else {
        Mode::Full
    }
}

/// Which process to trace: a running one, or a command gotrace starts.
pub(super) enum Target {
    Pid(u32),
    Command(Vec<String>),
}

impl Target {
    pub(super) fn choose(args: &TargetArgs) -> anyhow::Result<Target> {
        Ok(match (args.pid, args.command.is_empty()) {
            (Some(pid), true) => Target::Pid(pid),
            (None, false) => Target::Command(args.command.clone()),
            _ => bail!("nothing to trace: give --pid PID or -- CMD [ARGS...]"),
        })
    }

    /// The executable and how messages name the target.
    pub(super) fn exe(&self) -> anyhow::Result<(PathBuf, String)> {
        Ok(match self {
            Target::Pid(pid) => (process::exe_of(*pid)?, format!("PID {pid}")),
            Target::Command(argv) => {
                let p = process::resolve_command(&argv[0])?;
                let shown = p.display().to_string();
                (p, shown)
            }
        })
    }
}

/// The target process, once it exists and is locked: a command is held
/// before exec until the session is ready for its first event, and traced
/// with ptrace so that it can be held at its exit too.
pub(super) struct Started {
    pub(super) pid: u32,
    pub(super) child: Option<HeldChild>,
    /// The command's ptrace thread (None for `--pid`, or when ptrace was
    /// refused: then its exit is only watched).
    traced: Option<TracedChild>,
    _lock: TargetLock,
}

impl Started {
    pub(super) fn start(target: &Target, exe: &Path, shown: &str) -> anyhow::Result<Started> {
        // Start a command held before exec (still single-threaded here).
        let (pid, child) = match target {
            Target::Pid(pid) => (*pid, None),
            Target::Command(argv) => {
                let c = process::spawn_held(exe, argv)?;
                (c.pid, Some(c))
            }
        };
        let lock = match process::lock::lock(pid) {
            Ok(lock) => lock,
            Err(e) => {
                if let Some(c) = child {
                    c.abort();
                }
                return Err(e.into());
            }
        };
        let traced = child
            .as_ref()
            .and_then(|c| match TracedChild::seize(c.pid) {
                Ok(t) => Some(t),
                Err(e) => {
                    eprintln!(
                        "gotrace: warning: cannot hold {shown} at its exit ({e}): its last state \
                     will not be analysed"
                    );
                    None
                }
            });
        Ok(Started {
            pid,
            child,
            traced,
            _lock: lock,
        })
    }

    /// Fails the trace: a held command is killed, never released.
    pub(super) fn abort<T>(&mut self, e: impl Into<anyhow::Error>) -> anyhow::Result<T> {
        if let Some(c) = self.child.take() {
            match self.traced.take() {
                // Its ptrace thread reaps it (no hold: nobody listens).
                Some(t) => {
                    drop(t);
                    c.kill();
                }
                None => c.abort(),
            }
        }
        Err(e.into())
    }

    /// Configures the programs for this process and attaches them.
    /// Every point of the plan in full mode, none in budgeted mode (the
    /// overhead budget attaches them when they fit).
    fn attach(
        &mut self,
        opened: &Opened,
        plan: &Plan,
        args: &TargetArgs,
        mode: Mode,
    ) -> anyhow::Result<(Probes, TargetExit)> {
        let layout = &opened.layout;
        let mut config = goroutine::config(self.pid, layout);
        if plan.timers.is_ok() {
            crate::probe::timers::configure(&mut config, layout);
        }
        if let Ok(p) = &plan.contexts {
            p.configure(&mut config, layout, opened.load_bias(self.pid).unwrap_or(0));
        }
        let points = match mode {
            Mode::Full => &plan.points[..],
            Mode::Budgeted | Mode::Sampled => &[],
        };
        let probes = Probes::attach(
            config,
            &opened.exe,
            self.pid,
            points,
            crate::probe::AttachOptions {
                ring_bytes: args.ring_buffer,
                empty_programs: args.bench_empty_probes,
                debug_probes: args.debug_probes
                    || log::log_enabled!(target: "tracer_ebpf", log::Level::Debug),
            },
        )?;
        Ok((probes, self.exit_watch()?))
    }

    /// How the session learns that the target ends: through the command's
    /// ptrace thread (which holds it at its exit), else a pidfd.
    pub(super) fn exit_watch(&mut self) -> anyhow::Result<TargetExit> {
        Ok(match self.traced.take() {
            Some(t) => TargetExit::Traced(t),
            None => TargetExit::Watched(ExitWatcher::new(self.pid, self.child.is_some())?),
        })
    }
}

/// Attaches to the target, runs the session until it ends and returns the
/// capture (with every stack it references) and the opened binary.
pub fn trace(
    args: &TargetArgs,
    leak_threshold: Duration,
    record: Option<&Path>,
    view: ViewChoice,
) -> anyhow::Result<(Capture, Opened)> {
    let target = Target::choose(args)?;
    if mode_of(args, &target) == Mode::Sampled {
        return super::sampled::trace(args, &target, leak_threshold, record, view);
    }
    let (exe, shown) = target.exe()?;
    let opened = Opened::open(&exe, &shown)?;
    for line in opened.layout_warnings() {
        eprintln!("gotrace: {line}");
    }
    let pie_under_command = opened.bin.is_pie() && matches!(target, Target::Command(_));
    let plan = crate::probe::plan(&opened.bin, &opened.layout, &shown, pie_under_command)?;
    let mut started = Started::start(&target, &exe, &shown)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let pid = started.pid;
    let mut sampler = Sampler::new(
        pid,
        &opened.bin,
        &opened.layout,
        &opened.exe,
        args.sample_interval,
    );
    let (mode, early, max_overhead) = choose_mode(args, &target, &mut sampler, &opened);
    let (mut probes, mut exit) =
        match runtime.block_on(async { started.attach(&opened, &plan, args, mode) }) {
            Ok(v) => v,
            Err(e) => return started.abort(e),
        };
    // The goroutines that already exist (--pid only: a command started
    // under gotrace has none), read right after the probes are attached so
    // that none falls between the two (or before, when none is attached).
    let snapshot = early
        .or_else(|| matches!(target, Target::Pid(_)).then(|| read_existing(&mut sampler, &opened)));
    let budget = budget(max_overhead, mode, &mut probes, &plan);
    let meta = trace_meta(
        pid,
        &opened,
        &plan,
        mode,
        probes.attached(),
        leak_threshold,
        snapshot.as_ref(),
    );
    let mut recorder = match record.map(|path| start_recording(path, &meta)).transpose() {
        Ok(r) => r,
        Err(e) => {
            drop(probes);
            return started.abort(e);
        }
    };
    announce(pid, &opened, probes.attached(), snapshot.as_ref(), &budget);
    let mut governor = governor(mode, budget, sampler, &plan);
    governor.begin(&probes);
    let run = Run {
        started: &mut started,
        opened: &opened,
        prove: args.prove(),
        threshold: leak_threshold,
        probes: &mut probes,
        exit: &mut exit,
        duration: args.duration,
        view,
        governor: &mut governor,
    };
    let (model, mut end, stacks) = runtime.block_on(run.run(snapshot, recorder.as_mut()))?;
    drop(probes); // detach every uprobe before the slow part
    end_proof(args, leak_threshold, (pid, &opened), &model, &mut end);
    end_from_memory(mode, (pid, &opened), &mut end);
    finish_recording(recorder, record, &end, &stacks);
    let capture = Capture {
        meta,
        model,
        stacks,
        end,
    };
    Ok((capture, opened))
}

/// The mode, the goroutines read before attaching anything (budgeted
/// mode), and the budget. Budgeted mode stands on goroutine samples: when
/// the target's memory cannot be read, it traces with every probe under
/// the budget instead.
fn choose_mode(
    args: &TargetArgs,
    target: &Target,
    sampler: &mut Sampler<'_>,
    opened: &Opened,
) -> (Mode, Option<Result<Snapshot, String>>, Option<f64>) {
    let mode = mode_of(args, target);
    if mode != Mode::Budgeted {
        return (mode, None, args.max_overhead);
    }
    let max = args.max_overhead.unwrap_or(DEFAULT_MAX_OVERHEAD);
    match read_existing(sampler, opened) {
        Ok(snap) => (mode, Some(Ok(snap)), Some(max)),
        Err(e) => {
            eprintln!(
                "gotrace: warning: cannot read the goroutines of PID {} ({e}): tracing with every probe under the {max}% overhead budget instead",
                sampler.pid
            );
            (Mode::Full, Some(Err(e)), Some(max))
        }
    }
}

/// What is known at attach.
fn trace_meta(
    pid: u32,
    opened: &Opened,
    plan: &Plan,
    mode: Mode,
    attached: usize,
    leak_threshold: Duration,
    snapshot: Option<&Result<Snapshot, String>>,
) -> Meta {
    let snapshot = snapshot.map(|s| match s {
        Ok(snap) => SnapshotInfo::of(snap),
        Err(e) => SnapshotInfo::failed(e.clone()),
    });
    Meta {
        mode,
        contexts_not_traced: not_traced(mode, &plan.contexts),
        timers_not_traced: not_traced(mode, &plan.timers),
        probes_attached: attached,
        ..meta(pid, opened, leak_threshold, snapshot)
    }
}

/// The budget and samples of a trace in `mode`: budgeted mode samples
/// everything from the start and has the creation/exit probes to attach
/// once they fit; full mode samples only what the budget sheds.
fn governor<'b>(mode: Mode, budget: Budget, sampler: Sampler<'b>, plan: &Plan) -> Governor<'b> {
    let (rules, pending) = match mode {
        Mode::Budgeted => (
            SampleRules::ALL,
            vec![(
                ProbeGroup::Lifecycle,
                group_points(plan, ProbeGroup::Lifecycle),
            )],
        ),
        Mode::Full | Mode::Sampled => (SampleRules::default(), Vec::new()),
    };
    Governor::new(mode, budget, sampler, rules, pending)
}

/// The session's part of a trace: seed the model with the goroutines that
/// already exist, run until the trace ends, keep the stacks it references.
struct Run<'a, 'b> {
    started: &'a mut Started,
    opened: &'a Opened,
    /// Run the leak proof at the end (on a command: at its exit).
    prove: bool,
    /// The leak threshold (which cancelled contexts the proof is asked about).
    threshold: Duration,
    probes: &'a mut Probes,
    exit: &'a mut TargetExit,
    duration: Option<Duration>,
    view: ViewChoice,
    governor: &'a mut Governor<'b>,
}

impl Run<'_, '_> {
    async fn run(
        self,
        snapshot: Option<Result<Snapshot, String>>,
        mut recorder: Option<&mut Recorder>,
    ) -> anyhow::Result<(Model, End, BTreeMap<i32, Vec<u64>>)> {
        let (opened, pid) = (self.opened, self.started.pid);
        let mut model = Model::default();
        if let Some(Ok(snap)) = snapshot {
            if let Some(r) = recorder.as_deref_mut() {
                r.snapshot(&snap);
            }
            model.seed(&snap);
        }
        let mut view = make_view(self.view, pid, opened);
        let end =
            Session {
                probes: self.probes,
                model: &mut model,
                at_exit: Some(Box::new(move |hold: &ExitHold, model: &Model| {
                    let prove = self.prove.then_some(self.threshold);
                    analyse_at_exit(opened, hold, model, prove)
                })),
                duration: self.duration,
                pie_pid: opened.bin.is_pie().then(|| (pid, opened.exe.clone())),
                validator: crate::capture::validate::Validator::new(
                    opened.bin.symbols().iter().map(|f| f.addr).collect(),
                    opened.load_bias(pid),
                    opened.layout_origin(),
                ),
                on_ready: self.started.child.as_mut().map(|c| {
                    Box::new(move || c.release()) as Box<dyn FnOnce() -> std::io::Result<()>>
                }),
                recorder,
                view: view.as_mut(),
                exec_watch: process::ExecWatch::new(pid, &opened.exe),
                governor: Some(&mut *self.governor),
            }
            .run(self.exit)
            .await;
        drop(view);
        let end = end?;
        // The stacks of the snapshot at attach and of every sample.
        let sampled = std::mem::take(&mut self.governor.sampler.stacks);
        let stacks = referenced_stacks(&model, sampled);
        Ok((model, end, stacks))
    }
}

/// What is known at attach, for the report and the recording; the probes'
/// part (none attached, contexts and timers traced) for the caller to set.
pub(super) fn meta(
    pid: u32,
    opened: &Opened,
    leak_threshold: Duration,
    snapshot: Option<SnapshotInfo>,
) -> Meta {
    let bin = &opened.bin;
    Meta {
        pid,
        exe: std::fs::canonicalize(&opened.exe)
            .unwrap_or(opened.exe.clone())
            .display()
            .to_string(),
        build_id: bin.build_id(),
        go_version: bin.version().raw.clone(),
        arch: format!("{:?}", bin.arch()).to_lowercase(),
        contexts_not_traced: None,
        timers_not_traced: None,
        probes_attached: 0,
        leak_threshold_ns: leak_threshold.as_nanos() as u64,
        snapshot,
        mode: Mode::Full,
    }
}

/// Ends the recording (if any) with the end of the trace and its stacks;
/// a failure is a warning, the trace is done.
pub(super) fn finish_recording(
    recorder: Option<Recorder>,
    record: Option<&Path>,
    end: &End,
    stacks: &BTreeMap<i32, Vec<u64>>,
) {
    if let (Some(r), Some(path)) = (recorder, record) {
        match r.finish(end, stacks) {
            Ok(()) => eprintln!("gotrace: recording written to {}", path.display()),
            Err(e) => eprintln!("gotrace: warning: {:#}", anyhow::Error::from(e)),
        }
    }
}

pub(super) fn start_recording(path: &Path, meta: &Meta) -> Result<Recorder, RecordError> {
    let f = crate::outputs::file::create(path).map_err(|source| RecordError::Write {
        path: path.to_path_buf(),
        source,
    })?;
    Recorder::create(f, path, meta)
}

/// The "attached" line, and a warning when the existing goroutines could
/// not be read.
fn announce(
    pid: u32,
    opened: &Opened,
    attached: usize,
    snapshot: Option<&Result<Snapshot, String>>,
    budget: &Budget,
) {
    let existing = match snapshot {
        Some(Ok(snap)) => format!(
            ", read {} existing goroutines in {:.1} ms",
            snap.goroutines.len(),
            snap.took_ns as f64 / 1e6
        ),
        _ => String::new(),
    };
    let r = &budget.report;
    let cost = match (r.max_overhead_pct, r.hit_cost_us) {
        (Some(max), Some(us)) => {
            format!(" under a {max}% overhead budget (one probe hit costs {us:.1} µs here)")
        }
        (None, Some(us)) => format!(" (one probe hit costs {us:.1} µs here)"),
        (_, None) => String::new(),
    };
    eprintln!(
        "gotrace: attached {attached} uprobes to PID {pid} ({}, {}){cost}{existing}; Ctrl-C to stop",
        opened.exe.display(),
        opened.bin.version().raw
    );
    if let Some(e) = &r.calibration_error {
        let then = if attached == 0 {
            "no probe will be attached: goroutine samples only"
        } else {
            "their cost is not estimated, and no budget can apply"
        };
        eprintln!("gotrace: warning: cannot time a probe hit ({e}): {then}");
    }
    if let Some(Err(e)) = snapshot {
        eprintln!(
            "gotrace: warning: cannot read the existing goroutines ({e}); those created before \
             attach show up when they next park"
        );
    }
}

pub(super) fn make_view<'a>(
    choice: ViewChoice,
    pid: u32,
    opened: &'a Opened,
) -> Box<dyn crate::view::View + 'a> {
    match choice {
        ViewChoice::Status => Box::new(crate::view::status::StatusLine::new()),
        ViewChoice::Top { tty } => Box::new(crate::view::top::Top::new(
            &opened.bin,
            &opened.symbolizer,
            &opened.layout.wait_reasons,
            format!(
                "PID {pid} {} ({})",
                opened.exe.display(),
                opened.bin.version().raw
            ),
            tty,
            Box::new(std::io::stdout()),
        )),
    }
}

/// Every stack the model references: the eBPF walk's came as events,
/// snapshot stacks were read at attach.
pub(super) fn referenced_stacks(
    model: &Model,
    mut snapshot_stacks: BTreeMap<i32, Vec<u64>>,
) -> BTreeMap<i32, Vec<u64>> {
    model
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
        .collect()
}

/// The analysis of a command held at its exit (its goroutines; with
/// `proving`, a leak threshold, the leak proof and what holds its contexts
/// and tickers), read through the exiting thread that holds it.
pub(super) fn analyse_at_exit(
    opened: &Opened,
    hold: &ExitHold,
    model: &Model,
    proving: Option<Duration>,
) -> crate::capture::AtExitAnalysis {
    use crate::capture::AtExitAnalysis;
    if let Some(ms) = std::env::var("GOTRACE_TEST_AT_EXIT_DELAY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        // Lets the end-to-end tests see the hold limit at work.
        std::thread::sleep(Duration::from_millis(ms));
    }
    let ours = process::runs(hold.tid, &opened.exe) != Some(false);
    let snap = if ours {
        read_at(hold.tid, opened)
    } else {
        Err("it exec'd another program".to_string())
    };
    // Memory is read through the held thread: the leader may be gone.
    let bias = ours.then(|| opened.load_bias(hold.tid)).flatten();
    let (proof, held) = match (proving, bias) {
        (Some(threshold), Some(bias)) => {
            let now = process::monotonic_ns();
            let q = crate::proof::held::Queries {
                at_exit: true,
                ..held_queries(model, opened, now, bias, threshold, hold.tid)
            };
            let (proof, held) = prove(hold.tid, opened, bias, true, &q);
            (Some(proof), Some(held))
        }
        _ => (None, None),
    };
    match snap {
        Ok(snap) => AtExitAnalysis {
            snapshot: SnapshotInfo::of(&snap),
            goroutines: snap.goroutines,
            proof,
            held,
        },
        Err(e) => AtExitAnalysis {
            snapshot: SnapshotInfo::failed(e),
            goroutines: Vec::new(),
            proof,
            held,
        },
    }
}

/// The goroutines of `pid` right now, read without the sampler (a held
/// command's exiting thread); errors as one line for the report.
fn read_at(pid: u32, opened: &Opened) -> Result<Snapshot, String> {
    let bias = opened
        .load_bias(pid)
        .ok_or("cannot find the executable's load address")?;
    crate::snapshot::take(pid, &opened.bin, &opened.layout, bias).map_err(|e| e.to_string())
}

/// The goroutines of the target right now (the sampler's first reading,
/// so that later samples name stacks alike); errors as one line for the
/// report.
fn read_existing(sampler: &mut Sampler<'_>, opened: &Opened) -> Result<Snapshot, String> {
    sampler.bias = Some(
        opened
            .load_bias(sampler.pid)
            .ok_or("cannot find the executable's load address")?,
    );
    sampler.first().map_err(|e| e.to_string())
}

/// What the probes cost, timed now that they are attached, and the budget
/// `max` they run under (none: estimated, never detached). In budgeted
/// mode no group is attached yet.
fn budget(max: Option<f64>, mode: Mode, probes: &mut Probes, plan: &Plan) -> Budget {
    let groups = match mode {
        Mode::Budgeted => Vec::new(),
        Mode::Full | Mode::Sampled => ProbeGroup::ALL
            .into_iter()
            .filter(|g| !group_points(plan, *g).is_empty())
            .collect(),
    };
    Budget::new(max, probes.calibrate().map_err(|e| e.to_string()), groups)
}

/// The points of `plan` whose program belongs to `group`.
fn group_points(plan: &Plan, group: ProbeGroup) -> Vec<goroutine::AttachPoint> {
    plan.points
        .iter()
        .filter(|p| group.programs().iter().any(|q| q.name() == p.program))
        .cloned()
        .collect()
}

/// Why contexts (or timers) are not traced: the plan's reason, or, with
/// --pid by default, that their probes fire on every operation.
fn not_traced(mode: Mode, planned: &Result<impl Sized, String>) -> Option<String> {
    match (planned, mode) {
        (Err(why), _) => Some(why.clone()),
        (Ok(_), Mode::Budgeted) => Some(
            "not traced by default with --pid: their probes fire on every operation; --full traces them".into(),
        ),
        (Ok(_), _) => None,
    }
}

/// The leak proof of a trace, with what holds the contexts and tickers
/// the model saw: the one made while a command was held at its exit, else
/// (unless `--no-prove`) one over the target as it is now, when it is
/// still there.
pub(super) fn end_proof(
    args: &TargetArgs,
    leak_threshold: Duration,
    (pid, opened): (u32, &Opened),
    model: &Model,
    end: &mut End,
) {
    if let Some(a) = end.at_exit.as_mut() {
        end.proof = a.analysis.proof.take();
        end.held = a.analysis.held.take();
    }
    if args.prove() && end.proof.is_none() && end.ended_by != "target-exit" {
        let q = held_queries(
            model,
            opened,
            end.end_ns,
            end.load_bias,
            leak_threshold,
            pid,
        );
        let (proof, held) = prove(pid, opened, end.load_bias, false, &q);
        end.proof = Some(proof);
        end.held = Some(held);
    }
}

/// In sampled and budgeted modes (no context or timer probe), the
/// contexts the parked goroutines hold and the runtime's timer heaps, read
/// from the target's memory as it is now.
pub(super) fn end_from_memory(mode: Mode, (pid, opened): (u32, &Opened), end: &mut End) {
    if mode == Mode::Full {
        return;
    }
    if end.ended_by == "target-exit" {
        let why = "the target exited before the end of the trace";
        end.ctx_memory = Some(crate::ctxmem::FromMemory::not_read(why.into()));
        end.timer_memory = Some(crate::timermem::FromMemory::not_read(why.into()));
        return;
    }
    let t = crate::ctxmem::Target {
        pid,
        bin: &opened.bin,
        layout: &opened.layout,
        bias: end.load_bias,
        symbolizer: &opened.symbolizer,
    };
    eprintln!(
        "gotrace: reading the parked goroutines' contexts and the timer heaps from PID {pid}'s memory..."
    );
    end.ctx_memory = Some(crate::ctxmem::read(&t));
    end.timer_memory = Some(crate::timermem::read(&t));
}

/// The leak proof over the target's memory as it is now (it keeps running,
/// or is `held` at its exit), and what holds the contexts and tickers `q`
/// asks about.
pub fn prove(
    pid: u32,
    opened: &Opened,
    bias: u64,
    held: bool,
    q: &crate::proof::held::Queries,
) -> (crate::proof::Proof, crate::proof::held::Held) {
    let how = if held {
        "held at its exit"
    } else {
        "it keeps running"
    };
    eprintln!("gotrace: proving leaks (reading PID {pid}'s heap; {how})...");
    let (proof, held) = crate::proof::prove_asking(
        &crate::proof::Target {
            pid,
            bin: &opened.bin,
            layout: &opened.layout,
            bias,
            symbolizer: &opened.symbolizer,
            held,
        },
        q,
    );
    eprintln!("gotrace: {}", crate::report::proof_text::summary(&proof));
    if !q.contexts.is_empty() || !q.tickers.is_empty() {
        eprintln!(
            "gotrace: what holds {} context(s) and {} ticker(s): {}",
            q.contexts.len(),
            q.tickers.len(),
            if held.done() {
                format!("answered in {:.0} ms", held.took_ms)
            } else {
                format!("not answered ({})", held.status)
            }
        );
    }
    (proof, held)
}

/// What the proof is asked about the trace's contexts and tickers: every
/// context never cancelled, every one cancelled at least `threshold` ago
/// (a goroutine may still hold it), every ticker never stopped.
fn held_queries(
    model: &Model,
    opened: &Opened,
    now_ns: u64,
    bias: u64,
    threshold: Duration,
    pid: u32,
) -> crate::proof::held::Queries {
    use crate::proof::held::{CtxQuery, Queries, TickerQuery};
    let old = now_ns.saturating_sub(threshold.as_nanos() as u64);
    let contexts = model
        .contexts
        .nodes()
        .filter(|n| match &n.cancel {
            None => !n.superseded && n.created_ns.is_some(),
            Some(c) => c.ts_ns <= old,
        })
        .map(|n| CtxQuery {
            ptr: n.ptr,
            parent: n.parent_iface,
            value_hops: n.value_hops,
            done: n.done_chan,
            creator: n.creator_goid,
            cancelled: n.cancel.is_some(),
        })
        .collect();
    let tickers = model
        .timers
        .unstopped()
        .filter(|t| t.period_ns > 0)
        .map(|t| TickerQuery {
            ptr: t.ptr,
            chan: t.chan,
            creator: t.creator_goid,
        })
        .collect();
    let value_ctx = opened.bin.itabs().ok().and_then(|m| {
        m.into_iter()
            .find(|(_, n)| n == "*context.valueCtx,context.Context")
            .map(|(a, _)| a + bias)
    });
    let env_godebug = process::environ_var(pid, "GODEBUG");
    Queries {
        contexts,
        tickers,
        itab_value_ctx: value_ctx.unwrap_or(0),
        cancel_ctx_done: opened.layout.cancel_ctx_done,
        timers_collected: crate::goruntime::hooks::unreferenced_timers_collected(
            opened.bin.version(),
            opened.bin.default_godebug().as_deref(),
            env_godebug.as_deref(),
        ),
        at_exit: false,
    }
}
