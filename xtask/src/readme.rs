//! The generated parts of each lab's README: its headline claims with the expectations and the
//! contrast exercise that back them, and each exercise's question and answer, all written from
//! lab.toml so that no answer can go stale (`cargo xtask readme`, checked by a unit test).

use crate::lab::{self, LabDir};
use crate::report::describe_expect;
use anyhow::{Context, Result, bail};
use guest::exercise::Exercise;
use guest::spec::LabSpec;

const NOTE: &str = "generated from lab.toml by `cargo xtask readme`; edit lab.toml, not this block";
const EXERCISE_SECTION: &str = "## Change this and predict";

impl crate::ReadmeArgs {
    /// `cargo xtask readme [LAB...] [--check]`.
    pub fn run(self) -> Result<crate::exit::Exit> {
        let all = lab::catalog()?;
        let chosen = match self.labs.is_empty() {
            true => all.clone(),
            false => self
                .labs
                .iter()
                .map(|l| lab::resolve(l, &all))
                .collect::<Result<_>>()?,
        };
        run_cli(&chosen, self.check).map(crate::exit::Exit::passed_if)
    }
}

/// `cargo xtask readme [--check]` on these labs.
pub fn run_cli(labs: &[LabDir], check: bool) -> Result<bool> {
    let mut stale = Vec::new();
    for l in labs {
        let path = l.dir.join("README.md");
        let old = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let new = generate(l, &old)?;
        if new == old {
            continue;
        }
        if check {
            stale.push(l.id.clone());
        } else {
            std::fs::write(&path, &new).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("readme: wrote {}", path.display());
        }
    }
    if !stale.is_empty() {
        println!(
            "stale README(s): {} (run `cargo xtask readme` and commit the result)",
            stale.join(", ")
        );
    }
    Ok(stale.is_empty())
}

/// The README text with every generated block written from the lab's spec.
pub fn generate(l: &LabDir, readme: &str) -> Result<String> {
    let spec = lab::load(&l.spec_path())?;
    let cmd = command_name(&l.id);
    let mut text = readme.to_string();
    if !spec.headlines.is_empty() {
        text = put_block(
            &text,
            "headlines",
            &headlines(&spec, &cmd),
            Place::BeforeFirstSection,
        );
    }
    for x in &spec.exercises {
        let body = exercise(l, &spec, x, &cmd)?;
        text = put_block(
            &text,
            &format!("exercise {}", x.name),
            &body,
            Place::EndOfExercises,
        );
    }
    Ok(remove_orphans(&text, &spec))
}

/// `2` for `2-cgroup-limit`: what a student types.
fn command_name(id: &str) -> String {
    match id.split_once('-') {
        Some((n, _)) if n.parse::<u32>().is_ok() => n.to_string(),
        _ => id.to_string(),
    }
}

fn headlines(spec: &LabSpec, cmd: &str) -> String {
    let what = |name: &String| {
        spec.expect
            .iter()
            .find(|e| e.name.as_ref() == Some(name))
            .map(describe_expect)
            .unwrap_or_default()
    };
    let mut out = String::from("**What this lab shows, and how each claim is checked:**\n\n");
    for h in &spec.headlines {
        let checks: Vec<String> = h.expect.iter().map(|n| format!("`{}`", what(n))).collect();
        let x = spec.exercises.iter().find(|x| x.name == h.contrast);
        let fails: Vec<String> = x
            .map(|x| {
                let f = x.fails.iter().filter(|f| h.expect.contains(f));
                f.map(|n| format!("`{}`", what(n))).collect()
            })
            .unwrap_or_default();
        let sets = x.map(|x| x.set_args().join(" --set ")).unwrap_or_default();
        out.push_str(&format!(
            "- **{}**\n  Checked by: {}.\n  Contrast, without the cause: `cargo xtask lab {cmd} --set {sets}` (exercise `{}`), where {} {}.\n",
            h.claim.trim(),
            checks.join("; "),
            h.contrast,
            fails.join("; "),
            if fails.len() == 1 { "fails" } else { "fail" },
        ));
    }
    out
}

