//! `cargo xtask check`: every lab (or a filter) on one or more kernels, repeated, sharded, with a
//! summary table, a JSON summary and JUnit XML for CI systems.

use crate::acquire::KernelChoice;
use crate::lab::{self, LabDir, RunOptions, RunResult};
use crate::selftests;
use anyhow::{Context, Result};
use serde::Serialize;
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// `I/N`: this machine runs shard I (1-based) of N.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| format!("shard {s:?}: write I/N, e.g. 1/4"))?;
        let (index, count) = (i.trim().parse::<usize>(), n.trim().parse::<usize>());
        match (index, count) {
            (Ok(index), Ok(count)) if count >= 1 && (1..=count).contains(&index) => {
                Ok(Shard { index, count })
            }
            _ => Err(format!("shard {s:?}: I and N are numbers with 1 <= I <= N")),
        }
    }
}

/// The items of shard `shard`: item k (in the given order) belongs to shard k mod N + 1, so
/// every item is in exactly one shard and shards differ in size by at most one.
pub fn shard_items<T: Clone>(items: &[T], shard: Shard) -> Vec<T> {
    items
        .iter()
        .enumerate()
        .filter(|(k, _)| k % shard.count + 1 == shard.index)
        .map(|(_, t)| t.clone())
        .collect()
}

/// What one lab (or one upstream selftest) did on one kernel over its repeats.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// `lab`, or `selftest` for a test of the kernel's own (then `lab` is `program/test`).
    pub kind: &'static str,
    pub lab: String,
    pub kernel: String,
    /// `on`, `off`, or `lab` (as the lab says).
    pub mglru: &'static str,
    pub runs: usize,
    pub passed: usize,
    /// passed (every run), flaky (some runs), failed (no run), skipped (does not apply),
    /// known-flaky (an upstream selftest declared flaky in this set-up; see selftests.rs).
    pub result: &'static str,
    pub median_wall_secs: f64,
    /// What failed, from the first failing run: expectations, snapshot, run problems.
    pub failures: Vec<String>,
}

fn classify(runs: usize, passed: usize) -> &'static str {
    match passed {
        p if p == runs => "passed",
        0 => "failed",
        _ => "flaky",
    }
}

/// Why a run did not pass, in one line each.
pub fn failure_lines(r: &RunResult) -> Vec<String> {
    let mut out: Vec<String> = r.problems.clone();
    out.extend(
        r.eval
            .verdicts
            .iter()
            .filter(|v| !v.pass)
            .map(|v| format!("expectation {} (got {})", v.what, v.actual)),
    );
    if r.snapshot_matched == Some(false) {
        out.push(format!("snapshot {}.snap differs:", r.spec.id));
        out.extend(r.snapshot_changes.iter().map(|c| format!("  {c}")));
    }
    out
}

pub struct CheckOptions {
    pub labs: Vec<LabDir>,
    pub kernels: Vec<KernelChoice>,
    pub repeat: usize,
    pub shard: Option<Shard>,
    pub run: RunOptions,
    /// MGLRU modes to run (None: as each lab says).
    pub mglru: Vec<Option<bool>>,
    /// Also run the kernel's own cgroup memory selftests (one item per kernel and mode).
    pub selftests: bool,
}

/// One unit of the matrix: a lab, or one boot running the kernel's selftests.
#[derive(Debug, Clone)]
pub enum Item {
    Lab(LabDir),
    Selftests,
}

/// `--mglru`: which LRU implementation(s) to check the labs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mglru {
    On,
    Off,
    Both,
}

impl Mglru {
    pub fn modes(self) -> Vec<Option<bool>> {
        match self {
            Mglru::On => vec![Some(true)],
            Mglru::Off => vec![Some(false)],
            Mglru::Both => vec![Some(true), Some(false)],
        }
    }
}

fn mode_name(m: Option<bool>) -> &'static str {
    match m {
        None => "lab",
        Some(true) => "on",
        Some(false) => "off",
    }
}

