//! `cargo xtask check`: every lab (or a filter) and the kernel's own selftests on one or more
//! kernels, repeated and retried, sharded, with a table and three reports for CI systems
//! (check.json, junit.xml, check.ktap) written as results arrive and always at the end.
//!
//! Each matrix item ends in one [`Verdict`]: a per-item error (a kernel that does not build, a
//! timeout, a QEMU crash, a truncated stream) is recorded and the check goes on. The exit code
//! folds the verdicts: 125 if a kernel could not be tested, else 255 if an item could not run,
//! else 1 if one failed, else 0 (see [`exit_code`]).

mod formats;
mod merge;

use crate::acquire::KernelChoice;
use crate::exit::{Exit, as_bad_input};
use crate::lab::{self, LabDir, RunOptions, RunResult};
use crate::{cache, health, kernel, progress, qemu, selftests};
use anyhow::{Context, Result, bail};
use guest::spec::LabSpec;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use merge::Declared;

/// `cargo xtask check` flags.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = CHECK_HELP)]
pub struct CheckArgs {
    /// Only these labs (ids, numbers or prefixes); repeatable. `selftests` names the
    /// kernel's own cgroup memory selftests. Default: the whole catalog and the selftests.
    #[arg(long = "lab", value_name = "LAB")]
    pub labs: Vec<String>,
    /// Leave out the kernel's own selftests (test_memcontrol, built from the same source
    /// tree and run in the same VM set-up), which otherwise run once per kernel and mode.
    #[arg(long)]
    pub no_selftests: bool,
    /// Kernel sources to check: trees, tarballs, or `6.1` for Debian's linux-source-6.1
    /// (installed when missing); repeatable. Default: Debian's 6.12.
    #[arg(long = "kernel-src", value_name = "DIR|TARBALL|X.Y")]
    pub kernels: Vec<PathBuf>,
    /// Run each item N times; one that passes only sometimes is reported as flaky.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub repeat: usize,
    /// After a run that did not pass, run the item this many more times: failing every time is
    /// a failure, passing on a retry is "flaky" with the observed rate.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub retries: usize,
    /// Run every lab with MGLRU on, off, or both (labs that set it themselves are skipped
    /// in the other mode) [default: as each lab says].
    #[arg(long, value_enum)]
    pub mglru: Option<Mglru>,
    /// Run only shard I of N: every N-th item of the fixed matrix (kernels x modes x labs and
    /// selftests), so N CI machines together run each item once (merge with --merge).
    #[arg(long, value_name = "I/N")]
    pub shard: Option<Shard>,
    /// Where to write check.json, junit.xml and check.ktap (and runs/ with every run's logs).
    #[arg(long, value_name = "DIR", default_value = "target/kernel-lab/check")]
    pub out: PathBuf,
    /// Accelerator (see `lab --help`).
    #[arg(long, value_enum, default_value = "auto")]
    pub accel: qemu::Accel,
    /// Never install packages; say what is missing instead.
    #[arg(long)]
    pub no_install: bool,
    /// Extra word for every guest kernel's command line (e.g. loglevel=7 to see OOM reports
    /// in the console logs); repeatable.
    #[arg(long = "kernel-arg", value_name = "WORD")]
    pub kernel_args: Vec<String>,
    /// Multiply every timeout (each lab's vm.timeout_secs, the selftests' boot) by F, for slow
    /// runners.
    #[arg(long, value_name = "F", default_value_t = 1.0)]
    pub timeout_factor: f64,
    /// Build every kernel with kernel-configs/debug.config too (DEBUG_VM, lockdep, KASAN): a
    /// WARN, a lockdep report or a KASAN report then fails the run's health. Slower (README).
    /// With --build-only --export, the debug kernels are the ones exported (a run from that
    /// manifest then needs --debug-kernel too).
    #[arg(long)]
    pub debug_kernel: bool,
    /// Compare with an earlier check.json: only what is new (failing now, not then) fails.
    #[arg(long, value_name = "OLD/check.json")]
    pub baseline: Option<PathBuf>,
    /// Merge the reports of shards (directories or check.json files) into one verdict in
    /// --out, instead of running anything.
    #[arg(long, value_name = "DIR", num_args = 1.., conflicts_with_all = ["labs", "kernels", "shard", "no_selftests", "manifest", "build_only"])]
    pub merge: Vec<PathBuf>,
    #[command(flatten)]
    pub prebuilt: crate::PrebuiltArgs,
    /// Run from kernels exported by `check --build-only --export DIR`: DIR/manifest.json.
    /// No kernel tree and no make are needed; each lab's kernel is checked against its
    /// fragments before it boots.
    #[arg(long = "kernels", value_name = "MANIFEST")]
    pub manifest: Option<PathBuf>,
    /// Only build (or find cached) every kernel the selected labs and selftests need, and
    /// the selftest programs; boot nothing. With --export, copy them with a manifest.json.
    #[arg(long)]
    pub build_only: bool,
    /// With --build-only: write the kernels, the selftest programs and manifest.json to DIR
    /// (for `check --kernels DIR/manifest.json` on other machines).
    #[arg(long, value_name = "DIR", requires = "build_only")]
    pub export: Option<PathBuf>,
}

const CHECK_HELP: &str = "Results: passed, flaky (failed, then passed on a retry: shown with its rate, does not fail \
the check), failed (never passed: a regression, exit 1), xfail (failed where kernel-lab's declared.toml says it cannot \
work, with the reason), skipped (does not apply, with the reason), error (could not run: timeout, QEMU crash, truncated \
stream, a dead agent; exit 255, which aborts a bisect), untestable (the kernel does not build, lacks an option, or its \
selftests do not compile; exit 125). The exit is the worst item: 125 > 255 > 1 > 0; bad input (a spec error, an unknown \
lab) exits 2 before anything runs. A run whose kernel warned (WARNING, BUG, Oops, lockdep, a taint, a crit/alert/emerg \
line) fails its health. Example: cargo xtask check --kernel-src 6.1 --kernel-src 6.12 --repeat 3";

/// `I/N`: this machine runs shard I (1-based) of N.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| format!("shard {s:?}: write I/N, e.g. 1/4"))?;
        let (index, count) = (i.trim().parse::<usize>(), n.trim().parse::<usize>());
        match (index, count) {
            (Ok(index), Ok(count)) if count >= 1 && (1..=count).contains(&index) => {
                Ok(Shard { index, count })
            }
            _ => Err(format!("shard {s:?}: I and N are numbers with 1 <= I <= N")),
        }
    }
}

/// Whether matrix item `k` belongs to `shard`: item k goes to shard k mod N + 1, so every item
/// is in exactly one shard and shards differ in size by at most one.
pub fn in_shard(k: usize, shard: Option<Shard>) -> bool {
    shard.is_none_or(|s| k % s.count + 1 == s.index)
}

/// `--mglru`: which LRU implementation(s) to check the labs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mglru {
    On,
    Off,
    Both,
}

impl Mglru {
    pub fn modes(self) -> Vec<Mode> {
        match self {
            Mglru::On => vec![Mode::On],
            Mglru::Off => vec![Mode::Off],
            Mglru::Both => vec![Mode::On, Mode::Off],
        }
    }
}

/// The MGLRU mode of one matrix column: forced on, forced off, or as the lab says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Lab,
    On,
    Off,
}

impl Mode {
    pub fn forced(self) -> Option<bool> {
        match self {
            Mode::Lab => None,
            Mode::On => Some(true),
            Mode::Off => Some(false),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::Lab => "lab",
            Mode::On => "on",
            Mode::Off => "off",
        }
    }
}

/// A lab, or one test of the kernel's own selftests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Lab,
    Selftest,
}

