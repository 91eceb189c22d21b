//! Offsets of `runtime.g` fields and wait-reason constants, read from DWARF
//! (binaries without DWARF use the per-version table of `layout_table.rs`).

use std::collections::BTreeMap;
use std::path::Path;

use gimli::{AttributeValue, Reader};

use super::BinaryError;
use super::dwarf::err;

/// Where a [`RuntimeLayout`] came from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LayoutSource {
    /// The binary's own DWARF.
    #[default]
    Dwarf,
    /// gotrace's per-version table (`tracer/data/runtime-layouts.json`), for
    /// binaries without DWARF.
    Table,
}

impl std::fmt::Display for LayoutSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LayoutSource::Dwarf => "the binary's DWARF",
            LayoutSource::Table => "the per-version table",
        })
    }
}

/// What the eBPF side needs to know about the Go runtime of one binary.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RuntimeLayout {
    /// Where these offsets come from (not part of the table's JSON).
    #[serde(skip)]
    pub source: LayoutSource,
    pub g_goid: u64,
    /// `runtime.g.parentGoid` (absent before Go 1.21).
    pub g_parent_goid: Option<u64>,
    pub g_gopc: u64,
    pub g_startpc: u64,
    pub g_atomicstatus: u64,
    pub g_waitreason: u64,
    pub g_waitsince: u64,
    pub g_sched: u64,
    /// `runtime.g.waiting`: the sudogs a parked goroutine waits on.
    pub g_waiting: Option<u64>,
    /// `runtime.sudog.c` (the channel) and `.waitlink` (next sudog).
    pub sudog_c: Option<u64>,
    pub sudog_waitlink: Option<u64>,
    /// `context.cancelCtx.done` (an atomic.Value holding the Done channel).
    pub cancel_ctx_done: Option<u64>,
    /// `context.timerCtx.deadline` (a time.Time).
    pub timer_ctx_deadline: Option<u64>,
    /// `runtime.timer` `period`, `f` and `arg` (Go ≤ 1.22's startTimer).
    pub timer_period: Option<u64>,
    pub timer_f: Option<u64>,
    pub timer_arg: Option<u64>,
    /// `runtime.moduledata.itablinks` (a []*itab, up to Go 1.26).
    pub moduledata_itablinks: Option<u64>,
    /// `runtime.moduledata` `types`, `itaboffset`, `itabsize` (Go 1.27: the
    /// itabs sit back to back at types+itaboffset).
    pub moduledata_types: Option<u64>,
    pub moduledata_itaboffset: Option<u64>,
    pub moduledata_itabsize: Option<u64>,
    /// `runtime.moduledata` `text` and `gofunc` (the pclntab's text base and
    /// the base of its funcdata offsets).
    pub moduledata_text: Option<u64>,
    pub moduledata_gofunc: Option<u64>,
    /// `internal/abi.InterfaceType.Methods` (a slice).
    pub interface_methods: Option<u64>,
    /// `internal/abi.Type.Kind_` (`runtime._type.kind` before Go 1.21).
    pub type_kind: Option<u64>,
    /// `runtime.waitReason` value -> constant name without the "runtime."
    /// prefix, e.g. 14 -> "waitReasonChanReceive".
    pub wait_reasons: BTreeMap<u8, String>,
    /// `runtime.g.stack` (a `runtime.stack`: `lo`, `hi`), `syscallsp`,
    /// `syscallpc` and `syscallbp` (Go 1.23+).
    pub g_stack: Option<u64>,
    pub g_syscallsp: Option<u64>,
    pub g_syscallpc: Option<u64>,
    pub g_syscallbp: Option<u64>,
    pub stack_lo: Option<u64>,
    pub stack_hi: Option<u64>,
    /// `runtime.gobuf` `sp`, `pc` and `bp` (the saved scheduler state `g.sched`).
    pub gobuf_sp: Option<u64>,
    pub gobuf_pc: Option<u64>,
    pub gobuf_bp: Option<u64>,
    /// `runtime._G*` goroutine status constants: value -> name without the
    /// "runtime." prefix, e.g. 4 -> "_Gwaiting" (the scan bit `_Gscan` too).
    pub g_statuses: BTreeMap<u32, String>,
    /// Which instructions of which runtime function load `runtime.allglen`
    /// and `runtime.allgptr`: how a binary without symbols finds them.
    pub allg_code: Option<super::globals::AllgCode>,
    /// Addresses of `runtime.allglen` and `runtime.allgptr` in this binary
    /// (link-time; not part of the table's JSON, they differ per binary).
    #[serde(skip)]
    pub allg: Option<super::globals::AllgAddrs>,
}

