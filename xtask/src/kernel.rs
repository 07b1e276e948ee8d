//! The guest kernel: find the source, merge config fragments, build once, cache by hash.
//!
//! Key = hash(source identity, every fragment's text as it applies to this source's version,
//! build recipe version). A warm lookup only stats the source, reads its Makefile's version and
//! the fragments: it never runs make. A cold build extracts a
//! tarball once, runs `make tinyconfig`, merges the fragments, runs `olddefconfig`, checks that
//! every requested option survived, builds vmlinux (booted through its PVH entry; a KASAN
//! kernel's bzImage, [`BootImage`]) with a progress line, and publishes it into the cache with
//! a rename.

use crate::cache::{self, KeyHasher};
use crate::process::{Cmd, Ended, Sink};
use crate::progress;
use anyhow::{Context, Result, bail};
use guest::spec::{KernelReq, major_minor};
use std::fs;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Bump when the way kernels are built changes, so old cache entries are not reused.
const RECIPE: &str = "kernel-lab recipe 1: tinyconfig + fragments, vmlinux";
pub const DEFAULT_TARBALL: &str = "/usr/src/linux-source-6.12.tar.xz";
pub const SOURCE_ENV: &str = "KERNEL_LAB_SRC";

/// The image kernel-lab boots from a build: vmlinux through its PVH entry (no decompression,
/// the fastest boot under TCG), or a KASAN kernel's bzImage. PVH's entry runs C code
/// (xen_prepare_pvh() calls xen_cpuid_base(), whose memcmp() is instrumented) before
/// x86_64_start_kernel() calls kasan_early_init(), so a KASAN vmlinux reads a shadow that is not
/// mapped yet: on 6.12.117 the guest triple-faulted before its first message, and QEMU exited
/// in 0.1 s. The bzImage's decompressor enters through startup_64, which maps it first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootImage {
    Vmlinux,
    BzImage,
}

impl BootImage {
    /// The image a kernel of this .config boots from.
    pub fn for_config(config: &str) -> BootImage {
        match config_value(config, "CONFIG_KASAN").as_deref() {
            Some("y") => BootImage::BzImage,
            _ => BootImage::Vmlinux,
        }
    }

    /// make's target, and the image's name in a cache entry.
    pub fn target(self) -> &'static str {
        match self {
            BootImage::Vmlinux => "vmlinux",
            BootImage::BzImage => "bzImage",
        }
    }

    /// Where make leaves it in build directory `build`.
    pub fn built(self, build: &Path) -> PathBuf {
        match self {
            BootImage::Vmlinux => build.join("vmlinux"),
            BootImage::BzImage => build.join("arch/x86/boot/bzImage"),
        }
    }

    /// The image of the kernel configured in build directory `dir`, by its .config.
    fn of_build(dir: &Path) -> BootImage {
        BootImage::for_config(&fs::read_to_string(dir.join(".config")).unwrap_or_default())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Tarball,
    Tree,
}

#[derive(Debug, Clone)]
pub struct Source {
    pub path: PathBuf,
    pub kind: SourceKind,
    /// What makes this source this source: path, size and mtime (tarball), or its content
    /// (a tree: [`crate::tree::identify`]).
    pub identity: String,
    /// The same for the selftests' sources (a tree's tools/testing/selftests; a tarball's is
    /// the tarball's).
    pub selftests_identity: String,
}

/// `--kernel-src 6.1` (any `X.Y` that is not a path here): Debian's linux-source-X.Y tarball
/// and its package.
pub fn debian_source(flag: &Path) -> Option<(PathBuf, String)> {
    let s = flag.to_str()?;
    let (a, b) = s.split_once('.')?;
    let digits = |t: &str| !t.is_empty() && t.chars().all(|c| c.is_ascii_digit());
    (digits(a) && digits(b) && !flag.exists()).then(|| {
        (
            PathBuf::from(format!("/usr/src/linux-source-{s}.tar.xz")),
            format!("linux-source-{s}"),
        )
    })
}

/// The Debian tarball and package behind a `--kernel-src` value: `X.Y`, or the default (no
/// flag and no `$KERNEL_LAB_SRC`: 6.12); None for a path.
pub fn debian_package(flag: Option<&Path>) -> Option<(PathBuf, String)> {
    match flag {
        Some(f) => debian_source(f),
        None if std::env::var_os(SOURCE_ENV).is_some() => None,
        None => Some((PathBuf::from(DEFAULT_TARBALL), "linux-source-6.12".into())),
    }
}

/// Sources located, and their versions, so far in this process: a run asks for its source
/// several times (whether the lab applies, set-up, its kernel), a check once per item; the
/// answer cannot change meanwhile (a tree's identity is taken once per process too).
static LOCATED: Mutex<Vec<(String, Source)>> = Mutex::new(Vec::new());
static VERSIONS: Mutex<Vec<(String, Option<String>)>> = Mutex::new(Vec::new());

fn remembered<T: Clone>(memo: &Mutex<Vec<(String, T)>>, key: &str) -> Option<T> {
    let memo = memo.lock().unwrap_or_else(|e| e.into_inner());
    memo.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
}

fn remember<T>(memo: &Mutex<Vec<(String, T)>>, key: String, value: T) {
    memo.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((key, value));
}

/// The flag (a tree, a tarball, or `X.Y` for Debian's linux-source-X.Y), else
/// `$KERNEL_LAB_SRC`, else Debian's linux-source-6.12 tarball; a tarball is located once per
/// process (a source that is missing is looked for again: set-up may install it).
pub fn locate(flag: Option<&Path>) -> Result<Source> {
    let key = format!("{flag:?} {:?}", std::env::var_os(SOURCE_ENV));
    if let Some(s) = remembered(&LOCATED, &key) {
        return Ok(s);
    }
    let source = locate_now(flag)?;
    // A tree's identity is its content, which this process may change (mutants patches its
    // scratch copy): tree::identify remembers it until tree::forget, so only tarballs here.
    if source.kind == SourceKind::Tarball {
        remember(&LOCATED, key, source.clone());
    }
    Ok(source)
}

