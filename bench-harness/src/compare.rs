//! `occam compare`: compare two bench reports and tell regressions from noise.
//!
//! Runs are matched by (workload, executor, threads). For every matched pair three figures are
//! compared: `tps_median` (higher is better), `speedup` (higher is better) and
//! `p99_latency_us` (lower is better). A figure whose relative change stays within the threshold
//! is [`Verdict::Unchanged`]. Beyond it, the change is checked against the per-block samples the
//! figure comes from, with a two-sided Mann–Whitney U test of base against new: it is
//! [`Verdict::Regressed`] or [`Verdict::Improved`] only when the test is significant and points
//! the same way, and [`Verdict::Noise`] otherwise. The samples are, per measured block, the
//! throughput (`tps_per_block`) for `tps_median`, the block latency (its inverse: every measured
//! block has the same size) for `p99_latency_us`, and the ratio to the sequential run of the same
//! report on the same block for `speedup`. A p99 that moved while the block latencies did not
//! shift is one slow block, hence noise. With fewer than [`MIN_SAMPLES`] samples on either side
//! (or no sequential run to pair with) no test is run and the threshold alone decides.

use crate::runner::{BenchReport, RunResult, REPORT_SCHEMA};
use crate::sharded::{ShardedReport, SHARDED_SCHEMA};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

/// Fewest samples per side for which the Mann–Whitney test is run.
pub const MIN_SAMPLES: usize = 4;

/// Name of the throughput figure.
pub const FIGURE_TPS: &str = "tps_median";
/// Name of the speedup figure.
pub const FIGURE_SPEEDUP: &str = "speedup";
/// Name of the p99 block-latency figure.
pub const FIGURE_P99: &str = "p99_latency_us";

/// Why a report could not be loaded or a threshold not parsed.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    /// The report file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The report file is not valid JSON or not a bench report.
    #[error("{} is not a valid bench report: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: serde_json::Error,
    },
    /// The report file has another schema than the ones expected.
    #[error("{} has schema {found}, expected {expected}", path.display())]
    Schema {
        /// The file.
        path: PathBuf,
        /// The schema found (quoted), or `<missing>`.
        found: String,
        /// The schemas accepted (quoted).
        expected: String,
    },
    /// A malformed or out-of-range threshold.
    #[error("bad threshold {input:?}: {reason}")]
    Threshold {
        /// What was given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// How two reports are compared.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompareOptions {
    /// Relative change a figure must exceed to count (0.05 = 5 %).
    pub threshold: f64,
    /// Significance level of the Mann–Whitney test (p below it is significant).
    pub alpha: f64,
}

impl Default for CompareOptions {
    /// A 5 % threshold and a 0.05 significance level.
    fn default() -> Self {
        CompareOptions { threshold: 0.05, alpha: 0.05 }
    }
}

/// What happened to one figure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Better than base by more than the threshold (and significant where tested).
    Improved,
    /// Within the threshold.
    Unchanged,
    /// Worse than base by more than the threshold (and significant where tested).
    Regressed,
    /// Changed by more than the threshold, but not significantly.
    Noise,
}

impl fmt::Display for Verdict {
    /// Lower-case name, `regressed` in capitals so it stands out in a table.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Verdict::Improved => "improved",
            Verdict::Unchanged => "unchanged",
            Verdict::Regressed => "REGRESSED",
            Verdict::Noise => "noise",
        })
    }
}

/// The change of one figure of one matched run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FigureChange {
    /// Workload name.
    pub workload: String,
    /// Executor name.
    pub executor: String,
    /// Worker threads.
    pub threads: usize,
    /// Which figure: [`FIGURE_TPS`], [`FIGURE_SPEEDUP`] or [`FIGURE_P99`].
    pub figure: String,
    /// The figure in the base report.
    pub base: f64,
    /// The figure in the new report.
    pub new: f64,
    /// Relative change, `new / base - 1`; NaN when it cannot be computed (base not a positive
    /// finite number, or new not finite), in which case the verdict is `Unchanged` and a note
    /// says so.
    pub change: f64,
    /// Two-sided Mann–Whitney p-value of the per-block samples; `None` when no test was run.
    pub p_value: Option<f64>,
    /// The verdict.
    pub verdict: Verdict,
}

/// The result of comparing two reports.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// One entry per figure of every run present in both reports, in the base report's order.
    pub changes: Vec<FigureChange>,
    /// Runs (`workload/executor/Nt`) only in the base report.
    pub only_in_base: Vec<String>,
    /// Runs (`workload/executor/Nt`) only in the new report.
    pub only_in_new: Vec<String>,
    /// Caveats: different machine, commit or settings, cross-check mismatches, duplicate runs,
    /// figures that could not be compared.
    pub notes: Vec<String>,
}

impl Comparison {
    /// How many figures regressed.
    pub fn regressions(&self) -> usize {
        self.changes.iter().filter(|c| c.verdict == Verdict::Regressed).count()
    }

