//! The exception path through DPDK: the net_tap PMD (`--exception
//! tap:IFNAME` in a DPDK run) or net_virtio_user on the vhost-kernel
//! backend (`--exception virtio-user:/dev/vhost-net`), DPDK's replacements
//! for KNI. Both are ethdevs: each delivering lcore owns one TX/RX queue
//! pair, so delivery is one `rte_eth_tx_burst` of the frames' own mbufs —
//! no copy from the NIC to the kernel's socket buffer.
//!
//! Context: created on the control thread before lcores start; each sink is
//! moved to its lcore.
#![allow(unsafe_code)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

use super::gro::{self, Gro};
use super::tap::{KernelMac, TapSpec};
use super::{Delivery, ExceptionError, ExceptionSink, ReverseRx, VirtioSpec};
use crate::dpdk::ethdev::{self, EthPort, EthQueue, PortSetup};
use crate::dpdk::{Eal, Mbuf, Mempool};
use crate::frame::{Burst, MAX_BURST};
use crate::frame::{Frame, Pool, free_burst};
use crate::port::netdev;

/// Which DPDK device carries the exception path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// DPDK's net_tap PMD.
    Tap,
    /// virtio-user towards vhost-net.
    VirtioUser,
    /// virtio-user towards a vhost-user backend (another process).
    VhostUser,
}

/// A started exception device; hands out one queue per lcore.
pub struct DpdkException {
    /// Closed when its last queue handle goes; the EAL's cleanup removes
    /// the vdev.
    port: Arc<EthPort>,
    ifname: String,
    kind: Kind,
    mac: [u8; 6],
    rewrite: bool,
    /// Each sink merges TCP segments into TSO super-frames (virtio-user
    /// with a backend that offers TSO, `gro` not turned off).
    gro: bool,
    next: AtomicU16,
    /// Per queue (in sink opening order): its lcore can transmit on a port.
    senders: Vec<bool>,
}

/// RX/TX descriptors per exception queue.
pub const DESC: u16 = 1024;

impl DpdkException {
    /// net_tap: creates (or attaches to) the kernel TAP `spec.ifname` with
    /// `queues` queue pairs.
    pub fn tap(
        eal: &Eal,
        spec: &TapSpec,
        kernel_mac: KernelMac,
        queues: u16,
        pool: Arc<Mempool>,
    ) -> Result<Self, ExceptionError> {
        netdev::check_name(&spec.ifname).map_err(ExceptionError::Tap)?;
        let vdev = format!("net_tap_{}", spec.ifname);
        let mut args = format!("iface={}", spec.ifname);
        if let Some(m) = spec.mac {
            args.push_str(&format!(",mac={}", netdev::fmt_mac(m)));
        }
        Self::start(
            eal,
            Kind::Tap,
            vdev,
            &args,
            &spec.ifname,
            spec.up,
            kernel_mac,
            queues,
            pool,
            false,
        )
    }

