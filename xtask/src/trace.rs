//! Reclaim tracing: parse the kernel's vmscan tracepoint lines (tracefs `trace` text) and turn
//! them into facts: who reclaimed, how often, and how long each task was blocked.
//!
//! Pure functions only; the agent sends the raw lines of each step and the pids of its workers.

use std::collections::BTreeMap;

/// One parsed line of /sys/kernel/tracing/trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEvent {
    pub comm: String,
    pub pid: u32,
    pub cpu: u32,
    /// Trace clock (`boot`: CLOCK_BOOTTIME) in microseconds.
    pub ts_us: u64,
    pub name: String,
    pub fields: BTreeMap<String, String>,
}

/// Parses `<comm>-<pid> [cpu] <flags> <secs.micros>: <event>: k=v k=v`; `None` for comments,
/// blank lines and anything else that is not an event line.
pub fn parse_line(line: &str) -> Option<TraceEvent> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let open = line.find(" [")?;
    let (task, rest) = line.split_at(open);
    let (comm, pid) = task.trim().rsplit_once('-')?;
    let pid: u32 = pid.parse().ok()?;
    let rest = rest.trim_start().strip_prefix('[')?;
    let (cpu, rest) = rest.split_once(']')?;
    let cpu: u32 = cpu.trim().parse().ok()?;
    // After the CPU: optional flags (e.g. `d..1.`), the timestamp with a colon, the event name.
    let mut words = rest.split_whitespace();
    let mut ts_word = words.next()?;
    if !ts_word.ends_with(':') {
        ts_word = words.next()?;
    }
    let ts = ts_word.strip_suffix(':')?;
    let (secs, frac) = ts.split_once('.')?;
    let frac = format!("{frac:0<6}");
    let ts_us = secs.parse::<u64>().ok()? * 1_000_000 + frac.get(..6)?.parse::<u64>().ok()?;
    let name = words.next()?.strip_suffix(':')?.to_string();
    let mut fields = BTreeMap::new();
    for w in words {
        if let Some((k, v)) = w.split_once('=') {
            fields.insert(k.to_string(), v.to_string());
        }
    }
    Some(TraceEvent {
        comm: comm.to_string(),
        pid,
        cpu,
        ts_us,
        name,
        fields,
    })
}

/// Direct (global) or memcg reclaim episodes of one task.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Episodes {
    pub count: u64,
    pub total_us: u64,
    pub longest_us: u64,
    pub nr_reclaimed: u64,
    /// (start, end) in trace microseconds, for the timeline.
    pub spans: Vec<(u64, u64)>,
    /// Free pages when each episode began (direct reclaim, where the probe reports it).
    pub free: Frees,
}

impl Episodes {
    fn add(&mut self, start: u64, end: u64, reclaimed: u64) {
        let d = end.saturating_sub(start);
        self.count += 1;
        self.total_us += d;
        self.longest_us = self.longest_us.max(d);
        self.nr_reclaimed += reclaimed;
        self.spans.push((start, end));
    }
}

/// Free pages at each event of a kind (where the probe reported them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frees(Vec<u64>);

impl Frees {
    fn add(&mut self, n: u64) {
        self.0.push(n);
    }

    fn merge(&mut self, other: &Frees) {
        self.0.extend(&other.0);
    }

    /// (smallest, median, largest); None when no event reported free pages. The median of an
    /// even count is the lower middle value: a value that was seen.
    pub fn get(&self) -> Option<(u64, u64, u64)> {
        let mut v = self.0.clone();
        v.sort_unstable();
        let mid = *v.get((v.len().max(1) - 1) / 2)?;
        Some((v[0], mid, v[v.len() - 1]))
    }
}

/// Wake-up requests of one gfp class on one node (mm_vmscan_wakeup_kswapd: wakeup_kswapd()
/// found kswapd asleep, or napping, and the node below its high watermark).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wakeups {
    pub count: u64,
    /// Free pages when the requests came.
    pub free: Frees,
}

/// Reclaim throttling (mm_vmscan_throttled: reclaim_throttle()) of one task, per reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Throttled {
    pub count: u64,
    pub delayed_us: u64,
}

