//! What the timeline chart shows, built from a run: one panel per idea (each group's memory
//! against its limits; free memory against the zone watermarks and the guest's RAM; who
//! reclaims; swap and zswap; dirty pages; limit hits; time blocked in reclaim, from the
//! trace), each step its own column, OOM kills as marks, trace episodes as bars. Also the
//! terminal's sparklines. Pure: evaluation in, [`Chart`] out; `timeline.rs` draws it.

use crate::report::Evaluation;
use crate::timeline::{
    Chart, Mark, Panel, RefColor, RefLine, Series, Span, StepColumn, Whose, owner_of_who, resample,
    sparkline, watermark_color,
};
use crate::units::{self, Unit};
use guest::event::Exit;
use guest::spec::LabSpec;
use std::collections::BTreeMap;

mod checked;

const MIB: f64 = 1024.0 * 1024.0;
const PAGE: f64 = units::PAGE as f64;

/// The samples of one step: its start (guest ms), length (s), the counters before it, and its
/// timeline rows as (seconds into the step, values).
struct StepData<'a> {
    name: String,
    secs: f64,
    before: Option<&'a BTreeMap<String, u64>>,
    rows: Vec<(f64, &'a BTreeMap<String, u64>)>,
}

fn steps<'a>(ev: &'a Evaluation) -> Vec<StepData<'a>> {
    let mut out = Vec::new();
    for (i, s) in ev.steps.iter().enumerate() {
        let start = ev
            .step_starts
            .iter()
            .find(|st| st.step == s.name)
            .map(|st| st.t_ms)
            .or_else(|| {
                ev.timeline
                    .iter()
                    .find(|t| t.step == s.name)
                    .map(|t| t.t_ms)
            });
        let Some(start) = start else { continue };
        let rows: Vec<(f64, &BTreeMap<String, u64>)> = ev
            .timeline
            .iter()
            .filter(|t| t.step == s.name)
            .map(|t| (t.t_ms.saturating_sub(start) as f64 / 1000.0, &t.values))
            .collect();
        let last = rows.last().map(|r| r.0).unwrap_or(0.0);
        let before = match i {
            0 => ev.sampled.get("start"),
            _ => ev.sampled.get(&format!("after:{}", ev.steps[i - 1].name)),
        };
        out.push(StepData {
            name: s.name.clone(),
            secs: last.max(s.wall_ms as f64 / 1000.0).max(0.001),
            before,
            rows,
        });
    }
    out
}

/// How a counter is drawn: its level (a gauge, scaled), or what it added since its step began.
#[derive(Clone, Copy)]
enum Draw {
    Level(f64),
    SinceStepStart(f64),
}

/// Marks a series the lab is about that never moved: `kswapd (whole machine) (0 throughout)`.
fn flat_noted(mut s: Series) -> Series {
    if s.points.iter().all(|p| p.2 == 0.0) {
        s.label.push_str(" (0 throughout)");
    }
    s
}

fn series(data: &[StepData], counter: &str, label: String, draw: Draw) -> Option<Series> {
    expr_series(data, &[(false, counter)], label, draw)
}

/// A series of a sum or difference of timeline counters (`+`: false, `-`: true), drawn where a
/// sample has every term.
fn expr_series(
    data: &[StepData],
    terms: &[(bool, &str)],
    label: String,
    draw: Draw,
) -> Option<Series> {
    let value = |m: &BTreeMap<String, u64>| -> Option<f64> {
        (terms.iter())
            .map(|(neg, t)| {
                m.get(*t)
                    .map(|v| if *neg { -(*v as f64) } else { *v as f64 })
            })
            .sum()
    };
    let (Draw::Level(scale) | Draw::SinceStepStart(scale)) = draw;
    let mut points = Vec::new();
    for (i, s) in data.iter().enumerate() {
        let base = match draw {
            Draw::Level(_) => 0.0,
            Draw::SinceStepStart(_) => (s.before.and_then(value))
                .or_else(|| s.rows.first().and_then(|r| value(r.1)))
                .unwrap_or(0.0),
        };
        for (t, values) in &s.rows {
            if let Some(v) = value(values) {
                points.push((i, *t, (v - base) * scale));
            }
        }
    }
    let counter: String = (terms.iter().enumerate())
        .map(|(k, (neg, t))| match (k, neg) {
            (0, _) => t.to_string(),
            (_, true) => format!(" - {t}"),
            (_, false) => format!(" + {t}"),
        })
        .collect();
    (!points.is_empty()).then(|| Series {
        label,
        whose: owner_of(&counter).map_or(Whose::Machine, Whose::Owner),
        counter,
        points,
        ends_only: false,
    })
}

/// A counter the timeline does not read (PSI, whose total a read changes; memory.peak), from
/// the samples before and after each step: two points a step.
fn ends_series(
    ev: &Evaluation,
    data: &[StepData],
    counter: &str,
    label: String,
    draw: Draw,
) -> Option<Series> {
    let mut points = Vec::new();
    for (i, s) in data.iter().enumerate() {
        let after = ev.sampled.get(&format!("after:{}", s.name));
        let (Some(&a), Some(&b)) = (
            s.before.and_then(|m| m.get(counter)),
            after.and_then(|m| m.get(counter)),
        ) else {
            continue;
        };
        let (a, b) = (a as f64, b as f64);
        let ((from, to), k) = match draw {
            Draw::Level(k) => ((a, b), k),
            Draw::SinceStepStart(k) => ((0.0, b - a), k),
        };
        points.push((i, 0.0, from * k));
        points.push((i, s.secs, to * k));
    }
    (!points.is_empty()).then(|| Series {
        label,
        counter: counter.to_string(),
        points,
        ends_only: true,
        whose: owner_of(counter).map_or(Whose::Machine, Whose::Owner),
    })
}

/// Whose a counter is: the group whose file it is read from (`pod/app/memory.current`:
/// `pod/app`), the node of a per-node one (`node1.meminfo.MemFree`, `kswapd.1.cpu_ticks`:
/// `node 1`), or the whole machine's (`None`); a sum's or difference's first term's.
fn owner_of(counter: &str) -> Option<String> {
    let first = counter.split(' ').next().unwrap_or(counter);
    if let Some((g, _)) = first.rsplit_once('/') {
        return Some(g.to_string());
    }
    let node = first
        .strip_prefix("node")
        .or(first.strip_prefix("kswapd."))?;
    let (n, _) = node.split_once('.')?;
    n.parse::<u32>().ok().map(|n| format!("node {n}"))
}

/// The groups and, on a guest of several NUMA nodes, the nodes: each line's colour is its
/// owner's.
fn owners(spec: &LabSpec) -> Vec<String> {
    let nodes = match spec.vm.numa_nodes {
        0 | 1 => 0,
        n => n,
    };
    (spec.cgroups.iter().map(|c| c.name.clone()))
        .chain((0..nodes).map(|n| format!("node {n}")))
        .collect()
}

/// Whether a series changes at all (beyond `noise` in its unit).
fn moves(s: &Series, noise: f64) -> bool {
    let mut by_step: BTreeMap<usize, (f64, f64)> = BTreeMap::new();
    for (i, _, v) in &s.points {
        let e = by_step.entry(*i).or_insert((*v, *v));
        e.0 = e.0.min(*v);
        e.1 = e.1.max(*v);
    }
    by_step.values().any(|(lo, hi)| hi - lo > noise)
}

/// A series drawn when it moves (beyond `noise` in its unit) or `always` (the lab is about it),
/// then marked when it never left 0.
fn keep(s: Option<Series>, noise: f64, always: bool) -> Option<Series> {
    s.filter(|s| always || moves(s, noise)).map(flat_noted)
}

