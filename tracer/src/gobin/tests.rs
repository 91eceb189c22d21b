//! Tests on real binaries built from `tracer/testdata/probe` by Go 1.21 and
//! 1.26 (stripped binaries on every version: `strip_tests`).

use std::process::Command;
use std::time::Instant;

use super::testutil::{BuildOpts, build_testdata, find_go, probe};
use super::*;

const VERSIONS: [&str; 2] = ["1.21", "1.26"];

fn open(path: &Path) -> GoBinary {
    GoBinary::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

fn probe_with(minor: &str, opts: BuildOpts<'_>) -> GoBinary {
    open(&build_testdata("probe", minor, opts).unwrap_or_else(|e| panic!("{e}")))
}

/// "go1.26.6" as printed by `go version` of that toolchain.
fn go_version_output(minor: &str) -> String {
    let go = find_go(minor).unwrap_or_else(|| panic!("Go {minor} not installed"));
    let out = Command::new(&go)
        .arg("version")
        .env("GOTOOLCHAIN", "local")
        .output()
        .expect("go version");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_whitespace()
        .nth(2)
        .expect("go version output")
        .to_string()
}

#[test]
fn buildinfo_matches_go_version() {
    for minor in VERSIONS {
        let bin = open(&probe(minor));
        let expected = go_version_output(minor);
        assert_eq!(bin.version().raw, expected);
        assert_eq!(format!("1.{}", bin.version().minor), minor);
        assert_eq!(bin.version().major, 1);
        assert_eq!(bin.arch(), Arch::X86_64);
        assert!(!bin.is_pie(), "default Go build is not PIE");
        assert!(bin.path().ends_with(probe(minor).file_name().unwrap()));
    }
}

#[test]
fn rejects_non_go_and_non_elf() {
    let err = GoBinary::open(Path::new("/bin/ls")).unwrap_err();
    assert!(matches!(err, BinaryError::NotGo { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("not a Go binary (no .go.buildinfo section)")
    );

    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "just some text\n").unwrap();
    let err = GoBinary::open(&text).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("not an ELF file: {}", text.display())
    );

    let err = GoBinary::open(&dir.path().join("missing")).unwrap_err();
    assert!(matches!(err, BinaryError::Io { .. }), "{err}");
}

#[test]
fn layout_matches_known_offsets() {
    for minor in VERSIONS {
        let bin = open(&probe(minor));
        let t = Instant::now();
        let l = bin.layout().unwrap();
        eprintln!("go{minor}: layout() took {:?}", t.elapsed());
        let new = minor == "1.26";
        assert_eq!(l.g_goid, 152, "{minor}");
        assert_eq!(
            l.g_parent_goid,
            Some(if new { 280 } else { 272 }),
            "{minor}"
        );
        assert_eq!(l.g_gopc, if new { 288 } else { 280 }, "{minor}");
        assert_eq!(l.g_startpc, if new { 304 } else { 296 }, "{minor}");
        assert_eq!(l.g_atomicstatus, 144, "{minor}");
        assert_eq!(l.g_waitreason, 176, "{minor}");
        assert_eq!(l.g_waitsince, 168, "{minor}");
        assert_eq!(l.g_sched, 56, "{minor}");
        let wr = &l.wait_reasons;
        let name = |v: u8| wr.get(&v).map(String::as_str);
        assert_eq!(name(0), Some("waitReasonZero"), "{minor}");
        let (recv, select) = if new { (19, 18) } else { (14, 9) };
        assert_eq!(name(recv), Some("waitReasonChanReceive"), "{minor}");
        assert_eq!(name(select), Some("waitReasonSelect"), "{minor}");
        assert!(wr.len() > 30, "{minor}: only {} wait reasons", wr.len());
        // Values are dense from 0 (the runtime declares them with iota).
        assert_eq!(*wr.keys().last().unwrap() as usize, wr.len() - 1, "{minor}");
    }
}

/// Without .symtab and DWARF: functions and lines from the pclntab, the
/// layout from the per-version table (more in `strip_tests`).
#[test]
fn stripped_binary_uses_pclntab_and_layout_table() {
    let bin = probe_with(
        "1.26",
        BuildOpts {
            args: &["-ldflags=-s -w"],
            env: &[],
        },
    );
    assert_eq!(bin.version().minor, 26);
    let err = bin.dwarf_layout().unwrap_err();
    assert!(matches!(err, BinaryError::NoDwarf { .. }), "{err}");
    assert!(
        err.to_string().starts_with("no DWARF debug info in "),
        "{err}"
    );
    let l = bin.layout().unwrap();
    assert_eq!(l.source, layout::LayoutSource::Table);
    assert_eq!(l.g_goid, 152);
    assert!(bin.symbols().len() > 1000);
    assert!(!bin.ret_addresses("runtime.newproc1").unwrap().is_empty());
    let err = bin.ret_addresses("runtime.nosuchfunc").unwrap_err();
    assert_eq!(err.to_string(), "symbol runtime.nosuchfunc not found");
    let s = bin.symbolizer().unwrap();
    assert!(s.uses_pclntab());
    let leaf = bin.symbols().lookup("main.leaf").unwrap().clone();
    let f = s.symbolize(leaf.addr + 4, false);
    assert_eq!(f.last().unwrap().function, "main.leaf");
    assert!(source_lines("leaf").contains(&f.last().unwrap().line));
    assert_eq!(s.symbolize(0x10, false)[0].function, "0x10");
}

/// `-ldflags=-w`: .symtab but no DWARF; lines come from the pclntab.
#[test]
fn dwarf_only_stripped_symbolizes_from_pclntab() {
    let bin = probe_with(
        "1.26",
        BuildOpts {
            args: &["-ldflags=-w"],
            env: &[],
        },
    );
    assert!(matches!(
        bin.dwarf_layout(),
        Err(BinaryError::NoDwarf { .. })
    ));
    assert_eq!(bin.layout().unwrap().source, layout::LayoutSource::Table);
    let leaf = bin.symbols().lookup("main.leaf").unwrap().clone();
    let frames = bin.symbolizer().unwrap().symbolize(leaf.addr + 4, false);
    let normal = open(&probe("1.26"));
    assert_eq!(
        frames,
        normal.symbolizer().unwrap().symbolize(leaf.addr + 4, false)
    );
    assert!(
        frames[0]
            .file
            .as_deref()
            .unwrap()
            .ends_with("probe/main.go")
    );
}

#[test]
fn symbols_lookup_and_containing() {
    for minor in VERSIONS {
        let bin = open(&probe(minor));
        let syms = bin.symbols();
        assert!(syms.len() > 1000, "{minor}: {} symbols", syms.len());
        let gopark = syms.lookup("runtime.gopark").expect("runtime.gopark");
        assert!(gopark.size > 0);
        assert_eq!(
            syms.containing(gopark.addr + 1).unwrap().name,
            "runtime.gopark"
        );
        assert_eq!(
            syms.containing(gopark.addr + gopark.size - 1).unwrap().name,
            "runtime.gopark"
        );
        for f in [
            "main.main",
            "main.leaf",
            "main.worker",
            "main.receiveForever",
        ] {
            assert!(syms.lookup(f).is_some(), "{minor}: {f} missing");
        }
    }
}

#[test]
fn file_offset_maps_to_code_bytes() {
    for minor in VERSIONS {
        let bin = open(&probe(minor));
        let file = std::fs::read(bin.path()).unwrap();
        for name in ["runtime.gopark", "main.leaf"] {
            let sym = bin.symbols().lookup(name).unwrap().clone();
            let code = bin.code(&sym).unwrap();
            assert_eq!(code.len() as u64, sym.size);
            let off = bin.file_offset(sym.addr).unwrap() as usize;
            assert_eq!(&file[off..off + code.len()], code, "{minor} {name}");
        }
        assert_eq!(bin.file_offset(0), None);
    }
}

fn check_rets(bin: &GoBinary, func: &str) -> Vec<u64> {
    let sym = bin.symbols().lookup(func).unwrap().clone();
    let code = bin.code(&sym).unwrap();
    let rets = bin.ret_addresses(func).unwrap();
    assert!(
        !rets.is_empty(),
        "{}: no RET in {func}",
        bin.path().display()
    );
    for &r in &rets {
        assert!(
            r >= sym.addr && r < sym.addr + sym.size,
            "{r:#x} outside {func}"
        );
        let at = &code[(r - sym.addr) as usize..];
        assert!(rets::is_ret(bin.arch(), at), "{r:#x} in {func} is not RET");
    }
    rets
}

#[test]
fn x86_64_ret_addresses() {
    for minor in VERSIONS {
        let bin = open(&probe(minor));
        check_rets(&bin, "runtime.newproc1");
        check_rets(&bin, "runtime.gopark");
        check_rets(&bin, "main.leaf");
    }
}

#[test]
fn aarch64_ret_addresses() {
    for minor in VERSIONS {
        let bin = probe_with(
            minor,
            BuildOpts {
                args: &[],
                env: &[("GOARCH", "arm64"), ("CGO_ENABLED", "0")],
            },
        );
        assert_eq!(bin.arch(), Arch::Aarch64);
        for func in ["runtime.newproc1", "main.leaf", "main.receiveForever"] {
            let rets = check_rets(&bin, func);
            assert!(rets.iter().all(|r| r % 4 == 0));
        }
        // The runtime.g layout is the same on both 64-bit architectures.
        let l = bin.layout().unwrap();
        assert_eq!(l.g_goid, 152);
    }
}

/// Lines `func <name>(` .. the closing `}` of a function in the probe source.
fn source_lines(func: &str) -> std::ops::RangeInclusive<u32> {
    let src = std::fs::read_to_string(testutil::testdata_dir().join("probe/main.go")).unwrap();
    let lines: Vec<&str> = src.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.starts_with(&format!("func {func}(")))
        .unwrap();
    let end = start + lines[start..].iter().position(|l| *l == "}").unwrap();
    (start as u32 + 1)..=(end as u32 + 1)
}

