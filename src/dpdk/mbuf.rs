//! `rte_mbuf` and `rte_mempool`: the DPDK side of [`crate::frame`].
//!
//! A [`Mbuf`] is a raw handle used by `Frame` (which owns it); its accessors
//! are `unsafe fn`s whose contract is "the caller owns this mbuf". The
//! metadata the mbuf has no field for (RX queue, timestamp) lives in a
//! registered dynamic field (`register_dynfield`): inside the mbuf's
//! second cache line, which allocation and free touch anyway, so stamping
//! it costs no extra cache miss (a private area after the mbuf would).

use std::ffi::CString;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{DpdkError, ffi, rte_error};

/// cpumapd's per-mbuf metadata, in the dynamic field.
#[repr(C)]
struct Meta {
    timestamp_ns: u64,
    queue: u16,
}

/// Offset of [`Meta`] in every mbuf; 0 until registered.
static META_OFF: AtomicUsize = AtomicUsize::new(0);

/// Registers the `cpumapd_meta` dynamic mbuf field (once per process, after
/// EAL init, before any pool is created).
pub(super) fn register_dynfield() -> Result<(), DpdkError> {
    let mut d = ffi::rte_mbuf_dynfield::default();
    for (dst, b) in d.name.iter_mut().zip(b"cpumapd_meta\0") {
        *dst = *b as std::ffi::c_char;
    }
    d.size = size_of::<Meta>();
    d.align = align_of::<Meta>();
    // SAFETY: d is a fully initialised descriptor with a NUL-terminated
    // name; EAL is initialised (caller).
    let off = unsafe { ffi::rte_mbuf_dynfield_register(&d) };
    if off < 0 {
        return Err(DpdkError::Eal(format!(
            "cannot register the cpumapd_meta mbuf field: {}",
            rte_error()
        )));
    }
    META_OFF.store(off as usize, Ordering::Relaxed);
    Ok(())
}

const RX_RSS_HASH: u64 = ffi::RTE_MBUF_F_RX_RSS_HASH as u64;
const RX_VLAN: u64 = ffi::RTE_MBUF_F_RX_VLAN as u64;
const RX_VLAN_STRIPPED: u64 = ffi::RTE_MBUF_F_RX_VLAN_STRIPPED as u64;
const RX_L4_CKSUM_MASK: u64 = ffi::RTE_MBUF_F_RX_L4_CKSUM_MASK as u64;
const RX_L4_CKSUM_GOOD: u64 = ffi::RTE_MBUF_F_RX_L4_CKSUM_GOOD as u64;
/// `ol_flags`: TCP segmentation asked of the driver.
pub const TX_TCP_SEG: u64 = ffi::RTE_MBUF_F_TX_TCP_SEG;
/// `ol_flags`: the packet to transmit is IPv4.
pub const TX_IPV4: u64 = ffi::RTE_MBUF_F_TX_IPV4;

/// A raw, copyable handle to one single-segment mbuf.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Mbuf(NonNull<ffi::rte_mbuf>);

impl Mbuf {
    /// # Safety
    /// `p` points at a live `rte_mbuf`.
    #[inline(always)]
    pub unsafe fn from_raw(p: NonNull<u8>) -> Self {
        Mbuf(p.cast())
    }

    /// The mbuf's address.
    #[inline(always)]
    pub fn as_raw(self) -> NonNull<u8> {
        self.0.cast()
    }

    #[inline(always)]
    unsafe fn m<'a>(self) -> &'a mut ffi::rte_mbuf {
        // SAFETY: caller owns the mbuf (every accessor's contract).
        unsafe { &mut *self.0.as_ptr() }
    }

    /// Start of the buffer (data_off counts from here).
    /// # Safety
    /// The caller owns the mbuf.
    #[inline(always)]
    pub unsafe fn buf(self) -> *mut u8 {
        // SAFETY: the caller owns the mbuf (this fn's contract).
        unsafe { self.m().buf_addr.cast() }
    }

