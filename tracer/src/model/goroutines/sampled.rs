//! Samples: goroutine snapshots taken while a trace runs, folded into the
//! model for what no probe tells it (everything in sampled mode; the parks,
//! or the creations and exits, once the overhead budget shed their probes).
//!
//! A sample shows one moment. Between two samples a goroutine can be
//! created and gone, or wake and park again at the same place, unseen. So
//! what samples give is a lower bound, and the model says so:
//! - a goroutine first seen by a sample was created during the trace (the
//!   snapshot at attach, or the first sample, read every goroutine there
//!   was, but for the gs it counts as skipped), at the latest at that
//!   sample ([`Origin::Sampled`]): its age counts from that sample. Goids
//!   do not tell: each P hands out goids from a batch of its own;
//! - a park first seen by a sample began at the latest at that sample, or
//!   at `g.waitsince` when the runtime set it after the previous sample
//!   ([`Parked::sampled`]);
//! - a goroutine a sample no longer holds exited in between, unless the
//!   sample could not read its g (then it is kept, and counted).

use tracer_common::GoIdentity;

use super::{GoroutineModel, Origin, Parked, StackRef, State, WaitChans, add_parked};
use crate::model::existing::{SnapGoroutine, Snapshot, is_snapshot_stack};

/// Which parts of the model samples keep up to date.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SampleRules {
    /// Creations and exits (no lifecycle probes): a goroutine a sample no
    /// longer holds has exited.
    pub presence: bool,
    /// Parks and wakeups (no park/ready probes): a sample says which
    /// goroutines are parked, where, and since when at the latest.
    pub states: bool,
}

impl SampleRules {
    /// Sampled mode: everything from samples.
    pub const ALL: SampleRules = SampleRules {
        presence: true,
        states: true,
    };
}

/// What the model knows of the samples it was given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sampling {
    /// Samples folded in (the snapshot at attach not counted).
    pub samples: u64,
    /// When the last sample (or the snapshot at attach) was taken.
    pub last_ns: u64,
    /// Times a sample did not hold a live goroutine because it could not
    /// read its g: the goroutine was kept alive.
    pub kept_unread: u64,
}

impl Sampling {
    /// The snapshot at attach: the start of what samples compare with.
    pub(super) fn seeded(&mut self, snap: &Snapshot) {
        self.last_ns = self.last_ns.max(snap.taken_ns);
    }
}

/// The state a sample shows `s` in; a park starts at the latest at the
/// sample (`taken_ns`), at the earliest after the previous one (`prev_ns`).
fn sampled_state(s: &SnapGoroutine, taken_ns: u64, prev_ns: u64) -> State {
    match s.wait_reason {
        Some(reason) if s.state.is_parked() => State::Parked(Parked {
            reason,
            since_ns: s
                .blocked_since_ns
                .map_or(taken_ns, |t| t.clamp(prev_ns.min(taken_ns), taken_ns)),
            stack: s.stack.map(|id| StackRef { id, caller_pc: 0 }),
            chans: WaitChans::default(),
            before_attach: false,
            sampled: true,
        }),
        _ => State::Runnable,
    }
}

/// Whether the park a sample shows is the one the model holds: the same
/// wait reason and stack. A park the probe saw has an eBPF stack id, which
/// a sample's never equals: the wait reason alone decides then. A sample
/// that could not walk the stack (the goroutine kept changing) leaves the
/// park as it was.
fn same_park(held: &Parked, seen: &State) -> bool {
    let State::Parked(p) = seen else {
        return false;
    };
    let comparable = |s: Option<StackRef>| s.is_some_and(|s| is_snapshot_stack(s.id));
    held.reason == p.reason
        && (!comparable(held.stack) || !comparable(p.stack) || held.stack == p.stack)
}

impl GoroutineModel {
    pub fn sampling(&self) -> &Sampling {
        &self.sampling
    }

    /// Folds sample `snap` in under `rules`. `unread`: the goids (sorted)
    /// of live goroutines whose g the sample could not read.
    pub fn observe(&mut self, snap: &Snapshot, rules: SampleRules, unread: &[u64]) {
        let (taken, prev) = (snap.taken_ns, self.sampling.last_ns);
        for s in &snap.goroutines {
            if s.goid == 0 {
                continue;
            }
            if !self.live.contains(s.goid) {
                self.sampled_new(s, taken, prev);
            } else if rules.states {
                self.sampled_park(s, taken, prev);
            }
        }
        if rules.presence {
            self.sampled_exits(snap, unread);
        }
        self.sampling.samples += 1;
        self.sampling.last_ns = prev.max(taken);
        self.last_ns = self.last_ns.max(taken);
    }

