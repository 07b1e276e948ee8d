//! The lab notebook: one self-contained HTML page per run, `target/kernel-lab/last/<id>/index.html`
//! (no network, no external script or style): the lab's question, the predictions and their
//! score, the chart (hover shows every value at that moment), the report with its
//! explanations, the expectations, the README's questions with their answers folded away, and
//! how the run went. `lab --open` opens it.

use crate::answers::{self, Qa};
use crate::chart;
use crate::exercise::Judgement;
use crate::lab::{LabDir, RunResult};
use crate::predict::{Outcome, Score};
use crate::report::{self, class};
use crate::timeline::{self, Chart, GEOMETRY, esc};
use crate::units::human_delta;
use anyhow::Result;
use guest::exercise::Exercise;
use std::fmt::Write;
use std::path::PathBuf;

/// What a notebook page shows beyond the run itself.
#[derive(Default)]
pub struct Extras<'a> {
    pub predictions: Option<&'a Score>,
    /// An exercise run, and whether the kernel agreed with it.
    pub exercise: Option<(&'a Exercise, &'a Judgement)>,
}

/// Writes the page next to the run's other files and returns its path.
pub fn write(lab: &LabDir, r: &RunResult, extras: &Extras) -> Result<PathBuf> {
    let readme = std::fs::read_to_string(lab.dir.join("README.md")).unwrap_or_default();
    let page = render(r, &readme, extras);
    let path = r.kept.join("index.html");
    crate::cache::write_file(&path, page)?;
    Ok(path)
}

/// `--open`: the page in the user's browser ($BROWSER, else xdg-open), without waiting for it;
/// where there is none, the path to open.
pub fn open(path: &std::path::Path) {
    let url = format!("file://{}", path.display());
    let browser = std::env::var("BROWSER")
        .ok()
        .filter(|b| !b.trim().is_empty());
    let candidates: Vec<String> = browser
        .into_iter()
        .chain(["xdg-open".to_string(), "sensible-browser".to_string()])
        .collect();
    for c in candidates {
        let spawned = std::process::Command::new(&c)
            .arg(&url)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        if spawned.is_ok() {
            eprintln!("notebook: opened {url} with {c}");
            return;
        }
    }
    eprintln!("notebook: no browser found ($BROWSER, xdg-open); open {url}");
}

/// The page (pure).
pub fn render(r: &RunResult, readme: &str, extras: &Extras) -> String {
    let spec = &r.spec;
    let verdict = match (&r.variant, r.passed()) {
        (Some(_), true) => "variant ran to the end".to_string(),
        (Some(_), false) => "variant did not run to the end".to_string(),
        (None, true) => "PASS".into(),
        (None, false) => "FAIL".into(),
    };
    let mut body = String::new();
    let _ = writeln!(
        body,
        "<header><h1>{}</h1><p class=\"sub\">lab <code>{}</code> · kernel {} · <span class=\"verdict {}\">{}</span></p></header>",
        esc(&r.name().title(&spec.title)),
        esc(&spec.id),
        esc(r.eval.kernel.as_deref().unwrap_or("?")),
        if r.passed() { "pass" } else { "fail" },
        esc(&verdict)
    );
    body.push_str(&question(readme, spec));
    if let Some((x, j)) = &extras.exercise {
        body.push_str(&exercise(x, j));
    } else if let Some((sets, _)) = &r.variant {
        let sets: Vec<String> = sets.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(
            body,
            "<section><h2>Variant</h2><p>This run changed <code>{}</code>; its facts are compared with the lab's default run below.</p></section>",
            esc(&sets.join(" "))
        );
    }
    if let Some(s) = extras.predictions {
        body.push_str(&predictions(s));
    }
    if !r.problems.is_empty() {
        body.push_str("<section class=\"problems\"><h2>The run is not valid</h2><ul>");
        for p in &r.problems {
            let _ = write!(body, "<li>{}</li>", esc(p));
        }
        body.push_str("</ul></section>\n");
    }
    let chart = chart::of_run(spec, &r.eval, r.name());
    if !chart.steps.is_empty() {
        body.push_str(&chart_section(&chart));
    }
    body.push_str(&steps(r));
    body.push_str(&expectations(r));
    body.push_str(&readme_questions(&answers::extract(readme)));
    body.push_str(&run_facts(r));
    page(&format!("{} — kernel-lab notebook", spec.title), &body)
}

