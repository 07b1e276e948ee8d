//! The kernel's own health, read last (taint flags, kernel log records at warning level or
//! worse), and the faults kernel-lab's tests inject to check that it is read.

use crate::{read, write};
use guest::event::{Event, HEALTH_LOG_CAP, KmsgRecord};
use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;

/// Fault injection for kernel-lab's own tests, from the kernel command line
/// (`kernel_lab_fault=a,b`): `warn` writes a WARNING line at level 4 to the kernel log, `taint`
/// sets the kernel's W taint flag, `kill:STEP:N` kills STEP's program after N test results.
pub fn faults() -> Vec<String> {
    parse_faults(&std::env::var("kernel_lab_fault").unwrap_or_default())
}

fn parse_faults(words: &str) -> Vec<String> {
    words
        .split(',')
        .filter(|f| !f.is_empty())
        .map(str::to_string)
        .collect()
}

/// After how many test results STEP's program is to be killed (`kill:STEP:N`), if at all.
pub fn kill_fault(step: &str) -> Option<usize> {
    kill_after(&faults(), step)
}

fn kill_after(faults: &[String], step: &str) -> Option<usize> {
    faults.iter().find_map(|f| {
        let rest = f.strip_prefix("kill:")?;
        let (s, n) = rest.rsplit_once(':')?;
        (s == step).then(|| n.parse().ok()).flatten()
    })
}

pub fn inject_kernel_faults() {
    for f in faults() {
        let done = match f.as_str() {
            "warn" => write(
                "/dev/kmsg",
                "<4>WARNING: CPU: 0 PID: 1 at kernel-lab injected warning (kernel_lab_fault=warn)\n",
            ),
            // The W flag (bit 9): what a WARN_ON() leaves behind.
            "taint" => write("/proc/sys/kernel/tainted", "512"),
            _ => Ok(()),
        };
        if let Err(e) = done {
            eprintln!("agent: fault {f}: {e}");
        }
    }
}

/// The kernel's own state, read last: its taint flags and the kernel log's records at warning
/// level or more severe.
pub fn kernel_health() -> Event {
    let tainted = read("/proc/sys/kernel/tainted").and_then(|t| t.trim().parse().ok());
    let (mut log, mut dropped) = (Vec::new(), 0u64);
    if let Ok(mut kmsg) = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
    {
        let mut buf = vec![0u8; 8192];
        loop {
            match kmsg.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let Some(r) = KmsgRecord::parse(&String::from_utf8_lossy(&buf[..n])) else {
                        continue;
                    };
                    if r.level > 4 {
                        continue;
                    }
                    if log.len() < HEALTH_LOG_CAP {
                        log.push(r);
                    } else {
                        dropped += 1;
                    }
                }
                // EPIPE: records were overwritten before we read them; reading goes on.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => dropped += 1,
                Err(_) => break,
            }
        }
    }
    Event::Health {
        tainted,
        log,
        dropped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injected_faults_are_read_from_the_kernel_command_line_word() {
        let f = parse_faults("warn,kill:test_memcontrol:3,,taint,kill:a:b:2");
        assert_eq!(f, ["warn", "kill:test_memcontrol:3", "taint", "kill:a:b:2"]);
        assert_eq!(kill_after(&f, "test_memcontrol"), Some(3));
        // A step name may hold colons: N is after the last one.
        assert_eq!(kill_after(&f, "a:b"), Some(2));
        assert_eq!(kill_after(&f, "other"), None);
        assert_eq!(kill_after(&parse_faults("kill:s:x"), "s"), None);
        assert!(parse_faults("").is_empty());
    }
}
