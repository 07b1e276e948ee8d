//! A run's result for people (the explained report, the problems, the verdict) and for tools
//! (`--json`, whose schema README.md documents).

use super::RunResult;
use crate::evaluate::{StepResult, StepTrace, Tick, Verdict};
use crate::{health, progress, report};
use guest::event::Frame;
use guest::spec::LabSpec;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

/// `lab --json`: the whole result of one run, for notebooks and tools (the schema is
/// documented in README.md).
#[derive(Serialize)]
pub struct RunJson<'a> {
    schema: &'static str,
    lab: &'a str,
    title: &'a str,
    kernel: Option<&'a str>,
    passed: bool,
    variant: Option<VariantJson<'a>>,
    problems: &'a [String],
    health: &'a health::Health,
    steps: Vec<StepJson<'a>>,
    expectations: Vec<VerdictJson<'a>>,
    snapshot: SnapshotJson<'a>,
    phases_secs: BTreeMap<&'a str, f64>,
    total_secs: f64,
    guest: GuestJson,
    timeline_svg: Option<&'a Path>,
    trace: &'a [StepTrace],
    timeline: &'a [Tick],
    spec: &'a LabSpec,
    frames: &'a [Frame],
    /// With `--exercise`: whether the kernel agreed with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exercise: Option<crate::exercise::Agreement<'a>>,
}

#[derive(Serialize)]
struct VariantJson<'a> {
    set: &'a BTreeMap<String, String>,
    skipped_steps: &'a [String],
}

#[derive(Serialize)]
struct StepJson<'a> {
    name: &'a str,
    describe: &'a str,
    exit: Option<String>,
    wall_ms: u64,
    stderr: &'a str,
    observed: Vec<ObservedJson<'a>>,
}

/// A counter's change and class, or the counter the kernel did not report.
#[derive(Serialize)]
struct ObservedJson<'a> {
    counter: String,
    delta: Option<i64>,
    /// Its value after the step.
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    class: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    missing: Option<&'a str>,
}

#[derive(Serialize)]
struct VerdictJson<'a> {
    what: &'a str,
    actual: &'a str,
    pass: bool,
    applies: bool,
    why: &'a str,
}

#[derive(Serialize)]
struct SnapshotJson<'a> {
    matched: Option<bool>,
    diff_from_default: Option<&'a str>,
}

#[derive(Serialize)]
struct GuestJson {
    ready_ms: Option<u64>,
    end_ms: Option<u64>,
}

/// The whole result of a run, ready to serialize.
pub fn to_json(r: &RunResult) -> RunJson<'_> {
    RunJson {
        schema: "kernel-lab/result/1",
        lab: &r.spec.id,
        title: &r.spec.title,
        kernel: r.eval.kernel.as_deref(),
        passed: r.passed(),
        variant: r.variant.as_ref().map(|(set, skipped)| VariantJson {
            set,
            skipped_steps: skipped,
        }),
        problems: &r.problems,
        health: &r.health,
        steps: r.eval.steps.iter().map(step_json).collect(),
        expectations: r.eval.verdicts.iter().map(verdict_json).collect(),
        snapshot: SnapshotJson {
            matched: r.snapshot_matched,
            diff_from_default: r.variant_diff.as_deref(),
        },
        phases_secs: r
            .phases
            .list
            .iter()
            .map(|(n, d)| (n.as_str(), d.as_secs_f64()))
            .collect(),
        total_secs: r.total.as_secs_f64(),
        guest: GuestJson {
            ready_ms: r.eval.ready_ms,
            end_ms: r.eval.end_ms,
        },
        timeline_svg: r.timeline_svg.as_deref(),
        trace: &r.eval.traces,
        timeline: &r.eval.timeline,
        spec: &r.spec,
        frames: &r.frames,
        exercise: None,
    }
}

fn step_json(s: &StepResult) -> StepJson<'_> {
    let observed = s.observed.iter().map(|o| match &o.delta {
        Ok(d) => ObservedJson {
            counter: o.counter.to_string(),
            delta: Some(*d),
            value: o.value,
            class: Some(report::class(o.rule, *d)),
            missing: None,
        },
        Err(t) => ObservedJson {
            counter: o.counter.to_string(),
            delta: None,
            value: None,
            class: None,
            missing: Some(t),
        },
    });
    StepJson {
        name: &s.name,
        describe: &s.describe,
        exit: s.exit.map(|e| e.to_string()),
        wall_ms: s.wall_ms,
        stderr: &s.stderr,
        observed: observed.collect(),
    }
}

fn verdict_json(v: &Verdict) -> VerdictJson<'_> {
    VerdictJson {
        what: &v.what,
        actual: &v.actual,
        pass: v.pass,
        applies: v.applies,
        why: &v.expect.why,
    }
}

