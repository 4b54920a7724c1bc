//! Loom models of the Block-STM scheduler and the multi-version memory.
//!
//! Built only with `--cfg loom`, where `crate::sync` hands the scheduler and the memory loom's
//! atomics and mutexes, and `occam_engine::exec::loom_api` exposes them. Run with
//! `scripts/loom.sh` (a separate target directory keeps the normal build intact):
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test -p occam-engine --profile loom --test loom --target-dir target/loom
//! ```
//!
//! Each model picks its own preemption bound unless `LOOM_MAX_PREEMPTIONS` is set: 3 for the
//! two-transaction models, the worker pool and the termination race; 2 for the models of three
//! or more transactions, where a bound of 3 multiplies the interleavings about twentyfold (all
//! models took 4.5 minutes on 2 cores at 3, against 25 seconds with their own bounds). The
//! coverage checks of those models (`Coverage::assert_reached`) still reach their races at 2.
//! `LOOM_MAX_PREEMPTIONS=3 scripts/loom.sh` runs every model at 3: do that after changing the
//! scheduler, the multi-version memory or the worker loop.
//!
//! - `scheduler_dependency_*`: two workers drive a two-transaction block in which transaction 1
//!   depends on transaction 0, either parking on it (`add_dependency`) or running optimistically
//!   and being aborted by validation. The block must terminate with both transactions executed,
//!   the last incarnation of each validated, and transaction 1 having read transaction 0's write.
//! - `mv_memory_*`: concurrent writes, estimates, removals and reads of one key: readers see
//!   only lower indices, each entry in one of the states its writer passed through, in order.
//! - `validation_abort_race`: two validators of the same version fail it at once; exactly one
//!   claims the abort, and the block still terminates with the transaction re-executed.
//! - `production_worker_*`, `reader_tracking_*`: two workers run a miniature of the executor's
//!   own loop (`Block::worker` in `exec/parallel.rs`): batched claims (`next_batch`,
//!   `claim_*`), completions deferred to a per-worker count and flushed before each claim,
//!   execution reads through `read_for_execution`, and re-validation requested only when a
//!   write of a key new to the transaction finds a read above it. The block must end as
//!   sequential execution would, no worker may see it done with unflushed completions, and a
//!   committed-state read made stale by a later incarnation's first write of a key (after a
//!   validation abort or a park) must always be caught.
//! - `worker_pool_*`: the pool's hand-off of a borrowed closure to its threads (epoch, job
//!   slot, done count) and their parking: every worker runs each run's closure exactly once,
//!   the caller returns only after all of them, and a parked thread is never left asleep
//!   through a run.
#![cfg(loom)]

use loom::sync::atomic::{AtomicBool, Ordering::SeqCst};
use loom::sync::Arc;
use loom::thread;
use occam_engine::exec::loom_api::{Batch, MvMemory, MvRead, ReadOrigin, Scheduler, Status, Task, Version, WorkerPool};
use occam_engine::key::Key;
use occam_engine::value::{apply_add, Value, WriteOp};

/// Runs `f` under loom with `preemptions` as the bound unless `LOOM_MAX_PREEMPTIONS` is set.
fn model<F: Fn() + Sync + Send + 'static>(preemptions: usize, f: F) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(preemptions);
    }
    builder.check(f);
}

// (a) Two workers drive a block in which each transaction reads what the one before it wrote
// ---------------------------------------------------------------------------------------------

/// How a transaction treats a read that finds no write of its predecessor yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// As if the predecessor had left an estimate there: park on it with `add_dependency`.
    Dependency,
    /// Take the committed value and let validation catch the conflict.
    Optimistic,
}

/// What a transaction read at its predecessor's key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    Storage,
    Version(u32, u32),
}

fn seen(read: MvRead) -> Option<Seen> {
    match read {
        MvRead::Storage => Some(Seen::Storage),
        MvRead::Version(t, i, _) => Some(Seen::Version(t, i)),
        _ => None,
    }
}

fn key(i: u32) -> Key {
    Key::from_parts(1, i as u64, 0)
}

/// A chain of `n` transactions: tx 0 writes `key(0)`; tx `i > 0` reads `key(i - 1)` and writes
/// `key(i)`, either always or only if it found a write of tx `i - 1` there (so that an
/// incarnation that read the committed state writes nothing and the next one writes a new
/// key). The model's own bookkeeping (logs) uses std mutexes, never held across a loom
/// operation.
struct Sim {
    n: u32,
    /// Write `key(i)` even after reading the committed state.
    always_write: bool,
    s: Scheduler,
    mv: MvMemory,
    mode: Mode,
    /// Each transaction's last recorded read (the executor's read set).
    seen: Vec<loom::sync::Mutex<Option<Seen>>>,
    /// Whether each transaction's last incarnation wrote its key.
    wrote: Vec<AtomicBool>,
    /// Every validation: the version and whether its reads were still valid.
    validations: std::sync::Mutex<Vec<(Version, bool)>>,
    /// Every execution that ran to completion.
    executions: std::sync::Mutex<Vec<Version>>,
}

