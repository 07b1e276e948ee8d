//! Answers for `lab --predict` that the lab's own facts say are right, so that a VM test can
//! check the scoring end to end: for a default run, the class in the lab's snapshot; for an
//! exercise, the class its `shows` facts fix, else the default run's (an exercise the kernel
//! agrees with names every fact that changes class). Built from `--questions`, the snapshot
//! and the README's generated exercise blocks.

use super::{text, xtask};

const LABS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../labs");

/// ("step", "counter") -> class, from a snapshot.
fn snapshot_classes(lab: &str) -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(format!("{LABS}/{lab}/snapshots/{lab}.snap")).unwrap();
    let mut step = String::new();
    let mut out = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("step ") {
            step = rest.split(" (").next().unwrap_or("").to_string();
        } else if let Some(rest) = line.strip_prefix("  Δ ") {
            if let Some((c, class)) = rest.rsplit_once(": ") {
                out.push((step.clone(), c.to_string(), class.to_string()));
            }
        } else if !line.starts_with(' ') {
            step.clear();
        }
    }
    out
}

/// The class a `shows` fact about a change fixes, if it fixes one.
fn class_of(fact: &str, exact: bool) -> Option<(String, String)> {
    // A trace fact is measured over its step alone: its value is its change.
    let f = fact
        .strip_prefix("Δ ")
        .or_else(|| fact.starts_with("trace.").then_some(fact))?;
    for op in ["==", ">=", "<=", "!=", ">", "<"] {
        if let Some((c, v)) = f.split_once(&format!(" {op} ")) {
            let n: i64 = v.trim().parse().ok()?;
            let class = match (op, exact) {
                ("==", true) => n.to_string(),
                ("==", false) if n == 0 => "0".into(),
                ("==", false) if n > 0 => ">0".into(),
                (">", false) if n >= 0 => ">0".into(),
                (">=", false) if n >= 1 => ">0".into(),
                _ => return None,
            };
            return Some((c.trim().to_string(), class));
        }
    }
    None
}

/// (step, counter, class) fixed by exercise `name`'s `shows`, from its README block.
fn shows(lab: &str, name: &str) -> Vec<(String, String, String, bool)> {
    let readme = std::fs::read_to_string(format!("{LABS}/{lab}/README.md")).unwrap();
    let start = readme.find(&format!("<!-- exercise {name}:")).unwrap();
    let end = readme[start..]
        .find(&format!("<!-- /exercise {name} -->"))
        .unwrap()
        + start;
    let mut out = Vec::new();
    for line in readme[start..end].lines() {
        // - step `group-oom`: `Δ G/memory.events.oom == 1`
        let Some(rest) = line.strip_prefix("- step `") else {
            continue;
        };
        let Some((step, fact)) = rest.split_once("`: `") else {
            continue;
        };
        let fact = fact.trim_end_matches('`');
        let before = out.len();
        for exact in [false, true] {
            if let Some((c, class)) = class_of(fact, exact) {
                out.push((step.to_string(), c, class, exact));
            }
        }
        // A question left unanswered: about a counter the kernel does not report (`X is not
        // reported`: a node the guest does not have), or one a fact only bounds without fixing
        // its class (`< 50`: 0 or more), never answered with the default run's class.
        let bounded = fact
            .strip_prefix("Δ ")
            .or_else(|| fact.starts_with("trace.").then_some(fact))
            .and_then(|f| f.split_whitespace().next());
        let open = fact
            .strip_suffix(" is not reported")
            .or(bounded.filter(|_| out.len() == before));
        if let Some(c) = open {
            for exact in [false, true] {
                out.push((
                    step.to_string(),
                    c.to_string(),
                    NOT_REPORTED.to_string(),
                    exact,
                ));
            }
        }
    }
    out
}

/// The class of a fact the kernel does not report, or that an exercise only bounds: such a
/// question is left unanswered.
const NOT_REPORTED: &str = "(not reported)";

/// The answers file for `lab LAB --predict [--exercise all]` and, per run, how many it answers.
pub fn right_answers(lab: &str, exercises: bool) -> (String, Vec<usize>) {
    let mut args = vec!["lab", lab, "--predict", "--questions"];
    if exercises {
        args.extend(["--exercise", "all"]);
    }
    let o = xtask(&args);
    assert!(o.status.success(), "{}", text(&o));
    let template = String::from_utf8_lossy(&o.stdout).to_string();
    let default = snapshot_classes(lab);
    let (mut out, mut counts) = (String::new(), Vec::new());
    let mut fixed: Vec<(String, String, String, bool)> = Vec::new();
    if !exercises {
        counts.push(0);
    }
    for line in template.lines() {
        if let Some(name) = line
            .strip_prefix("[exercise ")
            .and_then(|r| r.strip_suffix(']'))
        {
            fixed = shows(lab, name);
            counts.push(0);
            out.push_str(line);
            out.push('\n');
            continue;
        }
        let Some((key, comment)) = line.split_once(" = ?") else {
            continue;
        };
        let exact = comment.contains("another number");
        let (step, counter) = key.split_once(": ").unwrap();
        let from_shows = fixed
            .iter()
            .find(|(s, c, _, e)| s == step && c == counter && *e == exact)
            .map(|f| f.2.clone());
        let changed_elsewhere = fixed.iter().any(|(s, c, _, _)| s == step && c == counter);
        let from_default = default
            .iter()
            .find(|(s, c, _)| s == step && c == counter)
            .map(|f| f.2.clone());
        let answer = match (from_shows, changed_elsewhere) {
            (Some(a), _) if a == NOT_REPORTED => None,
            (Some(a), _) => Some(a),
            (None, true) => None, // named by a fact that does not fix its class
            (None, false) => from_default,
        };
        if let Some(a) = answer {
            out.push_str(&format!("{key} = {a}\n"));
            *counts.last_mut().unwrap() += 1;
        }
    }
    (out, counts)
}

/// Checks each run's `predictions: K of N right` line: all right, as many as answered.
pub fn assert_all_right(out: &str, counts: &[usize]) {
    let lines: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("predictions: "))
        .collect();
    assert_eq!(lines.len(), counts.len(), "one score per run:\n{out}");
    for (line, n) in lines.iter().zip(counts) {
        assert!(*n > 0, "no question could be answered:\n{out}");
        assert!(
            line.starts_with(&format!("predictions: {n} of {n} right")),
            "{line} (expected {n} of {n}):\n{out}"
        );
    }
    assert!(!out.contains("  ✗ "), "{out}");
}
