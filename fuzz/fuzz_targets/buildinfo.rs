//! A `.go.buildinfo` section (also read as a build id note and a version).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tracer::fuzzing::buildinfo(data));
