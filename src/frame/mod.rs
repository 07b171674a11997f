//! `Frame`: one owned packet buffer, and `Pool`: the fixed-size native buffer
//! pool frames come from (the native counterpart of an `rte_mempool` of
//! `rte_mbuf`s).
//!
//! # General idea
//!
//! A pool is one arena allocated at start-up, cut into `n` slots. Each slot
//! is a 64-byte [`FrameHdr`] (pool back-pointer, slot index, data offset and
//! length, RX metadata) followed by `headroom + data_room` bytes of buffer.
//! Nothing is allocated per packet.
//!
//! The free list is an MPSC [`ring`](crate::ring) of slot indices:
//! * the consumer is the pool's owner — the RX lcore that allocates from it
//!   (`Pool` is `Send` but not `Clone`), so allocation needs no CAS;
//! * any thread that drops a frame is a producer: a target after delivery,
//!   a port after transmit.
//!
//! The owner also keeps a private stash of free indices (DPDK's mempool
//! cache): frames it drops itself (drop verdicts, tail drops) go there with
//! [`Pool::recycle_burst`] — no CAS, no shared cache line, no chance of
//! stalling behind a preempted producer — and allocation takes from the
//! stash before the ring.
//!
//! Ownership is Rust's: a [`Frame`] is a unique handle to one slot. Moving it
//! moves the packet (RX lcore -> bulk queue -> ring -> target -> sink); its
//! `Drop` returns the slot to its pool, so every path returns a frame exactly
//! once and a leak or double free cannot be written in safe code.
//! [`free_burst`] returns many frames with one ring operation.
//!
//! Lifetime: frames point at their pool's shared part. If the `Pool` handle
//! is dropped while frames are still out, the arena is leaked (and reported)
//! rather than freed under them.
#![allow(unsafe_code)]

use std::alloc::{self, Layout};
use std::fmt;
use std::mem::{self, size_of};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use arrayvec::ArrayVec;
use thiserror::Error;

#[cfg(feature = "dpdk")]
use crate::dpdk::{Mbuf, Mempool};
use crate::ring::{self, Consumer, MpProducer};
use crate::wire::vnet::VnetHdr;

/// Largest RX/TX burst.
pub const MAX_BURST: usize = 32;
/// A burst of frames: what ports, filters, rings and sinks hand on.
pub type Burst = ArrayVec<Frame, MAX_BURST>;

/// Bytes reserved in front of the packet data (`RTE_PKTMBUF_HEADROOM`).
pub const DEFAULT_HEADROOM: u16 = 128;
/// Bytes of packet data per buffer (`RTE_MBUF_DEFAULT_DATAROOM`).
pub const DEFAULT_DATA_ROOM: u16 = 2048;
/// Bytes of packet data per large buffer with the default headroom: a
/// whole TSO super-frame (the kernel's 64 KiB `gso_max_size` minus what
/// TCP reserves for headers) fits.
pub const LARGE_DATA_ROOM: u16 = u16::MAX - DEFAULT_HEADROOM;

/// Errors building a pool or editing a frame.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    /// A pool size out of range.
    #[error("pool '{name}': size must be between 1 and {max} buffers, got {n}")]
    PoolSize {
        /// The pool.
        name: String,
        /// The size asked for.
        n: u32,
        /// The largest size.
        max: u32,
    },
    #[error(
        "pool '{name}': headroom {headroom} + data room {data_room} must be between 64 and 65535 bytes"
    )]
    /// Headroom plus data room out of range.
    BufSize {
        /// The pool.
        name: String,
        /// Bytes of headroom asked for.
        headroom: u16,
        /// Bytes of data room asked for.
        data_room: u16,
    },
    /// The pool's memory could not be allocated.
    #[error("pool '{name}': cannot allocate {bytes} bytes for {n} buffers")]
    OutOfMemory {
        /// The pool.
        name: String,
        /// Bytes asked for.
        bytes: usize,
        /// Buffers asked for.
        n: u32,
    },
    /// A frame longer than the buffer's room.
    #[error("frame length {len} exceeds the {room} bytes of room after the data offset")]
    TooLong {
        /// The length asked for.
        len: usize,
        /// Room after the data offset.
        room: usize,
    },
    #[error("cannot move the data start by {delta}: headroom is {headroom}, length is {len}")]
    /// A data start moved outside the buffer.
    BadAdjust {
        /// The move asked for.
        delta: isize,
        /// Headroom before the move.
        headroom: usize,
        /// Data length before the move.
        len: usize,
    },
}

/// Per-buffer header, at the start of each slot (the `rte_mbuf` fields we
/// need). One cache line.
#[repr(C, align(64))]
struct FrameHdr {
    pool: *const PoolShared,
    timestamp_ns: u64,
    idx: u32,
    rss_hash: u32,
    data_off: u16,
    data_len: u16,
    buf_len: u16,
    port: u16,
    queue: u16,
    offload: Offload,
    /// XDP metadata bytes in front of the data (at most 32).
    meta_len: u8,
}

/// A frame's offload metadata (a virtio-net header), with its offsets
/// counted from the buffer's start so moving the data start (a VLAN tag
/// put back, `bpf_xdp_adjust_head`) keeps them pointing at the same bytes.
#[derive(Clone, Copy, Default)]
struct Offload {
    flags: u8,
    gso_type: u8,
    gso_size: u16,
    csum_start: u16,
    csum_offset: u16,
    hdr_end: u16,
}

const HDR_SIZE: usize = size_of::<FrameHdr>();

struct PoolShared {
    name: String,
    base: NonNull<u8>,
    layout: Layout,
    slot_size: usize,
    n: u32,
    headroom: u16,
    data_room: u16,
    free: MpProducer<u32>,
    /// Length of the owner's stash, published for `in_use` readers (single
    /// writer: the owner).
    stashed: AtomicU32,
}

