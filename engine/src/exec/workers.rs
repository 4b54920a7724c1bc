//! The executors' worker pool: one closure on every worker, spin barriers between phases,
//! and workers kept awake between blocks.
//!
//! Waking a sleeping thread costs from tens to hundreds of microseconds on a virtual machine
//! (measured: ~190 µs for one idle thread on a 2-vCPU VM), as much as executing a thousand
//! cheap transactions. So an executor wakes its workers once per block and moves them from
//! phase to phase with [`SpinBarrier`], instead of one dispatch per phase; with a single
//! worker, the work runs on the calling thread and no thread is woken at all. After each run
//! the workers spin (politely, yielding) for up to [`KEEP_WARM`] waiting for the next one, so
//! that back-to-back blocks and their commits do not pay the wake-up again.
//!
//! The pool is its own: `n - 1` threads that wait for a run by spinning, then parking on a
//! condition variable, and a caller that spins until they are done. It replaced a rayon pool
//! because a thread outside rayon that waits for a rayon scope sleeps on a lock: at 16 workers
//! on the 16-vCPU device, the caller woke 300–400 µs after the last worker had finished, a
//! quarter of a 10,000-transfer block (see BENCHMARKS.md).

use crate::sync::{spin_hint, AtomicBool, AtomicUsize, Condvar, Mutex, Ordering};
use crossbeam_utils::CachePadded;
use std::any::Any;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

#[cfg(loom)]
use loom::{sync::Arc, thread};
#[cfg(not(loom))]
use std::{sync::Arc, thread};

/// How long idle workers stay awake after a run, waiting for the next, unless the environment
/// variable `OCCAM_KEEP_WARM_US` says otherwise (0 turns it off, for nodes that must not spin).
pub const KEEP_WARM: Duration = Duration::from_micros(1500);

/// [`KEEP_WARM`], or `OCCAM_KEEP_WARM_US` microseconds when that is set to a number ≤ 1 s.
pub fn keep_warm_setting() -> Duration {
    std::env::var("OCCAM_KEEP_WARM_US")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|&us| us <= 1_000_000)
        .map_or(KEEP_WARM, Duration::from_micros)
}

/// A run's closure, its lifetime erased (see the safety argument in [`WorkerPool::dispatch`]).
#[derive(Clone, Copy)]
struct JobRef(*const (dyn Fn(usize) + Sync + 'static));

// SAFETY: the pointee is `Sync`, so calling it from several threads through a shared pointer is
// allowed; the pointer itself is only dereferenced while the caller of `dispatch` keeps the
// closure alive.
unsafe impl Send for JobRef {}

/// What the caller and the pool threads share.
struct Shared {
    /// Counts runs; a worker runs the job of each run exactly once.
    epoch: CachePadded<AtomicUsize>,
    /// Pool threads that finished the current run's job.
    done: CachePadded<AtomicUsize>,
    shutdown: AtomicBool,
    /// The current run's job; `None` between runs.
    job: Mutex<Option<JobRef>>,
    /// The first panic of a pool thread in the current run.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    park: Mutex<()>,
    wake: Condvar,
}

/// A pool of worker threads that lives as long as its executor. A pool of `n` workers is the
/// calling thread (worker 0, which starts at once) plus `n - 1` pool threads.
pub struct WorkerPool {
    threads: usize,
    /// Held for a whole run: two callers sharing the pool take turns.
    running: Mutex<()>,
    shared: Arc<Shared>,
    handles: Vec<thread::JoinHandle<()>>,
}

impl std::fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerPool").field("threads", &self.threads()).finish()
    }
}

impl WorkerPool {
    /// A pool of `threads` workers (its threads named `occam-exec-N`), kept warm for
    /// [`keep_warm_setting`] after each run.
    pub fn new(threads: usize) -> std::io::Result<Self> {
        Self::with_keep_warm(threads, keep_warm_setting())
    }

