//! `--predict`: predict, then observe. Before the VM boots the student says, for each fact the
//! lab explains, which class the kernel will show (`step read: W/memory.stat.pgscan_direct,
//! 0 or >0?`); after the run every prediction is scored against the kernel, with the lab's own
//! explanation of what it showed for every miss. An `[[exercise]]` (or a `--set` variant) asks
//! the same questions beside what the lab's default run showed: predict what changes.
//!
//! Answers come from the terminal, or from a file or piped stdin (for tests and classes): one
//! answer per line in question order, or `step: counter = answer` lines (`--questions` prints
//! that template), with `[exercise NAME]` headers for exercise runs. Parsing, questions and
//! scoring are pure; the terminal and files are at the edges.

use crate::exercise::Judgement;
use crate::exit::{Exit, as_bad_input};
use crate::lab::{self, LabDir, RunOptions, RunResult};
use crate::report::{self, Evaluation};
use crate::units::{human_delta, wrap};
use anyhow::{Context, Result, bail};
use guest::exercise::{Exercise, Varies};
use guest::spec::{ClassRule, CounterExpr, LabSpec};
use std::io::{BufRead, IsTerminal, Read, Write};

/// One prediction to make: the class of a counter's change over a step.
#[derive(Debug, Clone, PartialEq)]
pub struct Question {
    pub step: String,
    /// `read-file 48M in W`.
    pub describe: String,
    pub counter: CounterExpr,
    pub rule: ClassRule,
    /// The classes the lab explains, in the order offered (`0`, `>0`; or numbers).
    pub choices: Vec<String>,
    /// What the lab's default run showed (for an exercise or a `--set` variant).
    pub default: Option<String>,
}

impl Question {
    /// `read: W/memory.stat.pgscan_direct`: how answer files name it.
    pub fn key(&self) -> String {
        format!("{}: {}", self.step, self.counter)
    }

    fn offered(&self) -> String {
        let mut c = self.choices.join(" or ");
        if self.rule == ClassRule::Exact {
            c.push_str(" (or another number, or >0)");
        }
        c
    }

    /// The answer as a class, `None` for a skip; `Err` says what is accepted.
    pub fn parse(&self, raw: &str) -> Result<Option<String>, String> {
        let a = raw.trim().to_lowercase().replace(' ', "");
        if a.is_empty() || a == "?" || a == "skip" {
            return Ok(None);
        }
        let sign = match a.as_str() {
            "0" | "=0" | "==0" | "zero" | "none" | "no" => Some("0"),
            ">0" | "+" | "more" | "some" | "yes" | "up" | "positive" => Some(">0"),
            "<0" | "-" | "less" | "down" | "negative" => Some("<0"),
            _ => None,
        };
        let bad = || {
            format!(
                "{:?} is not an answer to `{}`: say {} (? skips)",
                raw.trim(),
                self.key(),
                self.offered()
            )
        };
        match self.rule {
            // An exact count, or just "it moves" (`>0`: right for any count above 0).
            ClassRule::Exact => match (a.trim_start_matches("==").parse::<i64>(), sign) {
                (Ok(n), _) => Ok(Some(n.to_string())),
                (_, Some(s @ ("0" | ">0"))) => Ok(Some(s.into())),
                _ => Err(bad()),
            },
            _ => sign.map(|s| Some(s.to_string())).ok_or_else(bad),
        }
    }
}

