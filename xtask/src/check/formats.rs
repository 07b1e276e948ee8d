//! The check's reports: the terminal table, check.json, junit.xml and check.ktap (KTAP
//! version 1, nested kernel x mode -> lab -> expectation, readable by the kernel's own
//! `tools/testing/kunit/kunit.py parse`). All are pure functions of a [`Report`].

use super::{Check, Entry, Kind, Report, RunStatus, Verdict};
use anyhow::{Context, Result};
use std::fmt::Write;
use std::path::Path;

/// Writes check.json, junit.xml and check.ktap into `dir`, each atomically (temp + rename).
pub fn write_all(dir: &Path, r: &Report) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, text) in [
        ("check.json", serde_json::to_string_pretty(r)?),
        ("junit.xml", junit(r)),
        ("check.ktap", ktap(r)),
    ] {
        crate::cache::write_file(&dir.join(name), text)?;
    }
    Ok(())
}

pub fn table(entries: &[Entry]) -> String {
    let w = entries.iter().map(|e| e.id.len()).max().unwrap_or(3).max(3);
    let kw = entries
        .iter()
        .map(|e| e.kernel.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let mut out = format!(
        "{:<w$}  {:<kw$}  {:<5}  {:<10}  {:>6}  {:>8}\n",
        "lab", "kernel", "mglru", "result", "passed", "wall"
    );
    for e in entries {
        let new = if e.new == Some(true) { "  NEW" } else { "" };
        let _ = writeln!(
            out,
            "{:<w$}  {:<kw$}  {:<5}  {:<10}  {:>6}  {:>7.2}s{new}",
            e.id,
            e.kernel,
            e.mglru.name(),
            e.result.name(),
            format!("{}/{}", e.passed, e.runs),
            e.median_wall_secs
        );
        for f in &e.details {
            let _ = writeln!(out, "    {f}");
        }
    }
    out
}

fn xml_escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '&' => "&amp;".into(),
            '<' => "&lt;".into(),
            '>' => "&gt;".into(),
            '"' => "&quot;".into(),
            '\'' => "&apos;".into(),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => " ".into(),
            c => c.to_string(),
        })
        .collect()
}

fn class_of(e: &Entry) -> String {
    let prefix = match e.kind {
        Kind::Lab => "kernel-lab",
        Kind::Selftest => "selftests",
    };
    format!("{prefix}.{}.mglru-{}", e.kernel, e.mglru.name())
}

