//! `cargo xtask demo`: traces the `leakyservice` fixture and prints the leak
//! report.

use anyhow::{Result, bail};

use crate::build::build;
use crate::setup::{ensure_bpf_linker, ensure_go, ensure_nightly, go_env, newest_go};
use crate::util::{cmd, require_root, run, run_status, target_dir, workspace_root};

/// gotrace's exit status when it found leak suspects.
const EXIT_LEAKS_FOUND: i32 = 3;

pub fn demo() -> Result<()> {
    require_root("cargo xtask demo")?;
    ensure_nightly()?;
    ensure_bpf_linker()?;
    let version = newest_go();
    let go = ensure_go(version)?;
    let gotrace = build()?;

    let out_dir = target_dir().join("demo");
    std::fs::create_dir_all(&out_dir)?;
    let service = out_dir.join("leakyservice");
    let mut go_build = cmd(&go);
    go_build
        .args(["build", "-o"])
        .arg(&service)
        .arg("./leakyservice")
        .current_dir(workspace_root().join("tests/fixtures"));
    go_env(&mut go_build, version);
    run(&mut go_build)?;

    let mut trace = cmd(&gotrace);
    trace
        .args(["--leak-threshold", "2s", "-o"])
        .arg(&out_dir)
        .arg("--")
        .arg(&service)
        .current_dir(workspace_root());
    let status = run_status(&mut trace)?;
    match status.code() {
        Some(0) => println!("gotrace found no leak suspects (exit 0)"),
        Some(EXIT_LEAKS_FOUND) => {
            println!("gotrace found leak suspects (exit {EXIT_LEAKS_FOUND}, as expected)")
        }
        _ => bail!("gotrace failed: {status} (expected exit 0 or {EXIT_LEAKS_FOUND})"),
    }
    let report = out_dir.join("report.json");
    let shown = report
        .strip_prefix(workspace_root())
        .unwrap_or(&report)
        .to_path_buf();
    println!("demo report: {}", shown.display());
    Ok(())
}
