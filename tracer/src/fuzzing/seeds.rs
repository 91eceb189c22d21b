//! Seed inputs of the fuzz targets: cut from a real Go binary (the whole
//! file, its build info and build id note, a memory image holding its
//! pclntab, its DWARF sections), and a small recording made with
//! [`Recorder`] whose pcs are the binary's own functions.

use std::collections::BTreeMap;
use std::path::Path;

use object::read::elf::ElfFile64;
use object::{Endianness, Object, ObjectSection, ObjectSegment, SegmentFlags};
use tracer_common::{
    CtxCancelEvent, CtxCreateEvent, CtxDoneEvent, EventHeader, EventKind, GoCreateEvent,
    GoExitEvent, GoIdentity, GoParkEvent, GoReadyEvent, TimerStartEvent, TimerStopEvent,
};

use super::DWARF_SECTIONS;
use super::synth::{self, Spec};
use crate::capture::record::Recorder;
use crate::capture::{End, Meta};
use crate::gobin::{Arch, GoBinary};

/// The largest memory image made for the `pclntab` target.
const MAX_IMAGE: u64 = 16 << 20;
/// `.go.buildinfo` is cut to this (header, version, start of the modinfo).
const MAX_BUILDINFO: usize = 4096;

/// One seed: the fuzz target it is for, a file name and the bytes.
pub struct Seed {
    pub target: &'static str,
    pub name: String,
    pub bytes: Vec<u8>,
}

/// Every variant of the synthetic binary of [`synth`].
pub const SYNTHETIC: [Spec; 7] = [
    Spec {
        version: "go1.26.6",
        arch: Arch::X86_64,
        symbols: true,
        compress: true,
    },
    Spec {
        version: "go1.26.6",
        arch: Arch::X86_64,
        symbols: false,
        compress: false,
    },
    Spec {
        version: "go1.27.3",
        arch: Arch::X86_64,
        symbols: true,
        compress: false,
    },
    Spec {
        version: "go1.21.13",
        arch: Arch::X86_64,
        symbols: true,
        compress: false,
    },
    Spec {
        version: "go1.19.8",
        arch: Arch::X86_64,
        symbols: true,
        compress: true,
    },
    Spec {
        version: "go1.26.6",
        arch: Arch::Aarch64,
        symbols: true,
        compress: false,
    },
    Spec {
        version: "go1.23.9",
        arch: Arch::Aarch64,
        symbols: false,
        compress: false,
    },
];

/// Seeds for `elf_open`, `buildinfo`, `pclntab` and `dwarf_layout` from
/// the synthetic binaries (a few KiB each).
pub fn synthetic() -> Vec<Seed> {
    let mut seeds = Vec::new();
    for spec in SYNTHETIC {
        let name = format!(
            "synth-{}-{}{}",
            spec.version,
            spec.arch,
            if spec.symbols { "" } else { "-stripped" }
        );
        let elf = super::elf::build(&spec);
        let mut seed = |target, suffix: &str, bytes| {
            seeds.push(Seed {
                target,
                name: format!("{name}{suffix}"),
                bytes,
            })
        };
        if spec.symbols {
            seed("dwarf_layout", "", synth::dwarf_container(&spec));
        }
        seed("pclntab", "", synth::pclntab_image(&spec));
        for (target, mut s) in from_bytes(&elf) {
            if target == "buildinfo" {
                s.name = format!("{name}-{}", s.name);
                seeds.push(s);
            }
        }
        seeds.push(Seed {
            target: "elf_open",
            name,
            bytes: elf,
        });
    }
    seeds
}

/// Seeds for `elf_open`, `buildinfo`, `pclntab` and `dwarf_layout` from the
/// ELF file at `path`, named after their content ("elf", "dwarf", ...).
pub fn from_binary(path: &Path) -> Result<Vec<Seed>, String> {
    let data = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    ElfFile64::<Endianness>::parse(&*data)
        .map_err(|e| format!("{}: not a 64-bit ELF file: {e}", path.display()))?;
    let mut seeds: Vec<Seed> = from_bytes(&data).into_iter().map(|(_, s)| s).collect();
    seeds.push(Seed {
        target: "elf_open",
        name: "elf".into(),
        bytes: data,
    });
    Ok(seeds)
}

