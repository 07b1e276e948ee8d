//! Writing framed events to the result port (ttyS1).

use crate::agent::sys;
use crate::mount;
use guest::event::{Event, Frame, encode_frame};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

pub const RESULT_PORT: &str = "/dev/ttyS1";

/// Writes framed events to the result port.
pub struct Emitter {
    port: Option<File>,
    seq: u64,
}

impl Emitter {
    pub fn open() -> Emitter {
        let _ = mount("devtmpfs", "/dev", "devtmpfs", 0);
        let port = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(RESULT_PORT)
            .map_err(|e| eprintln!("agent: cannot open {RESULT_PORT}: {e}"))
            .ok();
        if let Some(p) = &port {
            sys::set_raw(p);
        }
        Emitter { port, seq: 0 }
    }

    pub fn send(&mut self, event: Event) {
        let frame = Frame {
            seq: self.seq,
            t_ms: sys::uptime_ms(),
            event,
        };
        self.seq += 1;
        let line = encode_frame(&frame);
        if let Some(p) = &mut self.port
            && let Err(e) = p.write_all(line.as_bytes())
        {
            eprintln!("agent: writing the result port failed: {e}");
        }
    }

    pub fn error(&mut self, context: &str, message: String) {
        eprintln!("agent: {context}: {message}");
        self.send(Event::Error {
            context: context.into(),
            message,
        });
    }

    pub fn end(&mut self) {
        let frames = self.seq;
        self.send(Event::End { frames });
        if let Some(p) = &self.port {
            // The UART drains slowly: wait until every byte has left before powering off.
            sys::drain(p);
        }
    }
}