/// What one item came to over its runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Every run passed.
    Passed,
    /// Failed at least once and passed at least once: reported with its rate, not a failure.
    Flaky,
    /// Never passed, and failed (not just errored) at least once: a regression.
    Failed,
    /// Never passed, where declared.toml says it cannot (reason, kernels, accelerator).
    Xfail,
    /// Does not apply (`[applies]`, the other MGLRU mode, a test that skipped itself).
    Skipped,
    /// Could not run to a result: timeout, QEMU crash, truncated stream, an infrastructure
    /// error. Not a regression, but not a pass.
    Error,
    /// The kernel cannot be tested: it does not build, lacks an option, or its selftests do
    /// not compile (`kernel::Untestable`).
    Untestable,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Passed => "passed",
            Verdict::Flaky => "flaky",
            Verdict::Failed => "failed",
            Verdict::Xfail => "xfail",
            Verdict::Skipped => "skipped",
            Verdict::Error => "error",
            Verdict::Untestable => "untestable",
        }
    }

    /// Whether this verdict, when new, fails the check.
    pub fn is_bad(self) -> bool {
        matches!(self, Verdict::Failed | Verdict::Error | Verdict::Untestable)
    }
}

/// How one run of an item ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Passed,
    Failed,
    Error,
    Skipped,
    Xfail,
}

/// One line of a lab's detail (KTAP's innermost level): an expectation, the snapshot, the
/// kernel's health, whether the run completed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub status: RunStatus,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// What one lab (or one upstream selftest) did on one kernel and mode over its runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The item's position in the whole (unsharded) matrix; merged shards sort by it.
    pub index: usize,
    pub kind: Kind,
    /// The lab id, or `program/test` for a selftest.
    pub id: String,
    /// The kernel's label (its version).
    pub kernel: String,
    pub mglru: Mode,
    pub result: Verdict,
    pub runs: usize,
    pub passed: usize,
    pub median_wall_secs: f64,
    /// Why it did not pass (expectations, snapshot facts, run problems, health findings, from
    /// the first run that did not pass), or why it was skipped or declared.
    pub details: Vec<String>,
    /// The detail of the run shown (the first that did not pass, else the last).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<Check>,
    /// With --baseline: whether this is bad now and was not in the baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new: Option<bool>,
}

impl Entry {
    fn blank(index: usize, kind: Kind, id: &str, kernel: &str, mglru: Mode) -> Entry {
        Entry {
            index,
            kind,
            id: id.to_string(),
            kernel: kernel.to_string(),
            mglru,
            result: Verdict::Skipped,
            runs: 0,
            passed: 0,
            median_wall_secs: 0.0,
            details: vec![],
            checks: vec![],
            new: None,
        }
    }
}

/// One boot: what it was for, how it ended, its health and where its logs are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub index: usize,
    pub id: String,
    pub kernel: String,
    pub mglru: Mode,
    /// 1-based; runs after the --repeat ones are retries.
    pub attempt: usize,
    pub retry: bool,
    pub status: RunStatus,
    pub wall_secs: f64,
    /// The kernel was judged and found healthy (false too when it printed nothing to judge).
    pub healthy: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health: Vec<String>,
    /// This run's console.log and results.jsonl.
    pub log: PathBuf,
}

/// Where the results came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// kernel-lab's version and, in a git checkout, its `git describe`.
    pub tool: String,
    pub accelerator: String,
    pub shard: Option<Shard>,
    /// Items in the whole matrix (all shards together).
    pub matrix_items: usize,
    pub repeat: usize,
    pub retries: usize,
    pub timeout_factor: f64,
    pub debug_kernel: bool,
    pub kernel_args: Vec<String>,
    pub kernels: Vec<KernelInfo>,
    /// For a merged report: the reports it was made from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged_from: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KernelInfo {
    pub label: String,
    pub source: String,
    /// The source's identity (git tree id with its changes, or tarball path/size/mtime).
    pub tree: String,
    /// `git describe --always --dirty` where the source is a git tree.
    pub git_describe: Option<String>,
    /// Per fragment set used: the kernel's cache key and the hash of its .config (when built).
    pub configs: Vec<ConfigInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigInfo {
    pub fragments: Vec<String>,
    pub key: String,
    pub config_hash: Option<String>,
}

/// check.json.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema: String,
    pub provenance: Provenance,
    /// The verdict of the whole check: passed, failed, error or untestable.
    pub verdict: String,
    pub exit_code: u8,
    pub results: Vec<Entry>,
    pub runs: Vec<RunRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<merge::BaselineSummary>,
}

pub const SCHEMA: &str = "kernel-lab/check/1";

/// Exit code of a set of results: 125 if a kernel could not be tested, else 255 if an item
/// could not run, else 1 if one failed, else 0. With a baseline only the new ones count
/// (a kernel that cannot be tested always does).
pub fn exit_code(entries: &[Entry]) -> u8 {
    entries
        .iter()
        .filter(|e| e.result == Verdict::Untestable || e.new != Some(false))
        .map(|e| Exit::of_verdict(e.result))
        .max()
        .unwrap_or(Exit::Passed)
        .code()
}

fn verdict_name(code: u8) -> &'static str {
    Exit::from_code(code).name()
}

/// One unit of the matrix: a lab, or one boot running the kernel's selftests.
#[derive(Debug, Clone)]
pub enum Item {
    Lab(LabItem),
    Selftests,
}

/// A lab of the check, loaded once before anything runs: every item and run of it shares
/// this spec.
#[derive(Debug, Clone)]
pub struct LabItem {
    pub dir: LabDir,
    pub loaded: Arc<lab::Loaded>,
}

/// Loads each selected lab once (its counters checked where the kernel is the default one):
/// a spec error stops the check before anything runs (bad input, exit 2), naming every broken
/// lab.
pub fn load_labs(dirs: Vec<LabDir>, kernels: &[KernelChoice]) -> Result<Vec<LabItem>> {
    let mut errs = Vec::new();
    let mut labs = Vec::new();
    for dir in dirs {
        let loaded = lab::load_with(&dir.spec_path(), &[]).and_then(|loaded| {
            for k in kernels {
                lab::refuse_unknown_counters(&dir, &loaded, k)?;
            }
            Ok(loaded)
        });
        match loaded {
            Ok(l) => labs.push(LabItem {
                dir,
                loaded: Arc::new(l),
            }),
            Err(e) => errs.push(format!("{}: {e:#}", dir.id)),
        }
    }
    if !errs.is_empty() {
        crate::exit::bad_input!("{}", errs.join("\n"));
    }
    Ok(labs)
}

#[derive(Clone)]
pub struct CheckOptions {
    pub labs: Vec<LabItem>,
    pub kernels: Vec<KernelChoice>,
    pub repeat: usize,
    pub retries: usize,
    pub shard: Option<Shard>,
    pub run: RunOptions,
    pub modes: Vec<Mode>,
    /// Also run the kernel's own cgroup memory selftests (one item per kernel and mode).
    pub selftests: bool,
    pub timeout_factor: f64,
    pub out: PathBuf,
    pub declared: Vec<Declared>,
    pub baseline: Option<(PathBuf, Report)>,
}

/// The whole matrix in a fixed order (kernels, then modes, then labs and the selftests), each
/// item with its index; a shard takes every N-th item of it.
pub fn matrix(opts: &CheckOptions) -> Vec<(usize, KernelChoice, Mode, Item)> {
    let mut items = Vec::new();
    for k in &opts.kernels {
        for m in &opts.modes {
            for l in &opts.labs {
                items.push((k.clone(), *m, Item::Lab(l.clone())));
            }
            if opts.selftests {
                items.push((k.clone(), *m, Item::Selftests));
            }
        }
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, (k, m, it))| (i, k, m, it))
        .collect()
}

/// `cargo xtask check`: the check's exit (see [`exit_code`]); an error only when it could not
/// start (bad input: exit 2) or could not write its reports. The reports are written in every
/// other case.
pub fn run(args: CheckArgs) -> Result<Exit> {
    let out = cache::project_root().join(&args.out);
    let baseline = match &args.baseline {
        Some(p) => Some((p.clone(), merge::read_report(p).map_err(as_bad_input)?)),
        None => None,
    };
    let report = match args.merge.is_empty() {
        false => merged(&args.merge, &out, baseline)?,
        true => match options(&args, out.clone(), baseline)? {
            Some(opts) => check(&opts)?,
            None => return Ok(Exit::Passed),
        },
    };
    Ok(summarize(&report, &out))
}

