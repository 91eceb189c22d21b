//! Stripped binaries (`-ldflags=-s -w`) on every supported Go version: the
//! pclntab gives the same functions and source frames as `.symtab` and DWARF
//! of the same program built normally (code addresses are identical; data
//! may move by a few bytes), and the layout table equals the DWARF layout.

use std::collections::BTreeSet;
use std::time::Instant;

use iced_x86::{Decoder, DecoderOptions, FlowControl};

use super::layout::LayoutSource;
use super::symbolize::Frame;
use super::testutil::{BuildOpts, build_testdata, probe};
use super::*;
use std::collections::HashMap;
use symbols::SymbolTable;

/// Every Go minor release `cargo xtask setup` installs.
const ALL_VERSIONS: [&str; 6] = ["1.19", "1.21", "1.23", "1.25", "1.26", "1.27"];
const STRIP: BuildOpts<'static> = BuildOpts {
    args: &["-ldflags=-s -w"],
    env: &[],
};
const HOOKED: [&str; 4] = [
    "runtime.gopark",
    "runtime.newproc1",
    "runtime.goexit1",
    "runtime.ready",
];

fn open(path: &Path) -> GoBinary {
    GoBinary::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

fn build(program: &str, minor: &str, opts: BuildOpts<'_>) -> GoBinary {
    open(&build_testdata(program, minor, opts).unwrap_or_else(|e| panic!("{e}")))
}

/// Function entries + 16 (inside the function) and return addresses after
/// every CALL of the `main.*` functions, from the normal build's symbols.
fn sample_pcs(bin: &GoBinary) -> Vec<(u64, bool)> {
    let mut pcs = Vec::new();
    for f in bin.symbols().iter().filter(|f| f.size > 16) {
        pcs.push((f.addr + 16, false));
        if !f.name.starts_with("main.") {
            continue;
        }
        let code = bin.code(f).unwrap();
        let mut dec = Decoder::with_ip(64, code, f.addr, DecoderOptions::NONE);
        for instr in dec.iter() {
            if instr.flow_control() == FlowControl::Call {
                pcs.push((instr.next_ip(), true));
            }
        }
    }
    pcs
}

/// A pclntab function name and a `.symtab` or DWARF one are the same but
/// for the `.abi0` suffix of assembly functions, "·" (the ".symtab" of Go
/// 1.23 spells it "."), and the type arguments that Go 1.18–1.19 linkers
/// abbreviate as "[...]" in the pclntab.
fn same_name(pcln: &str, full: &str) -> bool {
    if pcln.contains('·') || full.contains('·') {
        // Go 1.23's linker writes "·" as "." in .symtab.
        return same_name(&pcln.replace('·', "."), &full.replace('·', "."));
    }
    let full = full.strip_suffix(".abi0").unwrap_or(full);
    let mut parts = pcln.split("[...]");
    let Some(mut rest) = parts.next().and_then(|first| full.strip_prefix(first)) else {
        return false;
    };
    for part in parts {
        let Some(group) = rest.strip_prefix('[') else {
            return false;
        };
        let mut depth = 1;
        let Some(end) = group.find(|c| {
            depth += match c {
                '[' => 1,
                ']' => -1,
                _ => 0,
            };
            depth == 0
        }) else {
            return false;
        };
        let Some(after) = group[end + 1..].strip_prefix(part) else {
            return false;
        };
        rest = after;
    }
    rest.is_empty()
}

fn same_frame(pcln: &Frame, dwarf: &Frame) -> bool {
    same_name(&pcln.function, &dwarf.function)
        && (&pcln.file, pcln.line) == (&dwarf.file, dwarf.line)
}

#[test]
fn name_equivalence() {
    assert!(same_name("runtime.gopark", "runtime.gopark"));
    assert!(same_name("runtime.rt0_go", "runtime.rt0_go.abi0"));
    assert!(same_name(
        "type..eq.[...]runtime.Frame",
        "type..eq.[2]runtime.Frame"
    ));
    assert!(same_name(
        "main.F[...].g[...]",
        "main.F[go.shape.[]int].g[int]"
    ));
    assert!(!same_name("main.F[...]", "main.F"));
    assert!(!same_name("main.f", "main.g"));
    assert!(same_name(
        "type:.eq.runtime.untracedG·4",
        "type:.eq.runtime.untracedG.4"
    ));
}

#[test]
fn stripped_symbols_equal_symtab() {
    for minor in ALL_VERSIONS {
        let normal = open(&probe(minor));
        let stripped = build("probe", minor, STRIP);
        assert!(stripped.symbols().len() > 1000, "{minor}");
        for name in HOOKED.iter().chain(&["main.leaf", "main.worker"]) {
            let want = normal.symbols().lookup(name).unwrap();
            let got = stripped
                .symbols()
                .lookup(name)
                .unwrap_or_else(|| panic!("{minor}: {name}"));
            assert_eq!(
                (got.addr, got.size),
                (want.addr, want.size),
                "{minor}: {name}"
            );
            assert_eq!(
                stripped.symbols().containing(want.addr + 1).unwrap().name,
                *name
            );
        }
        // Every pclntab function is a .symtab function: same address and
        // size, and the same name but for ABI suffixes and "[...]".
        let table = SymbolTable::from_funcs(normal.pclntab().unwrap().functions());
        let mut symtab: HashMap<u64, Vec<(&str, u64)>> = HashMap::new();
        for s in normal.symbols().iter() {
            symtab
                .entry(s.addr)
                .or_default()
                .push((s.name.as_str(), s.size));
        }
        let differ: Vec<String> = table
            .iter()
            // Linker markers, not functions (.symtab gives them size 1).
            .filter(|f| !f.name.starts_with("go:textfips"))
            .filter(|f| {
                !symtab.get(&f.addr).is_some_and(|syms| {
                    syms.iter()
                        .any(|&(name, size)| size == f.size && same_name(&f.name, name))
                })
            })
            .map(|f| {
                format!(
                    "{} {:#x}+{}: {:?}",
                    f.name,
                    f.addr,
                    f.size,
                    symtab.get(&f.addr)
                )
            })
            .collect();
        assert!(
            differ.is_empty(),
            "{minor}: {} of {} differ: {:?}",
            differ.len(),
            table.len(),
            &differ[..differ.len().min(10)]
        );
        assert_eq!(
            stripped.ret_addresses("runtime.newproc1").unwrap(),
            normal.ret_addresses("runtime.newproc1").unwrap(),
            "{minor}"
        );
    }
}

#[test]
fn pclntab_frames_equal_dwarf_frames() {
    for minor in ALL_VERSIONS {
        let normal = open(&probe(minor));
        let stripped = build("probe", minor, STRIP);
        let dwarf = normal.symbolizer().unwrap();
        let pcln = stripped.symbolizer().unwrap();
        assert!(pcln.uses_pclntab() && !dwarf.uses_pclntab(), "{minor}");
        assert!(stripped.pclntab().unwrap().has_inline_tree(), "{minor}");
        let pcs = sample_pcs(&normal);
        let (mut inlined, mut inner_differ, mut outer_differ) = (0, Vec::new(), Vec::new());
        for &(pc, ret) in &pcs {
            let want = dwarf.symbolize(pc, ret);
            let got = pcln.symbolize(pc, ret);
            inlined += usize::from(want.len() > 1);
            if !same_frame(&got[0], &want[0]) {
                inner_differ.push((pc, ret, got, want));
            } else if got.len() != want.len()
                || !got.iter().zip(&want).all(|(g, w)| same_frame(g, w))
            {
                outer_differ.push((pc, got, want));
            }
        }
        eprintln!(
            "go{minor}: {} pcs, {inlined} with inlined frames, {} innermost and {} outer frames differ",
            pcs.len(),
            inner_differ.len(),
            outer_differ.len()
        );
        for d in inner_differ.iter().take(8) {
            eprintln!("  inner {d:?}");
        }
        for d in outer_differ.iter().take(8) {
            eprintln!("  outer {d:?}");
        }
        assert!(
            inner_differ.is_empty() && outer_differ.is_empty(),
            "{minor}"
        );
        assert!(inlined > 10, "{minor}: {inlined}");
    }
}

#[test]
fn layout_table_equals_dwarf_layout() {
    for minor in ALL_VERSIONS {
        let normal = open(&probe(minor));
        let dwarf = normal.dwarf_layout().unwrap();
        assert_eq!(dwarf.source, LayoutSource::Dwarf);
        let mut table = layout_table::for_version(normal.version()).unwrap();
        assert_eq!(table.source, LayoutSource::Table);
        table.source = LayoutSource::Dwarf;
        // The addresses of runtime.allglen/allgptr are per binary, not in
        // the table; the code recipe that finds them is.
        assert!(dwarf.allg.is_some() && dwarf.allg_code.is_some(), "{minor}");
        assert_eq!(table.allg, None);
        table.allg = normal.allg_from_table(&table);
        assert_eq!(table, dwarf, "{minor}: run `cargo xtask layouts`");
        // The pclntab reads moduledata at the offsets DWARF gives.
        let p = normal.pclntab().unwrap();
        assert_eq!(dwarf.moduledata_text, Some(176), "{minor}");
        assert_eq!(
            dwarf.moduledata_gofunc,
            Some(pclntab::moduledata_gofunc_offset(
                normal.version(),
                p.is_go120()
            )),
            "{minor}"
        );
        assert_eq!(p.is_go120(), minor != "1.19");
        let md = normal.data_symbols(&["runtime.firstmoduledata"]).unwrap();
        assert_eq!(
            p.moduledata(),
            md.get("runtime.firstmoduledata").copied(),
            "{minor}"
        );
        let text = normal.symbols().lookup("runtime.text").map(|s| s.addr);
        assert_eq!(Some(p.text_start()), text, "{minor}");
    }
}

#[test]
fn stripped_binary_degrades_gracefully() {
    for minor in ALL_VERSIONS {
        let normal = open(&probe(minor));
        let bin = build("probe", minor, STRIP);
        assert!(!bin.has_dwarf() && normal.has_dwarf());
        let l = bin.layout().unwrap();
        assert_eq!(l.source, LayoutSource::Table, "{minor}");
        // The goroutine list is found from the code (data addresses differ
        // a little from the normal build's, so compare their neighbourhood).
        let (allg, want) = (l.allg.unwrap(), normal.layout().unwrap().allg.unwrap());
        assert!(allg.allglen.abs_diff(want.allglen) < 0x1000, "{minor}");
        assert!(allg.allgptr.abs_diff(want.allgptr) < 0x1000, "{minor}");
        assert_eq!(l.wait_reasons, normal.layout().unwrap().wait_reasons);
        assert!(matches!(
            bin.dwarf_layout(),
            Err(BinaryError::NoDwarf { .. })
        ));
        let data = bin
            .data_symbols(&["context.Canceled", "runtime.allgs"])
            .unwrap();
        assert!(data.is_empty(), "{minor}: {data:?}");
        // Without symbols the itabs still come from the module data. (Data
        // addresses shift between the two builds: compare names.)
        let names = |itabs: HashMap<u64, String>| -> BTreeSet<String> {
            itabs
                .into_values()
                .filter(|n| n.ends_with(",error"))
                .collect()
        };
        let want = names(normal.itabs().unwrap());
        assert!(want.len() > 5, "{minor}: {want:?}");
        assert_eq!(names(bin.itabs().unwrap()), want, "{minor}");
    }
}

#[test]
fn unknown_version_without_dwarf_is_a_clear_error() {
    let t = layout_table::table().unwrap();
    let mut v = buildinfo::GoVersion::parse("go1.99.1");
    v.minor = t.versions().last().unwrap().1 + 1;
    v.raw = format!("go1.{}.1", v.minor);
    let err = t.lookup(&v).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "Go {} is newer than gotrace's runtime layout table (1.19–",
            v.raw
        )),
        "{err}"
    );
    assert!(
        err.ends_with("no DWARF: rebuild without -w, or update gotrace"),
        "{err}"
    );
}

