//! A command gotrace started, traced with ptrace so that gotrace gets
//! control at its exit: when the thread group exits (`exit_group`, a
//! panic's `exit(2)`, a fatal signal), the exiting thread is held in its
//! `PTRACE_EVENT_EXIT` stop, before its address space goes, while gotrace
//! analyses the process's last state; then it is let go and its real exit
//! status is reported.
//!
//! ptrace belongs to one tracer *thread*: every ptrace request and every
//! wait on the child are made by the thread [`TracedChild::seize`] starts,
//! and nothing else in gotrace may wait on the child (it would take the
//! ptrace stops). That thread waits with `__WNOTHREAD`, for its tracees
//! only: gotrace's other children stay theirs to reap. Everything else the
//! tracee does goes on unchanged: signals are re-injected (Go preempts with
//! SIGURG all the time), group-stops (SIGSTOP, SIGTSTP) stay stops
//! (`PTRACE_LISTEN`), new threads are resumed at once. The tracee's own
//! children (os/exec uses vfork) are not traced.
//!
//! Kernel behaviour this relies on (seen on Linux 6.18): every thread stops
//! at `PTRACE_EVENT_EXIT`, those killed by another's `exit_group` and by
//! SIGKILL included, in any order, with the group's exit code as the event
//! message. Once the thread group leader has exited, `/proc/PID/mem` and
//! `process_vm_readv(PID)` fail (ESRCH) while `/proc/TID/mem` of a thread
//! still stopped keeps working. The tracer keeps the leader at its exit stop
//! during a hold (and parks it a moment when it stops first), so
//! `/proc/PID/mem` should stay readable; the tid [`ExitHold`] names always is.
//! When the tracer goes away, the kernel detaches the tracees and resumes
//! them (stopped ones stay stopped), so a trace that ends before the
//! command does leaves it running as it was.

use std::collections::HashSet;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::TargetError;

/// How long a process may be held at exit: an analysis still running then
/// reads a process that is gone (and says so), and [`Released::timed_out`]
/// tells.
pub const HOLD_LIMIT: Duration = Duration::from_secs(10);
/// How often the tracer thread looks at the other threads while it holds.
const HOLD_POLL: Duration = Duration::from_millis(2);
/// How long the leader's exit stop is kept waiting for the thread that
/// called `exit_group` to stop too (see [`Tracer::exit_stop`]).
const LEADER_PARK: Duration = Duration::from_millis(100);

/// What the tracer thread reports.
#[derive(Debug)]
pub enum ChildEvent {
    /// The thread group is exiting and is held there: its memory is still
    /// readable through [`ExitHold::tid`]. Let go by [`ExitHold::release`]
    /// (or dropping it), or after [`HOLD_LIMIT`].
    HeldAtExit(ExitHold),
    /// The process is gone: how it ended ("exit status 2", "killed by
    /// signal 9").
    Exited(String),
}

/// A process held at its exit. Dropping it lets the process go.
#[derive(Debug)]
pub struct ExitHold {
    pub pid: u32,
    /// The exiting thread it is held by: `/proc/TID/mem` is readable for
    /// the whole hold, whatever happened to the leader (`/proc/PID/mem`
    /// is only as long as the leader has not exited; see the module doc).
    pub tid: u32,
    since: Instant,
    /// Set by the tracer thread when it lets go on its own at the limit:
    /// how long it had held (ns).
    limit_hit_ns: Arc<AtomicU64>,
    release: mpsc::Sender<()>,
}

/// How a hold ended.
#[derive(Clone, Copy, Debug)]
pub struct Released {
    /// How long the process was held.
    pub held: Duration,
    /// [`HOLD_LIMIT`] ran out first: the process was let go before the
    /// analysis finished.
    pub timed_out: bool,
}

impl ExitHold {
    /// Lets the process finish exiting.
    pub fn release(self) -> Released {
        let _ = self.release.send(());
        match self.limit_hit_ns.load(Ordering::Acquire) {
            0 => Released {
                held: self.since.elapsed(),
                timed_out: false,
            },
            ns => Released {
                held: Duration::from_nanos(ns),
                timed_out: true,
            },
        }
    }
}

