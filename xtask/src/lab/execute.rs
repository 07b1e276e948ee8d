//! Running one lab end to end: load, boot, evaluate, compare with the snapshot (or the default
//! snapshot, for a `--set` variant), chart the timeline; and keeping the first failing run.

use super::boot::{Booted, boot, scratch};
use super::load::Loaded;
use super::load::load_for;
use super::{LabDir, RunOptions};
use crate::progress::Phases;
use crate::{health, kernel, report, timeline};
use anyhow::Result;
use guest::spec::LabSpec;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Everything one run produced.
#[derive(Debug)]
pub struct RunResult {
    pub spec: LabSpec,
    pub eval: report::Evaluation,
    /// Why the run itself is not valid (timeout, QEMU failure, incomplete stream, agent errors).
    pub problems: Vec<String>,
    /// `None` when the run was not valid enough to compare, or is a `--set` variant.
    pub snapshot_matched: Option<bool>,
    /// When the snapshot did not match: the facts that changed, one line each.
    pub snapshot_changes: Vec<String>,
    /// For a `--set` variant: the values set and the steps left out.
    pub variant: Option<(std::collections::BTreeMap<String, String>, Vec<String>)>,
    /// The `--exercise` the variant is, if it is one.
    pub exercise: Option<String>,
    /// For a `--set` variant: how its facts differ from the default snapshot.
    pub variant_diff: Option<String>,
    /// A `--shell` session (no steps run, nothing judged).
    pub shell: bool,
    /// The kernel's own health during the run (taint, splats in its log and console).
    pub health: health::Health,
    pub phases: Phases,
    pub total: Duration,
    pub kernel_built: bool,
    /// target/kernel-lab/last/<id>/: console.log, results.jsonl and result.json of this run.
    pub kept: PathBuf,
    /// Every frame the agent sent (samples included).
    pub frames: Vec<guest::event::Frame>,
    /// The timeline chart written for this run, if the run had a timeline.
    pub timeline_svg: Option<PathBuf>,
}

impl RunResult {
    /// The exercise or `--set`s this run was, for the chart's title and the notebook's heading.
    pub fn name(&self) -> crate::chart::RunName<'_> {
        static NONE: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
        crate::chart::RunName {
            exercise: self.exercise.as_deref(),
            sets: self.variant.as_ref().map(|v| &v.0).unwrap_or(&NONE),
        }
    }

    /// A default run passes when every expectation holds and the snapshot matches; a `--set`
    /// variant when it ran to the end (its facts may rightly differ).
    pub fn passed(&self) -> bool {
        if self.shell {
            return self.problems.is_empty();
        }
        let valid = self.problems.is_empty() && self.health.healthy();
        match self.variant {
            Some(_) => valid,
            None => valid && self.eval.passed() && self.snapshot_matched == Some(true),
        }
    }
}

/// Why the lab does not apply to the kernel source in `opts` (its `[applies]` table), or None.
pub fn not_applicable(spec: &LabSpec, opts: &RunOptions) -> Result<Option<String>> {
    let Some(applies) = &spec.applies else {
        return Ok(None);
    };
    let version = opts.kernel.version()?;
    Ok(version.filter(|v| !applies.kernel.holds(v)).map(|v| {
        format!(
            "lab {} is for kernels {}, not {v}: {}",
            spec.id, applies.kernel, applies.why
        )
    }))
}

/// Runs one lab: [`load_to_run`], then [`execute_loaded`]. Prints progress only;
/// [`super::print`] shows the report.
pub fn execute(lab: &LabDir, opts: &RunOptions) -> Result<RunResult> {
    execute_loaded(lab, &load_to_run(lab, opts)?, opts)
}

/// The lab loaded with the run's `--set` values (its counters checked on the default kernel)
/// and checked to apply to the run's kernel: loaded once for any number of runs.
pub fn load_to_run(lab: &LabDir, opts: &RunOptions) -> Result<Loaded> {
    let loaded = load_for(lab, &opts.sets, &opts.kernel)?;
    if let Some(why) = not_applicable(&loaded.spec, opts)? {
        // This lab cannot judge this kernel: a bisect skips it (125), as `check` skips it.
        return Err(kernel::Untestable(format!(
            "{why} (exit 125: nothing to judge on this kernel)"
        ))
        .into());
    }
    Ok(loaded)
}

/// Runs a lab loaded once for all its runs ([`load_to_run`]; `check` loads it, and asks
/// whether it applies, once per item): set-up, kernel, initramfs, disk, QEMU, evaluation, snapshot comparison,
/// timeline chart.
pub fn execute_loaded(lab: &LabDir, loaded: &Loaded, opts: &RunOptions) -> Result<RunResult> {
    let total = Instant::now();
    let mut phases = Phases::default();
    let mut spec = loaded.spec.clone();
    if opts.mglru.is_some() {
        spec.vm.mglru = opts.mglru;
    }
    eprintln!("lab {}: {}", spec.id, spec.title);
    let Booted {
        stream,
        kept,
        mut problems,
        kernel_built,
        health,
    } = boot(&spec, opts, &[], &mut phases)?;
    let report_started = Instant::now();
    let mut eval = report::evaluate(&spec, &stream);
    eval.oom_kills = oom_kills(&kept, &spec, &eval);
    if !opts.shell {
        // (A shell session runs no steps: their missing samples are no problem.)
        problems.extend(eval.problems.iter().cloned());
    }
    let compared = match opts.shell || !problems.is_empty() {
        true => Compared::default(),
        false => compare(lab, loaded, &spec, &eval),
    };
    phases.add("report", report_started.elapsed());
    let named = crate::chart::RunName {
        exercise: opts.exercise.as_deref(),
        sets: &loaded.sets,
    };
    let timeline_svg = write_timeline(&kept, &spec, &eval, named);
    let result = RunResult {
        shell: opts.shell,
        health,
        timeline_svg,
        frames: stream.frames,
        spec,
        eval,
        problems,
        variant: (!loaded.sets.is_empty()).then(|| (loaded.sets.clone(), loaded.skipped.clone())),
        exercise: opts.exercise.clone(),
        variant_diff: compared.variant_diff,
        snapshot_matched: compared.matched,
        snapshot_changes: compared.changes,
        phases,
        total: total.elapsed(),
        kernel_built,
        kept,
    };
    if !result.shell
        && let Err(e) = crate::notebook::write(lab, &result, &Default::default())
    {
        eprintln!("warning: the notebook page was not written: {e:#}");
    }
    if !result.shell
        && let Err(e) = keep_result(&result)
    {
        eprintln!("warning: result.json was not kept: {e:#}");
    }
    Ok(result)
}

