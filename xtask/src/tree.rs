//! What a kernel source tree holds, by content: its tree id (git trees: HEAD plus every
//! uncommitted and untracked file; other trees: a fingerprint of every file's size and mtime),
//! and whether the developer has built it in place (then `make O=...` refuses it).

use crate::cache::{self, KeyHasher};
use crate::process::Cmd;
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A tree's identity: what its kernels' cache keys are made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeId {
    /// `git tree <id>` (the path plays no part: two clones with the same content share their
    /// kernels), or `tree <path> files <fingerprint>` for a tree without git.
    pub identity: String,
    /// The same for tools/testing/selftests only: the selftest programs are rebuilt when it
    /// changes, not on every edit of mm/.
    pub selftests: String,
}

static SEEN: Mutex<Option<HashMap<PathBuf, TreeId>>> = Mutex::new(None);

/// The tree's identity, computed once per process and tree (a `check` asks many times), until
/// [`forget`].
pub fn identify(tree: &Path) -> Result<TreeId> {
    if let Some(id) = SEEN
        .lock()
        .unwrap()
        .get_or_insert_with(HashMap::new)
        .get(tree)
    {
        return Ok(id.clone());
    }
    let tmp_root = cache::cache_dir()?.join("tmp");
    let id = match git_tree_id(tree, &tmp_root)? {
        Some(id) => id,
        None => {
            let print = fingerprint(tree)?;
            let identity = format!("tree {} files {print}", tree.display());
            TreeId {
                selftests: identity.clone(),
                identity,
            }
        }
    };
    SEEN.lock()
        .unwrap()
        .get_or_insert_with(HashMap::new)
        .insert(tree.to_path_buf(), id.clone());
    Ok(id)
}

/// Makes the next [`identify`] of `tree` look at it again (after this process changed it).
pub fn forget(tree: &Path) {
    if let Some(seen) = SEEN.lock().unwrap().as_mut() {
        seen.remove(tree);
    }
}

/// Runs git in `dir` with `env`; its trimmed stdout, or None when it fails.
fn git(dir: &Path, args: &[&str], env: &[(&str, &Path)]) -> Option<String> {
    let mut cmd = Cmd::new("git", "git").arg("-C").arg(dir).args(args);
    for (k, v) in env {
        cmd = cmd.env(k, v);
    }
    let out = cmd.run(None).ok()?;
    out.success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `git write-tree` of a temporary copy of the tree's index after `git add -A` (modified,
/// deleted and untracked files; ignored ones stay out, as build outputs should). New objects go
/// to a temporary object directory with the repository's as an alternate: the developer's
/// repository, index and object store are left exactly as they were. None: not a git tree.
fn git_tree_id(tree: &Path, tmp_root: &Path) -> Result<Option<TreeId>> {
    let Some(paths) = git(
        tree,
        &[
            "rev-parse",
            "--path-format=absolute",
            "--show-toplevel",
            "--git-path",
            "index",
            "--git-path",
            "objects",
        ],
        &[],
    ) else {
        return Ok(None);
    };
    let lines: Vec<&str> = paths.lines().collect();
    let [top, index, objects] = lines[..] else {
        return Ok(None);
    };
    let top = PathBuf::from(top);
    // The kernel tree may be a subdirectory of the repository: its id is that subtree's.
    let prefix = tree
        .strip_prefix(top.canonicalize().unwrap_or(top.clone()))
        .unwrap_or(Path::new(""))
        .to_string_lossy()
        .into_owned();
    fs::create_dir_all(tmp_root)?;
    let tmp = tempfile::Builder::new()
        .prefix("tree-id-")
        .tempdir_in(tmp_root)
        .context("creating a temporary git index")?;
    let tmp_index = tmp.path().join("index");
    if Path::new(index).is_file() {
        copy_index(Path::new(index), &tmp_index)?;
    }
    let tmp_objects = tmp.path().join("objects");
    fs::create_dir_all(&tmp_objects)?;
    let env = [
        ("GIT_INDEX_FILE", tmp_index.as_path()),
        ("GIT_OBJECT_DIRECTORY", tmp_objects.as_path()),
        ("GIT_ALTERNATE_OBJECT_DIRECTORIES", Path::new(objects)),
    ];
    let failed = || {
        anyhow::anyhow!(
            "cannot read the content of the git tree {} (git add -A / write-tree into a temporary index failed)",
            tree.display()
        )
    };
    // Only the kernel tree's own files are scanned, even inside a larger repository.
    git(tree, &["add", "-A", "--ignore-errors", "--", "."], &env).ok_or_else(failed)?;
    let root = git(&top, &["write-tree"], &env).ok_or_else(failed)?;
    let sub = |path: &str| -> Option<String> {
        let spec = match (prefix.as_str(), path) {
            ("", "") => return Some(root.clone()),
            ("", p) => format!("{root}:{p}"),
            (pre, "") => format!("{root}:{pre}"),
            (pre, p) => format!("{root}:{pre}/{p}"),
        };
        git(&top, &["rev-parse", &spec], &env)
    };
    let id = sub("").ok_or_else(failed)?;
    let selftests = sub("tools/testing/selftests").unwrap_or_else(|| id.clone());
    Ok(Some(TreeId {
        identity: format!("git tree {id}"),
        selftests: format!("git tree {selftests}"),
    }))
}

/// Copies a git index keeping its modification time. Git trusts an entry whose size and mtime
/// (whole seconds) match the file's unless the entry is not older than the index itself
/// ("racily clean"): with the copy's mtime set to now, a same-size edit made in the second of
/// the last commit would look unchanged and the tree id would miss it.
fn copy_index(index: &Path, to: &Path) -> Result<()> {
    fs::copy(index, to).context("copying the git index")?;
    let mtime = fs::metadata(index)?.modified()?;
    fs::File::options()
        .write(true)
        .open(to)?
        .set_modified(mtime)
        .context("keeping the git index's modification time")
}

/// A tree without git: every file's path, size and modification time (nanoseconds), hashed.
/// An edit changes it; so does a touch (make would rebuild then too).
fn fingerprint(tree: &Path) -> Result<String> {
    let mut h = KeyHasher::new();
    let mut stack = vec![tree.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut entries: Vec<fs::DirEntry> = fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| e.ok())
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let Ok(meta) = e.metadata() else { continue };
            let path = e.path();
            let rel = path.strip_prefix(tree).unwrap_or(&path).to_string_lossy();
            if meta.is_dir() {
                stack.push(path);
            } else {
                let mtime = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_nanos())
                    .unwrap_or_default();
                h.add(rel.as_bytes())
                    .add(&meta.len().to_le_bytes())
                    .add(&mtime.to_le_bytes());
            }
        }
    }
    Ok(h.hex())
}

