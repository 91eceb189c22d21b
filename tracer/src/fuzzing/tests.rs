//! The synthetic seeds reach deep into every parser, and every committed
//! fuzz finding (`tracer/testdata/fuzz/<target>/`) stays fixed.

use std::path::Path;

use super::seeds::{SYNTHETIC, synthetic};
use super::*;
use crate::gobin::Arch;
use crate::gobin::layout::LayoutSource;

fn open(spec: &synth::Spec) -> GoBinary {
    GoBinary::from_bytes(Path::new("synthetic"), elf::build(spec)).unwrap()
}

#[test]
fn synthetic_binaries_parse_all_the_way() {
    for spec in SYNTHETIC {
        let what = format!("{spec:?}");
        let bin = open(&spec);
        assert_eq!(bin.version().raw, spec.version, "{what}");
        assert_eq!(bin.arch(), spec.arch, "{what}");
        assert!(bin.build_id().unwrap().starts_with("synthetic-build-id/"));
        assert_eq!(bin.symbols().len(), 15, "{what}");
        let p = bin.pclntab().expect(&what);
        assert_eq!(p.functions().len(), 15, "{what}");
        assert!(p.has_inline_tree(), "{what}");
        let layout = bin.layout().expect(&what);
        let want = if spec.symbols {
            LayoutSource::Dwarf
        } else {
            LayoutSource::Table
        };
        assert_eq!(layout.source, want, "{what}");
        let itabs = bin.itabs().expect(&what);
        assert_eq!(
            itabs.values().collect::<Vec<_>>(),
            ["*errors.errorString,error"],
            "{what}"
        );
        let gopark = bin.symbols().lookup("runtime.gopark").unwrap().clone();
        let rets = bin.ret_addresses("runtime.gopark").expect(&what);
        let ret_len = match spec.arch {
            Arch::X86_64 => 1,
            Arch::Aarch64 => 4,
        };
        assert_eq!(rets, [gopark.addr + gopark.size - ret_len], "{what}");
        crate::probe::goroutine::plan(&bin).expect(&what);
        let s = bin.symbolizer().expect(&what);
        let worker = bin.symbols().lookup("main.worker").unwrap().addr;
        let frames = s.symbolize(worker, false);
        let names: Vec<_> = frames.iter().map(|f| f.function.as_str()).collect();
        assert_eq!(names, ["main.helper", "main.worker"], "{what}");
        assert_eq!(frames[1].file.as_deref(), Some("/app/main.go"), "{what}");
        let wrapper = bin.symbols().lookup("main.main.gowrap1").unwrap().addr;
        if spec.arch == Arch::X86_64 {
            assert_eq!(
                wrappers::go_wrapper_callee(&bin, &s, wrapper).as_deref(),
                Some("main.worker"),
                "{what}"
            );
        }
    }
}

#[test]
fn synthetic_pclntab_images_and_dwarf_parse() {
    for spec in SYNTHETIC {
        let what = format!("{spec:?}");
        let image = synth::pclntab_image(&spec);
        let (addr, image) = image.split_first_chunk::<8>().unwrap();
        let version = GoVersion::parse(spec.version);
        let tab = Pclntab::from_image(
            Arc::new(image.to_vec()),
            u64::from_le_bytes(*addr),
            &version,
        )
        .expect(&what);
        assert_eq!(tab.functions().len(), 15, "{what}");
        assert!(tab.moduledata().is_some(), "{what}");
        if spec.symbols {
            let sections = split_sections(&synth::dwarf_container(&spec));
            let dwarf = gimli::Dwarf::load(|id| {
                let b = sections
                    .iter()
                    .find(|(s, _)| *s == id)
                    .map_or_else(|| Arc::from(&[][..]), |(_, b)| b.clone());
                Ok::<_, gimli::Error>(gimli::EndianArcSlice::new(b, gimli::RunTimeEndian::Little))
            })
            .unwrap();
            let layout = layout::from_dwarf(&dwarf, Path::new("synthetic")).expect(&what);
            assert!(!layout.wait_reasons.is_empty(), "{what}");
        }
    }
}

#[test]
fn seeds_are_small_and_run() {
    let seeds = synthetic();
    assert!(seeds.len() >= 4 * SYNTHETIC.len());
    for s in &seeds {
        assert!(
            s.bytes.len() <= 64 << 10,
            "{} is {} bytes",
            s.name,
            s.bytes.len()
        );
        run(s.target, &s.bytes, None);
    }
}

/// Runs `data` through the entry point of fuzz target `target`.
fn run(target: &str, data: &[u8], recorded: Option<&Target>) {
    match target {
        "elf_open" => elf_open(data),
        "pclntab" => pclntab(data),
        "buildinfo" => buildinfo(data),
        "dwarf_layout" => dwarf_layout(data),
        "recording" => recording(data, recorded),
        other => panic!("unknown fuzz target {other}"),
    }
}
