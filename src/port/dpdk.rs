//! DPDK ethdev queues as [`PortQueue`]s: frames are the driver's mbufs,
//! handed on without a copy.
//!
//! Context: each `DpdkQueue` is owned by the one lcore that polls it (its
//! RX queue index and its TX queue index are that lcore's alone).
#![allow(unsafe_code)]

use std::sync::Arc;

use super::{Burst, MAX_BURST, PortQueue};
use crate::counters::PortQueueCounters;
use crate::dpdk::Mbuf;
use crate::dpdk::ethdev::EthQueue;
use crate::frame::{Frame, Pool};

/// One ethdev queue as a [`PortQueue`]: bursts straight from and to the PMD.
pub struct DpdkQueue {
    q: EthQueue,
    queue: u16,
    counters: Arc<PortQueueCounters>,
    /// The cut-short warning was given.
    warned: bool,
    /// The interrupt-arming warning was given.
    intr_warned: bool,
}

impl DpdkQueue {
    /// Wraps a queue handle.
    pub fn new(q: EthQueue) -> Self {
        DpdkQueue {
            queue: q.rx_queue().or(q.tx_queue()).unwrap_or(0),
            q,
            counters: Arc::default(),
            warned: false,
            intr_warned: false,
        }
    }
}

/// The largest frame of a 1500-byte MTU with two VLAN tags: shorter frames
/// skip the cut-short check.
const PLAIN_FRAME: usize = 1522;

impl DpdkQueue {
    /// Counts frames the driver cut short (`rx_oversize`) and says once
    /// what to do about it.
    #[cold]
    fn cut_short(&mut self, n: u64) {
        self.counters.rx_oversize.add(n);
        if !self.warned {
            self.warned = true;
            eprintln!(
                "cpumapd: port queue {}: frames shorter than their IP length (a GSO super-frame the driver could not take whole; DPDK's net_af_packet has no virtio-net header): counted as rx_oversize and dropped. Turn GSO/TSO off on the sender (ethtool -K IF tso off gso off), or use cpumapd's own AF_PACKET port, which takes them whole",
                self.queue
            );
        }
    }
}

impl PortQueue for DpdkQueue {
    /// `rte_eth_rx_burst`; the driver's pool feeds the queue, so `_pool` is
    /// not used. Multi-segment frames (a driver scattering a jumbo frame)
    /// are freed and counted as `ierrors`: the pipeline handles one segment.
    /// So is a frame whose stripped VLAN tag finds no headroom to go back.
    /// A frame shorter than its IP length is `rx_oversize`.
    #[inline]
    fn rx_burst(&mut self, _pool: &mut Pool, out: &mut Burst) -> usize {
        let want = out.remaining_capacity();
        let mut raw = [None::<Mbuf>; MAX_BURST];
        let n = self.q.rx_burst(&mut raw[..want]);
        let (mut got, mut bytes, mut bad, mut cut) = (0usize, 0usize, 0u64, 0u64);
        for m in raw[..n].iter().flatten() {
            // SAFETY: rx_burst gave us this mbuf; we own it.
            let f = unsafe {
                if m.nb_segs() != 1 {
                    m.free();
                    bad += 1;
                    continue;
                }
                // The port and RSS hash are the driver's; stamp our queue.
                m.set_queue(self.queue);
                let stripped = m.vlan_stripped().then(|| m.vlan_tci());
                let mut f = Frame::from_mbuf(*m);
                // A tag the driver took out goes back into the bytes, as on
                // the native ports: filters and the kernel see it.
                if let Some(tci) = stripped
                    && f.insert_vlan(crate::wire::ETH_P_8021Q, tci).is_err()
                {
                    drop(f);
                    bad += 1;
                    continue;
                }
                f
            };
            // Past a plain 1500-byte frame, check the driver did not cut it
            // (net_af_packet keeps only a ring frame of a GSO super-frame).
            if f.len() > PLAIN_FRAME && crate::wire::cut_short(f.data()) {
                drop(f);
                cut += 1;
                continue;
            }
            bytes += f.len();
            got += 1;
            out.push(f);
        }
        if bad > 0 {
            self.counters.ierrors.add(bad);
        }
        if cut > 0 {
            self.cut_short(cut);
        }
        self.counters.ipackets.add(got as u64);
        self.counters.ibytes.add(bytes as u64);
        got
    }

    /// `rte_eth_tx_burst` of the mbuf frames at the front of `frames`; a
    /// native frame (not an mbuf) stops the burst and stays, with the
    /// driver's refusals, for the caller to count.
    #[inline]
    fn tx_burst(&mut self, frames: &mut Burst) -> usize {
        let mut ms = arrayvec::ArrayVec::<Mbuf, MAX_BURST>::new();
        for f in frames.iter() {
            match f.mbuf() {
                Some(m) => ms.push(m),
                None => break,
            }
        }
        // SAFETY: the frames own these mbufs; the ones the driver takes are
        // forgotten below, the rest stay owned by their frames.
        let sent = unsafe { self.q.tx_burst(&mut ms) };
        let sent_bytes: usize = frames[..sent].iter().map(Frame::len).sum();
        for f in frames.drain(..sent) {
            // The driver owns the mbuf now.
            let _ = f.into_mbuf();
        }
        self.counters.opackets.add(sent as u64);
        self.counters.obytes.add(sent_bytes as u64);
        sent
    }

    /// Block on the queue's RX interrupt where its PMD has one (net_memif,
    /// net_tap, NICs with vfio-pci MSI-X), else nap.
    fn idle_wait(&self) -> super::IdleWait {
        match self.q.rx_intr_fd() {
            Some(fd) => super::IdleWait::Interrupt(fd),
            None => super::IdleWait::Nap,
        }
    }

    fn set_interrupt(&mut self, on: bool) {
        if let Err(rc) = self.q.set_rx_intr(on) {
            // The lcore then finds the queue by its timeout, not its
            // interrupt: slower, never lost.
            if !self.intr_warned {
                self.intr_warned = true;
                eprintln!(
                    "cpumapd: RX queue {}: rte_eth_dev_rx_intr_{}: error {rc}; idle waits end by timeout",
                    self.queue,
                    if on { "enable" } else { "disable" }
                );
            }
        }
    }

    fn counters(&self) -> &Arc<PortQueueCounters> {
        &self.counters
    }
}
