//! Small synthetic Go binaries for the fuzz seeds. Real Go binaries are
//! megabytes, so the fuzzer would spend its time on bytes nothing reads;
//! these are a few KiB and still reach every parser: an ELF executable with
//! fifteen functions (the runtime, context and timer hooks, a `go` wrapper),
//! a pclntab (files, lines, an inlined call), module data with an itab,
//! build info, a build id note, `.symtab`, and DWARF (a compile unit with a
//! line table and an inlined subroutine, `runtime.g` and the other structs
//! gotrace reads, wait-reason constants).

use gimli::write::{
    Address, AttributeValue, DwarfUnit, EndianVec, LineProgram, LineString, Sections,
};
use gimli::{DW_AT_name, constants};

use crate::gobin::Arch;
use crate::gobin::buildinfo::GoVersion;
use crate::gobin::layout::RuntimeLayout;
use crate::gobin::{layout_table, pclntab::moduledata_gofunc_offset};

/// What to build.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    /// e.g. "go1.26.6"; 1.18–1.19 get the old pclntab format.
    pub version: &'static str,
    pub arch: Arch,
    /// `.symtab` and DWARF (else a stripped binary, `-ldflags=-s -w`).
    pub symbols: bool,
    /// `SHF_COMPRESSED` DWARF sections, as the Go linker writes them.
    pub compress: bool,
}

/// (vaddr, file offset, room) of the three loadable segments: packed in
/// the file, on separate pages in memory.
const TEXT: (u64, u64, u64) = (0x401200, 0x200, 0x100);
const RODATA: (u64, u64, u64) = (0x482300, 0x300, 0x700);
const DATA: (u64, u64, u64) = (0x483a00, 0xa00, DATA_LEN);
/// Offsets in the data segment.
const MODULEDATA: u64 = 0x100;
const ITAB: u64 = 0x300;
const TYPE: u64 = 0x340;
const ITABLINKS: u64 = 0x380;
const CANCELED: u64 = 0x390;
const DATA_LEN: u64 = 0x400;
const FUNC_ALIGN: u64 = 16;
/// Where the sections outside the segments start in the file.
pub(super) const FILE_DATA_START: u64 = DATA.1 + DATA_LEN;
pub(super) const MODULEDATA_ADDR: u64 = DATA.0 + MODULEDATA;
pub(super) const ITAB_ADDR: u64 = DATA.0 + ITAB;
pub(super) const CANCELED_ADDR: u64 = DATA.0 + CANCELED;

/// Addresses of the text, read-only and data segments.
pub(super) fn segment_addrs() -> (u64, u64, u64) {
    (TEXT.0, RODATA.0, DATA.0)
}

/// File offset of `addr` when it is in a segment.
pub(super) fn file_offset(addr: u64) -> Option<u64> {
    [TEXT, RODATA, DATA]
        .into_iter()
        .find(|(a, _, room)| (*a..a + room).contains(&addr))
        .map(|(a, off, _)| off + (addr - a))
}

const FUNCS: [&str; 15] = [
    "runtime.newproc",
    "runtime.newproc1",
    "runtime.gopark",
    "runtime.ready",
    "runtime.goexit1",
    "runtime.main",
    "main.main",
    "main.main.gowrap1",
    "main.worker",
    "context.(*cancelCtx).propagateCancel",
    "context.(*cancelCtx).cancel",
    "context.(*cancelCtx).Done",
    "errors.(*errorString).Error",
    "time.newTimer",
    "time.stopTimer",
];
const GOWRAP: usize = 7;
const WORKER: usize = 8;
const ERROR_METHOD: usize = 12;
const INLINED: &str = "main.helper";
const FILES: [&str; 3] = [
    "/usr/local/go/src/runtime/proc.go",
    "/app/main.go",
    "/usr/local/go/src/context/context.go",
];

fn cu_of(func: &str) -> u32 {
    if func.starts_with("runtime.") {
        0
    } else if func.starts_with("main.") {
        1
    } else {
        2
    }
}

fn line_of(i: usize) -> i32 {
    100 + 10 * i as i32
}

struct Code {
    bytes: Vec<u8>,
    /// (entry offset in .text, size without padding) per function.
    funcs: Vec<(u64, u64)>,
}