impl RuntimeLayout {
    /// The `runtime.g` offsets a goroutine snapshot reads, when the binary
    /// has them all.
    pub fn snapshot_offsets(&self) -> Option<GOffsets> {
        Some(GOffsets {
            goid: self.g_goid,
            parent_goid: self.g_parent_goid,
            gopc: self.g_gopc,
            startpc: self.g_startpc,
            atomicstatus: self.g_atomicstatus,
            waitreason: self.g_waitreason,
            waitsince: self.g_waitsince,
            sched_sp: self.g_sched + self.gobuf_sp?,
            sched_pc: self.g_sched + self.gobuf_pc?,
            sched_bp: self.g_sched + self.gobuf_bp?,
            stack_lo: self.g_stack? + self.stack_lo?,
            stack_hi: self.g_stack? + self.stack_hi?,
            syscallsp: self.g_syscallsp?,
            syscallpc: self.g_syscallpc?,
            syscallbp: self.g_syscallbp,
            waiting: self.g_waiting,
            param: None,
        })
    }
}

/// Offsets of every `runtime.g` field a snapshot reads, from the start of
/// the g (nested fields already added up).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GOffsets {
    pub goid: u64,
    pub parent_goid: Option<u64>,
    pub gopc: u64,
    pub startpc: u64,
    pub atomicstatus: u64,
    pub waitreason: u64,
    pub waitsince: u64,
    pub sched_sp: u64,
    pub sched_pc: u64,
    pub sched_bp: u64,
    pub stack_lo: u64,
    pub stack_hi: u64,
    pub syscallsp: u64,
    pub syscallpc: u64,
    pub syscallbp: Option<u64>,
    /// `g.waiting` and `g.param`: read for the leak proof (`param` is not in
    /// [`RuntimeLayout`]; the proof sets it from its heap layout).
    pub waiting: Option<u64>,
    pub param: Option<u64>,
}

