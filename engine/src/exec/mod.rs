//! Block executors: every one produces exactly what [`SequentialExecutor`] produces.
//!
//! | name | for | how |
//! | --- | --- | --- |
//! | `sequential` | the reference | one transaction after another over an overlay |
//! | `parallel` | any [`Vm`] | Block-STM: multi-version memory, collaborative scheduler, re-execution |
//! | `declared` | VMs that declare keys | union-find into conflict-free chains, no validation |
//! | `auto` | both | per block, from the declared-key analysis |

mod auto;
mod declared;
pub(crate) mod mvmemory;
mod parallel;
pub(crate) mod scheduler;
mod sequential;
pub(crate) mod workers;
pub use workers::{keep_warm_setting, WorkerPool, KEEP_WARM};

pub use auto::{prefer_declared, AutoExecutor};
pub use declared::{BlockAnalysis, DeclaredExecutor};
pub use parallel::ParallelExecutor;
pub use sequential::SequentialExecutor;

use crate::state::{CommittedState, WriteSet};
use crate::vm::Vm;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The largest block an executor accepts (transaction indices are `u32`, and a bound keeps
/// per-block buffers sane).
pub const MAX_BLOCK_TXS: usize = 1 << 22;

/// The largest worker count an executor accepts.
pub const MAX_THREADS: usize = 1024;

/// The names accepted by [`executor_by_name`].
pub const EXECUTOR_NAMES: [&str; 4] = ["sequential", "parallel", "declared", "auto"];

/// Errors from building or running an executor.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExecError {
    /// The name is not one of [`EXECUTOR_NAMES`].
    #[error("unknown executor {0:?}; expected one of sequential, parallel, declared, auto")]
    UnknownExecutor(String),
    /// Thread count outside `1..=MAX_THREADS`.
    #[error("thread count {0} is out of range 1..={MAX_THREADS}")]
    BadThreadCount(usize),
    /// The block is larger than [`MAX_BLOCK_TXS`].
    #[error("block of {0} transactions exceeds the limit of {MAX_BLOCK_TXS}")]
    BlockTooLarge(usize),
    /// A VM returned [`crate::vm::Interrupt`] outside the parallel executor (a VM bug).
    #[error("the VM returned an interrupt that no read produced (transaction {0})")]
    SpuriousInterrupt(u32),
    /// The worker pool could not be started.
    #[error("could not start the worker pool: {0}")]
    Pool(String),
}

/// Which path a block actually took.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ExecPath {
    /// One transaction after another.
    #[default]
    Sequential,
    /// Block-STM throughout.
    Parallel,
    /// Block-STM, then the rest of the block on one thread after contention was detected.
    ParallelThenSequential,
    /// Conflict-free chains from declared keys.
    Declared,
    /// Declared keys were missing or wrong: the block was re-run on the Block-STM path.
    DeclaredFallback,
    /// The contention probe found one dependency chain: run in order on one thread.
    Serial,
}

/// Counters describing how a block was executed. They vary with timing; the block output
/// does not.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecStats {
    /// Path taken.
    pub path: ExecPath,
    /// Transaction executions, first runs and re-executions together.
    pub executions: u64,
    /// Validations performed (Block-STM).
    pub validations: u64,
    /// Validations that failed and caused a re-execution.
    pub failed_validations: u64,
    /// Executions stopped on an estimate marker and resumed later.
    pub suspensions: u64,
    /// Conflict-free chains (declared analysis), 0 when not analysed.
    pub chains: u64,
    /// Transactions in the largest chain.
    pub largest_chain: u64,
    /// Longest dependency path through the block (declared analysis).
    pub critical_path: u64,
    /// Transactions run on one thread after the Block-STM contention fallback.
    pub sequential_tail: u64,
    /// Time spent analysing declared keys, nanoseconds (declared and auto).
    pub analysis_ns: u64,
    /// Time spent executing transactions (the parallel phase, and any sequential tail).
    pub execute_ns: u64,
    /// Time spent assembling outputs and the write set after execution.
    pub merge_ns: u64,
}

