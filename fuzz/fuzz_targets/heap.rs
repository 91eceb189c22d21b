//! Patches (region, offset, value) to a made-up Go heap, then one pass of
//! the leak proof over it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tracer::fuzzing::heap(data));
