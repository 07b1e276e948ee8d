//! Labs: the catalog under labs/ ([`catalog`]), loading lab.toml ([`load`]), booting a spec
//! ([`boot`]), running one lab end to end ([`execute`]), and its result for people and tools
//! ([`output`]); here, `cargo xtask lab` itself and the options of a run.

mod boot;
mod catalog;
mod execute;
mod load;
mod output;

pub use boot::{boot, floor, kernel_fragments, prepare};
pub use catalog::{LabDir, catalog, edit_distance, resolve};
pub use execute::{KeepFailing, RunResult, execute, execute_loaded, load_to_run, not_applicable};
pub use load::{Loaded, load, load_with, parse_spec, refuse_unknown_counters};
pub use output::{print, print_with, to_json};

use crate::exit::Exit;
use crate::qemu;
use anyhow::Result;

/// Options for one run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Where the kernel comes from (`--kernel-src`, `--kernel`, `--build-dir`, a manifest).
    pub kernel: crate::acquire::KernelChoice,
    pub accel: qemu::Accel,
    pub rebuild_kernel: bool,
    pub install: bool,
    pub timeout: Option<u64>,
    /// `--set name=value`: run a variant of the lab; its facts are compared with the default
    /// snapshot as a diff, not as a pass/fail.
    pub sets: Vec<String>,
    /// `--exercise`: the exercise these `sets` are (its name heads the chart and notebook).
    pub exercise: Option<String>,
    /// `--shell`: set the lab up and give the user a busybox shell instead of running steps.
    pub shell: bool,
    /// `--kernel-arg`: extra words for the guest kernel's command line.
    pub kernel_args: Vec<String>,
    /// `check --mglru`: run with MGLRU switched on or off, whatever the lab says.
    pub mglru: Option<bool>,
    /// Config fragments added to every kernel (`check --debug-kernel`: `debug`).
    pub extra_fragments: Vec<String>,
}

impl Default for RunOptions {
    /// The default kernel source, the accelerator chosen for this machine, set-up allowed,
    /// the lab as written.
    fn default() -> Self {
        RunOptions {
            kernel: crate::acquire::KernelChoice::default(),
            accel: qemu::Accel::Auto,
            rebuild_kernel: false,
            install: true,
            timeout: None,
            sets: vec![],
            exercise: None,
            shell: false,
            kernel_args: vec![],
            mglru: None,
            extra_fragments: vec![],
        }
    }
}

impl crate::LabArgs {
    /// `cargo xtask lab`: its predictions, its exercises, its variables, or `--repeat` runs.
    pub fn run(self) -> Result<Exit> {
        let found = resolve(&self.lab, &catalog()?)?;
        if self.predict {
            let req = crate::predict::Request {
                lab: &found,
                sets: self.sets,
                exercises: self.exercises,
                answers: self.answers.as_deref(),
                questions_only: self.questions,
                full: self.full,
                open: self.open,
            };
            return crate::predict::run_cli(&req, &self.opts.options()?);
        }
        if !self.exercises.is_empty() {
            let opts = self.opts.options()?;
            let repeat = self.repeat.max(1);
            return crate::exercise::run_cli(&found, &self.exercises, repeat, self.json, &opts);
        }
        if self.vars {
            return print_vars(&found);
        }
        let opts = RunOptions {
            sets: self.sets,
            shell: self.shell,
            ..self.opts.options()?
        };
        let show = Show {
            json: self.json,
            full: self.full,
            open: self.open,
        };
        repeat_runs(&found, &opts, self.repeat.max(1), show)
    }
}

/// How `lab` shows its runs: JSON, or the report (every counter with `full`), then the
/// README's questions and (`open`) the notebook in a browser.
#[derive(Clone, Copy)]
struct Show {
    json: bool,
    full: bool,
    open: bool,
}

/// `lab --vars`: the lab's knobs with their defaults and meanings.
fn print_vars(found: &LabDir) -> Result<Exit> {
    let loaded = load_with(&found.spec_path(), &[])?;
    if loaded.vars.is_empty() {
        println!("{} has no variables", found.id);
    }
    for v in &loaded.vars {
        println!("{:<14} {:<8} {}", v.name, v.default, v.help);
    }
    Ok(Exit::Passed)
}

/// Runs the lab `repeat` times, each run's report (or JSON) as it ends, then how many passed;
/// the first failing run's files stay in last/<id>/. The exit: the worst run's.
fn repeat_runs(found: &LabDir, opts: &RunOptions, repeat: usize, show: Show) -> Result<Exit> {
    let (mut passed, mut walls, mut statuses) = (0, Vec::new(), Vec::new());
    let mut failing = KeepFailing::default();
    let loaded = load_to_run(found, opts)?;
    for i in 0..repeat {
        if repeat > 1 {
            eprintln!("run {}/{repeat}", i + 1);
        }
        let result = execute_loaded(found, &loaded, opts)?;
        match show.json {
            true => println!("{}", serde_json::to_string_pretty(&to_json(&result))?),
            false => print_with(&result, show.full),
        }
        if !result.shell && result.variant.is_none() {
            crate::course::record_run(&result.spec.id, result.passed(), None);
        }
        if !show.json && !opts.shell && i + 1 == repeat {
            after_last_run(found, &result, show.open);
        }
        failing.saw(&result);
        statuses.push(crate::check::lab_status(&result));
        passed += usize::from(result.passed());
        walls.push(result.total.as_secs_f64());
    }
    failing.restore();
    if repeat > 1 {
        let f = crate::bench::figure("total", walls);
        println!(
            "{}: {passed}/{repeat} runs passed; wall median {:.2}s (min {:.2}s, max {:.2}s)",
            found.id, f.median, f.min, f.max
        );
    }
    Ok(Exit::of_runs(&statuses))
}

/// After the last run: the README's questions (answers with `cargo xtask answers`), and the
/// notebook opened when asked.
fn after_last_run(found: &LabDir, result: &RunResult, open: bool) {
    let qas = crate::answers::of(found).unwrap_or_default();
    let width = crate::units::terminal_width();
    print!("{}", crate::answers::render_questions(found, &qas, width));
    if open {
        crate::notebook::open(&result.kept.join("index.html"));
    }
}