/// The chart of a run.
pub fn build(spec: &LabSpec, ev: &Evaluation) -> Chart {
    let data = steps(ev);
    let mut panels = Vec::new();
    if !spec.cgroups.is_empty() {
        push(&mut panels, memory_panel(spec, ev, &data));
        // What the groups hold, when more than one kind of page moves.
        let kinds = kinds_panel(spec, &data);
        if kinds.series.len() >= 2 {
            push(&mut panels, kinds);
        }
    }
    // Free memory against the watermarks and the guest's RAM; zoomed in on the watermarks
    // when free memory comes near them (they are a few MiB in a guest of hundreds).
    let free = free_panel(spec, ev, &data);
    let zoom = zoomed(&free);
    panels.push(free);
    panels.extend(zoom);
    panels.extend(who_reclaims_panels(spec, &data));
    // The watermarks themselves, when the lab is about them: as each step found and left them.
    if spec.refers_to("zoneinfo.") {
        push(&mut panels, watermark_panel(ev, &data));
    }
    if spec.refers_to("kswapd.") {
        push(&mut panels, kswapd_cpu_panel(spec, &data));
    }
    if spec.vm.swap.is_some() {
        push(&mut panels, swap_panel(spec, &data));
    }
    push(&mut panels, dirty_panel(&data));
    if spec.refers_to("vmstat.workingset_refault") {
        push(&mut panels, refault_panel(&data));
    }
    if spec.refers_to("vmstat.pgactivate") || spec.refers_to("vmstat.pgdeactivate") {
        push(&mut panels, lru_moves_panel(&data));
    }
    push(&mut panels, hits_panel(spec, &data));
    push(&mut panels, failcnt_panel(spec, &data));
    // Stall time from the trace over the step, and PSI's only at its start and end: the
    // timeline does not read PSI (a read changes its total; see the agent's timeline_values()).
    let spans = spans(ev, &data);
    let stall = stall_panel(spec, ev, &spans, &data);
    // Then what the lab's headlines check, where the panels above leave a counter out.
    let drawn: Vec<&str> = (panels.iter().chain([&stall]))
        .flat_map(|p| p.series.iter().map(|s| s.counter.as_str()))
        .collect();
    let checked = checked::headline_panels(spec, ev, &data, &drawn);
    panels.extend(checked);
    push(&mut panels, stall);
    Chart {
        title: format!("{}: {}", spec.id, spec.title),
        steps: data
            .iter()
            .map(|s| StepColumn {
                name: s.name.clone(),
                secs: s.secs,
            })
            .collect(),
        panels,
        marks: [oom_marks(ev, &data), exit_marks(ev, &data)].concat(),
        spans,
        owners: owners(spec),
    }
}

/// What a run was, beside the lab: the `--exercise` it ran, and its `--set`s.
#[derive(Clone, Copy)]
pub struct RunName<'a> {
    pub exercise: Option<&'a str>,
    pub sets: &'a BTreeMap<String, String>,
}

impl RunName<'_> {
    /// The words naming a variant run (`exercise limit-above-file: --set memory_max=128M`,
    /// `variant: --set reclaim_size=8M`), for its chart's title and its notebook's heading: a
    /// variant's chart is not the lab's. `None` for the lab as written.
    pub fn words(&self) -> Option<String> {
        let sets: Vec<String> = (self.sets.iter())
            .map(|(k, v)| format!("--set {k}={v}"))
            .collect();
        match (self.exercise, sets.is_empty()) {
            (Some(x), true) => Some(format!("exercise {x}")),
            (Some(x), false) => Some(format!("exercise {x}: {}", sets.join(" "))),
            (None, false) => Some(format!("variant: {}", sets.join(" "))),
            (None, true) => None,
        }
    }

    /// `title`, followed by these words in brackets when the run was a variant.
    pub fn title(&self, title: &str) -> String {
        match self.words() {
            Some(words) => format!("{title} ({words})"),
            None => title.to_string(),
        }
    }
}

/// The chart of a run, its title naming the exercise or variant when the run was one.
pub fn of_run(spec: &LabSpec, ev: &Evaluation, name: RunName) -> Chart {
    let mut chart = build(spec, ev);
    chart.title = name.title(&chart.title);
    chart
}

/// Each group's memory in use (and in swap) against its limits, and the peak (memory.peak, which
/// the timeline does not read) of the groups the lab asks about.
fn memory_panel(spec: &LabSpec, ev: &Evaluation, data: &[StepData]) -> Panel {
    let mut p = panel("Memory each group uses, against its limits", "MiB");
    for cg in &spec.cgroups {
        if let Some(s) = in_use(data, &cg.name) {
            let j = p.series.len();
            p.series.push(s);
            p.refs.extend(limit_lines(cg, j, data.len()));
        }
        let peak = format!("{}/memory.peak", cg.name);
        if spec.refers_to(&peak) {
            let words = format!("{}: memory.peak (at the step's start and end)", cg.name);
            p.series
                .extend(ends_series(ev, data, &peak, words, Draw::Level(1.0 / MIB)));
        }
        if spec.vm.swap.is_some()
            && let Some(s) = in_swap(spec, data, &cg.name)
        {
            p.series.push(s);
        }
    }
    p
}

/// A group's memory in use: memory.current, or a cgroup v1 group's memory.usage_in_bytes.
fn in_use(data: &[StepData], c: &str) -> Option<Series> {
    let level = Draw::Level(1.0 / MIB);
    series(
        data,
        &format!("{c}/memory.current"),
        format!("{c}: memory in use"),
        level,
    )
    .or_else(|| {
        series(
            data,
            &format!("{c}/memory.usage_in_bytes"),
            format!("{c}: memory in use (cgroup v1)"),
            level,
        )
    })
}

/// A group's limits as reference lines in the colour of its usage (series `j`), over all steps.
fn limit_lines(cg: &guest::spec::Cgroup, j: usize, steps: usize) -> Vec<RefLine> {
    let c = &cg.name;
    [
        ("memory.max", cg.memory_max),
        ("memory.high", cg.memory_high),
        ("memory.low", cg.memory_low),
        ("memory.min", cg.memory_min),
    ]
    .into_iter()
    .filter_map(|(name, limit)| {
        limit.map(|l| RefLine {
            label: format!("{c}: {name} {l}"),
            value: l.0 as f64 / MIB,
            steps: (0, steps.saturating_sub(1)),
            color: RefColor::Series(j),
        })
    })
    .collect()
}

/// A group's memory in swap, when it moved (memory.swap.current, or v1's memory.stat.swap).
fn in_swap(spec: &LabSpec, data: &[StepData], c: &str) -> Option<Series> {
    // memory.swap.current counts swap slots: zswap's pages hold one too.
    let words = match spec.vm.zswap {
        true => format!("{c}: in swap (on the device or in zswap)"),
        false => format!("{c}: in swap"),
    };
    let in_swap = |file: &str| {
        let s = series(
            data,
            &format!("{c}/{file}"),
            words.clone(),
            Draw::Level(1.0 / MIB),
        );
        keep(s, 0.5, false)
    };
    in_swap("memory.swap.current").or_else(|| in_swap("memory.stat.swap"))
}

/// What each group holds: anonymous memory, page cache, tmpfs, zswap (the kinds that moved).
fn kinds_panel(spec: &LabSpec, data: &[StepData]) -> Panel {
    let mut kinds = panel(
        "What each group holds: anonymous memory, page cache, tmpfs",
        "MiB",
    );
    for cg in &spec.cgroups {
        let c = &cg.name;
        for (key, words) in [
            ("anon", "anonymous"),
            ("file", "page cache"),
            ("shmem", "tmpfs/shared"),
            ("rss", "anonymous (cgroup v1 rss)"),
            ("cache", "page cache (cgroup v1 cache)"),
            ("zswapped", "in zswap, uncompressed size"),
            ("zswap", "zswap's compressed copies (in RAM)"),
        ] {
            let s = series(
                data,
                &format!("{c}/memory.stat.{key}"),
                format!("{c}: {words}"),
                Draw::Level(1.0 / MIB),
            );
            // A group the lab asks about zswap shows what it keeps there, 0 included.
            let always = key == "zswapped" && spec.refers_to(&format!("{c}/memory.stat.zsw"));
            if let Some(s) = keep(s, 4.0, always) {
                kinds.series.push(s);
            }
        }
    }
    if kinds.series.iter().any(|s| s.counter.contains(".zswap")) {
        kinds.title.push_str(", zswap");
    }
    kinds
}

/// Who reclaims: one panel, or, when it would hold more than six lines, one machine-wide and
/// one of each group's pages.
fn who_reclaims_panels(spec: &LabSpec, data: &[StepData]) -> Vec<Panel> {
    let mut who = who_reclaims_panel(spec, data);
    let groups: Vec<Series> = (spec.cgroups.iter())
        .flat_map(|cg| group_scans(spec, data, cg))
        .collect();
    if who.series.len() + groups.len() <= 6 {
        who.series.extend(groups);
        return [who].into_iter().filter(|p| !p.series.is_empty()).collect();
    }
    who.title = "Who reclaims, machine-wide: pages scanned since the step began".into();
    let mut each = panel(
        "Whose pages were scanned, by the tasks and by kswapd, since the step began",
        "pages",
    );
    each.series = groups;
    [who, each]
        .into_iter()
        .filter(|p| !p.series.is_empty())
        .collect()
}

