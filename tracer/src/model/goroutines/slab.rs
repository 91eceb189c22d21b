//! The live goroutines: compact slots in a slab (a `Vec` whose exited
//! slots are reused through a free list) found by goid through a
//! `goid → slot` index. Values that repeat across goroutines (stacks,
//! creation sites) are interned in [`Tables`] and the slot holds their
//! `u32` index. [`GoroutineRef`] reads a slot back as the logical values
//! (`Option`s, [`State`], [`StackRef`]s).

use tracer_common::GoIdentity;

use tracer_common::WAIT_CHANS;

use super::tables::{INLINE_CHANS, Interner, MoreChans, NONE};
use super::{Origin, Parked, StackRef, State, WaitChans};
use crate::model::{HashMap, SiteKey};

/// The side tables the slots index into.
#[derive(Debug, Default)]
pub struct Tables {
    pub stacks: Interner<StackRef>,
    pub sites: Interner<SiteKey>,
    pub more_chans: MoreChans,
}

impl Tables {
    /// The slot index of an optional stack: [`NONE`] for none (and, beyond
    /// `u32::MAX` distinct stacks, which cannot fit in memory, for any new
    /// one).
    pub fn stack_index(&mut self, s: Option<StackRef>) -> u32 {
        s.and_then(|s| self.stacks.intern(s)).unwrap_or(NONE)
    }
}

// `Goroutine::flags`: the origin in the low two bits, then the park bits.
const ORIGIN_MASK: u8 = 0b11;
const ORIGIN_CREATED: u8 = 0;
const ORIGIN_BEFORE_ATTACH: u8 = 1;
const ORIGIN_SNAPSHOT: u8 = 2;
const ORIGIN_SAMPLED: u8 = 3;
/// State::Parked (else Runnable).
const PARKED: u8 = 1 << 2;
/// Parked::before_attach.
const PARK_BEFORE_ATTACH: u8 = 1 << 3;
/// Parked::sampled.
const PARK_SAMPLED: u8 = 1 << 4;

/// One live goroutine as stored (72 bytes; see the `slot_size` test).
/// Impossible values stand for "none" instead of `Option`s:
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Goroutine {
    /// 0 marks a free slot: goid 0 is never stored (the model rejects it;
    /// Go numbers goroutines from 1).
    goid: u64,
    /// 0 = unknown: the probes and the snapshot report 0 when the runtime
    /// has no parent goid, and no goroutine has goid 0.
    parent_goid: u64,
    /// Creation time, meaningful only for [`Origin::Created`] and (a lower
    /// bound of the age) [`Origin::Sampled`]; 0 otherwise.
    created_ns: u64,
    /// Park time, meaningful only while parked.
    since_ns: u64,
    /// The first waited channels while parked (0 = unused, as in the event).
    chans: [u64; INLINE_CHANS],
    /// Index into [`Tables::sites`] (always a valid one).
    site: u32,
    /// Index into [`Tables::stacks`], or [`NONE`].
    create_stack: u32,
    /// Blocked stack while parked: index into [`Tables::stacks`], or [`NONE`].
    park_stack: u32,
    /// The rest of the waited channels while parked: index into
    /// [`Tables::more_chans`], or [`NONE`] when they are all 0.
    more_chans: u32,
    /// Parks seen (saturates at `u32::MAX`).
    parks: u32,
    /// Raw `waitReason` while parked.
    reason: u8,
    /// Origin and park bits (`ORIGIN_*`, `PARKED`, `PARK_*`).
    flags: u8,
}

impl Goroutine {
    const FREE: Goroutine = Goroutine {
        goid: 0,
        parent_goid: 0,
        created_ns: 0,
        since_ns: 0,
        chans: [0; INLINE_CHANS],
        site: NONE,
        create_stack: NONE,
        park_stack: NONE,
        more_chans: NONE,
        parks: 0,
        reason: 0,
        flags: 0,
    };

