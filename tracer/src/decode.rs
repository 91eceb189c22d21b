//! Ring-buffer records → typed events.

use tracer_common::{
    CtxCancelEvent, CtxCreateEvent, CtxDoneEvent, EventHeader, EventKind, GoCreateEvent,
    GoExitEvent, GoParkChansEvent, GoParkEvent, GoReadyEvent, StackDumpEvent, TimerStartEvent,
    TimerStopEvent,
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Create(GoCreateEvent),
    Park(GoParkEvent),
    Ready(GoReadyEvent),
    Exit(GoExitEvent),
    CtxCreate(CtxCreateEvent),
    CtxCancel(Box<CtxCancelEvent>),
    CtxDone(CtxDoneEvent),
    TimerStart(TimerStartEvent),
    TimerStop(TimerStopEvent),
    StackDump(Box<StackDumpEvent>),
    /// The channels of the park before it past its first `WAIT_CHANS`.
    ParkChans(Box<GoParkChansEvent>),
}

impl Event {
    pub fn header(&self) -> &EventHeader {
        match self {
            Event::Create(e) => &e.header,
            Event::Park(e) => &e.header,
            Event::Ready(e) => &e.header,
            Event::Exit(e) => &e.header,
            Event::CtxCreate(e) => &e.header,
            Event::CtxCancel(e) => &e.header,
            Event::CtxDone(e) => &e.header,
            Event::TimerStart(e) => &e.header,
            Event::TimerStop(e) => &e.header,
            Event::StackDump(e) => &e.header,
            Event::ParkChans(e) => &e.header,
        }
    }

    pub fn kind(&self) -> EventKind {
        match self {
            Event::Create(_) => EventKind::GoCreate,
            Event::Park(_) => EventKind::GoPark,
            Event::Ready(_) => EventKind::GoReady,
            Event::Exit(_) => EventKind::GoExit,
            Event::CtxCreate(_) => EventKind::CtxCreate,
            Event::CtxCancel(_) => EventKind::CtxCancel,
            Event::CtxDone(_) => EventKind::CtxDone,
            Event::TimerStart(_) => EventKind::TimerStart,
            Event::TimerStop(_) => EventKind::TimerStop,
            Event::StackDump(_) => EventKind::StackDump,
            Event::ParkChans(_) => EventKind::GoParkChans,
        }
    }

    /// The user stack id the event carries, if any.
    pub fn stack_id(&self) -> Option<i32> {
        match self {
            Event::Create(e) => Some(e.stack_id),
            Event::Park(e) => Some(e.stack_id),
            Event::CtxCreate(e) => Some(e.stack_id),
            Event::CtxCancel(e) => Some(e.stack_id),
            Event::TimerStart(e) => Some(e.stack_id),
            _ => None,
        }
    }

    /// The user stack id the event carries, if any, to rewrite.
    pub fn stack_id_mut(&mut self) -> Option<&mut i32> {
        match self {
            Event::Create(e) => Some(&mut e.stack_id),
            Event::Park(e) => Some(&mut e.stack_id),
            Event::CtxCreate(e) => Some(&mut e.stack_id),
            Event::CtxCancel(e) => Some(&mut e.stack_id),
            Event::TimerStart(e) => Some(&mut e.stack_id),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than an event header")]
    Short(usize),
    #[error("unknown event kind {0}")]
    UnknownKind(u32),
    #[error("{kind:?} record has {got} bytes, expected at least {want}")]
    Truncated {
        kind: EventKind,
        got: usize,
        want: usize,
    },
}

fn read<T: Copy>(bytes: &[u8], kind: EventKind) -> Result<T, DecodeError> {
    let want = size_of::<T>();
    if bytes.len() < want {
        return Err(DecodeError::Truncated {
            kind,
            got: bytes.len(),
            want,
        });
    }
    // SAFETY: length checked; T is repr(C) POD valid for any bit pattern;
    // read_unaligned makes no alignment assumption about the ring buffer.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Decodes one ring-buffer record.
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    if bytes.len() < size_of::<EventHeader>() {
        return Err(DecodeError::Short(bytes.len()));
    }
    let kind_raw = u32::from_ne_bytes(bytes[0..4].try_into().expect("4 bytes"));
    let kind = EventKind::from_u32(kind_raw).ok_or(DecodeError::UnknownKind(kind_raw))?;
    Ok(match kind {
        EventKind::GoCreate => Event::Create(read(bytes, kind)?),
        EventKind::GoPark => Event::Park(read(bytes, kind)?),
        EventKind::GoReady => Event::Ready(read(bytes, kind)?),
        EventKind::GoExit => Event::Exit(read(bytes, kind)?),
        EventKind::CtxCreate => Event::CtxCreate(read(bytes, kind)?),
        EventKind::CtxCancel => Event::CtxCancel(Box::new(read(bytes, kind)?)),
        EventKind::CtxDone => Event::CtxDone(read(bytes, kind)?),
        EventKind::TimerStart => Event::TimerStart(read(bytes, kind)?),
        EventKind::TimerStop => Event::TimerStop(read(bytes, kind)?),
        EventKind::StackDump => Event::StackDump(Box::new(read(bytes, kind)?)),
        EventKind::GoParkChans => Event::ParkChans(Box::new(read(bytes, kind)?)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of<T>(v: &T) -> Vec<u8> {
        // SAFETY: test helper over repr(C) POD.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    #[test]
    fn round_trips_every_kind() {
        let header = |kind: EventKind| EventHeader {
            kind: kind as u32,
            ..Default::default()
        };
        let park = GoParkEvent {
            header: header(EventKind::GoPark),
            g: tracer_common::GoIdentity {
                goid: 42,
                ..Default::default()
            },
            reason: 14,
            ..Default::default()
        };
        assert_eq!(decode(&bytes_of(&park)), Ok(Event::Park(park)));
        let exit = GoExitEvent {
            header: header(EventKind::GoExit),
            goid: 7,
        };
        assert_eq!(decode(&bytes_of(&exit)), Ok(Event::Exit(exit)));
        let mut more = GoParkChansEvent {
            header: header(EventKind::GoParkChans),
            goid: 42,
            nr: 2,
            ..Default::default()
        };
        more.chans[..2].copy_from_slice(&[0xa, 0xb]);
        assert_eq!(
            decode(&bytes_of(&more)),
            Ok(Event::ParkChans(Box::new(more)))
        );
    }

    #[test]
    fn rejects_bad_records() {
        assert_eq!(decode(&[1, 0]), Err(DecodeError::Short(2)));
        let h = EventHeader {
            kind: 99,
            ..Default::default()
        };
        assert_eq!(decode(&bytes_of(&h)), Err(DecodeError::UnknownKind(99)));
        let h = EventHeader {
            kind: EventKind::GoCreate as u32,
            ..Default::default()
        };
        assert!(matches!(
            decode(&bytes_of(&h)),
            Err(DecodeError::Truncated { .. })
        ));
    }
}
