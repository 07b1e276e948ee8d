//! `--shell`: a busybox shell on the console instead of the steps, and `lab-step NAME` in it.

use crate::agent::{
    cgroups::cgroup_dir,
    sample::sample,
    steps::{exit_of, worker_dir},
};
use crate::{CGROOT, PLAN, Result};
use guest::spec::LabSpec;
use std::collections::BTreeMap;
use std::fs::{self};
use std::process::Command;

/// `--shell`: an interactive busybox shell on the console, the lab set up but no step run.
pub fn shell(spec: &LabSpec) -> Result<()> {
    let steps: Vec<&str> = spec.steps.iter().map(|s| s.name()).collect();
    let groups: Vec<String> = spec
        .cgroups
        .iter()
        .map(|c| cgroup_dir(spec, &c.name))
        .collect();
    println!(
        "\nkernel-lab shell: lab {} is set up; no step has run.",
        spec.id
    );
    println!(
        "  cgroups: {}",
        if groups.is_empty() {
            "(none)".into()
        } else {
            groups.join(" ")
        }
    );
    println!(
        "  run a step:   lab-step NAME   (steps: {})",
        steps.join(", ")
    );
    println!(
        "  look around:  cat /proc/vmstat, cat {}/memory.stat, free",
        groups.first().map(String::as_str).unwrap_or(CGROOT)
    );
    println!("  exit (or Ctrl-D) powers the VM off.\n");
    let status = Command::new("/bin/sh")
        .env_clear()
        .env("PATH", "/bin")
        .env("HOME", "/")
        .env("PS1", format!("[{}] # ", spec.id))
        .status()
        .map_err(|e| format!("starting /bin/sh: {e}"))?;
    println!("kernel-lab shell: {status}; powering off");
    Ok(())
}

/// Runs one step of the plan in the foreground and prints what it changed.
pub fn lab_step(name: &str) -> Result<()> {
    let plan = fs::read_to_string(PLAN).map_err(|e| format!("reading {PLAN}: {e}"))?;
    let spec: LabSpec = serde_json::from_str(&plan).map_err(|e| format!("parsing {PLAN}: {e}"))?;
    let Some(step) = spec.steps.iter().find(|s| s.name() == name) else {
        let names: Vec<&str> = spec.steps.iter().map(|s| s.name()).collect();
        return Err(format!("no step {name:?} (steps: {})", names.join(", ")));
    };
    let before = sample(&spec, &BTreeMap::new());
    let json = serde_json::to_string(step).map_err(|e| e.to_string())?;
    let status = Command::new("/proc/self/exe")
        .arg("worker")
        .arg(json)
        .arg(worker_dir(&spec, step))
        .status()
        .map_err(|e| format!("starting the workload: {e}"))?;
    let after = sample(&spec, &BTreeMap::new());
    let exit = exit_of(status)?;
    println!("step {name}: {exit}");
    let interesting = |k: &str| {
        k.contains("pgscan")
            || k.contains("pgsteal")
            || k.contains("oom")
            || k.ends_with(".max")
            || k.ends_with(".high")
            || k.contains("pswp")
            || k.ends_with("memory.current")
    };
    for (k, a) in &after {
        let b = before.get(k).copied().unwrap_or(0);
        if *a != b && interesting(k) && !k.starts_with("zoneinfo") {
            println!("  {k}: {b} -> {a} ({:+})", i128::from(*a) - i128::from(b));
        }
    }
    Ok(())
}
