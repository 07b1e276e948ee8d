//! Loading a lab.toml: `[vars]` resolved, parsed into the one lab model, checked, every error at
//! its file:line (and column for TOML's own), and the counters the default kernel lacks.

use super::LabDir;
use crate::acquire::KernelChoice;
use crate::exit::{as_bad_input, bad_input};
use crate::vars;
use anyhow::{Context, Result, bail};
use guest::spec::{LabSpec, SpecError, edit_distance};
use std::path::Path;

/// Parses and validates a lab.toml; errors name the file, the line and the field.
pub fn load(path: &Path) -> Result<LabSpec> {
    Ok(load_with(path, &[])?.spec)
}

/// A spec as loaded with its variables resolved.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub spec: LabSpec,
    pub vars: Vec<vars::Var>,
    /// The `--set` values given.
    pub sets: std::collections::BTreeMap<String, String>,
    /// Steps left out because their size resolved to 0.
    pub skipped: Vec<String>,
    /// The spec text as parsed (variables substituted), for locating errors.
    pub text: String,
}

/// Counter names the default kernel (6.12 from kernel-configs/) reports, by family.
const KNOWN_COUNTERS: &str = include_str!("../../../kernel-configs/counters-6.12.txt");

/// Counters in the spec that the default kernel does not have, as located errors (checked
/// before boot when the lab runs on that kernel; other kernels are checked when they report).
pub fn unknown_counters(spec: &LabSpec, text: &str, origin: &str) -> Vec<String> {
    let mut known: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    let mut section = "";
    for line in KNOWN_COUNTERS
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        match line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            Some(name) => section = name,
            None => known.entry(section).or_default().push(line),
        }
    }
    let family_of = |term: &str| -> Option<(&'static str, String)> {
        let (f, key) = guest::counters::family_of(term)?;
        Some((f.known_keys?, key.to_string()))
    };
    let mut errs = Vec::new();
    for (table, index, expr) in spec.counters() {
        for (_, term) in &expr.terms {
            let Some((family, key)) = family_of(term) else {
                continue;
            };
            let names = known.get(family).map(Vec::as_slice).unwrap_or(&[]);
            if names.contains(&key.as_str()) {
                continue;
            }
            let closest = names
                .iter()
                .min_by_key(|n| edit_distance(&key, n))
                .copied()
                .unwrap_or("");
            let e = SpecError {
                table,
                index: Some(index),
                key: "counter",
                message: format!(
                    "{term}: the 6.12 kernel has no {family} key {key:?} (closest: {closest:?})"
                ),
            };
            errs.push(format!("{origin}:{}: {e}", locate(text, &e)));
        }
    }
    errs
}

/// [`load`] with `--set name=value` overrides of the lab's `[vars]`. Its errors are bad
/// input (exit 2).
pub fn load_with(path: &Path, sets: &[String]) -> Result<Loaded> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading {}", path.display()))
        .map_err(as_bad_input)?;
    parse_full(&text, &path.display().to_string(), sets).map_err(as_bad_input)
}

/// [`load_with`], and on the default kernel every counter the spec names checked
/// ([`refuse_unknown_counters`]): what `lab` refuses before anything runs.
pub fn load_for(lab: &LabDir, sets: &[String], kernel: &KernelChoice) -> Result<Loaded> {
    let loaded = load_with(&lab.spec_path(), sets)?;
    refuse_unknown_counters(lab, &loaded, kernel)?;
    Ok(loaded)
}

/// On the default kernel (whose counters kernel-configs/ lists), a spec naming a counter that
/// kernel does not report is bad input; on any other kernel nothing is known to check against.
pub fn refuse_unknown_counters(lab: &LabDir, loaded: &Loaded, kernel: &KernelChoice) -> Result<()> {
    let default = matches!(kernel, KernelChoice::Source(None))
        && std::env::var_os(crate::kernel::SOURCE_ENV).is_none();
    if !default {
        return Ok(());
    }
    let origin = lab.spec_path().display().to_string();
    let errs = unknown_counters(&loaded.spec, &loaded.text, &origin);
    if !errs.is_empty() {
        bad_input!(
            "{} counter(s) this kernel does not report:\n  {}",
            errs.len(),
            errs.join("\n  ")
        );
    }
    Ok(())
}

