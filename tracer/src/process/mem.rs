//! Reading another process's memory through `/proc/PID/mem` with `pread`,
//! and many ranges at once with `process_vm_readv`:
//! the process keeps running (no ptrace stop); what we read may change under
//! us, which the callers detect and retry.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt as _;

/// Ranges per `process_vm_readv` call (the kernel's UIO_MAXIOV is 1024).
const IOV_BATCH: usize = 1024;
/// Largest single read when batching neighbouring objects.
const CHUNK_MAX: u64 = 256 << 10;
/// Bytes of such reads done in one `process_vm_readv` (about: one read
/// may go over).
const GROUP_MAX: usize = 1 << 20;
/// g structs further apart than this are read separately.
const GAP_MAX: u64 = 8 << 10;
/// Used parts of stacks further apart than this are read separately (small
/// stacks sit next to each other in stack spans; reading the unused part of
/// 2 and 4 KiB stacks is cheaper than one read each).
pub const STACK_GAP_MAX: u64 = 4 << 10;

pub struct ProcMem {
    file: File,
    /// The task whose address space `read_vectored` reads.
    pid: u32,
    /// preads issued (for the timing note).
    reads: std::cell::Cell<u64>,
}

impl ProcMem {
    /// Opens `/proc/PID/mem`; the caller says what a failure means.
    pub fn open(pid: u32) -> io::Result<ProcMem> {
        let file = File::open(format!("/proc/{pid}/mem"))?;
        Ok(ProcMem {
            file,
            pid,
            reads: Default::default(),
        })
    }

    pub fn reads(&self) -> u64 {
        self.reads.get()
    }

    /// Fills `buf` from `addr`; false when any of it cannot be read
    /// (unmapped, or the process is gone).
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        if addr
            .checked_add(buf.len() as u64)
            .is_none_or(|end| end > i64::MAX as u64)
        {
            return false;
        }
        let mut done = 0;
        while done < buf.len() {
            self.reads.set(self.reads.get() + 1);
            match self.file.read_at(&mut buf[done..], addr + done as u64) {
                Ok(0) => return false,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        true
    }

    pub fn u64(&self, addr: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b).then(|| u64::from_le_bytes(b))
    }

    /// Fills each `(addr, buf)` in as few system calls as possible
    /// (`process_vm_readv`, up to [`IOV_BATCH`] ranges a call); a range
    /// that cannot be read is retried alone with `pread` and left false.
    pub fn read_vectored(&self, ranges: &mut [(u64, &mut [u8])]) -> Vec<bool> {
        let mut ok = vec![false; ranges.len()];
        for (batch, oks) in ranges.chunks_mut(IOV_BATCH).zip(ok.chunks_mut(IOV_BATCH)) {
            let want: usize = batch.iter().map(|(_, b)| b.len()).sum();
            let local: Vec<libc::iovec> = batch
                .iter_mut()
                .map(|(_, b)| libc::iovec {
                    iov_base: b.as_mut_ptr().cast(),
                    iov_len: b.len(),
                })
                .collect();
            let remote: Vec<libc::iovec> = batch
                .iter()
                .map(|(a, b)| libc::iovec {
                    iov_base: *a as *mut libc::c_void,
                    iov_len: b.len(),
                })
                .collect();
            self.reads.set(self.reads.get() + 1);
            // SAFETY: every local iovec points into a live, exclusively
            // borrowed buffer of exactly iov_len bytes; the remote ones are
            // only addresses in the target, checked by the kernel.
            let n = unsafe {
                libc::process_vm_readv(
                    self.pid as libc::pid_t,
                    local.as_ptr(),
                    local.len() as libc::c_ulong,
                    remote.as_ptr(),
                    remote.len() as libc::c_ulong,
                    0,
                )
            };
            if n >= 0 && n as usize == want {
                oks.iter_mut().for_each(|o| *o = true);
                continue;
            }
            // A partial read stops at the first range it could not read:
            // read every range of the batch on its own.
            for ((addr, buf), o) in batch.iter_mut().zip(oks.iter_mut()) {
                *o = self.read(*addr, buf);
            }
        }
        ok
    }

