//! `net_af_packet`: a Linux interface as a port, through AF_PACKET sockets
//! (the kvargs of DPDK's net_af_packet: `iface`, `qpairs`, `blocksz`,
//! `framecnt`, `qdisc_bypass`).
//!
//! # General idea
//!
//! One socket per queue pair, each owned by one lcore. RX uses a
//! PACKET_MMAP TPACKET_V3 ring: the kernel fills blocks of frames and hands
//! a block over by setting its status to TP_STATUS_USER; the lcore copies
//! each frame into a pool buffer (the ring memory belongs to the kernel, as
//! in DPDK's PMD) and returns the block with TP_STATUS_KERNEL. With more
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
//! Memory ordering with the kernel: K1: Acquire load of a block's status,
//! pairing with the kernel's smp_wmb + status store when it retires the
//! block; K2: Release store of TP_STATUS_KERNEL after the last read of the
//! block, pairing with the kernel's read of the status before reuse.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

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

/// The mmap'ed TPACKET_V3 RX ring of one socket.
struct RxRing {
    base: NonNull<u8>,
    len: usize,
    block_size: usize,
    blocks: usize,
    /// Block being read, packet index in it, and that packet's offset.
    cur: usize,
    pkt_idx: u32,
    pkt_off: usize,
}

// SAFETY: the ring mapping is owned by one RxRing, which one lcore owns.
unsafe impl Send for RxRing {}

