//! Labs on disk: the catalog under labs/, id resolution ("did you mean"), loading and validating
//! lab.toml with file:line:field errors, and running one lab end to end.

use crate::cache;
use crate::progress::{self, Phases};
use crate::{disk, health, initramfs, kernel, qemu, report, setup, timeline, vars};
use anyhow::{Context, Result, bail};
use guest::event::{Event, decode_stream};
use guest::spec::{LabSpec, SpecError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A lab found on disk.
#[derive(Debug, Clone)]
pub struct LabDir {
    pub id: String,
    pub dir: PathBuf,
}

impl LabDir {
    pub fn spec_path(&self) -> PathBuf {
        self.dir.join("lab.toml")
    }
}

/// Every labs/<id>/lab.toml, in catalog order (by the number the id starts with).
pub fn catalog() -> Result<Vec<LabDir>> {
    let root = cache::project_root().join("labs");
    let mut labs: Vec<LabDir> = std::fs::read_dir(&root)
        .with_context(|| format!("reading {}", root.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("lab.toml").is_file())
        .map(|e| LabDir {
            id: e.file_name().to_string_lossy().into_owned(),
            dir: e.path(),
        })
        .collect();
    labs.sort_by_key(|l| (leading_number(&l.id), l.id.clone()));
    Ok(labs)
}

fn leading_number(id: &str) -> u32 {
    id.split('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(u32::MAX)
}

/// Resolves what the user typed: a path to a lab directory or lab.toml, an exact id, a number
/// (`2` is `2-cgroup-limit`), or a unique prefix; otherwise an error with the closest ids.
pub fn resolve(query: &str, labs: &[LabDir]) -> Result<LabDir> {
    let as_path = Path::new(query);
    if query.contains('/') || as_path.is_dir() && as_path.join("lab.toml").is_file() {
        let dir = if as_path.is_file() {
            as_path.parent().unwrap_or(Path::new("."))
        } else {
            as_path
        };
        if !dir.join("lab.toml").is_file() {
            bail!("{query}: no lab.toml there");
        }
        let dir = dir.canonicalize()?;
        let id = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        return Ok(LabDir { id, dir });
    }
    if let Some(l) = labs.iter().find(|l| l.id == query) {
        return Ok(l.clone());
    }
    if let Ok(n) = query.parse::<u32>()
        && let Some(l) = labs.iter().find(|l| leading_number(&l.id) == n)
    {
        return Ok(l.clone());
    }
    let prefixed: Vec<&LabDir> = labs.iter().filter(|l| l.id.starts_with(query)).collect();
    if prefixed.len() == 1 {
        return Ok(prefixed[0].clone());
    }
    if prefixed.len() > 1 {
        let ids: Vec<&str> = prefixed.iter().map(|l| l.id.as_str()).collect();
        bail!("lab {query:?} is ambiguous: it could be {}", ids.join(", "));
    }
    let mut scored: Vec<(usize, &str)> = labs
        .iter()
        .map(|l| {
            // Compare with the whole id and with the id without its number.
            let name = l.id.split_once('-').map(|(_, n)| n).unwrap_or(&l.id);
            (
                edit_distance(query, &l.id).min(edit_distance(query, name)),
                l.id.as_str(),
            )
        })
        .collect();
    scored.sort();
    let list = labs
        .iter()
        .map(|l| l.id.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    match scored.first() {
        Some((d, id)) if *d <= query.len().max(3) / 2 + 1 => {
            bail!("no lab {query:?}; did you mean {id:?}? (labs: {list})")
        }
        _ => bail!("no lab {query:?} (labs: {list}; `cargo xtask list` describes them)"),
    }
}

pub use guest::spec::edit_distance;

/// Parses and validates a lab.toml; errors name the file, the line and the field.
pub fn load(path: &Path) -> Result<LabSpec> {
    Ok(load_with(path, &[])?.spec)
}

/// A spec as loaded with its variables resolved.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub spec: LabSpec,
    pub vars: Vec<vars::Var>,
    /// The `--set` values given.
    pub sets: std::collections::BTreeMap<String, String>,
    /// Steps left out because their size resolved to 0.
    pub skipped: Vec<String>,
    /// The spec text as parsed (variables substituted), for locating errors.
    pub text: String,
}

/// Counter names the default kernel (6.12 from kernel-configs/) reports, by family.
const KNOWN_COUNTERS: &str = include_str!("../../kernel-configs/counters-6.12.txt");

/// Counters in the spec that the default kernel does not have, as located errors (checked
/// before boot when the lab runs on that kernel; other kernels are checked when they report).
pub fn unknown_counters(spec: &LabSpec, text: &str, origin: &str) -> Vec<String> {
    let mut known: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    let mut section = "";
    for line in KNOWN_COUNTERS
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        match line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            Some(name) => section = name,
            None => known.entry(section).or_default().push(line),
        }
    }
    let family_of = |term: &str| -> Option<(&'static str, String)> {
        let rest = term.split_once('/').map(|(_, r)| r).unwrap_or(term);
        for family in ["vmstat", "memory.stat", "memory.events"] {
            if let Some(key) = rest.strip_prefix(family).and_then(|r| r.strip_prefix('.')) {
                return Some((family, key.to_string()));
            }
        }
        None
    };
    let mut errs = Vec::new();
    let counters = spec
        .observe
        .iter()
        .enumerate()
        .map(|(i, o)| ("observe", i, &o.counter))
        .chain(
            spec.expect
                .iter()
                .enumerate()
                .filter_map(|(i, e)| e.counter().map(|c| ("expect", i, c))),
        );
    for (table, index, expr) in counters {
        for (_, term) in &expr.terms {
            let Some((family, key)) = family_of(term) else {
                continue;
            };
            let names = known.get(family).map(Vec::as_slice).unwrap_or(&[]);
            if names.contains(&key.as_str()) {
                continue;
            }
            let closest = names
                .iter()
                .min_by_key(|n| edit_distance(&key, n))
                .copied()
                .unwrap_or("");
            let e = SpecError {
                table,
                index: Some(index),
                key: "counter",
                message: format!(
                    "{term}: the 6.12 kernel has no {family} key {key:?} (closest: {closest:?})"
                ),
            };
            errs.push(format!("{origin}:{}: {e}", locate(text, &e)));
        }
    }
    errs
}

/// [`load`] with `--set name=value` overrides of the lab's `[vars]`.
pub fn load_with(path: &Path, sets: &[String]) -> Result<Loaded> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_full(&text, &path.display().to_string(), sets)
}

