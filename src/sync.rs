//! The crate's concurrency primitives: std's (and arc-swap) in normal builds,
//! loom's under `--cfg loom`, so the ring and cpumap models see every
//! access. One shim for the whole crate.

#[cfg(loom)]
use std::sync::Arc;

#[cfg(loom)]
pub(crate) use loom::sync::Mutex;
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::Mutex;
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Busy-wait hint. Under loom it yields so the model can schedule the thread
/// we are waiting for.
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::hint::spin_loop();
}

/// Gives up the CPU (the slow path of a contended wait).
#[inline]
pub(crate) fn yield_now() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::thread::yield_now();
}

#[cfg(loom)]
pub(crate) use loom::cell::UnsafeCell;

/// `std::cell::UnsafeCell` with loom's closure API, so ring code is written
/// once for both.
#[cfg(not(loom))]
#[derive(Debug)]
#[repr(transparent)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    pub(crate) const fn new(v: T) -> Self {
        Self(std::cell::UnsafeCell::new(v))
    }

    #[inline(always)]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

/// A slot holding an `Option<Arc<T>>` swapped atomically and loaded without
/// blocking writers (arc-swap). Under loom, a mutex gives the same atomic
/// load/swap semantics in a form loom can explore.
#[cfg(not(loom))]
pub(crate) type Slot<T> = arc_swap::ArcSwapOption<T>;

#[cfg(loom)]
pub(crate) struct Slot<T>(Mutex<Option<Arc<T>>>);

#[cfg(loom)]
impl<T> Slot<T> {
    pub(crate) fn from_pointee(v: T) -> Self {
        Self(Mutex::new(Some(Arc::new(v))))
    }
    pub(crate) fn load_full(&self) -> Option<Arc<T>> {
        self.0.lock().unwrap().clone()
    }
    pub(crate) fn swap(&self, v: Option<Arc<T>>) -> Option<Arc<T>> {
        std::mem::replace(&mut *self.0.lock().unwrap(), v)
    }
}
