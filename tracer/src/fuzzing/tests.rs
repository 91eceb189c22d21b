//! The synthetic seeds reach deep into every parser, and every committed
//! fuzz finding (`tracer/testdata/fuzz/<target>/`) stays fixed.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::seeds::{SYNTHETIC, synthetic};
use super::*;
use crate::gobin::Arch;
use crate::gobin::layout::LayoutSource;

fn open(spec: &synth::Spec) -> GoBinary {
    GoBinary::from_bytes(Path::new("synthetic"), elf::build(spec)).unwrap()
}

#[test]
fn synthetic_binaries_parse_all_the_way() {
    for spec in SYNTHETIC {
        let what = format!("{spec:?}");
        let bin = open(&spec);
        assert_eq!(bin.version().raw, spec.version, "{what}");
        assert_eq!(bin.arch(), spec.arch, "{what}");
        assert!(bin.build_id().unwrap().starts_with("synthetic-build-id/"));
        assert_eq!(bin.symbols().len(), 15, "{what}");
        let p = bin.pclntab().expect(&what);
        assert_eq!(p.functions().len(), 15, "{what}");
        assert!(p.has_inline_tree(), "{what}");
        let layout = bin.layout().expect(&what);
        let want = if spec.symbols {
            LayoutSource::Dwarf
        } else {
            LayoutSource::Table
        };
        assert_eq!(layout.source, want, "{what}");
        let itabs = bin.itabs().expect(&what);
        assert_eq!(
            itabs.values().collect::<Vec<_>>(),
            ["*errors.errorString,error"],
            "{what}"
        );
        let gopark = bin.symbols().lookup("runtime.gopark").unwrap().clone();
        let rets = bin.ret_addresses("runtime.gopark").expect(&what);
        let ret_len = match spec.arch {
            Arch::X86_64 => 1,
            Arch::Aarch64 => 4,
        };
        assert_eq!(rets, [gopark.addr + gopark.size - ret_len], "{what}");
        crate::probe::goroutine::plan(&bin).expect(&what);
        let s = bin.symbolizer().expect(&what);
        let worker = bin.symbols().lookup("main.worker").unwrap().addr;
        let frames = s.symbolize(worker, false);
        let names: Vec<_> = frames.iter().map(|f| f.function.as_str()).collect();
        assert_eq!(names, ["main.helper", "main.worker"], "{what}");
        assert_eq!(frames[1].file.as_deref(), Some("/app/main.go"), "{what}");
        let wrapper = bin.symbols().lookup("main.main.gowrap1").unwrap().addr;
        assert_eq!(
            wrappers::go_wrapper_callee(&bin, &s, wrapper).as_deref(),
            Some("main.worker"),
            "{what}"
        );
    }
}

#[test]
fn synthetic_pclntab_images_and_dwarf_parse() {
    for spec in SYNTHETIC {
        let what = format!("{spec:?}");
        let image = synth::pclntab_image(&spec);
        let (addr, image) = image.split_first_chunk::<8>().unwrap();
        let version = GoVersion::parse(spec.version);
        let tab = Pclntab::from_image(
            Arc::new(image.to_vec()),
            u64::from_le_bytes(*addr),
            &version,
        )
        .expect(&what);
        assert_eq!(tab.functions().len(), 15, "{what}");
        assert!(tab.moduledata().is_some(), "{what}");
        if spec.symbols {
            let sections = split_sections(&synth::dwarf_container(&spec));
            let dwarf = gimli::Dwarf::load(|id| {
                let b = sections
                    .iter()
                    .find(|(s, _)| *s == id)
                    .map_or_else(|| Arc::from(&[][..]), |(_, b)| b.clone());
                Ok::<_, gimli::Error>(gimli::EndianArcSlice::new(b, gimli::RunTimeEndian::Little))
            })
            .unwrap();
            let layout = layout::from_dwarf(&dwarf, Path::new("synthetic")).expect(&what);
            assert!(!layout.wait_reasons.is_empty(), "{what}");
        }
    }
}

