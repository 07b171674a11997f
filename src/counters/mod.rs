//! Counters and the per-lcore statistics blocks (layer 0: used by every
//! module that counts, importing none of them).
//!
//! # General idea
//!
//! Every counter has exactly one writer: the lcore that owns the block it
//! sits in. The writer adds with a Relaxed load + store (no read-modify-write,
//! no `lock` prefix: on x86 it is the same `mov`/`add` a plain field gets),
//! and publishes once per poll, not per packet. Readers (the live table, the
//! summary and the Prometheus collector in `telemetry`) sum the blocks at
//! scrape time.
//! Blocks are cache-padded so no two lcores write the same line.

pub mod latency;
pub mod stages;

use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_utils::CachePadded;
use serde::Serialize;

use crate::ids::{LcoreId, TargetId};

/// A single-writer counter, readable from any thread.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Context: the owning lcore only (single writer).
    #[inline(always)]
    pub fn add(&self, n: u64) {
        if n != 0 {
            self.0.store(
                self.0.load(Ordering::Relaxed).wrapping_add(n),
                Ordering::Relaxed,
            );
        }
    }

    #[inline(always)]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Sets the value (a maximum, say). Context: the owning lcore only.
    #[inline(always)]
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }
}

/// Verdict and drop counters of one RX lcore.
#[derive(Debug, Default)]
pub struct RxCounters {
    pub rx: Counter,
    pub pass: Counter,
    pub drop: Counter,
    pub tx: Counter,
    pub redirect: Counter,
    pub aborted: Counter,
    /// Part of `aborted`: redirects to a key with no map entry (the kernel's
    /// `bpf_redirect_map` miss with no fallback action).
    pub redirect_miss: Counter,
    /// Tx verdicts the port refused (dropped after the verdict).
    pub tx_drops: Counter,
    /// Pass verdicts the exception path refused.
    pub pass_drops: Counter,
    pub polls: Counter,
    pub idle_polls: Counter,
    /// Reverse direction (see TargetCounters).
    pub reverse_rx: Counter,
    pub reverse_tx: Counter,
    pub reverse_drops: Counter,
    /// Cycles per poll stage (`--stage-cycles` only).
    pub stages: stages::StageCycles<{ stages::RxStage::N }>,
}

/// What one RX lcore sent to one target (the xdp_cpumap_enqueue tracepoint:
/// processed, drops, to_cpu), summed over flushes.
#[derive(Debug, Default)]
pub struct EnqueueCounters {
    pub enqueued: Counter,
    pub drops: Counter,
    pub flushes: Counter,
}

/// Statistics block of one RX lcore.
#[derive(Debug)]
pub struct RxStats {
    pub lcore: LcoreId,
    pub counters: CachePadded<RxCounters>,
    /// Indexed by target key.
    pub enqueue: Box<[EnqueueCounters]>,
}

impl RxStats {
    pub fn new(lcore: LcoreId, max_entries: u32) -> Self {
        Self {
            lcore,
            counters: CachePadded::new(RxCounters::default()),
            enqueue: (0..max_entries)
                .map(|_| EnqueueCounters::default())
                .collect(),
        }
    }
}

/// Why a target dropped a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetDropReason {
    /// The entry's program returned drop.
    RemoteDrop,
    /// The entry's program aborted.
    RemoteAborted,
    /// The entry's program asked for tx or redirect, which a target does not do.
    RemoteUnsupported,
    /// The exception path had no room now (TAP: EAGAIN, ENOBUFS).
    ExceptionBusy,
    /// The exception path's interface is down (TAP: EIO).
    ExceptionDown,
    /// The exception path refused the frame for another reason.
    ExceptionError,
}

impl TargetDropReason {
    pub const ALL: [TargetDropReason; 6] = [
        TargetDropReason::RemoteDrop,
        TargetDropReason::RemoteAborted,
        TargetDropReason::RemoteUnsupported,
        TargetDropReason::ExceptionBusy,
        TargetDropReason::ExceptionDown,
        TargetDropReason::ExceptionError,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TargetDropReason::RemoteDrop => "remote_drop",
            TargetDropReason::RemoteAborted => "remote_aborted",
            TargetDropReason::RemoteUnsupported => "remote_unsupported",
            TargetDropReason::ExceptionBusy => "exception_busy",
            TargetDropReason::ExceptionDown => "exception_down",
            TargetDropReason::ExceptionError => "exception_error",
        }
    }
}

