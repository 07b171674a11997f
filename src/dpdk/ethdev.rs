//! Ethernet devices: discovery, configuration with RSS, start/stop, the
//! per-queue burst calls, and statistics.
//!
//! Context: configuration and statistics on the control thread; an
//! [`EthQueue`] is moved to the one lcore that polls it.

use std::ffi::{CStr, CString, c_char};
use std::sync::Arc;

use super::mbuf::{Mbuf, Mempool};
use super::{DpdkError, Eal, ffi, rc_error};
use crate::counters::{DeviceCounters, DeviceStats};

/// What the control thread knows of a probed port.
#[derive(Clone, Debug)]
pub struct PortInfo {
    /// The ethdev port id.
    pub id: u16,
    /// Its name.
    pub name: String,
    /// Its driver.
    pub driver: String,
    /// NUMA socket (-1 when the device does not say).
    pub socket: i32,
    /// RX queues the device offers.
    pub max_rx_queues: u16,
    /// TX queues the device offers.
    pub max_tx_queues: u16,
    /// RSS hash functions it supports (`flow_type_rss_offloads`).
    pub rss_offloads: u64,
    /// Its MAC address.
    pub mac: [u8; 6],
    /// The kernel interface the PMD is bound to (net_tap, net_af_packet,
    /// net_af_xdp), 0 for none.
    pub if_index: u32,
}

fn dev_info(port: u16) -> Result<ffi::rte_eth_dev_info, i32> {
    let mut di = ffi::rte_eth_dev_info::default();
    // SAFETY: di is a valid out-parameter; an invalid id gives -ENODEV.
    let rc = unsafe { ffi::rte_eth_dev_info_get(port, &mut di) };
    if rc != 0 { Err(rc) } else { Ok(di) }
}

fn port_name(port: u16) -> String {
    let mut buf = [0 as c_char; ffi::RTE_ETH_NAME_MAX_LEN as usize];
    // SAFETY: buf holds RTE_ETH_NAME_MAX_LEN bytes, the documented size.
    let rc = unsafe { ffi::rte_eth_dev_get_name_by_port(port, buf.as_mut_ptr()) };
    if rc != 0 {
        return format!("port{port}");
    }
    // SAFETY: the call wrote a NUL-terminated name into buf.
    unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// Every port the EAL probed (PCI devices and `--vdev`s), in port id order.
pub fn ports(_eal: &Eal) -> Vec<PortInfo> {
    let mut out = Vec::new();
    // RTE_ETH_FOREACH_DEV: ports owned by no one (owner id 0).
    // SAFETY: EAL is initialised (the argument proves it).
    let mut p = unsafe { ffi::rte_eth_find_next_owned_by(0, 0) };
    while p < ffi::RTE_MAX_ETHPORTS as u64 {
        let id = p as u16;
        if let Ok(di) = dev_info(id) {
            let mut mac = ffi::rte_ether_addr::default();
            // SAFETY: mac is a valid out-parameter.
            unsafe { ffi::rte_eth_macaddr_get(id, &mut mac) };
            out.push(PortInfo {
                id,
                name: port_name(id),
                driver: if di.driver_name.is_null() {
                    String::new()
                } else {
                    // SAFETY: driver_name is a static NUL-terminated string.
                    unsafe { CStr::from_ptr(di.driver_name) }
                        .to_string_lossy()
                        .into_owned()
                },
                // SAFETY: id is a valid port.
                socket: unsafe { ffi::rte_eth_dev_socket_id(id) },
                max_rx_queues: di.max_rx_queues,
                max_tx_queues: di.max_tx_queues,
                rss_offloads: di.flow_type_rss_offloads,
                mac: mac.addr_bytes,
                if_index: di.if_index,
            });
        }
        // SAFETY: as above.
        p = unsafe { ffi::rte_eth_find_next_owned_by(id + 1, 0) };
    }
    out
}

/// Creates a virtual device at run time (`rte_eal_hotplug_add("vdev", ...)`)
/// and returns its port id, e.g. `net_tap_cpumapd` with `iface=cpu0`.
pub fn add_vdev(_eal: &Eal, name: &str, args: &str) -> Result<u16, DpdkError> {
    let bad = |why: String| DpdkError::Device(format!("vdev {name},{args}: {why}"));
    let (cbus, cname, cargs) = (
        CString::new("vdev").expect("no NUL"),
        CString::new(name).map_err(|_| bad("name contains NUL".into()))?,
        CString::new(args).map_err(|_| bad("arguments contain NUL".into()))?,
    );
    // SAFETY: EAL is initialised; the strings are NUL-terminated.
    let rc = unsafe { ffi::rte_eal_hotplug_add(cbus.as_ptr(), cname.as_ptr(), cargs.as_ptr()) };
    if rc != 0 {
        return Err(bad(format!("cannot create it: {}", rc_error(rc))));
    }
    let mut id = 0u16;
    // SAFETY: cname is NUL-terminated; id is a valid out-parameter.
    let rc = unsafe { ffi::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut id) };
    if rc != 0 {
        return Err(bad(format!("created but no ethdev port: {}", rc_error(rc))));
    }
    Ok(id)
}

