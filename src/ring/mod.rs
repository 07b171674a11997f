//! A bounded lock-free ring modelled on DPDK's `rte_ring` (and the kernel's
//! `ptr_ring` that cpumap uses): the queue between RX lcores and a target.
//!
//! # General idea
//!
//! One array of `2^k` slots and two head/tail pairs of free-running `u32`
//! indices, each pair on its own cache line:
//!
//! * producers move `prod.head` to reserve slots, write them, then publish by
//!   moving `prod.tail`;
//! * the consumer reads up to `prod.tail`, then frees slots by moving
//!   `cons.tail`.
//!
//! Who may call what is in the type, not a flag:
//!
//! * [`MpProducer`] — many producers (RX lcores). Reservation is a CAS on
//!   `prod.head`; publication waits until earlier reservations have been
//!   published, so `prod.tail` only ever covers fully written slots
//!   (rte_ring's MP enqueue). `Clone + Sync`; methods take `&self`.
//! * [`SpProducer`] — exactly one producer. No CAS; methods take `&mut self`.
//! * [`Consumer`] — exactly one consumer (the target lcore). `&mut self`.
//!
//! Usable capacity is exactly the requested size (like `RING_F_EXACT_SZ` and
//! `ptr_ring`): a cpumap entry with qsize 2048 holds 2048 frames, the 2049th
//! is a tail drop. Storage is rounded up to a power of two for masking.
//!
//! Modes in method names follow DPDK: `*_bulk` moves all `n` or nothing,
//! `*_burst` moves as many as fit and returns the count.
//!
//! ```
//! use arrayvec::ArrayVec;
//! use cpumapd::ring;
//!
//! // A cpumap entry's ring: qsize 4, two RX lcores producing, one target.
//! let (rx0, mut target) = ring::mpsc::<u32>(4).unwrap();
//! let rx1 = rx0.clone();
//! std::thread::spawn(move || assert!(rx1.enqueue_one(10).is_ok()))
//!     .join()
//!     .unwrap();
//!
//! // A bulk queue's flush: as many as fit move, the rest stay with the
//! // caller (the RX lcore counts them as enqueue drops and frees them).
//! let mut bulk: ArrayVec<u32, 8> = (0..5).collect();
//! assert_eq!(rx0.enqueue_burst(&mut bulk), 3);
//! assert_eq!(bulk.as_slice(), &[3, 4]);
//! // All or nothing: the ring is full.
//! assert!(!rx0.enqueue_bulk(&mut bulk));
//!
//! // The target drains in bursts, oldest first.
//! let mut out: ArrayVec<u32, 32> = ArrayVec::new();
//! assert_eq!(target.dequeue_burst(&mut out), 4);
//! assert_eq!(out.as_slice(), &[10, 0, 1, 2]);
//! assert!(target.is_empty());
//! ```
//!
//! Memory-ordering pairs (labels used at each site):
//! * R1/A2: producer's Release store of `prod.tail` / consumer's Acquire load
//!   of it — slot writes happen-before the consumer reads them.
//! * R2/A1: consumer's Release store of `cons.tail` / producer's Acquire load
//!   of it — the consumer's slot reads happen-before a producer overwrites.
//! * R0/A0: a producer's successful CAS of `prod.head` is a Release, and
//!   producers load `prod.head` with Acquire: the cons.tail a producer reads
//!   is then never older than the one the producer before it saw, so the
//!   free count cannot wrap negative (on weak-memory CPUs it could: Miri
//!   finds it with a relaxed-success CAS). A0 also keeps the A1 load after
//!   the head load (rte_ring's acquire fence).
//! * R6/A6: the producers' copy of `cons_tail` is raised (a wrapping-aware
//!   max, AcqRel) after an A1 load and read with Acquire, so the R2 -> A1 edge
//!   reaches every producer that trusts the copy, and the copy never goes
//!   backwards. (An earlier version, without R0 and storing the copy with
//!   a plain store, failed loom's one-slot model; both changed together,
//!   so which one it needed is not established.)
//! * A3/R1: a multi-producer waits for the producer before it with an
//!   Acquire load of `prod.tail`, so its own R1 publishes both producers'
//!   slot writes.
//!
//! A multi-producer that reserved slots but was preempted before publishing
//! holds up the producers behind it (rte_ring's known limit). Waiting
//! producers spin briefly and then yield, so lcores that share a CPU still
//! make progress; dedicated cores never reach the yield.
//!
//! The producers share a copy of the consumer's tail on their own line
//! (R6/A6), so they read the consumer's line only when the copy says full;
//! rte_ring reads it on every enqueue. Tried and not kept (numbers in
//! docs/PERFORMANCE.md): copying runs of slots with
//! `ptr::copy_nonoverlapping`, slower than this element loop at bulk 8.
#![allow(unsafe_code)]

