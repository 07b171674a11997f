//! `net_af_xdp`: a Linux interface's queues as a port, through AF_XDP
//! sockets (DPDK net_af_xdp's kvargs: `iface`, `start_queue`,
//! `queue_count`, `force_copy`).
//!
//! # General idea
//!
//! At open, cpumapd loads a six-instruction XDP program that redirects every
//! frame to the XSKMAP entry of its RX queue (falling back to XDP_PASS when
//! the queue has no socket: `bpf_redirect_map`'s low flag bits), attaches it
//! to the interface with a BPF link (native mode, else generic), and binds
//! one AF_XDP socket per queue, zero-copy where the driver supports it, else
//! copy mode (veth). The link and the map live as long as any queue: when
//! cpumapd exits, or crashes, the kernel detaches the program by itself.
//!
//! Each queue owns its UMEM ([`CHUNKS`] chunks of 2 KiB): the first half is kept
//! in the fill ring for RX, the second half is a free stack for TX. RX
//! copies each frame into a pool buffer and gives the chunk straight back to
//! the fill ring (so RX never runs dry while the pool has buffers); TX copies
//! into a free chunk, posts it on the TX ring and kicks the kernel with one
//! `sendto`, and reaps the completion ring into the free stack. The four
//! rings are single-producer single-consumer between this lcore and the
//! kernel:
//!
//! * X1: Acquire load of a kernel-produced ring's producer (RX, completion),
//!   pairing with the kernel's smp_store_release of it; X2: Release store of
//!   our consumer index after the last read of the descriptors.
//! * X3: Acquire load of a kernel-consumed ring's consumer (fill, TX) before
//!   overwriting slots; X4: Release store of our producer index after the
//!   descriptors are written.
//!
//! Drops in the kernel (fill ring empty, RX ring full) are read from
//! XDP_STATISTICS and counted as `imissed`.
//!
//! Why raw system calls and not xsk-rs/libxdp: the UAPI is four rings and
//! three bpf() commands; the libraries would add a C build of libbpf and
//! libxdp for that.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use super::egress::{self, Egress};
use super::{Burst, PortError, PortQueue, VdevSpec, bpf, netdev};
use crate::bpf_abi::{helper, map_type, xdp};
use crate::counters::PortQueueCounters;
use crate::frame::{Frame, LARGE_DATA_ROOM, Pool, free_burst};
use crate::ids::PortId;

/// UMEM chunks per queue, and their size (32 MiB per queue).
const CHUNKS: u32 = 16384;
const CHUNK: u32 = 2048;
/// Descriptors in each of the four rings. Deep rings let an lcore that
/// shares its CPU (with the sender, or with its target) be away for a
/// scheduler slice without the kernel dropping: 8192 frames is 1.6 ms at
/// 5 Mpps.
const NDESC: u32 = 8192;
/// Polls between XDP_STATISTICS reads.
const STATS_EVERY: u32 = 1024;
/// Headroom the kernel keeps in front of a frame in each chunk (copy mode):
/// a frame longer than `CHUNK - XDP_PACKET_HEADROOM` takes several chunks.
const XDP_PACKET_HEADROOM: u32 = 256;
/// Descriptors one packet may take on transmit (the kernel's
/// MAX_SKB_FRAGS + 1).
const MAX_TX_DESCS: usize = 18;

/// The XSKMAP, the redirect program and the link attaching it. Shared by
/// the queues of a port; the last one dropped detaches the program.
struct XdpProgram {
    map: OwnedFd,
    _prog: OwnedFd,
    _link: OwnedFd,
    /// "native" or "generic".
    mode: &'static str,
}

