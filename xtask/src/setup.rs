//! Prerequisites: find what is missing (QEMU, kernel build tools, e2fsprogs, kernel source) and
//! install it with apt-get when we may, or stop with the exact command to run.

use crate::process::{Cmd, Sink};
use anyhow::{Result, bail};
use std::path::Path;

/// One thing we need and the Debian/Ubuntu package that provides it.
struct Need {
    what: &'static str,
    present: fn(&str) -> bool,
    package: &'static str,
    /// Needed only to build (a kernel, the selftests), not to boot a kernel built elsewhere.
    build: bool,
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
        build: false,
    },
    Need {
        what: "make",
        present: on_path,
        package: "make",
        build: true,
    },
    Need {
        what: "gcc",
        present: on_path,
        package: "gcc",
        build: true,
    },
    Need {
        what: "flex",
        present: on_path,
        package: "flex",
        build: true,
    },
    Need {
        what: "bison",
        present: on_path,
        package: "bison",
        build: true,
    },
    Need {
        what: "bc",
        present: on_path,
        package: "bc",
        build: true,
    },
    Need {
        what: "xz",
        present: on_path,
        package: "xz-utils",
        build: true,
    },
    Need {
        what: "mkfs.ext4",
        present: |b| on_path(b) || exists("/sbin/mkfs.ext4"),
        package: "e2fsprogs",
        build: false,
    },
    Need {
        what: crate::initramfs::BUSYBOX,
        present: exists,
        package: "busybox-static",
        build: false,
    },
    Need {
        what: "/usr/include/gelf.h",
        present: exists,
        package: "libelf-dev",
        build: true,
    },
    Need {
        // The static C library, for the kernel's selftests (`check`), linked with -static.
        what: "/usr/lib/x86_64-linux-gnu/libc.a",
        present: exists,
        package: "libc6-dev",
        build: true,
    },
];

/// The packages providing what is missing: the tools, and the kernel source when it is a
/// Debian package (the default 6.12, or `--kernel-src 6.1`).
fn find_missing(source_flag: Option<&Path>, build: bool) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = NEEDS
        .iter()
        .filter(|n| (build || !n.build) && !(n.present)(n.what))
        .map(|n| (n.what.to_string(), n.package.to_string()))
        .collect();
    if let Some((tarball, package)) = crate::kernel::debian_package(source_flag)
        && build
        && !tarball.exists()
    {
        out.push((tarball.display().to_string(), package));
    }
    out
}

/// [`ensure`] for a run's kernel: the build tools and source only when it builds something.
pub fn ensure_for(install: bool, kernel: &crate::acquire::KernelChoice) -> Result<()> {
    ensure_needs(install, kernel.source_flag(), kernel.builds())
}

/// Installs what is missing when `install` and we are root with apt-get; otherwise explains.
/// `cargo xtask setup`.
pub fn run() -> Result<crate::exit::Exit> {
    ensure(true, None)?;
    eprintln!("setup: everything kernel-lab needs is installed");
    Ok(crate::exit::Exit::Passed)
}

pub fn ensure(install: bool, source_flag: Option<&Path>) -> Result<()> {
    ensure_needs(install, source_flag, true)
}

fn ensure_needs(install: bool, source_flag: Option<&Path>, build: bool) -> Result<()> {
    let missing = find_missing(source_flag, build);
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
    let apt_get = || {
        Cmd::new("apt-get", "apt-get")
            .stdout(Sink::Inherit)
            .stderr(Sink::Inherit)
    };
    let update = apt_get().args(["update", "-qq"]).run(None)?;
    if !update.success() {
        bail!(
            "apt-get update failed ({}); run it yourself, then: {command}",
            update.ended
        );
    }
    let install = apt_get()
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&packages)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .run(None)?;
    if !install.success() {
        bail!("`{command}` failed ({})", install.ended);
    }
    let still = find_missing(source_flag, build);
    if !still.is_empty() {
        let whats: Vec<&str> = still.iter().map(|n| n.0.as_str()).collect();
        bail!("still missing after installing: {}", whats.join(", "));
    }
    eprintln!("setup: installed {}", packages.join(" "));
    Ok(())
}
