//! The Go pclntab (`runtime.pcHeader` and the tables after it): function
//! names, entries and sizes, and pc → file:line with inlined frames, for
//! binaries without `.symtab` and DWARF (`-ldflags=-s -w`).
//!
//! Formats: magic 0xfffffff0 (Go 1.18–1.19) and 0xfffffff1 (1.20+, adds
//! `_func.startLine` and a smaller `inlinedCall`). `pcHeader.textStart` is 0
//! from Go 1.26: then the text base is `moduledata.text` (or `.text`).

use std::sync::Arc;

use object::{Object, ObjectSection, ObjectSegment, SegmentFlags};

mod funcs;
mod lines;

pub use funcs::{
    ARGS_SIZE_UNKNOWN, FUNC_FLAG_SP_WRITE, FUNC_FLAG_TOP_FRAME, Func, StackMap, StackObject,
};

use super::buildinfo::GoVersion;
use super::symbols::FuncSymbol;

/// The file's bytes, shared (the memory map of a [`GoBinary`](super::GoBinary)).
pub type Bytes = Arc<dyn AsRef<[u8]> + Send + Sync>;

const MAGIC_GO118: u32 = 0xffff_fff0;
const MAGIC_GO120: u32 = 0xffff_fff1;
/// `runtime.pcHeader` with 8-byte pointers.
const HEADER_LEN: usize = 72;
const SECTION_NAMES: [&str; 2] = [".gopclntab", ".data.rel.ro.gopclntab"];
/// `runtime.moduledata.text` (the same offset in every Go 1.18+ release).
const MODULEDATA_TEXT: u64 = 176;

/// Offset of `runtime.moduledata.gofunc` (checked against DWARF in tests):
/// 1.20 added `covctrs, ecovctrs`, 1.27 `typedesclen, itaboffset, itabsize`.
pub fn moduledata_gofunc_offset(version: &GoVersion, go120: bool) -> u64 {
    if version.at_least(1, 27) {
        344
    } else if go120 {
        320
    } else {
        304
    }
}

#[derive(Clone, Copy, Debug)]
struct Segment {
    addr: u64,
    offset: u64,
    filesz: u64,
    writable: bool,
}

/// A parsed pclntab. Owns (a share of) the file's bytes; `Send + Sync`.
pub struct Pclntab {
    data: Bytes,
    segments: Vec<Segment>,
    /// Virtual address and file offset of the `pcHeader`.
    addr: u64,
    hdr_off: usize,
    go120: bool,
    min_lc: u64,
    nfunc: usize,
    text: u64,
    // File offsets of the tables.
    funcnames: usize,
    cutab: usize,
    filetab: usize,
    pctab: usize,
    functab: usize,
    moduledata: Option<u64>,
    gofunc: Option<u64>,
}

impl std::fmt::Debug for Pclntab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pclntab")
            .field("addr", &format_args!("{:#x}", self.addr))
            .field("go120", &self.go120)
            .field("nfunc", &self.nfunc)
            .field("text", &format_args!("{:#x}", self.text))
            .field("moduledata", &self.moduledata)
            .field("gofunc", &self.gofunc)
            .finish()
    }
}

/// One entry of the function table.
#[derive(Clone, Copy, Debug)]
struct FuncEntry {
    entry: u64,
    /// The next function's entry (or the end of the text).
    next: u64,
    /// File offset of the `runtime._func`.
    off: usize,
}

/// The `runtime._func` fields we use.
#[derive(Clone, Copy, Debug)]
struct FuncInfo {
    entry: u64,
    name_off: u32,
    /// Bytes of arguments and results (`abi.ArgsSizeUnknown` for some
    /// assembly and reflect stubs).
    args: i32,
    /// Offset from the entry of the function's `deferreturn` call (0: none).
    deferreturn: u32,
    pcsp: u32,
    /// `abi.FuncFlag` bits.
    flag: u8,
    pcfile: u32,
    pcln: u32,
    cu_offset: u32,
    /// File offset of `pcdata[0]` and the counts of both trailing arrays.
    pcdata: usize,
    npcdata: u32,
    nfuncdata: u8,
}

