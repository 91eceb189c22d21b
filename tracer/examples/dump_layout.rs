//! Prints the runtime layout table (`tracer/data/runtime-layouts.json`) for
//! the given Go binaries, read from their DWARF: one entry per Go minor
//! version. Used by `cargo xtask layouts`.
//!
//! usage: cargo run -p tracer --example dump_layout -- BINARY...

use std::path::Path;
use std::process::ExitCode;

use tracer::gobin::GoBinary;
use tracer::gobin::layout_table::LayoutTable;

fn main() -> ExitCode {
    let paths: Vec<String> = std::env::args().skip(1).collect();
    if paths.is_empty() {
        eprintln!("usage: dump_layout BINARY...");
        return ExitCode::from(2);
    }
    let mut entries = Vec::new();
    for path in &paths {
        let layout = GoBinary::open(Path::new(path)).and_then(|bin| {
            let layout = bin.dwarf_layout()?;
            Ok((bin.version().clone(), layout))
        });
        match layout {
            Ok(entry) => entries.push(entry),
            Err(e) => {
                eprintln!("dump_layout: {path}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    print!("{}", LayoutTable::new(entries).to_json());
    ExitCode::SUCCESS
}
