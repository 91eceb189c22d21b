//! One watched Go process: its executable opened once (shared by every
//! process running the same file), its goroutines read from memory every
//! interval through the snapshot path (no probes), grouped like `gotrace
//! snapshot`, and the leak proof run every so often. What a sample keeps
//! is bounded whatever the goroutine count: [`Limits`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::discover::{self, Found};
use crate::gobin::GoBinary;
use crate::gobin::frame::Frame;
use crate::gobin::layout::RuntimeLayout;
use crate::gobin::symbolize::Symbolizer;
use crate::goruntime::version::MIN_SUPPORTED;
use crate::model::existing::SnapStats;
use crate::report::snapshot::{self as group, SnapGroup, SnapReport};
use crate::resolve::StackResolver;
use crate::snapshot::SnapshotError;

/// Why a process is not watched, or a sample or proof failed: the `kind`
/// label of `gotrace_agent_errors_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorKind {
    /// It exited while read.
    Gone,
    /// It matched --pid/--match but is no Go program (no Go build info).
    NotGo,
    /// A Go program gotrace cannot read (Go too old, no runtime layout).
    UnsupportedGo,
    /// Its memory or executable could not be opened (privileges).
    Permission,
    /// Its goroutine list could not be read consistently.
    Read,
    /// The leak proof did not finish.
    Proof,
    /// More processes than --max-processes: this one is not watched.
    ProcessCap,
}

impl ErrorKind {
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::Gone => "gone",
            ErrorKind::NotGo => "not_go",
            ErrorKind::UnsupportedGo => "unsupported_go",
            ErrorKind::Permission => "permission",
            ErrorKind::Read => "read",
            ErrorKind::Proof => "proof",
            ErrorKind::ProcessCap => "process_cap",
        }
    }
}

/// What one executable needs to be read: opened once per file.
pub struct Loaded {
    pub bin: GoBinary,
    pub layout: RuntimeLayout,
    pub symbolizer: Symbolizer,
}

/// Opens the executable at `path` (`/proc/PID/exe`).
pub fn load(path: &Path) -> Result<Loaded, ErrorKind> {
    use crate::gobin::BinaryError as B;
    let bin = GoBinary::open(path).map_err(|e| match e {
        B::NotGo { .. } | B::NotElf { .. } | B::UnsupportedArch(_) => ErrorKind::NotGo,
        B::Io { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied => {
            ErrorKind::Permission
        }
        B::Io { .. } => ErrorKind::Gone,
        _ => ErrorKind::UnsupportedGo,
    })?;
    let v = bin.version();
    if (v.major, v.minor) < MIN_SUPPORTED {
        return Err(ErrorKind::UnsupportedGo);
    }
    let layout = bin.layout().map_err(|_| ErrorKind::UnsupportedGo)?;
    let symbolizer = bin.symbolizer().map_err(|_| ErrorKind::UnsupportedGo)?;
    Ok(Loaded {
        bin,
        layout,
        symbolizer,
    })
}

/// The bounds of what the agent keeps per process.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Label sets per process and metric (site pairs, creation sites);
    /// the rest is summed under site "other".
    pub max_sites: usize,
    /// Groups kept for report.json and the pprof profile.
    pub max_groups: usize,
    /// Goids listed per group in report.json.
    pub max_goids: usize,
    /// Parked at least this long, not proven leaked: a leak suspect.
    pub leak_threshold: Duration,
}

/// The site label of metrics that are over the cap.
pub const OTHER: &str = "other";

/// Goroutines of one (creation site, blocked site) pair.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SiteRow {
    pub created: String,
    pub blocked: String,
    pub live: u64,
    /// Proven leaked by the latest proof, still there.
    pub leaked: u64,
    /// Parked at least the threshold, not proven leaked.
    pub suspect: u64,
}

/// Live goroutines of one creation site, and how many more than when the
/// agent first saw the site.
#[derive(Clone, Debug, PartialEq)]
pub struct SiteCount {
    pub created: String,
    pub live: u64,
    pub growth: i64,
}

/// The latest proof of a process, without its per-goroutine list.
#[derive(Clone, Debug)]
pub struct ProofSummary {
    pub at: SystemTime,
    pub took_s: f64,
    pub leaked: u64,
    pub wakeable: u64,
    pub unproven: u64,
}

