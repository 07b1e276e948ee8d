//! Exported kernels, for CI that builds once and tests on many machines: `check --build-only
//! --export DIR` builds every kernel the selected labs and selftests need (and the selftest
//! programs), copies them under DIR and writes DIR/manifest.json; `check --kernels
//! DIR/manifest.json` runs from it with no kernel tree and no make. README describes the format.

use crate::acquire::KernelChoice;
use crate::cache::KeyHasher;
use crate::kernel::{self, Fragment, FragmentSet, Kernel};
use anyhow::{Context, Result, bail};
use guest::spec::LabSpec;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const SCHEMA: &str = "kernel-lab/kernels/1";

#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub schema: String,
    /// The kernel-lab version that wrote it.
    pub kernel_lab: String,
    pub sources: Vec<SourceEntry>,
    /// The directory the manifest's paths are relative to.
    #[serde(skip)]
    pub dir: PathBuf,
}

/// One kernel source and what was built from it.
#[derive(Debug, Serialize, Deserialize)]
pub struct SourceEntry {
    /// What reports call this kernel (its version; `-2`... for a second source of that version).
    pub label: String,
    pub version: String,
    /// `git tree <id>`, `tarball <path> <size> <mtime>` or `tree <path> files <fingerprint>`.
    pub identity: String,
    pub kernels: Vec<KernelEntry>,
    /// Program name -> path of the static selftest program.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selftests: BTreeMap<String, String>,
}

/// One built kernel.
#[derive(Debug, Serialize, Deserialize)]
pub struct KernelEntry {
    /// Its fragment set as it applies to this version (`base` first).
    pub fragments: Vec<String>,
    /// kernel-lab's cache key.
    pub key: String,
    /// FNV-1a 64 of `config`, checked on load.
    pub config_hash: String,
    /// The image to boot, relative to the manifest: a vmlinux, or a KASAN kernel's bzImage
    /// (kernel::BootImage).
    pub vmlinux: String,
    pub config: String,
}

fn hash(bytes: &[u8]) -> String {
    KeyHasher::new().add(bytes).hex()
}

impl Manifest {
    /// Reads and checks a manifest (schema, every file present, config hashes).
    pub fn load(path: &Path) -> Result<Arc<Manifest>> {
        let text = fs::read_to_string(path)
            .with_context(|| format!("reading the kernel manifest {}", path.display()))?;
        let mut m: Manifest = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a kernel-lab manifest", path.display()))?;
        if m.schema != SCHEMA {
            bail!(
                "{} has schema {:?}; this kernel-lab reads {SCHEMA:?}: export the kernels again with this version (check --build-only --export DIR)",
                path.display(),
                m.schema
            );
        }
        if m.sources.is_empty() {
            bail!("{} lists no kernels", path.display());
        }
        m.dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        for s in &m.sources {
            for k in &s.kernels {
                for f in [&k.vmlinux, &k.config] {
                    if !m.dir.join(f).is_file() {
                        bail!(
                            "{} names {f}, which is missing in {} (an incomplete artifact?)",
                            path.display(),
                            m.dir.display()
                        );
                    }
                }
                let config = fs::read(m.dir.join(&k.config))?;
                if hash(&config) != k.config_hash {
                    bail!(
                        "{}: {} does not match its config_hash (a damaged artifact?)",
                        path.display(),
                        k.config
                    );
                }
            }
        }
        Ok(Arc::new(m))
    }

    /// One kernel choice per source, in the manifest's order (every shard sees the same).
    pub fn choices(self: &Arc<Self>) -> Vec<KernelChoice> {
        (0..self.sources.len())
            .map(|index| KernelChoice::Exported {
                manifest: Arc::clone(self),
                index,
            })
            .collect()
    }

