//! Where a run's kernel comes from: built from a source and cached (the default), a kernel
//! built elsewhere (`--kernel`, vmlinux or bzImage), the developer's own build directory
//! (`--build-dir`, make runs there first), or an exported set (`check --kernels
//! manifest.json`). Whatever the origin, the config is checked against the lab's fragments
//! before anything boots; a missing option makes the kernel [`Untestable`], named.

use crate::exit::bad_input;
use crate::kernel::{self, BootImage, FragmentSet, Kernel, Untestable};
use crate::manifest::Manifest;
use crate::process::{Cmd, Sink};
use anyhow::{Context, Result, bail};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The kernel of a run.
#[derive(Debug, Clone)]
pub enum KernelChoice {
    /// Built from a source (a tree, a tarball or `X.Y`; None: `$KERNEL_LAB_SRC` or the default)
    /// and cached.
    Source(Option<PathBuf>),
    /// A kernel built elsewhere.
    Prebuilt(Prebuilt),
    /// The developer's own configured build directory (an in-place tree, or an O= directory):
    /// `make vmlinux` runs there, then its vmlinux and .config are used as they are.
    BuildDir(PathBuf),
    /// One source of an exported manifest.
    Exported {
        manifest: Arc<Manifest>,
        index: usize,
    },
}

/// `--kernel PATH [--kernel-config PATH] [--kernel-src TREE]`.
#[derive(Debug, Clone)]
pub struct Prebuilt {
    pub image: PathBuf,
    /// The config it was built with; None: the one embedded in it (CONFIG_IKCONFIG).
    pub config: Option<PathBuf>,
    /// The tree it was built from, for the selftest programs.
    pub tree: Option<PathBuf>,
}

impl Default for KernelChoice {
    fn default() -> Self {
        KernelChoice::Source(None)
    }
}

impl KernelChoice {
    /// The `--kernel-src` flag when the kernel is built from a source (set-up installs a
    /// Debian source package when needed); None otherwise.
    pub fn source_flag(&self) -> Option<&Path> {
        match self {
            KernelChoice::Source(p) => p.as_deref(),
            KernelChoice::Prebuilt(p) => p.tree.as_deref(),
            KernelChoice::BuildDir(d) => Some(d),
            KernelChoice::Exported { .. } => None,
        }
    }

    /// Whether this run may compile anything (a kernel, or the selftests from a tree): then
    /// set-up asks for the build tools (and a Debian source), otherwise only for what runs a VM.
    pub fn builds(&self) -> bool {
        match self {
            KernelChoice::Source(_) | KernelChoice::BuildDir(_) => true,
            KernelChoice::Prebuilt(p) => p.tree.is_some(),
            KernelChoice::Exported { .. } => false,
        }
    }

    /// The kernel's version (`6.12.117`), if it can be told.
    pub fn version(&self) -> Result<Option<String>> {
        match self {
            KernelChoice::Source(p) => kernel::version(&kernel::locate(p.as_deref())?),
            KernelChoice::Prebuilt(p) => Ok(config_version(&p.config_text()?)),
            KernelChoice::BuildDir(dir) => Ok(fs::read_to_string(dir.join(".config"))
                .ok()
                .and_then(|c| config_version(&c))),
            KernelChoice::Exported { manifest, index } => {
                Ok(Some(manifest.sources[*index].version.clone()))
            }
        }
    }

