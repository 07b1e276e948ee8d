//! `cargo xtask bench`: repeated warm runs of a lab with every phase timed, beside the boot floor
//! (the same kernel with an /init that powers off at once), as median and min-max.

use crate::lab::{self, LabDir, RunOptions};
use crate::progress::Phases;
use anyhow::{Result, bail};
use std::collections::BTreeMap;
use std::time::Duration;

/// One named figure over the runs, in seconds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Figure {
    pub name: String,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub samples: Vec<f64>,
}

pub fn figure(name: &str, mut samples: Vec<f64>) -> Figure {
    let mut sorted = samples.clone();
    sorted.sort_by(f64::total_cmp);
    let median = match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    };
    samples.shrink_to_fit();
    Figure {
        name: name.into(),
        median,
        min: *sorted.first().unwrap_or(&f64::NAN),
        max: *sorted.last().unwrap_or(&f64::NAN),
        samples,
    }
}

/// Runs the floor and the lab `runs` times each (after one warm-up of both) and returns figures
/// in display order.
impl crate::BenchArgs {
    /// `cargo xtask bench`: the figures as a table, or as JSON.
    pub fn run(self) -> Result<crate::exit::Exit> {
        let found = lab::resolve(&self.lab, &lab::catalog()?)?;
        let figures = bench(&found, &self.opts.options()?, self.runs.max(1))?;
        match self.json {
            true => println!("{}", serde_json::to_string_pretty(&figures)?),
            false => print!("{}", render(&found.id, self.runs, &figures)),
        }
        Ok(crate::exit::Exit::Passed)
    }
}

pub fn bench(lab: &LabDir, opts: &RunOptions, runs: usize) -> Result<Vec<Figure>> {
    let mut order: Vec<String> = Vec::new();
    let mut samples: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut record = |name: &str, d: Duration| {
        if !order.iter().any(|n| n == name) {
            order.push(name.to_string());
        }
        samples
            .entry(name.to_string())
            .or_default()
            .push(d.as_secs_f64());
    };
    let loaded = lab::load_to_run(lab, opts)?;
    let fragments = lab::kernel_fragments(&loaded.spec);
    let prepared = lab::prepare(opts, &fragments, &mut Phases::default())?;
    for i in 0..=runs {
        let floor = lab::floor(&prepared, &opts.kernel_args)?;
        let r = lab::execute_loaded(lab, &loaded, opts)?;
        if !r.passed() {
            lab::print(&r);
            bail!(
                "run {i} of {} failed: a benchmark of a failing lab means nothing",
                lab.id
            );
        }
        if i == 0 {
            continue; // warm-up: caches, page cache of the images
        }
        record(
            "floor (QEMU start to exit, /init powers off at once)",
            floor,
        );
        for (name, d) in &r.phases.list {
            record(&format!("host: {name}"), *d);
        }
        let ms = |m: u64| Duration::from_millis(m);
        if let (Some(ready), Some(end)) = (r.eval.ready_ms, r.eval.end_ms) {
            record("guest: boot to agent ready (uptime)", ms(ready));
            for s in &r.eval.steps {
                record(&format!("guest: step {}", s.name), ms(s.wall_ms));
            }
            record("guest: ready to end (steps + sampling)", ms(end - ready));
            let qemu = r
                .phases
                .list
                .iter()
                .find(|(n, _)| n == "qemu")
                .map(|(_, d)| *d)
                .unwrap_or_default();
            record(
                "qemu: outside guest uptime (start, load, power-off)",
                qemu.saturating_sub(ms(end)),
            );
        }
        record("total", r.total);
    }
    Ok(order
        .iter()
        .map(|n| figure(n, samples.remove(n).unwrap_or_default()))
        .collect())
}

pub fn render(lab: &str, runs: usize, figures: &[Figure]) -> String {
    let width = figures.iter().map(|f| f.name.len()).max().unwrap_or(10);
    let mut out = format!("bench {lab}: {runs} warm runs (after one warm-up), seconds\n");
    out.push_str(&format!(
        "{:<width$}  {:>7}  {:>7}  {:>7}\n",
        "phase", "median", "min", "max"
    ));
    for f in figures {
        out.push_str(&format!(
            "{:<width$}  {:>7.3}  {:>7.3}  {:>7.3}\n",
            f.name, f.median, f.min, f.max
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(figure("x", vec![3.0, 1.0, 2.0]).median, 2.0);
        assert_eq!(figure("x", vec![4.0, 1.0, 2.0, 3.0]).median, 2.5);
        let f = figure("x", vec![5.0, 1.0]);
        assert_eq!((f.min, f.max), (1.0, 5.0));
        assert!(figure("x", vec![]).median.is_nan());
    }
}