/// `check --merge`: the shards' reports as one, compared with the baseline, written to `out`.
fn merged(shards: &[PathBuf], out: &Path, baseline: Option<(PathBuf, Report)>) -> Result<Report> {
    let mut r = merge::merge(shards).map_err(as_bad_input)?;
    if let Some((path, old)) = &baseline {
        r.baseline = Some(merge::compare(&mut r.results, path, old));
    }
    r.exit_code = exit_code(&r.results);
    r.verdict = verdict_name(r.exit_code).into();
    formats::write_all(out, &r)?;
    Ok(r)
}

/// The check's options from its arguments: labs (loaded once), kernels and how to run them;
/// None after `--build-only`, which builds them here and runs nothing.
fn options(
    args: &CheckArgs,
    out: PathBuf,
    baseline: Option<(PathBuf, Report)>,
) -> Result<Option<CheckOptions>> {
    let declared = merge::load_declared().map_err(as_bad_input)?;
    let (labs, selftests) = select(&args.labs, &lab::catalog()?)?;
    let selftests = selftests && !args.no_selftests;
    let kernels = crate::acquire::choose(
        args.kernels.clone(),
        args.prebuilt.kernel.clone(),
        args.prebuilt.kernel_config.clone(),
        args.prebuilt.build_dir.clone(),
        args.manifest.clone(),
    )?;
    let labs = load_labs(labs, &kernels)?;
    let fragments = match args.debug_kernel {
        true => vec!["debug".to_string()],
        false => vec![],
    };
    if args.build_only {
        let export = args.export.as_ref().map(|d| cache::project_root().join(d));
        let specs = labs.iter().map(|l| &l.loaded.spec);
        let install = !args.no_install;
        crate::manifest::build_only(
            specs,
            selftests,
            &kernels,
            export.as_deref(),
            install,
            &fragments,
        )?;
        return Ok(None);
    }
    Ok(Some(CheckOptions {
        labs,
        kernels,
        repeat: args.repeat.max(1),
        retries: args.retries,
        shard: args.shard,
        run: RunOptions {
            accel: args.accel,
            install: !args.no_install,
            kernel_args: args.kernel_args.clone(),
            extra_fragments: fragments,
            ..Default::default()
        },
        modes: args.mglru.map(Mglru::modes).unwrap_or(vec![Mode::Lab]),
        selftests,
        timeout_factor: args.timeout_factor,
        out,
        declared,
        baseline,
    }))
}

/// The table, the one-line verdict and the baseline comparison on stdout; why the exit is 125
/// or 255 on stderr. Returns the exit.
fn summarize(report: &Report, out: &Path) -> Exit {
    print!("\n{}", formats::table(&report.results));
    let selftest_boots = report.runs.iter().filter(|r| r.id == selftests::ID).count();
    println!(
        "check: {} lab runs, {selftest_boots} selftest boots; verdict {} (exit {}); wrote {}/{{check.json,junit.xml,check.ktap}}",
        report.runs.len() - selftest_boots,
        report.verdict,
        report.exit_code,
        out.display()
    );
    if let Some(b) = &report.baseline {
        println!("{}", merge::render_baseline(b));
    }
    let count = |v: Verdict| report.results.iter().filter(|e| e.result == v).count();
    let exit = Exit::from_code(report.exit_code);
    match exit {
        Exit::Untestable => eprintln!(
            "check: a kernel cannot be tested ({} untestable items; see the table): exit 125",
            count(Verdict::Untestable)
        ),
        Exit::Infrastructure => eprintln!(
            "check: {} items could not run to a result (see the table and {}): exit 255, an infrastructure fault, not a verdict on the kernel",
            count(Verdict::Error),
            out.join("check.json").display()
        ),
        _ => {}
    }
    exit
}

/// Runs the (sharded) matrix, writing the reports after every item and at the end; returns
/// the final report. Errors of one item are recorded in its entry; only a failure to write
/// the reports (or an interruption, after writing them) is returned as an error.
pub fn check(opts: &CheckOptions) -> Result<Report> {
    let all = matrix(opts);
    let mine: Vec<_> = all
        .iter()
        .filter(|(i, ..)| in_shard(*i, opts.shard))
        .cloned()
        .collect();
    let mut state = State {
        report: Report {
            schema: SCHEMA.into(),
            provenance: provenance(opts, all.len()),
            verdict: "running".into(),
            exit_code: 0,
            results: vec![],
            runs: vec![],
            baseline: None,
        },
        failed_kernels: vec![],
    };
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("creating {}", opts.out.display()))?;
    for k in &opts.kernels {
        // Before anything reads a source: `--kernel-src 6.1` may still need installing. A
        // failure here shows again in each item that needs it.
        if let Err(e) = crate::setup::ensure_for(opts.run.install, k) {
            eprintln!("check: set-up for {}: {e:#}", k.label());
        }
    }
    let mut interrupted = false;
    for (index, kernel, mode, item) in mine {
        if progress::interrupted() {
            interrupted = true;
            break;
        }
        let at = At {
            index,
            label: kernel.label(),
            kernel,
            mode,
        };
        let entries = match &item {
            Item::Lab(l) => vec![run_lab_item(opts, &at, l, &mut state)],
            Item::Selftests => run_selftests_item(opts, &at, &mut state),
        };
        state.report.results.extend(entries);
        finish(&mut state.report, opts);
        if let Err(e) = formats::write_all(&opts.out, &state.report) {
            eprintln!("check: writing the reports failed: {e:#}");
        }
    }
    finish(&mut state.report, opts);
    state.report.provenance.kernels = kernels_info(opts, &state.report.results);
    formats::write_all(&opts.out, &state.report)?;
    if interrupted {
        bail!(
            "interrupted: the reports in {} hold the items that finished",
            opts.out.display()
        );
    }
    Ok(state.report)
}

/// The verdict fields of the report, recomputed from its entries.
fn finish(report: &mut Report, opts: &CheckOptions) {
    if let Some((path, old)) = &opts.baseline {
        report.baseline = Some(merge::compare(&mut report.results, path, old));
    }
    report.exit_code = exit_code(&report.results);
    report.verdict = verdict_name(report.exit_code).into();
}

struct State {
    report: Report,
    /// Kernels (source label and fragment set) that could not be built or tested in this
    /// check: later items needing them get the same error without building again.
    failed_kernels: Vec<(String, Vec<String>, Verdict, String)>,
}

impl State {
    /// The verdict and reason of a kernel (this item's source and fragments) that could not
    /// be tested earlier in this check: the item is not run.
    fn kernel_failed_before(&self, at: &At, fragments: &[String]) -> Option<(Verdict, String)> {
        self.failed_kernels
            .iter()
            .find(|(k, f, ..)| *k == at.label && f == fragments)
            .map(|(_, _, v, why)| (*v, format!("not run: {why}")))
    }

    /// A run of `what` that ended in an error: said, and its verdict and reason returned; an
    /// untestable kernel is remembered so that no later item tries it again.
    fn run_failed(
        &mut self,
        e: &anyhow::Error,
        what: &str,
        at: &At,
        fragments: &[String],
    ) -> (Verdict, String) {
        let v = error_verdict(e);
        let why = error_line(e);
        eprintln!("check: {what} on {}: {why}", at.label);
        if v == Verdict::Untestable {
            let failed = (at.label.clone(), fragments.to_vec(), v, why.clone());
            self.failed_kernels.push(failed);
        }
        (v, why)
    }

