//! Loads the embedded eBPF object and attaches its uprobes to one process.

use std::{num::NonZeroU32, path::Path};

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{
        ProgramError, UProbe,
        uprobe::{UProbeAttachLocation, UProbeLinkId, UProbeScope},
    },
};
use tracer_common::Config;

use super::{counters, goroutine::AttachPoint};

/// The eBPF object built by `build.rs` (aya-build) from `tracer-ebpf`.
pub(crate) static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer-ebpf"));

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(
        "permission denied loading eBPF programs: {}",
        permission_advice(false)
    )]
    Permission,
    #[error("permission denied creating uprobes: {}", permission_advice(true))]
    UprobePermission,
    #[error("loading the eBPF object: {0}")]
    Load(#[source] aya::EbpfError),
    #[error("eBPF program {0} missing from the object")]
    MissingProgram(&'static str),
    #[error("eBPF map {0} missing from the object")]
    MissingMap(&'static str),
    #[error("program {program}: {source}")]
    Program {
        program: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("attaching {program} to {symbol}+{vaddr:#x}: {source}")]
    Attach {
        program: &'static str,
        symbol: &'static str,
        vaddr: u64,
        #[source]
        source: ProgramError,
    },
    #[error("reading the probes' diagnostics: {0}")]
    Log(String),
    #[error("timing one probe hit: {0}")]
    Calibration(String),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
}

/// What to do about a refusal: get the capabilities when gotrace lacks
/// one, else what else refuses (read when the error is shown).
fn permission_advice(uprobes: bool) -> String {
    use crate::process::{CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN, CAP_SYS_PTRACE, KernelFacts};
    let (get, needed): (&str, &[(u32, &str)]) = if uprobes {
        (
            "run gotrace as root (the kernel requires CAP_SYS_ADMIN for uprobes, with CAP_SYS_PTRACE for other users' processes)",
            &[
                (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
                (CAP_SYS_PTRACE, "CAP_SYS_PTRACE"),
            ],
        )
    } else {
        (
            "run gotrace as root (or with CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN and CAP_SYS_PTRACE)",
            &[
                (CAP_BPF, "CAP_BPF"),
                (CAP_PERFMON, "CAP_PERFMON"),
                (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
                (CAP_SYS_PTRACE, "CAP_SYS_PTRACE"),
            ],
        )
    };
    KernelFacts::gather().advice(get, needed)
}

fn is_eperm(e: &(dyn std::error::Error + 'static)) -> bool {
    has_errno(e, libc::EPERM)
}

/// Some error in the chain is the OS error `errno`: as an `io::Error`, or in
/// the text of an error that dropped its source ("... (os error 1)").
///
/// EACCES from BPF_PROG_LOAD is the verifier rejecting a program, not a
/// privilege error: callers ask for EACCES only where it means privilege.
fn has_errno(e: &(dyn std::error::Error + 'static), errno: i32) -> bool {
    let suffix = format!("(os error {errno})");
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let io = err
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.raw_os_error() == Some(errno));
        let text = err.to_string();
        let eperm_text = errno == libc::EPERM && text.contains("Operation not permitted");
        if io || eperm_text || text.ends_with(&suffix) {
            return true;
        }
        cur = err.source();
    }
    false
}

/// The do-nothing program of `--bench-empty-probes` (the benchmark floor).
const EMPTY_PROGRAM: &str = "gotrace_empty";

#[derive(Clone, Copy, Debug)]
pub struct AttachOptions {
    /// Ring buffer size in bytes (a power of two, at least a page).
    pub ring_bytes: u32,
    /// Attach the empty program at every point instead of the real ones.
    pub empty_programs: bool,
    /// Turn on the probes' diagnostics (aya-log), printed on stderr.
    pub debug_probes: bool,
}

/// Loaded and attached probes. Dropping this detaches every uprobe.
pub struct Probes {
    ebpf: Ebpf,
    attached: usize,
    /// The programs loaded into the kernel.
    loaded: Vec<&'static str>,
    /// Every uprobe still attached, with its program: what the overhead
    /// budget detaches.
    links: Vec<(&'static str, UProbeLinkId)>,
    /// Where and for whom points attach (`attach_more`).
    binary: std::path::PathBuf,
    scope: UProbeScope,
    empty_programs: bool,
    /// (program, CLOCK_MONOTONIC ns) of each uprobe `detach` removed, as
    /// the kernel finishes removing it.
    removed: std::sync::Arc<std::sync::Mutex<Vec<(&'static str, u64)>>>,
    /// Reads the probes' diagnostics (`--debug-probes`).
    logs: Option<aya_log::EbpfLogger<ProbeLog>>,
}

impl Probes {
    /// Loads the object with `config` and a ring buffer of `ring_bytes`, and
    /// attaches every point to `binary` (a path the kernel resolves to the
    /// target's executable inode, e.g. `/proc/PID/exe`) for process `pid` only.
    pub fn attach(
        config: Config,
        binary: &Path,
        pid: u32,
        points: &[AttachPoint],
        opts: AttachOptions,
    ) -> Result<Self, ProbeError> {
        let ring_bytes = opts.ring_bytes;
        let config = Config {
            ring_bytes: u64::from(ring_bytes),
            ..config
        };
        let mut ebpf = load_object(&config, Some(ring_bytes), opts.debug_probes)?;
        let logs = if opts.debug_probes {
            Some(
                aya_log::EbpfLogger::init_with_logger(&mut ebpf, ProbeLog)
                    .map_err(|e| ProbeError::Log(e.to_string()))?,
            )
        } else {
            None
        };
        let mut probes = Probes {
            ebpf,
            attached: 0,
            loaded: Vec::new(),
            links: Vec::new(),
            binary: binary.to_path_buf(),
            scope: match NonZeroU32::new(pid) {
                Some(pid) => UProbeScope::OneProcess(pid),
                None => UProbeScope::AllProcesses,
            },
            empty_programs: opts.empty_programs,
            removed: Default::default(),
            logs,
        };
        probes.attach_more(points)?;
        Ok(probes)
    }

    /// Attaches more points (the overhead budget admits a group of probes
    /// during the trace).
    pub fn attach_more(&mut self, points: &[AttachPoint]) -> Result<(), ProbeError> {
        let binary = self.binary.clone();
        for point in points {
            let point = &AttachPoint {
                program: if self.empty_programs {
                    EMPTY_PROGRAM
                } else {
                    point.program
                },
                ..point.clone()
            };
            let link = self.attach_point(point, &binary, self.scope)?;
            self.links.push((point.program, link));
            self.attached += 1;
        }
        Ok(())
    }

    /// Loads `point`'s program (once) and attaches it at `point` in
    /// `binary`.
    pub(super) fn attach_point(
        &mut self,
        point: &AttachPoint,
        binary: &Path,
        scope: UProbeScope,
    ) -> Result<UProbeLinkId, ProbeError> {
        let program: &mut UProbe = self
            .ebpf
            .program_mut(point.program)
            .ok_or(ProbeError::MissingProgram(point.program))?
            .try_into()
            .map_err(|source| ProbeError::Program {
                program: point.program,
                source,
            })?;
        if !self.loaded.contains(&point.program) {
            program.load().map_err(|source| {
                if is_eperm(&source) {
                    ProbeError::Permission
                } else {
                    ProbeError::Program {
                        program: point.program,
                        source,
                    }
                }
            })?;
            self.loaded.push(point.program);
        }
        program
            .attach(
                UProbeAttachLocation::AbsoluteOffset(point.file_offset),
                binary,
                scope,
            )
            .map_err(|source| {
                // perf_event_open of a uprobe: EACCES without
                // CAP_SYS_ADMIN (perfmon_capable() is not enough since the
                // 2024 kernel fix), EPERM without ptrace rights.
                if is_eperm(&source) || has_errno(&source, libc::EACCES) {
                    ProbeError::UprobePermission
                } else {
                    ProbeError::Attach {
                        program: point.program,
                        symbol: point.symbol,
                        vaddr: point.vaddr,
                        source,
                    }
                }
            })
    }

    /// Detaches `link`, a uprobe of `program`.
    pub(super) fn detach_link(
        &mut self,
        program: &'static str,
        link: UProbeLinkId,
    ) -> Result<(), ProbeError> {
        let p: &mut UProbe = self
            .ebpf
            .program_mut(program)
            .ok_or(ProbeError::MissingProgram(program))?
            .try_into()
            .map_err(|source| ProbeError::Program { program, source })?;
        p.detach(link)
            .map_err(|source| ProbeError::Program { program, source })
    }

    /// Detaches every uprobe of the programs in `programs`, in that order,
    /// without waiting; how many. The kernel removes uprobes one at a time,
    /// each after a grace period (on a loaded 2-core VM, 100 to 400 ms
    /// each), and a uprobe costs the target until then: a thread drops the
    /// links, the session goes on.
    pub fn detach(&mut self, programs: &[&str]) -> Result<usize, ProbeError> {
        let (mut gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.links)
            .into_iter()
            .partition(|(p, _)| programs.contains(p));
        self.links = kept;
        gone.sort_by_key(|(p, _)| programs.iter().position(|q| q == p));
        let mut links = Vec::with_capacity(gone.len());
        for (program, id) in gone {
            let p: &mut UProbe = self
                .ebpf
                .program_mut(program)
                .ok_or(ProbeError::MissingProgram(program))?
                .try_into()
                .map_err(|source| ProbeError::Program { program, source })?;
            let link = p
                .take_link(id)
                .map_err(|source| ProbeError::Program { program, source })?;
            links.push((program, link));
        }
        let n = links.len();
        let removed = self.removed.clone();
        std::thread::spawn(move || {
            for (program, link) in links {
                drop(link);
                let now = crate::process::monotonic_ns();
                removed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((program, now));
            }
        });
        Ok(n)
    }

    /// When the kernel finished removing each uprobe `detach` was given:
    /// (program, CLOCK_MONOTONIC ns), so far.
    pub fn removed(&self) -> Vec<(&'static str, u64)> {
        self.removed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Number of uprobes attached, those detached since included.
    pub fn attached(&self) -> usize {
        self.attached
    }

    /// Number of uprobes attached now.
    pub fn attached_now(&self) -> usize {
        self.links.len()
    }

    /// The hit counters per program; `None` when unreadable.
    pub fn hits(&self) -> Option<std::collections::BTreeMap<tracer_common::Program, u64>> {
        let map = self.ebpf.map("COUNTERS")?;
        let arr = PerCpuArray::<&MapData, u64>::try_from(map).ok()?;
        counters::read_hits(&arr)
    }

    /// Takes the ring buffer (once).
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, ProbeError> {
        let map = self
            .ebpf
            .take_map("EVENTS")
            .ok_or(ProbeError::MissingMap("EVENTS"))?;
        RingBuf::try_from(map).map_err(|source| ProbeError::Map {
            name: "EVENTS",
            source,
        })
    }

    /// The kernel-side counters; every count unknown (`None`) when the map
    /// cannot be read.
    pub fn counters(&self) -> counters::KernelCounters {
        let arr = self.ebpf.map("COUNTERS").and_then(|map| {
            PerCpuArray::<&MapData, u64>::try_from(map)
                .inspect_err(|e| log::warn!("counters map: {e}"))
                .ok()
        });
        match arr {
            Some(arr) => counters::read(&arr),
            None => counters::KernelCounters::default(),
        }
    }

    /// Prints the probes' diagnostics waiting in their buffer (nothing
    /// without `--debug-probes`).
    pub fn flush_logs(&mut self) {
        if let Some(l) = self.logs.as_mut() {
            l.flush();
        }
    }
}

/// Prints each diagnostic of the probes as one stderr line.
struct ProbeLog;

impl log::Log for ProbeLog {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        eprintln!("gotrace: probe: {}", record.args());
    }

    fn flush(&self) {}
}

/// What the kernel says about one loaded program.
#[derive(Clone, Copy, Debug)]
pub struct ProgramStats {
    /// Instructions after verification and rewriting (`xlated_prog_len / 8`),
    /// subprograms included.
    pub xlated_insns: u32,
    /// Size of the JIT-compiled code.
    pub jited_bytes: u32,
    /// Instructions the verifier processed (its complexity measure, limited
    /// to 1 M): `bpf_prog_info.verified_insns`, Linux 5.16+ only.
    pub verified_insns: Option<u32>,
}

/// One program of the object, loaded by [`load_every_program`].
#[derive(Debug)]
pub struct ProgramCheck {
    pub name: String,
    /// The kernel's figures, or why it refused the program (with the
    /// verifier's log).
    pub result: Result<ProgramStats, String>,
}

/// Loads the embedded object with `config` (and a ring buffer of
/// `ring_bytes`, else the object's default; the probes' diagnostics on with
/// `debug`): maps created, programs not yet.
fn load_object(config: &Config, ring_bytes: Option<u32>, debug: bool) -> Result<Ebpf, ProbeError> {
    let _ = bump_memlock_rlimit();
    let mut loader = EbpfLoader::new();
    loader.override_global("CONFIG", config, true);
    // Both in .rodata: with 0 the verifier prunes every diagnostic path.
    let debug_flag = u8::from(debug);
    loader.override_global("DEBUG_PROBES", &debug_flag, true);
    let level = if debug {
        aya_log::Level::Trace as u8
    } else {
        0
    };
    loader.override_global(aya_log::LEVEL, &level, true);
    if let Some(bytes) = ring_bytes {
        loader.map_max_entries("EVENTS", bytes);
    }
    loader.load(EBPF_OBJECT).map_err(|e| {
        if is_eperm(&e) {
            ProbeError::Permission
        } else {
            ProbeError::Load(e)
        }
    })
}

/// Loads every program of the embedded object into the running kernel with
/// `config` (and the diagnostics on with `debug`), attaching nothing. Fails only when the object's maps cannot be
/// created; each program's outcome is in its [`ProgramCheck`].
pub fn load_every_program(config: Config, debug: bool) -> Result<Vec<ProgramCheck>, ProbeError> {
    let mut ebpf = load_object(&config, None, debug)?;
    let mut checks = Vec::new();
    for (name, program) in ebpf.programs_mut() {
        let result = (|| -> Result<ProgramStats, ProgramError> {
            let uprobe: &mut UProbe = program.try_into()?;
            uprobe.load()?;
            let info = uprobe.info()?;
            Ok(ProgramStats {
                xlated_insns: info.size_translated().unwrap_or(0) / 8,
                jited_bytes: info.size_jitted(),
                verified_insns: info.verified_instruction_count(),
            })
        })();
        checks.push(ProgramCheck {
            name: name.to_string(),
            result: result.map_err(|e| {
                if is_eperm(&e) {
                    ProbeError::Permission.to_string()
                } else {
                    error_chain(&e)
                }
            }),
        });
    }
    checks.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(checks)
}

/// An error and its sources, joined (the verifier log is in the load error).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(err) = cur {
        text.push_str(": ");
        text.push_str(&err.to_string());
        cur = err.source();
    }
    text
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK.
fn bump_memlock_rlimit() -> std::io::Result<()> {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall with a valid pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