/// Who reclaims machine-wide: kswapd and the tasks; every reclaim's scanning of anonymous and
/// file pages, when the lab is about it or has cgroup v1 groups.
fn who_reclaims_panel(spec: &LabSpec, data: &[StepData]) -> Panel {
    let referenced = |c: &str| spec.refers_to(c);
    let mut who = panel("Who reclaims: pages scanned since the step began", "pages");
    let by_kinds = referenced("vmstat.pgscan_anon")
        || referenced("vmstat.pgscan_file")
        || spec.cgroups.iter().any(|c| c.v1.is_some());
    // (pgscan_anon and pgscan_file add up to the others and the groups': drawn when asked.)
    for (c, words, by_kind) in [
        ("vmstat.pgscan_kswapd", "kswapd (whole machine)", false),
        (
            "vmstat.pgscan_direct",
            "tasks, global direct reclaim",
            false,
        ),
        (
            "vmstat.pgscan_anon",
            "anonymous pages, by any reclaim",
            true,
        ),
        ("vmstat.pgscan_file", "file pages, by any reclaim", true),
    ] {
        let s = match by_kind {
            true => by_kinds.then(|| series(data, c, words.into(), Draw::SinceStepStart(1.0))),
            false => Some(series(data, c, words.into(), Draw::SinceStepStart(1.0))),
        };
        let always = by_kind || referenced(c) || referenced("vmstat.pgscan_");
        who.series.extend(keep(s.flatten(), 0.0, always));
    }
    who
}

/// The pages of one group that tasks and kswapd scanned (those the lab asks about, even at 0);
/// a parent's, which add up its children's, only when the lab asks about them.
/// A cgroup v1 group's memory.stat counts no pgscan: its task's limit reclaim is what every
/// reclaim scanned (pgscan_anon + pgscan_file) less kswapd's and global direct reclaim's,
/// drawn in the steps that run in it (a step's workload is the one task charging there).
fn group_scans(spec: &LabSpec, data: &[StepData], cg: &guest::spec::Cgroup) -> Vec<Series> {
    let c = &cg.name;
    if cg.v1.is_some() {
        let terms = [
            (false, "vmstat.pgscan_anon"),
            (false, "vmstat.pgscan_file"),
            (true, "vmstat.pgscan_kswapd"),
            (true, "vmstat.pgscan_direct"),
        ];
        let words = format!("{c}'s pages, scanned by its task (cgroup v1: from /proc/vmstat)");
        let mut s = expr_series(data, &terms, words, Draw::SinceStepStart(1.0));
        if let Some(s) = s.as_mut() {
            s.whose = Whose::Owner(c.clone());
            let in_c = |i: usize| {
                let step = spec.steps.iter().find(|st| st.name() == data[i].name);
                step.and_then(|st| st.cgroup()) == Some(c.as_str())
            };
            s.points.retain(|p| in_c(p.0));
        }
        return keep(s.filter(|s| !s.points.is_empty()), 0.0, true)
            .into_iter()
            .collect();
    }
    let parent = format!("{c}/");
    let parent = spec.cgroups.iter().any(|o| o.name.starts_with(&parent));
    [
        ("pgscan_direct", format!("{c}'s pages, scanned by tasks")),
        ("pgscan_kswapd", format!("{c}'s pages, scanned by kswapd")),
    ]
    .into_iter()
    .filter_map(|(key, words)| {
        let counter = format!("{c}/memory.stat.{key}");
        if parent && !spec.refers_to(&counter) {
            return None;
        }
        let s = series(data, &counter, words, Draw::SinceStepStart(1.0));
        keep(s, 0.0, spec.refers_to(&counter))
    })
    .collect()
}

/// kswapd's CPU time per node, when the lab is about kswapd threads.
fn kswapd_cpu_panel(spec: &LabSpec, data: &[StepData]) -> Panel {
    let mut p = panel("kswapd's CPU time, per node, since the step began", "ms");
    for n in 0..spec.vm.numa_nodes.max(1) {
        let c = format!("kswapd.{n}.cpu_ticks");
        // /proc/<pid>/stat counts clock ticks of 10 ms (USER_HZ 100).
        if let Some(s) = keep(
            series(
                data,
                &c,
                format!("kswapd{n} (node {n})"),
                Draw::SinceStepStart(10.0),
            ),
            0.0,
            true,
        ) {
            p.series.push(s);
        }
    }
    p
}

/// Swap: pages written out (to zswap, to the device) and read back.
fn swap_panel(spec: &LabSpec, data: &[StepData]) -> Panel {
    let (title, out) = match spec.vm.zswap {
        true => (
            "Swap: pages compressed into zswap, written to the swap device, read back, since the step began",
            "written to the swap device",
        ),
        false => (
            "Swap: pages written out and read back since the step began",
            "written to swap",
        ),
    };
    let mut p = panel(title, "pages");
    for (c, words) in [
        ("vmstat.zswpout", "compressed into zswap (kept in RAM)"),
        ("vmstat.pswpout", out),
        ("vmstat.zswpin", "read back from zswap"),
        ("vmstat.pswpin", "read back from swap"),
    ] {
        let always = match c {
            "vmstat.zswpout" => spec.vm.zswap,
            _ => c.ends_with("out"),
        };
        if let Some(s) = keep(
            series(data, c, words.into(), Draw::SinceStepStart(1.0)),
            0.0,
            always,
        ) {
            p.series.push(s);
        }
    }
    p
}

/// A panel of machine-wide counters, one series each: those that move, or all with `always`.
fn counters_panel(
    data: &[StepData],
    (title, unit): (&str, &str),
    counters: &[(&str, &str)],
    (draw, noise, always): (Draw, f64, bool),
) -> Panel {
    let mut p = panel(title, unit);
    for &(c, words) in counters {
        if let Some(s) = keep(series(data, c, words.into(), draw), noise, always) {
            p.series.push(s);
        }
    }
    p
}

/// Dirty page cache: waiting for, and under, writeback.
fn dirty_panel(data: &[StepData]) -> Panel {
    counters_panel(
        data,
        ("Dirty page cache: waiting for, and under, writeback", "MiB"),
        &[
            ("vmstat.nr_dirty", "dirty"),
            ("vmstat.nr_writeback", "under writeback"),
        ],
        (Draw::Level(PAGE / MIB), 1.0, false),
    )
}

/// Refaults: evicted pages needed again.
fn refault_panel(data: &[StepData]) -> Panel {
    counters_panel(
        data,
        (
            "Refaults: evicted pages needed again since the step began",
            "pages",
        ),
        &[
            ("vmstat.workingset_refault_file", "page cache"),
            ("vmstat.workingset_refault_anon", "anonymous"),
        ],
        (Draw::SinceStepStart(1.0), 0.0, false),
    )
}

/// The classic LRU's moves between its lists (MGLRU makes neither), when the lab is about them.
fn lru_moves_panel(data: &[StepData]) -> Panel {
    counters_panel(
        data,
        (
            "Pages moved between the active and inactive lists since the step began",
            "pages",
        ),
        &[
            ("vmstat.pgactivate", "activated (pgactivate)"),
            ("vmstat.pgdeactivate", "deactivated (pgdeactivate)"),
        ],
        (Draw::SinceStepStart(1.0), 0.0, true),
    )
}

/// The times each group hit memory.max and memory.high.
fn hits_panel(spec: &LabSpec, data: &[StepData]) -> Panel {
    let mut hits = panel(
        "Times each group hit its limit since the step began (memory.events)",
        "times",
    );
    for cg in &spec.cgroups {
        for key in ["max", "high"] {
            hits.series.extend(group_hits(spec, data, &cg.name, key));
        }
    }
    hits
}

/// cgroup v1 has no memory.events: memory.failcnt counts every charge that failed at a v1
/// group's limit (each one, retries included: thousands where memory.events.max says tens,
/// hence a panel of its own).
fn failcnt_panel(spec: &LabSpec, data: &[StepData]) -> Panel {
    let mut p = panel(
        "Charges that failed at a cgroup v1 group's limit since the step began (memory.failcnt)",
        "charges",
    );
    for cg in spec.cgroups.iter().filter(|c| c.v1.is_some()) {
        let failcnt = format!("{}/memory.failcnt", cg.name);
        let s = series(
            data,
            &failcnt,
            format!("{}: at its limit", cg.name),
            Draw::SinceStepStart(1.0),
        );
        p.series.extend(keep(s, 0.0, spec.refers_to(&failcnt)));
    }
    p
}

/// One group's hits of memory.`key`: a group with children its own (memory.events.local),
/// then its subtree's; those the lab asks about even at 0 (a leaf's events are its own).
fn group_hits(spec: &LabSpec, data: &[StepData], c: &str, key: &str) -> Vec<Series> {
    let (counter, local) = (
        format!("{c}/memory.events.{key}"),
        format!("{c}/memory.events.local.{key}"),
    );
    let own = series(
        data,
        &local,
        format!("{c}: at its own memory.{key}"),
        Draw::SinceStepStart(1.0),
    );
    let words = match own.is_some() {
        true => format!("{c}: at memory.{key}, its own or a child's"),
        false => format!("{c}: at memory.{key}"),
    };
    let all = series(data, &counter, words, Draw::SinceStepStart(1.0));
    let always = spec.refers_to(&counter) || (own.is_none() && spec.refers_to(&local));
    [(own, spec.refers_to(&local)), (all, always)]
        .into_iter()
        .filter_map(|(s, always)| keep(s, 0.0, always))
        .collect()
}