    /// (data_off, data_len, buf_len).
    /// # Safety
    /// The caller owns the mbuf.
    #[inline(always)]
    pub unsafe fn geometry(self) -> (u16, u16, u16) {
        // SAFETY: the caller owns the mbuf (this fn's contract).
        let m = unsafe { self.m() };
        (m.data_off, m.data_len, m.buf_len)
    }

    /// Sets data_off and the (single-segment) length.
    /// # Safety
    /// The caller owns the mbuf and `off + len <= buf_len`.
    #[inline(always)]
    pub unsafe fn set_geometry(self, off: u16, len: u16) {
        // SAFETY: the caller owns the mbuf (this fn's contract).
        let m = unsafe { self.m() };
        m.data_off = off;
        m.data_len = len;
        m.pkt_len = len as u32;
    }

    /// # Safety
    /// The caller owns the mbuf.
    #[inline(always)]
    pub unsafe fn nb_segs(self) -> u16 {
        // SAFETY: the caller owns the mbuf (this fn's contract).
        unsafe { self.m().nb_segs }
    }

    /// # Safety
    /// The caller owns the mbuf.
    #[inline(always)]
    pub unsafe fn port(self) -> u16 {
        // SAFETY: the caller owns the mbuf (this fn's contract).
        unsafe { self.m().port }
    }

    /// RSS hash when the NIC computed one, else 0.
    /// # Safety
    /// The caller owns the mbuf.
    #[inline(always)]
    pub unsafe fn rss_hash(self) -> u32 {
        // SAFETY: the caller owns the mbuf (this fn's contract).
        let m = unsafe { self.m() };
        if m.ol_flags & RX_RSS_HASH != 0 {
            // SAFETY: RX_RSS_HASH says the union holds the RSS hash.
            unsafe { m.__bindgen_anon_2.hash.rss }
        } else {
            0
        }
    }

    /// VLAN TCI the NIC stripped, else 0.
    /// # Safety
    /// The caller owns the mbuf.
    #[inline(always)]
    pub unsafe fn vlan_tci(self) -> u16 {
        // SAFETY: the caller owns the mbuf (this fn's contract).
        let m = unsafe { self.m() };
        if m.ol_flags & RX_VLAN != 0 {
            m.vlan_tci
        } else {
            0
        }
    }

    /// The offload metadata an mbuf's RX flags carry: `DATA_VALID` when
    /// the NIC verified the L4 checksum.
    /// # Safety
    /// The caller owns the mbuf.
    #[inline(always)]
    pub unsafe fn offload(self) -> crate::wire::vnet::VnetHdr {
        // SAFETY: the caller owns the mbuf (this fn's contract).
        let m = unsafe { self.m() };
        let mut v = crate::wire::vnet::VnetHdr::default();
        if m.ol_flags & RX_L4_CKSUM_MASK == RX_L4_CKSUM_GOOD {
            v.flags = crate::wire::vnet::F_DATA_VALID;
        }
        v
    }

    /// Records offload metadata: `DATA_VALID` as the L4-checksum-good RX
    /// flag (what the DPDK exception devices read); partial checksums and
    /// GSO have no RX-side mbuf form and are dropped from the metadata.
    /// # Safety
    /// The caller owns the mbuf.
    #[inline(always)]
    pub unsafe fn set_offload(self, v: &crate::wire::vnet::VnetHdr) {
        // SAFETY: the caller owns the mbuf (this fn's contract).
        let m = unsafe { self.m() };
        m.ol_flags &= !RX_L4_CKSUM_MASK;
        if v.flags & crate::wire::vnet::F_DATA_VALID != 0 {
            m.ol_flags |= RX_L4_CKSUM_GOOD;
        }
    }

    /// Asks the transmitting driver to fill in the TCP (`tcp`) or UDP
    /// checksum: the L2, L3 and L4 header lengths and the TX flags. The
    /// field must hold the pseudo-header sum, as a partial checksum does.
    /// # Safety
    /// The caller owns the mbuf.
    #[inline(always)]
    pub unsafe fn request_l4_checksum(self, lens: [u16; 3], ipv6: bool, tcp: bool) {
        // SAFETY: the caller owns the mbuf; the shim writes its fields.
        unsafe {
            ffi::cpumapd_mbuf_tx_l4_cksum(
                self.0.as_ptr(),
                lens[0],
                lens[1],
                lens[2],
                ipv6 as i32,
                tcp as i32,
            )
        };
    }

