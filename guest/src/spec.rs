//! The lab spec: what a lab sets up, runs, observes and expects.
//!
//! The host deserializes it from `labs/<id>/lab.toml` and validates it with [`LabSpec::validate`];
//! the guest deserializes the same type from the JSON plan baked into the initramfs.

use crate::exercise::{Exercise, Explanation, Headline};
use crate::parse::{format_size, parse_size};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabSpec {
    pub id: String,
    pub title: String,
    /// The claim from the source notes that this lab puts to the test.
    #[serde(default)]
    pub claim: String,
    pub vm: Vm,
    #[serde(default, rename = "cgroup")]
    pub cgroups: Vec<Cgroup>,
    #[serde(rename = "step")]
    pub steps: Vec<Step>,
    /// Counters shown for every step, with the rule that turns them into snapshot facts.
    #[serde(default, rename = "observe")]
    pub observe: Vec<Observe>,
    #[serde(default, rename = "expect")]
    pub expect: Vec<Expect>,
    /// The kernels the lab applies to (`[applies] kernel = ">= 6.12"`, `why = "..."`); on others
    /// it is not run but reported as skipped with the reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applies: Option<Applies>,
    /// "Change this and predict" exercises: `--set` values and what the kernel then shows.
    #[serde(default, rename = "exercise", skip_serializing_if = "Vec::is_empty")]
    pub exercises: Vec<Exercise>,
    /// The README's headline claims, each with its expectations and contrast exercise.
    #[serde(default, rename = "headline", skip_serializing_if = "Vec::is_empty")]
    pub headlines: Vec<Headline>,
}

/// Which kernel versions a lab applies to, and why not to the others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Applies {
    pub kernel: KernelReq,
    pub why: String,
}

/// A condition on the kernel version, written `>= 6.12` or `< 6.12` (major.minor).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KernelReq {
    pub at_least: bool,
    pub major: u32,
    pub minor: u32,
}

impl KernelReq {
    /// Whether a kernel release such as `6.1.192` or `6.12.0-rc1` meets it (an unreadable
    /// release meets every condition: it is judged on what it reports).
    pub fn holds(&self, release: &str) -> bool {
        major_minor(release).is_none_or(|v| (v >= (self.major, self.minor)) == self.at_least)
    }
}

/// `6.12.117`, `6.12.0-rc1` or `6.12` -> (6, 12).
pub fn major_minor(release: &str) -> Option<(u32, u32)> {
    let mut it = release
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty());
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

impl TryFrom<String> for KernelReq {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let t = s.trim();
        let (at_least, rest) = if let Some(r) = t.strip_prefix(">=") {
            (true, r)
        } else if let Some(r) = t.strip_prefix('<') {
            (false, r)
        } else {
            return Err(format!(
                "kernel condition {s:?} must be \">= X.Y\" or \"< X.Y\" (e.g. \">= 6.12\")"
            ));
        };
        let bad = || format!("kernel condition {s:?}: write the version as X.Y, e.g. 6.12");
        let (a, b) = rest.trim().split_once('.').ok_or_else(bad)?;
        Ok(KernelReq {
            at_least,
            major: a.parse().map_err(|_| bad())?,
            minor: b.parse().map_err(|_| bad())?,
        })
    }
}

impl From<KernelReq> for String {
    fn from(k: KernelReq) -> String {
        k.to_string()
    }
}

impl fmt::Display for KernelReq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = if self.at_least { ">=" } else { "<" };
        write!(f, "{op} {}.{}", self.major, self.minor)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vm {
    /// Guest RAM (QEMU -m).
    pub memory: Size,
    #[serde(default = "default_cpus")]
    pub cpus: u32,
    #[serde(default)]
    pub swap: Option<Swap>,
    /// Written to /proc/sys before the first step, e.g. `"vm.swappiness" = "100"`.
    #[serde(default)]
    pub sysctl: BTreeMap<String, String>,
    /// Written under /sys before the first step, e.g.
    /// `"kernel/mm/transparent_hugepage/enabled" = "always"` (a 256M guest boots with THP off).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sysfs: BTreeMap<String, String>,
    /// Seconds the whole boot and run may take under TCG before QEMU is killed.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// NUMA nodes (the kernel fakes them with `numa=fake=N`); each gets its own kswapd.
    #[serde(default = "default_nodes")]
    pub numa_nodes: u32,
    /// Multi-generational LRU on or off (/sys/kernel/mm/lru_gen/enabled); absent: as booted (on).
    #[serde(default)]
    pub mglru: Option<bool>,
    /// Extra kernel config fragments (kernel-configs/<name>.config) this lab needs; each set of
    /// fragments is built and cached as its own kernel.
    #[serde(default)]
    pub kernel_config: Vec<String>,
    /// Before cgroup v2 is set up, mount the v1 memory controller (needs CONFIG_MEMCG_V1),
    /// record the v1 root group's files as `v1.*` counters, and hand the controller back to v2.
    /// (A controller serves one hierarchy at a time, and cannot leave v2 once v2 groups used it.)
    #[serde(default)]
    pub cgroup_v1_probe: bool,
    /// Timeline: read a few counters every `tick_ms` while a step runs (0: off).
    #[serde(default = "default_tick")]
    pub tick_ms: u64,
    /// Record the vmscan tracepoints during each step (adds the `tracing` kernel fragment):
    /// reclaim episodes per task with their blocked time, kswapd wake-ups per node.
    #[serde(default)]
    pub trace: bool,
}