/// The seeds cut out of an ELF file (not the file itself).
fn from_bytes(data: &[u8]) -> Vec<(&'static str, Seed)> {
    let Ok(elf) = ElfFile64::<Endianness>::parse(data) else {
        return Vec::new();
    };
    let section = |name: &str| -> Option<Vec<u8>> {
        Some(
            elf.section_by_name(name)?
                .uncompressed_data()
                .ok()?
                .into_owned(),
        )
    };
    let mut seeds = Vec::new();
    let mut seed = |target, name: &str, bytes| {
        seeds.push((
            target,
            Seed {
                target,
                name: name.to_string(),
                bytes,
            },
        ))
    };
    if let Some(mut info) = section(".go.buildinfo") {
        info.truncate(MAX_BUILDINFO);
        seed("buildinfo", "buildinfo", info);
    }
    if let Some(note) = section(".note.go.buildid") {
        seed("buildinfo", "buildid", note);
    }
    if let Some(image) = memory_image(&elf) {
        seed("pclntab", "image", image);
    }
    if elf.section_by_name(".debug_info").is_some() {
        let mut container = Vec::new();
        for id in DWARF_SECTIONS {
            let bytes = section(id.name()).unwrap_or_default();
            container.extend((bytes.len() as u32).to_le_bytes());
            container.extend(bytes);
        }
        seed("dwarf_layout", "dwarf", container);
    }
    seeds
}

/// The non-executable loadable segments laid out at their addresses (the
/// pclntab, the module data, `go:func.*`), after their base address.
fn memory_image(elf: &ElfFile64<'_, Endianness>) -> Option<Vec<u8>> {
    let segments: Vec<_> = elf
        .segments()
        .filter(|s| match s.flags() {
            SegmentFlags::Elf { p_flags, .. } => !p_flags.contains(object::elf::PF_X),
            _ => false,
        })
        .filter(|s| s.file_range().1 > 0)
        .collect();
    let base = segments.iter().map(|s| s.address()).min()?;
    let end = segments
        .iter()
        .map(|s| s.address() + s.file_range().1)
        .max()?;
    if end - base > MAX_IMAGE {
        return None;
    }
    let mut image = base.to_le_bytes().to_vec();
    image.resize(8 + (end - base) as usize, 0);
    for s in segments {
        let bytes = s.data().ok()?;
        let at = 8 + (s.address() - base) as usize;
        image[at..at + bytes.len()].copy_from_slice(bytes);
    }
    Some(image)
}

fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
    // SAFETY: the event structs are repr(C) plain old data without padding.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
}

fn header(kind: EventKind, ts_ns: u64) -> EventHeader {
    EventHeader {
        kind: kind as u32,
        tid: 4243,
        tgid: 4242,
        cpu: 1,
        ts_ns,
    }
}

