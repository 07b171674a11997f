//! Snapshots of every counter: the live table and the exit summary.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::counters::TargetDropReason;
use crate::counters::latency::LatencySummary;
use crate::counters::stages::{RxStage, StageClock, StageSummary, TargetStage};
use crate::ids::{LcoreId, PortId, TargetId};
use crate::lcore::StatsSet;

#[derive(Clone, Debug, Default, Serialize)]
/// One target's totals.
pub struct TargetSummary {
    /// The target.
    pub target: TargetId,
    /// Its entry's ring size (0 without an entry).
    pub qsize: u32,
    /// Frames moved into its ring, from every RX lcore.
    pub enqueued: u64,
    /// Frames tail-dropped at its ring.
    pub enqueue_drops: u64,
    /// Bulk queue flushes towards it.
    pub flushes: u64,
    /// Frames per flush.
    pub bulk_avg: f64,
    /// Frames it dequeued.
    pub processed: u64,
    /// Frames the exception path took.
    pub delivered: u64,
    /// Frames its entry's program sent out of an interface.
    pub remote_redirect: u64,
    /// Frames it dropped, every reason.
    pub drops: u64,
    /// Its drops by reason.
    pub drop_reasons: BTreeMap<&'static str, u64>,
    /// Times it gave up the CPU while idle.
    pub sched: u64,
    /// Loops that found every ring empty.
    pub idle_polls: u64,
    /// Times it blocked until a flush woke it (`--idle`).
    pub sleeps: u64,
    /// Sleeps a flush or the control plane ended (not the timeout).
    pub wakeups: u64,
    /// GRO: delivered segments merged into super-frames.
    pub gro_segments: u64,
    /// GRO: super-frames written.
    pub gro_frames: u64,
    /// Frames in its ring now.
    pub ring_len: usize,
    /// RX-to-target latency (`--latency`; absent without samples).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencySummary>,
    /// Cycles per packet per loop stage (`--stage-cycles`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stages: Option<StageSummary>,
}

#[derive(Clone, Debug, Default, Serialize)]
/// One RX lcore's totals.
pub struct RxSummary {
    /// The RX lcore.
    pub lcore: LcoreId,
    /// Frames received.
    pub rx: u64,
    /// Pass verdicts.
    pub pass: u64,
    /// Drop verdicts.
    pub drop: u64,
    /// Tx verdicts.
    pub tx: u64,
    /// Redirect verdicts that reached a bulk queue.
    pub redirect: u64,
    /// Aborted verdicts (misses included).
    pub aborted: u64,
    /// Redirects to a key with no entry.
    pub redirect_miss: u64,
    /// Polls.
    pub polls: u64,
    /// Polls that received nothing.
    pub idle_polls: u64,
    /// Times it blocked on its ports (or napped) while idle (`--idle`).
    pub sleeps: u64,
    /// Sleeps that work ended (not the wait's timeout).
    pub wakeups: u64,
    /// Times it yielded to a target sharing its CPU.
    pub yields: u64,
    /// Cycles per packet per poll stage (`--stage-cycles`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stages: Option<StageSummary>,
}

#[derive(Clone, Debug, Default, Serialize)]
/// One port queue's totals.
pub struct PortSummary {
    /// The port.
    pub port: PortId,
    /// The queue.
    pub queue: u16,
    /// The RX lcore polling it.
    pub lcore: LcoreId,
    /// Frames received.
    pub ipackets: u64,
    /// Bytes received.
    pub ibytes: u64,
    /// Frames dropped by the port.
    pub ierrors: u64,
    /// Frames larger than the largest buffer, dropped.
    pub rx_oversize: u64,
    /// Frames with a virtio-net header that does not fit them, dropped.
    pub rx_bad_offload: u64,
    /// GSO super-frames received whole.
    pub rx_gso: u64,
    /// Frames the kernel or NIC dropped before RX.
    pub imissed: u64,
    /// Receives that found the pool empty.
    pub rx_nombuf: u64,
    /// Frames transmitted.
    pub opackets: u64,
    /// Frames the port refused to transmit.
    pub oerrors: u64,
    /// Injected faults (`fault_*` devargs; 0 without them).
    pub fault_dropped: u64,
    /// Frames truncated by `fault_truncate`.
    pub fault_truncated: u64,
    /// Frames corrupted by `fault_corrupt`.
    pub fault_corrupted: u64,
    /// Copies added by `fault_dup`.
    pub fault_duplicated: u64,
    /// Bursts delayed by `fault_delay_us`.
    pub fault_delayed: u64,
}