fn default_tick() -> u64 {
    100
}

fn default_nodes() -> u32 {
    1
}

fn default_cpus() -> u32 {
    2
}

fn default_timeout() -> u64 {
    60
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Swap {
    pub kind: SwapKind,
    pub size: Size,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SwapKind {
    /// A compressed RAM block device set up by the agent.
    Zram,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cgroup {
    /// The directory under /sys/fs/cgroup; also the prefix of its counters (`W/memory.stat.x`).
    pub name: String,
    #[serde(default)]
    pub memory_max: Option<Size>,
    #[serde(default)]
    pub memory_high: Option<Size>,
    #[serde(default)]
    pub swap_max: Option<Size>,
    /// memory.oom.group: the OOM killer kills the whole group at once.
    #[serde(default)]
    pub oom_group: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub kind: StepKind,
    /// Defaults to the kind; names must be unique within a lab.
    #[serde(default)]
    pub name: Option<String>,
    /// The cgroup the workload runs in (its task is moved there before it starts); root if absent.
    #[serde(default)]
    pub cgroup: Option<String>,
    /// Bytes to touch (anon) or read (read-file).
    #[serde(default)]
    pub size: Option<Size>,
    /// read-file: the file on the ext4 data disk (created by the host); default "data".
    #[serde(default)]
    pub file: Option<String>,
    /// sleep: milliseconds; anon: how long to hold the memory after touching it.
    #[serde(default)]
    pub ms: Option<u64>,
    /// anon: after touching, ask the kernel to page it all out (madvise MADV_PAGEOUT).
    #[serde(default)]
    pub pageout: bool,
    /// reclaim: the `swappiness=` argument written to memory.reclaim (6.12+).
    #[serde(default)]
    pub swappiness: Option<u32>,
    /// Keep the process (and its memory) alive after the work until the lab ends; the next
    /// step starts once the work is done.
    #[serde(default)]
    pub background: bool,
    /// Bind the workload's memory to this NUMA node (set_mempolicy MPOL_BIND).
    #[serde(default)]
    pub numa_node: Option<u32>,
    /// sysctl: the settings to write, e.g. `{ "vm.watermark_scale_factor" = "200" }`.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// exec: the program to run (a path in the initramfs) and its arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub argv: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepKind {
    /// mmap anonymous memory and write pseudo-random bytes to every page.
    Anon,
    /// Read a file on the ext4 data disk through the page cache.
    ReadFile,
    /// Write a file on the ext4 data disk (dirty page cache, written back later).
    WriteFile,
    /// Write a file on a tmpfs: shmem pages, which live on the anon LRU and need swap.
    TmpfsFill,
    /// Proactive reclaim: write `size [swappiness=N]` to the cgroup's memory.reclaim.
    Reclaim,
    /// Write sysctls (`set`) in the middle of a lab.
    Sysctl,
    /// Wait; lets kswapd and the lazy stat flush catch up.
    Sleep,
    /// Run a program shipped in the initramfs (`argv`), e.g. the kernel's own cgroup selftests,
    /// with the writable data disk as its working directory (`size` = room it may use there);
    /// its stdout is reported with the step's end.
    Exec,
}

impl StepKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Anon => "anon",
            StepKind::ReadFile => "read-file",
            StepKind::WriteFile => "write-file",
            StepKind::TmpfsFill => "tmpfs-fill",
            StepKind::Reclaim => "reclaim",
            StepKind::Sysctl => "sysctl",
            StepKind::Sleep => "sleep",
            StepKind::Exec => "exec",
        }
    }
}

