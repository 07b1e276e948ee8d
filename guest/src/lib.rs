//! Types and pure functions shared by the host (xtask) and the guest agent: one definition each.
//!
//! - [`spec`]: the lab spec; the host reads it from `lab.toml`, the guest from `/lab/plan.json`;
//!   its [`step`]s and [`expect`]ations, each kind with its own fields.
//! - [`counters`]: the registry of counter families (keys, sources, parsers, how they move).
//! - [`event`]: the framed JSON-line events the agent sends on ttyS1.
//! - [`fact`]: the condition language of explanations, exercises and headline claims.
//! - [`exercise`]: conditioned explanations, `[[exercise]]` and `[[headline]]`, and their checks.
//! - [`parse`]: parsers for the kernel's text files (/proc/vmstat, memory.stat, PSI, sizes).
//!
//! Nothing here does I/O, so everything here is unit-tested on the host.

pub mod counters;
pub mod event;
pub mod exercise;
pub mod expect;
pub mod fact;
pub mod parse;
pub mod spec;
pub mod step;

/// The serial number the host gives the swap disk (`[vm] swap = { kind = "disk" }`), by which
/// the agent finds it among the virtio disks.
pub const SWAP_DISK_SERIAL: &str = "kernel-lab-swap";
/// The data disk's serial number (read-file and write-file steps).
pub const DATA_DISK_SERIAL: &str = "kernel-lab-data";

/// The vmscan tracepoints recorded when a lab traces (`[vm] trace = true`); absent ones are
/// skipped. The host switches them on from the kernel command line, the agent checks them.
pub const TRACEPOINTS: &[&str] = &[
    "mm_vmscan_wakeup_kswapd",
    "mm_vmscan_kswapd_wake",
    "mm_vmscan_kswapd_sleep",
    "mm_vmscan_direct_reclaim_begin",
    "mm_vmscan_direct_reclaim_end",
    "mm_vmscan_memcg_reclaim_begin",
    "mm_vmscan_memcg_reclaim_end",
    "mm_vmscan_memcg_softlimit_reclaim_begin",
    "mm_vmscan_memcg_softlimit_reclaim_end",
    "mm_vmscan_node_reclaim_begin",
    "mm_vmscan_node_reclaim_end",
    "mm_vmscan_throttled",
];

/// The tracepoints (of [`TRACEPOINTS`]) that also get an event probe recording the machine's
/// free pages when they fire: where free memory stood when kswapd was woken and went back to
/// sleep, and when a task entered direct reclaim. The probe `kernel_lab/<tracepoint>_free`
/// reads `vm_zone_stat[NR_FREE_PAGES]` (item 0); it needs CONFIG_PROBE_EVENTS (event probes)
/// and CONFIG_KALLSYMS_ALL (the symbol), and a kernel without them simply reports no free pages.
pub const FREE_PROBES: &[&str] = &[
    "mm_vmscan_wakeup_kswapd",
    "mm_vmscan_kswapd_sleep",
    "mm_vmscan_direct_reclaim_begin",
];