/// Removes a vdev made by [`add_vdev`] (after its port is closed).
pub fn remove_vdev(name: &str) {
    let (cbus, cname) = (
        CString::new("vdev").expect("no NUL"),
        CString::new(name).unwrap_or_default(),
    );
    // SAFETY: strings are NUL-terminated; removing an unknown device is an
    // error code, not undefined behaviour.
    unsafe { ffi::rte_eal_hotplug_remove(cbus.as_ptr(), cname.as_ptr()) };
}

/// How to configure a port.
#[derive(Clone, Debug)]
pub struct PortSetup {
    /// RX queues to configure.
    pub rx_queues: u16,
    /// TX queues to configure.
    pub tx_queues: u16,
    /// Descriptors per RX queue.
    pub rx_desc: u16,
    /// Descriptors per TX queue.
    pub tx_desc: u16,
    /// One pool per RX queue (the socket of the lcore that polls it).
    pub rx_pools: Vec<Arc<Mempool>>,
    /// Turn on TCP/UDP checksum offload on transmit where the device has
    /// it (an exception device, which finishes partial checksums).
    pub tx_l4_csum: bool,
    /// Turn on TCP segmentation offload (and chained mbufs) on transmit
    /// where the device has it, with checksum offload (GRO's super-frames
    /// towards virtio-user's backend).
    pub tx_tso: bool,
    /// Ask for RX interrupts (`intr_conf.rxq`), so an idle lcore can block
    /// on a queue's event descriptor instead of napping. A PMD that has
    /// none, or refuses them, runs without.
    pub rx_intr: bool,
}

/// A configured, started port. Stopped and closed on drop (after every
/// queue handle is gone: queues hold an `Arc` to it).
pub struct EthPort {
    /// What was probed.
    pub info: PortInfo,
    /// True when RSS spreads RX over several queues.
    pub rss: bool,
    /// RX queues configured.
    pub rx_queues: u16,
    /// TX queues configured.
    pub tx_queues: u16,
    /// TCP/UDP checksum offload on transmit is on.
    pub tx_l4_csum: bool,
    /// TCP segmentation offload on transmit is on (chained mbufs too).
    pub tx_tso: bool,
    /// Each RX queue's interrupt event descriptor, where the PMD gave one
    /// (`rte_eth_dev_rx_intr_ctl_q_get_fd`).
    rx_intr_fds: Vec<Option<std::os::fd::RawFd>>,
    /// Pools its RX queues refill from: kept alive while the port runs.
    _pools: Vec<Arc<Mempool>>,
}

impl std::fmt::Debug for EthPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EthPort")
            .field("id", &self.info.id)
            .field("name", &self.info.name)
            .finish()
    }
}

impl EthPort {
    /// Configures `info` with `setup`: RSS over IP addresses and L4 ports
    /// when it has more than one RX queue and the device hashes, queues set
    /// up on their pools' sockets, promiscuous on, started.
    pub fn start(info: PortInfo, setup: PortSetup) -> Result<Arc<EthPort>, DpdkError> {
        if setup.rx_intr {
            // A PMD without RX interrupts may refuse intr_conf.rxq at
            // configure or at start: then the port runs without them.
            match Self::bring_up(&info, &setup, true) {
                Ok(p) => return Ok(Arc::new(p)),
                // SAFETY: a probed port; stopping a port that did not
                // start is a no-op.
                Err(_) => unsafe {
                    ffi::rte_eth_dev_stop(info.id);
                },
            }
        }
        Ok(Arc::new(Self::bring_up(&info, &setup, false)?))
    }

