//! Debian's 5.10 cloud kernel and the guest's tools (qemu, static
//! busybox), fetched and cached.

use super::*;

pub(super) fn dpkg_installed(package: &str) -> bool {
    probe(cmd("dpkg-query").args(["-W", "-f=${Status}", package]))
        .is_some_and(|s| s.contains("install ok installed"))
}

/// qemu and a static busybox, from Debian.
pub(super) fn ensure_guest_tools() -> Result<()> {
    let missing: Vec<&str> = ["qemu-system-x86", "busybox-static"]
        .into_iter()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        skipped("qemu-system-x86, busybox-static");
    } else {
        installing(format!("Debian packages {}", missing.join(" ")));
        run(cmd("apt-get").arg("update").arg("-qq"))?;
        run(cmd("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    // The guest has no libraries for busybox: it must be the static one.
    if !shared_libraries(Path::new(BUSYBOX))?.is_empty() {
        bail!("{BUSYBOX} is dynamically linked: the busybox-static package should provide it");
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

/// `<tools>/oldkernel/<package>/{vmlinuz,config,package}`: the current cloud
/// kernel of Debian 11, downloaded once with apt from a temporary sources
/// list (the machine's own sources are left alone) and unpacked.
pub fn ensure_kernel() -> Result<Kernel> {
    let base = ensure_tools_dir()?.join("oldkernel");
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

    let apt = base.join("apt");
    for d in ["lists/partial", "cache/archives/partial", "debs"] {
        std::fs::create_dir_all(apt.join(d))?;
    }
    let sources = apt.join("sources.list");
    std::fs::write(
        &sources,
        format!(
            "deb [signed-by={KEYRING}] http://deb.debian.org/debian {DEBIAN_SUITE} main\n\
             deb [signed-by={KEYRING}] http://deb.debian.org/debian-security {DEBIAN_SUITE}-security main\n"
        ),
    )?;
    let apt_opts = |c: &mut Command| {
        c.arg("-o")
            .arg(format!("Dir::Etc::sourcelist={}", sources.display()))
            .args(["-o", "Dir::Etc::sourceparts=-"])
            .arg("-o")
            .arg(format!("Dir::State::Lists={}", apt.join("lists").display()))
            .arg("-o")
            .arg(format!("Dir::Cache={}", apt.join("cache").display()))
            .args(["-o", "APT::Get::List-Cleanup=0"])
            .args(["-o", "APT::Sandbox::User=root"]);
    };
    installing(format!(
        "Debian {DEBIAN_SUITE}'s cloud kernel (package lists)"
    ));
    let mut update = cmd("apt-get");
    apt_opts(&mut update);
    run(update.args(["update", "-qq"]))?;
    let mut depends = cmd("apt-cache");
    apt_opts(&mut depends);
    let deps = capture(depends.args(["depends", KERNEL_METAPACKAGE]))?;
    let package = deps
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-"))
        .with_context(|| format!("{KERNEL_METAPACKAGE} depends on no linux-image:\n{deps}"))?
        .to_string();
    installing(format!("kernel {package}"));
    let debs = apt.join("debs");
    let mut download = cmd("apt-get");
    apt_opts(&mut download);
    run(download
        .args(["download", "-qq"])
        .arg(&package)
        .current_dir(&debs))?;
    let deb = std::fs::read_dir(&debs)?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{package}_")))
        })
        .with_context(|| format!("apt-get download left no {package}_*.deb"))?;
    let unpacked = apt.join("unpacked");
    let _ = std::fs::remove_dir_all(&unpacked);
    run(cmd("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
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
    let version = deb
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.split('_').nth(1))
        .unwrap_or("?")
        .to_string();
    let dir = base.join(&package);
    let tmp = base.join(format!("{package}.partial"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    std::fs::copy(find("vmlinuz-")?, tmp.join("vmlinuz"))?;
    std::fs::copy(find("config-")?, tmp.join("config"))?;
    std::fs::write(tmp.join("package"), format!("{package} {version}\n"))?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir)?;
    // The .deb and the lists are not needed once the kernel is unpacked.
    let _ = std::fs::remove_dir_all(&apt);
    Ok(Kernel {
        vmlinuz: dir.join("vmlinuz"),
        package: format!("{package} {version}"),
    })
}
