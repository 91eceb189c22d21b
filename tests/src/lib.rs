//! End-to-end test harness: builds the Go fixtures under `tests/fixtures` with
//! real Go toolchains, runs them under the real `gotrace` binary (uprobes,
//! ring buffer and all) and hands back the parsed `report.json`.
//!
//! These tests need root (CAP_BPF, CAP_PERFMON). Without it they fail with a
//! one-line message, unless `GOTRACE_SKIP_E2E=1` asks to skip them: then
//! each says it skipped and is listed in `$GOTRACE_SKIP_LOG` (which `cargo
//! xtask test` counts as skipped, libtest having no runtime skip). Under
//! `CI=true` they always fail without root. They are serialised: one traced
//! program at a time keeps timings honest on a 2-core machine.
//!
//! Every process a test starts runs under a deadline ([`CommandExt`]): a hung
//! gotrace, fixture or `go build` fails its test with its stderr instead of
//! hanging the run.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::Value;

pub mod prometheus;

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Root gate + serialisation. Without root: panics with one line, or, when
/// `GOTRACE_SKIP_E2E=1` (and not `CI=true`), records the skip (see
/// [`record_skip`]) and returns None: the test must return at once.
pub fn root_guard() -> Option<MutexGuard<'static, ()>> {
    static LOCK: Mutex<()> = Mutex::new(());
    // SAFETY: trivial libc call.
    if unsafe { libc::geteuid() } != 0 {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        let skip = std::env::var("GOTRACE_SKIP_E2E").is_ok_and(|v| v == "1");
        if ci || !skip {
            panic!(
                "end-to-end test needs root (it attaches real uprobes): run it as root \
                 (`sudo -E cargo xtask test`){}",
                if ci {
                    " (CI=true: no skipping)"
                } else {
                    ", or set GOTRACE_SKIP_E2E=1 to skip it"
                }
            );
        }
        record_skip("needs root");
        return None;
    }
    Some(LOCK.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Says that the current test skipped (on stderr, and as a line
/// `<test> <why>` appended to `$GOTRACE_SKIP_LOG` when set), so a skip is
/// never counted as a pass.
pub fn record_skip(why: &str) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("?");
    eprintln!("SKIPPED {test}: {why}");
    if let Some(log) = std::env::var_os("GOTRACE_SKIP_LOG") {
        let line = format!("{test} {why}\n");
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = written {
            panic!(
                "cannot record the skip in {}: {e}",
                Path::new(&log).display()
            );
        }
    }
}

/// How long a traced run (gotrace and its target, or any helper command)
/// may take before it is killed and its test fails.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a `go build` may take (cold caches, cgo, a busy 2-core machine).
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(600);

/// Deadlines for the processes tests start. The child runs in a process
/// group of its own, so that what it started (gotrace's target) is killed
/// with it.
pub trait CommandExt {
    /// Like [`Command::output`] (stdin null, stdout and stderr captured),
    /// but the command is killed after `timeout`, failing the test with its
    /// stderr.
    fn output_within(&mut self, timeout: Duration) -> std::io::Result<Output>;
    /// Like [`Command::spawn`], with a watchdog killing the process group
    /// after `timeout`; the [`Spawned`] kills it when dropped, too.
    fn spawn_within(&mut self, timeout: Duration) -> std::io::Result<Spawned>;
}

impl CommandExt for Command {
    fn output_within(&mut self, timeout: Duration) -> std::io::Result<Output> {
        let mut child = self
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn_within(timeout)?;
        let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                if let Some(mut p) = pipe {
                    let _ = p.read_to_end(&mut buf);
                }
                buf
            })
        };
        let out = drain(child.stdout.take().map(|p| Box::new(p) as _));
        let err = drain(child.stderr.take().map(|p| Box::new(p) as _));
        let status = child.reap()?;
        let (stdout, stderr) = (out.join().unwrap(), err.join().unwrap());
        child.fail_if_timed_out(&String::from_utf8_lossy(&stderr));
        Ok(Output {
            status,
            stdout,
            stderr,
        })
    }

    fn spawn_within(&mut self, timeout: Duration) -> std::io::Result<Spawned> {
        use std::os::unix::process::CommandExt as _;
        self.process_group(0);
        let what = format!("{:?}", self);
        let child = self.spawn()?;
        let watch = Arc::new(Watch::default());
        let (pid, w, killed) = (child.id() as i32, watch.clone(), what.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + timeout;
            while Instant::now() < deadline {
                if w.done.load(Ordering::Acquire) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if !w.done.load(Ordering::Acquire) {
                w.timed_out.store(true, Ordering::Release);
                eprintln!("gotrace-e2e: killing {killed}: still running after {timeout:?}");
                kill_group(pid);
            }
        });
        Ok(Spawned {
            child: Some(child),
            watch,
            timeout,
            what,
        })
    }
}

