//! The host-wide loop: every interval, find the Go processes to watch
//! (following starts, restarts and exits), read each in turn, and publish
//! what the endpoints serve. One thread does it all, one process after
//! another, and the wait after a pass is stretched so that passes take at
//! most `--max-cpu` percent of one core: a host with many or large
//! processes is read less often, never at a higher cost.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Config;
use super::discover::{self, ExeId, Found, ProcId};
use super::watch::{self, ErrorKind, Loaded, Sample, Watched};

/// Executables remembered as not watchable (not Go, unsupported) before
/// the cache is emptied: a bound on the agent's memory on a busy host.
const MAX_REJECTED_EXES: usize = 4096;

/// The wait after a pass that took `took`: the rest of `interval`, and at
/// least what keeps the passes within `budget` percent of one core (a pass
/// is busy on one thread all along, at most).
pub fn pause(interval: Duration, took: Duration, budget: u32) -> Duration {
    let budget = budget.clamp(1, 100);
    let idle = took.mul_f64(f64::from(100 - budget) / f64::from(budget));
    interval.saturating_sub(took).max(idle)
}

/// What the HTTP endpoints read: the latest sample of each watched process
/// and the agent's own health.
#[derive(Default)]
pub struct Published {
    pub samples: BTreeMap<ProcId, Arc<Sample>>,
    pub errors: BTreeMap<&'static str, u64>,
    pub watched: usize,
    /// Duration of the latest full pass over every watched process.
    pub pass_s: f64,
    /// Time from the start of the latest pass to the start of the next:
    /// the interval, or longer to keep within the CPU budget.
    pub interval_s: f64,
    pub passes: u64,
}

impl Published {
    pub fn count(&mut self, kind: ErrorKind) {
        *self.errors.entry(kind.label()).or_insert(0) += 1;
    }
}

pub type Shared = Arc<Mutex<Published>>;

/// Locks `shared`; a panic while it was held (which exits the agent
/// anyway) leaves nothing half-written worth refusing.
pub fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Published> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct Host {
    cfg: Arc<Config>,
    shared: Shared,
    exes: HashMap<ExeId, Arc<Loaded>>,
    rejected_exes: HashMap<ExeId, ErrorKind>,
    watched: BTreeMap<ProcId, Watched>,
    /// Processes not watched, and why (each counted once as an error).
    rejected: HashMap<ProcId, ErrorKind>,
}

impl Host {
    pub fn new(cfg: Arc<Config>, shared: Shared) -> Host {
        Host {
            cfg,
            shared,
            exes: HashMap::new(),
            rejected_exes: HashMap::new(),
            watched: BTreeMap::new(),
            rejected: HashMap::new(),
        }
    }

    /// Runs passes every interval until `stop`.
    pub fn run(mut self, stop: Arc<AtomicBool>) {
        while !stop.load(Ordering::Relaxed) {
            let start = Instant::now();
            self.pass();
            let took = start.elapsed();
            let left = pause(self.cfg.interval, took, self.cfg.max_cpu_percent);
            lock(&self.shared).interval_s = (took + left).as_secs_f64();
            let wake = Instant::now() + left;
            // Sleep in short steps to notice `stop`.
            while !stop.load(Ordering::Relaxed) && Instant::now() < wake {
                std::thread::sleep(left.min(Duration::from_millis(100)));
            }
        }
    }

    /// One pass: discovery, then a sample of every watched process.
    pub fn pass(&mut self) {
        let start = Instant::now();
        self.follow(self.find());
        let limits = self.cfg.limits;
        let ids: Vec<ProcId> = self.watched.keys().copied().collect();
        for id in ids {
            let Some(w) = self.watched.get_mut(&id) else {
                continue;
            };
            let prove = w.proof_due(self.cfg.prove_every);
            let result = w.sample(&limits, prove);
            let mut p = lock(&self.shared);
            match result {
                Ok((sample, proof_error)) => {
                    if let Some(k) = proof_error {
                        p.count(k);
                    }
                    p.samples.insert(id, Arc::new(sample));
                }
                Err(kind) => {
                    p.count(kind);
                    if kind == ErrorKind::Gone || !discover::alive(id) {
                        p.samples.remove(&id);
                        drop(p);
                        self.watched.remove(&id);
                    }
                }
            }
        }
        let mut p = lock(&self.shared);
        p.watched = self.watched.len();
        p.pass_s = start.elapsed().as_secs_f64();
        p.passes += 1;
    }

