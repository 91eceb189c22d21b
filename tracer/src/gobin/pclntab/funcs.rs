//! What the garbage collector reads about a function to scan its frames:
//! the frame size at a pc (the pcsp table), the stack map index at a pc
//! (`PCDATA_StackMapIndex`), the locals and arguments pointer maps
//! (`FUNCDATA_LocalsPointerMaps`, `FUNCDATA_ArgsPointerMaps`) and the
//! stack objects (`FUNCDATA_StackObjects`), all read from the file: the
//! funcdata live in the binary's read-only data, at offsets from
//! `moduledata.gofunc`.
//!
//! The indexes and record layouts are the pclntab format's, unchanged from
//! Go 1.18 to 1.27 (internal/abi/symtab.go, runtime/symtab.go, stack.go).

use super::{FuncInfo, Pclntab};

/// `abi.PCDATA_StackMapIndex`.
const PCDATA_STACK_MAP_INDEX: u32 = 1;
/// `abi.FUNCDATA_ArgsPointerMaps`, `FUNCDATA_LocalsPointerMaps`,
/// `FUNCDATA_StackObjects`.
const FUNCDATA_ARGS_POINTER_MAPS: u32 = 0;
const FUNCDATA_LOCALS_POINTER_MAPS: u32 = 1;
const FUNCDATA_STACK_OBJECTS: u32 = 2;
/// `abi.FuncFlagTopFrame` and `abi.FuncFlagSPWrite`.
pub const FUNC_FLAG_TOP_FRAME: u8 = 1;
pub const FUNC_FLAG_SP_WRITE: u8 = 2;
/// `abi.ArgsSizeUnknown`: `_func.args` of functions whose argument size
/// only the runtime knows (reflect stubs, some assembly).
pub const ARGS_SIZE_UNKNOWN: i32 = -0x8000_0000;
/// Bytes of a `runtime.stackObjectRecord` {off, size int32; ptrdata
/// int32; gcdataoff uint32}.
const STACK_OBJECT_RECORD: u64 = 16;
/// More stack objects than this in one function is garbage.
const MAX_STACK_OBJECTS: u64 = 1 << 16;

/// A function of the pclntab (a copy of its `runtime._func` fields).
#[derive(Clone, Copy, Debug)]
pub struct Func {
    info: FuncInfo,
}

impl Func {
    /// Entry address (link-time).
    pub fn entry(&self) -> u64 {
        self.info.entry
    }

    /// Bytes of arguments and results, or [`ARGS_SIZE_UNKNOWN`].
    pub fn args(&self) -> i32 {
        self.info.args
    }

    /// Offset of the `deferreturn` call from the entry (0: none).
    pub fn deferreturn(&self) -> u32 {
        self.info.deferreturn
    }

    /// `abi.FuncFlag` bits ([`FUNC_FLAG_TOP_FRAME`], [`FUNC_FLAG_SP_WRITE`]).
    pub fn flag(&self) -> u8 {
        self.info.flag
    }

    /// True when the function has a pcsp table (else: no frame
    /// information, an external function).
    pub fn has_frame_info(&self) -> bool {
        self.info.pcsp != 0
    }
}

/// A `runtime.stackmap`: `n` bitmaps of `nbit` bits each.
#[derive(Clone, Copy, Debug)]
pub struct StackMap<'a> {
    pub n: i32,
    pub nbit: i32,
    /// The bitmaps, each `(nbit + 7) / 8` bytes.
    data: &'a [u8],
}

impl<'a> StackMap<'a> {
    /// Bitmap `i` (`stackmapdata`): `nbit` bits, bit k for word k.
    pub fn bitmap(&self, i: i32) -> Option<&'a [u8]> {
        if i < 0 || i >= self.n || self.nbit < 0 {
            return None;
        }
        let len = (self.nbit as usize).div_ceil(8);
        let start = (i as usize).checked_mul(len)?;
        self.data.get(start..start.checked_add(len)?)
    }
}

