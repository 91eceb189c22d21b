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
    d.extend(at_exit(r));
    d
}

/// How the target ended and what was read while it was held at its exit:
/// the holding, then the program's goroutines by function and wait.
fn at_exit(r: &Value) -> Vec<String> {
    let mut d = vec![format!("target_exit {}", r["target"]["exit"])];
    let a = &r["trace"]["at_exit"];
    if a.is_null() {
        d.push("at_exit null".into());
        return d;
    }
    d.push(format!(
        "at_exit timed_out={} error={}",
        a["timed_out"], a["snapshot"]["error"]
    ));
    let mut groups: Vec<String> = a["goroutines"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|g| {
            g["start_function"]
                .as_str()
                .is_some_and(|f| f.starts_with("main."))
        })
        .map(|g| {
            format!(
                "at_exit {} x{} {} {}",
                g["start_function"].as_str().unwrap_or(""),
                g["count"],
                g["state"],
                g["wait_reason"]
            )
        })
        .collect();
    groups.sort();
    d.extend(groups);
    d
}

/// One side's `report.json`, gotrace's exit status and the fixture's
/// output (`stdout` in command mode, shared with gotrace; `fixture` in
/// --pid mode) for scenario `name`.
fn load(dir: &Path, name: &str, side: &str) -> Result<(Value, String, String)> {
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
    let out = ["stdout", "fixture"]
        .map(|f| std::fs::read_to_string(d.join(f)).unwrap_or_default())
        .join("\n");
    Ok((report, exit.trim().to_string(), out))
}

/// The fixture's `planted <what> <N>` count, from its output.
fn planted(out: &str, what: &str) -> Result<u64> {
    let prefix = format!("planted {what} ");
    out.lines()
        .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
        .with_context(|| format!("the fixture printed no `{prefix}N` line"))
}

/// An expectation with each `{a+b+1}` replaced by the sum of its terms:
/// a number, or the count of the fixture's `planted <term> N` line.
pub fn expand(template: &str, fixture_out: &str) -> Result<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let close = rest[open..]
            .find('}')
            .with_context(|| format!("unclosed {{ in {template:?}"))?;
        out.push_str(&rest[..open]);
        let mut n = 0;
        for term in rest[open + 1..open + close].split('+') {
            n += match term.parse::<u64>() {
                Ok(v) => v,
                Err(_) => planted(fixture_out, term)?,
            };
        }
        out.push_str(&n.to_string());
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// What one side's report lacks of the scenario's expectations (the
/// fixture's design, counts from its `planted` lines), its exit status and
/// nothing lost.
fn absolute(
    s: &Scenario,
    report: &Value,
    exit: &str,
    fixture_out: &str,
    side: &str,
) -> Vec<String> {
    let d = digest(report);
    let mut problems: Vec<String> = Vec::new();
    for template in s.expect {
        let want = match expand(template, fixture_out) {
            Ok(w) => w,
            Err(e) => {
                problems.push(format!("{side}: {template}: {e:#}"));
                continue;
            }
        };
        if !d
            .iter()
            .any(|l| *l == want || l.starts_with(&format!("{want} ")))
        {
            problems.push(format!("{side} lacks: {want}"));
        }
    }
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
    let (guest, guest_exit, guest_out) = load(guest_dir, &name, "guest")?;
    let (host, host_exit, host_out) = load(host_dir, &name, "host")?;
    let skip = usize::from(!same_arch);
    // What is read at exit depends on the architecture too: a goroutine
    // snapshot of a stripped binary needs code patterns known per
    // architecture (none for runtime.allgs on arm64 yet).
    let comparable = |d: Vec<String>| -> Vec<String> {
        d.into_iter()
            .skip(skip)
            .filter(|l| same_arch || !l.starts_with("at_exit "))
            .collect()
    };
    let (g, h) = (&comparable(digest(&guest)), &comparable(digest(&host)));
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
    problems.extend(absolute(s, &guest, &guest_exit, &guest_out, "guest"));
    problems.extend(absolute(s, &host, &host_exit, &host_out, "host"));
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

/// The run's result page: the guest, the times, each check's result and
/// the verifier table ([`crate::verifier::table`]).
pub fn summary_markdown(
    guest: &Guest,
    results: &[(String, Result<String>)],
    verifier_table: &str,
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
    s.push('\n');
    s.push_str(verifier_table);
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
        let out = "fixture x pid 1\nplanted mutex 5\nplanted other 7\ndone\n";
        let scenario = |expect| Scenario {
            expect,
            ..scenarios::CHANRECV
        };
        let ok = scenario(&[
            "suspect_count {mutex+other+1}",
            "suspect main.f x{mutex} \"mutex\" \"semacquire\" created_at=\"main.main\"",
        ]);
        assert_eq!(
            absolute(&ok, &report, "3", out, "guest"),
            Vec::<String>::new()
        );
        let wrong = scenario(&["suspect_count {mutex}", "suspect main.f x50"]);
        assert_eq!(absolute(&wrong, &report, "0", out, "guest").len(), 3);
        // A count the fixture did not print fails the check.
        let missing = absolute(&ok, &report, "3", "planted mutex 5\n", "guest");
        assert_eq!(missing.len(), 1, "{missing:?}");
        assert!(
            missing[0].contains("no `planted other N` line"),
            "{missing:?}"
        );
    }

    #[test]
    fn expand_sums_planted_counts_and_numbers() {
        let out = "planted timeout-leak 7\nplanted cancel-leak 4\n";
        assert_eq!(
            expand(
                "created={timeout-leak+cancel-leak} x{cancel-leak} n={timeout-leak+1}",
                out
            )
            .unwrap(),
            "created=11 x4 n=8"
        );
        assert_eq!(expand("no braces", "").unwrap(), "no braces");
        assert!(expand("x{absent}", out).is_err());
        assert!(expand("x{cancel-leak", out).is_err());
    }
}