/// How long tasks were stalled: blocked in reclaim, from the trace, and the PSI stall times the
/// lab refers to, from each step's start and end samples.
fn stall_panel(spec: &LabSpec, ev: &Evaluation, spans: &[Span], data: &[StepData]) -> Panel {
    let mut p = blocked_panel(&owners(spec), spans, data);
    let mut psi: Vec<&str> = spec.terms().filter(|t| is_psi_total(t)).collect();
    psi.sort();
    psi.dedup();
    for t in psi {
        let (who, what) = match t.rsplit_once("/memory.pressure.") {
            Some((cg, what)) => (cg.to_string(), what),
            None => ("the whole machine".into(), &t["pressure.".len()..]),
        };
        let kind = what.trim_end_matches(".total");
        let words = format!("{who}: PSI {kind} (read at the step's start and end)");
        p.series
            .extend(ends_series(ev, data, t, words, Draw::SinceStepStart(0.001)));
    }
    p.title = match (p.series.iter().any(|s| s.ends_only), p.series.iter().any(|s| !s.ends_only)) {
        (true, true) => "Time tasks were stalled since the step began: blocked in reclaim (vmscan trace), and PSI's stall time".into(),
        (true, false) => "Time tasks were stalled on memory since the step began (PSI)".into(),
        _ => p.title,
    };
    p
}

/// A PSI stall time: `W/memory.pressure.some.total`, `pressure.full.total`.
fn is_psi_total(term: &str) -> bool {
    term.ends_with(".total")
        && (term.starts_with("pressure.") || term.contains("/memory.pressure."))
}

/// The time each task spent blocked in reclaim since its step began, summed from the traced
/// episodes (memcg or direct reclaim; kswapd's wakeful time blocks no task).
fn blocked_panel(owners: &[String], spans: &[Span], data: &[StepData]) -> Panel {
    let mut p = panel(
        "Time tasks spent blocked in reclaim since the step began (vmscan trace)",
        "ms",
    );
    let mut whos: Vec<&str> = spans.iter().map(|s| s.3.as_str()).collect();
    whos.sort();
    whos.dedup();
    for who in whos.into_iter().filter(|w| !w.contains("awake")) {
        let mut points = Vec::new();
        for (i, step) in data.iter().enumerate() {
            let (mut blocked, mut x) = (0.0, 0.0);
            points.push((i, 0.0, 0.0));
            let mut episodes: Vec<(f64, f64)> = spans
                .iter()
                .filter(|s| s.0 == i && s.3 == who)
                .map(|s| (s.1, s.2))
                .collect();
            episodes.sort_by(|a, b| a.0.total_cmp(&b.0));
            // Two tasks' episodes may overlap: both count, drawn one after the other.
            for (a, b) in episodes {
                x = a.max(x);
                points.push((i, x, blocked));
                blocked += (b - a).max(0.0) * 1000.0;
                x = b.max(x);
                points.push((i, x, blocked));
            }
            points.push((i, step.secs, blocked));
        }
        p.series.push(Series {
            label: who.to_string(),
            counter: format!("trace: {who}"),
            points,
            ends_only: false,
            whose: Whose::of(owner_of_who(owners, who)),
        });
    }
    p
}

fn panel(title: &str, unit: &str) -> Panel {
    Panel {
        title: title.into(),
        unit: unit.into(),
        series: Vec::new(),
        refs: Vec::new(),
        y_max: None,
        clip: false,
    }
}

fn push(panels: &mut Vec<Panel>, p: Panel) {
    if !p.series.is_empty() {
        panels.push(p);
    }
}

/// MemFree (per node on a NUMA guest) under the guest's RAM and the zones' watermarks, as the
/// kernel reported them before each step (they change with watermark_scale_factor).
fn free_panel(spec: &LabSpec, ev: &Evaluation, data: &[StepData]) -> Panel {
    let mut p = panel(
        "Free memory in the guest, against the zone watermarks",
        "MiB",
    );
    let nodes = spec.vm.numa_nodes.max(1);
    if nodes > 1 {
        for n in 0..nodes {
            let counter = format!("node{n}.meminfo.MemFree");
            if let Some(s) = series(
                data,
                &counter,
                format!("node {n}: free"),
                Draw::Level(1.0 / MIB),
            ) {
                p.series.push(s);
            }
        }
    } else if let Some(s) = series(
        data,
        "meminfo.MemFree",
        "free memory (MemFree)".into(),
        Draw::Level(1.0 / MIB),
    ) {
        p.series.push(s);
    }
    let ram = ev
        .sampled
        .get("start")
        .and_then(|s| s.get("meminfo.MemTotal"))
        .map(|b| *b as f64)
        .unwrap_or(spec.vm.memory.0 as f64);
    let last = data.len().saturating_sub(1);
    p.refs.push(RefLine {
        label: format!("the guest's RAM ({})", units::bytes(ram as u64)),
        value: ram / MIB,
        steps: (0, last),
        color: RefColor::Grey,
    });
    watermark_refs(&mut p.refs, ev, data, nodes);
    p.y_max = Some(ram / MIB);
    p
}

/// The watermarks as reference lines: summed over each node's zones (on a NUMA guest only the
/// low one, per node), from the latest sample with them before each step (they change with
/// watermark_scale_factor); a line goes on over the steps where it did not change.
fn watermark_refs(refs: &mut Vec<RefLine>, ev: &Evaluation, data: &[StepData], nodes: u32) {
    let mut known = ev.sampled.get("start");
    for (i, s) in data.iter().enumerate() {
        if s.before
            .is_some_and(|b| b.keys().any(|k| k.starts_with("zoneinfo.")))
        {
            known = s.before;
        }
        let Some(before) = known else {
            continue;
        };
        for n in 0..nodes {
            for mark in ["high", "low", "min"] {
                if nodes > 1 && mark != "low" {
                    continue;
                }
                let pages = zone_pages(before, n, mark);
                if pages == 0 {
                    continue;
                }
                let label = match nodes {
                    1 => format!("{mark} watermark (all zones)"),
                    _ => format!("node {n}: low watermark"),
                };
                let value = pages as f64 * PAGE / MIB;
                match refs
                    .iter_mut()
                    .find(|r| r.label == label && r.steps.1 + 1 == i && r.value == value)
                {
                    Some(r) => r.steps.1 = i,
                    None => refs.push(RefLine {
                        label,
                        value,
                        steps: (i, i),
                        color: match nodes {
                            1 => RefColor::Of(Whose::Fixed(watermark_color(mark))),
                            _ => RefColor::Series(n as usize),
                        },
                    }),
                }
            }
        }
    }
}

/// Node `n`'s `mark` watermark, in pages, summed over its zones.
fn zone_pages(sample: &BTreeMap<String, u64>, n: u32, mark: &str) -> u64 {
    sample
        .iter()
        .filter(|(k, _)| {
            k.strip_prefix(&format!("zoneinfo.{n}."))
                .is_some_and(|r| r.ends_with(&format!(".{mark}")))
        })
        .map(|(_, v)| *v)
        .sum()
}

/// The zones' min, low and high watermarks (summed over zones), before and after each step:
/// what a sysctl such as watermark_scale_factor did to them.
fn watermark_panel(ev: &Evaluation, data: &[StepData]) -> Panel {
    let mut p = panel(
        "The zone watermarks (all zones), before and after each step",
        "MiB",
    );
    let sum = |sample: &BTreeMap<String, u64>, mark: &str| -> Option<f64> {
        let pages: u64 = sample
            .iter()
            .filter(|(k, _)| k.starts_with("zoneinfo.") && k.ends_with(&format!(".{mark}")))
            .map(|(_, v)| *v)
            .sum();
        (pages > 0).then(|| pages as f64 * PAGE / MIB)
    };
    for mark in ["high", "low", "min"] {
        let mut points = Vec::new();
        for (i, s) in data.iter().enumerate() {
            let after = ev.sampled.get(&format!("after:{}", s.name));
            if let (Some(b), Some(a)) = (
                s.before.and_then(|b| sum(b, mark)),
                after.and_then(|a| sum(a, mark)),
            ) {
                points.push((i, 0.0, b));
                points.push((i, s.secs, a));
            }
        }
        if !points.is_empty() {
            p.series.push(Series {
                label: format!("{mark} watermark"),
                counter: format!("zoneinfo.*.{mark}"),
                points,
                ends_only: true,
                whose: Whose::Fixed(watermark_color(mark)),
            });
        }
    }
    p
}

