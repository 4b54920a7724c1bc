//! `auto`: per block, the declared-chains path or Block-STM, from the block's shape.
//!
//! The declared analysis gives two numbers: the largest chain (declared chains cannot split
//! it, so declared parallelism is about `n / largest`) and the critical path (Block-STM can at
//! best overlap `n / critical_path` transactions, and pays for its bookkeeping). `auto` takes
//! the declared path unless Block-STM's bound, discounted for bookkeeping, is clearly better:
//! typical of skewed blocks where hot keys glue everything into one chain whose transactions
//! still mostly do not depend on each other directly. Blocks that start as one dependency
//! chain run in order on one thread (the declared executor's contention probe).
//!
//! The model cannot know how much Block-STM's bookkeeping and aborts cost for this VM and
//! workload, so `auto` also keeps score: the time per transaction each path took on recent
//! blocks. When the model picks Block-STM but Block-STM was measured slower than the chains,
//! it stays on the chains, and tries Block-STM again every [`RETRY_BLOCKS`] blocks. Like every
//! choice here, this changes speed only, never results.

use super::declared::DeclaredExecutor;
use super::workers::WorkerPool;
use super::{BlockExecutor, BlockOutput, ExecError, ExecPath};
use crate::state::CommittedState;
use crate::vm::Vm;
use std::sync::Arc;

/// Share of ideal speedup Block-STM is credited with when comparing paths.
const BLOCK_STM_EFFICIENCY: f64 = 0.5;

/// Blocks after which a path measured slower is tried again.
pub const RETRY_BLOCKS: u32 = 32;

/// The `auto` executor.
pub struct AutoExecutor {
    declared: DeclaredExecutor,
    threads: usize,
    /// Smoothed nanoseconds per transaction of the chains path and of Block-STM.
    chains_ns: Option<f64>,
    block_stm_ns: Option<f64>,
    /// Blocks since Block-STM was last measured.
    since_block_stm: u32,
}

impl AutoExecutor {
    /// An executor running on `pool`.
    pub fn new(pool: Arc<WorkerPool>) -> Self {
        AutoExecutor {
            threads: pool.threads(),
            declared: DeclaredExecutor::new(pool),
            chains_ns: None,
            block_stm_ns: None,
            since_block_stm: 0,
        }
    }
}

/// True if the declared-chains path is expected to be at least as fast as Block-STM for a
/// block of `n` transactions with this chain structure on `threads` workers.
pub fn prefer_declared(n: usize, largest_chain: usize, critical_path: usize, threads: usize) -> bool {
    if n == 0 || threads <= 1 {
        return true;
    }
    let t = threads as f64;
    let declared = t.min(n as f64 / largest_chain.max(1) as f64);
    let block_stm = t.min(n as f64 / critical_path.max(1) as f64) * BLOCK_STM_EFFICIENCY;
    declared >= block_stm
}

impl<V: Vm> BlockExecutor<V> for AutoExecutor {
    fn name(&self) -> &'static str {
        "auto"
    }

    fn threads(&self) -> usize {
        self.threads
    }

    fn pool(&self) -> Option<&WorkerPool> {
        BlockExecutor::<V>::pool(&self.declared)
    }

    fn execute(&mut self, vm: &V, state: &CommittedState, txs: &[V::Tx]) -> Result<BlockOutput<V::Output>, ExecError> {
        let (threads, n) = (self.threads, txs.len());
        // Keep the chains if Block-STM was measured slower and is not due for a retry, and try
        // the chains once if only Block-STM has been measured.
        let distrust_block_stm = match (self.block_stm_ns, self.chains_ns) {
            (Some(b), Some(c)) => b > c && self.since_block_stm < RETRY_BLOCKS,
            (Some(_), None) => true,
            _ => false,
        };
        let started = std::time::Instant::now();
        let out = self.declared.execute_with(vm, state, txs, &|a| {
            distrust_block_stm || prefer_declared(n, a.largest_chain(), a.critical_path as usize, threads)
        })?;
        let ns_per_tx = started.elapsed().as_nanos() as f64 / n.max(1) as f64;
        let smooth = |old: Option<f64>| Some(old.map_or(ns_per_tx, |o| 0.5 * o + 0.5 * ns_per_tx));
        match out.stats.path {
            ExecPath::Declared => self.chains_ns = smooth(self.chains_ns),
            ExecPath::Parallel | ExecPath::ParallelThenSequential => {
                self.block_stm_ns = smooth(self.block_stm_ns);
                self.since_block_stm = 0;
            }
            _ => {}
        }
        self.since_block_stm = self.since_block_stm.saturating_add(1);
        Ok(out)
    }
}
