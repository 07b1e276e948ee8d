//! Evaluation: a result stream judged against its spec, in four pure phases:
//! [`fold`] the frames into what the run reported, turn each step's trace into [`trace_facts`],
//! [`observe`] every step's counters (change, class, explanation), and judge each expectation
//! ([`verdict`]). Rendering (report.rs) reads the [`Evaluation`]; nothing here does I/O.

use crate::trace;
use guest::counters::per_step;
use guest::event::{Event, Exit, Frame, Stream};
use guest::exercise::Explanation;
use guest::fact::{StepView, settings};
use guest::spec::{ClassRule, CounterExpr, Expect, LabSpec, Step, Want};
use serde::Serialize;
use std::collections::BTreeMap;

/// Counters by sample key.
pub type Sample = BTreeMap<String, u64>;

/// One counter over one step.
#[derive(Debug, Clone)]
pub struct Observed {
    pub counter: CounterExpr,
    pub rule: ClassRule,
    /// The change across the step, or the counter the kernel did not report.
    pub delta: Result<i64, String>,
    /// Its value after the step (a README figure may quote it).
    pub value: Option<i64>,
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

impl StepResult {
    /// How the step's workload ended: `exited 0`, `killed by SIGKILL`, or `did not finish`.
    pub fn ended(&self) -> String {
        self.exit
            .map(|e| e.to_string())
            .unwrap_or_else(|| "did not finish".into())
    }
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

/// A timeline sample: when (guest uptime), in which step, the counters.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tick {
    pub t_ms: u64,
    pub step: String,
    pub values: Sample,
}

/// When a step started (guest uptime).
#[derive(Debug, Clone, PartialEq)]
pub struct StepStart {
    pub t_ms: u64,
    pub step: String,
}

/// An interval of a step's trace, for the timeline: a reclaim episode of a task (`W memcg
/// reclaim`), or a kswapd awake (`kswapd0 awake`); guest uptime.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub start_ms: u64,
    pub end_ms: u64,
    pub who: String,
}

/// What the vmscan trace of one step says.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepTrace {
    pub step: String,
    /// Its facts (`trace.*` counters), measured over the step alone.
    pub facts: Sample,
    /// The report's lines about it (per task, per node).
    #[serde(skip)]
    pub text: String,
    /// Its reclaim episodes and kswapd wake-ups.
    #[serde(skip)]
    pub spans: Vec<Span>,
}

/// How a step's workload ended, as the agent said.
#[derive(Debug, Clone)]
struct StepEnd {
    exit: Exit,
    wall_ms: u64,
    stderr: String,
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
    /// The timeline: counters sampled while steps ran (a step's last: its final sample).
    pub timeline: Vec<Tick>,
    /// Per step: timeline samples taken, and the guest time they cost (µs).
    pub sampling: BTreeMap<String, (usize, u64)>,
    pub step_starts: Vec<StepStart>,
    /// Per traced step, in order: its trace facts, report lines and spans.
    pub traces: Vec<StepTrace>,
    /// Every sample by label (`start`, `after:<step>`), as the agent sent it.
    pub sampled: BTreeMap<String, Sample>,
    /// How each finished step's workload ended.
    pub exits: BTreeMap<String, Exit>,
    /// The spec's settings as run (`guest::fact::settings`), for facts that name them.
    pub settings: BTreeMap<String, String>,
    /// The processes the OOM killer killed, from the console (filled in by `lab.rs`).
    pub oom_kills: Vec<crate::oom::Kill>,
}

static NOTHING: Sample = BTreeMap::new();

impl Evaluation {
    pub fn passed(&self) -> bool {
        self.problems.is_empty() && self.verdicts.iter().all(|v| v.pass)
    }

