//! Running one step: sleeps and sysctls in the agent, workloads in a child process (its output
//! drained while it runs, a per-result timeout, a background holder's `ready`).

use crate::agent::sys::{self, Waited};
use crate::agent::{
    cgroups::cgroup_dir, emit::Emitter, health::kill_fault, sample::sample, timeline::Ticker,
};
use crate::{Result, write};
use guest::event::Exit;
use guest::parse::count_ktap_results;
use guest::spec::{LabSpec, Step, StepKind};
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How a step ended: its workload's exit and output, when its work was done, and the counters
/// sampled at that moment (a workload that finished stops itself there, still holding its
/// memory, until they are read).
pub struct StepOutcome {
    pub exit: Exit,
    pub stderr: String,
    pub stdout: String,
    pub done: Instant,
    /// `after:<step>` as sampled while the finished workload held its memory.
    pub held: Option<BTreeMap<String, u64>>,
}

impl StepOutcome {
    pub fn ok() -> Self {
        StepOutcome {
            exit: Exit::Exited { code: 0 },
            stderr: String::new(),
            stdout: String::new(),
            done: Instant::now(),
            held: None,
        }
    }
}

/// The environment variable that asks a worker to stop itself (SIGSTOP) when its work is done.
pub const HOLD_ENV: &str = "KERNEL_LAB_HOLD";

/// Runs one step; workloads run in a child process and their ending is the result, with what
/// it wrote to stderr and stdout.
pub fn run_step(
    spec: &LabSpec,
    step: &Step,
    probe: &BTreeMap<String, u64>,
    out: &mut Emitter,
    holders: &mut Vec<std::process::Child>,
    workers: &mut BTreeMap<String, String>,
) -> Result<StepOutcome> {
    let mut ticker = Ticker::new(spec, step);
    if let Some(done) = run_in_agent(step, &mut ticker, out) {
        done?;
        ticker.finish(out);
        return Ok(StepOutcome::ok());
    }
    let mut child = spawn_worker(spec, step)?;
    let cgroup = step.joins().unwrap_or("root").to_string();
    workers.insert(child.id().to_string(), cgroup);
    if step.background() && holds(&mut child, &mut ticker, out) {
        holders.push(child);
        ticker.finish(out);
        return Ok(StepOutcome {
            exit: Exit::Holding,
            ..StepOutcome::ok()
        });
    }
    wait_for(spec, step, probe, child, &mut ticker, out)
}

/// The steps the agent runs itself (a sleep, sysctls), with the timeline going on; None for a
/// workload.
fn run_in_agent(step: &Step, ticker: &mut Ticker, out: &mut Emitter) -> Option<Result<()>> {
    match &step.kind {
        StepKind::Sleep { ms } => {
            let until = Instant::now() + Duration::from_millis(*ms);
            while Instant::now() < until {
                ticker.tick(out);
                std::thread::sleep(
                    until
                        .saturating_duration_since(Instant::now())
                        .min(Duration::from_millis(5)),
                );
            }
            Some(Ok(()))
        }
        StepKind::Sysctl { set } => Some(set.iter().try_for_each(|(key, value)| {
            write(&format!("/proc/sys/{}", key.replace('.', "/")), value)
        })),
        _ => None,
    }
}

/// The step's workload process (this binary as `worker`), its output piped; a foreground one
/// is asked to stop itself when its work is done (HOLD_ENV).
fn spawn_worker(spec: &LabSpec, step: &Step) -> Result<std::process::Child> {
    let json = serde_json::to_string(step).map_err(|e| e.to_string())?;
    let mut command = Command::new("/proc/self/exe");
    if !step.background() {
        command.env(HOLD_ENV, "1");
    }
    command
        .arg("worker")
        .arg(json)
        .arg(worker_dir(spec, step))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting the workload: {e}"))
}

/// Whether a background workload holds its memory now: it reports "ready" on stdout once its
/// memory is in place, then waits to be killed at the end of the lab; EOF instead of "ready"
/// means it died first. Its line is read on a thread, so that the timeline goes on while it
/// fills its memory.
fn holds(child: &mut std::process::Child, ticker: &mut Ticker, out: &mut Emitter) -> bool {
    let pipe = child.stdout.take();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        if let Some(mut pipe) = pipe {
            let mut byte = [0u8; 1];
            while pipe.read(&mut byte).map(|n| n == 1).unwrap_or(false) && byte[0] != b'\n' {
                line.push(byte[0] as char);
            }
        }
        let _ = tx.send(line);
    });
    let line = loop {
        match rx.try_recv() {
            Ok(line) => break line,
            Err(std::sync::mpsc::TryRecvError::Empty) => {
                ticker.tick(out);
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(std::sync::mpsc::TryRecvError::Disconnected) => break String::new(),
        }
    };
    line == "ready"
}