    /// A pool of `threads` workers kept warm for `keep_warm` after each run.
    pub fn with_keep_warm(threads: usize, keep_warm: Duration) -> std::io::Result<Self> {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            epoch: CachePadded::new(AtomicUsize::new(0)),
            done: CachePadded::new(AtomicUsize::new(0)),
            shutdown: AtomicBool::new(false),
            job: Mutex::new(None),
            panic: Mutex::new(None),
            park: Mutex::new(()),
            wake: Condvar::new(),
        });
        let mut pool = WorkerPool { threads, running: Mutex::new(()), shared, handles: Vec::with_capacity(threads - 1) };
        for w in 1..threads {
            let shared = Arc::clone(&pool.shared);
            #[cfg(not(loom))]
            let handle = thread::Builder::new().name(format!("occam-exec-{w}")).spawn(move || worker(&shared, w, keep_warm))?;
            #[cfg(loom)]
            let handle = thread::spawn(move || worker(&shared, w, keep_warm));
            // On a spawn error the pool is dropped here, which stops the threads already started.
            pool.handles.push(handle);
        }
        Ok(pool)
    }

    /// Number of workers, the calling thread included.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f(worker, workers)` once for each worker (concurrently) and returns the results
    /// in worker order. Worker 0 is the calling thread, so one worker never leaves it. A panic
    /// in any worker is re-raised here once every worker has finished. Runs from several
    /// threads take turns; `f` must not call `run` on the same pool (it would deadlock).
    pub fn run<R: Send>(&self, f: impl Fn(usize, usize) -> R + Sync) -> Vec<R> {
        let n = self.threads;
        if n == 1 {
            return vec![f(0, 1)];
        }
        let results: Vec<CachePadded<Mutex<Option<R>>>> = (0..n).map(|_| CachePadded::new(Mutex::new(None))).collect();
        self.dispatch(&|w| {
            let r = f(w, n);
            *results[w].lock() = Some(r);
        });
        results.into_iter().map(|r| r.into_inner().into_inner().expect("every worker ran")).collect()
    }

    /// Runs `job(w)` for every worker `w`, 0 on the calling thread; returns when all are done.
    fn dispatch(&self, job: &(dyn Fn(usize) + Sync)) {
        let _running = self.running.lock();
        let shared = &*self.shared;
        // SAFETY: this erases the lifetime of `job` so that the pool threads can hold it. They
        // call it only for the run published below, and this function neither returns nor
        // unwinds before every one of them has finished that call (`done` reaches `n - 1`
        // after each thread's last use of the pointer), and it clears `job` before returning.
        let erased = unsafe { std::mem::transmute::<*const (dyn Fn(usize) + Sync + '_), *const (dyn Fn(usize) + Sync + 'static)>(job) };
        *shared.job.lock() = Some(JobRef(erased));
        shared.done.store(0, Ordering::Relaxed);
        shared.epoch.fetch_add(1, Ordering::Release);
        {
            // Always, and under the lock: a thread between its check of `epoch` (made under
            // the lock) and its sleep cannot miss the notification. With nobody parked this
            // is an uncontended lock and no system call.
            let _guard = shared.park.lock();
            shared.wake.notify_all();
        }
        let mine = catch_unwind(AssertUnwindSafe(|| job(0)));
        let mut spins = 0u32;
        while shared.done.load(Ordering::Acquire) < self.threads - 1 {
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(64) {
                thread::yield_now();
            } else {
                spin_hint();
            }
        }
        *shared.job.lock() = None;
        // Take a pool thread's panic in any case, so that it cannot surface in a later run.
        let theirs = shared.panic.lock().take();
        if let Err(payload) = mine {
            resume_unwind(payload);
        }
        if let Some(payload) = theirs {
            resume_unwind(payload);
        }
    }
}

