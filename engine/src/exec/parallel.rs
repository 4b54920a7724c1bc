//! Block-STM: optimistic parallel execution for any [`Vm`].
//!
//! Workers from a pool that outlives the block pull tasks from the [`Scheduler`]. An execution
//! reads through the [`MvMemory`] (recording where each value came from) and publishes its
//! writes there; a validation re-reads and compares. The final writes are collected from the
//! multi-version memory in parallel, which also empties it for the next block.
//!
//! **Graceful degradation.** When most executions are wasted, or the block is one long
//! dependency chain (every transaction touching one hot key is the extreme), parallel
//! execution is slower than one thread. Two signals halt the scheduler: the aborted share of
//! executions passing `1 - 1.5 / threads` (the point where `threads × useful share × ~2/3
//! efficiency` drops below one core), and the dependency path observed through the reads of
//! what has executed reaching two thirds of it. Then the longest prefix whose reads are still
//! valid is kept, and the rest of the block runs on one thread over that prefix. The output is
//! the same either way; only the speed differs.

use super::mvmemory::{Incarnation, MvMemory, MvRead, ReadOrigin};
use super::scheduler::{Batch, Scheduler, Status, Task, Version};
use super::sequential::run_in_order;
use super::workers::WorkerPool;
use super::{check_block_len, BlockExecutor, BlockOutput, ExecError, ExecPath, ExecStats};
use crate::key::{Key, KeyMap};
use crate::state::{CommittedState, WriteSet};
use crate::sync::Mutex;
use crate::value::{apply_add, Value};
use crate::vm::{BaseRead, BufferedView, Interrupt, TxIndex, Vm};
use smallvec::SmallVec;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// Executions observed before the contention fallback may trigger.
const FALLBACK_MIN_EXECUTIONS: u64 = 64;

/// Indices claimed from the scheduler at once.
const BATCH: usize = 4;

/// Reads recorded by one incarnation. The vectors circulate between workers and slots (a
/// finished incarnation swaps its buffer with the slot's), so after warm-up no read set
/// allocates.
type ReadSet = Vec<(Key, ReadOrigin)>;

