//! The Prometheus endpoint: `GET /metrics` in the text exposition format.
//!
//! A custom [`Collector`] reads every per-lcore counter block at scrape time
//! and labels it; nothing on the hot path knows Prometheus exists (the
//! lcores only bump their own single-writer counters). Families and their
//! meaning: docs/METRICS.md.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{Encoder, Registry, TextEncoder};

use thiserror::Error;

use crate::counters::stages::{RxStage, TargetStage};
use crate::counters::{
    Counter as CounterCell, EnqueueCounters, PortQueueCounters, RxCounters, TargetDropReason,
};
use crate::ids::LcoreId;
use crate::lcore::StatsSet;

/// How often the server thread looks at its stop flag.
const TICK: Duration = Duration::from_millis(50);

/// The endpoint could not be opened.
#[derive(Debug, Error)]
#[error("metrics endpoint {addr}: {why}; pass --metrics ADDR:PORT or --metrics off")]
pub struct ExporterError {
    /// The address asked for.
    pub addr: String,
    /// Why it could not be opened.
    pub why: String,
}

/// One metric family's name, help, type and label names.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    labels: &'static [&'static str],
}

const fn counter(
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
) -> Family {
    Family {
        name,
        help,
        kind: MetricType::COUNTER,
        labels,
    }
}

