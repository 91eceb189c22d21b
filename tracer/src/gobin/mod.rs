//! Analysis of Go ELF binaries: build info, symbols, runtime struct layout
//! (from DWARF), return-instruction addresses for uprobes, and symbolization.
//!
//! Stripped binaries (`-ldflags=-s -w`) work too: functions and source lines
//! come from the Go pclntab, the runtime layout from a per-version table.

pub mod buildinfo;
mod dwarf;
pub(crate) mod dwarf_index;
pub mod frame;
pub mod globals;
mod heap_globals;
pub mod heap_layout;
mod itabs;
pub mod layout;
pub mod layout_table;
pub mod pclntab;
pub mod rets;
pub mod stackmaps;
pub mod symbolize;
pub mod symbols;
#[cfg(any(test, feature = "fuzzing"))]
pub mod testutil;
pub mod wrappers;

#[cfg(test)]
mod heap_layout_tests;
#[cfg(test)]
mod strip_tests;
#[cfg(test)]
mod tests;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use memmap2::Mmap;
use object::read::elf::{ElfFile64, FileHeader};
use object::{Endianness, Object, ObjectSection, ObjectSegment};

/// Errors from opening or analysing a Go binary.
#[derive(Debug, thiserror::Error)]
pub enum BinaryError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not an ELF file: {path}")]
    NotElf { path: PathBuf },
    #[error("malformed ELF file {path}: {msg}")]
    BadElf { path: PathBuf, msg: String },
    #[error("not a Go binary (no .go.buildinfo section): {path}")]
    NotGo { path: PathBuf },
    #[error("invalid Go build info: {0}")]
    BadBuildInfo(String),
    #[error("Go version too old (before 1.18)")]
    GoTooOld,
    #[error("no DWARF debug info in {path} (stripped binary)")]
    NoDwarf { path: PathBuf },
    #[error("cannot parse DWARF in {path}: {msg}")]
    BadDwarf { path: PathBuf, msg: String },
    #[error("runtime.g not found in DWARF")]
    NoRuntimeG,
    #[error("missing field runtime.g.{0}")]
    MissingField(String),
    #[error("{0} not found in the binary's DWARF")]
    NotInDwarf(String),
    #[error("symbol {0} not found")]
    SymbolNotFound(String),
    #[error("code of {name} at {addr:#x} is not in any section of the file")]
    CodeNotInFile { name: String, addr: u64 },
    #[error("unsupported architecture {0}")]
    UnsupportedArch(String),
    #[error(
        "Go {version} {relation} gotrace's runtime layout table ({table}) and the binary has no \
         DWARF: rebuild without -w, or update gotrace"
    )]
    NotInLayoutTable {
        version: String,
        relation: &'static str,
        table: String,
    },
    #[error("gotrace's runtime layout table is corrupt: {0}")]
    BadLayoutTable(String),
}

/// CPU architecture of a binary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        })
    }
}

type Elf<'a> = ElfFile64<'a, Endianness>;

/// An opened Go ELF executable (memory-mapped, or bytes already in memory).
pub struct GoBinary {
    path: PathBuf,
    data: pclntab::Bytes,
    arch: Arch,
    version: buildinfo::GoVersion,
    pie: bool,
    symbols: Arc<symbols::SymbolTable>,
    /// Parsed on first use (at open when `.symtab` has no functions).
    pclntab: OnceLock<Option<Arc<pclntab::Pclntab>>>,
}

impl std::fmt::Debug for GoBinary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GoBinary")
            .field("path", &self.path)
            .field("arch", &self.arch)
            .field("version", &self.version.raw)
            .field("pie", &self.pie)
            .field("symbols", &self.symbols.len())
            .finish()
    }
}