use std::fmt;
use std::mem::MaybeUninit;
use std::sync::Arc;

use arrayvec::ArrayVec;
use crossbeam_utils::CachePadded;
use thiserror::Error;

use crate::sync::{AtomicU32, Ordering, UnsafeCell, spin_hint, yield_now};

/// Spins a waiting multi-producer makes before it starts yielding.
const PUBLISH_SPINS: u32 = 128;

/// Largest ring this module builds (indices are `u32` and free-running).
pub const MAX_RING_SIZE: u32 = 1 << 30;

/// Errors building a ring.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RingError {
    #[error("ring size must be at least 1")]
    /// A ring of size 0.
    Empty,
    #[error("ring size {0} exceeds the maximum of {MAX_RING_SIZE}")]
    /// A ring larger than [`MAX_RING_SIZE`].
    TooLarge(u32),
}

/// Layout: three cache lines, each written by one side only. Unlike
/// rte_ring, the producers' head and tail are on different lines: the
/// consumer polls `prod_tail`, so sharing a line with `head` would cost a
/// second cache-line transfer per enqueue (measured in benches/ring.rs).
/// A single consumer needs no separate head.
/// The producers' line: written by producers only.
struct ProdHead {
    head: AtomicU32,
    /// The newest `cons_tail` a producer loaded, shared by the producers so
    /// they read the consumer's line only when this copy says full.
    cached_cons_tail: AtomicU32,
}

struct Ring<T> {
    prod_head: CachePadded<ProdHead>,
    prod_tail: CachePadded<AtomicU32>,
    cons_tail: CachePadded<AtomicU32>,
    capacity: u32,
    mask: u32,
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
}

// SAFETY: a `Ring<T>` moves `T` values between threads (producer writes,
// consumer reads); each slot is accessed by exactly one thread at a time,
// as established by the head/tail protocol (a slot belongs to the producer
// that reserved it until R1 publishes it, then to the consumer until R2
// frees it). So `T: Send` suffices for both Send and Sync.
unsafe impl<T: Send> Send for Ring<T> {}
// SAFETY: see the `Send` impl; shared access goes only through atomics and
// through slots owned by the accessing side.
unsafe impl<T: Send> Sync for Ring<T> {}

impl<T> Ring<T> {
    fn new(capacity: u32) -> Result<Self, RingError> {
        if capacity == 0 {
            return Err(RingError::Empty);
        }
        if capacity > MAX_RING_SIZE {
            return Err(RingError::TooLarge(capacity));
        }
        let size = capacity.next_power_of_two();
        let slots = (0..size)
            .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
            .collect();
        Ok(Self {
            prod_head: CachePadded::new(ProdHead {
                head: AtomicU32::new(0),
                cached_cons_tail: AtomicU32::new(0),
            }),
            prod_tail: CachePadded::new(AtomicU32::new(0)),
            cons_tail: CachePadded::new(AtomicU32::new(0)),
            capacity,
            mask: size - 1,
            slots,
        })
    }

    #[inline(always)]
    fn slot(&self, idx: u32) -> &UnsafeCell<MaybeUninit<T>> {
        // `mask` < slots.len(), so indexing never panics.
        &self.slots[(idx & self.mask) as usize]
    }

    /// Writes `n` items from the front of `src` into slots `head..head+n`.
    ///
    /// # Safety
    /// The caller has reserved slots `head..head+n` (they are free and owned
    /// by this producer until it publishes them), and `src.len() >= n`.
    #[inline(always)]
    unsafe fn write_from<const N: usize>(&self, head: u32, n: u32, src: &mut ArrayVec<T, N>) {
        for (i, item) in src.drain(..n as usize).enumerate() {
            // SAFETY: slot `head + i` is reserved by the caller (see # Safety),
            // so no other thread reads or writes it until publication.
            self.slot(head.wrapping_add(i as u32))
                .with_mut(|p| unsafe { (*p).write(item) });
        }
    }

    /// Number of items in the ring; exact when no operation is in progress.
    fn len(&self) -> u32 {
        let cons_tail = self.cons_tail.load(Ordering::Acquire);
        let prod_tail = self.prod_tail.load(Ordering::Acquire);
        prod_tail.wrapping_sub(cons_tail).min(self.capacity)
    }

