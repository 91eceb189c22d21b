//! `gotrace check`: can this kernel run gotrace? Loads every eBPF program of
//! the embedded object (attaching nothing) and prints what the kernel says
//! about each: its size after verification, its JIT size and, on Linux
//! 5.16+, how many instructions the verifier processed against its
//! 1 M-instruction complexity limit. Also prints what the object needs
//! (helpers, map types, instruction set, each with the release that added it)
//! and whether the uprobe PMU is there.

use std::path::Path;

use anyhow::bail;
use serde_json::json;
use tracer_common::{
    CONFIG_FLAG_CANCEL_CAUSE, CONFIG_FLAG_G_WINDOW, CONFIG_FLAG_PARENT_GOID,
    CONFIG_FLAG_SUDOG_WINDOW, CONFIG_FLAG_WAIT_CHANS, Config,
};

use super::Outcome;
use super::cli::CheckArgs;
use crate::probe::compat;
use crate::probe::{ProgramCheck, load_every_program};

/// The verifier's complexity limit (`BPF_COMPLEXITY_LIMIT_INSNS`, Linux 5.2+):
/// a program whose verification processes more instructions is refused.
pub const VERIFIER_LIMIT: u32 = 1_000_000;

const BTF: &str = "/sys/kernel/btf/vmlinux";
const UPROBE_PMU: &str = "/sys/bus/event_source/devices/uprobe/type";

/// A configuration that enables every optional path of the programs (every
/// flag set, every offset and address non-zero), so the verifier walks all
/// of them: the loaded rodata is frozen, and the verifier prunes branches a
/// zero value would rule out.
pub fn worst_case_config() -> Config {
    Config {
        target_tgid: std::process::id(),
        flags: CONFIG_FLAG_PARENT_GOID
            | CONFIG_FLAG_WAIT_CHANS
            | CONFIG_FLAG_CANCEL_CAUSE
            | CONFIG_FLAG_G_WINDOW
            | CONFIG_FLAG_SUDOG_WINDOW,
        g_goid: 152,
        g_parent_goid: 272,
        g_gopc: 280,
        g_startpc: 296,
        g_waiting: 192,
        sudog_c: 80,
        sudog_waitlink: 64,
        pc_parent_reg: 1,
        pc_child_reg: 3,
        ctx_done: 24,
        timer_deadline: 88,
        itab_value_ctx: 0x0100_0000,
        itab_deadline_exceeded: 0x0100_0100,
        itab_error_string: 0x0100_0200,
        itab_wrap_error: 0x0100_0300,
        canceled_var: 0x0100_0400,
        timer_period: 32,
        timer_f: 40,
        timer_arg: 48,
        g_window_base: 152,
        g_window_len: tracer_common::G_WINDOW_MAX,
        sudog_window_base: 64,
        sudog_window_len: tracer_common::SUDOG_WINDOW_MAX,
        ring_bytes: 8 << 20,
        itab_timer_ctx: 0x0100_0500,
    }
}

pub fn run(args: CheckArgs) -> anyhow::Result<Outcome> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let btf = Path::new(BTF).exists();
    let uprobe_pmu = std::fs::read_to_string(UPROBE_PMU)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    let req = compat::requirements(crate::probe::loader::EBPF_OBJECT)?;
    let programs = load_every_program(worst_case_config(), args.debug_probes)?;
    let rejected = programs.iter().filter(|p| p.result.is_err()).count();

    if args.json {
        let json = json!({
            "kernel": {
                "release": release,
                "btf": btf,
                "uprobe_pmu_type": uprobe_pmu,
            },
            "object": {
                "min_kernel": req.min_kernel().to_string(),
                "core_relocations": req.core_relocations,
                "features": req.features.iter().map(|f| json!({
                    "what": f.what,
                    "since": f.since.to_string(),
                })).collect::<Vec<_>>(),
            },
            "verifier_limit": VERIFIER_LIMIT,
            "programs": programs.iter().map(program_json).collect::<Vec<_>>(),
            "ok": rejected == 0 && uprobe_pmu.is_some(),
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print_text(&release, btf, uprobe_pmu, &req, &programs);
    }
    if uprobe_pmu.is_none() {
        bail!(
            "this kernel has no uprobe PMU ({UPROBE_PMU} is missing): gotrace needs \
             CONFIG_UPROBES and CONFIG_UPROBE_EVENTS (Linux 4.17+)"
        );
    }
    if rejected > 0 {
        bail!(
            "the kernel refused {rejected} of {} eBPF programs (verifier logs above)",
            programs.len()
        );
    }
    Ok(Outcome::listing())
}

fn program_json(p: &ProgramCheck) -> serde_json::Value {
    match &p.result {
        Ok(s) => json!({
            "name": p.name,
            "loaded": true,
            "xlated_insns": s.xlated_insns,
            "jited_bytes": s.jited_bytes,
            "verified_insns": s.verified_insns,
        }),
        Err(e) => json!({ "name": p.name, "loaded": false, "error": e }),
    }
}

fn print_text(
    release: &str,
    btf: bool,
    uprobe_pmu: Option<u32>,
    req: &compat::Requirements,
    programs: &[ProgramCheck],
) {
    println!("kernel:      Linux {release}");
    println!(
        "uprobe PMU:  {}",
        match uprobe_pmu {
            Some(t) => format!("yes (perf type {t})"),
            None => "MISSING".into(),
        }
    );
    println!(
        "kernel BTF:  {} ({})",
        if btf { "present" } else { "absent" },
        if req.core_relocations == 0 {
            "gotrace does not need it"
        } else {
            "needed: the eBPF object has CO-RE relocations"
        }
    );
    println!(
        "eBPF object: needs Linux {}+ (newest: {})",
        req.min_kernel(),
        req.features
            .iter()
            .take_while(|f| f.since == req.min_kernel())
            .map(|f| f.what.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!();
    println!(
        "{:<26} {:>12} {:>11} {:>14} {:>9}",
        "program", "xlated insns", "jited bytes", "verified insns", "of limit"
    );
    for p in programs {
        match &p.result {
            Ok(s) => {
                let (verified, share) = match s.verified_insns {
                    Some(v) => (
                        v.to_string(),
                        format!("{:.2}%", f64::from(v) * 100.0 / f64::from(VERIFIER_LIMIT)),
                    ),
                    None => ("n/a".into(), "-".into()),
                };
                println!(
                    "{:<26} {:>12} {:>11} {:>14} {:>9}",
                    p.name, s.xlated_insns, s.jited_bytes, verified, share
                );
            }
            Err(_) => println!("{:<26} REFUSED by the kernel", p.name),
        }
    }
    if programs
        .iter()
        .all(|p| p.result.as_ref().is_ok_and(|s| s.verified_insns.is_none()))
    {
        println!("(verified insns: the kernel reports them from Linux 5.16 on)");
    }
    for p in programs {
        if let Err(e) = &p.result {
            eprintln!("\n{}: {e}", p.name);
        }
    }
    let loaded = programs.iter().filter(|p| p.result.is_ok()).count();
    println!("\n{loaded} of {} programs loaded", programs.len());
}
