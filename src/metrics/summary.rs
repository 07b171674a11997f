//! Snapshots of every counter: the live table and the exit summary.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use serde::Serialize;

use super::stages::{RxStage, StageClock, StageSummary, TargetStage};
use super::{PortQueueCounters, RxStats, TargetDropReason, TargetStats};
use crate::cpumap::CpuMap;
use crate::filter::ModeSwitch;
use crate::frame::PoolStats;
use crate::ids::{LcoreId, PortId, TargetId};

/// One port queue's counters and the RX lcore that polls it.
pub struct PortQueueStats {
    pub port: PortId,
    pub queue: u16,
    pub lcore: LcoreId,
    pub counters: Arc<PortQueueCounters>,
}

/// Everything a scrape reads, gathered by the pipeline.
pub struct StatsSet {
    pub rx: Vec<Arc<RxStats>>,
    pub targets: Vec<Arc<TargetStats>>,
    pub ports: Vec<PortQueueStats>,
    pub pools: Vec<PoolStats>,
    pub map: Arc<CpuMap>,
    pub mode: Arc<ModeSwitch>,
    pub exception: String,
    /// "native" or "dpdk".
    pub backend: &'static str,
    /// Devices with their own counters; weak, so a closed port is not kept
    /// open by a scrape handle.
    pub devices: Vec<std::sync::Weak<dyn super::DeviceStats>>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct TargetSummary {
    pub target: TargetId,
    pub qsize: u32,
    pub enqueued: u64,
    pub enqueue_drops: u64,
    pub flushes: u64,
    pub bulk_avg: f64,
    pub processed: u64,
    pub delivered: u64,
    pub drops: u64,
    pub drop_reasons: BTreeMap<&'static str, u64>,
    pub sched: u64,
    pub ring_len: usize,
    /// RX-to-target latency (`--latency`; absent without samples).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<super::latency::LatencySummary>,
    /// Cycles per packet per loop stage (`--stage-cycles`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stages: Option<StageSummary>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct RxSummary {
    pub lcore: LcoreId,
    pub rx: u64,
    pub pass: u64,
    pub drop: u64,
    pub tx: u64,
    pub redirect: u64,
    pub aborted: u64,
    pub redirect_miss: u64,
    pub polls: u64,
    pub idle_polls: u64,
    /// Cycles per packet per poll stage (`--stage-cycles`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stages: Option<StageSummary>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct PortSummary {
    pub port: PortId,
    pub queue: u16,
    pub lcore: LcoreId,
    pub ipackets: u64,
    pub ibytes: u64,
    pub ierrors: u64,
    pub imissed: u64,
    pub rx_nombuf: u64,
    pub opackets: u64,
    pub oerrors: u64,
    /// Injected faults (`fault_*` devargs; 0 without them).
    pub fault_dropped: u64,
    pub fault_truncated: u64,
    pub fault_corrupted: u64,
    pub fault_duplicated: u64,
    pub fault_delayed: u64,
}

/// Totals over the run (the JSON summary) or at one instant (a table row).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub duration_s: f64,
    pub mode: String,
    pub exception: String,
    pub rx: u64,
    pub pass: u64,
    pub drop: u64,
    pub tx: u64,
    pub redirect: u64,
    pub aborted: u64,
    pub redirect_miss: u64,
    pub tx_drops: u64,
    pub pass_drops: u64,
    /// Reverse direction (kernel -> exception path -> port), all lcores.
    pub reverse_rx: u64,
    pub reverse_tx: u64,
    pub reverse_drops: u64,
    /// Frames the ports' kernels or NICs dropped before RX (all ports).
    pub imissed: u64,
    pub enqueued: u64,
    pub enqueue_drops: u64,
    pub target_processed: u64,
    pub delivered: u64,
    pub target_drops: u64,
    pub in_flight: u64,
    pub pool_in_use: u64,
    pub pool_capacity: u64,
    pub map_updates_ok: u64,
    pub map_updates_failed: u64,
    pub rx_pps: f64,
    pub targets: Vec<TargetSummary>,
    pub rx_lcores: Vec<RxSummary>,
    pub ports: Vec<PortSummary>,
    /// The cycle counter's rate (`--stage-cycles`): TSC ticks per ns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tsc_ghz: Option<f64>,
}