impl GOffsets {
    /// Bytes of a g to read to see every field (all are 8 bytes wide but
    /// atomicstatus and waitreason, which are smaller).
    pub fn span(&self) -> u64 {
        [
            Some(self.goid),
            self.parent_goid,
            Some(self.gopc),
            Some(self.startpc),
            Some(self.atomicstatus),
            Some(self.waitreason),
            Some(self.waitsince),
            Some(self.sched_sp),
            Some(self.sched_pc),
            Some(self.sched_bp),
            Some(self.stack_lo),
            Some(self.stack_hi),
            Some(self.syscallsp),
            Some(self.syscallpc),
            self.syscallbp,
            self.waiting,
            self.param,
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(0)
            + 8
    }
}

/// (struct, member) pairs read from DWARF. The first eight are required.
const FIELDS: [(&str, &str); 35] = [
    ("runtime.g", "goid"),
    ("runtime.g", "parentGoid"),
    ("runtime.g", "gopc"),
    ("runtime.g", "startpc"),
    ("runtime.g", "atomicstatus"),
    ("runtime.g", "waitreason"),
    ("runtime.g", "waitsince"),
    ("runtime.g", "sched"),
    ("runtime.g", "waiting"),
    ("runtime.sudog", "c"),
    ("runtime.sudog", "waitlink"),
    ("context.cancelCtx", "done"),
    ("context.timerCtx", "deadline"),
    ("runtime.hchan", "closed"),
    ("runtime.timer", "period"),
    ("runtime.timer", "f"),
    ("runtime.timer", "arg"),
    ("runtime.moduledata", "itablinks"),
    ("runtime.moduledata", "types"),
    ("runtime.moduledata", "itaboffset"),
    ("runtime.moduledata", "itabsize"),
    ("runtime.moduledata", "text"),
    ("runtime.moduledata", "gofunc"),
    ("internal/abi.InterfaceType", "Methods"),
    ("internal/abi.Type", "Kind_"),
    ("runtime._type", "kind"),
    ("runtime.g", "stack"),
    ("runtime.g", "syscallsp"),
    ("runtime.g", "syscallpc"),
    ("runtime.g", "syscallbp"),
    ("runtime.stack", "lo"),
    ("runtime.stack", "hi"),
    ("runtime.gobuf", "sp"),
    ("runtime.gobuf", "pc"),
    ("runtime.gobuf", "bp"),
];
/// Distinct struct names of [`FIELDS`].
const STRUCTS: [&str; 12] = [
    "runtime.g",
    "runtime.sudog",
    "context.cancelCtx",
    "context.timerCtx",
    "runtime.hchan",
    "runtime.timer",
    "runtime.moduledata",
    "internal/abi.InterfaceType",
    "internal/abi.Type",
    "runtime._type",
    "runtime.stack",
    "runtime.gobuf",
];
/// Variables whose address a snapshot needs.
const VARIABLES: [&str; 2] = ["runtime.allglen", "runtime.allgptr"];
/// `runtime._type` became `internal/abi.Type` in Go 1.21: either will do.
const TYPE_STRUCTS: (usize, usize) = (8, 9);
const WAIT_REASON_PREFIX: &[u8] = b"runtime.waitReason";
/// `runtime._Gwaiting` and the other status constants: lower case after
/// the prefix (not `_GCoff`, `_GoidCacheBatch`...).
const STATUS_PREFIX: &[u8] = b"runtime._G";

struct Scan {
    found: [bool; STRUCTS.len()],
    fields: [Option<u64>; FIELDS.len()],
    wait_reasons: BTreeMap<u8, String>,
    statuses: BTreeMap<u32, String>,
    variables: [Option<u64>; VARIABLES.len()],
}

impl Default for Scan {
    fn default() -> Self {
        Scan {
            found: [false; STRUCTS.len()],
            fields: [None; FIELDS.len()],
            wait_reasons: BTreeMap::new(),
            statuses: BTreeMap::new(),
            variables: [None; VARIABLES.len()],
        }
    }
}

impl Scan {
    fn g_found(&self) -> bool {
        self.found[0]
    }

    fn structs_found(&self) -> bool {
        let (new, old) = TYPE_STRUCTS;
        self.found
            .iter()
            .enumerate()
            .all(|(i, f)| *f || i == new || i == old)
            && (self.found[new] || self.found[old])
    }

