//! `--idle`: what an lcore does when its polls find nothing.
//!
//! # General idea
//!
//! `spin` keeps today's loops (RX lcores poll without pause; targets spin,
//! yield, then nap 50 us). `adaptive` keeps polling after work for as long
//! as the recent gaps between work say more is coming soon (up to 50 us;
//! see [`Streak`]), then blocks; `sleep` blocks at once. Blocking means:
//!
//! * an RX lcore waits in poll(2) on every queue's descriptor at once
//!   (AF_XDP sockets, AF_PACKET rings) and its sink's reverse descriptor
//!   (the TAP), having gone QSBR-offline so no map change waits for it. A
//!   queue with no descriptor to wait on naps in growing steps (DPDK PMDs
//!   without RX interrupts) or never sleeps (generator, pcap, null).
//! * a target announces its sleep on its [`Waker`], re-checks its rings,
//!   and waits in poll(2) on the waker's eventfd and its sink's reverse
//!   descriptor; a flush that moves frames into its ring wakes it (see
//!   cpumap::wake for the handshake and its loom model).
//!
//! Each wait is bounded ([`MAX_BLOCK_MS`]), so a stop or a missed edge
//! costs at most that much latency, never a frame. An lcore that blocks
//! gives its CPU to whatever shares it (the other lcore on the same CPU, the
//! generator, the stack): that is what makes several lcores on one CPU
//! cooperate. Counted per lcore: idle polls, sleeps, wake-ups.
#![allow(unsafe_code)]

use std::os::fd::RawFd;
use std::time::Duration;

use crate::config::IdlePolicy;
use crate::counters::latency::now_ns;
use crate::port::IdleWait;

/// Longest single wait (a stop flag is seen within this).
pub(super) const MAX_BLOCK_MS: i32 = 50;
/// Growing naps for queues without a descriptor: first and longest.
const NAP_FIRST_US: u64 = 20;
const NAP_MAX_US: u64 = 1000;

/// How an RX lcore waits, decided once from its queues.
pub(super) enum RxWait {
    /// Never sleeps.
    Never,
    /// poll(2) on these.
    Block(Blocking),
    /// Naps of growing length.
    Nap,
}

/// The descriptors an RX lcore blocks on, and the RX interrupts among them.
pub(super) struct Blocking {
    /// Every queue's descriptor, then the sink's.
    pub fds: Vec<libc::pollfd>,
    /// Indexes (into the lcore's queues) of the queues whose descriptor is
    /// an RX interrupt, armed before a block and disarmed after work.
    pub intr: Vec<usize>,
    /// Per descriptor: an eventfd whose count must be read once it fired
    /// (net_memif's interrupts), else level-triggered data (net_tap's fd).
    pub counted: Vec<bool>,
    /// The interrupts are armed.
    pub armed: bool,
}

impl Blocking {
    /// Reads the count of every eventfd that fired, so the next poll(2)
    /// blocks until it fires again. Context: the RX lcore, after a block.
    pub fn drain(&mut self) {
        for (f, &counted) in self.fds.iter().zip(&self.counted) {
            if counted && f.revents & libc::POLLIN != 0 {
                let mut n = 0u64;
                // SAFETY: reads 8 bytes into a u64 from an eventfd that
                // poll(2) said is readable (so the read does not block).
                unsafe { libc::read(f.fd, (&raw mut n).cast(), 8) };
            }
        }
    }
}

/// True when `fd` is an eventfd (`/proc/self/fd/N` names
/// `anon_inode:[eventfd]`).
fn is_eventfd(fd: RawFd) -> bool {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .is_ok_and(|p| p.as_os_str() == "anon_inode:[eventfd]")
}

