//! `cargo xtask mutants`: which kernel regressions does the suite catch? Each patch of a
//! directory of small kernel changes (kernel-mutants/: a counter no longer incremented, a limit
//! ignored, a wake-up dropped) is applied in turn to a scratch copy of the kernel tree, built
//! incrementally in that copy's build directories, and checked; the labs and selftests that
//! fail on it (and passed without it) caught it, a mutant that nothing noticed escaped.

use crate::acquire::KernelChoice;
use crate::cache::{self, KeyHasher};
use crate::check::{self, Check, CheckOptions, Entry, Mode, RunStatus, Verdict};
use crate::kernel::{self, Untestable};
use anyhow::{Context, Result, bail};
use serde::Serialize;
use std::fmt::Write;
use std::fs;
use std::path::{Path, PathBuf};

/// One mutant: a patch file with a `Subject:` line saying what it breaks.
#[derive(Debug, Clone, Serialize)]
pub struct Mutant {
    pub name: String,
    pub subject: String,
    #[serde(skip)]
    pub patch: PathBuf,
}

/// The `*.patch` files of `dir`, in name order (`only`: names starting with one of these).
pub fn load(dir: &Path, only: &[String]) -> Result<Vec<Mutant>> {
    let mut out = Vec::new();
    let entries =
        fs::read_dir(dir).with_context(|| format!("reading mutants from {}", dir.display()))?;
    for e in entries.flatten() {
        let path = e.path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".patch"))
        else {
            continue;
        };
        if !only.is_empty() && !only.iter().any(|o| name.starts_with(o.as_str())) {
            continue;
        }
        let text = fs::read_to_string(&path)?;
        let subject = text
            .lines()
            .find_map(|l| l.strip_prefix("Subject: "))
            .unwrap_or(name)
            .trim()
            .to_string();
        out.push(Mutant {
            name: name.to_string(),
            subject,
            patch: path,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    if out.is_empty() {
        bail!("no mutants (*.patch) in {}", dir.display());
    }
    Ok(out)
}

/// What the suite made of one mutant.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Outcome {
    /// These labs and selftests failed on it (and passed on the unmodified tree).
    Caught { by: Vec<String> },
    /// Everything that passed on the unmodified tree passed on it too (or only failed before
    /// passing a retry: these are listed).
    Escaped { flaky: Vec<String> },
    /// The patch does not apply to this tree.
    DoesNotApply { why: String },
    /// The mutated kernel does not build (or lost an option): not a test of the suite.
    DoesNotBuild { why: String },
    /// The check itself failed (not a verdict on the mutant).
    Error { why: String },
}

#[derive(Debug, Clone, Serialize)]
pub struct Result1 {
    #[serde(flatten)]
    pub mutant: Mutant,
    #[serde(flatten)]
    pub outcome: Outcome,
    pub secs: f64,
}

impl crate::MutantsArgs {
    /// `cargo xtask mutants`: every mutant checked, the table, mutants.json.
    pub fn run(self) -> Result<crate::exit::Exit> {
        let project = cache::project_root();
        let set = load(&project.join(&self.mutants), &self.only)?;
        let (selected, selftests) = check::select(&self.labs, &crate::lab::catalog()?)?;
        let kernels = vec![KernelChoice::Source(self.src.kernel_src)];
        let opts = CheckOptions {
            labs: check::load_labs(selected, &kernels)?,
            kernels,
            repeat: 1,
            // A failure that passes on a retry is flaky, and catches nothing.
            retries: 1,
            shard: None,
            run: crate::lab::RunOptions {
                accel: self.accel,
                install: !self.no_install,
                ..Default::default()
            },
            modes: vec![Mode::Lab],
            selftests: selftests && !self.no_selftests,
            timeout_factor: self.timeout_factor,
            out: cache::target_dir()?.join("mutants"),
            declared: vec![],
            baseline: None,
        };
        let (unreliable, results) = run(&set, &opts)?;
        print!("\n{}", render(&unreliable, &results));
        println!("wrote {}", opts.out.join("mutants.json").display());
        Ok(crate::exit::Exit::Passed)
    }
}