    /// What reports call this kernel: its version, else its file name.
    pub fn label(&self) -> String {
        if let KernelChoice::Exported { manifest, index } = self {
            return manifest.sources[*index].label.clone();
        }
        if let Ok(Some(v)) = self.version() {
            return v;
        }
        let path = match self {
            KernelChoice::Source(p) => p.clone(),
            KernelChoice::Prebuilt(p) => Some(p.image.clone()),
            KernelChoice::BuildDir(d) => Some(d.clone()),
            KernelChoice::Exported { .. } => None,
        };
        path.and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "default".into())
    }

    /// The kernel for these extra fragments (as a lab names them), ready to boot: built or
    /// found in the cache, or checked when it comes from elsewhere.
    pub fn kernel(&self, extra: &[String], rebuild: bool) -> Result<Kernel> {
        let fragments = kernel::fragments(extra)?;
        match self {
            KernelChoice::Source(p) => kernel::ensure(
                &kernel::locate(p.as_deref())?,
                &kernel::build_fragments(extra)?,
                rebuild,
            ),
            KernelChoice::Prebuilt(p) => {
                let config = p.config_text()?;
                let version = config_version(&config);
                let set = FragmentSet::new(&fragments, version.as_deref());
                let image = match is_bzimage(&p.image)? {
                    true => BootImage::BzImage,
                    false => BootImage::Vmlinux,
                };
                if image == BootImage::Vmlinux
                    && BootImage::for_config(&config) == BootImage::BzImage
                {
                    bad_input!(
                        "--kernel {}: a KASAN kernel does not boot from its vmlinux (PVH's entry runs instrumented code before the KASAN shadow is mapped, and the guest resets at once); pass its bzImage (make bzImage: arch/x86/boot/bzImage)",
                        p.image.display()
                    );
                }
                set.check_built_elsewhere(&config, image, &p.config_origin())?;
                Ok(Kernel {
                    hz: kernel::config_hz(&config),
                    image: p.image.clone(),
                    key: format!("prebuilt {}", p.image.display()),
                    built: false,
                })
            }
            KernelChoice::BuildDir(dir) => {
                let image = kernel::make_in(dir)?;
                let config_path = dir.join(".config");
                let config = fs::read_to_string(&config_path)
                    .with_context(|| format!("reading {}", config_path.display()))?;
                let set = FragmentSet::new(&fragments, config_version(&config).as_deref());
                let booted = BootImage::for_config(&config);
                set.check_built_elsewhere(&config, booted, &config_path.display().to_string())?;
                Ok(Kernel {
                    hz: kernel::config_hz(&config),
                    image,
                    key: format!("build dir {}", dir.display()),
                    built: true,
                })
            }
            KernelChoice::Exported { manifest, index } => manifest.kernel(*index, &fragments),
        }
    }

    /// The static selftest program `program`, built from this kernel's tree (or exported).
    pub fn selftest(&self, program: &str) -> Result<PathBuf> {
        let tree = match self {
            KernelChoice::Source(p) => {
                return crate::selftests::build(&kernel::locate(p.as_deref())?, program);
            }
            KernelChoice::Exported { manifest, index } => {
                return manifest.selftest(*index, program);
            }
            KernelChoice::Prebuilt(Prebuilt { tree: Some(t), .. }) => t.clone(),
            KernelChoice::BuildDir(dir) => build_dir_tree(dir),
            KernelChoice::Prebuilt(Prebuilt { tree: None, .. }) => bad_input!(
                "the selftests are built from the kernel's source tree: pass it with --kernel-src TREE beside --kernel, or leave them out with --no-selftests"
            ),
        };
        crate::selftests::build(&kernel::locate(Some(&tree))?, program)
    }
}

