//! `occam bench`: run workloads under executors and thread counts, measure, cross-check.
//!
//! For each workload the blocks are generated once and every executor runs them from the same
//! genesis. `sequential` always runs first: it is the reference every other run is compared
//! with, block by block (state root and outputs), and the base of every speedup. A block's time
//! covers execution and commit (applying the write set and updating the state root), with the
//! executor's own threads for both; the split is reported as `exec_share`.

use crate::distribution::Distribution;
use crate::machine::{Machine, COMMIT};
use crate::record::Recorder;
use crate::workload::{Generator, Workload};
use occam_engine::exec::{executor_by_name, ExecPath, EXECUTOR_NAMES, MAX_THREADS};
use occam_engine::native::{burn, NativeOutput, NativeTx, NativeVm};
use occam_engine::state::CommittedState;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Version tag of the JSON report.
pub const REPORT_SCHEMA: &str = "occam-bench/v1";

/// Largest accepted `--txs`, `--accounts` and `--block-size` (keeps memory bounded).
pub const TXS_MAX: usize = 100_000_000;
/// Largest accepted `--accounts`.
pub const ACCOUNTS_MAX: u64 = 100_000_000;
/// Largest accepted `--tx-cost-us`.
pub const TX_COST_US_MAX: f64 = 100_000.0;

/// Everything a bench run is configured with.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BenchConfig {
    /// Workload names.
    pub workloads: Vec<String>,
    /// Ids per workload (accounts, customers, records, holders…).
    pub accounts: u64,
    /// Measured transactions per run (rounded up to whole blocks).
    pub txs: usize,
    /// Transactions per block.
    pub block_size: usize,
    /// Blocks run before measuring.
    pub warmup_blocks: usize,
    /// Worker counts (the sequential reference runs once, on one thread).
    pub threads: Vec<usize>,
    /// Executors to compare with the reference.
    pub executors: Vec<String>,
    /// Key distribution.
    pub distribution: String,
    /// Seed of the workload generator.
    pub seed: u64,
    /// Emulated VM cost per transaction in microseconds.
    pub tx_cost_us: f64,
}

/// Bad settings, reported before anything runs.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A setting out of range or malformed.
    #[error("{0}")]
    Invalid(String),
}

impl BenchConfig {
    /// Checks every setting and parses names; returns the parsed workloads and distribution.
    pub fn validate(&self) -> Result<(Vec<Workload>, Distribution), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.workloads.is_empty() {
            return bad("--workload needs at least one workload".into());
        }
        let workloads = self
            .workloads
            .iter()
            .map(|w| w.parse::<Workload>().map_err(|e| ConfigError::Invalid(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        let dist = self.distribution.parse::<Distribution>().map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if !(1..=ACCOUNTS_MAX).contains(&self.accounts) {
            return bad(format!("--accounts must be in 1..={ACCOUNTS_MAX}"));
        }
        if !(1..=TXS_MAX).contains(&self.txs) {
            return bad(format!("--txs must be in 1..={TXS_MAX}"));
        }
        if !(1..=occam_engine::exec::MAX_BLOCK_TXS).contains(&self.block_size) {
            return bad(format!("--block-size must be in 1..={}", occam_engine::exec::MAX_BLOCK_TXS));
        }
        if self.warmup_blocks > 1000 {
            return bad("--warmup must be at most 1000 blocks".into());
        }
        if self.threads.is_empty() || self.threads.iter().any(|&t| t == 0 || t > MAX_THREADS) {
            return bad(format!("--threads needs counts in 1..={MAX_THREADS}"));
        }
        if let Some(e) = self.executors.iter().find(|e| !EXECUTOR_NAMES.contains(&e.as_str())) {
            return bad(format!("unknown executor {e:?}; expected one of {}", EXECUTOR_NAMES.join(", ")));
        }
        if !(0.0..=TX_COST_US_MAX).contains(&self.tx_cost_us) || self.tx_cost_us.is_nan() {
            return bad(format!("--tx-cost-us must be in 0..={TX_COST_US_MAX}"));
        }
        Ok((workloads, dist))
    }

    /// Blocks measured per run.
    pub fn measured_blocks(&self) -> usize {
        self.txs.div_ceil(self.block_size)
    }
}

/// How `--tx-cost-us` was turned into hashing rounds on this machine.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Calibration {
    /// Nanoseconds per blake3 round, measured at start-up.
    pub ns_per_round: f64,
    /// Rounds added to every transaction.
    pub work_rounds: u32,
}

/// Measures the cost of one emulated-work round and derives the rounds for `tx_cost_us`.
pub fn calibrate(tx_cost_us: f64) -> Calibration {
    const ROUNDS: u32 = 20_000;
    let mut best = Duration::MAX;
    for i in 0..5 {
        let t = Instant::now();
        std::hint::black_box(burn(ROUNDS, i));
        best = best.min(t.elapsed());
    }
    let ns_per_round = best.as_nanos() as f64 / ROUNDS as f64;
    let work_rounds = if tx_cost_us > 0.0 { ((tx_cost_us * 1000.0 / ns_per_round).round() as u32).max(1) } else { 0 };
    Calibration { ns_per_round, work_rounds }
}

/// Block-latency percentiles in microseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Maximum.
    pub max: f64,
}

