//! The event ABI shared by the eBPF programs (`tracer-ebpf`) and userspace
//! (`tracer`), one module per feature.
//!
//! Everything here is `#[repr(C)]` and plain old data: the kernel writes these
//! structs into the ring buffer and userspace reads them back byte for byte.
//! Event kinds have stable explicit numbers; never renumber, only append, and
//! never change an existing event's layout (recordings keep raw records).
#![cfg_attr(target_arch = "bpf", no_std)]

mod config;
mod context;
mod counters;
mod event;
mod goroutine;
mod stack;
mod timer;

pub use config::*;
pub use context::*;
pub use counters::*;
pub use event::*;
pub use goroutine::*;
pub use stack::*;
pub use timer::*;