// SAFETY: PoolShared is read by every thread that holds a Frame of this pool
// (headers and buffers are reached only through the unique Frame that owns a
// slot); its mutable state is the free ring, which is itself Sync. The arena
// pointer is never reallocated while the pool lives.
unsafe impl Send for PoolShared {}
// SAFETY: as above; shared access is read-only except through the ring.
unsafe impl Sync for PoolShared {}

impl Drop for PoolShared {
    fn drop(&mut self) {
        // SAFETY: base/layout come from the alloc_zeroed in Pool::new, and
        // PoolShared is dropped only when no Pool handle remains and (see
        // Pool::drop) no frame is outstanding.
        unsafe { alloc::dealloc(self.base.as_ptr(), self.layout) };
    }
}

impl PoolShared {
    #[inline(always)]
    fn slot_hdr(&self, idx: u32) -> NonNull<FrameHdr> {
        debug_assert!(idx < self.n);
        // SAFETY: idx < n, so the offset is inside the arena allocated for n
        // slots of slot_size bytes; slot_size is a multiple of 64 and base is
        // 64-aligned, so the pointer is aligned for FrameHdr.
        unsafe {
            NonNull::new_unchecked(self.base.as_ptr().add(idx as usize * self.slot_size).cast())
        }
    }

    /// Buffers out of the pool (exact when the pipeline is idle).
    fn in_use(&self) -> u32 {
        self.n - (self.free.len() as u32 + self.stashed.load(Ordering::Relaxed))
    }
}

/// Indices the owner keeps to itself.
const STASH: usize = 512;

/// The native pool: one arena, a free ring and the owner's stash.
struct NativePool {
    shared: Arc<PoolShared>,
    free: Consumer<u32>,
    stash: ArrayVec<u32, STASH>,
}

/// Read-only view of a pool for statistics (any thread).
#[derive(Clone)]
pub struct PoolStats(StatsKind, Option<Arc<PoolShared>>);

#[derive(Clone)]
enum StatsKind {
    Native(Arc<PoolShared>),
    #[cfg(feature = "dpdk")]
    Mbuf(Arc<Mempool>),
}

impl PoolStats {
    /// The pool's name.
    pub fn name(&self) -> &str {
        match &self.0 {
            StatsKind::Native(s) => &s.name,
            #[cfg(feature = "dpdk")]
            StatsKind::Mbuf(m) => m.name(),
        }
    }
    /// Buffers in the pool (its large class included).
    pub fn capacity(&self) -> u32 {
        let large = self.1.as_ref().map_or(0, |l| l.n);
        large
            + match &self.0 {
                StatsKind::Native(s) => s.n,
                #[cfg(feature = "dpdk")]
                StatsKind::Mbuf(m) => m.capacity(),
            }
    }
    /// Buffers currently out of the pool (exact when the pipeline is idle;
    /// for a DPDK mempool, `size - rte_mempool_avail_count`).
    pub fn in_use(&self) -> u32 {
        let large = self.1.as_ref().map_or(0, |l| l.in_use());
        large
            + match &self.0 {
                StatsKind::Native(s) => s.in_use(),
                #[cfg(feature = "dpdk")]
                StatsKind::Mbuf(m) => m.in_use(),
            }
    }
}

/// A pool of packet buffers owned by one allocating thread: a native arena,
/// or with DPDK a shared per-socket mbuf mempool (DPDK's own MP/MC pool
/// with per-lcore caches).
pub struct Pool(PoolKind, Option<Box<NativePool>>);

// The native pool is the common case and lives on its lcore's stack frame;
// boxing it would add a pointer chase to every allocation.
#[allow(clippy::large_enum_variant)]
enum PoolKind {
    Native(NativePool),
    #[cfg(feature = "dpdk")]
    Mbuf(Arc<Mempool>),
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.name())
            .field("n", &self.capacity())
            .finish()
    }
}

impl Pool {
    /// Allocates a native pool of `n` buffers with `headroom` bytes in front
    /// of `data_room` bytes of packet data each.
    pub fn new(name: &str, n: u32, headroom: u16, data_room: u16) -> Result<Self, FrameError> {
        NativePool::new(name, n, headroom, data_room).map(|p| Pool(PoolKind::Native(p), None))
    }

    /// Allocation from a DPDK mempool (shared by the lcores of a socket).
    #[cfg(feature = "dpdk")]
    pub fn from_mempool(mp: Arc<Mempool>) -> Self {
        Pool(PoolKind::Mbuf(mp), None)
    }

    /// A statistics handle for this pool.
    pub fn stats(&self) -> PoolStats {
        PoolStats(
            match &self.0 {
                PoolKind::Native(p) => StatsKind::Native(p.shared.clone()),
                #[cfg(feature = "dpdk")]
                PoolKind::Mbuf(m) => StatsKind::Mbuf(m.clone()),
            },
            self.1.as_ref().map(|l| l.shared.clone()),
        )
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        match &self.0 {
            PoolKind::Native(p) => &p.shared.name,
            #[cfg(feature = "dpdk")]
            PoolKind::Mbuf(m) => m.name(),
        }
    }

    /// Buffers in the pool.
    pub fn capacity(&self) -> u32 {
        self.stats().capacity()
    }

    /// Buffers currently out of the pool (its large class included).
    pub fn in_use(&self) -> u32 {
        self.stats().in_use()
    }

    /// Adds a large-buffer class of `n` buffers holding a whole GSO
    /// super-frame each ([`LARGE_DATA_ROOM`] bytes after the same headroom):
    /// the kernel's frags or DPDK's mbuf chains, as one contiguous buffer
    /// so every consumer still sees one `data()` slice. Frames of the class
    /// go back to it wherever they are dropped.
    /// Context: control or owning thread, before the pool is used.
    pub fn with_large(mut self, n: u32) -> Result<Self, FrameError> {
        let headroom = match &self.0 {
            PoolKind::Native(p) => p.shared.headroom,
            #[cfg(feature = "dpdk")]
            PoolKind::Mbuf(_) => DEFAULT_HEADROOM,
        };
        let name = format!("{}_large", self.name());
        let room = u16::MAX - headroom;
        self.1 = Some(Box::new(NativePool::new(&name, n, headroom, room)?));
        Ok(self)
    }

