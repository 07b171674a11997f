//! RX-to-target latency (`--latency`): RX lcores stamp each received burst
//! with [`now_ns`], targets record `now - stamp` for every frame they
//! dequeue into a fixed histogram, and the summary reports percentiles.
//!
//! The histogram is HDR-like: values below 8 ns exactly, above that 8
//! linear sub-buckets per power of two (a reported percentile is the upper
//! edge of its bucket: at most 12.5% above the true value). Fixed size, no
//! allocation; one writer (the target lcore), read at the end or at a
//! snapshot.

use std::sync::OnceLock;
use std::time::Instant;

use serde::Serialize;

use super::Counter;

/// Nanoseconds on a monotonic clock shared by every thread of the process
/// (CLOCK_MONOTONIC through the vDSO: no system call).
#[inline]
pub fn now_ns() -> u64 {
    static ANCHOR: OnceLock<Instant> = OnceLock::new();
    // +1: a stamp is never 0, which means "not stamped".
    ANCHOR.get_or_init(Instant::now).elapsed().as_nanos() as u64 + 1
}

const SUB: usize = 8;
const SUB_BITS: u32 = 3;
/// Powers of two covered: up to 2^44 ns (about 4.9 hours).
const MAJORS: usize = 42;
const BUCKETS: usize = SUB + MAJORS * SUB;

/// RX-to-target latencies in fixed HDR-like buckets (8 per power of two).
pub struct LatencyHist {
    buckets: [Counter; BUCKETS],
    max: Counter,
}

impl Default for LatencyHist {
    fn default() -> Self {
        LatencyHist {
            buckets: std::array::from_fn(|_| Counter::default()),
            max: Counter::default(),
        }
    }
}

impl std::fmt::Debug for LatencyHist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LatencyHist({:?})", self.summary())
    }
}

#[inline(always)]
fn index(v: u64) -> usize {
    if v < SUB as u64 {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros();
    let minor = ((v >> (msb - SUB_BITS)) as usize) & (SUB - 1);
    (SUB + (msb - SUB_BITS) as usize * SUB + minor).min(BUCKETS - 1)
}

/// The largest value that falls into bucket `i`.
fn upper(i: usize) -> u64 {
    if i < SUB {
        return i as u64;
    }
    let major = ((i - SUB) / SUB) as u32 + SUB_BITS;
    let minor = ((i - SUB) % SUB) as u64;
    let width = 1u64 << (major - SUB_BITS);
    (1u64 << major) + (minor + 1) * width - 1
}

/// Percentiles of one target's RX-to-target latency.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LatencySummary {
    /// Frames recorded.
    pub samples: u64,
    /// Median.
    pub p50_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// 99.9th percentile.
    pub p999_ns: u64,
    /// Largest seen.
    pub max_ns: u64,
}

impl LatencyHist {
    /// Records one latency. Context: the owning target lcore only.
    #[inline(always)]
    pub fn record(&self, ns: u64) {
        self.buckets[index(ns)].add(1);
        if ns > self.max.get() {
            self.max.set(ns);
        }
    }

    /// The value at quantile `q` (0..=1) of `counts` (bucket upper edge).
    fn quantile(counts: &[u64], total: u64, q: f64) -> u64 {
        let rank = ((total as f64 * q).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, &c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return upper(i);
            }
        }
        upper(BUCKETS - 1)
    }

    /// None before the first sample.
    pub fn summary(&self) -> Option<LatencySummary> {
        let counts: Vec<u64> = self.buckets.iter().map(Counter::get).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let max = self.max.get();
        let at = |q| Self::quantile(&counts, total, q).min(max);
        Some(LatencySummary {
            samples: total,
            p50_ns: at(0.50),
            p99_ns: at(0.99),
            p999_ns: at(0.999),
            max_ns: max,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_tight() {
        for i in 0..BUCKETS - 1 {
            assert_eq!(index(upper(i)), i, "upper edge of {i}");
            assert_eq!(index(upper(i) + 1), i + 1, "next after {i}");
        }
        for v in [9u64, 100, 1_000, 123_456, 10_000_000_000] {
            let u = upper(index(v));
            assert!(u >= v && (u - v) as f64 <= v as f64 * 0.125, "{v} -> {u}");
        }
    }

    #[test]
    fn percentiles_of_a_known_distribution() {
        let h = LatencyHist::default();
        assert_eq!(h.summary(), None);
        // 1..=1000 us, once each.
        for us in 1..=1000u64 {
            h.record(us * 1000);
        }
        let s = h.summary().unwrap();
        assert_eq!((s.samples, s.max_ns), (1000, 1_000_000));
        let near = |got: u64, want: u64| got >= want && got as f64 <= want as f64 * 1.125;
        assert!(near(s.p50_ns, 500_000), "{s:?}");
        assert!(near(s.p99_ns, 990_000), "{s:?}");
        assert!(s.p999_ns <= 1_000_000 && near(s.p999_ns, 999_000), "{s:?}");
        assert!(now_ns() > 0 && now_ns() <= now_ns());
    }
}
