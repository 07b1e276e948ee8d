//! The result stream: framed JSON lines that the agent writes on ttyS1 and the host decodes.
//!
//! Every line is a [`Frame`] with a sequence number starting at 0; the last one carries
//! [`Event::End`] with the number of frames before it. A stream without its end, with a gap in
//! the numbering or with a garbled line is incomplete, and an incomplete run is never a pass.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// One line of the result stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Frame {
    pub seq: u64,
    /// Guest uptime (CLOCK_BOOTTIME) in milliseconds when the event was sent.
    pub t_ms: u64,
    pub event: Event,
}

/// What the agent reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Event {
    /// The agent runs as /init and has opened the result port.
    Hello {
        kernel: String,
    },
    /// Set-up (mounts, swap, cgroups, sysctls) is done; the first step starts next.
    Ready,
    /// Every counter read at one moment, keyed like `vmstat.pgscan_kswapd`, `W/memory.current`.
    Sample {
        label: String,
        values: BTreeMap<String, u64>,
    },
    StepStart {
        step: String,
    },
    /// The vmscan trace lines recorded during a step, and which cgroup each workload pid was in.
    Trace {
        step: String,
        lines: Vec<String>,
        workers: BTreeMap<String, String>,
    },
    /// The timeline of a step: a few counters sampled in the guest while it runs (every
    /// `tick_ms` at first, less often as the step goes on) and sent in batches. `keys` names
    /// the columns of every row; a row is (guest uptime ms when sampled, values). A step's last
    /// row is its final sample: its workload done (still holding its memory) or dead.
    Ticks {
        step: String,
        keys: Vec<String>,
        rows: Vec<(u64, Vec<u64>)>,
        /// Guest time spent sampling and sending since the previous batch, in µs.
        cost_us: u64,
    },
    StepEnd {
        step: String,
        exit: Exit,
        wall_ms: u64,
        stderr: String,
        /// What an exec step's program printed (other steps print nothing).
        #[serde(default, skip_serializing_if = "String::is_empty")]
        stdout: String,
    },
    /// Something the agent could not do; the run is failed, but the agent carries on reporting.
    Error {
        context: String,
        message: String,
    },
    /// The kernel's own state at the end of the run, read by the agent just before `End`:
    /// `/proc/sys/kernel/tainted` (None when it could not be read) and the kernel log's records
    /// at warning level or more severe (from /dev/kmsg, whatever the console's loglevel).
    Health {
        tainted: Option<u64>,
        log: Vec<KmsgRecord>,
        /// Records not sent: overwritten in the kernel's ring buffer before they were read, or
        /// beyond [`HEALTH_LOG_CAP`].
        #[serde(default)]
        dropped: u64,
    },
    /// The last frame: `frames` counts the frames sent before it.
    End {
        frames: u64,
    },
}

/// The line an exec step's stderr ends with when the agent killed the program because no
/// KTAP result came for `result_timeout_secs` (`<note> 300s after 4 results: killed`).
pub const RESULT_TIMEOUT_NOTE: &str = "kernel-lab: no test result for";

/// At most this many kernel log records travel in one [`Event::Health`].
pub const HEALTH_LOG_CAP: usize = 2000;

/// One record of the kernel log (/dev/kmsg): its syslog level (0 emerg ... 7 debug) and text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KmsgRecord {
    pub level: u8,
    pub text: String,
}

impl KmsgRecord {
    /// Parses one record as /dev/kmsg returns it: `prio,seq,usec,flags[,...];text` and
    /// continuation lines (` KEY=value`) that are dropped. `prio` is facility * 8 + level.
    pub fn parse(record: &str) -> Option<KmsgRecord> {
        let (head, text) = record.split_once(';')?;
        let prio: u32 = head.split(',').next()?.trim().parse().ok()?;
        let text = text.split('\n').next().unwrap_or_default();
        Some(KmsgRecord {
            level: (prio & 7) as u8,
            text: text.to_string(),
        })
    }
}

