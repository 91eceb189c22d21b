//! The leak proof (issue 13): a goroutine is proven leaked when nothing
//! reachable from a root can wake it. The `proofleaks` fixture plants every
//! pattern the proof covers, each group an exact number of goroutines, and
//! decoys blocked the same way on something a root still reaches; it prints
//! the runtime's own goids of each group. Built with Go 1.26 +
//! `GOEXPERIMENT=goroutineleakprofile` or with Go 1.27 it also asks Go's own
//! goroutineleak profile (`GOTRACE_ORACLE`), so the run carries its ground
//! truth. gotrace's proven set must be the planted set exactly (and Go's,
//! goroutine by goroutine), no decoy proven, and every goroutine it calls
//! wakeable must say what keeps it so.
//!
//! Until the proof is in gotrace these tests fail, saying so.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use gotrace_e2e::prometheus::Prometheus;
use gotrace_e2e::{
    CommandExt as _, RUN_TIMEOUT, fixture_build, gotrace_bin, hold_fixture, list, root_guard,
    trace_command_env,
};
use serde_json::{Value, json};

/// The leak groups `proofleaks` plants and how many goroutines each (its
/// main.go). 32 in all.
const LEAKS: &[(&str, usize)] = &[
    ("chanrecv", 3),
    ("chansend", 3),
    ("select", 2),
    ("selectnil", 1),
    ("nilrecv", 2),
    ("nilsend", 2),
    ("selectempty", 2),
    ("mutexholder", 1),
    ("mutex", 3),
    ("rwholder", 1),
    ("rlock", 2),
    ("readholder", 1),
    ("wlock", 2),
    ("waitgroup", 2),
    ("cond", 2),
    ("cycle", 3),
];

/// The decoy groups: blocked, but a root reaches what they wait on.
const DECOYS: &[(&str, usize)] = &[
    ("global", 2),
    ("pool", 3),
    ("stack", 2),
    ("heapmutex", 2),
    ("sleeperwg", 2),
    ("timer", 1),
];

/// The exit status the fixture is asked to exit with under `-- CMD`.
const FIXTURE_EXIT: &str = "7";

/// What keeps a decoy's primitive reachable, as the fixture says.
#[derive(Debug, Clone, PartialEq)]
enum Kept {
    Global(String),
    Goroutine(u64, String),
    /// A runtime structure (the timers): any root will do.
    Runtime,
}

/// What the fixture planted, from its stdout.
#[derive(Debug, Default)]
struct Design {
    leaks: BTreeMap<String, Vec<u64>>,
    decoys: BTreeMap<String, Vec<u64>>,
    kept: BTreeMap<String, Kept>,
    /// Go's own goroutineleak profile, when the fixture ran it.
    oracle: Option<BTreeSet<u64>>,
    /// Main blocks in `select {}` (`GOTRACE_MAIN=select`): it is no root,
    /// so the heapmutex decoy, which only main's stack kept, is a leak.
    main_select: bool,
}

/// The goid of main, which Go 1.27 never reports in `select {}`.
const MAIN_GOID: u64 = 1;

fn parse_goids(s: &str) -> Vec<u64> {
    s.split(',')
        .map(|g| g.parse().unwrap_or_else(|_| panic!("bad goid {g:?}")))
        .collect()
}

