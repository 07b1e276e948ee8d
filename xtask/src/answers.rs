//! The questions of a lab's README and their answers, apart: a run ends with the questions
//! (answers folded away, as the README's `<details>` fold them on GitHub), and `cargo xtask
//! answers N` prints the answers when the student wants them. Read from the README as written,
//! generated exercise blocks included (readme.rs keeps those true to lab.toml). Pure but for
//! reading the file.

use crate::exit::bad_input;
use crate::lab::LabDir;
use crate::units::wrap;
use anyhow::{Context, Result};

/// One question of a README and its folded answer, as plain text.
#[derive(Debug, Clone, PartialEq)]
pub struct Qa {
    /// The README section it is in (`Think about it`, `Change this and predict`).
    pub section: String,
    pub question: String,
    pub answer: String,
}

/// Every `<details>` answer of a README with the question before it: from the start of its
/// list item, its generated exercise block, or its section, whichever is nearest.
pub fn extract(readme: &str) -> Vec<Qa> {
    let lines: Vec<&str> = readme.lines().collect();
    let mut out = Vec::new();
    let mut section = String::new();
    let mut start = 0;
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i];
        let t = l.trim_start();
        if let Some(h) = t.strip_prefix("## ") {
            section = h.trim().to_string();
            start = i + 1;
        } else if t.starts_with("<!-- exercise ")
            || t.starts_with("- ")
            || t.split_once(". ")
                .is_some_and(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
        {
            start = i;
        }
        if let Some(at) = l.find("<details>") {
            let mut question: Vec<&str> = lines[start..i].to_vec();
            question.push(&l[..at]);
            // The block runs to the line that closes it; the answer follows its summary.
            let end = (i..lines.len())
                .find(|&k| lines[k].contains("</details>"))
                .unwrap_or(lines.len() - 1);
            let block = lines[i..=end].join("\n");
            let block = &block[at..];
            let from = block.find("</summary>").map(|k| k + 10).unwrap_or(0);
            let to = block.find("</details>").unwrap_or(block.len()).max(from);
            out.push(Qa {
                section: section.clone(),
                question: plain(&question.join("\n")),
                answer: plain(&block[from..to]),
            });
            i = end + 1;
            start = i;
            continue;
        }
        i += 1;
    }
    out
}