    /// A finished run: its files kept under the check's runs/, its record in the report.
    fn record(
        &mut self,
        opts: &CheckOptions,
        at: &At,
        id: &str,
        attempt: Attempt,
        status: RunStatus,
        boot: &dyn Boot,
    ) {
        let log = keep_run(opts, at, id, attempt.n, boot.kept());
        self.report.runs.push(RunRecord {
            index: at.index,
            id: id.to_string(),
            kernel: at.label.clone(),
            mglru: at.mode,
            attempt: attempt.n,
            retry: attempt.retry,
            status,
            wall_secs: boot.wall(),
            healthy: boot.health().healthy() && boot.health().judged(),
            health: boot.health().findings.clone(),
            log,
        });
    }
}

/// Where in the matrix an item is.
struct At {
    index: usize,
    kernel: KernelChoice,
    label: String,
    mode: Mode,
}

fn run_options(opts: &CheckOptions, at: &At, timeout_secs: u64) -> RunOptions {
    RunOptions {
        kernel: at.kernel.clone(),
        sets: vec![],
        mglru: at.mode.forced(),
        timeout: Some((timeout_secs as f64 * opts.timeout_factor).ceil().max(1.0) as u64),
        ..opts.run.clone()
    }
}

/// The verdict of an error: untestable when the kernel is, else error.
fn error_verdict(e: &anyhow::Error) -> Verdict {
    match e.downcast_ref::<kernel::Untestable>() {
        Some(_) => Verdict::Untestable,
        None => Verdict::Error,
    }
}

/// An error and its causes on one line, for a report: a long one (a build log's tail) keeps
/// its first and last lines, where the what and the verdict are.
fn error_line(e: &anyhow::Error) -> String {
    let text = format!("{e:#}");
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    match lines.len() {
        0..=12 => lines.join(" | "),
        n => format!(
            "{} | ... | {}",
            lines[..4].join(" | "),
            lines[n - 4..].join(" | ")
        ),
    }
}

fn run_lab_item(opts: &CheckOptions, at: &At, lab: &LabItem, state: &mut State) -> Entry {
    let mut entry = Entry::blank(at.index, Kind::Lab, &lab.dir.id, &at.label, at.mode);
    let spec = &lab.loaded.spec;
    let run_opts = run_options(opts, at, spec.vm.timeout_secs);
    let fragments = item_fragments(opts, lab::kernel_fragments(spec));
    if let Some((v, why)) = lab_not_run(spec, at, &run_opts, &fragments, state) {
        entry.result = v;
        entry.details.push(why);
        return entry;
    }
    let mut series = Series::default();
    let mut failing = lab::KeepFailing::default();
    let mut attempt = Attempt::default();
    while attempt.another(opts, series.all_passed()) {
        announce(&lab.dir.id, at, attempt);
        match lab::execute_loaded(&lab.dir, &lab.loaded, &run_opts) {
            Ok(r) => {
                let status = lab_status(&r);
                if status != RunStatus::Passed {
                    lab::print(&r);
                }
                failing.saw(&r);
                state.record(opts, at, &lab.dir.id, attempt, status, &r);
                series.push(status, r.wall(), failure_lines(&r), lab_checks(&r));
            }
            Err(e) => {
                let (v, why) = state.run_failed(&e, &lab.dir.id, at, &fragments);
                entry.result = v;
                entry.runs = series.statuses.len();
                entry.passed = series.passed();
                entry.details.push(why);
                if v == Verdict::Untestable || progress::interrupted() {
                    return entry;
                }
                series.push(RunStatus::Error, 0.0, vec![error_line(&e)], vec![]);
            }
        }
    }
    series.fold_into(&mut entry, &opts.declared, &opts.run, &at.label);
    failing.restore();
    entry
}

/// The extra fragments of an item's kernel: its own, and the check's (`--debug-kernel`).
fn item_fragments(opts: &CheckOptions, mut own: Vec<String>) -> Vec<String> {
    own.extend(opts.run.extra_fragments.iter().cloned());
    own
}

/// Why a lab item is not run, with its verdict: the lab does not apply to the kernel's version
/// or runs with the other MGLRU mode (skipped), or its kernel failed earlier in this check.
fn lab_not_run(
    spec: &LabSpec,
    at: &At,
    run_opts: &RunOptions,
    fragments: &[String],
    state: &State,
) -> Option<(Verdict, String)> {
    match lab::not_applicable(spec, run_opts) {
        Ok(Some(why)) => return Some((Verdict::Skipped, format!("skipped: {why}"))),
        Ok(None) => {}
        Err(e) => return Some((error_verdict(&e), error_line(&e))),
    }
    if let (Some(want), Some(own)) = (at.mode.forced(), spec.vm.mglru)
        && want != own
    {
        let own = if own { "on" } else { "off" };
        let why = format!("skipped: the lab itself runs with MGLRU {own}");
        return Some((Verdict::Skipped, why));
    }
    state.kernel_failed_before(at, fragments)
}

/// Which run of an item this is: 1-based; runs after the `--repeat` ones are retries.
#[derive(Debug, Clone, Copy, Default)]
struct Attempt {
    n: usize,
    retry: bool,
}

impl Attempt {
    /// Moves to the next run if there is one: `--repeat` runs, and while not every run so far
    /// passed, `--retries` more.
    fn another(&mut self, opts: &CheckOptions, all_passed: bool) -> bool {
        let planned = opts.repeat + if all_passed { 0 } else { opts.retries };
        if self.n >= planned {
            return false;
        }
        self.n += 1;
        self.retry = self.n > opts.repeat;
        true
    }
}

/// `check: <what> on <kernel> (MGLRU <mode>), run <n>`.
fn announce(what: &str, at: &At, attempt: Attempt) {
    eprintln!(
        "check: {what} on {} (MGLRU {}), run {}{}",
        at.label,
        at.mode.name(),
        attempt.n,
        if attempt.retry { " (retry)" } else { "" }
    );
}

/// What `check` keeps of any finished boot, a lab's or the selftests': its kernel's health,
/// its wall time, and its files (console.log, results.jsonl).
trait Boot {
    fn health(&self) -> &health::Health;
    fn wall(&self) -> f64;
    fn kept(&self) -> &Path;
}

/// Both kinds of run have these as fields of the same names.
macro_rules! impl_boot {
    ($($t:ty),*) => {$(
        impl Boot for $t {
            fn health(&self) -> &health::Health {
                &self.health
            }
            fn wall(&self) -> f64 {
                self.total.as_secs_f64()
            }
            fn kept(&self) -> &Path {
                &self.kept
            }
        }
    )*};
}

impl_boot!(RunResult, selftests::SelftestRun);

fn run_selftests_item(opts: &CheckOptions, at: &At, state: &mut State) -> Vec<Entry> {
    let spec = selftests::spec(selftests::PROGRAMS);
    let timeout = spec.as_ref().map(|s| s.vm.timeout_secs).unwrap_or(600);
    let run_opts = run_options(opts, at, timeout);
    let fragments = item_fragments(opts, vec!["selftests".to_string()]);
    let error_entry = |v: Verdict, why: String| {
        let mut e = Entry::blank(at.index, Kind::Selftest, selftests::ID, &at.label, at.mode);
        e.result = v;
        e.details.push(why);
        vec![e]
    };
    if let Some((v, why)) = state.kernel_failed_before(at, &fragments) {
        return error_entry(v, why);
    }
    let mut runs = Vec::new();
    let mut attempt = Attempt::default();
    while attempt.another(opts, runs.iter().all(selftest_run_passed)) {
        announce("selftests", at, attempt);
        match selftests::run(&run_opts) {
            Ok(r) => {
                let status = match selftest_run_passed(&r) {
                    true => RunStatus::Passed,
                    false if !r.health.healthy() => RunStatus::Failed,
                    false => selftest_run_status(&r),
                };
                state.record(opts, at, selftests::ID, attempt, status, &r);
                runs.push(r);
            }
            Err(e) => {
                let (v, why) = state.run_failed(&e, "selftests", at, &fragments);
                if runs.is_empty() || v == Verdict::Untestable || progress::interrupted() {
                    return error_entry(v, why);
                }
                break;
            }
        }
    }
    let mut entries = selftest_entries(&runs, &at.label, at.mode, &opts.declared, opts.run.accel);
    for e in &mut entries {
        e.index = at.index;
    }
    entries
}

