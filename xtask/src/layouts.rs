//! `cargo xtask layouts`: regenerates `tracer/data/runtime-layouts.json` and
//! `tracer/data/heap-layouts.json`, gotrace's per-version layout tables for
//! binaries without DWARF (the second is what the leak proof reads).
//!
//! For every Go in [`GO_VERSIONS`] it builds `tracer/testdata/probe` (a normal
//! build, with DWARF) and has `tracer/examples/dump_layout.rs` read the
//! layouts from their DWARF into one JSON file per table (stable key order,
//! pretty).

use anyhow::{Context as _, Result};

use crate::setup::{GO_VERSIONS, ensure_go, go_env};
use crate::util::{capture, cargo, cmd, run, target_dir, workspace_root};

/// The tables, relative to the workspace root, and the `dump_layout`
/// arguments that print each.
pub const TABLES: [(&str, &[&str]); 2] = [
    ("tracer/data/runtime-layouts.json", &[]),
    ("tracer/data/heap-layouts.json", &["--heap"]),
];

pub fn layouts() -> Result<()> {
    let out_dir = target_dir().join("layouts");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let mut versions: Vec<&str> = GO_VERSIONS.to_vec();
    versions.sort_by_key(|v| {
        v.split('.')
            .map(|p| p.parse::<u32>().unwrap_or(0))
            .collect::<Vec<_>>()
    });
    let mut bins = Vec::new();
    for version in versions {
        let go = ensure_go(version)?;
        let bin = out_dir.join(format!("probe-go{version}"));
        let mut build = cmd(&go);
        build
            .args(["build", "-o"])
            .arg(&bin)
            .arg(".")
            .current_dir(workspace_root().join("tracer/testdata/probe"));
        go_env(&mut build, version);
        run(&mut build)?;
        bins.push(bin);
    }
    for (table, args) in TABLES {
        let json = capture(
            cargo()
                .args([
                    "run",
                    "--quiet",
                    "-p",
                    "tracer",
                    "--example",
                    "dump_layout",
                    "--",
                ])
                .args(args)
                .args(&bins),
        )?;
        let path = workspace_root().join(table);
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        std::fs::write(&path, &json).with_context(|| format!("writing {}", path.display()))?;
        let state = if old == json { "unchanged" } else { "updated" };
        println!("layouts: {table} {state} ({} Go versions)", bins.len());
    }
    Ok(())
}
