//! `net_af_packet`: a Linux interface as a port, through AF_PACKET sockets
//! (the kvargs of DPDK's net_af_packet: `iface`, `qpairs`, `blocksz`,
//! `framecnt`, `qdisc_bypass`).
//!
//! # General idea
//!
//! One socket per queue pair, each owned by one lcore. RX uses a
//! PACKET_MMAP ring, of one of two kinds (`ring=v2|v3`):
//!
//! * TPACKET_V2 (the default): a status word per frame slot. The kernel
//!   hands each frame over by itself (TP_STATUS_USER) and wakes a poll(2)er
//!   per frame, so a lone frame is seen at once. Slots are sized to the
//!   interface's MTU; a frame larger than its slot (a GSO super-frame, a
//!   GRO'd one) is queued whole on the socket as well (PACKET_COPY_THRESH;
//!   the slot says TP_STATUS_COPY) and read from there with recvmsg(2)
//!   into a 64 KiB buffer, in order. This is DPDK's af_packet PMD's ring
//!   kind.
//! * TPACKET_V3: frames packed into blocks; the kernel hands over (and
//!   wakes readers for) a whole block when it is full or when its retire
//!   timer fires (`tp_retire_blk_tov`, 1 ms, the least it takes). A lone
//!   frame waits for that timer: half a millisecond on average, added to
//!   every request/response round trip. Kept for what it does carry (the
//!   skb's flow hash for `bpf_xdp_metadata_rx_hash`) and for comparison
//!   (docs/PERFORMANCE.md, scripts/bench-rr.sh).
//!
//! Either way the lcore copies each frame into a pool buffer (the ring
//! memory belongs to the kernel, as in DPDK's PMD) and returns the slot or
//! block with TP_STATUS_KERNEL. With more
//! than one queue the sockets join one PACKET_FANOUT_HASH group, so the
//! kernel spreads flows across RX lcores like RSS. Outgoing frames are
//! ignored on the RX side (PACKET_IGNORE_OUTGOING), so our own transmits do
//! not come back in.
//!
//! Frames a local sender left to checksum offload (a veth peer; the ring
//! marks them TP_STATUS_CSUMNOTREADY) get their TCP/UDP checksum completed
//! in software, so the stack behind the TAP accepts them.
//!
//! TX is `sendmmsg(2)` of up to a burst, from the frames' buffers, with
//! PACKET_QDISC_BYPASS (unless `qdisc_bypass=0`). Frames the kernel drops
//! because the ring was full are read from PACKET_STATISTICS (`tp_drops`)
//! and counted as `imissed`, so the accounting reaches the wire.
//!
//! Memory ordering with the kernel: K1: Acquire load of a block's (V3) or a
//! slot's (V2) status, pairing with the kernel's smp_wmb + status store
//! when it hands the block or slot over; K2: Release store of
//! TP_STATUS_KERNEL after the last read of the block or slot, pairing with
//! the kernel's read of the status before reuse.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use super::egress::{Egress, IngressDrop};
use super::{Burst, MAX_BURST, PortError, PortQueue, VdevSpec, netdev};
use crate::counters::PortQueueCounters;
use crate::frame::{Frame, LARGE_DATA_ROOM, Pool};
use crate::wire::vnet::{F_NEEDS_CSUM, HDR_LEN as VNET_HDR_LEN, VnetHdr};

const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;
use crate::ids::PortId;

/// Offsets inside `tpacket_block_desc` (hdr.bh1) and `tpacket3_hdr`.
const BLK_STATUS: usize = 8;
const BLK_NUM_PKTS: usize = 12;
const BLK_FIRST: usize = 16;
const PKT_NEXT: usize = 0;
const PKT_SNAPLEN: usize = 12;
const PKT_LEN: usize = 16;
const PKT_STATUS: usize = 20;
const PKT_MAC: usize = 24;
const PKT_RXHASH: usize = 28;
const PKT_VLAN_TCI: usize = 32;
const PKT_VLAN_TPID: usize = 36;
/// `TPACKET_ALIGN(sizeof(struct tpacket3_hdr))`: the sockaddr_ll follows.
const PKT_SLL: usize = 48;
/// Offsets inside `tpacket2_hdr` (a V2 slot starts with it).
const V2_STATUS: usize = 0;
const V2_LEN: usize = 4;
const V2_SNAPLEN: usize = 8;
const V2_MAC: usize = 12;
const V2_VLAN_TCI: usize = 24;
const V2_VLAN_TPID: usize = 26;
/// `TPACKET_ALIGN(sizeof(struct tpacket2_hdr))`: the sockaddr_ll follows.
const V2_SLL: usize = 32;
/// The socket's receive buffer for frames too large for a V2 slot (each a
/// GSO super-frame of up to 64 KiB).
const COPY_RCVBUF: libc::c_int = 8 << 20;
/// A V2 ring's default size in bytes (the V3 default's: 4096 x 2 KiB).
const V2_RING_BYTES: usize = 8 << 20;
const SLL_PKTTYPE: usize = 10;

/// `PACKET_VNET_HDR` (linux/if_packet.h).
const PACKET_VNET_HDR: libc::c_int = 15;