impl Step {
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or(self.kind.as_str())
    }

    /// Whether the step's process joins its cgroup (a reclaim step acts on the group from outside).
    pub fn joins_cgroup(&self) -> bool {
        self.kind != StepKind::Reclaim
    }

    /// Steps the agent does itself, without a workload process.
    pub fn in_agent(&self) -> bool {
        matches!(self.kind, StepKind::Sleep | StepKind::Sysctl)
    }

    /// The data-disk (read-file, write-file) or tmpfs (tmpfs-fill) file the step uses.
    pub fn file_name(&self) -> &str {
        self.file.as_deref().unwrap_or("data")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Observe {
    pub counter: CounterExpr,
    #[serde(default)]
    pub class: ClassRule,
    /// What each class means, for the student: `{ "0" = "kswapd never woke: ...", ">0" = "..." }`;
    /// a class may instead list alternatives conditioned on facts (`[{ when = [...], text = "..." }]`).
    #[serde(default)]
    pub explain: BTreeMap<String, Explanation>,
    /// Only at these steps (default: every step). A memory.stat counter may show a few hundred
    /// pages of the previous step's change late (memcg stats are flushed past a threshold, or
    /// every 2 s), so class it only where the lab is about it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<String>,
}

/// How an observed delta becomes a snapshot fact.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClassRule {
    /// `0`, `>0` or `<0`: robust for counters that move by thousands or not at all.
    #[default]
    Sign,
    /// The exact number: only for small event counts such as oom_kill.
    Exact,
    /// Shown with its number but kept out of the snapshot (noisy).
    Shown,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// A name, for exercises and headline claims that refer to this expectation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A counter or a sum of counters, e.g. `vmstat.pgscan_anon + vmstat.pgscan_file`.
    #[serde(default)]
    pub counter: Option<CounterExpr>,
    /// The step whose change is judged; absent: the whole run (first to last sample).
    #[serde(default)]
    pub step: Option<String>,
    /// A condition on the change across the step (or run).
    #[serde(default)]
    pub delta: Option<Condition>,
    /// A condition on the value after the step (or run).
    #[serde(default)]
    pub value: Option<Condition>,
    /// How the step's workload must end, e.g. "exited 0" or "killed by SIGKILL".
    #[serde(default)]
    pub exit: Option<String>,
    /// Whether the kernel reports the counter at all (e.g. cgroup v2 has no memory.swappiness).
    #[serde(default)]
    pub present: Option<bool>,
    /// Only on these kernels, e.g. `">= 6.12"` where older kernels rightly behave otherwise;
    /// on the others the expectation is shown as not applying, neither pass nor fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<KernelReq>,
    /// One line for the student: why this is what the kernel does.
    pub why: String,
}

/// A size in bytes, written as `64M` in lab.toml.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_size(self.0))
    }
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_size(self.0))
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as \"64M\" or a number of bytes")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Size, E> {
                parse_size(v).map(Size).map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v)
                    .map(Size)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
        }
        d.deserialize_any(V)
    }
}

/// A comparison such as `> 0`, `== 1` or `>= 100`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Condition {
    pub op: Op,
    pub rhs: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

impl Op {
    fn symbol(self) -> &'static str {
        match self {
            Op::Eq => "==",
            Op::Ne => "!=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
        }
    }
}

impl Condition {
    pub fn holds(&self, x: i64) -> bool {
        match self.op {
            Op::Eq => x == self.rhs,
            Op::Ne => x != self.rhs,
            Op::Gt => x > self.rhs,
            Op::Ge => x >= self.rhs,
            Op::Lt => x < self.rhs,
            Op::Le => x <= self.rhs,
        }
    }
}

impl TryFrom<String> for Condition {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let t = s.trim();
        let ops = [
            ("==", Op::Eq),
            ("!=", Op::Ne),
            (">=", Op::Ge),
            ("<=", Op::Le),
            (">", Op::Gt),
            ("<", Op::Lt),
        ];
        let Some((sym, op)) = ops.iter().find(|(sym, _)| t.starts_with(sym)) else {
            return Err(format!(
                "condition {s:?} must start with ==, !=, >, >=, < or <= (e.g. \"> 0\")"
            ));
        };
        let rest = t[sym.len()..].trim();
        let (sign, magnitude) = match rest.strip_prefix('-') {
            Some(m) => (-1, m.trim()),
            None => (1, rest),
        };
        let rhs = match rest.parse::<i64>() {
            Ok(n) => n,
            Err(_) => parse_size(magnitude)
                .ok()
                .and_then(|b| i64::try_from(b).ok())
                .map(|b| sign * b)
                .ok_or_else(|| format!("condition {s:?}: {rest:?} is not a number or size"))?,
        };
        Ok(Condition { op: *op, rhs })
    }
}

impl From<Condition> for String {
    fn from(c: Condition) -> String {
        c.to_string()
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.op.symbol(), self.rhs)
    }
}

