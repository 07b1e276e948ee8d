//! The timeline chart of a run, drawn from a [`Chart`] (built by `chart.rs`): panels stacked
//! one per idea, each step its own column with its own time axis, reference lines (limits,
//! watermarks, the guest's RAM), trace bars; as an SVG and as terminal sparklines.
//!
//! The SVG is written by hand (a few hundred lines) rather than with a plotting crate: the
//! maintained ones (plotters) need a font stack, fontconfig or a bundled TTF, just to lay out
//! axis labels, and that would be a system dependency for line charts.

use std::collections::BTreeMap;
use std::fmt::Write;

/// One line of a panel: what it shows in words, the counter it is drawn from, and its points
/// as (step index, seconds since that step started, value in the panel's unit).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub label: String,
    pub counter: String,
    pub points: Vec<(usize, f64, f64)>,
    /// Drawn from each step's start and end samples only (a counter the timeline does not
    /// read, such as PSI): dotted, with a dot at each point.
    pub ends_only: bool,
    /// Whose it is: its colour follows it into every panel ([`Chart::color`]).
    pub whose: Whose,
}

/// Whose a line is, which decides its colour in every panel ([`Chart::color`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Whose {
    /// The whole machine's.
    Machine,
    /// A group's (`W`, `pod/app`) or a NUMA node's on a guest of several (`node 1`): one of
    /// [`Chart::owners`].
    Owner(String),
    /// A quantity drawn in one colour wherever it appears: a zone watermark, as a line of its
    /// own or as a reference line ([`watermark_color`]).
    Fixed(&'static str),
}

impl Whose {
    /// An owner's, or the whole machine's.
    pub fn of(owner: Option<&str>) -> Whose {
        owner.map_or(Whose::Machine, |o| Whose::Owner(o.to_string()))
    }
}

/// The colour of a zone watermark (`high`, `low`, `min`) in every panel: green where kswapd
/// stops, orange where it wakes, red below which allocations reclaim directly.
pub fn watermark_color(mark: &str) -> &'static str {
    match mark {
        "high" => "#2a8a2a",
        "low" => "#e08000",
        _ => "#c00000",
    }
}

/// A horizontal reference line (a limit, a watermark), over a range of steps.
#[derive(Debug, Clone, PartialEq)]
pub struct RefLine {
    pub label: String,
    pub value: f64,
    /// The steps it holds for (first, last), inclusive.
    pub steps: (usize, usize),
    pub color: RefColor,
}

/// The colour of a reference line.
#[derive(Debug, Clone, PartialEq)]
pub enum RefColor {
    /// A setting of no one's in particular: dark grey.
    Grey,
    /// That of this series of the panel (a group's limit beside its usage).
    Series(usize),
    /// That of this owner (a node's watermark) or quantity (the watermarks on a guest of one).
    Of(Whose),
}

/// A panel: one idea, a title in words, the unit of its y axis, its series and references.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    pub title: String,
    pub unit: String,
    pub series: Vec<Series>,
    pub refs: Vec<RefLine>,
    /// The top of the y axis (e.g. the guest's RAM); `None`: from the data and references.
    pub y_max: Option<f64>,
    /// A zoomed panel: `y_max` is its top whatever the data, and lines above it are cut off.
    pub clip: bool,
}

/// A step's column: its name and how long it ran (seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct StepColumn {
    pub name: String,
    pub secs: f64,
}

/// A moment worth a vertical line, e.g. an OOM kill: (step, seconds into it, label).
pub type Mark = (usize, f64, String);

/// An interval from the trace: (step, start s, end s, who).
pub type Span = (usize, f64, f64, String);

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Chart {
    pub title: String,
    pub steps: Vec<StepColumn>,
    pub panels: Vec<Panel>,
    pub marks: Vec<Mark>,
    pub spans: Vec<Span>,
    /// The groups and NUMA nodes lines belong to, in order: each has a colour of its own
    /// ([`Chart::color`]).
    pub owners: Vec<String>,
}

/// The whole machine's colour first, then the owners'.
pub const COLORS: &[&str] = &[
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// The owner a trace row names (`pod/app memcg reclaim`; `kswapd1 awake`: `node 1`), if it is
/// one of `owners`.
pub fn owner_of_who<'a>(owners: &'a [String], who: &str) -> Option<&'a str> {
    let (first, _) = who.split_once(' ')?;
    let node = (first.strip_prefix("kswapd")).map(|n| format!("node {n}"));
    (owners.iter())
        .find(|o| {
            who.strip_prefix(o.as_str())
                .is_some_and(|r| r.starts_with(' '))
        })
        .or_else(|| owners.iter().find(|o| Some(o.as_str()) == node.as_deref()))
        .map(|o| o.as_str())
}