    /// Configures, sets up every queue and starts the port, with or without
    /// RX interrupts.
    fn bring_up(info: &PortInfo, setup: &PortSetup, rx_intr: bool) -> Result<EthPort, DpdkError> {
        let (info, setup) = (info.clone(), setup.clone());
        let id = info.id;
        let err = |why: String| DpdkError::Port {
            port: id,
            name: info.name.clone(),
            why,
        };
        if setup.rx_queues == 0 || setup.rx_queues > info.max_rx_queues {
            return Err(err(format!(
                "{} RX queues asked, the device has {}",
                setup.rx_queues, info.max_rx_queues
            )));
        }
        if setup.tx_queues > info.max_tx_queues {
            return Err(err(format!(
                "{} TX queues asked, the device has {}",
                setup.tx_queues, info.max_tx_queues
            )));
        }
        let mut conf = ffi::rte_eth_conf::default();
        conf.intr_conf.set_rxq(rx_intr as u32);
        // SAFETY: reads a constant.
        let want_rss = unsafe { ffi::cpumapd_rss_ip_l4() } & info.rss_offloads;
        let rss = setup.rx_queues > 1 && want_rss != 0;
        if rss {
            conf.rxmode.mq_mode = ffi::RTE_ETH_MQ_RX_RSS;
            conf.rx_adv_conf.rss_conf.rss_hf = want_rss;
        }
        let di =
            dev_info(id).map_err(|rc| err(format!("rte_eth_dev_info_get: {}", rc_error(rc))))?;
        // SAFETY: reads a constant.
        let fast_free = unsafe { ffi::cpumapd_tx_offload_mbuf_fast_free() };
        if di.tx_offload_capa & fast_free != 0 {
            conf.txmode.offloads |= fast_free;
        }
        // SAFETY: reads a constant.
        let l4_csum = unsafe { ffi::cpumapd_tx_offload_l4_cksum() };
        let tx_l4_csum = setup.tx_l4_csum && di.tx_offload_capa & l4_csum == l4_csum;
        if tx_l4_csum {
            conf.txmode.offloads |= l4_csum;
        }
        // SAFETY: reads constants.
        let (tso, segs) = unsafe {
            (
                ffi::cpumapd_tx_offload_tcp_tso(),
                ffi::cpumapd_tx_offload_multi_segs(),
            )
        };
        let tx_tso = setup.tx_tso && tx_l4_csum && di.tx_offload_capa & (tso | segs) == tso | segs;
        if tx_tso {
            conf.txmode.offloads |= tso | segs;
        }
        // SAFETY: id is a probed port; conf is fully initialised.
        let rc = unsafe { ffi::rte_eth_dev_configure(id, setup.rx_queues, setup.tx_queues, &conf) };
        if rc != 0 {
            return Err(err(format!("rte_eth_dev_configure: {}", rc_error(rc))));
        }
        let (mut nrx, mut ntx) = (setup.rx_desc, setup.tx_desc);
        // SAFETY: valid out-parameters.
        let rc = unsafe { ffi::rte_eth_dev_adjust_nb_rx_tx_desc(id, &mut nrx, &mut ntx) };
        if rc != 0 {
            return Err(err(format!("descriptor counts: {}", rc_error(rc))));
        }
        for q in 0..setup.rx_queues {
            let pool = &setup.rx_pools[q as usize % setup.rx_pools.len()];
            let mut rxconf = di.default_rxconf;
            rxconf.offloads = conf.rxmode.offloads;
            // SAFETY: configured port, valid queue index, live mempool.
            let rc = unsafe {
                ffi::rte_eth_rx_queue_setup(
                    id,
                    q,
                    nrx,
                    info.socket.max(0) as u32,
                    &rxconf,
                    pool.as_ptr(),
                )
            };
            if rc != 0 {
                return Err(err(format!("RX queue {q}: {}", rc_error(rc))));
            }
        }
        for q in 0..setup.tx_queues {
            let mut txconf = di.default_txconf;
            txconf.offloads = conf.txmode.offloads;
            // SAFETY: configured port, valid queue index.
            let rc = unsafe {
                ffi::rte_eth_tx_queue_setup(id, q, ntx, info.socket.max(0) as u32, &txconf)
            };
            if rc != 0 {
                return Err(err(format!("TX queue {q}: {}", rc_error(rc))));
            }
        }
        // SAFETY: configured port. Promiscuous mode is best effort (vdevs
        // such as net_null do not have it).
        unsafe { ffi::rte_eth_promiscuous_enable(id) };
        // SAFETY: configured port with every queue set up.
        let rc = unsafe { ffi::rte_eth_dev_start(id) };
        if rc != 0 {
            return Err(err(format!("rte_eth_dev_start: {}", rc_error(rc))));
        }
        let rx_intr_fds = if rx_intr {
            intr_fds(id, setup.rx_queues)
        } else {
            Vec::new()
        };
        Ok(EthPort {
            info,
            rss,
            rx_queues: setup.rx_queues,
            tx_queues: setup.tx_queues,
            tx_l4_csum,
            tx_tso,
            rx_intr_fds,
            _pools: setup.rx_pools,
        })
    }