/// The loop of pool thread `w`: wait for a run, run its job, count it done.
fn worker(shared: &Shared, w: usize, keep_warm: Duration) {
    let mut seen = 0;
    loop {
        seen = wait_for_run(shared, seen, keep_warm);
        if shared.shutdown.load(Ordering::Acquire) {
            return;
        }
        let job = shared.job.lock().expect("a run publishes its job before its epoch");
        // SAFETY: `dispatch` keeps the closure alive until this thread has counted itself done
        // below, after its last use of the pointer.
        let result = catch_unwind(AssertUnwindSafe(|| unsafe { (*job.0)(w) }));
        if let Err(payload) = result {
            shared.panic.lock().get_or_insert(payload);
        }
        shared.done.fetch_add(1, Ordering::Release);
    }
}

/// Waits until the epoch moves past `seen` (a new run, or shutdown) and returns it: spinning
/// for `keep_warm`, then parked.
fn wait_for_run(shared: &Shared, seen: usize, keep_warm: Duration) -> usize {
    let current = || shared.epoch.load(Ordering::Acquire);
    if !keep_warm.is_zero() {
        let deadline = Instant::now() + keep_warm;
        let mut spins = 0u32;
        loop {
            let e = current();
            if e != seen {
                return e;
            }
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(64) {
                if Instant::now() >= deadline {
                    break;
                }
                thread::yield_now();
            } else {
                spin_hint();
            }
        }
    }
    let mut guard = shared.park.lock();
    let mut e = current();
    while e == seen {
        guard = shared.wake.wait(guard);
        e = current();
    }
    e
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::Release);
        self.shared.epoch.fetch_add(1, Ordering::Release);
        {
            let _guard = self.shared.park.lock();
            self.shared.wake.notify_all();
        }
        for handle in self.handles.drain(..) {
            let _ = handle.join();
        }
    }
}

/// How long a barrier waiter spins before it sleeps, when every worker has a core of its own.
/// The serial step of the declared analysis keeps the others waiting ~0.1 ms; a sleeping
/// waiter wakes up to 0.17 ms late on the device (measured), while spinning costs only a core
/// that would idle anyway.
const SPIN_TIME: Duration = Duration::from_millis(1);

/// Spin iterations before a barrier waiter sleeps when there are more workers than cores
/// (a few microseconds), so that waiters do not starve the workers still working.
const SPINS_OVERSUBSCRIBED: u32 = 4096;

/// Cores this process may run on (1 if unknown), read once.
fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// A reusable barrier for the `n` workers of one [`WorkerPool::run`] call. Spins (the common
/// case: workers arrive within microseconds of each other), then sleeps on a condition
/// variable; it spins only briefly when there are more workers than cores.
pub(crate) struct SpinBarrier {
    n: usize,
    /// `None`: spin [`SPINS_OVERSUBSCRIBED`] times; `Some(t)`: spin for `t`.
    spin_for: Option<Duration>,
    arrived: std::sync::atomic::AtomicUsize,
    generation: std::sync::atomic::AtomicUsize,
    lock: parking_lot::Mutex<()>,
    wake: parking_lot::Condvar,
}

impl SpinBarrier {
    /// A barrier for `n` workers.
    pub(crate) fn new(n: usize) -> Self {
        SpinBarrier {
            n,
            spin_for: (n <= cores()).then_some(SPIN_TIME),
            arrived: Default::default(),
            generation: Default::default(),
            lock: parking_lot::Mutex::new(()),
            wake: parking_lot::Condvar::new(),
        }
    }

