//! `reach` and `held` on a made-up heap (`image`): cancel functions found
//! reachable or not, the timer callback that is no cancel function,
//! contexts held by roots, by a leaked goroutine's stack only, or gone;
//! tickers held by live code, by a leaked goroutine only, or by nothing.

use std::collections::HashSet;

use super::KeptBy;
use super::held::{self, Asked, CtxQuery, Identity, Queries, TickerQuery};
use super::image::{CHAN_RECEIVE, DATA, Image, SLEEP, gp, obj, run_keeping};
use super::mark::Root;
use super::reach::Holder;

const FN_CANCEL: u64 = 0x40_1000;
const FN_TIMER: u64 = 0x40_2000;
const PARENT_ITAB: u64 = 0x55_0000;
const VALUE_ITAB: u64 = 0x56_0000;

fn fname(pc: u64) -> Option<String> {
    match pc {
        FN_CANCEL => Some("context.WithCancel.func1".into()),
        FN_TIMER => Some("context.WithDeadlineCause.func2".into()),
        _ => None,
    }
}

fn name(root: Option<&Root>) -> KeptBy {
    let (kind, goid, name) = match root {
        Some(Root::Global { addr }) => ("global", None, Some(format!("{addr:#x}"))),
        Some(Root::Goroutine { goid, .. }) => ("goroutine", Some(*goid), None),
        Some(_) => ("runtime", None, None),
        None => ("not_heap", None, None),
    };
    KeptBy {
        kind: kind.into(),
        name,
        goid,
        function: None,
    }
}

/// A context at `at` whose parent interface is (PARENT_ITAB, `parent`).
fn context(im: &mut Image, at: u64, parent: u64) -> CtxQuery {
    im.set(at, PARENT_ITAB);
    im.set(at + 8, parent);
    CtxQuery {
        ptr: at,
        parent: (PARENT_ITAB, parent),
        ..CtxQuery::default()
    }
}

fn closure(im: &mut Image, at: u64, f: u64, captured: u64) {
    im.set(at, f);
    im.set(at + 8, captured);
}

