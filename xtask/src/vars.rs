//! Lab knobs: a lab.toml declares `[vars]` with defaults and meanings, uses them as `${name}`,
//! and `--set name=value` changes them for one run. Host-only: the guest sees the result.
//!
//! A size that resolves to `0` (or `off`) switches its thing off: a step of size 0 is left out
//! (with the expectations about it), `swap` of size 0 means no swap (and no zswap), and a
//! cgroup's `memory_max`, `memory_high`, `memory_min`, `memory_low` or `swap_high` of 0 means no
//! such limit or protection (`memory_zswap_max = 0` stays: it keeps the group out of zswap).

use anyhow::{Result, bail};
use guest::spec::LabSpec;
use std::collections::BTreeMap;

/// One declared variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Var {
    pub name: String,
    pub default: String,
    pub help: String,
}

/// Reads the `[vars]` table (`name = { default = "...", help = "..." }`) and returns the text
/// with that table blanked out line for line, so that error line numbers stay true.
pub fn extract(text: &str, origin: &str) -> Result<(Vec<Var>, String)> {
    let mut kept = Vec::new();
    let mut section = Vec::new();
    let mut in_vars = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            in_vars = t == "[vars]";
        }
        if in_vars {
            section.push(line);
            kept.push("");
        } else {
            kept.push(line);
        }
    }
    let mut vars = Vec::new();
    if !section.is_empty() {
        let table: toml::Table = toml::from_str(&section.join("\n"))
            .map_err(|e| anyhow::anyhow!("{origin}: [vars]: {}", e.message()))?;
        let Some(toml::Value::Table(t)) = table.get("vars") else {
            bail!("{origin}: [vars] must be a table")
        };
        for (name, v) in t {
            let field = |key: &str| v.get(key).and_then(|x| x.as_str()).map(str::to_string);
            let (Some(default), Some(help)) = (field("default"), field("help")) else {
                bail!(
                    "{origin}: [vars] {name}: write {name} = {{ default = \"...\", help = \"...\" }}"
                );
            };
            vars.push(Var {
                name: name.clone(),
                default,
                help,
            });
        }
    }
    let mut out = kept.join("\n");
    out.push('\n');
    Ok((vars, out))
}

/// Parses `--set` arguments (`name=value`) against the declared variables.
pub fn parse_sets(sets: &[String], vars: &[Var]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for s in sets {
        let Some((name, value)) = s.split_once('=') else {
            bail!("--set {s:?}: write name=value, e.g. --set memory_max=128M")
        };
        let (name, value) = (name.trim(), value.trim());
        if !vars.iter().any(|v| v.name == name) {
            let known: Vec<&str> = vars.iter().map(|v| v.name.as_str()).collect();
            if known.is_empty() {
                bail!("--set {name}: this lab has no variables");
            }
            bail!(
                "--set {name}: no such variable (this lab has: {})",
                known.join(", ")
            );
        }
        out.insert(name.to_string(), value.to_string());
    }
    Ok(out)
}