fn question(readme: &str, spec: &guest::spec::LabSpec) -> String {
    // The README's **Question:** paragraph, else the lab's claim.
    let q = readme
        .split("\n\n")
        .find(|p| p.trim_start().starts_with("**Question:**"))
        .map(|p| answers::plain(p.trim_start().trim_start_matches("**Question:**")))
        .unwrap_or_else(|| spec.claim.clone());
    let mut out = format!(
        "<section><h2>The question</h2><p class=\"question\">{}</p>",
        inline_md(&q)
    );
    if !spec.claim.is_empty() {
        let _ = write!(out, "<p><b>Claim under test:</b> {}</p>", esc(&spec.claim));
    }
    out.push_str("</section>\n");
    out
}

fn exercise(x: &Exercise, j: &Judgement) -> String {
    let agreed = j.agreed();
    let mut out = format!(
        "<section><h2>Exercise <code>{}</code></h2><p>{}</p><p>The kernel <b class=\"{}\">{}</b> with what the exercise says it shows:</p><ul>",
        esc(&x.name),
        inline_md(x.ask.trim()),
        if agreed { "pass" } else { "fail" },
        if agreed { "agreed" } else { "disagreed" }
    );
    for d in &j.disagreements {
        let _ = write!(out, "<li class=\"fail\">✗ {}</li>", esc(d));
    }
    for c in &j.confirmed {
        let _ = write!(out, "<li>✓ {}</li>", esc(c));
    }
    let _ = writeln!(
        out,
        "</ul><details><summary>The lab's answer</summary>{}</details></section>",
        paragraphs(&answers::plain(x.answer.trim()))
    );
    out
}

fn predictions(s: &Score) -> String {
    let mut out = format!(
        "<section id=\"predictions\"><h2>Your predictions: {} of {} right</h2><table><tr><th></th><th>step: counter</th><th>you said</th><th>the kernel showed</th><th>why</th></tr>",
        s.right(),
        s.judged()
    );
    for item in &s.items {
        let q = &item.question;
        let unit = report::unit(&q.counter);
        let said = item.answer.as_deref().unwrap_or("—");
        let (mark, got, why) = match &item.outcome {
            Outcome::Right { got, delta } => (
                "✓",
                format!("{got} ({})", human_delta(*delta, unit)),
                String::new(),
            ),
            Outcome::Wrong { got, delta, why } => (
                "✗",
                format!("{got} ({})", human_delta(*delta, unit)),
                why.clone().unwrap_or_default(),
            ),
            Outcome::Skipped { got, delta } => (
                "–",
                format!("{got} ({})", human_delta(*delta, unit)),
                String::new(),
            ),
            Outcome::NotReported(t) => ("–", t.clone(), String::new()),
        };
        let _ = write!(
            out,
            "<tr class=\"{}\"><td>{mark}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            match mark {
                "✓" => "right",
                "✗" => "wrong",
                _ => "skipped",
            },
            esc(&q.key()),
            esc(said),
            esc(&got),
            esc(&why)
        );
    }
    out.push_str("</table></section>\n");
    out
}