/// Keeps the run's `--json` result as last/<id>/result.json: the record that
/// `cargo xtask readme --record` takes a lab's README figures from.
fn keep_result(r: &RunResult) -> Result<()> {
    let json = serde_json::to_vec(&super::to_json(r))?;
    crate::cache::write_file(&r.kept.join("result.json"), json)
}

/// The OOM victims the console names ("Killed process N (step) ..."), each placed in the step
/// whose vmstat.oom_kill counted it.
fn oom_kills(kept: &Path, spec: &LabSpec, eval: &report::Evaluation) -> Vec<crate::oom::Kill> {
    let console = std::fs::read(kept.join("console.log")).unwrap_or_default();
    let kills = crate::oom::victims(&String::from_utf8_lossy(&console), spec);
    let counted = guest::spec::CounterExpr {
        terms: vec![(false, "vmstat.oom_kill".into())],
    };
    let per_step: Vec<(String, Option<i64>)> = eval
        .steps
        .iter()
        .map(|s| {
            let n = eval.view(Some(&s.name)).delta(&counted).ok();
            (s.name.clone(), n)
        })
        .collect();
    crate::oom::place(kills, &per_step)
}

/// A valid run compared with its snapshot, or a variant with the default snapshot.
#[derive(Default)]
struct Compared {
    matched: Option<bool>,
    /// When the snapshot did not match: the facts that changed.
    changes: Vec<String>,
    /// For a `--set` variant: how its facts differ from the default snapshot.
    variant_diff: Option<String>,
}

fn compare(lab: &LabDir, loaded: &Loaded, spec: &LabSpec, eval: &report::Evaluation) -> Compared {
    let snapshot = report::render_snapshot(spec, eval);
    let dir = lab.dir.join("snapshots");
    if !loaded.sets.is_empty() {
        let default = report::read_snapshot(&dir, &spec.id).unwrap_or_default();
        return Compared {
            variant_diff: Some(report::line_diff(&default, &snapshot)),
            ..Compared::default()
        };
    }
    let name = report::snapshot_name(&dir, &spec.id, eval.kernel.as_deref());
    let matched = report::check_snapshot(&dir, &name, &snapshot);
    let changes = match matched {
        true => vec![],
        false => {
            let stored = report::read_snapshot(&dir, &name).unwrap_or_default();
            report::fact_changes(&stored, &snapshot)
        }
    };
    Compared {
        matched: Some(matched),
        changes,
        variant_diff: None,
    }
}

/// The timeline chart of a run that has one, in its kept directory.
fn write_timeline(
    kept: &Path,
    spec: &LabSpec,
    eval: &report::Evaluation,
    named: crate::chart::RunName,
) -> Option<PathBuf> {
    if eval.timeline.is_empty() {
        return None;
    }
    let svg = kept.join("timeline.svg");
    let chart = crate::chart::of_run(spec, eval, named);
    std::fs::write(&svg, timeline::svg(&chart)).ok()?;
    Some(svg)
}

/// Over repeated runs of a lab: a copy of the first failing run's kept files, put back into
/// target/kernel-lab/last/<id>/ at the end (a later passing run would have replaced them).
#[derive(Default)]
pub struct KeepFailing {
    copy: Option<(tempfile::TempDir, PathBuf)>,
}

const KEPT_FILES: &[&str] = &[
    "console.log",
    "results.jsonl",
    "result.json",
    "report.txt",
    "timeline.svg",
    "index.html",
];

impl KeepFailing {
    pub fn saw(&mut self, r: &RunResult) {
        if self.copy.is_some() || r.passed() {
            return;
        }
        let Ok(dir) = scratch("failing") else { return };
        for f in KEPT_FILES {
            let _ = std::fs::copy(r.kept.join(f), dir.path().join(f));
        }
        self.copy = Some((dir, r.kept.clone()));
    }

    pub fn restore(self) {
        let Some((dir, kept)) = self.copy else { return };
        // Copied aside, then renamed over: a run of the same lab in another process (check's
        // keep_run copies from here) never sees a file missing.
        for f in KEPT_FILES {
            let tmp = kept.join(format!(".{f}.{}", std::process::id()));
            match std::fs::copy(dir.path().join(f), &tmp) {
                Ok(_) => {
                    let _ = std::fs::rename(&tmp, kept.join(f));
                }
                Err(_) => {
                    let _ = std::fs::remove_file(kept.join(f));
                }
            }
        }
        eprintln!(
            "{}: kept the first failing run's console and results",
            kept.display()
        );
    }
}
