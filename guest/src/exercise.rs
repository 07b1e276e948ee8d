//! What a lab teaches, as data that is checked: explanations conditioned on facts
//! ([`Explanation`]), "change this and predict" exercises that are run ([`Exercise`]), and the
//! README's headline claims with the expectations and the contrast that back them
//! ([`Headline`]). Validation of their references lives here too ([`validate`]).

use crate::fact::{Fact, StepFact, StepView, settings};
use crate::spec::{KernelReq, LabSpec, SpecError, check_name, edit_distance};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// What one class of an observed counter means: one text that is true whenever the class
/// holds, or alternatives, the first whose facts all hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Explanation {
    Always(String),
    Cases(Vec<Case>),
}

/// One alternative: printed when every `when` fact holds for the step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    #[serde(default)]
    pub when: Vec<Fact>,
    pub text: String,
}

impl<'de> Deserialize<'de> for Explanation {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Explanation;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a text, or a list of { when = [facts], text = \"...\" }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Explanation, E> {
                Ok(Explanation::Always(v.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Explanation, A::Error> {
                let mut cases = Vec::new();
                while let Some(c) = seq.next_element::<Case>()? {
                    cases.push(c);
                }
                Ok(Explanation::Cases(cases))
            }
        }
        d.deserialize_any(V)
    }
}

impl Explanation {
    /// The text for this step, if any alternative holds.
    pub fn pick(&self, view: &StepView) -> Option<&str> {
        match self {
            Explanation::Always(t) => Some(t),
            Explanation::Cases(cases) => cases
                .iter()
                .find(|c| c.when.iter().all(|f| f.holds(view)))
                .map(|c| c.text.as_str()),
        }
    }

    /// Every fact its alternatives name.
    pub fn facts(&self) -> impl Iterator<Item = &Fact> {
        let cases: &[Case] = match self {
            Explanation::Always(_) => &[],
            Explanation::Cases(c) => c,
        };
        cases.iter().flat_map(|c| &c.when)
    }
}

/// A "change this and predict" exercise: the `--set` values, and what the kernel then shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exercise {
    /// `cargo xtask lab N --exercise NAME`.
    pub name: String,
    /// The lab's `[vars]` to change, as `--set name=value` would.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// The question for the student (markdown).
    pub ask: String,
    /// The reasoning (markdown); the facts and the failing expectations are generated from
    /// `shows` and `fails`, so the prose need not restate them.
    pub answer: String,
    /// What the kernel shows in this run: `step: fact`, each checked; every fact that changes
    /// class against the default snapshot must be among them.
    #[serde(default)]
    pub shows: Vec<StepFact>,
    /// The names of the default lab's expectations that fail; every other one passes.
    #[serde(default)]
    pub fails: Vec<String>,
    /// Snapshot facts that differ from run to run in this exercise (a race the answer explains),
    /// as `step: Δ counter` or `step: exit`: they may change class without being in `shows`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub varies: Vec<Varies>,
    /// Expectations that pass in some runs and fail in others here (the same race).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub may_fail: Vec<String>,
    /// Only on these kernels (elsewhere the exercise is skipped with the lab's reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<KernelReq>,
}

impl Exercise {
    /// The `--set` arguments of this exercise.
    pub fn set_args(&self) -> Vec<String> {
        self.set.iter().map(|(k, v)| format!("{k}={v}")).collect()
    }
}

/// A snapshot fact an exercise does not predict: `read: Δ vmstat.pgscan_direct`, `read: exit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Varies {
    pub step: String,
    /// `None`: the step's exit.
    pub counter: Option<crate::spec::CounterExpr>,
}

impl TryFrom<String> for Varies {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let bad = || format!("{s:?}: write `step: Δ counter` or `step: exit`");
        let (step, what) = s.split_once(':').ok_or_else(bad)?;
        let step = step.trim().to_string();
        check_name(&step).map_err(|e| format!("{s:?}: {e}"))?;
        let what = what.trim();
        let counter = match what {
            "exit" => None,
            _ => {
                let c = what
                    .strip_prefix('Δ')
                    .or_else(|| what.strip_prefix("delta "))
                    .ok_or_else(bad)?;
                Some(crate::spec::CounterExpr::try_from(c.trim().to_string())?)
            }
        };
        Ok(Varies { step, counter })
    }
}

impl From<Varies> for String {
    fn from(v: Varies) -> String {
        v.to_string()
    }
}

impl fmt::Display for Varies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.counter {
            Some(c) => write!(f, "{}: Δ {c}", self.step),
            None => write!(f, "{}: exit", self.step),
        }
    }
}

/// A headline claim of the lab's README, the expectations that back it, and the exercise in
/// which its cause is absent and the kernel does something else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Headline {
    pub claim: String,
    /// Names of `[[expect]]` entries.
    pub expect: Vec<String>,
    /// Name of the `[[exercise]]` without the cause; at least one of `expect` fails there.
    pub contrast: String,
}