fn chart_section(chart: &Chart) -> String {
    let g = GEOMETRY;
    let cols = chart.columns(g.plot);
    let steps: Vec<serde_json::Value> = chart
        .steps
        .iter()
        .zip(&cols)
        .map(|(s, (x0, w))| serde_json::json!({"name": s.name, "secs": s.secs, "x": g.left + x0, "w": w}))
        .collect();
    let panels: Vec<serde_json::Value> = chart
        .panels
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let series: Vec<serde_json::Value> = p
                .series
                .iter()
                .map(|s| {
                    serde_json::json!({"label": s.label, "counter": s.counter,
                    "color": chart.color(&s.whose), "points": s.points})
                })
                .collect();
            serde_json::json!({"title": p.title, "unit": p.unit, "zoomed": p.clip,
                "y0": g.top + i as f64 * (g.panel + g.gap) + 18.0, "h": g.panel, "series": series})
        })
        .collect();
    let data = serde_json::json!({"steps": steps, "panels": panels});
    // `</` cannot end the script element early.
    let data = data.to_string().replace("</", "<\\/");
    format!(
        "<section id=\"chart\"><h2>What the kernel did, over time</h2><p class=\"hint\">Each step is a column with its own time axis; move the pointer over the chart to read every value at that moment. Each group has one colour in every panel (blue: the whole machine); a group's further lines in a panel are dashed, with hollow markers. Thin dashed lines are limits, watermarks and the guest's RAM; dotted lines with dots were read only at each step's start and end (PSI, memory.peak); red lines mark OOM kills and failed steps.</p><div class=\"chart\">{}<div id=\"tip\" hidden></div></div><script type=\"application/json\" id=\"chart-data\">{data}</script></section>\n",
        timeline::svg(chart)
    )
}

fn steps(r: &RunResult) -> String {
    let ev = &r.eval;
    let mut out = String::from("<section id=\"report\"><h2>The report, step by step</h2>");
    for s in &ev.steps {
        let exit = s.ended();
        let _ = write!(
            out,
            "<h3>step <code>{}</code> <span class=\"sub\">{} — {} after {:.2}s</span></h3>",
            esc(&s.name),
            esc(&s.describe),
            esc(&exit),
            s.wall_ms as f64 / 1000.0
        );
        if !s.stderr.trim().is_empty() {
            let _ = write!(
                out,
                "<p>The workload said: <code>{}</code></p>",
                esc(s.stderr.trim())
            );
        }
        for k in ev
            .oom_kills
            .iter()
            .filter(|k| k.during.as_deref() == Some(s.name.as_str()))
        {
            let _ = write!(
                out,
                "<p class=\"oom\">OOM killer: {}</p>",
                esc(&k.describe())
            );
        }
        out.push_str("<table class=\"counters\"><tr><th>counter</th><th>change</th><th>class</th><th>what it means</th></tr>");
        for o in &s.observed {
            let (num, cls) = match &o.delta {
                Ok(d) => (
                    human_delta(*d, report::unit(&o.counter)),
                    class(o.rule, *d).unwrap_or_else(|| "(not snapshotted)".into()),
                ),
                Err(t) => ("?".into(), format!("not reported: {t}")),
            };
            let quiet = matches!(o.delta, Ok(0)) && o.explain.is_none();
            let _ = write!(
                out,
                "<tr{}><td><code>Δ {}</code></td><td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
                if quiet { " class=\"quiet\"" } else { "" },
                esc(&o.counter.to_string()),
                esc(&num),
                esc(&cls),
                esc(o.explain.as_deref().unwrap_or(""))
            );
        }
        out.push_str("</table>");
        if let Some(t) = ev.trace(Some(&s.name)) {
            let _ = write!(
                out,
                "<p>Reclaim trace (vmscan tracepoints):</p><pre>{}</pre>",
                esc(&t.text)
            );
        }
    }
    out.push_str("</section>\n");
    out
}

