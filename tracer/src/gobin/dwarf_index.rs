//! A general reader of Go DWARF: named types (struct members with their
//! offsets and widths, type sizes), package-level constants and the
//! addresses of package-level variables.
//!
//! [`DwarfIndex::build`] makes one pass over `.debug_info` and remembers
//! where each wanted name is; types are decoded on demand from there. Go
//! emits every type in one unit and refers to it from the others
//! (`DW_FORM_ref_addr`), so references are kept as `.debug_info` offsets.
//! Slower than the one-shot scanner of `layout.rs` (it reads every unit),
//! but it answers any question about the named items.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use gimli::{AttributeValue, DebugInfoOffset, Reader as _};

use super::BinaryError;
use super::dwarf::{Reader, err};
use super::layout::{const_u64, member_offset, static_address};

/// `DW_AT_go_embedded_field`: the member is an embedded struct.
const DW_AT_GO_EMBEDDED_FIELD: gimli::DwAt = gimli::DwAt(0x2903);
/// How many typedefs a type may go through before it is called a loop.
const MAX_TYPE_HOPS: usize = 32;

/// A package-level variable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Variable {
    /// Link-time address.
    pub addr: u64,
    /// `.debug_info` offset of its type.
    pub ty: Option<u64>,
}

/// One member of a struct type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub off: u64,
    /// `.debug_info` offset of its type.
    pub ty: Option<u64>,
    /// An embedded field (`struct { T; ... }`).
    pub embedded: bool,
}

/// A struct type and its members, in declaration order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StructType {
    pub name: String,
    pub size: u64,
    pub members: Vec<Member>,
}

impl StructType {
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }
}

/// The attributes of one DIE that type decoding looks at.
struct Die {
    tag: gimli::DwTag,
    name: Option<String>,
    byte_size: Option<u64>,
    ty: Option<u64>,
    member_location: Option<u64>,
    count: Option<u64>,
    embedded: bool,
}

/// One unit: its header and abbreviations, and where it sits in `.debug_info`.
struct UnitInfo {
    start: u64,
    end: u64,
    header: gimli::UnitHeader<Reader>,
    abbrevs: Arc<gimli::Abbreviations>,
}

/// Where the named items of one binary's DWARF are.
pub struct DwarfIndex {
    dwarf: gimli::Dwarf<Reader>,
    units: Vec<UnitInfo>,
    /// Named types (struct, typedef, base, pointer...): the first DIE of each name.
    types: HashMap<String, u64>,
    constants: HashMap<String, i64>,
    variables: HashMap<String, Variable>,
}

impl DwarfIndex {
    /// Reads every unit of `dwarf` once, keeping the types, constants and
    /// variables whose name `wanted` accepts (e.g. a package prefix).
    pub fn build(
        dwarf: gimli::Dwarf<Reader>,
        path: &Path,
        wanted: impl Fn(&[u8]) -> bool,
    ) -> Result<DwarfIndex, BinaryError> {
        let e = err(path);
        let mut index = DwarfIndex {
            dwarf,
            units: Vec::new(),
            types: HashMap::new(),
            constants: HashMap::new(),
            variables: HashMap::new(),
        };
        let mut headers = index.dwarf.units();
        while let Some(header) = headers.next().map_err(&e)? {
            let Some(start) = header.debug_info_offset() else {
                continue;
            };
            let abbrevs = index.dwarf.abbreviations(&header).map_err(&e)?;
            let start = start.0 as u64;
            let end = start + header.length_including_self() as u64;
            let unit = UnitInfo {
                start,
                end,
                header,
                abbrevs,
            };
            index.scan_unit(&unit, &wanted).map_err(&e)?;
            index.units.push(unit);
        }
        Ok(index)
    }