/// A command traced from a thread of its own; see the module doc.
pub struct TracedChild {
    events: tokio::sync::mpsc::UnboundedReceiver<ChildEvent>,
}

impl TracedChild {
    /// Traces `pid`, a child of gotrace that has not exec'd yet (see
    /// [`super::spawn_held`]), from a new thread that from now on owns
    /// every wait on it.
    pub fn seize(pid: u32) -> Result<TracedChild, TargetError> {
        Self::seize_with_limit(pid, HOLD_LIMIT)
    }

    /// [`Self::seize`] with another hold limit (tests).
    fn seize_with_limit(pid: u32, limit: Duration) -> Result<TracedChild, TargetError> {
        let (tx, events) = tokio::sync::mpsc::unbounded_channel();
        let (seized_tx, seized) = mpsc::channel();
        std::thread::Builder::new()
            .name("gotrace-ptrace".into())
            .spawn(move || {
                let r = seize(pid as i32);
                let ok = r.is_ok();
                let _ = seized_tx.send(r);
                if ok {
                    Tracer::new(pid as i32, tx, limit).run();
                }
            })
            .map_err(|source| TargetError::Proc { pid, source })?;
        match seized.recv() {
            Ok(Ok(())) => Ok(TracedChild { events }),
            Ok(Err(source)) => Err(TargetError::Proc { pid, source }),
            Err(_) => Err(TargetError::Proc {
                pid,
                source: io::Error::other("the ptrace thread ended"),
            }),
        }
    }

    /// The next thing the tracer thread reports; None once it has ended
    /// without seeing the process exit (someone else reaped it).
    pub async fn next(&mut self) -> Option<ChildEvent> {
        self.events.recv().await
    }
}

fn seize(pid: i32) -> io::Result<()> {
    let options = libc::PTRACE_O_TRACEEXIT | libc::PTRACE_O_TRACECLONE | libc::PTRACE_O_TRACEEXEC;
    // SAFETY: PTRACE_SEIZE takes no pointer; data is the option bits.
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_SEIZE,
            pid,
            std::ptr::null_mut::<libc::c_void>(),
            options as usize as *mut libc::c_void,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A ptrace request that takes no pointer; errors (ESRCH: the thread was
/// killed meanwhile) are left to the next wait to explain.
fn request(req: libc::c_uint, tid: i32, data: usize) {
    // SAFETY: CONT and LISTEN take a signal number (or 0) as data, no
    // pointer.
    unsafe {
        libc::ptrace(
            req,
            tid,
            std::ptr::null_mut::<libc::c_void>(),
            data as *mut libc::c_void,
        )
    };
}

fn resume(tid: i32, sig: i32) {
    request(libc::PTRACE_CONT, tid, sig as usize);
}

fn event_msg(tid: i32) -> Option<u64> {
    let mut msg: libc::c_ulong = 0;
    // SAFETY: GETEVENTMSG writes one c_ulong to the pointer given as data.
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_GETEVENTMSG,
            tid,
            std::ptr::null_mut::<libc::c_void>(),
            &mut msg as *mut libc::c_ulong as *mut libc::c_void,
        )
    };
    (r == 0).then_some(msg as u64)
}

/// The system call `tid` is in (from `/proc/PID/task/TID/syscall`, which
/// reads a stopped thread's registers): -1 when in none, None when that
/// cannot be read.
fn syscall_nr(pid: i32, tid: i32) -> Option<i64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")).ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// The stack pointers of `pid`'s stopped threads (from each
/// `/proc/PID/task/TID/syscall`: `nr args... sp pc`, or `-1 sp pc` when
/// blocked outside a system call; a thread on a CPU reads `running` and is
/// left out). Only meaningful while nothing can resume them: a process
/// held at its exit.
pub fn stopped_sps(pid: u32) -> Vec<u64> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("syscall")).ok())
        .filter_map(|s| parse_syscall_sp(&s))
        .collect()
}

/// The `sp` of a `/proc/PID/task/TID/syscall` line (second to last of at
/// least three fields).
fn parse_syscall_sp(line: &str) -> Option<u64> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let sp = f.len().checked_sub(2).filter(|_| f.len() >= 3)?;
    u64::from_str_radix(f[sp].trim_start_matches("0x"), 16).ok()
}

