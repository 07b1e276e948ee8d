//! A lab's steps: each kind of step with exactly the fields it takes.
//!
//! lab.toml writes a step as one flat table (`kind = "anon"`, `size = "64M"`, ...). It is read
//! as a [`StepTable`] and converted once, at the boundary, into a [`Step`] whose [`StepKind`]
//! carries its kind's own fields; a field the kind does not take, or one it needs and lacks, is a
//! [`FieldError`] naming the field (the host points at its line). The JSON plan the guest reads
//! is the same type, written flat and tagged by `kind`.

use crate::spec::Size;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One step of a lab.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "StepTable")]
pub struct Step {
    /// Unique within a lab; the kind's name when lab.toml gives none.
    pub name: String,
    #[serde(flatten)]
    pub kind: StepKind,
}

/// What a step does, with the fields its kind takes.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum StepKind {
    /// mmap anonymous memory and write pseudo-random bytes to every page; then hold it `ms`,
    /// and with `pageout` ask the kernel to page it all out (madvise MADV_PAGEOUT).
    Anon {
        #[serde(flatten)]
        work: Workload,
        #[serde(skip_serializing_if = "Option::is_none")]
        ms: Option<u64>,
        #[serde(skip_serializing_if = "is_false")]
        pageout: bool,
        /// Fill each page so that it compresses about 4:1 (a quarter pseudo-random bytes, the
        /// rest zeros) instead of not at all: zswap keeps only pages that compress.
        #[serde(skip_serializing_if = "is_false")]
        compressible: bool,
    },
    /// Read a file on the ext4 data disk through the page cache.
    ReadFile {
        #[serde(flatten)]
        work: Workload,
        file: String,
    },
    /// Write a file on the ext4 data disk (dirty page cache, written back later).
    WriteFile {
        #[serde(flatten)]
        work: Workload,
        file: String,
    },
    /// Write a file on a tmpfs: shmem pages, which live on the anon LRU and need swap.
    TmpfsFill {
        #[serde(flatten)]
        work: Workload,
        file: String,
    },
    /// Proactive reclaim: write `size [swappiness=N]` to the cgroup's memory.reclaim (from
    /// outside the group).
    Reclaim {
        cgroup: String,
        size: Size,
        #[serde(skip_serializing_if = "Option::is_none")]
        swappiness: Option<u32>,
    },
    /// Write sysctls in the middle of a lab, e.g. `{ "vm.watermark_scale_factor" = "200" }`.
    Sysctl { set: BTreeMap<String, String> },
    /// Wait `ms`; lets kswapd and the lazy stat flush catch up.
    Sleep { ms: u64 },
    /// Run a program shipped in the initramfs (`argv`, never empty), e.g. the kernel's own
    /// cgroup selftests, with the writable data disk as its working directory (`size` = room
    /// it may use there); its stdout is reported with the step's end.
    Exec {
        #[serde(flatten)]
        work: Workload,
        argv: Vec<String>,
        /// Kill the program when no KTAP result line (`ok`/`not ok`) has come for this long
        /// (the per-test timeout of a selftest program).
        #[serde(skip_serializing_if = "Option::is_none")]
        result_timeout_secs: Option<u64>,
    },
}

/// A workload: a child process that joins its cgroup, then does the work.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Workload {
    /// The cgroup the process joins before it starts; the root cgroup if absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// Bytes to touch, read or write (exec: room it may use on the data disk).
    pub size: Size,
    /// Keep the process (and its memory) alive after the work until the lab ends; the next
    /// step starts once the work is done.
    #[serde(skip_serializing_if = "is_false")]
    pub background: bool,
    /// Bind the workload's memory to this NUMA node (set_mempolicy MPOL_BIND).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub numa_node: Option<u32>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The kinds of step, as lab.toml names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Anon,
    ReadFile,
    WriteFile,
    TmpfsFill,
    Reclaim,
    Sysctl,
    Sleep,
    Exec,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Anon => "anon",
            Kind::ReadFile => "read-file",
            Kind::WriteFile => "write-file",
            Kind::TmpfsFill => "tmpfs-fill",
            Kind::Reclaim => "reclaim",
            Kind::Sysctl => "sysctl",
            Kind::Sleep => "sleep",
            Kind::Exec => "exec",
        }
    }

    /// Steps the agent does itself, without a process of their own.
    pub fn in_agent(self) -> bool {
        matches!(self, Kind::Sleep | Kind::Sysctl)
    }

    /// Steps that run a [`Workload`].
    pub fn is_workload(self) -> bool {
        !self.in_agent() && self != Kind::Reclaim
    }
}

