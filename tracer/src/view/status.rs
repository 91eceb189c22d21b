//! The one-line status of `gotrace --pid N` on a terminal.

use std::io::{IsTerminal as _, Write as _};

use super::{Tick, View};

pub struct StatusLine {
    enabled: bool,
    drawn: bool,
}

impl StatusLine {
    /// Draws only when stderr is a terminal.
    pub fn new() -> Self {
        Self {
            enabled: std::io::stderr().is_terminal(),
            drawn: false,
        }
    }
}

impl Default for StatusLine {
    fn default() -> Self {
        Self::new()
    }
}

impl View for StatusLine {
    fn tick(&mut self, t: &Tick<'_>) {
        if !self.enabled {
            return;
        }
        let g = &t.model.goroutines;
        let s = g.stats();
        let w = &t.watch;
        let shed = match w.shed.len() {
            0 => String::new(),
            n => format!(" | {n} probe groups shed"),
        };
        eprint!(
            "\r\x1b[Kgotrace: {} live | {} created | {} exited | {:.0} events/s | {} dropped | {}{shed} | {} samples",
            g.live_count(),
            s.created,
            s.exited,
            t.events_per_s,
            crate::probe::counters::shown(t.kernel.dropped_total),
            w.mode,
            w.samples
        );
        let _ = std::io::stderr().flush();
        self.drawn = true;
    }

    fn close(&mut self) {
        if self.drawn {
            eprintln!();
        }
    }
}
