//! The heap layout of `tracer/testdata/probe` on every installed Go.

use std::time::Instant;

use super::heap_layout::{Field, HeapLayout};
use super::layout::LayoutSource;
use super::testutil::probe;
use super::*;

/// Go minor → (minor number, its probe's heap layout from DWARF).
fn dwarf_layouts() -> Vec<(u32, HeapLayout)> {
    gotoolchains::minors()
        .into_iter()
        .map(|minor| {
            let bin = GoBinary::open(&probe(minor)).unwrap();
            let t = Instant::now();
            let l = HeapLayout::load(&bin).unwrap_or_else(|e| panic!("{minor}: {e}"));
            eprintln!("go{minor}: HeapLayout::load took {:?}", t.elapsed());
            (bin.version().minor, l)
        })
        .collect()
}

/// Facts that hold on every version, and the changes the Go sources show
/// (mspan.nelems narrowed in 1.22, special.offset widened in 1.24,
/// maybeTraceablePtr in 1.26, gcCleanups in 1.25).
#[test]
fn dwarf_heap_layout_on_every_version() {
    for (minor, l) in dwarf_layouts() {
        assert_eq!(l.source, LayoutSource::Dwarf);
        assert_eq!(l.arena_base_offset, 0xffff_8000_0000_0000, "1.{minor}");
        assert_eq!(
            (l.log_heap_arena_bytes, l.arena_l1_bits, l.arena_l2_bits),
            (26, 0, 22)
        );
        assert_eq!(
            (l.page_size, l.pages_per_arena, l.span_in_use),
            (8192, 8192, 1)
        );
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
        let g = l.globals.expect("globals from DWARF");
        assert!(g.mheap != 0 && g.firstmoduledata != 0 && g.semtable.is_some());
        assert!(g.allfin.is_some());
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
        let entry = if minor >= 26 { 24 } else { 8 };
        if minor >= 25 {
            assert_eq!(l.cleanup_size, Some(entry));
        }
    }
}

/// What the stack scan follows from a g: `_panic` and `_defer` (the words
/// after `stack` and the two stack guards in every version) and each
/// record's `fn` and `link`.
#[test]
fn dwarf_defer_fields_on_every_version() {
    for (minor, l) in dwarf_layouts() {
        assert_eq!((l.g_panic, l.g_defer), (Some(32), Some(40)), "1.{minor}");
        let (f, link) = (l.defer_fn.unwrap(), l.defer_link.unwrap());
        assert!(
            f != link && f.is_multiple_of(8) && link.is_multiple_of(8),
            "1.{minor}"
        );
    }
}
