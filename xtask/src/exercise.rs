//! Exercises (`[[exercise]]` in lab.toml): run a lab with the exercise's `--set` values and
//! judge whether the kernel agreed with what the exercise says it shows. Used by
//! `cargo xtask lab N --exercise NAME`, by the VM tests, and (for the README answers) by
//! `readme`.

use crate::lab::{self, LabDir, RunOptions, RunResult};
use crate::report::{self, Evaluation, snapshot_facts};
use anyhow::{Result, bail};
use guest::exercise::Exercise;
use guest::fact::Fact;
use guest::spec::{ClassRule, LabSpec};

/// Whether the kernel agreed with an exercise, fact by fact.
#[derive(Debug, Clone, Default)]
pub struct Judgement {
    /// What the kernel did otherwise than the exercise says, one line each; empty: it agreed.
    pub disagreements: Vec<String>,
    /// What it confirmed, one line each.
    pub confirmed: Vec<String>,
}

impl Judgement {
    pub fn agreed(&self) -> bool {
        self.disagreements.is_empty()
    }
}

/// `lab --exercise --json`: whether the kernel agreed, beside the run's result.
#[derive(serde::Serialize)]
pub struct Agreement<'a> {
    pub name: &'a str,
    pub agreed: bool,
    pub disagreements: &'a [String],
    pub confirmed: &'a [String],
}

