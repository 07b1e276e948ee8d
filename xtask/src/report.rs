//! Turning a result stream into facts: per-step deltas, their classes, expectation verdicts,
//! the student's report (numbers beside classes) and the normalised snapshot (classes only).

use guest::event::{Event, Exit, Stream};
use guest::exercise::Explanation;
use guest::fact::{StepView, delta};
use guest::spec::{ClassRule, CounterExpr, Expect, LabSpec, Want};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use crate::{timeline, trace};

/// One counter over one step.
#[derive(Debug, Clone)]
pub struct Observed {
    pub counter: CounterExpr,
    pub rule: ClassRule,
    /// The change across the step, or the counter the kernel did not report.
    pub delta: Result<i64, String>,
    /// What this counter's class means, from the spec's `explain` (for the student).
    pub explain: Option<String>,
    /// Declared in `[[observe]]` (a counter the lab is about), not only by an expectation.
    pub declared: bool,
}

#[derive(Debug, Clone)]
pub struct StepResult {
    pub name: String,
    pub describe: String,
    pub exit: Option<Exit>,
    pub wall_ms: u64,
    pub stderr: String,
    pub observed: Vec<Observed>,
}

#[derive(Debug, Clone)]
pub struct Verdict {
    pub expect: Expect,
    /// What was judged, e.g. `W/memory.stat.pgscan_direct delta > 0 [step read]`.
    pub what: String,
    /// What was found, e.g. `16834` or `not reported by this kernel: vmstat.x`.
    pub actual: String,
    pub pass: bool,
    /// False when the expectation is for other kernel versions (`kernel = ">= 6.12"`): shown
    /// as n/a, counted as neither pass nor fail.
    pub applies: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Evaluation {
    pub kernel: Option<String>,
    pub ready_ms: Option<u64>,
    pub end_ms: Option<u64>,
    pub steps: Vec<StepResult>,
    pub verdicts: Vec<Verdict>,
    /// Errors the agent reported and samples that are missing: the run is not valid.
    pub problems: Vec<String>,
    /// How many counter samples arrived (0: nothing to report on).
    pub samples: usize,
    /// Timeline ticks: (guest uptime ms, step, counters).
    pub timeline: Vec<(u64, String, BTreeMap<String, u64>)>,
    /// When each step started (guest uptime ms).
    pub step_starts: Vec<(u64, String)>,
    /// Per traced step: its trace facts (`trace.*` counters).
    pub traces: Vec<(String, BTreeMap<String, u64>)>,
    /// Per traced step: the report lines of its trace (per task, per node).
    pub trace_text: BTreeMap<String, String>,
    /// Per traced step: reclaim episodes and kswapd wake-ups as (start ms, end ms, who).
    pub trace_spans: Vec<(u64, u64, String)>,
    /// Every sample by label (`start`, `after:<step>`; trace facts merged into the latter).
    pub sampled: BTreeMap<String, BTreeMap<String, u64>>,
    /// How each finished step's workload ended.
    pub exits: BTreeMap<String, Exit>,
    /// The spec's settings as run (`guest::fact::settings`), for facts that name them.
    pub settings: BTreeMap<String, String>,
}

static NO_SAMPLE: BTreeMap<String, u64> = BTreeMap::new();

impl Evaluation {
    pub fn passed(&self) -> bool {
        self.problems.is_empty() && self.verdicts.iter().all(|v| v.pass)
    }

    /// One step as facts see it (samples around it, its exit, the settings); `None`: the whole
    /// run, first to last sample. A sample that is missing reads as no counters at all.
    pub fn view(&self, step: Option<&str>) -> StepView<'_> {
        let names: Vec<&str> = self.steps.iter().map(|s| s.name.as_str()).collect();
        let label = |i: Option<usize>| match i {
            None => "start".to_string(),
            Some(i) => format!("after:{}", names[i]),
        };
        let (before, after) = match step.and_then(|s| names.iter().position(|n| *n == s)) {
            Some(i) => (label(i.checked_sub(1)), label(Some(i))),
            None => (label(None), label(names.len().checked_sub(1))),
        };
        let get = |l: &str| self.sampled.get(l).unwrap_or(&NO_SAMPLE);
        StepView {
            before: get(&before),
            after: get(&after),
            exit: step.and_then(|s| self.exits.get(s).copied()),
            settings: &self.settings,
        }
    }
}

