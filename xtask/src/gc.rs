//! Collecting the cache (`cargo xtask cache gc`, and after each kernel build): published
//! kernels, build directories, selftest programs, extracted sources and `mutants`' tree copies
//! that were not used for a while, then the least recently used ones until the cache fits its size bound. A tree's
//! edits replace each other: only the newest kernels of a build directory are kept.

use crate::cache;
use anyhow::{Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Published kernels kept per build directory of a tree (the current edit and the one before).
pub const KEEP_PER_TREE_BUILD: usize = 2;

/// How much the cache may hold.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub max_size: u64,
    pub max_age: Duration,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            max_size: 20 << 30,
            max_age: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// What kind of thing a cache entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Kernel,
    BuildDir,
    Selftests,
    Source,
    /// `mutants`' scratch copy of a tree.
    Scratch,
    /// A half-written entry of a process that is gone.
    Leftover,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Kernel => "kernel",
            Kind::BuildDir => "build directory",
            Kind::Selftests => "selftest programs",
            Kind::Source => "extracted source",
            Kind::Scratch => "mutants' tree copy",
            Kind::Leftover => "unfinished entry",
        }
    }
}

/// One removable entry of the cache.
#[derive(Debug, Clone)]
pub struct Entry {
    pub path: PathBuf,
    pub kind: Kind,
    /// The lock that guards it (`kernel-<key>`, `build-<name>`, `src-<hash>`).
    pub lock: Option<String>,
    pub used: SystemTime,
    pub size: u64,
}

/// The entries of the cache's collectable folders.
pub fn entries(cache: &Path) -> Vec<Entry> {
    let mut out = Vec::new();
    for (folder, kind, lock) in [
        ("kernels", Kind::Kernel, Some("kernel-")),
        ("build", Kind::BuildDir, Some("build-")),
        ("selftests", Kind::Selftests, None),
        ("src", Kind::Source, Some("src-")),
        ("mutants", Kind::Scratch, Some("mutants-")),
    ] {
        let Ok(dir) = fs::read_dir(cache.join(folder)) else {
            continue;
        };
        for e in dir.flatten() {
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if !path.is_dir() {
                continue;
            }
            if let Some(pid) = staging_pid(&name) {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    out.push(Entry {
                        size: du(&path),
                        used: SystemTime::UNIX_EPOCH,
                        path,
                        kind: Kind::Leftover,
                        lock: None,
                    });
                }
                continue;
            }
            out.push(Entry {
                used: last_use(&path),
                size: du(&path),
                path,
                kind,
                lock: lock.map(|l| format!("{l}{name}")),
            });
        }
    }
    out
}

/// `.name.tmp-1234` (see [`cache::staging_path`]) -> 1234.
fn staging_pid(name: &str) -> Option<u32> {
    name.strip_prefix('.')?.rsplit_once(".tmp-")?.1.parse().ok()
}