/// What executing a block produced.
#[derive(Clone, Debug)]
pub struct BlockOutput<O> {
    /// One output per transaction, in block order (failed transactions included).
    pub outputs: Vec<O>,
    /// The block's resolved writes.
    pub write_set: WriteSet,
    /// How it went.
    pub stats: ExecStats,
}

/// A block executor. Implementations must produce the outputs and write set of
/// [`SequentialExecutor`] for every block and thread count.
pub trait BlockExecutor<V: Vm>: Send {
    /// The executor's name (one of [`EXECUTOR_NAMES`] for the built-in ones).
    fn name(&self) -> &'static str;

    /// Worker threads used.
    fn threads(&self) -> usize;

    /// The worker pool, reused across blocks (also lends its threads to the state commit).
    fn pool(&self) -> Option<&WorkerPool>;

    /// Executes `block` against `state` (which is not modified).
    fn execute(&mut self, vm: &V, state: &CommittedState, block: &[V::Tx]) -> Result<BlockOutput<V::Output>, ExecError>;

    /// Executes `block` and applies its writes to `state`, using the executor's threads for
    /// the commit too.
    fn execute_and_commit(&mut self, vm: &V, state: &mut CommittedState, block: &[V::Tx]) -> Result<BlockOutput<V::Output>, ExecError> {
        let out = self.execute(vm, state, block)?;
        state.apply(&out.write_set, self.pool());
        Ok(out)
    }
}

/// Builds a pool of `threads` workers that lives as long as the executor.
pub fn worker_pool(threads: usize) -> Result<Arc<WorkerPool>, ExecError> {
    if threads == 0 || threads > MAX_THREADS {
        return Err(ExecError::BadThreadCount(threads));
    }
    WorkerPool::new(threads).map(Arc::new).map_err(|e| ExecError::Pool(e.to_string()))
}

/// Builds the executor called `name` with `threads` workers (`sequential` ignores `threads`).
pub fn executor_by_name<V: Vm + 'static>(name: &str, threads: usize) -> Result<Box<dyn BlockExecutor<V>>, ExecError> {
    if threads == 0 || threads > MAX_THREADS {
        return Err(ExecError::BadThreadCount(threads));
    }
    Ok(match name {
        "sequential" => Box::new(SequentialExecutor::new()),
        "parallel" => Box::new(ParallelExecutor::new(worker_pool(threads)?)),
        "declared" => Box::new(DeclaredExecutor::new(worker_pool(threads)?)),
        "auto" => Box::new(AutoExecutor::new(worker_pool(threads)?)),
        other => return Err(ExecError::UnknownExecutor(other.to_string())),
    })
}

/// The contention probes' verdict: `critical_path` transactions of the `probed` form a chain
/// long enough (three quarters) that the block is treated as one dependency chain.
pub(crate) fn looks_like_one_chain(critical_path: usize, probed: usize) -> bool {
    critical_path * 4 >= probed * 3
}

pub(crate) fn check_block_len(n: usize) -> Result<(), ExecError> {
    if n > MAX_BLOCK_TXS {
        return Err(ExecError::BlockTooLarge(n));
    }
    Ok(())
}

/// The scheduler, multi-version memory and worker pool, exposed for the loom models in `tests/loom.rs`.
#[cfg(loom)]
#[doc(hidden)]
pub mod loom_api {
    pub use super::mvmemory::{Incarnation, MvMemory, MvRead, ReadOrigin};
    pub use super::scheduler::{Batch, Scheduler, Status, Task, Version};
    pub use super::workers::WorkerPool;
    pub use crate::value::{Value, WriteOp};
    pub use crate::vm::TxIndex;
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::native::{NativeTx, NativeVm, TxKind};

    fn transfers(pairs: impl Iterator<Item = (u64, u64)>) -> Vec<NativeTx> {
        pairs.map(|(from, to)| NativeTx::new(TxKind::Transfer { from, to, amount: 1 })).collect()
    }

    fn run(name: &str, threads: usize, block: &[NativeTx]) -> BlockOutput<crate::native::NativeOutput> {
        let state = CommittedState::from_entries(NativeVm::genesis_accounts(10_000, 1_000));
        let mut reference = executor_by_name::<NativeVm>("sequential", 1).unwrap();
        let want = reference.execute(&NativeVm, &state, block).unwrap();
        let got = executor_by_name::<NativeVm>(name, threads).unwrap().execute(&NativeVm, &state, block).unwrap();
        assert_eq!(got.outputs, want.outputs, "{name} x{threads}");
        assert_eq!(got.write_set.sorted(), want.write_set.sorted(), "{name} x{threads}");
        got
    }

