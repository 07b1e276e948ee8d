//! The initramfs: the static guest agent as /init plus the lab's JSON plan, as a newc cpio
//! written from Rust (no root, no cpio tool). Left uncompressed: TCG decompresses slowly and the
//! archive is small.

use crate::cache;
use crate::process::{Cmd, Sink};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

/// One archive member.
pub enum Entry<'a> {
    Dir {
        path: &'a str,
    },
    File {
        path: &'a str,
        mode: u32,
        data: &'a [u8],
    },
    CharDev {
        path: &'a str,
        major: u32,
        minor: u32,
    },
    Symlink {
        path: &'a str,
        target: &'a str,
    },
}

/// Writes a newc ("070701") archive with its TRAILER!!!.
pub fn cpio(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut ino = 1;
    let mut member = |out: &mut Vec<u8>, name: &str, mode: u32, data: &[u8], rdev: (u32, u32)| {
        let header = format!(
            "070701{ino:08x}{mode:08x}{uid:08x}{gid:08x}{nlink:08x}{mtime:08x}{size:08x}{dmaj:08x}{dmin:08x}{rmaj:08x}{rmin:08x}{namesize:08x}{check:08x}",
            uid = 0,
            gid = 0,
            nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 },
            mtime = 0,
            size = data.len(),
            dmaj = 0,
            dmin = 0,
            rmaj = rdev.0,
            rmin = rdev.1,
            namesize = name.len() + 1,
            check = 0,
        );
        ino += 1;
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        pad4(out);
        out.extend_from_slice(data);
        pad4(out);
    };
    for e in entries {
        match *e {
            Entry::Dir { path } => member(&mut out, path, 0o040755, &[], (0, 0)),
            Entry::File { path, mode, data } => {
                member(&mut out, path, 0o100000 | mode, data, (0, 0))
            }
            Entry::CharDev { path, major, minor } => {
                member(&mut out, path, 0o020600, &[], (major, minor))
            }
            Entry::Symlink { path, target } => {
                member(&mut out, path, 0o120777, target.as_bytes(), (0, 0))
            }
        }
    }
    member(&mut out, "TRAILER!!!", 0, &[], (0, 0));
    out
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// Builds the static agent (glibc, crt-static) in target/guest; cargo makes a warm build a no-op.
pub fn build_agent() -> Result<PathBuf> {
    let root = cache::project_root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target_dir = root.join("target/guest");
    let target = "x86_64-unknown-linux-gnu";
    let bin = target_dir.join(target).join("release/kernel-lab-agent");
    let stamp = target_dir.join("kernel-lab-rustflags");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(AGENT_RUSTFLAGS)
        && is_newer_than_sources(&bin, &root)
    {
        return Ok(bin); // a warm run: skip even cargo's own no-op check (~0.1 s)
    }
    crate::progress::status(
        "agent: cargo build of the static guest agent (the first build takes ~30 s) ...",
    );
    Cmd::new(cargo, "cargo build of the guest agent")
        .args(["build", "--quiet", "--release", "--package", "guest"])
        .args([
            "--bin",
            "kernel-lab-agent",
            "--target",
            target,
            "--target-dir",
        ])
        .arg(&target_dir)
        .dir(&root)
        .env("RUSTFLAGS", AGENT_RUSTFLAGS)
        .stderr(Sink::Merge)
        .checked()?;
    std::fs::write(&stamp, AGENT_RUSTFLAGS)?;
    Ok(bin)
}

/// Static glibc, and not position-independent: a static-pie binary relocates itself at start,
/// which costs page faults under TCG.
const AGENT_RUSTFLAGS: &str = "-C target-feature=+crt-static -C relocation-model=static";

/// Whether `bin` is newer than every input of the agent's build (its crate, the workspace
/// manifests and lock file, cargo's config).
fn is_newer_than_sources(bin: &Path, root: &Path) -> bool {
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let Some(built) = mtime(bin) else {
        return false;
    };
    let mut inputs: Vec<PathBuf> = [
        "Cargo.toml",
        "Cargo.lock",
        "guest/Cargo.toml",
        ".cargo/config.toml",
    ]
    .iter()
    .map(|p| root.join(p))
    .collect();
    let mut dirs = vec![root.join("guest/src")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p)
            } else {
                inputs.push(p)
            }
        }
    }
    inputs.iter().all(|p| mtime(p).is_none_or(|m| m <= built))
}

