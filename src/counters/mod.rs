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
    /// The value now. Context: any thread.
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
    /// Frames received.
    pub rx: Counter,
    /// Pass verdicts.
    pub pass: Counter,
    /// Drop verdicts.
    pub drop: Counter,
    /// Tx verdicts.
    pub tx: Counter,
    /// Redirect verdicts that reached a bulk queue.
    pub redirect: Counter,
    /// Aborted verdicts (redirect misses included).
    pub aborted: Counter,
    /// Part of `aborted`: redirects to a key with no map entry (the kernel's
    /// `bpf_redirect_map` miss with no fallback action).
    pub redirect_miss: Counter,
    /// Tx verdicts the port refused (dropped after the verdict).
    pub tx_drops: Counter,
    /// Pass verdicts the exception path refused.
    pub pass_drops: Counter,
    /// Polls.
    pub polls: Counter,
    /// Polls that received nothing.
    pub idle_polls: Counter,
    /// Times the lcore blocked on its ports (or napped) while idle.
    pub sleeps: Counter,
    /// Sleeps that ended because work arrived (not a timeout).
    pub wakeups: Counter,
    /// Times it yielded its CPU to a target sharing it.
    pub yields: Counter,
    /// Reverse direction (see TargetCounters).
    pub reverse_rx: Counter,
    /// Reverse direction: frames sent on a port.
    pub reverse_tx: Counter,
    /// Reverse direction: frames dropped (refused, or no port).
    pub reverse_drops: Counter,
    /// Cycles per poll stage (`--stage-cycles` only).
    pub stages: stages::StageCycles<{ stages::RxStage::N }>,
}

/// What one RX lcore sent to one target (the xdp_cpumap_enqueue tracepoint:
/// processed, drops, to_cpu), summed over flushes.
#[derive(Debug, Default)]
pub struct EnqueueCounters {
    /// Frames moved into the target's ring.
    pub enqueued: Counter,
    /// Frames tail-dropped because the ring was full.
    pub drops: Counter,
    /// Bulk queue flushes.
    pub flushes: Counter,
}

/// Statistics block of one RX lcore.
#[derive(Debug)]
pub struct RxStats {
    /// The RX lcore.
    pub lcore: LcoreId,
    /// Its counters (written by that lcore only).
    pub counters: CachePadded<RxCounters>,
    /// Indexed by target key.
    pub enqueue: Box<[EnqueueCounters]>,
}

impl RxStats {
    /// A zeroed block for `lcore` and a map of `max_entries` keys.
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
    /// The kernel refused the frame's offload metadata (a gso_type or
    /// checksum place it does not take).
    OffloadRefused,
    /// A GSO super-frame for an exception path without offloads.
    GsoUnsupported,
    /// The entry's program redirected to an interface the target could
    /// not send on (no such interface, its socket refused, or the send
    /// failed).
    RedirectFailed,
    /// The devmap entry's egress program did not pass a frame the entry's
    /// program redirected there (the kernel's devmap_xmit drops).
    EgressDrop,
}

impl TargetDropReason {
    /// Every reason, in counter order.
    pub const ALL: [TargetDropReason; 10] = [
        TargetDropReason::RemoteDrop,
        TargetDropReason::RemoteAborted,
        TargetDropReason::RemoteUnsupported,
        TargetDropReason::ExceptionBusy,
        TargetDropReason::ExceptionDown,
        TargetDropReason::ExceptionError,
        TargetDropReason::OffloadRefused,
        TargetDropReason::GsoUnsupported,
        TargetDropReason::RedirectFailed,
        TargetDropReason::EgressDrop,
    ];

    /// The reason's label (metrics, summary).
    pub fn name(self) -> &'static str {
        match self {
            TargetDropReason::RemoteDrop => "remote_drop",
            TargetDropReason::RemoteAborted => "remote_aborted",
            TargetDropReason::RemoteUnsupported => "remote_unsupported",
            TargetDropReason::ExceptionBusy => "exception_busy",
            TargetDropReason::ExceptionDown => "exception_down",
            TargetDropReason::ExceptionError => "exception_error",
            TargetDropReason::OffloadRefused => "offload_refused",
            TargetDropReason::GsoUnsupported => "gso_unsupported",
            TargetDropReason::RedirectFailed => "redirect_failed",
            TargetDropReason::EgressDrop => "egress_drop",
        }
    }
}

