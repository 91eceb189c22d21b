//! Sets `bpf_target_arch` (the arch whose `pt_regs` the probes read) and
//! rebuilds when bpf-linker changes.
fn main() {
    if let Err(e) = aya_build::emit_bpf_target_arch_cfg() {
        panic!("emit_bpf_target_arch_cfg: {e}");
    }
    match which::which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(_) => println!("cargo:warning=bpf-linker not found: run `cargo xtask setup`"),
    }
}