impl XdpProgram {
    /// `frags`: the interface's frames need several chunks (multi-buffer:
    /// the program says it handles fragments, the sockets bind with
    /// XDP_USE_SG).
    fn load(ifindex: u32, queues: u32, frags: bool, egress: Egress) -> io::Result<Self> {
        let map = bpf::map_create(map_type::XSKMAP, 4, 4, queues)?;
        // r2 = ctx->rx_queue_index; r1 = &xsks_map; r3 = XDP_PASS (on a
        // miss); return bpf_redirect_map(r1, r2, r3).
        let [ld_map, ld_map_hi] = bpf::ld_map_fd(1, &map);
        let redirect = [
            bpf::insn(0x61, 2, 1, 16, 0), // ldxw r2, [r1 + 16]
            ld_map,
            ld_map_hi,
            bpf::insn(0xb7, 3, 0, 0, xdp::PASS as i32), // mov r3, XDP_PASS
            bpf::insn(0x85, 0, 0, 0, helper::REDIRECT_MAP),
            bpf::insn(0x95, 0, 0, 0, 0), // exit
        ];
        // egress=kernel: ARP and neighbour discovery to the stack first.
        let prog = match egress {
            Egress::Cpumapd => redirect.to_vec(),
            Egress::Kernel => egress::xdp_program(&redirect, xdp::PASS as i32),
        };
        let flags = if frags { bpf::F_XDP_HAS_FRAGS } else { 0 };
        let prog = bpf::prog_load_flags(bpf::PROG_TYPE_XDP, 0, &prog, "cpumapd_xsk", flags)?;
        let (link, mode) = bpf::link_xdp(&prog, ifindex)?;
        Ok(Self {
            map,
            _prog: prog,
            _link: link,
            mode,
        })
    }

    fn insert(&self, queue: u32, xsk: &OwnedFd) -> io::Result<()> {
        let value = xsk.as_raw_fd() as u32;
        bpf::map_update(&self.map, &queue.to_ne_bytes(), &value.to_ne_bytes())
    }
}

/// An mmap'ed region, unmapped on drop.
struct Mapping {
    base: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(len: usize, fd: Option<&OwnedFd>, offset: u64) -> io::Result<Self> {
        let (flags, raw) = match fd {
            Some(f) => (libc::MAP_SHARED | libc::MAP_POPULATE, f.as_raw_fd()),
            None => (
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
            ),
        };
        // SAFETY: a fresh mapping; the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                raw,
                offset as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            base: NonNull::new(p.cast()).expect("mmap returned non-null"),
            len,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: base/len are exactly the mapping made in new().
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}

/// One of the four rings: its shared indices and descriptor array.
struct Ring {
    _map: Mapping,
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    descs: *mut u8,
    /// Our copy of the index we own (producer or consumer).
    local: u32,
}

impl Ring {
    fn map(
        fd: &OwnedFd,
        off: &libc::xdp_ring_offset,
        desc_size: usize,
        pgoff: u64,
    ) -> io::Result<Self> {
        let len = off.desc as usize + NDESC as usize * desc_size;
        let m = Mapping::new(len, Some(fd), pgoff)?;
        let b = m.base.as_ptr();
        // SAFETY: the kernel's offsets are inside the mapping it sized.
        let (producer, consumer, descs) = unsafe {
            (
                b.add(off.producer as usize) as *const AtomicU32,
                b.add(off.consumer as usize) as *const AtomicU32,
                b.add(off.desc as usize),
            )
        };
        Ok(Self {
            _map: m,
            producer,
            consumer,
            descs,
            local: 0,
        })
    }

    #[inline(always)]
    fn prod(&self) -> &AtomicU32 {
        // SAFETY: points into the live mapping; the index is an aligned u32
        // shared with the kernel and only accessed atomically.
        unsafe { &*self.producer }
    }

    #[inline(always)]
    fn cons(&self) -> &AtomicU32 {
        // SAFETY: as prod().
        unsafe { &*self.consumer }
    }

    /// The address slot `i` of a fill/completion ring.
    #[inline(always)]
    fn addr_slot(&self, i: u32) -> *mut u64 {
        // SAFETY: (i & mask) < NDESC slots of 8 bytes in the mapping.
        unsafe { (self.descs as *mut u64).add((i & (NDESC - 1)) as usize) }
    }