    /// What `occam compare` prints: the [table](Self::table), then the runs found on one side
    /// only and every note (`note: settings differ: …`).
    pub fn render(&self) -> String {
        let mut out = self.table();
        for (which, runs) in [("only in the base", &self.only_in_base), ("only in the new report", &self.only_in_new)] {
            if !runs.is_empty() {
                out.push_str(&format!("{which}: {}\n", runs.join(", ")));
            }
        }
        for note in &self.notes {
            out.push_str(&format!("note: {note}\n"));
        }
        out
    }

    /// Why `occam compare` fails (exit status 1): `Some` when any figure regressed.
    pub fn failure(&self, opts: &CompareOptions) -> Option<String> {
        (self.regressions() > 0).then(|| {
            format!(
                "{} figure(s) regressed beyond {}% (significant at the {} level)",
                self.regressions(),
                opts.threshold * 100.0,
                opts.alpha
            )
        })
    }

    /// An aligned text table: a header, then one line per figure.
    pub fn table(&self) -> String {
        let header = ["workload", "executor", "threads", "figure", "base", "new", "change", "p", "verdict"];
        let rows: Vec<[String; 9]> = self
            .changes
            .iter()
            .map(|c| {
                [
                    c.workload.clone(),
                    c.executor.clone(),
                    c.threads.to_string(),
                    c.figure.clone(),
                    fmt_figure(c.base),
                    fmt_figure(c.new),
                    fmt_change(c.change),
                    c.p_value.map_or_else(|| "-".to_string(), fmt_p),
                    c.verdict.to_string(),
                ]
            })
            .collect();
        let mut widths = header.map(|h| h.chars().count());
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        // Text columns left-aligned, numbers right-aligned.
        let right = [false, false, true, false, true, true, true, true, false];
        let line = |cells: &[String]| {
            let parts: Vec<String> =
                cells.iter().zip(widths).zip(right).map(|((c, w), r)| if r { format!("{c:>w$}") } else { format!("{c:<w$}") }).collect();
            parts.join("  ").trim_end().to_string()
        };
        let mut out = line(&header.map(String::from));
        out.push('\n');
        for row in &rows {
            out.push_str(&line(row));
            out.push('\n');
        }
        out
    }
}

fn fmt_figure(x: f64) -> String {
    if !x.is_finite() {
        format!("{x}")
    } else if x.abs() >= 1000.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.3}")
    }
}

fn fmt_change(c: f64) -> String {
    if c.is_finite() {
        format!("{:+.1}%", c * 100.0)
    } else {
        "n/a".into()
    }
}

fn fmt_p(p: f64) -> String {
    if p < 0.001 {
        "<0.001".into()
    } else {
        format!("{p:.3}")
    }
}

/// Result of a two-sided Mann–Whitney U test.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MannWhitney {
    /// U statistic of the first sample: how many (a, b) pairs have a > b, ties counting ½.
    pub u: f64,
    /// Standardised U (with tie and continuity correction); positive when the first sample
    /// tends to be larger.
    pub z: f64,
    /// Two-sided p-value from the normal approximation.
    pub p_value: f64,
}

/// Two-sided Mann–Whitney U test of `a` against `b`, normal approximation with tie correction
/// and continuity correction. Non-finite values are ignored; `None` when either side has no
/// finite value. The approximation is rough for very small samples (see [`MIN_SAMPLES`]).
pub fn mann_whitney_u(a: &[f64], b: &[f64]) -> Option<MannWhitney> {
    let mut all: Vec<(f64, bool)> =
        a.iter().filter(|x| x.is_finite()).map(|&x| (x, true)).chain(b.iter().filter(|x| x.is_finite()).map(|&x| (x, false))).collect();
    let n1 = all.iter().filter(|(_, first)| *first).count();
    let n2 = all.len() - n1;
    if n1 == 0 || n2 == 0 {
        return None;
    }
    all.sort_by(|x, y| x.0.total_cmp(&y.0));
    // Average ranks over ties; sum of the first sample's ranks and of t³ - t over tie groups.
    let (mut rank_sum, mut ties) = (0.0_f64, 0.0_f64);
    let mut i = 0;
    while i < all.len() {
        let mut j = i + 1;
        while j < all.len() && all[j].0 == all[i].0 {
            j += 1;
        }
        let rank = (i + 1 + j) as f64 / 2.0; // mean of ranks i+1 ..= j
        rank_sum += rank * all[i..j].iter().filter(|(_, first)| *first).count() as f64;
        let t = (j - i) as f64;
        ties += t * t * t - t;
        i = j;
    }
    let (n1f, n2f) = (n1 as f64, n2 as f64);
    let n = n1f + n2f;
    let u = rank_sum - n1f * (n1f + 1.0) / 2.0;
    let mean = n1f * n2f / 2.0;
    let var = n1f * n2f / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)));
    if var.is_nan() || var <= 0.0 {
        return Some(MannWhitney { u, z: 0.0, p_value: 1.0 });
    }
    let d = u - mean;
    let z = ((d.abs() - 0.5).max(0.0) / var.sqrt()).copysign(d);
    let p_value = erfc(z.abs() / std::f64::consts::SQRT_2).clamp(0.0, 1.0);
    Some(MannWhitney { u, z, p_value })
}