impl Design {
    /// Parses the fixture's lines and checks they are the designed groups
    /// and counts, exactly.
    fn parse(stdout: &str) -> Design {
        let mut d = Design::default();
        let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
        let mut goids: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for l in stdout.lines() {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                [verb @ ("planted" | "decoy"), group, n] => {
                    counts.insert((verb.to_string(), group.to_string()), n.parse().unwrap());
                }
                ["goids", group, ids] => {
                    goids.insert(group.to_string(), parse_goids(ids));
                }
                ["kept", decoy, "global", name] => {
                    d.kept
                        .insert(decoy.to_string(), Kept::Global(name.to_string()));
                }
                ["kept", decoy, "goroutine", goid, function] => {
                    let k = Kept::Goroutine(goid.parse().unwrap(), function.to_string());
                    d.kept.insert(decoy.to_string(), k);
                }
                ["kept", decoy, "runtime"] => {
                    d.kept.insert(decoy.to_string(), Kept::Runtime);
                }
                ["main", "select"] => d.main_select = true,
                ["oracle", "leaked", n, "goids", rest @ ..] => {
                    let ids: BTreeSet<u64> = rest
                        .first()
                        .map_or(vec![], |s| parse_goids(s))
                        .into_iter()
                        .collect();
                    assert_eq!(ids.len(), n.parse::<usize>().unwrap(), "{l}");
                    d.oracle = Some(ids);
                }
                _ => {}
            }
        }
        for (verb, table, into) in [
            ("planted", LEAKS, &mut d.leaks),
            ("decoy", DECOYS, &mut d.decoys),
        ] {
            for (group, n) in table {
                let got = counts.get(&(verb.to_string(), group.to_string()));
                assert_eq!(
                    got,
                    Some(n),
                    "`{verb} {group} {n}` expected from the fixture:\n{stdout}"
                );
                let ids = goids.get(*group).cloned().unwrap_or_default();
                assert_eq!(ids.len(), *n, "goids of {group}:\n{stdout}");
                into.insert(group.to_string(), ids);
            }
        }
        assert_eq!(
            counts.len(),
            LEAKS.len() + DECOYS.len(),
            "unexpected groups:\n{stdout}"
        );
        for (decoy, _) in DECOYS {
            assert!(
                d.kept.contains_key(*decoy),
                "no `kept {decoy}` line:\n{stdout}"
            );
        }
        if d.main_select {
            let ids = d.decoys.remove("heapmutex").unwrap();
            d.leaks.insert("heapmutex".into(), ids);
        }
        d
    }

    fn decoy_goids(&self) -> BTreeSet<u64> {
        self.decoys.values().flatten().copied().collect()
    }

    /// What Go `minor`'s profile must say: the leaks, and main in
    /// `select {}` on Go 1.26 (1.27 leaves it out).
    fn oracle_should_be(&self, minor: &str) -> BTreeSet<u64> {
        let mut want = self.leaked();
        if self.main_select && minor == "1.26" {
            want.insert(MAIN_GOID);
        }
        want
    }

    fn leaked(&self) -> BTreeSet<u64> {
        self.leaks.values().flatten().copied().collect()
    }

    fn group_of(&self, goid: u64) -> String {
        if goid == MAIN_GOID {
            return "main".into();
        }
        for (kind, groups) in [("leak", &self.leaks), ("decoy", &self.decoys)] {
            if let Some((g, _)) = groups.iter().find(|(_, ids)| ids.contains(&goid)) {
                return format!("{kind} {g}");
            }
        }
        "not planted".into()
    }
}

/// Whether Go `minor` has the goroutineleak profile in our builds (1.26
/// is built with the experiment on, see [`proof_fixture`]).
fn has_oracle(minor: &str) -> bool {
    gotoolchains::has_leak_profile(minor)
}

/// `proofleaks` built with Go `minor` (plus `args`, cached as `variant`);
/// Go 1.26 with `GOEXPERIMENT=goroutineleakprofile`, so that it carries
/// Go's own profile as 1.27 does.
fn proof_fixture(minor: &str, variant: &str, args: &[&str]) -> PathBuf {
    match gotoolchains::leak_profile_experiment(minor) {
        Some(experiment) => {
            let v = format!("leakprofile-{variant}");
            let env = [("GOEXPERIMENT", experiment)];
            fixture_build("proofleaks", minor, &v, args, &env)
        }
        None => fixture_build("proofleaks", minor, variant, args, &[]),
    }
}

/// The `proof` object, or a failure that says the proof is missing.
fn proof_of<'a>(out: &'a Value, what: &str) -> &'a Value {
    let p = &out["proof"];
    if !p.is_object() {
        let keys: Vec<&String> = out
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        panic!(
            "no `proof` object in {what}: is the leak proof (issue 13) in this gotrace? \
             `proof` is {p}; top-level keys: {keys:?}"
        );
    }
    p
}

/// The proof's candidates by goid.
fn candidates(proof: &Value) -> BTreeMap<u64, &Value> {
    list(proof, "goroutines")
        .iter()
        .map(|g| (g["goid"].as_u64().unwrap_or_else(|| panic!("goid: {g}")), g))
        .collect()
}

fn goids_with(c: &BTreeMap<u64, &Value>, verdict: &str) -> BTreeSet<u64> {
    c.iter()
        .filter(|(_, g)| g["verdict"] == verdict)
        .map(|(id, _)| *id)
        .collect()
}