/// The kernel choices of a command line: every `--kernel-src` (none: the default source), or
/// `--kernel` (with at most one `--kernel-src`, for its selftests), or `--build-dir`, or the
/// sources of a `--kernels` manifest.
pub fn choose(
    sources: Vec<PathBuf>,
    kernel: Option<PathBuf>,
    config: Option<PathBuf>,
    build_dir: Option<PathBuf>,
    manifest: Option<PathBuf>,
) -> Result<Vec<KernelChoice>> {
    let given = [kernel.is_some(), build_dir.is_some(), manifest.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if given > 1 {
        bad_input!("--kernel, --build-dir and --kernels each name the kernel: give one of them");
    }
    if let Some(m) = manifest {
        if !sources.is_empty() {
            bad_input!("--kernels runs the kernels of the manifest: leave out --kernel-src");
        }
        return Ok(Manifest::load(&m)?.choices());
    }
    if let Some(dir) = build_dir {
        if !sources.is_empty() {
            bad_input!("--build-dir builds your own build directory: leave out --kernel-src");
        }
        let dir = dir
            .canonicalize()
            .with_context(|| format!("--build-dir {}", dir.display()))
            .map_err(crate::exit::as_bad_input)?;
        return Ok(vec![KernelChoice::BuildDir(dir)]);
    }
    if let Some(image) = kernel {
        if sources.len() > 1 {
            bad_input!(
                "--kernel is one kernel: give at most one --kernel-src (the tree it was built from, for the selftests)"
            );
        }
        if !image.is_file() {
            bad_input!("--kernel {}: no such file", image.display());
        }
        return Ok(vec![KernelChoice::Prebuilt(Prebuilt {
            image,
            config,
            tree: sources.into_iter().next(),
        })]);
    }
    if sources.is_empty() {
        return Ok(vec![KernelChoice::default()]);
    }
    Ok(sources
        .into_iter()
        .map(|s| KernelChoice::Source(Some(s)))
        .collect())
}

/// The source tree of a build directory: kbuild leaves a `source` link in an O= directory; an
/// in-place build is its own tree.
fn build_dir_tree(dir: &Path) -> PathBuf {
    fs::canonicalize(dir.join("source")).unwrap_or_else(|_| dir.to_path_buf())
}

impl Prebuilt {
    fn config_origin(&self) -> String {
        match &self.config {
            Some(c) => c.display().to_string(),
            None => format!("the config embedded in {}", self.image.display()),
        }
    }

    /// The kernel's config: `--kernel-config`, else the one embedded in the image.
    pub fn config_text(&self) -> Result<String> {
        if let Some(c) = &self.config {
            return fs::read_to_string(c)
                .with_context(|| format!("reading --kernel-config {}", c.display()));
        }
        let image = fs::read(&self.image)
            .with_context(|| format!("reading --kernel {}", self.image.display()))?;
        embedded_config(&image)?.ok_or_else(|| {
            crate::exit::BadInput(format!(
                "{} has no embedded config (it was built without CONFIG_IKCONFIG): pass the .config it was built with as --kernel-config PATH",
                self.image.display()
            ))
            .into()
        })
    }
}

/// `# Linux/x86 6.12.117 Kernel Configuration` -> `6.12.117`.
pub fn config_version(config: &str) -> Option<String> {
    config.lines().take(5).find_map(|l| {
        let rest = l.strip_prefix("# Linux/")?;
        let version = rest.split_whitespace().nth(1)?;
        guest::spec::major_minor(version)
            .is_some()
            .then(|| version.to_string())
    })
}

/// A bzImage carries the `HdrS` boot protocol signature at 0x202; a vmlinux is an ELF file.
pub fn is_bzimage(image: &Path) -> Result<bool> {
    let mut head = vec![0u8; 0x210];
    let n = {
        use std::io::Read;
        let mut f = fs::File::open(image)
            .with_context(|| format!("opening --kernel {}", image.display()))?;
        f.read(&mut head)?
    };
    let head = &head[..n];
    if head.starts_with(b"\x7fELF") {
        return Ok(false);
    }
    if head.len() >= 0x206 && &head[0x202..0x206] == b"HdrS" {
        return Ok(true);
    }
    bad_input!(
        "{} is neither a vmlinux (ELF) nor a bzImage: pass the kernel image make built (vmlinux, or arch/x86/boot/bzImage)",
        image.display()
    )
}

/// Compressed-data signatures and the tool that decompresses each, as scripts/extract-ikconfig
/// tries them.
const DECOMPRESSORS: &[(&[u8], &str, &str)] = &[
    (b"\x1f\x8b\x08", "gzip", "gzip"),
    (b"\xfd7zXZ\x00", "xz", "xz-utils"),
    (b"\x28\xb5\x2f\xfd", "zstd", "zstd"),
    (b"\x02\x21\x4c\x18", "lz4", "lz4"),
    (b"BZh", "bzip2", "bzip2"),
    (b"\x5d\x00\x00\x00", "lzma", "xz-utils"),
    (b"\x89LZO", "lzop", "lzop"),
];

/// The config a kernel carries with CONFIG_IKCONFIG (gzip between `IKCFG_ST` and `IKCFG_ED`),
/// found in a vmlinux directly or inside a bzImage's compressed payload.
pub fn embedded_config(image: &[u8]) -> Result<Option<String>> {
    if let Some(c) = ikconfig(image)? {
        return Ok(Some(c));
    }
    let mut missing_tool = None;
    for (magic, tool, package) in DECOMPRESSORS {
        for at in find_all(image, magic).take(8) {
            match decompress(tool, &image[at..]) {
                Ok(out) => {
                    if let Some(c) = ikconfig(&out)? {
                        return Ok(Some(c));
                    }
                }
                Err(e) if not_found(&e) => {
                    missing_tool = Some((*tool, *package));
                    break;
                }
                Err(_) => {}
            }
        }
    }
    if let Some((tool, package)) = missing_tool {
        bail!(
            "reading the kernel's embedded config needs `{tool}` (apt-get install {package}), or pass --kernel-config PATH"
        );
    }
    Ok(None)
}

fn ikconfig(data: &[u8]) -> Result<Option<String>> {
    let Some(start) = find_all(data, b"IKCFG_ST").next() else {
        return Ok(None);
    };
    let body = &data[start + 8..];
    let end = find_all(body, b"IKCFG_ED").next().unwrap_or(body.len());
    let out =
        decompress("gzip", &body[..end]).context("running gzip -dc (apt-get install gzip)")?;
    Ok(Some(String::from_utf8_lossy(&out).into_owned()))
}

fn find_all<'a>(hay: &'a [u8], needle: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
    hay.windows(needle.len())
        .enumerate()
        .filter(move |(_, w)| *w == needle)
        .map(|(i, _)| i)
}