impl StepKind {
    pub fn kind(&self) -> Kind {
        match self {
            StepKind::Anon { .. } => Kind::Anon,
            StepKind::ReadFile { .. } => Kind::ReadFile,
            StepKind::WriteFile { .. } => Kind::WriteFile,
            StepKind::TmpfsFill { .. } => Kind::TmpfsFill,
            StepKind::Reclaim { .. } => Kind::Reclaim,
            StepKind::Sysctl { .. } => Kind::Sysctl,
            StepKind::Sleep { .. } => Kind::Sleep,
            StepKind::Exec { .. } => Kind::Exec,
        }
    }

    pub fn as_str(&self) -> &'static str {
        self.kind().as_str()
    }
}

impl Step {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The workload process of this step, if it runs one.
    pub fn workload(&self) -> Option<&Workload> {
        match &self.kind {
            StepKind::Anon { work, .. }
            | StepKind::ReadFile { work, .. }
            | StepKind::WriteFile { work, .. }
            | StepKind::TmpfsFill { work, .. }
            | StepKind::Exec { work, .. } => Some(work),
            StepKind::Reclaim { .. } | StepKind::Sysctl { .. } | StepKind::Sleep { .. } => None,
        }
    }

    /// The cgroup the step acts in: its workload's, or the one a reclaim step reclaims from.
    pub fn cgroup(&self) -> Option<&str> {
        match &self.kind {
            StepKind::Reclaim { cgroup, .. } => Some(cgroup),
            _ => self.workload().and_then(|w| w.cgroup.as_deref()),
        }
    }

    /// The step's size: what its workload touches, or what a reclaim step asks for.
    pub fn size(&self) -> Option<Size> {
        match &self.kind {
            StepKind::Reclaim { size, .. } => Some(*size),
            _ => self.workload().map(|w| w.size),
        }
    }

    /// Whether its process stays alive, holding its memory, until the lab ends.
    pub fn background(&self) -> bool {
        self.workload().is_some_and(|w| w.background)
    }

    /// An exec step's per-result timeout: how long the program may go without a KTAP result.
    pub fn result_timeout_secs(&self) -> Option<u64> {
        match &self.kind {
            StepKind::Exec {
                result_timeout_secs,
                ..
            } => *result_timeout_secs,
            _ => None,
        }
    }

    /// The cgroup its process joins (a reclaim step acts on its group from outside).
    pub fn joins(&self) -> Option<&str> {
        self.workload().and_then(|w| w.cgroup.as_deref())
    }
}

/// A field of a table that does not fit, for a located error: the key and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub key: &'static str,
    pub message: String,
}

/// Joins field errors into one message (for serde, which reports one error per value).
pub fn join_errors(errs: &[FieldError]) -> String {
    let parts: Vec<String> = errs
        .iter()
        .map(|e| format!("field `{}`: {}", e.key, e.message))
        .collect();
    parts.join("; ")
}

/// A step as lab.toml writes it: one flat table with every field any kind takes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepTable {
    pub kind: Kind,
    /// Defaults to the kind; names must be unique within a lab.
    #[serde(default)]
    pub name: Option<String>,
    /// The cgroup the workload runs in (its task is moved there before it starts); root if absent.
    #[serde(default)]
    pub cgroup: Option<String>,
    /// Bytes to touch (anon), read (read-file) or write (write-file, tmpfs-fill).
    #[serde(default)]
    pub size: Option<Size>,
    /// read-file, write-file, tmpfs-fill: the file (on the data disk or the tmpfs); default "data".
    #[serde(default)]
    pub file: Option<String>,
    /// sleep: milliseconds; anon: how long to hold the memory after touching it.
    #[serde(default)]
    pub ms: Option<u64>,
    /// anon: after touching, page it all out (madvise MADV_PAGEOUT).
    #[serde(default)]
    pub pageout: bool,
    /// anon: pages that compress about 4:1 (zswap rejects pages that do not compress).
    #[serde(default)]
    pub compressible: bool,
    /// reclaim: the `swappiness=` argument written to memory.reclaim (6.12+).
    #[serde(default)]
    pub swappiness: Option<u32>,
    #[serde(default)]
    pub background: bool,
    #[serde(default)]
    pub numa_node: Option<u32>,
    /// sysctl: the settings to write.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// exec: the program to run (a path in the initramfs) and its arguments.
    #[serde(default)]
    pub argv: Vec<String>,
    /// exec: kill the program when no KTAP result line has come for this long.
    #[serde(default)]
    pub result_timeout_secs: Option<u64>,
}