/// The reads and written keys of a transaction's last incarnation. Slots are kept across
/// blocks; outputs, whose type depends on the VM, live in a separate per-block vector.
#[derive(Default)]
struct Slot {
    /// The block this slot's contents belong to (see `ParallelExecutor::epoch`).
    epoch: u64,
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
        let (value, origin) = match self.mv.read_for_execution(key, self.txn) {
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

/// A worker's private state for one block.
struct Worker {
    stats: WorkerStats,
    /// Executions not yet added to the shared count.
    unflushed: u64,
    /// Task completions not yet applied to the scheduler (see `Scheduler::flush`).
    pending: usize,
    /// A cleared read-set buffer for the next execution.
    spare: ReadSet,
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
    epoch: u64,
    executions: AtomicU64,
    aborts: AtomicU64,
    /// Per transaction, the length of the dependency path ending in it, as seen by its last
    /// incarnation's reads (a contention heuristic, not used for correctness).
    depth: &'a [AtomicU32],
    max_depth: AtomicU32,
}

impl<V: Vm> Block<'_, V> {
    fn worker(&self) -> WorkerStats {
        let mut w = Worker { stats: WorkerStats::default(), unflushed: 0, pending: 0, spare: ReadSet::new() };
        let mut idle = 0u32;
        while !self.scheduler.done() {
            self.scheduler.flush(&mut w.pending);
            let (execute, lo, hi) = match self.scheduler.next_batch(BATCH) {
                Some(Batch::Execute(lo, hi)) => (true, lo, hi),
                Some(Batch::Validate(lo, hi)) => (false, lo, hi),
                None => {
                    // Spin briefly, then yield: with more workers than cores a spinning
                    // worker would take the core from the one it is waiting for.
                    idle += 1;
                    if idle < 64 {
                        crate::sync::spin_hint();
                    } else {
                        std::thread::yield_now();
                    }
                    continue;
                }
            };
            idle = 0;
            for idx in lo..hi {
                let mut task = if execute {
                    self.scheduler.claim_execution(idx, &mut w.pending)
                } else {
                    self.scheduler.claim_validation(idx, &mut w.pending)
                };
                // A task may lead to another for the same transaction (validate after
                // executing, re-execute after a failed validation).
                while let Some(t) = task {
                    task = match t {
                        Task::Execute(version) => self.execute(version, &mut w),
                        Task::Validate(version) => self.validate(version, &mut w),
                    };
                }
                if self.scheduler.halted() {
                    break;
                }
            }
        }
        self.executions.fetch_add(w.unflushed, Relaxed);
        w.stats
    }

    /// Halts when the dependency path through what has executed so far is nearly as long as
    /// what has executed: the block is one chain, and handing it from core to core only adds
    /// cost (the hot-key case, where aborts alone may stay rare if one worker runs ahead).
    fn check_chain(&self) {
        let frontier = self.scheduler.execution_frontier();
        if frontier as u64 >= FALLBACK_MIN_EXECUTIONS && self.max_depth.load(Relaxed) as usize * 3 >= frontier * 2 {
            self.scheduler.halt();
        }
    }

    fn note_abort(&self, w: &mut Worker) {
        // Publish this worker's executions first, so that the ratio is not judged on a stale
        // count while every worker holds a few unflushed ones.
        self.executions.fetch_add(std::mem::take(&mut w.unflushed), Relaxed);
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

    fn execute(&self, version: Version, w: &mut Worker) -> Option<Task> {
        let (txn, incarnation) = version;
        loop {
            w.stats.executions += 1;
            w.unflushed += 1;
            if w.unflushed == 16 {
                self.executions.fetch_add(std::mem::take(&mut w.unflushed), Relaxed);
                self.check_chain();
            }
            w.spare.clear();
            let base = MvBase { mv: self.mv, state: self.state, txn, reads: std::mem::take(&mut w.spare) };
            let mut view = BufferedView::new(base);
            match self.vm.execute(&self.txs[txn as usize], &mut view) {
                Err(Interrupt { blocking }) => {
                    w.spare = view.base.reads;
                    w.stats.suspensions += 1;
                    self.note_abort(w);
                    if self.scheduler.add_dependency_deferred(txn, blocking, &mut w.pending) {
                        return None;
                    }
                }
                Ok(output) => {
                    let revalidate = self.record(txn, incarnation, view, output, &mut w.spare);
                    return self.scheduler.finish_execution_deferred(version, revalidate, &mut w.pending);
                }
            }
        }
    }

    /// Publishes an incarnation's writes. Returns true if it wrote a key that its previous
    /// incarnation did not and that a higher transaction has already read: the only case in
    /// which transactions above may hold stale reads without having been told (Block-STM
    /// re-validates the whole suffix on every new key; reader tracking in the multi-version
    /// memory narrows that down). `spare` receives the slot's previous read-set buffer.
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
        // Slots outlive blocks: what a slot holds from an earlier block is not a previous
        // incarnation's writes. (Incarnation numbers cannot tell: incarnation 0 may have been
        // parked on a dependency before it recorded anything.)
        if slot.epoch != self.epoch {
            slot.write_keys.clear();
            slot.epoch = self.epoch;
        }
        for old in &slot.write_keys {
            if !ops.iter().any(|(k, _)| k == old) {
                self.mv.remove(old, txn);
            }
        }
        let mut revalidate = false;
        let mut keys = SmallVec::new();
        for (key, op) in ops {
            let new = !slot.write_keys.contains(&key);
            keys.push(key);
            let read_above = self.mv.write(key, txn, incarnation, op);
            revalidate |= new && read_above;
        }
        slot.write_keys = keys;
        let depth = 1 + base
            .reads
            .iter()
            .filter_map(|(_, o)| match o {
                ReadOrigin::Version(j, _) => Some(self.depth[*j as usize].load(Relaxed)),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        self.depth[txn as usize].store(depth, Relaxed);
        if depth > self.max_depth.load(Relaxed) {
            self.max_depth.fetch_max(depth, Relaxed);
        }
        std::mem::swap(&mut slot.reads, &mut base.reads);
        drop(slot);
        *spare = base.reads;
        *self.outputs[txn as usize].lock() = Some(output);
        revalidate
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

    fn validate(&self, version: Version, w: &mut Worker) -> Option<Task> {
        let (txn, _) = version;
        w.stats.validations += 1;
        let valid = self.reads_valid(txn);
        let aborted = !valid && self.scheduler.try_validation_abort(version);
        if aborted {
            w.stats.failed_validations += 1;
            self.note_abort(w);
            let slot = self.slots[txn as usize].lock();
            for key in &slot.write_keys {
                self.mv.mark_estimate(key, txn);
            }
        }
        self.scheduler.finish_validation_deferred(version, aborted, &mut w.pending)
    }
}

/// Blocks at least this long are probed before Block-STM starts.
const PROBE_MIN_BLOCK: usize = 1024;

/// Transactions the contention probe executes.
const PROBE_TXS: usize = 64;

/// The contention probe: runs the first [`PROBE_TXS`] transactions in order on the calling
/// thread, noting for each read which earlier transaction of the probe wrote the key. If the
/// dependency path through them covers three quarters of them, the block is one chain (every
/// transaction on a hot key, one NFT counter…): Block-STM would only thrash, so the probe
/// simply goes on to the end of the block in order, losing nothing. Otherwise its results are
/// dropped (a few dozen executions) and Block-STM runs the whole block. Keys need not be
/// declared: the probe sees them as the VM reads them.
#[derive(Default)]
struct Probe {
    overlay: KeyMap<Option<Value>>,
    last_writer: KeyMap<u32>,
    depth: Vec<u32>,
}

/// Reads for the probe: the probe's overlay, then the committed state; remembers the keys.
struct ProbeBase<'a> {
    overlay: &'a KeyMap<Option<Value>>,
    state: &'a CommittedState,
    read: SmallVec<[Key; 8]>,
}

impl BaseRead for ProbeBase<'_> {
    #[inline]
    fn read_base(&mut self, key: &Key) -> Result<Option<Value>, Interrupt> {
        self.read.push(*key);
        Ok(match self.overlay.get(key) {
            Some(v) => v.clone(),
            None => self.state.get(key).cloned(),
        })
    }
}

impl Probe {
    /// `Some(outputs)` if the block was found to be one chain and has been run to the end in
    /// order (its writes are in `self.overlay`); `None` if Block-STM should run it.
    fn run<V: Vm>(&mut self, vm: &V, state: &CommittedState, txs: &[V::Tx]) -> Result<Option<Vec<V::Output>>, ExecError> {
        self.overlay.clear();
        self.last_writer.clear();
        self.depth.clear();
        let mut outputs = Vec::with_capacity(txs.len());
        let mut critical = 0;
        for (i, tx) in txs.iter().take(PROBE_TXS).enumerate() {
            let mut view = BufferedView::new(ProbeBase { overlay: &self.overlay, state, read: SmallVec::new() });
            let out = vm.execute(tx, &mut view).map_err(|_| ExecError::SpuriousInterrupt(i as u32))?;
            let BufferedView { base, mut writes } = view;
            let depth = 1 + base.read.iter().filter_map(|k| self.last_writer.get(k)).map(|&w| self.depth[w as usize]).max().unwrap_or(0);
            self.depth.push(depth);
            critical = critical.max(depth);
            for (key, op) in writes.take() {
                let below = match self.overlay.get(&key) {
                    Some(v) => v.clone(),
                    None => state.get(&key).cloned(),
                };
                self.overlay.insert(key, op.resolve(below.as_ref()));
                self.last_writer.insert(key, i as u32);
            }
            outputs.push(out);
        }
        if !super::looks_like_one_chain(critical as usize, PROBE_TXS) {
            return Ok(None);
        }
        let rest = (PROBE_TXS as u32..).zip(&txs[PROBE_TXS..]);
        outputs.extend(run_in_order(vm, rest, &mut self.overlay, |k| Ok(state.get(k).cloned()))?);
        Ok(Some(outputs))
    }
}

/// The Block-STM executor. Its worker pool, multi-version memory and scheduler buffers are
/// reused from block to block.
pub struct ParallelExecutor {
    pool: Arc<WorkerPool>,
    probe: Probe,
    mv: MvMemory,
    scheduler: Scheduler,
    slots: Vec<Mutex<Slot>>,
    /// Counts blocks; slots are stamped with it.
    epoch: u64,
    depth: Vec<AtomicU32>,
    overlay: KeyMap<Option<Value>>,
}

impl ParallelExecutor {
    /// An executor running on `pool`.
    pub fn new(pool: Arc<WorkerPool>) -> Self {
        let shards = (pool.threads() * 64).max(256);
        ParallelExecutor {
            pool,
            probe: Probe::default(),
            mv: MvMemory::new(shards),
            scheduler: Scheduler::new(0),
            slots: Vec::new(),
            epoch: 0,
            depth: Vec::new(),
            overlay: KeyMap::default(),
        }
    }
}

impl<V: Vm> BlockExecutor<V> for ParallelExecutor {
    fn name(&self) -> &'static str {
        "parallel"
    }

    fn threads(&self) -> usize {
        self.pool.threads()
    }

    fn pool(&self) -> Option<&WorkerPool> {
        Some(&self.pool)
    }

    fn execute(&mut self, vm: &V, state: &CommittedState, txs: &[V::Tx]) -> Result<BlockOutput<V::Output>, ExecError> {
        check_block_len(txs.len())?;
        let n = txs.len();
        if n >= PROBE_MIN_BLOCK {
            let started = std::time::Instant::now();
            if let Some(outputs) = self.probe.run(vm, state, txs)? {
                let execute_ns = started.elapsed().as_nanos() as u64;
                let write_set = WriteSet::from_entries(self.probe.overlay.drain().collect());
                let stats = ExecStats {
                    path: ExecPath::Serial,
                    executions: n as u64,
                    sequential_tail: n as u64,
                    critical_path: PROBE_TXS as u64,
                    execute_ns,
                    merge_ns: started.elapsed().as_nanos() as u64 - execute_ns,
                    ..Default::default()
                };
                return Ok(BlockOutput { outputs, write_set, stats });
            }
        }
        self.scheduler.reset(n);
        if self.slots.len() < n {
            self.slots.resize_with(n, || Mutex::new(Slot::default()));
        }
        let outputs: Vec<Mutex<Option<V::Output>>> = (0..n).map(|_| Mutex::new(None)).collect();
        let threads = self.pool.threads();
        self.epoch += 1;
        self.depth.resize_with(n.max(self.depth.len()), Default::default);
        for d in &mut self.depth[..n] {
            *d.get_mut() = 0;
        }
        let block = Block {
            vm,
            txs,
            state,
            mv: &self.mv,
            scheduler: &self.scheduler,
            slots: &self.slots,
            outputs: &outputs,
            threads,
            epoch: self.epoch,
            executions: AtomicU64::new(0),
            aborts: AtomicU64::new(0),
            depth: &self.depth[..n],
            max_depth: AtomicU32::new(0),
        };
        let mut stats = ExecStats { path: ExecPath::Parallel, ..Default::default() };
        let started = std::time::Instant::now();
        // One pass of the workers: execute the block, then (unless it was halted) drain the
        // multi-version memory into the write set, each worker its own shards.
        let barrier = super::workers::SpinBarrier::new(threads);
        let (mv, empty) = (&self.mv, KeyMap::default());
        let finished = parking_lot::Mutex::new(started);
        // A panicking VM must not leave the other workers waiting for a task that never
        // finishes: halt, let everyone reach the barrier, and re-raise afterwards.
        let panicked = parking_lot::Mutex::new(None);
        let results = self.pool.run(|w, _| {
            let run =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| if n > 0 { block.worker() } else { WorkerStats::default() }));
            let stats = run.unwrap_or_else(|payload| {
                block.scheduler.halt();
                *panicked.lock() = Some(payload);
                WorkerStats::default()
            });
            barrier.wait();
            if block.scheduler.halted() {
                return (stats, None);
            }
            if w == 0 {
                *finished.lock() = std::time::Instant::now();
            }
            (stats, Some(drain_shards(mv, w, threads, &empty, state, n as TxIndex)))
        });
        if let Some(payload) = panicked.into_inner() {
            // Leave the multi-version memory empty for the next block, then re-raise.
            let _ = collect_writes(&self.pool, &self.mv, &self.overlay, state, 0);
            std::panic::resume_unwind(payload);
        }
        let halted = self.scheduler.halted();
        let mut drained = Vec::with_capacity(threads);
        for (w, part) in results {
            stats.executions += w.executions;
            stats.validations += w.validations;
            stats.failed_validations += w.failed_validations;
            stats.suspensions += w.suspensions;
            drained.extend(part);
        }

