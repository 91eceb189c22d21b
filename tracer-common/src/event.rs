//! The envelope every ring-buffer record shares: an [`EventHeader`] first,
//! its [`EventKind`] telling the body's type.

/// Every event starts with this header.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    /// An [`EventKind`] as u32.
    pub kind: u32,
    /// Thread id (kernel view) that hit the probe.
    pub tid: u32,
    /// Thread-group id (process id, kernel view).
    pub tgid: u32,
    /// CPU the probe ran on.
    pub cpu: u32,
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
}

/// A ring-buffer record type.
///
/// # Safety
/// Implementors are `#[repr(C)]`, start with a `header: EventHeader` field
/// (the eBPF emit path writes the header at offset 0) and are valid for
/// any bit pattern. Only the `event_kinds!` list below implements it.
pub unsafe trait Event: Copy + 'static {
    const KIND: EventKind;
}

/// Declares the event kinds once: the enum with its stable numbers, the
/// list, the number → kind and kind → name maps, and [`Event`] for each
/// record type.
macro_rules! event_kinds {
    ($($(#[$doc:meta])* $kind:ident = $n:literal => $ty:ident, $name:literal;)*) => {
        /// Stable event kind numbers.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum EventKind {
            $($(#[$doc])* $kind = $n,)*
        }

        impl EventKind {
            pub const ALL: &'static [EventKind] = &[$(EventKind::$kind),*];

            pub fn from_u32(v: u32) -> Option<Self> {
                match v {
                    $($n => Some(Self::$kind),)*
                    _ => None,
                }
            }

            pub const fn name(self) -> &'static str {
                match self {
                    $(Self::$kind => $name,)*
                }
            }
        }

        // SAFETY: each type is repr(C), starts with `header: EventHeader`
        // and is plain old data (checked by the `header_first` test).
        $(unsafe impl Event for crate::$ty {
            const KIND: EventKind = EventKind::$kind;
        })*
    };
}

event_kinds! {
    /// A goroutine was created (`runtime.newproc1` returned).
    GoCreate = 1 => GoCreateEvent, "go_create";
    /// A goroutine parked (`runtime.gopark`).
    GoPark = 2 => GoParkEvent, "go_park";
    /// A parked goroutine was made runnable (`runtime.ready`).
    GoReady = 3 => GoReadyEvent, "go_ready";
    /// A goroutine exited (`runtime.goexit1`).
    GoExit = 4 => GoExitEvent, "go_exit";
    /// A cancelable context was created (`propagateCancel`).
    CtxCreate = 5 => CtxCreateEvent, "ctx_create";
    /// A context's cancel method ran (`(*cancelCtx|*timerCtx|*afterFuncCtx).cancel`).
    CtxCancel = 6 => CtxCancelEvent, "ctx_cancel";
    /// A context's Done channel became known (`Done` made or returned it).
    CtxDone = 7 => CtxDoneEvent, "ctx_done";
    /// A runtime timer was started (`time.startTimer` ≤1.22, `time.newTimer` 1.23+).
    TimerStart = 8 => TimerStartEvent, "timer_start";
    /// A runtime timer was stopped (`time.stopTimer`).
    TimerStop = 9 => TimerStopEvent, "timer_stop";
    /// A user stack seen for the first time, sent once under a synthetic id
    /// that the events referring to it carry.
    StackDump = 10 => StackDumpEvent, "stack_dump";
    /// The channels past the first [`crate::WAIT_CHANS`] of a park (a
    /// `select` with many cases), right after its `GoPark`.
    GoParkChans = 11 => GoParkChansEvent, "go_park_chans";
}

impl EventKind {
    /// Slot of the kind's drop counter in `COUNTERS`.
    pub const fn index(self) -> u32 {
        self as u32
    }
}

#[cfg(all(test, not(target_arch = "bpf")))]
mod tests {
    use super::*;

    fn header_first<T: Event>(v: T) {
        // SAFETY: T is repr(C) POD (the trait's contract).
        let kind = unsafe { core::ptr::read_unaligned((&raw const v).cast::<u32>()) };
        assert_eq!(kind, T::KIND as u32, "{}", T::KIND.name());
    }

    #[test]
    fn every_kind_has_its_header_first() {
        let h = |k: EventKind| EventHeader {
            kind: k as u32,
            ..Default::default()
        };
        header_first(crate::GoCreateEvent {
            header: h(EventKind::GoCreate),
            ..Default::default()
        });
        header_first(crate::GoParkChansEvent {
            header: h(EventKind::GoParkChans),
            ..Default::default()
        });
        for k in EventKind::ALL {
            assert_eq!(EventKind::from_u32(*k as u32), Some(*k));
            assert!((k.index()) < crate::MAX_KINDS);
        }
    }
}
