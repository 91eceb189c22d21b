//! The CPU time a process has used, in nanoseconds, from its process CPU
//! clock (`clock_getcpuclockid`): every thread's time, including the run
//! in progress, at nanosecond resolution (`/proc/PID/stat` counts in clock
//! ticks, too coarse to tell 10 ms apart, and `schedstat` only accounts a
//! run when the thread is switched out). Uprobe traps and the eBPF
//! programs run on the target's threads, so this includes what the probes
//! cost it.

/// CPU time of `pid` so far; None when its clock cannot be read (it is
/// gone).
pub fn cpu_ns(pid: u32) -> Option<u64> {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: valid out-pointer.
    if unsafe { libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock) } != 0 {
        return None;
    }
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return None;
    }
    Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpu_time_of_a_child_grows() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .unwrap();
        let pid = child.id();
        let before = super::cpu_ns(pid).unwrap();
        // However busy the machine, it gets 5 ms within 10 s.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut after = before;
        while after < before + 5_000_000 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
            after = super::cpu_ns(pid).unwrap();
        }
        let _ = child.kill();
        let _ = child.wait();
        assert!(after >= before + 5_000_000, "{before} -> {after}");
        assert_eq!(super::cpu_ns(pid), None, "gone");
    }
}
