//! The collaborative Block-STM scheduler (Gelashvili et al., PPoPP '23, algorithms 4 and 5).
//!
//! Workers ask for the next task: validating the lowest executed-but-unvalidated transaction
//! or executing the lowest not-yet-executed one. Two shared indices hand tasks out in block
//! order; when a transaction writes a key its previous incarnation did not, or fails
//! validation, the validation index is pulled back so that later transactions are checked
//! again. A transaction that meets an estimate marker is parked on the blocking transaction's
//! dependency list and released when that one finishes.
//!
//! Orderings: every index and counter uses `SeqCst`. The termination check reads
//! `decrease_cnt`, then both indices and `num_active_tasks`, then `decrease_cnt` again; it
//! declares the block done only if nothing was pulled back in between, which needs the loads to
//! be totally ordered with the decreases. The per-transaction state is under a mutex each.
//! `tests/loom.rs` (engine) model-checks these paths.

use super::mvmemory::Incarnation;
use crate::sync::{AtomicBool, AtomicUsize, Mutex, Ordering::SeqCst};
use crate::vm::TxIndex;
use crossbeam_utils::CachePadded;

/// A version: a transaction and one of its incarnations.
pub type Version = (TxIndex, Incarnation);

/// A range of indices claimed at once: `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Batch {
    /// Indices to try to execute.
    Execute(usize, usize),
    /// Indices to try to validate.
    Validate(usize, usize),
}

/// A unit of work for a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    /// Run this incarnation.
    Execute(Version),
    /// Check that this incarnation's reads are still current.
    Validate(Version),
}

/// Where a transaction stands in the scheduler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Waiting to run its current incarnation.
    ReadyToExecute,
    /// Being executed by a worker.
    Executing,
    /// Executed; its writes are in the multi-version memory.
    Executed,
    /// Parked on a dependency or failed validation; about to get a new incarnation.
    Aborting,
}

/// The shared scheduler state of one block.
///
/// The hot shared counters sit on cache lines of their own, and each transaction's status and
/// dependency list share one line that no other transaction uses: neighbouring transactions are
/// usually handled by different workers at the same time.
pub struct Scheduler {
    n: usize,
    execution_idx: CachePadded<AtomicUsize>,
    validation_idx: CachePadded<AtomicUsize>,
    decrease_cnt: CachePadded<AtomicUsize>,
    num_active_tasks: CachePadded<AtomicUsize>,
    done_marker: CachePadded<AtomicBool>,
    halted: AtomicBool,
    txs: Vec<CachePadded<TxState>>,
}

/// The scheduler's view of one transaction.
struct TxState {
    status: Mutex<(Incarnation, Status)>,
    dependencies: Mutex<Vec<TxIndex>>,
}

impl TxState {
    fn new() -> CachePadded<Self> {
        CachePadded::new(TxState { status: Mutex::new((0, Status::ReadyToExecute)), dependencies: Mutex::new(Vec::new()) })
    }
}

impl Scheduler {
    /// A scheduler for a block of `n` transactions.
    pub fn new(n: usize) -> Self {
        Scheduler {
            n,
            execution_idx: CachePadded::new(AtomicUsize::new(0)),
            validation_idx: CachePadded::new(AtomicUsize::new(0)),
            decrease_cnt: CachePadded::new(AtomicUsize::new(0)),
            num_active_tasks: CachePadded::new(AtomicUsize::new(0)),
            done_marker: CachePadded::new(AtomicBool::new(n == 0)),
            halted: AtomicBool::new(false),
            txs: (0..n).map(|_| TxState::new()).collect(),
        }
    }

    /// Resets for a new block of `n` transactions, reusing the allocations.
    pub fn reset(&mut self, n: usize) {
        self.n = n;
        self.execution_idx = CachePadded::new(AtomicUsize::new(0));
        self.validation_idx = CachePadded::new(AtomicUsize::new(0));
        self.decrease_cnt = CachePadded::new(AtomicUsize::new(0));
        self.num_active_tasks = CachePadded::new(AtomicUsize::new(0));
        self.done_marker = CachePadded::new(AtomicBool::new(n == 0));
        self.halted = AtomicBool::new(false);
        let keep = self.txs.len().min(n);
        for t in &mut self.txs[..keep] {
            *t.status.get_mut() = (0, Status::ReadyToExecute);
            t.dependencies.get_mut().clear();
        }
        self.txs.truncate(n);
        while self.txs.len() < n {
            self.txs.push(TxState::new());
        }
    }

