//! Progress lines, phase timing and Ctrl-C/SIGTERM handling shared by every long step.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Installs the Ctrl-C / SIGTERM handler: long waits poll [`interrupted`] and clean up.
pub fn install_interrupt_handler() {
    let _ = ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            // A second Ctrl-C: the user really wants out.
            std::process::exit(130);
        }
    });
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// A status line that rewrites itself on a terminal and prints plainly elsewhere.
pub fn status(line: &str) {
    let mut err = std::io::stderr().lock();
    if std::io::stderr().is_terminal() {
        let width = 118;
        let shown: String = line.chars().take(width).collect();
        let _ = write!(err, "\r\x1b[2K  {shown}");
    } else {
        let _ = writeln!(err, "  {line}");
    }
    let _ = err.flush();
}

/// Ends a status line with a final message.
pub fn status_done(line: &str) {
    if std::io::stderr().is_terminal() {
        eprint!("\r\x1b[2K");
    }
    eprintln!("  {line}");
}

pub fn mmss(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// The last `n` lines of a text file (for console and build-log tails).
pub fn tail(path: &Path, n: usize) -> String {
    tail_since(path, 0, n)
}

/// [`tail`] of what was written to `path` after its first `start` bytes (one command's output
/// in a log that several append to).
pub fn tail_since(path: &Path, start: u64, n: usize) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let from = usize::try_from(start)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    let text = String::from_utf8_lossy(&bytes[from..]);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..]
        .iter()
        .map(|l| format!("    | {l}\n"))
        .collect()
}

/// Wall-clock phases of one command, in order.
#[derive(Debug, Default, Clone)]
pub struct Phases {
    pub list: Vec<(String, Duration)>,
}

impl Phases {
    /// Times `f` as the phase `name`.
    pub fn time<T>(&mut self, name: &str, f: impl FnOnce() -> T) -> T {
        let t = Instant::now();
        let out = f();
        self.list.push((name.to_string(), t.elapsed()));
        out
    }

    pub fn add(&mut self, name: &str, d: Duration) {
        self.list.push((name.to_string(), d));
    }

    pub fn render(&self) -> String {
        self.list
            .iter()
            .map(|(n, d)| format!("{n} {:.2}s", d.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
