//! Memory per live goroutine, as `cargo xtask bench` measures it on a live
//! trace (1 M goroutines created, each parked on a channel receive; set
//! `GOTRACE_MEM_GOROUTINES` for another count), fed
//! straight into the model. Ignored by default (it takes a few seconds and
//! allocates a few hundred MB); run them one at a time (the allocator's
//! statistics are the whole process's):
//!
//! ```text
//! cargo test -p tracer --lib -- --ignored --nocapture --test-threads=1 bytes_per_
//! ```
//!
//! Prints the bytes glibc malloc has handed out (`mallinfo2`: arena plus
//! mmapped chunks) and the process's `RssAnon` growth, per goroutine, for
//! the whole model (goroutines, contexts, timers, timeline).

use tracer_common::{CtxCreateEvent, EventHeader, GoCreateEvent, GoIdentity, GoParkEvent};

use super::Model;
use crate::decode::Event;

/// How many goroutines: `GOTRACE_MEM_GOROUTINES`, else 1 M (the full
/// bench; its quick run uses 100 k).
fn goroutines() -> u64 {
    std::env::var("GOTRACE_MEM_GOROUTINES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000)
}

fn malloc_in_use() -> u64 {
    // SAFETY: glibc's statistics call, no arguments, no shared state.
    let m = unsafe { libc::mallinfo2() };
    (m.uordblks + m.hblkhd) as u64
}

fn rss_anon_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("RssAnon:"))?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(0)
        * 1024
}

/// The `bench park N` target: `go parkForever(ch)` from main, N times; each
/// blocks in `<-ch` (one channel, one blocked stack).
fn feed(m: &mut Model, n: u64) {
    const CH: u64 = 0xc000_0200;
    for i in 0..n {
        let goid = 100 + i;
        let g = GoIdentity {
            goid,
            parent_goid: 1,
            gopc: 0x49_1234,
            startpc: 0x49_2000,
        };
        let ts = 1_000_000 + 2 * i * 1_000;
        m.apply(&Event::Create(GoCreateEvent {
            header: EventHeader {
                ts_ns: ts,
                ..Default::default()
            },
            g,
            stack_id: 3,
            caller_pc: 0x49_1230,
            ..Default::default()
        }));
        m.apply(&Event::Park(GoParkEvent {
            header: EventHeader {
                ts_ns: ts + 1_000,
                ..Default::default()
            },
            g,
            stack_id: 5,
            reason: 7,
            caller_pc: 0x40_5678,
            chans: [CH, 0, 0, 0],
        }));
    }
}

/// Bytes per goroutine taken by `feed` after `prepare`.
fn measure(what: &str, prepare: impl FnOnce(&mut Model)) {
    // SAFETY: glibc call, returns freed memory to the OS.
    unsafe { libc::malloc_trim(0) };
    let (heap0, rss0) = (malloc_in_use(), rss_anon_bytes());
    let mut m = Model::default();
    prepare(&mut m);
    let n = goroutines();
    feed(&mut m, n);
    // SAFETY: as above.
    unsafe { libc::malloc_trim(0) };
    let (heap1, rss1) = (malloc_in_use(), rss_anon_bytes());
    assert_eq!(m.goroutines.live_count() as u64, n);
    let per = |a: u64, b: u64| b.saturating_sub(a) as f64 / n as f64;
    println!(
        "{n} parked goroutines{what}: malloc {:.1} B/goroutine, RssAnon {:.1} B/goroutine \
         (Goroutine {} B, timeline {} B counted)",
        per(heap0, heap1),
        per(rss0, rss1),
        size_of::<super::Goroutine>(),
        m.timeline.bytes(),
    );
    drop(m);
}

#[test]
#[ignore = "measurement: run alone with --ignored --nocapture"]
fn bytes_per_parked_goroutine() {
    measure("", |_| {});
}

/// The same goroutines, started while their creator works under a live
/// context: the context model remembers which context each was started
/// under.
#[test]
#[ignore = "measurement: run alone with --ignored --nocapture"]
fn bytes_per_parked_goroutine_started_under_a_context() {
    measure(" started under a context", |m| {
        m.apply(&Event::CtxCreate(CtxCreateEvent {
            header: EventHeader {
                ts_ns: 1,
                ..Default::default()
            },
            goid: 1,
            ctx: 0xc000_1000,
            parent_data: 0x1,
            stack_id: 2,
            ..Default::default()
        }));
    });
}