    #[test]
    fn a_hot_key_block_runs_in_order_on_every_path() {
        let hot = transfers((0..2_000).map(|_| (7, 7)));
        for name in ["declared", "auto"] {
            assert_eq!(run(name, 2, &hot).stats.path, ExecPath::Serial, "{name}: the probe sees one chain");
        }
        // Block-STM's own probe finds the chain by executing the first transactions.
        for threads in [1, 4] {
            assert_eq!(run("parallel", threads, &hot).stats.path, ExecPath::Serial);
        }
        // Blocks too short to probe: the chain is found while running. One worker runs in
        // block order, so the dependency path equals what it executed.
        let out = run("parallel", 1, &hot[..600]);
        assert_eq!(out.stats.path, ExecPath::ParallelThenSequential);
        assert!(out.stats.sequential_tail > 300, "{:?}", out.stats);
        // Independent transactions are not mistaken for a chain.
        let spread = transfers((0..2_000).map(|i| (i, 5_000 + i)));
        assert_eq!(run("parallel", 2, &spread).stats.path, ExecPath::Parallel);
    }

    /// A block short enough to skip the probe, on one hot key plus a key of each transaction's
    /// own: Block-STM may halt after the last transaction already executed, and must still
    /// return the whole write set and leave nothing behind for the next block.
    #[test]
    fn a_late_halt_keeps_the_write_set_and_cleans_up() {
        struct Hot;
        impl Vm for Hot {
            type Tx = u64;
            type Output = u64;
            fn execute<V: crate::vm::View>(&self, tx: &u64, view: &mut V) -> Result<u64, crate::vm::Interrupt> {
                let hot = crate::key::Key::from_parts(1, 0, 0);
                let v = view.read(&hot)?.and_then(|v| v.as_u64()).unwrap_or(0);
                view.write(hot, crate::value::Value::from_u64(v + 1));
                view.write(crate::key::Key::from_parts(2, *tx, 0), crate::value::Value::from_u64(v));
                Ok(v)
            }
        }
        let mut seq = executor_by_name::<Hot>("sequential", 1).unwrap();
        let mut par = executor_by_name::<Hot>("parallel", 2).unwrap();
        let (mut seq_state, mut par_state) = (CommittedState::new(), CommittedState::new());
        for round in 0..600u64 {
            let block: Vec<u64> = (round * 100..round * 100 + 64 + round % 8).collect();
            let want = seq.execute_and_commit(&Hot, &mut seq_state, &block).unwrap();
            let got = par.execute_and_commit(&Hot, &mut par_state, &block).unwrap();
            assert_eq!(got.outputs, want.outputs, "round {round}");
            assert_eq!(got.write_set.sorted(), want.write_set.sorted(), "round {round}: {:?}", got.stats);
            assert_eq!(par_state.root(), seq_state.root(), "round {round}");
        }
    }

