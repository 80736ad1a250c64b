//! `report.html`: one self-contained page a quant opens in a browser. The
//! charts are drawn by `plotters` into inline SVG (equity curves net of
//! costs, the reliability diagram, the adaptive strategy's weights over time,
//! the latency distribution per stage); the figures and their intervals are
//! HTML tables. Nothing is fetched: no script, no style sheet, no font.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use plotters::prelude::*;

use super::output::Report;
use super::replay::Replayed;
use super::scoring::{DecisionRow, Horizon};
use super::Candidate;

/// Distinct colours for up to a dozen series, then repeated.
const COLOURS: [RGBColor; 12] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(0, 0, 0),
    RGBColor(110, 110, 200),
];

/// A reliability bin is drawn only with this many decisions in it (the rest is noise).
const MIN_BIN_DECISIONS: u64 = 20;

fn colour(i: usize) -> RGBColor {
    COLOURS[i % COLOURS.len()]
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

type Series = (String, Vec<(f64, f64)>);

/// One line chart as SVG text; a chart that cannot be drawn says why in its place.
fn line_chart(title: &str, x_desc: &str, y_desc: &str, series: &[Series], log_x: bool, diagonal: bool) -> String {
    let mut svg = String::new();
    let drawn = draw_lines(&mut svg, title, x_desc, y_desc, series, log_x, diagonal);
    match drawn {
        Ok(()) => svg,
        Err(e) => format!("<p>{}: not drawn ({})</p>", escape(title), escape(&e)),
    }
}

fn bounds(series: &[Series], f: impl Fn(&(f64, f64)) -> f64) -> (f64, f64) {
    let (lo, hi) = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(&f))
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(1e-9);
    (lo - pad, hi + pad)
}

fn draw_lines(
    svg: &mut String,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
    log_x: bool,
    diagonal: bool,
) -> Result<(), String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let root = SVGBackend::with_string(svg, (960, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let (x0, x1) = bounds(series, |p| p.0);
    let (y0, y1) = if diagonal { (0.0, 1.0) } else { bounds(series, |p| p.1) };
    let mut builder = ChartBuilder::on(&root);
    builder.caption(title, ("sans-serif", 18)).margin(12).x_label_area_size(40).y_label_area_size(70);
    // Two coordinate types (linear, log) need two chart types: one closure draws either.
    macro_rules! draw {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart.configure_mesh().x_desc(x_desc).y_desc(y_desc).draw().map_err(|x| e(&x))?;
            if diagonal {
                chart
                    .draw_series(LineSeries::new([(0.0, 0.0), (1.0, 1.0)], BLACK.mix(0.3)))
                    .map_err(|x| e(&x))?
                    .label("perfectly calibrated")
                    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.3)));
            }
            for (i, (name, points)) in series.iter().enumerate() {
                let c = colour(i);
                let style = ShapeStyle::from(&c).stroke_width(2);
                chart
                    .draw_series(LineSeries::new(points.iter().copied(), style))
                    .map_err(|x| e(&x))?
                    .label(name.as_str())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c));
                if diagonal {
                    chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, c.filled()))).map_err(|x| e(&x))?;
                }
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.3))
                .draw()
                .map_err(|x| e(&x))?;
        }};
    }
    if log_x {
        let x0 = x0.max(0.1);
        draw!(builder.build_cartesian_2d((x0..x1.max(x0 * 10.0)).log_scale(), y0..y1).map_err(|x| e(&x))?);
    } else {
        draw!(builder.build_cartesian_2d(x0..x1, y0..y1).map_err(|x| e(&x))?);
    }
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

/// Cumulative net PnL per candidate over the evaluated period (minutes from its start).
fn equity(rows: &[DecisionRow], horizon: u32, from_ms: i64) -> Vec<Series> {
    let mut by: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
    let mut order: Vec<&str> = Vec::new();
    let mut total: BTreeMap<&str, f64> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.horizon == horizon) {
        if !by.contains_key(r.candidate.as_str()) {
            order.push(&r.candidate);
            by.insert(&r.candidate, vec![(0.0, 0.0)]);
        }
        if r.opened {
            let t = total.entry(&r.candidate).or_insert(0.0);
            *t += r.pnl_bps;
            let v = by.get_mut(r.candidate.as_str()).expect("inserted above");
            v.push(((r.ts_ms - from_ms) as f64 / 60_000.0, *t));
        }
    }
    let end = rows.iter().map(|r| r.ts_ms).max().unwrap_or(from_ms);
    order
        .into_iter()
        .map(|c| {
            let mut v = by.remove(c).unwrap_or_default();
            let last = v.last().map_or(0.0, |p| p.1);
            v.push(((end - from_ms) as f64 / 60_000.0, last));
            (c.to_owned(), v)
        })
        .collect()
}

