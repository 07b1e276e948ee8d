//! The ext4 data disk: files of the sizes the lab's read steps need, made with `mkfs.ext4 -d`
//! (no root, no loop mount), cached by content and attached to QEMU with snapshot=on.

use crate::cache::{self, KeyHasher};
use crate::process::{Cmd, Sink};
use anyhow::{Context, Result};
use guest::spec::{LabSpec, StepKind, SwapKind};
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::PathBuf;

/// What a lab needs of the data disk.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DiskPlan {
    /// Files to read: name -> the largest size any step reads of it.
    pub files: BTreeMap<String, u64>,
    /// Room for the files the write-file steps write: three times their size, because ext4
    /// starts writing back on its own (WB_REASON_FS_FREE_SPACE) once its free space is less
    /// than twice its delayed allocations (ext4_nonda_switch()), which would make writeback
    /// depend on the disk's size rather than on the dirty limits and on reclaim.
    pub free: u64,
}

pub fn plan(spec: &LabSpec) -> DiskPlan {
    let mut p = DiskPlan::default();
    for step in &spec.steps {
        let size = step.size().map(|s| s.0).unwrap_or(0);
        match &step.kind {
            StepKind::ReadFile { file, .. } => {
                let e = p.files.entry(file.clone()).or_insert(0);
                *e = (*e).max(size);
            }
            StepKind::WriteFile { .. } => p.free += 3 * size,
            StepKind::Exec { .. } => p.free += size,
            _ => {}
        }
    }
    p
}

/// The swap disk of a lab with `[vm] swap = { kind = "disk" }`: a sparse file of the swap's
/// size in the run's scratch directory (it costs no space until the guest swaps, and goes
/// with the run).
pub fn swap_disk(spec: &LabSpec, scratch: &std::path::Path) -> Result<Option<PathBuf>> {
    let Some(swap) = spec.vm.swap.as_ref().filter(|s| s.kind == SwapKind::Disk) else {
        return Ok(None);
    };
    let path = scratch.join("swap.img");
    fs::File::create(&path)
        .and_then(|f| f.set_len(swap.size.0))
        .with_context(|| format!("making the swap disk {}", path.display()))?;
    Ok(Some(path))
}

/// Returns the cached image for `plan`, making it if needed; `None` when no disk is needed.
pub fn ensure(plan: &DiskPlan) -> Result<Option<PathBuf>> {
    if plan.files.is_empty() && plan.free == 0 {
        return Ok(None);
    }
    let files = &plan.files;
    let mut h = KeyHasher::new();
    h.add(b"data disk 1").add(&plan.free.to_le_bytes());
    for (name, size) in files {
        h.add(name.as_bytes()).add(&size.to_le_bytes());
    }
    let cache = cache::cache_dir()?;
    let dir = cache.join("disks");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let image = dir.join(format!("data-{}.img", h.hex()));
    if image.is_file() {
        return Ok(Some(image));
    }
    let _lock = cache::lock(&cache, &format!("disk-{}", h.hex()))?;
    if image.is_file() {
        return Ok(Some(image));
    }
    let staging_dir = tempfile::Builder::new().prefix("data-").tempdir_in(&dir)?;
    let mib: u64 = files.values().sum::<u64>() >> 20;
    crate::progress::status(&format!(
        "disk: making the ext4 data disk with {mib} MiB of files (once; cached) ..."
    ));
    let mut total = 0;
    for (name, size) in files {
        write_pattern(&staging_dir.path().join(name), *size)?;
        total += size;
    }
    // Room for the written files, metadata and the journal.
    let total = total + plan.free;
    let image_size = (total + total / 8 + (24 << 20)).next_multiple_of(1 << 20);
    let staging = cache::staging_path(&image);
    fs::File::create(&staging)?.set_len(image_size)?;
    let mkfs = Cmd::new("mkfs.ext4", "mkfs.ext4 (install e2fsprogs)")
        .args(["-q", "-F", "-L", "data", "-d"])
        .arg(staging_dir.path())
        .arg(&staging)
        .stderr(Sink::Merge)
        .checked();
    if let Err(e) = mkfs {
        let _ = fs::remove_file(&staging);
        return Err(e);
    }
    fs::rename(&staging, &image)?;
    Ok(Some(image))
}

/// Non-zero, block-varying content, so the file has real blocks (mkfs leaves zeros as holes).
fn write_pattern(path: &std::path::Path, size: u64) -> Result<()> {
    let mut f = std::io::BufWriter::new(fs::File::create(path)?);
    let mut block = [0u8; 4096];
    for i in 0..size.div_ceil(4096) {
        block.fill((i as u8) | 1);
        block[..8].copy_from_slice(&i.to_le_bytes());
        let n = (size - i * 4096).min(4096) as usize;
        f.write_all(&block[..n])?;
    }
    f.flush()?;
    Ok(())
}