    /// How many slots to take from `free`: all `n` or none for bulk, as many
    /// as fit for burst.
    #[inline(always)]
    fn fit(n: u32, free: u32, all_or_nothing: bool) -> u32 {
        if all_or_nothing {
            if n <= free { n } else { 0 }
        } else {
            n.min(free)
        }
    }

    /// Multi-producer reservation (rte_ring `__rte_ring_move_prod_head`).
    /// Returns the first reserved index and the count reserved.
    #[inline(always)]
    fn reserve_mp(&self, n: u32, all_or_nothing: bool) -> (u32, u32) {
        // A0: Acquire; pairs with R0 (the CAS of the producer that wrote
        // this head), so the cons_tail we load below is at least as new as
        // the one that producer saw; and it keeps that load after this one.
        let mut head = self.prod_head.head.load(Ordering::Acquire);
        loop {
            // A6: Acquire; pairs with R6: the copy carries the A1/R2 edge of
            // the producer that stored it.
            let mut cons_tail = self.prod_head.cached_cons_tail.load(Ordering::Acquire);
            let mut free = self.capacity.wrapping_add(cons_tail).wrapping_sub(head);
            if free > self.capacity || free < n {
                // A1: Acquire; pairs with R2 in Consumer::dequeue_burst.
                cons_tail = self.cons_tail.load(Ordering::Acquire);
                // R6: Release; pairs with A6. Raised only forward (in
                // wrapping order: indices are free-running u32), so no
                // producer replaces a newer copy by an older one.
                let _ = self.prod_head.cached_cons_tail.fetch_update(
                    Ordering::AcqRel,
                    Ordering::Acquire,
                    |old| ((cons_tail.wrapping_sub(old) as i32) > 0).then_some(cons_tail),
                );
                free = self.capacity.wrapping_add(cons_tail).wrapping_sub(head);
            }
            if free > self.capacity {
                // Only a head older than cons_tail gives this (A0 rules out a
                // cons_tail older than the head): the CAS would fail anyway.
                head = self.prod_head.head.load(Ordering::Acquire);
                continue;
            }
            let k = Self::fit(n, free, all_or_nothing);
            if k == 0 {
                return (head, 0);
            }
            match self.prod_head.head.compare_exchange_weak(
                head,
                head.wrapping_add(k),
                // R0: Release on success; pairs with A0 of the next producer.
                // Without it that producer could see our head but an older
                // cons_tail, compute a negative free count that wraps to
                // "nearly empty", and overwrite unread slots (Miri's
                // weak-memory race detector finds this; DPDK fixed the same
                // in its C11 ring in 2025).
                Ordering::AcqRel,
                Ordering::Acquire, // A0 again for the next iteration
            ) {
                Ok(_) => return (head, k),
                Err(current) => head = current,
            }
        }
    }

    /// Multi-producer publication: wait for earlier producers, then R1.
    #[inline(always)]
    fn publish_mp(&self, head: u32, n: u32) {
        // A3: Acquire; pairs with R1 of the producer before us. Without it
        // our R1 would not carry that producer's slot writes to the consumer:
        // a plain store does not continue another thread's release sequence
        // (loom finds this; DPDK's C11 ring waited with RELAXED here).
        let mut spins = 0u32;
        while self.prod_tail.load(Ordering::Acquire) != head {
            spins += 1;
            if spins < PUBLISH_SPINS {
                spin_hint();
            } else {
                // The producer we wait for may be preempted on our own CPU
                // (lcores sharing a core, `--lcores 1@1,2@1`): give it the
                // CPU instead of spinning out our timeslice.
                yield_now();
            }
        }
        // R1: Release; pairs with A2 in Consumer::dequeue_burst.
        self.prod_tail
            .store(head.wrapping_add(n), Ordering::Release);
    }
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        // `&mut self`: no other handle exists, every operation has finished.
        let mut i = self.cons_tail.load(Ordering::Relaxed);
        let end = self.prod_tail.load(Ordering::Relaxed);
        while i != end {
            // SAFETY: slots cons.tail..prod.tail were published by a producer
            // (R1) and not yet consumed, so each holds an initialised `T`
            // that nobody else owns.
            self.slot(i)
                .with_mut(|p| unsafe { (*p).assume_init_drop() });
            i = i.wrapping_add(1);
        }
    }
}

