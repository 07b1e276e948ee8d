//! Setting the machine up before the steps: mounts, sysctls and sysfs, swap, disks, tracing,
//! the loopback interface.

use crate::agent::cgroups::{
    cgroup_v1_mount, cgroup_v1_probe, cgroup_v1_unmount, cgroups_v1, cgroups_v2, v1_to_v2,
};
use crate::agent::sample::at_boot;
use crate::agent::sys;
use crate::{CGROOT, DATA, Result, TMPFS, TRACEFS, mount, read, write};
use guest::spec::{Kind, LabSpec, SwapKind};
use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;

/// Mounts, sysctls, swap, disks and cgroups; returns the counters read once: as booted
/// (`boot.`, before the lab's sysctls and switches) and the v1 probe's (if asked for).
pub fn setup(spec: &LabSpec) -> Result<BTreeMap<String, u64>> {
    for dir in ["/proc", "/sys", DATA] {
        let _ = fs::create_dir_all(dir);
    }
    mount("proc", "/proc", "proc", 0)?;
    mount("sysfs", "/sys", "sysfs", 0)?;
    mount("cgroup2", CGROOT, "cgroup2", 0)?;
    let boot = at_boot();
    write("/proc/self/oom_score_adj", "-1000")?;
    for (key, value) in &spec.vm.sysctl {
        write(&format!("/proc/sys/{}", key.replace('.', "/")), value)?;
    }
    for (path, value) in &spec.vm.sysfs {
        write(&format!("/sys/{path}"), value)?;
    }
    if let Some(swap) = &spec.vm.swap {
        match swap.kind {
            SwapKind::Zram => zram_swap(swap.size.0)?,
            SwapKind::Disk => disk_swap(swap.size.0)?,
        }
    }
    let uses = |kind: Kind| spec.steps.iter().any(|s| s.kind.kind() == kind);
    if uses(Kind::Exec) && fs::metadata("/sys/class/net/lo").is_ok() {
        loopback_up()?;
    }
    let writes = uses(Kind::WriteFile) || uses(Kind::Exec);
    if uses(Kind::ReadFile) || writes {
        mount_data_disk(writes)?;
    }
    if uses(Kind::TmpfsFill) {
        let _ = fs::create_dir_all(TMPFS);
        mount("tmpfs", TMPFS, "tmpfs", 0)?;
    }
    if spec.vm.trace {
        tracing()?;
    }
    if let Some(on) = spec.vm.mglru {
        write("/sys/kernel/mm/lru_gen/enabled", if on { "y" } else { "n" })?;
    }
    let mut once = groups(spec)?;
    once.extend(boot);
    Ok(once)
}

/// Tracing as the lab needs it: the host asks for all of this on the kernel command line
/// (cheaper while booting); set what is not already so, e.g. when booted without those words.
fn tracing() -> Result<()> {
    mount("tracefs", TRACEFS, "tracefs", 0)?;
    let clock = read(&format!("{TRACEFS}/trace_clock")).unwrap_or_default();
    if !clock.contains("[boot]") {
        write(&format!("{TRACEFS}/trace_clock"), "boot")?;
    }
    for tp in guest::TRACEPOINTS {
        let enable = format!("{TRACEFS}/events/vmscan/{tp}/enable");
        if read(&enable).is_some_and(|v| v.trim() == "0") {
            write(&enable, "1")?;
        }
    }
    if let Err(e) = free_probes() {
        // Only the free-page facts are missing then; the lab says so where it needs them.
        eprintln!("agent: no free-page probes: {e}");
    }
    write(&format!("{TRACEFS}/tracing_on"), "1")
}

