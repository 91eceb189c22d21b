//! gotrace: an eBPF goroutine tracer for Go programs.
//!
//! Pipeline: `probe` (load + attach the eBPF object built from `tracer-ebpf`)
//! → ring buffer → `decode` → `model` (goroutine lifecycles, contexts,
//! timers, a bounded timeline history) → `report` (grouping, JSON, text)
//! and `export` (flame graphs, pprof, the Perfetto timeline). A trace ends
//! as a `capture` (live, or replayed from a `record`ing) which `outputs`
//! turns into files. `gobin` reads the target binary (symbols, DWARF
//! layout, RET offsets, symbolisation); `goruntime` holds the Go-runtime
//! knowledge that is not in the binary.

pub mod capture;
pub mod check;
pub mod cli;
pub mod decode;
pub mod export;
#[doc(hidden)]
pub mod fuzzing;
pub mod gobin;
pub mod goruntime;
pub mod lock;
pub mod model;
pub mod offline;
pub mod outfile;
pub mod outputs;
pub mod probe;
pub mod record;
pub mod report;
pub mod session;
pub mod snapshot;
pub mod target;
pub mod trace;
pub mod validate;
pub mod view;
