//! Sleeping targets and the flush that wakes them (the kernel cpumap's
//! kthread `schedule()` and `wake_up_process` in `__cpu_map_flush`).
//!
//! # General idea
//!
//! Each target key has a [`Waker`]: a `sleeping` word and an eventfd. A
//! target with nothing to do announces it is going to sleep, re-checks its
//! rings, and only then blocks on the eventfd (with `poll(2)`, beside the
//! exception path's reverse descriptor). An RX lcore's flush, after it
//! published frames into the target's ring, loads `sleeping` and, if set,
//! clears it and writes the eventfd.
//!
//! That is Dekker's handshake: each side stores, then loads what the other
//! stores, so each needs a full barrier between its store and its load (W1
//! with W2), else both loads can miss both stores (x86 reorders a later
//! load before an earlier store) and a frame waits in a ring while its
//! target sleeps. Both sides use a SeqCst fence.
//!
//! An asymmetric barrier (the sleeper's `membarrier(PRIVATE_EXPEDITED)`,
//! a compiler barrier on the flush side) was used until request/response
//! traffic was measured: there a target sleeps once per request, and the
//! membarrier's IPI to every CPU running a cpumapd thread was 7.5% of
//! cpumapd's cycles under nginx + wrk (`smp_call_function_many_cond`),
//! against one fence per flush (tens of cycles for a burst of frames). The
//! loom model (`loom_tests::sleep_wake_*`) checks the handshake with the
//! barriers as AcqRel read-modify-writes of one word (loom treats SeqCst
//! fences as AcqRel, too weak to express Dekker): the later of the two
//! synchronises with the earlier, which is what a pair of SeqCst fences
//! guarantees.

#![allow(unsafe_code)]

use std::io;

use crossbeam_utils::CachePadded;

use crate::sync::{AtomicU32, Ordering};

#[cfg(not(loom))]
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The barrier each side runs between its store and its load: the flush
/// between publishing frames and loading `sleeping` (W1), the sleeper
/// between storing `sleeping` and re-checking its rings (W2).
#[cfg(not(loom))]
#[inline(always)]
fn barrier(_w: &Waker) {
    std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
}

/// Under loom, the barrier is an AcqRel read-modify-write of one word:
/// the two RMWs are ordered, and the later one synchronises with the
/// earlier, which is the guarantee the real barriers give (loom models
/// SeqCst fences only as AcqRel, which cannot express Dekker's handshake).
#[cfg(loom)]
fn barrier(w: &Waker) {
    w.barrier.fetch_add(0, Ordering::AcqRel);
}

/// One target's sleep/wake word and eventfd.
pub struct Waker {
    sleeping: CachePadded<AtomicU32>,
    #[cfg(not(loom))]
    efd: OwnedFd,
    /// Under loom, the eventfd: its counter and the wait for it.
    #[cfg(loom)]
    signal: loom::sync::Mutex<u32>,
    #[cfg(loom)]
    cv: loom::sync::Condvar,
    /// Under loom, the word both barriers are made of.
    #[cfg(loom)]
    barrier: AtomicU32,
}

impl std::fmt::Debug for Waker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waker")
            .field("sleeping", &self.sleeping.load(Ordering::Relaxed))
            .finish()
    }
}

impl Waker {
    /// A waker with its eventfd (non-blocking; the sleeper blocks in
    /// poll(2)).
    pub fn new() -> io::Result<Self> {
        #[cfg(not(loom))]
        {
            // SAFETY: plain eventfd(2); checked.
            let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(Self {
                sleeping: CachePadded::new(AtomicU32::new(0)),
                // SAFETY: a fresh descriptor, owned from here on.
                efd: unsafe { OwnedFd::from_raw_fd(fd) },
            })
        }
        #[cfg(loom)]
        Ok(Self {
            sleeping: CachePadded::new(AtomicU32::new(0)),
            signal: loom::sync::Mutex::new(0),
            cv: loom::sync::Condvar::new(),
            barrier: AtomicU32::new(0),
        })
    }

    /// The flush side: call after frames were published into one of this
    /// target's rings. One fence and one load while the target is awake
    /// (SeqCst, which on x86 is a plain load; the loom model needs it to
    /// rule out a stale read the barrier already excludes).
    /// Returns true when it woke the target.
    /// Context: any RX lcore, after its enqueue.
    #[inline(always)]
    pub fn notify(&self) -> bool {
        barrier(self);
        // W1: the load after the barrier; pairs with W2.
        if self.sleeping.load(Ordering::SeqCst) == 0 {
            return false;
        }
        self.wake()
    }

    /// Wakes the target if it sleeps (the control plane after posting an
    /// entry or at shutdown; the slow path of [`notify`](Self::notify)).
    #[cold]
    pub fn wake(&self) -> bool {
        // W3: SeqCst, so a control-plane wake after a SeqCst generation bump
        // pairs with the sleeper's W2 barrier and generation re-check.
        if self.sleeping.swap(0, Ordering::SeqCst) == 0 {
            return false;
        }
        self.signal();
        true
    }

    #[cfg(not(loom))]
    fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from `one` to our eventfd. EAGAIN (the
        // counter at its maximum) means a wake-up is pending anyway.
        let _ = unsafe { libc::write(self.efd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    #[cfg(loom)]
    fn signal(&self) {
        *self.signal.lock().unwrap() += 1;
        self.cv.notify_one();
    }

    /// The sleeper, step 1: announces the sleep. The caller then re-checks
    /// every ring (and its stop flag) and either [`cancel`](Self::cancel)s
    /// or blocks on [`fd`](Self::fd) and calls [`woken`](Self::woken).
    /// Context: the target lcore.
    pub fn prepare_sleep(&self) {
        self.sleeping.store(1, Ordering::SeqCst);
        // W2: the store before the barrier; pairs with W1.
        barrier(self);
    }

    /// The re-check found work: no sleep.
    pub fn cancel(&self) {
        self.sleeping.store(0, Ordering::SeqCst);
    }

    /// After blocking: clears the sleep state and drains the eventfd.
    /// Returns true when a flush (or the control plane) woke it.
    /// Context: the target lcore.
    pub fn woken(&self) -> bool {
        self.sleeping.store(0, Ordering::SeqCst);
        self.drain()
    }

    #[cfg(not(loom))]
    fn drain(&self) -> bool {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into `v` from our non-blocking eventfd.
        let r = unsafe { libc::read(self.efd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
        r == 8 && v > 0
    }

    #[cfg(loom)]
    fn drain(&self) -> bool {
        std::mem::take(&mut *self.signal.lock().unwrap()) > 0
    }

    /// Under loom: blocks until a wake-up is signalled (what poll(2) on the
    /// eventfd does), so the model sees a blocked thread, not a spin.
    #[cfg(loom)]
    pub fn block(&self) {
        let mut n = self.signal.lock().unwrap();
        while *n == 0 {
            n = self.cv.wait(n).unwrap();
        }
    }

    /// The eventfd to block on (POLLIN).
    #[cfg(not(loom))]
    pub fn fd(&self) -> RawFd {
        self.efd.as_raw_fd()
    }

    /// Under loom there is no eventfd (the lcore loops that poll it are
    /// compiled, not run, in the models).
    #[cfg(loom)]
    pub fn fd(&self) -> std::os::fd::RawFd {
        -1
    }
}
