//! `occam bench --shards LIST`: the embedded sharded engine against one shard.
//!
//! For every shard count S of the list, the workload's blocks are generated for S shards (with
//! `--cross-shard F`, that share of `transfer`s spans two shards), then run on
//! `S shards × T threads` for every executor and thread count, and on the baseline
//! `1 shard × 1 thread` (same executor, same blocks) in the same run. Every block's combined
//! root is checked against a sequential replay of the documented serial order on one unsharded
//! state. The report gives per-shard throughput (a shard's single-shard transactions over the
//! time it spent on them), the measured cross-shard share, the imbalance between shards (most
//! loaded shard's transactions over the mean) and the cross-shard overhead (share of the block
//! time spent in the cross-shard phase).

use crate::machine::{Machine, COMMIT};
use crate::report::human_rate;
use crate::runner::{BenchConfig, Progress};
use crate::workload::{Generator, Placement, Workload};
use occam_engine::exec::executor_by_name;
use occam_engine::native::{keys, NativeTx, NativeVm};
use occam_engine::state::CommittedState;
use occam_shard::engine::{route, CrossBatching, ShardedEngine};
use occam_shard::partition::{partitioner_by_spec, Partitioner};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

/// Version tag of the sharded JSON report.
pub const SHARDED_SCHEMA: &str = "occam-bench-sharded/v1";

/// Settings of a sharded run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ShardedConfig {
    /// Shard counts to run.
    pub shards: Vec<usize>,
    /// Share of cross-shard `transfer`s asked of the generator.
    pub cross_share: f64,
    /// Partitioner spec: `hash`, `range`, `range:B1,...` or `map:PATH`.
    pub partitioner: String,
    /// One protocol round per block (`per-block`), per cross-shard transaction (`per-tx`), or
    /// Aria-style rounds (`reservation`, whose serial order is its own).
    #[serde(default = "per_block")]
    pub cross_batching: String,
}

fn per_block() -> String {
    "per-block".into()
}

fn batching(name: &str) -> anyhow::Result<CrossBatching> {
    match name {
        "per-block" => Ok(CrossBatching::PerBlock),
        "per-tx" => Ok(CrossBatching::PerTransaction),
        "reservation" => Ok(CrossBatching::Reservation),
        other => anyhow::bail!("--cross-batching must be per-block, per-tx or reservation, got {other:?}"),
    }
}

/// One `S shards × T threads` run of a workload.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ShardedResult {
    /// Workload name.
    pub workload: String,
    /// Executor inside every shard.
    pub executor: String,
    /// Shards.
    pub shards: usize,
    /// Threads per shard.
    pub threads: usize,
    /// Measured transactions.
    pub txs: usize,
    /// Transactions per second (median over blocks).
    pub tps: f64,
    /// Per block, the baseline's time over this run's, median (baseline: 1 shard × 1 thread,
    /// same executor and blocks).
    pub speedup: f64,
    /// Share of cross-shard transactions measured.
    pub cross_share: f64,
    /// Per shard, its single-shard transactions over the time it spent on them.
    pub shard_tps: Vec<f64>,
    /// Most loaded shard's single-shard transactions over the mean.
    pub imbalance: f64,
    /// Share of the block time in the cross-shard phase.
    pub cross_overhead: f64,
    /// Protocol messages per block.
    pub messages_per_block: f64,
    /// Combined root after the last block.
    pub state_root: String,
}

/// The sharded `--json` report.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ShardedReport {
    /// Always [`SHARDED_SCHEMA`].
    pub schema: String,
    /// Commit of the binary.
    pub commit: String,
    /// The machine.
    pub machine: Machine,
    /// Workload settings.
    pub settings: BenchConfig,
    /// Sharding settings.
    pub sharding: ShardedConfig,
    /// One entry per run (the baselines included, as `1 × 1`).
    pub results: Vec<ShardedResult>,
    /// Every disagreement with the oracle (empty on success).
    pub mismatches: Vec<String>,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Expected combined root after each block: a sequential replay of the documented serial order
/// (single-shard transactions, then cross-shard ones, each in block order) on one state.
fn oracle_roots(genesis: &CommittedState, blocks: &[Vec<NativeTx>], p: &dyn Partitioner) -> anyhow::Result<Vec<String>> {
    let mut state = genesis.clone();
    let mut seq = executor_by_name::<NativeVm>("sequential", 1)?;
    let mut roots = Vec::with_capacity(blocks.len());
    for block in blocks {
        let order: Vec<NativeTx> = route(&NativeVm, p, block)?.serial_order().into_iter().map(|i| block[i].clone()).collect();
        seq.execute_and_commit(&NativeVm, &mut state, &order)?;
        roots.push(state.root().to_hex());
    }
    Ok(roots)
}

