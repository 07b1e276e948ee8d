//! kernel-lab's command line (`cargo xtask ...`): the one place where verbs and flags are defined.

mod acquire;
mod bench;
mod cache;
mod check;
mod disk;
mod exercise;
mod gc;
mod health;
mod initramfs;
mod kernel;
mod lab;
mod manifest;
mod mutants;
mod progress;
mod qemu;
mod readme;
mod report;
mod selftests;
mod setup;
mod timeline;
mod trace;
mod tree;
mod vars;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
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
#[command(name = "cargo xtask", version, after_help = CACHE_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

const CACHE_HELP: &str = "Files: built kernels, the extracted source and data disks are cached in \
$KERNEL_LAB_CACHE (default ~/.cache/kernel-lab); per-run files live under target/kernel-lab \
(the last run of each lab is kept in target/kernel-lab/last/<id>/).";

#[derive(Subcommand)]
enum Command {
    /// Run a lab: build what is missing, boot it, print the explained report, check its snapshot.
    ///
    /// Exits non-zero when an expectation fails, the snapshot differs, or the run is incomplete.
    Lab {
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
        /// Boot the lab's VM with its cgroups, swap and disks set up, and open a busybox shell
        /// on this terminal instead of running the steps; `lab-step NAME` runs one step there.
        /// `exit` powers the VM off. Needs busybox-static.
        #[arg(long, conflicts_with_all = ["json", "repeat"])]
        shell: bool,
        #[command(flatten)]
        opts: RunArgs,
    },
    /// List the labs with their titles.
    List,
    /// Run every lab (or some) and the kernel's own cgroup selftests on one or more kernels, for
    /// CI: summary table, check.json, junit.xml, check.ktap.
    ///
    /// Exit codes: 0 everything passed (flaky, skipped and declared results included), 1 a lab
    /// or selftest failed (a regression), 2 an item could not run (timeout, QEMU crash,
    /// truncated stream), 125 a kernel cannot be tested (it does not build, lacks an option,
    /// or its selftests do not compile). The reports are written in every case, as results
    /// arrive. Example: `cargo xtask check --kernel-src 6.1 --kernel-src 6.12 --repeat 3`.
    Check(check::CheckArgs),
    /// Time a lab's warm runs phase by phase, beside the boot floor of the same kernel.
    Bench {
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
    },
    /// Build (or find in the cache) the guest kernel and print its path.
    Kernel {
        #[command(flatten)]
        src: KernelArgs,
        /// Rebuild even if a cached kernel exists (e.g. after editing a local tree).
        #[arg(long)]
        rebuild: bool,
        /// Extra config fragment from kernel-configs/ (without .config), as labs ask for them.
        #[arg(long = "fragment", value_name = "NAME")]
        fragments: Vec<String>,
    },
    /// Install the system packages kernel-lab needs (apt-get, as root).
    Setup,
    /// Which kernel regressions do the labs and selftests catch? Applies each one-line kernel
    /// change of kernel-mutants/ in turn to a scratch copy of the kernel tree (in the cache),
    /// builds it incrementally, runs `check`, and prints which labs or selftests caught each
    /// mutant and which escaped; writes target/kernel-lab/mutants/mutants.json. The unmodified
    /// tree is checked first: what fails there is not counted. Example:
    /// `cargo xtask mutants --kernel-src ~/src/linux --only 02 --only 08`.
    Mutants {
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
    },
    /// Write the generated parts of each lab's README (headline claims with their checks, and
    /// the exercises' answers) from its lab.toml; with --check, only say which are stale.
    Readme {
        /// Only these labs (ids, numbers or prefixes). Default: every lab.
        labs: Vec<String>,
        /// Change nothing; exit non-zero when a README differs from what lab.toml generates.
        #[arg(long)]
        check: bool,
    },
    /// Manage the cache ($KERNEL_LAB_CACHE, default ~/.cache/kernel-lab).
    Cache {
        #[command(subcommand)]
        action: CacheAction,
    },
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
            sets: vec![],
            shell: false,
            kernel_args: a.kernel_args,
            mglru: None,
            extra_fragments: vec![],
        })
    }
}

fn main() -> ExitCode {
    progress::install_interrupt_handler();
    match run(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            exit_code_of(&e)
        }
    }
}

/// Exit codes, as `git bisect run` and CI read them: 0 everything passed (or was skipped with
/// its reason), 1 a lab or selftest failed (a regression), 125 the kernel cannot be tested
/// ([`kernel::Untestable`]: it does not build, or lacks a required option), 2 anything else
/// (bad input, an infrastructure fault such as a QEMU crash or a timeout).
fn exit_code_of(e: &anyhow::Error) -> ExitCode {
    if e.downcast_ref::<kernel::Untestable>().is_some() {
        ExitCode::from(125)
    } else {
        ExitCode::from(2)
    }
}