    /// Which RX queues have an interrupt descriptor (None: the PMD has no
    /// RX interrupts, or they were refused).
    pub fn rx_intr(&self) -> &[Option<std::os::fd::RawFd>] {
        &self.rx_intr_fds
    }

    /// The ethdev port id.
    pub fn id(&self) -> u16 {
        self.info.id
    }

    /// Queue `rx` for receiving and `tx` (if any) for sending, for the lcore
    /// that will own them. Each index must be handed out once.
    pub fn queue(self: &Arc<Self>, rx: Option<u16>, tx: Option<u16>) -> EthQueue {
        EthQueue {
            port: self.clone(),
            rx: rx.filter(|&q| q < self.rx_queues),
            tx: tx.filter(|&q| q < self.tx_queues),
        }
    }

    /// Device counters (`rte_eth_stats_get`).
    pub fn stats(&self) -> DeviceCounters {
        let mut s = ffi::rte_eth_stats::default();
        // SAFETY: started port, valid out-parameter. Reading stats is
        // thread-safe against the data path in every PMD we use.
        unsafe { ffi::rte_eth_stats_get(self.info.id, &mut s) };
        DeviceCounters {
            ipackets: s.ipackets,
            opackets: s.opackets,
            ibytes: s.ibytes,
            obytes: s.obytes,
            imissed: s.imissed,
            ierrors: s.ierrors,
            oerrors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
        }
    }

    /// Extended counters (`rte_eth_xstats_get` + names).
    pub fn xstats(&self) -> Vec<(String, u64)> {
        let id = self.info.id;
        // SAFETY: a NULL array asks for the count.
        let n = unsafe { ffi::rte_eth_xstats_get_names(id, std::ptr::null_mut(), 0) };
        if n <= 0 {
            return Vec::new();
        }
        let mut names = vec![ffi::rte_eth_xstat_name::default(); n as usize];
        let mut vals = vec![ffi::rte_eth_xstat::default(); n as usize];
        // SAFETY: both arrays hold n entries.
        let (a, b) = unsafe {
            (
                ffi::rte_eth_xstats_get_names(id, names.as_mut_ptr(), n as u32),
                ffi::rte_eth_xstats_get(id, vals.as_mut_ptr(), n as u32),
            )
        };
        if a != n || b != n {
            return Vec::new();
        }
        vals.iter()
            .filter_map(|v| {
                let nm = names.get(v.id as usize)?;
                // SAFETY: the name is a NUL-terminated array of
                // RTE_ETH_XSTATS_NAME_SIZE chars written by the driver.
                let s = unsafe { CStr::from_ptr(nm.name.as_ptr()) };
                Some((s.to_string_lossy().into_owned(), v.value))
            })
            .collect()
    }

    /// Link up? (`rte_eth_link_get_nowait`), and its speed in Mb/s.
    pub fn link(&self) -> (bool, u32) {
        let mut l = ffi::rte_eth_link::default();
        // SAFETY: valid out-parameter.
        unsafe { ffi::rte_eth_link_get_nowait(self.info.id, &mut l) };
        (l.link_status() != 0, l.link_speed)
    }
}

