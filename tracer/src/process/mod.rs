//! The traced process: find it, or start it held before exec so no goroutine
//! is missed, and notice when it exits (a command gotrace started: held at
//! its exit through ptrace, [`ptrace`]).

pub mod cpu;
pub mod lock;
pub mod mem;
pub mod ptrace;

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use tokio::io::unix::AsyncFd;

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("no process with PID {0}")]
    NoSuchProcess(u32),
    /// `advice` comes from [`AccessFacts::advice`].
    #[error("permission denied inspecting PID {pid}: {advice}")]
    Permission { pid: u32, advice: String },
    #[error("PID {pid}: {source}")]
    Proc {
        pid: u32,
        #[source]
        source: io::Error,
    },
    #[error("command not found: {0}")]
    CommandNotFound(String),
    #[error("command contains a NUL byte")]
    Nul,
    #[error("starting {path}: {source}")]
    Spawn {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Path of a running process's executable, as the kernel resolves it (works
/// across mount namespaces).
pub fn exe_of(pid: u32) -> Result<PathBuf, TargetError> {
    if pid == 0 || !Path::new(&format!("/proc/{pid}")).exists() {
        return Err(TargetError::NoSuchProcess(pid));
    }
    let link = PathBuf::from(format!("/proc/{pid}/exe"));
    match std::fs::read_link(&link) {
        Ok(_) => Ok(link),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(TargetError::NoSuchProcess(pid)),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Err(TargetError::Permission {
            pid,
            advice: AccessFacts::gather(pid).advice(),
        }),
        Err(source) => Err(TargetError::Proc { pid, source }),
    }
}

/// Resolves a command name through PATH the way execvp would.
pub fn resolve_command(name: &str) -> Result<PathBuf, TargetError> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(TargetError::CommandNotFound(name.into()))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| TargetError::CommandNotFound(name.into()))
}

/// A forked child stopped before exec, waiting for [`HeldChild::release`].
pub struct HeldChild {
    pub pid: u32,
    release: Option<OwnedFd>,
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: valid out-pointer for two fds.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fds owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Forks; the child blocks reading a pipe, then execs `path` with `args`.
/// Call this while the process is still single-threaded (before the tokio
/// runtime starts): the child only calls async-signal-safe functions.
pub fn spawn_held(path: &Path, args: &[String]) -> Result<HeldChild, TargetError> {
    let spawn_err = |source| TargetError::Spawn {
        path: path.to_path_buf(),
        source,
    };
    let prog = CString::new(path.as_os_str().as_bytes()).map_err(|_| TargetError::Nul)?;
    let argv: Vec<CString> = args
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|_| TargetError::Nul)?;
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let (rd, wr) = pipe().map_err(spawn_err)?;
    // SAFETY: fork; the child below only uses read/close/execv/_exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(spawn_err(io::Error::last_os_error()));
    }
    if pid == 0 {
        // Child: wait for the tracer to attach, then exec.
        unsafe {
            libc::close(wr.as_raw_fd());
            let mut b = 0u8;
            let n = libc::read(rd.as_raw_fd(), (&mut b as *mut u8).cast(), 1);
            if n != 1 {
                // The tracer went away without releasing us.
                libc::_exit(126);
            }
            libc::execv(prog.as_ptr(), argv_ptrs.as_ptr());
            libc::_exit(127);
        }
    }
    drop(rd);
    Ok(HeldChild {
        pid: pid as u32,
        release: Some(wr),
    })
}