impl Pclntab {
    /// Finds and parses the pclntab of `obj`, whose bytes are `data`: the
    /// `.gopclntab` section, or else the first valid header found by its magic
    /// in the file's segments.
    pub fn parse<'a>(
        obj: &impl Object<'a>,
        data: Bytes,
        version: &GoVersion,
    ) -> Result<Self, String> {
        let segments: Vec<Segment> = obj
            .segments()
            .map(|s| {
                let (offset, filesz) = s.file_range();
                let writable = match s.flags() {
                    SegmentFlags::Elf { p_flags, .. } => p_flags.contains(object::elf::PF_W),
                    _ => false,
                };
                Segment {
                    addr: s.address(),
                    offset,
                    filesz,
                    writable,
                }
            })
            .collect();
        let section = SECTION_NAMES
            .iter()
            .find_map(|n| obj.section_by_name(n))
            .and_then(|s| Some((s.file_range()?.0 as usize, s.address())));
        let go_module = obj.section_by_name(".go.module").map(|s| s.address());
        let text_section = obj.section_by_name(".text").map(|s| s.address());
        Self::locate(data, segments, section, go_module, text_section, version)
    }

    /// A pclntab found by its magic in `data`, which is mapped whole as one
    /// writable segment at `addr` (the fuzz target's view of a memory image).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn from_image(data: Bytes, addr: u64, version: &GoVersion) -> Result<Self, String> {
        let segments = vec![Segment {
            addr,
            offset: 0,
            filesz: (*data).as_ref().len() as u64,
            writable: true,
        }];
        Self::locate(data, segments, None, None, Some(addr), version)
    }

    /// Parses the header at `section` (file offset, vaddr) or else the first
    /// one found by its magic, then finds the module data and text base.
    fn locate(
        data: Bytes,
        segments: Vec<Segment>,
        section: Option<(usize, u64)>,
        go_module: Option<u64>,
        text_section: Option<u64>,
        version: &GoVersion,
    ) -> Result<Self, String> {
        let bytes = (*data).as_ref();
        let (off, addr) = match section {
            Some(found) => found,
            None => search_magic(bytes, &segments)
                .ok_or("no .gopclntab section and no pclntab magic")?,
        };
        let mut tab = Self::from_header(data.clone(), segments, off, addr)?;
        tab.moduledata = tab.find_moduledata(go_module);
        let text_start = tab.u64_at(off + 24).unwrap_or(0);
        let md_text = tab
            .moduledata
            .and_then(|md| tab.read_u64(md.checked_add(MODULEDATA_TEXT)?));
        // Go 1.26+ leaves textStart 0; with cgo, .text starts with C code,
        // so moduledata.text comes before the section's address.
        tab.text = [Some(text_start), md_text, text_section]
            .into_iter()
            .flatten()
            .find(|&t| t != 0)
            .ok_or("pcHeader.textStart is 0 and neither moduledata nor .text was found")?;
        let gofunc_off = moduledata_gofunc_offset(version, tab.go120);
        tab.gofunc = tab
            .moduledata
            .and_then(|md| tab.read_u64(md.checked_add(gofunc_off)?))
            .filter(|&g| tab.file_offset(g).is_some());
        Ok(tab)
    }

    /// Validates the header at file offset `off` (vaddr `addr`).
    fn from_header(
        data: Bytes,
        segments: Vec<Segment>,
        off: usize,
        addr: u64,
    ) -> Result<Self, String> {
        let bytes = (*data).as_ref();
        let file_len = bytes.len();
        let hdr: [u8; HEADER_LEN] = off
            .checked_add(HEADER_LEN)
            .and_then(|end| bytes.get(off..end))
            .and_then(|h| h.try_into().ok())
            .ok_or("pclntab header out of the file")?;
        let word = |i: usize| u64::from_le_bytes(hdr[i..i + 8].try_into().expect("8 bytes"));
        let magic = u32::from_le_bytes(hdr[..4].try_into().expect("4 bytes"));
        let go120 = match magic {
            MAGIC_GO118 => false,
            MAGIC_GO120 => true,
            m => {
                return Err(format!(
                    "unsupported pclntab magic {m:#x} (Go 1.18+ is needed)"
                ));
            }
        };
        if hdr[4] != 0 || hdr[5] != 0 || !matches!(hdr[6], 1 | 2 | 4) || hdr[7] != 8 {
            return Err(format!("bad pclntab header {:02x?}", &hdr[4..8]));
        }
        let nfunc = usize::try_from(word(8)).map_err(|_| "bad nfunc")?;
        let offs = [word(32), word(40), word(48), word(56), word(64)];
        let in_file = |o: u64| {
            usize::try_from(o)
                .ok()
                .and_then(|o| off.checked_add(o))
                .filter(|&o| o < file_len)
        };
        let [
            Some(funcnames),
            Some(cutab),
            Some(filetab),
            Some(pctab),
            Some(functab),
        ] = offs.map(in_file)
        else {
            return Err("pclntab table offsets out of the file".into());
        };
        let functab_end = nfunc
            .checked_mul(8)
            .and_then(|n| n.checked_add(functab + 8));
        if nfunc == 0 || functab_end.is_none_or(|e| e > file_len) {
            return Err(format!("bad pclntab function count {nfunc}"));
        }
        Ok(Pclntab {
            data,
            segments,
            addr,
            hdr_off: off,
            go120,
            min_lc: u64::from(hdr[6]),
            nfunc,
            text: 0,
            funcnames,
            cutab,
            filetab,
            pctab,
            functab,
            moduledata: None,
            gofunc: None,
        })
    }

    /// `runtime.firstmoduledata`: the `.go.module` section (Go 1.26+) or the
    /// word in writable data that points at the header, followed by the
    /// `funcnametab` slice.
    fn find_moduledata(&self, go_module: Option<u64>) -> Option<u64> {
        let funcnames = self
            .addr
            .checked_add((self.funcnames - self.hdr_off) as u64)?;
        let is_md = |md: u64| {
            self.read_u64(md) == Some(self.addr)
                && md
                    .checked_add(8)
                    .is_some_and(|m| self.read_u64(m) == Some(funcnames))
        };
        if let Some(md) = go_module.filter(|&md| is_md(md)) {
            return Some(md);
        }
        let bytes = self.bytes();
        let (want0, want1) = (self.addr.to_le_bytes(), funcnames.to_le_bytes());
        for seg in self.segments.iter().filter(|s| s.writable) {
            let start = seg.offset as usize;
            let Some(region) = bytes.get(start..start.saturating_add(seg.filesz as usize)) else {
                continue;
            };
            let skew = (8 - (seg.addr % 8) as usize) % 8;
            let Some(aligned) = region.get(skew..) else {
                continue;
            };
            let hit = aligned.chunks_exact(8).enumerate().find(|(i, w)| {
                *w == want0 && aligned.get((i + 1) * 8..(i + 2) * 8) == Some(&want1[..])
            });
            if let Some(md) = hit.and_then(|(i, _)| seg.addr.checked_add((skew + 8 * i) as u64)) {
                return Some(md);
            }
        }
        None
    }

    fn bytes(&self) -> &[u8] {
        (*self.data).as_ref()
    }

    fn u32_at(&self, off: usize) -> Option<u32> {
        Some(u32::from_le_bytes(
            self.bytes()
                .get(off..off.checked_add(4)?)?
                .try_into()
                .ok()?,
        ))
    }

    fn u64_at(&self, off: usize) -> Option<u64> {
        Some(u64::from_le_bytes(
            self.bytes()
                .get(off..off.checked_add(8)?)?
                .try_into()
                .ok()?,
        ))
    }

    fn cstr_at(&self, off: usize) -> Option<String> {
        let rest = self.bytes().get(off..)?;
        let len = rest.iter().position(|&b| b == 0)?;
        Some(String::from_utf8_lossy(&rest[..len]).into_owned())
    }

    /// File offset of a virtual address of initialised data.
    pub fn file_offset(&self, vaddr: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|s| vaddr >= s.addr && vaddr - s.addr < s.filesz)
            .and_then(|s| s.offset.checked_add(vaddr - s.addr))
    }

    fn read_u64(&self, vaddr: u64) -> Option<u64> {
        self.u64_at(usize::try_from(self.file_offset(vaddr)?).ok()?)
    }

    /// Number of functions.
    pub fn len(&self) -> usize {
        self.nfunc
    }

    pub fn is_empty(&self) -> bool {
        self.nfunc == 0
    }

    /// Virtual address of `runtime.pcHeader`.
    pub fn address(&self) -> u64 {
        self.addr
    }

    /// The base of function entry offsets (`moduledata.text`).
    pub fn text_start(&self) -> u64 {
        self.text
    }

    /// Address of `runtime.firstmoduledata`, when found.
    pub fn moduledata(&self) -> Option<u64> {
        self.moduledata
    }

    /// True when inlined frames can be resolved (`moduledata.gofunc` found).
    pub fn has_inline_tree(&self) -> bool {
        self.gofunc.is_some()
    }

    /// True for the Go 1.20+ format (magic 0xfffffff1).
    pub fn is_go120(&self) -> bool {
        self.go120
    }

    fn entry(&self, i: usize) -> Option<FuncEntry> {
        let at = self.functab + 8 * i;
        let entry = self.text.checked_add(u64::from(self.u32_at(at)?))?;
        let off = self.functab.checked_add(self.u32_at(at + 4)? as usize)?;
        let next = self.text.checked_add(u64::from(self.u32_at(at + 8)?))?;
        Some(FuncEntry { entry, next, off })
    }

    /// The function whose `[entry, next entry)` contains `pc`.
    fn lookup(&self, pc: u64) -> Option<FuncEntry> {
        let rel = u32::try_from(pc.checked_sub(self.text)?).ok()?;
        let end = self.u32_at(self.functab + 8 * self.nfunc)?;
        if rel >= end {
            return None;
        }
        // Last i with entryoff(i) <= rel.
        let (mut lo, mut hi) = (0, self.nfunc);
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if self.u32_at(self.functab + 8 * mid)? <= rel {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        self.entry(lo).filter(|f| f.entry <= pc)
    }

    /// The `runtime._func` at `f.off`. Its layout is the pclntab format's
    /// (the same in every Go 1.18+ release): u32 words `entryOff, nameOff,
    /// args, deferreturn, pcsp, pcfile, pcln, npcdata, cuOffset`, then
    /// `startLine` (1.20+), then the bytes `funcID, flag, _, nfuncdata`.
    fn info(&self, f: FuncEntry) -> Option<FuncInfo> {
        let u = |i: usize| self.u32_at(f.off + i);
        let hdr = if self.go120 { 44 } else { 40 };
        Some(FuncInfo {
            entry: self.text.checked_add(u64::from(u(0)?))?,
            name_off: u(4)?,
            args: u(8)? as i32,
            deferreturn: u(12)?,
            pcsp: u(16)?,
            flag: *self.bytes().get(f.off + hdr - 3)?,
            pcfile: u(20)?,
            pcln: u(24)?,
            npcdata: u(28)?,
            cu_offset: u(32)?,
            nfuncdata: *self.bytes().get(f.off + hdr - 1)?,
            pcdata: f.off + hdr,
        })
    }

    fn name(&self, name_off: u32) -> Option<String> {
        self.cstr_at(self.funcnames.checked_add(name_off as usize)?)
    }

    /// Every function: name, entry and size. The size is where the
    /// function's line table ends (the code without the alignment padding,
    /// as in `.symtab`), else up to the next function.
    pub fn functions(&self) -> Vec<FuncSymbol> {
        (0..self.nfunc)
            .filter_map(|i| {
                let f = self.entry(i)?;
                let info = self.info(f)?;
                let end = self
                    .table_end(info.pcln, f.entry)
                    .filter(|&e| e > f.entry && e <= f.next);
                Some(FuncSymbol {
                    name: self.name(info.name_off)?,
                    addr: f.entry,
                    // A corrupt function table may not be sorted.
                    size: end.unwrap_or(f.next).saturating_sub(f.entry),
                })
            })
            .collect()
    }
}

