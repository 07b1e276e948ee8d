//! README figures from one real run: `[[figures]]` in lab.toml names the facts a README quotes,
//! `cargo xtask readme N --record` copies their values from the lab's last run
//! (target/kernel-lab/last/<id>/result.json) into labs/<id>/figures.toml, and `cargo xtask
//! readme` writes them into `<!-- figures NAME -->` blocks, each value beside the class every
//! run must show: a value whose class the committed snapshot contradicts fails, without a VM.

use crate::evaluate::{class, observed_rule};
use crate::lab::LabDir;
use crate::report::{read_snapshot, snapshot_facts, snapshot_name};
use anyhow::{Context, Result, bail};
use guest::exercise::{Figure, Figures, Reading};
use guest::expect::Want;
use guest::spec::LabSpec;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// labs/<id>/figures.toml: the run the figures come from, and each fact's value in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recorded {
    /// The booted kernel's release.
    pub kernel: String,
    /// When the run ended (UTC), from its result file.
    pub finished: String,
    /// The lab's `vm.mglru` in that run, when it set one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mglru: Option<bool>,
    /// The run's wall time, seconds.
    pub wall_secs: u64,
    /// `step: Δ counter` -> its change in that run.
    pub values: BTreeMap<String, i64>,
}

const HEADER: &str = "# The values behind README.md's figures blocks, from one real run of this lab: written by\n# `cargo xtask readme N --record` after `cargo xtask lab N`. Do not edit; record a new run.\n";

pub fn path(l: &LabDir) -> PathBuf {
    l.dir.join("figures.toml")
}

/// The recorded run of a lab, if it has one.
pub fn read(l: &LabDir) -> Result<Option<Recorded>> {
    let p = path(l);
    let Ok(text) = std::fs::read_to_string(&p) else {
        return Ok(None);
    };
    let r = toml::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "{}: {} (rewrite it with `--record`)",
            p.display(),
            e.message()
        )
    })?;
    Ok(Some(r))
}

/// The part of `lab --json`'s result (kept as last/<id>/result.json) that figures come from.
#[derive(Deserialize)]
struct RunRecord {
    schema: String,
    lab: String,
    kernel: Option<String>,
    passed: bool,
    variant: Option<serde_json::Value>,
    total_secs: f64,
    steps: Vec<StepRecord>,
    spec: LabSpec,
}

#[derive(Deserialize)]
struct StepRecord {
    name: String,
    observed: Vec<ObservedRecord>,
}

#[derive(Deserialize)]
struct ObservedRecord {
    counter: String,
    delta: Option<i64>,
    #[serde(default)]
    value: Option<i64>,
}

/// `readme N --record`: the figures of `spec` from the run kept in `kept` (last/<id>/).
pub fn record(spec: &LabSpec, kept: &Path) -> Result<Recorded> {
    let file = kept.join("result.json");
    let text = std::fs::read(&file).with_context(|| {
        format!(
            "reading {} (run the lab first: `cargo xtask lab {}`)",
            file.display(),
            spec.id
        )
    })?;
    let run: RunRecord = serde_json::from_slice(&text)
        .with_context(|| format!("{}: not a lab result", file.display()))?;
    let finished = std::fs::metadata(&file)?.modified()?;
    from_run(spec, &run, utc_minutes(finished))
        .with_context(|| format!("figures of {} from {}", spec.id, file.display()))
}

