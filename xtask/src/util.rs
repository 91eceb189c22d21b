//! Paths and command running shared by every xtask command.
//!
//! Every external command goes through [`run`], [`run_status`], [`capture`]
//! or [`probe`], which print it (with the environment variables we set) before
//! running it.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use anyhow::{Context as _, Result, bail};

/// The workspace root (the parent of this crate's manifest directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
        .to_path_buf()
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` or `<root>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        // Relative paths are taken from the workspace root, where we run cargo.
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
}

/// Where setup installs Go toolchains, caches and the LLVM links.
pub use gotoolchains::tools_dir;

/// Where `cargo install` puts binaries: `$CARGO_INSTALL_ROOT/bin`, else
/// `$CARGO_HOME/bin`, else `~/.cargo/bin`.
pub fn cargo_bin_dir() -> PathBuf {
    let nonempty = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(root) = nonempty("CARGO_INSTALL_ROOT") {
        return PathBuf::from(root).join("bin");
    }
    if let Some(cargo_home) = nonempty("CARGO_HOME") {
        return PathBuf::from(cargo_home).join("bin");
    }
    home().join(".cargo/bin")
}

/// `$PATH` with [`cargo_bin_dir`] prepended when it is missing, so child
/// processes (cargo, aya-build) find `bpf-linker`.
fn path_env() -> OsString {
    let bin = cargo_bin_dir();
    let current = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&current).collect();
    if !dirs.contains(&bin) {
        dirs.insert(0, bin);
    }
    std::env::join_paths(dirs).unwrap_or(current)
}

/// A command with `PATH` fixed up (see [`path_env`]).
pub fn cmd(program: impl AsRef<OsStr>) -> Command {
    let mut c = Command::new(program);
    c.env("PATH", path_env());
    c
}

/// `cargo` run from the workspace root.
pub fn cargo() -> Command {
    let mut c = cmd("cargo");
    c.current_dir(workspace_root());
    c
}

fn quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:+,@%".contains(c))
    {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Shell-like rendering: `ENV=.. program args`, without our `PATH` fix-up.
pub fn describe(c: &Command) -> String {
    let mut parts: Vec<String> = c
        .get_envs()
        .filter(|(k, _)| *k != "PATH")
        .filter_map(|(k, v)| Some(format!("{}={}", k.to_string_lossy(), quote(v?))))
        .collect();
    parts.push(quote(c.get_program()));
    parts.extend(c.get_args().map(quote));
    parts.join(" ")
}

pub fn announce(c: &Command) {
    match c.get_current_dir() {
        Some(dir) if dir != workspace_root() => {
            println!("+ (cd {}) {}", dir.display(), describe(c))
        }
        _ => println!("+ {}", describe(c)),
    }
}

/// Runs `c` with inherited stdio; fails unless it exits successfully.
pub fn run(c: &mut Command) -> Result<()> {
    let status = run_status(c)?;
    if !status.success() {
        bail!("command `{}` failed: {status}", describe(c));
    }
    Ok(())
}

/// Runs `c` with inherited stdio and returns its exit status; fails only when
/// it cannot be started.
pub fn run_status(c: &mut Command) -> Result<ExitStatus> {
    announce(c);
    c.status()
        .with_context(|| format!("could not start `{}`", describe(c)))
}

/// Runs `c` and returns its stdout; fails (with its stderr) unless it exits
/// successfully.
pub fn capture(c: &mut Command) -> Result<String> {
    announce(c);
    let out = c
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not start `{}`", describe(c)))?;
    if !out.status.success() {
        bail!(
            "command `{}` failed: {}\n{}",
            describe(c),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Like [`capture`], for checks: `None` when `c` cannot start or fails.
pub fn probe(c: &mut Command) -> Option<String> {
    announce(c);
    let out = c.stdin(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Effective user id, from `/proc/self/status`.
fn euid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Fails unless running as root: attaching uprobes needs CAP_BPF/CAP_PERFMON.
pub fn require_root(what: &str) -> Result<()> {
    match euid() {
        Some(0) => Ok(()),
        Some(uid) => {
            bail!("{what} needs root (uprobes): run it with sudo -E (running as uid {uid})")
        }
        None => bail!("{what} needs root (uprobes): could not read the effective uid"),
    }
}

/// `ok (already installed): ...`
pub fn skipped(what: impl std::fmt::Display) {
    println!("ok (already installed): {what}");
}

/// `installing ...`
pub fn installing(what: impl std::fmt::Display) {
    println!("installing {what}");
}
