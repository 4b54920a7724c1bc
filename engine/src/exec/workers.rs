//! Running one closure on every worker of a pool, with spin barriers between phases.
//!
//! Waking a sleeping pool thread costs from tens to hundreds of microseconds on a virtual
//! machine (measured: ~190 µs for one idle rayon thread on a 2-vCPU VM), as much as executing
//! a thousand cheap transactions. So an executor wakes its workers once per block and moves
//! them from phase to phase with [`SpinBarrier`], instead of one `broadcast` per phase; with
//! a single worker, the work runs on the calling thread and no thread is woken at all.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Spin iterations before a barrier waiter goes to sleep (a few microseconds).
const SPINS: u32 = 4096;

/// Runs `f(worker, workers)` once for each worker of `pool` (concurrently) and returns the
/// results in worker order. A one-thread pool runs `f(0, 1)` on the calling thread.
pub(crate) fn on_workers<R: Send>(pool: &rayon::ThreadPool, f: impl Fn(usize, usize) -> R + Sync) -> Vec<R> {
    let n = pool.current_num_threads();
    if n == 1 {
        return vec![f(0, 1)];
    }
    pool.broadcast(|ctx| f(ctx.index(), ctx.num_threads()))
}

/// A reusable barrier for the `n` workers of one [`on_workers`] call. Spins briefly (the
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
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let barrier = SpinBarrier::new(threads);
            let phase_sum = AtomicU64::new(0);
            let seen: Vec<Vec<u64>> = on_workers(&pool, |_, n| {
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
