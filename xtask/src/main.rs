//! kernel-lab's command line (`cargo xtask ...`): the one place where verbs and flags are defined.

mod acquire;
mod answers;
mod bench;
mod cache;
mod chart;
mod check;
mod console;
mod course;
mod disk;
mod evaluate;
mod exercise;
mod exit;
mod figures;
mod gc;
mod health;
mod initramfs;
mod kernel;
mod lab;
mod manifest;
mod mutants;
mod notebook;
mod oom;
mod predict;
mod process;
mod progress;
mod qemu;
mod readme;
mod report;
mod selftests;
mod setup;
mod timeline;
mod trace;
mod tree;
mod units;
mod vars;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use exit::Exit;
use std::path::PathBuf;
use std::process::ExitCode;

/// Experiments on Linux memory reclaim, run on a real kernel in QEMU.
///
/// Each lab boots a minimal kernel (built once from Debian's linux-source-6.12, then cached),
/// creates cgroup v2 groups, applies memory pressure, and reports what the kernel's own
/// counters (/proc/vmstat, memory.stat, memory.events, PSI) did, with the reasons.
///
/// Start with:  cargo xtask list          then:  cargo xtask lab 2-cgroup-limit
#[derive(Parser)]
#[command(name = "cargo xtask", version, after_help = format!("{CACHE_HELP}\n\n{EXIT_HELP}"))]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

const CACHE_HELP: &str = "Files: built kernels, the extracted source and data disks are cached in \
$KERNEL_LAB_CACHE (default ~/.cache/kernel-lab); per-run files live under target/kernel-lab \
(the last run of each lab is kept in target/kernel-lab/last/<id>/).";

const EXIT_HELP: &str = "Exit codes (lab and check, as `git bisect run` reads them): 0 passed; 1 a regression \
(a failed expectation, snapshot fact or selftest, an unhealthy kernel); 2 bad input found before anything ran \
(a usage error, a spec error, an unknown lab); 125 the kernel cannot be tested (it does not build, lacks a required \
option, or the lab does not apply to its version: a bisect skips it); 255 an infrastructure fault of a run (a \
timeout, a QEMU crash, a truncated result stream, a dead agent, a full disk, an interrupted build: a bisect \
stops instead of blaming a commit).";

#[derive(Subcommand)]
enum Command {
    /// Run a lab: build what is missing, boot it, print the explained report, check its snapshot.
    ///
    /// Exits 1 when an expectation fails, the snapshot differs or the kernel is unhealthy, 255
    /// when the run could not finish (timeout, QEMU crash, dead agent), 125 when the kernel
    /// cannot be tested, 2 on bad input (see the exit codes below).
    Lab(LabArgs),
    /// List the labs with their titles, and how far you got: which labs this machine has run
    /// and passed, with your prediction scores (kept in the cache's progress.json).
    List(ListArgs),
    /// Print the answers to a lab's README questions (the "Think about it" questions and the
    /// exercises), which a run lists without their answers.
    Answers(AnswersArgs),
    /// Run every lab (or some) and the kernel's own cgroup selftests on one or more kernels, for
    /// CI: summary table, check.json, junit.xml, check.ktap.
    ///
    /// Exit codes, the worst item first (125 > 255 > 1 > 0): 0 everything passed (flaky,
    /// skipped and declared results included), 1 a lab or selftest failed (a regression), 255
    /// an item could not run (timeout, QEMU crash, truncated stream: the machine's fault), 125
    /// a kernel cannot be tested (it does not build, lacks an option, or its selftests do not
    /// compile); 2 bad input, before anything runs. The reports are written in every case, as
    /// results arrive. Example: `cargo xtask check --kernel-src 6.1 --kernel-src 6.12 --repeat 3`.
    Check(check::CheckArgs),
    /// Time a lab's warm runs phase by phase, beside the boot floor of the same kernel.
    Bench(BenchArgs),
    /// Build (or find in the cache) the guest kernel and print its path.
    Kernel(KernelBuildArgs),
    /// Install the system packages kernel-lab needs (apt-get, as root).
    Setup,
    /// Which kernel regressions do the labs and selftests catch? Applies each one-line kernel
    /// change of kernel-mutants/ in turn to a scratch copy of the kernel tree (in the cache),
    /// builds it incrementally, runs `check`, and prints which labs or selftests caught each
    /// mutant and which escaped; writes target/kernel-lab/mutants/mutants.json. The unmodified
    /// tree is checked first: what fails there is not counted. Example:
    /// `cargo xtask mutants --kernel-src ~/src/linux --only 02 --only 08`.
    Mutants(MutantsArgs),
    /// Write the generated parts of each lab's README (headline claims with their checks, and
    /// the exercises' answers) from its lab.toml; with --check, only say which are stale.
    Readme(ReadmeArgs),
    /// Manage the cache ($KERNEL_LAB_CACHE, default ~/.cache/kernel-lab).
    Cache {
        #[command(subcommand)]
        action: CacheAction,
    },
}