    /// The processes the configuration selects.
    fn find(&self) -> Vec<Found> {
        if self.cfg.pids.is_empty() || self.cfg.pattern.is_some() {
            let mut all = discover::scan();
            all.retain(|f| self.cfg.selects(f));
            all
        } else {
            self.cfg
                .pids
                .iter()
                .filter_map(|&p| discover::look(p))
                .collect()
        }
    }

    /// Drops the processes that exited (their series go stale), then
    /// starts watching the new ones.
    fn follow(&mut self, found: Vec<Found>) {
        let now: HashSet<ProcId> = found.iter().map(|f| f.id).collect();
        let gone: Vec<ProcId> = self
            .watched
            .keys()
            .filter(|id| !now.contains(id))
            .copied()
            .collect();
        {
            let mut p = lock(&self.shared);
            for id in &gone {
                p.samples.remove(id);
            }
        }
        for id in gone {
            self.watched.remove(&id);
        }
        self.rejected.retain(|id, _| now.contains(id));
        // Executables no watched process runs any more are let go.
        self.exes.retain(|_, l| Arc::strong_count(l) > 1);
        for f in found {
            let retry = match self.rejected.get(&f.id) {
                None => !self.watched.contains_key(&f.id),
                // Room may have been made since.
                Some(ErrorKind::ProcessCap) => self.watched.len() < self.cfg.max_processes,
                Some(_) => false,
            };
            if retry {
                self.start_watching(f);
            }
        }
    }

    fn start_watching(&mut self, f: Found) {
        let explicit = self.cfg.explicit();
        // Whether it is a Go program gotrace reads comes first: a process
        // over the cap is counted as such only if it would be watched.
        let full = self.watched.len() >= self.cfg.max_processes;
        let result = self.loaded(&f).and_then(|l| {
            if full {
                Err(ErrorKind::ProcessCap)
            } else {
                Ok(l)
            }
        });
        match result {
            Ok(loaded) => {
                self.rejected.remove(&f.id);
                self.watched.insert(f.id, Watched::new(f, loaded));
            }
            Err(kind) => {
                let before = self.rejected.insert(f.id, kind);
                // Without --pid/--match every process is looked at: that
                // most are not Go is no error.
                if before != Some(kind) && (explicit || kind != ErrorKind::NotGo) {
                    lock(&self.shared).count(kind);
                }
            }
        }
    }

    /// The opened executable of `f`, opened once per file.
    fn loaded(&mut self, f: &Found) -> Result<Arc<Loaded>, ErrorKind> {
        if let Some(l) = self.exes.get(&f.exe) {
            return Ok(Arc::clone(l));
        }
        if let Some(&kind) = self.rejected_exes.get(&f.exe) {
            return Err(kind);
        }
        match watch::load(&f.exe_path) {
            Ok(l) => {
                let l = Arc::new(l);
                self.exes.insert(f.exe, Arc::clone(&l));
                Ok(l)
            }
            Err(kind) => {
                if self.rejected_exes.len() >= MAX_REJECTED_EXES {
                    self.rejected_exes.clear();
                }
                // A process that exited says nothing about its file.
                if kind != ErrorKind::Gone {
                    self.rejected_exes.insert(f.exe, kind);
                }
                Err(kind)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_stay_within_the_cpu_budget() {
        let ms = Duration::from_millis;
        // A short pass: the rest of the interval.
        assert_eq!(pause(ms(1000), ms(50), 10), ms(950));
        // A long one (a proof): nine times as long idle at 10 %.
        assert_eq!(pause(ms(1000), ms(500), 10), ms(4500));
        assert_eq!(pause(ms(1000), ms(2000), 50), ms(2000));
        assert_eq!(pause(ms(1000), ms(2000), 100), ms(0));
        assert_eq!(pause(ms(1000), ms(10), 0), ms(990));
    }
}