    /// The descriptor slot `i` of an RX/TX ring.
    #[inline(always)]
    fn desc_slot(&self, i: u32) -> *mut libc::xdp_desc {
        // SAFETY: (i & mask) < NDESC slots of 16 bytes in the mapping.
        unsafe { (self.descs as *mut libc::xdp_desc).add((i & (NDESC - 1)) as usize) }
    }
}

// SAFETY: a queue's rings and UMEM are used by the one lcore that owns it.
unsafe impl Send for AfXdpQueue {}

struct AfXdpQueue {
    xsk: OwnedFd,
    _prog: Arc<XdpProgram>,
    umem: Mapping,
    rx: Ring,
    tx: Ring,
    fill: Ring,
    comp: Ring,
    /// Free TX chunks (UMEM offsets).
    tx_free: Vec<u64>,
    port: u16,
    queue: u16,
    polls: u32,
    seen_missed: u64,
    counters: Arc<PortQueueCounters>,
    /// Bound with XDP_USE_SG: packets may span descriptors.
    sg: bool,
    /// The multi-buffer packet being gathered.
    gather: Gather,
}

/// A multi-buffer packet being gathered: its descriptors so far (it may
/// span two polls when a burst ends inside it), or the skipping of one that
/// cannot be kept.
#[derive(Default)]
struct Gather {
    partial: Option<Frame>,
    /// The rest of the packet is skipped (already counted once: no large
    /// buffer free, longer than one, or a bad descriptor).
    skipping: bool,
}

impl Gather {
    /// One descriptor of a multi-buffer packet (`more`: others follow):
    /// the first takes a large buffer, each is appended; the last returns
    /// the whole packet. A packet that cannot be kept is skipped to its
    /// end and counted once.
    fn push(
        &mut self,
        c: &PortQueueCounters,
        pool: &mut Pool,
        data: Option<&[u8]>,
        more: bool,
    ) -> Option<Frame> {
        if !self.skipping {
            let Some(data) = data else {
                c.ierrors.add(1);
                self.partial = None;
                self.skipping = more;
                return None;
            };
            match self.partial.as_mut() {
                None => match pool.alloc_large() {
                    Some(mut f) => {
                        // A large buffer holds more than any chunk.
                        let _ = f.copy_from(data);
                        self.partial = Some(f);
                    }
                    None if pool.large_room() == 0 => {
                        c.rx_oversize.add(1);
                        self.skipping = true;
                    }
                    None => {
                        c.rx_nombuf.add(1);
                        self.skipping = true;
                    }
                },
                Some(f) => {
                    if f.append(data).is_err() {
                        c.rx_oversize.add(1);
                        self.partial = None;
                        self.skipping = true;
                    }
                }
            }
        }
        if more {
            return None;
        }
        self.skipping = false;
        self.partial.take()
    }
}

/// The bytes of descriptor (`addr`, `len`) inside the UMEM, or None for a
/// descriptor the kernel should never give (past the UMEM or a chunk).
#[inline(always)]
fn chunk(umem: &Mapping, addr: u64, len: usize) -> Option<&[u8]> {
    let end = addr as usize + len;
    if end > umem.len || len > CHUNK as usize {
        return None;
    }
    // SAFETY: [addr, end) is inside the UMEM (checked); the kernel wrote
    // it before publishing the descriptor (X1) and does not touch it
    // until the chunk is back in the fill ring.
    Some(unsafe { std::slice::from_raw_parts(umem.base.as_ptr().add(addr as usize), len) })
}

fn setsockopt<T>(fd: &OwnedFd, opt: libc::c_int, v: &T) -> io::Result<()> {
    netdev::setsockopt(fd, libc::SOL_XDP, opt, v)
}

fn getsockopt<T>(fd: &OwnedFd, opt: libc::c_int, v: &mut T) -> io::Result<()> {
    netdev::getsockopt(fd, libc::SOL_XDP, opt, v)
}

/// Validates the arguments and the interface without attaching anything.
/// Frames up to a large buffer are taken: one longer than a chunk arrives
/// in several (AF_XDP multi-buffer, Linux 6.6).
pub(super) fn check(spec: &VdevSpec) -> Result<(String, u32), PortError> {
    let (iface, ifindex) = netdev::port_iface(spec, LARGE_DATA_ROOM as usize)?;
    spec.num::<u32>("start_queue", 0)?;
    spec.num::<u32>("queue_count", 1)?;
    Ok((iface, ifindex))
}

/// True when frames of `iface` (its MTU, an Ethernet header and two VLAN
/// tags) can exceed one chunk.
fn multi_buffer(iface: &str) -> bool {
    netdev::mtu(iface)
        .is_ok_and(|mtu| mtu as usize + 14 + 8 > (CHUNK - XDP_PACKET_HEADROOM) as usize)
}

pub(super) fn open(
    spec: &VdevSpec,
    port: PortId,
    nb_queues: u16,
) -> Result<Vec<Box<dyn PortQueue>>, PortError> {
    let (iface, ifindex) = check(spec)?;
    let sg = multi_buffer(&iface);
    let start: u32 = spec.num("start_queue", 0)?;
    let count: u32 = spec.num("queue_count", nb_queues as u32)?;
    let mut o = Opening {
        spec,
        iface,
        ifindex,
        port,
        force_copy: spec.get("force_copy") == Some("1"),
        sg,
        prog: None,
    };
    if count != nb_queues as u32 {
        return Err(o.bad(format!(
            "queue_count={count} but --rx polls {nb_queues} queue(s) of this port"
        )));
    }
    let egress = Egress::of(spec)?;
    let prog = XdpProgram::load(ifindex, start + count, sg, egress).map_err(|e| {
        o.perm(
            if sg {
                "loading the XDP redirect program for multi-buffer frames (BPF_F_XDP_HAS_FRAGS: Linux 6.0; or lower the MTU to 1500)"
            } else {
                "loading the XDP redirect program"
            },
            e,
        )
    })?;
    o.prog = Some(Arc::new(prog));
    let mut out: Vec<Box<dyn PortQueue>> = Vec::new();
    for i in 0..count {
        out.push(Box::new(o.queue(start + i, i as u16)?));
    }
    Ok(out)
}

/// A port being opened: what every queue's setup needs.
struct Opening<'a> {
    spec: &'a VdevSpec,
    iface: String,
    ifindex: u32,
    port: PortId,
    force_copy: bool,
    /// Frames may take several chunks: sockets bind with XDP_USE_SG.
    sg: bool,
    /// The redirect program (loaded before the first queue).
    prog: Option<Arc<XdpProgram>>,
}

