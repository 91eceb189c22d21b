//! The kinds of Go binaries users run: PIE, cgo (dynamic and static),
//! stripped (`-s -w`: pclntab and the per-version layout table), `-trimpath`,
//! `-gcflags=all=-N -l`, each traced end to end.

use gotrace_e2e::{Traced, fixture_variant, go_minors, root_guard, trace_command, trace_pid};
use serde_json::Value;

const ARGS: &[&str] = &["--leak-threshold", "1s"];

/// cgoleak plants 5 goroutines waiting forever in main.waitForever, each on
/// a context whose cancel func is never called.
fn check_leaks(t: &Traced, contexts: bool) {
    let r = &t.report;
    let g = r["suspects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["start_function"] == "main.waitForever")
        .unwrap_or_else(|| panic!("no waitForever group: {r:#}"));
    assert_eq!(g["count"], 5, "{g:#}");
    assert_eq!(g["created_at"]["function"], "main.startLeaks");
    assert_eq!(g["blocked_at"]["function"], "main.waitForever");
    assert!(g["created_at"]["line"].as_u64().unwrap() > 0);
    if contexts {
        let c = &r["contexts"];
        assert_eq!(c["not_traced"], Value::Null, "{c:#}");
        let leak = &c["leaks"][0];
        assert_eq!(leak["created_at"]["function"], "main.startLeaks", "{c:#}");
        assert_eq!(leak["count"], 5);
        assert_eq!(leak["waiting_goroutines"], 5);
    }
}

fn traced(variant: &str, args: &[&str]) -> Traced {
    let bin = fixture_variant("cgoleak", "1.26", variant, args);
    trace_command(&bin, "2s", ARGS).unwrap_or_else(|e| panic!("{variant}: {e:#}"))
}

#[test]
fn cgo_dynamic() {
    let Some(_g) = root_guard() else { return };
    check_leaks(&traced("default", &[]), true);
}

#[test]
fn cgo_static() {
    let Some(_g) = root_guard() else { return };
    let t = traced(
        "static",
        &["-ldflags=-linkmode=external -extldflags=-static"],
    );
    check_leaks(&t, true);
}

#[test]
fn trimpath() {
    let Some(_g) = root_guard() else { return };
    let t = traced("trimpath", &["-trimpath"]);
    check_leaks(&t, true);
    let file = t.report["suspects"][0]["created_at"]["file"]
        .as_str()
        .unwrap();
    assert!(
        file.ends_with("cgoleak/main.go") && !file.starts_with('/'),
        "{file}"
    );
}

#[test]
fn no_optimisation_no_inlining() {
    let Some(_g) = root_guard() else { return };
    check_leaks(&traced("noopt", &["-gcflags=all=-N -l"]), true);
}

/// PIE started under gotrace: goroutines resolved with the load bias read
/// right after exec; context probes need absolute addresses before exec,
/// so they say clearly that they need --pid.
#[test]
fn pie_command() {
    let Some(_g) = root_guard() else { return };
    let t = traced("pie", &["-buildmode=pie"]);
    check_leaks(&t, false);
    let why = t.report["contexts"]["not_traced"]
        .as_str()
        .unwrap_or_default();
    assert!(why.contains("--pid"), "{why}");
}

/// PIE attached with --pid --full: everything, contexts included.
#[test]
fn pie_pid() {
    let Some(_g) = root_guard() else { return };
    let bin = fixture_variant("cgoleak", "1.26", "pie", &["-buildmode=pie"]);
    let args = ["--full", "--duration", "3s", "--leak-threshold", "1s"];
    let t = trace_pid(&bin, "60s", &args).unwrap_or_else(|e| panic!("{e:#}"));
    check_leaks(&t, true);
}

/// Stripped (`-ldflags=-s -w`): no DWARF, no .symtab. Symbols and source
/// lines from pclntab, offsets from the per-version table, itabs from the
/// module data. Every tested Go, among them 1.19 (old pclntab header), 1.26
/// (no textStart) and 1.27 (no itab symbols to begin with); each has its
/// entry in the table (`leaks::tested_versions_are_the_layout_table`).
#[test]
fn stripped() {
    let Some(_g) = root_guard() else { return };
    for go in go_minors() {
        let bin = fixture_variant("cgoleak", go, "stripped", &["-ldflags=-s -w"]);
        let t = trace_command(&bin, "2s", ARGS).unwrap_or_else(|e| panic!("Go {go}: {e:#}"));
        assert!(
            t.gotrace_stderr
                .contains("offsets from the per-version table"),
            "Go {go}: {}",
            t.gotrace_stderr
        );
        check_leaks(&t, true);
        let file = t.report["suspects"][0]["created_at"]["file"]
            .as_str()
            .unwrap_or_default();
        assert!(file.ends_with("cgoleak/main.go"), "Go {go}: {file}");
    }
}
