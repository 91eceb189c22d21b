//! A whole ELF file, opened and used as gotrace uses a target's executable.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tracer::fuzzing::elf_open(data));