/// How a workload process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Exit {
    Exited {
        code: i32,
    },
    Signaled {
        signal: i32,
    },
    /// A background step whose process is ready and holds its memory until the lab ends.
    Holding,
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Exit::Exited { code } => write!(f, "exited {code}"),
            Exit::Signaled { signal } => write!(f, "killed by {}", signal_name(signal)),
            Exit::Holding => write!(f, "holding its memory in the background"),
        }
    }
}

/// The signals a workload is likely to die of, by name; others read `signal N`.
const SIGNALS: &[(i32, &str)] = &[
    (6, "SIGABRT"),
    (7, "SIGBUS"),
    (9, "SIGKILL"),
    (11, "SIGSEGV"),
    (15, "SIGTERM"),
];

/// `9` -> `SIGKILL`; the names a workload is likely to die of.
pub fn signal_name(signal: i32) -> String {
    match SIGNALS.iter().find(|(n, _)| *n == signal) {
        Some((_, name)) => name.to_string(),
        None => format!("signal {signal}"),
    }
}

/// `SIGKILL` or `signal 9` -> 9; the error names the closest signal.
fn signal_number(text: &str) -> Result<i32, String> {
    if let Some((n, _)) = SIGNALS.iter().find(|(_, name)| *name == text) {
        return Ok(*n);
    }
    if let Some(n) = text
        .strip_prefix("signal ")
        .and_then(|n| n.trim().parse().ok())
    {
        return Ok(n);
    }
    let closest = SIGNALS
        .iter()
        .map(|(_, name)| name)
        .min_by_key(|name| crate::spec::edit_distance(text, name))
        .copied()
        .unwrap_or("SIGKILL");
    Err(format!(
        "no signal {text:?}; did you mean {closest}? (SIGABRT, SIGBUS, SIGKILL, SIGSEGV, SIGTERM, or `signal N`)"
    ))
}

/// Parses what [`Exit`]'s Display writes: `exited 0`, `killed by SIGKILL` (or `killed by
/// signal 9`), `holding its memory in the background`.
impl std::str::FromStr for Exit {
    type Err = String;
    fn from_str(s: &str) -> Result<Exit, String> {
        let t = s.trim();
        if t == Exit::Holding.to_string() {
            return Ok(Exit::Holding);
        }
        if let Some(code) = t.strip_prefix("exited ") {
            let code = code
                .trim()
                .parse()
                .map_err(|_| format!("{s:?}: the exit code must be a number, e.g. \"exited 0\""))?;
            return Ok(Exit::Exited { code });
        }
        if let Some(signal) = t.strip_prefix("killed by ") {
            let signal = signal_number(signal.trim()).map_err(|e| format!("{s:?}: {e}"))?;
            return Ok(Exit::Signaled { signal });
        }
        Err(format!(
            "{s:?}: a step ends \"exited N\", \"killed by SIGKILL\" or \"{}\"",
            Exit::Holding
        ))
    }
}

/// A decoded stream: every frame in order, and what was wrong with it if anything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stream {
    pub frames: Vec<Frame>,
    /// `None` when the stream ended with a valid [`Event::End`].
    pub problem: Option<String>,
}

impl Stream {
    pub fn is_complete(&self) -> bool {
        self.problem.is_none()
    }

    pub fn events(&self) -> impl Iterator<Item = &Event> {
        self.frames.iter().map(|f| &f.event)
    }
}

/// Decodes the bytes read from the result port. Never fails: what cannot be read is a `problem`.
pub fn decode_stream(bytes: &[u8]) -> Stream {
    let mut d = Decoder::default();
    d.feed(bytes);
    d.finish()
}