/// The questions for a lab as it will run (after `--set`): every counter of `[[observe]]` with
/// an explanation, at each step it is observed at (its `steps`, default all) where it is the
/// step's own group's or the machine's, or where an expectation judges it. `default`: the
/// lab's default snapshot, for "what changes"; `varies`: an exercise's races (facts that
/// differ from run to run), which are not asked.
pub fn questions(spec: &LabSpec, default: Option<&str>, varies: &[Varies]) -> Vec<Question> {
    let facts = default.map(report::snapshot_facts).unwrap_or_default();
    let mut out = Vec::new();
    for step in &spec.steps {
        for o in &spec.observe {
            let here = o.steps.is_empty() || o.steps.iter().any(|s| s == step.name());
            if o.class == ClassRule::Shown || o.explain.is_empty() || !here {
                continue;
            }
            let own = o.counter.cgroups().all(|cg| step.cgroup() == Some(cg));
            let judged = spec.expect.iter().any(|e| {
                e.counter() == Some(&o.counter)
                    && e.step.as_deref().is_none_or(|s| s == step.name())
            });
            let race = varies
                .iter()
                .any(|v| v.step == step.name() && v.counter.as_ref() == Some(&o.counter));
            if !own && !judged || race {
                continue;
            }
            let mut choices: Vec<String> = match o.class {
                ClassRule::Exact => {
                    let mut n: Vec<i64> = o.explain.keys().filter_map(|k| k.parse().ok()).collect();
                    n.sort();
                    n.iter().map(i64::to_string).collect()
                }
                _ => vec!["0".into(), ">0".into()],
            };
            if o.class == ClassRule::Sign && o.explain.contains_key("<0") {
                choices.push("<0".into());
            }
            let section = format!("step {}", step.name());
            let name = format!("Δ {}", o.counter);
            out.push(Question {
                step: step.name().to_string(),
                describe: crate::evaluate::describe_step(step),
                counter: o.counter.clone(),
                rule: o.class,
                choices,
                default: facts
                    .iter()
                    .find(|(s, n, _)| *s == section && *n == name)
                    .map(|f| f.2.clone()),
            });
        }
    }
    out
}

/// The answers file template (`--questions`): one `step: counter = ?` line per question.
pub fn template(qs: &[Question], section: Option<&str>) -> String {
    let mut out = String::new();
    if let Some(s) = section {
        out.push_str(&format!("[exercise {s}]\n"));
    }
    for q in qs {
        let was = q
            .default
            .as_ref()
            .map(|d| format!("; the default run showed {d}"))
            .unwrap_or_default();
        out.push_str(&format!("{} = ?    # {}{was}\n", q.key(), q.offered()));
    }
    out
}

/// Where the answers come from.
pub enum Source {
    /// Asked one by one on the terminal (re-asked when not understood).
    Terminal,
    /// Lines from a file or piped stdin; `origin` names it in errors.
    Text(AnswerText),
}

/// Answer lines, read in order across the runs of one command.
pub struct AnswerText {
    origin: String,
    /// (line number, `[exercise NAME]` section, key, answer).
    lines: Vec<(usize, Option<String>, Option<String>, String)>,
    next: usize,
}

impl AnswerText {
    pub fn parse(origin: &str, text: &str) -> Result<AnswerText> {
        let mut lines = Vec::new();
        let mut section = None;
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            if let Some(name) = line
                .strip_prefix("[exercise ")
                .and_then(|r| r.strip_suffix(']'))
            {
                section = Some(name.trim().to_string());
                continue;
            }
            // `step: counter = answer` (keys always hold a `:`, answers never do), or a bare answer.
            match line.rsplit_once('=').filter(|(k, _)| k.contains(':')) {
                Some((k, a)) => lines.push((
                    i + 1,
                    section.clone(),
                    Some(squeeze(k)),
                    a.trim().to_string(),
                )),
                None if line.contains(':') => bail!(
                    "{origin}:{}: write `step: counter = answer` or just the answer",
                    i + 1
                ),
                None => lines.push((i + 1, section.clone(), None, line.to_string())),
            }
        }
        Ok(AnswerText {
            origin: origin.to_string(),
            lines,
            next: 0,
        })
    }

    /// The answers to `qs` (one run; `section`: the exercise it is): keyed lines of that
    /// section (or of none), else the next bare lines in order.
    fn answer(&mut self, qs: &[Question], section: Option<&str>) -> Result<Vec<Option<String>>> {
        let keyed: Vec<&(usize, Option<String>, Option<String>, String)> = self
            .lines
            .iter()
            .filter(|l| l.2.is_some() && (l.1.is_none() || l.1.as_deref() == section))
            .collect();
        if !keyed.is_empty() {
            let keys: Vec<String> = qs.iter().map(|q| squeeze(&q.key())).collect();
            for (n, _, k, _) in &keyed {
                let k = k.as_deref().unwrap_or("");
                if !keys.iter().any(|x| x == k) {
                    let closest = keys
                        .iter()
                        .min_by_key(|x| lab::edit_distance(k, x))
                        .cloned()
                        .unwrap_or_default();
                    bail!(
                        "{}:{n}: no question `{k}` in this run (closest: `{closest}`; `--questions` lists them)",
                        self.origin
                    );
                }
            }
            return qs
                .iter()
                .map(|q| {
                    let key = squeeze(&q.key());
                    match keyed.iter().rev().find(|l| l.2.as_deref() == Some(&key)) {
                        Some((n, _, _, a)) => q
                            .parse(a)
                            .map_err(|e| anyhow::anyhow!("{}:{n}: {e}", self.origin)),
                        None => Ok(None),
                    }
                })
                .collect();
        }
        let mut out = Vec::new();
        for q in qs {
            while self.next < self.lines.len() && self.lines[self.next].2.is_some() {
                self.next += 1;
            }
            match self.lines.get(self.next) {
                Some((n, _, _, a)) => {
                    out.push(
                        q.parse(a)
                            .map_err(|e| anyhow::anyhow!("{}:{n}: {e}", self.origin))?,
                    );
                    self.next += 1;
                }
                None => out.push(None),
            }
        }
        Ok(out)
    }
}

