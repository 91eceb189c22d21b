//! One context value read from memory: its type (from its itab), whether it
//! is cancelled, its Done channel, and the chain of its parents.

use std::collections::HashMap;

use crate::gobin::BinaryError;
use crate::gobin::dwarf_index::DwarfIndex;
use crate::process::mem::Memory;

/// Parents followed from a context, at most (cycle-safe either way).
pub const MAX_DEPTH: usize = 32;

/// Where the context package's fields are, from the binary's DWARF.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offsets {
    /// `cancelCtx.Context` (its parent), `.done` (an `atomic.Value`: the
    /// channel is its second word) and `.err` (an `error`, an
    /// `atomic.Value` from Go 1.26: either way non-zero once cancelled).
    pub cancel_parent: u64,
    pub cancel_done: u64,
    pub cancel_err: u64,
    /// Where `timerCtx` and `afterFuncCtx` embed their `cancelCtx`.
    pub timer_cancel: Option<u64>,
    pub after_func_cancel: Option<u64>,
    /// The parent interface of `valueCtx` and `stopCtx`.
    pub value_parent: Option<u64>,
    pub stop_parent: Option<u64>,
}

impl Offsets {
    /// The offsets of `bin`'s DWARF (an error without DWARF, or without
    /// `context.cancelCtx`: the program does not use cancelable contexts).
    pub fn from_dwarf(index: &DwarfIndex) -> Result<Offsets, BinaryError> {
        let cancel = index.structure("context.cancelCtx")?;
        let cancel_ty = index.type_offset("context.cancelCtx");
        let member = |name: &str| {
            cancel
                .member(name)
                .map(|m| m.off)
                .ok_or_else(|| BinaryError::MissingField(format!("context.cancelCtx.{name}")))
        };
        // An embedded cancelCtx counts only when it is one by value.
        let embedded = |strukt: &str| {
            let s = index.structure(strukt).ok()?;
            let m = s.member("cancelCtx")?;
            let ty = index.structure_at(m.ty?).ok()??;
            (Some(ty.name.as_str()) == Some("context.cancelCtx") && cancel_ty.is_some())
                .then_some(m.off)
        };
        let parent = |strukt: &str| {
            index
                .structure(strukt)
                .ok()?
                .member("Context")
                .map(|m| m.off)
        };
        Ok(Offsets {
            cancel_parent: member("Context")?,
            cancel_done: member("done")?,
            cancel_err: member("err")?,
            timer_cancel: embedded("context.timerCtx"),
            after_func_cancel: embedded("context.afterFuncCtx"),
            value_parent: parent("context.valueCtx"),
            stop_parent: parent("context.stopCtx"),
        })
    }
}

/// What a context's dynamic type says about reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Holds a `cancelCtx` at this offset.
    Cancel(u64),
    /// Wraps its parent (at this offset) without cancelling.
    Wrap(u64),
    /// Background/TODO or `WithoutCancel`: never cancelled.
    Root,
    /// A type memory cannot follow (the program's own, or a field the
    /// DWARF did not give).
    Unknown,
}

/// The kind of the dynamic type `ty` (`*context.cancelCtx`...).
pub fn kind_of(ty: &str, o: &Offsets) -> Kind {
    let or_unknown = |off: Option<u64>, f: fn(u64) -> Kind| off.map_or(Kind::Unknown, f);
    match ty {
        "*context.cancelCtx" => Kind::Cancel(0),
        "*context.timerCtx" => or_unknown(o.timer_cancel, Kind::Cancel),
        "*context.afterFuncCtx" => or_unknown(o.after_func_cancel, Kind::Cancel),
        "*context.valueCtx" => or_unknown(o.value_parent, Kind::Wrap),
        "*context.stopCtx" => or_unknown(o.stop_parent, Kind::Wrap),
        "context.backgroundCtx"
        | "context.todoCtx"
        | "*context.emptyCtx"
        | "context.withoutCancelCtx" => Kind::Root,
        _ => Kind::Unknown,
    }
}

/// One context as memory shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Read {
    /// Its dynamic type, then its parents' (innermost first).
    pub chain: Vec<String>,
    /// The chain was longer than [`MAX_DEPTH`] or looped.
    pub chain_cut: bool,
    /// Cancelled: the nearest `cancelCtx` of the chain has its `err` set
    /// (a cancel reaches every descendant, so the nearest one tells).
    /// None when a type on the way cannot be followed.
    pub cancelled: Option<bool>,
    /// The Done channel a `<-ctx.Done()` waits on (0: not made yet or
    /// never cancelable).
    pub done: u64,
    /// Words that could not be read.
    pub read_errors: u64,
}

