//! Stack maps of `tracer/testdata/stackmaps` built by several Go versions:
//! decoded maps checked against the compiler's own liveness report
//! (`-gcflags=-live`), and live stacks of the running program checked for
//! the pointers it printed (live ones found, dead ones not).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::gobin::GoBinary;
use crate::gobin::stackmaps::{Regs, StackMaps, StackWords};
use crate::gobin::testutil::{BuildOpts, build_testdata, find_go, testdata_dir};

const VERSIONS: [&str; 4] = ["1.19", "1.21", "1.26", "1.27"];
const STRIP: BuildOpts = BuildOpts {
    args: &["-ldflags=-s -w"],
    env: &[],
};
const PIE_STRIP: BuildOpts = BuildOpts {
    args: &["-buildmode=pie", "-ldflags=-s -w"],
    env: &[],
};

/// The compiler's `-live` report for testdata/stackmaps: (line, callee) →
/// the number of variables it says are live at that call.
fn compiler_liveness(minor: &str, env: &[(&str, &str)]) -> HashMap<(u32, String), usize> {
    let go = find_go(minor).unwrap_or_else(|| panic!("Go {minor} not installed"));
    let version = go
        .parent()
        .and_then(|p| p.parent())
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("go-"))
        .unwrap()
        .to_string();
    let mut cmd = Command::new(&go);
    let out = gotoolchains::go_env(&mut cmd, &version)
        .args(["build", "-gcflags=-live", "-o", "/dev/null", "."])
        .envs(env.iter().copied())
        .current_dir(testdata_dir().join("stackmaps"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stderr);
    let mut live = HashMap::new();
    for l in text.lines() {
        // ./main.go:34:2: live at call to chanrecv1: live
        let Some((pos, what)) = l.split_once(": live at call to ") else {
            continue;
        };
        let line: u32 = pos.split(':').nth(1).unwrap().parse().unwrap();
        let (callee, vars) = what.split_once(':').unwrap_or((what, ""));
        live.insert((line, callee.to_string()), vars.split_whitespace().count());
    }
    live
}

fn popcount(m: Option<crate::gobin::pclntab::StackMap<'_>>, index: i32) -> u32 {
    m.and_then(|m| m.bitmap(index))
        .map_or(0, |b| b.iter().map(|x| x.count_ones()).sum())
}

/// Pointer words the maps say are live at each call from `func` to
/// `runtime.chanrecv1`, by source line.
fn map_liveness(bin: &GoBinary, func: &str) -> Vec<(u32, u32)> {
    let tab = bin.pclntab().unwrap();
    let calls = bin.call_sites(func, "runtime.chanrecv1").unwrap();
    assert!(!calls.is_empty(), "{func}");
    calls
        .iter()
        .map(|&pc| {
            let f = tab.func_at(pc).unwrap();
            let line = tab.frames(pc).unwrap().last().unwrap().line;
            let i = tab.stack_map_index(&f, pc);
            assert!(i >= 0, "{func} at {pc:#x}: no stack map index");
            let n = popcount(tab.stack_map(&f, false), i) + popcount(tab.stack_map(&f, true), i);
            (line, n)
        })
        .collect()
}

#[test]
fn maps_agree_with_the_compiler() {
    const ARM64: BuildOpts = BuildOpts {
        args: &["-ldflags=-s -w"],
        env: &[("GOARCH", "arm64"), ("CGO_ENABLED", "0")],
    };
    for minor in VERSIONS {
        let want = compiler_liveness(minor, &[]);
        let want_arm64 = compiler_liveness(minor, ARM64.env);
        for opts in [BuildOpts::default(), STRIP, ARM64] {
            let want = if opts.env.is_empty() {
                &want
            } else {
                &want_arm64
            };
            let path = build_testdata("stackmaps", minor, opts).unwrap();
            let bin = GoBinary::open(&path).unwrap();
            let mut checked = 0;
            for func in ["main.deadThenPark", "main.use"] {
                for (line, got) in map_liveness(&bin, func) {
                    let w = want[&(line, "chanrecv1".to_string())];
                    assert_eq!(got as usize, w, "Go {minor} {opts:?}: {func} line {line}");
                    checked += 1;
                }
            }
            // Two receives in deadThenPark, one in use.
            assert_eq!(checked, 3, "Go {minor}");
        }
    }
}

