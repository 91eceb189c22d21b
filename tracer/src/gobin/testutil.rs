//! Building the Go programs of `tracer/testdata` with the toolchains
//! `cargo xtask setup` installs (see the `gotoolchains` crate), for the unit
//! tests and the `fuzz_seeds` example. Test-only: compiled under `cfg(test)`
//! or the `fuzzing` feature.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;

pub use gotoolchains::{find_go, tools_dir};

/// "1.26.6" for `$GOTRACE_TOOLS/go-1.26.6/bin/go`, else "unknown".
fn toolchain_version(go: &Path) -> String {
    go.parent()
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("go-"))
        .unwrap_or("unknown")
        .to_string()
}

/// Runs `go build <extra_args> -o <out> .` in `src_dir` with a hermetic
/// environment (local toolchain, no module proxy, per-version build cache).
pub fn build_go(go: &Path, src_dir: &Path, out: &Path, extra_args: &[&str]) -> Result<(), String> {
    build_go_env(go, src_dir, out, extra_args, &[])
}

/// Like [`build_go`], with extra environment variables (e.g. `GOARCH`).
pub fn build_go_env(
    go: &Path,
    src_dir: &Path,
    out: &Path,
    extra_args: &[&str],
    env: &[(&str, &str)],
) -> Result<(), String> {
    let version = toolchain_version(go);
    let mut build = Command::new(go);
    let output = gotoolchains::go_env(&mut build, &version)
        .arg("build")
        .args(extra_args)
        .arg("-o")
        .arg(out)
        .arg(".")
        .current_dir(src_dir)
        .envs(env.iter().copied())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", go.display()))?;
    if !output.status.success() {
        return Err(format!(
            "{} build in {} failed ({}):\n{}",
            go.display(),
            src_dir.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(())
}

/// `tracer/testdata`.
pub fn testdata_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata")
}

/// Where built test binaries are cached: `$CARGO_TARGET_TMPDIR` if set at
/// run time, else `<tmp>/gotrace-testbin`.
pub fn testbin_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_TMPDIR").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("gotrace-testbin"),
        None => std::env::temp_dir().join("gotrace-testbin"),
    }
}

/// How to build a test program.
#[derive(Clone, Copy, Debug, Default)]
pub struct BuildOpts<'a> {
    /// Extra `go build` arguments, e.g. `["-ldflags=-s -w"]`.
    pub args: &'a [&'a str],
    /// Extra environment, e.g. `[("GOARCH", "arm64"), ("CGO_ENABLED", "0")]`.
    pub env: &'a [(&'a str, &'a str)],
}

/// Builds `tracer/testdata/<program>` with the newest installed Go
/// `<minor>.*` toolchain and returns the binary's path. The result is cached
/// under [`testbin_dir`], keyed by toolchain, options and source contents, so
/// it is only rebuilt when something changed. Builds go to a temporary name
/// and are renamed into place under a lock file, so concurrent callers
/// (threads or processes) never see partial files nor build twice.
///
/// Fails with "Go <minor> not installed: run `cargo xtask setup`" when the
/// toolchain is missing.
pub fn build_testdata(program: &str, minor: &str, opts: BuildOpts<'_>) -> Result<PathBuf, String> {
    let go = find_go(minor)
        .ok_or_else(|| format!("Go {minor} not installed: run `cargo xtask setup`"))?;
    let src = testdata_dir().join(program);
    let mut hasher = DefaultHasher::new();
    hash_dir(&src, &mut hasher).map_err(|e| format!("cannot read {}: {e}", src.display()))?;
    // The source path is in the binary's DWARF: checkouts in different
    // places must not share a build.
    src.hash(&mut hasher);
    opts.args.hash(&mut hasher);
    opts.env.hash(&mut hasher);
    let version = toolchain_version(&go);
    let dir = testbin_dir();
    let out = dir.join(format!("{program}-go{version}-{:016x}", hasher.finish()));
    if out.is_file() {
        return Ok(out);
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    // Serialize builds between threads and processes (the lock is released
    // when the file is closed).
    let lock_path = dir.join(".build.lock");
    let lock = std::fs::File::create(&lock_path)
        .and_then(|f| f.lock().map(|()| f))
        .map_err(|e| format!("cannot lock {}: {e}", lock_path.display()))?;
    if out.is_file() {
        return Ok(out);
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let tmp = out.with_extension(format!("tmp{}-{nanos}", std::process::id()));
    let result = build_go_env(&go, &src, &tmp, opts.args, opts.env)
        .and_then(|()| std::fs::rename(&tmp, &out).map_err(|e| format!("rename: {e}")));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    drop(lock);
    result.map(|()| out)
}

/// Hashes names and contents of the files under `dir`, in sorted order.
fn hash_dir(dir: &Path, hasher: &mut DefaultHasher) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        entry.file_name().hash(hasher);
        if path.is_dir() {
            hash_dir(&path, hasher)?;
        } else {
            std::fs::read(&path)?.hash(hasher);
        }
    }
    Ok(())
}

/// The probe (`tracer/testdata/probe`) built by Go `<minor>`; panics with
/// the "not installed" message if that toolchain is missing.
pub fn probe(minor: &str) -> PathBuf {
    build_testdata("probe", minor, BuildOpts::default()).unwrap_or_else(|e| panic!("{e}"))
}