    /// True once every transaction is executed and validated (or the block was halted).
    #[inline]
    pub fn done(&self) -> bool {
        self.done_marker.load(SeqCst)
    }

    /// Stops handing out tasks; workers return after their current task.
    pub fn halt(&self) {
        self.halted.store(true, SeqCst);
        self.done_marker.store(true, SeqCst);
    }

    /// How far execution has been handed out (clamped to the block).
    pub fn execution_frontier(&self) -> usize {
        self.execution_idx.load(SeqCst).min(self.n)
    }

    /// True if [`Scheduler::halt`] was called.
    pub fn halted(&self) -> bool {
        self.halted.load(SeqCst)
    }

    /// The current incarnation and status of `txn`.
    pub fn status(&self, txn: TxIndex) -> (Incarnation, Status) {
        *self.txs[txn as usize].status.lock()
    }

    fn decrease_execution_idx(&self, target: usize) {
        self.execution_idx.fetch_min(target, SeqCst);
        self.decrease_cnt.fetch_add(1, SeqCst);
    }

    fn decrease_validation_idx(&self, target: usize) {
        self.validation_idx.fetch_min(target, SeqCst);
        self.decrease_cnt.fetch_add(1, SeqCst);
    }

    fn check_done(&self) {
        let observed = self.decrease_cnt.load(SeqCst);
        if self.execution_idx.load(SeqCst).min(self.validation_idx.load(SeqCst)) >= self.n
            && self.num_active_tasks.load(SeqCst) == 0
            && observed == self.decrease_cnt.load(SeqCst)
        {
            self.done_marker.store(true, SeqCst);
        }
    }

    fn try_incarnate(&self, txn: usize, pending: &mut usize) -> Option<Version> {
        if txn < self.n {
            let mut s = self.txs[txn].status.lock();
            if s.1 == Status::ReadyToExecute {
                s.1 = Status::Executing;
                return Some((txn as TxIndex, s.0));
            }
        }
        *pending += 1;
        None
    }

    /// Claims up to `size` consecutive indices for execution or validation (validation first
    /// when it lags behind execution, as in the paper). Each claimed index counts as one active
    /// task until [`Scheduler::claim_execution`] / [`Scheduler::claim_validation`] and the
    /// tasks that follow account for it. Handing indices out in small batches divides the
    /// traffic on the shared counters, which is what limits Block-STM on cheap transactions.
    pub fn next_batch(&self, size: usize) -> Option<Batch> {
        debug_assert!(size >= 1);
        if self.halted.load(SeqCst) {
            return None;
        }
        let validate = self.validation_idx.load(SeqCst) < self.execution_idx.load(SeqCst);
        let idx = if validate { &self.validation_idx } else { &self.execution_idx };
        if idx.load(SeqCst) >= self.n {
            self.check_done();
            return None;
        }
        self.num_active_tasks.fetch_add(size, SeqCst);
        let lo = idx.fetch_add(size, SeqCst);
        let (start, end) = (lo.min(self.n), (lo + size).min(self.n));
        let unused = size - (end - start);
        if unused > 0 {
            self.num_active_tasks.fetch_sub(unused, SeqCst);
        }
        Some(if validate { Batch::Validate(start, end) } else { Batch::Execute(start, end) })
    }

    /// The execution task for claimed index `txn`, if it is ready to execute.
    pub fn claim_execution(&self, txn: usize, pending: &mut usize) -> Option<Task> {
        self.try_incarnate(txn, pending).map(Task::Execute)
    }

    /// The validation task for claimed index `txn`, if it has executed.
    pub fn claim_validation(&self, txn: usize, pending: &mut usize) -> Option<Task> {
        let s = *self.txs[txn].status.lock();
        if s.1 == Status::Executed {
            return Some(Task::Validate((txn as TxIndex, s.0)));
        }
        *pending += 1;
        None
    }