#[derive(Default)]
struct Watch {
    done: AtomicBool,
    timed_out: AtomicBool,
}

/// SIGKILL to the process group `pid` leads (or to `pid` alone when it
/// leads none).
fn kill_group(pid: i32) {
    // SAFETY: signalling processes this test started.
    unsafe {
        if libc::kill(-pid, libc::SIGKILL) != 0 {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

/// A child with a deadline (see [`CommandExt::spawn_within`]); it derefs to
/// the [`Child`] and kills its process group when dropped.
pub struct Spawned {
    /// None once [`Spawned::wait_with_output`] took it.
    child: Option<Child>,
    watch: Arc<Watch>,
    timeout: Duration,
    /// The command, for the timeout message.
    what: String,
}

impl std::ops::Deref for Spawned {
    type Target = Child;
    fn deref(&self) -> &Child {
        self.child.as_ref().expect("child already waited for")
    }
}

impl std::ops::DerefMut for Spawned {
    fn deref_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("child already waited for")
    }
}

impl Spawned {
    fn reap(&mut self) -> std::io::Result<ExitStatus> {
        let status = std::ops::DerefMut::deref_mut(self).wait();
        self.watch.done.store(true, Ordering::Release);
        status
    }

    fn fail_if_timed_out(&self, stderr: &str) {
        if self.watch.timed_out.load(Ordering::Acquire) {
            panic!(
                "timed out: {} killed after {:?}; its stderr:\n{stderr}",
                self.what, self.timeout
            );
        }
    }

    /// Waits for the exit; fails the test (with the stderr, when piped and
    /// not taken) if the watchdog killed it.
    pub fn wait(&mut self) -> std::io::Result<ExitStatus> {
        let status = self.reap()?;
        let mut stderr = String::new();
        if let Some(e) = std::ops::DerefMut::deref_mut(self).stderr.as_mut() {
            let _ = e.read_to_string(&mut stderr);
        }
        self.fail_if_timed_out(&stderr);
        Ok(status)
    }

    /// Like [`Child::wait_with_output`]; fails the test (with the stderr) if
    /// the watchdog killed it.
    pub fn wait_with_output(mut self) -> std::io::Result<Output> {
        let child = self.child.take().expect("child already waited for");
        let out = child.wait_with_output();
        self.watch.done.store(true, Ordering::Release);
        let out = out?;
        self.fail_if_timed_out(&String::from_utf8_lossy(&out.stderr));
        Ok(out)
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut()
            && !self.watch.done.swap(true, Ordering::AcqRel)
        {
            kill_group(child.id() as i32);
            let _ = child.wait();
        }
    }
}

/// The `gotrace` binary: `$GOTRACE_BIN`, or built once with cargo.
pub fn gotrace_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("GOTRACE_BIN") {
            // Relative paths are taken from the workspace root.
            return workspace_root().join(p);
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .args(["build", "--release", "-p", "tracer", "--bin", "gotrace"])
            .current_dir(workspace_root())
            .status()
            .expect("run cargo build");
        assert!(st.success(), "building gotrace failed");
        target_dir().join("release/gotrace")
    })
    .clone()
}

pub use gotoolchains::tools_dir;

/// `go` of the newest installed toolchain for `minor` ("1.26").
pub fn go_for(minor: &str) -> PathBuf {
    gotoolchains::find_go(minor).unwrap_or_else(|| {
        panic!(
            "Go {minor} not installed in {}: run `cargo xtask setup`",
            tools_dir().display()
        )
    })
}

