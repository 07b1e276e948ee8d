//! VM tests: every lab under labs/ boots in QEMU on the real kernel and must pass its
//! expectations and snapshot; a lab with a false expectation must be reported as failed.
//!
//! The first test to run builds the kernel (minutes, once; later runs use the cache). The
//! others wait for it on the cache lock.

use std::process::{Command, Output};

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
];

fn run_lab(lab: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["lab", lab])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("running xtask lab")
}

fn text(o: &Output) -> String {
    format!(
        "{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn assert_lab_passes(lab: &str) {
    let o = run_lab(lab);
    let out = text(&o);
    assert!(o.status.success(), "lab {lab} failed:\n{out}");
    assert!(out.contains(&format!("{lab}: PASS")), "{out}");
    assert!(
        out.contains(&format!("snapshot {lab}.snap: matches")),
        "{out}"
    );
    assert!(!out.contains("FAIL "), "{out}");
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
