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

use super::tap::{KernelMac, TapSpec};
use super::{Delivery, ExceptionError, ExceptionSink, ReverseRx};
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
        path: &Path,
        kernel_mac: KernelMac,
        queues: u16,
        pool: Arc<Mempool>,
    ) -> Result<Self, ExceptionError> {
        use std::os::unix::fs::FileTypeExt;
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
            },
        );
        let port = match started {
            Ok(p) => p,
            Err(e) => {
                ethdev::remove_vdev(&vdev);
                return Err(err(e));
            }
        };
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

impl ExceptionSink for DpdkSink {
    /// Context: the owning lcore. The mbufs go to the driver as they are;
    /// what it refuses (queue full) is `busy`, or `down` when the kernel
    /// side's link is down; a native frame (not an mbuf) is `failed`.
    fn deliver_burst(&mut self, frames: &mut Burst) -> Delivery {
        let mut ms = arrayvec::ArrayVec::<Mbuf, MAX_BURST>::new();
        let mut native = Burst::new();
        for mut f in frames.drain(..) {
            if self.rewrite {
                crate::wire::set_unicast_dst(f.data_mut(), self.mac);
            }
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
        // SAFETY: we own every mbuf in ms (taken out of their frames).
        let sent = unsafe { self.tx.tx_burst(&mut ms) };
        d.delivered = sent;
        let left = ms.len() - sent;
        if left > 0 {
            if self.tx.port().link().0 {
                d.busy = left;
            } else {
                d.down = left;
            }
            // SAFETY: the driver refused these; we still own them.
            unsafe { Mbuf::free_bulk(&mut ms[sent..]) };
        }
        d
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
