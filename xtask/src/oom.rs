//! OOM victims, from the kernel's own words on the console: `Memory cgroup out of memory:
//! Killed process 57 (over-limit) total-vm:..., anon-rss:65536kB, ...` (mm/oom_kill.c,
//! `__oom_kill_process()`, printed at KERN_ERR so `quiet` keeps it). Workloads are named after
//! their step, so each victim is matched to the step it ran. Pure: text in, victims out.

use guest::spec::LabSpec;

/// Which OOM chose the victim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// A cgroup at its memory.max ("Memory cgroup out of memory").
    Cgroup,
    /// The whole machine ("Out of memory").
    Global,
}

/// One process the OOM killer killed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kill {
    pub pid: u32,
    /// The task's name: the step's name for a lab workload (the kernel keeps 15 bytes).
    pub comm: String,
    pub scope: Scope,
    /// What it held when it was killed, in KiB.
    pub anon_rss_kb: u64,
    pub file_rss_kb: u64,
    pub shmem_rss_kb: u64,
    /// The step whose workload it was, when its name says so.
    pub step: Option<String>,
    /// The step during which it was killed (a group OOM also kills earlier steps' holders).
    pub during: Option<String>,
}

/// Every `Killed process` line of a console log, in order, matched to the spec's steps by
/// name. A group OOM names (and counts in vmstat's oom_kill) its victim a second time among the
/// group: [`place`] keeps one of each.
pub fn victims(console: &str, spec: &LabSpec) -> Vec<Kill> {
    console
        .lines()
        .filter_map(parse_line)
        .map(|mut k| {
            k.step = spec
                .steps
                .iter()
                .map(|s| s.name())
                .find(|n| *n == k.comm || n.len() > 15 && n.starts_with(&k.comm))
                .map(str::to_string);
            k
        })
        .collect()
}

/// When each victim died, and each victim once: the console lists kills in order as the kernel
/// counts them, and each step's change of `vmstat.oom_kill` says how many happened during it.
/// Without those counts (or when they do not add up) a victim is taken to have died during its
/// own step.
pub fn place(mut kills: Vec<Kill>, per_step: &[(String, Option<i64>)]) -> Vec<Kill> {
    let counted: Option<Vec<(String, usize)>> = per_step
        .iter()
        .map(|(s, n)| n.map(|n| (s.clone(), n.max(0) as usize)))
        .collect();
    match counted.filter(|c| c.iter().map(|x| x.1).sum::<usize>() == kills.len()) {
        Some(c) => {
            let mut it = kills.iter_mut();
            for (step, n) in c {
                for k in it.by_ref().take(n) {
                    k.during = Some(step.clone());
                }
            }
        }
        None => kills.iter_mut().for_each(|k| k.during = k.step.clone()),
    }
    let mut seen = Vec::new();
    kills.retain(|k| {
        let new = !seen.contains(&k.pid);
        seen.push(k.pid);
        new
    });
    kills
}

fn parse_line(line: &str) -> Option<Kill> {
    let (before, rest) = line.split_once("Killed process ")?;
    let scope = if before.contains("Memory cgroup out of memory") {
        Scope::Cgroup
    } else if before.contains("Out of memory") {
        Scope::Global
    } else {
        return None;
    };
    let (pid, rest) = rest.split_once(" (")?;
    let (comm, rest) = rest.rsplit_once(") ")?;
    let field = |name: &str| -> u64 {
        rest.split([' ', ','])
            .find_map(|w| w.strip_prefix(name))
            .and_then(|v| v.trim_end_matches("kB").parse().ok())
            .unwrap_or(0)
    };
    Some(Kill {
        pid: pid.trim().parse().ok()?,
        comm: comm.to_string(),
        scope,
        anon_rss_kb: field("anon-rss:"),
        file_rss_kb: field("file-rss:"),
        shmem_rss_kb: field("shmem-rss:"),
        step: None,
        during: None,
    })
}

