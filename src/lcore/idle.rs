//! `--idle`: what an lcore does when its polls find nothing.
//!
//! # General idea
//!
//! `spin` keeps today's loops (RX lcores poll without pause; targets spin,
//! yield, then nap 50 us). `adaptive` spins for a streak of idle polls
//! (work that keeps coming is never slept through), then blocks; `sleep`
//! blocks at once. Blocking means:
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
    Block(Vec<libc::pollfd>),
    /// Naps of growing length.
    Nap,
}

impl RxWait {
    /// From the queues' kinds and the sink's descriptor: block when every
    /// queue has a descriptor, nap when some cannot block but may pause,
    /// never when any queue is self-paced.
    pub(super) fn of(kinds: impl Iterator<Item = IdleWait>, sink: Option<RawFd>) -> Self {
        let mut fds = Vec::new();
        let mut nap = false;
        for k in kinds {
            match k {
                IdleWait::Never => return Self::Never,
                IdleWait::Fd(fd) => fds.push(pollfd(fd)),
                IdleWait::Nap => nap = true,
            }
        }
        if nap || fds.is_empty() {
            return Self::Nap;
        }
        fds.extend(sink.map(pollfd));
        Self::Block(fds)
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

/// The idle streak of one lcore.
pub(super) struct Streak {
    policy: IdlePolicy,
    idle: u32,
    nap_us: u64,
}

impl Streak {
    pub(super) fn new(policy: IdlePolicy) -> Self {
        Self {
            policy,
            idle: 0,
            nap_us: NAP_FIRST_US,
        }
    }

    /// A poll that found work.
    #[inline(always)]
    pub(super) fn busy(&mut self) {
        self.idle = 0;
        self.nap_us = NAP_FIRST_US;
    }

    /// A poll that found nothing: true when it is time to block.
    #[inline(always)]
    pub(super) fn idle(&mut self) -> bool {
        self.idle = self.idle.saturating_add(1);
        self.policy
            .spins_before_block()
            .is_some_and(|n| self.idle > n)
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
