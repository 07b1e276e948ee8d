//! An evaluated run (evaluate.rs) for people and for the snapshot: the student's report
//! (numbers beside classes), the timeline chart's series, the normalised snapshot (classes
//! only), its comparison with insta, and the facts that changed.

pub use crate::evaluate::{
    Evaluation, Observed, StepResult, Verdict, class, describe_expect, evaluate,
};
use guest::spec::{CounterExpr, LabSpec};
use std::fmt::Write;
use std::path::Path;

/// How much of the terminal report to show, and how wide to wrap it.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    /// Every observed counter; otherwise those that moved and those the lab is about (an
    /// expectation judges them here, or an explanation of their class holds).
    pub full: bool,
    pub width: usize,
}

/// The full report, 100 columns wide (report.txt, tests).
pub fn render_terminal(spec: &LabSpec, ev: &Evaluation) -> String {
    render_terminal_with(
        spec,
        ev,
        Style {
            full: true,
            width: 100,
        },
    )
}

/// The unit of an observed counter expression.
pub fn unit(c: &CounterExpr) -> crate::units::Unit {
    let terms: Vec<&str> = c.terms.iter().map(|(_, t)| t.as_str()).collect();
    crate::units::unit_of_expr(&terms)
}

/// The report for the student: per step, each counter's real change in its unit beside its
/// class and what it means, the OOM victims, the timeline and the trace; then every
/// expectation with its verdict and why.
pub fn render_terminal_with(spec: &LabSpec, ev: &Evaluation, style: Style) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\n== {} — {}", spec.id, spec.title);
    if !spec.claim.is_empty() {
        out.push_str(&crate::units::wrap(
            &spec.claim,
            style.width,
            "claim under test: ",
            "  ",
        ));
    }
    for s in &ev.steps {
        out.push_str(&step_text(spec, ev, s, style));
    }
    out.push_str(&kills_elsewhere(ev, style.width));
    out.push_str(&expectations_text(ev, style.width));
    out
}

/// One step of the report: how it ended, what its workload said, its counters, its OOM
/// victims, its sparklines and its reclaim trace.
fn step_text(spec: &LabSpec, ev: &Evaluation, s: &StepResult, style: Style) -> String {
    use crate::units::wrap;
    let (mut out, w) = (String::new(), style.width);
    let exit = s.ended();
    let _ = writeln!(
        out,
        "\nstep {} ({}): {exit} after {:.2}s",
        s.name,
        s.describe,
        s.wall_ms as f64 / 1000.0
    );
    if !s.stderr.trim().is_empty() {
        out.push_str(&wrap(s.stderr.trim(), w, "  workload said: ", "    "));
    }
    out.push_str(&counters_text(spec, s, style));
    for k in ev
        .oom_kills
        .iter()
        .filter(|k| k.during.as_deref() == Some(s.name.as_str()))
    {
        out.push_str(&wrap(&k.describe(), w, "  OOM killer: ", "    "));
    }
    out.push_str(&crate::chart::sparklines(spec, ev, &s.name, w));
    if let Some(t) = ev.trace(Some(&s.name)) {
        out.push_str("  reclaim trace (vmscan tracepoints):\n");
        out.push_str(&t.text);
    }
    out
}

/// A step's observed counters, each with its change, class and explanation: every one when
/// `style.full`, else those that moved and those the lab is about (the rest counted).
fn counters_text(spec: &LabSpec, s: &StepResult, style: Style) -> String {
    let (mut out, w) = (String::new(), style.width);
    let judged = |c: &CounterExpr| {
        spec.expect
            .iter()
            .any(|e| e.counter() == Some(c) && e.step.as_deref().is_none_or(|x| x == s.name))
    };
    let (shown, hidden): (Vec<&Observed>, Vec<&Observed>) = s.observed.iter().partition(|o| {
        style.full || !matches!(o.delta, Ok(0)) || o.explain.is_some() || judged(&o.counter)
    });
    let width = shown
        .iter()
        .map(|o| o.counter.to_string().chars().count())
        .max()
        .unwrap_or(20)
        .min(w.saturating_sub(40));
    for o in shown {
        let (num, cls) = match &o.delta {
            Ok(d) => (
                crate::units::human_delta(*d, unit(&o.counter)),
                class(o.rule, *d).unwrap_or_else(|| "(noisy, not snapshotted)".into()),
            ),
            Err(t) => ("?".into(), crate::evaluate::missing_text(t)),
        };
        let _ = writeln!(
            out,
            "  Δ {:<width$}  {num:>24}  {cls}",
            o.counter.to_string()
        );
        if let Some(words) = &o.explain {
            out.push_str(&crate::units::wrap(words, w, "      → ", "        "));
        }
    }
    if !hidden.is_empty() {
        let _ = writeln!(
            out,
            "  ({} more counter(s) stayed at 0 and the lab says nothing about them here; --full shows every counter)",
            hidden.len()
        );
    }
    out
}

