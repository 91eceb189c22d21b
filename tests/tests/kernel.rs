//! `gotrace check`: every eBPF program loads into the running kernel, and
//! none comes near the verifier's complexity limit. The same command runs
//! under Linux 5.10 in `cargo xtask oldkernel`.

use gotrace_e2e::{gotrace, root_guard};

/// Share of the verifier's 1 M-instruction limit any program may use: a
/// margin for older or stricter verifiers and for growth.
const BUDGET: f64 = 0.25;

/// The eBPF programs the object holds: the `#[uprobe]` functions of
/// `tracer-ebpf/src` (gotrace attaches nothing else).
fn uprobe_programs() -> usize {
    fn count(dir: &std::path::Path) -> usize {
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                n += count(&path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                n += text.lines().filter(|l| l.trim() == "#[uprobe]").count();
            }
        }
        n
    }
    let n = count(&gotrace_e2e::workspace_root().join("tracer-ebpf/src"));
    assert!(n > 0, "no #[uprobe] in tracer-ebpf/src");
    n
}

#[test]
fn every_program_loads_well_within_the_verifier_limit() {
    let Some(_g) = root_guard() else { return };
    let out = gotrace(&["check", "--json"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("check --json output");
    assert_eq!(v["ok"], true, "{v:#}");
    assert_eq!(v["object"]["min_kernel"], "5.8", "{v:#}");
    assert_eq!(v["object"]["core_relocations"], 0, "{v:#}");
    let limit = v["verifier_limit"].as_u64().expect("verifier_limit");
    assert_eq!(limit, 1_000_000);
    let programs = v["programs"].as_array().expect("programs");
    assert_eq!(programs.len(), uprobe_programs(), "{v:#}");
    let mut counted = 0;
    for p in programs {
        assert_eq!(p["loaded"], true, "{p:#}");
        assert!(p["xlated_insns"].as_u64().unwrap() > 0, "{p:#}");
        // Linux 5.16+ reports how many instructions the verifier processed.
        if let Some(verified) = p["verified_insns"].as_u64() {
            counted += 1;
            assert!(
                (verified as f64) < BUDGET * limit as f64,
                "{} needed {verified} verified instructions, over {}% of the limit",
                p["name"],
                BUDGET * 100.0
            );
        }
    }
    let release = v["kernel"]["release"].as_str().unwrap_or("");
    let newer_than_5_16 = release
        .split(['.', '-'])
        .take(2)
        .map(|n| n.parse::<u32>().unwrap_or(0))
        .collect::<Vec<_>>()
        >= vec![5, 16];
    if newer_than_5_16 {
        assert_eq!(counted, programs.len(), "{v:#}");
    } else {
        eprintln!("Linux {release} reports no verified instruction counts: budget not checked");
    }
}

#[test]
fn check_prints_a_table() {
    let Some(_g) = root_guard() else { return };
    let out = gotrace(&["check"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    for needle in [
        "uprobe PMU:  yes",
        "needs Linux 5.8+",
        "gotrace does not need it",
        "go_park",
        "programs loaded",
    ] {
        assert!(stdout.contains(needle), "{needle:?} not in:\n{stdout}");
    }
}