    /// Waits until all `n` workers have called `wait` for this generation.
    pub(crate) fn wait(&self) {
        use std::sync::atomic::Ordering;
        if self.n == 1 {
            return;
        }
        let generation = self.generation.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.n {
            self.arrived.store(0, Ordering::Relaxed);
            // Under the lock, so that a waiter between its check and its sleep cannot miss it.
            let _guard = self.lock.lock();
            self.generation.fetch_add(1, Ordering::AcqRel);
            self.wake.notify_all();
            return;
        }
        let passed = || self.generation.load(Ordering::Acquire) != generation;
        match self.spin_for {
            None => {
                for _ in 0..SPINS_OVERSUBSCRIBED {
                    if passed() {
                        return;
                    }
                    std::hint::spin_loop();
                }
            }
            Some(limit) => {
                let deadline = Instant::now() + limit;
                let mut spins = 0u32;
                loop {
                    if passed() {
                        return;
                    }
                    spins = spins.wrapping_add(1);
                    if spins.is_multiple_of(256) && Instant::now() >= deadline {
                        break;
                    }
                    std::hint::spin_loop();
                }
            }
        }
        let mut guard = self.lock.lock();
        while !passed() {
            self.wake.wait(&mut guard);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn barrier_separates_phases_and_is_reusable() {
        for threads in [1, 2, 3, 8] {
            let pool = WorkerPool::new(threads).unwrap();
            let barrier = SpinBarrier::new(threads);
            let phase_sum = AtomicU64::new(0);
            let seen: Vec<Vec<u64>> = pool.run(|_, n| {
                let mut seen = Vec::new();
                for phase in 0..50u64 {
                    phase_sum.fetch_add(phase, Ordering::Relaxed);
                    barrier.wait();
                    // Every worker has added this phase's value and none the next one's yet.
                    seen.push(phase_sum.load(Ordering::Relaxed));
                    barrier.wait();
                }
                assert_eq!(n, threads);
                seen
            });
            for s in seen {
                let expected: Vec<u64> = (0..50u64).map(|p| (0..=p).sum::<u64>() * threads as u64).collect();
                assert_eq!(s, expected);
            }
        }
    }

    #[test]
    fn every_worker_runs_once_per_run_with_borrowed_data() {
        for keep_warm in [Duration::ZERO, Duration::from_micros(200)] {
            for threads in [1, 2, 4, 9] {
                let pool = WorkerPool::with_keep_warm(threads, keep_warm).unwrap();
                for round in 0..200usize {
                    // Borrowed, not 'static: the run must be over before it goes out of scope.
                    let hits: Vec<AtomicU64> = (0..threads).map(|_| AtomicU64::new(0)).collect();
                    let out = pool.run(|w, n| {
                        hits[w].fetch_add(1, Ordering::Relaxed);
                        (w, n, round)
                    });
                    assert_eq!(out, (0..threads).map(|w| (w, threads, round)).collect::<Vec<_>>());
                    assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
                    if round % 50 == 0 {
                        // Long enough for the threads to park.
                        std::thread::sleep(keep_warm + Duration::from_millis(2));
                    }
                }
            }
        }
    }

    #[test]
    fn a_panicking_worker_is_reraised_and_the_pool_survives() {
        let pool = WorkerPool::new(3).unwrap();
        for culprit in [0, 2] {
            let caught = std::panic::catch_unwind(AssertUnwindSafe(|| {
                pool.run(|w, _| {
                    if w == culprit {
                        panic!("worker {w} fails");
                    }
                    w
                })
            }));
            let payload = caught.expect_err("the panic reaches the caller");
            assert_eq!(payload.downcast_ref::<String>().map(String::as_str), Some(format!("worker {culprit} fails").as_str()));
            assert_eq!(pool.run(|w, _| w * 10), vec![0, 10, 20]);
        }
    }

    #[test]
    fn panics_on_several_workers_do_not_leak_into_the_next_run() {
        let pool = WorkerPool::new(3).unwrap();
        let caught = std::panic::catch_unwind(AssertUnwindSafe(|| pool.run(|w, _| -> usize { panic!("worker {w} fails") })));
        assert!(caught.is_err());
        assert_eq!(pool.run(|w, _| w), vec![0, 1, 2], "the other workers' panics were dropped with the run");
    }

    #[test]
    fn callers_on_several_threads_take_turns() {
        let pool = WorkerPool::new(3).unwrap();
        std::thread::scope(|s| {
            for caller in 0..4u64 {
                let pool = &pool;
                s.spawn(move || {
                    for _ in 0..100 {
                        let out = pool.run(|w, _| caller * 100 + w as u64);
                        assert_eq!(out, vec![caller * 100, caller * 100 + 1, caller * 100 + 2]);
                    }
                });
            }
        });
    }
}