/// Counters of one target lcore.
#[derive(Debug, Default)]
pub struct TargetCounters {
    /// Frames dequeued.
    pub processed: Counter,
    /// Frames the exception path took.
    pub delivered: Counter,
    /// Frames the entry's program redirected out of an interface, sent.
    pub remote_redirect: Counter,
    /// Drops by reason ([`TargetDropReason`] as index).
    pub drops: [Counter; TargetDropReason::ALL.len()],
    /// Times the target found every ring empty and gave up the CPU (the
    /// kernel kthread's `sched` count).
    pub sched: Counter,
    /// Non-empty bursts dequeued.
    pub bursts: Counter,
    /// Loops that found every ring empty.
    pub idle_polls: Counter,
    /// Times the target blocked until a flush woke it (`--idle`).
    pub sleeps: Counter,
    /// Sleeps a flush (or the control plane) ended, not a timeout.
    pub wakeups: Counter,
    /// GRO: delivered segments merged into super-frames...
    pub gro_segments: Counter,
    /// ...and the super-frames written.
    pub gro_frames: Counter,
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
    /// The counter of drop reason `r`.
    pub fn drop_counter(&self, r: TargetDropReason) -> &Counter {
        &self.drops[r as usize]
    }

    /// Drops of every reason.
    pub fn drops_total(&self) -> u64 {
        self.drops.iter().map(Counter::get).sum()
    }
}

#[derive(Debug)]
/// Statistics block of one target lcore.
pub struct TargetStats {
    /// The target.
    pub target: TargetId,
    /// Its counters (written by that lcore only).
    pub counters: CachePadded<TargetCounters>,
}

impl TargetStats {
    /// A zeroed block for `target`.
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
    /// Frames received.
    pub ipackets: Counter,
    /// Bytes received.
    pub ibytes: Counter,
    /// Receives that found the pool empty.
    pub rx_nombuf: Counter,
    /// Received frames dropped by the port (e.g. larger than a buffer).
    pub ierrors: Counter,
    /// Received frames larger than the largest buffer (or cut by the
    /// kernel's ring), dropped.
    pub rx_oversize: Counter,
    /// Received frames whose virtio-net header does not fit them, dropped.
    pub rx_bad_offload: Counter,
    /// GSO super-frames received whole (of `ipackets`).
    pub rx_gso: Counter,
    /// Frames the kernel or NIC dropped before we could receive them (ring
    /// full: AF_PACKET tp_drops, rte_eth_stats imissed).
    pub imissed: Counter,
    /// Frames transmitted.
    pub opackets: Counter,
    /// Bytes transmitted.
    pub obytes: Counter,
    /// Frames the port refused to transmit.
    pub oerrors: Counter,
    /// Injected by `fault_*` devargs (port::fault): frames dropped before
    /// the RX lcore saw them, truncated, corrupted, duplicated (copies the
    /// RX lcore received on top of `ipackets`), and delayed bursts.
    pub fault_dropped: Counter,
    /// Frames truncated by `fault_truncate`.
    pub fault_truncated: Counter,
    /// Frames corrupted by `fault_corrupt`.
    pub fault_corrupted: Counter,
    /// Copies added by `fault_dup`.
    pub fault_duplicated: Counter,
    /// Bursts delayed by `fault_delay_us`.
    pub fault_delayed: Counter,
}

/// Counters a device keeps itself (DPDK's `rte_eth_stats`), read at scrape
/// time on the metrics thread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceCounters {
    /// Frames received.
    pub ipackets: u64,
    /// Frames transmitted.
    pub opackets: u64,
    /// Bytes received.
    pub ibytes: u64,
    /// Bytes transmitted.
    pub obytes: u64,
    /// Frames the NIC dropped because its RX ring was full.
    pub imissed: u64,
    /// Receive errors.
    pub ierrors: u64,
    /// Transmit errors.
    pub oerrors: u64,
    /// RX descriptors the driver could not refill (mempool empty).
    pub rx_nombuf: u64,
}

/// A device whose own statistics are exported beside cpumapd's counters
/// (DPDK ethdev ports and the net_tap / virtio-user exception device).
pub trait DeviceStats: Send + Sync {
    /// The port id.
    fn port(&self) -> u16;
    /// The device's name.
    fn name(&self) -> &str;
    /// Its counters now.
    fn counters(&self) -> DeviceCounters;
    /// Driver-specific extended statistics (`rte_eth_xstats`).
    fn xstats(&self) -> Vec<(String, u64)>;
    /// True while the link is up.
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
