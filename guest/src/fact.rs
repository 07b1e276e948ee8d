//! Facts: the one condition language in which a lab states what a run shows, used by
//! explanations (`when`), exercises (`shows`) and headline claims.
//!
//! A fact is written as the report prints it: `Δ W/memory.events.max > 0` (the change across a
//! step), `W/memory.peak > 32M` (the value after it), `exit == killed by SIGKILL` (how its
//! workload ended) or `setting cgroup.W.memory_max == none` (the spec as run). Parsed once, at
//! the boundary; evaluated against one step's samples, exit and settings. Pure: no I/O.

use crate::event::Exit;
use crate::parse::{format_size, parse_size};
use crate::spec::{Condition, CounterExpr, LabSpec, StepKind, check_name};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// One condition on a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Fact {
    /// The change of a counter expression across the step: `Δ X > 0`.
    Delta {
        counter: CounterExpr,
        cond: Condition,
    },
    /// Its value after the step: `X > 32M`.
    Value {
        counter: CounterExpr,
        cond: Condition,
    },
    /// How the step's workload ended: `exit == killed by SIGKILL`, `exit != exited 0`.
    Exit { equal: bool, exit: Exit },
    /// Whether the kernel reports a counter at all after the step: `kswapd.1.cpu_ticks is not
    /// reported` (a guest with one node has no kswapd1).
    Reported {
        counter: CounterExpr,
        reported: bool,
    },
    /// The spec as run (after `--set`): `setting vm.swap == none`.
    Setting {
        key: String,
        equal: bool,
        value: String,
    },
}

/// Splits `== rest` / `!= rest` into (equal?, rest).
fn eq_op(s: &str, what: &str) -> Result<(bool, String), String> {
    let t = s.trim_start();
    let (equal, rest) = if let Some(r) = t.strip_prefix("==") {
        (true, r)
    } else if let Some(r) = t.strip_prefix("!=") {
        (false, r)
    } else {
        return Err(format!("{what}: write `== value` or `!= value`"));
    };
    let rest = rest.trim();
    if rest.is_empty() {
        return Err(format!("{what}: the value after the operator is missing"));
    }
    Ok((equal, rest.to_string()))
}

fn strip_word<'a>(s: &'a str, word: &str) -> Option<&'a str> {
    s.strip_prefix(word)
        .filter(|r| r.starts_with(char::is_whitespace))
}

/// A setting value as compared: sizes normalised (`32M` and `33554432` are the same).
pub fn normalise_setting(v: &str) -> String {
    let t = v.trim();
    if t.starts_with(|c: char| c.is_ascii_digit())
        && let Ok(b) = parse_size(t)
    {
        return format_size(b);
    }
    t.to_string()
}

impl TryFrom<String> for Fact {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let t = s.trim();
        if let Some(rest) = strip_word(t, "exit") {
            let (equal, how) = eq_op(rest, &format!("fact {s:?}"))?;
            let exit = how.parse().map_err(|e| format!("fact {s:?}: {e}"))?;
            return Ok(Fact::Exit { equal, exit });
        }
        if let Some(rest) = strip_word(t, "setting") {
            let rest = rest.trim_start();
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            let (key, op) = rest.split_at(end);
            let (equal, value) = eq_op(op, &format!("fact {s:?}"))?;
            return Ok(Fact::Setting {
                key: key.to_string(),
                equal,
                value: normalise_setting(&value),
            });
        }
        for (suffix, reported) in [(" is not reported", false), (" is reported", true)] {
            if let Some(c) = t.strip_suffix(suffix) {
                let counter = CounterExpr::try_from(c.trim().to_string())?;
                return Ok(Fact::Reported { counter, reported });
            }
        }
        let (is_delta, rest) = match t.strip_prefix('Δ').or_else(|| strip_word(t, "delta")) {
            Some(r) => (true, r),
            None => (false, t),
        };
        let Some(i) = rest.find(['=', '!', '<', '>']) else {
            return Err(format!(
                "fact {s:?}: write `Δ counter > 0`, `counter >= 32M`, `exit == exited 0` or `setting key == value`"
            ));
        };
        let lhs = rest[..i].trim();
        let counter = CounterExpr::try_from(lhs.to_string()).map_err(|e| {
            match ["vm.", "cgroup.", "step."]
                .iter()
                .any(|p| lhs.starts_with(p))
            {
                true => format!(
                    "{e} (a setting? write `setting {lhs} {}`)",
                    rest[i..].trim()
                ),
                false => e,
            }
        })?;
        let cond = Condition::try_from(rest[i..].to_string())?;
        Ok(match is_delta {
            true => Fact::Delta { counter, cond },
            false => Fact::Value { counter, cond },
        })
    }
}