fn squeeze(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The source for this command: `--answers FILE`, else the terminal, else piped stdin.
pub fn source(answers: Option<&std::path::Path>) -> Result<Source> {
    if let Some(p) = answers {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        return Ok(Source::Text(AnswerText::parse(
            &p.display().to_string(),
            &text,
        )?));
    }
    if std::io::stdin().is_terminal() {
        return Ok(Source::Terminal);
    }
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("reading the answers from stdin")?;
    Ok(Source::Text(AnswerText::parse("stdin", &text)?))
}

/// Asks (or reads) the answers to `qs`, before anything boots.
pub fn ask(
    qs: &[Question],
    src: &mut Source,
    section: Option<&str>,
) -> Result<Vec<Option<String>>> {
    match src {
        Source::Text(t) => t.answer(qs, section),
        Source::Terminal => {
            eprintln!(
                "\npredict, then observe: for each counter, say what the kernel will show over the step (0: it stays at 0, >0: it goes up; ? skips). You are scored after the run.\n"
            );
            let stdin = std::io::stdin();
            let mut out = Vec::new();
            let mut step = "";
            for (i, q) in qs.iter().enumerate() {
                if q.step != step {
                    step = &q.step;
                    eprintln!("step {} ({}):", q.step, q.describe);
                }
                let was = q
                    .default
                    .as_ref()
                    .map(|d| format!(" [default run: {d}]"))
                    .unwrap_or_default();
                loop {
                    eprint!(
                        "  [{}/{}] Δ {}{was}: {}? ",
                        i + 1,
                        qs.len(),
                        q.counter,
                        q.offered()
                    );
                    let _ = std::io::stderr().flush();
                    let mut line = String::new();
                    if stdin.lock().read_line(&mut line)? == 0 {
                        eprintln!();
                        out.resize(qs.len(), None);
                        return Ok(out);
                    }
                    match q.parse(&line) {
                        Ok(a) => {
                            out.push(a);
                            break;
                        }
                        Err(e) => eprintln!("    {e}"),
                    }
                }
            }
            Ok(out)
        }
    }
}

/// How one prediction came out.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Right {
        got: String,
        delta: i64,
    },
    Wrong {
        got: String,
        delta: i64,
        why: Option<String>,
    },
    Skipped {
        got: String,
        delta: i64,
    },
    /// The run did not report it (a failed run, a missing counter).
    NotReported(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub question: Question,
    pub answer: Option<String>,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Score {
    pub items: Vec<Scored>,
}

impl Score {
    pub fn right(&self) -> usize {
        self.items
            .iter()
            .filter(|s| matches!(s.outcome, Outcome::Right { .. }))
            .count()
    }

    /// Predictions made and judged (skips and unreported facts aside).
    pub fn judged(&self) -> usize {
        self.items
            .iter()
            .filter(|s| matches!(s.outcome, Outcome::Right { .. } | Outcome::Wrong { .. }))
            .count()
    }

    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        let items: Vec<_> = self
            .items
            .iter()
            .map(|s| {
                let (result, got, delta, why) = match &s.outcome {
                    Outcome::Right { got, delta } => ("right", Some(got), Some(delta), None),
                    Outcome::Wrong { got, delta, why } => ("wrong", Some(got), Some(delta), why.as_ref()),
                    Outcome::Skipped { got, delta } => ("skipped", Some(got), Some(delta), None),
                    Outcome::NotReported(_) => ("not reported", None, None, None),
                };
                json!({"step": s.question.step, "counter": s.question.counter.to_string(),
                       "choices": s.question.choices, "default": s.question.default,
                       "answer": s.answer, "result": result, "got": got, "delta": delta, "why": why})
            })
            .collect();
        json!({"right": self.right(), "judged": self.judged(), "asked": self.items.len(), "items": items})
    }
}