/// Checks the references of explanations, exercises and headlines: steps, cgroups, settings,
/// expectation and exercise names. Variables an exercise sets are checked when it is loaded
/// with them (they live outside the spec).
pub fn validate(spec: &LabSpec) -> Vec<SpecError> {
    let mut errs = Vec::new();
    let mut e = |table, index, key, message: String| {
        errs.push(SpecError {
            table,
            index: Some(index),
            key,
            message,
        })
    };
    let steps: Vec<&str> = spec.steps.iter().map(|s| s.name()).collect();
    let known = settings(spec);
    let cgroups: Vec<&str> = spec.cgroups.iter().map(|c| c.name.as_str()).collect();
    let check_fact = |f: &Fact| -> Option<String> {
        if let Some(c) = f.counter()
            && let Some(cg) = c.cgroups().find(|cg| !cgroups.contains(cg))
        {
            return Some(format!(
                "fact `{f}` reads cgroup {cg:?}, which is not declared"
            ));
        }
        if let Fact::Setting { key, .. } = f
            && !known.contains_key(key)
        {
            let mut keys: Vec<&String> = known.keys().collect();
            keys.sort_by_key(|k| edit_distance(key, k));
            return Some(format!(
                "fact `{f}`: no setting {key:?} (closest: {:?}; settings are vm.*, cgroup.<cg>.*, step.<step>.*)",
                keys.first().map(|k| k.as_str()).unwrap_or("")
            ));
        }
        None
    };
    for (i, ob) in spec.observe.iter().enumerate() {
        for m in ob
            .explain
            .values()
            .flat_map(|x| x.facts())
            .filter_map(check_fact)
        {
            e("observe", i, "explain", m);
        }
    }
    let mut expect_names: Vec<&str> = Vec::new();
    for (i, ex) in spec.expect.iter().enumerate() {
        if let Some(n) = &ex.name {
            if let Err(m) = check_name(n) {
                e("expect", i, "name", m);
            }
            if expect_names.contains(&n.as_str()) {
                e(
                    "expect",
                    i,
                    "name",
                    format!("expectation name {n:?} is used twice"),
                );
            }
            expect_names.push(n);
        }
    }
    let unknown_expect = |n: &str| -> Option<String> {
        (!expect_names.contains(&n)).then(|| {
            let names = if expect_names.is_empty() {
                "none has a name: add `name = \"...\"` to the [[expect]]".to_string()
            } else {
                format!("named ones: {}", expect_names.join(", "))
            };
            format!("no [[expect]] is named {n:?} ({names})")
        })
    };
    let mut exercise_names: Vec<&str> = Vec::new();
    for (i, x) in spec.exercises.iter().enumerate() {
        if let Err(m) = check_name(&x.name) {
            e("exercise", i, "name", m);
        }
        if exercise_names.contains(&x.name.as_str()) {
            e(
                "exercise",
                i,
                "name",
                format!("exercise {:?} is declared twice", x.name),
            );
        }
        exercise_names.push(&x.name);
        if x.set.is_empty() {
            let m = "an exercise changes something: `set = { var = \"value\" }` ([vars] knobs)";
            e("exercise", i, "set", m.into());
        }
        if x.ask.trim().is_empty() || x.answer.trim().is_empty() {
            e(
                "exercise",
                i,
                "ask",
                "an exercise needs `ask` and `answer` texts".into(),
            );
        }
        if x.shows.is_empty() {
            let m = "say what the kernel shows in this run (`shows = [\"step: fact\"]`)";
            e("exercise", i, "shows", m.into());
        }
        for sf in &x.shows {
            match &sf.step {
                Some(s) if !steps.contains(&s.as_str()) => e(
                    "exercise",
                    i,
                    "shows",
                    format!(
                        "`{sf}`: no step is named {s:?} (steps: {})",
                        steps.join(", ")
                    ),
                ),
                None if matches!(sf.fact, Fact::Exit { .. }) => e(
                    "exercise",
                    i,
                    "shows",
                    format!("`{sf}`: an exit fact needs its step (`step: exit == ...`)"),
                ),
                _ => {}
            }
            if let Some(m) = check_fact(&sf.fact) {
                e("exercise", i, "shows", m);
            }
        }
        for n in &x.fails {
            if let Some(m) = unknown_expect(n) {
                e("exercise", i, "fails", m);
            }
        }
        for n in &x.may_fail {
            if let Some(m) = unknown_expect(n) {
                e("exercise", i, "may_fail", m);
            }
            if x.fails.contains(n) {
                let m = format!("{n:?} is in both `fails` and `may_fail`");
                e("exercise", i, "may_fail", m);
            }
        }
        for v in &x.varies {
            if !steps.contains(&v.step.as_str()) {
                let m = format!(
                    "`{v}`: no step is named {:?} (steps: {})",
                    v.step,
                    steps.join(", ")
                );
                e("exercise", i, "varies", m);
            }
        }
    }
    for (i, h) in spec.headlines.iter().enumerate() {
        if h.claim.trim().is_empty() {
            e("headline", i, "claim", "the claim text is empty".into());
        }
        if h.expect.is_empty() {
            e(
                "headline",
                i,
                "expect",
                "name the expectations that back the claim".into(),
            );
        }
        for n in &h.expect {
            if let Some(m) = unknown_expect(n) {
                e("headline", i, "expect", m);
            }
        }
        match spec.exercises.iter().find(|x| x.name == h.contrast) {
            None => e(
                "headline",
                i,
                "contrast",
                format!(
                    "no [[exercise]] is named {:?} (exercises: {})",
                    h.contrast,
                    exercise_names.join(", ")
                ),
            ),
            Some(x) if !x.fails.iter().any(|f| h.expect.contains(f)) => e(
                "headline",
                i,
                "contrast",
                format!(
                    "in exercise {:?} none of this claim's expectations fails: a contrast is a run without the cause, where the kernel does something else",
                    x.name
                ),
            ),
            _ => {}
        }
    }
    errs
}
