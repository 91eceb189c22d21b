//! A [`Capture`] → the report and every export. The live trace and
//! `gotrace report FILE` both end here, so an offline report is the live one.

pub mod file;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

use crate::capture::Capture;
use crate::gobin::GoBinary;
use crate::gobin::layout::RuntimeLayout;
use crate::gobin::symbolize::Symbolizer;
use crate::report::{self, Report};
use crate::resolve::StackResolver;

pub struct Options<'a> {
    /// Where to write report.json, flame graphs and profiles; None: build
    /// the report only.
    pub dir: Option<&'a Path>,
    pub leak_threshold: Duration,
}

/// What `produce` made: the report, and where its files went.
pub struct Written {
    pub report: Report,
    pub report_path: Option<PathBuf>,
    /// One line per file written ("Blocked goroutines…: out/blocked.svg").
    pub notes: Vec<String>,
}

pub fn produce(
    capture: &Capture,
    bin: &GoBinary,
    layout: &RuntimeLayout,
    symbolizer: &Symbolizer,
    opts: &Options<'_>,
) -> anyhow::Result<Written> {
    let Capture {
        meta, stacks, end, ..
    } = capture;
    let raw: HashMap<i32, Vec<u64>> = stacks.iter().map(|(k, v)| (*k, v.clone())).collect();
    let mut resolver = StackResolver::new(bin, symbolizer, raw, end.load_bias);
    let report = report::assemble(
        report::Input {
            capture,
            bin,
            wait_reasons: &layout.wait_reasons,
            leak_threshold: opts.leak_threshold,
        },
        &mut resolver,
    )?;
    let Some(dir) = opts.dir else {
        return Ok(Written {
            report,
            report_path: None,
            notes: Vec::new(),
        });
    };
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create output directory {}", dir.display()))?;

    // Flame graphs (and their folded stacks) next to report.json.
    let (folded, goroutines_pb, blocked_pb) =
        profiles(capture, &mut resolver, layout, opts.leak_threshold);
    let subtitle = format!(
        "PID {} {} ({}), {:.1}s",
        meta.pid, meta.exe, meta.go_version, report.trace.duration_s
    );
    let mut notes = write_flamegraphs(dir, &folded, &subtitle)?;
    for (name, bytes) in [
        ("goroutines.pb.gz", goroutines_pb),
        ("blocked.pb.gz", blocked_pb),
    ] {
        let path = dir.join(name);
        crate::outputs::file::write(&path, &bytes)
            .with_context(|| format!("cannot write {}", path.display()))?;
        notes.push(format!("pprof profile (go tool pprof): {}", path.display()));
    }
    notes.extend(write_timeline(dir, capture, layout, &mut resolver)?);
    let report_path = dir.join("report.json");
    let json = serde_json::to_string_pretty(&report)?;
    crate::outputs::file::write(&report_path, (json + "\n").as_bytes())
        .with_context(|| format!("cannot write {}", report_path.display()))?;
    Ok(Written {
        report,
        report_path: Some(report_path),
        notes,
    })
}

/// The flame graphs and their folded stacks; the note lines.
fn write_flamegraphs(
    dir: &Path,
    folded: &crate::export::folded::Stacks,
    subtitle: &str,
) -> anyhow::Result<Vec<String>> {
    let rendered = crate::export::flamegraph::render_all(folded, subtitle)?;
    for f in &rendered.files {
        let path = dir.join(&f.name);
        file::write(&path, &f.bytes).with_context(|| format!("cannot write {}", path.display()))?;
    }
    for name in &rendered.absent {
        let _ = std::fs::remove_file(dir.join(name));
    }
    Ok(rendered
        .graphs
        .iter()
        .map(|g| match &g.svg {
            Some(svg) => format!("{}: {}", g.title, dir.join(svg).display()),
            None => format!(
                "{}: nothing to draw ({} is empty)",
                g.title,
                dir.join(&g.folded).display()
            ),
        })
        .collect())
}

/// timeline.json (Perfetto / Chrome trace events); the note lines.
fn write_timeline(
    dir: &Path,
    capture: &Capture,
    layout: &RuntimeLayout,
    resolver: &mut StackResolver<'_>,
) -> anyhow::Result<Vec<String>> {
    use crate::export::perfetto;
    let Capture {
        meta, model, end, ..
    } = capture;
    let exe_name = Path::new(&meta.exe)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| meta.exe.clone());
    let input = perfetto::Input {
        timeline: &model.timeline,
        contexts: &model.contexts,
        wait_reasons: &layout.wait_reasons,
        pid: meta.pid,
        process_name: format!("{exe_name} (PID {}, {})", meta.pid, meta.go_version),
        start_ns: end.start_ns,
        end_ns: end.end_ns,
        other: vec![
            ("exe", meta.exe.clone().into()),
            ("go_version", meta.go_version.clone().into()),
            ("ended_by", end.ended_by.clone().into()),
            // Seconds: a JSON reader keeps only 53 bits of an integer.
            ("end_unix_s", (end.end_unix_ns as f64 / 1e9).into()),
        ],
    };
    let path = dir.join("timeline.json");
    let file = crate::outputs::file::create(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    perfetto::write(file, &input, resolver)
        .with_context(|| format!("cannot write {}", path.display()))?;
    let mut notes = vec![format!(
        "Timeline (ui.perfetto.dev → Open trace file): {}",
        path.display()
    )];
    let tl = &model.timeline;
    if let Some(at) = tl.full_at_ns() {
        let o = tl.omitted();
        notes.push(format!(
            "timeline cut at {:.3}s by its {} MiB memory cap: {} goroutine events, {} new goroutines and {} context cancels after that are not in it",
            at.saturating_sub(end.start_ns) as f64 / 1e9,
            tl.budget() >> 20,
            o.events,
            o.goroutines,
            o.cancels,
        ));
    }
    Ok(notes)
}

/// The folded stacks of the flame graphs and the two pprof profiles
/// (goroutines, blocked), gzipped.
pub fn profiles(
    capture: &Capture,
    resolver: &mut StackResolver<'_>,
    layout: &RuntimeLayout,
    leak_threshold: Duration,
) -> (crate::export::folded::Stacks, Vec<u8>, Vec<u8>) {
    let Capture { model, end, .. } = capture;
    let folded = crate::export::folded::collect(
        &model.goroutines,
        resolver,
        &layout.wait_reasons,
        end.end_ns,
        leak_threshold.as_nanos() as u64,
    );
    let window_ns = i64::try_from(end.end_ns.saturating_sub(end.start_ns)).unwrap_or(i64::MAX);
    let (goroutines_pb, blocked_pb) = crate::export::folded::pprof_profiles(
        &folded,
        end.end_unix_ns.saturating_sub(window_ns),
        window_ns,
    );
    (folded, goroutines_pb, blocked_pb)
}