/// `go build` with Go `minor`, run in `tests/fixtures`, with the environment
/// `cargo xtask setup` warmed the caches for (offline, per-version GOCACHE).
pub fn go_build(minor: &str) -> Command {
    let mut c = Command::new(go_for(minor));
    gotoolchains::go_env(&mut c, minor)
        .arg("build")
        .current_dir(workspace_root().join("tests/fixtures"));
    c
}

/// `go` of Go `minor` with the tests' environment (for `go tool ...`).
pub fn go_tool(minor: &str) -> Command {
    let mut c = Command::new(go_for(minor));
    gotoolchains::go_env(&mut c, minor);
    c
}

/// Builds fixture `name` with Go `minor` once per test process.
pub fn fixture(name: &str, minor: &str) -> PathBuf {
    fixture_variant(name, minor, "default", &[])
}

/// Builds fixture `name` with Go `minor` and extra `go build` arguments
/// (`-buildmode=pie`, `-trimpath`, ...), cached per `variant` name.
pub fn fixture_variant(name: &str, minor: &str, variant: &str, args: &[&str]) -> PathBuf {
    fixture_build(name, minor, variant, args, &[])
}

/// [`fixture_variant`] with extra environment for `go build` (such as
/// `GOEXPERIMENT`); `variant` must name the combination, it keys the cache.
pub fn fixture_build(
    name: &str,
    minor: &str,
    variant: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<(String, String), PathBuf>>> = OnceLock::new();
    let mut built = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let key = (name.to_string(), format!("{minor}/{variant}"));
    if let Some(p) = built.get(&key) {
        return p.clone();
    }
    let dir = if variant == "default" {
        minor.to_string()
    } else {
        format!("{minor}-{variant}")
    };
    let out = target_dir().join("e2e-fixtures").join(dir).join(name);
    let output = go_build(minor)
        .envs(env.iter().copied())
        .args(args)
        .arg("-o")
        .arg(&out)
        .arg(format!("./{name}"))
        .output_within(BUILD_TIMEOUT)
        .expect("run go build");
    assert!(
        output.status.success(),
        "go build {name} with Go {minor} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    built.insert(key, out.clone());
    out
}

/// What one traced run produced.
pub struct Traced {
    pub report: Value,
    pub exit_code: Option<i32>,
    pub gotrace_stdout: String,
    pub gotrace_stderr: String,
    /// The fixture's stdout (its `planted` / `spawned` lines).
    pub fixture_stdout: String,
}

impl Traced {
    /// `spawned <what> <N>` / `planted <what> <N>` from the fixture.
    pub fn fixture_count(&self, verb: &str, what: &str) -> u64 {
        let prefix = format!("{verb} {what} ");
        self.fixture_stdout
            .lines()
            .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "fixture printed no `{prefix}N` line:\n{}",
                    self.fixture_stdout
                )
            })
    }

    pub fn suspects(&self) -> &Vec<Value> {
        self.report["suspects"].as_array().expect("suspects array")
    }

    /// Suspect groups whose goroutines run `start_function`.
    pub fn suspects_running(&self, start_function: &str) -> Vec<&Value> {
        self.suspects()
            .iter()
            .filter(|g| g["start_function"] == start_function)
            .collect()
    }

    pub fn growth_of(&self, start_function: &str) -> &Value {
        self.report["growth"]
            .as_array()
            .expect("growth array")
            .iter()
            .find(|g| g["start_function"] == start_function)
            .unwrap_or_else(|| {
                panic!(
                    "no growth entry for {start_function}: {:#}",
                    self.report["growth"]
                )
            })
    }
}