    fn complete(&self) -> bool {
        self.structs_found()
            && !self.wait_reasons.is_empty()
            && !self.statuses.is_empty()
            && self.variables.iter().all(Option::is_some)
    }
}

/// Scans `.debug_info` for `runtime.g`'s members and the
/// `runtime.waitReason*` constants. Only the attributes of structure, member
/// and constant entries are decoded; everything else is skipped.
pub fn from_dwarf<R: Reader>(
    dwarf: &gimli::Dwarf<R>,
    path: &Path,
) -> Result<RuntimeLayout, BinaryError> {
    let e = err(path);
    let mut scan = Scan::default();
    let mut units = dwarf.units();
    while let Some(header) = units.next().map_err(&e)? {
        let unit = dwarf.unit(header).map_err(&e)?;
        scan_unit(dwarf, &unit, &mut scan).map_err(&e)?;
        // Each package's types and constants live in its own unit: once
        // everything was seen and a unit is finished, the rest is skipped.
        if scan.complete() {
            break;
        }
    }
    if !scan.g_found() {
        return Err(BinaryError::NoRuntimeG);
    }
    let opt = |strukt: &str, name: &str| -> Option<u64> {
        let i = FIELDS
            .iter()
            .position(|f| *f == (strukt, name))
            .expect("known field");
        scan.fields[i]
    };
    let field = |name: &str| -> Result<u64, BinaryError> {
        opt("runtime.g", name).ok_or_else(|| BinaryError::MissingField(name.to_string()))
    };
    if scan.wait_reasons.is_empty() {
        log::warn!(
            "{}: no runtime.waitReason* constants in DWARF",
            path.display()
        );
    }
    Ok(RuntimeLayout {
        source: LayoutSource::Dwarf,
        g_goid: field("goid")?,
        g_parent_goid: field("parentGoid").ok(),
        g_gopc: field("gopc")?,
        g_startpc: field("startpc")?,
        g_atomicstatus: field("atomicstatus")?,
        g_waitreason: field("waitreason")?,
        g_waitsince: field("waitsince")?,
        g_sched: field("sched")?,
        g_waiting: opt("runtime.g", "waiting"),
        sudog_c: opt("runtime.sudog", "c"),
        sudog_waitlink: opt("runtime.sudog", "waitlink"),
        cancel_ctx_done: opt("context.cancelCtx", "done"),
        timer_ctx_deadline: opt("context.timerCtx", "deadline"),
        timer_period: opt("runtime.timer", "period"),
        timer_f: opt("runtime.timer", "f"),
        timer_arg: opt("runtime.timer", "arg"),
        moduledata_itablinks: opt("runtime.moduledata", "itablinks"),
        moduledata_types: opt("runtime.moduledata", "types"),
        moduledata_itaboffset: opt("runtime.moduledata", "itaboffset"),
        moduledata_itabsize: opt("runtime.moduledata", "itabsize"),
        moduledata_text: opt("runtime.moduledata", "text"),
        moduledata_gofunc: opt("runtime.moduledata", "gofunc"),
        interface_methods: opt("internal/abi.InterfaceType", "Methods"),
        type_kind: opt("internal/abi.Type", "Kind_").or(opt("runtime._type", "kind")),
        wait_reasons: scan.wait_reasons,
        g_stack: opt("runtime.g", "stack"),
        g_syscallsp: opt("runtime.g", "syscallsp"),
        g_syscallpc: opt("runtime.g", "syscallpc"),
        g_syscallbp: opt("runtime.g", "syscallbp"),
        stack_lo: opt("runtime.stack", "lo"),
        stack_hi: opt("runtime.stack", "hi"),
        gobuf_sp: opt("runtime.gobuf", "sp"),
        gobuf_pc: opt("runtime.gobuf", "pc"),
        gobuf_bp: opt("runtime.gobuf", "bp"),
        g_statuses: scan.statuses,
        allg_code: None,
        allg: match scan.variables {
            [Some(allglen), Some(allgptr)] => Some(super::globals::AllgAddrs { allglen, allgptr }),
            _ => None,
        },
    })
}

fn scan_unit<R: Reader>(
    dwarf: &gimli::Dwarf<R>,
    unit: &gimli::Unit<R>,
    scan: &mut Scan,
) -> gimli::Result<()> {
    let mut raw = unit.entries_raw(None)?;
    // While inside a wanted struct: its index in STRUCTS and its members' depth.
    let mut inside: Option<(usize, isize)> = None;
    while !raw.is_empty() {
        let depth = raw.next_depth();
        let Some(abbrev) = raw.read_abbreviation()? else {
            continue;
        };
        if inside.is_some_and(|(_, d)| depth < d) {
            inside = None;
        }
        let tag = abbrev.tag();
        let wanted = match tag {
            gimli::DW_TAG_structure_type => !scan.structs_found(),
            gimli::DW_TAG_member => inside.is_some_and(|(_, d)| d == depth),
            gimli::DW_TAG_constant => true,
            // Package-level variables sit right under the unit.
            gimli::DW_TAG_variable => depth == 1,
            _ => false,
        };
        if !wanted {
            raw.skip_attributes(abbrev.attributes())?;
            continue;
        }
        let mut name = None;
        let mut location = None;
        let mut const_value = None;
        for spec in abbrev.attributes() {
            let attr = raw.read_attribute(*spec)?;
            match attr.name() {
                gimli::DW_AT_name => name = Some(attr.value()),
                gimli::DW_AT_data_member_location | gimli::DW_AT_location => {
                    location = Some(attr.value())
                }
                gimli::DW_AT_const_value => const_value = Some(attr.value()),
                _ => {}
            }
        }
        let Some(name) = name else { continue };
        let name = dwarf.attr_string(unit, name)?;
        let name = name.to_slice()?;
        let entry = Entry {
            tag,
            name: &name,
            depth,
            has_children: abbrev.has_children(),
            location,
            const_value,
        };
        scan.record(entry, &mut inside);
    }
    Ok(())
}

/// One wanted DWARF entry, with the attributes the scan reads.
struct Entry<'n, R: Reader> {
    tag: gimli::DwTag,
    name: &'n [u8],
    depth: isize,
    has_children: bool,
    location: Option<AttributeValue<R>>,
    const_value: Option<AttributeValue<R>>,
}