fn locate_now(flag: Option<&Path>) -> Result<Source> {
    let debian = debian_package(flag);
    let (path, origin) = match (flag, std::env::var_os(SOURCE_ENV), &debian) {
        (_, _, Some((tarball, _))) => (tarball.clone(), "a Debian package"),
        (Some(p), _, None) => (p.to_path_buf(), "--kernel-src"),
        (None, Some(p), None) => (PathBuf::from(p), SOURCE_ENV),
        (None, None, None) => (PathBuf::from(DEFAULT_TARBALL), "the default"),
    };
    let meta = match fs::metadata(&path) {
        Ok(m) => m,
        Err(_) if debian.is_some() => bail!(
            "no kernel source: {} is missing\n  install it: apt-get install --no-install-recommends {}\n  or point at any Linux tree or tarball: --kernel-src PATH (or {SOURCE_ENV}=PATH)",
            path.display(),
            debian.as_ref().map(|d| d.1.as_str()).unwrap_or_default()
        ),
        Err(e) => crate::exit::bad_input!(
            "kernel source {} (from {origin}) cannot be read: {e}",
            path.display()
        ),
    };
    let path = path
        .canonicalize()
        .with_context(|| format!("resolving {}", path.display()))?;
    if meta.is_dir() {
        if !path.join("Makefile").is_file() || !path.join("mm/vmscan.c").is_file() {
            crate::exit::bad_input!(
                "{} (from {origin}) is not a Linux source tree (no Makefile or mm/vmscan.c)",
                path.display()
            );
        }
        let id = crate::tree::identify(&path)?;
        Ok(Source {
            identity: id.identity,
            selftests_identity: id.selftests,
            path,
            kind: SourceKind::Tree,
        })
    } else {
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
        let identity = format!("tarball {} {} {:?}", path.display(), meta.len(), mtime);
        Ok(Source {
            path,
            kind: SourceKind::Tarball,
            selftests_identity: identity.clone(),
            identity,
        })
    }
}

/// `6.12.117` from a tree's Makefile.
pub fn makefile_version(tree: &Path) -> Option<String> {
    let text = fs::read_to_string(tree.join("Makefile")).ok()?;
    let field = |name: &str| {
        text.lines().find_map(|l| {
            l.strip_prefix(name)?
                .trim_start()
                .strip_prefix('=')
                .map(|v| v.trim().to_string())
        })
    };
    Some(format!(
        "{}.{}.{}{}",
        field("VERSION")?,
        field("PATCHLEVEL")?,
        field("SUBLEVEL")?,
        field("EXTRAVERSION").unwrap_or_default()
    ))
}

/// A config fragment: its file name and text.
#[derive(Debug, Clone)]
pub struct Fragment {
    pub name: String,
    pub text: String,
}

/// kernel-configs/base.config plus the named extra fragments (e.g. a lab's `memcg-v1`).
pub fn fragments(extra: &[String]) -> Result<Vec<Fragment>> {
    fragments_in(&cache::project_root().join("kernel-configs"), extra)
}

fn fragments_in(dir: &Path, extra: &[String]) -> Result<Vec<Fragment>> {
    let mut out = Vec::new();
    for name in std::iter::once("base").chain(extra.iter().map(String::as_str)) {
        let path = dir.join(format!("{name}.config"));
        let text = fs::read_to_string(&path)
            .with_context(|| format!("reading kernel config fragment {}", path.display()))?;
        out.push(Fragment {
            name: name.to_string(),
            text,
        });
    }
    Ok(out)
}

/// The line that makes a fragment part of every kernel kernel-lab builds (when it costs little
/// at run time: one kernel then serves every lab, instead of one build per fragment set).
pub const IN_EVERY_KERNEL: &str = "# kernel-lab: in every kernel";

/// What kernel-lab builds for a lab that needs `extra`: base, every fragment marked
/// [`IN_EVERY_KERNEL`] (by name), then `extra`. What the lab *needs* stays [`fragments`]: a
/// kernel built elsewhere is checked against that only.
pub fn build_fragments(extra: &[String]) -> Result<Vec<Fragment>> {
    build_fragments_in(&cache::project_root().join("kernel-configs"), extra)
}

fn build_fragments_in(dir: &Path, extra: &[String]) -> Result<Vec<Fragment>> {
    let mut folded: Vec<String> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.strip_suffix(".config")?.to_string();
            let text = fs::read_to_string(e.path()).ok()?;
            (name != "base" && text.lines().any(|l| l.trim() == IN_EVERY_KERNEL)).then_some(name)
        })
        .collect();
    folded.sort();
    for e in extra {
        if !folded.contains(e) {
            folded.push(e.clone());
        }
    }
    fragments_in(dir, &folded)
}

/// The fragments of kernel-configs/ that make a kernel of their own when asked for (neither
/// base nor [`IN_EVERY_KERNEL`]), by name.
pub fn optional_fragments() -> Result<Vec<String>> {
    let dir = cache::project_root().join("kernel-configs");
    let every = build_fragments_in(&dir, &[])?;
    let mut names: Vec<String> = fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .filter_map(|e| Some(e.file_name().to_str()?.strip_suffix(".config")?.to_string()))
        .filter(|n| !every.iter().any(|f| &f.name == n))
        .collect();
    names.sort();
    Ok(names)
}

/// A requested option: `CONFIG_X=value`, or `CONFIG_X` unset (`# CONFIG_X is not set`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requested {
    pub name: String,
    pub value: Option<String>,
    /// Marked `# build choice`: how kernel-lab builds its kernels (compression, unwinder, fewer
    /// objects), not something the labs need; a prebuilt kernel may differ.
    pub choice: bool,
}

/// The options a fragment asks for; comments and blank lines are ignored. A line may end with
/// `# since 6.12` or `# before 6.11`: it then applies only to kernels of those versions
/// (`version` is the source's `6.12.117`; `None` keeps every line). A line may also end with
/// `# build choice` (see [`Requested::choice`]).
pub fn requested_options(fragment: &str, version: Option<&str>) -> Vec<Requested> {
    fragment
        .lines()
        .filter_map(|line| {
            let (line, condition, choice) = split_marks(line.trim());
            if let (Some(v), Some(c)) = (version, condition)
                && !c.holds(v)
            {
                return None;
            }
            if let Some(rest) = line.strip_prefix("# ") {
                let name = rest.strip_suffix(" is not set")?;
                return name.starts_with("CONFIG_").then(|| Requested {
                    name: name.into(),
                    value: None,
                    choice,
                });
            }
            let (name, value) = line.split_once('=')?;
            name.starts_with("CONFIG_").then(|| Requested {
                name: name.into(),
                value: Some(value.trim().into()),
                choice,
            })
        })
        .collect()
}

/// A fragment line without its marks: its version condition, and whether it is a build choice.
fn split_marks(line: &str) -> (&str, Option<KernelReq>, bool) {
    let (line, choice) = match line.strip_suffix("# build choice") {
        Some(rest) if rest.ends_with(' ') => (rest.trim_end(), true),
        _ => (line, false),
    };
    let (line, condition) = split_condition(line);
    (line, condition, choice)
}

/// `CONFIG_X=y  # since 6.12` -> (`CONFIG_X=y`, `>= 6.12`); `# before 6.12` is `< 6.12`. The
/// condition is the labs' own [`KernelReq`].
fn split_condition(line: &str) -> (&str, Option<KernelReq>) {
    for (word, at_least) in [(" # since ", true), (" # before ", false)] {
        if let Some(i) = line.rfind(word)
            && let Some((major, minor)) = major_minor(&line[i + word.len()..])
        {
            let req = KernelReq {
                at_least,
                major,
                minor,
            };
            return (line[..i].trim_end(), Some(req));
        }
    }
    (line, None)
}