pub(crate) struct Killed(pub Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What the program printed: "dead"/"live"/"object" → addresses.
pub(crate) type Printed = HashMap<String, Vec<u64>>;

pub(crate) fn start(path: &std::path::Path) -> (Killed, Printed) {
    let mut child = Killed(Command::new(path).stdout(Stdio::piped()).spawn().unwrap());
    let out = child.0.stdout.take().unwrap();
    let mut printed = Printed::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    for line in BufReader::new(out).lines() {
        assert!(
            Instant::now() < deadline,
            "no \"ready\" from {}",
            path.display()
        );
        let line = line.unwrap();
        let mut words = line.split_whitespace();
        let what = words.next().unwrap_or_default().to_string();
        if what == "ready" {
            return (child, printed);
        }
        for w in words {
            let a = u64::from_str_radix(w.trim_start_matches("0x"), 16).unwrap();
            printed.entry(what.clone()).or_default().push(a);
        }
    }
    panic!("{} exited before \"ready\"", path.display());
}

/// Every value the scan would look at: the precise words and the words of
/// the conservative ranges.
fn values(w: &StackWords, mem: &dyn crate::process::mem::Memory) -> Vec<u64> {
    let mut v: Vec<u64> = w.words.iter().map(|(_, v)| *v).collect();
    for &(a, n) in &w.ranges {
        let mut buf = vec![0u8; n as usize];
        assert!(mem.read(a, &mut buf), "range {a:#x}+{n}");
        v.extend(
            buf.chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap())),
        );
    }
    v
}

/// A parked goroutine: where it resumes, its stack bounds and the g.
pub(crate) type Parked = (Regs, u64, u64, crate::snapshot::read::LiveG);