/// The layout of the SVG, shared with the notebook's hover script.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Geometry {
    pub width: f64,
    pub left: f64,
    pub plot: f64,
    pub top: f64,
    pub panel: f64,
    pub gap: f64,
}

pub const GEOMETRY: Geometry = Geometry {
    width: 1060.0,
    left: 78.0,
    plot: 640.0,
    top: 58.0,
    panel: 170.0,
    gap: 64.0,
};

pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A "nice" upper bound for an axis: 1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8 times a power of ten.
pub fn nice_max(x: f64) -> f64 {
    if x <= 0.0 || !x.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(x.log10().floor());
    [1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|v| *v >= x * 0.9999)
        .unwrap_or(10.0 * p)
}

impl Chart {
    /// The colour of a line, the same in every panel: the lines of one owner in one panel are
    /// told apart by their dashes and markers.
    pub fn color(&self, whose: &Whose) -> &'static str {
        match whose {
            Whose::Fixed(color) => color,
            Whose::Owner(o) => match self.owners.iter().position(|x| x == o) {
                Some(i) => COLORS[1 + i % (COLORS.len() - 1)],
                None => COLORS[0],
            },
            Whose::Machine => COLORS[0],
        }
    }

    /// Where each step's column starts and how wide it is (in plot pixels): proportional to
    /// its time, but never narrower than a tenth of the plot (or an equal share) so that a
    /// 50 ms step shows its shape beside a 10 s one.
    pub fn columns(&self, plot: f64) -> Vec<(f64, f64)> {
        let n = self.steps.len().max(1) as f64;
        let gap = 8.0;
        let usable = plot - gap * (n - 1.0);
        let min = (usable / 10.0).min(usable / n);
        let total: f64 = self.steps.iter().map(|s| s.secs.max(1e-3)).sum();
        let mut w: Vec<f64> = self
            .steps
            .iter()
            .map(|s| usable * s.secs.max(1e-3) / total)
            .collect();
        // Raise the narrow ones to the minimum, taking the room from the wide ones.
        for _ in 0..4 {
            let short: f64 = w.iter().filter(|x| **x < min).map(|x| min - x).sum();
            let wide: f64 = w.iter().filter(|x| **x > min).map(|x| x - min).sum();
            if short <= 0.0 || wide <= 0.0 {
                break;
            }
            let k = (short / wide).min(1.0);
            for x in w.iter_mut() {
                *x = if *x < min { min } else { *x - (*x - min) * k };
            }
        }
        let mut x = 0.0;
        w.iter()
            .map(|wi| {
                let c = (x, *wi);
                x += wi + gap;
                c
            })
            .collect()
    }

    /// The x pixel of (step, seconds into it).
    pub fn x(&self, cols: &[(f64, f64)], g: &Geometry, step: usize, t: f64) -> f64 {
        let (x0, w) = cols.get(step).copied().unwrap_or((0.0, 0.0));
        let secs = self
            .steps
            .get(step)
            .map(|s| s.secs)
            .unwrap_or(1.0)
            .max(1e-3);
        g.left + x0 + (t / secs).clamp(0.0, 1.0) * w
    }

    pub fn height(&self, g: &Geometry) -> f64 {
        let rows = self.span_rows().len() as f64;
        let spans = if rows > 0.0 { 36.0 + rows * 18.0 } else { 0.0 };
        g.top + self.panels.len() as f64 * (g.panel + g.gap) + spans + 8.0
    }

    fn span_rows(&self) -> Vec<&str> {
        let mut rows: Vec<&str> = Vec::new();
        for (_, _, _, who) in &self.spans {
            if !rows.contains(&who.as_str()) {
                rows.push(who);
            }
        }
        rows
    }

    /// The top of a panel's y axis.
    pub fn panel_max(p: &Panel) -> f64 {
        let data = p
            .series
            .iter()
            .flat_map(|s| &s.points)
            .map(|p| p.2)
            .chain(p.refs.iter().map(|r| r.value))
            .fold(0.0, f64::max);
        match p.y_max {
            Some(m) if p.clip => m,
            Some(m) => m.max(data),
            None if data <= 0.0 => 4.0,
            None => nice_max(data * 1.08),
        }
    }
}

/// A round spacing for axis labels, at least `x`: 1, 2, 2.5 or 5 times a power of ten.
pub fn nice_step(x: f64) -> f64 {
    if x <= 0.0 || !x.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(x.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|v| *v >= x * 0.9999)
        .unwrap_or(10.0 * p)
}

/// Tick spacing for a step's time axis: about one label per 70 pixels.
fn time_step(secs: f64, width: f64) -> f64 {
    let want = secs / (width / 70.0).max(1.0);
    [
        0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0,
    ]
    .into_iter()
    .find(|s| *s >= want)
    .unwrap_or(120.0)
}