/// JUnit XML: one testcase per entry. failed is `<failure>`; error and untestable are
/// `<error>`; skipped and xfail are `<skipped>` with the reason; flaky passes with a
/// `<flakyFailure>` (Maven Surefire's rerun format) and its rate in `<system-out>`.
pub fn junit(r: &Report) -> String {
    let entries = &r.results;
    let count = |f: &dyn Fn(Verdict) -> bool| entries.iter().filter(|e| f(e.result)).count();
    let failures = count(&|v| v == Verdict::Failed);
    let errors = count(&|v| matches!(v, Verdict::Error | Verdict::Untestable));
    let skipped = count(&|v| matches!(v, Verdict::Skipped | Verdict::Xfail));
    // Runs' wall time, each boot counted once (a selftest boot serves every test).
    let time: f64 = r.runs.iter().map(|x| x.wall_secs).sum();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"kernel-lab\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" time=\"{time:.3}\">",
        entries.len()
    );
    let _ = writeln!(
        out,
        "  <testsuite name=\"kernel-lab\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\" time=\"{time:.3}\">",
        entries.len()
    );
    let _ = writeln!(
        out,
        "    <properties>\n      <property name=\"tool\" value=\"{}\"/>\n      <property name=\"accelerator\" value=\"{}\"/>\n      <property name=\"verdict\" value=\"{}\"/>\n    </properties>",
        xml_escape(&r.provenance.tool),
        xml_escape(&r.provenance.accelerator),
        xml_escape(&r.verdict)
    );
    for e in entries {
        let _ = write!(
            out,
            "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
            xml_escape(&class_of(e)),
            xml_escape(&e.id),
            e.median_wall_secs
        );
        let body = junit_body(e);
        match body {
            None => out.push_str("/>\n"),
            Some(b) => {
                let _ = writeln!(out, ">\n{b}\n    </testcase>");
            }
        }
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

/// What a JUnit testcase holds for an entry's verdict (None for a pass: an empty testcase).
fn junit_body(e: &Entry) -> Option<String> {
    let details = xml_escape(&e.details.join("\n"));
    let rate = format!("{}: {}/{} runs passed", e.result.name(), e.passed, e.runs);
    match e.result {
        Verdict::Passed => None,
        Verdict::Flaky => Some(format!(
            "      <flakyFailure message=\"{}\">{details}</flakyFailure>\n      <system-out>{}</system-out>",
            xml_escape(&rate),
            xml_escape(&rate)
        )),
        Verdict::Failed => Some(format!(
            "      <failure message=\"{}\">{details}</failure>",
            xml_escape(&rate)
        )),
        Verdict::Error | Verdict::Untestable => Some(format!(
            "      <error message=\"{}\">{details}</error>",
            xml_escape(&format!(
                "{}: {}",
                e.result.name(),
                e.details.first().map(String::as_str).unwrap_or("")
            ))
        )),
        Verdict::Skipped | Verdict::Xfail => Some(format!(
            "      <skipped message=\"{}\"/>",
            xml_escape(&format!("{}: {}", e.result.name(), e.details.join("; ")))
        )),
    }
}

/// A KTAP test name: one line, no `#` (which starts a directive).
fn ktap_name(s: &str) -> String {
    s.replace('Δ', "delta")
        .replace('#', "no.")
        .replace(['\n', '\r'], " ")
        .trim()
        .to_string()
}

fn ktap_line(ok: bool, n: usize, name: &str, directive: Option<(&str, &str)>) -> String {
    let mut l = format!(
        "{} {n} {}",
        if ok { "ok" } else { "not ok" },
        ktap_name(name)
    );
    if let Some((d, why)) = directive {
        let why = ktap_name(why);
        let _ = write!(l, " # {d}");
        if !why.is_empty() {
            let _ = write!(l, " {why}");
        }
    }
    l
}

/// The result line of an entry: ok/not ok with the directive its verdict needs.
fn entry_line(e: &Entry, n: usize, name: &str) -> String {
    let first = e.details.first().map(String::as_str).unwrap_or("");
    match e.result {
        Verdict::Passed => ktap_line(true, n, name, None),
        Verdict::Flaky => format!(
            "{}  # flaky: passed {} of {} runs",
            ktap_line(true, n, name, None),
            e.passed,
            e.runs
        ),
        Verdict::Failed => ktap_line(false, n, name, None),
        Verdict::Xfail => ktap_line(true, n, name, Some(("XFAIL", first))),
        Verdict::Skipped => ktap_line(
            true,
            n,
            name,
            Some(("SKIP", first.strip_prefix("skipped: ").unwrap_or(first))),
        ),
        Verdict::Error => ktap_line(false, n, name, Some(("ERROR", first))),
        Verdict::Untestable => ktap_line(
            false,
            n,
            name,
            Some(("ERROR", &format!("untestable: {first}"))),
        ),
    }
}

fn check_line(c: &Check, n: usize) -> String {
    match c.status {
        RunStatus::Passed => ktap_line(true, n, &c.name, None),
        RunStatus::Failed => ktap_line(false, n, &c.name, None),
        RunStatus::Error => ktap_line(false, n, &c.name, Some(("ERROR", &c.detail))),
        RunStatus::Skipped => ktap_line(true, n, &c.name, Some(("SKIP", &c.detail))),
        RunStatus::Xfail => ktap_line(true, n, &c.name, Some(("XFAIL", &c.detail))),
    }
}

/// Appends a subtest header at `indent` levels.
fn header(out: &mut String, indent: usize, name: &str, count: usize) {
    let pad = "    ".repeat(indent);
    let _ = writeln!(out, "{pad}KTAP version 1");
    let _ = writeln!(out, "{pad}# Subtest: {}", ktap_name(name));
    let _ = writeln!(out, "{pad}1..{count}");
}

/// check.ktap: KTAP version 1. Top level: one test per kernel and MGLRU mode; inside, one per
/// lab (its expectations, snapshot, health and completeness inside that) and one per selftest
/// program (its tests inside). Details of what did not pass are `#` diagnostic lines.
pub fn ktap(r: &Report) -> String {
    let groups = group_by(r.results.iter(), |e| {
        format!("kernel {} mglru-{}", e.kernel, e.mglru.name())
    });
    let mut out = String::from("KTAP version 1\n");
    let _ = writeln!(
        out,
        "# {}; verdict {}",
        ktap_name(&r.provenance.tool),
        r.verdict
    );
    let _ = writeln!(out, "1..{}", groups.len());
    for (gi, (group, entries)) in groups.iter().enumerate() {
        // Labs are children; the selftests of one program are grouped under it.
        let children = group_by(entries.iter().copied(), |e| match e.kind {
            Kind::Lab => format!("lab {}", e.id),
            Kind::Selftest => format!("selftest {}", e.id.split('/').next().unwrap_or(&e.id)),
        });
        header(&mut out, 1, group, children.len());
        let mut group_ok = true;
        for (ci, (_, members)) in children.iter().enumerate() {
            let line = match members[0].kind {
                Kind::Selftest if members[0].id.contains('/') => {
                    ktap_program(&mut out, members, ci + 1)
                }
                _ => ktap_lab(&mut out, members[0], ci + 1),
            };
            group_ok &= line.starts_with("ok");
            let _ = writeln!(out, "    {line}");
        }
        let _ = writeln!(out, "{}", ktap_line(group_ok, gi + 1, group, None));
    }
    out
}

/// Entries grouped by `key`, groups and members in their first-seen order.
fn group_by<'a>(
    entries: impl Iterator<Item = &'a Entry>,
    key: impl Fn(&Entry) -> String,
) -> Vec<(String, Vec<&'a Entry>)> {
    let mut groups: Vec<(String, Vec<&Entry>)> = Vec::new();
    for e in entries {
        let k = key(e);
        match groups.iter_mut().find(|(n, _)| *n == k) {
            Some((_, v)) => v.push(e),
            None => groups.push((k, vec![e])),
        }
    }
    groups
}

