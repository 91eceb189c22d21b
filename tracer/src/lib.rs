//! gotrace: an eBPF goroutine tracer for Go programs.
//!
//! Pipeline: `probe` (load + attach the eBPF object built from `tracer-ebpf`)
//! → ring buffer → `decode` → `model` (goroutine lifecycles) → `report`
//! (grouping, JSON, text). `gobin` reads the target binary (symbols, DWARF
//! layout, RET offsets, symbolisation); `goruntime` holds the Go-runtime
//! knowledge that is not in the binary.

pub mod cli;
pub mod decode;
pub mod export;
pub mod gobin;
pub mod goruntime;
pub mod model;
pub mod probe;
pub mod report;
pub mod session;
pub mod target;
pub mod trace;
pub mod validate;
