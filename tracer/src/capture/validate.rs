//! Attach-time validation of the runtime layout: the first goroutine events
//! must carry plausible values read through the offsets. Wrong offsets
//! (a layout table entry that does not fit, an unexpected runtime) would
//! otherwise produce a confident report of garbage.

use std::collections::HashSet;

use crate::decode::Event;

/// Events checked before the layout is trusted.
const SAMPLE: u32 = 32;
/// Goids grow from 1; anything beyond this is not a goid.
const MAX_GOID: u64 = 1 << 40;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "runtime layout validation failed: {bad} of the first {seen} goroutine events read impossible \
     values (goid or start pc) through the {origin} offsets; refusing to report wrong data"
)]
pub struct ValidationError {
    pub bad: u32,
    pub seen: u32,
    pub origin: &'static str,
}

pub struct Validator {
    /// Function entry addresses (binary vaddrs); empty skips the pc check.
    entries: HashSet<u64>,
    /// Runtime address minus binary address (PIE), if known.
    bias: Option<u64>,
    origin: &'static str,
    seen: u32,
    bad: u32,
}

impl Validator {
    pub fn new(entries: HashSet<u64>, bias: Option<u64>, origin: &'static str) -> Self {
        Self {
            entries,
            bias,
            origin,
            seen: 0,
            bad: 0,
        }
    }

    pub fn done(&self) -> bool {
        self.seen >= SAMPLE
    }

    /// Checks one event; Err once enough of them were wrong.
    pub fn check(&mut self, ev: &Event) -> Result<(), ValidationError> {
        let g = match ev {
            Event::Create(e) => &e.g,
            Event::Park(e) => &e.g,
            _ => return Ok(()),
        };
        if self.done() {
            return Ok(());
        }
        self.seen += 1;
        let goid_ok = g.goid > 0 && g.goid < MAX_GOID;
        let pc_ok = match self.bias {
            Some(bias) if !self.entries.is_empty() => {
                self.entries.contains(&g.startpc.wrapping_sub(bias))
            }
            _ => true,
        };
        if !(goid_ok && pc_ok) {
            self.bad += 1;
        }
        if self.done() && self.bad * 2 > self.seen {
            return Err(ValidationError {
                bad: self.bad,
                seen: self.seen,
                origin: self.origin,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use tracer_common::{GoIdentity, GoParkEvent};

    use super::*;

    fn park(goid: u64, startpc: u64) -> Event {
        Event::Park(GoParkEvent {
            g: GoIdentity {
                goid,
                startpc,
                ..Default::default()
            },
            ..Default::default()
        })
    }

    #[test]
    fn good_layout_passes_bad_layout_is_refused() {
        let entries: HashSet<u64> = [0x401000, 0x402000].into();
        let mut v = Validator::new(entries.clone(), Some(0), "DWARF");
        for i in 0..40 {
            v.check(&park(i + 1, 0x401000)).unwrap();
        }
        let mut v = Validator::new(entries, Some(0), "table");
        let errs: Vec<_> = (0..40)
            .filter_map(|i| v.check(&park(i * 1_000_000_000_000, 0x401234)).err())
            .collect();
        assert_eq!(
            errs,
            [ValidationError {
                bad: 32,
                seen: 32,
                origin: "table"
            }]
        );
    }

    #[test]
    fn unknown_bias_checks_goids_only() {
        let mut v = Validator::new([0x401000].into(), None, "DWARF");
        for i in 0..40 {
            v.check(&park(i + 1, 0xdead)).unwrap();
        }
    }
}