/// True unless the vdev says `vnet_hdr=0`.
pub(super) fn vnet_hdr(spec: &VdevSpec) -> bool {
    spec.get("vnet_hdr") != Some("0")
}

/// How many polls between PACKET_STATISTICS reads (a syscall).
const STATS_EVERY: u32 = 1024;

fn os_err(spec: &VdevSpec, what: &str) -> PortError {
    let e = io::Error::last_os_error();
    let hint = match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            "; AF_PACKET needs CAP_NET_RAW (run as root or setcap cap_net_raw+ep)"
        }
        _ => "",
    };
    PortError::BadVdev {
        vdev: spec.name.clone(),
        why: format!("{what}: {e}{hint}"),
    }
}

/// A packet socket bound to `ifindex`.
fn packet_socket(spec: &VdevSpec, ifindex: u32) -> Result<OwnedFd, PortError> {
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket(2); the result is checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            proto as i32,
        )
    };
    if fd < 0 {
        return Err(os_err(spec, "socket(AF_PACKET)"));
    }
    // SAFETY: a fresh descriptor owned from here on.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    Ok(fd).and_then(|fd| {
        // SAFETY: sockaddr_ll is plain data; zero is valid.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: sll is a valid sockaddr_ll of the size passed.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(os_err(spec, "bind"));
        }
        Ok(fd)
    })
}

/// The RX ring kinds (`ring=v2|v3`); see the module comment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingKind {
    /// TPACKET_V2: a status per frame, each frame handed over at once.
    V2,
    /// TPACKET_V3: blocks handed over when full or when the retire timer
    /// fires.
    V3,
}

impl RingKind {
    /// The default: V2. Measured (docs/PERFORMANCE.md): V3's block timer
    /// adds ~0.5 ms to every round trip, and V2 moves as much in bulk.
    pub const DEFAULT: Self = Self::V2;

    /// From the vdev's `ring=` (default [`Self::DEFAULT`]).
    pub fn of(spec: &VdevSpec) -> Result<Self, PortError> {
        match spec.get("ring") {
            None => Ok(Self::DEFAULT),
            Some("v2") => Ok(Self::V2),
            Some("v3") => Ok(Self::V3),
            Some(v) => Err(PortError::BadVdev {
                vdev: spec.name.clone(),
                why: format!(
                    "ring={v}: expected v2 (a frame handed over at once) or v3 (blocks, 1 ms retire timer)"
                ),
            }),
        }
    }

    /// As the vdev and the summary spell it.
    pub fn name(self) -> &'static str {
        match self {
            Self::V2 => "v2",
            Self::V3 => "v3",
        }
    }
}

/// The mmap'ed RX ring of one socket.
struct RxRing {
    base: NonNull<u8>,
    kind: RingKind,
    geo: Geometry,
    /// V2: slots in all (`geo.frames()`, kept for the wrap).
    frames: usize,
    /// V3: the block being read; V2: the slot being read.
    cur: usize,
    /// V3: packet index in the block, and that packet's offset.
    pkt_idx: u32,
    pkt_off: usize,
}

// SAFETY: the ring mapping is owned by one RxRing, which one lcore owns.
unsafe impl Send for RxRing {}

impl Drop for RxRing {
    fn drop(&mut self) {
        // SAFETY: base/len are the mapping made in AfPacketQueue::open, unmapped once.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.geo.len());
        }
    }
}

impl RxRing {
    #[inline(always)]
    fn block(&self, b: usize) -> *mut u8 {
        // SAFETY: b < blocks, so the offset is inside the mapping.
        unsafe { self.base.as_ptr().add(b * self.geo.block_size) }
    }

    /// V2: slot `i`. The kernel puts slot i at block i / per-block, offset
    /// (i % per-block) x frame size; blocks are mapped back to back and a
    /// block holds a whole number of slots (Geometry::of checks it), so
    /// that is i x frame size from the start, no division.
    #[inline(always)]
    fn slot(&self, i: usize) -> *mut u8 {
        // SAFETY: i < frames, so the slot lies inside the mapping.
        unsafe { self.base.as_ptr().add(i * self.geo.frame_size) }
    }

    /// The status word at `p` (a V3 block's, a V2 slot's).
    #[inline(always)]
    fn status_at(p: *mut u8) -> &'static AtomicU32 {
        // SAFETY: p is an aligned u32 inside the mapping, shared with the
        // kernel, accessed only atomically here; the mapping outlives every
        // use (each within one rx_burst).
        unsafe { AtomicU32::from_ptr(p.cast()) }
    }

    #[inline(always)]
    fn read_u32(p: *const u8, off: usize) -> u32 {
        // SAFETY: callers pass offsets inside a block the kernel handed over
        // (K1), which it does not write until we return it (K2).
        unsafe { p.add(off).cast::<u32>().read_unaligned() }
    }

    #[inline(always)]
    fn read_u16(p: *const u8, off: usize) -> u16 {
        // SAFETY: as read_u32.
        unsafe { p.add(off).cast::<u16>().read_unaligned() }
    }
}

