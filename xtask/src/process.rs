//! One way to run a child process on the host: an argument vector (never a shell), in a process
//! group of its own, its pipes read while it runs, polled with an optional deadline. On a
//! timeout, a Ctrl-C or an early return the whole group (its compilers, its helpers) is
//! stopped and reaped: nothing is left running.

use crate::progress;
use anyhow::{Context, Result, bail};
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Where a child's output goes.
#[derive(Debug)]
pub enum Sink {
    /// Read into memory while it runs.
    Capture,
    /// Into the same capture as stdout (for stderr), in the order written.
    Merge,
    Null,
    /// This process's own stdout or stderr.
    Inherit,
    File(std::fs::File),
}

/// What a child reads on stdin.
enum Input {
    /// Nothing (or, [`Cmd::interactive`], this terminal).
    Default,
    /// These bytes, then end of file.
    Bytes(Vec<u8>),
    /// Whatever is written to this pipe (the `--shell` console's relay).
    Pipe(std::io::PipeReader),
}

/// A child process to run.
pub struct Cmd {
    cmd: Command,
    /// How messages name it: `make vmlinux`, `mkfs.ext4`.
    what: String,
    stdin: Input,
    stdout: Sink,
    stderr: Sink,
    interactive: bool,
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Exited(ExitStatus),
    /// Killed (with its group) when its time was up.
    TimedOut,
    /// Killed (with its group) because kernel-lab was interrupted (Ctrl-C, SIGTERM).
    Interrupted,
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Exited(s) => write!(f, "{s}"),
            Ended::TimedOut => f.write_str("killed at its timeout"),
            Ended::Interrupted => f.write_str("interrupted"),
        }
    }
}

/// A child that ran: how it ended, what it wrote (when captured), how long it took.
#[derive(Debug)]
pub struct Finished {
    pub ended: Ended,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub wall: Duration,
}

impl Finished {
    pub fn success(&self) -> bool {
        matches!(self.ended, Ended::Exited(s) if s.success())
    }

    /// What it wrote, stdout then stderr, as text.
    pub fn text(&self) -> String {
        let mut t = String::from_utf8_lossy(&self.stdout).into_owned();
        t.push_str(&String::from_utf8_lossy(&self.stderr));
        t
    }
}

impl Cmd {
    /// `program`, named `what` in messages; stdin empty, stdout and stderr captured.
    pub fn new(program: impl AsRef<OsStr>, what: &str) -> Cmd {
        Cmd {
            cmd: Command::new(program),
            what: what.to_string(),
            stdin: Input::Default,
            stdout: Sink::Capture,
            stderr: Sink::Capture,
            interactive: false,
        }
    }

    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Cmd {
        self.cmd.arg(a);
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, args: I) -> Cmd {
        self.cmd.args(args);
        self
    }

    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Cmd {
        self.cmd.env(k, v);
        self
    }

    pub fn dir(mut self, dir: &Path) -> Cmd {
        self.cmd.current_dir(dir);
        self
    }

    /// Bytes written to its stdin (then closed).
    pub fn stdin_bytes(mut self, bytes: Vec<u8>) -> Cmd {
        self.stdin = Input::Bytes(bytes);
        self
    }

    /// Its stdin is the read end of a pipe that someone else fills.
    pub fn stdin_pipe(mut self, pipe: std::io::PipeReader) -> Cmd {
        self.stdin = Input::Pipe(pipe);
        self
    }

    pub fn stdout(mut self, s: Sink) -> Cmd {
        self.stdout = s;
        self
    }

    pub fn stderr(mut self, s: Sink) -> Cmd {
        self.stderr = s;
        self
    }

    /// On this terminal: stdin and stdout inherited, and in the terminal's foreground process
    /// group (a group of its own could not read the terminal); only the child is killed.
    pub fn interactive(mut self) -> Cmd {
        self.interactive = true;
        self.stdout = Sink::Inherit;
        self
    }

    /// Starts it; the error names it.
    pub fn start(self) -> Result<Running> {
        let Cmd {
            mut cmd,
            what,
            stdin,
            stdout,
            stderr,
            interactive,
        } = self;
        let (input, bytes) = match (stdin, interactive) {
            (Input::Bytes(b), _) => (Stdio::piped(), Some(b)),
            (Input::Pipe(p), _) => (Stdio::from(p), None),
            (Input::Default, true) => (Stdio::inherit(), None),
            (Input::Default, false) => (Stdio::null(), None),
        };
        cmd.stdin(input);
        let merged = match stdout {
            Sink::Capture => {
                let (r, w) = std::io::pipe().context("creating a pipe")?;
                cmd.stdout(w.try_clone()?);
                Some((r, w))
            }
            s => {
                cmd.stdout(stdio(s)?);
                None
            }
        };
        let (out_reader, err_stdio) = match (merged, stderr) {
            (Some((r, w)), Sink::Merge) => (Some(r), Stdio::from(w)),
            (Some((r, _w)), s) => (Some(r), stdio(s)?),
            (None, s) => (None, stdio(s)?),
        };
        cmd.stderr(err_stdio);
        if !interactive {
            cmd.process_group(0);
        }
        let mut child = cmd.spawn().with_context(|| format!("starting {what}"))?;
        // The parent's copies of the pipes' write ends are closed with `cmd`.
        drop(cmd);
        let out = out_reader.map(drain);
        let err = child.stderr.take().map(drain);
        if let (Some(bytes), Some(mut pipe)) = (bytes, child.stdin.take()) {
            std::thread::spawn(move || pipe.write_all(&bytes));
        }
        Ok(Running {
            child: Some(child),
            what,
            group: !interactive,
            started: Instant::now(),
            out,
            err,
        })
    }

