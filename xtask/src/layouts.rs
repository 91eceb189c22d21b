//! `cargo xtask layouts`: regenerates `tracer/data/runtime-layouts.json`,
//! gotrace's per-version runtime layout table for binaries without DWARF.
//!
//! For every Go in [`GO_VERSIONS`] it builds `tracer/testdata/probe` (a normal
//! build, with DWARF) and has `tracer/examples/dump_layout.rs` read the
//! layouts from their DWARF into one JSON file (stable key order, pretty).

use anyhow::{Context as _, Result};

use crate::setup::{GO_VERSIONS, ensure_go, go_env};
use crate::util::{capture, cargo, cmd, run, target_dir, workspace_root};

/// The table, relative to the workspace root.
pub const TABLE: &str = "tracer/data/runtime-layouts.json";

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
            .args(&bins),
    )?;
    let table = workspace_root().join(TABLE);
    let old = std::fs::read_to_string(&table).unwrap_or_default();
    std::fs::write(&table, &json).with_context(|| format!("writing {}", table.display()))?;
    let state = if old == json { "unchanged" } else { "updated" };
    println!("layouts: {TABLE} {state} ({} Go versions)", bins.len());
    Ok(())
}