/// Prints the explained report for a learner (see [`print_with`]).
pub fn print(r: &RunResult) {
    print_with(r, false)
}

/// Prints the explained report (every counter when `full`, else those that moved and those
/// the lab is about, wrapped to the terminal; report.txt always gets the full report), the
/// validity problems with the console tail, the kernel's health, a variant's diff, and the
/// verdict.
pub fn print_with(r: &RunResult, full: bool) {
    if r.shell {
        match r.problems.is_empty() {
            true => println!("{}: shell session ended, the VM powered off", r.spec.id),
            false => println!(
                "{}: shell session ended badly: {}",
                r.spec.id,
                r.problems.join("; ")
            ),
        }
        return;
    }
    if r.eval.samples > 0 {
        let text = report::render_terminal(&r.spec, &r.eval);
        let _ = std::fs::write(r.kept.join("report.txt"), &text);
        let style = report::Style {
            full,
            width: crate::units::terminal_width(),
        };
        print!("{}", report::render_terminal_with(&r.spec, &r.eval, style));
    }
    if let Some(svg) = &r.timeline_svg {
        println!("\ntimeline chart: {}", svg.display());
        println!(
            "lab notebook (report, chart with values, questions): {}",
            r.kept.join("index.html").display()
        );
    }
    print!("{}", not_valid(r));
    print!("{}", unhealthy(r));
    print!("{}", variant(r));
    print!("{}", footer(r));
}

/// Why the run is not valid, with the console's tail.
fn not_valid(r: &RunResult) -> String {
    if r.problems.is_empty() {
        return String::new();
    }
    let mut out = String::from("\nthe run is not valid:\n");
    for p in &r.problems {
        let _ = writeln!(out, "  - {p}");
    }
    let console = r.kept.join("console.log");
    let tail = progress::tail(&console, 25);
    let _ = writeln!(out, "  console tail ({}):\n{tail}", console.display());
    out
}

/// The kernel's health findings, if any.
fn unhealthy(r: &RunResult) -> String {
    if r.health.healthy() {
        return String::new();
    }
    let mut out = String::from("\nthe kernel is not healthy:\n");
    for f in &r.health.findings {
        let _ = writeln!(out, "  - {f}");
    }
    let _ = writeln!(out, "  (console: {})", r.kept.join("console.log").display());
    out
}

/// A `--set` variant: what was set, what was left out, how the facts differ from the default.
fn variant(r: &RunResult) -> String {
    let (Some((sets, skipped)), Some(diff)) = (&r.variant, &r.variant_diff) else {
        return String::new();
    };
    let sets: Vec<String> = sets.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut out = format!(
        "\nvariant {}: facts compared with the lab's default snapshot\n",
        sets.join(" ")
    );
    if !skipped.is_empty() {
        let _ = writeln!(out, "  steps left out (size 0): {}", skipped.join(", "));
    }
    match diff.is_empty() {
        true => out.push_str("  (no difference: the same facts as the default run)\n"),
        false => out.push_str(diff),
    }
    out
}

/// The snapshot, the phases, the guest's own times, the kernel, and the verdict.
fn footer(r: &RunResult) -> String {
    let mut out = String::new();
    let id = &r.spec.id;
    if let Some(matched) = r.snapshot_matched {
        out.push_str(&snapshot_verdict(r, matched));
    }
    let total = r.total.as_secs_f64();
    let _ = writeln!(out, "phases: {}, total {total:.2}s", r.phases.render());
    if let (Some(ready), Some(end)) = (r.eval.ready_ms, r.eval.end_ms) {
        let secs = |ms: u64| ms as f64 / 1000.0;
        let _ = writeln!(
            out,
            "  in the guest: boot to agent ready {:.2}s, lab steps and sampling {:.2}s",
            secs(ready),
            secs(end - ready)
        );
    }
    let _ = writeln!(out, "kernel health: {}", r.health.summary());
    let built = if r.kernel_built {
        "built now"
    } else {
        "cached"
    };
    let _ = writeln!(
        out,
        "kernel {} ({built}); console log and raw results: {}",
        r.eval.kernel.as_deref().unwrap_or("?"),
        r.kept.display()
    );
    let verdict = match (&r.variant, r.passed()) {
        (Some(_), true) => "variant ran to the end (facts above; not judged)",
        (Some(_), false) => "variant did not run to the end",
        (None, true) => "PASS",
        (None, false) => "FAIL",
    };
    let _ = writeln!(out, "{id}: {verdict}");
    out
}