/// Explains a difference of goid sets by the fixture's groups.
fn diff(d: &Design, want: &BTreeSet<u64>, got: &BTreeSet<u64>) -> String {
    let name = |ids: Vec<&u64>| -> Vec<String> {
        ids.into_iter()
            .map(|g| format!("{g} ({})", d.group_of(*g)))
            .collect()
    };
    format!(
        "missing {:?}, extra {:?}",
        name(want.difference(got).collect()),
        name(got.difference(want).collect())
    )
}

/// A waiter found wakeable through a root that is not the program's: not
/// a goroutine's stack, not a global of package main.
fn kept_by_the_runtime(v: &Value) -> bool {
    let k = &v["kept_by"];
    v["verdict"] == "wakeable"
        && k["kind"] != "goroutine"
        && !k["name"].as_str().is_some_and(|n| n.starts_with("main."))
}

/// The planted leaks not proven because a runtime root kept their
/// primitive (see [`kept_by_the_runtime`]), and those kept by the stack
/// of one of them (a leak cycle behind such a miss), transitively.
fn excused_misses(
    c: &BTreeMap<u64, &Value>,
    planted: &BTreeSet<u64>,
    leaked: &BTreeSet<u64>,
) -> BTreeSet<u64> {
    let missed: Vec<u64> = planted.difference(leaked).copied().collect();
    let mut excused: BTreeSet<u64> = missed
        .iter()
        .copied()
        .filter(|g| c.get(g).is_some_and(|v| kept_by_the_runtime(v)))
        .collect();
    loop {
        let behind: Vec<u64> = missed
            .iter()
            .copied()
            .filter(|g| !excused.contains(g))
            .filter(|g| {
                c.get(g).is_some_and(|v| {
                    v["kept_by"]["kind"] == "goroutine"
                        && v["kept_by"]["goid"]
                            .as_u64()
                            .is_some_and(|k| excused.contains(&k))
                })
            })
            .collect();
        if behind.is_empty() {
            return excused;
        }
        excused.extend(behind);
    }
}

/// Some(the difference) when the proof proved a strict subset of the
/// planted leaks (and nothing else): a miss, not a false proof.
fn only_misses(proof: &Value, d: &Design) -> Option<String> {
    let leaked = goids_with(&candidates(proof), "leaked");
    let planted = d.leaked();
    (leaked != planted && leaked.is_subset(&planted)).then(|| diff(d, &planted, &leaked))
}