/// What an expectation judges, as the report and the snapshot print it, e.g.
/// `Δ W/memory.stat.pgscan_direct > 0 [step read]`.
pub fn describe_expect(ex: &Expect) -> String {
    let scope = match &ex.step {
        Some(name) => format!("step {name}"),
        None => "whole run".to_string(),
    };
    let word = |p: bool| if p { "present" } else { "absent" };
    let mut what = match &ex.want {
        Want::Present { counter, present } => {
            format!("{counter} is {} [after {scope}]", word(*present))
        }
        Want::Delta { counter, delta } => format!("Δ {counter} {delta} [{scope}]"),
        Want::Value { counter, value } => format!("{counter} {value} [after {scope}]"),
        Want::Exit { exit } => format!("step {} {exit}", ex.step.as_deref().unwrap_or("")),
    };
    if let Some(k) = ex.kernel {
        what.push_str(&format!(" [kernel {k}]"));
    }
    what
}

/// The snapshot class of a change.
pub fn class(rule: ClassRule, delta: i64) -> Option<String> {
    match rule {
        ClassRule::Sign => Some(match delta.signum() {
            0 => "0".into(),
            1 => ">0".into(),
            _ => "<0".into(),
        }),
        ClassRule::Exact => Some(delta.to_string()),
        ClassRule::Shown => None,
    }
}