/// The fields that only some kinds take, and what to say to the others.
fn only(kind: Kind) -> [(&'static str, bool, String); 11] {
    use Kind::*;
    let workload = kind.is_workload();
    let k = kind.as_str();
    let file = matches!(kind, ReadFile | WriteFile | TmpfsFill);
    [
        (
            "file",
            file,
            "only read-file, write-file and tmpfs-fill steps take a file".into(),
        ),
        (
            "pageout",
            kind == Anon,
            "only anon steps take pageout".into(),
        ),
        (
            "compressible",
            kind == Anon,
            "only anon steps take compressible".into(),
        ),
        (
            "swappiness",
            kind == Reclaim,
            "only reclaim steps take swappiness (cgroup v2 has no per-group vm.swappiness)".into(),
        ),
        ("set", kind == Sysctl, "only sysctl steps take `set`".into()),
        ("argv", kind == Exec, "only exec steps take argv".into()),
        (
            "result_timeout_secs",
            kind == Exec,
            "only exec steps take result_timeout_secs".into(),
        ),
        (
            "ms",
            matches!(kind, Sleep | Anon),
            "only sleep and anon steps take ms".into(),
        ),
        (
            "background",
            workload,
            format!("a {k} step cannot run in the background"),
        ),
        (
            "numa_node",
            workload,
            format!("a {k} step runs no workload to bind to a node"),
        ),
        (
            "size",
            !kind.in_agent(),
            format!("a {k} step takes no size"),
        ),
    ]
}

impl StepTable {
    /// Which of the optional fields are given (for [`only`]).
    fn given(&self) -> [(&'static str, bool); 12] {
        [
            ("file", self.file.is_some()),
            ("pageout", self.pageout),
            ("compressible", self.compressible),
            ("swappiness", self.swappiness.is_some()),
            ("set", !self.set.is_empty()),
            ("argv", !self.argv.is_empty()),
            ("result_timeout_secs", self.result_timeout_secs.is_some()),
            ("ms", self.ms.is_some()),
            ("background", self.background),
            ("numa_node", self.numa_node.is_some()),
            ("size", self.size.is_some()),
            ("cgroup", self.cgroup.is_some()),
        ]
    }

    /// Every field given that this kind does not take.
    fn misplaced(&self) -> Vec<FieldError> {
        let rules = only(self.kind);
        let mut errs: Vec<FieldError> = self
            .given()
            .into_iter()
            .filter(|(_, given)| *given)
            .filter_map(|(key, _)| rules.iter().find(|r| r.0 == key && !r.1))
            .map(|(key, _, message)| FieldError {
                key,
                message: message.clone(),
            })
            .collect();
        if self.cgroup.is_some() && self.kind.in_agent() {
            errs.push(FieldError {
                key: "cgroup",
                message: format!(
                    "a {} step runs in the agent, in no cgroup",
                    self.kind.as_str()
                ),
            });
        }
        errs
    }

    /// The step, or every field that does not fit its kind (given where it does not belong,
    /// or missing where it is needed).
    pub fn into_step(self) -> Result<Step, Vec<FieldError>> {
        let mut errs = self.misplaced();
        let mut need = |ok: bool, key: &'static str, message: String| {
            if !ok {
                errs.push(FieldError { key, message });
            }
        };
        let k = self.kind.as_str();
        let sized = !self.kind.in_agent();
        need(
            !sized || self.size.is_some(),
            "size",
            format!("a {k} step needs a size"),
        );
        let kind = self.kind;
        need(
            kind != Kind::Sleep || self.ms.is_some(),
            "ms",
            "a sleep step needs ms".into(),
        );
        need(
            kind != Kind::Reclaim || self.cgroup.is_some(),
            "cgroup",
            "a reclaim step needs the cgroup to reclaim from".into(),
        );
        need(
            kind != Kind::Sysctl || !self.set.is_empty(),
            "set",
            "a sysctl step needs `set = { \"vm.x\" = \"v\" }`".into(),
        );
        need(
            kind != Kind::Exec || !self.argv.is_empty(),
            "argv",
            "an exec step needs argv = [\"/program\", ...]".into(),
        );
        need(
            self.result_timeout_secs != Some(0),
            "result_timeout_secs",
            "result_timeout_secs is at least 1 (seconds without a test result)".into(),
        );
        if !errs.is_empty() {
            return Err(errs);
        }
        Ok(self.build())
    }

    /// The step, once [`StepTable::into_step`] found every field in place.
    fn build(self) -> Step {
        let size = self.size.unwrap_or(Size(0));
        let work = Workload {
            cgroup: self.cgroup.clone(),
            size,
            background: self.background,
            numa_node: self.numa_node,
        };
        let file = self.file.unwrap_or_else(|| "data".into());
        let kind = match self.kind {
            Kind::Anon => StepKind::Anon {
                work,
                ms: self.ms,
                pageout: self.pageout,
                compressible: self.compressible,
            },
            Kind::ReadFile => StepKind::ReadFile { work, file },
            Kind::WriteFile => StepKind::WriteFile { work, file },
            Kind::TmpfsFill => StepKind::TmpfsFill { work, file },
            Kind::Reclaim => StepKind::Reclaim {
                cgroup: self.cgroup.unwrap_or_default(),
                size,
                swappiness: self.swappiness,
            },
            Kind::Sysctl => StepKind::Sysctl { set: self.set },
            Kind::Sleep => StepKind::Sleep {
                ms: self.ms.unwrap_or(0),
            },
            Kind::Exec => StepKind::Exec {
                work,
                argv: self.argv,
                result_timeout_secs: self.result_timeout_secs,
            },
        };
        Step {
            name: self.name.unwrap_or_else(|| self.kind.as_str().into()),
            kind,
        }
    }
}

impl TryFrom<StepTable> for Step {
    type Error = String;
    fn try_from(t: StepTable) -> Result<Step, String> {
        t.into_step().map_err(|e| join_errors(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(json: &str) -> StepTable {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn each_kind_takes_its_own_fields() {
        let s = table(r#"{"kind": "anon", "cgroup": "W", "size": "64M", "pageout": true}"#)
            .into_step()
            .unwrap();
        assert_eq!(s.name(), "anon");
        assert_eq!(s.size(), Some(Size(64 << 20)));
        assert!(matches!(s.kind, StepKind::Anon { pageout: true, .. }));
        let errs = table(r#"{"kind": "read-file", "size": "1M", "pageout": true, "argv": ["/x"]}"#)
            .into_step()
            .unwrap_err();
        let keys: Vec<&str> = errs.iter().map(|e| e.key).collect();
        assert_eq!(keys, ["pageout", "argv"], "{errs:?}");
        let z = table(r#"{"kind": "anon", "size": "1M", "compressible": true}"#)
            .into_step()
            .unwrap();
        assert!(matches!(
            z.kind,
            StepKind::Anon {
                compressible: true,
                ..
            }
        ));
        let errs = table(r#"{"kind": "tmpfs-fill", "size": "1M", "compressible": true}"#)
            .into_step()
            .unwrap_err();
        assert_eq!(errs[0].message, "only anon steps take compressible");
        let errs = table(r#"{"kind": "sleep", "cgroup": "W", "size": "1M"}"#)
            .into_step()
            .unwrap_err();
        let keys: Vec<&str> = errs.iter().map(|e| e.key).collect();
        assert_eq!(keys, ["size", "cgroup", "ms"], "{errs:?}");
        let errs = table(r#"{"kind": "reclaim", "size": "1M", "background": true}"#)
            .into_step()
            .unwrap_err();
        assert!(
            errs.iter()
                .any(|e| e.message.contains("cannot run in the background"))
        );
        assert!(errs.iter().any(|e| e.message.contains("needs the cgroup")));
    }

    #[test]
    fn only_exec_steps_take_a_per_result_timeout() {
        let s =
            table(r#"{"kind": "exec", "argv": ["/t"], "size": "1M", "result_timeout_secs": 30}"#)
                .into_step()
                .unwrap();
        assert_eq!(s.result_timeout_secs(), Some(30));
        let errs = table(r#"{"kind": "anon", "size": "1M", "result_timeout_secs": 30}"#)
            .into_step()
            .unwrap_err();
        assert_eq!(errs[0].key, "result_timeout_secs", "{errs:?}");
        assert!(errs[0].message.contains("only exec steps"), "{errs:?}");
        let errs =
            table(r#"{"kind": "exec", "argv": ["/t"], "size": "1M", "result_timeout_secs": 0}"#)
                .into_step()
                .unwrap_err();
        assert_eq!(errs[0].key, "result_timeout_secs", "{errs:?}");
    }

    #[test]
    fn the_plan_round_trips_through_json_flat_and_tagged() {
        let s = table(r#"{"kind": "exec", "name": "t", "argv": ["/t"], "size": "512M"}"#)
            .into_step()
            .unwrap();
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(
            json,
            r#"{"name":"t","kind":"exec","size":"512M","argv":["/t"]}"#
        );
        let back: Step = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        let timed =
            r#"{"name":"t","kind":"exec","size":"512M","argv":["/t"],"result_timeout_secs":300}"#;
        let back: Step = serde_json::from_str(timed).unwrap();
        assert_eq!(back.result_timeout_secs(), Some(300));
        assert_eq!(serde_json::to_string(&back).unwrap(), timed);
        let bad = serde_json::from_str::<Step>(r#"{"kind": "exec", "size": "1M"}"#);
        assert!(bad.unwrap_err().to_string().contains("needs argv"));
    }
}
