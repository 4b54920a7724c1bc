//! `auto`: per block, the declared-chains path or Block-STM, from the block's shape.
//!
//! The declared analysis gives two numbers: the largest chain (declared chains cannot split
//! it, so declared parallelism is about `n / largest`) and the critical path (Block-STM can at
//! best overlap `n / critical_path` transactions, and pays for its bookkeeping). `auto` takes
//! the declared path unless Block-STM's bound, discounted for bookkeeping, is clearly better:
//! typical of skewed blocks where hot keys glue everything into one chain whose transactions
//! still mostly do not depend on each other directly.

use super::declared::DeclaredExecutor;
use super::{check_block_len, BlockExecutor, BlockOutput, ExecError, ExecStats};
use crate::state::CommittedState;
use crate::vm::Vm;
use std::sync::Arc;

/// Share of ideal speedup Block-STM is credited with when comparing paths.
const BLOCK_STM_EFFICIENCY: f64 = 0.6;

/// The `auto` executor.
pub struct AutoExecutor {
    declared: DeclaredExecutor,
    threads: usize,
}

impl AutoExecutor {
    /// An executor running on `pool`.
    pub fn new(pool: Arc<rayon::ThreadPool>) -> Self {
        AutoExecutor { threads: pool.current_num_threads(), declared: DeclaredExecutor::new(pool) }
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

    fn pool(&self) -> Option<&rayon::ThreadPool> {
        BlockExecutor::<V>::pool(&self.declared)
    }

    fn execute(&mut self, vm: &V, state: &CommittedState, txs: &[V::Tx]) -> Result<BlockOutput<V::Output>, ExecError> {
        check_block_len(txs.len())?;
        let a = self.declared.analyze(vm, txs);
        let (complete, chains, largest, critical, analysis_ns) =
            (a.complete, a.chains(), a.largest_chain(), a.critical_path as usize, a.analysis_ns);
        if complete && !prefer_declared(txs.len(), largest, critical, self.threads) {
            // The parallel path of the declared executor is plain Block-STM.
            let mut out = self.declared.execute_block_stm(vm, state, txs)?;
            out.stats = ExecStats {
                chains: chains as u64,
                largest_chain: largest as u64,
                critical_path: critical as u64,
                analysis_ns,
                ..out.stats
            };
            return Ok(out);
        }
        self.declared.execute_analyzed(vm, state, txs)
    }
}
