//! Program counter -> function, file and line (with inlined frames), from
//! DWARF, or from the Go pclntab when the binary has no DWARF.

use std::path::Path;
use std::sync::{Arc, Mutex};

use super::BinaryError;
use super::dwarf::{Reader, err};
use super::pclntab::Pclntab;
use super::symbols::SymbolTable;

pub use super::frame::Frame;

/// Symbolizes addresses of one binary. Owns its DWARF data, so it outlives
/// the [`GoBinary`](super::GoBinary) it came from; `Send + Sync`.
pub struct Symbolizer {
    /// `addr2line::Context` parses lazily through `OnceCell`s, which are not
    /// `Sync`; the mutex makes the symbolizer shareable between threads.
    ctx: Option<Mutex<addr2line::Context<Reader>>>,
    /// Used when there is no DWARF.
    pclntab: Option<Arc<Pclntab>>,
    symbols: Arc<SymbolTable>,
}

impl Symbolizer {
    /// Builds a symbolizer from loaded DWARF (`None`: symbol names only).
    pub(crate) fn new(
        dwarf: Option<gimli::Dwarf<Reader>>,
        symbols: Arc<SymbolTable>,
        path: &Path,
    ) -> Result<Symbolizer, BinaryError> {
        let ctx = match dwarf {
            Some(d) => Some(Mutex::new(
                addr2line::Context::from_dwarf(d).map_err(err(path))?,
            )),
            None => None,
        };
        Ok(Symbolizer {
            ctx,
            pclntab: None,
            symbols,
        })
    }

    /// A symbolizer that only knows symbol names (no files or lines).
    pub fn from_symbols(symbols: Arc<SymbolTable>) -> Symbolizer {
        Symbolizer {
            ctx: None,
            pclntab: None,
            symbols,
        }
    }

    /// A symbolizer reading the Go pclntab: functions, files, lines and
    /// (when `moduledata.gofunc` was found) inlined frames.
    pub fn from_pclntab(pclntab: Arc<Pclntab>, symbols: Arc<SymbolTable>) -> Symbolizer {
        Symbolizer {
            ctx: None,
            pclntab: Some(pclntab),
            symbols,
        }
    }

    /// True when this symbolizer reads the pclntab (the binary has no DWARF).
    pub fn uses_pclntab(&self) -> bool {
        self.ctx.is_none() && self.pclntab.is_some()
    }

    /// `pc` is a vaddr in the binary. `is_return_address`: true for every
    /// frame except the innermost; then pc-1 is looked up so that the line
    /// of the call instruction is reported.
    ///
    /// Returns frames innermost first, including inlined frames. Without
    /// DWARF the pclntab answers (the same frames). Falls back to the
    /// symbol-table name (file `None`, line 0) when there is no line info for
    /// `pc`; an unknown pc gives one frame named "0x<hex>".
    pub fn symbolize(&self, pc: u64, is_return_address: bool) -> Vec<Frame> {
        let probe = if is_return_address {
            pc.saturating_sub(1)
        } else {
            pc
        };
        let sym_name = self.symbols.containing(probe).map(|s| s.name.as_str());
        let mut frames = self.dwarf_frames(pc, probe, sym_name).unwrap_or_else(|e| {
            log::debug!("DWARF lookup of {probe:#x} failed: {e}");
            Vec::new()
        });
        if frames.is_empty()
            && self.ctx.is_none()
            && let Some(p) = &self.pclntab
        {
            frames = p.frames(probe).unwrap_or_default();
        }
        if frames.is_empty() {
            frames.push(Frame {
                function: sym_name.map_or_else(|| format!("{pc:#x}"), str::to_string),
                file: None,
                line: 0,
            });
        }
        frames
    }

    fn dwarf_frames(
        &self,
        pc: u64,
        probe: u64,
        sym_name: Option<&str>,
    ) -> Result<Vec<Frame>, gimli::Error> {
        let Some(ctx) = &self.ctx else {
            return Ok(Vec::new());
        };
        // addr2line looks up [probe, probe + 1), which overflows (a panic in
        // debug builds) for the last address; no code is there anyway.
        if probe == u64::MAX {
            return Ok(Vec::new());
        }
        let ctx = ctx.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut iter = ctx.find_frames(probe).skip_all_loads()?;
        let mut frames = Vec::new();
        while let Some(f) = iter.next()? {
            let function = match &f.function {
                Some(name) => Some(name.raw_name()?.into_owned()),
                None => None,
            };
            let (file, line) = match &f.location {
                Some(loc) => (loc.file.map(str::to_string), loc.line.unwrap_or(0)),
                None => (None, 0),
            };
            frames.push(Frame {
                function: function.unwrap_or_default(),
                file,
                line,
            });
        }
        // Line info without a subprogram DIE: name the outermost frame from
        // the symbol table.
        let n = frames.len();
        for (i, f) in frames.iter_mut().enumerate() {
            if f.function.is_empty() {
                f.function = match sym_name {
                    Some(name) if i + 1 == n => name.to_string(),
                    _ => format!("{pc:#x}"),
                };
            }
        }
        Ok(frames)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gobin::symbols::FuncSymbol;

    #[test]
    fn symtab_only() {
        let table = SymbolTable::from_funcs(vec![FuncSymbol {
            name: "main.f".into(),
            addr: 0x1000,
            size: 0x20,
        }]);
        let s = Symbolizer::from_symbols(Arc::new(table));
        let f = s.symbolize(0x1010, false);
        assert_eq!(
            f,
            vec![Frame {
                function: "main.f".into(),
                file: None,
                line: 0
            }]
        );
        // A return address just past the end still belongs to the caller.
        assert_eq!(s.symbolize(0x1020, true)[0].function, "main.f");
        assert_eq!(s.symbolize(0x1020, false)[0].function, "0x1020");
        assert_eq!(s.symbolize(0x10, false)[0].function, "0x10");
    }

    #[test]
    fn is_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<Symbolizer>();
    }
}