    /// A goroutine the model did not hold: created during the trace.
    fn sampled_new(&mut self, s: &SnapGoroutine, taken: u64, prev: u64) {
        let ident = GoIdentity {
            goid: s.goid,
            parent_goid: s.parent_goid.unwrap_or(0),
            gopc: s.gopc,
            startpc: s.startpc,
        };
        let Some(mut gr) = self.new_slot(&ident, Origin::Sampled, taken, None) else {
            self.stats.inconsistent += 1;
            return;
        };
        gr.set_state(sampled_state(s, taken, prev), &mut self.tables);
        let site = self.site_of(&gr);
        if !self.live.insert(gr, &mut self.tables) {
            self.stats.inconsistent += 1;
            return;
        }
        let site = self.sites.entry(site).or_default();
        site.live += 1;
        site.created += 1;
        self.stats.created += 1;
        self.stats.created_seen_by_samples += 1;
    }

    /// A live goroutine's park (or none) as the sample shows it.
    fn sampled_park(&mut self, s: &SnapGoroutine, taken: u64, prev: u64) {
        let seen = sampled_state(s, taken, prev);
        let observed_from = self.observed_from;
        let Some(gr) = self.live.get_mut(s.goid) else {
            return;
        };
        let held = gr.parked(&self.tables);
        if held.as_ref().is_some_and(|p| same_park(p, &seen)) {
            return;
        }
        if held.is_none() && seen == State::Runnable {
            return;
        }
        if let Some(p) = held {
            // Ended between the two samples: counted up to this one.
            add_parked(&mut self.off_cpu, &p, observed_from, taken);
        }
        if matches!(seen, State::Parked(_)) {
            gr.count_park();
        }
        gr.set_state(seen, &mut self.tables);
    }

