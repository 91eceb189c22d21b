//! Loading (and decompressing) DWARF sections into owned buffers.

use std::path::Path;
use std::sync::Arc;

use object::{Object, ObjectSection};

use super::BinaryError;

/// Reader over owned, shareable section data (Send + Sync).
pub(crate) type Reader = gimli::EndianArcSlice<gimli::RunTimeEndian>;

/// Loads every DWARF section of `obj`, decompressing `SHF_COMPRESSED` and
/// `.zdebug_*` sections. Fails with [`BinaryError::NoDwarf`] if the binary
/// has no `.debug_info`.
pub(crate) fn load<'data>(
    obj: &impl Object<'data>,
    path: &Path,
) -> Result<gimli::Dwarf<Reader>, BinaryError> {
    load_only(obj, path, |_| true)
}

/// Like [`load`], decompressing only the sections `wanted` accepts (the
/// others are left empty): a reader of types and variables needs neither
/// line tables nor location lists.
pub(crate) fn load_only<'data>(
    obj: &impl Object<'data>,
    path: &Path,
    wanted: impl Fn(gimli::SectionId) -> bool,
) -> Result<gimli::Dwarf<Reader>, BinaryError> {
    if obj.section_by_name(".debug_info").is_none() {
        return Err(BinaryError::NoDwarf {
            path: path.to_path_buf(),
        });
    }
    let endian = if obj.is_little_endian() {
        gimli::RunTimeEndian::Little
    } else {
        gimli::RunTimeEndian::Big
    };
    let load_section = |id: gimli::SectionId| -> Result<Reader, BinaryError> {
        // `section_by_name` also finds the ".zdebug_" spelling.
        let data: Arc<[u8]> = match obj.section_by_name(id.name()) {
            Some(section) if wanted(id) => {
                let data = section
                    .uncompressed_data()
                    .map_err(|e| BinaryError::BadDwarf {
                        path: path.to_path_buf(),
                        msg: format!("{}: {e}", id.name()),
                    })?;
                Arc::from(data.as_ref())
            }
            _ => Arc::from(&[][..]),
        };
        Ok(gimli::EndianArcSlice::new(data, endian))
    };
    gimli::Dwarf::load(load_section)
}

/// Converts a gimli error into a [`BinaryError::BadDwarf`] for `path`.
pub(crate) fn err(path: &Path) -> impl Fn(gimli::Error) -> BinaryError + '_ {
    move |e| BinaryError::BadDwarf {
        path: path.to_path_buf(),
        msg: e.to_string(),
    }
}
