//! The kernel matrix: the labs on Debian's other kernel (6.1), its fragments by Kconfig, and a
//! `git bisect run` between a 6.12 and a 6.1 kernel. Not part of `cargo test --workspace`: it
//! builds the 6.1 kernel (8 min 30 s cold on 2 idle cores), which README's test command leaves
//! out. Run it with `cargo test --test matrix`; .ci/run does, after README's test command.

mod common;

use common::{git, kernel_path, run_check, text};

/// Every fragment of kernel-configs/ holds on 6.1 too, by Kconfig alone (no build): 6.1's
/// KPROBES depends on MODULES, and a fragment asking for it fails here in seconds.
#[test]
fn every_config_fragment_survives_kconfig_on_6_1() {
    common::assert_fragments_survive_kconfig("6.1");
}

/// Debian's other kernel (`--kernel-src 6.1`: linux-source-6.1, installed when missing): the
/// labs run on it, and lab 5 (memory.reclaim's swappiness=, new in 6.12) is a declared skip.
#[test]
fn debian_6_1_runs_the_labs_and_declares_what_differs() {
    let (o, json, _, _out) = run_check(&[
        "--kernel-src",
        "6.1",
        "--lab",
        "4",
        "--lab",
        "5",
        "--lab",
        "8",
        "--no-selftests",
    ]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    let result = |lab: &str| {
        let e = json["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["id"] == lab)
            .unwrap_or_else(|| panic!("{lab} missing: {out}"));
        assert!(e["kernel"].as_str().unwrap().starts_with("6.1."), "{e}");
        (
            e["result"].as_str().unwrap().to_string(),
            e["details"].to_string(),
        )
    };
    assert_eq!(result("4-memory-high").0, "passed", "{out}");
    assert_eq!(result("8-swappiness-v1-v2").0, "passed", "{out}");
    let (r5, why) = result("5-proactive");
    assert_eq!(r5, "skipped", "{out}");
    assert!(why.contains("no swappiness= argument before 6.12"), "{why}");
}

/// `git bisect run` over a stand-in kernel tree finds the commit that planted a regression,
/// skipping a commit that does not build. The stand-in's `make vmlinux` yields real kernels:
/// Debian's 6.12 (whose memory.reclaim takes `swappiness=`, so lab 5 passes) until the planted
/// commit, Debian's 6.1 after it (memory.reclaim rejects the argument: lab 5's expectations
/// fail, exit 1), and one commit that does not compile (exit 125).
#[test]
fn git_bisect_run_finds_the_commit_that_broke_a_lab() {
    let good = kernel_path(&[]);
    let bad = kernel_path(&["--kernel-src", "6.1"]);
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("linux");
    std::fs::create_dir_all(tree.join("mm")).unwrap();
    std::fs::write(
        tree.join("Makefile"),
        "VERSION = 6\nPATCHLEVEL = 12\nSUBLEVEL = 0\nEXTRAVERSION =\n\
         tinyconfig:\n\t@mkdir -p $(O) && echo '# tiny' > $(O)/.config\n\
         olddefconfig:\n\t@true\n\
         vmlinux:\n\t@if grep -q broken mm/vmscan.c; then echo 'mm/vmscan.c:1: error: broken' >&2; exit 2; fi; \
         if grep -q regressed mm/vmscan.c; then cp \"$$BAD\" $(O)/vmlinux; else cp \"$$GOOD\" $(O)/vmlinux; fi\n",
    )
    .unwrap();
    let mut commits = Vec::new();
    git(&tree, &["init", "-q"]);
    for (i, state) in [
        "fine",
        "broken",
        "fine again",
        "regressed",
        "regressed, later",
        "regressed, latest",
    ]
    .iter()
    .enumerate()
    {
        std::fs::write(tree.join("mm/vmscan.c"), format!("/* {state} */\n")).unwrap();
        std::fs::write(tree.join("mm/history.c"), format!("/* commit {i} */\n")).unwrap();
        git(&tree, &["add", "-A"]);
        git(&tree, &["commit", "-qm", state]);
        commits.push(git(&tree, &["rev-parse", "HEAD"]));
    }
    git(&tree, &["bisect", "start", &commits[5], &commits[0]]);
    let out_dir = tmp.path().join("out");
    let o = std::process::Command::new("git")
        .arg("-C")
        .arg(&tree)
        .args([
            "bisect",
            "run",
            env!("CARGO_BIN_EXE_xtask"),
            "check",
            "--lab",
            "5",
        ])
        .args([
            "--no-selftests",
            "--no-install",
            "--kernel-src",
            ".",
            "--out",
        ])
        .arg(&out_dir)
        .env("KERNEL_LAB_CACHE", tmp.path().join("cache"))
        .env("GOOD", &good)
        .env("BAD", &bad)
        .output()
        .unwrap();
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains(&format!("{} is the first bad commit", commits[3])),
        "{out}"
    );
    let log = git(&tree, &["bisect", "log"]);
    git(&tree, &["bisect", "reset"]);
    // Every step was judged by the lab, none was an error: good and bad steps only, and the
    // commit that does not build was skipped if the bisect reached it.
    for line in log.lines().filter(|l| l.starts_with("git bisect ")) {
        let sha = line.split_whitespace().last().unwrap();
        let i = commits.iter().position(|c| c == sha);
        match i {
            Some(1) => assert!(line.starts_with("git bisect skip"), "{log}"),
            Some(0 | 2) => assert!(line.starts_with("git bisect good"), "{log}"),
            Some(_) => assert!(line.starts_with("git bisect bad"), "{log}"),
            None => {}
        }
    }
}
