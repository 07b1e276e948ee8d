//! VM tests: every lab under labs/ boots in QEMU on the real kernel and must pass its
//! expectations and snapshot; a lab with a false expectation must be reported as failed.
//!
//! The first test to run builds the kernel (minutes, once; later runs use the cache). The
//! others wait for it on the cache lock.

mod common;

use common::predict::{assert_all_right, right_answers};
use common::{kernel_path, run_check, text, xtask, xtask_cmd, xtask_stdin};
use std::process::Output;

/// Every lab directory under labs/, each with its test below.
const LABS: &[&str] = &[
    "1-global-pressure",
    "2-cgroup-limit",
    "3-oom-kinds",
    "4-memory-high",
    "5-proactive",
    "6-kswapd-per-node",
    "7-watermarks",
    "8-swappiness-v1-v2",
    "9-anon-file-tmpfs",
    "10-dirty-writeback",
    "11-mglru-vs-classic",
    "12-psi-blocking",
    "13-protection",
    "14-pod",
    "15-zswap",
    "16-notes-experiment",
];

fn run_lab(lab: &str) -> Output {
    xtask(&["lab", lab])
}

/// The lab passes, run with `--predict` and answers on stdin that its own facts say are right:
/// every one is scored right, and the notebook page is written.
fn assert_lab_passes(lab: &str) {
    let (answers, counts) = right_answers(lab, false);
    let o = xtask_stdin(&["lab", lab, "--predict"], &answers);
    let out = text(&o);
    assert_all_right(&out, &counts);
    assert!(out.contains(&format!("last/{lab}/index.html")), "{out}");
    assert!(o.status.success(), "lab {lab} failed:\n{out}");
    assert!(out.contains(&format!("{lab}: PASS")), "{out}");
    assert!(
        out.contains(&format!("snapshot {lab}.snap: matches")),
        "{out}"
    );
    assert!(!out.contains("FAIL "), "{out}");
    assert_exercises_agree(lab);
}

/// Every `[[exercise]]` of the lab runs, and the kernel shows what each one says.
fn assert_exercises_agree(lab: &str) {
    let spec = concat!(env!("CARGO_MANIFEST_DIR"), "/../labs");
    let toml = std::fs::read_to_string(format!("{spec}/{lab}/lab.toml")).unwrap();
    let count = toml.matches("\n[[exercise]]").count();
    if count == 0 {
        return;
    }
    let (answers, counts) = right_answers(lab, true);
    let o = xtask_stdin(&["lab", lab, "--exercise", "all", "--predict"], &answers);
    let out = text(&o);
    assert!(
        o.status.success(),
        "lab {lab}: an exercise disagreed:\n{out}"
    );
    assert_eq!(out.matches("): the kernel AGREED").count(), count, "{out}");
    assert_all_right(&out, &counts);
}

#[test]
fn lab_1_global_pressure() {
    assert_lab_passes("1-global-pressure");
}

#[test]
fn lab_2_cgroup_limit() {
    assert_lab_passes("2-cgroup-limit");
}

#[test]
fn lab_3_oom_kinds() {
    assert_lab_passes("3-oom-kinds");
}

#[test]
fn lab_4_memory_high() {
    assert_lab_passes("4-memory-high");
}

#[test]
fn lab_5_proactive() {
    assert_lab_passes("5-proactive");
}

#[test]
fn lab_6_kswapd_per_node() {
    assert_lab_passes("6-kswapd-per-node");
}

#[test]
fn lab_7_watermarks() {
    assert_lab_passes("7-watermarks");
}

#[test]
fn lab_8_swappiness_v1_v2() {
    assert_lab_passes("8-swappiness-v1-v2");
}

#[test]
fn lab_9_anon_file_tmpfs() {
    assert_lab_passes("9-anon-file-tmpfs");
}

#[test]
fn lab_10_dirty_writeback() {
    assert_lab_passes("10-dirty-writeback");
}

#[test]
fn lab_11_mglru_vs_classic() {
    assert_lab_passes("11-mglru-vs-classic");
}

#[test]
fn lab_12_psi_blocking() {
    assert_lab_passes("12-psi-blocking");
}

#[test]
fn lab_13_protection() {
    assert_lab_passes("13-protection");
}

#[test]
fn lab_14_pod() {
    assert_lab_passes("14-pod");
}

