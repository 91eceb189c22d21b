//! Goroutine lifecycle state machine, keyed by goid (never by g pointer: g
//! structs are recycled, goids are not).
//!
//! Probes can fire twice for one call (an entry uprobe re-fires when the
//! prologue re-enters after stack growth) and a ring buffer can drop events;
//! every transition here is idempotent and counts what it had to ignore, so
//! the model never goes negative and no goroutine exits twice.
//!
//! Live goroutines are stored compactly (see [`slab`]): a program with a
//! million parked goroutines is what this tool is for.

mod sampled;
mod slab;
mod tables;

use super::HashMap;

use tracer_common::{GoIdentity, NO_STACK, WAIT_CHANS};

use super::sites::{SiteKey, SiteStats};
use crate::decode::Event;

pub use sampled::{SampleRules, Sampling};
pub use slab::{Goroutine, GoroutineRef};
use slab::{Slab, Tables};

/// A user stack: its id (a `StackDump` id from the eBPF walk, or a snapshot
/// stack id) plus, where a probe read one, the return address a
/// frame-pointer walk from a function's entry misses (0 when none).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StackRef {
    pub id: i32,
    pub caller_pc: u64,
}

impl StackRef {
    pub fn new(id: i32, caller_pc: u64) -> Option<Self> {
        (id != NO_STACK || caller_pc != 0).then_some(Self { id, caller_pc })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parked {
    /// Raw `waitReason` value (the target's numbering).
    pub reason: u8,
    /// Monotonic ns when it parked.
    pub since_ns: u64,
    pub stack: Option<StackRef>,
    /// Channels it waits on (receive, send or select cases).
    pub chans: WaitChans,
    /// It parked before tracing began (read by the snapshot): `since_ns`
    /// is at most the park time (`g.waitsince`, or else the attach time),
    /// so how long it has been blocked is a lower bound.
    pub before_attach: bool,
    /// A sample saw it parked, not the park probe: `since_ns` is when a
    /// sample first saw this park (or `g.waitsince`), a lower bound.
    pub sampled: bool,
}

/// Channels a park waits on: the first [`WAIT_CHANS`] (all that most parks
/// have; 0 = unused) inline, the rest of a larger `select` in `more`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WaitChans {
    pub first: [u64; WAIT_CHANS],
    pub more: Vec<u64>,
}

impl WaitChans {
    /// Every slot, the unused ones (0) included.
    pub fn iter(&self) -> impl Iterator<Item = &u64> {
        self.first.iter().chain(&self.more)
    }
}

impl From<[u64; WAIT_CHANS]> for WaitChans {
    fn from(first: [u64; WAIT_CHANS]) -> Self {
        Self {
            first,
            more: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// Created or woken; running or waiting for a P.
    Runnable,
    Parked(Parked),
}

/// How the model learnt about a goroutine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Its creation was traced.
    Created,
    /// It already existed when tracing began (first seen parking).
    BeforeAttach,
    /// It already existed when tracing began: read from the process's
    /// memory at attach (`snapshot`).
    Snapshot,
    /// Created during the trace, first seen by a sample (no creation
    /// probe): its creation time is that sample's, a lower bound of its age.
    Sampled,
}

/// Counters over the whole trace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelStats {
    pub created: u64,
    pub exited: u64,
    pub parks: u64,
    pub readies: u64,
    /// Goroutines first seen alive (existed before attach), by the snapshot
    /// or by their first park.
    pub seen_before_attach: u64,
    /// Of those, the ones the snapshot read at attach.
    pub from_snapshot: u64,
    /// Exits of goroutines never seen (created before attach, never parked).
    pub unseen_exits: u64,
    /// Repeated entry-probe hits ignored (stack-growth re-entry).
    pub duplicates: u64,
    /// Events that made no sense for the model's state (e.g. after drops).
    pub inconsistent: u64,
    /// Of `created`, the goroutines no creation event told of: first seen
    /// by a sample (one that lived between two samples is not counted).
    pub created_seen_by_samples: u64,
    /// Of `exited`, the goroutines no exit event told of: gone from a
    /// sample.
    pub exited_seen_by_samples: u64,
}

/// Parked time accumulated per (blocked stack, wait reason).
pub type OffCpu = HashMap<(Option<StackRef>, u8), u64>;

#[derive(Default)]
pub struct GoroutineModel {
    live: Slab,
    /// What the live goroutines' slots index into.
    tables: Tables,
    /// Nanoseconds parked, per blocked stack and wait reason (parks that
    /// ended; [`GoroutineModel::off_cpu_at`] adds the ones still going on).
    off_cpu: OffCpu,
    /// Goroutines created per (creation stack, start pc).
    creations: HashMap<(Option<StackRef>, u64), u64>,
    sites: HashMap<SiteKey, SiteStats>,
    stats: ModelStats,
    /// Latest event timestamp applied.
    last_ns: u64,
    /// Parked time is counted from here at the earliest (the snapshot's
    /// time: what happened before attach is not in the trace).
    observed_from: u64,
    /// The samples folded in so far (see [`sampled`]).
    sampling: Sampling,
}

impl GoroutineModel {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn stats(&self) -> &ModelStats {
        &self.stats
    }

