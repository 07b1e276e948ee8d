//! The kernel's own cgroup memory selftests (tools/testing/selftests/cgroup/test_memcontrol),
//! built statically from the same source tree as the guest kernel, run in the same VM set-up as
//! the labs, and reported per test beside them: a failed lab can then be triaged as "the kernel
//! changed" (its own tests fail too) or "our expectation is wrong" (they pass).

use crate::cache::{self, KeyHasher};
use crate::initramfs::Extra;
use crate::kernel;
use crate::lab::{self, RunOptions};
use crate::process::{Cmd, Ended};
use crate::progress::Phases;
use anyhow::{Context, Result, bail};
use guest::event::{Event, Exit};
use guest::spec::LabSpec;
use guest::step::StepKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The selftest programs run, from tools/testing/selftests/cgroup/.
pub const PROGRAMS: &[&str] = &["test_memcontrol"];

/// The id `check --lab` accepts for them.
pub const ID: &str = "selftests";

/// Where the programs sit in the initramfs.
const DIR: &str = "selftests";

/// How the kernel's tests are run: like a lab (same RAM, zram swap, ext4 data disk as their
/// working directory, so that their page cache is backed by a block device), one exec step per
/// program. `kernel_config = ["selftests"]` adds what they need beyond base.config.
pub const SPEC: &str = r#"
id = "selftests"
title = "the kernel's cgroup memory selftests"

[vm]
memory = "1G"
cpus = 2
swap = { kind = "zram", size = "512M" }
kernel_config = ["selftests"]
timeout_secs = 600
"#;

/// How long one test of a program may take before the agent kills the program (its missing
/// tests then say it timed out); `check --timeout-factor` multiplies it like the boot's 600 s.
pub const PER_TEST_TIMEOUT_SECS: u64 = 300;

/// The spec for `programs`: [`SPEC`] plus one exec step each.
pub fn spec(programs: &[&str]) -> Result<LabSpec> {
    let mut text = SPEC.to_string();
    for p in programs {
        text.push_str(&format!(
            "\n[[step]]\nkind = \"exec\"\nname = \"{p}\"\nargv = [\"/{DIR}/{p}\"]\nsize = \"512M\"\nresult_timeout_secs = {PER_TEST_TIMEOUT_SECS}\n"
        ));
    }
    lab::parse_spec(&text, "the selftests spec")
}

/// One test's outcome, as its program reported it (KTAP), or as its absence means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    /// `not ok`, with the diagnostic after `#` if any.
    Fail(String),
    /// Skipped, with the reason (the test's own words, or why we know it skips).
    Skip(String),
    /// Expected to fail (`XFAIL`, `TODO`): reported, not a regression.
    XFail(String),
    /// The test did not run to a result: `TIMEOUT`, `ERROR`, or missing from the output of a
    /// program that stopped early. An error of the run, not a regression.
    Error(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestResult {
    pub name: String,
    pub outcome: Outcome,
}

/// One KTAP result line: `ok|not ok N [description][ # [DIRECTIVE] [diagnostic]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultLine {
    pub ok: bool,
    pub number: u64,
    pub description: String,
    /// SKIP, TODO, XFAIL, XPASS, TIMEOUT or ERROR (upper-cased), if the line has one.
    pub directive: Option<String>,
    /// What follows the directive (or the `#` when there is none).
    pub diagnostic: String,
}

const DIRECTIVES: &[&str] = &["SKIP", "TODO", "XFAIL", "XPASS", "TIMEOUT", "ERROR"];

