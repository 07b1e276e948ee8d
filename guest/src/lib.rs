//! Types and pure functions shared by the host (xtask) and the guest agent: one definition each.
//!
//! - [`spec`]: the lab spec; the host reads it from `lab.toml`, the guest from `/lab/plan.json`.
//! - [`event`]: the framed JSON-line events the agent sends on ttyS1.
//! - [`parse`]: parsers for the kernel's text files (/proc/vmstat, memory.stat, PSI, sizes).
//!
//! Nothing here does I/O, so everything here is unit-tested on the host.

pub mod event;
pub mod parse;
pub mod spec;
