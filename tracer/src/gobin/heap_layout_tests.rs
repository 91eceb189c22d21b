//! The heap layout (`HeapLayout::load`) on binaries built by every installed
//! Go: from DWARF, from the per-version table, with the globals found
//! through `.symtab` or through code (stripped, PIE), and on arm64.

use std::path::PathBuf;
use std::time::Instant;

use super::heap_globals;
use super::heap_layout::{Field, HeapGlobals, HeapLayout};
use super::layout::LayoutSource;
use super::layout_table;
use super::testutil::{BuildOpts, build_go, build_testdata, find_go, probe, testbin_dir};
use super::*;

const NO_DWARF: BuildOpts<'static> = BuildOpts {
    args: &["-ldflags=-w"],
    env: &[],
};
const STRIP: BuildOpts<'static> = BuildOpts {
    args: &["-ldflags=-s -w"],
    env: &[],
};

fn open(path: &Path) -> GoBinary {
    GoBinary::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

fn build(minor: &str, opts: BuildOpts<'_>) -> GoBinary {
    open(&build_testdata("probe", minor, opts).unwrap_or_else(|e| panic!("{e}")))
}

fn load(bin: &GoBinary) -> HeapLayout {
    HeapLayout::load(bin).unwrap_or_else(|e| panic!("{}: {e}", bin.path().display()))
}

/// The table's code records for `bin`'s version.
fn codes(bin: &GoBinary) -> Vec<heap_layout::GlobalCode> {
    layout_table::heap_for_version(bin.version())
        .unwrap()
        .globals_code
}

/// Facts that hold on every version, and the changes the Go sources show
/// (mspan.nelems narrowed in 1.22, special.offset widened in 1.24,
/// gcCleanups in 1.25, maybeTraceablePtr and p.xRegs in 1.26).
#[test]
fn dwarf_heap_layout_on_every_version() {
    for minor in gotoolchains::minors() {
        let bin = open(&probe(minor));
        let t = Instant::now();
        let l = load(&bin);
        eprintln!(
            "go{minor}: HeapLayout::load from DWARF took {:?}",
            t.elapsed()
        );
        let minor = bin.version().minor;
        assert_eq!(l.source, LayoutSource::Dwarf);
        assert_eq!(l.arena_base_offset, 0xffff_8000_0000_0000, "1.{minor}");
        let arena = (l.log_heap_arena_bytes, l.arena_l1_bits, l.arena_l2_bits);
        assert_eq!(arena, (26, 0, 22));
        let pages = (l.page_size, l.pages_per_arena, l.span_in_use);
        assert_eq!(pages, (8192, 8192, 1));
        let (nelems, offset) = match minor {
            ..=21 => (Field { off: 56, size: 8 }, Field { off: 8, size: 2 }),
            22..=23 => (Field { off: 50, size: 2 }, Field { off: 8, size: 2 }),
            _ => (Field { off: 50, size: 2 }, Field { off: 8, size: 8 }),
        };
        assert_eq!(
            (l.span_nelems, l.special_offset),
            (nelems, offset),
            "1.{minor}"
        );
        assert_eq!(l.special_kind.size, 1);
        assert_eq!(l.span_freeindex.size, nelems.size);
        assert_eq!((l.semtable_len, l.semtable_stride), (251, 64), "1.{minor}");
        assert_eq!(l.sudog_elem.vu.is_some(), minor >= 26, "1.{minor}");
        assert_eq!(l.sudog_c.vu.is_some(), minor >= 26, "1.{minor}");
        assert_eq!(l.kind_special_finalizer, if minor >= 25 { 2 } else { 1 });
        assert!(l.special_max_size >= l.special_finalizer_size);
        assert_eq!(l.notify_list_head, Some(16), "1.{minor}");
        // wbBuf, gcw, pcache; from 1.26 the vector registers asyncPreempt
        // saved (xRegs.scratch: 16 ZMM, 8 K registers, on amd64).
        let xregs = l.p_stale.get(3).copied();
        assert_eq!(xregs.is_some(), minor >= 26, "1.{minor}");
        assert_eq!(l.p_stale.len(), if minor >= 26 { 4 } else { 3 });
        assert!(xregs.is_none_or(|(_, size)| size >= 16 * 64), "1.{minor}");
        let g = l.globals.expect("globals from DWARF");
        assert!(g.semtable.is_some() && g.allfin.is_some());
        assert_eq!(g.gc_cleanups.is_some(), minor >= 25, "1.{minor}");
        let cleanups = [
            l.cleanups_all,
            l.cleanup_block_alllink,
            l.cleanup_block_n.map(|f| f.off),
            l.cleanup_block_cleanups,
            l.cleanup_size,
            l.cleanup_block_size,
        ];
        assert!(
            cleanups.iter().all(|c| c.is_some() == (minor >= 25)),
            "1.{minor}"
        );
        if minor >= 25 {
            // A queued cleanup: a *funcval, then a cleanupFn{call, fn, arg}.
            assert_eq!(l.cleanup_size, Some(if minor >= 26 { 24 } else { 8 }));
            assert_eq!(l.cleanup_block_n.unwrap().size, 4);
        }
    }
}

/// The table entry of each version is what the probe's DWARF says, and its
/// code records give the DWARF addresses of the globals.
#[test]
fn heap_table_equals_dwarf_layout() {
    for minor in gotoolchains::minors() {
        let bin = open(&probe(minor));
        let mut dwarf = HeapLayout::for_table(&bin).unwrap();
        let want = dwarf.globals.take().unwrap();
        let mut table = layout_table::heap_for_version(bin.version()).unwrap();
        assert_eq!(table.source, LayoutSource::Table);
        assert_eq!(table.globals, None);
        table.source = LayoutSource::Dwarf;
        assert_eq!(table, dwarf, "{minor}: run `cargo xtask layouts`");
        let found = heap_globals::by_code(&bin, &table.globals_code).unwrap();
        assert_eq!(found, want, "{minor}");
        // Every global of the version has two functions that agree.
        let present = [
            Some(want.mheap),
            Some(want.firstmoduledata),
            want.semtable,
            want.allfin,
            want.gc_cleanups,
        ];
        for ((key, _, _), addr) in heap_globals::READERS.iter().zip(present) {
            let n = table
                .globals_code
                .iter()
                .filter(|c| c.global == *key)
                .count();
            assert_eq!(n, if addr.is_some() { 2 } else { 0 }, "{minor}: {key}");
        }
    }
}

#[test]
fn heap_table_covers_every_supported_version() {
    let t = layout_table::heap_table().unwrap();
    let minors: Vec<String> = t.layouts.keys().cloned().collect();
    let mut want: Vec<String> = gotoolchains::minors()
        .iter()
        .map(|m| m.to_string())
        .collect();
    want.sort();
    assert_eq!(minors, want);
    for (k, e) in &t.layouts {
        assert_eq!(
            layout_table::heap_for_version(&buildinfo::GoVersion::parse(&e.built_with))
                .unwrap()
                .source,
            LayoutSource::Table,
            "{k}"
        );
    }
    // The file is exactly what `to_json` writes (no hand edits).
    let file = include_str!("../../data/heap-layouts.json");
    assert_eq!(t.to_json(), file);
}

/// Without DWARF but with `.symtab` (`-ldflags=-w`), the globals are the
/// symbols, and the code records give the same addresses.
#[test]
fn symtab_and_code_agree_without_dwarf() {
    for minor in gotoolchains::minors() {
        let bin = build(minor, NO_DWARF);
        assert!(!bin.has_dwarf());
        let l = load(&bin);
        assert_eq!(l.source, LayoutSource::Table, "{minor}");
        let symtab = l.globals.unwrap();
        let by_code = heap_globals::by_code(&bin, &l.globals_code).unwrap();
        assert_eq!(by_code, symtab, "{minor}");
        let names = ["runtime.mheap_", "runtime.semtable", "runtime.allfin"];
        let syms = bin.data_symbols(&names).unwrap();
        assert_eq!(syms.get("runtime.mheap_"), Some(&symtab.mheap), "{minor}");
        assert_eq!(syms.get("runtime.semtable").copied(), symtab.semtable);
        assert_eq!(syms.get("runtime.allfin").copied(), symtab.allfin);
    }
}

/// A fully stripped binary (`-s -w`): globals from code only. Data moves a
/// little against the normal build (the build flags are in the binary), so
/// compare with its neighbourhood; the module data must be the pclntab's.
#[test]
fn stripped_binary_finds_globals_by_code() {
    for minor in gotoolchains::minors() {
        let bin = build(minor, STRIP);
        assert!(bin.data_symbols(&["runtime.mheap_"]).unwrap().is_empty());
        let t = Instant::now();
        let l = load(&bin);
        eprintln!(
            "go{minor}: HeapLayout::load stripped took {:?}",
            t.elapsed()
        );
        assert_eq!(l.source, LayoutSource::Table, "{minor}");
        let got = l.globals.unwrap();
        let want = load(&open(&probe(minor))).globals.unwrap();
        assert_near(&got, &want, minor);
        let md = bin.pclntab().unwrap().moduledata();
        assert_eq!(Some(got.firstmoduledata), md, "{minor}");
    }
}

fn assert_near(got: &HeapGlobals, want: &HeapGlobals, what: &str) {
    let near = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => a.abs_diff(b) < 0x1000,
        (a, b) => a == b,
    };
    assert!(
        near(Some(got.mheap), Some(want.mheap)),
        "{what}: {got:x?} {want:x?}"
    );
    assert!(near(Some(got.firstmoduledata), Some(want.firstmoduledata)));
    assert!(
        near(got.semtable, want.semtable),
        "{what}: {got:x?} {want:x?}"
    );
    assert!(near(got.allfin, want.allfin), "{what}: {got:x?} {want:x?}");
    assert!(near(got.gc_cleanups, want.gc_cleanups), "{what}");
}

