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

/// A unit of work for a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    /// Run this incarnation.
    Execute(Version),
    /// Check that this incarnation's reads are still current.
    Validate(Version),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    ReadyToExecute,
    Executing,
    Executed,
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

    fn try_incarnate(&self, txn: usize) -> Option<Version> {
        if txn < self.n {
            let mut s = self.txs[txn].status.lock();
            if s.1 == Status::ReadyToExecute {
                s.1 = Status::Executing;
                return Some((txn as TxIndex, s.0));
            }
        }
        self.num_active_tasks.fetch_sub(1, SeqCst);
        None
    }

    fn next_version_to_execute(&self) -> Option<Version> {
        if self.execution_idx.load(SeqCst) >= self.n {
            self.check_done();
            return None;
        }
        self.num_active_tasks.fetch_add(1, SeqCst);
        let idx = self.execution_idx.fetch_add(1, SeqCst);
        self.try_incarnate(idx)
    }

    fn next_version_to_validate(&self) -> Option<Version> {
        if self.validation_idx.load(SeqCst) >= self.n {
            self.check_done();
            return None;
        }
        self.num_active_tasks.fetch_add(1, SeqCst);
        let idx = self.validation_idx.fetch_add(1, SeqCst);
        if idx < self.n {
            let s = *self.txs[idx].status.lock();
            if s.1 == Status::Executed {
                return Some((idx as TxIndex, s.0));
            }
        }
        self.num_active_tasks.fetch_sub(1, SeqCst);
        None
    }

    /// The next task, or `None` if there is nothing to do right now.
    pub fn next_task(&self) -> Option<Task> {
        if self.halted.load(SeqCst) {
            return None;
        }
        if self.validation_idx.load(SeqCst) < self.execution_idx.load(SeqCst) {
            self.next_version_to_validate().map(Task::Validate)
        } else {
            self.next_version_to_execute().map(Task::Execute)
        }
    }

    /// Parks `txn` until `blocking` finishes. Returns false if `blocking` already finished
    /// (the caller re-executes at once).
    pub fn add_dependency(&self, txn: TxIndex, blocking: TxIndex) -> bool {
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
        self.num_active_tasks.fetch_sub(1, SeqCst);
        true
    }

    fn set_ready_status(&self, txn: TxIndex) {
        let mut s = self.txs[txn as usize].status.lock();
        debug_assert_eq!(s.1, Status::Aborting);
        *s = (s.0 + 1, Status::ReadyToExecute);
    }

    /// Records that `version` finished executing; `wrote_new_key` if it wrote a key its
    /// previous incarnation did not. May return the validation of this very version.
    pub fn finish_execution(&self, version: Version, wrote_new_key: bool) -> Option<Task> {
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
        self.num_active_tasks.fetch_sub(1, SeqCst);
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
    pub fn finish_validation(&self, version: Version, aborted: bool) -> Option<Task> {
        let txn = version.0;
        if aborted {
            self.set_ready_status(txn);
            self.decrease_validation_idx(txn as usize + 1);
            if self.execution_idx.load(SeqCst) > txn as usize {
                return self.try_incarnate(txn as usize).map(Task::Execute);
            }
        }
        self.num_active_tasks.fetch_sub(1, SeqCst);
        None
    }
}
