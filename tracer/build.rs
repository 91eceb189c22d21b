//! Builds `tracer-ebpf` for the BPF target (nightly + bpf-linker, through
//! aya-build) and drops the object into OUT_DIR, where `probe::loader` embeds
//! it with `include_bytes_aligned!`.

fn main() -> anyhow::Result<()> {
    let ebpf_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tracer-ebpf");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "tracer-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
}