#[test]
fn seeds_are_small_and_run() {
    let seeds = synthetic();
    assert!(seeds.len() >= 4 * SYNTHETIC.len());
    for s in &seeds {
        assert!(
            s.bytes.len() <= 64 << 10,
            "{} is {} bytes",
            s.name,
            s.bytes.len()
        );
        run(s.target, &s.bytes, None);
    }
}

/// The synthetic Go 1.26 pclntab image, and the offset of the header in it.
fn pclntab_image() -> (Vec<u8>, usize) {
    let image = synth::pclntab_image(&SYNTHETIC[0]);
    let magic = 0xffff_fff1u32.to_le_bytes();
    let at = image.windows(4).position(|w| w == magic).unwrap();
    (image, at)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn parse_image(image: &[u8]) -> Result<Pclntab, String> {
    let addr = u64_at(image, 0);
    let version = GoVersion::parse("go1.26.0");
    Pclntab::from_image(Arc::new(image[8..].to_vec()), addr, &version)
}

/// A function table out of order (an entry after the next one) gives
/// sizes, not an underflow (found by fuzzing `pclntab`).
#[test]
fn pclntab_unsorted_function_table() {
    let (mut image, hdr) = pclntab_image();
    let functab = hdr + u64_at(&image, hdr + 64) as usize;
    let next = u32::from_le_bytes(image[functab + 32..functab + 36].try_into().unwrap());
    image[functab + 24..functab + 28].copy_from_slice(&(next + 0x10).to_le_bytes());
    let funcs = parse_image(&image).unwrap().functions();
    assert_eq!(funcs.len(), 15);
    assert!(funcs.iter().all(|f| f.size < 0x100), "{funcs:?}");
    pclntab(&image);
}

/// A text base near the end of the address space makes every function
/// unreadable rather than overflowing (`text-start-overflow`).
#[test]
fn pclntab_text_start_at_the_end_of_the_address_space() {
    let (mut image, hdr) = pclntab_image();
    image[hdr + 24..hdr + 32].copy_from_slice(&(u64::MAX - 1).to_le_bytes());
    let tab = parse_image(&image).unwrap();
    assert!(tab.functions().is_empty());
    assert!(tab.frames(u64::MAX).is_none());
    pclntab(&image);
}

/// A memory image mapped at the very end of the address space: addresses
/// computed from it do not wrap (`image-at-end-of-address-space`).
#[test]
fn pclntab_image_at_the_end_of_the_address_space() {
    let (mut image, _) = pclntab_image();
    for addr in [u64::MAX - 0x100, u64::MAX - 0x2000, !7] {
        image[..8].copy_from_slice(&addr.to_le_bytes());
        if let Ok(tab) = parse_image(&image) {
            let _ = tab.functions();
        }
        pclntab(&image);
    }
}

/// Runs `data` through the entry point of fuzz target `target`.
fn run(target: &str, data: &[u8], recorded: Option<&Target>) {
    match target {
        "elf_open" => elf_open(data),
        "pclntab" => pclntab(data),
        "buildinfo" => buildinfo(data),
        "dwarf_layout" => dwarf_layout(data),
        "recording" => recording(data, recorded),
        other => panic!("unknown fuzz target {other}"),
    }
}
/// Longest one committed input may take (a debug build, a busy machine):
/// the fuzzer's own timeout is far shorter, so this only catches a hang.
const INPUT_TIME_LIMIT: Duration = Duration::from_secs(20);
/// Most memory one committed input may hold live at once. The inputs are a
/// few KiB and the recording target is a small Go binary: a regression to
/// allocating by an untrusted length goes far past this.
const INPUT_MEMORY_LIMIT: usize = 64 << 20;

/// Every input under `tracer/testdata/fuzz/<target>/` (crashes, hangs and
/// huge allocations the fuzzer found, minimised) runs cleanly: no panic,
/// within [`INPUT_TIME_LIMIT`], holding at most [`INPUT_MEMORY_LIMIT`].
#[test]
fn fuzz_regressions() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/fuzz");
    let recorded = Arc::new(Target::open(&crate::gobin::testutil::probe("1.26")).unwrap());
    let (mut ran, mut failed) = (0, Vec::new());
    for dir in std::fs::read_dir(&root).unwrap().flatten() {
        let target = dir.file_name().to_string_lossy().into_owned();
        for input in std::fs::read_dir(dir.path()).unwrap().flatten() {
            let name = format!("{target}/{}", input.file_name().to_string_lossy());
            let data = std::fs::read(input.path()).unwrap();
            if let Err(why) = run_limited(&name, &target, data, recorded.clone()) {
                failed.push(format!("{name}: {why}"));
            }
            ran += 1;
        }
    }
    assert!(ran > 0, "no inputs under {}", root.display());
    assert!(failed.is_empty(), "failed: {failed:#?}");
}

