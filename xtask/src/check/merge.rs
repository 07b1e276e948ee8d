//! Reading reports back: merging the shards' check.json into one verdict (`check --merge`),
//! comparing with an earlier run (`--baseline`), and the declared expected failures
//! (declared.toml beside this crate).

use super::{Entry, Report, SCHEMA};
use crate::qemu::Accel;
use anyhow::{Context, Result, bail};
use guest::spec::KernelReq;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One declared expected failure: a test that cannot work in some set-up (reason, kernels,
/// accelerator, link). Only a test that fails every run is covered; a flaky one stays flaky.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Declared {
    /// A lab id, or `program/test` for a selftest.
    pub test: String,
    pub reason: String,
    /// The kernels it applies to (e.g. `>= 6.12`); absent: all.
    #[serde(default)]
    pub kernel: Option<KernelReq>,
    /// `tcg` or `kvm`; absent: both.
    #[serde(default)]
    pub accel: Option<String>,
    /// Where the problem is discussed (an upstream report, a commit).
    #[serde(default)]
    pub link: Option<String>,
}

impl Declared {
    pub fn covers(&self, id: &str, kernel: &str, accel: Accel) -> bool {
        let accel_name = if accel == Accel::Kvm { "kvm" } else { "tcg" };
        self.test == id
            && self.kernel.as_ref().is_none_or(|k| k.holds(kernel))
            && self.accel.as_deref().is_none_or(|a| a == accel_name)
    }

    pub fn describe(&self) -> String {
        let mut s = format!("declared expected failure: {}", self.reason);
        if let Some(k) = &self.kernel {
            s.push_str(&format!(" (kernels {k})"));
        }
        if let Some(a) = &self.accel {
            s.push_str(&format!(" (under {a})"));
        }
        if let Some(l) = &self.link {
            s.push_str(&format!(" [{l}]"));
        }
        s
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeclaredFile {
    #[serde(default)]
    declared: Vec<Declared>,
}

/// The data file of declared expected failures.
pub const DECLARED_FILE: &str = "xtask/declared.toml";

pub fn parse_declared(text: &str, origin: &str) -> Result<Vec<Declared>> {
    let f: DeclaredFile = toml::from_str(text).map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
    for d in &f.declared {
        if let Some(a) = &d.accel
            && a != "tcg"
            && a != "kvm"
        {
            bail!(
                "{origin}: {}: accel must be \"tcg\" or \"kvm\", not {a:?}",
                d.test
            );
        }
    }
    Ok(f.declared)
}

pub fn load_declared() -> Result<Vec<Declared>> {
    let path = crate::cache::project_root().join(DECLARED_FILE);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    parse_declared(&text, &path.display().to_string())
}

/// Reads a check.json (or the one in a directory).
pub fn read_report(path: &Path) -> Result<Report> {
    let file = if path.is_dir() {
        path.join("check.json")
    } else {
        path.to_path_buf()
    };
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let r: Report = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a {SCHEMA} report (written by an older kernel-lab?)",
            file.display()
        )
    })?;
    if r.schema != SCHEMA {
        bail!(
            "{}: schema {:?}, expected {SCHEMA}",
            file.display(),
            r.schema
        );
    }
    Ok(r)
}

/// Merges shard reports into one: every shard of the same matrix exactly once, entries and
/// runs in matrix order. The verdict fields are left for the caller to compute.
pub fn merge(paths: &[PathBuf]) -> Result<Report> {
    let reports: Vec<(PathBuf, Report)> = paths
        .iter()
        .map(|p| Ok((p.clone(), read_report(p)?)))
        .collect::<Result<_>>()?;
    merge_reports(reports)
}