impl Opening<'_> {
    fn bad(&self, why: String) -> PortError {
        PortError::BadVdev {
            vdev: self.spec.name.clone(),
            why,
        }
    }

    /// A failed step, with the capabilities AF_XDP needs where it was refused.
    fn perm(&self, what: &str, e: io::Error) -> PortError {
        let hint = match e.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => {
                "; AF_XDP needs CAP_NET_ADMIN, CAP_NET_RAW and CAP_BPF (or root)"
            }
            _ => "",
        };
        self.bad(format!("{}: {what}: {e}{hint}", self.iface))
    }

    /// Opens the socket of interface queue `qid` (the port's queue `i`):
    /// UMEM, its four rings, the fill ring primed, bound (zero-copy where
    /// the driver can), and entered in the XSKMAP.
    fn queue(&self, qid: u32, i: u16) -> Result<AfXdpQueue, PortError> {
        let prog = self.prog.clone().expect("loaded before the queues");
        // SAFETY: plain socket(2); checked.
        let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(self.perm("socket(AF_XDP)", io::Error::last_os_error()));
        }
        // SAFETY: a fresh descriptor owned from here on.
        let xsk = unsafe { OwnedFd::from_raw_fd(fd) };
        let umem =
            Mapping::new((CHUNKS * CHUNK) as usize, None, 0).map_err(|e| self.perm("UMEM", e))?;
        let reg = libc::xdp_umem_reg {
            addr: umem.base.as_ptr() as u64,
            len: umem.len as u64,
            chunk_size: CHUNK,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        setsockopt(&xsk, libc::XDP_UMEM_REG, &reg).map_err(|e| self.perm("XDP_UMEM_REG", e))?;
        let (rx, tx, mut fill, comp) = self.rings(&xsk)?;
        // The first half of the UMEM goes to the fill ring, before bind.
        let half = CHUNKS / 2;
        for c in 0..half.min(NDESC) {
            // SAFETY: slot c of the fill ring, not yet visible to the kernel.
            unsafe { *fill.addr_slot(c) = (c * CHUNK) as u64 };
        }
        fill.local = half.min(NDESC);
        // X4: Release; the addresses above are written first.
        fill.prod().store(fill.local, Ordering::Release);
        let tx_free: Vec<u64> = (half..CHUNKS).map(|c| (c * CHUNK) as u64).collect();
        let zc = self.bind(&xsk, qid)?;
        prog.insert(qid, &xsk)
            .map_err(|e| self.perm("XSKMAP update", e))?;
        eprintln!(
            "cpumapd: {} queue {qid}: AF_XDP {} mode{}, XDP program {}",
            self.spec.name,
            if zc { "zero-copy" } else { "copy" },
            if self.sg { ", multi-buffer" } else { "" },
            prog.mode
        );
        Ok(AfXdpQueue {
            xsk,
            _prog: prog,
            umem,
            rx,
            tx,
            fill,
            comp,
            tx_free,
            port: self.port.0,
            queue: i,
            polls: 0,
            seen_missed: 0,
            counters: Arc::default(),
            sg: self.sg,
            gather: Gather::default(),
        })
    }

    /// Sizes and maps the RX, TX, fill and completion rings of `xsk`.
    fn rings(&self, xsk: &OwnedFd) -> Result<(Ring, Ring, Ring, Ring), PortError> {
        for opt in [
            libc::XDP_UMEM_FILL_RING,
            libc::XDP_UMEM_COMPLETION_RING,
            libc::XDP_RX_RING,
            libc::XDP_TX_RING,
        ] {
            setsockopt(xsk, opt, &NDESC).map_err(|e| self.perm("ring setup", e))?;
        }
        // SAFETY: xdp_mmap_offsets is plain data; zero is valid.
        let mut off: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
        getsockopt(xsk, libc::XDP_MMAP_OFFSETS, &mut off)
            .map_err(|e| self.perm("XDP_MMAP_OFFSETS", e))?;
        let dsz = size_of::<libc::xdp_desc>();
        let map_err = |e| self.perm("ring mmap", e);
        let rx = Ring::map(xsk, &off.rx, dsz, libc::XDP_PGOFF_RX_RING as u64).map_err(map_err)?;
        let tx = Ring::map(xsk, &off.tx, dsz, libc::XDP_PGOFF_TX_RING as u64).map_err(map_err)?;
        let fill = Ring::map(xsk, &off.fr, 8, libc::XDP_UMEM_PGOFF_FILL_RING).map_err(map_err)?;
        let comp =
            Ring::map(xsk, &off.cr, 8, libc::XDP_UMEM_PGOFF_COMPLETION_RING).map_err(map_err)?;
        Ok((rx, tx, fill, comp))
    }

    /// Binds `xsk` to queue `qid`: zero-copy first (unless `force_copy`),
    /// else copy mode. Returns true for zero-copy.
    fn bind(&self, xsk: &OwnedFd, qid: u32) -> Result<bool, PortError> {
        let modes: &[u16] = if self.force_copy {
            &[libc::XDP_COPY]
        } else {
            &[libc::XDP_ZEROCOPY, libc::XDP_COPY]
        };
        let sg = if self.sg { libc::XDP_USE_SG } else { 0 };
        for &flags in modes {
            let sxdp = libc::sockaddr_xdp {
                sxdp_family: libc::AF_XDP as u16,
                sxdp_flags: flags | sg,
                sxdp_ifindex: self.ifindex,
                sxdp_queue_id: qid,
                sxdp_shared_umem_fd: 0,
            };
            // SAFETY: sxdp is a valid sockaddr_xdp of the size passed.
            let r = unsafe {
                libc::bind(
                    xsk.as_raw_fd(),
                    (&sxdp as *const libc::sockaddr_xdp).cast(),
                    size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
                )
            };
            if r == 0 {
                return Ok(flags == libc::XDP_ZEROCOPY);
            }
        }
        let what = if self.sg {
            format!(
                "bind to queue {qid} with XDP_USE_SG (multi-buffer: Linux 6.6, or lower {}'s MTU to 1500)",
                self.iface
            )
        } else {
            format!("bind to queue {qid}")
        };
        Err(self.perm(&what, io::Error::last_os_error()))
    }
}