impl GoBinary {
    /// Maps `path` and reads its architecture, Go version and symbol table.
    pub fn open(path: &Path) -> Result<GoBinary, BinaryError> {
        let io_err = |source| BinaryError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io_err)?;
        // SAFETY: the file is mapped read-only; like every tool reading
        // executables we accept that a concurrent truncation could fault.
        let data = unsafe { Mmap::map(&file) }.map_err(io_err)?;
        GoBinary::from_shared(path, Arc::new(data))
    }

    /// Like [`open`](Self::open), on the file's contents already in memory;
    /// `path` only names the binary in messages.
    pub fn from_bytes(path: &Path, data: Vec<u8>) -> Result<GoBinary, BinaryError> {
        GoBinary::from_shared(path, Arc::new(data))
    }

    fn from_shared(path: &Path, data: pclntab::Bytes) -> Result<GoBinary, BinaryError> {
        let mut bin = GoBinary {
            path: path.to_path_buf(),
            data,
            arch: Arch::X86_64,
            version: buildinfo::GoVersion::default(),
            pie: false,
            symbols: Arc::new(symbols::SymbolTable::default()),
            pclntab: OnceLock::new(),
        };
        let (arch, version, pie, symbols) = {
            let elf = bin.elf()?;
            let hdr = elf.elf_header();
            let arch = match elf.architecture() {
                object::Architecture::X86_64 => Arch::X86_64,
                object::Architecture::Aarch64 => Arch::Aarch64,
                other => return Err(BinaryError::UnsupportedArch(format!("{other:?}"))),
            };
            if !elf.is_little_endian() {
                return Err(BinaryError::UnsupportedArch(format!("{arch} big-endian")));
            }
            let pie = hdr.e_type(elf.endian()) == object::elf::ET_DYN;
            let section =
                elf.section_by_name(".go.buildinfo")
                    .ok_or_else(|| BinaryError::NotGo {
                        path: path.to_path_buf(),
                    })?;
            let sdata = section.data().map_err(|e| bin.bad_elf(e))?;
            let version = buildinfo::parse_buildinfo(sdata)?;
            (arch, version, pie, symbols::SymbolTable::from_object(&elf))
        };
        bin.arch = arch;
        bin.version = version;
        bin.pie = pie;
        bin.symbols = Arc::new(symbols);
        if bin.symbols.is_empty()
            && let Some(p) = bin.pclntab()
        {
            bin.symbols = Arc::new(symbols::SymbolTable::from_funcs(p.functions()));
        }
        Ok(bin)
    }

    /// Parses the mapped file (cheap: only headers are read).
    fn elf(&self) -> Result<Elf<'_>, BinaryError> {
        let data = self.bytes();
        if !data.starts_with(b"\x7fELF") {
            return Err(BinaryError::NotElf {
                path: self.path.clone(),
            });
        }
        match object::FileKind::parse(data) {
            Ok(object::FileKind::Elf64) => {}
            Ok(object::FileKind::Elf32) => {
                return Err(BinaryError::UnsupportedArch("32-bit ELF".into()));
            }
            _ => {
                return Err(BinaryError::NotElf {
                    path: self.path.clone(),
                });
            }
        }
        Elf::parse(data).map_err(|e| self.bad_elf(e))
    }

    fn bytes(&self) -> &[u8] {
        (*self.data).as_ref()
    }

    fn bad_elf(&self, e: object::Error) -> BinaryError {
        BinaryError::BadElf {
            path: self.path.clone(),
            msg: e.to_string(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The Go build id (`.note.go.buildid`, what `go tool buildid` prints),
    /// or None when the binary has none (e.g. linked with `-buildid=`).
    pub fn build_id(&self) -> Option<String> {
        let elf = self.elf().ok()?;
        let data = elf.section_by_name(".note.go.buildid")?.data().ok()?;
        parse_go_build_id_note(data)
    }

    pub fn arch(&self) -> Arch {
        self.arch
    }

    pub fn version(&self) -> &buildinfo::GoVersion {
        &self.version
    }

    /// True for position-independent executables (ELF type `ET_DYN`).
    pub fn is_pie(&self) -> bool {
        self.pie
    }

    /// Function symbols: `.symtab`'s, or the pclntab's when the binary is
    /// stripped.
    pub fn symbols(&self) -> &symbols::SymbolTable {
        &self.symbols
    }

    /// The Go pclntab (None when it cannot be found or parsed).
    pub fn pclntab(&self) -> Option<&Arc<pclntab::Pclntab>> {
        self.pclntab
            .get_or_init(|| {
                let elf = self.elf().ok()?;
                let bytes: pclntab::Bytes = self.data.clone();
                match pclntab::Pclntab::parse(&elf, bytes, &self.version) {
                    Ok(p) => Some(Arc::new(p)),
                    Err(e) => {
                        log::warn!("{}: no usable pclntab: {e}", self.path.display());
                        None
                    }
                }
            })
            .as_ref()
    }

    /// True when the binary has DWARF (`.debug_info`).
    pub fn has_dwarf(&self) -> bool {
        self.elf()
            .is_ok_and(|elf| elf.section_by_name(".debug_info").is_some())
    }

    /// Offsets of `runtime.g` fields and the wait-reason names: from DWARF,
    /// or, for a binary without DWARF, from the per-version table
    /// (`layout.source` says which).
    ///
    /// `layout.allg` (where the goroutine list is) comes from DWARF too, or
    /// else from the code the table points at; it is None when neither works
    /// (only a snapshot of existing goroutines needs it).
    pub fn layout(&self) -> Result<layout::RuntimeLayout, BinaryError> {
        match self.dwarf_layout() {
            Err(BinaryError::NoDwarf { .. }) => {
                let mut l = layout_table::for_version(&self.version)?;
                l.allg = self.allg_from_code(&l);
                Ok(l)
            }
            Ok(mut l) => {
                if l.allg.is_none() {
                    let table = layout_table::for_version(&self.version).ok();
                    l.allg = table.and_then(|t| self.allg_from_code(&t));
                }
                Ok(l)
            }
            other => other,
        }
    }

    #[cfg(test)]
    pub(crate) fn allg_from_table(&self, l: &layout::RuntimeLayout) -> Option<globals::AllgAddrs> {
        self.allg_from_code(l)
    }

    fn allg_from_code(&self, l: &layout::RuntimeLayout) -> Option<globals::AllgAddrs> {
        let code = l.allg_code.as_ref()?;
        globals::from_code(self, code)
            .inspect_err(|e| log::warn!("{}: runtime.allgs not found: {e}", self.path.display()))
            .ok()
    }

    /// Like [`layout`](Self::layout), from DWARF only (plus, for the table,
    /// which code loads the goroutine list).
    pub fn dwarf_layout(&self) -> Result<layout::RuntimeLayout, BinaryError> {
        let elf = self.elf()?;
        let dwarf = dwarf::load(&elf, &self.path)?;
        let mut l = layout::from_dwarf(&dwarf, &self.path)?;
        l.allg_code = l.allg.and_then(|a| globals::locate_code(self, &a));
        Ok(l)
    }

    /// An index of the binary's DWARF over the names `wanted` accepts (see
    /// [`dwarf_index::DwarfIndex`]); [`BinaryError::NoDwarf`] without DWARF.
    pub(crate) fn dwarf_index(
        &self,
        wanted: impl Fn(&[u8]) -> bool,
    ) -> Result<dwarf_index::DwarfIndex, BinaryError> {
        use gimli::SectionId;
        let elf = self.elf()?;
        // Types, constants and variables: entries, abbreviations, strings.
        let sections = [
            SectionId::DebugInfo,
            SectionId::DebugAbbrev,
            SectionId::DebugStr,
            SectionId::DebugLineStr,
        ];
        let dwarf = dwarf::load_only(&elf, &self.path, |id| sections.contains(&id))?;
        dwarf_index::DwarfIndex::build(dwarf, &self.path, wanted)
    }

    /// Addresses of non-text symbols (data, itabs) by exact name; names not in
    /// `.symtab` are absent from the result (all of them in a stripped binary,
    /// except `runtime.firstmoduledata`, which is found from the pclntab).
    pub fn data_symbols(
        &self,
        names: &[&str],
    ) -> Result<std::collections::HashMap<String, u64>, BinaryError> {
        use object::{Object as _, ObjectSymbol as _};
        let elf = self.elf()?;
        let mut found = std::collections::HashMap::new();
        for sym in elf.symbols() {
            let Ok(name) = sym.name() else { continue };
            if names.contains(&name) && sym.is_definition() && sym.address() != 0 {
                found.insert(name.to_string(), sym.address());
            }
        }
        const MODULEDATA: &str = "runtime.firstmoduledata";
        if names.contains(&MODULEDATA)
            && !found.contains_key(MODULEDATA)
            && let Some(md) = self.pclntab().and_then(|p| p.moduledata())
        {
            found.insert(MODULEDATA.to_string(), md);
        }
        Ok(found)
    }

    /// The `DefaultGODEBUG` the binary was built with, from
    /// `.go.buildinfo`; None when it has none.
    pub fn default_godebug(&self) -> Option<String> {
        use object::{Object as _, ObjectSection as _};
        let elf = self.elf().ok()?;
        let data = elf.section_by_name(".go.buildinfo")?.data().ok()?;
        buildinfo::default_godebug(data)
    }

    /// The data symbol (`.symtab`, a variable) whose bytes hold `vaddr`
    /// (link-time): the smallest one, so that a section's marker symbol
    /// (`runtime.bss`) never hides the variable. None in a stripped binary.
    pub fn data_symbol_containing(&self, vaddr: u64) -> Option<String> {
        use object::{Object as _, ObjectSymbol as _, SymbolKind};
        let elf = self.elf().ok()?;
        elf.symbols()
            .filter(|s| s.kind() == SymbolKind::Data && s.is_definition() && s.size() > 0)
            .filter(|s| (s.address()..s.address() + s.size()).contains(&vaddr))
            .min_by_key(|s| s.size())
            .and_then(|s| s.name().ok().map(str::to_string))
    }

    /// Every static itab by address, named `T,I` like its symbol
    /// (`go:itab.T,I`; `go.itab.T,I` before Go 1.20). Go 1.27 dropped those
    /// symbols: then the itabs come from `runtime.firstmoduledata.itablinks`,
    /// as in stripped binaries. Without DWARF nor a table entry for the
    /// version, the result is empty (callers treat that as "not traced").
    pub fn itabs(&self) -> Result<std::collections::HashMap<u64, String>, BinaryError> {
        use object::{Object as _, ObjectSymbol as _};
        let elf = self.elf()?;
        let mut found = std::collections::HashMap::new();
        for sym in elf.symbols() {
            let Ok(name) = sym.name() else { continue };
            let Some(short) = name
                .strip_prefix("go:itab.")
                .or_else(|| name.strip_prefix("go.itab."))
            else {
                continue;
            };
            if sym.address() != 0 {
                found.insert(sym.address(), short.to_string());
            }
        }
        if found.is_empty() {
            found = match itabs::from_moduledata(self) {
                Err(BinaryError::NotInLayoutTable { .. }) => found,
                other => other?,
            };
        }
        Ok(found)
    }

    /// True when `vaddr` lies in an allocated, writable section (data or
    /// bss: where a global variable can be).
    pub fn is_writable_data(&self, vaddr: u64) -> bool {
        let Ok(elf) = self.elf() else { return false };
        elf.sections().any(|s| {
            matches!(
                s.kind(),
                object::SectionKind::Data | object::SectionKind::UninitializedData
            ) && vaddr >= s.address()
                && vaddr - s.address() < s.size()
        })
    }

    /// Reads a little-endian u64 at a virtual address of the file's
    /// initialised data.
    pub fn read_u64(&self, vaddr: u64) -> Option<u64> {
        let off = self.file_offset(vaddr)? as usize;
        let bytes = self.bytes().get(off..off.checked_add(8)?)?;
        Some(u64::from_le_bytes(bytes.try_into().ok()?))
    }

    /// Virtual addresses of every return instruction inside function `func`.
    pub fn ret_addresses(&self, func: &str) -> Result<Vec<u64>, BinaryError> {
        let (addr, code) = self.function_code(func)?;
        Ok(rets::ret_addresses(self.arch, addr, code))
    }

    /// The address just after `func`'s frame-pointer prologue, if it has the
    /// standard one (see [`rets::prologue_end`]).
    pub fn prologue_end(&self, func: &str) -> Result<Option<u64>, BinaryError> {
        let (addr, code) = self.function_code(func)?;
        Ok(rets::prologue_end(self.arch, addr, code))
    }

    /// Addresses of the direct calls from `func` to `callee`.
    pub fn call_sites(&self, func: &str, callee: &str) -> Result<Vec<u64>, BinaryError> {
        let target = self.function_symbol(callee)?.addr;
        let (addr, code) = self.function_code(func)?;
        Ok(rets::call_sites(self.arch, addr, code, target))
    }

    fn function_symbol(&self, func: &str) -> Result<&symbols::FuncSymbol, BinaryError> {
        self.symbols
            .lookup(func)
            .ok_or_else(|| BinaryError::SymbolNotFound(func.to_string()))
    }

    /// A function's address and machine code.
    fn function_code(&self, func: &str) -> Result<(u64, &[u8]), BinaryError> {
        let sym = self.function_symbol(func)?;
        Ok((sym.addr, self.code(sym)?))
    }

    /// The machine code bytes of a function symbol, read via its section.
    pub fn code(&self, sym: &symbols::FuncSymbol) -> Result<&[u8], BinaryError> {
        let elf = self.elf()?;
        let not_in_file = || BinaryError::CodeNotInFile {
            name: sym.name.clone(),
            addr: sym.addr,
        };
        for section in elf.sections() {
            let start = section.address();
            if sym.addr < start || sym.addr >= start.saturating_add(section.size()) {
                continue;
            }
            return match section.data_range(sym.addr, sym.size) {
                Ok(Some(code)) => Ok(code),
                _ => Err(not_in_file()),
            };
        }
        Err(not_in_file())
    }

    /// File offset of virtual address `vaddr` (as needed to attach a uprobe),
    /// via the `PT_LOAD` segment containing it, or else the section.
    pub fn file_offset(&self, vaddr: u64) -> Option<u64> {
        let elf = self.elf().ok()?;
        for seg in elf.segments() {
            let (offset, filesz) = seg.file_range();
            let start = seg.address();
            if vaddr >= start && vaddr - start < filesz {
                return offset.checked_add(vaddr - start);
            }
        }
        for section in elf.sections() {
            let Some((offset, filesz)) = section.file_range() else {
                continue;
            };
            let start = section.address();
            if start != 0 && vaddr >= start && vaddr - start < filesz {
                return offset.checked_add(vaddr - start);
            }
        }
        None
    }

    /// Builds an address-to-source symbolizer (owns its copy of the DWARF).
    ///
    /// A binary without DWARF symbolizes from its pclntab (functions, files,
    /// lines and inlined frames), or, failing that, with symbol names only.
    pub fn symbolizer(&self) -> Result<symbolize::Symbolizer, BinaryError> {
        let elf = self.elf()?;
        let dwarf = match dwarf::load(&elf, &self.path) {
            Ok(d) => Some(d),
            Err(BinaryError::NoDwarf { .. }) => {
                if let Some(p) = self.pclntab() {
                    log::info!(
                        "{}: no DWARF, symbolizing from the pclntab",
                        self.path.display()
                    );
                    return Ok(symbolize::Symbolizer::from_pclntab(
                        p.clone(),
                        self.symbols.clone(),
                    ));
                }
                log::warn!(
                    "{}: no DWARF, symbolizing with symbol names only",
                    self.path.display()
                );
                None
            }
            Err(e) => return Err(e),
        };
        symbolize::Symbolizer::new(dwarf, self.symbols.clone(), &self.path)
    }
}

/// The descriptor of a `Go` note of type 4 (GO_BUILDID) in a note section.
pub(crate) fn parse_go_build_id_note(mut data: &[u8]) -> Option<String> {
    let u32_at = |d: &[u8], i: usize| -> Option<u32> {
        Some(u32::from_le_bytes(d.get(i..i + 4)?.try_into().ok()?))
    };
    let align = |n: usize| n.div_ceil(4) * 4;
    while data.len() >= 12 {
        let namesz = u32_at(data, 0)? as usize;
        let descsz = u32_at(data, 4)? as usize;
        let kind = u32_at(data, 8)?;
        let name = data.get(12..12 + namesz)?;
        let desc_at = 12 + align(namesz);
        let desc = data.get(desc_at..desc_at.checked_add(descsz)?)?;
        let name_end = name.iter().position(|b| *b == 0).unwrap_or(name.len());
        if &name[..name_end] == b"Go" && kind == 4 {
            let id = std::str::from_utf8(desc).ok()?.trim_end_matches('\0');
            return (!id.is_empty()).then(|| id.to_string());
        }
        data = data.get(desc_at + align(descsz)..)?;
    }
    None
}