/// A selftest boot passed when every test passed or skipped, nothing else went wrong and the
/// kernel stayed healthy.
fn selftest_run_passed(r: &selftests::SelftestRun) -> bool {
    r.problems.is_empty()
        && r.health.healthy()
        && r.programs.iter().all(|(_, tests)| {
            tests.iter().all(|t| {
                matches!(
                    t.outcome,
                    selftests::Outcome::Pass
                        | selftests::Outcome::Skip(_)
                        | selftests::Outcome::XFail(_)
                )
            })
        })
}

fn selftest_run_status(r: &selftests::SelftestRun) -> RunStatus {
    let failed = r
        .programs
        .iter()
        .flat_map(|(_, t)| t)
        .any(|t| matches!(t.outcome, selftests::Outcome::Fail(_)));
    if failed {
        RunStatus::Failed
    } else {
        RunStatus::Error
    }
}

/// How one lab run ended: a kernel that warned fails (a regression of the kernel), a run that
/// did not complete is an error, a failed expectation or snapshot fact is a failure.
pub fn lab_status(r: &RunResult) -> RunStatus {
    if r.passed() {
        RunStatus::Passed
    } else if !r.health.healthy() {
        RunStatus::Failed
    } else if !r.problems.is_empty() {
        RunStatus::Error
    } else {
        RunStatus::Failed
    }
}

/// Why a run did not pass, in one line each.
pub fn failure_lines(r: &RunResult) -> Vec<String> {
    let mut out: Vec<String> = r.problems.clone();
    out.extend(
        r.health
            .findings
            .iter()
            .map(|f| format!("kernel health: {f}")),
    );
    out.extend(
        r.eval
            .verdicts
            .iter()
            .filter(|v| !v.pass)
            .map(|v| format!("expectation {} (got {})", v.what, v.actual)),
    );
    if r.snapshot_matched == Some(false) {
        out.push(format!("snapshot {}.snap differs:", r.spec.id));
        out.extend(r.snapshot_changes.iter().map(|c| format!("  {c}")));
    }
    out
}

/// The detail lines of one lab run, for KTAP's innermost level.
pub fn lab_checks(r: &RunResult) -> Vec<Check> {
    let mut checks = vec![Check {
        name: "run complete".into(),
        status: if r.problems.is_empty() {
            RunStatus::Passed
        } else {
            RunStatus::Error
        },
        detail: r.problems.join("; "),
    }];
    checks.push(Check {
        name: "kernel health".into(),
        status: if r.health.healthy() {
            RunStatus::Passed
        } else {
            RunStatus::Failed
        },
        detail: r.health.findings.join("; "),
    });
    for v in &r.eval.verdicts {
        checks.push(Check {
            name: format!("expectation {}", v.what),
            status: match (v.applies, v.pass) {
                (false, _) => RunStatus::Skipped,
                (true, true) => RunStatus::Passed,
                (true, false) => RunStatus::Failed,
            },
            detail: match v.applies {
                false => "not judged on this kernel".into(),
                true => format!("got {}", v.actual),
            },
        });
    }
    if let Some(m) = r.snapshot_matched {
        checks.push(Check {
            name: format!("snapshot {}.snap", r.spec.id),
            status: if m {
                RunStatus::Passed
            } else {
                RunStatus::Failed
            },
            detail: r.snapshot_changes.join("; "),
        });
    }
    checks
}

/// The runs of one item so far.
#[derive(Default)]
struct Series {
    statuses: Vec<RunStatus>,
    walls: Vec<f64>,
    /// Per run: why it did not pass, and its detail checks.
    failures: Vec<Vec<String>>,
    checks: Vec<Vec<Check>>,
}

impl Series {
    fn push(&mut self, s: RunStatus, wall: f64, failures: Vec<String>, checks: Vec<Check>) {
        self.statuses.push(s);
        self.walls.push(wall);
        self.failures.push(failures);
        self.checks.push(checks);
    }

    fn passed(&self) -> usize {
        self.statuses
            .iter()
            .filter(|s| **s == RunStatus::Passed)
            .count()
    }

    fn all_passed(&self) -> bool {
        self.passed() == self.statuses.len()
    }

    /// The first run that did not pass.
    fn first_bad(&self) -> Option<usize> {
        self.statuses.iter().position(|s| *s != RunStatus::Passed)
    }

    fn fold_into(&self, e: &mut Entry, declared: &[Declared], run: &RunOptions, kernel: &str) {
        e.runs = self.statuses.len();
        e.passed = self.passed();
        e.median_wall_secs = crate::bench::figure("wall", self.walls.clone()).median;
        let shown = self
            .first_bad()
            .unwrap_or(self.statuses.len().saturating_sub(1));
        e.checks = self.checks.get(shown).cloned().unwrap_or_default();
        if let Some(bad) = self.first_bad() {
            e.details.extend(self.failures[bad].iter().cloned());
        }
        e.result = fold(&self.statuses);
        if e.result == Verdict::Flaky {
            e.details.insert(
                0,
                format!(
                    "flaky: passed {} of {} runs (failed {:.0}%)",
                    e.passed,
                    e.runs,
                    100.0 * (e.runs - e.passed) as f64 / e.runs.max(1) as f64
                ),
            );
        }
        apply_declared(e, declared, run.accel, kernel);
    }
}

/// The verdict of a series of runs (see [`Verdict`]).
pub fn fold(statuses: &[RunStatus]) -> Verdict {
    let count = |s: RunStatus| statuses.iter().filter(|x| **x == s).count();
    let (passed, failed, errors) = (
        count(RunStatus::Passed),
        count(RunStatus::Failed),
        count(RunStatus::Error),
    );
    match () {
        _ if statuses.is_empty() => Verdict::Error,
        _ if passed == statuses.len() => Verdict::Passed,
        _ if passed > 0 => Verdict::Flaky,
        _ if failed > 0 => Verdict::Failed,
        _ if errors > 0 => Verdict::Error,
        _ if count(RunStatus::Xfail) > 0 => Verdict::Xfail,
        _ => Verdict::Skipped,
    }
}

/// A failed entry that declared.toml covers (its test, kernel range, accelerator) becomes
/// xfail with the declaration's reason.
fn apply_declared(e: &mut Entry, declared: &[Declared], accel: qemu::Accel, kernel: &str) {
    if e.result != Verdict::Failed {
        return;
    }
    let accel = qemu::resolve_accel(accel).unwrap_or(qemu::Accel::Tcg);
    if let Some(d) = declared.iter().find(|d| d.covers(&e.id, kernel, accel)) {
        e.result = Verdict::Xfail;
        e.details.insert(0, d.describe());
    }
}

/// Folds repeated selftest runs into one entry per test (pure, for tests).
pub fn selftest_entries(
    runs: &[selftests::SelftestRun],
    label: &str,
    mode: Mode,
    declared: &[Declared],
    accel: qemu::Accel,
) -> Vec<Entry> {
    let walls: Vec<f64> = runs.iter().map(|r| r.total.as_secs_f64()).collect();
    let wall = crate::bench::figure("wall", walls).median;
    let mut tests: Vec<TestRuns> = Vec::new();
    for run in runs {
        let unhealthy: Vec<String> = run
            .health
            .findings
            .iter()
            .map(|f| format!("kernel health: {f}"))
            .collect();
        for (program, results) in &run.programs {
            for t in results {
                let name = format!("{program}/{}", t.name);
                let i = match tests.iter().position(|x| x.name == name) {
                    Some(i) => i,
                    None => {
                        tests.push(TestRuns::new(name));
                        tests.len() - 1
                    }
                };
                tests[i].push(run, program, t, &unhealthy);
            }
        }
    }
    let opts = RunOptions {
        accel,
        ..Default::default()
    };
    let mut entries: Vec<Entry> = tests
        .iter()
        .map(|t| t.entry(label, mode, declared, &opts, wall))
        .collect();
    let problems: Vec<&String> = runs.iter().flat_map(|r| &r.problems).collect();
    if !problems.is_empty() && entries.iter().all(|e| e.result != Verdict::Error) {
        // A program-level problem that no test shows (a bad exit status): the selftests as a
        // whole are an error.
        let mut e = Entry::blank(0, Kind::Selftest, selftests::ID, label, mode);
        e.result = Verdict::Error;
        e.runs = runs.len();
        e.details = problems.into_iter().cloned().collect();
        entries.push(e);
    }
    entries
}

