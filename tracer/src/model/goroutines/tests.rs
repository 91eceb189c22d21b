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
        g.state(),
        State::Parked(Parked {
            reason: 14,
            since_ns: 2,
            stack: StackRef::new(5, 9),
            chans: [0; 4].into(),
            before_attach: false,
            sampled: false,
        })
    );
    m.apply(&Event::Ready(GoReadyEvent {
        header: hdr(4),
        goid: 10,
        waker_goid: 0,
    }));
    assert_eq!(m.get(10).unwrap().state(), State::Runnable);
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
    assert_eq!(g.origin(), Origin::BeforeAttach);
    assert_eq!(g.created_ns(), None);
    assert_eq!(m.stats().seen_before_attach, 1);
}

#[test]
fn snapshot_seeds_goroutines_and_events_win() {
    use crate::goruntime::gstatus::GState;
    use crate::model::existing::{SnapGoroutine, Snapshot};
    let g = |goid, state, reason, since| SnapGoroutine {
        gp: 0,
        goid,
        parent_goid: Some(1),
        gopc: 0x100,
        startpc: 0x200,
        state,
        wait_reason: reason,
        blocked_since_ns: since,
        stack: Some(crate::model::existing::FIRST_STACK_ID),
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
    let State::Parked(p7) = m.get(7).unwrap().state() else {
        panic!("7 not parked")
    };
    assert_eq!((p7.since_ns, p7.before_attach, p7.reason), (400, true, 14));
    let State::Parked(p8) = m.get(8).unwrap().state() else {
        panic!("8 not parked")
    };
    assert_eq!(p8.since_ns, 1_000, "unknown: since the snapshot");
    assert_eq!(m.get(9).unwrap().state(), State::Runnable);
    assert_eq!(m.get(7).unwrap().origin(), Origin::Snapshot);
    // Parked time counts from the snapshot on, not from waitsince.
    let off = m.off_cpu_at(1_500);
    let key = (p7.stack, 14);
    assert_eq!(off[&key], 3 * 500);
    // goroutine 10 was created after attach and read by the snapshot:
    // its creation event makes it a traced creation.
    m.apply(&create(10, 900));
    let g10 = m.get(10).unwrap();
    assert_eq!(
        (g10.origin(), g10.created_ns()),
        (Origin::Created, Some(900))
    );
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
    let State::Parked(p7) = m.get(7).unwrap().state() else {
        panic!("7 not parked")
    };
    assert!(
        !p7.before_attach,
        "the event's park replaces the snapshot's"
    );
}

fn park_on(goid: u64, ts: u64, reason: u32, chans: [u64; WAIT_CHANS]) -> Event {
    let Event::Park(mut e) = park(goid, ts, reason) else {
        unreachable!()
    };
    e.chans = chans;
    Event::Park(e)
}

fn ready(goid: u64, ts: u64) -> Event {
    Event::Ready(GoReadyEvent {
        header: hdr(ts),
        goid,
        waker_goid: 0,
    })
}

fn exit(goid: u64, ts: u64) -> Event {
    Event::Exit(GoExitEvent {
        header: hdr(ts),
        goid,
    })
}

/// A million parked goroutines live in these slots: keep them small.
#[test]
fn slot_size() {
    assert!(
        size_of::<Goroutine>() <= 72,
        "Goroutine slot grew to {} bytes",
        size_of::<Goroutine>()
    );
}

/// Every logical value survives the compact slot: parent (0 = none),
/// site, creation stack, and the four waited channels of a park (two
/// inline, two in the side table), across re-parks and wakeups.
#[test]
fn slot_round_trips_logical_values() {
    let mut m = GoroutineModel::new();
    let mut e = create(10, 1);
    if let Event::Create(c) = &mut e {
        c.g.parent_goid = 0;
        c.caller_pc = 0x77;
    }
    m.apply(&e);
    let g = m.get(10).unwrap();
    assert_eq!(g.parent_goid(), None);
    assert_eq!(g.create_stack(), StackRef::new(3, 0x77));
    assert_eq!((g.site(), g.startpc(), g.gopc()), (SITE, 0x200, 0x100));
    assert_eq!((g.created_ns(), g.parks()), (Some(1), 0));

    m.apply(&park_on(10, 2, 14, [0xa, 0xb, 0xc, 0xd]));
    let want = Parked {
        reason: 14,
        since_ns: 2,
        stack: StackRef::new(5, 9),
        chans: [0xa, 0xb, 0xc, 0xd].into(),
        before_attach: false,
        sampled: false,
    };
    assert_eq!(m.get(10).unwrap().state(), State::Parked(want));
    assert_eq!(m.tables.more_chans.in_use(), 1);
    // A park on one channel without a wakeup in between (netpoll): the
    // side entry goes, nothing of the old channels stays.
    m.apply(&park_on(10, 3, 9, [0xe, 0, 0, 0]));
    let State::Parked(p) = m.get(10).unwrap().state() else {
        panic!("not parked")
    };
    assert_eq!(
        (p.chans.first, p.reason, p.since_ns),
        ([0xe, 0, 0, 0], 9, 3)
    );
    assert_eq!(m.tables.more_chans.in_use(), 0);
    m.apply(&park_on(10, 4, 14, [0, 0, 0, 0xf]));
    m.apply(&ready(10, 5));
    assert_eq!(m.get(10).unwrap().state(), State::Runnable);
    assert_eq!(m.tables.more_chans.in_use(), 0);
    assert_eq!(m.get(10).unwrap().parks(), 3);
}

/// A `select` on more channels than a park event holds: the `GoParkChans`
/// event that follows adds the rest to the same park, once even if sent
/// twice, and the wakeup frees them.
#[test]
fn park_chans_extend_the_current_park() {
    let mut m = GoroutineModel::new();
    m.apply(&create(10, 1));
    m.apply(&park_on(10, 2, 14, [1, 2, 3, 4]));
    let mut more = tracer_common::GoParkChansEvent {
        header: EventHeader {
            kind: tracer_common::EventKind::GoParkChans as u32,
            ts_ns: 2,
            ..Default::default()
        },
        goid: 10,
        nr: 3,
        ..Default::default()
    };
    more.chans[..3].copy_from_slice(&[5, 6, 7]);
    m.apply(&Event::ParkChans(Box::new(more)));
    m.apply(&Event::ParkChans(Box::new(more)));
    let State::Parked(p) = m.get(10).unwrap().state() else {
        panic!("not parked")
    };
    let all: Vec<u64> = p.chans.iter().copied().collect();
    assert_eq!(all, [1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(m.tables.more_chans.in_use(), 1);
    m.apply(&ready(10, 3));
    assert_eq!(m.tables.more_chans.in_use(), 0);
    // Nothing for a goroutine that is not parked.
    m.apply(&Event::ParkChans(Box::new(more)));
    assert_eq!(m.tables.more_chans.in_use(), 0);
}

/// A slot freed by an exit and taken by a new goroutine keeps nothing of
/// the old one: not its park, channels, creation stack, origin or parks.
#[test]
fn reused_slot_does_not_leak_old_state() {
    let mut m = GoroutineModel::new();
    m.apply(&create(10, 1));
    m.apply(&park_on(10, 2, 14, [1, 2, 3, 4]));
    m.apply(&exit(10, 3));
    assert_eq!((m.live_count(), m.tables.more_chans.in_use()), (0, 0));
    // First seen parking (before attach), different site and parent.
    let mut e = park_on(20, 4, 9, [5, 0, 0, 0]);
    if let Event::Park(p) = &mut e {
        p.g = GoIdentity {
            goid: 20,
            parent_goid: 0,
            gopc: 0x300,
            startpc: 0x400,
        };
        p.stack_id = NO_STACK;
        p.caller_pc = 0;
    }
    m.apply(&e);
    assert_eq!(m.live.slots(), 1, "the freed slot is reused");
    let g = m.get(20).unwrap();
    assert_eq!(
        (g.goid(), g.parent_goid(), g.origin(), g.created_ns()),
        (20, None, Origin::BeforeAttach, None)
    );
    assert_eq!((g.create_stack(), g.parks()), (None, 1));
    assert_eq!((g.startpc(), g.gopc()), (0x400, 0x300));
    assert_eq!(
        g.state(),
        State::Parked(Parked {
            reason: 9,
            since_ns: 4,
            stack: None,
            chans: [5, 0, 0, 0].into(),
            before_attach: false,
            sampled: false,
        })
    );
    assert!(m.get(10).is_none());
    // And a created one in the slot after it.
    m.apply(&exit(20, 5));
    m.apply(&create(30, 6));
    let g = m.get(30).unwrap();
    assert_eq!(
        (g.state(), g.parks(), g.parent_goid()),
        (State::Runnable, 0, Some(1))
    );
    assert_eq!(m.live.slots(), 1);
    assert_eq!(m.live().map(|g| g.goid()).collect::<Vec<_>>(), [30]);
}

/// Events lost or repeated: a wakeup or exit of an unknown goroutine, a
/// second wakeup, goid 0; nothing goes negative and the counts say so.
#[test]
fn drops_and_nonsense_are_counted() {
    let mut m = GoroutineModel::new();
    m.apply(&ready(5, 1)); // parked before attach, never seen
    m.apply(&exit(6, 1));
    m.apply(&create(0, 1));
    m.apply(&park(0, 1, 14));
    m.apply(&create(7, 2));
    m.apply(&ready(7, 3)); // runnable already
    let s = m.stats();
    assert_eq!(
        (s.readies, s.unseen_exits, s.inconsistent, s.duplicates),
        (1, 1, 2, 1)
    );
    assert_eq!(m.live_count(), 1);
}

/// Many goroutines come and go: every live one is listed once, found by
/// goid, and the slab holds no more slots than were ever live at once.
#[test]
fn churn_keeps_index_and_slots_consistent() {
    let mut m = GoroutineModel::new();
    let mut alive = std::collections::BTreeSet::new();
    for round in 0..10u64 {
        for i in 0..100 {
            let goid = 1 + round * 100 + i;
            m.apply(&create(goid, goid));
            alive.insert(goid);
        }
        // Exit every other one of the oldest.
        let gone: Vec<u64> = alive.iter().copied().step_by(2).take(60).collect();
        for goid in gone {
            m.apply(&exit(goid, 10_000));
            alive.remove(&goid);
        }
    }
    let mut listed: Vec<u64> = m.live().map(|g| g.goid()).collect();
    listed.sort_unstable();
    assert_eq!(listed, alive.iter().copied().collect::<Vec<_>>());
    assert!(
        alive
            .iter()
            .all(|g| m.get(*g).is_some_and(|r| r.goid() == *g))
    );
    assert_eq!(m.live_count(), alive.len());
    assert!(m.live.slots() <= alive.len() + 60);
}
