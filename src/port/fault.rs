//! Fault injection on the receive side of any native port (smoltcp's
//! FaultInjector idea, for a poll-mode port): `fault_*=N` devargs on a
//! `--vdev` wrap each of its queues.
//!
//! Per queue, received frame i (counting from 1) is
//! - dropped when `fault_drop` divides i (freed here, counted as an RX drop
//!   with reason `injected`), else
//! - truncated to a shorter length when `fault_truncate` divides i, else
//!   corrupted (one bit flipped) when `fault_corrupt` divides i (an empty
//!   frame can be neither: it passes unchanged and uncounted),
//! - and, unless dropped, duplicated when `fault_dup` divides i (the copy
//!   comes from the RX lcore's pool; with the pool empty it is not made).
//!
//! `fault_delay_us=D` sleeps D µs after each non-empty burst: a port that
//! stalls its RX lcore. 0 turns a fault off. Every injected fault has its
//! counter (`cpumapd_port_faults_injected_total{kind}`), and the RX lcore
//! sees `ipackets - dropped + duplicated` frames, which the tests check.
//!
//! Context: the owning RX lcore. No allocation: duplicates that do not fit
//! the caller's burst wait in a fixed carry burst for the next poll.

use std::sync::Arc;
use std::time::Duration;

use super::{Burst, PortError, PortQueue, VdevSpec};
use crate::counters::PortQueueCounters;
use crate::frame::Pool;
use crate::kv::Key;

/// The devargs this wrapper takes, on any native driver.
pub const FAULT_KEYS: &[Key] = &[
    Key {
        name: "fault_drop",
        value: "N",
        help: "drop every Nth frame before the RX lcore sees it (counted)",
    },
    Key {
        name: "fault_truncate",
        value: "N",
        help: "truncate every Nth frame",
    },
    Key {
        name: "fault_corrupt",
        value: "N",
        help: "corrupt a byte of every Nth frame",
    },
    Key {
        name: "fault_dup",
        value: "N",
        help: "duplicate every Nth frame",
    },
    Key {
        name: "fault_delay_us",
        value: "US",
        help: "delay every burst this long",
    },
];

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
/// Injected receive faults of a port (`fault_*` devargs): every Nth frame.
pub struct PortFaults {
    /// Drop every Nth frame before the RX lcore sees it (0: never).
    pub drop: u64,
    /// Truncate every Nth frame (0: never).
    pub truncate: u64,
    /// Corrupt a byte of every Nth frame (0: never).
    pub corrupt: u64,
    /// Duplicate every Nth frame (0: never).
    pub dup: u64,
    /// Microseconds to delay every burst (0: none).
    pub delay_us: u64,
}

impl PortFaults {
    /// The vdev's faults, or None when it asks for none.
    pub fn from_vdev(spec: &VdevSpec) -> Result<Option<PortFaults>, PortError> {
        let f = PortFaults {
            drop: spec.num("fault_drop", 0)?,
            truncate: spec.num("fault_truncate", 0)?,
            corrupt: spec.num("fault_corrupt", 0)?,
            dup: spec.num("fault_dup", 0)?,
            delay_us: spec.num("fault_delay_us", 0)?,
        };
        if f.delay_us > 1_000_000 {
            return Err(PortError::BadVdev {
                vdev: spec.name.clone(),
                why: format!("fault_delay_us={} is over a second", f.delay_us),
            });
        }
        Ok((f != PortFaults::default()).then_some(f))
    }
}

/// `n` divides `i` (0 = never).
#[inline(always)]
fn every(n: u64, i: u64) -> bool {
    n != 0 && i.is_multiple_of(n)
}

pub(super) struct FaultQueue {
    inner: Box<dyn PortQueue>,
    faults: PortFaults,
    /// Frames received from `inner` so far (the i above).
    seen: u64,
    /// xorshift64 state: where to truncate and which bit to flip.
    rng: u64,
    /// Duplicates made but not yet handed out (the caller's burst was full).
    carry: Burst,
    /// The inner port's counters (the fault counters live there too).
    counters: Arc<PortQueueCounters>,
}

impl FaultQueue {
    pub(super) fn wrap(inner: Box<dyn PortQueue>, faults: PortFaults, seed: u64) -> Self {
        FaultQueue {
            counters: inner.counters().clone(),
            inner,
            faults,
            seen: 0,
            rng: seed | 1,
            carry: Burst::new(),
        }
    }
}

/// xorshift64: where to truncate and which bit to flip (not security).
#[inline]
fn next_rand(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    x
}

