//! `/metrics`: the Prometheus text exposition format, version 0.0.4
//! (<https://prometheus.io/docs/instrumenting/exposition_formats/>). Every
//! family has its HELP and TYPE lines; label values are escaped (`\`, `"`,
//! newline) and HELP texts too (`\`, newline). Samples of processes that
//! share an executable name (and no `pid` label) are summed, so no series
//! appears twice.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::UNIX_EPOCH;

use super::host::Published;
use super::watch::Sample;

/// What the HTTP server counted, for the agent's own health metrics.
#[derive(Clone, Debug, Default)]
pub struct HttpStats {
    pub requests: u64,
    /// Rejected by reason ("busy", "too_large", "timeout", "bad_request").
    pub rejected: BTreeMap<&'static str, u64>,
}

type Labels = Vec<(&'static str, String)>;

/// One metric family being built: its samples by label set.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    samples: BTreeMap<Labels, f64>,
}

impl Family {
    fn new(name: &'static str, kind: &'static str, help: &'static str) -> Family {
        Family {
            name,
            help,
            kind,
            samples: BTreeMap::new(),
        }
    }

    /// Adds `v` to the sample of `labels` (summing equal label sets).
    fn add(&mut self, labels: Labels, v: f64) {
        *self.samples.entry(labels).or_insert(0.0) += v;
    }

    fn write(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {} {}", self.name, escape_help(self.help));
        let _ = writeln!(out, "# TYPE {} {}", self.name, self.kind);
        for (labels, v) in &self.samples {
            out.push_str(self.name);
            if !labels.is_empty() {
                out.push('{');
                for (i, (k, val)) in labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{k}=\"{}\"", escape_label(val));
                }
                out.push('}');
            }
            let _ = writeln!(out, " {}", number(*v));
        }
    }
}

