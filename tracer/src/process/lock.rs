//! One gotrace per target process. A second tracer would double the probe
//! cost on a production process and split its events between two reports,
//! so it is refused, naming the gotrace that holds the process.
//!
//! The lock is an `flock` on `/run/gotrace/pid-<PID>-<start time>.lock` (the
//! start time keeps a recycled PID from matching a stale file), falling back
//! to the temporary directory when `/run` is not writable. The kernel drops
//! the lock when gotrace exits, however it exits.

use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Seek as _, Write as _};
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("PID {pid} is already being traced by gotrace (PID {holder}); stop that one first")]
    Held { pid: u32, holder: String },
    #[error("cannot create the lock file {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Held while gotrace traces the process; dropping it removes the file.
#[derive(Debug)]
pub struct TargetLock {
    file: File,
    path: PathBuf,
}

impl Drop for TargetLock {
    fn drop(&mut self) {
        // Unlink while still holding the lock; a waiter that opened the old
        // inode notices it is gone (see `lock`) and retries.
        let _ = std::fs::remove_file(&self.path);
        let _ = self.file.sync_data();
    }
}

/// Start time of the process (clock ticks since boot, /proc/PID/stat field 22).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name can hold spaces and parentheses: skip past the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn lock_dirs() -> Vec<PathBuf> {
    vec![
        PathBuf::from("/run/gotrace"),
        std::env::temp_dir().join("gotrace-locks"),
    ]
}

/// Takes the lock for `pid`, or says which gotrace holds it.
pub fn lock(pid: u32) -> Result<TargetLock, LockError> {
    let name = format!("pid-{pid}-{}.lock", start_time(pid).unwrap_or(0));
    let mut last_err = None;
    for dir in lock_dirs() {
        if !dir.is_dir() {
            // Sticky and world-writable like /tmp, so a gotrace running with
            // capabilities as another user locks in the same place.
            use std::os::unix::fs::PermissionsExt as _;
            if std::fs::create_dir_all(&dir).is_err() {
                continue;
            }
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777));
        }
        match lock_in(&dir.join(&name), pid) {
            Err(LockError::Io { path, source }) => last_err = Some(LockError::Io { path, source }),
            other => return other,
        }
    }
    Err(last_err.unwrap_or_else(|| LockError::Io {
        path: lock_dirs()[0].join(&name),
        source: io::Error::from(io::ErrorKind::PermissionDenied),
    }))
}

fn lock_in(path: &Path, pid: u32) -> Result<TargetLock, LockError> {
    let io_err = |source| LockError::Io {
        path: path.to_path_buf(),
        source,
    };
    loop {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(io_err)?;
        // SAFETY: flock on an fd we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(io_err(e));
            }
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(LockError::Held {
                pid,
                holder: if holder.is_empty() {
                    "unknown".into()
                } else {
                    holder.to_string()
                },
            });
        }
        // The holder may have unlinked the file between our open and flock:
        // then we locked a dead inode and must start over.
        let same = match (file.metadata(), std::fs::symlink_metadata(path)) {
            (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
            _ => false,
        };
        if !same {
            continue;
        }
        file.set_len(0).map_err(io_err)?;
        file.rewind().map_err(io_err)?;
        write!(file, "{}", std::process::id()).map_err(io_err)?;
        return Ok(TargetLock {
            file,
            path: path.to_path_buf(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_names_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pid-1-0.lock");
        let first = lock_in(&path, 1).unwrap();
        match lock_in(&path, 1) {
            Err(LockError::Held { holder, .. }) => {
                assert_eq!(holder, std::process::id().to_string())
            }
            other => panic!("{other:?}"),
        }
        drop(first);
        assert!(!path.exists());
        let _again = lock_in(&path, 1).unwrap();
    }

    #[test]
    fn start_time_of_self() {
        assert!(start_time(std::process::id()).unwrap() > 0);
    }
}