/// Mean time per measured block spent in each phase, microseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Phases {
    /// Declared-key analysis (declared, auto).
    pub analysis: f64,
    /// Executing transactions.
    pub execute: f64,
    /// Assembling outputs and the write set.
    pub merge: f64,
    /// Applying the write set and updating the state root.
    pub commit: f64,
}

/// The figures of one (workload, executor, threads) run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RunResult {
    /// Workload name.
    pub workload: String,
    /// Executor name.
    pub executor: String,
    /// Worker threads.
    pub threads: usize,
    /// Blocks measured (after warm-up).
    pub blocks: usize,
    /// Transactions measured.
    pub txs: usize,
    /// Median over measured blocks of transactions per second.
    pub tps_median: f64,
    /// Transactions measured divided by their total time.
    pub tps_mean: f64,
    /// `tps_median` over the sequential reference's, same workload, same run.
    pub speedup: f64,
    /// Block latency (execute + commit), microseconds.
    pub block_latency_us: Latency,
    /// Share of block time spent executing (the rest is commit).
    pub exec_share: f64,
    /// Where the time of a block goes, on average.
    pub phases_us: Phases,
    /// Re-executions per transaction.
    pub reexecutions_per_tx: f64,
    /// Failed validations per transaction.
    pub failed_validations_per_tx: f64,
    /// Executions suspended on an estimate, per transaction.
    pub suspensions_per_tx: f64,
    /// Share of transactions run on one thread by the Block-STM contention fallback.
    pub sequential_tail_share: f64,
    /// Blocks per execution path taken.
    pub paths: BTreeMap<String, usize>,
    /// Failed transactions per transaction.
    pub failure_rate: f64,
    /// State root after the last block.
    pub state_root: String,
    /// blake3 of every block's outputs, in order.
    pub outputs_digest: String,
    /// Transactions per second of each measured block.
    pub tps_per_block: Vec<f64>,
}

/// A complete bench report (the `--json` file).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BenchReport {
    /// Always [`REPORT_SCHEMA`].
    pub schema: String,
    /// Version of occam.
    pub occam_version: String,
    /// Commit of the binary.
    pub commit: String,
    /// Unix time the run started, seconds.
    pub started_unix_s: u64,
    /// The machine.
    pub machine: Machine,
    /// The settings.
    pub settings: BenchConfig,
    /// The emulated-cost calibration.
    pub calibration: Calibration,
    /// One entry per run.
    pub results: Vec<RunResult>,
    /// Every disagreement with the reference (empty when all agree).
    pub mismatches: Vec<String>,
}

/// Where progress goes.
pub trait Progress {
    /// `blocks` more blocks are done; `msg` says what is running.
    fn advance(&self, blocks: u64, msg: &str);
}

