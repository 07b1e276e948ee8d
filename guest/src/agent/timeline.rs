//! The timeline: a few counters sampled every `tick_ms` while a step runs (`tick` events).

use crate::agent::sys;
use crate::agent::{cgroups::cgroup_dir, emit::Emitter, sample::kswapd_threads};
use crate::read;
use guest::event::Event;
use guest::parse::{parse_key_values, parse_meminfo, parse_node_meminfo, parse_single};
use guest::spec::{LabSpec, Step};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// The timeline of one step: samples a few counters every `tick_ms` at first, then less often
/// as the step goes on (about 64 per doubling of its time: a 0.4 s step and a 20 s one both
/// show their shape), spending a tenth of the time at most, and sends them in batches of
/// rows ([`Event::Ticks`]) at least every second, so a hung step still shows how far it got.
///
/// The tenth is what the sampler may take from the experiment: its reads run on the guest's
/// CPUs beside the workload, and what a lab measures can depend on them (lab 12's PSI total
/// against the traced reclaim time depends on how busy the other CPU is).
pub struct Ticker<'a> {
    spec: &'a LabSpec,
    step: &'a str,
    /// The lab's own counters of the files the timeline reads anyway ([`referred`]).
    referred: BTreeSet<String>,
    every: Option<Duration>,
    started: Instant,
    next: Instant,
    keys: Vec<String>,
    rows: Vec<(u64, Vec<u64>)>,
    sent: Instant,
    /// Time spent sampling and sending since the last batch.
    cost: Duration,
    /// What the last four samples cost; the estimate is the second cheapest, so that a host
    /// stall during one sample does not stop the sampling for long.
    recent: [Duration; 4],
}

impl<'a> Ticker<'a> {
    pub fn new(spec: &'a LabSpec, step: &'a Step) -> Self {
        let every = (spec.vm.tick_ms > 0).then(|| Duration::from_millis(spec.vm.tick_ms));
        Ticker {
            spec,
            step: step.name(),
            referred: referred(spec),
            every,
            started: Instant::now(),
            next: Instant::now(),
            keys: Vec::new(),
            rows: Vec::new(),
            sent: Instant::now(),
            cost: Duration::ZERO,
            recent: [Duration::ZERO; 4],
        }
    }

    /// Samples when the next sample is due.
    pub fn tick(&mut self, out: &mut Emitter) {
        let Some(every) = self.every else { return };
        let now = Instant::now();
        if now < self.next {
            return;
        }
        self.sample(out);
        // A tenth of the time at most goes to sampling (nine times what a sample costs between
        // two), however slow the machine.
        self.recent.rotate_right(1);
        self.recent[0] = now.elapsed();
        let mut costs: Vec<Duration> = self
            .recent
            .iter()
            .copied()
            .filter(|d| !d.is_zero())
            .collect();
        costs.sort();
        // The first sample of a step is often the slowest by far (lab 2: the read step's first
        // two took 74 ms, while the anon step's took 3 ms each), so it alone sets no pace.
        let cost = match costs.len() {
            0 | 1 => Duration::ZERO,
            2 => costs[0],
            _ => costs[1],
        };
        let lo = every.max(self.started.elapsed() / 64);
        self.next = now + lo.max(cost * 9);
    }

    /// The step's final sample, and everything not sent yet.
    pub fn finish(&mut self, out: &mut Emitter) {
        if self.every.is_some() {
            self.sample(out);
            self.flush(out);
        }
    }

    pub fn sample(&mut self, out: &mut Emitter) {
        let t0 = Instant::now();
        let values = timeline_values(self.spec, &self.referred);
        if !self.keys.iter().eq(values.keys()) {
            self.flush(out);
            self.keys = values.keys().cloned().collect();
        }
        self.rows
            .push((sys::uptime_ms(), values.into_values().collect()));
        self.cost += t0.elapsed();
        if self.rows.len() >= 64 || self.sent.elapsed() >= Duration::from_secs(1) {
            self.flush(out);
        }
    }

    pub fn flush(&mut self, out: &mut Emitter) {
        if self.rows.is_empty() {
            return;
        }
        let t0 = Instant::now();
        out.send(Event::Ticks {
            step: self.step.into(),
            keys: self.keys.clone(),
            rows: std::mem::take(&mut self.rows),
            cost_us: self.cost.as_micros() as u64,
        });
        self.sent = Instant::now();
        self.cost = t0.elapsed();
    }
}

