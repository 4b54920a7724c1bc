//! `occam report`: saved reports — `occam-bench/v1` and `occam-bench-sharded/v1` JSON files, or
//! the JSON Lines results of `occam sweep` holding either — as one self-contained HTML page
//! with charts, as CSV, or as a Markdown summary.
//!
//! The HTML page has no script and fetches nothing: every chart is inline SVG drawn with
//! `plotters`, legends are HTML under their chart (they never cover a line), the styles are
//! inline, and the only URL in it is the SVG namespace.
//!
//! Bench reports, per workload: throughput and speedup against threads (one line per executor,
//! the sequential reference as a dashed level), block latency p50/p99 against threads, and the
//! per-block throughput of each executor's largest run. Reports that differ in more than
//! threads or executor (sweep points, several files) are *groups*: a line per executor and
//! group, or, when that would be more than [`MAX_SERIES`] lines, one chart per executor with a
//! line per group; then throughput and speedup at the most threads against the group (for a
//! distribution sweep: against contention).
//!
//! Sharded reports, per workload: throughput and speedup (against 1 shard × 1 thread) against
//! the shard count, a line per cross-shard share, threads per shard, executor or group —
//! whichever vary — and, when the cross-shard share varies, the share of block time in the
//! cross-shard phase against the measured cross-shard share, a line per shard count.
//!
//! Then a table of every result and one row per report with its commit, settings and
//! mismatches.

use crate::compare::{load_any_report, AnyReport, CompareError};
use crate::runner::{BenchConfig, BenchReport, RunResult};
use crate::sharded::{ShardedReport, ShardedResult};
use crate::sweep::{read_lines, Point, SweepError};
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::PathBuf;

/// Why a chart could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("drawing a chart: {0}")]
pub struct ChartError(String);

fn err<E: std::fmt::Debug>(e: E) -> ChartError {
    ChartError(format!("{e:?}"))
}

/// Why `occam report` could not read its inputs.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// A report file could not be read or has another schema.
    #[error(transparent)]
    Report(#[from] CompareError),
    /// A sweep results file could not be read.
    #[error(transparent)]
    Sweep(#[from] SweepError),
}

/// One report to draw.
#[derive(Clone, Debug, PartialEq)]
pub struct Input {
    /// Its name in tables: the file name, or the sweep point's values that vary in its file
    /// (`zipf:0.99 / threads=2`).
    pub name: String,
    /// What the charts compare it across: the name without the values the charts already show
    /// on an axis or as a line (threads and executor; shards and cross-shard share). Reports of
    /// one group are drawn as one line.
    pub group: String,
    /// What tells groups apart: the sweep axes (`distribution`), or `report` for files.
    pub group_by: String,
    /// The report.
    pub report: AnyReport,
}

impl Input {
    /// A report read from a file of its own, named (and grouped) by `name`.
    pub fn file(name: &str, report: AnyReport) -> Input {
        Input { name: name.to_string(), group: name.to_string(), group_by: "report".into(), report }
    }
}

/// Sweep axes the charts show by themselves (not part of a group's name).
const CHARTED_AXES: [&str; 4] = ["threads", "executor", "shards", "cross_shard"];

/// Reads `occam report`'s inputs: sweep results (`.jsonl`, every line a point) and report
/// files (`occam bench --json`, with or without `--shards`).
pub fn load_inputs(paths: &[PathBuf]) -> Result<Vec<Input>, InputError> {
    let mut inputs = Vec::new();
    for path in paths {
        let file = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
        if path.extension().is_some_and(|e| e == "jsonl") {
            let lines = read_lines(path)?;
            let prefix = if paths.len() > 1 { format!("{file}: ") } else { String::new() };
            let points: Vec<&Point> = lines.iter().map(|l| &l.point).collect();
            for line in &lines {
                let (name, _) = varying(&line.point, &points, &[]);
                let (group, group_by) = varying(&line.point, &points, &CHARTED_AXES);
                inputs.push(Input {
                    name: format!("{prefix}{name}"),
                    group: format!("{prefix}{group}"),
                    group_by: if paths.len() > 1 { format!("file / {group_by}") } else { group_by },
                    report: line.report.clone(),
                });
            }
        } else {
            inputs.push(Input::file(&file, load_any_report(path)?));
        }
    }
    Ok(inputs)
}

/// The values of `point` on the axes that vary among `all`, leaving out `skip` (text values
/// as they are, numbers as `axis=value`), and the names of those axes.
fn varying(point: &Point, all: &[&Point], skip: &[&str]) -> (String, String) {
    let shown: Vec<(&String, &serde_json::Value)> =
        point.iter().filter(|(k, v)| !skip.contains(&k.as_str()) && all.iter().any(|o| o.get(*k) != Some(*v))).collect();
    if shown.is_empty() {
        return ("base".into(), "sweep point".into());
    }
    let values: Vec<String> = shown.iter().map(|(k, v)| v.as_str().map_or_else(|| format!("{k}={v}"), str::to_string)).collect();
    let keys: Vec<&str> = shown.iter().map(|(k, _)| k.as_str()).collect();
    (values.join(" / "), keys.join(" / "))
}

/// The most lines one chart draws before the page splits it into one chart per executor.
pub const MAX_SERIES: usize = 6;

/// The Tableau 10 colours.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(127, 127, 127),
];

/// Colour of the sequential reference.
const GREY: usize = 9;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// One line of a chart.
struct Series {
    label: String,
    color: usize,
    points: Vec<(f64, f64)>,
    dashed: bool,
    /// A dot on every point (not on a reference level).
    markers: bool,
}