    /// A runnable goroutine with no parks. `created_ns` only counts for
    /// [`Origin::Created`] and [`Origin::Sampled`]; `site` and
    /// `create_stack` are table indices.
    pub fn new(
        g: &GoIdentity,
        site: u32,
        origin: Origin,
        created_ns: u64,
        create_stack: u32,
    ) -> Self {
        let origin = match origin {
            Origin::Created => ORIGIN_CREATED,
            Origin::BeforeAttach => ORIGIN_BEFORE_ATTACH,
            Origin::Snapshot => ORIGIN_SNAPSHOT,
            Origin::Sampled => ORIGIN_SAMPLED,
        };
        Goroutine {
            goid: g.goid,
            parent_goid: g.parent_goid,
            created_ns: if matches!(origin, ORIGIN_CREATED | ORIGIN_SAMPLED) {
                created_ns
            } else {
                0
            },
            site,
            create_stack,
            flags: origin,
            ..Self::FREE
        }
    }

    pub fn goid(&self) -> u64 {
        self.goid
    }

    pub fn origin(&self) -> Origin {
        match self.flags & ORIGIN_MASK {
            ORIGIN_CREATED => Origin::Created,
            ORIGIN_BEFORE_ATTACH => Origin::BeforeAttach,
            ORIGIN_SNAPSHOT => Origin::Snapshot,
            _ => Origin::Sampled,
        }
    }

    /// Index into [`Tables::sites`].
    pub fn site_index(&self) -> u32 {
        self.site
    }

    pub fn is_parked(&self) -> bool {
        self.flags & PARKED != 0
    }

    pub fn parks(&self) -> u64 {
        u64::from(self.parks)
    }

    pub fn count_park(&mut self) {
        self.parks = self.parks.saturating_add(1);
    }

    /// The park it is in, if parked.
    pub fn parked(&self, t: &Tables) -> Option<Parked> {
        if !self.is_parked() {
            return None;
        }
        let more = t.more_chans.get(self.more_chans);
        let (front, rest) = more.split_at(more.len().min(WAIT_CHANS - INLINE_CHANS));
        let mut first = [0; WAIT_CHANS];
        first[..INLINE_CHANS].copy_from_slice(&self.chans);
        first[INLINE_CHANS..INLINE_CHANS + front.len()].copy_from_slice(front);
        let chans = WaitChans {
            first,
            more: rest.to_vec(),
        };
        Some(Parked {
            reason: self.reason,
            since_ns: self.since_ns,
            stack: t.stacks.get(self.park_stack),
            chans,
            before_attach: self.flags & PARK_BEFORE_ATTACH != 0,
            sampled: self.flags & PARK_SAMPLED != 0,
        })
    }

    /// Sets the channels of the current park past its first `WAIT_CHANS`
    /// (a `GoParkChans` event); nothing if it is not parked.
    pub fn set_more_chans(&mut self, more: &[u64], t: &mut Tables) {
        if self.is_parked() {
            t.more_chans
                .set_from(&mut self.more_chans, WAIT_CHANS - INLINE_CHANS, more);
        }
    }

    pub fn state(&self, t: &Tables) -> State {
        self.parked(t).map_or(State::Runnable, State::Parked)
    }

    /// Enters `state`, freeing what the previous park held in the tables.
    pub fn set_state(&mut self, state: State, t: &mut Tables) {
        t.more_chans.release(&mut self.more_chans);
        self.flags &= ORIGIN_MASK;
        (self.reason, self.since_ns, self.park_stack) = (0, 0, NONE);
        self.chans = [0; INLINE_CHANS];
        if let State::Parked(p) = state {
            self.flags |= PARKED;
            if p.before_attach {
                self.flags |= PARK_BEFORE_ATTACH;
            }
            if p.sampled {
                self.flags |= PARK_SAMPLED;
            }
            (self.reason, self.since_ns) = (p.reason, p.since_ns);
            self.park_stack = t.stack_index(p.stack);
            self.chans.copy_from_slice(&p.chans.first[..INLINE_CHANS]);
            self.more_chans = t.more_chans.store(&p.chans.first[INLINE_CHANS..]);
            if !p.chans.more.is_empty() {
                t.more_chans.set_from(
                    &mut self.more_chans,
                    WAIT_CHANS - INLINE_CHANS,
                    &p.chans.more,
                );
            }
        }
    }
}