impl Summary {
    /// Reads every counter now.
    pub fn collect(s: &StatsSet, duration_s: f64) -> Self {
        let mut out = Summary {
            duration_s,
            mode: s.mode.get().name().to_string(),
            exception: s.exception.clone(),
            ..Default::default()
        };
        for r in &s.rx {
            let c = &r.counters;
            let row = RxSummary {
                lcore: r.lcore,
                rx: c.rx.get(),
                pass: c.pass.get(),
                drop: c.drop.get(),
                tx: c.tx.get(),
                redirect: c.redirect.get(),
                aborted: c.aborted.get(),
                redirect_miss: c.redirect_miss.get(),
                polls: c.polls.get(),
                idle_polls: c.idle_polls.get(),
                stages: c.stages.summary(&RxStage::NAMES, c.rx.get()),
            };
            out.rx += row.rx;
            out.pass += row.pass;
            out.drop += row.drop;
            out.tx += row.tx;
            out.redirect += row.redirect;
            out.aborted += row.aborted;
            out.redirect_miss += row.redirect_miss;
            out.tx_drops += c.tx_drops.get();
            out.pass_drops += c.pass_drops.get();
            out.reverse_rx += c.reverse_rx.get();
            out.reverse_tx += c.reverse_tx.get();
            out.reverse_drops += c.reverse_drops.get();
            out.rx_lcores.push(row);
        }
        for t in &s.targets {
            let c = &t.counters;
            let (mut enq, mut drops, mut flushes) = (0, 0, 0);
            for r in &s.rx {
                let e = &r.enqueue[t.target.index()];
                enq += e.enqueued.get();
                drops += e.drops.get();
                flushes += e.flushes.get();
            }
            let entry = s.map.lookup(t.target.0);
            let row = TargetSummary {
                target: t.target,
                qsize: entry.as_ref().map_or(0, |e| e.qsize),
                enqueued: enq,
                enqueue_drops: drops,
                flushes,
                bulk_avg: if flushes > 0 {
                    (enq + drops) as f64 / flushes as f64
                } else {
                    0.0
                },
                processed: c.processed.get(),
                delivered: c.delivered.get(),
                drops: c.drops_total(),
                drop_reasons: TargetDropReason::ALL
                    .iter()
                    .map(|&r| (r.name(), c.drop_counter(r).get()))
                    .collect(),
                sched: c.sched.get(),
                ring_len: entry.map_or(0, |e| e.ring_len),
                latency: c.latency.summary(),
                stages: c.stages.summary(&TargetStage::NAMES, c.processed.get()),
            };
            out.enqueued += row.enqueued;
            out.enqueue_drops += row.enqueue_drops;
            out.target_processed += row.processed;
            out.delivered += row.delivered;
            out.target_drops += row.drops;
            out.reverse_rx += c.reverse_rx.get();
            out.reverse_tx += c.reverse_tx.get();
            out.reverse_drops += c.reverse_drops.get();
            out.targets.push(row);
        }
        // Frames flushed towards keys that are not served targets (none in a
        // valid plan) would show up here as a mismatch, on purpose.
        let enq_all: u64 =
            s.rx.iter()
                .flat_map(|r| r.enqueue.iter())
                .map(|e| e.enqueued.get())
                .sum();
        let drops_all: u64 =
            s.rx.iter()
                .flat_map(|r| r.enqueue.iter())
                .map(|e| e.drops.get())
                .sum();
        out.enqueued = enq_all;
        out.enqueue_drops = drops_all;
        out.in_flight = out.enqueued.saturating_sub(out.target_processed);
        for p in &s.pools {
            out.pool_in_use += p.in_use() as u64;
            out.pool_capacity += p.capacity() as u64;
        }
        let (ok, failed) = s.map.update_counts();
        out.map_updates_ok = ok;
        out.map_updates_failed = failed;
        for q in &s.ports {
            let c = &q.counters;
            out.imissed += c.imissed.get();
            out.ports.push(PortSummary {
                port: q.port,
                queue: q.queue,
                lcore: q.lcore,
                ipackets: c.ipackets.get(),
                ibytes: c.ibytes.get(),
                ierrors: c.ierrors.get(),
                imissed: c.imissed.get(),
                rx_nombuf: c.rx_nombuf.get(),
                opackets: c.opackets.get(),
                oerrors: c.oerrors.get(),
                fault_dropped: c.fault_dropped.get(),
                fault_truncated: c.fault_truncated.get(),
                fault_corrupted: c.fault_corrupted.get(),
                fault_duplicated: c.fault_duplicated.get(),
                fault_delayed: c.fault_delayed.get(),
            });
        }
        if out.rx_lcores.iter().any(|r| r.stages.is_some()) {
            out.tsc_ghz = Some(StageClock::shared().ghz());
        }
        out.rx_pps = if duration_s > 0.0 {
            out.rx as f64 / duration_s
        } else {
            0.0
        };
        out
    }