fn line_of(needle: &str) -> u32 {
    let src = std::fs::read_to_string(testutil::testdata_dir().join("probe/main.go")).unwrap();
    src.lines().position(|l| l.contains(needle)).unwrap() as u32 + 1
}

#[test]
fn symbolize_probe_functions() {
    for minor in VERSIONS {
        let bin = open(&probe(minor));
        let t = Instant::now();
        let s = bin.symbolizer().unwrap();
        eprintln!("go{minor}: symbolizer() took {:?}", t.elapsed());

        let leaf = bin.symbols().lookup("main.leaf").unwrap().clone();
        let t = Instant::now();
        let frames = s.symbolize(leaf.addr + 4, false);
        eprintln!("go{minor}: first symbolize() took {:?}", t.elapsed());
        let f = frames.last().unwrap();
        assert_eq!(f.function, "main.leaf", "{minor}: {frames:?}");
        assert!(
            f.file.as_deref().unwrap().ends_with("probe/main.go"),
            "{frames:?}"
        );
        assert!(
            source_lines("leaf").contains(&f.line),
            "{minor}: {frames:?}"
        );

        let gopark = bin.symbols().lookup("runtime.gopark").unwrap().clone();
        let frames = s.symbolize(gopark.addr + 8, false);
        let f = frames.last().unwrap();
        assert_eq!(f.function, "runtime.gopark", "{minor}: {frames:?}");
        assert!(
            f.file.as_deref().unwrap().ends_with("runtime/proc.go"),
            "{frames:?}"
        );

        let unknown = s.symbolize(0x10, false);
        assert_eq!(
            unknown,
            vec![symbolize::Frame {
                function: "0x10".into(),
                file: None,
                line: 0
            }]
        );
    }
}