/// `cargo xtask lab`: its body is [`LabArgs::run`] (lab.rs).
#[derive(Args)]
struct LabArgs {
    /// Lab id (`2-cgroup-limit`), its number (`2`), a unique prefix, or a path to a lab directory.
    lab: String,
    /// Run it N times and report how many runs passed (a flaky lab is a failing lab).
    #[arg(long, value_name = "N", default_value_t = 1)]
    repeat: usize,
    /// Change one of the lab's variables for this run (see --vars), e.g. --set memory_max=128M.
    /// The report then shows how the facts differ from the lab's default snapshot.
    #[arg(long = "set", value_name = "NAME=VALUE")]
    sets: Vec<String>,
    /// List the lab's variables (its knobs) with their meaning and default, and exit.
    #[arg(long)]
    vars: bool,
    /// Run one of the lab's "change this and predict" exercises (`all`: every one; see
    /// its README) and check that the kernel shows what the exercise says; repeatable.
    #[arg(long = "exercise", value_name = "NAME", conflicts_with_all = ["sets", "shell"])]
    exercises: Vec<String>,
    /// Print the whole result as JSON (spec, every sample, steps, facts, verdicts, phases)
    /// instead of the report.
    #[arg(long)]
    json: bool,
    /// Predict, then observe: before the VM boots, say for each fact the lab explains what
    /// the kernel will show (`0` or `>0`, `?` skips); after the run every prediction is
    /// scored, with the lab's explanation for every miss. With --exercise (or --set):
    /// predict what changes. Answers are asked on the terminal, or read from --answers
    /// FILE or piped stdin: one per line in order, or `step: counter = answer` lines.
    #[arg(long, conflicts_with_all = ["json", "shell", "repeat", "vars"])]
    predict: bool,
    /// With --predict: read the answers from FILE (see --questions for its lines).
    #[arg(long, value_name = "FILE", requires = "predict")]
    answers: Option<PathBuf>,
    /// With --predict: print the questions as an answers file (`step: counter = ?`, with
    /// what is accepted) and exit without running.
    #[arg(long, requires = "predict")]
    questions: bool,
    /// Open the run's lab notebook (target/kernel-lab/last/<id>/index.html: the report,
    /// the chart with every value under the pointer, your predictions, the questions) in
    /// your browser ($BROWSER, else xdg-open).
    #[arg(long, conflicts_with_all = ["json", "shell"])]
    open: bool,
    /// Show every counter the lab observes, not only those that moved and those the lab is
    /// about (the full table; target/kernel-lab/last/<id>/report.txt always has it).
    #[arg(long)]
    full: bool,
    /// Boot the lab's VM with its cgroups, swap and disks set up, and open a busybox shell
    /// on this terminal instead of running the steps; `lab-step NAME` runs one step there.
    /// `exit` powers the VM off. Needs busybox-static.
    #[arg(long, conflicts_with_all = ["json", "repeat"])]
    shell: bool,
    #[command(flatten)]
    opts: RunArgs,
}

/// `cargo xtask list`: [`ListArgs::run`] (course.rs).
#[derive(Args)]
struct ListArgs {
    /// Forget the progress recorded on this machine.
    #[arg(long)]
    reset: bool,
}