impl From<Fact> for String {
    fn from(f: Fact) -> String {
        f.to_string()
    }
}

impl fmt::Display for Fact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = |equal: bool| if equal { "==" } else { "!=" };
        match self {
            Fact::Delta { counter, cond } => write!(f, "Δ {counter} {cond}"),
            Fact::Value { counter, cond } => write!(f, "{counter} {cond}"),
            Fact::Exit { equal, exit } => write!(f, "exit {} {exit}", op(*equal)),
            Fact::Reported { counter, reported } => {
                let not = if *reported { "" } else { "not " };
                write!(f, "{counter} is {not}reported")
            }
            Fact::Setting { key, equal, value } => {
                write!(f, "setting {key} {} {value}", op(*equal))
            }
        }
    }
}

/// What one step (or the whole run) looked like: the samples around it, what was measured
/// over it alone, how its workload ended, and the spec's settings as run.
#[derive(Debug, Clone, Copy)]
pub struct StepView<'a> {
    pub before: &'a BTreeMap<String, u64>,
    pub after: &'a BTreeMap<String, u64>,
    /// Counters measured over the step alone, not sampled (its trace facts, `trace.*`).
    pub measured: &'a BTreeMap<String, u64>,
    /// None for the whole run, or a step that did not finish.
    pub exit: Option<Exit>,
    pub settings: &'a BTreeMap<String, String>,
}

impl StepView<'_> {
    /// One counter after the step: sampled, or measured over the step.
    fn after(&self, term: &str) -> Option<u64> {
        match crate::counters::per_step(term) {
            true => self.measured.get(term).copied(),
            false => self.after.get(term).copied(),
        }
    }

    /// The value of `expr` after the step; `Err` names the first counter not reported.
    pub fn value(&self, expr: &CounterExpr) -> Result<i64, String> {
        expr.eval_by(|t| self.after(t))
    }

    /// The change of `expr` across the step: sampled counters from the sample before to the
    /// one after, measured ones by what was measured.
    pub fn delta(&self, expr: &CounterExpr) -> Result<i64, String> {
        let before = expr.eval_by(|t| match crate::counters::per_step(t) {
            true => Some(0),
            false => self.before.get(t).copied(),
        })?;
        Ok(self.value(expr)?.saturating_sub(before))
    }
}

impl Fact {
    /// Whether the fact holds, and what was found (`+35`, `killed by SIGKILL`, `32M`).
    /// `Err` names what the run did not report (a counter, a step's end, a setting).
    pub fn check(&self, v: &StepView) -> Result<(bool, String), String> {
        match self {
            Fact::Delta { counter, cond } => {
                let d = v.delta(counter)?;
                Ok((cond.holds(d), format!("{d:+}")))
            }
            Fact::Value { counter, cond } => {
                let x = v.value(counter)?;
                Ok((cond.holds(x), x.to_string()))
            }
            Fact::Reported { counter, reported } => {
                let got = v.value(counter).is_ok();
                let word = if got { "reported" } else { "not reported" };
                Ok((got == *reported, word.to_string()))
            }
            Fact::Exit { equal, exit } => {
                let got = v.exit.ok_or("the step did not finish")?;
                Ok(((got == *exit) == *equal, got.to_string()))
            }
            Fact::Setting { key, equal, value } => {
                let got = v
                    .settings
                    .get(key)
                    .ok_or_else(|| format!("no setting {key}"))?;
                Ok(((got == value) == *equal, got.clone()))
            }
        }
    }