/// [`load`] on text; `origin` names the file in errors.
pub fn parse_spec(text: &str, origin: &str) -> Result<LabSpec> {
    Ok(parse_full(text, origin, &[])?.spec)
}

fn parse_full(text: &str, origin: &str, sets: &[String]) -> Result<Loaded> {
    let (declared, text) = vars::extract(text, origin)?;
    let sets = vars::parse_sets(sets, &declared)?;
    let text = vars::substitute(&text, &declared, &sets, origin)?;
    let hint = match sets.is_empty() {
        true => "",
        false => " (with the --set values given)",
    };
    let misfits = tagged_tables(&text, origin)?;
    if !misfits.is_empty() {
        bail!(located(&misfits, &text, origin, hint));
    }
    let mut spec: LabSpec = toml::from_str(&text).map_err(|e| toml_error(&e, &text, origin))?;
    // What the lab teaches refers to the lab as written; the rest is checked as it will run.
    let mut errs = guest::exercise::validate(&spec);
    errs.extend(unknown_exercise_vars(&spec, &declared));
    let skipped = vars::switch_off_zeroes(&mut spec);
    errs.splice(0..0, spec.validate_setup());
    if !errs.is_empty() {
        bail!(located(&errs, &text, origin, hint));
    }
    Ok(Loaded {
        spec,
        vars: declared,
        sets,
        skipped,
        text,
    })
}

/// A TOML syntax or type error at its file:line:column.
fn toml_error(e: &toml::de::Error, text: &str, origin: &str) -> anyhow::Error {
    let (line, col) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
    anyhow::anyhow!("{origin}:{line}:{col}: {}", e.message())
}

/// Semantic errors, each at the file:line of its field.
fn located(errs: &[SpecError], text: &str, origin: &str, hint: &str) -> String {
    let lines: Vec<String> = errs
        .iter()
        .map(|e| format!("{origin}:{}: {e}", locate(text, e)))
        .collect();
    format!(
        "{} problem(s) in the lab spec{hint}:\n  {}",
        errs.len(),
        lines.join("\n  ")
    )
}

/// The `[[step]]` and `[[expect]]` tables as written, each converted to its kind: every field
/// that does not fit its kind, in every table (serde would stop at the first). Type errors of
/// their values keep TOML's line and column.
fn tagged_tables(text: &str, origin: &str) -> Result<Vec<SpecError>> {
    #[derive(serde::Deserialize)]
    struct Tables {
        #[serde(default)]
        step: Vec<guest::spec::StepTable>,
        #[serde(default)]
        expect: Vec<guest::spec::ExpectTable>,
    }
    let t: Tables = toml::from_str(text).map_err(|e| toml_error(&e, text, origin))?;
    let at = |table, i, errs: Vec<guest::step::FieldError>| {
        errs.into_iter().map(move |f| SpecError {
            table,
            index: Some(i),
            key: f.key,
            message: f.message,
        })
    };
    let mut errs = Vec::new();
    for (i, s) in t.step.into_iter().enumerate() {
        if let Err(f) = s.into_step() {
            errs.extend(at("step", i, f));
        }
    }
    for (i, x) in t.expect.into_iter().enumerate() {
        if let Err(f) = x.into_expect() {
            errs.extend(at("expect", i, f));
        }
    }
    Ok(errs)
}

/// Exercises that set variables the lab does not declare.
fn unknown_exercise_vars(spec: &LabSpec, declared: &[vars::Var]) -> Vec<SpecError> {
    let known: Vec<&str> = declared.iter().map(|v| v.name.as_str()).collect();
    let mut errs = Vec::new();
    for (i, x) in spec.exercises.iter().enumerate() {
        for name in x.set.keys().filter(|n| !known.contains(&n.as_str())) {
            errs.push(SpecError {
                table: "exercise",
                index: Some(i),
                key: "set",
                message: format!(
                    "no variable {name:?} in [vars] (this lab has: {})",
                    known.join(", ")
                ),
            });
        }
    }
    errs
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    (line, col)
}

