//! Booting the guest under qemu (KVM when it can boot a stock kernel, else
//! TCG) and reading what it sends back.

use super::*;

/// What came back from the guest.
pub struct Guest {
    pub release: String,
    pub btf: String,
    pub accel: String,
    pub elapsed: Duration,
    pub kernel_package: String,
    pub files: BTreeMap<String, Vec<u8>>,
}

impl Guest {
    pub fn file(&self, name: &str) -> Option<&[u8]> {
        self.files.get(name).map(Vec::as_slice)
    }
}

/// Why `/dev/kvm` cannot boot a stock kernel here, if it cannot.
pub fn kvm_unusable() -> Option<String> {
    let dev = Path::new("/dev/kvm");
    if !dev.exists() {
        return Some("/dev/kvm is missing".into());
    }
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev)
        .is_err()
    {
        return Some("/dev/kvm cannot be opened".into());
    }
    if Path::new("/sys/module/kvm_pvm").exists()
        && !Path::new("/sys/module/kvm_intel").exists()
        && !Path::new("/sys/module/kvm_amd").exists()
    {
        // Pagetable-based virtual machines run only guest kernels built for
        // PVM: a stock kernel hangs right after it is decompressed.
        return Some(
            "this host's KVM is kvm_pvm (nested PVM), which boots only PVM guest kernels".into(),
        );
    }
    None
}

/// Longest a guest may run before it is killed.
const GUEST_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// With KVM, the guest must have said it is up within this long; otherwise
/// KVM is taken as unusable and the guest is started again under TCG.
const KVM_LIVENESS: Duration = Duration::from_secs(40);

pub fn boot(
    m: &Machine,
    kernel: &Kernel,
    initramfs: &Path,
    work: &Path,
    accel: Accel,
) -> Result<Guest> {
    let use_kvm = match accel {
        Accel::Tcg => false,
        _ if !m.kvm_possible => false,
        Accel::Kvm => true,
        Accel::Auto => match kvm_unusable() {
            Some(why) => {
                println!("{}: using TCG (software emulation): {why}", m.name);
                false
            }
            None => true,
        },
    };
    if use_kvm {
        match boot_with(m, kernel, initramfs, work, true) {
            Ok(g) => return Ok(g),
            Err(e) if accel == Accel::Auto => {
                println!("{}: KVM did not work ({e:#}); retrying under TCG", m.name);
            }
            Err(e) => return Err(e),
        }
    }
    boot_with(m, kernel, initramfs, work, false)
}

pub fn boot_with(
    m: &Machine,
    kernel: &Kernel,
    initramfs: &Path,
    work: &Path,
    kvm: bool,
) -> Result<Guest> {
    let console = work.join("console.log");
    let data = match m.data_port {
        Some(_) => work.join("data.log"),
        None => console.clone(),
    };
    for f in [&console, &data] {
        let _ = std::fs::remove_file(f);
    }
    let mut c = cmd(m.qemu);
    c.args(["-nodefaults", "-no-user-config", "-display", "none"])
        .args(["-no-reboot", "-m", "1024", "-smp", "2"]);
    if kvm {
        c.args(["-accel", "kvm", "-cpu", "host"]);
    } else {
        c.args(["-accel", "tcg"]).args(m.tcg_args);
    }
    c.arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        .arg("-append")
        .arg(format!(
            "console={} panic=-1 quiet loglevel=3 {}",
            m.console, m.append
        ))
        .arg("-serial")
        .arg(format!("file:{}", console.display()));
    if m.data_port.is_some() {
        c.arg("-serial").arg(format!("file:{}", data.display()));
    }
    c.stdin(Stdio::null());
    crate::util::announce(&c);
    let start = Instant::now();
    let mut child = c.spawn().with_context(|| format!("starting {}", m.qemu))?;
    let mut up = false;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if !up {
            up = std::fs::read_to_string(&data).is_ok_and(|d| d.contains("@@ up"));
        }
        let waited = start.elapsed();
        let hung = if kvm && !up && waited > KVM_LIVENESS {
            Some(format!(
                "the guest said nothing in {}s",
                KVM_LIVENESS.as_secs()
            ))
        } else if waited > GUEST_TIMEOUT {
            Some(format!("the guest ran over {}s", GUEST_TIMEOUT.as_secs()))
        } else {
            None
        };
        if let Some(why) = hung {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{why}; console:\n{}", console_tail(&console));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let elapsed = start.elapsed();
    if !status.success() {
        bail!(
            "qemu failed: {status}; console:\n{}",
            console_tail(&console)
        );
    }
    let text = std::fs::read_to_string(&data).unwrap_or_default();
    let mut guest = Guest {
        release: String::new(),
        btf: String::new(),
        accel: if kvm { "KVM".into() } else { "TCG".into() },
        elapsed,
        kernel_package: kernel.package.clone(),
        files: BTreeMap::new(),
    };
    let done = read_results(&text, &mut guest)?;
    echo_console(&console);
    if !done {
        bail!("the guest stopped before it sent every result");
    }
    Ok(guest)
}

/// Fills `guest` from the `@@` lines of the data port; true if the guest
/// said it was done.
fn read_results(text: &str, guest: &mut Guest) -> Result<bool> {
    let mut current: Option<(String, String)> = None;
    let mut done = false;
    for line in text.lines().map(|l| l.trim_end_matches('\r')) {
        if let Some((name, body)) = current.as_mut() {
            if line == "@@ end" {
                let bytes = base64_decode(body)
                    .with_context(|| format!("guest file {name}: bad base64"))?;
                guest.files.insert(name.clone(), bytes);
                current = None;
            } else {
                body.push_str(line.trim());
            }
            continue;
        }
        if let Some(r) = line.strip_prefix("@@ kernel ") {
            guest.release = r.trim().to_string();
        } else if let Some(b) = line.strip_prefix("@@ btf ") {
            guest.btf = b.trim().to_string();
        } else if let Some(name) = line.strip_prefix("@@ file ") {
            current = Some((name.trim().to_string(), String::new()));
        } else if line == "@@ done" {
            done = true;
        }
    }
    Ok(done)
}

/// Prints the guest's console; results sharing it are not echoed.
fn echo_console(console: &Path) {
    let text = std::fs::read_to_string(console).unwrap_or_default();
    let mut in_file = false;
    for line in text.lines().map(|l| l.trim_end_matches('\r')) {
        if line.starts_with("@@ ") {
            in_file = line.starts_with("@@ file ");
            continue;
        }
        if !in_file && !line.trim().is_empty() && !line.contains('\x1b') {
            println!("guest| {line}");
        }
    }
}

pub fn console_tail(console: &Path) -> String {
    let text = std::fs::read_to_string(console).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

pub fn base64_decode(text: &str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            b' ' | b'\n' | b'\r' | b'\t' => continue,
            _ => bail!("unexpected byte {c:#x}"),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------- comparison