#[test]
fn pie_and_sectionless_pclntab() {
    let normal = open(&probe("1.26"));
    let pie = build(
        "probe",
        "1.26",
        BuildOpts {
            args: &["-buildmode=pie", "-ldflags=-s -w"],
            env: &[],
        },
    );
    assert!(pie.is_pie());
    assert!(pie.symbols().lookup("runtime.gopark").is_some());
    let s = pie.symbolizer().unwrap();
    let leaf = pie.symbols().lookup("main.leaf").unwrap().clone();
    let f = s.symbolize(leaf.addr + 4, false);
    assert_eq!(f.last().unwrap().function, "main.leaf");
    assert!(
        f.last()
            .unwrap()
            .file
            .as_deref()
            .unwrap()
            .ends_with("probe/main.go")
    );

    // Rename .gopclntab: the header is then found by its magic.
    let stripped = build("probe", "1.26", STRIP);
    let mut bytes = std::fs::read(stripped.path()).unwrap();
    let at = bytes
        .windows(11)
        .position(|w| w == b".gopclntab\0")
        .unwrap();
    bytes[at + 1] = b'x';
    let dir = tempfile::tempdir().unwrap();
    let renamed = dir.path().join("renamed");
    std::fs::write(&renamed, &bytes).unwrap();
    let bin = open(&renamed);
    assert_eq!(bin.symbols().len(), stripped.symbols().len());
    let want = normal.symbols().lookup("runtime.gopark").unwrap();
    let got = bin.symbols().lookup("runtime.gopark").unwrap();
    assert_eq!((got.addr, got.size), (want.addr, want.size));
    let frames = bin.symbolizer().unwrap().symbolize(want.addr + 16, false);
    assert_eq!(
        frames,
        normal
            .symbolizer()
            .unwrap()
            .symbolize(want.addr + 16, false)
    );
}

#[test]
fn pclntab_timing() {
    let bin = build("probe", "1.26", STRIP);
    let size = std::fs::metadata(bin.path()).unwrap().len();
    let t = Instant::now();
    let reopened = open(bin.path());
    let open_time = t.elapsed();
    let s = reopened.symbolizer().unwrap();
    let main_main = reopened.symbols().lookup("main.main").unwrap().addr;
    let t = Instant::now();
    let frames: Vec<Vec<Frame>> = (0..1000)
        .map(|i| s.symbolize(main_main + i % 64, false))
        .collect();
    eprintln!(
        "{} bytes, {} functions: open (pclntab + symbol table) {open_time:?}, 1000 symbolize {:?}",
        size,
        reopened.symbols().len(),
        t.elapsed()
    );
    assert!(
        frames
            .iter()
            .all(|f| f.last().unwrap().function == "main.main")
    );
}