/// Runs every mutant; `opts.kernels` must hold the one source to mutate.
pub fn run(mutants: &[Mutant], opts: &CheckOptions) -> Result<(Vec<String>, Vec<Result1>)> {
    let [KernelChoice::Source(flag)] = &opts.kernels[..] else {
        bail!("mutants builds the kernel from a source: give one --kernel-src (a tree or tarball)");
    };
    crate::setup::ensure(opts.run.install, flag.as_deref())?;
    if std::env::var_os("INSTA_UPDATE").is_none() {
        // A caught mutant's snapshots differ on purpose: no .snap.new files for review.
        // SAFETY: the only other thread (the Ctrl-C handler's) never reads the environment.
        unsafe { std::env::set_var("INSTA_UPDATE", "no") };
    }
    let (scratch, _lock) = scratch_tree(flag.as_deref())?;
    let sets =
        crate::manifest::fragment_sets(opts.labs.iter().map(|l| &l.loaded.spec), opts.selftests)?;
    let choice = KernelChoice::Source(Some(scratch.clone()));
    // Each check writes its reports to OUT/<mutant> (OUT/unmodified for the tree as it is).
    let check_scratch = |name: &str| -> Result<Vec<Entry>> {
        crate::tree::forget(&scratch);
        // Built first (incrementally): a mutant that does not build is told apart from the
        // check.
        for set in &sets {
            choice.kernel(set, false)?;
        }
        let o = CheckOptions {
            kernels: vec![choice.clone()],
            shard: None,
            baseline: None,
            out: opts.out.join(name),
            ..CheckOptions::clone(opts)
        };
        Ok(check::check(&o)?.results)
    };
    eprintln!(
        "mutants: the unmodified tree first (a check that fails there cannot catch anything)"
    );
    let baseline = check_scratch("unmodified").context("checking the unmodified tree")?;
    let unreliable: Vec<String> = baseline.iter().filter(|e| !ok(e)).map(name).collect();
    let mut results = Vec::new();
    for (i, m) in mutants.iter().enumerate() {
        let n = mutants.len();
        eprintln!("mutants: {}/{n} {}: {}", i + 1, m.name, m.subject);
        let started = std::time::Instant::now();
        let outcome = match apply(&scratch, &m.patch, false) {
            Err(e) => Outcome::DoesNotApply {
                why: format!("{e:#}"),
            },
            Ok(()) => {
                let outcome = outcome(check_scratch(&m.name), &baseline);
                apply(&scratch, &m.patch, true)
                    .with_context(|| format!("reverting {} in {}", m.name, scratch.display()))?;
                outcome
            }
        };
        if crate::progress::interrupted() {
            bail!("interrupted; the scratch tree is back to the unmodified source");
        }
        results.push(Result1 {
            mutant: m.clone(),
            outcome,
            secs: started.elapsed().as_secs_f64(),
        });
        // After every mutant: a long run that stops early keeps what it found.
        write_json(&opts.out, &unreliable, &results)?;
        eprint!("{}", render(&unreliable, &results));
    }
    Ok((unreliable, results))
}

/// The cache's scratch copy of the source tree (copied again where it changed), and the lock
/// that keeps it this process's while mutants patch it.
fn scratch_tree(flag: Option<&Path>) -> Result<(PathBuf, cache::Lock)> {
    let cache = cache::cache_dir()?;
    let source = kernel::locate(flag)?;
    let tree = kernel::source_tree(&cache, &source)?;
    let mut h = KeyHasher::new();
    h.add(b"mutants scratch")
        .add(tree.as_os_str().as_encoded_bytes());
    let lock = cache::lock(&cache, &format!("mutants-{}", h.hex()))?;
    let scratch = cache.join("mutants").join(h.hex()).join("linux");
    fs::create_dir_all(&scratch)?;
    cache::touch(&cache.join("mutants").join(h.hex()));
    let scratch = scratch.canonicalize()?;
    crate::progress::status(&format!(
        "mutants: copying {} to {} (what changed since the last time) ...",
        tree.display(),
        scratch.display()
    ));
    let copied = crate::tree::sync(&tree, &scratch)?;
    crate::progress::status_done(&format!(
        "mutants: scratch tree ready ({copied} files copied)"
    ));
    Ok((scratch, lock))
}