impl Series {
    fn new(label: String, color: usize, points: Vec<(f64, f64)>) -> Series {
        Series { label, color, points, dashed: false, markers: true }
    }

    fn dashed(self) -> Series {
        Series { dashed: true, ..self }
    }

    /// A dashed grey level at `y` from `x0` to `x1`: a reference such as the sequential run.
    fn level(label: String, y: f64, (x0, x1): (f64, f64)) -> Series {
        Series { label, color: GREY, points: vec![(x0, y), (x1, y)], dashed: true, markers: false }
    }
}

/// How a chart's x axis maps values.
enum XAxis {
    /// Thread or shard counts, on a log2 scale, a tick at every value present.
    Log2,
    /// Plain numbers (percentages), round ticks.
    Linear,
    /// Whole numbers (blocks), round ticks at whole numbers only.
    Whole,
    /// `labels[i]` under `x = i`.
    Categories(Vec<String>),
}

/// A chart: what [`render`] draws.
struct Chart {
    /// `data-chart` of its figure, for tests and styling.
    kind: &'static str,
    title: String,
    x_desc: String,
    y_desc: &'static str,
    x: XAxis,
    series: Vec<Series>,
    /// Top of the y axis, when charts side by side share it.
    y_max: Option<f64>,
    /// Narrow, for three in a row.
    small: bool,
}

impl Chart {
    fn new(kind: &'static str, title: String, x_desc: &str, y_desc: &'static str, x: XAxis, series: Vec<Series>) -> Chart {
        Chart { kind, title, x_desc: x_desc.to_string(), y_desc, x, series, y_max: None, small: false }
    }

    fn top(&self) -> f64 {
        self.series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).fold(0.0, f64::max)
    }
}

/// Charts under an optional heading, drawn in one row (small multiples share their y axis).
struct Row {
    heading: Option<String>,
    charts: Vec<Chart>,
}

impl Row {
    fn one(charts: Vec<Chart>) -> Row {
        Row { heading: None, charts }
    }

    /// Small multiples: narrow charts with one y axis.
    fn multiples(heading: String, mut charts: Vec<Chart>) -> Row {
        let top = charts.iter().map(Chart::top).fold(0.0, f64::max);
        for c in &mut charts {
            c.y_max = Some(top);
            c.small = true;
        }
        Row { heading: Some(heading), charts }
    }
}

/// A linear axis with ticks exactly at the given values (plotters picks round values by itself).
struct TickedAxis {
    inner: plotters::coord::types::RangedCoordf64,
    ticks: Vec<f64>,
}

impl Ranged for TickedAxis {
    type FormatOption = plotters::coord::ranged1d::DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.inner.map(value, limit)
    }

    fn key_points<Hint: plotters::coord::ranged1d::KeyPointHint>(&self, _: Hint) -> Vec<f64> {
        self.ticks.clone()
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.inner.range()
    }
}

/// Size of a chart, and of a small one (three in a row of a 1400-pixel window).
const SIZE: (u32, u32) = (600, 340);
const SMALL: (u32, u32) = (430, 300);

/// Up to about `n` round ticks covering `lo..=hi`; with `whole`, whole numbers only (steps of
/// 1, 2 or 5 × 10^k, at least 1).
fn round_ticks(lo: f64, hi: f64, n: usize, whole: bool) -> Vec<f64> {
    let span = (hi - lo).max(1e-9);
    let raw = span / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let mantissas: &[f64] = if whole { &[1.0, 2.0, 5.0, 10.0] } else { &[1.0, 2.0, 2.5, 5.0, 10.0] };
    let step = mantissas.iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag);
    let step = if whole { step.round().max(1.0) } else { step };
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

