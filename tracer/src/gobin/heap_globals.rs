//! Where the runtime globals of the leak proof ([`HeapGlobals`]) are in a
//! binary without DWARF.
//!
//! A binary stripped of DWARF only (`-ldflags=-w`) still names them in
//! `.symtab`. A fully stripped one (`-s -w`) has no data symbols at all:
//! then the per-version table records, for each global, which operand of
//! which runtime functions loads it ([`GlobalCode`], like
//! [`super::globals::AllgCode`] for the goroutine list; amd64 only). `cargo
//! xtask layouts` derives those records from DWARF. The table keeps up to
//! two functions per global and the addresses they give must agree, so a
//! build whose runtime code differs (a flag that changes code generation)
//! gets an error rather than a wrong address.

use std::collections::HashMap;

use super::globals::rip_targets;
use super::heap_layout::{GlobalCode, HeapGlobals};
use super::{BinaryError, GoBinary};

/// Each global: its key in [`GlobalCode::global`], its symbol, and the
/// runtime functions that load it, by preference (each version's table
/// keeps the first [`PER_GLOBAL`] that do). They are functions every
/// program links (GC, allocator, semaphores, symbol table): a binary that
/// lacks one still needs the other.
pub(crate) const READERS: [(&str, &str, &[&str]); 7] = [
    (
        "mheap",
        "runtime.mheap_",
        &[
            "runtime.getempty.func1",
            "runtime.(*mcentral).grow",
            "runtime.allocmcache.func1",
            "runtime.(*mcache).allocLarge",
        ],
    ),
    (
        "firstmoduledata",
        "runtime.firstmoduledata",
        &[
            "runtime.findfunc",
            "runtime.modulesinit",
            "runtime.(*Func).Entry",
        ],
    ),
    (
        "semtable",
        "runtime.semtable",
        &["runtime.semrelease1", "runtime.semacquire1"],
    ),
    (
        "allfin",
        "runtime.allfin",
        &["runtime.markroot", "runtime.queuefinalizer"],
    ),
    (
        "gc_cleanups",
        "runtime.gcCleanups",
        &[
            "runtime.markroot",
            "runtime.(*activeSweep).end",
            "runtime.freeSpecial",
        ],
    ),
    (
        "allp",
        "runtime.allp",
        &[
            "runtime.gcMarkTinyAllocs",
            "runtime.procresize",
            "runtime.forEachP",
        ],
    ),
    (
        "allm",
        "runtime.allm",
        &[
            "runtime.mcommoninit",
            "runtime.checkdead",
            "runtime.forEachThread",
        ],
    ),
];
/// Functions recorded per global.
const PER_GLOBAL: usize = 2;
/// What a failed search is about, in errors.
const WHAT: &str = "the heap's runtime globals";

/// A global of the binary as DWARF gives it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Known<'a> {
    pub key: &'a str,
    pub addr: u64,
    /// Bytes of its type (code may load one of its fields).
    pub size: u64,
}

