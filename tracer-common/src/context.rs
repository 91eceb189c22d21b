//! Context events: creation, cancellation, Done channels.

use crate::{EventHeader, NO_STACK};

/// `EventKind::CtxCreate`: `propagateCancel(parent, child)` entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtxCreateEvent {
    pub header: EventHeader,
    /// Creating goroutine.
    pub goid: u64,
    /// The new context (the `canceler` data pointer).
    pub ctx: u64,
    /// itab of the new context as a `canceler`: names its type.
    pub child_itab: u64,
    /// The parent `Context` after skipping `WithValue` wrappers.
    pub parent_itab: u64,
    pub parent_data: u64,
    /// `WithValue` wrappers skipped to reach `parent_*`.
    pub value_hops: u32,
    pub stack_id: i32,
    pub caller_pc: u64,
    /// `timerCtx.deadline` (a `time.Time`: wall, ext); junk for other kinds.
    pub deadline_wall: u64,
    pub deadline_ext: i64,
}

/// Which cancel method an event comes from.
pub const CANCEL_METHOD_CANCEL_CTX: u32 = 1;
pub const CANCEL_METHOD_TIMER_CTX: u32 = 2;
pub const CANCEL_METHOD_AFTER_FUNC_CTX: u32 = 3;

/// The error is the target's `context.Canceled` value.
pub const CANCEL_ERR_CANCELED: u32 = 1;
/// The error is a `context.deadlineExceededError`.
pub const CANCEL_ERR_DEADLINE: u32 = 2;
/// `cause_msg` holds the cause's message (errors.New / fmt.Errorf causes).
pub const CANCEL_CAUSE_MSG: u32 = 4;
/// The cause is the error itself (no cause given).
pub const CANCEL_CAUSE_IS_ERR: u32 = 8;

pub const CAUSE_MSG_LEN: usize = 64;

/// `EventKind::CtxCancel`: a cancel method's entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtxCancelEvent {
    pub header: EventHeader,
    pub goid: u64,
    /// The context (method receiver).
    pub ctx: u64,
    /// `CANCEL_METHOD_*`.
    pub method: u32,
    /// `removeFromParent` argument.
    pub remove_from_parent: u32,
    pub err_itab: u64,
    pub err_data: u64,
    pub cause_itab: u64,
    pub cause_data: u64,
    /// `CANCEL_ERR_*` / `CANCEL_CAUSE_*` bits.
    pub flags: u32,
    pub stack_id: i32,
    pub caller_pc: u64,
    /// The context's Done channel as stored in `cancelCtx.done`, 0 if none yet.
    pub done_chan: u64,
    pub cause_len: u32,
    pub _pad: u32,
    pub cause_msg: [u8; CAUSE_MSG_LEN],
}

impl Default for CtxCancelEvent {
    fn default() -> Self {
        Self {
            header: EventHeader::default(),
            goid: 0,
            ctx: 0,
            method: 0,
            remove_from_parent: 0,
            err_itab: 0,
            err_data: 0,
            cause_itab: 0,
            cause_data: 0,
            flags: 0,
            stack_id: NO_STACK,
            caller_pc: 0,
            done_chan: 0,
            cause_len: 0,
            _pad: 0,
            cause_msg: [0; CAUSE_MSG_LEN],
        }
    }
}

/// `EventKind::CtxDone`: a context's Done channel (first time seen).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtxDoneEvent {
    pub header: EventHeader,
    pub ctx: u64,
    pub chan: u64,
}