    /// Appends `tail` to this mbuf's chain, without its first `skip`
    /// bytes (a GRO member's headers, the head keeps its own). On error
    /// (`skip` past tail's first segment, too many segments) neither mbuf
    /// changes and the caller still owns `tail`.
    /// # Safety
    /// The caller owns both mbufs; on success the head owns `tail`.
    #[inline(always)]
    pub unsafe fn chain_payload(self, tail: Mbuf, skip: u16) -> Result<(), i32> {
        // SAFETY: both are live mbufs the caller owns.
        let rc = unsafe { ffi::cpumapd_mbuf_chain_payload(self.0.as_ptr(), tail.0.as_ptr(), skip) };
        if rc == 0 { Ok(()) } else { Err(-rc) }
    }

    /// Asks the transmitting driver to cut this (chained) TCP super-frame
    /// into segments of `mss` bytes: the L2, L3 and L4 header lengths and
    /// the TX flags. The TCP checksum field must hold the pseudo-header
    /// sum without the length (DPDK's convention for TSO).
    /// # Safety
    /// The caller owns the mbuf.
    #[inline(always)]
    pub unsafe fn request_tso(self, lens: [u16; 3], ipv6: bool, mss: u16) {
        // SAFETY: the caller owns the mbuf; the shim writes its fields.
        unsafe {
            ffi::cpumapd_mbuf_tx_tso(self.0.as_ptr(), lens[0], lens[1], lens[2], ipv6 as i32, mss)
        };
    }

    /// The segment size [`request_tso`](Self::request_tso) set.
    /// # Safety
    /// The caller owns the mbuf.
    pub unsafe fn tso_segsz(self) -> u16 {
        // SAFETY: the caller owns the mbuf.
        unsafe { ffi::cpumapd_mbuf_tso_segsz(self.0.as_ptr()) }
    }

    /// The TX offload flags (`ol_flags`).
    /// # Safety
    /// The caller owns the mbuf.
    pub unsafe fn ol_flags(self) -> u64 {
        // SAFETY: the caller owns the mbuf (this fn's contract).
        unsafe { self.m().ol_flags }
    }