/// Checks one proof against the fixture's design (and Go's profile when
/// the fixture ran it). `symbols`: the binary has a symbol table, so a
/// global is named.
fn check_proof(proof: &Value, d: &Design, symbols: bool) {
    assert_eq!(proof["status"], "done", "{proof:#}");
    assert_eq!(proof["error"], Value::Null, "{proof:#}");
    let mut c = candidates(proof);
    // Main in `select {}`: never proven leaked (as Go 1.27); whether it is
    // listed, and as what, is gotrace's call.
    let main = if d.main_select {
        c.remove(&MAIN_GOID)
    } else {
        None
    };
    if let Some(m) = main {
        assert_ne!(m["verdict"], "leaked", "main in select {{}}: {m:#}");
    }
    let planted = d.leaked();
    let designed = LEAKS.iter().map(|(_, n)| n).sum::<usize>() + if d.main_select { 2 } else { 0 };
    assert_eq!(planted.len(), designed);

    // Exactly the planted goroutines are proven leaked, but for one kind
    // of miss: a waiter whose primitive a runtime root keeps reachable (a
    // stale word of an M or P, a tiny block: seen in loaded CI runs, 1 in
    // ~100) is not proven, nor what only its stack keeps. A miss is never
    // a false proof; it is allowed there and printed, for one primitive at
    // most. A miss kept by the program fails.
    let leaked = goids_with(&c, "leaked");
    let excused = excused_misses(&c, &planted, &leaked);
    let kept_by_runtime: BTreeSet<String> = excused
        .iter()
        .filter_map(|g| c.get(g))
        .filter(|v| kept_by_the_runtime(v))
        .map(|v| v["waits_on"].to_string())
        .collect();
    assert!(kept_by_runtime.len() <= 1, "{kept_by_runtime:?}");
    if !excused.is_empty() {
        eprintln!(
            "not proven, kept by a runtime root: {}",
            diff(
                d,
                &planted,
                &planted.difference(&excused).copied().collect()
            )
        );
    }
    let expected: BTreeSet<u64> = planted.difference(&excused).copied().collect();
    let verdicts = |ids: &BTreeSet<u64>| -> Vec<String> {
        ids.symmetric_difference(&leaked)
            .filter_map(|g| c.get(g).map(|v| format!("{g}: {v}")))
            .collect()
    };
    assert!(
        leaked == expected,
        "proven leaked vs planted: {}; their verdicts: {:#?}",
        diff(d, &expected, &leaked),
        verdicts(&expected)
    );
    assert_eq!(proof["leaked"], designed - excused.len(), "{proof:#}");
    if let Some(oracle) = &d.oracle {
        let mut go = oracle.clone();
        go.remove(&MAIN_GOID); // Go 1.26 reports main in select {}
        let go: BTreeSet<u64> = go.difference(&excused).copied().collect();
        assert!(
            go == leaked,
            "gotrace vs Go's goroutineleak profile: {}",
            diff(d, &go, &leaked)
        );
    }

    // The candidates are exactly the planted and decoy goroutines (and
    // maybe main).
    let decoys = d.decoy_goids();
    let want: BTreeSet<u64> = planted.union(&decoys).copied().collect();
    let got: BTreeSet<u64> = c.keys().copied().collect();
    assert!(want == got, "candidates: {}", diff(d, &want, &got));
    let main_is = |v: &str| usize::from(main.is_some_and(|m| m["verdict"] == v));
    assert_eq!(
        proof["candidates"],
        want.len() + usize::from(main.is_some()),
        "{proof:#}"
    );
    assert_eq!(
        proof["wakeable"],
        decoys.len() + main_is("wakeable") + excused.len(),
        "{proof:#}"
    );
    assert_eq!(proof["unproven"], main_is("unproven"), "{proof:#}");
    assert_eq!(proof["heap"]["read_errors"], 0, "{proof:#}");

    // Every wakeable goroutine says what keeps it so.
    for (goid, g) in c.iter().chain(main.as_ref().map(|m| (&MAIN_GOID, m))) {
        if g["verdict"] == "wakeable" {
            assert!(
                g["kept_by"].is_object(),
                "goroutine {goid} ({}): {g:#}",
                d.group_of(*goid)
            );
        }
    }
    for (decoy, ids) in &d.decoys {
        for goid in ids {
            check_kept(decoy, c[goid], &d.kept[decoy], symbols);
        }
    }
}

fn check_kept(decoy: &str, g: &Value, kept: &Kept, symbols: bool) {
    assert_eq!(g["verdict"], "wakeable", "decoy {decoy}: {g:#}");
    let by = &g["kept_by"];
    match kept {
        Kept::Global(name) if symbols => {
            assert_eq!(
                by,
                &json!({"kind": "global", "name": name}),
                "decoy {decoy}: {g:#}"
            )
        }
        Kept::Goroutine(goid, function) => {
            assert_eq!(by["kind"], "goroutine", "decoy {decoy}: {g:#}");
            assert_eq!(by["goid"], *goid, "decoy {decoy}: {g:#}");
            assert_eq!(by["function"], function.as_str(), "decoy {decoy}: {g:#}");
        }
        Kept::Global(_) | Kept::Runtime => {
            assert!(by.is_object(), "decoy {decoy}: {g:#}")
        }
    }
}

/// The snapshot's groups agree with the proof: each group's `leaked` is
/// its `leaked_goids`, and together they are the proven set.
fn check_snapshot_groups(out: &Value, proof: &Value) {
    let mut all = BTreeSet::new();
    for g in list(out, "groups") {
        let ids: BTreeSet<u64> = list(g, "leaked_goids")
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(g["leaked"], ids.len(), "{g:#}");
        let members: BTreeSet<u64> = list(g, "goids")
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert!(ids.is_subset(&members), "{g:#}");
        all.extend(ids);
    }
    assert_eq!(all, goids_with(&candidates(proof), "leaked"));
}

/// `gotrace snapshot --pid N --prove --json`, parsed.
fn snapshot_prove(pid: u32) -> Value {
    let out = Command::new(gotrace_bin())
        .args(["snapshot", "--pid", &pid.to_string(), "--prove", "--json"])
        .stdin(Stdio::null())
        .output_within(RUN_TIMEOUT)
        .expect("run gotrace snapshot");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(0) || out.status.code() == Some(3),
        "gotrace snapshot --prove failed ({:?}; the leak proof of issue 13 missing?):\n{stderr}",
        out.status.code()
    );
    eprintln!("snapshot --prove: {}", stderr.trim());
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("snapshot --json output: {e}\n{stderr}"))
}