pub fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 || v == 0.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}").trim_end_matches(".0").to_string()
    } else if a >= 1.0 {
        format!("{v:.2}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    } else {
        format!("{v:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}

fn fmt_secs(t: f64) -> String {
    format!("{}s", fmt_num(t))
}

/// The chart as a standalone SVG. Series are `<path class="series" data-counter=...>`, one per
/// counter (a zoomed panel's copies are `class="series zoomed"`); every step is a column with
/// its name on top.
pub fn svg(chart: &Chart) -> String {
    let g = GEOMETRY;
    let cols = chart.columns(g.plot);
    let h = chart.height(&g);
    let w = g.width;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"timeline\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(out, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"22\" font-size=\"16\">{}</text>",
        g.left,
        esc(&chart.title)
    );
    for (i, s) in chart.steps.iter().enumerate() {
        let (x0, wi) = cols[i];
        // About 7 pixels a character: a long name in a narrow column is cut short.
        let fits = ((wi / 7.0) as usize).max(3);
        let mut name: String = s.name.chars().take(fits).collect();
        if name.len() < s.name.len() {
            name.pop();
            name.push('…');
        }
        let _ = writeln!(
            out,
            "<text class=\"step-name\" x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\" font-weight=\"bold\"><title>step {}</title>{}</text>",
            g.left + x0 + wi / 2.0,
            g.top - 14.0,
            esc(&s.name),
            esc(&name)
        );
    }
    for (i, panel) in chart.panels.iter().enumerate() {
        let y0 = g.top + i as f64 * (g.panel + g.gap) + 18.0;
        panel_svg(&mut out, chart, panel, i, y0, &cols);
    }
    spans_svg(&mut out, chart, &cols);
    out.push_str("</svg>\n");
    out
}

/// A panel's vertical scale: value to y pixel, from its top `y0` and axis maximum.
#[derive(Clone, Copy)]
struct YScale {
    y0: f64,
    v_max: f64,
    /// How far past the axis a line may go, as fractions of it (a zoomed panel's lines run
    /// on above its top, where its clip path cuts them).
    lo: f64,
    hi: f64,
}

impl YScale {
    fn new(panel: &Panel, y0: f64) -> YScale {
        let (lo, hi) = if panel.clip {
            (-1.0, 50.0)
        } else {
            (-0.02, 1.04)
        };
        YScale {
            y0,
            v_max: Chart::panel_max(panel),
            lo,
            hi,
        }
    }

    fn y(&self, v: f64) -> f64 {
        let g = GEOMETRY;
        self.y0 + g.panel - (v / self.v_max).clamp(self.lo, self.hi) * g.panel
    }
}

fn panel_svg(
    out: &mut String,
    chart: &Chart,
    panel: &Panel,
    index: usize,
    y0: f64,
    cols: &[(f64, f64)],
) {
    let g = GEOMETRY;
    let scale = YScale::new(panel, y0);
    let v_max = scale.v_max;
    let clip = if panel.clip {
        let _ = writeln!(
            out,
            "<clipPath id=\"clip{index}\"><rect x=\"{}\" y=\"{y0}\" width=\"{}\" height=\"{}\"/></clipPath>",
            g.left, g.plot, g.panel
        );
        format!(" clip-path=\"url(#clip{index})\"")
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "<g class=\"panel\" data-panel=\"{index}\" data-y0=\"{y0}\" data-vmax=\"{v_max}\">"
    );
    title_svg(out, &panel.title, y0);
    y_axis_svg(out, panel, scale);
    columns_svg(out, chart, y0, cols);
    let mut legend = Legend {
        x: g.left + g.plot + 14.0,
        y: y0 + 10.0,
    };
    series_svg(out, chart, panel, scale, &clip, cols, &mut legend);
    refs_svg(out, chart, panel, scale, cols, &mut legend);
    marks_svg(out, chart, y0, cols);
    let _ = writeln!(out, "</g>");
}

/// A panel's title above it: on two lines when long (a lab's headline claim), cut short after
/// that, the whole title as its tooltip.
fn title_svg(out: &mut String, title: &str, y0: f64) {
    // About 7.6 pixels a character in 13px bold over the chart's width.
    let per_line = ((GEOMETRY.width - GEOMETRY.left - 8.0) / 7.6) as usize;
    let mut lines: Vec<String> = crate::units::wrap(title, per_line, "", "")
        .lines()
        .map(String::from)
        .collect();
    if lines.len() > 2 {
        lines.truncate(2);
        let cut: String = lines[1].chars().take(per_line - 1).collect();
        lines[1] = format!("{}…", cut.trim_end());
    }
    let top = y0 - 7.0 - 14.0 * (lines.len() - 1) as f64;
    for (k, line) in lines.iter().enumerate() {
        let _ = writeln!(
            out,
            "<text class=\"panel-title\" x=\"{}\" y=\"{}\" font-size=\"13\" font-weight=\"bold\"><title>{}</title>{}</text>",
            GEOMETRY.left,
            top + 14.0 * k as f64,
            esc(title),
            esc(line)
        );
    }
}

/// The y axis: a grid line and a value at round steps, and the unit on the side.
fn y_axis_svg(out: &mut String, panel: &Panel, scale: YScale) {
    let g = GEOMETRY;
    let tick = nice_step(scale.v_max / 4.0);
    for k in 0..=((scale.v_max / tick + 1e-6).floor() as usize) {
        let v = tick * k as f64;
        let _ = writeln!(
            out,
            "<line x1=\"{}\" x2=\"{}\" y1=\"{yv:.1}\" y2=\"{yv:.1}\" stroke=\"#eee\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            g.left,
            g.left + g.plot,
            g.left - 6.0,
            scale.y(v) + 4.0,
            fmt_num(v),
            yv = scale.y(v)
        );
    }
    let _ = writeln!(
        out,
        "<text x=\"16\" y=\"{0}\" transform=\"rotate(-90 16 {0})\" text-anchor=\"middle\">{1}</text>",
        scale.y0 + g.panel / 2.0,
        esc(&panel.unit)
    );
}

/// Each step's column: its frame and its time axis.
fn columns_svg(out: &mut String, chart: &Chart, y0: f64, cols: &[(f64, f64)]) {
    let g = GEOMETRY;
    for (si, s) in chart.steps.iter().enumerate() {
        let (x0, wi) = cols[si];
        let _ = writeln!(
            out,
            "<rect class=\"column\" x=\"{:.1}\" y=\"{y0}\" width=\"{wi:.1}\" height=\"{}\" fill=\"none\" stroke=\"#999\"/>",
            g.left + x0,
            g.panel
        );
        let dt = time_step(s.secs, wi);
        let mut t = 0.0;
        while t <= s.secs + 1e-9 {
            let x = chart.x(cols, &g, si, t);
            if t > 0.0 && x > g.left + x0 + wi - 14.0 {
                break; // no label against the next column's "0s"
            }
            let _ = writeln!(
                out,
                "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{}\" y2=\"{}\" stroke=\"#999\"/><text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\" font-size=\"10\" fill=\"#555\">{}</text>",
                y0 + g.panel,
                y0 + g.panel + 4.0,
                y0 + g.panel + 15.0,
                fmt_secs(t)
            );
            t += dt;
        }
    }
}

/// Where the next legend entry of a panel goes.
struct Legend {
    x: f64,
    y: f64,
}

impl Legend {
    /// An entry: a short line in the series' style with its `mark` (an SVG element, drawn
    /// on it at `x + 10`), and its label (on two lines when long).
    fn entry(&mut self, out: &mut String, style: &str, mark: &str, label: &str) {
        let (lx, ly) = (self.x, self.y);
        let _ = write!(
            out,
            "<line x1=\"{lx}\" x2=\"{}\" y1=\"{ly}\" y2=\"{ly}\"{style}/>{}",
            lx + 20.0,
            mark.trim_end()
        );
        let _ = write!(out, "<text x=\"{}\" y=\"{}\">", lx + 26.0, ly + 4.0);
        // About 6.6 pixels a character: what fits right of the plot.
        let fits = ((GEOMETRY.width - lx - 30.0) / 6.6) as usize;
        let wrapped = crate::units::wrap(label, fits, "", "");
        for (k, line) in wrapped.lines().enumerate() {
            let _ = write!(
                out,
                "<tspan x=\"{}\" dy=\"{}\">{}</tspan>",
                lx + 26.0,
                if k == 0 { 0.0 } else { 14.0 },
                esc(line)
            );
            self.y += if k == 0 { 16.0 } else { 14.0 };
        }
        out.push_str("</text>\n");
    }
}

/// How the lines of one colour (one group's, one node's, or the whole machine's) in a panel
/// are told apart: the first plain, each later one with a dash pattern and a hollow marker of
/// its own (the marker shows even where the line lies on an earlier one of its colour).
const DASHES: [&str; 4] = ["", "9 4", "3 3", "9 3 2 3"];
const MARKERS: usize = 5;

/// A panel line's look: its colour, dashes, marker shape (0: none), width, and whether it was
/// read at each step's start and end only.
struct Look {
    color: &'static str,
    dash: &'static str,
    marker: usize,
    width: f64,
    ends_only: bool,
}

/// The look of each of a panel's lines: its owner's colour; among the lines of that colour,
/// its rank picks its dashes and marker. A plain line lying on an earlier one (most of its
/// samples within 2 px) is dashed, so that both show; earlier lines are drawn wider.
fn looks(chart: &Chart, panel: &Panel, scale: YScale) -> Vec<Look> {
    let mut drawn: Vec<BTreeMap<(usize, u64), f64>> = Vec::new();
    let mut looks: Vec<Look> = Vec::new();
    for (j, s) in panel.series.iter().enumerate() {
        let color = chart.color(&s.whose);
        let rank = looks.iter().filter(|l| l.color == color).count();
        let ys: BTreeMap<(usize, u64), f64> = (s.points.iter())
            .map(|(step, t, v)| ((*step, t.to_bits()), scale.y(*v)))
            .collect();
        let hidden = ys.len() > 1
            && drawn.iter().any(|e| {
                let on = (ys.iter())
                    .filter(|(k, y)| e.get(k).is_some_and(|ey| (ey - *y).abs() <= 2.0))
                    .count();
                on * 5 >= ys.len() * 4
            });
        drawn.push(ys);
        let dash = match (s.ends_only, rank, hidden) {
            (true, _, _) => "2 5",
            (false, 0, true) => "6 5",
            (false, r, _) => DASHES[r % DASHES.len()],
        };
        looks.push(Look {
            color,
            dash,
            marker: rank % MARKERS,
            ends_only: s.ends_only,
            width: match s.ends_only {
                true => 1.5,
                false => (3.5 - 0.5 * j as f64).max(1.5),
            },
        });
    }
    looks
}

impl Look {
    /// Its mark at (x, y), of `class`: a dot for the first line of its colour read at the step's
    /// start and end only, else its hollow marker (1-4: circle, square, triangle, diamond;
    /// none for the first line of its colour).
    fn mark(&self, (x, y): (f64, f64), class: &str, clip: &str) -> String {
        let color = self.color;
        let d = match (self.ends_only, self.marker) {
            (true, 0) => {
                return format!(
                    "<circle class=\"{class}\" cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"4\" fill=\"{color}\"{clip}/>\n"
                );
            }
            (false, 0) => return String::new(),
            (_, 1) => format!(
                "M{:.1},{y:.1} a3.5,3.5 0 1,0 7,0 a3.5,3.5 0 1,0 -7,0",
                x - 3.5
            ),
            (_, 2) => format!("M{:.1},{:.1} h6 v6 h-6 z", x - 3.0, y - 3.0),
            (_, 3) => format!("M{x:.1},{:.1} l4,7 h-8 z", y - 4.5),
            _ => format!("M{x:.1},{:.1} l4,4 l-4,4 l-4,-4 z", y - 4.0),
        };
        format!(
            "<path class=\"{class}\" d=\"{d}\" fill=\"white\" stroke=\"{color}\" stroke-width=\"1.5\"{clip}/>\n"
        )
    }
}

/// Where a line's markers go: every 48 px along each step's part of it, from an offset of its
/// own (`phase`), so that two lines lying on each other show both their markers; a lone
/// sample gets one.
fn marker_spots(px: &[(usize, f64, f64)], phase: f64) -> Vec<(f64, f64)> {
    let mut spots = Vec::new();
    for part in px.chunk_by(|a, b| a.0 == b.0) {
        if let [(_, x, y)] = part {
            spots.push((*x, *y));
        }
        let mut next = part[0].1 + phase;
        for w in part.windows(2) {
            let ((_, xa, ya), (_, xb, yb)) = (w[0], w[1]);
            while next <= xb && xb > xa {
                let f = ((next - xa) / (xb - xa)).clamp(0.0, 1.0);
                spots.push((next, ya + f * (yb - ya)));
                next += 48.0;
            }
        }
    }
    spots
}

/// A line's marks: one at each sample of a series read at each step's start and end only,
/// else one every 48 px.
fn markers_svg(out: &mut String, look: &Look, px: &[(usize, f64, f64)], clip: &str) {
    let spots = match look.ends_only {
        true => px.iter().map(|&(_, x, y)| (x, y)).collect(),
        false => marker_spots(px, 6.0 + 10.0 * look.marker as f64),
    };
    let class = if look.ends_only {
        "end-sample"
    } else {
        "marker"
    };
    for spot in spots {
        out.push_str(&look.mark(spot, class, clip));
    }
}

/// The panel's lines, each with its legend entry.
fn series_svg(
    out: &mut String,
    chart: &Chart,
    panel: &Panel,
    scale: YScale,
    clip: &str,
    cols: &[(f64, f64)],
    legend: &mut Legend,
) {
    let g = GEOMETRY;
    for (s, look) in panel.series.iter().zip(looks(chart, panel, scale)) {
        let px: Vec<(usize, f64, f64)> = (s.points.iter())
            .map(|(step, t, v)| (*step, chart.x(cols, &g, *step, *t), scale.y(*v)))
            .collect();
        let mut d = String::new();
        for (k, &(step, x, yv)) in px.iter().enumerate() {
            let first = k == 0 || px[k - 1].0 != step;
            let _ = write!(d, "{}{x:.1},{yv:.1} ", if first { 'M' } else { 'L' });
            if first && px.get(k + 1).is_none_or(|n| n.0 != step) {
                let _ = write!(d, "L{x:.1},{yv:.1} "); // a lone sample: a dot
            }
        }
        // A series read at a step's start and end only is its dots, joined faintly (what it
        // did in between is unknown).
        let faint = match s.ends_only {
            true => " stroke-opacity=\"0.5\"",
            false => "",
        };
        let (color, width) = (look.color, look.width);
        let dash = match look.dash {
            "" => String::new(),
            d => format!(" stroke-dasharray=\"{d}\""),
        };
        let _ = writeln!(
            out,
            "<path class=\"series{}\" data-counter=\"{}\" data-label=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"{width}\"{faint}{dash} stroke-linejoin=\"round\" stroke-linecap=\"round\"{clip} d=\"{}\"/>",
            if panel.clip { " zoomed" } else { "" },
            esc(&s.counter),
            esc(&s.label),
            d.trim_end()
        );
        markers_svg(out, &look, &px, clip);
        let style = format!(" stroke=\"{color}\" stroke-width=\"3\"{dash}");
        let mark = look.mark((legend.x + 10.0, legend.y), "legend-mark", "");
        legend.entry(out, &style, &mark, &s.label);
    }
}

/// The panel's reference lines (limits, watermarks, RAM), dashed, each labelled once in the
/// legend however many steps it is drawn over.
fn refs_svg(
    out: &mut String,
    chart: &Chart,
    panel: &Panel,
    scale: YScale,
    cols: &[(f64, f64)],
    legend: &mut Legend,
) {
    let g = GEOMETRY;
    for r in &panel.refs {
        let color = match &r.color {
            RefColor::Grey => None,
            RefColor::Series(j) => panel.series.get(*j).map(|s| chart.color(&s.whose)),
            RefColor::Of(whose) => Some(chart.color(whose)),
        }
        .unwrap_or("#444");
        let (a, b) = r.steps;
        let (xa, _) = cols.get(a).copied().unwrap_or((0.0, 0.0));
        let (xb, wb) = cols.get(b).copied().unwrap_or((0.0, 0.0));
        let yv = scale.y(r.value);
        let _ = writeln!(
            out,
            "<line class=\"ref\" x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{yv:.1}\" y2=\"{yv:.1}\" stroke=\"{color}\" stroke-width=\"1.5\" stroke-dasharray=\"7 4\"/>",
            g.left + xa,
            g.left + xb + wb
        );
        if a == 0
            || !panel
                .refs
                .iter()
                .any(|o| o.label == r.label && o.steps.1 + 1 == a)
        {
            let style =
                format!(" stroke=\"{color}\" stroke-width=\"1.5\" stroke-dasharray=\"7 4\"");
            legend.entry(out, &style, "", &r.label);
        }
    }
}

/// The chart's marks (OOM kills) across the panel, labelled on the side with room.
fn marks_svg(out: &mut String, chart: &Chart, y0: f64, cols: &[(f64, f64)]) {
    let g = GEOMETRY;
    for (step, t, label) in &chart.marks {
        let x = chart.x(cols, &g, *step, *t);
        let (tx, anchor) = match x > g.left + g.plot - 160.0 {
            true => (x - 3.0, "end"),
            false => (x + 3.0, "start"),
        };
        let _ = writeln!(
            out,
            "<line class=\"mark\" x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{y0}\" y2=\"{}\" stroke=\"#b00\" stroke-width=\"1.5\"/><text x=\"{tx:.1}\" y=\"{}\" text-anchor=\"{anchor}\" fill=\"#b00\" font-size=\"11\">{}</text>",
            y0 + g.panel,
            y0 + 12.0,
            esc(label)
        );
    }
}

fn spans_svg(out: &mut String, chart: &Chart, cols: &[(f64, f64)]) {
    let g = GEOMETRY;
    let rows = chart.span_rows();
    if rows.is_empty() {
        return;
    }
    let y0 = g.top + chart.panels.len() as f64 * (g.panel + g.gap) + 12.0;
    let _ = writeln!(
        out,
        "<g class=\"spans\"><text x=\"{}\" y=\"{y0}\" font-size=\"13\" font-weight=\"bold\">Who was reclaiming, and when (vmscan trace)</text>",
        g.left
    );
    for (r, who) in rows.iter().enumerate() {
        let y = y0 + 10.0 + r as f64 * 18.0;
        let color = chart.color(&Whose::of(owner_of_who(&chart.owners, who)));
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\">{}</text>",
            g.left + g.plot + 14.0,
            y + 11.0,
            esc(who)
        );
        for (si, (x0, wi)) in cols.iter().enumerate() {
            let _ = writeln!(
                out,
                "<rect x=\"{:.1}\" y=\"{y}\" width=\"{wi:.1}\" height=\"14\" fill=\"#f4f4f4\"/>",
                g.left + x0
            );
            for (_, a, b, _) in chart.spans.iter().filter(|s| s.0 == si && s.3 == *who) {
                let xa = chart.x(cols, &g, si, *a);
                let width = (chart.x(cols, &g, si, *b) - xa).max(1.0);
                let _ = writeln!(
                    out,
                    "<rect class=\"span\" x=\"{xa:.1}\" y=\"{y}\" width=\"{width:.1}\" height=\"14\" fill=\"{color}\" fill-opacity=\"0.8\"/>"
                );
            }
        }
    }
    let _ = writeln!(out, "</g>");
}

/// A one-line chart of a series in block characters, scaled from 0 (or its minimum, when it
/// never gets near 0) to its maximum.
pub fn sparkline(values: &[f64]) -> String {
    const BLOCKS: &[char] = &['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let max = values.iter().cloned().fold(f64::MIN, f64::max);
    let min = values.iter().cloned().fold(f64::MAX, f64::min);
    let floor = if min > 0.0 && min > max * 0.5 {
        min
    } else {
        0.0
    };
    values
        .iter()
        .map(|v| {
            if max <= floor {
                BLOCKS[0]
            } else {
                BLOCKS[(((v - floor) / (max - floor)) * 7.0)
                    .round()
                    .clamp(0.0, 7.0) as usize]
            }
        })
        .collect()
}

/// `n` values of a series at evenly spaced times over `secs`: at each, the last point at or
/// before it (samples are denser early in a step; a sparkline is read as even time).
pub fn resample(points: &[(f64, f64)], secs: f64, n: usize) -> Vec<f64> {
    if points.is_empty() {
        return Vec::new();
    }
    (0..n)
        .map(|k| {
            let t = secs * k as f64 / (n - 1).max(1) as f64;
            points
                .iter()
                .take_while(|p| p.0 <= t + 1e-9)
                .last()
                .unwrap_or(&points[0])
                .1
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart() -> Chart {
        Chart {
            title: "lab <2>".into(),
            steps: vec![
                StepColumn {
                    name: "read".into(),
                    secs: 2.0,
                },
                StepColumn {
                    name: "tiny".into(),
                    secs: 0.01,
                },
            ],
            panels: vec![Panel {
                title: "memory".into(),
                unit: "MiB".into(),
                series: vec![
                    Series {
                        label: "W: memory in use".into(),
                        counter: "W/memory.current".into(),
                        points: vec![
                            (0, 0.0, 0.0),
                            (0, 1.0, 20.0),
                            (0, 2.0, 32.0),
                            (1, 0.0, 32.0),
                        ],
                        ends_only: false,
                        whose: Whose::Owner("W".into()),
                    },
                    Series {
                        label: "free <&>".into(),
                        counter: "meminfo.MemFree".into(),
                        points: vec![(0, 0.0, 200.0), (1, 0.01, 150.0)],
                        ends_only: false,
                        whose: Whose::Machine,
                    },
                ],
                refs: vec![RefLine {
                    label: "W: memory.max 32M".into(),
                    value: 32.0,
                    steps: (0, 1),
                    color: RefColor::Series(0),
                }],
                y_max: Some(256.0),
                clip: false,
            }],
            marks: vec![(1, 0.005, "OOM kill: tiny".into())],
            spans: vec![
                (0, 0.1, 0.2, "W memcg reclaim".into()),
                (0, 0.3, 0.3, "kswapd0 awake".into()),
            ],
            owners: vec!["W".into()],
        }
    }

    #[test]
    fn svg_has_one_path_per_series_with_its_counter_and_escapes() {
        let s = svg(&chart());
        assert_eq!(s.matches("<path class=\"series\"").count(), 2);
        assert!(s.contains("data-counter=\"W/memory.current\""));
        assert!(s.contains("data-label=\"free &lt;&amp;&gt;\""));
        assert!(s.contains("lab &lt;2&gt;"));
        assert_eq!(s.matches("<rect class=\"span\"").count(), 2);
        assert_eq!(s.matches("<line class=\"ref\"").count(), 1);
        assert!(s.contains("OOM kill: tiny"));
        // A series starts a new subpath in each step's column; a lone sample is a dot.
        assert_eq!(s.matches(" M").count() + s.matches("d=\"M").count(), 4);
        assert!(s.contains("<title>step tiny</title>"));
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        roxmltree::Document::parse(&s).unwrap();
    }

    #[test]
    fn a_line_lying_on_an_earlier_one_is_dashed() {
        let mut c = chart();
        assert!(!svg(&c).contains("stroke-dasharray=\"6 5\""));
        let mut copy = c.panels[0].series[0].clone();
        copy.label = "V: the same".into();
        copy.whose = Whose::Owner("V".into());
        c.owners.push("V".into());
        c.panels[0].series.push(copy);
        let s = svg(&c);
        // The copy's line and its legend entry, not the first two.
        assert_eq!(s.matches("stroke-dasharray=\"6 5\"").count(), 2);
        let copy_path = s
            .lines()
            .find(|l| l.contains("data-label=\"V: the same\""))
            .unwrap();
        assert!(copy_path.contains("stroke-dasharray"), "{copy_path}");
        assert!(!s.contains("class=\"marker\""));
    }

    #[test]
    fn a_groups_lines_share_its_colour_and_differ_in_dashes_and_markers() {
        let mut c = chart();
        let mut swap = c.panels[0].series[0].clone();
        swap.label = "W: in swap".into();
        swap.points = vec![(0, 0.0, 0.0), (0, 2.0, 0.0), (1, 0.0, 0.0)];
        c.panels[0].series.push(swap);
        let s = svg(&c);
        let line = |label: &str| {
            let l = s.lines().find(|l| l.contains(label)).unwrap();
            let attr = |a: &str| {
                l.split(a)
                    .nth(1)
                    .map(|r| r.split('"').nth(1).unwrap().to_string())
            };
            (attr(" stroke="), attr("stroke-dasharray="))
        };
        let (w, swap, free) = (line("W: memory in use"), line("W: in swap"), line("free"));
        assert_eq!(w.0, swap.0);
        assert_ne!(w.0, free.0);
        assert_eq!((w.1, free.1), (None, None));
        assert_eq!(swap.1.as_deref(), Some(DASHES[1]));
        // The second line of W's colour has hollow markers along it and in its legend entry.
        let markers = s.matches("class=\"marker\"").count();
        assert!(markers >= 3, "{markers}");
        assert_eq!(s.matches("class=\"legend-mark\"").count(), 1);
        assert!(s.contains(&format!("fill=\"white\" stroke=\"{}\"", w.0.unwrap())));
        // Its limit's line is drawn in its colour.
        assert_eq!(c.color(&Whose::Owner("W".into())), COLORS[1]);
        assert!(s.contains(&format!(
            "<line class=\"ref\" x1=\"78.0\" x2=\"718.0\" y1=\"{:.1}\" y2=\"{0:.1}\" stroke=\"{}\"",
            58.0 + 18.0 + 170.0 - 32.0 / 256.0 * 170.0,
            COLORS[1]
        )));
    }

    #[test]
    fn short_steps_get_a_readable_column() {
        let c = chart();
        let cols = c.columns(640.0);
        assert!(cols[1].1 >= 63.0, "{cols:?}");
        assert!(
            (cols[0].1 + cols[1].1 + 8.0 - 640.0).abs() < 1e-6,
            "{cols:?}"
        );
        assert!(cols[1].0 > cols[0].0 + cols[0].1);
    }

    #[test]
    fn nice_bounds() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(3.0), 3.0);
        assert_eq!(nice_max(11.0), 12.0);
        assert_eq!(nice_max(256.0), 300.0);
        assert_eq!(nice_max(35.2), 40.0);
        assert_eq!(nice_step(60.1), 100.0);
        assert_eq!(nice_step(10.0), 10.0);
        assert_eq!(nice_step(0.21), 0.25);
        // The guest's RAM is the top of the memory panels: 256M reads 256, not 500.
        let p = &chart().panels[0];
        assert_eq!(Chart::panel_max(p), 256.0);
    }

    #[test]
    fn sparklines_and_resampling() {
        assert_eq!(sparkline(&[0.0, 1.0, 2.0]), "▁▅█");
        assert_eq!(sparkline(&[0.0, 0.0]), "▁▁");
        assert_eq!(
            resample(&[(0.0, 1.0), (0.1, 2.0), (0.2, 3.0), (1.0, 9.0)], 1.0, 3),
            vec![1.0, 3.0, 9.0]
        );
    }
}
