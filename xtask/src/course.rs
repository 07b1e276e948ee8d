//! Progress through the course: which labs this machine has run and passed, and the scores of
//! the predictions made, kept in a small JSON file in the cache directory (`progress.json`;
//! `KERNEL_LAB_PROGRESS` names another file) and shown by `cargo xtask list`. Updated under a
//! lock and replaced atomically, so runs in parallel never lose each other's results;
//! `list --reset` forgets it.

use crate::cache;
use crate::predict::Score;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Right answers out of the predictions judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Predicted {
    pub right: usize,
    pub judged: usize,
}

impl Predicted {
    fn of(s: &Score) -> Option<Predicted> {
        (s.judged() > 0).then(|| Predicted {
            right: s.right(),
            judged: s.judged(),
        })
    }

    fn better(a: Option<Predicted>, b: Option<Predicted>) -> Option<Predicted> {
        match (a, b) {
            (Some(x), Some(y)) => Some(if x.right * y.judged >= y.right * x.judged {
                x
            } else {
                y
            }),
            (x, y) => x.or(y),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExerciseProgress {
    pub runs: u32,
    pub agreed: u32,
    #[serde(default)]
    pub last_predicted: Option<Predicted>,
    #[serde(default)]
    pub best_predicted: Option<Predicted>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LabProgress {
    pub runs: u32,
    pub passed: u32,
    pub last_passed: bool,
    /// Seconds since the epoch.
    pub last_run: u64,
    #[serde(default)]
    pub last_predicted: Option<Predicted>,
    #[serde(default)]
    pub best_predicted: Option<Predicted>,
    #[serde(default)]
    pub exercises: BTreeMap<String, ExerciseProgress>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub labs: BTreeMap<String, LabProgress>,
}

/// Where progress is kept.
pub fn path() -> Result<PathBuf> {
    match std::env::var_os("KERNEL_LAB_PROGRESS") {
        Some(p) => Ok(PathBuf::from(p)),
        None => Ok(cache::cache_dir()?.join("progress.json")),
    }
}

/// The progress so far (none yet, or an unreadable file: empty, never an error for a student).
pub fn load() -> Progress {
    path()
        .ok()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

fn update(f: impl FnOnce(&mut Progress)) -> Result<()> {
    let file = path()?;
    let dir = file.parent().map(PathBuf::from).unwrap_or_default();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let _lock = cache::lock(&dir, "progress")?;
    let mut p = load();
    f(&mut p);
    crate::cache::write_file(&file, serde_json::to_string_pretty(&p)?)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A default run of a lab (with its predictions, if any). Progress is a convenience: a failure
/// to record it is a warning, never a failed run.
pub fn record_run(lab: &str, passed: bool, score: Option<&Score>) {
    let r = update(|p| {
        let l = p.labs.entry(lab.to_string()).or_default();
        l.runs += 1;
        l.passed += u32::from(passed);
        l.last_passed = passed;
        l.last_run = now();
        if let Some(s) = score.and_then(Predicted::of) {
            l.last_predicted = Some(s);
            l.best_predicted = Predicted::better(l.best_predicted, Some(s));
        }
    });
    if let Err(e) = r {
        eprintln!("warning: progress not recorded: {e:#}");
    }
}

/// An exercise run: whether the kernel agreed with it, and the predictions made.
pub fn record_exercise(lab: &str, exercise: &str, agreed: bool, score: Option<&Score>) {
    let r = update(|p| {
        let l = p.labs.entry(lab.to_string()).or_default();
        l.last_run = now();
        let x = l.exercises.entry(exercise.to_string()).or_default();
        x.runs += 1;
        x.agreed += u32::from(agreed);
        if let Some(s) = score.and_then(Predicted::of) {
            x.last_predicted = Some(s);
            x.best_predicted = Predicted::better(x.best_predicted, Some(s));
        }
    });
    if let Err(e) = r {
        eprintln!("warning: progress not recorded: {e:#}");
    }
}

/// `list --reset`: forgets everything; says whether there was anything.
pub fn reset() -> Result<bool> {
    let file = path()?;
    match std::fs::remove_file(&file) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("removing {}", file.display())),
    }
}

/// One lab's progress in a few words: `passed (3 runs) · predictions 7/9 (best 9/9) ·
/// exercises 2/3`.
pub fn describe(l: Option<&LabProgress>, exercises: usize) -> String {
    let Some(l) = l else {
        return "not run yet".into();
    };
    let mut parts = Vec::new();
    if l.runs > 0 {
        let state = if l.last_passed {
            "passed"
        } else {
            "failed last time"
        };
        parts.push(format!(
            "{state} ({} of {} run{} passed)",
            l.passed,
            l.runs,
            if l.runs == 1 { "" } else { "s" }
        ));
    }
    let score = |p: &Predicted| format!("{}/{}", p.right, p.judged);
    match (l.last_predicted, l.best_predicted) {
        (Some(a), Some(b)) if a != b => {
            parts.push(format!("predicted {} (best {})", score(&a), score(&b)))
        }
        (Some(a), _) => parts.push(format!("predicted {}", score(&a))),
        _ => {}
    }
    if !l.exercises.is_empty() {
        let agreed = l.exercises.values().filter(|x| x.agreed > 0).count();
        let predicted: Vec<String> = l
            .exercises
            .iter()
            .filter_map(|(n, x)| x.best_predicted.map(|p| format!("{n} {}", score(&p))))
            .collect();
        let mut s = format!(
            "exercises tried {}/{exercises}, kernel agreed in {agreed}",
            l.exercises.len()
        );
        if !predicted.is_empty() {
            s.push_str(&format!(" (predicted: {})", predicted.join(", ")));
        }
        parts.push(s);
    }
    if parts.is_empty() {
        return "not run yet".into();
    }
    parts.join(" · ")
}

impl crate::ListArgs {
    /// `cargo xtask list`: each lab with its title and this machine's progress in it;
    /// `--reset` forgets the progress.
    pub fn run(self) -> Result<crate::exit::Exit> {
        if self.reset {
            let path = path()?;
            match reset()? {
                true => println!("progress forgotten ({} removed)", path.display()),
                false => println!("no progress recorded yet ({})", path.display()),
            }
            return Ok(crate::exit::Exit::Passed);
        }
        let progress = load();
        for l in crate::lab::catalog()? {
            match crate::lab::load(&l.spec_path()) {
                Ok(spec) => println!(
                    "{:<22} {:<66} {}",
                    l.id,
                    spec.title,
                    describe(progress.labs.get(&l.id), spec.exercises.len())
                ),
                Err(e) => println!("{:<22} (broken: {e:#})", l.id),
            }
        }
        Ok(crate::exit::Exit::Passed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_reads_as_words() {
        assert_eq!(describe(None, 0), "not run yet");
        let mut l = LabProgress {
            runs: 3,
            passed: 2,
            last_passed: true,
            last_run: 1,
            last_predicted: Some(Predicted {
                right: 5,
                judged: 6,
            }),
            best_predicted: Some(Predicted {
                right: 6,
                judged: 6,
            }),
            exercises: BTreeMap::new(),
        };
        assert_eq!(
            describe(Some(&l), 2),
            "passed (2 of 3 runs passed) · predicted 5/6 (best 6/6)"
        );
        l.exercises.insert(
            "limit-above-file".into(),
            ExerciseProgress {
                runs: 1,
                agreed: 1,
                last_predicted: None,
                best_predicted: Some(Predicted {
                    right: 4,
                    judged: 6,
                }),
            },
        );
        assert!(
            describe(Some(&l), 2).ends_with(
                "exercises tried 1/2, kernel agreed in 1 (predicted: limit-above-file 4/6)"
            ),
            "{}",
            describe(Some(&l), 2)
        );
        assert_eq!(
            Predicted::better(
                Some(Predicted {
                    right: 1,
                    judged: 2
                }),
                Some(Predicted {
                    right: 2,
                    judged: 3
                })
            ),
            Some(Predicted {
                right: 2,
                judged: 3
            })
        );
    }

    #[test]
    fn runs_are_recorded_and_reset() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.json");
        // SAFETY: this test alone reads the variable (other tests never record progress).
        unsafe { std::env::set_var("KERNEL_LAB_PROGRESS", &file) };
        record_run("2-cgroup-limit", true, None);
        record_run("2-cgroup-limit", false, None);
        record_exercise("2-cgroup-limit", "x", true, None);
        let p = load();
        let l = &p.labs["2-cgroup-limit"];
        assert_eq!((l.runs, l.passed, l.last_passed), (2, 1, false));
        assert_eq!(l.exercises["x"].agreed, 1);
        assert!(reset().unwrap());
        assert!(!reset().unwrap());
        assert_eq!(load(), Progress::default());
        unsafe { std::env::remove_var("KERNEL_LAB_PROGRESS") };
    }
}