impl HeldChild {
    /// Lets the child exec.
    pub fn release(&mut self) -> io::Result<()> {
        if let Some(fd) = self.release.take() {
            // SAFETY: writing one byte from a valid buffer to our pipe.
            let n = unsafe { libc::write(fd.as_raw_fd(), b"g".as_ptr().cast(), 1) };
            if n != 1 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// Kills and reaps a child that was never released (attach failed).
    pub fn abort(self) {
        let pid = self.pid as i32;
        self.kill();
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    }

    /// Kills a child that was never released, leaving the reaping to its
    /// ptrace thread (which owns every wait on it).
    pub fn kill(mut self) {
        self.release = None; // closing the pipe makes the child _exit(126)
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
    }
}

/// Becomes ready when a process exits (pidfd, Linux 5.3+): `--pid`, and a
/// command that ptrace was refused for.
pub struct ExitWatcher {
    pid: u32,
    fd: AsyncFd<OwnedFd>,
    is_child: bool,
}

impl ExitWatcher {
    pub fn new(pid: u32, is_child: bool) -> Result<Self, TargetError> {
        // SAFETY: pidfd_open(pid, 0) returns a new fd or -1.
        let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
        if raw < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::ESRCH) => TargetError::NoSuchProcess(pid),
                _ => TargetError::Proc { pid, source: e },
            });
        }
        // SAFETY: fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw as RawFd) };
        // SAFETY: the AsyncFd owns the OwnedFd, so the fd stays open and
        // refers to the same pidfd for the AsyncFd's whole life.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            .map_err(|e| TargetError::Proc {
                pid,
                source: e.into(),
            })?;
        Ok(Self { pid, fd, is_child })
    }

    /// Waits for the exit; for our own child, reaps it and describes the status.
    pub async fn exited(&self) -> Option<String> {
        let _ = self.fd.readable().await;
        if !self.is_child {
            return None;
        }
        let mut status = 0;
        // SAFETY: reaping our own exited child.
        let r = unsafe { libc::waitpid(self.pid as i32, &mut status, 0) };
        (r == self.pid as i32).then(|| ptrace::describe_status(status))
    }
}

/// How the session learns that the target ends.
pub enum TargetExit {
    /// A pidfd (see [`ExitWatcher`]).
    Watched(ExitWatcher),
    /// The ptrace thread of a command gotrace started: it holds the
    /// command at its exit first.
    Traced(ptrace::TracedChild),
}

/// What [`TargetExit::next`] reports.
#[derive(Debug)]
pub enum ExitEvent {
    /// The command is held at its exit (see [`ptrace::ExitHold`]).
    Held(ptrace::ExitHold),
    /// The target is gone; how, when known ("exit status 0").
    Exited(Option<String>),
}

impl TargetExit {
    /// The next event; cancel-safe (for `select!`).
    pub async fn next(&mut self) -> ExitEvent {
        match self {
            TargetExit::Watched(w) => ExitEvent::Exited(w.exited().await),
            TargetExit::Traced(t) => match t.next().await {
                Some(ptrace::ChildEvent::HeldAtExit(h)) => ExitEvent::Held(h),
                Some(ptrace::ChildEvent::Exited(how)) => ExitEvent::Exited(Some(how)),
                None => ExitEvent::Exited(None),
            },
        }
    }
}

/// CLOCK_MONOTONIC in ns: the clock `bpf_ktime_get_ns` uses.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Lowest PT_LOAD address the executable was linked at (Go PIEs use
/// 0x400000, like non-PIE builds).
fn link_base(exe: &Path) -> Option<u64> {
    use object::{Object as _, ObjectSegment as _};
    let data = std::fs::read(exe).ok()?;
    let file = object::File::parse(&*data).ok()?;
    file.segments().map(|s| s.address()).min()
}

/// Load bias of a PIE executable in `pid`: where its file-offset-0 mapping
/// starts minus where the ELF was linked to start. None until `pid` runs
/// `binary` (a held child still runs gotrace's image until it execs).
pub fn load_bias(pid: u32, binary: &Path) -> Option<u64> {
    if !runs(pid, binary)? {
        return None;
    }
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let base = link_base(Path::new(&format!("/proc/{pid}/exe")))? & !0xfff;
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    maps.lines().find_map(|line| {
        let mut parts = line.split_whitespace();
        let range = parts.next()?;
        let _perms = parts.next()?;
        let offset = parts.next()?;
        let _dev = parts.next()?;
        let _inode = parts.next()?;
        let path = parts.next()?;
        (Path::new(path) == exe && u64::from_str_radix(offset, 16).ok()? == 0)
            .then(|| u64::from_str_radix(range.split('-').next()?, 16).ok())
            .flatten()
            .map(|start| start.wrapping_sub(base))
    })
}

/// Whether `pid` runs `binary` (same file); None when either cannot be
/// looked at.
pub fn runs(pid: u32, binary: &Path) -> Option<bool> {
    use std::os::unix::fs::MetadataExt as _;
    let (running, wanted) = (
        std::fs::metadata(format!("/proc/{pid}/exe")).ok()?,
        std::fs::metadata(binary).ok()?,
    );
    Some((running.dev(), running.ino()) == (wanted.dev(), wanted.ino()))
}

/// Notices the target exec'ing another program: its uprobes go with the old
/// image, so the trace must end there.
pub struct ExecWatch {
    pid: u32,
    file: (u64, u64),
    /// The process has been seen running the traced binary (a held child
    /// runs gotrace's own image until it execs the target).
    seen: bool,
}