/// Plants, then attaches: `snapshot --prove` on the fixture waiting for
/// its trigger (which never comes), leaks long done.
fn check_pid(bin: &Path, go: &str, symbols: bool, env: &[(&str, &str)]) {
    let dir = tempfile::tempdir().unwrap();
    let oracle = dir.path().join("oracle");
    let mut env = env.to_vec();
    env.extend([
        ("GOTRACE_ORACLE", oracle.to_str().unwrap()),
        ("GOTRACE_HOLD", "60s"),
    ]);
    let held = hold_fixture(bin, &env, Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e:#}"));
    let d = Design::parse(&held.stdout);
    check_oracle(&d, go, &oracle, &held.stdout);
    let mut out = snapshot_prove(held.pid);
    // The proof may miss a leak while the runtime still holds a passing
    // reference to its primitive (seen once in a loaded CI run, not since):
    // a miss alone is proven again, twice at most, and said; anything
    // proven that was not planted fails at once.
    for attempt in 1..=2 {
        let Some(miss) = only_misses(proof_of(&out, "gotrace snapshot --json"), &d) else {
            break;
        };
        eprintln!("proof {attempt} missed planted leaks ({miss}): proving again in 1 s");
        std::thread::sleep(Duration::from_secs(1));
        out = snapshot_prove(held.pid);
    }
    let proof = proof_of(&out, "gotrace snapshot --json");
    eprintln!(
        "Go {go} {}: {} candidates, {} leaked, {} wakeable in {} ms",
        bin.display(),
        proof["candidates"],
        proof["leaked"],
        proof["wakeable"],
        proof["took_ms"]
    );
    check_proof(proof, &d, symbols);
    check_snapshot_groups(&out, proof);
}

/// The fixture ran Go's profile exactly when the toolchain has one, and
/// Go's answer is the fixture's design (else the fixture, not gotrace, is
/// wrong). The goids file agrees with the printed line.
fn check_oracle(d: &Design, go: &str, file: &Path, stdout: &str) {
    if !has_oracle(go) {
        assert!(
            d.oracle.is_none(),
            "Go {go} has no goroutineleak profile:\n{stdout}"
        );
        assert!(stdout.contains("oracle unavailable"), "{stdout}");
        return;
    }
    let Some(oracle) = &d.oracle else {
        panic!("Go {go}: the fixture did not run Go's goroutineleak profile:\n{stdout}")
    };
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let from_file: BTreeSet<u64> = text.lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(&from_file, oracle, "{}", file.display());
    let want = d.oracle_should_be(go);
    assert!(
        *oracle == want,
        "Go {go}'s own goroutineleak profile vs the fixture's design: {}",
        diff(d, &want, oracle)
    );
}

/// `gotrace -o DIR -- proofleaks`, the fixture exiting with status 7 a few
/// milliseconds after planting: the proof runs on its last state.
fn check_command(bin: &Path, go: &str, symbols: bool) {
    let dir = tempfile::tempdir().unwrap();
    let oracle = dir.path().join("oracle");
    let env = [
        ("GOTRACE_HOLD", "0s"),
        ("GOTRACE_EXIT", FIXTURE_EXIT),
        ("GOTRACE_ORACLE", oracle.to_str().unwrap()),
    ];
    let t = trace_command_env(bin, &env, &[]).unwrap_or_else(|e| panic!("{e:#}"));
    let d = Design::parse(&t.fixture_stdout);
    check_oracle(&d, go, &oracle, &t.fixture_stdout);
    let r = &t.report;
    assert_eq!(
        r["target"]["exit"],
        format!("exit status {FIXTURE_EXIT}"),
        "{}",
        r["target"]
    );
    let proof = proof_of(r, "report.json");
    // Main runs the exit: its stack is read from the held thread's stack
    // pointer up, not whole (dead frames below it once kept leaks alive).
    assert!(
        proof["stacks"]["from_thread_sp"].as_u64() >= Some(1),
        "{}",
        proof["stacks"]
    );
    check_proof(proof, &d, symbols);
    // What check_proof found proven (the planted leaks, but for excused
    // misses).
    let total = proof["leaked"].as_u64().unwrap();
    assert_eq!(r["leaked_count"], total, "{}", t.gotrace_stderr);
    let in_groups: u64 = ["suspects", "live"]
        .iter()
        .flat_map(|k| list(r, k))
        .map(|g| {
            g["proven_leaked"]
                .as_u64()
                .unwrap_or_else(|| panic!("proven_leaked: {g:#}"))
        })
        .sum();
    assert_eq!(in_groups, total);
    assert_eq!(
        t.exit_code,
        Some(3),
        "gotrace's exit status with proven leaks; stderr:\n{}",
        t.gotrace_stderr
    );
}

fn proves_after_the_leak(go: &str) {
    check_pid(&proof_fixture(go, "default", &[]), go, true, &[]);
}

fn proves_at_exit(go: &str) {
    check_command(&proof_fixture(go, "default", &[]), go, true);
}

gotrace_e2e::per_go_version!(proves_after_the_leak, proves_at_exit);

/// Main ends in `select {}`, as many servers do: it is not proven leaked
/// (Go 1.27 leaves it out; 1.26 reports it), but it is no root either, so
/// what only main's stack kept (the heapmutex decoy) is leaked.
#[test]
fn main_blocked_in_select_forever() {
    let Some(_g) = root_guard() else { return };
    for go in ["1.21", "1.26", "1.27"] {
        let bin = proof_fixture(go, "default", &[]);
        check_pid(&bin, go, true, &[("GOTRACE_MAIN", "select")]);
    }
}

/// Stripped binaries (no symbols, no DWARF: the per-version layout table)
/// give the same verdicts; globals are not named there.
#[test]
fn stripped_binaries() {
    let Some(_g) = root_guard() else { return };
    for go in ["1.21", "1.27"] {
        let bin = proof_fixture(go, "stripped", &["-ldflags=-s -w"]);
        check_pid(&bin, go, false, &[]);
        check_command(&bin, go, false);
    }
}

/// PIE binaries (a load bias on every global and text address).
#[test]
fn pie_binaries() {
    let Some(_g) = root_guard() else { return };
    for go in ["1.22", "1.26"] {
        let bin = proof_fixture(go, "pie", &["-buildmode=pie"]);
        check_pid(&bin, go, true, &[]);
        check_command(&bin, go, true);
    }
}

/// A healthy Prometheus (Debian's stripped Go 1.19 build), scraping itself
/// every second: nothing is proven leaked, and every idle worker the proof
/// looked at is explained (what keeps what it waits on reachable).
#[test]
fn prometheus_proves_no_leak() {
    let Some(_g) = root_guard() else { return };
    let mut prom = Prometheus::start(&[]).unwrap_or_else(|e| panic!("{e:#}"));
    prom.wait_scraped("prometheus", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e:#}"));
    // A few seconds of scraping itself every second.
    std::thread::sleep(Duration::from_secs(5));
    let out = snapshot_prove(prom.pid);
    let proof = proof_of(&out, "gotrace snapshot --json");
    eprintln!(
        "prometheus: {} goroutines, {} candidates, {} wakeable, {} unproven {}, {} ms",
        out["total"],
        proof["candidates"],
        proof["wakeable"],
        proof["unproven"],
        proof["unproven_reasons"],
        proof["took_ms"]
    );
    assert_eq!(proof["status"], "done", "{proof:#}");
    assert_eq!(proof["leaked"], 0, "{proof:#}");
    let c = candidates(proof);
    assert!(
        !c.is_empty(),
        "an idle Prometheus has parked workers: {proof:#}"
    );
    for (goid, g) in &c {
        assert_ne!(g["verdict"], "leaked", "goroutine {goid}: {g:#}");
        if g["verdict"] == "wakeable" {
            assert!(g["kept_by"].is_object(), "goroutine {goid}: {g:#}");
        }
    }
    assert!(
        prom.alive(),
        "the proof stopped Prometheus:\n{}",
        prom.log()
    );
}

/// The checks themselves, on the fixture's real output (Go 1.27, with
/// Go's profile) and hand-made proofs: no root, no gotrace needed.
mod self_check {
    use super::*;

    const SAMPLE: &str = "fixture proofleaks pid 4242
decoy global 2
goids global 6,7
kept global global main.keptChan
decoy pool 3
goids pool 17,8,9
kept pool global main.pool
decoy stack 2
goids stack 10,11
kept stack goroutine 18 main.sleepHolding
decoy heapmutex 2
goids heapmutex 19,20
kept heapmutex goroutine 1 main.main
decoy sleeperwg 2
goids sleeperwg 13,14
kept sleeperwg goroutine 12 main.doneLater
decoy timer 1
goids timer 15
kept timer runtime
planted chanrecv 3
goids chanrecv 21,22,23
planted chansend 3
goids chansend 16,33,34
planted select 2
goids select 24,25
planted selectnil 1
goids selectnil 35
planted nilrecv 2
goids nilrecv 36,26
planted nilsend 2
goids nilsend 37,38
planted selectempty 2
goids selectempty 27,28
planted mutexholder 1
goids mutexholder 39
planted mutex 3
goids mutex 40,41,42
planted rwholder 1
goids rwholder 43
planted rlock 2
goids rlock 44,45
planted readholder 1
goids readholder 31
planted wlock 2
goids wlock 32,49
planted waitgroup 2
goids waitgroup 46,47
planted cond 2
goids cond 50,51
planted cycle 3
goids cycle 48,52,53
oracle leaked 32 goids 21,22,23,16,33,34,24,25,35,36,26,37,38,27,28,39,40,41,42,43,44,45,31,32,49,46,47,50,51,48,52,53
done
";

    /// A proof as the contract describes it, right for `d`.
    fn contract_proof(d: &Design) -> Value {
        let mut gs = Vec::new();
        for ids in d.leaks.values() {
            for goid in ids {
                gs.push(json!({"goid": goid, "verdict": "leaked", "wait_reason": "chan receive",
                               "waits_on": ["0xc000120060"], "kept_by": null, "unproven_reason": null}));
            }
        }
        for (decoy, ids) in &d.decoys {
            let kept_by = match &d.kept[decoy] {
                Kept::Global(name) => json!({"kind": "global", "name": name}),
                Kept::Goroutine(goid, f) => {
                    json!({"kind": "goroutine", "goid": goid, "function": f})
                }
                Kept::Runtime => json!({"kind": "global", "name": "runtime.allp"}),
            };
            for goid in ids {
                gs.push(json!({"goid": goid, "verdict": "wakeable", "wait_reason": "select",
                               "waits_on": ["0xc000130000"], "kept_by": kept_by, "unproven_reason": null}));
            }
        }
        gs.sort_by_key(|g| g["goid"].as_u64());
        let (leaked, wakeable) = (d.leaked().len(), d.decoy_goids().len());
        json!({"status": "done", "error": null, "method": "conservative", "passes": 2,
               "took_ms": 12.3, "candidates": leaked + wakeable, "leaked": leaked,
               "wakeable": wakeable, "unproven": 0,
               "unproven_reasons": {}, "running": 1,
               "heap": {"spans": 80, "objects_marked": 500, "bytes_scanned": 91234, "read_errors": 0},
               "goroutines": gs})
    }

    /// SAMPLE as with `GOTRACE_MAIN=select` on Go 1.26: main in `select
    /// {}`, the heapmutex decoy (19, 20) leaked, Go's profile reports both
    /// and main.
    fn main_select_sample() -> String {
        SAMPLE
            .replace("planted chanrecv 3\n", "main select\nplanted chanrecv 3\n")
            .replace("oracle leaked 32 goids ", "oracle leaked 35 goids 1,19,20,")
    }

    /// `proof` with main listed as a candidate with `verdict`.
    fn with_main(mut proof: Value, verdict: &str) -> Value {
        let m = json!({"goid": MAIN_GOID, "verdict": verdict, "wait_reason": "select (no cases)",
                       "waits_on": [], "kept_by": null, "unproven_reason": null});
        proof["goroutines"].as_array_mut().unwrap().insert(0, m);
        for key in ["candidates", verdict] {
            proof[key] = json!(proof[key].as_u64().unwrap() + 1);
        }
        proof
    }

    #[test]
    fn main_in_select_forever() {
        let d = Design::parse(&main_select_sample());
        assert!(d.main_select);
        assert_eq!(d.leaked().len(), 34);
        assert_eq!(d.decoy_goids().len(), 10);
        assert_eq!(d.oracle.as_ref(), Some(&d.oracle_should_be("1.26")));
        assert!(!d.oracle_should_be("1.27").contains(&MAIN_GOID));
        let proof = contract_proof(&d);
        check_proof(&proof, &d, true);
        check_proof(&with_main(proof.clone(), "unproven"), &d, true);
        fails("main proven leaked", || {
            check_proof(&with_main(proof.clone(), "leaked"), &d, true)
        });
        fails("main wakeable, kept by nothing", || {
            check_proof(&with_main(proof.clone(), "wakeable"), &d, true)
        });
        // Without main in select {}, heapmutex is a decoy again.
        fails("heapmutex proven", || {
            check_proof(&proof, &Design::parse(SAMPLE), true)
        });
    }

    fn fails(what: &str, f: impl FnOnce()) {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        assert!(r.is_err(), "{what}: the check passed");
    }

    #[test]
    fn the_fixture_output_parses() {
        let d = Design::parse(SAMPLE);
        assert_eq!(d.leaked().len(), 32);
        assert_eq!(d.decoys.values().flatten().count(), 12);
        assert_eq!(d.oracle.as_ref(), Some(&d.leaked()));
        assert_eq!(
            d.kept["stack"],
            Kept::Goroutine(18, "main.sleepHolding".into())
        );
        assert_eq!(d.group_of(49), "leak wlock");
        fails("a group missing", || {
            Design::parse(&SAMPLE.replace("planted cond 2\n", ""));
        });
        fails("a count off by one", || {
            Design::parse(&SAMPLE.replace("goids cycle 48,52,53", "goids cycle 48,52"));
        });
    }

    #[test]
    fn a_proof_by_the_contract_passes() {
        let d = Design::parse(SAMPLE);
        let proof = contract_proof(&d);
        check_proof(&proof, &d, true);
        let mut d = d;
        d.kept
            .insert("global".into(), Kept::Global("main.other".into()));
        check_proof(&proof, &d, false); // stripped: the name is not checked
    }

    #[test]
    fn the_checks_can_fail() {
        let d = Design::parse(SAMPLE);
        let good = contract_proof(&d);
        let with = |goid: u64, key: &str, v: Value| {
            let mut p = good.clone();
            for g in p["goroutines"].as_array_mut().unwrap() {
                if g["goid"] == goid {
                    g[key] = v.clone();
                }
            }
            p
        };
        fails("a decoy proven", || {
            check_proof(&with(6, "verdict", json!("leaked")), &d, true)
        });
        fails("a leak not proven", || {
            check_proof(&with(21, "verdict", json!("unproven")), &d, true)
        });
        fails("no kept_by", || {
            check_proof(&with(15, "kept_by", Value::Null), &d, true)
        });
        let wrong = json!({"kind": "global", "name": "main.pool"});
        fails("the wrong global", || {
            check_proof(&with(6, "kept_by", wrong), &d, true)
        });
        let main = json!({"kind": "goroutine", "goid": 1, "function": "main.main"});
        fails("the wrong goroutine", || {
            check_proof(&with(10, "kept_by", main), &d, true)
        });
        let mut p = good.clone();
        p["status"] = json!("unsupported");
        fails("not done", || check_proof(&p, &d, true));
        let mut p = good.clone();
        p["goroutines"]
            .as_array_mut()
            .unwrap()
            .retain(|g| g["goid"] != 15);
        fails("a candidate missing", || check_proof(&p, &d, true));
        let mut off = Design::parse(SAMPLE);
        off.oracle.as_mut().unwrap().remove(&53);
        fails("Go's profile disagrees", || check_proof(&good, &off, true));
        fails("no proof at all", || {
            proof_of(&json!({"groups": []}), "test");
        });
    }

    #[test]
    fn snapshot_groups_must_match_the_proof() {
        let d = Design::parse(SAMPLE);
        let proof = contract_proof(&d);
        let leaked: Vec<u64> = d.leaked().into_iter().collect();
        let (a, b) = leaked.split_at(10);
        let with_decoys = [b, &[6, 7]].concat();
        let out = json!({"groups": [
            {"goids": a, "leaked": a.len(), "leaked_goids": a},
            {"goids": with_decoys, "leaked": b.len(), "leaked_goids": b},
        ]});
        check_snapshot_groups(&out, &proof);
        let short = json!({"groups": [{"goids": a, "leaked": a.len(), "leaked_goids": a}]});
        fails("a proven goroutine in no group", || {
            check_snapshot_groups(&short, &proof)
        });
    }
}
