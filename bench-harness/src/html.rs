//! `occam report`: saved bench reports (`occam-bench/v1` JSON) as one self-contained HTML page
//! with charts, as CSV, or as a Markdown summary.
//!
//! The HTML page has no script and fetches nothing: every chart is inline SVG drawn with
//! `plotters`, the styles are inline, and the only URL in it is the SVG namespace. Per
//! workload: throughput and speedup against threads (one line per executor and report, the
//! sequential reference as a dashed level), block latency percentiles against threads, and the
//! per-block throughput of the run with the most threads (a time series). Then a table of every
//! result, and for every report its machine, commit and settings.

use crate::runner::{BenchReport, RunResult};
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Why a chart could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("drawing a chart: {0}")]
pub struct ChartError(String);

fn err<E: std::fmt::Debug>(e: E) -> ChartError {
    ChartError(format!("{e:?}"))
}

/// A named report: the file it came from and its contents.
pub type Named<'a> = (&'a str, &'a BenchReport);

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// One line of a chart.
struct Series {
    label: String,
    points: Vec<(f64, f64)>,
    dashed: bool,
}

/// A line chart as an SVG string: `x` and `y` ranges from the data, a legend.
fn line_chart(title: &str, x_desc: &str, y_desc: &str, series: &[Series], log2_x: bool) -> Result<String, ChartError> {
    chart_with_labels(title, x_desc, y_desc, series, log2_x, None)
}

/// [`line_chart`], with `labels[i]` written under `x = i` when given (a categorical axis).
fn chart_with_labels(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
    log2_x: bool,
    labels: Option<&[String]>,
) -> Result<String, ChartError> {
    let mut svg = String::new();
    let all: Vec<(f64, f64)> = series.iter().flat_map(|s| s.points.iter().copied()).collect();
    if all.is_empty() {
        return Ok(String::new());
    }
    let fx = |x: f64| if log2_x { x.max(1.0).log2() } else { x };
    let (x_min, x_max) = all.iter().fold((f64::MAX, f64::MIN), |(lo, hi), p| (lo.min(fx(p.0)), hi.max(fx(p.0))));
    let y_max = all.iter().fold(0.0f64, |m, p| m.max(p.1)) * 1.1;
    let (x_lo, x_hi) = if x_max > x_min { (x_min, x_max) } else { (x_min - 0.5, x_max + 0.5) };
    {
        let root = SVGBackend::with_string(&mut svg, (620, 360)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(x_lo..x_hi, 0.0..y_max.max(1e-9))
            .map_err(err)?;
        // Whole ticks only: powers of two on a log2 axis (threads), integers otherwise (blocks).
        let x_fmt = |x: &f64| match labels {
            Some(l) => l.get(x.round().max(0.0) as usize).cloned().unwrap_or_default(),
            None if log2_x => format!("{}", 2f64.powf(*x).round()),
            None => format!("{x:.0}"),
        };
        let ticks = ((x_hi - x_lo).round() as usize + 1).clamp(2, 12);
        chart
            .configure_mesh()
            .x_labels(ticks)
            .x_desc(x_desc)
            .y_desc(y_desc)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&|y| human(*y))
            .draw()
            .map_err(err)?;
        for (i, s) in series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let style = ShapeStyle { color: color.to_rgba(), filled: false, stroke_width: 2 };
            let points: Vec<(f64, f64)> = s.points.iter().map(|&(x, y)| (fx(x), y)).collect();
            if s.dashed {
                chart.draw_series(DashedLineSeries::new(points.clone(), 6, 4, style)).map_err(err)?;
            } else {
                chart.draw_series(LineSeries::new(points.clone(), style)).map_err(err)?;
                chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled()))).map_err(err)?;
            }
            let legend = chart.draw_series(std::iter::once(Circle::new(points[0], 0, color.filled()))).map_err(err)?;
            legend.label(s.label.clone()).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// `1.2M`, `340k`, `12.5`: short numbers for axes.
fn human(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.0}k", v / 1e3)
    } else if v >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// Results of `workload` grouped by (report, executor), sorted by threads.
fn by_executor<'a>(reports: &[Named<'a>], workload: &str) -> BTreeMap<(usize, String), Vec<&'a RunResult>> {
    let mut out: BTreeMap<(usize, String), Vec<&RunResult>> = BTreeMap::new();
    for (i, (_, r)) in reports.iter().enumerate() {
        for x in r.results.iter().filter(|x| x.workload == workload) {
            out.entry((i, x.executor.clone())).or_default().push(x);
        }
    }
    for v in out.values_mut() {
        v.sort_by_key(|x| x.threads);
    }
    out
}