fn out_dir(tag: &str) -> PathBuf {
    let d = target_dir()
        .join("e2e-out")
        .join(format!("{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create output dir");
    d
}

fn read_report(dir: &Path, out: &Output) -> anyhow::Result<Value> {
    let path = dir.join("report.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "no report at {} (gotrace exit {:?})\nstderr:\n{}",
            path.display(),
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    Ok(serde_json::from_str(&text)?)
}

/// `gotrace [args] -- FIXTURE` with `GOTRACE_HOLD=hold`.
pub fn trace_command(bin: &Path, hold: &str, args: &[&str]) -> anyhow::Result<Traced> {
    trace_command_env(bin, &[("GOTRACE_HOLD", hold)], args)
}

/// `gotrace [args] -- FIXTURE` with `env` added to the environment (the
/// fixture inherits it).
pub fn trace_command_env(
    bin: &Path,
    env: &[(&str, &str)],
    args: &[&str],
) -> anyhow::Result<Traced> {
    let dir = out_dir(&bin.file_name().unwrap().to_string_lossy());
    let out = Command::new(gotrace_bin())
        .args(args)
        .arg("-o")
        .arg(&dir)
        .arg("--")
        .arg(bin)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output_within(RUN_TIMEOUT)?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    Ok(Traced {
        report: read_report(&dir, &out)?,
        exit_code: out.status.code(),
        // The fixture shares gotrace's stdout in command mode.
        fixture_stdout: stdout.clone(),
        gotrace_stdout: stdout,
        gotrace_stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

fn wait_for_line(
    reader: &mut impl BufRead,
    needle: &str,
    timeout: Duration,
    seen: &mut String,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut line = String::new();
    while start.elapsed() < timeout {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            bail!("stream ended before {needle:?}; got:\n{seen}");
        }
        seen.push_str(&line);
        if line.contains(needle) {
            return Ok(());
        }
    }
    bail!("timed out waiting for {needle:?}; got:\n{seen}")
}

/// Starts the fixture first (held at its trigger), attaches `gotrace --pid`,
/// then pulls the trigger so the leaks are planted while traced.
pub fn trace_pid(bin: &Path, hold: &str, args: &[&str]) -> anyhow::Result<Traced> {
    trace_pid_with_siblings(bin, hold, args, 0)
}

/// Like [`trace_pid`], with `siblings` more instances of the same binary
/// running (and leaking on the same trigger) untraced beside the target.
pub fn trace_pid_with_siblings(
    bin: &Path,
    hold: &str,
    args: &[&str],
    siblings: usize,
) -> anyhow::Result<Traced> {
    trace_pid_with(bin, hold, args, siblings, &[])
}

/// Like [`trace_pid`], the fixture started with `env` too.
pub fn trace_pid_env(
    bin: &Path,
    hold: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> anyhow::Result<Traced> {
    trace_pid_with(bin, hold, args, 0, env)
}

fn trace_pid_with(
    bin: &Path,
    hold: &str,
    args: &[&str],
    siblings: usize,
    env: &[(&str, &str)],
) -> anyhow::Result<Traced> {
    let dir = out_dir(&format!(
        "pid-{}",
        bin.file_name().unwrap().to_string_lossy()
    ));
    let trigger = dir.join("trigger");
    let mut fixture = Command::new(bin)
        .env("GOTRACE_TRIGGER", &trigger)
        .env("GOTRACE_HOLD", hold)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn_within(RUN_TIMEOUT)?;
    let _siblings: Vec<Spawned> = (0..siblings)
        .map(|_| {
            Command::new(bin)
                .env("GOTRACE_TRIGGER", &trigger)
                .env("GOTRACE_HOLD", hold)
                .stdout(Stdio::null())
                .stdin(Stdio::null())
                .spawn_within(RUN_TIMEOUT)
        })
        .collect::<Result<_, _>>()?;
    let mut fixture_out = BufReader::new(fixture.stdout.take().expect("stdout"));
    let mut fixture_stdout = String::new();
    wait_for_line(
        &mut fixture_out,
        "waiting for trigger",
        Duration::from_secs(20),
        &mut fixture_stdout,
    )?;

    let (gotrace, mut err, mut gotrace_stderr) = attach_pid(args, &dir, fixture.id())?;
    std::fs::write(&trigger, b"go")?;
    let err_thread = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut rest);
        rest
    });
    let fixture_thread = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut fixture_out, &mut rest);
        rest
    });
    let out = gotrace.wait_with_output()?;
    gotrace_stderr.push_str(&err_thread.join().unwrap_or_default());
    drop(fixture); // kills it if gotrace stopped first (--duration)
    fixture_stdout.push_str(&fixture_thread.join().unwrap_or_default());
    Ok(Traced {
        report: read_report(&dir, &out)?,
        exit_code: out.status.code(),
        gotrace_stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        gotrace_stderr,
        fixture_stdout,
    })
}