    /// One step as facts see it (samples around it, its trace, its exit, the settings);
    /// `None`: the whole run, first to last sample (its trace: the last step's). A sample that
    /// is missing reads as no counters at all.
    pub fn view(&self, step: Option<&str>) -> StepView<'_> {
        let names: Vec<&str> = self.steps.iter().map(|s| s.name.as_str()).collect();
        self.view_in(&names, step)
    }

    /// [`Evaluation::view`] with the steps in the order of `names`.
    fn view_in(&self, names: &[&str], step: Option<&str>) -> StepView<'_> {
        let label = |i: Option<usize>| match i {
            None => "start".to_string(),
            Some(i) => format!("after:{}", names[i]),
        };
        let (before, after) = match step.and_then(|s| names.iter().position(|n| *n == s)) {
            Some(i) => (label(i.checked_sub(1)), label(Some(i))),
            None => (label(None), label(names.len().checked_sub(1))),
        };
        let get = |l: &str| self.sampled.get(l).unwrap_or(&NOTHING);
        let traced = step.or(names.last().copied());
        StepView {
            before: get(&before),
            after: get(&after),
            measured: self.trace(traced).map(|t| &t.facts).unwrap_or(&NOTHING),
            exit: step.and_then(|s| self.exits.get(s).copied()),
            settings: &self.settings,
        }
    }

    /// The trace of a step, if it was traced.
    pub fn trace(&self, step: Option<&str>) -> Option<&StepTrace> {
        self.traces.iter().find(|t| Some(t.step.as_str()) == step)
    }

    /// Every span of every traced step.
    pub fn spans(&self) -> impl Iterator<Item = &Span> {
        self.traces.iter().flat_map(|t| &t.spans)
    }
}

/// Evaluates a (possibly incomplete) stream against the spec. Pure: no I/O.
pub fn evaluate(spec: &LabSpec, stream: &Stream) -> Evaluation {
    let (mut ev, ends, raw_traces) = fold(&stream.frames);
    ev.traces = raw_traces
        .into_iter()
        .map(|(step, lines, workers)| trace_facts(spec, step, lines, workers))
        .collect();
    ev.settings = settings(spec);
    ev.exits = ends.iter().map(|(k, e)| (k.clone(), e.exit)).collect();
    let (steps, missing) = observe(spec, &ev, &ends);
    ev.steps = steps;
    ev.problems.extend(missing);
    ev.verdicts = spec.expect.iter().map(|ex| verdict(ex, &ev)).collect();
    ev
}

/// A step's raw trace: its name, its lines, and which cgroup each workload pid was in.
type RawTrace<'a> = (&'a str, &'a [String], &'a BTreeMap<String, String>);

/// Phase 1: what the frames report, in one pass; each step's end, and its raw trace.
fn fold(frames: &[Frame]) -> (Evaluation, BTreeMap<String, StepEnd>, Vec<RawTrace<'_>>) {
    let mut ev = Evaluation::default();
    let (mut ends, mut traces) = (BTreeMap::new(), Vec::new());
    for f in frames {
        match &f.event {
            Event::Hello { kernel } => ev.kernel = Some(kernel.clone()),
            Event::Ready => ev.ready_ms = Some(f.t_ms),
            Event::Sample { label, values } => {
                ev.samples += 1;
                ev.sampled.insert(label.clone(), values.clone());
            }
            Event::StepEnd {
                step,
                exit,
                wall_ms,
                stderr,
                ..
            } => {
                let end = StepEnd {
                    exit: *exit,
                    wall_ms: *wall_ms,
                    stderr: stderr.clone(),
                };
                ends.insert(step.clone(), end);
            }
            Event::Error { context, message } => {
                ev.problems.push(format!("agent: {context}: {message}"))
            }
            Event::End { .. } => ev.end_ms = Some(f.t_ms),
            // Judged by health.rs, beside the lab's own verdicts.
            Event::Health { .. } => {}
            Event::StepStart { step } => ev.step_starts.push(StepStart {
                t_ms: f.t_ms,
                step: step.clone(),
            }),
            Event::Trace {
                step,
                lines,
                workers,
            } => traces.push((step.as_str(), &lines[..], workers)),
            Event::Ticks {
                step,
                keys,
                rows,
                cost_us,
            } => {
                for (t_ms, values) in rows {
                    ev.timeline.push(Tick {
                        t_ms: *t_ms,
                        step: step.clone(),
                        values: keys.iter().cloned().zip(values.iter().copied()).collect(),
                    });
                }
                let cost = ev.sampling.entry(step.clone()).or_default();
                cost.0 += rows.len();
                cost.1 += cost_us;
            }
        }
    }
    (ev, ends, traces)
}

