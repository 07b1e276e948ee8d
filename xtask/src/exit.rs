//! Exit codes, as `git bisect run` and CI read them: one place maps a typed error or a run's
//! typed status to its code (README, "Exit codes").
//!
//! `git bisect run` marks a commit good on 0, skips it on 125, aborts the bisect on 128 and
//! more, and marks it bad on any other code. So a regression is 1, a kernel that cannot be
//! tested 125, and anything that is the machine's fault (a timeout, a QEMU crash, a truncated
//! result stream, a dead agent, a full disk, an interrupted build) 255: a bisect stops there
//! instead of blaming a commit. Bad input found before anything ran is 2, as clap's usage
//! errors are.

use crate::check::{RunStatus, Verdict};
use crate::kernel::Untestable;

/// What a command came to, in the order of precedence when several things happened
/// (125 > 255 > 1 > 0; bad input stops a command before anything runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Exit {
    /// 0: everything passed (or was skipped, flaky or declared, with its reason).
    Passed,
    /// 1: a regression: a failed expectation, snapshot fact or selftest, an unhealthy kernel.
    Regression,
    /// 255: an infrastructure fault of a run (timeout, QEMU crash, truncated stream, a dead
    /// agent, a full disk, an interrupted build): nothing is known about the kernel.
    Infrastructure,
    /// 125: the kernel cannot be tested ([`Untestable`]: it does not build, lacks a required
    /// option, its selftests do not compile, or the lab does not apply to its version).
    Untestable,
    /// 2: bad input found before anything ran ([`BadInput`]).
    BadInput,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Passed => 0,
            Exit::Regression => 1,
            Exit::BadInput => 2,
            Exit::Untestable => 125,
            Exit::Infrastructure => 255,
        }
    }

    /// The command's verdict in one word (check.json's `verdict`).
    pub fn name(self) -> &'static str {
        match self {
            Exit::Passed => "passed",
            Exit::Regression => "failed",
            Exit::BadInput => "bad input",
            Exit::Untestable => "untestable",
            Exit::Infrastructure => "error",
        }
    }

    pub fn from_code(code: u8) -> Exit {
        match code {
            0 => Exit::Passed,
            1 => Exit::Regression,
            2 => Exit::BadInput,
            125 => Exit::Untestable,
            _ => Exit::Infrastructure,
        }
    }

    /// 0 or 1, for commands whose only outcomes are passing or failing (`readme --check`).
    pub fn passed_if(ok: bool) -> Exit {
        if ok { Exit::Passed } else { Exit::Regression }
    }

    /// An error's exit, from its type anywhere in its chain: [`Untestable`] 125, [`BadInput`]
    /// 2, anything else 255 (an error nobody typed is not the commit's fault).
    pub fn of_error(e: &anyhow::Error) -> Exit {
        if has::<Untestable>(e) {
            Exit::Untestable
        } else if has::<BadInput>(e) {
            Exit::BadInput
        } else {
            Exit::Infrastructure
        }
    }

    /// How one run ended, as a command's exit.
    pub fn of_run(s: RunStatus) -> Exit {
        match s {
            RunStatus::Passed | RunStatus::Skipped | RunStatus::Xfail => Exit::Passed,
            RunStatus::Failed => Exit::Regression,
            RunStatus::Error => Exit::Infrastructure,
        }
    }

    /// What one item of `check` came to, as its exit.
    pub fn of_verdict(v: Verdict) -> Exit {
        match v {
            Verdict::Passed | Verdict::Flaky | Verdict::Xfail | Verdict::Skipped => Exit::Passed,
            Verdict::Failed => Exit::Regression,
            Verdict::Error => Exit::Infrastructure,
            Verdict::Untestable => Exit::Untestable,
        }
    }

    /// `lab --repeat N`: a failed run is a regression (one that passes only sometimes fails:
    /// `lab` has no retries to measure it), else a run that could not finish is the machine's.
    pub fn of_runs(statuses: &[RunStatus]) -> Exit {
        statuses
            .iter()
            .map(|s| Exit::of_run(*s))
            .max_by_key(|e| match e {
                Exit::Regression => 2,
                Exit::Infrastructure => 1,
                _ => 0,
            })
            .unwrap_or(Exit::Infrastructure)
    }
}