/// [`load`] on text; `origin` names the file in errors.
pub fn parse_spec(text: &str, origin: &str) -> Result<LabSpec> {
    Ok(parse_full(text, origin, &[]).map_err(as_bad_input)?.spec)
}

fn parse_full(text: &str, origin: &str, sets: &[String]) -> Result<Loaded> {
    let (declared, text) = vars::extract(text, origin)?;
    let sets = vars::parse_sets(sets, &declared)?;
    let text = vars::substitute(&text, &declared, &sets, origin)?;
    let hint = match sets.is_empty() {
        true => "",
        false => " (with the --set values given)",
    };
    let misfits = tagged_tables(&text, origin)?;
    if !misfits.is_empty() {
        bail!(located(&misfits, &text, origin, hint));
    }
    let mut spec: LabSpec = toml::from_str(&text).map_err(|e| toml_error(&e, &text, origin))?;
    // What the lab teaches refers to the lab as written; the rest is checked as it will run.
    let mut errs = guest::exercise::validate(&spec);
    errs.extend(unknown_exercise_vars(&spec, &declared));
    errs.extend(unobserved_figures(&spec));
    let skipped = vars::switch_off_zeroes(&mut spec);
    errs.splice(0..0, spec.validate_setup());
    if !errs.is_empty() {
        bail!(located(&errs, &text, origin, hint));
    }
    Ok(Loaded {
        spec,
        vars: declared,
        sets,
        skipped,
        text,
    })
}

/// A TOML syntax or type error at its file:line:column.
fn toml_error(e: &toml::de::Error, text: &str, origin: &str) -> anyhow::Error {
    let (line, col) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
    anyhow::anyhow!("{origin}:{line}:{col}: {}", e.message())
}

/// Semantic errors, each at the file:line of its field.
fn located(errs: &[SpecError], text: &str, origin: &str, hint: &str) -> String {
    let lines: Vec<String> = errs
        .iter()
        .map(|e| format!("{origin}:{}: {e}", locate(text, e)))
        .collect();
    format!(
        "{} problem(s) in the lab spec{hint}:\n  {}",
        errs.len(),
        lines.join("\n  ")
    )
}

/// The `[[step]]` and `[[expect]]` tables as written, each converted to its kind: every field
/// that does not fit its kind, in every table (serde would stop at the first). Type errors of
/// their values keep TOML's line and column.
fn tagged_tables(text: &str, origin: &str) -> Result<Vec<SpecError>> {
    #[derive(serde::Deserialize)]
    struct Tables {
        #[serde(default)]
        step: Vec<guest::spec::StepTable>,
        #[serde(default)]
        expect: Vec<guest::spec::ExpectTable>,
    }
    let t: Tables = toml::from_str(text).map_err(|e| toml_error(&e, text, origin))?;
    let at = |table, i, errs: Vec<guest::step::FieldError>| {
        errs.into_iter().map(move |f| SpecError {
            table,
            index: Some(i),
            key: f.key,
            message: f.message,
        })
    };
    let mut errs = Vec::new();
    for (i, s) in t.step.into_iter().enumerate() {
        if let Err(f) = s.into_step() {
            errs.extend(at("step", i, f));
        }
    }
    for (i, x) in t.expect.into_iter().enumerate() {
        if let Err(f) = x.into_expect() {
            errs.extend(at("expect", i, f));
        }
    }
    Ok(errs)
}

/// Exercises that set variables the lab does not declare.
fn unknown_exercise_vars(spec: &LabSpec, declared: &[vars::Var]) -> Vec<SpecError> {
    let known: Vec<&str> = declared.iter().map(|v| v.name.as_str()).collect();
    let mut errs = Vec::new();
    for (i, x) in spec.exercises.iter().enumerate() {
        for name in x.set.keys().filter(|n| !known.contains(&n.as_str())) {
            errs.push(SpecError {
                table: "exercise",
                index: Some(i),
                key: "set",
                message: format!(
                    "no variable {name:?} in [vars] (this lab has: {})",
                    known.join(", ")
                ),
            });
        }
    }
    errs
}