/// A ring whose free-running indices start at `start` (tests drive them
/// across the u32 wrap this way).
#[cfg(test)]
pub(crate) fn mpsc_at<T>(
    capacity: u32,
    start: u32,
) -> Result<(MpProducer<T>, Consumer<T>), RingError> {
    let ring = Ring::new(capacity)?;
    ring.prod_head.head.store(start, Ordering::Relaxed);
    ring.prod_head
        .cached_cons_tail
        .store(start, Ordering::Relaxed);
    ring.prod_tail.store(start, Ordering::Relaxed);
    ring.cons_tail.store(start, Ordering::Relaxed);
    let ring = Arc::new(ring);
    let c = Consumer {
        ring: ring.clone(),
        cached_prod_tail: start,
    };
    Ok((MpProducer { ring }, c))
}

/// Builds a multi-producer / single-consumer ring holding exactly `capacity`
/// items.
pub fn mpsc<T>(capacity: u32) -> Result<(MpProducer<T>, Consumer<T>), RingError> {
    let ring = Arc::new(Ring::new(capacity)?);
    Ok((MpProducer { ring: ring.clone() }, Consumer::new(ring)))
}

/// Builds a single-producer / single-consumer ring holding exactly
/// `capacity` items.
pub fn spsc<T>(capacity: u32) -> Result<(SpProducer<T>, Consumer<T>), RingError> {
    let ring = Arc::new(Ring::new(capacity)?);
    Ok((
        SpProducer {
            ring: ring.clone(),
            cached_cons_tail: 0,
        },
        Consumer::new(ring),
    ))
}

/// Producer side shared by many threads (RX lcores). Cloning gives another
/// handle to the same ring.
pub struct MpProducer<T> {
    ring: Arc<Ring<T>>,
}

impl<T> Clone for MpProducer<T> {
    fn clone(&self) -> Self {
        Self {
            ring: self.ring.clone(),
        }
    }
}

impl<T> MpProducer<T> {
    /// Moves the first `k` items of `src` into the ring, where `k` is as many
    /// as fit; the rest stay in `src`. Returns `k`.
    /// Context: any producer thread; one CAS per call, not per item.
    #[inline]
    pub fn enqueue_burst<const N: usize>(&self, src: &mut ArrayVec<T, N>) -> usize {
        self.enqueue(src, false)
    }

    /// Moves all of `src` into the ring, or nothing if it does not all fit.
    /// Returns whether it moved.
    #[inline]
    pub fn enqueue_bulk<const N: usize>(&self, src: &mut ArrayVec<T, N>) -> bool {
        let n = src.len();
        self.enqueue(src, true) == n
    }

    /// Enqueues one item; gives it back if the ring is full.
    #[inline]
    pub fn enqueue_one(&self, item: T) -> Result<(), T> {
        let mut one = ArrayVec::<T, 1>::new();
        one.push(item);
        if self.enqueue(&mut one, true) == 1 {
            Ok(())
        } else {
            Err(one.remove(0))
        }
    }

    #[inline(always)]
    fn enqueue<const N: usize>(&self, src: &mut ArrayVec<T, N>, all_or_nothing: bool) -> usize {
        let n = src.len() as u32;
        if n == 0 {
            return 0;
        }
        let (head, k) = self.ring.reserve_mp(n, all_or_nothing);
        if k == 0 {
            return 0;
        }
        // SAFETY: reserve_mp's successful CAS gave this thread slots
        // head..head+k exclusively; k <= src.len().
        unsafe { self.ring.write_from(head, k, src) };
        self.ring.publish_mp(head, k);
        k as usize
    }

    /// Items in the ring now (a snapshot).
    pub fn len(&self) -> usize {
        self.ring.len() as usize
    }

    /// True when the ring is empty (a snapshot).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Usable capacity (the requested size).
    pub fn capacity(&self) -> usize {
        self.ring.capacity as usize
    }
}

/// Producer side owned by exactly one thread.
pub struct SpProducer<T> {
    ring: Arc<Ring<T>>,
    /// Last `cons.tail` seen; reloaded only when it says the ring is full.
    cached_cons_tail: u32,
}

impl<T> SpProducer<T> {
    /// As [`MpProducer::enqueue_burst`], without a CAS.
    #[inline]
    pub fn enqueue_burst<const N: usize>(&mut self, src: &mut ArrayVec<T, N>) -> usize {
        self.enqueue(src, false)
    }

    /// As [`MpProducer::enqueue_bulk`], without a CAS.
    #[inline]
    pub fn enqueue_bulk<const N: usize>(&mut self, src: &mut ArrayVec<T, N>) -> bool {
        let n = src.len();
        self.enqueue(src, true) == n
    }

