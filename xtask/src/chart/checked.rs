//! The chart's panels of what a lab checks: for each of its headline claims, the counters its
//! expectations name that the chart's other panels leave out, one panel per unit (a THP
//! fallback, memory.events oom beside oom_kill, nr_vmscan_write), each titled with the claim
//! and, when it has more than one, with its unit. A counter is drawn once.

use super::{Draw, MIB, PAGE, StepData, ends_series, keep, panel, series};
use crate::report::Evaluation;
use crate::timeline::Panel;
use crate::units::{self, Unit};
use guest::spec::LabSpec;

/// One panel per headline and unit, titled with the claim (after the unit when the claim has
/// more than one panel): the counters of that unit its expectations name that are not in
/// `drawn` (nor in an earlier headline's panel).
pub(super) fn headline_panels(
    spec: &LabSpec,
    ev: &Evaluation,
    data: &[StepData],
    drawn: &[&str],
) -> Vec<Panel> {
    let mut panels: Vec<Panel> = Vec::new();
    let mut drawn: Vec<String> = drawn.iter().map(|c| c.to_string()).collect();
    for h in &spec.headlines {
        let mut by_unit: Vec<(&str, Vec<&str>)> = Vec::new();
        for t in headline_terms(spec, &h.expect) {
            let Some((unit, _)) = how(t) else { continue };
            if drawn.iter().any(|d| d == t) {
                continue;
            }
            match by_unit.iter_mut().find(|(u, _)| *u == unit) {
                Some((_, ts)) => ts.push(t),
                None => by_unit.push((unit, vec![t])),
            }
        }
        let several = by_unit.len() > 1;
        for (unit, terms) in by_unit {
            let mut p = panel(&title(&h.claim, several.then_some(unit)), unit);
            for t in terms {
                let Some((_, draw)) = how(t) else { continue };
                let s = series(data, t, words(t), draw)
                    .or_else(|| ends_series(ev, data, t, words(t), draw));
                p.series.extend(keep(s, 0.0, true));
            }
            drawn.extend(p.series.iter().map(|s| s.counter.clone()));
            if !p.series.is_empty() {
                panels.push(p);
            }
        }
    }
    panels
}

/// A headline panel's title: the claim, after its unit when the claim has panels in more than
/// one (`The lab checks, in pages: ...`: before the claim, which a long one cuts short).
fn title(claim: &str, unit: Option<&str>) -> String {
    match unit {
        Some(unit) => format!("The lab checks, in {unit}: {claim}"),
        None => format!("The lab checks: {claim}"),
    }
}

/// The counters a headline's expectations name (each term of a sum or difference), in order.
fn headline_terms<'a>(spec: &'a LabSpec, names: &[String]) -> Vec<&'a str> {
    let mut terms: Vec<&str> = Vec::new();
    for ex in names
        .iter()
        .filter_map(|n| spec.expect.iter().find(|e| e.name.as_ref() == Some(n)))
    {
        let counter = match &ex.want {
            guest::expect::Want::Delta { counter, .. }
            | guest::expect::Want::Value { counter, .. } => counter,
            _ => continue,
        };
        for (_, t) in &counter.terms {
            if !terms.contains(&t.as_str()) {
                terms.push(t);
            }
        }
    }
    terms
}

/// A counter's unit on the chart and how it is drawn: what it added since the step began (events,
/// pages, stall time), or its level (a size). Trace facts (per step, drawn as bars), the zones'
/// watermarks (the free memory panel's reference lines), settings and other levels without a
/// size are left out.
fn how(term: &str) -> Option<(&'static str, Draw)> {
    let elsewhere = ["trace.", "v1.", "lru_gen.", "zoneinfo."];
    if elsewhere.iter().any(|p| term.starts_with(p)) {
        return None;
    }
    let grows = guest::counters::cumulative(term);
    let since = |k: f64| Some(Draw::SinceStepStart(k));
    let (unit, draw) = match (units::unit_of(term), grows) {
        (Unit::Bytes, true) => ("MiB", since(1.0 / MIB)),
        (Unit::Bytes, false) => ("MiB", Some(Draw::Level(1.0 / MIB))),
        (Unit::Pages, true) => ("pages", since(1.0)),
        (Unit::Pages, false) => ("MiB", Some(Draw::Level(PAGE / MIB))),
        (Unit::Micros, true) => ("ms", since(0.001)),
        (Unit::Count, true) => ("events", since(1.0)),
        (Unit::Micros | Unit::Count, false) => return None,
    };
    draw.map(|d| (unit, d))
}

/// A counter in words: its group first (`B: memory.events oom`), or the file it is in.
fn words(term: &str) -> String {
    match term.rsplit_once('/') {
        Some((cg, rest)) => match rest.split_once('.').and_then(|(f, k)| {
            let (file, key) = k.split_once('.')?;
            Some((format!("{f}.{file}"), key))
        }) {
            Some((file, key)) => format!("{cg}: {file} {key}"),
            None => format!("{cg}: {rest}"),
        },
        None => match term.split_once('.') {
            Some(("vmstat", key)) => format!("{key} (/proc/vmstat)"),
            Some(("meminfo", key)) => format!("{key} (/proc/meminfo)"),
            _ => term.to_string(),
        },
    }
}
