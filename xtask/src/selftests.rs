//! The kernel's own cgroup memory selftests (tools/testing/selftests/cgroup/test_memcontrol),
//! built statically from the same source tree as the guest kernel, run in the same VM set-up as
//! the labs, and reported per test beside them: a failed lab can then be triaged as "the kernel
//! changed" (its own tests fail too) or "our expectation is wrong" (they pass).

use crate::cache::{self, KeyHasher};
use crate::initramfs::Extra;
use crate::kernel;
use crate::lab::{self, RunOptions};
use crate::progress::Phases;
use anyhow::{Context, Result, bail};
use guest::event::Event;
use guest::spec::LabSpec;
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

/// The spec for `programs`: [`SPEC`] plus one exec step each.
pub fn spec(programs: &[&str]) -> Result<LabSpec> {
    let mut text = SPEC.to_string();
    for p in programs {
        text.push_str(&format!(
            "\n[[step]]\nkind = \"exec\"\nname = \"{p}\"\nargv = [\"/{DIR}/{p}\"]\nsize = \"512M\"\n"
        ));
    }
    lab::parse_spec(&text, "the selftests spec")
}

/// One test's outcome, as its program reported it (KTAP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail,
    /// Skipped, with the reason (the test's own words, or why we know it skips).
    Skip(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestResult {
    pub name: String,
    pub outcome: Outcome,
}

/// Parses a kselftest program's KTAP output: `ok 1 name`, `not ok 2 name`,
/// `ok 3 # SKIP name`, `ok 4 # XFAIL name`, `not ok 5 # error name`, and a whole-program
/// `1..0 # SKIP reason`. `# ` diagnostic lines just before a result become a skip's reason.
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
        let (ok, rest) = if let Some(r) = line.strip_prefix("not ok ") {
            (false, r)
        } else if let Some(r) = line.strip_prefix("ok ") {
            (true, r)
        } else {
            if let Some(note) = line.strip_prefix("# ") {
                notes.push(note.trim().to_string());
            }
            continue;
        };
        let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit()).trim();
        let (directive, name) = match rest.strip_prefix("# ") {
            Some(d) => match d.split_once(' ') {
                Some((word, name)) => (Some(word.to_ascii_uppercase()), name.trim()),
                None => (Some(d.to_ascii_uppercase()), ""),
            },
            None => (None, rest),
        };
        let outcome = match (ok, directive.as_deref()) {
            (true, Some("SKIP")) => {
                let reason = known_skip_reason(name)
                    .map(str::to_string)
                    .or_else(|| notes.last().cloned())
                    .unwrap_or_else(|| {
                        "the test skipped itself (a kernel feature it needs is missing)".into()
                    });
                Outcome::Skip(reason)
            }
            (true, Some("XFAIL")) | (true, None) => Outcome::Pass,
            _ => Outcome::Fail,
        };
        out.push(TestResult {
            name: name.to_string(),
            outcome,
        });
        notes.clear();
    }
    out
}

/// Upstream tests that miss their own tolerances in this VM set-up now and then, with what was
/// measured; `check` reports them as `known-flaky` instead of failing (see check.rs).
const KNOWN_FLAKY: &[(&str, &str)] = &[
    (
        "test_memcg_high_sync",
        "it reads memory.events when the first inotify event wakes it and fails if the mlock()ing child has already reached memory.max by then, a race by construction: 2 of 3 runs passed on 6.1 on an idle machine, 5 of 5 on 6.12",
    ),
    (
        "test_memcg_low",
        "memory.low's reclaim split between siblings must land within 10% of 29M/21M (values_close): 5 of 5 runs passed on an idle machine, 1 of 2 with a kernel build running beside the VM (TCG timing)",
    ),
    (
        "test_memcg_sock",
        "memory.current minus the usage before must match memory.stat's sock within 10% while the server writes: 5 of 5 runs passed on an idle machine, 1 of 2 under load (other charges land in between)",
    ),
];

