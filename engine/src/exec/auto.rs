//! `auto`: per block, the declared-chains path or Block-STM, from the block's shape.
//!
//! The declared analysis gives two numbers: the largest chain (declared chains cannot split
//! it, so declared parallelism is about `n / largest`) and the critical path (Block-STM can at
//! best overlap `n / critical_path` transactions, and pays for its bookkeeping). `auto` takes
//! the declared path unless Block-STM's bound, discounted for bookkeeping, is clearly better:
//! typical of skewed blocks where hot keys glue everything into one chain whose transactions
//! still mostly do not depend on each other directly. Blocks that start as one dependency
//! chain run in order on one thread (the declared executor's contention probe).

use super::declared::DeclaredExecutor;
use super::{BlockExecutor, BlockOutput, ExecError};
use crate::state::CommittedState;
use crate::vm::Vm;
use std::sync::Arc;

/// Share of ideal speedup Block-STM is credited with when comparing paths.
const BLOCK_STM_EFFICIENCY: f64 = 0.5;

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
        let threads = self.threads;
        let n = txs.len();
        self.declared.execute_with(vm, state, txs, &|a| prefer_declared(n, a.largest_chain(), a.critical_path as usize, threads))
    }
}
