//! A memory image (u64 LE address, then bytes) holding a Go pclntab.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tracer::fuzzing::pclntab(data));