/// The lab's groups: v1 ones first (their hierarchy mounted; the v2 groups wait for the last
/// step in one), else v2; the v1 probe's counters when the lab asks for them.
fn groups(spec: &LabSpec) -> Result<BTreeMap<String, u64>> {
    let v1_groups = spec.cgroups.iter().any(|c| c.v1.is_some());
    let probe = if spec.vm.cgroup_v1_probe || v1_groups {
        cgroup_v1_mount()?;
        let probe = if spec.vm.cgroup_v1_probe {
            cgroup_v1_probe()
        } else {
            BTreeMap::new()
        };
        if v1_groups {
            cgroups_v1(spec)?;
            if spec.last_v1_step().is_none() {
                v1_to_v2(spec)?;
            }
            // Otherwise the v2 groups are set up once the steps in v1 groups are done.
            return Ok(probe);
        }
        cgroup_v1_unmount()?;
        probe
    } else {
        BTreeMap::new()
    };
    cgroups_v2(spec)?;
    Ok(probe)
}

/// Event probes that record the machine's free pages beside some vmscan tracepoints
/// (guest::FREE_PROBES).
pub fn free_probes() -> Result<()> {
    // Appended, never truncated: truncating dynamic_events deletes every probe.
    let mut defs = OpenOptions::new()
        .append(true)
        .open(format!("{TRACEFS}/dynamic_events"))
        .map_err(|e| format!("opening {TRACEFS}/dynamic_events: {e}"))?;
    for tp in guest::FREE_PROBES {
        let def = format!("e:kernel_lab/{tp}_free vmscan/{tp} free=@vm_zone_stat:s64\n");
        defs.write_all(def.as_bytes())
            .map_err(|e| format!("defining {def:?}: {e}"))?;
    }
    write(&format!("{TRACEFS}/events/kernel_lab/enable"), "1")
}

/// Brings the loopback interface up (a kernel with networking starts with it down), for
/// programs that talk TCP to themselves, such as the selftests' socket-accounting test.
pub fn loopback_up() -> Result<()> {
    sys::loopback_up().map_err(|e| format!("bringing lo up: {e}"))
}

/// The ext4 data disk (the virtio disk with the data serial, else /dev/vda); QEMU attaches it
/// with snapshot=on, so writes never persist.
pub fn mount_data_disk(writable: bool) -> Result<()> {
    let flags = if writable { 0 } else { libc::MS_RDONLY };
    let dev = disk_by_serial(guest::DATA_DISK_SERIAL).unwrap_or_else(|| "/dev/vda".into());
    mount(&dev, DATA, "ext4", flags)
}

/// The /dev path of the virtio disk the host gave this serial number.
pub fn disk_by_serial(serial: &str) -> Option<String> {
    fs::read_dir("/sys/block")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|d| read(&format!("/sys/block/{d}/serial")).is_some_and(|s| s.trim() == serial))
        .map(|d| format!("/dev/{d}"))
}

/// Sizes zram0, writes a swap signature on it and enables it.
pub fn zram_swap(size: u64) -> Result<()> {
    write("/sys/block/zram0/disksize", &size.to_string())?;
    swap_on("/dev/zram0", size)
}

/// The swap disk: the virtio disk whose serial is `guest::SWAP_DISK_SERIAL` (the host attaches
/// it beside the data disk; their order is not fixed).
pub fn disk_swap(size: u64) -> Result<()> {
    let Some(dev) = disk_by_serial(guest::SWAP_DISK_SERIAL) else {
        return Err("no swap disk: no virtio disk has the serial the host gave it".into());
    };
    swap_on(&dev, size)
}

/// Writes a swap signature (mkswap's header: version 1, the last page) and enables the swap.
pub fn swap_on(device: &str, size: u64) -> Result<()> {
    let page = 4096usize;
    let mut header = vec![0u8; page];
    header[1024..1028].copy_from_slice(&1u32.to_le_bytes()); // version
    let last_page = (size / page as u64 - 1) as u32;
    header[1028..1032].copy_from_slice(&last_page.to_le_bytes());
    header[page - 10..].copy_from_slice(b"SWAPSPACE2");
    let mut dev = OpenOptions::new()
        .write(true)
        .open(device)
        .map_err(|e| format!("opening {device}: {e}"))?;
    dev.write_all(&header)
        .map_err(|e| format!("writing the swap header: {e}"))?;
    dev.sync_all()
        .map_err(|e| format!("writing the swap header: {e}"))?;
    drop(dev);
    sys::swapon(device).map_err(|e| format!("swapon {device}: {e}"))
}