struct AfPacketQueue {
    fd: OwnedFd,
    ring: Option<RxRing>,
    port: u16,
    queue: u16,
    ifindex: u32,
    polls: u32,
    /// Every frame is preceded by a virtio-net header, both ways.
    vnet: bool,
    counters: Arc<PortQueueCounters>,
    /// `egress=kernel`: the tcx program keeping IP from the interface's
    /// stack, attached while any queue of the port lives.
    _egress: Option<Arc<IngressDrop>>,
}

/// Asks for virtio-net headers on `fd` (before its ring is set up); false,
/// with one log line, if the kernel refuses.
fn enable_vnet(spec: &VdevSpec, fd: &OwnedFd) -> bool {
    let one: libc::c_int = 1;
    match netdev::setsockopt(fd, libc::SOL_PACKET, PACKET_VNET_HDR, &one) {
        Ok(()) => true,
        Err(e) => {
            eprintln!(
                "cpumapd: {}: PACKET_VNET_HDR refused ({e}); GSO frames from this port will be counted as rx_oversize",
                spec.name
            );
            false
        }
    }
}

/// A ring's shape: blocks of `block_size` bytes, each holding
/// `block_size / frame_size` slots (V2) or frames packed up to its end (V3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Geometry {
    block_size: usize,
    blocks: usize,
    frame_size: usize,
}

/// What a V2 slot holds before the frame: `tpacket2_hdr`, the
/// `sockaddr_ll`, alignment and a virtio-net header (the kernel's `macoff`
/// is 76 with one), rounded up.
const V2_SLOT_OVERHEAD: usize = 128;

impl Geometry {
    /// From the vdev's `blocksz`, `framesz` and `framecnt`, each defaulting
    /// per ring kind: V3 packs 4096 frames' worth of 2 KiB into 1 MiB
    /// blocks; V2 sizes its slots to the interface's MTU (a power of two,
    /// at least 2 KiB: a 1500-byte MTU fits) and keeps the ring at
    /// [`V2_RING_BYTES`].
    fn of(spec: &VdevSpec, kind: RingKind, mtu: usize) -> Result<Self, PortError> {
        let (block_d, frame_d) = match kind {
            RingKind::V3 => (1 << 20, 2048),
            RingKind::V2 => {
                let f = (mtu + 14 + 8 + V2_SLOT_OVERHEAD)
                    .next_power_of_two()
                    .max(2048);
                (f.max(4096), f)
            }
        };
        let block_size: usize = spec.num("blocksz", block_d)?;
        let frame_size: usize = spec.num("framesz", frame_d)?;
        let count_d = match kind {
            RingKind::V3 => 4096,
            RingKind::V2 => V2_RING_BYTES / frame_size.max(1),
        };
        let frame_count: usize = spec.num("framecnt", count_d)?;
        if frame_size < 64
            || !frame_size.is_multiple_of(16)
            || !block_size.is_power_of_two()
            || block_size < 4096
            || !block_size.is_multiple_of(frame_size)
        {
            return Err(PortError::BadVdev {
                vdev: spec.name.clone(),
                why: format!(
                    "blocksz={block_size} must be a power of two >= 4096 and a multiple of framesz={frame_size} (>= 64, a multiple of 16)"
                ),
            });
        }
        let blocks = (frame_count * frame_size).div_ceil(block_size).max(2);
        Ok(Self {
            block_size,
            blocks,
            frame_size,
        })
    }

    /// Bytes mapped.
    fn len(&self) -> usize {
        self.blocks * self.block_size
    }

    /// V2 slots in all (every block holds a whole number of them).
    fn frames(&self) -> usize {
        self.len() / self.frame_size
    }
}