#[test]
fn lab_15_zswap() {
    assert_lab_passes("15-zswap");
}

#[test]
fn lab_16_notes_experiment() {
    assert_lab_passes("16-notes-experiment");
}

#[test]
fn a_false_expectation_is_reported_as_failed() {
    let o = run_lab("tests/labs/wrong-expectation");
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("FAIL  Δ vmstat.pgscan_kswapd > 0 [step read]  (got 0)"),
        "{out}"
    );
    assert!(
        out.contains("PASS  Δ W/memory.stat.pgscan_direct > 0 [step read]"),
        "{out}"
    );
    assert!(out.contains("wrong-expectation: FAIL"), "{out}");
}

#[test]
fn every_lab_has_a_vm_test() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../labs");
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("lab.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    let mut listed: Vec<String> = LABS.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(
        found, listed,
        "add a #[test] for each lab in tests/labs.rs and list it in LABS"
    );
}

fn run_json(args: &[&str]) -> serde_json::Value {
    let o = xtask(args);
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("--json is not JSON ({e}):\n{}", text(&o)))
}

/// The delta of `counter` in step `step` of a `--json` result.
fn delta(v: &serde_json::Value, step: &str, counter: &str) -> i64 {
    let s = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == step)
        .unwrap_or_else(|| panic!("no step {step}"));
    let o = s["observed"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["counter"] == counter)
        .unwrap_or_else(|| panic!("{counter} not observed"));
    o["delta"]
        .as_i64()
        .unwrap_or_else(|| panic!("{counter}: {o}"))
}

#[test]
fn set_changes_the_vm_and_the_facts() {
    // Anonymous memory instead of page cache, no swap: W's task is OOM-killed.
    let v = run_json(&[
        "lab",
        "2",
        "--set",
        "read_size=0",
        "--set",
        "anon_size=64M",
        "--json",
    ]);
    assert_eq!(v["variant"]["skipped_steps"][0], "read", "{}", v["variant"]);
    let anon = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "anon")
        .unwrap();
    assert_eq!(anon["exit"], "killed by SIGKILL", "{anon}");
    assert_eq!(delta(&v, "anon", "W/memory.events.oom_kill"), 1);
    assert!(
        v["snapshot"]["diff_from_default"]
            .as_str()
            .unwrap()
            .contains("+ step anon (anon 64M in W): killed by SIGKILL")
    );
    // The timeline of raw samples is there for notebooks.
    let samples = v["frames"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["event"]["type"] == "sample")
        .count();
    assert!(samples >= 2, "{samples} samples");
    // With zram swap the same workload survives and swaps.
    let v = run_json(&[
        "lab",
        "2",
        "--set",
        "read_size=0",
        "--set",
        "anon_size=64M",
        "--set",
        "swap=128M",
        "--json",
    ]);
    let anon = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "anon")
        .unwrap();
    assert_eq!(anon["exit"], "exited 0", "{anon}");
    assert_eq!(delta(&v, "anon", "W/memory.events.oom_kill"), 0);
}

#[test]
fn a_guest_kernel_panic_is_reported_not_passed() {
    let o = run_lab("tests/labs/kernel-panic");
    let out = text(&o);
    // A kernel that panics is unhealthy: a regression (1), not a fault of the machine.
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("the run is not valid"), "{out}");
    assert!(out.contains("the kernel is not healthy"), "{out}");
    assert!(out.contains("result stream incomplete"), "{out}");
    assert!(
        out.contains("Kernel panic - not syncing"),
        "the console tail must show the panic: {out}"
    );
    assert!(out.contains("kernel-panic: FAIL"), "{out}");
}

#[test]
fn a_hung_guest_is_killed_at_the_timeout() {
    let started = std::time::Instant::now();
    let o = run_lab("tests/labs/hang");
    let out = text(&o);
    // The machine's fault, not a verdict on the kernel: a bisect stops (255).
    assert_eq!(o.status.code(), Some(255), "{out}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(90),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        out.contains("did not finish within 30s and QEMU was killed"),
        "{out}"
    );
    assert!(out.contains("last seen: step-start forever"), "{out}");
    assert!(out.contains("hang: FAIL"), "{out}");
}