/// Totals over the run (the JSON summary) or at one instant (a table row).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    /// Seconds the run lasted (so far).
    pub duration_s: f64,
    /// The RX filter mode.
    pub mode: String,
    /// The exception backend.
    pub exception: String,
    /// Frames received.
    pub rx: u64,
    /// Pass verdicts.
    pub pass: u64,
    /// Drop verdicts.
    pub drop: u64,
    /// Tx verdicts.
    pub tx: u64,
    /// Redirect verdicts that reached a bulk queue.
    pub redirect: u64,
    /// Aborted verdicts (misses included).
    pub aborted: u64,
    /// Redirects to a key with no entry.
    pub redirect_miss: u64,
    /// Tx verdicts the port refused.
    pub tx_drops: u64,
    /// Pass verdicts the exception path refused.
    pub pass_drops: u64,
    /// Reverse direction (kernel -> exception path -> port), all lcores.
    pub reverse_rx: u64,
    /// Reverse direction: frames sent on a port.
    pub reverse_tx: u64,
    /// Reverse direction: frames dropped.
    pub reverse_drops: u64,
    /// Frames the ports' kernels or NICs dropped before RX (all ports).
    pub imissed: u64,
    /// Frames moved into target rings.
    pub enqueued: u64,
    /// Frames tail-dropped at target rings.
    pub enqueue_drops: u64,
    /// Frames the targets dequeued.
    pub target_processed: u64,
    /// Frames the exception path took from targets.
    pub delivered: u64,
    /// Frames the targets' programs sent out of an interface.
    pub remote_redirect: u64,
    /// Frames the targets dropped.
    pub target_drops: u64,
    /// Frames still in rings.
    pub in_flight: u64,
    /// Buffers out of their pools.
    pub pool_in_use: u64,
    /// Buffers of every pool.
    pub pool_capacity: u64,
    /// Map updates that succeeded.
    pub map_updates_ok: u64,
    /// Map updates the map refused.
    pub map_updates_failed: u64,
    /// Frames received per second over the run.
    pub rx_pps: f64,
    /// Per target.
    pub targets: Vec<TargetSummary>,
    /// Per RX lcore.
    pub rx_lcores: Vec<RxSummary>,
    /// Per port queue.
    pub ports: Vec<PortSummary>,
    /// The cycle counter's rate (`--stage-cycles`): TSC ticks per ns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tsc_ghz: Option<f64>,
}