/// Evaluates a (possibly incomplete) stream against the spec. Pure: no I/O.
pub fn evaluate(spec: &LabSpec, stream: &Stream) -> Evaluation {
    let mut ev = Evaluation::default();
    let mut samples: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut ends: BTreeMap<String, (Exit, u64, String)> = BTreeMap::new();
    for f in &stream.frames {
        match &f.event {
            Event::Hello { kernel } => ev.kernel = Some(kernel.clone()),
            Event::Ready => ev.ready_ms = Some(f.t_ms),
            Event::Sample { label, values } => {
                ev.samples += 1;
                samples.insert(label.clone(), values.clone());
            }
            Event::StepEnd {
                step,
                exit,
                wall_ms,
                stderr,
                ..
            } => {
                ends.insert(step.clone(), (*exit, *wall_ms, stderr.clone()));
            }
            Event::Error { context, message } => {
                ev.problems.push(format!("agent: {context}: {message}"))
            }
            Event::End { .. } => ev.end_ms = Some(f.t_ms),
            // Judged by health.rs, beside the lab's own verdicts.
            Event::Health { .. } => {}
            Event::StepStart { step } => ev.step_starts.push((f.t_ms, step.clone())),
            Event::Trace {
                step,
                lines,
                workers,
            } => {
                let events: Vec<trace::TraceEvent> =
                    lines.iter().filter_map(|l| trace::parse_line(l)).collect();
                let summary = trace::summarize(&events);
                let cgroup_of: BTreeMap<u32, String> = workers
                    .iter()
                    .filter_map(|(pid, cg)| Some((pid.parse().ok()?, cg.clone())))
                    .collect();
                let mut facts = trace::facts(&summary, &cgroup_of);
                // Zeros for every group and node that did nothing: "no episode" is a fact too.
                let groups: Vec<&str> = spec.cgroups.iter().map(|c| c.name.as_str()).collect();
                for key in trace::zero_facts(&groups, spec.vm.numa_nodes) {
                    facts.entry(key).or_insert(0);
                }
                let ms = |us: u64| us / 1000;
                for (kind, map) in [
                    ("memcg reclaim", &summary.memcg),
                    ("direct reclaim", &summary.direct),
                ] {
                    for ((comm, pid), ep) in map {
                        let who = cgroup_of
                            .get(pid)
                            .map(|c| format!("{c} {kind}"))
                            .unwrap_or(format!("{comm}-{pid} {kind}"));
                        ev.trace_spans
                            .extend(ep.spans.iter().map(|(a, b)| (ms(*a), ms(*b), who.clone())));
                    }
                }
                for (nid, ep) in &summary.kswapd {
                    ev.trace_spans.extend(
                        ep.spans
                            .iter()
                            .map(|(a, b)| (ms(*a), ms(*b), format!("kswapd{nid} awake"))),
                    );
                }
                ev.trace_text
                    .insert(step.clone(), trace::render(&summary, &cgroup_of));
                ev.traces.push((step.clone(), facts));
            }
            Event::Tick { step, values } => {
                ev.timeline.push((f.t_ms, step.clone(), values.clone()))
            }
        }
    }
    for (step, facts) in &ev.traces {
        if let Some(after) = samples.get_mut(&format!("after:{step}")) {
            after.extend(facts.iter().map(|(k, v)| (k.clone(), *v)));
        }
    }
    // Observed counters: the spec's list at every step, then each expectation's counter not in
    // that list, at the expectation's own step only (at every step for a whole-run one): facts
    // nobody asked about at other steps stay out of the snapshot.
    type Explain = BTreeMap<String, Explanation>;
    let no_words = Explain::new();
    // (counter, rule, the steps it is observed at (none: every step), explanations)
    let mut observe: Vec<(CounterExpr, ClassRule, Vec<String>, &Explain)> = spec
        .observe
        .iter()
        .map(|o| (o.counter.clone(), o.class, o.steps.clone(), &o.explain))
        .collect();
    let declared = observe.len();
    for ex in &spec.expect {
        let at: Vec<String> = ex.step.iter().cloned().collect();
        let covered =
            |steps: &Vec<String>| steps.is_empty() || at.iter().all(|s| steps.contains(s));
        if let Some(c) = ex.counter()
            && !observe
                .iter()
                .any(|(o, _, steps, _)| o == c && covered(steps))
        {
            observe.push((c.clone(), ClassRule::Sign, at, &no_words));
        }
    }
    ev.settings = guest::fact::settings(spec);
    ev.exits = ends.iter().map(|(k, e)| (k.clone(), e.0)).collect();
    let empty = BTreeMap::new();
    let label_before = |i: usize| {
        if i == 0 {
            "start".to_string()
        } else {
            format!("after:{}", spec.steps[i - 1].name())
        }
    };
    for (i, step) in spec.steps.iter().enumerate() {
        let before = samples.get(&label_before(i));
        let after = samples.get(&format!("after:{}", step.name()));
        if before.is_none() || after.is_none() {
            ev.problems.push(format!(
                "no counters were sampled around step {}",
                step.name()
            ));
        }
        let (before, after) = (before.unwrap_or(&empty), after.unwrap_or(&empty));
        let view = StepView {
            before,
            after,
            exit: ev.exits.get(step.name()).copied(),
            settings: &ev.settings,
        };
        let observed = observe
            .iter()
            .enumerate()
            .filter(|(_, (_, _, at, _))| at.is_empty() || at.iter().any(|s| s == step.name()))
            .map(|(k, (c, rule, _, words))| {
                let delta = delta(c, before, after);
                let explain = delta
                    .as_ref()
                    .ok()
                    .and_then(|d| class(*rule, *d))
                    .and_then(|k| words.get(&k))
                    .and_then(|x| x.pick(&view))
                    .map(str::to_string);
                Observed {
                    counter: c.clone(),
                    rule: *rule,
                    delta,
                    explain,
                    declared: k < declared,
                }
            })
            .collect();
        let end = ends.get(step.name());
        let mut describe = step.kind.as_str().to_string();
        if let Some(size) = step.size() {
            describe.push_str(&format!(" {size}"));
        }
        describe.push_str(&format!(
            " in {}",
            step.cgroup().unwrap_or("the root cgroup")
        ));
        ev.steps.push(StepResult {
            name: step.name().to_string(),
            describe,
            exit: end.map(|e| e.0),
            wall_ms: end.map(|e| e.1).unwrap_or(0),
            stderr: end.map(|e| e.2.clone()).unwrap_or_default(),
            observed,
        });
    }
    ev.sampled = samples;
    for ex in &spec.expect {
        let view = ev.view(ex.step.as_deref());
        let missing = |t: String| (false, format!("not reported by this kernel: {t}"));
        let (pass, actual) = match &ex.want {
            Want::Present { counter, present } => {
                let got = counter.eval(view.after).is_ok();
                let word = if got { "present" } else { "absent" };
                (got == *present, word.to_string())
            }
            Want::Delta {
                counter,
                delta: cond,
            } => match delta(counter, view.before, view.after) {
                Ok(d) => (cond.holds(d), d.to_string()),
                Err(t) => missing(t),
            },
            Want::Value { counter, value } => match counter.eval(view.after) {
                Ok(v) => (value.holds(v), v.to_string()),
                Err(t) => missing(t),
            },
            Want::Exit { exit } => {
                let got = view
                    .exit
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| "did not finish".into());
                (view.exit == Some(*exit), got)
            }
        };
        let mut verdict = Verdict {
            expect: ex.clone(),
            what: describe_expect(ex),
            actual,
            pass,
            applies: true,
        };
        if let Some(k) = ex.kernel
            && let Some(release) = ev.kernel.as_deref().filter(|r| !k.holds(r))
        {
            verdict.applies = false;
            verdict.pass = true;
            verdict.actual = format!("{}; not judged on {release}", verdict.actual);
        }
        ev.verdicts.push(verdict);
    }
    ev
}