/// Complementary error function (Numerical Recipes `erfcc`, fractional error below 1.2e-7).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07 + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// Parses a threshold: `"5%"` and `"5"` both mean 5 % (a bare number is a percentage, so
/// `"0.05"` is 0.05 %). Returns the fraction (0.05). Rejects negative values, 100 % and above,
/// and anything that is not a finite number.
pub fn parse_threshold(s: &str) -> Result<f64, CompareError> {
    let bad = |reason: &str| CompareError::Threshold { input: s.to_string(), reason: reason.to_string() };
    let t = s.trim();
    let num = t.strip_suffix('%').unwrap_or(t).trim_end();
    if num.is_empty() {
        return Err(bad("expected a percentage such as 5% or 5"));
    }
    let pct: f64 = num.parse().map_err(|_| bad("expected a percentage such as 5% or 5"))?;
    if !pct.is_finite() {
        return Err(bad("not a finite number"));
    }
    if pct < 0.0 {
        return Err(bad("must not be negative"));
    }
    if pct >= 100.0 {
        return Err(bad("must be below 100%"));
    }
    Ok(pct / 100.0)
}

/// Reads a bench report (the JSON written by `occam bench --json`), checking its schema is
/// [`REPORT_SCHEMA`] before decoding the rest.
pub fn load_report(path: &Path) -> Result<BenchReport, CompareError> {
    let value = read_json(path, &[REPORT_SCHEMA])?;
    serde_json::from_value(value).map_err(|source| CompareError::Json { path: path.to_path_buf(), source })
}

/// Reads a saved report of either kind `occam report` draws: `occam-bench/v1` or
/// `occam-bench-sharded/v1` (the `--json` file of `occam bench --shards`), by its schema.
pub fn load_any_report(path: &Path) -> Result<AnyReport, CompareError> {
    let value = read_json(path, &[REPORT_SCHEMA, SHARDED_SCHEMA])?;
    AnyReport::from_value(value).map_err(|source| CompareError::Json { path: path.to_path_buf(), source })
}

/// The JSON of `path`, whose `schema` must be one of `accepted`.
fn read_json(path: &Path, accepted: &[&str]) -> Result<serde_json::Value, CompareError> {
    let text = std::fs::read_to_string(path).map_err(|source| CompareError::Io { path: path.to_path_buf(), source })?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|source| CompareError::Json { path: path.to_path_buf(), source })?;
    match value.get("schema") {
        Some(serde_json::Value::String(s)) if accepted.contains(&s.as_str()) => Ok(value),
        found => Err(CompareError::Schema {
            path: path.to_path_buf(),
            found: found.map_or_else(|| "<missing>".into(), |v| v.to_string()),
            expected: accepted.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(" or "),
        }),
    }
}

/// A saved report of one of the kinds `occam report` and `occam sweep` handle, told apart by
/// its `schema` field (serialised as the report itself).
#[derive(Clone, Debug, PartialEq)]
pub enum AnyReport {
    /// `occam-bench/v1`: executors against threads.
    Bench(BenchReport),
    /// `occam-bench-sharded/v1`: shards × threads per shard against 1 × 1.
    Sharded(ShardedReport),
}

impl AnyReport {
    /// The report's schema tag.
    pub fn schema(&self) -> &str {
        match self {
            AnyReport::Bench(r) => &r.schema,
            AnyReport::Sharded(r) => &r.schema,
        }
    }

    /// Commit of the binary that measured it.
    pub fn commit(&self) -> &str {
        match self {
            AnyReport::Bench(r) => &r.commit,
            AnyReport::Sharded(r) => &r.commit,
        }
    }

    /// The machine it was measured on.
    pub fn machine(&self) -> &crate::machine::Machine {
        match self {
            AnyReport::Bench(r) => &r.machine,
            AnyReport::Sharded(r) => &r.machine,
        }
    }

    /// Its cross-check mismatches (empty on success).
    pub fn mismatches(&self) -> &[String] {
        match self {
            AnyReport::Bench(r) => &r.mismatches,
            AnyReport::Sharded(r) => &r.mismatches,
        }
    }

    /// Decodes a report by its `schema` field (a missing one is read as `occam-bench/v1`, as
    /// the first sweep results files had none).
    pub fn from_value(value: serde_json::Value) -> Result<Self, serde_json::Error> {
        match value.get("schema").and_then(|s| s.as_str()) {
            Some(SHARDED_SCHEMA) => serde_json::from_value(value).map(AnyReport::Sharded),
            Some(REPORT_SCHEMA) | None => serde_json::from_value(value).map(AnyReport::Bench),
            Some(other) => Err(serde::de::Error::custom(format!("schema {other:?} is not one of {REPORT_SCHEMA:?}, {SHARDED_SCHEMA:?}"))),
        }
    }
}

