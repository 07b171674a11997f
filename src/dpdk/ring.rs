//! `rte_ring`, as the peer our own ring is benchmarked against.

use std::ffi::{CString, c_void};
use std::ptr::NonNull;

use super::{DpdkError, Eal, ffi, rte_error};

/// A multi-producer / single-consumer `rte_ring` of pointers.
pub struct RteRing {
    ptr: NonNull<ffi::rte_ring>,
}

// SAFETY: rte_ring's MP enqueue is safe from any number of threads and its
// SC dequeue from one thread at a time; callers keep dequeue on one thread
// (documented on dequeue_burst).
unsafe impl Send for RteRing {}
// SAFETY: as above.
unsafe impl Sync for RteRing {}

impl RteRing {
    /// A ring of `count` slots (a power of two; holds count - 1).
    pub fn new(_eal: &Eal, name: &str, count: u32) -> Result<RteRing, DpdkError> {
        let c = CString::new(name).map_err(|_| DpdkError::Device("ring name has NUL".into()))?;
        // SAFETY: EAL is initialised; flags 0 = MP/MC defaults, the
        // burst wrappers pick the mode per call.
        let p = unsafe { ffi::rte_ring_create(c.as_ptr(), count, ffi::SOCKET_ID_ANY, 0) };
        NonNull::new(p)
            .map(|ptr| RteRing { ptr })
            .ok_or_else(|| DpdkError::Device(format!("rte_ring_create {name}: {}", rte_error())))
    }

    /// Multi-producer enqueue of as many as fit; returns the count.
    #[inline]
    pub fn mp_enqueue_burst(&self, objs: &[*mut c_void]) -> usize {
        // SAFETY: live ring; objs is readable for its length.
        unsafe {
            ffi::cpumapd_ring_mp_enqueue_burst(self.ptr.as_ptr(), objs.as_ptr(), objs.len() as u32)
                as usize
        }
    }

    /// Single-consumer dequeue of up to `out.len()`. Context: one thread.
    #[inline]
    pub fn sc_dequeue_burst(&self, out: &mut [*mut c_void]) -> usize {
        // SAFETY: live ring; out is writable for its length; one consumer
        // (caller's contract).
        unsafe {
            ffi::cpumapd_ring_sc_dequeue_burst(
                self.ptr.as_ptr(),
                out.as_mut_ptr(),
                out.len() as u32,
            ) as usize
        }
    }
}

impl Drop for RteRing {
    fn drop(&mut self) {
        // SAFETY: the ring is live and no other handle exists.
        unsafe { ffi::rte_ring_free(self.ptr.as_ptr()) };
    }
}