/// Every function: a frame set-up and a return; the wrapper calls the worker.
fn code(arch: Arch) -> Code {
    let mut bytes = Vec::new();
    let mut funcs = Vec::new();
    let worker = WORKER as u64 * FUNC_ALIGN;
    for i in 0..FUNCS.len() {
        let at = bytes.len() as u64;
        let body: Vec<u8> = match (arch, i == GOWRAP) {
            (Arch::X86_64, false) => vec![0x55, 0x48, 0x89, 0xe5, 0x90, 0x5d, 0xc3],
            (Arch::X86_64, true) => {
                let rel = (worker as i64 - (at as i64 + 5)) as i32;
                let mut b = vec![0xe8];
                b.extend(rel.to_le_bytes());
                b.push(0xc3);
                b
            }
            (Arch::Aarch64, wrapper) => {
                let first = if wrapper {
                    0x9400_0000 | (((worker as i64 - at as i64) / 4) as u32 & 0x03ff_ffff)
                } else {
                    0xa9bf_7bfd
                };
                [first, 0xd503_201f, 0xa8c1_7bfd, 0xd65f_03c0]
                    .iter()
                    .flat_map(|w| w.to_le_bytes())
                    .collect()
            }
        };
        funcs.push((at, body.len() as u64));
        bytes.extend(&body);
        bytes.resize((at + FUNC_ALIGN) as usize, 0xcc);
    }
    Code { bytes, funcs }
}

fn zigzag(v: i32) -> u32 {
    ((v << 1) ^ (v >> 31)) as u32
}

fn uvarint(out: &mut Vec<u8>, mut v: u32) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A pc-value table: (value, pc offset where it ends) rows; its offset.
fn pc_table(pctab: &mut Vec<u8>, rows: &[(i32, u64)], min_lc: u64) -> u32 {
    let off = pctab.len() as u32;
    let (mut value, mut pc) = (-1, 0);
    for &(v, end) in rows {
        uvarint(pctab, zigzag(v - value));
        uvarint(pctab, ((end - pc) / min_lc) as u32);
        (value, pc) = (v, end);
    }
    pctab.push(0);
    off
}

fn u32s(out: &mut Vec<u8>, words: &[u32]) {
    for w in words {
        out.extend(w.to_le_bytes());
    }
}

/// The `.rodata` (the inline tree, what `moduledata.gofunc` points at) and
/// the `.gopclntab` that follows it.
fn pclntab(code: &Code, go120: bool, text_start: u64, min_lc: u64) -> (Vec<u8>, Vec<u8>) {
    let mut names = Vec::new();
    let mut name_off = |name: &str| {
        let off = names.len() as u32;
        names.extend(name.as_bytes());
        names.push(0);
        off
    };
    let func_names: Vec<u32> = FUNCS.iter().map(|n| name_off(n)).collect();
    let inlined_name = name_off(INLINED);
    let mut filetab = Vec::new();
    let mut cutab = Vec::new();
    for f in FILES {
        u32s(&mut cutab, &[filetab.len() as u32]);
        filetab.extend(f.as_bytes());
        filetab.push(0);
    }
    u32s(&mut cutab, &[u32::MAX]);
    // Offset 0 of pctab means "no table".
    let mut pctab = vec![0];
    // The inline tree: main.helper inlined at the start of main.worker.
    let mut gofunc = Vec::new();
    if go120 {
        gofunc.extend([0u8; 4]);
        u32s(&mut gofunc, &[inlined_name, 4, line_of(WORKER) as u32 + 5]);
    } else {
        gofunc.extend([0xff, 0xff, 0, 0]);
        u32s(
            &mut gofunc,
            &[2, line_of(WORKER) as u32 + 5, inlined_name, 4],
        );
    }
    let func_len = if go120 { 44 } else { 40 };
    let nfunc = FUNCS.len();
    let mut functab = Vec::new();
    let mut func_structs = Vec::new();
    let structs_at = (nfunc * 8 + 4) as u32;
    for (i, &(entry, size)) in code.funcs.iter().enumerate() {
        let line = line_of(i);
        let pcfile = pc_table(&mut pctab, &[(0, size)], min_lc);
        let pcln = pc_table(&mut pctab, &[(line, 4), (line + 1, size)], min_lc);
        let inline = (i == WORKER).then(|| pc_table(&mut pctab, &[(0, 4), (-1, size)], min_lc));
        u32s(
            &mut functab,
            &[entry as u32, structs_at + func_structs.len() as u32],
        );
        let mut f = Vec::new();
        u32s(
            &mut f,
            &[entry as u32, func_names[i], 0, 0, 0, pcfile, pcln],
        );
        u32s(
            &mut f,
            &[if inline.is_some() { 3 } else { 0 }, cu_of(FUNCS[i])],
        );
        if go120 {
            u32s(&mut f, &[line as u32]);
        }
        f.extend([0, 0, 0, if inline.is_some() { 4 } else { 0 }]);
        debug_assert_eq!(f.len(), func_len);
        if let Some(inline) = inline {
            u32s(&mut f, &[0, 0, inline, u32::MAX, u32::MAX, u32::MAX, 0]);
        }
        func_structs.extend(f);
    }
    u32s(&mut functab, &[code.bytes.len() as u32]);
    functab.extend(func_structs);

    let mut tab = Vec::new();
    tab.extend(if go120 { 0xffff_fff1u32 } else { 0xffff_fff0 }.to_le_bytes());
    tab.extend([0, 0, min_lc as u8, 8]);
    let mut at = 72u64;
    let mut offsets = Vec::new();
    for part in [&names, &cutab, &filetab, &pctab] {
        offsets.push(at);
        at += part.len() as u64;
    }
    offsets.push(at);
    for word in [nfunc as u64, FILES.len() as u64, text_start]
        .into_iter()
        .chain(offsets)
    {
        tab.extend(word.to_le_bytes());
    }
    for part in [&names, &cutab, &filetab, &pctab, &functab] {
        tab.extend(part.iter());
    }
    (gofunc, tab)
}

