use tracer_common::{
    CANCEL_ERR_CANCELED, CtxCancelEvent, CtxCreateEvent, CtxDoneEvent, EventHeader, GoCreateEvent,
    GoExitEvent, GoIdentity, GoParkEvent, GoReadyEvent,
};

use super::*;
use crate::model::Model;

pub(crate) fn hdr(ts: u64) -> EventHeader {
    EventHeader {
        ts_ns: ts,
        ..Default::default()
    }
}

pub(crate) fn ident(goid: u64, parent: u64) -> GoIdentity {
    GoIdentity {
        goid,
        parent_goid: parent,
        gopc: 0x100 + parent,
        startpc: 0x200 + goid,
    }
}

pub(crate) fn create(goid: u64, parent: u64, ts: u64) -> Event {
    Event::Create(GoCreateEvent {
        header: hdr(ts),
        g: ident(goid, parent),
        stack_id: 3,
        caller_pc: 0x33,
        ..Default::default()
    })
}

pub(crate) fn park(goid: u64, ts: u64, reason: u32, chans: [u64; 4]) -> Event {
    Event::Park(GoParkEvent {
        header: hdr(ts),
        g: ident(goid, 1),
        stack_id: 5,
        reason,
        caller_pc: 0x55,
        chans,
    })
}

pub(crate) fn ready(goid: u64, ts: u64, waker: u64) -> Event {
    Event::Ready(GoReadyEvent {
        header: hdr(ts),
        goid,
        waker_goid: waker,
    })
}

pub(crate) fn exit(goid: u64, ts: u64) -> Event {
    Event::Exit(GoExitEvent {
        header: hdr(ts),
        goid,
    })
}

pub(crate) fn ctx_create(goid: u64, ctx: u64, parent: u64, ts: u64) -> Event {
    Event::CtxCreate(CtxCreateEvent {
        header: hdr(ts),
        goid,
        ctx,
        child_itab: 0x900,
        parent_data: parent,
        stack_id: 7,
        ..Default::default()
    })
}

pub(crate) fn cancel(goid: u64, ctx: u64, remove: bool, ts: u64) -> Event {
    Event::CtxCancel(Box::new(CtxCancelEvent {
        header: hdr(ts),
        goid,
        ctx,
        remove_from_parent: remove as u32,
        flags: CANCEL_ERR_CANCELED,
        ..Default::default()
    }))
}

pub(crate) fn done(ctx: u64, chan: u64, ts: u64) -> Event {
    Event::CtxDone(CtxDoneEvent {
        header: hdr(ts),
        ctx,
        chan,
    })
}

fn steps(t: &Track) -> Vec<(u64, Step)> {
    t.transitions.iter().map(|x| (x.ts_ns, x.step())).collect()
}

#[test]
fn entries_are_small() {
    assert_eq!(size_of::<Transition>(), 16);
    assert_eq!(size_of::<Wake>(), 16);
    assert_eq!(size_of::<CancelMark>(), 32);
}

#[test]
fn goroutine_histories() {
    let mut m = Model::default();
    // g1 existed before the trace: its first act gives it a track.
    m.apply(&create(10, 1, 100));
    m.apply(&create(10, 1, 100)); // re-fired probe
    m.apply(&park(10, 200, 14, [0; 4]));
    m.apply(&park(10, 210, 14, [0; 4])); // re-fired entry probe
    m.apply(&ready(10, 300, 1));
    m.apply(&ready(10, 310, 1)); // not parked: ignored
    m.apply(&exit(10, 400));
    m.apply(&exit(10, 410));
    m.apply(&park(10, 420, 14, [0; 4])); // late event of an exited goroutine
    m.apply(&park(77, 500, 9, [0; 4])); // first seen parking
    let tl = &m.timeline;
    assert_eq!(tl.tracks().len(), 3);
    let g1 = &tl.tracks()[tl.track_of(1).unwrap()];
    assert_eq!((g1.created_ns, g1.startpc), (None, 0));
    assert_eq!(steps(g1), vec![(100, Step::Runnable)]);
    let g10 = &tl.tracks()[tl.track_of(10).unwrap()];
    assert_eq!(
        (g10.parent_goid, g10.created_ns, g10.startpc),
        (1, Some(100), 0x20a)
    );
    assert_eq!(tl.stack(g10.create_stack), StackRef::new(3, 0x33));
    let blocked = tl
        .stacks
        .iter()
        .position(|s| *s == StackRef::new(5, 0x55).unwrap());
    let parked = Step::Parked {
        reason: 14,
        stack: blocked.unwrap() as u32,
    };
    assert_eq!(
        steps(g10),
        vec![
            (100, Step::Runnable),
            (200, parked),
            (300, Step::Runnable),
            (400, Step::Exit)
        ]
    );
    let g77 = &tl.tracks()[tl.track_of(77).unwrap()];
    assert_eq!(g77.created_ns, None);
    assert_eq!(g77.startpc, 0x200 + 77);
    assert!(tl.full_at_ns().is_none());
    let mut ids: Vec<i32> = tl.stack_ids().collect();
    ids.sort();
    assert_eq!(ids, vec![3, 5]);
    assert!(m.stack_ids().contains(&3) && m.stack_ids().contains(&5));
}