/// A counter, or a sum and difference of counters; each a sample key such as
/// `vmstat.pgscan_kswapd`, `W/memory.stat.pgscan_direct`, `W/memory.events.max`,
/// `W/memory.current`, `zoneinfo.0.DMA32.low`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CounterExpr {
    /// (subtracted?, sample key), in order.
    pub terms: Vec<(bool, String)>,
}

impl TryFrom<String> for CounterExpr {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let mut terms = Vec::new();
        let mut neg = false;
        let mut current = String::new();
        // Split on `+` and on ` - ` (a `-` inside a name such as `my-group/` stays).
        let text = s.replace(" - ", " \u{1} ");
        for ch in text.chars().chain(std::iter::once('+')) {
            if ch == '+' || ch == '\u{1}' {
                let t = current.trim().to_string();
                if t.is_empty() {
                    return Err(format!("counter {s:?} has an empty term"));
                }
                check_counter_syntax(&t)?;
                terms.push((neg, t));
                neg = ch == '\u{1}';
                current.clear();
            } else {
                current.push(ch);
            }
        }
        Ok(CounterExpr { terms })
    }
}

impl From<CounterExpr> for String {
    fn from(c: CounterExpr) -> String {
        c.to_string()
    }
}

impl fmt::Display for CounterExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (neg, t)) in self.terms.iter().enumerate() {
            match (i, neg) {
                (0, false) => write!(f, "{t}")?,
                (0, true) => write!(f, "-{t}")?,
                (_, false) => write!(f, " + {t}")?,
                (_, true) => write!(f, " - {t}")?,
            }
        }
        Ok(())
    }
}

impl CounterExpr {
    /// The cgroups the expression reads (the part before `/`).
    pub fn cgroups(&self) -> impl Iterator<Item = &str> {
        self.terms
            .iter()
            .filter_map(|(_, t)| t.split_once('/').map(|(cg, _)| cg))
    }

    /// Evaluates the terms in a sample; `Err` names the first term the kernel did not report.
    pub fn eval(&self, values: &BTreeMap<String, u64>) -> Result<i64, String> {
        let mut sum = 0i128;
        for (neg, t) in &self.terms {
            let v = i128::from(*values.get(t).ok_or_else(|| t.clone())?);
            sum += if *neg { -v } else { v };
        }
        Ok(sum.clamp(i64::MIN.into(), i64::MAX.into()) as i64)
    }
}

/// Families of sample keys, as the agent produces them. The first element is the prefix
/// (after `<cgroup>/` for cgroup files), the second says whether a key name follows.
pub const GLOBAL_FAMILIES: &[(&str, bool)] = &[
    ("vmstat.", true),
    ("meminfo.", true),
    ("pressure.", true),
    ("zoneinfo.", true),
    ("kswapd.", true),
    ("lru_gen.enabled", false),
    ("trace.", true),
    ("v1.", true),
];
pub const CGROUP_FAMILIES: &[(&str, bool)] = &[
    ("memory.stat.", true),
    ("memory.events.", true),
    ("memory.pressure.", true),
    ("memory.current", false),
    ("memory.peak", false),
    ("memory.swap.current", false),
    ("memory.swappiness", false),
];

fn check_counter_syntax(term: &str) -> Result<(), String> {
    let (families, rest) = match term.split_once('/') {
        Some((cg, rest)) => {
            check_name(cg).map_err(|e| format!("counter {term:?}: {e}"))?;
            (CGROUP_FAMILIES, rest)
        }
        None => (GLOBAL_FAMILIES, term),
    };
    for (prefix, keyed) in families {
        if *keyed {
            if let Some(key) = rest.strip_prefix(prefix)
                && !key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
            {
                return Ok(());
            }
        } else if rest == *prefix {
            return Ok(());
        }
    }
    let known: Vec<String> = families
        .iter()
        .map(|(p, keyed)| {
            if *keyed {
                format!("{p}<key>")
            } else {
                p.to_string()
            }
        })
        .collect();
    let scope = if families == CGROUP_FAMILIES {
        "<cgroup>/"
    } else {
        ""
    };
    Err(format!(
        "counter {term:?} is not one of {scope}{}",
        known.join(", ")
    ))
}

/// Cgroup and step names: short, no path separators or spaces.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "name {name:?} must be 1-64 letters, digits, '-' or '_'"
        ));
    }
    Ok(())
}