/// A label value as the format wants it: `\` `"` and newline escaped.
pub fn escape_label(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

/// A HELP text: `\` and newline escaped.
fn escape_help(v: &str) -> String {
    v.replace('\\', r"\\").replace('\n', r"\n")
}

/// Go's float formatting as Prometheus parses it (integers without ".0").
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

/// The `process` label (and `pid` when asked for).
fn proc_labels(s: &Sample, pid_label: bool) -> Labels {
    let mut l = vec![("process", s.name.clone())];
    if pid_label {
        l.push(("pid", s.pid.to_string()));
    }
    l
}

fn with(mut base: Labels, more: &[(&'static str, &str)]) -> Labels {
    base.extend(more.iter().map(|(k, v)| (*k, v.to_string())));
    base
}

/// The whole exposition.
pub fn render(p: &Published, http: &HttpStats, pid_label: bool) -> String {
    let mut fams = process_families(p, pid_label);
    fams.extend(agent_families(p, http));
    let mut out = String::new();
    for f in &fams {
        f.write(&mut out);
    }
    out
}

/// The families about the watched processes.
fn process_families(p: &Published, pid_label: bool) -> Vec<Family> {
    let mut info = Family::new(
        "gotrace_process_info",
        "gauge",
        "A watched Go process (value 1), with its Go version.",
    );
    let mut states = Family::new(
        "gotrace_goroutines",
        "gauge",
        "The program's goroutines by state (the runtime's own under state=\"system\").",
    );
    let mut leaked = Family::new(
        "gotrace_goroutines_leaked",
        "gauge",
        "Goroutines the latest leak proof proved leaked (nothing reachable can wake them), still there, by creation and blocked site.",
    );
    let mut suspect = Family::new(
        "gotrace_goroutines_suspect",
        "gauge",
        "Goroutines parked at least the leak threshold and not proven leaked, by creation and blocked site.",
    );
    let mut by_site = Family::new(
        "gotrace_creation_site_goroutines",
        "gauge",
        "Live goroutines by creation site (the go statement).",
    );
    let mut growth = Family::new(
        "gotrace_creation_site_growth_goroutines",
        "gauge",
        "Live goroutines of a creation site minus their number when the agent first saw the site.",
    );
    let mut proof_s = Family::new(
        "gotrace_proof_duration_seconds",
        "gauge",
        "How long the latest finished leak proof took.",
    );
    let mut proof_at = Family::new(
        "gotrace_proof_last_success_timestamp_seconds",
        "gauge",
        "When the latest leak proof finished (Unix time).",
    );
    let mut sample_s = Family::new(
        "gotrace_agent_sample_duration_seconds",
        "gauge",
        "How long the latest read of the process's goroutines took.",
    );
    let mut torn = Family::new(
        "gotrace_snapshot_unreadable_goroutines",
        "gauge",
        "Goroutines of the latest read left out (never read consistently) or kept without a stack (changing while read).",
    );
    for s in p.samples.values() {
        let base = proc_labels(s, pid_label);
        info.add(with(base.clone(), &[("go_version", &s.go_version)]), 1.0);
        for (state, n) in &s.states {
            states.add(with(base.clone(), &[("state", state)]), *n as f64);
        }
        states.add(with(base.clone(), &[("state", "system")]), s.system as f64);
        for r in &s.rows {
            let l = with(
                base.clone(),
                &[("creation_site", &r.created), ("blocked_site", &r.blocked)],
            );
            // Zeros are left out: a site appears once it has some.
            if r.leaked > 0 {
                leaked.add(l.clone(), r.leaked as f64);
            }
            if r.suspect > 0 {
                suspect.add(l, r.suspect as f64);
            }
        }
        for c in &s.sites {
            let l = with(base.clone(), &[("creation_site", &c.created)]);
            by_site.add(l.clone(), c.live as f64);
            growth.add(l, c.growth as f64);
        }
        if let Some(pr) = &s.proof {
            proof_s.add(base.clone(), pr.took_s);
            let at = pr.at.duration_since(UNIX_EPOCH).unwrap_or_default();
            proof_at.add(base.clone(), at.as_secs_f64().floor());
        }
        sample_s.add(base.clone(), s.took_s);
        let bad = s.stats.skipped + s.stats.unstable;
        torn.add(base, bad as f64);
    }
    vec![
        info, states, leaked, suspect, by_site, growth, proof_s, proof_at, sample_s, torn,
    ]
}

/// The agent's own health.
fn agent_families(p: &Published, http: &HttpStats) -> Vec<Family> {
    let mut watched = Family::new(
        "gotrace_agent_processes_watched",
        "gauge",
        "Go processes the agent watches.",
    );
    watched.add(Vec::new(), p.watched as f64);
    let mut errors = Family::new(
        "gotrace_agent_errors_total",
        "counter",
        "Processes not watched and failed reads or proofs, by kind.",
    );
    for kind in super::ERROR_KINDS {
        let n = p.errors.get(kind.label()).copied().unwrap_or(0);
        errors.add(vec![("kind", kind.label().to_string())], n as f64);
    }
    let mut pass = Family::new(
        "gotrace_agent_pass_duration_seconds",
        "gauge",
        "How long the latest pass over every watched process took (discovery, reads, proofs).",
    );
    pass.add(Vec::new(), p.pass_s);
    let mut interval = Family::new(
        "gotrace_agent_interval_seconds",
        "gauge",
        "Time between the starts of the latest two passes: --interval, or longer to keep within --max-cpu.",
    );
    interval.add(Vec::new(), p.interval_s);
    let mut passes = Family::new(
        "gotrace_agent_passes_total",
        "counter",
        "Passes over the watched processes.",
    );
    passes.add(Vec::new(), p.passes as f64);
    let mut requests = Family::new(
        "gotrace_agent_http_requests_total",
        "counter",
        "HTTP requests answered.",
    );
    requests.add(Vec::new(), http.requests as f64);
    let mut rejected = Family::new(
        "gotrace_agent_http_rejected_total",
        "counter",
        "HTTP connections refused or cut, by reason.",
    );
    for reason in super::http::REJECT_REASONS {
        let n = http.rejected.get(reason).copied().unwrap_or(0);
        rejected.add(vec![("reason", reason.to_string())], n as f64);
    }
    vec![watched, errors, pass, interval, passes, requests, rejected]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(escape_label("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
        assert_eq!(escape_help("x\\y\nz \""), "x\\\\y\\nz \"");
    }

    #[test]
    fn families_have_help_and_type_and_sum_equal_label_sets() {
        let mut f = Family::new("gotrace_x", "gauge", "Help \\ text.");
        f.add(vec![("process", "a\"b".into())], 2.0);
        f.add(vec![("process", "a\"b".into())], 3.0);
        f.add(Vec::new(), 0.5);
        let mut out = String::new();
        f.write(&mut out);
        assert_eq!(
            out,
            "# HELP gotrace_x Help \\\\ text.\n# TYPE gotrace_x gauge\ngotrace_x 0.5\ngotrace_x{process=\"a\\\"b\"} 5\n"
        );
    }

    #[test]
    fn empty_agent_metrics() {
        let text = render(&Published::default(), &HttpStats::default(), false);
        assert!(
            text.contains("gotrace_agent_processes_watched 0\n"),
            "{text}"
        );
        assert!(
            text.contains("gotrace_agent_errors_total{kind=\"not_go\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE gotrace_agent_errors_total counter\n"),
            "{text}"
        );
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').unwrap();
            assert!(name.starts_with("gotrace_"), "{line}");
            value.parse::<f64>().unwrap();
        }
    }
}