/// Why `test` is known to be flaky here, if it is.
pub fn known_flaky(test: &str) -> Option<&'static str> {
    KNOWN_FLAKY
        .iter()
        .find(|(t, _)| *t == test)
        .map(|(_, w)| *w)
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
    if bin.is_file() {
        cache::touch(&dir);
        return Ok(bin);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    compile(&tree, program, &bin)?;
    Ok(bin)
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
    let out = std::process::Command::new("gcc")
        .args(["-static", "-Wall", "-pthread", "-w"])
        .arg(format!("-I{}", selftests.display()))
        .arg("-o")
        .arg(&tmp)
        .arg(src.join(format!("{program}.c")))
        .arg(src.join("cgroup_util.c"))
        .arg(&shim)
        .output()
        .context("running gcc for the selftests (apt-get install gcc libc6-dev)");
    let _ = std::fs::remove_file(&shim);
    let out = out?;
    if !out.status.success() {
        let _ = std::fs::remove_file(&tmp);
        bail!(
            "compiling {program} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::rename(&tmp, bin).with_context(|| format!("publishing {}", bin.display()))
}

/// One boot running the selftest programs.
pub struct SelftestRun {
    /// Per program: its tests' results (empty when it printed none).
    pub programs: Vec<(String, Vec<TestResult>)>,
    /// Why the run itself is not valid, or a program that did not report.
    pub problems: Vec<String>,
    pub total: Duration,
    pub kept: PathBuf,
}

/// Builds the programs from the kernel source in `opts` and runs them in one VM.
pub fn run(opts: &RunOptions) -> Result<SelftestRun> {
    let started = Instant::now();
    let mut spec = spec(PROGRAMS)?;
    if opts.mglru.is_some() {
        spec.vm.mglru = opts.mglru;
    }
    eprintln!("{}: {}", spec.id, spec.title);
    let mut extra = Vec::new();
    for p in PROGRAMS {
        let bin = opts.kernel.selftest(p)?;
        extra.push(Extra {
            path: format!("{DIR}/{p}"),
            mode: 0o755,
            data: std::fs::read(&bin).with_context(|| format!("reading {}", bin.display()))?,
        });
    }
    // test_memcg_sock connects to "localhost": static glibc reads these two files.
    extra.push(Extra {
        path: "etc/hosts".into(),
        mode: 0o644,
        data: b"127.0.0.1 localhost\n::1 localhost\n".to_vec(),
    });
    extra.push(Extra {
        path: "etc/nsswitch.conf".into(),
        mode: 0o644,
        data: b"hosts: files\n".to_vec(),
    });
    let mut phases = Phases::default();
    let booted = lab::boot(&spec, opts, &extra, &mut phases)?;
    let mut problems = booted.problems;
    let mut programs = Vec::new();
    for p in PROGRAMS {
        let end = booted.stream.frames.iter().find_map(|f| match &f.event {
            Event::StepEnd {
                step, exit, stdout, ..
            } if step == p => Some((*exit, stdout.clone())),
            _ => None,
        });
        let results = match &end {
            Some((_, stdout)) => parse_ktap(stdout),
            None => Vec::new(),
        };
        if results.is_empty() {
            let how = match end {
                Some((exit, _)) => format!("{exit}"),
                None => "did not finish".into(),
            };
            problems.push(format!("{p} reported no test results ({how})"));
        }
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
        total: started.elapsed(),
        kept: booted.kept,
    })
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
        assert_eq!(outcome("test_memcg_min"), Outcome::Fail);
        assert_eq!(
            outcome("test_memcg_x"),
            Outcome::Skip("memory.peak is not writable".into())
        );
        assert!(matches!(outcome("test_memcg_sock"), Outcome::Skip(r) if r.contains("CONFIG_NET")));
        assert_eq!(outcome("test_y"), Outcome::Pass);
        assert_eq!(outcome("test_z"), Outcome::Fail);
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
    }

    #[test]
    fn the_spec_is_valid_and_runs_each_program() {
        let s = spec(PROGRAMS).unwrap();
        assert_eq!(s.steps.len(), PROGRAMS.len());
        assert_eq!(s.steps[0].argv, ["/selftests/test_memcontrol"]);
        assert_eq!(s.vm.kernel_config, ["selftests"]);
    }
}