/// An error type that is its message: Display prints it, and `main` finds the type with
/// `downcast_ref` to choose the exit code ([`BadInput`], [`crate::kernel::Untestable`]).
macro_rules! message_error {
    ($t:ident) => {
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl std::error::Error for $t {}
    };
}
pub(crate) use message_error;

fn has<T: std::error::Error + Send + Sync + 'static>(e: &anyhow::Error) -> bool {
    e.downcast_ref::<T>().is_some() || e.chain().any(|c| c.downcast_ref::<T>().is_some())
}

/// Bad input found before anything ran: an unknown lab, a spec error, a `--set` that does not
/// fit, a kernel source or file that is not there. `lab` and `check` exit 2 for it. Like
/// [`Untestable`], keep it as the error's source (add context with `.context()`).
#[derive(Debug)]
pub struct BadInput(pub String);
message_error!(BadInput);

/// An error as [`BadInput`], with its whole message.
pub fn as_bad_input(e: anyhow::Error) -> anyhow::Error {
    match has::<BadInput>(&e) {
        true => e,
        false => BadInput(format!("{e:#}")).into(),
    }
}

/// `bail!` for bad input: returns a [`BadInput`] error with the formatted message.
macro_rules! bad_input {
    ($($arg:tt)*) => {
        return Err($crate::exit::BadInput(format!($($arg)*)).into())
    };
}
pub(crate) use bad_input;

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn errors_exit_by_their_type_through_context() {
        let untestable: anyhow::Error = Untestable("does not build".into()).into();
        let e = untestable.context("lab 2 on 6.12");
        assert_eq!(Exit::of_error(&e).code(), 125);
        let bad: anyhow::Error = BadInput("no lab \"x\"".into()).into();
        assert_eq!(Exit::of_error(&bad.context("resolving")).code(), 2);
        let other = anyhow::anyhow!("QEMU exited with signal 9");
        assert_eq!(Exit::of_error(&other).code(), 255);
        let io: Result<(), std::io::Error> = Err(std::io::ErrorKind::StorageFull.into());
        assert_eq!(
            Exit::of_error(&io.context("writing").unwrap_err()).code(),
            255
        );
        let wrapped = as_bad_input(anyhow::anyhow!("inner").context("outer"));
        assert_eq!(format!("{wrapped:#}"), "outer: inner");
        assert_eq!(Exit::of_error(&wrapped), Exit::BadInput);
    }

    #[test]
    fn precedence_is_untestable_then_infrastructure_then_regression() {
        use Exit::*;
        let worst = |v: &[Exit]| v.iter().copied().max().unwrap();
        assert_eq!(worst(&[Passed, Regression]), Regression);
        assert_eq!(worst(&[Regression, Infrastructure, Passed]), Infrastructure);
        assert_eq!(worst(&[Infrastructure, Untestable, Regression]), Untestable);
        for e in [Passed, Regression, BadInput, Untestable, Infrastructure] {
            assert_eq!(Exit::from_code(e.code()), e);
        }
    }

    #[test]
    fn repeated_lab_runs_fail_on_any_failure_else_on_any_fault() {
        use RunStatus::*;
        assert_eq!(Exit::of_runs(&[Passed, Passed]), Exit::Passed);
        assert_eq!(Exit::of_runs(&[Passed, Failed]), Exit::Regression);
        assert_eq!(Exit::of_runs(&[Error]), Exit::Infrastructure);
        assert_eq!(Exit::of_runs(&[Error, Failed, Error]), Exit::Regression);
        assert_eq!(Exit::of_runs(&[Passed, Error]), Exit::Infrastructure);
        assert_eq!(Exit::of_runs(&[]), Exit::Infrastructure);
    }
}