fn run(cli: Cli) -> Result<bool> {
    match cli.command {
        Command::Lab {
            lab,
            repeat,
            sets,
            vars,
            exercises,
            json,
            shell,
            opts,
        } => {
            let found = lab::resolve(&lab, &lab::catalog()?)?;
            if !exercises.is_empty() {
                return exercise::run_cli(
                    &found,
                    &exercises,
                    repeat.max(1),
                    json,
                    &opts.options()?,
                );
            }
            if vars {
                let loaded = lab::load_with(&found.spec_path(), &[])?;
                if loaded.vars.is_empty() {
                    println!("{} has no variables", found.id);
                }
                for v in &loaded.vars {
                    println!("{:<14} {:<8} {}", v.name, v.default, v.help);
                }
                return Ok(true);
            }
            let mut opts = opts.options()?;
            opts.sets = sets;
            opts.shell = shell;
            let mut passed = 0;
            let mut walls = Vec::new();
            let mut failing = lab::KeepFailing::default();
            for i in 0..repeat.max(1) {
                if repeat > 1 {
                    eprintln!("run {}/{repeat}", i + 1);
                }
                let result = lab::execute(&found, &opts)?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&lab::to_json(&result))?);
                } else {
                    lab::print(&result);
                }
                failing.saw(&result);
                passed += usize::from(result.passed());
                walls.push(result.total.as_secs_f64());
            }
            failing.restore();
            if repeat > 1 {
                let f = bench::figure("total", walls);
                println!(
                    "{}: {passed}/{repeat} runs passed; wall median {:.2}s (min {:.2}s, max {:.2}s)",
                    found.id, f.median, f.min, f.max
                );
            }
            Ok(passed == repeat.max(1))
        }
        Command::Bench {
            lab,
            runs,
            json,
            opts,
        } => {
            let found = lab::resolve(&lab, &lab::catalog()?)?;
            let figures = bench::bench(&found, &opts.options()?, runs.max(1))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&figures)?);
            } else {
                print!("{}", bench::render(&found.id, runs, &figures));
            }
            Ok(true)
        }
        Command::Check(args) => check::run(args),
        Command::List => {
            for l in lab::catalog()? {
                match lab::load(&l.spec_path()) {
                    Ok(spec) => println!("{:<22} {}", l.id, spec.title),
                    Err(e) => println!("{:<22} (broken: {e:#})", l.id),
                }
            }
            Ok(true)
        }
        Command::Kernel {
            src,
            rebuild,
            fragments,
        } => {
            setup::ensure(true, src.kernel_src.as_deref())?;
            let source = kernel::locate(src.kernel_src.as_deref())?;
            let k = kernel::ensure(&source, &kernel::build_fragments(&fragments)?, rebuild)?;
            eprintln!(
                "kernel {} ({})",
                k.key,
                if k.built { "built now" } else { "cached" }
            );
            println!("{}", k.image.display());
            Ok(true)
        }
        Command::Mutants {
            src,
            mutants,
            only,
            labs,
            no_selftests,
            accel,
            no_install,
            timeout_factor,
        } => {
            let project = cache::project_root();
            let set = mutants::load(&project.join(&mutants), &only)?;
            let (selected, selftests) = check::select(&labs, &lab::catalog()?)?;
            let opts = check::CheckOptions {
                labs: selected,
                kernels: vec![acquire::KernelChoice::Source(src.kernel_src)],
                repeat: 1,
                // A failure that passes on a retry is flaky, and catches nothing.
                retries: 1,
                shard: None,
                run: lab::RunOptions {
                    kernel: acquire::KernelChoice::default(),
                    accel,
                    rebuild_kernel: false,
                    install: !no_install,
                    timeout: None,
                    sets: vec![],
                    shell: false,
                    kernel_args: vec![],
                    mglru: None,
                    extra_fragments: vec![],
                },
                modes: vec![check::Mode::Lab],
                selftests: selftests && !no_selftests,
                timeout_factor,
                out: cache::target_dir()?.join("mutants"),
                declared: vec![],
                baseline: None,
            };
            let (unreliable, results) = mutants::run(&set, &opts)?;
            print!("\n{}", mutants::render(&unreliable, &results));
            println!("wrote {}", opts.out.join("mutants.json").display());
            Ok(true)
        }
        Command::Readme { labs, check } => {
            let all = lab::catalog()?;
            let chosen = match labs.is_empty() {
                true => all.clone(),
                false => labs
                    .iter()
                    .map(|l| lab::resolve(l, &all))
                    .collect::<Result<_>>()?,
            };
            readme::run_cli(&chosen, check)
        }
        Command::Cache {
            action:
                CacheAction::Gc {
                    max_size,
                    max_age_days,
                    dry_run,
                },
        } => {
            let bounds = gc::Bounds {
                max_size,
                max_age: std::time::Duration::from_secs(max_age_days * 24 * 3600),
            };
            gc::command(bounds, dry_run)
        }
        Command::Setup => {
            setup::ensure(true, None)?;
            eprintln!("setup: everything kernel-lab needs is installed");
            Ok(true)
        }
    }
}