impl ExecWatch {
    /// Watches `pid`, traced as `binary`.
    pub fn new(pid: u32, binary: &Path) -> Option<Self> {
        use std::os::unix::fs::MetadataExt as _;
        let m = std::fs::metadata(binary).ok()?;
        Some(Self {
            pid,
            file: (m.dev(), m.ino()),
            seen: false,
        })
    }

    /// The new executable's path once the process runs a binary other than
    /// the traced one, after having run it.
    pub fn new_exe(&mut self) -> Option<String> {
        use std::os::unix::fs::MetadataExt as _;
        let exe = format!("/proc/{}/exe", self.pid);
        let m = std::fs::metadata(&exe).ok()?;
        if (m.dev(), m.ino()) == self.file {
            self.seen = true;
            return None;
        }
        if !self.seen {
            return None;
        }
        Some(
            std::fs::read_link(&exe)
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| "another program".into()),
        )
    }
}

/// Capability bits in the sets of /proc/PID/status.
pub const CAP_SYS_PTRACE: u32 = 19;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// A field of /proc/self/status ("CapEff", "Seccomp"), trimmed.
fn own_status(field: &str) -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
}

/// gotrace's user namespace maps every uid to itself (the initial one).
fn initial_user_ns() -> Option<bool> {
    let map = std::fs::read_to_string("/proc/self/uid_map").ok()?;
    Some(map.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"])
}

/// What the system says about gotrace's own privileges, gathered when the
/// kernel refused to load eBPF programs or create uprobes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelFacts {
    /// gotrace's effective capabilities; None when unreadable.
    pub cap_eff: Option<u64>,
    /// `/sys/kernel/security/lockdown` ("none [integrity] confidentiality").
    pub lockdown: Option<String>,
    /// Seccomp mode of gotrace (0 none, 1 strict, 2 filter).
    pub seccomp: Option<u32>,
    pub initial_user_ns: Option<bool>,
    pub lsms: Option<String>,
}

impl KernelFacts {
    pub fn gather() -> KernelFacts {
        let read = |p: &str| std::fs::read_to_string(p).ok().map(|s| s.trim().to_owned());
        KernelFacts {
            cap_eff: own_status("CapEff").and_then(|h| u64::from_str_radix(&h, 16).ok()),
            lockdown: read("/sys/kernel/security/lockdown"),
            seccomp: own_status("Seccomp").and_then(|v| v.parse().ok()),
            initial_user_ns: initial_user_ns(),
            lsms: read("/sys/kernel/security/lsm"),
        }
    }

    /// What to do about an EPERM: `get_privilege` when gotrace lacks one of
    /// `needed` (bit, name), else what else refuses it.
    pub fn advice(&self, get_privilege: &str, needed: &[(u32, &str)]) -> String {
        let Some(caps) = self.cap_eff else {
            return get_privilege.to_string();
        };
        let missing: Vec<&str> = needed
            .iter()
            .filter(|(bit, _)| caps & (1 << bit) == 0)
            .map(|(_, name)| *name)
            .collect();
        if !missing.is_empty() {
            return format!("{get_privilege} (it lacks {})", missing.join(", "));
        }
        let mut causes = Vec::new();
        if let Some(mode) = self.lockdown.as_deref().and_then(|l| {
            let active = l.split_whitespace().find(|w| w.starts_with('['))?;
            (active != "[none]").then(|| active.trim_matches(['[', ']']).to_owned())
        }) {
            causes.push(format!(
                "kernel lockdown ({mode}, /sys/kernel/security/lockdown)"
            ));
        }
        if self.initial_user_ns == Some(false) {
            causes.push("a user namespace, whose capabilities do not reach the kernel's eBPF and uprobes (see /proc/self/uid_map)".into());
        }
        if self.seccomp.is_some_and(|m| m != 0) {
            causes.push("a seccomp filter on gotrace (Seccomp in /proc/self/status), as container runtimes install".into());
        }
        causes.push(match self.lsms.as_deref() {
            Some(l) => format!("an LSM among \"{l}\" (denials show in dmesg or the audit log)"),
            None => "an LSM such as SELinux, AppArmor or a BPF LSM (denials show in dmesg or the audit log)".into(),
        });
        let names: Vec<&str> = needed.iter().map(|(_, n)| *n).collect();
        format!(
            "gotrace already holds {}, so something else refuses it: {}",
            names.join(", "),
            causes.join("; or ")
        )
    }
}

