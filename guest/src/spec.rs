//! The lab spec: what a lab sets up, runs, observes and expects.
//!
//! The host deserializes it from `labs/<id>/lab.toml` and validates it with [`LabSpec::validate`];
//! the guest deserializes the same type from the JSON plan baked into the initramfs.

use crate::exercise::{Exercise, Explanation, Headline};
pub use crate::expect::{Expect, ExpectTable, Want};
use crate::parse::{format_size, parse_size};
pub use crate::step::{Kind, Step, StepKind, StepTable, Workload};
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
    /// The README's "figures from one real run" blocks: facts the lab observes, whose values
    /// `cargo xtask readme --record` takes from a real run and `readme --check` checks against
    /// the snapshot's classes.
    #[serde(default, rename = "figures", skip_serializing_if = "Vec::is_empty")]
    pub figures: Vec<crate::exercise::Figures>,
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
    /// Timeline: read a few counters every `tick_ms` while a step runs, then less often as it
    /// goes on (about 64 samples per doubling of its time), plus a final sample (0: off).
    #[serde(default = "default_tick")]
    pub tick_ms: u64,
    /// Record the vmscan tracepoints during each step (adds the `tracing` kernel fragment):
    /// reclaim episodes per task with their blocked time, kswapd wake-ups per node.
    #[serde(default)]
    pub trace: bool,
    /// zswap on (`zswap.enabled=1` on the kernel command line): swapped-out pages are
    /// compressed into RAM in front of the swap device, which then gets only what zswap
    /// rejects or writes back. Needs `swap`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub zswap: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn default_tick() -> u64 {
    10
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
    /// A virtio disk (a sparse file in the run's scratch directory): pages written out to it
    /// leave RAM, as on a host with swap on an SSD.
    Disk,
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
    /// memory.min: hard protection; reclaim never takes the group's memory while its usage is
    /// within it (effective_protection() caps it by the parent's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_min: Option<Size>,
    /// memory.low: best-effort protection; broken only when nothing else can be reclaimed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_low: Option<Size>,
    /// memory.swap.high: swap usage above it throttles the group's tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_high: Option<Size>,
    /// memory.zswap.max: how much compressed memory the group may keep in zswap (`0`: none,
    /// its pages go to the swap device; `max`: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_zswap_max: Option<Limit>,
    /// A cgroup v1 memory group (`v1 = { swappiness = 0 }`; needs CONFIG_MEMCG_V1 on 6.11+)
    /// instead of a v2 one. The agent mounts the v1 memory hierarchy first; steps in v1 groups
    /// run before any step in a v2 group, and the controller then moves to cgroup v2 for good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v1: Option<V1Group>,
}

impl Cgroup {
    /// The parent group's name (`pod` for `pod/app`), `None` for a group under the root.
    pub fn parent(&self) -> Option<&str> {
        self.name.rsplit_once('/').map(|(p, _)| p)
    }

    /// How deep it is under the root (1 for `W`, 2 for `pod/app`): parents are created first.
    pub fn depth(&self) -> usize {
        self.name.split('/').count()
    }

    /// The interface files the agent writes, with their values, in this order.
    pub fn files(&self) -> Vec<(&'static str, String)> {
        let sizes = [
            ("memory.max", self.memory_max),
            ("memory.high", self.memory_high),
            ("memory.swap.max", self.swap_max),
            ("memory.min", self.memory_min),
            ("memory.low", self.memory_low),
            ("memory.swap.high", self.swap_high),
        ];
        let mut v: Vec<(&'static str, String)> = sizes
            .into_iter()
            .filter_map(|(f, s)| s.map(|s| (f, s.0.to_string())))
            .collect();
        if let Some(z) = self.memory_zswap_max {
            v.push(("memory.zswap.max", z.file_value()));
        }
        if self.oom_group {
            v.push(("memory.oom.group", "1".into()));
        }
        v
    }
}

/// A limit that may be `max` (none), for files where 0 is a setting of its own: a
/// `memory.zswap.max` of 0 keeps the group out of zswap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Max,
    Bytes(Size),
}