    /// The exported kernel of source `index` for these fragments, with its options checked.
    pub fn kernel(&self, index: usize, fragments: &[Fragment]) -> Result<Kernel> {
        let source = &self.sources[index];
        let set = FragmentSet::new(fragments, Some(&source.version));
        let names = set.names();
        // The kernel built with exactly these fragments, else the one with the fewest more, as
        // long as those are built into every kernel kernel-lab builds: a run never gets a
        // kernel with a fragment it did not ask for (`debug` only with --debug-kernel).
        let every: Vec<String> = kernel::build_fragments(&[])?
            .into_iter()
            .map(|f| f.name)
            .collect();
        let Some(k) = source
            .kernels
            .iter()
            .filter(|k| names.iter().all(|n| k.fragments.iter().any(|f| f == n)))
            .filter(|k| {
                k.fragments
                    .iter()
                    .all(|f| names.contains(&f.as_str()) || every.contains(f))
            })
            .min_by_key(|k| k.fragments.len())
        else {
            bail!(
                "the manifest in {} has no {} kernel with the fragments {} (it has: {}); export it with the labs that need it selected (check --build-only --export DIR --lab ...)",
                self.dir.display(),
                source.label,
                names.join("+"),
                source
                    .kernels
                    .iter()
                    .map(|k| k.fragments.join("+"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        };
        let config_path = self.dir.join(&k.config);
        let config = fs::read_to_string(&config_path)
            .with_context(|| format!("reading {}", config_path.display()))?;
        let booted = kernel::BootImage::for_config(&config);
        set.check_built_elsewhere(&config, booted, &config_path.display().to_string())?;
        Ok(Kernel {
            hz: kernel::config_hz(&config),
            image: self.dir.join(&k.vmlinux),
            key: k.key.clone(),
            built: false,
        })
    }

    /// The exported selftest program of source `index`.
    pub fn selftest(&self, index: usize, program: &str) -> Result<PathBuf> {
        let source = &self.sources[index];
        match source.selftests.get(program) {
            Some(p) => Ok(self.dir.join(p)),
            None => bail!(
                "the manifest in {} has no {program} for {}: export it without --no-selftests, or run with --no-selftests",
                self.dir.display(),
                source.label
            ),
        }
    }
}

/// Builds (or takes from the cache) the kernel of every fragment set in `sets` for every
/// source, and the selftest programs when `selftests`; copies them under `dir` and writes
/// `dir/manifest.json`. Returns the manifest's path.
pub fn export(
    dir: &Path,
    kernels: &[KernelChoice],
    sets: &[Vec<String>],
    selftests: bool,
) -> Result<PathBuf> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut sources: Vec<SourceEntry> = Vec::new();
    for choice in kernels {
        let KernelChoice::Source(flag) = choice else {
            bail!(
                "--build-only builds kernels from sources: use --kernel-src (not --kernel, --build-dir or --kernels)"
            );
        };
        let source = kernel::locate(flag.as_deref())?;
        let version = kernel::version(&source)?.unwrap_or_else(|| "unknown".into());
        let same = sources.iter().filter(|s| s.version == version).count();
        let label = match same {
            0 => version.clone(),
            n => format!("{version}-{}", n + 1),
        };
        let mut entry = SourceEntry {
            label: label.clone(),
            version: version.clone(),
            identity: source.identity.clone(),
            kernels: vec![],
            selftests: BTreeMap::new(),
        };
        for extra in sets {
            export_kernel(dir, &source, extra, &mut entry)?;
        }
        if selftests {
            export_selftests(dir, &source, &mut entry)?;
        }
        sources.push(entry);
    }
    let manifest = Manifest {
        schema: SCHEMA.into(),
        kernel_lab: env!("CARGO_PKG_VERSION").into(),
        sources,
        dir: dir.to_path_buf(),
    };
    let path = dir.join("manifest.json");
    crate::cache::write_file(&path, serde_json::to_string_pretty(&manifest)?)?;
    Ok(path)
}

/// The kernel of one fragment set (`extra`) of a source, built or cached, copied under `dir`
/// with its config, and added to the source's entry (once per set of fragment names).
fn export_kernel(
    dir: &Path,
    source: &kernel::Source,
    extra: &[String],
    entry: &mut SourceEntry,
) -> Result<()> {
    let fragments = kernel::build_fragments(extra)?;
    let names: Vec<String> = FragmentSet::new(&fragments, Some(&entry.version))
        .names()
        .iter()
        .map(|n| n.to_string())
        .collect();
    if entry.kernels.iter().any(|k| k.fragments == names) {
        return Ok(());
    }
    eprintln!("export: {} with {}", entry.label, names.join("+"));
    let k = kernel::ensure(source, &fragments, false)?;
    let sub = format!("{}/{}", entry.label, k.key);
    fs::create_dir_all(dir.join(&sub))?;
    let config_src = k.image.with_file_name("config");
    let config =
        fs::read(&config_src).with_context(|| format!("reading {}", config_src.display()))?;
    let name = k.image.file_name().unwrap_or_default().to_string_lossy();
    copy(&k.image, &dir.join(&sub).join(name.as_ref()))?;
    fs::write(dir.join(&sub).join("config"), &config)?;
    entry.kernels.push(KernelEntry {
        fragments: names,
        key: k.key,
        config_hash: hash(&config),
        vmlinux: format!("{sub}/{name}"),
        config: format!("{sub}/config"),
    });
    Ok(())
}

/// The selftest programs built from a source, copied under `dir` with the tests each must
/// report, and added to the source's entry.
fn export_selftests(dir: &Path, source: &kernel::Source, entry: &mut SourceEntry) -> Result<()> {
    for p in crate::selftests::PROGRAMS {
        let bin = crate::selftests::build(source, p)?;
        let rel = format!("{}/selftests/{p}", entry.label);
        fs::create_dir_all(dir.join(&entry.label).join("selftests"))?;
        copy(&bin, &dir.join(&rel))?;
        // The tests it must report (its source's tests[] table) travel with it.
        let list = crate::selftests::tests_list(&bin);
        copy(&list, &crate::selftests::tests_list(&dir.join(&rel)))?;
        entry.selftests.insert(p.to_string(), rel);
    }
    Ok(())
}

/// The extra fragments of every kernel these labs (and the selftests) boot, each set once.
pub fn fragment_sets<'a>(
    labs: impl IntoIterator<Item = &'a LabSpec>,
    selftests: bool,
) -> Result<Vec<Vec<String>>> {
    let mut sets: Vec<Vec<String>> = Vec::new();
    let mut add = |f: Vec<String>| {
        if !sets.contains(&f) {
            sets.push(f);
        }
    };
    for spec in labs {
        add(crate::lab::kernel_fragments(spec));
    }
    if selftests {
        let spec = crate::selftests::spec(crate::selftests::PROGRAMS)?;
        add(crate::lab::kernel_fragments(&spec));
    }
    Ok(sets)
}

/// `check --build-only [--export DIR]`: builds (or finds cached) every kernel the selected labs
/// and the selftests need on every kernel source, each with the `extra` fragments too
/// (`--debug-kernel`: `debug`), and the selftest programs; with `export`, copies them there
/// with a manifest.
pub fn build_only<'a>(
    labs: impl IntoIterator<Item = &'a LabSpec>,
    selftests: bool,
    kernels: &[KernelChoice],
    export_to: Option<&Path>,
    install: bool,
    extra: &[String],
) -> Result<()> {
    let mut sets = fragment_sets(labs, selftests)?;
    for set in &mut sets {
        set.extend(
            extra
                .iter()
                .filter(|f| !set.contains(f))
                .cloned()
                .collect::<Vec<_>>(),
        );
    }
    for k in kernels {
        crate::setup::ensure_for(install, k)?;
    }
    if let Some(dir) = export_to {
        let path = export(dir, kernels, &sets, selftests)?;
        println!("check: wrote {}", path.display());
        return Ok(());
    }
    for k in kernels {
        for set in &sets {
            let built = k.kernel(set, false)?;
            println!("{} {}", k.label(), built.image.display());
        }
        if selftests {
            for p in crate::selftests::PROGRAMS {
                println!("{} {}", k.label(), k.selftest(p)?.display());
            }
        }
    }
    Ok(())
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    fs::copy(from, to)
        .map(|_| ())
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_manifest(dir: &Path, config: &str, hash_of: &str) -> PathBuf {
        write_manifest_of(dir, config, hash_of, &["base"])
    }

    fn write_manifest_of(dir: &Path, config: &str, hash_of: &str, fragments: &[&str]) -> PathBuf {
        fs::create_dir_all(dir.join("6.12.117/k")).unwrap();
        fs::write(dir.join("6.12.117/k/vmlinux"), b"\x7fELF").unwrap();
        fs::write(dir.join("6.12.117/k/config"), config).unwrap();
        let m = serde_json::json!({
            "schema": SCHEMA,
            "kernel_lab": "0.1.0",
            "sources": [{
                "label": "6.12.117",
                "version": "6.12.117",
                "identity": "git tree abc",
                "kernels": [{
                    "fragments": fragments,
                    "key": "k",
                    "config_hash": hash(hash_of.as_bytes()),
                    "vmlinux": "6.12.117/k/vmlinux",
                    "config": "6.12.117/k/config"
                }]
            }]
        });
        let path = dir.join("manifest.json");
        fs::write(&path, m.to_string()).unwrap();
        path
    }

    #[test]
    fn a_manifest_finds_its_kernel_and_checks_the_options() {
        let dir = tempfile::tempdir().unwrap();
        let base = kernel::fragments(&[]).unwrap();
        // A config with every option base.config asks for.
        let full = kernel::merge_config("CONFIG_HZ=250\n", &base, Some("6.12.117"));
        let path = write_manifest(dir.path(), &full, &full);
        let m = Manifest::load(&path).unwrap();
        let k = m.kernel(0, &base).unwrap();
        assert_eq!(k.image, dir.path().join("6.12.117/k/vmlinux"));
        assert_eq!(k.hz, Some(250));
        let choices = m.choices();
        assert_eq!(choices.len(), 1);
        assert_eq!(choices[0].label(), "6.12.117");
        // A set it does not have is named, with the fix.
        let tracing = kernel::fragments(&["tracing".into()]).unwrap();
        let e = format!("{:#}", m.kernel(0, &tracing).unwrap_err());
        assert!(
            e.contains("no 6.12.117 kernel with the fragments base+tracing (it has: base)"),
            "{e}"
        );
        assert!(m.selftest(0, "test_memcontrol").is_err());
        // A required option missing: untestable, named.
        let lacking = full.replace("CONFIG_MEMCG=y\n", "");
        let path = write_manifest(dir.path(), &lacking, &lacking);
        let e = Manifest::load(&path).unwrap().kernel(0, &base).unwrap_err();
        assert!(e.downcast_ref::<kernel::Untestable>().is_some(), "{e:#}");
        assert!(
            format!("{e:#}").contains("CONFIG_MEMCG=y (got unset)"),
            "{e:#}"
        );
        // A damaged file is caught on load.
        let path = write_manifest(dir.path(), &full, "something else");
        let e = format!("{:#}", Manifest::load(&path).unwrap_err());
        assert!(e.contains("does not match its config_hash"), "{e}");
    }

    #[test]
    fn a_debug_kernel_serves_only_the_runs_that_ask_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let debug = kernel::fragments(&["debug".into()]).unwrap();
        let full = kernel::merge_config("CONFIG_HZ=250\n", &debug, Some("6.12.117"));
        let path = write_manifest_of(dir.path(), &full, &full, &["base", "debug"]);
        let m = Manifest::load(&path).unwrap();
        assert!(m.kernel(0, &debug).is_ok());
        // A run without --debug-kernel never gets it (KASAN takes memory the labs count).
        let base = kernel::fragments(&[]).unwrap();
        let e = format!("{:#}", m.kernel(0, &base).unwrap_err());
        assert!(e.contains("(it has: base+debug)"), "{e}");
        // A fragment built into every kernel may come along.
        let tracing = kernel::fragments(&["tracing".into()]).unwrap();
        let full = kernel::merge_config("CONFIG_HZ=250\n", &tracing, Some("6.12.117"));
        let path = write_manifest_of(dir.path(), &full, &full, &["base", "tracing"]);
        assert!(Manifest::load(&path).unwrap().kernel(0, &base).is_ok());
    }
}