/// The parked goroutines of the program, by the main function on their
/// stack.
pub(crate) fn parked(path: &std::path::Path, pid: u32) -> (HashMap<&'static str, Parked>, u64) {
    const WANT: [&str; 4] = [
        "main.deadThenPark",
        "main.use",
        "main.deferred",
        "main.main",
    ];
    let bin = GoBinary::open(path).unwrap();
    let layout = bin.layout().unwrap();
    let symbolizer = bin.symbolizer().unwrap();
    let bias = if bin.is_pie() {
        crate::process::load_bias(pid, path).unwrap()
    } else {
        0
    };
    // Until each is parked (a loaded machine may be slow to get there).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let read = crate::snapshot::read_live(pid, &bin, &layout, bias, None).unwrap();
        let mut found = HashMap::new();
        for g in &read.live {
            if g.state != crate::goruntime::gstatus::GState::Waiting || !g.stable {
                continue;
            }
            let names: Vec<String> = g
                .stack
                .pcs
                .iter()
                .flat_map(|pc| symbolizer.symbolize(pc - bias, false))
                .map(|f| f.function)
                .collect();
            for want in WANT.into_iter().filter(|w| names.iter().any(|n| n == w)) {
                let r = &g.raw;
                let regs = Regs {
                    pc: r.sched_pc,
                    sp: r.sched_sp,
                    bp: r.sched_bp,
                };
                found.insert(want, (regs, r.lo, r.hi, g.clone()));
            }
        }
        if found.len() == WANT.len() {
            return (found, bias);
        }
        assert!(
            Instant::now() < deadline,
            "not all parked: {:?}",
            found.keys()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn live_stacks_hold_the_live_pointers_only() {
    let mut builds: Vec<(String, BuildOpts)> = VERSIONS
        .iter()
        .map(|m| (m.to_string(), BuildOpts::default()))
        .collect();
    builds.push(("1.21".into(), PIE_STRIP));
    builds.push(("1.27".into(), PIE_STRIP));
    for (minor, opts) in builds {
        let path = build_testdata("stackmaps", &minor, opts).unwrap();
        let bin = GoBinary::open(&path).unwrap();
        let maps = StackMaps::new(&bin).unwrap();
        let (child, printed) = start(&path);
        let pid = child.0.id();
        let (found, bias) = parked(&path, pid);
        let mem = crate::process::mem::ProcMem::open(pid).unwrap();
        let ctx = format!("Go {minor} {opts:?}");

        let (regs, lo, hi, _) = found["main.deadThenPark"].clone();
        let w = maps.live_words(bias, regs, lo, hi, &mem, Some(&[]));
        assert_eq!(w.fallback, None, "{ctx}: {w:?}");
        // gopark, chanrecv, chanrecv1, deadThenPark, (the `go` statement's
        // wrapper,) goexit.
        assert!(w.precise_frames >= 5, "{ctx}: {w:?}");
        assert_eq!(w.conservative_frames, 0, "{ctx}: {w:?}");
        let seen = values(&w, &mem);
        let live = printed["live"][0];
        assert!(seen.contains(&live), "{ctx}: live {live:#x} not in {w:?}");
        // The last dead channel is still in the frame: a conservative scan
        // sees it, the precise one must not.
        let mut all = vec![0u8; (hi - regs.sp) as usize];
        assert!(crate::process::mem::Memory::read(&mem, regs.sp, &mut all));
        let dead = printed["dead"][2];
        let in_frame = all
            .chunks_exact(8)
            .any(|c| u64::from_le_bytes(c.try_into().unwrap()) == dead);
        assert!(
            in_frame,
            "{ctx}: the dead channel {dead:#x} is not in the frame"
        );
        assert!(!seen.contains(&dead), "{ctx}: dead {dead:#x} seen in {w:?}");

        // `use` holds a pointer to the stack object `p` of its caller.
        let (regs, lo, hi, _) = found["main.use"].clone();
        let w = maps.live_words(bias, regs, lo, hi, &mem, Some(&[]));
        assert_eq!(w.fallback, None, "{ctx}: {w:?}");
        assert_eq!(w.conservative_frames, 0, "{ctx}: {w:?}");
        let seen = values(&w, &mem);
        for c in &printed["object"] {
            assert!(seen.contains(c), "{ctx}: object's {c:#x} not in {w:?}");
        }
        if bin.has_dwarf() {
            deferred(
                &bin,
                &maps,
                bias,
                &found["main.deferred"],
                &mem,
                &printed,
                &ctx,
            );
        }
        drop(child);
    }
}

/// `deferred`'s channel is only in its deferred closure, on the stack:
/// found through g._defer's records, or when every stack object is
/// scanned, but not through the frames alone.
fn deferred(
    bin: &GoBinary,
    maps: &StackMaps,
    bias: u64,
    (regs, lo, hi, g): &Parked,
    mem: &crate::process::mem::ProcMem,
    printed: &Printed,
    ctx: &str,
) {
    let x = printed["deferred"][0];
    let hl = crate::gobin::heap_layout::HeapLayout::load(bin).unwrap();
    let word = |off: Option<u64>| crate::process::mem::Memory::u64(mem, g.gp + off.unwrap());
    let (panic, defer) = (word(hl.g_panic).unwrap(), word(hl.g_defer).unwrap());
    let seeds = crate::proof::stacks::runtime_seeds(mem, &hl, g, panic, defer).unwrap();
    let scan = |seeds: Option<&[u64]>| {
        let w = maps.live_words(bias, *regs, *lo, *hi, mem, seeds);
        assert_eq!(w.fallback, None, "{ctx}: {w:?}");
        let mut v = values(&w, mem);
        v.extend(seeds.unwrap_or_default());
        v
    };
    assert!(
        !scan(Some(&[])).contains(&x),
        "{ctx}: {x:#x} live in a frame"
    );
    assert!(
        scan(Some(&seeds)).contains(&x),
        "{ctx}: {x:#x} not through g._defer"
    );
    assert!(
        scan(None).contains(&x),
        "{ctx}: {x:#x} not in the stack objects"
    );
}

/// Garbage stacks (random words, many of them return addresses into real
/// functions): a result, never a panic, and any failed unwind leaves the
/// rest of the stack to the conservative ranges.
#[test]
fn garbage_stacks_fall_back() {
    let path = build_testdata("stackmaps", "1.27", BuildOpts::default()).unwrap();
    let bin = GoBinary::open(&path).unwrap();
    let maps = StackMaps::new(&bin).unwrap();
    let pcs: Vec<u64> = bin.symbols().iter().map(|f| f.addr + f.size / 2).collect();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let (lo, hi) = (0x10_0000u64, 0x10_2000u64);
    let mut fell_back = 0;
    for _ in 0..500 {
        let stack: Vec<u8> = (0..(hi - lo) / 8)
            .flat_map(|_| {
                let r = next();
                let w = match r % 4 {
                    0 => pcs[(r >> 8) as usize % pcs.len()],
                    1 => lo + (r >> 8) % (hi - lo),
                    2 => 0,
                    _ => r,
                };
                w.to_le_bytes()
            })
            .collect();
        let mut mem = crate::process::mem::ImageMem::default();
        mem.regions.insert(lo, stack);
        let regs = Regs {
            pc: pcs[next() as usize % pcs.len()],
            sp: lo + 8 * (next() % 256),
            bp: 0,
        };
        let w = maps.live_words(0, regs, lo, hi, &mem, Some(&[lo + 64]));
        if w.fallback.is_some() {
            fell_back += 1;
            let last = w.ranges.last().expect("a conservative rest");
            assert_eq!(last.0 + last.1, hi, "{w:?}");
        }
        for &(a, n) in &w.ranges {
            assert!(a >= regs.sp && a + n <= hi, "{w:?}");
        }
    }
    assert!(fell_back > 0);
}
