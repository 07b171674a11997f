//! The registry of what a run has: every counter block, pool, device and
//! the map, gathered while the run is built. Readers (the summary, the live
//! table, the Prometheus collector, `ctl`) take it and sum at read time;
//! the lcores never touch it.

use std::sync::{Arc, Weak};
use std::time::Instant;

use crate::counters::{DeviceStats, PortQueueCounters, RxStats, TargetStats};
use crate::cpumap::CpuMap;
use crate::filter::ModeSwitch;
use crate::frame::PoolStats;
use crate::ids::{LcoreId, PortId};

/// One port queue's counters and the RX lcore that polls it.
pub struct PortQueueStats {
    /// The port.
    pub port: PortId,
    /// The queue of that port.
    pub queue: u16,
    /// The RX lcore that polls it.
    pub lcore: LcoreId,
    /// Its counters (written by that lcore only).
    pub counters: Arc<PortQueueCounters>,
}

/// Everything a scrape reads, gathered by [`super::start`].
pub struct StatsSet {
    /// One block per RX lcore, in lcore order.
    pub rx: Vec<Arc<RxStats>>,
    /// One block per target, in target order.
    pub targets: Vec<Arc<TargetStats>>,
    /// One entry per opened port queue.
    pub ports: Vec<PortQueueStats>,
    /// Every pool of the run (RX pools, reverse pools, DPDK mempools).
    pub pools: Vec<PoolStats>,
    /// The map (entries, ring occupancy, update counts).
    pub map: Arc<CpuMap>,
    /// The RX filter's current mode.
    pub mode: Arc<ModeSwitch>,
    /// The exception backend's name (`drop`, `tap`, ...).
    pub exception: String,
    /// "native" or "dpdk".
    pub backend: &'static str,
    /// Devices with their own counters; weak, so a closed port is not kept
    /// open by a scrape handle.
    pub devices: Vec<Weak<dyn DeviceStats>>,
    /// When the lcores were started.
    pub started: Instant,
}