/// A mutant's outcome from the check of the patched tree: caught by what failed there that
/// did not fail on the unmodified tree (`baseline`, check by check: a lab already failing
/// one check there still catches a mutant with another), escaped when nothing did or only
/// flakily, does not build (untestable), or an error.
fn outcome(checked: Result<Vec<Entry>>, baseline: &[Entry]) -> Outcome {
    let entries = match checked {
        Ok(entries) => entries,
        Err(e) if e.downcast_ref::<Untestable>().is_some() => {
            return Outcome::DoesNotBuild {
                why: first_line(&e),
            };
        }
        Err(e) => {
            return Outcome::Error {
                why: first_line(&e),
            };
        }
    };
    let bad: Vec<(&Entry, String)> = entries
        .iter()
        .filter_map(|e| newly_failing(e, baseline).map(|by| (e, by)))
        .collect();
    let by: Vec<String> = bad.iter().map(|(_, by)| by.clone()).collect();
    // Flaky alone (failed, then passed a retry) catches nothing.
    if bad.iter().all(|(e, _)| e.result == Verdict::Flaky) {
        Outcome::Escaped { flaky: by }
    } else {
        Outcome::Caught { by }
    }
}

/// What of `e` failed that did not fail on the unmodified tree: the item, when it passed
/// there; else its checks that fail now and did not there (a lab whose snapshot was already
/// stale still catches a mutant by an expectation). None: nothing new.
fn newly_failing(e: &Entry, baseline: &[Entry]) -> Option<String> {
    if ok(e) {
        return None;
    }
    let whole = format!("{} ({})", name(e), e.result.name());
    let Some(before) = baseline
        .iter()
        .find(|b| name(b) == name(e) && b.kernel == e.kernel)
        .filter(|b| !ok(b))
    else {
        return Some(whole);
    };
    let failed_before = |c: &Check| {
        before
            .checks
            .iter()
            .any(|b| b.name == c.name && b.status != RunStatus::Passed)
    };
    let new: Vec<&str> = e
        .checks
        .iter()
        .filter(|c| c.status != RunStatus::Passed && !failed_before(c))
        .map(|c| c.name.as_str())
        .collect();
    (!new.is_empty()).then(|| format!("{} ({}: {})", name(e), e.result.name(), new.join("; ")))
}

fn ok(e: &Entry) -> bool {
    matches!(
        e.result,
        Verdict::Passed | Verdict::Skipped | Verdict::Xfail
    )
}

fn name(e: &Entry) -> String {
    match e.mglru {
        Mode::Lab => e.id.clone(),
        m => format!("{} (MGLRU {})", e.id, m.name()),
    }
}

fn first_line(e: &anyhow::Error) -> String {
    format!("{e:#}")
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// `git apply [-R] PATCH` in `dir` (a plain directory: git is only the patch tool here).
fn apply(dir: &Path, patch: &Path, reverse: bool) -> Result<()> {
    let patch = patch
        .canonicalize()
        .with_context(|| format!("reading {}", patch.display()))?;
    let mut cmd = std::process::Command::new("git");
    cmd.arg("apply");
    if reverse {
        cmd.arg("-R");
    }
    let out = cmd
        .arg(&patch)
        .current_dir(dir)
        // Never let git find a repository above the scratch copy.
        .env("GIT_CEILING_DIRECTORIES", dir.parent().unwrap_or(dir))
        .output()
        .context("running git apply (apt-get install git)")?;
    if !out.status.success() {
        bail!(
            "git apply{} {}: {}",
            if reverse { " -R" } else { "" },
            patch.display(),
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or_default()
        );
    }
    Ok(())
}

/// The caught/escaped table.
pub fn render(unreliable: &[String], results: &[Result1]) -> String {
    let w = results
        .iter()
        .map(|r| r.mutant.name.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let mut out = format!("{:<w$}  {:<8}  caught by / why\n", "mutant", "result");
    for r in results {
        let (word, detail) = match &r.outcome {
            Outcome::Caught { by } => ("caught", by.join(", ")),
            Outcome::Escaped { flaky } if flaky.is_empty() => {
                ("ESCAPED", "nothing failed".to_string())
            }
            Outcome::Escaped { flaky } => ("ESCAPED", format!("only flaky: {}", flaky.join(", "))),
            Outcome::DoesNotApply { why } => ("n/a", format!("does not apply: {why}")),
            Outcome::DoesNotBuild { why } => ("n/a", format!("does not build: {why}")),
            Outcome::Error { why } => ("error", why.clone()),
        };
        let _ = writeln!(out, "{:<w$}  {word:<8}  {detail}", r.mutant.name);
        let _ = writeln!(out, "{:<w$}            ({})", "", r.mutant.subject);
    }
    let caught = results
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Caught { .. }))
        .count();
    let escaped = results
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Escaped { .. }))
        .count();
    let _ = writeln!(
        out,
        "mutants: {caught} caught, {escaped} escaped, {} not judged",
        results.len() - caught - escaped
    );
    if !unreliable.is_empty() {
        let _ = writeln!(
            out,
            "failing on the unmodified tree too (only their other checks count): {}",
            unreliable.join(", ")
        );
    }
    out
}

