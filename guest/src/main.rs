//! The guest agent: runs as /init in the lab VM, sets the lab up, runs its steps, reports, powers off.
//!
//! It is PID 1, so it never panics or exits its way out: every failure becomes an `Error` event,
//! the stream always ends with `End`, and the VM always powers off. Workloads run in child
//! processes (this binary again, as `/init worker <step-json> <cgroup-dir>`) that move themselves
//! into their cgroup (v2, or v1 for a lab's v1 groups) before touching memory; the agent itself stays in the root cgroup with
//! oom_score_adj -1000.

use agent::sys;
use guest::counters::FAMILIES;
use guest::event::Event;
use guest::spec::{LabSpec, Step};
use std::collections::BTreeMap;
use std::fs::{self};
use std::time::Instant;

/// The agent's concerns, one module each (guest/src/agent/).
mod agent {
    pub mod cgroups;
    pub mod emit;
    pub mod health;
    pub mod sample;
    pub mod setup;
    pub mod shell;
    pub mod steps;
    pub mod sys;
    pub mod timeline;
    pub mod worker;
}
use agent::{
    cgroups::v1_to_v2,
    emit::Emitter,
    health::{inject_kernel_faults, kernel_health},
    sample::{read_family, sample},
    setup::setup,
    shell::{lab_step, shell},
    steps::run_step,
    worker::worker,
};

const PLAN: &str = "/lab/plan.json";
const CGROOT: &str = "/sys/fs/cgroup";
const DATA: &str = "/data";
const TMPFS: &str = "/lab-tmp";
const V1ROOT: &str = "/cgroup-v1";
const TRACEFS: &str = "/sys/kernel/tracing";

type Result<T, E = String> = std::result::Result<T, E>;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("worker") {
        // A workload child: its failures are its exit status and stderr, read by the agent.
        let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
        let code = match worker(arg(2), arg(3)) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("worker: {e}");
                2
            }
        };
        std::process::exit(code);
    }
    if args.get(1).map(String::as_str) == Some("step") {
        // `lab-step NAME` in the --shell: run one of the lab's steps by hand.
        std::process::exit(
            match lab_step(args.get(2).map(String::as_str).unwrap_or("")) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("lab-step: {e}");
                    1
                }
            },
        );
    }
    if std::env::var("kernel_lab").as_deref() == Ok("floor") {
        // `kernel_lab=floor` on the kernel command line: measure the boot floor, do nothing.
        sys::power_off();
        return;
    }
    std::panic::set_hook(Box::new(|info| eprintln!("agent: {info}")));
    let mut out = Emitter::open();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| agent(&mut out)));
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => out.error("agent", e),
        Err(_) => out.error("agent", "the agent panicked (see the console)".into()),
    }
    out.send(kernel_health());
    out.end();
    sys::power_off();
}

fn agent(out: &mut Emitter) -> Result<()> {
    out.send(Event::Hello {
        kernel: sys::kernel_release(),
    });
    if std::env::var("kernel_lab").as_deref() == Ok("crash") {
        // Fault injection for kernel-lab's own tests (`--kernel-arg kernel_lab=crash`): PID 1
        // dies without its end frame, as a real crash would.
        std::process::abort();
    }
    let plan = fs::read_to_string(PLAN).map_err(|e| format!("reading {PLAN}: {e}"))?;
    let spec: LabSpec = serde_json::from_str(&plan).map_err(|e| format!("parsing {PLAN}: {e}"))?;
    let probe = setup(&spec)?;
    inject_kernel_faults();
    out.send(Event::Ready);
    out.send(Event::Sample {
        label: "start".into(),
        values: start_sample(&spec, &probe),
    });
    if std::env::var("kernel_lab").as_deref() == Ok("shell") {
        return shell(&spec);
    }
    let mut run = Run {
        spec: &spec,
        probe: &probe,
        holders: Vec::new(),
        workers: BTreeMap::new(),
    };
    let last_v1 = spec.last_v1_step();
    for (i, step) in spec.steps.iter().enumerate() {
        run.step(step, Some(i) == last_v1, out)?;
    }
    for mut h in run.holders {
        let _ = h.kill();
        let _ = h.wait();
    }
    Ok(())
}

