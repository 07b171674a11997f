//! What a DPDK run sets up before its lcores start: per-socket mbuf pools,
//! every probed port configured (RSS across its RX queues) and started,
//! and the queue handles each lcore will own.
//!
//! Context: control thread (the EAL main lcore), before any launch.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::LcoreError;
use crate::config::{Plan, PortSpec};
use crate::dpdk::ethdev::{EthPort, PortSetup};
use crate::dpdk::{Eal, Mempool};
use crate::dpdk::{RX_DESC, TX_DESC};
use crate::frame::PoolStats;
use crate::ids::LcoreId;
use crate::port::PortQueue;
use crate::port::dpdk::DpdkQueue;

pub struct DpdkEnv {
    pub eal: Eal,
    /// One pool per NUMA socket that has an RX lcore.
    pools: BTreeMap<u32, Arc<Mempool>>,
    /// Ports in plan order.
    pub ports: Vec<Arc<EthPort>>,
    /// RX queues per port (TX queues beyond these are for targets' reverse
    /// direction, on port 0).
    rx_queues: Vec<u16>,
}

impl DpdkEnv {
    /// Creates the pools and starts every port. `reverse_senders` is how
    /// many targets transmit the kernel's frames on port 0.
    pub fn start(eal: Eal, plan: &Plan, reverse_senders: u16) -> Result<DpdkEnv, LcoreError> {
        let err = |e: crate::dpdk::DpdkError| LcoreError::Dpdk(e.to_string());
        let rx_lcores = plan.rx_lcores();
        let mut per_socket: BTreeMap<u32, u32> = BTreeMap::new();
        for &l in &rx_lcores {
            *per_socket.entry(eal.socket_of(l)).or_default() += 1;
        }
        let mut pools = BTreeMap::new();
        for (&socket, &n_rx) in &per_socket {
            let n = plan.dpdk_mempool_size(n_rx);
            let mp = Mempool::new(
                &format!("cpumapd_s{socket}"),
                n,
                plan.headroom,
                plan.data_room,
                socket as i32,
            )
            .map_err(err)?;
            pools.insert(socket, Arc::new(mp));
        }
        let mut ports = Vec::new();
        let mut rx_queues = Vec::new();
        for (p, spec) in plan.ports.iter().enumerate() {
            let PortSpec::Dpdk(info) = spec else {
                return Err(LcoreError::Dpdk(format!(
                    "port{p} ({}) is not a DPDK port",
                    spec.name()
                )));
            };
            // What eBPF programs see as ingress_ifindex for this port's
            // frames (mbuf port = ethdev id).
            crate::port::set_ifindex(crate::ids::PortId(info.id), info.if_index);
            let mut mine: Vec<_> = plan.rx.iter().filter(|r| r.port.0 as usize == p).collect();
            mine.sort_by_key(|r| r.queue);
            let n_rx = mine.len() as u16;
            let extra = if p == 0 { reverse_senders } else { 0 };
            let n_tx = (n_rx + extra).min(info.max_tx_queues.max(1));
            let rx_pools = mine
                .iter()
                .map(|r| pools[&eal.socket_of(r.lcore)].clone())
                .collect();
            let port = EthPort::start(
                info.clone(),
                PortSetup {
                    rx_queues: n_rx,
                    tx_queues: n_tx,
                    rx_desc: RX_DESC,
                    tx_desc: TX_DESC,
                    rx_pools,
                    tx_l4_csum: false,
                    rx_intr: true,
                    tx_tso: false,
                },
            )
            .map_err(err)?;
            // Which idle wait this port's RX lcores get (docs/DPDK.md).
            let with_intr = port.rx_intr().iter().filter(|f| f.is_some()).count();
            eprintln!(
                "cpumapd: port{p} ({}): {}",
                info.name,
                match with_intr {
                    0 => "no RX interrupts in this PMD: idle RX lcores nap (20 us to 1 ms)"
                        .to_string(),
                    n => format!(
                        "RX interrupts on {n} of {n_rx} queue(s): idle RX lcores block on them"
                    ),
                }
            );
            ports.push(port);
            rx_queues.push(n_rx);
        }
        Ok(DpdkEnv {
            eal,
            pools,
            ports,
            rx_queues,
        })
    }

    /// Closes the ports, frees the pools (their last users are gone: the
    /// caller dropped every queue, sink and statistics handle), then
    /// `rte_eal_cleanup`.
    pub fn cleanup(self) {
        let DpdkEnv {
            eal, pools, ports, ..
        } = self;
        drop(ports);
        drop(pools);
        eal.cleanup();
    }

    /// The pool RX lcore `l` allocates from (its socket's).
    pub fn pool_for(&self, l: LcoreId) -> Arc<Mempool> {
        let s = self.eal.socket_of(l);
        self.pools
            .get(&s)
            .or_else(|| self.pools.values().next())
            .expect("at least one RX lcore, so one pool")
            .clone()
    }

    /// Any pool (for the exception device and the reverse direction).
    pub fn first_pool(&self) -> Arc<Mempool> {
        self.pools.values().next().expect("one pool").clone()
    }

    /// The pool the exception device's RX queues (the kernel's frames)
    /// refill from: its own, so that the reverse direction never starves
    /// the ports' RX and a port whose pool is its AF_XDP UMEM (net_af_xdp)
    /// copies the kernel's frames instead of sending buffers it did not
    /// receive. Sized for every queue's descriptors plus bursts in flight.
    pub fn exception_pool(&self, plan: &Plan, queues: usize) -> Result<Arc<Mempool>, LcoreError> {
        let n = (queues as u32)
            * (crate::exception::dpdk::DESC as u32 + 4 * crate::frame::MAX_BURST as u32)
            + 1024;
        let mp = Mempool::new(
            "cpumapd_exc",
            n,
            plan.headroom,
            plan.data_room,
            self.eal.socket_of(LcoreId(0)) as i32,
        )
        .map_err(|e| LcoreError::Dpdk(e.to_string()))?;
        Ok(Arc::new(mp))
    }

    /// Statistics handles, one per pool.
    pub fn pool_stats(&self) -> Vec<PoolStats> {
        self.pools
            .values()
            .map(|m| crate::frame::Pool::from_mempool(m.clone()).stats())
            .collect()
    }

    /// Port `p`'s RX queues, queue q paired with TX queue q.
    pub fn port_queues(&self, p: usize) -> Vec<Box<dyn PortQueue>> {
        (0..self.rx_queues[p])
            .map(|q| {
                Box::new(DpdkQueue::new(self.ports[p].queue(Some(q), Some(q))))
                    as Box<dyn PortQueue>
            })
            .collect()
    }

    /// True when port 0 had a TX queue left for the `i`-th reverse sender.
    pub fn has_reverse_tx(&self, i: u16) -> bool {
        self.ports
            .first()
            .is_some_and(|p| self.rx_queues[0] + i < p.tx_queues)
    }

    /// The `i`-th reverse sender's TX-only queue on port 0, if the device
    /// had a queue for it.
    pub fn reverse_tx(&self, i: u16) -> Option<Box<dyn PortQueue>> {
        let port = self.ports.first()?;
        let q = self.rx_queues[0] + i;
        self.has_reverse_tx(i)
            .then(|| Box::new(DpdkQueue::new(port.queue(None, Some(q)))) as Box<dyn PortQueue>)
    }
}