/// The counters the lab refers to (its expectations, observations, explanations, exercises)
/// from the files the timeline reads whole anyway: /proc/vmstat, and each group's memory.stat,
/// memory.events and memory.events.local. Keeping them costs no read, and the chart can draw
/// the counters a lab is about (a THP fallback, pgscan_anon beside pgscan_file, memory.events
/// oom beside oom_kill) over time, not only as a step's change.
pub fn referred(spec: &LabSpec) -> BTreeSet<String> {
    let timeline_file = |t: &str| match guest::spec::split_cgroup(t) {
        None => t.starts_with("vmstat."),
        Some((cg, rest)) => {
            spec.cgroups.iter().any(|c| c.name == cg)
                && ["memory.stat.", "memory.events."]
                    .iter()
                    .any(|f| rest.starts_with(f))
        }
    };
    spec.terms()
        .filter(|t| timeline_file(t))
        .map(String::from)
        .collect()
}

/// The counters of the timeline: free memory (per node too), reclaim and swap activity, dirty
/// pages, each group's usage, reclaim and events, and the `referred` counters of the lab.
pub fn timeline_values(spec: &LabSpec, referred: &BTreeSet<String>) -> BTreeMap<String, u64> {
    let mut v = BTreeMap::new();
    let vmstat = key_values("/proc/vmstat");
    pick(&mut v, "vmstat.", VMSTAT, vmstat, referred);
    let meminfo = read("/proc/meminfo").and_then(|t| parse_meminfo(&t).ok());
    pick(&mut v, "meminfo.", MEMINFO, meminfo, referred);
    // No PSI file here: reading one is not passive. psi_show() folds the per-CPU times into the
    // total at every read, each CPU weighted by the group's non-idle time there since the last
    // fold, so how often it is read changes the total that lab 12 compares with the trace.
    if spec.vm.numa_nodes > 1 {
        for node in 0..spec.vm.numa_nodes {
            let path = format!("/sys/devices/system/node/node{node}/meminfo");
            let free = read(&path).and_then(|t| parse_node_meminfo(&t).ok());
            let prefix = format!("node{node}.meminfo.");
            pick(&mut v, &prefix, &["MemFree"], free, referred);
        }
    }
    if spec.refers_to("kswapd.") {
        for (k, n) in kswapd_threads() {
            v.insert(format!("kswapd.{k}"), n);
        }
    }
    for cg in &spec.cgroups {
        group_values(spec, cg, referred, &mut v);
    }
    v
}

/// The timeline's counters: /proc/vmstat's, /proc/meminfo's, each group's memory.stat and
/// memory.events keys (no PSI: see timeline_values).
const VMSTAT: &[&str] = &[
    "pgscan_kswapd",
    "pgscan_direct",
    // Every reclaim's scanning by kind of page: unlike pgscan_direct, cgroup reclaim included
    // (a cgroup v1 group's memory.stat counts no pgscan of its own).
    "pgscan_anon",
    "pgscan_file",
    "pgsteal_kswapd",
    "pgsteal_direct",
    "pswpout",
    "pswpin",
    "nr_dirty",
    "nr_writeback",
    "oom_kill",
    "workingset_refault_anon",
    "workingset_refault_file",
    // Pages compressed into zswap, and read back from it.
    "zswpout",
    "zswpin",
    // The classic LRU's moves between its active and inactive lists (MGLRU makes neither).
    "pgactivate",
    "pgdeactivate",
];
const MEMINFO: &[&str] = &["MemFree", "SwapFree"];
const STAT: &[&str] = &[
    "pgscan_direct",
    "pgscan_kswapd",
    "anon",
    "file",
    "shmem",
    "file_dirty",
    // What the group keeps in zswap: its pages' size, and the compressed pool's.
    "zswapped",
    "zswap",
    // A cgroup v1 group's anonymous memory, page cache and swap.
    "rss",
    "cache",
    "swap",
];
const EVENTS: &[&str] = &["high", "max", "oom_kill"];