const fn gauge(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Family {
    Family {
        name,
        help,
        kind: MetricType::GAUGE,
        labels,
    }
}

const BUILD_INFO: Family = gauge(
    "cpumapd_build_info",
    "Always 1; labels carry the version and the build's backend.",
    &["version", "backend"],
);
const MODE_INFO: Family = gauge(
    "cpumapd_mode_info",
    "Always 1; the RX filter mode now (changes with ctl mode set).",
    &["mode"],
);
const UPTIME: Family = gauge(
    "cpumapd_uptime_seconds",
    "Seconds since the lcores started.",
    &[],
);
const PORT_RX: Family = counter(
    "cpumapd_rx_packets_total",
    "Frames received from a port queue (rte_eth_stats ipackets).",
    &["port", "queue", "lcore"],
);
const PORT_RX_BYTES: Family = counter(
    "cpumapd_rx_bytes_total",
    "Bytes received from a port queue.",
    &["port", "queue", "lcore"],
);
const PORT_RX_DROPPED: Family = counter(
    "cpumapd_port_rx_dropped_total",
    "Frames dropped before the filter: no buffer (nombuf), unusable frame (errors), missed by the kernel/NIC ring (missed: AF_PACKET tp_drops, imissed), or dropped by an injected fault (injected).",
    &["port", "queue", "lcore", "reason"],
);
const PORT_FAULTS: Family = counter(
    "cpumapd_port_faults_injected_total",
    "Faults injected by fault_* devargs on a port queue: drop, truncate, corrupt, duplicate (frames), delay (bursts).",
    &["port", "queue", "lcore", "kind"],
);
const PORT_TX: Family = counter(
    "cpumapd_port_tx_packets_total",
    "Frames transmitted on a port queue (XDP_TX verdicts sent).",
    &["port", "queue", "lcore"],
);
const PORT_TX_BYTES: Family = counter(
    "cpumapd_port_tx_bytes_total",
    "Bytes transmitted on a port queue.",
    &["port", "queue", "lcore"],
);
const PORT_TX_ERRORS: Family = counter(
    "cpumapd_port_tx_errors_total",
    "Frames a port queue refused to transmit (dropped, counted).",
    &["port", "queue", "lcore"],
);
const VERDICT: Family = counter(
    "cpumapd_verdict_total",
    "Filter verdicts on an RX lcore (the xdp_redirect / xdp_exception tracepoints by action).",
    &["lcore", "action"],
);
const VERDICT_DROPS: Family = counter(
    "cpumapd_verdict_drops_total",
    "Frames whose tx or pass verdict could not be carried out (port or exception path refused); part of that verdict's count.",
    &["lcore", "action"],
);
const REDIRECT_MISS: Family = counter(
    "cpumapd_redirect_miss_total",
    "Redirects to a key with no map entry (counted as aborted, frame dropped).",
    &["lcore"],
);
const POLLS: Family = counter(
    "cpumapd_rx_polls_total",
    "Poll loop iterations of an RX lcore.",
    &["lcore"],
);
const IDLE_POLLS: Family = counter(
    "cpumapd_rx_idle_polls_total",
    "RX polls that received nothing.",
    &["lcore"],
);
const LCORE_SLEEPS: Family = counter(
    "cpumapd_lcore_sleeps_total",
    "Times an idle lcore blocked (RX: on its ports, or a nap; target: until a flush woke it) under --idle adaptive|sleep.",
    &["lcore", "role"],
);
const LCORE_WAKEUPS: Family = counter(
    "cpumapd_lcore_wakeups_total",
    "Sleeps that work ended (not the wait's timeout).",
    &["lcore", "role"],
);
const TARGET_IDLE: Family = counter(
    "cpumapd_target_idle_polls_total",
    "Target loops that found every ring empty.",
    &["target"],
);
const STAGE_CYCLES: Family = counter(
    "cpumapd_lcore_stage_cycles_total",
    "TSC cycles an lcore spent in each stage of its loop while busy, and in idle polls (--stage-cycles only).",
    &["lcore", "role", "stage"],
);
const ENQ: Family = counter(
    "cpumapd_enqueue_packets_total",
    "Frames an RX lcore put into a target's ring (xdp_cpumap_enqueue processed).",
    &["from_lcore", "target"],
);
const ENQ_DROPS: Family = counter(
    "cpumapd_enqueue_drops_total",
    "Frames tail-dropped because the target's ring was full (xdp_cpumap_enqueue drops).",
    &["from_lcore", "target"],
);
const ENQ_FLUSHES: Family = counter(
    "cpumapd_enqueue_flushes_total",
    "Bulk-queue flushes into a target's ring; bulk-avg = (packets + drops) / flushes.",
    &["from_lcore", "target"],
);
const TARGET_PACKETS: Family = counter(
    "cpumapd_target_packets_total",
    "Frames a target lcore dequeued from its rings (xdp_cpumap_kthread processed).",
    &["target"],
);
const TARGET_DROPS: Family = counter(
    "cpumapd_target_drops_total",
    "Frames a target dropped, by reason.",
    &["target", "reason"],
);
const TARGET_SCHED: Family = counter(
    "cpumapd_target_sched_total",
    "Times a target found its rings empty and gave up the CPU (xdp_cpumap_kthread sched).",
    &["target"],
);
const TARGET_REMOTE_REDIRECT: Family = counter(
    "cpumapd_target_remote_redirect_total",
    "Frames a target's entry program redirected out of an interface (DEVMAP, bpf_redirect, --remote-action redirect:IF), sent.",
    &["target"],
);
const TARGET_GRO: Family = counter(
    "cpumapd_target_gro_total",
    "GRO on a target: delivered segments merged (kind=segments) into super-frames (kind=frames).",
    &["target", "kind"],
);
const PORT_GSO: Family = counter(
    "cpumapd_port_rx_gso_total",
    "GSO super-frames a port queue received whole (AF_PACKET with virtio-net headers).",
    &["port", "queue", "lcore"],
);
const EXCEPTION: Family = counter(
    "cpumapd_exception_packets_total",
    "Frames handed to the kernel through the exception path, per lcore (targets, and RX lcores for pass verdicts).",
    &["lcore", "backend"],
);
const REVERSE: Family = counter(
    "cpumapd_reverse_packets_total",
    "Reverse direction: frames the kernel sent back through the exception path (rx), sent on a port (tx), or dropped (drop).",
    &["lcore", "result"],
);
const RING_ENTRIES: Family = gauge(
    "cpumapd_ring_entries",
    "Frames waiting in the current entry's ring of a target.",
    &["target"],
);
const RING_CAPACITY: Family = gauge(
    "cpumapd_ring_capacity",
    "qsize of the current entry of a target.",
    &["target"],
);
const MAP_ENTRIES: Family = gauge(
    "cpumapd_map_entries",
    "Keys of the cpumap that hold an entry.",
    &[],
);
const MAP_UPDATES: Family = counter(
    "cpumapd_map_updates_total",
    "Map update/delete/apply calls, by result.",
    &["result"],
);
const POOL_IN_USE: Family = gauge(
    "cpumapd_pool_in_use",
    "Buffers of a pool that are out (in rings, bulk queues or in flight).",
    &["pool"],
);
const POOL_CAPACITY: Family = gauge("cpumapd_pool_capacity", "Buffers in a pool.", &["pool"]);

const DEVICE_PACKETS: Family = counter(
    "cpumapd_device_packets_total",
    "Frames a DPDK device counted itself (rte_eth_stats ipackets/opackets), including the net_tap exception device.",
    &["port", "device", "direction"],
);
const DEVICE_BYTES: Family = counter(
    "cpumapd_device_bytes_total",
    "Bytes a DPDK device counted itself (rte_eth_stats ibytes/obytes).",
    &["port", "device", "direction"],
);
const DEVICE_DROPS: Family = counter(
    "cpumapd_device_dropped_total",
    "Frames a DPDK device dropped or failed: imissed (RX ring full), ierrors, rx_nombuf (no mbuf to refill), oerrors.",
    &["port", "device", "reason"],
);
const DEVICE_LINK: Family = gauge(
    "cpumapd_device_link_up",
    "1 when the DPDK device reports link up (rte_eth_link_get_nowait).",
    &["port", "device"],
);
const DEVICE_XSTATS: Family = counter(
    "cpumapd_device_xstats_total",
    "A DPDK device's extended statistics (rte_eth_xstats), by the driver's names.",
    &["port", "device", "stat"],
);

/// Every family this collector exports, in exposition order.
const FAMILIES: &[&Family] = &[
    &BUILD_INFO,
    &MODE_INFO,
    &UPTIME,
    &PORT_RX,
    &PORT_RX_BYTES,
    &PORT_RX_DROPPED,
    &PORT_FAULTS,
    &PORT_TX,
    &PORT_TX_BYTES,
    &PORT_TX_ERRORS,
    &VERDICT,
    &VERDICT_DROPS,
    &REDIRECT_MISS,
    &POLLS,
    &IDLE_POLLS,
    &STAGE_CYCLES,
    &ENQ,
    &ENQ_DROPS,
    &ENQ_FLUSHES,
    &TARGET_PACKETS,
    &TARGET_DROPS,
    &TARGET_SCHED,
    &TARGET_REMOTE_REDIRECT,
    &EXCEPTION,
    &REVERSE,
    &RING_ENTRIES,
    &RING_CAPACITY,
    &MAP_ENTRIES,
    &MAP_UPDATES,
    &POOL_IN_USE,
    &POOL_CAPACITY,
    &DEVICE_PACKETS,
    &DEVICE_BYTES,
    &DEVICE_DROPS,
    &DEVICE_LINK,
    &DEVICE_XSTATS,
];

/// The names of every exported family (docs and tests check against it).
pub fn family_names() -> Vec<&'static str> {
    FAMILIES.iter().map(|f| f.name).collect()
}