/// What one sample of a process published: everything the endpoints show.
pub struct Sample {
    pub pid: u32,
    pub name: String,
    pub go_version: String,
    pub took_s: f64,
    /// The program's own goroutines by state ("waiting", "runnable"...).
    pub states: BTreeMap<&'static str, u64>,
    /// The runtime's own goroutines.
    pub system: u64,
    pub rows: Vec<SiteRow>,
    pub sites: Vec<SiteCount>,
    pub proof: Option<ProofSummary>,
    pub stats: SnapStats,
    /// Groups beyond [`Limits::max_groups`] (their goroutines are not in
    /// `report.groups`).
    pub groups_dropped: usize,
    /// Trimmed: see [`Limits`].
    pub report: SnapReport,
}

/// A process being watched.
pub struct Watched {
    pub found: Found,
    loaded: Arc<Loaded>,
    bias: Option<u64>,
    /// Count of each tracked creation site when first seen.
    first: HashMap<String, u64>,
    /// Goids the latest finished proof proved leaked, still alive.
    leaked: HashSet<u64>,
    last_proof: Option<Instant>,
    proof: Option<ProofSummary>,
}

impl Watched {
    pub fn new(found: Found, loaded: Arc<Loaded>) -> Watched {
        Watched {
            found,
            loaded,
            bias: None,
            first: HashMap::new(),
            leaked: HashSet::new(),
            last_proof: None,
            proof: None,
        }
    }

    /// Whether the proof is due (never run, or `every` ago).
    pub fn proof_due(&self, every: Duration) -> bool {
        self.last_proof.is_none_or(|t| t.elapsed() >= every)
    }

    /// Reads the process once; with `prove`, runs the leak proof too. A
    /// failed proof leaves the sample good and is returned beside it.
    pub fn sample(
        &mut self,
        limits: &Limits,
        prove: bool,
    ) -> Result<(Sample, Option<ErrorKind>), ErrorKind> {
        let pid = self.found.id.pid;
        let bias = self.bias()?;
        let l = Arc::clone(&self.loaded);
        let snap = crate::snapshot::take(pid, &l.bin, &l.layout, bias).map_err(|e| match e {
            SnapshotError::NoSuchProcess(_) | SnapshotError::Gone(_) => ErrorKind::Gone,
            SnapshotError::Permission { .. } => ErrorKind::Permission,
            SnapshotError::Unsupported(_) => ErrorKind::UnsupportedGo,
            _ if !discover::alive(self.found.id) => ErrorKind::Gone,
            _ => ErrorKind::Read,
        })?;
        let raw = snap.stacks.iter().map(|(k, v)| (*k, v.clone())).collect();
        let mut resolver = StackResolver::new(&l.bin, &l.symbolizer, raw, bias);
        let (mut groups, system) = group::build(&snap, &mut resolver, &l.layout.wait_reasons, true);
        let proof_error = if prove { self.prove(bias) } else { None };
        let live: HashSet<u64> = snap.goroutines.iter().map(|g| g.goid).collect();
        self.leaked.retain(|g| live.contains(g));
        for g in &mut groups {
            g.leaked_goids = g
                .goids
                .iter()
                .copied()
                .filter(|id| self.leaked.contains(id))
                .collect();
            g.leaked = g.leaked_goids.len();
        }
        let threshold = limits.leak_threshold.as_nanos() as u64;
        let long_parked: HashSet<u64> = snap
            .goroutines
            .iter()
            .filter(|g| {
                g.blocked_since_ns
                    .is_some_and(|t| snap.taken_ns.saturating_sub(t) >= threshold)
            })
            .map(|g| g.goid)
            .collect();
        let user: Vec<&SnapGroup> = groups.iter().filter(|g| !g.system).collect();
        let rows = cap_rows(site_rows(&user, &long_parked), limits.max_sites);
        let sites = self.site_counts(&user, limits.max_sites);
        let mut states = BTreeMap::new();
        for g in &user {
            *states.entry(g.state.text()).or_insert(0) += g.count as u64;
        }
        let groups_dropped = groups.len().saturating_sub(limits.max_groups);
        trim(&mut groups, limits);
        let id = (pid, self.found.name.clone(), l.bin.version().raw.clone());
        let report = SnapReport::of(id, &snap, system, groups);
        let sample = Sample {
            pid,
            name: self.found.name.clone(),
            go_version: report.go_version.clone(),
            took_s: snap.took_ns as f64 / 1e9,
            states,
            system: system as u64,
            rows,
            sites,
            proof: self.proof.clone(),
            stats: snap.stats,
            groups_dropped,
            report,
        };
        Ok((sample, proof_error))
    }