/// Whether the snapshot matched. A lab author (insta's workflow: INSTA_UPDATE, CI) reviews
/// with insta; a student editing a lab sees the facts that changed and how to record them.
fn snapshot_verdict(r: &RunResult, matched: bool) -> String {
    let id = &r.spec.id;
    match (matched, report::author_mode()) {
        (true, _) => format!("\nsnapshot {id}.snap: matches\n"),
        (false, true) => format!(
            "\nsnapshot {id}.snap: DIFFERS (see the diff above; review with `cargo insta review`)\n"
        ),
        (false, false) => {
            let mut out =
                format!("\nsnapshot {id}.snap: DIFFERS: the kernel's facts are not the lab's\n");
            for c in &r.snapshot_changes {
                let _ = writeln!(out, "  {c}");
            }
            if r.snapshot_changes.is_empty() {
                out.push_str("  (the lab has no snapshot yet)\n");
            }
            let _ = writeln!(
                out,
                "  if you changed the lab on purpose, record its new facts with `INSTA_UPDATE=always cargo xtask lab {id}` (or review them: `INSTA_UPDATE=new cargo xtask lab {id}`, then `cargo insta review`)"
            );
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use guest::event::{Event, Exit};
    use std::time::Duration;

    /// The keys README.md documents for `lab --json`, at every level.
    #[test]
    fn the_json_result_has_the_documented_schema() {
        let text = "id = \"t\"\ntitle = \"T\"\n[vm]\nmemory = \"256M\"\n[[step]]\nkind = \"anon\"\nname = \"a\"\nsize = \"1M\"\n[[expect]]\nstep = \"a\"\ncounter = \"vmstat.x + vmstat.y\"\ndelta = \"> 0\"\nwhy = \"w\"\n[[observe]]\ncounter = \"vmstat.x\"\n";
        let spec = crate::lab::parse_spec(text, "t").unwrap();
        let sample = |label: &str, n| Event::Sample {
            label: label.into(),
            values: [("vmstat.x".to_string(), n)].into(),
        };
        let stream = report::tests::stream_of(vec![
            Event::Ready,
            sample("start", 1),
            Event::Ticks {
                step: "a".into(),
                keys: vec!["vmstat.x".into()],
                rows: vec![(4, vec![2])],
                cost_us: 10,
            },
            Event::StepEnd {
                step: "a".into(),
                exit: Exit::Exited { code: 0 },
                wall_ms: 5,
                stderr: String::new(),
                stdout: String::new(),
            },
            sample("after:a", 3),
            Event::End { frames: 5 },
        ]);
        let mut phases = crate::progress::Phases::default();
        phases.add("qemu", Duration::from_millis(1500));
        let r = RunResult {
            eval: report::evaluate(&spec, &stream),
            frames: stream.frames,
            spec,
            problems: vec![],
            snapshot_matched: Some(true),
            snapshot_changes: vec![],
            variant: None,
            exercise: None,
            variant_diff: None,
            shell: false,
            health: Default::default(),
            phases,
            total: Duration::from_secs(2),
            kernel_built: false,
            kept: "/k".into(),
            timeline_svg: None,
        };
        let v = serde_json::to_value(to_json(&r)).unwrap();
        let keys = |v: &serde_json::Value| -> Vec<String> {
            v.as_object().unwrap().keys().cloned().collect()
        };
        assert_eq!(
            keys(&v),
            [
                "expectations",
                "frames",
                "guest",
                "health",
                "kernel",
                "lab",
                "passed",
                "phases_secs",
                "problems",
                "schema",
                "snapshot",
                "spec",
                "steps",
                "timeline",
                "timeline_svg",
                "title",
                "total_secs",
                "trace",
                "variant"
            ]
        );
        assert_eq!(v["schema"], "kernel-lab/result/1");
        assert_eq!(
            keys(&v["steps"][0]),
            ["describe", "exit", "name", "observed", "stderr", "wall_ms"]
        );
        let missing = &v["steps"][0]["observed"][1];
        let seen = &v["steps"][0]["observed"][0];
        assert_eq!(keys(seen), ["class", "counter", "delta", "value"]);
        assert_eq!((&seen["delta"], &seen["value"]), (&2.into(), &3.into()));
        assert_eq!(keys(missing), ["counter", "delta", "missing"]);
        assert_eq!(missing["missing"], "vmstat.y");
        assert_eq!(
            keys(&v["expectations"][0]),
            ["actual", "applies", "pass", "what", "why"]
        );
        assert_eq!(keys(&v["snapshot"]), ["diff_from_default", "matched"]);
        assert_eq!(v["phases_secs"]["qemu"], 1.5);
        assert_eq!(keys(&v["guest"]), ["end_ms", "ready_ms"]);
        assert_eq!(keys(&v["timeline"][0]), ["step", "t_ms", "values"]);
        assert_eq!(keys(&v["frames"][0]), ["event", "seq", "t_ms"]);
        assert_eq!(v["spec"]["step"][0]["kind"], "anon");
    }
}