/// Scores answers against a finished run (pure).
pub fn score(qs: &[Question], answers: &[Option<String>], ev: &Evaluation) -> Score {
    let items = qs
        .iter()
        .zip(answers.iter().chain(std::iter::repeat(&None)))
        .map(|(q, a)| {
            let observed = ev.steps.iter().find(|s| s.name == q.step).and_then(|s| {
                s.observed
                    .iter()
                    .find(|o| o.declared && o.counter == q.counter)
            });
            let outcome = match observed.map(|o| (o, o.delta.clone())) {
                None => Outcome::NotReported("the step did not run to its end".into()),
                Some((_, Err(t))) => {
                    Outcome::NotReported(format!("not reported by this kernel: {t}"))
                }
                Some((o, Ok(delta))) => {
                    let got = report::class(q.rule, delta).unwrap_or_default();
                    let moves = q.rule == ClassRule::Exact && delta > 0;
                    match a {
                        None => Outcome::Skipped { got, delta },
                        Some(a) if *a == got || a == ">0" && moves => Outcome::Right { got, delta },
                        Some(_) => Outcome::Wrong {
                            got,
                            delta,
                            why: o.explain.clone(),
                        },
                    }
                }
            };
            Scored {
                question: q.clone(),
                answer: a.clone(),
                outcome,
            }
        })
        .collect();
    Score { items }
}

/// The score for the terminal: the count, then every miss with the lab's explanation.
pub fn render(score: &Score, width: usize) -> String {
    let skipped = score.items.len() - score.judged();
    let mut out = format!(
        "\npredictions: {} of {} right{}\n",
        score.right(),
        score.judged(),
        if skipped > 0 {
            format!(" ({skipped} not answered or not reported: the report above has them)")
        } else {
            String::new()
        }
    );
    for s in &score.items {
        let q = &s.question;
        let unit = report::unit(&q.counter);
        match &s.outcome {
            Outcome::Right { got, delta } => out.push_str(&format!(
                "  ✓ {}: {got} ({})\n",
                q.key(),
                human_delta(*delta, unit)
            )),
            Outcome::Wrong { got, delta, why } => {
                let said = s.answer.as_deref().unwrap_or("?");
                let was = q
                    .default
                    .as_ref()
                    .map(|d| format!("; the default run showed {d}"))
                    .unwrap_or_default();
                out.push_str(&format!(
                    "  ✗ {}: you said {said}, the kernel showed {got} ({}){was}\n",
                    q.key(),
                    human_delta(*delta, unit)
                ));
                let why = why.as_deref().unwrap_or(
                    "(none of the lab's explanations holds for this run: see its README)",
                );
                out.push_str(&wrap(why, width, "      why: ", "           "));
            }
            Outcome::Skipped { .. } => {} // the report above shows what the kernel did
            Outcome::NotReported(t) => out.push_str(&format!("  - {}: {t}\n", q.key())),
        }
    }
    out
}

/// What `lab --predict` was asked to do.
pub struct Request<'a> {
    pub lab: &'a LabDir,
    pub sets: Vec<String>,
    pub exercises: Vec<String>,
    pub answers: Option<&'a std::path::Path>,
    /// Print the questions as an answers file and exit.
    pub questions_only: bool,
    pub full: bool,
    pub open: bool,
}

