//! User stacks as the eBPF stack walk sends them: each distinct stack once,
//! as a `StackDump` event under a synthetic id (below -1). The same stack
//! can be sent again under a new id (the eBPF fingerprint map is an LRU);
//! the first id seen for a content is canonical and later ones are aliased
//! to it, so goroutines blocked on the same stack stay in one group.
//!
//! eBPF half: `tracer-ebpf/src/stacks.rs`.

use std::collections::BTreeMap;

use super::HashMap;

use tracer_common::StackDumpEvent;

#[derive(Default)]
pub struct DumpedStacks {
    /// Canonical id → frames (innermost first).
    by_id: BTreeMap<i32, Vec<u64>>,
    by_content: HashMap<Vec<u64>, i32>,
    alias: HashMap<i32, i32>,
}

impl DumpedStacks {
    pub fn add(&mut self, e: &StackDumpEvent) {
        let nr = (e.nr as usize).min(e.ips.len());
        let frames = e.ips[..nr].to_vec();
        match self.by_content.get(&frames) {
            Some(&canonical) if canonical != e.id => {
                self.alias.insert(e.id, canonical);
            }
            Some(_) => {}
            None => {
                self.by_content.insert(frames.clone(), e.id);
                self.by_id.insert(e.id, frames);
            }
        }
    }

    /// The canonical id for a dumped-stack id (itself when not an alias).
    pub fn canonical(&self, id: i32) -> i32 {
        self.alias.get(&id).copied().unwrap_or(id)
    }

    /// Frames of a dumped stack, by canonical or aliased id.
    pub fn get(&self, id: i32) -> Option<&Vec<u64>> {
        self.by_id.get(&self.canonical(id))
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dump(id: i32, frames: &[u64]) -> StackDumpEvent {
        let mut e = StackDumpEvent {
            header: Default::default(),
            id,
            nr: frames.len() as u32,
            ips: [0; tracer_common::STACK_DUMP_DEPTH],
        };
        e.ips[..frames.len()].copy_from_slice(frames);
        e
    }

    #[test]
    fn same_content_is_one_stack() {
        let mut d = DumpedStacks::default();
        d.add(&dump(-2, &[1, 2, 3]));
        d.add(&dump(-258, &[1, 2, 3]));
        d.add(&dump(-3, &[4]));
        assert_eq!(d.len(), 2);
        assert_eq!(d.canonical(-258), -2);
        assert_eq!(d.get(-258), Some(&vec![1, 2, 3]));
        assert_eq!(d.get(-3), Some(&vec![4]));
    }
}