/// The report for the student: every observed counter with its real change and its class, and
/// every expectation with its verdict and why.
pub fn render_terminal(spec: &LabSpec, ev: &Evaluation) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\n== {} — {}", spec.id, spec.title);
    if !spec.claim.is_empty() {
        let _ = writeln!(out, "claim under test: {}", spec.claim);
    }
    let width = ev
        .steps
        .iter()
        .flat_map(|s| &s.observed)
        .map(|o| o.counter.to_string().len())
        .max()
        .unwrap_or(20);
    for s in &ev.steps {
        let exit = s
            .exit
            .map(|e| e.to_string())
            .unwrap_or_else(|| "did not finish".into());
        let _ = writeln!(
            out,
            "\nstep {} ({}): {exit} after {:.2}s",
            s.name,
            s.describe,
            s.wall_ms as f64 / 1000.0
        );
        if !s.stderr.trim().is_empty() {
            let _ = writeln!(out, "  workload said: {}", s.stderr.trim());
        }
        for o in &s.observed {
            let (num, cls) = match &o.delta {
                Ok(d) => (
                    format!("{d:+}"),
                    class(o.rule, *d).unwrap_or_else(|| "(noisy, not snapshotted)".into()),
                ),
                Err(t) => ("?".into(), format!("not reported by this kernel: {t}")),
            };
            let _ = writeln!(
                out,
                "  Δ {:<width$}  {num:>12}  {cls}",
                o.counter.to_string()
            );
            if let Some(words) = &o.explain {
                let _ = writeln!(out, "      → {words}");
            }
        }
        out.push_str(&timeline_lines(ev, &s.name));
        if let Some(text) = ev.trace_text.get(&s.name) {
            out.push_str("  reclaim trace (vmscan tracepoints):\n");
            out.push_str(text);
        }
    }
    if !ev.verdicts.is_empty() {
        let _ = writeln!(out, "\nexpectations:");
        for v in &ev.verdicts {
            let _ = writeln!(
                out,
                "  {}  {}  (got {})",
                verdict_word(v).to_uppercase(),
                v.what,
                v.actual
            );
            let _ = writeln!(out, "        why: {}", v.expect.why);
        }
    }
    out
}

/// The timeline series of a run: memory (MiB) and reclaim rates (pages/s), for the SVG.
type Spans = Vec<(f64, f64, String)>;