/// Appends the fragments to a base .config, replacing every line about an option they set
/// (what scripts/kconfig/merge_config.sh does).
pub fn merge_config(base: &str, fragments: &[Fragment], version: Option<&str>) -> String {
    let requested: Vec<Requested> = fragments
        .iter()
        .flat_map(|f| requested_options(&f.text, version))
        .collect();
    let mentions = |line: &str, name: &str| {
        line.strip_prefix(name).is_some_and(|r| r.starts_with('='))
            || line.strip_prefix("# ").and_then(|r| r.strip_prefix(name)) == Some(" is not set")
    };
    let mut out: String = base
        .lines()
        .filter(|l| !requested.iter().any(|r| mentions(l, &r.name)))
        .map(|l| format!("{l}\n"))
        .collect();
    for r in &requested {
        match &r.value {
            Some(v) => out.push_str(&format!("{}={v}\n", r.name)),
            None => out.push_str(&format!("# {} is not set\n", r.name)),
        }
    }
    out
}

/// The requested options that the final .config does not honour, as `CONFIG_X=y (got: ...)`.
pub fn lost_options(requested: &[Requested], config: &str) -> Vec<String> {
    let current = |name: &str| {
        config.lines().find_map(|l| {
            l.strip_prefix(name)
                .and_then(|r| r.strip_prefix('='))
                .map(str::to_string)
        })
    };
    requested
        .iter()
        .filter_map(|r| {
            let got = current(&r.name);
            let ok = match (&r.value, &got) {
                (Some(want), Some(got)) => want == got,
                (Some(_), None) => false,
                (None, None) => true,
                (None, Some(got)) => got == "n",
            };
            (!ok).then(|| {
                let want = r
                    .value
                    .as_deref()
                    .map(|v| format!("={v}"))
                    .unwrap_or_else(|| " unset".into());
                let got = got
                    .map(|g| format!("={g}"))
                    .unwrap_or_else(|| " unset".into());
                format!("{}{want} (got{got})", r.name)
            })
        })
        .collect()
}

/// The kernel under test cannot be tested: it does not build, it lacks a config option the labs
/// need, or a program built from its tree (the selftests) does not compile. `lab` and `check`
/// exit 125 for it, which `git bisect run` reads as "skip this commit"; keep it as the error's
/// source (add context with `.context()`, never re-format it into a new error) so that
/// `main` can find it with `downcast_ref`.
#[derive(Debug)]
pub struct Untestable(pub String);
crate::exit::message_error!(Untestable);

/// A built kernel in the cache.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub image: PathBuf,
    /// Its CONFIG_HZ (from the cached .config), for `lpj=`.
    pub hz: Option<u64>,
    pub key: String,
    /// True when this call built it (false: taken from the cache).
    pub built: bool,
}

/// The cache key of a kernel: the recipe, the source's identity and the fragments as they apply
/// to `version` ([`effective_text`]); a fragment that asks for nothing on this version (e.g.
/// `CONFIG_MEMCG_V1` before 6.11, where v1 is always built) does not make a separate kernel.
pub fn cache_key(source: &Source, fragments: &[Fragment], version: Option<&str>) -> String {
    let mut h = KeyHasher::new();
    h.add(RECIPE.as_bytes()).add(source.identity.as_bytes());
    for f in applying(fragments, version) {
        h.add(f.name.as_bytes())
            .add(effective_text(&f.text, version).as_bytes());
    }
    h.hex()
}

/// The fragments that make a kernel what it is on `version`: `base`, and every other one that
/// asks for something the ones before it do not (on this version). A fragment whose lines are
/// all in base already (or absent before its version) makes no separate kernel.
fn applying<'a>(fragments: &'a [Fragment], version: Option<&str>) -> Vec<&'a Fragment> {
    let mut kept: Vec<&Fragment> = Vec::new();
    let mut asked: Vec<Requested> = Vec::new();
    for f in fragments {
        let wants = requested_options(&f.text, version);
        let adds = wants
            .iter()
            .any(|w| !asked.iter().any(|a| a.name == w.name && a.value == w.value));
        if f.name == "base" || adds {
            asked.extend(wants);
            kept.push(f);
        }
    }
    kept
}

/// A fragment's text for one kernel version: lines whose version condition fails are dropped,
/// the others lose their `# since`/`# before` mark. A fragment without marks is returned as it
/// is, so marking a line for older kernels does not change the newer kernels' cache keys.
pub fn effective_text(fragment: &str, version: Option<&str>) -> String {
    fragment
        .split_inclusive('\n')
        .filter_map(|raw| {
            let (line, condition, choice) = split_marks(raw.trim());
            match (condition, version) {
                (None, _) if !choice => Some(raw.to_string()),
                (Some(c), Some(v)) if !c.holds(v) => None,
                _ => Some(format!(
                    "{line}{}",
                    if raw.ends_with('\n') { "\n" } else { "" }
                )),
            }
        })
        .collect()
}

/// Returns the cached kernel for (source, fragments), building it first if needed: in the
/// persistent build directory of (tree, fragment set, recipe), reconfigured only when the
/// fragments changed, so that make recompiles only what an edit touched. `rebuild` starts that
/// directory afresh.
impl crate::KernelBuildArgs {
    /// `cargo xtask kernel`: builds (or finds) the kernel and prints its path.
    pub fn run(self) -> Result<crate::exit::Exit> {
        let flag = self.src.kernel_src.as_deref();
        crate::setup::ensure(true, flag)?;
        if self.config_only {
            // Without --fragment: every kernel kernel-lab may build from this source.
            let sets = match self.fragments.is_empty() {
                true => std::iter::once(vec![])
                    .chain(optional_fragments()?.into_iter().map(|f| vec![f]))
                    .collect(),
                false => vec![self.fragments.clone()],
            };
            let source = locate(flag)?;
            for extra in &sets {
                let config = configure_only(&source, &build_fragments(extra)?)?;
                println!("{}", config.display());
            }
            eprintln!("every option the fragments ask for survived");
            return Ok(crate::exit::Exit::Passed);
        }
        let k = ensure(
            &locate(flag)?,
            &build_fragments(&self.fragments)?,
            self.rebuild,
        )?;
        let how = if k.built { "built now" } else { "cached" };
        eprintln!("kernel {} ({how})", k.key);
        println!("{}", k.image.display());
        Ok(crate::exit::Exit::Passed)
    }
}