    /// Reads `span` bytes at each of `addrs` (sorted), batching neighbours
    /// into one read. Objects that cannot be read are None.
    pub fn read_many(&self, addrs: &[u64], span: u64) -> Vec<Option<Vec<u8>>> {
        let ranges: Vec<(u64, u64)> = addrs.iter().map(|a| (*a, span)).collect();
        self.read_ranges(&ranges, GAP_MAX)
    }

    /// Reads each `(addr, len)` of `ranges`, batching ranges less than `gap`
    /// apart into one read of at most [`CHUNK_MAX`] bytes, and those reads
    /// into `process_vm_readv` calls of about [`GROUP_MAX`] bytes (one copy,
    /// where `pread` on `/proc/PID/mem` copies each page twice). Results are
    /// in the order of `ranges`; a range that cannot be read is None.
    pub fn read_ranges(&self, ranges: &[(u64, u64)], gap: u64) -> Vec<Option<Vec<u8>>> {
        let mut order: Vec<usize> = (0..ranges.len()).collect();
        order.sort_by_key(|i| ranges[*i].0);
        let chunks = chunks(ranges, &order, gap);
        let mut out: Vec<Option<Vec<u8>>> = vec![None; ranges.len()];
        let mut buf = Vec::new();
        let mut c = 0;
        while c < chunks.len() {
            // chunks[c..d] go in one vectored read.
            let (mut d, mut bytes) = (c, 0);
            while d < chunks.len()
                && d - c < IOV_BATCH
                && (d == c || bytes + chunks[d].len() <= GROUP_MAX)
            {
                bytes += chunks[d].len();
                d += 1;
            }
            buf.resize(bytes, 0);
            let mut io = Vec::with_capacity(d - c);
            let mut rest = &mut buf[..];
            for ch in &chunks[c..d] {
                let (piece, tail) = std::mem::take(&mut rest).split_at_mut(ch.len());
                io.push((ch.start, piece));
                rest = tail;
            }
            let ok = self.read_vectored(&mut io);
            drop(io);
            let mut off = 0;
            for (ch, ok) in chunks[c..d].iter().zip(ok) {
                let chunk = &buf[off..off + ch.len()];
                off += ch.len();
                for &i in &order[ch.first..ch.end] {
                    let (a, len) = ranges[i];
                    out[i] = if ok {
                        let at = (a - ch.start) as usize;
                        Some(chunk[at..at + len as usize].to_vec())
                    } else if ch.end - ch.first > 1 {
                        // Something in between is not mapped: alone.
                        let mut b = vec![0u8; len as usize];
                        self.read(a, &mut b).then_some(b)
                    } else {
                        // Alone already (and retried so by read_vectored).
                        None
                    };
                }
            }
            c = d;
        }
        out
    }
}

/// One read of `[start, stop)` covering the ranges `order[first..end]`.
struct Chunk {
    start: u64,
    stop: u64,
    first: usize,
    end: usize,
}

impl Chunk {
    fn len(&self) -> usize {
        (self.stop - self.start) as usize
    }
}

/// The reads of `ranges` (visited in `order`, by address): neighbours less
/// than `gap` apart together, each read at most [`CHUNK_MAX`] bytes.
fn chunks(ranges: &[(u64, u64)], order: &[usize], gap: u64) -> Vec<Chunk> {
    let end = |i: usize| ranges[i].0.saturating_add(ranges[i].1);
    let mut out = Vec::new();
    let mut k = 0;
    while k < order.len() {
        let start = ranges[order[k]].0;
        let mut stop = end(order[k]);
        let mut j = k + 1;
        while j < order.len() {
            let (a, e) = (ranges[order[j]].0, end(order[j]));
            if a.saturating_sub(stop) > gap || e.max(stop) - start > CHUNK_MAX {
                break;
            }
            stop = stop.max(e);
            j += 1;
        }
        out.push(Chunk {
            start,
            stop,
            first: k,
            end: j,
        });
        k = j;
    }
    out
}