    /// Applies the worker's deferred task completions. Until then `num_active_tasks`
    /// over-counts, which can only delay the end of the block, never end it early; workers
    /// flush before they claim again.
    pub fn flush(&self, pending: &mut usize) {
        if *pending > 0 {
            self.num_active_tasks.fetch_sub(*pending, SeqCst);
            *pending = 0;
        }
    }

    /// The next single task, or `None` if there is nothing to do right now (the paper's
    /// `next_task`; [`Scheduler::next_batch`] is the batched form the executor uses).
    #[cfg(any(test, loom))]
    pub fn next_task(&self) -> Option<Task> {
        let mut pending = 0;
        let task = match self.next_batch(1)? {
            Batch::Execute(lo, hi) if lo < hi => self.claim_execution(lo, &mut pending),
            Batch::Validate(lo, hi) if lo < hi => self.claim_validation(lo, &mut pending),
            _ => None,
        };
        self.flush(&mut pending);
        task
    }

    /// Parks `txn` until `blocking` finishes. Returns false if `blocking` already finished
    /// (the caller re-executes at once).
    #[cfg(any(test, loom))]
    pub fn add_dependency(&self, txn: TxIndex, blocking: TxIndex) -> bool {
        let mut pending = 0;
        let parked = self.add_dependency_deferred(txn, blocking, &mut pending);
        self.flush(&mut pending);
        parked
    }

    /// [`Scheduler::add_dependency`] with the completion deferred to `pending`.
    pub fn add_dependency_deferred(&self, txn: TxIndex, blocking: TxIndex, pending: &mut usize) -> bool {
        let mut deps = self.txs[blocking as usize].dependencies.lock();
        if self.txs[blocking as usize].status.lock().1 == Status::Executed {
            return false;
        }
        {
            let mut s = self.txs[txn as usize].status.lock();
            debug_assert_eq!(s.1, Status::Executing);
            s.1 = Status::Aborting;
        }
        deps.push(txn);
        drop(deps);
        *pending += 1;
        true
    }

    fn set_ready_status(&self, txn: TxIndex) {
        let mut s = self.txs[txn as usize].status.lock();
        debug_assert_eq!(s.1, Status::Aborting);
        *s = (s.0 + 1, Status::ReadyToExecute);
    }

    /// Records that `version` finished executing; `wrote_new_key` if it wrote a key its
    /// previous incarnation did not. May return the validation of this very version.
    #[cfg(any(test, loom))]
    pub fn finish_execution(&self, version: Version, wrote_new_key: bool) -> Option<Task> {
        let mut pending = 0;
        let task = self.finish_execution_deferred(version, wrote_new_key, &mut pending);
        self.flush(&mut pending);
        task
    }

    /// [`Scheduler::finish_execution`] with the completion deferred to `pending`.
    pub fn finish_execution_deferred(&self, version: Version, wrote_new_key: bool, pending: &mut usize) -> Option<Task> {
        let (txn, incarnation) = version;
        {
            let mut s = self.txs[txn as usize].status.lock();
            debug_assert_eq!(*s, (incarnation, Status::Executing));
            s.1 = Status::Executed;
        }
        let released = std::mem::take(&mut *self.txs[txn as usize].dependencies.lock());
        if let Some(&min) = released.iter().min() {
            for &d in &released {
                self.set_ready_status(d);
            }
            self.decrease_execution_idx(min as usize);
        }
        if self.validation_idx.load(SeqCst) > txn as usize {
            if wrote_new_key {
                self.decrease_validation_idx(txn as usize);
            } else {
                return Some(Task::Validate(version));
            }
        }
        *pending += 1;
        None
    }

    /// Claims the abort of `version` after a failed validation. Only one validator wins.
    pub fn try_validation_abort(&self, version: Version) -> bool {
        let mut s = self.txs[version.0 as usize].status.lock();
        if *s == (version.1, Status::Executed) {
            s.1 = Status::Aborting;
            return true;
        }
        false
    }