/// The empirical distribution of each stage's latency, at most 400 points a stage.
fn latency_cdf(replayed: &Replayed, decisions: &[usize]) -> Vec<Series> {
    let mut stages: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for &i in decisions {
        let c = &replayed.calls[i];
        stages.entry("features".into()).or_default().push(c.features_us);
        for (m, us) in &c.decision.timings.models_us {
            stages.entry(m.as_str().into()).or_default().push(*us);
        }
        stages.entry("consensus".into()).or_default().push(c.decision.timings.consensus_us);
        stages.entry("tick (all)".into()).or_default().push(c.tick_us);
    }
    stages
        .into_iter()
        .map(|(name, mut v)| {
            v.sort_by(f64::total_cmp);
            let n = v.len();
            let step = n.div_ceil(400).max(1);
            let mut points: Vec<(f64, f64)> =
                (0..n).step_by(step).map(|i| (v[i].max(0.1), (i + 1) as f64 / n as f64)).collect();
            if let Some(&last) = v.last() {
                points.push((last.max(0.1), 1.0));
            }
            (name, points)
        })
        .collect()
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "—".into(), |x| format!("{x:.digits$}"))
}

fn metrics_table(h: &Horizon, out: &mut String) {
    out.push_str(
        "<table><tr><th>candidate</th><th>kind</th><th>accuracy %</th><th>macro-F1</th><th>MCC</th><th>trades</th>\
         <th>net bps</th><th>costs bps</th><th>hit %</th><th>profit factor</th><th>Sharpe / trade</th><th>max drawdown bps</th></tr>",
    );
    for s in &h.scores {
        let (c, t) = (&s.classification, &s.trading);
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{:.2}</td><td>{:.3}</td><td>{:.3}</td><td>{}</td><td>{:.1}</td><td>{:.1}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td></tr>",
            s.candidate.name(),
            s.group,
            100.0 * c.accuracy,
            c.f1_macro,
            c.mcc,
            t.trades,
            t.net_pnl_bps,
            t.costs_bps,
            opt(t.hit_rate.map(|r| 100.0 * r), 1),
            opt(t.profit_factor, 2),
            opt(t.sharpe_per_trade, 3),
            t.max_drawdown_bps
        );
    }
    out.push_str("</table>");
}

fn comparisons_table(h: &Horizon, out: &mut String) {
    out.push_str(
        "<table><tr><th>first</th><th>second</th><th>why</th><th>accuracy Δ pp [95 %]</th><th>net PnL Δ bps [95 %]</th>\
         <th>blocks (acc / PnL)</th><th>McNemar (first only / second only, p)</th></tr>",
    );
    for c in &h.comparisons {
        let cell = |i: &super::stats::Interval| {
            let class = if i.excludes_zero() { " class=\"real\"" } else { "" };
            format!("<td{class}>{:+.2} [{:+.2}, {:+.2}]</td>", i.estimate, i.low, i.high)
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td>{}{}<td>{} / {}</td><td>{} / {}, p = {}</td></tr>",
            c.first.name(),
            c.second.name(),
            escape(c.why),
            cell(&c.accuracy_diff_pp),
            cell(&c.net_pnl_diff_bps),
            c.accuracy_block,
            c.pnl_block,
            c.mcnemar.first_only,
            c.mcnemar.second_only,
            if c.mcnemar.p_value == 0.0 {
                "&lt; 1e-300".to_owned()
            } else if c.mcnemar.p_value < 1e-3 {
                format!("{:.1e}", c.mcnemar.p_value)
            } else {
                format!("{:.3}", c.mcnemar.p_value)
            }
        );
    }
    out.push_str("</table>");
}

fn confusion_tables(h: &Horizon, out: &mut String) {
    out.push_str("<div class=\"grid\">");
    for s in &h.scores {
        let m = &s.classification.confusion;
        let _ = write!(out, "<table class=\"cm\"><caption>{}</caption><tr><th>true \\ called</th>", s.candidate.name());
        for l in ["down", "neutral", "up"] {
            let _ = write!(out, "<th>{l}</th>");
        }
        out.push_str("</tr>");
        for (t, l) in ["down", "neutral", "up"].iter().enumerate() {
            let _ = write!(out, "<tr><th>{l}</th>");
            let row_total: u64 = m[t].iter().sum::<u64>().max(1);
            for v in m[t] {
                let shade = 255 - (180 * v / row_total) as u8;
                let _ = write!(out, "<td style=\"background:rgb({shade},{shade},255)\">{v}</td>");
            }
            out.push_str("</tr>");
        }
        out.push_str("</table>");
    }
    out.push_str("</div>");
}

