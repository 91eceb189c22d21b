//! Which processes run right now: a scan of `/proc`, each process named by
//! its identity (PID and start time: a PID reused by a new process is a new
//! process) and its executable's identity (device, inode and modification
//! time of the file `/proc/PID/exe` points to, which the kernel resolves
//! inside the process's own mount namespace: containers included).

use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;

/// A process: its PID and when it started (clock ticks since boot, field
/// 22 of `/proc/PID/stat`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProcId {
    pub pid: u32,
    pub start: u64,
}

/// An executable file: device, inode and modification time (a binary
/// rebuilt in place keeps its inode, not its mtime).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ExeId {
    pub dev: u64,
    pub ino: u64,
    pub mtime: i64,
}

/// A process found by the scan.
#[derive(Clone, Debug)]
pub struct Found {
    pub id: ProcId,
    /// The executable's base name (the `process` label).
    pub name: String,
    pub exe: ExeId,
    /// `/proc/PID/exe`: how the agent opens the executable.
    pub exe_path: PathBuf,
}

/// Every process of `/proc` whose executable can be looked at, sorted by
/// PID. Kernel threads (no executable) and processes that exit while
/// looked at are left out: they are not Go programs to watch.
pub fn scan() -> Vec<Found> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found: Vec<Found> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(look)
        .collect();
    found.sort_by_key(|f| f.id.pid);
    found
}

/// One process, or None when it has no executable or is gone.
pub fn look(pid: u32) -> Option<Found> {
    let start = start_time(pid)?;
    let exe_path = PathBuf::from(format!("/proc/{pid}/exe"));
    let target = std::fs::read_link(&exe_path).ok()?;
    let meta = std::fs::metadata(&exe_path).ok()?;
    let name = base_name(&target.to_string_lossy());
    // The process may have exited and its PID been reused between the
    // reads: the start time read again must be the same.
    (start_time(pid)? == start).then_some(Found {
        id: ProcId { pid, start },
        name,
        exe: ExeId {
            dev: meta.dev(),
            ino: meta.ino(),
            mtime: meta.mtime(),
        },
        exe_path,
    })
}

/// Whether the process `id` still runs (same PID, same start time).
pub fn alive(id: ProcId) -> bool {
    start_time(id.pid) == Some(id.start)
}

/// The last component of the executable's path, without the " (deleted)"
/// the kernel appends once the file was replaced or removed.
fn base_name(target: &str) -> String {
    let t = target.strip_suffix(" (deleted)").unwrap_or(target);
    t.rsplit('/').next().unwrap_or(t).to_string()
}

/// Field 22 of `/proc/PID/stat` (the process's start time).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

/// The command name (field 2) is in parentheses and may itself hold
/// spaces and parentheses: fields are counted after the last ')'.
fn parse_start_time(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // rest starts at field 3 (state): field 22 is the 20th after it.
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_after_an_odd_command_name() {
        let stat = "42 (a) b (c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10";
        assert_eq!(parse_start_time(stat), Some(98765));
        assert_eq!(parse_start_time("42 (x) S 1"), None);
        assert_eq!(parse_start_time("no parenthesis"), None);
    }

    #[test]
    fn base_names() {
        assert_eq!(base_name("/usr/bin/prometheus"), "prometheus");
        assert_eq!(base_name("/tmp/app (deleted)"), "app");
        assert_eq!(base_name("app"), "app");
    }

    #[test]
    fn finds_itself() {
        let me = std::process::id();
        let found = scan();
        let f = found.iter().find(|f| f.id.pid == me).expect("own process");
        assert!(alive(f.id));
        assert!(!alive(ProcId {
            pid: me,
            start: f.id.start + 1
        }));
        assert_eq!(look(me).unwrap().exe, f.exe);
    }
}