impl Sim {
    fn new(n: u32, mode: Mode, always_write: bool) -> Self {
        Sim {
            n,
            always_write,
            s: Scheduler::new(n as usize),
            mv: MvMemory::new(1),
            mode,
            seen: (0..n).map(|_| loom::sync::Mutex::new(None)).collect(),
            wrote: (0..n).map(|_| AtomicBool::new(false)).collect(),
            validations: std::sync::Mutex::new(Vec::new()),
            executions: std::sync::Mutex::new(Vec::new()),
        }
    }

    fn execute(&self, v: Version) -> Option<Task> {
        let (txn, inc) = v;
        let writes = if txn == 0 {
            true
        } else {
            loop {
                let blocking = match self.mv.read(&key(txn - 1), txn) {
                    MvRead::Blocked(b) => b,
                    MvRead::Storage if self.mode == Mode::Dependency => txn - 1,
                    read => {
                        let seen = seen(read).expect("full writes only");
                        *self.seen[txn as usize].lock().unwrap() = Some(seen);
                        break self.always_write || seen != Seen::Storage;
                    }
                };
                if self.s.add_dependency(txn, blocking) {
                    return None;
                }
                // The blocking transaction finished meanwhile: run again at once.
            }
        };
        let wrote_before = self.wrote[txn as usize].swap(writes, SeqCst);
        if writes {
            self.mv.write(key(txn), txn, inc, WriteOp::Put(Value::from_u64(inc as u64 + 1)));
        } else if wrote_before {
            self.mv.remove(&key(txn), txn);
        }
        self.executions.lock().unwrap().push(v);
        self.s.finish_execution(v, writes && !wrote_before)
    }

    fn validate(&self, v: Version) -> Option<Task> {
        let (txn, _) = v;
        let valid = txn == 0 || {
            let now = seen(self.mv.read(&key(txn - 1), txn));
            now.is_some() && now == *self.seen[txn as usize].lock().unwrap()
        };
        let aborted = !valid && self.s.try_validation_abort(v);
        if aborted && self.wrote[txn as usize].load(SeqCst) {
            self.mv.mark_estimate(&key(txn), txn);
        }
        self.validations.lock().unwrap().push((v, valid));
        self.s.finish_validation(v, aborted)
    }

    /// The worker loop of the parallel executor.
    fn work(&self) {
        let mut task = None;
        while !self.s.done() {
            task = match task {
                Some(Task::Execute(v)) => self.execute(v),
                Some(Task::Validate(v)) => self.validate(v),
                None => {
                    let t = self.s.next_task();
                    if t.is_none() {
                        thread::yield_now();
                    }
                    t
                }
            };
        }
        assert_eq!(task, None, "the block was declared done while a task was still held");
    }

    /// Checks the end state of the block: what sequential execution would give.
    fn check(&self) {
        assert!(self.s.done());
        let validations = self.validations.lock().unwrap().clone();
        let executions = self.executions.lock().unwrap().clone();
        for txn in 0..self.n {
            let (inc, status) = self.s.status(txn);
            assert_eq!(status, Status::Executed, "tx {txn} ends executed");
            assert!(
                validations.contains(&((txn, inc), true)),
                "the last incarnation {inc} of tx {txn} was never validated: {validations:?}"
            );
            assert!(executions.contains(&(txn, inc)), "tx {txn} ended on incarnation {inc} without running it");
            assert!(self.wrote[txn as usize].load(SeqCst), "tx {txn} ends with its write");
            match self.mv.read(&key(txn), txn + 1) {
                MvRead::Version(t, i, Some(v)) => assert_eq!((t, i, v.as_u64()), (txn, inc, Some(inc as u64 + 1))),
                other => panic!("tx {} reads {other:?} at key {txn}", txn + 1),
            }
            if txn > 0 {
                let prev = self.s.status(txn - 1).0;
                assert_eq!(
                    *self.seen[txn as usize].lock().unwrap(),
                    Some(Seen::Version(txn - 1, prev)),
                    "tx {txn} read tx {}'s last write",
                    txn - 1
                );
            }
        }
        assert_eq!(self.s.status(0).0, 0, "tx 0 reads nothing, so it is never aborted");
        if self.mode == Mode::Dependency {
            // Parking replaces the wasted executions: nothing completes on a stale read.
            assert!(validations.iter().all(|(_, valid)| *valid), "{validations:?}");
            assert_eq!(executions.len(), self.n as usize, "{executions:?}");
        }
    }
}

fn run_two_workers(n: u32, mode: Mode, always_write: bool, preemptions: usize) {
    model(preemptions, move || {
        let sim = Arc::new(Sim::new(n, mode, always_write));
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let sim = sim.clone();
                thread::spawn(move || sim.work())
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        sim.check();
    });
}

#[test]
fn scheduler_dependency_parks_and_terminates() {
    run_two_workers(2, Mode::Dependency, false, 3);
}

#[test]
fn scheduler_dependency_optimistic_abort_and_terminate() {
    run_two_workers(2, Mode::Optimistic, false, 3);
}

/// Three transactions: tx 1 reads the committed state, is aborted, and its re-execution writes
/// a key for the first time, which must send tx 2 back to validation.
#[test]
fn scheduler_chain_of_three_new_key_on_reexecution() {
    run_two_workers(3, Mode::Optimistic, false, 2);
}

/// Three transactions that always write: tx 1's abort turns its write into an estimate (tx 2
/// parks on it or fails validation), and its re-execution rewrites the same key, so only the
/// abort itself can send tx 2 back to validation.
#[test]
fn scheduler_chain_of_three_same_keys_on_reexecution() {
    run_two_workers(3, Mode::Optimistic, true, 2);
}