/// Parses a KTAP result line (Documentation/dev-tools/ktap.rst), indented or not.
pub fn parse_result_line(line: &str) -> Option<ResultLine> {
    let line = line.trim();
    let (ok, rest) = match line.strip_prefix("not ok ") {
        Some(r) => (false, r),
        None => (true, line.strip_prefix("ok ")?),
    };
    let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let number = rest[..digits].parse().ok()?;
    let rest = rest[digits..].trim_start();
    let rest = rest.strip_prefix("- ").unwrap_or(rest);
    let (description, tail) = match rest.strip_prefix('#') {
        Some(t) => ("", Some(t)),
        None => match rest.find(" #") {
            Some(i) => (&rest[..i], Some(&rest[i + 2..])),
            None => (rest, None),
        },
    };
    let (directive, diagnostic) = match tail.map(str::trim) {
        None => (None, ""),
        Some(t) => {
            let (word, after) = t.split_once(char::is_whitespace).unwrap_or((t, ""));
            let upper = word.to_ascii_uppercase();
            match DIRECTIVES.contains(&upper.as_str()) {
                true => (Some(upper), after.trim()),
                false => (None, t),
            }
        }
    };
    Some(ResultLine {
        ok,
        number,
        description: description.trim().to_string(),
        directive,
        diagnostic: diagnostic.to_string(),
    })
}

/// Parses a kselftest program's KTAP output into per-test results. Both directive forms are
/// read: the spec's `ok 3 name # SKIP reason` and kselftest's older `ok 3 # SKIP name` (no
/// description: the text after the directive is the test's name). `# ` diagnostic lines just
/// before a result give a skip its reason when the line has none; `1..0 # SKIP reason` skips
/// the whole program.
pub fn parse_ktap(stdout: &str) -> Vec<TestResult> {
    let mut out = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    for line in stdout.lines().map(str::trim_end) {
        if let Some(reason) = line.strip_prefix("1..0 # SKIP") {
            out.push(TestResult {
                name: "(all)".into(),
                outcome: Outcome::Skip(reason.trim().to_string()),
            });
            continue;
        }
        let Some(r) = parse_result_line(line) else {
            if let Some(note) = line.strip_prefix("# ") {
                notes.push(note.trim().to_string());
            }
            continue;
        };
        let legacy = r.description.is_empty() && r.directive.is_some();
        let (name, said) = match legacy {
            true => (r.diagnostic.clone(), String::new()),
            false => (r.description.clone(), r.diagnostic.clone()),
        };
        let reason = |fallback: &str| -> String {
            [said.clone()]
                .into_iter()
                .chain(known_skip_reason(&name).map(str::to_string))
                .chain(notes.last().cloned())
                .find(|s| !s.is_empty())
                .unwrap_or_else(|| fallback.to_string())
        };
        let outcome = match (r.ok, r.directive.as_deref()) {
            (_, Some("SKIP")) => Outcome::Skip(reason(
                "the test skipped itself (a kernel feature it needs is missing)",
            )),
            (_, Some(d @ ("TODO" | "XFAIL"))) => {
                Outcome::XFail(format!("{d}: {}", reason("expected to fail")))
            }
            (_, Some("TIMEOUT")) => Outcome::Error(format!("timed out: {}", reason("no detail"))),
            (_, Some("ERROR")) => Outcome::Error(reason("the test reported an error")),
            (true, _) => Outcome::Pass,
            (false, _) => Outcome::Fail(said.clone()),
        };
        out.push(TestResult { name, outcome });
        notes.clear();
    }
    out
}

/// The tests a selftest program runs, read from its source: the names in its `tests[]` table
/// (`T(test_memcg_min)` entries, or `{ fn, "name" }` ones). Empty when there is no such table.
pub fn declared_tests(source: &str) -> Vec<String> {
    let Some(start) = source.find("tests[] = {") else {
        return vec![];
    };
    let body = &source[start + "tests[] = {".len()..];
    let body = &body[..body.find("};").unwrap_or(body.len())];
    let mut names = Vec::new();
    for entry in body.lines().map(str::trim) {
        if entry.starts_with("//") || entry.starts_with("/*") || entry.starts_with('*') {
            continue;
        }
        let name = match entry.strip_prefix("T(") {
            Some(r) => r.split(')').next().map(str::trim).map(str::to_string),
            None => entry
                .split('"')
                .nth(1)
                .filter(|n| !n.is_empty())
                .map(str::to_string),
        };
        names.extend(name);
    }
    names
}