#[test]
fn what_holds_contexts_and_tickers() {
    let mut im = Image::new();
    // A: its cancel func (obj 41) is kept by a global.
    let a = context(&mut im, obj(40), 0xa);
    closure(&mut im, obj(41), FN_CANCEL, obj(40));
    im.set(DATA, obj(41));
    // B: a global keeps the context, its cancel func (obj 43) is garbage.
    let b = context(&mut im, obj(42), 0xb);
    closure(&mut im, obj(43), FN_CANCEL, obj(42));
    im.set(DATA + 8, obj(42));
    // C: only goroutine 30, leaked on a channel only it holds, keeps it.
    let c = context(&mut im, obj(44), 0xc);
    im.sudog(obj(46), gp(30), obj(45), 0);
    im.goroutine(30, CHAN_RECEIVE, obj(46), &[obj(44), obj(45), obj(50)]);
    // D: another object lives at its address now.
    let mut d = context(&mut im, obj(47), 0xd);
    d.parent.1 = 0xdd;
    // E: only its deadline's timer callback is reachable.
    let e = context(&mut im, obj(48), 0xe);
    closure(&mut im, obj(49), FN_TIMER, obj(48));
    im.set(DATA + 16, obj(49));
    // F: its cancel func did not escape: in sleeping goroutine 31's frame.
    let f = context(&mut im, obj(56), 0xf);
    im.goroutine(31, SLEEP, 0, &[7, FN_CANCEL, obj(56)]);
    // G: made from a WithValue layer (obj 58) over its cancelable parent.
    im.set(obj(57), VALUE_ITAB);
    im.set(obj(57) + 8, obj(58));
    im.set(obj(58), PARENT_ITAB);
    im.set(obj(58) + 8, 0x9);
    let g = CtxQuery {
        ptr: obj(57),
        parent: (PARENT_ITAB, 0x9),
        value_hops: 1,
        ..CtxQuery::default()
    };
    // Tickers (word 0: the channel): T1 held by the leaked goroutine 30
    // only, T2 by a global, T3 by nothing.
    for (t, ch) in [(50, 51), (52, 53), (54, 55)] {
        im.set(obj(t), obj(ch));
    }
    im.set(DATA + 24, obj(52));
    let tickers = [50, 52, 54].map(|t| TickerQuery {
        ptr: obj(t),
        chan: obj(t + 1),
        creator: 0,
    });
    let pass = run_keeping(&im).expect("a pass");
    let q = Queries {
        contexts: vec![a, b, c, d, e, f, g],
        tickers: tickers.to_vec(),
        itab_value_ctx: VALUE_ITAB,
        cancel_ctx_done: None,
        timers_collected: false,
        at_exit: false,
    };
    let leaked: HashSet<u64> = [30].into();
    let mut name = name;
    let h = held::one(&mut Asked {
        reach: pass.reach.as_ref().expect("marks kept"),
        mem: &im.mem,
        q: &q,
        leaked: &leaked,
        unproven: &HashSet::new(),
        fname: &fname,
        name: &mut name,
    });
    let ctx = |i: u64| h.context(obj(i)).expect("answered");
    let cf = ctx(40).cancel_fn.as_ref().expect("A's cancel func");
    assert_eq!(
        (cf.addr, cf.function.as_str()),
        (obj(41), "context.WithCancel.func1")
    );
    assert_eq!(cf.kept_by.kind, "global");
    assert_eq!(ctx(42).cancel_fn, None, "B's cancel func is garbage");
    assert_eq!(
        ctx(42).reached_by.as_ref().map(|k| k.kind.as_str()),
        Some("global")
    );
    assert_eq!(ctx(44).cancel_fn, None);
    assert_eq!(ctx(44).reached_by, None, "a leaked goroutine is no root");
    assert_eq!(ctx(44).stacks, [30]);
    assert_eq!(ctx(47).identity, Identity::Gone);
    assert_eq!(ctx(40).identity, Identity::Same);
    assert_eq!(
        ctx(48).cancel_fn,
        None,
        "the timer callback cancels only at the deadline"
    );
    assert_eq!(
        ctx(57).identity,
        Identity::Same,
        "through its WithValue layer"
    );
    let sf = ctx(56)
        .cancel_fn
        .as_ref()
        .expect("F's cancel func on a stack");
    assert_eq!(sf.kept_by.goid, Some(31));
    let t = |i: u64| h.ticker(obj(i)).expect("answered");
    assert_eq!(t(50).leaked_holders, [30]);
    assert!(t(50).held_by.is_empty(), "{:?}", t(50));
    assert_eq!(t(52).held_by.len(), 1);
    assert!(t(52).runtime_holds);
    assert!(t(54).held_by.is_empty() && t(54).leaked_holders.is_empty());
    assert!(!t(54).runtime_holds);
    assert_eq!(t(54).identity, Identity::Same);
}

#[test]
fn objects_and_holders() {
    let mut im = Image::new();
    im.set(DATA, obj(3));
    im.set(obj(3) + 16, obj(5) + 8);
    im.goroutine(20, SLEEP, 0, &[obj(5) + 40]);
    let pass = run_keeping(&im).expect("a pass");
    let r = pass.reach.as_ref().expect("marks kept");
    let o = r.object(obj(5) + 9).expect("in the heap");
    assert_eq!((o.base, o.size, o.marked), (obj(5), 64, true));
    assert!(!r.object(obj(7)).expect("in the heap").marked);
    assert_eq!(r.object(0x1234), None);
    let hs = r.holders(&im.mem, &[(obj(5), 64), (obj(3), 64)]);
    assert_eq!(hs.errors, 0);
    let of5 = hs.of(obj(5));
    assert!(of5.contains(&Holder::Stack {
        goid: 20,
        at: super::image::STACKS + 20 * super::image::STACK_SIZE + super::image::STACK_SIZE - 64,
    }));
    assert!(
        of5.iter()
            .any(|h| matches!(h, Holder::Heap { base, marked: true, .. } if *base == obj(3)))
    );
    assert_eq!(hs.of(obj(3)), [Holder::Global { at: DATA }]);
}