#[test]
fn two_runs_of_the_same_lab_at_once_both_pass() {
    let spawn = || {
        xtask_cmd(&["lab", "tests/labs/wrong-expectation"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    for o in [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()] {
        // Each run is complete and judged on its own: the false expectation fails, nothing else.
        let out = text(&o);
        assert_eq!(o.status.code(), Some(1), "{out}");
        assert!(
            out.contains("snapshot wrong-expectation.snap: matches"),
            "{out}"
        );
        assert!(!out.contains("not valid"), "{out}");
    }
}

#[test]
fn sigterm_stops_qemu_and_cleans_up() {
    use std::io::BufRead;
    let mut child = xtask_cmd(&["lab", "tests/labs/hang"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while stderr.read_line(&mut line).unwrap() > 0 && !line.contains("step forever") {
        line.clear();
    }
    assert!(
        line.contains("step forever"),
        "the guest never started its step"
    );
    let pid = child.id() as i32;
    let scratch = qemu_scratch_dirs(pid);
    assert!(!scratch.is_empty(), "no QEMU of ours was running");
    unsafe { libc_kill(pid, 15) };
    let status = child.wait().unwrap();
    assert!(!status.success());
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
    assert!(rest.contains("interrupted"), "{rest}");
    for dir in scratch {
        assert!(
            !std::path::Path::new(&dir).exists(),
            "{dir} was left behind"
        );
    }
    assert!(qemu_scratch_dirs(pid).is_empty(), "QEMU is still running");
}

/// The scratch directories (TMPDIR) of QEMU processes whose parent is `parent`.
fn qemu_scratch_dirs(parent: i32) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let ppid: i32 = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0);
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if ppid == parent && comm.starts_with("qemu-system") {
            let env = std::fs::read(e.path().join("environ")).unwrap_or_default();
            for var in env.split(|b| *b == 0) {
                if let Some(dir) = var.strip_prefix(b"TMPDIR=") {
                    out.push(String::from_utf8_lossy(dir).into_owned());
                }
            }
        }
    }
    out
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[test]
fn the_shell_answers_commands_and_powers_off_on_exit() {
    use std::io::{BufRead, Write};
    let mut child = xtask_cmd(&["lab", "2", "--shell"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let wait_for = |needle: &str, seen: &mut Vec<String>| {
        while std::time::Instant::now() < deadline {
            match rx.recv_timeout(std::time::Duration::from_secs(1)) {
                Ok(line) => {
                    let hit = line.contains(needle);
                    seen.push(line);
                    if hit {
                        return;
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(_) => break,
            }
        }
        panic!("never saw {needle:?}; output:\n{}", seen.join("\n"));
    };
    // Typed (piped) before the guest has even booted: nothing may be lost on the way, where
    // the kernel's UART set-up used to eat the first characters (`cat /sys/...` ran as
    // `/sys/...`).
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"cat /sys/fs/cgroup/W/memory.max\nlab-step read\nexit\n")
        .unwrap();
    wait_for("run a step:", &mut seen);
    wait_for("33554432", &mut seen);
    wait_for("step read: exited 0", &mut seen);
    wait_for("W/memory.stat.pgscan_direct: 0 ->", &mut seen);
    wait_for("shell session ended, the VM powered off", &mut seen);
    assert!(
        !seen.iter().any(|l| l.contains("not found")),
        "a command arrived mangled:\n{}",
        seen.join("\n")
    );
    let status = child.wait().unwrap();
    assert!(status.success(), "{}", seen.join("\n"));
}

#[test]
fn an_agent_that_dies_without_its_end_frame_is_reported() {
    // Fault injection: the agent aborts right after its first frame, so PID 1 dies.
    let o = xtask(&[
        "lab",
        "tests/labs/wrong-expectation",
        "--kernel-arg",
        "kernel_lab=crash",
    ]);
    let out = text(&o);
    // kernel-lab's own agent died: no verdict on the kernel (255), and no health finding.
    assert_eq!(o.status.code(), Some(255), "{out}");
    assert!(
        out.contains("the stream stops after frame 0 without its end; last seen: hello"),
        "{out}"
    );
    assert!(
        out.contains("the agent (PID 1) died, so the kernel panicked: ")
            && out.contains("kernel health: healthy"),
        "{out}"
    );
    assert!(
        out.contains("Attempted to kill init"),
        "the console tail must show it: {out}"
    );
    assert!(
        out.contains("wrong-expectation: FAIL")
            && !out.contains("snapshot wrong-expectation.snap: matches"),
        "{out}"
    );
}

#[test]
fn the_kernels_own_selftests_run_and_report_each_test() {
    let (o, json, xml, _out) = run_check(&["--lab", "selftests"]);
    let out = text(&o);
    let entries = json["results"].as_array().unwrap();
    assert!(
        entries.len() >= 10,
        "test_memcontrol reports a dozen tests: {out}"
    );
    for e in entries {
        assert_eq!(e["kind"], "selftest", "{e}");
        let name = e["id"].as_str().unwrap();
        assert!(name.starts_with("test_memcontrol/test_memcg_"), "{name}");
        match e["result"].as_str().unwrap() {
            "passed" => assert!(e["runs"].as_u64().unwrap() >= 1),
            "skipped" => assert!(
                e["details"][0].as_str().unwrap().starts_with("skipped: "),
                "a skip says why: {e}"
            ),
            // Measured: failed, then passed on a retry; shown with its rate.
            "flaky" => assert!(
                e["details"][0]
                    .as_str()
                    .unwrap()
                    .starts_with("flaky: passed "),
                "{e}"
            ),
            other => panic!("{name} {other} on the default kernel:\n{out}"),
        }
    }
    let passed = entries.iter().filter(|e| e["result"] == "passed").count();
    assert!(passed >= 10, "{passed} passed:\n{out}");
    assert!(o.status.success(), "{out}");
    assert!(
        xml.contains("classname=\"selftests."),
        "selftests are JUnit test cases: {xml}"
    );
    // Every boot is a run record with its health and its logs.
    for r in json["runs"].as_array().unwrap() {
        assert_eq!(r["healthy"], true, "{r}");
        assert!(
            std::path::Path::new(r["log"].as_str().unwrap())
                .join("console.log")
                .is_file(),
            "{r}"
        );
    }
}

/// `check ARGS --out DIR`: its output and DIR's check.json.
fn check_in(dir: &std::path::Path, args: &[&str]) -> (Output, serde_json::Value) {
    check_in_env(dir, args, &[])
}

/// [`check_in`] with environment variables set.
fn check_in_env(
    dir: &std::path::Path,
    args: &[&str],
    env: &[(&str, &std::path::Path)],
) -> (Output, serde_json::Value) {
    let mut all = vec!["check", "--out", dir.to_str().unwrap()];
    all.extend_from_slice(args);
    let mut cmd = xtask_cmd(&all);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = cmd.output().expect("running xtask");
    let json = std::fs::read_to_string(dir.join("check.json"))
        .unwrap_or_else(|e| panic!("no check.json in {} ({e}):\n{}", dir.display(), text(&o)));
    (o, serde_json::from_str(&json).unwrap())
}

/// A lab that passes while the kernel warns (fault injection: the agent writes a WARNING line
/// at level 4 to /dev/kmsg and sets the W taint, as a WARN_ON() would) fails its health, in
/// every format; the kernel log of the OOM labs (warning and error level) stays healthy.
#[test]
fn an_injected_warn_fails_the_kernels_health() {
    let dir = tempfile::tempdir().unwrap();
    let (o, json) = check_in(
        dir.path(),
        &[
            "--lab",
            "4",
            "--retries",
            "0",
            "--kernel-arg",
            "kernel_lab_fault=warn,taint",
        ],
    );
    let out = text(&o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "an unhealthy kernel is a regression: {out}"
    );
    let e = &json["results"][0];
    assert_eq!(e["result"], "failed", "{e}");
    let details = e["details"].to_string();
    assert!(
        details.contains(
            "kernel health: kernel log: WARNING: CPU: 0 PID: 1 at kernel-lab injected warning"
        ),
        "{details}"
    );
    assert!(
        details.contains("the kernel is tainted (512): W (a WARN fired)"),
        "{details}"
    );
    let run = &json["runs"][0];
    assert_eq!(run["healthy"], false, "{run}");
    // The lab's own expectations and snapshot still passed: only the health check failed.
    let checks = e["checks"].as_array().unwrap();
    let status = |name: &str| {
        checks
            .iter()
            .find(|c| c["name"].as_str().unwrap().starts_with(name))
            .map(|c| c["status"].as_str().unwrap().to_string())
    };
    assert_eq!(status("kernel health").as_deref(), Some("failed"));
    assert_eq!(status("snapshot").as_deref(), Some("passed"));
    let ktap = std::fs::read_to_string(dir.path().join("check.ktap")).unwrap();
    assert!(ktap.contains("        not ok 2 kernel health"), "{ktap}");
    let xml = std::fs::read_to_string(dir.path().join("junit.xml")).unwrap();
    assert!(
        xml.contains("<failure message=\"failed: 0/1 runs passed\">"),
        "{xml}"
    );
}

/// A stand-in kernel tree whose build fails like a broken commit (a compile error).
fn broken_kernel_tree(dir: &std::path::Path) {
    std::fs::create_dir_all(dir.join("mm")).unwrap();
    std::fs::write(dir.join("mm/vmscan.c"), "/* stand-in */\n").unwrap();
    std::fs::write(
        dir.join("Makefile"),
        "VERSION = 6\nPATCHLEVEL = 12\nSUBLEVEL = 0\nEXTRAVERSION = -broken\n\
         tinyconfig:\n\tmkdir -p $(O) && echo '# tiny' > $(O)/.config\n\
         olddefconfig:\n\ttrue\n\
         vmlinux:\n\techo 'mm/vmscan.c:1: error: expected ; before }' >&2; exit 2\n",
    )
    .unwrap();
}

/// The shared cache (KERNEL_LAB_CACHE, else ~/.cache/kernel-lab), as xtask finds it.
fn shared_cache() -> std::path::PathBuf {
    let env = |k| std::env::var_os(k).map(std::path::PathBuf::from);
    env("KERNEL_LAB_CACHE")
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("kernel-lab")))
        .unwrap_or_else(|| env("HOME").unwrap().join(".cache/kernel-lab"))
}

/// A cache of the test's own in `dir` that borrows the shared cache's extracted sources and
/// built kernels (symlinks, only read): what the test builds stays in its temporary directory.
/// The default kernel is built in the shared cache first if it is not there yet.
fn borrowing_cache(dir: &std::path::Path) -> std::path::PathBuf {
    kernel_path(&[]);
    let shared = shared_cache();
    for sub in ["src", "kernels"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        for e in std::fs::read_dir(shared.join(sub)).unwrap().flatten() {
            let name = e.file_name();
            if e.path().is_dir() && !name.to_string_lossy().starts_with('.') {
                std::os::unix::fs::symlink(e.path(), dir.join(sub).join(&name)).unwrap();
            }
        }
    }
    dir.to_path_buf()
}

/// A kernel that does not build in the middle of a check: the labs that finished on the other
/// kernel are kept in both reports, every item of the broken kernel is `untestable` (built
/// once, not once per lab), and the check exits 125. The broken tree's build directory stays
/// in the test's own cache.
#[test]
fn a_kernel_build_failure_mid_check_keeps_the_finished_results() {
    let tmp = tempfile::tempdir().unwrap();
    let broken = tmp.path().join("linux-broken");
    broken_kernel_tree(&broken);
    let cache = borrowing_cache(&tmp.path().join("cache"));
    let out = tmp.path().join("out");
    let (o, json) = check_in_env(
        &out,
        &[
            "--kernel-src",
            "6.12",
            "--kernel-src",
            broken.to_str().unwrap(),
            "--lab",
            "4",
            "--lab",
            "7",
            "--no-selftests",
            "--retries",
            "0",
        ],
        &[("KERNEL_LAB_CACHE", &cache)],
    );
    let text = text(&o);
    assert_eq!(o.status.code(), Some(125), "{text}");
    assert!(
        !text.contains("kernel: built vmlinux"),
        "6.12 was rebuilt: {text}"
    );
    assert_eq!(
        std::fs::read_dir(cache.join("build")).unwrap().count(),
        1,
        "the broken tree's build directory is in the test's cache"
    );
    let results = json["results"].as_array().unwrap();
    let get = |id: &str, kernel_prefix: &str| {
        results
            .iter()
            .find(|e| e["id"] == id && e["kernel"].as_str().unwrap().starts_with(kernel_prefix))
            .unwrap_or_else(|| panic!("{id} on {kernel_prefix} missing: {text}"))
    };
    assert_eq!(get("4-memory-high", "6.12.1")["result"], "passed", "{text}");
    assert_eq!(get("7-watermarks", "6.12.1")["result"], "passed", "{text}");
    for id in ["4-memory-high", "7-watermarks"] {
        let e = get(id, "6.12.0-broken");
        assert_eq!(e["result"], "untestable", "{e}");
        assert!(e["details"].to_string().contains("does not build"), "{e}");
    }
    let xml = std::fs::read_to_string(out.join("junit.xml")).unwrap();
    let doc = roxmltree::Document::parse(&xml).unwrap();
    assert_eq!(
        doc.descendants()
            .filter(|n| n.has_tag_name("error"))
            .count(),
        2,
        "{xml}"
    );
    let ktap = std::fs::read_to_string(out.join("check.ktap")).unwrap();
    assert!(ktap.contains("# ERROR untestable: "), "{ktap}");
    assert_eq!(json["verdict"], "untestable");
    assert_eq!(json["exit_code"], 125);
}

/// The selftest program dies midway (fault injection: the agent SIGKILLs it after its third
/// result, as the OOM killer or an oops would): the three results are kept, and every test of
/// its source's tests[] table that did not report is an error naming how the program ended.
#[test]
fn a_selftest_program_killed_midway_is_an_error_naming_the_missing_tests() {
    let dir = tempfile::tempdir().unwrap();
    let (o, json) = check_in(
        dir.path(),
        &[
            "--lab",
            "selftests",
            "--retries",
            "0",
            "--kernel-arg",
            "kernel_lab_fault=kill:test_memcontrol:3",
        ],
    );
    let out = text(&o);
    assert_eq!(
        o.status.code(),
        Some(255),
        "missing results are errors (of the run, not a regression): {out}"
    );
    let results = json["results"].as_array().unwrap();
    assert!(
        results.len() >= 12,
        "every test of the table is a row: {out}"
    );
    // The agent kills it once 3 results are out (polled every 5 ms; each test takes longer).
    let reported = results
        .iter()
        .take_while(|e| e["result"] != "error")
        .count();
    assert_eq!(reported, 3, "{out}");
    let last = results[reported - 1]["id"].as_str().unwrap();
    let last = last.rsplit('/').next().unwrap();
    // What reported keeps its verdict (test_memcg_min can fail on a loaded host: it measures
    // how far reclaim got in a fixed time).
    for e in &results[..reported] {
        let r = e["result"].as_str().unwrap();
        assert!(["passed", "skipped", "failed"].contains(&r), "{e}");
    }
    for e in &results[reported..] {
        assert_eq!(e["result"], "error", "{e}");
        assert_eq!(
            e["details"][0].as_str().unwrap(),
            format!("no result: test_memcontrol killed by SIGKILL after {last}"),
            "{e}"
        );
    }
    let ktap = std::fs::read_to_string(dir.path().join("check.ktap")).unwrap();
    assert!(
        ktap.contains(&format!(
            "# ERROR no result: test_memcontrol killed by SIGKILL after {last}"
        )),
        "{ktap}"
    );
}

/// The example workflow's three stages, locally: build and export once, four shards from the
/// manifest (no tree needed), merge; the merged verdict equals an unsharded run's.
#[test]
fn build_once_four_shards_and_the_merge_equal_an_unsharded_run() {
    let tmp = tempfile::tempdir().unwrap();
    let labs = [
        "--lab",
        "4",
        "--lab",
        "11",
        "--lab",
        "7",
        "--mglru",
        "on",
        "--no-selftests",
    ];
    let export = tmp.path().join("kernels");
    let mut build = vec![
        "check",
        "--build-only",
        "--export",
        export.to_str().unwrap(),
    ];
    build.extend_from_slice(&labs);
    let o = xtask(&build);
    assert!(o.status.success(), "{}", text(&o));
    let manifest = export.join("manifest.json");
    let from = |dir: &std::path::Path, shard: Option<&str>| {
        let mut args = vec!["--kernels", manifest.to_str().unwrap()];
        args.extend_from_slice(&labs);
        if let Some(s) = shard {
            args.extend_from_slice(&["--shard", s]);
        }
        check_in(dir, &args)
    };
    let mut shard_dirs = Vec::new();
    for i in 1..=4 {
        let d = tmp.path().join(format!("shard-{i}"));
        let (o, json) = from(&d, Some(&format!("{i}/4")));
        assert!(o.status.success(), "{}", text(&o));
        assert_eq!(json["provenance"]["shard"]["index"], i);
        shard_dirs.push(d);
    }
    let merged = tmp.path().join("merged");
    let mut merge = vec!["check", "--out", merged.to_str().unwrap(), "--merge"];
    merge.extend(shard_dirs.iter().map(|d| d.to_str().unwrap()));
    let o = xtask(&merge);
    assert!(o.status.success(), "{}", text(&o));
    let merged: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(merged.join("check.json")).unwrap()).unwrap();
    let (o, whole) = from(&tmp.path().join("whole"), None);
    assert!(o.status.success(), "{}", text(&o));
    // The same items with the same results; a lab that needed its retry in one of the two runs
    // (flaky: it passed) is the same result as passed for this comparison.
    let key = |v: &serde_json::Value| -> Vec<String> {
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let r = e["result"].as_str().unwrap().replace("flaky", "passed");
                format!(
                    "{} {} {} {} {r}",
                    e["index"], e["id"], e["kernel"], e["mglru"]
                )
            })
            .collect()
    };
    assert_eq!(key(&merged), key(&whole));
    assert_eq!(key(&whole).len(), 3, "{whole}");
    assert_eq!(merged["verdict"], whole["verdict"]);
    assert_eq!(
        merged["provenance"]["merged_from"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    // A missing shard is an error, never a smaller green report.
    let o = xtask(&[
        "check",
        "--out",
        tmp.path().join("m2").to_str().unwrap(),
        "--merge",
        shard_dirs[0].to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("shard(s) 2/4, 3/4, 4/4 missing"),
        "{}",
        text(&o)
    );
}

/// A copy of a catalog lab as a student's own lab `id` in `dir` (its lab.toml and README, and
/// its snapshot under the new name, passed through `snapshot`).
fn student_copy(
    lab: &str,
    id: &str,
    dir: &std::path::Path,
    snapshot: impl Fn(&str) -> String,
) -> std::path::PathBuf {
    let from = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../labs")).join(lab);
    let to = dir.join(id);
    std::fs::create_dir_all(to.join("snapshots")).unwrap();
    let toml = std::fs::read_to_string(from.join("lab.toml")).unwrap();
    let toml = toml.replace(&format!("id = \"{lab}\""), &format!("id = \"{id}\""));
    std::fs::write(to.join("lab.toml"), toml).unwrap();
    std::fs::copy(from.join("README.md"), to.join("README.md")).unwrap();
    let snap = std::fs::read_to_string(from.join(format!("snapshots/{lab}.snap"))).unwrap();
    std::fs::write(to.join(format!("snapshots/{id}.snap")), snapshot(&snap)).unwrap();
    to
}

/// Files under `dir` whose name ends with `suffix`.
fn files_ending(dir: &std::path::Path, suffix: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_ending(&p, suffix));
        } else if p.to_string_lossy().ends_with(suffix) {
            out.push(p);
        }
    }
    out
}

/// Debian's `chromium`, installed as the lab runs install what they miss (root with apt-get),
/// or the command to install it.
fn ensure_chromium() {
    let found = |b: &str| {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(b).is_file()))
    };
    if found("chromium") {
        return;
    }
    let install = "apt-get install --no-install-recommends chromium";
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    assert!(
        root && found("apt-get"),
        "the notebook test needs Debian's chromium: {install}"
    );
    let ok = |args: &[&str]| {
        std::process::Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    assert!(
        ok(&["update", "-qq"])
            && ok(&[
                "install",
                "-y",
                "-qq",
                "--no-install-recommends",
                "chromium"
            ]),
        "installing chromium failed: {install}"
    );
}