/// What the trace of one step says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// (comm, pid) -> direct reclaim episodes (global, mm_vmscan_direct_reclaim_*).
    pub direct: BTreeMap<(String, u32), Episodes>,
    /// (comm, pid) -> memcg reclaim episodes (mm_vmscan_memcg_reclaim_*).
    pub memcg: BTreeMap<(String, u32), Episodes>,
    /// node -> kswapd wake-ups (mm_vmscan_kswapd_wake .. _sleep). A kswapd still awake when
    /// the trace ends counts as awake until its last line (a lower bound).
    pub kswapd: BTreeMap<u32, Episodes>,
    /// node -> kswapd's balancing passes: one `mm_vmscan_kswapd_wake` line per balance_pgdat()
    /// call, whether or not kswapd slept in between.
    pub kswapd_passes: BTreeMap<u32, u64>,
    /// Nodes whose kswapd was still awake when the trace ended (no `kswapd_sleep` after its wake).
    pub kswapd_awake_at_end: Vec<u32>,
    /// mm_vmscan_wakeup_kswapd calls: allocations that asked kswapd to run.
    pub wakeup_requests: u64,
    /// Of those, the ones with an allocation's gfp flags (the allocator's slow path,
    /// wake_all_kswapds()); the others carry `gfp_flags=none` (a boosted watermark in rmqueue(),
    /// or NUMA balancing's migration).
    pub wakeup_by_allocator: u64,
    /// (node, gfp class) -> those requests. The class is the first flag of the allocation's
    /// gfp mask (`highuser_movable`, `kernel`, ...), `none` for a mask of 0.
    pub wakeups: BTreeMap<(u32, String), Wakeups>,
    /// node -> kswapd's full sleeps (mm_vmscan_kswapd_sleep: kswapd_try_to_sleep() found the
    /// node balanced, napped, and found it still balanced).
    pub kswapd_sleeps: BTreeMap<u32, u64>,
    /// Free pages when kswapd went to sleep (any node).
    pub kswapd_sleep_free: Frees,
    /// ((comm, pid), reason) -> reclaim_throttle() sleeps; the reason without its
    /// `VMSCAN_THROTTLE_` prefix, in lower case (`writeback`, `isolated`, ...).
    pub throttled: BTreeMap<((String, u32), String), Throttled>,
    pub events: u64,
}

/// The gfp class of a `gfp_flags=` field: its first flag, without `GFP_`/`__GFP_`, in lower
/// case; `none` stays `none`.
pub fn gfp_class(flags: &str) -> String {
    let first = flags.split('|').next().unwrap_or("none");
    let name = first.trim_start_matches('_');
    name.strip_prefix("GFP_")
        .unwrap_or(name)
        .to_ascii_lowercase()
}

/// The agent's event probes (`kernel_lab/<tracepoint>_free`, guest::FREE_PROBES) record the
/// machine's free pages (vm_zone_stat[NR_FREE_PAGES]) when a tracepoint fires; each comes right
/// beside its tracepoint's line, on the same CPU and in the same task. Returns, per event
/// index, the free pages its probe reported.
fn probe_free(events: &[TraceEvent]) -> BTreeMap<usize, u64> {
    let mut out = BTreeMap::new();
    for (i, e) in events.iter().enumerate() {
        let Some(base) = e.name.strip_suffix("_free") else {
            continue;
        };
        let Some(free) = e.fields.get("free").and_then(|v| v.parse::<i64>().ok()) else {
            continue;
        };
        // The probed line: the nearest earlier (or, failing that, later) line of the same
        // task and CPU with the tracepoint's name.
        let same = |j: &usize| {
            let t = &events[*j];
            t.pid == e.pid && t.cpu == e.cpu && t.name == base && !out.contains_key(j)
        };
        let before = (i.saturating_sub(4)..i).rev().find(same);
        let after = (i + 1..(i + 5).min(events.len())).find(same);
        if let Some(j) = before.or(after) {
            out.insert(j, free.max(0) as u64);
        }
    }
    out
}

/// A reclaim episode: the allocating task's direct reclaim, or a memcg's (the task charging
/// over the limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Reclaim {
    Direct,
    Memcg,
}

/// The vmscan tracepoints [`summarize`] counts, known by their names.
#[derive(Debug, Clone, Copy)]
enum Tracepoint {
    Begin(Reclaim),
    End(Reclaim),
    KswapdWake,
    KswapdSleep,
    WakeupKswapd,
    Throttled,
}

impl Tracepoint {
    fn of(name: &str) -> Option<Tracepoint> {
        Some(match name {
            "mm_vmscan_direct_reclaim_begin" => Tracepoint::Begin(Reclaim::Direct),
            "mm_vmscan_memcg_reclaim_begin" => Tracepoint::Begin(Reclaim::Memcg),
            "mm_vmscan_direct_reclaim_end" => Tracepoint::End(Reclaim::Direct),
            "mm_vmscan_memcg_reclaim_end" => Tracepoint::End(Reclaim::Memcg),
            "mm_vmscan_kswapd_wake" => Tracepoint::KswapdWake,
            "mm_vmscan_kswapd_sleep" => Tracepoint::KswapdSleep,
            "mm_vmscan_wakeup_kswapd" => Tracepoint::WakeupKswapd,
            "mm_vmscan_throttled" => Tracepoint::Throttled,
            _ => return None,
        })
    }
}

