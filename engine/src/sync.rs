//! Synchronisation shims: the real primitives in normal builds, loom's under `--cfg loom`.
//!
//! The scheduler and the multi-version memory take every atomic and lock from here, so the
//! loom models in `tests/loom.rs` explore exactly the code that runs in production. Nothing in
//! this module may depend on rayon or crossbeam: loom cannot see their threads.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// A mutex whose `lock` cannot fail (poisoning is not used in the engine).
#[derive(Debug, Default)]
pub(crate) struct Mutex<T> {
    #[cfg(loom)]
    inner: loom::sync::Mutex<T>,
    #[cfg(not(loom))]
    inner: parking_lot::Mutex<T>,
}

#[cfg(loom)]
pub(crate) type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;
#[cfg(not(loom))]
pub(crate) type MutexGuard<'a, T> = parking_lot::MutexGuard<'a, T>;

impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Self {
            #[cfg(loom)]
            inner: loom::sync::Mutex::new(value),
            #[cfg(not(loom))]
            inner: parking_lot::Mutex::new(value),
        }
    }

    /// The value, consuming the mutex.
    pub(crate) fn into_inner(self) -> T {
        #[cfg(loom)]
        return self.inner.into_inner().expect("loom mutex poisoned");
        #[cfg(not(loom))]
        return self.inner.into_inner();
    }

    /// Mutable access without locking (the borrow proves exclusivity).
    pub(crate) fn get_mut(&mut self) -> &mut T {
        #[cfg(loom)]
        return self.inner.get_mut().expect("loom mutex poisoned");
        #[cfg(not(loom))]
        return self.inner.get_mut();
    }

    #[cfg(loom)]
    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        self.inner.lock().expect("loom mutex poisoned")
    }

    #[cfg(not(loom))]
    #[inline]
    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        self.inner.lock()
    }
}

/// A condition variable paired with [`Mutex`].
#[derive(Debug, Default)]
pub(crate) struct Condvar {
    #[cfg(loom)]
    inner: loom::sync::Condvar,
    #[cfg(not(loom))]
    inner: parking_lot::Condvar,
}

impl Condvar {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Releases `guard`, waits for a notification (or a spurious wake-up) and locks again.
    pub(crate) fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        #[cfg(loom)]
        return self.inner.wait(guard).expect("loom mutex poisoned");
        #[cfg(not(loom))]
        {
            let mut guard = guard;
            self.inner.wait(&mut guard);
            guard
        }
    }

    /// Wakes every waiter.
    pub(crate) fn notify_all(&self) {
        self.inner.notify_all();
    }
}

/// Spin hint for busy-wait loops; loom needs an explicit yield to make progress.
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::hint::spin_loop();
}
