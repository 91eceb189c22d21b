//! End-to-end test harness: builds the Go fixtures under `tests/fixtures` with
//! real Go toolchains, runs them under the real `gotrace` binary (uprobes,
//! ring buffer and all) and hands back the parsed `report.json`.
//!
//! These tests need root (CAP_BPF, CAP_PERFMON): without it they skip with a
//! message, except under `CI=true` where they fail. They are serialised: one
//! traced program at a time keeps timings honest on a 2-core machine.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::Value;

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

/// Root gate + serialisation. Returns None (test should return) when not
/// root outside CI.
pub fn root_guard() -> Option<MutexGuard<'static, ()>> {
    static LOCK: Mutex<()> = Mutex::new(());
    // SAFETY: trivial libc call.
    if unsafe { libc::geteuid() } != 0 {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("end-to-end tests must run as root in CI (they attach real uprobes)");
        }
        eprintln!("skipping: end-to-end tests need root (run `sudo cargo xtask test`)");
        return None;
    }
    Some(LOCK.lock().unwrap_or_else(|e| e.into_inner()))
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

/// Tools directory (`$GOTRACE_TOOLS`, default `~/.cache/gotrace`), where
/// `cargo xtask setup` installs Go toolchains as `go-<version>/`.
pub fn tools_dir() -> PathBuf {
    std::env::var_os("GOTRACE_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                .join(".cache/gotrace")
        })
}

/// `go` of the newest installed toolchain for `minor` ("1.26").
pub fn go_for(minor: &str) -> PathBuf {
    let prefix = format!("go-{minor}.");
    let mut found: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir(tools_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let rest = name.strip_prefix(&prefix)?;
            let go = e.path().join("bin/go");
            go.exists()
                .then(|| (rest.split('.').filter_map(|p| p.parse().ok()).collect(), go))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, go)) => go,
        None => panic!(
            "Go {minor} not installed in {}: run `cargo xtask setup`",
            tools_dir().display()
        ),
    }
}

/// `go build` with Go `minor`, run in `tests/fixtures`, with the environment
/// `cargo xtask setup` warmed the caches for (offline, per-version GOCACHE).
pub fn go_build(minor: &str) -> Command {
    let tools = tools_dir();
    let mut c = Command::new(go_for(minor));
    c.arg("build")
        .current_dir(workspace_root().join("tests/fixtures"))
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .env("GOFLAGS", "-buildvcs=false")
        .env("GOCACHE", tools.join(format!("gocache-{minor}")))
        .env("GOPATH", tools.join("gopath"));
    c
}

/// Builds fixture `name` with Go `minor` once per test process.
pub fn fixture(name: &str, minor: &str) -> PathBuf {
    fixture_variant(name, minor, "default", &[])
}

/// Builds fixture `name` with Go `minor` and extra `go build` arguments
/// (`-buildmode=pie`, `-trimpath`, ...), cached per `variant` name.
pub fn fixture_variant(name: &str, minor: &str, variant: &str, args: &[&str]) -> PathBuf {
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
        .args(args)
        .arg("-o")
        .arg(&out)
        .arg(format!("./{name}"))
        .output()
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
    let dir = out_dir(&bin.file_name().unwrap().to_string_lossy());
    let out = Command::new(gotrace_bin())
        .args(args)
        .arg("-o")
        .arg(&dir)
        .arg("--")
        .arg(bin)
        .env("GOTRACE_HOLD", hold)
        .stdin(Stdio::null())
        .output()?;
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

struct KillOnDrop(Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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
    let dir = out_dir(&format!(
        "pid-{}",
        bin.file_name().unwrap().to_string_lossy()
    ));
    let trigger = dir.join("trigger");
    let mut fixture = KillOnDrop(
        Command::new(bin)
            .env("GOTRACE_TRIGGER", &trigger)
            .env("GOTRACE_HOLD", hold)
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()?,
    );
    let _siblings: Vec<KillOnDrop> = (0..siblings)
        .map(|_| {
            Command::new(bin)
                .env("GOTRACE_TRIGGER", &trigger)
                .env("GOTRACE_HOLD", hold)
                .stdout(Stdio::null())
                .stdin(Stdio::null())
                .spawn()
                .map(KillOnDrop)
        })
        .collect::<Result<_, _>>()?;
    let mut fixture_out = BufReader::new(fixture.0.stdout.take().expect("stdout"));
    let mut fixture_stdout = String::new();
    wait_for_line(
        &mut fixture_out,
        "waiting for trigger",
        Duration::from_secs(20),
        &mut fixture_stdout,
    )?;

    let mut gotrace = Command::new(gotrace_bin())
        .args(args)
        .arg("-o")
        .arg(&dir)
        .arg("--pid")
        .arg(fixture.0.id().to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()?;
    let mut err = BufReader::new(gotrace.stderr.take().expect("stderr"));
    let mut gotrace_stderr = String::new();
    wait_for_line(
        &mut err,
        "attached",
        Duration::from_secs(30),
        &mut gotrace_stderr,
    )?;
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

/// `gotrace ARGS` with no stdin, to completion.
pub fn gotrace(args: &[&str]) -> Output {
    Command::new(gotrace_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
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
    child: KillOnDrop,
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
        self.child.0.try_wait().is_ok_and(|s| s.is_none())
    }
}

/// Starts `bin` with `env` and waits (up to `timeout`) until it waits for
/// its trigger.
pub fn hold_fixture(bin: &Path, env: &[(&str, &str)], timeout: Duration) -> anyhow::Result<Held> {
    let dir = out_dir(&format!(
        "held-{}",
        bin.file_name().unwrap().to_string_lossy()
    ));
    let mut child = KillOnDrop(
        Command::new(bin)
            .env("GOTRACE_TRIGGER", dir.join("never"))
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()?,
    );
    let mut out = BufReader::new(child.0.stdout.take().expect("stdout"));
    let mut stdout = String::new();
    wait_for_line(&mut out, "waiting for trigger", timeout, &mut stdout)?;
    // Keep draining its stdout so it never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let pid = child.0.id();
    Ok(Held { child, pid, stdout })
}

/// Go toolchains every end-to-end fixture test runs against (`cargo xtask
/// setup` installs them).
pub const GO_VERSIONS: [&str; 6] = ["1.19", "1.21", "1.23", "1.25", "1.26", "1.27"];

/// One test module per Go version (`go1_19::name`, ... `go1_27::name`), each
/// test calling `name("1.xx")` under the root guard.
#[macro_export]
macro_rules! per_go_version {
    ($($name:ident),* $(,)?) => {
        $crate::per_go_version!(@versions [$($name),*]
            go1_19 "1.19", go1_21 "1.21", go1_23 "1.23", go1_25 "1.25", go1_26 "1.26", go1_27 "1.27");
    };
    (@versions $names:tt $($module:ident $version:literal),*) => {
        $( $crate::per_go_version!(@one $module $version $names); )*
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
}
