//! The guest's kernel and tools (qemu, a static busybox) from Debian's
//! packages, fetched and cached.

use super::*;

pub(super) fn dpkg_installed(package: &str) -> bool {
    probe(cmd("dpkg-query").args(["-W", "-f=${Status}", package]))
        .is_some_and(|s| s.contains("install ok installed"))
}

/// The guest's tools on the host.
pub struct GuestTools {
    /// A static busybox for the guest's architecture.
    pub busybox: PathBuf,
}

/// qemu and a static busybox, from Debian: the host's `busybox-static`, or
/// for a foreign architecture its package for that architecture, unpacked
/// next to the kernel.
pub(super) fn ensure_guest_tools(m: &Machine) -> Result<GuestTools> {
    let wanted: &[&str] = if m.foreign {
        &[m.qemu_package]
    } else {
        &[m.qemu_package, "busybox-static"]
    };
    ensure_debian_packages(wanted)?;
    let busybox = if m.foreign {
        ensure_foreign(m, "busybox-static")?.join("bin/busybox")
    } else {
        PathBuf::from(BUSYBOX)
    };
    // The guest has no libraries for busybox: it must be the static one.
    if !m.foreign && !shared_libraries(&busybox)?.is_empty() {
        bail!(
            "{} is dynamically linked: the busybox-static package should provide it",
            busybox.display()
        );
    }
    Ok(GuestTools { busybox })
}

/// Installs the host's Debian `packages` that are missing.
pub fn ensure_debian_packages(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        skipped(packages.join(", "));
    } else {
        installing(format!("Debian packages {}", missing.join(" ")));
        run(cmd("apt-get").arg("update").arg("-qq"))?;
        run(cmd("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    Ok(())
}

/// busybox-static's binary.
pub(super) const BUSYBOX: &str = "/bin/busybox";

/// The booted kernel: its image, its config and the package it came from.
pub struct Kernel {
    pub(super) vmlinuz: PathBuf,
    pub(super) package: String,
}

/// apt run on a temporary sources list for one Debian release and
/// architecture, with its own lists and cache under `dir` (the machine's
/// own sources and dpkg architectures are left alone).
struct Apt<'a> {
    dir: PathBuf,
    m: &'a Machine,
}

impl<'a> Apt<'a> {
    fn new(m: &'a Machine, base: &Path) -> Result<Self> {
        let dir = base.join("apt");
        for d in ["lists/partial", "cache/archives/partial", "debs"] {
            std::fs::create_dir_all(dir.join(d))?;
        }
        let suite = m.suite;
        std::fs::write(
            dir.join("sources.list"),
            format!(
                "deb [signed-by={KEYRING}] http://deb.debian.org/debian {suite} main\n\
                 deb [signed-by={KEYRING}] http://deb.debian.org/debian-security {suite}-security main\n"
            ),
        )?;
        let apt = Self { dir, m };
        installing(format!("Debian {suite}'s {} package lists", m.debian_arch));
        run(apt.command("apt-get").args(["update", "-qq"]))?;
        Ok(apt)
    }

    fn command(&self, program: &str) -> Command {
        let mut c = cmd(program);
        let dir = &self.dir;
        c.arg("-o")
            .arg(format!(
                "Dir::Etc::sourcelist={}",
                dir.join("sources.list").display()
            ))
            .args(["-o", "Dir::Etc::sourceparts=-"])
            .arg("-o")
            .arg(format!("Dir::State::Lists={}", dir.join("lists").display()))
            .arg("-o")
            .arg(format!("Dir::Cache={}", dir.join("cache").display()))
            .args(["-o", "APT::Get::List-Cleanup=0"])
            .args(["-o", "APT::Sandbox::User=root"])
            .arg("-o")
            .arg(format!("APT::Architecture={}", self.m.debian_arch))
            .arg("-o")
            .arg(format!("APT::Architectures::={}", self.m.debian_arch));
        c
    }

    /// Downloads `package` and unpacks it into `into`; returns its version.
    fn unpack(&self, package: &str, into: &Path) -> Result<String> {
        installing(format!("{package} ({})", self.m.debian_arch));
        let debs = self.dir.join("debs");
        run(self
            .command("apt-get")
            .args(["download", "-qq"])
            .arg(package)
            .current_dir(&debs))?;
        let deb = std::fs::read_dir(&debs)?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{package}_")))
            })
            .with_context(|| format!("apt-get download left no {package}_*.deb"))?;
        let _ = std::fs::remove_dir_all(into);
        run(cmd("dpkg-deb").arg("-x").arg(&deb).arg(into))?;
        Ok(deb
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.split('_').nth(1))
            .unwrap_or("?")
            .to_string())
    }

    /// The `linux-image-*` package the kernel metapackage depends on.
    fn kernel_package(&self) -> Result<String> {
        let meta = self.m.kernel_metapackage;
        let deps = capture(self.command("apt-cache").args(["depends", meta]))?;
        deps.lines()
            .filter_map(|l| l.trim().strip_prefix("Depends:"))
            .map(str::trim)
            .find(|p| p.starts_with("linux-image-"))
            .map(str::to_string)
            .with_context(|| format!("{meta} depends on no linux-image:\n{deps}"))
    }
}