/// Samples of one family being built.
struct Samples {
    family: &'static Family,
    metrics: Vec<Metric>,
}

impl Samples {
    fn new(family: &'static Family) -> Self {
        Self {
            family,
            metrics: Vec::new(),
        }
    }

    fn push(&mut self, labels: &[&str], value: f64) {
        debug_assert_eq!(
            labels.len(),
            self.family.labels.len(),
            "{}",
            self.family.name
        );
        let pairs = self
            .family
            .labels
            .iter()
            .zip(labels)
            .map(|(n, v)| {
                let mut p = LabelPair::default();
                p.set_name(n.to_string());
                p.set_value(v.to_string());
                p
            })
            .collect();
        let mut m = Metric::from_label(pairs);
        match self.family.kind {
            MetricType::COUNTER => {
                let mut c = Counter::default();
                c.set_value(value);
                m.set_counter(c);
            }
            _ => {
                let mut g = Gauge::default();
                g.set_value(value);
                m.set_gauge(g);
            }
        }
        self.metrics.push(m);
    }

    fn finish(self) -> MetricFamily {
        let mut f = MetricFamily::default();
        f.set_name(self.family.name.to_string());
        f.set_help(self.family.help.to_string());
        f.set_field_type(self.family.kind);
        f.set_metric(self.metrics);
        f
    }
}

/// Sums the pipeline's counter blocks into labelled families at scrape
/// time. Context: the HTTP thread; reads only.
pub struct PipelineCollector {
    stats: Arc<StatsSet>,
    descs: Vec<Desc>,
}