/// A return address just after `CALL main.leaf` in main.worker resolves
/// (as pc-1) to the line of the call.
#[test]
fn symbolize_return_address_reports_call_line() {
    use iced_x86::{Decoder, DecoderOptions, FlowControl};
    for minor in VERSIONS {
        let bin = open(&probe(minor));
        let s = bin.symbolizer().unwrap();
        let leaf = bin.symbols().lookup("main.leaf").unwrap().addr;
        let worker = bin.symbols().lookup("main.worker").unwrap().clone();
        let code = bin.code(&worker).unwrap();
        let mut dec = Decoder::with_ip(64, code, worker.addr, DecoderOptions::NONE);
        let ret_addr = dec
            .iter()
            .find(|i| i.flow_control() == FlowControl::Call && i.near_branch_target() == leaf)
            .map(|i| i.next_ip())
            .expect("call to main.leaf in main.worker");
        let frames = s.symbolize(ret_addr, true);
        assert_eq!(frames.len(), 1, "{frames:?}");
        assert_eq!(frames[0].function, "main.worker");
        assert_eq!(
            frames[0].line,
            line_of("results <- leaf(id + 10)"),
            "{minor}"
        );
    }
}

/// The extremes of the address space (a recording's raw stacks can hold
/// any pc) give one frame without source lines; addr2line's lookup of
/// `[pc, pc+1)` used to overflow at `u64::MAX` (found by the fuzz seeds).
#[test]
fn symbolize_address_space_extremes() {
    let bin = open(&probe("1.26"));
    let s = bin.symbolizer().unwrap();
    for (pc, ret) in [(u64::MAX, false), (u64::MAX, true), (0, false), (0, true)] {
        let frames = s.symbolize(pc, ret);
        assert_eq!(frames.len(), 1, "{pc:#x}: {frames:?}");
        assert_eq!((frames[0].file.as_deref(), frames[0].line), (None, 0));
    }
    assert_eq!(s.symbolize(0, false)[0].function, "0x0");
}

