//! The symbol service: raw stacks (stack ids + the entry return address)
//! and single pcs of one target binary → symbolised frames. The report,
//! the exports, the snapshot report and the live view all resolve through
//! it, so a frame reads the same everywhere.

use std::collections::HashMap;

use crate::gobin::GoBinary;
use crate::gobin::symbolize::{Frame, Symbolizer};
use crate::gobin::wrappers::go_wrapper_callee;
use crate::model::StackRef;

/// Resolves stacks and single pcs of one target binary.
pub struct StackResolver<'a> {
    bin: &'a GoBinary,
    symbolizer: &'a Symbolizer,
    /// Raw stacks by stack id, innermost first.
    raw: HashMap<i32, Vec<u64>>,
    /// Runtime address minus binary vaddr (non-zero for PIE).
    bias: u64,
    cache: HashMap<StackRef, Vec<Frame>>,
    starts: HashMap<u64, String>,
    /// Function entry → is a `go` statement wrapper.
    wrappers: HashMap<u64, bool>,
}

impl<'a> StackResolver<'a> {
    pub fn new(
        bin: &'a GoBinary,
        symbolizer: &'a Symbolizer,
        raw: HashMap<i32, Vec<u64>>,
        bias: u64,
    ) -> Self {
        Self {
            bin,
            symbolizer,
            raw,
            bias,
            cache: HashMap::new(),
            starts: HashMap::new(),
            wrappers: HashMap::new(),
        }
    }

    /// The pcs of a stack: the probed function, the return address read at
    /// its entry (which a frame-pointer walk from the entry misses), then the
    /// rest of the frame-pointer walk.
    pub fn pcs(&self, s: StackRef) -> Vec<u64> {
        let walk = self.raw.get(&s.id).map(Vec::as_slice).unwrap_or(&[]);
        let mut pcs = Vec::with_capacity(walk.len() + 1);
        pcs.extend(walk.first());
        if s.caller_pc != 0 {
            pcs.push(s.caller_pc);
        }
        pcs.extend(walk.iter().skip(1));
        pcs
    }

    /// Symbolised frames, innermost first, with `go` statement wrapper
    /// frames hidden (as Go's own tracebacks hide them).
    pub fn frames(&mut self, s: StackRef) -> Vec<Frame> {
        if let Some(f) = self.cache.get(&s) {
            return f.clone();
        }
        let mut frames = Vec::new();
        let mut pcs = self.pcs(s);
        let skip = self.inside_newproc(&pcs);
        pcs.drain(..skip);
        for (i, pc) in pcs.into_iter().enumerate() {
            let vaddr = pc.wrapping_sub(self.bias);
            let mut group = self.symbolizer.symbolize(vaddr, i + skip > 0);
            // The last frame of a pc is the physical function containing it.
            if self.is_wrapper(vaddr) {
                group.pop();
            }
            frames.extend(group);
        }
        self.cache.insert(s, frames.clone());
        frames
    }

    /// How many innermost pcs belong to goroutine creation itself: a
    /// creation stack is walked from `newproc1`'s return through
    /// `systemstack` (or, in recordings of older gotrace versions, from
    /// `newproc`'s entry). It starts at the `go` statement, as Go's own
    /// "created by" lines do.
    fn inside_newproc(&self, pcs: &[u64]) -> usize {
        const INSIDE: [&str; 5] = [
            "runtime.newproc1",
            "runtime.newproc.func1",
            "runtime.systemstack",
            "runtime.systemstack_switch",
            "runtime.newproc",
        ];
        let name = |pc: u64| {
            self.bin
                .symbols()
                .containing(pc.wrapping_sub(self.bias))
                .map(|f| f.name.trim_end_matches(".abi0"))
        };
        if !matches!(
            pcs.first().and_then(|&pc| name(pc)),
            Some("runtime.newproc1" | "runtime.newproc")
        ) {
            return 0;
        }
        pcs.iter()
            .take_while(|&&pc| name(pc).is_some_and(|n| INSIDE.contains(&n)))
            .count()
    }

    fn is_wrapper(&mut self, vaddr: u64) -> bool {
        let Some(entry) = self.bin.symbols().containing(vaddr).map(|f| f.addr) else {
            return false;
        };
        let (bin, symbolizer) = (self.bin, self.symbolizer);
        *self
            .wrappers
            .entry(entry)
            .or_insert_with(|| go_wrapper_callee(bin, symbolizer, entry).is_some())
    }

    /// A single code address (gopc, startpc). `after_call`: the pc is a
    /// return address (gopc points after the CALL of newproc).
    pub fn pc(&self, pc: u64, after_call: bool) -> Option<Frame> {
        if pc == 0 {
            return None;
        }
        // Inlined frames come innermost first; the outermost is the function
        // that contains the code, which is what a creation site names... but
        // the innermost carries the precise line. Keep the innermost.
        self.symbolizer
            .symbolize(pc.wrapping_sub(self.bias), after_call)
            .into_iter()
            .next()
    }

    pub fn function(&self, pc: u64) -> String {
        self.pc(pc, false)
            .map(|f| f.function)
            .unwrap_or_else(|| "unknown".into())
    }

    /// The function a goroutine runs, from its start pc: the callee of a
    /// `go f(x)` wrapper rather than the wrapper itself.
    pub fn start_function(&mut self, startpc: u64) -> String {
        if let Some(name) = self.starts.get(&startpc) {
            return name.clone();
        }
        let name = go_wrapper_callee(self.bin, self.symbolizer, startpc.wrapping_sub(self.bias))
            .unwrap_or_else(|| self.function(startpc));
        self.starts.insert(startpc, name.clone());
        name
    }

    /// The function (symbol) whose code holds the call before return address
    /// `ret` — the physical caller, ignoring inlining.
    pub fn caller_function(&self, ret: u64) -> String {
        let vaddr = ret.wrapping_sub(self.bias).wrapping_sub(1);
        self.bin
            .symbols()
            .containing(vaddr)
            .map(|f| f.name.clone())
            .unwrap_or_else(|| format!("{ret:#x}"))
    }
}
