//! Offsets of `runtime.g` fields and wait-reason constants, read from DWARF.

use std::collections::BTreeMap;
use std::path::Path;

use gimli::{AttributeValue, Reader};

use super::BinaryError;
use super::dwarf::err;

/// What the eBPF side needs to know about the Go runtime of one binary.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RuntimeLayout {
    pub g_goid: u64,
    /// `runtime.g.parentGoid` (absent before Go 1.21).
    pub g_parent_goid: Option<u64>,
    pub g_gopc: u64,
    pub g_startpc: u64,
    pub g_atomicstatus: u64,
    pub g_waitreason: u64,
    pub g_waitsince: u64,
    pub g_sched: u64,
    /// `runtime.waitReason` value -> constant name without the "runtime."
    /// prefix, e.g. 14 -> "waitReasonChanReceive".
    pub wait_reasons: BTreeMap<u8, String>,
}

const G_FIELDS: [&str; 8] = [
    "goid",
    "parentGoid",
    "gopc",
    "startpc",
    "atomicstatus",
    "waitreason",
    "waitsince",
    "sched",
];
const WAIT_REASON_PREFIX: &[u8] = b"runtime.waitReason";

#[derive(Default)]
struct Scan {
    g_found: bool,
    fields: [Option<u64>; G_FIELDS.len()],
    wait_reasons: BTreeMap<u8, String>,
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
        // The constants of package runtime all live in one unit, so once both
        // parts were seen and a unit is finished, the rest can be skipped.
        if scan.g_found && !scan.wait_reasons.is_empty() {
            break;
        }
    }
    if !scan.g_found {
        return Err(BinaryError::NoRuntimeG);
    }
    let field = |name: &str| -> Result<u64, BinaryError> {
        let i = G_FIELDS
            .iter()
            .position(|f| *f == name)
            .expect("known field");
        scan.fields[i].ok_or_else(|| BinaryError::MissingField(name.to_string()))
    };
    if scan.wait_reasons.is_empty() {
        log::warn!(
            "{}: no runtime.waitReason* constants in DWARF",
            path.display()
        );
    }
    Ok(RuntimeLayout {
        g_goid: field("goid")?,
        g_parent_goid: field("parentGoid").ok(),
        g_gopc: field("gopc")?,
        g_startpc: field("startpc")?,
        g_atomicstatus: field("atomicstatus")?,
        g_waitreason: field("waitreason")?,
        g_waitsince: field("waitsince")?,
        g_sched: field("sched")?,
        wait_reasons: scan.wait_reasons,
    })
}

fn scan_unit<R: Reader>(
    dwarf: &gimli::Dwarf<R>,
    unit: &gimli::Unit<R>,
    scan: &mut Scan,
) -> gimli::Result<()> {
    let mut raw = unit.entries_raw(None)?;
    // Depth of the members of runtime.g while we are inside it.
    let mut g_members_depth: Option<isize> = None;
    while !raw.is_empty() {
        let depth = raw.next_depth();
        let Some(abbrev) = raw.read_abbreviation()? else {
            continue;
        };
        if g_members_depth.is_some_and(|d| depth < d) {
            g_members_depth = None;
        }
        let tag = abbrev.tag();
        let wanted = match tag {
            gimli::DW_TAG_structure_type => !scan.g_found,
            gimli::DW_TAG_member => g_members_depth == Some(depth),
            gimli::DW_TAG_constant => true,
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
                gimli::DW_AT_data_member_location => location = Some(attr.value()),
                gimli::DW_AT_const_value => const_value = Some(attr.value()),
                _ => {}
            }
        }
        let Some(name) = name else { continue };
        let name = dwarf.attr_string(unit, name)?;
        let name = name.to_slice()?;
        match tag {
            gimli::DW_TAG_structure_type if &*name == b"runtime.g" => {
                scan.g_found = true;
                if abbrev.has_children() {
                    g_members_depth = Some(depth + 1);
                }
            }
            gimli::DW_TAG_member => {
                let Some(i) = G_FIELDS.iter().position(|f| f.as_bytes() == &*name) else {
                    continue;
                };
                scan.fields[i] = location.and_then(member_offset);
            }
            gimli::DW_TAG_constant if name.starts_with(WAIT_REASON_PREFIX) => {
                let Some(value) = const_value.and_then(const_u64) else {
                    continue;
                };
                let Ok(value) = u8::try_from(value) else {
                    log::warn!("wait reason constant out of u8 range: {value}");
                    continue;
                };
                let short = String::from_utf8_lossy(&name["runtime.".len()..]).into_owned();
                scan.wait_reasons.entry(value).or_insert(short);
            }
            _ => {}
        }
    }
    Ok(())
}

/// `DW_AT_data_member_location` as a constant, or a `DW_OP_plus_uconst` expression.
fn member_offset<R: Reader>(value: AttributeValue<R>) -> Option<u64> {
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

fn const_u64<R: Reader>(value: AttributeValue<R>) -> Option<u64> {
    match value {
        AttributeValue::Sdata(v) => u64::try_from(v).ok(),
        AttributeValue::Udata(v) => Some(v),
        v => v.udata_value(),
    }
}