/// A semantic error in a spec: the table (`vm`, `cgroup`, `step`, `expect`, `observe`, or ""
/// for top-level keys), the index of the table in its array, the key, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub table: &'static str,
    pub index: Option<usize>,
    pub key: &'static str,
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.table, self.index) {
            ("", _) => write!(f, "field `{}`: {}", self.key, self.message),
            (t, Some(i)) => write!(
                f,
                "[[{t}]] #{} field `{}`: {}",
                i + 1,
                self.key,
                self.message
            ),
            (t, None) => write!(f, "[{t}] field `{}`: {}", self.key, self.message),
        }
    }
}

impl LabSpec {
    /// Whether any observed or expected counter starts with `prefix` (e.g. `zoneinfo.`).
    pub fn refers_to(&self, prefix: &str) -> bool {
        let exprs = self
            .observe
            .iter()
            .map(|o| &o.counter)
            .chain(self.expect.iter().filter_map(|e| e.counter.as_ref()));
        exprs
            .flat_map(|c| &c.terms)
            .any(|(_, t)| t.starts_with(prefix))
    }

    /// Checks what serde cannot: references between tables, required fields per step kind,
    /// sizes that cannot fit the guest, and what the lab teaches (explanations, exercises,
    /// headlines: [`crate::exercise::validate`]). Returns every problem, not just the first.
    pub fn validate(&self) -> Vec<SpecError> {
        let mut errs = self.validate_setup();
        errs.extend(crate::exercise::validate(self));
        errs
    }

