//! Samples: a goroutine snapshot of the target (the `snapshot` module's
//! reading, which never stops it) taken periodically while a trace runs,
//! and folded into the model (`Model::observe`). One [`Sampler`] per
//! trace keeps what makes samples comparable: stack ids that do not change
//! from one sample to the next, and which goroutine each g held last.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::record::Recorder;
use crate::gobin::GoBinary;
use crate::gobin::layout::RuntimeLayout;
use crate::model::existing::Snapshot;
use crate::model::{Model, SampleRules};
use crate::probe::budget::{round3, thread_cpu_ns};
use crate::snapshot::{SnapshotError, StackIds};

/// The shortest interval between samples by default.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// Reading takes at most 1/`DUTY` of the time: a process whose goroutines
/// take 30 ms of gotrace's CPU to read is sampled every 1.5 s, not every
/// second. CPU time, not wall time: a reader descheduled on a busy machine
/// costs no more, and must not thin the samples out (a 60 ms wall-clock
/// read of 5 000 goroutines on a loaded VM made it sample every 3 s).
const DUTY: u32 = 50;

/// What the samples of a trace did (`trace.samples` in the report).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SampleInfo {
    /// Samples read and folded into the model (the one at attach included).
    pub taken: u64,
    /// Samples that could not be read (the last error in `error`).
    pub failed: u64,
    pub error: Option<String>,
    /// The shortest interval asked for (`--sample-interval`), in seconds.
    pub interval_s: f64,
    /// The longest interval used: longer than `interval_s` when reading
    /// the goroutines took more than 1/50 of it in gotrace's CPU time.
    pub max_interval_s: f64,
    /// Time one sample took to read: the longest, and all of them together.
    pub took_ms_max: f64,
    pub took_ms_total: f64,
    /// gotrace's CPU time (user and system) for one sample: the longest.
    /// What stretches the interval.
    #[serde(default)]
    pub cpu_ms_max: f64,
    /// Most goroutines one sample held.
    pub goroutines_max: u64,
    /// Over every sample: goroutines that kept changing while read (kept,
    /// without a stack), gs never read consistently (left out), stacks
    /// whose frame-pointer chain broke.
    pub unstable: u64,
    pub skipped: u64,
    pub stacks_truncated: u64,
    /// Times a live goroutine was missing from a sample because its g was
    /// unreadable: kept alive rather than counted as an exit.
    pub kept_unread: u64,
}

/// Takes the samples of one trace.
pub struct Sampler<'a> {
    pub pid: u32,
    bin: &'a GoBinary,
    layout: &'a RuntimeLayout,
    /// The target's executable, where a PIE's load bias is found.
    exe: &'a std::path::Path,
    /// Load bias, once the target runs its binary (a command gotrace
    /// started does not until it execs).
    pub bias: Option<u64>,
    ids: StackIds,
    /// (g pointer, goid) of the last sample, sorted: which goroutine a g
    /// that a later sample cannot read held.
    last_gs: Vec<(u64, u64)>,
    /// Every stack a sample read, by id (the capture keeps those the model
    /// still refers to).
    pub stacks: BTreeMap<i32, Vec<u64>>,
    interval: Duration,
    next: Duration,
    pub info: SampleInfo,
    /// When the last sample was taken, and the highest goid its gs held.
    pub last_goid: Option<(u64, u64)>,
}

impl<'a> Sampler<'a> {
    pub fn new(
        pid: u32,
        bin: &'a GoBinary,
        layout: &'a RuntimeLayout,
        exe: &'a std::path::Path,
        interval: Duration,
    ) -> Self {
        Self {
            pid,
            bin,
            layout,
            exe,
            bias: None,
            ids: StackIds::default(),
            last_gs: Vec::new(),
            stacks: BTreeMap::new(),
            interval,
            next: interval,
            info: SampleInfo {
                interval_s: round3(interval.as_secs_f64()),
                ..SampleInfo::default()
            },
            last_goid: None,
        }
    }

    /// How long to wait before the next sample: the interval asked for,
    /// stretched so that reading takes at most 1/50 of the time.
    pub fn next_interval(&self) -> Duration {
        self.next
    }

