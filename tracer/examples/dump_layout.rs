//! Prints a per-version layout table for the given Go binaries, read from
//! their DWARF: one entry per Go minor version. Without `--heap`, the
//! runtime layout table (`tracer/data/runtime-layouts.json`); with it, the
//! heap layout table (`tracer/data/heap-layouts.json`). Used by `cargo
//! xtask layouts`.
//!
//! usage: cargo run -p tracer --example dump_layout -- [--heap] BINARY...

use std::path::Path;
use std::process::ExitCode;

use tracer::gobin::layout_table::{LayoutTable, TableLayout};
use tracer::gobin::{BinaryError, GoBinary, buildinfo::GoVersion, heap_layout::HeapLayout};

fn main() -> ExitCode {
    let mut paths: Vec<String> = std::env::args().skip(1).collect();
    let heap = paths.first().is_some_and(|a| a == "--heap");
    if heap {
        paths.remove(0);
    }
    if paths.is_empty() {
        eprintln!("usage: dump_layout [--heap] BINARY...");
        return ExitCode::from(2);
    }
    let json = if heap {
        table(&paths, HeapLayout::for_table)
    } else {
        table(&paths, GoBinary::dwarf_layout)
    };
    match json {
        Ok(json) => {
            print!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dump_layout: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The table of `read` applied to each binary, as JSON.
fn table<L: TableLayout>(
    paths: &[String],
    read: impl Fn(&GoBinary) -> Result<L, BinaryError>,
) -> Result<String, String> {
    let mut entries: Vec<(GoVersion, L)> = Vec::new();
    for path in paths {
        let bin = GoBinary::open(Path::new(path)).map_err(|e| format!("{path}: {e}"))?;
        let layout = read(&bin).map_err(|e| format!("{path}: {e}"))?;
        entries.push((bin.version().clone(), layout));
    }
    Ok(LayoutTable::new(entries).to_json())
}