/// Whether an ELF64 binary has a PT_INTERP program header (is dynamically linked).
fn has_interpreter(elf: &[u8]) -> bool {
    let u16_at = |o: usize| {
        elf.get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()) as usize)
    };
    let (Some(phoff), Some(size), Some(count)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        return false;
    };
    (0..count)
        .any(|i| elf.get(phoff + i * size..phoff + i * size + 4) == Some(&3u32.to_le_bytes()[..]))
}

/// Busybox applets linked into /bin for `--shell`.
const APPLETS: &[&str] = &[
    "sh", "ls", "cat", "echo", "grep", "head", "tail", "free", "ps", "top", "dd", "sleep", "mkdir",
    "rmdir", "mount", "umount", "sync", "wc", "sort", "uniq", "awk", "sed", "vi", "less", "watch",
    "find", "du", "df", "uptime", "kill", "seq", "tr", "cut", "env", "dmesg", "clear",
];

/// Where busybox-static puts its binary on Debian/Ubuntu.
pub const BUSYBOX: &str = "/bin/busybox";

/// A file added to the initramfs beside the agent (e.g. a selftest program), at `path`
/// (relative, its parent directories are made).
pub struct Extra {
    pub path: String,
    pub mode: u32,
    pub data: Vec<u8>,
}

/// Writes the initramfs for one run: /init = agent, /lab/plan.json = plan, the `extra` files;
/// with `shell`, also busybox and its applets in /bin, and `lab-step` to run one step by hand.
pub fn write(
    dest: &Path,
    agent: &Path,
    plan_json: &str,
    shell: bool,
    extra: &[Extra],
) -> Result<()> {
    let agent =
        std::fs::read(agent).with_context(|| format!("reading the agent {}", agent.display()))?;
    let mut entries = vec![
        Entry::Dir { path: "dev" },
        Entry::CharDev {
            path: "dev/console",
            major: 5,
            minor: 1,
        },
        Entry::Dir { path: "proc" },
        Entry::Dir { path: "sys" },
        Entry::Dir { path: "data" },
        Entry::Dir { path: "lab" },
        Entry::File {
            path: "init",
            mode: 0o755,
            data: &agent,
        },
        Entry::File {
            path: "lab/plan.json",
            mode: 0o644,
            data: plan_json.as_bytes(),
        },
    ];
    let busybox = if shell { static_busybox()? } else { vec![] };
    let applets: Vec<String> = APPLETS.iter().map(|a| format!("bin/{a}")).collect();
    if shell {
        entries.extend(shell_entries(&busybox, &applets));
    }
    let dirs = parent_dirs(extra);
    entries.extend(dirs.iter().map(|path| Entry::Dir { path }));
    entries.extend(extra.iter().map(|e| Entry::File {
        path: &e.path,
        mode: e.mode,
        data: &e.data,
    }));
    let archive = cpio(&entries);
    std::fs::write(dest, archive).with_context(|| format!("writing {}", dest.display()))
}

/// Busybox from the host, refused unless static (the initramfs has no loader and no libc).
fn static_busybox() -> Result<Vec<u8>> {
    let need = format!(
        "--shell needs a static busybox at {BUSYBOX}: apt-get install --no-install-recommends busybox-static"
    );
    let bytes = std::fs::read(BUSYBOX).with_context(|| need.clone())?;
    if has_interpreter(&bytes) {
        bail!("{BUSYBOX} is dynamically linked; {need}");
    }
    Ok(bytes)
}

/// `--shell`'s /bin: busybox, its applets (`applets`: their paths) and `lab-step`.
fn shell_entries<'a>(busybox: &'a [u8], applets: &'a [String]) -> Vec<Entry<'a>> {
    let mut entries = vec![
        Entry::Dir { path: "bin" },
        Entry::File {
            path: "bin/busybox",
            mode: 0o755,
            data: busybox,
        },
    ];
    entries.extend(applets.iter().map(|a| Entry::Symlink {
        path: a,
        target: "busybox",
    }));
    entries.push(Entry::File {
        path: "bin/lab-step",
        mode: 0o755,
        data: b"#!/bin/sh\nexec /init step \"$@\"\n",
    });
    entries
}