/// PIE: addresses stay link-time (the caller adds the load bias), from
/// DWARF and from code alike.
#[test]
fn pie_globals_are_link_time_addresses() {
    for minor in ["1.19", "1.26"] {
        let pie = build(
            minor,
            BuildOpts {
                args: &["-buildmode=pie"],
                env: &[],
            },
        );
        assert!(pie.is_pie());
        let dwarf = load(&pie).globals.unwrap();
        assert_eq!(heap_globals::by_code(&pie, &codes(&pie)).unwrap(), dwarf);
        let syms = pie.data_symbols(&["runtime.mheap_"]).unwrap();
        assert_eq!(syms.get("runtime.mheap_"), Some(&dwarf.mheap), "{minor}");
        let stripped = build(
            minor,
            BuildOpts {
                args: &["-buildmode=pie", "-ldflags=-s -w"],
                env: &[],
            },
        );
        assert!(stripped.is_pie() && !stripped.has_dwarf());
        let l = load(&stripped);
        assert_eq!(l.source, LayoutSource::Table);
        assert_near(&l.globals.unwrap(), &dwarf, minor);
    }
}

/// A program that links little of the runtime (`tracer/testdata/hello`):
/// the table's functions are there too, normal and stripped.
#[test]
fn code_records_hold_for_a_minimal_program() {
    for minor in gotoolchains::minors() {
        let hello =
            |opts| open(&build_testdata("hello", minor, opts).unwrap_or_else(|e| panic!("{e}")));
        let normal = hello(BuildOpts::default());
        let dwarf = load(&normal).globals.unwrap();
        assert_eq!(
            heap_globals::by_code(&normal, &codes(&normal)).unwrap(),
            dwarf,
            "{minor}"
        );
        let mut codes = codes(&normal);
        codes.retain(|c| normal.symbols().lookup(&c.function).is_some());
        assert_eq!(
            codes.len(),
            if normal.version().minor >= 25 { 13 } else { 11 },
            "{minor}"
        );
        let stripped = hello(STRIP);
        assert_near(&load(&stripped).globals.unwrap(), &dwarf, minor);
    }
}

