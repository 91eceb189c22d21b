//! Static itabs without itab symbols (Go 1.27): walk
//! `runtime.firstmoduledata.itablinks` and name each itab from its first
//! method, as `T,I` like the `go:itab.T,I` symbols of older releases.

use std::collections::HashMap;

use super::{BinaryError, GoBinary};

/// `runtime.itab`: inter, _type, hash (+pad), fun[0] at 24.
const ITAB_FUN0: u64 = 24;
/// Far more than any program has; guards against a misread length.
const MAX_ITABS: u64 = 1 << 20;

/// The interface an itab implements, from the name of its method at
/// `index` (methods are sorted, exported names first).
fn interface_of(method: &str, index: u64) -> &'static str {
    match (method, index) {
        ("Deadline", 0) | ("Done", 1) | ("Err", 2) | ("Value", 3) => "context.Context",
        ("Done", 0) | ("cancel", 1) => "context.canceler",
        ("Error", 0) => "error",
        _ => "?",
    }
}

/// What the linker puts in an itab slot whose method nothing calls.
const UNREACHABLE: &str = "runtime.unreachableMethod";

/// `context.(*cancelCtx).Done` → (`*context.cancelCtx`, `Done`);
/// `context.backgroundCtx.Deadline` → (`context.backgroundCtx`, `Deadline`).
pub fn receiver_and_method(function: &str) -> Option<(String, &str)> {
    let (recv, method) = function.rsplit_once('.')?;
    if let Some((pkg, rest)) = recv.split_once(".(*") {
        let ty = rest.strip_suffix(')')?;
        return Some((format!("*{pkg}.{ty}"), method));
    }
    Some((recv.to_string(), method))
}

/// Size of `runtime.itab` with one method slot.
const ITAB_SIZE: u64 = 32;

/// `abi.Kind` of pointers (the same number since reflect.Ptr).
const KIND_POINTER: u8 = 22;
const KIND_MASK: u8 = 0x1f;

/// Names the itab at `itab` from its first method that is not
/// [`UNREACHABLE`] (of its first `n`); returns its `fun[0]` (0: the type
/// does not implement the interface).
fn name_itab(
    bin: &GoBinary,
    itab: u64,
    (kind_off, n): (Option<u64>, u64),
    found: &mut HashMap<u64, String>,
) -> Option<u64> {
    let fun0 = bin.read_u64(itab.checked_add(ITAB_FUN0)?)?;
    if fun0 == 0 {
        return Some(0);
    }
    let named = (0..n.clamp(1, 64)).find_map(|i| {
        let fun = bin.read_u64(itab.checked_add(ITAB_FUN0 + 8 * i)?)?;
        let f = bin.symbols().containing(fun)?;
        (f.name != UNREACHABLE).then(|| (i, f.name.clone()))
    });
    let Some((index, function)) = named else {
        return Some(fun0);
    };
    let (mut ty, method) = receiver_and_method(&function)?;
    // Value types' itabs hold the (*T).M wrappers: the _type's kind says
    // whether the dynamic type really is a pointer.
    let kind = kind_off
        .and_then(|off| bin.read_u64(bin.read_u64(itab.checked_add(8)?)?.checked_add(off)?))
        .map(|word| (word & 0xff) as u8 & KIND_MASK);
    if let (Some(k), Some(stripped)) = (kind, ty.strip_prefix('*'))
        && k != KIND_POINTER
    {
        ty = stripped.to_string();
    }
    found.insert(itab, format!("{ty},{}", interface_of(method, index)));
    Some(fun0)
}

/// How many methods the interface of `itab` has (1 when unknown).
fn method_count(bin: &GoBinary, itab: u64, methods: Option<u64>) -> u64 {
    let inter = bin.read_u64(itab).unwrap_or(0);
    methods
        .and_then(|m| inter.checked_add(m))
        .and_then(|a| a.checked_add(8))
        .and_then(|a| bin.read_u64(a))
        .unwrap_or(1)
        .clamp(1, MAX_ITABS)
}