/// Runs one input on a thread of its own, under the time and memory limits.
fn run_limited(
    name: &str,
    target: &str,
    data: Vec<u8>,
    recorded: Arc<Target>,
) -> Result<(), String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let (name, target) = (name.to_string(), target.to_string());
    std::thread::spawn(move || {
        limits::watch(&name);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run(&target, &data, Some(&recorded))
        }));
        let peak = limits::unwatch();
        let _ = tx.send((outcome.is_ok(), peak));
    });
    match rx.recv_timeout(INPUT_TIME_LIMIT) {
        Ok((false, _)) => Err("panicked".into()),
        Ok((true, peak)) => {
            eprintln!("fuzz_regressions: peak {} KiB", peak >> 10);
            Ok(())
        }
        Err(_) => Err(format!("still running after {INPUT_TIME_LIMIT:?}")),
    }
}

/// A global allocator counting, for the thread running an input, the bytes
/// it holds live, and refusing (with a message, then the abort of a failed
/// allocation) anything past [`INPUT_MEMORY_LIMIT`]: an allocation blow-up
/// fails the test instead of exhausting the machine.
mod limits {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static WATCHED: Cell<Option<&'static str>> = const { Cell::new(None) };
        static LIVE: Cell<isize> = const { Cell::new(0) };
        static PEAK: Cell<isize> = const { Cell::new(0) };
    }

    /// Starts counting on this thread, for the input `name`.
    pub fn watch(name: &str) {
        let name: &'static str = Box::leak(name.to_string().into_boxed_str());
        LIVE.set(0);
        PEAK.set(0);
        WATCHED.set(Some(name));
    }

    /// Stops counting; the peak of live bytes since [`watch`].
    pub fn unwatch() -> usize {
        WATCHED.set(None);
        PEAK.get().max(0) as usize
    }

    /// Whether `grow` more bytes keep the watched thread within the limit.
    fn admit(grow: isize) -> bool {
        let Ok(Some(name)) = WATCHED.try_with(Cell::get) else {
            return true;
        };
        let live = LIVE.get() + grow;
        if live > super::INPUT_MEMORY_LIMIT as isize {
            let msg = [
                "fuzz_regressions: ",
                name,
                " holds more than the memory limit\n",
            ];
            for part in msg {
                // SAFETY: writing a valid buffer to stderr; no allocation here.
                unsafe { libc::write(2, part.as_ptr().cast(), part.len()) };
            }
            // The failed allocation's report allocates too: let it.
            WATCHED.set(None);
            return false;
        }
        LIVE.set(live);
        PEAK.set(PEAK.get().max(live));
        true
    }

    fn released(bytes: usize) {
        if let Ok(Some(_)) = WATCHED.try_with(Cell::get) {
            LIVE.set(LIVE.get() - bytes as isize);
        }
    }

    struct Counting;

    // SAFETY: every call is forwarded to the system allocator unchanged;
    // only the accounting is added (thread-locals without destructors).
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            if !admit(layout.size() as isize) {
                return std::ptr::null_mut();
            }
            // SAFETY: the caller's layout, as GlobalAlloc requires.
            unsafe { System.alloc(layout) }
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            if !admit(layout.size() as isize) {
                return std::ptr::null_mut();
            }
            // SAFETY: as for alloc.
            unsafe { System.alloc_zeroed(layout) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            released(layout.size());
            // SAFETY: ptr came from System with this layout.
            unsafe { System.dealloc(ptr, layout) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            if !admit(new_size as isize - layout.size() as isize) {
                return std::ptr::null_mut();
            }
            // SAFETY: as for dealloc; new_size is the caller's.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    #[global_allocator]
    static ALLOCATOR: Counting = Counting;
}
