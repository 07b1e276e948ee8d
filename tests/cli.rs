//! Host-only tests of the command line: the catalog, id resolution and spec errors (no VM).

mod common;

use common::{text, xtask, xtask_cmd};
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
}

#[test]
fn help_teaches() {
    let o = xtask(&["lab", "--help"]);
    assert!(o.status.success());
    let out = text(&o);
    for word in ["--kernel-src", "--accel", "KERNEL_LAB_SRC", "KVM", "number"] {
        assert!(out.contains(word), "lab --help lacks {word}: {out}");
    }
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
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
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
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
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