    #[test]
    fn a_panicking_vm_is_reported_not_hung() {
        struct Bomb;
        impl Vm for Bomb {
            type Tx = u32;
            type Output = u32;
            fn execute<V: crate::vm::View>(&self, tx: &u32, view: &mut V) -> Result<u32, crate::vm::Interrupt> {
                let k = crate::key::Key::from_parts(1, u64::from(*tx % 3), 0);
                let v = view.read(&k)?.and_then(|v| v.as_u64()).unwrap_or(0);
                assert!(*tx != 77, "the VM failed");
                view.write(k, crate::value::Value::from_u64(v + 1));
                Ok(*tx)
            }
        }
        let block: Vec<u32> = (0..200).collect();
        let mut par = executor_by_name::<Bomb>("parallel", 3).unwrap();
        let state = CommittedState::new();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| par.execute(&Bomb, &state, &block)));
        assert!(caught.is_err(), "the panic reaches the caller");
        // The executor is still usable, and exact, afterwards.
        let fine: Vec<u32> = (0..50).filter(|t| *t != 77).collect();
        let want = executor_by_name::<Bomb>("sequential", 1).unwrap().execute(&Bomb, &state, &fine).unwrap();
        let got = par.execute(&Bomb, &state, &fine).unwrap();
        assert_eq!(got.write_set.sorted(), want.write_set.sorted());
    }

    /// The same for the declared-keys pass, whose workers meet at barriers: a VM panicking in
    /// `declared_keys` (during the analysis) or in `execute` (during the chains) must reach
    /// the caller, not leave the other workers at a barrier.
    #[test]
    fn a_panicking_declaring_vm_is_reported_not_hung() {
        struct Bomb {
            in_declaration: bool,
        }
        impl Vm for Bomb {
            type Tx = u32;
            type Output = u32;
            fn execute<V: crate::vm::View>(&self, tx: &u32, view: &mut V) -> Result<u32, crate::vm::Interrupt> {
                let k = crate::key::Key::from_parts(1, u64::from(*tx % 50), 0);
                let v = view.read(&k)?.and_then(|v| v.as_u64()).unwrap_or(0);
                assert!(self.in_declaration || *tx != 777, "the VM failed");
                view.write(k, crate::value::Value::from_u64(v + 1));
                Ok(*tx)
            }
            fn declared_keys(&self, tx: &u32, keys: &mut Vec<crate::key::Key>) -> bool {
                assert!(!self.in_declaration || *tx != 777, "the declaration failed");
                keys.push(crate::key::Key::from_parts(1, u64::from(*tx % 50), 0));
                true
            }
        }
        let block: Vec<u32> = (0..2_000).collect();
        let fine: Vec<u32> = (0..500).collect();
        let state = CommittedState::new();
        for in_declaration in [false, true] {
            let vm = Bomb { in_declaration };
            let want = executor_by_name::<Bomb>("sequential", 1).unwrap().execute(&vm, &state, &fine).unwrap();
            for name in ["declared", "auto"] {
                let mut exec = executor_by_name::<Bomb>(name, 3).unwrap();
                let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| exec.execute(&vm, &state, &block)));
                assert!(caught.is_err(), "{name}: the panic reaches the caller");
                let got = exec.execute(&vm, &state, &fine).unwrap();
                assert_eq!(got.outputs, want.outputs, "{name}");
                assert_eq!(got.write_set.sorted(), want.write_set.sorted(), "{name}");
            }
        }
    }

    #[test]
    fn independent_transactions_take_the_chains_with_singles() {
        let block = transfers((0..1_000).map(|i| (2 * i, 2 * i + 1)));
        let out = run("declared", 3, &block);
        assert_eq!(out.stats.path, ExecPath::Declared);
        assert_eq!((out.stats.chains, out.stats.largest_chain, out.stats.critical_path), (1_000, 1, 1));
        // Pairs sharing an account form chains of two.
        let block = transfers((0..1_000).map(|i| (i / 2, 5_000 + i)));
        let out = run("declared", 2, &block);
        assert_eq!((out.stats.chains, out.stats.largest_chain, out.stats.critical_path), (500, 2, 2));
    }

    #[test]
    fn auto_prefers_chains_unless_block_stm_has_much_more_room() {
        assert!(prefer_declared(10_000, 1, 1, 16), "no conflicts");
        assert!(prefer_declared(10_000, 10_000, 10_000, 16), "one chain: nobody can do better");
        assert!(!prefer_declared(10_000, 9_000, 10, 16), "one glued component with short dependencies");
        assert!(prefer_declared(0, 0, 0, 4));
        assert!(prefer_declared(10_000, 9_000, 10, 1), "one thread: no parallel path helps");
    }

    #[test]
    fn executors_reject_bad_thread_counts_and_names() {
        assert!(matches!(executor_by_name::<NativeVm>("parallel", 0), Err(ExecError::BadThreadCount(0))));
        assert!(matches!(executor_by_name::<NativeVm>("auto", MAX_THREADS + 1), Err(ExecError::BadThreadCount(_))));
        assert!(matches!(executor_by_name::<NativeVm>("magic", 2), Err(ExecError::UnknownExecutor(_))));
    }
}