/// Replaces every `${name}` with its value (set, else default); `off` becomes `0`.
pub fn substitute(
    text: &str,
    vars: &[Var],
    sets: &BTreeMap<String, String>,
    origin: &str,
) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            bail!(
                "{origin}: unclosed ${{ in {:?}",
                &rest[start..rest.len().min(start + 30)]
            )
        };
        let name = &after[..end];
        let Some(var) = vars.iter().find(|v| v.name == name) else {
            bail!("{origin}: ${{{name}}} is not declared in [vars]")
        };
        let value = sets.get(name).unwrap_or(&var.default);
        out.push_str(if value.eq_ignore_ascii_case("off") {
            "0"
        } else {
            value
        });
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Applies "size 0 switches it off": drops zero-size swap, a cgroup's zero memory.max or
/// memory.high (no limit), steps and their expectations. Returns the names of the steps left out.
pub fn switch_off_zeroes(spec: &mut LabSpec) -> Vec<String> {
    if spec.vm.swap.as_ref().is_some_and(|s| s.size.0 == 0) {
        spec.vm.swap = None;
        // Nothing to stand in front of: no zswap, no swap limits.
        spec.vm.zswap = false;
        for cg in &mut spec.cgroups {
            cg.swap_max = None;
            cg.swap_high = None;
        }
    }
    for cg in &mut spec.cgroups {
        let limits = [
            &mut cg.memory_max,
            &mut cg.memory_high,
            &mut cg.memory_min,
            &mut cg.memory_low,
            &mut cg.swap_high,
        ];
        for limit in limits {
            if limit.is_some_and(|z| z.0 == 0) {
                *limit = None;
            }
        }
    }
    let skipped: Vec<String> = spec
        .steps
        .iter()
        .filter(|s| s.size().is_some_and(|z| z.0 == 0))
        .map(|s| s.name().to_string())
        .collect();
    spec.steps
        .retain(|s| !skipped.iter().any(|n| n == s.name()));
    spec.expect
        .retain(|e| !e.step.as_ref().is_some_and(|s| skipped.contains(s)));
    // An observation only at steps left out goes with them.
    spec.observe.retain_mut(|o| {
        let only_here = !o.steps.is_empty();
        o.steps.retain(|s| !skipped.contains(s));
        !(only_here && o.steps.is_empty())
    });
    skipped
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAB: &str = "id = \"t\"\ntitle = \"T\"\n\n[vars]\nmemory_max = { default = \"32M\", help = \"W's memory.max\" }\nswap = { default = \"off\", help = \"zram size\" }\n\n[vm]\nmemory = \"256M\"\nswap = { kind = \"zram\", size = \"${swap}\" }\n\n[[cgroup]]\nname = \"W\"\nmemory_max = \"${memory_max}\"\n";

    #[test]
    fn vars_are_read_and_blanked_line_for_line() {
        let (vars, text) = extract(LAB, "t").unwrap();
        assert_eq!(vars.len(), 2);
        assert_eq!(
            vars[0],
            Var {
                name: "memory_max".into(),
                default: "32M".into(),
                help: "W's memory.max".into()
            }
        );
        assert_eq!(text.lines().count(), LAB.lines().count());
        assert!(!text.contains("[vars]"));
        assert_eq!(text.lines().nth(9), LAB.lines().nth(9));
    }

    #[test]
    fn sets_override_defaults_and_off_is_zero() {
        let (vars, text) = extract(LAB, "t").unwrap();
        let sets = parse_sets(&["memory_max=128M".into()], &vars).unwrap();
        let out = substitute(&text, &vars, &sets, "t").unwrap();
        assert!(out.contains("memory_max = \"128M\""), "{out}");
        assert!(out.contains("size = \"0\""), "{out}");
    }

    #[test]
    fn a_step_of_size_0_takes_its_expectations_and_its_own_observations_along() {
        let text = "id = \"t\"\ntitle = \"T\"\n[vm]\nmemory = \"256M\"\n[[cgroup]]\nname = \"W\"\n\
            [[step]]\nkind = \"anon\"\nname = \"a\"\ncgroup = \"W\"\nsize = \"0\"\n\
            [[step]]\nkind = \"anon\"\nname = \"b\"\ncgroup = \"W\"\nsize = \"1M\"\n\
            [[observe]]\ncounter = \"W/memory.events.max\"\nsteps = [\"a\"]\n\
            [[observe]]\ncounter = \"W/memory.events.high\"\nsteps = [\"a\", \"b\"]\n\
            [[observe]]\ncounter = \"W/memory.events.oom\"\n\
            [[expect]]\nstep = \"a\"\ncounter = \"W/memory.events.max\"\ndelta = \"> 0\"\nwhy = \"w\"\n";
        let mut spec: LabSpec = toml::from_str(text).unwrap();
        assert_eq!(switch_off_zeroes(&mut spec), ["a"]);
        assert_eq!(spec.step_names(), ["b"]);
        assert!(spec.expect.is_empty());
        let observed: Vec<(String, Vec<String>)> = spec
            .observe
            .iter()
            .map(|o| (o.counter.to_string(), o.steps.clone()))
            .collect();
        assert_eq!(
            observed,
            [
                ("W/memory.events.high".to_string(), vec!["b".to_string()]),
                ("W/memory.events.oom".to_string(), vec![]),
            ]
        );
    }

    #[test]
    fn bad_sets_are_rejected() {
        let (vars, _) = extract(LAB, "t").unwrap();
        let e = parse_sets(&["colour=red".into()], &vars)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no such variable") && e.contains("memory_max, swap"),
            "{e}"
        );
        assert!(parse_sets(&["memory_max".into()], &vars).is_err());
        let e = substitute("x = \"${nope}\"", &vars, &BTreeMap::new(), "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("${nope} is not declared"), "{e}");
    }
}
