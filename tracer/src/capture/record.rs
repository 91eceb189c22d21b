//! Recordings: the raw event stream of a trace, written as it arrives, plus
//! what is needed to rebuild every output later (`gotrace report FILE`)
//! without root and without the process: the target's identity (path and
//! Go build id, to find and check the binary), the growth-sampling ticks,
//! and at the end the raw stacks the model refers to, the kernel counters
//! and how the trace ended.
//!
//! Format: the magic `GOTRACE\0`, a u32 format version and a byte order
//! tag (`L`/`B`, the recording host's: events are stored in the native
//! layout of `tracer-common`), then frames of `u8 tag, u32 length (LE),
//! payload`:
//!
//! | tag | payload |
//! |-----|---------|
//! | 1 META  | JSON: [`Meta`] |
//! | 2 EVENT | one ring-buffer record, byte for byte |
//! | 3 TICK  | u64 LE: bits of the f64 seconds since start of a growth sample |
//! | 4 END   | JSON: [`Trailer`] (end of trace, counters, raw stacks) |
//! | 5 SNAPSHOT | JSON: the [`Snapshot`] of existing goroutines (`--pid`), right after META |
//! | 6 SAMPLE | JSON: a [`SampleFrame`], a goroutine sample taken during the trace |
//!
//! Format 2 added SNAPSHOT, format 3 SAMPLE; older recordings still replay.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::capture::{Capture, End, Meta};
use crate::decode::decode;
use crate::model::existing::Snapshot;
use crate::model::{Model, SampleRules};

const MAGIC: &[u8; 8] = b"GOTRACE\0";
const VERSION: u32 = 3;
/// Oldest format this gotrace reads.
const OLDEST_VERSION: u32 = 1;
const TAG_META: u8 = 1;
const TAG_EVENT: u8 = 2;
const TAG_TICK: u8 = 3;
const TAG_END: u8 = 4;
const TAG_SNAPSHOT: u8 = 5;
const TAG_SAMPLE: u8 = 6;
/// Largest frame accepted when reading (a corrupt length must not make us
/// allocate gigabytes).
const MAX_FRAME: u32 = 256 << 20;

fn endian_tag() -> u8 {
    if cfg!(target_endian = "little") {
        b'L'
    } else {
        b'B'
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("cannot write recording {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read recording {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a gotrace recording")]
    NotARecording { path: PathBuf },
    #[error(
        "{path} is a recording of format {found}; this gotrace reads formats {OLDEST_VERSION} to {VERSION}"
    )]
    Version { path: PathBuf, found: u32 },
    #[error("{path} was recorded on a host of the other byte order")]
    ByteOrder { path: PathBuf },
    #[error("{path} is corrupt: {why}")]
    Corrupt { path: PathBuf, why: String },
    #[error(
        "{path} ends before the end of its trace (the recording gotrace was killed or the disk filled up)"
    )]
    Truncated { path: PathBuf },
}

/// A SAMPLE frame: what `Model::observe` was given.
#[derive(Serialize, Deserialize)]
pub struct SampleFrame {
    pub snapshot: Snapshot,
    pub rules: SampleRules,
    pub unread: Vec<u64>,
}

/// The END frame.
#[derive(Serialize, Deserialize)]
pub struct Trailer {
    pub end: End,
    pub stacks: BTreeMap<i32, Vec<u64>>,
}

/// Writes a recording as the trace runs. A write error stops the recording
/// (the trace goes on) and is reported by [`Recorder::finish`].
pub struct Recorder {
    path: PathBuf,
    w: BufWriter<File>,
    error: Option<io::Error>,
}

impl Recorder {
    /// Starts a recording in `f`, a new file at `path` (the caller creates
    /// it, refusing symlinks).
    pub fn create(f: File, path: &Path, meta: &Meta) -> Result<Recorder, RecordError> {
        let err = |source| RecordError::Write {
            path: path.to_path_buf(),
            source,
        };
        let mut w = BufWriter::with_capacity(1 << 20, f);
        let mut head = MAGIC.to_vec();
        head.extend(VERSION.to_le_bytes());
        head.push(endian_tag());
        w.write_all(&head).map_err(err)?;
        let mut r = Recorder {
            path: path.to_path_buf(),
            w,
            error: None,
        };
        let json = serde_json::to_vec(meta).expect("Meta serialises");
        r.frame(TAG_META, &json);
        match r.error.take() {
            Some(e) => Err(err(e)),
            None => Ok(r),
        }
    }