/// What the system says about gotrace's right to inspect `pid`, gathered
/// after the kernel refused it, to say why in the error.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessFacts {
    pub pid: u32,
    /// gotrace's effective uid is 0.
    pub root: bool,
    /// CAP_SYS_PTRACE is in gotrace's effective set.
    pub cap_sys_ptrace: bool,
    /// `kernel.yama.ptrace_scope`; None when Yama is not active.
    pub yama_scope: Option<u32>,
    /// The active LSMs (`/sys/kernel/security/lsm`); None when unreadable.
    pub lsms: Option<String>,
    /// gotrace and `pid` share a PID namespace; None when either link
    /// cannot be read.
    pub same_pid_ns: Option<bool>,
    /// gotrace's user namespace maps every uid to itself (the initial one);
    /// None when `/proc/self/uid_map` is unreadable.
    pub initial_user_ns: Option<bool>,
}

impl AccessFacts {
    pub fn gather(pid: u32) -> AccessFacts {
        let read = |p: &str| std::fs::read_to_string(p).ok();
        let cap_eff = own_status("CapEff").and_then(|h| u64::from_str_radix(&h, 16).ok());
        let ns = |p: String| std::fs::read_link(p).ok();
        let same_pid_ns = match (
            ns("/proc/self/ns/pid".into()),
            ns(format!("/proc/{pid}/ns/pid")),
        ) {
            (Some(a), Some(b)) => Some(a == b),
            _ => None,
        };
        AccessFacts {
            pid,
            // SAFETY: geteuid cannot fail.
            root: unsafe { libc::geteuid() } == 0,
            cap_sys_ptrace: cap_eff.is_some_and(|c| c & (1 << CAP_SYS_PTRACE) != 0),
            yama_scope: read("/proc/sys/kernel/yama/ptrace_scope")
                .and_then(|s| s.trim().parse().ok()),
            lsms: read("/sys/kernel/security/lsm").map(|s| s.trim().to_owned()),
            same_pid_ns,
            initial_user_ns: initial_user_ns(),
        }
    }

