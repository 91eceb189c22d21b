//! DWARF sections (u32 LE length + bytes each, see `tracer::fuzzing::DWARF_SECTIONS`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tracer::fuzzing::dwarf_layout(data));