/// `cargo xtask lab N --predict [--set ...|--exercise ...]`: asks, runs, scores. The exit is
/// the run's (a default run) or the exercises' (the kernel agreed); a wrong prediction is the
/// student's to learn from, not a failure. Answers that cannot be read are bad input (2).
pub fn run_cli(req: &Request, opts: &RunOptions) -> Result<Exit> {
    let spec = lab::load(&req.lab.spec_path())?;
    let dir = req.lab.dir.join("snapshots");
    let default = report::read_snapshot(&dir, &spec.id);
    let width = crate::units::terminal_width();
    if req.exercises.is_empty() {
        let loaded = lab::load_with(&req.lab.spec_path(), &req.sets)?;
        let variant = (!req.sets.is_empty())
            .then_some(default.as_deref())
            .flatten();
        let qs = questions(&loaded.spec, variant, &[]);
        if req.questions_only {
            print!("{}", template(&qs, None));
            return Ok(Exit::Passed);
        }
        let mut src = source(req.answers).map_err(as_bad_input)?;
        let answers = ask(&qs, &mut src, None).map_err(as_bad_input)?;
        let mut opts = opts.clone();
        opts.sets = req.sets.clone();
        let r = lab::execute(req.lab, &opts)?;
        lab::print_with(&r, req.full);
        let s = score(&qs, &answers, &r.eval);
        print!("{}", render(&s, width));
        finish(req, &r, &s, None)?;
        if let Ok(qas) = crate::answers::of(req.lab) {
            print!("{}", crate::answers::render_questions(req.lab, &qas, width));
        }
        return Ok(Exit::of_runs(&[crate::check::lab_status(&r)]));
    }
    let chosen = crate::exercise::select(&spec, &req.exercises).map_err(as_bad_input)?;
    // An exercise's questions: its facts beside the default run's.
    let asked = |x: &Exercise| -> Result<Vec<Question>> {
        let loaded = lab::load_with(&req.lab.spec_path(), &x.set_args())?;
        Ok(questions(&loaded.spec, default.as_deref(), &x.varies))
    };
    if req.questions_only {
        for x in chosen {
            print!("{}", template(&asked(x)?, Some(&x.name)));
        }
        return Ok(Exit::Passed);
    }
    let mut src = source(req.answers).map_err(as_bad_input)?;
    let mut statuses = Vec::new();
    for x in chosen {
        let qs = asked(x)?;
        if matches!(src, Source::Terminal) {
            eprintln!("\nexercise {}: {}", x.name, x.ask.trim());
        }
        let answers = ask(&qs, &mut src, Some(&x.name)).map_err(as_bad_input)?;
        let (r, j) = crate::exercise::run(req.lab, opts, x)?;
        lab::print_with(&r, req.full);
        print!("{}", crate::exercise::render(x, &j));
        let s = score(&qs, &answers, &r.eval);
        print!("{}", render(&s, width));
        println!("\nthe lab's answer to exercise {}:", x.name);
        for para in x.answer.trim().split("\n\n") {
            print!("{}", wrap(para, width, "  ", "  "));
        }
        finish(req, &r, &s, Some((x, &j)))?;
        statuses.push(crate::exercise::status(&r, &j));
    }
    Ok(Exit::of_runs(&statuses))
}

