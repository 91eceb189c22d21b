//! gotrace: an eBPF goroutine tracer for Go programs.
//!
//! See ARCHITECTURE.md at the repository root for the codemap. In short,
//! from the bottom up: `goruntime` (Go-runtime knowledge) and `gobin` (the
//! target binary) → `process` (the target process) → `probe` (the eBPF
//! object) and `decode` (its events) → `model` (lifecycles rebuilt from
//! events) → `snapshot` (goroutines read from memory), `proof` (leaks
//! proven by reachability over the heap) and `resolve`
//! (stacks → frames) → `capture` (a finished trace: live session or
//! recording) → `report` and `export` → `outputs` (files) and `view` (live
//! screens) → `cmd` (the commands; the only place that prints).

pub mod agent;
pub mod capture;
pub mod cmd;
pub mod ctxmem;
pub mod decode;
pub mod export;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod gobin;
pub mod goruntime;
pub mod model;
pub mod outputs;
pub mod probe;
pub mod process;
pub mod proof;
pub mod report;
pub mod resolve;
pub mod snapshot;
pub mod timermem;
pub mod view;