/// `tool -dc` over `data`; what it wrote (trailing garbage after a stream is an error for most
/// tools, so their output counts even when they fail).
fn decompress(tool: &str, data: &[u8]) -> Result<Vec<u8>> {
    let out = Cmd::new(tool, tool)
        .arg("-dc")
        .stdin_bytes(data.to_vec())
        .stderr(Sink::Null)
        .run(None)?;
    Ok(out.stdout)
}

/// Whether an error is a program that is not installed.
fn not_found(e: &anyhow::Error) -> bool {
    e.root_cause()
        .downcast_ref::<std::io::Error>()
        .is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound)
}

/// Why a kernel built elsewhere cannot run these labs, as an error.
pub fn untestable_missing(lost: &[String], fragments: &[&str], origin: &str) -> anyhow::Error {
    Untestable(format!(
        "this kernel lacks options the labs need ({origin}):\n  {}\nthey come from kernel-configs/{{{}}}.config; rebuild it with them (scripts/kconfig/merge_config.sh adds a fragment to a .config)",
        lost.join("\n  "),
        fragments.join(",")
    ))
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compress(tool: &str, data: &[u8]) -> Vec<u8> {
        let out = Cmd::new(tool, tool)
            .arg("--stdout")
            .stdin_bytes(data.to_vec());
        out.checked().unwrap().stdout
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        compress("gzip", data)
    }

    const CONFIG: &str = "#\n# Automatically generated file; DO NOT EDIT.\n# Linux/x86 6.12.117 Kernel Configuration\n#\nCONFIG_HZ=250\n";

    #[test]
    fn the_embedded_config_is_found_in_a_vmlinux_and_in_a_bzimage_payload() {
        let mut vmlinux = b"\x7fELF....padding".to_vec();
        vmlinux.extend(b"IKCFG_ST");
        vmlinux.extend(gzip(CONFIG.as_bytes()));
        vmlinux.extend(b"IKCFG_ED more");
        assert_eq!(embedded_config(&vmlinux).unwrap().as_deref(), Some(CONFIG));
        // A bzImage: setup code, then the vmlinux compressed (xz here), then more bytes.
        let payload = compress("xz", &vmlinux);
        let mut bz = vec![0u8; 0x300];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        bz.extend(payload);
        bz.extend(b"trailer");
        assert_eq!(embedded_config(&bz).unwrap().as_deref(), Some(CONFIG));
        assert_eq!(embedded_config(b"\x7fELF nothing here").unwrap(), None);
        assert_eq!(config_version(CONFIG).as_deref(), Some("6.12.117"));
    }

    #[test]
    fn images_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        fs::write(&p, b"\x7fELF\x02\x01").unwrap();
        assert!(!is_bzimage(&p).unwrap());
        let mut bz = vec![0u8; 0x400];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        fs::write(&p, &bz).unwrap();
        assert!(is_bzimage(&p).unwrap());
        fs::write(&p, b"hello").unwrap();
        let e = is_bzimage(&p).unwrap_err().to_string();
        assert!(e.contains("neither a vmlinux (ELF) nor a bzImage"), "{e}");
    }
}