/// What shows that a tree was configured or built in place (`make O=...` then stops with
/// "The source tree is not clean, please run 'make mrproper'").
pub fn in_place_build(tree: &Path) -> Option<&'static str> {
    [".config", "include/config"]
        .into_iter()
        .find(|p| tree.join(p).exists())
}

/// Makes `dest` a copy of the source files of `tree` (a git tree's tracked and untracked files
/// that are not ignored; any other tree's files but `.git`), so that make in a build directory
/// of `dest` recompiles only what changed: a new file keeps the source's modification time (the
/// next sync then sees it unchanged); a file whose size or time differs is compared, and left
/// alone when its content is the same; a file whose content differs is replaced and stamped
/// with the time of the copy. Never the source's time there: make decides by time alone, and
/// objects built from the old content (a mutant's, reverted in `dest` since) may be newer than
/// the source's time. Files that are gone from `tree` go from `dest`. Returns how many files
/// were copied.
pub fn sync(tree: &Path, dest: &Path) -> Result<usize> {
    let files = source_files(tree)?;
    let mut copied = 0;
    for rel in &files {
        let (from, to) = (tree.join(rel), dest.join(rel));
        let Ok(meta) = fs::symlink_metadata(&from) else {
            continue; // listed by git but deleted in the work tree
        };
        let changed = if meta.file_type().is_symlink() {
            sync_link(&from, &to)?
        } else {
            sync_file(&from, &meta, &to)?
        };
        copied += usize::from(changed);
    }
    let keep: std::collections::HashSet<&Path> = files.iter().map(PathBuf::as_path).collect();
    remove_others(dest, dest, &keep)?;
    Ok(copied)
}

/// Makes `to` the symlink `from` is; whether it had to.
fn sync_link(from: &Path, to: &Path) -> Result<bool> {
    let target = fs::read_link(from)?;
    if fs::read_link(to).ok().as_ref() == Some(&target) {
        return Ok(false);
    }
    let _ = fs::remove_file(to);
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent)?;
    }
    std::os::unix::fs::symlink(&target, to).with_context(|| format!("linking {}", to.display()))?;
    Ok(true)
}