    fn frame(&mut self, tag: u8, payload: &[u8]) {
        if self.error.is_some() {
            return;
        }
        let len = payload.len() as u32;
        let res = self
            .w
            .write_all(&[tag])
            .and_then(|_| self.w.write_all(&len.to_le_bytes()))
            .and_then(|_| self.w.write_all(payload));
        if let Err(e) = res {
            log::warn!("recording to {} stopped: {e}", self.path.display());
            self.error = Some(e);
        }
    }

    /// The goroutines read at attach (before any event).
    pub fn snapshot(&mut self, snap: &Snapshot) {
        let json = serde_json::to_vec(snap).expect("Snapshot serialises");
        self.frame(TAG_SNAPSHOT, &json);
    }

    /// A goroutine sample folded into the model under `rules`.
    pub fn sample(&mut self, snapshot: &Snapshot, rules: SampleRules, unread: &[u64]) {
        #[derive(Serialize)]
        struct Frame<'a> {
            snapshot: &'a Snapshot,
            rules: SampleRules,
            unread: &'a [u64],
        }
        let frame = Frame {
            snapshot,
            rules,
            unread,
        };
        let json = serde_json::to_vec(&frame).expect("a sample serialises");
        self.frame(TAG_SAMPLE, &json);
    }

    /// One ring-buffer record, as received.
    pub fn event(&mut self, bytes: &[u8]) {
        self.frame(TAG_EVENT, bytes);
    }

    /// A growth sample taken `t_s` seconds after the start.
    pub fn tick(&mut self, t_s: f64) {
        self.frame(TAG_TICK, &t_s.to_bits().to_le_bytes());
    }

    pub fn finish(
        mut self,
        end: &End,
        stacks: &BTreeMap<i32, Vec<u64>>,
    ) -> Result<(), RecordError> {
        let trailer = Trailer {
            end: end.clone(),
            stacks: stacks.clone(),
        };
        let json = serde_json::to_vec(&trailer).expect("Trailer serialises");
        self.frame(TAG_END, &json);
        let err = |source| RecordError::Write {
            path: self.path.clone(),
            source,
        };
        if let Some(e) = self.error.take() {
            return Err(err(e));
        }
        self.w.flush().map_err(err)?;
        self.w.get_ref().sync_data().map_err(err)
    }
}