/// The line of a semantic error: the key inside the n-th `[[table]]` (or `[table]`), else the
/// table header, else 1.
fn locate(text: &str, e: &SpecError) -> usize {
    let header = match (e.table, e.index) {
        ("", _) => None,
        (t, Some(_)) => Some(format!("[[{t}]]")),
        (t, None) => Some(format!("[{t}]")),
    };
    let lines: Vec<&str> = text.lines().collect();
    let mut start = 0;
    if let Some(h) = &header {
        let mut seen = 0;
        let target = e.index.unwrap_or(0);
        match lines.iter().enumerate().find(|(_, l)| {
            let hit = l.trim() == h;
            if hit {
                seen += 1;
            }
            hit && seen == target + 1
        }) {
            Some((i, _)) => start = i,
            None => return 1,
        }
    }
    for (i, l) in lines
        .iter()
        .enumerate()
        .skip(start + usize::from(header.is_some()))
    {
        let t = l.trim_start();
        if header.is_some() && t.starts_with('[') {
            break;
        }
        if t.strip_prefix(e.key)
            .is_some_and(|r| r.trim_start().starts_with('='))
        {
            return i + 1;
        }
    }
    start + 1
}

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
    /// `--shell`: set the lab up and give the user a busybox shell instead of running steps.
    pub shell: bool,
    /// `--kernel-arg`: extra words for the guest kernel's command line.
    pub kernel_args: Vec<String>,
    /// `check --mglru`: run with MGLRU switched on or off, whatever the lab says.
    pub mglru: Option<bool>,
    /// Config fragments added to every kernel (`check --debug-kernel`: `debug`).
    pub extra_fragments: Vec<String>,
}

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
    /// For a `--set` variant: how its facts differ from the default snapshot.
    pub variant_diff: Option<String>,
    /// A `--shell` session (no steps run, nothing judged).
    pub shell: bool,
    /// The kernel's own health during the run (taint, splats in its log and console).
    pub health: health::Health,
    pub phases: Phases,
    pub total: Duration,
    pub kernel_built: bool,
    /// target/kernel-lab/last/<id>/: console.log and results.jsonl of this run.
    pub kept: PathBuf,
    /// Every frame the agent sent (samples included).
    pub frames: Vec<guest::event::Frame>,
    /// The timeline chart written for this run, if the run had a timeline.
    pub timeline_svg: Option<PathBuf>,
}