/// The chart as a `<figure>`: inline SVG, then an HTML legend. Empty without points.
fn render(c: &Chart) -> Result<String, ChartError> {
    let all: Vec<(f64, f64)> = c.series.iter().flat_map(|s| s.points.iter().copied()).collect();
    if all.is_empty() {
        return Ok(String::new());
    }
    let (width, height) = if c.small { SMALL } else { SIZE };
    let log2 = matches!(c.x, XAxis::Log2);
    let fx = |x: f64| if log2 { x.max(1.0).log2() } else { x };
    let (x_min, x_max) = all.iter().fold((f64::MAX, f64::MIN), |(lo, hi), p| (lo.min(fx(p.0)), hi.max(fx(p.0))));
    let y_max = c.y_max.unwrap_or_else(|| c.top()) * 1.1;
    let pad = match c.x {
        XAxis::Categories(_) => 0.5,
        _ if x_max > x_min => (x_max - x_min) * 0.04,
        _ => 0.5,
    };
    let (x_lo, x_hi) = (x_min - pad, x_max + pad);
    let mut ticks: Vec<f64> = match &c.x {
        XAxis::Log2 => all.iter().map(|p| fx(p.0)).collect(),
        XAxis::Linear => round_ticks(x_min, x_max, 8, false),
        XAxis::Whole => round_ticks(x_min, x_max, 8, true),
        XAxis::Categories(l) => (0..l.len()).map(|i| i as f64).collect(),
    };
    ticks.sort_by(f64::total_cmp);
    ticks.dedup_by(|a, b| (*a - *b).abs() < 1e-9);
    if log2 && ticks.len() > 10 {
        // Too many distinct counts to label: powers of two only.
        ticks.retain(|t| (t - t.round()).abs() < 1e-9);
    }
    // Category names are cut to the room they have (the full names are in the tables).
    let room = ((width as f64 - 80.0) / ticks.len().max(1) as f64 / 6.5).max(4.0) as usize;
    let x_fmt = |x: &f64| match &c.x {
        XAxis::Categories(l) => {
            let name = l.get(x.round().max(0.0) as usize).cloned().unwrap_or_default();
            if name.chars().count() > room {
                format!("{}…", name.chars().take(room.saturating_sub(1)).collect::<String>())
            } else {
                name
            }
        }
        XAxis::Log2 => format!("{}", 2f64.powf(*x).round()),
        XAxis::Linear => human(*x),
        XAxis::Whole => format!("{}", x.round()),
    };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(&c.title, ("sans-serif", 19))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(TickedAxis { inner: (x_lo..x_hi).into(), ticks }, 0.0..y_max.max(1e-9))
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(c.x_desc.as_str())
            .y_desc(c.y_desc)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&|y| human(*y))
            .axis_desc_style(("sans-serif", 16))
            .label_style(("sans-serif", 14))
            .light_line_style(WHITE)
            .bold_line_style(RGBColor(225, 225, 225))
            .draw()
            .map_err(err)?;
        for s in &c.series {
            let color = PALETTE[s.color % PALETTE.len()];
            let style = ShapeStyle { color: color.to_rgba(), filled: false, stroke_width: 2 };
            let points: Vec<(f64, f64)> = s.points.iter().map(|&(x, y)| (fx(x), y)).collect();
            if s.dashed {
                chart.draw_series(DashedLineSeries::new(points.clone(), 6, 4, style)).map_err(err)?;
            } else {
                chart.draw_series(LineSeries::new(points.clone(), style)).map_err(err)?;
            }
            if s.markers {
                chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled()))).map_err(err)?;
            }
        }
        root.present().map_err(err)?;
    }
    let mut out = format!("<figure class=\"chart\" data-chart=\"{}\" style=\"width:{width}px\">{svg}<figcaption>", c.kind);
    for s in &c.series {
        let RGBColor(r, g, b) = PALETTE[s.color % PALETTE.len()];
        let _ = write!(
            out,
            "<span class=\"key\"><i style=\"border-top:3px {} rgb({r},{g},{b})\"></i>{}</span> ",
            if s.dashed { "dashed" } else { "solid" },
            escape(&s.label)
        );
    }
    out.push_str("</figcaption></figure>\n");
    Ok(out)
}

/// `1.2M`, `340k`, `12`, `1.25`, `0.8`: short numbers for axes.
fn human(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.0}k", v / 1e3)
    } else if v >= 10.0 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Labels for lines told apart by several dimensions: a dimension shows only where it varies,
/// and the last one (the group, the least telling) only where the others do not already tell
/// the lines apart. `keys[i][d]` is line `i`'s value of dimension `d`.
fn labels(keys: &[Vec<String>]) -> Vec<String> {
    let dims = keys.first().map_or(0, Vec::len);
    let varies = |d: usize| keys.iter().any(|k| k[d] != keys[0][d]);
    let mut shown: Vec<usize> = (0..dims).filter(|&d| varies(d)).collect();
    if let Some(&last) = shown.last().filter(|&&d| d + 1 == dims && shown.len() > 1) {
        let without: Vec<Vec<&String>> = keys.iter().map(|k| shown.iter().filter(|&&d| d != last).map(|&d| &k[d]).collect()).collect();
        if without.iter().enumerate().all(|(i, a)| without[..i].iter().all(|b| a != b)) {
            shown.pop();
        }
    }
    if shown.is_empty() && dims > 0 {
        shown.push(0);
    }
    keys.iter().map(|k| shown.iter().map(|&d| k[d].as_str()).collect::<Vec<_>>().join(", ")).collect()
}

/// Distinct values in order of first appearance.
fn distinct<T: PartialEq + Clone>(items: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut out: Vec<T> = Vec::new();
    for x in items {
        if !out.contains(&x) {
            out.push(x);
        }
    }
    out
}

/// What the groups of `inputs` differ in, for an axis description.
fn group_axis<'a>(groups: impl IntoIterator<Item = &'a Input>) -> String {
    let names = distinct(groups.into_iter().map(|i| i.group_by.as_str()));
    if names.len() == 1 {
        names[0].to_string()
    } else {
        "report / sweep point".into()
    }
}

/// A figure of a run, as drawn.
type Figure = dyn Fn(&RunResult) -> f64;

/// The bench results of one workload: per (group, executor), one run per thread count (the
/// first met wins), sorted by threads.
type BenchRuns<'a> = BTreeMap<(usize, String), Vec<&'a RunResult>>;

fn bench_runs<'a>(inputs: &[(&'a Input, &'a BenchReport)], workload: &str) -> (Vec<String>, BenchRuns<'a>) {
    let groups = distinct(inputs.iter().filter(|(_, r)| r.results.iter().any(|x| x.workload == workload)).map(|(i, _)| i.group.clone()));
    let mut runs: BenchRuns<'a> = BTreeMap::new();
    for (input, r) in inputs {
        let Some(g) = groups.iter().position(|g| *g == input.group) else { continue };
        for x in r.results.iter().filter(|x| x.workload == workload) {
            let v = runs.entry((g, x.executor.clone())).or_default();
            if !v.iter().any(|y| y.threads == x.threads) {
                v.push(x);
            }
        }
    }
    for v in runs.values_mut() {
        v.sort_by_key(|x| x.threads);
    }
    (groups, runs)
}