#[test]
fn cancels_propagation_and_wakes() {
    let mut m = Model::default();
    m.apply(&ctx_create(1, 0xa0, 0, 10)); // parent, from Background
    m.apply(&ctx_create(1, 0xb0, 0xa0, 20)); // child of the parent
    m.apply(&done(0xb0, 0xc0, 25));
    m.apply(&create(5, 1, 30));
    m.apply(&park(5, 40, 14, [0xc0, 0, 0, 0])); // waits on the child's Done
    m.apply(&create(6, 1, 45));
    m.apply(&park(6, 46, 14, [0xd0, 0, 0, 0])); // waits on something else
    m.apply(&cancel(2, 0xa0, true, 100)); // cancel func, in goroutine 2
    m.apply(&cancel(2, 0xb0, false, 101)); // propagated
    m.apply(&cancel(2, 0xb0, false, 102)); // repeat: a no-op
    m.apply(&ready(5, 103, 2));
    m.apply(&ready(6, 104, 2));
    let tl = &m.timeline;
    assert_eq!(tl.cancels().len(), 2, "{:?}", tl.cancels());
    let (a, b) = (tl.cancels()[0], tl.cancels()[1]);
    assert_eq!((a.node, a.goid, a.from, a.ts_ns), (0, 2, NONE, 100));
    assert_eq!((b.node, b.goid, b.from, b.ts_ns), (1, 2, 0, 101));
    assert_eq!(b.flags, CANCEL_ERR_CANCELED);
    assert!(
        tl.track_of(2).is_some(),
        "the cancelling goroutine has a track"
    );
    assert_eq!(
        tl.wakes(),
        &[Wake {
            ts_ns: 103,
            cancel: 1,
            track: tl.track_of(5).unwrap() as u32,
        }]
    );
}

#[test]
fn a_cancel_before_the_park_did_not_wake_it() {
    let mut m = Model::default();
    m.apply(&ctx_create(1, 0xa0, 0, 10));
    m.apply(&done(0xa0, 0xc0, 11));
    m.apply(&cancel(1, 0xa0, true, 20));
    m.apply(&create(5, 1, 30));
    m.apply(&park(5, 40, 14, [0xc0, 0, 0, 0]));
    m.apply(&ready(5, 50, 1));
    assert!(m.timeline.wakes().is_empty());
}

#[test]
fn the_budget_keeps_a_consistent_prefix() {
    let budget = TRACK_BYTES * 2 + TRANSITION_BYTES * 4 + STACK_BYTES * 2;
    let mut m = Model {
        timeline: Timeline::with_budget(budget),
        ..Default::default()
    };
    m.apply(&create(10, 1, 100)); // g1 and g10 tracks, the creation stack
    m.apply(&park(10, 200, 14, [0; 4])); // blocked stack + a transition
    m.apply(&ready(10, 300, 1));
    m.apply(&park(10, 400, 14, [0; 4])); // does not fit
    m.apply(&create(11, 1, 500));
    m.apply(&cancel(1, 0xa0, true, 600));
    let tl = &m.timeline;
    assert!(
        tl.bytes() <= tl.budget(),
        "{} > {}",
        tl.bytes(),
        tl.budget()
    );
    assert_eq!(tl.full_at_ns(), Some(400));
    assert_eq!(
        tl.omitted(),
        &Omitted {
            events: 3,
            goroutines: 1,
            cancels: 1,
        }
    );
    let g10 = &tl.tracks()[tl.track_of(10).unwrap()];
    assert_eq!(g10.transitions.len(), 3);
    assert!(tl.track_of(11).is_none());
}