/// Loads a page in headless Chromium (Debian's `chromium`) with `#selftest` and returns the
/// DOM after its scripts ran, and the browser's log.
fn chromium_dom(page: &std::path::Path) -> (String, String) {
    ensure_chromium();
    let profile = tempfile::tempdir().unwrap();
    let o = std::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("file://{}#selftest", page.display()))
        .output()
        .expect("running chromium (install it: apt-get install --no-install-recommends chromium)");
    assert!(o.status.success(), "chromium: {}", text(&o));
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// `name="value"` of the first element that has it.
fn attr<'a>(html: &'a str, name: &str) -> Option<&'a str> {
    let at = html.find(&format!(" {name}=\""))? + name.len() + 3;
    html[at..].split('"').next()
}

/// A student edits a lab (here: a copy of lab 2 whose snapshot says kswapd scanned) and
/// predicts every counter goes up. The run names the fact that changed without insta's review
/// box or a `.snap.new`; every miss is explained in the lab's words; and the notebook page
/// renders in headless Chromium without a console message, with one series per counter it
/// charts and the values under the pointer.
#[test]
fn a_students_lab_is_scored_and_its_notebook_renders_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let lab = student_copy("2-cgroup-limit", "student-2", dir.path(), |s| {
        s.replacen(
            "  Δ vmstat.pgscan_kswapd: 0",
            "  Δ vmstat.pgscan_kswapd: >0",
            1,
        )
    });
    let mut cmd = xtask_cmd(&["lab", lab.to_str().unwrap(), "--predict"]);
    cmd.env_remove("INSTA_UPDATE")
        .env_remove("INSTA_FORCE_PASS")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(">0\n".repeat(40).as_bytes()).unwrap();
    }
    let o = child.wait_with_output().unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "the snapshot differs: {out}");
    assert!(
        out.contains("snapshot student-2.snap: DIFFERS")
            && out.contains("step read: Δ vmstat.pgscan_kswapd was >0, now 0"),
        "{out}"
    );
    assert!(files_ending(dir.path(), ".snap.new").is_empty(), "{out}");
    // insta's review box: its summary and its rules.
    assert!(
        !out.contains("Snapshot Summary") && !out.contains("━━━"),
        "{out}"
    );
    let miss = "  ✗ read: vmstat.pgscan_kswapd: you said >0, the kernel showed 0 (+0)\n      why: ";
    assert!(out.contains(miss), "{out}");
    assert!(out.contains("questions to think about"), "{out}");

    let page = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .join("target/kernel-lab/last/student-2/index.html");
    let html = std::fs::read_to_string(&page).unwrap();
    for external in ["src=\"http", "href=\"http", "@import", "url(http"] {
        assert!(!html.contains(external), "the page fetches {external}");
    }
    assert!(html.contains("Your predictions:") && html.contains("Questions to think about"));
    let (dom, log) = chromium_dom(&page);
    let console: Vec<&str> = log.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "console messages: {console:?}");
    let body = &dom[dom.find("<body").expect("a body")..];
    assert_eq!(attr(body, "data-ready"), Some("1"), "{body:.400}");
    assert_eq!(attr(body, "data-errors"), None, "{body:.400}");
    let hover = attr(body, "data-hover").unwrap_or("");
    assert!(
        hover.contains("step read") && hover.contains("MiB"),
        "{hover}"
    );
    // One drawn series per counter the chart's data names (zoomed copies aside).
    let data = html.split("id=\"chart-data\">").nth(1).unwrap();
    let data: serde_json::Value =
        serde_json::from_str(&data[..data.find("</script>").unwrap()].replace("<\\/", "</"))
            .unwrap();
    let mut counters: Vec<String> = Vec::new();
    for p in data["panels"].as_array().unwrap() {
        if p["zoomed"] == true {
            continue;
        }
        for s in p["series"].as_array().unwrap() {
            counters.push(s["counter"].as_str().unwrap().to_string());
        }
    }
    let drawn: Vec<&str> = dom
        .split("<path class=\"series\" data-counter=\"")
        .skip(1)
        .map(|s| s.split('"').next().unwrap())
        .collect();
    let mut sorted = counters.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        counters.len(),
        "a counter twice: {counters:?}"
    );
    let mut drawn_sorted: Vec<String> = drawn.iter().map(|s| s.to_string()).collect();
    drawn_sorted.sort();
    assert_eq!(drawn_sorted, sorted);
    assert_eq!(
        attr(body, "data-series"),
        Some(counters.len().to_string().as_str())
    );
    for c in [
        "W/memory.current",
        "W/memory.stat.pgscan_direct",
        "meminfo.MemFree",
    ] {
        assert!(
            counters.iter().any(|x| x == c),
            "{c} is not charted: {counters:?}"
        );
    }
}