impl Limit {
    /// What the cgroup file takes: `max` or a number of bytes.
    pub fn file_value(self) -> String {
        match self {
            Limit::Max => "max".into(),
            Limit::Bytes(s) => s.0.to_string(),
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Max => f.write_str("max"),
            Limit::Bytes(s) => write!(f, "{s}"),
        }
    }
}

impl Serialize for Limit {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Limit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Number(u64),
        }
        match Raw::deserialize(d)? {
            Raw::Text(t) if t.trim() == "max" => Ok(Limit::Max),
            Raw::Text(t) => parse_size(&t)
                .map(|n| Limit::Bytes(Size(n)))
                .map_err(|e| serde::de::Error::custom(format!("{e}, or \"max\" for no limit"))),
            Raw::Number(n) => Ok(Limit::Bytes(Size(n))),
        }
    }
}

/// What only a cgroup v1 memory group has.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct V1Group {
    /// memory.swappiness (0..=200); absent: inherited from the parent, which for a child of
    /// the v1 root is the global vm.swappiness.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swappiness: Option<u32>,
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
    /// Only at these steps (default: every step): a trace fact that only the step with the
    /// workload can have; a memory.stat counter, which may show a few hundred pages of the
    /// previous step's change late (memcg stats are flushed past a threshold, or every 2 s), so
    /// class it only where the lab is about it.
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
                crate::counters::check_syntax(&t)?;
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
            .filter_map(|(_, t)| split_cgroup(t).map(|(cg, _)| cg))
    }

    /// Evaluates the terms in a sample; `Err` names the first term the kernel did not report.
    pub fn eval(&self, values: &BTreeMap<String, u64>) -> Result<i64, String> {
        self.eval_by(|t| values.get(t).copied())
    }

    /// Evaluates the terms, each looked up by `get`; `Err` names the first one it lacks.
    pub fn eval_by(&self, get: impl Fn(&str) -> Option<u64>) -> Result<i64, String> {
        let mut sum = 0i128;
        for (neg, t) in &self.terms {
            let v = i128::from(get(t).ok_or_else(|| t.clone())?);
            sum += if *neg { -v } else { v };
        }
        Ok(sum.clamp(i64::MIN.into(), i64::MAX.into()) as i64)
    }
}

/// Splits a sample key into its cgroup and the file's part: `pod/app/memory.stat.x` ->
/// (`pod/app`, `memory.stat.x`). Trace facts (`trace.pod/app.memcg_reclaim.episodes`) are
/// machine-wide keys that name a group inside them, not a group's file.
pub fn split_cgroup(term: &str) -> Option<(&str, &str)> {
    if term.starts_with("trace.") {
        return None;
    }
    term.rsplit_once('/')
}