/// Which code loads each of `known` (for the table; `known` from DWARF).
/// An exact operand is preferred over one that loads a field.
pub(crate) fn locate_code(bin: &GoBinary, known: &[Known<'_>]) -> Vec<GlobalCode> {
    let mut codes = Vec::new();
    for (key, _, readers) in READERS {
        let Some(k) = known.iter().find(|k| k.key == key) else {
            continue;
        };
        let mut found: Vec<GlobalCode> = readers
            .iter()
            .filter_map(|f| operand_of(bin, f, k))
            .collect();
        // Stable: exact operands first, the list's order otherwise.
        found.sort_by_key(|c| c.adjust != 0);
        codes.extend(found.into_iter().take(PER_GLOBAL));
    }
    codes
}

/// The first operand of `function` that loads `k` or one of its fields.
fn operand_of(bin: &GoBinary, function: &str, k: &Known<'_>) -> Option<GlobalCode> {
    let targets = rip_targets(bin, function, WHAT).ok()?;
    let code = |operand: usize, target: u64| GlobalCode {
        global: k.key.to_string(),
        function: function.to_string(),
        operand,
        adjust: k.addr.wrapping_sub(target) as i64,
    };
    if let Some(i) = targets.iter().position(|t| *t == k.addr) {
        return Some(code(i, k.addr));
    }
    let end = k.addr.checked_add(k.size)?;
    let i = targets.iter().position(|t| (k.addr..end).contains(t))?;
    Some(code(i, targets[i]))
}

/// The address `code` points at.
fn address(bin: &GoBinary, code: &GlobalCode) -> Result<u64, BinaryError> {
    let targets = rip_targets(bin, &code.function, WHAT)?;
    let target = targets.get(code.operand).ok_or_else(|| {
        BinaryError::SymbolNotFound(format!(
            "runtime.{} (operand {} of {}: it has {})",
            code.global,
            code.operand,
            code.function,
            targets.len()
        ))
    })?;
    Ok(target.wrapping_add_signed(code.adjust))
}

/// The address of global `key`: its `.symtab` symbol, else what every
/// record of `codes` for it gives (they must agree and point into
/// writable data). None when `codes` has no record for it (the version
/// has no such global).
fn find_one(
    bin: &GoBinary,
    codes: &[GlobalCode],
    key: &str,
    symbol: &str,
    symtab: &HashMap<String, u64>,
) -> Result<Option<u64>, BinaryError> {
    if let Some(addr) = symtab.get(symbol) {
        return Ok(Some(*addr));
    }
    let mut addr = None;
    let mut missing = None;
    for code in codes.iter().filter(|c| c.global == key) {
        let a = match address(bin, code) {
            // Not linked into this program: the other record will do.
            Err(e @ BinaryError::SymbolNotFound(_))
                if bin.symbols().lookup(&code.function).is_none() =>
            {
                missing = Some(e);
                continue;
            }
            other => other?,
        };
        match addr {
            Some(prev) if prev != a => {
                return Err(BinaryError::SymbolNotFound(format!(
                    "{symbol}: the code of the runtime does not match gotrace's table for {} \
                     ({:#x} from {}, {prev:#x} before)",
                    bin.version().raw,
                    a,
                    code.function
                )));
            }
            _ => addr = Some(a),
        }
    }
    if let (None, Some(e)) = (addr, missing) {
        return Err(e);
    }
    if let Some(a) = addr
        && !bin.is_writable_data(a)
    {
        return Err(BinaryError::SymbolNotFound(format!(
            "{symbol}: the code gives {a:#x}, which is not in the binary's writable data"
        )));
    }
    Ok(addr)
}

/// The globals of a binary without DWARF: from `.symtab` (and the pclntab
/// for `firstmoduledata`) when it has them, else as `codes` (its
/// version's table records) say. `mheap` and `firstmoduledata` are
/// required.
pub(crate) fn find(bin: &GoBinary, codes: &[GlobalCode]) -> Result<HeapGlobals, BinaryError> {
    let symbols: Vec<&str> = READERS.iter().map(|(_, s, _)| *s).collect();
    let symtab = bin.data_symbols(&symbols)?;
    find_with(bin, codes, &symtab)
}

/// Like [`find`], from the code alone (what a binary without symbols gets).
#[cfg(test)]
pub(crate) fn by_code(bin: &GoBinary, codes: &[GlobalCode]) -> Result<HeapGlobals, BinaryError> {
    find_with(bin, codes, &HashMap::new())
}

fn find_with(
    bin: &GoBinary,
    codes: &[GlobalCode],
    symtab: &HashMap<String, u64>,
) -> Result<HeapGlobals, BinaryError> {
    let mut found = [None; READERS.len()];
    for (slot, (key, symbol, _)) in found.iter_mut().zip(READERS) {
        *slot = find_one(bin, codes, key, symbol, symtab)?;
    }
    let [
        mheap,
        firstmoduledata,
        semtable,
        allfin,
        gc_cleanups,
        allp,
        allm,
    ] = found;
    let required = |addr: Option<u64>, symbol: &str| {
        addr.ok_or_else(|| {
            BinaryError::SymbolNotFound(format!(
                "{symbol} (no DWARF, no symbol, and gotrace's table has no code for it)"
            ))
        })
    };
    let firstmoduledata = required(firstmoduledata, "runtime.firstmoduledata")?;
    // The pclntab names the module data independently of the code.
    if let Some(md) = bin.pclntab().and_then(|p| p.moduledata())
        && md != firstmoduledata
    {
        return Err(BinaryError::SymbolNotFound(format!(
            "runtime.firstmoduledata: the code gives {firstmoduledata:#x}, the pclntab {md:#x}"
        )));
    }
    Ok(HeapGlobals {
        mheap: required(mheap, "runtime.mheap_")?,
        firstmoduledata,
        semtable,
        allfin,
        gc_cleanups,
        allp,
        allm,
    })
}