/// The exercises named on the command line (`all`: every one), in lab.toml order.
pub fn select<'a>(spec: &'a LabSpec, names: &[String]) -> Result<Vec<&'a Exercise>> {
    if spec.exercises.is_empty() {
        bail!("lab {} has no [[exercise]]", spec.id);
    }
    if names.iter().any(|n| n == "all") {
        return Ok(spec.exercises.iter().collect());
    }
    let list = || {
        spec.exercises
            .iter()
            .map(|x| x.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    names
        .iter()
        .map(|n| {
            spec.exercises.iter().find(|x| &x.name == n).ok_or_else(|| {
                let closest = spec
                    .exercises
                    .iter()
                    .min_by_key(|x| lab::edit_distance(n, &x.name))
                    .map(|x| x.name.as_str())
                    .unwrap_or("");
                anyhow::anyhow!(
                    "lab {} has no exercise {n:?}; did you mean {closest:?}? (exercises: {}, or all)",
                    spec.id,
                    list()
                )
            })
        })
        .collect()
}

/// Runs one exercise: the lab with its `--set` values, then the judgement.
pub fn run(lab: &LabDir, opts: &RunOptions, x: &Exercise) -> Result<(RunResult, Judgement)> {
    let mut opts = opts.clone();
    opts.sets = x.set_args();
    opts.exercise = Some(x.name.clone());
    let r = lab::execute(lab, &opts)?;
    let dir = lab.dir.join("snapshots");
    let name = report::snapshot_name(&dir, &r.spec.id, r.eval.kernel.as_deref());
    let default = report::read_snapshot(&dir, &name);
    let skipped = r.variant.as_ref().map(|v| v.1.clone()).unwrap_or_default();
    let j = match r.problems.is_empty() {
        true => judge(x, &r.spec, &r.eval, default.as_deref(), &skipped),
        // An incomplete run says nothing about the kernel: only why it is not valid.
        false => Judgement {
            disagreements: r
                .problems
                .iter()
                .map(|p| format!("the run is not valid: {p}"))
                .collect(),
            confirmed: vec![],
        },
    };
    Ok((r, j))
}

/// Judges a finished run against the exercise (pure): its facts, the facts that changed
/// against the default snapshot, the failing expectations, and the explanations.
pub fn judge(
    x: &Exercise,
    spec: &LabSpec,
    ev: &Evaluation,
    default_snapshot: Option<&str>,
    skipped: &[String],
) -> Judgement {
    let mut j = Judgement::default();
    if !ev.problems.is_empty() {
        j.disagreements.extend(
            ev.problems
                .iter()
                .map(|p| format!("the run is not valid: {p}")),
        );
        return j;
    }
    check_shows(x, ev, skipped, &mut j);
    match default_snapshot {
        Some(text) => check_changes(x, &report::render_snapshot(spec, ev), text, &mut j),
        None => j
            .disagreements
            .push("the lab has no default snapshot to compare with".into()),
    }
    check_failures(x, ev, &mut j);
    check_explained(x, ev, &mut j);
    j
}

/// 1. Every `shows` fact holds.
fn check_shows(x: &Exercise, ev: &Evaluation, skipped: &[String], j: &mut Judgement) {
    for sf in &x.shows {
        if let Some(s) = sf
            .step
            .as_deref()
            .filter(|s| skipped.iter().any(|k| k == s))
        {
            j.disagreements.push(format!(
                "`{sf}`: this exercise leaves step {s} out (size 0)"
            ));
            continue;
        }
        match sf.fact.check(&ev.view(sf.step.as_deref())) {
            Ok((true, got)) => j.confirmed.push(format!("{sf}  (got {got})")),
            Ok((false, got)) => j.disagreements.push(format!("{sf}: got {got}")),
            Err(t) => j
                .disagreements
                .push(format!("{sf}: the run did not report {t}")),
        }
    }
}

/// 2. Every fact that changed class against the default snapshot is named by `shows`.
fn check_changes(x: &Exercise, run: &str, default: &str, j: &mut Judgement) {
    let run_facts = snapshot_facts(run);
    for (section, name, was) in snapshot_facts(default) {
        let Some(step) = section.strip_prefix("step ") else {
            continue;
        };
        let Some((_, _, now)) = run_facts
            .iter()
            .find(|(s, n, _)| *s == section && *n == name)
        else {
            continue;
        };
        if *now == was {
            continue;
        }
        let subject = |counter: Option<&guest::spec::CounterExpr>| match counter {
            None => name == "ends",
            Some(c) => name == format!("Δ {c}"),
        };
        let named = x.shows.iter().any(|sf| {
            sf.step.as_deref() == Some(step)
                && match &sf.fact {
                    Fact::Exit { .. } => subject(None),
                    f => f.counter().is_some_and(|c| subject(Some(c))),
                }
        });
        let varies = x
            .varies
            .iter()
            .any(|v| v.step == step && subject(v.counter.as_ref()));
        if varies {
            j.confirmed.push(format!(
                "step {step}: {name} {was} -> {now} (it varies, as the exercise says)"
            ));
        } else if named {
            j.confirmed
                .push(format!("step {step}: {name} {was} -> {now}"));
        } else {
            j.disagreements.push(format!(
                "step {step}: {name} changed {was} -> {now}, and the exercise does not say so (add it to `shows`)"
            ));
        }
    }
}

/// 3. The failing expectations are exactly `fails`.
fn check_failures(x: &Exercise, ev: &Evaluation, j: &mut Judgement) {
    let unsure = |v: &report::Verdict| {
        v.expect
            .name
            .as_ref()
            .is_some_and(|n| x.may_fail.contains(n))
    };
    for v in ev.verdicts.iter().filter(|v| unsure(v)) {
        let word = if v.pass { "passed" } else { "failed" };
        j.confirmed.push(format!(
            "{} {word} this time (got {}): it may go either way here",
            v.what, v.actual
        ));
    }
    for v in ev
        .verdicts
        .iter()
        .filter(|v| v.applies && !v.pass && !unsure(v))
    {
        let listed = v.expect.name.as_ref().is_some_and(|n| x.fails.contains(n));
        if !listed {
            let hint = match &v.expect.name {
                Some(n) => format!("add {n:?} to `fails`"),
                None => "name it and add it to `fails`".into(),
            };
            j.disagreements.push(format!(
                "expectation {} failed (got {}), and the exercise does not say so ({hint})",
                v.what, v.actual
            ));
        }
    }
    for n in &x.fails {
        match ev
            .verdicts
            .iter()
            .find(|v| v.expect.name.as_ref() == Some(n))
        {
            None => j.disagreements.push(format!(
                "`fails` lists {n:?}, which this exercise leaves out with its step"
            )),
            Some(v) if v.pass => j.disagreements.push(format!(
                "expectation {n:?} ({}) passed (got {}), but the exercise says it fails",
                v.what, v.actual
            )),
            Some(v) => j
                .confirmed
                .push(format!("FAIL as predicted: {} (got {})", v.what, v.actual)),
        }
    }
}

/// 4. Every observed counter that moved has an explanation that holds, unless the exercise says
///    it varies: a race, whose change the report shows without an explanation.
fn check_explained(x: &Exercise, ev: &Evaluation, j: &mut Judgement) {
    for s in &ev.steps {
        for o in &s.observed {
            let moved = matches!(o.delta, Ok(d) if d != 0);
            let varies = x.varies.iter().any(|v| {
                v.step == s.name
                    && v.counter
                        .as_ref()
                        .is_some_and(|c| c.to_string() == o.counter.to_string())
            });
            if moved && !varies && o.declared && o.rule != ClassRule::Shown && o.explain.is_none() {
                j.disagreements.push(format!(
                    "step {}: Δ {} moved ({:+}) and no explanation of it holds",
                    s.name,
                    o.counter,
                    o.delta.as_ref().copied().unwrap_or(0)
                ));
            }
        }
    }
}

/// The judgement for the terminal.
pub fn render(x: &Exercise, j: &Judgement) -> String {
    let mut out = format!(
        "\nexercise {} (--set {}): the kernel {}\n",
        x.name,
        x.set_args().join(" --set "),
        if j.agreed() { "AGREED" } else { "DISAGREED" }
    );
    for d in &j.disagreements {
        out.push_str(&format!("  ✗ {d}\n"));
    }
    for c in &j.confirmed {
        out.push_str(&format!("  ✓ {c}\n"));
    }
    out
}

/// `cargo xtask lab N --exercise NAME...`: runs each exercise `repeat` times, prints each run's
/// report and judgement (or JSON), and says how many agreed.
pub fn run_cli(
    found: &LabDir,
    names: &[String],
    repeat: usize,
    json: bool,
    opts: &RunOptions,
) -> Result<crate::exit::Exit> {
    let spec = lab::load(&found.spec_path())?;
    let chosen = select(&spec, names).map_err(crate::exit::as_bad_input)?;
    let mut agreed = 0;
    let mut statuses = Vec::new();
    let total = chosen.len() * repeat;
    for i in 0..repeat {
        for x in &chosen {
            if repeat > 1 {
                eprintln!("exercise {} run {}/{repeat}", x.name, i + 1);
            }
            let (r, j) = run(found, opts, x)?;
            if json {
                let agreement = Agreement {
                    name: &x.name,
                    agreed: j.agreed(),
                    disagreements: &j.disagreements,
                    confirmed: &j.confirmed,
                };
                let mut v = lab::to_json(&r);
                v.exercise = Some(agreement);
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                lab::print(&r);
                print!("{}", render(x, &j));
            }
            crate::course::record_exercise(&r.spec.id, &x.name, j.agreed(), None);
            let extras = crate::notebook::Extras {
                predictions: None,
                exercise: Some((x, &j)),
            };
            let _ = crate::notebook::write(found, &r, &extras);
            agreed += usize::from(j.agreed());
            statuses.push(status(&r, &j));
        }
    }
    if total > 1 {
        println!(
            "{}: the kernel agreed in {agreed}/{total} exercise runs",
            found.id
        );
    }
    Ok(crate::exit::Exit::of_runs(&statuses))
}

/// An exercise run's status: the run's, and failed when the kernel disagreed (a run that could
/// not finish says nothing about the kernel: exit 255).
pub fn status(r: &RunResult, j: &Judgement) -> crate::check::RunStatus {
    match crate::check::lab_status(r) {
        crate::check::RunStatus::Passed if !j.agreed() => crate::check::RunStatus::Failed,
        s => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use guest::event::{Event, Exit};
    use std::collections::BTreeMap;

    const LAB: &str = r#"
id = "t"
title = "T"
[vars]
max = { default = "32M", help = "W's memory.max" }
[vm]
memory = "256M"
[[cgroup]]
name = "W"
memory_max = "${max}"
[[step]]
kind = "anon"
name = "touch"
cgroup = "W"
size = "64M"
[[observe]]
counter = "W/memory.events.oom_kill"
class = "exact"
[observe.explain]
"1" = [{ when = ["Δ W/memory.events.max > 0"], text = "killed at the limit" }]
"0" = "no OOM kill"
[[observe]]
counter = "W/memory.events.max"
[[expect]]
name = "killed"
step = "touch"
exit = "killed by SIGKILL"
why = "w"
[[expect]]
name = "oom"
step = "touch"
counter = "W/memory.events.oom_kill"
delta = "== 1"
why = "w"
[[exercise]]
name = "room"
set = { max = "128M" }
ask = "a"
answer = "b"
shows = ["touch: exit == exited 0", "touch: Δ W/memory.events.oom_kill == 0", "touch: Δ W/memory.events.max == 0"]
fails = ["killed", "oom"]
"#;

    fn run(max_events: u64, oom: u64, exit: Exit) -> (LabSpec, Evaluation) {
        let spec = crate::lab::parse_spec(LAB, "t").unwrap();
        let sample = |m: u64, o: u64| {
            let mut v = BTreeMap::new();
            v.insert("W/memory.events.max".to_string(), m);
            v.insert("W/memory.events.oom_kill".to_string(), o);
            v
        };
        let events = vec![
            Event::Hello {
                kernel: "6.12.117".into(),
            },
            Event::Sample {
                label: "start".into(),
                values: sample(0, 0),
            },
            Event::StepEnd {
                step: "touch".into(),
                exit,
                wall_ms: 5,
                stderr: String::new(),
                stdout: String::new(),
            },
            Event::Sample {
                label: "after:touch".into(),
                values: sample(max_events, oom),
            },
            Event::End { frames: 4 },
        ];
        let ev = report::evaluate(&spec, &report::tests::stream_of(events));
        (spec, ev)
    }

    fn default_snapshot() -> String {
        let (spec, ev) = run(35, 1, Exit::Signaled { signal: 9 });
        report::render_snapshot(&spec, &ev)
    }

    #[test]
    fn the_kernel_agrees_when_facts_changes_and_failures_match() {
        let (spec, ev) = run(0, 0, Exit::Exited { code: 0 });
        let x = &spec.exercises[0];
        let j = judge(x, &spec, &ev, Some(&default_snapshot()), &[]);
        assert!(j.agreed(), "{:?}", j.disagreements);
        assert!(
            j.confirmed.iter().any(|c| c.contains("FAIL as predicted")),
            "{j:?}"
        );
    }

    #[test]
    fn every_kind_of_disagreement_is_named() {
        // The task is killed anyway, and the max events moved (undeclared, and unexplained).
        let (spec, ev) = run(35, 0, Exit::Signaled { signal: 9 });
        let x = &spec.exercises[0];
        let j = judge(x, &spec, &ev, Some(&default_snapshot()), &[]);
        let all = j.disagreements.join("\n");
        assert!(
            all.contains("touch: exit == exited 0: got killed by SIGKILL"),
            "{all}"
        );
        assert!(
            all.contains("\"killed\" (step touch killed by SIGKILL) passed"),
            "{all}"
        );
        assert!(
            !all.contains("Δ W/memory.events.oom_kill changed 1 -> 0"),
            "named by shows: {all}"
        );
        assert!(
            all.contains("Δ W/memory.events.max moved (+35) and no explanation"),
            "{all}"
        );
        // An undeclared change of class.
        let mut x = x.clone();
        x.shows.retain(|f| !f.written.contains("oom_kill"));
        let j = judge(&x, &spec, &ev, Some(&default_snapshot()), &[]);
        assert!(
            j.disagreements.iter().any(|d| d.contains(
                "Δ W/memory.events.oom_kill changed 1 -> 0, and the exercise does not say so"
            )),
            "{:?}",
            j.disagreements
        );
    }

    #[test]
    fn declared_races_are_not_judged() {
        let (spec, ev) = run(0, 0, Exit::Exited { code: 0 });
        let mut x = spec.exercises[0].clone();
        x.fails = vec!["killed".into()];
        x.may_fail = vec!["oom".into()];
        x.shows.retain(|f| !f.written.contains("oom_kill"));
        x.varies = vec![
            "touch: Δ W/memory.events.oom_kill"
                .to_string()
                .try_into()
                .unwrap(),
        ];
        let j = judge(&x, &spec, &ev, Some(&default_snapshot()), &[]);
        assert!(j.agreed(), "{:?}", j.disagreements);
        assert!(
            j.confirmed.iter().any(|c| c.contains("may go either way")),
            "{j:?}"
        );
    }

    #[test]
    fn an_invalid_run_is_only_reported_as_such() {
        let (spec, mut ev) = run(0, 0, Exit::Exited { code: 0 });
        ev.problems
            .push("no counters were sampled around step touch".into());
        let j = judge(
            &spec.exercises[0],
            &spec,
            &ev,
            Some(&default_snapshot()),
            &[],
        );
        assert_eq!(j.disagreements.len(), 1, "{:?}", j.disagreements);
    }

    #[test]
    fn exercises_are_selected_by_name_with_a_suggestion() {
        let spec = crate::lab::parse_spec(LAB, "t").unwrap();
        assert_eq!(select(&spec, &["all".into()]).unwrap().len(), 1);
        let e = select(&spec, &["rooom".into()]).unwrap_err().to_string();
        assert!(e.contains("did you mean \"room\""), "{e}");
    }
}