pub fn ensure(source: &Source, fragments: &[Fragment], rebuild: bool) -> Result<Kernel> {
    let cache = cache::cache_dir()?;
    // The tree (extracted once for a tarball) gives the version the fragments are read for.
    let tree = source_tree(&cache, source)?;
    let version = makefile_version(&tree);
    let key = cache_key(source, fragments, version.as_deref());
    let entry = cache.join("kernels").join(&key);
    if !rebuild && let Some(k) = published(&entry, &key) {
        return Ok(k);
    }
    if let (SourceKind::Tree, Some(what)) = (&source.kind, crate::tree::in_place_build(&tree)) {
        crate::exit::bad_input!("{}", in_place_message(&tree, what));
    }
    let set = FragmentSet::new(fragments, version.as_deref());
    let build = cache.join("build").join(build_dir_name(&tree, &set));
    let _lock = cache::lock(&cache, &format!("build-{}", build_dir_name(&tree, &set)))?;
    if !rebuild && let Some(k) = published(&entry, &key) {
        return Ok(k); // another process built it meanwhile
    }
    if rebuild && build.exists() {
        fs::remove_dir_all(&build).with_context(|| format!("removing {}", build.display()))?;
    }
    // Only a build from an empty directory tells how many files these fragments compile.
    let from_scratch = !build.join("vmlinux.a").exists() && !build.join("mm").exists();
    fs::create_dir_all(&build).with_context(|| format!("creating {}", build.display()))?;
    let log = build.join("kernel-lab-build.log");
    fs::write(&log, "").with_context(|| format!("creating {}", log.display()))?;
    let fresh = !build.join("vmlinux").is_file();
    configure(&tree, &build, &set, &log)?;
    // The progress line's "of ~N files" on a first build: what the last first build of these
    // fragments compiled (networking or tracing add hundreds), else of any, else base's count.
    let hint_file = cache.join(format!("kernels/objects-{}", set.names().join("+")));
    let read_hint =
        |p: PathBuf| -> Option<usize> { fs::read_to_string(p).ok()?.trim().parse().ok() };
    let progress = if fresh {
        let hint = read_hint(hint_file.clone())
            .or_else(|| read_hint(cache.join("kernels/objects-last-build")))
            .or(Some(900));
        Build::First { hint }
    } else {
        Build::Incremental
    };
    let image = BootImage::of_build(&build);
    let objects = make(&tree, &build, &[image.target()], &log, Some(progress))?;
    if from_scratch {
        let _ = fs::create_dir_all(cache.join("kernels"));
        for file in [hint_file, cache.join("kernels/objects-last-build")] {
            let _ = fs::write(file, objects.to_string());
        }
    }
    // make may have updated .config itself (a Kconfig change in the tree): check it again.
    set.check_survival(&build.join(".config"))?;
    let _publish = cache::lock(&cache, &format!("kernel-{key}"))?;
    let staging = cache::staging_path(&entry);
    fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;
    fs::copy(image.built(&build), staging.join(image.target()))
        .with_context(|| format!("copying {} into the cache", image.target()))?;
    fs::copy(build.join(".config"), staging.join("config"))
        .context("copying .config into the cache")?;
    fs::write(staging.join("source"), &source.identity)?;
    fs::write(staging.join("build-dir"), build_dir_name(&tree, &set))?;
    cache::publish(&staging, &entry)?;
    cache::touch(&entry);
    drop(_publish);
    collect_after_build(&cache, source, &build_dir_name(&tree, &set));
    Ok(in_entry(&entry, &key, true))
}

/// Configures the fragments for `source` in a scratch directory under target/ (tinyconfig,
/// merge, olddefconfig, the survival check: a lost option is [`Untestable`], named), without
/// building; returns the resulting .config (one directory per tree and fragment set). Every
/// run configures afresh (the tree's Kconfig may have changed); the directory is kept, so
/// Kconfig's own programs are compiled once.
pub fn configure_only(source: &Source, fragments: &[Fragment]) -> Result<PathBuf> {
    let tree = source_tree(&cache::cache_dir()?, source)?;
    if let (SourceKind::Tree, Some(what)) = (&source.kind, crate::tree::in_place_build(&tree)) {
        crate::exit::bad_input!("{}", in_place_message(&tree, what));
    }
    let version = makefile_version(&tree);
    let set = FragmentSet::new(fragments, version.as_deref());
    let mut h = KeyHasher::new();
    h.add(b"config only")
        .add(tree.as_os_str().as_encoded_bytes());
    for n in set.names() {
        h.add(n.as_bytes());
    }
    let dir = cache::target_dir()?.join("kernel-config").join(h.hex());
    let _lock = cache::lock(&cache::cache_dir()?, &format!("config-{}", h.hex()))?;
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let log = dir.join("kernel-lab-config.log");
    fs::write(&log, "").with_context(|| format!("creating {}", log.display()))?;
    let _ = fs::remove_file(dir.join("kernel-lab-fragments"));
    eprintln!(
        "  kernel: configuring {} for kernel-configs/{{{}}}.config (Kconfig only, no build) ...",
        version.as_deref().unwrap_or("an unknown version"),
        set.names().join(",")
    );
    configure(&tree, &dir, &set, &log)?;
    Ok(dir.join(".config"))
}

/// After a build: a tree's older kernels of the same build directory go (editing a tree does
/// not grow the cache), then whatever the default bounds say is too old or too much. A failure
/// here is reported and does not fail the run.
fn collect_after_build(cache: &Path, source: &Source, build_dir: &str) {
    if let SourceKind::Tree = source.kind {
        match crate::gc::prune_tree_kernels(cache, build_dir) {
            Ok(removed) if !removed.is_empty() => eprintln!(
                "  kernel: removed {} older kernel(s) of this tree and fragment set from the cache",
                removed.len()
            ),
            Ok(_) => {}
            Err(e) => eprintln!("  warning: cleaning the cache: {e:#}"),
        }
    }
    match crate::gc::collect(cache, crate::gc::Bounds::default(), false) {
        Ok(c) if !c.removed.is_empty() => eprintln!("  {}", crate::gc::summary(&c, false)),
        Ok(_) => {}
        Err(e) => eprintln!("  warning: cleaning the cache: {e:#}"),
    }
}

/// The published kernel in `entry`, if there is one (its use is recorded for gc).
fn published(entry: &Path, key: &str) -> Option<Kernel> {
    let k = in_entry(entry, key, false);
    k.image.is_file().then(|| {
        cache::touch(entry);
        k
    })
}

/// The kernel of cache entry `entry`, as its config says: the image it boots and its HZ.
fn in_entry(entry: &Path, key: &str, built: bool) -> Kernel {
    let config = fs::read_to_string(entry.join("config")).unwrap_or_default();
    Kernel {
        hz: config_hz(&config),
        image: entry.join(BootImage::for_config(&config).target()),
        key: key.to_string(),
        built,
    }
}

/// What to tell a developer whose tree was built in place.
fn in_place_message(tree: &Path, what: &str) -> String {
    let t = tree.display();
    format!(
        "{t} has been configured or built in place ({what} exists), so make refuses to build it into kernel-lab's own build directory (\"the source tree is not clean\"). Either:\n  \
         - use your own build: --build-dir {t} (kernel-lab runs make there with your .config and checks that it has the options the labs need), or\n  \
         - give kernel-lab a clean tree with the same content, e.g. a separate worktree: git -C {t} worktree add ../linux-kernel-lab && --kernel-src ../linux-kernel-lab (commit or copy your uncommitted changes there), or\n  \
         - make -C {t} mrproper (this deletes your in-tree build)"
    )
}

