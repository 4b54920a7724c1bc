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
//! Axes: `workload`, `distribution`, `block_size`, `accounts`, `tx_cost_us`, `seed`,
//! `executor`, `threads`, and for the sharded engine `shards`, `cross_shard`, `partitioner` and
//! `cross_batching`. A point runs over all of the base's executors and thread counts unless
//! `executor` or `threads` is an axis (then it runs the one it takes; `sequential`, the
//! reference, always runs too), so a sweep over `distribution` with threads in the base gives
//! throughput against threads *and* against contention.
//!
//! A point with shard counts — `shards` in the base (a list) or as an axis — runs the sharded
//! bench (`occam bench --shards`): each shard count `S × T` threads per shard against
//! `1 shard × 1 thread` on the same blocks, with `cross_shard`, `partitioner` and
//! `cross_batching` from the base or the axes. Those three need shard counts somewhere.
//!
//! The results file holds one line per finished point, `{"point": {...}, "schema": "...",
//! "report": {...}}`: the point's axis values, the schema of its report (`occam-bench/v1`, or
//! `occam-bench-sharded/v1` for a sharded point) and the report itself. Points already in the
//! file are skipped, so an interrupted sweep continues where it stopped. `occam report` reads
//! the file directly. Bad values are refused before anything runs, naming the key
//! ([`SweepError::Value`]).

use crate::compare::AnyReport;
use crate::runner::{run_bench, total_blocks, BenchConfig, Progress};
use crate::sharded::{run_sharded, sharded_blocks, ShardedConfig};
use serde::{Deserialize, Serialize};
use serde_json::Value;
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
    /// The configuration is not valid TOML, has unknown keys, or too many points.
    #[error("{path}: {message}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A setting of the base or a value of an axis is out of range or malformed.
    #[error("{path}: {key}: {message}")]
    Value {
        /// The file.
        path: PathBuf,
        /// Where: `base.threads`, `axes.distribution`, or, for a value that is wrong only in
        /// combination, the key and the point (`partitioner at shards=4`).
        key: String,
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

/// Names of the `cross_batching` coordinations of the sharded engine.
pub const CROSS_BATCHINGS: [&str; 3] = ["per-block", "per-tx", "reservation"];

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

/// The base settings of a sweep (defaults as `occam bench`). Keys are written as the `occam
/// bench` flags, with `-` or `_`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Base {
    #[serde(alias = "block-size")]
    pub block_size: usize,
    pub accounts: u64,
    pub txs: usize,
    pub warmup: usize,
    pub threads: Vec<usize>,
    pub executor: Vec<String>,
    pub workload: String,
    pub distribution: String,
    pub seed: u64,
    #[serde(alias = "tx-cost-us")]
    pub tx_cost_us: f64,
    pub interleave: bool,
    /// `rocksdb`: every executor run also persists its blocks (`occam bench --storage`; a
    /// `rocksdb:DIR` would make the second point find the first one's stores and stop).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    /// Shard counts: when set, every point runs the sharded bench.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<usize>,
    /// With shards: share of cross-shard `transfer`s (default 0).
    #[serde(alias = "cross-shard", skip_serializing_if = "Option::is_none")]
    pub cross_shard: Option<f64>,
    /// With shards: `hash` (default), `range`, `range:B1,…` or `map:FILE`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partitioner: Option<String>,
    /// With shards: `per-block` (default), `per-tx` or `reservation`.
    #[serde(alias = "cross-batching", skip_serializing_if = "Option::is_none")]
    pub cross_batching: Option<String>,
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
            storage: None,
            shards: Vec::new(),
            cross_shard: None,
            partitioner: None,
            cross_batching: None,
        }
    }
}

/// The axes of a sweep; an empty axis takes the base's value.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Axes {
    pub workload: Vec<String>,
    pub distribution: Vec<String>,
    #[serde(alias = "block-size")]
    pub block_size: Vec<usize>,
    pub accounts: Vec<u64>,
    #[serde(alias = "tx-cost-us")]
    pub tx_cost_us: Vec<f64>,
    pub seed: Vec<u64>,
    pub executor: Vec<String>,
    pub threads: Vec<usize>,
    pub shards: Vec<usize>,
    #[serde(alias = "cross-shard")]
    pub cross_shard: Vec<f64>,
    pub partitioner: Vec<String>,
    #[serde(alias = "cross-batching")]
    pub cross_batching: Vec<String>,
}