/// The free-memory panel again, zoomed in on the watermarks, when free memory came near them:
/// where kswapd wakes (low) and stops (high) becomes visible. Its axis runs from 0 to a bit
/// above the highest watermark in force; when a step changed them by far (a raised
/// watermark_scale_factor), one panel per level, so that the smaller gaps stay readable too.
fn zoomed(free: &Panel) -> Vec<Panel> {
    let marks: Vec<&RefLine> = free
        .refs
        .iter()
        .filter(|r| r.label.contains("watermark"))
        .collect();
    let lowest = free
        .series
        .iter()
        .flat_map(|s| &s.points)
        .map(|p| p.2)
        .fold(f64::MAX, f64::min);
    let mut panels = Vec::new();
    for top in watermark_levels(&marks) {
        let top = crate::timeline::nice_max(top * 1.25);
        if top <= 0.0 || lowest > top * 3.0 {
            continue;
        }
        let mut p = free.clone();
        p.title = format!(
            "Free memory near the watermarks (zoomed in, 0-{} MiB): kswapd wakes below low, sleeps above high",
            crate::timeline::fmt_num(top)
        );
        p.refs.retain(|r| r.label.contains("watermark"));
        p.y_max = Some(top);
        p.clip = true;
        panels.push(p);
    }
    panels
}

/// The highest watermark in force at each step, grouped into levels (a level more than twice
/// the one below it starts a new one), each the highest of its group.
fn watermark_levels(marks: &[&RefLine]) -> Vec<f64> {
    let last = marks.iter().map(|r| r.steps.1).max().unwrap_or(0);
    let mut tops: Vec<f64> = (0..=last)
        .filter_map(|i| {
            marks
                .iter()
                .filter(|r| r.steps.0 <= i && i <= r.steps.1)
                .map(|r| r.value)
                .reduce(f64::max)
        })
        .collect();
    tops.sort_by(f64::total_cmp);
    let mut levels: Vec<(f64, f64)> = Vec::new();
    for t in tops {
        match levels.last_mut() {
            Some((first, top)) if t <= *first * 2.0 => *top = t,
            _ => levels.push((t, t)),
        }
    }
    levels.into_iter().map(|(_, top)| top).collect()
}

/// A mark at the end of a step whose workload failed (`reclaim: exited 2`: a lab may check
/// that it does) or was killed otherwise than by an OOM kill the chart marks already.
fn exit_marks(ev: &Evaluation, data: &[StepData]) -> Vec<Mark> {
    let oom = oom_marks(ev, data);
    let mut marks = Vec::new();
    for (i, s) in data.iter().enumerate() {
        let failed = match ev.exits.get(&s.name) {
            Some(e @ Exit::Exited { code }) if *code != 0 => Some(e),
            Some(e @ Exit::Signaled { .. }) if !oom.iter().any(|m| m.0 == i) => Some(e),
            _ => None,
        };
        if let Some(e) = failed {
            marks.push((i, s.secs, format!("{}: {e}", s.name)));
        }
    }
    marks
}

/// A mark where the OOM killer struck: the first sample after vmstat.oom_kill went up,
/// labelled with the victims the console names for that step.
fn oom_marks(ev: &Evaluation, data: &[StepData]) -> Vec<Mark> {
    let mut marks = Vec::new();
    for (i, s) in data.iter().enumerate() {
        let mut prev = s.before.and_then(|b| b.get("vmstat.oom_kill")).copied();
        for (t, values) in &s.rows {
            let Some(now) = values.get("vmstat.oom_kill").copied() else {
                continue;
            };
            if prev.is_some_and(|p| now > p) {
                let victims: Vec<String> = ev
                    .oom_kills
                    .iter()
                    .filter(|k| k.during.as_deref() == Some(s.name.as_str()))
                    .map(|k| k.comm.clone())
                    .collect();
                let label = match victims.is_empty() {
                    true => "OOM kill".to_string(),
                    false => format!("OOM kill: {}", victims.join(", ")),
                };
                if !marks.iter().any(|m: &Mark| m.0 == i) {
                    marks.push((i, *t, label));
                }
            }
            prev = Some(now);
        }
    }
    marks
}

fn spans(ev: &Evaluation, data: &[StepData]) -> Vec<Span> {
    let mut out = Vec::new();
    for span in ev.spans() {
        // The step whose time contains the span's start.
        let (a, b) = (span.start_ms, span.end_ms);
        let hit = data.iter().enumerate().find_map(|(i, s)| {
            let start = ev.step_starts.iter().find(|st| st.step == s.name)?.t_ms;
            let end = start + (s.secs * 1000.0) as u64;
            (a >= start && a <= end).then_some((i, start))
        });
        if let Some((i, start)) = hit {
            let secs = |ms: u64| ms.saturating_sub(start) as f64 / 1000.0;
            out.push((i, secs(a), secs(b).min(data[i].secs), span.who.clone()));
        }
    }
    out
}

/// A compact terminal chart of one step: one sparkline per counter that moved, drawn over
/// even time from the step's start to its final sample, with its first and last values.
pub fn sparklines(spec: &LabSpec, ev: &Evaluation, step: &str, width: usize) -> String {
    let chart = build(spec, ev);
    let Some(i) = chart.steps.iter().position(|s| s.name == step) else {
        return String::new();
    };
    let secs = chart.steps[i].secs;
    let samples = ev.sampling.get(step).copied().unwrap_or((0, 0));
    if samples.0 < 3 {
        return String::new();
    }
    let columns = (width.saturating_sub(70)).clamp(16, 48);
    let mut out = format!(
        "  timeline: {} samples over {:.2}s (sampling took {}):\n",
        samples.0,
        secs,
        units::micros(samples.1)
    );
    let mut seen = Vec::new();
    for p in chart
        .panels
        .iter()
        .filter(|p| !p.title.starts_with("What each group"))
    {
        // (A series read only at the step's start and end has no shape to show.)
        for s in p.series.iter().filter(|s| !s.ends_only) {
            if seen.contains(&s.counter) {
                continue;
            }
            let pts: Vec<(f64, f64)> = s
                .points
                .iter()
                .filter(|q| q.0 == i)
                .map(|q| (q.1, q.2))
                .collect();
            let (Some(first), Some(last)) = (pts.first(), pts.last()) else {
                continue;
            };
            let lo = pts.iter().map(|p| p.1).fold(f64::MAX, f64::min);
            let hi = pts.iter().map(|p| p.1).fold(f64::MIN, f64::max);
            if hi - lo <= 0.0 {
                continue;
            }
            seen.push(s.counter.clone());
            let fmt = |v: f64| value_words(&p.unit, v);
            let _ = std::fmt::Write::write_fmt(
                &mut out,
                format_args!(
                    "    {:<44} {} {} → {}\n",
                    truncate(&s.label, 44),
                    sparkline(&resample(&pts, secs, columns)),
                    fmt(first.1),
                    fmt(last.1)
                ),
            );
        }
    }
    out
}