impl Progress for () {
    fn advance(&self, _: u64, _: &str) {}
}

impl Progress for indicatif::ProgressBar {
    fn advance(&self, blocks: u64, msg: &str) {
        self.set_message(msg.to_string());
        self.inc(blocks);
    }
}

/// What one run produced, block by block, for cross-checking.
struct Trace {
    roots: Vec<String>,
    output_digests: Vec<[u8; 32]>,
}

fn outputs_digest(outputs: &[NativeOutput]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    for o in outputs {
        match o {
            Ok(v) => {
                h.update(&[0]);
                h.update(&v.to_le_bytes());
            }
            Err(f) => {
                h.update(&[1, *f as u8]);
            }
        }
    }
    *h.finalize().as_bytes()
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

/// Total blocks a run of `cfg` executes, for the progress bar.
pub fn total_blocks(cfg: &BenchConfig, workloads: usize) -> u64 {
    let runs = 1 + cfg.executors.iter().filter(|e| *e != "sequential").count() * cfg.threads.len();
    (workloads * runs * (cfg.measured_blocks() + cfg.warmup_blocks)) as u64
}

/// Runs the whole bench. Mismatches are collected in the report, not returned as errors.
pub fn run_bench(cfg: &BenchConfig, record: Option<&PathBuf>, progress: &dyn Progress) -> anyhow::Result<BenchReport> {
    let (workloads, dist) = cfg.validate()?;
    let calibration = calibrate(cfg.tx_cost_us);
    let started_unix_s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut results = Vec::new();
    let mut mismatches = Vec::new();
    let vm = NativeVm;
    for workload in &workloads {
        let genesis = NativeVm::genesis(&workload.genesis(cfg.accounts));
        let base = CommittedState::from_entries(genesis);
        let mut gen = Generator::new(*workload, cfg.accounts, dist, cfg.seed, calibration.work_rounds);
        let blocks: Vec<Vec<NativeTx>> = (0..cfg.warmup_blocks + cfg.measured_blocks()).map(|_| gen.block(cfg.block_size)).collect();

        let mut runs: Vec<(&str, usize)> = vec![("sequential", 1)];
        for e in cfg.executors.iter().filter(|e| *e != "sequential") {
            for &t in &cfg.threads {
                runs.push((e.as_str(), t));
            }
        }
        let mut reference: Option<(Trace, f64)> = None;
        for (executor, threads) in runs {
            let label = format!("{workload} {executor} x{threads}");
            let mut exec = executor_by_name::<NativeVm>(executor, threads)?;
            let mut state = base.clone();
            let mut recorder = match (record, executor) {
                (Some(dir), "sequential") => Some(Recorder::create(dir, workload, cfg, &calibration, &base)?),
                _ => None,
            };
            let mut trace = Trace { roots: Vec::new(), output_digests: Vec::new() };
            let (mut times, mut exec_ns, mut total_ns) = (Vec::new(), 0u128, 0u128);
            let mut paths = BTreeMap::new();
            let mut phases = Phases::default();
            let (mut executions, mut failed_val, mut suspensions, mut tail, mut failures, mut measured_txs) =
                (0u64, 0u64, 0u64, 0u64, 0usize, 0usize);
            for (height, block) in blocks.iter().enumerate() {
                let t0 = Instant::now();
                let out = exec.execute(&vm, &state, block)?;
                let t1 = Instant::now();
                state.apply(&out.write_set, exec.pool());
                let t2 = Instant::now();
                let root = state.root().to_hex();
                let digest = outputs_digest(&out.outputs);
                if let Some(r) = recorder.as_mut() {
                    r.block(height, block, &out.outputs, &root)?;
                }
                if height >= cfg.warmup_blocks {
                    let dt = (t2 - t0).as_secs_f64();
                    times.push(dt);
                    exec_ns += (t1 - t0).as_nanos();
                    total_ns += (t2 - t0).as_nanos();
                    let s = &out.stats;
                    phases.analysis += s.analysis_ns as f64 / 1e3;
                    phases.execute += s.execute_ns as f64 / 1e3;
                    phases.merge += s.merge_ns as f64 / 1e3;
                    phases.commit += (t2 - t1).as_nanos() as f64 / 1e3;
                    executions += s.executions;
                    failed_val += s.failed_validations;
                    suspensions += s.suspensions;
                    tail += s.sequential_tail;
                    measured_txs += block.len();
                    failures += out.outputs.iter().filter(|o| o.is_err()).count();
                    *paths.entry(path_name(s.path).to_string()).or_insert(0) += 1;
                }
                if let Some((r, _)) = &reference {
                    if r.roots[height] != root {
                        mismatches.push(format!("{label}: block {height} state root {root} != sequential {}", r.roots[height]));
                    } else if r.output_digests[height] != digest {
                        mismatches.push(format!("{label}: block {height} outputs differ from sequential"));
                    }
                }
                trace.roots.push(root);
                trace.output_digests.push(digest);
                progress.advance(1, &label);
            }
            if let Some(r) = recorder {
                r.finish(&state)?;
            }
            let mut tps: Vec<f64> = blocks[cfg.warmup_blocks..].iter().zip(&times).map(|(b, t)| b.len() as f64 / t.max(1e-12)).collect();
            let tps_per_block = tps.clone();
            tps.sort_by(f64::total_cmp);
            let tps_median = percentile(&tps, 0.5);
            let mut lat: Vec<f64> = times.iter().map(|t| t * 1e6).collect();
            lat.sort_by(f64::total_cmp);
            let per_tx = |v: u64| v as f64 / measured_txs.max(1) as f64;
            let mut all_digest = blake3::Hasher::new();
            for d in &trace.output_digests {
                all_digest.update(d);
            }
            let speedup = reference.as_ref().map_or(1.0, |(_, base_tps)| tps_median / base_tps);
            results.push(RunResult {
                workload: workload.to_string(),
                executor: executor.to_string(),
                threads,
                blocks: times.len(),
                txs: measured_txs,
                tps_median,
                tps_mean: measured_txs as f64 / (total_ns as f64 / 1e9).max(1e-12),
                speedup,
                block_latency_us: Latency {
                    p50: percentile(&lat, 0.5),
                    p90: percentile(&lat, 0.9),
                    p99: percentile(&lat, 0.99),
                    max: lat.last().copied().unwrap_or(0.0),
                },
                exec_share: exec_ns as f64 / total_ns.max(1) as f64,
                phases_us: {
                    let k = times.len().max(1) as f64;
                    Phases {
                        analysis: phases.analysis / k,
                        execute: phases.execute / k,
                        merge: phases.merge / k,
                        commit: phases.commit / k,
                    }
                },
                reexecutions_per_tx: per_tx(executions.saturating_sub(measured_txs as u64)),
                failed_validations_per_tx: per_tx(failed_val),
                suspensions_per_tx: per_tx(suspensions),
                sequential_tail_share: per_tx(tail),
                paths,
                failure_rate: failures as f64 / measured_txs.max(1) as f64,
                state_root: trace.roots.last().cloned().unwrap_or_else(|| state.root().to_hex()),
                outputs_digest: all_digest.finalize().to_hex().to_string(),
                tps_per_block,
            });
            if reference.is_none() {
                reference = Some((trace, tps_median));
            }
        }
    }
    Ok(BenchReport {
        schema: REPORT_SCHEMA.into(),
        occam_version: env!("CARGO_PKG_VERSION").into(),
        commit: COMMIT.into(),
        started_unix_s,
        machine: Machine::detect(),
        settings: cfg.clone(),
        calibration,
        results,
        mismatches,
    })
}

/// The report name of an execution path.
pub fn path_name(p: ExecPath) -> &'static str {
    match p {
        ExecPath::Sequential => "sequential",
        ExecPath::Parallel => "parallel",
        ExecPath::ParallelThenSequential => "parallel+tail",
        ExecPath::Declared => "declared",
        ExecPath::DeclaredFallback => "declared-fallback",
        ExecPath::Serial => "serial",
    }
}