    /// What to do about the refusal, on one line. Without root or
    /// CAP_SYS_PTRACE that is the answer; with them, what else can refuse
    /// (Yama, a user or PID namespace boundary, an LSM), from the facts.
    pub fn advice(&self) -> String {
        if !self.root && !self.cap_sys_ptrace {
            return "run gotrace as root (or with CAP_SYS_PTRACE)".into();
        }
        let pid = self.pid;
        let mut causes = Vec::new();
        match self.yama_scope {
            Some(3) => causes.push(
                "Yama kernel.yama.ptrace_scope is 3 (no process may inspect another, not even root, until a reboot)".to_string(),
            ),
            Some(2) => causes.push(format!(
                "Yama kernel.yama.ptrace_scope is 2 (only with CAP_SYS_PTRACE in the user namespace of PID {pid})"
            )),
            _ => {}
        }
        if self.initial_user_ns == Some(false) {
            causes.push(
                "gotrace runs in a user namespace, whose root is not the host's (see /proc/self/uid_map)".into(),
            );
        }
        match self.same_pid_ns {
            Some(false) => causes.push(format!(
                "PID {pid} is in another PID namespace (a container boundary)"
            )),
            None => causes.push(format!(
                "the namespaces of PID {pid} cannot be read either, the mark of a container or sandbox boundary (compare `readlink /proc/self/ns/pid /proc/{pid}/ns/pid`)"
            )),
            Some(true) => {}
        }
        causes.push(match self.lsms.as_deref() {
            Some(l) => format!(
                "an LSM among \"{l}\" (denials show in dmesg or the audit log: ausearch -m avc)"
            ),
            None => "an LSM such as AppArmor, SELinux or Landlock (cat /sys/kernel/security/lsm; denials show in dmesg or the audit log)".into(),
        });
        let who = match (self.root, self.cap_sys_ptrace) {
            (true, true) => "as root with CAP_SYS_PTRACE",
            (true, false) => "as root",
            _ => "with CAP_SYS_PTRACE",
        };
        let yama = match self.yama_scope {
            Some(s @ (0 | 1)) => format!(" (Yama ptrace_scope is {s}: not the cause)"),
            Some(_) => String::new(),
            None => " (Yama is not active)".into(),
        };
        format!(
            "gotrace already runs {who}, so something else refuses it{yama}: {}; run gotrace where PID {pid} is an ordinary process (on the host, or inside its container)",
            causes.join("; or ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> AccessFacts {
        AccessFacts {
            pid: 1,
            root: true,
            cap_sys_ptrace: true,
            yama_scope: Some(1),
            lsms: Some("lockdown,capability,landlock,yama,apparmor".into()),
            same_pid_ns: Some(true),
            initial_user_ns: Some(true),
        }
    }

    #[test]
    fn kernel_refusals_name_the_missing_capability_or_what_else_refuses() {
        let needed = [(CAP_BPF, "CAP_BPF"), (CAP_SYS_ADMIN, "CAP_SYS_ADMIN")];
        let all = (1u64 << CAP_BPF) | (1 << CAP_SYS_ADMIN);
        let f = KernelFacts {
            cap_eff: Some(1 << CAP_BPF),
            ..Default::default()
        };
        assert_eq!(
            f.advice("run as root", &needed),
            "run as root (it lacks CAP_SYS_ADMIN)"
        );
        assert_eq!(
            KernelFacts::default().advice("run as root", &needed),
            "run as root"
        );
        let f = KernelFacts {
            cap_eff: Some(all),
            lockdown: Some("none integrity [confidentiality]".into()),
            seccomp: Some(2),
            initial_user_ns: Some(false),
            lsms: Some("capability,bpf".into()),
        };
        assert_eq!(
            f.advice("run as root", &needed),
            "gotrace already holds CAP_BPF, CAP_SYS_ADMIN, so something else refuses it: \
             kernel lockdown (confidentiality, /sys/kernel/security/lockdown); or a user namespace, \
             whose capabilities do not reach the kernel's eBPF and uprobes (see /proc/self/uid_map); \
             or a seccomp filter on gotrace (Seccomp in /proc/self/status), as container runtimes \
             install; or an LSM among \"capability,bpf\" (denials show in dmesg or the audit log)"
        );
        let f = KernelFacts {
            cap_eff: Some(all),
            lockdown: Some("[none] integrity confidentiality".into()),
            seccomp: Some(0),
            initial_user_ns: Some(true),
            lsms: None,
        };
        let a = f.advice("run as root", &needed);
        assert!(a.ends_with("refuses it: an LSM such as SELinux, AppArmor or a BPF LSM (denials show in dmesg or the audit log)"), "{a}");
    }

    #[test]
    fn without_privilege_the_advice_is_to_get_it() {
        let f = AccessFacts {
            root: false,
            cap_sys_ptrace: false,
            ..root()
        };
        assert_eq!(f.advice(), "run gotrace as root (or with CAP_SYS_PTRACE)");
    }

    #[test]
    fn as_root_the_advice_names_what_else_refuses() {
        let a = root().advice();
        assert!(!a.contains("run gotrace as root"), "{a}");
        assert!(a.starts_with("gotrace already runs as root with CAP_SYS_PTRACE, so something else refuses it (Yama ptrace_scope is 1: not the cause): an LSM among \"lockdown,capability,landlock,yama,apparmor\""), "{a}");
        assert!(!a.contains("namespace"), "{a}");
        assert!(!a.contains('\n'), "{a}");

        let a = AccessFacts {
            yama_scope: Some(3),
            ..root()
        }
        .advice();
        assert!(
            a.contains("ptrace_scope is 3 (no process may inspect another, not even root"),
            "{a}"
        );
        assert!(!a.contains("not the cause"), "{a}");
        let a = AccessFacts {
            yama_scope: Some(2),
            ..root()
        }
        .advice();
        assert!(
            a.contains(
                "ptrace_scope is 2 (only with CAP_SYS_PTRACE in the user namespace of PID 1)"
            ),
            "{a}"
        );

        let a = AccessFacts {
            yama_scope: None,
            lsms: None,
            same_pid_ns: None,
            initial_user_ns: Some(false),
            ..root()
        }
        .advice();
        assert!(a.contains("(Yama is not active)"), "{a}");
        assert!(a.contains("gotrace runs in a user namespace"), "{a}");
        assert!(
            a.contains("the namespaces of PID 1 cannot be read either"),
            "{a}"
        );
        assert!(
            a.contains("an LSM such as AppArmor, SELinux or Landlock"),
            "{a}"
        );

        let a = AccessFacts {
            same_pid_ns: Some(false),
            root: false,
            ..root()
        }
        .advice();
        assert!(
            a.starts_with("gotrace already runs with CAP_SYS_PTRACE, so"),
            "{a}"
        );
        assert!(a.contains("PID 1 is in another PID namespace"), "{a}");
    }
}
