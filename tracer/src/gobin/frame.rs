//! A source frame: what symbolisation gives for one pc (several frames
//! when calls were inlined). Its own module so that both the DWARF
//! symboliser and the pclntab line tables can name it without importing
//! each other.

/// One (possibly inlined) source frame.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct Frame {
    pub function: String,
    pub file: Option<String>,
    pub line: u32,
}