/// The whole matrix in a fixed order (kernels, then modes, then labs and the selftests); a shard
/// takes every N-th item of it.
pub fn matrix(opts: &CheckOptions) -> Vec<(KernelChoice, Option<bool>, Item)> {
    let mut items = Vec::new();
    for k in &opts.kernels {
        for m in &opts.mglru {
            for l in &opts.labs {
                items.push((k.clone(), *m, Item::Lab(l.clone())));
            }
            if opts.selftests {
                items.push((k.clone(), *m, Item::Selftests));
            }
        }
    }
    match opts.shard {
        Some(shard) => shard_items(&items, shard),
        None => items,
    }
}

/// Runs the (sharded) matrix; returns one entry per (kernel, mode, lab) and per selftest.
pub fn check(opts: &CheckOptions) -> Result<Vec<Entry>> {
    for k in &opts.kernels {
        // Before anything reads a source: `--kernel-src 6.1` may still need installing.
        crate::setup::ensure_for(opts.run.install, k)?;
    }
    let mut entries = Vec::new();
    for (kernel, mglru, item) in matrix(opts) {
        let run_opts = RunOptions {
            kernel: kernel.clone(),
            sets: vec![],
            mglru,
            ..opts.run.clone()
        };
        let label = kernel.label();
        let lab = match item {
            Item::Lab(lab) => lab,
            Item::Selftests => {
                entries.extend(check_selftests(&run_opts, &label, mglru, opts.repeat)?);
                continue;
            }
        };
        let mut entry = Entry {
            kind: "lab",
            lab: lab.id.clone(),
            kernel: label.clone(),
            mglru: mode_name(mglru),
            runs: 0,
            passed: 0,
            result: "skipped",
            median_wall_secs: 0.0,
            failures: vec![],
        };
        let spec = lab::load(&lab.spec_path())?;
        if let Some(why) = lab::not_applicable(&spec, &run_opts)? {
            entry.failures.push(format!("skipped: {why}"));
            entries.push(entry);
            continue;
        }
        // A lab that fixes the LRU itself does not apply to the other mode.
        let own = spec.vm.mglru;
        if let (Some(want), Some(own)) = (mglru, own)
            && want != own
        {
            entry.failures.push(format!(
                "skipped: the lab itself runs with MGLRU {}",
                mode_name(Some(own))
            ));
            entries.push(entry);
            continue;
        }
        let mut walls = Vec::new();
        for i in 0..opts.repeat {
            eprintln!(
                "check: {} on {label} (MGLRU {}), run {}/{}",
                lab.id,
                mode_name(mglru),
                i + 1,
                opts.repeat
            );
            let r = lab::execute(&lab, &run_opts)?;
            walls.push(r.total.as_secs_f64());
            if r.passed() {
                entry.passed += 1;
            } else {
                if entry.failures.is_empty() {
                    entry.failures = failure_lines(&r);
                }
                lab::print(&r);
            }
        }
        entry.runs = opts.repeat;
        entry.result = classify(opts.repeat, entry.passed);
        entry.median_wall_secs = crate::bench::figure("wall", walls).median;
        entries.push(entry);
    }
    Ok(entries)
}

/// Runs the selftests `repeat` times on one kernel; one entry per test (a test that skipped in
/// every run is skipped with its reason; one that failed in some runs is flaky).
fn check_selftests(
    run_opts: &RunOptions,
    label: &str,
    mglru: Option<bool>,
    repeat: usize,
) -> Result<Vec<Entry>> {
    let mut runs = Vec::new();
    for i in 0..repeat {
        eprintln!(
            "check: selftests on {label} (MGLRU {}), run {}/{repeat}",
            mode_name(mglru),
            i + 1
        );
        runs.push(selftests::run(run_opts)?);
    }
    Ok(selftest_entries(&runs, label, mglru))
}