    /// Every live goroutine the sample does not hold exited, unless its g
    /// was unreadable (`unread`).
    fn sampled_exits(&mut self, snap: &Snapshot, unread: &[u64]) {
        let held = |goid: &u64| {
            snap.goroutines
                .binary_search_by_key(goid, |s| s.goid)
                .is_ok()
        };
        let mut gone: Vec<u64> = self
            .live
            .iter()
            .map(|g| g.goid())
            .filter(|goid| !held(goid))
            .collect();
        gone.sort_unstable();
        for goid in gone {
            if unread.binary_search(&goid).is_ok() {
                self.sampling.kept_unread += 1;
                continue;
            }
            if self.exit_at(goid, snap.taken_ns) {
                self.stats.exited_seen_by_samples += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::goruntime::gstatus::GState;
    use crate::model::existing::FIRST_STACK_ID;

    fn g(goid: u64, parked: Option<(u8, i32)>) -> SnapGoroutine {
        SnapGoroutine {
            gp: 0x1000 * goid,
            goid,
            parent_goid: Some(1),
            gopc: 0x100,
            startpc: 0x200 + goid % 2,
            state: if parked.is_some() {
                GState::Waiting
            } else {
                GState::Runnable
            },
            wait_reason: parked.map(|p| p.0),
            blocked_since_ns: None,
            stack: parked.map(|p| p.1),
        }
    }

    fn snap(taken_ns: u64, goroutines: Vec<SnapGoroutine>) -> Snapshot {
        Snapshot {
            taken_ns,
            goroutines,
            ..Snapshot::default()
        }
    }

    fn parked(m: &GoroutineModel, goid: u64) -> Option<Parked> {
        match m.get(goid)?.state() {
            State::Parked(p) => Some(p),
            State::Runnable => None,
        }
    }

    const A: i32 = FIRST_STACK_ID;
    const B: i32 = FIRST_STACK_ID - 1;

    #[test]
    fn samples_alone_tell_creations_parks_and_exits() {
        let mut m = GoroutineModel::new();
        m.seed(&snap(1_000, vec![g(1, None), g(2, Some((14, A)))]));
        // 3 appears parked, 2 parks elsewhere, 1 is unchanged.
        m.observe(
            &snap(
                2_000,
                vec![g(1, None), g(2, Some((14, B))), g(3, Some((14, A)))],
            ),
            SampleRules::ALL,
            &[],
        );
        let p3 = parked(&m, 3).unwrap();
        assert_eq!(
            (p3.since_ns, p3.sampled, p3.stack.unwrap().id),
            (2_000, true, A)
        );
        assert_eq!(m.get(3).unwrap().origin(), Origin::Sampled);
        assert_eq!(m.get(3).unwrap().created_ns(), Some(2_000));
        assert_eq!(parked(&m, 2).unwrap().since_ns, 2_000, "a new park");
        // The same park later keeps its start; 1 exits, 2 wakes.
        m.observe(
            &snap(3_000, vec![g(2, None), g(3, Some((14, A)))]),
            SampleRules::ALL,
            &[],
        );
        assert_eq!(parked(&m, 3).unwrap().since_ns, 2_000);
        assert!(m.get(1).is_none() && parked(&m, 2).is_none());
        let s = m.stats();
        assert_eq!(
            (
                s.created,
                s.created_seen_by_samples,
                s.exited,
                s.exited_seen_by_samples
            ),
            (1, 1, 1, 1)
        );
        assert_eq!((s.from_snapshot, m.sampling().samples), (2, 2));
        // Parked from 1_000 (attach) to 2_000, when a sample saw it elsewhere.
        assert_eq!(
            m.off_cpu_at(0).get(&(
                Some(StackRef {
                    id: A,
                    caller_pc: 0
                }),
                14
            )),
            Some(&1_000)
        );
    }

    #[test]
    fn an_unread_g_keeps_its_goroutine() {
        let mut m = GoroutineModel::new();
        m.seed(&snap(1_000, vec![g(1, None), g(2, None)]));
        m.observe(&snap(2_000, vec![g(1, None)]), SampleRules::ALL, &[2]);
        assert!(m.get(2).is_some());
        assert_eq!((m.stats().exited, m.sampling().kept_unread), (0, 1));
    }

    #[test]
    fn with_probes_for_a_part_samples_leave_it_alone() {
        let mut m = GoroutineModel::new();
        m.seed(&snap(1_000, vec![g(1, Some((14, A))), g(2, None)]));
        let rules = SampleRules {
            presence: false,
            states: true,
        };
        m.observe(&snap(2_000, vec![g(1, None)]), rules, &[]);
        assert!(m.get(2).is_some(), "exits come from the probes");
        assert!(parked(&m, 1).is_none(), "the park from the sample");
        let rules = SampleRules {
            presence: true,
            states: false,
        };
        m.observe(&snap(3_000, vec![g(1, Some((14, A)))]), rules, &[]);
        assert!(m.get(2).is_none());
        assert!(parked(&m, 1).is_none(), "parks come from the probes");
    }

    #[test]
    fn waitsince_after_the_previous_sample_starts_the_park() {
        let mut m = GoroutineModel::new();
        m.seed(&snap(1_000, vec![g(1, None)]));
        let mut s = g(1, Some((14, A)));
        s.blocked_since_ns = Some(1_500);
        m.observe(&snap(2_000, vec![s.clone()]), SampleRules::ALL, &[]);
        assert_eq!(parked(&m, 1).unwrap().since_ns, 1_500);
        // Never before the previous sample, never after this one.
        let mut m = GoroutineModel::new();
        m.seed(&snap(1_000, vec![g(1, None)]));
        s.blocked_since_ns = Some(500);
        m.observe(&snap(2_000, vec![s]), SampleRules::ALL, &[]);
        assert_eq!(parked(&m, 1).unwrap().since_ns, 1_000);
    }

    #[test]
    fn a_creation_event_after_the_sample_tells_the_story() {
        use crate::decode::Event;
        let mut m = GoroutineModel::new();
        m.seed(&snap(1_000, vec![g(1, None)]));
        m.observe(
            &snap(2_000, vec![g(1, None), g(5, None)]),
            SampleRules::ALL,
            &[],
        );
        assert_eq!(m.stats().created, 1);
        let ev = Event::Create(tracer_common::GoCreateEvent {
            header: tracer_common::EventHeader {
                ts_ns: 2_100,
                ..Default::default()
            },
            g: GoIdentity {
                goid: 5,
                parent_goid: 1,
                gopc: 0x100,
                startpc: 0x201,
            },
            ..Default::default()
        });
        m.apply(&ev);
        let s = m.stats();
        assert_eq!((s.created, s.created_seen_by_samples), (1, 0));
        assert_eq!(m.get(5).unwrap().origin(), Origin::Created);
        let created: u64 = m.sites().values().map(|s| s.created).sum();
        let live: u64 = m.sites().values().map(|s| s.live).sum();
        assert_eq!((created, live), (1, 2));
    }
}