/// Waits for a workload to end, its output drained, the timeline ticking: a foreground
/// workload that stopped itself is sampled (still holding its memory) and continued; an exec
/// step's program is killed when its per-result timeout passes (or as a fault asks).
fn wait_for(
    spec: &LabSpec,
    step: &Step,
    probe: &BTreeMap<String, u64>,
    mut child: std::process::Child,
    ticker: &mut Ticker,
    out: &mut Emitter,
) -> Result<StepOutcome> {
    // Drained while it runs, so that a chatty program never blocks on a full pipe.
    let drain = |p: Option<Box<dyn Read + Send>>| Drain::start(p);
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let mut watch = Watch::new(step);
    let (mut done, mut held) = (None, None);
    let status = loop {
        match sys::wait_nohang(child.id()) {
            Err(e) => return Err(format!("waiting for the workload: {e}")),
            Ok(Waited::Running) => {
                watch.saw(count_ktap_results(&stdout.text()), child.id());
                ticker.tick(out);
                std::thread::sleep(Duration::from_millis(2));
            }
            Ok(Waited::Stopped) => {
                // Its work is done and it still holds its memory: the step's final samples now.
                done = Some(Instant::now());
                ticker.finish(out);
                held = Some(sample(spec, probe));
                sys::kill(child.id(), libc::SIGCONT);
            }
            Ok(Waited::Ended(status)) => break status,
        }
    };
    if done.is_none() {
        ticker.finish(out); // it died, or an exec step's program ended
    }
    // Children a killed program left behind may hold its pipes open: wait for them a little,
    // then take what arrived.
    let deadline = Instant::now() + Duration::from_secs(2);
    while !(stdout.finished() && stderr.finished()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut err = stderr.text();
    if let Some(t) = watch.timed_out {
        err.push_str(&format!(
            "{TIMEOUT_NOTE} {}s after {} results: killed\n",
            t.as_secs(),
            watch.results
        ));
    }
    Ok(StepOutcome {
        exit: exit_of(status)?,
        stderr: err,
        stdout: stdout.text(),
        done: done.unwrap_or_else(Instant::now),
        held,
    })
}

/// A running program's KTAP results, against its per-result timeout and an injected kill.
struct Watch {
    kill_after: Option<usize>,
    per_result: Option<Duration>,
    results: usize,
    last_result: Instant,
    timed_out: Option<Duration>,
}

impl Watch {
    fn new(step: &Step) -> Watch {
        Watch {
            kill_after: kill_fault(step.name()),
            per_result: step.result_timeout_secs().map(Duration::from_secs),
            results: 0,
            last_result: Instant::now(),
            timed_out: None,
        }
    }

    /// `n` results so far: the program `pid` is killed after N (a fault) or when no result
    /// came within the per-result timeout.
    fn saw(&mut self, n: usize, pid: u32) {
        if n != self.results {
            (self.results, self.last_result) = (n, Instant::now());
        }
        if self.kill_after.is_some_and(|k| n >= k) {
            // Fault injection: the program dies midway, as if OOM-killed.
            sys::kill(pid, libc::SIGKILL);
        }
        if let Some(t) = self.per_result
            && self.timed_out.is_none()
            && self.last_result.elapsed() > t
        {
            self.timed_out = Some(t);
            sys::kill(pid, libc::SIGKILL);
        }
    }
}

/// Starts the line the agent adds to an exec step's stderr when it killed the program for its
/// per-result timeout (the host reads it back).
pub const TIMEOUT_NOTE: &str = guest::event::RESULT_TIMEOUT_NOTE;

/// A pipe read to its end on a thread; what arrived so far can be taken at any time.
pub struct Drain {
    text: std::sync::Arc<std::sync::Mutex<String>>,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Drain {
    pub fn start(pipe: Option<Box<dyn Read + Send>>) -> Drain {
        let d = Drain {
            text: Default::default(),
            done: Default::default(),
        };
        let (text, done) = (d.text.clone(), d.done.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            if let Some(mut pipe) = pipe {
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if let Ok(mut t) = text.lock() {
                        t.push_str(&String::from_utf8_lossy(&buf[..n]));
                    }
                }
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        d
    }

    pub fn text(&self) -> String {
        self.text.lock().map(|t| t.clone()).unwrap_or_default()
    }

    pub fn finished(&self) -> bool {
        self.done.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// How a workload process ended.
pub fn exit_of(status: std::process::ExitStatus) -> Result<Exit> {
    match (status.code(), status.signal()) {
        (Some(code), _) => Ok(Exit::Exited { code }),
        (None, Some(signal)) => Ok(Exit::Signaled { signal }),
        (None, None) => Err(format!("workload ended strangely: {status:?}")),
    }
}

/// The cgroup directory a step's worker joins ("" for none: the root, or a reclaim step).
pub fn worker_dir(spec: &LabSpec, step: &Step) -> String {
    step.joins()
        .map(|cg| cgroup_dir(spec, cg))
        .unwrap_or_default()
}