/// A selftest program's tests as a subtest (each with its details); returns the program's
/// own result line, `n`th in its group: not ok when any test is bad.
fn ktap_program(out: &mut String, tests: &[&Entry], n: usize) -> String {
    let name = tests[0].id.split('/').next().unwrap_or(&tests[0].id);
    header(out, 2, name, tests.len());
    for (ti, t) in tests.iter().enumerate() {
        for d in t.details.iter().filter(|_| t.result != Verdict::Passed) {
            let _ = writeln!(out, "        # {}", ktap_name(d));
        }
        let test = t.id.split_once('/').map(|(_, t)| t).unwrap_or(&t.id);
        let _ = writeln!(out, "        {}", entry_line(t, ti + 1, test));
    }
    let mut summary = tests[0].clone();
    summary.result = match tests.iter().any(|t| t.result.is_bad()) {
        true => Verdict::Failed,
        false => Verdict::Passed,
    };
    entry_line(&summary, n, name)
}

/// A lab's checks as a subtest, then its details; returns its result line, `n`th in its group.
fn ktap_lab(out: &mut String, e: &Entry, n: usize) -> String {
    if !e.checks.is_empty() {
        header(out, 2, &e.id, e.checks.len());
        for (k, c) in e.checks.iter().enumerate() {
            if !c.detail.is_empty() && c.status != RunStatus::Passed {
                let _ = writeln!(out, "        # {}", ktap_name(&c.detail));
            }
            let _ = writeln!(out, "        {}", check_line(c, k + 1));
        }
    }
    for d in e.details.iter().filter(|_| e.result != Verdict::Passed) {
        let _ = writeln!(out, "    # {}", ktap_name(d));
    }
    entry_line(e, n, &e.id)
}

#[cfg(test)]
mod tests {
    use super::super::tests::entry;
    use super::super::*;
    use super::*;

    /// A report with one entry of every verdict, labs with detail checks and selftests.
    pub fn sample() -> Report {
        let mut lab = entry("2-cgroup-limit", Verdict::Failed);
        lab.checks = vec![
            Check {
                name: "run complete".into(),
                status: RunStatus::Passed,
                detail: String::new(),
            },
            Check {
                name: "kernel health".into(),
                status: RunStatus::Passed,
                detail: String::new(),
            },
            Check {
                name: "expectation Δ W/memory.stat.pgscan_direct > 0 [step read]".into(),
                status: RunStatus::Failed,
                detail: "got 0".into(),
            },
            Check {
                name: "expectation Δ x == 0 [step y]".into(),
                status: RunStatus::Skipped,
                detail: "not judged on this kernel".into(),
            },
            Check {
                name: "snapshot 2-cgroup-limit.snap".into(),
                status: RunStatus::Passed,
                detail: String::new(),
            },
        ];
        let mut skipped = entry("5-proactive", Verdict::Skipped);
        skipped.details = vec![
            "skipped: lab 5-proactive is for kernels >= 6.12, not 6.1.158: no swappiness=".into(),
        ];
        let st = |name: &str, v: Verdict, detail: &str| {
            let mut e = entry(&format!("test_memcontrol/{name}"), v);
            e.kind = Kind::Selftest;
            e.index = 5;
            if !detail.is_empty() {
                e.details = vec![detail.into()];
            }
            e
        };
        let results = vec![
            entry("1-global-pressure", Verdict::Passed),
            lab,
            entry("3-oom-kinds", Verdict::Flaky),
            entry("4-memory-high", Verdict::Error),
            skipped,
            entry("6-kswapd-per-node", Verdict::Untestable),
            st("test_memcg_min", Verdict::Passed, ""),
            st(
                "test_memcg_low",
                Verdict::Xfail,
                "declared expected failure: r",
            ),
            st("test_memcg_sock", Verdict::Skipped, "skipped: no IPv6"),
            st(
                "test_memcg_max",
                Verdict::Error,
                "no result: test_memcontrol killed by SIGKILL after test_memcg_min",
            ),
        ];
        let mut r = super::super::tests::report_for_formats(results);
        r.runs = vec![RunRecord {
            index: 0,
            id: "1-global-pressure".into(),
            kernel: "6.12.117".into(),
            mglru: Mode::Lab,
            attempt: 1,
            retry: false,
            status: RunStatus::Passed,
            wall_secs: 3.25,
            healthy: true,
            health: vec![],
            log: PathBuf::from("target/kernel-lab/check/runs/x/1"),
        }];
        r
    }