/// Folds repeated selftest runs into entries (pure, for tests).
pub fn selftest_entries(
    runs: &[selftests::SelftestRun],
    label: &str,
    mglru: Option<bool>,
) -> Vec<Entry> {
    let mut entries: Vec<Entry> = Vec::new();
    let wall =
        crate::bench::figure("wall", runs.iter().map(|r| r.total.as_secs_f64()).collect()).median;
    let blank = |name: String| Entry {
        kind: "selftest",
        lab: name,
        kernel: label.to_string(),
        mglru: mode_name(mglru),
        runs: 0,
        passed: 0,
        result: "skipped",
        median_wall_secs: wall,
        failures: vec![],
    };
    for run in runs {
        // The entry named `name`, made on first sight (entries keep the tests' order).
        let entry = |entries: &mut Vec<Entry>, name: String| -> usize {
            entries
                .iter()
                .position(|e| e.lab == name)
                .unwrap_or_else(|| {
                    entries.push(blank(name));
                    entries.len() - 1
                })
        };
        for problem in &run.problems {
            let i = entry(&mut entries, selftests::ID.to_string());
            entries[i].failures.push(format!(
                "{problem} (console: {})",
                run.kept.join("console.log").display()
            ));
        }
        for (program, results) in &run.programs {
            for t in results {
                let i = entry(&mut entries, format!("{program}/{}", t.name));
                let e = &mut entries[i];
                match &t.outcome {
                    selftests::Outcome::Pass => {
                        e.runs += 1;
                        e.passed += 1;
                    }
                    selftests::Outcome::Fail => {
                        e.runs += 1;
                        if e.failures.is_empty() {
                            e.failures
                                .push(format!("{program} reported: not ok {}", t.name));
                        }
                    }
                    selftests::Outcome::Skip(reason) => {
                        let line = format!("skipped: {reason}");
                        if !e.failures.contains(&line) {
                            e.failures.push(line);
                        }
                    }
                }
            }
        }
    }
    for e in &mut entries {
        e.result = match (e.lab == selftests::ID, e.runs) {
            (true, _) => "failed",
            (false, 0) => "skipped",
            (false, n) => classify(n, e.passed),
        };
        // An upstream test known to miss its own tolerances here now and then: flaky, or one
        // failure in fewer than 3 runs, is reported as such; failing 3 runs of 3 still fails.
        let test = e.lab.rsplit('/').next().unwrap_or_default();
        if let Some(why) = selftests::known_flaky(test)
            && (e.result == "flaky" || (e.result == "failed" && e.runs < 3))
        {
            e.result = "known-flaky";
            e.failures.push(format!("known flaky here: {why}"));
        }
        if e.lab == selftests::ID {
            e.runs = runs.len();
        }
    }
    entries
}

