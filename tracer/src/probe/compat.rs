//! What the embedded eBPF object asks of the kernel, read from the object
//! itself: the helpers its programs call, the map types it defines, the
//! instruction set it uses, each with the Linux version that introduced it.
//!
//! gotrace's target is CentOS Stream 9 / RHEL 9 (Linux 5.14); the unit tests
//! below fail if a change makes the object need anything newer than
//! [`BASELINE`], and `gotrace check` prints the result for the running kernel.

use object::{Object as _, ObjectSection as _, ObjectSymbol as _, SymbolKind};

/// The newest kernel feature the object may use: the BPF ring buffer (5.8).
/// Everything else must be at least as old.
pub const BASELINE: KernelVersion = KernelVersion(5, 8);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct KernelVersion(pub u32, pub u32);

impl std::fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

/// One kernel feature the object uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Feature {
    pub what: String,
    pub since: KernelVersion,
}

/// Everything the object needs, newest first.
#[derive(Debug)]
pub struct Requirements {
    pub features: Vec<Feature>,
    /// Helper ids, map types or instructions this table does not know (a
    /// test fails on them: add them with their version).
    pub unknown: Vec<String>,
    /// CO-RE relocations in `.BTF.ext`: only those would make the loader
    /// read the kernel's own BTF (`/sys/kernel/btf/vmlinux`,
    /// CONFIG_DEBUG_INFO_BTF).
    pub core_relocations: u32,
}

impl Requirements {
    /// The oldest kernel that has every feature.
    pub fn min_kernel(&self) -> KernelVersion {
        self.features
            .iter()
            .map(|f| f.since)
            .max()
            .unwrap_or(KernelVersion(0, 0))
    }
}

/// BPF helpers by id (`enum bpf_func_id` in `include/uapi/linux/bpf.h`) with
/// the release that added them. Only helpers a tracing program may plausibly
/// call are listed; any other id shows up in [`Requirements::unknown`].
const HELPERS: &[(i32, &str, KernelVersion)] = &[
    (1, "bpf_map_lookup_elem", KernelVersion(3, 19)),
    (2, "bpf_map_update_elem", KernelVersion(3, 19)),
    (3, "bpf_map_delete_elem", KernelVersion(3, 19)),
    (4, "bpf_probe_read", KernelVersion(4, 1)),
    (5, "bpf_ktime_get_ns", KernelVersion(4, 1)),
    (6, "bpf_trace_printk", KernelVersion(4, 1)),
    (7, "bpf_get_prandom_u32", KernelVersion(4, 1)),
    (8, "bpf_get_smp_processor_id", KernelVersion(4, 1)),
    (12, "bpf_tail_call", KernelVersion(4, 2)),
    (14, "bpf_get_current_pid_tgid", KernelVersion(4, 2)),
    (15, "bpf_get_current_uid_gid", KernelVersion(4, 2)),
    (16, "bpf_get_current_comm", KernelVersion(4, 2)),
    (25, "bpf_perf_event_output", KernelVersion(4, 4)),
    (27, "bpf_get_stackid", KernelVersion(4, 6)),
    (35, "bpf_get_current_task", KernelVersion(4, 8)),
    (45, "bpf_probe_read_str", KernelVersion(4, 11)),
    (67, "bpf_get_stack", KernelVersion(4, 18)),
    (112, "bpf_probe_read_user", KernelVersion(5, 5)),
    (113, "bpf_probe_read_kernel", KernelVersion(5, 5)),
    (114, "bpf_probe_read_user_str", KernelVersion(5, 5)),
    (115, "bpf_probe_read_kernel_str", KernelVersion(5, 5)),
    (130, "bpf_ringbuf_output", KernelVersion(5, 8)),
    (131, "bpf_ringbuf_reserve", KernelVersion(5, 8)),
    (132, "bpf_ringbuf_submit", KernelVersion(5, 8)),
    (133, "bpf_ringbuf_discard", KernelVersion(5, 8)),
    (134, "bpf_ringbuf_query", KernelVersion(5, 8)),
];

/// Map types by id (`enum bpf_map_type`) with the release that added them.
const MAP_TYPES: &[(u32, &str, KernelVersion)] = &[
    (1, "hash", KernelVersion(3, 19)),
    (2, "array", KernelVersion(3, 19)),
    (3, "prog_array", KernelVersion(4, 2)),
    (4, "perf_event_array", KernelVersion(4, 3)),
    (5, "percpu_hash", KernelVersion(4, 6)),
    (6, "percpu_array", KernelVersion(4, 6)),
    (7, "stack_trace", KernelVersion(4, 6)),
    (9, "lru_hash", KernelVersion(4, 10)),
    (10, "lru_percpu_hash", KernelVersion(4, 10)),
    (27, "ringbuf", KernelVersion(5, 8)),
];