fn expectations(r: &RunResult) -> String {
    let mut out = String::from(
        "<section id=\"expectations\"><h2>Expectations: what the lab claims, checked</h2><table><tr><th></th><th>expectation</th><th>got</th><th>why</th></tr>",
    );
    for v in &r.eval.verdicts {
        let word = report::verdict_word(v).to_uppercase();
        let _ = write!(
            out,
            "<tr class=\"{}\"><td><b>{word}</b></td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
            word.to_lowercase().replace('/', ""),
            esc(&v.what),
            esc(&v.actual),
            esc(&v.expect.why)
        );
    }
    out.push_str("</table>");
    if let Some(m) = r.snapshot_matched {
        let _ = write!(
            out,
            "<p>Snapshot (the facts, as classes): {}</p>",
            if m {
                "matches the lab's"
            } else {
                "<b class=\"fail\">differs from the lab's</b>"
            }
        );
        if !r.snapshot_changes.is_empty() {
            out.push_str("<ul>");
            for c in &r.snapshot_changes {
                let _ = write!(out, "<li><code>{}</code></li>", esc(c));
            }
            out.push_str("</ul>");
        }
    }
    if let Some(diff) = r.variant_diff.as_ref().filter(|d| !d.is_empty()) {
        let _ = write!(
            out,
            "<p>How this variant's facts differ from the default run:</p><pre>{}</pre>",
            esc(diff)
        );
    }
    out.push_str("</section>\n");
    out
}

fn readme_questions(qas: &[Qa]) -> String {
    if qas.is_empty() {
        return String::new();
    }
    let mut out = String::from("<section id=\"questions\"><h2>Questions to think about</h2><ol>");
    for q in qas {
        let text = q
            .question
            .trim_start_matches(|c: char| c.is_ascii_digit())
            .trim_start_matches(". ");
        let _ = write!(
            out,
            "<li><p>{}</p><details><summary>Answer</summary>{}</details></li>",
            paragraphs(text),
            paragraphs(&q.answer)
        );
    }
    out.push_str("</ol></section>\n");
    out
}

fn run_facts(r: &RunResult) -> String {
    let mut out = format!(
        "<section id=\"run\"><h2>The run</h2><p>phases: {}, total {:.2}s",
        esc(&r.phases.render()),
        r.total.as_secs_f64()
    );
    if let (Some(ready), Some(end)) = (r.eval.ready_ms, r.eval.end_ms) {
        let _ = write!(
            out,
            "; in the guest: boot to agent ready {:.2}s, steps and sampling {:.2}s",
            ready as f64 / 1000.0,
            end.saturating_sub(ready) as f64 / 1000.0
        );
    }
    out.push_str(".</p><p>Every number on this page was read from the booted kernel; the console log and the raw results are beside this page (<a href=\"console.log\">console.log</a>, <a href=\"results.jsonl\">results.jsonl</a>, <a href=\"report.txt\">report.txt</a>).</p></section>\n");
    out
}

/// `**b**`, `` `code` `` and `*i*` of a line of markdown, escaped.
fn inline_md(text: &str) -> String {
    let mut out = String::new();
    let mut open = [false; 3];
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '`' {
            out.push_str(if open[0] { "</code>" } else { "<code>" });
            open[0] = !open[0];
        } else if c == '*' && !open[0] && chars.get(i + 1) == Some(&'*') {
            out.push_str(if open[1] { "</b>" } else { "<b>" });
            open[1] = !open[1];
            i += 1;
        } else if c == '*' && !open[0] {
            out.push_str(if open[2] { "</i>" } else { "<i>" });
            open[2] = !open[2];
        } else {
            out.push_str(&esc(&c.to_string()));
        }
        i += 1;
    }
    for (k, tag) in ["</code>", "</b>", "</i>"].iter().enumerate() {
        if open[k] {
            out.push_str(tag);
        }
    }
    out
}