    /// Records that the validation of `version` finished; `aborted` if this validator claimed
    /// its abort. May return the re-execution of the transaction.
    #[cfg(any(test, loom))]
    pub fn finish_validation(&self, version: Version, aborted: bool) -> Option<Task> {
        let mut pending = 0;
        let task = self.finish_validation_deferred(version, aborted, &mut pending);
        self.flush(&mut pending);
        task
    }

    /// [`Scheduler::finish_validation`] with the completion deferred to `pending`.
    pub fn finish_validation_deferred(&self, version: Version, aborted: bool, pending: &mut usize) -> Option<Task> {
        let txn = version.0;
        if aborted {
            self.set_ready_status(txn);
            self.decrease_validation_idx(txn as usize + 1);
            if self.execution_idx.load(SeqCst) > txn as usize {
                return self.try_incarnate(txn as usize, pending).map(Task::Execute);
            }
        }
        *pending += 1;
        None
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// Drives a 3-transaction block on one thread through the single-task API: tx 1 depends
    /// on tx 0 (it is parked, then released), tx 2 fails one validation.
    #[test]
    fn single_thread_walk_through_terminates_with_everything_validated() {
        let s = Scheduler::new(3);
        assert_eq!(s.next_task(), Some(Task::Execute((0, 0))));
        // Validation lags execution, so it is tried first; tx 0 is still executing.
        assert_eq!(s.next_task(), None);
        assert_eq!(s.next_task(), Some(Task::Execute((1, 0))));
        // Executing tx 1 meets tx 0's estimate: park it.
        assert!(s.add_dependency(1, 0));
        assert_eq!(s.status(1).1, Status::Aborting);
        // tx 0 finishes: tx 1 is released with a new incarnation.
        assert_eq!(s.finish_execution((0, 0), true), None);
        assert_eq!(s.status(1), (1, Status::ReadyToExecute));
        let mut seen = Vec::new();
        let mut guard = 0;
        while !s.done() {
            guard += 1;
            assert!(guard < 100, "scheduler did not terminate: {seen:?}");
            match s.next_task() {
                Some(Task::Execute(v)) => {
                    seen.push(Task::Execute(v));
                    let next = s.finish_execution(v, v.1 == 0);
                    if let Some(Task::Validate(v)) = next {
                        seen.push(Task::Validate(v));
                        assert_eq!(s.finish_validation(v, false), None);
                    }
                }
                Some(Task::Validate(v)) => {
                    seen.push(Task::Validate(v));
                    // The first validation of tx 2 fails once.
                    let abort = v == (2, 0) && s.try_validation_abort(v);
                    if let Some(Task::Execute(re)) = s.finish_validation(v, abort) {
                        seen.push(Task::Execute(re));
                        let _ = s.finish_execution(re, false).map(|t| match t {
                            Task::Validate(v) => s.finish_validation(v, false),
                            other => panic!("{other:?}"),
                        });
                    }
                }
                None => {}
            }
        }
        for t in 0..3 {
            assert_eq!(s.status(t).1, Status::Executed, "tx {t}");
        }
        assert_eq!(s.status(2).0, 1, "tx 2 was re-executed once");
        assert!(seen.contains(&Task::Execute((1, 1))));
    }

    #[test]
    fn batches_never_run_past_the_block() {
        let s = Scheduler::new(3);
        let mut pending = 0;
        assert_eq!(s.next_batch(4), Some(Batch::Execute(0, 3)), "clipped to the block");
        for i in 0..3 {
            if let Some(Task::Execute(v)) = s.claim_execution(i, &mut pending) {
                assert_eq!(s.finish_execution_deferred(v, false, &mut pending), None);
            }
        }
        assert_eq!(pending, 3);
        assert!(!s.done(), "completions not flushed yet");
        s.flush(&mut pending);
        // Everything executed; validations follow, then the block is done.
        while let Some(b) = s.next_batch(4) {
            if let Batch::Validate(lo, hi) = b {
                for i in lo..hi {
                    if let Some(Task::Validate(v)) = s.claim_validation(i, &mut pending) {
                        assert_eq!(s.finish_validation_deferred(v, false, &mut pending), None);
                    }
                }
            }
            s.flush(&mut pending);
            if s.done() {
                break;
            }
        }
        assert!(s.done());
    }
}