/// A live goroutine read through the tables: the logical values.
#[derive(Clone, Copy, Debug)]
pub struct GoroutineRef<'a> {
    slot: &'a Goroutine,
    tables: &'a Tables,
}

impl<'a> GoroutineRef<'a> {
    pub fn new(slot: &'a Goroutine, tables: &'a Tables) -> Self {
        Self { slot, tables }
    }

    pub fn goid(&self) -> u64 {
        self.slot.goid
    }

    pub fn parent_goid(&self) -> Option<u64> {
        (self.slot.parent_goid != 0).then_some(self.slot.parent_goid)
    }

    /// Its start function and `go` statement.
    pub fn site(&self) -> SiteKey {
        self.tables.sites.get(self.slot.site).unwrap_or(SiteKey {
            startpc: 0,
            gopc: 0,
        })
    }

    pub fn startpc(&self) -> u64 {
        self.site().startpc
    }

    pub fn gopc(&self) -> u64 {
        self.site().gopc
    }

    pub fn origin(&self) -> Origin {
        self.slot.origin()
    }

    /// Monotonic ns of creation (None before attach); for
    /// [`Origin::Sampled`], the sample that first saw it (so the age is a
    /// lower bound).
    pub fn created_ns(&self) -> Option<u64> {
        matches!(self.origin(), Origin::Created | Origin::Sampled).then_some(self.slot.created_ns)
    }

    pub fn create_stack(&self) -> Option<StackRef> {
        self.tables.stacks.get(self.slot.create_stack)
    }

    pub fn state(&self) -> State {
        self.slot.state(self.tables)
    }

    pub fn parks(&self) -> u64 {
        self.slot.parks()
    }
}

/// Slots, their free list and the goid index.
#[derive(Debug, Default)]
pub struct Slab {
    slots: Vec<Goroutine>,
    /// Free slots, the last freed reused first.
    free: Vec<u32>,
    /// goid → slot.
    index: HashMap<u64, u32>,
}

impl Slab {
    /// Live goroutines.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Slots allocated (live and free).
    #[cfg(test)]
    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    pub fn contains(&self, goid: u64) -> bool {
        self.index.contains_key(&goid)
    }

    pub fn get(&self, goid: u64) -> Option<&Goroutine> {
        let i = *self.index.get(&goid)?;
        self.slots.get(i as usize)
    }

    pub fn get_mut(&mut self, goid: u64) -> Option<&mut Goroutine> {
        let i = *self.index.get(&goid)?;
        self.slots.get_mut(i as usize)
    }

    /// Live goroutines in slot order.
    pub fn iter(&self) -> impl Iterator<Item = &Goroutine> {
        self.slots.iter().filter(|g| g.goid != 0)
    }

    /// Stores `g` in a free slot, or a new one. Refused (false, and what `g`
    /// held in the tables freed) for goid 0, a goid already stored, or
    /// beyond `u32::MAX` slots (which cannot fit in memory).
    pub fn insert(&mut self, mut g: Goroutine, t: &mut Tables) -> bool {
        if g.goid == 0 || self.index.contains_key(&g.goid) {
            t.more_chans.release(&mut g.more_chans);
            return false;
        }
        let i = match self.free.pop() {
            Some(i) => i,
            None => match u32::try_from(self.slots.len()) {
                Ok(i) if i != NONE => {
                    self.slots.push(Goroutine::FREE);
                    i
                }
                _ => {
                    t.more_chans.release(&mut g.more_chans);
                    return false;
                }
            },
        };
        self.index.insert(g.goid, i);
        self.slots[i as usize] = g;
        true
    }

    /// Takes goroutine `goid` out, freeing its slot and its entries in the
    /// tables: the slot returned is no longer parked on more than its
    /// inline channels, but keeps its park (reason, time, stack) and site.
    pub fn remove(&mut self, goid: u64, t: &mut Tables) -> Option<Goroutine> {
        let i = self.index.remove(&goid)?;
        let slot = self.slots.get_mut(i as usize)?;
        let mut g = std::mem::replace(slot, Goroutine::FREE);
        t.more_chans.release(&mut g.more_chans);
        self.free.push(i);
        Some(g)
    }
}