/// README figures that name a counter the lab does not observe at the figure's step.
fn unobserved_figures(spec: &LabSpec) -> Vec<SpecError> {
    let mut errs = Vec::new();
    for (i, block) in spec.figures.iter().enumerate() {
        for f in &block.facts {
            let known = spec.steps.iter().any(|s| s.name() == f.step);
            if known && crate::evaluate::observed_rule(spec, &f.step, &f.counter).is_none() {
                errs.push(SpecError {
                    table: "figures",
                    index: Some(i),
                    key: "facts",
                    message: format!(
                        "`{f}`: the lab does not observe {} at step {:?}: add it to [[observe]] (class \"shown\" keeps it out of the snapshot)",
                        f.counter, f.step
                    ),
                });
            }
        }
    }
    errs
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    (line, col)
}

/// The line of a semantic error: the key inside the n-th `[[table]]` (or `[table]`), else the
/// table header, else 1.
fn locate(text: &str, e: &SpecError) -> usize {
    let header = match (e.table, e.index) {
        ("", _) => None,
        (t, Some(_)) => Some(format!("[[{t}]]")),
        (t, None) => Some(format!("[{t}]")),
    };
    let lines: Vec<&str> = text.lines().collect();
    let mut start = 0;
    if let Some(h) = &header {
        let mut seen = 0;
        let target = e.index.unwrap_or(0);
        match lines.iter().enumerate().find(|(_, l)| {
            let hit = l.trim() == h;
            if hit {
                seen += 1;
            }
            hit && seen == target + 1
        }) {
            Some((i, _)) => start = i,
            None => return 1,
        }
    }
    for (i, l) in lines
        .iter()
        .enumerate()
        .skip(start + usize::from(header.is_some()))
    {
        let t = l.trim_start();
        if header.is_some() && t.starts_with('[') {
            break;
        }
        if t.strip_prefix(e.key)
            .is_some_and(|r| r.trim_start().starts_with('='))
        {
            return i + 1;
        }
    }
    start + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::catalog;

    const GOOD: &str = "id = \"t\"\ntitle = \"T\"\n\n[vm]\nmemory = \"256M\"\n\n[[cgroup]]\nname = \"W\"\nmemory_max = \"32M\"\n\n[[step]]\nkind = \"anon\"\ncgroup = \"W\"\nsize = \"64M\"\n";

    #[test]
    fn the_spec_loader_never_panics() {
        // Deterministic mutations of a valid spec: flipped, cut and duplicated bytes.
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let full = format!(
            "{GOOD}[[expect]]\nstep = \"anon\"\ncounter = \"W/memory.events.oom_kill\"\ndelta = \"== 1\"\nwhy = \"w\"\n[vars]\nm = {{ default = \"1M\", help = \"h\" }}\n"
        );
        for _ in 0..3000 {
            let mut b = full.as_bytes().to_vec();
            for _ in 0..1 + next() % 3 {
                let i = (next() % b.len() as u64) as usize;
                match next() % 4 {
                    0 => b[i] = next() as u8,
                    1 => b.truncate(i.max(1)),
                    2 => b.insert(i, b"=\"[]{}$\n"[(next() % 8) as usize]),
                    _ => {
                        let tail = b[i..].to_vec();
                        b.extend_from_slice(&tail);
                    }
                }
            }
            let text = String::from_utf8_lossy(&b);
            let _ = parse_full(&text, "fuzz", &["m=2M".to_string()]);
        }
    }

    #[test]
    fn unknown_counters_are_named_with_the_closest_real_one() {
        let text = format!(
            "{GOOD}[[expect]]\ncounter = \"vmstat.pgscan_kswapd_normal + W/memory.events.oom_kill\"\ndelta = \"== 0\"\nwhy = \"w\"\n"
        );
        let spec = parse_spec(&text, "f").unwrap();
        let errs = unknown_counters(&spec, &text, "f");
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with("f:16: [[expect]] #1 field `counter`"),
            "{errs:?}"
        );
        assert!(
            errs[0].contains("no vmstat key \"pgscan_kswapd_normal\" (closest: \"pgscan_kswapd\")"),
            "{errs:?}"
        );
        // Nested groups and memory.events.local are checked against the same names.
        let nested = format!(
            "{GOOD}\n[[cgroup]]\nname = \"W/app\"\n\n[[expect]]\ncounter = \"W/app/memory.events.local.lowe + W/app/memory.stat.pgscan_direct\"\ndelta = \"== 0\"\nwhy = \"w\"\n"
        );
        let spec =
            parse_spec(&nested.replace("cgroup = \"W\"", "cgroup = \"W/app\""), "f").unwrap();
        let errs = unknown_counters(&spec, &nested, "f");
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].contains("no memory.events key \"lowe\" (closest: \"low\")"),
            "{errs:?}"
        );
        // Every lab in the catalog names only counters the kernel has.
        for l in catalog().unwrap() {
            let text = std::fs::read_to_string(l.spec_path()).unwrap();
            let spec = load(&l.spec_path()).unwrap();
            assert_eq!(unknown_counters(&spec, &text, &l.id), Vec::<String>::new());
        }
    }

    #[test]
    fn a_good_spec_loads() {
        let s = parse_spec(GOOD, "lab.toml").unwrap();
        assert_eq!(s.cgroups[0].memory_max.unwrap().0, 32 << 20);
        assert_eq!(s.vm.cpus, 2);
    }

    #[test]
    fn syntax_and_type_errors_name_file_line_and_column() {
        let e = parse_spec(
            &GOOD.replace("memory = \"256M\"", "memory = \"256Q\""),
            "labs/x/lab.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("labs/x/lab.toml:5:"), "{e}");
        assert!(e.contains("unknown unit"), "{e}");
        let e = parse_spec(
            &GOOD.replace("size = \"64M\"", "size = \"64M\"\ncolour = 3"),
            "f",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("f:15:") && e.contains("unknown field `colour`"),
            "{e}"
        );
        let e = parse_spec(
            &GOOD.replace("memory_max = \"32M\"", "memory_max = [1]"),
            "f",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("f:9:"), "{e}");
        let e = parse_spec("id = \"t\"\ntitle = ", "f")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("f:2:"), "{e}");
    }

    #[test]
    fn semantic_errors_name_the_line_of_the_field() {
        let e = parse_spec(&GOOD.replace("cgroup = \"W\"", "cgroup = \"X\""), "f")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("f:13: [[step]] #1 field `cgroup`: cgroup \"X\" is not declared"),
            "{e}"
        );
        let e = parse_spec(
            &GOOD.replace("memory_max = \"32M\"", "memory_max = \"1G\""),
            "f",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("f:9: [[cgroup]] #1 field `memory_max`"), "{e}");
    }

    #[test]
    fn nested_group_errors_name_file_and_line() {
        let child = "\n[[cgroup]]\nname = \"pod/app\"\nmemory_low = \"16M\"\n";
        let e = parse_spec(&format!("{GOOD}{child}"), "f")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("f:17: [[cgroup]] #2 field `name`: cgroup \"pod/app\": its parent \"pod\" is not declared"),
            "{e}"
        );
        let text = format!("{GOOD}\n[[cgroup]]\nname = \"W/app\"\nmemory_low = \"16M\"\n");
        let e = parse_spec(&text, "f").unwrap_err().to_string();
        assert!(
            e.contains("f:18: [[cgroup]] #2 field `memory_low`: 16M is above the parent's memory_low (\"W\": none)"),
            "{e}"
        );
        assert!(
            e.contains("f:13: [[step]] #1 field `cgroup`: cgroup \"W\" has child groups"),
            "{e}"
        );
        let e = parse_spec(&GOOD.replace("name = \"W\"", "name = \"/W\""), "f")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("f:8: [[cgroup]] #1 field `name`: cgroup \"/W\" is an absolute path"),
            "{e}"
        );
    }

    #[test]
    fn a_v1_group_takes_none_of_the_v2_protections_and_does_not_nest() {
        let text = GOOD.replace(
            "name = \"W\"",
            "name = \"W\"\nmemory_low = \"8M\"\nv1 = { swappiness = 0 }",
        );
        let e = parse_spec(&text, "f").unwrap_err().to_string();
        assert!(
            e.contains(
                "field `memory_low`: a cgroup v1 group takes memory_max and v1.swappiness only"
            ),
            "{e}"
        );
        let text = format!("{GOOD}\n[[cgroup]]\nname = \"W/app\"\nv1 = {{}}\n");
        let e = parse_spec(&text, "f").unwrap_err().to_string();
        assert!(
            e.contains("a cgroup v1 group is a plain name (no nesting)"),
            "{e}"
        );
    }

    #[test]
    fn fields_that_do_not_fit_their_kind_are_named_at_their_line() {
        let text = format!(
            "{GOOD}pageout = true\n\n[[step]]\nkind = \"sleep\"\nsize = \"1M\"\n\n[[expect]]\nstep = \"anon\"\nexit = \"killed by SIGKIL\"\nwhy = \"w\"\n"
        );
        let e = parse_spec(
            &text.replace("\"anon\"\ncgroup", "\"read-file\"\ncgroup"),
            "f",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("4 problem(s) in the lab spec"), "{e}");
        assert!(
            e.contains("f:15: [[step]] #1 field `pageout`: only anon steps take pageout"),
            "{e}"
        );
        assert!(
            e.contains("f:19: [[step]] #2 field `size`: a sleep step takes no size"),
            "{e}"
        );
        assert!(
            e.contains("f:17: [[step]] #2 field `ms`: a sleep step needs ms"),
            "{e}"
        );
        assert!(
            e.contains("f:23: [[expect]] #1 field `exit`: \"killed by SIGKIL\": no signal \"SIGKIL\"; did you mean SIGKILL?"),
            "{e}"
        );
        // A type error inside a step keeps TOML's line and column.
        let e = parse_spec(&GOOD.replace("size = \"64M\"", "size = \"lots\""), "f")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("f:14:8:") && e.contains("does not start with a number"),
            "{e}"
        );
    }

    #[test]
    fn exercises_and_headlines_are_checked_with_file_and_line() {
        let text = format!(
            "{GOOD}[[expect]]\nname = \"oom\"\nstep = \"anon\"\nexit = \"killed by SIGKILL\"\nwhy = \"w\"\n\n[[exercise]]\nname = \"x\"\nset = {{ m = \"1M\" }}\nask = \"a\"\nanswer = \"b\"\nshows = [\"anon: exit == exited 0\", \"nope: Δ W/memory.events.max == 0\"]\nfails = [\"om\"]\n\n[[headline]]\nclaim = \"c\"\nexpect = [\"oom\"]\ncontrast = \"x\"\n"
        );
        let e = parse_spec(&text, "f").unwrap_err().to_string();
        assert!(
            e.contains("f:26: [[exercise]] #1 field `shows`: `nope: Δ W/memory.events.max == 0`: no step is named \"nope\""),
            "{e}"
        );
        assert!(
            e.contains("f:27: [[exercise]] #1 field `fails`: no [[expect]] is named \"om\""),
            "{e}"
        );
        assert!(
            e.contains("[[headline]] #1 field `contrast`: in exercise \"x\" none of this claim's expectations fails"),
            "{e}"
        );
        assert!(
            e.contains("f:23: [[exercise]] #1 field `set`: no variable \"m\""),
            "{e}"
        );
        let e = parse_spec(&text.replace("exit == exited 0", "exit = ok"), "f")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("f:26:") && e.contains("write `== value`"),
            "{e}"
        );
    }

    #[test]
    fn every_lab_reaches_the_guest_as_it_was_loaded() {
        // The agent reads the same type from the JSON plan: nothing may be lost on the way.
        for l in catalog().unwrap() {
            let spec = load(&l.spec_path()).unwrap();
            let plan = serde_json::to_string(&spec).unwrap();
            let back: LabSpec = serde_json::from_str(&plan).unwrap();
            assert_eq!(back, spec, "{}", l.id);
        }
    }
}
