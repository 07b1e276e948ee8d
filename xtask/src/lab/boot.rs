//! One boot of a lab spec: kernel, agent, initramfs and data disk prepared, QEMU run with
//! progress, the result stream and console collected and kept, and why the run is not valid.
//! Shared by labs, bench's floor and the kernel's selftests.

use super::RunOptions;
use crate::cache;
use crate::progress::{self, Phases};
use crate::{disk, health, initramfs, kernel, qemu, setup};
use anyhow::{Result, bail};
use guest::event::{Decoder, Event, Frame, Stream};
use guest::spec::LabSpec;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    if spec.vm.zswap {
        // Built in and off by default (kernel-configs/base.config): on for this lab only.
        words.push("zswap.enabled=1".into());
    }
    words
}

/// A per-run scratch directory under target/kernel-lab/tmp, removed on drop.
pub(super) fn scratch(prefix: &str) -> Result<tempfile::TempDir> {
    let root = cache::target_dir()?.join("tmp");
    std::fs::create_dir_all(&root)?;
    Ok(tempfile::Builder::new()
        .prefix(&format!("{prefix}-"))
        .tempdir_in(&root)?)
}

/// The files of one boot in its scratch directory: the initramfs QEMU loads, the console
/// log and the result stream it writes.
struct Files {
    initrd: PathBuf,
    console_log: PathBuf,
    results: PathBuf,
}

impl Files {
    fn in_dir(dir: &Path) -> Files {
        Files {
            initrd: dir.join("initramfs.cpio"),
            console_log: dir.join("console.log"),
            results: dir.join("results.jsonl"),
        }
    }

    /// The VM for a prepared kernel and agent with these files: 256M and 2 CPUs, no disk, no
    /// extra command line (a lab's boot says what differs).
    fn vm<'a>(&'a self, p: &'a Prepared) -> qemu::VmArgs<'a> {
        qemu::VmArgs {
            accel: p.accel,
            memory: 256 << 20,
            cpus: 2,
            kernel: &p.kernel.image,
            initrd: &self.initrd,
            data_disk: None,
            swap_disk: None,
            console_log: &self.console_log,
            results: &self.results,
            tsc_khz: qemu::tsc_khz_for(p.accel),
            hz: p.kernel.hz,
            extra_cmdline: vec![],
            numa_nodes: 1,
            console_stdio: false,
        }
    }
}

/// Boots the kernel with an /init that powers off at once (with `kernel_args` added to the
/// command line, as for the lab runs); returns QEMU's wall time.
pub fn floor(p: &Prepared, kernel_args: &[String]) -> Result<Duration> {
    let dir = scratch("floor")?;
    let files = Files::in_dir(dir.path());
    initramfs::write(&files.initrd, &p.agent, "", false, &[])?;
    let vm = qemu::VmArgs {
        extra_cmdline: [vec!["kernel_lab=floor".to_string()], kernel_args.to_vec()].concat(),
        ..files.vm(p)
    };
    let out = qemu::run(
        &qemu::argv(&vm),
        dir.path(),
        Duration::from_secs(60),
        None,
        || {},
    )?;
    match out.status {
        Some(s) if s.success() => Ok(out.wall),
        _ => bail!(
            "the floor boot did not power off cleanly; console:\n{}",
            progress::tail(&files.console_log, 20)
        ),
    }
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
    let files = Files::in_dir(scratch.path());
    phases.time("initramfs", || -> Result<()> {
        let plan = serde_json::to_string(spec)?;
        initramfs::write(&files.initrd, &p.agent, &plan, opts.shell, extra)
    })?;
    let data_disk = phases.time("disk", || disk::ensure(&disk::plan(spec)))?;
    let swap_disk = disk::swap_disk(spec, scratch.path())?;
    let vm = qemu::VmArgs {
        memory: spec.vm.memory.0,
        cpus: spec.vm.cpus,
        data_disk: data_disk.as_deref(),
        swap_disk: swap_disk.as_deref(),
        extra_cmdline: [guest_cmdline(spec, opts.shell), opts.kernel_args.clone()].concat(),
        numa_nodes: spec.vm.numa_nodes,
        console_stdio: opts.shell,
        ..files.vm(&p)
    };
    let timeout = match opts.shell {
        true => Duration::from_secs(opts.timeout.unwrap_or(24 * 3600)),
        false => Duration::from_secs(opts.timeout.unwrap_or(spec.vm.timeout_secs)),
    };
    let (outcome, stream) = run_following(spec, &vm, scratch.path(), timeout, opts.shell)?;
    phases.add("qemu", outcome.wall);
    // With --shell the console went to the terminal: there is no log of it to judge.
    let console = (!opts.shell).then(|| {
        let bytes = std::fs::read(&files.console_log).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    });
    let health = health::judge(&stream, console.as_deref());
    let mut problems = problems(&outcome, timeout, &stream);
    if !health.judged() {
        problems.push(silent_console(&outcome));
    }
    if let Some(panic) = &health.agent_died {
        problems.push(format!(
            "the agent (PID 1) died, so the kernel panicked: {panic}"
        ));
    }
    Ok(Booted {
        health,
        kept: keep_artifacts(&spec.id, &files.console_log, &files.results)?,
        problems,
        stream,
        kernel_built: p.kernel.built,
    })
}

