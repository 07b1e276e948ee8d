//! The lab's cgroups: v2 groups, a lab's cgroup v1 groups under their own hierarchy and the
//! move of the memory controller from v1 to v2, and the v1 probe.

use crate::agent::sys;
use crate::{CGROOT, Result, V1ROOT, mount_with, read, write};
use guest::parse::{parse_cgroup_count, parse_key_values, parse_single};
use guest::spec::LabSpec;
use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::time::{Duration, Instant};

/// Gives the memory controller to cgroup v2 (`+memory`) and creates the v2 groups.
pub fn cgroups_v2(spec: &LabSpec) -> Result<()> {
    // After the v1 hierarchy is unmounted the controller returns to v2 once the v1 root is
    // destroyed (RCU): retry.
    let v1_used = spec.vm.cgroup_v1_probe || spec.cgroups.iter().any(|c| c.v1.is_some());
    let started = Instant::now();
    while let Err(e) = write(&format!("{CGROOT}/cgroup.subtree_control"), "+memory") {
        if !v1_used || started.elapsed() > Duration::from_secs(5) {
            return Err(e);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    create_cgroups(spec)?;
    if spec.vm.zswap {
        // The host put zswap.enabled=1 on the command line; a kernel without CONFIG_ZSWAP
        // ignores that word.
        let on = read("/sys/module/zswap/parameters/enabled").unwrap_or_default();
        if on.trim() != "Y" {
            return Err(
                "zswap is not enabled (/sys/module/zswap/parameters/enabled is not Y): the kernel needs CONFIG_ZSWAP".into(),
            );
        }
    }
    Ok(())
}

/// Creates the lab's cgroup v1 memory groups under the v1 hierarchy (mounted).
pub fn cgroups_v1(spec: &LabSpec) -> Result<()> {
    for cg in &spec.cgroups {
        let Some(v1) = &cg.v1 else { continue };
        let dir = format!("{V1ROOT}/{}", cg.name);
        fs::create_dir(&dir).map_err(|e| format!("creating cgroup v1 group {dir}: {e}"))?;
        if let Some(max) = cg.memory_max {
            write(&format!("{dir}/memory.limit_in_bytes"), &max.0.to_string())?;
        }
        if let Some(sw) = v1.swappiness {
            write(&format!("{dir}/memory.swappiness"), &sw.to_string())?;
        }
    }
    Ok(())
}

/// After the last step in a v1 group: removes the v1 groups, waits until the kernel has freed
/// them (a group lingers while anything is still charged to it), unmounts the v1 hierarchy and
/// sets up cgroup v2.
pub fn v1_to_v2(spec: &LabSpec) -> Result<()> {
    let drain = format!("{V1ROOT}/kernel-lab-drain");
    fs::create_dir(&drain).map_err(|e| format!("creating {drain}: {e}"))?;
    drain_charge_caches(&drain)?;
    let dirs = spec
        .cgroups
        .iter()
        .filter(|c| c.v1.is_some())
        .map(|c| format!("{V1ROOT}/{}", c.name))
        .chain([drain]);
    for dir in dirs {
        fs::remove_dir(&dir).map_err(|e| format!("removing cgroup v1 group {dir}: {e}"))?;
    }
    // /proc/cgroups counts the memory hierarchy's groups, the root included, until each is freed.
    let groups = || parse_cgroup_count(&read("/proc/cgroups")?, "memory");
    let started = Instant::now();
    let mut cycled = false;
    while groups() != Some(1) {
        if !cycled && started.elapsed() > Duration::from_secs(1) {
            cycle_swap()?;
            cycled = true;
        }
        if started.elapsed() > Duration::from_secs(10) {
            return Err(format!(
                "the cgroup v1 groups were not freed within 10 s (/proc/cgroups counts {:?} memory groups): something is still charged to them",
                groups()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cgroup_v1_unmount()?;
    cgroups_v2(spec)
}

/// Before 6.10 a freed swap entry waits in its CPU's swap slots cache (mm/swap_slots.c:
/// free_swap_slot()), and only swapcache_free_entries() drops the group's reference
/// (mem_cgroup_uncharge_swap()): up to 64 entries per CPU keep a removed group alive. swapoff
/// drains every CPU's cache (drain_swap_slots_cache()); the swap is turned on again at once.
fn cycle_swap() -> Result<()> {
    let swaps =
        fs::read_to_string("/proc/swaps").map_err(|e| format!("reading /proc/swaps: {e}"))?;
    for dev in swaps
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
    {
        sys::swapoff(dev).map_err(|e| format!("swapoff {dev}: {e}"))?;
        sys::swapon(dev).map_err(|e| format!("swapon {dev} again: {e}"))?;
    }
    Ok(())
}

/// Each CPU keeps a cache of pre-charged pages for the last group it charged, with a reference
/// to that group (memcg_stock, mm/memcontrol.c); a cache whose pages are used up keeps the
/// reference, and drain_all_stock() at the group's removal skips it, so a group that charged
/// its last pages at its limit would linger as a dying memcg. Charging one page on every CPU to
/// the fresh group `drain` (far from any limit) makes each CPU's cache switch to it:
/// __refill_stock() drops the old reference and keeps spare pages, which drain's own removal
/// then returns. No heap allocation while the agent is in `drain`: it would stay charged there.
pub fn drain_charge_caches(drain: &str) -> Result<()> {
    let open = |path: String| {
        OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| format!("opening {path}: {e}"))
    };
    let (into, back) = (
        open(format!("{drain}/cgroup.procs"))?,
        open(format!("{V1ROOT}/cgroup.procs"))?,
    );
    let cpus = sys::online_cpus();
    let mut failed = None;
    for cpu in 0..cpus {
        let joined = sys::pin_to_cpu(Some(cpu), cpus).and_then(|()| match (&into).write(b"0") {
            Ok(1) => Ok(()),
            Ok(_) => Err(std::io::ErrorKind::WriteZero.into()),
            Err(e) => Err(e),
        });
        if let Err(e) = joined {
            failed = Some((cpu, e));
            break;
        }
        sys::charge_one_page();
        let _ = (&back).write(b"0");
    }
    let _ = sys::pin_to_cpu(None, cpus);
    match failed {
        Some((cpu, e)) => Err(format!("charging a page on CPU {cpu} in {drain}: {e}")),
        None => Ok(()),
    }
}

/// The directory of one of the lab's groups: under the v1 hierarchy for v1 groups.
pub fn cgroup_dir(spec: &LabSpec, name: &str) -> String {
    let v1 = spec
        .cgroups
        .iter()
        .any(|c| c.name == name && c.v1.is_some());
    format!("{}/{name}", if v1 { V1ROOT } else { CGROOT })
}

/// Creates the lab's groups, parents first: a parent gets `+memory` in its
/// cgroup.subtree_control before its children are made, so they have the memory controller.
pub fn create_cgroups(spec: &LabSpec) -> Result<()> {
    let mut groups: Vec<_> = spec.cgroups.iter().filter(|c| c.v1.is_none()).collect();
    groups.sort_by_key(|c| c.depth());
    for cg in groups {
        if let Some(parent) = cg.parent() {
            let control = format!("{CGROOT}/{parent}/cgroup.subtree_control");
            if !read(&control).unwrap_or_default().contains("memory") {
                write(&control, "+memory")?;
            }
        }
        let dir = format!("{CGROOT}/{}", cg.name);
        fs::create_dir(&dir).map_err(|e| format!("creating cgroup {dir}: {e}"))?;
        for (file, value) in cg.files() {
            write(&format!("{dir}/{file}"), &value)?;
        }
    }
    Ok(())
}

/// Mounts the memory controller as a cgroup v1 hierarchy (before cgroup v2 takes it).
pub fn cgroup_v1_mount() -> Result<()> {
    let _ = fs::create_dir_all(V1ROOT);
    mount_with("cgroup", V1ROOT, "cgroup", 0, Some("memory")).map_err(|e| {
        format!("the cgroup v1 memory controller: {e} (the kernel needs CONFIG_MEMCG_V1)")
    })
}

/// Unmounts the v1 hierarchy (with no groups left, its root is destroyed and the controller
/// can move to cgroup v2).
pub fn cgroup_v1_unmount() -> Result<()> {
    sys::umount(V1ROOT).map_err(|e| format!("unmounting the v1 hierarchy: {e}"))
}

/// Reads the v1 root group's files: `v1.memory.swappiness`, `v1.memory.stat.<key>` ...
pub fn cgroup_v1_probe() -> BTreeMap<String, u64> {
    // The root's: a child group would outlive the umount as a dying memcg (while anything is
    // charged to it) and keep the hierarchy, and so the controller, from returning to v2.
    let group = V1ROOT;
    let mut v = BTreeMap::new();
    let files = read(&format!("{group}/memory.stat")).and_then(|t| parse_key_values(&t).ok());
    for (k, n) in files.into_iter().flatten() {
        v.insert(format!("v1.memory.stat.{k}"), n);
    }
    for file in [
        "memory.swappiness",
        "memory.limit_in_bytes",
        "memory.usage_in_bytes",
    ] {
        if let Some(n) = read(&format!("{group}/{file}")).and_then(|t| parse_single(&t).ok()) {
            v.insert(format!("v1.{file}"), n);
        }
    }
    v
}