impl RxWait {
    /// From the queues' kinds and the sink's descriptor: block when every
    /// queue has a descriptor, nap when some cannot block but may pause,
    /// never when any queue is self-paced.
    pub(super) fn of(kinds: impl Iterator<Item = IdleWait>, sink: Option<RawFd>) -> Self {
        let mut fds = Vec::new();
        let mut intr = Vec::new();
        let mut nap = false;
        for (i, k) in kinds.enumerate() {
            match k {
                IdleWait::Never => return Self::Never,
                IdleWait::Fd(fd) => fds.push(pollfd(fd)),
                IdleWait::Interrupt(fd) => {
                    fds.push(pollfd(fd));
                    intr.push(i);
                }
                IdleWait::Nap => nap = true,
            }
        }
        if nap || fds.is_empty() {
            return Self::Nap;
        }
        fds.extend(sink.map(pollfd));
        let counted = fds.iter().map(|f| is_eventfd(f.fd)).collect();
        Self::Block(Blocking {
            fds,
            intr,
            counted,
            armed: false,
        })
    }
}

fn pollfd(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// Waits until one of `fds` is readable or `timeout_ms` passes. Returns
/// true when something became readable.
pub(super) fn block_on(fds: &mut [libc::pollfd], timeout_ms: i32) -> bool {
    for f in fds.iter_mut() {
        f.revents = 0;
    }
    // SAFETY: fds is a valid array of pollfd for the call.
    let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    r > 0
}

/// A pollfd for a target: its eventfd and, when it has one, its sink's
/// reverse descriptor.
pub(super) fn target_fds(efd: RawFd, sink: Option<RawFd>) -> Vec<libc::pollfd> {
    let mut v = vec![pollfd(efd)];
    v.extend(sink.map(pollfd));
    v
}

/// `adaptive`: the longest an lcore keeps polling after its last work,
/// when work has been arriving at shorter gaps than this.
pub(super) const SPIN_MAX_NS: u64 = 50_000;
/// `adaptive`: how long it keeps polling when the gaps are longer (sparse
/// traffic, idle): about the 256 idle polls it used to spin.
pub(super) const SPIN_MIN_NS: u64 = 5_000;
/// Idle polls between two clock reads while spinning.
const CLOCK_EVERY: u32 = 16;

/// The idle streak of one lcore. Under `adaptive` it keeps an average of
/// the gaps between busy periods (from the first idle poll to the next
/// poll with work, sleeps included) and polls after work for up to twice
/// that gap, capped at [`SPIN_MAX_NS`]: request/response traffic, whose
/// next request or reply comes within tens of microseconds, is polled
/// for instead of slept through and woken for; traffic that pauses for
/// longer than the cap, and an idle port, block after [`SPIN_MIN_NS`].
/// The clock is read only at the first idle poll, every [`CLOCK_EVERY`]
/// idle polls after it and at the first busy poll after idle ones. Every
/// [`CLOCK_EVERY`] idle polls the spin also yields its CPU (sched_yield:
/// it returns at once when nothing else is runnable there), so a spinning
/// lcore never keeps the servers it feeds, on a host with few CPUs, from
/// running: measured with nginx + wrk on 2 CPUs, HTTP keep-alive 38-40k ->
/// 46-53k req/s and UDP ping-pong p50 25 -> 15 us (docs/PERFORMANCE.md).
pub(super) struct Streak {
    policy: IdlePolicy,
    idle: u32,
    nap_us: u64,
    /// When the current idle streak began (ns, latency::now_ns).
    idle_since: u64,
    /// Average gap between busy periods (ns; an EWMA of weight 1/8).
    gap_ns: u64,
}

impl Streak {
    pub(super) fn new(policy: IdlePolicy) -> Self {
        Self {
            policy,
            idle: 0,
            nap_us: NAP_FIRST_US,
            idle_since: 0,
            gap_ns: SPIN_MAX_NS,
        }
    }

    /// A poll that found work.
    #[inline(always)]
    pub(super) fn busy(&mut self) {
        if self.idle != 0 {
            self.end_idle();
        }
        self.nap_us = NAP_FIRST_US;
    }

    #[cold]
    fn end_idle(&mut self) {
        if self.policy == IdlePolicy::Adaptive && self.idle_since != 0 {
            let gap = now_ns().saturating_sub(self.idle_since);
            self.gap_ns = (self.gap_ns * 7 + gap.min(16 * SPIN_MAX_NS)) / 8;
        }
        self.idle = 0;
    }

    /// How long to keep polling after work, from the recent gaps.
    #[inline]
    pub(super) fn spin_budget_ns(&self) -> u64 {
        if self.gap_ns <= SPIN_MAX_NS {
            (2 * self.gap_ns).clamp(SPIN_MIN_NS, SPIN_MAX_NS)
        } else {
            SPIN_MIN_NS
        }
    }

    /// A poll that found nothing: true when it is time to block.
    #[inline(always)]
    pub(super) fn idle(&mut self) -> bool {
        self.idle = self.idle.saturating_add(1);
        match self.policy {
            IdlePolicy::Spin => false,
            IdlePolicy::Sleep => true,
            IdlePolicy::Adaptive => {
                if self.idle == 1 {
                    self.idle_since = now_ns();
                    return false;
                }
                if !self.idle.is_multiple_of(CLOCK_EVERY) {
                    return false;
                }
                // A polite spin: whatever else wants this CPU (the servers
                // behind the TAP, their clients, softirqs) runs first.
                std::thread::yield_now();
                now_ns().saturating_sub(self.idle_since) > self.spin_budget_ns()
            }
        }
    }

    /// The policy blocks at all.
    pub(super) fn blocks(&self) -> bool {
        self.policy != IdlePolicy::Spin
    }

    /// One nap of the growing series.
    pub(super) fn nap(&mut self) {
        std::thread::sleep(Duration::from_micros(self.nap_us));
        self.nap_us = (self.nap_us * 2).min(NAP_MAX_US);
    }
}

/// Spin, then yield, then sleep while idle; each give-up of the CPU counts
/// as a `sched`, like the kthread's schedule() when its ring is empty.
pub(super) struct Backoff {
    idle: u32,
}

impl Backoff {
    /// A backoff that starts by spinning.
    pub(super) fn new() -> Backoff {
        Backoff { idle: 0 }
    }

    const SPINS: u32 = 256;
    const YIELDS: u32 = 64;

    pub(super) fn reset(&mut self) {
        self.idle = 0;
    }

    /// Returns true if the CPU was given up.
    pub(super) fn idle(&mut self) -> bool {
        self.idle = self.idle.saturating_add(1);
        if self.idle <= Self::SPINS {
            std::hint::spin_loop();
            false
        } else if self.idle <= Self::SPINS + Self::YIELDS {
            std::thread::yield_now();
            true
        } else {
            std::thread::sleep(Duration::from_micros(50));
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_gap(gap_ns: u64) -> Streak {
        let mut s = Streak::new(IdlePolicy::Adaptive);
        s.gap_ns = gap_ns;
        s
    }

    #[test]
    fn adaptive_polls_for_twice_the_recent_gap_within_its_bounds() {
        assert_eq!(with_gap(1_000).spin_budget_ns(), SPIN_MIN_NS);
        assert_eq!(with_gap(10_000).spin_budget_ns(), 20_000);
        assert_eq!(with_gap(SPIN_MAX_NS).spin_budget_ns(), SPIN_MAX_NS);
        // Sparse traffic, or none: block soon after the last work.
        assert_eq!(with_gap(SPIN_MAX_NS + 1).spin_budget_ns(), SPIN_MIN_NS);
        assert_eq!(with_gap(u64::MAX / 16).spin_budget_ns(), SPIN_MIN_NS);
    }

    #[test]
    fn the_gap_average_follows_the_traffic() {
        let mut s = Streak::new(IdlePolicy::Adaptive);
        // Busy periods 2 ms apart: the average leaves the spin range.
        for _ in 0..32 {
            assert!(!s.idle(), "the first idle poll never blocks");
            std::thread::sleep(Duration::from_millis(2));
            s.busy();
        }
        assert!(s.gap_ns > SPIN_MAX_NS, "{}", s.gap_ns);
        assert_eq!(s.spin_budget_ns(), SPIN_MIN_NS);
        // An idle streak past the budget blocks.
        let _ = s.idle();
        std::thread::sleep(Duration::from_micros(2 * SPIN_MIN_NS / 1000));
        assert!((0..CLOCK_EVERY).any(|_| s.idle()));
    }

    #[test]
    fn sleep_blocks_at_once_and_spin_never() {
        let mut sleep = Streak::new(IdlePolicy::Sleep);
        assert!(sleep.idle());
        let mut spin = Streak::new(IdlePolicy::Spin);
        assert!((0..10_000).all(|_| !spin.idle()));
    }
}