impl Drop for EthPort {
    fn drop(&mut self) {
        // SAFETY: no EthQueue remains (they hold an Arc to this port), so
        // no lcore polls it.
        unsafe {
            ffi::rte_eth_dev_stop(self.info.id);
            ffi::rte_eth_dev_close(self.info.id);
        }
    }
}

impl DeviceStats for EthPort {
    fn port(&self) -> u16 {
        self.info.id
    }
    fn name(&self) -> &str {
        &self.info.name
    }
    fn counters(&self) -> DeviceCounters {
        self.stats()
    }
    fn xstats(&self) -> Vec<(String, u64)> {
        EthPort::xstats(self)
    }
    fn link_up(&self) -> bool {
        self.link().0
    }
}

/// Each RX queue's interrupt event descriptor, where the PMD has one.
fn intr_fds(id: u16, rx_queues: u16) -> Vec<Option<std::os::fd::RawFd>> {
    (0..rx_queues)
        .map(|q| {
            // SAFETY: a started port and a configured queue.
            let fd = unsafe { ffi::rte_eth_dev_rx_intr_ctl_q_get_fd(id, q) };
            (fd >= 0).then_some(fd)
        })
        .collect()
}
/// One lcore's RX and/or TX queue of a port.
pub struct EthQueue {
    port: Arc<EthPort>,
    rx: Option<u16>,
    tx: Option<u16>,
}

// SAFETY: an EthQueue is the only handle to its queue indices (EthPort::queue
// hands each out once), so the lcore it moves to is the only caller of the
// burst functions on them, as DPDK requires.
unsafe impl Send for EthQueue {}

impl EthQueue {
    /// The port.
    pub fn port(&self) -> &Arc<EthPort> {
        &self.port
    }

    /// The RX queue's interrupt descriptor, when its PMD gave one.
    pub fn rx_intr_fd(&self) -> Option<std::os::fd::RawFd> {
        self.rx
            .and_then(|q| self.port.rx_intr_fds.get(q as usize).copied().flatten())
    }

    /// Arms (`on`) or disarms the RX queue's interrupt. Context: the owning
    /// lcore, between polls. Returns the PMD's error code, if any.
    pub fn set_rx_intr(&self, on: bool) -> Result<(), i32> {
        let Some(q) = self.rx else { return Ok(()) };
        let id = self.port.info.id;
        // SAFETY: a started port and this handle's own RX queue.
        let rc = unsafe {
            if on {
                ffi::rte_eth_dev_rx_intr_enable(id, q)
            } else {
                ffi::rte_eth_dev_rx_intr_disable(id, q)
            }
        };
        if rc == 0 { Ok(()) } else { Err(rc) }
    }

    /// The RX queue this handle polls (None: transmit-only).
    pub fn rx_queue(&self) -> Option<u16> {
        self.rx
    }

    /// The TX queue this handle sends on (None: receive-only).
    pub fn tx_queue(&self) -> Option<u16> {
        self.tx
    }

    /// `rte_eth_rx_burst` into `out`; returns the count. The caller owns
    /// each mbuf written.
    #[inline]
    pub fn rx_burst(&mut self, out: &mut [Option<Mbuf>]) -> usize {
        let Some(q) = self.rx else { return 0 };
        // SAFETY: this handle owns queue q (see Send); Option<Mbuf> is a
        // nullable `rte_mbuf *`, so out is an array the driver fills.
        unsafe {
            ffi::cpumapd_rx_burst(
                self.port.info.id,
                q,
                out.as_mut_ptr().cast(),
                out.len() as u16,
            ) as usize
        }
    }

    /// `rte_eth_tx_burst`: the first `n` returned mbufs now belong to the
    /// driver; the rest stay the caller's.
    ///
    /// # Safety
    /// The caller owns every mbuf in `ms`.
    #[inline]
    pub unsafe fn tx_burst(&mut self, ms: &mut [Mbuf]) -> usize {
        let Some(q) = self.tx else { return 0 };
        // SAFETY: this handle owns queue q; Mbuf is a transparent pointer.
        unsafe {
            ffi::cpumapd_tx_burst(
                self.port.info.id,
                q,
                ms.as_mut_ptr().cast(),
                ms.len() as u16,
            ) as usize
        }
    }
}