/// Writes to `out` a small recording of a trace of `binary`: goroutines
/// created, parked, woken and exiting, a context created, cancelled with a
/// cause and waited on, a timer started and stopped, two growth samples,
/// and stacks made of the binary's functions.
pub fn recording(binary: &Path, out: &Path) -> Result<(), String> {
    let bin = GoBinary::open(binary).map_err(|e| e.to_string())?;
    let at = |name: &str, off: u64| bin.symbols().lookup(name).map_or(0, |s| s.addr + off);
    let itabs = bin.itabs().unwrap_or_default();
    let itab = |suffix: &str| {
        itabs
            .iter()
            .filter(|(_, n)| n.ends_with(suffix))
            .map(|(a, _)| *a)
            .min()
            .unwrap_or(0)
    };
    let meta = Meta {
        pid: 4242,
        exe: binary.display().to_string(),
        build_id: bin.build_id(),
        go_version: bin.version().raw.clone(),
        arch: bin.arch().to_string(),
        contexts_not_traced: None,
        timers_not_traced: None,
        probes_attached: 12,
        leak_threshold_ns: 1_000_000_000,
        snapshot: None,
        mode: crate::capture::Mode::Full,
    };
    let start: u64 = 5_000_000_000;
    let err = |e: crate::capture::record::RecordError| e.to_string();
    let f = crate::outputs::file::create(out).map_err(|e| e.to_string())?;
    let mut r = Recorder::create(f, out, &meta).map_err(err)?;
    let main_g = GoIdentity {
        goid: 1,
        parent_goid: 0,
        gopc: at("runtime.rt0_go", 0x40),
        startpc: at("runtime.main", 0),
    };
    let worker = |goid| GoIdentity {
        goid,
        parent_goid: 1,
        gopc: at("main.main", 0x30),
        startpc: at("main.main.gowrap1", 0),
    };
    for (goid, t) in [(7u64, 1), (8, 2), (9, 3)] {
        r.event(&bytes_of(&GoCreateEvent {
            header: header(EventKind::GoCreate, start + t * 1_000_000),
            g: worker(goid),
            stack_id: 1,
            _pad: 0,
            caller_pc: at("main.main", 0x34),
        }));
    }
    r.tick(0.5);
    for (goid, reason, stack) in [(7, 14, 2), (8, 14, 2), (9, 25, 3), (1, 2, 3)] {
        r.event(&bytes_of(&GoParkEvent {
            header: header(EventKind::GoPark, start + 10_000_000 + goid),
            g: if goid == 1 { main_g } else { worker(goid) },
            stack_id: stack,
            reason,
            caller_pc: at("runtime.chanrecv", 0x200),
            chans: [0x0000_00c0_0002_0000 + goid, 0, 0, 0],
        }));
    }
    r.event(&bytes_of(&GoReadyEvent {
        header: header(EventKind::GoReady, start + 20_000_000),
        goid: 9,
        waker_goid: 1,
    }));
    r.event(&bytes_of(&GoExitEvent {
        header: header(EventKind::GoExit, start + 21_000_000),
        goid: 9,
    }));
    let ctx = 0x0000_00c0_0010_0000;
    r.event(&bytes_of(&CtxCreateEvent {
        header: header(EventKind::CtxCreate, start + 30_000_000),
        goid: 1,
        ctx,
        child_itab: itab(",context.canceler"),
        parent_itab: itab(",context.Context"),
        parent_data: 0x0000_00c0_0010_0100,
        value_hops: 1,
        stack_id: 1,
        caller_pc: at("main.main", 0x50),
        deadline_wall: 0,
        deadline_ext: 0,
    }));
    r.event(&bytes_of(&CtxDoneEvent {
        header: header(EventKind::CtxDone, start + 31_000_000),
        ctx,
        chan: 0x0000_00c0_0002_0007,
    }));
    let mut cause = [0u8; tracer_common::CAUSE_MSG_LEN];
    cause[..8].copy_from_slice(b"shutdown");
    r.event(&bytes_of(&CtxCancelEvent {
        header: header(EventKind::CtxCancel, start + 32_000_000),
        goid: 1,
        ctx,
        method: tracer_common::CANCEL_METHOD_CANCEL_CTX,
        remove_from_parent: 1,
        err_itab: itab(",error"),
        err_data: 0x0000_00c0_0010_0200,
        flags: tracer_common::CANCEL_ERR_CANCELED | tracer_common::CANCEL_CAUSE_MSG,
        stack_id: 3,
        caller_pc: at("main.main", 0x60),
        done_chan: 0x0000_00c0_0002_0007,
        cause_len: 8,
        cause_msg: cause,
        ..Default::default()
    }));
    r.event(&bytes_of(&TimerStartEvent {
        header: header(EventKind::TimerStart, start + 40_000_000),
        goid: 8,
        timer: 0x0000_00c0_0030_0000,
        period: 1_000_000,
        func: at("time.sendTime", 0),
        chan: 0x0000_00c0_0002_0008,
        stack_id: 2,
        _pad: 0,
        caller_pc: at("main.main", 0x70),
    }));
    r.event(&bytes_of(&TimerStopEvent {
        header: header(EventKind::TimerStop, start + 41_000_000),
        goid: 8,
        timer: 0x0000_00c0_0030_0000,
    }));
    r.tick(1.5);
    let end = End {
        ended_by: "duration".into(),
        exit: None,
        start_ns: start,
        end_ns: start + 3_000_000_000,
        end_unix_ns: 1_760_000_000_000_000_000,
        events: 14,
        undecodable: 0,
        load_bias: 0,
        kernel: Default::default(),
        proof: None,
        at_exit: None,
        samples: None,
        state_ns: None,
        budget: None,
        held: None,
        ctx_memory: None,
        timer_memory: None,
    };
    let stacks = BTreeMap::from([
        (1, vec![at("runtime.newproc", 0), at("main.main", 0x34)]),
        (
            2,
            vec![
                at("runtime.gopark", 0),
                at("runtime.chanrecv", 0x200),
                at("main.main.gowrap1", 0x10),
            ],
        ),
        (
            3,
            vec![
                at("runtime.gopark", 0),
                at("runtime.selectgo", 0x300),
                at("main.main", 0x90),
                at("runtime.main", 0x100),
            ],
        ),
    ]);
    r.finish(&end, &stacks).map_err(err)
}