    /// Reads the goroutines now (counted, and the error kept, when it
    /// fails).
    pub fn read(&mut self) -> Result<Snapshot, SnapshotError> {
        if self.bias.is_none() {
            self.bias = if self.bin.is_pie() {
                crate::process::load_bias(self.pid, self.exe)
            } else {
                Some(0)
            };
        }
        let bias = self
            .bias
            .ok_or_else(|| SnapshotError::Unsupported("the executable is not mapped yet".into()));
        let cpu = thread_cpu_ns();
        let snap = bias.and_then(|bias| {
            crate::snapshot::take_with(self.pid, self.bin, self.layout, bias, &mut self.ids)
        });
        let cpu_ns = (thread_cpu_ns() - cpu).max(0.0);
        match &snap {
            Ok(s) => self.account(s, cpu_ns),
            Err(e) => {
                self.info.failed += 1;
                self.info.error = Some(e.to_string());
            }
        }
        snap
    }

    fn account(&mut self, s: &Snapshot, cpu_ns: f64) {
        let i = &mut self.info;
        self.next = self
            .interval
            .max(Duration::from_nanos(cpu_ns as u64) * DUTY);
        i.taken += 1;
        i.max_interval_s = i.max_interval_s.max(round3(self.next.as_secs_f64()));
        // Whole µs: the figures go through JSON in a recording.
        i.took_ms_max = i.took_ms_max.max(round3(s.took_ns as f64 / 1e6));
        i.took_ms_total = round3(i.took_ms_total + s.took_ns as f64 / 1e6);
        i.cpu_ms_max = i.cpu_ms_max.max(round3(cpu_ns / 1e6));
        i.goroutines_max = i.goroutines_max.max(s.goroutines.len() as u64);
        i.unstable += s.stats.unstable;
        i.skipped += s.stats.skipped;
        i.stacks_truncated += s.stats.stacks_truncated;
        for (id, pcs) in &s.stacks {
            self.stacks.entry(*id).or_insert_with(|| pcs.clone());
        }
        self.last_goid = Some((s.taken_ns, s.stats.max_goid));
    }

    /// The goids whose g this sample could not read (sorted), from which
    /// goroutine each g held in the previous sample; then remembers this
    /// sample's gs.
    fn unread(&mut self, s: &Snapshot) -> Vec<u64> {
        let mut unread: Vec<u64> = s
            .skipped_gps
            .iter()
            .filter_map(|gp| {
                let i = self.last_gs.binary_search_by_key(gp, |(g, _)| *g).ok()?;
                Some(self.last_gs[i].1)
            })
            .collect();
        unread.sort_unstable();
        self.last_gs = s.goroutines.iter().map(|g| (g.gp, g.goid)).collect();
        self.last_gs.sort_unstable();
        unread
    }

    /// The first reading of a trace of a running process, for the caller
    /// to seed the model with.
    pub fn first(&mut self) -> Result<Snapshot, SnapshotError> {
        let snap = self.read()?;
        self.unread(&snap);
        Ok(snap)
    }

    /// [`Sampler::sample`], read through thread `tid` of the target: a
    /// command held at its exit, whose leader may be gone already.
    pub fn sample_through(
        &mut self,
        tid: u32,
        model: &mut Model,
        rules: SampleRules,
        recorder: Option<&mut Recorder>,
    ) -> bool {
        let pid = std::mem::replace(&mut self.pid, tid);
        let read = self.sample(model, rules, recorder);
        self.pid = pid;
        read
    }

    /// Takes a sample and folds it into `model` under `rules` (and into
    /// the recording); false when it could not be read (counted).
    pub fn sample(
        &mut self,
        model: &mut Model,
        rules: SampleRules,
        recorder: Option<&mut Recorder>,
    ) -> bool {
        let Ok(snap) = self.read() else {
            return false;
        };
        let unread = self.unread(&snap);
        if let Some(r) = recorder {
            r.sample(&snap, rules, &unread);
        }
        model.observe(&snap, rules, &unread);
        self.info.kept_unread = model.goroutines.sampling().kept_unread;
        true
    }
}
