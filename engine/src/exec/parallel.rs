//! Block-STM: optimistic parallel execution for any [`Vm`].
//!
//! Workers from a pool that outlives the block pull tasks from the [`Scheduler`]. An execution
//! reads through the [`MvMemory`] (recording where each value came from) and publishes its
//! writes there; a validation re-reads and compares. The final writes are collected from the
//! multi-version memory in parallel, which also empties it for the next block.
//!
//! **Graceful degradation.** When most executions are wasted (every transaction touching one
//! hot key is the extreme), parallel execution is slower than one thread. Workers count
//! aborts; once the aborted share of executions passes `1 - 1.5 / threads` (the point where
//! `threads × useful share × ~2/3 efficiency` drops below one core), the scheduler is halted,
//! the longest prefix whose reads are still valid is kept, and the rest of the block runs on
//! one thread over that prefix. The output is the same either way; only the speed differs.

use super::mvmemory::{Incarnation, MvMemory, MvRead, ReadOrigin};
use super::scheduler::{Scheduler, Status, Task, Version};
use super::sequential::run_in_order;
use super::{check_block_len, BlockExecutor, BlockOutput, ExecError, ExecPath, ExecStats};
use crate::key::{Key, KeyMap};
use crate::state::{CommittedState, WriteSet};
use crate::sync::Mutex;
use crate::value::{apply_add, Value};
use crate::vm::{BaseRead, BufferedView, Interrupt, TxIndex, Vm};
use smallvec::SmallVec;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// Executions observed before the contention fallback may trigger.
const FALLBACK_MIN_EXECUTIONS: u64 = 128;

/// Reads recorded by one incarnation. The vectors circulate between workers and slots (a
/// finished incarnation swaps its buffer with the slot's), so after warm-up no read set
/// allocates.
type ReadSet = Vec<(Key, ReadOrigin)>;

/// The reads and written keys of a transaction's last incarnation. Slots are kept across
/// blocks; outputs, whose type depends on the VM, live in a separate per-block vector.
#[derive(Default)]
struct Slot {
    reads: ReadSet,
    write_keys: SmallVec<[Key; 4]>,
}

/// Reads for one incarnation: multi-version memory, then the committed state.
struct MvBase<'a> {
    mv: &'a MvMemory,
    state: &'a CommittedState,
    txn: TxIndex,
    reads: ReadSet,
}

impl BaseRead for MvBase<'_> {
    #[inline]
    fn read_base(&mut self, key: &Key) -> Result<Option<Value>, Interrupt> {
        let (value, origin) = match self.mv.read(key, self.txn) {
            MvRead::Storage => (self.state.get(key).cloned(), ReadOrigin::Storage),
            MvRead::Version(t, i, v) => (v, ReadOrigin::Version(t, i)),
            MvRead::DeltaOverStorage(d) => {
                let v = Some(apply_add(self.state.get(key), d));
                (v.clone(), ReadOrigin::Resolved(v))
            }
            MvRead::Resolved(v) => (v.clone(), ReadOrigin::Resolved(v)),
            MvRead::Blocked(blocking) => return Err(Interrupt { blocking }),
        };
        self.reads.push((*key, origin));
        Ok(value)
    }
}

/// The value a multi-version read stands for, or `None` if it is blocked.
fn value_of(read: MvRead, state: &CommittedState, key: &Key) -> Option<Option<Value>> {
    Some(match read {
        MvRead::Storage => state.get(key).cloned(),
        MvRead::Version(_, _, v) | MvRead::Resolved(v) => v,
        MvRead::DeltaOverStorage(d) => Some(apply_add(state.get(key), d)),
        MvRead::Blocked(_) => return None,
    })
}

#[derive(Default)]
struct WorkerStats {
    executions: u64,
    validations: u64,
    failed_validations: u64,
    suspensions: u64,
}

/// Everything the workers of one block share.
struct Block<'a, V: Vm> {
    vm: &'a V,
    txs: &'a [V::Tx],
    state: &'a CommittedState,
    mv: &'a MvMemory,
    scheduler: &'a Scheduler,
    slots: &'a [Mutex<Slot>],
    outputs: &'a [Mutex<Option<V::Output>>],
    threads: usize,
    executions: AtomicU64,
    aborts: AtomicU64,
}