pub fn render_table(entries: &[Entry]) -> String {
    let w = entries
        .iter()
        .map(|e| e.lab.len())
        .max()
        .unwrap_or(3)
        .max(3);
    let kw = entries
        .iter()
        .map(|e| e.kernel.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let mut out = format!(
        "{:<w$}  {:<kw$}  {:<5}  {:<7}  {:>6}  {:>8}\n",
        "lab", "kernel", "mglru", "result", "passed", "wall"
    );
    for e in entries {
        let _ = writeln!(
            out,
            "{:<w$}  {:<kw$}  {:<5}  {:<7}  {:>6}  {:>7.2}s",
            e.lab,
            e.kernel,
            e.mglru,
            e.result,
            format!("{}/{}", e.passed, e.runs),
            e.median_wall_secs
        );
        for f in &e.failures {
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

/// JUnit XML: one testcase per (kernel, lab); a flaky or failed lab is a failure.
pub fn junit(entries: &[Entry]) -> String {
    let failures = entries
        .iter()
        .filter(|e| e.result == "failed" || e.result == "flaky")
        .count();
    let skipped = entries
        .iter()
        .filter(|e| e.result == "skipped" || e.result == "known-flaky")
        .count();
    // The selftests of one kernel and mode share their boots: counted once, not once per test.
    let mut boots: Vec<(&str, &str, f64)> = Vec::new();
    let mut time = 0.0;
    for e in entries {
        if e.kind != "selftest" {
            time += e.median_wall_secs * e.runs as f64;
            continue;
        }
        // A boot whose tests all skipped still took its time.
        let t = e.median_wall_secs * e.runs.max(1) as f64;
        if let Some(b) = boots
            .iter_mut()
            .find(|b| (b.0, b.1) == (e.kernel.as_str(), e.mglru))
        {
            b.2 = b.2.max(t);
        } else {
            boots.push((&e.kernel, e.mglru, t));
        }
    }
    time += boots.iter().map(|b| b.2).sum::<f64>();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"kernel-lab\" tests=\"{}\" failures=\"{failures}\" time=\"{time:.3}\">",
        entries.len()
    );
    let _ = writeln!(
        out,
        "  <testsuite name=\"kernel-lab\" tests=\"{}\" failures=\"{failures}\" skipped=\"{skipped}\" time=\"{time:.3}\">",
        entries.len()
    );
    for e in entries {
        let _ = write!(
            out,
            "    <testcase classname=\"{}.{}.mglru-{}\" name=\"{}\" time=\"{:.3}\"",
            if e.kind == "selftest" {
                "selftests"
            } else {
                "kernel-lab"
            },
            xml_escape(&e.kernel),
            e.mglru,
            xml_escape(&e.lab),
            e.median_wall_secs
        );
        if e.result == "passed" {
            out.push_str("/>\n");
        } else if e.result == "skipped" || e.result == "known-flaky" {
            let _ = writeln!(
                out,
                ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                xml_escape(&e.failures.join("; "))
            );
        } else {
            let msg = format!("{}: {}/{} runs passed", e.result, e.passed, e.runs);
            let _ = writeln!(
                out,
                ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>",
                xml_escape(&msg),
                xml_escape(&e.failures.join("\n"))
            );
        }
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

/// Writes check.json and junit.xml into `dir`; returns their paths.
pub fn write_reports(dir: &Path, entries: &[Entry]) -> Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let json = dir.join("check.json");
    let xml = dir.join("junit.xml");
    std::fs::write(&json, serde_json::to_string_pretty(entries)?)?;
    std::fs::write(&xml, junit(entries))?;
    Ok((json, xml))
}

/// Resolves the `--lab` filters against the catalog: the labs, and whether the selftests are
/// in (no filters: every lab and the selftests; else only what is named).
pub fn select(filters: &[String], catalog: &[LabDir]) -> Result<(Vec<LabDir>, bool)> {
    if filters.is_empty() {
        return Ok((catalog.to_vec(), true));
    }
    let selftests = filters.iter().any(|f| f == selftests::ID);
    let labs = filters
        .iter()
        .filter(|f| *f != selftests::ID)
        .map(|f| lab::resolve(f, catalog))
        .collect::<Result<Vec<_>>>()?;
    Ok((labs, selftests))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_the_items() {
        let items: Vec<usize> = (0..13).collect();
        for n in 1..=5 {
            let mut seen: Vec<usize> = (1..=n)
                .flat_map(|i| shard_items(&items, Shard { index: i, count: n }))
                .collect();
            seen.sort();
            assert_eq!(
                seen, items,
                "with {n} shards every item must be in exactly one"
            );
            let sizes: Vec<usize> = (1..=n)
                .map(|i| shard_items(&items, Shard { index: i, count: n }).len())
                .collect();
            assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
        }
    }

    #[test]
    fn shard_syntax() {
        assert_eq!(
            "2/4".parse::<Shard>().unwrap(),
            Shard { index: 2, count: 4 }
        );
        for bad in ["0/4", "5/4", "x/2", "3", "1/0"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }

    fn entry(lab: &str, passed: usize) -> Entry {
        Entry {
            kind: "lab",
            lab: lab.into(),
            kernel: "6.12.117".into(),
            mglru: "lab",
            runs: 3,
            passed,
            result: classify(3, passed),
            median_wall_secs: 2.5,
            failures: if passed == 3 {
                vec![]
            } else {
                vec!["expectation Δ vmstat.x > 0 [step <a>] (got 0) & \"q\"".into()]
            },
        }
    }

    #[test]
    fn flaky_is_not_passed() {
        assert_eq!(classify(3, 3), "passed");
        assert_eq!(classify(3, 2), "flaky");
        assert_eq!(classify(3, 0), "failed");
    }

    #[test]
    fn junit_is_well_formed_and_counts_failures() {
        let xml = junit(&[entry("1-a", 3), entry("2-b", 1), entry("3-c", 0)]);
        assert!(xml.contains("tests=\"3\" failures=\"2\""), "{xml}");
        assert!(
            xml.contains(
                "<testcase classname=\"kernel-lab.6.12.117.mglru-lab\" name=\"1-a\" time=\"2.500\"/>"
            ),
            "{xml}"
        );
        assert!(xml.contains("<failure message=\"flaky: 1/3 runs passed\">expectation Δ vmstat.x &gt; 0 [step &lt;a&gt;] (got 0) &amp; &quot;q&quot;</failure>"), "{xml}");
        // Balanced tags: every opened testcase with a failure is closed.
        assert_eq!(xml.matches("<testcase").count(), 3);
        assert_eq!(xml.matches("</testcase>").count(), 2);
        assert!(xml.trim_end().ends_with("</testsuites>"));
    }

    #[test]
    fn skipped_labs_are_junit_skips_not_failures() {
        let mut e = entry("11-m", 0);
        e.result = "skipped";
        e.failures = vec!["skipped: the lab itself runs with MGLRU off".into()];
        let xml = junit(&[e, entry("1-a", 3)]);
        assert!(xml.contains("failures=\"0\" skipped=\"1\""), "{xml}");
        assert!(
            xml.contains("<skipped message=\"skipped: the lab itself runs with MGLRU off\"/>"),
            "{xml}"
        );
    }

    #[test]
    fn junit_parses_as_xml_with_labs_and_selftests() {
        let mut skip = entry("test_memcontrol/test_memcg_sock", 0);
        skip.kind = "selftest";
        skip.result = "skipped";
        skip.failures = vec!["skipped: no TCP <IPv6> & \"loopback\"".into()];
        let mut st = entry("test_memcontrol/test_memcg_min", 3);
        st.kind = "selftest";
        let xml = junit(&[entry("1-a", 3), entry("2-b", 0), skip, st]);
        let doc = roxmltree::Document::parse(&xml).expect("junit.xml is XML");
        let suite = doc
            .descendants()
            .find(|n| n.has_tag_name("testsuite"))
            .unwrap();
        assert_eq!(suite.attribute("tests"), Some("4"));
        // 1-a 3 runs x 2.5 s, 2-b the same, the selftests' boots (3 x 2.5 s) once.
        assert_eq!(suite.attribute("time"), Some("22.500"));
        assert_eq!(suite.attribute("failures"), Some("1"));
        assert_eq!(suite.attribute("skipped"), Some("1"));
        let cases: Vec<_> = suite
            .children()
            .filter(|n| n.has_tag_name("testcase"))
            .collect();
        assert_eq!(cases.len(), 4);
        let class = |i: usize| cases[i].attribute("classname").unwrap();
        assert_eq!(class(0), "kernel-lab.6.12.117.mglru-lab");
        assert_eq!(class(3), "selftests.6.12.117.mglru-lab");
        assert_eq!(
            cases[3].attribute("name"),
            Some("test_memcontrol/test_memcg_min")
        );
        let failure = cases[1]
            .children()
            .find(|n| n.has_tag_name("failure"))
            .unwrap();
        assert!(failure.text().unwrap().contains("vmstat.x > 0"));
        let skipped = cases[2]
            .children()
            .find(|n| n.has_tag_name("skipped"))
            .unwrap();
        assert_eq!(
            skipped.attribute("message"),
            Some("skipped: no TCP <IPv6> & \"loopback\"")
        );
    }

    fn selftest_run(outcomes: &[(&str, selftests::Outcome)]) -> selftests::SelftestRun {
        selftests::SelftestRun {
            programs: vec![(
                "test_memcontrol".into(),
                outcomes
                    .iter()
                    .map(|(n, o)| selftests::TestResult {
                        name: n.to_string(),
                        outcome: o.clone(),
                    })
                    .collect(),
            )],
            problems: vec![],
            total: std::time::Duration::from_secs(20),
            kept: PathBuf::from("/k"),
        }
    }

    #[test]
    fn selftest_runs_fold_into_passed_flaky_and_skipped_entries() {
        use selftests::Outcome::*;
        let skip = || Skip("no swap".into());
        let runs = [
            selftest_run(&[("a", Pass), ("b", Pass), ("c", skip())]),
            selftest_run(&[("a", Pass), ("b", Fail), ("c", skip())]),
        ];
        let e = selftest_entries(&runs, "6.12.117", Some(true));
        let get = |n: &str| {
            e.iter()
                .find(|x| x.lab == format!("test_memcontrol/{n}"))
                .unwrap()
        };
        assert_eq!(e.len(), 3);
        assert!(e.iter().all(|x| x.kind == "selftest" && x.mglru == "on"));
        assert_eq!(
            (get("a").result, get("a").passed, get("a").runs),
            ("passed", 2, 2)
        );
        assert_eq!(get("b").result, "flaky");
        assert_eq!(get("b").failures, ["test_memcontrol reported: not ok b"]);
        assert_eq!(get("c").result, "skipped");
        assert_eq!(get("c").failures, ["skipped: no swap"]);
        // A test declared flaky in this set-up is reported as such unless it fails 3 runs of 3.
        let low = |o: selftests::Outcome| selftest_run(&[("test_memcg_low", o)]);
        let e = selftest_entries(&[low(Pass), low(Fail)], "6.12.117", None);
        assert_eq!(e[0].result, "known-flaky");
        assert!(e[0].failures[1].starts_with("known flaky here: "), "{e:?}");
        let e = selftest_entries(&[low(Fail)], "6.12.117", None);
        assert_eq!(e[0].result, "known-flaky");
        let e = selftest_entries(&[low(Fail), low(Fail), low(Fail)], "6.12.117", None);
        assert_eq!(e[0].result, "failed");
        // A boot that went wrong is a failure of the selftests as a whole.
        let mut bad = selftest_run(&[]);
        bad.problems = vec!["test_memcontrol reported no test results (did not finish)".into()];
        let e = selftest_entries(&[bad], "6.1.192", None);
        assert_eq!(e.len(), 1);
        assert_eq!((e[0].lab.as_str(), e[0].result), ("selftests", "failed"));
    }

    #[test]
    fn the_matrix_puts_the_selftests_after_each_kernel_and_modes_labs() {
        let labs: Vec<LabDir> = ["1-a", "2-b"]
            .iter()
            .map(|id| LabDir {
                id: id.to_string(),
                dir: PathBuf::from(id),
            })
            .collect();
        let mut opts = CheckOptions {
            labs,
            kernels: vec![
                KernelChoice::Source(Some("/k61".into())),
                KernelChoice::Source(Some("/k612".into())),
            ],
            repeat: 1,
            shard: None,
            run: RunOptions {
                kernel: KernelChoice::default(),
                accel: crate::qemu::Accel::Tcg,
                rebuild_kernel: false,
                install: false,
                timeout: None,
                sets: vec![],
                shell: false,
                kernel_args: vec![],
                mglru: None,
            },
            mglru: vec![Some(true), Some(false)],
            selftests: true,
        };
        let all = matrix(&opts);
        assert_eq!(all.len(), 2 * 2 * 3);
        let names = |items: &[(KernelChoice, Option<bool>, Item)]| -> Vec<String> {
            items
                .iter()
                .map(|(k, m, i)| {
                    let what = match i {
                        Item::Lab(l) => l.id.clone(),
                        Item::Selftests => "selftests".into(),
                    };
                    let path = k.source_flag().unwrap().display();
                    format!("{path}:{m:?}:{what}")
                })
                .collect()
        };
        let mut union: Vec<String> = (1..=4)
            .flat_map(|i| {
                opts.shard = Some(Shard { index: i, count: 4 });
                names(&matrix(&opts))
            })
            .collect();
        union.sort();
        let mut expected = names(&all);
        expected.sort();
        assert_eq!(union, expected, "every item in exactly one of 4 shards");
        assert_eq!(names(&all)[2], "/k61:Some(true):selftests");
    }

    #[test]
    fn json_summary_round_trips() {
        let v: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&[entry("1-a", 3)]).unwrap()).unwrap();
        assert_eq!(v[0]["result"], "passed");
        assert_eq!(v[0]["passed"], 3);
    }
}