/// The elements of a Go slice of pointers (`[]*T`) whose header is at `at`,
/// at most `max` of them: None when the header cannot be read, each element
/// None when it cannot be.
pub fn pointer_slice(mem: &dyn Memory, at: u64, max: u64) -> Option<Vec<Option<u64>>> {
    let (ptr, len) = (mem.u64(at)?, mem.u64(at + 8)?);
    Some((0..len.min(max)).map(|i| mem.u64(ptr + 8 * i)).collect())
}

/// A little-endian reader over bytes read from the target.
pub fn le_u64(b: &[u8], off: u64) -> u64 {
    let o = off as usize;
    b.get(o..o + 8)
        .map(|s| u64::from_le_bytes(s.try_into().expect("8 bytes")))
        .unwrap_or(0)
}

pub fn le_u32(b: &[u8], off: u64) -> u32 {
    let o = off as usize;
    b.get(o..o + 4)
        .map(|s| u32::from_le_bytes(s.try_into().expect("4 bytes")))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_memory_batched_and_not_mapped() {
        let mem = ProcMem::open(std::process::id()).unwrap();
        let data: Vec<u64> = (0..4096u64).map(|i| i * 3).collect();
        let base = data.as_ptr() as u64;
        assert_eq!(mem.u64(base + 8 * 7), Some(21));
        let addrs: Vec<u64> = [0u64, 10, 11, 3000, 4000]
            .iter()
            .map(|i| base + 8 * i)
            .collect();
        let got = mem.read_many(&addrs, 16);
        for (a, g) in addrs.iter().zip(&got) {
            let i = (a - base) / 8;
            let g = g.as_ref().unwrap();
            assert_eq!((le_u64(g, 0), le_u64(g, 8)), (i * 3, (i + 1) * 3));
        }
        // Page 0 is never mapped.
        assert_eq!(mem.u64(8), None);
        let mixed = mem.read_many(&[16, base], 8);
        assert!(mixed[0].is_none() && mixed[1].is_some());
        // Unsorted ranges of different lengths come back in their order.
        let got = mem.read_ranges(&[(base + 80, 8), (base, 24), (8, 8)], 64);
        assert_eq!(le_u64(got[0].as_ref().unwrap(), 0), 30);
        assert_eq!(le_u64(got[1].as_ref().unwrap(), 16), 6);
        assert!(got[2].is_none());
        assert!(matches!(
            ProcMem::open(u32::MAX),
            Err(e) if e.kind() == io::ErrorKind::NotFound
        ));
    }
}

/// Memory of a target read without stopping it: a live process
/// ([`ProcMem`]), or an image of one in tests and fuzzing ([`ImageMem`]).
pub trait Memory {
    /// Fills `buf` from `addr`; false when any of it cannot be read.
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool;

    /// Fills each range; which ones could be read.
    fn read_vectored(&self, ranges: &mut [(u64, &mut [u8])]) -> Vec<bool> {
        ranges.iter_mut().map(|(a, b)| self.read(*a, b)).collect()
    }

    fn u64(&self, addr: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b).then(|| u64::from_le_bytes(b))
    }
}

impl Memory for ProcMem {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        ProcMem::read(self, addr, buf)
    }

    fn read_vectored(&self, ranges: &mut [(u64, &mut [u8])]) -> Vec<bool> {
        ProcMem::read_vectored(self, ranges)
    }
}

/// Mapped regions of a made-up address space (start → bytes): the
/// reachability analysis's tests and fuzz target read heaps built here.
#[cfg(any(test, feature = "fuzzing"))]
#[derive(Default)]
pub struct ImageMem {
    pub regions: std::collections::BTreeMap<u64, Vec<u8>>,
}

#[cfg(any(test, feature = "fuzzing"))]
impl Memory for ImageMem {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        let Some((start, bytes)) = self.regions.range(..=addr).next_back() else {
            return false;
        };
        let off = (addr - start) as usize;
        match bytes.get(off..off + buf.len()) {
            Some(src) => {
                buf.copy_from_slice(src);
                true
            }
            None => false,
        }
    }
}