impl RunResult {
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

/// What a VM needs that does not depend on the lab: the kernel, the agent, the accelerator.
pub struct Prepared {
    pub kernel: kernel::Kernel,
    pub agent: PathBuf,
    pub accel: qemu::Accel,
}

/// Set-up, kernel and agent, each timed into `phases`.
pub fn prepare(opts: &RunOptions, fragments: &[String], phases: &mut Phases) -> Result<Prepared> {
    phases.time("setup", || setup::ensure_for(opts.install, &opts.kernel))?;
    let accel = qemu::resolve_accel(opts.accel)?;
    let kernel = phases.time("kernel", || {
        opts.kernel.kernel(
            &[fragments, &opts.extra_fragments[..]].concat(),
            opts.rebuild_kernel,
        )
    })?;
    let agent = phases.time("agent", initramfs::build_agent)?;
    Ok(Prepared {
        kernel,
        agent,
        accel,
    })
}

/// The extra kernel fragments a lab needs: its own, and `tracing` when it traces.
pub fn kernel_fragments(spec: &LabSpec) -> Vec<String> {
    let mut f = spec.vm.kernel_config.clone();
    if spec.vm.trace && !f.iter().any(|x| x == "tracing") {
        f.push("tracing".into());
    }
    f
}

/// Kernel command line words for the agent and, when the lab traces, for tracing: the
/// tracepoints are switched on while the kernel boots, which is cheaper under TCG than
/// enabling them one by one from user space (each enable patches kernel code).
fn guest_cmdline(spec: &LabSpec, shell: bool) -> Vec<String> {
    let mut words = Vec::new();
    if shell {
        words.push("kernel_lab=shell".into());
    }
    if spec.vm.trace {
        let events: Vec<String> = guest::TRACEPOINTS
            .iter()
            .map(|t| format!("vmscan:{t}"))
            .collect();
        words.push(format!("trace_event={}", events.join(",")));
        words.push("trace_clock=boot".into());
        words.push("trace_buf_size=4M".into());
    }
    words
}

/// A per-run scratch directory under target/kernel-lab/tmp, removed on drop.
fn scratch(prefix: &str) -> Result<tempfile::TempDir> {
    let root = cache::target_dir()?.join("tmp");
    std::fs::create_dir_all(&root)?;
    Ok(tempfile::Builder::new()
        .prefix(&format!("{prefix}-"))
        .tempdir_in(&root)?)
}

/// Boots the kernel with an /init that powers off at once (with `kernel_args` added to the
/// command line, as for the lab runs); returns QEMU's wall time.
pub fn floor(p: &Prepared, kernel_args: &[String]) -> Result<Duration> {
    let dir = scratch("floor")?;
    let initrd = dir.path().join("initramfs.cpio");
    initramfs::write(&initrd, &p.agent, "", false, &[])?;
    let (console_log, results) = (dir.path().join("console.log"), dir.path().join("results"));
    let vm = qemu::VmArgs {
        accel: p.accel,
        memory: 256 << 20,
        cpus: 2,
        kernel: &p.kernel.image,
        initrd: &initrd,
        data_disk: None,
        console_log: &console_log,
        results: &results,
        tsc_khz: qemu::tsc_khz_for(p.accel),
        hz: p.kernel.hz,
        extra_cmdline: [vec!["kernel_lab=floor".to_string()], kernel_args.to_vec()].concat(),
        numa_nodes: 1,
        console_stdio: false,
    };
    let out = qemu::run(
        &qemu::argv(&vm),
        dir.path(),
        Duration::from_secs(60),
        false,
        || {},
    )?;
    match out.status {
        Some(s) if s.success() => Ok(out.wall),
        _ => bail!(
            "the floor boot did not power off cleanly; console:\n{}",
            progress::tail(&console_log, 20)
        ),
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

/// Runs one lab: set-up, kernel, initramfs, disk, QEMU, evaluation, snapshot comparison.
/// Prints progress only; [`print`] shows the report.
pub fn execute(lab: &LabDir, opts: &RunOptions) -> Result<RunResult> {
    let total = Instant::now();
    let mut phases = Phases::default();
    let loaded = load_with(&lab.spec_path(), &opts.sets)?;
    let mut spec = loaded.spec.clone();
    if opts.mglru.is_some() {
        spec.vm.mglru = opts.mglru;
    }
    if matches!(opts.kernel, crate::acquire::KernelChoice::Source(None))
        && std::env::var_os(kernel::SOURCE_ENV).is_none()
    {
        let errs = unknown_counters(&spec, &loaded.text, &lab.spec_path().display().to_string());
        if !errs.is_empty() {
            bail!(
                "{} counter(s) this kernel does not report:\n  {}",
                errs.len(),
                errs.join("\n  ")
            );
        }
    }
    if let Some(why) = not_applicable(&spec, opts)? {
        bail!("{why}");
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
    let eval = report::evaluate(&spec, &stream);
    if !opts.shell {
        // (A shell session runs no steps: their missing samples are no problem.)
        problems.extend(eval.problems.iter().cloned());
    }
    let snapshot = report::render_snapshot(&spec, &eval);
    let snapshot_dir = lab.dir.join("snapshots");
    let mut snapshot_changes = Vec::new();
    let (snapshot_matched, variant_diff) = match (problems.is_empty(), loaded.sets.is_empty()) {
        _ if opts.shell => (None, None),
        (false, _) => (None, None),
        (true, true) => {
            let name = report::snapshot_name(&snapshot_dir, &spec.id, eval.kernel.as_deref());
            let matched = report::check_snapshot(&snapshot_dir, &name, &snapshot);
            if !matched {
                let stored = report::read_snapshot(&snapshot_dir, &name).unwrap_or_default();
                snapshot_changes = report::fact_changes(&stored, &snapshot);
            }
            (Some(matched), None)
        }
        (true, false) => {
            let default = report::read_snapshot(&snapshot_dir, &spec.id).unwrap_or_default();
            (None, Some(report::line_diff(&default, &snapshot)))
        }
    };
    phases.add("report", report_started.elapsed());
    let timeline_svg = (!eval.timeline.is_empty())
        .then(|| {
            let (panels, marks, spans) = report::timeline_panels(&eval);
            let svg = kept.join("timeline.svg");
            let title = format!("{}: {}", spec.id, spec.title);
            std::fs::write(&svg, timeline::svg(&title, &panels, &marks, &spans))
                .ok()
                .map(|_| svg)
        })
        .flatten();
    Ok(RunResult {
        shell: opts.shell,
        health,
        timeline_svg,
        frames: stream.frames.clone(),
        spec,
        eval,
        problems,
        variant: (!loaded.sets.is_empty()).then(|| (loaded.sets.clone(), loaded.skipped.clone())),
        variant_diff,
        snapshot_matched,
        snapshot_changes,
        phases,
        total: total.elapsed(),
        kernel_built,
        kept,
    })
}

/// What one boot of a lab spec produced, before any judging.
pub struct Booted {
    pub stream: guest::event::Stream,
    /// target/kernel-lab/last/<id>/ with console.log and results.jsonl.
    pub kept: PathBuf,
    /// Why the run is not valid: timeout, QEMU failure, an incomplete result stream.
    pub problems: Vec<String>,
    pub kernel_built: bool,
    /// The kernel's own health (see health.rs).
    pub health: health::Health,
}

/// Prepares the kernel and agent for `spec`, writes its initramfs (plus `extra` files) and data
/// disk, boots QEMU with progress, and collects the result stream. Shared by labs and the
/// upstream selftests.
pub fn boot(
    spec: &LabSpec,
    opts: &RunOptions,
    extra: &[initramfs::Extra],
    phases: &mut Phases,
) -> Result<Booted> {
    let p = prepare(opts, &kernel_fragments(spec), phases)?;
    let scratch = scratch(&spec.id)?;
    let initrd = scratch.path().join("initramfs.cpio");
    phases.time("initramfs", || -> Result<()> {
        let plan = serde_json::to_string(spec)?;
        initramfs::write(&initrd, &p.agent, &plan, opts.shell, extra)
    })?;
    let data_disk = phases.time("disk", || disk::ensure(&disk::plan(spec)))?;
    let console_log = scratch.path().join("console.log");
    let results = scratch.path().join("results.jsonl");
    let vm = qemu::VmArgs {
        accel: p.accel,
        memory: spec.vm.memory.0,
        cpus: spec.vm.cpus,
        kernel: &p.kernel.image,
        initrd: &initrd,
        data_disk: data_disk.as_deref(),
        console_log: &console_log,
        results: &results,
        tsc_khz: qemu::tsc_khz_for(p.accel),
        hz: p.kernel.hz,
        extra_cmdline: [guest_cmdline(spec, opts.shell), opts.kernel_args.clone()].concat(),
        numa_nodes: spec.vm.numa_nodes,
        console_stdio: opts.shell,
    };
    let timeout = match opts.shell {
        true => Duration::from_secs(opts.timeout.unwrap_or(24 * 3600)),
        false => Duration::from_secs(opts.timeout.unwrap_or(spec.vm.timeout_secs)),
    };
    let accel_name = if p.accel == qemu::Accel::Kvm {
        "KVM"
    } else {
        "TCG"
    };
    progress::status(&format!(
        "{}: booting ({accel_name}, {} RAM, {} cpus) ...",
        spec.id, spec.vm.memory, spec.vm.cpus
    ));
    let mut shown = 0usize;
    let outcome = qemu::run(
        &qemu::argv(&vm),
        scratch.path(),
        timeout,
        opts.shell,
        || {
            // Show each step as the agent starts it.
            let Ok(bytes) = std::fs::read(&results) else {
                return;
            };
            let stream = decode_stream(&bytes);
            for f in stream.frames.iter().skip(shown) {
                if let Event::StepStart { step } = &f.event {
                    progress::status(&format!(
                        "{}: step {step} (guest time {:.1}s) ...",
                        spec.id,
                        f.t_ms as f64 / 1000.0
                    ));
                }
            }
            shown = stream.frames.len();
        },
    )?;
    progress::status_done(&format!(
        "{}: QEMU ran {:.2}s",
        spec.id,
        outcome.wall.as_secs_f64()
    ));
    phases.add("qemu", outcome.wall);
    let stream = decode_stream(&std::fs::read(&results).unwrap_or_default());
    let console =
        String::from_utf8_lossy(&std::fs::read(&console_log).unwrap_or_default()).into_owned();
    let health = health::judge(&stream, &console);
    let kept = keep_artifacts(&spec.id, &console_log, &results)?;
    let mut problems = Vec::new();
    let meaningful = stream
        .frames
        .iter()
        .rev()
        .find(|f| !matches!(f.event, Event::Tick { .. }));
    let mut last_seen = match meaningful {
        Some(f) => format!(
            "last seen: {} at {:.2}s guest uptime",
            describe(&f.event),
            f.t_ms as f64 / 1000.0
        ),
        None => "nothing arrived from the agent".into(),
    };
    if let Some(f) = stream
        .frames
        .last()
        .filter(|f| matches!(f.event, Event::Tick { .. }))
    {
        last_seen.push_str(&format!(
            ", then timeline ticks until {:.2}s",
            f.t_ms as f64 / 1000.0
        ));
    }
    match outcome.status {
        None => problems.push(format!(
            "the guest did not finish within {}s and QEMU was killed; {last_seen}",
            timeout.as_secs()
        )),
        Some(s) if !s.success() => problems.push(format!("QEMU exited with {s}")),
        Some(_) => {}
    }
    if let Some(problem) = &stream.problem {
        let seen = if outcome.status.is_none() {
            String::new()
        } else {
            format!("; {last_seen}")
        };
        problems.push(format!("result stream incomplete: {problem}{seen}"));
    }
    Ok(Booted {
        stream,
        kept,
        problems,
        kernel_built: p.kernel.built,
        health,
    })
}

/// The whole result for notebooks and tools (`--json`); the schema is documented in README.md.
pub fn to_json(r: &RunResult) -> serde_json::Value {
    use serde_json::json;
    let steps: Vec<_> = r
        .eval
        .steps
        .iter()
        .map(|s| {
            let observed: Vec<_> = s
                .observed
                .iter()
                .map(|o| match &o.delta {
                    Ok(d) => json!({"counter": o.counter.to_string(), "delta": d, "class": report::class(o.rule, *d)}),
                    Err(t) => json!({"counter": o.counter.to_string(), "delta": null, "missing": t}),
                })
                .collect();
            json!({"name": s.name, "describe": s.describe, "exit": s.exit.map(|e| e.to_string()),
                   "wall_ms": s.wall_ms, "stderr": s.stderr, "observed": observed})
        })
        .collect();
    let expectations: Vec<_> = r
        .eval
        .verdicts
        .iter()
        .map(|v| json!({"what": v.what, "actual": v.actual, "pass": v.pass, "applies": v.applies, "why": v.expect.why}))
        .collect();
    let phases: serde_json::Map<String, serde_json::Value> = r
        .phases
        .list
        .iter()
        .map(|(n, d)| (n.clone(), json!(d.as_secs_f64())))
        .collect();
    json!({
        "schema": "kernel-lab/result/1",
        "lab": r.spec.id,
        "title": r.spec.title,
        "kernel": r.eval.kernel,
        "passed": r.passed(),
        "variant": r.variant.as_ref().map(|(sets, skipped)| json!({"set": sets, "skipped_steps": skipped})),
        "problems": r.problems,
        "health": r.health,
        "steps": steps,
        "expectations": expectations,
        "snapshot": {"matched": r.snapshot_matched, "diff_from_default": r.variant_diff},
        "phases_secs": phases,
        "total_secs": r.total.as_secs_f64(),
        "guest": {"ready_ms": r.eval.ready_ms, "end_ms": r.eval.end_ms},
        "timeline_svg": r.timeline_svg,
        "trace": r.eval.traces.iter().map(|(step, f)| json!({"step": step, "facts": f})).collect::<Vec<_>>(),
        "timeline": r.eval.timeline.iter().map(|(t, step, values)| json!({"t_ms": t, "step": step, "values": values})).collect::<Vec<_>>(),
        "spec": r.spec,
        "frames": r.frames,
    })
}

/// Prints the explained report, the validity problems with the console tail, and the verdict.
pub fn print(r: &RunResult) {
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
        print!("{text}");
    }
    if let Some(svg) = &r.timeline_svg {
        println!("\ntimeline chart: {}", svg.display());
    }
    if !r.problems.is_empty() {
        println!("\nthe run is not valid:");
        for p in &r.problems {
            println!("  - {p}");
        }
        let console = r.kept.join("console.log");
        println!(
            "  console tail ({}):\n{}",
            console.display(),
            progress::tail(&console, 25)
        );
    }
    if !r.health.healthy() {
        println!("\nthe kernel is not healthy:");
        for f in &r.health.findings {
            println!("  - {f}");
        }
        println!("  (console: {})", r.kept.join("console.log").display());
    }
    if let (Some((sets, skipped)), Some(diff)) = (&r.variant, &r.variant_diff) {
        let sets: Vec<String> = sets.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!(
            "\nvariant {}: facts compared with the lab's default snapshot",
            sets.join(" ")
        );
        if !skipped.is_empty() {
            println!("  steps left out (size 0): {}", skipped.join(", "));
        }
        if diff.is_empty() {
            println!("  (no difference: the same facts as the default run)");
        } else {
            print!("{diff}");
        }
    }
    if let Some(matched) = r.snapshot_matched {
        let id = &r.spec.id;
        println!(
            "\nsnapshot {id}.snap: {}",
            if matched {
                "matches"
            } else {
                "DIFFERS (see the diff above; review with `cargo insta review`)"
            }
        );
    }
    println!(
        "phases: {}, total {:.2}s",
        r.phases.render(),
        r.total.as_secs_f64()
    );
    if let (Some(ready), Some(end)) = (r.eval.ready_ms, r.eval.end_ms) {
        let secs = |ms: u64| ms as f64 / 1000.0;
        println!(
            "  in the guest: boot to agent ready {:.2}s, lab steps and sampling {:.2}s",
            secs(ready),
            secs(end - ready)
        );
    }
    println!("kernel health: {}", r.health.summary());
    println!(
        "kernel {} ({}); console log and raw results: {}",
        r.eval.kernel.as_deref().unwrap_or("?"),
        if r.kernel_built {
            "built now"
        } else {
            "cached"
        },
        r.kept.display()
    );
    match (&r.variant, r.passed()) {
        (Some(_), true) => println!(
            "{}: variant ran to the end (facts above; not judged)",
            r.spec.id
        ),
        (Some(_), false) => println!("{}: variant did not run to the end", r.spec.id),
        (None, passed) => println!("{}: {}", r.spec.id, if passed { "PASS" } else { "FAIL" }),
    }
}

/// One event in a few words, for "last seen".
fn describe(e: &Event) -> String {
    match e {
        Event::Hello { .. } => "hello".into(),
        Event::Ready => "ready".into(),
        Event::Sample { label, .. } => format!("sample {label}"),
        Event::StepStart { step } => format!("step-start {step}"),
        Event::Tick { step, .. } => format!("timeline tick in step {step}"),
        Event::Trace { step, .. } => format!("reclaim trace of step {step}"),
        Event::StepEnd { step, exit, .. } => format!("step-end {step} ({exit})"),
        Event::Error { context, message } => format!("error {context}: {message}"),
        Event::Health { .. } => "kernel health".into(),
        Event::End { .. } => "end".into(),
    }
}

/// Over repeated runs of a lab: a copy of the first failing run's kept files, put back into
/// target/kernel-lab/last/<id>/ at the end (a later passing run would have replaced them).
#[derive(Default)]
pub struct KeepFailing {
    copy: Option<(tempfile::TempDir, PathBuf)>,
}

const KEPT_FILES: &[&str] = &["console.log", "results.jsonl", "report.txt", "timeline.svg"];

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
        for f in KEPT_FILES {
            let _ = std::fs::remove_file(kept.join(f));
            let _ = std::fs::copy(dir.path().join(f), kept.join(f));
        }
        eprintln!(
            "{}: kept the first failing run's console and results",
            kept.display()
        );
    }
}

/// Copies the console log and result stream to target/kernel-lab/last/<id>/ for later reading.
fn keep_artifacts(id: &str, console: &Path, results: &Path) -> Result<PathBuf> {
    let dir = cache::target_dir()?.join("last").join(id);
    std::fs::create_dir_all(&dir)?;
    for (src, name) in [(console, "console.log"), (results, "results.jsonl")] {
        let tmp = dir.join(format!(".{name}.{}", std::process::id()));
        let _ = std::fs::copy(src, &tmp).or_else(|_| std::fs::write(&tmp, b"").map(|_| 0));
        std::fs::rename(&tmp, dir.join(name))?;
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labs(ids: &[&str]) -> Vec<LabDir> {
        ids.iter()
            .map(|id| LabDir {
                id: id.to_string(),
                dir: PathBuf::from(id),
            })
            .collect()
    }

    #[test]
    fn ids_resolve_by_number_prefix_and_suggestion() {
        let l = labs(&[
            "1-global-pressure",
            "2-cgroup-limit",
            "10-dirty-writeback",
            "12-psi-blocking",
        ]);
        assert_eq!(resolve("2", &l).unwrap().id, "2-cgroup-limit");
        assert_eq!(resolve("1", &l).unwrap().id, "1-global-pressure");
        assert_eq!(resolve("2-cg", &l).unwrap().id, "2-cgroup-limit");
        let ones = labs(&["10-dirty-writeback", "11-mglru-vs-classic"]);
        assert!(
            resolve("1", &ones)
                .unwrap_err()
                .to_string()
                .contains("ambiguous")
        );
        let e = resolve("2-cgroup-limt", &l).unwrap_err().to_string();
        assert!(e.contains("did you mean \"2-cgroup-limit\""), "{e}");
        let e = resolve("cgroup-limit", &l).unwrap_err().to_string();
        assert!(e.contains("did you mean \"2-cgroup-limit\""), "{e}");
        let e = resolve("zzzzzzzzzzzz", &l).unwrap_err().to_string();
        assert!(
            !e.contains("did you mean") && e.contains("labs: 1-global-pressure"),
            "{e}"
        );
    }

    #[test]
    fn edit_distance_basics() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }

    const GOOD: &str = "id = \"t\"\ntitle = \"T\"\n\n[vm]\nmemory = \"256M\"\n\n[[cgroup]]\nname = \"W\"\nmemory_max = \"32M\"\n\n[[step]]\nkind = \"anon\"\ncgroup = \"W\"\nsize = \"64M\"\n";

    #[test]
    fn the_spec_loader_never_panics() {
        // Deterministic mutations of a valid spec: flipped, cut and duplicated bytes.
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let full = format!(
            "{GOOD}[[expect]]\nstep = \"anon\"\ncounter = \"W/memory.events.oom_kill\"\ndelta = \"== 1\"\nwhy = \"w\"\n[vars]\nm = {{ default = \"1M\", help = \"h\" }}\n"
        );
        for _ in 0..3000 {
            let mut b = full.as_bytes().to_vec();
            for _ in 0..1 + next() % 3 {
                let i = (next() % b.len() as u64) as usize;
                match next() % 4 {
                    0 => b[i] = next() as u8,
                    1 => b.truncate(i.max(1)),
                    2 => b.insert(i, b"=\"[]{}$\n"[(next() % 8) as usize]),
                    _ => {
                        let tail = b[i..].to_vec();
                        b.extend_from_slice(&tail);
                    }
                }
            }
            let text = String::from_utf8_lossy(&b);
            let _ = parse_full(&text, "fuzz", &["m=2M".to_string()]);
        }
    }

    #[test]
    fn unknown_counters_are_named_with_the_closest_real_one() {
        let text = format!(
            "{GOOD}[[expect]]\ncounter = \"vmstat.pgscan_kswapd_normal + W/memory.events.oom_kill\"\ndelta = \"== 0\"\nwhy = \"w\"\n"
        );
        let spec = parse_spec(&text, "f").unwrap();
        let errs = unknown_counters(&spec, &text, "f");
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with("f:16: [[expect]] #1 field `counter`"),
            "{errs:?}"
        );
        assert!(
            errs[0].contains("no vmstat key \"pgscan_kswapd_normal\" (closest: \"pgscan_kswapd\")"),
            "{errs:?}"
        );
        // Every lab in the catalog names only counters the kernel has.
        for l in catalog().unwrap() {
            let text = std::fs::read_to_string(l.spec_path()).unwrap();
            let spec = load(&l.spec_path()).unwrap();
            assert_eq!(unknown_counters(&spec, &text, &l.id), Vec::<String>::new());
        }
    }