fn from_run(spec: &LabSpec, run: &RunRecord, finished: String) -> Result<Recorded> {
    if run.schema != "kernel-lab/result/1" || run.lab != spec.id {
        bail!(
            "a result of {} (schema {}), not of {}",
            run.lab,
            run.schema,
            spec.id
        );
    }
    if run.variant.as_ref().is_some_and(|v| !v.is_null()) {
        bail!("that run was a --set variant: record the lab as written");
    }
    if !run.passed {
        bail!("that run did not pass: record a run whose facts are the snapshot's");
    }
    let kernel = run.kernel.clone().context("the run names no kernel")?;
    let mut values = BTreeMap::new();
    for f in spec.figures.iter().flat_map(|b| &b.facts) {
        let counter = f.counter.to_string();
        let seen = run
            .steps
            .iter()
            .filter(|s| s.name == f.step)
            .flat_map(|s| &s.observed)
            .find(|o| o.counter == counter);
        let number = |o: &ObservedRecord| match f.reading {
            Reading::Change => o.delta,
            Reading::After => o.value,
        };
        match seen.map(number) {
            Some(Some(d)) => values.insert(f.to_string(), d),
            Some(None) => bail!("`{f}`: the kernel did not report it in that run"),
            None => bail!("`{f}`: that run did not observe it (an older lab.toml? run it again)"),
        };
    }
    Ok(Recorded {
        kernel,
        finished,
        mglru: run.spec.vm.mglru,
        wall_secs: run.total_secs.round() as u64,
        values,
    })
}

/// figures.toml's text.
pub fn render_recorded(r: &Recorded) -> Result<String> {
    Ok(format!("{HEADER}{}", toml::to_string(r)?))
}

/// The body of the block `figures NAME`: each fact's recorded value beside what every run
/// shows (its snapshot class, or the expectations that bound it). Fails when a fact has no
/// recorded value, or when the value contradicts the committed snapshot or an expectation.
pub fn block(l: &LabDir, spec: &LabSpec, b: &Figures, rec: &Recorded, cmd: &str) -> Result<String> {
    let dir = l.dir.join("snapshots");
    let name = snapshot_name(&dir, &spec.id, Some(&rec.kernel));
    let facts = snapshot_facts(&read_snapshot(&dir, &name).unwrap_or_default());
    let where_ = format!("labs/{}", l.id);
    let rerun = format!("`cargo xtask lab {cmd}`, then `cargo xtask readme {cmd} --record`");
    let mut out = String::new();
    if !b.about.trim().is_empty() {
        out.push_str(&format!("**{}**\n\n", b.about.trim()));
    }
    let mode = match rec.mglru {
        Some(true) => ", MGLRU on",
        Some(false) => ", MGLRU off",
        None => "",
    };
    out.push_str(&format!(
        "Figures from one real run (kernel {}{mode}, `cargo xtask lab {cmd}` ended {}, {} s). Another run gives other numbers; \"every run\" is what each run must show, the class the lab's snapshot holds or the expectations that bound a number it leaves out, and `cargo xtask readme --check` compares each figure with it.\n\n",
        rec.kernel, rec.finished, rec.wall_secs
    ));
    out.push_str("| step | counter | this run | every run |\n|---|---|---:|---|\n");
    for f in &b.facts {
        let Some(&value) = rec.values.get(&f.to_string()) else {
            bail!("{where_}/figures.toml has no value for `{f}`: run {rerun}");
        };
        let rule = observed_rule(spec, &f.step, &f.counter)
            .with_context(|| format!("{where_}: `{f}` is not observed"))?;
        let snapshot_class = match f.reading {
            Reading::Change => class(rule, value),
            Reading::After => None,
        };
        let every = match snapshot_class {
            None => unclassed(spec, f, value, &rec.kernel),
            Some(c) => {
                let (sect, key) = (format!("step {}", f.step), format!("Δ {}", f.counter));
                match facts.iter().find(|(s, n, _)| *s == sect && *n == key) {
                    Some((_, _, s)) if *s == c => Ok(format!("`{c}`")),
                    Some((_, _, s)) => Err(format!(
                        "(class {c}) contradicts snapshots/{name}.snap, where it is {s}: record a run of today's kernel ({rerun})"
                    )),
                    None => Err(format!(
                        "is not in snapshots/{name}.snap: a figure quotes a fact the snapshot classes, or one observed with class \"shown\""
                    )),
                }
            }
        }
        .map_err(|m| anyhow::anyhow!("{where_}: the figure `{f}` = {value} {m}"))?;
        let after = match f.reading {
            Reading::Change => "",
            Reading::After => " (after the step)",
        };
        out.push_str(&format!(
            "| `{}` | `{}`{after} | {value} | {every} |\n",
            f.step, f.counter
        ));
    }
    Ok(out)
}

