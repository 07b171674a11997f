//! Per-stage cycle accounting (`--stage-cycles`): where a packet's time goes
//! on each lcore.
//!
//! An lcore loop takes a TSC reading at the start of a poll and after each
//! stage ([`Laps::lap`]); the differences accumulate in a local array and are
//! published once per poll, into `busy` stage counters when the poll moved
//! frames and into `idle` when it did not. Dividing a stage's cycles by the
//! frames the lcore handled gives cycles per packet; the stages of a poll
//! add up to its whole duration, so nothing is hidden between them.
//!
//! Cost: one TSC read per stage per poll (7 per busy RX poll), no
//! per-frame work; still about 6 cycles per packet on this VM's null
//! pipeline (-12% at ~50 cycles per packet, docs/PERFORMANCE.md), so it is
//! off by default and the lcore loops are built twice (see [`Laps`]).

use std::collections::BTreeMap;

use serde::Serialize;

use super::Counter;

/// Stages of an RX lcore's poll, in loop order.
#[derive(Clone, Copy, Debug)]
pub enum RxStage {
    /// Map generation check and mode byte.
    Poll = 0,
    /// `rx_burst` on each queue (the port's own work).
    Rx = 1,
    /// The filter over the burst (built-in mode or eBPF program).
    Filter = 2,
    /// Acting on the verdicts: bulk-queue pushes, tx/pass/drop bursts.
    Enqueue = 3,
    /// Flushing the bulk queues into the targets' rings.
    Flush = 4,
    /// The rest: reverse direction, publishing counters.
    Other = 5,
}

impl RxStage {
    /// Stages of an RX poll.
    pub const N: usize = 6;
    /// Their labels, in order.
    pub const NAMES: [&'static str; Self::N] =
        ["poll", "rx", "filter", "enqueue", "flush", "other"];
}

/// Stages of a target lcore's loop, in loop order.
#[derive(Clone, Copy, Debug)]
pub enum TargetStage {
    /// Map view refresh and the ring dequeue.
    Dequeue = 0,
    /// The entry's remote program over the batch.
    Remote = 1,
    /// Handing frames to the exception path and freeing the dropped ones.
    Sink = 2,
    /// The rest: reverse direction, latency records, counters.
    Other = 3,
}

impl TargetStage {
    /// Stages of a target loop.
    pub const N: usize = 4;
    /// Their labels, in order.
    pub const NAMES: [&'static str; Self::N] = ["dequeue", "remote", "sink", "other"];
}

/// Cycle counters of one lcore: per stage while busy, and the idle polls.
#[derive(Debug)]
pub struct StageCycles<const N: usize> {
    /// Busy cycles per stage.
    pub busy: [Counter; N],
    /// Cycles of polls that found nothing.
    pub idle: Counter,
}

impl<const N: usize> Default for StageCycles<N> {
    fn default() -> Self {
        StageCycles {
            busy: std::array::from_fn(|_| Counter::default()),
            idle: Counter::default(),
        }
    }
}

impl<const N: usize> StageCycles<N> {
    /// Cycles per packet per stage over `packets`, or None if nothing was
    /// measured (`--stage-cycles` off).
    pub fn summary(&self, names: &[&'static str; N], packets: u64) -> Option<StageSummary> {
        let total: u64 = self.busy.iter().map(Counter::get).sum();
        if total == 0 && self.idle.get() == 0 {
            return None;
        }
        let per = |c: u64| {
            if packets == 0 {
                0.0
            } else {
                c as f64 / packets as f64
            }
        };
        Some(StageSummary {
            packets,
            cycles_per_packet: names
                .iter()
                .zip(&self.busy)
                .map(|(n, c)| (*n, per(c.get())))
                .collect(),
            total_per_packet: per(total),
            ns_per_packet: StageClock::shared().cycles_to_ns(per(total)),
            busy_cycles: total,
            idle_cycles: self.idle.get(),
        })
    }
}

/// What the summary reports for one lcore.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StageSummary {
    /// Frames this lcore handled (RX: received; target: dequeued).
    pub packets: u64,
    /// Cycles per packet, per stage.
    pub cycles_per_packet: BTreeMap<&'static str, f64>,
    /// Cycles per packet, all stages.
    pub total_per_packet: f64,
    /// Nanoseconds per packet, all stages.
    pub ns_per_packet: f64,
    /// Cycles of polls that found work.
    pub busy_cycles: u64,
    /// Cycles spent in polls that found nothing.
    pub idle_cycles: u64,
}

/// The cycle counter: the TSC where it is invariant (quanta checks), else
/// a monotonic clock in nanoseconds.
#[derive(Clone, Debug)]
pub struct StageClock(quanta::Clock);

impl StageClock {
    /// The process's clock (calibrated once, on first use: ~10 ms).
    pub fn shared() -> &'static StageClock {
        static CLOCK: std::sync::OnceLock<StageClock> = std::sync::OnceLock::new();
        CLOCK.get_or_init(|| StageClock(quanta::Clock::new()))
    }

