//! Side tables of the goroutine store: values that repeat across many
//! goroutines (stacks, creation sites) interned to `u32` indices, and the
//! waited channels beyond the ones a slot holds inline.
//!
//! Interned values are never removed: a table grows with the distinct
//! values seen, as the model's per-stack totals (`creations`, `off_cpu`)
//! and per-site counts already do, never with the number of goroutines.

use std::hash::Hash;

use crate::model::HashMap;

/// The index standing for "none" in every `u32` index of the store.
pub const NONE: u32 = u32::MAX;

/// Channels a slot holds inline; most parks wait on one channel (a send or
/// a receive), a `select` often on two (e.g. `ctx.Done()` and a channel).
pub const INLINE_CHANS: usize = 2;

/// Distinct values, each stored once, by dense `u32` index.
#[derive(Debug)]
pub struct Interner<T> {
    values: Vec<T>,
    index: HashMap<T, u32>,
}

impl<T> Default for Interner<T> {
    fn default() -> Self {
        Self {
            values: Vec::new(),
            index: HashMap::default(),
        }
    }
}

impl<T: Copy + Eq + Hash> Interner<T> {
    /// The index of `v`, adding it if new; `None` once `u32::MAX` values are
    /// held (never in practice: that is hundreds of GB of distinct values).
    pub fn intern(&mut self, v: T) -> Option<u32> {
        if let Some(&i) = self.index.get(&v) {
            return Some(i);
        }
        let i = u32::try_from(self.values.len())
            .ok()
            .filter(|i| *i != NONE)?;
        self.values.push(v);
        self.index.insert(v, i);
        Some(i)
    }

    /// The value at index `i` (`None` for [`NONE`]).
    pub fn get(&self, i: u32) -> Option<T> {
        self.values.get(i as usize).copied()
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }
}

/// The waited channels past the inline ones, for the few parks that have
/// them (a `select` with more than two cases, up to the probes'
/// `MAX_WAIT_CHANS`); freed entries are reused with their capacity.
#[derive(Debug, Default)]
pub struct MoreChans {
    entries: Vec<Vec<u64>>,
    free: Vec<u32>,
}

impl MoreChans {
    /// Stores `chans` (unused ones are 0); [`NONE`] when they are all
    /// unused, which is the common case and takes no entry. Also [`NONE`]
    /// (the channels are lost) if `u32::MAX` entries are in use, which
    /// cannot happen before memory runs out.
    pub fn store(&mut self, chans: &[u64]) -> u32 {
        if chans.iter().all(|c| *c == 0) {
            return NONE;
        }
        if let Some(i) = self.free.pop() {
            self.entries[i as usize].extend_from_slice(chans);
            return i;
        }
        let Some(i) = u32::try_from(self.entries.len())
            .ok()
            .filter(|i| *i != NONE)
        else {
            return NONE;
        };
        self.entries.push(chans.to_vec());
        i
    }

    /// Replaces what entry `*i` holds from position `from` on with `chans`
    /// (a new entry, with zeroes before `from`, for [`NONE`]).
    pub fn set_from(&mut self, i: &mut u32, from: usize, chans: &[u64]) {
        match self.entries.get_mut(*i as usize) {
            Some(e) => {
                e.resize(from, 0);
                e.extend_from_slice(chans);
            }
            None => {
                let mut all = vec![0; from];
                all.extend_from_slice(chans);
                *i = self.store(&all);
            }
        }
    }

    /// The channels at `i`; none for [`NONE`].
    pub fn get(&self, i: u32) -> &[u64] {
        self.entries.get(i as usize).map_or(&[], |e| e.as_slice())
    }

    /// Frees the entry `*i` points to (nothing for [`NONE`]) and sets `*i`
    /// to [`NONE`], so an entry cannot be freed twice.
    pub fn release(&mut self, i: &mut u32) {
        let i = std::mem::replace(i, NONE);
        if let Some(e) = self.entries.get_mut(i as usize) {
            e.clear();
            self.free.push(i);
        }
    }

    /// Entries in use.
    pub fn in_use(&self) -> usize {
        self.entries.len() - self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interner_dedups_and_none_is_no_value() {
        let mut t = Interner::default();
        assert_eq!(t.intern((1, 2)), Some(0));
        assert_eq!(t.intern((3, 4)), Some(1));
        assert_eq!(t.intern((1, 2)), Some(0));
        assert_eq!((t.get(1), t.get(NONE), t.len()), (Some((3, 4)), None, 2));
    }

    #[test]
    fn more_chans_reuses_freed_entries() {
        let mut m = MoreChans::default();
        assert_eq!(m.store(&[0; 2]), NONE);
        let a = m.store(&[7; 2]);
        let b = m.store(&[8; 2]);
        assert_eq!((a, b, m.get(a), m.get(NONE)), (0, 1, &[7; 2][..], &[][..]));
        let mut held = a;
        m.release(&mut held);
        assert_eq!(held, NONE);
        m.release(&mut held); // a second release frees nothing
        assert_eq!(m.in_use(), 1);
        assert_eq!(m.store(&[9; 2]), a);
        assert_eq!(
            (m.get(a), m.get(b), m.in_use()),
            (&[9; 2][..], &[8; 2][..], 2)
        );
    }

    #[test]
    fn more_chans_set_from_replaces_the_tail() {
        let mut m = MoreChans::default();
        let mut i = m.store(&[1, 2]);
        m.set_from(&mut i, 2, &[3, 4, 5]);
        m.set_from(&mut i, 2, &[3, 4, 5]); // idempotent
        assert_eq!(m.get(i), &[1, 2, 3, 4, 5][..]);
        let mut none = NONE;
        m.set_from(&mut none, 2, &[6]);
        assert_eq!((m.get(none), m.in_use()), (&[0, 0, 6][..], 2));
    }
}
