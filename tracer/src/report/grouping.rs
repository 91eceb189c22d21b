//! What the trace report's groups and `gotrace snapshot`'s groups share:
//! how many ids a group lists, which parents it names, and which frame of a
//! blocked stack is "where it is blocked".

use crate::gobin::symbolize::Frame;

/// Sample goids and distinct parent goids a group lists.
pub const SAMPLE: usize = 5;

/// Adds `parent` to a group's parents: distinct, at most [`SAMPLE`].
pub fn add_parent(parents: &mut Vec<u64>, parent: u64) {
    if parents.len() < SAMPLE && !parents.contains(&parent) {
        parents.push(parent);
    }
}

pub use crate::gobin::frame::first_program_frame;

/// Where a goroutine is blocked: the program's own first frame, else the
/// first frame outside the runtime ([`crate::gobin::frame::site`]).
pub fn blocked_site(frames: &[Frame]) -> Option<Frame> {
    crate::gobin::frame::site(frames).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocked_site_prefers_program_code() {
        let f = |name: &str| Frame {
            function: name.into(),
            file: None,
            line: 0,
        };
        let frames = vec![
            f("runtime.gopark"),
            f("sync.(*WaitGroup).Wait"),
            f("main.waiter"),
        ];
        assert_eq!(blocked_site(&frames).unwrap().function, "main.waiter");
        let std_only = vec![f("runtime.gopark"), f("net/http.(*conn).serve")];
        assert_eq!(
            blocked_site(&std_only).unwrap().function,
            "net/http.(*conn).serve"
        );
    }
}
