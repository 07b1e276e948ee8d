//! The `--shell` console: what the user types reaches the guest only once the guest can read
//! it. Bytes that arrive while the kernel boots are lost in its UART set-up (the 8250 driver
//! empties the FIFO when it probes and opens the port: piped input lost its first characters,
//! `cat /sys/...` arriving as `/sys/...`), so QEMU reads a pipe that a relay fills from our
//! stdin once the agent says it is ready ([`Gate`]). On a terminal, raw mode is set as QEMU
//! itself would (keys go to the guest one by one, Ctrl-C included) and restored at the end.

use std::io::{IsTerminal, PipeWriter, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Opened when the guest is ready for input; the relay holds what was typed until then.
#[derive(Clone, Default)]
pub struct Gate(Arc<AtomicBool>);

impl Gate {
    pub fn open(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_open(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// The terminal's settings before raw mode, restored on drop.
pub struct RawMode(Option<libc::termios>);

impl RawMode {
    /// Raw mode on stdin when it is a terminal (as QEMU's `-chardev stdio,signal=off` sets it).
    pub fn enter() -> RawMode {
        if !std::io::stdin().is_terminal() {
            return RawMode(None);
        }
        // SAFETY: tcgetattr/tcsetattr on fd 0 with termios structs we own.
        unsafe {
            let mut old: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut old) != 0 {
                return RawMode(None);
            }
            let mut t = old;
            t.c_iflag &= !(libc::IGNBRK
                | libc::BRKINT
                | libc::PARMRK
                | libc::ISTRIP
                | libc::INLCR
                | libc::IGNCR
                | libc::ICRNL
                | libc::IXON);
            t.c_oflag |= libc::OPOST;
            t.c_lflag &= !(libc::ECHO | libc::ECHONL | libc::ICANON | libc::IEXTEN | libc::ISIG);
            t.c_cflag &= !(libc::CSIZE | libc::PARENB);
            t.c_cflag |= libc::CS8;
            t.c_cc[libc::VMIN] = 1;
            t.c_cc[libc::VTIME] = 0;
            libc::tcsetattr(0, libc::TCSANOW, &t);
            RawMode(Some(old))
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(old) = &self.0 {
            // SAFETY: restoring the settings read in `enter`.
            unsafe { libc::tcsetattr(0, libc::TCSANOW, old) };
        }
    }
}

/// Copies our stdin to `to_qemu` from the moment `gate` opens (what came before is kept and
/// sent then); the pipe closes at stdin's end. The thread ends with the process.
pub fn relay(mut to_qemu: PipeWriter, gate: Gate) {
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut held = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = match stdin.read(&mut buf) {
                Ok(0) | Err(_) => 0,
                Ok(n) => n,
            };
            held.extend_from_slice(&buf[..n]);
            while !gate.is_open() {
                std::thread::sleep(Duration::from_millis(20));
            }
            if to_qemu.write_all(&held).is_err() || n == 0 {
                return;
            }
            held.clear();
        }
    });
}