/// A cgroup's name: its path under /sys/fs/cgroup (`W`, `pod/app`), each component a
/// [`check_name`]; no absolute paths, no `.` or `..`, at most 8 levels.
pub fn check_cgroup_path(name: &str) -> Result<(), String> {
    if name.starts_with('/') {
        return Err(format!(
            "cgroup {name:?} is an absolute path: write its path under /sys/fs/cgroup without the leading '/', e.g. \"pod/app\""
        ));
    }
    let parts: Vec<&str> = name.split('/').collect();
    if parts.iter().any(|p| *p == ".." || *p == ".") {
        return Err(format!(
            "cgroup {name:?}: '.' and '..' are not allowed in a cgroup path (every group lives under /sys/fs/cgroup)"
        ));
    }
    if parts.len() > 8 {
        return Err(format!("cgroup {name:?} is more than 8 levels deep"));
    }
    for part in parts {
        check_name(part).map_err(|e| match part.is_empty() {
            true => format!(
                "cgroup {name:?} has an empty component (a leading, trailing or double '/')"
            ),
            false => format!("cgroup {name:?}: {e}"),
        })?;
    }
    Ok(())
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

/// Collects [`SpecError`]s, every one rather than the first.
#[derive(Debug, Default)]
pub struct Errors(pub Vec<SpecError>);

impl Errors {
    pub fn at(
        &mut self,
        table: &'static str,
        index: Option<usize>,
        key: &'static str,
        message: impl Into<String>,
    ) {
        self.0.push(SpecError {
            table,
            index,
            key,
            message: message.into(),
        });
    }

    /// Records `message` unless `ok`.
    pub fn unless(
        &mut self,
        ok: bool,
        table: &'static str,
        index: Option<usize>,
        key: &'static str,
        message: impl FnOnce() -> String,
    ) {
        if !ok {
            self.at(table, index, key, message());
        }
    }
}

impl LabSpec {
    /// Whether any observed or expected counter starts with `prefix` (e.g. `zoneinfo.`).
    pub fn refers_to(&self, prefix: &str) -> bool {
        self.terms().any(|t| t.starts_with(prefix))
    }

    /// Every counter the lab refers to ([`LabSpec::counters`]), term by term: `W/memory.current`
    /// and `vmstat.pgscan_anon` of `W/memory.current - vmstat.pgscan_anon` (repeats included).
    pub fn terms(&self) -> impl Iterator<Item = &str> {
        self.counters()
            .flat_map(|(_, _, c)| c.terms.iter().map(|(_, t)| t.as_str()))
    }

    /// Every counter expression the lab observes or expects, or names in a fact (of an
    /// explanation or an exercise), with its table and index.
    pub fn counters(&self) -> impl Iterator<Item = (&'static str, usize, &CounterExpr)> {
        let observed = self.observe.iter().enumerate();
        let expected = self.expect.iter().enumerate();
        let explained = self.observe.iter().enumerate().flat_map(|(i, o)| {
            let facts = o.explain.values().flat_map(|x| x.facts());
            facts.filter_map(move |f| f.counter().map(|c| ("observe", i, c)))
        });
        let shown = self.exercises.iter().enumerate().flat_map(|(i, x)| {
            let facts = x.shows.iter().map(|sf| &sf.fact);
            facts.filter_map(move |f| f.counter().map(|c| ("exercise", i, c)))
        });
        observed
            .map(|(i, o)| ("observe", i, &o.counter))
            .chain(expected.filter_map(|(i, e)| e.counter().map(|c| ("expect", i, c))))
            .chain(explained)
            .chain(shown)
    }

    pub fn step_names(&self) -> Vec<&str> {
        self.steps.iter().map(|s| s.name()).collect()
    }

    pub fn cgroup_names(&self) -> Vec<&str> {
        self.cgroups.iter().map(|c| c.name.as_str()).collect()
    }

    /// The index of the last step that runs in a cgroup v1 group: after it the agent hands the
    /// memory controller to cgroup v2.
    pub fn last_v1_step(&self) -> Option<usize> {
        self.steps.iter().rposition(|st| self.in_v1_group(st))
    }

    /// Whether the step acts in a cgroup v1 group.
    pub fn in_v1_group(&self, step: &Step) -> bool {
        step.cgroup().is_some_and(|name| {
            self.cgroups
                .iter()
                .any(|c| c.name == name && c.v1.is_some())
        })
    }

    /// Checks what the types cannot say: names, references between tables, and sizes that
    /// cannot fit the guest, and what the lab teaches (explanations, exercises, headlines:
    /// [`crate::exercise::validate`]). Returns every problem, not just the first.
    pub fn validate(&self) -> Vec<SpecError> {
        let mut errs = self.validate_setup();
        errs.extend(crate::exercise::validate(self));
        errs
    }

    /// [`LabSpec::validate`] without what the lab teaches: for a variant of the lab (`--set`),
    /// whose exercises refer to the lab as written.
    pub fn validate_setup(&self) -> Vec<SpecError> {
        let mut e = Errors::default();
        if let Err(m) = check_name(&self.id) {
            e.at("", None, "id", m);
        }
        self.vm.validate(&mut e);
        self.validate_cgroups(&mut e);
        self.validate_steps(&mut e);
        self.validate_observe(&mut e);
        self.validate_expect(&mut e);
        e.0
    }

    fn validate_cgroups(&self, e: &mut Errors) {
        let mut seen: Vec<&str> = Vec::new();
        for (i, cg) in self.cgroups.iter().enumerate() {
            if let Err(m) = check_cgroup_path(&cg.name) {
                e.at("cgroup", Some(i), "name", m);
            }
            self.validate_nesting(e, i, cg);
            e.unless(
                !seen.contains(&cg.name.as_str()),
                "cgroup",
                Some(i),
                "name",
                || format!("cgroup {:?} is declared twice", cg.name),
            );
            seen.push(&cg.name);
            for (key, size) in [
                ("memory_max", cg.memory_max),
                ("memory_high", cg.memory_high),
                ("memory_min", cg.memory_min),
                ("memory_low", cg.memory_low),
            ] {
                if let Some(size) = size {
                    self.vm.check_limit(e, i, key, size);
                }
            }
            for (key, given) in [
                ("swap_max", cg.swap_max.is_some()),
                ("swap_high", cg.swap_high.is_some()),
            ] {
                e.unless(
                    !given || self.vm.swap.is_some(),
                    "cgroup",
                    Some(i),
                    key,
                    || "the lab has no swap ([vm] swap)".into(),
                );
            }
            if let Some(v1) = &cg.v1 {
                Self::validate_v1_group(e, i, cg, v1);
            }
        }
        self.validate_v1_order(e);
    }

    /// A v1 group takes memory_max and its swappiness only, directly under the v1 root.
    fn validate_v1_group(e: &mut Errors, i: usize, cg: &Cgroup, v1: &V1Group) {
        for (key, set) in [
            ("memory_high", cg.memory_high.is_some()),
            ("swap_max", cg.swap_max.is_some()),
            ("oom_group", cg.oom_group),
            ("memory_min", cg.memory_min.is_some()),
            ("memory_low", cg.memory_low.is_some()),
            ("swap_high", cg.swap_high.is_some()),
            ("memory_zswap_max", cg.memory_zswap_max.is_some()),
        ] {
            e.unless(!set, "cgroup", Some(i), key, || {
                "a cgroup v1 group takes memory_max and v1.swappiness only".into()
            });
        }
        e.unless(
            v1.swappiness.is_none_or(|sw| sw <= 200),
            "cgroup",
            Some(i),
            "v1",
            || "swappiness is 0..=200".into(),
        );
        e.unless(cg.parent().is_none(), "cgroup", Some(i), "name", || {
            "a cgroup v1 group is a plain name (no nesting): nested groups are cgroup v2's".into()
        });
    }

    /// Steps in v1 groups come before any step in a v2 group: the controller moves once.
    fn validate_v1_order(&self, e: &mut Errors) {
        let Some(last) = self.last_v1_step() else {
            return;
        };
        let early_v2 = self.steps[..last]
            .iter()
            .enumerate()
            .find(|(_, st)| st.cgroup().is_some() && !self.in_v1_group(st));
        if let Some((j, st)) = early_v2 {
            let m = format!(
                "step {:?} runs in a cgroup v2 group before step {:?} in a v1 group: steps in v1 groups come first (the memory controller moves from v1 to v2 once)",
                st.name(),
                self.steps[last].name()
            );
            e.at("step", Some(j), "cgroup", m);
        }
    }

    /// A nested group's parent is declared, and its protection fits under the parent's.
    fn validate_nesting(&self, e: &mut Errors, i: usize, cg: &Cgroup) {
        let Some(parent) = cg.parent() else { return };
        let Some(p) = self.cgroups.iter().find(|c| c.name == parent) else {
            e.at(
                "cgroup",
                Some(i),
                "name",
                format!(
                    "cgroup {:?}: its parent {parent:?} is not declared: add a [[cgroup]] table with name = {parent:?} (parents are created first, with +memory in their cgroup.subtree_control)",
                    cg.name
                ),
            );
            return;
        };
        for (key, child, above) in [
            ("memory_min", cg.memory_min, p.memory_min),
            ("memory_low", cg.memory_low, p.memory_low),
        ] {
            let Some(child) = child.filter(|c| c.0 > 0) else {
                continue;
            };
            let ok = above.is_some_and(|a| a >= child);
            e.unless(ok, "cgroup", Some(i), key, || {
                let theirs = above.map_or("none".to_string(), |a| a.to_string());
                format!(
                    "{child} is above the parent's {key} ({parent:?}: {theirs}): the kernel caps a child's protection at its parent's (effective_protection() in mm/page_counter.c), so protect {parent:?} at least as much"
                )
            });
        }
    }

    fn validate_steps(&self, e: &mut Errors) {
        let cgroups = self.cgroup_names();
        let mut seen: Vec<&str> = Vec::new();
        for (i, st) in self.steps.iter().enumerate() {
            let at = Some(i);
            if let Err(m) = check_name(st.name()) {
                e.at("step", at, "name", m);
            }
            e.unless(!seen.contains(&st.name()), "step", at, "name", || {
                format!(
                    "step name {:?} is used twice: give each step its own `name`",
                    st.name()
                )
            });
            seen.push(st.name());
            if let Some(cg) = st.cgroup() {
                e.unless(cgroups.contains(&cg), "step", at, "cgroup", || {
                    format!("cgroup {cg:?} is not declared in a [[cgroup]] table above")
                });
            }
            if let Some(cg) = st.joins()
                && let Some(child) = self.cgroups.iter().find(|c| c.parent() == Some(cg))
            {
                e.at(
                    "step",
                    at,
                    "cgroup",
                    format!(
                        "cgroup {cg:?} has child groups ({:?}): a process may not join it, since cgroup v2 keeps processes out of a group whose cgroup.subtree_control enables +memory (run the step in a child)",
                        child.name
                    ),
                );
            }
            self.validate_step_values(e, i, st);
        }
        e.unless(!self.steps.is_empty(), "", None, "step", || {
            "a lab needs at least one [[step]]".into()
        });
    }

    /// A step's sizes, node, swappiness and file name.
    fn validate_step_values(&self, e: &mut Errors, i: usize, st: &Step) {
        let at = Some(i);
        if let Some(s) = st.size() {
            e.unless(s.0 > 0, "step", at, "size", || {
                "size must be more than 0".into()
            });
            let read = matches!(st.kind, StepKind::ReadFile { .. });
            e.unless(!read || s.0 <= 4 << 30, "step", at, "size", || {
                format!("{s} is more than the data disk can hold (4G)")
            });
        }
        if let Some(n) = st.workload().and_then(|w| w.numa_node) {
            e.unless(n < self.vm.numa_nodes, "step", at, "numa_node", || {
                format!(
                    "node {n} does not exist ([vm] numa_nodes = {})",
                    self.vm.numa_nodes
                )
            });
        }
        match &st.kind {
            StepKind::Reclaim {
                swappiness: Some(sw),
                ..
            } => e.unless(*sw <= 200, "step", at, "swappiness", || {
                "swappiness is 0..=200".into()
            }),
            StepKind::ReadFile { file, .. }
            | StepKind::WriteFile { file, .. }
            | StepKind::TmpfsFill { file, .. } => {
                if let Err(m) = check_name(file) {
                    e.at("step", at, "file", m);
                }
            }
            _ => {}
        }
    }

    /// The first cgroup an expression reads that the lab does not declare, as a message.
    fn undeclared_cgroup(&self, expr: &CounterExpr) -> Option<String> {
        let cgroups = self.cgroup_names();
        expr.cgroups()
            .find(|cg| !cgroups.contains(cg))
            .map(|cg| format!("counter {expr} reads cgroup {cg:?}, which is not declared"))
    }

    fn validate_observe(&self, e: &mut Errors) {
        let steps = self.step_names();
        for (i, ob) in self.observe.iter().enumerate() {
            for step in &ob.steps {
                e.unless(
                    steps.contains(&step.as_str()),
                    "observe",
                    Some(i),
                    "steps",
                    || format!("no step is named {step:?} (steps: {})", steps.join(", ")),
                );
            }
            for key in ob.explain.keys() {
                e.unless(ob.class.has_class(key), "observe", Some(i), "explain", || {
                    format!(
                        "explain key {key:?} is not a class of this counter (sign: \"0\", \">0\", \"<0\"; exact: a number; shown counters have no class)"
                    )
                });
            }
            if let Some(m) = self.undeclared_cgroup(&ob.counter) {
                e.at("observe", Some(i), "counter", m);
            }
        }
    }

    fn validate_expect(&self, e: &mut Errors) {
        let steps = self.step_names();
        for (i, ex) in self.expect.iter().enumerate() {
            if let Some(step) = &ex.step {
                e.unless(
                    steps.contains(&step.as_str()),
                    "expect",
                    Some(i),
                    "step",
                    || format!("no step is named {step:?} (steps: {})", steps.join(", ")),
                );
            }
            if let Some(m) = ex.counter().and_then(|c| self.undeclared_cgroup(c)) {
                e.at("expect", Some(i), "counter", m);
            }
            e.unless(!ex.why.trim().is_empty(), "expect", Some(i), "why", || {
                "say in one line why the kernel behaves so".into()
            });
        }
    }
}

impl ClassRule {
    /// Whether `key` (of an `explain` table) names a class of this rule.
    pub fn has_class(self, key: &str) -> bool {
        match self {
            ClassRule::Sign => ["0", ">0", "<0"].contains(&key),
            ClassRule::Exact => key.parse::<i64>().is_ok(),
            ClassRule::Shown => false,
        }
    }
}

impl Vm {
    fn validate(&self, e: &mut Errors) {
        let memory = self.memory;
        e.unless(memory.0 >= 64 << 20, "vm", None, "memory", || {
            format!("{memory} is too small to boot (at least 64M)")
        });
        for name in &self.kernel_config {
            if let Err(m) = check_name(name) {
                e.at("vm", None, "kernel_config", m);
            }
        }
        let nodes = self.numa_nodes;
        e.unless((1..=4).contains(&nodes), "vm", None, "numa_nodes", || {
            format!("{nodes} nodes: use 1 to 4")
        });
        let cpus = self.cpus;
        e.unless((1..=8).contains(&cpus), "vm", None, "cpus", || {
            format!("{cpus} cpus: use 1 to 8")
        });
        if let Some(swap) = &self.swap {
            let fits = match swap.kind {
                SwapKind::Zram => swap.size.0 >= 1 << 20 && swap.size.0 <= memory.0,
                SwapKind::Disk => swap.size.0 >= 1 << 20 && swap.size.0 <= 4 << 30,
            };
            e.unless(fits, "vm", None, "swap", || match swap.kind {
                SwapKind::Zram => format!("swap size {} must be 1M .. guest RAM", swap.size),
                SwapKind::Disk => format!("swap size {} must be 1M .. 4G", swap.size),
            });
        }
        e.unless(!self.zswap || self.swap.is_some(), "vm", None, "zswap", || {
            "zswap keeps compressed pages in front of a swap device: add [vm] swap (e.g. { kind = \"disk\", size = \"256M\" })".into()
        });
        let is_path = |k: &String| !(k.is_empty() || k.contains("..") || k.starts_with('/'));
        for key in self.sysfs.keys().filter(|k| !is_path(k)) {
            e.at(
                "vm",
                None,
                "sysfs",
                format!(
                    "{key:?} is not a path under /sys like kernel/mm/transparent_hugepage/enabled"
                ),
            );
        }
        for key in self.sysctl.keys().filter(|k| !is_path(k)) {
            e.at(
                "vm",
                None,
                "sysctl",
                format!("{key:?} is not a sysctl name like vm.swappiness"),
            );
        }
    }

    /// A cgroup's memory limit must fit the guest and leave a workload room to start.
    fn check_limit(&self, e: &mut Errors, i: usize, key: &'static str, size: Size) {
        e.unless(size.0 <= self.memory.0, "cgroup", Some(i), key, || {
            format!("{size} is more than the guest's RAM ({})", self.memory)
        });
        e.unless(size.0 >= 1 << 20, "cgroup", Some(i), key, || {
            format!("{size} is below 1M; the workload could not even start")
        });
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
        serde_json::from_str(
            r#"{"id": "t", "title": "T", "vm": {"memory": "256M"},
                "cgroup": [{"name": "W", "memory_max": "32M"}],
                "step": [{"kind": "anon", "cgroup": "W", "size": "64M"}],
                "expect": [{"counter": "W/memory.events.oom_kill", "step": "anon",
                            "delta": "== 1", "why": "the group is over its limit with nothing to reclaim"}]}"#,
        )
        .unwrap()
    }

    fn workload(s: &mut LabSpec) -> &mut Workload {
        match &mut s.steps[0].kind {
            StepKind::Anon { work, .. } => work,
            _ => unreachable!(),
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
    fn v1_groups_take_their_own_knobs_and_run_first() {
        let mut s: LabSpec = serde_json::from_str(
            r#"{"id": "t", "title": "T", "vm": {"memory": "256M"},
                "cgroup": [{"name": "W", "memory_max": "32M"},
                           {"name": "V", "memory_max": "32M", "v1": {"swappiness": 0}}],
                "step": [{"kind": "anon", "name": "in-v1", "cgroup": "V", "size": "64M"},
                         {"kind": "anon", "name": "in-v2", "cgroup": "W", "size": "64M"}]}"#,
        )
        .unwrap();
        assert_eq!(s.validate(), vec![]);
        assert_eq!(s.last_v1_step(), Some(0));
        assert!(s.in_v1_group(&s.steps[0]) && !s.in_v1_group(&s.steps[1]));
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<LabSpec>(&json).unwrap(), s);
        // A v1 step after a v2 one: the controller cannot go back to v1.
        let mut again = s.steps[0].clone();
        again.name = "v1-again".into();
        s.steps.push(again);
        let errs = s.validate();
        assert!(
            errs.iter()
                .any(|e| e.table == "step" && e.message.contains("steps in v1 groups come first")),
            "{errs:?}"
        );
        s.steps.pop();
        s.cgroups[1].swap_max = Some(Size(0));
        s.cgroups[1].v1 = Some(V1Group {
            swappiness: Some(300),
        });
        let keys: Vec<&str> = s.validate().iter().map(|e| e.key).collect();
        assert!(
            keys.contains(&"swap_max") && keys.contains(&"v1"),
            "{keys:?}"
        );
    }

    #[test]
    fn references_are_checked() {
        let mut s = base();
        workload(&mut s).cgroup = Some("X".into());
        s.expect[0].step = Some("nope".into());
        s.expect[0].want = Want::Delta {
            counter: "Y/memory.current".to_string().try_into().unwrap(),
            delta: "> 0".to_string().try_into().unwrap(),
        };
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
    fn a_node_beyond_the_guest_is_rejected() {
        let mut s = base();
        workload(&mut s).numa_node = Some(1);
        let errs = s.validate();
        assert_eq!(errs[0].key, "numa_node", "{errs:?}");
        s.vm.numa_nodes = 2;
        assert_eq!(s.validate(), vec![]);
    }

    fn nested() -> LabSpec {
        serde_json::from_str(
            r#"{"id": "t", "title": "T", "vm": {"memory": "256M", "swap": {"kind": "disk", "size": "256M"}, "zswap": true},
                "cgroup": [{"name": "pod/app", "memory_low": "32M", "memory_zswap_max": "0"},
                           {"name": "pod", "memory_max": "96M", "memory_low": "64M", "memory_min": "8M"},
                           {"name": "pod/side", "memory_min": "8M", "swap_high": "16M", "memory_zswap_max": "max"}],
                "step": [{"kind": "anon", "cgroup": "pod/app", "size": "64M"},
                         {"kind": "reclaim", "name": "r", "cgroup": "pod", "size": "8M"}],
                "expect": [{"counter": "pod/app/memory.events.local.low + pod/memory.stat.pgscan_direct", "step": "anon",
                            "delta": "== 0", "why": "nothing to reclaim"}]}"#,
        )
        .unwrap()
    }

    fn messages(s: &LabSpec) -> Vec<String> {
        s.validate().iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn nested_groups_validate_and_name_their_parent() {
        let s = nested();
        assert_eq!(s.validate(), vec![]);
        let app = &s.cgroups[0];
        assert_eq!((app.parent(), app.depth()), (Some("pod"), 2));
        assert_eq!(s.cgroups[1].parent(), None);
        assert!(app.files().contains(&("memory.zswap.max", "0".into())));
        assert!(
            s.cgroups[2]
                .files()
                .contains(&("memory.zswap.max", "max".into()))
        );
        let back: LabSpec = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        let c = &s.expect[0].counter().unwrap();
        assert_eq!(c.cgroups().collect::<Vec<_>>(), vec!["pod/app", "pod"]);
    }

    #[test]
    fn a_child_needs_its_parent_declared() {
        let mut s = nested();
        s.cgroups.remove(1);
        let text = messages(&s);
        assert!(
            text.iter()
                .any(|t| t.contains("its parent \"pod\" is not declared")),
            "{text:?}"
        );
    }

    #[test]
    fn a_child_protection_above_the_parents_is_rejected() {
        let mut s = nested();
        s.cgroups[0].memory_low = Some(Size(96 << 20));
        s.cgroups[2].memory_min = Some(Size(16 << 20));
        let errs = s.validate();
        let keys: Vec<&str> = errs.iter().map(|e| e.key).collect();
        assert_eq!(keys, vec!["memory_low", "memory_min"], "{errs:?}");
        assert!(
            errs[0].message.contains("effective_protection()"),
            "{errs:?}"
        );
        // A parent with no protection at all protects nothing below it.
        let mut s = nested();
        s.cgroups[1].memory_low = None;
        assert!(
            messages(&s)[0].contains("(\"pod\": none)"),
            "{:?}",
            messages(&s)
        );
    }

    #[test]
    fn a_process_cannot_join_an_inner_group() {
        let mut s = nested();
        workload(&mut s).cgroup = Some("pod".into());
        let text = messages(&s);
        assert!(text[0].contains("has child groups"), "{text:?}");
    }

    #[test]
    fn cgroup_paths_are_checked_per_component() {
        for bad in ["/pod", "pod/../etc", "pod//app", "pod/", "./pod", "pod/a b"] {
            let mut s = base();
            s.cgroups[0].name = bad.into();
            workload(&mut s).cgroup = Some(bad.into());
            let errs = s.validate();
            assert!(
                errs.iter().any(|e| e.table == "cgroup" && e.key == "name"),
                "{bad}: {errs:?}"
            );
        }
        assert!(check_cgroup_path("/pod").unwrap_err().contains("absolute"));
        assert!(check_cgroup_path("a/../b").unwrap_err().contains("'..'"));
        assert!(check_cgroup_path("kubepods/burstable/pod-1/app_2").is_ok());
    }

    #[test]
    fn swap_limits_and_zswap_need_swap() {
        let mut s = nested();
        s.vm.swap = None;
        let keys: Vec<&str> = s.validate().iter().map(|e| e.key).collect();
        assert_eq!(keys, vec!["zswap", "swap_high"]);
    }

    #[test]
    fn nested_counters_and_trace_keys_parse() {
        for good in [
            "pod/app/memory.stat.pgscan_direct",
            "pod/app/memory.events.local.low",
            "pod/memory.swap.events.high",
            "pod/app/memory.zswap.current",
            "trace.pod/app.memcg_reclaim.episodes",
            "trace.my-group.memcg_reclaim.episodes",
        ] {
            assert!(CounterExpr::try_from(good.to_string()).is_ok(), "{good}");
        }
        assert_eq!(
            split_cgroup("pod/app/memory.stat.x"),
            Some(("pod/app", "memory.stat.x"))
        );
        assert_eq!(split_cgroup("trace.pod/app.memcg_reclaim.episodes"), None);
        for bad in ["/pod/memory.current", "pod/../memory.current", "vmstat.a/b"] {
            assert!(CounterExpr::try_from(bad.to_string()).is_err(), "{bad}");
        }
    }

    #[test]
    fn zswap_max_takes_max_or_a_size() {
        let l = |j: &str| serde_json::from_str::<Limit>(j);
        assert_eq!(l("\"max\"").unwrap(), Limit::Max);
        assert_eq!(l("\"0\"").unwrap(), Limit::Bytes(Size(0)));
        assert_eq!(l("\"16M\"").unwrap(), Limit::Bytes(Size(16 << 20)));
        assert_eq!(l("4096").unwrap(), Limit::Bytes(Size(4096)));
        assert!(l("\"lots\"").unwrap_err().to_string().contains("max"));
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