    #[inline(always)]
    fn enqueue<const N: usize>(&mut self, src: &mut ArrayVec<T, N>, all_or_nothing: bool) -> usize {
        let n = src.len() as u32;
        if n == 0 {
            return 0;
        }
        let ring = &*self.ring;
        // Only this thread writes prod.tail, so Relaxed reads our own value.
        let head = ring.prod_tail.load(Ordering::Relaxed);
        let mut free = ring
            .capacity
            .wrapping_add(self.cached_cons_tail)
            .wrapping_sub(head);
        if free < n {
            // A1: Acquire; pairs with R2 in Consumer::dequeue_burst.
            self.cached_cons_tail = ring.cons_tail.load(Ordering::Acquire);
            free = ring
                .capacity
                .wrapping_add(self.cached_cons_tail)
                .wrapping_sub(head);
        }
        let k = Ring::<T>::fit(n, free, all_or_nothing);
        if k == 0 {
            return 0;
        }
        // SAFETY: the single producer owns slots head..head+free (free was
        // computed from a cons.tail loaded with A1), and k <= free, k <= len.
        unsafe { ring.write_from(head, k, src) };
        // R1: Release; pairs with A2 in Consumer::dequeue_burst.
        ring.prod_tail
            .store(head.wrapping_add(k), Ordering::Release);
        k as usize
    }

    /// Items in the ring now (a snapshot).
    pub fn len(&self) -> usize {
        self.ring.len() as usize
    }

    /// True when the ring is empty (a snapshot).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Usable capacity (the requested size).
    pub fn capacity(&self) -> usize {
        self.ring.capacity as usize
    }
}

/// Consumer side, owned by exactly one thread (the target lcore).
pub struct Consumer<T> {
    ring: Arc<Ring<T>>,
    /// Last `prod.tail` seen; reloaded only when it says the ring is empty.
    cached_prod_tail: u32,
}

impl<T> Consumer<T> {
    fn new(ring: Arc<Ring<T>>) -> Self {
        Self {
            ring,
            cached_prod_tail: 0,
        }
    }

    /// Moves up to `dst`'s spare capacity items out of the ring, oldest
    /// first, appending them to `dst`. Returns the count moved.
    /// Context: the single consumer thread.
    #[inline]
    pub fn dequeue_burst<const N: usize>(&mut self, dst: &mut ArrayVec<T, N>) -> usize {
        self.dequeue_up_to(dst, N)
    }

    /// As [`Consumer::dequeue_burst`], moving at most `max` items.
    #[inline(always)]
    pub fn dequeue_up_to<const N: usize>(&mut self, dst: &mut ArrayVec<T, N>, max: usize) -> usize {
        let want = max.min(dst.remaining_capacity()) as u32;
        if want == 0 {
            return 0;
        }
        let ring = &*self.ring;
        // Only this thread writes cons.tail.
        let head = ring.cons_tail.load(Ordering::Relaxed);
        let mut avail = self.cached_prod_tail.wrapping_sub(head);
        if avail < want {
            // A2: Acquire; pairs with R1 in the producers' publish.
            self.cached_prod_tail = ring.prod_tail.load(Ordering::Acquire);
            avail = self.cached_prod_tail.wrapping_sub(head);
        }
        let k = want.min(avail);
        for i in 0..k {
            // SAFETY: slots head..head+avail were published (A2 saw R1) and
            // belong to the consumer until R2 below; each holds an
            // initialised T, read exactly once here.
            let item = ring
                .slot(head.wrapping_add(i))
                .with_mut(|p| unsafe { (*p).assume_init_read() });
            // Capacity was checked above (k <= remaining capacity).
            dst.push(item);
        }
        if k > 0 {
            // R2: Release; pairs with A1 in the producers' reservation.
            ring.cons_tail
                .store(head.wrapping_add(k), Ordering::Release);
        }
        k as usize
    }

    /// Items in the ring now (a snapshot).
    pub fn len(&self) -> usize {
        self.ring.len() as usize
    }

    /// True when the ring is empty (a snapshot).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Usable capacity (the requested size).
    pub fn capacity(&self) -> usize {
        self.ring.capacity as usize
    }
}

impl<T> fmt::Debug for MpProducer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MpProducer")
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .finish()
    }
}

impl<T> fmt::Debug for Consumer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests;

#[cfg(all(test, loom))]
mod loom_tests;