/// Reads the context `(itab, data)`; `itabs` names the context itabs.
pub fn read(
    mem: &dyn Memory,
    itabs: &HashMap<u64, String>,
    o: &Offsets,
    (itab, data): (u64, u64),
) -> Read {
    let mut out = Read::default();
    let mut seen = Vec::new();
    let (mut itab, mut data) = (itab, data);
    loop {
        let Some(ty) = itabs.get(&itab) else {
            out.chain.push("?".into());
            return out;
        };
        out.chain
            .push(ty.trim_end_matches(",context.Context").to_string());
        if seen.contains(&data) || out.chain.len() > MAX_DEPTH {
            out.chain_cut = true;
            return out;
        }
        seen.push(data);
        let parent_at = match kind_of(ty.trim_end_matches(",context.Context"), o) {
            Kind::Unknown => return out,
            Kind::Root => {
                out.cancelled.get_or_insert(false);
                return out;
            }
            Kind::Wrap(off) => data.checked_add(off),
            Kind::Cancel(off) => {
                let c = data.wrapping_add(off);
                if out.cancelled.is_none() {
                    let words = (
                        mem.u64(c + o.cancel_err),
                        mem.u64(c + o.cancel_err + 8),
                        mem.u64(c + o.cancel_done + 8),
                    );
                    let (Some(e0), Some(e1), Some(done)) = words else {
                        out.read_errors += 1;
                        return out;
                    };
                    out.cancelled = Some(e0 != 0 || e1 != 0);
                    out.done = done;
                }
                c.checked_add(o.cancel_parent)
            }
        };
        let next = parent_at.and_then(|p| Some((mem.u64(p)?, mem.u64(p + 8)?)));
        match next {
            Some((0, _)) => return out,
            Some(n) => (itab, data) = n,
            None => {
                out.read_errors += 1;
                return out;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Memory of 8-byte words.
    struct Words(HashMap<u64, u64>);

    impl Memory for Words {
        fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
            for (i, chunk) in buf.chunks_mut(8).enumerate() {
                let Some(w) = self.0.get(&(addr + 8 * i as u64)) else {
                    return false;
                };
                chunk.copy_from_slice(&w.to_le_bytes()[..chunk.len()]);
            }
            true
        }
    }

    const O: Offsets = Offsets {
        cancel_parent: 0,
        cancel_done: 24,
        cancel_err: 48,
        timer_cancel: Some(0),
        after_func_cancel: None,
        value_parent: Some(0),
        stop_parent: None,
    };

    fn itabs() -> HashMap<u64, String> {
        [
            (0x10, "*context.cancelCtx,context.Context"),
            (0x20, "*context.valueCtx,context.Context"),
            (0x30, "context.backgroundCtx,context.Context"),
            (0x40, "*main.myCtx,context.Context"),
        ]
        .into_iter()
        .map(|(a, n)| (a, n.to_string()))
        .collect()
    }

    /// A cancelCtx at `at` with parent `parent`, done channel and err.
    fn cancel_ctx(m: &mut HashMap<u64, u64>, at: u64, parent: (u64, u64), done: u64, err: u64) {
        m.extend([
            (at, parent.0),
            (at + 8, parent.1),
            (at + 32, done),
            (at + 48, err),
            (at + 56, err),
        ]);
    }

    #[test]
    fn a_value_layer_over_a_cancelled_context_is_cancelled() {
        let mut m = HashMap::new();
        cancel_ctx(&mut m, 0x1000, (0x30, 0x9000), 0x7000, 0x5555);
        // valueCtx at 0x2000 whose parent is the cancelCtx.
        m.extend([(0x2000, 0x10), (0x2008, 0x1000)]);
        let r = read(&Words(m), &itabs(), &O, (0x20, 0x2000));
        assert_eq!(
            r.chain,
            [
                "*context.valueCtx",
                "*context.cancelCtx",
                "context.backgroundCtx"
            ]
        );
        assert_eq!(r.cancelled, Some(true));
        assert_eq!(r.done, 0x7000);
        assert!(!r.chain_cut);
        assert_eq!(r.read_errors, 0);
    }

    #[test]
    fn a_live_context_is_not_cancelled() {
        let mut m = HashMap::new();
        cancel_ctx(&mut m, 0x1000, (0x30, 0x9000), 0, 0);
        let r = read(&Words(m), &itabs(), &O, (0x10, 0x1000));
        assert_eq!(r.cancelled, Some(false));
        assert_eq!(r.done, 0, "Done never called: no channel yet");
    }

    #[test]
    fn a_loop_is_cut_and_an_unknown_type_is_undecided() {
        let mut m = HashMap::new();
        m.extend([(0x2000, 0x20), (0x2008, 0x2000)]); // a valueCtx its own parent
        let r = read(&Words(m), &itabs(), &O, (0x20, 0x2000));
        assert!(r.chain_cut);
        assert_eq!(r.cancelled, None);
        let r = read(&Words(HashMap::new()), &itabs(), &O, (0x40, 0x3000));
        assert_eq!(r.chain, ["*main.myCtx"]);
        assert_eq!(r.cancelled, None);
    }

    #[test]
    fn an_unreadable_context_is_counted() {
        let r = read(&Words(HashMap::new()), &itabs(), &O, (0x10, 0x1000));
        assert_eq!(r.read_errors, 1);
        assert_eq!(r.cancelled, None);
    }
}
