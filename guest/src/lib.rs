//! Types and pure functions shared by the host (xtask) and the guest agent: one definition each.
//!
//! - [`spec`]: the lab spec; the host reads it from `lab.toml`, the guest from `/lab/plan.json`;
//!   its [`step`]s and [`expect`]ations, each kind with its own fields.
//! - [`event`]: the framed JSON-line events the agent sends on ttyS1.
//! - [`fact`]: the condition language of explanations, exercises and headline claims.
//! - [`exercise`]: conditioned explanations, `[[exercise]]` and `[[headline]]`, and their checks.
//! - [`parse`]: parsers for the kernel's text files (/proc/vmstat, memory.stat, PSI, sizes).
//!
//! Nothing here does I/O, so everything here is unit-tested on the host.

pub mod event;
pub mod exercise;
pub mod expect;
pub mod fact;
pub mod parse;
pub mod spec;
pub mod step;

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
];