/// Three transactions parking on one another.
#[test]
fn scheduler_chain_of_three_parking() {
    run_two_workers(3, Mode::Dependency, false, 2);
}

/// Termination detection against a late pull-back of the validation index. The block is
/// brought (on one thread) to: every index past the end, one task out: tx 1's re-execution,
/// which writes a key its first incarnation did not. Then one worker finishes that task
/// (pulling validation back to tx 1) while the other looks for work and checks for the end.
/// The block must not be declared done before tx 1's new incarnation and tx 2 are validated.
#[test]
fn termination_waits_for_a_late_validation_pull_back() {
    model(3, || {
        let s = Scheduler::new(3);
        assert_eq!(s.next_task(), Some(Task::Execute((0, 0))));
        assert_eq!(s.next_task(), None);
        assert_eq!(s.next_task(), Some(Task::Execute((1, 0))));
        assert_eq!(s.finish_execution((1, 0), false), None, "tx 1 read storage, wrote nothing");
        assert_eq!(s.finish_execution((0, 0), true), None);
        assert_eq!(s.next_task(), Some(Task::Validate((0, 0))));
        assert_eq!(s.finish_validation((0, 0), false), None);
        assert_eq!(s.next_task(), Some(Task::Validate((1, 0))));
        assert!(s.try_validation_abort((1, 0)), "tx 0's write invalidates tx 1");
        let held = s.finish_validation((1, 0), true);
        assert_eq!(held, Some(Task::Execute((1, 1))));
        assert_eq!(s.next_task(), Some(Task::Execute((2, 0))));
        assert_eq!(s.finish_execution((2, 0), false), None);
        assert_eq!(s.next_task(), Some(Task::Validate((2, 0))));
        assert_eq!(s.finish_validation((2, 0), false), None);
        assert!(!s.done());

        let s = Arc::new(s);
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let workers: Vec<_> = [held, None]
            .into_iter()
            .map(|mut task| {
                let (s, log) = (s.clone(), log.clone());
                thread::spawn(move || {
                    while !s.done() {
                        task = match task {
                            // tx 1's re-execution writes a new key.
                            Some(Task::Execute(v)) => s.finish_execution(v, v == (1, 1)),
                            Some(Task::Validate(v)) => {
                                log.lock().unwrap().push(v);
                                s.finish_validation(v, false)
                            }
                            None => {
                                let t = s.next_task();
                                if t.is_none() {
                                    thread::yield_now();
                                }
                                t
                            }
                        };
                    }
                    assert_eq!(task, None);
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        let log = log.lock().unwrap().clone();
        assert!(log.contains(&(1, 1)), "tx 1's new incarnation was validated: {log:?}");
        assert!(log.contains(&(2, 0)), "tx 2 was validated again: {log:?}");
        assert_eq!(s.status(1), (1, Status::Executed));
    });
}

const K: Key = Key::from_parts(1, 0, 0);

// ---------------------------------------------------------------------------------------------
// (b) Multi-version memory: one key, concurrent writers and a reader
// ---------------------------------------------------------------------------------------------

/// The states transaction 0's entry passes through, in order, as seen by a reader below the
/// Add of transaction 2: nothing, incarnation 0, the estimate, incarnation 1.
fn stage_below_2(read: &MvRead) -> usize {
    match read {
        MvRead::Storage => 0,
        MvRead::Version(0, 0, Some(v)) if v.as_u64() == Some(10) => 1,
        MvRead::Blocked(0) => 2,
        MvRead::Version(0, 1, Some(v)) if v.as_u64() == Some(11) => 3,
        other => panic!("reader at index 1 saw {other:?}"),
    }
}

/// The same for a reader above transaction 2, whose `Add(5)` may be there (`Some(true)`),
/// not yet or no more (`Some(false)`); `None` when the estimate hides it.
fn stage_above_2(read: &MvRead) -> (usize, Option<bool>) {
    let v = |v: &Option<Value>| v.as_ref().and_then(Value::as_u64);
    match read {
        MvRead::Storage => (0, Some(false)),
        MvRead::DeltaOverStorage(5) => (0, Some(true)),
        MvRead::Version(0, 0, x) if v(x) == Some(10) => (1, Some(false)),
        MvRead::Resolved(x) if v(x) == Some(15) => (1, Some(true)),
        MvRead::Blocked(0) => (2, None),
        MvRead::Version(0, 1, x) if v(x) == Some(11) => (3, Some(false)),
        MvRead::Resolved(x) if v(x) == Some(16) => (3, Some(true)),
        other => panic!("reader at index 3 saw {other:?}"),
    }
}

/// Transaction 0 writes `K`, is aborted (estimate) and writes it again, while another thread
/// adds to `K` as transaction 2, reads it below and above itself, and removes its add.
#[test]
fn mv_memory_one_key_reads_respect_order_and_history() {
    model(3, || {
        let mv = Arc::new(MvMemory::new(1));
        let writer = {
            let mv = mv.clone();
            thread::spawn(move || {
                mv.write(K, 0, 0, WriteOp::Put(Value::from_u64(10)));
                mv.mark_estimate(&K, 0);
                mv.write(K, 0, 1, WriteOp::Put(Value::from_u64(11)));
            })
        };
        let reader = {
            let mv = mv.clone();
            thread::spawn(move || {
                mv.write(K, 2, 0, WriteOp::Add(5));
                let a = stage_below_2(&mv.read(&K, 1));
                let (b, add_b) = stage_above_2(&mv.read(&K, 3));
                let c = stage_below_2(&mv.read(&K, 1));
                assert!(add_b != Some(false), "tx 2's add is visible to tx 3 until removed");
                mv.remove(&K, 2);
                let (d, add_d) = stage_above_2(&mv.read(&K, 3));
                assert!(add_d != Some(true), "tx 2's add is gone after remove");
                assert!(a <= b && b <= c && c <= d, "reads went back in time: {a} {b} {c} {d}");
                // A reader at tx 2's own index never sees its write.
                stage_below_2(&mv.read(&K, 2));
            })
        };
        writer.join().unwrap();
        reader.join().unwrap();
        assert_eq!(stage_below_2(&mv.read(&K, 1)), 3);
        assert_eq!(stage_above_2(&mv.read(&K, 3)), (3, Some(false)));
    });
}

/// Two transactions' writes to two keys of one shard, with an estimate and a removal, raced
/// against reads at the top of the block: every read is one whole state of one writer.
#[test]
fn mv_memory_two_keys_one_shard() {
    const K2: Key = Key::from_parts(1, 1, 0);
    model(3, || {
        let mv = Arc::new(MvMemory::new(1));
        let t = {
            let mv = mv.clone();
            thread::spawn(move || {
                mv.write(K2, 1, 0, WriteOp::Delete);
                mv.write(K, 1, 0, WriteOp::Add(1));
                mv.mark_estimate(&K, 1);
                mv.remove(&K, 1);
            })
        };
        mv.write(K, 0, 0, WriteOp::Put(Value::from_u64(7)));
        let k = mv.read(&K, 9);
        let v = |x: &Option<Value>| x.as_ref().and_then(Value::as_u64);
        match &k {
            MvRead::Version(0, 0, x) => assert_eq!(v(x), Some(7)),
            MvRead::Resolved(x) => assert_eq!(v(x), Some(8)),
            MvRead::Blocked(1) => {}
            other => panic!("read of K saw {other:?}"),
        }
        match mv.read(&K2, 9) {
            MvRead::Storage | MvRead::Version(1, 0, None) => {}
            other => panic!("read of K2 saw {other:?}"),
        }
        t.join().unwrap();
        assert!(matches!(mv.read(&K, 9), MvRead::Version(0, 0, _)));
        assert!(matches!(mv.read(&K2, 9), MvRead::Version(1, 0, None)));
        assert!(matches!(mv.read(&K2, 1), MvRead::Storage));
    });
}

// ---------------------------------------------------------------------------------------------
// (c) Two validators of one version race to abort it
// ---------------------------------------------------------------------------------------------

/// Brings a two-transaction scheduler to the point where two validation tasks for `(1, 0)`
/// are out at once (tx 0's late execution wrote a new key, pulling the validation index back
/// below tx 1 while tx 1's first validation was still running). Returns the scheduler and
/// tx 0's pending validation.
fn two_validators_of_one_version() -> (Scheduler, Task) {
    let s = Scheduler::new(2);
    assert_eq!(s.next_task(), Some(Task::Execute((0, 0))));
    assert_eq!(s.next_task(), None, "tx 0 is still executing: nothing to validate");
    assert_eq!(s.next_task(), Some(Task::Execute((1, 0))));
    assert_eq!(s.finish_execution((1, 0), false), None);
    assert_eq!(s.next_task(), Some(Task::Validate((1, 0))));
    assert_eq!(s.finish_execution((0, 0), true), None, "a new key pulls validation back");
    assert_eq!(s.next_task(), Some(Task::Validate((0, 0))));
    assert_eq!(s.next_task(), Some(Task::Validate((1, 0))));
    (s, Task::Validate((0, 0)))
}

#[test]
fn validation_abort_race_has_one_winner() {
    model(3, || {
        let (s, pending) = two_validators_of_one_version();
        // Tx 0's validation passes. (It is finished here rather than raced on the main thread:
        // loom does not reliably schedule a main thread that spinning workers wait for.)
        let Task::Validate(v0) = pending else { unreachable!() };
        assert_eq!(s.finish_validation(v0, false), None);
        let s = Arc::new(s);
        let wins = Arc::new(std::sync::Mutex::new(Vec::new()));
        let validators: Vec<_> = (0..2)
            .map(|id| {
                let (s, wins) = (s.clone(), wins.clone());
                thread::spawn(move || {
                    // Both find tx 1's reads stale.
                    let version = (1, 0);
                    let aborted = s.try_validation_abort(version);
                    wins.lock().unwrap().push((id, aborted));
                    let mut task = s.finish_validation(version, aborted);
                    // Then both keep working until the block is done; every later
                    // validation passes.
                    while !s.done() {
                        task = match task {
                            Some(Task::Execute(v)) => s.finish_execution(v, false),
                            Some(Task::Validate(v)) => s.finish_validation(v, false),
                            None => {
                                let t = s.next_task();
                                if t.is_none() {
                                    thread::yield_now();
                                }
                                t
                            }
                        };
                    }
                    assert_eq!(task, None);
                })
            })
            .collect();
        for v in validators {
            v.join().unwrap();
        }
        let wins = wins.lock().unwrap().clone();
        assert_eq!(wins.iter().filter(|(_, won)| *won).count(), 1, "exactly one validator claims the abort: {wins:?}");
        assert!(s.done());
        assert_eq!(s.status(0), (0, Status::Executed));
        assert_eq!(s.status(1), (1, Status::Executed), "the aborted transaction ran again");
    });
}

/// The same race on a single transaction with the loser validating a version that the winner
/// has already aborted and re-incarnated: the stale claim must fail.
#[test]
fn validation_abort_of_a_stale_version_fails() {
    model(3, || {
        let (s, pending) = two_validators_of_one_version();
        let Task::Validate(v0) = pending else { unreachable!() };
        assert_eq!(s.finish_validation(v0, false), None);
        let s = Arc::new(s);
        let winner = {
            let s = s.clone();
            thread::spawn(move || {
                if s.try_validation_abort((1, 0)) {
                    if let Some(Task::Execute(v)) = s.finish_validation((1, 0), true) {
                        assert_eq!(v, (1, 1));
                        // The re-execution may hand back its own validation.
                        if let Some(Task::Validate(v)) = s.finish_execution(v, false) {
                            s.finish_validation(v, false);
                        }
                    }
                    true
                } else {
                    s.finish_validation((1, 0), false);
                    false
                }
            })
        };
        let mine = s.try_validation_abort((1, 0));
        let task = s.finish_validation((1, 0), mine);
        if let Some(Task::Execute(v)) = task {
            if let Some(Task::Validate(v)) = s.finish_execution(v, false) {
                s.finish_validation(v, false);
            }
        }
        let theirs = winner.join().unwrap();
        assert!(mine ^ theirs, "exactly one claim succeeds (mine {mine}, theirs {theirs})");
        // A claim on the superseded incarnation always fails now.
        assert!(!s.try_validation_abort((1, 0)));
        assert_eq!(s.status(1).0, 1);
    });
}

// ---------------------------------------------------------------------------------------------
// (d) The production worker: batches, deferred completions, reader tracking
// ---------------------------------------------------------------------------------------------

/// What the miniature of `Block::record` keeps per transaction (`Slot` in `parallel.rs`, plus
/// the output).
#[derive(Default)]
struct MiniSlot {
    reads: Vec<(Key, ReadOrigin)>,
    write_keys: Vec<Key>,
    output: Option<u64>,
}

/// What happened, in the order it happened (pushed under a std mutex that is never held across
/// a loom operation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    /// This incarnation read the committed state (logged after the read).
    ReadStorage(Version),
    /// This incarnation met an estimate (or what the model treats as one) and was parked.
    Parked(Version),
    /// This incarnation ran to completion and is about to publish its writes.
    Record(Version),
    /// It wrote `key(version.0)`: a key its previous incarnation did not write (`new`), and
    /// what `MvMemory::write` said about readers above.
    Write { version: Version, new: bool, read_above: bool },
    /// A validation of this version started.
    ValidateStart(Version),
    /// That validation finished; whether the reads were still valid.
    Validated(Version, bool),
}

/// Counts interleavings, across one loom model, in which the scenario of interest happened: a
/// model that never reaches its scenario proves nothing.
struct Coverage {
    runs: std::sync::atomic::AtomicUsize,
    hits: std::sync::atomic::AtomicUsize,
}

impl Coverage {
    const fn new() -> Self {
        use std::sync::atomic::AtomicUsize;
        Coverage { runs: AtomicUsize::new(0), hits: AtomicUsize::new(0) }
    }

    fn count(&self, hit: bool) {
        use std::sync::atomic::Ordering::Relaxed;
        self.runs.fetch_add(1, Relaxed);
        if hit {
            self.hits.fetch_add(1, Relaxed);
        }
    }

    /// Asserts that the scenario was reached at least once.
    fn assert_reached(&self, what: &str) {
        use std::sync::atomic::Ordering::Relaxed;
        let (runs, hits) = (self.runs.load(Relaxed), self.hits.load(Relaxed));
        eprintln!("{what}: {hits} of {runs} interleavings");
        assert!(hits > 0, "no interleaving reached the scenario: {what} ({runs} explored)");
    }
}

/// A chain block on a faithful miniature of the production worker (`Block::worker`, `execute`,
/// `record`, `validate` and `reads_valid` of `exec/parallel.rs`, minus statistics and the
/// contention fallback): batched claims, completions deferred to `pending` and flushed before
/// each claim, execution reads through `read_for_execution`, and `revalidate` from the
/// return value of `MvMemory::write` exactly as `record` computes it.
///
/// Tx 0 puts 1 at `key(0)`; tx `i > 0` reads `key(i - 1)` and, if it found `v`, puts `v + 1` at
/// `key(i)`. A tx that found nothing writes nothing, so that its next incarnation writes a key
/// for the first time (or, with `always_write`, puts 1). Sequentially `key(i)` ends at `i + 1`.
/// `park[i]`: tx `i` treats finding nothing at `key(i - 1)` as if it had met an estimate of
/// tx `i - 1` and parks on it (the committed state is empty).
struct Mini {
    n: u32,
    /// Indices a worker claims at once (production uses 4).
    batch: usize,
    always_write: bool,
    park: Vec<bool>,
    s: Scheduler,
    mv: MvMemory,
    slots: Vec<loom::sync::Mutex<MiniSlot>>,
    log: std::sync::Mutex<Vec<Event>>,
}

/// A transaction's execution: its reads with their origins, its writes and its output, or the
/// transaction it is blocked on.
type Run = Result<(Vec<(Key, ReadOrigin)>, Vec<(Key, WriteOp)>, u64), u32>;

impl Mini {
    fn new(n: u32, batch: usize, always_write: bool, park: &[bool]) -> Self {
        Mini {
            n,
            batch,
            always_write,
            park: (0..n as usize).map(|i| park.get(i).copied().unwrap_or(false)).collect(),
            s: Scheduler::new(n as usize),
            mv: MvMemory::new(1),
            slots: (0..n).map(|_| loom::sync::Mutex::new(MiniSlot::default())).collect(),
            log: std::sync::Mutex::new(Vec::new()),
        }
    }

    fn push(&self, e: Event) {
        self.log.lock().unwrap().push(e);
    }

    /// The VM, its reads going through `MvBase::read_base`.
    fn vm(&self, version: Version) -> Run {
        let txn = version.0;
        if txn == 0 {
            return Ok((Vec::new(), vec![(key(0), WriteOp::Put(Value::from_u64(1)))], 1));
        }
        let k = key(txn - 1);
        let (value, origin) = match self.mv.read_for_execution(&k, txn) {
            MvRead::Storage if self.park[txn as usize] => return Err(txn - 1),
            MvRead::Storage => {
                self.push(Event::ReadStorage(version));
                (None, ReadOrigin::Storage)
            }
            MvRead::Version(t, i, v) => (v, ReadOrigin::Version(t, i)),
            MvRead::Resolved(v) => (v.clone(), ReadOrigin::Resolved(v)),
            MvRead::DeltaOverStorage(d) => {
                let v = Some(apply_add(None, d));
                (v.clone(), ReadOrigin::Resolved(v))
            }
            MvRead::Blocked(b) => return Err(b),
        };
        let reads = vec![(k, origin)];
        match value.and_then(|v| v.as_u64()) {
            Some(v) => Ok((reads, vec![(key(txn), WriteOp::Put(Value::from_u64(v + 1)))], v + 1)),
            None if self.always_write => Ok((reads, vec![(key(txn), WriteOp::Put(Value::from_u64(1)))], 1)),
            None => Ok((reads, Vec::new(), 0)),
        }
    }

    /// `Block::execute`.
    fn execute(&self, version: Version, pending: &mut usize) -> Option<Task> {
        loop {
            match self.vm(version) {
                Err(blocking) => {
                    if self.s.add_dependency_deferred(version.0, blocking, pending) {
                        self.push(Event::Parked(version));
                        return None;
                    }
                    // The blocking transaction finished meanwhile: run again at once.
                }
                Ok((reads, ops, output)) => {
                    let revalidate = self.record(version, reads, ops, output);
                    return self.s.finish_execution_deferred(version, revalidate, pending);
                }
            }
        }
    }

    /// `Block::record`: the slot stays locked while the writes are published.
    fn record(&self, version: Version, reads: Vec<(Key, ReadOrigin)>, ops: Vec<(Key, WriteOp)>, output: u64) -> bool {
        let (txn, incarnation) = version;
        self.push(Event::Record(version));
        let mut slot = self.slots[txn as usize].lock().unwrap();
        for old in &slot.write_keys {
            if !ops.iter().any(|(k, _)| k == old) {
                self.mv.remove(old, txn);
            }
        }
        let mut revalidate = false;
        let mut keys = Vec::new();
        for (k, op) in ops {
            let new = !slot.write_keys.contains(&k);
            keys.push(k);
            let read_above = self.mv.write(k, txn, incarnation, op);
            self.push(Event::Write { version, new, read_above });
            revalidate |= new && read_above;
        }
        slot.write_keys = keys;
        slot.reads = reads;
        slot.output = Some(output);
        revalidate
    }

    /// `Block::reads_valid` (the committed state is empty).
    fn reads_valid(&self, txn: u32) -> bool {
        let slot = self.slots[txn as usize].lock().unwrap();
        slot.reads.iter().all(|(k, origin)| {
            let now = self.mv.read(k, txn);
            match (origin, now) {
                (ReadOrigin::Storage, MvRead::Storage) => true,
                (ReadOrigin::Version(t, i), MvRead::Version(t2, i2, _)) => *t == t2 && *i == i2,
                (ReadOrigin::Resolved(v), now) => {
                    let now = match now {
                        MvRead::Storage => Some(None),
                        MvRead::Version(_, _, x) | MvRead::Resolved(x) => Some(x),
                        MvRead::DeltaOverStorage(d) => Some(Some(apply_add(None, d))),
                        MvRead::Blocked(_) => None,
                    };
                    now.as_ref() == Some(v)
                }
                _ => false,
            }
        })
    }

    /// `Block::validate`.
    fn validate(&self, version: Version, pending: &mut usize) -> Option<Task> {
        let txn = version.0;
        self.push(Event::ValidateStart(version));
        let valid = self.reads_valid(txn);
        let aborted = !valid && self.s.try_validation_abort(version);
        self.push(Event::Validated(version, valid));
        if aborted {
            let slot = self.slots[txn as usize].lock().unwrap();
            for k in &slot.write_keys {
                self.mv.mark_estimate(k, txn);
            }
        }
        self.s.finish_validation_deferred(version, aborted, pending)
    }

    /// `Block::worker` (the idle back-off is one yield).
    fn worker(&self) {
        let mut pending = 0usize;
        while !self.s.done() {
            self.s.flush(&mut pending);
            let (execute, lo, hi) = match self.s.next_batch(self.batch) {
                Some(Batch::Execute(lo, hi)) => (true, lo, hi),
                Some(Batch::Validate(lo, hi)) => (false, lo, hi),
                None => {
                    thread::yield_now();
                    continue;
                }
            };
            assert!(lo <= hi && hi <= self.n as usize, "batch [{lo}, {hi}) outside the block");
            for idx in lo..hi {
                let mut task = if execute { self.s.claim_execution(idx, &mut pending) } else { self.s.claim_validation(idx, &mut pending) };
                // A task may lead to another for the same transaction.
                while let Some(t) = task {
                    task = match t {
                        Task::Execute(v) => self.execute(v, &mut pending),
                        Task::Validate(v) => self.validate(v, &mut pending),
                    };
                }
            }
        }
        // Completions not yet applied still count as active tasks: the block cannot have been
        // declared done while this worker held any.
        assert_eq!(pending, 0, "the block was declared done with unflushed completions");
    }

    /// The end state must be sequential execution's, with each final incarnation validated
    /// after it and every lower transaction's final incarnation ran; and every write of a key
    /// new to its transaction must have seen a read above that was logged before it.
    fn check(&self) -> Vec<Event> {
        assert!(self.s.done());
        let log = self.log.lock().unwrap().clone();
        let at = |e: Event| log.iter().position(|f| *f == e);
        let finals: Vec<u32> = (0..self.n).map(|t| self.s.status(t).0).collect();
        for txn in 0..self.n {
            let (inc, status) = self.s.status(txn);
            assert_eq!(status, Status::Executed, "tx {txn} ends executed: {log:?}");
            let runs = log.iter().filter(|e| **e == Event::Record((txn, inc))).count();
            assert_eq!(runs, 1, "tx {txn}'s final incarnation {inc} ran once: {log:?}");
            match self.mv.read(&key(txn), self.n) {
                MvRead::Version(t, i, Some(v)) => {
                    assert_eq!((t, i, v.as_u64()), (txn, inc, Some(txn as u64 + 1)), "key {txn}: {log:?}")
                }
                other => panic!("key {txn} ends as {other:?}: {log:?}"),
            }
            let slot = self.slots[txn as usize].lock().unwrap();
            assert_eq!(slot.output, Some(txn as u64 + 1), "tx {txn}'s output: {log:?}");
            if txn > 0 {
                let want = vec![(key(txn - 1), ReadOrigin::Version(txn - 1, finals[txn as usize - 1]))];
                assert_eq!(slot.reads, want, "tx {txn} read its predecessor's final write: {log:?}");
            }
            drop(slot);
            let last_run = (0..=txn).map(|i| at(Event::Record((i, finals[i as usize]))).unwrap()).max().unwrap();
            let validated = log.iter().enumerate().any(|(start, e)| {
                *e == Event::ValidateStart((txn, inc)) && start > last_run && log[start..].contains(&Event::Validated((txn, inc), true))
            });
            assert!(validated, "tx {txn}'s final incarnation {inc} was not validated after the last runs: {log:?}");
        }
        for (i, e) in log.iter().enumerate() {
            if let Event::Write { version, new: true, read_above } = *e {
                let start = at(Event::Record(version)).unwrap();
                let read_before = log[..start].iter().any(|f| matches!(f, Event::ReadStorage((t, _)) if *t == version.0 + 1));
                assert!(read_above || !read_before, "write {i} missed a read of the committed state above: {log:?}");
            }
        }
        log
    }
}

/// Two production workers on an `n`-transaction chain; `look` sees each end state.
fn run_production_workers(
    n: u32,
    batch: usize,
    always_write: bool,
    park: &'static [bool],
    preemptions: usize,
    look: impl Fn(&[Event], &Mini) + Sync + Send + 'static,
) {
    model(preemptions, move || {
        let mini = Arc::new(Mini::new(n, batch, always_write, park));
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let mini = mini.clone();
                thread::spawn(move || mini.worker())
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        let log = mini.check();
        look(&log, &mini);
    });
}

/// The interleaving had transaction `reader` read the committed state at its predecessor's key
/// before that predecessor, on a later incarnation, wrote the key for the first time: the stale
/// read must have been caught (`reader` re-executed, its final incarnation reading the final
/// write, which `check` verifies), and the writer must have asked for re-validation.
fn stale_read_caught(log: &[Event], mini: &Mini, reader: u32) -> bool {
    let writer = reader - 1;
    let Some(stale) = log.iter().position(|e| matches!(e, Event::ReadStorage((t, _)) if *t == reader)) else {
        return false;
    };
    let Some(late) = log[stale..].iter().position(|e| matches!(e, Event::Record((t, i)) if *t == writer && *i > 0)) else {
        return false;
    };
    let Event::ReadStorage(read) = log[stale] else { unreachable!() };
    assert!(mini.s.status(reader).0 > read.1, "the stale read of {read:?} survived: {log:?}");
    let Event::Record(wrote) = log[stale + late] else { unreachable!() };
    assert!(
        log.contains(&Event::Write { version: wrote, new: true, read_above: true }),
        "{wrote:?} wrote a new key over a read above without asking for re-validation: {log:?}"
    );
    true
}

/// Two transactions, tx 1 reading what tx 0 writes (optimistically: a read of the committed
/// state is caught by validation), on the deferred worker loop. Batches of one: with two, one
/// worker would claim both transactions and run them in order.
#[test]
fn production_worker_two_transactions() {
    static COV: Coverage = Coverage::new();
    run_production_workers(2, 1, false, &[], 3, |_, mini| COV.count(mini.s.status(1).0 > 0));
    COV.assert_reached("tx 1 re-executed");
}

/// Three transactions in batches of two: one worker claims tx 0 and tx 1 and runs them in
/// order, the other tx 2, which reads tx 1's key, possibly before tx 1 wrote it. The last
/// batches are clipped at the end of the block, and validation batches run ahead of execution.
#[test]
fn production_worker_three_transactions_batched() {
    static COV: Coverage = Coverage::new();
    run_production_workers(3, 2, false, &[], 2, |log, mini| {
        COV.count(mini.s.status(2).0 > 0 && log.iter().any(|e| matches!(e, Event::Write { read_above: true, .. })))
    });
    COV.assert_reached("tx 2 re-executed after a write over its read");
}

/// Reader tracking after a validation abort, in batches of one: tx 1's first incarnation reads
/// the committed state (tx 0 has not written yet), writes nothing and fails validation; tx 2
/// has meanwhile read `key(1)` from the committed state. Tx 1's next incarnation writes `key(1)`
/// for the first time: `write` must report the read above, and tx 2 must end re-executed on
/// tx 1's value.
#[test]
fn reader_tracking_new_key_after_abort() {
    static COV: Coverage = Coverage::new();
    run_production_workers(3, 1, false, &[], 2, |log, mini| COV.count(stale_read_caught(log, mini, 2)));
    COV.assert_reached("tx 2's stale read of tx 1's new key caught");
}

/// The same after a park: tx 1's first incarnation finds nothing at `key(0)` and parks on tx 0
/// (as on an estimate), so it records nothing; its released incarnation writes `key(1)` for the
/// first time, over tx 2's read of the committed state.
#[test]
fn reader_tracking_new_key_after_park() {
    static COV: Coverage = Coverage::new();
    run_production_workers(3, 1, false, &[false, true], 2, |log, mini| {
        let parked = log.contains(&Event::Parked((1, 0)));
        COV.count(stale_read_caught(log, mini, 2) && parked)
    });
    COV.assert_reached("tx 1 parked, tx 2's stale read of its new key caught");
}

/// Four transactions in batches of two (one worker claims tx 0 and 1, the other tx 2 and 3):
/// tx 2 reads `key(1)` before tx 1 wrote it, writes nothing, and tx 3 (run right after it on
/// the same worker) reads `key(2)` from the committed state; tx 2's re-execution writes `key(2)`
/// for the first time over that read.
#[test]
fn reader_tracking_new_key_after_abort_batched() {
    static COV: Coverage = Coverage::new();
    run_production_workers(4, 2, false, &[], 2, |log, mini| COV.count(stale_read_caught(log, mini, 3)));
    COV.assert_reached("tx 3's stale read of tx 2's new key caught");
}

/// Three transactions that always write, in batches of one: a re-execution rewrites the same
/// key, so `revalidate` stays false and only the abort (its estimates and the validation
/// pull-back) can send tx 2 back.
#[test]
fn production_worker_same_keys_on_reexecution() {
    static COV: Coverage = Coverage::new();
    run_production_workers(3, 1, true, &[], 2, |_, mini| COV.count(mini.s.status(1).0 > 0 && mini.s.status(2).0 > 0));
    COV.assert_reached("tx 1 and tx 2 both re-executed");
}

// ---------------------------------------------------------------------------------------------
// (f) The worker pool
// ---------------------------------------------------------------------------------------------

/// Runs `rounds` runs on a pool of `threads` workers that park at once (no keep-warm spin).
fn pool_model(threads: usize, rounds: usize) {
    let pool = WorkerPool::with_keep_warm(threads, std::time::Duration::ZERO).expect("pool");
    for round in 0..rounds {
        // A borrowed counter: every worker must have run before `run` returns.
        let hits = loom::sync::atomic::AtomicUsize::new(0);
        let out = pool.run(|w, n| {
            hits.fetch_add(1, SeqCst);
            w * 10 + n * 100 + round
        });
        assert_eq!(hits.load(SeqCst), threads);
        assert_eq!(out, (0..threads).map(|w| w * 10 + threads * 100 + round).collect::<Vec<_>>());
    }
}

#[test]
fn worker_pool_two_runs_one_thread() {
    model(3, || pool_model(2, 2));
}

#[test]
fn worker_pool_one_run_two_threads() {
    model(2, || pool_model(3, 1));
}