    /// Records the unit's top-level named types, constants and variables.
    fn scan_unit(&mut self, unit: &UnitInfo, wanted: &impl Fn(&[u8]) -> bool) -> gimli::Result<()> {
        let mut raw = unit.header.entries_raw(&unit.abbrevs, None)?;
        while !raw.is_empty() {
            let depth = raw.next_depth();
            let offset = raw.next_offset();
            let Some(abbrev) = raw.read_abbreviation()? else {
                continue;
            };
            let tag = abbrev.tag();
            // Go puts package-level items right under the unit.
            let kept = depth == 1
                && matches!(
                    tag,
                    gimli::DW_TAG_structure_type
                        | gimli::DW_TAG_typedef
                        | gimli::DW_TAG_base_type
                        | gimli::DW_TAG_pointer_type
                        | gimli::DW_TAG_array_type
                        | gimli::DW_TAG_constant
                        | gimli::DW_TAG_variable
                );
            if !kept {
                raw.skip_attributes(abbrev.attributes())?;
                continue;
            }
            let (mut name, mut location, mut value, mut ty) = (None, None, None, None);
            for spec in abbrev.attributes() {
                let attr = raw.read_attribute(*spec)?;
                match attr.name() {
                    gimli::DW_AT_name => name = Some(attr.value()),
                    gimli::DW_AT_location => location = Some(attr.value()),
                    gimli::DW_AT_const_value => value = Some(attr.value()),
                    gimli::DW_AT_type => ty = Some(attr.value()),
                    _ => {}
                }
            }
            let Some(name) = name.and_then(|n| self.string(n)) else {
                continue;
            };
            if !wanted(name.as_bytes()) {
                continue;
            }
            match tag {
                gimli::DW_TAG_constant => {
                    if let Some(v) = value.and_then(const_i64) {
                        self.constants.entry(name).or_insert(v);
                    }
                }
                gimli::DW_TAG_variable => {
                    let Some(addr) = location.and_then(static_address) else {
                        continue;
                    };
                    let ty = ty.and_then(|t| global_ref(&unit.header, t));
                    self.variables.entry(name).or_insert(Variable { addr, ty });
                }
                _ => {
                    let global = offset.to_debug_info_offset(&unit.header);
                    if let Some(off) = global {
                        self.types.entry(name).or_insert(off.0 as u64);
                    }
                }
            }
        }
        Ok(())
    }

    /// A string attribute's value (Go writes names inline; `.debug_str`
    /// references are read too).
    fn string(&self, value: AttributeValue<Reader>) -> Option<String> {
        let r = match value {
            AttributeValue::String(r) => r,
            AttributeValue::DebugStrRef(o) => self.dwarf.debug_str.get_str(o).ok()?,
            AttributeValue::DebugLineStrRef(o) => self.dwarf.debug_line_str.get_str(o).ok()?,
            _ => return None,
        };
        Some(r.to_string_lossy().ok()?.into_owned())
    }

    pub fn constant(&self, name: &str) -> Option<i64> {
        self.constants.get(name).copied()
    }

    pub fn variable(&self, name: &str) -> Option<Variable> {
        self.variables.get(name).copied()
    }