    #[test]
    fn junit_has_a_case_per_entry_with_failures_errors_and_skips() {
        let xml = junit(&sample());
        let doc = roxmltree::Document::parse(&xml).expect("junit.xml is XML");
        let suite = doc
            .descendants()
            .find(|n| n.has_tag_name("testsuite"))
            .unwrap();
        assert_eq!(suite.attribute("tests"), Some("10"));
        assert_eq!(suite.attribute("failures"), Some("1"));
        assert_eq!(suite.attribute("errors"), Some("3"));
        assert_eq!(suite.attribute("skipped"), Some("3"));
        assert_eq!(suite.attribute("time"), Some("3.250"));
        let case = |name: &str| {
            doc.descendants()
                .find(|n| n.has_tag_name("testcase") && n.attribute("name") == Some(name))
                .unwrap()
        };
        let child = |name: &str, tag: &str| case(name).children().find(|n| n.has_tag_name(tag));
        assert!(child("1-global-pressure", "failure").is_none());
        assert!(
            child("2-cgroup-limit", "failure")
                .unwrap()
                .text()
                .unwrap()
                .contains("vmstat.x > 0")
        );
        assert!(child("3-oom-kinds", "flakyFailure").is_some());
        assert!(child("4-memory-high", "error").is_some());
        assert!(
            child("6-kswapd-per-node", "error")
                .unwrap()
                .attribute("message")
                .unwrap()
                .starts_with("untestable: ")
        );
        assert!(
            child("test_memcontrol/test_memcg_low", "skipped")
                .unwrap()
                .attribute("message")
                .unwrap()
                .starts_with("xfail: declared")
        );
        assert_eq!(
            case("test_memcontrol/test_memcg_min").attribute("classname"),
            Some("selftests.6.12.117.mglru-lab")
        );
    }

    #[test]
    fn ktap_nests_kernels_labs_and_expectations() {
        let k = ktap(&sample());
        assert!(k.starts_with("KTAP version 1\n"), "{k}");
        let has = |l: &str| assert!(k.lines().any(|x| x == l), "{l:?} not in\n{k}");
        has("1..1");
        has("    # Subtest: kernel 6.12.117 mglru-lab");
        has("    1..7");
        has("    ok 1 1-global-pressure");
        has("        # Subtest: 2-cgroup-limit");
        has("        not ok 3 expectation delta W/memory.stat.pgscan_direct > 0 [step read]");
        has("        ok 4 expectation delta x == 0 [step y] # SKIP not judged on this kernel");
        has("    not ok 2 2-cgroup-limit");
        has("    ok 3 3-oom-kinds  # flaky: passed 2 of 3 runs");
        has(
            "    ok 5 5-proactive # SKIP lab 5-proactive is for kernels >= 6.12, not 6.1.158: no swappiness=",
        );
        has("        ok 2 test_memcg_low # XFAIL declared expected failure: r");
        has(
            "        not ok 4 test_memcg_max # ERROR no result: test_memcontrol killed by SIGKILL after test_memcg_min",
        );
        has("    not ok 7 test_memcontrol");
        has("not ok 1 kernel 6.12.117 mglru-lab");
        // A `#` inside a name would start a directive.
        assert!(k.contains("(got 0) & \"q\" no. 1"), "{k}");
    }

    #[test]
    fn the_kernels_own_kunit_parser_reads_check_ktap() {
        let ktap = ktap(&sample());
        let out = crate::check::tests::kunit_parse(&ktap);
        assert!(
            !out.contains("[ERROR]") && !out.contains("Could not find"),
            "{out}"
        );
        // kunit.py counts the leaves: the five checks of lab 2, the other labs, four selftests.
        assert!(
            out.contains("Ran 14 tests: passed: 7, failed: 4, skipped: 3"),
            "{out}"
        );
        assert!(out.contains("2-cgroup-limit"), "{out}");
    }
}
