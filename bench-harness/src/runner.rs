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
use crate::storage::{storage_result, Persister, StorageResult, StorageSpec, WriteTime, STORAGE_SUFFIX};
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
    /// Run the executors block by block in turn instead of one after the other.
    #[serde(default)]
    pub interleave: bool,
    /// `rocksdb` or `rocksdb:DIR`: every executor run gets a twin that also persists each
    /// block to a store (see [`crate::storage`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
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
        if let Some(spec) = &self.storage {
            StorageSpec::parse(spec).map_err(ConfigError::Invalid)?;
        }
        if self.workloads.is_empty() {
            return bad("--workload needs at least one workload".into());
        }
        let workloads = self
            .workloads
            .iter()
            .flat_map(|w| match w.as_str() {
                "scenarios" => crate::mix::SCENARIOS.iter().map(|(n, _)| n.to_string()).collect(),
                _ => vec![w.clone()],
            })
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
        for w in &workloads {
            w.check(self.accounts, dist).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        }
        Ok((workloads, dist))
    }

    /// Blocks measured per run.
    pub fn measured_blocks(&self) -> usize {
        self.txs.div_ceil(self.block_size)
    }

    /// Every listed executor at every thread count, `sequential` once at one thread: the runs
    /// of the signature pipeline and of the sharded bench.
    pub fn executor_runs(&self) -> Vec<(&str, usize)> {
        let mut runs = Vec::new();
        for e in &self.executors {
            for &t in &self.threads {
                let run = (e.as_str(), if e == "sequential" { 1 } else { t });
                if !runs.contains(&run) {
                    runs.push(run);
                }
            }
        }
        runs
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
    /// Median over measured blocks of (sequential time of the block / this run's time of the
    /// same block): paired by block, so blocks of different content are never compared.
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
    /// What persisting cost (only the persisted twins of `--storage` runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageResult>,
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
    /// How long idle workers spin between blocks, µs (`OCCAM_KEEP_WARM_US`).
    #[serde(default)]
    pub keep_warm_us: u64,
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

/// The `q` quantile of sorted samples (nearest rank; 0 when empty).
pub(crate) fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

/// Total blocks a run of `cfg` executes, for the progress bar.
pub fn total_blocks(cfg: &BenchConfig, workloads: usize) -> u64 {
    let twins = if cfg.storage.is_some() { 2 } else { 1 };
    let runs = 1 + cfg.executors.iter().filter(|e| *e != "sequential").count() * cfg.threads.len() * twins;
    (workloads * runs * (cfg.measured_blocks() + cfg.warmup_blocks)) as u64
}

/// One (executor, threads) run of a workload in progress.
struct Run {
    label: String,
    executor: String,
    threads: usize,
    exec: Box<dyn occam_engine::exec::BlockExecutor<NativeVm>>,
    state: CommittedState,
    trace: Trace,
    acc: Accumulators,
    /// The store of a persisted twin, and the index of its in-memory run.
    persisted: Option<(Persister, usize)>,
    /// A persisted twin's persist times (seconds) and store size, once it has finished.
    persist_done: Option<(Vec<WriteTime>, u64)>,
}

/// What a run has measured so far (measured blocks only).
#[derive(Default)]
struct Accumulators {
    times: Vec<f64>,
    sizes: Vec<usize>,
    exec_ns: u128,
    total_ns: u128,
    phases: Phases,
    paths: BTreeMap<String, usize>,
    executions: u64,
    failed_validations: u64,
    suspensions: u64,
    tail: u64,
    failures: usize,
    txs: usize,
}

impl Accumulators {
    fn add(&mut self, txs: usize, out: &occam_engine::exec::BlockOutput<NativeOutput>, exec: Duration, commit: Duration) {
        let total = exec + commit;
        self.times.push(total.as_secs_f64());
        self.sizes.push(txs);
        self.exec_ns += exec.as_nanos();
        self.total_ns += total.as_nanos();
        let s = &out.stats;
        self.phases.analysis += s.analysis_ns as f64 / 1e3;
        self.phases.execute += s.execute_ns as f64 / 1e3;
        self.phases.merge += s.merge_ns as f64 / 1e3;
        self.phases.commit += commit.as_nanos() as f64 / 1e3;
        self.executions += s.executions;
        self.failed_validations += s.failed_validations;
        self.suspensions += s.suspensions;
        self.tail += s.sequential_tail;
        self.txs += txs;
        self.failures += out.outputs.iter().filter(|o| o.is_err()).count();
        *self.paths.entry(path_name(s.path).to_string()).or_insert(0) += 1;
    }
}

impl Run {
    /// The run's figures; `reference_times` are the sequential run's block times.
    fn result(&self, workload: &Workload, reference_times: &[f64]) -> RunResult {
        let a = &self.acc;
        let tps_per_block: Vec<f64> = a.sizes.iter().zip(&a.times).map(|(n, t)| *n as f64 / t.max(1e-12)).collect();
        let mut tps = tps_per_block.clone();
        tps.sort_by(f64::total_cmp);
        let mut lat: Vec<f64> = a.times.iter().map(|t| t * 1e6).collect();
        lat.sort_by(f64::total_cmp);
        // Paired per block: the sequential time of block b over this run's time of block b.
        let mut ratios: Vec<f64> = reference_times.iter().zip(&a.times).map(|(r, t)| r / t.max(1e-12)).collect();
        ratios.sort_by(f64::total_cmp);
        let per_tx = |v: u64| v as f64 / a.txs.max(1) as f64;
        let mut all_digest = blake3::Hasher::new();
        for d in &self.trace.output_digests {
            all_digest.update(d);
        }
        let k = a.times.len().max(1) as f64;
        RunResult {
            workload: workload.to_string(),
            executor: self.executor.clone(),
            threads: self.threads,
            blocks: a.times.len(),
            txs: a.txs,
            tps_median: percentile(&tps, 0.5),
            tps_mean: a.txs as f64 / (a.total_ns as f64 / 1e9).max(1e-12),
            speedup: percentile(&ratios, 0.5),
            block_latency_us: Latency {
                p50: percentile(&lat, 0.5),
                p90: percentile(&lat, 0.9),
                p99: percentile(&lat, 0.99),
                max: lat.last().copied().unwrap_or(0.0),
            },
            exec_share: a.exec_ns as f64 / a.total_ns.max(1) as f64,
            phases_us: Phases {
                analysis: a.phases.analysis / k,
                execute: a.phases.execute / k,
                merge: a.phases.merge / k,
                commit: a.phases.commit / k,
            },
            reexecutions_per_tx: per_tx(a.executions.saturating_sub(a.txs as u64)),
            failed_validations_per_tx: per_tx(a.failed_validations),
            suspensions_per_tx: per_tx(a.suspensions),
            sequential_tail_share: per_tx(a.tail),
            paths: a.paths.clone(),
            failure_rate: a.failures as f64 / a.txs.max(1) as f64,
            state_root: self.trace.roots.last().cloned().unwrap_or_else(|| self.state.root().to_hex()),
            outputs_digest: all_digest.finalize().to_hex().to_string(),
            tps_per_block,
            storage: None,
        }
    }
}

/// Runs the whole bench. Mismatches are collected in the report, not returned as errors.
pub fn run_bench(cfg: &BenchConfig, record: Option<&PathBuf>, progress: &dyn Progress) -> anyhow::Result<BenchReport> {
    let (workloads, dist) = cfg.validate()?;
    let calibration = calibrate(cfg.tx_cost_us);
    let started_unix_s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut results = Vec::new();
    let mut mismatches = Vec::new();
    let vm = NativeVm;
    let storage = cfg.storage.as_deref().map(StorageSpec::parse).transpose().map_err(ConfigError::Invalid)?;
    for workload in &workloads {
        let genesis = workload.genesis_entries(cfg.accounts);
        let base = CommittedState::from_entries(genesis);
        let mut gen = Generator::new(workload.clone(), cfg.accounts, dist, cfg.seed, calibration.work_rounds);
        let blocks: Vec<Vec<NativeTx>> = (0..cfg.warmup_blocks + cfg.measured_blocks()).map(|_| gen.block(cfg.block_size)).collect();

        let mut runs: Vec<Run> = Vec::new();
        for (executor, threads) in std::iter::once(("sequential", 1))
            .chain(cfg.executors.iter().filter(|e| *e != "sequential").flat_map(|e| cfg.threads.iter().map(move |&t| (e.as_str(), t))))
        {
            let new_run = |executor: String, persisted| -> anyhow::Result<Run> {
                Ok(Run {
                    label: format!("{workload} {executor} x{threads}"),
                    exec: executor_by_name::<NativeVm>(executor_name(&executor), threads)?,
                    executor,
                    threads,
                    state: base.clone(),
                    trace: Trace { roots: Vec::new(), output_digests: Vec::new() },
                    acc: Accumulators::default(),
                    persisted,
                    persist_done: None,
                })
            };
            runs.push(new_run(executor.to_string(), None)?);
            if let (Some(spec), true) = (&storage, executor != "sequential") {
                let twin = format!("{executor}{STORAGE_SUFFIX}");
                let persister = Persister::start(spec, &format!("{workload}-{twin}-x{threads}").replace(['/', ':'], "_"), &base)?;
                runs.push(new_run(twin, Some((persister, runs.len() - 1)))?);
            }
        }
        let mut recorder = match record {
            Some(dir) => Some(Recorder::create(dir, workload, cfg, &calibration, &base)?),
            None => None,
        };
        // Either every run goes through all blocks before the next starts (caches stay warm
        // with the run's own state, as in the Block-STM papers), or, with `interleave`, runs
        // take turns block by block, so that a slow spell on a shared machine hits all of them
        // alike (at the price of colder caches).
        let order: Vec<(usize, usize)> = if cfg.interleave {
            (0..blocks.len()).flat_map(|h| (0..runs.len()).map(move |r| (r, h))).collect()
        } else {
            (0..runs.len()).flat_map(|r| (0..blocks.len()).map(move |h| (r, h))).collect()
        };
        for (r, height) in order {
            let (run, block) = (&mut runs[r], &blocks[height]);
            let t0 = Instant::now();
            let mut out = run.exec.execute(&vm, &run.state, block)?;
            let t1 = Instant::now();
            run.state.apply(&out.write_set, run.exec.pool());
            let state_root = run.state.root();
            if let Some((persister, _)) = run.persisted.as_mut() {
                let writes = std::mem::take(&mut out.write_set);
                persister.persist(height as u64 + 1, writes, state_root, height >= cfg.warmup_blocks)?;
                if height + 1 == blocks.len() {
                    // The run ends when its last block is on disk.
                    run.persist_done = Some((persister.finish()?, 0));
                }
            }
            let t2 = Instant::now();
            if let (Some((persister, _)), Some(done), true) =
                (run.persisted.as_mut(), run.persist_done.as_mut(), height + 1 == blocks.len())
            {
                done.1 = persister.close();
            }
            let root = state_root.to_hex();
            let digest = outputs_digest(&out.outputs);
            if r == 0 {
                if let Some(rec) = recorder.as_mut() {
                    rec.block(height, block, &out.outputs, &root)?;
                }
            }
            if height >= cfg.warmup_blocks {
                run.acc.add(block.len(), &out, t1 - t0, t2 - t1);
            }
            run.trace.roots.push(root);
            run.trace.output_digests.push(digest);
            progress.advance(1, &run.label);
        }
        let (reference, others) = runs.split_first().expect("sequential always runs");
        for run in others {
            let first_difference = (0..blocks.len()).find(|&h| {
                run.trace.roots[h] != reference.trace.roots[h] || run.trace.output_digests[h] != reference.trace.output_digests[h]
            });
            if let Some(h) = first_difference {
                if run.trace.roots[h] != reference.trace.roots[h] {
                    mismatches.push(format!(
                        "{}: block {h} state root {} != sequential {}",
                        run.label, run.trace.roots[h], reference.trace.roots[h]
                    ));
                } else {
                    mismatches.push(format!("{}: block {h} outputs differ from sequential", run.label));
                }
            }
        }
        if let Some(rec) = recorder {
            rec.finish(&runs[0].state)?;
        }
        let reference_times = runs[0].acc.times.clone();
        let first = results.len();
        for run in &runs {
            results.push(run.result(workload, &reference_times));
        }
        for (i, run) in runs.iter_mut().enumerate() {
            if let (Some((persister, memory)), Some((times, disk_bytes))) = (&run.persisted, run.persist_done.take()) {
                let ratio = results[first + i].tps_mean / results[first + *memory].tps_mean.max(1e-12);
                let txs_run = blocks.iter().map(Vec::len).sum();
                let written = disk_bytes.saturating_sub(persister.genesis_bytes);
                results[first + i].storage = Some(storage_result(&times, &persister.waits, ratio, written, txs_run));
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
        keep_warm_us: occam_engine::exec::keep_warm_setting().as_micros() as u64,
        results,
        mismatches,
    })
}

/// The engine's name of a run's executor (a persisted twin runs the same executor).
fn executor_name(run_executor: &str) -> &str {
    run_executor.strip_suffix(STORAGE_SUFFIX).unwrap_or(run_executor)
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