/// `gotrace [args] -o DIR --pid PID` (within [`RUN_TIMEOUT`]), once it
/// says "attached" (30 s at most): the process, its stderr and what it
/// printed there so far.
fn attach_pid(
    args: &[&str],
    dir: &Path,
    pid: u32,
) -> anyhow::Result<(Spawned, BufReader<std::process::ChildStderr>, String)> {
    let mut gotrace = Command::new(gotrace_bin())
        .args(args)
        .arg("-o")
        .arg(dir)
        .arg("--pid")
        .arg(pid.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .spawn_within(RUN_TIMEOUT)?;
    let mut err = BufReader::new(gotrace.stderr.take().expect("stderr"));
    let mut printed = String::new();
    wait_for_line(&mut err, "attached", Duration::from_secs(30), &mut printed)?;
    Ok((gotrace, err, printed))
}

/// `gotrace [args] --pid PID` on a process the test runs (not a fixture):
/// `then` runs once the probes are attached, while the trace goes on
/// (`args` should end it, e.g. with --duration).
pub fn trace_running(pid: u32, args: &[&str], then: impl FnOnce()) -> anyhow::Result<Traced> {
    let dir = out_dir(&format!("running-{pid}"));
    let (gotrace, mut err, mut gotrace_stderr) = attach_pid(args, &dir, pid)?;
    then();
    let err_thread = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut rest);
        rest
    });
    let out = gotrace.wait_with_output()?;
    gotrace_stderr.push_str(&err_thread.join().unwrap_or_default());
    Ok(Traced {
        report: read_report(&dir, &out)?,
        exit_code: out.status.code(),
        gotrace_stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        gotrace_stderr,
        fixture_stdout: String::new(),
    })
}

/// `gotrace ARGS` with no stdin, to completion (within [`RUN_TIMEOUT`]).
pub fn gotrace(args: &[&str]) -> Output {
    Command::new(gotrace_bin())
        .args(args)
        .stdin(Stdio::null())
        .output_within(RUN_TIMEOUT)
        .expect("run gotrace")
}

/// Exit status 1 and exactly one line on stderr, containing `needle`.
pub fn assert_one_line_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got:\n{stderr}");
    assert!(lines[0].starts_with("gotrace: error: "), "{stderr}");
    assert!(lines[0].contains(needle), "{needle:?} not in {stderr}");
}

/// A fixture started with a trigger that is never pulled: it planted what
/// it plants before the trigger and waits. Killed when dropped.
pub struct Held {
    child: Spawned,
    pub pid: u32,
    /// Its stdout up to and including "waiting for trigger".
    pub stdout: String,
}

impl Held {
    /// The value of the fixture's `<name> <N>` line.
    pub fn count(&self, name: &str) -> u64 {
        let prefix = format!("{name} ");
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("fixture printed no `{prefix}N` line:\n{}", self.stdout))
    }

    /// Whether it still runs.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().is_ok_and(|s| s.is_none())
    }
}

/// Starts `bin` with `env` and waits (up to `timeout`) until it waits for
/// its trigger.
pub fn hold_fixture(bin: &Path, env: &[(&str, &str)], timeout: Duration) -> anyhow::Result<Held> {
    let dir = out_dir(&format!(
        "held-{}",
        bin.file_name().unwrap().to_string_lossy()
    ));
    let mut child = Command::new(bin)
        .env("GOTRACE_TRIGGER", dir.join("never"))
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn_within(RUN_TIMEOUT)?;
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut stdout = String::new();
    wait_for_line(&mut out, "waiting for trigger", timeout, &mut stdout)?;
    // Keep draining its stdout so it never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let pid = child.id();
    Ok(Held { child, pid, stdout })
}

/// `v[key]` as an array (a report list); panics with the value otherwise.
pub fn list<'a>(v: &'a Value, key: &str) -> &'a Vec<Value> {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key} is not an array: {v:#}"))
}