/// Phase 2: one step's trace as facts (zero for every group and node that did nothing: "no
/// episode" is a fact too), report lines and spans.
fn trace_facts(
    spec: &LabSpec,
    step: &str,
    lines: &[String],
    workers: &BTreeMap<String, String>,
) -> StepTrace {
    let events: Vec<trace::TraceEvent> =
        lines.iter().filter_map(|l| trace::parse_line(l)).collect();
    let summary = trace::summarize(&events);
    let cgroup_of: BTreeMap<u32, String> = workers
        .iter()
        .filter_map(|(pid, cg)| Some((pid.parse().ok()?, cg.clone())))
        .collect();
    let mut facts = trace::facts(&summary, &cgroup_of);
    let groups = spec.cgroup_names();
    for key in trace::zero_facts(&groups, spec.vm.numa_nodes) {
        facts.entry(key).or_insert(0);
    }
    StepTrace {
        step: step.to_string(),
        facts,
        text: trace::render(&summary, &cgroup_of),
        spans: trace_spans(&summary, &cgroup_of),
    }
}

/// Reclaim episodes per task and kswapd awake per node, in guest milliseconds.
fn trace_spans(summary: &trace::Summary, cgroup_of: &BTreeMap<u32, String>) -> Vec<Span> {
    let span = |(a, b): &(u64, u64), who: &str| Span {
        start_ms: a / 1000,
        end_ms: b / 1000,
        who: who.to_string(),
    };
    let mut spans = Vec::new();
    for (kind, map) in [
        ("memcg reclaim", &summary.memcg),
        ("direct reclaim", &summary.direct),
    ] {
        for ((comm, pid), ep) in map {
            let who = match cgroup_of.get(pid) {
                Some(c) => format!("{c} {kind}"),
                None => format!("{comm}-{pid} {kind}"),
            };
            spans.extend(ep.spans.iter().map(|s| span(s, &who)));
        }
    }
    for (nid, ep) in &summary.kswapd {
        let who = format!("kswapd{nid} awake");
        spans.extend(ep.spans.iter().map(|s| span(s, &who)));
    }
    spans
}

/// A counter to observe: the spec's `[[observe]]` ones at every step, then each expectation's
/// counter not among them, at the expectation's own step only (at every step for a whole-run
/// one), so that facts nobody asked about at other steps stay out of the snapshot.
struct Watch<'a> {
    counter: &'a CounterExpr,
    rule: ClassRule,
    /// The only steps it is observed at (empty: every step).
    at: &'a [String],
    explain: Option<&'a BTreeMap<String, Explanation>>,
}

fn watches(spec: &LabSpec) -> Vec<Watch<'_>> {
    let mut list: Vec<Watch> = spec
        .observe
        .iter()
        .map(|o| Watch {
            counter: &o.counter,
            rule: o.class,
            at: &o.steps,
            explain: Some(&o.explain),
        })
        .collect();
    for ex in &spec.expect {
        let Some(c) = ex.counter() else { continue };
        // A trace fact compared with a sampled counter (free pages at kswapd's wake-ups against
        // the low watermark) is judged on its value; its change is no fact of its own.
        let trace = c.terms.iter().filter(|(_, t)| per_step(t)).count();
        if trace > 0 && trace < c.terms.len() {
            continue;
        }
        let at = ex.step.as_slice();
        let covered = |w: &Watch| w.at.is_empty() || (!at.is_empty() && w.at.contains(&at[0]));
        if !list.iter().any(|w| w.counter == c && covered(w)) {
            list.push(Watch {
                counter: c,
                rule: ClassRule::Sign,
                at,
                explain: None,
            });
        }
    }
    list
}