/// Completes one program's results against the tests it should have run: each declared test
/// that did not report becomes an error naming how the program ended; a program that ended
/// badly without a failing test to show for it is an error too. Returns the results (in the
/// declared order, then any undeclared ones) and the program-level problems.
pub fn complete(
    program: &str,
    mut results: Vec<TestResult>,
    declared: &[String],
    exit: Option<Exit>,
    stderr: &str,
) -> (Vec<TestResult>, Vec<String>) {
    let timed_out = stderr
        .lines()
        .find(|l| l.starts_with(guest::event::RESULT_TIMEOUT_NOTE));
    let how = match (timed_out, exit) {
        (Some(l), _) => format!(
            "{program} timed out ({})",
            l.trim_start_matches("kernel-lab: ")
        ),
        (None, Some(e)) => format!("{program} {e}"),
        (None, None) => format!("{program} did not finish (the VM stopped first)"),
    };
    let skipped_all = results.iter().any(|t| t.name == "(all)");
    let mut problems = Vec::new();
    if !skipped_all {
        let reported: Vec<String> = results.iter().map(|t| t.name.clone()).collect();
        for (i, name) in declared.iter().enumerate() {
            if !reported.contains(name) {
                let after = declared[..i]
                    .iter()
                    .rev()
                    .find(|n| reported.contains(n))
                    .map(|n| format!(" after {n}"))
                    .unwrap_or_default();
                results.push(TestResult {
                    name: name.clone(),
                    outcome: Outcome::Error(format!("no result: {how}{after}")),
                });
            }
        }
        let rank = |t: &TestResult| declared.iter().position(|n| *n == t.name);
        results.sort_by_key(|t| rank(t).unwrap_or(usize::MAX));
    }
    let failed = results
        .iter()
        .any(|t| matches!(t.outcome, Outcome::Fail(_) | Outcome::Error(_)));
    match exit {
        Some(Exit::Exited { code: 0 }) | Some(Exit::Holding) => {}
        Some(Exit::Exited { code: 4 }) if skipped_all => {} // KSFT_SKIP
        Some(e) if !failed => problems.push(format!(
            "{program} {e} although every test it reported passed or skipped"
        )),
        Some(_) => {}
        None if results.is_empty() => problems.push(how.clone()),
        None => {}
    }
    if results.is_empty() && declared.is_empty() {
        problems.push(format!("{program} reported no test results ({how})"));
    }
    (results, problems)
}

/// Why a test skips when it does so silently, read from its source.
fn known_skip_reason(name: &str) -> Option<&'static str> {
    match name {
        "test_memcg_sock" => Some(
            "no TCP over IPv6 loopback in the guest kernel (CONFIG_NET, CONFIG_INET, CONFIG_IPV6)",
        ),
        "test_memcg_current_peak" => {
            Some("memory.peak is missing or read-only (writable since 6.12)")
        }
        "test_memcg_swap_max" | "test_memcg_swap_max_peak" => {
            Some("no swap in the guest (the selftests spec enables zram)")
        }
        _ => None,
    }
}

/// Builds `program` statically from the tree (once per source; cached); returns its path.
pub fn build(source: &kernel::Source, program: &str) -> Result<PathBuf> {
    let cache = cache::cache_dir()?;
    let tree = kernel::source_tree(&cache, source)?;
    let mut h = KeyHasher::new();
    h.add(b"selftests 2 gcc -static -O0 line-buffered")
        .add(source.selftests_identity.as_bytes());
    let dir = cache.join("selftests").join(h.hex());
    let bin = dir.join(program);
    let list = tests_list(&bin);
    if bin.is_file() && list.is_file() {
        cache::touch(&dir);
        return Ok(bin);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    compile(&tree, program, &bin)?;
    let src = tree.join(format!("tools/testing/selftests/cgroup/{program}.c"));
    let text =
        std::fs::read_to_string(&src).with_context(|| format!("reading {}", src.display()))?;
    let tmp = list.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, declared_tests(&text).join("\n"))?;
    std::fs::rename(&tmp, &list).with_context(|| format!("publishing {}", list.display()))?;
    Ok(bin)
}

