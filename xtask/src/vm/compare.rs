//! Comparing the guest's reports with the host's, and the markdown summary.

use super::*;

/// `gotrace check --json` from the guest: every program loaded.
pub fn check_result(json: Option<&[u8]>) -> Result<String> {
    let json = json.context("the guest sent no check.json")?;
    let v: Value = serde_json::from_slice(json).context("guest check.json")?;
    let programs = v["programs"].as_array().context("no programs")?;
    let refused: Vec<String> = programs
        .iter()
        .filter(|p| p["loaded"] != true)
        .map(|p| format!("{}: {}", p["name"], p["error"]))
        .collect();
    if !refused.is_empty() || v["ok"] != true {
        bail!("refused in the guest:\n{}", refused.join("\n"));
    }
    Ok(format!("{} programs loaded", programs.len()))
}

/// The parts of a report that must not depend on the kernel: the leak
/// groups, their counts, functions and wait reasons, the context and timer
/// findings, and that nothing was lost. Timings and ids are left out.
/// `probes_attached` comes first: it counts RET instructions, which differ
/// between architectures.
pub fn digest(r: &Value) -> Vec<String> {
    let mut d = Vec::new();
    let t = &r["trace"];
    d.push(format!("probes_attached {}", t["probes_attached"]));
    d.push(format!("go_version {}", r["target"]["go_version"]));
    d.push(format!("dropped {}", t["kernel"]["dropped_total"]));
    d.push(format!("stack_errors {}", t["kernel"]["stack_errors"]));
    d.push(format!("undecodable {}", t["events_undecodable"]));
    d.push(format!("live_user {}", r["goroutines"]["live_user"]));
    d.push(format!("verdict {}", r["verdict"]));
    d.push(format!("suspect_count {}", r["suspect_count"]));
    let funcs = |stack: &Value| -> String {
        stack
            .as_array()
            .map(|s| {
                s.iter()
                    .map(|f| f["function"].as_str().unwrap_or("?"))
                    .collect::<Vec<_>>()
                    .join(" < ")
            })
            .unwrap_or_default()
    };
    let mut groups: Vec<String> = Vec::new();
    for (kind, list) in [("suspect", &r["suspects"]), ("live", &r["live"])] {
        for g in list.as_array().into_iter().flatten() {
            let start = g["start_function"].as_str().unwrap_or("");
            if kind == "live" && !start.starts_with("main.") {
                continue; // the runtime's own goroutines vary with GC timing
            }
            groups.push(format!(
                "{kind} {start} x{} {} {} created_at={} blocked_at={} blocked=[{}] created=[{}]",
                g["count"],
                g["pattern"],
                g["wait_reason"],
                g["created_at"]["function"],
                g["blocked_at"]["function"],
                funcs(&g["blocked_stack"]),
                funcs(&g["creation_stack"]),
            ));
        }
    }
    groups.sort();
    d.extend(groups);
    let c = &r["contexts"];
    d.push(format!(
        "contexts not_traced={} created={} cancelled={} live_at_end={} repeat_cancels={}",
        c["not_traced"], c["created"], c["cancelled"], c["live_at_end"], c["repeat_cancels"]
    ));
    let mut leaks: Vec<String> = c["leaks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| {
            format!(
                "context leak {} x{} created_at={} timers_alive={} waiting={}",
                l["kind"],
                l["count"],
                l["created_at"]["function"],
                l["timers_alive"],
                l["waiting_goroutines"]
            )
        })
        .collect();
    leaks.sort();
    d.extend(leaks);
    for k in ["ignored_cancels", "broken_chains", "nested_deadlines"] {
        d.push(format!(
            "contexts {k} {}",
            c[k].as_array().map_or(0, Vec::len)
        ));
    }
    let tm = &r["timers"];
    d.push(format!(
        "timers not_traced={} started={} stopped={}",
        tm["not_traced"], tm["started"], tm["stopped"]
    ));
    let mut tickers: Vec<String> = tm["tickers_never_stopped"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            format!(
                "ticker created_at={} x{} period={} verdict={} loops={}",
                t["created_at"]["function"],
                t["count"],
                t["period_s"],
                t["verdict"],
                t["looping_functions"]
            )
        })
        .collect();
    tickers.sort();
    d.extend(tickers);
    d
}

/// One side's `report.json` and exit status for scenario `name`.
fn load(dir: &Path, name: &str, side: &str) -> Result<(Value, String)> {
    let d = dir.join(name);
    let exit = std::fs::read_to_string(d.join("exit")).unwrap_or_default();
    let stderr = std::fs::read_to_string(d.join("stderr")).unwrap_or_default();
    let text = std::fs::read_to_string(d.join("report.json")).with_context(|| {
        format!(
            "{side}: no report.json (gotrace exit {}): {}",
            exit.trim(),
            stderr.trim()
        )
    })?;
    let report = serde_json::from_str(&text).with_context(|| format!("{side} report.json"))?;
    Ok((report, exit.trim().to_string()))
}

/// What one side's report lacks of the scenario's fixed expectations (the
/// fixture's design), its exit status and nothing lost.
fn absolute(s: &Scenario, report: &Value, exit: &str, side: &str) -> Vec<String> {
    let d = digest(report);
    let mut problems: Vec<String> = s
        .expect
        .iter()
        .filter(|want| {
            !d.iter()
                .any(|l| l == *want || l.starts_with(&format!("{want} ")))
        })
        .map(|want| format!("{side} lacks: {want}"))
        .collect();
    if exit != s.exit.to_string() {
        problems.push(format!("{side}: exit status {exit}, not {}", s.exit));
    }
    for want in ["dropped 0", "stack_errors 0", "undecodable 0"] {
        if !d.iter().any(|l| l == want) {
            problems.push(format!("{side}: not {want}"));
        }
    }
    problems
}