/// Looks for a valid pcHeader at 8-aligned offsets of the file's segments.
fn search_magic(bytes: &[u8], segments: &[Segment]) -> Option<(usize, u64)> {
    for seg in segments {
        let start = seg.offset as usize;
        let Some(region) = bytes.get(start..start.saturating_add(seg.filesz as usize)) else {
            continue;
        };
        let skew = (8 - (seg.addr % 8) as usize) % 8;
        for at in (skew..region.len().saturating_sub(HEADER_LEN)).step_by(8) {
            let m = u32::from_le_bytes(region[at..at + 4].try_into().expect("4 bytes"));
            if (m == MAGIC_GO118 || m == MAGIC_GO120)
                && valid_header(&region[at..], region.len() - at)
                && let Some(addr) = seg.addr.checked_add(at as u64)
            {
                return Some((start + at, addr));
            }
        }
    }
    None
}

/// A plausible header: pads 0, pointer size 8, ascending table offsets
/// inside the region.
fn valid_header(h: &[u8], room: usize) -> bool {
    let word = |i: usize| u64::from_le_bytes(h[i..i + 8].try_into().expect("8 bytes"));
    let offs = [
        HEADER_LEN as u64,
        word(32),
        word(40),
        word(48),
        word(56),
        word(64),
    ];
    h[4] == 0
        && h[5] == 0
        && matches!(h[6], 1 | 2 | 4)
        && h[7] == 8
        && word(8) > 0
        && offs.windows(2).all(|w| w[0] <= w[1])
        && word(64).saturating_add(word(8).saturating_mul(8)) < room as u64
}