    /// Checks the accounting identities of DESIGN.md. `at_rest` adds the
    /// ones that hold only after a clean shutdown (nothing in flight, every
    /// pool full).
    pub fn check_identities(&self, at_rest: bool) -> Result<(), String> {
        let mut errs = Vec::new();
        let verdicts = self.pass + self.drop + self.tx + self.redirect + self.aborted;
        if self.rx != verdicts {
            errs.push(format!(
                "rx {} != pass+drop+tx+redirect+aborted {verdicts}",
                self.rx
            ));
        }
        for r in &self.rx_lcores {
            let v = r.pass + r.drop + r.tx + r.redirect + r.aborted;
            if r.rx != v {
                errs.push(format!("{}: rx {} != verdicts {v}", r.lcore, r.rx));
            }
        }
        if self.redirect != self.enqueued + self.enqueue_drops {
            errs.push(format!(
                "redirect {} != enqueued {} + enqueue_drops {}",
                self.redirect, self.enqueued, self.enqueue_drops
            ));
        }
        if self.target_processed > self.enqueued {
            errs.push(format!(
                "target_processed {} > enqueued {}",
                self.target_processed, self.enqueued
            ));
        }
        if self.target_processed != self.delivered + self.target_drops {
            errs.push(format!(
                "target_processed {} != delivered {} + target_drops {}",
                self.target_processed, self.delivered, self.target_drops
            ));
        }
        for t in &self.targets {
            if t.processed != t.delivered + t.drops {
                errs.push(format!(
                    "{}: processed {} != delivered {} + drops {}",
                    t.target, t.processed, t.delivered, t.drops
                ));
            }
        }
        if self.reverse_rx != self.reverse_tx + self.reverse_drops {
            errs.push(format!(
                "reverse_rx {} != reverse_tx {} + reverse_drops {}",
                self.reverse_rx, self.reverse_tx, self.reverse_drops
            ));
        }
        if at_rest {
            if self.in_flight != 0 {
                errs.push(format!("in_flight {} != 0 after drain", self.in_flight));
            }
            if self.pool_in_use != 0 {
                errs.push(format!(
                    "pool_in_use {} != 0 at exit (leak)",
                    self.pool_in_use
                ));
            }
            for t in &self.targets {
                if t.enqueued != t.processed {
                    errs.push(format!(
                        "{}: enqueued {} != processed {} after drain",
                        t.target, t.enqueued, t.processed
                    ));
                }
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs.join("; "))
        }
    }

    /// The live table, xdp-bench style: rates over `dt` seconds since `prev`.
    pub fn table(&self, prev: &Summary, dt: f64) -> String {
        let rate = |a: u64, b: u64| (a.saturating_sub(b)) as f64 / dt.max(1e-9);
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<22} {:>12} {:>12} {:>12} {:>10}",
            format!("cpumapd {} -> {}", self.mode, self.exception),
            "pkt/s",
            "drop/s",
            "extra",
            "bulk-avg"
        );
        let _ = writeln!(
            s,
            "{:<22} {:>12.0} {:>12.0} {:>12}",
            "receive total",
            rate(self.rx, prev.rx),
            rate(self.drop + self.aborted, prev.drop + prev.aborted),
            format!("pass {:.0}", rate(self.pass, prev.pass))
        );
        for (r, p) in self.rx_lcores.iter().zip(prev.rx_lcores.iter()) {
            let _ = writeln!(
                s,
                "{:<22} {:>12.0} {:>12.0} {:>12}",
                format!("  {}", r.lcore),
                rate(r.rx, p.rx),
                rate(r.drop + r.aborted, p.drop + p.aborted),
                format!("redir {:.0}", rate(r.redirect, p.redirect))
            );
        }
        for (t, p) in self.targets.iter().zip(prev.targets.iter()) {
            let flushes = t.flushes.saturating_sub(p.flushes);
            let bulk = if flushes > 0 {
                ((t.enqueued + t.enqueue_drops) - (p.enqueued + p.enqueue_drops)) as f64
                    / flushes as f64
            } else {
                0.0
            };
            let _ = writeln!(
                s,
                "{:<22} {:>12.0} {:>12.0} {:>12} {:>10.2}",
                format!("enqueue -> {}", t.target),
                rate(t.enqueued, p.enqueued),
                rate(t.enqueue_drops, p.enqueue_drops),
                format!("ring {}/{}", t.ring_len, t.qsize),
                bulk
            );
            let _ = writeln!(
                s,
                "{:<22} {:>12.0} {:>12.0} {:>12}",
                format!("kthread {}", t.target),
                rate(t.processed, p.processed),
                rate(t.drops, p.drops),
                format!("sched {:.0}", rate(t.sched, p.sched))
            );
        }
        s
    }
}
