//! One trace, end to end: inspect the target binary, attach, run the session,
//! write the report.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use crate::cli::Cli;
use crate::gobin::GoBinary;
use crate::goruntime::hooks::{MAX_VERIFIED, MIN_SUPPORTED};
use crate::model::{Model, State};
use crate::probe::context as ctxprobe;
use crate::probe::{Probes, goroutine};
use crate::report::{self, BuildInput, Report, resolve::StackResolver};
use crate::session::{EndReason, Session};
use crate::target::{self, ExitWatcher, HeldChild};

pub struct TraceOutcome {
    pub report: Report,
    pub report_path: PathBuf,
}

impl TraceOutcome {
    /// 0 when no leak suspects, 3 when there are some.
    pub fn exit_code(&self) -> u8 {
        if self.report.suspect_count == 0 { 0 } else { 3 }
    }
}

/// The binary, checked to be a Go program gotrace can trace.
fn inspect(path: &Path, shown: &str) -> anyhow::Result<GoBinary> {
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
    if (v.major, v.minor) > MAX_VERIFIED {
        log::warn!(
            "{} is newer than the newest verified Go ({}.{}): offsets come from its DWARF",
            v.raw,
            MAX_VERIFIED.0,
            MAX_VERIFIED.1
        );
    }
    Ok(bin)
}

enum Mode {
    Pid(u32),
    Command(Vec<String>),
}

