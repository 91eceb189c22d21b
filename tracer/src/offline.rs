//! `gotrace report FILE`: every output rebuilt from a recording, with the
//! binary found again by its recorded path (or `--binary`) and checked by
//! its Go build id.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::cli::ReportArgs;
use crate::record;
use crate::trace::{TraceOutcome, Traced, finish, inspect};

pub fn run(args: ReportArgs) -> anyhow::Result<TraceOutcome> {
    let capture = record::replay(&args.file)?;
    let meta = &capture.meta;
    let exe = args
        .binary
        .clone()
        .unwrap_or_else(|| Path::new(&meta.exe).to_path_buf());
    let shown = exe.display().to_string();
    let bin = inspect(&exe, &shown).context(
        "the recording's binary is needed to symbolise it (give its path with --binary)",
    )?;
    match (&meta.build_id, bin.build_id()) {
        (Some(want), Some(got)) if *want != got => bail!(
            "{shown} is not the recorded binary (build id {got}, recorded {want}); give the right one with --binary"
        ),
        (Some(_), None) => {
            bail!(
                "{shown} has no Go build id, the recorded binary had one; give the right one with --binary"
            )
        }
        _ => {}
    }
    if bin.version().raw != meta.go_version {
        bail!(
            "{shown} is {}, the recording is of a {} binary; give the right one with --binary",
            bin.version().raw,
            meta.go_version
        );
    }
    let layout = bin
        .layout()
        .with_context(|| format!("cannot read the Go runtime layout of {shown}"))?;
    let symbolizer = bin.symbolizer().context("cannot load symbols")?;
    let leak_threshold = args
        .report
        .leak_threshold
        .unwrap_or(Duration::from_nanos(meta.leak_threshold_ns));
    let traced = Traced {
        capture,
        bin,
        layout,
        symbolizer,
    };
    finish(
        &traced,
        Some(&args.output),
        leak_threshold,
        args.report.contexts,
    )
}