    /// Bytes of packet data a large buffer holds (0 without the class).
    pub fn large_room(&self) -> usize {
        self.1.as_ref().map_or(0, |l| l.shared.data_room as usize)
    }

    /// Allocates one buffer of the large class (None: no class, or dry).
    /// Context: the pool's owner thread.
    #[inline]
    pub fn alloc_large(&mut self) -> Option<Frame> {
        let mut one = ArrayVec::<Frame, 1>::new();
        self.1.as_mut()?.alloc_burst(&mut one, 1);
        one.pop()
    }

    /// A buffer for a frame of `len` bytes: the regular class when it fits,
    /// else the large class. None: too long for either, or the class is dry
    /// (tell them apart with [`large_room`](Self::large_room)).
    /// Context: the pool's owner thread.
    #[inline]
    pub fn alloc_for(&mut self, len: usize) -> Option<Frame> {
        if len <= self.data_room() {
            self.alloc()
        } else if len <= self.large_room() {
            self.alloc_large()
        } else {
            None
        }
    }

    /// Largest packet a buffer holds with the default data offset.
    pub fn data_room(&self) -> usize {
        match &self.0 {
            PoolKind::Native(p) => p.shared.data_room as usize,
            #[cfg(feature = "dpdk")]
            PoolKind::Mbuf(m) => m.data_room() as usize,
        }
    }

    /// Allocates up to `n` frames, appending them to `out` (bounded by its
    /// spare capacity). Returns how many were allocated; fewer than asked
    /// means the pool ran dry (the caller counts `rx_nombuf`).
    /// Context: the pool's owner thread. No locks, no allocation.
    #[inline]
    pub fn alloc_burst<const N: usize>(&mut self, out: &mut ArrayVec<Frame, N>, n: usize) -> usize {
        match &mut self.0 {
            PoolKind::Native(p) => p.alloc_burst(out, n),
            #[cfg(feature = "dpdk")]
            PoolKind::Mbuf(m) => mbuf_alloc_burst(m, out, n),
        }
    }

    /// Returns frames to the pool from its owner: this pool's frames go to
    /// the owner's stash (no shared write), any other frames to their own
    /// pool. Empties `frames`.
    /// Context: the pool's owner thread.
    #[inline]
    pub fn recycle_burst<const N: usize>(&mut self, frames: &mut ArrayVec<Frame, N>) {
        match &mut self.0 {
            PoolKind::Native(p) => p.recycle_burst(frames),
            // The mempool's per-lcore cache is DPDK's stash.
            #[cfg(feature = "dpdk")]
            PoolKind::Mbuf(_) => free_burst(frames),
        }
    }

    /// Allocates one frame.
    pub fn alloc(&mut self) -> Option<Frame> {
        let mut one = ArrayVec::<Frame, 1>::new();
        self.alloc_burst(&mut one, 1);
        one.pop()
    }
}

#[cfg(feature = "dpdk")]
#[inline]
fn mbuf_alloc_burst<const N: usize>(mp: &Mempool, out: &mut ArrayVec<Frame, N>, n: usize) -> usize {
    let want = n.min(out.remaining_capacity());
    let mut raw = [None::<Mbuf>; N];
    // All or nothing; when the pool is nearly dry, take what is left one by
    // one so a partial burst still goes out.
    let got = if mp.alloc_bulk(&mut raw[..want]) {
        want
    } else {
        let mut k = 0;
        while k < want && mp.alloc_bulk(&mut raw[k..k + 1]) {
            k += 1;
        }
        k
    };
    for m in raw[..got].iter().flatten() {
        // SAFETY: just allocated: this thread owns it; one segment.
        out.push(unsafe { Frame::from_mbuf(*m) });
    }
    got
}

impl NativePool {
    /// Allocates a pool of `n` buffers with `headroom` bytes in front of
    /// `data_room` bytes of packet data each.
    pub fn new(name: &str, n: u32, headroom: u16, data_room: u16) -> Result<Self, FrameError> {
        const MAX_BUFFERS: u32 = 1 << 24;
        if n == 0 || n > MAX_BUFFERS {
            return Err(FrameError::PoolSize {
                name: name.into(),
                n,
                max: MAX_BUFFERS,
            });
        }
        let buf_len = headroom as usize + data_room as usize;
        if !(64..=u16::MAX as usize).contains(&buf_len) {
            return Err(FrameError::BufSize {
                name: name.into(),
                headroom,
                data_room,
            });
        }
        let slot_size = (HDR_SIZE + buf_len).next_multiple_of(64);
        let bytes = slot_size * n as usize;
        let oom = || FrameError::OutOfMemory {
            name: name.into(),
            bytes,
            n,
        };
        let layout = Layout::from_size_align(bytes, 64).map_err(|_| oom())?;
        // SAFETY: layout has non-zero size (n >= 1, slot_size >= 128).
        let base = NonNull::new(unsafe { alloc::alloc_zeroed(layout) }).ok_or_else(oom)?;
        let (prod, cons) = ring::mpsc::<u32>(n).expect("n was checked to be within ring limits");
        let shared = Arc::new(PoolShared {
            name: name.into(),
            base,
            layout,
            slot_size,
            n,
            headroom,
            data_room,
            free: prod,
            stashed: AtomicU32::new(0),
        });
        for idx in 0..n {
            let hdr = shared.slot_hdr(idx);
            // SAFETY: hdr points at slot idx's header inside the fresh arena;
            // no Frame exists yet, so this thread has the only access.
            unsafe {
                hdr.as_ptr().write(FrameHdr {
                    pool: Arc::as_ptr(&shared),
                    timestamp_ns: 0,
                    idx,
                    rss_hash: 0,
                    data_off: headroom,
                    data_len: 0,
                    buf_len: buf_len as u16,
                    port: 0,
                    queue: 0,
                    offload: Offload::default(),
                    meta_len: 0,
                })
            };
        }
        // Fill the free list.
        let mut batch = ArrayVec::<u32, 64>::new();
        for idx in 0..n {
            batch.push(idx);
            if batch.is_full() || idx == n - 1 {
                let moved = shared.free.enqueue_burst(&mut batch);
                debug_assert!(batch.is_empty() && moved > 0);
            }
        }
        Ok(Self {
            shared,
            free: cons,
            stash: ArrayVec::new(),
        })
    }