/// The rule by which `counter` becomes a fact at `step`, if a run of `spec` observes it there
/// (what a README figure may quote).
pub fn observed_rule(spec: &LabSpec, step: &str, counter: &CounterExpr) -> Option<ClassRule> {
    watches(spec)
        .iter()
        .find(|w| w.counter == counter && (w.at.is_empty() || w.at.iter().any(|a| a == step)))
        .map(|w| w.rule)
}

/// Phase 3: every step's observed counters, exit and time; and the steps whose samples are
/// missing (the run is not valid).
fn observe(
    spec: &LabSpec,
    ev: &Evaluation,
    ends: &BTreeMap<String, StepEnd>,
) -> (Vec<StepResult>, Vec<String>) {
    let names = spec.step_names();
    let watches = watches(spec);
    let mut missing = Vec::new();
    let mut steps = Vec::new();
    for (i, step) in spec.steps.iter().enumerate() {
        let before = if i == 0 {
            "start".to_string()
        } else {
            format!("after:{}", names[i - 1])
        };
        let after = format!("after:{}", step.name());
        if !(ev.sampled.contains_key(&before) && ev.sampled.contains_key(&after)) {
            missing.push(format!(
                "no counters were sampled around step {}",
                step.name()
            ));
        }
        let view = ev.view_in(&names, Some(step.name()));
        let observed = watches
            .iter()
            .filter(|w| w.at.is_empty() || w.at.iter().any(|at| at == step.name()))
            .map(|w| observe_one(w, &view))
            .collect();
        let end = ends.get(step.name());
        steps.push(StepResult {
            name: step.name().to_string(),
            describe: describe_step(step),
            exit: end.map(|e| e.exit),
            wall_ms: end.map(|e| e.wall_ms).unwrap_or(0),
            stderr: end.map(|e| e.stderr.clone()).unwrap_or_default(),
            observed,
        });
    }
    (steps, missing)
}

/// One counter over one step: its change, and the explanation of its class that holds.
fn observe_one(w: &Watch, view: &StepView) -> Observed {
    let delta = view.delta(w.counter);
    let explain = delta
        .as_ref()
        .ok()
        .and_then(|d| class(w.rule, *d))
        .and_then(|k| w.explain?.get(&k))
        .and_then(|x| x.pick(view))
        .map(str::to_string);
    Observed {
        counter: w.counter.clone(),
        rule: w.rule,
        delta,
        value: view.value(w.counter).ok(),
        explain,
        declared: w.explain.is_some(),
    }
}