impl<V: Vm> Block<'_, V> {
    fn worker(&self) -> WorkerStats {
        let mut stats = WorkerStats::default();
        let mut task: Option<Task> = None;
        let mut unflushed = 0u64;
        let mut idle = 0u32;
        let mut spare = ReadSet::new();
        while !self.scheduler.done() {
            task = match task {
                Some(Task::Execute(version)) => {
                    stats.executions += 1;
                    unflushed += 1;
                    if unflushed == 16 {
                        self.executions.fetch_add(unflushed, Relaxed);
                        unflushed = 0;
                    }
                    self.execute(version, &mut stats, &mut spare)
                }
                Some(Task::Validate(version)) => {
                    stats.validations += 1;
                    self.validate(version, &mut stats)
                }
                None => match self.scheduler.next_task() {
                    Some(t) => {
                        idle = 0;
                        Some(t)
                    }
                    None => {
                        // Spin briefly, then yield: with more workers than cores a spinning
                        // worker would take the core from the one it is waiting for.
                        idle += 1;
                        if idle < 64 {
                            crate::sync::spin_hint();
                        } else {
                            std::thread::yield_now();
                        }
                        None
                    }
                },
            };
        }
        self.executions.fetch_add(unflushed, Relaxed);
        stats
    }

    fn note_abort(&self) {
        let aborts = self.aborts.fetch_add(1, Relaxed) + 1;
        let executions = self.executions.load(Relaxed);
        // Wasted share above 1 - 1.5/threads: one thread would be faster.
        if executions >= FALLBACK_MIN_EXECUTIONS
            && self.threads > 1
            && (aborts as f64) >= executions as f64 * (1.0 - 1.5 / self.threads as f64)
        {
            self.scheduler.halt();
        }
    }

    fn execute(&self, version: Version, stats: &mut WorkerStats, spare: &mut ReadSet) -> Option<Task> {
        let (txn, incarnation) = version;
        loop {
            spare.clear();
            let base = MvBase { mv: self.mv, state: self.state, txn, reads: std::mem::take(spare) };
            let mut view = BufferedView::new(base);
            match self.vm.execute(&self.txs[txn as usize], &mut view) {
                Err(Interrupt { blocking }) => {
                    *spare = view.base.reads;
                    stats.suspensions += 1;
                    self.note_abort();
                    if self.scheduler.add_dependency(txn, blocking) {
                        return None;
                    }
                    stats.executions += 1;
                }
                Ok(output) => {
                    let wrote_new = self.record(txn, incarnation, view, output, spare);
                    return self.scheduler.finish_execution(version, wrote_new);
                }
            }
        }
    }

    /// Publishes an incarnation's writes; true if it wrote a key the previous one did not.
    /// `spare` receives the slot's previous read set buffer.
    fn record(
        &self,
        txn: TxIndex,
        incarnation: Incarnation,
        view: BufferedView<MvBase<'_>>,
        output: V::Output,
        spare: &mut ReadSet,
    ) -> bool {
        let BufferedView { mut base, mut writes } = view;
        let ops = writes.take();
        let mut slot = self.slots[txn as usize].lock();
        // Slots outlive blocks: a first incarnation has no previous writes, whatever the slot
        // still holds from an earlier block.
        if incarnation == 0 {
            slot.write_keys.clear();
        }
        for old in &slot.write_keys {
            if !ops.iter().any(|(k, _)| k == old) {
                self.mv.remove(old, txn);
            }
        }
        let mut wrote_new = false;
        let mut keys = SmallVec::new();
        for (key, op) in ops {
            wrote_new |= !slot.write_keys.contains(&key);
            keys.push(key);
            self.mv.write(key, txn, incarnation, op);
        }
        slot.write_keys = keys;
        std::mem::swap(&mut slot.reads, &mut base.reads);
        drop(slot);
        *spare = base.reads;
        *self.outputs[txn as usize].lock() = Some(output);
        wrote_new
    }

    /// True if every read of `txn`'s last incarnation would still return the same thing.
    fn reads_valid(&self, txn: TxIndex) -> bool {
        let slot = self.slots[txn as usize].lock();
        slot.reads.iter().all(|(key, origin)| {
            let now = self.mv.read(key, txn);
            match (origin, now) {
                (ReadOrigin::Storage, MvRead::Storage) => true,
                (ReadOrigin::Version(t, i), MvRead::Version(t2, i2, _)) => *t == t2 && *i == i2,
                (ReadOrigin::Resolved(v), now) => value_of(now, self.state, key).as_ref() == Some(v),
                _ => false,
            }
        })
    }

    fn validate(&self, version: Version, stats: &mut WorkerStats) -> Option<Task> {
        let (txn, _) = version;
        let valid = self.reads_valid(txn);
        let aborted = !valid && self.scheduler.try_validation_abort(version);
        if aborted {
            stats.failed_validations += 1;
            self.note_abort();
            let slot = self.slots[txn as usize].lock();
            for key in &slot.write_keys {
                self.mv.mark_estimate(key, txn);
            }
        }
        self.scheduler.finish_validation(version, aborted)
    }
}

