//! Running one step: sleeps and sysctls in the agent, workloads in a child process (its output
//! drained while it runs, a per-result timeout, a background holder's `ready`).

use crate::agent::sys::{self, Waited};
use crate::agent::{cgroups::*, emit::*, health::*, sample::*, timeline::*};
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
            ticker.finish(out);
            return Ok(StepOutcome::ok());
        }
        StepKind::Sysctl { set } => {
            for (key, value) in set {
                write(&format!("/proc/sys/{}", key.replace('.', "/")), value)?;
            }
            ticker.finish(out);
            return Ok(StepOutcome::ok());
        }
        _ => {}
    }
    let json = serde_json::to_string(step).map_err(|e| e.to_string())?;
    let mut command = Command::new("/proc/self/exe");
    if !step.background() {
        command.env(HOLD_ENV, "1");
    }
    let mut child = command
        .arg("worker")
        .arg(json)
        .arg(worker_dir(spec, step))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting the workload: {e}"))?;
    let cgroup = step.joins().unwrap_or("root").to_string();
    workers.insert(child.id().to_string(), cgroup);
    if step.background() {
        // A holder reports "ready" on stdout once its memory is in place, then waits to be
        // killed at the end of the lab. EOF instead of "ready" means it died first.
        // Its line is read on a thread, so that the timeline goes on while it fills its memory.
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
        if line == "ready" {
            holders.push(child);
            ticker.finish(out);
            return Ok(StepOutcome {
                exit: Exit::Holding,
                ..StepOutcome::ok()
            });
        }
    }
    // Drained while it runs, so that a chatty program never blocks on a full pipe.
    let stdout = Drain::start(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = Drain::start(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let kill_after = kill_fault(step.name());
    let per_result = step.result_timeout_secs().map(Duration::from_secs);
    let (mut results, mut last_result) = (0, Instant::now());
    let mut timed_out = None;
    let (mut done, mut held) = (None, None);
    let status = loop {
        match sys::wait_nohang(child.id()) {
            Err(e) => return Err(format!("waiting for the workload: {e}")),
            Ok(Waited::Running) => {
                let n = count_ktap_results(&stdout.text());
                if n != results {
                    (results, last_result) = (n, Instant::now());
                }
                if kill_after.is_some_and(|k| n >= k) {
                    // Fault injection: the program dies midway, as if OOM-killed.
                    sys::kill(child.id(), libc::SIGKILL);
                }
                if let Some(t) = per_result
                    && timed_out.is_none()
                    && last_result.elapsed() > t
                {
                    timed_out = Some(t);
                    sys::kill(child.id(), libc::SIGKILL);
                }
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
    if let Some(t) = timed_out {
        err.push_str(&format!(
            "{TIMEOUT_NOTE} {}s after {results} results: killed\n",
            t.as_secs()
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
