//! Samples: every counter the lab can refer to, family by family ([`guest::counters`]).

use crate::agent::cgroups::cgroup_dir;
use crate::read;
use guest::counters::{FAMILIES, Family, Parser, Scope, Source};
use guest::parse::{kswapd_node, parse_cpu_ticks};
use guest::spec::LabSpec;
use std::collections::BTreeMap;
use std::fs::{self};

/// Reads every counter the lab can refer to, family by family ([`guest::counters`]). A file
/// that cannot be read is simply absent from the sample, so an expectation on it is reported as
/// "not reported by this kernel".
pub fn sample(spec: &LabSpec, probe: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    let mut v = probe.clone();
    // The costlier families only when the lab refers to them (small frames, quick samples).
    let wanted = |f: &&Family| !f.on_demand || spec.refers_to(f.prefix);
    let global = FAMILIES.iter().filter(|f| f.scope == Scope::Global);
    for f in global.filter(wanted) {
        add(&mut v, f.prefix, read_family(f, ""));
    }
    for cg in &spec.cgroups {
        let dir = format!("{}/", cgroup_dir(spec, &cg.name));
        for f in FAMILIES.iter().filter(|f| f.scope == Scope::Cgroup) {
            let prefix = format!("{}/{}", cg.name, f.prefix);
            add(&mut v, &prefix, read_family(f, &dir));
        }
    }
    v
}

/// Adds a family's pairs to a sample, each key prefixed with the family's (or the group's) prefix.
fn add(v: &mut BTreeMap<String, u64>, prefix: &str, pairs: Option<Vec<(String, u64)>>) {
    for (k, n) in pairs.into_iter().flatten() {
        v.insert(format!("{prefix}{k}"), n);
    }
}

/// One family's pairs as the kernel reports them now (`dir`: a cgroup's directory); None when
/// it cannot be read, or is not sampled.
pub fn read_family(f: &Family, dir: &str) -> Option<Vec<(String, u64)>> {
    match f.source {
        Source::File(path, parser) => read_parsed(&format!("{dir}{path}"), parser),
        Source::KswapdThreads => Some(kswapd_threads()),
        Source::V1Probe | Source::AtBoot(..) | Source::Trace => None,
    }
}

/// A file's pairs, parsed; None when it cannot be read or parsed.
fn read_parsed(path: &str, parser: Parser) -> Option<Vec<(String, u64)>> {
    read(path).and_then(|t| parser.parse(&t).ok())
}

/// The families read once as booted ([`Source::AtBoot`]), before the lab changes anything.
pub fn at_boot() -> BTreeMap<String, u64> {
    let mut v = BTreeMap::new();
    for f in FAMILIES {
        let Source::AtBoot(path, parser) = f.source else {
            continue;
        };
        add(&mut v, f.prefix, read_parsed(path, parser));
    }
    v
}

/// `<N>.cpu_ticks` (user + system, in clock ticks) for each kswapdN thread, and `threads`.
pub fn kswapd_threads() -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let dir = entry.path();
        let Some(comm) = read(&format!("{}/comm", dir.display())) else {
            continue;
        };
        let Some(node) = kswapd_node(&comm) else {
            continue;
        };
        let Some(stat) = read(&format!("{}/stat", dir.display())) else {
            continue;
        };
        let ticks = parse_cpu_ticks(&stat).unwrap_or(0);
        out.push((format!("{node}.cpu_ticks"), ticks));
    }
    out.push(("threads".into(), out.len() as u64));
    out
}
