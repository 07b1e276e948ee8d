//! The one registry of counter families: every sample key a lab can name (`vmstat.pgscan_kswapd`,
//! `W/memory.current`, `trace.W.memcg_reclaim.episodes`), where the agent reads it, how it is
//! parsed, whether its names are checked before boot, and how its values move. The spec's
//! syntax check, the unknown-counter check, the agent's sampler and the timeline all read it.

use crate::parse::{
    ParseError, parse_hex, parse_key_values, parse_meminfo, parse_psi, parse_single, parse_zoneinfo,
};

/// Whether a family is machine-wide or per cgroup (`<cgroup>/memory.stat.<key>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Global,
    Cgroup,
}

/// How a kernel file's text becomes `(key, value)` pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parser {
    /// `key value` lines (/proc/vmstat, memory.stat, memory.events).
    KeyValues,
    /// /proc/meminfo, in bytes.
    Meminfo,
    /// A PSI file: `some.total`, `full.avg10`, ...
    Psi,
    /// /proc/zoneinfo's watermarks: `<node>.<zone>.<field>`.
    Zoneinfo,
    /// One number (`max` is u64::MAX): memory.current.
    Single,
    /// One hexadecimal number: lru_gen/enabled.
    Hex,
}

impl Parser {
    /// The pairs in `text`; a family without keys gets one pair with an empty key.
    pub fn parse(self, text: &str) -> Result<Vec<(String, u64)>, ParseError> {
        let one = |n: u64| vec![(String::new(), n)];
        match self {
            Parser::KeyValues => parse_key_values(text),
            Parser::Meminfo => parse_meminfo(text),
            Parser::Psi => parse_psi(text),
            Parser::Zoneinfo => parse_zoneinfo(text),
            Parser::Single => parse_single(text).map(one),
            Parser::Hex => parse_hex(text).map(one),
        }
    }
}

/// Where a family's values come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A file (under /proc or /sys; for a cgroup family, in the group's directory).
    File(&'static str, Parser),
    /// The kswapd threads' CPU time (/proc/<pid>/stat) and their number.
    KswapdThreads,
    /// Read once at set-up, before cgroup v2 takes the memory controller (`cgroup_v1_probe`).
    V1Probe,
    /// Read once when the agent starts, before the lab writes any sysctl, sysfs file or LRU
    /// switch: the kernel's own defaults (`boot.lru_gen.enabled`).
    AtBoot(&'static str, Parser),
    /// Not sampled: the host derives these facts from each step's trace.
    Trace,
}

/// How a family's values move, for what a step's change and a timeline mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Motion {
    /// Counts that only grow (events, stall time): a timeline shows their rate.
    Cumulative,
    /// A level that goes up and down (usage, free memory, a setting).
    Level,
    /// vmstat: `nr_*` items are levels, the others events (the kernel's node/zone items vs its
    /// vm_event_item counters).
    VmstatNames,
    /// memory.stat: sizes in bytes are levels, the others (pgscan, workingset_*, ...) events.
    MemoryStatNames,
    /// PSI: `*.total` (stall time) grows, the `avg*` are levels.
    PsiNames,
    /// kswapd: each thread's `cpu_ticks` grow, `threads` is a level.
    KswapdNames,
    /// Measured per step (the trace is cleared before each one): the value after a step is
    /// its change.
    PerStep,
}

/// One family of sample keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Family {
    pub scope: Scope,
    /// `vmstat.` (a key follows) or `memory.current` (the whole name).
    pub prefix: &'static str,
    /// Whether a key follows the prefix.
    pub keyed: bool,
    pub source: Source,
    /// Read only when the lab refers to the family (costly, or large).
    pub on_demand: bool,
    /// The section of kernel-configs/counters-6.12.txt that lists its keys (checked before a
    /// boot on the default kernel).
    pub known_keys: Option<&'static str>,
    pub motion: Motion,
}

const fn family(scope: Scope, prefix: &'static str, source: Source, motion: Motion) -> Family {
    let bytes = prefix.as_bytes();
    Family {
        scope,
        prefix,
        keyed: bytes[bytes.len() - 1] == b'.',
        source,
        on_demand: false,
        known_keys: None,
        motion,
    }
}

const fn checked(mut f: Family, section: &'static str) -> Family {
    f.known_keys = Some(section);
    f
}

const fn on_demand(mut f: Family) -> Family {
    f.on_demand = true;
    f
}

use Motion::*;
use Parser::*;
use Scope::*;
use Source::*;

