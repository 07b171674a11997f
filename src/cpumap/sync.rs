//! Atomics, mutexes and the map slot for cpumap: std and arc-swap in normal
//! builds, loom's under `--cfg loom` so the entry-swap model sees them.

#[cfg(loom)]
use std::sync::Arc;

#[cfg(loom)]
pub(crate) use loom::sync::Mutex;
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::Mutex;
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU64, Ordering};

/// Gives up the CPU in a wait loop.
#[inline]
pub(crate) fn yield_now() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::thread::yield_now();
}

/// One map slot: an `Option<Arc<T>>` swapped atomically and loaded without
/// blocking writers (arc-swap). Under loom, a mutex gives the same atomic
/// load/swap semantics in a form loom can explore.
#[cfg(not(loom))]
pub(crate) type Slot<T> = arc_swap::ArcSwapOption<T>;

#[cfg(loom)]
pub(crate) struct Slot<T>(Mutex<Option<Arc<T>>>);

#[cfg(loom)]
impl<T> Slot<T> {
    pub(crate) fn empty() -> Self {
        Self(Mutex::new(None))
    }
    pub(crate) fn load_full(&self) -> Option<Arc<T>> {
        self.0.lock().unwrap().clone()
    }
    pub(crate) fn swap(&self, v: Option<Arc<T>>) -> Option<Arc<T>> {
        std::mem::replace(&mut *self.0.lock().unwrap(), v)
    }
}