/// `cargo xtask answers`: [`AnswersArgs::run`] (answers.rs).
#[derive(Args)]
struct AnswersArgs {
    /// Lab id, number or unique prefix.
    lab: String,
    /// Only the answer to question N (as numbered at the end of the lab's report).
    number: Option<usize>,
}

/// `cargo xtask bench`: [`BenchArgs::run`] (bench.rs).
#[derive(Args)]
struct BenchArgs {
    /// The lab to time.
    #[arg(default_value = "2-cgroup-limit")]
    lab: String,
    /// Counted runs (after one warm-up).
    #[arg(short = 'n', long, default_value_t = 5)]
    runs: usize,
    /// Print the figures as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    opts: RunArgs,
}

/// `cargo xtask kernel`: [`KernelBuildArgs::run`] (kernel.rs).
#[derive(Args)]
struct KernelBuildArgs {
    #[command(flatten)]
    src: KernelArgs,
    /// Rebuild even if a cached kernel exists (e.g. after editing a local tree).
    #[arg(long)]
    rebuild: bool,
    /// Extra config fragment from kernel-configs/ (without .config), as labs ask for them.
    #[arg(long = "fragment", value_name = "NAME")]
    fragments: Vec<String>,
    /// Only configure (tinyconfig, the fragments, olddefconfig) in a scratch directory under
    /// target/ and check that every option the fragments ask for survived; build nothing.
    /// Seconds, not a build, to see whether an edited fragment holds on a kernel version.
    #[arg(long, conflicts_with = "rebuild")]
    config_only: bool,
}

/// `cargo xtask mutants`: [`MutantsArgs::run`] (mutants.rs).
#[derive(Args)]
struct MutantsArgs {
    #[command(flatten)]
    src: KernelArgs,
    /// The directory of mutants (*.patch, each with a `Subject:` line).
    #[arg(long, value_name = "DIR", default_value = "kernel-mutants")]
    mutants: PathBuf,
    /// Only the mutants whose file name starts with this (repeatable).
    #[arg(long, value_name = "PREFIX")]
    only: Vec<String>,
    /// Only these labs (as `check --lab`; `selftests` names the kernel's own tests).
    #[arg(long = "lab", value_name = "LAB")]
    labs: Vec<String>,
    /// Leave out the kernel's own selftests.
    #[arg(long)]
    no_selftests: bool,
    /// Accelerator (see `lab --help`).
    #[arg(long, value_enum, default_value = "auto")]
    accel: qemu::Accel,
    /// Never install packages; say what is missing instead.
    #[arg(long)]
    no_install: bool,
    /// Multiply every lab's and selftest's timeout by F (slow or busy machines).
    #[arg(long, value_name = "F", default_value_t = 1.0)]
    timeout_factor: f64,
}

/// `cargo xtask readme`: [`ReadmeArgs::run`] (readme.rs).
#[derive(Args)]
struct ReadmeArgs {
    /// Only these labs (ids, numbers or prefixes). Default: every lab.
    labs: Vec<String>,
    /// Change nothing; exit non-zero when a README differs from what lab.toml generates.
    #[arg(long)]
    check: bool,
    /// First copy the values of the lab's `[[figures]]` from its last run
    /// (target/kernel-lab/last/<id>/result.json, kept by `cargo xtask lab N`) into
    /// labs/<id>/figures.toml.
    #[arg(long, conflicts_with = "check")]
    record: bool,
}

