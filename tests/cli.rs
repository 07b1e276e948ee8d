//! Host-only tests of the command line: the catalog, id resolution and spec errors (no VM).

use std::process::{Command, Output};

fn xtask(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("running xtask")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

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
