//! The ELF writer of [`synth`](super::synth): a 64-bit little-endian
//! executable with three `PT_LOAD` segments and named sections.

use std::io::Write as _;

use super::synth::{self, Spec};
use crate::gobin::Arch;

/// One section: name, `sh_type`, `sh_flags`, address (0: not loaded),
/// contents, and for `.symtab` the index of its string table.
struct Section {
    name: String,
    kind: u32,
    flags: u64,
    addr: u64,
    data: Vec<u8>,
    link: u32,
    entsize: u64,
}

const SHT_PROGBITS: u32 = 1;
const SHT_SYMTAB: u32 = 2;
const SHT_STRTAB: u32 = 3;
const SHT_NOTE: u32 = 7;
const SHF_WRITE: u64 = 1;
const SHF_ALLOC: u64 = 2;
const SHF_EXEC: u64 = 4;
const SHF_COMPRESSED: u64 = 0x800;

fn section(name: &str, kind: u32, flags: u64, addr: u64, data: Vec<u8>) -> Section {
    Section {
        name: name.to_string(),
        kind,
        flags,
        addr,
        data,
        link: 0,
        entsize: 0,
    }
}

/// `data` as an `SHF_COMPRESSED` section body (zlib, `Elf64_Chdr`).
fn compress(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend(1u32.to_le_bytes());
    out.extend(0u32.to_le_bytes());
    out.extend((data.len() as u64).to_le_bytes());
    out.extend(1u64.to_le_bytes());
    let mut z = flate2::write::ZlibEncoder::new(out, flate2::Compression::best());
    z.write_all(data).expect("writing to memory");
    z.finish().expect("writing to memory")
}

/// The `.note.go.buildid` note.
fn build_id_note() -> Vec<u8> {
    let id = b"synthetic-build-id/abcdefghijklmnopqrst/0123456789";
    let mut n = Vec::new();
    for word in [4, id.len() as u32, 4] {
        n.extend(word.to_le_bytes());
    }
    n.extend(b"Go\0\0");
    n.extend(id);
    n.resize(n.len().next_multiple_of(4), 0);
    n
}

/// `.symtab` and `.strtab`: every function, the module data, the itab and
/// `context.Canceled`.
fn symbols(spec: &Spec, text_index: u16, data_index: u16) -> (Vec<u8>, Vec<u8>) {
    let mut strtab = vec![0u8];
    let mut symtab = vec![0u8; 24];
    let mut sym = |name: &str, kind: u8, shndx: u16, value: u64, size: u64| {
        let name_off = strtab.len() as u32;
        strtab.extend(name.as_bytes());
        strtab.push(0);
        symtab.extend(name_off.to_le_bytes());
        symtab.extend([0x10 | kind, 0]);
        symtab.extend(shndx.to_le_bytes());
        symtab.extend(value.to_le_bytes());
        symtab.extend(size.to_le_bytes());
    };
    for (name, addr, size) in synth::functions(spec.arch) {
        sym(name, 2, text_index, addr, size);
    }
    let itab_prefix = if synth::is_old(spec) {
        "go.itab."
    } else {
        "go:itab."
    };
    for (name, addr) in [
        (
            "runtime.firstmoduledata".to_string(),
            synth::MODULEDATA_ADDR,
        ),
        (
            format!("{itab_prefix}*errors.errorString,error"),
            synth::ITAB_ADDR,
        ),
        ("context.Canceled".to_string(), synth::CANCELED_ADDR),
    ] {
        sym(&name, 1, data_index, addr, 8);
    }
    (symtab, strtab)
}