    /// The whole packet, every segment of the chain, copied out (tests and
    /// tools; allocates).
    /// # Safety
    /// The caller owns the mbuf.
    pub unsafe fn to_vec(self) -> Vec<u8> {
        // SAFETY: the caller owns the mbuf (this fn's contract).
        let len = unsafe { self.m().pkt_len };
        let mut v = vec![0u8; len as usize];
        // SAFETY: v has len bytes; rte_pktmbuf_read copies into it when
        // the bytes span segments, else points into the first one.
        let p = unsafe { ffi::cpumapd_mbuf_read(self.0.as_ptr(), 0, len, v.as_mut_ptr().cast()) };
        if !p.is_null() && p != v.as_ptr().cast() {
            // SAFETY: contiguous in the first segment: len bytes at p.
            v.copy_from_slice(unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len as usize) });
        }
        v
    }

    /// Forgets a stripped VLAN tag (it was put back in the data).
    /// # Safety
    /// The caller owns the mbuf.
    #[inline(always)]
    pub unsafe fn clear_vlan_stripped(self) {
        // SAFETY: the caller owns the mbuf (this fn's contract).
        let m = unsafe { self.m() };
        m.ol_flags &= !(RX_VLAN | RX_VLAN_STRIPPED);
        m.vlan_tci = 0;
    }

    /// True when the driver stripped the VLAN tag into `vlan_tci`.
    /// # Safety
    /// The caller owns the mbuf.
    #[inline(always)]
    pub unsafe fn vlan_stripped(self) -> bool {
        // SAFETY: the caller owns the mbuf (this fn's contract).
        unsafe { self.m() }.ol_flags & RX_VLAN_STRIPPED != 0
    }

    /// `RTE_PTYPE_*` bits the driver recognised.
    /// # Safety
    /// The caller owns the mbuf.
    #[inline(always)]
    pub unsafe fn packet_type(self) -> u32 {
        // SAFETY: packet_type is the u32 view of the union, always valid.
        unsafe { self.m().__bindgen_anon_1.packet_type }
    }

    #[inline(always)]
    unsafe fn meta(self) -> Option<&'static mut Meta> {
        let off = META_OFF.load(Ordering::Relaxed);
        if off == 0 {
            return None;
        }
        // SAFETY: the registered field lies inside every rte_mbuf at `off`,
        // aligned for Meta (rte_mbuf_dynfield_register checked both); the
        // caller owns the mbuf.
        Some(unsafe { &mut *self.0.as_ptr().cast::<u8>().add(off).cast::<Meta>() })
    }

    /// # Safety
    /// The caller owns the mbuf.
    #[inline(always)]
    pub unsafe fn queue(self) -> u16 {
        // SAFETY: the caller owns the mbuf (this fn's contract).
        unsafe { self.meta() }.map_or(0, |p| p.queue)
    }

    /// # Safety
    /// The caller owns the mbuf.
    #[inline(always)]
    pub unsafe fn timestamp_ns(self) -> u64 {
        // SAFETY: the caller owns the mbuf (this fn's contract).
        unsafe { self.meta() }.map_or(0, |p| p.timestamp_ns)
    }

    /// # Safety
    /// The caller owns the mbuf.
    #[inline(always)]
    pub unsafe fn set_rx_meta(self, port: u16, queue: u16, rss: u32) {
        // SAFETY: the caller owns the mbuf (this fn's contract).
        let m = unsafe { self.m() };
        m.port = port;
        m.__bindgen_anon_2.hash.rss = rss;
        if rss != 0 {
            m.ol_flags |= RX_RSS_HASH;
        }
        // SAFETY: the caller owns the mbuf (this fn's contract).
        if let Some(p) = unsafe { self.meta() } {
            p.queue = queue;
        }
    }

    /// Stamps only the RX queue (the driver set port and hash).
    /// # Safety
    /// The caller owns the mbuf.
    #[inline(always)]
    pub unsafe fn set_queue(self, queue: u16) {
        // SAFETY: the caller owns the mbuf (this fn's contract).
        if let Some(p) = unsafe { self.meta() } {
            p.queue = queue;
            p.timestamp_ns = 0;
        }
    }

    /// # Safety
    /// The caller owns the mbuf.
    #[inline(always)]
    pub unsafe fn set_timestamp_ns(self, ts: u64) {
        // SAFETY: the caller owns the mbuf (this fn's contract).
        if let Some(p) = unsafe { self.meta() } {
            p.timestamp_ns = ts;
        }
    }

    /// Clears cpumapd's metadata after `rte_pktmbuf_alloc`'s reset.
    /// # Safety
    /// The caller owns the mbuf.
    #[inline(always)]
    pub unsafe fn clear_meta(self) {
        // SAFETY: the caller owns the mbuf (this fn's contract).
        unsafe { self.set_queue(0) }
    }

    /// Returns the mbuf to its pool.
    /// # Safety
    /// The caller owns the mbuf and gives it up.
    #[inline(always)]
    pub unsafe fn free(self) {
        // SAFETY: the caller owns the mbuf and gives it up (this fn's contract).
        unsafe { ffi::cpumapd_pktmbuf_free(self.0.as_ptr()) }
    }

    /// Returns many mbufs with one call (`rte_pktmbuf_free_bulk`).
    /// # Safety
    /// The caller owns every mbuf in `ms` and gives them up.
    #[inline]
    pub unsafe fn free_bulk(ms: &mut [Mbuf]) {
        // SAFETY: Mbuf is a transparent NonNull<rte_mbuf>, so the slice is
        // an array of `rte_mbuf *`.
        unsafe { ffi::rte_pktmbuf_free_bulk(ms.as_mut_ptr().cast(), ms.len() as u32) }
    }
}