/// The state letter of `/proc/PID/stat` ('Z' once the leader has exited).
fn leader_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

fn is_stop_signal(sig: i32) -> bool {
    matches!(
        sig,
        libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU
    )
}

/// How a waited-for process ended, in words.
pub fn describe_status(status: i32) -> String {
    if libc::WIFEXITED(status) {
        format!("exit status {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("wait status {status:#x}")
    }
}

/// Waits for any thread this thread traces (not for the children of
/// gotrace's other threads); None with WNOHANG and nothing to report.
fn wait(flags: i32) -> io::Result<Option<(i32, i32)>> {
    let mut status = 0;
    // SAFETY: valid out-pointer.
    let tid = unsafe { libc::waitpid(-1, &mut status, libc::__WALL | libc::__WNOTHREAD | flags) };
    match tid {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        tid => Ok(Some((tid, status))),
    }
}

#[derive(PartialEq, Eq)]
enum Flow {
    Go,
    /// The process is gone.
    Done,
}

/// The tracer thread's state.
struct Tracer {
    pid: i32,
    /// Threads known alive (for "the last thread exits").
    tids: HashSet<i32>,
    events: tokio::sync::mpsc::UnboundedSender<ChildEvent>,
    /// How long a hold may last.
    limit: Duration,
    /// The process has been held at exit once already.
    held: bool,
    /// While holding: threads stopped at their exit, kept there (so their
    /// memory stays readable) until the hold ends.
    deferred: Option<Vec<i32>>,
    /// When the leader's exit stop was parked, if it is.
    parked_leader: Option<Instant>,
}

impl Tracer {
    fn new(
        pid: i32,
        events: tokio::sync::mpsc::UnboundedSender<ChildEvent>,
        limit: Duration,
    ) -> Tracer {
        Tracer {
            pid,
            tids: HashSet::from([pid]),
            events,
            limit,
            held: false,
            deferred: None,
            parked_leader: None,
        }
    }

    fn run(mut self) {
        loop {
            let flags = if self.parked_leader.is_some() {
                libc::WNOHANG
            } else {
                0
            };
            match wait(flags) {
                Ok(Some((tid, status))) => {
                    if self.handle(tid, status) == Flow::Done {
                        return;
                    }
                }
                Ok(None) => self.unpark_leader_when_due(),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => {
                    // ECHILD: reaped by someone else; dropping the sender
                    // tells the session the process is gone.
                    log::debug!("ptrace thread: waitpid: {e}");
                    return;
                }
            }
        }
    }

    /// One wait status of thread `tid`.
    fn handle(&mut self, tid: i32, status: i32) -> Flow {
        if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
            self.tids.remove(&tid);
            // The leader is reported last, once the whole group is gone.
            if tid == self.pid {
                let _ = self
                    .events
                    .send(ChildEvent::Exited(describe_status(status)));
                return Flow::Done;
            }
            return Flow::Go;
        }
        if !libc::WIFSTOPPED(status) {
            return Flow::Go;
        }
        // A new thread's first stop may come before its creator's event.
        self.tids.insert(tid);
        let sig = libc::WSTOPSIG(status);
        match status >> 16 {
            // Signal-delivery stop: deliver it as if nobody watched.
            0 => resume(tid, sig),
            libc::PTRACE_EVENT_STOP if is_stop_signal(sig) => {
                // Group-stop: stay stopped, as SIGSTOP asked, until SIGCONT.
                request(libc::PTRACE_LISTEN, tid, 0);
            }
            libc::PTRACE_EVENT_CLONE => {
                if let Some(new) = event_msg(tid) {
                    self.tids.insert(new as i32);
                }
                resume(tid, 0);
            }
            libc::PTRACE_EVENT_EXEC => {
                // A thread other than the leader exec'd and took the
                // leader's tid: its own is gone.
                if let Some(former) = event_msg(tid).filter(|f| *f as i32 != self.pid) {
                    self.tids.remove(&(former as i32));
                }
                resume(tid, 0);
            }
            libc::PTRACE_EVENT_EXIT => return self.exit_stop(tid),
            // A new thread's first stop, or any other event: go on.
            _ => resume(tid, 0),
        }
        Flow::Go
    }

    /// Whether `tid`'s exit stop is the thread group's exit: a fatal signal
    /// (it kills every thread), the thread that called `exit_group`, or the
    /// last thread leaving. The threads `exit_group` kills stop too, with
    /// the group's exit code, in whatever system call they were in.
    fn group_exit(&self, tid: i32, msg: u64) -> bool {
        if msg & 0x7f != 0 {
            return true;
        }
        match syscall_nr(self.pid, tid) {
            Some(nr) if nr == libc::SYS_exit_group => true,
            Some(nr) if nr == libc::SYS_exit => self.tids.len() <= 1,
            _ => false,
        }
    }

    /// An exit stop: hold the process at the first of its group exit.
    /// Another thread's exit goes on, but the leader's is parked a moment
    /// first: `exit_group` kills the other threads, which stop at their
    /// exit in any order, and the leader resumed before the caller stops
    /// would be gone, and `/proc/PID/mem` with it, during the hold. (A Go
    /// program's leader never exits alone; a non-leader's exec kills it too,
    /// and is then delayed by [`LEADER_PARK`].)
    fn exit_stop(&mut self, tid: i32) -> Flow {
        if let Some(deferred) = self.deferred.as_mut() {
            deferred.push(tid);
            return Flow::Go;
        }
        let msg = event_msg(tid).unwrap_or(0);
        if !self.held && self.group_exit(tid, msg) {
            self.held = true;
            let flow = self.hold(tid);
            resume(tid, 0);
            return flow;
        }
        if tid == self.pid && !self.held {
            self.parked_leader = Some(Instant::now());
            return Flow::Go;
        }
        resume(tid, 0);
        Flow::Go
    }

    /// Lets the parked leader exit once nothing held it for [`LEADER_PARK`];
    /// until then, polls.
    fn unpark_leader_when_due(&mut self) {
        match self.parked_leader {
            Some(since) if since.elapsed() >= LEADER_PARK => {
                self.parked_leader = None;
                resume(self.pid, 0);
            }
            Some(_) => std::thread::sleep(HOLD_POLL),
            None => {}
        }
    }

    /// Holds the process at `tid`'s exit stop until the session releases
    /// it or the hold limit runs out, answering the other threads' stops
    /// meanwhile (their exit stops are kept until the end of the hold).
    fn hold(&mut self, tid: i32) -> Flow {
        let (release, released) = mpsc::channel();
        let limit_hit_ns = Arc::new(AtomicU64::new(0));
        let hold = ExitHold {
            pid: self.pid as u32,
            tid: tid as u32,
            since: Instant::now(),
            limit_hit_ns: limit_hit_ns.clone(),
            release,
        };
        let since = hold.since;
        log::debug!(
            "ptrace thread: PID {} held at the exit of thread {tid}; leader state {:?}",
            self.pid,
            leader_state(self.pid)
        );
        if self.events.send(ChildEvent::HeldAtExit(hold)).is_err() {
            return Flow::Go; // nobody analyses any more (the trace ended)
        }
        // A parked leader stays stopped with the rest until the end.
        self.deferred = Some(
            self.parked_leader
                .take()
                .map(|_| self.pid)
                .into_iter()
                .collect(),
        );
        let mut flow = Flow::Go;
        while flow == Flow::Go {
            match released.recv_timeout(HOLD_POLL) {
                Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if since.elapsed() >= self.limit {
                let ns = since.elapsed().as_nanos().max(1) as u64;
                limit_hit_ns.store(ns, Ordering::Release);
                log::debug!(
                    "ptrace thread: hold limit reached, letting PID {} go",
                    self.pid
                );
                break;
            }
            while let Ok(Some((t, status))) = wait(libc::WNOHANG) {
                flow = self.handle(t, status);
                if flow == Flow::Done {
                    break;
                }
            }
        }
        for t in self.deferred.take().unwrap_or_default() {
            resume(t, 0);
        }
        flow
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::{HeldChild, spawn_held};

    /// `sh -c script`, traced, then let go to exec.
    fn traced(script: &str, limit: Duration) -> (HeldChild, TracedChild) {
        let args = ["sh", "-c", script].map(String::from);
        let mut child = spawn_held(std::path::Path::new("/bin/sh"), &args).unwrap();
        let traced = TracedChild::seize_with_limit(child.pid, limit)
            .unwrap_or_else(|e| panic!("ptrace refused: {e}"));
        child.release().unwrap();
        (child, traced)
    }

    /// The events of a traced command: each hold is handed to `on_hold`.
    fn events(mut t: TracedChild, mut on_hold: impl FnMut(ExitHold)) -> Vec<String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut seen = Vec::new();
        rt.block_on(async {
            loop {
                let ev = tokio::time::timeout(Duration::from_secs(30), t.next()).await;
                match ev.expect("the command hung") {
                    Some(ChildEvent::HeldAtExit(h)) => {
                        seen.push("held".to_string());
                        on_hold(h);
                    }
                    Some(ChildEvent::Exited(how)) => {
                        seen.push(how);
                        return;
                    }
                    None => panic!("the tracer thread ended without the exit"),
                }
            }
        });
        seen
    }

    #[test]
    fn syscall_lines_give_their_stack_pointer() {
        let line = "230 0x0 0x0 0x7ffd 0x0 0x0 0x0 0xc000047f10 0x46e1a3\n";
        assert_eq!(parse_syscall_sp(line), Some(0xc000047f10));
        assert_eq!(
            parse_syscall_sp("-1 0x7ffe1000 0x401000\n"),
            Some(0x7ffe1000)
        );
        assert_eq!(parse_syscall_sp("running\n"), None);
        assert_eq!(parse_syscall_sp(""), None);
    }

    #[test]
    fn held_at_exit_with_its_memory_readable_then_its_status_unchanged() {
        let (child, t) = traced("exit 3", HOLD_LIMIT);
        let pid = child.pid;
        let seen = events(t, |h| {
            assert_eq!((h.pid, h.tid), (pid, pid));
            // Still mapped: the first mapping of the shell can be read.
            let maps = std::fs::read_to_string(format!("/proc/{}/maps", h.tid)).unwrap();
            let start = maps.split('-').next().unwrap();
            let addr = u64::from_str_radix(start, 16).unwrap();
            let mem = crate::process::mem::ProcMem::open(h.tid).unwrap();
            assert!(mem.u64(addr).is_some(), "{maps}");
            // The held thread's stack pointer is on its stack.
            let stack = maps.lines().find(|l| l.ends_with("[stack]")).unwrap();
            let (lo, hi) = stack.split_once(' ').unwrap().0.split_once('-').unwrap();
            let range = u64::from_str_radix(lo, 16).unwrap()..u64::from_str_radix(hi, 16).unwrap();
            let sps = stopped_sps(h.tid);
            assert!(sps.iter().any(|sp| range.contains(sp)), "{sps:x?} {stack}");
            let r = h.release();
            assert!(!r.timed_out);
        });
        assert_eq!(seen, ["held", "exit status 3"]);
    }

    #[test]
    fn a_fatal_signal_is_held_and_reported() {
        let (_child, t) = traced("ulimit -c 0; kill -SEGV $$", HOLD_LIMIT);
        let seen = events(t, drop);
        assert_eq!(seen, ["held", "killed by signal 11"]);
    }

    #[test]
    fn signals_reach_the_program() {
        let (_child, t) = traced("trap 'exit 4' USR1; kill -USR1 $$; sleep 20", HOLD_LIMIT);
        assert_eq!(events(t, drop), ["held", "exit status 4"]);
    }

    #[test]
    fn the_hold_limit_lets_the_process_go() {
        let limit = Duration::from_millis(200);
        let (_child, t) = traced("exit 5", limit);
        let seen = events(t, |h| {
            std::thread::sleep(limit * 2);
            let r = h.release();
            assert!(r.timed_out && r.held >= limit, "{r:?}");
        });
        assert_eq!(seen, ["held", "exit status 5"]);
    }
}