fn value_words(unit: &str, v: f64) -> String {
    match unit {
        "MiB" => units::bytes((v * MIB) as u64),
        "pages" => units::human(v.max(0.0) as u64, Unit::Pages),
        "ms" => units::micros((v * 1000.0).max(0.0) as u64),
        _ => format!("{v:.0}"),
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use guest::event::{Event, Exit};

    fn spec() -> LabSpec {
        crate::lab::parse_spec(
            "id = \"t\"\ntitle = \"T\"\n[vm]\nmemory = \"256M\"\n[[cgroup]]\nname = \"W\"\nmemory_max = \"32M\"\n[[step]]\nkind = \"read-file\"\nname = \"read\"\ncgroup = \"W\"\nsize = \"48M\"\n[[expect]]\nstep = \"read\"\ncounter = \"vmstat.pgscan_kswapd\"\ndelta = \"== 0\"\nwhy = \"w\"\n",
            "t",
        )
        .unwrap()
    }

    /// A read step: W fills to its limit and its task scans; the final sample sees all of it.
    fn eval() -> Evaluation {
        let keys: Vec<String> = [
            "W/memory.current",
            "W/memory.stat.pgscan_direct",
            "meminfo.MemFree",
            "vmstat.oom_kill",
            "vmstat.pgscan_kswapd",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mib = 1u64 << 20;
        let rows: Vec<(u64, Vec<u64>)> = (0..=10)
            .map(|i| {
                let used = (i * 5 * mib).min(32 * mib);
                let scanned = if i > 6 { (i - 6) * 1000 } else { 0 };
                (200 + i * 40, vec![used, scanned, 200 * mib - used, 0, 7])
            })
            .collect();
        let mut start = BTreeMap::new();
        start.insert("meminfo.MemTotal".to_string(), 240 * mib);
        start.insert("zoneinfo.0.DMA32.low".to_string(), 1000);
        start.insert("zoneinfo.0.DMA.low".to_string(), 24);
        start.insert("W/memory.stat.pgscan_direct".to_string(), 0);
        start.insert("vmstat.pgscan_kswapd".to_string(), 7);
        let events = vec![
            Event::Hello {
                kernel: "6.12".into(),
            },
            Event::Sample {
                label: "start".into(),
                values: start.clone(),
            },
            Event::StepStart {
                step: "read".into(),
            },
            Event::Ticks {
                step: "read".into(),
                keys,
                rows,
                cost_us: 1234,
            },
            Event::StepEnd {
                step: "read".into(),
                exit: Exit::Exited { code: 0 },
                wall_ms: 400,
                stderr: String::new(),
                stdout: String::new(),
            },
            Event::Sample {
                label: "after:read".into(),
                values: start,
            },
            Event::End { frames: 6 },
        ];
        crate::report::evaluate(&spec(), &crate::report::tests::stream_of(events))
    }

    #[test]
    fn panels_tell_the_story_with_limits_watermarks_and_ram() {
        let c = build(&spec(), &eval());
        let titles: Vec<&str> = c.panels.iter().map(|p| p.title.as_str()).collect();
        assert_eq!(titles[0], "Memory each group uses, against its limits");
        let mem = &c.panels[0];
        assert_eq!(mem.refs[0].label, "W: memory.max 32M");
        assert_eq!(mem.refs[0].value, 32.0);
        let free = c
            .panels
            .iter()
            .find(|p| p.title.starts_with("Free memory"))
            .unwrap();
        assert_eq!(free.y_max, Some(240.0));
        let low = free
            .refs
            .iter()
            .find(|r| r.label.starts_with("low"))
            .unwrap();
        assert!((low.value - 1024.0 * 4096.0 / MIB).abs() < 1e-9, "{low:?}");
        // Who reclaims: W's scanning ends at the step's real total; kswapd, which the lab
        // expects to stay at 0, is drawn flat.
        let who = c
            .panels
            .iter()
            .find(|p| p.title.starts_with("Who reclaims"))
            .unwrap();
        let w = who
            .series
            .iter()
            .find(|s| s.counter == "W/memory.stat.pgscan_direct")
            .unwrap();
        assert_eq!(w.points.last().unwrap().2, 4000.0);
        let k = who
            .series
            .iter()
            .find(|s| s.counter == "vmstat.pgscan_kswapd")
            .unwrap();
        assert!(k.points.iter().all(|p| p.2 == 0.0));
        assert_eq!(c.steps[0].secs, 0.4);
        let svg = crate::timeline::svg(&c);
        roxmltree::Document::parse(&svg).unwrap();
    }

    /// A watermark has one colour wherever it is drawn: as the free-memory panel's reference
    /// line and as its own line in the watermark panel (lab 7).
    #[test]
    fn a_watermark_has_one_colour_in_every_panel() {
        let (c, ev) = (build(&spec(), &eval()), eval());
        let free = (c.panels.iter())
            .find(|p| p.title.starts_with("Free memory"))
            .unwrap();
        let low_ref = free
            .refs
            .iter()
            .find(|r| r.label.starts_with("low"))
            .unwrap();
        let wm = watermark_panel(&ev, &steps(&ev));
        let low_line = wm
            .series
            .iter()
            .find(|s| s.label == "low watermark")
            .unwrap();
        let (a, b) = (RefColor::Of(low_line.whose.clone()), &low_ref.color);
        assert_eq!(&a, b);
        assert_eq!(c.color(&low_line.whose), "#e08000");
    }

    #[test]
    fn the_zoom_reaches_just_above_each_level_of_watermarks() {
        let mark = |label: &str, value: f64, steps: (usize, usize)| RefLine {
            label: format!("{label} watermark (all zones)"),
            value,
            steps,
            color: RefColor::Grey,
        };
        let mut free = panel("free", "MiB");
        free.series.push(Series {
            label: "free".into(),
            counter: "meminfo.MemFree".into(),
            points: vec![(0, 0.0, 200.0), (1, 0.0, 4.0), (3, 0.0, 40.0)],
            ends_only: false,
            whose: Whose::Machine,
        });
        // Default watermarks (min 2, low 3, high 4.5 MiB) in steps 0-1, raised ones from step 2.
        free.refs = vec![
            mark("min", 2.0, (0, 3)),
            mark("low", 3.0, (0, 1)),
            mark("high", 4.5, (0, 1)),
            mark("low", 28.0, (2, 3)),
            mark("high", 54.0, (2, 3)),
        ];
        let tops: Vec<Option<f64>> = zoomed(&free).iter().map(|p| p.y_max).collect();
        assert_eq!(tops, [Some(6.0), Some(80.0)]);
        // Free memory never near them: no zoom.
        free.series[0].points = vec![(0, 0.0, 250.0)];
        assert!(zoomed(&free).is_empty());
    }

    #[test]
    fn a_variants_chart_names_its_exercise_or_settings_in_the_title() {
        let sets = BTreeMap::from([("reclaim_size".to_string(), "8M".to_string())]);
        let name = |exercise| RunName {
            exercise,
            sets: &sets,
        };
        let c = of_run(&spec(), &eval(), name(None));
        assert!(
            c.title.ends_with("(variant: --set reclaim_size=8M)"),
            "{}",
            c.title
        );
        assert!(crate::timeline::svg(&c).contains("variant: --set reclaim_size=8M"));
        let c = of_run(&spec(), &eval(), name(Some("small-reclaim")));
        assert!(
            c.title
                .ends_with("(exercise small-reclaim: --set reclaim_size=8M)"),
            "{}",
            c.title
        );
        let none = BTreeMap::new();
        let plain = RunName {
            exercise: None,
            sets: &none,
        };
        assert_eq!(
            of_run(&spec(), &eval(), plain).title,
            build(&spec(), &eval()).title
        );
    }

    /// One step of `spec` with timeline rows of `keys` (one row per 40 ms), from zero.
    fn eval_of(spec: &LabSpec, keys: &[&str], rows: Vec<Vec<u64>>) -> Evaluation {
        eval_with(spec, keys, rows, &[])
    }

    /// The same, with counters the timeline does not read: (name, before, after the step).
    fn eval_with(
        spec: &LabSpec,
        keys: &[&str],
        rows: Vec<Vec<u64>>,
        sampled: &[(&str, u64, u64)],
    ) -> Evaluation {
        let step = spec.steps[0].name().to_string();
        let mut start: BTreeMap<String, u64> = keys.iter().map(|k| (k.to_string(), 0)).collect();
        let mut after: BTreeMap<String, u64> = keys
            .iter()
            .zip(rows.last().cloned().unwrap_or_default())
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        for (k, a, b) in sampled {
            start.insert(k.to_string(), *a);
            after.insert(k.to_string(), *b);
        }
        let rows: Vec<(u64, Vec<u64>)> = (rows.into_iter().enumerate())
            .map(|(i, r)| (200 + 40 * i as u64, r))
            .collect();
        let events = vec![
            Event::Sample {
                label: "start".into(),
                values: start.clone(),
            },
            Event::StepStart { step: step.clone() },
            Event::Ticks {
                step: step.clone(),
                keys: keys.iter().map(|k| k.to_string()).collect(),
                rows,
                cost_us: 10,
            },
            Event::StepEnd {
                step: step.clone(),
                exit: Exit::Exited { code: 0 },
                wall_ms: 200,
                stderr: String::new(),
                stdout: String::new(),
            },
            Event::Sample {
                label: format!("after:{step}"),
                values: after,
            },
            Event::End { frames: 6 },
        ];
        crate::report::evaluate(spec, &crate::report::tests::stream_of(events))
    }

    fn labels(c: &Chart, title: &str) -> Vec<String> {
        let p = c.panels.iter().find(|p| p.title.starts_with(title));
        p.map(|p| p.series.iter().map(|s| s.label.clone()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn a_parents_own_limit_hits_beside_its_subtrees_and_a_childs_asked_about_at_zero() {
        let spec = crate::lab::parse_spec(
            "id = \"t\"\ntitle = \"T\"\n[vm]\nmemory = \"256M\"\n[[cgroup]]\nname = \"pod\"\nmemory_max = \"64M\"\n[[cgroup]]\nname = \"pod/app\"\n[[step]]\nkind = \"read-file\"\nname = \"read\"\ncgroup = \"pod/app\"\nsize = \"80M\"\n[[expect]]\nstep = \"read\"\ncounter = \"pod/app/memory.events.local.max\"\ndelta = \"== 0\"\nwhy = \"w\"\n",
            "t",
        )
        .unwrap();
        let keys = [
            "pod/memory.events.max",
            "pod/memory.events.local.max",
            "pod/app/memory.events.max",
        ];
        let rows = (0..5).map(|i| vec![i * 3, i * 3, 0]).collect();
        let c = build(&spec, &eval_of(&spec, &keys, rows));
        assert_eq!(
            labels(&c, "Times each group hit its limit"),
            [
                "pod: at its own memory.max",
                "pod: at memory.max, its own or a child's",
                "pod/app: at memory.max (0 throughout)",
            ]
        );
    }

    #[test]
    fn a_cgroup_v1_groups_failed_charges_in_a_panel_of_their_own() {
        let spec = crate::lab::parse_spec(
            "id = \"t\"\ntitle = \"T\"\n[vm]\nmemory = \"256M\"\n[[cgroup]]\nname = \"V\"\nmemory_max = \"32M\"\nv1 = {}\n[[cgroup]]\nname = \"B\"\nmemory_max = \"32M\"\n[[step]]\nkind = \"anon\"\nname = \"a\"\ncgroup = \"V\"\nsize = \"48M\"\n",
            "t",
        )
        .unwrap();
        let keys = ["V/memory.failcnt", "B/memory.events.max"];
        let rows = (0..5).map(|i| vec![1000 * i, i]).collect();
        let c = build(&spec, &eval_of(&spec, &keys, rows));
        assert_eq!(labels(&c, "Charges that failed"), ["V: at its limit"]);
        assert_eq!(labels(&c, "Times each group hit"), ["B: at memory.max"]);
    }

    #[test]
    fn zswap_shows_what_went_to_ram_compressed_and_what_went_to_the_device() {
        let spec = crate::lab::parse_spec(
            "id = \"t\"\ntitle = \"T\"\n[vm]\nmemory = \"256M\"\nswap = { kind = \"disk\", size = \"256M\" }\nzswap = true\n[[cgroup]]\nname = \"Z\"\n[[step]]\nkind = \"anon\"\nname = \"a\"\ncgroup = \"Z\"\nsize = \"64M\"\n[[expect]]\nstep = \"a\"\ncounter = \"Z/memory.stat.zswpout\"\ndelta = \"> 0\"\nwhy = \"w\"\n",
            "t",
        )
        .unwrap();
        let keys = [
            "Z/memory.stat.anon",
            "Z/memory.stat.zswapped",
            "Z/memory.stat.zswap",
            "vmstat.zswpout",
            "vmstat.pswpout",
        ];
        let mib = 1 << 20;
        let rows = (0..5)
            .map(|i| vec![(32 - 4 * i) * mib, 12 * i * mib, 3 * i * mib, 3000 * i, 0])
            .collect();
        let c = build(&spec, &eval_of(&spec, &keys, rows));
        assert_eq!(
            labels(&c, "What each group holds"),
            [
                "Z: anonymous",
                "Z: in zswap, uncompressed size",
                "Z: zswap's compressed copies (in RAM)",
            ]
        );
        assert!(c.panels.iter().any(|p| p.title.ends_with("tmpfs, zswap")));
        assert_eq!(
            labels(&c, "Swap:"),
            [
                "compressed into zswap (kept in RAM)",
                "written to the swap device (0 throughout)",
            ]
        );
    }

    #[test]
    fn the_lists_moves_get_a_panel_when_the_lab_is_about_them() {
        let toml = "id = \"t\"\ntitle = \"T\"\n[vm]\nmemory = \"256M\"\n[[step]]\nkind = \"anon\"\nname = \"a\"\nsize = \"64M\"\n[[expect]]\nstep = \"a\"\ncounter = \"vmstat.pgdeactivate\"\ndelta = \"> 0\"\nwhy = \"w\"\n";
        let spec = crate::lab::parse_spec(toml, "t").unwrap();
        let keys = ["vmstat.pgactivate", "vmstat.pgdeactivate"];
        let rows = (0..5).map(|i| vec![0, 700 * i]).collect();
        let c = build(&spec, &eval_of(&spec, &keys, rows));
        assert_eq!(
            labels(&c, "Pages moved between the active and inactive lists"),
            [
                "activated (pgactivate) (0 throughout)",
                "deactivated (pgdeactivate)"
            ]
        );
        // A lab that does not mention them: no panel.
        let other = crate::lab::parse_spec(
            &toml.replace("vmstat.pgdeactivate", "vmstat.pgscan_kswapd"),
            "t",
        )
        .unwrap();
        let c = build(
            &other,
            &eval_of(&other, &keys, (0..5).map(|i| vec![i, i]).collect()),
        );
        assert!(!c.panels.iter().any(|p| p.title.starts_with("Pages moved")));
    }

    /// A lab of one step in W whose headline checks `counters` (`name: counter`, `> 0`).
    fn headline_lab(counters: &[&str]) -> LabSpec {
        let mut toml = "id = \"t\"\ntitle = \"T\"\n[vars]\nsize = { default = \"64M\", help = \"h\" }\n[vm]\nmemory = \"256M\"\n[[cgroup]]\nname = \"W\"\nmemory_max = \"32M\"\n[[step]]\nkind = \"anon\"\nname = \"a\"\ncgroup = \"W\"\nsize = \"${size}\"\n".to_string();
        for (i, c) in counters.iter().enumerate() {
            toml += &format!(
                "[[expect]]\nname = \"e{i}\"\nstep = \"a\"\ncounter = \"{c}\"\ndelta = \">= 0\"\nwhy = \"w\"\n"
            );
        }
        let names: Vec<String> = (0..counters.len()).map(|i| format!("\"e{i}\"")).collect();
        toml += &format!(
            "[[headline]]\nclaim = \"It differs.\"\nexpect = [{}]\ncontrast = \"x\"\n[[exercise]]\nname = \"x\"\nset = {{ size = \"8M\" }}\nask = \"a\"\nanswer = \"b\"\nshows = [\"a: exit == exited 0\"]\nfails = [\"e0\"]\n",
            names.join(", ")
        );
        crate::lab::parse_spec(&toml, "t").unwrap()
    }

    #[test]
    fn a_headlines_counters_get_a_panel_per_unit_when_the_others_leave_one_out() {
        let spec = headline_lab(&[
            "W/memory.events.oom",
            "W/memory.events.oom_kill",
            "W/memory.events.max",
            "W/memory.stat.pgscan_direct",
            "trace.W.memcg_reclaim.episodes",
        ]);
        let keys = [
            "W/memory.events.max",
            "W/memory.events.oom",
            "W/memory.events.oom_kill",
            "W/memory.stat.pgscan_direct",
        ];
        let rows = (0..5).map(|i| vec![6 * i, i / 4, i / 4, 0]).collect();
        let c = build(&spec, &eval_of(&spec, &keys, rows));
        // oom and oom_kill apart; the max events are drawn with the limit hits, the pages
        // scanned in "who reclaims", the trace as bars: each counter once.
        assert_eq!(
            labels(&c, "The lab checks: It differs."),
            ["W: memory.events oom", "W: memory.events oom_kill"]
        );
        let mut counters: Vec<&str> = (c.panels.iter())
            .flat_map(|p| p.series.iter().map(|s| s.counter.as_str()))
            .collect();
        let n = counters.len();
        counters.sort();
        counters.dedup();
        assert_eq!(counters.len(), n, "{counters:?}");
        let checked = c
            .panels
            .iter()
            .filter(|p| p.title.starts_with("The lab checks"));
        assert_eq!(
            checked.map(|p| p.unit.as_str()).collect::<Vec<_>>(),
            ["events"]
        );
        // Every counter drawn elsewhere: no panel.
        let spec = headline_lab(&["W/memory.events.max", "W/memory.stat.pgscan_direct"]);
        let rows = (0..5).map(|i| vec![6 * i, 0, 0, 0]).collect();
        let c = build(&spec, &eval_of(&spec, &keys, rows));
        assert!(
            !c.panels
                .iter()
                .any(|p| p.title.starts_with("The lab checks"))
        );
    }

    #[test]
    fn a_line_is_its_groups_its_nodes_or_the_machines() {
        assert_eq!(
            owner_of("pod/app/memory.current").as_deref(),
            Some("pod/app")
        );
        assert_eq!(owner_of("node1.meminfo.MemFree").as_deref(), Some("node 1"));
        assert_eq!(owner_of("kswapd.1.cpu_ticks").as_deref(), Some("node 1"));
        assert_eq!(owner_of("vmstat.pgscan_anon - vmstat.pgscan_kswapd"), None);
        let some = ["pod".to_string(), "pod/app".into(), "node 1".into()];
        assert_eq!(
            owner_of_who(&some, "pod/app memcg reclaim"),
            Some("pod/app")
        );
        assert_eq!(owner_of_who(&some, "kswapd1 awake"), Some("node 1"));
        assert_eq!(owner_of_who(&some, "init-1 direct reclaim"), None);
        // A guest of one node: its lines are the machine's.
        assert_eq!(owners(&spec()), ["W"]);
    }

    #[test]
    fn a_headlines_panels_in_two_units_are_titled_apart() {
        let spec = headline_lab(&["W/memory.events.oom_kill", "W/memory.stat.pgsteal_direct"]);
        let keys = ["W/memory.events.oom_kill", "W/memory.stat.pgsteal_direct"];
        let rows = (0..5).map(|i| vec![i / 4, 100 * i]).collect();
        let c = build(&spec, &eval_of(&spec, &keys, rows));
        let titles: Vec<&str> = (c.panels.iter())
            .map(|p| p.title.as_str())
            .filter(|t| t.starts_with("The lab checks"))
            .collect();
        assert_eq!(
            titles,
            [
                "The lab checks, in events: It differs.",
                "The lab checks, in pages: It differs."
            ]
        );
    }

    #[test]
    fn psi_the_lab_checks_is_drawn_from_the_steps_start_and_end_beside_the_trace() {
        let spec = headline_lab(&["W/memory.pressure.some.total"]);
        let keys = ["W/memory.current"];
        let rows = (0..5).map(|i| vec![i << 20]).collect();
        let psi = [("W/memory.pressure.some.total", 1000, 61_000)];
        let c = build(&spec, &eval_with(&spec, &keys, rows, &psi));
        let stall = c
            .panels
            .iter()
            .find(|p| p.title == "Time tasks were stalled on memory since the step began (PSI)")
            .unwrap();
        let s = &stall.series[0];
        assert_eq!(s.label, "W: PSI some (read at the step's start and end)");
        assert!(s.ends_only);
        assert_eq!(s.points, [(0, 0.0, 0.0), (0, c.steps[0].secs, 60.0)]);
        // Drawn there, not again as a checked counter.
        assert!(
            !c.panels
                .iter()
                .any(|p| p.title.starts_with("The lab checks"))
        );
        let svg = crate::timeline::svg(&c);
        assert_eq!(svg.matches("<circle class=\"end-sample\"").count(), 2);
        roxmltree::Document::parse(&svg).unwrap();
    }

    #[test]
    fn a_cgroup_v1_groups_reclaim_is_vmstats_cgroup_reclaim_in_its_own_steps() {
        let spec = crate::lab::parse_spec(
            "id = \"t\"\ntitle = \"T\"\n[vm]\nmemory = \"256M\"\n[[cgroup]]\nname = \"V\"\nmemory_max = \"32M\"\nv1 = {}\n[[cgroup]]\nname = \"B\"\nmemory_max = \"32M\"\n[[step]]\nkind = \"anon\"\nname = \"a\"\ncgroup = \"V\"\nsize = \"48M\"\n",
            "t",
        )
        .unwrap();
        let keys = [
            "vmstat.pgscan_anon",
            "vmstat.pgscan_file",
            "vmstat.pgscan_kswapd",
            "vmstat.pgscan_direct",
            "B/memory.stat.pgscan_direct",
        ];
        // kswapd scans 10 a row, V's task 100 anonymous and 5 file pages.
        let rows = (0..5)
            .map(|i| vec![100 * i, 15 * i, 10 * i, 0, 0])
            .collect();
        let c = build(&spec, &eval_of(&spec, &keys, rows));
        let who = c
            .panels
            .iter()
            .find(|p| p.title.starts_with("Who reclaims"))
            .unwrap();
        let v = who
            .series
            .iter()
            .find(|s| s.label.starts_with("V's pages"))
            .unwrap();
        assert_eq!(
            v.label,
            "V's pages, scanned by its task (cgroup v1: from /proc/vmstat)"
        );
        assert_eq!(v.points.last().unwrap().2, 420.0);
        assert_eq!(
            labels(&c, "Who reclaims"),
            [
                "kswapd (whole machine)",
                "anonymous pages, by any reclaim",
                "file pages, by any reclaim",
                "V's pages, scanned by its task (cgroup v1: from /proc/vmstat)",
            ]
        );
    }

    #[test]
    fn many_groups_scans_get_a_panel_of_their_own_without_a_parents_sums() {
        let mut toml =
            "id = \"t\"\ntitle = \"T\"\n[vm]\nmemory = \"256M\"\n[[cgroup]]\nname = \"pods\"\n"
                .to_string();
        for c in ["A", "B", "C"] {
            toml += &format!("[[cgroup]]\nname = \"pods/{c}\"\n");
        }
        toml += "[[step]]\nkind = \"anon\"\nname = \"a\"\nsize = \"64M\"\n[[expect]]\nstep = \"a\"\ncounter = \"pods/A/memory.stat.pgscan_kswapd\"\ndelta = \"== 0\"\nwhy = \"w\"\n";
        let spec = crate::lab::parse_spec(&toml, "t").unwrap();
        let mut keys = vec!["vmstat.pgscan_kswapd".to_string()];
        for c in ["pods", "pods/A", "pods/B", "pods/C"] {
            for k in ["pgscan_direct", "pgscan_kswapd"] {
                keys.push(format!("{c}/memory.stat.{k}"));
            }
        }
        let keys: Vec<&str> = keys.iter().map(|k| k.as_str()).collect();
        let rows = (0..5).map(|i| (1..10).map(|k| i * k).collect()).collect();
        let c = build(&spec, &eval_of(&spec, &keys, rows));
        assert_eq!(
            labels(&c, "Who reclaims, machine-wide"),
            ["kswapd (whole machine)"]
        );
        assert_eq!(
            labels(&c, "Whose pages were scanned"),
            [
                "pods/A's pages, scanned by tasks",
                "pods/A's pages, scanned by kswapd",
                "pods/B's pages, scanned by tasks",
                "pods/B's pages, scanned by kswapd",
                "pods/C's pages, scanned by tasks",
                "pods/C's pages, scanned by kswapd",
            ]
        );
    }

    #[test]
    fn a_group_keeps_its_colour_in_every_panel() {
        let spec = crate::lab::parse_spec(
            "id = \"t\"\ntitle = \"T\"\n[vm]\nmemory = \"256M\"\n[[cgroup]]\nname = \"V\"\nmemory_max = \"32M\"\n[[cgroup]]\nname = \"W\"\nmemory_max = \"32M\"\n[[step]]\nkind = \"anon\"\nname = \"a\"\ncgroup = \"W\"\nsize = \"48M\"\n",
            "t",
        )
        .unwrap();
        // Only W moves: in the memory panel it is the first line, in the limit hits the only one.
        let keys = [
            "V/memory.current",
            "W/memory.current",
            "W/memory.stat.anon",
            "W/memory.stat.file",
            "W/memory.events.max",
            "W/memory.stat.pgscan_direct",
            "vmstat.pgscan_kswapd",
        ];
        let mib = 1 << 20;
        let rows = (0..5)
            .map(|i| vec![0, 8 * i * mib, 6 * i * mib, 2 * i * mib, i, 50 * i, 9 * i])
            .collect();
        let c = build(&spec, &eval_of(&spec, &keys, rows));
        let svg = crate::timeline::svg(&c);
        let strokes = |prefix: &str| -> Vec<String> {
            (svg.lines())
                .filter(|l| l.contains(&format!("data-counter=\"{prefix}")))
                .map(|l| l.split(" stroke=\"").nth(1).unwrap()[..7].to_string())
                .collect()
        };
        let (w, v, machine) = (strokes("W/"), strokes("V/"), strokes("vmstat."));
        assert!(w.len() >= 5, "{w:?}");
        assert!(w.iter().all(|s| *s == w[0]), "{w:?}");
        assert!(!v.is_empty() && !machine.is_empty());
        assert!(
            v.iter().chain(&machine).all(|s| *s != w[0]),
            "{v:?} {machine:?}"
        );
        assert_eq!(w[0], c.color(&Whose::Owner("W".into())));
    }

    #[test]
    fn sparklines_end_at_the_final_sample() {
        let text = sparklines(&spec(), &eval(), "read", 100);
        assert!(
            text.contains("11 samples over 0.40s (sampling took 1.2 ms)"),
            "{text}"
        );
        assert!(text.contains("W: memory in use"), "{text}");
        assert!(text.contains("0 B → 32.0 MiB"), "{text}");
        assert!(text.contains("0 pages → 4000 pages (15.6 MiB)"), "{text}");
    }
}