/// One `runtime.stackObjectRecord`: an object in a frame whose address is
/// taken. `off` < 0 is from the frame's `varp`, else from its `argp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackObject {
    pub off: i32,
    pub size: i32,
}

impl Pclntab {
    /// The function containing `pc` (link-time).
    pub fn func_at(&self, pc: u64) -> Option<Func> {
        let f = self.lookup(pc)?;
        Some(Func {
            info: self.info(f)?,
        })
    }

    /// The function's name.
    pub fn func_name(&self, f: &Func) -> Option<String> {
        self.name(f.info.name_off)
    }

    /// Every function's entry and name (for finding runtime functions by
    /// name in a stripped binary).
    pub fn func_entries(&self) -> impl Iterator<Item = (u64, String)> + '_ {
        (0..self.nfunc).filter_map(|i| {
            let info = self.info(self.entry(i)?)?;
            Some((info.entry, self.name(info.name_off)?))
        })
    }

    /// `funcspdelta`: bytes the function has pushed on the stack at `pc`
    /// (the pcsp table's value there).
    pub fn sp_delta(&self, f: &Func, pc: u64) -> Option<i32> {
        self.value(f.info.pcsp, f.info.entry, pc)
    }

    /// The `PCDATA_StackMapIndex` value at `pc`, -1 when the table has none
    /// there (as `pcdatavalue` returns).
    pub fn stack_map_index(&self, f: &Func, pc: u64) -> i32 {
        self.pcdata(&f.info, PCDATA_STACK_MAP_INDEX)
            .and_then(|t| self.value(t, f.info.entry, pc))
            .unwrap_or(-1)
    }

    /// The locals (`args` false) or arguments pointer maps: None when the
    /// function has none or they are outside the file.
    pub fn stack_map(&self, f: &Func, args: bool) -> Option<StackMap<'_>> {
        let which = if args {
            FUNCDATA_ARGS_POINTER_MAPS
        } else {
            FUNCDATA_LOCALS_POINTER_MAPS
        };
        let at = self.funcdata_offset(&f.info, which)?;
        let n = self.u32_at(at)? as i32;
        let nbit = self.u32_at(at.checked_add(4)?)? as i32;
        let len = usize::try_from(n)
            .ok()?
            .checked_mul(usize::try_from(nbit).ok()?.div_ceil(8))?;
        let start = at.checked_add(8)?;
        let data = self.bytes().get(start..start.checked_add(len)?)?;
        Some(StackMap { n, nbit, data })
    }

    /// The function's stack objects: empty when it has none, None when
    /// its records cannot be read.
    pub fn stack_objects(&self, f: &Func) -> Option<Vec<StackObject>> {
        if !self.has_funcdata(&f.info, FUNCDATA_STACK_OBJECTS) {
            return Some(Vec::new());
        }
        let at = self.funcdata_offset(&f.info, FUNCDATA_STACK_OBJECTS)?;
        let n = self.u64_at(at)?;
        if n > MAX_STACK_OBJECTS {
            return None;
        }
        (0..n)
            .map(|i| {
                let rec = at.checked_add(8 + (i * STACK_OBJECT_RECORD) as usize)?;
                Some(StackObject {
                    off: self.u32_at(rec)? as i32,
                    size: self.u32_at(rec + 4)? as i32,
                })
            })
            .collect()
    }

    /// True when funcdata `i` is present (the function has that table).
    fn has_funcdata(&self, info: &FuncInfo, i: u32) -> bool {
        i < u32::from(info.nfuncdata)
            && self
                .u32_at(info.pcdata + 4 * (info.npcdata as usize + i as usize))
                .is_some_and(|o| o != u32::MAX)
    }

    /// File offset of funcdata `i`.
    fn funcdata_offset(&self, info: &FuncInfo, i: u32) -> Option<usize> {
        let vaddr = self.funcdata(info, i)?;
        usize::try_from(self.file_offset(vaddr)?).ok()
    }
}