/// The smallest and largest x of `series`.
fn x_span(series: &[Series]) -> (f64, f64) {
    series.iter().flat_map(|s| s.points.iter().map(|p| p.0)).fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)))
}

/// `series` with a dashed `1×` level across them, labelled `what`.
fn with_unit_level(mut series: Vec<Series>, what: &str) -> Vec<Series> {
    if !series.is_empty() {
        let span = x_span(&series);
        series.push(Series::level(format!("1× ({what})"), 1.0, span));
    }
    series
}

/// The charts of one workload's bench results.
fn bench_rows(inputs: &[(&Input, &BenchReport)], w: &str) -> Vec<Row> {
    let (groups, runs) = bench_runs(inputs, w);
    let executors: Vec<String> = distinct(runs.keys().map(|(_, e)| e.clone()).filter(|e| e != "sequential"));
    let color_of = |e: &str| executors.iter().position(|x| x == e).unwrap_or(GREY);
    let points = |v: &[&RunResult], f: &Figure| v.iter().map(|x| (x.threads as f64, f(x))).collect::<Vec<_>>();
    let tps = |x: &RunResult| x.tps_median;
    let speedup = |x: &RunResult| x.speedup;
    let p50 = |x: &RunResult| x.block_latency_us.p50 / 1e3;
    let p99 = |x: &RunResult| x.block_latency_us.p99 / 1e3;
    let threads = |kind, title: String, y_desc, series| Chart::new(kind, title, "threads", y_desc, XAxis::Log2, series);
    let parallel: Vec<(&(usize, String), &Vec<&RunResult>)> = runs.iter().filter(|((_, e), _)| e != "sequential").collect();
    if groups.len() == 1 {
        let mut t: Vec<Series> = parallel.iter().map(|((_, e), v)| Series::new(e.clone(), color_of(e), points(v, &tps))).collect();
        if let Some(seq) = runs.get(&(0, "sequential".to_string())) {
            let span = x_span(&t);
            t.push(Series::level("sequential".into(), seq[0].tps_median, if t.is_empty() { (1.0, 1.0) } else { span }));
        }
        let s = parallel.iter().map(|((_, e), v)| Series::new(e.clone(), color_of(e), points(v, &speedup))).collect();
        let l = parallel
            .iter()
            .flat_map(|((_, e), v)| {
                [
                    Series::new(format!("{e} p50"), color_of(e), points(v, &p50)),
                    Series::new(format!("{e} p99"), color_of(e), points(v, &p99)).dashed(),
                ]
            })
            .collect();
        // Per-block throughput of each executor's run with the most threads.
        let per_block = runs
            .iter()
            .filter_map(|((_, e), v)| {
                let run = v.last()?;
                let pts = run.tps_per_block.iter().enumerate().map(|(b, &t)| (b as f64 + 1.0, t)).collect();
                let s = Series::new(format!("{e} ×{}", run.threads), color_of(e), pts);
                Some(if e == "sequential" { s.dashed() } else { s })
            })
            .collect();
        return vec![Row::one(vec![
            threads("throughput", format!("{w}: throughput"), "transactions/s", t),
            threads("speedup", format!("{w}: speedup over sequential"), "speedup", with_unit_level(s, "sequential")),
            threads("latency", format!("{w}: block latency"), "ms", l),
            Chart::new("per-block", format!("{w}: throughput per block"), "block", "transactions/s", XAxis::Whole, per_block),
        ])];
    }
    let mut rows = Vec::new();
    // Several groups: a line per executor and group, or a row of charts per figure, one chart
    // per executor with a line per group.
    if parallel.len() <= MAX_SERIES {
        let keys: Vec<Vec<String>> = parallel.iter().map(|((g, e), _)| vec![e.clone(), groups[*g].clone()]).collect();
        let names = labels(&keys);
        let lines =
            |f: &Figure| parallel.iter().zip(&names).enumerate().map(|(i, ((_, v), n))| Series::new(n.clone(), i, points(v, f))).collect();
        rows.push(Row::one(vec![
            threads("throughput", format!("{w}: throughput"), "transactions/s", lines(&tps)),
            threads("speedup", format!("{w}: speedup over sequential"), "speedup", with_unit_level(lines(&speedup), "sequential")),
            threads("latency", format!("{w}: p99 block latency"), "ms", lines(&p99)),
        ]));
    } else {
        let figures: [(&str, &str, &str, &Figure); 3] = [
            ("throughput", "throughput", "transactions/s", &tps),
            ("speedup", "speedup over sequential", "speedup", &speedup),
            ("latency", "p99 block latency", "ms", &p99),
        ];
        for (kind, what, y_desc, f) in figures {
            let charts = executors
                .iter()
                .map(|e| {
                    let lines: Vec<Series> = parallel
                        .iter()
                        .filter(|((_, x), _)| x == e)
                        .map(|((g, _), v)| Series::new(groups[*g].clone(), *g, points(v, f)))
                        .collect();
                    let lines = if kind == "speedup" { with_unit_level(lines, "sequential") } else { lines };
                    threads(kind, format!("{w}, {e}: {what}"), y_desc, lines)
                })
                .collect();
            rows.push(Row::multiples(format!("{w}: {what} against threads, one chart per executor"), charts));
        }
    }
    // Against the group (sweep point, contention level…): each executor at its most threads.
    let most = distinct(parallel.iter().filter_map(|(_, v)| v.last().map(|x| x.threads)));
    let at = if most.len() == 1 { format!("at {} threads", most[0]) } else { "at the most threads".into() };
    let at_most = |f: &Figure, with_sequential: bool| -> Vec<Series> {
        let mut names: Vec<String> = executors.clone();
        if with_sequential {
            names.push("sequential".into());
        }
        names
            .iter()
            .map(|e| {
                let pts = (0..groups.len()).filter_map(|g| runs.get(&(g, e.clone()))?.last().map(|x| (g as f64, f(x)))).collect();
                let s = Series::new(e.clone(), color_of(e), pts);
                if e == "sequential" {
                    s.dashed()
                } else {
                    s
                }
            })
            .collect()
    };
    let x_desc = group_axis(inputs.iter().map(|(i, _)| *i).filter(|i| groups.contains(&i.group)));
    let by_group =
        |kind, title: String, y_desc, series| Chart::new(kind, title, &x_desc, y_desc, XAxis::Categories(groups.clone()), series);
    rows.push(Row {
        heading: Some(format!("{w}: against {x_desc}, {at}")),
        charts: vec![
            by_group("throughput-by-point", format!("{w}: throughput {at}"), "transactions/s", at_most(&tps, true)),
            by_group("speedup-by-point", format!("{w}: speedup {at}"), "speedup", with_unit_level(at_most(&speedup, false), "sequential")),
        ],
    });
    rows
}

