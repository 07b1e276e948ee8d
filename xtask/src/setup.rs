//! Prerequisites: find what is missing (QEMU, kernel build tools, e2fsprogs, kernel source) and
//! install it with apt-get when we may, or stop with the exact command to run.

use anyhow::{Result, bail};
use std::path::Path;

/// One thing we need and the Debian/Ubuntu package that provides it.
struct Need {
    what: &'static str,
    present: fn(&str) -> bool,
    package: &'static str,
}

fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false)
}

fn exists(path: &str) -> bool {
    Path::new(path).exists()
}

const NEEDS: &[Need] = &[
    Need {
        what: "qemu-system-x86_64",
        present: on_path,
        package: "qemu-system-x86",
    },
    Need {
        what: "make",
        present: on_path,
        package: "make",
    },
    Need {
        what: "gcc",
        present: on_path,
        package: "gcc",
    },
    Need {
        what: "flex",
        present: on_path,
        package: "flex",
    },
    Need {
        what: "bison",
        present: on_path,
        package: "bison",
    },
    Need {
        what: "bc",
        present: on_path,
        package: "bc",
    },
    Need {
        what: "xz",
        present: on_path,
        package: "xz-utils",
    },
    Need {
        what: "mkfs.ext4",
        present: |b| on_path(b) || exists("/sbin/mkfs.ext4"),
        package: "e2fsprogs",
    },
    Need {
        what: crate::initramfs::BUSYBOX,
        present: exists,
        package: "busybox-static",
    },
    Need {
        what: "/usr/include/gelf.h",
        present: exists,
        package: "libelf-dev",
    },
    Need {
        // The static C library, for the kernel's selftests (`check`), linked with -static.
        what: "/usr/lib/x86_64-linux-gnu/libc.a",
        present: exists,
        package: "libc6-dev",
    },
];

/// The packages providing what is missing: the tools, and the kernel source when it is a
/// Debian package (the default 6.12, or `--kernel-src 6.1`).
fn find_missing(source_flag: Option<&Path>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = NEEDS
        .iter()
        .filter(|n| !(n.present)(n.what))
        .map(|n| (n.what.to_string(), n.package.to_string()))
        .collect();
    if let Some((tarball, package)) = crate::kernel::debian_package(source_flag)
        && !tarball.exists()
    {
        out.push((tarball.display().to_string(), package));
    }
    out
}

/// Installs what is missing when `install` and we are root with apt-get; otherwise explains.
pub fn ensure(install: bool, source_flag: Option<&Path>) -> Result<()> {
    let missing = find_missing(source_flag);
    if missing.is_empty() {
        return Ok(());
    }
    let packages: Vec<&str> = missing.iter().map(|n| n.1.as_str()).collect();
    let whats: Vec<&str> = missing.iter().map(|n| n.0.as_str()).collect();
    let command = format!(
        "apt-get install --no-install-recommends {}",
        packages.join(" ")
    );
    let root = unsafe { libc::geteuid() } == 0;
    if !install || !root || !on_path("apt-get") {
        let sudo = if root { "" } else { "sudo " };
        bail!(
            "missing: {}\n  install them with: {sudo}apt-get update && {sudo}{command}\n  (no apt-get? install QEMU, a C toolchain with flex/bison/bc/libelf, e2fsprogs, and pass --kernel-src for the kernel source)",
            whats.join(", ")
        );
    }
    eprintln!(
        "setup: missing {}; running: apt-get update && {command}",
        whats.join(", ")
    );
    let update = std::process::Command::new("apt-get")
        .args(["update", "-qq"])
        .status()?;
    if !update.success() {
        bail!("apt-get update failed ({update}); run it yourself, then: {command}");
    }
    let status = std::process::Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&packages)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()?;
    if !status.success() {
        bail!("`{command}` failed ({status})");
    }
    let still = find_missing(source_flag);
    if !still.is_empty() {
        let whats: Vec<&str> = still.iter().map(|n| n.0.as_str()).collect();
        bail!("still missing after installing: {}", whats.join(", "));
    }
    eprintln!("setup: installed {}", packages.join(" "));
    Ok(())
}