pub fn timeline_panels(ev: &Evaluation) -> (Vec<timeline::Panel>, Vec<(f64, String)>, Spans) {
    let first_tick = ev.timeline.first().map(|t| t.0).unwrap_or(0);
    let t0 = ev
        .step_starts
        .first()
        .map(|s| s.0)
        .unwrap_or(first_tick)
        .min(first_tick);
    let secs = |ms: u64| ms.saturating_sub(t0) as f64 / 1000.0;
    let keys: std::collections::BTreeSet<&String> =
        ev.timeline.iter().flat_map(|t| t.2.keys()).collect();
    let series = |key: &str, scale: f64| timeline::Series {
        name: key.to_string(),
        points: ev
            .timeline
            .iter()
            .filter_map(|(t, _, v)| v.get(key).map(|n| (secs(*t), *n as f64 * scale)))
            .collect(),
    };
    let mib = 1.0 / (1u64 << 20) as f64;
    let memory: Vec<timeline::Series> = keys
        .iter()
        .filter(|k| k.ends_with("memory.current") || k.as_str() == "meminfo.MemFree")
        .map(|k| series(k, mib))
        .collect();
    let reclaim: Vec<timeline::Series> = keys
        .iter()
        .filter(|k| k.contains("pgscan") || k.contains("pgsteal") || k.contains("pswpout"))
        .map(|k| {
            let s = series(k, 1.0);
            timeline::Series {
                name: format!("{k} /s"),
                points: timeline::rates(&s.points),
            }
        })
        .collect();
    let marks = ev
        .step_starts
        .iter()
        .filter(|(t, _)| *t >= t0)
        .map(|(t, s)| (secs(*t), format!("step {s}")))
        .collect();
    let panels = vec![
        timeline::Panel {
            title: "memory".into(),
            unit: "MiB".into(),
            series: memory,
        },
        timeline::Panel {
            title: "reclaim and swap-out".into(),
            unit: "pages/s".into(),
            series: reclaim,
        },
    ];
    let spans = ev
        .trace_spans
        .iter()
        .filter(|(a, _, _)| *a >= t0)
        .map(|(a, b, w)| (secs(*a), secs(*b), w.clone()))
        .collect();
    (panels, marks, spans)
}

/// A compact terminal chart of one step: one sparkline per moving timeline counter.
fn timeline_lines(ev: &Evaluation, step: &str) -> String {
    let ticks: Vec<&BTreeMap<String, u64>> = ev
        .timeline
        .iter()
        .filter(|t| t.1 == step)
        .map(|t| &t.2)
        .collect();
    if ticks.len() < 3 {
        return String::new();
    }
    let mut out = format!("  timeline ({} ticks):\n", ticks.len());
    let keys: std::collections::BTreeSet<&String> = ticks.iter().flat_map(|t| t.keys()).collect();
    for key in keys {
        let values: Vec<f64> = ticks
            .iter()
            .map(|t| t.get(key).copied().unwrap_or(0) as f64)
            .collect();
        let cumulative =
            key.contains("pgscan") || key.contains("pgsteal") || key.contains("pswpout");
        let shown: Vec<f64> = if cumulative {
            values.windows(2).map(|w| (w[1] - w[0]).max(0.0)).collect()
        } else {
            values.clone()
        };
        if shown.iter().all(|v| *v == shown[0]) {
            continue; // flat lines say nothing
        }
        let (label, max) = if cumulative {
            (
                format!("{key} per tick"),
                format!("max {:.0}", shown.iter().cloned().fold(0.0, f64::max)),
            )
        } else {
            (
                key.to_string(),
                format!(
                    "max {:.1}M",
                    shown.iter().cloned().fold(0.0, f64::max) / (1u64 << 20) as f64
                ),
            )
        };
        let _ = writeln!(out, "    {label:<40} {} {max}", timeline::sparkline(&shown));
    }
    out
}

