//! `gotrace snapshot --pid N`: the goroutines a running process has right
//! now, grouped, without stopping it and without any probe.

use std::collections::HashMap;
use std::io::Write as _;

use anyhow::Context as _;

use super::Outcome;
use super::cli::SnapshotArgs;
use super::open::Opened;
use crate::process;
use crate::report::snapshot::{self as group, SnapReport};
use crate::resolve::StackResolver;

pub fn run(args: SnapshotArgs) -> anyhow::Result<Outcome> {
    let pid = args.pid;
    let shown = format!("PID {pid}");
    let exe = process::exe_of(pid)?;
    let opened = Opened::open(&exe, &shown)?;
    let bias = opened
        .load_bias(pid)
        .with_context(|| format!("cannot find where {shown} loaded its executable"))?;
    let Opened {
        bin,
        layout,
        symbolizer,
        ..
    } = &opened;
    let snap = crate::snapshot::take(pid, bin, layout, bias)?;
    let raw: HashMap<i32, Vec<u64>> = snap.stacks.iter().map(|(k, v)| (*k, v.clone())).collect();
    let mut resolver = StackResolver::new(bin, symbolizer, raw, bias);
    let (mut groups, system) = group::build(&snap, &mut resolver, &layout.wait_reasons, args.all);
    let proof = args.prove.then(|| {
        crate::proof::prove(&crate::proof::Target {
            pid,
            bin,
            layout,
            bias,
            symbolizer,
            held: false,
        })
    });
    if let Some(p) = &proof {
        group::apply_proof(&mut groups, p);
    }
    let shown = std::fs::canonicalize(&exe).unwrap_or(exe.clone());
    let id = (pid, shown.display().to_string(), bin.version().raw.clone());
    let report = SnapReport {
        proof,
        ..SnapReport::of(id, &snap, system, groups)
    };
    if args.json {
        // Streamed: with the proof's goroutines the document is tens of MB,
        // not worth building as one string first.
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        serde_json::to_writer_pretty(&mut out, &report).context("writing the JSON report")?;
        writeln!(out)
            .and_then(|()| out.flush())
            .context("writing the JSON report")?;
    } else {
        print!("{}", group::render(&report));
    }
    eprintln!("gotrace: {}", group::summary(&report, args.all));
    let mut outcome = Outcome::listing();
    if let Some(p) = &report.proof {
        eprintln!("gotrace: {}", crate::report::proof_text::summary(p));
        outcome.proven = p.done().then_some(p.leaked);
    }
    Ok(outcome)
}