/// Size of aya-ebpf's legacy map definition in the `maps` section
/// (`type, key_size, value_size, max_entries, map_flags, id, pinning`).
const MAP_DEF_SIZE: usize = 28;

fn add(found: &mut Vec<Feature>, what: String, since: KernelVersion) {
    if !found.iter().any(|f| f.what == what) {
        found.push(Feature { what, since });
    }
}

/// Reads the requirements of an eBPF ELF object.
pub fn requirements(elf: &[u8]) -> Result<Requirements, object::Error> {
    let file = object::File::parse(elf)?;
    let mut found: Vec<Feature> = Vec::new();
    let mut unknown: Vec<String> = Vec::new();

    // Program sections: every function symbol's instructions.
    let mut programs = 0;
    for sym in file.symbols() {
        if sym.kind() != SymbolKind::Text || sym.size() == 0 {
            continue;
        }
        let Some(index) = sym.section_index() else {
            continue;
        };
        let section = file.section_by_index(index)?;
        let data = section.data()?;
        let start = (sym.address() - section.address()) as usize;
        let Some(code) = data.get(start..start + sym.size() as usize) else {
            continue;
        };
        if section.name()? != ".text" {
            programs += 1;
        }
        insns(
            code,
            &mut |what, since| add(&mut found, what, since),
            &mut unknown,
        );
    }
    if programs > 0 {
        // Uprobes are kprobe-type programs attached to a perf event of the
        // `uprobe` PMU (perf_event_open with a path and offset).
        add(
            &mut found,
            "program type kprobe, attached as a uprobe through the perf uprobe PMU".into(),
            KernelVersion(4, 17),
        );
    }

    // Legacy map definitions.
    if let Some(maps) = file.section_by_name("maps") {
        for def in maps.data()?.chunks_exact(MAP_DEF_SIZE) {
            let ty = u32::from_le_bytes(def[..4].try_into().expect("4 bytes"));
            match MAP_TYPES.iter().find(|(id, _, _)| *id == ty) {
                Some((_, name, since)) => add(&mut found, format!("map type {name}"), *since),
                None => unknown.push(format!("map type {ty}")),
            }
        }
    }
    // BTF-defined maps would need their BTF read: none are expected.
    if file.section_by_name(".maps").is_some() {
        unknown.push("BTF-defined maps (.maps section)".into());
    }
    if file.section_by_name(".rodata").is_some() || file.section_by_name(".data").is_some() {
        // Global variables: a frozen array map the program reads directly.
        add(
            &mut found,
            "global data (.rodata map, BPF_MAP_FREEZE)".into(),
            KernelVersion(5, 2),
        );
    }
    let core_relocations = match file.section_by_name(".BTF.ext") {
        Some(ext) => core_relo_bytes(ext.data()?),
        None => 0,
    };
    found.sort_by(|a, b| b.since.cmp(&a.since).then(a.what.cmp(&b.what)));
    unknown.sort();
    unknown.dedup();
    Ok(Requirements {
        features: found,
        unknown,
        core_relocations,
    })
}

