//! What a lab teaches, as data that is checked: explanations conditioned on facts
//! ([`Explanation`]), "change this and predict" exercises that are run ([`Exercise`]), and the
//! README's headline claims with the expectations and the contrast that back them
//! ([`Headline`]). Validation of their references lives here too ([`validate`]).

use crate::fact::{Fact, StepFact, StepView, settings};
use crate::spec::{Errors, KernelReq, LabSpec, SpecError, check_name, edit_distance};
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

/// A README block of figures from one real run (`[[figures]]`): the block
/// `<!-- figures NAME: ... -->` lists each fact's value in the recorded run beside the class
/// every run must have (the snapshot's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Figures {
    /// The block's name, unique in the lab.
    pub name: String,
    /// A caption for the block (markdown), optional.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub about: String,
    /// `step: Δ counter` (its change over the step) or `step: counter` (its value after it),
    /// each a counter the lab observes at that step.
    pub facts: Vec<Figure>,
}

/// One figure: `anon: Δ vmstat.pgscan_kswapd` or `default: zoneinfo.0.DMA32.min`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Figure {
    pub step: String,
    pub counter: crate::spec::CounterExpr,
    pub reading: Reading,
}

/// Which number of a counter a figure quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// Its change over the step (`Δ`): what the snapshot classes.
    Change,
    /// Its value after the step.
    After,
}

impl TryFrom<String> for Figure {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let bad = || {
            format!(
                "{s:?}: write `step: Δ counter` (its change over the step) or `step: counter` (its value after it)"
            )
        };
        let (step, what) = s.split_once(':').ok_or_else(bad)?;
        let step = step.trim().to_string();
        check_name(&step).map_err(|e| format!("{s:?}: {e}"))?;
        let what = what.trim();
        let (reading, counter) = match what
            .strip_prefix('Δ')
            .or_else(|| what.strip_prefix("delta "))
        {
            Some(c) => (Reading::Change, c.trim()),
            None => (Reading::After, what),
        };
        if counter.is_empty() || counter.starts_with("exit") {
            return Err(bad());
        }
        let counter = crate::spec::CounterExpr::try_from(counter.to_string())?;
        Ok(Figure {
            step,
            counter,
            reading,
        })
    }
}

impl From<Figure> for String {
    fn from(f: Figure) -> String {
        f.to_string()
    }
}

impl fmt::Display for Figure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.reading {
            Reading::Change => write!(f, "{}: Δ {}", self.step, self.counter),
            Reading::After => write!(f, "{}: {}", self.step, self.counter),
        }
    }
}

/// Checks the references of explanations, exercises and headlines: steps, cgroups, settings,
/// expectation and exercise names. Variables an exercise sets are checked when it is loaded
/// with them (they live outside the spec).
pub fn validate(spec: &LabSpec) -> Vec<SpecError> {
    let refs = Refs::of(spec);
    let mut e = Errors::default();
    for (i, ob) in spec.observe.iter().enumerate() {
        let facts = ob.explain.values().flat_map(|x| x.facts());
        for m in facts.filter_map(|f| refs.fact(f)) {
            e.at("observe", Some(i), "explain", m);
        }
    }
    for (i, ex) in spec.expect.iter().enumerate() {
        let Some(n) = &ex.name else { continue };
        if let Err(m) = check_name(n) {
            e.at("expect", Some(i), "name", m);
        }
        if spec.expect[..i].iter().any(|x| x.name.as_ref() == Some(n)) {
            e.at(
                "expect",
                Some(i),
                "name",
                format!("expectation name {n:?} is used twice"),
            );
        }
    }
    for (i, x) in spec.exercises.iter().enumerate() {
        let twice = spec.exercises[..i].iter().any(|y| y.name == x.name);
        refs.exercise(i, x, twice, &mut e);
    }
    for (i, h) in spec.headlines.iter().enumerate() {
        refs.headline(spec, i, h, &mut e);
    }
    for (i, f) in spec.figures.iter().enumerate() {
        let twice = spec.figures[..i].iter().any(|g| g.name == f.name);
        refs.figures(i, f, twice, &mut e);
    }
    e.0
}

/// What the explanations, exercises and headlines of a spec may refer to.
struct Refs<'a> {
    steps: Vec<&'a str>,
    settings: BTreeMap<String, String>,
    cgroups: Vec<&'a str>,
    /// Named expectations, in order (a name used twice is listed twice).
    expects: Vec<&'a str>,
    exercises: Vec<&'a str>,
}