/// The directories the `extra` files need that the initramfs does not already have, parents
/// before children.
fn parent_dirs(extra: &[Extra]) -> Vec<String> {
    let mut dirs: Vec<String> = Vec::new();
    for e in extra {
        for p in Path::new(&e.path).ancestors().skip(1) {
            let p = p.to_string_lossy().into_owned();
            let made = ["", "dev", "proc", "sys", "data", "lab"].contains(&p.as_str());
            if !made && !dirs.contains(&p) {
                dirs.push(p);
            }
        }
    }
    dirs.sort();
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads the archive back with the same rules, as the kernel's unpacker does.
    fn members(mut a: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut offset = 0;
        loop {
            let field = |i: usize| {
                u32::from_str_radix(std::str::from_utf8(&a[6 + 8 * i..14 + 8 * i]).unwrap(), 16)
                    .unwrap()
            };
            assert_eq!(&a[..6], b"070701");
            let (mode, size, namesize) = (field(1), field(6) as usize, field(11) as usize);
            let name = String::from_utf8(a[110..110 + namesize - 1].to_vec()).unwrap();
            let data_start = (offset + 110 + namesize).next_multiple_of(4) - offset;
            let data = a[data_start..data_start + size].to_vec();
            let next = (offset + data_start + size).next_multiple_of(4) - offset;
            offset += next;
            a = &a[next..];
            if name == "TRAILER!!!" {
                assert!(a.is_empty());
                return out;
            }
            out.push((name, mode, data));
        }
    }

    #[test]
    fn static_and_dynamic_binaries_are_told_apart() {
        // The agent is static; the test binary itself is dynamically linked.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(has_interpreter(&me));
        assert!(!has_interpreter(b"\x7fELF short"));
    }

    #[test]
    fn extra_files_come_with_their_directories_before_them() {
        let dir = tempfile::tempdir().unwrap();
        let agent = dir.path().join("agent");
        std::fs::write(&agent, b"agent").unwrap();
        let dest = dir.path().join("initramfs.cpio");
        let extra = [
            Extra {
                path: "selftests/cgroup/test_x".into(),
                mode: 0o755,
                data: b"elf".to_vec(),
            },
            Extra {
                path: "etc/hosts".into(),
                mode: 0o644,
                data: b"127.0.0.1 localhost\n".to_vec(),
            },
        ];
        write(&dest, &agent, "{}", false, &extra).unwrap();
        let m = members(&std::fs::read(&dest).unwrap());
        let pos = |name: &str| {
            m.iter()
                .position(|(n, _, _)| n == name)
                .unwrap_or_else(|| panic!("{name} missing"))
        };
        assert!(pos("selftests") < pos("selftests/cgroup"));
        assert!(pos("selftests/cgroup") < pos("selftests/cgroup/test_x"));
        assert!(pos("etc") < pos("etc/hosts"));
        let (_, mode, data) = &m[pos("selftests/cgroup/test_x")];
        assert_eq!((*mode, data.as_slice()), (0o100755, b"elf".as_slice()));
        assert_eq!(m.iter().filter(|(n, _, _)| n == "lab").count(), 1);
    }

    #[test]
    fn cpio_round_trips() {
        let archive = cpio(&[
            Entry::Dir { path: "dev" },
            Entry::CharDev {
                path: "dev/console",
                major: 5,
                minor: 1,
            },
            Entry::File {
                path: "init",
                mode: 0o755,
                data: b"abcde",
            },
            Entry::File {
                path: "lab/plan.json",
                mode: 0o644,
                data: b"{}",
            },
            Entry::Symlink {
                path: "bin/sh",
                target: "busybox",
            },
        ]);
        assert_eq!(archive.len() % 4, 0);
        let m = members(&archive);
        assert_eq!(m.len(), 5);
        assert_eq!(m[4], ("bin/sh".to_string(), 0o120777, b"busybox".to_vec()));
        assert_eq!(m[0].1, 0o040755);
        assert_eq!(m[1].1, 0o020600);
        assert_eq!(m[2], ("init".to_string(), 0o100755, b"abcde".to_vec()));
        assert_eq!(m[3].2, b"{}");
    }
}
