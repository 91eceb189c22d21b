//! `gotrace agent` (issue 17) against real parts: the `proofleaks` fixture
//! (every leak the proof covers, an exact number of goroutines each), a
//! real Prometheus (Debian's package) scraping the agent every second,
//! `go tool pprof` reading the agent's goroutine profile, and the shipped
//! `contrib/` files checked by `promtool`.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gotrace_e2e::prometheus::{Prometheus, ScrapeTarget, http_get};
use gotrace_e2e::{
    CommandExt as _, RUN_TIMEOUT, Spawned, assert_one_line_error, fixture, go_tool, gotrace,
    gotrace_bin, hold_fixture, root_guard, workspace_root,
};
use serde_json::Value;

/// The Go the fixtures are built with.
const GO: &str = "1.27";
/// The agent's --interval, in seconds.
const INTERVAL_S: f64 = 1.0;

/// Proven-leaked goroutines of `proofleaks` per creation site (the
/// function of the `go` statement), from the fixture's design (main.go):
/// plantLeaks starts each group that has a start function with one `go`
/// (13 groups: 13 goroutines there); that starter starts the other n-1
/// members of its group and becomes the last; a holder (holdMutex,
/// holdWriteLock, holdReadLock) starts the waiters of the group after it.
/// 32 in all.
const LEAKED_BY_CREATOR: &[(&str, u64)] = &[
    ("main.plantLeaks", 13),
    ("main.chanRecvGroup", 2),
    ("main.chanSendGroup", 2),
    ("main.selectGroup", 1),
    ("main.nilRecvGroup", 1),
    ("main.nilSendGroup", 1),
    ("main.selectEmptyGroup", 1),
    ("main.holdMutex", 3),
    ("main.holdWriteLock", 2),
    ("main.holdReadLock", 2),
    ("main.waitGroupGroup", 1),
    ("main.condGroup", 1),
    ("main.cycleGroup", 2),
];

/// A running `gotrace agent`, killed when dropped (and after RUN_TIMEOUT).
struct Agent {
    child: Spawned,
    addr: SocketAddr,
}

impl Agent {
    /// Starts the agent on a free loopback port (`--listen 127.0.0.1:0`)
    /// and reads the address it says it listens on.
    fn start(args: &[&str]) -> Agent {
        let mut child = Command::new(gotrace_bin())
            .args(["agent", "--listen", "127.0.0.1:0", "--interval", "1s"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn_within(RUN_TIMEOUT)
            .expect("start gotrace agent");
        let mut err = BufReader::new(child.stderr.take().expect("stderr"));
        let mut line = String::new();
        err.read_line(&mut line).expect("agent's first line");
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|a| a.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in the agent's first line {line:?}"));
        std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = err.read_to_string(&mut rest);
            if !rest.is_empty() {
                eprintln!("agent stderr: {rest}");
            }
        });
        Agent { child, addr }
    }

    fn get(&self, path: &str) -> (u16, String) {
        http_get(self.addr, path).unwrap_or_else(|e| panic!("GET {path}: {e:#}"))
    }

    /// `/metrics`, checked to be 200.
    fn metrics(&self) -> String {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, 200, "{body}");
        body
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().is_ok_and(|s| s.is_none())
    }
}

/// The value of the series `name{labels}` (labels as written in the
/// exposition, in order) in `text`.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Runs Prometheus's instant query `q`: its result vector.
fn query(prom: &Prometheus, q: &str) -> Vec<Value> {
    let enc: String = q
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let (status, body) = prom
        .get(&format!("/api/v1/query?query={enc}"))
        .unwrap_or_else(|e| panic!("query {q}: {e:#}"));
    assert_eq!(status, 200, "query {q}: {body}");
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

/// Polls `f` every 200 ms until it gives Some, for at most `timeout`.
fn until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < timeout, "{what}: not after {timeout:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Leaked goroutines by creation function, from a query result.
fn by_creator(result: &[Value]) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for s in result {
        let site = s["metric"]["creation_site"].as_str().unwrap_or("");
        let function = site.split(' ').next().unwrap_or("").to_string();
        let v: f64 = s["value"][1].as_str().unwrap_or("nan").parse().unwrap();
        *m.entry(function).or_insert(0) += v as u64;
    }
    m
}

/// A copy of a program that is no Go (coreutils' sleep) under a name of
/// its own, so that exactly one process matches it.
fn not_go_program(dir: &Path) -> PathBuf {
    let p = dir.join("agentnotgo");
    std::fs::copy("/bin/sleep", &p).expect("copy /bin/sleep");
    p
}