impl Axes {
    /// The non-empty axes in sweep order (the last varies fastest), values as JSON.
    fn swept(&self) -> Vec<(&'static str, Vec<Value>)> {
        let all = [
            ("workload", json(&self.workload)),
            ("distribution", json(&self.distribution)),
            ("block_size", json(&self.block_size)),
            ("accounts", json(&self.accounts)),
            ("tx_cost_us", json(&self.tx_cost_us)),
            ("seed", json(&self.seed)),
            ("executor", json(&self.executor)),
            ("shards", json(&self.shards)),
            ("cross_shard", json(&self.cross_shard)),
            ("partitioner", json(&self.partitioner)),
            ("cross_batching", json(&self.cross_batching)),
            ("threads", json(&self.threads)),
        ];
        all.into_iter().filter(|(_, v)| !v.is_empty()).collect()
    }
}

/// One point: the axis values it takes, by axis name.
pub type Point = BTreeMap<String, Value>;

/// One point of a sweep and what it runs.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedPoint {
    /// Its axis values (what identifies it in the results file).
    pub point: Point,
    /// The bench settings.
    pub bench: BenchConfig,
    /// The sharding settings, for a point that runs the sharded bench.
    pub sharded: Option<ShardedConfig>,
}

impl PlannedPoint {
    /// Blocks the point executes (for a progress bar).
    pub fn blocks(&self) -> u64 {
        // `scenarios` stands for ten workloads; an invalid point is refused before it runs.
        let workloads = self.bench.validate().map_or(1, |(w, _)| w.len());
        match &self.sharded {
            None => total_blocks(&self.bench, workloads),
            Some(sc) => sharded_blocks(&self.bench, sc, workloads),
        }
    }

    /// Runs the point: `occam bench`, or `occam bench --shards` for a sharded point.
    pub fn run(&self, progress: &dyn Progress) -> anyhow::Result<AnyReport> {
        Ok(match &self.sharded {
            None => AnyReport::Bench(run_bench(&self.bench, None, progress)?),
            Some(sc) => AnyReport::Sharded(run_sharded(&self.bench, sc, progress)?),
        })
    }
}

/// The settings of a point while its axis values are applied.
struct Draft {
    bench: BenchConfig,
    shards: Vec<usize>,
    cross_shard: Option<f64>,
    partitioner: Option<String>,
    cross_batching: Option<String>,
}

impl Draft {
    fn new(b: &Base) -> Draft {
        Draft {
            bench: BenchConfig {
                workloads: vec![b.workload.clone()],
                accounts: b.accounts,
                txs: b.txs,
                block_size: b.block_size,
                warmup_blocks: b.warmup,
                threads: b.threads.clone(),
                executors: b.executor.clone(),
                distribution: b.distribution.clone(),
                seed: b.seed,
                tx_cost_us: b.tx_cost_us,
                interleave: b.interleave,
                storage: b.storage.clone(),
            },
            shards: b.shards.clone(),
            cross_shard: b.cross_shard,
            partitioner: b.partitioner.clone(),
            cross_batching: b.cross_batching.clone(),
        }
    }

    /// Sets the axis `name` to `v` (a value of that axis, as [`Axes::swept`] gives it).
    fn set(&mut self, name: &str, v: &Value) {
        let text = || v.as_str().unwrap_or_default().to_string();
        let count = || v.as_u64().unwrap_or_default();
        let b = &mut self.bench;
        match name {
            "workload" => b.workloads = vec![text()],
            "distribution" => b.distribution = text(),
            "block_size" => b.block_size = count() as usize,
            "accounts" => b.accounts = count(),
            "tx_cost_us" => b.tx_cost_us = v.as_f64().unwrap_or(f64::NAN),
            "seed" => b.seed = count(),
            "executor" => b.executors = vec![text()],
            "threads" => b.threads = vec![count() as usize],
            "shards" => self.shards = vec![count() as usize],
            "cross_shard" => self.cross_shard = Some(v.as_f64().unwrap_or(f64::NAN)),
            "partitioner" => self.partitioner = Some(text()),
            "cross_batching" => self.cross_batching = Some(text()),
            other => unreachable!("no axis {other}"),
        }
    }

    fn finish(self) -> (BenchConfig, Option<ShardedConfig>) {
        let sharded = (!self.shards.is_empty()).then(|| ShardedConfig {
            shards: self.shards,
            cross_share: self.cross_shard.unwrap_or(0.0),
            partitioner: self.partitioner.unwrap_or_else(|| "hash".into()),
            cross_batching: self.cross_batching.unwrap_or_else(|| CROSS_BATCHINGS[0].into()),
        });
        (self.bench, sharded)
    }
}