        // After a halt: keep the longest prefix that is executed and still valid.
        let mut prefix = n;
        if halted {
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

        // Workers drained the memory only if the block was not halted. After a halt it is
        // drained here, below the valid prefix, even when that prefix is the whole block
        // (a halt can come after the last transaction has already executed).
        let write_set = if !halted {
            let merge_started = *finished.lock();
            stats.execute_ns = (merge_started - started).as_nanos() as u64;
            stats.merge_ns = merge_started.elapsed().as_nanos() as u64;
            WriteSet::from_grouped(drained, threads)
        } else {
            let merge_started = std::time::Instant::now();
            let write_set = collect_writes(&self.pool, &self.mv, &self.overlay, state, prefix as TxIndex);
            stats.execute_ns = (merge_started - started).as_nanos() as u64;
            stats.merge_ns = merge_started.elapsed().as_nanos() as u64;
            write_set
        };
        Ok(BlockOutput { outputs, write_set, stats })
    }
}

/// Worker `w`'s share of draining the multi-version memory: shards `w, w + workers, …`, values
/// as of the first `below` transactions, keys in `skip` left out, split by commit group.
fn drain_shards(
    mv: &MvMemory,
    w: usize,
    workers: usize,
    skip: &KeyMap<Option<Value>>,
    state: &CommittedState,
    below: TxIndex,
) -> Vec<Vec<(Key, Option<Value>)>> {
    let mut out: Vec<Vec<(Key, Option<Value>)>> = vec![Vec::new(); workers];
    for i in (w..mv.shard_count()).step_by(workers) {
        mv.drain_shard(
            i,
            below,
            |k| state.get(k).cloned(),
            |k, v| {
                if !skip.contains_key(&k) {
                    out[crate::state::group_of(&k, workers)].push((k, v));
                }
            },
        );
    }
    out
}

/// Drains the multi-version memory (values as of the first `below` transactions) in parallel,
/// then lays the sequential tail's `overlay` on top.
fn collect_writes(pool: &WorkerPool, mv: &MvMemory, overlay: &KeyMap<Option<Value>>, state: &CommittedState, below: TxIndex) -> WriteSet {
    let threads = pool.threads();
    // Each worker splits what it drains by commit group, so the commit skips its bucketing.
    let parts = pool.run(|w, _| drain_shards(mv, w, threads, overlay, state, below));
    let mut parts = parts;
    if !overlay.is_empty() {
        let mut tail: Vec<Vec<(Key, Option<Value>)>> = vec![Vec::new(); threads];
        for (k, v) in overlay {
            tail[crate::state::group_of(k, threads)].push((*k, v.clone()));
        }
        parts.push(tail);
    }
    WriteSet::from_grouped(parts, threads)
}
