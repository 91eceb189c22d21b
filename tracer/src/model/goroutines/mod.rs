//! Goroutine lifecycle state machine, keyed by goid (never by g pointer: g
//! structs are recycled, goids are not).
//!
//! Probes can fire twice for one call (an entry uprobe re-fires when the
//! prologue re-enters after stack growth) and a ring buffer can drop events;
//! every transition here is idempotent and counts what it had to ignore, so
//! the model never goes negative and no goroutine exits twice.

use super::HashMap;

use tracer_common::{GoIdentity, NO_STACK, WAIT_CHANS};

use super::sites::{SiteKey, SiteStats};
use crate::decode::Event;

/// A user stack captured in the kernel: a stack-map id plus the return
/// address the frame-pointer walk misses at function entry.
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parked {
    /// Raw `waitReason` value (the target's numbering).
    pub reason: u8,
    /// Monotonic ns when it parked.
    pub since_ns: u64,
    pub stack: Option<StackRef>,
    /// Channels it waits on (receive, send or select cases); 0 = unused slot.
    pub chans: [u64; WAIT_CHANS],
    /// It parked before tracing began (read by the snapshot): `since_ns`
    /// is at most the park time (`g.waitsince`, or else the attach time),
    /// so how long it has been blocked is a lower bound.
    pub before_attach: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
}

#[derive(Clone, Debug)]
pub struct Goroutine {
    pub goid: u64,
    pub parent_goid: Option<u64>,
    pub gopc: u64,
    pub startpc: u64,
    pub origin: Origin,
    /// Monotonic ns of creation (None before attach).
    pub created_ns: Option<u64>,
    pub create_stack: Option<StackRef>,
    pub state: State,
    pub parks: u64,
}

impl Goroutine {
    fn new(g: &GoIdentity, origin: Origin, created_ns: Option<u64>, state: State) -> Self {
        Goroutine {
            goid: g.goid,
            parent_goid: (g.parent_goid != 0).then_some(g.parent_goid),
            gopc: g.gopc,
            startpc: g.startpc,
            origin,
            created_ns,
            create_stack: None,
            state,
            parks: 0,
        }
    }

    pub fn site(&self) -> SiteKey {
        SiteKey {
            startpc: self.startpc,
            gopc: self.gopc,
        }
    }
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
}

/// Parked time accumulated per (blocked stack, wait reason).
pub type OffCpu = HashMap<(Option<StackRef>, u8), u64>;

#[derive(Default)]
pub struct GoroutineModel {
    live: HashMap<u64, Goroutine>,
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
}

impl GoroutineModel {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn stats(&self) -> &ModelStats {
        &self.stats
    }

    pub fn live(&self) -> impl Iterator<Item = &Goroutine> {
        self.live.values()
    }

    pub fn live_count(&self) -> usize {
        self.live.len()
    }

    pub fn get(&self, goid: u64) -> Option<&Goroutine> {
        self.live.get(&goid)
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
        for g in self.live.values() {
            if let State::Parked(p) = g.state {
                add_parked(&mut total, &p, self.observed_from, end_ns);
            }
        }
        total
    }

    fn end_park(&mut self, p: Parked, now: u64) {
        add_parked(&mut self.off_cpu, &p, self.observed_from, now);
    }

    /// Adds the goroutines a snapshot read right after the probes were
    /// attached, before any event is applied. Events win afterwards: a
    /// creation event for one of them (it was created after attach, then
    /// read) makes it a traced creation, and parks, wakeups and exits
    /// update it like any goroutine.
    pub fn seed(&mut self, snap: &crate::snapshot::Snapshot) {
        self.observed_from = self.observed_from.max(snap.taken_ns);
        for s in &snap.goroutines {
            if s.goid == 0 || self.live.contains_key(&s.goid) {
                continue;
            }
            let state = match s.wait_reason {
                Some(reason) if s.state.is_parked() => State::Parked(Parked {
                    reason,
                    since_ns: s.blocked_since_ns.unwrap_or(snap.taken_ns),
                    stack: s.stack.map(|id| StackRef { id, caller_pc: 0 }),
                    chans: [0; WAIT_CHANS],
                    before_attach: true,
                }),
                _ => State::Runnable,
            };
            let ident = GoIdentity {
                goid: s.goid,
                parent_goid: s.parent_goid.unwrap_or(0),
                gopc: s.gopc,
                startpc: s.startpc,
            };
            let gr = Goroutine::new(&ident, Origin::Snapshot, None, state);
            self.stats.seen_before_attach += 1;
            self.stats.from_snapshot += 1;
            self.sites.entry(gr.site()).or_default().live += 1;
            self.live.insert(s.goid, gr);
        }
    }