    /// Allocates up to `n` frames, appending them to `out` (bounded by its
    /// spare capacity). Returns how many were allocated; fewer than asked
    /// means the pool ran dry (the caller counts `rx_nombuf`).
    /// Context: the pool's owner thread. No locks, no allocation.
    #[inline]
    pub fn alloc_burst<const N: usize>(&mut self, out: &mut ArrayVec<Frame, N>, n: usize) -> usize {
        let want = n.min(out.remaining_capacity());
        let mut idx = ArrayVec::<u32, N>::new();
        // The owner's stash first (no shared access), then the ring.
        while idx.len() < want {
            match self.stash.pop() {
                Some(i) => idx.push(i),
                None => break,
            }
        }
        let from_stash = idx.len();
        if from_stash > 0 {
            self.publish_stash();
        }
        let got = from_stash + self.free.dequeue_up_to(&mut idx, want - from_stash);
        for i in idx {
            let hdr = self.shared.slot_hdr(i);
            // SAFETY: index i came off the free list, so no Frame owns slot i
            // and this thread has exclusive access to its header.
            unsafe {
                let h = &mut *hdr.as_ptr();
                h.data_off = self.shared.headroom;
                h.data_len = 0;
                h.port = 0;
                h.queue = 0;
                h.rss_hash = 0;
                h.timestamp_ns = 0;
                h.offload = Offload::default();
                h.meta_len = 0;
            }
            out.push(Frame { hdr });
        }
        got
    }

    /// Returns frames to the pool from its owner: this pool's frames go to
    /// the owner's stash (no shared write), any other pool's frames to
    /// their own free ring. Empties `frames`.
    /// Context: the pool's owner thread.
    #[inline]
    pub fn recycle_burst<const N: usize>(&mut self, frames: &mut ArrayVec<Frame, N>) {
        let me: *const PoolShared = Arc::as_ptr(&self.shared);
        let mut others = ArrayVec::<Frame, N>::new();
        for f in frames.drain(..) {
            if f.pool_ptr() != me {
                others.push(f);
                continue;
            }
            if self.stash.is_full() {
                self.spill_stash();
            }
            self.stash.push(f.hdr().idx);
            // The slot's ownership moved into the stash; skip Frame::drop.
            mem::forget(f);
        }
        self.publish_stash();
        if !others.is_empty() {
            free_burst(&mut others);
        }
    }

    /// Moves half the stash to the shared free ring.
    #[cold]
    fn spill_stash(&mut self) {
        let mut half = ArrayVec::<u32, STASH>::new();
        half.extend(self.stash.drain(STASH / 2..));
        let ok = self.shared.free.enqueue_bulk(&mut half);
        debug_assert!(
            ok,
            "free list of pool '{}' overflowed: double free",
            self.shared.name
        );
    }

    #[inline(always)]
    fn publish_stash(&self) {
        self.shared
            .stashed
            .store(self.stash.len() as u32, Ordering::Relaxed);
    }
}

impl Drop for NativePool {
    fn drop(&mut self) {
        let out = self.shared.in_use();
        if out != 0 {
            eprintln!(
                "cpumapd: pool '{}' dropped with {out} buffers still in use; leaking its arena instead of freeing it under them",
                self.shared.name
            );
            mem::forget(self.shared.clone());
        }
    }
}

/// One owned packet buffer. Dropping it returns it to its pool.
pub struct Frame {
    hdr: NonNull<FrameHdr>,
}

// SAFETY: a Frame is the unique owner of its slot (it came off the free list
// and goes back exactly once, in Drop or free_burst), so moving it to another
// thread moves exclusive access with it. The pool it points to is Sync.
unsafe impl Send for Frame {}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frame")
            .field("len", &self.len())
            .field("port", &self.port())
            .finish()
    }
}