    /// Whether it holds; a fact about something the run did not report does not.
    pub fn holds(&self, v: &StepView) -> bool {
        self.check(v).is_ok_and(|(ok, _)| ok)
    }

    /// The counter expression it is about, if any.
    pub fn counter(&self) -> Option<&CounterExpr> {
        match self {
            Fact::Delta { counter, .. }
            | Fact::Value { counter, .. }
            | Fact::Reported { counter, .. } => Some(counter),
            _ => None,
        }
    }
}

/// A fact about one named step (`read: Δ W/memory.events.max == 0`), or about the whole run
/// (no prefix).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StepFact {
    pub step: Option<String>,
    pub fact: Fact,
    /// The fact as the author wrote it (`W/memory.current >= 8M`), for the README.
    pub written: String,
}

impl TryFrom<String> for StepFact {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.split_once(':') {
            Some((step, fact)) => {
                let step = step.trim();
                check_name(step).map_err(|e| format!("{s:?}: the step before `:`: {e}"))?;
                Ok(StepFact {
                    step: Some(step.to_string()),
                    fact: Fact::try_from(fact.to_string())?,
                    written: fact.trim().to_string(),
                })
            }
            None => Ok(StepFact {
                step: None,
                fact: Fact::try_from(s.clone())?,
                written: s.trim().to_string(),
            }),
        }
    }
}

impl From<StepFact> for String {
    fn from(f: StepFact) -> String {
        f.to_string()
    }
}

/// As written: `read: W/memory.current >= 8M`.
impl fmt::Display for StepFact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.step {
            Some(s) => write!(f, "{s}: {}", self.written),
            None => write!(f, "{}", self.written),
        }
    }
}