/// `go tool pprof -top URL`'s stdout.
fn pprof_top(url: &str) -> String {
    let home = tempfile::tempdir().unwrap();
    let out = go_tool(GO)
        .args(["tool", "pprof", "-top", url])
        .env("HOME", home.path())
        .env("PPROF_TMPDIR", home.path())
        .stdin(Stdio::null())
        .output_within(RUN_TIMEOUT)
        .expect("run go tool pprof");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "go tool pprof -top {url}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Connects `n` clients at once, each sending GET /metrics: how many got
/// 200 and how many 503.
fn flood(addr: SocketAddr, n: usize) -> (usize, usize) {
    let threads: Vec<_> = (0..n)
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).ok()?;
                s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
                s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                    .ok()?;
                let mut resp = Vec::new();
                let _ = s.read_to_end(&mut resp);
                let text = String::from_utf8_lossy(&resp);
                text.split_whitespace().nth(1)?.parse::<u16>().ok()
            })
        })
        .collect();
    let codes: Vec<Option<u16>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let ok = codes.iter().filter(|c| **c == Some(200)).count();
    let busy = codes.iter().filter(|c| **c == Some(503)).count();
    (ok, busy)
}

/// The whole path: proven leaks per creation site in Prometheus, the pprof
/// profile, a new process picked up, an exited one gone stale, a non-Go
/// process counted and not watched, a flood survived.
#[test]
fn agent_feeds_prometheus() {
    let Some(_root) = root_guard() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut leaky = hold_fixture(
        &fixture("proofleaks", GO),
        &[("GOTRACE_HOLD", "300s")],
        Duration::from_secs(60),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let notgo = Command::new(not_go_program(dir.path()))
        .arg("300")
        .spawn_within(RUN_TIMEOUT)
        .expect("start the non-Go program");
    let mut agent = Agent::start(&[
        "--match",
        "^(proofleaks|chanrecv|agentnotgo)$",
        "--prove-every",
        "2s",
    ]);
    let prom = Prometheus::start(&[ScrapeTarget::new(
        "gotrace",
        &agent.addr.to_string(),
        "/metrics",
    )])
    .unwrap_or_else(|e| panic!("{e:#}"));
    prom.wait_scraped("gotrace", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e:#}"));

    // The exact leaked count per creation site, through Prometheus.
    let want: BTreeMap<String, u64> = LEAKED_BY_CREATOR
        .iter()
        .map(|(f, n)| (f.to_string(), *n))
        .collect();
    let q = "gotrace_goroutines_leaked{process=\"proofleaks\"}";
    let got = until(
        "32 proven leaks in Prometheus",
        Duration::from_secs(60),
        || {
            let m = by_creator(&query(&prom, q));
            (m.values().sum::<u64>() == 32).then_some(m)
        },
    );
    assert_eq!(got, want, "proven leaked goroutines per creation site");

    // A non-Go process matching --match: one error, not watched.
    let m = agent.metrics();
    assert_eq!(
        value(&m, "gotrace_agent_errors_total{kind=\"not_go\"}"),
        Some(1.0),
        "{m}"
    );
    assert!(!m.contains("process=\"agentnotgo\""), "{m}");
    assert_eq!(
        value(&m, "gotrace_agent_processes_watched"),
        Some(1.0),
        "{m}"
    );
    drop(notgo);

    // Go's goroutine profile format: pprof names the blocked functions.
    let url = format!(
        "http://{}/debug/pprof/goroutine?process=proofleaks",
        agent.addr
    );
    let top = pprof_top(&url);
    for f in ["main.recvAlone", "main.lockBehindLeak", "main.cycleStep"] {
        assert!(top.contains(f), "{f} not in pprof -top:\n{top}");
    }
    let (status, report) = agent.get(&format!("/report.json?pid={}", leaky.pid));
    assert_eq!(status, 200, "{report}");
    let report: Value = serde_json::from_str(&report).unwrap();
    let leaked: u64 = report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["leaked"].as_u64().unwrap())
        .sum();
    assert_eq!(leaked, 32, "report.json groups' leaked");

    // A new Go process: watched within two intervals.
    let fresh = hold_fixture(&fixture("chanrecv", GO), &[], Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let since = Instant::now();
    let info = format!("gotrace_process_info{{process=\"chanrecv\",go_version=\"go{GO}");
    until("chanrecv watched", Duration::from_secs(10), || {
        agent.metrics().contains(&info).then_some(())
    });
    let took = since.elapsed().as_secs_f64();
    eprintln!("a new process watched after {took:.2}s");
    assert!(took <= 2.0 * INTERVAL_S, "picked up after {took:.2}s");
    until("chanrecv in Prometheus", Duration::from_secs(30), || {
        let r = query(&prom, "gotrace_process_info{process=\"chanrecv\"}");
        (!r.is_empty()).then_some(())
    });

    // The leaky fixture exits: its series go stale (absent from a query).
    assert!(leaky.alive());
    drop(leaky);
    until("proofleaks series stale", Duration::from_secs(30), || {
        query(&prom, q).is_empty().then_some(())
    });
    let m = agent.metrics();
    assert!(!m.contains("process=\"proofleaks\""), "{m}");
    assert_eq!(
        value(&m, "gotrace_agent_processes_watched"),
        Some(1.0),
        "{m}"
    );

    // A flood: every connection answered (200, or 503 once 64 are busy),
    // each 503 counted, and the agent still serves.
    let busy_before = value(
        &agent.metrics(),
        "gotrace_agent_http_rejected_total{reason=\"busy\"}",
    )
    .expect("busy counter");
    let (ok, busy) = flood(agent.addr, 500);
    eprintln!("flood of 500: {ok} answered, {busy} turned away");
    assert_eq!(ok + busy, 500, "every flood connection answered");
    assert!(ok >= 64, "{ok} answered");
    let m = agent.metrics();
    let busy_after = value(&m, "gotrace_agent_http_rejected_total{reason=\"busy\"}").unwrap();
    assert!(busy_after - busy_before >= busy as f64, "{m}");
    // An oversized request is refused and counted.
    let mut s = TcpStream::connect(agent.addr).unwrap();
    let big = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
    let _ = s.write_all(big.as_bytes());
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp:.100}");
    let m = agent.metrics();
    assert_eq!(
        value(
            &m,
            "gotrace_agent_http_rejected_total{reason=\"too_large\"}"
        ),
        Some(1.0),
        "{m}"
    );
    assert!(agent.alive(), "the agent died");
    drop(fresh);
}

/// A copy of fixture `name` whose Go version strings read go1.17 (the
/// build info's and the runtime's, same length): a Go program of a version
/// gotrace does not read. It still runs.
fn old_go_copy(name: &str, dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let mut data = std::fs::read(fixture(name, GO)).unwrap();
    let (from, to) = (format!("go{GO}.").into_bytes(), b"go1.17.");
    assert_eq!(from.len(), to.len());
    let mut n = 0;
    let mut i = 0;
    while let Some(at) = data[i..].windows(from.len()).position(|w| w == from) {
        data[i + at..i + at + to.len()].copy_from_slice(to);
        i += at + to.len();
        n += 1;
    }
    assert!(n > 0, "no go{GO}. in the fixture");
    let p = dir.join("agentoldgo");
    std::fs::write(&p, data).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// Series of family `name` (and a label filter) in an exposition.
fn series<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.starts_with(prefix)).collect()
}