/// The first sample, with the zone watermarks once for the timeline's reference lines (when
/// the lab does not sample them anyway).
fn start_sample(spec: &LabSpec, probe: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    let mut start = sample(spec, probe);
    if let Some(f) = FAMILIES
        .iter()
        .find(|f| f.prefix == "zoneinfo." && !spec.refers_to(f.prefix))
    {
        let zones = read_family(f, "").into_iter().flatten();
        start.extend(zones.map(|(k, n)| (format!("{}{k}", f.prefix), n)));
    }
    start
}

/// The lab's steps as they run: the background workloads holding memory, and which cgroup
/// each workload's pid is in (for the trace).
struct Run<'a> {
    spec: &'a LabSpec,
    probe: &'a BTreeMap<String, u64>,
    holders: Vec<std::process::Child>,
    workers: BTreeMap<String, String>,
}

impl Run<'_> {
    /// One step: its start, its end (or error), its trace, its `after:` sample; `last_v1`: the
    /// last step in v1 groups, after which the memory controller moves to v2.
    fn step(&mut self, step: &Step, last_v1: bool, out: &mut Emitter) -> Result<()> {
        let spec = self.spec;
        if spec.vm.trace {
            // Opening `trace` for writing with truncation empties the ring buffer.
            let _ = fs::write(format!("{TRACEFS}/trace"), "");
        }
        out.send(Event::StepStart {
            step: step.name().into(),
        });
        let started = Instant::now();
        let mut held = None;
        let ran = run_step(
            spec,
            step,
            self.probe,
            out,
            &mut self.holders,
            &mut self.workers,
        );
        match ran {
            Ok(o) => {
                held = o.held;
                out.send(Event::StepEnd {
                    step: step.name().into(),
                    exit: o.exit,
                    wall_ms: o.done.duration_since(started).as_millis() as u64,
                    stderr: o.stderr,
                    stdout: o.stdout,
                })
            }
            Err(e) => out.error(&format!("step {}", step.name()), e),
        }
        if spec.vm.trace {
            out.send(Event::Trace {
                step: step.name().into(),
                lines: trace_lines(),
                workers: self.workers.clone(),
            });
        }
        let mut values = held.unwrap_or_else(|| sample(spec, self.probe));
        let mut switched = Ok(());
        if last_v1 {
            // The v1 groups go, the memory controller moves to v2 and the v2 groups appear:
            // the sample keeps the v1 groups' files as they were after the step, and adds the
            // v2 groups (at zero) so that the next step has its "before".
            switched = v1_to_v2(spec);
            for (k, v) in sample(spec, self.probe) {
                values.insert(k, v);
            }
        }
        out.send(Event::Sample {
            label: format!("after:{}", step.name()),
            values,
        });
        switched
    }
}

/// The step's trace: comments dropped and runs of spaces squeezed (the same fields, fewer
/// bytes).
fn trace_lines() -> Vec<String> {
    let text = read(&format!("{TRACEFS}/trace")).unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

fn read(path: &str) -> Option<String> {
    fs::read_to_string(path).ok()
}

fn write(path: &str, value: &str) -> Result<()> {
    fs::write(path, value).map_err(|e| format!("writing {value:?} to {path}: {e}"))
}

fn mount(src: &str, dst: &str, fstype: &str, flags: libc::c_ulong) -> Result<()> {
    mount_with(src, dst, fstype, flags, None)
}

/// mount(2) with an option string (e.g. the controller of a cgroup v1 hierarchy).
fn mount_with(
    src: &str,
    dst: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<()> {
    sys::mount(src, dst, fstype, flags, data)
        .map_err(|e| format!("mounting {fstype} on {dst}: {e}"))
}