/// A synthetic Go executable (see [`synth`](super::synth)).
pub fn build(spec: &Spec) -> Vec<u8> {
    let (rodata, pclntab, data) = synth::segments(spec);
    let (text_addr, rodata_addr, data_addr) = synth::segment_addrs();
    let go126 = synth::version(spec).at_least(1, 26);
    let mut sections = vec![
        section("", 0, 0, 0, Vec::new()),
        section(
            ".text",
            SHT_PROGBITS,
            SHF_ALLOC | SHF_EXEC,
            text_addr,
            synth::text(spec.arch),
        ),
        section(
            ".rodata",
            SHT_PROGBITS,
            SHF_ALLOC,
            rodata_addr,
            rodata.clone(),
        ),
        section(
            ".gopclntab",
            SHT_PROGBITS,
            SHF_ALLOC,
            rodata_addr + rodata.len() as u64,
            pclntab.clone(),
        ),
        section(
            ".go.buildinfo",
            SHT_PROGBITS,
            SHF_ALLOC | SHF_WRITE,
            data_addr,
            data[..0x100].to_vec(),
        ),
        section(
            if go126 { ".go.module" } else { ".noptrdata" },
            SHT_PROGBITS,
            SHF_ALLOC | SHF_WRITE,
            data_addr + 0x100,
            data[0x100..].to_vec(),
        ),
        section(".note.go.buildid", SHT_NOTE, 0, 0, build_id_note()),
    ];
    if spec.symbols {
        for (name, bytes) in synth::dwarf(spec) {
            let (flags, bytes) = if spec.compress {
                (SHF_COMPRESSED, compress(&bytes))
            } else {
                (0, bytes)
            };
            sections.push(section(name, SHT_PROGBITS, flags, 0, bytes));
        }
        let (symtab, strtab) = symbols(spec, 1, 5);
        let strtab_index = sections.len() as u32 + 1;
        let mut s = section(".symtab", SHT_SYMTAB, 0, 0, symtab);
        s.link = strtab_index;
        s.entsize = 24;
        sections.push(s);
        sections.push(section(".strtab", SHT_STRTAB, 0, 0, strtab));
    }
    let mut shstrtab = vec![0u8];
    let mut name_offs = Vec::new();
    for s in &sections {
        name_offs.push(if s.name.is_empty() {
            0
        } else {
            shstrtab.len() as u32
        });
        if !s.name.is_empty() {
            shstrtab.extend(s.name.as_bytes());
            shstrtab.push(0);
        }
    }
    name_offs.push(shstrtab.len() as u32);
    shstrtab.extend(b".shstrtab\0");
    sections.push(section(".shstrtab", SHT_STRTAB, 0, 0, shstrtab));

    // Loaded sections sit at their segment's file offset; the rest follow.
    let mut file = vec![0u8; synth::FILE_DATA_START as usize];
    let mut offsets = Vec::new();
    for s in &sections {
        let off = match synth::file_offset(s.addr) {
            Some(off) if s.flags & SHF_ALLOC != 0 => off,
            _ => file.len().next_multiple_of(8) as u64,
        };
        let end = off as usize + s.data.len();
        if file.len() < end {
            file.resize(end, 0);
        }
        file[off as usize..end].copy_from_slice(&s.data);
        offsets.push(off);
    }
    let shoff = file.len().next_multiple_of(8) as u64;
    file.resize(shoff as usize, 0);
    for (i, s) in sections.iter().enumerate() {
        let size = if i == 0 { 0 } else { s.data.len() as u64 };
        file.extend(name_offs[i].to_le_bytes());
        file.extend(s.kind.to_le_bytes());
        file.extend(s.flags.to_le_bytes());
        file.extend(s.addr.to_le_bytes());
        file.extend(if i == 0 { 0 } else { offsets[i] }.to_le_bytes());
        file.extend(size.to_le_bytes());
        file.extend(s.link.to_le_bytes());
        file.extend(u32::from(s.kind == SHT_SYMTAB).to_le_bytes());
        file.extend(8u64.to_le_bytes());
        file.extend(s.entsize.to_le_bytes());
    }

    let mut head = Vec::new();
    head.extend(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    head.extend(2u16.to_le_bytes());
    head.extend(
        match spec.arch {
            Arch::X86_64 => 62u16,
            Arch::Aarch64 => 183,
        }
        .to_le_bytes(),
    );
    head.extend(1u32.to_le_bytes());
    head.extend(text_addr.to_le_bytes());
    head.extend(64u64.to_le_bytes());
    head.extend(shoff.to_le_bytes());
    head.extend(0u32.to_le_bytes());
    for half in [
        64u16,
        56,
        3,
        64,
        sections.len() as u16,
        sections.len() as u16 - 1,
    ] {
        head.extend(half.to_le_bytes());
    }
    let text_len = sections[1].data.len() as u64;
    let rodata_len = (rodata.len() + pclntab.len()) as u64;
    for (flags, addr, len) in [
        (5u32, text_addr, text_len),
        (4, rodata_addr, rodata_len),
        (6, data_addr, data.len() as u64),
    ] {
        head.extend(1u32.to_le_bytes());
        head.extend(flags.to_le_bytes());
        head.extend(synth::file_offset(addr).unwrap_or(0).to_le_bytes());
        head.extend(addr.to_le_bytes());
        head.extend(addr.to_le_bytes());
        head.extend(len.to_le_bytes());
        head.extend(len.to_le_bytes());
        head.extend(0x1000u64.to_le_bytes());
    }
    file[..head.len()].copy_from_slice(&head);
    file
}