/// A sharded result with the settings of its report.
struct ShardRow<'a> {
    group: &'a str,
    cross_asked: f64,
    x: &'a ShardedResult,
}

fn percent(v: f64) -> String {
    let p = v * 100.0;
    if p == p.round() {
        format!("{p:.0}%")
    } else {
        format!("{p:.1}%")
    }
}

/// Lines of `rows` keyed by `key` (the first row met for an x wins), labelled by [`labels`],
/// `x`/`y` their coordinates; sorted by x.
fn shard_lines(
    rows: &[&ShardRow<'_>],
    key: &dyn Fn(&ShardRow<'_>) -> Vec<String>,
    x: &dyn Fn(&ShardRow<'_>) -> f64,
    y: &dyn Fn(&ShardRow<'_>) -> f64,
) -> Vec<Series> {
    let keys: Vec<Vec<String>> = distinct(rows.iter().map(|r| key(r)));
    let names = labels(&keys);
    keys.iter()
        .zip(names)
        .enumerate()
        .map(|(i, (k, name))| {
            let mut pts: Vec<(f64, f64)> = Vec::new();
            for r in rows.iter().filter(|r| key(r) == *k) {
                if !pts.iter().any(|p| p.0 == x(r)) {
                    pts.push((x(r), y(r)));
                }
            }
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            Series::new(name, i, pts)
        })
        .collect()
}

/// The charts of one workload's sharded results.
fn sharded_rows(inputs: &[(&Input, &ShardedReport)], w: &str) -> Vec<Row> {
    let rows: Vec<ShardRow<'_>> = inputs
        .iter()
        .flat_map(|(i, r)| {
            r.results
                .iter()
                // The runs asked for; a 1 x 1 baseline only where 1 thread was asked for.
                .filter(|x| x.workload == w && (r.settings.threads.contains(&x.threads) || x.executor == "sequential"))
                .map(|x| ShardRow { group: &i.group, cross_asked: r.sharding.cross_share, x })
        })
        .collect();
    let executors = distinct(rows.iter().map(|r| r.x.executor.clone()));
    let key = |r: &ShardRow<'_>| {
        vec![
            r.x.executor.clone(),
            format!("{} thr/shard", r.x.threads),
            format!("cross-shard {}", percent(r.cross_asked)),
            r.group.to_string(),
        ]
    };
    let by_shards = |r: &ShardRow<'_>| {
        vec![format!("{} shards", r.x.shards), r.x.executor.clone(), format!("{} thr/shard", r.x.threads), r.group.to_string()]
    };
    let all: Vec<&ShardRow<'_>> = rows.iter().collect();
    let split = distinct(all.iter().map(|r| key(r))).len() > MAX_SERIES && executors.len() > 1;
    // One panel of all rows, or one per executor.
    let panels: Vec<(String, Vec<&ShardRow<'_>>)> = if split {
        executors.iter().map(|e| (format!("{w}, {e}"), all.iter().copied().filter(|r| r.x.executor == *e).collect())).collect()
    } else {
        vec![(w.to_string(), all.clone())]
    };
    let shards = |r: &ShardRow<'_>| r.x.shards as f64;
    let varies = distinct(rows.iter().map(|r| r.cross_asked.to_bits())).len() > 1;
    let charts = |kind: &'static str| -> Vec<Chart> {
        panels
            .iter()
            .filter_map(|(title, rows)| {
                let line = |y: &dyn Fn(&ShardRow<'_>) -> f64| shard_lines(rows, &key, &shards, y);
                Some(match kind {
                    "sharded-throughput" => {
                        Chart::new(kind, format!("{title}: throughput"), "shards", "transactions/s", XAxis::Log2, line(&|r| r.x.tps))
                    }
                    "sharded-speedup" => Chart::new(
                        kind,
                        format!("{title}: speedup over 1 shard × 1 thread"),
                        "shards",
                        "speedup",
                        XAxis::Log2,
                        with_unit_level(line(&|r| r.x.speedup), "1 shard × 1 thread"),
                    ),
                    // The cost of cross-shard transactions, where their share varies.
                    _ if varies => {
                        let multi: Vec<&ShardRow<'_>> = rows.iter().copied().filter(|r| r.x.shards > 1).collect();
                        Chart::new(
                            kind,
                            format!("{title}: time in the cross-shard phase"),
                            "cross-shard transactions (measured), %",
                            "% of block time",
                            XAxis::Linear,
                            shard_lines(&multi, &by_shards, &|r| r.x.cross_share * 100.0, &|r| r.x.cross_overhead * 100.0),
                        )
                    }
                    _ => return None,
                })
            })
            .collect()
    };
    if !split {
        return vec![Row::one(["sharded-throughput", "sharded-speedup", "cross-overhead"].into_iter().flat_map(charts).collect())];
    }
    [
        ("sharded-throughput", "throughput against shards"),
        ("sharded-speedup", "speedup against shards"),
        ("cross-overhead", "time in the cross-shard phase"),
    ]
    .into_iter()
    .map(|(kind, what)| Row::multiples(format!("{w}: {what}, one chart per executor"), charts(kind)))
    .filter(|r| !r.charts.is_empty())
    .collect()
}

fn bench_of(inputs: &[Input]) -> Vec<(&Input, &BenchReport)> {
    inputs.iter().filter_map(|i| if let AnyReport::Bench(r) = &i.report { Some((i, r)) } else { None }).collect()
}

fn sharded_of(inputs: &[Input]) -> Vec<(&Input, &ShardedReport)> {
    inputs.iter().filter_map(|i| if let AnyReport::Sharded(r) = &i.report { Some((i, r)) } else { None }).collect()
}

/// The self-contained HTML page for `inputs`: per workload the charts of its bench results,
/// then of its sharded results; then every result and every report's settings.
pub fn render_html(inputs: &[Input]) -> Result<String, ChartError> {
    let bench = bench_of(inputs);
    let sharded = sharded_of(inputs);
    let mut out = String::new();
    let title = if inputs.len() <= 3 {
        format!("occam report — {}", inputs.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(", "))
    } else {
        format!("occam report — {} reports", inputs.len())
    };
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\n<style>\
         body{{font-family:sans-serif;margin:24px;color:#222}} h2{{margin-top:32px}} .charts{{display:flex;flex-wrap:wrap;gap:12px}}\
         .chart{{border:1px solid #ddd;margin:0}} .chart svg{{display:block}} h3{{font-size:15px;font-weight:normal;color:#555;margin:18px 0 8px}} figcaption{{font-size:13px;padding:4px 8px 8px;line-height:1.7}}\
         .key{{white-space:nowrap;margin-right:10px}} .key i{{display:inline-block;width:22px;vertical-align:middle;margin-right:4px}}\
         table{{border-collapse:collapse;font-size:13px}} td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}\
         th{{background:#f3f3f3}} td.l,th.l{{text-align:left}} .mismatch{{color:#b00;font-weight:bold}}</style></head><body>\n<h1>{}</h1>\n",
        escape(&title),
        escape(&title)
    );
    let workloads = distinct(
        bench
            .iter()
            .flat_map(|(_, r)| r.results.iter().map(|x| x.workload.clone()))
            .chain(sharded.iter().flat_map(|(_, r)| r.results.iter().map(|x| x.workload.clone()))),
    );
    for w in &workloads {
        for (heading, rows) in [(w.clone(), bench_rows(&bench, w)), (format!("{w}: shards"), sharded_rows(&sharded, w))] {
            let mut section = String::new();
            for row in &rows {
                let drawn: Vec<String> = row.charts.iter().map(render).collect::<Result<_, _>>()?;
                if drawn.iter().all(String::is_empty) {
                    continue;
                }
                if let Some(h) = &row.heading {
                    let _ = writeln!(section, "<h3>{}</h3>", escape(h));
                }
                let _ = writeln!(section, "<div class=\"charts\">\n{}</div>", drawn.concat());
            }
            if !section.is_empty() {
                let _ = writeln!(out, "<h2>{}</h2>\n{section}", escape(&heading));
            }
        }
    }
    if !bench.is_empty() {
        let _ = writeln!(out, "<h2>All results</h2>\n{}", bench_table(&bench));
    }
    if !sharded.is_empty() {
        let _ = writeln!(out, "<h2>Sharded results</h2>\n{}", sharded_table(&sharded));
    }
    let _ = writeln!(out, "<h2>Reports</h2>\n{}", reports_table(inputs));
    out.push_str("</body></html>\n");
    Ok(out)
}

/// An HTML table: `header` cells (`<` first: left-aligned), then rows of already escaped cells.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let cell = |tag: &str, c: &str, left: bool| format!("<{tag}{}>{c}</{tag}>", if left { " class=l" } else { "" });
    let left: Vec<bool> = header.iter().map(|h| h.starts_with('<')).collect();
    let mut out = String::from("<table><tr>");
    for (h, &l) in header.iter().zip(&left) {
        out.push_str(&cell("th", h.trim_start_matches('<'), l));
    }
    out.push_str("</tr>\n");
    for row in rows {
        out.push_str("<tr>");
        for (c, &l) in row.iter().zip(&left) {
            out.push_str(&cell("td", c, l));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>");
    out
}

fn bench_table(bench: &[(&Input, &BenchReport)]) -> String {
    let rows: Vec<Vec<String>> = bench
        .iter()
        .flat_map(|(i, r)| {
            r.results.iter().map(|x| {
                let paths: Vec<String> = x.paths.iter().map(|(p, n)| format!("{p} {n}")).collect();
                vec![
                    escape(&i.name),
                    escape(&x.workload),
                    escape(&x.executor),
                    x.threads.to_string(),
                    format!("{:.0}", x.tps_median),
                    format!("{:.2}", x.speedup),
                    format!("{:.2}", x.block_latency_us.p50 / 1e3),
                    format!("{:.2}", x.block_latency_us.p99 / 1e3),
                    escape(&paths.join(", ")),
                ]
            })
        })
        .collect();
    table(&["<report", "<workload", "<executor", "threads", "TPS", "speedup", "p50 ms", "p99 ms", "<paths"], &rows)
}

fn sharded_table(sharded: &[(&Input, &ShardedReport)]) -> String {
    let rows: Vec<Vec<String>> = sharded
        .iter()
        .flat_map(|(i, r)| {
            r.results.iter().map(|x| {
                vec![
                    escape(&i.name),
                    escape(&x.workload),
                    escape(&x.executor),
                    x.shards.to_string(),
                    x.threads.to_string(),
                    format!("{:.0}", x.tps),
                    format!("{:.2}", x.speedup),
                    percent(r.sharding.cross_share),
                    format!("{:.1}%", x.cross_share * 100.0),
                    format!("{:.2}", x.imbalance),
                    format!("{:.1}%", x.cross_overhead * 100.0),
                    format!("{:.1}", x.messages_per_block),
                ]
            })
        })
        .collect();
    table(
        &[
            "<report",
            "<workload",
            "<executor",
            "shards",
            "threads/shard",
            "TPS",
            "speedup",
            "cross asked",
            "cross",
            "imbalance",
            "xoverhead",
            "messages/block",
        ],
        &rows,
    )
}

/// One row per report: kind, commit, machine, settings, mismatches.
fn reports_table(inputs: &[Input]) -> String {
    let rows: Vec<Vec<String>> = inputs
        .iter()
        .map(|i| {
            let m = i.report.machine();
            let (settings, sharding) = match &i.report {
                AnyReport::Bench(r) => (&r.settings, String::new()),
                AnyReport::Sharded(r) => (
                    &r.settings,
                    format!(
                        "; shards {:?}, cross-shard {}, partitioner {}, {}",
                        r.sharding.shards,
                        percent(r.sharding.cross_share),
                        r.sharding.partitioner,
                        r.sharding.cross_batching
                    ),
                ),
            };
            let mismatches = i.report.mismatches();
            vec![
                escape(&i.name),
                escape(i.report.schema()),
                escape(i.report.commit()),
                escape(&format!("{} ({} cores), {}, kernel {}, {}", m.cpu_model, m.cores, m.os, m.kernel, m.arch)),
                escape(&format!(
                    "{}, tx cost {} µs, threads {:?}, executors {}, interleave {}{sharding}",
                    settings_text(settings),
                    settings.tx_cost_us,
                    settings.threads,
                    settings.executors.join(","),
                    settings.interleave
                )),
                if mismatches.is_empty() {
                    "none".into()
                } else {
                    format!("<span class=mismatch>{}</span>", escape(&mismatches.join("; ")))
                },
            ]
        })
        .collect();
    table(&["<report", "<schema", "<commit", "<machine", "<settings", "<mismatches"], &rows)
}

/// `accounts 1000, blocks of 100 txs, 5 measured after 1 warm-up, distribution uniform, seed 42`.
fn settings_text(s: &BenchConfig) -> String {
    format!(
        "accounts {}, blocks of {} txs, {} measured after {} warm-up, distribution {}, seed {}",
        s.accounts,
        s.block_size,
        s.measured_blocks(),
        s.warmup_blocks,
        s.distribution,
        s.seed
    )
}

/// The CSV header: bench figures, then the sharded ones; a row leaves empty what its kind
/// does not have. `threads` is per shard on sharded rows, `tps_median` their median TPS and
/// `speedup` against 1 shard × 1 thread.
pub const CSV_HEADER: &str = "report,commit,cpu,cores,workload,executor,threads,blocks,txs,tps_median,tps_mean,speedup,p50_us,p90_us,p99_us,max_us,exec_share,reexecutions_per_tx,failure_rate,state_root,schema,shards,cross_share_asked,cross_share,imbalance,cross_overhead,messages_per_block";

/// One CSV row per result of every input, bench and sharded alike, under [`CSV_HEADER`].
pub fn render_csv(inputs: &[Input]) -> String {
    let mut out = format!("{CSV_HEADER}\n");
    let field = |s: &str| if s.contains([',', '"', '\n']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() };
    let (f1, f4) = (|v: f64| format!("{v:.1}"), |v: f64| format!("{v:.4}"));
    for i in inputs {
        let m = i.report.machine();
        let head = [field(&i.name), field(i.report.commit()), field(&m.cpu_model), m.cores.to_string()];
        let rows: Vec<Vec<String>> = match &i.report {
            AnyReport::Bench(r) => r
                .results
                .iter()
                .map(|x| {
                    let l = &x.block_latency_us;
                    let mut row = vec![field(&x.workload), field(&x.executor), x.threads.to_string(), x.blocks.to_string()];
                    row.extend([x.txs.to_string(), f1(x.tps_median), f1(x.tps_mean), f4(x.speedup)]);
                    row.extend([f1(l.p50), f1(l.p90), f1(l.p99), f1(l.max), f4(x.exec_share), f4(x.reexecutions_per_tx)]);
                    row.extend([f4(x.failure_rate), x.state_root.clone(), r.schema.clone()]);
                    row
                })
                .collect(),
            AnyReport::Sharded(r) => r
                .results
                .iter()
                .map(|x| {
                    let mut row = vec![field(&x.workload), field(&x.executor), x.threads.to_string(), String::new()];
                    row.extend([x.txs.to_string(), f1(x.tps), String::new(), f4(x.speedup)]);
                    row.extend(std::iter::repeat_n(String::new(), 7));
                    row.extend([x.state_root.clone(), r.schema.clone(), x.shards.to_string(), r.sharding.cross_share.to_string()]);
                    row.extend([f4(x.cross_share), f4(x.imbalance), f4(x.cross_overhead), f1(x.messages_per_block)]);
                    row
                })
                .collect(),
        };
        for mut row in rows {
            // Bench rows leave the sharded columns empty.
            row.resize(CSV_HEADER.split(',').count() - head.len(), String::new());
            let _ = writeln!(out, "{},{}", head.join(","), row.join(","));
        }
    }
    out
}

/// A Markdown table.
fn md_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = format!("| {} |\n|{}\n", header.join(" | "), " --- |".repeat(header.len()));
    for row in rows {
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
    out
}

/// A Markdown summary: per input, its machine and settings, then one table row per result.
pub fn render_markdown(inputs: &[Input]) -> String {
    let mut out = String::new();
    for i in inputs {
        let mismatches = i.report.mismatches();
        let flag = if mismatches.is_empty() { String::new() } else { format!("; **{} mismatches**", mismatches.len()) };
        let _ = write!(out, "**{}** — commit `{}`, {}; ", i.name, i.report.commit(), i.report.machine().summary());
        let times = |v: f64| format!("{v:.2}×");
        match &i.report {
            AnyReport::Bench(r) => {
                let _ = writeln!(out, "{}{flag}\n", settings_text(&r.settings));
                let rows: Vec<Vec<String>> = r
                    .results
                    .iter()
                    .map(|x| {
                        let p99 = format!("{:.2}", x.block_latency_us.p99 / 1e3);
                        vec![x.workload.clone(), x.executor.clone(), x.threads.to_string(), human(x.tps_median), times(x.speedup), p99]
                    })
                    .collect();
                out.push_str(&md_table(&["workload", "executor", "threads", "TPS", "speedup", "p99 block ms"], &rows));
            }
            AnyReport::Sharded(r) => {
                let sc = &r.sharding;
                let _ = writeln!(
                    out,
                    "{}; sharded: partitioner `{}`, cross-shard transfers asked {}, coordination `{}`{flag}\n",
                    settings_text(&r.settings),
                    sc.partitioner,
                    percent(sc.cross_share),
                    sc.cross_batching
                );
                let rows: Vec<Vec<String>> = r
                    .results
                    .iter()
                    .map(|x| {
                        let mut row = vec![x.workload.clone(), x.executor.clone(), x.shards.to_string(), x.threads.to_string()];
                        row.extend([human(x.tps), times(x.speedup), format!("{:.1}%", x.cross_share * 100.0)]);
                        row.extend([format!("{:.2}", x.imbalance), format!("{:.1}%", x.cross_overhead * 100.0)]);
                        row
                    })
                    .collect();
                let header = [
                    "workload",
                    "executor",
                    "shards",
                    "threads/shard",
                    "TPS",
                    "speedup vs 1×1",
                    "cross-shard",
                    "imbalance",
                    "cross-shard phase",
                ];
                out.push_str(&md_table(&header, &rows));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_axes_tick_whole_numbers_only() {
        for hi in [1.0, 2.0, 3.0, 5.0, 7.0, 13.0, 37.0, 1234.0] {
            let ticks = round_ticks(1.0, hi, 8, true);
            assert!(!ticks.is_empty() && ticks.len() <= 9, "1..={hi}: {ticks:?}");
            assert!(ticks.iter().all(|t| t.fract() == 0.0 && (1.0..=hi).contains(t)), "1..={hi}: {ticks:?}");
        }
        assert_eq!(round_ticks(1.0, 3.0, 8, true), [1.0, 2.0, 3.0]);
        assert_eq!(round_ticks(0.0, 1.0, 4, false), [0.0, 0.25, 0.5, 0.75, 1.0], "other linear axes keep fractions");

        // Three blocks: ticks and labels 1, 2, 3, and nothing between them.
        let series = vec![Series::new("parallel".into(), 0, vec![(1.0, 5e5), (2.0, 6e5), (3.0, 5.5e5)])];
        let svg = render(&Chart::new("per-block", "throughput per block".into(), "block", "transactions/s", XAxis::Whole, series)).unwrap();
        // plotters writes each text on a line of its own, before `</text>`.
        let lines: Vec<&str> = svg.lines().collect();
        let texts: Vec<&str> = lines.windows(2).filter(|w| w[1] == "</text>").map(|w| w[0]).collect();
        for label in ["1", "2", "3"] {
            assert!(texts.contains(&label), "no tick {label}: {texts:?}");
        }
        let fractional = texts.iter().filter(|t| t.parse::<f64>().is_ok_and(|x| x.fract() != 0.0)).collect::<Vec<_>>();
        assert!(fractional.is_empty(), "fractional block ticks {fractional:?}");
    }
}