/// Every family, machine-wide ones first, in the order errors list them.
pub const FAMILIES: &[Family] = &[
    checked(
        family(
            Global,
            "vmstat.",
            File("/proc/vmstat", KeyValues),
            VmstatNames,
        ),
        "vmstat",
    ),
    family(Global, "meminfo.", File("/proc/meminfo", Meminfo), Level),
    family(
        Global,
        "pressure.",
        File("/proc/pressure/memory", Psi),
        PsiNames,
    ),
    on_demand(family(
        Global,
        "zoneinfo.",
        File("/proc/zoneinfo", Zoneinfo),
        Level,
    )),
    on_demand(family(Global, "kswapd.", KswapdThreads, KswapdNames)),
    family(
        Global,
        "lru_gen.enabled",
        File("/sys/kernel/mm/lru_gen/enabled", Hex),
        Level,
    ),
    // As booted: what the kernel's config and init code chose, whatever the lab then sets.
    family(
        Global,
        "boot.lru_gen.enabled",
        AtBoot("/sys/kernel/mm/lru_gen/enabled", Hex),
        Level,
    ),
    family(Global, "trace.", Trace, PerStep),
    family(Global, "v1.", V1Probe, Level),
    checked(
        family(
            Cgroup,
            "memory.stat.",
            File("memory.stat", KeyValues),
            MemoryStatNames,
        ),
        "memory.stat",
    ),
    // The group's own events, not its children's (before memory.events., whose prefix it has).
    checked(
        family(
            Cgroup,
            "memory.events.local.",
            File("memory.events.local", KeyValues),
            Cumulative,
        ),
        "memory.events",
    ),
    checked(
        family(
            Cgroup,
            "memory.events.",
            File("memory.events", KeyValues),
            Cumulative,
        ),
        "memory.events",
    ),
    family(
        Cgroup,
        "memory.pressure.",
        File("memory.pressure", Psi),
        PsiNames,
    ),
    family(
        Cgroup,
        "memory.current",
        File("memory.current", Single),
        Level,
    ),
    family(Cgroup, "memory.peak", File("memory.peak", Single), Level),
    family(
        Cgroup,
        "memory.swap.current",
        File("memory.swap.current", Single),
        Level,
    ),
    family(
        Cgroup,
        "memory.swappiness",
        File("memory.swappiness", Single),
        Level,
    ),
    family(
        Cgroup,
        "memory.swap.events.",
        File("memory.swap.events", KeyValues),
        Cumulative,
    ),
    family(
        Cgroup,
        "memory.zswap.current",
        File("memory.zswap.current", Single),
        Level,
    ),
    // Only cgroup v1 groups have these.
    family(
        Cgroup,
        "memory.failcnt",
        File("memory.failcnt", Single),
        Cumulative,
    ),
    family(
        Cgroup,
        "memory.oom_control.",
        File("memory.oom_control", KeyValues),
        Cumulative,
    ),
];

/// /proc/vmstat's `nr_` items that count events (node_stat_item counters that only grow: pages
/// reclaim wrote or met dirty, pages dirtied and written, pins), not levels.
pub const VMSTAT_NR_EVENTS: &[&str] = &[
    "nr_vmscan_write",
    "nr_vmscan_immediate_reclaim",
    "nr_dirtied",
    "nr_written",
    "nr_throttled_written",
    "nr_foll_pin_acquired",
    "nr_foll_pin_released",
];

/// memory.stat keys that are sizes in bytes (levels); the others count events.
pub const MEMORY_STAT_LEVELS: &[&str] = &[
    "anon",
    "file",
    "kernel",
    "kernel_stack",
    "pagetables",
    "sec_pagetables",
    "percpu",
    "sock",
    "vmalloc",
    "shmem",
    "zswap",
    "zswapped",
    "file_mapped",
    "file_dirty",
    "file_writeback",
    "swapcached",
    "anon_thp",
    "file_thp",
    "shmem_thp",
    "inactive_anon",
    "active_anon",
    "inactive_file",
    "active_file",
    "unevictable",
    "slab_reclaimable",
    "slab_unreclaimable",
    "slab",
];

/// A sample key split into its family and the key after the family's prefix (empty for a
/// family without keys): `W/memory.stat.anon` -> (memory.stat., "anon").
pub fn family_of(term: &str) -> Option<(&'static Family, &str)> {
    let (scope, rest) = match crate::spec::split_cgroup(term) {
        Some((_, rest)) => (Cgroup, rest),
        None => (Global, term),
    };
    FAMILIES
        .iter()
        .filter(|f| f.scope == scope)
        .find_map(|f| match f.keyed {
            true => rest.strip_prefix(f.prefix).map(|key| (f, key)),
            false => (rest == f.prefix).then_some((f, "")),
        })
}