pub fn merge_reports(reports: Vec<(PathBuf, Report)>) -> Result<Report> {
    let Some((_, first)) = reports.first() else {
        bail!("--merge: no reports given");
    };
    let items = first.provenance.matrix_items;
    let count = first.provenance.shard.map(|s| s.count).unwrap_or(1);
    let mut seen = vec![false; count];
    for (path, r) in &reports {
        let p = &r.provenance;
        if p.matrix_items != items {
            bail!(
                "{}: a matrix of {} items, the first report has {items}: these are not shards of one check",
                path.display(),
                p.matrix_items
            );
        }
        let (i, n) = p.shard.map(|s| (s.index, s.count)).unwrap_or((1, 1));
        if n != count {
            bail!(
                "{}: shard {i}/{n}, the first report is one of {count}",
                path.display()
            );
        }
        if std::mem::replace(&mut seen[i - 1], true) {
            bail!("{}: shard {i}/{n} is given twice", path.display());
        }
    }
    let missing: Vec<String> = (0..count)
        .filter(|k| !seen[*k])
        .map(|k| format!("{}/{count}", k + 1))
        .collect();
    if !missing.is_empty() {
        bail!(
            "--merge: shard(s) {} missing: their items would be silently absent",
            missing.join(", ")
        );
    }
    let mut merged = first.clone();
    merged.results.clear();
    merged.runs.clear();
    merged.baseline = None;
    merged.provenance.shard = None;
    merged.provenance.merged_from = reports.iter().map(|(p, _)| p.clone()).collect();
    let mut accels: Vec<String> = Vec::new();
    for (_, r) in &reports {
        merged.results.extend(r.results.iter().cloned());
        merged.runs.extend(r.runs.iter().cloned());
        for k in &r.provenance.kernels {
            if !merged.provenance.kernels.iter().any(|m| m.label == k.label) {
                merged.provenance.kernels.push(k.clone());
            }
        }
        if !accels.contains(&r.provenance.accelerator) {
            accels.push(r.provenance.accelerator.clone());
        }
    }
    merged.provenance.accelerator = accels.join(",");
    merged.results.sort_by_key(|e| e.index);
    merged.runs.sort_by_key(|r| (r.index, r.attempt));
    for e in &mut merged.results {
        e.new = None;
    }
    Ok(merged)
}

/// What is new compared with a baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineSummary {
    pub path: PathBuf,
    /// Bad now (failed, error, untestable), not bad then (or absent then).
    pub new: Vec<String>,
    /// Bad then, not bad now.
    pub fixed: Vec<String>,
    /// Bad then and now: not counted.
    pub still: Vec<String>,
}

fn describe(e: &Entry) -> String {
    format!(
        "{} on {} (mglru {}): {}",
        e.id,
        e.kernel,
        e.mglru.name(),
        e.result.name()
    )
}

/// Marks each entry `new` or not against `old` (same id, kind and mode; the same kernel label
/// when the baseline has it, else the baseline's only kernel).
pub fn compare(entries: &mut [Entry], path: &Path, old: &Report) -> BaselineSummary {
    let mut s = BaselineSummary {
        path: path.to_path_buf(),
        new: vec![],
        fixed: vec![],
        still: vec![],
    };
    let one_kernel = {
        let mut k: Vec<&str> = old.results.iter().map(|e| e.kernel.as_str()).collect();
        k.dedup();
        k.len() <= 1
    };
    for e in entries.iter_mut() {
        let then = old.results.iter().find(|o| {
            o.id == e.id
                && o.kind == e.kind
                && o.mglru == e.mglru
                && (o.kernel == e.kernel || one_kernel)
        });
        let was_bad = then.is_some_and(|o| o.result.is_bad());
        let is_bad = e.result.is_bad();
        e.new = Some(is_bad && !was_bad);
        match (was_bad, is_bad) {
            (false, true) => s.new.push(describe(e)),
            (true, false) => s.fixed.push(describe(e)),
            (true, true) => s.still.push(describe(e)),
            _ => {}
        }
    }
    s
}

pub fn render_baseline(b: &BaselineSummary) -> String {
    let mut out = format!(
        "compared with {}: {} new, {} fixed, {} failing before and now (not counted)",
        b.path.display(),
        b.new.len(),
        b.fixed.len(),
        b.still.len()
    );
    for (what, list) in [("NEW", &b.new), ("fixed", &b.fixed)] {
        for l in list {
            out.push_str(&format!("\n  {what}: {l}"));
        }
    }
    out
}

#[cfg(test)]
/// Whether two reports hold the same results, item by item (ignoring times, log paths and
/// provenance): what a merged sharded run must share with an unsharded one.
pub fn same_results(a: &Report, b: &Report) -> Result<(), String> {
    let key = |e: &Entry| {
        (
            e.index,
            e.kind,
            e.id.clone(),
            e.kernel.clone(),
            e.mglru,
            e.result,
        )
    };
    let (ka, kb): (Vec<_>, Vec<_>) = (
        a.results.iter().map(key).collect(),
        b.results.iter().map(key).collect(),
    );
    if ka == kb {
        Ok(())
    } else {
        Err(format!("{ka:#?}\n!=\n{kb:#?}"))
    }
}
