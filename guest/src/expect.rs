//! Expectations: what a lab holds the kernel to, each one [`Want`] (a change, a value, whether a
//! counter is reported at all, or how a step's workload ends) with the reason for the student.
//!
//! lab.toml writes an expectation as one flat table; it is read as an [`ExpectTable`] and
//! converted once into an [`Expect`]: `exit = "killed by SIGKIL"` is an error at load time,
//! naming its field, not a failed run after a boot.

use crate::event::Exit;
use crate::spec::{Condition, CounterExpr, KernelReq};
use crate::step::{FieldError, join_errors};
use serde::{Deserialize, Serialize, Serializer};

/// One expectation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ExpectTable")]
pub struct Expect {
    /// A name, for exercises and headline claims that refer to this expectation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The step whose change is judged; absent: the whole run (first to last sample).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    #[serde(flatten)]
    pub want: Want,
    /// Only on these kernels, e.g. `">= 6.12"` where older kernels rightly behave otherwise;
    /// on the others the expectation is shown as not applying, neither pass nor fail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel: Option<KernelReq>,
    /// One line for the student: why this is what the kernel does.
    pub why: String,
}

/// What an expectation holds the kernel to.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Want {
    /// A condition on the change of a counter (or a sum of counters) across the step or run.
    Delta {
        counter: CounterExpr,
        delta: Condition,
    },
    /// A condition on its value after the step or run.
    Value {
        counter: CounterExpr,
        value: Condition,
    },
    /// Whether the kernel reports the counter at all (cgroup v2 has no memory.swappiness).
    Present { counter: CounterExpr, present: bool },
    /// How the step's workload ends (an exit expectation always names its step).
    Exit {
        #[serde(serialize_with = "as_text")]
        exit: Exit,
    },
}

fn as_text<S: Serializer>(exit: &Exit, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&exit.to_string())
}

impl Want {
    /// The counter expression it is about, if any.
    pub fn counter(&self) -> Option<&CounterExpr> {
        match self {
            Want::Delta { counter, .. }
            | Want::Value { counter, .. }
            | Want::Present { counter, .. } => Some(counter),
            Want::Exit { .. } => None,
        }
    }
}

impl Expect {
    /// The counter expression it is about, if any.
    pub fn counter(&self) -> Option<&CounterExpr> {
        self.want.counter()
    }
}

/// An expectation as lab.toml writes it: one flat table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectTable {
    #[serde(default)]
    pub name: Option<String>,
    /// A counter or a sum of counters, e.g. `vmstat.pgscan_anon + vmstat.pgscan_file`.
    #[serde(default)]
    pub counter: Option<CounterExpr>,
    #[serde(default)]
    pub step: Option<String>,
    #[serde(default)]
    pub delta: Option<Condition>,
    #[serde(default)]
    pub value: Option<Condition>,
    /// How the step's workload must end, e.g. "exited 0" or "killed by SIGKILL".
    #[serde(default)]
    pub exit: Option<String>,
    #[serde(default)]
    pub present: Option<bool>,
    #[serde(default)]
    pub kernel: Option<KernelReq>,
    pub why: String,
}

impl ExpectTable {
    /// The expectation, or the fields that do not fit together.
    pub fn into_expect(self) -> Result<Expect, Vec<FieldError>> {
        let err = |key, message: &str| {
            Err(vec![FieldError {
                key,
                message: message.into(),
            }])
        };
        let t = self;
        let want = match (t.counter, t.delta, t.value, t.present, &t.exit) {
            (Some(counter), Some(delta), None, None, None) => Want::Delta { counter, delta },
            (Some(counter), None, Some(value), None, None) => Want::Value { counter, value },
            (Some(counter), None, None, Some(present), None) => Want::Present { counter, present },
            (None, None, None, None, Some(text)) => match text.parse::<Exit>() {
                Ok(exit) if t.step.is_some() => Want::Exit { exit },
                Ok(_) => return err("step", "an exit expectation needs the step it is about"),
                Err(e) => return err("exit", &e),
            },
            (Some(_), None, None, None, None) => {
                return err("delta", "a counter expectation needs `delta` or `value`");
            }
            (Some(_), _, _, _, None) => {
                return err("delta", "give one of `delta`, `value` or `present`");
            }
            _ => {
                return err(
                    "counter",
                    "an expectation has either `counter` with `delta`/`value`, or `exit`",
                );
            }
        };
        Ok(Expect {
            name: t.name,
            step: t.step,
            want,
            kernel: t.kernel,
            why: t.why,
        })
    }
}

impl TryFrom<ExpectTable> for Expect {
    type Error = String;
    fn try_from(t: ExpectTable) -> Result<Expect, String> {
        t.into_expect().map_err(|e| join_errors(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(json: &str) -> Result<Expect, Vec<FieldError>> {
        serde_json::from_str::<ExpectTable>(json)
            .unwrap()
            .into_expect()
    }

    #[test]
    fn each_expectation_is_one_kind_of_want() {
        let e =
            load(r#"{"step": "a", "counter": "vmstat.pgscan_kswapd", "delta": "> 0", "why": "w"}"#)
                .unwrap();
        assert!(matches!(e.want, Want::Delta { .. }));
        let e = load(r#"{"step": "a", "exit": "killed by SIGKILL", "why": "w"}"#).unwrap();
        assert_eq!(
            e.want,
            Want::Exit {
                exit: Exit::Signaled { signal: 9 }
            }
        );
        let errs = load(r#"{"step": "a", "exit": "killed by SIGKIL", "why": "w"}"#).unwrap_err();
        assert_eq!(errs[0].key, "exit");
        assert!(errs[0].message.contains("did you mean SIGKILL"), "{errs:?}");
        assert_eq!(
            load(r#"{"exit": "exited 0", "why": "w"}"#).unwrap_err()[0].key,
            "step"
        );
        let both = r#"{"counter": "vmstat.x", "delta": "> 0", "value": "> 0", "why": "w"}"#;
        assert_eq!(load(both).unwrap_err()[0].key, "delta");
        assert_eq!(load(r#"{"why": "w"}"#).unwrap_err()[0].key, "counter");
    }

    #[test]
    fn the_plan_round_trips_through_json() {
        for json in [
            r#"{"step":"a","exit":"killed by SIGKILL","why":"w"}"#,
            r#"{"counter":"W/memory.peak","value":">= 1048576","kernel":">= 6.12","why":"w"}"#,
            r#"{"name":"n","counter":"v1.memory.swappiness","present":false,"why":"w"}"#,
        ] {
            let e: Expect = serde_json::from_str(json).unwrap();
            assert_eq!(serde_json::to_string(&e).unwrap(), json);
        }
    }
}