impl Drop for RxRing {
    fn drop(&mut self) {
        // SAFETY: base/len are the mapping made in AfPacketQueue::open, unmapped once.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}

impl RxRing {
    #[inline(always)]
    fn block(&self, b: usize) -> *mut u8 {
        // SAFETY: b < blocks, so the offset is inside the mapping.
        unsafe { self.base.as_ptr().add(b * self.block_size) }
    }

    #[inline(always)]
    fn status(&self, b: usize) -> &AtomicU32 {
        // SAFETY: block_status is an aligned u32 inside the mapping, shared
        // with the kernel, accessed only atomically here.
        unsafe { AtomicU32::from_ptr(self.block(b).add(BLK_STATUS).cast()) }
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

pub(super) fn open(
    spec: &VdevSpec,
    port: PortId,
    nb_queues: u16,
) -> Result<Vec<Box<dyn PortQueue>>, PortError> {
    let bad = |why: String| PortError::BadVdev {
        vdev: spec.name.clone(),
        why,
    };
    let (_, ifindex) = netdev::port_iface(spec, LARGE_DATA_ROOM as usize)?;
    let block_size: usize = spec.num("blocksz", 1 << 20)?;
    let frame_size: usize = spec.num("framesz", 2048)?;
    let frame_count: usize = spec.num("framecnt", 4096)?;
    if frame_size < 64
        || !block_size.is_power_of_two()
        || block_size < 4096
        || !block_size.is_multiple_of(frame_size)
    {
        return Err(bad(format!(
            "blocksz={block_size} must be a power of two >= 4096 and a multiple of framesz={frame_size} (>= 64)"
        )));
    }
    let blocks = (frame_count * frame_size).div_ceil(block_size).max(2);
    let bypass = spec.get("qdisc_bypass") != Some("0");
    let group = (std::process::id() as u16) ^ (port.0.wrapping_mul(0x9e37));
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
        let v3 = libc::tpacket_versions::TPACKET_V3 as libc::c_int;
        netdev::setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_VERSION, &v3)
            .map_err(|e| bad(format!("TPACKET_V3: {e}")))?;
        let req = libc::tpacket_req3 {
            tp_block_size: block_size as u32,
            tp_block_nr: blocks as u32,
            tp_frame_size: frame_size as u32,
            tp_frame_nr: (block_size / frame_size * blocks) as u32,
            tp_retire_blk_tov: 1,
            tp_sizeof_priv: 0,
            tp_feature_req_word: libc::TP_FT_REQ_FILL_RXHASH,
        };
        netdev::setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_RX_RING, &req)
            .map_err(|e| bad(format!("PACKET_RX_RING ({blocks} x {block_size} B): {e}")))?;
        let len = blocks * block_size;
        // SAFETY: mapping the ring the kernel just allocated for this socket.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(os_err(spec, "mmap of the RX ring"));
        }
        let ring = RxRing {
            base: NonNull::new(base.cast()).expect("mmap returned non-null"),
            len,
            block_size,
            blocks,
            cur: 0,
            pkt_idx: 0,
            pkt_off: 0,
        };
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

impl PortQueue for AfPacketQueue {
    /// Context: the owning lcore. Copies frames out of kernel-owned blocks;
    /// no allocation, no syscall (stats every STATS_EVERY polls aside).
    fn rx_burst(&mut self, pool: &mut Pool, out: &mut Burst) -> usize {
        self.polls = self.polls.wrapping_add(1);
        if self.polls.is_multiple_of(STATS_EVERY) {
            self.read_stats();
        }
        let Some(ring) = self.ring.as_mut() else {
            return 0;
        };
        let start = out.len();
        let (mut bytes, mut errors) = (0u64, 0u64);
        while out.len() < MAX_BURST {
            let b = ring.cur;
            // K1: Acquire; pairs with the kernel's release of the block.
            if ring.status(b).load(Ordering::Acquire) & libc::TP_STATUS_USER == 0 {
                break;
            }
            let blk = ring.block(b);
            let num = RxRing::read_u32(blk, BLK_NUM_PKTS);
            if ring.pkt_idx == 0 {
                ring.pkt_off = RxRing::read_u32(blk, BLK_FIRST) as usize;
            }
            if ring.pkt_idx >= num {
                // K2: Release; every read of this block happened before.
                ring.status(b)
                    .store(libc::TP_STATUS_KERNEL, Ordering::Release);
                ring.cur = (b + 1) % ring.blocks;
                ring.pkt_idx = 0;
                continue;
            }
            // SAFETY: pkt_off comes from the kernel's block layout
            // (offset_to_first_pkt / tp_next_offset) and stays in the block.
            let p = unsafe { blk.add(ring.pkt_off) };
            let snap = RxRing::read_u32(p, PKT_SNAPLEN) as usize;
            let status = RxRing::read_u32(p, PKT_STATUS);
            let mac = RxRing::read_u16(p, PKT_MAC) as usize;
            let hash = RxRing::read_u32(p, PKT_RXHASH);
            // SAFETY: the sockaddr_ll follows the header inside the block.
            let pkttype = unsafe { *p.add(PKT_SLL + SLL_PKTTYPE) };
            let next = RxRing::read_u32(p, PKT_NEXT) as usize;
            ring.pkt_idx += 1;
            ring.pkt_off += next;
            if pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            let len = RxRing::read_u32(p, PKT_LEN) as usize;
            // SAFETY: [mac, mac + snap) is the frame inside the block.
            let data = unsafe { std::slice::from_raw_parts(p.add(mac), snap) };
            let vnet = if self.vnet && mac >= VNET_HDR_LEN {
                // SAFETY: with PACKET_VNET_HDR the kernel writes the header
                // in the VNET_HDR_LEN bytes before the frame, inside the block.
                let h = unsafe { &*p.add(mac - VNET_HDR_LEN).cast::<[u8; VNET_HDR_LEN]>() };
                VnetHdr::parse(h)
            } else {
                VnetHdr::default()
            };
            let meta = RxMeta {
                status,
                hash,
                tci: RxRing::read_u32(p, PKT_VLAN_TCI) as u16,
                tpid: RxRing::read_u16(p, PKT_VLAN_TPID),
            };
            let ctx = TakeCtx {
                port: self.port,
                queue: self.queue,
                vnet: self.vnet,
                counters: &self.counters,
            };
            match Self::take(ctx, pool, data, len, vnet, meta) {
                Ok(f) => {
                    bytes += snap as u64;
                    out.push(f);
                }
                Err(RxRefusal::NoBuffer) => self.counters.rx_nombuf.add(1),
                Err(RxRefusal::Oversize) => self.counters.rx_oversize.add(1),
                Err(RxRefusal::BadOffload) => self.counters.rx_bad_offload.add(1),
                Err(RxRefusal::Error) => errors += 1,
            }
        }
        let n = out.len() - start;
        self.counters.ipackets.add(n as u64);
        self.counters.ibytes.add(bytes);
        self.counters.ierrors.add(errors);
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

    /// The socket: poll(2) says POLLIN when the kernel retires a ring
    /// block (full, or after its 1 ms timeout: TPACKET_V3 wakes readers per
    /// block, not per frame).
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