/// The Block-STM executor. Its worker pool, multi-version memory and scheduler buffers are
/// reused from block to block.
pub struct ParallelExecutor {
    pool: Arc<rayon::ThreadPool>,
    mv: MvMemory,
    scheduler: Scheduler,
    slots: Vec<Mutex<Slot>>,
    overlay: KeyMap<Option<Value>>,
}

impl ParallelExecutor {
    /// An executor running on `pool`.
    pub fn new(pool: Arc<rayon::ThreadPool>) -> Self {
        let shards = (pool.current_num_threads() * 64).max(256);
        ParallelExecutor { pool, mv: MvMemory::new(shards), scheduler: Scheduler::new(0), slots: Vec::new(), overlay: KeyMap::default() }
    }
}

impl<V: Vm> BlockExecutor<V> for ParallelExecutor {
    fn name(&self) -> &'static str {
        "parallel"
    }

    fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    fn pool(&self) -> Option<&rayon::ThreadPool> {
        Some(&self.pool)
    }

    fn execute(&mut self, vm: &V, state: &CommittedState, txs: &[V::Tx]) -> Result<BlockOutput<V::Output>, ExecError> {
        check_block_len(txs.len())?;
        let n = txs.len();
        self.scheduler.reset(n);
        if self.slots.len() < n {
            self.slots.resize_with(n, || Mutex::new(Slot::default()));
        }
        let outputs: Vec<Mutex<Option<V::Output>>> = (0..n).map(|_| Mutex::new(None)).collect();
        let threads = self.pool.current_num_threads();
        let block = Block {
            vm,
            txs,
            state,
            mv: &self.mv,
            scheduler: &self.scheduler,
            slots: &self.slots,
            outputs: &outputs,
            threads,
            executions: AtomicU64::new(0),
            aborts: AtomicU64::new(0),
        };
        let mut stats = ExecStats { path: ExecPath::Parallel, ..Default::default() };
        if n > 0 {
            for w in self.pool.broadcast(|_| block.worker()) {
                stats.executions += w.executions;
                stats.validations += w.validations;
                stats.failed_validations += w.failed_validations;
                stats.suspensions += w.suspensions;
            }
        }

        // After a halt: keep the longest prefix that is executed and still valid.
        let mut prefix = n;
        if self.scheduler.halted() {
            prefix = 0;
            while prefix < n && self.scheduler.status(prefix as TxIndex).1 == Status::Executed && block.reads_valid(prefix as TxIndex) {
                prefix += 1;
            }
        }

        let outputs = {
            let mut v: Vec<V::Output> = Vec::with_capacity(n);
            for (i, o) in outputs.into_iter().take(prefix).enumerate() {
                match o.into_inner() {
                    Some(o) => v.push(o),
                    None => return Err(ExecError::SpuriousInterrupt(i as u32)),
                }
            }
            v
        };
        let mut outputs = outputs;
        self.overlay.clear();
        if prefix < n {
            stats.path = ExecPath::ParallelThenSequential;
            stats.sequential_tail = (n - prefix) as u64;
            stats.executions += (n - prefix) as u64;
            let mv = &self.mv;
            let tail = run_in_order(vm, (prefix as u32..).zip(&txs[prefix..]), &mut self.overlay, |key| {
                value_of(mv.read(key, prefix as TxIndex), state, key).ok_or(Interrupt { blocking: prefix as TxIndex })
            })?;
            outputs.extend(tail);
        }

        let write_set = collect_writes(&self.pool, &self.mv, &self.overlay, state, prefix as TxIndex);
        Ok(BlockOutput { outputs, write_set, stats })
    }
}

/// Drains the multi-version memory (values as of the first `below` transactions) in parallel,
/// then lays the sequential tail's `overlay` on top.
fn collect_writes(
    pool: &rayon::ThreadPool,
    mv: &MvMemory,
    overlay: &KeyMap<Option<Value>>,
    state: &CommittedState,
    below: TxIndex,
) -> WriteSet {
    let threads = pool.current_num_threads();
    let shards = mv.shard_count();
    let parts = pool.broadcast(|ctx| {
        let mut out = Vec::new();
        for i in (ctx.index()..shards).step_by(threads) {
            mv.drain_shard(
                i,
                below,
                |k| state.get(k).cloned(),
                |k, v| {
                    if !overlay.contains_key(&k) {
                        out.push((k, v));
                    }
                },
            );
        }
        out
    });
    let mut segments = parts;
    if !overlay.is_empty() {
        segments.push(overlay.iter().map(|(k, v)| (*k, v.clone())).collect());
    }
    WriteSet::from_segments(segments)
}