impl Family {
    /// Whether this key of the family only grows (its timeline is a rate).
    pub fn cumulative(&self, key: &str) -> bool {
        match self.motion {
            Cumulative => true,
            Level | PerStep => false,
            VmstatNames => !key.starts_with("nr_") || VMSTAT_NR_EVENTS.contains(&key),
            MemoryStatNames => !MEMORY_STAT_LEVELS.contains(&key),
            PsiNames => key.ends_with(".total"),
            KswapdNames => key.ends_with(".cpu_ticks"),
        }
    }

    /// How errors name it: `vmstat.<key>`, `memory.current`.
    fn written(&self) -> String {
        match self.keyed {
            true => format!("{}<key>", self.prefix),
            false => self.prefix.to_string(),
        }
    }
}

/// Whether a sample key's values only grow (events, stall time): its timeline is a rate.
pub fn cumulative(term: &str) -> bool {
    family_of(term).is_some_and(|(f, key)| f.cumulative(key))
}

/// Whether a sample key is measured per step (trace facts): its change across a step is its
/// value after it.
pub fn per_step(term: &str) -> bool {
    family_of(term).is_some_and(|(f, _)| f.motion == PerStep)
}

/// Checks that one term names a family of the registry with a well-formed key.
pub fn check_syntax(term: &str) -> Result<(), String> {
    let group = crate::spec::split_cgroup(term);
    if let Some((cg, _)) = group {
        crate::spec::check_cgroup_path(cg).map_err(|e| format!("counter {term:?}: {e}"))?;
    }
    // Trace facts name a group inside the key: its path may hold '/' and '-'.
    let path = term.starts_with("trace.");
    let key_ok = |k: &str| {
        !k.is_empty()
            && k.chars().all(|c| {
                c.is_ascii_alphanumeric() || c == '_' || c == '.' || (path && "/-".contains(c))
            })
    };
    if let Some((f, key)) = family_of(term)
        && (!f.keyed || key_ok(key))
    {
        return Ok(());
    }
    let scope = if group.is_some() { Cgroup } else { Global };
    let known: Vec<String> = FAMILIES
        .iter()
        .filter(|f| f.scope == scope)
        .map(Family::written)
        .collect();
    let prefix = if scope == Cgroup { "<cgroup>/" } else { "" };
    Err(format!(
        "counter {term:?} is not one of {prefix}{}",
        known.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_find_their_family() {
        let (f, key) = family_of("W/memory.stat.pgscan_direct").unwrap();
        assert_eq!((f.prefix, key), ("memory.stat.", "pgscan_direct"));
        assert_eq!(family_of("W/memory.current").unwrap().1, "");
        assert!(
            family_of("memory.current").is_none(),
            "a cgroup file needs its group"
        );
        assert!(family_of("W/vmstat.x").is_none());
        assert!(per_step("trace.W.memcg_reclaim.episodes"));
        assert!(!per_step("vmstat.pgscan_kswapd"));
    }

    #[test]
    fn events_grow_and_levels_move() {
        for c in [
            "vmstat.pgscan_kswapd",
            "vmstat.pswpout",
            "vmstat.nr_vmscan_write",
            "vmstat.nr_written",
            "W/memory.stat.pgscan_direct",
            "W/memory.events.max",
            "pressure.some.total",
            "kswapd.0.cpu_ticks",
        ] {
            assert!(cumulative(c), "{c}");
        }
        for c in [
            "vmstat.nr_free_pages",
            "meminfo.MemFree",
            "W/memory.current",
            "W/memory.stat.anon",
            "trace.kswapd.wakes",
            "W/memory.pressure.some.avg10",
            "kswapd.threads",
        ] {
            assert!(!cumulative(c), "{c}");
        }
    }

    #[test]
    fn the_syntax_check_lists_the_families_of_the_scope() {
        let e = check_syntax("W/memory.currant").unwrap_err();
        assert!(
            e.ends_with("is not one of <cgroup>/memory.stat.<key>, memory.events.local.<key>, memory.events.<key>, memory.pressure.<key>, memory.current, memory.peak, memory.swap.current, memory.swappiness, memory.swap.events.<key>, memory.zswap.current, memory.failcnt, memory.oom_control.<key>"),
            "{e}"
        );
        let e = check_syntax("vmstat").unwrap_err();
        assert!(e.contains("vmstat.<key>, meminfo.<key>"), "{e}");
        assert!(check_syntax("vmstat.").is_err());
        assert!(check_syntax("a b/memory.current").is_err());
    }

    #[test]
    fn parsers_give_pairs() {
        assert_eq!(Hex.parse("0x0007\n").unwrap(), [(String::new(), 7)]);
        assert_eq!(Single.parse("max\n").unwrap(), [(String::new(), u64::MAX)]);
        assert!(Single.parse("x").is_err());
    }
}
