//! `gotrace probes BINARY`: where gotrace would attach, one line per uprobe
//! (`symbol+offset program vaddr=.. file_offset=..`), for comparisons with
//! other tools.

use anyhow::Context as _;

use super::Outcome;
use super::cli::ProbesArgs;
use super::open::inspect;

pub fn run(args: ProbesArgs) -> anyhow::Result<Outcome> {
    let shown = args.binary.display().to_string();
    let bin = inspect(&args.binary, &shown)?;
    let layout = bin
        .layout()
        .with_context(|| format!("cannot read the Go runtime layout of {shown}"))?;
    let plan = crate::probe::plan(&bin, &layout, &shown, false)?;
    for p in &plan.points {
        let base = bin
            .symbols()
            .iter()
            .find(|f| f.name == p.symbol)
            .map(|f| f.addr)
            .unwrap_or(p.vaddr);
        println!(
            "{}+{:#x} {} vaddr={:#x} file_offset={:#x}",
            p.symbol,
            p.vaddr - base,
            p.program,
            p.vaddr,
            p.file_offset
        );
    }
    Ok(Outcome::listing())
}
