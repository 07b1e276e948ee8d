//! The kernel's own health during a run: its taint flags and its log (from the agent's `Health`
//! event, all levels up to warning) and the console, judged as kernel CI systems judge them.
//!
//! Unhealthy: a splat (WARNING, BUG, Oops, a lockdep or RCU report, a panic), any record at
//! crit/alert/emerg level (as KernelCI fails a test on them), or a tainted kernel. Error and
//! warning level alone are not: the OOM killer's reports (the labs' subject) and microvm's
//! `..MP-BIOS bug: 8254 timer not connected` under TCG are logged there on a healthy kernel
//! (seen in the kernel logs of labs 3, 4, 7 and 9).
//!
//! One panic is not the kernel's fault: `Attempted to kill init!`, which the kernel raises when
//! PID 1 (kernel-lab's agent) exits. It is reported as [`Health::agent_died`], a fault of the
//! run (exit 255), not a finding; any splat before it still is one.

use guest::event::{Event, KmsgRecord, Stream};
use serde::Serialize;

/// What the kernel's state says about one run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Health {
    /// Why the kernel is unhealthy, one line each; empty when it is healthy.
    pub findings: Vec<String>,
    /// /proc/sys/kernel/tainted at the end of the run (None: the agent could not report it).
    pub tainted: Option<u64>,
    /// What was looked at: `kernel log and console`, `console only` when the run ended
    /// before the agent could report (a crash, a timeout), or `nothing` when the console is
    /// empty too (the kernel never printed: nothing to judge it by).
    pub checked: &'static str,
    /// Kernel log records the agent could not send (overwritten or beyond its cap).
    pub dropped: u64,
    /// The kernel's panic line when PID 1, the agent, died (`Attempted to kill init!`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_died: Option<String>,
}

impl Health {
    pub fn healthy(&self) -> bool {
        self.findings.is_empty()
    }

    /// Whether there was anything to judge the kernel by (a kernel log or a console line).
    pub fn judged(&self) -> bool {
        self.checked != "nothing"
    }

    /// One line for reports: `healthy` or the first findings.
    pub fn summary(&self) -> String {
        match self.findings.as_slice() {
            [] if !self.judged() => {
                "not judged: the kernel printed nothing (no kernel log, an empty console)".into()
            }
            [] => format!("healthy ({} checked)", self.checked),
            [one] => format!("UNHEALTHY: {one}"),
            [first, rest @ ..] => format!("UNHEALTHY: {first} (and {} more)", rest.len()),
        }
    }
}

/// Message starts that mark a kernel splat. Matched after an optional `[ secs.usecs] ` stamp
/// and an optional `subsystem: ` word (`watchdog: BUG: soft lockup`, `rcu: INFO: ...`).
const SPLATS: &[&str] = &[
    "WARNING:",
    "BUG:",
    "Oops",
    "kernel BUG at",
    "general protection fault",
    "Kernel panic",
    "UBSAN:",
    "KASAN:",
    "KFENCE:",
    "INFO: task",
    "INFO: rcu",
    "INFO: possible",
    "Unable to handle kernel",
    "list_add corruption",
    "list_del corruption",
    "refcount_t:",
    "stack segment",
    "double fault",
];