impl AfXdpQueue {
    /// Adds the kernel's drops since the last read to `imissed`
    /// (XDP_STATISTICS is cumulative).
    fn read_stats(&mut self) {
        // SAFETY: plain data; zero is valid.
        let mut st: libc::xdp_statistics = unsafe { std::mem::zeroed() };
        if getsockopt(&self.xsk, libc::XDP_STATISTICS, &mut st).is_ok() {
            let missed = st.rx_dropped + st.rx_ring_full;
            self.counters
                .imissed
                .add(missed.saturating_sub(self.seen_missed));
            self.seen_missed = missed;
        }
    }

    /// Takes back TX chunks the kernel has sent.
    fn reap(&mut self) {
        // X1: Acquire; pairs with the kernel's release of the producer.
        let prod = self.comp.prod().load(Ordering::Acquire);
        while self.comp.local != prod {
            // SAFETY: slot published by the kernel (X1).
            let addr = unsafe { *self.comp.addr_slot(self.comp.local) };
            self.tx_free.push(addr);
            self.comp.local = self.comp.local.wrapping_add(1);
        }
        // X2: Release; the slots were read above.
        self.comp.cons().store(self.comp.local, Ordering::Release);
    }
}

impl PortQueue for AfXdpQueue {
    /// Context: the owning lcore. Copies frames out of the UMEM and returns
    /// each chunk to the fill ring; no allocation, no syscall (statistics
    /// every STATS_EVERY polls aside).
    fn rx_burst(&mut self, pool: &mut Pool, out: &mut Burst) -> usize {
        self.polls = self.polls.wrapping_add(1);
        if self.polls.is_multiple_of(STATS_EVERY) {
            self.read_stats();
        }
        // X1: Acquire; pairs with the kernel's release of the RX producer.
        let prod = self.rx.prod().load(Ordering::Acquire);
        let avail = prod.wrapping_sub(self.rx.local);
        let n = (avail as usize).min(out.remaining_capacity());
        if n == 0 {
            return 0;
        }
        // X3: Acquire; the fill slots we are about to write were consumed.
        let fill_cons = self.fill.cons().load(Ordering::Acquire);
        let fill_room = NDESC - self.fill.local.wrapping_sub(fill_cons);
        let n = n.min(fill_room as usize);
        let (mut got, mut bytes, mut errors, mut nombuf) = (0usize, 0u64, 0u64, 0u64);
        for _ in 0..n {
            // SAFETY: descriptor published by the kernel (X1).
            let d = unsafe { *self.rx.desc_slot(self.rx.local) };
            self.rx.local = self.rx.local.wrapping_add(1);
            let more = d.options & libc::XDP_PKT_CONTD != 0;
            let g = &self.gather;
            if self.sg && (more || g.partial.is_some() || g.skipping) {
                // A multi-buffer packet (only with XDP_USE_SG): gathered
                // into a large buffer; it occupies one burst slot at most.
                let data = chunk(&self.umem, d.addr, d.len as usize);
                if let Some(mut f) = self.gather.push(&self.counters, pool, data, more) {
                    f.set_rx_meta(self.port, self.queue, 0);
                    bytes += f.len() as u64;
                    out.push(f);
                    got += 1;
                }
            } else {
                match (chunk(&self.umem, d.addr, d.len as usize), pool.alloc()) {
                    (Some(data), Some(mut f)) => {
                        if f.copy_from(data).is_ok() {
                            f.set_rx_meta(self.port, self.queue, 0);
                            bytes += d.len as u64;
                            out.push(f);
                            got += 1;
                        } else {
                            errors += 1;
                        }
                    }
                    (None, _) => errors += 1,
                    (_, None) => nombuf += 1,
                }
            }
            // The chunk goes straight back to the fill ring. In aligned
            // mode the kernel may hand out an address inside the chunk.
            let chunk = d.addr - d.addr % CHUNK as u64;
            // SAFETY: a fill slot the kernel has consumed (X3).
            unsafe { *self.fill.addr_slot(self.fill.local) = chunk };
            self.fill.local = self.fill.local.wrapping_add(1);
        }
        // X2: Release; the RX descriptors were read above.
        self.rx.cons().store(self.rx.local, Ordering::Release);
        // X4: Release; the fill addresses were written above.
        self.fill.prod().store(self.fill.local, Ordering::Release);
        let c = &self.counters;
        c.ipackets.add(got as u64);
        c.ibytes.add(bytes);
        c.ierrors.add(errors);
        c.rx_nombuf.add(nombuf);
        got
    }