    /// Where the executable is loaded (looked up once).
    fn bias(&mut self) -> Result<u64, ErrorKind> {
        if let Some(b) = self.bias {
            return Ok(b);
        }
        let b = if self.loaded.bin.is_pie() {
            crate::process::load_bias(self.found.id.pid, &self.found.exe_path)
        } else {
            Some(0)
        };
        match b {
            Some(b) => {
                self.bias = Some(b);
                Ok(b)
            }
            None if !discover::alive(self.found.id) => Err(ErrorKind::Gone),
            None => Err(ErrorKind::Read),
        }
    }

    /// Runs the leak proof; keeps its leaked goids and summary when it
    /// finished.
    fn prove(&mut self, bias: u64) -> Option<ErrorKind> {
        let l = &self.loaded;
        let proof = crate::proof::prove(&crate::proof::Target {
            pid: self.found.id.pid,
            bin: &l.bin,
            layout: &l.layout,
            bias,
            symbolizer: &l.symbolizer,
            held: false,
        });
        self.last_proof = Some(Instant::now());
        if !proof.done() {
            return Some(if discover::alive(self.found.id) {
                ErrorKind::Proof
            } else {
                ErrorKind::Gone
            });
        }
        self.leaked = proof.leaked_goids().collect();
        self.proof = Some(ProofSummary {
            at: SystemTime::now(),
            took_s: proof.took_ms / 1e3,
            leaked: proof.leaked,
            wakeable: proof.wakeable,
            unproven: proof.unproven,
        });
        None
    }

    /// Live goroutines per creation site, the top `max` kept (the rest
    /// summed under [`OTHER`]), each with its growth since first seen.
    fn site_counts(&mut self, user: &[&SnapGroup], max: usize) -> Vec<SiteCount> {
        let mut by_site: HashMap<String, u64> = HashMap::new();
        for g in user {
            *by_site
                .entry(site_label(g.created_at.as_ref()))
                .or_insert(0) += g.count as u64;
        }
        let mut all: Vec<(String, u64)> = by_site.into_iter().collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let rest: u64 = all.iter().skip(max).map(|s| s.1).sum();
        all.truncate(max);
        // Only the sites kept are remembered: the memory stays bounded.
        self.first
            .retain(|site, _| all.iter().any(|(s, _)| s == site));
        let mut out: Vec<SiteCount> = all
            .into_iter()
            .map(|(created, live)| {
                let first = *self.first.entry(created.clone()).or_insert(live);
                SiteCount {
                    growth: live as i64 - first as i64,
                    created,
                    live,
                }
            })
            .collect();
        if rest > 0 {
            out.push(SiteCount {
                created: OTHER.into(),
                live: rest,
                growth: 0,
            });
        }
        out
    }
}

/// "function file:line" of a frame (the file's base name: labels stay
/// short), or "unknown".
pub fn site_label(f: Option<&Frame>) -> String {
    match f {
        Some(Frame {
            function,
            file: Some(file),
            line,
        }) => {
            let base = file.rsplit('/').next().unwrap_or(file);
            format!("{function} {base}:{line}")
        }
        Some(f) => f.function.clone(),
        None => "unknown".into(),
    }
}

/// Goroutines per (creation site, blocked site).
fn site_rows(user: &[&SnapGroup], long_parked: &HashSet<u64>) -> Vec<SiteRow> {
    let mut rows: HashMap<(String, String), SiteRow> = HashMap::new();
    for g in user {
        let created = site_label(g.created_at.as_ref());
        let blocked = site_label(g.blocked_at.as_ref());
        let row = rows
            .entry((created.clone(), blocked.clone()))
            .or_insert_with(|| SiteRow {
                created,
                blocked,
                ..SiteRow::default()
            });
        row.live += g.count as u64;
        row.leaked += g.leaked as u64;
        if g.state.is_parked() {
            row.suspect += g
                .goids
                .iter()
                .filter(|id| long_parked.contains(id) && !g.leaked_goids.contains(id))
                .count() as u64;
        }
    }
    rows.into_values().collect()
}