    #[test]
    fn a_good_spec_loads() {
        let s = parse_spec(GOOD, "lab.toml").unwrap();
        assert_eq!(s.cgroups[0].memory_max.unwrap().0, 32 << 20);
        assert_eq!(s.vm.cpus, 2);
    }

    #[test]
    fn syntax_and_type_errors_name_file_line_and_column() {
        let e = parse_spec(
            &GOOD.replace("memory = \"256M\"", "memory = \"256Q\""),
            "labs/x/lab.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("labs/x/lab.toml:5:"), "{e}");
        assert!(e.contains("unknown unit"), "{e}");
        let e = parse_spec(
            &GOOD.replace("size = \"64M\"", "size = \"64M\"\ncolour = 3"),
            "f",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("f:15:") && e.contains("unknown field `colour`"),
            "{e}"
        );
        let e = parse_spec(
            &GOOD.replace("memory_max = \"32M\"", "memory_max = [1]"),
            "f",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("f:9:"), "{e}");
        let e = parse_spec("id = \"t\"\ntitle = ", "f")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("f:2:"), "{e}");
    }

    #[test]
    fn semantic_errors_name_the_line_of_the_field() {
        let e = parse_spec(&GOOD.replace("cgroup = \"W\"", "cgroup = \"X\""), "f")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("f:13: [[step]] #1 field `cgroup`: cgroup \"X\" is not declared"),
            "{e}"
        );
        let e = parse_spec(
            &GOOD.replace("memory_max = \"32M\"", "memory_max = \"1G\""),
            "f",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("f:9: [[cgroup]] #1 field `memory_max`"), "{e}");
    }

    #[test]
    fn fields_that_do_not_fit_their_kind_are_named_at_their_line() {
        let text = format!(
            "{GOOD}pageout = true\n\n[[step]]\nkind = \"sleep\"\nsize = \"1M\"\n\n[[expect]]\nstep = \"anon\"\nexit = \"killed by SIGKIL\"\nwhy = \"w\"\n"
        );
        let e = parse_spec(
            &text.replace("\"anon\"\ncgroup", "\"read-file\"\ncgroup"),
            "f",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("4 problem(s) in the lab spec"), "{e}");
        assert!(
            e.contains("f:15: [[step]] #1 field `pageout`: only anon steps take pageout"),
            "{e}"
        );
        assert!(
            e.contains("f:19: [[step]] #2 field `size`: a sleep step takes no size"),
            "{e}"
        );
        assert!(
            e.contains("f:17: [[step]] #2 field `ms`: a sleep step needs ms"),
            "{e}"
        );
        assert!(
            e.contains("f:23: [[expect]] #1 field `exit`: \"killed by SIGKIL\": no signal \"SIGKIL\"; did you mean SIGKILL?"),
            "{e}"
        );
        // A type error inside a step keeps TOML's line and column.
        let e = parse_spec(&GOOD.replace("size = \"64M\"", "size = \"lots\""), "f")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("f:14:8:") && e.contains("does not start with a number"),
            "{e}"
        );
    }

    #[test]
    fn exercises_and_headlines_are_checked_with_file_and_line() {
        let text = format!(
            "{GOOD}[[expect]]\nname = \"oom\"\nstep = \"anon\"\nexit = \"killed by SIGKILL\"\nwhy = \"w\"\n\n[[exercise]]\nname = \"x\"\nset = {{ m = \"1M\" }}\nask = \"a\"\nanswer = \"b\"\nshows = [\"anon: exit == exited 0\", \"nope: Δ W/memory.events.max == 0\"]\nfails = [\"om\"]\n\n[[headline]]\nclaim = \"c\"\nexpect = [\"oom\"]\ncontrast = \"x\"\n"
        );
        let e = parse_spec(&text, "f").unwrap_err().to_string();
        assert!(
            e.contains("f:26: [[exercise]] #1 field `shows`: `nope: Δ W/memory.events.max == 0`: no step is named \"nope\""),
            "{e}"
        );
        assert!(
            e.contains("f:27: [[exercise]] #1 field `fails`: no [[expect]] is named \"om\""),
            "{e}"
        );
        assert!(
            e.contains("[[headline]] #1 field `contrast`: in exercise \"x\" none of this claim's expectations fails"),
            "{e}"
        );
        assert!(
            e.contains("f:23: [[exercise]] #1 field `set`: no variable \"m\""),
            "{e}"
        );
        let e = parse_spec(&text.replace("exit == exited 0", "exit = ok"), "f")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("f:26:") && e.contains("write `== value`"),
            "{e}"
        );
    }

    #[test]
    fn every_lab_reaches_the_guest_as_it_was_loaded() {
        // The agent reads the same type from the JSON plan: nothing may be lost on the way.
        for l in catalog().unwrap() {
            let spec = load(&l.spec_path()).unwrap();
            let plan = serde_json::to_string(&spec).unwrap();
            let back: LabSpec = serde_json::from_str(&plan).unwrap();
            assert_eq!(back, spec, "{}", l.id);
        }
    }

    #[test]
    fn every_lab_in_the_catalog_loads() {
        let labs = catalog().unwrap();
        assert!(labs.len() >= 2);
        for l in labs {
            let spec = load(&l.spec_path()).unwrap();
            assert_eq!(
                spec.id,
                l.id,
                "the id in {} must match its directory",
                l.spec_path().display()
            );
            assert!(
                l.dir.join("README.md").is_file(),
                "{} has no README.md",
                l.id
            );
        }
    }
}