    /// Runs it to the end (or until `timeout`), reading what it writes.
    pub fn run(self, timeout: Option<Duration>) -> Result<Finished> {
        self.start()?
            .wait(Duration::from_millis(20), timeout, || {})
    }

    /// Runs it to the end; an error, with what it wrote, unless it succeeded.
    pub fn checked(self) -> Result<Finished> {
        let what = self.what.clone();
        let f = self.run(None)?;
        match f.ended {
            Ended::Exited(s) if s.success() => Ok(f),
            Ended::Exited(s) => bail!("{what} failed ({s}):\n{}", f.text().trim_end()),
            _ => bail!("interrupted: {what} was stopped"),
        }
    }
}

fn stdio(s: Sink) -> Result<Stdio> {
    Ok(match s {
        Sink::Capture | Sink::Merge => Stdio::piped(),
        Sink::Null => Stdio::null(),
        Sink::Inherit => Stdio::inherit(),
        Sink::File(f) => Stdio::from(f),
    })
}

/// Reads a pipe to its end on a thread; the bytes arrive on the channel.
fn drain(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx
}

/// A started child. Dropped before it ended (an early return, a panic), its group is killed.
pub struct Running {
    child: Option<Child>,
    what: String,
    group: bool,
    started: Instant,
    out: Option<mpsc::Receiver<Vec<u8>>>,
    err: Option<mpsc::Receiver<Vec<u8>>>,
}

impl Running {
    #[cfg(test)]
    fn id(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Waits until it exits, `timeout` passes or kernel-lab is interrupted (then its group is
    /// stopped); calls `on_tick` about every `every` meanwhile (progress).
    pub fn wait(
        mut self,
        every: Duration,
        timeout: Option<Duration>,
        mut on_tick: impl FnMut(),
    ) -> Result<Finished> {
        let ended = loop {
            let child = self.child.as_mut().expect("a running child");
            if let Some(status) = child
                .try_wait()
                .with_context(|| format!("waiting for {}", self.what))?
            {
                self.child = None;
                break Ended::Exited(status);
            }
            if progress::interrupted() {
                self.stop();
                break Ended::Interrupted;
            }
            if timeout.is_some_and(|t| self.started.elapsed() > t) {
                self.stop();
                break Ended::TimedOut;
            }
            on_tick();
            std::thread::sleep(every);
        };
        let wall = self.started.elapsed();
        // A grandchild outside the group may hold a pipe open: take what arrived by then.
        let take = |rx: Option<mpsc::Receiver<Vec<u8>>>| {
            rx.and_then(|rx| rx.recv_timeout(Duration::from_secs(2)).ok())
                .unwrap_or_default()
        };
        Ok(Finished {
            ended,
            stdout: take(self.out.take()),
            stderr: take(self.err.take()),
            wall,
        })
    }

    /// Stops the child and its group: SIGTERM, up to 200 ms to exit, then SIGKILL; reaped.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id() as libc::pid_t;
        let target = if self.group { -pid } else { pid };
        // SAFETY: kill(2) with our own child's pid (or its process group, which it leads);
        // the child is not reaped yet, so the pid cannot have been reused.
        unsafe { libc::kill(target, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_millis(200);
        while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(10));
        }
        // SAFETY: as above; a group whose leader exited may still hold its other members.
        unsafe { libc::kill(target, libc::SIGKILL) };
        let _ = child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_captured_and_failures_say_what_was_written() {
        let f = Cmd::new("echo", "echo").arg("hello").checked().unwrap();
        assert_eq!(f.stdout, b"hello\n");
        let e = Cmd::new("ls", "ls")
            .arg("/no/such/dir")
            .checked()
            .unwrap_err();
        let e = format!("{e:#}");
        assert!(e.starts_with("ls failed (exit status: 2):\n"), "{e}");
        assert!(e.contains("/no/such/dir"), "{e}");
        let e = Cmd::new("/no/such/program", "the program")
            .run(None)
            .unwrap_err();
        assert!(
            format!("{e:#}").starts_with("starting the program: "),
            "{e:#}"
        );
    }

    #[test]
    fn stdin_bytes_reach_the_child_and_stderr_merges_in_order() {
        let f = Cmd::new("cat", "cat")
            .stdin_bytes(b"abc".to_vec())
            .checked()
            .unwrap();
        assert_eq!(f.stdout, b"abc");
        let f = Cmd::new("ls", "ls")
            .args(["/", "/no/such/dir"])
            .stderr(Sink::Merge)
            .run(None)
            .unwrap();
        let text = String::from_utf8_lossy(&f.stdout);
        assert!(
            text.contains("/no/such/dir") && text.contains("proc"),
            "{text}"
        );
        assert!(f.stderr.is_empty());
    }

    #[test]
    fn a_timeout_stops_the_whole_group() {
        // `setsid`-free grandchildren: the sleeps run in the child's process group.
        let started = Instant::now();
        let f = Cmd::new("timeout", "timeout")
            .args(["60", "sleep", "60"])
            .run(Some(Duration::from_millis(300)))
            .unwrap();
        assert_eq!(f.ended, Ended::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(5));
        let r = Cmd::new("sleep", "sleep").arg("60").start().unwrap();
        let pid = r.id() as libc::pid_t;
        drop(r);
        // SAFETY: signal 0 only asks whether the pid exists.
        assert_ne!(
            unsafe { libc::kill(pid, 0) },
            0,
            "dropped: killed and reaped"
        );
    }
}