pub fn from_moduledata(bin: &GoBinary) -> Result<HashMap<u64, String>, BinaryError> {
    let mut found = HashMap::new();
    let Some(&md) = bin
        .data_symbols(&["runtime.firstmoduledata"])?
        .get("runtime.firstmoduledata")
    else {
        return Ok(found);
    };
    let layout = bin.layout()?;
    let field = |off: Option<u64>| off.and_then(|o| bin.read_u64(md.checked_add(o)?));
    if let (Some(types), Some(itaboff), Some(size), Some(methods)) = (
        field(layout.moduledata_types),
        field(layout.moduledata_itaboffset),
        field(layout.moduledata_itabsize),
        layout.interface_methods,
    ) {
        // Go 1.27: variable-sized itabs back to back. Addresses that would
        // wrap around come from a corrupt file: the walk stops there.
        let Some(mut p) = types.checked_add(itaboff) else {
            return Ok(found);
        };
        let end = p.saturating_add(size.min(MAX_ITABS * 64));
        while p < end {
            let n = method_count(bin, p, Some(methods));
            let Some(fun0) = name_itab(bin, p, (layout.type_kind, n), &mut found) else {
                break;
            };
            let n = if fun0 == 0 { 1 } else { n };
            let Some(next) = p.checked_add(ITAB_SIZE + (n - 1) * 8) else {
                break;
            };
            p = next;
        }
        return Ok(found);
    }
    if let Some(off) = layout.moduledata_itablinks {
        let at = |o: u64| md.checked_add(off)?.checked_add(o);
        let (Some(ptr), Some(len)) = (
            at(0).and_then(|a| bin.read_u64(a)),
            at(8).and_then(|a| bin.read_u64(a)),
        ) else {
            return Ok(found);
        };
        for i in 0..len.min(MAX_ITABS) {
            let Some(itab) = ptr.checked_add(8 * i).and_then(|a| bin.read_u64(a)) else {
                break;
            };
            let n = method_count(bin, itab, layout.interface_methods);
            name_itab(bin, itab, (layout.type_kind, n), &mut found);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gobin::testutil::probe;

    /// Where both exist, walking the module data names every itab exactly as
    /// its `go:itab.` symbol does.
    #[test]
    fn moduledata_walk_matches_itab_symbols() {
        for minor in ["1.21", "1.26"] {
            let bin = GoBinary::open(&probe(minor)).unwrap();
            let by_symbol = bin.itabs().unwrap();
            let walked = from_moduledata(&bin).unwrap();
            let mut context_named = 0;
            assert!(by_symbol.len() > 5, "Go {minor}: {by_symbol:?}");
            for (addr, name) in &by_symbol {
                // Only interfaces we name (Context, canceler, error) compare.
                if name.ends_with(",error") {
                    assert_eq!(walked.get(addr), Some(name), "Go {minor} itab {addr:#x}");
                }
                // A Context itab whose methods nothing calls stays unnamed;
                // one named is named right.
                if name.ends_with(",context.Context")
                    && let Some(w) = walked.get(addr)
                {
                    assert_eq!(w, name, "Go {minor} itab {addr:#x}");
                    context_named += 1;
                }
            }
            assert!(context_named > 0, "Go {minor}: {walked:?}");
        }
    }

    #[test]
    fn method_names_to_types() {
        assert_eq!(
            receiver_and_method("context.(*cancelCtx).Done"),
            Some(("*context.cancelCtx".to_string(), "Done"))
        );
        assert_eq!(
            receiver_and_method("context.backgroundCtx.Deadline"),
            Some(("context.backgroundCtx".to_string(), "Deadline"))
        );
        assert_eq!(
            receiver_and_method("errors.(*errorString).Error"),
            Some(("*errors.errorString".to_string(), "Error"))
        );
        assert_eq!(interface_of("Done", 0), "context.canceler");
        assert_eq!(interface_of("Done", 1), "context.Context");
        assert_eq!(interface_of("Value", 3), "context.Context");
    }
}