/// What every run shows of a figure the snapshot does not class (a `shown` counter's change, a
/// value after a step): the conditions of the expectations on that number at its step, which
/// the recorded value must meet (a trace fact counts one step's events: its value there is its
/// change).
fn unclassed(spec: &LabSpec, f: &Figure, value: i64, kernel: &str) -> Result<String, String> {
    let trace = f.counter.terms.iter().all(|(_, t)| t.starts_with("trace."));
    let (change, after) = (f.reading == Reading::Change, f.reading == Reading::After);
    let mut checked = Vec::new();
    for e in &spec.expect {
        let applies = e.kernel.is_none_or(|k| k.holds(kernel));
        let on_change = match &e.want {
            Want::Delta { counter, delta } if change || trace => Some((counter, delta)),
            Want::Value { counter, value } if after || trace => Some((counter, value)),
            _ => None,
        };
        if let Some((counter, delta)) = on_change
            && *counter == f.counter
            && e.step.as_deref() == Some(f.step.as_str())
            && applies
        {
            if !delta.holds(value) {
                let d = if after { "" } else { "Δ " };
                return Err(format!(
                    "fails its expectation `{d}{counter} {delta}`: record a run that passes"
                ));
            }
            checked.push(format!("`{delta}`"));
        }
    }
    let what = match f.reading {
        Reading::Change => "shown",
        Reading::After => "a value",
    };
    Ok(match checked.is_empty() {
        true => format!("{what}, not checked"),
        false => format!("{what}, checked {}", checked.join(", ")),
    })
}