/// Makes `to` a copy of the file `from` (see [`sync`] for its time); whether it had to.
fn sync_file(from: &Path, meta: &fs::Metadata, to: &Path) -> Result<bool> {
    let old = fs::symlink_metadata(to).ok().filter(|m| m.is_file());
    if let Some(m) = &old {
        let same_stamp = m.len() == meta.len() && m.modified().ok() == meta.modified().ok();
        if same_stamp || (m.len() == meta.len() && fs::read(from)? == fs::read(to)?) {
            return Ok(false);
        }
    }
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent)?;
    }
    let _ = fs::remove_file(to);
    fs::copy(from, to).with_context(|| format!("copying {}", from.display()))?;
    if let (None, Ok(mtime)) = (&old, meta.modified()) {
        fs::File::options()
            .write(true)
            .open(to)?
            .set_modified(mtime)?;
    }
    Ok(true)
}

/// The source files of a tree, relative to it.
fn source_files(tree: &Path) -> Result<Vec<PathBuf>> {
    if let Some(list) = git(
        tree,
        &[
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ],
        &[],
    ) {
        let mut files: Vec<PathBuf> = list
            .split('\0')
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .collect();
        files.dedup();
        return Ok(files);
    }
    let mut out = Vec::new();
    let mut stack = vec![tree.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir)?.flatten() {
            let path = e.path();
            if e.file_name() == ".git" {
                continue;
            }
            if e.file_type()?.is_dir() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(tree).unwrap_or(&path).to_path_buf());
            }
        }
    }
    Ok(out)
}