    /// The live goroutines, in no meaningful order (slot order: outputs
    /// sort what they take from here).
    pub fn live(&self) -> impl Iterator<Item = GoroutineRef<'_>> {
        self.live.iter().map(|g| GoroutineRef::new(g, &self.tables))
    }

    pub fn live_count(&self) -> usize {
        self.live.len()
    }

    pub fn get(&self, goid: u64) -> Option<GoroutineRef<'_>> {
        self.live
            .get(goid)
            .map(|g| GoroutineRef::new(g, &self.tables))
    }

    pub fn sites(&self) -> &HashMap<SiteKey, SiteStats> {
        &self.sites
    }

    pub fn last_ns(&self) -> u64 {
        self.last_ns
    }

    /// Creation counts per (creator stack, start pc of the new goroutine).
    pub fn creations(&self) -> &HashMap<(Option<StackRef>, u64), u64> {
        &self.creations
    }

    /// Parked time per (stack, wait reason), counting parks still going on
    /// up to `end_ns`.
    pub fn off_cpu_at(&self, end_ns: u64) -> OffCpu {
        let mut total = self.off_cpu.clone();
        for g in self.live.iter() {
            if let Some(p) = g.parked(&self.tables) {
                add_parked(&mut total, &p, self.observed_from, end_ns);
            }
        }
        total
    }

    /// A runnable slot for `g`; `None` (never in practice) when the site
    /// table is full.
    fn new_slot(
        &mut self,
        g: &GoIdentity,
        origin: Origin,
        created_ns: u64,
        create_stack: Option<StackRef>,
    ) -> Option<Goroutine> {
        let site = self.tables.sites.intern(SiteKey {
            startpc: g.startpc,
            gopc: g.gopc,
        })?;
        let stack = self.tables.stack_index(create_stack);
        Some(Goroutine::new(g, site, origin, created_ns, stack))
    }

    /// The site of a slot.
    fn site_of(&self, g: &Goroutine) -> SiteKey {
        GoroutineRef::new(g, &self.tables).site()
    }

    /// Adds the goroutines a snapshot read right after the probes were
    /// attached, before any event is applied. Events win afterwards: a
    /// creation event for one of them (it was created after attach, then
    /// read) makes it a traced creation, and parks, wakeups and exits
    /// update it like any goroutine.
    pub fn seed(&mut self, snap: &crate::model::existing::Snapshot) {
        self.observed_from = self.observed_from.max(snap.taken_ns);
        self.sampling.seeded(snap);
        for s in &snap.goroutines {
            if s.goid == 0 || self.live.contains(s.goid) {
                continue;
            }
            let state = match s.wait_reason {
                Some(reason) if s.state.is_parked() => State::Parked(Parked {
                    reason,
                    since_ns: s.blocked_since_ns.unwrap_or(snap.taken_ns),
                    stack: s.stack.map(|id| StackRef { id, caller_pc: 0 }),
                    chans: WaitChans::default(),
                    before_attach: true,
                    sampled: false,
                }),
                _ => State::Runnable,
            };
            let ident = GoIdentity {
                goid: s.goid,
                parent_goid: s.parent_goid.unwrap_or(0),
                gopc: s.gopc,
                startpc: s.startpc,
            };
            let Some(mut gr) = self.new_slot(&ident, Origin::Snapshot, 0, None) else {
                self.stats.inconsistent += 1;
                continue;
            };
            gr.set_state(state, &mut self.tables);
            let site = self.site_of(&gr);
            if !self.live.insert(gr, &mut self.tables) {
                self.stats.inconsistent += 1;
                continue;
            }
            self.stats.seen_before_attach += 1;
            self.stats.from_snapshot += 1;
            self.sites.entry(site).or_default().live += 1;
        }
    }

    pub fn apply(&mut self, event: &Event) {
        self.last_ns = self.last_ns.max(event.header().ts_ns);
        match event {
            Event::Create(e) => {
                self.on_create(e.header.ts_ns, &e.g, StackRef::new(e.stack_id, e.caller_pc))
            }
            Event::Park(e) => self.on_park(
                &e.g,
                Parked {
                    reason: e.reason as u8,
                    since_ns: e.header.ts_ns,
                    stack: StackRef::new(e.stack_id, e.caller_pc),
                    chans: e.chans.into(),
                    before_attach: false,
                    sampled: false,
                },
            ),
            Event::Ready(e) => self.on_ready(e.goid),
            Event::Exit(e) => self.on_exit(e.goid),
            Event::ParkChans(e) => {
                let n = (e.nr as usize).min(e.chans.len());
                if let Some(gr) = self.live.get_mut(e.goid) {
                    gr.set_more_chans(&e.chans[..n], &mut self.tables);
                }
            }
            Event::CtxCreate(_)
            | Event::CtxCancel(_)
            | Event::CtxDone(_)
            | Event::TimerStart(_)
            | Event::TimerStop(_)
            | Event::StackDump(_) => {}
        }
    }

    fn on_create(&mut self, ts: u64, g: &GoIdentity, stack: Option<StackRef>) {
        if g.goid == 0 {
            self.stats.inconsistent += 1;
            return;
        }
        match self
            .live
            .get(g.goid)
            .map(|gr| (gr.origin(), self.site_of(gr)))
        {
            None => {}
            Some((origin @ (Origin::Snapshot | Origin::Sampled), site)) => {
                // Created after attach, then read by a snapshot or a sample
                // before its creation event came: the events tell its story
                // from the start.
                let site = self.sites.entry(site).or_default();
                if origin == Origin::Snapshot {
                    self.stats.seen_before_attach -= 1;
                    self.stats.from_snapshot -= 1;
                } else {
                    self.stats.created -= 1;
                    self.stats.created_seen_by_samples -= 1;
                    site.created = site.created.saturating_sub(1);
                }
                site.live = site.live.saturating_sub(1);
                self.live.remove(g.goid, &mut self.tables);
            }
            Some(_) => {
                self.stats.duplicates += 1;
                return;
            }
        }
        let Some(gr) = self.new_slot(g, Origin::Created, ts, stack) else {
            self.stats.inconsistent += 1;
            return;
        };
        let site = self.site_of(&gr);
        if !self.live.insert(gr, &mut self.tables) {
            self.stats.inconsistent += 1;
            return;
        }
        self.stats.created += 1;
        let site = self.sites.entry(site).or_default();
        site.created += 1;
        *self.creations.entry((stack, g.startpc)).or_default() += 1;
        site.live += 1;
    }

    fn on_park(&mut self, g: &GoIdentity, parked: Parked) {
        if g.goid == 0 {
            self.stats.inconsistent += 1;
            return;
        }
        match self.live.get_mut(g.goid) {
            Some(gr) => {
                let prev = gr.parked(&self.tables);
                if let Some(p) = &prev
                    && p.reason == parked.reason
                    && p.stack == parked.stack
                {
                    // Entry probe fired again for the same park.
                    self.stats.duplicates += 1;
                    return;
                }
                self.stats.parks += 1;
                gr.count_park();
                // A wakeup we did not see (netpoll): the earlier park ended
                // by the time of this one at the latest.
                if let Some(prev) = prev {
                    add_parked(
                        &mut self.off_cpu,
                        &prev,
                        self.observed_from,
                        parked.since_ns,
                    );
                }
                gr.set_state(State::Parked(parked), &mut self.tables);
            }
            None => {
                let Some(mut gr) = self.new_slot(g, Origin::BeforeAttach, 0, None) else {
                    self.stats.inconsistent += 1;
                    return;
                };
                gr.count_park();
                gr.set_state(State::Parked(parked), &mut self.tables);
                let site = self.site_of(&gr);
                if !self.live.insert(gr, &mut self.tables) {
                    self.stats.inconsistent += 1;
                    return;
                }
                self.stats.parks += 1;
                self.stats.seen_before_attach += 1;
                self.sites.entry(site).or_default().live += 1;
            }
        }
    }

    fn on_ready(&mut self, goid: u64) {
        let now = self.last_ns;
        match self.live.get_mut(goid) {
            Some(gr) => match gr.parked(&self.tables) {
                Some(p) => {
                    self.stats.readies += 1;
                    gr.set_state(State::Runnable, &mut self.tables);
                    add_parked(&mut self.off_cpu, &p, self.observed_from, now);
                }
                None => self.stats.duplicates += 1,
            },
            // Parked before attach and never seen: nothing to update.
            None => self.stats.readies += 1,
        }
    }

    fn on_exit(&mut self, goid: u64) {
        if !self.exit_at(goid, self.last_ns) {
            self.stats.unseen_exits += 1;
        }
    }

    /// Removes goroutine `goid`, which exited by `until_ns` (its park, if
    /// any, lasted until then); false if it was not live.
    fn exit_at(&mut self, goid: u64, until_ns: u64) -> bool {
        let Some(gr) = self.live.remove(goid, &mut self.tables) else {
            return false;
        };
        if let Some(p) = gr.parked(&self.tables) {
            add_parked(&mut self.off_cpu, &p, self.observed_from, until_ns);
        }
        self.stats.exited += 1;
        let site = self.site_of(&gr);
        if let Some(site) = self.sites.get_mut(&site) {
            site.live = site.live.saturating_sub(1);
            if matches!(gr.origin(), Origin::Created | Origin::Sampled) {
                site.exited += 1;
            }
        }
        true
    }

    /// Records each site's live count at `t_s` seconds since trace start.
    pub fn sample_sites(&mut self, t_s: f64) {
        for site in self.sites.values_mut() {
            site.samples.push((t_s, site.live));
        }
    }
}

/// Adds the time `p` was parked, counted from `from` at the earliest (the
/// moment observation began), up to `until`. Timestamps from a corrupt
/// recording can be anything: the totals saturate rather than overflow.
fn add_parked(off_cpu: &mut OffCpu, p: &Parked, from: u64, until: u64) {
    let total = off_cpu.entry((p.stack, p.reason)).or_default();
    *total = total.saturating_add(until.saturating_sub(p.since_ns.max(from)));
}

#[cfg(test)]
mod tests;