    /// Context: the owning lcore. One sendto(2) kick per burst. A frame
    /// longer than a chunk goes in several descriptors (XDP_PKT_CONTD)
    /// when the socket is multi-buffer; without it, or past the kernel's
    /// fragment limit, it is counted in `oerrors` and freed, never cut.
    fn tx_burst(&mut self, frames: &mut Burst) -> usize {
        self.reap();
        // X3: Acquire; the TX slots we are about to write were consumed.
        let cons = self.tx.cons().load(Ordering::Acquire);
        let mut room = (NDESC - self.tx.local.wrapping_sub(cons)) as usize;
        let (mut sent, mut bytes, mut refused) = (0usize, 0u64, 0u64);
        let mut i = 0;
        while i < frames.len() {
            let len = frames[i].len();
            let descs = len.div_ceil(CHUNK as usize).max(1);
            if descs > 1 && (!self.sg || descs > MAX_TX_DESCS) {
                drop(frames.remove(i));
                refused += 1;
                continue;
            }
            if descs > room || descs > self.tx_free.len() {
                break;
            }
            let data = frames[i].data();
            for (k, piece) in data.chunks(CHUNK as usize).enumerate() {
                let addr = self.tx_free.pop().expect("descs <= tx_free.len()");
                let more = k + 1 < descs;
                // SAFETY: addr is a free chunk of ours inside the UMEM;
                // piece.len() <= CHUNK.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        piece.as_ptr(),
                        self.umem.base.as_ptr().add(addr as usize),
                        piece.len(),
                    );
                    *self.tx.desc_slot(self.tx.local) = libc::xdp_desc {
                        addr,
                        len: piece.len() as u32,
                        options: if more { libc::XDP_PKT_CONTD } else { 0 },
                    };
                }
                self.tx.local = self.tx.local.wrapping_add(1);
            }
            room -= descs;
            bytes += len as u64;
            sent += 1;
            i += 1;
        }
        if sent > 0 {
            // X4: Release; descriptors and chunk contents were written above.
            self.tx.prod().store(self.tx.local, Ordering::Release);
            // SAFETY: a kick with no data; errors (EAGAIN/EBUSY) only delay.
            unsafe {
                libc::sendto(
                    self.xsk.as_raw_fd(),
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                );
            }
        }
        let mut done: Burst = frames.drain(..sent).collect();
        free_burst(&mut done);
        self.counters.opackets.add(sent as u64);
        self.counters.obytes.add(bytes);
        self.counters.oerrors.add(refused + frames.len() as u64);
        sent
    }

    fn flush(&mut self) -> io::Result<()> {
        self.read_stats();
        Ok(())
    }

    /// The socket: poll(2) says POLLIN when the RX ring has frames.
    fn idle_wait(&self) -> super::IdleWait {
        super::IdleWait::Fd(self.xsk.as_raw_fd())
    }

    fn counters(&self) -> &Arc<PortQueueCounters> {
        &self.counters
    }
}
