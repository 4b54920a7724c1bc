//! `occam sweep --config sweep.toml`: the Cartesian product of chosen settings, one bench run
//! per point, results appended to one JSON Lines file that a later run resumes.
//!
//! ```toml
//! # Every point starts from these (names as the `occam bench` flags, `-` or `_`):
//! [base]
//! accounts = 100000
//! txs = 50000
//! block_size = 10000
//! threads = [1, 2, 4, 8, 16]
//! executor = ["sequential", "parallel", "declared", "auto"]
//!
//! # …and takes one value of each axis:
//! [axes]
//! workload = ["transfer", "smallbank"]
//! distribution = ["uniform", "zipf:0.9", "zipf:0.99"]
//! ```
//!
//! Axes: `workload`, `distribution`, `block_size`, `accounts`, `tx_cost_us`, `seed`. Each point
//! is one `occam bench` run over all of the base's executors and thread counts, so a sweep over
//! `distribution` with threads in the base gives throughput against threads *and* against
//! contention. The results file holds one line per finished point, `{"point": {...},
//! "report": <occam-bench/v1 report>}`; points already in it are skipped, so an interrupted
//! sweep continues where it stopped. `occam report` reads the file directly.

use crate::runner::{run_bench, BenchConfig, BenchReport, Progress};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Why a sweep could not run.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// The configuration file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The configuration is not valid TOML or has unknown keys.
    #[error("{path}: {message}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A line of an existing results file is damaged.
    #[error("{path}, line {line}: {message}")]
    Results {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// The most points one sweep may have.
pub const MAX_POINTS: usize = 10_000;

/// A sweep file.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SweepConfig {
    /// Settings every point starts from.
    #[serde(default)]
    pub base: Base,
    /// The swept settings: every combination of one value per axis is a point.
    #[serde(default)]
    pub axes: Axes,
}

/// The base settings of a sweep (defaults as `occam bench`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
#[allow(missing_docs)]
pub struct Base {
    #[serde(alias = "block_size")]
    pub block_size: usize,
    pub accounts: u64,
    pub txs: usize,
    pub warmup: usize,
    pub threads: Vec<usize>,
    pub executor: Vec<String>,
    pub workload: String,
    pub distribution: String,
    pub seed: u64,
    #[serde(alias = "tx_cost_us")]
    pub tx_cost_us: f64,
    pub interleave: bool,
}

impl Default for Base {
    fn default() -> Self {
        Base {
            block_size: 10_000,
            accounts: 100_000,
            txs: 100_000,
            warmup: 1,
            threads: vec![1, 2],
            executor: ["sequential", "parallel", "declared", "auto"].map(String::from).to_vec(),
            workload: "transfer".into(),
            distribution: "uniform".into(),
            seed: 42,
            tx_cost_us: 0.0,
            interleave: false,
        }
    }
}

/// The axes of a sweep; an empty axis takes the base's value.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[allow(missing_docs)]
pub struct Axes {
    #[serde(default)]
    pub workload: Vec<String>,
    #[serde(default)]
    pub distribution: Vec<String>,
    #[serde(default, alias = "block_size")]
    pub block_size: Vec<usize>,
    #[serde(default)]
    pub accounts: Vec<u64>,
    #[serde(default, alias = "tx_cost_us")]
    pub tx_cost_us: Vec<f64>,
    #[serde(default)]
    pub seed: Vec<u64>,
}

/// One point: the axis values it takes, by axis name.
pub type Point = BTreeMap<String, serde_json::Value>;

/// One line of the results file.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct SweepLine {
    /// The point's axis values.
    pub point: Point,
    /// Its bench report.
    pub report: BenchReport,
}

impl SweepConfig {
    /// Reads and checks a sweep file.
    pub fn load(path: &Path) -> Result<Self, SweepError> {
        let text = std::fs::read_to_string(path).map_err(|source| SweepError::Io { path: path.into(), source })?;
        let cfg: SweepConfig = toml::from_str(&text).map_err(|e| SweepError::Config { path: path.into(), message: e.to_string() })?;
        let points = cfg.points();
        if points.len() > MAX_POINTS {
            return Err(SweepError::Config {
                path: path.into(),
                message: format!("{} points, over the limit of {MAX_POINTS}", points.len()),
            });
        }
        for (point, bench) in &points {
            bench.validate().map_err(|e| SweepError::Config { path: path.into(), message: format!("point {}: {e}", describe(point)) })?;
        }
        Ok(cfg)
    }