/// What is open between two lines: reclaim begun per (kind, task), the free pages when a
/// task's direct reclaim began, kswapd awake per node since.
#[derive(Default)]
struct Open {
    reclaim: BTreeMap<(Reclaim, u32), u64>,
    free: BTreeMap<u32, u64>,
    awake: BTreeMap<u32, u64>,
}

/// A numeric field of an event (0 when absent or not a number).
fn num(e: &TraceEvent, k: &str) -> u64 {
    e.fields
        .get(k)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
}

/// Pairs begin/end events per task and wake/sleep per node.
pub fn summarize(events: &[TraceEvent]) -> Summary {
    let mut s = Summary::default();
    let free_at = probe_free(events);
    let mut open = Open::default();
    for (i, e) in events.iter().enumerate() {
        s.events += 1;
        if let Some(tp) = Tracepoint::of(&e.name) {
            s.add(tp, e, free_at.get(&i).copied(), &mut open);
        }
    }
    // A kswapd still awake when the step's trace ended: awake at least until the last line.
    let last_ts = events.iter().map(|e| e.ts_us).max().unwrap_or(0);
    for (nid, start) in open.awake {
        s.kswapd.entry(nid).or_default().add(start, last_ts, 0);
        s.kswapd_awake_at_end.push(nid);
    }
    s
}

impl Summary {
    /// One event; `free`: the free pages its probe saw, if it had one.
    fn add(&mut self, tp: Tracepoint, e: &TraceEvent, free: Option<u64>, open: &mut Open) {
        match tp {
            Tracepoint::Begin(kind) => {
                open.reclaim.insert((kind, e.pid), e.ts_us);
                if let (Reclaim::Direct, Some(f)) = (kind, free) {
                    open.free.insert(e.pid, f);
                }
            }
            Tracepoint::End(kind) => self.reclaim_end(kind, e, open),
            Tracepoint::KswapdWake => {
                let nid = num(e, "nid") as u32;
                *self.kswapd_passes.entry(nid).or_default() += 1;
                open.awake.entry(nid).or_insert(e.ts_us);
            }
            Tracepoint::KswapdSleep => {
                let nid = num(e, "nid") as u32;
                *self.kswapd_sleeps.entry(nid).or_default() += 1;
                if let Some(f) = free {
                    self.kswapd_sleep_free.add(f);
                }
                if let Some(start) = open.awake.remove(&nid) {
                    self.kswapd.entry(nid).or_default().add(start, e.ts_us, 0);
                }
            }
            Tracepoint::WakeupKswapd => self.wakeup_kswapd(e, free),
            Tracepoint::Throttled => {
                let reason = e.fields.get("reason").map_or("unknown", String::as_str);
                let reason = reason.strip_prefix("VMSCAN_THROTTLE_").unwrap_or(reason);
                let key = ((e.comm.clone(), e.pid), reason.to_ascii_lowercase());
                let t = self.throttled.entry(key).or_default();
                t.count += 1;
                t.delayed_us += num(e, "usec_delayed");
            }
        }
    }

    /// The end of a reclaim episode the same task began (an end without its begin is left
    /// out: the trace was cleared in between).
    fn reclaim_end(&mut self, kind: Reclaim, e: &TraceEvent, open: &mut Open) {
        let Some(start) = open.reclaim.remove(&(kind, e.pid)) else {
            return;
        };
        let map = match kind {
            Reclaim::Memcg => &mut self.memcg,
            Reclaim::Direct => &mut self.direct,
        };
        let ep = map.entry((e.comm.clone(), e.pid)).or_default();
        ep.add(start, e.ts_us, num(e, "nr_reclaimed"));
        // (Any end the task's begin matches closes its free-pages reading.)
        if let Some(f) = open.free.remove(&e.pid).filter(|_| kind == Reclaim::Direct) {
            ep.free.add(f);
        }
    }

    /// An allocation asking kswapd to run, by node and gfp class.
    fn wakeup_kswapd(&mut self, e: &TraceEvent, free: Option<u64>) {
        self.wakeup_requests += 1;
        let flags = e.fields.get("gfp_flags").map(String::as_str);
        if flags.is_some_and(|f| f != "none" && f != "0x0") {
            self.wakeup_by_allocator += 1;
        }
        let class = gfp_class(flags.unwrap_or("none"));
        let w = self
            .wakeups
            .entry((num(e, "nid") as u32, class))
            .or_default();
        w.count += 1;
        if let Some(f) = free {
            w.free.add(f);
        }
    }
}