/// The fragments of one kernel as they apply to its version: the ones that ask for something
/// (`base` always), with their effective text.
pub struct FragmentSet {
    fragments: Vec<(String, String)>,
    requested: Vec<Requested>,
}

impl FragmentSet {
    pub fn new(fragments: &[Fragment], version: Option<&str>) -> Self {
        let applying = applying(fragments, version);
        FragmentSet {
            fragments: applying
                .iter()
                .map(|f| (f.name.clone(), effective_text(&f.text, version)))
                .collect(),
            requested: applying
                .iter()
                .flat_map(|f| requested_options(&f.text, version))
                .collect(),
        }
    }

    pub fn names(&self) -> Vec<&str> {
        self.fragments.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// The merged fragments, as a build directory records them (reconfigure when it differs).
    fn stamp(&self) -> String {
        self.fragments
            .iter()
            .map(|(n, t)| format!("# fragment {n}\n{t}\n"))
            .collect()
    }

    /// A kernel built elsewhere (`--kernel`, `--build-dir`, an exported manifest): its config
    /// must honour every requested option except the build choices; a bzImage boots without
    /// the PVH entry.
    pub fn check_built_elsewhere(
        &self,
        config: &str,
        image: BootImage,
        origin: &str,
    ) -> Result<()> {
        let needed: Vec<Requested> = self
            .requested
            .iter()
            .filter(|r| !r.choice)
            .filter(|r| {
                !(image == BootImage::BzImage
                    && ["CONFIG_PVH", "CONFIG_HYPERVISOR_GUEST"].contains(&r.name.as_str()))
            })
            .cloned()
            .collect();
        let lost = lost_options(&needed, config);
        if lost.is_empty() {
            return Ok(());
        }
        Err(crate::acquire::untestable_missing(
            &lost,
            &self.names(),
            origin,
        ))
    }

    /// The survival check: every requested option is in `config`; a lost one makes the kernel
    /// [`Untestable`], named with what it got.
    pub fn check_survival(&self, config_path: &Path) -> Result<()> {
        let config = fs::read_to_string(config_path)
            .with_context(|| format!("reading {}", config_path.display()))?;
        let lost = lost_options(&self.requested, &config);
        if lost.is_empty() {
            return Ok(());
        }
        Err(Untestable(format!(
            "these kernel options did not survive (a dependency is missing, or this kernel version lacks them):\n  {}\nfragments: kernel-configs/{{{}}}.config; final config: {}",
            lost.join("\n  "),
            self.names().join(","),
            config_path.display()
        ))
        .into())
    }
}

/// The build directory of (tree, fragment set, recipe): the tree's path is part of it, as the
/// objects in it were compiled from that path's files.
fn build_dir_name(tree: &Path, set: &FragmentSet) -> String {
    let mut h = KeyHasher::new();
    h.add(b"build dir")
        .add(RECIPE.as_bytes())
        .add(tree.as_os_str().as_encoded_bytes());
    for n in set.names() {
        h.add(n.as_bytes());
    }
    h.hex()
}

/// CONFIG_HZ in a .config's text.
pub fn config_hz(config: &str) -> Option<u64> {
    config_value(config, "CONFIG_HZ").and_then(|v| v.parse().ok())
}

/// An option's value in a .config (`CONFIG_HZ` -> `250`).
pub fn config_value(config: &str, name: &str) -> Option<String> {
    config.lines().find_map(|l| {
        l.strip_prefix(name)?
            .strip_prefix('=')
            .map(|v| v.trim().to_string())
    })
}

/// `make vmlinux` (a KASAN kernel: bzImage) in a developer's own configured build directory
/// (`--build-dir`: an in-place tree, or an O= directory, whose Makefile kbuild wrote), with
/// progress; returns the image to boot.
pub fn make_in(dir: &Path) -> Result<PathBuf> {
    if !dir.join(".config").is_file() {
        crate::exit::bad_input!(
            "--build-dir {}: no .config there; configure it first (e.g. make defconfig, then merge kernel-configs/base.config with scripts/kconfig/merge_config.sh)",
            dir.display()
        );
    }
    let log = cache::target_dir()?.join("build-dir-make.log");
    fs::write(&log, "").with_context(|| format!("creating {}", log.display()))?;
    let image = BootImage::of_build(dir);
    make(dir, dir, &[image.target()], &log, Some(Build::Incremental))?;
    Ok(image.built(dir))
}

/// The source's version (`6.1.192`) from its Makefile; a tarball is extracted first (once).
pub fn version(source: &Source) -> Result<Option<String>> {
    let cache = cache::cache_dir()?;
    let key = format!("{} {}", source.identity, cache.display());
    if let Some(v) = remembered(&VERSIONS, &key) {
        return Ok(v);
    }
    let v = makefile_version(&source_tree(&cache, source)?);
    remember(&VERSIONS, key, v.clone());
    Ok(v)
}

/// A tree is used in place (built with O=); a tarball is extracted once into the cache.
pub fn source_tree(cache: &Path, source: &Source) -> Result<PathBuf> {
    if let SourceKind::Tree = source.kind {
        return Ok(source.path.clone());
    }
    let mut h = KeyHasher::new();
    let dir = cache
        .join("src")
        .join(h.add(source.identity.as_bytes()).hex());
    let _lock = cache::lock(cache, &format!("src-{}", h.hex()))?;
    if let Some(tree) = single_subdir(&dir) {
        return Ok(tree);
    }
    let staging = cache::staging_path(&dir);
    fs::create_dir_all(&staging)?;
    let started = Instant::now();
    eprintln!(
        "  kernel: extracting {} (once; about 15 s) ...",
        source.path.display()
    );
    let tar = Cmd::new("tar", "tar (is tar installed?)")
        .arg("-xf")
        .arg(&source.path)
        .arg("-C")
        .arg(&staging)
        .run(None)?;
    if !tar.success() {
        let _ = fs::remove_dir_all(&staging);
        bail!(
            "extracting {} failed ({}): {}",
            source.path.display(),
            tar.ended,
            tar.text().trim()
        );
    }
    cache::publish(&staging, &dir)?;
    eprintln!(
        "  kernel: extracted in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    single_subdir(&dir)
        .with_context(|| format!("{} did not hold one Linux tree", source.path.display()))
}

fn single_subdir(dir: &Path) -> Option<PathBuf> {
    let mut subdirs = fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.join("Makefile").is_file());
    let first = subdirs.next()?;
    subdirs.next().is_none().then_some(first)
}

/// Configures `build` for the fragments (tinyconfig, merged fragments, olddefconfig, survival
/// check), unless it already is: then make alone brings it up to date.
fn configure(tree: &Path, build: &Path, set: &FragmentSet, log: &Path) -> Result<()> {
    let stamp_path = build.join("kernel-lab-fragments");
    let config_path = build.join(".config");
    if config_path.is_file() && fs::read_to_string(&stamp_path).ok() == Some(set.stamp()) {
        return Ok(());
    }
    let _ = fs::remove_file(&stamp_path);
    make(tree, build, &["tinyconfig"], log, None)?;
    let base = fs::read_to_string(&config_path).context("reading the tinyconfig .config")?;
    let fragments: Vec<Fragment> = set
        .fragments
        .iter()
        .map(|(name, text)| Fragment {
            name: name.clone(),
            text: text.clone(),
        })
        .collect();
    // The effective texts carry no version marks any more: merge them as they are.
    fs::write(&config_path, merge_config(&base, &fragments, None))?;
    make(tree, build, &["olddefconfig"], log, None)?;
    set.check_survival(&config_path)?;
    fs::write(&stamp_path, set.stamp()).with_context(|| format!("writing {}", stamp_path.display()))
}

/// How a vmlinux build is shown: a first build with the files it will likely compile, or an
/// incremental one (make decides what changed).
#[derive(Debug, Clone, Copy)]
pub enum Build {
    First { hint: Option<usize> },
    Incremental,
}

/// Runs make with its output in `log`, showing progress for a vmlinux build; returns how many
/// files it compiled. A failure of the build itself makes the kernel [`Untestable`]; a full
/// disk or an interruption (make or a compiler killed by a signal: Ctrl-C, a CI timeout, the
/// host's OOM killer) is an ordinary error, exit 255: the machine's fault, not the commit's.
fn make(
    tree: &Path,
    build: &Path,
    targets: &[&str],
    log: &Path,
    progress: Option<Build>,
) -> Result<usize> {
    let jobs = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let log_file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    // make runs in its own process group (process.rs), so that an interruption stops its
    // compilers too (killing make alone would leave them running).
    let what = targets.join(" ");
    let mut cmd = Cmd::new("make", "make (is build-essential installed?)")
        .arg("-C")
        .arg(tree);
    if build != tree {
        cmd = cmd.arg(format!("O={}", build.display()));
    }
    let running = cmd
        .arg(format!("-j{jobs}"))
        .args(targets)
        .stdout(Sink::File(log_file.try_clone()?))
        .stderr(Sink::File(log_file))
        .start()?;
    let mut shown = BuildProgress::new(log, progress);
    let f = running.wait(Duration::from_millis(250), None, || shown.tick())?;
    match f.ended {
        Ended::Exited(status) if status.success() => {}
        Ended::Exited(status) => {
            return Err(make_failed(&what, status, log, shown.log_start, build));
        }
        Ended::Interrupted | Ended::TimedOut => {
            bail!("interrupted while running make {what}; the cache is unchanged")
        }
    }
    let (objects, _) = shown.compiled();
    if progress.is_some() {
        progress::status_done(&format!(
            "kernel: built {what} in {} ({objects} files compiled; log: {})",
            progress::mmss(shown.started.elapsed()),
            log.display()
        ));
    }
    Ok(objects)
}

/// Why make failed: the build itself ([`Untestable`]), or the machine (a full disk, make or
/// a compiler killed by a signal: Ctrl-C, a CI timeout, the host's OOM killer; exit 255).
/// Only this make's output counts (`log_start`: the log's size before it ran; the log is
/// appended to by every build of the directory, and an earlier interrupted one is no reason).
fn make_failed(
    what: &str,
    status: ExitStatus,
    log: &Path,
    log_start: u64,
    build: &Path,
) -> anyhow::Error {
    let tail = progress::tail_since(log, log_start, 30);
    let failed = format!(
        "make {what} failed ({status}); the last lines of {}:\n{tail}",
        log.display()
    );
    if let Some(how) = interrupted(status, &tail) {
        return anyhow::anyhow!(
            "{failed}\nthe build was interrupted ({how}): the machine's fault, not the kernel's; run it again (the cache is unchanged)"
        );
    }
    if tail.contains("No space left on device") {
        let cache = build.parent().and_then(Path::parent).unwrap_or(build);
        return anyhow::anyhow!(
            "{failed}\nthe disk is full: free some space, or put the cache elsewhere with KERNEL_LAB_CACHE (now {}); `cargo xtask cache gc` removes old kernels and build directories",
            cache.display()
        );
    }
    Untestable(format!(
        "{failed}\nthis kernel does not build: a bisect skips it (exit 125)"
    ))
    .into()
}

/// The progress line of a vmlinux build, from make's log: on a terminal at every tick,
/// otherwise every 30 s.
struct BuildProgress<'a> {
    log: &'a Path,
    mode: Option<Build>,
    log_start: u64,
    started: Instant,
    last_print: Instant,
    tty: bool,
}