/// Blocks a sharded run over `workloads` workloads executes, for a progress bar: per shard
/// count, every (executor, threads) run and one 1 shard × 1 thread baseline per executor.
pub fn sharded_blocks(cfg: &BenchConfig, sc: &ShardedConfig, workloads: usize) -> u64 {
    let runs_per_count = cfg.executors.len() + cfg.executor_runs().len();
    (workloads * sc.shards.len() * runs_per_count * (cfg.measured_blocks() + cfg.warmup_blocks)) as u64
}

/// Runs every workload × shard count × executor × threads of `cfg` and `sc`.
pub fn run_sharded(cfg: &BenchConfig, sc: &ShardedConfig, progress: &dyn Progress) -> anyhow::Result<ShardedReport> {
    let (workloads, dist) = cfg.validate()?;
    if sc.shards.is_empty() || sc.shards.iter().any(|&s| s == 0 || s > occam_shard::partition::MAX_SHARDS) {
        anyhow::bail!("--shards needs shard counts between 1 and {}", occam_shard::partition::MAX_SHARDS);
    }
    let batching = batching(&sc.cross_batching)?;
    if !(0.0..=1.0).contains(&sc.cross_share) {
        anyhow::bail!("--cross-shard must be between 0 and 1, got {}", sc.cross_share);
    }
    let mut results = Vec::new();
    let mut mismatches = Vec::new();
    for workload in &workloads {
        let genesis = CommittedState::from_entries(workload.genesis_entries(cfg.accounts));
        for &shards in &sc.shards {
            let p: Arc<dyn Partitioner> = Arc::from(partitioner_by_spec(&sc.partitioner, shards, workload.id_count(cfg.accounts))?);
            let placement_p = Arc::clone(&p);
            let placement =
                Placement { shard_of: Arc::new(move |id| placement_p.shard_of(&keys::account(id))), cross_share: sc.cross_share };
            let mut gen = Generator::new(workload.clone(), cfg.accounts, dist, cfg.seed, 0).with_placement(placement);
            let blocks: Vec<Vec<NativeTx>> = (0..cfg.warmup_blocks + cfg.measured_blocks()).map(|_| gen.block(cfg.block_size)).collect();
            let expected = oracle_roots(&genesis, &blocks, &*p)?;
            // One shard's serial order is the block order: a different order, hence its own oracle.
            let one: Arc<dyn Partitioner> = Arc::from(partitioner_by_spec("hash", 1, 1)?);
            let expected_one = oracle_roots(&genesis, &blocks, &*one)?;
            for executor in &cfg.executors {
                let baseline = run_one(workload, executor, Arc::clone(&one), 1, batching, &genesis, &blocks, cfg.warmup_blocks, progress)?;
                let mut runs = vec![];
                for (_, threads) in cfg.executor_runs().into_iter().filter(|(e, _)| e == executor) {
                    runs.push(run_one(
                        workload,
                        executor,
                        Arc::clone(&p),
                        threads,
                        batching,
                        &genesis,
                        &blocks,
                        cfg.warmup_blocks,
                        progress,
                    )?);
                }
                for (run, expected) in std::iter::once((&baseline, &expected_one)).chain(runs.iter().map(|r| (r, &expected))) {
                    let expected = run.own_oracle.as_ref().unwrap_or(expected);
                    let label = format!("{workload} {executor} {} shards x{}", run.shards, run.threads);
                    if let Some(h) = (0..blocks.len()).find(|&h| run.roots[h] != expected[h]) {
                        mismatches.push(format!("{label}: block {h} combined root {} != oracle {}", run.roots[h], expected[h]));
                    }
                    let speedup = median(baseline.times.iter().zip(&run.times).map(|(b, t)| b / t).collect());
                    results.push(run.result(workload, executor, speedup));
                }
            }
        }
    }
    Ok(ShardedReport {
        schema: SHARDED_SCHEMA.into(),
        commit: COMMIT.into(),
        machine: Machine::detect(),
        settings: cfg.clone(),
        sharding: sc.clone(),
        results,
        mismatches,
    })
}

/// What one run measured (measured blocks only, except `roots`).
struct Measured {
    shards: usize,
    threads: usize,
    times: Vec<f64>,
    txs: usize,
    cross: usize,
    shard_txs: Vec<usize>,
    shard_ns: Vec<u64>,
    cross_ns: u64,
    total_ns: u64,
    messages: usize,
    roots: Vec<String>,
    /// Under reservation, the oracle's roots for the order the engine reported.
    own_oracle: Option<Vec<String>>,
}

