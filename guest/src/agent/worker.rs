//! The workload process (`/init worker <step-json> <cgroup-dir>`): leaves the agent's OOM
//! protection, joins its cgroup, does the step's work.

use crate::agent::steps::HOLD_ENV;
use crate::agent::sys;
use crate::{CGROOT, DATA, Result, TMPFS, write};
use guest::spec::{Step, StepKind};
use std::fs::File;
use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

/// The workload process: leaves the agent's OOM protection, joins its cgroup (`dir`, empty for
/// none), does the work.
pub fn worker(json: &str, dir: &str) -> Result<()> {
    let step: Step = serde_json::from_str(json).map_err(|e| format!("bad step: {e}"))?;
    write("/proc/self/oom_score_adj", "0")?;
    if !dir.is_empty() {
        write(&format!("{dir}/cgroup.procs"), "0")?;
    }
    if let Some(node) = step.workload().and_then(|w| w.numa_node) {
        sys::bind_memory_to_node(node)
            .map_err(|e| format!("binding memory to node {node}: {e}"))?;
    }
    // Named after its step (the kernel keeps 15 bytes): OOM reports and traces say which.
    sys::set_name(step.name());
    let size = step.size().map(|s| s.0).unwrap_or(0) as usize;
    work(&step, size)?;
    if std::env::var_os(HOLD_ENV).is_some() {
        // Done: wait, still holding the memory, until the agent has sampled the counters.
        sys::stop_self(); // the agent sends SIGCONT
    }
    if step.background() {
        println!("ready");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    Ok(())
}

pub fn work(step: &Step, size: usize) -> Result<()> {
    match &step.kind {
        StepKind::Anon {
            ms,
            pageout,
            compressible,
            ..
        } => {
            touch_anon(size, *pageout, *compressible)?;
            std::thread::sleep(Duration::from_millis(ms.unwrap_or(0)));
            Ok(())
        }
        StepKind::ReadFile { file, .. } => read_file(&format!("{DATA}/{file}"), size),
        StepKind::WriteFile { file, .. } => write_file(&format!("{DATA}/{file}"), size),
        StepKind::TmpfsFill { file, .. } => write_file(&format!("{TMPFS}/{file}"), size),
        StepKind::Reclaim {
            cgroup, swappiness, ..
        } => {
            let mut arg = size.to_string();
            if let Some(sw) = swappiness {
                arg.push_str(&format!(" swappiness={sw}"));
            }
            write(&format!("{CGROOT}/{cgroup}/memory.reclaim"), &arg)
        }
        StepKind::Exec { argv, .. } => {
            use std::os::unix::process::CommandExt;
            // Replaces the worker, keeping its cgroup, oom_score_adj and stdout/stderr pipes.
            let err = Command::new(&argv[0])
                .args(&argv[1..])
                .current_dir(DATA)
                .exec();
            Err(format!("running {}: {err}", argv[0]))
        }
        StepKind::Sleep { .. } | StepKind::Sysctl { .. } => Ok(()),
    }
}

/// Maps `size` bytes of private anonymous memory and fills every page with pseudo-random words,
/// so that neither the zero page nor zram's same-filled pages can stand in for it. With
/// `compressible`, only the first quarter of each page (the rest stays zero): about 4:1 under lz4.
pub fn touch_anon(size: usize, pageout: bool, compressible: bool) -> Result<()> {
    let words = sys::map_anon(size).map_err(|e| format!("mmap {size} bytes: {e}"))?;
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let per_page = if compressible { 128 } else { 512 };
    for page in words.chunks_mut(512) {
        for w in page.iter_mut().take(per_page) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *w = x;
        }
    }
    if pageout {
        sys::page_out(words).map_err(|e| format!("madvise(MADV_PAGEOUT): {e}"))?;
    }
    Ok(())
}

/// Writes `size` bytes of non-zero data with plain write(2): the pages stay dirty in the page
/// cache until writeback (or reclaim) writes them.
pub fn write_file(path: &str, size: usize) -> Result<()> {
    let mut f = File::create(path).map_err(|e| format!("creating {path}: {e}"))?;
    let mut buf = vec![0x5au8; 1 << 20];
    let mut done = 0;
    while done < size {
        let n = buf.len().min(size - done);
        buf[..8].copy_from_slice(&(done as u64).to_le_bytes());
        f.write_all(&buf[..n])
            .map_err(|e| format!("writing {path} at {done}: {e}"))?;
        done += n;
    }
    Ok(())
}

pub fn read_file(path: &str, size: usize) -> Result<()> {
    let mut f = File::open(path).map_err(|e| format!("opening {path}: {e}"))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0;
    while done < size {
        let want = buf.len().min(size - done);
        let n = f
            .read(&mut buf[..want])
            .map_err(|e| format!("reading {path}: {e}"))?;
        if n == 0 {
            return Err(format!("{path} ended after {done} of {size} bytes"));
        }
        done += n;
    }
    Ok(())
}