/// Reads a recording back into a [`Capture`]: every event goes through the
/// same decoder and model as in a live trace, in the same order, with the
/// growth samples at the same points.
pub fn replay(path: &Path) -> Result<Capture, RecordError> {
    let file = File::open(path).map_err(|source| RecordError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    replay_from(BufReader::with_capacity(1 << 20, file), path)
}

/// [`replay`] of a recording read from `r`; `path` names it in errors.
pub fn replay_from(mut r: impl Read, path: &Path) -> Result<Capture, RecordError> {
    let corrupt = |why: String| RecordError::Corrupt {
        path: path.to_path_buf(),
        why,
    };
    read_head(&mut r, path)?;
    let mut meta: Option<Meta> = None;
    let mut model = Model::default();
    let mut buf = Vec::new();
    loop {
        let tag = read_frame(&mut r, path, &mut buf)?;
        match tag {
            TAG_META => {
                meta = Some(
                    serde_json::from_slice(&buf).map_err(|e| corrupt(format!("header: {e}")))?,
                );
            }
            TAG_SNAPSHOT => {
                let snap: Snapshot =
                    serde_json::from_slice(&buf).map_err(|e| corrupt(format!("snapshot: {e}")))?;
                model.seed(&snap);
            }
            TAG_SAMPLE => {
                let s: SampleFrame =
                    serde_json::from_slice(&buf).map_err(|e| corrupt(format!("sample: {e}")))?;
                model.observe(&s.snapshot, s.rules, &s.unread);
            }
            TAG_EVENT => {
                // Undecodable records were counted live; they are in End.
                if let Ok(ev) = decode(&buf) {
                    model.apply(&ev);
                }
            }
            TAG_TICK => {
                let bits = u64::from_le_bytes(
                    buf.as_slice()
                        .try_into()
                        .map_err(|_| corrupt(format!("tick of {} bytes", buf.len())))?,
                );
                model.goroutines.sample_sites(f64::from_bits(bits));
            }
            TAG_END => {
                let t: Trailer =
                    serde_json::from_slice(&buf).map_err(|e| corrupt(format!("trailer: {e}")))?;
                let meta = meta.ok_or_else(|| corrupt("no header before the trailer".into()))?;
                return Ok(Capture {
                    meta,
                    model,
                    stacks: t.stacks,
                    end: t.end,
                });
            }
            other => return Err(corrupt(format!("unknown frame tag {other}"))),
        }
    }
}

/// Checks the file header: magic, a version this build reads, byte order.
fn read_head(r: &mut impl Read, path: &Path) -> Result<(), RecordError> {
    let mut head = [0u8; 13];
    if let Err(e) = r.read_exact(&mut head) {
        return Err(if e.kind() == io::ErrorKind::UnexpectedEof {
            RecordError::NotARecording {
                path: path.to_path_buf(),
            }
        } else {
            RecordError::Read {
                path: path.to_path_buf(),
                source: e,
            }
        });
    }
    if &head[..8] != MAGIC {
        return Err(RecordError::NotARecording {
            path: path.to_path_buf(),
        });
    }
    let version = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes"));
    if !(OLDEST_VERSION..=VERSION).contains(&version) {
        return Err(RecordError::Version {
            path: path.to_path_buf(),
            found: version,
        });
    }
    if head[12] != endian_tag() {
        return Err(RecordError::ByteOrder {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// Reads the next frame into `buf`; returns its tag.
fn read_frame(r: &mut impl Read, path: &Path, buf: &mut Vec<u8>) -> Result<u8, RecordError> {
    let rd = |source| RecordError::Read {
        path: path.to_path_buf(),
        source,
    };
    let truncated = || RecordError::Truncated {
        path: path.to_path_buf(),
    };
    let mut fh = [0u8; 5];
    match r.read_exact(&mut fh) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(truncated()),
        Err(e) => return Err(rd(e)),
    }
    let len = u32::from_le_bytes(fh[1..5].try_into().expect("4 bytes"));
    if len > MAX_FRAME {
        return Err(RecordError::Corrupt {
            path: path.to_path_buf(),
            why: format!("frame of {len} bytes"),
        });
    }
    // Read what is there rather than allocate the announced length
    // first: a corrupt length in a small file costs no memory.
    buf.clear();
    r.take(u64::from(len)).read_to_end(buf).map_err(rd)?;
    if buf.len() != len as usize {
        return Err(truncated());
    }
    Ok(fh[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that remembers the largest buffer it was asked to fill.
    struct Probe<'a> {
        data: &'a [u8],
        largest_read: usize,
    }

    impl Read for Probe<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.largest_read = self.largest_read.max(buf.len());
            self.data.read(buf)
        }
    }

    fn head() -> Vec<u8> {
        let mut d = MAGIC.to_vec();
        d.extend(VERSION.to_le_bytes());
        d.push(endian_tag());
        d
    }

    /// A frame announcing 256 MiB in a file of a few bytes is truncated,
    /// and is not allocated before being read (the fuzzer's `recording`
    /// target hit its allocation limit there).
    #[test]
    fn huge_frame_length_in_a_small_file() {
        let mut data = head();
        data.push(TAG_EVENT);
        data.extend(MAX_FRAME.to_le_bytes());
        data.extend([0u8; 40]);
        let mut probe = Probe {
            data: &data,
            largest_read: 0,
        };
        let err = replay_from(&mut probe, Path::new("rec")).err().unwrap();
        assert!(matches!(err, RecordError::Truncated { .. }), "{err}");
        assert!(probe.largest_read < 1 << 20, "{}", probe.largest_read);
        data.truncate(head().len() + 1);
        data.extend((MAX_FRAME + 1).to_le_bytes());
        let err = replay_from(&data[..], Path::new("rec")).err().unwrap();
        assert!(matches!(err, RecordError::Corrupt { .. }), "{err}");
    }
}