/// The `max` rows with the most leaked, then suspect, then live
/// goroutines; the rest summed into one row under [`OTHER`].
pub fn cap_rows(mut rows: Vec<SiteRow>, max: usize) -> Vec<SiteRow> {
    rows.sort_by(|a, b| {
        (b.leaked, b.suspect, b.live)
            .cmp(&(a.leaked, a.suspect, a.live))
            .then_with(|| (&a.created, &a.blocked).cmp(&(&b.created, &b.blocked)))
    });
    if rows.len() <= max {
        return rows;
    }
    let mut other = SiteRow {
        created: OTHER.into(),
        blocked: OTHER.into(),
        ..SiteRow::default()
    };
    for r in rows.drain(max..) {
        other.live += r.live;
        other.leaked += r.leaked;
        other.suspect += r.suspect;
    }
    rows.push(other);
    rows
}

/// Keeps the largest groups and a few goids of each (groups are sorted by
/// count already).
fn trim(groups: &mut Vec<SnapGroup>, limits: &Limits) {
    groups.truncate(limits.max_groups);
    for g in groups {
        g.goids.truncate(limits.max_goids);
        g.leaked_goids.truncate(limits.max_goids);
        g.goids.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(c: &str, leaked: u64, suspect: u64, live: u64) -> SiteRow {
        SiteRow {
            created: c.into(),
            blocked: format!("{c}.blocked"),
            live,
            leaked,
            suspect,
        }
    }

    #[test]
    fn rows_over_the_cap_are_summed_under_other() {
        let rows: Vec<SiteRow> = (0..1000)
            .map(|i| row(&format!("s{i}"), i % 3, 1, 10))
            .collect();
        let capped = cap_rows(rows, 50);
        assert_eq!(capped.len(), 51);
        assert!(capped[..50].iter().all(|r| r.leaked == 2));
        let other = &capped[50];
        assert_eq!(
            (other.created.as_str(), other.blocked.as_str()),
            (OTHER, OTHER)
        );
        let total = |f: fn(&SiteRow) -> u64| capped.iter().map(f).sum::<u64>();
        assert_eq!(total(|r| r.live), 10_000);
        assert_eq!(total(|r| r.suspect), 1000);
        assert_eq!(
            total(|r| r.leaked),
            (0..1000u64).map(|i| i % 3).sum::<u64>()
        );
        assert_eq!(cap_rows(vec![row("a", 0, 0, 1)], 50).len(), 1);
    }

    /// A real Go program (tracer/testdata/probe -wait) read while it runs,
    /// then killed: the next sample is a counted error, not a crash.
    #[test]
    fn a_process_gone_is_an_error_kind() {
        use std::process::{Command, Stdio};
        assert_eq!(load(Path::new("/bin/sleep")).err(), Some(ErrorKind::NotGo));
        let path = crate::gobin::testutil::probe("1.27");
        let mut child = Command::new(&path)
            .arg("-wait")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        let limits = Limits {
            max_sites: 50,
            max_groups: 500,
            max_goids: 10,
            leak_threshold: Duration::from_secs(600),
        };
        let found = discover::look(pid).expect("the probe program");
        let mut w = Watched::new(found.clone(), Arc::new(load(&found.exe_path).unwrap()));
        let deadline = Instant::now() + Duration::from_secs(10);
        let sample = loop {
            // Its runtime may not have published its goroutines yet.
            match w.sample(&limits, false) {
                Ok((s, _)) if s.report.user > 0 => break s,
                _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                _ => panic!("no sample of the probe program"),
            }
        };
        let name = path.file_name().unwrap().to_str().unwrap();
        assert_eq!((sample.pid, sample.name.as_str()), (pid, name));
        assert!(sample.states.get("waiting").is_some_and(|n| *n >= 1));
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(w.sample(&limits, true).err(), Some(ErrorKind::Gone));
    }

    #[test]
    fn site_labels() {
        let f = Frame {
            function: "main.worker".into(),
            file: Some("/src/app/main.go".into()),
            line: 12,
        };
        assert_eq!(site_label(Some(&f)), "main.worker main.go:12");
        let nofile = Frame {
            file: None,
            ..f.clone()
        };
        assert_eq!(site_label(Some(&nofile)), "main.worker");
        assert_eq!(site_label(None), "unknown");
    }
}