/// The summary as counters, keyed like samples so that labs can observe and expect them:
/// `trace.<cgroup>.memcg_reclaim.episodes|blocked_us|longest_us|nr_reclaimed` (tasks mapped
/// to their cgroup by `cgroup_of`, others as `other`), the same for `direct_reclaim`,
/// `trace.kswapd.wakes`, `trace.kswapd.<node>.wakes|awake_us|passes|awake_at_end`,
/// `trace.wakeup_kswapd` and `trace.wakeup_kswapd.allocator|gfp_none`; per node
/// `trace.kswapd.<node>.sleeps`, `trace.wakeup_kswapd.<node>.allocator|gfp_none` and
/// `trace.wakeup_kswapd.<node>.gfp.<class>`; `trace.<cgroup>.throttled.<reason>.count|delayed_us`;
/// and where the free-page probes reported (guest::FREE_PROBES), `free_min|free_max` of
/// `trace.wakeup_kswapd.allocator`, `trace.wakeup_kswapd.gfp_none`, `trace.kswapd.sleep` and
/// `trace.<cgroup>.direct_reclaim` (when episodes began). Free pages are the machine's
/// (vm_zone_stat[NR_FREE_PAGES]: the zone's own count when one zone holds all memory).
pub fn facts(s: &Summary, cgroup_of: &BTreeMap<u32, String>) -> BTreeMap<String, u64> {
    let mut v = BTreeMap::new();
    for (kind, map) in [("memcg_reclaim", &s.memcg), ("direct_reclaim", &s.direct)] {
        for ((_, pid), ep) in map {
            let cg = cgroup_of.get(pid).map(String::as_str).unwrap_or("other");
            let mut add = |what: &str, n: u64, max: bool| {
                let e = v.entry(format!("trace.{cg}.{kind}.{what}")).or_insert(0);
                *e = if max { (*e).max(n) } else { *e + n };
            };
            add("episodes", ep.count, false);
            add("blocked_us", ep.total_us, false);
            add("longest_us", ep.longest_us, true);
            add("nr_reclaimed", ep.nr_reclaimed, false);
        }
    }
    let mut wakes = 0;
    for (nid, ep) in &s.kswapd {
        v.insert(format!("trace.kswapd.{nid}.wakes"), ep.count);
        v.insert(format!("trace.kswapd.{nid}.awake_us"), ep.total_us);
        let passes = s.kswapd_passes.get(nid).copied().unwrap_or(0);
        v.insert(format!("trace.kswapd.{nid}.passes"), passes);
        let at_end = s.kswapd_awake_at_end.contains(nid);
        v.insert(
            format!("trace.kswapd.{nid}.awake_at_end"),
            u64::from(at_end),
        );
        wakes += ep.count;
    }
    v.insert("trace.kswapd.wakes".into(), wakes);
    v.insert("trace.wakeup_kswapd".into(), s.wakeup_requests);
    v.insert(
        "trace.wakeup_kswapd.allocator".into(),
        s.wakeup_by_allocator,
    );
    v.insert(
        "trace.wakeup_kswapd.gfp_none".into(),
        s.wakeup_requests - s.wakeup_by_allocator,
    );
    more_facts(s, cgroup_of, &mut v);
    v
}

/// The per-node, per-class, throttling and free-page facts of [`facts`].
fn more_facts(s: &Summary, cgroup_of: &BTreeMap<u32, String>, v: &mut BTreeMap<String, u64>) {
    fn range(v: &mut BTreeMap<String, u64>, key: &str, r: &Frees) {
        if let Some((lo, mid, hi)) = r.get() {
            v.insert(format!("{key}.free_min"), lo);
            v.insert(format!("{key}.free_median"), mid);
            v.insert(format!("{key}.free_max"), hi);
        }
    }
    let cg = |pid: &u32| cgroup_of.get(pid).map(String::as_str).unwrap_or("other");
    let mut direct_free: BTreeMap<&str, Frees> = BTreeMap::new();
    for ((_, pid), ep) in &s.direct {
        direct_free.entry(cg(pid)).or_default().merge(&ep.free);
    }
    for (group, r) in &direct_free {
        range(v, &format!("trace.{group}.direct_reclaim"), r);
    }
    for (((_, pid), reason), t) in &s.throttled {
        let key = format!("trace.{}.throttled.{reason}", cg(pid));
        *v.entry(format!("{key}.count")).or_insert(0) += t.count;
        *v.entry(format!("{key}.delayed_us")).or_insert(0) += t.delayed_us;
    }
    for (nid, n) in &s.kswapd_sleeps {
        v.insert(format!("trace.kswapd.{nid}.sleeps"), *n);
    }
    range(v, "trace.kswapd.sleep", &s.kswapd_sleep_free);
    let (mut alloc, mut none) = (Frees::default(), Frees::default());
    for ((nid, class), w) in &s.wakeups {
        *v.entry(format!("trace.wakeup_kswapd.{nid}.gfp.{class}"))
            .or_insert(0) += w.count;
        let kind = if class == "none" {
            "gfp_none"
        } else {
            "allocator"
        };
        *v.entry(format!("trace.wakeup_kswapd.{nid}.{kind}"))
            .or_insert(0) += w.count;
        if class == "none" {
            &mut none
        } else {
            &mut alloc
        }
        .merge(&w.free);
    }
    range(v, "trace.wakeup_kswapd.allocator", &alloc);
    range(v, "trace.wakeup_kswapd.gfp_none", &none);
}