/// One group's timeline counters: its usage (and swap), memory.stat, memory.events (and, for a
/// group with children in the lab, memory.events.local: its own events, not theirs); a cgroup
/// v1 group's usage and memory.failcnt (v1 has no memory.events).
fn group_values(
    spec: &LabSpec,
    cg: &guest::spec::Cgroup,
    referred: &BTreeSet<String>,
    v: &mut BTreeMap<String, u64>,
) {
    let (name, dir) = (&cg.name, cgroup_dir(spec, &cg.name));
    let files: &[&str] = match cg.v1 {
        None => &["memory.current", "memory.swap.current"],
        Some(_) => &["memory.usage_in_bytes", "memory.failcnt"],
    };
    for file in files {
        if let Some(n) = read(&format!("{dir}/{file}")).and_then(|t| parse_single(&t).ok()) {
            v.insert(format!("{name}/{file}"), n);
        }
    }
    let stat = key_values(&format!("{dir}/memory.stat"));
    pick(v, &format!("{name}/memory.stat."), STAT, stat, referred);
    let events = key_values(&format!("{dir}/memory.events"));
    pick(
        v,
        &format!("{name}/memory.events."),
        EVENTS,
        events,
        referred,
    );
    let (parent, local) = (format!("{name}/"), format!("{name}/memory.events.local."));
    let asked = referred.iter().any(|k| k.starts_with(&local));
    if cg.v1.is_none() && (asked || spec.cgroups.iter().any(|c| c.name.starts_with(&parent))) {
        let pairs = key_values(&format!("{dir}/memory.events.local"));
        pick(v, &local, EVENTS, pairs, referred);
    }
}

/// The pairs whose key is one of `keys`, or whose `<prefix><key>` the lab refers to, as
/// `<prefix><key>`.
fn pick(
    v: &mut BTreeMap<String, u64>,
    prefix: &str,
    keys: &[&str],
    pairs: Option<Vec<(String, u64)>>,
    referred: &BTreeSet<String>,
) {
    let wanted: Vec<&str> = (referred.range(prefix.to_string()..))
        .map_while(|k| k.strip_prefix(prefix))
        .collect();
    for (k, n) in pairs.into_iter().flatten() {
        if keys.contains(&k.as_str()) || wanted.contains(&k.as_str()) {
            v.insert(format!("{prefix}{k}"), n);
        }
    }
}

fn key_values(path: &str) -> Option<Vec<(String, u64)>> {
    read(path).and_then(|t| parse_key_values(&t).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_labs_own_counters_of_the_files_read_anyway_join_the_timeline() {
        let spec: LabSpec = serde_json::from_str(
            r#"{"id": "t", "title": "T", "vm": {"memory": "256M"},
                "cgroup": [{"name": "W", "memory_max": "32M"}],
                "step": [{"kind": "anon", "name": "a", "cgroup": "W", "size": "64M"}],
                "expect": [
                  {"counter": "vmstat.pgscan_anon + vmstat.thp_fault_fallback_charge", "step": "a", "delta": "> 0", "why": "w"},
                  {"counter": "W/memory.events.oom - W/memory.events.local.oom", "step": "a", "delta": "== 0", "why": "w"},
                  {"counter": "W/memory.pressure.some.total", "step": "a", "delta": "> 0", "why": "w"},
                  {"counter": "W/memory.peak", "step": "a", "delta": "> 0", "why": "w"},
                  {"counter": "X/memory.stat.anon", "step": "a", "delta": "> 0", "why": "w"},
                  {"counter": "trace.W.memcg_reclaim.episodes", "step": "a", "value": "> 0", "why": "w"}]}"#,
        )
        .unwrap();
        // Not PSI (a read changes it), not a file the timeline does not read, not a group the
        // lab does not have, not the trace.
        assert_eq!(
            referred(&spec).into_iter().collect::<Vec<_>>(),
            [
                "W/memory.events.local.oom",
                "W/memory.events.oom",
                "vmstat.pgscan_anon",
                "vmstat.thp_fault_fallback_charge",
            ]
        );
        let mut v = BTreeMap::new();
        let pairs = |s: &[(&str, u64)]| Some(s.iter().map(|(k, n)| (k.to_string(), *n)).collect());
        let vmstat = pairs(&[
            ("pgscan_kswapd", 1),
            ("thp_fault_fallback_charge", 2),
            ("pgfree", 3),
        ]);
        pick(&mut v, "vmstat.", VMSTAT, vmstat, &referred(&spec));
        let events = pairs(&[("max", 4), ("oom", 5), ("low", 6)]);
        pick(&mut v, "W/memory.events.", EVENTS, events, &referred(&spec));
        assert_eq!(
            v.into_iter().collect::<Vec<_>>(),
            [
                ("W/memory.events.max".to_string(), 4),
                ("W/memory.events.oom".to_string(), 5),
                ("vmstat.pgscan_kswapd".to_string(), 1),
                ("vmstat.thp_fault_fallback_charge".to_string(), 2),
            ]
        );
    }
}