    /// Every point with its bench settings, in a fixed order (axes vary fastest last).
    pub fn points(&self) -> Vec<(Point, BenchConfig)> {
        let b = &self.base;
        let or = |v: &Vec<serde_json::Value>, d: serde_json::Value| if v.is_empty() { vec![d] } else { v.clone() };
        let axes: Vec<(&str, Vec<serde_json::Value>, bool)> = vec![
            ("workload", or(&json(&self.axes.workload), b.workload.clone().into()), !self.axes.workload.is_empty()),
            ("distribution", or(&json(&self.axes.distribution), b.distribution.clone().into()), !self.axes.distribution.is_empty()),
            ("block_size", or(&json(&self.axes.block_size), b.block_size.into()), !self.axes.block_size.is_empty()),
            ("accounts", or(&json(&self.axes.accounts), b.accounts.into()), !self.axes.accounts.is_empty()),
            ("tx_cost_us", or(&json(&self.axes.tx_cost_us), serde_json::json!(b.tx_cost_us)), !self.axes.tx_cost_us.is_empty()),
            ("seed", or(&json(&self.axes.seed), b.seed.into()), !self.axes.seed.is_empty()),
        ];
        let mut points: Vec<Vec<(&str, serde_json::Value, bool)>> = vec![Vec::new()];
        for (name, values, swept) in &axes {
            points = points
                .into_iter()
                .flat_map(|p| values.iter().map(move |v| [p.clone(), vec![(*name, v.clone(), *swept)]].concat()))
                .collect();
        }
        points
            .into_iter()
            .map(|p| {
                let get = |n: &str| p.iter().find(|(k, _, _)| *k == n).map(|(_, v, _)| v.clone()).expect("every axis is set");
                let bench = BenchConfig {
                    workloads: vec![get("workload").as_str().unwrap_or_default().to_string()],
                    accounts: get("accounts").as_u64().unwrap_or(b.accounts),
                    txs: b.txs,
                    block_size: get("block_size").as_u64().map_or(b.block_size, |v| v as usize),
                    warmup_blocks: b.warmup,
                    threads: b.threads.clone(),
                    executors: b.executor.clone(),
                    distribution: get("distribution").as_str().unwrap_or_default().to_string(),
                    seed: get("seed").as_u64().unwrap_or(b.seed),
                    tx_cost_us: get("tx_cost_us").as_f64().unwrap_or(b.tx_cost_us),
                    interleave: b.interleave,
                };
                let point: Point = p.into_iter().filter(|(_, _, swept)| *swept).map(|(k, v, _)| (k.to_string(), v)).collect();
                (point, bench)
            })
            .collect()
    }
}

/// Axis values as JSON (plain strings and numbers: serialising cannot fail).
fn json<T: Serialize>(values: &[T]) -> Vec<serde_json::Value> {
    values.iter().map(|x| serde_json::to_value(x).unwrap_or(serde_json::Value::Null)).collect()
}

/// `workload=transfer, distribution=zipf:0.9`: a point for people.
pub fn describe(point: &Point) -> String {
    if point.is_empty() {
        return "base".into();
    }
    point.iter().map(|(k, v)| format!("{k}={}", v.as_str().map_or_else(|| v.to_string(), str::to_string))).collect::<Vec<_>>().join(", ")
}

/// `zipf:0.9 / 5000`: only the values, for chart labels (`base` for no value).
pub fn describe_values(point: &Point) -> String {
    if point.is_empty() {
        return "base".into();
    }
    point.values().map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string)).collect::<Vec<_>>().join(" / ")
}

/// Reads a results file (missing: empty).
pub fn read_results(path: &Path) -> Result<Vec<SweepLine>, SweepError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(SweepError::Io { path: path.into(), source }),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| SweepError::Results { path: path.into(), line: i + 1, message: e.to_string() }))
        .collect()
}

/// What a sweep did.
#[derive(Debug, Default)]
pub struct SweepSummary {
    /// Points run now.
    pub ran: usize,
    /// Points found in the results file and skipped.
    pub skipped: usize,
    /// Mismatches of the points run now.
    pub mismatches: Vec<String>,
}

/// Runs every point of `cfg` not yet in `results`, appending each as it finishes.
/// `on_point(i, total, point)` is called before each point runs.
pub fn run_sweep(
    cfg: &SweepConfig,
    results: &Path,
    progress: &dyn Progress,
    on_point: &mut dyn FnMut(usize, usize, &Point),
) -> anyhow::Result<SweepSummary> {
    let done: Vec<Point> = read_results(results)?.into_iter().map(|l| l.point).collect();
    let points = cfg.points();
    let mut summary = SweepSummary::default();
    for (i, (point, bench)) in points.iter().enumerate() {
        if done.contains(point) {
            summary.skipped += 1;
            continue;
        }
        on_point(i, points.len(), point);
        let report = run_bench(bench, None, progress)?;
        summary.mismatches.extend(report.mismatches.iter().map(|m| format!("{}: {m}", describe(point))));
        let line = serde_json::to_string(&SweepLine { point: point.clone(), report })?;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(results)
            .map_err(|source| SweepError::Io { path: results.into(), source })?;
        writeln!(f, "{line}").map_err(|source| SweepError::Io { path: results.into(), source })?;
        summary.ran += 1;
    }
    Ok(summary)
}