/// The guest's report against the host's (digests equal; `probes_attached`
/// only when both run the same architecture) and each against the
/// scenario's expectations.
pub fn compare(s: &Scenario, guest_dir: &Path, host_dir: &Path, same_arch: bool) -> Result<String> {
    let name = s.name();
    let (guest, guest_exit) = load(guest_dir, &name, "guest")?;
    let (host, host_exit) = load(host_dir, &name, "host")?;
    let skip = usize::from(!same_arch);
    let (g, h) = (&digest(&guest)[skip..], &digest(&host)[skip..]);
    let mut problems = Vec::new();
    if guest_exit != host_exit {
        problems.push(format!("exit status: guest {guest_exit}, host {host_exit}"));
    }
    for line in g {
        if !h.contains(line) {
            problems.push(format!("guest only: {line}"));
        }
    }
    for line in h {
        if !g.contains(line) {
            problems.push(format!("host only:  {line}"));
        }
    }
    problems.extend(absolute(s, &guest, &guest_exit, "guest"));
    problems.extend(absolute(s, &host, &host_exit, "host"));
    if !problems.is_empty() {
        bail!("reports differ:\n  {}", problems.join("\n  "));
    }
    Ok(format!(
        "exit {guest_exit}, {} suspects, {} events, {} expected lines, same as the host",
        guest["suspect_count"],
        guest["trace"]["events_received"],
        s.expect.len()
    ))
}

// ---------------------------------------------------------------- summary

/// Where the time of a run went.
pub struct Times {
    pub total: Duration,
    pub prepared: Duration,
    pub host: Duration,
}

pub fn summary_markdown(
    guest: &Guest,
    results: &[(String, Result<String>)],
    host_check: &str,
    times: &Times,
) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "Guest: Linux {} ({}), {}, 2 vCPUs, 1 GiB; kernel BTF: {}.\n\
         Time: {:.0}s in all ({:.0}s preparing, {:.0}s in the guest, {:.0}s for the host runs).\n\n",
        guest.release,
        guest.kernel_package,
        guest.accel,
        if guest.btf.is_empty() { "unknown" } else { &guest.btf },
        times.total.as_secs_f64(),
        times.prepared.as_secs_f64(),
        guest.elapsed.as_secs_f64(),
        times.host.as_secs_f64(),
    ));
    s.push_str("| check | result |\n|---|---|\n");
    for (name, r) in results {
        let text = match r {
            Ok(t) => format!("ok: {t}"),
            Err(e) => format!("FAILED: {}", format!("{e:#}").replace('\n', " ")),
        };
        s.push_str(&format!("| {name} | {text} |\n"));
    }
    let guest_check: Option<Value> = guest
        .file("check.json")
        .and_then(|j| serde_json::from_slice(j).ok());
    let host_check: Option<Value> = serde_json::from_str(host_check).ok();
    let host_release = host_check
        .as_ref()
        .and_then(|v| v["kernel"]["release"].as_str())
        .unwrap_or("host")
        .to_string();
    s.push_str(&format!(
        "\n| program | xlated insns ({}) | xlated insns ({host_release}) | verified insns ({host_release}) | of the 1 M limit |\n|---|---:|---:|---:|---:|\n",
        guest.release
    ));
    let by_name = |v: &Option<Value>| -> BTreeMap<String, Value> {
        v.as_ref()
            .and_then(|v| v["programs"].as_array().cloned())
            .unwrap_or_default()
            .into_iter()
            .map(|p| (p["name"].as_str().unwrap_or("?").to_string(), p))
            .collect()
    };
    let (g, h) = (by_name(&guest_check), by_name(&host_check));
    for (name, hp) in &h {
        let gx = g
            .get(name)
            .map_or("-".to_string(), |p| p["xlated_insns"].to_string());
        let verified = hp["verified_insns"].as_u64();
        s.push_str(&format!(
            "| {name} | {gx} | {} | {} | {} |\n",
            hp["xlated_insns"],
            verified.map_or("n/a".into(), |v| v.to_string()),
            verified.map_or("-".into(), |v| format!("{:.2} %", v as f64 / 10_000.0)),
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expectations_match_whole_lines_or_up_to_a_space() {
        let report = serde_json::json!({
            "trace": {"probes_attached": 4, "kernel": {"dropped_total": 0, "stack_errors": 0},
                      "events_undecodable": 0},
            "suspect_count": 13,
            "suspects": [{"start_function": "main.f", "count": 5, "pattern": "mutex",
                          "wait_reason": "semacquire", "created_at": {"function": "main.main"},
                          "blocked_at": {"function": "main.f"}}],
        });
        let scenario = |expect| Scenario {
            expect,
            ..scenarios::CHANRECV
        };
        let ok = scenario(&[
            "suspect_count 13",
            "suspect main.f x5 \"mutex\" \"semacquire\" created_at=\"main.main\"",
        ]);
        assert_eq!(absolute(&ok, &report, "3", "guest"), Vec::<String>::new());
        let wrong = scenario(&["suspect_count 1", "suspect main.f x50"]);
        assert_eq!(absolute(&wrong, &report, "0", "guest").len(), 3);
    }
}