/// Somewhere in main.leaf the inlined main.square shows up as an extra,
/// innermost frame whose caller frame is main.leaf at the call line.
#[test]
fn symbolize_inlined_frames() {
    for minor in VERSIONS {
        let bin = open(&probe(minor));
        let s = bin.symbolizer().unwrap();
        let leaf = bin.symbols().lookup("main.leaf").unwrap().clone();
        let inlined: Vec<Vec<symbolize::Frame>> = (leaf.addr..leaf.addr + leaf.size)
            .map(|pc| s.symbolize(pc, false))
            .filter(|f| f.len() == 2)
            .collect();
        assert!(
            !inlined.is_empty(),
            "{minor}: no inlined frames in main.leaf"
        );
        let call_line = line_of("s += square(i)");
        for frames in inlined {
            assert_eq!(frames[0].function, "main.square", "{minor}");
            assert!(
                source_lines("square").contains(&frames[0].line),
                "{frames:?}"
            );
            assert_eq!(frames[1].function, "main.leaf", "{minor}");
            assert_eq!(frames[1].line, call_line, "{minor}");
        }
    }
}

#[test]
fn find_go_picks_installed_toolchains() {
    for minor in VERSIONS {
        let go = find_go(minor)
            .unwrap_or_else(|| panic!("Go {minor} not installed: run `cargo xtask setup`"));
        let dir = go.parent().unwrap().parent().unwrap();
        let name = dir.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with(&format!("go-{minor}.")), "{name}");
    }
    assert_eq!(find_go("0.1"), None);
}

#[test]
fn build_id_matches_go_tool_buildid() {
    for minor in VERSIONS {
        let path = probe(minor);
        let go = find_go(minor).unwrap_or_else(|| panic!("Go {minor} not installed"));
        let out = Command::new(&go)
            .args(["tool", "buildid"])
            .arg(&path)
            .env("GOTOOLCHAIN", "local")
            .output()
            .expect("go tool buildid");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let expected = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(open(&path).build_id().as_deref(), Some(expected.as_str()));
    }
}