/// The bounds: label sets per process capped (the rest under "other",
/// sums kept), processes capped; a Go binary of an unsupported version
/// counted, not watched.
#[test]
fn agent_bounds_and_refusals() {
    let Some(_root) = root_guard() else { return };
    let dir = tempfile::tempdir().unwrap();
    let _leaky = hold_fixture(
        &fixture("proofleaks", GO),
        &[("GOTRACE_HOLD", "300s")],
        Duration::from_secs(60),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let _old = Command::new(old_go_copy("chanrecv", dir.path()))
        .env("GOTRACE_TRIGGER", dir.path().join("never"))
        .stdout(Stdio::null())
        .spawn_within(RUN_TIMEOUT)
        .expect("start the old-Go copy");
    let agent = Agent::start(&[
        "--match",
        "^(proofleaks|agentoldgo|chanrecv)$",
        "--max-sites",
        "3",
        "--max-processes",
        "1",
    ]);
    let leaked = "gotrace_goroutines_leaked{process=\"proofleaks\"";
    let m = until("32 proven leaks", Duration::from_secs(60), || {
        let m = agent.metrics();
        let sum: f64 = series(&m, leaked)
            .iter()
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum();
        (sum == 32.0).then_some(m)
    });
    let rows = series(&m, leaked);
    assert_eq!(rows.len(), 4, "3 sites and other: {rows:#?}");
    assert!(
        rows.iter()
            .any(|l| l.contains("creation_site=\"other\",blocked_site=\"other\"")),
        "{rows:#?}"
    );
    let sites = series(
        &m,
        "gotrace_creation_site_goroutines{process=\"proofleaks\"",
    );
    assert_eq!(sites.len(), 4, "{sites:#?}");
    assert_eq!(
        value(&m, "gotrace_agent_errors_total{kind=\"unsupported_go\"}"),
        Some(1.0),
        "{m}"
    );
    assert!(!m.contains("process=\"agentoldgo\""), "{m}");
    // A second Go process over --max-processes 1: counted, not watched.
    let _second = hold_fixture(&fixture("chanrecv", GO), &[], Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let m = until("process_cap counted", Duration::from_secs(10), || {
        let m = agent.metrics();
        (value(&m, "gotrace_agent_errors_total{kind=\"process_cap\"}") == Some(1.0)).then_some(m)
    });
    assert_eq!(
        value(&m, "gotrace_agent_processes_watched"),
        Some(1.0),
        "{m}"
    );
    assert!(!m.contains("process=\"chanrecv\""), "{m}");
}

/// A process in a container-like setting: its own mount and PID
/// namespaces, its executable on a tmpfs only that mount namespace sees.
/// The agent finds it by scanning /proc, opens its executable through
/// /proc/PID/exe and proves chanrecv's 10 receivers leaked.
#[test]
fn agent_watches_a_process_in_another_namespace() {
    let Some(_root) = root_guard() else { return };
    let dir = tempfile::tempdir().unwrap();
    let inner = dir.path().join("inner");
    std::fs::create_dir_all(&inner).unwrap();
    // An existing trigger: the fixture plants at once, then holds.
    let trigger = dir.path().join("trigger");
    std::fs::write(&trigger, b"go").unwrap();
    let script = format!(
        "mount -t tmpfs none {0} && cp {1} {0}/agentcontained && exec {0}/agentcontained",
        inner.display(),
        fixture("chanrecv", GO).display()
    );
    let mut ns = Command::new("unshare")
        .args([
            "--mount",
            "--pid",
            "--fork",
            "--mount-proc",
            "--propagation",
            "private",
        ])
        .args(["sh", "-c", &script])
        .env("GOTRACE_TRIGGER", &trigger)
        .env("GOTRACE_HOLD", "100s")
        .stdout(Stdio::piped())
        .spawn_within(RUN_TIMEOUT)
        .expect("unshare");
    let mut out = BufReader::new(ns.stdout.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("planted") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "fixture ended early");
    }
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    assert!(
        !inner.join("agentcontained").exists(),
        "the binary must not be visible outside the namespace"
    );
    let agent = Agent::start(&["--match", "^agentcontained$"]);
    let leaked =
        "gotrace_goroutines_leaked{process=\"agentcontained\",creation_site=\"main.startReceivers ";
    let m = until("10 proven leaks", Duration::from_secs(30), || {
        let m = agent.metrics();
        let sum: f64 = series(&m, leaked)
            .iter()
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum();
        (sum == 10.0).then_some(m)
    });
    assert_eq!(
        value(&m, "gotrace_agent_processes_watched"),
        Some(1.0),
        "{m}"
    );
}

/// The `growth` fixture leaves one goroutine behind per request, 100 a
/// second, at one `go` statement of main.serve: that site's growth gauge
/// rises from one pass to the next.
#[test]
fn agent_sees_a_creation_site_grow() {
    let Some(_root) = root_guard() else { return };
    let _fx = Command::new(fixture("growth", GO))
        .env("GOTRACE_HOLD", "60s")
        .stdout(Stdio::null())
        .spawn_within(RUN_TIMEOUT)
        .expect("start growth");
    let agent = Agent::start(&["--match", "^growth$"]);
    let prefix =
        "gotrace_creation_site_growth_goroutines{process=\"growth\",creation_site=\"main.serve ";
    let growth = || -> Option<f64> {
        let m = agent.metrics();
        series(&m, prefix)
            .iter()
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .reduce(f64::max)
    };
    let first = until("growth of 100", Duration::from_secs(30), || {
        growth().filter(|g| *g >= 100.0)
    });
    let later = until("more growth", Duration::from_secs(10), || {
        growth().filter(|g| *g > first)
    });
    eprintln!("growth at main.serve: {first} then {later}");
}

/// The shipped Prometheus config and alert rules pass promtool, and the
/// rules' unit tests (each alert firing on a recorded series) pass.
#[test]
fn contrib_files_pass_promtool() {
    let contrib = workspace_root().join("contrib");
    let promtool = Path::new("/usr/bin/promtool");
    assert!(
        promtool.is_file(),
        "/usr/bin/promtool missing: run `cargo xtask setup` (Debian's prometheus package ships it)"
    );
    for args in [
        vec!["check", "config", "prometheus.yml"],
        vec!["check", "rules", "gotrace-alerts.yml"],
        vec!["test", "rules", "gotrace-alerts.test.yml"],
    ] {
        let out = Command::new(promtool)
            .args(&args)
            .current_dir(&contrib)
            .output_within(RUN_TIMEOUT)
            .expect("run promtool");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "promtool {args:?}:\n{text}");
        assert!(text.contains("SUCCESS"), "promtool {args:?}:\n{text}");
    }
}

/// Bad arguments: one line and status 1 (or 2 for usage).
#[test]
fn agent_bad_arguments() {
    let out = gotrace(&["agent", "--match", "("]);
    assert_one_line_error(&out, "invalid --match pattern");
    let out = gotrace(&["agent", "--interval", "1ms"]);
    assert_one_line_error(&out, "--interval must be at least 100ms");
    let out = gotrace(&["agent", "--listen", "not-an-address"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}