/// Sets up `fd`'s RX ring of `kind` and maps it.
fn map_ring(
    spec: &VdevSpec,
    fd: &OwnedFd,
    kind: RingKind,
    geo: Geometry,
) -> Result<RxRing, PortError> {
    let bad = |why: String| PortError::BadVdev {
        vdev: spec.name.clone(),
        why,
    };
    let Geometry {
        block_size,
        blocks,
        frame_size,
    } = geo;
    let frames = geo.frames();
    let version = match kind {
        RingKind::V2 => libc::tpacket_versions::TPACKET_V2,
        RingKind::V3 => libc::tpacket_versions::TPACKET_V3,
    } as libc::c_int;
    netdev::setsockopt(fd, libc::SOL_PACKET, libc::PACKET_VERSION, &version)
        .map_err(|e| bad(format!("PACKET_VERSION {}: {e}", kind.name())))?;
    let r = match kind {
        RingKind::V3 => {
            let req = libc::tpacket_req3 {
                tp_block_size: block_size as u32,
                tp_block_nr: blocks as u32,
                tp_frame_size: frame_size as u32,
                tp_frame_nr: frames as u32,
                tp_retire_blk_tov: 1,
                tp_sizeof_priv: 0,
                tp_feature_req_word: libc::TP_FT_REQ_FILL_RXHASH,
            };
            netdev::setsockopt(fd, libc::SOL_PACKET, libc::PACKET_RX_RING, &req)
        }
        RingKind::V2 => {
            // A frame larger than a slot is queued whole on the socket too
            // (TP_STATUS_COPY), with room for a burst of GSO super-frames;
            // without the room (a non-root user's rmem_max) the clone is
            // skipped and the frame counted as rx_oversize.
            let one: libc::c_int = 1;
            netdev::setsockopt(fd, libc::SOL_PACKET, libc::PACKET_COPY_THRESH, &one)
                .map_err(|e| bad(format!("PACKET_COPY_THRESH: {e}")))?;
            if netdev::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &COPY_RCVBUF).is_err()
            {
                let _ = netdev::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &COPY_RCVBUF);
            }
            let req = libc::tpacket_req {
                tp_block_size: block_size as u32,
                tp_block_nr: blocks as u32,
                tp_frame_size: frame_size as u32,
                tp_frame_nr: frames as u32,
            };
            netdev::setsockopt(fd, libc::SOL_PACKET, libc::PACKET_RX_RING, &req)
        }
    };
    r.map_err(|e| {
        bad(format!(
            "PACKET_RX_RING {} ({blocks} x {block_size} B, {frame_size} B frames): {e}",
            kind.name()
        ))
    })?;
    // SAFETY: mapping the ring the kernel just allocated for this socket.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            geo.len(),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(os_err(spec, "mmap of the RX ring"));
    }
    Ok(RxRing {
        base: NonNull::new(base.cast()).expect("mmap returned non-null"),
        kind,
        geo,
        frames,
        cur: 0,
        pkt_idx: 0,
        pkt_off: 0,
    })
}

pub(super) fn open(
    spec: &VdevSpec,
    port: PortId,
    nb_queues: u16,
) -> Result<Vec<Box<dyn PortQueue>>, PortError> {
    let bad = |why: String| PortError::BadVdev {
        vdev: spec.name.clone(),
        why,
    };
    let (iface, ifindex) = netdev::port_iface(spec, LARGE_DATA_ROOM as usize)?;
    let kind = RingKind::of(spec)?;
    let mtu = netdev::mtu(&iface).map_err(|e| bad(format!("{iface}: {e}")))? as usize;
    let geo = Geometry::of(spec, kind, mtu)?;
    let bypass = spec.get("qdisc_bypass") != Some("0");
    let group = (std::process::id() as u16) ^ (port.0.wrapping_mul(0x9e37));
    let egress = match Egress::of(spec)? {
        Egress::Cpumapd => None,
        Egress::Kernel => Some(IngressDrop::attach(ifindex).map_err(|e| {
            bad(format!(
                "{iface}: egress=kernel: attaching the tcx ingress program that keeps IP from the interface's stack (Linux 6.6, CAP_BPF and CAP_NET_ADMIN): {e}"
            ))
        })?),
    };
    let mut out: Vec<Box<dyn PortQueue>> = Vec::new();
    for q in 0..nb_queues {
        let fd = packet_socket(spec, ifindex)?;
        let one: libc::c_int = 1;
        // Older kernels lack it; the pkttype check below covers them.
        let _ = netdev::setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, &one);
        if bypass {
            netdev::setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, &one)
                .map_err(|e| bad(format!("PACKET_QDISC_BYPASS: {e}")))?;
        }
        let vnet = vnet_hdr(spec) && enable_vnet(spec, &fd);
        let ring = map_ring(spec, &fd, kind, geo)?;
        if nb_queues > 1 {
            let arg: u32 = group as u32 | (libc::PACKET_FANOUT_HASH << 16);
            netdev::setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_FANOUT, &arg)
                .map_err(|e| bad(format!("PACKET_FANOUT_HASH: {e}")))?;
        }
        out.push(Box::new(AfPacketQueue {
            fd,
            ring: Some(ring),
            port: port.0,
            queue: q,
            ifindex,
            polls: 0,
            vnet,
            counters: Arc::default(),
            _egress: egress.clone(),
        }));
    }
    Ok(out)
}

/// A TX-only socket on the same interface, for a lcore that sends but does
/// not own an RX queue (a target's reverse direction).
pub(super) fn open_tx(spec: &VdevSpec, port: PortId) -> Result<Box<dyn PortQueue>, PortError> {
    let iface = spec.get("iface").unwrap_or_default();
    let ifindex = netdev::index(iface).ok_or_else(|| PortError::BadVdev {
        vdev: spec.name.clone(),
        why: format!("interface {iface} does not exist"),
    })?;
    let fd = packet_socket(spec, ifindex)?;
    let one: libc::c_int = 1;
    if spec.get("qdisc_bypass") != Some("0") {
        let _ = netdev::setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, &one);
    }
    // Receives nothing: a TX socket must not queue copies of RX traffic.
    let zero = libc::sock_filter {
        code: 0x06, // BPF_RET | BPF_K
        jt: 0,
        jf: 0,
        k: 0,
    };
    let prog = libc::sock_fprog {
        len: 1,
        filter: &zero as *const libc::sock_filter as *mut libc::sock_filter,
    };
    let _ = netdev::setsockopt(&fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &prog);
    let vnet = enable_vnet(spec, &fd);
    Ok(Box::new(AfPacketQueue {
        fd,
        ring: None,
        port: port.0,
        queue: u16::MAX,
        ifindex,
        polls: 0,
        vnet,
        counters: Arc::default(),
        _egress: None,
    }))
}

