//! The analysis on made-up heaps ([`super::image`]): every kind of root,
//! the fixpoint, the hidden sudog words, and garbage in place of the heap.

use super::image::*;
use super::mark::Root;
use super::pass::Outcome;

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
    // Which goroutine's stack, and which word of it (the image's stacks
    // start at sp = hi - 64).
    let by = |goid: u64, word: u64| {
        let hi = STACKS + goid * STACK_SIZE + STACK_SIZE;
        Outcome::Wakeable(Some(Root::Goroutine {
            goid,
            slot: Some(hi - 64 + 8 * word),
            pc: None,
        }))
    };
    assert_eq!(outcome(&p, 10), global(DATA));
    assert_eq!(
        outcome(&p, 11),
        Outcome::Leaked,
        "its own sudog must not keep B"
    );
    assert_eq!(
        outcome(&p, 12),
        by(20, 0),
        "a sleeping goroutine's stack is a root"
    );
    assert_eq!(
        outcome(&p, 13),
        by(12, 0),
        "a wakeable goroutine's stack is a root (fixpoint)"
    );
    assert_eq!(outcome(&p, 14), Outcome::Leaked, "nil channel");
    assert_eq!(
        outcome(&p, 15),
        Outcome::Leaked,
        "semtable sudog's elem is hidden"
    );
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
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..300 {
        let data: Vec<u8> = (0..32).map(|_| next() as u8).collect();
        let _ = run(&patched(&data));
    }
}

/// Before Go 1.26 a Cond waiter's sudog is only in the Cond's notify list:
/// found through the Cond on the waiter's own stack.
#[test]
fn cond_waiters_are_located_through_their_stack() {
    let mut im = scenario();
    let hl = layout();
    let head = hl.notify_list_head.unwrap() + hl.cond_notify.unwrap();
    for (cond, sudog, goid) in [(obj(40), obj(41), 17), (obj(42), obj(43), 18)] {
        im.set(cond + head, sudog);
        im.sudog(sudog, gp(goid), 0, 0);
        im.goroutine(goid, COND_WAIT, 0, &[0x1234, cond]);
    }
    im.set(DATA + 32, obj(42));
    let p = run(&im).expect("a pass");
    assert_eq!(outcome(&p, 17), Outcome::Leaked);
    assert_eq!(
        outcome(&p, 18),
        Outcome::Wakeable(Some(Root::Global { addr: DATA + 32 }))
    );
    let c = p.seen.iter().find(|s| s.goid == 17).unwrap();
    assert_eq!(c.waits_on, vec![obj(40) + hl.cond_notify.unwrap()]);
}

/// A span that cannot be read whole (its last object is not mapped) is
/// read object by object: the same outcomes, and no read error when the
/// unmapped object is not reached.
#[test]
fn a_span_unreadable_whole_is_read_object_by_object() {
    let whole = run(&scenario()).expect("a pass");
    let mut im = scenario();
    let heap = im.mem.regions.get_mut(&HEAP).unwrap();
    heap.truncate(((NELEMS - 1) * ELEM) as usize);
    let p = run(&im).expect("a pass");
    for s in &whole.seen {
        assert_eq!(outcome(&p, s.goid), s.outcome, "goroutine {}", s.goid);
    }
    assert_eq!(p.incomplete, 0);
    assert_eq!(p.heap.read_errors, 0);
    assert_eq!(p.heap.span_reads, 0, "the span was read object by object");
    assert!(whole.heap.span_reads > 0);
}

/// Objects marked from inside their own span are scanned from the span's
/// copy read once: a chain through every object of the span marks them
/// all with one read of the span.
#[test]
fn a_chain_inside_a_span_is_scanned_from_one_read() {
    let mut im = Image::new();
    for i in 0..NELEMS - 1 {
        im.set(obj(i) + 8, obj(i + 1));
    }
    im.set(DATA, obj(0));
    let p = run(&im).expect("a pass");
    assert_eq!(p.heap.objects_marked, NELEMS);
    assert_eq!(p.heap.span_reads, 1);
    assert_eq!(p.heap.bytes_scanned, NELEMS * ELEM + 8 * GLOBALS);
}

#[test]
fn an_unstable_goroutines_stack_is_a_root() {
    // G11 waits on B; G12's status says it waits on C, but its g kept
    // changing while read (it may have been woken): what its stack holds
    // (B) is reachable, so G11 is not proven.
    let mut im = Image::new();
    let (b, c) = (obj(1), obj(2));
    im.sudog(obj(11), gp(11), b, 0);
    im.sudog(obj(12), gp(12), c, 0);
    im.goroutine(11, CHAN_RECEIVE, obj(11), &[]);
    im.goroutine(12, CHAN_RECEIVE, obj(12), &[b]);
    let stable = run(&im).expect("a pass");
    assert_eq!(outcome(&stable, 11), Outcome::Leaked);
    im.live[1].stable = false;
    let p = run(&im).expect("a pass");
    assert!(
        matches!(
            outcome(&p, 11),
            Outcome::Wakeable(Some(Root::Goroutine { goid: 12, .. }))
        ),
        "{:?}",
        outcome(&p, 11)
    );
    assert!(matches!(outcome(&p, 12), Outcome::Unproven(_)));
}

#[test]
fn the_slack_of_a_g_slot_is_not_an_edge() {
    // A global reaches a g (as allgs does) whose 64-byte slot holds B's
    // address past the g's 40 bytes: stale bytes Go never scans.
    let mut im = Image::new();
    let (b, g) = (obj(1), obj(40));
    im.sudog(obj(11), gp(11), b, 0);
    im.goroutine(11, CHAN_RECEIVE, obj(11), &[]);
    im.set(DATA, g);
    im.set(g + G_SIZE + 8, b);
    let p = run(&im).expect("a pass");
    assert!(matches!(outcome(&p, 11), Outcome::Wakeable(_)));
    im.gs.push(g);
    let p = run(&im).expect("a pass");
    assert_eq!(outcome(&p, 11), Outcome::Leaked);
    // Inside the g, the same word is an edge.
    im.set(g + 8, b);
    let p = run(&im).expect("a pass");
    assert!(matches!(outcome(&p, 11), Outcome::Wakeable(_)));
}
