//! Function symbols from the ELF `.symtab`, or from the Go pclntab when the
//! binary is stripped.

use std::collections::HashMap;

use object::{Object, ObjectSymbol, SymbolKind};

/// A function (text) symbol.
#[derive(Clone, Debug)]
pub struct FuncSymbol {
    pub name: String,
    pub addr: u64,
    pub size: u64,
}

/// Text symbols sorted by address, with a by-name index.
#[derive(Clone, Debug, Default)]
pub struct SymbolTable {
    /// Sorted by `addr`.
    funcs: Vec<FuncSymbol>,
    by_name: HashMap<String, usize>,
}

impl SymbolTable {
    /// Reads the text symbols of `.symtab` (empty for `-ldflags=-s` binaries).
    pub fn from_object<'data>(obj: &impl Object<'data>) -> SymbolTable {
        let funcs = obj
            .symbols()
            .filter(|s| s.kind() == SymbolKind::Text && s.is_definition() && s.address() != 0)
            .filter_map(|s| {
                Some(FuncSymbol {
                    name: s.name().ok()?.to_string(),
                    addr: s.address(),
                    size: s.size(),
                })
            })
            .collect();
        SymbolTable::from_funcs(funcs)
    }

    /// Builds a table from arbitrary symbols (sorted here).
    pub fn from_funcs(mut funcs: Vec<FuncSymbol>) -> SymbolTable {
        funcs.sort_by(|a, b| a.addr.cmp(&b.addr).then(b.size.cmp(&a.size)));
        let mut by_name = HashMap::with_capacity(funcs.len());
        for (i, f) in funcs.iter().enumerate() {
            by_name.entry(f.name.clone()).or_insert(i);
        }
        SymbolTable { funcs, by_name }
    }

    /// The symbol named exactly `name`.
    pub fn lookup(&self, name: &str) -> Option<&FuncSymbol> {
        self.by_name.get(name).map(|&i| &self.funcs[i])
    }

    /// The function whose `[addr, addr+size)` contains `addr`. A symbol of
    /// size 0 is taken to extend up to the next symbol.
    pub fn containing(&self, addr: u64) -> Option<&FuncSymbol> {
        let idx = self.funcs.partition_point(|f| f.addr <= addr);
        let i = idx.checked_sub(1)?;
        // Several symbols may share a start address: prefer one that covers `addr`.
        let start = self.funcs[i].addr;
        let first = self.funcs[..=i].partition_point(|f| f.addr < start);
        for f in &self.funcs[first..=i] {
            let end = if f.size > 0 {
                f.addr.saturating_add(f.size)
            } else {
                self.funcs.get(idx).map_or(u64::MAX, |n| n.addr)
            };
            if addr < end {
                return Some(f);
            }
        }
        None
    }

    /// All symbols, sorted by address.
    pub fn iter(&self) -> impl Iterator<Item = &FuncSymbol> {
        self.funcs.iter()
    }

    pub fn len(&self) -> usize {
        self.funcs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.funcs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(name: &str, addr: u64, size: u64) -> FuncSymbol {
        FuncSymbol {
            name: name.into(),
            addr,
            size,
        }
    }

    #[test]
    fn lookup_and_containing() {
        let t = SymbolTable::from_funcs(vec![
            sym("c", 0x300, 0),
            sym("a", 0x100, 0x10),
            sym("b", 0x200, 0x20),
        ]);
        assert_eq!(t.len(), 3);
        assert_eq!(t.lookup("b").unwrap().addr, 0x200);
        assert!(t.lookup("zz").is_none());
        assert!(t.containing(0xff).is_none());
        assert_eq!(t.containing(0x100).unwrap().name, "a");
        assert_eq!(t.containing(0x10f).unwrap().name, "a");
        assert!(t.containing(0x110).is_none());
        assert_eq!(t.containing(0x21f).unwrap().name, "b");
        assert_eq!(t.containing(0x5000).unwrap().name, "c");
        assert!(SymbolTable::default().containing(1).is_none());
    }
}