impl Scan {
    /// Takes what `e` says: a wanted struct (entered), one of its members'
    /// offsets, a wait-reason or status constant, or a global's address.
    /// `inside`: the wanted struct being read and its members' depth.
    fn record<R: Reader>(&mut self, e: Entry<'_, R>, inside: &mut Option<(usize, isize)>) {
        let name = e.name;
        match e.tag {
            gimli::DW_TAG_structure_type => {
                let Some(k) = STRUCTS.iter().position(|s| s.as_bytes() == name) else {
                    return;
                };
                if self.found[k] {
                    return;
                }
                self.found[k] = true;
                if e.has_children {
                    *inside = Some((k, e.depth + 1));
                }
            }
            gimli::DW_TAG_member => {
                let Some((k, _)) = *inside else { return };
                let Some(i) = FIELDS
                    .iter()
                    .position(|(st, f)| *st == STRUCTS[k] && f.as_bytes() == name)
                else {
                    return;
                };
                self.fields[i] = e.location.and_then(member_offset);
            }
            gimli::DW_TAG_constant if name.starts_with(WAIT_REASON_PREFIX) => {
                let Some(value) = e.const_value.and_then(const_u64) else {
                    return;
                };
                let Ok(value) = u8::try_from(value) else {
                    log::warn!("wait reason constant out of u8 range: {value}");
                    return;
                };
                let short = String::from_utf8_lossy(&name["runtime.".len()..]).into_owned();
                self.wait_reasons.entry(value).or_insert(short);
            }
            gimli::DW_TAG_constant
                if name.len() > STATUS_PREFIX.len()
                    && name.starts_with(STATUS_PREFIX)
                    && name[STATUS_PREFIX.len()..]
                        .iter()
                        .all(|c| c.is_ascii_lowercase() || *c == b'_') =>
            {
                let Some(value) = e.const_value.and_then(const_u64) else {
                    return;
                };
                let Ok(value) = u32::try_from(value) else {
                    return;
                };
                let short = String::from_utf8_lossy(&name["runtime.".len()..]).into_owned();
                self.statuses.entry(value).or_insert(short);
            }
            gimli::DW_TAG_variable => {
                let Some(i) = VARIABLES.iter().position(|v| v.as_bytes() == name) else {
                    return;
                };
                if self.variables[i].is_none() {
                    self.variables[i] = e.location.and_then(static_address);
                }
            }
            _ => {}
        }
    }
}

/// `DW_AT_data_member_location` as a constant, or a `DW_OP_plus_uconst` expression.
pub(super) fn member_offset<R: Reader>(value: AttributeValue<R>) -> Option<u64> {
    if let AttributeValue::Exprloc(expr) = &value {
        let mut r = expr.0.clone();
        if r.read_u8().ok()? == gimli::DW_OP_plus_uconst.0 {
            let off = r.read_uleb128().ok()?;
            return r.is_empty().then_some(off);
        }
        return None;
    }
    value.udata_value()
}

/// `DW_AT_location` of a static variable: a lone `DW_OP_addr`.
pub(super) fn static_address<R: Reader>(value: AttributeValue<R>) -> Option<u64> {
    let AttributeValue::Exprloc(expr) = value else {
        return None;
    };
    let mut r = expr.0.clone();
    if r.read_u8().ok()? != gimli::DW_OP_addr.0 {
        return None;
    }
    let addr = r.read_u64().ok()?;
    r.is_empty().then_some(addr)
}

pub(super) fn const_u64<R: Reader>(value: AttributeValue<R>) -> Option<u64> {
    match value {
        AttributeValue::Sdata(v) => u64::try_from(v).ok(),
        AttributeValue::Udata(v) => Some(v),
        v => v.udata_value(),
    }
}
