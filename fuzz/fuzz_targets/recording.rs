//! A gotrace recording, replayed and (when `GOTRACE_FUZZ_TARGET` names the
//! recorded binary, as `cargo xtask fuzz` sets it) turned into every report.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tracer::fuzzing::{Target, recording};

static TARGET: OnceLock<Option<Target>> = OnceLock::new();

fn target() -> Option<&'static Target> {
    TARGET
        .get_or_init(|| {
            let Some(path) = std::env::var_os("GOTRACE_FUZZ_TARGET") else {
                eprintln!("GOTRACE_FUZZ_TARGET is not set: replaying only, no reports");
                return None;
            };
            match Target::open(Path::new(&path)) {
                Ok(t) => Some(t),
                Err(e) => panic!("GOTRACE_FUZZ_TARGET={}: {e}", path.display()),
            }
        })
        .as_ref()
}

fuzz_target!(|data: &[u8]| recording(data, target()));