/// One selftest over the boots: its judged runs and why it was skipped when it was.
struct TestRuns {
    name: String,
    /// Runs that passed, failed, errored or failed as expected (a skipped run is neither).
    judged: Series,
    skips: Vec<String>,
}

impl TestRuns {
    fn new(name: String) -> TestRuns {
        TestRuns {
            name,
            judged: Series::default(),
            skips: vec![],
        }
    }

    /// Its outcome in one boot; a pass in a boot whose kernel warned is a failure.
    fn push(
        &mut self,
        run: &selftests::SelftestRun,
        program: &str,
        t: &selftests::TestResult,
        unhealthy: &[String],
    ) {
        use selftests::Outcome::*;
        let (status, mut why) = match &t.outcome {
            Pass if unhealthy.is_empty() => (RunStatus::Passed, vec![]),
            Pass => (RunStatus::Failed, unhealthy.to_vec()),
            Fail(d) if d.is_empty() => (
                RunStatus::Failed,
                vec![format!("{program} reported: not ok {}", t.name)],
            ),
            Fail(d) => (
                RunStatus::Failed,
                vec![format!("{program} reported: not ok {} # {d}", t.name)],
            ),
            Error(m) => (RunStatus::Error, vec![m.clone()]),
            Skip(r) => {
                let line = format!("skipped: {r}");
                if !self.skips.contains(&line) {
                    self.skips.push(line);
                }
                return;
            }
            XFail(r) => (RunStatus::Xfail, vec![format!("expected to fail: {r}")]),
        };
        if status != RunStatus::Passed {
            why.extend(run.problems.iter().cloned());
            let console = run.kept.join("console.log");
            why.push(format!("console: {}", console.display()));
        }
        let wall = run.total.as_secs_f64();
        self.judged.push(status, wall, why, vec![]);
    }

    /// Its entry: folded over the judged runs, or skipped with the reasons when none was.
    fn entry(
        &self,
        label: &str,
        mode: Mode,
        declared: &[Declared],
        opts: &RunOptions,
        wall: f64,
    ) -> Entry {
        let mut e = Entry::blank(0, Kind::Selftest, &self.name, label, mode);
        match self.judged.statuses.is_empty() {
            true => e.details = self.skips.clone(),
            false => self.judged.fold_into(&mut e, declared, opts, label),
        }
        e.median_wall_secs = wall;
        e
    }
}

/// Copies one run's console.log and results.jsonl from `kept` (last/<id>/) into the check's
/// runs/ directory; returns that directory.
fn keep_run(opts: &CheckOptions, at: &At, id: &str, attempt: usize, kept: &Path) -> PathBuf {
    let dir = run_dir(opts, at, id, attempt);
    let _ = std::fs::create_dir_all(&dir);
    for name in ["console.log", "results.jsonl", "report.txt"] {
        let _ = std::fs::copy(kept.join(name), dir.join(name));
    }
    dir
}

fn run_dir(opts: &CheckOptions, at: &At, id: &str, attempt: usize) -> PathBuf {
    opts.out
        .join("runs")
        .join(format!("{}.mglru-{}", at.label, at.mode.name()))
        .join(id)
        .join(attempt.to_string())
}

fn provenance(opts: &CheckOptions, matrix_items: usize) -> Provenance {
    Provenance {
        tool: tool_version(),
        accelerator: match qemu::resolve_accel(opts.run.accel) {
            Ok(qemu::Accel::Kvm) => "kvm".into(),
            Ok(_) => "tcg".into(),
            Err(_) => "unavailable".into(),
        },
        shard: opts.shard,
        matrix_items,
        repeat: opts.repeat,
        retries: opts.retries,
        timeout_factor: opts.timeout_factor,
        debug_kernel: opts.run.extra_fragments.iter().any(|f| f == "debug"),
        kernel_args: opts.run.kernel_args.clone(),
        kernels: vec![],
        merged_from: vec![],
    }
}

/// kernel-lab's version and `git describe` of its checkout (when it is one).
pub fn tool_version() -> String {
    let v = env!("CARGO_PKG_VERSION");
    match git_describe(&cache::project_root()) {
        Some(d) => format!("kernel-lab {v} ({d})"),
        None => format!("kernel-lab {v}"),
    }
}

fn git_describe(dir: &Path) -> Option<String> {
    let out = crate::process::Cmd::new("git", "git describe")
        .args(["describe", "--always", "--dirty", "--tags"])
        .dir(dir)
        .run(None)
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.success() && !s.is_empty()).then_some(s)
}

/// What each kernel is, and the kernels (fragment sets) the results used.
fn kernels_info(opts: &CheckOptions, results: &[Entry]) -> Vec<KernelInfo> {
    let mut out = Vec::new();
    for k in &opts.kernels {
        let label = k.label();
        if !results.iter().any(|e| e.kernel == label) {
            continue;
        }
        let info = match k {
            KernelChoice::Exported { manifest, index } => {
                let src = &manifest.sources[*index];
                KernelInfo {
                    label,
                    source: manifest.dir.display().to_string(),
                    tree: src.identity.clone(),
                    git_describe: None,
                    configs: src
                        .kernels
                        .iter()
                        .map(|c| ConfigInfo {
                            fragments: c.fragments.clone(),
                            key: c.key.clone(),
                            config_hash: Some(c.config_hash.clone()),
                        })
                        .collect(),
                }
            }
            KernelChoice::Source(p) => match kernel::locate(p.as_deref()) {
                Ok(source) => source_info(opts, label, &source),
                Err(_) => continue,
            },
            other => KernelInfo {
                label,
                source: other
                    .source_flag()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                tree: format!("{other:?}"),
                git_describe: other.source_flag().and_then(git_describe),
                configs: vec![],
            },
        };
        out.push(info);
    }
    out
}

fn source_info(opts: &CheckOptions, label: String, source: &kernel::Source) -> KernelInfo {
    let version = kernel::version(source).ok().flatten();
    let mut sets: Vec<Vec<String>> = Vec::new();
    for l in &opts.labs {
        sets.push(lab::kernel_fragments(&l.loaded.spec));
    }
    if opts.selftests {
        sets.push(vec!["selftests".into()]);
    }
    let mut configs: Vec<ConfigInfo> = Vec::new();
    for mut set in sets {
        set.extend(opts.run.extra_fragments.iter().cloned());
        let Ok(frags) = kernel::fragments(&set) else {
            continue;
        };
        let key = kernel::cache_key(source, &frags, version.as_deref());
        if configs.iter().any(|c| c.key == key) {
            continue;
        }
        let config_hash = cache::cache_dir().ok().and_then(|c| {
            let text = std::fs::read(c.join("kernels").join(&key).join("config")).ok()?;
            let mut h = cache::KeyHasher::new();
            h.add(&text);
            Some(h.hex())
        });
        configs.push(ConfigInfo {
            fragments: std::iter::once("base".to_string()).chain(set).collect(),
            key,
            config_hash,
        });
    }
    let git = match source.kind {
        kernel::SourceKind::Tree => git_describe(&source.path),
        kernel::SourceKind::Tarball => None,
    };
    KernelInfo {
        label,
        source: source.path.display().to_string(),
        tree: source.identity.clone(),
        git_describe: git,
        configs,
    }
}