/// Checks the sharding settings of a point, the partitioner too if `partitioner` (it depends on
/// the shard counts); `Err((key, message))` names the key at fault.
fn check_sharded(sc: &ShardedConfig, bench: &BenchConfig, partitioner: bool) -> Result<(), (&'static str, String)> {
    let max = occam_shard::partition::MAX_SHARDS;
    if sc.shards.is_empty() || sc.shards.iter().any(|&s| s == 0 || s > max) {
        return Err(("shards", format!("shard counts must be in 1..={max}, got {:?}", sc.shards)));
    }
    if !(0.0..=1.0).contains(&sc.cross_share) {
        return Err(("cross_shard", format!("must be between 0 and 1, got {}", sc.cross_share)));
    }
    if !CROSS_BATCHINGS.contains(&sc.cross_batching.as_str()) {
        return Err(("cross_batching", format!("must be one of {}, got {:?}", CROSS_BATCHINGS.join(", "), sc.cross_batching)));
    }
    if !partitioner {
        return Ok(());
    }
    let (workloads, _) = bench.validate().map_err(|e| ("workload", e.to_string()))?;
    for w in &workloads {
        for &s in &sc.shards {
            occam_shard::partition::partitioner_by_spec(&sc.partitioner, s, w.id_count(bench.accounts))
                .map_err(|e| ("partitioner", format!("{:?} over {s} shards: {e}", sc.partitioner)))?;
        }
    }
    Ok(())
}

impl SweepConfig {
    /// Reads and checks a sweep file: every setting of the base and every value of every axis
    /// on its own (an error names the key, [`SweepError::Value`]), then every point.
    pub fn load(path: &Path) -> Result<Self, SweepError> {
        let text = std::fs::read_to_string(path).map_err(|source| SweepError::Io { path: path.into(), source })?;
        let cfg: SweepConfig = toml::from_str(&text).map_err(|e| SweepError::Config { path: path.into(), message: e.to_string() })?;
        cfg.check().map_err(|(key, message)| SweepError::Value { path: path.into(), key, message })?;
        let points = cfg.plan();
        if points.len() > MAX_POINTS {
            return Err(SweepError::Config {
                path: path.into(),
                message: format!("{} points, over the limit of {MAX_POINTS}", points.len()),
            });
        }
        for p in &points {
            let at = |key: &str| if p.point.is_empty() { key.to_string() } else { format!("{key} at {}", describe(&p.point)) };
            p.bench.validate().map_err(|e| SweepError::Value { path: path.into(), key: at("point"), message: e.to_string() })?;
            if let Some(sc) = &p.sharded {
                check_sharded(sc, &p.bench, true).map_err(|(key, message)| SweepError::Value {
                    path: path.into(),
                    key: at(key),
                    message,
                })?;
            }
        }
        Ok(cfg)
    }

    /// Every base setting and axis value on its own, over the defaults: `Err((key, message))`.
    fn check(&self) -> Result<(), (String, String)> {
        let defaults = Base::default();
        // The base, one setting at a time over the defaults, so that an error names its key.
        let base = serde_json::to_value(&self.base).unwrap_or_default();
        let base: Vec<(String, Value)> = base.as_object().into_iter().flatten().map(|(k, v)| (k.clone(), v.clone())).collect();
        let sharded = !self.base.shards.is_empty() || !self.axes.shards.is_empty();
        for (key, value) in &base {
            let mut draft = Draft::new(&defaults);
            match key.as_str() {
                "txs" => draft.bench.txs = self.base.txs,
                "warmup" => draft.bench.warmup_blocks = self.base.warmup,
                "interleave" => continue,
                "threads" => draft.bench.threads = self.base.threads.clone(),
                "executor" => draft.bench.executors = self.base.executor.clone(),
                "shards" => draft.shards = self.base.shards.clone(),
                name => draft.set(name, value),
            }
            self.check_one(draft, sharded).map_err(|m| (format!("base.{key}"), m))?;
        }
        for (name, values) in self.axes.swept() {
            for v in values {
                let mut draft = Draft::new(&defaults);
                draft.set(name, &v);
                self.check_one(draft, sharded).map_err(|m| (format!("axes.{name} = {v}"), m))?;
            }
        }
        Ok(())
    }

    fn check_one(&self, mut draft: Draft, sharded: bool) -> Result<(), String> {
        if !sharded && (draft.cross_shard.is_some() || draft.partitioner.is_some() || draft.cross_batching.is_some()) {
            return Err("needs shard counts: `shards` in [base] or [axes]".into());
        }
        if sharded && draft.shards.is_empty() {
            draft.shards = vec![1];
        }
        let (bench, sc) = draft.finish();
        bench.validate().map_err(|e| e.to_string())?;
        match sc {
            Some(sc) => check_sharded(&sc, &bench, false).map_err(|(_, m)| m),
            None => Ok(()),
        }
    }