    /// [`LabSpec::validate`] without what the lab teaches: for a variant of the lab (`--set`),
    /// whose exercises refer to the lab as written.
    pub fn validate_setup(&self) -> Vec<SpecError> {
        let mut errs = Vec::new();
        let mut e = |table, index, key, message: String| {
            errs.push(SpecError {
                table,
                index,
                key,
                message,
            })
        };
        if let Err(m) = check_name(&self.id) {
            e("", None, "id", m);
        }
        let ram = self.vm.memory.0;
        if ram < 64 << 20 {
            e(
                "vm",
                None,
                "memory",
                format!("{} is too small to boot (at least 64M)", self.vm.memory),
            );
        }
        for name in &self.vm.kernel_config {
            if let Err(m) = check_name(name) {
                e("vm", None, "kernel_config", m);
            }
        }
        if !(1..=4).contains(&self.vm.numa_nodes) {
            e(
                "vm",
                None,
                "numa_nodes",
                format!("{} nodes: use 1 to 4", self.vm.numa_nodes),
            );
        }
        if !(1..=8).contains(&self.vm.cpus) {
            e(
                "vm",
                None,
                "cpus",
                format!("{} cpus: use 1 to 8", self.vm.cpus),
            );
        }
        if let Some(swap) = &self.vm.swap
            && (swap.size.0 < 1 << 20 || swap.size.0 > ram)
        {
            e(
                "vm",
                None,
                "swap",
                format!("swap size {} must be 1M .. guest RAM", swap.size),
            );
        }
        for key in self.vm.sysfs.keys() {
            if key.is_empty() || key.contains("..") || key.starts_with('/') {
                e(
                    "vm",
                    None,
                    "sysfs",
                    format!(
                        "{key:?} is not a path under /sys like kernel/mm/transparent_hugepage/enabled"
                    ),
                );
            }
        }
        for key in self.vm.sysctl.keys() {
            if key.is_empty() || key.contains("..") || key.starts_with('/') {
                e(
                    "vm",
                    None,
                    "sysctl",
                    format!("{key:?} is not a sysctl name like vm.swappiness"),
                );
            }
        }
        let mut cg_names: Vec<&str> = Vec::new();
        for (i, cg) in self.cgroups.iter().enumerate() {
            if let Err(m) = check_name(&cg.name) {
                e("cgroup", Some(i), "name", m);
            }
            if cg_names.contains(&cg.name.as_str()) {
                e(
                    "cgroup",
                    Some(i),
                    "name",
                    format!("cgroup {:?} is declared twice", cg.name),
                );
            }
            cg_names.push(&cg.name);
            for (key, size) in [
                ("memory_max", cg.memory_max),
                ("memory_high", cg.memory_high),
            ] {
                if let Some(size) = size {
                    if size.0 > ram {
                        e(
                            "cgroup",
                            Some(i),
                            key,
                            format!("{size} is more than the guest's RAM ({})", self.vm.memory),
                        );
                    }
                    if size.0 < 1 << 20 {
                        e(
                            "cgroup",
                            Some(i),
                            key,
                            format!("{size} is below 1M; the workload could not even start"),
                        );
                    }
                }
            }
            if cg.swap_max.is_some() && self.vm.swap.is_none() {
                e(
                    "cgroup",
                    Some(i),
                    "swap_max",
                    "the lab has no swap ([vm] swap)".into(),
                );
            }
        }
        let mut step_names: Vec<&str> = Vec::new();
        for (i, st) in self.steps.iter().enumerate() {
            if let Err(m) = check_name(st.name()) {
                e("step", Some(i), "name", m);
            }
            if step_names.contains(&st.name()) {
                e(
                    "step",
                    Some(i),
                    "name",
                    format!(
                        "step name {:?} is used twice: give each step its own `name`",
                        st.name()
                    ),
                );
            }
            step_names.push(st.name());
            if let Some(cg) = &st.cgroup
                && !cg_names.contains(&cg.as_str())
            {
                e(
                    "step",
                    Some(i),
                    "cgroup",
                    format!("cgroup {cg:?} is not declared in a [[cgroup]] table above"),
                );
            }
            let needs_size = !st.in_agent();
            match (needs_size, st.size) {
                (true, None) => e(
                    "step",
                    Some(i),
                    "size",
                    format!("a {} step needs a size", st.kind.as_str()),
                ),
                (true, Some(s)) if s.0 == 0 => {
                    e("step", Some(i), "size", "size must be more than 0".into())
                }
                (true, Some(s)) if st.kind == StepKind::ReadFile && s.0 > 4 << 30 => e(
                    "step",
                    Some(i),
                    "size",
                    format!("{s} is more than the data disk can hold (4G)"),
                ),
                (false, Some(_)) => e(
                    "step",
                    Some(i),
                    "size",
                    format!("a {} step takes no size", st.kind.as_str()),
                ),
                _ => {}
            }
            if st.kind == StepKind::Sleep && st.ms.is_none() {
                e("step", Some(i), "ms", "a sleep step needs ms".into());
            }
            let takes_file = matches!(
                st.kind,
                StepKind::ReadFile | StepKind::WriteFile | StepKind::TmpfsFill
            );
            if st.file.is_some() && !takes_file {
                let m = "only read-file, write-file and tmpfs-fill steps take a file";
                e("step", Some(i), "file", m.into());
            }
            if st.pageout && st.kind != StepKind::Anon {
                e(
                    "step",
                    Some(i),
                    "pageout",
                    "only anon steps take pageout".into(),
                );
            }
            if st.kind == StepKind::Sysctl && st.set.is_empty() {
                e(
                    "step",
                    Some(i),
                    "set",
                    "a sysctl step needs `set = { \"vm.x\" = \"v\" }`".into(),
                );
            }
            if !st.set.is_empty() && st.kind != StepKind::Sysctl {
                e(
                    "step",
                    Some(i),
                    "set",
                    "only sysctl steps take `set`".into(),
                );
            }
            if st.numa_node.is_some_and(|n| n >= self.vm.numa_nodes) {
                let m = format!(
                    "node {} does not exist ([vm] numa_nodes = {})",
                    st.numa_node.unwrap_or(0),
                    self.vm.numa_nodes
                );
                e("step", Some(i), "numa_node", m);
            }
            if st.background && (st.in_agent() || st.kind == StepKind::Reclaim) {
                let m = format!("a {} step cannot run in the background", st.kind.as_str());
                e("step", Some(i), "background", m);
            }
            if st.kind == StepKind::Reclaim && st.cgroup.is_none() {
                let m = "a reclaim step needs the cgroup to reclaim from";
                e("step", Some(i), "cgroup", m.into());
            }
            match (st.kind == StepKind::Exec, st.argv.is_empty()) {
                (true, true) => e(
                    "step",
                    Some(i),
                    "argv",
                    "an exec step needs argv = [\"/program\", ...]".into(),
                ),
                (false, false) => e("step", Some(i), "argv", "only exec steps take argv".into()),
                _ => {}
            }
            if st.swappiness.is_some() && st.kind != StepKind::Reclaim {
                let m =
                    "only reclaim steps take swappiness (cgroup v2 has no per-group vm.swappiness)";
                e("step", Some(i), "swappiness", m.into());
            }
            if st.swappiness.is_some_and(|s| s > 200) {
                e(
                    "step",
                    Some(i),
                    "swappiness",
                    "swappiness is 0..=200".into(),
                );
            }
            if let Some(f) = &st.file
                && let Err(m) = check_name(f)
            {
                e("step", Some(i), "file", m);
            }
        }
        if self.steps.is_empty() {
            e("", None, "step", "a lab needs at least one [[step]]".into());
        }
        let check_cgroups = |expr: &CounterExpr| -> Option<String> {
            expr.cgroups()
                .find(|cg| !cg_names.contains(cg))
                .map(|cg| format!("counter {expr} reads cgroup {cg:?}, which is not declared"))
        };
        for (i, ob) in self.observe.iter().enumerate() {
            for key in ob.explain.keys() {
                let ok = match ob.class {
                    ClassRule::Sign => ["0", ">0", "<0"].contains(&key.as_str()),
                    ClassRule::Exact => key.parse::<i64>().is_ok(),
                    ClassRule::Shown => false,
                };
                if !ok {
                    let m = format!(
                        "explain key {key:?} is not a class of this counter (sign: \"0\", \">0\", \"<0\"; exact: a number; shown counters have no class)"
                    );
                    e("observe", Some(i), "explain", m);
                }
            }
            if let Some(m) = check_cgroups(&ob.counter) {
                e("observe", Some(i), "counter", m);
            }
        }
        for (i, ex) in self.expect.iter().enumerate() {
            if let Some(step) = &ex.step
                && !step_names.contains(&step.as_str())
            {
                e(
                    "expect",
                    Some(i),
                    "step",
                    format!(
                        "no step is named {step:?} (steps: {})",
                        step_names.join(", ")
                    ),
                );
            }
            if let Some(c) = &ex.counter
                && let Some(m) = check_cgroups(c)
            {
                e("expect", Some(i), "counter", m);
            }
            match (
                &ex.counter,
                ex.delta.is_some() || ex.value.is_some() || ex.present.is_some(),
                &ex.exit,
            ) {
                (Some(_), true, None) => {}
                (None, false, Some(exit)) => {
                    if ex.step.is_none() {
                        e(
                            "expect",
                            Some(i),
                            "step",
                            "an exit expectation needs the step it is about".into(),
                        );
                    }
                    if !(exit.starts_with("exited ") || exit.starts_with("killed by ")) {
                        e(
                            "expect",
                            Some(i),
                            "exit",
                            format!("{exit:?}: write \"exited 0\" or \"killed by SIGKILL\""),
                        );
                    }
                }
                (Some(_), false, _) => e(
                    "expect",
                    Some(i),
                    "delta",
                    "a counter expectation needs `delta` or `value`".into(),
                ),
                _ => e(
                    "expect",
                    Some(i),
                    "counter",
                    "an expectation has either `counter` with `delta`/`value`, or `exit`".into(),
                ),
            }
            if ex.why.trim().is_empty() {
                e(
                    "expect",
                    Some(i),
                    "why",
                    "say in one line why the kernel behaves so".into(),
                );
            }
        }
        errs
    }
}