impl<'a> Refs<'a> {
    fn of(spec: &'a LabSpec) -> Refs<'a> {
        Refs {
            steps: spec.steps.iter().map(|s| s.name()).collect(),
            settings: settings(spec),
            cgroups: spec.cgroups.iter().map(|c| c.name.as_str()).collect(),
            expects: spec
                .expect
                .iter()
                .filter_map(|x| x.name.as_deref())
                .collect(),
            exercises: spec.exercises.iter().map(|x| x.name.as_str()).collect(),
        }
    }

    /// What is wrong with a fact: a cgroup that is not declared, a setting that does not exist.
    fn fact(&self, f: &Fact) -> Option<String> {
        if let Some(c) = f.counter()
            && let Some(cg) = c.cgroups().find(|cg| !self.cgroups.contains(cg))
        {
            return Some(format!(
                "fact `{f}` reads cgroup {cg:?}, which is not declared"
            ));
        }
        if let Fact::Setting { key, .. } = f
            && !self.settings.contains_key(key)
        {
            let mut keys: Vec<&String> = self.settings.keys().collect();
            keys.sort_by_key(|k| edit_distance(key, k));
            return Some(format!(
                "fact `{f}`: no setting {key:?} (closest: {:?}; settings are vm.*, cgroup.<cg>.*, step.<step>.*)",
                keys.first().map(|k| k.as_str()).unwrap_or("")
            ));
        }
        None
    }

    /// Why `n` names no expectation, or None.
    fn unknown_expect(&self, n: &str) -> Option<String> {
        (!self.expects.contains(&n)).then(|| {
            let names = if self.expects.is_empty() {
                "none has a name: add `name = \"...\"` to the [[expect]]".to_string()
            } else {
                format!("named ones: {}", self.expects.join(", "))
            };
            format!("no [[expect]] is named {n:?} ({names})")
        })
    }

    /// Why `s` names no step, or None.
    fn unknown_step(&self, what: &dyn fmt::Display, s: &str) -> Option<String> {
        (!self.steps.contains(&s)).then(|| {
            format!(
                "`{what}`: no step is named {s:?} (steps: {})",
                self.steps.join(", ")
            )
        })
    }

    /// An exercise's errors; `twice`: an earlier exercise has its name.
    fn exercise(&self, i: usize, x: &Exercise, twice: bool, e: &mut Errors) {
        let mut at = |key, m: String| e.at("exercise", Some(i), key, m);
        if let Err(m) = check_name(&x.name) {
            at("name", m);
        }
        if twice {
            at("name", format!("exercise {:?} is declared twice", x.name));
        }
        if x.set.is_empty() {
            let m = "an exercise changes something: `set = { var = \"value\" }` ([vars] knobs)";
            at("set", m.into());
        }
        if x.ask.trim().is_empty() || x.answer.trim().is_empty() {
            at("ask", "an exercise needs `ask` and `answer` texts".into());
        }
        if x.shows.is_empty() {
            let m = "say what the kernel shows in this run (`shows = [\"step: fact\"]`)";
            at("shows", m.into());
        }
        for sf in &x.shows {
            match &sf.step {
                Some(s) => self
                    .unknown_step(sf, s)
                    .into_iter()
                    .for_each(|m| at("shows", m)),
                None if matches!(sf.fact, Fact::Exit { .. }) => at(
                    "shows",
                    format!("`{sf}`: an exit fact needs its step (`step: exit == ...`)"),
                ),
                None => {}
            }
            if let Some(m) = self.fact(&sf.fact) {
                at("shows", m);
            }
        }
        for n in &x.fails {
            if let Some(m) = self.unknown_expect(n) {
                at("fails", m);
            }
        }
        for n in &x.may_fail {
            if let Some(m) = self.unknown_expect(n) {
                at("may_fail", m);
            }
            if x.fails.contains(n) {
                at(
                    "may_fail",
                    format!("{n:?} is in both `fails` and `may_fail`"),
                );
            }
        }
        for v in &x.varies {
            if let Some(m) = self.unknown_step(v, &v.step) {
                at("varies", m);
            }
        }
    }

    /// A figures block's errors: its name, and the steps of its facts (whether the lab observes
    /// each counter there is checked by the host, which knows what a run observes).
    fn figures(&self, i: usize, f: &Figures, twice: bool, e: &mut Errors) {
        let mut at = |key, m: String| e.at("figures", Some(i), key, m);
        if let Err(m) = check_name(&f.name) {
            at("name", m);
        }
        if twice {
            at("name", format!("figures {:?} is declared twice", f.name));
        }
        if f.facts.is_empty() {
            at(
                "facts",
                "list the facts to quote: `facts = [\"step: Δ counter\"]`".into(),
            );
        }
        for x in &f.facts {
            if let Some(m) = self.unknown_step(x, &x.step) {
                at("facts", m);
            }
        }
    }

    /// A headline's errors: its claim, the expectations behind it, its contrast exercise.
    fn headline(&self, spec: &LabSpec, i: usize, h: &Headline, e: &mut Errors) {
        let mut at = |key, m: String| e.at("headline", Some(i), key, m);
        if h.claim.trim().is_empty() {
            at("claim", "the claim text is empty".into());
        }
        if h.expect.is_empty() {
            at("expect", "name the expectations that back the claim".into());
        }
        for n in &h.expect {
            if let Some(m) = self.unknown_expect(n) {
                at("expect", m);
            }
        }
        match spec.exercises.iter().find(|x| x.name == h.contrast) {
            None => at(
                "contrast",
                format!(
                    "no [[exercise]] is named {:?} (exercises: {})",
                    h.contrast,
                    self.exercises.join(", ")
                ),
            ),
            Some(x) if !x.fails.iter().any(|f| h.expect.contains(f)) => at(
                "contrast",
                format!(
                    "in exercise {:?} none of this claim's expectations fails: a contrast is a run without the cause, where the kernel does something else",
                    x.name
                ),
            ),
            _ => {}
        }
    }
}