fn exercise(l: &LabDir, spec: &LabSpec, x: &Exercise, cmd: &str) -> Result<String> {
    let variant = lab::load_with(&l.spec_path(), &x.set_args())
        .with_context(|| format!("exercise {} of {}", x.name, l.id))?;
    for n in &x.fails {
        if !variant
            .spec
            .expect
            .iter()
            .any(|e| e.name.as_ref() == Some(n))
        {
            bail!(
                "{}: exercise {}: `fails` lists {n:?}, which its --set values leave out with its step",
                l.spec_path().display(),
                x.name
            );
        }
    }
    let sets = x.set_args().join(" --set ");
    let mut out = format!(
        "**Exercise `{}`.** {}\n\n```sh\ncargo xtask lab {cmd} --set {sets}\n```\n\n",
        x.name,
        x.ask.trim()
    );
    out.push_str(&format!(
        "<details><summary>Answer (checked on the kernel by <code>cargo xtask lab {cmd} --exercise {}</code>)</summary>\n\n",
        x.name
    ));
    out.push_str(x.answer.trim());
    out.push_str("\n\nWhat the kernel shows in this run:\n\n");
    for sf in &x.shows {
        let step = sf
            .step
            .as_deref()
            .map(|s| format!("step `{s}`"))
            .unwrap_or("whole run".into());
        out.push_str(&format!("- {step}: `{}`\n", sf.written));
    }
    out.push('\n');
    out.push_str(&outcome_lines(spec, &variant, x));
    out.push_str("\n</details>\n");
    Ok(out)
}