/// Levenshtein distance, for "did you mean".
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push(
                (prev[j] + usize::from(ca != *cb))
                    .min(prev[j + 1] + 1)
                    .min(cur[j] + 1),
            );
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> LabSpec {
        LabSpec {
            id: "t".into(),
            title: "T".into(),
            claim: String::new(),
            vm: Vm {
                memory: Size(256 << 20),
                cpus: 2,
                swap: None,
                sysctl: BTreeMap::new(),
                sysfs: BTreeMap::new(),
                timeout_secs: 60,
                numa_nodes: 1,
                mglru: None,
                kernel_config: vec![],
                cgroup_v1_probe: false,
                tick_ms: 100,
                trace: false,
            },
            cgroups: vec![Cgroup {
                name: "W".into(),
                memory_max: Some(Size(32 << 20)),
                memory_high: None,
                swap_max: None,
                oom_group: false,
            }],
            steps: vec![Step {
                kind: StepKind::Anon,
                name: None,
                cgroup: Some("W".into()),
                size: Some(Size(64 << 20)),
                file: None,
                ms: None,
                pageout: false,
                swappiness: None,
                background: false,
                numa_node: None,
                set: BTreeMap::new(),
                argv: vec![],
            }],
            observe: vec![],
            expect: vec![Expect {
                name: None,
                counter: Some("W/memory.events.oom_kill".to_string().try_into().unwrap()),
                step: Some("anon".into()),
                delta: Some("== 1".to_string().try_into().unwrap()),
                value: None,
                exit: None,
                present: None,
                kernel: None,
                why: "the group is over its limit with nothing to reclaim".into(),
            }],
            applies: None,
            exercises: vec![],
            headlines: vec![],
        }
    }

    #[test]
    fn a_good_spec_validates_and_round_trips_through_json() {
        let s = base();
        assert_eq!(s.validate(), vec![]);
        let json = serde_json::to_string(&s).unwrap();
        let back: LabSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn references_are_checked() {
        let mut s = base();
        s.steps[0].cgroup = Some("X".into());
        s.expect[0].step = Some("nope".into());
        s.expect[0].counter = Some("Y/memory.current".to_string().try_into().unwrap());
        let errs = s.validate();
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert!(text[0].contains("[[step]] #1 field `cgroup`"), "{text:?}");
        assert!(
            text.iter().any(|t| t.contains("no step is named \"nope\"")),
            "{text:?}"
        );
        assert!(text.iter().any(|t| t.contains("cgroup \"Y\"")), "{text:?}");
    }

    #[test]
    fn sizes_must_fit_the_guest() {
        let mut s = base();
        s.cgroups[0].memory_max = Some(Size(1 << 30));
        let errs = s.validate();
        assert_eq!(errs[0].key, "memory_max");
        assert!(errs[0].message.contains("more than the guest's RAM"));
    }

    #[test]
    fn duplicate_step_names_are_rejected() {
        let mut s = base();
        s.steps.push(s.steps[0].clone());
        assert!(
            s.validate()
                .iter()
                .any(|e| e.message.contains("used twice"))
        );
    }

    #[test]
    fn exec_steps_need_argv_and_only_they_take_it() {
        let mut s = base();
        s.steps[0].argv = vec!["/x".into()];
        assert!(s.validate().iter().any(|e| e.key == "argv"));
        s.steps[0].kind = StepKind::Exec;
        s.expect.clear();
        assert_eq!(s.validate(), vec![]);
        s.steps[0].argv.clear();
        assert!(
            s.validate()
                .iter()
                .any(|e| e.message.contains("needs argv"))
        );
    }

    #[test]
    fn kernel_conditions_parse_and_compare_versions() {
        let k = |t: &str| KernelReq::try_from(t.to_string());
        let since = k(">= 6.12").unwrap();
        assert!(since.holds("6.12.117") && since.holds("6.13.0-rc1") && since.holds("7.0"));
        assert!(!since.holds("6.1.192") && !since.holds("5.19.0"));
        let before = k("<6.12").unwrap();
        assert!(before.holds("6.1.192") && !before.holds("6.12.0"));
        assert!(
            since.holds("unknown"),
            "an unreadable release is judged on its counters"
        );
        assert_eq!(since.to_string(), ">= 6.12");
        for bad in ["6.12", "> 6.12", ">= 6", ">= six.12"] {
            assert!(k(bad).is_err(), "{bad}");
        }
        let json = r#"{"kernel": ">= 6.12", "why": "swappiness= is new in 6.12"}"#;
        let a: Applies = serde_json::from_str(json).unwrap();
        assert_eq!(a.kernel, since);
    }

    #[test]
    fn conditions_parse() {
        let c = Condition::try_from("> 0".to_string()).unwrap();
        assert!(c.holds(1) && !c.holds(0));
        let c = Condition::try_from(">=64M".to_string()).unwrap();
        assert_eq!(c.rhs, 64 << 20);
        let c = Condition::try_from("> -1M".to_string()).unwrap();
        assert_eq!(c.rhs, -(1 << 20));
        assert_eq!(
            Condition::try_from("==1".to_string()).unwrap().to_string(),
            "== 1"
        );
        assert!(Condition::try_from("~ 3".to_string()).is_err());
        assert!(Condition::try_from("> lots".to_string()).is_err());
    }

    #[test]
    fn counters_parse_and_evaluate() {
        let c =
            CounterExpr::try_from("vmstat.pgscan_anon + vmstat.pgscan_file".to_string()).unwrap();
        let mut v = BTreeMap::new();
        v.insert("vmstat.pgscan_anon".to_string(), 3);
        assert_eq!(c.eval(&v), Err("vmstat.pgscan_file".to_string()));
        v.insert("vmstat.pgscan_file".to_string(), 4);
        assert_eq!(c.eval(&v), Ok(7));
        let d =
            CounterExpr::try_from("vmstat.pgscan_anon - vmstat.pgscan_file".to_string()).unwrap();
        assert_eq!(d.eval(&v), Ok(-1));
        assert_eq!(d.to_string(), "vmstat.pgscan_anon - vmstat.pgscan_file");
        let g = CounterExpr::try_from("my-group/memory.current".to_string()).unwrap();
        assert_eq!(g.cgroups().collect::<Vec<_>>(), vec!["my-group"]);
        for bad in [
            "vmstat",
            "memory.stat.x",
            "W/vmstat.x",
            "a b/memory.current",
            "W/memory.current.x",
            "",
        ] {
            assert!(CounterExpr::try_from(bad.to_string()).is_err(), "{bad}");
        }
        for good in [
            "W/memory.events.oom_kill",
            "pressure.some.total",
            "W/memory.peak",
        ] {
            assert!(CounterExpr::try_from(good.to_string()).is_ok(), "{good}");
        }
    }
}
