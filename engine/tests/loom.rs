//! Loom models of the Block-STM scheduler and the multi-version memory.
//!
//! Built only with `--cfg loom`, where `crate::sync` hands the scheduler and the memory loom's
//! atomics and mutexes, and `occam_engine::exec::loom_api` exposes them. Run with
//! `scripts/loom.sh` (a separate target directory keeps the normal build intact):
//!
//! ```text
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 \
//!     cargo test -p occam-engine --release --test loom --target-dir target/loom
//! ```
//!
//! Each model picks its own preemption bound unless `LOOM_MAX_PREEMPTIONS` is set.
//!
//! - `scheduler_dependency_*`: two workers drive a two-transaction block in which transaction 1
//!   depends on transaction 0, either parking on it (`add_dependency`) or running optimistically
//!   and being aborted by validation. The block must terminate with both transactions executed,
//!   the last incarnation of each validated, and transaction 1 having read transaction 0's write.
//! - `mv_memory_*`: concurrent writes, estimates, removals and reads of one key: readers see
//!   only lower indices, each entry in one of the states its writer passed through, in order.
//! - `validation_abort_race`: two validators of the same version fail it at once; exactly one
//!   claims the abort, and the block still terminates with the transaction re-executed.
#![cfg(loom)]

use loom::sync::atomic::{AtomicBool, Ordering::SeqCst};
use loom::sync::Arc;
use loom::thread;
use occam_engine::exec::loom_api::{MvMemory, MvRead, Scheduler, Status, Task, Version};
use occam_engine::key::Key;
use occam_engine::value::{Value, WriteOp};

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
    run_two_workers(3, Mode::Optimistic, false, 3);
}

/// Three transactions that always write: tx 1's abort turns its write into an estimate (tx 2
/// parks on it or fails validation), and its re-execution rewrites the same key, so only the
/// abort itself can send tx 2 back to validation.
#[test]
fn scheduler_chain_of_three_same_keys_on_reexecution() {
    run_two_workers(3, Mode::Optimistic, true, 3);
}

/// Three transactions parking on one another.
#[test]
fn scheduler_chain_of_three_parking() {
    run_two_workers(3, Mode::Dependency, false, 3);
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