/// Plain text paragraphs (from answers::plain) as HTML; indented lines as code.
fn paragraphs(text: &str) -> String {
    text.split("\n\n")
        .map(|p| {
            if p.lines().all(|l| l.starts_with("    ")) {
                format!(
                    "<pre>{}</pre>",
                    esc(&p.lines().map(|l| &l[4..]).collect::<Vec<_>>().join("\n"))
                )
            } else if p.lines().all(|l| l.starts_with("- ")) {
                let items: String = p
                    .lines()
                    .map(|l| format!("<li>{}</li>", inline_md(&l[2..])))
                    .collect();
                format!("<ul>{items}</ul>")
            } else {
                format!("<p>{}</p>", inline_md(p))
            }
        })
        .collect()
}

const STYLE: &str = r#"
body { font-family: sans-serif; max-width: 1100px; margin: 0 auto; padding: 0 16px 48px; color: #222; line-height: 1.45; }
header h1 { margin-bottom: 0; }
.sub { color: #666; font-weight: normal; }
.verdict.pass, b.pass, tr.pass b { color: #1a7f1a; }
.verdict.fail, b.fail, tr.fail b { color: #b00; }
section { margin-top: 28px; }
table { border-collapse: collapse; width: 100%; font-size: 14px; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }
td.num { text-align: right; white-space: nowrap; }
tr.quiet { color: #999; }
tr.right td:first-child { color: #1a7f1a; font-weight: bold; }
tr.wrong td:first-child { color: #b00; font-weight: bold; }
tr.wrong { background: #fff4f4; }
code { background: #f4f4f4; padding: 0 3px; border-radius: 3px; }
pre { background: #f8f8f8; padding: 8px; overflow-x: auto; }
.question { font-size: 18px; }
.hint { color: #555; font-size: 14px; }
.chart { position: relative; overflow-x: auto; }
.chart svg { display: block; }
#tip { position: absolute; background: rgba(255,255,255,0.96); border: 1px solid #888; padding: 6px 8px; font-size: 12px; pointer-events: none; white-space: nowrap; box-shadow: 0 2px 6px rgba(0,0,0,.15); }
#tip .sw { display: inline-block; width: 10px; height: 10px; margin-right: 4px; }
.oom { color: #b00; }
.problems { border-left: 4px solid #b00; padding-left: 12px; }
details summary { cursor: pointer; color: #1f5fa8; }
"#;

/// Hover: the values of every series of the panel under the pointer, at the pointer's time in
/// its step's column. Sets `data-ready`, `data-series` (series drawn, zoomed copies aside) and,
/// for `#selftest`, `data-hover` (the tooltip's text at the middle of the first panel) on
/// <body>: what the browser test reads.
const SCRIPT: &str = r#"
(function () {
  var errors = [];
  window.addEventListener('error', function (e) { errors.push(String(e.message)); document.body.dataset.errors = errors.join(' | '); });
  var el = document.getElementById('chart-data');
  var svg = document.querySelector('svg.timeline');
  var tip = document.getElementById('tip');
  if (!el || !svg || !tip) { document.body.dataset.ready = '1'; document.body.dataset.series = '0'; return; }
  var data = JSON.parse(el.textContent);
  var NS = 'http://www.w3.org/2000/svg';
  var cursor = document.createElementNS(NS, 'line');
  cursor.setAttribute('stroke', '#555'); cursor.setAttribute('stroke-dasharray', '2 2');
  cursor.setAttribute('visibility', 'hidden');
  svg.appendChild(cursor);
  function fmt(v, unit) {
    var a = Math.abs(v);
    var s = a >= 100 ? v.toFixed(0) : a >= 10 ? v.toFixed(1) : v.toFixed(2);
    return s + ' ' + unit;
  }
  function at(series, step, t) {
    var best = null;
    for (var i = 0; i < series.points.length; i++) {
      var p = series.points[i];
      if (p[0] === step && p[1] <= t + 1e-9) best = p;
    }
    return best;
  }
  function show(x, y) {
    var step = -1;
    for (var i = 0; i < data.steps.length; i++) {
      var s = data.steps[i];
      if (x >= s.x && x <= s.x + s.w) step = i;
    }
    var panel = null;
    for (var j = 0; j < data.panels.length; j++) {
      var p = data.panels[j];
      if (y >= p.y0 - 4 && y <= p.y0 + p.h + 4) panel = p;
    }
    if (step < 0 || !panel) { tip.hidden = true; cursor.setAttribute('visibility', 'hidden'); return null; }
    var st = data.steps[step];
    var t = (x - st.x) / st.w * st.secs;
    var rows = ['<b>step ' + st.name + '</b>, ' + t.toFixed(3) + ' s in'];
    panel.series.forEach(function (s) {
      var p = at(s, step, t);
      if (p) rows.push('<span class="sw" style="background:' + s.color + '"></span>' + s.label + ': <b>' + fmt(p[2], panel.unit) + '</b> <span class="sub">(' + s.counter + ', at ' + p[1].toFixed(3) + ' s)</span>');
    });
    tip.innerHTML = rows.join('<br>');
    tip.hidden = false;
    cursor.setAttribute('x1', x); cursor.setAttribute('x2', x);
    cursor.setAttribute('y1', panel.y0); cursor.setAttribute('y2', panel.y0 + panel.h);
    cursor.setAttribute('visibility', 'visible');
    return tip.textContent;
  }
  function toSvg(e) {
    var pt = svg.createSVGPoint(); pt.x = e.clientX; pt.y = e.clientY;
    return pt.matrixTransform(svg.getScreenCTM().inverse());
  }
  svg.addEventListener('mousemove', function (e) {
    var p = toSvg(e);
    show(p.x, p.y);
    var box = svg.parentNode.getBoundingClientRect();
    tip.style.left = (e.clientX - box.left + 14) + 'px';
    tip.style.top = (e.clientY - box.top + 14) + 'px';
  });
  svg.addEventListener('mouseleave', function () { tip.hidden = true; cursor.setAttribute('visibility', 'hidden'); });
  document.body.dataset.series = String(svg.querySelectorAll('path.series:not(.zoomed)').length);
  if (location.hash === '#selftest' && data.steps.length && data.panels.length) {
    var s0 = data.steps[0], p0 = data.panels[0];
    var m = svg.getScreenCTM();
    var pt = svg.createSVGPoint(); pt.x = s0.x + s0.w / 2; pt.y = p0.y0 + p0.h / 2;
    var c = pt.matrixTransform(m);
    svg.dispatchEvent(new MouseEvent('mousemove', { clientX: c.x, clientY: c.y, bubbles: true }));
    document.body.dataset.hover = tip.textContent;
  }
  document.body.dataset.ready = '1';
})();
"#;

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><meta name=\"viewport\" content=\"width=device-width\"><style>{STYLE}</style></head><body>\n{body}<script>{SCRIPT}</script>\n</body></html>\n",
        esc(title)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_bits_become_html_safely() {
        assert_eq!(
            inline_md("a **b** `c<d>` *e*"),
            "a <b>b</b> <code>c&lt;d&gt;</code> <i>e</i>"
        );
        assert_eq!(inline_md("`open"), "<code>open</code>");
        assert_eq!(
            paragraphs("x\n\n    cargo xtask lab 2\n\n- one\n- `two`"),
            "<p>x</p><pre>cargo xtask lab 2</pre><ul><li>one</li><li><code>two</code></li></ul>"
        );
    }

    #[test]
    fn the_chart_data_cannot_close_its_script() {
        let c = Chart {
            title: "t".into(),
            steps: vec![timeline::StepColumn {
                name: "</script><b>".into(),
                secs: 1.0,
            }],
            ..Default::default()
        };
        let s = chart_section(&c);
        let script = s.split("id=\"chart-data\">").nth(1).unwrap();
        assert!(
            !script.split("</script>").next().unwrap().contains("</"),
            "{s}"
        );
    }
}