/// An `rte_pktmbuf_pool_create` pool. Thread-safe (DPDK mempools are
/// multi-producer/multi-consumer with a per-lcore cache).
pub struct Mempool {
    ptr: NonNull<ffi::rte_mempool>,
    name: String,
    n: u32,
    headroom: u16,
    data_room: u16,
}

// SAFETY: an rte_mempool is built for concurrent get/put from any thread
// (per-lcore caches are indexed by rte_lcore_id; non-EAL threads use the
// common pool); the pointer stays valid until Drop.
unsafe impl Send for Mempool {}
// SAFETY: as above.
unsafe impl Sync for Mempool {}

impl std::fmt::Debug for Mempool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mempool")
            .field("name", &self.name)
            .field("n", &self.n)
            .finish()
    }
}

/// Mbufs each lcore keeps in its mempool cache.
pub const CACHE_SIZE: u32 = super::MEMPOOL_CACHE;

impl Mempool {
    /// `n` mbufs of `headroom + data_room` bytes on NUMA `socket`.
    pub fn new(
        name: &str,
        n: u32,
        headroom: u16,
        data_room: u16,
        socket: i32,
    ) -> Result<Mempool, DpdkError> {
        let cname = CString::new(name).map_err(|_| DpdkError::Mempool {
            name: name.into(),
            why: "name contains NUL".into(),
        })?;
        let room = ffi::RTE_PKTMBUF_HEADROOM + data_room as u32;
        if room > u16::MAX as u32 || headroom as u32 > ffi::RTE_PKTMBUF_HEADROOM {
            return Err(DpdkError::Mempool {
                name: name.into(),
                why: format!(
                    "headroom {headroom} (at most {}) + data room {data_room} does not fit an mbuf",
                    ffi::RTE_PKTMBUF_HEADROOM
                ),
            });
        }
        let cache = CACHE_SIZE.min(n / 4).min(512);
        // SAFETY: EAL is initialised (a Mempool is built only after
        // Eal::init); the name is NUL-terminated.
        let p = unsafe {
            ffi::rte_pktmbuf_pool_create(cname.as_ptr(), n, cache, 0, room as u16, socket)
        };
        let ptr = NonNull::new(p).ok_or_else(|| DpdkError::Mempool {
            name: name.into(),
            why: format!(
                "rte_pktmbuf_pool_create({n} mbufs of {room} bytes on socket {socket}): {} (hugepages reserved? try fewer --pool-size or --no-huge for tests)",
                rte_error()
            ),
        })?;
        Ok(Mempool {
            ptr,
            name: name.into(),
            n,
            headroom,
            data_room,
        })
    }

    /// The mempool's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Mbufs in the mempool.
    pub fn capacity(&self) -> u32 {
        self.n
    }

    /// Packet bytes per mbuf after the headroom.
    pub fn data_room(&self) -> u16 {
        self.data_room
    }

    pub(crate) fn as_ptr(&self) -> *mut ffi::rte_mempool {
        self.ptr.as_ptr()
    }

    /// Mbufs in the pool, lcore caches included (`rte_mempool_avail_count`).
    pub fn avail(&self) -> u32 {
        // SAFETY: ptr is a live mempool.
        unsafe { ffi::rte_mempool_avail_count(self.ptr.as_ptr()) }
    }

    /// Mbufs out of the mempool (those in lcore caches count as available).
    pub fn in_use(&self) -> u32 {
        self.n - self.avail()
    }

    /// Allocates exactly `out.len()` mbufs or none (`rte_pktmbuf_alloc_bulk`).
    /// Each comes reset (data_off = headroom, length 0, one segment).
    #[inline]
    pub fn alloc_bulk(&self, out: &mut [Option<Mbuf>]) -> bool {
        // SAFETY: Option<Mbuf> has NonNull's niche, so the slice is an array
        // of `rte_mbuf *` the call fills; ptr is a live mempool.
        let rc = unsafe {
            ffi::cpumapd_pktmbuf_alloc_bulk(
                self.ptr.as_ptr(),
                out.as_mut_ptr().cast(),
                out.len() as u32,
            )
        };
        if rc != 0 {
            return false;
        }
        for m in out.iter().flatten() {
            // SAFETY: just allocated: this thread owns it.
            unsafe {
                m.clear_meta();
                if self.headroom as u32 != ffi::RTE_PKTMBUF_HEADROOM {
                    m.set_geometry(self.headroom, 0);
                }
            }
        }
        true
    }
}