/// `2026-11-30 03:05 UTC`.
fn utc_minutes(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rest) = ((secs / 86400) as i64, secs % 86400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = "id = \"t\"\ntitle = \"T\"\n\n[vm]\nmemory = \"256M\"\n\n[[cgroup]]\nname = \"W\"\n\n[[step]]\nkind = \"anon\"\ncgroup = \"W\"\nsize = \"64M\"\n\n[[observe]]\ncounter = \"vmstat.pgscan_kswapd\"\n\n[[observe]]\ncounter = \"vmstat.pgscan_direct\"\nclass = \"shown\"\n\n[[figures]]\nname = \"k\"\nfacts = [\"anon: Δ vmstat.pgscan_kswapd\", \"anon: Δ vmstat.pgscan_direct\"]\n\n[[expect]]\nstep = \"anon\"\ncounter = \"vmstat.pgscan_direct\"\ndelta = \">= 0\"\nwhy = \"w\"\n";
    const SNAP: &str = "---\nsource: xtask/src/report.rs\n---\nlab: t\nstep anon (anon 64M in W): exited 0\n  Δ vmstat.pgscan_kswapd: >0\nexpectations:\n";

    /// A lab directory holding SPEC, SNAP, a README and the recorded values `kswapd`, `direct`.
    fn lab_with(kswapd: i64, direct: i64) -> (tempfile::TempDir, LabDir) {
        let values = [
            ("anon: Δ vmstat.pgscan_kswapd", kswapd),
            ("anon: Δ vmstat.pgscan_direct", direct),
        ];
        lab_with_spec(SPEC, &values)
    }

    fn lab_with_spec(spec: &str, values: &[(&str, i64)]) -> (tempfile::TempDir, LabDir) {
        let tmp = tempfile::tempdir().unwrap();
        let l = LabDir {
            id: "t".into(),
            dir: tmp.path().to_path_buf(),
        };
        std::fs::create_dir(l.dir.join("snapshots")).unwrap();
        std::fs::write(l.dir.join("snapshots/t.snap"), SNAP).unwrap();
        std::fs::write(l.spec_path(), spec).unwrap();
        std::fs::write(l.dir.join("README.md"), "# T\n\nSee the figures below.\n").unwrap();
        let rec = Recorded {
            kernel: "6.12.57".into(),
            finished: "2026-11-30 03:05 UTC".into(),
            mglru: None,
            wall_secs: 31,
            values: values.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        };
        std::fs::write(path(&l), render_recorded(&rec).unwrap()).unwrap();
        (tmp, l)
    }

    fn generate(l: &LabDir) -> Result<String> {
        let text = std::fs::read_to_string(l.dir.join("README.md")).unwrap();
        crate::readme::generate(l, &text)
    }

    #[test]
    fn figures_are_written_with_the_class_every_run_shows() {
        let (_tmp, l) = lab_with(21760, 4032);
        let text = generate(&l).unwrap();
        assert!(text.contains("<!-- figures k: generated"), "{text}");
        assert!(text.contains("kernel 6.12.57"), "{text}");
        assert!(
            text.contains("| `anon` | `vmstat.pgscan_kswapd` | 21760 | `>0` |"),
            "{text}"
        );
        assert!(
            text.contains("| `anon` | `vmstat.pgscan_direct` | 4032 | shown, checked `>= 0` |"),
            "{text}"
        );
        // Written once, the README is what the generator writes: the check passes.
        std::fs::write(l.dir.join("README.md"), &text).unwrap();
        assert_eq!(generate(&l).unwrap(), text);
    }

    #[test]
    fn a_hand_edited_figure_makes_the_block_stale() {
        let (_tmp, l) = lab_with(21760, 4032);
        let text = generate(&l).unwrap();
        let edited = text.replace("| 21760 |", "| 20000 |");
        std::fs::write(l.dir.join("README.md"), &edited).unwrap();
        assert!(!crate::readme::run_cli(std::slice::from_ref(&l), true).unwrap());
        assert_eq!(generate(&l).unwrap(), text);
    }

    #[test]
    fn a_figure_that_contradicts_the_snapshot_fails_the_check() {
        // The snapshot says kswapd scans in every run; a recorded 0 contradicts it.
        let (_tmp, l) = lab_with(0, 4032);
        let e = format!("{:#}", generate(&l).unwrap_err());
        assert!(
            e.contains("`anon: Δ vmstat.pgscan_kswapd` = 0 (class 0) contradicts snapshots/t.snap, where it is >0"),
            "{e}"
        );
        assert!(crate::readme::run_cli(std::slice::from_ref(&l), true).is_err());
    }

    #[test]
    fn a_shown_figure_that_fails_its_expectation_fails_the_check() {
        let (_tmp, l) = lab_with(21760, -1);
        let e = format!("{:#}", generate(&l).unwrap_err());
        assert!(
            e.contains("`anon: Δ vmstat.pgscan_direct` = -1 fails its expectation `Δ vmstat.pgscan_direct >= 0`"),
            "{e}"
        );
    }

    #[test]
    fn a_figure_without_a_recorded_value_or_a_recorded_run_fails() {
        let (_tmp, l) = lab_with(1, 2);
        let text = std::fs::read_to_string(path(&l)).unwrap();
        let text = text.replace("\"anon: Δ vmstat.pgscan_direct\" = 2\n", "");
        std::fs::write(path(&l), text).unwrap();
        let e = format!("{:#}", generate(&l).unwrap_err());
        assert!(
            e.contains("no value for `anon: Δ vmstat.pgscan_direct`"),
            "{e}"
        );
        std::fs::remove_file(path(&l)).unwrap();
        let e = format!("{:#}", generate(&l).unwrap_err());
        assert!(e.contains("[[figures]] without a recorded run"), "{e}");
    }

    #[test]
    fn a_figure_names_a_fact_the_lab_observes_at_its_step() {
        let bad = SPEC.replace(
            "\"anon: Δ vmstat.pgscan_direct\"]",
            "\"anon: Δ vmstat.pgsteal_kswapd\", \"nope: Δ vmstat.pgscan_kswapd\", \"anon: exit\"]",
        );
        let e = format!("{:#}", crate::lab::parse_spec(&bad, "f").unwrap_err());
        assert!(e.contains("f:24:"), "{e}");
        assert!(
            e.contains("write `step: Δ counter`"),
            "an exit is no figure: {e}"
        );
        let bad = SPEC.replace(
            "\"anon: Δ vmstat.pgscan_direct\"]",
            "\"anon: Δ vmstat.pgsteal_kswapd\", \"nope: Δ vmstat.pgscan_kswapd\"]",
        );
        let e = format!("{:#}", crate::lab::parse_spec(&bad, "f").unwrap_err());
        assert!(e.contains("f:24: [[figures]] #1 field `facts`"), "{e}");
        assert!(
            e.contains("the lab does not observe vmstat.pgsteal_kswapd at step \"anon\""),
            "{e}"
        );
        assert!(e.contains("no step is named \"nope\""), "{e}");
    }

    #[test]
    fn a_record_takes_a_passing_run_of_the_lab_as_written() {
        let spec = crate::lab::parse_spec(SPEC, "f").unwrap();
        let run = |passed: bool, variant: &str| -> RunRecord {
            let json = format!(
                r#"{{"schema":"kernel-lab/result/1","lab":"t","kernel":"6.12.57","passed":{passed},"variant":{variant},"total_secs":30.6,"steps":[{{"name":"anon","observed":[{{"counter":"vmstat.pgscan_kswapd","delta":21760}},{{"counter":"vmstat.pgscan_direct","delta":0}}]}}],"spec":{}}}"#,
                serde_json::to_string(&spec).unwrap()
            );
            serde_json::from_str(&json).unwrap()
        };
        let r = from_run(&spec, &run(true, "null"), "now".into()).unwrap();
        assert_eq!(r.values["anon: Δ vmstat.pgscan_kswapd"], 21760);
        assert_eq!((r.kernel.as_str(), r.wall_secs), ("6.12.57", 31));
        let e = from_run(&spec, &run(false, "null"), "now".into()).unwrap_err();
        assert!(e.to_string().contains("did not pass"), "{e}");
        let v = r#"{"set":{"a":"1"},"skipped_steps":[]}"#;
        let e = from_run(&spec, &run(true, v), "now".into()).unwrap_err();
        assert!(e.to_string().contains("--set variant"), "{e}");
        let back: Recorded = toml::from_str(&render_recorded(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn a_figure_may_quote_a_value_after_its_step() {
        let text = SPEC.replace(
            "\"anon: Δ vmstat.pgscan_direct\"]",
            "\"anon: vmstat.pgscan_direct\"]",
        );
        let spec = crate::lab::parse_spec(&text, "f").unwrap();
        let f = &spec.figures[0].facts[1];
        assert_eq!(f.reading, Reading::After);
        assert_eq!(f.to_string(), "anon: vmstat.pgscan_direct");
        let json = format!(
            r#"{{"schema":"kernel-lab/result/1","lab":"t","kernel":"6.12.57","passed":true,"variant":null,"total_secs":3.0,"steps":[{{"name":"anon","observed":[{{"counter":"vmstat.pgscan_kswapd","delta":5,"value":90}},{{"counter":"vmstat.pgscan_direct","delta":2,"value":7}}]}}],"spec":{}}}"#,
            serde_json::to_string(&spec).unwrap()
        );
        let run: RunRecord = serde_json::from_str(&json).unwrap();
        let r = from_run(&spec, &run, "now".into()).unwrap();
        assert_eq!(r.values["anon: vmstat.pgscan_direct"], 7);
        assert_eq!(r.values["anon: Δ vmstat.pgscan_kswapd"], 5);
        let values = [
            ("anon: Δ vmstat.pgscan_kswapd", 5),
            ("anon: vmstat.pgscan_direct", 7),
        ];
        let (_tmp, l) = lab_with_spec(&text, &values);
        let out = generate(&l).unwrap();
        // The expectation bounds the change, not the value: the value is not checked.
        assert!(
            out.contains(
                "| `anon` | `vmstat.pgscan_direct` (after the step) | 7 | a value, not checked |"
            ),
            "{out}"
        );
    }

    #[test]
    fn times_are_written_in_utc() {
        let at = |s| std::time::UNIX_EPOCH + std::time::Duration::from_secs(s);
        assert_eq!(utc_minutes(at(0)), "1970-01-01 00:00 UTC");
        assert_eq!(utc_minutes(at(951_782_400 + 3_660)), "2000-02-29 01:01 UTC");
        assert_eq!(utc_minutes(at(1_764_471_000)), "2025-11-30 02:50 UTC");
    }
}