impl Drop for Apt<'_> {
    /// The .debs and the lists are not needed once unpacked.
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `<tools>/<machine>/<package>/{vmlinuz,config,package}`: the current
/// kernel of the machine's Debian release, downloaded once and unpacked.
pub fn ensure_kernel(m: &Machine) -> Result<Kernel> {
    let base = ensure_tools_dir()?.join(m.name);
    std::fs::create_dir_all(&base)?;
    // Any kernel already unpacked is used as it is (no network needed).
    let mut cached: Vec<PathBuf> = std::fs::read_dir(&base)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("vmlinuz").is_file() && p.join("package").is_file())
        .collect();
    cached.sort();
    if let Some(dir) = cached.pop() {
        let package = std::fs::read_to_string(dir.join("package"))?
            .trim()
            .to_string();
        skipped(format!("kernel {package} ({})", dir.display()));
        return Ok(Kernel {
            vmlinuz: dir.join("vmlinuz"),
            package,
        });
    }
    let apt = Apt::new(m, &base)?;
    let package = apt.kernel_package()?;
    let unpacked = apt.dir.join("unpacked");
    let version = apt.unpack(&package, &unpacked)?;
    let boot = unpacked.join("boot");
    let find = |prefix: &str| -> Result<PathBuf> {
        std::fs::read_dir(&boot)?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
            })
            .with_context(|| format!("no {prefix}* in {}", boot.display()))
    };
    let dir = base.join(&package);
    let tmp = base.join(format!("{package}.partial"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    std::fs::copy(find("vmlinuz-")?, tmp.join("vmlinuz"))?;
    std::fs::copy(find("config-")?, tmp.join("config"))?;
    std::fs::write(tmp.join("package"), format!("{package} {version}\n"))?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir)?;
    Ok(Kernel {
        vmlinuz: dir.join("vmlinuz"),
        package: format!("{package} {version}"),
    })
}

/// `<tools>/<machine>/<package>/`: a package of the machine's architecture
/// unpacked (not installed), downloaded once.
pub(super) fn ensure_foreign(m: &Machine, package: &str) -> Result<PathBuf> {
    let base = ensure_tools_dir()?.join(m.name);
    let dir = base.join(package);
    let done = dir.join(".unpacked");
    if done.is_file() {
        skipped(format!("{package} ({}, {})", m.debian_arch, dir.display()));
        return Ok(dir);
    }
    std::fs::create_dir_all(&base)?;
    let apt = Apt::new(m, &base)?;
    let version = apt.unpack(package, &dir)?;
    std::fs::write(&done, format!("{package} {version}\n"))?;
    Ok(dir)
}
