use tracer_common::{EventHeader, GoCreateEvent, GoExitEvent, GoParkEvent, GoReadyEvent};

use super::*;

fn ident(goid: u64) -> GoIdentity {
    GoIdentity {
        goid,
        parent_goid: 1,
        gopc: 0x100,
        startpc: 0x200,
    }
}
const SITE: SiteKey = SiteKey {
    startpc: 0x200,
    gopc: 0x100,
};
fn hdr(ts: u64) -> EventHeader {
    EventHeader {
        ts_ns: ts,
        ..Default::default()
    }
}
fn create(goid: u64, ts: u64) -> Event {
    Event::Create(GoCreateEvent {
        header: hdr(ts),
        g: ident(goid),
        stack_id: 3,
        ..Default::default()
    })
}
fn park(goid: u64, ts: u64, reason: u32) -> Event {
    Event::Park(GoParkEvent {
        header: hdr(ts),
        g: ident(goid),
        stack_id: 5,
        reason,
        caller_pc: 9,
        chans: [0; 4],
    })
}

#[test]
fn lifecycle_and_duplicates() {
    let mut m = GoroutineModel::new();
    m.apply(&create(10, 1));
    m.apply(&create(10, 1)); // duplicate
    m.apply(&park(10, 2, 14));
    m.apply(&park(10, 3, 14)); // re-fired entry probe
    let g = m.get(10).unwrap();
    assert_eq!(
        g.state,
        State::Parked(Parked {
            reason: 14,
            since_ns: 2,
            stack: StackRef::new(5, 9),
            chans: [0; 4],
            before_attach: false,
        })
    );
    m.apply(&Event::Ready(GoReadyEvent {
        header: hdr(4),
        goid: 10,
        waker_goid: 0,
    }));
    assert_eq!(m.get(10).unwrap().state, State::Runnable);
    m.apply(&Event::Exit(GoExitEvent {
        header: hdr(5),
        goid: 10,
    }));
    m.apply(&Event::Exit(GoExitEvent {
        header: hdr(5),
        goid: 10,
    })); // twice
    assert_eq!(m.live_count(), 0);
    let s = m.stats();
    assert_eq!(
        (s.created, s.exited, s.duplicates, s.unseen_exits),
        (1, 1, 2, 1)
    );
    let site = &m.sites()[&SiteKey {
        startpc: 0x200,
        gopc: 0x100,
    }];
    assert_eq!((site.created, site.exited, site.live), (1, 1, 0));
}

#[test]
fn off_cpu_time_per_stack_and_reason() {
    let mut m = GoroutineModel::new();
    m.apply(&create(10, 1));
    m.apply(&park(10, 2, 14));
    m.apply(&Event::Ready(GoReadyEvent {
        header: hdr(5),
        goid: 10,
        waker_goid: 0,
    }));
    m.apply(&park(10, 7, 9));
    let off = m.off_cpu_at(10);
    assert_eq!(off[&(StackRef::new(5, 9), 14)], 3, "ended park: 2..5");
    assert_eq!(off[&(StackRef::new(5, 9), 9)], 3, "ongoing park: 7..10");
    assert_eq!(m.creations().values().sum::<u64>(), 1);
}

/// Two parks since time 0 totalled at the end of time (a corrupt
/// recording's trailer) saturate instead of overflowing.
#[test]
fn off_cpu_totals_saturate() {
    let mut m = GoroutineModel::new();
    for goid in [10, 11, 12] {
        m.apply(&park(goid, 0, 14));
    }
    let off = m.off_cpu_at(u64::MAX);
    assert_eq!(off[&(StackRef::new(5, 9), 14)], u64::MAX);
    m.apply(&park(10, u64::MAX, 15));
    m.apply(&park(11, u64::MAX, 15));
    assert_eq!(m.off_cpu_at(u64::MAX)[&(StackRef::new(5, 9), 14)], u64::MAX);
}

#[test]
fn goroutine_seen_first_parking_existed_before_attach() {
    let mut m = GoroutineModel::new();
    m.apply(&park(77, 5, 9));
    let g = m.get(77).unwrap();
    assert_eq!(g.origin, Origin::BeforeAttach);
    assert_eq!(g.created_ns, None);
    assert_eq!(m.stats().seen_before_attach, 1);
}

#[test]
fn snapshot_seeds_goroutines_and_events_win() {
    use crate::goruntime::snapshot::GState;
    use crate::snapshot::{SnapGoroutine, Snapshot};
    let g = |goid, state, reason, since| SnapGoroutine {
        goid,
        parent_goid: Some(1),
        gopc: 0x100,
        startpc: 0x200,
        state,
        wait_reason: reason,
        blocked_since_ns: since,
        stack: Some(crate::snapshot::FIRST_STACK_ID),
    };
    let snap = Snapshot {
        taken_ns: 1_000,
        goroutines: vec![
            g(7, GState::Waiting, Some(14), Some(400)),
            g(8, GState::Waiting, Some(14), None),
            g(9, GState::Runnable, None, None),
            g(10, GState::Waiting, Some(14), None),
        ],
        ..Default::default()
    };
    let mut m = GoroutineModel::new();
    m.seed(&snap);
    let (s, site) = (m.stats(), &m.sites()[&SITE]);
    assert_eq!(
        (s.seen_before_attach, s.from_snapshot, site.live),
        (4, 4, 4)
    );
    let State::Parked(p7) = m.get(7).unwrap().state else {
        panic!("7 not parked")
    };
    assert_eq!((p7.since_ns, p7.before_attach, p7.reason), (400, true, 14));
    let State::Parked(p8) = m.get(8).unwrap().state else {
        panic!("8 not parked")
    };
    assert_eq!(p8.since_ns, 1_000, "unknown: since the snapshot");
    assert_eq!(m.get(9).unwrap().state, State::Runnable);
    assert_eq!(m.get(7).unwrap().origin, Origin::Snapshot);
    // Parked time counts from the snapshot on, not from waitsince.
    let off = m.off_cpu_at(1_500);
    let key = (p7.stack, 14);
    assert_eq!(off[&key], 3 * 500);
    // goroutine 10 was created after attach and read by the snapshot:
    // its creation event makes it a traced creation.
    m.apply(&create(10, 900));
    let g10 = m.get(10).unwrap();
    assert_eq!((g10.origin, g10.created_ns), (Origin::Created, Some(900)));
    m.apply(&park(7, 1_200, 14));
    m.apply(&Event::Exit(GoExitEvent {
        header: hdr(1_300),
        goid: 8,
    }));
    let s = m.stats();
    assert_eq!(
        (s.seen_before_attach, s.from_snapshot, s.created, s.exited),
        (3, 3, 1, 1)
    );
    let site = &m.sites()[&SITE];
    assert_eq!((site.live, site.created, site.exited), (3, 1, 0));
    let State::Parked(p7) = m.get(7).unwrap().state else {
        panic!("7 not parked")
    };
    assert!(
        !p7.before_attach,
        "the event's park replaces the snapshot's"
    );
}