#[derive(Subcommand)]
enum CacheAction {
    /// Remove published kernels, build directories, selftest programs, extracted sources and
    /// `mutants`' tree copies not used for --max-age, then the least recently used until the cache fits in
    /// --max-size. The same bounds apply after every kernel build, and a tree keeps only the
    /// newest two kernels of each build directory (editing a tree does not grow the cache).
    /// Entries another kernel-lab process is using are left alone.
    Gc {
        /// The most the cache may hold afterwards (K, M, G).
        #[arg(long, value_name = "SIZE", default_value = "20G", value_parser = parse_size)]
        max_size: u64,
        /// Remove what was not used for this many days.
        #[arg(long, value_name = "DAYS", default_value_t = 30)]
        max_age_days: u64,
        /// Only say what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
}

fn parse_size(s: &str) -> Result<u64, String> {
    guest::parse::parse_size(s)
}

#[derive(Args, Clone)]
struct KernelArgs {
    /// Kernel source: a Linux tree or tarball, or `X.Y` for Debian's linux-source-X.Y package
    /// [env: KERNEL_LAB_SRC; default: /usr/src/linux-source-6.12.tar.xz]
    #[arg(long, value_name = "DIR|TARBALL")]
    kernel_src: Option<PathBuf>,
}

/// A kernel that kernel-lab does not build from a source.
#[derive(Args, Clone, Default, Debug)]
pub struct PrebuiltArgs {
    /// A kernel built elsewhere, vmlinux or bzImage, instead of building one. Its config
    /// (--kernel-config, else the one embedded with CONFIG_IKCONFIG) must have every option the
    /// lab's fragments (kernel-configs/) ask for, except those marked `# build choice`; a
    /// missing one is named and exits 125. With --kernel-src, that tree builds the selftests.
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// The .config the --kernel was built with.
    #[arg(long, value_name = "PATH", requires = "kernel")]
    pub kernel_config: Option<PathBuf>,
    /// Your own configured build directory (a tree you built in place, or your O= directory):
    /// `make vmlinux` runs there with your .config, which is then checked like --kernel's.
    #[arg(long, value_name = "DIR")]
    pub build_dir: Option<PathBuf>,
}

#[derive(Args, Clone)]
struct RunArgs {
    #[command(flatten)]
    src: KernelArgs,
    #[command(flatten)]
    prebuilt: PrebuiltArgs,
    /// Accelerator: auto picks KVM only where it really works (/dev/kvm opens and the CPU has vmx/svm).
    #[arg(long, value_enum, default_value = "auto")]
    accel: qemu::Accel,
    /// Seconds before a hung guest is killed [default: the lab's vm.timeout_secs]
    #[arg(long)]
    timeout: Option<u64>,
    /// Rebuild the kernel even if one is cached.
    #[arg(long)]
    rebuild_kernel: bool,
    /// Never install packages; say what is missing instead.
    #[arg(long)]
    no_install: bool,
    /// Extra word for the guest kernel's command line, e.g. `initcall_debug` (repeatable).
    #[arg(long = "kernel-arg", value_name = "ARG")]
    kernel_args: Vec<String>,
}

impl RunArgs {
    /// The options of one run from these flags (the kernel: the first one they name).
    fn options(self) -> Result<lab::RunOptions> {
        let a = self;
        let mut kernels = acquire::choose(
            a.src.kernel_src.into_iter().collect(),
            a.prebuilt.kernel,
            a.prebuilt.kernel_config,
            a.prebuilt.build_dir,
            None,
        )?;
        Ok(lab::RunOptions {
            kernel: kernels.remove(0),
            accel: a.accel,
            rebuild_kernel: a.rebuild_kernel,
            install: !a.no_install,
            timeout: a.timeout,
            kernel_args: a.kernel_args,
            ..Default::default()
        })
    }
}

/// Exits with the command's [`Exit`] code (exit.rs; clap's usage errors exit 2 by themselves).
fn main() -> ExitCode {
    progress::install_interrupt_handler();
    let exit = match run(Cli::parse()) {
        Ok(exit) => exit,
        Err(e) => {
            eprintln!("error: {e:#}");
            Exit::of_error(&e)
        }
    };
    ExitCode::from(exit.code())
}

/// Dispatches to the verb's body, in its module.
fn run(cli: Cli) -> Result<Exit> {
    match cli.command {
        Command::Lab(a) => a.run(),
        Command::Bench(a) => a.run(),
        Command::Check(a) => check::run(a),
        Command::List(a) => a.run(),
        Command::Answers(a) => a.run(),
        Command::Kernel(a) => a.run(),
        Command::Mutants(a) => a.run(),
        Command::Readme(a) => a.run(),
        Command::Cache { action } => action.run(),
        Command::Setup => setup::run(),
    }
}