    pub fn apply(&mut self, event: &Event) {
        self.last_ns = self.last_ns.max(event.header().ts_ns);
        match event {
            Event::Create(e) => {
                self.on_create(e.header.ts_ns, &e.g, StackRef::new(e.stack_id, e.caller_pc))
            }
            Event::Park(e) => self.on_park(
                e.header.ts_ns,
                &e.g,
                Parked {
                    reason: e.reason as u8,
                    since_ns: e.header.ts_ns,
                    stack: StackRef::new(e.stack_id, e.caller_pc),
                    chans: e.chans,
                    before_attach: false,
                },
            ),
            Event::Ready(e) => self.on_ready(e.goid),
            Event::Exit(e) => self.on_exit(e.goid),
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
        match self.live.get(&g.goid).map(|gr| (gr.origin, gr.site())) {
            None => {}
            Some((Origin::Snapshot, site)) => {
                // Created after attach, then read by the snapshot: the
                // events tell its story from the start.
                self.stats.seen_before_attach -= 1;
                self.stats.from_snapshot -= 1;
                let site = self.sites.entry(site).or_default();
                site.live = site.live.saturating_sub(1);
                self.live.remove(&g.goid);
            }
            Some(_) => {
                self.stats.duplicates += 1;
                return;
            }
        }
        self.stats.created += 1;
        let gr = Goroutine {
            create_stack: stack,
            ..Goroutine::new(g, Origin::Created, Some(ts), State::Runnable)
        };
        let site = self.sites.entry(gr.site()).or_default();
        site.created += 1;
        *self.creations.entry((stack, g.startpc)).or_default() += 1;
        site.live += 1;
        self.live.insert(g.goid, gr);
    }

    fn on_park(&mut self, _ts: u64, g: &GoIdentity, parked: Parked) {
        if g.goid == 0 {
            self.stats.inconsistent += 1;
            return;
        }
        let (reason, stack) = (parked.reason, parked.stack);
        match self.live.get_mut(&g.goid) {
            Some(gr) => {
                if let State::Parked(p) = gr.state
                    && p.reason == reason
                    && p.stack == stack
                {
                    // Entry probe fired again for the same park.
                    self.stats.duplicates += 1;
                    return;
                }
                self.stats.parks += 1;
                gr.parks += 1;
                // A wakeup we did not see (netpoll): the earlier park ended
                // by the time of this one at the latest.
                if let State::Parked(prev) = gr.state {
                    add_parked(
                        &mut self.off_cpu,
                        &prev,
                        self.observed_from,
                        parked.since_ns,
                    );
                }
                gr.state = State::Parked(parked);
            }
            None => {
                self.stats.parks += 1;
                self.stats.seen_before_attach += 1;
                let gr = Goroutine {
                    parks: 1,
                    ..Goroutine::new(g, Origin::BeforeAttach, None, State::Parked(parked))
                };
                self.sites.entry(gr.site()).or_default().live += 1;
                self.live.insert(g.goid, gr);
            }
        }
    }

    fn on_ready(&mut self, goid: u64) {
        let now = self.last_ns;
        match self.live.get_mut(&goid) {
            Some(gr) if matches!(gr.state, State::Parked(_)) => {
                self.stats.readies += 1;
                let State::Parked(p) = std::mem::replace(&mut gr.state, State::Runnable) else {
                    unreachable!()
                };
                self.end_park(p, now);
            }
            Some(_) => self.stats.duplicates += 1,
            // Parked before attach and never seen: nothing to update.
            None => self.stats.readies += 1,
        }
    }

    fn on_exit(&mut self, goid: u64) {
        match self.live.remove(&goid) {
            Some(gr) => {
                if let State::Parked(p) = gr.state {
                    let now = self.last_ns;
                    self.end_park(p, now);
                }
                self.stats.exited += 1;
                if let Some(site) = self.sites.get_mut(&gr.site()) {
                    site.live = site.live.saturating_sub(1);
                    if gr.origin == Origin::Created {
                        site.exited += 1;
                    }
                }
            }
            None => self.stats.unseen_exits += 1,
        }
    }

    /// Records each site's live count at `t_s` seconds since trace start.
    pub fn sample_sites(&mut self, t_s: f64) {
        for site in self.sites.values_mut() {
            site.samples.push((t_s, site.live));
        }
    }
}

/// Adds the time of park `p` up to `until` to its (stack, reason) total.
/// Timestamps from a corrupt recording can be anything: the totals
/// saturate rather than overflow.
/// Adds the time `p` was parked, counted from `from` at the earliest (the
/// moment observation began), up to `until`; totals saturate.
fn add_parked(off_cpu: &mut OffCpu, p: &Parked, from: u64, until: u64) {
    let total = off_cpu.entry((p.stack, p.reason)).or_default();
    *total = total.saturating_add(until.saturating_sub(p.since_ns.max(from)));
}

#[cfg(test)]
mod tests;
