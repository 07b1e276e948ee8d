//! The cache directory, cache keys, cross-process locks and atomic publishing of cache entries.
//!
//! Everything kernel-lab keeps between runs lives in one directory: `$KERNEL_LAB_CACHE`, else
//! `$XDG_CACHE_HOME/kernel-lab`, else `~/.cache/kernel-lab`. Entries are built under a temporary
//! name and renamed into place when complete, under a lock, so an interrupted or concurrent
//! build is never taken for a finished one.

use anyhow::{Context, Result, bail};
use std::fs::{self, File};
use std::path::{Path, PathBuf};

pub fn cache_dir() -> Result<PathBuf> {
    let dir = if let Some(d) = std::env::var_os("KERNEL_LAB_CACHE") {
        PathBuf::from(d)
    } else if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        PathBuf::from(d).join("kernel-lab")
    } else if let Some(h) = std::env::var_os("HOME") {
        PathBuf::from(h).join(".cache/kernel-lab")
    } else {
        bail!("no cache directory: set KERNEL_LAB_CACHE or HOME");
    };
    fs::create_dir_all(&dir).with_context(|| {
        format!(
            "cannot create the cache directory {} (set KERNEL_LAB_CACHE to a writable place)",
            dir.display()
        )
    })?;
    Ok(dir)
}

/// The checkout this xtask was built from (the workspace root).
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Per-run scratch space and kept results live under target/kernel-lab.
pub fn target_dir() -> Result<PathBuf> {
    let dir = project_root().join("target/kernel-lab");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// FNV-1a, 64 bit: a stable, dependency-free hash for cache keys (not for security).
#[derive(Clone)]
pub struct KeyHasher(u64);

impl KeyHasher {
    pub fn new() -> Self {
        KeyHasher(0xcbf2_9ce4_8422_2325)
    }

    pub fn add(&mut self, bytes: &[u8]) -> &mut Self {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
        // Separate fields so that ("ab","c") and ("a","bc") differ.
        self.0 ^= 0xff;
        self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        self
    }

    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

/// An exclusive lock on a file in the cache's locks/ folder, released on drop.
pub struct Lock {
    _file: File,
}

/// Takes the named lock, telling the user when another kernel-lab process holds it.
pub fn lock(cache: &Path, name: &str) -> Result<Lock> {
    let dir = cache.join("locks");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{name}.lock"));
    let file = File::create(&path).with_context(|| format!("creating lock {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            eprintln!("  waiting for another kernel-lab process that is building {name} ...");
            file.lock()
                .with_context(|| format!("locking {}", path.display()))?;
        }
        Err(fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("locking {}", path.display()));
        }
    }
    Ok(Lock { _file: file })
}

/// Takes the named lock if no other process holds it (None if one does).
pub fn try_lock(cache: &Path, name: &str) -> Result<Option<Lock>> {
    let dir = cache.join("locks");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{name}.lock"));
    let file = File::create(&path).with_context(|| format!("creating lock {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(Lock { _file: file })),
        Err(fs::TryLockError::WouldBlock) => Ok(None),
        Err(fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

/// Records that a cache entry was used now (its `used` file's mtime), for gc's age and LRU order.
pub fn touch(entry: &Path) {
    let _ = fs::write(entry.join("used"), b"");
}

/// A fresh temporary path next to `dest`, for building an entry that [`publish`] renames.
pub fn staging_path(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Renames a finished entry into place (replacing a stale one).
pub fn publish(staging: &Path, dest: &Path) -> Result<()> {
    if dest.is_dir() {
        fs::remove_dir_all(dest).with_context(|| format!("removing stale {}", dest.display()))?;
    }
    fs::rename(staging, dest)
        .with_context(|| format!("moving {} to {}", staging.display(), dest.display()))
}

/// Writes a file whole or not at all: into [`staging_path`], then renamed over `dest`, so a
/// reader (another process, a browser) never sees it half written.
pub fn write_file(dest: &Path, contents: impl AsRef<[u8]>) -> Result<()> {
    let staging = staging_path(dest);
    fs::write(&staging, contents).with_context(|| format!("writing {}", staging.display()))?;
    fs::rename(&staging, dest).with_context(|| format!("writing {}", dest.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_hash_is_stable_and_field_separated() {
        assert_eq!(
            KeyHasher::new().add(b"abc").hex(),
            KeyHasher::new().add(b"abc").hex()
        );
        assert_ne!(
            KeyHasher::new().add(b"ab").add(b"c").hex(),
            KeyHasher::new().add(b"a").add(b"bc").hex()
        );
        // A fixed value: changing the function would silently drop every cached kernel.
        assert_eq!(
            KeyHasher::new().add(b"kernel-lab").hex(),
            "f68ab7ff3ffd5bd3"
        );
    }

    #[test]
    fn publish_replaces_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("entry");
        for round in 0..2 {
            let staging = staging_path(&dest);
            fs::create_dir(&staging).unwrap();
            fs::write(staging.join("f"), format!("{round}")).unwrap();
            publish(&staging, &dest).unwrap();
        }
        assert_eq!(fs::read_to_string(dest.join("f")).unwrap(), "1");
    }
}