    /// net_virtio_user at `path`: the vhost-kernel backend when `path` is
    /// `/dev/vhost-net` (a character device; the kernel interface is
    /// `cpumapd0`), else a vhost-user backend's UNIX socket (testpmd
    /// `net_vhost`, OVS-DPDK, a VM's vhost-user port): frames go to that
    /// process, which needs memory it can map (hugepages with `--in-memory`
    /// or `--single-file-segments`; `--no-huge` cannot be shared).
    pub fn virtio_user(
        eal: &Eal,
        spec: &VirtioSpec,
        kernel_mac: KernelMac,
        queues: u16,
        pool: Arc<Mempool>,
    ) -> Result<Self, ExceptionError> {
        use std::os::unix::fs::FileTypeExt;
        let path = spec.path.as_path();
        let meta = std::fs::metadata(path).map_err(|e| {
            ExceptionError::Tap(if path == Path::new("/dev/vhost-net") {
                format!(
                    "virtio-user: {} does not exist: this kernel has no vhost-net (modprobe vhost_net, or use --exception tap:IFNAME, which needs only /dev/net/tun)",
                    path.display()
                )
            } else {
                format!(
                    "virtio-user: {}: {e}: start the vhost-user backend (e.g. dpdk-testpmd --vdev net_vhost0,iface={}) first",
                    path.display(),
                    path.display()
                )
            })
        })?;
        if meta.file_type().is_socket() {
            if let Some(why) = eal.memory().vhost_user_problem() {
                return Err(ExceptionError::Tap(format!(
                    "virtio-user:{}: {why}",
                    path.display()
                )));
            }
            let args = format!("path={},queues={queues},queue_size={DESC}", path.display());
            return Self::start(
                eal,
                Kind::VhostUser,
                "virtio_user_cpumapd".into(),
                &args,
                "",
                false,
                kernel_mac,
                queues,
                pool,
                spec.gro,
            );
        }
        if !meta.file_type().is_char_device() {
            return Err(ExceptionError::Tap(format!(
                "virtio-user: {} is neither /dev/vhost-net (a character device) nor a vhost-user socket",
                path.display()
            )));
        }
        let ifname = "cpumapd0";
        let args = format!(
            "path={},queues={queues},queue_size={DESC},iface={ifname}",
            path.display()
        );
        Self::start(
            eal,
            Kind::VirtioUser,
            "virtio_user_cpumapd".into(),
            &args,
            ifname,
            true,
            kernel_mac,
            queues,
            pool,
            spec.gro,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn start(
        eal: &Eal,
        kind: Kind,
        vdev: String,
        args: &str,
        ifname: &str,
        up: bool,
        kernel_mac: KernelMac,
        queues: u16,
        pool: Arc<Mempool>,
        gro: bool,
    ) -> Result<Self, ExceptionError> {
        let err = |e: crate::dpdk::DpdkError| ExceptionError::Tap(format!("exception path: {e}"));
        let id = ethdev::add_vdev(eal, &vdev, args).map_err(err)?;
        let info = ethdev::ports(eal)
            .into_iter()
            .find(|p| p.id == id)
            .ok_or_else(|| ExceptionError::Tap(format!("{vdev}: port {id} vanished")))?;
        let started = EthPort::start(
            info,
            PortSetup {
                rx_queues: queues,
                tx_queues: queues,
                rx_desc: DESC,
                tx_desc: DESC,
                rx_pools: vec![pool],
                tx_l4_csum: true,
                // Its RX queues carry the kernel's reverse frames, polled
                // beside the data path: no interrupts asked for.
                rx_intr: false,
                // net_tap would cut a super-frame back in software (its
                // TSO is rte_gso) before the write: GRO gains nothing there.
                tx_tso: gro,
            },
        );
        let port = match started {
            Ok(p) => p,
            Err(e) => {
                ethdev::remove_vdev(&vdev);
                return Err(err(e));
            }
        };
        if gro && !port.tx_tso {
            eprintln!(
                "cpumapd: {vdev}: the backend offers no TCP segmentation offload (VIRTIO_NET_F_HOST_TSO4/6; testpmd's net_vhost needs tso=1): GRO is off, segments go one by one"
            );
        }
        if up {
            netdev::set_up(ifname)
                .map_err(|e| ExceptionError::Tap(format!("{ifname}: cannot bring it up: {e}")))?;
        }
        let mac = if kind == Kind::VhostUser {
            // No kernel side: the backend takes what it gets; the frames
            // keep their MAC unless asked to carry the device's own.
            port.info.mac
        } else {
            netdev::mac(ifname).map_err(|e| {
                ExceptionError::Tap(format!("{ifname}: cannot read the kernel side's MAC: {e}"))
            })?
        };
        let gro = gro && port.tx_tso;
        Ok(DpdkException {
            port,
            ifname: if ifname.is_empty() {
                vdev.clone()
            } else {
                ifname.into()
            },
            kind,
            mac,
            rewrite: kernel_mac == KernelMac::Rewrite,
            gro,
            next: AtomicU16::new(0),
            senders: Vec::new(),
        })
    }

    /// Which queues' lcores can send the kernel's frames on (see
    /// [`Exception::prepare_dpdk`](super::Exception::prepare_dpdk)); without
    /// it, every lcore polls its own queue.
    pub fn with_senders(mut self, senders: &[bool]) -> Self {
        self.senders = senders.to_vec();
        self
    }

    /// The RX queues sink `q` polls: its own if its lcore can send, plus
    /// a round-robin share of those whose lcore cannot (a target without a
    /// TX queue of its own on port 0: net_af_xdp on a one-queue veth, an
    /// af_packet vdev with one qpair). The kernel picks the TAP queue a
    /// frame leaves on, so every queue must have a poller that can send.
    fn rx_queues_of(&self, q: u16) -> Vec<u16> {
        let n = self.port.rx_queues;
        let can = |r: u16| self.senders.get(r as usize).copied().unwrap_or(true);
        let pollers: Vec<u16> = (0..n).filter(|&r| can(r)).collect();
        if pollers.is_empty() || !can(q) {
            return Vec::new();
        }
        let mut orphan = 0usize;
        let mut mine = Vec::new();
        for r in 0..n {
            let owner = if can(r) {
                r
            } else {
                orphan += 1;
                pollers[(orphan - 1) % pollers.len()]
            };
            if owner == q {
                mine.push(r);
            }
        }
        mine
    }

    /// Which device it is.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The kernel-side interface's name.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The ethdev port.
    pub fn port(&self) -> &Arc<EthPort> {
        &self.port
    }

    /// The next queue pair, for one lcore.
    pub fn open_sink(&self) -> Result<DpdkSink, ExceptionError> {
        let q = self.next.fetch_add(1, Ordering::Relaxed);
        if q >= self.port.tx_queues {
            return Err(ExceptionError::Tap(format!(
                "{}: all {} queues are taken",
                self.ifname, self.port.tx_queues
            )));
        }
        Ok(DpdkSink {
            tx: self.port.queue(None, Some(q)),
            rx: self
                .rx_queues_of(q)
                .into_iter()
                .map(|r| self.port.queue(Some(r), None))
                .collect(),
            turn: 0,
            mac: self.mac,
            rewrite: self.rewrite,
            l4_csum: self.port.tx_l4_csum,
            gro: self.gro.then(Box::<Gro>::default),
        })
    }
}

/// One lcore's TX queue on the exception device, and the RX queues it
/// polls for the kernel's frames (its own, more, or none).
pub struct DpdkSink {
    tx: EthQueue,
    rx: Vec<EthQueue>,
    /// The RX queue to poll first next time (fairness across several).
    turn: usize,
    mac: [u8; 6],
    rewrite: bool,
    /// The device fills in TCP/UDP checksums (net_tap does it in software,
    /// virtio-user passes NEEDS_CSUM to its backend).
    l4_csum: bool,
    /// GRO state when the device takes TSO super-frames.
    gro: Option<Box<Gro>>,
}

impl DpdkSink {
    /// A frame whose checksum a sender's offload left partial (a veth peer
    /// over net_af_packet or net_af_xdp): the device is asked to finish it,
    /// or cpumapd does. Without it the kernel drops the segment as a
    /// checksum error (InCsumErrors) and TCP never gets through.
    #[inline]
    fn finish_checksum(&self, f: &mut Frame, m: Mbuf) {
        use crate::wire::vnet::F_DATA_VALID;
        if f.offload().flags & F_DATA_VALID != 0 {
            return;
        }
        let Some(l4) = crate::wire::partial_checksum(f.data()) else {
            return;
        };
        let tcp = l4.proto == crate::wire::IPPROTO_TCP;
        // The TCP header's length from its data offset (l4_span checked
        // that a minimal header is there); UDP's is fixed.
        let l4_len = if tcp {
            let doff = (f.data()[l4.offset + 12] >> 4) as usize * 4;
            doff.clamp(crate::wire::field::tcp::MIN_HEADER_LEN, l4.len)
        } else {
            crate::wire::field::udp::HEADER_LEN
        };
        if self.l4_csum {
            let lens = [
                l4.l3_offset as u16,
                (l4.offset - l4.l3_offset) as u16,
                l4_len as u16,
            ];
            // SAFETY: the frame owns this mbuf.
            unsafe { m.request_l4_checksum(lens, l4.ipv6, tcp) };
        } else {
            crate::wire::complete_l4_checksum(f.data_mut());
        }
    }
}

impl DpdkSink {
    /// Sends `ms` (each entry standing for `segs[i]` frames: a GRO
    /// super-frame for more than one) and counts them: what the driver
    /// refuses is `busy`, or `down` when the kernel side's link is down.
    fn send(
        &mut self,
        ms: &mut arrayvec::ArrayVec<Mbuf, MAX_BURST>,
        segs: &[u8],
        d: &mut Delivery,
    ) {
        // SAFETY: we own every mbuf in ms (taken out of their frames).
        let sent = unsafe { self.tx.tx_burst(ms) };
        for &k in &segs[..sent] {
            d.delivered += k as usize;
            if k > 1 {
                d.gro_segments += k as usize;
                d.gro_frames += 1;
            }
        }
        let left: usize = segs[sent..].iter().map(|&k| k as usize).sum();
        if left > 0 {
            if self.tx.port().link().0 {
                d.busy += left;
            } else {
                d.down += left;
            }
            // SAFETY: the driver refused these; we still own them.
            unsafe { Mbuf::free_bulk(&mut ms[sent..]) };
        }
    }

    /// Every frame as it is: one mbuf each.
    fn deliver_each(&mut self, frames: &mut Burst) -> Delivery {
        let mut ms = arrayvec::ArrayVec::<Mbuf, MAX_BURST>::new();
        let mut native = Burst::new();
        for mut f in frames.drain(..) {
            if let Some(m) = f.mbuf() {
                self.finish_checksum(&mut f, m);
            }
            match f.into_mbuf() {
                Ok(m) => ms.push(m),
                Err(f) => native.push(f),
            }
        }
        let mut d = Delivery {
            failed: native.len(),
            ..Default::default()
        };
        free_burst(&mut native);
        let n = ms.len();
        self.send(&mut ms, &[1; MAX_BURST][..n], &mut d);
        d
    }

    /// GRO: each flow's TCP segments in the burst become one chained
    /// super-frame the device segments again (TSO: virtio-user hands it to
    /// its backend whole, with a virtio-net GSO header); the rest go one
    /// by one.
    fn deliver_merged(&mut self, frames: &mut Burst, gro: &mut Gro) -> Delivery {
        plan(gro, frames);
        for e in gro.emits.iter().filter(|e| e.members.len() == 1) {
            let f = &mut frames[e.members[0] as usize];
            if let Some(m) = f.mbuf() {
                self.finish_checksum(f, m);
            }
        }
        let mut ms = arrayvec::ArrayVec::<Mbuf, MAX_BURST>::new();
        let mut segs = [0u8; MAX_BURST];
        let mut d = Delivery {
            failed: chain_planned(gro, frames, &mut ms, &mut segs),
            ..Default::default()
        };
        let n = ms.len();
        self.send(&mut ms, &segs[..n], &mut d);
        d
    }
}

/// Plans GRO over a burst of mbuf frames: single-segment TCP segments merge
/// when their checksum is known good (the NIC's flag, or verified here) or
/// left to offload; UDP does not (virtio-user has no USO).
fn plan(gro: &mut Gro, frames: &mut Burst) -> usize {
    use crate::wire::vnet::F_DATA_VALID;
    use crate::wire::{CsumState, checksum_state};
    gro.plan_with(frames, false, |f| {
        f.mbuf().is_some_and(|m| {
            // SAFETY: the frame owns its mbuf.
            unsafe { m.nb_segs() == 1 }
        }) && (f.offload().flags & F_DATA_VALID != 0
            || matches!(
                checksum_state(f.data()),
                Some(CsumState::Valid | CsumState::Partial(_))
            ))
    })
}

/// Turns a planned burst into what tx_burst takes: each merged group's
/// first mbuf asks for TSO and chains the other members' payloads; a frame
/// alone stays as it is. `segs[i]` is how many frames `ms[i]` stands for.
/// Empties `frames`; returns how many frames could not go (native frames,
/// a chain the mbuf library refused), all freed.
fn chain_planned(
    gro: &Gro,
    frames: &mut Burst,
    ms: &mut arrayvec::ArrayVec<Mbuf, MAX_BURST>,
    segs: &mut [u8; MAX_BURST],
) -> usize {
    for e in gro.emits.iter().filter(|e| e.members.len() > 1) {
        let f = &mut frames[e.members[0] as usize];
        let Some(m) = f.mbuf() else { continue };
        gro::tso_seed(f.data_mut(), e);
        let g = e.gso;
        let lens = [
            e.l3 as u16,
            g.csum_start - e.l3 as u16,
            g.hdr_len - g.csum_start,
        ];
        let v6 = g.gso_type == crate::wire::vnet::GSO_TCPV6;
        // SAFETY: the frame owns this mbuf.
        unsafe { m.request_tso(lens, v6, g.gso_size) };
    }
    let mut slot = [None::<Mbuf>; MAX_BURST];
    let mut native = Burst::new();
    for (i, f) in frames.drain(..).enumerate() {
        match f.into_mbuf() {
            Ok(m) => slot[i] = Some(m),
            Err(f) => native.push(f),
        }
    }
    let mut failed = native.len();
    free_burst(&mut native);
    for e in &gro.emits {
        let Some(head) = slot[e.members[0] as usize].take() else {
            continue; // a native frame, counted above
        };
        let mut broken = false;
        for &i in &e.members[1..] {
            let Some(tail) = slot[i as usize].take() else {
                continue;
            };
            // SAFETY: we own both; on success the head owns the tail.
            if broken || unsafe { head.chain_payload(tail, e.hdr_len as u16) }.is_err() {
                // Never for single-segment members (planned so): the
                // super-frame is incomplete, so none of it goes.
                broken = true;
                // SAFETY: still ours after the refusal.
                unsafe { tail.free() };
            }
        }
        if broken {
            failed += e.members.len();
            // SAFETY: ours, with whatever it chained.
            unsafe { head.free() };
            continue;
        }
        segs[ms.len()] = e.members.len() as u8;
        ms.push(head);
    }
    failed
}

impl ExceptionSink for DpdkSink {
    /// Context: the owning lcore. The mbufs go to the driver as they are
    /// (GRO super-frames chained from them where the device takes TSO);
    /// what it refuses (queue full) is `busy`, or `down` when the kernel
    /// side's link is down; a native frame (not an mbuf) is `failed`.
    fn deliver_burst(&mut self, frames: &mut Burst) -> Delivery {
        if self.rewrite {
            for f in frames.iter_mut() {
                crate::wire::set_unicast_dst(f.data_mut(), self.mac);
            }
        }
        match self.gro.take() {
            Some(mut gro) => {
                let d = self.deliver_merged(frames, &mut gro);
                self.gro = Some(gro);
                d
            }
            None => self.deliver_each(frames),
        }
    }

    /// Frames the kernel sent into the device, as mbufs from the device's
    /// pool (`_pool` is not used). They only leave again by tx_burst, which
    /// takes chained mbufs as they are.
    fn receive_burst(&mut self, _pool: &mut Pool, out: &mut Burst) -> ReverseRx {
        let mut frames = 0;
        let k = self.rx.len();
        for i in 0..k {
            let want = out.remaining_capacity();
            if want == 0 {
                break;
            }
            let q = &mut self.rx[(self.turn + i) % k];
            let mut raw = [None::<Mbuf>; MAX_BURST];
            let n = q.rx_burst(&mut raw[..want]);
            for m in raw[..n].iter().flatten() {
                // SAFETY: rx_burst gave us this mbuf; the frame owns it now.
                out.push(unsafe { Frame::from_mbuf(*m) });
            }
            frames += n;
        }
        if k > 1 {
            self.turn = (self.turn + 1) % k;
        }
        ReverseRx {
            frames,
            no_buffer: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dpdk::mbuf::tests::eal;
    use crate::wire::{CsumState, checksum_state};

    fn tcp(seq: u32, payload: &[u8], psh: bool, id: u16) -> Vec<u8> {
        let flow = gro::tests::Flow {
            sport: 4000,
            v6: false,
        };
        gro::tests::tcp(&flow, seq, payload, psh, id)
    }

    #[test]
    fn a_flows_segments_become_one_tso_chain_and_the_rest_go_alone() {
        let _ = eal();
        let mp = Arc::new(Mempool::new("unit_gro", 64, 128, 2048, -1).unwrap());
        let mut pool = Pool::from_mempool(mp.clone());
        // Five segments of one flow (the last with PSH), a UDP datagram
        // between them, and a segment whose checksum is wrong.
        let mut raw: Vec<Vec<u8>> = (0..4u32)
            .map(|k| tcp(1000 + k * 1000, &[k as u8; 1000], false, 7 + k as u16))
            .collect();
        raw.insert(2, {
            let mut v = Vec::new();
            etherparse::PacketBuilder::ethernet2([2; 6], [4; 6])
                .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
                .udp(53, 53)
                .write(&mut v, &[9; 300])
                .unwrap();
            v
        });
        raw.push(tcp(5000, &[4; 600], true, 11));
        let mut bad = tcp(9000, &[5; 100], false, 12);
        bad[60] ^= 0xff;
        raw.push(bad);
        let mut burst = Burst::new();
        assert_eq!(pool.alloc_burst(&mut burst, raw.len()), raw.len());
        for (f, r) in burst.iter_mut().zip(&raw) {
            f.copy_from(r).unwrap();
        }
        let mut gro = Gro::default();
        assert_eq!(plan(&mut gro, &mut burst), 1);
        let mut ms = arrayvec::ArrayVec::<Mbuf, MAX_BURST>::new();
        let mut segs = [0u8; MAX_BURST];
        assert_eq!(chain_planned(&gro, &mut burst, &mut ms, &mut segs), 0);
        assert!(burst.is_empty());
        // The datagram went when it came (it belongs to no open group); the
        // flow's group closed at its PSH segment.
        assert_eq!(&segs[..ms.len()], &[1, 5, 1], "UDP, the chain, the bad one");
        let head = ms[1];
        // SAFETY: ms owns these mbufs until they are freed below.
        let (mut v, nb_segs, segsz, flags) = unsafe {
            (
                head.to_vec(),
                head.nb_segs(),
                head.tso_segsz(),
                head.ol_flags(),
            )
        };
        assert_eq!(nb_segs, 5);
        assert_eq!(segsz, 1000, "segment size: the first member's payload");
        let want = crate::dpdk::mbuf::TX_TCP_SEG | crate::dpdk::mbuf::TX_IPV4;
        assert_eq!(flags & want, want);
        let payload: Vec<u8> = (0..4u8).flat_map(|k| [k; 1000]).chain([4u8; 600]).collect();
        assert_eq!(v.len(), 54 + payload.len());
        assert_eq!(&v[54..], &payload[..], "payloads in sequence order");
        assert_eq!(&v[..14], &raw[0][..14]);
        assert_eq!(
            u16::from_be_bytes([v[16], v[17]]) as usize,
            20 + 20 + payload.len()
        );
        assert_eq!(v[47] & 0x08, 0x08, "PSH from the last member");
        // The field holds the pseudo-header sum without the length (the
        // driver adds each segment's): with the length back it is the
        // seed of a partial checksum over the whole super-frame.
        let l4_len = 20 + payload.len() as u32;
        let mut acc = u16::from_be_bytes([v[50], v[51]]) as u32 + l4_len;
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        v[50..52].copy_from_slice(&(acc as u16).to_be_bytes());
        assert!(matches!(checksum_state(&v), Some(CsumState::Partial(_))));
        // The datagram and the bad segment untouched.
        // SAFETY: as above.
        unsafe {
            assert_eq!(ms[0].to_vec(), raw[2]);
            assert_eq!(ms[2].to_vec(), raw[6]);
            assert_eq!(ms[0].ol_flags() & want, 0);
            Mbuf::free_bulk(&mut ms);
        }
        assert_eq!(mp.in_use(), 0, "every mbuf of the chain went back");
    }
}