/// Another program than the probe (an HTTP service): the records hold for
/// any program built by the version, since the runtime's code is the same.
#[test]
fn code_records_hold_for_another_program() {
    for minor in ["1.21", "1.26"] {
        let go = find_go(minor).unwrap_or_else(|| panic!("Go {minor} not installed"));
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/leakyservice");
        let dir = testbin_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let out: PathBuf = dir.join(format!(
            "heaplayout-leakyservice-{minor}-{}",
            std::process::id()
        ));
        build_go(&go, &src, &out, &[]).unwrap();
        let bin = open(&out);
        let dwarf = load(&bin).globals.unwrap();
        let by_code = heap_globals::by_code(&bin, &codes(&bin));
        let _ = std::fs::remove_file(&out);
        assert_eq!(by_code.unwrap(), dwarf, "{minor}");
    }
}

/// arm64: DWARF works (its cache lines, hence the semtable stride, are 128
/// bytes from Go 1.21); without DWARF the (amd64) table does not apply,
/// and the error says so.
#[test]
fn arm64_dwarf_works_and_stripped_is_a_clear_error() {
    let arm64 = |args: &'static [&'static str]| {
        build(
            "1.26",
            BuildOpts {
                args,
                env: &[("GOARCH", "arm64"), ("CGO_ENABLED", "0")],
            },
        )
    };
    let bin = arm64(&[]);
    assert_eq!(bin.arch(), Arch::Aarch64);
    let l = load(&bin);
    assert_eq!(l.arena_base_offset, 0);
    assert_eq!(l.semtable_stride, 128);
    let stripped = arm64(&["-ldflags=-s -w"]);
    let err = HeapLayout::load(&stripped).unwrap_err().to_string();
    assert_eq!(
        err,
        "unsupported architecture aarch64 (a heap layout without DWARF: gotrace's table is for \
         x86_64)"
    );
}

/// What the stack scan follows from a g: `_panic` and `_defer` (the words
/// after `stack` and the two stack guards in every version) and each
/// record's `fn` and `link`.
#[test]
fn dwarf_defer_fields_on_every_version() {
    for minor in gotoolchains::minors() {
        let l = load(&open(&probe(minor)));
        assert_eq!((l.g_panic, l.g_defer), (Some(32), Some(40)), "1.{minor}");
        let (f, link) = (l.defer_fn.unwrap(), l.defer_link.unwrap());
        assert!(
            f != link && f.is_multiple_of(8) && link.is_multiple_of(8),
            "1.{minor}"
        );
    }
}