/// What the ring says of a frame besides its bytes.
#[derive(Clone, Copy)]
struct RxMeta {
    status: u32,
    hash: u32,
    tci: u16,
    tpid: u16,
}

/// The queue's identity for [`AfPacketQueue::take`] (borrowed apart from
/// its ring).
#[derive(Clone, Copy)]
struct TakeCtx<'a> {
    port: u16,
    queue: u16,
    vnet: bool,
    counters: &'a PortQueueCounters,
}

/// Why a received frame was not taken (each its own counter).
enum RxRefusal {
    NoBuffer,
    Oversize,
    BadOffload,
    Error,
}

impl AfPacketQueue {
    /// Copies one received frame into a pool buffer (the large class for a
    /// GSO super-frame) with its offload metadata and its VLAN tag back in
    /// place. `len` is the frame's length on the wire side, `data` what the
    /// ring holds of it.
    #[inline]
    fn take(
        q: TakeCtx<'_>,
        pool: &mut Pool,
        data: &[u8],
        len: usize,
        vnet: VnetHdr,
        m: RxMeta,
    ) -> Result<Frame, RxRefusal> {
        if data.len() < len {
            // Larger than a ring block: cut by the kernel.
            return Err(RxRefusal::Oversize);
        }
        if vnet.check_frame(data).is_err() {
            return Err(RxRefusal::BadOffload);
        }
        let Some(mut f) = pool.alloc_for(data.len()) else {
            return Err(if data.len() > pool.data_room().max(pool.large_room()) {
                RxRefusal::Oversize
            } else {
                RxRefusal::NoBuffer
            });
        };
        f.copy_from(data).map_err(|_| RxRefusal::Error)?;
        Self::finish(q, f, vnet, m)
    }

    /// A received frame, in its buffer: its offload metadata, its VLAN tag
    /// back in place, its RX metadata.
    #[inline]
    fn finish(q: TakeCtx<'_>, mut f: Frame, vnet: VnetHdr, m: RxMeta) -> Result<Frame, RxRefusal> {
        if q.vnet {
            f.set_offload(vnet);
        } else if m.status & libc::TP_STATUS_CSUMNOTREADY != 0 {
            // A local sender left the L4 checksum to offload.
            crate::wire::complete_l4_checksum(f.data_mut());
        }
        if m.status & TP_STATUS_VLAN_VALID != 0 {
            // The driver moved the tag into the ring header: put it back,
            // so filters and the kernel see the frame as it was sent.
            let tpid = if m.status & TP_STATUS_VLAN_TPID_VALID != 0 {
                m.tpid
            } else {
                crate::wire::ETH_P_8021Q
            };
            f.insert_vlan(tpid, m.tci).map_err(|_| RxRefusal::Error)?;
        }
        if vnet.is_gso() {
            q.counters.rx_gso.add(1);
        }
        f.set_rx_meta(q.port, q.queue, m.hash);
        Ok(f)
    }

    /// Adds the kernel's ring-full drops since the last read (the read
    /// resets them) to `imissed`.
    fn read_stats(&mut self) {
        let mut st = libc::tpacket_stats_v3 {
            tp_packets: 0,
            tp_drops: 0,
            tp_freeze_q_cnt: 0,
        };
        if netdev::getsockopt(&self.fd, libc::SOL_PACKET, libc::PACKET_STATISTICS, &mut st).is_ok()
        {
            self.counters.imissed.add(st.tp_drops as u64);
        }
    }
}

/// One rx_burst's byte and error tallies (published once).
#[derive(Default)]
struct RxTally {
    bytes: u64,
    errors: u64,
}

/// One received frame as its ring slot describes it. `data` is what the
/// ring holds of it (`snaplen` bytes), `len` its length on the wire side.
struct Slot<'a> {
    data: &'a [u8],
    len: usize,
    vnet: VnetHdr,
    meta: RxMeta,
}

/// The virtio-net header the kernel wrote right before the frame at `p +
/// mac` (PACKET_VNET_HDR), or none.
#[inline(always)]
fn vnet_before(vnet: bool, p: *const u8, mac: usize, hdr_end: usize) -> VnetHdr {
    if vnet && mac >= hdr_end + VNET_HDR_LEN {
        // SAFETY: with PACKET_VNET_HDR the kernel writes the header in the
        // VNET_HDR_LEN bytes before the frame, inside the slot or block.
        let h = unsafe { &*p.add(mac - VNET_HDR_LEN).cast::<[u8; VNET_HDR_LEN]>() };
        VnetHdr::parse(h)
    } else {
        VnetHdr::default()
    }
}