/// Decodes a result stream as it grows (while QEMU writes it): each feed hands over what was
/// appended since the last, and each complete line is decoded once; [`Decoder::finish`] takes
/// the last, unterminated line and says what is wrong with the stream, if anything. After a
/// problem nothing more is read: what came before it is kept.
#[derive(Debug, Default)]
pub struct Decoder {
    stream: Stream,
    /// The bytes of a line not terminated yet.
    partial: Vec<u8>,
    /// Lines seen so far, for the line numbers of problems.
    lines: usize,
    ended: bool,
}

impl Decoder {
    /// Decodes the complete lines of `bytes` (which follow what was fed before); returns the
    /// frames they held.
    pub fn feed(&mut self, bytes: &[u8]) -> &[Frame] {
        let before = self.stream.frames.len();
        if self.stream.problem.is_some() {
            return &[];
        }
        let mut buf = std::mem::take(&mut self.partial);
        buf.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(n) = buf[start..].iter().position(|b| *b == b'\n') {
            self.line(&buf[start..start + n]);
            start += n + 1;
            if self.stream.problem.is_some() {
                return &self.stream.frames[before..];
            }
        }
        buf.drain(..start);
        self.partial = buf;
        &self.stream.frames[before..]
    }

    /// The frames decoded so far.
    pub fn frames(&self) -> &[Frame] {
        &self.stream.frames
    }

    /// The stream: the last line (unterminated) decoded too, and its problem if it has one.
    pub fn finish(mut self) -> Stream {
        if self.stream.problem.is_none() {
            let last = std::mem::take(&mut self.partial);
            self.line(&last);
        }
        if self.stream.problem.is_none() && !self.ended {
            self.stream.problem = Some(match self.stream.frames.last() {
                None => "no frame arrived from the agent".into(),
                Some(f) => format!("the stream stops after frame {} without its end", f.seq),
            });
        }
        self.stream
    }

    /// One line: a frame in sequence, or the stream's problem.
    fn line(&mut self, raw: &[u8]) {
        self.lines += 1;
        let i = self.lines;
        let text = String::from_utf8_lossy(raw);
        let line = text.trim_matches(|c: char| c == '\r' || c == '\0' || c.is_whitespace());
        if line.is_empty() {
            return;
        }
        if self.ended {
            self.stream.problem = Some(format!("line {i}: data after the end frame"));
            return;
        }
        let frame: Frame = match serde_json::from_str(line) {
            Ok(f) => f,
            Err(e) => {
                self.stream.problem = Some(format!("line {i}: garbled frame ({e})"));
                return;
            }
        };
        let expected = self.stream.frames.len() as u64;
        if frame.seq != expected {
            self.stream.problem = Some(format!(
                "line {i}: frame {} follows frame {} (frames were lost)",
                frame.seq,
                expected as i64 - 1
            ));
            return;
        }
        if let Event::End { frames } = frame.event {
            if frames != expected {
                self.stream.problem = Some(format!(
                    "end frame counts {frames} frames, {expected} arrived"
                ));
                return;
            }
            self.ended = true;
        }
        self.stream.frames.push(frame);
    }
}