    /// Every point with what it runs, in a fixed order (the last axis varies fastest:
    /// `workload`, `distribution`, `block_size`, `accounts`, `tx_cost_us`, `seed`, `executor`,
    /// `shards`, `cross_shard`, `partitioner`, `cross_batching`, `threads`).
    pub fn plan(&self) -> Vec<PlannedPoint> {
        let mut points: Vec<Point> = vec![Point::new()];
        for (name, values) in self.axes.swept() {
            points = points
                .into_iter()
                .flat_map(|p| {
                    values.iter().map(move |v| {
                        let mut p = p.clone();
                        p.insert(name.to_string(), v.clone());
                        p
                    })
                })
                .collect();
        }
        points
            .into_iter()
            .map(|point| {
                let mut draft = Draft::new(&self.base);
                for (name, v) in &point {
                    draft.set(name, v);
                }
                let (bench, sharded) = draft.finish();
                PlannedPoint { point, bench, sharded }
            })
            .collect()
    }

    /// Blocks the points not yet in `results` will execute (for a progress bar).
    pub fn pending_blocks(&self, results: &Path) -> Result<u64, SweepError> {
        let done: Vec<Point> = read_lines(results)?.into_iter().map(|l| l.point).collect();
        Ok(self.plan().iter().filter(|p| !done.contains(&p.point)).map(PlannedPoint::blocks).sum())
    }
}

/// Axis values as JSON (plain strings and numbers: serialising cannot fail).
fn json<T: Serialize>(values: &[T]) -> Vec<Value> {
    values.iter().map(|x| serde_json::to_value(x).unwrap_or(Value::Null)).collect()
}

/// `workload=transfer, distribution=zipf:0.9`: a point for people.
pub fn describe(point: &Point) -> String {
    if point.is_empty() {
        return "base".into();
    }
    point.iter().map(|(k, v)| format!("{k}={}", plain(v))).collect::<Vec<_>>().join(", ")
}

/// `zipf:0.9 / 5000`: only the values, for chart labels (`base` for no value).
pub fn describe_values(point: &Point) -> String {
    if point.is_empty() {
        return "base".into();
    }
    point.values().map(plain).collect::<Vec<_>>().join(" / ")
}

/// A JSON value as text, strings without quotes.
fn plain(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}

/// One line of the results file: a point and its report of either kind.
///
/// On disk: `{"point": {...}, "schema": "occam-bench/v1", "report": {...}}`; a line without
/// `schema` (as the first sweeps wrote them) is read by its report's own `schema` field.
#[derive(Clone, Debug, PartialEq)]
pub struct ResultLine {
    /// The point's axis values.
    pub point: Point,
    /// Its report.
    pub report: AnyReport,
}

#[derive(Serialize, Deserialize)]
struct RawLine<R> {
    point: Point,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    schema: Option<String>,
    report: R,
}

impl Serialize for ResultLine {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        RawLine { point: self.point.clone(), schema: Some(self.report.schema().to_string()), report: &self.report }.serialize(s)
    }
}

impl<'de> Deserialize<'de> for ResultLine {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawLine::<Value>::deserialize(d)?;
        let in_report = raw.report.get("schema").and_then(Value::as_str).map(str::to_string);
        if let (Some(line), Some(report)) = (&raw.schema, &in_report) {
            if line != report {
                return Err(serde::de::Error::custom(format!("line schema {line:?} but the report has {report:?}")));
            }
        }
        let report = AnyReport::from_value(raw.report).map_err(serde::de::Error::custom)?;
        Ok(ResultLine { point: raw.point, report })
    }
}

/// Reads a results file, every line (missing file: empty).
pub fn read_lines(path: &Path) -> Result<Vec<ResultLine>, SweepError> {
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
    let done: Vec<Point> = read_lines(results)?.into_iter().map(|l| l.point).collect();
    let points = cfg.plan();
    let mut summary = SweepSummary::default();
    for (i, planned) in points.iter().enumerate() {
        if done.contains(&planned.point) {
            summary.skipped += 1;
            continue;
        }
        on_point(i, points.len(), &planned.point);
        let report = planned.run(progress)?;
        summary.mismatches.extend(report.mismatches().iter().map(|m| format!("{}: {m}", describe(&planned.point))));
        let line = serde_json::to_string(&ResultLine { point: planned.point.clone(), report })?;
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