/// The machine code of `.text`.
pub(super) fn text(arch: Arch) -> Vec<u8> {
    code(arch).bytes
}

/// (name, address, size) of every function.
pub(super) fn functions(arch: Arch) -> Vec<(&'static str, u64, u64)> {
    let code = code(arch);
    FUNCS
        .iter()
        .zip(code.funcs)
        .map(|(name, (entry, size))| (*name, TEXT.0 + entry, size))
        .collect()
}

pub(super) fn version(spec: &Spec) -> GoVersion {
    version_of(spec)
}

fn version_of(spec: &Spec) -> GoVersion {
    GoVersion::parse(spec.version)
}

fn layout_of(spec: &Spec) -> RuntimeLayout {
    layout_table::for_version(&version_of(spec))
        .or_else(|_| layout_table::for_version(&GoVersion::parse("go1.26.0")))
        .expect("the layout table has Go 1.26")
}

/// The data segment: build info, module data, an itab for `error`, its
/// `_type` (a pointer type), the itab links and `context.Canceled`.
fn data(spec: &Spec, pclntab_addr: u64, funcnames: u64, error_method: u64) -> Vec<u8> {
    let version = version_of(spec);
    let layout = layout_of(spec);
    let mut d = vec![0u8; DATA_LEN as usize];
    let mut put = |at: u64, word: u64| {
        d[at as usize..at as usize + 8].copy_from_slice(&word.to_le_bytes());
    };
    let md = MODULEDATA;
    put(md, pclntab_addr);
    put(md + 8, funcnames);
    put(md + 176, TEXT.0);
    put(
        md + moduledata_gofunc_offset(&version, !is_old(spec)),
        RODATA.0,
    );
    if let (Some(types), Some(off), Some(size)) = (
        layout.moduledata_types,
        layout.moduledata_itaboffset,
        layout.moduledata_itabsize,
    ) {
        put(md + types, DATA.0 + ITAB);
        put(md + off, 0);
        put(md + size, 32);
    } else if let Some(links) = layout.moduledata_itablinks {
        put(md + links, DATA.0 + ITABLINKS);
        put(md + links + 8, 1);
    }
    put(ITAB + 8, DATA.0 + TYPE);
    put(ITAB + 24, error_method);
    put(TYPE + layout.type_kind.unwrap_or(23), 22);
    put(ITABLINKS, DATA.0 + ITAB);
    put(CANCELED, DATA.0 + ITAB);
    let mut info = b"\xff Go buildinf:\x08\x02".to_vec();
    info.resize(32, 0);
    info.push(spec.version.len() as u8);
    info.extend(spec.version.as_bytes());
    info.push(0);
    d[..info.len()].copy_from_slice(&info);
    d
}

/// Before Go 1.20: the old pclntab format and `go.itab.` symbols.
pub(super) fn is_old(spec: &Spec) -> bool {
    !version_of(spec).at_least(1, 20)
}

