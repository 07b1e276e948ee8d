//! The catalog of labs under labs/, and what the user typed resolved to one ("did you mean").

use crate::cache;
use crate::exit::bad_input;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// A lab found on disk.
#[derive(Debug, Clone)]
pub struct LabDir {
    pub id: String,
    pub dir: PathBuf,
}

impl LabDir {
    pub fn spec_path(&self) -> PathBuf {
        self.dir.join("lab.toml")
    }
}

/// Every labs/<id>/lab.toml, in catalog order (by the number the id starts with).
pub fn catalog() -> Result<Vec<LabDir>> {
    let root = cache::project_root().join("labs");
    let mut labs: Vec<LabDir> = std::fs::read_dir(&root)
        .with_context(|| format!("reading {}", root.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("lab.toml").is_file())
        .map(|e| LabDir {
            id: e.file_name().to_string_lossy().into_owned(),
            dir: e.path(),
        })
        .collect();
    labs.sort_by_key(|l| (leading_number(&l.id), l.id.clone()));
    Ok(labs)
}

fn leading_number(id: &str) -> u32 {
    id.split('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(u32::MAX)
}

/// Resolves what the user typed: a path to a lab directory or lab.toml, an exact id, a number
/// (`2` is `2-cgroup-limit`), or a unique prefix; otherwise an error with the closest ids.
pub fn resolve(query: &str, labs: &[LabDir]) -> Result<LabDir> {
    let as_path = Path::new(query);
    if query.contains('/') || as_path.is_dir() && as_path.join("lab.toml").is_file() {
        let dir = if as_path.is_file() {
            as_path.parent().unwrap_or(Path::new("."))
        } else {
            as_path
        };
        if !dir.join("lab.toml").is_file() {
            bad_input!("{query}: no lab.toml there");
        }
        let dir = dir.canonicalize()?;
        let id = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        return Ok(LabDir { id, dir });
    }
    if let Some(l) = labs.iter().find(|l| l.id == query) {
        return Ok(l.clone());
    }
    if let Ok(n) = query.parse::<u32>()
        && let Some(l) = labs.iter().find(|l| leading_number(&l.id) == n)
    {
        return Ok(l.clone());
    }
    let prefixed: Vec<&LabDir> = labs.iter().filter(|l| l.id.starts_with(query)).collect();
    if prefixed.len() == 1 {
        return Ok(prefixed[0].clone());
    }
    if prefixed.len() > 1 {
        let ids: Vec<&str> = prefixed.iter().map(|l| l.id.as_str()).collect();
        bad_input!("lab {query:?} is ambiguous: it could be {}", ids.join(", "));
    }
    let mut scored: Vec<(usize, &str)> = labs
        .iter()
        .map(|l| {
            // Compare with the whole id and with the id without its number.
            let name = l.id.split_once('-').map(|(_, n)| n).unwrap_or(&l.id);
            (
                edit_distance(query, &l.id).min(edit_distance(query, name)),
                l.id.as_str(),
            )
        })
        .collect();
    scored.sort();
    let list = labs
        .iter()
        .map(|l| l.id.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    match scored.first() {
        Some((d, id)) if *d <= query.len().max(3) / 2 + 1 => {
            bad_input!("no lab {query:?}; did you mean {id:?}? (labs: {list})")
        }
        _ => bad_input!("no lab {query:?} (labs: {list}; `cargo xtask list` describes them)"),
    }
}

pub use guest::spec::edit_distance;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::load;

    fn labs(ids: &[&str]) -> Vec<LabDir> {
        ids.iter()
            .map(|id| LabDir {
                id: id.to_string(),
                dir: PathBuf::from(id),
            })
            .collect()
    }

    #[test]
    fn ids_resolve_by_number_prefix_and_suggestion() {
        let l = labs(&[
            "1-global-pressure",
            "2-cgroup-limit",
            "10-dirty-writeback",
            "12-psi-blocking",
        ]);
        assert_eq!(resolve("2", &l).unwrap().id, "2-cgroup-limit");
        assert_eq!(resolve("1", &l).unwrap().id, "1-global-pressure");
        assert_eq!(resolve("2-cg", &l).unwrap().id, "2-cgroup-limit");
        let ones = labs(&["10-dirty-writeback", "11-mglru-vs-classic"]);
        assert!(
            resolve("1", &ones)
                .unwrap_err()
                .to_string()
                .contains("ambiguous")
        );
        let e = resolve("2-cgroup-limt", &l).unwrap_err().to_string();
        assert!(e.contains("did you mean \"2-cgroup-limit\""), "{e}");
        let e = resolve("cgroup-limit", &l).unwrap_err().to_string();
        assert!(e.contains("did you mean \"2-cgroup-limit\""), "{e}");
        let e = resolve("zzzzzzzzzzzz", &l).unwrap_err().to_string();
        assert!(
            !e.contains("did you mean") && e.contains("labs: 1-global-pressure"),
            "{e}"
        );
    }

    #[test]
    fn edit_distance_basics() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }

    #[test]
    fn every_lab_in_the_catalog_loads() {
        let labs = catalog().unwrap();
        assert!(labs.len() >= 2);
        for l in labs {
            let spec = load(&l.spec_path()).unwrap();
            assert_eq!(
                spec.id,
                l.id,
                "the id in {} must match its directory",
                l.spec_path().display()
            );
            assert!(
                l.dir.join("README.md").is_file(),
                "{} has no README.md",
                l.id
            );
        }
    }
}
