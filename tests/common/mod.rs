//! Helpers shared by the integration tests: the xtask binary, run from the workspace root.

#![allow(dead_code)]

pub mod predict;

use std::process::{Command, Output};

/// `xtask ARGS` as a command, in the workspace root. The course progress it records goes to a
/// file of this test process, not to the machine's (`cargo xtask list` stays the student's).
pub fn xtask_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .env("KERNEL_LAB_PROGRESS", progress_file());
    cmd
}

/// The progress file of this test process.
pub fn progress_file() -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "kernel-lab-test-progress-{}.json",
        std::process::id()
    ))
}

/// Runs `xtask ARGS` with `input` on its stdin.
pub fn xtask_stdin(args: &[&str], input: &str) -> Output {
    use std::io::Write;
    let mut child = xtask_cmd(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running xtask");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_string();
    // Written from a thread: a run that never reads would otherwise block us on a full pipe.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let out = child.wait_with_output().expect("running xtask");
    let _ = writer.join();
    out
}

/// Runs `xtask ARGS` to the end.
pub fn xtask(args: &[&str]) -> Output {
    xtask_cmd(args).output().expect("running xtask")
}

/// stdout and stderr together, for assertions and failure messages.
pub fn text(o: &Output) -> String {
    format!(
        "{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `git ARGS` in `dir`, as a test's author; its stdout (trimmed).
pub fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let o = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@t")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@t")
        .output()
        .expect("running git");
    assert!(o.status.success(), "git {args:?}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// `check --out DIR args`: its output, check.json, junit.xml, and DIR (the run records' logs
/// live there: kept until the caller drops it).
pub fn run_check(args: &[&str]) -> (Output, serde_json::Value, String, tempfile::TempDir) {
    let out_dir = tempfile::tempdir().unwrap();
    let mut all = vec!["check", "--out", out_dir.path().to_str().unwrap()];
    all.extend_from_slice(args);
    let o = xtask(&all);
    let json = std::fs::read_to_string(out_dir.path().join("check.json"))
        .unwrap_or_else(|e| panic!("no check.json ({e}):\n{}", text(&o)));
    let xml = std::fs::read_to_string(out_dir.path().join("junit.xml")).unwrap();
    roxmltree::Document::parse(&xml).expect("junit.xml parses as XML");
    (o, serde_json::from_str(&json).unwrap(), xml, out_dir)
}

/// The path of a cached kernel (built first if it is not).
pub fn kernel_path(args: &[&str]) -> String {
    let mut all = vec!["kernel"];
    all.extend_from_slice(args);
    let o = xtask(&all);
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

/// `kernel --config-only --kernel-src VERSION`: every fragment of kernel-configs/ holds by
/// Kconfig itself (tinyconfig, the fragments, olddefconfig, the survival check; no build), and
/// each fragment that is not in every kernel is configured as a kernel of its own.
pub fn assert_fragments_survive_kconfig(version: &str) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../kernel-configs");
    let optional: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.strip_suffix(".config")?.to_string();
            let text = std::fs::read_to_string(e.path()).ok()?;
            let every = text
                .lines()
                .any(|l| l.trim() == "# kernel-lab: in every kernel");
            (name != "base" && !every).then_some(name)
        })
        .collect();
    let o = xtask(&["kernel", "--config-only", "--kernel-src", version]);
    let out = text(&o);
    assert!(o.status.success(), "{version}: {out}");
    assert!(
        out.contains("every option the fragments ask for survived"),
        "{out}"
    );
    for name in &optional {
        assert!(
            out.contains(&format!(",{name}}}.config")),
            "{name} not configured: {out}"
        );
    }
}
