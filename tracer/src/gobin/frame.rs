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

/// The first frame of the program's own code (`go` statement wrappers are
/// already hidden by the resolver).
pub fn first_program_frame(frames: &[Frame]) -> Option<&Frame> {
    frames
        .iter()
        .find(|f| crate::goruntime::is_user_function(&f.function))
}

/// Where a stack is: the program's own first frame, else the first frame
/// outside the runtime. The report's "blocked at" and the timeline's
/// "blocked at" / "cancelled at" both mean this.
pub fn site(frames: &[Frame]) -> Option<&Frame> {
    first_program_frame(frames)
        .or_else(|| frames.iter().find(|f| !f.function.starts_with("runtime.")))
}