/// Takes one frame into `out`, or counts why not.
#[inline(always)]
fn accept(q: TakeCtx<'_>, pool: &mut Pool, out: &mut Burst, s: Slot<'_>, t: &mut RxTally) {
    match AfPacketQueue::take(q, pool, s.data, s.len, s.vnet, s.meta) {
        Ok(f) => {
            t.bytes += s.data.len() as u64;
            out.push(f);
        }
        Err(RxRefusal::NoBuffer) => q.counters.rx_nombuf.add(1),
        Err(RxRefusal::Oversize) => q.counters.rx_oversize.add(1),
        Err(RxRefusal::BadOffload) => q.counters.rx_bad_offload.add(1),
        Err(RxRefusal::Error) => t.errors += 1,
    }
}

/// TPACKET_V3: whole blocks, frame after frame. Context: the owning lcore.
#[inline]
fn rx_v3(ring: &mut RxRing, q: TakeCtx<'_>, pool: &mut Pool, out: &mut Burst, t: &mut RxTally) {
    while out.len() < MAX_BURST {
        let b = ring.cur;
        let blk = ring.block(b);
        // K1: Acquire; pairs with the kernel's release of the block.
        let status = RxRing::status_at(blk.wrapping_add(BLK_STATUS));
        if status.load(Ordering::Acquire) & libc::TP_STATUS_USER == 0 {
            break;
        }
        let num = RxRing::read_u32(blk, BLK_NUM_PKTS);
        if ring.pkt_idx == 0 {
            ring.pkt_off = RxRing::read_u32(blk, BLK_FIRST) as usize;
        }
        if ring.pkt_idx >= num {
            // K2: Release; every read of this block happened before.
            status.store(libc::TP_STATUS_KERNEL, Ordering::Release);
            ring.cur = (b + 1) % ring.geo.blocks;
            ring.pkt_idx = 0;
            continue;
        }
        // SAFETY: pkt_off comes from the kernel's block layout
        // (offset_to_first_pkt / tp_next_offset) and stays in the block.
        let p = unsafe { blk.add(ring.pkt_off) };
        let next = RxRing::read_u32(p, PKT_NEXT) as usize;
        ring.pkt_idx += 1;
        ring.pkt_off += next;
        // SAFETY: the sockaddr_ll follows the header inside the block.
        if unsafe { *p.add(PKT_SLL + SLL_PKTTYPE) } == libc::PACKET_OUTGOING {
            continue;
        }
        let snap = RxRing::read_u32(p, PKT_SNAPLEN) as usize;
        let mac = RxRing::read_u16(p, PKT_MAC) as usize;
        // SAFETY: [mac, mac + snap) is the frame inside the block.
        let data = unsafe { std::slice::from_raw_parts(p.add(mac), snap) };
        let slot = Slot {
            data,
            len: RxRing::read_u32(p, PKT_LEN) as usize,
            vnet: vnet_before(q.vnet, p, mac, PKT_SLL),
            meta: RxMeta {
                status: RxRing::read_u32(p, PKT_STATUS),
                hash: RxRing::read_u32(p, PKT_RXHASH),
                tci: RxRing::read_u32(p, PKT_VLAN_TCI) as u16,
                tpid: RxRing::read_u16(p, PKT_VLAN_TPID),
            },
        };
        accept(q, pool, out, slot, t);
    }
}

/// TPACKET_V2: slot after slot, each handed over by itself. A slot marked
/// TP_STATUS_COPY holds the head of a frame too large for it; the whole
/// frame is read from the socket's receive queue (where the kernel queued
/// it, in order, before it set the slot's status). Context: the owning
/// lcore.
#[inline]
fn rx_v2(
    ring: &mut RxRing,
    q: TakeCtx<'_>,
    fd: &OwnedFd,
    pool: &mut Pool,
    out: &mut Burst,
    t: &mut RxTally,
) {
    while out.len() < MAX_BURST {
        let p = ring.slot(ring.cur);
        // K1: Acquire; pairs with the kernel's release of the slot.
        let status_word = RxRing::status_at(p.wrapping_add(V2_STATUS));
        let status = status_word.load(Ordering::Acquire);
        if status & libc::TP_STATUS_USER == 0 {
            break;
        }
        // SAFETY: the sockaddr_ll follows the header inside the slot.
        let outgoing = unsafe { *p.add(V2_SLL + SLL_PKTTYPE) } == libc::PACKET_OUTGOING;
        let meta = RxMeta {
            status,
            hash: 0,
            tci: RxRing::read_u16(p, V2_VLAN_TCI),
            tpid: RxRing::read_u16(p, V2_VLAN_TPID),
        };
        // TP_STATUS_COPY: the frame did not fit its slot; the whole of it
        // waits on the socket's receive queue.
        if status & libc::TP_STATUS_COPY != 0 {
            take_copied(q, fd, pool, out, meta, t);
        } else if !outgoing {
            let snap = RxRing::read_u32(p, V2_SNAPLEN) as usize;
            let mac = RxRing::read_u16(p, V2_MAC) as usize;
            let snap = snap.min(ring.geo.frame_size.saturating_sub(mac));
            // SAFETY: [mac, mac + snap) lies inside the slot (clamped).
            let data = unsafe { std::slice::from_raw_parts(p.add(mac), snap) };
            let slot = Slot {
                data,
                len: RxRing::read_u32(p, V2_LEN) as usize,
                vnet: vnet_before(q.vnet, p, mac, V2_SLL),
                meta,
            };
            accept(q, pool, out, slot, t);
        }
        // K2: Release; every read of this slot happened before.
        status_word.store(libc::TP_STATUS_KERNEL, Ordering::Release);
        ring.cur += 1;
        if ring.cur == ring.frames {
            ring.cur = 0;
        }
    }
}