/// Encodes one frame as a line (with its newline).
pub fn encode_frame(frame: &Frame) -> String {
    let mut line = serde_json::to_string(frame).expect("frames always serialize");
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(events: Vec<Event>) -> String {
        events
            .into_iter()
            .enumerate()
            .map(|(i, event)| {
                encode_frame(&Frame {
                    seq: i as u64,
                    t_ms: i as u64 * 10,
                    event,
                })
            })
            .collect()
    }

    fn good() -> Vec<Event> {
        vec![
            Event::Hello {
                kernel: "6.12.117".into(),
            },
            Event::StepEnd {
                step: "anon".into(),
                exit: Exit::Signaled { signal: 9 },
                wall_ms: 5,
                stderr: String::new(),
                stdout: "ok 1 t\n".into(),
            },
            Event::End { frames: 2 },
        ]
    }

    #[test]
    fn complete_stream_decodes() {
        let s = decode_stream(frames(good()).replace('\n', "\r\n").as_bytes());
        assert!(s.is_complete(), "{:?}", s.problem);
        assert_eq!(s.frames.len(), 3);
    }

    #[test]
    fn truncation_is_detected() {
        let text = frames(good());
        let cut = &text[..text.len() - 10];
        let s = decode_stream(cut.as_bytes());
        assert!(s.problem.unwrap().contains("garbled"));
        let lines: Vec<&str> = text.lines().take(2).collect();
        let s = decode_stream(lines.join("\n").as_bytes());
        assert!(s.problem.unwrap().contains("without its end"));
        assert!(decode_stream(b"").problem.unwrap().contains("no frame"));
    }

    #[test]
    fn lost_and_extra_frames_are_detected() {
        let text = frames(good());
        let mut lines: Vec<&str> = text.lines().collect();
        lines.remove(1);
        assert!(
            decode_stream(lines.join("\n").as_bytes())
                .problem
                .unwrap()
                .contains("lost")
        );
        let extra = format!("{text}{text}");
        assert!(
            decode_stream(extra.as_bytes())
                .problem
                .unwrap()
                .contains("after the end")
        );
    }

    #[test]
    fn fed_in_pieces_the_stream_decodes_as_in_one_piece() {
        let good = frames(good()).replace('\n', "\r\n");
        let mut lines: Vec<&str> = good.lines().collect();
        lines.remove(1);
        let lost = lines.join("\n");
        let cut = &good[..good.len() - 10];
        let extra = format!("{good}{good}");
        for text in [good.as_str(), &lost, cut, &extra, "", "\n\n", "garbage"] {
            let whole = decode_stream(text.as_bytes());
            for chunk in [1, 2, 7, 64] {
                let mut d = Decoder::default();
                let mut seen = 0;
                for piece in text.as_bytes().chunks(chunk) {
                    seen += d.feed(piece).len();
                }
                assert_eq!(seen, d.frames().len());
                assert_eq!(d.finish(), whole, "{text:?} in pieces of {chunk}");
            }
        }
    }

    #[test]
    fn kmsg_records_give_their_level_and_first_line() {
        let r = KmsgRecord::parse(
            "4,120,5000,-;WARNING: CPU: 0 PID: 1 at mm/x.c:3 f+0x1\n SUBSYSTEM=cpu\n",
        )
        .unwrap();
        assert_eq!(r.level, 4);
        assert_eq!(r.text, "WARNING: CPU: 0 PID: 1 at mm/x.c:3 f+0x1");
        // A record written from user space carries the user facility (1): level 12 & 7 = 4.
        assert_eq!(KmsgRecord::parse("12,7,1,-;hello").unwrap().level, 4);
        assert_eq!(KmsgRecord::parse("0,1,2,c;Kernel panic").unwrap().level, 0);
        assert!(KmsgRecord::parse("garbage").is_none());
    }

    #[test]
    fn exit_reads_like_a_fact() {
        assert_eq!(
            Exit::Signaled { signal: 9 }.to_string(),
            "killed by SIGKILL"
        );
        assert_eq!(Exit::Exited { code: 0 }.to_string(), "exited 0");
    }

    #[test]
    fn exits_parse_as_they_print() {
        for e in [
            Exit::Exited { code: 2 },
            Exit::Signaled { signal: 9 },
            Exit::Signaled { signal: 4 },
            Exit::Holding,
        ] {
            assert_eq!(e.to_string().parse::<Exit>(), Ok(e));
        }
        assert_eq!(
            "killed by signal 9".parse(),
            Ok(Exit::Signaled { signal: 9 })
        );
        let e = "killed by SIGKIL".parse::<Exit>().unwrap_err();
        assert!(e.contains("did you mean SIGKILL?"), "{e}");
        assert!("exited zero".parse::<Exit>().is_err());
        assert!("fine".parse::<Exit>().is_err());
    }
}