/// The normalised report: qualitative facts only, stable across runs and machines.
pub fn render_snapshot(spec: &LabSpec, ev: &Evaluation) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "lab: {}", spec.id);
    for s in &ev.steps {
        let exit = s
            .exit
            .map(|e| e.to_string())
            .unwrap_or_else(|| "did not finish".into());
        let _ = writeln!(out, "step {} ({}): {exit}", s.name, s.describe);
        for o in &s.observed {
            let cls = match &o.delta {
                Ok(d) => class(o.rule, *d),
                Err(_) => Some("not reported".into()),
            };
            if let Some(cls) = cls {
                let _ = writeln!(out, "  Δ {}: {cls}", o.counter);
            }
        }
    }
    let _ = writeln!(out, "expectations:");
    for v in &ev.verdicts {
        let _ = writeln!(out, "  {}: {}", verdict_word(v), v.what);
    }
    out
}

/// `pass`, `FAIL`, or `n/a` (an expectation for other kernel versions).
fn verdict_word(v: &Verdict) -> &'static str {
    match (v.applies, v.pass) {
        (false, _) => "n/a",
        (true, true) => "pass",
        (true, false) => "FAIL",
    }
}

/// The body of a committed snapshot (after insta's header), if there is one.
pub fn read_snapshot(dir: &Path, name: &str) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(format!("{name}.snap"))).ok()?;
    let body = text.strip_prefix("---\n")?.split_once("\n---\n")?.1;
    Some(body.to_string())
}

/// The facts of a snapshot text as (section, name, value): `("step read", "Δ W/memory.events.max",
/// ">0")`, `("step read", "ends", "exited 0")`, `("expectations", "Δ X > 0 [step read]", "pass")`.
pub fn snapshot_facts(text: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines() {
        if !line.starts_with(' ') {
            // `step read (read-file 48M in W): exited 0` -> `step read`
            section = line
                .split(" (")
                .next()
                .unwrap_or(line)
                .trim_end_matches(':')
                .to_string();
            if let Some((_, value)) = line.split_once("): ") {
                out.push((section.clone(), "ends".into(), value.to_string()));
            }
            continue;
        }
        let line = line.trim();
        // `Δ X: >0` (name first), `pass: Δ X > 0 [step s]` (verdict first).
        match line.split_once(": ") {
            Some((v @ ("pass" | "FAIL" | "n/a"), what)) => {
                out.push((section.clone(), what.to_string(), v.to_string()))
            }
            Some((name, value)) => out.push((section.clone(), name.to_string(), value.to_string())),
            None => out.push((section.clone(), line.to_string(), String::new())),
        }
    }
    out
}

/// The facts that differ between two snapshot texts, one line each, named by their step:
/// `step read: Δ W/memory.stat.pgscan_direct was >0, now 0`, `expectations: ... was pass, now
/// FAIL`. Facts are `name: value` lines under `step ...:`-like headers.
pub fn fact_changes(old: &str, new: &str) -> Vec<String> {
    let (a, b) = (snapshot_facts(old), snapshot_facts(new));
    let find = |list: &[(String, String, String)], s: &str, n: &str| {
        list.iter()
            .find(|(s2, n2, _)| s2 == s && n2 == n)
            .map(|x| x.2.clone())
    };
    let mut out = Vec::new();
    for (s, n, v) in &a {
        match find(&b, s, n) {
            Some(w) if &w != v => out.push(format!("{s}: {n} was {v}, now {w}")),
            None => out.push(format!("{s}: {n} ({v}) is gone")),
            _ => {}
        }
    }
    for (s, n, v) in &b {
        if find(&a, s, n).is_none() {
            out.push(format!("{s}: {n} is new ({v})"));
        }
    }
    out
}

/// A line diff (longest common subsequence): `- ` lines only in `old`, `+ ` only in `new`,
/// unchanged lines left out. Empty when the texts have the same lines.
pub fn line_diff(old: &str, new: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (old.lines().collect(), new.lines().collect());
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push_str(&format!("  - {}\n", a[i]));
            i += 1;
        } else {
            out.push_str(&format!("  + {}\n", b[j]));
            j += 1;
        }
    }
    out
}