/// A frame too large for its V2 slot, read whole from the socket's
/// receive queue into a 64 KiB buffer: recvmsg(2) with the virtio-net
/// header (on a vnet socket) in front. A frame that cannot be kept is still
/// taken off the queue, so the next COPY slot reads its own. Cold: GSO
/// super-frames and frames past the MTU only. Context: the owning lcore.
#[cold]
fn take_copied(
    q: TakeCtx<'_>,
    fd: &OwnedFd,
    pool: &mut Pool,
    out: &mut Burst,
    meta: RxMeta,
    t: &mut RxTally,
) {
    let mut hdr = [0u8; VNET_HDR_LEN];
    let mut f = pool.alloc_large();
    let mut scratch = [0u8; 1];
    let (base, room) = match f.as_mut() {
        Some(f) => {
            let room = f.room();
            if f.set_len(room).is_err() {
                t.errors += 1;
                return;
            }
            (f.data_mut().as_mut_ptr(), room)
        }
        // No buffer: read into one byte, so the frame leaves the queue.
        None => (scratch.as_mut_ptr(), scratch.len()),
    };
    let mut iov = [
        libc::iovec {
            iov_base: hdr.as_mut_ptr().cast(),
            iov_len: VNET_HDR_LEN,
        },
        libc::iovec {
            iov_base: base.cast(),
            iov_len: room,
        },
    ];
    let iov = if q.vnet { &mut iov[..] } else { &mut iov[1..] };
    // SAFETY: a zeroed msghdr is valid plain data (no name, no control).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = iov.len();
    // SAFETY: the iovecs point at `hdr` and a buffer of `room` bytes, both
    // alive for the call.
    let r = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
    let got = (r.max(0) as usize).saturating_sub(if q.vnet { VNET_HDR_LEN } else { 0 });
    let Some(mut f) = f else {
        q.counters.rx_nombuf.add(1);
        return;
    };
    if r < 0 {
        t.errors += 1;
        return;
    }
    if msg.msg_flags & libc::MSG_TRUNC != 0 {
        q.counters.rx_oversize.add(1);
        return;
    }
    if f.set_len(got).is_err() {
        t.errors += 1;
        return;
    }
    let vnet = if q.vnet {
        VnetHdr::parse(&hdr)
    } else {
        VnetHdr::default()
    };
    if vnet.check_frame(f.data()).is_err() {
        q.counters.rx_bad_offload.add(1);
        return;
    }
    match AfPacketQueue::finish(q, f, vnet, meta) {
        Ok(f) => {
            t.bytes += got as u64;
            out.push(f);
        }
        Err(_) => t.errors += 1,
    }
}

impl PortQueue for AfPacketQueue {
    /// Context: the owning lcore. Copies frames out of kernel-owned slots
    /// or blocks; no allocation, no syscall (stats every STATS_EVERY polls
    /// and a V2 frame too large for its slot aside).
    fn rx_burst(&mut self, pool: &mut Pool, out: &mut Burst) -> usize {
        self.polls = self.polls.wrapping_add(1);
        if self.polls.is_multiple_of(STATS_EVERY) {
            self.read_stats();
        }
        let Some(ring) = self.ring.as_mut() else {
            return 0;
        };
        let start = out.len();
        let mut t = RxTally::default();
        let ctx = TakeCtx {
            port: self.port,
            queue: self.queue,
            vnet: self.vnet,
            counters: &self.counters,
        };
        match ring.kind {
            RingKind::V2 => rx_v2(ring, ctx, &self.fd, pool, out, &mut t),
            RingKind::V3 => rx_v3(ring, ctx, pool, out, &mut t),
        }
        let n = out.len() - start;
        self.counters.ipackets.add(n as u64);
        self.counters.ibytes.add(t.bytes);
        self.counters.ierrors.add(t.errors);
        n
    }

