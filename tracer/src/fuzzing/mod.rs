//! Entry points of the fuzz targets in `fuzz/` (`cargo xtask fuzz`) and of
//! their regression tests. Each one feeds arbitrary bytes to a parser that
//! gotrace runs on untrusted input (the target's executable, a recording)
//! and then uses the result the way gotrace does. An error is a fine answer;
//! a panic, an abort, a hang or an allocation out of proportion to the
//! input is a bug.
//!
//! Not a stable API: only `fuzz/` and the tests use it.

mod elf;
pub mod seeds;
pub mod synth;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::gobin::buildinfo::{self, GoVersion};
use crate::gobin::layout::{self, RuntimeLayout};
use crate::gobin::pclntab::Pclntab;
use crate::gobin::symbolize::Symbolizer;
use crate::gobin::symbols::SymbolTable;
use crate::gobin::{GoBinary, parse_go_build_id_note, wrappers};
use crate::resolve::StackResolver;

/// How fuzz inputs are named in error messages.
const INPUT: &str = "fuzz-input";

/// The sections of a `dwarf_layout` input, in order: each is a u32 LE
/// length followed by that many bytes (a short input leaves the rest empty).
pub const DWARF_SECTIONS: [gimli::SectionId; 12] = [
    gimli::SectionId::DebugInfo,
    gimli::SectionId::DebugAbbrev,
    gimli::SectionId::DebugStr,
    gimli::SectionId::DebugLine,
    gimli::SectionId::DebugLineStr,
    gimli::SectionId::DebugRanges,
    gimli::SectionId::DebugRngLists,
    gimli::SectionId::DebugLoc,
    gimli::SectionId::DebugLocLists,
    gimli::SectionId::DebugAddr,
    gimli::SectionId::DebugStrOffsets,
    gimli::SectionId::DebugAranges,
];

/// A whole ELF file, as `gotrace` reads a target's executable before
/// attaching: version, build id, symbols, runtime layout, itabs, the uprobe
/// plans (RET offsets), then symbolisation.
pub fn elf_open(data: &[u8]) {
    let Ok(bin) = GoBinary::from_bytes(Path::new(INPUT), data.to_vec()) else {
        return;
    };
    let _ = bin.build_id();
    let _ = bin.has_dwarf();
    let _ = bin.data_symbols(&["runtime.firstmoduledata", "context.Canceled"]);
    let _ = bin.ret_addresses("runtime.gopark");
    let _ = crate::probe::goroutine::plan(&bin);
    if let Ok(layout) = bin.layout() {
        let _ = crate::probe::context::plan(&bin, &layout);
        let _ = crate::probe::timers::plan(&bin, &layout);
    }
    let _ = bin.itabs();
    let Ok(symbolizer) = bin.symbolizer() else {
        return;
    };
    for pc in sample_pcs(bin.symbols()) {
        let _ = symbolizer.symbolize(pc, false);
        let _ = symbolizer.symbolize(pc, true);
        let _ = wrappers::go_wrapper_callee(&bin, &symbolizer, pc);
    }
}

/// A memory image holding a pclntab: a u64 LE virtual address, then the
/// bytes mapped there (the header is found by its magic, the module data
/// by its pointer to the header). Every function is listed and a few pcs
/// are symbolised, inlined frames included.
pub fn pclntab(data: &[u8]) {
    let Some((addr, image)) = data.split_first_chunk::<8>() else {
        return;
    };
    let addr = u64::from_le_bytes(*addr);
    let version = GoVersion::parse("go1.26.0");
    let Ok(tab) = Pclntab::from_image(Arc::new(image.to_vec()), addr, &version) else {
        return;
    };
    let symbols = Arc::new(SymbolTable::from_funcs(tab.functions()));
    let symbolizer = Symbolizer::from_pclntab(Arc::new(tab), symbols.clone());
    for pc in sample_pcs(&symbols) {
        let _ = symbolizer.symbolize(pc, false);
        let _ = symbolizer.symbolize(pc, true);
    }
}

/// A `.go.buildinfo` section (also read as a `.note.go.buildid` note and
/// as a version string).
pub fn buildinfo(data: &[u8]) {
    let _ = buildinfo::parse_buildinfo(data);
    let _ = parse_go_build_id_note(data);
    let _ = GoVersion::parse(&String::from_utf8_lossy(data));
}