impl Drop for Mempool {
    fn drop(&mut self) {
        let out = self.in_use();
        if out != 0 {
            eprintln!(
                "cpumapd: mempool '{}' dropped with {out} mbufs still in use; leaking it instead of freeing it under them",
                self.name
            );
            return;
        }
        // SAFETY: no mbuf of this pool is outstanding and the pool is not
        // attached to a running queue (ports are closed before pools drop).
        unsafe { ffi::rte_mempool_free(self.ptr.as_ptr()) };
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::{Arc, OnceLock};

    use arrayvec::ArrayVec;

    use super::*;
    use crate::dpdk::Eal;
    use crate::frame::{Frame, Pool, free_burst};

    /// The EAL, once per test process: no hugepages, no PCI, no files.
    pub(crate) fn eal() -> &'static Eal {
        static EAL: OnceLock<Eal> = OnceLock::new();
        EAL.get_or_init(|| {
            let args: Vec<String> = format!(
                "--no-huge --no-pci --no-shconf -m 128 --log-level 1 --lcores 0@0 --file-prefix cpumapd-unit-{}",
                std::process::id()
            )
            .split_whitespace()
            .map(String::from)
            .collect();
            Eal::init(&args).expect("EAL")
        })
    }

    #[test]
    fn frames_over_mbufs_keep_their_metadata_across_threads_and_all_return() {
        let _ = eal();
        let mp = Arc::new(Mempool::new("unit_frames", 256, 128, 2048, -1).unwrap());
        let mut pool = Pool::from_mempool(mp.clone());
        let mut burst = ArrayVec::<Frame, 32>::new();
        assert_eq!(pool.alloc_burst(&mut burst, 32), 32);
        assert_eq!(mp.in_use(), 32);
        for (i, f) in burst.iter_mut().enumerate() {
            assert!(f.mbuf().is_some(), "an mbuf pool gives mbuf frames");
            assert_eq!((f.len(), f.headroom(), f.queue()), (0, 128, 0));
            f.copy_from(&[i as u8; 60]).unwrap();
            f.set_rx_meta(3, i as u16, 0xdead_0000 + i as u32);
            f.set_timestamp_ns(1000 + i as u64);
        }
        // Ownership moves to another thread (a target) with the metadata.
        let t = std::thread::spawn(move || {
            for (i, f) in burst.iter_mut().enumerate() {
                assert_eq!(f.data(), &[i as u8; 60][..]);
                assert_eq!(f.port(), 3);
                assert_eq!(f.queue(), i as u16);
                assert_eq!(f.rss_hash(), 0xdead_0000 + i as u32);
                assert_eq!(f.timestamp_ns(), 1000 + i as u64);
                assert_eq!(f.vlan_tci(), 0, "no VLAN stripped");
                // adjust_head: into the headroom and back, like XDP.
                f.adjust_head(-14).unwrap();
                assert_eq!((f.len(), f.headroom()), (74, 114));
                f.adjust_head(14).unwrap();
                assert!(f.adjust_head(-200).is_err(), "beyond the headroom");
                assert!(f.set_len(1 << 15).is_err(), "beyond the room");
            }
            let one = burst.pop().unwrap();
            free_burst(&mut burst);
            drop(one);
        });
        t.join().unwrap();
        assert_eq!(mp.in_use(), 0, "every mbuf back exactly once");
        assert_eq!(pool.stats().in_use(), 0);
        drop(pool);
    }

    #[test]
    fn a_pool_asked_for_more_than_fits_says_why() {
        let _ = eal();
        let e = Mempool::new("unit_big", 1 << 22, 128, 2048, -1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("rte_pktmbuf_pool_create"), "{e}");
        let e = Mempool::new("unit_room", 64, 128, 65500, -1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not fit an mbuf"), "{e}");
    }
}