/// Markdown and HTML as terminal text: tags dropped (`<code>x</code>` -> `x`), entities
/// decoded, generated-block comments removed, paragraphs kept apart by blank lines.
pub fn plain(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(a) = rest.find('<') {
        out.push_str(&rest[..a]);
        match rest[a..].find('>') {
            Some(b) => {
                let tag = &rest[a..a + b + 1];
                if tag.starts_with("<code") || tag.starts_with("</code") {
                    out.push('`');
                }
                rest = &rest[a + b + 1..];
            }
            None => {
                out.push_str(&rest[a..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    let out = out
        .replace("&gt;", ">")
        .replace("&lt;", "<")
        .replace("&quot;", "\"")
        .replace("&amp;", "&");
    // Paragraphs: runs of non-blank lines; code blocks kept line by line.
    let mut paras: Vec<String> = Vec::new();
    let mut cur: Vec<String> = Vec::new();
    let mut code = false;
    for line in out.lines() {
        let t = line.trim();
        if t.starts_with("```") {
            code = !code;
            continue;
        }
        if code {
            cur.push(format!("    {t}"));
            continue;
        }
        if t.is_empty() {
            if !cur.is_empty() {
                paras.push(cur.join("\n"));
                cur.clear();
            }
        } else if cur.last().is_some_and(|l| !l.starts_with("    ")) && !t.starts_with("- ") {
            let last = cur.last_mut().expect("checked");
            last.push(' ');
            last.push_str(t);
        } else {
            cur.push(t.to_string());
        }
    }
    if !cur.is_empty() {
        paras.push(cur.join("\n"));
    }
    paras.join("\n\n")
}

/// A lab's README questions and answers.
pub fn of(lab: &LabDir) -> Result<Vec<Qa>> {
    let path = lab.dir.join("README.md");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(extract(&text))
}

/// `2` for `2-cgroup-limit`: what a student types.
fn short(id: &str) -> &str {
    id.split_once('-')
        .filter(|(n, _)| n.parse::<u32>().is_ok())
        .map(|(n, _)| n)
        .unwrap_or(id)
}

/// Text wrapped paragraph by paragraph (indented lines, such as commands, kept as they are).
fn wrapped(text: &str, width: usize, indent: &str) -> String {
    let mut out = String::new();
    for para in text.split("\n\n") {
        for line in para.lines() {
            if line.starts_with("    ") || line.starts_with("- ") {
                out.push_str(&wrap(line, width, indent, &format!("{indent}  ")));
            } else {
                out.push_str(&wrap(line, width, indent, indent));
            }
        }
    }
    out
}

/// The questions, numbered, without their answers (the end of a lab's report).
pub fn render_questions(lab: &LabDir, qas: &[Qa], width: usize) -> String {
    if qas.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "\nquestions to think about (labs/{}/README.md; answers: `cargo xtask answers {}`):\n",
        lab.id,
        short(&lab.id)
    );
    for (i, q) in qas.iter().enumerate() {
        let first = q.question.split("\n\n").next().unwrap_or("");
        let first = first
            .trim_start_matches(|c: char| c.is_ascii_digit())
            .trim_start_matches(". ")
            .trim()
            .replace("**", "");
        out.push_str(&wrap(&first, width, &format!("  {:>2}. ", i + 1), "      "));
    }
    out
}

/// `cargo xtask answers LAB [N]`: each question with its answer (or only question N).
pub fn render_answers(
    lab: &LabDir,
    qas: &[Qa],
    only: Option<usize>,
    width: usize,
) -> Result<String> {
    if qas.is_empty() {
        anyhow::bail!("labs/{}/README.md has no folded answers", lab.id);
    }
    if let Some(n) = only.filter(|n| *n == 0 || *n > qas.len()) {
        bad_input!("lab {} has questions 1 to {}, not {n}", lab.id, qas.len());
    }
    let mut out = String::new();
    for (i, q) in qas.iter().enumerate() {
        if only.is_some_and(|n| n != i + 1) {
            continue;
        }
        out.push_str(&format!("\n{}. [{}]\n", i + 1, q.section));
        let question = q
            .question
            .trim_start_matches(|c: char| c.is_ascii_digit())
            .trim_start_matches(". ")
            .replace("**", "");
        out.push_str(&wrapped(&question, width, "   "));
        out.push_str("\n   Answer:\n");
        out.push_str(&wrapped(&q.answer, width, "   "));
    }
    Ok(out)
}

impl crate::AnswersArgs {
    /// `cargo xtask answers N [Q]`: the answers to the lab's README questions.
    pub fn run(self) -> Result<crate::exit::Exit> {
        let found = crate::lab::resolve(&self.lab, &crate::lab::catalog()?)?;
        let qas = of(&found)?;
        let width = crate::units::terminal_width();
        print!("{}", render_answers(&found, &qas, self.number, width)?);
        Ok(crate::exit::Exit::Passed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const README: &str = "# Lab\n\n## Think about it\n\n1. Would `top` show kswapd0?\n   Where did the work go?\n   <details><summary>Answer</summary>No. kswapd was never woken (<code>pgscan_kswapd</code>\n   is 0 &gt; nothing).</details>\n\n2. Why is pgsteal almost pgscan?\n   <details><summary>Answer</summary>Clean cache.</details>\n\n## Change this and predict\n\nEach exercise changes one thing.\n\n<!-- exercise x: generated -->\n**Exercise `x`.** Raise the limit. Predict.\n\n```sh\ncargo xtask lab 2 --set memory_max=128M\n```\n\n<details><summary>Answer (checked)</summary>\n\nW never reaches its limit.\n\n- step `read`: `Δ W/memory.events.max == 0`\n\n</details>\n<!-- /exercise x -->\n";

    #[test]
    fn questions_and_answers_come_apart() {
        let qas = extract(README);
        assert_eq!(qas.len(), 3, "{qas:?}");
        assert_eq!(qas[0].section, "Think about it");
        assert_eq!(
            qas[0].question,
            "1. Would `top` show kswapd0? Where did the work go?"
        );
        assert_eq!(
            qas[0].answer,
            "No. kswapd was never woken (`pgscan_kswapd` is 0 > nothing)."
        );
        assert_eq!(qas[1].question, "2. Why is pgsteal almost pgscan?");
        assert_eq!(qas[2].section, "Change this and predict");
        assert_eq!(
            qas[2].question,
            "**Exercise `x`.** Raise the limit. Predict.\n\n    cargo xtask lab 2 --set memory_max=128M"
        );
        assert_eq!(
            qas[2].answer,
            "W never reaches its limit.\n\n- step `read`: `Δ W/memory.events.max == 0`"
        );
    }

    #[test]
    fn the_report_shows_questions_without_answers() {
        let lab = LabDir {
            id: "2-cgroup-limit".into(),
            dir: "labs/2-cgroup-limit".into(),
        };
        let qas = extract(README);
        let q = render_questions(&lab, &qas, 80);
        assert!(q.contains("answers: `cargo xtask answers 2`"), "{q}");
        assert!(
            q.contains("   1. Would `top` show kswapd0? Where did the work go?\n"),
            "{q}"
        );
        assert!(!q.contains("No. kswapd"), "{q}");
        let a = render_answers(&lab, &qas, Some(2), 80).unwrap();
        assert!(
            a.contains("2. [Think about it]") && a.contains("Clean cache."),
            "{a}"
        );
        assert!(!a.contains("Would `top`"), "{a}");
        assert!(render_answers(&lab, &qas, Some(9), 80).is_err());
    }

    #[test]
    fn every_lab_readme_has_questions_with_answers() {
        for l in crate::lab::catalog().unwrap() {
            let qas = of(&l).unwrap();
            assert!(!qas.is_empty(), "{} has no folded answers", l.id);
            for q in &qas {
                assert!(
                    !q.question.trim().is_empty() && !q.answer.trim().is_empty(),
                    "{}: {q:?}",
                    l.id
                );
                assert!(!q.answer.contains("<details>") && !q.question.contains("</details>"));
            }
        }
    }
}