impl PipelineCollector {
    /// A collector over a run's registry.
    pub fn new(stats: Arc<StatsSet>) -> Result<Self, prometheus::Error> {
        let descs = FAMILIES
            .iter()
            .map(|f| {
                Desc::new(
                    f.name.to_string(),
                    f.help.to_string(),
                    f.labels.iter().map(|l| l.to_string()).collect(),
                    Default::default(),
                )
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { stats, descs })
    }
}

impl Collector for PipelineCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let s = &*self.stats;
        let mut sc = Scrape {
            out: Vec::with_capacity(FAMILIES.len()),
            rx_names: s.rx.iter().map(|r| r.lcore.to_string()).collect(),
            target_names: s
                .targets
                .iter()
                .map(|t| t.target.lcore().to_string())
                .collect(),
        };
        sc.info(s);
        sc.ports(s);
        sc.devices(s);
        sc.verdicts(s);
        sc.stage_cycles(s);
        sc.enqueue(s);
        sc.targets(s);
        sc.reverse(s);
        sc.map_and_pools(s);
        sc.out
    }
}

/// One scrape being built: the families so far and the lcore labels every
/// section shares.
struct Scrape {
    out: Vec<MetricFamily>,
    rx_names: Vec<String>,
    target_names: Vec<String>,
}

impl Scrape {
    /// Adds family `f`, its samples pushed by `fill`.
    fn one(&mut self, f: &'static Family, fill: impl FnOnce(&mut Samples)) {
        let mut smp = Samples::new(f);
        fill(&mut smp);
        self.out.push(smp.finish());
    }

    /// Build, mode and uptime.
    fn info(&mut self, s: &StatsSet) {
        self.one(&BUILD_INFO, |m| {
            m.push(&[env!("CARGO_PKG_VERSION"), s.backend], 1.0)
        });
        self.one(&MODE_INFO, |m| m.push(&[s.mode.get().name()], 1.0));
        self.one(&UPTIME, |m| m.push(&[], s.started.elapsed().as_secs_f64()));
    }