/// What an exercise's run shows in its expectations: which fail, which may, how many pass,
/// what varies, and the steps its `--set` values leave out.
fn outcome_lines(spec: &LabSpec, variant: &lab::Loaded, x: &Exercise) -> String {
    let mut out = String::new();
    let total = variant.spec.expect.len();
    let listed = |names: &[String]| -> Vec<String> {
        variant
            .spec
            .expect
            .iter()
            .filter(|e| e.name.as_ref().is_some_and(|n| names.contains(n)))
            .map(|e| format!("`{}`", describe_expect(e)))
            .collect()
    };
    let (failing, unsure) = (listed(&x.fails), listed(&x.may_fail));
    let passing = total - failing.len() - unsure.len();
    match failing.len() {
        0 => out.push_str(&format!(
            "No expectation fails: {passing} of {total} pass.\n"
        )),
        n => out.push_str(&format!(
            "Expectations that FAIL ({n} of {total}): {}; {passing} of {total} pass.\n",
            failing.join(", "),
        )),
    }
    if !unsure.is_empty() {
        out.push_str(&format!(
            "Pass in some runs and fail in others ({} of {total}): {}.\n",
            unsure.len(),
            unsure.join(", ")
        ));
    }
    if !x.varies.is_empty() {
        let v: Vec<String> = x.varies.iter().map(|v| format!("`{v}`")).collect();
        out.push_str(&format!("Varies from run to run: {}.\n", v.join(", ")));
    }
    let left_out = spec.expect.len() - total;
    if !variant.skipped.is_empty() {
        out.push_str(&format!(
            "Steps left out (size 0): {}, with their {left_out} expectation(s).\n",
            variant
                .skipped
                .iter()
                .map(|s| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    out
}

enum Place {
    BeforeFirstSection,
    EndOfExercises,
}

/// Replaces the block `<!-- {key}: ... -->` .. `<!-- /{key} -->`, or inserts it.
fn put_block(text: &str, key: &str, body: &str, place: Place) -> String {
    let open = format!("<!-- {key}:");
    let close = format!("<!-- /{key} -->");
    let block = format!("{open} {NOTE} -->\n{body}{close}\n");
    if let (Some(a), Some(b)) = (text.find(&open), text.find(&close))
        && a < b
    {
        let end = b + close.len() + usize::from(text[b + close.len()..].starts_with('\n'));
        return format!("{}{block}{}", &text[..a], &text[end..]);
    }
    let at = match place {
        Place::BeforeFirstSection => text.find("\n## ").map(|i| i + 1),
        Place::EndOfExercises => text.find(EXERCISE_SECTION).map(|s| {
            let after = s + EXERCISE_SECTION.len();
            text[after..]
                .find("\n## ")
                .map(|i| after + i + 1)
                .unwrap_or(text.len())
        }),
    };
    match at {
        Some(i) => format!("{}{block}\n{}", &text[..i], &text[i..]),
        None => {
            let sep = if text.ends_with('\n') { "" } else { "\n" };
            format!("{text}{sep}\n{EXERCISE_SECTION}\n\n{block}")
        }
    }
}

/// Drops exercise blocks whose exercise is gone from lab.toml.
fn remove_orphans(text: &str, spec: &LabSpec) -> String {
    let mut out = text.to_string();
    let mut from = 0;
    while let Some(i) = out[from..].find("<!-- exercise ").map(|i| i + from) {
        let name: String = out[i + 14..]
            .chars()
            .take_while(|c| *c != ':' && *c != ' ')
            .collect();
        let close = format!("<!-- /exercise {name} -->");
        match out[i..].find(&close) {
            Some(j) if !spec.exercises.iter().any(|x| x.name == name) => {
                let end = i + j + close.len();
                let end = end + usize::from(out[end..].starts_with('\n'));
                out.replace_range(i..end, "");
                from = i;
            }
            _ => from = i + 1,
        }
    }
    out
}

/// The text of a README outside its generated blocks.
#[cfg(test)]
fn hand_written(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("<!-- ") {
        out.push_str(&rest[..i]);
        let key: String = rest[i + 5..].chars().take_while(|c| *c != ':').collect();
        let close = format!("<!-- /{key} -->");
        match rest[i..].find(&close) {
            Some(j) => rest = &rest[i + j + close.len()..],
            None => {
                out.push_str("<!-- ");
                rest = &rest[i + 5..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Labs whose README exercises are still hand-written (labs 7-12 are converted by their
    /// own change, issue 16); every other lab's answers must be `[[exercise]]`s.
    const PENDING: &[&str] = &[];

    #[test]
    fn every_readme_is_what_its_lab_toml_generates() {
        for l in lab::catalog().unwrap() {
            let text = std::fs::read_to_string(l.dir.join("README.md")).unwrap();
            let new = generate(&l, &text).unwrap();
            assert!(
                new == text,
                "labs/{}/README.md is stale: run `cargo xtask readme {}`",
                l.id,
                command_name(&l.id)
            );
            let spec = lab::load(&l.spec_path()).unwrap();
            if spec.exercises.is_empty() {
                assert!(
                    PENDING.contains(&l.id.as_str()),
                    "{}: its README's exercises must be [[exercise]]s in lab.toml",
                    l.id
                );
                continue;
            }
            let own = hand_written(&text);
            if let Some(i) = own.find(EXERCISE_SECTION) {
                let section = &own[i..];
                let section = &section[..section[3..]
                    .find("\n## ")
                    .map(|j| j + 3)
                    .unwrap_or(section.len())];
                assert!(
                    !section.contains("<details>"),
                    "{}: a hand-written answer in \"Change this and predict\": make it an [[exercise]]",
                    l.id
                );
            }
        }
    }

    #[test]
    fn blocks_are_replaced_in_place_or_inserted() {
        let text = "# Lab\n\nintro\n\n## A\n\ntext\n\n## Change this and predict\n\nold\n\n## Z\n";
        let t = put_block(text, "headlines", "H\n", Place::BeforeFirstSection);
        assert!(
            t.starts_with("# Lab\n\nintro\n\n<!-- headlines: generated"),
            "{t}"
        );
        let t = put_block(&t, "exercise x", "X1\n", Place::EndOfExercises);
        assert!(t.contains("old\n\n<!-- exercise x: generated"), "{t}");
        assert!(t.contains("X1\n<!-- /exercise x -->\n\n## Z"), "{t}");
        let t2 = put_block(&t, "exercise x", "X2\n", Place::EndOfExercises);
        assert_eq!(t2, t.replace("X1", "X2"));
        let own = hand_written(&t2);
        assert!(
            !own.contains("X2") && !own.contains("H\n") && own.contains("old"),
            "{own}"
        );
    }
}