/// What a step does, in a few words: `read-file 48M in W`.
pub fn describe_step(step: &Step) -> String {
    let mut describe = step.kind.as_str().to_string();
    if let Some(size) = step.size() {
        describe.push_str(&format!(" {size}"));
    }
    let cgroup = step.cgroup().unwrap_or("the root cgroup");
    describe.push_str(&format!(" in {cgroup}"));
    describe
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

/// Phase 4: one expectation judged on its step (or the whole run); n/a on kernels it is not
/// for.
fn verdict(ex: &Expect, ev: &Evaluation) -> Verdict {
    let (pass, actual) = judge(&ex.want, &ev.view(ex.step.as_deref()));
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
    verdict
}

/// Whether the step shows what is wanted, and what it showed.
fn judge(want: &Want, view: &StepView) -> (bool, String) {
    let missing = |t: String| (false, missing_text(&t));
    match want {
        Want::Present { counter, present } => {
            let got = view.value(counter).is_ok();
            let word = if got { "present" } else { "absent" };
            (got == *present, word.to_string())
        }
        Want::Delta { counter, delta } => match view.delta(counter) {
            Ok(d) => (delta.holds(d), d.to_string()),
            Err(t) => missing(t),
        },
        Want::Value { counter, value } => match view.value(counter) {
            Ok(v) => (value.holds(v), v.to_string()),
            Err(t) => missing(t),
        },
        Want::Exit { exit } => match view.exit {
            Some(got) => (got == *exit, got.to_string()),
            None => (false, "did not finish".into()),
        },
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

/// Why a counter has no number: a trace fact is missing when the step's trace had no such
/// event (free pages at a wake-up that never came); anything else, the kernel did not report.
pub fn missing_text(term: &str) -> String {
    match per_step(term) {
        true => format!("no such event in this step's trace: {term}"),
        false => format!("not reported by this kernel: {term}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::stream_of;

    const SPEC: &str = r#"
id = "t"
title = "T"
[vm]
memory = "256M"
trace = true
[[cgroup]]
name = "W"
[[step]]
kind = "anon"
name = "a"
cgroup = "W"
size = "1M"
[[step]]
kind = "anon"
name = "b"
cgroup = "W"
size = "1M"
[[observe]]
counter = "trace.kswapd.wakes"
[[expect]]
step = "b"
counter = "trace.kswapd.wakes + W/memory.events.max"
delta = "== 4"
why = "w"
"#;

    fn sample(max: u64) -> Event {
        Event::Sample {
            label: String::new(),
            values: [("W/memory.events.max".to_string(), max)].into(),
        }
    }

    fn labelled(e: Event, label: &str) -> Event {
        match e {
            Event::Sample { values, .. } => Event::Sample {
                label: label.into(),
                values,
            },
            e => e,
        }
    }

    fn traced(step: &str, wakes: usize) -> Event {
        let mut lines = Vec::new();
        for i in 0..wakes {
            lines.push(format!(
                "kswapd0-40 [000] ..... 3.{i}00000: mm_vmscan_kswapd_wake: nid=0 order=0"
            ));
            lines.push(format!(
                "kswapd0-40 [000] ..... 3.{i}50000: mm_vmscan_kswapd_sleep: nid=0"
            ));
        }
        Event::Trace {
            step: step.into(),
            lines,
            workers: BTreeMap::new(),
        }
    }

    #[test]
    fn trace_facts_are_measured_per_step_not_sampled() {
        let spec = crate::lab::parse_spec(SPEC, "t").unwrap();
        let stream = stream_of(vec![
            labelled(sample(0), "start"),
            traced("a", 1),
            labelled(sample(5), "after:a"),
            traced("b", 3),
            labelled(sample(6), "after:b"),
            Event::End { frames: 5 },
        ]);
        let ev = evaluate(&spec, &stream);
        assert!(!ev.sampled["after:b"].contains_key("trace.kswapd.wakes"));
        let wakes: Vec<_> = ev
            .steps
            .iter()
            .map(|s| s.observed[0].delta.clone())
            .collect();
        assert_eq!(wakes, [Ok(1), Ok(3)]);
        // A sum of a measured and a sampled counter: 3 wake-ups + 1 max event in step b.
        assert!(ev.verdicts[0].pass, "{:?}", ev.verdicts[0]);
        assert_eq!(ev.verdicts[0].actual, "4");
        assert_eq!(ev.traces[1].spans.len(), 3);
        assert_eq!(ev.spans().count(), 4);
    }

    #[test]
    fn an_observation_with_steps_is_made_at_those_steps_only() {
        let text = SPEC.replace(
            "[[observe]]\ncounter = \"trace.kswapd.wakes\"",
            "[[observe]]\ncounter = \"trace.kswapd.wakes\"\nsteps = [\"b\"]\n[[observe]]\ncounter = \"W/memory.events.max\"\nsteps = [\"a\", \"b\"]",
        );
        let spec = crate::lab::parse_spec(&text, "t").unwrap();
        let stream = stream_of(vec![
            labelled(sample(0), "start"),
            labelled(sample(5), "after:a"),
            labelled(sample(6), "after:b"),
            Event::End { frames: 3 },
        ]);
        let ev = evaluate(&spec, &stream);
        let names = |i: usize| -> Vec<String> {
            let counters = ev.steps[i].observed.iter().map(|o| o.counter.to_string());
            counters.collect()
        };
        assert_eq!(names(0), ["W/memory.events.max"]);
        // (The expectation's sum of a trace fact and a sampled counter is judged, not observed.)
        assert_eq!(names(1), ["trace.kswapd.wakes", "W/memory.events.max"]);
        assert_eq!(ev.steps[0].observed[0].delta, Ok(5));
    }
}