/// Facts that are 0 when nothing happened (no episode is a fact too), for the lab's groups and
/// nodes. Free-page ranges are never filled in: no event, no number.
pub fn zero_facts(cgroups: &[&str], nodes: u32) -> Vec<String> {
    let mut keys = Vec::new();
    for cg in cgroups.iter().chain(&["root", "other"]) {
        for kind in ["memcg_reclaim", "direct_reclaim"] {
            for what in ["episodes", "blocked_us", "longest_us", "nr_reclaimed"] {
                keys.push(format!("trace.{cg}.{kind}.{what}"));
            }
        }
        for what in ["count", "delayed_us"] {
            keys.push(format!("trace.{cg}.throttled.writeback.{what}"));
        }
    }
    for nid in 0..nodes {
        for what in ["wakes", "awake_us", "passes", "awake_at_end", "sleeps"] {
            keys.push(format!("trace.kswapd.{nid}.{what}"));
        }
        for kind in ["allocator", "gfp_none"] {
            keys.push(format!("trace.wakeup_kswapd.{nid}.{kind}"));
        }
    }
    keys
}

/// `, free pages A..B (median M)` (or `A`), or nothing when no probe reported.
fn free_text(r: &Frees) -> String {
    match r.get() {
        Some((lo, _, hi)) if lo == hi => format!(", free pages {lo}"),
        Some((lo, mid, hi)) => format!(", free pages {lo}..{hi} (median {mid})"),
        None => String::new(),
    }
}