/// The OOM victims the run does not place in a step.
fn kills_elsewhere(ev: &Evaluation, w: usize) -> String {
    let mut out = String::new();
    let elsewhere: Vec<&crate::oom::Kill> =
        ev.oom_kills.iter().filter(|k| k.during.is_none()).collect();
    if !elsewhere.is_empty() {
        let _ = writeln!(
            out,
            "\nthe OOM killer also killed (when, the run does not say):"
        );
        for k in elsewhere {
            out.push_str(&crate::units::wrap(&k.describe(), w, "  ", "    "));
        }
    }
    out
}

/// Every expectation with its verdict, what the kernel gave, and why.
fn expectations_text(ev: &Evaluation, w: usize) -> String {
    let mut out = String::new();
    if ev.verdicts.is_empty() {
        return out;
    }
    let _ = writeln!(out, "\nexpectations:");
    for v in &ev.verdicts {
        let got = match (v.actual.parse::<u64>(), v.expect.counter()) {
            (Ok(n), Some(c)) if n != 0 => crate::units::human(n, unit(c)),
            _ => v.actual.clone(),
        };
        let _ = writeln!(
            out,
            "  {}  {}  (got {got})",
            verdict_word(v).to_uppercase(),
            v.what,
        );
        out.push_str(&crate::units::wrap(
            &v.expect.why,
            w,
            "        why: ",
            "             ",
        ));
    }
    out
}

/// The normalised report: qualitative facts only, stable across runs and machines.
pub fn render_snapshot(spec: &LabSpec, ev: &Evaluation) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "lab: {}", spec.id);
    for s in &ev.steps {
        let exit = s.ended();
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
pub fn verdict_word(v: &Verdict) -> &'static str {
    match (v.applies, v.pass) {
        (false, _) => "n/a",
        (true, true) => "pass",
        (true, false) => "FAIL",
    }
}

/// Whether insta's snapshot workflow was asked for (`INSTA_UPDATE`, `INSTA_FORCE_PASS`).
pub fn author_mode() -> bool {
    ["INSTA_UPDATE", "INSTA_FORCE_PASS"]
        .iter()
        .any(|v| std::env::var_os(v).is_some())
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

/// A line diff (`similar`'s Myers diff): `- ` lines only in `old`, `+ ` only in `new`,
/// unchanged lines left out. Empty when the texts have the same lines.
pub fn line_diff(old: &str, new: &str) -> String {
    use similar::{ChangeTag, TextDiff};
    let (a, b): (Vec<&str>, Vec<&str>) = (old.lines().collect(), new.lines().collect());
    let diff = TextDiff::from_slices(&a, &b);
    let changes = diff.iter_all_changes().filter_map(|c| match c.tag() {
        ChangeTag::Equal => None,
        ChangeTag::Delete => Some(format!("  - {}\n", c.value())),
        ChangeTag::Insert => Some(format!("  + {}\n", c.value())),
    });
    changes.collect()
}

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

/// Whether a run's facts are those of labs/<id>/snapshots/<name>.snap. A lab author who asks
/// for insta (`INSTA_UPDATE` or `INSTA_FORCE_PASS` set) gets its workflow: its diff, and
/// `.snap.new` files for `cargo insta review` or (`INSTA_UPDATE=always`) the snapshot rewritten.
/// Anyone else, a student editing a lab included, gets a quiet comparison that writes nothing:
/// the report names the facts that changed.
pub fn check_snapshot(dir: &Path, name: &str, text: &str) -> bool {
    if !author_mode() {
        return read_snapshot(dir, name).is_some_and(|s| s.trim_end() == text.trim_end());
    }
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
    use guest::event::{Event, Exit, Frame, Stream, decode_stream, encode_frame};
    use guest::spec::ClassRule;
    use std::collections::BTreeMap;

    /// Every committed snapshot lists exactly the lab's expectations, as lab.toml words them:
    /// an expectation edited without the snapshot recorded again fails here, before any VM.
    #[test]
    fn every_snapshot_lists_the_labs_expectations() {
        for l in crate::lab::catalog().unwrap() {
            let spec = crate::lab::load(&l.spec_path()).unwrap();
            let mut want: Vec<String> = spec
                .expect
                .iter()
                .map(crate::evaluate::describe_expect)
                .collect();
            want.sort();
            let dir = l.dir.join("snapshots");
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                    continue;
                };
                let Some(name) = name.strip_suffix(".snap") else {
                    continue;
                };
                let body = read_snapshot(&dir, name).unwrap();
                let mut got: Vec<String> = snapshot_facts(&body)
                    .into_iter()
                    .filter(|(section, _, _)| section == "expectations")
                    .map(|(_, what, _)| what)
                    .collect();
                got.sort();
                assert_eq!(
                    got, want,
                    "labs/{}/snapshots/{name}.snap does not list lab.toml's expectations: run the lab with INSTA_UPDATE=always and review the diff",
                    l.id
                );
            }
        }
    }

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