impl<'a> BuildProgress<'a> {
    fn new(log: &'a Path, mode: Option<Build>) -> Self {
        BuildProgress {
            log,
            mode,
            log_start: fs::metadata(log).map(|m| m.len()).unwrap_or(0),
            started: Instant::now(),
            last_print: Instant::now(),
            tty: std::io::stderr().is_terminal(),
        }
    }

    /// Files compiled so far in this make, and the last line of the log.
    fn compiled(&self) -> (usize, String) {
        let text = fs::read(self.log).unwrap_or_default();
        let start = (self.log_start as usize).min(text.len());
        let new = String::from_utf8_lossy(&text[start..]).into_owned();
        let objects = new
            .lines()
            .filter(|l| l.trim_start().starts_with("CC "))
            .count();
        let last = new
            .lines()
            .rev()
            .find(|l| l.starts_with("  "))
            .unwrap_or("");
        (objects, last.trim().to_string())
    }

    fn tick(&mut self) {
        let Some(mode) = self.mode else { return };
        if !self.tty && self.last_print.elapsed() < Duration::from_secs(30) {
            return;
        }
        let (objects, last) = self.compiled();
        let elapsed = progress::mmss(self.started.elapsed());
        let line = match mode {
            Build::First { hint } => {
                // A hint already passed was wrong: say nothing rather than "98/~35".
                let hint = hint.filter(|&n| objects <= n);
                let of = hint.map(|n| format!("/~{n}")).unwrap_or_default();
                let eta = self.eta(hint, objects);
                format!(
                    "kernel: building vmlinux (the first build of this source, once), {elapsed} elapsed{eta}, {objects}{of} files compiled, last: {last}"
                )
            }
            Build::Incremental => format!(
                "kernel: rebuilding vmlinux (only what changed), {elapsed} elapsed, {objects} files compiled, last: {last}"
            ),
        };
        progress::status(&line);
        self.last_print = Instant::now();
    }

    /// Files compile at a roughly even rate after the first minute: extrapolate.
    fn eta(&self, hint: Option<usize>, objects: usize) -> String {
        match hint {
            Some(n) if objects >= 40 && objects < n => {
                let per_file = self.started.elapsed().as_secs_f64() / objects as f64;
                let left = Duration::from_secs_f64(per_file * (n - objects) as f64);
                format!(", about {} left", progress::mmss(left))
            }
            _ => String::new(),
        }
    }
}

