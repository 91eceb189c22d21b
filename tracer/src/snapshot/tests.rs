//! Snapshots of a real Go program (`tracer/testdata/probe -wait`: main
//! blocked in a channel receive, `receiveForever` in a select) built by
//! every supported Go, normal, stripped and PIE.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::*;
use crate::gobin::testutil::{BuildOpts, build_testdata, probe};
use crate::goruntime::gstatus::GState;
use crate::model::StackRef;
use crate::model::existing::is_snapshot_stack;
use crate::resolve::StackResolver;

const ALL_VERSIONS: [&str; 6] = ["1.19", "1.21", "1.23", "1.25", "1.26", "1.27"];

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What the test looks at in one goroutine, symbolised.
#[derive(Debug)]
struct Seen {
    state: GState,
    reason: Option<String>,
    start: String,
    created_by: Option<String>,
    stack: Vec<String>,
}

fn seen(path: &std::path::Path) -> (Snapshot, HashMap<u64, Seen>) {
    let bin = GoBinary::open(path).unwrap();
    let layout = bin.layout().unwrap();
    let child = Killed(
        Command::new(path)
            .arg("-wait")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = child.0.id();
    let symbolizer = bin.symbolizer().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let bias = if bin.is_pie() {
            match crate::process::load_bias(pid, path) {
                Some(b) => b,
                None => continue,
            }
        } else {
            0
        };
        let snap = match take(pid, &bin, &layout, bias) {
            Ok(s) => s,
            Err(e) if Instant::now() < deadline => {
                eprintln!("retrying: {e}");
                continue;
            }
            Err(e) => panic!("{}: {e}", path.display()),
        };
        let raw = snap.stacks.iter().map(|(k, v)| (*k, v.clone())).collect();
        let mut r = StackResolver::new(&bin, &symbolizer, raw, bias);
        let by_goid: HashMap<u64, Seen> = snap
            .goroutines
            .iter()
            .map(|g| {
                let s = Seen {
                    state: g.state,
                    reason: g
                        .wait_reason
                        .and_then(|w| layout.wait_reasons.get(&w).cloned()),
                    start: r.start_function(g.startpc),
                    created_by: r.pc(g.gopc, true).map(|f| f.function),
                    stack: g
                        .stack
                        .map(|id| r.frames(StackRef { id, caller_pc: 0 }))
                        .unwrap_or_default()
                        .into_iter()
                        .map(|f| f.function)
                        .collect(),
                };
                (g.goid, s)
            })
            .collect();
        let ready = by_goid.get(&1).is_some_and(|m| m.state == GState::Waiting)
            && by_goid
                .values()
                .any(|g| g.start == "main.receiveForever" && g.state == GState::Waiting)
            && by_goid
                .values()
                .any(|g| g.start == "main.blockInSyscall" && g.state == GState::Syscall);
        if ready || Instant::now() >= deadline {
            return (snap, by_goid);
        }
    }
}

fn check(what: &str, path: &std::path::Path) {
    let (snap, gs) = seen(path);
    let main = &gs[&1];
    assert_eq!(main.state, GState::Waiting, "{what}: {main:?}");
    assert_eq!(
        main.reason.as_deref(),
        Some("waitReasonChanReceive"),
        "{what}"
    );
    assert_eq!(main.start, "runtime.main", "{what}");
    assert_eq!(
        main.stack.first().map(String::as_str),
        Some("runtime.gopark")
    );
    assert!(
        main.stack.contains(&"main.main".to_string()),
        "{what}: {main:?}"
    );
    assert_eq!(
        main.stack.last().map(String::as_str),
        Some("runtime.goexit")
    );
    let recv: Vec<_> = gs
        .values()
        .filter(|g| g.start == "main.receiveForever")
        .collect();
    assert_eq!(recv.len(), 1, "{what}: {gs:#?}");
    let recv = recv[0];
    assert_eq!(recv.reason.as_deref(), Some("waitReasonSelect"), "{what}");
    assert_eq!(recv.created_by.as_deref(), Some("main.main"), "{what}");
    assert!(
        recv.stack.iter().any(|f| f == "runtime.selectgo"),
        "{what}: {recv:?}"
    );
    assert!(recv.stack.contains(&"main.receiveForever".to_string()));
    // In a system call: its stack from syscallpc/sp (and syscallbp, or
    // before Go 1.23 the frame pointer entersyscall saved).
    let sys: Vec<_> = gs
        .values()
        .filter(|g| g.start == "main.blockInSyscall")
        .collect();
    assert_eq!(sys.len(), 1, "{what}");
    assert_eq!(sys[0].state, GState::Syscall, "{what}: {:?}", sys[0]);
    assert!(
        sys[0].stack.iter().any(|f| f == "syscall.Read")
            && sys[0].stack.contains(&"main.blockInSyscall".to_string()),
        "{what}: {:?}",
        sys[0]
    );
    let s = &snap.stats;
    assert_eq!((s.skipped, s.stacks_truncated), (0, 0), "{what}: {s:?}");
    assert_eq!(s.live, gs.len() as u64);
    assert!(s.allgs >= s.live + s.free, "{what}: {s:?}");
    // Every stack has an id of the snapshot's own range.
    assert!(snap.stacks.keys().all(|id| is_snapshot_stack(*id)));
}

#[test]
fn every_version() {
    for minor in ALL_VERSIONS {
        check(&format!("go{minor}"), &probe(minor));
    }
}

#[test]
fn stripped_and_pie() {
    for minor in ["1.21", "1.26"] {
        let strip = BuildOpts {
            args: &["-ldflags=-s -w"],
            env: &[],
        };
        let path = build_testdata("probe", minor, strip).unwrap();
        check(&format!("go{minor} stripped"), &path);
    }
    for minor in ["1.19", "1.27"] {
        let pie = BuildOpts {
            args: &["-buildmode=pie"],
            env: &[],
        };
        let path = build_testdata("probe", minor, pie).unwrap();
        check(&format!("go{minor} pie"), &path);
    }
}

#[test]
fn errors_are_clear() {
    let path = probe("1.26");
    let bin = GoBinary::open(&path).unwrap();
    let layout = bin.layout().unwrap();
    let err = take(u32::MAX, &bin, &layout, 0).unwrap_err();
    assert_eq!(err.to_string(), format!("no process with PID {}", u32::MAX));
    let mut no_allg = layout.clone();
    no_allg.allg = None;
    let err = take(std::process::id(), &bin, &no_allg, 0).unwrap_err();
    assert!(err.to_string().contains("runtime.allgs not found"), "{err}");
    // Our own process is not a Go program: its "allgs" is garbage.
    let err = take(std::process::id(), &bin, &layout, 0).unwrap_err();
    assert!(err.to_string().contains("does not look right"), "{err}");
}