/// Compares with (or, when insta is told to, records) labs/<id>/snapshots/<id>.snap.
/// insta prints the diff and writes `.snap.new` for `cargo insta review` outside CI.
/// The snapshot a run is compared with: `<id>.kernel-6.1.snap` when the lab keeps one for the
/// booted kernel's version (its facts rightly differ there), else `<id>.snap`.
pub fn snapshot_name(dir: &Path, id: &str, release: Option<&str>) -> String {
    if let Some((a, b)) = release.and_then(guest::spec::major_minor) {
        let name = format!("{id}.kernel-{a}.{b}");
        if dir.join(format!("{name}.snap")).is_file() {
            return name;
        }
    }
    id.to_string()
}

pub fn check_snapshot(dir: &Path, name: &str, text: &str) -> bool {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(dir);
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    let previous_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {})); // insta has printed the diff already
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        settings.bind(|| insta::assert_snapshot!(name, text))
    }));
    std::panic::set_hook(previous_hook);
    result.is_ok()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use guest::event::{Frame, decode_stream, encode_frame};

    fn spec() -> LabSpec {
        let text = r#"
id = "t"
title = "T"
[vm]
memory = "256M"
[[cgroup]]
name = "W"
memory_max = "32M"
[[step]]
kind = "anon"
cgroup = "W"
size = "64M"
[[observe]]
counter = "vmstat.pgscan_kswapd"
[[observe]]
counter = "W/memory.events.oom_kill"
class = "exact"
[[expect]]
counter = "W/memory.events.oom_kill"
step = "anon"
delta = "== 1"
why = "over the limit with nothing to reclaim"
[[expect]]
step = "anon"
exit = "killed by SIGKILL"
why = "the OOM killer sends SIGKILL"
[[expect]]
counter = "vmstat.nonexistent_counter"
delta = "== 0"
why = "a counter this kernel does not have"
"#;
        crate::lab::parse_spec(text, "t").unwrap()
    }

    fn stream(oom_after: u64) -> Stream {
        let sample = |oom: u64| {
            let mut v = BTreeMap::new();
            v.insert("vmstat.pgscan_kswapd".to_string(), 5);
            v.insert("W/memory.events.oom_kill".to_string(), oom);
            v
        };
        let events = vec![
            Event::Hello {
                kernel: "6.12.117".into(),
            },
            Event::Ready,
            Event::Sample {
                label: "start".into(),
                values: sample(0),
            },
            Event::StepStart {
                step: "anon".into(),
            },
            Event::StepEnd {
                step: "anon".into(),
                exit: Exit::Signaled { signal: 9 },
                wall_ms: 10,
                stderr: String::new(),
                stdout: String::new(),
            },
            Event::Sample {
                label: "after:anon".into(),
                values: sample(oom_after),
            },
            Event::End { frames: 6 },
        ];
        stream_of(events)
    }

    /// The stream an agent sending `events` would produce (frame i at 100*i ms).
    pub(crate) fn stream_of(events: Vec<Event>) -> Stream {
        let text: String = events
            .into_iter()
            .enumerate()
            .map(|(i, event)| {
                encode_frame(&Frame {
                    seq: i as u64,
                    t_ms: 100 * i as u64,
                    event,
                })
            })
            .collect();
        decode_stream(text.as_bytes())
    }

    #[test]
    fn deltas_classes_and_verdicts() {
        let ev = evaluate(&spec(), &stream(1));
        assert!(ev.problems.is_empty(), "{:?}", ev.problems);
        assert_eq!(ev.kernel.as_deref(), Some("6.12.117"));
        assert_eq!(ev.ready_ms, Some(100));
        let s = &ev.steps[0];
        assert_eq!(s.observed[0].delta, Ok(0));
        assert_eq!(s.observed[1].delta, Ok(1));
        assert!(ev.verdicts[0].pass && ev.verdicts[1].pass);
        // A counter the kernel did not report is a failure, never a 0.
        assert!(!ev.verdicts[2].pass);
        assert!(
            ev.verdicts[2].actual.contains("not reported"),
            "{}",
            ev.verdicts[2].actual
        );
        assert!(!ev.passed());
    }

    #[test]
    fn an_expectation_for_other_kernels_is_not_applicable_there() {
        let mut spec = spec();
        // A failing expectation that is declared for 7.0 and later only.
        spec.expect[2].kernel = Some(">= 7.0".to_string().try_into().unwrap());
        let ev = evaluate(&spec, &stream(1));
        let v = &ev.verdicts[2];
        assert!(!v.applies && v.pass, "{v:?}");
        assert!(v.what.ends_with("[kernel >= 7.0]"), "{}", v.what);
        assert!(v.actual.contains("not judged on 6.12.117"), "{}", v.actual);
        assert!(
            ev.passed(),
            "an n/a expectation neither passes nor fails the run"
        );
        let snap = render_snapshot(&spec, &ev);
        assert!(
            snap.contains("  n/a: Δ vmstat.nonexistent_counter == 0 [whole run] [kernel >= 7.0]"),
            "{snap}"
        );
        // On a kernel it is for, it is judged as usual.
        spec.expect[2].kernel = Some(">= 6.12".to_string().try_into().unwrap());
        let ev = evaluate(&spec, &stream(1));
        assert!(ev.verdicts[2].applies && !ev.verdicts[2].pass);
    }

    #[test]
    fn snapshot_holds_classes_not_numbers() {
        let ev = evaluate(&spec(), &stream(1));
        let snap = render_snapshot(&spec(), &ev);
        assert!(
            snap.contains("step anon (anon 64M in W): killed by SIGKILL"),
            "{snap}"
        );
        assert!(snap.contains("Δ vmstat.pgscan_kswapd: 0"), "{snap}");
        assert!(snap.contains("Δ W/memory.events.oom_kill: 1"), "{snap}");
        assert!(
            snap.contains("FAIL: Δ vmstat.nonexistent_counter == 0 [whole run]"),
            "{snap}"
        );
        let term = render_terminal(&spec(), &ev);
        assert!(term.contains("why: the OOM killer sends SIGKILL"), "{term}");
    }

    #[test]
    fn a_failed_expectation_is_reported() {
        let ev = evaluate(&spec(), &stream(0));
        assert!(!ev.verdicts[0].pass);
        assert_eq!(ev.verdicts[0].actual, "0");
    }

    #[test]
    fn fact_changes_name_the_step_and_both_values() {
        let old = "lab: t\nstep read (read-file 48M in W): exited 0\n  Δ W/memory.stat.pgscan_direct: >0\n  Δ vmstat.pgscan_kswapd: 0\nexpectations:\n  pass: Δ W/memory.stat.pgscan_direct > 0 [step read]\n";
        let new = "lab: t\nstep read (read-file 48M in W): killed by SIGKILL\n  Δ W/memory.stat.pgscan_direct: >0\n  Δ vmstat.pgscan_kswapd: >0\nexpectations:\n  FAIL: Δ W/memory.stat.pgscan_direct > 0 [step read]\n";
        assert_eq!(
            fact_changes(old, new),
            [
                "step read: ends was exited 0, now killed by SIGKILL",
                "step read: Δ vmstat.pgscan_kswapd was 0, now >0",
                "expectations: Δ W/memory.stat.pgscan_direct > 0 [step read] was pass, now FAIL",
            ]
        );
        assert!(fact_changes(old, old).is_empty());
    }

    #[test]
    fn line_diff_shows_only_changes() {
        let d = line_diff("a\nb\nc\n", "a\nB\nc\nd\n");
        assert_eq!(d, "  - b\n  + B\n  + d\n");
        assert_eq!(line_diff("x\ny\n", "x\ny\n"), "");
    }

    #[test]
    fn classes() {
        assert_eq!(class(ClassRule::Sign, 0).unwrap(), "0");
        assert_eq!(class(ClassRule::Sign, 17).unwrap(), ">0");
        assert_eq!(class(ClassRule::Sign, -3).unwrap(), "<0");
        assert_eq!(class(ClassRule::Exact, 1).unwrap(), "1");
        assert_eq!(class(ClassRule::Shown, 1), None);
    }
}