impl PortQueue for FaultQueue {
    fn rx_burst(&mut self, pool: &mut Pool, out: &mut Burst) -> usize {
        let start = out.len();
        // Duplicates from the last poll first: they were received then.
        let carried = self.carry.len().min(out.remaining_capacity());
        out.extend(self.carry.drain(..carried));
        let first_new = out.len();
        let n = self.inner.rx_burst(pool, out);
        let c = &self.counters;
        c.fault_duplicated.add(carried as u64);
        if n == 0 {
            return out.len() - start;
        }
        let received: Burst = out.drain(first_new..).collect();
        let mut dropped = Burst::new();
        let (mut truncated, mut corrupted) = (0u64, 0u64);
        for mut f in received {
            self.seen += 1;
            let i = self.seen;
            if every(self.faults.drop, i) {
                dropped.push(f);
                continue;
            }
            if every(self.faults.truncate, i) && !f.is_empty() {
                let len = (next_rand(&mut self.rng) % f.len() as u64) as usize;
                // Shorter than the frame: always within its buffer.
                let _ = f.set_len(len);
                truncated += 1;
            } else if every(self.faults.corrupt, i) && !f.is_empty() {
                let r = next_rand(&mut self.rng);
                let at = (r % f.len() as u64) as usize;
                f.data_mut()[at] ^= 1 << ((r >> 32) % 8);
                corrupted += 1;
            }
            // A copy that fails (no buffer, too long) is not made.
            if every(self.faults.dup, i)
                && let Some(mut d) = pool.alloc()
                && d.copy_from(f.data()).is_ok()
            {
                d.set_rx_meta(f.port(), f.queue(), f.rss_hash());
                // The carry is empty here (it went into `out` before the
                // inner port could deliver), and one burst has at most
                // MAX_BURST duplicates: it has room.
                let _ = self.carry.try_push(d);
            }
            // Fits: every original came out of `out`.
            out.push(f);
        }
        // Duplicates where the originals left room; the rest next poll.
        let now = self.carry.len().min(out.remaining_capacity());
        out.extend(self.carry.drain(..now));
        let duplicated = now as u64;
        c.fault_dropped.add(dropped.len() as u64);
        c.fault_truncated.add(truncated);
        c.fault_corrupted.add(corrupted);
        c.fault_duplicated.add(duplicated);
        if !dropped.is_empty() {
            pool.recycle_burst(&mut dropped);
        }
        if self.faults.delay_us > 0 {
            c.fault_delayed.add(1);
            std::thread::sleep(Duration::from_micros(self.faults.delay_us));
        }
        out.len() - start
    }

    fn tx_burst(&mut self, frames: &mut Burst) -> usize {
        self.inner.tx_burst(frames)
    }

    fn exhausted(&self) -> bool {
        self.carry.is_empty() && self.inner.exhausted()
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }

    fn idle_wait(&self) -> super::IdleWait {
        self.inner.idle_wait()
    }

    fn counters(&self) -> &Arc<PortQueueCounters> {
        self.inner.counters()
    }
}

impl Drop for FaultQueue {
    fn drop(&mut self) {
        // Duplicates never handed out were never received: back to the pool
        // uncounted.
        crate::frame::free_burst(&mut self.carry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Pool;
    use crate::ids::PortId;
    use crate::port::{MAX_BURST, VdevSpec, free_all};

    #[test]
    fn duplicates_of_a_full_burst_wait_for_the_next_poll() {
        let spec = VdevSpec::parse("net_null0,size=64,fault_dup=1").unwrap();
        let mut q = crate::port::open(&spec, PortId(0), 1).unwrap().remove(0);
        let mut pool = Pool::new("t", 4 * MAX_BURST as u32, 128, 2048).unwrap();
        let mut got = Vec::new();
        for _ in 0..3 {
            let mut out = Burst::new();
            got.push(q.rx_burst(&mut pool, &mut out));
            assert_eq!(out.len(), *got.last().unwrap());
            free_all(&mut out);
        }
        // A full burst of originals; then their copies (the carry fills the
        // whole burst, the null port gets no room); then originals again.
        assert_eq!(got, [MAX_BURST, MAX_BURST, MAX_BURST]);
        let c = q.counters();
        assert_eq!(c.ipackets.get(), 2 * MAX_BURST as u64);
        assert_eq!(c.fault_duplicated.get(), MAX_BURST as u64);
        drop(q);
        assert_eq!(pool.in_use(), 0, "copies still in the carry went home");
    }
}