/// Writes mutants.json into `dir`.
pub fn write_json(dir: &Path, unreliable: &[String], results: &[Result1]) -> Result<PathBuf> {
    fs::create_dir_all(dir)?;
    let path = dir.join("mutants.json");
    let v = serde_json::json!({
        "schema": "kernel-lab/mutants/1",
        "failing_unmodified": unreliable,
        "mutants": results,
    });
    fs::write(&path, serde_json::to_string_pretty(&v)?)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_mutants_are_one_line_mm_changes_with_a_subject() {
        let dir = cache::project_root().join("kernel-mutants");
        let all = load(&dir, &[]).unwrap();
        assert!(all.len() >= 10, "{} mutants", all.len());
        for m in &all {
            let text = fs::read_to_string(&m.patch).unwrap();
            assert_ne!(m.subject, m.name, "{} has no Subject: line", m.name);
            let files: Vec<&str> = text
                .lines()
                .filter_map(|l| l.strip_prefix("+++ b/"))
                .collect();
            assert_eq!(files.len(), 1, "{}: one file", m.name);
            assert!(files[0].starts_with("mm/"), "{}: {}", m.name, files[0]);
            let changed = |c: char| {
                text.lines()
                    .filter(|l| l.starts_with(c) && !l.starts_with(&format!("{c}{c}{c}")))
                    .count()
            };
            assert!(
                changed('-') <= 1 && changed('+') <= 1,
                "{}: one line",
                m.name
            );
        }
    }

    /// A lab that already failed one check on the unmodified tree (a stale snapshot) still
    /// catches a mutant by another check; the check that failed before catches nothing.
    #[test]
    fn a_lab_failing_on_the_unmodified_tree_still_catches_by_its_other_checks() {
        use crate::check::tests::entry;
        let check = |name: &str, status| Check {
            name: name.into(),
            status,
            detail: String::new(),
        };
        let with = |checks: Vec<Check>| {
            let mut e = entry("4-memory-high", Verdict::Failed);
            e.checks = checks;
            e
        };
        let snap = || check("snapshot 4-memory-high.snap", RunStatus::Failed);
        let psi = |s| check("expectation Δ T/memory.pressure.some.total >= 500000", s);
        let baseline = vec![with(vec![psi(RunStatus::Passed), snap()])];
        let same = with(vec![psi(RunStatus::Passed), snap()]);
        assert!(matches!(
            outcome(Ok(vec![same]), &baseline),
            Outcome::Escaped { flaky } if flaky.is_empty()
        ));
        let caught = with(vec![psi(RunStatus::Failed), snap()]);
        match outcome(Ok(vec![caught]), &baseline) {
            Outcome::Caught { by } => assert_eq!(
                by,
                ["4-memory-high (failed: expectation Δ T/memory.pressure.some.total >= 500000)"]
            ),
            other => panic!("{other:?}"),
        }
        // A lab that passed on the unmodified tree catches as a whole.
        let clean = vec![entry("2-cgroup-limit", Verdict::Passed)];
        match outcome(Ok(vec![entry("2-cgroup-limit", Verdict::Failed)]), &clean) {
            Outcome::Caught { by } => assert_eq!(by, ["2-cgroup-limit (failed)"]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn apply_and_revert_a_patch_outside_any_repository() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("t");
        fs::create_dir_all(dir.join("mm")).unwrap();
        fs::write(dir.join("mm/x.c"), "int a;\n").unwrap();
        let p = tmp.path().join("m.patch");
        fs::write(
            &p,
            "Subject: x\n---\ndiff --git a/mm/x.c b/mm/x.c\n--- a/mm/x.c\n+++ b/mm/x.c\n@@ -1 +1 @@\n-int a;\n+int b;\n",
        )
        .unwrap();
        apply(&dir, &p, false).unwrap();
        assert_eq!(fs::read_to_string(dir.join("mm/x.c")).unwrap(), "int b;\n");
        assert!(apply(&dir, &p, false).is_err(), "applied twice");
        apply(&dir, &p, true).unwrap();
        assert_eq!(fs::read_to_string(dir.join("mm/x.c")).unwrap(), "int a;\n");
    }
}