/// Resolves the `--lab` filters against the catalog: the labs, and whether the selftests are
/// in (no filters: every lab and the selftests; else only what is named).
pub fn select(filters: &[String], catalog: &[LabDir]) -> Result<(Vec<LabDir>, bool)> {
    if filters.is_empty() {
        return Ok((catalog.to_vec(), true));
    }
    let selftests = filters.iter().any(|f| f == selftests::ID);
    let labs = filters
        .iter()
        .filter(|f| *f != selftests::ID)
        .map(|f| lab::resolve(f, catalog))
        .collect::<Result<Vec<_>>>()?;
    Ok((labs, selftests))
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use selftests::{Outcome, SelftestRun, TestResult};

    #[test]
    fn shards_partition_the_items() {
        for n in 1..=5 {
            let mut seen: Vec<usize> = (1..=n)
                .flat_map(|i| {
                    (0..13).filter(move |k| in_shard(*k, Some(Shard { index: i, count: n })))
                })
                .collect();
            seen.sort();
            assert_eq!(seen, (0..13).collect::<Vec<_>>(), "{n} shards");
        }
        assert!(in_shard(7, None));
    }

    #[test]
    fn verdict_and_mode_names_are_their_json_names() {
        use Verdict::*;
        for v in [Passed, Flaky, Failed, Xfail, Skipped, Error, Untestable] {
            assert_eq!(serde_json::to_value(v).unwrap(), v.name(), "{v:?}");
        }
        for m in [Mode::Lab, Mode::On, Mode::Off] {
            assert_eq!(serde_json::to_value(m).unwrap(), m.name(), "{m:?}");
        }
    }

    #[test]
    fn shard_syntax() {
        assert_eq!(
            "2/4".parse::<Shard>().unwrap(),
            Shard { index: 2, count: 4 }
        );
        for bad in ["0/4", "5/4", "x/2", "3", "1/0"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }

    #[test]
    fn runs_fold_into_one_verdict() {
        use RunStatus::*;
        assert_eq!(fold(&[Passed, Passed]), Verdict::Passed);
        assert_eq!(fold(&[Failed, Passed, Failed]), Verdict::Flaky);
        assert_eq!(fold(&[Error, Passed]), Verdict::Flaky);
        assert_eq!(fold(&[Failed, Failed, Failed]), Verdict::Failed);
        assert_eq!(fold(&[Error, Failed, Error]), Verdict::Failed);
        assert_eq!(fold(&[Error, Error, Error]), Verdict::Error);
        assert_eq!(fold(&[Skipped]), Verdict::Skipped);
        assert_eq!(fold(&[]), Verdict::Error);
    }

    pub fn entry(id: &str, result: Verdict) -> Entry {
        let mut e = Entry::blank(0, Kind::Lab, id, "6.12.117", Mode::Lab);
        e.result = result;
        e.runs = 3;
        e.passed = match result {
            Verdict::Passed => 3,
            Verdict::Flaky => 2,
            _ => 0,
        };
        e.median_wall_secs = 2.5;
        if result != Verdict::Passed {
            e.details = vec!["expectation Δ vmstat.x > 0 [step <a>] (got 0) & \"q\" # 1".into()];
        }
        e
    }

    #[test]
    fn exit_codes_fold_with_precedence() {
        let codes =
            |vs: &[Verdict]| exit_code(&vs.iter().map(|v| entry("x", *v)).collect::<Vec<_>>());
        use Verdict::*;
        assert_eq!(codes(&[Passed, Flaky, Skipped, Xfail]), 0);
        assert_eq!(codes(&[Passed, Failed]), 1);
        // An item that could not run is the machine's fault: a bisect aborts (255) rather than
        // blame the commit for it, even when another item failed.
        assert_eq!(codes(&[Failed, Error]), 255);
        assert_eq!(codes(&[Error, Untestable, Failed]), 125);
        assert_eq!(verdict_name(255), "error");
        // With a baseline, only what is new counts; an untestable kernel always does.
        let mut old = entry("x", Failed);
        old.new = Some(false);
        assert_eq!(exit_code(&[old.clone()]), 0);
        old.result = Untestable;
        assert_eq!(exit_code(&[old]), 125);
    }

    fn run(outcomes: &[(&str, Outcome)]) -> SelftestRun {
        SelftestRun {
            programs: vec![(
                "test_memcontrol".into(),
                outcomes
                    .iter()
                    .map(|(n, o)| TestResult {
                        name: n.to_string(),
                        outcome: o.clone(),
                    })
                    .collect(),
            )],
            problems: vec![],
            health: health::Health::default(),
            total: std::time::Duration::from_secs(20),
            kept: PathBuf::from("/k"),
        }
    }

    fn fold_selftests(runs: &[SelftestRun], declared: &[Declared]) -> Vec<Entry> {
        selftest_entries(runs, "6.12.117", Mode::On, declared, qemu::Accel::Tcg)
    }

    #[test]
    fn selftest_runs_fold_per_test_with_rates_errors_and_skips() {
        use Outcome::*;
        let skip = || Skip("no swap".into());
        let runs = [
            run(&[
                ("a", Pass),
                ("b", Pass),
                ("c", skip()),
                ("d", Fail(String::new())),
            ]),
            run(&[
                ("a", Pass),
                ("b", Fail("values_close".into())),
                ("c", skip()),
                ("d", Fail(String::new())),
            ]),
            run(&[
                ("a", Pass),
                ("b", Pass),
                ("c", skip()),
                (
                    "d",
                    Error("no result: test_memcontrol killed by SIGKILL after c".into()),
                ),
            ]),
        ];
        let e = fold_selftests(&runs, &[]);
        let get = |n: &str| {
            e.iter()
                .find(|x| x.id == format!("test_memcontrol/{n}"))
                .unwrap()
        };
        assert_eq!(e.len(), 4);
        assert!(
            e.iter()
                .all(|x| x.kind == Kind::Selftest && x.mglru == Mode::On)
        );
        assert_eq!(
            (get("a").result, get("a").passed, get("a").runs),
            (Verdict::Passed, 3, 3)
        );
        assert_eq!(get("b").result, Verdict::Flaky);
        assert_eq!(
            get("b").details[0],
            "flaky: passed 2 of 3 runs (failed 33%)"
        );
        assert!(
            get("b").details[1].ends_with("not ok b # values_close"),
            "{:?}",
            get("b")
        );
        assert_eq!(get("c").result, Verdict::Skipped);
        assert_eq!(get("c").details, ["skipped: no swap"]);
        assert_eq!(get("d").result, Verdict::Failed);
        // A test missing from every run (the program was killed before it) is an error naming it.
        let killed = run(&[
            ("a", Pass),
            (
                "b",
                Error("no result: test_memcontrol killed by SIGKILL after a".into()),
            ),
        ]);
        let e = fold_selftests(&[killed], &[]);
        assert_eq!(e[1].result, Verdict::Error);
        assert!(
            e[1].details[0].contains("killed by SIGKILL after a"),
            "{e:?}"
        );
        assert_eq!(exit_code(&e), 255);
    }

    #[test]
    fn an_unhealthy_kernel_fails_the_tests_that_passed_in_it() {
        let mut r = run(&[("a", Outcome::Pass)]);
        r.health.findings = vec!["kernel log: WARNING: CPU: 0 PID: 1 at x".into()];
        let e = fold_selftests(&[r], &[]);
        assert_eq!(e[0].result, Verdict::Failed);
        assert!(
            e[0].details[0].starts_with("kernel health: kernel log: WARNING"),
            "{e:?}"
        );
    }

    #[test]
    fn declared_failures_are_xfail_only_where_they_apply() {
        let d = merge::parse_declared(
            "[[declared]]\ntest = \"test_memcontrol/b\"\nreason = \"needs real time\"\nkernel = \">= 6.12\"\naccel = \"tcg\"\nlink = \"https://example.org/1\"\n",
            "declared.toml",
        )
        .unwrap();
        let fail = || run(&[("b", Outcome::Fail(String::new()))]);
        let e = fold_selftests(&[fail(), fail(), fail()], &d);
        assert_eq!(e[0].result, Verdict::Xfail);
        assert_eq!(
            e[0].details[0],
            "declared expected failure: needs real time (kernels >= 6.12) (under tcg) [https://example.org/1]"
        );
        let e = selftest_entries(&[fail()], "6.1.158", Mode::On, &d, qemu::Accel::Tcg);
        assert_eq!(e[0].result, Verdict::Failed, "not declared for 6.1");
        // A flaky one stays flaky: the declaration does not hide a measured rate.
        let e = fold_selftests(&[fail(), run(&[("b", Outcome::Pass)])], &d);
        assert_eq!(e[0].result, Verdict::Flaky);
        assert!(
            merge::parse_declared(
                "[[declared]]\ntest = \"x\"\nreason = \"r\"\naccel = \"hvf\"\n",
                "f"
            )
            .is_err()
        );
        assert!(
            merge::parse_declared("[[declared]]\ntest = \"x\"\n", "f").is_err(),
            "a reason is required"
        );
    }

    #[test]
    fn the_declared_file_parses() {
        merge::load_declared().unwrap();
    }

    pub fn report_for_formats(entries: Vec<Entry>) -> Report {
        let n = entries.len();
        report(entries, None, n)
    }

    /// Runs the kernel's own `tools/testing/kunit/kunit.py parse` on `ktap`: from the source
    /// tree extracted in the cache, else from Debian's linux-source-6.12 tarball (extracted
    /// into a temporary directory). Returns its output.
    pub fn kunit_parse(ktap: &str) -> String {
        let tmp = tempfile::tempdir().unwrap();
        let in_cache = cache::cache_dir().ok().and_then(|c| {
            std::fs::read_dir(c.join("src"))
                .ok()?
                .flatten()
                .find_map(|e| {
                    std::fs::read_dir(e.path())
                        .ok()?
                        .flatten()
                        .map(|t| t.path())
                        .find(|t| t.join("tools/testing/kunit/kunit.py").is_file())
                })
        });
        let tree = in_cache.unwrap_or_else(|| {
            let tarball = "/usr/src/linux-source-6.12.tar.xz";
            let st = std::process::Command::new("tar")
                .args(["-xJf", tarball, "-C"])
                .arg(tmp.path())
                .args(["--wildcards", "*/tools/testing/kunit/*"])
                .status()
                .expect("tar");
            assert!(st.success(), "no kernel tree with kunit.py: install linux-source-6.12 (apt-get install linux-source-6.12)");
            tmp.path().join("linux-source-6.12")
        });
        let file = tmp.path().join("check.ktap");
        std::fs::write(&file, ktap).unwrap();
        let o = std::process::Command::new("python3")
            .arg(tree.join("tools/testing/kunit/kunit.py"))
            .arg("parse")
            .arg(&file)
            .output()
            .expect("python3 (apt-get install python3)");
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    }

    fn report(entries: Vec<Entry>, shard: Option<Shard>, items: usize) -> Report {
        let mut r = Report {
            schema: SCHEMA.into(),
            provenance: Provenance {
                tool: "kernel-lab 0.1.0".into(),
                accelerator: "tcg".into(),
                shard,
                matrix_items: items,
                repeat: 1,
                retries: 2,
                timeout_factor: 1.0,
                debug_kernel: false,
                kernel_args: vec![],
                kernels: vec![],
                merged_from: vec![],
            },
            verdict: String::new(),
            exit_code: 0,
            results: entries,
            runs: vec![],
            baseline: None,
        };
        r.exit_code = exit_code(&r.results);
        r.verdict = verdict_name(r.exit_code).into();
        r
    }

    #[test]
    fn shards_merge_into_the_unsharded_report_and_gaps_are_errors() {
        let all: Vec<Entry> = (0..7)
            .map(|i| {
                let mut e = entry(
                    &format!("{i}-lab"),
                    if i == 3 {
                        Verdict::Failed
                    } else {
                        Verdict::Passed
                    },
                );
                e.index = i;
                e
            })
            .collect();
        let whole = report(all.clone(), None, 7);
        let shards: Vec<(PathBuf, Report)> = (1..=3)
            .map(|i| {
                let s = Shard { index: i, count: 3 };
                let mine = all
                    .iter()
                    .filter(|e| in_shard(e.index, Some(s)))
                    .cloned()
                    .collect();
                (PathBuf::from(format!("shard{i}")), report(mine, Some(s), 7))
            })
            .rev()
            .collect();
        let merged = merge::merge_reports(shards.clone()).unwrap();
        merge::same_results(&merged, &whole).unwrap();
        assert_eq!(exit_code(&merged.results), 1);
        assert_eq!(merged.provenance.merged_from.len(), 3);
        let e = merge::merge_reports(shards[..2].to_vec())
            .unwrap_err()
            .to_string();
        assert!(e.contains("shard(s) 1/3 missing"), "{e}");
        let twice = vec![shards[0].clone(), shards[0].clone(), shards[1].clone()];
        assert!(
            merge::merge_reports(twice)
                .unwrap_err()
                .to_string()
                .contains("given twice")
        );
        let mut other = shards.clone();
        other[0].1.provenance.matrix_items = 9;
        assert!(merge::merge_reports(other).is_err());
    }

    #[test]
    fn a_baseline_leaves_only_what_is_new() {
        let old = report(
            vec![
                entry("1-a", Verdict::Failed),
                entry("2-b", Verdict::Passed),
                entry("3-c", Verdict::Error),
            ],
            None,
            3,
        );
        let mut now = vec![
            entry("1-a", Verdict::Failed),
            entry("2-b", Verdict::Failed),
            entry("3-c", Verdict::Passed),
            entry("4-d", Verdict::Error),
        ];
        let s = merge::compare(&mut now, Path::new("old/check.json"), &old);
        assert_eq!(
            now.iter().map(|e| e.new).collect::<Vec<_>>(),
            [Some(false), Some(true), Some(false), Some(true)]
        );
        assert_eq!(s.new.len(), 2);
        assert_eq!(s.fixed, ["3-c on 6.12.117 (mglru lab): passed"]);
        assert_eq!(s.still.len(), 1);
        assert_eq!(exit_code(&now), 255, "4-d's error is new");
        assert!(merge::render_baseline(&s).contains("NEW: 2-b on 6.12.117 (mglru lab): failed"));
    }

    #[test]
    fn the_report_round_trips_through_json() {
        let r = report(
            vec![entry("1-a", Verdict::Flaky)],
            Some(Shard { index: 1, count: 2 }),
            2,
        );
        let text = serde_json::to_string(&r).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["schema"], SCHEMA);
        assert_eq!(v["results"][0]["result"], "flaky");
        assert_eq!(v["results"][0]["mglru"], "lab");
        assert_eq!(v["provenance"]["shard"]["count"], 2);
        let back: Report = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn the_matrix_puts_the_selftests_after_each_kernel_and_modes_labs() {
        let labs = load_labs(lab::catalog().unwrap()[..2].to_vec(), &[]).unwrap();
        let opts = CheckOptions {
            labs,
            kernels: vec![
                KernelChoice::Source(Some("/k61".into())),
                KernelChoice::Source(Some("/k612".into())),
            ],
            repeat: 1,
            retries: 2,
            shard: None,
            run: RunOptions::default(),
            modes: vec![Mode::On, Mode::Off],
            selftests: true,
            timeout_factor: 1.0,
            out: PathBuf::from("/o"),
            declared: vec![],
            baseline: None,
        };
        let all = matrix(&opts);
        assert_eq!(all.len(), 2 * 2 * 3);
        assert!(all.iter().enumerate().all(|(k, (i, ..))| k == *i));
        assert!(matches!(all[2], (2, _, Mode::On, Item::Selftests)));
    }
}