    #[inline(always)]
    /// The cycle counter now.
    pub fn now(&self) -> u64 {
        self.0.raw()
    }

    /// Converts a cycle count (fractional: a per-packet figure) to ns.
    pub fn cycles_to_ns(&self, cycles: f64) -> f64 {
        const SCALE: u64 = 1 << 30;
        cycles * self.0.delta_as_nanos(0, SCALE) as f64 / SCALE as f64
    }

    /// Counter ticks per nanosecond (the TSC's GHz).
    pub fn ghz(&self) -> f64 {
        1.0 / self.cycles_to_ns(1.0)
    }
}

/// One lcore's stopwatch for the current poll. `ON` is a compile-time
/// switch: an lcore loop is built twice, and with `ON = false` every call
/// here compiles to nothing (a run-time check measurably slowed the null
/// pipeline: docs/PERFORMANCE.md).
pub struct Laps<const N: usize, const ON: bool> {
    clock: Option<StageClock>,
    start: u64,
    last: u64,
    acc: [u64; N],
}

impl<const N: usize, const ON: bool> Laps<N, ON> {
    /// `clock` must be Some when `ON` (else nothing is measured).
    pub fn new(clock: Option<StageClock>) -> Self {
        Laps {
            clock,
            start: 0,
            last: 0,
            acc: [0; N],
        }
    }

    /// Starts a poll.
    #[inline(always)]
    pub fn start(&mut self) {
        if !ON {
            return;
        }
        if let Some(c) = &self.clock {
            self.start = c.now();
            self.last = self.start;
        }
    }

    /// Charges the time since the last lap to `stage`.
    #[inline(always)]
    pub fn lap(&mut self, stage: usize) {
        if !ON {
            return;
        }
        if let Some(c) = &self.clock {
            let now = c.now();
            self.acc[stage] += now.wrapping_sub(self.last);
            self.last = now;
        }
    }

    /// Ends a poll: the time since the last lap goes to `other`; the poll's
    /// stages go to `into.busy` if it moved frames, else its whole time to
    /// `into.idle`. Context: the lcore owning `into`.
    #[inline(always)]
    pub fn publish(&mut self, other: usize, busy: bool, into: &StageCycles<N>) {
        if !ON {
            return;
        }
        if let Some(c) = &self.clock {
            let now = c.now();
            if busy {
                self.acc[other] += now.wrapping_sub(self.last);
                for (a, counter) in self.acc.iter().zip(&into.busy) {
                    counter.add(*a);
                }
            } else {
                into.idle.add(now.wrapping_sub(self.start));
            }
            self.acc = [0; N];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn laps_add_up_to_the_poll_and_idle_polls_stay_apart() {
        let into = StageCycles::<3>::default();
        let mut l = Laps::<3, true>::new(Some(StageClock::shared().clone()));
        for busy in [true, false, true] {
            l.start();
            std::hint::black_box((0..1000).sum::<u64>());
            l.lap(0);
            std::thread::sleep(std::time::Duration::from_millis(1));
            l.lap(1);
            l.publish(2, busy, &into);
        }
        let c = StageClock::shared();
        let s = into.summary(&["a", "b", "c"], 10).unwrap();
        // Two busy polls of >= 1 ms each in stage b: the sleep dominates.
        assert!(s.cycles_per_packet["b"] > s.cycles_per_packet["a"]);
        let b_ns = c.cycles_to_ns(s.cycles_per_packet["b"] * 10.0);
        assert!(b_ns >= 2e6, "two 1 ms sleeps measured as {b_ns} ns");
        assert!(into.idle.get() > 0);
        let sum: f64 = s.cycles_per_packet.values().sum();
        assert!((sum - s.total_per_packet).abs() < 1e-6);
    }

    #[test]
    fn disabled_laps_measure_nothing() {
        let into = StageCycles::<2>::default();
        let mut l = Laps::<2, false>::new(Some(StageClock::shared().clone()));
        l.start();
        l.lap(0);
        l.publish(1, true, &into);
        assert!(into.summary(&["a", "b"], 5).is_none());
    }
}