/// When an entry was last used: its `used` stamp ([`cache::touch`]), its build log, or itself.
fn last_use(path: &Path) -> SystemTime {
    ["used", "kernel-lab-build.log", "."]
        .iter()
        .find_map(|f| fs::metadata(path.join(f)).and_then(|m| m.modified()).ok())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Bytes on disk under `path` (blocks, not lengths; symlinks not followed).
pub fn du(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    let own = meta.blocks() * 512;
    if !meta.is_dir() {
        return own;
    }
    own + fs::read_dir(path)
        .map(|d| d.flatten().map(|e| du(&e.path())).sum())
        .unwrap_or(0)
}

/// Which entries to remove (pure): leftovers, everything unused for `max_age`, then the least
/// recently used until the rest fits in `max_size`. Indices into `entries`.
pub fn plan(entries: &[Entry], bounds: Bounds, now: SystemTime) -> Vec<usize> {
    let age = |e: &Entry| now.duration_since(e.used).unwrap_or_default();
    let mut remove: Vec<usize> = (0..entries.len())
        .filter(|&i| entries[i].kind == Kind::Leftover || age(&entries[i]) > bounds.max_age)
        .collect();
    let mut kept: Vec<usize> = (0..entries.len()).filter(|i| !remove.contains(i)).collect();
    kept.sort_by_key(|&i| entries[i].used);
    let mut total: u64 = kept.iter().map(|&i| entries[i].size).sum();
    for i in kept {
        if total <= bounds.max_size {
            break;
        }
        total -= entries[i].size;
        remove.push(i);
    }
    remove
}

/// What a collection removed and kept.
#[derive(Debug, Default)]
pub struct Collected {
    pub removed: Vec<(PathBuf, &'static str, u64)>,
    /// In use by another kernel-lab process right now: left for next time.
    pub busy: Vec<PathBuf>,
    pub kept_bytes: u64,
}

/// Removes what [`plan`] chooses, each under its lock (an entry another process holds is
/// skipped); with `dry_run`, only says what it would remove.
pub fn collect(cache: &Path, bounds: Bounds, dry_run: bool) -> Result<Collected> {
    let all = entries(cache);
    let chosen = plan(&all, bounds, SystemTime::now());
    let mut out = Collected {
        kept_bytes: (0..all.len())
            .filter(|i| !chosen.contains(i))
            .map(|i| all[i].size)
            .sum(),
        ..Default::default()
    };
    for i in chosen {
        let e = &all[i];
        if !dry_run && !remove(cache, e)? {
            out.busy.push(e.path.clone());
            out.kept_bytes += e.size;
            continue;
        }
        out.removed.push((e.path.clone(), e.kind.name(), e.size));
    }
    Ok(out)
}

/// Removes one entry under its lock; false when another process holds the lock.
fn remove(cache: &Path, e: &Entry) -> Result<bool> {
    let _lock = match &e.lock {
        Some(name) => match cache::try_lock(cache, name)? {
            Some(l) => Some(l),
            None => return Ok(false),
        },
        None => None,
    };
    fs::remove_dir_all(&e.path).with_context(|| format!("removing {}", e.path.display()))?;
    Ok(true)
}

/// After a tree's kernel was published: the kernels built in the same build directory beyond
/// the newest [`KEEP_PER_TREE_BUILD`] are removed, so that editing a tree does not grow the
/// cache. (Kernels of tarballs are left to the age and size bounds.)
pub fn prune_tree_kernels(cache: &Path, build_dir: &str) -> Result<Vec<PathBuf>> {
    let mut same: Vec<Entry> = entries(cache)
        .into_iter()
        .filter(|e| {
            e.kind == Kind::Kernel
                && fs::read_to_string(e.path.join("build-dir")).ok().as_deref() == Some(build_dir)
        })
        .collect();
    same.sort_by_key(|e| std::cmp::Reverse(e.used));
    let mut removed = Vec::new();
    for e in same.iter().skip(KEEP_PER_TREE_BUILD) {
        if remove(cache, e)? {
            removed.push(e.path.clone());
        }
    }
    Ok(removed)
}

/// `cargo xtask cache gc`: collects, then lists what it removed.
impl crate::CacheAction {
    /// `cargo xtask cache gc`.
    pub fn run(self) -> Result<crate::exit::Exit> {
        let crate::CacheAction::Gc {
            max_size,
            max_age_days,
            dry_run,
        } = self;
        let bounds = Bounds {
            max_size,
            max_age: Duration::from_secs(max_age_days * 24 * 3600),
        };
        command(bounds, dry_run).map(crate::exit::Exit::passed_if)
    }
}

pub fn command(bounds: Bounds, dry_run: bool) -> Result<bool> {
    let cache = cache::cache_dir()?;
    let c = collect(&cache, bounds, dry_run)?;
    for (path, kind, size) in &c.removed {
        println!("{:>9}  {kind:<17}  {}", human(*size), path.display());
    }
    println!("{}", summary(&c, dry_run));
    Ok(true)
}

/// A one-line account of a collection.
pub fn summary(c: &Collected, dry_run: bool) -> String {
    let freed: u64 = c.removed.iter().map(|r| r.2).sum();
    let verb = if dry_run { "would remove" } else { "removed" };
    let mut s = format!(
        "cache gc: {verb} {} entries ({}), {} kept",
        c.removed.len(),
        human(freed),
        human(c.kept_bytes)
    );
    if !c.busy.is_empty() {
        s.push_str(&format!(
            "; {} in use by another kernel-lab process, left for next time",
            c.busy.len()
        ));
    }
    s
}

pub fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.0} MiB", b as f64 / (1u64 << 20) as f64),
        b => format!("{} KiB", b >> 10),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, kind: Kind, days_ago: u64, size: u64, now: SystemTime) -> Entry {
        Entry {
            path: PathBuf::from(name),
            kind,
            lock: None,
            used: now - Duration::from_secs(days_ago * 24 * 3600),
            size,
        }
    }

    #[test]
    fn the_plan_removes_old_then_least_recently_used_until_it_fits() {
        let now = SystemTime::now();
        let es = vec![
            entry("old", Kind::Kernel, 40, 10, now),
            entry("new", Kind::Kernel, 0, 50, now),
            entry("mid", Kind::BuildDir, 5, 50, now),
            entry("recent", Kind::BuildDir, 1, 50, now),
            entry("dead", Kind::Leftover, 0, 1, now),
        ];
        let b = |max_size| Bounds {
            max_size,
            max_age: Duration::from_secs(30 * 24 * 3600),
        };
        let names = |v: Vec<usize>| -> Vec<&str> {
            v.iter().map(|&i| es[i].path.to_str().unwrap()).collect()
        };
        assert_eq!(names(plan(&es, b(1000), now)), ["old", "dead"]);
        assert_eq!(names(plan(&es, b(100), now)), ["old", "dead", "mid"]);
        assert_eq!(
            names(plan(&es, b(0), now)),
            ["old", "dead", "mid", "recent", "new"]
        );
    }

    #[test]
    fn staging_names_give_their_pid() {
        assert_eq!(staging_pid(".0123abcd.tmp-4242"), Some(4242));
        assert_eq!(staging_pid("0123abcd"), None);
    }

    #[test]
    fn collect_and_prune_remove_the_right_entries() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = tmp.path();
        let kernel = |key: &str, build: &str| {
            let d = cache.join("kernels").join(key);
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("vmlinux"), vec![1u8; 8192]).unwrap();
            fs::write(d.join("build-dir"), build).unwrap();
            cache::touch(&d);
            std::thread::sleep(Duration::from_millis(20));
            d
        };
        let (a, b, c) = (kernel("a", "t"), kernel("b", "t"), kernel("c", "t"));
        let other = kernel("d", "u");
        let removed = prune_tree_kernels(cache, "t").unwrap();
        assert_eq!(removed, std::slice::from_ref(&a));
        assert!(b.exists() && c.exists() && other.exists() && !a.exists());
        let dead = cache.join("build/.x.tmp-999999999");
        fs::create_dir_all(&dead).unwrap();
        let dry = collect(cache, Bounds::default(), true).unwrap();
        assert_eq!(dry.removed.len(), 1);
        assert!(dead.exists(), "a dry run removes nothing");
        let c2 = collect(cache, Bounds::default(), false).unwrap();
        assert_eq!(c2.removed[0].0, dead);
        assert!(!dead.exists());
        let all = collect(
            cache,
            Bounds {
                max_size: 0,
                max_age: Duration::from_secs(3600),
            },
            false,
        )
        .unwrap();
        assert_eq!(all.removed.len(), 3);
        assert!(!b.exists() && !c.exists() && !other.exists());
    }
}