/// DWARF sections (see [`DWARF_SECTIONS`]): the runtime layout, then the
/// symbolisation of the start of the first units.
pub fn dwarf_layout(data: &[u8]) {
    let path = Path::new(INPUT);
    let sections = split_sections(data);
    let load = || {
        gimli::Dwarf::load(|id| {
            let bytes = sections
                .iter()
                .find(|(s, _)| *s == id)
                .map_or_else(|| Arc::from(&[][..]), |(_, b)| b.clone());
            Ok::<_, gimli::Error>(gimli::EndianArcSlice::new(
                bytes,
                gimli::RunTimeEndian::Little,
            ))
        })
    };
    let Ok(dwarf) = load() else { return };
    let _ = layout::from_dwarf(&dwarf, path);
    let mut pcs = Vec::new();
    let mut units = dwarf.units();
    while let Ok(Some(header)) = units.next() {
        if pcs.len() >= 6 {
            break;
        }
        if let Ok(unit) = dwarf.unit(header) {
            pcs.extend([unit.low_pc, unit.low_pc.wrapping_add(0x10)]);
        }
    }
    let Ok(symbolizer) = Symbolizer::new(Some(dwarf), Arc::new(SymbolTable::default()), path)
    else {
        return;
    };
    for pc in pcs {
        let _ = symbolizer.symbolize(pc, false);
        let _ = symbolizer.symbolize(pc, true);
    }
}

fn split_sections(mut data: &[u8]) -> Vec<(gimli::SectionId, Arc<[u8]>)> {
    let mut sections = Vec::new();
    for id in DWARF_SECTIONS {
        let Some((len, rest)) = data.split_first_chunk::<4>() else {
            break;
        };
        let len = (u32::from_le_bytes(*len) as usize).min(rest.len());
        sections.push((id, Arc::from(&rest[..len])));
        data = &rest[len..];
    }
    sections
}

/// The binary a `recording` input is reported against.
pub struct Target {
    bin: GoBinary,
    layout: RuntimeLayout,
    symbolizer: Symbolizer,
}

impl Target {
    pub fn open(path: &Path) -> Result<Target, String> {
        let bin = GoBinary::open(path).map_err(|e| e.to_string())?;
        let layout = bin.layout().map_err(|e| e.to_string())?;
        let symbolizer = bin.symbolizer().map_err(|e| e.to_string())?;
        Ok(Target {
            bin,
            layout,
            symbolizer,
        })
    }
}

/// A recording, as `gotrace report FILE` reads it: replayed through the
/// decoder and the model, then (given the binary) turned into the report,
/// its text, its JSON, the folded stacks and the pprof profiles.
pub fn recording(data: &[u8], target: Option<&Target>) {
    let Ok(capture) = crate::capture::record::replay_from(data, Path::new(INPUT)) else {
        return;
    };
    let _ = capture.model.stack_ids();
    let Some(t) = target else { return };
    let leak_threshold = Duration::from_nanos(capture.meta.leak_threshold_ns);
    let opts = crate::outputs::Options {
        dir: None,
        leak_threshold,
    };
    let Ok(produced) = crate::outputs::produce(&capture, &t.bin, &t.layout, &t.symbolizer, &opts)
    else {
        return;
    };
    let _ = crate::report::text::render(&produced.report, true);
    let _ = serde_json::to_string(&produced.report);
    let raw = capture
        .stacks
        .iter()
        .map(|(k, v)| (*k, v.clone()))
        .collect();
    let mut resolver = StackResolver::new(&t.bin, &t.symbolizer, raw, capture.end.load_bias);
    let (folded, _, _) =
        crate::outputs::profiles(&capture, &mut resolver, &t.layout, leak_threshold);
    for stacks in [&folded.blocked, &folded.created, &folded.off_cpu] {
        let _ = crate::export::folded::fold(stacks);
    }
}

/// A few pcs worth symbolising: the start, middle and end of some
/// functions (first, last, middle, `go` wrappers), and the extremes.
fn sample_pcs(symbols: &SymbolTable) -> Vec<u64> {
    let funcs: Vec<_> = symbols.iter().collect();
    let mut picked: Vec<_> = [0, funcs.len() / 2, funcs.len().saturating_sub(1)]
        .into_iter()
        .filter_map(|i| funcs.get(i).copied())
        .collect();
    picked.extend(
        funcs
            .iter()
            .filter(|f| f.name.contains("gowrap") || f.name.contains(".func"))
            .take(2),
    );
    let mut pcs = vec![0, u64::MAX];
    for f in picked {
        pcs.extend([
            f.addr,
            f.addr.saturating_add(f.size / 2),
            f.addr.saturating_add(f.size),
        ]);
    }
    pcs
}

/// A made-up Go heap (`proof::image::scenario`) with the input patched into
/// its runtime structures (4 bytes a patch: region, offset, value), then one
/// pass of the leak proof over it: the span, arena, special, module and
/// sudog parsing all read untrusted memory.
pub fn heap(data: &[u8]) {
    let _ = crate::proof::image::run(&crate::proof::image::patched(data));
}
