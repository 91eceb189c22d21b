//! Exporters: views of the model in formats other tools open. Each format
//! lives in its own module; none of them is known to the model.

pub mod flamegraph;
pub mod folded;
pub mod perfetto;
pub mod pprof;