/// Removes every file under `dir` (within `root`) that is not in `keep`.
fn remove_others(root: &Path, dir: &Path, keep: &std::collections::HashSet<&Path>) -> Result<()> {
    for e in fs::read_dir(dir)?.flatten() {
        let path = e.path();
        let rel = path.strip_prefix(root).unwrap_or(&path);
        if e.file_type()?.is_dir() {
            remove_others(root, &path, keep)?;
        } else if !keep.contains(rel) {
            fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(dir: &Path, args: &[&str]) {
        Cmd::new("git", "git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@t")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@t")
            .checked()
            .unwrap_or_else(|e| panic!("git {args:?}: {e:#}"));
    }

    #[test]
    fn a_git_tree_id_covers_edits_and_untracked_files_not_the_path_or_ignored_files() {
        let tmp = tempfile::tempdir().unwrap();
        let scratch = tmp.path().join("scratch");
        let mk = |name: &str| {
            let t = tmp.path().join(name);
            fs::create_dir_all(t.join("mm")).unwrap();
            fs::write(t.join("mm/vmscan.c"), "int x;\n").unwrap();
            fs::write(t.join(".gitignore"), "*.o\n").unwrap();
            run(&t, &["init", "-q"]);
            run(&t, &["add", "-A"]);
            run(&t, &["commit", "-qm", "c"]);
            t
        };
        let (a, b) = (mk("a"), mk("b"));
        let id = |t: &Path| git_tree_id(t, &scratch).unwrap().unwrap();
        let clean = id(&a);
        assert_eq!(clean, id(&b), "same content, other path: same id");
        assert!(clean.identity.starts_with("git tree "), "{clean:?}");
        fs::write(a.join("mm/vmscan.o"), "obj").unwrap();
        assert_eq!(id(&a), clean, "ignored files do not count");
        fs::write(a.join("mm/vmscan.c"), "int y;\n").unwrap();
        let edited = id(&a);
        assert_ne!(edited, clean, "an uncommitted edit counts");
        fs::write(a.join("mm/new.c"), "int z;\n").unwrap();
        let untracked = id(&a);
        assert_ne!(untracked, edited, "an untracked file counts");
        assert_eq!(untracked.selftests, id(&a).selftests);
        // The repository itself is untouched: its index still shows the edit as unstaged.
        let unstaged = git(&a, &["diff", "--name-only"], &[]).unwrap();
        assert_eq!(unstaged, "mm/vmscan.c");
        assert_eq!(
            git(&a, &["diff", "--cached", "--name-only"], &[]).unwrap(),
            ""
        );
        let untracked = git(&a, &["ls-files", "--others", "--exclude-standard"], &[]).unwrap();
        assert_eq!(untracked, "mm/new.c");
        assert!(git_tree_id(&scratch, &scratch).unwrap().is_none());
    }

    /// Git trusts an index entry whose size and mtime match the file unless the entry is not
    /// older than the index ("racily clean"). A same-size edit in the second of the last
    /// commit is then seen only if the temporary index keeps the index's mtime.
    #[test]
    fn a_same_size_edit_in_the_second_of_the_commit_changes_the_tree_id() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path().join("t");
        fs::create_dir_all(t.join("mm")).unwrap();
        let file = t.join("mm/vmscan.c");
        let then = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000);
        let write = |text: &str| {
            fs::write(&file, text).unwrap();
            fs::File::options()
                .write(true)
                .open(&file)
                .unwrap()
                .set_modified(then)
                .unwrap();
        };
        write("int x = 1;\n");
        run(&t, &["init", "-q"]);
        run(&t, &["add", "-A"]);
        run(&t, &["commit", "-qm", "c"]);
        let scratch = tmp.path().join("scratch");
        let clean = git_tree_id(&t, &scratch).unwrap().unwrap();
        // The edit and the index's last write fall in the same second.
        write("int x = 0;\n");
        let index = t.join(".git/index");
        fs::File::options()
            .write(true)
            .open(&index)
            .unwrap()
            .set_modified(then)
            .unwrap();
        let edited = git_tree_id(&t, &scratch).unwrap().unwrap();
        assert_ne!(
            edited, clean,
            "a same-size edit with the commit's mtime counts"
        );
    }

    #[test]
    fn sync_copies_what_changed_and_removes_what_is_gone() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, dest) = (tmp.path().join("src"), tmp.path().join("dest"));
        fs::create_dir_all(src.join("mm")).unwrap();
        fs::write(src.join("mm/vmscan.c"), "a").unwrap();
        fs::write(src.join("Makefile"), "m").unwrap();
        std::os::unix::fs::symlink("Makefile", src.join("link")).unwrap();
        assert_eq!(sync(&src, &dest).unwrap(), 3);
        assert_eq!(sync(&src, &dest).unwrap(), 0, "nothing changed");
        fs::write(src.join("mm/vmscan.c"), "ab").unwrap();
        fs::remove_file(src.join("Makefile")).unwrap();
        fs::write(src.join("Makefile"), "m").unwrap();
        fs::write(dest.join("mm/vmscan.o"), "an object in the copy").unwrap();
        // The Makefile has a new time but the same content: left alone.
        assert_eq!(sync(&src, &dest).unwrap(), 1);
        assert_eq!(fs::read_to_string(dest.join("mm/vmscan.c")).unwrap(), "ab");
        assert!(!dest.join("mm/vmscan.o").exists());
        assert_eq!(
            fs::read_link(dest.join("link")).unwrap(),
            Path::new("Makefile")
        );
    }

    /// The mutants' case: a mutant edited the copy and was built, then reverted in the copy
    /// without a build. The next sync must leave make a reason to rebuild: never a time older
    /// than the copy's own.
    #[test]
    fn sync_never_moves_a_changed_files_time_back() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, dest) = (tmp.path().join("src"), tmp.path().join("dest"));
        fs::create_dir_all(&src).unwrap();
        let at = |secs| std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
        let stamp = |p: &Path, secs| {
            let f = fs::File::options().write(true).open(p).unwrap();
            f.set_modified(at(secs)).unwrap();
        };
        let mtime = |p: &Path| fs::metadata(p).unwrap().modified().unwrap();
        let (s, d) = (src.join("vmscan.c"), dest.join("vmscan.c"));
        fs::write(&s, "clean").unwrap();
        stamp(&s, 1_000);
        assert_eq!(sync(&src, &dest).unwrap(), 1);
        assert_eq!(mtime(&d), at(1_000), "a new file keeps the source's time");
        // Reverted in the copy (same content, a later time): left as it is.
        stamp(&d, 2_000);
        assert_eq!(sync(&src, &dest).unwrap(), 0);
        assert_eq!(mtime(&d), at(2_000));
        // Still a mutant's content in the copy: replaced, and newer than the mutant.
        fs::write(&d, "mutant").unwrap();
        stamp(&d, 3_000);
        assert_eq!(sync(&src, &dest).unwrap(), 1);
        assert_eq!(fs::read_to_string(&d).unwrap(), "clean");
        assert!(mtime(&d) > at(3_000), "{:?}", mtime(&d));
        assert_eq!(sync(&src, &dest).unwrap(), 0, "and unchanged from then on");
    }

    #[test]
    fn a_plain_tree_fingerprint_sees_edits() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp.path().join("mm")).unwrap();
        fs::write(tmp.path().join("mm/vmscan.c"), "a").unwrap();
        let before = fingerprint(tmp.path()).unwrap();
        assert_eq!(before, fingerprint(tmp.path()).unwrap());
        fs::write(tmp.path().join("mm/vmscan.c"), "ab").unwrap();
        assert_ne!(before, fingerprint(tmp.path()).unwrap());
    }
}