/// Size of the CO-RE relocation part of a `.BTF.ext` section (`struct
/// btf_ext_header`: magic, version, flags, hdr_len, then offset/length pairs
/// for func_info, line_info and, when hdr_len allows, core_relo).
fn core_relo_bytes(ext: &[u8]) -> u32 {
    let word = |at: usize| {
        ext.get(at..at + 4)
            .map_or(0, |b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    };
    let hdr_len = word(4) as usize;
    if hdr_len < 32 { 0 } else { word(28) }
}

// Instruction fields (include/uapi/linux/bpf_common.h, bpf.h).
const CLASS_LDX: u8 = 0x01;
const CLASS_STX: u8 = 0x03;
const CLASS_ALU: u8 = 0x04;
const CLASS_JMP: u8 = 0x05;
const CLASS_JMP32: u8 = 0x06;
const CLASS_ALU64: u8 = 0x07;
const MODE_MEMSX: u8 = 0x80;
const MODE_ATOMIC: u8 = 0xc0;
const OP_DIV: u8 = 0x30;
const OP_MOD: u8 = 0x90;
const OP_MOV: u8 = 0xb0;
const OP_END: u8 = 0xd0;
const OP_JA: u8 = 0x00;
const OP_CALL: u8 = 0x80;
const LD_IMM64: u8 = 0x18;

/// Scans BPF instructions for helper calls and instruction-set features.
fn insns(code: &[u8], add: &mut dyn FnMut(String, KernelVersion), unknown: &mut Vec<String>) {
    let mut i = 0;
    while i + 8 <= code.len() {
        let insn = &code[i..i + 8];
        let op = insn[0];
        let src = insn[1] >> 4;
        let off = i16::from_le_bytes([insn[2], insn[3]]);
        let imm = i32::from_le_bytes(insn[4..8].try_into().expect("4 bytes"));
        i += if op == LD_IMM64 { 16 } else { 8 };
        let class = op & 0x07;
        match class {
            CLASS_JMP if op & 0xf0 == OP_CALL => match src {
                0 => match HELPERS.iter().find(|(id, _, _)| *id == imm) {
                    Some((_, name, since)) => add(format!("helper {name}"), *since),
                    None => unknown.push(format!("helper #{imm}")),
                },
                1 => add("BPF-to-BPF function calls".into(), KernelVersion(4, 16)),
                _ => add(
                    "kernel function calls (kfuncs)".into(),
                    KernelVersion(5, 13),
                ),
            },
            CLASS_JMP32 if op & 0xf0 == OP_JA => {
                add("gotol (BPF ISA v4)".into(), KernelVersion(6, 6))
            }
            CLASS_JMP32 => add("32-bit jumps (BPF ISA v3)".into(), KernelVersion(5, 1)),
            CLASS_ALU | CLASS_ALU64 => {
                let alu = op & 0xf0;
                if (alu == OP_MOV || alu == OP_DIV || alu == OP_MOD) && off != 0 {
                    add(
                        "sign-extending moves, signed division (BPF ISA v4)".into(),
                        KernelVersion(6, 6),
                    );
                }
                if alu == OP_END && class == CLASS_ALU64 {
                    add("bswap (BPF ISA v4)".into(), KernelVersion(6, 6));
                }
            }
            CLASS_LDX if op & 0xe0 == MODE_MEMSX => add(
                "sign-extending loads (BPF ISA v4)".into(),
                KernelVersion(6, 6),
            ),
            CLASS_STX if op & 0xe0 == MODE_ATOMIC => {
                if imm == 0 {
                    add("atomic add (XADD)".into(), KernelVersion(3, 19));
                } else {
                    add(
                        "atomic fetch/and/or/xor/xchg/cmpxchg".into(),
                        KernelVersion(5, 12),
                    );
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object_requirements() -> Requirements {
        requirements(super::super::loader::EBPF_OBJECT).expect("the embedded object parses")
    }

    /// The embedded object needs nothing newer than the ring buffer (5.8),
    /// so it loads on CentOS Stream 9 / RHEL 9 (5.14) and Debian 11 (5.10).
    #[test]
    fn object_needs_at_most_the_baseline_kernel() {
        let req = object_requirements();
        assert!(
            req.unknown.is_empty(),
            "features missing from the compatibility table (add them with their kernel version): {:?}",
            req.unknown
        );
        let too_new: Vec<&Feature> = req.features.iter().filter(|f| f.since > BASELINE).collect();
        assert!(
            too_new.is_empty(),
            "the eBPF object needs features newer than Linux {BASELINE}: {too_new:?}"
        );
        assert_eq!(req.min_kernel(), BASELINE, "{req:#?}");
        assert_eq!(
            req.core_relocations, 0,
            "CO-RE relocations would make gotrace need the kernel's BTF"
        );
    }

    /// The audit does see the object's helpers and maps.
    #[test]
    fn audit_sees_the_objects_helpers_and_maps() {
        let req = object_requirements();
        let has = |what: &str| req.features.iter().any(|f| f.what == what);
        for what in [
            "helper bpf_ringbuf_reserve",
            "helper bpf_ringbuf_submit",
            "helper bpf_probe_read_kernel",
            "helper bpf_probe_read_user",
            "map type ringbuf",
            "map type array",
            "map type lru_hash",
            "map type percpu_array",
        ] {
            assert!(has(what), "{what} not found in {req:#?}");
        }
    }

    #[test]
    fn decodes_isa_features() {
        let mut found = Vec::new();
        let mut unknown = Vec::new();
        // call bpf_ringbuf_output; atomic fetch-add; w0 = (s8) w1; call #9999
        let code: Vec<u8> = [
            [0x85, 0x00, 0, 0, 130, 0, 0, 0],
            [0xdb, 0x21, 0, 0, 0x01, 0, 0, 0],
            [0xbc, 0x10, 8, 0, 0, 0, 0, 0],
            [0x85, 0x00, 0, 0, 0x0f, 0x27, 0, 0],
        ]
        .concat();
        insns(&code, &mut |w, v| found.push((w, v)), &mut unknown);
        let versions: Vec<KernelVersion> = found.iter().map(|f| f.1).collect();
        assert_eq!(
            versions,
            [
                KernelVersion(5, 8),
                KernelVersion(5, 12),
                KernelVersion(6, 6)
            ],
            "{found:?}"
        );
        assert_eq!(unknown, ["helper #9999"]);
    }
}