/// `(struct, member, offset)` for every field gotrace reads from DWARF.
fn members(spec: &Spec) -> Vec<(&'static str, &'static str, Option<u64>)> {
    let l = layout_of(spec);
    let ty = if version_of(spec).at_least(1, 21) {
        ("internal/abi.Type", "Kind_")
    } else {
        ("runtime._type", "kind")
    };
    vec![
        ("runtime.g", "goid", Some(l.g_goid)),
        ("runtime.g", "parentGoid", l.g_parent_goid),
        ("runtime.g", "gopc", Some(l.g_gopc)),
        ("runtime.g", "startpc", Some(l.g_startpc)),
        ("runtime.g", "atomicstatus", Some(l.g_atomicstatus)),
        ("runtime.g", "waitreason", Some(l.g_waitreason)),
        ("runtime.g", "waitsince", Some(l.g_waitsince)),
        ("runtime.g", "sched", Some(l.g_sched)),
        ("runtime.g", "waiting", l.g_waiting),
        ("runtime.sudog", "c", l.sudog_c),
        ("runtime.sudog", "waitlink", l.sudog_waitlink),
        ("context.cancelCtx", "done", l.cancel_ctx_done),
        ("context.timerCtx", "deadline", l.timer_ctx_deadline),
        ("runtime.hchan", "closed", Some(20)),
        ("runtime.timer", "period", l.timer_period),
        ("runtime.timer", "f", l.timer_f),
        ("runtime.timer", "arg", l.timer_arg),
        ("runtime.moduledata", "itablinks", l.moduledata_itablinks),
        ("runtime.moduledata", "types", l.moduledata_types),
        ("runtime.moduledata", "itaboffset", l.moduledata_itaboffset),
        ("runtime.moduledata", "itabsize", l.moduledata_itabsize),
        ("runtime.moduledata", "text", l.moduledata_text),
        ("runtime.moduledata", "gofunc", l.moduledata_gofunc),
        ("internal/abi.InterfaceType", "Methods", l.interface_methods),
        (ty.0, ty.1, l.type_kind),
    ]
}

/// DWARF 4 sections by name: one compile unit covering the text.
pub fn dwarf(spec: &Spec) -> Vec<(&'static str, Vec<u8>)> {
    let code = code(spec.arch);
    let encoding = gimli::Encoding {
        format: gimli::Format::Dwarf32,
        version: 4,
        address_size: 8,
    };
    let mut dw = DwarfUnit::new(encoding);
    let string = |s: &str| AttributeValue::String(s.as_bytes().to_vec());
    let mut lines = LineProgram::new(
        encoding,
        gimli::LineEncoding::default(),
        LineString::String(b".".to_vec()),
        None,
        LineString::String(FILES[1].as_bytes().to_vec()),
        None,
    );
    let dir = lines.default_directory();
    let files: Vec<_> = FILES
        .iter()
        .map(|f| lines.add_file(LineString::String(f.as_bytes().to_vec()), dir, None))
        .collect();
    lines.begin_sequence(Some(Address::Constant(TEXT.0)));
    for (i, &(entry, size)) in code.funcs.iter().enumerate() {
        for (pc, line) in [(entry, line_of(i)), (entry + 4, line_of(i) + 1)] {
            let row = lines.row();
            row.address_offset = pc;
            row.file = files[cu_of(FUNCS[i]) as usize];
            row.line = line as u64;
            lines.generate_row();
        }
        let _ = size;
    }
    lines.end_sequence(code.bytes.len() as u64);
    dw.unit.line_program = lines;
    let root = dw.unit.root();
    let set = |dw: &mut DwarfUnit, id, attr, value| dw.unit.get_mut(id).set(attr, value);
    set(&mut dw, root, DW_AT_name, string("main"));
    set(
        &mut dw,
        root,
        constants::DW_AT_language,
        AttributeValue::Language(constants::DW_LANG_Go),
    );
    set(
        &mut dw,
        root,
        constants::DW_AT_low_pc,
        AttributeValue::Address(Address::Constant(TEXT.0)),
    );
    set(
        &mut dw,
        root,
        constants::DW_AT_high_pc,
        AttributeValue::Udata(code.bytes.len() as u64),
    );
    let helper = dw.unit.add(root, constants::DW_TAG_subprogram);
    set(&mut dw, helper, DW_AT_name, string(INLINED));
    set(
        &mut dw,
        helper,
        constants::DW_AT_inline,
        AttributeValue::Inline(constants::DW_INL_inlined),
    );
    for (i, &(entry, size)) in code.funcs.iter().enumerate() {
        let f = dw.unit.add(root, constants::DW_TAG_subprogram);
        set(&mut dw, f, DW_AT_name, string(FUNCS[i]));
        set(
            &mut dw,
            f,
            constants::DW_AT_low_pc,
            AttributeValue::Address(Address::Constant(TEXT.0 + entry)),
        );
        set(
            &mut dw,
            f,
            constants::DW_AT_high_pc,
            AttributeValue::Udata(size),
        );
        if i == WORKER {
            let call = dw.unit.add(f, constants::DW_TAG_inlined_subroutine);
            set(
                &mut dw,
                call,
                constants::DW_AT_abstract_origin,
                AttributeValue::UnitRef(helper),
            );
            set(
                &mut dw,
                call,
                constants::DW_AT_low_pc,
                AttributeValue::Address(Address::Constant(TEXT.0 + entry)),
            );
            set(
                &mut dw,
                call,
                constants::DW_AT_high_pc,
                AttributeValue::Udata(4),
            );
            set(
                &mut dw,
                call,
                constants::DW_AT_call_file,
                AttributeValue::Udata(2),
            );
            set(
                &mut dw,
                call,
                constants::DW_AT_call_line,
                AttributeValue::Udata(line_of(i) as u64),
            );
        }
    }
    let mut structs: Vec<(&str, gimli::write::UnitEntryId)> = Vec::new();
    for (strukt, member, offset) in members(spec) {
        let Some(offset) = offset else { continue };
        let parent = match structs.iter().find(|(s, _)| *s == strukt) {
            Some(&(_, id)) => id,
            None => {
                let id = dw.unit.add(root, constants::DW_TAG_structure_type);
                set(&mut dw, id, DW_AT_name, string(strukt));
                structs.push((strukt, id));
                id
            }
        };
        let m = dw.unit.add(parent, constants::DW_TAG_member);
        set(&mut dw, m, DW_AT_name, string(member));
        set(
            &mut dw,
            m,
            constants::DW_AT_data_member_location,
            AttributeValue::Udata(offset),
        );
    }
    for (value, name) in layout_of(spec).wait_reasons.iter().take(40) {
        let c = dw.unit.add(root, constants::DW_TAG_constant);
        set(&mut dw, c, DW_AT_name, string(&format!("runtime.{name}")));
        set(
            &mut dw,
            c,
            constants::DW_AT_const_value,
            AttributeValue::Udata(u64::from(*value)),
        );
    }
    let mut sections = Sections::new(EndianVec::new(gimli::LittleEndian));
    dw.write(&mut sections).expect("synthetic DWARF is valid");
    let mut out = Vec::new();
    sections
        .for_each(|id, data| {
            if !data.slice().is_empty() {
                out.push((id.name(), data.slice().to_vec()));
            }
            Ok::<_, gimli::Error>(())
        })
        .expect("infallible");
    out
}