/// The spec's settings as facts can name them (`vm.swap`, `cgroup.W.memory_max`, ...), with
/// sizes normalised and absent values as `none`.
pub fn settings(spec: &LabSpec) -> BTreeMap<String, String> {
    let mut s = BTreeMap::new();
    let size = |z: Option<crate::spec::Size>| z.map(|z| format_size(z.0)).unwrap_or("none".into());
    s.insert("vm.memory".into(), format_size(spec.vm.memory.0));
    s.insert(
        "vm.swap".into(),
        size(spec.vm.swap.as_ref().map(|w| w.size)),
    );
    let mglru = match spec.vm.mglru {
        Some(true) => "on",
        Some(false) => "off",
        None => "default",
    };
    s.insert("vm.mglru".into(), mglru.into());
    s.insert("vm.numa_nodes".into(), spec.vm.numa_nodes.to_string());
    let zswap = if spec.vm.zswap { "on" } else { "off" };
    s.insert("vm.zswap".into(), zswap.into());
    for (k, v) in &spec.vm.sysctl {
        s.insert(format!("vm.sysctl.{k}"), normalise_setting(v));
    }
    for (k, v) in &spec.vm.sysfs {
        s.insert(format!("vm.sysfs.{k}"), normalise_setting(v));
    }
    for cg in &spec.cgroups {
        let key = |f: &str| format!("cgroup.{}.{f}", cg.name);
        s.insert(key("memory_max"), size(cg.memory_max));
        s.insert(key("memory_high"), size(cg.memory_high));
        s.insert(key("swap_max"), size(cg.swap_max));
        s.insert(key("oom_group"), cg.oom_group.to_string());
        s.insert(key("memory_min"), size(cg.memory_min));
        s.insert(key("memory_low"), size(cg.memory_low));
        s.insert(key("swap_high"), size(cg.swap_high));
        let zswap = cg.memory_zswap_max.map(|z| match z {
            crate::spec::Limit::Max => "max".to_string(),
            crate::spec::Limit::Bytes(b) => format_size(b.0),
        });
        s.insert(key("memory_zswap_max"), zswap.unwrap_or("none".into()));
    }
    for st in &spec.steps {
        let key = |f: &str| format!("step.{}.{f}", st.name());
        s.insert(key("size"), size(st.size()));
        let opt = |v: Option<u32>| v.map(|n| n.to_string()).unwrap_or("none".into());
        let swappiness = match &st.kind {
            StepKind::Reclaim { swappiness, .. } => *swappiness,
            _ => None,
        };
        s.insert(key("swappiness"), opt(swappiness));
        s.insert(
            key("numa_node"),
            opt(st.workload().and_then(|w| w.numa_node)),
        );
        let pageout = matches!(st.kind, StepKind::Anon { pageout: true, .. });
        s.insert(key("pageout"), pageout.to_string());
        s.insert(key("background"), st.background().to_string());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fact(s: &str) -> Fact {
        Fact::try_from(s.to_string()).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn facts_parse_and_print_as_written() {
        for s in [
            "Δ W/memory.events.max > 0",
            "Δ vmstat.pgscan_anon + vmstat.pgscan_file == 0",
            "W/memory.peak > 33554432",
            "exit == killed by SIGKILL",
            "exit != exited 0",
            "setting cgroup.W.memory_max == none",
            "kswapd.1.cpu_ticks is not reported",
            "W/memory.peak is reported",
        ] {
            assert_eq!(fact(s).to_string(), s);
        }
        assert_eq!(
            fact("delta W/memory.events.max>0").to_string(),
            "Δ W/memory.events.max > 0"
        );
        assert_eq!(
            fact("setting vm.swap == 134217728").to_string(),
            "setting vm.swap == 128M"
        );
        for bad in [
            "W/memory.events.max",
            "Δ nope.x > 0",
            "exit == fine",
            "exit exited 0",
            "setting vm.swap",
            "Δ W/memory.events.max > lots",
        ] {
            assert!(Fact::try_from(bad.to_string()).is_err(), "{bad}");
        }
    }

    #[test]
    fn facts_evaluate_on_a_step() {
        let mut before = BTreeMap::new();
        let mut after = BTreeMap::new();
        before.insert("W/memory.events.max".to_string(), 3);
        after.insert("W/memory.events.max".to_string(), 38);
        let mut measured = BTreeMap::new();
        measured.insert("trace.kswapd.wakes".to_string(), 2);
        let mut settings = BTreeMap::new();
        settings.insert("vm.swap".to_string(), "none".to_string());
        let v = StepView {
            before: &before,
            after: &after,
            measured: &measured,
            exit: Some(Exit::Signaled { signal: 9 }),
            settings: &settings,
        };
        assert_eq!(
            fact("Δ W/memory.events.max > 0").check(&v),
            Ok((true, "+35".into()))
        );
        assert!(fact("W/memory.events.max == 38").holds(&v));
        assert!(fact("Δ trace.kswapd.wakes == 2").holds(&v));
        assert!(fact("exit == killed by SIGKILL").holds(&v));
        assert!(!fact("exit == exited 0").holds(&v));
        assert!(fact("setting vm.swap == none").holds(&v));
        assert!(fact("vmstat.pgscan_kswapd is not reported").holds(&v));
        assert!(fact("W/memory.events.max is reported").holds(&v));
        assert!(fact("Δ vmstat.pgscan_kswapd == 0").check(&v).is_err());
        assert!(!fact("Δ vmstat.pgscan_kswapd == 0").holds(&v));
    }

    #[test]
    fn step_facts_name_their_step() {
        let f = StepFact::try_from("read: Δ W/memory.events.max == 0".to_string()).unwrap();
        assert_eq!(f.step.as_deref(), Some("read"));
        assert_eq!(f.to_string(), "read: Δ W/memory.events.max == 0");
        let f = StepFact::try_from("kswapd.threads == 2".to_string()).unwrap();
        assert_eq!(f.step, None);
        assert!(StepFact::try_from("a b: exit == exited 0".to_string()).is_err());
    }
}