/// Whether one log or console line is (the head of) a splat.
pub fn is_splat(line: &str) -> bool {
    let mut l = line.trim_start();
    if l.starts_with('[')
        && let Some(end) = l.find("] ")
    {
        l = &l[end + 2..];
    }
    let after_word = l
        .split_once(": ")
        .filter(|(w, _)| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .map(|(_, r)| r);
    SPLATS
        .iter()
        .any(|s| l.starts_with(s) || after_word.is_some_and(|r| r.starts_with(s)))
}

/// The taint flags set in `t`, as the kernel prints them, with what each means.
pub fn taint_flags(t: u64) -> String {
    const FLAGS: &[(char, &str)] = &[
        ('P', "proprietary module"),
        ('F', "module force-loaded"),
        ('S', "unsafe SMP"),
        ('R', "module force-unloaded"),
        ('M', "machine check"),
        ('B', "bad page"),
        ('U', "set from user space"),
        ('D', "the kernel died (oops)"),
        ('A', "ACPI table overridden"),
        ('W', "a WARN fired"),
        ('C', "staging driver"),
        ('I', "firmware workaround"),
        ('O', "out-of-tree module"),
        ('E', "unsigned module"),
        ('L', "soft lockup"),
        ('K', "live-patched"),
        ('X', "auxiliary"),
        ('T', "randomized struct layout"),
        ('N', "in-kernel test ran"),
    ];
    let set: Vec<String> = (0..64)
        .filter(|b| t & (1 << b) != 0)
        .map(|b| match FLAGS.get(b) {
            Some((c, what)) => format!("{c} ({what})"),
            None => format!("bit {b}"),
        })
        .collect();
    set.join(", ")
}

/// The panic the kernel raises when PID 1 exits.
const INIT_DIED: &str = "Kernel panic - not syncing: Attempted to kill init!";

const LEVELS: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

/// Judges a run from its result stream (the agent's `Health` event) and its console text
/// (`None`: not captured, it went to a terminal, as with `--shell`). Pure: no I/O.
pub fn judge(stream: &Stream, captured: Option<&str>) -> Health {
    let console = captured.unwrap_or("");
    let mut h = Health {
        checked: "console only",
        ..Health::default()
    };
    let mut seen: Vec<String> = Vec::new();
    if let Some((tainted, log, dropped)) = stream.events().find_map(|e| match e {
        Event::Health {
            tainted,
            log,
            dropped,
        } => Some((tainted, log, dropped)),
        _ => None,
    }) {
        h.checked = "kernel log and console";
        h.tainted = *tainted;
        h.dropped = *dropped;
        for KmsgRecord { level, text } in log {
            if text.contains(INIT_DIED) {
                h.agent_died.get_or_insert_with(|| text.trim().to_string());
                continue;
            }
            if is_splat(text) {
                h.findings.push(format!("kernel log: {text}"));
            } else if *level <= 2 {
                h.findings.push(format!(
                    "kernel log at {} level: {text}",
                    LEVELS[*level as usize]
                ));
            } else {
                continue;
            }
            seen.push(text.trim().to_string());
        }
        if let Some(t) = tainted.filter(|&t| t != 0) {
            h.findings
                .push(format!("the kernel is tainted ({t}): {}", taint_flags(t)));
        }
    }
    if h.checked == "console only" && captured.is_some_and(|c| c.trim().is_empty()) {
        h.checked = "nothing";
    }
    for line in console.lines().filter(|l| is_splat(l)) {
        let text = line.trim();
        if text.contains(INIT_DIED) {
            h.agent_died.get_or_insert_with(|| text.to_string());
            continue;
        }
        if !seen.iter().any(|s| text.ends_with(s.as_str())) {
            h.findings.push(format!("console: {text}"));
            seen.push(text.to_string());
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use guest::event::Frame;

    fn stream(tainted: Option<u64>, log: &[(u8, &str)]) -> Stream {
        let event = Event::Health {
            tainted,
            log: log
                .iter()
                .map(|(level, text)| KmsgRecord {
                    level: *level,
                    text: text.to_string(),
                })
                .collect(),
            dropped: 0,
        };
        Stream {
            frames: vec![Frame {
                seq: 0,
                t_ms: 0,
                event,
            }],
            problem: None,
        }
    }

    /// What an OOM kill logs (6.12, lab 3): warning and error level, no splat; and an error
    /// line some microvm boots under TCG log (labs 4, 7, 9 here).
    const OOM: &[(u8, &str)] = &[
        (3, "..MP-BIOS bug: 8254 timer not connected to IO-APIC"),
        (
            4,
            "exe invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0",
        ),
        (4, "CPU: 1 UID: 0 PID: 52 Comm: exe Not tainted 6.12.117 #1"),
        (4, "Call Trace:"),
        (4, " <TASK>"),
        (4, " dump_stack_lvl+0x5d/0x80"),
        (4, "memory: usage 32768kB, limit 32768kB, failcnt 120"),
        (
            3,
            "Memory cgroup out of memory: Killed process 52 (exe) total-vm:70000kB",
        ),
        (
            3,
            "Out of memory: Killed process 60 (exe) total-vm:300000kB, anon-rss:200000kB",
        ),
    ];

    #[test]
    fn oom_reports_are_healthy() {
        let h = judge(&stream(Some(0), OOM), Some(""));
        assert!(h.healthy(), "{h:?}");
        assert_eq!(h.checked, "kernel log and console");
        assert!(h.summary().starts_with("healthy"));
    }

    #[test]
    fn a_warn_a_bug_a_lockdep_splat_and_crit_lines_are_unhealthy() {
        for (level, line) in [
            (
                4,
                "WARNING: CPU: 0 PID: 1 at mm/vmscan.c:1234 shrink_folio_list+0x10/0x20",
            ),
            (4, "WARNING: possible circular locking dependency detected"),
            (
                1,
                "BUG: kernel NULL pointer dereference, address: 0000000000000008",
            ),
            (
                3,
                "BUG: KASAN: slab-use-after-free in folio_referenced+0x1/0x2",
            ),
            (0, "Kernel panic - not syncing: Fatal exception"),
            (
                4,
                "Oops: general protection fault, probably for non-canonical address",
            ),
            (
                3,
                "INFO: task kswapd0:30 blocked for more than 120 seconds.",
            ),
            (2, "mce: [Hardware Error]: Machine check events logged"),
            (
                0,
                "watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [exe:55]",
            ),
        ] {
            let h = judge(&stream(Some(0), &[(level, line)]), Some(""));
            assert_eq!(h.findings.len(), 1, "{line}: {h:?}");
            assert!(h.findings[0].contains(line), "{h:?}");
        }
    }

    #[test]
    fn a_taint_is_unhealthy_and_named() {
        let h = judge(&stream(Some(512 | 128), &[]), Some(""));
        assert_eq!(
            h.findings,
            ["the kernel is tainted (640): D (the kernel died (oops)), W (a WARN fired)"]
        );
    }

    #[test]
    fn the_console_is_scanned_when_the_agent_could_not_report() {
        let console = "Run /init as init process\n[    2.0] BUG: unable to handle page fault for address: 0\n[    2.1] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000009\nCPU: 0 PID: 1\n";
        let h = judge(&Stream::default(), Some(console));
        assert_eq!(h.checked, "console only");
        assert_eq!(h.tainted, None);
        assert_eq!(h.findings.len(), 1, "{h:?}");
        assert!(h.findings[0].contains("BUG: unable to handle"), "{h:?}");
        assert!(h.agent_died.is_some(), "{h:?}");
        // A line in both the log and the console is one finding.
        let line = "WARNING: CPU: 0 PID: 1 at kernel-lab injected warning";
        let h = judge(&stream(Some(0), &[(4, line)]), Some(&format!("{line}\n")));
        assert_eq!(h.findings.len(), 1, "{h:?}");
    }

    #[test]
    fn a_silent_kernel_is_not_judged_healthy() {
        let h = judge(&Stream::default(), Some(" \n"));
        assert!(!h.judged(), "{h:?}");
        assert_eq!(
            h.summary(),
            "not judged: the kernel printed nothing (no kernel log, an empty console)"
        );
        // A console that went to a terminal (--shell) was not seen, not silent.
        assert!(judge(&Stream::default(), None).judged());
    }

    #[test]
    fn the_agent_dying_is_no_kernel_fault() {
        // PID 1 aborted (kernel_lab=crash): the kernel's panic is the consequence, not a splat.
        let console = "[    1.5] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000006\n---[ end Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000006 ]---\n";
        let h = judge(&Stream::default(), Some(console));
        assert!(h.healthy(), "{h:?}");
        assert_eq!(
            h.agent_died.as_deref(),
            Some(
                "[    1.5] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000006"
            )
        );
    }

    #[test]
    fn splat_heads_and_ordinary_lines() {
        assert!(is_splat("[   12.000001] BUG: sleeping function called"));
        assert!(is_splat(
            "rcu: INFO: rcu_sched detected stalls on CPUs/tasks:"
        ));
        assert!(!is_splat("zram: Added device: zram0"));
        assert!(!is_splat("Out of memory: Killed process 60 (exe)"));
        assert!(!is_splat(
            "Memory cgroup out of memory: Killed process 52 (exe)"
        ));
        assert!(!is_splat("Tasks state (memory values in pages):"));
    }
}