/// Runs QEMU with progress (each step as it starts), reading the result stream as it grows;
/// returns how QEMU ended and the whole stream.
fn run_following(
    spec: &LabSpec,
    vm: &qemu::VmArgs,
    dir: &Path,
    timeout: Duration,
    interactive: bool,
) -> Result<(qemu::Outcome, Stream)> {
    let accel = match vm.accel {
        qemu::Accel::Kvm => "KVM",
        _ => "TCG",
    };
    progress::status(&format!(
        "{}: booting ({accel}, {} RAM, {} cpus) ...",
        spec.id, spec.vm.memory, spec.vm.cpus
    ));
    let mut follow = Follow::new(vm.results);
    let console = interactive.then(crate::console::Gate::default);
    let show = || {
        let new = follow.poll();
        // The shell's input flows once the agent is ready to read it.
        if let Some(gate) = &console
            && new.iter().any(|f| matches!(f.event, Event::Ready))
        {
            gate.open();
        }
        show_steps(&spec.id, new)
    };
    let outcome = qemu::run(&qemu::argv(vm), dir, timeout, console.as_ref(), show)?;
    progress::status_done(&format!(
        "{}: QEMU ran {:.2}s",
        spec.id,
        outcome.wall.as_secs_f64()
    ));
    Ok((outcome, follow.finish()))
}

/// Shows each step as the agent starts it (`new`: the frames that just arrived).
fn show_steps(id: &str, new: &[Frame]) {
    for f in new {
        if let Event::StepStart { step } = &f.event {
            let secs = f.t_ms as f64 / 1000.0;
            progress::status(&format!("{id}: step {step} (guest time {secs:.1}s) ..."));
        }
    }
}

/// The result stream read as QEMU writes it: each poll reads only what was appended since the
/// last and decodes only that (a long run's stream is never read or decoded twice).
struct Follow<'a> {
    path: &'a Path,
    file: Option<std::fs::File>,
    decoder: Decoder,
    buf: Vec<u8>,
}

impl<'a> Follow<'a> {
    fn new(path: &'a Path) -> Self {
        Follow {
            path,
            file: None,
            decoder: Decoder::default(),
            buf: Vec::new(),
        }
    }

    /// The frames that arrived since the last poll.
    fn poll(&mut self) -> &[Frame] {
        if self.file.is_none() {
            // QEMU creates the file when it starts.
            self.file = std::fs::File::open(self.path).ok();
        }
        self.buf.clear();
        if let Some(f) = &mut self.file {
            let _ = f.read_to_end(&mut self.buf);
        }
        self.decoder.feed(&self.buf)
    }

    /// The whole stream, once QEMU has ended.
    fn finish(mut self) -> Stream {
        self.poll();
        self.decoder.finish()
    }
}

/// Why a boot is not valid: QEMU killed at the timeout or failing, an incomplete stream; each
/// with what the agent was last seen doing.
fn problems(outcome: &qemu::Outcome, timeout: Duration, stream: &Stream) -> Vec<String> {
    let last_seen = last_seen(stream);
    let mut problems = Vec::new();
    match outcome.status {
        None => problems.push(format!(
            "the guest did not finish within {}s and QEMU was killed; {last_seen}",
            timeout.as_secs()
        )),
        Some(s) if !s.success() => problems.push(format!("QEMU exited with {s}")),
        Some(_) => {}
    }
    if let Some(problem) = &stream.problem {
        let seen = match outcome.status {
            None => String::new(),
            Some(_) => format!("; {last_seen}"),
        };
        problems.push(format!("result stream incomplete: {problem}{seen}"));
    }
    problems
}

/// Why a run whose kernel printed nothing (no kernel log, a captured console without one
/// line: [`health::Health::judged`]) failed: the missing stream says nothing about the agent. Seen with a KASAN vmlinux booted through its PVH
/// entry: a triple fault before the console existed, and QEMU (-no-reboot) exited 0 at once.
fn silent_console(outcome: &qemu::Outcome) -> String {
    let ran = match outcome.status {
        Some(_) => format!("QEMU exited after {:.2}s", outcome.wall.as_secs_f64()),
        None => "QEMU was killed at the timeout".to_string(),
    };
    format!(
        "the kernel printed nothing on its console ({ran}): it stopped before its first message, e.g. a fault at its entry that reset the guest; add --kernel-arg earlyprintk=serial,ttyS0 to see more, or try the same kernel as a bzImage"
    )
}

/// `last seen: step-start read at 2.31s guest uptime[, then timeline ticks until 5.00s]`.
fn last_seen(stream: &Stream) -> String {
    let is_tick = |f: &&Frame| matches!(f.event, Event::Ticks { .. });
    let meaningful = stream.frames.iter().rev().find(|f| !is_tick(f));
    let mut seen = match meaningful {
        Some(f) => format!(
            "last seen: {} at {:.2}s guest uptime",
            describe(&f.event),
            f.t_ms as f64 / 1000.0
        ),
        None => "nothing arrived from the agent".into(),
    };
    if let Some(f) = stream.frames.last().filter(is_tick) {
        let secs = f.t_ms as f64 / 1000.0;
        seen.push_str(&format!(", then timeline ticks until {secs:.2}s"));
    }
    seen
}

/// One event in a few words, for "last seen".
fn describe(e: &Event) -> String {
    match e {
        Event::Hello { .. } => "hello".into(),
        Event::Ready => "ready".into(),
        Event::Sample { label, .. } => format!("sample {label}"),
        Event::StepStart { step } => format!("step-start {step}"),
        Event::Ticks { step, .. } => format!("timeline samples of step {step}"),
        Event::Trace { step, .. } => format!("reclaim trace of step {step}"),
        Event::StepEnd { step, exit, .. } => format!("step-end {step} ({exit})"),
        Event::Error { context, message } => format!("error {context}: {message}"),
        Event::Health { .. } => "kernel health".into(),
        Event::End { .. } => "end".into(),
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