pub fn run(cli: Cli) -> anyhow::Result<TraceOutcome> {
    let mode = match (cli.pid, cli.command.is_empty()) {
        (Some(pid), true) => Mode::Pid(pid),
        (None, false) => Mode::Command(cli.command.clone()),
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
    let mut points =
        goroutine::plan(&bin).with_context(|| format!("cannot place probes in {shown}"))?;
    let ctx_plan = match ctxprobe::plan(&bin, &layout)
        .with_context(|| format!("cannot place context probes in {shown}"))?
    {
        // The context probes compare against absolute addresses: a PIE
        // started under us has no load address before exec.
        Ok(_) if bin.is_pie() && !cli.command.is_empty() => {
            Err("contexts of PIE binaries can only be traced with --pid".to_string())
        }
        other => other,
    };
    if let Ok(p) = &ctx_plan {
        points.extend(p.points.iter().cloned());
    }
    let timer_plan = crate::probe::timers::plan(&bin, &layout)
        .with_context(|| format!("cannot place timer probes in {shown}"))?;
    if let Ok(p) = &timer_plan {
        points.extend(p.iter().cloned());
    }
    let symbolizer = bin.symbolizer().context("cannot load symbols")?;
    std::fs::create_dir_all(&cli.output)
        .with_context(|| format!("cannot create output directory {}", cli.output.display()))?;

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
        let probes = Probes::attach(config, &exe_path, pid, &points)?;
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
    eprintln!(
        "gotrace: attached {} uprobes to PID {pid} ({}, {}); Ctrl-C to stop",
        probes.attached(),
        exe_path.display(),
        bin.version().raw
    );

    let mut model = Model::default();
    let outcome = runtime.block_on(
        Session {
            probes: &mut probes,
            model: &mut model,
            exit: &exit,
            duration: cli.duration,
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
        }
        .run(),
    )?;

    // Resolve every stack the live goroutines reference, while the maps exist.
    let mut ids = HashSet::new();
    for g in model.goroutines.live() {
        ids.extend(g.create_stack.map(|s| s.id));
        if let State::Parked(p) = g.state {
            ids.extend(p.stack.map(|s| s.id));
        }
    }
    for t in model.timers.unstopped() {
        ids.extend(t.stack.map(|s| s.id));
    }
    for n in model.contexts.nodes() {
        ids.extend(n.create_stack.map(|s| s.id));
        ids.extend(n.cancel.as_ref().and_then(|c| c.stack).map(|s| s.id));
    }
    let raw: HashMap<i32, Vec<u64>> = ids
        .into_iter()
        .filter_map(|id| Some((id, probes.stack(id)?)))
        .collect();
    let kernel = probes.counters()?;
    let probes_attached = probes.attached();
    drop(probes); // detach every uprobe before the slow part

    let bias = if bin.is_pie() {
        outcome
            .load_bias
            .or_else(|| target::load_bias(pid, &exe_path))
            .unwrap_or(0)
    } else {
        0
    };
    let mut resolver = StackResolver::new(&bin, &symbolizer, raw, bias);
    let exit_desc = match &outcome.end {
        EndReason::TargetExit(s) => s.clone().or(Some("exited".into())),
        _ => None,
    };
    let mut report = report::build(BuildInput {
        model: &model.goroutines,
        resolver: &mut resolver,
        wait_reasons: &layout.wait_reasons,
        start_ns: outcome.start_ns,
        end_ns: outcome.end_ns,
        leak_threshold: cli.leak_threshold,
        target: report::Target {
            pid,
            exe: std::fs::canonicalize(&exe_path)
                .unwrap_or(exe_path.clone())
                .display()
                .to_string(),
            go_version: bin.version().raw.clone(),
            arch: format!("{:?}", bin.arch()).to_lowercase(),
            exit: exit_desc,
        },
        trace: report::Trace {
            duration_s: 0.0,
            ended_by: outcome.end.name().to_string(),
            leak_threshold_s: 0.0,
            probes_attached,
            events_received: outcome.events,
            events_undecodable: outcome.undecodable,
            kernel,
            duplicates_ignored: 0,
            inconsistent_events: 0,
        },
    });
    report.contexts = match &ctx_plan {
        Ok(p) => report::contexts::build(
            &model.contexts,
            &model.goroutines,
            &mut resolver,
            &report::contexts::ContextInput {
                itabs: &p.itabs,
                end_ns: outcome.end_ns,
                end_unix_ns: outcome.end_unix_ns,
                leak_threshold_s: cli.leak_threshold.as_secs_f64(),
            },
        ),
        Err(why) => report::contexts::ContextReport {
            not_traced: Some(why.clone()),
            ..Default::default()
        },
    };
    report.timers = match &timer_plan {
        Ok(_) => report::timers::build(
            &model.timers,
            &model.goroutines,
            &mut resolver,
            &report::timers::TimerInput {
                end_ns: outcome.end_ns,
                leak_threshold_s: cli.leak_threshold.as_secs_f64(),
                collects_unreferenced: crate::goruntime::hooks::unreferenced_timers_collected(
                    bin.version(),
                ),
            },
        ),
        Err(why) => report::timers::TimerReport {
            not_traced: Some(why.clone()),
            ..Default::default()
        },
    };
    // Flame graphs (and their folded stacks) next to report.json.
    let stacks = crate::export::folded::collect(
        &model.goroutines,
        &mut resolver,
        &layout.wait_reasons,
        outcome.end_ns,
        cli.leak_threshold.as_nanos() as u64,
    );
    let subtitle = format!(
        "PID {pid} {} ({}), {:.1}s",
        exe_path.display(),
        bin.version().raw,
        report.trace.duration_s
    );
    let mut drawn = crate::export::flamegraph::write_all(&cli.output, &stacks, &subtitle)?;
    let (goroutines_pb, blocked_pb) = crate::export::folded::pprof_profiles(
        &stacks,
        outcome.end_unix_ns as i64 - (outcome.end_ns - outcome.start_ns) as i64,
        (outcome.end_ns - outcome.start_ns) as i64,
    );
    for (name, bytes) in [
        ("goroutines.pb.gz", goroutines_pb),
        ("blocked.pb.gz", blocked_pb),
    ] {
        let path = cli.output.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
        drawn.push(format!("pprof profile (go tool pprof): {}", path.display()));
    }
    let report_path = cli.output.join("report.json");
    let json = serde_json::to_string_pretty(&report)?;
    std::fs::write(&report_path, json + "\n")
        .with_context(|| format!("cannot write {}", report_path.display()))?;
    print!("{}", report::text::render(&report, cli.contexts));
    eprintln!("gotrace: report written to {}", report_path.display());
    for line in drawn {
        eprintln!("gotrace: {line}");
    }
    Ok(TraceOutcome {
        report,
        report_path,
    })
}