/// How a failed make was interrupted, if it was: make itself killed by a signal, or a job it
/// ran (`*** [target] Killed`, gcc's `Killed signal terminated program cc1`).
fn interrupted(status: std::process::ExitStatus, tail: &str) -> Option<String> {
    use std::os::unix::process::ExitStatusExt;
    if let Some(sig) = status.signal() {
        return Some(format!("make was killed by signal {sig}"));
    }
    tail.lines().find_map(|l| {
        let l = l.trim();
        let job = l.contains("*** [")
            && ["Killed", "Terminated", "Interrupt", "Hangup"]
                .iter()
                .any(|s| l.ends_with(s));
        (job || l.contains("Killed signal terminated program"))
            .then(|| format!("a job was killed: {l}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_make_killed_by_a_signal_is_an_interruption_not_a_broken_kernel() {
        use std::os::unix::process::ExitStatusExt;
        let killed = std::process::ExitStatus::from_raw(15);
        assert_eq!(
            interrupted(killed, "  CC mm/vmscan.o\n").as_deref(),
            Some("make was killed by signal 15")
        );
        let failed = std::process::ExitStatus::from_raw(2 << 8);
        let job = "make[3]: *** [scripts/Makefile.build:229: mm/vmscan.o] Killed\n";
        assert!(
            interrupted(failed, job)
                .unwrap()
                .contains("mm/vmscan.o] Killed")
        );
        let oom =
            "gcc: fatal error: Killed signal terminated program cc1\ncompilation terminated.\n";
        assert!(interrupted(failed, oom).is_some());
        let broken = "mm/vmscan.c:1:1: error: expected declaration\nmake[3]: *** [scripts/Makefile.build:229: mm/vmscan.o] Error 1\n";
        assert_eq!(interrupted(failed, broken), None);
    }

    /// A real make, interrupted or broken: the error's exit is what a bisect needs (an
    /// interruption stops it with 255, a broken build is skipped with 125).
    #[test]
    fn a_real_make_killed_by_a_signal_exits_255_and_a_broken_build_125() {
        use crate::exit::Exit;
        let tmp = tempfile::tempdir().unwrap();
        let exit_of = |recipe: &str| {
            fs::write(tmp.path().join("Makefile"), format!("all:\n\t{recipe}\n")).unwrap();
            let log = tmp.path().join("make.log");
            let e = make(tmp.path(), tmp.path(), &["all"], &log, None).unwrap_err();
            (Exit::of_error(&e).code(), format!("{e:#}"))
        };
        // make itself killed (a CI timeout's SIGTERM to the build).
        let (code, text) = exit_of("kill -TERM $$PPID; sleep 1");
        assert_eq!(code, 255, "{text}");
        assert!(text.contains("killed by signal 15"), "{text}");
        // a job killed (the OOM killer's SIGKILL to a compiler): make reports it and exits 2.
        let (code, text) = exit_of("kill -KILL $$$$");
        assert_eq!(code, 255, "{text}");
        assert!(text.contains("a job was killed"), "{text}");
        // the build itself fails: the commit's fault.
        let (code, text) = exit_of("echo 'mm/vmscan.c:1:1: error: broken'; exit 1");
        assert_eq!(code, 125, "{text}");
        assert!(text.contains("does not build"), "{text}");
    }

    fn frag(text: &str) -> Fragment {
        Fragment {
            name: "t".into(),
            text: text.into(),
        }
    }

    #[test]
    fn requested_options_read_both_forms() {
        let r = requested_options(
            "# comment\nCONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=\"lz4\"\n\n",
            None,
        );
        assert_eq!(r.len(), 3);
        assert_eq!(
            r[1],
            Requested {
                name: "CONFIG_B".into(),
                value: None,
                choice: false,
            }
        );
        assert_eq!(r[2].value.as_deref(), Some("\"lz4\""));
    }

    #[test]
    fn merge_replaces_and_appends() {
        let base = "CONFIG_A=n\n# CONFIG_B is not set\nCONFIG_AB=y\nCONFIG_D=y\n";
        let merged = merge_config(
            base,
            &[frag("CONFIG_A=y\nCONFIG_B=y\n# CONFIG_D is not set\n")],
            None,
        );
        assert_eq!(
            merged,
            "CONFIG_AB=y\nCONFIG_A=y\nCONFIG_B=y\n# CONFIG_D is not set\n"
        );
    }

    #[test]
    fn version_conditions_select_lines() {
        let f = "CONFIG_A=y\nCONFIG_NEW=y  # since 6.12\nCONFIG_OLD=y # before 6.11\n# CONFIG_X is not set # since 6.12\n";
        let names = |v: Option<&str>| -> Vec<String> {
            requested_options(f, v)
                .into_iter()
                .map(|r| r.name)
                .collect()
        };
        assert_eq!(
            names(Some("6.12.117")),
            ["CONFIG_A", "CONFIG_NEW", "CONFIG_X"]
        );
        assert_eq!(names(Some("6.1.192")), ["CONFIG_A", "CONFIG_OLD"]);
        assert_eq!(
            names(None),
            ["CONFIG_A", "CONFIG_NEW", "CONFIG_OLD", "CONFIG_X"]
        );
        assert_eq!(
            requested_options(f, Some("6.12.1"))[1].value.as_deref(),
            Some("y")
        );
        let merged = merge_config("", &[frag(f)], Some("6.1.0"));
        assert_eq!(merged, "CONFIG_A=y\nCONFIG_OLD=y\n");
    }

    #[test]
    fn effective_text_keeps_unmarked_fragments_and_their_keys() {
        let plain = "# c\nCONFIG_A=y\nCONFIG_NEW=y\n";
        assert_eq!(effective_text(plain, Some("6.12.1")), plain);
        let marked = "# c\nCONFIG_A=y\nCONFIG_NEW=y # since 6.12\nCONFIG_OLD=y # before 6.12\n";
        // Marking lines for older kernels leaves a newer kernel's effective text as it was.
        assert_eq!(effective_text(marked, Some("6.12.117")), plain);
        assert_eq!(
            effective_text(marked, Some("6.1.192")),
            "# c\nCONFIG_A=y\nCONFIG_OLD=y\n"
        );
        let src = Source {
            path: "/x".into(),
            kind: SourceKind::Tarball,
            identity: "x".into(),
            selftests_identity: "x".into(),
        };
        let key = |text: &str, v| cache_key(&src, &[frag(text)], v);
        assert_eq!(key(plain, Some("6.12.117")), key(marked, Some("6.12.117")));
        assert_ne!(key(marked, Some("6.1.192")), key(marked, Some("6.12.117")));
        // A fragment that asks for nothing on this version does not change the key.
        let base = Fragment {
            name: "base".into(),
            text: plain.into(),
        };
        let v1 = Fragment {
            name: "memcg-v1".into(),
            text: "CONFIG_MEMCG_V1=y # since 6.11\n".into(),
        };
        let both = [base.clone(), v1];
        let only = [base];
        assert_eq!(
            cache_key(&src, &both, Some("6.1.192")),
            cache_key(&src, &only, Some("6.1.192"))
        );
        assert_ne!(
            cache_key(&src, &both, Some("6.12.117")),
            cache_key(&src, &only, Some("6.12.117"))
        );
        // Nor does one whose every line base asks for already (the same value).
        let folded = Fragment {
            name: "base".into(),
            text: format!("{plain}CONFIG_MEMCG_V1=y\n"),
        };
        let v1 = both[1].clone();
        assert_eq!(
            cache_key(&src, &[folded.clone(), v1.clone()], Some("6.12.117")),
            cache_key(&src, std::slice::from_ref(&folded), Some("6.12.117"))
        );
        assert_eq!(
            FragmentSet::new(&[folded, v1], Some("6.12.117")).names(),
            ["base"]
        );
    }

    #[test]
    fn a_kasan_kernel_boots_its_bzimage_and_any_other_its_vmlinux() {
        let kasan = "CONFIG_64BIT=y\nCONFIG_KASAN=y\nCONFIG_KASAN_GENERIC=y\n";
        assert_eq!(BootImage::for_config(kasan), BootImage::BzImage);
        assert_eq!(
            BootImage::for_config("CONFIG_64BIT=y\n# CONFIG_KASAN is not set\n"),
            BootImage::Vmlinux
        );
        let b = Path::new("/b");
        assert_eq!(
            BootImage::BzImage.built(b),
            Path::new("/b/arch/x86/boot/bzImage")
        );
        assert_eq!(BootImage::Vmlinux.built(b), Path::new("/b/vmlinux"));
    }

    #[test]
    fn build_choices_are_marked_and_leave_the_key_alone() {
        let plain = "CONFIG_A=y\nCONFIG_KERNEL_LZ4=y\n# CONFIG_VT is not set\nCONFIG_NEW=y\n";
        let marked = "CONFIG_A=y\nCONFIG_KERNEL_LZ4=y # build choice\n# CONFIG_VT is not set # build choice\nCONFIG_NEW=y # since 6.12\n";
        assert_eq!(effective_text(marked, Some("6.12.1")), plain);
        let r = requested_options(marked, Some("6.12.1"));
        let choices: Vec<(&str, bool)> = r.iter().map(|r| (r.name.as_str(), r.choice)).collect();
        assert_eq!(
            choices,
            [
                ("CONFIG_A", false),
                ("CONFIG_KERNEL_LZ4", true),
                ("CONFIG_VT", true),
                ("CONFIG_NEW", false)
            ]
        );
        assert_eq!(r[2].value, None);
    }

    #[test]
    fn fragments_marked_for_every_kernel_make_one_kernel_for_every_lab() {
        let dir = tempfile::tempdir().unwrap();
        let w = |n: &str, t: &str| fs::write(dir.path().join(format!("{n}.config")), t).unwrap();
        w("base", "CONFIG_A=y\n");
        w("tracing", &format!("{IN_EVERY_KERNEL}\nCONFIG_FTRACE=y\n"));
        w(
            "memcg-v1",
            &format!("{IN_EVERY_KERNEL}\nCONFIG_MEMCG_V1=y\n"),
        );
        w("debug", "CONFIG_KASAN=y\n");
        let names = |extra: &[&str]| -> Vec<String> {
            let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
            build_fragments_in(dir.path(), &extra)
                .unwrap()
                .into_iter()
                .map(|f| f.name)
                .collect()
        };
        assert_eq!(names(&[]), ["base", "memcg-v1", "tracing"]);
        assert_eq!(names(&["tracing"]), names(&[]), "one kernel for both");
        assert_eq!(names(&["debug"]), ["base", "memcg-v1", "tracing", "debug"]);
        // What a lab needs stays its own fragments.
        let needs: Vec<String> = fragments_in(dir.path(), &["tracing".into()])
            .unwrap()
            .into_iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(needs, ["base", "tracing"]);
    }

    #[test]
    fn lost_options_names_what_did_not_survive() {
        let req = requested_options(
            "CONFIG_A=y\nCONFIG_B=y\n# CONFIG_C is not set\n# CONFIG_D is not set\nCONFIG_E=4\n",
            None,
        );
        let config = "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=y\nCONFIG_E=4\n";
        let lost = lost_options(&req, config);
        assert_eq!(
            lost,
            vec![
                "CONFIG_B=y (got unset)".to_string(),
                "CONFIG_C unset (got=y)".to_string()
            ]
        );
    }

    #[test]
    fn the_base_fragment_is_well_formed() {
        let f = fragments(&[]).unwrap();
        let req = requested_options(&f[0].text, None);
        assert!(
            req.iter().any(|r| r.name == "CONFIG_MEMCG"),
            "base.config lost CONFIG_MEMCG"
        );
        assert!(req.len() > 40);
    }

    #[test]
    fn debian_versions_name_their_package() {
        let (tarball, package) = debian_source(Path::new("6.1")).unwrap();
        assert_eq!(tarball, Path::new("/usr/src/linux-source-6.1.tar.xz"));
        assert_eq!(package, "linux-source-6.1");
        for path in [
            "linux",
            "6",
            "6.x",
            "./6.1.tar",
            "/usr/src/linux-source-6.1.tar.xz",
        ] {
            assert!(debian_source(Path::new(path)).is_none(), "{path}");
        }
    }

    #[test]
    fn a_build_directory_is_configured_again_only_when_its_fragments_change() {
        let tmp = tempfile::tempdir().unwrap();
        let (tree, build) = (tmp.path().join("linux"), tmp.path().join("build"));
        fs::create_dir_all(&tree).unwrap();
        fs::write(
            tree.join("Makefile"),
            "tinyconfig:\n\t@mkdir -p $(O) && echo '# tiny' > $(O)/.config && echo x >> $(O)/../count\nolddefconfig:\n\t@true\n",
        )
        .unwrap();
        let log = tmp.path().join("log");
        let set = |text: &str| {
            FragmentSet::new(
                &[Fragment {
                    name: "base".into(),
                    text: text.into(),
                }],
                None,
            )
        };
        let configured = || count_lines(&tmp.path().join("count"));
        configure(&tree, &build, &set("CONFIG_A=y\n"), &log).unwrap();
        assert_eq!(configured(), 1);
        configure(&tree, &build, &set("CONFIG_A=y\n"), &log).unwrap();
        assert_eq!(
            configured(),
            1,
            "same fragments: make alone brings it up to date"
        );
        configure(&tree, &build, &set("CONFIG_A=y\nCONFIG_B=y\n"), &log).unwrap();
        assert_eq!(configured(), 2);
        let config = fs::read_to_string(build.join(".config")).unwrap();
        assert!(config.contains("CONFIG_B=y"), "{config}");
    }

    fn count_lines(p: &Path) -> usize {
        fs::read_to_string(p)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    }

    #[test]
    fn makefile_version_reads_a_tree() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("Makefile"),
            "VERSION = 6\nPATCHLEVEL = 12\nSUBLEVEL = 117\nEXTRAVERSION =\nNAME = x\n",
        )
        .unwrap();
        assert_eq!(makefile_version(dir.path()).as_deref(), Some("6.12.117"));
    }
}