impl Summary {
    /// Reads every counter now; `duration_s` is the run's length so far.
    pub fn collect(s: &StatsSet, duration_s: f64) -> Self {
        let mut out = Summary {
            duration_s,
            mode: s.mode.get().name().to_string(),
            exception: s.exception.clone(),
            ..Default::default()
        };
        out.collect_rx(s);
        out.collect_targets(s);
        out.collect_pools_and_map(s);
        out.collect_ports(s);
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

    /// Reads every counter now, timed from the run's start.
    pub fn now(s: &StatsSet) -> Self {
        Self::collect(s, s.started.elapsed().as_secs_f64())
    }

    /// Stops `running` (RX, drain, pools checked) and reads the final counters.
    pub fn at_shutdown(running: crate::lcore::Running) -> Result<Self, crate::lcore::LcoreError> {
        running.shutdown_with(Self::collect)
    }

    fn collect_rx(&mut self, s: &StatsSet) {
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
                sleeps: c.sleeps.get(),
                wakeups: c.wakeups.get(),
                yields: c.yields.get(),
                stages: c.stages.summary(&RxStage::NAMES, c.rx.get()),
            };
            self.rx += row.rx;
            self.pass += row.pass;
            self.drop += row.drop;
            self.tx += row.tx;
            self.redirect += row.redirect;
            self.aborted += row.aborted;
            self.redirect_miss += row.redirect_miss;
            self.tx_drops += c.tx_drops.get();
            self.pass_drops += c.pass_drops.get();
            self.reverse_rx += c.reverse_rx.get();
            self.reverse_tx += c.reverse_tx.get();
            self.reverse_drops += c.reverse_drops.get();
            self.rx_lcores.push(row);
        }
    }

    fn collect_targets(&mut self, s: &StatsSet) {
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
                remote_redirect: c.remote_redirect.get(),
                drops: c.drops_total(),
                drop_reasons: TargetDropReason::ALL
                    .iter()
                    .map(|&r| (r.name(), c.drop_counter(r).get()))
                    .collect(),
                sched: c.sched.get(),
                idle_polls: c.idle_polls.get(),
                sleeps: c.sleeps.get(),
                wakeups: c.wakeups.get(),
                gro_segments: c.gro_segments.get(),
                gro_frames: c.gro_frames.get(),
                ring_len: entry.map_or(0, |e| e.ring_len),
                latency: c.latency.summary(),
                stages: c.stages.summary(&TargetStage::NAMES, c.processed.get()),
            };
            self.target_processed += row.processed;
            self.delivered += row.delivered;
            self.remote_redirect += row.remote_redirect;
            self.target_drops += row.drops;
            self.reverse_rx += c.reverse_rx.get();
            self.reverse_tx += c.reverse_tx.get();
            self.reverse_drops += c.reverse_drops.get();
            self.targets.push(row);
        }
        // Totals over every key, not only served targets: frames flushed
        // towards keys that are not served (none in a valid plan) show up as
        // a mismatch, on purpose.
        let all = || s.rx.iter().flat_map(|r| r.enqueue.iter());
        self.enqueued = all().map(|e| e.enqueued.get()).sum();
        self.enqueue_drops = all().map(|e| e.drops.get()).sum();
        self.in_flight = self.enqueued.saturating_sub(self.target_processed);
    }

    fn collect_pools_and_map(&mut self, s: &StatsSet) {
        for p in &s.pools {
            self.pool_in_use += p.in_use() as u64;
            self.pool_capacity += p.capacity() as u64;
        }
        let (ok, failed) = s.map.update_counts();
        self.map_updates_ok = ok;
        self.map_updates_failed = failed;
    }

    fn collect_ports(&mut self, s: &StatsSet) {
        for q in &s.ports {
            let c = &q.counters;
            self.imissed += c.imissed.get();
            self.ports.push(PortSummary {
                port: q.port,
                queue: q.queue,
                lcore: q.lcore,
                ipackets: c.ipackets.get(),
                ibytes: c.ibytes.get(),
                ierrors: c.ierrors.get(),
                rx_oversize: c.rx_oversize.get(),
                rx_bad_offload: c.rx_bad_offload.get(),
                rx_gso: c.rx_gso.get(),
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
    }

    /// [`Summary::check_identities`] on a summary read back from its JSON
    /// (`--summary-json`): tests of the binary check it with the same code.
    pub fn check_json(v: &serde_json::Value, at_rest: bool) -> Result<(), String> {
        let n = |v: &serde_json::Value, k: &str| {
            v[k].as_u64()
                .ok_or_else(|| format!("summary JSON: '{k}' missing or not a count"))
        };
        let list = |k: &str| v[k].as_array().cloned().unwrap_or_default();
        let mut s = Summary {
            rx: n(v, "rx")?,
            pass: n(v, "pass")?,
            drop: n(v, "drop")?,
            tx: n(v, "tx")?,
            redirect: n(v, "redirect")?,
            aborted: n(v, "aborted")?,
            enqueued: n(v, "enqueued")?,
            enqueue_drops: n(v, "enqueue_drops")?,
            target_processed: n(v, "target_processed")?,
            delivered: n(v, "delivered")?,
            remote_redirect: n(v, "remote_redirect")?,
            target_drops: n(v, "target_drops")?,
            reverse_rx: n(v, "reverse_rx")?,
            reverse_tx: n(v, "reverse_tx")?,
            reverse_drops: n(v, "reverse_drops")?,
            in_flight: n(v, "in_flight")?,
            pool_in_use: n(v, "pool_in_use")?,
            ..Summary::default()
        };
        for r in list("rx_lcores") {
            s.rx_lcores.push(RxSummary {
                lcore: LcoreId(n(&r, "lcore")? as u32),
                rx: n(&r, "rx")?,
                pass: n(&r, "pass")?,
                drop: n(&r, "drop")?,
                tx: n(&r, "tx")?,
                redirect: n(&r, "redirect")?,
                aborted: n(&r, "aborted")?,
                ..RxSummary::default()
            });
        }
        for t in list("targets") {
            s.targets.push(TargetSummary {
                target: TargetId(n(&t, "target")? as u32),
                enqueued: n(&t, "enqueued")?,
                processed: n(&t, "processed")?,
                delivered: n(&t, "delivered")?,
                remote_redirect: n(&t, "remote_redirect")?,
                drops: n(&t, "drops")?,
                ..TargetSummary::default()
            });
        }
        s.check_identities(at_rest)
    }

    /// Checks the accounting identities of docs/ARCHITECTURE.md. `at_rest` adds the
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
        let out = self.delivered + self.remote_redirect + self.target_drops;
        if self.target_processed != out {
            errs.push(format!(
                "target_processed {} != delivered {} + remote_redirect {} + target_drops {}",
                self.target_processed, self.delivered, self.remote_redirect, self.target_drops
            ));
        }
        for t in &self.targets {
            if t.processed != t.delivered + t.remote_redirect + t.drops {
                errs.push(format!(
                    "{}: processed {} != delivered {} + remote_redirect {} + drops {}",
                    t.target, t.processed, t.delivered, t.remote_redirect, t.drops
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
}