impl Kill {
    /// `pid 57 (over-limit), killed by its cgroup's OOM, holding 31.9 MiB anonymous memory`.
    pub fn describe(&self) -> String {
        let who = match self.scope {
            Scope::Cgroup => "its cgroup's OOM (memory.max)",
            Scope::Global => "the whole machine's OOM",
        };
        let mut held = vec![format!(
            "{} anonymous",
            crate::units::bytes(self.anon_rss_kb * 1024)
        )];
        if self.file_rss_kb > 0 {
            held.push(format!(
                "{} file-backed",
                crate::units::bytes(self.file_rss_kb * 1024)
            ));
        }
        if self.shmem_rss_kb > 0 {
            held.push(format!(
                "{} shared/tmpfs",
                crate::units::bytes(self.shmem_rss_kb * 1024)
            ));
        }
        let whose = match (&self.step, &self.during) {
            (Some(s), Some(d)) if s != d => format!(", the workload of step {s}"),
            (None, _) => ", not a lab workload".into(),
            _ => String::new(),
        };
        format!(
            "pid {} ({}{whose}), killed by {who}, holding {} memory",
            self.pid,
            self.comm,
            held.join(" and ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn victims_are_read_from_the_console_and_matched_to_steps() {
        let spec = crate::lab::parse_spec(
            "id = \"t\"\ntitle = \"T\"\n[vm]\nmemory = \"256M\"\n[[cgroup]]\nname = \"A\"\nmemory_max = \"32M\"\n[[step]]\nkind = \"anon\"\nname = \"over-limit\"\ncgroup = \"A\"\nsize = \"64M\"\n[[step]]\nkind = \"anon\"\nname = \"a-very-long-step-name\"\nsize = \"1M\"\n",
            "t",
        )
        .unwrap();
        let console = "\
[    5.100000] some other line
[    5.123456] Memory cgroup out of memory: Killed process 57 (over-limit) total-vm:67000kB, anon-rss:32640kB, file-rss:4kB, shmem-rss:0kB, UID:0 pgtables:100kB oom_score_adj:0
Out of memory: Killed process 61 (a-very-long-st) total-vm:1kB, anon-rss:2048kB, file-rss:0kB, shmem-rss:8kB, UID:0 pgtables:1kB oom_score_adj:0
Out of memory: Killed process 62 (kworker (x)) total-vm:1kB, anon-rss:0kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:1kB oom_score_adj:0
";
        // A group OOM names its victim twice, and the kernel counts it twice.
        let twice = console.replacen(
            "oom_score_adj:0\n",
            &format!("oom_score_adj:0\n{}\n", console.lines().nth(1).unwrap()),
            1,
        );
        let v = victims(&twice, &spec);
        assert_eq!(v.len(), 4, "{v:?}");
        assert_eq!(v[0].pid, 57);
        assert_eq!(v[0].scope, Scope::Cgroup);
        assert_eq!(v[0].anon_rss_kb, 32640);
        assert_eq!(v[0].step.as_deref(), Some("over-limit"));
        assert_eq!(v[2].scope, Scope::Global);
        assert_eq!(v[2].step.as_deref(), Some("a-very-long-step-name"));
        assert_eq!(v[3].comm, "kworker (x)");
        assert_eq!(v[3].step, None);
        let counts = [
            ("over-limit".into(), Some(2)),
            ("a-very-long-step-name".into(), Some(2)),
        ];
        let v = place(v, &counts);
        assert_eq!(v.len(), 3, "a victim named twice is one victim: {v:?}");
        assert_eq!(v[0].during.as_deref(), Some("over-limit"));
        assert_eq!(v[1].during.as_deref(), Some("a-very-long-step-name"));
        assert_eq!(v[2].during.as_deref(), Some("a-very-long-step-name"));
        assert!(
            v[2].describe()
                .starts_with("pid 62 (kworker (x), not a lab workload)")
        );
        // Counts that do not add up: each victim during its own step.
        let v = place(victims(console, &spec), &[("over-limit".into(), None)]);
        assert_eq!(v[1].during, v[1].step);
        assert_eq!(
            v[0].describe(),
            "pid 57 (over-limit), killed by its cgroup's OOM (memory.max), holding 31.9 MiB anonymous and 4.0 KiB file-backed memory"
        );
    }
}
