//! The executors' worker pool: one closure on every worker, spin barriers between phases,
//! and workers kept awake between blocks.
//!
//! Waking a sleeping pool thread costs from tens to hundreds of microseconds on a virtual
//! machine (measured: ~190 µs for one idle rayon thread on a 2-vCPU VM), as much as executing
//! a thousand cheap transactions. So an executor wakes its workers once per block and moves
//! them from phase to phase with [`SpinBarrier`], instead of one `broadcast` per phase; with
//! a single worker, the work runs on the calling thread and no thread is woken at all. After
//! each run the workers spin (politely, yielding) for up to [`KEEP_WARM`] waiting for the next
//! one, so that back-to-back blocks and their commits do not pay the wake-up again.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// A pool of worker threads that lives as long as its executor. A pool of `n` workers is the
/// calling thread (worker 0, which starts at once) plus `n - 1` pool threads.
pub struct WorkerPool {
    pool: rayon::ThreadPool,
    threads: usize,
    keep_warm: Duration,
    /// Set when a run starts: workers spinning to stay warm return at once.
    stop_warm: Arc<AtomicBool>,
}

impl std::fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerPool").field("threads", &self.threads()).finish()
    }
}

impl WorkerPool {
    /// A pool of `threads` workers (named `occam-exec-N`).
    pub fn new(threads: usize) -> Result<Self, rayon::ThreadPoolBuildError> {
        let threads = threads.max(1);
        let pool =
            rayon::ThreadPoolBuilder::new().num_threads((threads - 1).max(1)).thread_name(|i| format!("occam-exec-{}", i + 1)).build()?;
        Ok(WorkerPool { pool, threads, keep_warm: keep_warm_setting(), stop_warm: Arc::new(AtomicBool::new(true)) })
    }

    /// Number of workers, the calling thread included.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f(worker, workers)` once for each worker (concurrently) and returns the results
    /// in worker order. Worker 0 is the calling thread, so one worker never leaves it.
    pub fn run<R: Send>(&self, f: impl Fn(usize, usize) -> R + Sync) -> Vec<R> {
        let n = self.threads;
        if n == 1 {
            return vec![f(0, 1)];
        }
        self.stop_warm.store(true, Ordering::Release);
        let results: Vec<parking_lot::Mutex<Option<R>>> = (0..n).map(|_| parking_lot::Mutex::new(None)).collect();
        self.pool.in_place_scope(|scope| {
            scope.spawn_broadcast(|_, ctx| {
                let w = ctx.index() + 1;
                *results[w].lock() = Some(f(w, n));
            });
            *results[0].lock() = Some(f(0, n));
        });
        self.keep_warm();
        results.into_iter().map(|r| r.into_inner().expect("every worker ran")).collect()
    }

    fn keep_warm(&self) {
        if self.keep_warm.is_zero() {
            return;
        }
        let keep_warm = self.keep_warm;
        self.stop_warm.store(false, Ordering::Release);
        let stop = Arc::clone(&self.stop_warm);
        self.pool.spawn_broadcast(move |_| {
            let deadline = Instant::now() + keep_warm;
            let mut spins = 0u32;
            while !stop.load(Ordering::Acquire) && Instant::now() < deadline {
                spins += 1;
                if spins % 64 == 0 {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            }
        });
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        // Let any warm spinner return before rayon joins its threads.
        self.stop_warm.store(true, Ordering::Release);
    }
}

/// Spin iterations before a barrier waiter goes to sleep (a few microseconds).
const SPINS: u32 = 4096;

/// A reusable barrier for the `n` workers of one [`WorkerPool::run`] call. Spins briefly (the
/// common case: workers arrive within microseconds of each other), then sleeps on a condition
/// variable, so that more workers than cores do not starve the ones still working.
pub(crate) struct SpinBarrier {
    n: usize,
    arrived: AtomicUsize,
    generation: AtomicUsize,
    lock: parking_lot::Mutex<()>,
    wake: parking_lot::Condvar,
}

impl SpinBarrier {
    /// A barrier for `n` workers.
    pub(crate) fn new(n: usize) -> Self {
        SpinBarrier {
            n,
            arrived: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
            lock: parking_lot::Mutex::new(()),
            wake: parking_lot::Condvar::new(),
        }
    }

    /// Waits until all `n` workers have called `wait` for this generation.
    pub(crate) fn wait(&self) {
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
        for _ in 0..SPINS {
            if self.generation.load(Ordering::Acquire) != generation {
                return;
            }
            std::hint::spin_loop();
        }
        let mut guard = self.lock.lock();
        while self.generation.load(Ordering::Acquire) == generation {
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
}