/// Lines for the report: per task, then per node.
pub fn render(s: &Summary, cgroup_of: &BTreeMap<u32, String>) -> String {
    let mut out = String::new();
    for (kind, map) in [("memcg reclaim", &s.memcg), ("direct reclaim", &s.direct)] {
        for ((comm, pid), ep) in map {
            let cg = cgroup_of
                .get(pid)
                .map(|c| format!(" in {c}"))
                .unwrap_or_default();
            out.push_str(&format!(
                "    {comm}-{pid}{cg}: {} {kind} episodes, blocked {:.1} ms in all (longest {:.2} ms), {} pages reclaimed{}\n",
                ep.count,
                ep.total_us as f64 / 1000.0,
                ep.longest_us as f64 / 1000.0,
                ep.nr_reclaimed,
                free_text(&ep.free).replace(", free pages", "; entered at free pages")
            ));
        }
    }
    for (((comm, pid), reason), t) in &s.throttled {
        let cg = cgroup_of
            .get(pid)
            .map(|c| format!(" in {c}"))
            .unwrap_or_default();
        out.push_str(&format!(
            "    {comm}-{pid}{cg}: throttled in reclaim ({reason}) {} times, {:.1} ms\n",
            t.count,
            t.delayed_us as f64 / 1000.0
        ));
    }
    for (nid, ep) in &s.kswapd {
        let times = if ep.count == 1 { "time" } else { "times" };
        let passes = s.kswapd_passes.get(nid).copied().unwrap_or(0);
        let ms = ep.total_us as f64 / 1000.0;
        let awake = match s.kswapd_awake_at_end.contains(nid) {
            true => format!("awake until the step ended (at least {ms:.1} ms)"),
            false => format!("awake {ms:.1} ms"),
        };
        let sleeps = s.kswapd_sleeps.get(nid).copied().unwrap_or(0);
        let at = free_text(&s.kswapd_sleep_free).replacen(',', " at", 1);
        out.push_str(&format!(
            "    kswapd{nid}: woke {} {times}, {passes} balancing passes, {awake}, went back to sleep {sleeps} {}{at}\n",
            ep.count,
            if sleeps == 1 { "time" } else { "times" }
        ));
    }
    if s.kswapd.is_empty() {
        out.push_str("    kswapd: never woke\n");
    }
    for ((nid, class), w) in &s.wakeups {
        let who = match class.as_str() {
            "none" => "gfp_flags=none (a boosted watermark, rmqueue())".to_string(),
            _ => format!("allocations ({class})"),
        };
        out.push_str(&format!(
            "    kswapd{nid} woken by {who}: {} {}{}\n",
            w.count,
            if w.count == 1 { "time" } else { "times" },
            free_text(&w.free)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // The layout of /sys/kernel/tracing/trace (header and padding), with made-up values.
    const CAPTURED: &str = "\
# tracer: nop
#
# entries-in-buffer/entries-written: 6/6   #P:2
#
#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION
#              | |         |   |||||     |         |
             exe-81      [001] .....     2.031250: mm_vmscan_memcg_reclaim_begin: order=0 gfp_flags=GFP_HIGHUSER_MOVABLE
             exe-81      [001] .....     2.032750: mm_vmscan_memcg_reclaim_end: nr_reclaimed=32
             exe-81      [001] .....     2.040000: mm_vmscan_memcg_reclaim_begin: order=0 gfp_flags=GFP_HIGHUSER_MOVABLE
             exe-81      [001] .....     2.045000: mm_vmscan_memcg_reclaim_end: nr_reclaimed=33
             exe-90      [000] d..1.     3.000000: mm_vmscan_wakeup_kswapd: nid=0 order=0 gfp_flags=GFP_HIGHUSER_MOVABLE
         kswapd0-40      [000] .....     3.000100: mm_vmscan_kswapd_wake: nid=0 order=0
             exe-90      [000] .....     3.001000: mm_vmscan_direct_reclaim_begin: order=0 gfp_flags=GFP_HIGHUSER_MOVABLE
             exe-90      [000] .....     3.004000: mm_vmscan_direct_reclaim_end: nr_reclaimed=40
         kswapd0-40      [000] .....     3.100100: mm_vmscan_kswapd_sleep: nid=0
";

    // Captured from the 6.12.117 guest (labs 1 and 2), as the agent sends them (runs of spaces
    // squeezed). Note the `.N...` flags (need-resched) on one line.
    const REAL: &str = "\
exe-40 [000] ..... 3.054908: mm_vmscan_wakeup_kswapd: nid=0 order=0 gfp_flags=GFP_HIGHUSER_MOVABLE|__GFP_COMP|__GFP_ZERO
kswapd0-33 [001] ..... 3.058549: mm_vmscan_kswapd_wake: nid=0 order=0
exe-40 [000] ..... 3.069292: mm_vmscan_direct_reclaim_begin: order=0 gfp_flags=GFP_HIGHUSER_MOVABLE|__GFP_COMP|__GFP_ZERO
exe-40 [000] ..... 3.073723: mm_vmscan_direct_reclaim_end: nr_reclaimed=64
kswapd0-33 [001] ..... 4.034840: mm_vmscan_kswapd_sleep: nid=0
exe-37 [001] .N... 3.141701: mm_vmscan_memcg_reclaim_begin: order=0 gfp_flags=GFP_HIGHUSER_MOVABLE
exe-37 [000] ..... 3.249662: mm_vmscan_memcg_reclaim_end: nr_reclaimed=64
";

    #[test]
    fn captured_lines_parse_and_summarize() {
        let e: Vec<TraceEvent> = REAL.lines().filter_map(parse_line).collect();
        assert_eq!(e.len(), 7);
        assert_eq!(e[1].comm, "kswapd0");
        assert_eq!(e[5].cpu, 1);
        assert_eq!(e[5].ts_us, 3_141_701);
        let s = summarize(&e);
        assert_eq!(s.kswapd[&0].total_us, 976_291);
        assert_eq!(s.direct[&("exe".to_string(), 40)].nr_reclaimed, 64);
        assert_eq!(s.memcg[&("exe".to_string(), 37)].longest_us, 107_961);
        assert_eq!(s.wakeup_requests, 1);
    }

    fn events() -> Vec<TraceEvent> {
        CAPTURED.lines().filter_map(parse_line).collect()
    }

    #[test]
    fn lines_parse() {
        let e = events();
        assert_eq!(e.len(), 9);
        assert_eq!(e[0].comm, "exe");
        assert_eq!(e[0].pid, 81);
        assert_eq!(e[0].cpu, 1);
        assert_eq!(e[0].ts_us, 2_031_250);
        assert_eq!(e[0].name, "mm_vmscan_memcg_reclaim_begin");
        assert_eq!(e[1].fields["nr_reclaimed"], "32");
        assert_eq!(e[5].comm, "kswapd0");
        assert!(parse_line("# tracer: nop").is_none());
        assert!(parse_line("garbage").is_none());
        assert!(parse_line("a-b [0] x").is_none());
    }

    #[test]
    fn episodes_pair_up() {
        let s = summarize(&events());
        let w = &s.memcg[&("exe".to_string(), 81)];
        assert_eq!(
            (w.count, w.total_us, w.longest_us, w.nr_reclaimed),
            (2, 6500, 5000, 65)
        );
        let d = &s.direct[&("exe".to_string(), 90)];
        assert_eq!((d.count, d.total_us), (1, 3000));
        assert_eq!(s.kswapd[&0].count, 1);
        assert_eq!(s.kswapd[&0].total_us, 100_000);
        assert_eq!(s.wakeup_requests, 1);
    }

    #[test]
    fn facts_by_cgroup() {
        let mut cg = BTreeMap::new();
        cg.insert(81, "W".to_string());
        let f = facts(&summarize(&events()), &cg);
        assert_eq!(f["trace.W.memcg_reclaim.episodes"], 2);
        assert_eq!(f["trace.W.memcg_reclaim.longest_us"], 5000);
        assert_eq!(f["trace.other.direct_reclaim.episodes"], 1);
        assert_eq!(f["trace.kswapd.wakes"], 1);
        assert_eq!(f["trace.kswapd.0.awake_us"], 100_000);
        let text = render(&summarize(&events()), &cg);
        assert!(
            text.contains("exe-81 in W: 2 memcg reclaim episodes, blocked 6.5 ms"),
            "{text}"
        );
    }

    #[test]
    fn an_unpaired_wake_is_awake_until_the_trace_ends() {
        let mut lines: Vec<&str> = CAPTURED
            .lines()
            .filter(|l| !l.contains("kswapd_sleep"))
            .collect();
        // Two more balancing passes without sleeping in between.
        lines.push("kswapd0-40 [000] ..... 3.050000: mm_vmscan_kswapd_wake: nid=0 order=0");
        lines.push("kswapd0-40 [000] ..... 3.090000: mm_vmscan_kswapd_wake: nid=0 order=0");
        let e: Vec<TraceEvent> = lines.into_iter().filter_map(parse_line).collect();
        let s = summarize(&e);
        assert_eq!(s.kswapd[&0].count, 1);
        assert_eq!(s.kswapd_passes[&0], 3);
        assert_eq!(s.kswapd_awake_at_end, vec![0]);
        // From its first wake (3.000100) to the last line of the trace (3.090000).
        assert_eq!(s.kswapd[&0].total_us, 89_900);
        let f = facts(&s, &BTreeMap::new());
        assert_eq!(f["trace.kswapd.0.passes"], 3);
        assert_eq!(f["trace.kswapd.0.awake_at_end"], 1);
        let text = render(&s, &BTreeMap::new());
        assert!(
            text.contains("kswapd0: woke 1 time, 3 balancing passes, awake until the step ended (at least 89.9 ms)"),
            "{text}"
        );
    }

    #[test]
    fn wake_requests_are_told_apart_by_their_gfp_flags() {
        let e: Vec<TraceEvent> = [
            "exe-90 [000] d..1. 3.000000: mm_vmscan_wakeup_kswapd: nid=0 order=0 gfp_flags=GFP_HIGHUSER_MOVABLE|__GFP_COMP",
            "exe-90 [000] d..1. 3.100000: mm_vmscan_wakeup_kswapd: nid=0 order=0 gfp_flags=none",
        ]
        .into_iter()
        .filter_map(parse_line)
        .collect();
        let f = facts(&summarize(&e), &BTreeMap::new());
        assert_eq!(f["trace.wakeup_kswapd"], 2);
        assert_eq!(f["trace.wakeup_kswapd.allocator"], 1);
        assert_eq!(f["trace.wakeup_kswapd.gfp_none"], 1);
    }

    #[test]
    fn gfp_classes() {
        assert_eq!(
            gfp_class("GFP_HIGHUSER_MOVABLE|__GFP_COMP|__GFP_ZERO"),
            "highuser_movable"
        );
        assert_eq!(gfp_class("GFP_KERNEL"), "kernel");
        assert_eq!(gfp_class("__GFP_HIGH|__GFP_NOWARN"), "high");
        assert_eq!(gfp_class("none"), "none");
    }

    // kswapd woken by an allocation and by a boosted watermark (gfp none) on node 0 and by an
    // allocation on node 1, with the agent's event probes (free pages) beside the probed
    // lines; two balancing passes without a sleep in between; a full sleep; a direct reclaim
    // entered with little free memory; and a writer throttled in reclaim.
    const WAKES: &str = "\
exe-40 [000] ..... 3.000000: mm_vmscan_wakeup_kswapd: nid=0 zid=1 order=0 gfp_flags=GFP_HIGHUSER_MOVABLE|__GFP_COMP
exe-40 [000] ..... 3.000001: mm_vmscan_wakeup_kswapd_free: (vmscan.mm_vmscan_wakeup_kswapd) free=600
kswapd0-33 [001] ..... 3.000100: mm_vmscan_kswapd_wake: nid=0 zid=1 order=0
kswapd0-33 [001] ..... 3.050000: mm_vmscan_kswapd_wake: nid=0 zid=1 order=0
exe-40 [000] ..... 3.060000: mm_vmscan_direct_reclaim_begin: order=0 gfp_flags=GFP_HIGHUSER_MOVABLE
exe-40 [000] ..... 3.060001: mm_vmscan_direct_reclaim_begin_free: (vmscan.mm_vmscan_direct_reclaim_begin) free=480
exe-40 [000] ..... 3.061000: mm_vmscan_direct_reclaim_end: nr_reclaimed=32
kswapd0-33 [001] ..... 3.200000: mm_vmscan_kswapd_sleep: nid=0
kswapd0-33 [001] ..... 3.200001: mm_vmscan_kswapd_sleep_free: (vmscan.mm_vmscan_kswapd_sleep) free=760
exe-40 [001] ..... 3.300001: mm_vmscan_wakeup_kswapd_free: (vmscan.mm_vmscan_wakeup_kswapd) free=700
exe-40 [001] ..... 3.300002: mm_vmscan_wakeup_kswapd: nid=0 zid=1 order=0 gfp_flags=none
exe-41 [000] ..... 3.400000: mm_vmscan_wakeup_kswapd: nid=1 zid=1 order=0 gfp_flags=GFP_KERNEL
exe-41 [000] ..... 3.400001: mm_vmscan_wakeup_kswapd_free: (vmscan.mm_vmscan_wakeup_kswapd) free=590
exe-41 [000] ..... 3.500000: mm_vmscan_throttled: nid=0 usec_timeout=100000 usec_delayed=4000 reason=VMSCAN_THROTTLE_WRITEBACK
exe-41 [000] ..... 3.600000: mm_vmscan_throttled: nid=0 usec_timeout=100000 usec_delayed=1000 reason=VMSCAN_THROTTLE_WRITEBACK
";

    #[test]
    fn wake_ups_per_node_and_gfp_class_with_free_pages() {
        let e: Vec<TraceEvent> = WAKES.lines().filter_map(parse_line).collect();
        let s = summarize(&e);
        assert_eq!(s.kswapd[&0].count, 1);
        assert_eq!(s.kswapd_passes[&0], 2);
        assert_eq!(s.kswapd_sleeps[&0], 1);
        assert!(s.kswapd_awake_at_end.is_empty());
        // The probe's line may also come just before the probed one.
        assert_eq!(
            s.wakeups[&(0, "none".to_string())].free.get(),
            Some((700, 700, 700))
        );
        let mut cg = BTreeMap::new();
        cg.insert(40, "G".to_string());
        cg.insert(41, "W".to_string());
        let f = facts(&s, &cg);
        for (key, want) in [
            ("trace.wakeup_kswapd", 3),
            ("trace.wakeup_kswapd.allocator", 2),
            ("trace.wakeup_kswapd.gfp_none", 1),
            ("trace.wakeup_kswapd.0.gfp.highuser_movable", 1),
            ("trace.wakeup_kswapd.0.allocator", 1),
            ("trace.wakeup_kswapd.0.gfp_none", 1),
            ("trace.wakeup_kswapd.1.gfp.kernel", 1),
            ("trace.wakeup_kswapd.1.allocator", 1),
            ("trace.wakeup_kswapd.allocator.free_min", 590),
            ("trace.wakeup_kswapd.allocator.free_max", 600),
            ("trace.wakeup_kswapd.allocator.free_median", 590),
            ("trace.wakeup_kswapd.gfp_none.free_max", 700),
            ("trace.kswapd.0.passes", 2),
            ("trace.kswapd.0.sleeps", 1),
            ("trace.kswapd.sleep.free_min", 760),
            ("trace.G.direct_reclaim.free_max", 480),
            ("trace.W.throttled.writeback.count", 2),
            ("trace.W.throttled.writeback.delayed_us", 5000),
        ] {
            assert_eq!(f.get(key), Some(&want), "{key}");
        }
        let text = render(&s, &cg);
        for want in [
            "kswapd0: woke 1 time, 2 balancing passes, awake 199.9 ms, went back to sleep 1 time at free pages 760",
            "kswapd0 woken by allocations (highuser_movable): 1 time, free pages 600",
            "kswapd0 woken by gfp_flags=none (a boosted watermark, rmqueue()): 1 time, free pages 700",
            "kswapd1 woken by allocations (kernel): 1 time, free pages 590",
            "exe-41 in W: throttled in reclaim (writeback) 2 times, 5.0 ms",
            "32 pages reclaimed; entered at free pages 480",
        ] {
            assert!(text.contains(want), "{want}\n{text}");
        }
    }

    #[test]
    fn without_the_probes_there_are_no_free_page_facts() {
        let e: Vec<TraceEvent> = WAKES
            .lines()
            .filter(|l| !l.contains("_free:"))
            .filter_map(parse_line)
            .collect();
        let f = facts(&summarize(&e), &BTreeMap::new());
        assert_eq!(f["trace.wakeup_kswapd.0.allocator"], 1);
        assert!(!f.keys().any(|k| k.contains("free_")), "{f:?}");
    }
}