impl Serialize for AnyReport {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            AnyReport::Bench(r) => r.serialize(s),
            AnyReport::Sharded(r) => r.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for AnyReport {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        AnyReport::from_value(serde_json::Value::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

type Key<'a> = (&'a str, &'a str, usize);

fn key(r: &RunResult) -> Key<'_> {
    (r.workload.as_str(), r.executor.as_str(), r.threads)
}

fn label(r: &RunResult) -> String {
    format!("{}/{}/{}t", r.workload, r.executor, r.threads)
}

/// Runs by key, first occurrence wins; a note for every duplicate.
fn index<'a>(report: &'a BenchReport, which: &str, notes: &mut Vec<String>) -> HashMap<Key<'a>, &'a RunResult> {
    let mut map = HashMap::new();
    for r in &report.results {
        if let std::collections::hash_map::Entry::Vacant(e) = map.entry(key(r)) {
            e.insert(r);
        } else {
            notes.push(format!("{which} report has run {} more than once; only the first is compared", label(r)));
        }
    }
    map
}

/// `occam compare BASE NEW`: loads both `occam-bench/v1` reports and compares them. Differing
/// machines, commits or settings do not stop the comparison; they become notes.
pub fn compare_files(base: &Path, new: &Path, opts: &CompareOptions) -> Result<Comparison, CompareError> {
    Ok(compare(&load_report(base)?, &load_report(new)?, opts))
}

/// Compares `new` with `base`. Never fails: oddities become notes.
pub fn compare(base: &BenchReport, new: &BenchReport, opts: &CompareOptions) -> Comparison {
    let mut cmp = Comparison { notes: context_notes(base, new), ..Comparison::default() };
    let base_runs = index(base, "base", &mut cmp.notes);
    let new_runs = index(new, "new", &mut cmp.notes);
    let mut seen = BTreeSet::new();
    for b in &base.results {
        if !seen.insert(key(b)) {
            continue;
        }
        let Some(n) = new_runs.get(&key(b)) else {
            cmp.only_in_base.push(label(b));
            continue;
        };
        let enough = |v: &[f64]| v.iter().filter(|x| x.is_finite()).count() >= MIN_SAMPLES;
        let test = |a: &[f64], b: &[f64]| mann_whitney_u(a, b).filter(|_| enough(a) && enough(b));
        let latencies = |r: &RunResult| r.tps_per_block.iter().map(|t| 1.0 / t).collect::<Vec<_>>();
        let figures = [
            (FIGURE_TPS, b.tps_median, n.tps_median, true, test(&b.tps_per_block, &n.tps_per_block)),
            (FIGURE_SPEEDUP, b.speedup, n.speedup, true, test(&block_speedups(base, b), &block_speedups(new, n))),
            (FIGURE_P99, b.block_latency_us.p99, n.block_latency_us.p99, false, test(&latencies(b), &latencies(n))),
        ];
        for (figure, bv, nv, higher_is_better, test) in figures {
            let change = relative_change(bv, nv);
            if change.is_nan() {
                cmp.notes.push(format!("{}: {figure} cannot be compared (base {bv}, new {nv})", label(b)));
            }
            let verdict = decide(change, higher_is_better, test.as_ref(), opts);
            cmp.changes.push(FigureChange {
                workload: b.workload.clone(),
                executor: b.executor.clone(),
                threads: b.threads,
                figure: figure.to_string(),
                base: bv,
                new: nv,
                change,
                p_value: test.map(|t| t.p_value),
                verdict,
            });
        }
    }
    let mut seen = BTreeSet::new();
    for n in &new.results {
        if seen.insert(key(n)) && !base_runs.contains_key(&key(n)) {
            cmp.only_in_new.push(label(n));
        }
    }
    cmp
}

/// Per measured block, `run`'s throughput over the sequential run's of the same workload in
/// `report` (the blocks are the same, so this is the block's speedup); empty without one.
fn block_speedups(report: &BenchReport, run: &RunResult) -> Vec<f64> {
    match report.results.iter().find(|r| r.workload == run.workload && r.executor == "sequential") {
        Some(seq) if seq.tps_per_block.len() == run.tps_per_block.len() => {
            run.tps_per_block.iter().zip(&seq.tps_per_block).map(|(r, s)| r / s).collect()
        }
        _ => Vec::new(),
    }
}

fn relative_change(base: f64, new: f64) -> f64 {
    if base.is_finite() && new.is_finite() && base == new {
        0.0
    } else if base.is_finite() && base > 0.0 && new.is_finite() {
        new / base - 1.0
    } else {
        f64::NAN
    }
}

/// The verdict of a change; `test` compares base (first) with new (second) samples.
fn decide(change: f64, higher_is_better: bool, test: Option<&MannWhitney>, opts: &CompareOptions) -> Verdict {
    if !change.is_finite() || change.abs() <= opts.threshold || opts.threshold.is_nan() {
        return Verdict::Unchanged;
    }
    let better = (change > 0.0) == higher_is_better;
    let Some(t) = test else {
        return if better { Verdict::Improved } else { Verdict::Regressed };
    };
    // z > 0: the base samples tend to be larger, i.e. new went down.
    let went_up = t.z < 0.0;
    let agrees = went_up == (change > 0.0);
    if t.p_value < opts.alpha && agrees {
        if better {
            Verdict::Improved
        } else {
            Verdict::Regressed
        }
    } else {
        Verdict::Noise
    }
}

/// Notes on what differs between the two runs apart from the code under test.
fn context_notes(base: &BenchReport, new: &BenchReport) -> Vec<String> {
    let mut notes = Vec::new();
    let mut differs = |what: &str, a: String, b: String| {
        if a != b {
            notes.push(format!("{what} differs: {a} vs {b}"));
        }
    };
    differs("cpu", base.machine.cpu_model.clone(), new.machine.cpu_model.clone());
    differs("cores", base.machine.cores.to_string(), new.machine.cores.to_string());
    differs("commit", base.commit.clone(), new.commit.clone());
    differs("occam version", base.occam_version.clone(), new.occam_version.clone());
    differs("keep_warm_us", base.keep_warm_us.to_string(), new.keep_warm_us.to_string());
    differs("calibrated work_rounds", base.calibration.work_rounds.to_string(), new.calibration.work_rounds.to_string());
    // Settings are diffed field by field through their JSON form, so new fields are covered.
    let (a, b) = (serde_json::to_value(&base.settings), serde_json::to_value(&new.settings));
    if let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) = (a, b) {
        let fields: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        let diffs: Vec<String> = fields
            .into_iter()
            .filter(|f| a.get(*f) != b.get(*f))
            .map(|f| format!("{f} {} vs {}", json_short(a.get(f)), json_short(b.get(f))))
            .collect();
        if !diffs.is_empty() {
            notes.push(format!("settings differ: {}", diffs.join(", ")));
        }
    }
    for (which, r) in [("base", base), ("new", new)] {
        if !r.mismatches.is_empty() {
            notes.push(format!("{which} report has {} cross-check mismatch(es)", r.mismatches.len()));
        }
    }
    notes
}