/// Counters of one target lcore.
#[derive(Debug, Default)]
pub struct TargetCounters {
    pub processed: Counter,
    pub delivered: Counter,
    pub drops: [Counter; 6],
    /// Times the target found every ring empty and gave up the CPU (the
    /// kernel kthread's `sched` count).
    pub sched: Counter,
    pub bursts: Counter,
    /// Reverse direction: frames read back from the exception path...
    pub reverse_rx: Counter,
    /// ...sent on a port...
    pub reverse_tx: Counter,
    /// ...or dropped (port refused, or no port to send on).
    pub reverse_drops: Counter,
    /// RX-to-target latency of every frame dequeued (`--latency` only).
    pub latency: latency::LatencyHist,
    /// Cycles per loop stage (`--stage-cycles` only).
    pub stages: stages::StageCycles<{ stages::TargetStage::N }>,
}

impl TargetCounters {
    #[inline(always)]
    pub fn drop_counter(&self, r: TargetDropReason) -> &Counter {
        &self.drops[r as usize]
    }

    pub fn drops_total(&self) -> u64 {
        self.drops.iter().map(Counter::get).sum()
    }
}

#[derive(Debug)]
pub struct TargetStats {
    pub target: TargetId,
    pub counters: CachePadded<TargetCounters>,
}

impl TargetStats {
    pub fn new(target: TargetId) -> Self {
        Self {
            target,
            counters: CachePadded::new(TargetCounters::default()),
        }
    }
}

/// Counters of one port queue (rte_eth_stats' fields).
#[derive(Debug, Default)]
pub struct PortQueueCounters {
    pub ipackets: Counter,
    pub ibytes: Counter,
    /// Receives that found the pool empty.
    pub rx_nombuf: Counter,
    /// Received frames dropped by the port (e.g. larger than a buffer).
    pub ierrors: Counter,
    /// Frames the kernel or NIC dropped before we could receive them (ring
    /// full: AF_PACKET tp_drops, rte_eth_stats imissed).
    pub imissed: Counter,
    pub opackets: Counter,
    pub obytes: Counter,
    pub oerrors: Counter,
    /// Injected by `fault_*` devargs (port::fault): frames dropped before
    /// the RX lcore saw them, truncated, corrupted, duplicated (copies the
    /// RX lcore received on top of `ipackets`), and delayed bursts.
    pub fault_dropped: Counter,
    pub fault_truncated: Counter,
    pub fault_corrupted: Counter,
    pub fault_duplicated: Counter,
    pub fault_delayed: Counter,
}

/// Counters a device keeps itself (DPDK's `rte_eth_stats`), read at scrape
/// time on the metrics thread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceCounters {
    pub ipackets: u64,
    pub opackets: u64,
    pub ibytes: u64,
    pub obytes: u64,
    /// Frames the NIC dropped because its RX ring was full.
    pub imissed: u64,
    pub ierrors: u64,
    pub oerrors: u64,
    /// RX descriptors the driver could not refill (mempool empty).
    pub rx_nombuf: u64,
}

/// A device whose own statistics are exported beside cpumapd's counters
/// (DPDK ethdev ports and the net_tap / virtio-user exception device).
pub trait DeviceStats: Send + Sync {
    fn port(&self) -> u16;
    fn name(&self) -> &str;
    fn counters(&self) -> DeviceCounters;
    /// Driver-specific extended statistics (`rte_eth_xstats`).
    fn xstats(&self) -> Vec<(String, u64)>;
    fn link_up(&self) -> bool;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_adds_and_reads_across_threads() {
        let c = std::sync::Arc::new(Counter::default());
        let w = c.clone();
        std::thread::spawn(move || {
            for _ in 0..1000 {
                w.add(3);
            }
        })
        .join()
        .unwrap();
        assert_eq!(c.get(), 3000);
    }
}