impl Measured {
    fn result(&self, workload: &Workload, executor: &str, speedup: f64) -> ShardedResult {
        let blocks = self.times.len().max(1);
        let mean = self.shard_txs.iter().sum::<usize>() as f64 / self.shards as f64;
        ShardedResult {
            workload: workload.to_string(),
            executor: executor.to_string(),
            shards: self.shards,
            threads: self.threads,
            txs: self.txs,
            tps: median(self.times.iter().map(|t| self.txs as f64 / blocks as f64 / t).collect()),
            speedup,
            cross_share: self.cross as f64 / self.txs.max(1) as f64,
            shard_tps: self.shard_txs.iter().zip(&self.shard_ns).map(|(&n, &ns)| n as f64 / (ns as f64 / 1e9).max(1e-9)).collect(),
            imbalance: if mean > 0.0 { *self.shard_txs.iter().max().unwrap_or(&0) as f64 / mean } else { 1.0 },
            cross_overhead: self.cross_ns as f64 / self.total_ns.max(1) as f64,
            messages_per_block: self.messages as f64 / blocks as f64,
            state_root: self.roots.last().cloned().unwrap_or_default(),
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn run_one(
    workload: &Workload,
    executor: &str,
    p: Arc<dyn Partitioner>,
    threads: usize,
    batching: CrossBatching,
    genesis: &CommittedState,
    blocks: &[Vec<NativeTx>],
    warmup: usize,
    progress: &dyn Progress,
) -> anyhow::Result<Measured> {
    let shards = p.shards();
    let mut engine = ShardedEngine::new(p, executor, threads, genesis)?;
    engine.set_batching(batching);
    let mut m = Measured {
        shards,
        threads,
        times: Vec::new(),
        txs: 0,
        cross: 0,
        shard_txs: vec![0; shards],
        shard_ns: vec![0; shards],
        cross_ns: 0,
        total_ns: 0,
        messages: 0,
        roots: Vec::new(),
        own_oracle: None,
    };
    // Reservation rounds take effect in an order of their own: replay exactly that order.
    let mut oracle = match batching {
        CrossBatching::Reservation => Some((genesis.clone(), executor_by_name::<NativeVm>("sequential", 1)?)),
        CrossBatching::PerBlock | CrossBatching::PerTransaction => None,
    };
    for (h, block) in blocks.iter().enumerate() {
        let t = Instant::now();
        let out = engine.execute_block(&NativeVm, block)?;
        let elapsed = t.elapsed();
        m.roots.push(engine.root().to_hex());
        if let Some((state, seq)) = oracle.as_mut() {
            let cross: HashSet<usize> = out.stats.cross_order.iter().copied().collect();
            let order: Vec<NativeTx> = (0..block.len())
                .filter(|i| !cross.contains(i))
                .chain(out.stats.cross_order.iter().copied())
                .map(|i| block[i].clone())
                .collect();
            seq.execute_and_commit(&NativeVm, state, &order)?;
            m.own_oracle.get_or_insert_with(Vec::new).push(state.root().to_hex());
        }
        if h >= warmup {
            m.times.push(elapsed.as_secs_f64());
            m.txs += block.len();
            m.cross += out.stats.cross_txs;
            for s in 0..shards {
                m.shard_txs[s] += out.stats.shard_txs[s];
                m.shard_ns[s] += out.stats.shard_ns[s];
            }
            m.cross_ns += out.stats.cross_phase_ns;
            m.total_ns += elapsed.as_nanos() as u64;
            m.messages += out.stats.messages;
        }
        progress.advance(1, &format!("{workload} {executor} {shards} shards x{threads}"));
    }
    Ok(m)
}

/// The sharded table.
pub fn sharded_table(r: &ShardedReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "occam bench --shards  commit {}  {}\npartitioner {}  cross-shard transfers asked {:.0}%  coordination {}  block {} txs  {} measured blocks after {} warm-up\n",
        r.commit,
        r.machine.summary(),
        r.sharding.partitioner,
        r.sharding.cross_share * 100.0,
        r.sharding.cross_batching,
        r.settings.block_size,
        r.settings.measured_blocks(),
        r.settings.warmup_blocks
    );
    let _ = writeln!(
        out,
        "{:<10}  {:<10}  {:>6}  {:>3}  {:>8}  {:>7}  {:>6}  {:>9}  {:>8}  per-shard TPS",
        "workload", "executor", "shards", "thr", "TPS", "speedup", "cross", "imbalance", "xoverhead"
    );
    let _ = writeln!(out, "{}", "-".repeat(110));
    for x in &r.results {
        let per_shard: Vec<String> = x.shard_tps.iter().map(|&t| human_rate(t)).collect();
        let _ = writeln!(
            out,
            "{:<10}  {:<10}  {:>6}  {:>3}  {:>8}  {:>6.2}x  {:>5.1}%  {:>9.2}  {:>8.1}%  {}",
            x.workload,
            x.executor,
            x.shards,
            x.threads,
            human_rate(x.tps),
            x.speedup,
            x.cross_share * 100.0,
            x.imbalance,
            x.cross_overhead * 100.0,
            per_shard.join(" ")
        );
    }
    out
}