/// After a scored run: the notebook with the score, the course progress, `--open`.
fn finish(
    req: &Request,
    r: &RunResult,
    s: &Score,
    exercise: Option<(&Exercise, &Judgement)>,
) -> Result<()> {
    let extras = crate::notebook::Extras {
        predictions: Some(s),
        exercise,
    };
    let page = crate::notebook::write(req.lab, r, &extras)?;
    let record = r.kept.join("predictions.json");
    std::fs::write(&record, serde_json::to_string_pretty(&s.to_json())?)
        .with_context(|| format!("writing {}", record.display()))?;
    match exercise {
        Some((x, j)) => crate::course::record_exercise(&r.spec.id, &x.name, j.agreed(), Some(s)),
        None if r.variant.is_none() && !r.shell => {
            crate::course::record_run(&r.spec.id, r.passed(), Some(s))
        }
        None => {}
    }
    println!("notebook: {}", page.display());
    if req.open {
        crate::notebook::open(&page);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAB: &str = r#"
id = "t"
title = "T"
[vm]
memory = "256M"
[[cgroup]]
name = "W"
memory_max = "32M"
[[cgroup]]
name = "B"
[[step]]
kind = "read-file"
name = "read"
cgroup = "W"
size = "48M"
[[step]]
kind = "anon"
name = "other"
cgroup = "B"
size = "1M"
[[observe]]
counter = "W/memory.stat.pgscan_direct"
explain = { ">0" = "W reclaimed", "0" = "W never reached its limit" }
[[observe]]
counter = "vmstat.pgscan_kswapd"
explain = { "0" = "kswapd slept", ">0" = "kswapd woke" }
[[observe]]
counter = "W/memory.events.oom_kill"
class = "exact"
explain = { "0" = "no kill", "1" = "one kill" }
[[observe]]
counter = "W/memory.peak"
class = "shown"
[[observe]]
counter = "vmstat.pgscan_file"
[[expect]]
step = "other"
counter = "W/memory.stat.pgscan_direct"
delta = "== 0"
why = "B's step does not touch W"
"#;

    fn spec() -> LabSpec {
        lab::parse_spec(LAB, "t").unwrap()
    }

    #[test]
    fn questions_are_the_explained_facts_of_each_step() {
        let qs = questions(&spec(), None, &[]);
        let keys: Vec<String> = qs.iter().map(Question::key).collect();
        assert_eq!(
            keys,
            [
                "read: W/memory.stat.pgscan_direct",
                "read: vmstat.pgscan_kswapd",
                "read: W/memory.events.oom_kill",
                // B's step: the machine's counters, and W's only where an expectation asks.
                "other: W/memory.stat.pgscan_direct",
                "other: vmstat.pgscan_kswapd",
            ]
        );
        assert_eq!(qs[0].choices, ["0", ">0"]);
        assert_eq!(qs[2].choices, ["0", "1"]);
        assert_eq!(qs[0].describe, "read-file 48M in W");
        let snap = "lab: t\nstep read (read-file 48M in W): exited 0\n  Δ W/memory.stat.pgscan_direct: >0\n";
        assert_eq!(
            questions(&spec(), Some(snap), &[])[0].default.as_deref(),
            Some(">0")
        );
        let race = Varies::try_from("read: Δ vmstat.pgscan_kswapd".to_string()).unwrap();
        let fewer = questions(&spec(), None, &[race]);
        assert_eq!(fewer.len(), qs.len() - 1, "a race is not asked");
        assert!(
            !fewer
                .iter()
                .any(|q| q.key() == "read: vmstat.pgscan_kswapd")
        );
        // An [[observe]] classed only at some steps is asked only there.
        let mut only_other = spec();
        only_other.observe[0].steps = vec!["other".into()];
        let keys: Vec<String> = questions(&only_other, None, &[])
            .iter()
            .map(Question::key)
            .collect();
        assert!(
            !keys.contains(&"read: W/memory.stat.pgscan_direct".to_string())
                && keys.contains(&"other: W/memory.stat.pgscan_direct".to_string()),
            "{keys:?}"
        );
        let t = template(&qs, Some("x"));
        assert!(
            t.starts_with("[exercise x]\nread: W/memory.stat.pgscan_direct = ?    # 0 or >0\n"),
            "{t}"
        );
        assert!(
            t.contains("= ?    # 0 or 1 (or another number, or >0)"),
            "{t}"
        );
    }

    #[test]
    fn answers_are_understood_or_rejected_with_what_is_accepted() {
        let qs = questions(&spec(), None, &[]);
        assert_eq!(qs[0].parse(" > 0 "), Ok(Some(">0".into())));
        assert_eq!(qs[0].parse("zero"), Ok(Some("0".into())));
        assert_eq!(qs[0].parse("?"), Ok(None));
        assert_eq!(qs[0].parse(""), Ok(None));
        assert_eq!(qs[2].parse("1"), Ok(Some("1".into())));
        assert_eq!(qs[2].parse("none"), Ok(Some("0".into())));
        let e = qs[0].parse("lots").unwrap_err();
        assert!(e.contains("say 0 or >0"), "{e}");
        assert_eq!(qs[2].parse(">0"), Ok(Some(">0".into())));
        assert!(qs[2].parse("<0").is_err());
        assert_eq!(qs[0].parse("down"), Ok(Some("<0".into())));
    }

    #[test]
    fn answer_files_are_read_in_order_or_by_key_with_file_and_line_errors() {
        let qs = questions(&spec(), None, &[]);
        let mut t = AnswerText::parse("f", "# mine\n>0\n0\n\n1  # a kill\n").unwrap();
        let a = t.answer(&qs, None).unwrap();
        assert_eq!(
            a,
            [
                Some(">0".into()),
                Some("0".into()),
                Some("1".into()),
                None,
                None
            ]
        );
        let mut t = AnswerText::parse(
            "f",
            "other:  vmstat.pgscan_kswapd = >0\nread: W/memory.stat.pgscan_direct=0\n",
        )
        .unwrap();
        let a = t.answer(&qs, None).unwrap();
        assert_eq!(a, [Some("0".into()), None, None, None, Some(">0".into())]);
        let e = AnswerText::parse("f", "read: W/memory.stat.pgscan_drect = 0\n")
            .unwrap()
            .answer(&qs, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("f:1: no question `read: W/memory.stat.pgscan_drect`"),
            "{e}"
        );
        assert!(
            e.contains("closest: `read: W/memory.stat.pgscan_direct`"),
            "{e}"
        );
        let e = AnswerText::parse("f", "0\nmaybe\n")
            .unwrap()
            .answer(&qs, None)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("f:2: \"maybe\" is not an answer"), "{e}");
        // Sections: keyed answers for one exercise do not answer another.
        let mut t = AnswerText::parse("f", "[exercise a]\nread: vmstat.pgscan_kswapd = >0\n[exercise b]\nread: vmstat.pgscan_kswapd = 0\n").unwrap();
        assert_eq!(t.answer(&qs, Some("b")).unwrap()[1], Some("0".into()));
        assert_eq!(t.answer(&qs, Some("a")).unwrap()[1], Some(">0".into()));
    }

    #[test]
    fn scoring_explains_every_miss_with_the_labs_words() {
        use guest::event::{Event, Exit};
        use std::collections::BTreeMap;
        let sample = |scan: u64, kswapd: u64| {
            let mut v = BTreeMap::new();
            v.insert("W/memory.stat.pgscan_direct".to_string(), scan);
            v.insert("vmstat.pgscan_kswapd".to_string(), kswapd);
            v.insert("W/memory.events.oom_kill".to_string(), 0);
            v.insert("vmstat.pgscan_file".to_string(), scan);
            v.insert("W/memory.peak".to_string(), 1);
            v
        };
        let end = |s: &str| Event::StepEnd {
            step: s.into(),
            exit: Exit::Exited { code: 0 },
            wall_ms: 1,
            stderr: String::new(),
            stdout: String::new(),
        };
        let events = vec![
            Event::Sample {
                label: "start".into(),
                values: sample(0, 0),
            },
            Event::StepStart {
                step: "read".into(),
            },
            end("read"),
            Event::Sample {
                label: "after:read".into(),
                values: sample(4416, 0),
            },
            Event::StepStart {
                step: "other".into(),
            },
            end("other"),
            Event::Sample {
                label: "after:other".into(),
                values: sample(4416, 0),
            },
            Event::End { frames: 7 },
        ];
        let ev = report::evaluate(&spec(), &report::tests::stream_of(events));
        let qs = questions(&spec(), None, &[]);
        let answers = [Some(">0".into()), Some(">0".into()), Some("0".into()), None];
        let s = score(&qs, &answers, &ev);
        assert_eq!((s.right(), s.judged()), (2, 3));
        let text = render(&s, 100);
        assert!(
            text.contains("predictions: 2 of 3 right (2 not answered or not reported: the report"),
            "{text}"
        );
        assert!(
            text.contains("✓ read: W/memory.stat.pgscan_direct: >0 (+4416 pages (17.2 MiB))"),
            "{text}"
        );
        assert!(text.contains("✗ read: vmstat.pgscan_kswapd: you said >0, the kernel showed 0 (+0)\n      why: kswapd slept\n"), "{text}");
        assert!(
            !text.contains("other: W/memory.stat.pgscan_direct"),
            "{text}"
        );
        assert_eq!(s.to_json()["right"], 2);
    }
}