/// Beside each built program: the names in its source's `tests[]` table, one per line (what
/// a run must report; an exported program carries it along).
pub fn tests_list(bin: &Path) -> PathBuf {
    bin.with_extension("tests")
}

/// The tests `bin` should report, from [`tests_list`] (empty if the list is missing).
pub fn expected_tests(bin: &Path) -> Vec<String> {
    std::fs::read_to_string(tests_list(bin))
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Linked into every program: stdout line-buffered, as on a terminal. Into a pipe it would be
/// fully buffered, and the tests' forked children would print the parent's unflushed result
/// lines again when they exit.
const LINE_BUFFERED: &str = "#include <stdio.h>\n\
__attribute__((constructor)) static void kernel_lab_line_buffered(void)\n\
{ setvbuf(stdout, NULL, _IOLBF, 0); }\n";

/// Compiles as the selftests' own Makefile does (`-Wall -pthread`, no optimisation: at -O2 gcc
/// deletes `alloc_anon()`'s malloc, stores and free as dead code, and the OOM tests allocate
/// nothing), plus `-static` for the initramfs.
fn compile(tree: &Path, program: &str, bin: &Path) -> Result<()> {
    let selftests = tree.join("tools/testing/selftests");
    let src = selftests.join("cgroup");
    if !src.join(format!("{program}.c")).is_file() {
        bail!(
            "{} has no tools/testing/selftests/cgroup/{program}.c (a kernel tree without its selftests?)",
            tree.display()
        );
    }
    let tmp = bin.with_extension(format!("tmp{}", std::process::id()));
    let shim = bin.with_extension(format!("linebuf{}.c", std::process::id()));
    std::fs::write(&shim, LINE_BUFFERED)?;
    let out = Cmd::new(
        "gcc",
        "gcc for the selftests (apt-get install gcc libc6-dev)",
    )
    .args(["-static", "-Wall", "-pthread", "-w"])
    .arg(format!("-I{}", selftests.display()))
    .arg("-o")
    .arg(&tmp)
    .arg(src.join(format!("{program}.c")))
    .arg(src.join("cgroup_util.c"))
    .arg(&shim)
    .run(None);
    let _ = std::fs::remove_file(&shim);
    let out = out?;
    if out.ended == Ended::Interrupted {
        let _ = std::fs::remove_file(&tmp);
        bail!("interrupted while compiling {program}");
    }
    if !out.success() {
        let _ = std::fs::remove_file(&tmp);
        // The tree's own test does not build: this commit cannot be tested (exit 125).
        return Err(kernel::Untestable(format!(
            "compiling {program} from {} failed:\n{}",
            tree.display(),
            String::from_utf8_lossy(&out.stderr)
        ))
        .into());
    }
    std::fs::rename(&tmp, bin).with_context(|| format!("publishing {}", bin.display()))
}

/// One boot running the selftest programs.
pub struct SelftestRun {
    /// Per program: its tests' results, completed against its `tests[]` table ([`complete`]).
    pub programs: Vec<(String, Vec<TestResult>)>,
    /// Why the run itself is not valid, or a program that ended badly.
    pub problems: Vec<String>,
    /// The kernel's own health during the run.
    pub health: crate::health::Health,
    pub total: Duration,
    pub kept: PathBuf,
}

/// Builds the programs from the kernel source in `opts` and runs them in one VM.
pub fn run(opts: &RunOptions) -> Result<SelftestRun> {
    let started = Instant::now();
    let spec = run_spec(opts)?;
    eprintln!("{}: {}", spec.id, spec.title);
    let mut extra = Vec::new();
    let mut declared = Vec::new();
    for p in PROGRAMS {
        let bin = opts.kernel.selftest(p)?;
        declared.push(expected_tests(&bin));
        extra.push(Extra {
            path: format!("{DIR}/{p}"),
            mode: 0o755,
            data: std::fs::read(&bin).with_context(|| format!("reading {}", bin.display()))?,
        });
    }
    extra.extend(name_service_files());
    let booted = lab::boot(&spec, opts, &extra, &mut Phases::default())?;
    let mut problems = booted.problems;
    let mut programs = Vec::new();
    for (p, declared) in PROGRAMS.iter().zip(&declared) {
        let (results, mut why) = program_results(&booted.stream, p, declared);
        problems.append(&mut why);
        programs.push((p.to_string(), results));
    }
    for f in &booted.stream.frames {
        if let Event::Error { context, message } = &f.event {
            problems.push(format!("agent: {context}: {message}"));
        }
    }
    Ok(SelftestRun {
        programs,
        problems,
        health: booted.health,
        total: started.elapsed(),
        kept: booted.kept,
    })
}

/// The selftests' spec for this run: its MGLRU mode, and each program's result timeout
/// stretched as the boot's is (`--timeout-factor`).
fn run_spec(opts: &RunOptions) -> Result<LabSpec> {
    let mut spec = spec(PROGRAMS)?;
    if opts.mglru.is_some() {
        spec.vm.mglru = opts.mglru;
    }
    let factor = opts
        .timeout
        .map_or(1.0, |t| t as f64 / spec.vm.timeout_secs as f64);
    for st in &mut spec.steps {
        if let StepKind::Exec {
            result_timeout_secs: Some(t),
            ..
        } = &mut st.kind
        {
            *t = (*t as f64 * factor).ceil() as u64;
        }
    }
    Ok(spec)
}

/// test_memcg_sock connects to "localhost": static glibc reads these two files.
fn name_service_files() -> [Extra; 2] {
    [
        Extra {
            path: "etc/hosts".into(),
            mode: 0o644,
            data: b"127.0.0.1 localhost\n::1 localhost\n".to_vec(),
        },
        Extra {
            path: "etc/nsswitch.conf".into(),
            mode: 0o644,
            data: b"hosts: files\n".to_vec(),
        },
    ]
}

/// One program's results from its step's end (its KTAP on stdout, how it ended), completed
/// against its declared tests; and what went wrong with it.
fn program_results(
    stream: &guest::event::Stream,
    program: &str,
    declared: &[String],
) -> (Vec<TestResult>, Vec<String>) {
    let end = stream.frames.iter().find_map(|f| match &f.event {
        Event::StepEnd {
            step,
            exit,
            stdout,
            stderr,
            ..
        } if step == program => Some((*exit, stdout.as_str(), stderr.as_str())),
        _ => None,
    });
    let parsed = end.map(|(_, out, _)| parse_ktap(out)).unwrap_or_default();
    let stderr = end.map(|(.., e)| e).unwrap_or_default();
    complete(program, parsed, declared, end.map(|e| e.0), stderr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ktap_results_and_skip_reasons() {
        let out = "TAP version 13\n1..4\nok 1 test_memcg_subtree_control\nnot ok 2 test_memcg_min\n# memory.peak is not writable\nok 3 # SKIP test_memcg_x\nok 4 # SKIP test_memcg_sock\nok 5 # XFAIL test_y\nnot ok 6 # error test_z\n# Totals: pass:1 fail:1\n";
        let r = parse_ktap(out);
        let outcome = |n: &str| r.iter().find(|t| t.name == n).unwrap().outcome.clone();
        assert_eq!(r.len(), 6);
        assert_eq!(outcome("test_memcg_subtree_control"), Outcome::Pass);
        assert_eq!(outcome("test_memcg_min"), Outcome::Fail(String::new()));
        assert_eq!(
            outcome("test_memcg_x"),
            Outcome::Skip("memory.peak is not writable".into())
        );
        assert!(matches!(outcome("test_memcg_sock"), Outcome::Skip(r) if r.contains("CONFIG_NET")));
        assert!(matches!(outcome("test_y"), Outcome::XFail(_)));
        assert!(matches!(outcome("test_z"), Outcome::Error(_)));
    }

    #[test]
    fn the_specs_directive_form_names_the_test_before_the_hash() {
        let out = "KTAP version 1\n1..7\nok 1 test_a # SKIP no swap in this guest\nnot ok 2 test_b # TIMEOUT 45 seconds\nnot ok 3 test_c # ERROR cannot create cgroup\nnot ok 4 test_d # TODO not implemented yet\nok 5 test_e # XFAIL known upstream bug\nok 6 test_f #  some diagnostic\nnot ok 7 - test_g # values_close failed\n";
        let r = parse_ktap(out);
        let names: Vec<&str> = r.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "test_a", "test_b", "test_c", "test_d", "test_e", "test_f", "test_g"
            ]
        );
        assert_eq!(r[0].outcome, Outcome::Skip("no swap in this guest".into()));
        assert_eq!(r[1].outcome, Outcome::Error("timed out: 45 seconds".into()));
        assert_eq!(r[2].outcome, Outcome::Error("cannot create cgroup".into()));
        assert_eq!(
            r[3].outcome,
            Outcome::XFail("TODO: not implemented yet".into())
        );
        assert_eq!(
            r[4].outcome,
            Outcome::XFail("XFAIL: known upstream bug".into())
        );
        // A `#` without a directive is a diagnostic: the result stands.
        assert_eq!(r[5].outcome, Outcome::Pass);
        assert_eq!(r[6].outcome, Outcome::Fail("values_close failed".into()));
        // Lower-case directives and indented (nested) lines are read the same.
        let r = parse_ktap("    ok 1 t # skip nothing to do\n");
        assert_eq!(r[0].outcome, Outcome::Skip("nothing to do".into()));
    }

    #[test]
    fn result_lines_parse_field_by_field() {
        let l = parse_result_line("not ok 12 name with spaces # SKIP why # not a second directive")
            .unwrap();
        assert!(!l.ok);
        assert_eq!(l.number, 12);
        assert_eq!(l.description, "name with spaces");
        assert_eq!(l.directive.as_deref(), Some("SKIP"));
        assert_eq!(l.diagnostic, "why # not a second directive");
        assert!(parse_result_line("okay 1 x").is_none());
        assert!(parse_result_line("# ok 1 x").is_none());
    }

    #[test]
    fn a_program_that_skips_entirely() {
        let r = parse_ktap("TAP version 13\n1..0 # SKIP cgroup v2 isn't mounted\n");
        assert_eq!(
            r,
            [TestResult {
                name: "(all)".into(),
                outcome: Outcome::Skip("cgroup v2 isn't mounted".into())
            }]
        );
        let (r, problems) = complete("p", r, &["t1".into()], Some(Exit::Exited { code: 4 }), "");
        assert_eq!(r.len(), 1);
        assert!(problems.is_empty(), "{problems:?}");
    }

    const TABLE: &str = "struct memcg_test {\n\tint (*fn)(const char *root);\n\tconst char *name;\n} tests[] = {\n\tT(test_memcg_subtree_control),\n\tT(test_memcg_current_peak),\n\t/* T(test_memcg_disabled), */\n\tT(test_memcg_min),\n};\n#undef T\n";

    #[test]
    fn the_tests_table_is_read_from_the_source() {
        assert_eq!(
            declared_tests(TABLE),
            [
                "test_memcg_subtree_control",
                "test_memcg_current_peak",
                "test_memcg_min"
            ]
        );
        let quoted =
            "} tests[] = {\n\t{ test_kmem_basic, \"test_kmem_basic\" },\n\t{ f2, \"two\" },\n};";
        assert_eq!(declared_tests(quoted), ["test_kmem_basic", "two"]);
        assert!(declared_tests("int main(void) {}").is_empty());
    }

    #[test]
    fn the_real_test_memcontrol_table_is_read() {
        // The tree extracted in the cache, when there is one (the VM tests extract it).
        let Ok(cache) = crate::cache::cache_dir() else {
            return;
        };
        let Ok(srcs) = std::fs::read_dir(cache.join("src")) else {
            return;
        };
        for e in srcs.flatten() {
            for tree in std::fs::read_dir(e.path()).into_iter().flatten().flatten() {
                let c = tree
                    .path()
                    .join("tools/testing/selftests/cgroup/test_memcontrol.c");
                if let Ok(text) = std::fs::read_to_string(&c) {
                    let t = declared_tests(&text);
                    assert!(t.len() >= 10, "{}: {t:?}", c.display());
                    assert!(t.iter().all(|n| n.starts_with("test_memcg_")), "{t:?}");
                }
            }
        }
    }

    #[test]
    fn a_program_killed_midway_leaves_errors_naming_the_missing_tests() {
        let declared: Vec<String> = declared_tests(TABLE);
        let parsed = parse_ktap("ok 1 test_memcg_subtree_control\n");
        let killed = Exit::Signaled { signal: 9 };
        let (r, problems) = complete("test_memcontrol", parsed, &declared, Some(killed), "");
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].outcome, Outcome::Pass);
        for t in &r[1..] {
            assert_eq!(
                t.outcome,
                Outcome::Error(
                    "no result: test_memcontrol killed by SIGKILL after test_memcg_subtree_control"
                        .into()
                ),
                "{t:?}"
            );
        }
        // The missing tests already say how it ended: no extra program-level problem.
        assert!(problems.is_empty(), "{problems:?}");
        // A VM that stopped before the program ended.
        let (r, problems) = complete("p", vec![], &declared, None, "");
        assert!(
            r.iter()
                .all(|t| matches!(&t.outcome, Outcome::Error(m) if m.contains("did not finish")))
        );
        assert!(
            problems.is_empty(),
            "each missing test says it: {problems:?}"
        );
        // Without a tests[] table, a program that printed nothing is a problem of its own.
        let (r, problems) = complete("p", vec![], &[], Some(Exit::Signaled { signal: 9 }), "");
        assert!(r.is_empty());
        assert_eq!(problems.len(), 2, "{problems:?}");
    }

    #[test]
    fn a_bad_exit_with_nothing_failing_is_a_problem() {
        let parsed = parse_ktap(
            "ok 1 test_memcg_subtree_control\nok 2 test_memcg_current_peak\nok 3 test_memcg_min\n",
        );
        let declared = declared_tests(TABLE);
        let (_, problems) = complete(
            "p",
            parsed.clone(),
            &declared,
            Some(Exit::Exited { code: 1 }),
            "",
        );
        assert_eq!(
            problems,
            ["p exited 1 although every test it reported passed or skipped"]
        );
        let (_, problems) = complete("p", parsed, &declared, Some(Exit::Exited { code: 0 }), "");
        assert!(problems.is_empty());
    }

    #[test]
    fn a_test_that_outlives_its_timeout_is_an_error_that_says_so() {
        let declared = declared_tests(TABLE);
        let parsed = parse_ktap("ok 1 test_memcg_subtree_control\n");
        let stderr = "some output\nkernel-lab: no test result for 300s after 1 results: killed\n";
        let (r, _) = complete(
            "test_memcontrol",
            parsed,
            &declared,
            Some(Exit::Signaled { signal: 9 }),
            stderr,
        );
        assert_eq!(
            r[1].outcome,
            Outcome::Error(
                "no result: test_memcontrol timed out (no test result for 300s after 1 results: killed) after test_memcg_subtree_control".into()
            )
        );
        // The generated spec gives each program its per-test timeout.
        let s = spec(PROGRAMS).unwrap();
        assert_eq!(
            s.steps[0].result_timeout_secs(),
            Some(PER_TEST_TIMEOUT_SECS)
        );
    }

    #[test]
    fn the_spec_is_valid_and_runs_each_program() {
        let s = spec(PROGRAMS).unwrap();
        assert_eq!(s.steps.len(), PROGRAMS.len());
        assert!(
            matches!(&s.steps[0].kind, guest::spec::StepKind::Exec { argv, .. } if argv == &["/selftests/test_memcontrol"])
        );
        assert_eq!(s.vm.kernel_config, ["selftests"]);
    }
}