/// Whether the report's leak proof ran (`proof.status` "done"): the
/// context and ticker verdicts need it.
pub fn proof_done(report: &Value) -> bool {
    report["proof"]["status"] == "done"
}

/// The context leak group created in `function`, with `n` contexts, when
/// the leak proof ran; otherwise (a command that exited before anything
/// could read its memory) at least `n` contexts never cancelled counted
/// undecided and no leak group at all, and None. Either way exact: what
/// cannot be decided is never a finding nor silently dropped.
pub fn context_leak<'a>(report: &'a Value, function: &str, n: u64) -> Option<&'a Value> {
    let c = &report["contexts"];
    if !proof_done(report) {
        assert!(list(c, "leaks").is_empty(), "{c:#}");
        let undecided = c["never_cancelled"]["undecided"]["count"].as_u64().unwrap();
        assert!(undecided >= n, "{:#}", c["never_cancelled"]);
        return None;
    }
    let leak = list(c, "leaks")
        .iter()
        .find(|l| func(&l["created_at"]) == function)
        .unwrap_or_else(|| panic!("no leak created in {function}: {c:#}"));
    assert_eq!(leak["count"], n, "{leak:#}");
    Some(leak)
}

/// A report frame's function name ("" for null).
pub fn func(frame: &Value) -> &str {
    frame["function"].as_str().unwrap_or("")
}

/// The Go minors every end-to-end fixture test runs against, oldest first:
/// those of `gotoolchains::GO_VERSIONS`, which `cargo xtask setup` installs.
pub fn go_minors() -> Vec<&'static str> {
    gotoolchains::minors()
}

/// One test module per Go version (`go1_19::name`, ... `go1_27::name`), each
/// test calling `name("1.xx")` under the root guard. `per_go_version!(@list)`
/// is the array of versions (a unit test checks it against [`go_minors`]; a
/// macro cannot read that list).
#[macro_export]
macro_rules! per_go_version {
    (@all $what:tt) => {
        $crate::per_go_version! { @expand $what
            go1_19 "1.19", go1_21 "1.21", go1_22 "1.22", go1_23 "1.23", go1_24 "1.24",
            go1_25 "1.25", go1_26 "1.26", go1_27 "1.27"
        }
    };
    (@list) => {
        $crate::per_go_version! { @all [list] }
    };
    (@expand [list] $($module:ident $version:literal),*) => {
        [$($version),*]
    };
    (@expand [tests $names:tt] $($module:ident $version:literal),*) => {
        $( $crate::per_go_version! { @one $module $version $names } )*
    };
    (@one $module:ident $version:literal [$($name:ident),*]) => {
        mod $module {
            $(
                #[test]
                fn $name() {
                    if let Some(_guard) = $crate::root_guard() {
                        super::$name($version)
                    }
                }
            )*
        }
    };
    ($($name:ident),* $(,)?) => {
        $crate::per_go_version! { @all [tests [$($name),*]] }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_within_returns_the_output() {
        let out = Command::new("sh")
            .args(["-c", "echo out; echo err >&2; exit 3"])
            .output_within(Duration::from_secs(10))
            .unwrap();
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(
            (&out.stdout[..], &out.stderr[..]),
            (&b"out\n"[..], &b"err\n"[..])
        );
    }

    #[test]
    #[should_panic(expected = "killed after 300ms; its stderr:\nstarted")]
    fn a_hung_command_fails_with_its_stderr() {
        let _ = Command::new("sh")
            .args(["-c", "echo started >&2; sleep 30"])
            .output_within(Duration::from_millis(300));
    }

    #[test]
    fn a_spawned_group_is_killed_when_dropped() {
        let child = Command::new("sh")
            .args(["-c", "sleep 30 & wait"])
            .spawn_within(Duration::from_secs(60))
            .unwrap();
        let pgid = child.id() as i32;
        drop(child);
        // SAFETY: probing a process group this test started.
        let alive = || unsafe { libc::kill(-pgid, 0) } == 0;
        // The orphaned `sleep` is reaped by init a moment later.
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!alive(), "process group {pgid} survived");
    }

    #[test]
    fn per_go_version_runs_every_installed_version() {
        assert_eq!(per_go_version!(@list).to_vec(), go_minors());
    }
}