/// A prefetch hint for the line holding `p` (nothing on other CPUs).
#[inline(always)]
fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is a hint: it never faults and reads nothing the
    // program sees, whatever the address; SSE is baseline on x86_64.
    unsafe {
        std::arch::x86_64::_mm_prefetch(p.cast::<i8>(), std::arch::x86_64::_MM_HINT_T0)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// With DPDK, a frame whose pointer has this bit set is an `rte_mbuf`
/// (mbufs and native headers are both 64-byte aligned, so the bit is free).
#[cfg(feature = "dpdk")]
const MBUF_TAG: usize = 1;

impl Frame {
    /// Wraps an mbuf the caller owns; the frame now owns it.
    ///
    /// A chained mbuf is accepted; `data()` is then its first segment (the
    /// DPDK ports hand the pipeline single-segment frames only).
    ///
    /// # Safety
    /// The caller owns `m` (it came from rx_burst or an allocation and is
    /// referenced nowhere else).
    #[cfg(feature = "dpdk")]
    #[inline(always)]
    pub unsafe fn from_mbuf(m: Mbuf) -> Frame {
        let tagged = m.as_raw().as_ptr().map_addr(|a| a | MBUF_TAG);
        // SAFETY: tagging a non-null pointer keeps it non-null.
        let hdr = unsafe { NonNull::new_unchecked(tagged.cast()) };
        Frame { hdr }
    }

    /// The mbuf behind this frame, if it is one.
    #[cfg(feature = "dpdk")]
    #[inline(always)]
    pub fn mbuf(&self) -> Option<Mbuf> {
        let p = self.hdr.as_ptr().cast::<u8>();
        if p.addr() & MBUF_TAG == 0 {
            return None;
        }
        // SAFETY: a tagged frame was made by from_mbuf from a live mbuf;
        // clearing the tag gives that pointer back.
        Some(unsafe { Mbuf::from_raw(NonNull::new_unchecked(p.map_addr(|a| a & !MBUF_TAG))) })
    }

    /// Gives up the mbuf (to a driver's tx_burst); a native frame comes
    /// back as `Err`.
    #[cfg(feature = "dpdk")]
    #[inline(always)]
    pub fn into_mbuf(self) -> Result<Mbuf, Frame> {
        match self.mbuf() {
            Some(m) => {
                mem::forget(self);
                Ok(m)
            }
            None => Err(self),
        }
    }

    /// Starts loading the frame's metadata line (its header, or the mbuf)
    /// into this CPU's cache: a hint that changes nothing else. A consumer
    /// of frames made on another lcore calls it a few frames ahead.
    #[inline(always)]
    pub fn prefetch_meta(&self) {
        prefetch(self.hdr.as_ptr().cast::<u8>().map_addr(|a| a & !1));
    }

    /// Starts loading the first line of the frame's data. It reads the
    /// metadata for the data's address, so call it some frames after
    /// [`prefetch_meta`](Self::prefetch_meta).
    #[inline(always)]
    pub fn prefetch_data(&self) {
        prefetch(self.data().as_ptr());
    }

    #[inline(always)]
    fn hdr(&self) -> &FrameHdr {
        // SAFETY: the header is initialised at pool creation and this Frame
        // owns the slot, so no other thread writes it. Callers are native
        // paths (mbuf frames branch off before reaching here).
        unsafe { self.hdr.as_ref() }
    }

    #[inline(always)]
    fn hdr_mut(&mut self) -> &mut FrameHdr {
        // SAFETY: as in hdr(); &mut self gives exclusive access.
        unsafe { self.hdr.as_mut() }
    }

    /// (buffer start, data offset, data length, buffer length).
    #[inline(always)]
    fn geometry(&self) -> (*mut u8, usize, usize, usize) {
        #[cfg(feature = "dpdk")]
        if let Some(m) = self.mbuf() {
            // SAFETY: this frame owns the mbuf.
            let ((off, len, buf_len), buf) = unsafe { (m.geometry(), m.buf()) };
            return (buf, off as usize, len as usize, buf_len as usize);
        }
        let h = self.hdr();
        // SAFETY: the buffer follows the 64-byte header inside the same slot.
        let buf = unsafe { self.hdr.as_ptr().cast::<u8>().add(HDR_SIZE) };
        (
            buf,
            h.data_off as usize,
            h.data_len as usize,
            h.buf_len as usize,
        )
    }

    /// Context: `off + len <= buf_len` (checked by every caller).
    #[inline(always)]
    fn set_geometry(&mut self, off: usize, len: usize) {
        #[cfg(feature = "dpdk")]
        if let Some(m) = self.mbuf() {
            // SAFETY: this frame owns the mbuf; bounds checked by the caller.
            unsafe { m.set_geometry(off as u16, len as u16) };
            return;
        }
        let h = self.hdr_mut();
        h.data_off = off as u16;
        h.data_len = len as u16;
    }

    #[inline(always)]
    fn shared(&self) -> &PoolShared {
        // SAFETY: the pool outlives its frames (Pool::drop leaks the shared
        // part while any frame is out).
        unsafe { &*self.hdr().pool }
    }

    /// The packet bytes.
    #[inline(always)]
    pub fn data(&self) -> &[u8] {
        let (buf, off, len, _) = self.geometry();
        // SAFETY: off + len <= buf_len is kept by every setter (and by the
        // driver for mbufs), so the range is inside this frame's buffer,
        // which this Frame owns.
        unsafe { std::slice::from_raw_parts(buf.add(off), len) }
    }

    /// The packet bytes, writable.
    #[inline(always)]
    pub fn data_mut(&mut self) -> &mut [u8] {
        let (buf, off, len, _) = self.geometry();
        // SAFETY: as in data(); &mut self gives exclusive access.
        unsafe { std::slice::from_raw_parts_mut(buf.add(off), len) }
    }

    #[inline(always)]
    /// Bytes of data.
    pub fn len(&self) -> usize {
        self.geometry().2
    }

    #[inline(always)]
    /// True for a frame with no data.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes available after the data offset.
    #[inline(always)]
    pub fn room(&self) -> usize {
        let (_, off, _, buf_len) = self.geometry();
        buf_len - off
    }

    /// Sets the packet length; new bytes keep whatever the buffer held.
    #[inline]
    pub fn set_len(&mut self, len: usize) -> Result<(), FrameError> {
        let (_, off, _, buf_len) = self.geometry();
        let room = buf_len - off;
        if len > room {
            return Err(FrameError::TooLong { len, room });
        }
        self.set_geometry(off, len);
        Ok(())
    }

    /// Replaces the packet with a copy of `bytes`.
    #[inline]
    pub fn copy_from(&mut self, bytes: &[u8]) -> Result<(), FrameError> {
        self.set_len(bytes.len())?;
        self.data_mut().copy_from_slice(bytes);
        Ok(())
    }

    /// Appends a copy of `bytes` to the packet (a multi-buffer packet's
    /// next fragment); unchanged when it does not fit.
    #[inline]
    pub fn append(&mut self, bytes: &[u8]) -> Result<(), FrameError> {
        let at = self.len();
        self.set_len(at + bytes.len())?;
        self.data_mut()[at..].copy_from_slice(bytes);
        Ok(())
    }

    /// Moves the start of the data by `delta` bytes (negative grows the
    /// packet into the headroom, like `bpf_xdp_adjust_head`).
    pub fn adjust_head(&mut self, delta: isize) -> Result<(), FrameError> {
        let (_, off, len, _) = self.geometry();
        let bad = || FrameError::BadAdjust {
            delta,
            headroom: off,
            len,
        };
        let (new_off, new_len) = (off as isize + delta, len as isize - delta);
        if new_off < 0 || new_len < 0 {
            return Err(bad());
        }
        self.set_geometry(new_off as usize, new_len as usize);
        // Metadata no longer sits just in front of the data.
        self.set_meta_len(0);
        Ok(())
    }

    /// What an XDP program sees: the buffer from its start (the headroom)
    /// to the end of the data, and the offset of the data in it.
    #[inline(always)]
    pub fn xdp_buffer(&mut self) -> (&mut [u8], usize) {
        let (buf, off, len, _) = self.geometry();
        // SAFETY: off + len <= buf_len (kept by every setter), so the range
        // is inside this frame's buffer; &mut self gives exclusive access.
        (
            unsafe { std::slice::from_raw_parts_mut(buf, off + len) },
            off,
        )
    }

    /// The whole buffer (headroom, data, tailroom), the data's offset and
    /// its length: what an XDP program may grow the data into.
    pub fn xdp_buffer_whole(&mut self) -> (&mut [u8], usize, usize) {
        let (buf, off, len, buf_len) = self.geometry();
        // SAFETY: buf_len bytes from buf are this frame's buffer (its slot
        // in the pool, or the mbuf's data room); &mut self gives exclusive
        // access.
        (
            unsafe { std::slice::from_raw_parts_mut(buf, buf_len) },
            off,
            len,
        )
    }

    /// Headroom in front of the data.
    pub fn headroom(&self) -> usize {
        self.geometry().1
    }

    /// Port the frame was received on.
    #[inline(always)]
    pub fn port(&self) -> u16 {
        #[cfg(feature = "dpdk")]
        if let Some(m) = self.mbuf() {
            // SAFETY: this frame owns the mbuf.
            return unsafe { m.port() };
        }
        self.hdr().port
    }

    /// Queue the frame was received on.
    #[inline(always)]
    pub fn queue(&self) -> u16 {
        #[cfg(feature = "dpdk")]
        if let Some(m) = self.mbuf() {
            // SAFETY: this frame owns the mbuf.
            return unsafe { m.queue() };
        }
        self.hdr().queue
    }

    /// RSS hash from the NIC (0 when none).
    #[inline(always)]
    pub fn rss_hash(&self) -> u32 {
        #[cfg(feature = "dpdk")]
        if let Some(m) = self.mbuf() {
            // SAFETY: this frame owns the mbuf.
            return unsafe { m.rss_hash() };
        }
        self.hdr().rss_hash
    }

    /// VLAN TCI the NIC stripped (0 when none; native ports keep VLAN tags
    /// in the data).
    #[inline(always)]
    pub fn vlan_tci(&self) -> u16 {
        #[cfg(feature = "dpdk")]
        if let Some(m) = self.mbuf() {
            // SAFETY: this frame owns the mbuf.
            return unsafe { m.vlan_tci() };
        }
        0
    }

    /// `RTE_PTYPE_*` bits the driver recognised (0 natively).
    #[inline(always)]
    pub fn packet_type(&self) -> u32 {
        #[cfg(feature = "dpdk")]
        if let Some(m) = self.mbuf() {
            // SAFETY: this frame owns the mbuf.
            return unsafe { m.packet_type() };
        }
        0
    }

    #[inline(always)]
    /// When the RX lcore received it (`--latency`; 0 unstamped).
    pub fn timestamp_ns(&self) -> u64 {
        #[cfg(feature = "dpdk")]
        if let Some(m) = self.mbuf() {
            // SAFETY: this frame owns the mbuf.
            return unsafe { m.timestamp_ns() };
        }
        self.hdr().timestamp_ns
    }

    /// Bytes of XDP metadata just in front of the data: what the RX
    /// program left with `bpf_xdp_adjust_meta`, which the remote program
    /// sees as `data_meta`, as the kernel's xdp_frame carries its metasize
    /// through a cpumap. Always 0 for DPDK mbufs (not carried there).
    #[inline(always)]
    pub fn meta_len(&self) -> usize {
        #[cfg(feature = "dpdk")]
        if self.mbuf().is_some() {
            return 0;
        }
        self.hdr().meta_len as usize
    }

    /// Sets [`Frame::meta_len`] (at most 32 and the headroom; ignored for
    /// DPDK mbufs).
    #[inline(always)]
    pub fn set_meta_len(&mut self, n: usize) {
        #[cfg(feature = "dpdk")]
        if self.mbuf().is_some() {
            return;
        }
        let room = self.headroom().min(32);
        self.hdr_mut().meta_len = n.min(room) as u8;
    }

    /// Records RX metadata (kept across the redirect, unlike the kernel's
    /// cpumap which rebuilds the skb without it).
    #[inline(always)]
    pub fn set_rx_meta(&mut self, port: u16, queue: u16, rss_hash: u32) {
        #[cfg(feature = "dpdk")]
        if let Some(m) = self.mbuf() {
            // SAFETY: this frame owns the mbuf.
            unsafe { m.set_rx_meta(port, queue, rss_hash) };
            return;
        }
        let h = self.hdr_mut();
        h.port = port;
        h.queue = queue;
        h.rss_hash = rss_hash;
    }

    #[inline(always)]
    /// Stamps the frame with its receive time (`--latency`).
    pub fn set_timestamp_ns(&mut self, ts: u64) {
        #[cfg(feature = "dpdk")]
        if let Some(m) = self.mbuf() {
            // SAFETY: this frame owns the mbuf.
            unsafe { m.set_timestamp_ns(ts) };
            return;
        }
        self.hdr_mut().timestamp_ns = ts;
    }

    /// The frame's offload metadata: checksum state and GSO, as a
    /// virtio-net header with offsets from the data start (empty for a
    /// plain frame, and for a frame whose data start moved past its L4
    /// header). DPDK mbufs report `DATA_VALID` when the NIC verified the L4
    /// checksum (`RTE_MBUF_F_RX_L4_CKSUM_GOOD`).
    #[inline]
    pub fn offload(&self) -> VnetHdr {
        #[cfg(feature = "dpdk")]
        if let Some(m) = self.mbuf() {
            // SAFETY: this frame owns the mbuf.
            return unsafe { m.offload() };
        }
        let h = self.hdr();
        let o = h.offload;
        if o.flags == 0 && o.gso_type == 0 {
            return VnetHdr::default();
        }
        let off = h.data_off;
        let at = |abs: u16| abs.checked_sub(off);
        let (Some(csum_start), Some(hdr_len)) = (at(o.csum_start), at(o.hdr_end)) else {
            return VnetHdr::default();
        };
        VnetHdr {
            flags: o.flags,
            gso_type: o.gso_type,
            hdr_len,
            gso_size: o.gso_size,
            csum_start,
            csum_offset: o.csum_offset,
        }
    }

    /// Records offload metadata (offsets from the current data start). An
    /// mbuf keeps only what its ol_flags can say (see [`offload`](Self::offload)).
    #[inline]
    pub fn set_offload(&mut self, v: VnetHdr) {
        #[cfg(feature = "dpdk")]
        if let Some(m) = self.mbuf() {
            // SAFETY: this frame owns the mbuf.
            unsafe { m.set_offload(&v) };
            return;
        }
        let h = self.hdr_mut();
        let off = h.data_off;
        h.offload = Offload {
            flags: v.flags,
            gso_type: v.gso_type,
            gso_size: v.gso_size,
            csum_start: off.saturating_add(v.csum_start),
            csum_offset: v.csum_offset,
            hdr_end: off.saturating_add(v.hdr_len),
        };
    }

    /// Puts a VLAN tag a driver moved out of the frame (AF_PACKET's
    /// `tp_vlan_tci`, DPDK's `RTE_MBUF_F_RX_VLAN_STRIPPED`) back in front of
    /// its EtherType, growing the frame into the headroom; offload offsets
    /// follow the bytes they point at. Fails (frame unchanged) without 4
    /// bytes of headroom or an Ethernet header.
    pub fn insert_vlan(&mut self, tpid: u16, tci: u16) -> Result<(), FrameError> {
        if self.len() < 12 {
            return Err(FrameError::TooLong {
                len: 12,
                room: self.len(),
            });
        }
        self.adjust_head(-4)?;
        let d = self.data_mut();
        d.copy_within(4..16, 0);
        d[12..14].copy_from_slice(&tpid.to_be_bytes());
        d[14..16].copy_from_slice(&tci.to_be_bytes());
        #[cfg(feature = "dpdk")]
        if let Some(m) = self.mbuf() {
            // SAFETY: this frame owns the mbuf.
            unsafe { m.clear_vlan_stripped() };
            return Ok(());
        }
        // The L3/L4 bytes did not move, so the buffer-relative offload
        // offsets still point at them (4 bytes further from the new start).
        Ok(())
    }

    /// Name of the pool this frame belongs to.
    pub fn pool_name(&self) -> &str {
        #[cfg(feature = "dpdk")]
        if self.mbuf().is_some() {
            return "mbuf";
        }
        &self.shared().name
    }

    /// Identity of the frame's pool, for grouping frees (mbufs: null, they
    /// are freed in bulk by DPDK whatever their pool).
    #[inline(always)]
    fn pool_ptr(&self) -> *const PoolShared {
        #[cfg(feature = "dpdk")]
        if self.mbuf().is_some() {
            return std::ptr::null();
        }
        self.hdr().pool
    }
}

impl Drop for Frame {
    #[inline]
    fn drop(&mut self) {
        #[cfg(feature = "dpdk")]
        if let Some(m) = self.mbuf() {
            // SAFETY: this frame owns the mbuf and is going away.
            unsafe { m.free() };
            return;
        }
        let idx = self.hdr().idx;
        // The free ring holds exactly n indices and this one is not in it,
        // so it always fits.
        let r = self.shared().free.enqueue_one(idx);
        debug_assert!(
            r.is_ok(),
            "free list of pool '{}' overflowed: double free",
            self.shared().name
        );
    }
}

/// Returns every frame in `frames` to its pool, one ring operation per run
/// of frames from the same pool (instead of one per frame).
/// Context: any thread.
#[inline]
pub fn free_burst<const N: usize>(frames: &mut ArrayVec<Frame, N>) {
    let mut idx = ArrayVec::<u32, N>::new();
    #[cfg(feature = "dpdk")]
    let mut mbufs = ArrayVec::<Mbuf, N>::new();
    let mut pool: *const PoolShared = std::ptr::null();
    for f in frames.drain(..) {
        #[cfg(feature = "dpdk")]
        if let Some(m) = f.mbuf() {
            mbufs.push(m);
            // Ownership moves into `mbufs`; skip Frame::drop.
            mem::forget(f);
            continue;
        }
        if f.pool_ptr() != pool && !idx.is_empty() {
            release_indices(pool, &mut idx);
        }
        pool = f.pool_ptr();
        idx.push(f.hdr().idx);
        // Ownership of the slot moves into `idx`; skip Frame::drop.
        mem::forget(f);
    }
    if !idx.is_empty() {
        release_indices(pool, &mut idx);
    }
    #[cfg(feature = "dpdk")]
    if !mbufs.is_empty() {
        // SAFETY: every mbuf came out of a frame we owned and forgot.
        unsafe { Mbuf::free_bulk(&mut mbufs) };
    }
}

fn release_indices<const N: usize>(pool: *const PoolShared, idx: &mut ArrayVec<u32, N>) {
    // SAFETY: `pool` was read from the header of a frame we owned a moment
    // ago; the pool outlives its frames (see Pool::drop).
    let shared = unsafe { &*pool };
    let ok = shared.free.enqueue_bulk(idx);
    debug_assert!(
        ok,
        "free list of pool '{}' overflowed: double free",
        shared.name
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Pool {
        fn native(&self) -> &NativePool {
            match &self.0 {
                PoolKind::Native(p) => p,
                #[cfg(feature = "dpdk")]
                PoolKind::Mbuf(_) => panic!("not a native pool"),
            }
        }
    }

    #[test]
    fn alloc_and_drop_return_every_buffer_exactly_once() {
        let mut pool = Pool::new("t", 16, DEFAULT_HEADROOM, 256).unwrap();
        let stats = pool.stats();
        let mut frames = ArrayVec::<Frame, 32>::new();
        assert_eq!(pool.alloc_burst(&mut frames, 32), 16, "pool of 16 gives 16");
        assert_eq!(stats.in_use(), 16);
        assert!(pool.alloc().is_none(), "dry pool gives nothing");
        let one = frames.pop().unwrap();
        free_burst(&mut frames);
        assert_eq!(stats.in_use(), 1);
        let t = std::thread::spawn(move || drop(one));
        t.join().unwrap();
        assert_eq!(stats.in_use(), 0);
        // All 16 come back out again: nothing was lost or duplicated.
        assert_eq!(pool.alloc_burst(&mut frames, 32), 16);
        let mut seen: Vec<u32> = frames.iter().map(|f| f.hdr().idx).collect();
        seen.sort();
        assert_eq!(seen, (0..16).collect::<Vec<_>>());
    }

    #[test]
    fn owner_recycling_stashes_and_reallocates_without_loss() {
        let mut a = Pool::new("a", 8, 64, 64).unwrap();
        let mut b = Pool::new("b", 8, 64, 64).unwrap();
        let mut frames = ArrayVec::<Frame, 16>::new();
        a.alloc_burst(&mut frames, 8);
        b.alloc_burst(&mut frames, 3);
        a.recycle_burst(&mut frames);
        assert!(frames.is_empty());
        assert_eq!(
            (a.in_use(), a.stats().in_use(), b.in_use()),
            (0, 0, 0),
            "b's frames went home too"
        );
        assert_eq!(a.native().stash.len(), 8, "a's own frames are stashed");
        assert_eq!(
            a.alloc_burst(&mut frames, 16),
            8,
            "stash first, nothing lost or duplicated"
        );
        let mut seen: Vec<u32> = frames.iter().map(|f| f.hdr().idx).collect();
        seen.sort();
        assert_eq!(seen, (0..8).collect::<Vec<_>>());
        free_burst(&mut frames);
        assert_eq!(a.in_use(), 0);
    }

    #[test]
    fn a_full_stash_spills_to_the_ring() {
        let n = (STASH + 64) as u32;
        let mut p = Pool::new("s", n, 64, 64).unwrap();
        let mut all = Vec::new();
        loop {
            let mut b = ArrayVec::<Frame, 32>::new();
            if p.alloc_burst(&mut b, 32) == 0 {
                break;
            }
            all.push(b);
        }
        assert_eq!(p.in_use(), n);
        for mut b in all {
            p.recycle_burst(&mut b);
        }
        assert_eq!(p.in_use(), 0);
        assert!(p.native().stash.len() <= STASH);
    }

    #[test]
    fn data_editing_respects_bounds() {
        let mut pool = Pool::new("t", 2, 64, 128).unwrap();
        let mut f = pool.alloc().unwrap();
        assert_eq!(f.room(), 128);
        f.copy_from(&[1, 2, 3]).unwrap();
        assert_eq!(f.data(), &[1, 2, 3]);
        assert_eq!(
            f.set_len(129),
            Err(FrameError::TooLong {
                len: 129,
                room: 128
            })
        );
        f.adjust_head(-4).unwrap();
        assert_eq!(f.len(), 7);
        assert_eq!(&f.data()[4..], &[1, 2, 3]);
        assert!(
            f.adjust_head(-61).is_err(),
            "only 60 bytes of headroom are left"
        );
        assert!(f.adjust_head(8).is_err(), "cannot shrink past the end");
        f.set_rx_meta(3, 1, 0xabcd);
        assert_eq!((f.port(), f.queue(), f.rss_hash()), (3, 1, 0xabcd));
    }

    #[test]
    fn frames_from_two_pools_go_home() {
        let mut a = Pool::new("a", 4, 64, 64).unwrap();
        let mut b = Pool::new("b", 4, 64, 64).unwrap();
        let mut frames = ArrayVec::<Frame, 8>::new();
        a.alloc_burst(&mut frames, 2);
        b.alloc_burst(&mut frames, 3);
        frames.swap(0, 4); // interleave pools
        free_burst(&mut frames);
        assert_eq!((a.in_use(), b.in_use()), (0, 0));
    }

    #[test]
    fn bad_pool_parameters_are_errors() {
        assert!(matches!(
            Pool::new("x", 0, 128, 2048),
            Err(FrameError::PoolSize { .. })
        ));
        assert!(matches!(
            Pool::new("x", 4, 0, 10),
            Err(FrameError::BufSize { .. })
        ));
        assert!(matches!(
            Pool::new("x", 4, 65535, 65535),
            Err(FrameError::BufSize { .. })
        ));
    }

    #[test]
    // It leaks the arena on purpose, which Miri's leak check reports.
    #[cfg_attr(miri, ignore)]
    fn dropping_a_pool_with_frames_out_leaks_instead_of_freeing() {
        let mut pool = Pool::new("leak", 2, 64, 64).unwrap();
        let mut f = pool.alloc().unwrap();
        drop(pool);
        // Still valid memory: writing and dropping must not crash.
        f.copy_from(&[9; 8]).unwrap();
        assert_eq!(f.data(), &[9; 8]);
    }
}