/// The whole page.
pub fn render(report: &Report, replayed: &Replayed, decisions: &[usize], rows: &[DecisionRow]) -> String {
    let mut out = String::with_capacity(1 << 20);
    let p = &report.period;
    let spread = match report.costs.half_spread.as_f64() {
        Some(h) => format!("{h} bps half-spread a side"),
        None => "the book's half-spread at entry and at exit".into(),
    };
    let _ = write!(
        out,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>quorum evaluate: {sym}</title><style>\
         body{{font-family:sans-serif;margin:24px;max-width:1100px}} table{{border-collapse:collapse;margin:8px 0 16px}}\
         td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}} th{{background:#f3f3f3}} td:first-child{{text-align:left}}\
         .real{{font-weight:bold;background:#fff3c4}} .grid{{display:flex;flex-wrap:wrap;gap:12px}} .cm caption{{font-weight:bold}}\
         li{{margin:3px 0}}</style></head><body>\
         <h1>quorum evaluate: {sym}</h1>\
         <p>Evaluated {eval_min:.1} min ({ticks} ticks, {dec} decisions every candidate answered) after a fit period of \
         {fit_min:.1} min. Models: {models}. Costs: {cost} bps a trade plus {spread}. Intervals: paired moving-block \
         bootstrap, {resamples} resamples, seed {seed}; bold cells exclude zero at 95 %.</p>",
        sym = escape(&report.symbol),
        eval_min = (p.to_ms.min(p.last_ms + 1) - p.from_ms) as f64 / 60_000.0,
        ticks = p.evaluated_ticks,
        dec = report.decisions,
        fit_min = (p.from_ms - p.first_ms) as f64 / 60_000.0,
        models = report.models.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", "),
        cost = report.costs.cost_per_trade_bps,
        resamples = report.bootstrap["resamples"],
        seed = report.bootstrap["seed"],
    );
    out.push_str("<h2>Verdicts</h2><ul>");
    for v in &report.verdicts {
        let _ = write!(out, "<li>{}</li>", escape(v));
    }
    out.push_str("</ul>");
    for h in &report.horizons {
        let _ = write!(
            out,
            "<h2>Horizon {k} ticks</h2><p>{n} decisions, α = {a:.3e}; realized DOWN / NEUTRAL / UP: {d:.1} / {m:.1} / {u:.1} %; \
             bootstrap blocks of at least {b} decisions (longer where a difference's own autocorrelation asks).</p>",
            k = h.horizon,
            n = h.decisions,
            a = h.alpha,
            d = 100.0 * h.class_shares[0],
            m = 100.0 * h.class_shares[1],
            u = 100.0 * h.class_shares[2],
            b = h.block_length
        );
        metrics_table(h, &mut out);
        comparisons_table(h, &mut out);
        out.push_str(&line_chart(
            &format!("Equity net of costs, horizon {} ticks", h.horizon),
            "minutes into the evaluated period",
            "cumulative net bps",
            &equity(rows, h.horizon as u32, p.from_ms),
            false,
            false,
        ));
        let reliability: Vec<Series> = h
            .scores
            .iter()
            .filter(|s| {
                matches!(s.candidate, Candidate::Model(_) | Candidate::Consensus(_) | Candidate::LogisticRegression)
            })
            .map(|s| {
                let bins = s.reliability.iter().filter(|b| b.decisions >= MIN_BIN_DECISIONS);
                (s.candidate.name().to_owned(), bins.map(|b| (b.mean_confidence, b.hit_rate)).collect())
            })
            .collect();
        let _ = write!(
            out,
            "<p>Reliability: bins of stated confidence with at least {MIN_BIN_DECISIONS} decisions \
             (every bin is in report.json).</p>"
        );
        out.push_str(&line_chart(
            &format!("Reliability, horizon {} ticks", h.horizon),
            "stated confidence",
            "share right",
            &reliability,
            false,
            true,
        ));
        out.push_str("<h3>Confusion matrices (rows: realized, columns: called)</h3>");
        confusion_tables(h, &mut out);
    }
    let mut weights: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
    for w in &report.adaptive_weights {
        let minutes = (w.ts_ms - p.from_ms) as f64 / 60_000.0;
        for (m, c) in &w.contributions {
            weights.entry(m.as_str()).or_default().push((minutes, *c));
        }
    }
    let weights: Vec<Series> = weights.into_iter().map(|(m, v)| (m.to_owned(), v)).collect();
    out.push_str(
        "<h2>Online learning</h2><p>The adaptive strategy's contribution of each model to its decisions, \
                  as the outcomes it is told move its weights (a model absent at a point was excluded there).</p>",
    );
    out.push_str(&line_chart(
        "Adaptive strategy: contributions over time",
        "minutes",
        "contribution",
        &weights,
        false,
        false,
    ));
    out.push_str(
        "<h2>Latency</h2><table><tr><th>stage</th><th>p50 µs</th><th>p90 µs</th><th>p99 µs</th><th>max µs</th></tr>",
    );
    for (stage, l) in &report.latency_us {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td></tr>",
            escape(stage),
            l.p50,
            l.p90,
            l.p99,
            l.max
        );
    }
    out.push_str("</table>");
    out.push_str(&line_chart(
        "Latency per stage (distribution)",
        "µs (log scale)",
        "share of decisions at or below",
        &latency_cdf(replayed, decisions),
        true,
        false,
    ));
    out.push_str("</body></html>\n");
    out
}