fn workloads(reports: &[Named<'_>]) -> Vec<String> {
    let mut w: Vec<String> = Vec::new();
    for (_, r) in reports {
        for x in &r.results {
            if !w.contains(&x.workload) {
                w.push(x.workload.clone());
            }
        }
    }
    w
}

/// The self-contained HTML page for `reports`.
pub fn html(reports: &[Named<'_>]) -> Result<String, ChartError> {
    let mut out = String::new();
    let title = format!("occam bench report — {}", reports.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "));
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\n<style>\
         body{{font-family:sans-serif;margin:24px;color:#222}} h2{{margin-top:32px}} .charts{{display:flex;flex-wrap:wrap;gap:12px}}\
         .chart{{border:1px solid #ddd}} table{{border-collapse:collapse;font-size:13px}} td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}\
         th{{background:#f3f3f3}} td.l,th.l{{text-align:left}} .mismatch{{color:#b00;font-weight:bold}}</style></head><body>\n<h1>{}</h1>\n",
        escape(&title),
        escape(&title)
    );
    let multi = reports.len() > 1;
    let label = |i: usize, executor: &str| if multi { format!("{executor} @ {}", reports[i].0) } else { executor.to_string() };
    for w in workloads(reports) {
        let _ = writeln!(out, "<h2>{}</h2>\n<div class=\"charts\">", escape(&w));
        let groups = by_executor(reports, &w);
        let mut tps = Vec::new();
        let mut speedup = Vec::new();
        let mut latency = Vec::new();
        for ((i, executor), runs) in &groups {
            let points = |f: &dyn Fn(&RunResult) -> f64| runs.iter().map(|x| (x.threads as f64, f(x))).collect::<Vec<_>>();
            if executor == "sequential" {
                // A level across the thread range, for reference.
                let xs: Vec<f64> = groups.values().flatten().map(|x| x.threads as f64).collect();
                let (lo, hi) = xs.iter().fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
                let level = runs[0].tps_median;
                tps.push(Series { label: label(*i, "sequential"), points: vec![(lo, level), (hi, level)], dashed: true });
                continue;
            }
            tps.push(Series { label: label(*i, executor), points: points(&|x| x.tps_median), dashed: false });
            speedup.push(Series { label: label(*i, executor), points: points(&|x| x.speedup), dashed: false });
            // With several reports, p99 only: twice the lines would bury each other.
            if !multi {
                latency.push(Series {
                    label: format!("{} p50", label(*i, executor)),
                    points: points(&|x| x.block_latency_us.p50 / 1e3),
                    dashed: false,
                });
            }
            latency.push(Series {
                label: format!("{} p99", label(*i, executor)),
                points: points(&|x| x.block_latency_us.p99 / 1e3),
                dashed: true,
            });
        }
        for svg in [
            line_chart(&format!("{w}: throughput"), "threads", "transactions/s", &tps, true)?,
            line_chart(&format!("{w}: speedup over sequential"), "threads", "speedup", &speedup, true)?,
            line_chart(&format!("{w}: block latency"), "threads", "ms", &latency, true)?,
        ] {
            if !svg.is_empty() {
                let _ = writeln!(out, "<div class=\"chart\">{svg}</div>");
            }
        }
        // Against the reports (sweep points, contention levels…): speedup at the most threads.
        if reports.len() > 1 {
            let names: Vec<String> = reports.iter().map(|(n, _)| n.chars().take(28).collect()).collect();
            let mut by_exec: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
            for ((i, executor), runs) in &groups {
                if let Some(run) = runs.last().filter(|_| executor != "sequential") {
                    by_exec.entry(executor.clone()).or_default().push((*i as f64, run.speedup));
                }
            }
            let series: Vec<Series> = by_exec
                .into_iter()
                .filter(|(_, p)| !p.is_empty())
                .map(|(label, points)| Series { label: format!("{label} (most threads)"), points, dashed: false })
                .collect();
            let svg = chart_with_labels(&format!("{w}: speedup by report"), "report", "speedup", &series, false, Some(&names))?;
            if !svg.is_empty() {
                let _ = writeln!(out, "<div class=\"chart\">{svg}</div>");
            }
        }
        // Time series: per-block TPS of each executor's run with the most threads (one report
        // only: with several, the lines would bury each other).
        let series: Vec<Series> = if multi {
            Vec::new()
        } else {
            groups
                .iter()
                .filter_map(|((i, executor), runs)| {
                    let run = runs.last()?;
                    let points = run.tps_per_block.iter().enumerate().map(|(b, &t)| (b as f64 + 1.0, t)).collect();
                    Some(Series { label: format!("{} x{}", label(*i, executor), run.threads), points, dashed: executor == "sequential" })
                })
                .collect()
        };
        let svg = line_chart(&format!("{w}: throughput per block"), "block", "transactions/s", &series, false)?;
        if !svg.is_empty() {
            let _ = writeln!(out, "<div class=\"chart\">{svg}</div>");
        }
        let _ = writeln!(out, "</div>");
    }
    let _ = writeln!(out, "<h2>All results</h2>\n{}", results_table_html(reports));
    for (name, r) in reports {
        let s = &r.settings;
        let _ = writeln!(
            out,
            "<h2>{}</h2><table><tr><th class=l>commit</th><td class=l>{}</td></tr><tr><th class=l>machine</th><td class=l>{} ({} cores), {}, kernel {}, {}</td></tr>\
             <tr><th class=l>settings</th><td class=l>accounts {}, block {} txs, {} measured blocks after {} warm-up, distribution {}, seed {}, tx cost {} µs, interleave {}</td></tr>\
             <tr><th class=l>mismatches</th><td class=\"l{}\">{}</td></tr></table>",
            escape(name),
            escape(&r.commit),
            escape(&r.machine.cpu_model),
            r.machine.cores,
            escape(&r.machine.os),
            escape(&r.machine.kernel),
            escape(&r.machine.arch),
            s.accounts,
            s.block_size,
            s.measured_blocks(),
            s.warmup_blocks,
            escape(&s.distribution),
            s.seed,
            s.tx_cost_us,
            s.interleave,
            if r.mismatches.is_empty() { "" } else { " mismatch" },
            if r.mismatches.is_empty() { "none".to_string() } else { escape(&r.mismatches.join("; ")) }
        );
    }
    out.push_str("</body></html>\n");
    Ok(out)
}

fn results_table_html(reports: &[Named<'_>]) -> String {
    let mut out = String::from(
        "<table><tr><th class=l>report</th><th class=l>workload</th><th class=l>executor</th><th>threads</th><th>TPS</th><th>speedup</th>\
         <th>p50 ms</th><th>p99 ms</th><th class=l>paths</th></tr>\n",
    );
    for (name, r) in reports {
        for x in &r.results {
            let paths: Vec<String> = x.paths.iter().map(|(p, n)| format!("{p} {n}")).collect();
            let _ = writeln!(
                out,
                "<tr><td class=l>{}</td><td class=l>{}</td><td class=l>{}</td><td>{}</td><td>{:.0}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td class=l>{}</td></tr>",
                escape(name),
                escape(&x.workload),
                escape(&x.executor),
                x.threads,
                x.tps_median,
                x.speedup,
                x.block_latency_us.p50 / 1e3,
                x.block_latency_us.p99 / 1e3,
                escape(&paths.join(", "))
            );
        }
    }
    out.push_str("</table>");
    out
}

/// One CSV row per result of every report, with a header.
pub fn csv(reports: &[Named<'_>]) -> String {
    let mut out = String::from(
        "report,commit,cpu,cores,workload,executor,threads,blocks,txs,tps_median,tps_mean,speedup,p50_us,p90_us,p99_us,max_us,exec_share,reexecutions_per_tx,failure_rate,state_root\n",
    );
    let field = |s: &str| if s.contains([',', '"', '\n']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() };
    for (name, r) in reports {
        for x in &r.results {
            let l = &x.block_latency_us;
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{},{},{},{:.1},{:.1},{:.4},{:.1},{:.1},{:.1},{:.1},{:.4},{:.4},{:.4},{}",
                field(name),
                field(&r.commit),
                field(&r.machine.cpu_model),
                r.machine.cores,
                field(&x.workload),
                field(&x.executor),
                x.threads,
                x.blocks,
                x.txs,
                x.tps_median,
                x.tps_mean,
                x.speedup,
                l.p50,
                l.p90,
                l.p99,
                l.max,
                x.exec_share,
                x.reexecutions_per_tx,
                x.failure_rate,
                x.state_root
            );
        }
    }
    out
}

/// A Markdown summary: per report, its machine and settings, then one table row per result.
pub fn markdown(reports: &[Named<'_>]) -> String {
    let mut out = String::new();
    for (name, r) in reports {
        let s = &r.settings;
        let _ = writeln!(
            out,
            "**{name}** — commit `{}`, {} ({} cores); {} accounts, blocks of {}, {} measured blocks, distribution `{}`{}\n",
            r.commit,
            r.machine.cpu_model,
            r.machine.cores,
            s.accounts,
            s.block_size,
            s.measured_blocks(),
            s.distribution,
            if r.mismatches.is_empty() { String::new() } else { format!(", **{} mismatches**", r.mismatches.len()) }
        );
        out.push_str("| workload | executor | threads | TPS | speedup | p99 block ms |\n| --- | --- | --- | --- | --- | --- |\n");
        for x in &r.results {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {:.2}× | {:.2} |",
                x.workload,
                x.executor,
                x.threads,
                human(x.tps_median),
                x.speedup,
                x.block_latency_us.p99 / 1e3
            );
        }
        out.push('\n');
    }
    out
}