    /// Per port queue: packets, bytes, errors, drops by reason, injected faults.
    fn ports(&mut self, s: &StatsSet) {
        let labels: Vec<[String; 3]> = s
            .ports
            .iter()
            .map(|q| {
                [
                    q.port.0.to_string(),
                    q.queue.to_string(),
                    q.lcore.to_string(),
                ]
            })
            .collect();
        type PortField = fn(&PortQueueCounters) -> u64;
        let per_port: [(&'static Family, PortField); 6] = [
            (&PORT_RX, |c| c.ipackets.get()),
            (&PORT_RX_BYTES, |c| c.ibytes.get()),
            (&PORT_TX, |c| c.opackets.get()),
            (&PORT_TX_BYTES, |c| c.obytes.get()),
            (&PORT_TX_ERRORS, |c| c.oerrors.get()),
            (&PORT_GSO, |c| c.rx_gso.get()),
        ];
        let rows = || s.ports.iter().zip(&labels);
        for (fam, get) in per_port {
            self.one(fam, |m| {
                for (q, l) in rows() {
                    m.push(&[&l[0], &l[1], &l[2]], get(&q.counters) as f64);
                }
            });
        }
        self.one(&PORT_RX_DROPPED, |m| {
            for (q, l) in rows() {
                let c = &q.counters;
                for (reason, v) in [
                    ("nombuf", &c.rx_nombuf),
                    ("errors", &c.ierrors),
                    ("oversize", &c.rx_oversize),
                    ("bad_offload", &c.rx_bad_offload),
                    ("missed", &c.imissed),
                    ("injected", &c.fault_dropped),
                ] {
                    m.push(&[&l[0], &l[1], &l[2], reason], v.get() as f64);
                }
            }
        });
        self.one(&PORT_FAULTS, |m| {
            for (q, l) in rows() {
                let c = &q.counters;
                for (kind, v) in [
                    ("drop", &c.fault_dropped),
                    ("truncate", &c.fault_truncated),
                    ("corrupt", &c.fault_corrupted),
                    ("duplicate", &c.fault_duplicated),
                    ("delay", &c.fault_delayed),
                ] {
                    m.push(&[&l[0], &l[1], &l[2], kind], v.get() as f64);
                }
            }
        });
    }

    /// Devices that keep their own statistics (DPDK ethdev), still open.
    fn devices(&mut self, s: &StatsSet) {
        // A closed port's weak handle is gone.
        let devices: Vec<_> = s.devices.iter().filter_map(|d| d.upgrade()).collect();
        let counters: Vec<_> = devices.iter().map(|d| d.counters()).collect();
        let labels: Vec<[String; 2]> = devices
            .iter()
            .map(|d| [d.port().to_string(), d.name().to_string()])
            .collect();
        self.one(&DEVICE_PACKETS, |m| {
            for (c, l) in counters.iter().zip(&labels) {
                m.push(&[&l[0], &l[1], "rx"], c.ipackets as f64);
                m.push(&[&l[0], &l[1], "tx"], c.opackets as f64);
            }
        });
        self.one(&DEVICE_BYTES, |m| {
            for (c, l) in counters.iter().zip(&labels) {
                m.push(&[&l[0], &l[1], "rx"], c.ibytes as f64);
                m.push(&[&l[0], &l[1], "tx"], c.obytes as f64);
            }
        });
        self.one(&DEVICE_DROPS, |m| {
            for (c, l) in counters.iter().zip(&labels) {
                for (reason, v) in [
                    ("imissed", c.imissed),
                    ("ierrors", c.ierrors),
                    ("rx_nombuf", c.rx_nombuf),
                    ("oerrors", c.oerrors),
                ] {
                    m.push(&[&l[0], &l[1], reason], v as f64);
                }
            }
        });
        self.one(&DEVICE_LINK, |m| {
            for (d, l) in devices.iter().zip(&labels) {
                m.push(&[&l[0], &l[1]], d.link_up() as u8 as f64);
            }
        });
        self.one(&DEVICE_XSTATS, |m| {
            for (d, l) in devices.iter().zip(&labels) {
                for (name, v) in d.xstats() {
                    m.push(&[&l[0], &l[1], &name], v as f64);
                }
            }
        });
    }

    /// Per RX lcore: verdicts, drops after the verdict, misses, polls.
    fn verdicts(&mut self, s: &StatsSet) {
        let names = std::mem::take(&mut self.rx_names);
        let rows = || s.rx.iter().zip(&names);
        self.one(&VERDICT, |m| {
            for (r, n) in rows() {
                let c = &r.counters;
                for (action, v) in [
                    ("pass", &c.pass),
                    ("drop", &c.drop),
                    ("tx", &c.tx),
                    ("redirect", &c.redirect),
                    ("aborted", &c.aborted),
                ] {
                    m.push(&[n, action], v.get() as f64);
                }
            }
        });
        self.one(&VERDICT_DROPS, |m| {
            for (r, n) in rows() {
                m.push(&[n, "tx"], r.counters.tx_drops.get() as f64);
                m.push(&[n, "pass"], r.counters.pass_drops.get() as f64);
            }
        });
        type RxField = fn(&RxCounters) -> u64;
        let per_rx: [(&'static Family, RxField); 3] = [
            (&REDIRECT_MISS, |c| c.redirect_miss.get()),
            (&POLLS, |c| c.polls.get()),
            (&IDLE_POLLS, |c| c.idle_polls.get()),
        ];
        for (fam, get) in per_rx {
            self.one(fam, |m| {
                for (r, n) in rows() {
                    m.push(&[n], get(&r.counters) as f64);
                }
            });
        }
        self.rx_names = names;
    }

    /// `--stage-cycles`: only lcores that measure (a run without it exports
    /// no samples of this family).
    fn stage_cycles(&mut self, s: &StatsSet) {
        let (rx_names, target_names) = (&self.rx_names, &self.target_names);
        let mut smp = Samples::new(&STAGE_CYCLES);
        let mut put =
            |n: &str, role: &str, names: &[&str], busy: &[CounterCell], idle: &CounterCell| {
                if idle.get() == 0 && busy.iter().all(|c| c.get() == 0) {
                    return;
                }
                for (stage, c) in names.iter().zip(busy) {
                    smp.push(&[n, role, stage], c.get() as f64);
                }
                smp.push(&[n, role, "idle"], idle.get() as f64);
            };
        for (r, n) in s.rx.iter().zip(rx_names) {
            let st = &r.counters.stages;
            put(n, "rx", &RxStage::NAMES, &st.busy, &st.idle);
        }
        for (t, n) in s.targets.iter().zip(target_names) {
            let st = &t.counters.stages;
            put(n, "target", &TargetStage::NAMES, &st.busy, &st.idle);
        }
        self.out.push(smp.finish());
    }

    /// Per (RX lcore, target): enqueued, tail drops, flushes.
    fn enqueue(&mut self, s: &StatsSet) {
        let (rx_names, target_names) = (
            std::mem::take(&mut self.rx_names),
            std::mem::take(&mut self.target_names),
        );
        type EnqField = fn(&EnqueueCounters) -> u64;
        let per_enq: [(&'static Family, EnqField); 3] = [
            (&ENQ, |c| c.enqueued.get()),
            (&ENQ_DROPS, |c| c.drops.get()),
            (&ENQ_FLUSHES, |c| c.flushes.get()),
        ];
        for (fam, get) in per_enq {
            self.one(fam, |m| {
                for (r, rn) in s.rx.iter().zip(&rx_names) {
                    for (t, tn) in s.targets.iter().zip(&target_names) {
                        m.push(&[rn, tn], get(&r.enqueue[t.target.index()]) as f64);
                    }
                }
            });
        }
        (self.rx_names, self.target_names) = (rx_names, target_names);
    }

    /// Per target: processed, drops by reason, sched; exception deliveries
    /// of targets and RX lcores.
    fn targets(&mut self, s: &StatsSet) {
        let (rx_names, names) = (
            std::mem::take(&mut self.rx_names),
            std::mem::take(&mut self.target_names),
        );
        let rows = || s.targets.iter().zip(&names);
        self.one(&TARGET_PACKETS, |m| {
            for (t, n) in rows() {
                m.push(&[n], t.counters.processed.get() as f64);
            }
        });
        self.one(&TARGET_DROPS, |m| {
            for (t, n) in rows() {
                for r in TargetDropReason::ALL {
                    m.push(&[n, r.name()], t.counters.drop_counter(r).get() as f64);
                }
            }
        });
        self.one(&TARGET_SCHED, |m| {
            for (t, n) in rows() {
                m.push(&[n], t.counters.sched.get() as f64);
            }
        });
        self.one(&TARGET_IDLE, |m| {
            for (t, n) in rows() {
                m.push(&[n], t.counters.idle_polls.get() as f64);
            }
        });
        type Pick = fn(&crate::counters::RxCounters) -> u64;
        type TPick = fn(&crate::counters::TargetCounters) -> u64;
        let sleep_fams: [(&'static Family, Pick, TPick); 2] = [
            (&LCORE_SLEEPS, |c| c.sleeps.get(), |c| c.sleeps.get()),
            (&LCORE_WAKEUPS, |c| c.wakeups.get(), |c| c.wakeups.get()),
        ];
        for (fam, rx_get, t_get) in sleep_fams {
            self.one(fam, |m| {
                for (r, n) in s.rx.iter().zip(&rx_names) {
                    m.push(&[n, "rx"], rx_get(&r.counters) as f64);
                }
                for (t, n) in rows() {
                    m.push(&[n, "target"], t_get(&t.counters) as f64);
                }
            });
        }
        self.one(&TARGET_REMOTE_REDIRECT, |m| {
            for (t, n) in rows() {
                m.push(&[n], t.counters.remote_redirect.get() as f64);
            }
        });
        self.one(&TARGET_GRO, |m| {
            for (t, n) in rows() {
                m.push(&[n, "segments"], t.counters.gro_segments.get() as f64);
                m.push(&[n, "frames"], t.counters.gro_frames.get() as f64);
            }
        });
        self.one(&EXCEPTION, |m| {
            for (t, n) in rows() {
                m.push(&[n, &s.exception], t.counters.delivered.get() as f64);
            }
            for (r, n) in s.rx.iter().zip(&rx_names) {
                let c = &r.counters;
                let delivered = c.pass.get().saturating_sub(c.pass_drops.get());
                m.push(&[n, &s.exception], delivered as f64);
            }
        });
        (self.rx_names, self.target_names) = (rx_names, names);
    }

    /// The reverse direction (kernel -> exception path -> port), every lcore.
    fn reverse(&mut self, s: &StatsSet) {
        let rx = s.rx.iter().zip(&self.rx_names).map(|(r, n)| {
            let c = &r.counters;
            (n, [&c.reverse_rx, &c.reverse_tx, &c.reverse_drops])
        });
        let targets = s.targets.iter().zip(&self.target_names).map(|(t, n)| {
            let c = &t.counters;
            (n, [&c.reverse_rx, &c.reverse_tx, &c.reverse_drops])
        });
        let mut smp = Samples::new(&REVERSE);
        for (n, cs) in rx.chain(targets) {
            for (dir, c) in ["rx", "tx", "drop"].into_iter().zip(cs) {
                smp.push(&[n, dir], c.get() as f64);
            }
        }
        self.out.push(smp.finish());
    }

    /// Ring occupancy and capacity per entry, map size and updates, pools.
    fn map_and_pools(&mut self, s: &StatsSet) {
        let entries = s.map.dump();
        let keys: Vec<String> = entries.iter().map(|e| LcoreId(e.key).to_string()).collect();
        self.one(&RING_ENTRIES, |m| {
            for (e, k) in entries.iter().zip(&keys) {
                m.push(&[k], e.ring_len as f64);
            }
        });
        self.one(&RING_CAPACITY, |m| {
            for (e, k) in entries.iter().zip(&keys) {
                m.push(&[k], e.qsize as f64);
            }
        });
        self.one(&MAP_ENTRIES, |m| m.push(&[], entries.len() as f64));
        self.one(&MAP_UPDATES, |m| {
            let (ok, failed) = s.map.update_counts();
            m.push(&["ok"], ok as f64);
            m.push(&["error"], failed as f64);
        });
        self.one(&POOL_IN_USE, |m| {
            for p in &s.pools {
                m.push(&[p.name()], p.in_use() as f64);
            }
        });
        self.one(&POOL_CAPACITY, |m| {
            for p in &s.pools {
                m.push(&[p.name()], p.capacity() as f64);
            }
        });
    }
}

/// Renders one scrape (what `GET /metrics` returns).
pub fn render(registry: &Registry) -> Result<String, String> {
    let mut buf = Vec::with_capacity(16 * 1024);
    TextEncoder::new()
        .encode(&registry.gather(), &mut buf)
        .map_err(|e| e.to_string())?;
    String::from_utf8(buf).map_err(|e| e.to_string())
}

/// A registry holding the pipeline collector.
pub fn registry(stats: Arc<StatsSet>) -> Result<Registry, prometheus::Error> {
    let r = Registry::new();
    r.register(Box::new(PipelineCollector::new(stats)?))?;
    Ok(r)
}

/// The running HTTP endpoint. Dropping it stops the server thread.
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `addr` and serves `/metrics` (and a one-line index on `/`).
    pub fn start(addr: SocketAddr, stats: Arc<StatsSet>) -> Result<Self, ExporterError> {
        let err = |why: String| ExporterError {
            addr: addr.to_string(),
            why,
        };
        let registry = registry(stats).map_err(|e| err(e.to_string()))?;
        let server = tiny_http::Server::http(addr).map_err(|e| err(e.to_string()))?;
        let bound = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| err("not an IP endpoint".into()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("metrics-http".into())
                .spawn(move || serve(server, registry, stop))
                .map_err(|e| err(e.to_string()))?
        };
        Ok(Self {
            addr: bound,
            stop,
            thread: Some(thread),
        })
    }

    /// The bound address (the real port when started on port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(server: tiny_http::Server, registry: Registry, stop: Arc<AtomicBool>) {
    let text_type = tiny_http::Header::from_bytes(
        &b"Content-Type"[..],
        &b"text/plain; version=0.0.4; charset=utf-8"[..],
    )
    .expect("a valid header");
    while !stop.load(Ordering::Relaxed) {
        let req = match server.recv_timeout(TICK) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(_) => {
                std::thread::sleep(TICK);
                continue;
            }
        };
        let path = req.url().split('?').next().unwrap_or("");
        let resp = match (req.method(), path) {
            (tiny_http::Method::Get, "/metrics") => match render(&registry) {
                Ok(body) => tiny_http::Response::from_string(body).with_header(text_type.clone()),
                Err(e) => tiny_http::Response::from_string(format!("scrape failed: {e}\n"))
                    .with_status_code(500),
            },
            (tiny_http::Method::Get, "/") => {
                tiny_http::Response::from_string("cpumapd: metrics at /metrics\n")
            }
            (tiny_http::Method::Get, _) => {
                tiny_http::Response::from_string("not found: try /metrics\n").with_status_code(404)
            }
            _ => tiny_http::Response::from_string("only GET\n").with_status_code(405),
        };
        // A client that went away is its own problem.
        let _ = req.respond(resp);
    }
}