    /// Context: the owning lcore. One sendmmsg(2) for the burst.
    fn tx_burst(&mut self, frames: &mut Burst) -> usize {
        let n = frames.len();
        if n == 0 {
            return 0;
        }
        // Per message: [virtio-net header (vnet sockets only), frame].
        // SAFETY: a zeroed iovec is valid plain data (null base, length 0).
        let mut iov: [[libc::iovec; 2]; MAX_BURST] = unsafe { std::mem::zeroed() };
        let mut hdrs = [[0u8; VNET_HDR_LEN]; MAX_BURST];
        // SAFETY: a zeroed mmsghdr is valid plain data (no name, no iovecs).
        let mut msgs: [libc::mmsghdr; MAX_BURST] = unsafe { std::mem::zeroed() };
        // SAFETY: a zeroed sockaddr_ll is valid plain data.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = self.ifindex as i32;
        sll.sll_halen = 6;
        for (i, f) in frames.iter().enumerate() {
            let mut k = 0;
            if self.vnet {
                // The header goes first in every send on this socket; only
                // NEEDS_CSUM and GSO mean something on the sending side.
                let mut v = f.offload();
                v.flags &= F_NEEDS_CSUM;
                hdrs[i] = v.to_bytes();
                iov[i][0] = libc::iovec {
                    iov_base: hdrs[i].as_mut_ptr().cast(),
                    iov_len: VNET_HDR_LEN,
                };
                k = 1;
            }
            iov[i][k] = libc::iovec {
                iov_base: f.data().as_ptr() as *mut libc::c_void,
                iov_len: f.len(),
            };
            msgs[i].msg_hdr.msg_iov = iov[i].as_mut_ptr();
            msgs[i].msg_hdr.msg_iovlen = k + 1;
            msgs[i].msg_hdr.msg_name = (&mut sll as *mut libc::sockaddr_ll).cast();
            msgs[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_ll>() as u32;
        }
        // SAFETY: msgs[..n] point at iovecs over live frame buffers, the
        // headers in `hdrs` and at sll, all alive for the call.
        let r = unsafe {
            libc::sendmmsg(
                self.fd.as_raw_fd(),
                msgs.as_mut_ptr(),
                n as u32,
                libc::MSG_DONTWAIT,
            )
        };
        let sent = if r < 0 { 0 } else { r as usize };
        let bytes: usize = frames[..sent].iter().map(|f| f.len()).sum();
        let mut done: Burst = frames.drain(..sent).collect();
        crate::frame::free_burst(&mut done);
        self.counters.opackets.add(sent as u64);
        self.counters.obytes.add(bytes as u64);
        self.counters.oerrors.add((n - sent) as u64);
        sent
    }

    fn flush(&mut self) -> io::Result<()> {
        self.read_stats();
        Ok(())
    }

    /// The socket: poll(2) says POLLIN when the kernel hands over a V2 slot
    /// (each frame, at once) or retires a V3 block (full, or after its 1 ms
    /// timeout: V3 wakes readers per block, not per frame).
    fn idle_wait(&self) -> super::IdleWait {
        match self.ring {
            Some(_) => super::IdleWait::Fd(self.fd.as_raw_fd()),
            None => super::IdleWait::Never,
        }
    }

    fn counters(&self) -> &Arc<PortQueueCounters> {
        &self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> VdevSpec {
        VdevSpec::parse(s).unwrap()
    }

    #[test]
    fn the_ring_kind_defaults_to_v2_and_a_bad_one_is_named() {
        assert_eq!(
            RingKind::of(&spec("net_af_packet0,iface=x")).unwrap(),
            RingKind::V2
        );
        assert_eq!(
            RingKind::of(&spec("net_af_packet0,iface=x,ring=v3")).unwrap(),
            RingKind::V3
        );
        let e = RingKind::of(&spec("net_af_packet0,iface=x,ring=v4"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ring=v4") && e.contains("v2") && e.contains("v3"),
            "{e}"
        );
    }

    #[test]
    fn v2_slots_hold_an_mtu_frame_and_the_ring_keeps_its_size() {
        let s = spec("net_af_packet0,iface=x");
        let g = Geometry::of(&s, RingKind::V2, 1500).unwrap();
        assert_eq!(g.frame_size, 2048);
        // The kernel's macoff with a virtio-net header (76) + the frame.
        assert!(76 + 1514 + 4 <= g.frame_size);
        assert_eq!(g.block_size * g.blocks, V2_RING_BYTES);
        let j = Geometry::of(&s, RingKind::V2, 9000).unwrap();
        assert_eq!(j.frame_size, 16384);
        assert!(j.frame_size >= 9000 + 14 + 8 + V2_SLOT_OVERHEAD);
        assert_eq!(j.block_size * j.blocks, V2_RING_BYTES);
        // RxRing::slot addresses slot i as i x frame size: true only while
        // a block holds a whole number of slots.
        let g = Geometry::of(
            &spec("net_af_packet0,iface=x,blocksz=16384,framesz=3072"),
            RingKind::V2,
            1500,
        );
        assert!(g.is_err(), "a block must hold a whole number of slots");
        let v3 = Geometry::of(&s, RingKind::V3, 1500).unwrap();
        assert_eq!(
            (v3.block_size, v3.blocks, v3.frame_size),
            (1 << 20, 8, 2048)
        );
    }

    #[test]
    fn a_bad_geometry_is_refused_naming_the_values() {
        for kv in ["framesz=100", "blocksz=5000", "framesz=4096,blocksz=2048"] {
            let s = spec(&format!("net_af_packet0,iface=x,{kv}"));
            for kind in [RingKind::V2, RingKind::V3] {
                let e = Geometry::of(&s, kind, 1500).unwrap_err().to_string();
                assert!(
                    e.contains("blocksz=") && e.contains("framesz="),
                    "{kv}: {e}"
                );
            }
        }
    }
}
