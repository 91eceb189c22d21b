//! The analysis on made-up heaps ([`super::image`]): every kind of root,
//! the fixpoint, the hidden sudog words, and garbage in place of the heap.

use super::image::*;
use super::mark::Root;
use super::pass::Outcome;

fn gp(goid: u64) -> u64 {
    0x8000_0000 + goid * 0x100
}

/// Channels A..D, a "g" object reaching G11's sudog, two mutexes.
fn scenario() -> Image {
    let mut im = Image::new();
    let hl = layout();
    let (a, b, c, d, e) = (obj(0), obj(1), obj(2), obj(3), obj(4));
    im.set(e + 8, d);
    for (i, goid, ch) in [(10, 10, a), (11, 11, b), (12, 12, c), (13, 13, d)] {
        im.sudog(obj(i), gp(goid), ch, 0);
    }
    // A global reaches a "g" that reaches G11's sudog: its `c` is hidden.
    im.set(obj(20), obj(11));
    im.set(DATA, a);
    im.set(DATA + 8, obj(20));
    im.goroutine(10, CHAN_RECEIVE, obj(10), &[]);
    im.goroutine(11, CHAN_RECEIVE, obj(11), &[]);
    im.goroutine(12, CHAN_RECEIVE, obj(12), &[e]);
    im.goroutine(13, CHAN_RECEIVE, obj(13), &[]);
    im.goroutine(14, CHAN_RECEIVE_NIL, 0, &[]);
    im.goroutine(20, SLEEP, 0, &[c]);
    // Mutexes: G15's in an unreachable object, G16's in one a global holds.
    // Their sudogs are in the semaphore table, which a global reaches.
    im.sudog(obj(31), gp(15), 0, obj(30) + 8);
    im.sudog(obj(33), gp(16), 0, obj(32) + 8);
    im.set(obj(31) + hl.sudog_prev, obj(33));
    im.set(SEMTABLE + hl.sema_root_treap, obj(31));
    im.set(DATA + 16, obj(32));
    im.set(DATA + 24, obj(31));
    im.goroutine(15, MUTEX_LOCK, 0, &[]);
    im.goroutine(16, MUTEX_LOCK, 0, &[]);
    im
}

fn outcome(p: &super::pass::Pass, goid: u64) -> Outcome {
    p.seen
        .iter()
        .find(|s| s.goid == goid)
        .unwrap_or_else(|| panic!("goroutine {goid} not a candidate"))
        .outcome
        .clone()
}

#[test]
fn roots_fixpoint_and_hidden_words() {
    let p = run(&scenario()).expect("a pass");
    let global = |addr| Outcome::Wakeable(Some(Root::Global { addr }));
    let by = |goid| Outcome::Wakeable(Some(Root::Goroutine { goid }));
    assert_eq!(outcome(&p, 10), global(DATA));
    assert_eq!(outcome(&p, 11), Outcome::Leaked, "its own sudog must not keep B");
    assert_eq!(outcome(&p, 12), by(20), "a sleeping goroutine's stack is a root");
    assert_eq!(outcome(&p, 13), by(12), "a wakeable goroutine's stack is a root (fixpoint)");
    assert_eq!(outcome(&p, 14), Outcome::Leaked, "nil channel");
    assert_eq!(outcome(&p, 15), Outcome::Leaked, "semtable sudog's elem is hidden");
    assert_eq!(outcome(&p, 16), global(DATA + 16));
    assert_eq!(p.seen.len(), 7, "the sleeping goroutine is not a candidate");
    assert_eq!(p.incomplete, 0);
}

#[test]
fn a_freed_slot_is_not_an_edge() {
    let mut im = scenario();
    // Object 0 (channel A, the global's target) is free: G10 leaks.
    let bits = im.mem.regions.get_mut(&ALLOC_BITS).unwrap();
    bits[0] &= !1;
    let p = run(&im).expect("a pass");
    assert_eq!(outcome(&p, 10), Outcome::Leaked);
}

#[test]
fn a_noscan_span_is_not_scanned() {
    let mut im = scenario();
    let span = im.mem.regions.get_mut(&MSPAN).unwrap();
    span[layout().span_spanclass as usize] = 1;
    let p = run(&im).expect("a pass");
    // E (on G12's stack) no longer leads to D.
    assert_eq!(outcome(&p, 13), Outcome::Leaked);
}

/// Garbage anywhere in the runtime's structures: a result or an error,
/// never a panic or an endless loop.
#[test]
fn garbage_never_panics() {
    let base = scenario();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let keys: Vec<u64> = base.mem.regions.keys().copied().collect();
    for _ in 0..300 {
        let mut im = scenario();
        for _ in 0..8 {
            let k = keys[(next() % keys.len() as u64) as usize];
            let r = im.mem.regions.get_mut(&k).unwrap();
            let at = (next() % r.len() as u64) as usize;
            r[at] = next() as u8;
        }
        let _ = run(&im);
    }
}