    /// Names of the indexed types that start with `prefix`.
    pub fn type_names<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.types
            .keys()
            .filter(move |n| n.starts_with(prefix))
            .map(String::as_str)
    }

    /// `.debug_info` offset of the named type.
    pub fn type_offset(&self, name: &str) -> Option<u64> {
        self.types.get(name).copied()
    }

    /// The named struct type (through typedefs).
    pub fn structure(&self, name: &str) -> Result<StructType, BinaryError> {
        let off = self
            .type_offset(name)
            .ok_or_else(|| BinaryError::NotInDwarf(name.to_string()))?;
        self.structure_at(off)?
            .ok_or_else(|| BinaryError::NotInDwarf(format!("{name} (not a struct)")))
    }

    /// The struct type at `off` (through typedefs), None if it is another kind.
    pub fn structure_at(&self, off: u64) -> Result<Option<StructType>, BinaryError> {
        let off = self.strip_typedefs(off)?;
        let (die, children) = self.read(off, true)?;
        if die.tag != gimli::DW_TAG_structure_type {
            return Ok(None);
        }
        let members = children
            .into_iter()
            .filter(|c| c.tag == gimli::DW_TAG_member)
            .filter_map(|c| {
                Some(Member {
                    name: c.name?,
                    off: c.member_location?,
                    ty: c.ty,
                    embedded: c.embedded,
                })
            })
            .collect();
        Ok(Some(StructType {
            name: die.name.unwrap_or_default(),
            size: die.byte_size.unwrap_or(0),
            members,
        }))
    }

    /// Bytes of the type at `off`: its `DW_AT_byte_size`, through typedefs;
    /// a pointer without one is 8 bytes, an array without one is count ×
    /// element.
    pub fn type_size(&self, off: u64) -> Result<u64, BinaryError> {
        self.type_size_within(off, MAX_TYPE_HOPS)
    }

    /// [`type_size`](Self::type_size) through at most `hops` nested arrays
    /// (a malformed type may contain itself).
    fn type_size_within(&self, off: u64, hops: usize) -> Result<u64, BinaryError> {
        let off = self.strip_typedefs(off)?;
        let (die, children) = self.read(off, true)?;
        if let Some(size) = die.byte_size {
            return Ok(size);
        }
        match die.tag {
            gimli::DW_TAG_pointer_type => Ok(8),
            gimli::DW_TAG_array_type => {
                let count = children.iter().find_map(|c| c.count).unwrap_or(0);
                let elem = die
                    .ty
                    .ok_or_else(|| self.bad(off, "array without a type"))?;
                let hops = hops
                    .checked_sub(1)
                    .ok_or_else(|| self.bad(off, "arrays nested too deep"))?;
                Ok(count.saturating_mul(self.type_size_within(elem, hops)?))
            }
            _ => Err(self.bad(off, "type without a size")),
        }
    }

    /// `.debug_info` offset of the element type of the array type at `off`.
    pub fn array_element(&self, off: u64) -> Result<u64, BinaryError> {
        let off = self.strip_typedefs(off)?;
        let (die, _) = self.read(off, false)?;
        match (die.tag, die.ty) {
            (gimli::DW_TAG_array_type, Some(elem)) => Ok(elem),
            _ => Err(self.bad(off, "not an array")),
        }
    }

    /// Follows typedefs from `off` to the type they name.
    fn strip_typedefs(&self, mut off: u64) -> Result<u64, BinaryError> {
        for _ in 0..MAX_TYPE_HOPS {
            let (die, _) = self.read(off, false)?;
            if die.tag != gimli::DW_TAG_typedef {
                return Ok(off);
            }
            off = die
                .ty
                .ok_or_else(|| self.bad(off, "typedef without a type"))?;
        }
        Err(self.bad(off, "typedef loop"))
    }

    fn bad(&self, off: u64, msg: &str) -> BinaryError {
        BinaryError::NotInDwarf(format!("type at .debug_info+{off:#x}: {msg}"))
    }

    /// The DIE at `.debug_info` offset `off`, and its direct children when
    /// `children` is set.
    fn read(&self, off: u64, children: bool) -> Result<(Die, Vec<Die>), BinaryError> {
        // Units are in section order.
        let i = self.units.partition_point(|u| u.end <= off);
        let unit = self
            .units
            .get(i)
            .filter(|u| u.start <= off)
            .ok_or_else(|| self.bad(off, "outside every unit"))?;
        let e = |err: gimli::Error| self.bad(off, &err.to_string());
        let unit_off = DebugInfoOffset(off as usize)
            .to_unit_offset(&unit.header)
            .ok_or_else(|| self.bad(off, "not in its unit"))?;
        let mut raw = unit
            .header
            .entries_raw(&unit.abbrevs, Some(unit_off))
            .map_err(e)?;
        let mut entry = gimli::DebuggingInformationEntry::null();
        if !raw.read_entry(&mut entry).map_err(e)? {
            return Err(self.bad(off, "null entry"));
        }
        let die = self.decode(&unit.header, &entry);
        let mut kids = Vec::new();
        if children && entry.has_children() {
            // Children are at depth 1 relative to `off`, until the null
            // entry that brings the depth back to 0.
            while !raw.is_empty() && raw.next_depth() > 0 {
                let depth = raw.next_depth();
                if raw.read_entry(&mut entry).map_err(e)? && depth == 1 {
                    kids.push(self.decode(&unit.header, &entry));
                }
            }
        }
        Ok((die, kids))
    }

    fn decode(
        &self,
        header: &gimli::UnitHeader<Reader>,
        entry: &gimli::DebuggingInformationEntry<Reader>,
    ) -> Die {
        let mut die = Die {
            tag: entry.tag(),
            name: None,
            byte_size: None,
            ty: None,
            member_location: None,
            count: None,
            embedded: false,
        };
        for attr in entry.attrs() {
            match attr.name() {
                gimli::DW_AT_name => die.name = self.string(attr.value()),
                gimli::DW_AT_byte_size => die.byte_size = attr.value().udata_value(),
                gimli::DW_AT_type => die.ty = global_ref(header, attr.value()),
                gimli::DW_AT_data_member_location => {
                    die.member_location = member_offset(attr.value())
                }
                gimli::DW_AT_count => die.count = attr.value().udata_value(),
                gimli::DW_AT_upper_bound => {
                    die.count = attr.value().udata_value().map(|u| u.saturating_add(1))
                }
                DW_AT_GO_EMBEDDED_FIELD => {
                    die.embedded = match attr.value() {
                        AttributeValue::Flag(f) => f,
                        v => v.udata_value().is_some_and(|v| v != 0),
                    }
                }
                _ => {}
            }
        }
        die
    }
}

/// A type reference as a `.debug_info` offset.
fn global_ref(header: &gimli::UnitHeader<Reader>, value: AttributeValue<Reader>) -> Option<u64> {
    match value {
        AttributeValue::UnitRef(o) => o.to_debug_info_offset(header).map(|g| g.0 as u64),
        AttributeValue::DebugInfoRef(o) => Some(o.0 as u64),
        _ => None,
    }
}

/// A constant's value as a signed 64-bit number (an unsigned one above
/// `i64::MAX` keeps its bits).
fn const_i64(value: AttributeValue<Reader>) -> Option<i64> {
    match value {
        AttributeValue::Sdata(v) => Some(v),
        v => const_u64(v).map(|u| u as i64),
    }
}
