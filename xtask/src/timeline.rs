//! The timeline of a run: memory and reclaim activity over time, as an SVG chart and as a
//! compact terminal chart.
//!
//! The SVG is written by hand (about a hundred lines) rather than with a plotting crate: the
//! maintained ones (plotters) need a font stack, fontconfig or a bundled TTF, just to lay out
//! axis labels, and that would be a system dependency for two line charts.

use std::fmt::Write;

/// One line of a chart: a name and (seconds, value) points.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A panel: a title, the unit of its y axis, and its series.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    pub title: String,
    pub unit: String,
    pub series: Vec<Series>,
}

const COLORS: &[&str] = &[
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A "nice" upper bound for an axis (1, 2 or 5 times a power of ten).
fn nice_max(x: f64) -> f64 {
    if x <= 0.0 || !x.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(x.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|v| *v >= x)
        .unwrap_or(10.0 * p)
}

/// Renders panels stacked vertically, sharing the time axis; `marks` are (seconds, label)
/// vertical lines, e.g. step starts; `spans` are (start, end, who) intervals, e.g. reclaim
/// episodes from the trace, drawn as bars, one row per `who`, under the last panel.
pub fn svg(
    title: &str,
    panels: &[Panel],
    marks: &[(f64, String)],
    spans: &[(f64, f64, String)],
) -> String {
    let (w, ph, left, right, top) = (1040.0, 260.0, 80.0, 320.0, 40.0);
    let pw = w - left - right;
    let mut rows: Vec<&str> = Vec::new();
    for (_, _, who) in spans {
        if !rows.contains(&who.as_str()) {
            rows.push(who);
        }
    }
    let h = top
        + panels.len() as f64 * (ph + 50.0)
        + 20.0
        + rows.len() as f64 * 18.0
        + if rows.is_empty() { 0.0 } else { 30.0 };
    let t_max = nice_max(
        panels
            .iter()
            .flat_map(|p| &p.series)
            .flat_map(|s| &s.points)
            .map(|p| p.0)
            .fold(0.0, f64::max),
    );
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(out, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
    let _ = writeln!(
        out,
        "<text x=\"{left}\" y=\"24\" font-size=\"16\">{}</text>",
        esc(title)
    );
    for (i, panel) in panels.iter().enumerate() {
        let y0 = top + i as f64 * (ph + 50.0) + 20.0;
        let v_max = nice_max(
            panel
                .series
                .iter()
                .flat_map(|s| &s.points)
                .map(|p| p.1)
                .fold(0.0, f64::max),
        );
        let x = |t: f64| left + t / t_max * pw;
        let y = |v: f64| y0 + ph - v / v_max * ph;
        let _ = writeln!(out, "<g class=\"panel\">");
        let _ = writeln!(
            out,
            "<text x=\"{left}\" y=\"{}\" font-size=\"13\">{}</text>",
            y0 - 6.0,
            esc(&panel.title)
        );
        let _ = writeln!(
            out,
            "<rect x=\"{left}\" y=\"{y0}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#888\"/>"
        );
        for k in 0..=4 {
            let v = v_max * k as f64 / 4.0;
            let (x2, yv, xl, yl, label) = (left + pw, y(v), left - 6.0, y(v) + 4.0, fmt_num(v));
            let _ = writeln!(
                out,
                "<line x1=\"{left}\" x2=\"{x2}\" y1=\"{yv}\" y2=\"{yv}\" stroke=\"#eee\"/><text x=\"{xl}\" y=\"{yl}\" text-anchor=\"end\">{label}</text>"
            );
        }
        let _ = writeln!(
            out,
            "<text x=\"14\" y=\"{}\" transform=\"rotate(-90 14 {0})\" text-anchor=\"middle\">{}</text>",
            y0 + ph / 2.0,
            esc(&panel.unit)
        );
        for k in 0..=5 {
            let t = t_max * k as f64 / 5.0;
            let _ = writeln!(
                out,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}s</text>",
                x(t),
                y0 + ph + 16.0,
                fmt_num(t)
            );
        }
        for (t, label) in marks {
            let _ = writeln!(
                out,
                "<line x1=\"{0}\" x2=\"{0}\" y1=\"{y0}\" y2=\"{1}\" stroke=\"#aaa\" stroke-dasharray=\"4 3\"/><text x=\"{2}\" y=\"{3}\" fill=\"#666\">{4}</text>",
                x(*t),
                y0 + ph,
                x(*t) + 3.0,
                y0 + 12.0,
                esc(label)
            );
        }
        for (j, s) in panel.series.iter().enumerate() {
            let color = COLORS[j % COLORS.len()];
            let pts: Vec<String> = s
                .points
                .iter()
                .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
                .collect();
            let _ = writeln!(
                out,
                "<polyline class=\"series\" data-name=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>",
                esc(&s.name),
                pts.join(" ")
            );
            let ly = y0 + 14.0 + j as f64 * 18.0;
            let _ = writeln!(
                out,
                "<line x1=\"{0}\" x2=\"{1}\" y1=\"{ly}\" y2=\"{ly}\" stroke=\"{color}\" stroke-width=\"3\"/><text x=\"{2}\" y=\"{3}\">{4}</text>",
                left + pw + 10.0,
                left + pw + 30.0,
                left + pw + 36.0,
                ly + 4.0,
                esc(&s.name)
            );
        }
        let _ = writeln!(out, "</g>");
    }
    if !rows.is_empty() {
        let y0 = top + panels.len() as f64 * (ph + 50.0) + 10.0;
        let x = |t: f64| left + t / t_max * pw;
        let _ = writeln!(
            out,
            "<g class=\"spans\"><text x=\"{left}\" y=\"{y0}\" font-size=\"13\">reclaim episodes and kswapd wake-ups (trace)</text>"
        );
        for (r, who) in rows.iter().enumerate() {
            let y = y0 + 8.0 + r as f64 * 18.0;
            let color = COLORS[(r + 3) % COLORS.len()];
            let _ = writeln!(
                out,
                "<text x=\"{}\" y=\"{}\">{}</text>",
                left + pw + 10.0,
                y + 11.0,
                esc(who)
            );
            for (a, b, w) in spans.iter().filter(|s| s.2 == *who) {
                let _ = w;
                let width = (x(*b) - x(*a)).max(1.0);
                let _ = writeln!(
                    out,
                    "<rect class=\"span\" x=\"{:.1}\" y=\"{y}\" width=\"{width:.1}\" height=\"14\" fill=\"{color}\" fill-opacity=\"0.7\"/>",
                    x(*a)
                );
            }
        }
        let _ = writeln!(out, "</g>");
    }
    out.push_str("</svg>\n");
    out
}

fn fmt_num(v: f64) -> String {
    if v >= 10.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// A one-line chart of a series in block characters, scaled to its own maximum.
pub fn sparkline(values: &[f64]) -> String {
    const BLOCKS: &[char] = &['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let max = values.iter().cloned().fold(0.0, f64::max);
    values
        .iter()
        .map(|v| {
            if max <= 0.0 {
                BLOCKS[0]
            } else {
                BLOCKS[((v / max) * 7.0).round().clamp(0.0, 7.0) as usize]
            }
        })
        .collect()
}

/// Per-interval rates (per second) of a cumulative counter's points.
pub fn rates(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    points
        .windows(2)
        .map(|w| {
            let dt = (w[1].0 - w[0].0).max(1e-3);
            (w[1].0, ((w[1].1 - w[0].1) / dt).max(0.0))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn panel() -> Panel {
        Panel {
            title: "memory".into(),
            unit: "MiB".into(),
            series: vec![
                Series {
                    name: "W/memory.current".into(),
                    points: vec![(0.0, 0.0), (0.5, 20.0), (1.0, 32.0)],
                },
                Series {
                    name: "MemFree <&>".into(),
                    points: vec![(0.0, 200.0), (1.0, 150.0)],
                },
            ],
        }
    }

    #[test]
    fn svg_has_one_polyline_per_series_and_escapes_names() {
        let spans = vec![
            (0.1, 0.2, "W memcg reclaim".to_string()),
            (0.3, 0.3, "kswapd0 awake".to_string()),
        ];
        let s = svg(
            "lab <2>",
            &[panel(), panel()],
            &[(0.5, "step read".into())],
            &spans,
        );
        assert_eq!(s.matches("<rect class=\"span\"").count(), 2);
        assert_eq!(s.matches("<polyline class=\"series\"").count(), 4);
        assert!(s.contains("data-name=\"MemFree &lt;&amp;&gt;\""));
        assert!(s.contains("lab &lt;2&gt;"));
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn nice_bounds() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(3.0), 5.0);
        assert_eq!(nice_max(11.0), 20.0);
        assert_eq!(nice_max(200.0), 200.0);
    }

    #[test]
    fn sparklines_and_rates() {
        assert_eq!(sparkline(&[0.0, 1.0, 2.0]), "▁▅█");
        assert_eq!(sparkline(&[0.0, 0.0]), "▁▁");
        assert_eq!(
            rates(&[(0.0, 0.0), (0.5, 100.0), (1.0, 100.0)]),
            vec![(0.5, 200.0), (1.0, 0.0)]
        );
    }
}