fn json_short(v: Option<&serde_json::Value>) -> String {
    match v {
        None => "<missing>".into(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::Machine;
    use crate::runner::{BenchConfig, Calibration, Latency, Phases};

    /// splitmix64: a fixed-seed source of noise without extra dependencies.
    struct Rng(u64);
    impl Rng {
        /// Uniform in [-1, 1).
        fn unit(&mut self) -> f64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        }
    }

    /// `n` samples of `level × (1 ± spread)`.
    fn noisy(seed: u64, n: usize, level: f64, spread: f64) -> Vec<f64> {
        let mut rng = Rng(seed);
        (0..n).map(|_| level * (1.0 + spread * rng.unit())).collect()
    }

    fn median(v: &[f64]) -> f64 {
        let mut s = v.to_vec();
        if s.is_empty() {
            return 0.0;
        }
        s.sort_by(f64::total_cmp);
        (s[(s.len() - 1) / 2] + s[s.len() / 2]) / 2.0
    }

    fn run(workload: &str, executor: &str, threads: usize, samples: Vec<f64>) -> RunResult {
        RunResult {
            workload: workload.into(),
            executor: executor.into(),
            threads,
            blocks: samples.len(),
            txs: samples.len() * 1000,
            tps_median: median(&samples),
            tps_mean: samples.iter().sum::<f64>() / samples.len() as f64,
            speedup: 3.5,
            block_latency_us: Latency { p50: 900.0, p90: 1000.0, p99: 1200.0, max: 1500.0 },
            exec_share: 0.8,
            phases_us: Phases::default(),
            reexecutions_per_tx: 0.1,
            failed_validations_per_tx: 0.0,
            suspensions_per_tx: 0.0,
            sequential_tail_share: 0.0,
            paths: Default::default(),
            failure_rate: 0.0,
            state_root: "root".into(),
            outputs_digest: "digest".into(),
            tps_per_block: samples,
            storage: None,
        }
    }

    fn report(results: Vec<RunResult>) -> BenchReport {
        BenchReport {
            schema: REPORT_SCHEMA.into(),
            occam_version: "0.1.0".into(),
            commit: "abc123".into(),
            started_unix_s: 1_700_000_000,
            machine: Machine { cpu_model: "Test CPU".into(), cores: 16, os: "Linux".into(), kernel: "6.1".into(), arch: "x86_64".into() },
            settings: BenchConfig {
                workloads: vec!["transfer".into()],
                accounts: 100_000,
                txs: 20_000,
                block_size: 1000,
                warmup_blocks: 2,
                threads: vec![8],
                executors: vec!["blockstm".into()],
                distribution: "uniform".into(),
                seed: 1,
                tx_cost_us: 0.0,
                interleave: false,
                storage: None,
            },
            calibration: Calibration { ns_per_round: 50.0, work_rounds: 0 },
            keep_warm_us: 0,
            results,
            mismatches: vec![],
        }
    }

    fn base_report(n: usize, spread: f64) -> BenchReport {
        report(vec![run("transfer", "blockstm", 8, noisy(42, n, 1e6, spread))])
    }

    /// A copy of `base` with every TPS sample and the median scaled by `factor`.
    fn scaled(base: &BenchReport, factor: f64) -> BenchReport {
        let mut r = base.clone();
        for res in &mut r.results {
            res.tps_median *= factor;
            res.tps_mean *= factor;
            for x in &mut res.tps_per_block {
                *x *= factor;
            }
        }
        r
    }

    fn tps(c: &Comparison) -> &FigureChange {
        c.changes.iter().find(|c| c.figure == FIGURE_TPS).unwrap()
    }

    /// A report read back from its JSON holds the very floats that were written: `compare`'s
    /// "settings differ" note quotes them, and a value one ulp off would show a difference that
    /// was never there. (serde_json's default parser may round the last digit; the workspace
    /// turns on `float_roundtrip`.)
    #[test]
    fn report_floats_survive_a_json_round_trip() {
        let mut r = report(vec![run("transfer", "blockstm", 8, noisy(3, 20, 1e6, 0.03))]);
        let awkward = [2.752219999999999, 0.1 + 0.2, 1e-310, 5.0 * (1e6 / 1_816_715.3), f64::MAX];
        for v in awkward {
            r.settings.tx_cost_us = v;
            let back: BenchReport = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
            assert_eq!(back.settings.tx_cost_us.to_bits(), v.to_bits(), "{v:e}");
            assert_eq!(back.results[0].tps_median.to_bits(), r.results[0].tps_median.to_bits());
        }
    }

    #[test]
    fn identical_reports_are_unchanged() {
        let base = report(vec![
            run("transfer", "blockstm", 8, noisy(1, 20, 1e6, 0.03)),
            run("transfer", "sequential", 1, noisy(2, 20, 2e5, 0.03)),
        ]);
        let c = compare(&base, &base, &CompareOptions::default());
        assert_eq!(c.changes.len(), 6);
        assert!(c.changes.iter().all(|f| f.verdict == Verdict::Unchanged && f.change == 0.0), "{c:#?}");
        assert_eq!(c.regressions(), 0);
        assert!(c.only_in_base.is_empty() && c.only_in_new.is_empty() && c.notes.is_empty());
        let p = tps(&c).p_value.unwrap();
        assert!((p - 1.0).abs() < 1e-6, "p = {p}");
    }

    #[test]
    fn slowed_down_run_regresses_significantly() {
        let base = base_report(20, 0.03);
        let new = scaled(&base, 0.8);
        let c = compare(&base, &new, &CompareOptions::default());
        let t = tps(&c);
        assert_eq!(t.verdict, Verdict::Regressed);
        assert!((t.change + 0.2).abs() < 1e-9);
        assert!(t.p_value.unwrap() < 0.05);
        assert!(c.regressions() > 0);
        assert!(c.table().contains("REGRESSED"));
    }

    #[test]
    fn small_change_within_threshold_is_unchanged() {
        let base = base_report(20, 0.03);
        let new = scaled(&base, 0.97);
        let c = compare(&base, &new, &CompareOptions { threshold: 0.05, alpha: 0.05 });
        assert_eq!(tps(&c).verdict, Verdict::Unchanged);
        assert_eq!(c.regressions(), 0);
    }

    #[test]
    fn noisy_few_samples_are_noise_not_regression() {
        let base = base_report(5, 0.40);
        let new = scaled(&base, 0.9);
        let c = compare(&base, &new, &CompareOptions::default());
        let t = tps(&c);
        assert!((t.change + 0.1).abs() < 1e-9);
        assert!(t.p_value.unwrap() >= 0.05, "{t:?}");
        assert_eq!(t.verdict, Verdict::Noise);
        assert_eq!(c.regressions(), 0);
    }

    #[test]
    fn faster_run_improves() {
        let base = base_report(20, 0.03);
        let new = scaled(&base, 1.25);
        let c = compare(&base, &new, &CompareOptions::default());
        assert_eq!(tps(&c).verdict, Verdict::Improved);
        assert_eq!(c.regressions(), 0);
    }

    #[test]
    fn higher_p99_and_lower_speedup_regress_on_threshold() {
        // Too few samples for a test: the threshold alone decides.
        let base = base_report(3, 0.03);
        let mut new = base.clone();
        new.results[0].block_latency_us.p99 *= 1.2;
        new.results[0].speedup *= 0.9;
        let c = compare(&base, &new, &CompareOptions::default());
        let get = |f: &str| c.changes.iter().find(|c| c.figure == f).unwrap();
        assert_eq!(get(FIGURE_P99).verdict, Verdict::Regressed);
        assert!(get(FIGURE_P99).p_value.is_none());
        assert!(get(FIGURE_SPEEDUP).p_value.is_none());
        assert_eq!(get(FIGURE_SPEEDUP).verdict, Verdict::Regressed);
        assert_eq!(get(FIGURE_TPS).verdict, Verdict::Unchanged);
        assert_eq!(c.regressions(), 2);
        // Lower latency is an improvement.
        let mut faster = base.clone();
        faster.results[0].block_latency_us.p99 *= 0.5;
        let c = compare(&base, &faster, &CompareOptions::default());
        assert_eq!(c.changes.iter().find(|c| c.figure == FIGURE_P99).unwrap().verdict, Verdict::Improved);
    }

    #[test]
    fn p99_and_speedup_are_tested_on_their_per_block_samples() {
        let seq = noisy(7, 20, 2e5, 0.03);
        let base = report(vec![run("transfer", "sequential", 1, seq.clone()), run("transfer", "blockstm", 8, noisy(8, 20, 1e6, 0.03))]);
        // One slow block: p99 (the slowest of 20) up 60 %, the rest unchanged. Not significant.
        let mut spike = base.clone();
        let r = &mut spike.results[1];
        r.tps_per_block[3] /= 1.6;
        r.block_latency_us.p99 *= 1.6;
        let c = compare(&base, &spike, &CompareOptions::default());
        let p99 = c.changes.iter().find(|f| f.executor == "blockstm" && f.figure == FIGURE_P99).unwrap();
        assert_eq!(p99.verdict, Verdict::Noise, "{p99:?}");
        assert!(p99.p_value.unwrap() > 0.5);
        // Every block slower: latency and speedup (paired with the unchanged sequential blocks)
        // regress significantly.
        let mut slow = scaled(&base, 0.7);
        slow.results[0] = base.results[0].clone();
        let r = &mut slow.results[1];
        r.block_latency_us.p99 /= 0.7;
        r.speedup *= 0.7;
        let c = compare(&base, &slow, &CompareOptions::default());
        for figure in [FIGURE_TPS, FIGURE_SPEEDUP, FIGURE_P99] {
            let f = c.changes.iter().find(|f| f.executor == "blockstm" && f.figure == figure).unwrap();
            assert_eq!(f.verdict, Verdict::Regressed, "{f:?}");
            assert!(f.p_value.unwrap() < 0.001, "{f:?}");
        }
    }

    #[test]
    fn too_few_samples_decide_on_threshold_alone() {
        let base = base_report(3, 0.01);
        let new = scaled(&base, 0.8);
        let c = compare(&base, &new, &CompareOptions::default());
        assert_eq!(tps(&c).p_value, None);
        assert_eq!(tps(&c).verdict, Verdict::Regressed);
    }

    #[test]
    fn mismatched_keys_and_context_notes() {
        let base =
            report(vec![run("transfer", "blockstm", 8, noisy(1, 10, 1e6, 0.03)), run("transfer", "blockstm", 4, noisy(2, 10, 1e6, 0.03))]);
        let mut new =
            report(vec![run("transfer", "blockstm", 8, noisy(1, 10, 1e6, 0.03)), run("erc20", "blockstm", 8, noisy(3, 10, 1e6, 0.03))]);
        new.commit = "def456".into();
        new.machine.cpu_model = "Other CPU".into();
        new.settings.block_size = 5000;
        new.settings.seed = 7;
        let mut base = base;
        base.settings.block_size = 10000;
        let c = compare(&base, &new, &CompareOptions::default());
        assert_eq!(c.only_in_base, vec!["transfer/blockstm/4t"]);
        assert_eq!(c.only_in_new, vec!["erc20/blockstm/8t"]);
        assert_eq!(c.changes.len(), 3);
        assert!(c.notes.iter().any(|n| n == "commit differs: abc123 vs def456"), "{:?}", c.notes);
        assert!(c.notes.iter().any(|n| n == "cpu differs: Test CPU vs Other CPU"), "{:?}", c.notes);
        assert!(c.notes.iter().any(|n| n == "settings differ: block_size 10000 vs 5000, seed 1 vs 7"), "{:?}", c.notes);
    }

    #[test]
    fn odd_inputs_do_not_panic() {
        let empty = report(vec![]);
        let c = compare(&empty, &empty, &CompareOptions::default());
        assert!(c.changes.is_empty());
        assert_eq!(c.table().lines().count(), 1);

        let mut weird = run("transfer", "blockstm", 8, vec![f64::NAN, f64::INFINITY, 0.0]);
        weird.tps_median = 0.0;
        weird.speedup = f64::NAN;
        weird.block_latency_us.p99 = -1.0;
        let mut dup = run("transfer", "blockstm", 8, vec![]);
        dup.tps_median = 5.0;
        let a = report(vec![weird.clone(), dup]);
        let mut plain = run("transfer", "blockstm", 8, vec![]);
        plain.tps_median = 1000.0;
        let b = report(vec![plain]);
        for opts in [CompareOptions::default(), CompareOptions { threshold: f64::NAN, alpha: f64::NAN }] {
            for (x, y) in [(&a, &b), (&b, &a), (&a, &a)] {
                let c = compare(x, y, &opts);
                assert_eq!(c.changes.len(), 3);
                assert_eq!(c.table().lines().count(), 4);
            }
        }
        let c = compare(&a, &b, &CompareOptions::default());
        assert!(c.notes.iter().any(|n| n.contains("more than once")), "{:?}", c.notes);
        assert!(c.notes.iter().any(|n| n.contains("tps_median cannot be compared")), "{:?}", c.notes);
        assert!(c.changes.iter().all(|f| f.verdict == Verdict::Unchanged));
    }

    #[test]
    fn table_is_aligned() {
        let base =
            report(vec![run("transfer", "blockstm", 8, noisy(1, 20, 1e6, 0.03)), run("hotspot", "sequential", 1, noisy(2, 20, 2e5, 0.03))]);
        let new = scaled(&base, 0.8);
        let c = compare(&base, &new, &CompareOptions::default());
        let t = c.table();
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 1 + c.changes.len());
        assert!(lines[0].starts_with("workload"));
        // The "change" column ends at the same position on every line.
        let col = lines[0].find("change").unwrap() + "change".len();
        for l in &lines[1..] {
            assert!(l[..col].ends_with('%'), "{t}");
        }
    }

    #[test]
    fn mann_whitney_hand_computed() {
        let m = mann_whitney_u(&[1.0, 2.0, 3.0, 4.0, 5.0], &[6.0, 7.0, 8.0, 9.0, 10.0]).unwrap();
        assert_eq!(m.u, 0.0);
        // mean 12.5, sd sqrt(25 × 11 / 12); z = (12.5 - 0.5) / sd = 2.5067 → p = 0.01219
        // (scipy.stats.mannwhitneyu(..., method="asymptotic") gives 0.012185).
        assert!((m.p_value - 0.012185).abs() < 1e-5, "{m:?}");
        assert!(m.z < 0.0);
        let r = mann_whitney_u(&[6.0, 7.0, 8.0, 9.0, 10.0], &[1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
        assert_eq!(r.u, 25.0);
        assert!((r.p_value - m.p_value).abs() < 1e-12);

        // Ties: [1,2,2,3] vs [2,3,4,5]: ranks 1, 3, 3, 5.5 | 3, 5.5, 7, 8 → R1 = 12.5, U = 2.5.
        let t = mann_whitney_u(&[1.0, 2.0, 2.0, 3.0], &[2.0, 3.0, 4.0, 5.0]).unwrap();
        assert_eq!(t.u, 2.5);
        // Tie term: (27 - 3) + (8 - 2) = 30; var = 16/12 × (9 - 30/56) = 11.2857; z = (8 - 2.5 - 0.5)/3.3594.
        let z = 5.0 / (16.0_f64 / 12.0 * (9.0 - 30.0 / 56.0)).sqrt();
        assert!((t.z + z).abs() < 1e-12);
        assert!((t.p_value - 0.136_64).abs() < 1e-4, "{t:?}");

        let same = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0];
        assert!((mann_whitney_u(&same, &same).unwrap().p_value - 1.0).abs() < 1e-6);
        assert_eq!(mann_whitney_u(&[2.0; 5], &[2.0; 5]).unwrap().p_value, 1.0);
        assert!(mann_whitney_u(&[], &[1.0]).is_none());
        assert!(mann_whitney_u(&[f64::NAN], &[1.0]).is_none());
    }

    #[test]
    fn erfc_matches_known_values() {
        for (x, want) in [(0.0, 1.0), (0.5, 0.479_500_122), (1.0, 0.157_299_207), (2.0, 0.004_677_735), (-1.0, 1.842_700_793)] {
            assert!((erfc(x) - want).abs() < 1e-6 * want.max(1e-3), "erfc({x}) = {}", erfc(x));
        }
    }

    #[test]
    fn thresholds() {
        let ok = |s: &str, v: f64| assert!((parse_threshold(s).unwrap() - v).abs() < 1e-12, "{s}");
        ok("5%", 0.05);
        ok("5", 0.05);
        ok(" 2.5 % ", 0.025);
        ok("0", 0.0);
        ok("0.05", 0.0005);
        ok("99.9%", 0.999);
        for bad in ["", "%", "-5%", "-1", "100", "100%", "250%", "abc", "5%%", "nan", "inf", "5 pct", "1e400"] {
            assert!(matches!(parse_threshold(bad), Err(CompareError::Threshold { .. })), "{bad:?} accepted");
        }
    }

    fn temp_file(name: &str, contents: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("occam-compare-test-{}-{name}", std::process::id()));
        std::fs::write(&p, contents).unwrap();
        p
    }

    #[test]
    fn load_report_errors_and_roundtrip() {
        let missing = std::env::temp_dir().join(format!("occam-compare-test-{}-does-not-exist.json", std::process::id()));
        assert!(matches!(load_report(&missing), Err(CompareError::Io { .. })));

        let bad = temp_file("bad.json", "{ not json");
        assert!(matches!(load_report(&bad), Err(CompareError::Json { .. })));

        let wrong = temp_file("wrong.json", r#"{"schema": "occam-sharded/v1", "results": []}"#);
        match load_report(&wrong) {
            Err(CompareError::Schema { found, .. }) => assert_eq!(found, "\"occam-sharded/v1\""),
            other => panic!("{other:?}"),
        }
        let none = temp_file("none.json", r#"[1, 2]"#);
        assert!(matches!(load_report(&none), Err(CompareError::Schema { .. })));

        let incomplete = temp_file("incomplete.json", &format!(r#"{{"schema": "{REPORT_SCHEMA}"}}"#));
        assert!(matches!(load_report(&incomplete), Err(CompareError::Json { .. })));

        // Whole numbers, so the JSON round trip is exact.
        let mut r = base_report(5, 0.1);
        let res = &mut r.results[0];
        res.tps_per_block.iter_mut().for_each(|x| *x = x.round());
        res.tps_median = median(&res.tps_per_block);
        res.tps_mean = res.tps_median;
        let good = temp_file("good.json", &serde_json::to_string_pretty(&r).unwrap());
        assert_eq!(load_report(&good).unwrap(), r);

        for p in [bad, wrong, none, incomplete, good] {
            let _ = std::fs::remove_file(p);
        }
    }
}