/// The `pclntab` target's input: the read-only and data segments as one
/// memory image after their base address.
pub fn pclntab_image(spec: &Spec) -> Vec<u8> {
    let (rodata, pclntab, data) = segments(spec);
    let mut image = RODATA.0.to_le_bytes().to_vec();
    image.extend(&rodata);
    image.extend(&pclntab);
    image.resize(8 + (DATA.0 - RODATA.0) as usize, 0);
    image.extend(&data);
    image
}

/// The `dwarf_layout` target's input (see [`super::DWARF_SECTIONS`]).
pub fn dwarf_container(spec: &Spec) -> Vec<u8> {
    let sections = dwarf(spec);
    let mut out = Vec::new();
    for id in super::DWARF_SECTIONS {
        let bytes = sections
            .iter()
            .find(|(name, _)| *name == id.name())
            .map_or(&[][..], |(_, b)| b);
        out.extend((bytes.len() as u32).to_le_bytes());
        out.extend(bytes);
    }
    out
}

/// The read-only segment's `.rodata` (the inline tree, where
/// `moduledata.gofunc` points, padded to 8 bytes) and `.gopclntab` after
/// it, then the data segment.
pub(super) fn segments(spec: &Spec) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let code = code(spec.arch);
    let go120 = !is_old(spec);
    let text_start = if version_of(spec).at_least(1, 26) {
        0
    } else {
        TEXT.0
    };
    let min_lc = if spec.arch == Arch::Aarch64 { 4 } else { 1 };
    let (mut rodata, tab) = pclntab(&code, go120, text_start, min_lc);
    rodata.resize(rodata.len().next_multiple_of(8), 0);
    assert!(
        (rodata.len() + tab.len()) as u64 <= RODATA.2,
        "rodata overflows"
    );
    assert!(code.bytes.len() as u64 <= TEXT.2, "text overflows");
    let pclntab_addr = RODATA.0 + rodata.len() as u64;
    let error_method = TEXT.0 + code.funcs[ERROR_METHOD].0;
    let data = data(spec, pclntab_addr, pclntab_addr + 72, error_method);
    (rodata, tab, data)
}
