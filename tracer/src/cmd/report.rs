//! `gotrace report FILE`: every output rebuilt from a recording, with the
//! binary found again by its recorded path (or `--binary`) and checked by
//! its Go build id.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};

use super::Outcome;
use super::cli::ReportArgs;
use super::open::{Opened, inspect};
use super::trace::finish;
use crate::capture::record;

/// CPU time of the calling thread, in seconds.
fn thread_cpu_s() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

pub fn run(args: ReportArgs) -> anyhow::Result<Outcome> {
    let (wall0, cpu0) = (std::time::Instant::now(), thread_cpu_s());
    let capture = record::replay(&args.file)?;
    let (wall, cpu) = (wall0.elapsed().as_secs_f64(), thread_cpu_s() - cpu0);
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
    // Said once the recording and its binary are known to be good.
    eprintln!(
        "gotrace: replayed {} events in {wall:.2}s ({cpu:.2}s CPU, {:.2} M events/s on one core)",
        capture.end.events,
        capture.end.events as f64 / cpu.max(1e-9) / 1e6
    );
    let opened = Opened::load(bin, &exe, &shown)?;
    let leak_threshold = args
        .report
        .leak_threshold
        .unwrap_or(Duration::from_nanos(meta.leak_threshold_ns));
    finish(
        &capture,
        &opened,
        Some(&args.output),
        leak_threshold,
        args.report.contexts,
    )
}
